//! `ControlPlane.Init`: `kubeadm init --config FILE` from cluster.yaml (guarded: an initialised
//! master answers "already done" without running kubeadm), then the CNI, then a wait until the
//! master node is Ready. Each step reports on the event stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_proto::StepState;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use node_agent::AgentContext;
use node_agent::events::EventSink;
use node_agent::exec::{Cmd, CommandRunner};
use node_agent::kubeadm::{self, PrivateConfig};

use crate::{Error, cni, kube_client, kubeadm_config, tokens};

/// Step names reported by Init.
pub mod steps {
    /// `kubeadm init`.
    pub const KUBEADM_INIT: &str = "kubeadm-init";
    /// Calico.
    pub const CNI: &str = "cni";
    /// Waiting for the master node to be Ready.
    pub const READY: &str = "control-plane-ready";
}

/// How long Init waits.
#[derive(Debug, Clone, Copy)]
pub struct InitTiming {
    /// For the API server to answer after kubeadm init (or on an initialised master).
    pub api_wait: Duration,
    /// For the master node to be Ready once the CNI is applied.
    pub ready_wait: Duration,
    /// Polling interval.
    pub poll: Duration,
}

impl Default for InitTiming {
    fn default() -> Self {
        Self {
            api_wait: Duration::from_secs(180),
            ready_wait: Duration::from_secs(600),
            poll: Duration::from_millis(500),
        }
    }
}

/// Runs Init on the master.
#[derive(Debug, Clone)]
pub struct Initialiser {
    ctx: AgentContext,
    runner: Arc<dyn CommandRunner>,
    timing: InitTiming,
}

impl Initialiser {
    /// An initialiser for the master's context.
    pub fn new(ctx: AgentContext, runner: Arc<dyn CommandRunner>, timing: InitTiming) -> Self {
        Self {
            ctx,
            runner,
            timing,
        }
    }

    /// Runs every step, reporting on `sink`; the first failure is reported and returned.
    pub async fn run(&self, sink: &EventSink) -> Result<(), Error> {
        let t = sink.start(steps::KUBEADM_INIT, "kubeadm init").await;
        let client = match self.kubeadm_init().await {
            Ok((client, changed)) => {
                let (state, msg) = if changed {
                    (StepState::Changed, "control plane initialised".to_string())
                } else {
                    (
                        StepState::Unchanged,
                        format!("already initialised ({} exists)", kubeadm::ADMIN_CONF),
                    )
                };
                sink.send(steps::KUBEADM_INIT, state, msg, t.elapsed(), None)
                    .await;
                client
            }
            Err(e) => return Err(fail(sink, steps::KUBEADM_INIT, t, e).await),
        };

        let t = sink
            .start(steps::CNI, "Calico operator and Installation")
            .await;
        match cni::ensure(&client, &self.ctx.config, self.runner.as_ref()).await {
            Ok(changed) => {
                let (state, msg) = if changed {
                    (StepState::Changed, "Calico applied")
                } else {
                    (StepState::Unchanged, "Calico already installed")
                };
                sink.send(
                    steps::CNI,
                    state,
                    format!("{msg} (pod CIDR {})", self.ctx.config.pod_cidr),
                    t.elapsed(),
                    None,
                )
                .await;
            }
            Err(e) => return Err(fail(sink, steps::CNI, t, e).await),
        }

        let t = sink
            .start(steps::READY, "waiting for the master node to be Ready")
            .await;
        let name = self.ctx.host.name.as_str();
        match kube_client::wait_node_ready(&client, name, self.timing.ready_wait, self.timing.poll)
            .await
        {
            Ok(_) => {
                sink.send(
                    steps::READY,
                    StepState::Unchanged,
                    format!("node {name} is Ready"),
                    t.elapsed(),
                    None,
                )
                .await;
                Ok(())
            }
            Err(e) => Err(fail(sink, steps::READY, t, e).await),
        }
    }

    /// Runs kubeadm init unless admin.conf exists; waits for the API server. Returns the admin
    /// client and whether kubeadm ran.
    async fn kubeadm_init(&self) -> Result<(Client, bool), Error> {
        let root = &self.ctx.root;
        let endpoint = self.ctx.config.api_server_endpoint();
        let admin = kubeadm::host_path(root, kubeadm::ADMIN_CONF);
        let changed = !admin.exists();
        if changed {
            // What an interrupted or failed init left makes the next one fail preflight.
            if node_agent::reset::kubeadm_state_present(root) {
                self.runner
                    .run(&Cmd::new("kubeadm").args(["reset", "-f"]))
                    .await?;
            }
            let installed = self
                .runner
                .run(&Cmd::new("kubeadm").args(["version", "-o", "short"]))
                .await
                .ok()
                .map(|o| o.stdout_str());
            let version =
                kubeadm_config::kubernetes_version(&self.ctx.config, installed.as_deref());
            let text = kubeadm_config::init_configuration(&self.ctx.config, &version);
            let file = PrivateConfig::write(root, "init", "kubeadm-init.yaml", text.as_bytes())
                .map_err(|source| Error::Io {
                    what: format!("write the kubeadm config under {}", root.display()),
                    source,
                })?;
            let cmd = Cmd::new("kubeadm")
                .arg("init")
                .arg("--config")
                .arg(file.host_arg(root));
            let result = self.runner.run(&cmd).await;
            file.remove().map_err(|source| Error::Io {
                what: "remove the kubeadm config".into(),
                source,
            })?;
            result?;
        }
        let client = kube_client::admin_client(root).await?;
        kube_client::wait_api_up(&client, &endpoint, self.timing.api_wait, self.timing.poll)
            .await?;
        if changed {
            delete_init_token(&client).await;
        }
        Ok((client, changed))
    }
}

async fn fail(sink: &EventSink, step: &str, started: Instant, e: Error) -> Error {
    let command = match &e {
        Error::Exec(x) => Some(x.to_failure()),
        _ => None,
    };
    sink.send(
        step,
        StepState::Failed,
        e.to_string(),
        started.elapsed(),
        command,
    )
    .await;
    e
}

/// Deletes the bootstrap token `kubeadm init` always creates (nodes join with tickets): right
/// after a fresh init, every token Secret that is not a ticket's.
async fn delete_init_token(client: &Client) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), tokens::NAMESPACE);
    let Ok(list) = secrets.list(&ListParams::default()).await else {
        return;
    };
    for s in list {
        let ticket = s
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(tokens::NODE_LABEL));
        if s.type_.as_deref() != Some(tokens::SECRET_TYPE) || ticket {
            continue;
        }
        if let Some(name) = s.metadata.name.as_deref() {
            match secrets.delete(name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(secret = name, "deleted the kubeadm init token"),
                Err(e) => {
                    tracing::warn!(secret = name, "cannot delete the kubeadm init token: {e}")
                }
            }
        }
    }
}
