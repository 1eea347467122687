//! Controller behaviour through kube-rs: rolling updates, garbage collection, DaemonSets,
//! Services (ClusterIP, NodePort, Endpoints), selectors, graceful pod deletion, victim order.

mod common;
use common::{cluster, eventually};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

fn deployment(name: &str, replicas: i32, image: &str) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image, "ports": [{"name": "web", "containerPort": 8080}]}]}}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_replaces_every_pod_and_records_revisions() {
    let c = cluster(0.02, 2, true);
    let client = c.kube_client();
    let d: Api<Deployment> = Api::default_namespaced(client.clone());
    let rs: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let pp = PatchParams::apply("t");
    d.patch("web", &pp, &Patch::Apply(deployment("web", 4, "mongo:4.4")))
        .await
        .unwrap();
    eventually(20, "4 available", async || {
        (d.get("web").await.ok()?.status?.available_replicas == Some(4)).then_some(())
    })
    .await;
    d.patch(
        "web",
        &pp,
        &Patch::Apply(deployment("web", 4, "nginx:1.27")),
    )
    .await
    .unwrap();
    let done = eventually(20, "rollout complete", async || {
        let dd = d.get("web").await.ok()?;
        let s = dd.status.clone()?;
        (s.observed_generation == dd.metadata.generation
            && s.updated_replicas == Some(4)
            && s.replicas == Some(4)
            && s.available_replicas == Some(4))
        .then_some(dd)
    })
    .await;
    assert_eq!(
        done.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"],
        "2"
    );
    let sets = rs
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    assert_eq!(sets.len(), 2);
    let old = sets
        .iter()
        .find(|r| r.spec.as_ref().unwrap().replicas == Some(0))
        .expect("old RS scaled to 0");
    assert_eq!(
        old.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
        "1"
    );
    let pods: Api<Pod> = Api::default_namespaced(client);
    eventually(20, "only new pods", async || {
        let l = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        (l.items.len() == 4
            && l.items.iter().all(|p| {
                p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("nginx:1.27")
            }))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_deployment_collects_its_replicasets_and_pods() {
    let c = cluster(0.02, 1, true);
    let client = c.kube_client();
    let d: Api<Deployment> = Api::default_namespaced(client.clone());
    d.patch(
        "web",
        &PatchParams::apply("t"),
        &Patch::Apply(deployment("web", 2, "mongo:4.4")),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    eventually(20, "2 pods", async || {
        (pods.list(&Default::default()).await.ok()?.items.len() == 2).then_some(())
    })
    .await;
    d.delete("web", &DeleteParams::default()).await.unwrap();
    let rs: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    eventually(20, "everything gone", async || {
        (rs.list(&Default::default()).await.ok()?.items.is_empty()
            && pods.list(&Default::default()).await.ok()?.items.is_empty())
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_runs_one_pod_per_schedulable_node() {
    let c = cluster(0.02, 2, true);
    let ds: Api<DaemonSet> = Api::default_namespaced(c.kube_client());
    let obj = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "a", "image": "busybox:1.36"}]}}}});
    ds.patch("agent", &PatchParams::apply("t"), &Patch::Apply(obj))
        .await
        .unwrap();
    eventually(20, "2 ready (not on the tainted master)", async || {
        let s = ds.get("agent").await.ok()?.status?;
        (s.desired_number_scheduled == 2 && s.number_ready == 2).then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::default_namespaced(c.kube_client());
    let on_master = pods
        .list(&ListParams::default().fields("spec.nodeName=k8s-master"))
        .await
        .unwrap();
    assert!(on_master.items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_cluster_ips_node_ports_and_ready_endpoints() {
    let c = cluster(0.02, 2, true);
    let client = c.kube_client();
    let d: Api<Deployment> = Api::default_namespaced(client.clone());
    d.patch(
        "web",
        &PatchParams::apply("t"),
        &Patch::Apply(deployment("web", 2, "mongo:4.4")),
    )
    .await
    .unwrap();
    let svcs: Api<Service> = Api::default_namespaced(client.clone());
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "web"}]}});
    let s = svcs
        .patch("web", &PatchParams::apply("t"), &Patch::Apply(svc.clone()))
        .await
        .unwrap();
    let spec = s.spec.unwrap();
    let ip: std::net::Ipv4Addr = spec.cluster_ip.unwrap().parse().unwrap();
    assert!(
        "10.96.0.0/12"
            .parse::<ipnet::Ipv4Net>()
            .unwrap()
            .contains(&ip)
    );
    let np = spec.ports.unwrap()[0].node_port.unwrap();
    assert!((30000..=32767).contains(&np));
    // re-apply keeps the allocations
    let s2 = svcs
        .patch("web", &PatchParams::apply("t"), &Patch::Apply(svc))
        .await
        .unwrap();
    assert_eq!(s2.spec.unwrap().ports.unwrap()[0].node_port, Some(np));
    let eps: Api<Endpoints> = Api::default_namespaced(client);
    eventually(20, "2 ready endpoints on the named port", async || {
        let e = eps.get("web").await.ok()?;
        let sub = e.subsets?.into_iter().next()?;
        (sub.addresses?.len() == 2 && sub.ports?[0].port == 8080).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_deletion_is_graceful_then_final() {
    let c = cluster(0.02, 1, true);
    let pods: Api<Pod> = Api::default_namespaced(c.kube_client());
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "mongo:4.4"}]}}))
    .unwrap();
    pods.create(&Default::default(), &p).await.unwrap();
    eventually(20, "running", async || {
        (pods.get("p").await.ok()?.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    let r = pods.delete("p", &DeleteParams::default()).await.unwrap();
    let left = r.left().expect("graceful delete returns the pod");
    assert!(left.metadata.deletion_timestamp.is_some());
    eventually(20, "pod gone", async || {
        pods.get_opt("p").await.ok()?.is_none().then_some(())
    })
    .await;
}

#[test]
fn victim_order_deletes_unready_and_newer_pods_first() {
    use simkube::controllers::victim_order;
    let pod = |name: &str, node: Option<&str>, ready: bool, created: &str, ready_at: &str| {
        json!({"metadata": {"name": name, "creationTimestamp": created, "uid": name},
            "spec": {"nodeName": node},
            "status": {"phase": if node.is_some() { "Running" } else { "Pending" },
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": ready_at}]}})
    };
    let mut pods = [
        pod(
            "old",
            Some("n1"),
            true,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:10Z",
        ),
        pod(
            "newer",
            Some("n2"),
            true,
            "2026-01-01T00:01:00Z",
            "2026-01-01T00:01:10Z",
        ),
        pod(
            "unready",
            Some("n1"),
            false,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
        ),
        pod(
            "unscheduled",
            None,
            false,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
        ),
    ];
    pods.sort_by(victim_order);
    let names: Vec<&str> = pods
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["unscheduled", "unready", "newer", "old"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_removed_node_are_collected_and_expired_tokens_cleaned() {
    let c = cluster(0.02, 2, true);
    let client = c.kube_client();
    let d: Api<Deployment> = Api::default_namespaced(client.clone());
    d.patch(
        "web",
        &PatchParams::apply("t"),
        &Patch::Apply(deployment("web", 2, "mongo:4.4")),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let on_node2 = ListParams::default().fields("spec.nodeName=node-2");
    eventually(20, "a pod on node-2", async || {
        (!pods.list(&on_node2).await.ok()?.items.is_empty()).then_some(())
    })
    .await;
    c.deregister_node("node-2");
    eventually(20, "2 pods, all on node-1", async || {
        let l = pods.list(&Default::default()).await.ok()?;
        (l.items.len() == 2
            && l.items
                .iter()
                .all(|p| p.spec.as_ref().unwrap().node_name.as_deref() == Some("node-1")))
        .then_some(())
    })
    .await;
    c.apply_object(json!({"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
        "stringData": {"token-id": "abcdef", "token-secret": "0123456789abcdef", "expiration": "2001-01-01T00:00:00Z"}}))
        .unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client, "kube-system");
    eventually(10, "expired token Secret deleted", async || {
        secrets
            .get_opt("bootstrap-token-abcdef")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}
