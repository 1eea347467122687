//! Cluster formation: join tickets, Worker.Join and their security properties, with the real
//! master agent and node agent services in-process against the simulated API server (simkube);
//! kubeadm itself is a recording fake here that registers the node in the simulated cluster.
//! The whole flow with the real binaries and the shim tools is in the `bootstrap_*` tests at the
//! end (they need the testbed harness).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_proto::{ControlPlaneClient, JoinTicket, StepEvent, StepState, WorkerClient, v1};
use cluster_common::config::{ClusterConfig, HostRole};
use cluster_common::pki::PkiLayout;
use cluster_common::tls::TlsMaterial;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::Api;
use node_agent::exec::{Cmd, Output, RecordingRunner};
use node_agent::join::JoinTiming;
use node_agent::worker::WorkerService;
use node_agent::{AgentContext, AgentOptions};
use simkube::{NodeSpec, SimCluster, SimOptions};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// The in-process world: cluster.yaml + PKI, the simulated API server on the master's IP, the
/// master agent, and node agents whose kubeadm is a fake.
struct World {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    config: ClusterConfig,
    sim: Arc<SimCluster>,
    url: String,
    shutdown: CancellationToken,
    /// Every `kubeadm join` the fake saw: (node, token, file mode, argv).
    joins: Arc<Mutex<Vec<JoinSeen>>>,
}

#[derive(Debug, Clone)]
struct JoinSeen {
    node: String,
    token: String,
    pin: String,
    mode: u32,
    argv: Vec<String>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn root(dir: &Path, host: &str) -> PathBuf {
    dir.join("roots").join(host)
}

fn fast_join() -> JoinTiming {
    JoinTiming {
        ticket_wait: Duration::from_secs(20),
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        min_validity: Duration::from_secs(1),
        join_attempts: 3,
    }
}

impl World {
    /// `n` picks the loopback prefix 127.66.n.0 and the agent port.
    async fn new(n: u8, extra: &str) -> Self {
        Self::with_failing_joins(n, extra, 0).await
    }

    /// As [`World::new`], node-2's first `fail` joins failing like kubeadm with an expired token.
    async fn with_failing_joins(n: u8, extra: &str, fail: usize) -> Self {
        cluster_common::telemetry::install_crypto_provider();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let prefix = format!("127.66.{n}");
        let port = 50600 + u16::from(n);
        let path = dir.join("cluster.yaml");
        std::fs::write(
            &path,
            format!(
                "master: {{name: k8s-master, ip: {prefix}.10}}\nnodes:\n  - {{name: node-1, ip: {prefix}.11}}\n  - {{name: node-2, ip: {prefix}.12}}\npodCIDR: 10.244.0.0/16\nagentPort: {port}\n{extra}"
            ),
        )
        .unwrap();
        let config = ClusterConfig::load(&path).unwrap();
        ctl::pki::init(&config, false).unwrap();
        let sim = Arc::new(SimCluster::new(SimOptions::fast(0.0)).unwrap());
        let listener = tokio::net::TcpListener::bind(format!("{prefix}.10:6443"))
            .await
            .unwrap();
        let handle = sim
            .serve_https(listener, None, &["k8s-master".into()])
            .unwrap();
        let url = handle.url();
        // The handle stops the server when dropped: keep it for the test's lifetime.
        std::mem::forget(handle);
        let world = World {
            _dir: tmp,
            dir,
            config,
            sim,
            url,
            shutdown: CancellationToken::new(),
            joins: Arc::default(),
        };
        world.start_master().await;
        world.start_node_failing("node-1", 0).await;
        world.start_node_failing("node-2", fail).await;
        world
    }

    fn ctx(&self, host: &str, role: HostRole) -> AgentContext {
        let r = root(&self.dir, host);
        std::fs::create_dir_all(&r).unwrap();
        AgentContext::load(
            &AgentOptions {
                config: self.config.path.clone(),
                host: host.into(),
                root: r,
                pki_dir: None,
                log_format: Default::default(),
            },
            role,
        )
        .unwrap()
    }

    async fn start_master(&self) {
        let ctx = self.ctx("k8s-master", HostRole::Master);
        let tls = ctx.tls().unwrap();
        let listener = ctx.bind().await.unwrap();
        let token = self.shutdown.clone();
        tokio::spawn(async move { master_agent::serve(ctx, &tls, listener, token).await });
    }

    /// What `kubeadm init` leaves that the master agent relies on: the CA and admin.conf; and
    /// the master node Ready.
    fn initialise(&self) {
        let r = root(&self.dir, "k8s-master");
        let pki = r.join("etc/kubernetes/pki");
        std::fs::create_dir_all(&pki).unwrap();
        std::fs::write(pki.join("ca.crt"), &self.sim.ca().cert_pem).unwrap();
        self.sim
            .write_kubeconfig(
                &r.join("etc/kubernetes/admin.conf"),
                &self.url,
                "kubernetes-admin",
                &["kubeadm:cluster-admins"],
            )
            .unwrap();
        self.register("k8s-master", true);
    }

    fn register(&self, name: &str, control_plane: bool) {
        let ip = self.config.host(name).unwrap().ip.to_string();
        self.sim
            .register_node(&NodeSpec {
                name: name.into(),
                ip,
                control_plane,
            })
            .unwrap();
        self.sim.start_kubelet(name);
        self.sim.set_cni_installed(name, true);
    }

    /// A node agent whose kubeadm is a fake: `kubeadm join --config F` records what F holds and
    /// registers the node (failing instead while `fail_joins` > 0).
    async fn start_node_failing(&self, host: &str, fail_joins: usize) {
        let ctx = self.ctx(host, HostRole::Node);
        let tls = ctx.tls().unwrap();
        let listener = ctx.bind().await.unwrap();
        let runner = RecordingRunner::new();
        let (sim, joins, node, r) = (
            self.sim.clone(),
            self.joins.clone(),
            host.to_string(),
            ctx.root.clone(),
        );
        let ip = ctx.host.ip.to_string();
        let failures = Arc::new(Mutex::new(fail_joins));
        runner.respond(move |cmd: &Cmd| {
            if cmd.program != "kubeadm" || cmd.args.first().map(String::as_str) != Some("join") {
                return None;
            }
            // A host path: under this host's root.
            let file = r.join(cmd.args[2].trim_start_matches('/'));
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            let doc: serde_json::Value =
                serde_yaml_ng::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            let bt = &doc["discovery"]["bootstrapToken"];
            joins.lock().unwrap().push(JoinSeen {
                node: node.clone(),
                token: bt["token"].as_str().unwrap().into(),
                pin: bt["caCertHashes"][0].as_str().unwrap().into(),
                mode,
                argv: cmd.argv(),
            });
            let mut left = failures.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return Some(Output {
                    code: 1,
                    stderr: b"error execution phase preflight: couldn't validate the identity of the API Server: token expired".to_vec(),
                    ..Default::default()
                });
            }
            sim.register_node(&NodeSpec {
                name: node.clone(),
                ip: ip.clone(),
                control_plane: false,
            })
            .unwrap();
            sim.start_kubelet(&node);
            sim.set_cni_installed(&node, true);
            let kc = r.join("etc/kubernetes/kubelet.conf");
            std::fs::create_dir_all(kc.parent().unwrap()).unwrap();
            std::fs::write(kc, "kubelet").unwrap();
            Some(Output::default())
        });
        let worker = WorkerService::new(ctx.clone())
            .with_runner(Arc::new(runner))
            .with_timing(fast_join());
        let host_svc = node_agent::host_service::HostService::new(ctx);
        let token = self.shutdown.clone();
        tokio::spawn(async move {
            node_agent::server::serve(
                &tls,
                |mut s| {
                    s.add_service(agent_proto::HostServer::new(host_svc))
                        .add_service(agent_proto::WorkerServer::new(worker))
                },
                listener,
                token,
            )
            .await
        });
    }

    fn identity(&self, who: &str) -> ClientTlsConfig {
        let pki = PkiLayout::new(&self.config.pki_dir);
        let m = if who == "admin" {
            TlsMaterial::admin(&pki)
        } else {
            TlsMaterial::host(&pki, who)
        };
        m.unwrap().client_config()
    }

    fn channel(&self, host: &str, who: &str) -> Channel {
        let h = self.config.host(host).unwrap();
        Endpoint::from_shared(format!("https://{}:{}", h.ip, self.config.agent_port))
            .unwrap()
            .tls_config(self.identity(who))
            .unwrap()
            .connect_timeout(Duration::from_secs(3))
            .connect_lazy()
    }

    async fn ticket(&self, node: &str) -> Result<JoinTicket, tonic::Status> {
        let t = ControlPlaneClient::new(self.channel("k8s-master", node))
            .issue_join_ticket(v1::IssueJoinTicketRequest {
                node_name: node.into(),
            })
            .await?
            .into_inner();
        Ok(JoinTicket::try_from(t).unwrap())
    }

    async fn join(&self, node: &str) -> Vec<StepEvent> {
        let mut stream = WorkerClient::new(self.channel(node, "admin"))
            .join(v1::JoinRequest {})
            .await
            .unwrap()
            .into_inner();
        let mut events = Vec::new();
        while let Some(e) = stream.next().await {
            events.push(StepEvent::try_from(e.unwrap()).unwrap());
        }
        events
    }

    fn admin(&self) -> kube::Client {
        self.sim.kube_client()
    }

    async fn token_secrets(&self) -> Vec<Secret> {
        let secrets: Api<Secret> = Api::namespaced(self.admin(), "kube-system");
        secrets
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|s| s.type_.as_deref() == Some("bootstrap.kubernetes.io/token"))
            .collect()
    }

    /// A client authenticating with a bearer token only (as kubeadm join's TLS bootstrap).
    async fn as_token(&self, token: &str) -> kube::Client {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.sim.ca().cert_pem);
        let kc = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
            self.url
        );
        let kc = kube::config::Kubeconfig::from_yaml(&kc).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(cfg).unwrap()
    }
}

fn messages(events: &[StepEvent]) -> String {
    events
        .iter()
        .map(|e| format!("{} {} {}: {}\n", e.host, e.step, e.state, e.message))
        .collect()
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn ticket_holds_a_working_bootstrap_token_and_the_cluster_ca_pin() {
    let w = World::new(1, "").await;
    w.initialise();
    let t = w.ticket("node-1").await.unwrap();
    assert_eq!(t.api_server_endpoint, "127.66.1.10:6443");
    let pin = master_agent::tokens::ca_pin(w.sim.ca().cert_pem.as_bytes()).unwrap();
    assert_eq!(t.ca_cert_hashes, vec![pin]);
    let left = t
        .expires_at
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        left > Duration::from_secs(14 * 60) && left <= Duration::from_secs(15 * 60),
        "{left:?}"
    );

    // The Secret is exactly kubeadm's, for this node.
    let secrets = w.token_secrets().await;
    let s = secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(&format!("bootstrap-token-{}", t.token.id())))
        .expect("token Secret");
    let data = s.data.as_ref().unwrap();
    assert_eq!(data["token-secret"].0, t.token.secret().as_bytes());
    assert!(String::from_utf8_lossy(&data["description"].0).contains("node-1"));

    // The API server accepts it as a bootstrap token.
    let nodes: Api<Node> = Api::all(w.as_token(&t.token.expose()).await);
    nodes
        .list(&Default::default())
        .await
        .expect("token authenticates");

    // Every request mints a fresh token.
    let t2 = w.ticket("node-1").await.unwrap();
    assert_ne!(t2.token.expose(), t.token.expose());
}

#[tokio::test]
async fn ticket_before_init_is_failed_precondition_so_nodes_retry() {
    let w = World::new(2, "").await;
    let err = w.ticket("node-1").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not initialised"), "{err:?}");
}

#[tokio::test]
async fn node_agents_asked_before_the_master_is_up_join_once_it_is() {
    let w = World::new(3, "").await;
    let join = {
        let w = &w;
        async move { w.join("node-1").await }
    };
    let init_later = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        w.initialise();
    };
    let (events, ()) = futures::join!(join, init_later);
    let text = messages(&events);
    assert!(text.contains("waiting for the master agent"), "{text}");
    let last = events.last().unwrap();
    assert_eq!(
        (last.step.as_str(), last.state),
        ("kubeadm-join", StepState::Changed),
        "{text}"
    );
    let joins = w.joins.lock().unwrap().clone();
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0].node, "node-1");
}

#[tokio::test]
async fn join_config_is_private_removed_and_the_token_never_shows() {
    let w = World::new(4, "").await;
    w.initialise();
    let events = w.join("node-1").await;
    let text = messages(&events);
    let seen = w.joins.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{text}");
    let j = &seen[0];
    assert_eq!(j.mode, 0o600);
    assert_eq!(&j.argv[..3], ["kubeadm", "join", "--config"]);
    let secret = j.token.split('.').nth(1).unwrap();
    assert!(!j.argv.join(" ").contains(secret), "token in argv");
    assert!(!text.contains(secret), "token in events: {text}");
    assert!(j.pin.starts_with("sha256:"));
    // Nothing left behind on the node.
    let private = root(&w.dir, "node-1").join("run/k8s-agent/join");
    let left: Vec<_> = std::fs::read_dir(&private).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[tokio::test]
async fn token_is_deleted_once_its_node_is_ready_and_a_second_join_mints_none() {
    let w = World::new(5, "").await;
    w.initialise();
    let events = w.join("node-1").await;
    assert_eq!(
        events.last().unwrap().state,
        StepState::Changed,
        "{}",
        messages(&events)
    );
    wait_until(
        "the token Secret to go",
        Duration::from_secs(10),
        || async { w.token_secrets().await.is_empty() },
    )
    .await;
    // Joined: a second join changes nothing and asks for no ticket.
    let events = w.join("node-1").await;
    assert!(
        events.iter().all(|e| e.state != StepState::Changed),
        "{}",
        messages(&events)
    );
    assert_eq!(w.joins.lock().unwrap().len(), 1);
    assert!(w.token_secrets().await.is_empty(), "a token was minted");
    // And the master refuses a ticket for a node that is already Ready: it would make a duplicate.
    let err = w.ticket("node-1").await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
}

#[tokio::test]
async fn an_expired_token_is_refused_by_the_api_server() {
    let w = World::new(6, "").await;
    w.initialise();
    // cluster.yaml allows 1m at least: mint a 2 s token the way the master agent does.
    let (token, _) = master_agent::tokens::mint(&w.admin(), "node-2", Duration::from_secs(2))
        .await
        .unwrap();
    let nodes: Api<Node> = Api::all(w.as_token(&token.expose()).await);
    nodes
        .list(&Default::default())
        .await
        .expect("valid before expiry");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let nodes: Api<Node> = Api::all(w.as_token(&token.expose()).await);
    let err = nodes.list(&Default::default()).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 401),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_join_failing_on_an_expired_ticket_gets_a_fresh_one() {
    // node-2's kubeadm fails the first join as kubeadm does with an expired token.
    let w = World::with_failing_joins(7, "", 1).await;
    w.initialise();
    let events = w.join("node-2").await;
    let text = messages(&events);
    assert_eq!(events.last().unwrap().state, StepState::Changed, "{text}");
    assert!(text.contains("retrying with a fresh ticket"), "{text}");
    let seen = w.joins.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{text}");
    assert_ne!(
        seen[0].token, seen[1].token,
        "the retry used the same token"
    );
}
