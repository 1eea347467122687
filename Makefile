# Shortcuts for the real-VM path (vagrant/README.md). The Rust build and tests need no make:
# `cargo build --release --workspace`, `cargo test --workspace`.

.PHONY: help release deb bake real-vms vms-destroy ci-vagrant

help:
	@echo "make release      cargo build --release of ctl, master-agent, node-agent"
	@echo "make deb          release build + dist/kube-agents_<version>_<arch>.deb"
	@echo "make bake         deb + a Vagrant box with the agents preinstalled (kube-agents/ubuntu-24.04)"
	@echo "make real-vms     build -> deb -> pki init -> vagrant up -> bootstrap -> deploy letschat -> scale 3"
	@echo "make vms-destroy  vagrant destroy -f (the VMs of cluster.yaml)"
	@echo "make ci-vagrant   the CI check of vagrant/ (no VMs): vagrant validate/status, .deb, units"

release:
	cargo build --release -p ctl -p master-agent -p node-agent --bins

deb: release
	vagrant/deb/build-deb.sh --bin-dir target/release --out dist

bake: deb
	vagrant/bake.sh

real-vms:
	vagrant/real-vms.sh

vms-destroy:
	cd vagrant && vagrant destroy -f

ci-vagrant:
	cargo build --workspace --bins
	vagrant/ci-check.sh target/debug
