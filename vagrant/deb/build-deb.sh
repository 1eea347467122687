#!/usr/bin/env bash
# Builds the kube-agents .deb from already-built binaries with dpkg-deb (no cargo-deb needed).
#
#   vagrant/deb/build-deb.sh [--bin-dir DIR] [--out DIR] [--fast]
#
#   --bin-dir DIR  where master-agent and node-agent are (default target/release: run
#                  `cargo build --release --bins` first; CI passes target/debug)
#   --out DIR      where the .deb goes (default dist/)
#   --fast         strip debug info and compress lightly (CI: debug binaries are ~100 MB each)
#
# Prints the path of the .deb on stdout. The package holds:
#   /usr/bin/master-agent, /usr/bin/node-agent       the agents
#   /usr/sbin/kube-agents-identity                   the per-VM identity step (enables one agent)
#   /usr/lib/systemd/system/{master,node}-agent.service   units (enabled by the identity step)
#   /etc/kube-agents/                                config location (cluster.yaml, pki/, agent.env)
#   /usr/share/doc/kube-agents/README.md             vagrant/README.md
# Installing it enables nothing: which agent runs is decided per VM by kube-agents-identity.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin_dir=$repo/target/release
out=$repo/dist
fast=false
while [ $# -gt 0 ]; do
  case $1 in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --fast) fast=true; shift ;;
    -h|--help) sed -n '2,20s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "build-deb.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

for b in master-agent node-agent; do
  [ -x "$bin_dir/$b" ] || {
    echo "build-deb.sh: $bin_dir/$b is missing: build it first (cargo build --release --bins)" >&2
    exit 1
  }
done
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")
[ -n "$version" ] || { echo "build-deb.sh: no version in [workspace.package] of $repo/Cargo.toml" >&2; exit 1; }
arch=$(dpkg --print-architecture)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg=$stage/pkg
install -d -m 0755 "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/usr/sbin" "$pkg/usr/lib/systemd/system" \
  "$pkg/etc/kube-agents" "$pkg/usr/share/doc/kube-agents"
for b in master-agent node-agent; do
  install -m 0755 "$bin_dir/$b" "$pkg/usr/bin/$b"
  if $fast && command -v strip >/dev/null; then strip --strip-debug "$pkg/usr/bin/$b"; fi
done
install -m 0755 "$here/kube-agents-identity" "$pkg/usr/sbin/kube-agents-identity"
install -m 0644 "$repo/vagrant/systemd/master-agent.service" "$repo/vagrant/systemd/node-agent.service" \
  "$pkg/usr/lib/systemd/system/"
install -m 0644 "$repo/vagrant/README.md" "$pkg/usr/share/doc/kube-agents/README.md"
for s in postinst prerm postrm; do install -m 0755 "$here/$s" "$pkg/DEBIAN/$s"; done

cat >"$pkg/DEBIAN/control" <<CONTROL
Package: kube-agents
Version: $version
Architecture: $arch
Maintainer: kube-agents developers <kube-agents@localhost>
Section: admin
Priority: optional
Depends: libc6 (>= 2.34), libgcc-s1
Installed-Size: $(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
Description: gRPC agents that turn a VM into a kubeadm cluster host
 master-agent (control plane) and node-agent (workers) serve a mutual-TLS gRPC API
 on the host's cluster IP for the ctl CLI: host preparation, kubeadm init, join
 tickets and kubeadm join. Nothing is enabled on install: kube-agents-identity
 installs a host's identity (from "ctl pki init") and enables its agent.
CONTROL

mkdir -p "$out"
deb=$out/kube-agents_${version}_${arch}.deb
if $fast; then compress=(-Zgzip -z1); else compress=(-Zxz); fi
dpkg-deb --root-owner-group "${compress[@]}" --build "$pkg" "$deb.tmp" >/dev/null
mv -f "$deb.tmp" "$deb"
echo "$deb"
