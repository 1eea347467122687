//! `testbed cluster`: a standalone simulated cluster for tools and benchmarks — one tainted
//! control-plane node and N Ready workers (CNI marked installed), served over HTTPS with an
//! admin kubeconfig written to a file; prints `READY` once serving and runs until SIGTERM/SIGINT.

use crate::{NodeSpec, SimCluster, SimOptions};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `testbed cluster`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Number of worker nodes (besides the control-plane node `k8s-master`).
    #[arg(long, default_value_t = 2)]
    pub nodes: u32,
    /// Where to write the admin kubeconfig (mode 0600).
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Address to serve HTTPS on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Multiplies every simulated delay (image pull, start-up, back-off); 0 is instant.
    #[arg(long, default_value_t = 0.2)]
    pub delay_scale: f64,
    /// Kubernetes minor version the server reports (the kubectl dispatcher is always told 31:
    /// newer kubectls send protobuf, which the simulated server does not read).
    #[arg(long, default_value_t = 33)]
    pub minor: u32,
}

/// Runs the standalone cluster until a termination signal.
pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    cluster_common::telemetry::install_crypto_provider();
    let stop =
        cluster_common::telemetry::shutdown_on_signals().context("install signal handlers")?;
    let opts = SimOptions {
        delay_scale: args.delay_scale,
        version: (1, args.minor),
        ..SimOptions::default()
    };
    let cluster = SimCluster::new(opts).context("start the simulated cluster")?;
    let mut nodes = vec![NodeSpec {
        name: "k8s-master".into(),
        ip: "10.0.0.10".into(),
        control_plane: true,
    }];
    for i in 1..=args.nodes {
        nodes.push(NodeSpec {
            name: format!("node-{i}"),
            ip: format!("10.0.{}.{}", 1 + i / 250, 10 + i % 250),
            control_plane: false,
        });
    }
    for n in &nodes {
        cluster
            .register_node(n)
            .with_context(|| format!("register node {}", n.name))?;
        cluster.set_cni_installed(&n.name, true);
        cluster.start_kubelet(&n.name);
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let handle = cluster
        .serve_https(listener, None, &[])
        .context("serve HTTPS")?;
    cluster
        .publish_cluster_info(&handle.url())
        .context("publish cluster-info")?;
    cluster
        .write_kubeconfig(
            &args.kubeconfig,
            &handle.url(),
            "kubernetes-admin",
            &["kubeadm:cluster-admins"],
        )
        .with_context(|| format!("write the kubeconfig {}", args.kubeconfig.display()))?;
    // wait until every node is Ready
    for _ in 0..500 {
        let (ns, _) = cluster.api.store.list("nodes", None);
        if ns.len() == nodes.len() && ns.iter().all(|n| crate::controllers::node_ready(n)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    eprintln!("serving {} with {} nodes", handle.url(), nodes.len());
    println!("READY");
    stop.cancelled().await;
    handle.shutdown().await;
    Ok(())
}
