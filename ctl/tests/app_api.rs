//! The exact Kubernetes API calls of `ctl deploy`, `ctl scale` and the manifest applier,
//! checked with a `tower-test` mock API server (ApiServerVerifier style): every request's verb,
//! path, query and body is asserted and answered with realistic JSON.

use std::path::Path;
use std::time::Duration;

use cluster_common::manifest::{self, Applier, ManifestError, Outcome};
use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// The mock API server: hands out requests one by one, in order.
struct Verifier(Handle);

/// One request received.
struct Call {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
    send: tower_test::mock::SendResponse<Response<Body>>,
}

impl Call {
    fn reply(self, status: u16, body: Value) {
        let bytes = serde_json::to_vec(&body).unwrap();
        self.send.send_response(
            Response::builder()
                .status(StatusCode::from_u16(status).unwrap())
                .header("content-type", "application/json")
                .body(Body::from(bytes))
                .unwrap(),
        );
    }
    fn reply_raw(self, text: String) {
        self.send.send_response(
            Response::builder()
                .body(Body::from(text.into_bytes()))
                .unwrap(),
        );
    }
    fn query_has(&self, pair: &str) -> bool {
        self.query.split('&').any(|p| p == pair)
    }
}

impl Verifier {
    fn new() -> (Client, Verifier) {
        let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(svc, "default"), Verifier(handle))
    }

    async fn next(&mut self) -> Call {
        let (req, send) = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .expect("no request within 5 s")
            .expect("client dropped");
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let content_type = req
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Call {
            method,
            path,
            query,
            content_type,
            body,
            send,
        }
    }

    /// Next request must be `method path`; returns it for more checks and the reply.
    async fn expect(&mut self, method: Method, path: &str) -> Call {
        let c = self.next().await;
        assert_eq!(
            (&c.method, c.path.as_str()),
            (&method, path),
            "query: {}",
            c.query
        );
        c
    }

    /// No further request arrives (within 200 ms).
    async fn expect_silence(&mut self) {
        if let Ok(Some((req, _))) =
            tokio::time::timeout(Duration::from_millis(200), self.0.next_request()).await
        {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
    }
}

fn not_found(kind: &str, name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("{kind} \"{name}\" not found"), "reason": "NotFound",
           "details": {"name": name, "kind": kind}, "code": 404})
}

fn core_v1_resources() -> Value {
    json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace", "verbs": ["create","delete","get","list","patch","update","watch"]},
        {"name": "services", "singularName": "service", "namespaced": true, "kind": "Service", "verbs": ["create","delete","get","list","patch","update","watch"]},
        {"name": "configmaps", "singularName": "configmap", "namespaced": true, "kind": "ConfigMap", "verbs": ["create","delete","get","list","patch","update","watch"]}
    ]})
}

fn apps_v1_resources() -> Value {
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1", "resources": [
        {"name": "deployments", "singularName": "deployment", "namespaced": true, "kind": "Deployment", "verbs": ["create","delete","get","list","patch","update","watch"]},
        {"name": "deployments/scale", "singularName": "", "namespaced": true, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get","patch","update"]},
        {"name": "deployments/status", "singularName": "", "namespaced": true, "kind": "Deployment", "verbs": ["get","patch","update"]}
    ]})
}

fn deployment(name: &str, generation: i64, status: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": "default", "generation": generation,
                        "resourceVersion": format!("{}", 100 + generation), "uid": "u1"},
           "spec": {"replicas": status["want"].as_i64().unwrap_or(1),
                    "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                    "template": {"metadata": {"labels": {"app.kubernetes.io/name": name}},
                                 "spec": {"containers": [{"name": name, "image": "i"}]}}},
           "status": status})
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": api_version, "kind": format!("{kind}List"),
           "metadata": {"resourceVersion": "500"}, "items": items})
}

#[tokio::test]
async fn apply_discovers_then_gets_then_server_side_applies_with_our_field_manager() {
    let (client, mut api) = Verifier::new();
    let ms = manifest::parse_str(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: mongo\nspec:\n  ports:\n  - port: 27017\n",
        Path::new("mongo-srv.yaml"),
    )
    .unwrap();
    let task = tokio::spawn(async move {
        Applier::new(client, "ctl")
            .default_namespace("chat")
            .apply_all(ms)
            .await
    });
    api.expect(Method::GET, "/api/v1")
        .await
        .reply(200, core_v1_resources());
    api.expect(Method::GET, "/api/v1/namespaces/chat/services/mongo")
        .await
        .reply(404, not_found("services", "mongo"));
    let patch = api
        .expect(Method::PATCH, "/api/v1/namespaces/chat/services/mongo")
        .await;
    // kube-rs builds queries as `path?&k=v`.
    assert_eq!(patch.query, "&fieldManager=ctl");
    assert_eq!(patch.content_type, "application/apply-patch+yaml");
    assert_eq!(
        patch.body,
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "mongo", "namespace": "chat"},
               "spec": {"ports": [{"port": 27017}]}})
    );
    let mut created = patch.body.clone();
    created["metadata"]["resourceVersion"] = json!("7");
    patch.reply(201, created);
    let applied = task.await.unwrap().unwrap();
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].outcome, Outcome::Created);
    assert_eq!(applied[0].to_string(), "service/mongo (chat) created");
    api.expect_silence().await;
}

#[tokio::test]
async fn reapplying_an_identical_object_reports_unchanged_and_force_sets_force_true() {
    let (client, mut api) = Verifier::new();
    let ms = manifest::parse_str(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: x}\ndata: {k: v}\n",
        Path::new("cm.yaml"),
    )
    .unwrap();
    let task = tokio::spawn(async move {
        Applier::new(client, "ctl")
            .force_conflicts(true)
            .apply_all(ms)
            .await
    });
    api.expect(Method::GET, "/api/v1")
        .await
        .reply(200, core_v1_resources());
    let existing = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "a", "namespace": "x", "resourceVersion": "42"}, "data": {"k": "v"}});
    api.expect(Method::GET, "/api/v1/namespaces/x/configmaps/a")
        .await
        .reply(200, existing.clone());
    let patch = api
        .expect(Method::PATCH, "/api/v1/namespaces/x/configmaps/a")
        .await;
    assert!(patch.query_has("fieldManager=ctl"), "{}", patch.query);
    assert!(patch.query_has("force=true"), "{}", patch.query);
    patch.reply(200, existing);
    let applied = task.await.unwrap().unwrap();
    assert_eq!(applied[0].outcome, Outcome::Unchanged);
}

#[tokio::test]
async fn a_field_owned_by_another_manager_is_explained_with_the_force_hint() {
    let (client, mut api) = Verifier::new();
    let ms = manifest::parse_str(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: letschat}\nspec: {replicas: 1}\n",
        Path::new("letschat-deployment.yaml"),
    )
    .unwrap();
    let task = tokio::spawn(async move { Applier::new(client, "ctl").apply_all(ms).await });
    api.expect(Method::GET, "/apis/apps/v1")
        .await
        .reply(200, apps_v1_resources());
    api.expect(
        Method::GET,
        "/apis/apps/v1/namespaces/default/deployments/letschat",
    )
    .await
    .reply(200, deployment("letschat", 2, json!({})));
    api.expect(Method::PATCH, "/apis/apps/v1/namespaces/default/deployments/letschat")
        .await
        .reply(
            409,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
                   "message": "Apply failed with 1 conflict: conflict with \"ctl-scale\" using apps/v1: .spec.replicas",
                   "details": {"causes": [{"reason": "FieldManagerConflict",
                       "message": "conflict with \"ctl-scale\" using apps/v1", "field": ".spec.replicas"}]}}),
        );
    let err = task.await.unwrap().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ManifestError::Conflict(_)), "{err:?}");
    assert!(msg.starts_with("letschat-deployment.yaml:1: applying Deployment/default/letschat as field manager \"ctl\""), "{msg}");
    assert!(
        msg.contains(".spec.replicas is owned by \"ctl-scale\""),
        "{msg}"
    );
    assert!(msg.contains("--force-conflicts"), "{msg}");
}

#[tokio::test]
async fn an_unknown_kind_fails_before_anything_is_applied() {
    let (client, mut api) = Verifier::new();
    let ms = manifest::parse_str(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: apps/v1\nkind: Deploymnet\nmetadata: {name: typo}\n",
        Path::new("two.yaml"),
    )
    .unwrap();
    let task = tokio::spawn(async move { Applier::new(client, "ctl").apply_all(ms).await });
    api.expect(Method::GET, "/api/v1")
        .await
        .reply(200, core_v1_resources());
    api.expect(Method::GET, "/apis/apps/v1")
        .await
        .reply(200, apps_v1_resources());
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(
        err.to_string(),
        "two.yaml:5: the API server has no kind Deploymnet in apps/v1 (and no CustomResourceDefinition in these manifests defines it)"
    );
    api.expect_silence().await;
}

#[tokio::test]
async fn scale_patches_the_scale_subresource_then_follows_the_rollout_on_a_watch() {
    let (client, mut api) = Verifier::new();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        let r = ctl::scale::scale(
            &client,
            "default",
            "letschat",
            3,
            Duration::from_secs(10),
            &mut |m: &str| seen.push(m.to_string()),
        )
        .await;
        (r, seen)
    });
    let done1 = json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
        "readyReplicas": 1, "availableReplicas": 1,
        "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]});
    api.expect(
        Method::GET,
        "/apis/apps/v1/namespaces/default/deployments/letschat",
    )
    .await
    .reply(200, deployment("letschat", 1, done1.clone()));
    let patch = api
        .expect(
            Method::PATCH,
            "/apis/apps/v1/namespaces/default/deployments/letschat/scale",
        )
        .await;
    assert_eq!(patch.query, "&fieldManager=ctl-scale");
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(patch.body, json!({"spec": {"replicas": 3}}));
    patch.reply(
        200,
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
               "metadata": {"name": "letschat", "namespace": "default", "resourceVersion": "102"},
               "spec": {"replicas": 3}, "status": {"replicas": 1, "selector": "app.kubernetes.io/name=letschat"}}),
    );
    // The watcher lists this one Deployment: generation 2 not yet observed (the status still
    // says NewReplicaSetAvailable, which is_deployment_completed would take as done).
    let lst = api
        .expect(Method::GET, "/apis/apps/v1/namespaces/default/deployments")
        .await;
    assert!(
        lst.query_has("fieldSelector=metadata.name%3Dletschat"),
        "{}",
        lst.query
    );
    let mut stale = deployment("letschat", 2, done1);
    stale["spec"]["replicas"] = json!(3);
    lst.reply(200, list("Deployment", "apps/v1", vec![stale]));
    let watch = api
        .expect(Method::GET, "/apis/apps/v1/namespaces/default/deployments")
        .await;
    assert!(watch.query_has("watch=true"), "{}", watch.query);
    assert!(watch.query_has("resourceVersion=500"), "{}", watch.query);
    let mut partly = deployment(
        "letschat",
        2,
        json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}),
    );
    partly["spec"]["replicas"] = json!(3);
    let mut done = deployment(
        "letschat",
        2,
        json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}),
    );
    done["spec"]["replicas"] = json!(3);
    watch.reply_raw(format!(
        "{}\n{}\n",
        json!({"type": "MODIFIED", "object": partly}),
        json!({"type": "MODIFIED", "object": done})
    ));
    let pods = api
        .expect(Method::GET, "/api/v1/namespaces/default/pods")
        .await;
    assert_eq!(
        pods.query,
        "&labelSelector=app.kubernetes.io%2Fname%3Dletschat"
    );
    let pod = |name: &str, created: &str, node: &str| {
        json!({"metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
               "spec": {"containers": [{"name": "letschat"}], "nodeName": node},
               "status": {"phase": "Running", "podIP": "10.244.1.2",
                          "containerStatuses": [{"name": "letschat", "ready": true, "restartCount": 0,
                              "image": "i", "imageID": "", "state": {"running": {}}}]}})
    };
    pods.reply(
        200,
        list(
            "Pod",
            "v1",
            vec![
                pod("letschat-b", "2026-01-01T10:05:00Z", "node-2"),
                pod("letschat-a", "2026-01-01T10:00:00Z", "node-1"),
            ],
        ),
    );
    let (r, seen) = task.await.unwrap();
    let scaled = r.unwrap();
    assert_eq!(
        scaled
            .pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect::<Vec<_>>(),
        ["letschat-a", "letschat-b"],
        "oldest first"
    );
    assert!(
        seen.iter()
            .any(|m| m == "2 of 3 replicas of \"letschat\" available"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn scaling_an_unknown_deployment_names_it_lists_the_others_and_changes_nothing() {
    let (client, mut api) = Verifier::new();
    let task = tokio::spawn(async move {
        ctl::scale::scale(
            &client,
            "default",
            "letchat",
            3,
            Duration::from_secs(5),
            &mut |_: &str| {},
        )
        .await
    });
    api.expect(
        Method::GET,
        "/apis/apps/v1/namespaces/default/deployments/letchat",
    )
    .await
    .reply(404, not_found("deployments.apps", "letchat"));
    api.expect(Method::GET, "/apis/apps/v1/namespaces/default/deployments")
        .await
        .reply(
            200,
            list(
                "Deployment",
                "apps/v1",
                vec![
                    deployment("letschat", 1, json!({})),
                    deployment("mongo", 1, json!({})),
                ],
            ),
        );
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(
        err.to_string(),
        "Deployment \"letchat\" not found in namespace \"default\"; existing Deployments: letschat, mongo"
    );
    api.expect_silence().await;
}

#[tokio::test]
async fn a_progress_deadline_exceeded_rollout_fails_the_wait() {
    let (client, mut api) = Verifier::new();
    let task = tokio::spawn(async move {
        let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
            kube::Api::namespaced(client, "default");
        ctl::kube::wait_rollout(&deployments, "letschat", Duration::from_secs(5), |_| {}).await
    });
    api.expect(Method::GET, "/apis/apps/v1/namespaces/default/deployments")
        .await
        .reply(
            200,
            list(
                "Deployment",
                "apps/v1",
                vec![deployment(
                    "letschat",
                    1,
                    json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                           "conditions": [{"type": "Progressing", "status": "False",
                               "reason": "ProgressDeadlineExceeded",
                               "message": "ReplicaSet \"letschat-1\" has timed out progressing."}]}),
                )],
            ),
        );
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"letschat\" exceeded its progress deadline: ReplicaSet \"letschat-1\" has timed out progressing."
    );
}

#[tokio::test]
async fn commands_before_bootstrap_say_to_run_bootstrap_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.yaml");
    std::fs::write(
        &path,
        "master: {name: k8s-master, ip: 192.168.50.10}\nnodes:\n  - {name: node-1, ip: 192.168.50.11}\npodCIDR: 10.244.0.0/16\n",
    )
    .unwrap();
    let config = cluster_common::ClusterConfig::load(&path).unwrap();
    let Err(err) = ctl::kube::client(&config).await else {
        panic!("a client without a kubeconfig");
    };
    assert_eq!(
        err.to_string(),
        format!(
            "no admin kubeconfig at {}: run `ctl bootstrap` first",
            dir.path().join("admin.kubeconfig").display()
        )
    );
}

#[tokio::test]
async fn a_crd_is_applied_first_waited_for_established_then_its_custom_resource_resolves() {
    let (client, mut api) = Verifier::new();
    // The custom resource comes first in the file: ordering moves the CRD before it.
    let ms = manifest::parse_str(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n---\n\
         apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\n\
         spec:\n  group: example.com\n  scope: Cluster\n  names: {kind: Widget, plural: widgets}\n  versions:\n  - {name: v1, served: true, storage: true}\n",
        Path::new("crd.yaml"),
    )
    .unwrap();
    let task = tokio::spawn(async move {
        Applier::new(client, "ctl")
            .crd_timeout(Duration::from_secs(5))
            .apply_all(ms)
            .await
    });
    let crd_resources = json!({"kind": "APIResourceList", "groupVersion": "apiextensions.k8s.io/v1", "resources": [
        {"name": "customresourcedefinitions", "singularName": "customresourcedefinition", "namespaced": false,
         "kind": "CustomResourceDefinition", "verbs": ["create","get","list","patch","watch"]}]});
    api.expect(Method::GET, "/apis/apiextensions.k8s.io/v1")
        .await
        .reply(200, crd_resources);
    api.expect(Method::GET, "/apis/example.com/v1")
        .await
        .reply(404, not_found("", "example.com/v1"));
    api.expect(
        Method::GET,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
    )
    .await
    .reply(
        404,
        not_found("customresourcedefinitions", "widgets.example.com"),
    );
    let patch = api
        .expect(
            Method::PATCH,
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
        )
        .await;
    let mut crd = patch.body.clone();
    crd["metadata"]["resourceVersion"] = json!("1");
    patch.reply(201, crd.clone());
    let watch_list = api
        .expect(
            Method::GET,
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        )
        .await;
    assert!(
        watch_list.query_has("fieldSelector=metadata.name%3Dwidgets.example.com"),
        "{}",
        watch_list.query
    );
    crd["status"] = json!({"conditions": [{"type": "Established", "status": "True"}]});
    watch_list.reply(
        200,
        list(
            "CustomResourceDefinition",
            "apiextensions.k8s.io/v1",
            vec![crd],
        ),
    );
    // Discovery again: the group is served now.
    api.expect(Method::GET, "/apis/example.com/v1").await.reply(
        200,
        json!({"kind": "APIResourceList", "groupVersion": "example.com/v1", "resources": [
            {"name": "widgets", "singularName": "widget", "namespaced": false, "kind": "Widget",
             "verbs": ["create","get","list","patch","watch"]}]}),
    );
    api.expect(Method::GET, "/apis/example.com/v1/widgets/w")
        .await
        .reply(404, not_found("widgets", "w"));
    let patch = api
        .expect(Method::PATCH, "/apis/example.com/v1/widgets/w")
        .await;
    assert_eq!(
        patch.body,
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    );
    let mut w = patch.body.clone();
    w["metadata"]["resourceVersion"] = json!("2");
    patch.reply(201, w);
    let applied = task.await.unwrap().unwrap();
    assert_eq!(
        applied.iter().map(|a| a.kind.as_str()).collect::<Vec<_>>(),
        ["CustomResourceDefinition", "Widget"]
    );
}
