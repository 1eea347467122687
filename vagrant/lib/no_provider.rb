# frozen_string_literal: true

# A stand-in provider, `none`, for machines without VirtualBox or libvirt (such as CI).
#
# Vagrant needs a usable provider even for commands that never touch a VM: `vagrant status` and
# `vagrant validate` stop with "No usable default provider could be found" when neither
# VirtualBox nor vagrant-libvirt is installed. This provider is always usable but has the lowest
# priority and is not named in the Vagrantfile, so Vagrant only picks it when no real provider
# works. With it, `validate` checks the Vagrantfile and `status` lists every machine as
# "not created". Any other action (`up`, `ssh`, `destroy`, ...) stops with a message that says
# which provider to install. It downloads nothing and starts nothing.

module KubeAgents
  module NoProvider
    # Raised for any action that would need a real VM.
    class NoVmProvider < Vagrant::Errors::VagrantError
      error_message(<<~MSG.strip)
        No VM provider is installed (or none works), so Vagrant can only validate this
        Vagrantfile and list its machines. Install one of:
          - VirtualBox (https://www.virtualbox.org/wiki/Downloads), or
          - libvirt/KVM and the vagrant-libvirt plugin (`vagrant plugin install vagrant-libvirt`),
        then run the command again (see vagrant/README.md). If one is installed, Vagrant found it
        unusable: `vagrant up --provider virtualbox` (or libvirt) shows why.
      MSG
    end

    # Middleware that refuses the action.
    class Refuse
      def initialize(app, _env)
        @app = app
      end

      def call(_env)
        raise NoVmProvider
      end
    end

    # The provider: usable everywhere, never creates anything.
    class Provider < Vagrant.plugin("2", :provider)
      def self.usable?(_raise_error = false)
        true
      end

      def self.installed?
        true
      end

      def initialize(machine)
        super
        @machine = machine
      end

      def action(_name)
        Vagrant::Action::Builder.new.tap { |b| b.use Refuse }
      end

      def state
        Vagrant::MachineState.new(
          Vagrant::MachineState::NOT_CREATED_ID,
          "not created (no VM provider)",
          "No VM provider (VirtualBox or libvirt) is installed on this machine."
        )
      end

      def to_s
        "none"
      end
    end

    # Registers the provider; lower priority than every real one (VirtualBox is 6, Docker 7).
    class Plugin < Vagrant.plugin("2")
      name "kube-agents none provider"
      description "Lets validate/status run where no VM provider is installed."
      provider(:none, priority: -100) { Provider }
    end
  end
end
