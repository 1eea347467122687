//! `testbed`: the test world from the command line. A thin dispatcher over the `testbed` library.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

/// The simulated test world: hosts with shim tools, agents, and simulated clusters.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Builds a simulated host per cluster.yaml host, starts the real agents on them with the
    /// shim tools, prints READY once every agent serves, and stops everything on SIGTERM/SIGINT.
    Up(UpArgs),
    /// Serves a standalone simulated cluster (one tainted control-plane node and N Ready
    /// workers) over HTTPS, writes an admin kubeconfig, prints READY, runs until SIGTERM/SIGINT.
    Cluster(simkube::standalone::ClusterArgs),
    /// The playground: the seed's whole story (pki init, bootstrap, deploy letschat, scale to
    /// 3) with the real binaries on three simulated hosts; keeps the cluster up until Ctrl-C.
    Demo(testbed::demo::DemoArgs),
}

/// Arguments of `testbed up`.
#[derive(Debug, clap::Args)]
struct UpArgs {
    /// The cluster.yaml describing the hosts (the same file ctl and the agents use).
    #[arg(long)]
    config: PathBuf,
    /// State directory: host roots, shim dirs and logs go to DIR/<host>/.
    #[arg(long)]
    state: PathBuf,
    /// Give each host its own network namespace on a bridge (root only; needs non-loopback IPs).
    #[arg(long)]
    netns: bool,
    /// Host template under tests/testbed/templates (default ubuntu-24.04).
    #[arg(long, default_value = testbed::roots::DEFAULT_TEMPLATE)]
    template: String,
}

fn main() -> std::process::ExitCode {
    match dispatch(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Up(args) => up(args),
        Command::Cluster(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?
            .block_on(simkube::standalone::run(args)),
        Command::Demo(args) => testbed::demo::run(args),
    }
}

fn up(args: UpArgs) -> Result<()> {
    let opts = testbed::UpOptions {
        netns: args.netns,
        template: args.template,
        ..Default::default()
    };
    let tb = testbed::Testbed::up(&args.config, &args.state, opts)
        .with_context(|| format!("testbed up --config {}", args.config.display()))?;
    for h in tb.hosts() {
        eprintln!(
            "{} {} root {}",
            h.spec.name,
            tb.config().agent_endpoint(&h.spec),
            h.root().display()
        );
    }
    println!("READY");
    testbed::demo::wait_for_signal()?;
    eprintln!("stopping");
    drop(tb);
    Ok(())
}
