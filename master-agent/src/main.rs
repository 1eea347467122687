//! `master-agent --config cluster.yaml --host k8s-master [--root /]`: serves Host and
//! ControlPlane over mutual TLS on the master's cluster.yaml IP and the agent port until SIGTERM
//! or SIGINT.

use std::process::ExitCode;

use clap::Parser;
use cluster_common::config::HostRole;
use node_agent::AgentOptions;
use node_agent::server::run_agent;

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
    run_agent(
        cli.agent,
        HostRole::Master,
        |ctx, tls, listener, shutdown| async move {
            master_agent::serve(ctx, &tls, listener, shutdown).await
        },
    )
    .await
}
