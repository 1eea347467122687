//! Shared helpers of the simkube test suites: a cluster with nodes, served over HTTPS, and the
//! real `kubectl` with a private HOME.
#![allow(dead_code)]

use simkube::{NodeSpec, ServeHandle, SimCluster, SimOptions};
use std::path::PathBuf;
use std::time::Duration;

/// A cluster with a control-plane node `k8s-master` and `workers` nodes `node-1..`.
pub fn cluster(scale: f64, workers: usize, cni: bool) -> SimCluster {
    simkube_crypto();
    let c = SimCluster::new(SimOptions::fast(scale)).expect("cluster");
    let mut nodes = vec![NodeSpec {
        name: "k8s-master".into(),
        ip: "192.0.2.10".into(),
        control_plane: true,
    }];
    for i in 1..=workers {
        nodes.push(NodeSpec {
            name: format!("node-{i}"),
            ip: format!("192.0.2.{}", 10 + i),
            control_plane: false,
        });
    }
    for n in &nodes {
        c.register_node(n).expect("register node");
        c.set_cni_installed(&n.name, cni);
        c.start_kubelet(&n.name);
    }
    c
}

/// Installs ring as the process crypto provider.
pub fn simkube_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Polls `f` every 20 ms until it returns Some, or panics after `secs` with `what`.
pub async fn eventually<T>(secs: u64, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > end {
            panic!("timed out after {secs}s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The real kubectl against a served cluster, with a private HOME.
pub struct Kubectl {
    pub home: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub handle: ServeHandle,
}

/// Whether kubectl is installed.
pub fn kubectl_available() -> bool {
    std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Kubectl {
    /// Serves `c` on a free loopback port and writes an admin kubeconfig.
    pub async fn new(c: &SimCluster) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let handle = c.serve_https(listener, None, &[]).expect("serve");
        let home = tempfile::tempdir().expect("tempdir");
        let kubeconfig = home.path().join("kubeconfig");
        c.write_kubeconfig(
            &kubeconfig,
            &handle.url(),
            "kubernetes-admin",
            &["kubeadm:cluster-admins"],
        )
        .expect("kubeconfig");
        Kubectl {
            home,
            kubeconfig,
            handle,
        }
    }

    /// Runs kubectl with `args`; returns (success, stdout, stderr).
    pub async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = tokio::process::Command::new("kubectl")
            .env("HOME", self.home.path())
            .env_remove("KUBECONFIG")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs kubectl and asserts success; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args).await;
        assert!(ok, "kubectl {args:?} failed: {err}\n{out}");
        out
    }

    /// Writes a file in the private HOME and returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.home.path().join(name);
        std::fs::write(&p, text).expect("write file");
        p.display().to_string()
    }
}
