//! kube-rs against the in-process cluster: server-side apply, the scale subresource, watchers
//! through a forced 410 Gone, and await_condition.

mod common;
use common::{cluster, eventually};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

fn deployment(name: &str, replicas: i32) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "mongo:4.4"}]}}}})
}

#[tokio::test]
async fn apply_creates_then_conflicts_with_another_manager_unless_forced() {
    let c = cluster(0.02, 2, true);
    let api: Api<Deployment> = Api::default_namespaced(c.kube_client());
    let d = api
        .patch(
            "web",
            &PatchParams::apply("ctl"),
            &Patch::Apply(deployment("web", 1)),
        )
        .await
        .expect("apply creates");
    assert_eq!(d.spec.unwrap().replicas, Some(1));
    let mf = d.metadata.managed_fields.unwrap();
    assert!(mf.iter().any(|m| m.manager.as_deref() == Some("ctl") && m.operation.as_deref() == Some("Apply")));
    // same manager again: no conflict
    api.patch(
        "web",
        &PatchParams::apply("ctl"),
        &Patch::Apply(deployment("web", 2)),
    )
    .await
    .expect("re-apply by the owner");
    let err = api
        .patch(
            "web",
            &PatchParams::apply("other"),
            &Patch::Apply(deployment("web", 5)),
        )
        .await
        .expect_err("conflict");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert!(s.message.contains("conflict with \"ctl\""), "{}", s.message);
            assert!(s.message.contains(".spec.replicas"), "{}", s.message);
        }
        e => panic!("unexpected {e}"),
    }
    let d = api
        .patch(
            "web",
            &PatchParams::apply("other").force(),
            &Patch::Apply(deployment("web", 5)),
        )
        .await
        .expect("forced apply");
    assert_eq!(d.spec.unwrap().replicas, Some(5));
}

#[tokio::test]
async fn scale_subresource_reads_and_patches_replicas() {
    let c = cluster(0.02, 2, true);
    let api: Api<Deployment> = Api::default_namespaced(c.kube_client());
    api.patch(
        "web",
        &PatchParams::apply("ctl"),
        &Patch::Apply(deployment("web", 1)),
    )
    .await
    .unwrap();
    let s = api.get_scale("web").await.expect("get_scale");
    assert_eq!(s.spec.unwrap().replicas, Some(1));
    let s = api
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("patch_scale");
    assert_eq!(s.spec.unwrap().replicas, Some(3));
    let d = api.get("web").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(3));
    assert_eq!(d.metadata.generation, Some(2));
    let pods: Api<Pod> = Api::default_namespaced(c.kube_client());
    eventually(10, "3 pods", async || {
        (pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?
            .items
            .len()
            == 3)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn watcher_recovers_from_a_forced_410_and_sees_new_objects() {
    let c = cluster(0.02, 0, true);
    let api: Api<ConfigMap> = Api::default_namespaced(c.kube_client());
    let cm = |n: &str| {
        serde_json::from_value::<ConfigMap>(json!({"metadata": {"name": n}, "data": {"k": "v"}}))
            .unwrap()
    };
    api.create(&Default::default(), &cm("before"))
        .await
        .unwrap();
    let mut stream = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut inits = 0;
    let mut seen_before = false;
    while !(inits >= 1 && seen_before) {
        match stream.next().await.unwrap().unwrap() {
            watcher::Event::Init => inits += 1,
            watcher::Event::InitApply(o) if o.metadata.name.as_deref() == Some("before") => {
                seen_before = true
            }
            _ => {}
        }
    }
    // drain the InitDone
    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), stream.next()).await;
    c.expire_watches();
    api.create(&Default::default(), &cm("after")).await.unwrap();
    let found = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut relisted = false;
        loop {
            match stream.next().await.unwrap() {
                Ok(watcher::Event::Init) => relisted = true,
                Ok(watcher::Event::InitApply(o)) | Ok(watcher::Event::Apply(o))
                    if o.metadata.name.as_deref() == Some("after") =>
                {
                    return relisted;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the watcher saw the new object");
    assert!(found, "the watcher relisted after 410 Gone");
}

#[tokio::test]
async fn await_condition_sees_the_deployment_become_available() {
    let c = cluster(0.02, 2, true);
    let api: Api<Deployment> = Api::default_namespaced(c.kube_client());
    api.patch(
        "web",
        &PatchParams::apply("ctl"),
        &Patch::Apply(deployment("web", 2)),
    )
    .await
    .unwrap();
    let cond = |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref())
            .is_some_and(|s| s.available_replicas == Some(2) && s.updated_replicas == Some(2))
    };
    let d = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        kube::runtime::wait::await_condition(api.clone(), "web", cond),
    )
    .await
    .expect("in time")
    .expect("no watch error")
    .expect("deployment exists");
    let st = d.status.unwrap();
    assert_eq!(st.observed_generation, d.metadata.generation);
    let conds = st.conditions.unwrap();
    let avail = conds.iter().find(|c| c.type_ == "Available").unwrap();
    assert_eq!(avail.status, "True");
    assert_eq!(avail.reason.as_deref(), Some("MinimumReplicasAvailable"));
    let prog = conds.iter().find(|c| c.type_ == "Progressing").unwrap();
    assert_eq!(prog.reason.as_deref(), Some("NewReplicaSetAvailable"));
}

#[tokio::test]
async fn reapplying_the_same_configuration_keeps_the_resource_version() {
    let c = cluster(0.02, 0, true);
    let api: Api<ConfigMap> = Api::default_namespaced(c.kube_client());
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "1"}});
    let first = api
        .patch("x", &PatchParams::apply("ctl"), &Patch::Apply(&cm))
        .await
        .unwrap();
    // managedFields times have second resolution: make sure a second passes
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = api
        .patch("x", &PatchParams::apply("ctl"), &Patch::Apply(&cm))
        .await
        .unwrap();
    assert_eq!(
        first.metadata.resource_version,
        again.metadata.resource_version
    );
}

#[tokio::test]
async fn label_selected_watch_sees_an_object_leave_the_selection_as_deleted() {
    let c = cluster(0.02, 0, true);
    let api: Api<ConfigMap> = Api::default_namespaced(c.kube_client());
    let cm = |n: &str, v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n, "labels": {"tier": v}}});
    api.patch("x", &PatchParams::apply("t"), &Patch::Apply(cm("x", "web")))
        .await
        .unwrap();
    let cfg = watcher::Config::default().labels("tier=web");
    let mut stream = watcher(api.clone(), cfg).default_backoff().boxed();
    loop {
        if let watcher::Event::InitDone = stream.next().await.unwrap().unwrap() {
            break;
        }
    }
    api.patch("x", &PatchParams::apply("t"), &Patch::Apply(cm("x", "db")))
        .await
        .unwrap();
    let ev = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if let watcher::Event::Delete(o) = stream.next().await.unwrap().unwrap() {
                return o;
            }
        }
    })
    .await
    .expect("a Delete event");
    assert_eq!(ev.metadata.labels.unwrap()["tier"], "db");
    // dry-run creates nothing
    let dry = PatchParams {
        dry_run: true,
        ..PatchParams::apply("t")
    };
    api.patch("y", &dry, &Patch::Apply(cm("y", "web")))
        .await
        .unwrap();
    assert!(api.get_opt("y").await.unwrap().is_none());
    // the name in the body must be the one in the URL
    let err = api
        .patch("z", &PatchParams::apply("t"), &Patch::Apply(cm("x", "web")))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 400));
}
