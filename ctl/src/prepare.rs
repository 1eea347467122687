//! `ctl prepare`: runs `Host.Prepare` on every host (or one) in parallel and shows the streamed
//! step events live through [`Progress`]. A host fails when one of its steps fails, its agent
//! cannot be reached, or its stream breaks off.

use std::time::Duration;

use agent_proto::{HostClient, StepEvent, StepState, v1};
use cluster_common::config::HostSpec;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use crate::agents::Agents;
use crate::facts::describe;
use crate::progress::Progress;

/// The step name used for failures outside any step (connection, broken stream).
pub const AGENT_STEP: &str = "agent";

/// Starts `Host.Prepare` on `host` and returns its validated event stream.
pub async fn stream(
    agents: &Agents,
    host: &HostSpec,
    plan: bool,
) -> anyhow::Result<BoxStream<'static, anyhow::Result<StepEvent>>> {
    let mut client = HostClient::new(agents.channel(host)?);
    let events = client
        .prepare(v1::PrepareRequest { plan })
        .await?
        .into_inner();
    Ok(events
        .map(|item| -> anyhow::Result<StepEvent> { Ok(StepEvent::try_from(item?)?) })
        .boxed())
}

/// How one host's prepare ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOutcome {
    /// Host name.
    pub host: String,
    /// Steps that changed (or would change, in a plan).
    pub changed: usize,
    /// Steps that were already as wanted.
    pub unchanged: usize,
    /// Whether the host failed.
    pub failed: bool,
}

fn failure(host: &HostSpec, step: &str, message: String) -> StepEvent {
    StepEvent {
        host: host.name.to_string(),
        step: step.to_string(),
        state: StepState::Failed,
        message,
        duration: Duration::ZERO,
        command: None,
        planned: false,
    }
}

async fn one_host(agents: Agents, host: HostSpec, plan: bool, tx: mpsc::Sender<StepEvent>) {
    let mut events = match stream(&agents, &host, plan).await {
        Ok(s) => s,
        Err(e) => {
            let msg = format!(
                "agent at {} unreachable or refused: {}",
                host.ip,
                describe(&e)
            );
            let _ = tx.send(failure(&host, AGENT_STEP, msg)).await;
            return;
        }
    };
    let mut last_step = AGENT_STEP.to_string();
    let mut finished_step = true;
    while let Some(item) = events.next().await {
        match item {
            Ok(e) => {
                last_step = e.step.clone();
                finished_step = e.state != StepState::Running;
                let stop = e.state == StepState::Failed;
                let _ = tx.send(e).await;
                if stop {
                    return;
                }
            }
            Err(e) => {
                let msg = format!("the agent's event stream broke off: {}", describe(&e));
                let _ = tx.send(failure(&host, &last_step, msg)).await;
                return;
            }
        }
    }
    if !finished_step {
        let msg = "the agent ended the stream in the middle of the step".to_string();
        let _ = tx.send(failure(&host, &last_step, msg)).await;
    }
}

/// Prepares `hosts` in parallel, showing events through `progress`; returns one outcome per
/// host, in the order given.
pub async fn run(
    agents: &Agents,
    hosts: &[HostSpec],
    plan: bool,
    progress: &mut Progress,
) -> Vec<HostOutcome> {
    let (tx, mut rx) = mpsc::channel(256);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    for h in hosts {
        let (agents, h, tx, done_tx) = (agents.clone(), h.clone(), tx.clone(), done_tx.clone());
        tokio::spawn(async move {
            let name = h.name.to_string();
            one_host(agents, h, plan, tx).await;
            let _ = done_tx.send(name);
        });
    }
    drop(tx);
    drop(done_tx);
    let verb = if plan { "would change" } else { "changed" };
    let mut outcomes: Vec<HostOutcome> = hosts
        .iter()
        .map(|h| HostOutcome {
            host: h.name.to_string(),
            changed: 0,
            unchanged: 0,
            failed: false,
        })
        .collect();
    loop {
        let e = tokio::select! {
            biased;
            Some(e) = rx.recv() => e,
            Some(host) = done_rx.recv() => {
                // Events of this host sent before it finished are already queued: drain them.
                while let Ok(e) = rx.try_recv() {
                    record(&mut outcomes, progress, &e);
                }
                if let Some(o) = outcomes.iter().find(|o| o.host == host) {
                    let summary = if o.failed {
                        "failed".to_string()
                    } else {
                        format!("done: {} {verb}, {} unchanged", o.changed, o.unchanged)
                    };
                    progress.host_done(&host, &summary);
                }
                continue;
            }
            else => break,
        };
        record(&mut outcomes, progress, &e);
    }
    outcomes
}

fn record(outcomes: &mut [HostOutcome], progress: &mut Progress, e: &StepEvent) {
    progress.event(e);
    {
        if let Some(o) = outcomes.iter_mut().find(|o| o.host == e.host) {
            match e.state {
                StepState::Changed => o.changed += 1,
                StepState::Unchanged => o.unchanged += 1,
                StepState::Failed => o.failed = true,
                StepState::Running => {}
            }
        }
    }
}

/// `ctl prepare` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct PrepareArgs {
    /// Prepare only this host (a name from cluster.yaml); default: every host.
    #[arg(long)]
    pub host: Option<String>,
    /// Report what would change and change nothing.
    #[arg(long)]
    pub plan: bool,
    /// Output: live per-host lines then a table (table), or one event per line (json, yaml).
    #[arg(long, short = 'o', value_enum, default_value_t = crate::output::Format::Table)]
    pub output: crate::output::Format,
}

impl PrepareArgs {
    /// Runs the command; the exit code is non-zero when any host failed.
    pub async fn run(
        &self,
        config: &cluster_common::config::ClusterConfig,
    ) -> anyhow::Result<std::process::ExitCode> {
        let hosts: Vec<HostSpec> = match &self.host {
            Some(name) => {
                let Some(h) = config.host(name) else {
                    let known: Vec<String> = config.hosts().map(|h| h.name.to_string()).collect();
                    anyhow::bail!(
                        "--host {name:?} is not a host of {}: it has {}",
                        config.path.display(),
                        known.join(", ")
                    );
                };
                vec![h.clone()]
            }
            None => config.hosts().cloned().collect(),
        };
        let agents = Agents::new(config)?;
        let names: Vec<String> = hosts.iter().map(|h| h.name.to_string()).collect();
        let mut progress = Progress::new(&names, self.output);
        let outcomes = run(&agents, &hosts, self.plan, &mut progress).await;
        progress.finish();
        let failed: Vec<&str> = outcomes
            .iter()
            .filter(|o| o.failed)
            .map(|o| o.host.as_str())
            .collect();
        if failed.is_empty() {
            let changed: usize = outcomes.iter().map(|o| o.changed).sum();
            let what = if self.plan { "would change" } else { "changed" };
            eprintln!(
                "{} host(s) prepared: {changed} step(s) {what}",
                outcomes.len()
            );
            Ok(std::process::ExitCode::SUCCESS)
        } else {
            eprintln!("prepare failed on {}", failed.join(", "));
            Ok(std::process::ExitCode::FAILURE)
        }
    }
}
