//! `ctl bootstrap`: forms the cluster through the agents, as fast as the dependencies allow.
//!
//! Every host is prepared in parallel (`Host.Prepare`); the master is initialised
//! (`ControlPlane.Init`: kubeadm init, Calico, master Ready) as soon as it is prepared; each node
//! joins (`Worker.Join`) as soon as it is prepared and the master's API server is up (a node
//! agent asks the master agent for its own join ticket). Then the admin kubeconfig is written
//! next to cluster.yaml (0600) and ctl waits until every node is Ready.
//!
//! Every step is idempotent on the agents, so a second bootstrap changes nothing (and mints no
//! join token), and an interrupted one converges when run again. Progress is a stream of
//! [`StepEvent`]s handed to a reporter (live display, plain lines or JSON).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_proto::{ControlPlaneClient, HostClient, StepEvent, StepState, WorkerClient, v1};
use anyhow::Context as _;
use cluster_common::config::{ClusterConfig, HostSpec};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::ListParams;
use tokio::sync::watch;

use crate::agents::Agents;
use crate::kubeconfig;
use crate::output::Format;
use crate::progress::Progress;

/// The Init step after which the API server answers (master_agent::init::steps::KUBEADM_INIT).
pub const KUBEADM_INIT_STEP: &str = "kubeadm-init";
/// ctl's own step: writing the admin kubeconfig.
pub const KUBECONFIG_STEP: &str = "admin-kubeconfig";
/// ctl's own step: waiting until a node is Ready.
pub const NODE_READY_STEP: &str = "node-ready";

/// Receives every event, from the agents and from ctl itself.
pub type Reporter = Arc<dyn Fn(&StepEvent) + Send + Sync>;

/// `ctl bootstrap` settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Give up (exit non-zero) when the cluster is not formed within this time.
    pub timeout: Duration,
    /// How often ctl polls node readiness.
    pub poll: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(20 * 60),
            poll: Duration::from_millis(500),
        }
    }
}

/// What a bootstrap did.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// `host/step` of every step that changed something.
    pub changed: Vec<String>,
    /// What failed, one line each.
    pub failed: Vec<String>,
    /// Nodes seen Ready at the end.
    pub ready: BTreeSet<String>,
    /// Where the admin kubeconfig was written, once it was.
    pub kubeconfig: Option<std::path::PathBuf>,
}

impl Outcome {
    /// True when nothing failed.
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }
}

/// An event made by ctl itself.
pub fn event(host: &str, step: &str, state: StepState, message: impl Into<String>) -> StepEvent {
    StepEvent {
        host: host.to_string(),
        step: step.to_string(),
        state,
        message: message.into(),
        duration: Duration::ZERO,
        command: None,
        planned: false,
    }
}

/// The master's API server state, as the node tasks wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Api0 {
    Pending,
    Up,
    Failed(String),
}

/// Consumes a streamed RPC: every event goes to `report` and `on_event`. Returns whether a step
/// changed, or what failed.
pub async fn drain(
    host: &str,
    what: &str,
    response: Result<tonic::Response<tonic::Streaming<v1::StepEvent>>, tonic::Status>,
    report: &Reporter,
    mut on_event: impl FnMut(&StepEvent),
) -> Result<Vec<String>, String> {
    let mut stream = match response {
        Ok(r) => r.into_inner(),
        Err(s) => {
            let msg = format!("{what} refused: {:?}: {}", s.code(), s.message());
            report(&event(host, what, StepState::Failed, &msg));
            return Err(format!("{host}: {msg}"));
        }
    };
    let mut changed = Vec::new();
    let mut failed = None;
    while let Some(item) = stream.next().await {
        let e = match item.map_err(|s| format!("{:?}: {}", s.code(), s.message())) {
            Ok(raw) => StepEvent::try_from(raw).map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match e {
            Ok(e) => {
                report(&e);
                on_event(&e);
                match e.state {
                    StepState::Changed => changed.push(format!("{host}/{}", e.step)),
                    StepState::Failed => {
                        failed = Some(format!("{host}: {}: {}", e.step, e.message))
                    }
                    StepState::Running | StepState::Unchanged => {}
                }
            }
            Err(msg) => {
                let msg = format!("{what} stream broke: {msg}");
                report(&event(host, what, StepState::Failed, &msg));
                return Err(format!("{host}: {msg}"));
            }
        }
    }
    match failed {
        Some(f) => Err(f),
        None => Ok(changed),
    }
}

async fn prepare(
    agents: &Agents,
    host: &HostSpec,
    report: &Reporter,
) -> Result<Vec<String>, String> {
    let name = host.name.as_str();
    let channel = agents.channel(host).map_err(|e| format!("{name}: {e:#}"))?;
    let resp = HostClient::new(channel)
        .prepare(v1::PrepareRequest { plan: false })
        .await;
    drain(name, "prepare", resp, report, |_| {}).await
}

/// Forms the cluster (see the module doc). Fails only for errors before anything starts; what
/// fails later is in [`Outcome::failed`].
pub async fn bootstrap(
    config: &ClusterConfig,
    agents: &Agents,
    opts: &Options,
    report: Reporter,
) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let deadline = start + opts.timeout;
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let record = |r: Result<Vec<String>, String>| {
        let mut o = outcome.lock().expect("poisoned");
        match r {
            Ok(c) => {
                o.changed.extend(c);
                true
            }
            Err(f) => {
                o.failed.push(f);
                false
            }
        }
    };
    let (api_tx, api_rx) = watch::channel(Api0::Pending);
    // Hosts whose init or join went through: the ones to wait for.
    let joined = Mutex::new(BTreeSet::from([config.master.name.to_string()]));

    let master = &config.master;
    let master_task = async {
        if !record(prepare(agents, master, &report).await) {
            api_tx.send_replace(Api0::Failed(format!("{} was not prepared", master.name)));
            return false;
        }
        let resp = match agents.channel(master) {
            Ok(ch) => ControlPlaneClient::new(ch).init(v1::InitRequest {}).await,
            Err(e) => Err(tonic::Status::unavailable(format!("{e:#}"))),
        };
        let r = drain(master.name.as_str(), "init", resp, &report, |e| {
            if e.step == KUBEADM_INIT_STEP
                && matches!(e.state, StepState::Changed | StepState::Unchanged)
            {
                api_tx.send_replace(Api0::Up);
            }
        })
        .await;
        let ok = record(r);
        if *api_tx.borrow() != Api0::Up {
            api_tx.send_replace(Api0::Failed(format!("{} was not initialised", master.name)));
        }
        ok
    };
    let node_tasks = config.nodes.iter().map(|node| {
        let mut api_rx = api_rx.clone();
        let report = report.clone();
        let record = &record;
        let joined = &joined;
        async move {
            if !record(prepare(agents, node, &report).await) {
                return;
            }
            let api = api_rx
                .wait_for(|s| *s != Api0::Pending)
                .await
                .map(|s| s.clone())
                .unwrap_or(Api0::Failed("bootstrap stopped".into()));
            if let Api0::Failed(why) = api {
                let msg = format!("not joined: {why}");
                report(&event(node.name.as_str(), "join", StepState::Failed, &msg));
                record(Err(format!("{}: {msg}", node.name)));
                return;
            }
            let resp = match agents.channel(node) {
                Ok(ch) => WorkerClient::new(ch).join(v1::JoinRequest {}).await,
                Err(e) => Err(tonic::Status::unavailable(format!("{e:#}"))),
            };
            if record(drain(node.name.as_str(), "join", resp, &report, |_| {}).await) {
                joined
                    .lock()
                    .expect("poisoned")
                    .insert(node.name.to_string());
            }
        }
    });
    let formed = tokio::time::timeout_at(
        deadline.into(),
        futures::future::join(master_task, futures::future::join_all(node_tasks)),
    )
    .await;
    let master_ok = match formed {
        Ok((ok, _)) => ok,
        Err(_) => {
            record(Err(format!(
                "timed out after {:?} forming the cluster (raise --timeout?)",
                opts.timeout
            )));
            false
        }
    };
    if !master_ok {
        return Ok(outcome.lock().expect("poisoned").clone());
    }

    // The admin kubeconfig, next to cluster.yaml.
    let path = config.admin_kubeconfig_path();
    let mname = master.name.as_str();
    let bytes = match kubeconfig::fetch(config, agents).await {
        Ok(b) => b,
        Err(e) => {
            let msg = format!("{e:#}");
            report(&event(mname, KUBECONFIG_STEP, StepState::Failed, &msg));
            record(Err(format!("{mname}: {msg}")));
            return Ok(outcome.lock().expect("poisoned").clone());
        }
    };
    match kubeconfig::write(&path, &bytes) {
        Ok(changed) => {
            let state = if changed {
                StepState::Changed
            } else {
                StepState::Unchanged
            };
            report(&event(
                mname,
                KUBECONFIG_STEP,
                state,
                format!("{}", path.display()),
            ));
            if changed {
                record(Ok(vec![format!("{mname}/{KUBECONFIG_STEP}")]));
            }
            outcome.lock().expect("poisoned").kubeconfig = Some(path.clone());
        }
        Err(e) => {
            let msg = format!("{e:#}");
            report(&event(mname, KUBECONFIG_STEP, StepState::Failed, &msg));
            record(Err(format!("{mname}: {msg}")));
            return Ok(outcome.lock().expect("poisoned").clone());
        }
    }

    // Every node Ready.
    let client = kubeconfig::client_from_bytes(&bytes).await?;
    let want = joined.into_inner().expect("poisoned");
    let ready = wait_ready(&want, &client, deadline, opts.poll, &report).await;
    let mut o = outcome.lock().expect("poisoned");
    for h in config.hosts() {
        // Hosts that did not join have their failure recorded already.
        if want.contains(h.name.as_str()) && !ready.contains(h.name.as_str()) {
            let msg = format!("not Ready after {:?}", start.elapsed());
            report(&event(
                h.name.as_str(),
                NODE_READY_STEP,
                StepState::Failed,
                &msg,
            ));
            o.failed.push(format!("{}: {msg}", h.name));
        }
    }
    o.ready = ready;
    Ok(o.clone())
}

/// Polls until every node named in `want` is Ready or `deadline`; reports each once Ready.
/// Returns the Ready ones.
pub async fn wait_ready(
    want: &BTreeSet<String>,
    client: &kube::Client,
    deadline: Instant,
    poll: Duration,
    report: &Reporter,
) -> BTreeSet<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut ready = BTreeSet::new();
    loop {
        if let Ok(list) = nodes.list(&ListParams::default()).await {
            for n in list {
                let name = n.metadata.name.clone().unwrap_or_default();
                if want.contains(&name) && node_ready(&n) && ready.insert(name.clone()) {
                    report(&event(
                        &name,
                        NODE_READY_STEP,
                        StepState::Unchanged,
                        "Ready",
                    ));
                }
            }
        }
        if ready.len() == want.len() || Instant::now() >= deadline {
            return ready;
        }
        tokio::time::sleep(poll).await;
    }
}

/// Whether a node has condition Ready=True.
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Checks before anything starts: the admin identity exists.
pub fn preflight(config: &ClusterConfig) -> anyhow::Result<Agents> {
    Agents::new(config).with_context(|| {
        format!(
            "ctl needs the admin identity of {}: run `ctl --config {} pki init` first",
            config.path.display(),
            config.path.display()
        )
    })
}

/// `ctl bootstrap`.
#[derive(Debug, Clone, clap::Args)]
pub struct BootstrapArgs {
    /// Give up (exit non-zero) when the cluster is not formed within this time, e.g. `20m`.
    #[arg(long, default_value = "20m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Output: live lines per host on a terminal (plain lines otherwise), or one JSON/YAML
    /// event per step.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Wraps a [`Progress`] as a [`Reporter`].
pub fn progress_reporter(
    config: &ClusterConfig,
    format: Format,
) -> (Arc<Mutex<Progress>>, Reporter) {
    let hosts: Vec<String> = config.hosts().map(|h| h.name.to_string()).collect();
    let progress = Arc::new(Mutex::new(Progress::new(&hosts, format)));
    let p = progress.clone();
    let report: Reporter = Arc::new(move |e: &StepEvent| p.lock().expect("poisoned").event(e));
    (progress, report)
}

/// Ends a progress display made by [`progress_reporter`] once its reporter is dropped.
pub fn finish_progress(progress: Arc<Mutex<Progress>>) {
    if let Ok(p) = Arc::try_unwrap(progress) {
        p.into_inner().expect("poisoned").finish();
    }
}

impl BootstrapArgs {
    /// Runs `ctl bootstrap`; exit code 0 only when every node is Ready.
    pub async fn run(&self, config: &ClusterConfig) -> anyhow::Result<std::process::ExitCode> {
        let agents = preflight(config)?;
        let (progress, report) = progress_reporter(config, self.output);
        let opts = Options {
            timeout: self.timeout,
            ..Options::default()
        };
        let outcome = bootstrap(config, &agents, &opts, report).await;
        finish_progress(progress);
        let outcome = outcome?;
        let total = config.hosts().count();
        if !outcome.ok() {
            for f in &outcome.failed {
                eprintln!("failed: {f}");
            }
            eprintln!(
                "bootstrap failed: {}/{total} nodes Ready; run `ctl bootstrap` again once fixed (it resumes where it stopped)",
                outcome.ready.len()
            );
            return Ok(std::process::ExitCode::FAILURE);
        }
        let changed = if outcome.changed.is_empty() {
            "nothing changed".to_string()
        } else {
            format!("{} steps changed", outcome.changed.len())
        };
        let kubeconfig = outcome
            .kubeconfig
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        eprintln!(
            "cluster ready: {}/{total} nodes Ready, {changed}; admin kubeconfig: {kubeconfig}",
            outcome.ready.len()
        );
        Ok(std::process::ExitCode::SUCCESS)
    }
}
