//! `testbed demo`: the playground. The seed's whole story on this machine, with the REAL `ctl`,
//! `master-agent` and `node-agent` binaries on three SIMULATED hosts (simulated Kubernetes,
//! kubeadm, apt and systemd from the test world): `ctl pki init`, `ctl bootstrap`,
//! `ctl deploy letschat`, `ctl scale letschat --replicas 3`, then the nodes and the pods with
//! their nodes, the kubeconfig path and the kubectl command to look around. Keeps the cluster
//! up until Ctrl-C, or stops at once with `--exit`. No root needed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::harness::{Testbed, UpOptions, find_bin};

/// The sample cluster: three hosts on loopback addresses.
pub const LOCAL_CLUSTER: &str = include_str!("../../clusters/local.yaml");

/// Arguments of `testbed demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Stop as soon as the story has run (for scripts); exit 0 only if every step passed.
    #[arg(long)]
    pub exit: bool,
    /// Where the cluster.yaml, PKI, admin kubeconfig and host roots go (default: a fresh
    /// directory under /tmp, kept while the demo runs and removed when it stops).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The cluster.yaml to use instead of the sample three-host cluster on 127.50.0.x.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

fn step(title: &str) {
    eprintln!();
    eprintln!("==> {title}");
}

/// Runs the real `ctl` with `args`, its output shown as it comes; fails if it fails.
fn ctl(ctl: &Path, config: &Path, args: &[&str]) -> Result<()> {
    let started = Instant::now();
    let status = Command::new(ctl)
        .arg("--config")
        .arg(config)
        .args(args)
        .status()
        .with_context(|| format!("running {}", ctl.display()))?;
    eprintln!(
        "    (ctl {} took {:.1} s)",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("`ctl {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs the playground.
pub fn run(args: DemoArgs) -> Result<()> {
    // Finding ctl builds the product binaries first when they are missing (a fresh clone): the
    // story's clock starts after that.
    let ctl_bin = find_bin("ctl")?;
    let started = Instant::now();
    eprintln!(
        "SIMULATED MODE: Kubernetes, kubeadm, apt and systemd are simulated by the test world"
    );
    eprintln!(
        "(tests/simkube, tests/testbed). ctl, master-agent and node-agent are the real binaries,"
    );
    eprintln!("talking mutual TLS to each other and the Kubernetes API to the simulated cluster.");

    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("kube-agents-demo.")
                .tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let config = dir.join("cluster.yaml");
    match &args.config {
        Some(c) => std::fs::copy(c, &config).with_context(|| format!("copying {}", c.display()))?,
        None => {
            std::fs::write(&config, LOCAL_CLUSTER)?;
            0
        }
    };

    step("ctl pki init: a cluster CA, one identity per host, the admin identity");
    ctl(&ctl_bin, &config, &["pki", "init"])?;

    step("starting the simulated hosts k8s-master, node-1, node-2 with their agents");
    let testbed = Testbed::up(&config, &dir.join("hosts"), UpOptions::default())
        .context("bringing the simulated hosts up")?;
    for h in testbed.hosts() {
        eprintln!(
            "    {:<12} agent on {}  root {}",
            h.spec.name.as_str(),
            testbed.config().agent_endpoint(&h.spec),
            h.root().display()
        );
    }

    step("ctl bootstrap: prepare every host, kubeadm init, join tickets over mTLS, kubeadm join");
    ctl(&ctl_bin, &config, &["bootstrap"])?;
    step("ctl deploy letschat: MongoDB first and waited for, then Let's Chat");
    ctl(&ctl_bin, &config, &["deploy", "letschat"])?;
    step("ctl scale letschat --replicas 3");
    ctl(&ctl_bin, &config, &["scale", "letschat", "--replicas", "3"])?;
    step("the nodes");
    ctl(&ctl_bin, &config, &["get", "nodes", "-o", "wide"])?;
    step("the pods and their nodes (the seed's `kubectl get pod -o wide`)");
    ctl(&ctl_bin, &config, &["get", "pods", "-o", "wide"])?;

    let kubeconfig = testbed.config().admin_kubeconfig_path();
    eprintln!();
    eprintln!(
        "Done in {:.1} s (after the build). The admin kubeconfig is {}",
        started.elapsed().as_secs_f64(),
        kubeconfig.display()
    );
    eprintln!("Look around with:");
    eprintln!(
        "    kubectl --kubeconfig {} get pods -o wide",
        kubeconfig.display()
    );
    eprintln!(
        "    {} --config {} status",
        ctl_bin.display(),
        config.display()
    );
    if args.exit {
        drop(testbed);
        return Ok(());
    }
    eprintln!();
    eprintln!("The cluster stays up until Ctrl-C.");
    wait_for_signal()?;
    eprintln!("stopping");
    drop(testbed);
    Ok(())
}

/// Blocks until SIGTERM or SIGINT.
pub fn wait_for_signal() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("signal runtime")?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            r = tokio::signal::ctrl_c() => r?,
        }
        Ok::<_, std::io::Error>(())
    })?;
    Ok(())
}
