//! `bench`: benchmarks that print tables of measured figures (Markdown, pasted into
//! docs/BENCHMARKS.md). Run from a release build:
//!
//! ```sh
//! cargo run --release -p bench -- footprint [--idle-secs 60] [--runs 20]
//! cargo run --release -p bench -- tickets [--nodes 1000] [--concurrency 1000]
//! cargo run --release -p bench -- cluster [--sizes 2,10,50,100]
//! cargo run --release -p bench -- prepare [--runs 5]
//! ```
//!
//! Everything runs on loopback addresses in temporary directories, with the real agent
//! binaries (built by `testbed::bins`) and the simulated API server; nothing needs root.
//! Figures are measured, never asserted: these machines are shared and noisy, so timing belongs
//! here, not in tests.

mod cluster;
mod footprint;
mod prepare;
mod tickets;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Benchmarks of the agents and ctl, printed as Markdown tables.
#[derive(Debug, Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Agent footprint: stripped binary sizes, time from start to serving, idle RSS, idle CPU.
    Footprint {
        /// How long to watch an idle agent's CPU time, in seconds.
        #[arg(long, default_value_t = 60)]
        idle_secs: u64,
        /// How many start-to-serving measurements per agent.
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Join-ticket throughput: N node identities ask one master agent for tickets at once.
    Tickets {
        /// How many distinct node identities ask (each once).
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// How many ask at the same time (default: all of them).
        #[arg(long, default_value_t = 1000)]
        concurrency: usize,
    },
    /// Time to a cluster: `ctl bootstrap` of 1 master + N nodes in the test world with
    /// simulated step durations; wall time vs critical path vs serial sum.
    Cluster {
        /// Cluster sizes (number of nodes besides the master).
        #[arg(long, value_delimiter = ',', default_value = "2,10,50,100")]
        sizes: Vec<usize>,
    },
    /// Prepare overhead: per step of a second prepare, the time spent in the agent besides
    /// the external commands it runs.
    Prepare {
        /// How many second prepares (medians are printed).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Cmd::Cluster { .. })
        && std::env::var_os(testbed::shim::ENV_DELAYS).is_none()
    {
        // The shims read the simulated durations from the environment the harness hands down:
        // run again with it set (setting it in this process would need `unsafe`).
        let status = std::process::Command::new(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env(testbed::shim::ENV_DELAYS, cluster::DELAYS)
            .status()?;
        std::process::exit(status.code().unwrap_or(1));
    }
    cluster_common::telemetry::install_crypto_provider();
    match cli.command {
        Cmd::Footprint { idle_secs, runs } => footprint::run(idle_secs, runs),
        Cmd::Tickets { nodes, concurrency } => tickets::run(nodes, concurrency),
        Cmd::Cluster { sizes } => cluster::run(&sizes),
        Cmd::Prepare { runs } => prepare::run(runs),
    }
}
