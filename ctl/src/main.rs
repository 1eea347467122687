//! `ctl`: the operator's CLI for clusters described by one cluster.yaml.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use cluster_common::config::ClusterConfig;
use cluster_common::telemetry::{self, LogFormat};
use ctl::output::Format;
use ctl::pki::Outcome;

/// Stand up a kubeadm cluster on a set of VMs through the agents baked into them.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The cluster description (hosts, IPs, CIDRs, versions).
    #[arg(
        long,
        short = 'c',
        global = true,
        default_value = "cluster.yaml",
        env = "CLUSTER_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The cluster's identities: CA, one certificate per host, the admin certificate.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Ask every agent for its host facts (OS, kernel, CPUs, memory, swap) in parallel.
    /// Exits non-zero when an agent is unreachable.
    Facts {
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Deploy Let's Chat (`deploy letschat`: MongoDB, wait Ready, then Let's Chat, wait
    /// available, print its URLs) or manifests (`deploy -f PATH...`) with server-side apply.
    Deploy(ctl::deploy::DeployArgs),
    /// Scale a Deployment through its scale subresource and wait until the rollout is complete;
    /// prints its pods with node, IP, age and restarts.
    Scale(ctl::scale::ScaleArgs),
    /// List pods, deployments, services or nodes without kubectl.
    Get(ctl::get::GetArgs),
    /// Form the cluster: prepare every host in parallel, kubeadm init on the master as soon as
    /// it is prepared, join each node as soon as it is prepared and the master is up, wait until
    /// every node is Ready, write the admin kubeconfig next to cluster.yaml. Idempotent.
    Bootstrap(ctl::bootstrap::BootstrapArgs),
    /// Named health checks (agents, preparation, control plane, nodes Ready with the right IP,
    /// CNI); exits non-zero when one fails.
    Status(ctl::status::StatusArgs),
    /// Print the cluster's admin kubeconfig, or write it with -o FILE (0600).
    Kubeconfig(ctl::kubeconfig::KubeconfigArgs),
    /// Take hosts out of the cluster (drain, delete the node, kubeadm reset) keeping them
    /// prepared: every node then the master, or one host with --host.
    Reset(ctl::reset::ResetArgs),
    /// Prepare every host for Kubernetes in parallel (swap off, kernel settings, containerd,
    /// kubelet/kubeadm/kubectl, kubelet node IP), with live progress. Idempotent; exits non-zero
    /// when a host fails.
    Prepare(ctl::prepare::PrepareArgs),
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create the CA and every identity that is missing, under pkiDir (default `pki/` next to
    /// cluster.yaml). Existing files are kept unless --force.
    Init {
        /// Replace the whole PKI, CA included. Every agent then needs its new identity.
        #[arg(long)]
        force: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(LogFormat::Plain, "warn");
    telemetry::install_crypto_provider();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let config = ClusterConfig::load(&cli.config)?;
    match cli.command {
        Command::Pki {
            command: PkiCommand::Init { force },
        } => {
            for outcome in ctl::pki::init(&config, force)? {
                match outcome {
                    Outcome::Created(p) => eprintln!("created {}", p.display()),
                    Outcome::Kept(p) => eprintln!("kept    {}", p.display()),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Facts { output } => {
            let agents = ctl::agents::Agents::new(&config)?;
            let rows = ctl::facts::gather(&config, &agents).await;
            print!("{}", ctl::facts::render(&rows, output)?);
            for r in rows.iter().filter(|r| !r.reachable) {
                let why = r.error.as_deref().unwrap_or("no answer");
                eprintln!(
                    "{}: agent at {}:{} unreachable: {why}",
                    r.name, r.ip, config.agent_port
                );
            }
            let down = rows.iter().filter(|r| !r.reachable).count();
            if down > 0 {
                eprintln!("{down} of {} agents unreachable", rows.len());
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Deploy(args) => args.run(&config).await,
        Command::Scale(args) => args.run(&config).await,
        Command::Get(args) => args.run(&config).await,
        Command::Bootstrap(args) => args.run(&config).await,
        Command::Status(args) => args.run(&config).await,
        Command::Kubeconfig(args) => args.run(&config).await,
        Command::Reset(args) => args.run(&config).await,
        Command::Prepare(args) => args.run(&config).await,
    }
}
