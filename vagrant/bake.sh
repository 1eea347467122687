#!/usr/bin/env bash
# Bakes a Vagrant box with the agents preinstalled: boots vagrant/bake/Vagrantfile (plain Ubuntu
# 24.04), installs the kube-agents .deb, packages the VM with `vagrant package` and adds it as
# box kube-agents/ubuntu-24.04. `vagrant up` on that box then needs no provisioning beyond each
# VM's identity:
#
#   KUBE_AGENTS_BOX=kube-agents/ubuntu-24.04 vagrant up      (in vagrant/)
#
#   vagrant/bake.sh [--provider virtualbox|libvirt] [--deb FILE] [--box NAME]
#
#   --provider  default: $VAGRANT_DEFAULT_PROVIDER, else virtualbox if VBoxManage is on PATH,
#               else libvirt if the vagrant-libvirt plugin is installed
#   --deb       default: the newest dist/kube-agents_*.deb (make deb)
#   --box       default: kube-agents/ubuntu-24.04
#
# Takes 5-10 minutes (box download on first use, boot, install, export). libvirt packaging
# needs virt-sysprep (package libguestfs-tools). The box file stays in dist/.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
provider=${VAGRANT_DEFAULT_PROVIDER:-}
deb=
box=kube-agents/ubuntu-24.04
while [ $# -gt 0 ]; do
  case $1 in
    --provider) provider=$2; shift 2 ;;
    --deb) deb=$2; shift 2 ;;
    --box) box=$2; shift 2 ;;
    -h|--help) sed -n '2,19s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "bake.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
die() { echo "bake.sh: $*" >&2; exit 1; }

command -v vagrant >/dev/null || die "vagrant is not installed (see vagrant/README.md)"
if [ -z "$provider" ]; then
  if command -v VBoxManage >/dev/null; then provider=virtualbox
  elif vagrant plugin list 2>/dev/null | grep -q '^vagrant-libvirt'; then provider=libvirt
  else die "no VM provider: install VirtualBox, or libvirt and vagrant-libvirt (see vagrant/README.md)"
  fi
fi
case $provider in virtualbox|libvirt) ;; *) die "--provider $provider: use virtualbox or libvirt" ;; esac
if [ -z "$deb" ]; then
  deb=$(ls -t "$repo"/dist/kube-agents_*.deb 2>/dev/null | head -1 || true)
  [ -n "$deb" ] || die "no dist/kube-agents_*.deb: build it first (make deb)"
fi
[ -f "$deb" ] || die "--deb $deb: no such file"
deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")
out=$repo/dist/kube-agents-ubuntu-24.04-$provider.box

export KUBE_AGENTS_DEB=$deb
# The bake VM's state lives under target/, not in the source tree.
export VAGRANT_DOTFILE_PATH=$repo/target/vagrant-bake
cd "$repo/vagrant/bake"
cleanup() { vagrant destroy -f >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== baking $box for $provider from $(basename "$deb")"
vagrant up --provider "$provider"
vagrant halt
rm -f "$out"
vagrant package --output "$out"
vagrant box add --force --name "$box" "$out"
echo "== baked $box ($provider): $out"
echo "   use it: KUBE_AGENTS_BOX=$box vagrant up   (in vagrant/), or make real-vms with it set"
