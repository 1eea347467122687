//! `ctl reset [--host NAME]`: takes hosts out of the cluster and undoes kubeadm on them, keeping
//! them prepared, so `ctl bootstrap` forms the cluster again.
//!
//! For a node: cordon, delete its pods (DaemonSet pods and static pods excepted, like
//! `kubectl drain --ignore-daemonsets`), delete the Node object, then `Host.Reset` on its agent
//! (`kubeadm reset -f` and what it leaves behind). Without `--host`, every node first and the
//! master last; resetting the master ends the cluster, so the admin kubeconfig next to
//! cluster.yaml is removed with it.

use agent_proto::{HostClient, StepState, v1};
use anyhow::bail;
use cluster_common::config::{ClusterConfig, HostRole, HostSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};

use crate::agents::Agents;
use crate::bootstrap::{Outcome, Reporter, drain, event};
use crate::kubeconfig;
use crate::output::Format;

/// ctl's step: cordon and delete pods.
pub const DRAIN_STEP: &str = "drain";
/// ctl's step: delete the Node object.
pub const DELETE_NODE_STEP: &str = "delete-node";

/// Cordons `node` and deletes its pods except DaemonSet and static pods. Returns how many pods.
pub async fn drain_node(client: &Client, node: &str) -> Result<usize, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = serde_json::json!({"spec": {"unschedulable": true}});
    nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    let mut deleted = 0;
    for p in list {
        let owned_by_ds = p
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "DaemonSet");
        let mirror = p
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
        if owned_by_ds
            || mirror
            || p.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node)
        {
            continue;
        }
        let (Some(ns), Some(name)) = (p.metadata.namespace.as_deref(), p.metadata.name.as_deref())
        else {
            continue;
        };
        match Api::<Pod>::namespaced(client.clone(), ns)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

async fn remove_node(client: &Client, host: &str, report: &Reporter, out: &mut Outcome) {
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.get_opt(host).await {
        Ok(None) => {
            report(&event(
                host,
                DELETE_NODE_STEP,
                StepState::Unchanged,
                "not a node of the cluster",
            ));
            return;
        }
        Ok(Some(_)) => {}
        Err(e) => {
            let msg = format!("cannot read node: {e}");
            report(&event(host, DELETE_NODE_STEP, StepState::Failed, &msg));
            out.failed.push(format!("{host}: {msg}"));
            return;
        }
    }
    match drain_node(client, host).await {
        Ok(n) => {
            report(&event(
                host,
                DRAIN_STEP,
                StepState::Changed,
                format!("cordoned, {n} pods deleted"),
            ));
            out.changed.push(format!("{host}/{DRAIN_STEP}"));
        }
        Err(e) => {
            let msg = format!("drain failed: {e}");
            report(&event(host, DRAIN_STEP, StepState::Failed, &msg));
            out.failed.push(format!("{host}: {msg}"));
            return;
        }
    }
    match nodes.delete(host, &DeleteParams::default()).await {
        Ok(_) => {
            report(&event(
                host,
                DELETE_NODE_STEP,
                StepState::Changed,
                "node deleted",
            ));
            out.changed.push(format!("{host}/{DELETE_NODE_STEP}"));
        }
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => {
            let msg = format!("cannot delete node: {e}");
            report(&event(host, DELETE_NODE_STEP, StepState::Failed, &msg));
            out.failed.push(format!("{host}: {msg}"));
        }
    }
}

async fn host_reset(
    agents: &Agents,
    host: &HostSpec,
    report: &Reporter,
    out: &mut Outcome,
) -> bool {
    let name = host.name.as_str();
    let resp = match agents.channel(host) {
        Ok(ch) => HostClient::new(ch).reset(v1::ResetRequest {}).await,
        Err(e) => Err(tonic::Status::unavailable(format!("{e:#}"))),
    };
    match drain(name, "reset", resp, report, |_| {}).await {
        Ok(c) => {
            out.changed.extend(c);
            true
        }
        Err(f) => {
            out.failed.push(f);
            false
        }
    }
}

/// Resets `only` (a host name) or every host, nodes first, master last.
pub async fn reset(
    config: &ClusterConfig,
    agents: &Agents,
    only: Option<&str>,
    report: Reporter,
) -> anyhow::Result<Outcome> {
    let targets: Vec<&HostSpec> = match only {
        Some(name) => match config.host(name) {
            Some(h) => vec![h],
            None => bail!(
                "--host {name:?} is not a host of {}: it has {}",
                config.path.display(),
                config
                    .hosts()
                    .map(|h| h.name.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        None => config
            .nodes
            .iter()
            .chain(std::iter::once(&config.master))
            .collect(),
    };
    // The cluster, if the master still serves it.
    let client = match kubeconfig::fetch(config, agents).await {
        Ok(bytes) => kubeconfig::client_from_bytes(&bytes).await.ok(),
        Err(_) => None,
    };
    if let (Some(name), Some(client)) = (only, &client)
        && config
            .host(name)
            .is_some_and(|h| h.role == HostRole::Master)
    {
        let nodes: Api<Node> = Api::all(client.clone());
        let others: Vec<String> = nodes
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .filter(|n| n != name)
            .collect();
        if !others.is_empty() {
            bail!(
                "resetting {name} ends the cluster while {} still belong to it: reset them first, or run `ctl reset` without --host",
                others.join(", ")
            );
        }
    }
    let mut out = Outcome::default();
    for host in targets {
        if host.role == HostRole::Node
            && let Some(client) = &client
        {
            remove_node(client, host.name.as_str(), &report, &mut out).await;
        }
        let ok = host_reset(agents, host, &report, &mut out).await;
        if ok && host.role == HostRole::Master {
            let path = config.admin_kubeconfig_path();
            if path.exists() {
                std::fs::remove_file(&path)?;
                report(&event(
                    host.name.as_str(),
                    "admin-kubeconfig",
                    StepState::Changed,
                    format!("removed {}", path.display()),
                ));
            }
        }
    }
    Ok(out)
}

/// `ctl reset`.
#[derive(Debug, Clone, clap::Args)]
pub struct ResetArgs {
    /// Reset only this host (a node; the master only once no other node belongs to the cluster).
    /// Default: every node, then the master.
    #[arg(long)]
    pub host: Option<String>,
    /// Output: live lines per host on a terminal (plain lines otherwise), or one JSON/YAML
    /// event per step.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

impl ResetArgs {
    /// Runs `ctl reset`; exit code 1 when a host could not be reset.
    pub async fn run(&self, config: &ClusterConfig) -> anyhow::Result<std::process::ExitCode> {
        let agents = crate::bootstrap::preflight(config)?;
        let (progress, report) = crate::bootstrap::progress_reporter(config, self.output);
        let outcome = reset(config, &agents, self.host.as_deref(), report).await;
        crate::bootstrap::finish_progress(progress);
        let outcome = outcome?;
        if !outcome.ok() {
            for f in &outcome.failed {
                eprintln!("failed: {f}");
            }
            return Ok(std::process::ExitCode::FAILURE);
        }
        eprintln!("reset done; hosts stay prepared: `ctl bootstrap` forms the cluster again");
        Ok(std::process::ExitCode::SUCCESS)
    }
}
