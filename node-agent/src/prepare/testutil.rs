//! Unit-test world for the steps: a tempdir host root and a [`RecordingRunner`] whose scripted
//! answers can keep a little state ("marks") like the real tools would.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use cluster_common::config::ClusterConfig;

use super::Host;
use crate::exec::{Output, RecordingRunner};

#[derive(Clone)]
pub struct World {
    pub dir: Arc<tempfile::TempDir>,
    pub runner: RecordingRunner,
    marks: Arc<Mutex<BTreeSet<String>>>,
}

impl World {
    pub fn new() -> Self {
        Self {
            dir: Arc::new(tempfile::tempdir().unwrap()),
            runner: RecordingRunner::new(),
            marks: Arc::default(),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, data: &[u8]) {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.root().join(rel)).unwrap_or_default()
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.root().join(rel).exists()
    }

    pub fn mark(&self, key: &str) {
        self.marks.lock().unwrap().insert(key.to_string());
    }

    pub fn marked(&self, key: &str) -> bool {
        self.marks.lock().unwrap().contains(key)
    }

    pub fn ok(stdout: &str) -> Output {
        Output {
            code: 0,
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
        }
    }

    pub fn fail(code: i32, stderr: &str) -> Output {
        Output {
            code,
            stdout: Vec::new(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    /// Answers `curl -o OUT` and `gpg … -o OUT IN` by writing a key to OUT.
    pub fn fake_downloads(&self) {
        self.runner.respond(move |c| {
            let i = c.args.iter().position(|a| a == "-o")?;
            if c.program != "curl" && c.program != "gpg" {
                return None;
            }
            std::fs::write(&c.args[i + 1], b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n").unwrap();
            None
        });
    }

    pub fn is_mutating(&self, line: &str) -> bool {
        let argv: Vec<String> = line.split(' ').map(str::to_string).collect();
        super::is_mutating(&argv)
    }

    pub fn config(ip: &str) -> ClusterConfig {
        ClusterConfig::parse(
            &format!(
                "master: {{name: k8s-master, ip: {ip}}}\nnodes:\n  - {{name: node-1, ip: 127.0.0.3}}\npodCIDR: 10.244.0.0/16\n\
                 kubernetes: {{version: \"1.35\", packageVersion: \"1.35.0-1.1\"}}\n"
            ),
            Path::new("/tmp/cluster.yaml"),
        )
        .unwrap()
    }

    pub fn host_with(&self, config: ClusterConfig, name: &str) -> Host {
        let spec = config.host(name).unwrap().clone();
        Host {
            root: self.root().to_path_buf(),
            runner: Arc::new(self.runner.clone()),
            config: Arc::new(config),
            spec,
        }
    }

    pub fn host_master(&self) -> Host {
        self.host_with(Self::config("127.0.0.2"), "k8s-master")
    }
}

/// containerd 1.7's `config default` (abridged), config version 2.
pub const CONTAINERD_V2_DEFAULT: &str = r#"disabled_plugins = []
version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".containerd]
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            SystemdCgroup = false
"#;

impl World {
    /// A fresh Ubuntu 24.04 VM whose tools keep state like the real ones: swap on, nothing
    /// installed, ip_forward 0.
    pub fn fake_ubuntu() -> World {
        Self::fake_ubuntu_with(|_| None)
    }

    /// As [`World::fake_ubuntu`], with `first` answering before the fake tools (to break one).
    pub fn fake_ubuntu_with(
        first: impl Fn(&crate::exec::Cmd) -> Option<Output> + Send + Sync + 'static,
    ) -> World {
        let w = World::new();
        w.runner.respond(first);
        w.write("proc/self/status", b"Name:\tnode-agent\nUid:\t0\t0\t0\t0\n");
        w.write(
            "etc/os-release",
            b"PRETTY_NAME=\"Ubuntu 24.04.3 LTS\"\nID=ubuntu\nVERSION_ID=\"24.04\"\nVERSION_CODENAME=noble\n",
        );
        w.write("proc/cpuinfo", b"processor\t: 0\nprocessor\t: 1\n");
        w.write("proc/meminfo", b"MemTotal:        2014232 kB\n");
        w.write(
            "etc/fstab",
            b"# /etc/fstab\r\nUUID=1 / ext4 defaults 0 1\r\n/swap.img\tnone\tswap\tsw\t0\t0",
        );
        w.write(
            "proc/swaps",
            b"Filename\tType\tSize\tUsed\tPriority\n/swap.img file 2097148 0 -2\n",
        );
        w.write("proc/modules", b"ip_tables 32768 0 - Live 0x0\n");
        w.write("proc/sys/net/ipv4/ip_forward", b"0\n");
        w.fake_downloads();
        let s = w.clone();
        w.runner.respond(move |c| s.fake_tool(c));
        w
    }

    fn fake_tool(&self, c: &crate::exec::Cmd) -> Option<Output> {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        match (c.program.as_str(), args.as_slice()) {
            ("swapoff", _) => self.write("proc/swaps", b"Filename\tType\tSize\tUsed\tPriority\n"),
            ("systemctl", ["list-units", ..]) => {
                return Some(Self::ok("swap.img.swap loaded active active /swap.img\n"));
            }
            ("systemctl", ["is-enabled", unit]) => {
                let state = if self.marked(&format!("masked:{unit}")) {
                    "masked"
                } else if unit.ends_with(".swap") {
                    "generated"
                } else {
                    "enabled"
                };
                return Some(Self::ok(&format!("{state}\n")));
            }
            ("systemctl", ["mask", unit]) => self.mark(&format!("masked:{unit}")),
            ("systemctl", ["is-active", unit]) => {
                return Some(if self.marked(&format!("active:{unit}")) {
                    Self::ok("active\n")
                } else {
                    Self::fail(3, "")
                });
            }
            ("systemctl", ["restart", unit]) => {
                self.mark(&format!("active:{unit}"));
                if *unit == "containerd" {
                    let cfg = self.read("etc/containerd/config.toml");
                    self.write("run/containerd-loaded.toml", &cfg);
                }
            }
            ("modprobe", [m]) => {
                self.write(&format!("sys/module/{m}/refcnt"), b"0\n");
                if *m == "br_netfilter" {
                    self.write("proc/sys/net/bridge/bridge-nf-call-iptables", b"0\n");
                    self.write("proc/sys/net/bridge/bridge-nf-call-ip6tables", b"0\n");
                }
            }
            ("sysctl", ["--system"]) => {
                for k in [
                    "net/ipv4/ip_forward",
                    "net/bridge/bridge-nf-call-iptables",
                    "net/bridge/bridge-nf-call-ip6tables",
                ] {
                    if self.exists(&format!("proc/sys/{k}")) {
                        self.write(&format!("proc/sys/{k}"), b"1\n");
                    }
                }
            }
            ("dpkg-query", _) => {
                let out: String = args[2..]
                    .iter()
                    .filter_map(|p| {
                        let v = String::from_utf8(self.read(&format!("var/lib/dpkg/{p}"))).ok()?;
                        (!v.is_empty()).then(|| format!("{p}\tinstall ok installed\t{v}\n"))
                    })
                    .collect();
                return Some(Self::ok(&out));
            }
            ("apt-get", ["install", ..]) => {
                let mut specs = Vec::new();
                let mut it = args[1..].iter();
                while let Some(a) = it.next() {
                    match *a {
                        "-o" => {
                            it.next();
                        }
                        a if a.starts_with('-') => {}
                        a => specs.push(a),
                    }
                }
                for spec in specs {
                    let (p, v) = spec.split_once('=').unwrap_or((spec, "1.35.9-1.1"));
                    let v = if p == "containerd.io" { "1.7.28-1" } else { v };
                    self.write(&format!("var/lib/dpkg/{p}"), v.as_bytes());
                    if p == "containerd.io" {
                        self.write(
                            "etc/containerd/config.toml",
                            b"disabled_plugins = [\"cri\"]\n",
                        );
                        self.mark("active:containerd");
                        self.write(
                            "run/containerd-loaded.toml",
                            b"disabled_plugins = [\"cri\"]\n",
                        );
                    }
                    if p == "kubelet" {
                        self.write("etc/default/kubelet", b"KUBELET_EXTRA_ARGS=\n");
                    }
                }
            }
            ("apt-mark", ["showhold"]) => {
                let held: String = ["kubeadm", "kubectl", "kubelet"]
                    .iter()
                    .filter(|p| self.marked(&format!("held:{p}")))
                    .map(|p| format!("{p}\n"))
                    .collect();
                return Some(Self::ok(&held));
            }
            ("apt-mark", ["hold", pkgs @ ..]) => {
                for p in pkgs {
                    self.mark(&format!("held:{p}"));
                }
            }
            ("containerd", ["config", "default"]) => return Some(Self::ok(CONTAINERD_V2_DEFAULT)),
            ("ctr", ["plugins", "ls"]) => {
                let loaded = String::from_utf8(self.read("run/containerd-loaded.toml")).unwrap();
                let status = if loaded.contains("\"cri\"") {
                    "error"
                } else {
                    "ok"
                };
                return Some(Self::ok(&format!(
                    "TYPE                  ID    PLATFORMS      STATUS\nio.containerd.grpc.v1 cri   linux/amd64    {status}\n"
                )));
            }
            _ => {}
        }
        None
    }
}
