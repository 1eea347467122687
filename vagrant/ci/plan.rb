# frozen_string_literal: true

# Test helper for vagrant/ci-check.sh: loads a Vagrantfile through Vagrant's own API (no VM
# provider needed) and prints, per machine, what Vagrant would do with it:
#
#   <machine> <hostname> <box> <private IPs> <VirtualBox modifyvm settings...>
#     <provisioner name> <type> <file: source basename -> destination | shell: root|user>
#
#   ruby vagrant/ci/plan.rb DIR     (DIR holds the Vagrantfile; env: CLUSTER_YAML, KUBE_AGENTS_*)
#
# The libvirt block is not shown: Debian's Vagrant has no libvirt plugin to evaluate it.

require "vagrant"

env = Vagrant::Environment.new(cwd: ARGV.fetch(0), ui_class: Vagrant::UI::Silent)
env.vagrantfile.machine_names.each do |name|
  config = env.vagrantfile.machine_config(name, :virtualbox, nil, nil, false)[:config]
  vm = config.vm
  ips = vm.networks.select { |type, _| type == :private_network }.map { |_, o| o[:ip] }
  modifyvm = vm.get_provider_config(:virtualbox).customizations.map { |c| c[1][2..].join("=") }
  puts [name, vm.hostname, vm.box, ips.join(","), *modifyvm].join(" ")
  vm.provisioners.each do |p|
    what = if p.type == :file
             "#{File.basename(p.config.source)} -> #{p.config.destination}"
           else
             p.config.privileged ? "root" : "user"
           end
    puts "  #{p.name} #{p.type} #{what}"
  end
end
