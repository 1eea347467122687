//! The master agent: the node agent's Host service plus the `ControlPlane` service
//! (`kubeadm init`, join tickets, admin kubeconfig) on the control-plane VM.
//!
//! Join tickets replace the seed's join-command file: a node asks over mutual TLS with its own
//! certificate and gets a typed ticket for itself only.

pub mod cni;
pub mod control_plane;
pub mod error;
pub mod init;
pub mod kube_client;
pub mod kubeadm_config;
pub mod tokens;

pub use error::{Error, Result};

use cluster_common::tls::TlsMaterial;
use node_agent::AgentContext;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves the master agent (Host + ControlPlane) on `listener` until `shutdown` is cancelled.
/// `main` is a thin wrapper around this; tests run it in-process.
pub async fn serve(
    ctx: AgentContext,
    tls: &TlsMaterial,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let host =
        agent_proto::HostServer::new(node_agent::host_service::HostService::new(ctx.clone()));
    let cp = agent_proto::ControlPlaneServer::new(control_plane::ControlPlaneService::new(ctx));
    node_agent::server::serve(
        tls,
        |mut s| s.add_service(host).add_service(cp),
        listener,
        shutdown,
    )
    .await
}
