//! The `ControlPlane` service: init, join tickets, admin kubeconfig.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_proto::{JoinTicket, v1};
use cluster_common::Identity;
use cluster_common::config::HostRole;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use node_agent::AgentContext;
use node_agent::events::EventSink;
use node_agent::exec::{CommandRunner, SystemRunner};
use node_agent::host_service::EventStream;
use node_agent::kubeadm;
use tonic::{Request, Response, Status};

use crate::init::{InitTiming, Initialiser};
use crate::{Error, kube_client, tokens};

/// `ControlPlane` on top of the master's agent context.
#[derive(Debug, Clone)]
pub struct ControlPlaneService {
    ctx: AgentContext,
    runner: Arc<dyn CommandRunner>,
    timing: InitTiming,
    /// One Init at a time.
    init_lock: Arc<tokio::sync::Mutex<()>>,
    /// How often the clean-up task looks at the nodes of pending tickets.
    cleanup_poll: Duration,
    /// The admin client and CA pin, reused while admin.conf and ca.crt are unchanged.
    access: Arc<std::sync::Mutex<Option<ClusterAccess>>>,
    /// When the last sweep of leftover tokens started.
    last_sweep: Arc<std::sync::Mutex<Option<Instant>>>,
    /// Deletes each ticket's token once its node is Ready.
    janitor: tokens::Janitor,
}

/// How often tickets trigger a sweep of leftover tokens (from an earlier agent run: the
/// janitor handles this run's tickets).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// What a ticket needs from kubeadm's files, built once per content of admin.conf + ca.crt:
/// one client means one connection pool to the API server for every ticket.
#[derive(Clone)]
struct ClusterAccess {
    admin_conf: Arc<[u8]>,
    ca: Arc<[u8]>,
    client: kube::Client,
    pin: agent_proto::CaCertHash,
}

impl std::fmt::Debug for ClusterAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterAccess").finish_non_exhaustive()
    }
}

impl ControlPlaneService {
    /// A ControlPlane service for the master agent, running real commands.
    pub fn new(ctx: AgentContext) -> Self {
        Self {
            ctx,
            runner: Arc::new(SystemRunner),
            timing: InitTiming::default(),
            init_lock: Arc::default(),
            cleanup_poll: Duration::from_secs(1),
            access: Arc::default(),
            last_sweep: Arc::default(),
            janitor: tokens::Janitor::default(),
        }
    }

    /// Runs commands through `runner` instead (tests).
    pub fn with_runner(mut self, runner: Arc<dyn CommandRunner>) -> Self {
        self.runner = runner;
        self
    }

    /// Waits with `timing` instead of the defaults (tests).
    pub fn with_timing(mut self, timing: InitTiming) -> Self {
        self.cleanup_poll = timing.poll;
        self.timing = timing;
        self
    }

    /// The admin client and CA pin: cached, rebuilt when kubeadm's files change (a reset and a
    /// new init). The two small files are read on every call; `std::fs` on purpose: tokio::fs
    /// would hand each read to a blocking thread, and a burst of tickets would start hundreds.
    async fn access(&self) -> Result<(kube::Client, agent_proto::CaCertHash), Error> {
        let root = &self.ctx.root;
        let admin_path = kubeadm::host_path(root, kubeadm::ADMIN_CONF);
        let admin_conf = match std::fs::read(&admin_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotInitialised { path: admin_path });
            }
            Err(source) => {
                return Err(Error::Io {
                    what: format!("read {}", admin_path.display()),
                    source,
                });
            }
        };
        let ca_path = kubeadm::host_path(root, kubeadm::CA_CERT);
        let ca = std::fs::read(&ca_path).map_err(|e| Error::CaCert {
            path: ca_path.clone(),
            problem: e.to_string(),
        })?;
        if let Some(a) = self.access.lock().expect("access lock").as_ref()
            && *a.admin_conf == *admin_conf
            && *a.ca == *ca
        {
            return Ok((a.client.clone(), a.pin.clone()));
        }
        let pin = tokens::ca_pin(&ca).map_err(|problem| Error::CaCert {
            path: ca_path,
            problem,
        })?;
        let client = kube_client::admin_client(root).await?;
        *self.access.lock().expect("access lock") = Some(ClusterAccess {
            admin_conf: admin_conf.into(),
            ca: ca.into(),
            client: client.clone(),
            pin: pin.clone(),
        });
        Ok((client, pin))
    }

    /// Whether a sweep of leftover tokens is due (and marks it started).
    fn sweep_due(&self) -> bool {
        let mut last = self.last_sweep.lock().expect("sweep lock");
        if last.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Mints a ticket for `node` (already authorised).
    async fn ticket(&self, node: &str) -> Result<JoinTicket, Error> {
        let endpoint = self.ctx.config.api_server_endpoint();
        let (client, pin) = self.access().await?;
        kube_client::api_up(&client, &endpoint).await?;
        let existing = Api::<Node>::all(client.clone())
            .get_opt(node)
            .await
            .map_err(|source| Error::Kube {
                what: format!("read node {node}"),
                source,
            })?;
        if existing.as_ref().is_some_and(tokens::node_ready) {
            return Err(Error::AlreadyJoined(node.to_string()));
        }
        if self.sweep_due() {
            let client = client.clone();
            tokio::spawn(async move {
                if let Err(e) = tokens::sweep(&client).await {
                    tracing::warn!("cannot clean up old join tokens: {e}");
                }
            });
        }
        let (token, expires_at) =
            tokens::mint(&client, node, self.ctx.config.join.ticket_ttl).await?;
        tracing::info!(node, token = %token, "minted a join ticket");
        self.janitor
            .watch(&client, node, token.id(), expires_at, self.cleanup_poll);
        Ok(JoinTicket {
            api_server_endpoint: endpoint,
            token,
            ca_cert_hashes: vec![pin],
            expires_at,
        })
    }

    /// admin.conf, its server pointing at cluster.yaml's API server endpoint.
    async fn admin_kubeconfig_bytes(&self) -> Result<Vec<u8>, Error> {
        let path = kubeadm::host_path(&self.ctx.root, kubeadm::ADMIN_CONF);
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotInitialised { path });
            }
            Err(source) => {
                return Err(Error::Io {
                    what: format!("read {}", path.display()),
                    source,
                });
            }
        };
        let server = format!("https://{}", self.ctx.config.api_server_endpoint());
        rewrite_server(&bytes, &server).map_err(|message| Error::Kubeconfig { path, message })
    }
}

/// Points every cluster of a kubeconfig at `server`; returns the bytes unchanged when they
/// already do.
pub fn rewrite_server(kubeconfig: &[u8], server: &str) -> Result<Vec<u8>, String> {
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_slice(kubeconfig).map_err(|e| format!("not YAML: {e}"))?;
    let mut changed = false;
    let clusters = doc
        .get_mut("clusters")
        .and_then(|c| c.as_sequence_mut())
        .ok_or("has no clusters")?;
    for c in clusters {
        if let Some(cluster) = c.get_mut("cluster").and_then(|c| c.as_mapping_mut()) {
            let key = serde_yaml_ng::Value::from("server");
            if cluster.get(&key).and_then(|v| v.as_str()) != Some(server) {
                cluster.insert(key, server.into());
                changed = true;
            }
        }
    }
    if !changed {
        return Ok(kubeconfig.to_vec());
    }
    serde_yaml_ng::to_string(&doc)
        .map(String::into_bytes)
        .map_err(|e| e.to_string())
}

#[tonic::async_trait]
impl agent_proto::ControlPlane for ControlPlaneService {
    type InitStream = EventStream;

    #[tracing::instrument(skip_all)]
    async fn init(
        &self,
        request: Request<v1::InitRequest>,
    ) -> Result<Response<Self::InitStream>, Status> {
        Identity::of_request(&request)
            .and_then(|id| id.require_admin("initialise the control plane"))
            .map_err(Error::from)?;
        let (sink, stream) = EventSink::new(self.ctx.host.name.to_string(), false);
        let init = Initialiser::new(self.ctx.clone(), self.runner.clone(), self.timing);
        let lock = self.init_lock.clone();
        tokio::spawn(async move {
            let _guard = lock.lock().await;
            // The outcome is in the events.
            let _ = init.run(&sink).await;
        });
        Ok(Response::new(stream))
    }

    #[tracing::instrument(skip_all, fields(node = %request.get_ref().node_name))]
    async fn issue_join_ticket(
        &self,
        request: Request<v1::IssueJoinTicketRequest>,
    ) -> Result<Response<v1::JoinTicket>, Status> {
        let id = Identity::of_request(&request).map_err(Error::from)?;
        let req = agent_proto::IssueJoinTicketRequest::try_from(request.into_inner())
            .map_err(Error::from)?;
        id.require_node(
            req.node_name.as_str(),
            &format!("ask a join ticket for {}", req.node_name),
        )
        .map_err(Error::from)?;
        let known = self
            .ctx
            .config
            .host(req.node_name.as_str())
            .is_some_and(|h| h.role == HostRole::Node);
        if !known {
            return Err(Error::UnknownNode(req.node_name.to_string()).into());
        }
        let ticket = self.ticket(req.node_name.as_str()).await?;
        Ok(Response::new(ticket.into()))
    }

    #[tracing::instrument(skip_all)]
    async fn admin_kubeconfig(
        &self,
        request: Request<v1::AdminKubeconfigRequest>,
    ) -> Result<Response<v1::AdminKubeconfigResponse>, Status> {
        Identity::of_request(&request)
            .and_then(|id| id.require_admin("read the admin kubeconfig"))
            .map_err(Error::from)?;
        let kubeconfig = self.admin_kubeconfig_bytes().await?;
        Ok(Response::new(v1::AdminKubeconfigResponse { kubeconfig }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KC: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: kubernetes\n  cluster:\n    server: https://10.0.2.15:6443\n    certificate-authority-data: AAAA\nusers: []\ncontexts: []\n";

    #[test]
    fn admin_kubeconfig_points_at_the_cluster_yaml_endpoint() {
        let out = rewrite_server(KC.as_bytes(), "https://192.168.50.10:6443").unwrap();
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&out).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://192.168.50.10:6443")
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"].as_str(),
            Some("AAAA")
        );
        let same = rewrite_server(&out, "https://192.168.50.10:6443").unwrap();
        assert_eq!(same, out, "a right kubeconfig is returned byte for byte");
    }
}
