//! The foundation: mutual-TLS authorisation matrix with exact status codes (agents in-process),
//! and `ctl facts` against three real agent processes on loopback addresses.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_proto::{ControlPlaneClient, HostClient, WorkerClient, v1};
use cluster_common::config::{ClusterConfig, HostRole};
use cluster_common::pki::PkiLayout;
use cluster_common::tls::TlsMaterial;
use node_agent::{AgentContext, AgentOptions};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Writes a 1-master 2-node cluster.yaml on `prefix`.10/.11/.12 with `port`, and its PKI.
fn cluster(dir: &Path, prefix: &str, port: u16) -> ClusterConfig {
    let path = dir.join("cluster.yaml");
    std::fs::write(
        &path,
        format!(
            "master: {{name: k8s-master, ip: {prefix}.10}}\nnodes:\n  - {{name: node-1, ip: {prefix}.11}}\n  - {{name: node-2, ip: {prefix}.12}}\npodCIDR: 10.244.0.0/16\nagentPort: {port}\n"
        ),
    )
    .unwrap();
    let config = ClusterConfig::load(&path).unwrap();
    ctl::pki::init(&config, false).unwrap();
    config
}

struct Agents {
    config: ClusterConfig,
    shutdown: CancellationToken,
}

impl Drop for Agents {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts the master agent and node-1's agent in-process.
async fn start_agents(dir: &Path, prefix: &str, port: u16) -> Agents {
    cluster_common::telemetry::install_crypto_provider();
    let config = cluster(dir, prefix, port);
    let shutdown = CancellationToken::new();
    for (name, role) in [("k8s-master", HostRole::Master), ("node-1", HostRole::Node)] {
        let opts = AgentOptions {
            config: config.path.clone(),
            host: name.into(),
            root: dir.to_path_buf(),
            pki_dir: None,
            log_format: Default::default(),
        };
        let ctx = AgentContext::load(&opts, role).unwrap();
        let tls = ctx.tls().unwrap();
        let listener = ctx.bind().await.unwrap();
        let token = shutdown.clone();
        match role {
            HostRole::Master => {
                tokio::spawn(async move { master_agent::serve(ctx, &tls, listener, token).await });
            }
            HostRole::Node => {
                tokio::spawn(async move { node_agent::serve(ctx, &tls, listener, token).await });
            }
        }
    }
    Agents { config, shutdown }
}

fn endpoint(config: &ClusterConfig, host: &str, tls: ClientTlsConfig) -> Channel {
    let h = config.host(host).unwrap();
    Endpoint::from_shared(format!("https://{}:{}", h.ip, config.agent_port))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(3))
        .connect_lazy()
}

fn as_identity(config: &ClusterConfig, who: &str) -> ClientTlsConfig {
    let pki = PkiLayout::new(&config.pki_dir);
    let m = if who == "admin" {
        TlsMaterial::admin(&pki)
    } else {
        TlsMaterial::host(&pki, who)
    };
    m.unwrap().client_config()
}

fn ticket_request(node: &str) -> v1::IssueJoinTicketRequest {
    v1::IssueJoinTicketRequest {
        node_name: node.into(),
    }
}

#[tokio::test]
async fn mtls_matrix_gives_exact_status_codes() {
    let dir = tempfile::tempdir().unwrap();
    let agents = start_agents(dir.path(), "127.62.0", 50101).await;
    let c = &agents.config;

    // Admin may read facts.
    let mut host = HostClient::new(endpoint(c, "node-1", as_identity(c, "admin")));
    let facts = host.facts(v1::FactsRequest {}).await.unwrap().into_inner();
    assert_eq!(facts.host, "node-1");
    assert_eq!(facts.role, v1::Role::Node as i32);

    // No client certificate: refused as unauthenticated.
    let ca = std::fs::read(PkiLayout::new(&c.pki_dir).ca_cert()).unwrap();
    let anonymous = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca));
    let err = HostClient::new(endpoint(c, "node-1", anonymous))
        .facts(v1::FactsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // A node identity may not call an admin RPC (on its own agent or another's).
    let err = HostClient::new(endpoint(c, "node-1", as_identity(c, "node-1")))
        .facts(v1::FactsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = ControlPlaneClient::new(endpoint(c, "k8s-master", as_identity(c, "node-1")))
        .admin_kubeconfig(v1::AdminKubeconfigRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = WorkerClient::new(endpoint(c, "node-1", as_identity(c, "node-1")))
        .join(v1::JoinRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A node may not ask a ticket for another node; nor may the admin or the master ask one.
    let mut cp_as_node1 =
        ControlPlaneClient::new(endpoint(c, "k8s-master", as_identity(c, "node-1")));
    let err = cp_as_node1
        .issue_join_ticket(ticket_request("node-2"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("node-2"), "{err:?}");
    for who in ["admin", "k8s-master"] {
        let err = ControlPlaneClient::new(endpoint(c, "k8s-master", as_identity(c, who)))
            .issue_join_ticket(ticket_request("node-1"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{who}: {err:?}");
    }

    // A malformed node name is an invalid argument, before any authorisation decision.
    let err = cp_as_node1
        .issue_join_ticket(ticket_request("Node_1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Its own ticket passes authentication and authorisation (what follows is the
    // control plane's business: not a refusal by identity).
    let result = cp_as_node1
        .issue_join_ticket(ticket_request("node-1"))
        .await;
    if let Err(e) = result {
        assert!(
            !matches!(e.code(), Code::PermissionDenied | Code::Unauthenticated),
            "{e:?}"
        );
    }
}

#[tokio::test]
async fn certificate_from_another_ca_fails_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let agents = start_agents(dir.path(), "127.62.1", 50102).await;
    // Same hosts, separate PKI: a foreign CA.
    let other = tempfile::tempdir().unwrap();
    let foreign = cluster(other.path(), "127.62.1", 50102);
    let err = HostClient::new(endpoint(
        &agents.config,
        "node-1",
        as_identity(&foreign, "admin"),
    ))
    .facts(v1::FactsRequest {})
    .await
    .unwrap_err();
    // The server refuses the handshake (and the client refuses the server's certificate):
    // no RPC reaches a handler.
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

fn write_config(dir: &Path, prefix: &str, port: u16) -> PathBuf {
    cluster(dir, prefix, port).path
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn agent(bin: &str, config: &Path, host: &str) -> Child {
    Command::new(testbed::bins::bin(bin))
        .args([
            "--config".as_ref(),
            config.as_os_str(),
            "--host".as_ref(),
            host.as_ref(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn ctl(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(testbed::bins::bin("ctl"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn ctl_facts_lists_three_agents_and_flags_an_unreachable_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "127.62.2", 50103);
    let mut procs = Procs(vec![
        agent("master-agent", &config, "k8s-master"),
        agent("node-agent", &config, "node-1"),
        agent("node-agent", &config, "node-2"),
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out = ctl(&config, &["facts", "-o", "json"]);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for (row, (name, role)) in rows.iter().zip([
        ("k8s-master", "master"),
        ("node-1", "node"),
        ("node-2", "node"),
    ]) {
        assert_eq!(row["name"], name);
        assert_eq!(row["role"], role);
        assert_eq!(row["reachable"], true);
        assert!(row["facts"]["cpus"].as_u64().unwrap() >= 1);
        assert!(row["facts"]["memory_bytes"].as_u64().unwrap() > 0);
    }

    // node-2 goes away: shown unreachable within a few seconds, exit code non-zero.
    let mut n2 = procs.0.pop().unwrap();
    n2.kill().unwrap();
    n2.wait().unwrap();
    let started = Instant::now();
    let out = ctl(&config, &["facts"]);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(!out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    let line = table.lines().find(|l| l.starts_with("node-2")).unwrap();
    assert!(line.contains(" no "), "{table}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("node-2: agent at 127.62.2.12"));
}

#[test]
fn agents_refuse_to_start_without_identity_or_with_the_wrong_role() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "127.62.3", 50104);
    let run = |bin: &str, host: &str| {
        Command::new(testbed::bins::bin(bin))
            .args([
                "--config".as_ref(),
                config.as_os_str(),
                "--host".as_ref(),
                host.as_ref(),
            ])
            .output()
            .unwrap()
    };
    let out = run("node-agent", "k8s-master");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("runs master-agent"), "{err}");
    let out = run("master-agent", "node-1");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("runs node-agent"));
    let out = run("node-agent", "node-9");
    assert!(String::from_utf8_lossy(&out.stderr).contains("node-1, node-2"));

    std::fs::remove_file(PkiLayout::new(dir.path().join("pki")).host_key("node-1")).unwrap();
    let out = run("node-agent", "node-1");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node-1.key") && err.contains("missing") && err.contains("pki init"),
        "{err}"
    );
}

#[test]
fn ctl_refuses_the_seed_pod_cidr_naming_both_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.yaml");
    std::fs::write(
        &path,
        "master: {name: k8s-master, ip: 192.168.50.10}\nnodes:\n  - {name: node-1, ip: 192.168.50.11}\npodCIDR: 192.168.0.0/16\n",
    )
    .unwrap();
    let out = ctl(&path, &["pki", "init"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("podCIDR: 192.168.0.0/16"), "{err}");
    assert!(
        err.contains("192.168.50.10") && err.contains("10.244.0.0/16"),
        "{err}"
    );
    assert!(
        !dir.path().join("pki").exists(),
        "nothing written for a bad config"
    );
}
