//! The node agent: a gRPC daemon baked into every VM image.
//!
//! It serves the `Host` service (facts, prepare, reset) on every host and the `Worker` service
//! (join) on nodes, over mutual TLS, authorising each call by the role in the caller's
//! certificate. The master agent reuses this crate's plumbing ([`server`]) and Host service.
//!
//! On the host it reads files under `--root` (default `/`): `etc/os-release`, `proc/swaps`,
//! `proc/meminfo`, `proc/cpuinfo`; what has no file there comes from `sysinfo`.

pub mod error;
pub mod events;
pub mod exec;
pub mod facts;
pub mod host_service;
pub mod join;
pub mod kubeadm;
pub mod prepare;
pub mod reset;
pub mod server;
pub mod worker;

pub use error::{Error, Result};
pub use server::{AgentContext, AgentOptions};

use cluster_common::tls::TlsMaterial;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves the node agent (Host + Worker) on `listener` until `shutdown` is cancelled. `main`
/// is a thin wrapper around this; tests run it in-process.
pub async fn serve(
    ctx: AgentContext,
    tls: &TlsMaterial,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let host = agent_proto::HostServer::new(host_service::HostService::new(ctx.clone()));
    let worker = agent_proto::WorkerServer::new(worker::WorkerService::new(ctx));
    server::serve(
        tls,
        |mut s| s.add_service(host).add_service(worker),
        listener,
        shutdown,
    )
    .await
}
