//! Preflight: is this host fit for Kubernetes at all? Nothing here changes the host; every
//! problem is reported at once, each with what to do.
//!
//! - running as root: the effective UID from `proc/self/status` under the host root;
//! - a supported OS: Ubuntu 22.04 or newer, from `etc/os-release` (16.04 is cgroup v1, which
//!   current kubelets refuse);
//! - on the master: ≥ 2 CPUs and ≥ 1700 MiB of memory (kubeadm's limits), from `proc/cpuinfo`
//!   and `proc/meminfo`;
//! - the host's cluster.yaml IP is on a local interface (a Vagrant VM whose private-network NIC
//!   is missing would otherwise advertise its NAT address);
//! - the ports kubeadm needs are free on that IP (6443, 10259, 10257, 10250, 2379, 2380 on the
//!   master; 10250 on nodes) — unless this host already runs Kubernetes, whose own components
//!   hold them.

use std::collections::BTreeMap;
use std::net::{IpAddr, TcpListener, UdpSocket};

use cluster_common::config::HostRole;

use super::{Check, Host, Step, StepError, fsx};
use crate::facts;

/// Ports `kubeadm init` needs free.
pub const MASTER_PORTS: &[u16] = &[6443, 10259, 10257, 10250, 2379, 2380];
/// Ports `kubeadm join` needs free.
pub const NODE_PORTS: &[u16] = &[10250];
/// kubeadm's control-plane minimums.
pub const MIN_MASTER_CPUS: u32 = 2;
/// kubeadm's control-plane memory minimum, MiB.
pub const MIN_MASTER_MEMORY_MIB: u64 = 1700;
/// The oldest Ubuntu release we prepare (cgroup v2, current containerd and kubelet).
pub const OLDEST_UBUNTU: (u32, u32) = (22, 4);
/// Files that exist once kubeadm has run here: then the ports belong to this host's cluster.
const KUBERNETES_PRESENT: &[&str] = &[
    "/etc/kubernetes/kubelet.conf",
    "/etc/kubernetes/manifests/kube-apiserver.yaml",
];

/// `etc/os-release` (or `usr/lib/os-release`) as key → unquoted value.
pub fn os_release(host: &Host) -> Result<BTreeMap<String, String>, StepError> {
    let text = match fsx::read_text_opt(&host.path("/etc/os-release"))? {
        Some(t) => t,
        None => fsx::read_text_opt(&host.path("/usr/lib/os-release"))?.unwrap_or_default(),
    };
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect())
}

/// The effective UID in a `/proc/<pid>/status` text (`Uid: real effective saved fs`).
pub fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1)?.parse().ok())
}

fn check_root(host: &Host, problems: &mut Vec<String>) -> Result<(), StepError> {
    let uid = match fsx::read_text_opt(&host.path("/proc/self/status"))? {
        Some(status) => effective_uid(&status),
        None => Some(nix::unistd::geteuid().as_raw()),
    };
    match uid {
        Some(0) => {}
        Some(uid) => problems.push(format!(
            "the agent runs as UID {uid}, not root: it must install packages and edit /etc; run it as root (the agent's systemd unit has User=root)"
        )),
        None => problems.push("cannot tell the agent's UID from /proc/self/status: is /proc mounted?".into()),
    }
    Ok(())
}

fn check_os(os: &BTreeMap<String, String>, problems: &mut Vec<String>) {
    let id = os.get("ID").map(String::as_str).unwrap_or("");
    let version = os.get("VERSION_ID").map(String::as_str).unwrap_or("");
    let parsed = version
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    let name = os
        .get("PRETTY_NAME")
        .cloned()
        .unwrap_or_else(|| format!("{id} {version}"));
    match (id, parsed) {
        ("ubuntu", Some(v)) if v >= OLDEST_UBUNTU => {}
        ("ubuntu", Some(_)) => problems.push(format!(
            "{name} is not supported: it is too old (cgroup v1, which current kubelets refuse); use Ubuntu 22.04 or 24.04 (Vagrant box bento/ubuntu-24.04)"
        )),
        ("", _) => problems.push(
            "etc/os-release is missing or has no ID: cannot tell the OS; use Ubuntu 22.04 or 24.04".into(),
        ),
        _ => problems.push(format!(
            "{name} is not supported: the steps use Ubuntu's apt repositories; use Ubuntu 22.04 or 24.04"
        )),
    }
}

fn check_capacity(host: &Host, problems: &mut Vec<String>) -> (u32, u64) {
    let f = facts::gather(&host.root);
    let mib = f.memory_total_bytes / (1024 * 1024);
    if host.spec.role == HostRole::Master {
        if f.cpus < MIN_MASTER_CPUS {
            problems.push(format!(
                "{} CPU(s): the control plane needs at least {MIN_MASTER_CPUS}; give the VM more (cluster.yaml master.cpus)",
                f.cpus
            ));
        }
        if mib < MIN_MASTER_MEMORY_MIB {
            problems.push(format!(
                "{mib} MiB of memory: the control plane needs at least {MIN_MASTER_MEMORY_MIB} MiB; give the VM more (cluster.yaml master.memoryMb)"
            ));
        }
    }
    (f.cpus, mib)
}

fn check_ip(host: &Host, problems: &mut Vec<String>) -> bool {
    let ip = IpAddr::V4(host.spec.ip);
    match UdpSocket::bind((ip, 0)) {
        Ok(_) => true,
        Err(e) => {
            problems.push(format!(
                "{ip} (this host's IP in cluster.yaml) is not on a local interface ({e}): bring up the private-network NIC with that address, or fix the IP in cluster.yaml"
            ));
            false
        }
    }
}

fn check_ports(host: &Host, problems: &mut Vec<String>) -> &'static str {
    if KUBERNETES_PRESENT.iter().any(|f| host.path(f).exists()) {
        return "ports held by this host's Kubernetes";
    }
    let ports = match host.spec.role {
        HostRole::Master => MASTER_PORTS,
        HostRole::Node => NODE_PORTS,
    };
    let ip = IpAddr::V4(host.spec.ip);
    for port in ports {
        if let Err(e) = TcpListener::bind((ip, *port)) {
            problems.push(format!(
                "port {port} on {ip} is not free ({e}): kubeadm needs it; stop what listens there (`ss -ltnp 'sport = :{port}'`)"
            ));
        }
    }
    "ports free"
}

/// The preflight step.
#[derive(Debug, Clone, Copy)]
pub struct Preflight;

#[tonic::async_trait]
impl Step for Preflight {
    fn name(&self) -> &'static str {
        "preflight"
    }

    async fn check(&self, host: &Host) -> Result<Check, StepError> {
        let mut problems = Vec::new();
        check_root(host, &mut problems)?;
        let os = os_release(host)?;
        check_os(&os, &mut problems);
        let (cpus, mib) = check_capacity(host, &mut problems);
        let ports = if check_ip(host, &mut problems) {
            check_ports(host, &mut problems)
        } else {
            "ports not checked"
        };
        if !problems.is_empty() {
            return Err(StepError::Unfit { problems });
        }
        Ok(Check::ok(format!(
            "{}, {cpus} CPUs, {mib} MiB, {} local, {ports}, root",
            os.get("PRETTY_NAME")
                .map(String::as_str)
                .unwrap_or("ubuntu"),
            host.spec.ip
        )))
    }

    async fn apply(&self, _host: &Host, _check: &Check) -> Result<(), StepError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::testutil::World;

    fn fit(w: &World) {
        w.write("proc/self/status", b"Name:\tnode-agent\nUid:\t0\t0\t0\t0\n");
        w.write(
            "etc/os-release",
            b"PRETTY_NAME=\"Ubuntu 24.04.3 LTS\"\nID=ubuntu\nVERSION_ID=\"24.04\"\n",
        );
        w.write("proc/cpuinfo", b"processor\t: 0\nprocessor\t: 1\n");
        w.write("proc/meminfo", b"MemTotal:        2014232 kB\n");
    }

    fn master(w: &World, ip: &str) -> Host {
        w.host_with(World::config(ip), "k8s-master")
    }

    #[tokio::test]
    async fn fit_host_passes_and_runs_nothing() {
        let w = World::new();
        fit(&w);
        let c = Preflight.check(&master(&w, "127.85.5.10")).await.unwrap();
        assert!(c.is_ok());
        assert!(c.state.contains("2 CPUs"), "{}", c.state);
        assert!(w.runner.lines().is_empty());
    }

    #[tokio::test]
    async fn every_problem_is_reported_at_once_with_a_remedy() {
        let w = World::new();
        w.write("proc/self/status", b"Uid:\t1000\t1000\t1000\t1000\n");
        w.write(
            "etc/os-release",
            b"PRETTY_NAME=\"Ubuntu 16.04.7 LTS\"\nID=ubuntu\nVERSION_ID=\"16.04\"\n",
        );
        w.write("proc/cpuinfo", b"processor\t: 0\n");
        w.write("proc/meminfo", b"MemTotal:        1014232 kB\n");
        let busy = TcpListener::bind("127.85.5.11:6443").unwrap();
        let err = Preflight
            .check(&master(&w, "127.85.5.11"))
            .await
            .unwrap_err();
        drop(busy);
        let StepError::Unfit { problems } = &err else {
            panic!("{err}")
        };
        assert_eq!(problems.len(), 5, "{problems:#?}");
        let all = problems.join("\n");
        for want in [
            "UID 1000, not root",
            "Ubuntu 16.04.7 LTS is not supported",
            "1 CPU(s)",
            "990 MiB",
            "port 6443 on 127.85.5.11 is not free",
        ] {
            assert!(all.contains(want), "missing {want:?} in {all}");
        }
        assert!(w.runner.lines().is_empty());
    }

    #[tokio::test]
    async fn ip_not_on_this_host_is_named() {
        let w = World::new();
        fit(&w);
        let err = Preflight
            .check(&master(&w, "192.0.2.10"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("192.0.2.10 (this host's IP in cluster.yaml) is not on a local interface"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn ports_held_by_this_hosts_own_kubernetes_are_fine() {
        let w = World::new();
        fit(&w);
        w.write("etc/kubernetes/kubelet.conf", b"x");
        let busy = TcpListener::bind("127.85.5.12:10250").unwrap();
        let c = Preflight.check(&master(&w, "127.85.5.12")).await;
        drop(busy);
        assert!(c.unwrap().state.contains("held by this host's Kubernetes"));
    }

    #[test]
    fn effective_uid_is_the_second_field() {
        assert_eq!(effective_uid("Uid:\t1000\t0\t0\t0\n"), Some(0));
        assert_eq!(effective_uid("Name: x\n"), None);
    }
}
