//! `node-agent --config cluster.yaml --host node-1 [--root /]`: serves Host and Worker over
//! mutual TLS on the host's cluster.yaml IP and the agent port until SIGTERM or SIGINT.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use cluster_common::config::HostRole;
use cluster_common::telemetry;
use node_agent::{AgentContext, AgentOptions};

/// The agent on every worker VM.
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
    let ctx = AgentContext::load(&cli.agent, HostRole::Node)?;
    let tls = ctx.tls()?;
    let listener = ctx.bind().await?;
    let shutdown = telemetry::shutdown_on_signals()?;
    tracing::info!(host = %ctx.host.name, addr = %ctx.listen_addr(), root = %ctx.root.display(), "node-agent serving");
    node_agent::serve(ctx, &tls, listener, shutdown).await?;
    tracing::info!("node-agent stopped");
    Ok(())
}
