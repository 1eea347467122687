//! `hostshim`: the multi-call shim binary installed on each simulated host's PATH as
//! `systemctl`, `apt-get`, `kubeadm`, ... (see `testbed::shim`).

fn main() -> std::process::ExitCode {
    testbed::shim::main()
}
