//! Compatibility suite with the real `kubectl` (skipped with a visible SKIP line when kubectl is
//! not installed): tables, create, server-side apply, scale, rollout status, delete and
//! replacement, watch.

mod common;
use common::{Kubectl, cluster, eventually, kubectl_available};

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: mongo
  labels: {app: mongo}
spec:
  replicas: 1
  selector:
    matchLabels: {app: mongo}
  template:
    metadata:
      labels: {app: mongo}
    spec:
      containers:
      - name: mongo
        image: mongo:4.4
        ports:
        - containerPort: 27017
---
apiVersion: v1
kind: Service
metadata:
  name: mongo
spec:
  selector: {app: mongo}
  ports:
  - port: 27017
"#;

macro_rules! need_kubectl {
    () => {
        if !kubectl_available() {
            println!("SKIP: kubectl is not installed");
            return;
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_nodes_shows_roles_status_and_wide_columns() {
    need_kubectl!();
    let c = cluster(0.02, 2, true);
    let k = Kubectl::new(&c).await;
    let out = eventually(10, "3 Ready nodes", async || {
        let out = k.ok(&["get", "nodes"]).await;
        (out.matches(" Ready ").count() == 3).then_some(out)
    })
    .await;
    let header = out.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("k8s-master") && l.contains("control-plane")),
        "{out}"
    );
    let wide = k.ok(&["get", "nodes", "-o", "wide"]).await;
    assert!(
        wide.lines().next().unwrap().contains("INTERNAL-IP"),
        "{wide}"
    );
    assert!(wide.contains("192.0.2.11"), "{wide}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_scale_rollout_and_wide_pods_on_workers_only() {
    need_kubectl!();
    let c = cluster(0.02, 2, true);
    let k = Kubectl::new(&c).await;
    let f = k.file("app.yaml", APP);
    let out = k.ok(&["create", "-f", &f]).await;
    assert!(
        out.contains("deployment.apps/mongo created") && out.contains("service/mongo created"),
        "{out}"
    );
    let out = k.ok(&["scale", "deploy/mongo", "--replicas=3"]).await;
    assert!(out.contains("scaled"), "{out}");
    let out = k
        .ok(&["rollout", "status", "deploy/mongo", "--timeout=20s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = k.ok(&["get", "pods", "-A", "-o", "wide"]).await;
    let header: Vec<&str> = pods.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        &header[..8],
        [
            "NAMESPACE",
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE"
        ]
    );
    let rows: Vec<Vec<&str>> = pods
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{pods}");
    for r in &rows {
        assert_eq!(r[3], "Running", "{pods}");
        assert_ne!(r[7], "k8s-master", "{pods}");
        assert!(r[6].starts_with("10.244."), "{pods}");
    }
    let nodes: std::collections::BTreeSet<&str> = rows.iter().map(|r| r[7]).collect();
    assert_eq!(nodes.len(), 2, "spread over both workers: {pods}");
    let out = k.ok(&["get", "deploy,svc"]).await;
    assert!(
        out.lines()
            .any(|l| l.starts_with("deployment.apps/mongo") && l.contains("3/3")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("service/mongo")
            && l.contains("ClusterIP")
            && l.contains("27017/TCP")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_is_idempotent_and_reports_conflicts_with_scale() {
    need_kubectl!();
    let c = cluster(0.02, 2, true);
    let k = Kubectl::new(&c).await;
    let f = k.file("app.yaml", APP);
    let out = k.ok(&["apply", "--server-side", "-f", &f]).await;
    assert!(
        out.contains("deployment.apps/mongo serverside-applied"),
        "{out}"
    );
    k.ok(&["apply", "--server-side", "-f", &f]).await;
    k.ok(&["scale", "deploy/mongo", "--replicas=2"]).await;
    let (ok, _, err) = k.run(&["apply", "--server-side", "-f", &f]).await;
    assert!(!ok);
    assert!(
        err.contains("conflict with \"kubectl\"") && err.contains(".spec.replicas"),
        "{err}"
    );
    let out = k
        .ok(&["apply", "--server-side", "--force-conflicts", "-f", &f])
        .await;
    assert!(out.contains("serverside-applied"), "{out}");
    let r = k
        .ok(&["get", "deploy/mongo", "-o", "jsonpath={.spec.replicas}"])
        .await;
    assert_eq!(r, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_pod_is_replaced_and_watch_sees_it() {
    need_kubectl!();
    let c = cluster(0.02, 2, true);
    let k = Kubectl::new(&c).await;
    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=mongo:4.4",
        "--replicas=2",
    ])
    .await;
    k.ok(&["rollout", "status", "deploy/web", "--timeout=20s"])
        .await;
    let names = k.ok(&["get", "pods", "-o", "name"]).await;
    let victim = names.lines().next().unwrap().to_string();
    let watch = tokio::process::Command::new("kubectl")
        .env("HOME", k.home.path())
        .arg("--kubeconfig")
        .arg(&k.kubeconfig)
        .args(["get", "pod", "-w", "--request-timeout=0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl get -w");
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let out = k.ok(&["delete", &victim]).await;
    assert!(out.contains("deleted"), "{out}");
    let out = eventually(15, "a replacement Running pod", async || {
        let out = k.ok(&["get", "pods", "--no-headers"]).await;
        let running = out.lines().filter(|l| l.contains(" Running ")).count();
        (running == 2 && !out.contains(victim.trim_start_matches("pod/"))).then_some(out)
    })
    .await;
    assert_eq!(out.lines().count(), 2, "{out}");
    let mut watch = watch;
    let _ = watch.start_kill();
    let seen = watch.wait_with_output().await.expect("watch output");
    let seen = String::from_utf8_lossy(&seen.stdout);
    assert!(
        seen.contains("Terminating"),
        "watch saw no Terminating:\n{seen}"
    );
    assert!(seen.lines().count() >= 5, "watch saw few changes:\n{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_runs_a_json_kubectl_even_when_the_server_reports_a_newer_version() {
    need_kubectl!();
    common::simkube_crypto();
    let c = simkube::SimCluster::new(simkube::SimOptions {
        version: (1, 35),
        ..simkube::SimOptions::fast(0.02)
    })
    .unwrap();
    let k = Kubectl::new(&c).await;
    let (_, out, _) = k.run(&["version"]).await;
    assert!(out.contains("Client Version: v1.31"), "{out}");
    assert!(out.contains("Server Version: v1.35.0"), "{out}");
    let out = k.ok(&["create", "namespace", "shop"]).await;
    assert!(out.contains("namespace/shop created"), "{out}");
    let out = k
        .ok(&[
            "create",
            "configmap",
            "x",
            "-n",
            "shop",
            "--from-literal=a=b",
        ])
        .await;
    assert!(out.contains("configmap/x created"), "{out}");
}
