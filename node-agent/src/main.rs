//! `node-agent --config cluster.yaml --host node-1 [--root /]`: serves Host and Worker over
//! mutual TLS on the host's cluster.yaml IP and the agent port until SIGTERM or SIGINT.

use std::process::ExitCode;

use clap::Parser;
use cluster_common::config::HostRole;
use node_agent::AgentOptions;
use node_agent::server::run_agent;

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
    run_agent(
        cli.agent,
        HostRole::Node,
        |ctx, tls, listener, shutdown| async move {
            node_agent::serve(ctx, &tls, listener, shutdown).await
        },
    )
    .await
}
