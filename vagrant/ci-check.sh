#!/usr/bin/env bash
# CI check of the real-VM path (vagrant/), run by .ci/run. Our CI cannot boot VMs, so this checks
# everything short of booting one:
#   1. vagrant validate / vagrant status list exactly the machines of cluster.yaml (root file,
#      and a 4-node file: 5 machines); Vagrant gives them the file's IPs, CPUs and memory;
#   2. a cluster.yaml with an error stops vagrant with a readable message, no Ruby backtrace;
#   3. the .deb builds from the given binaries and holds the agents, units and identity step;
#   4. systemd-analyze verify accepts the units; they restart on failure, wait for the network
#      and read /etc/kube-agents/agent.env;
#   5. the packaged identity step installs only the host's key (0600) and enables exactly that
#      host's agent;
#   6. the packaged agents start with the units' environment and answer `ctl facts` over mTLS;
#   7. provisioning needs the PKI: without it `vagrant up` says to run `ctl pki init`; with it
#      and no VM provider, `vagrant up` says which provider to install; each VM is provisioned
#      with its own identity only (and the .deb unless the box is baked);
#   8. vagrant/real-vms.sh (make real-vms) runs its stages in order with the right arguments
#      (vagrant, cargo and ctl replaced by recorders).
#
#   vagrant/ci-check.sh [BIN_DIR]     BIN_DIR: built master-agent, node-agent, ctl
#                                     (default target/debug: `cargo build --workspace --bins`)
#
# Installs vagrant and systemd from Debian's packages when missing (apt-get; as root or sudo).
# Needs no network otherwise: no box is downloaded, no VM is started.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
[ -d "${1:-target/debug}" ] || { echo "FAIL: ${1:-target/debug}: no such directory of built binaries" >&2; exit 1; }
bin_dir=$(cd "${1:-target/debug}" && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

step() { echo "-- $*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# ---------------------------------------------------------------- tools
apt_updated=false
apt_install() {
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || fail "$* not installed and not root: install it (apt-get install $*)"
    sudo=(sudo)
  fi
  if ! $apt_updated; then
    "${sudo[@]}" apt-get update -qq
    apt_updated=true
  fi
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
command -v vagrant >/dev/null || { step "installing vagrant (Debian package)"; apt_install vagrant; }
command -v systemd-analyze >/dev/null || { step "installing systemd (for systemd-analyze)"; apt_install systemd; }
command -v dpkg-deb >/dev/null || fail "dpkg-deb missing: this check runs on Debian/Ubuntu"
for b in master-agent node-agent ctl; do
  [ -x "$bin_dir/$b" ] || fail "$bin_dir/$b missing: run cargo build --workspace --bins first"
done

# Vagrant state goes to the temp dir: nothing is written under vagrant/ or ~/.vagrant.d.
export VAGRANT_HOME=$work/vagrant.d VAGRANT_DOTFILE_PATH=$work/dotvagrant VAGRANT_CHECKPOINT_DISABLE=1
unset VAGRANT_DEFAULT_PROVIDER KUBE_AGENTS_BOX KUBE_AGENTS_DEB CLUSTER_YAML
vagrant_in() { # vagrant_in CLUSTER_YAML ARGS...: run vagrant in vagrant/ on that file
  local file=$1
  shift
  (cd "$repo/vagrant" && CLUSTER_YAML=$file timeout 120 vagrant "$@")
}
# What Vagrant would do with each machine of that file (vagrant/ci/plan.rb); env vars pass on.
vplan() {
  local file=$1
  (cd "$repo/vagrant" && CLUSTER_YAML=$file ruby ci/plan.rb .) 2>&1 || fail "vagrant/ci/plan.rb on $file fails"
}
# The machine names `vagrant status` lists, one line, in order.
machines() {
  local out
  out=$(vagrant_in "$1" status 2>&1) || fail "vagrant status on $1 fails: $out"
  awk '/^Current machine states:/ {on=1; next} on && NF == 0 && n > 0 {exit} on && NF > 0 {print $1; n++}' <<<"$out" | xargs
}

# ---------------------------------------------------------------- 1. machines of cluster.yaml
step "vagrant validate: the cluster Vagrantfile and the bake Vagrantfile"
out=$(vagrant_in "$repo/cluster.yaml" validate 2>&1) || fail "vagrant validate fails on cluster.yaml: $out"

out=$(cd vagrant/bake && timeout 120 vagrant validate 2>&1) || fail "vagrant validate fails on vagrant/bake/Vagrantfile: $out"

step "vagrant status lists exactly the machines of cluster.yaml"
got=$(machines "$repo/cluster.yaml")
[ "$got" = "k8s-master node-1 node-2" ] || fail "vagrant status on cluster.yaml lists '$got', want 'k8s-master node-1 node-2'"
plan=$(vplan "$repo/cluster.yaml" | grep -v '^ ')
want_plan="k8s-master k8s-master bento/ubuntu-24.04 192.168.50.10 --cpus=2 --memory=2048
node-1 node-1 bento/ubuntu-24.04 192.168.50.11 --cpus=2 --memory=2048
node-2 node-2 bento/ubuntu-24.04 192.168.50.12 --cpus=2 --memory=2048"
[ "$plan" = "$want_plan" ] || fail "Vagrant makes of cluster.yaml (name hostname box IP VirtualBox settings):
$plan
want the seed topology:
$want_plan"

step "a 4-node cluster.yaml gives 5 machines with their own sizes"
cat >"$work/four.yaml" <<'YAML'
master: {name: cp, ip: 10.20.0.10, cpus: 4, memoryMb: 4096}
nodes:
  - {name: w1, ip: 10.20.0.11}
  - {name: w2, ip: 10.20.0.12, cpus: 3}
  - {name: w3, ip: 10.20.0.13, memoryMb: 3072}
  - {name: w4, ip: 10.20.0.14}
podCIDR: 10.244.0.0/16
YAML
out=$(vagrant_in "$work/four.yaml" validate 2>&1) || fail "vagrant validate fails on a 4-node file: $out"
got=$(machines "$work/four.yaml")
[ "$got" = "cp w1 w2 w3 w4" ] || fail "vagrant status on a 4-node cluster.yaml lists '$got', want 'cp w1 w2 w3 w4'"
plan=$(vplan "$work/four.yaml" | grep -v '^ ')
want_plan="cp cp bento/ubuntu-24.04 10.20.0.10 --cpus=4 --memory=4096
w1 w1 bento/ubuntu-24.04 10.20.0.11 --cpus=2 --memory=2048
w2 w2 bento/ubuntu-24.04 10.20.0.12 --cpus=3 --memory=2048
w3 w3 bento/ubuntu-24.04 10.20.0.13 --cpus=2 --memory=3072
w4 w4 bento/ubuntu-24.04 10.20.0.14 --cpus=2 --memory=2048"
[ "$plan" = "$want_plan" ] || fail "4-node plan is:
$plan
want:
$want_plan"

# ---------------------------------------------------------------- 2. errors
step "a cluster.yaml with an error stops vagrant with a readable message"
expect_refused() { # name, yaml, expected message fragment
  local name=$1 yaml=$2 want=$3 file=$work/bad-$1.yaml out
  printf '%s\n' "$yaml" >"$file"
  if out=$(vagrant_in "$file" status 2>&1); then
    fail "vagrant status accepted a cluster.yaml with $name:
$yaml"
  fi
  grep -qF -- "$want" <<<"$out" || fail "vagrant status on a cluster.yaml with $name says:
$out
want a message containing: $want"
  grep -qF -- "$file" <<<"$out" || fail "the message for $name does not name the file $file: $out"
  if grep -qE '\.rb:[0-9]+:in|^\s+from /' <<<"$out"; then
    fail "vagrant shows a Ruby backtrace for $name instead of a message: $out"
  fi
}
expect_refused "no master" 'nodes: [{name: node-1, ip: 192.168.50.11}]
podCIDR: 10.244.0.0/16' "master: missing"
expect_refused "a bad IP" 'master: {name: k8s-master, ip: 192.168.50.10}
nodes: [{name: node-1, ip: 192.168.50.300}]
podCIDR: 10.244.0.0/16' 'nodes[0].ip: "192.168.50.300" is not an IPv4 address'
expect_refused "duplicate names" 'master: {name: k8s-master, ip: 192.168.50.10}
nodes: [{name: node-1, ip: 192.168.50.11}, {name: node-1, ip: 192.168.50.12}]
podCIDR: 10.244.0.0/16' 'nodes[1].name: "node-1" is also the name of nodes[0]'
expect_refused "duplicate IPs" 'master: {name: k8s-master, ip: 192.168.50.10}
nodes: [{name: node-1, ip: 192.168.50.10}]
podCIDR: 10.244.0.0/16' 'nodes[0].ip: 192.168.50.10 is also the IP of master'
expect_refused "a 1-CPU master" 'master: {name: k8s-master, ip: 192.168.50.10, cpus: 1}
podCIDR: 10.244.0.0/16' 'master.cpus: 1 is too few'
expect_refused "broken YAML" 'master: {name: k8s-master, ip: 192.168.50.10
podCIDR: [' "not valid YAML"
out=$(vagrant_in "$work/absent.yaml" status 2>&1) && fail "vagrant status accepted a missing cluster.yaml"
grep -qF "$work/absent.yaml: cannot read" <<<"$out" || fail "a missing cluster.yaml gives: $out"

# ---------------------------------------------------------------- 3. the .deb
step "the .deb builds from $bin_dir"
deb=$(vagrant/deb/build-deb.sh --bin-dir "$bin_dir" --out "$work/dist" --fast) || fail "build-deb.sh fails"
[ -f "$deb" ] || fail "build-deb.sh printed '$deb', which is not a file"
dpkg-deb -f "$deb" Package | grep -qx kube-agents || fail "$deb: Package is not kube-agents"
listing=$(dpkg-deb -c "$deb")
for f in ./usr/bin/master-agent ./usr/bin/node-agent ./usr/sbin/kube-agents-identity \
  ./usr/lib/systemd/system/master-agent.service ./usr/lib/systemd/system/node-agent.service \
  ./etc/kube-agents/; do
  grep -qE " $f\$" <<<"$listing" || fail "$deb lacks $f; it holds:
$listing"
done
for f in ./usr/bin/master-agent ./usr/bin/node-agent ./usr/sbin/kube-agents-identity; do
  grep -qE "^-rwxr-xr-x root/root .* $f\$" <<<"$listing" || fail "$f is not an executable owned by root in $deb"
done
if grep -qE '/pki/|\.key$' <<<"$listing"; then fail "$deb holds key material: $listing"; fi

# ---------------------------------------------------------------- 4. units
step "systemd-analyze verify accepts the packaged units"
root=$work/root
dpkg-deb -x "$deb" "$root"
# verify resolves dependencies (network-online.target, multi-user.target) inside --root.
mkdir -p "$root/etc/systemd/system"
cp -an /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
out=$(systemd-analyze verify --root="$root" /usr/lib/systemd/system/master-agent.service \
  /usr/lib/systemd/system/node-agent.service 2>&1) || fail "systemd-analyze verify refuses the units: $out"
[ -z "$out" ] || fail "systemd-analyze verify warns about the units: $out"
for u in master-agent node-agent; do
  f=$root/usr/lib/systemd/system/$u.service
  for line in "ExecStart=/usr/bin/$u" "Restart=on-failure" "After=network-online.target" \
    "Wants=network-online.target" "EnvironmentFile=/etc/kube-agents/agent.env" \
    "Environment=AGENT_CONFIG=/etc/kube-agents/cluster.yaml" \
    "Environment=AGENT_PKI_DIR=/etc/kube-agents/pki" "WantedBy=multi-user.target"; do
    grep -qxF "$line" "$f" || fail "$u.service lacks '$line'"
  done
done
for u in master-agent node-agent; do
  "$root/usr/bin/$u" --help 2>&1 | grep -q -- "--config" || fail "packaged $u does not run: $("$root/usr/bin/$u" --help 2>&1 | tail -3)"
done

# ---------------------------------------------------------------- 5. identity step
step "the identity step installs only the host's key and enables only its agent"
# The same cluster on loopback IPs so the agents can be started below (step 6).
cat >"$work/cluster.yaml" <<'YAML'
master: {name: k8s-master, ip: 127.80.8.10}
nodes:
  - {name: node-1, ip: 127.80.8.11}
  - {name: node-2, ip: 127.80.8.12}
podCIDR: 10.244.0.0/16
agentPort: 50851
YAML
"$bin_dir/ctl" --config "$work/cluster.yaml" pki init >/dev/null 2>&1 || fail "ctl pki init fails on $work/cluster.yaml"
for h in k8s-master:master node-1:node node-2:node; do
  name=${h%:*} role=${h#*:} r=$work/vm-$name
  cp -a "$root" "$r"
  # A stale key of another host, left by an earlier identity: it must go.
  mkdir -p "$r/etc/kube-agents/pki/hosts" && echo stale >"$r/etc/kube-agents/pki/hosts/other.key"
  mkdir -m 0700 "$work/stage-$name"
  cp "$work/cluster.yaml" "$work/pki/ca.crt" "$work/pki/hosts/$name.crt" "$work/pki/hosts/$name.key" "$work/stage-$name/"
  out=$("$r/usr/sbin/kube-agents-identity" --from "$work/stage-$name" --host "$name" --role "$role" --root "$r" 2>&1) ||
    fail "kube-agents-identity fails for $name: $out"
  [ ! -e "$work/stage-$name" ] || fail "kube-agents-identity left the staging dir (with the key) of $name"
  keys=$(cd "$r/etc/kube-agents/pki/hosts" && ls)
  [ "$(echo $keys)" = "$name.crt $name.key" ] || fail "$name's pki/hosts holds '$(echo $keys)', want only its own crt and key"
  [ "$(stat -c %a "$r/etc/kube-agents/pki/hosts/$name.key")" = 600 ] || fail "$name's key is not 0600"
  [ "$(stat -c %a "$r/etc/kube-agents/pki")" = 700 ] || fail "$name's pki dir is not 0700"
  grep -qx "AGENT_HOST=$name" "$r/etc/kube-agents/agent.env" || fail "$name's agent.env lacks AGENT_HOST=$name"
  wants=$(cd "$r/etc/systemd/system/multi-user.target.wants" 2>/dev/null && ls)
  [ "$(echo $wants)" = "$role-agent.service" ] || fail "$name ($role) enables '$(echo $wants)', want only $role-agent.service"
done
out=$("$root/usr/sbin/kube-agents-identity" --from "$work/nowhere" --host node-1 --role node --root "$root" 2>&1) &&
  fail "kube-agents-identity accepted a missing --from dir"
grep -q "no such directory" <<<"$out" || fail "kube-agents-identity on a missing dir says: $out"

# ---------------------------------------------------------------- 6. agents start as the units start them
step "the packaged agents start with the units' environment and answer ctl facts"
for h in k8s-master:master node-1:node node-2:node; do
  name=${h%:*} role=${h#*:} r=$work/vm-$name
  unit=$r/usr/lib/systemd/system/$role-agent.service
  # The unit's Environment= lines and its EnvironmentFile, with /etc below this VM's root.
  (
    set -a
    eval "$(sed -n 's/^Environment=//p' "$unit")"
    . "$r/etc/kube-agents/agent.env"
    set +a
    AGENT_CONFIG=$r$AGENT_CONFIG AGENT_PKI_DIR=$r$AGENT_PKI_DIR AGENT_ROOT=$r
    export AGENT_CONFIG AGENT_PKI_DIR AGENT_ROOT
    exec "$r$(sed -n 's/^ExecStart=//p' "$unit")"
  ) >"$work/$name.log" 2>&1 &
  pids+=($!)
done
ok=false
for _ in $(seq 1 60); do
  if "$bin_dir/ctl" --config "$work/cluster.yaml" facts >"$work/facts.out" 2>&1; then ok=true; break; fi
  sleep 0.5
done
$ok || fail "ctl facts cannot reach the packaged agents: $(cat "$work/facts.out"); agent logs: $(tail -n 3 "$work"/*.log)"
for name in k8s-master node-1 node-2; do
  grep -q "^$name" "$work/facts.out" || fail "ctl facts lacks $name: $(cat "$work/facts.out")"
done

# ---------------------------------------------------------------- 7. provisioning preconditions
step "vagrant up needs the PKI, then a VM provider"
mkdir -p "$work/nopki" && cp "$work/cluster.yaml" "$work/nopki/cluster.yaml"
out=$(vagrant_in "$work/nopki/cluster.yaml" up 2>&1) && fail "vagrant up went ahead without a PKI"
grep -qF "pki init" <<<"$out" || fail "vagrant up without a PKI says: $out"
out=$(KUBE_AGENTS_DEB=$deb vagrant_in "$work/cluster.yaml" validate 2>&1) || fail "vagrant validate with a PKI and the .deb fails: $out"
out=$(KUBE_AGENTS_DEB=$deb vagrant_in "$work/cluster.yaml" up k8s-master 2>&1) && fail "vagrant up succeeded without a VM provider?"
grep -qF "No VM provider is installed" <<<"$out" || fail "vagrant up without a provider says: $out"

step "each VM is provisioned with only its own identity; a baked box gets no .deb"
st=/tmp/kube-agents-identity
for baked in no yes; do
  if [ $baked = yes ]; then
    plan=$(KUBE_AGENTS_BOX=kube-agents/ubuntu-24.04 vplan "$work/cluster.yaml")
    box=kube-agents/ubuntu-24.04 debline=
  else
    plan=$(KUBE_AGENTS_DEB=$deb vplan "$work/cluster.yaml")
    box=bento/ubuntu-24.04 debline="
  deb file $(basename "$deb") -> $st/kube-agents.deb"
  fi
  want_plan=
  for h in k8s-master:10 node-1:11 node-2:12; do
    name=${h%:*}
    want_plan+="$name $name $box 127.80.8.${h#*:} --cpus=2 --memory=2048
  stage shell user$debline
  cluster.yaml file cluster.yaml -> $st/cluster.yaml
  ca.crt file ca.crt -> $st/ca.crt
  $name.crt file $name.crt -> $st/$name.crt
  $name.key file $name.key -> $st/$name.key
  identity shell root
"
  done
  [ "$plan" = "${want_plan%$'\n'}" ] || fail "provisioning plan (baked box: $baked):
$plan
want:
$want_plan"
done

# ---------------------------------------------------------------- 8. the one path, in order
step "real-vms.sh runs build, deb, pki init, vagrant up, bootstrap, deploy, scale in that order"
# A copy of the scripts with vagrant, cargo and ctl replaced by recorders: this checks the
# script's order and arguments, not the VMs.
dry=$work/dry
mkdir -p "$dry/repo" "$dry/bin"
cp -a vagrant cluster.yaml Cargo.toml "$dry/repo/"
cat >"$dry/bin/vagrant" <<SH
#!/bin/sh
echo "vagrant \$* [deb=\$(basename "\${KUBE_AGENTS_DEB:-none}") box=\${KUBE_AGENTS_BOX:-none}]" >>"$dry/log"
[ "\$*" = "status --machine-readable" ] && echo "1,k8s-master,provider-name,libvirt"
exit 0
SH
cat >"$dry/bin/cargo" <<SH
#!/bin/sh
echo "cargo \$*" >>"$dry/log"
mkdir -p target/release
for b in ctl master-agent node-agent; do
  printf '#!/bin/sh\necho "%s \$*" >>"$dry/log"\n' "\$b" >"target/release/\$b"
  chmod +x "target/release/\$b"
done
SH
chmod +x "$dry/bin/"*
out=$(PATH=$dry/bin:$PATH "$dry/repo/vagrant/real-vms.sh" 2>&1) || fail "real-vms.sh with recorders fails: $out"
cfg=$dry/repo/cluster.yaml
want="vagrant status --machine-readable [deb=none box=none]
cargo build --release -p ctl -p master-agent -p node-agent --bins
ctl --config $cfg pki init
vagrant up [deb=$(basename "$deb") box=none]
ctl --config $cfg bootstrap
ctl --config $cfg deploy letschat
ctl --config $cfg scale letschat --replicas 3"
[ "$(cat "$dry/log")" = "$want" ] || fail "real-vms.sh ran:
$(cat "$dry/log")
want:
$want"
for s in build deb pki up bootstrap deploy scale; do
  grep -qE "^ +$s +[0-9]+s\$" <<<"$out" || fail "real-vms.sh does not report the time of stage $s: $out"
done
[ -f "$dry/repo/dist/$(basename "$deb")" ] || fail "real-vms.sh built no .deb in dist/"

echo "vagrant/ci-check.sh: all checks passed"
