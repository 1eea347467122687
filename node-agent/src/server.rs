//! Agent plumbing shared by both daemons: command-line options, the loaded context, and the
//! mutual-TLS gRPC server with signal-driven shutdown.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use cluster_common::config::{ClusterConfig, HostRole, HostSpec};
use cluster_common::pki::PkiLayout;
use cluster_common::telemetry::LogFormat;
use cluster_common::tls::TlsMaterial;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Options every agent takes.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentOptions {
    /// The cluster.yaml this agent belongs to (the same file ctl uses).
    #[arg(long, env = "AGENT_CONFIG")]
    pub config: PathBuf,
    /// This host's name in cluster.yaml.
    #[arg(long, env = "AGENT_HOST")]
    pub host: String,
    /// Host root: every host file is read and written below it (like node_exporter's
    /// --path.rootfs). Default `/`.
    #[arg(long, default_value = "/", env = "AGENT_ROOT")]
    pub root: PathBuf,
    /// PKI directory holding ca.crt and hosts/<host>.crt/.key. Default: pkiDir of cluster.yaml.
    #[arg(long, env = "AGENT_PKI_DIR")]
    pub pki_dir: Option<PathBuf>,
    /// Log format: plain or json (RUST_LOG filters).
    #[arg(long, default_value = "plain", env = "LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// What an agent knows about itself once started.
#[derive(Debug, Clone)]
pub struct AgentContext {
    /// The validated cluster.yaml.
    pub config: Arc<ClusterConfig>,
    /// This host.
    pub host: HostSpec,
    /// The host root.
    pub root: PathBuf,
    /// The PKI directory layout.
    pub pki: PkiLayout,
}

impl AgentContext {
    /// Loads cluster.yaml and checks that `opts.host` is a host of `role`.
    pub fn load(opts: &AgentOptions, role: HostRole) -> anyhow::Result<Self> {
        let config = ClusterConfig::load(&opts.config)?;
        let Some(host) = config.host(&opts.host).cloned() else {
            let known: Vec<String> = config.hosts().map(|h| h.name.to_string()).collect();
            bail!(
                "--host {:?} is not a host of {}: it has {}",
                opts.host,
                opts.config.display(),
                known.join(", ")
            );
        };
        if host.role != role {
            let binary = match host.role {
                HostRole::Master => "master-agent",
                HostRole::Node => "node-agent",
            };
            bail!(
                "--host {:?} is the {} in {}, so it runs {binary}, not the {role}'s agent",
                opts.host,
                host.role,
                opts.config.display()
            );
        }
        let pki = PkiLayout::new(
            opts.pki_dir
                .clone()
                .unwrap_or_else(|| config.pki_dir.clone()),
        );
        Ok(Self {
            config: Arc::new(config),
            host,
            root: opts.root.clone(),
            pki,
        })
    }

    /// This host's TLS identity; a clear error if any file is missing.
    pub fn tls(&self) -> anyhow::Result<TlsMaterial> {
        TlsMaterial::host(&self.pki, self.host.name.as_str())
            .with_context(|| format!("agent for {} cannot start", self.host.name))
    }

    /// The address this agent serves on: its cluster.yaml IP and the agent port.
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        self.config.agent_endpoint(&self.host)
    }

    /// Binds the agent's address with a clear error.
    pub async fn bind(&self) -> anyhow::Result<TcpListener> {
        let addr = self.listen_addr();
        TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr} (the IP of {} in {} and agentPort): is the IP on a local interface and the port free?",
                self.host.name,
                self.config.path.display()
            )
        })
    }
}

/// Serves `router` with mutual TLS on `listener` until `shutdown` is cancelled.
pub async fn serve(
    tls: &TlsMaterial,
    build: impl FnOnce(tonic::transport::Server) -> tonic::transport::server::Router,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let server = tonic::transport::Server::builder()
        .tls_config(tls.server_config())
        .context("TLS configuration refused")?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    build(server)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .context("gRPC server failed")
}

/// The whole life of an agent process, shared by both `main`s: logging, ring, context for
/// `role`, TLS identity, listener, signals, then `serve` until SIGTERM/SIGINT. Any startup
/// error is logged and becomes a non-zero exit.
pub async fn run_agent<F, Fut>(opts: AgentOptions, role: HostRole, serve: F) -> ExitCode
where
    F: FnOnce(AgentContext, TlsMaterial, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    cluster_common::telemetry::init(opts.log_format, "info");
    cluster_common::telemetry::install_crypto_provider();
    let binary = match role {
        HostRole::Master => "master-agent",
        HostRole::Node => "node-agent",
    };
    let result = async {
        let ctx = AgentContext::load(&opts, role)?;
        let tls = ctx.tls()?;
        let listener = ctx.bind().await?;
        let shutdown = cluster_common::telemetry::shutdown_on_signals()?;
        tracing::info!(host = %ctx.host.name, addr = %ctx.listen_addr(), root = %ctx.root.display(), "{binary} serving");
        serve(ctx, tls, listener, shutdown).await?;
        tracing::info!("{binary} stopped");
        anyhow::Ok(())
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
