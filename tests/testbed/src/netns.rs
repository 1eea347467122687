//! Network namespaces for `--netns` (root only): one namespace per host, each with a veth whose
//! namespace end (`eth1`) carries the host's cluster.yaml IP, all veths on one bridge in the
//! initial namespace, which also gets an address on that network (so `ctl` on this machine
//! reaches the agents). Cutting a host off takes its veth down. Uses the real `ip` tool: this is
//! the harness's own plumbing, not something an agent runs.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cluster_common::config::ClusterConfig;

/// The namespaces and links of one testbed.
#[derive(Debug)]
pub struct Network {
    bridge: String,
    hosts: HashMap<String, (String, String)>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether this process may create network namespaces.
pub fn available() -> bool {
    nix::unistd::geteuid().is_root() && Command::new("ip").arg("-V").output().is_ok()
}

impl Network {
    /// Creates the bridge and one namespace per host.
    pub fn create(config: &ClusterConfig) -> Result<Network, String> {
        if !available() {
            return Err("--netns needs root and the ip tool".into());
        }
        let ips: Vec<Ipv4Addr> = config.hosts().map(|h| h.ip).collect();
        if let Some(lo) = ips.iter().find(|i| i.is_loopback()) {
            return Err(format!(
                "{lo} in {} is a loopback address; with --netns hosts need addresses that can cross a bridge (e.g. 10.77.0.10)",
                config.path.display()
            ));
        }
        let o = config.master.ip.octets();
        let gateway = (1..=254u8)
            .map(|d| Ipv4Addr::new(o[0], o[1], o[2], d))
            .find(|a| !ips.contains(a))
            .ok_or("no free address for the bridge")?;
        cleanup_stale();
        // Unique per testbed (several may run in one test process) and naming the owner pid, so
        // leftovers of a killed run can be recognised; names stay within IFNAMSIZ (15).
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 100;
        let tag = format!("{}x{n}", std::process::id());
        if let Some(dev) = subnet_in_use(gateway) {
            return Err(format!(
                "{}/24 is already routed via {dev}; use another subnet for this testbed",
                gateway
            ));
        }
        let mut net = Network {
            bridge: format!("tbbr{tag}"),
            hosts: HashMap::new(),
        };
        let result = (|| {
            ip(&["link", "add", &net.bridge, "type", "bridge"])?;
            ip(&["addr", "add", &format!("{gateway}/24"), "dev", &net.bridge])?;
            ip(&["link", "set", &net.bridge, "up"])?;
            for (i, h) in config.hosts().enumerate() {
                let ns = format!("tb-{tag}-{}", h.name);
                let veth = format!("tv{tag}h{i}");
                let peer = format!("tp{tag}h{i}");
                ip(&["netns", "add", &ns])?;
                net.hosts
                    .insert(h.name.to_string(), (ns.clone(), veth.clone()));
                ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
                ip(&["link", "set", &peer, "netns", &ns])?;
                ip(&["-n", &ns, "link", "set", &peer, "name", "eth1"])?;
                ip(&[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{}/24", h.ip),
                    "dev",
                    "eth1",
                ])?;
                ip(&["-n", &ns, "link", "set", "eth1", "up"])?;
                ip(&["-n", &ns, "link", "set", "lo", "up"])?;
                ip(&["link", "set", &veth, "master", &net.bridge])?;
                ip(&["link", "set", &veth, "up"])?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(net),
            Err(e) => {
                net.destroy_ref();
                Err(e)
            }
        }
    }

    /// host → namespace name.
    pub fn names(&self) -> HashMap<String, String> {
        self.hosts
            .iter()
            .map(|(h, (ns, _))| (h.clone(), ns.clone()))
            .collect()
    }

    /// The namespace of `host`.
    pub fn ns_name(&self, host: &str) -> String {
        self.hosts
            .get(host)
            .map(|(ns, _)| ns.clone())
            .unwrap_or_default()
    }

    /// Takes the link of `host` down (false) or up (true).
    pub fn set_link(&self, host: &str, up: bool) -> Result<(), String> {
        let (_, veth) = self
            .hosts
            .get(host)
            .ok_or_else(|| format!("no namespace for {host}"))?;
        ip(&["link", "set", veth, if up { "up" } else { "down" }])
    }

    /// Whether a TCP connection from inside `host`'s namespace to `addr` succeeds.
    pub fn can_connect(&self, host: &str, addr: SocketAddr, timeout: Duration) -> bool {
        let ns = self.ns_name(host);
        std::thread::spawn(move || {
            let Ok(f) = std::fs::File::open(format!("/run/netns/{ns}")) else {
                return false;
            };
            // setns changes only this (fresh) thread's network namespace.
            if nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                return false;
            }
            TcpStream::connect_timeout(&addr, timeout).is_ok()
        })
        .join()
        .unwrap_or(false)
    }

    fn destroy_ref(&self) {
        for (ns, _) in self.hosts.values() {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }

    /// Deletes the namespaces (their veths go with them) and the bridge.
    pub fn destroy(self) {
        self.destroy_ref();
    }
}

/// Whether an interface already has an address in the /24 of `addr` (a leftover bridge would
/// swallow the traffic).
fn subnet_in_use(addr: Ipv4Addr) -> Option<String> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .ok()?;
    let o = addr.octets();
    let prefix = format!("{}.{}.{}.", o[0], o[1], o[2]);
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 3 && f[3].starts_with(&prefix)).then(|| f[1].to_string())
    })
}

/// The owner pid in a testbed name (`tb-<pid>x<n>-<host>`, `tbbr<pid>x<n>`).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix("tbbr")
        .or_else(|| name.strip_prefix("tb-"))?;
    rest.split('x').next()?.parse().ok()
}

/// Deletes namespaces and bridges left by testbeds whose process is gone (a killed test run).
fn cleanup_stale() {
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let name = l.split_whitespace().next().unwrap_or("");
            if owner_pid(name).is_some_and(|p| !alive(p)) {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    if let Ok(out) = Command::new("ip")
        .args(["-o", "link", "show", "type", "bridge"])
        .output()
    {
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let name = l.split(':').nth(1).unwrap_or("").trim();
            if owner_pid(name).is_some_and(|p| !alive(p)) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

/// Binds a TCP listener inside namespace `ns` (for simulated servers of a netns host).
pub fn bind_in(ns: &str, addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/run/netns/{ns}"))?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::other)?;
        std::net::TcpListener::bind(addr)
    })
    .join()
    .map_err(|_| std::io::Error::other("bind thread panicked"))?
}
