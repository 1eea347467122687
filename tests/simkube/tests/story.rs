//! The seed's story, replayed on the simulated cluster: nodes NotReady until a CNI (simulated
//! Calico through its operator) exists, Let's Chat created before MongoDB crash-loops and
//! recovers once MongoDB is ready, 3 replicas spread over the workers and none on the master,
//! and scaling 3 → 1 keeps the oldest pod.

mod common;
use common::{cluster, eventually};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

fn fixture(name: &str) -> Vec<Value> {
    let path = format!("{}/fixtures/calico/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn app(name: &str, image: &str, port: i32, svc_type: &str) -> (Value, Value) {
    (
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": name, "image": image, "ports": [{"containerPort": port}]}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": svc_type, "selector": {"app": name}, "ports": [{"port": port}]}}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_story_replays() {
    let c = cluster(0.02, 2, false);
    let installed = Arc::new(Mutex::new(Vec::<String>::new()));
    let i2 = installed.clone();
    c.on_cni_installed(move |n| i2.lock().unwrap().push(n.to_string()));
    let client = c.kube_client();
    let nodes: Api<Node> = Api::all(client.clone());

    // nodes register NotReady: no CNI yet
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let list = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 3);
    assert!(
        list.items.iter().all(|n| !ready(n)),
        "no node is Ready without a CNI"
    );

    // a pod pinned to a node without CNI does not start (unless it uses the host network)
    let pods_all: Api<Pod> = Api::default_namespaced(client.clone());
    let pinned: Pod = serde_json::from_value(json!({"metadata": {"name": "pinned"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "mongo:4.4"}]}}))
    .unwrap();
    pods_all.create(&Default::default(), &pinned).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let p = pods_all.get("pinned").await.unwrap();
    let st = p.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Pending"));
    let waiting = st.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("ContainerCreating"));

    // Calico through its operator
    for f in [
        "operator-crds.yaml",
        "tigera-operator.yaml",
        "custom-resources.yaml",
    ] {
        for obj in fixture(f) {
            c.apply_object(obj).expect("apply calico fixture");
        }
    }
    eventually(20, "all nodes Ready after Calico", async || {
        let l = nodes.list(&ListParams::default()).await.ok()?;
        l.items.iter().all(ready).then_some(())
    })
    .await;
    let mut hooked = installed.lock().unwrap().clone();
    hooked.sort();
    assert_eq!(
        hooked,
        ["k8s-master", "node-1", "node-2"],
        "CNI hook ran per node"
    );

    // Let's Chat before MongoDB: crash loop
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pp = PatchParams::apply("story");
    let (lc, lc_svc) = app("letschat", "sdelements/lets-chat", 8080, "NodePort");
    c.apply_object(lc).unwrap();
    c.apply_object(lc_svc).unwrap();
    let crashing = eventually(20, "Let's Chat crash-looping", async || {
        let l = pods
            .list(&ListParams::default().labels("app=letschat"))
            .await
            .ok()?;
        let p = l.items.into_iter().next()?;
        let cs = p
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .clone();
        let waiting = cs.state.as_ref()?.waiting.as_ref()?.reason.clone()?;
        (cs.restart_count >= 1 && waiting == "CrashLoopBackOff").then_some(p)
    })
    .await;
    let oldest = crashing.metadata.name.clone().unwrap();
    let log = pods.logs(&oldest, &Default::default()).await.unwrap();
    assert!(log.contains("Could not connect to database"), "{log}");
    // the pinned pod started once its node had a CNI
    assert_eq!(
        pods_all
            .get("pinned")
            .await
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Running")
    );
    pods_all
        .delete("pinned", &Default::default())
        .await
        .unwrap();

    // MongoDB comes up; Let's Chat recovers
    let (mongo, mongo_svc) = app("mongo", "mongo:4.4", 27017, "ClusterIP");
    c.apply_object(mongo).unwrap();
    c.apply_object(mongo_svc).unwrap();
    eventually(30, "Let's Chat Ready after MongoDB", async || {
        let p = pods.get(&oldest).await.ok()?;
        pod_ready(&p).then_some(())
    })
    .await;
    // ready times must differ from the new replicas' (second resolution)
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    // 3 replicas, spread over the workers, none on the master
    deploys
        .patch_scale(
            "letschat",
            &pp,
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    let spread = eventually(20, "3 ready Let's Chat replicas", async || {
        let l = pods
            .list(&ListParams::default().labels("app=letschat"))
            .await
            .ok()?;
        let ready: Vec<String> = l
            .items
            .iter()
            .filter(|p| pod_ready(p) && p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        (ready.len() == 3).then_some(ready)
    })
    .await;
    assert!(!spread.iter().any(|n| n == "k8s-master"), "{spread:?}");
    assert!(
        spread.contains(&"node-1".to_string()) && spread.contains(&"node-2".to_string()),
        "{spread:?}"
    );

    // 3 → 1 keeps the oldest
    deploys
        .patch_scale(
            "letschat",
            &pp,
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    let left = eventually(20, "one Let's Chat pod left", async || {
        let l = pods
            .list(&ListParams::default().labels("app=letschat"))
            .await
            .ok()?;
        (l.items.len() == 1).then(|| l.items[0].metadata.name.clone().unwrap())
    })
    .await;
    assert_eq!(left, oldest, "scaling down kept the oldest pod");
}

#[tokio::test]
async fn node_goes_unknown_when_its_kubelet_stops_and_ready_when_it_returns() {
    let c = cluster(0.02, 1, true);
    let nodes: Api<Node> = Api::all(c.kube_client());
    eventually(10, "node-1 Ready", async || {
        ready(&nodes.get("node-1").await.ok()?).then_some(())
    })
    .await;
    c.stop_kubelet("node-1");
    let n = eventually(10, "node-1 Unknown", async || {
        let n = nodes.get("node-1").await.ok()?;
        let c = n
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Ready")?
            .clone();
        (c.status == "Unknown").then_some(n)
    })
    .await;
    let taints = n.spec.unwrap().taints.unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoSchedule"),
        "{taints:?}"
    );
    c.start_kubelet("node-1");
    eventually(10, "node-1 Ready again", async || {
        ready(&nodes.get("node-1").await.ok()?).then_some(())
    })
    .await;
}

#[tokio::test]
async fn unknown_image_fails_with_err_image_pull() {
    let c = cluster(0.02, 1, true);
    let pods: Api<Pod> = Api::default_namespaced(c.kube_client());
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "x"},
        "spec": {"containers": [{"name": "x", "image": "example.invalid/nothing:1"}]}}))
    .unwrap();
    pods.create(&Default::default(), &p).await.unwrap();
    eventually(10, "ErrImagePull", async || {
        let p = pods.get("x").await.ok()?;
        let w = p
            .status?
            .container_statuses?
            .first()?
            .state
            .clone()?
            .waiting?
            .reason?;
        (w == "ErrImagePull" || w == "ImagePullBackOff").then_some(())
    })
    .await;
}
