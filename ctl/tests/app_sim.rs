//! `ctl deploy`, `ctl scale` and `ctl get` against the simulated cluster (tests/simkube): a real
//! API server with controllers and kubelets, where `mongo:4.4` becomes ready after a delay and
//! `sdelements/lets-chat` crash-loops if it starts while Service `mongo` has no ready endpoint.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster_common::ClusterConfig;
use cluster_common::manifest::{ManifestError, Outcome};
use ctl::deploy::{DeployOptions, deploy_files, deploy_letschat};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt};
use simkube::{NodeSpec, SimCluster, SimOptions};

const CLUSTER_YAML: &str = "master: {name: k8s-master, ip: 192.168.50.10}
nodes:
  - {name: node-1, ip: 192.168.50.11}
  - {name: node-2, ip: 192.168.50.12}
podCIDR: 10.244.0.0/16
";

/// The seed's three hosts, kubelets running, CNI installed.
async fn sim() -> (SimCluster, Client, ClusterConfig) {
    let cluster = SimCluster::new(SimOptions::fast(0.05)).expect("sim cluster");
    for (name, ip, cp) in [
        ("k8s-master", "192.168.50.10", true),
        ("node-1", "192.168.50.11", false),
        ("node-2", "192.168.50.12", false),
    ] {
        cluster
            .register_node(&NodeSpec {
                name: name.into(),
                ip: ip.into(),
                control_plane: cp,
            })
            .expect("register node");
        cluster.start_kubelet(name);
        cluster.set_cni_installed(name, true);
    }
    let client = cluster.kube_client();
    let config =
        ClusterConfig::parse(CLUSTER_YAML, Path::new("/nonexistent/cluster.yaml")).unwrap();
    (cluster, client, config)
}

fn opts() -> DeployOptions {
    DeployOptions {
        force_conflicts: false,
        timeout: Duration::from_secs(30),
    }
}

async fn pods(client: &Client, selector: &str) -> Vec<Pod> {
    let mut pods: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items;
    pods.retain(|p| p.metadata.deletion_timestamp.is_none());
    pods
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn node(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

const LETSCHAT: &str = "app.kubernetes.io/name=letschat";

#[tokio::test]
async fn deploy_letschat_ends_with_mongo_ready_letschat_available_zero_restarts_and_is_idempotent()
{
    let (_cluster, client, config) = sim().await;
    let report = deploy_letschat(&client, &config, &opts(), &mut |_: &str| {})
        .await
        .unwrap();
    assert!(
        report.applied.iter().all(|a| a.outcome == Outcome::Created),
        "{:?}",
        report
            .applied
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let mongo = deployments.get("mongo").await.unwrap();
    assert_eq!(mongo.status.unwrap().ready_replicas, Some(1), "MongoDB 1/1");
    let letschat = deployments.get("letschat").await.unwrap();
    assert_eq!(letschat.status.unwrap().available_replicas, Some(1));
    for p in pods(&client, LETSCHAT).await {
        assert_eq!(restarts(&p), 0, "{} restarted", p.name_any());
        assert!(ready(&p));
    }
    let svc = Api::<Service>::namespaced(client.clone(), "default")
        .get("letschat")
        .await
        .unwrap();
    let spec = svc.spec.clone().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    let port = ctl::deploy::node_port(&svc).expect("a nodePort");
    assert_eq!(
        report.urls,
        [
            format!("http://192.168.50.11:{port}"),
            format!("http://192.168.50.12:{port}")
        ]
    );
    let mongo_svc = Api::<Service>::namespaced(client.clone(), "default")
        .get("mongo")
        .await
        .unwrap();
    assert_eq!(mongo_svc.spec.unwrap().type_.as_deref(), Some("ClusterIP"));

    // A second deploy changes nothing.
    let again = deploy_letschat(&client, &config, &opts(), &mut |_: &str| {})
        .await
        .unwrap();
    assert!(
        again
            .applied
            .iter()
            .all(|a| a.outcome == Outcome::Unchanged),
        "{:?}",
        again
            .applied
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
    );
}

fn seed_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/letschat");
    [
        "mongo-deployment.yaml",
        "mongo-srv.yaml",
        "letschat-deployment.yaml",
        "letschat-srv.yaml",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect()
}

#[tokio::test]
async fn the_seeds_four_files_in_the_seeds_order_deploy_with_zero_restarts() {
    let (_cluster, client, _config) = sim().await;
    let applied = deploy_files(
        &client,
        &seed_files(),
        "default",
        true,
        &opts(),
        &mut |_: &str| {},
    )
    .await
    .unwrap();
    // Services before workloads; workloads in the order given.
    assert_eq!(
        applied
            .iter()
            .map(|a| format!("{}/{}", a.kind, a.name))
            .collect::<Vec<_>>(),
        [
            "Service/mongo",
            "Service/letschat",
            "Deployment/mongo",
            "Deployment/letschat"
        ]
    );
    let ps = pods(&client, "name=letschat").await;
    assert_eq!(ps.len(), 1);
    assert!(ready(&ps[0]));
    assert_eq!(restarts(&ps[0]), 0);
}

#[tokio::test]
async fn scale_spreads_over_workers_replaces_deleted_pods_and_scaling_down_keeps_the_oldest() {
    let (_cluster, client, config) = sim().await;
    deploy_letschat(&client, &config, &opts(), &mut |_: &str| {})
        .await
        .unwrap();
    let first = pods(&client, LETSCHAT).await;
    assert_eq!(first.len(), 1);
    let oldest = first[0].name_any();
    // creationTimestamp has one-second resolution: make the first pod strictly the oldest.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let scaled = ctl::scale::scale(
        &client,
        "default",
        "letschat",
        3,
        Duration::from_secs(30),
        &mut |_: &str| {},
    )
    .await
    .unwrap();
    assert_eq!(scaled.pods.len(), 3);
    assert_eq!(scaled.pods[0].name_any(), oldest, "listed oldest first");
    let mut nodes: Vec<String> = scaled.pods.iter().map(node).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes, ["node-1", "node-2"], "spread over both workers");
    for p in &scaled.pods {
        assert!(ready(p), "{} not ready", p.name_any());
        assert_eq!(restarts(p), 0);
    }

    // A deleted replica is re-created.
    let victim = scaled.pods[1].name_any();
    Api::<Pod>::namespaced(client.clone(), "default")
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = pods(&client, LETSCHAT).await;
        if now.len() == 3 && now.iter().all(ready) && now.iter().all(|p| p.name_any() != victim) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ready replacement for {victim}: {:?}",
            now.iter().map(|p| p.name_any()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Scaling down keeps the oldest pod.
    let down = ctl::scale::scale(
        &client,
        "default",
        "letschat",
        1,
        Duration::from_secs(30),
        &mut |_: &str| {},
    )
    .await
    .unwrap();
    assert_eq!(
        down.pods.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        [oldest]
    );
}

#[tokio::test]
async fn scale_then_redeploy_is_a_conflict_explained_and_force_conflicts_takes_it() {
    let (_cluster, client, config) = sim().await;
    deploy_letschat(&client, &config, &opts(), &mut |_: &str| {})
        .await
        .unwrap();
    ctl::scale::scale(
        &client,
        "default",
        "letschat",
        2,
        Duration::from_secs(30),
        &mut |_: &str| {},
    )
    .await
    .unwrap();
    let err = deploy_letschat(&client, &config, &opts(), &mut |_: &str| {})
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    match err.downcast_ref::<ManifestError>() {
        Some(ManifestError::Conflict(c)) => {
            assert!(
                c.conflicts
                    .iter()
                    .any(|f| f.field == ".spec.replicas" && f.manager == "ctl-scale"),
                "{msg}"
            );
        }
        _ => panic!("not a conflict: {msg}"),
    }
    assert!(msg.contains("--force-conflicts"), "{msg}");
    let forced = DeployOptions {
        force_conflicts: true,
        ..opts()
    };
    deploy_letschat(&client, &config, &forced, &mut |_: &str| {})
        .await
        .unwrap();
    let d = Api::<Deployment>::namespaced(client.clone(), "default")
        .get("letschat")
        .await
        .unwrap();
    assert_eq!(
        d.spec.unwrap().replicas,
        Some(1),
        "cluster.yaml's replicas again"
    );
}

#[tokio::test]
async fn scaling_an_unknown_deployment_lists_the_existing_ones() {
    let (_cluster, client, config) = sim().await;
    deploy_letschat(&client, &config, &opts(), &mut |_: &str| {})
        .await
        .unwrap();
    let err = ctl::scale::scale(
        &client,
        "default",
        "letchat",
        3,
        Duration::from_secs(5),
        &mut |_: &str| {},
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Deployment \"letchat\" not found in namespace \"default\"; existing Deployments: letschat, mongo"
    );
}

#[tokio::test]
async fn malformed_yaml_names_file_and_line_and_applies_nothing() {
    let (_cluster, client, _config) = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: ok\nspec:\n  ports: [{port: 80}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\ndata:\n  key: a: b\n  other: c\n",
    )
    .unwrap();
    let err = deploy_files(
        &client,
        std::slice::from_ref(&bad),
        "default",
        false,
        &opts(),
        &mut |_: &str| {},
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{}:13:", bad.display())), "{msg}");
    let svc = Api::<Service>::namespaced(client.clone(), "default")
        .get_opt("ok")
        .await
        .unwrap();
    assert!(svc.is_none(), "nothing applied");
}

#[tokio::test]
async fn get_lists_pods_wide_with_node_and_services_with_node_ports() {
    let (_cluster, client, config) = sim().await;
    deploy_letschat(&client, &config, &opts(), &mut |_: &str| {})
        .await
        .unwrap();
    use ctl::get::{GetFormat, Kind, Scope, get};
    let ns = Scope::Namespace("default".into());
    let out = get(&client, Kind::Pods, &ns, GetFormat::Wide)
        .await
        .unwrap();
    let header = out.lines().next().unwrap();
    assert!(header.starts_with("NAME"), "{out}");
    assert!(header.contains("NODE"), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("letschat-"))
        .expect(&out);
    assert!(row.contains("1/1") && row.contains("Running"), "{out}");
    assert!(row.contains("node-1") || row.contains("node-2"), "{out}");
    let out = get(&client, Kind::Svc, &ns, GetFormat::Table)
        .await
        .unwrap();
    assert!(
        out.lines()
            .any(|l| l.starts_with("letschat") && l.contains("NodePort") && l.contains("8080:3")),
        "{out}"
    );
    let out = get(&client, Kind::Nodes, &Scope::All, GetFormat::Json)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 3);
    let out = get(&client, Kind::Deploy, &Scope::All, GetFormat::Table)
        .await
        .unwrap();
    assert!(out.starts_with("NAMESPACE"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("mongo") && l.contains("1/1")),
        "{out}"
    );
}
