//! `master-agent --config cluster.yaml --host k8s-master [--root /]`: serves Host and
//! ControlPlane over mutual TLS on the master's cluster.yaml IP and the agent port until SIGTERM
//! or SIGINT.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use cluster_common::config::HostRole;
use cluster_common::telemetry;
use node_agent::{AgentContext, AgentOptions};

/// The agent on the control-plane VM.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    agent: AgentOptions,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.agent.log_format, "info");
    telemetry::install_crypto_provider();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let ctx = AgentContext::load(&cli.agent, HostRole::Master)?;
    let tls = ctx.tls()?;
    let listener = ctx.bind().await?;
    let shutdown = telemetry::shutdown_on_signals()?;
    tracing::info!(host = %ctx.host.name, addr = %ctx.listen_addr(), root = %ctx.root.display(), "master-agent serving");
    master_agent::serve(ctx, &tls, listener, shutdown).await?;
    tracing::info!("master-agent stopped");
    Ok(())
}
