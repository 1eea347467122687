#!/usr/bin/env bash
# The real-VM path, from nothing to Let's Chat with three replicas on VirtualBox or libvirt VMs:
#
#   build -> deb -> pki -> up -> bootstrap -> deploy -> scale
#
#   1. build      cargo build --release: ctl, master-agent, node-agent
#   2. deb        vagrant/deb/build-deb.sh: dist/kube-agents_<version>_<arch>.deb
#                 (skipped when KUBE_AGENTS_BOX names a baked box: its agents are used)
#   3. pki        ctl pki init: CA, one identity per host, the admin identity (pki/)
#   4. up         vagrant up: one VM per host of cluster.yaml; each gets only its own identity
#                 and starts its agent (master-agent on the master, node-agent on the nodes)
#   5. bootstrap  ctl bootstrap: prepare every host, kubeadm init, CNI, join the nodes
#   6. deploy     ctl deploy letschat: MongoDB, then Let's Chat
#   7. scale      ctl scale letschat --replicas 3
#
#   vagrant/real-vms.sh [--from STAGE] [--to STAGE]
#
# Every stage can be re-run: pki keeps existing files, `vagrant up` leaves running VMs alone,
# and bootstrap/deploy/scale are idempotent. After a failure, fix the cause and continue with
# --from <stage>. Prints how long each stage took.
#
# Environment: CLUSTER_YAML (default: cluster.yaml at the repository root),
# VAGRANT_DEFAULT_PROVIDER (virtualbox or libvirt; default: whichever is installed),
# KUBE_AGENTS_BOX (a box from vagrant/bake.sh). Tear down: (cd vagrant && vagrant destroy -f).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
stages=(build deb pki up bootstrap deploy scale)
from=build to=scale
while [ $# -gt 0 ]; do
  case $1 in
    --from) from=$2; shift 2 ;;
    --to) to=$2; shift 2 ;;
    -h|--help) sed -n '2,27s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "real-vms.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
die() { echo "real-vms.sh: $*" >&2; exit 1; }
index() { local i; for i in "${!stages[@]}"; do [ "${stages[$i]}" = "$1" ] && { echo "$i"; return; }; done; die "no stage '$1': stages are ${stages[*]}"; }
first=$(index "$from")
last=$(index "$to")

export CLUSTER_YAML=${CLUSTER_YAML:-$repo/cluster.yaml}
[ -f "$CLUSTER_YAML" ] || die "$CLUSTER_YAML: no such file"
CLUSTER_YAML=$(cd "$(dirname "$CLUSTER_YAML")" && pwd)/$(basename "$CLUSTER_YAML")
ctl() { "$repo/target/release/ctl" --config "$CLUSTER_YAML" "$@"; }

# ---- preflight: fail in seconds, not after a 10-minute build
command -v vagrant >/dev/null || die "vagrant is not installed (see vagrant/README.md)"
status=$(cd "$repo/vagrant" && vagrant status --machine-readable 2>&1) ||
  die "vagrant status fails in vagrant/: $status"
provider=$(awk -F, '$3 == "provider-name" {print $4; exit}' <<<"$status")
case $provider in
  virtualbox|libvirt) ;;
  none|"") die "no usable VM provider: install VirtualBox, or libvirt + vagrant-libvirt (see vagrant/README.md)" ;;
  *) echo "real-vms.sh: note: Vagrant chose provider '$provider'; only virtualbox and libvirt are tested" >&2 ;;
esac
if [ "$provider" = virtualbox ] && [ ! -f /etc/vbox/networks.conf ] && [ "$(uname)" != Windows_NT ]; then
  ips=$(ruby "$repo/vagrant/lib/cluster_yaml.rb" "$CLUSTER_YAML" | awk '{print $3}' | xargs)
  case " $ips " in
    *" 192.168.5"[6-9].*|*" 192.168.6"[0-3].*) ;;
    *) echo "real-vms.sh: warning: VirtualBox only allows host-only IPs in 192.168.56.0/21 unless" \
      "/etc/vbox/networks.conf allows more; for $ips add e.g. '* 192.168.50.0/24' to it (as root)." >&2 ;;
  esac
fi
echo "== provider: $provider; cluster: $CLUSTER_YAML"

times=()
run_stage() {
  local name=$1 start=$SECONDS
  echo
  echo "== [$name] $(date +%H:%M:%S)"
  "stage_$name"
  times+=("$(printf '%-10s %4ds' "$name" $((SECONDS - start)))")
}

stage_build() { (cd "$repo" && cargo build --release -p ctl -p master-agent -p node-agent --bins); }
stage_deb() {
  if [ -n "${KUBE_AGENTS_BOX:-}" ]; then
    echo "skipped: the agents come baked into box $KUBE_AGENTS_BOX"
    return
  fi
  KUBE_AGENTS_DEB=$("$repo/vagrant/deb/build-deb.sh" --bin-dir "$repo/target/release" --out "$repo/dist")
  export KUBE_AGENTS_DEB
  echo "built $KUBE_AGENTS_DEB"
}
stage_pki() { ctl pki init; }
# Without KUBE_AGENTS_DEB/KUBE_AGENTS_BOX the Vagrantfile installs the newest dist/*.deb.
stage_up() { (cd "$repo/vagrant" && vagrant up); }
stage_bootstrap() { ctl bootstrap; }
stage_deploy() { ctl deploy letschat; }
stage_scale() { ctl scale letschat --replicas 3; }

for ((i = first; i <= last; i++)); do run_stage "${stages[$i]}"; done

echo
echo "== time per stage"
printf '   %s\n' "${times[@]}"
if [ "$last" -eq $((${#stages[@]} - 1)) ]; then
  echo "== Let's Chat runs with 3 replicas: target/release/ctl --config $CLUSTER_YAML get pods -o wide"
  echo "   (kubectl: KUBECONFIG=$(dirname "$CLUSTER_YAML")/admin.kubeconfig)"
fi
