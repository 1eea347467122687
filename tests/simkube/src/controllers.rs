//! Controllers that behave like kube-controller-manager's and kube-scheduler's, run as one
//! reconcile loop over the whole store (woken by every change, and on a tick): Deployment,
//! ReplicaSet, DaemonSet, scheduler, Services' Endpoints, garbage collection by owner
//! references, namespace termination and default ServiceAccounts, node lifecycle, and the
//! bootstrap signer of `kube-public/cluster-info`.

use crate::apiserver::{ApiServer, random_suffix};
use crate::util::{self, LabelSelector, labels, name, namespace, now, parse_time};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Settings of the controllers.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// A node whose kubelet has not posted status for this long becomes Unknown.
    pub node_grace: Duration,
    /// The API server URL written into `cluster-info`.
    pub server_url: String,
    /// The CA certificate PEM written into `cluster-info`.
    pub ca_pem: String,
}

/// One reconcile pass of every controller.
pub fn reconcile(api: &ApiServer, o: &ControllerOptions) {
    namespaces(api);
    deployments(api);
    replicasets(api);
    daemonsets(api);
    node_lifecycle(api, o);
    schedule(api);
    endpoints(api);
    garbage_collect(api);
    pod_gc(api);
    token_cleaner(api);
    bootstrap_signer(api, o);
}

/// The pod GC: pods bound to a node that no longer exists go.
fn pod_gc(api: &ApiServer) {
    let nodes: HashSet<String> = list(api, "nodes")
        .iter()
        .map(|n| name(n).to_string())
        .collect();
    for p in list(api, "pods") {
        if let Some(n) = p["spec"]["nodeName"].as_str()
            && !n.is_empty()
            && !nodes.contains(n)
        {
            api.force_remove("pods", namespace(&p), name(&p));
        }
    }
}

/// The token cleaner: expired bootstrap-token Secrets are deleted.
fn token_cleaner(api: &ApiServer) {
    use base64::Engine;
    for s in api.store.list("secrets", Some("kube-system")).0 {
        if s["type"] != "bootstrap.kubernetes.io/token" {
            continue;
        }
        let expired = s["data"]["expiration"]
            .as_str()
            .and_then(|e| base64::engine::general_purpose::STANDARD.decode(e).ok())
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|e| parse_time(&e))
            .is_some_and(|t| t < SystemTime::now());
        if expired {
            api.force_remove("secrets", "kube-system", name(&s));
        }
    }
}

/// Runs the controllers until `stop`.
pub async fn run(
    api: Arc<ApiServer>,
    o: ControllerOptions,
    tick: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut changed = api.store.changed.subscribe();
    loop {
        // a controller bug must not silently stop every controller: log it and go on
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reconcile(&api, &o))).is_err() {
            tracing::error!("a simulated controller panicked; continuing");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = changed.changed() => {
                // let a burst of changes settle
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

fn list(api: &ApiServer, gr: &str) -> Vec<Arc<Value>> {
    api.store.list(gr, None).0
}

fn put_status(api: &ApiServer, gr: &str, obj: &Value, status: Value) {
    if obj["status"] == status {
        return;
    }
    let mut t = api.store.txn();
    let Some(cur) = t.get(gr, namespace(obj), name(obj)) else {
        return;
    };
    let mut n = (*cur).clone();
    n["status"] = status;
    if *cur != n {
        t.put(gr, namespace(obj), name(obj), n);
    }
}

fn owner_ref(o: &Value, kind: &str, api_version: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name(o),
        "uid": o["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true})
}

fn controlled_by<'a>(objs: &'a [Arc<Value>], owner: &Value) -> Vec<&'a Arc<Value>> {
    let uid = &owner["metadata"]["uid"];
    objs.iter()
        .filter(|p| {
            namespace(p) == namespace(owner)
                && p["metadata"]["ownerReferences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["uid"] == *uid && r["controller"] == json!(true))
        })
        .collect()
}

/// Whether a pod is Ready.
pub fn pod_ready(p: &Value) -> bool {
    cond(p, "Ready").is_some_and(|c| c["status"] == "True")
}

fn cond<'a>(o: &'a Value, ty: &str) -> Option<&'a Value> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

fn active(p: &Value) -> bool {
    !p["metadata"]["deletionTimestamp"].is_string()
        && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

fn int_or_percent(v: &Value, total: i64, round_up: bool) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => {
            let p: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            if round_up {
                (p * total + 99) / 100
            } else {
                p * total / 100
            }
        }
        _ => 0,
    }
}

/// The pod-template-hash of a template (stable, in Kubernetes' alphabet).
pub fn template_hash(tpl: &Value) -> String {
    let s = serde_json::to_string(tpl).unwrap_or_default();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| ALPHA[((h >> (i * 6)) % ALPHA.len() as u64) as usize] as char)
        .collect()
}

fn deployments(api: &ApiServer) {
    let rss = list(api, "replicasets.apps");
    for d in list(api, "deployments.apps") {
        if d["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        let ns = namespace(&d).to_string();
        let spec = &d["spec"];
        let replicas = spec["replicas"].as_i64().unwrap_or(1);
        let mut tpl = spec["template"].clone();
        let hash = template_hash(&tpl);
        let owned: Vec<Arc<Value>> = controlled_by(&rss, &d).into_iter().cloned().collect();
        let mut new_rs = owned
            .iter()
            .find(|r| r["metadata"]["labels"]["pod-template-hash"] == hash.as_str())
            .cloned();
        let mut old: Vec<Arc<Value>> = owned
            .iter()
            .filter(|r| r["metadata"]["labels"]["pod-template-hash"] != hash.as_str())
            .cloned()
            .collect();
        old.sort_by_key(|r| util::s(&r["metadata"], "uid").to_string());
        let max_rev = owned
            .iter()
            .filter_map(|r| {
                r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                    .as_str()?
                    .parse::<i64>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        let recreate = spec["strategy"]["type"] == "Recreate";
        let ru = &spec["strategy"]["rollingUpdate"];
        let mut surge = if recreate {
            0
        } else {
            int_or_percent(&ru["maxSurge"], replicas, true)
        };
        let mut unavail = if recreate {
            replicas
        } else {
            int_or_percent(&ru["maxUnavailable"], replicas, false)
        };
        if surge == 0 && unavail == 0 {
            unavail = 1;
        }
        if replicas == 0 {
            surge = 0;
        }
        let old_total: i64 = old
            .iter()
            .map(|r| r["spec"]["replicas"].as_i64().unwrap_or(0))
            .sum();
        let mut created_new = false;
        if new_rs.is_none() {
            let rs_name = format!("{}-{hash}", name(&d));
            let mut lbl = tpl["metadata"]["labels"].clone();
            lbl["pod-template-hash"] = json!(hash);
            tpl["metadata"]["labels"] = lbl.clone();
            let mut sel = spec["selector"].clone();
            sel["matchLabels"]["pod-template-hash"] = json!(hash);
            let start = if old.is_empty() || recreate && old_total > 0 {
                if recreate { 0 } else { replicas }
            } else {
                (replicas + surge - old_total).clamp(0, replicas)
            };
            let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
                "name": rs_name, "namespace": ns, "labels": lbl,
                "annotations": {"deployment.kubernetes.io/revision": (max_rev + 1).to_string(),
                    "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                    "deployment.kubernetes.io/max-replicas": (replicas + surge).to_string()},
                "ownerReferences": [owner_ref(&d, "Deployment", "apps/v1")]},
                "spec": {"replicas": start, "selector": sel, "template": tpl,
                    "minReadySeconds": spec["minReadySeconds"].as_i64().unwrap_or(0)}});
            let def = api.def("replicasets.apps");
            if let Ok(v) = api.create(&def, &ns, rs, &Default::default()) {
                let msg = format!("Scaled up replica set {} from 0 to {start}", name(&v));
                event(
                    api,
                    &d,
                    false,
                    "ScalingReplicaSet",
                    &msg,
                    "deployment-controller",
                    "",
                );
                new_rs = Some(Arc::new(v));
                created_new = true;
            }
            let mut t = api.store.txn();
            if let Some(cur) = t.get("deployments.apps", &ns, name(&d)) {
                let mut n = (*cur).clone();
                n["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                    json!((max_rev + 1).to_string());
                t.put("deployments.apps", &ns, name(&d), n);
            }
        }
        let Some(new_rs) = new_rs else { continue };
        let set_replicas = |rs: &Value, n: i64| {
            let was = rs["spec"]["replicas"].as_i64().unwrap_or(0);
            if was == n {
                return;
            }
            let msg = format!(
                "Scaled {} replica set {} from {was} to {n}",
                if n > was { "up" } else { "down" },
                name(rs)
            );
            event(
                api,
                &d,
                false,
                "ScalingReplicaSet",
                &msg,
                "deployment-controller",
                "",
            );
            let mut t = api.store.txn();
            if let Some(cur) = t.get("replicasets.apps", &ns, name(rs)) {
                let mut c = (*cur).clone();
                c["spec"]["replicas"] = json!(n);
                c["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] =
                    json!(replicas.to_string());
                let g = c["metadata"]["generation"].as_i64().unwrap_or(1);
                c["metadata"]["generation"] = json!(g + 1);
                t.put("replicasets.apps", &ns, name(rs), c);
            }
        };
        let avail = |r: &Value| r["status"]["availableReplicas"].as_i64().unwrap_or(0);
        let new_spec = new_rs["spec"]["replicas"].as_i64().unwrap_or(0);
        if old_total == 0 {
            set_replicas(&new_rs, replicas);
        } else if recreate {
            for r in &old {
                set_replicas(r, 0);
            }
            let old_pods: i64 = old
                .iter()
                .map(|r| r["status"]["replicas"].as_i64().unwrap_or(0))
                .sum();
            if old_pods == 0 {
                set_replicas(&new_rs, replicas);
            }
        } else {
            // scale up the new ReplicaSet within maxSurge
            let total = old_total + new_spec;
            let allowed = replicas + surge - total;
            let mut new_target = new_spec;
            if allowed > 0 && new_spec < replicas {
                new_target = (new_spec + allowed).min(replicas);
                set_replicas(&new_rs, new_target);
            }
            // scale down old ones within maxUnavailable
            let available: i64 = old.iter().map(|r| avail(r)).sum::<i64>() + avail(&new_rs);
            let min_available = replicas - unavail;
            let mut can_remove = (available - min_available).max(0);
            // unhealthy old replicas go first, without counting against availability
            for r in &old {
                let spec_n = r["spec"]["replicas"].as_i64().unwrap_or(0);
                let unhealthy = (spec_n - avail(r)).max(0);
                let mut target = spec_n - unhealthy;
                let more = can_remove.min(target);
                target -= more;
                can_remove -= more;
                if target != spec_n {
                    set_replicas(r, target);
                }
            }
            let _ = new_target;
        }
        // clean up old ReplicaSets beyond the history limit
        let limit = spec["revisionHistoryLimit"].as_i64().unwrap_or(10);
        let empty_old: Vec<&Arc<Value>> = old
            .iter()
            .filter(|r| {
                r["spec"]["replicas"].as_i64() == Some(0)
                    && r["status"]["replicas"].as_i64().unwrap_or(0) == 0
            })
            .collect();
        if empty_old.len() as i64 > limit {
            let def = api.def("replicasets.apps");
            for r in empty_old.iter().take(empty_old.len() - limit as usize) {
                let _ = api.delete(&def, &ns, name(r), &json!({}), false);
            }
        }
        // status
        let rss_now: Vec<Arc<Value>> = controlled_by(&list(api, "replicasets.apps"), &d)
            .into_iter()
            .cloned()
            .collect();
        let sum = |k: &str| -> i64 {
            rss_now
                .iter()
                .map(|r| r["status"][k].as_i64().unwrap_or(0))
                .sum()
        };
        let new_now = rss_now
            .iter()
            .find(|r| r["metadata"]["labels"]["pod-template-hash"] == hash.as_str());
        let updated = new_now.map_or(0, |r| r["status"]["replicas"].as_i64().unwrap_or(0));
        let total = sum("replicas");
        let ready = sum("readyReplicas");
        let available = sum("availableReplicas");
        let new_name = new_now.map(|r| name(r).to_string()).unwrap_or_default();
        let complete = updated == replicas && total == replicas && available == replicas;
        let now_s = now();
        let old_conds = d["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let old_cond = |ty: &str| old_conds.iter().find(|c| c["type"] == ty).cloned();
        let mk = |ty: &str, status: &str, reason: &str, msg: String, progress: bool| match old_cond(
            ty,
        ) {
            Some(c) if c["status"] == status && c["reason"] == reason && !progress => c,
            Some(c) if c["status"] == status && c["reason"] == reason => {
                let mut c = c;
                if c["message"] != msg.as_str() {
                    c["message"] = json!(msg);
                    c["lastUpdateTime"] = json!(now_s);
                }
                c
            }
            Some(c) if c["status"] == status => json!({"type": ty, "status": status,
                    "reason": reason, "message": msg, "lastUpdateTime": now_s,
                    "lastTransitionTime": c["lastTransitionTime"]}),
            _ => json!({"type": ty, "status": status, "reason": reason, "message": msg,
                    "lastUpdateTime": now_s, "lastTransitionTime": now_s}),
        };
        let available_c = if available >= replicas - unavail {
            mk(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                false,
            )
        } else {
            mk(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                false,
            )
        };
        let deadline = spec["progressDeadlineSeconds"].as_i64().unwrap_or(600);
        let prev_prog = old_cond("Progressing");
        let stalled = !complete
            && prev_prog.as_ref().is_some_and(|c| {
                c["reason"] != "NewReplicaSetAvailable"
                    && c["lastUpdateTime"]
                        .as_str()
                        .and_then(parse_time)
                        .is_some_and(|t| {
                            SystemTime::now().duration_since(t).unwrap_or_default()
                                > Duration::from_secs(deadline as u64)
                        })
            });
        let progressing_c = if complete {
            mk(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                false,
            )
        } else if stalled {
            mk(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                false,
            )
        } else if created_new {
            mk(
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                format!("Created new replica set \"{new_name}\""),
                true,
            )
        } else {
            let progressed = d["status"]["updatedReplicas"].as_i64() != Some(updated)
                || d["status"]["availableReplicas"].as_i64() != Some(available)
                || d["status"]["replicas"].as_i64() != Some(total);
            mk(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
                progressed,
            )
        };
        let mut status = json!({"observedGeneration": d["metadata"]["generation"],
            "replicas": total, "updatedReplicas": updated, "readyReplicas": ready,
            "availableReplicas": available, "conditions": [available_c, progressing_c]});
        let unavailable = (replicas - available).max(0);
        if unavailable > 0 {
            status["unavailableReplicas"] = json!(unavailable);
        }
        let m = status.as_object_mut().expect("object");
        for k in [
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
        ] {
            if m[k] == json!(0) {
                m.remove(k);
            }
        }
        put_status(api, "deployments.apps", &d, status);
    }
}

/// Ready time of a pod (Ready condition's last transition), for victim ranking.
fn ready_since(p: &Value) -> Option<SystemTime> {
    cond(p, "Ready")
        .filter(|c| c["status"] == "True")
        .and_then(|c| c["lastTransitionTime"].as_str().and_then(parse_time))
}

/// The ReplicaSet scale-down order of `pkg/controller/controller_utils.go` (ActivePods):
/// unassigned < assigned, Pending < Unknown < Running, not ready < ready, ready for less time
/// first, more restarts first, newer first. The first pods are the ones to delete.
pub fn victim_order(a: &Value, b: &Value) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let assigned = |p: &Value| {
        p["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
    };
    let phase = |p: &Value| match p["status"]["phase"].as_str() {
        Some("Pending") => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    };
    let restarts = |p: &Value| -> i64 {
        p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["restartCount"].as_i64().unwrap_or(0))
            .max()
            .unwrap_or(0)
    };
    let created = |p: &Value| {
        (
            p["metadata"]["creationTimestamp"]
                .as_str()
                .and_then(parse_time),
            util::s(&p["metadata"], "uid").to_string(),
        )
    };
    assigned(a)
        .cmp(&assigned(b))
        .then(phase(a).cmp(&phase(b)))
        .then(pod_ready(a).cmp(&pod_ready(b)))
        .then_with(|| {
            if pod_ready(a) && pod_ready(b) {
                // more recently ready first
                ready_since(b).cmp(&ready_since(a))
            } else {
                Ordering::Equal
            }
        })
        .then(restarts(b).cmp(&restarts(a)))
        .then_with(|| created(b).cmp(&created(a)))
}

fn replicasets(api: &ApiServer) {
    let pods = list(api, "pods");
    let def_pod = api.def("pods");
    for rs in list(api, "replicasets.apps") {
        if rs["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        let ns = namespace(&rs).to_string();
        let want = rs["spec"]["replicas"].as_i64().unwrap_or(1);
        let mut mine: Vec<&Arc<Value>> = controlled_by(&pods, &rs)
            .into_iter()
            .filter(|p| active(p))
            .collect();
        let have = mine.len() as i64;
        if have < want {
            let tpl = &rs["spec"]["template"];
            for _ in 0..(want - have) {
                let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
                    "generateName": format!("{}-", name(&rs)), "namespace": ns,
                    "labels": tpl["metadata"]["labels"], "annotations": tpl["metadata"]["annotations"],
                    "ownerReferences": [owner_ref(&rs, "ReplicaSet", "apps/v1")]},
                    "spec": tpl["spec"]});
                let mut pod = pod;
                if pod["metadata"]["annotations"].is_null()
                    && let Some(m) = pod["metadata"].as_object_mut()
                {
                    m.remove("annotations");
                }
                if let Ok(created) = api.create(&def_pod, &ns, pod, &Default::default()) {
                    let msg = format!("Created pod: {}", name(&created));
                    event(
                        api,
                        &rs,
                        false,
                        "SuccessfulCreate",
                        &msg,
                        "replicaset-controller",
                        "",
                    );
                }
            }
        } else if have > want {
            mine.sort_by(|a, b| victim_order(a, b));
            for p in mine.iter().take((have - want) as usize) {
                if api
                    .delete(&def_pod, &ns, name(p), &json!({}), false)
                    .is_ok()
                {
                    let msg = format!("Deleted pod: {}", name(p));
                    event(
                        api,
                        &rs,
                        false,
                        "SuccessfulDelete",
                        &msg,
                        "replicaset-controller",
                        "",
                    );
                }
            }
        }
        let pods_now = list(api, "pods");
        let mine: Vec<&Arc<Value>> = controlled_by(&pods_now, &rs)
            .into_iter()
            .filter(|p| active(p))
            .collect();
        let ready = mine.iter().filter(|p| pod_ready(p)).count() as i64;
        let sel = LabelSelector::from_object(&rs["spec"]["selector"]).unwrap_or_default();
        let labeled = mine.iter().filter(|p| sel.matches(&labels(p))).count() as i64;
        let mut status = json!({"replicas": mine.len(), "fullyLabeledReplicas": labeled,
            "readyReplicas": ready, "availableReplicas": ready,
            "observedGeneration": rs["metadata"]["generation"]});
        let m = status.as_object_mut().expect("object");
        for k in ["fullyLabeledReplicas", "readyReplicas", "availableReplicas"] {
            if m[k] == json!(0) {
                m.remove(k);
            }
        }
        put_status(api, "replicasets.apps", &rs, status);
    }
}

/// Whether `tolerations` tolerate `taint`.
pub fn tolerates(tolerations: &Value, taint: &Value) -> bool {
    tolerations.as_array().into_iter().flatten().any(|t| {
        let key_ok = match t["key"].as_str() {
            None | Some("") => t["operator"] == "Exists",
            Some(k) => taint["key"] == k,
        };
        let eff_ok = match t["effect"].as_str() {
            None | Some("") => true,
            Some(e) => taint["effect"] == e,
        };
        let val_ok = t["operator"] == "Exists"
            || t["value"] == taint["value"]
            || (t["value"].is_null() && taint["value"].is_null());
        key_ok && eff_ok && val_ok
    })
}

/// Whether a node is Ready.
pub fn node_ready(n: &Value) -> bool {
    cond(n, "Ready").is_some_and(|c| c["status"] == "True")
}

fn fits(pod: &Value, node: &Value) -> bool {
    let tol = &pod["spec"]["tolerations"];
    let taints_ok = node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["effect"] == "NoSchedule" || t["effect"] == "NoExecute")
        .all(|t| tolerates(tol, t));
    let nl = labels(node);
    let sel_ok = pod["spec"]["nodeSelector"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| nl.get(k) == Some(v));
    taints_ok && sel_ok && node["spec"]["unschedulable"] != json!(true)
}

fn schedule(api: &ApiServer) {
    let pods = list(api, "pods");
    let nodes: Vec<Arc<Value>> = list(api, "nodes");
    let mut load: HashMap<String, i64> = HashMap::new();
    let mut by_owner: HashMap<(String, String), i64> = HashMap::new();
    let owner_key = |p: &Value| {
        p["metadata"]["ownerReferences"]
            .as_array()
            .and_then(|r| r.first())
            .map(|r| util::s(r, "uid").to_string())
            .unwrap_or_default()
    };
    for p in &pods {
        if let Some(n) = p["spec"]["nodeName"].as_str() {
            *load.entry(n.to_string()).or_default() += 1;
            *by_owner.entry((n.to_string(), owner_key(p))).or_default() += 1;
        }
    }
    let mut scheduled = Vec::new();
    for p in pods.iter().filter(|p| {
        p["spec"]["nodeName"].as_str().is_none_or(|n| n.is_empty())
            && active(p)
            && p["spec"]["schedulerName"]
                .as_str()
                .unwrap_or("default-scheduler")
                == "default-scheduler"
    }) {
        // a node that is not Ready takes only pods tolerating its not-ready/unreachable taint
        let ok: Vec<&Arc<Value>> = nodes
            .iter()
            .filter(|n| {
                let condition_ok = node_ready(n) || {
                    let unknown = cond(n, "Ready").is_none_or(|c| c["status"] == "Unknown");
                    let key = if unknown {
                        "node.kubernetes.io/unreachable"
                    } else {
                        "node.kubernetes.io/not-ready"
                    };
                    tolerates(
                        &p["spec"]["tolerations"],
                        &json!({"key": key, "effect": "NoSchedule"}),
                    )
                };
                condition_ok && fits(p, n)
            })
            .collect();
        let ok_key = owner_key(p);
        let best = ok.iter().min_by_key(|n| {
            let nn = name(n).to_string();
            (
                by_owner
                    .get(&(nn.clone(), ok_key.clone()))
                    .copied()
                    .unwrap_or(0),
                load.get(&nn).copied().unwrap_or(0),
                nn,
            )
        });
        let mut t = api.store.txn();
        let Some(cur) = t.get("pods", namespace(p), name(p)) else {
            continue;
        };
        let mut n = (*cur).clone();
        match best {
            Some(node) => {
                let nn = name(node).to_string();
                scheduled.push((n.clone(), nn.clone()));
                n["spec"]["nodeName"] = json!(nn);
                set_condition(&mut n, "PodScheduled", "True", "", "");
                *load.entry(nn.clone()).or_default() += 1;
                *by_owner.entry((nn, ok_key)).or_default() += 1;
            }
            None => {
                let msg = format!(
                    "0/{} nodes are available: {} node(s) were not ready or had untolerated taints.",
                    nodes.len(),
                    nodes.len()
                );
                set_condition(&mut n, "PodScheduled", "False", "Unschedulable", &msg);
            }
        }
        if n != *cur {
            t.put("pods", namespace(p), name(p), n);
        }
    }
    for (p, node) in scheduled {
        let msg = format!(
            "Successfully assigned {}/{} to {node}",
            namespace(&p),
            name(&p)
        );
        event(api, &p, false, "Scheduled", &msg, "default-scheduler", "");
    }
}

/// Sets a condition in `status.conditions`, keeping lastTransitionTime when the status holds.
pub fn set_condition(o: &mut Value, ty: &str, status: &str, reason: &str, message: &str) {
    if !o["status"]["conditions"].is_array() {
        o["status"]["conditions"] = json!([]);
    }
    let list = o["status"]["conditions"].as_array_mut().expect("array");
    let mut c = json!({"type": ty, "status": status, "lastProbeTime": null,
        "lastTransitionTime": now()});
    if !reason.is_empty() {
        c["reason"] = json!(reason);
    }
    if !message.is_empty() {
        c["message"] = json!(message);
    }
    match list.iter_mut().find(|c| c["type"] == ty) {
        Some(old) => {
            if old["status"] == status {
                c["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            if old["status"] != c["status"]
                || old["reason"] != c["reason"]
                || old["message"] != c["message"]
            {
                *old = c;
            }
        }
        None => list.push(c),
    }
}

fn daemonsets(api: &ApiServer) {
    let pods = list(api, "pods");
    let nodes = list(api, "nodes");
    let def_pod = api.def("pods");
    for ds in list(api, "daemonsets.apps") {
        if ds["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        let ns = namespace(&ds).to_string();
        let tpl = &ds["spec"]["template"];
        let hash = template_hash(tpl);
        let mut tol = tpl["spec"]["tolerations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for k in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            tol.push(json!({"key": k, "operator": "Exists", "effect": "NoExecute"}));
        }
        for k in [
            "node.kubernetes.io/unschedulable",
            "node.kubernetes.io/network-unavailable",
            "node.kubernetes.io/not-ready",
        ] {
            tol.push(json!({"key": k, "operator": "Exists", "effect": "NoSchedule"}));
        }
        let mine: Vec<&Arc<Value>> = controlled_by(&pods, &ds);
        let mut desired = 0;
        let mut current = 0;
        let mut ready = 0;
        let mut updated = 0;
        for node in &nodes {
            let mut probe = json!({"spec": tpl["spec"]});
            probe["spec"]["tolerations"] = json!(tol);
            let eligible = fits(&probe, node);
            let nn = name(node);
            let on: Vec<&&Arc<Value>> = mine
                .iter()
                .filter(|p| p["spec"]["nodeName"] == nn && active(p))
                .collect();
            if eligible {
                desired += 1;
                if on.is_empty() {
                    let mut spec = tpl["spec"].clone();
                    spec["nodeName"] = json!(nn);
                    spec["tolerations"] = json!(tol);
                    let mut lbl = tpl["metadata"]["labels"].clone();
                    lbl["controller-revision-hash"] = json!(hash);
                    lbl["pod-template-generation"] = json!(
                        ds["metadata"]["generation"]
                            .as_i64()
                            .unwrap_or(1)
                            .to_string()
                    );
                    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
                        "generateName": format!("{}-", name(&ds)), "namespace": ns, "labels": lbl,
                        "ownerReferences": [owner_ref(&ds, "DaemonSet", "apps/v1")]}, "spec": spec});
                    let _ = api.create(&def_pod, &ns, pod, &Default::default());
                } else {
                    current += 1;
                    let p = on[0];
                    if pod_ready(p) {
                        ready += 1;
                    }
                    if p["metadata"]["labels"]["controller-revision-hash"] == hash.as_str() {
                        updated += 1;
                    } else if pod_ready(p) || !active(p) {
                        // rolling update, one node at a time
                        let _ = api.delete(&def_pod, &ns, name(p), &json!({}), false);
                    }
                }
            } else {
                for p in on {
                    let _ = api.delete(&def_pod, &ns, name(p), &json!({}), false);
                }
            }
        }
        let status = json!({"desiredNumberScheduled": desired, "currentNumberScheduled": current,
            "numberReady": ready, "numberAvailable": ready, "updatedNumberScheduled": updated,
            "numberMisscheduled": 0, "observedGeneration": ds["metadata"]["generation"]});
        put_status(api, "daemonsets.apps", &ds, status);
    }
}

fn node_lifecycle(api: &ApiServer, o: &ControllerOptions) {
    for n in list(api, "nodes") {
        let Some(ready) = cond(&n, "Ready") else {
            continue;
        };
        let stale = ready["lastHeartbeatTime"]
            .as_str()
            .and_then(parse_time)
            .is_some_and(|t| {
                SystemTime::now().duration_since(t).unwrap_or_default() > o.node_grace
            });
        let mut t = api.store.txn();
        let Some(cur) = t.get("nodes", "", name(&n)) else {
            continue;
        };
        let mut m = (*cur).clone();
        if stale && ready["status"] != "Unknown" {
            for c in m["status"]["conditions"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                c["status"] = json!("Unknown");
                c["reason"] = json!("NodeStatusUnknown");
                c["message"] = json!("Kubelet stopped posting node status.");
                c["lastTransitionTime"] = json!(now());
            }
        }
        let status = cond(&m, "Ready")
            .map(|c| util::s(c, "status").to_string())
            .unwrap_or_default();
        let mut taints: Vec<Value> = m["spec"]["taints"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| {
                !matches!(
                    t["key"].as_str(),
                    Some("node.kubernetes.io/not-ready" | "node.kubernetes.io/unreachable")
                )
            })
            .collect();
        let mut add = |k: &str| {
            for (eff, ts) in [("NoSchedule", false), ("NoExecute", true)] {
                let mut taint = json!({"key": k, "effect": eff});
                if ts {
                    taint["timeAdded"] = json!(now());
                }
                taints.push(taint);
            }
        };
        match status.as_str() {
            "False" => add("node.kubernetes.io/not-ready"),
            "Unknown" => add("node.kubernetes.io/unreachable"),
            _ => {}
        }
        let old_taints: Vec<Value> = m["spec"]["taints"].as_array().cloned().unwrap_or_default();
        let strip = |v: &[Value]| -> Vec<Value> {
            v.iter()
                .map(|t| {
                    let mut t = t.clone();
                    if let Some(o) = t.as_object_mut() {
                        o.remove("timeAdded");
                    }
                    t
                })
                .collect()
        };
        if strip(&old_taints) != strip(&taints) {
            if taints.is_empty() {
                if let Some(s) = m["spec"].as_object_mut() {
                    s.remove("taints");
                }
            } else {
                m["spec"]["taints"] = json!(taints);
            }
        }
        if m != *cur {
            t.put("nodes", "", name(&n), m);
        }
        drop(t);
        if status == "Unknown" {
            // pods on an unreachable node are no longer ready
            for p in list(api, "pods") {
                if p["spec"]["nodeName"] == name(&n) && pod_ready(&p) {
                    let mut t = api.store.txn();
                    if let Some(cur) = t.get("pods", namespace(&p), name(&p)) {
                        let mut q = (*cur).clone();
                        set_condition(&mut q, "Ready", "False", "", "");
                        for c in q["status"]["containerStatuses"]
                            .as_array_mut()
                            .into_iter()
                            .flatten()
                        {
                            c["ready"] = json!(false);
                        }
                        t.put("pods", namespace(&p), name(&p), q);
                    }
                }
            }
        }
    }
}

fn endpoints(api: &ApiServer) {
    let pods = list(api, "pods");
    let services = list(api, "services");
    let mut keep: HashSet<(String, String)> = HashSet::new();
    for svc in &services {
        let ns = namespace(svc).to_string();
        keep.insert((ns.clone(), name(svc).to_string()));
        let Some(sel) = svc["spec"]["selector"]
            .as_object()
            .filter(|s| !s.is_empty())
        else {
            continue;
        };
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        let mut ports: Vec<Value> = Vec::new();
        let mut matched: Vec<&Arc<Value>> = pods
            .iter()
            .filter(|p| {
                namespace(p) == ns
                    && !p["metadata"]["deletionTimestamp"].is_string()
                    && p["status"]["podIP"].is_string()
                    && sel.iter().all(|(k, v)| labels(p).get(k) == Some(v))
            })
            .collect();
        matched.sort_by_key(|p| util::s(&p["status"], "podIP").to_string());
        for p in &matched {
            let addr = json!({"ip": p["status"]["podIP"], "nodeName": p["spec"]["nodeName"],
                "targetRef": {"kind": "Pod", "namespace": ns, "name": name(p), "uid": p["metadata"]["uid"]}});
            if pod_ready(p) {
                ready.push(addr);
            } else {
                not_ready.push(addr);
            }
        }
        for sp in svc["spec"]["ports"].as_array().into_iter().flatten() {
            let target = match &sp["targetPort"] {
                Value::String(named) => matched
                    .iter()
                    .flat_map(|p| {
                        p["spec"]["containers"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                    })
                    .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
                    .find(|cp| cp["name"] == named.as_str())
                    .map(|cp| cp["containerPort"].clone())
                    .unwrap_or(json!(0)),
                v if v.is_null() => sp["port"].clone(),
                v => v.clone(),
            };
            let mut port = json!({"port": target, "protocol": sp["protocol"]});
            if let Some(n) = sp["name"].as_str() {
                port["name"] = json!(n);
            }
            ports.push(port);
        }
        let mut subset = json!({"ports": ports});
        if !ready.is_empty() {
            subset["addresses"] = json!(ready);
        }
        if !not_ready.is_empty() {
            subset["notReadyAddresses"] = json!(not_ready);
        }
        let subsets = if ready.is_empty() && not_ready.is_empty() {
            json!([])
        } else {
            json!([subset])
        };
        let mut t = api.store.txn();
        match t.get("endpoints", &ns, name(svc)) {
            Some(cur) => {
                let cur_subsets = if cur["subsets"].is_null() {
                    json!([])
                } else {
                    cur["subsets"].clone()
                };
                if cur_subsets != subsets {
                    let mut n = (*cur).clone();
                    n["subsets"] = subsets;
                    t.put("endpoints", &ns, name(svc), n);
                }
            }
            None => {
                let uid = t.new_uid();
                let mut ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {
                    "name": name(svc), "namespace": ns, "uid": uid, "creationTimestamp": now(),
                    "labels": svc["metadata"]["labels"]}, "subsets": subsets});
                if ep["metadata"]["labels"].is_null()
                    && let Some(m) = ep["metadata"].as_object_mut()
                {
                    m.remove("labels");
                }
                t.put("endpoints", &ns, name(svc), ep);
            }
        }
    }
    // endpoints of deleted services go (those we made: services with selectors)
    for ep in list(api, "endpoints") {
        let key = (namespace(&ep).to_string(), name(&ep).to_string());
        if !keep.contains(&key) && ep["metadata"]["annotations"].is_null() {
            api.force_remove("endpoints", &key.0, &key.1);
        }
    }
}

fn garbage_collect(api: &ApiServer) {
    let grs = [
        "pods",
        "replicasets.apps",
        "deployments.apps",
        "daemonsets.apps",
        "services",
        "configmaps",
        "secrets",
        "serviceaccounts",
        "leases.coordination.k8s.io",
    ];
    let mut uids: HashSet<String> = HashSet::new();
    let all: Vec<(String, Vec<Arc<Value>>)> = api
        .resources()
        .iter()
        .map(|d| (d.gr(), list(api, &d.gr())))
        .collect();
    for (_, objs) in &all {
        for o in objs {
            uids.insert(util::s(&o["metadata"], "uid").to_string());
        }
    }
    for (gr, objs) in &all {
        if !grs.contains(&gr.as_str()) && !gr.contains('.') {
            continue;
        }
        let def = api.def(gr);
        for o in objs {
            let Some(refs) = o["metadata"]["ownerReferences"].as_array() else {
                continue;
            };
            if !refs.is_empty() && refs.iter().all(|r| !uids.contains(util::s(r, "uid"))) {
                let _ = api.delete(&def, namespace(o), name(o), &json!({}), false);
            }
        }
    }
}

fn namespaces(api: &ApiServer) {
    for n in list(api, "namespaces") {
        let ns = name(&n).to_string();
        if n["status"]["phase"] == "Terminating" {
            let mut left = 0;
            for d in api.resources().iter().filter(|d| d.namespaced) {
                for o in api.store.list(&d.gr(), Some(&ns)).0 {
                    left += 1;
                    api.force_remove(&d.gr(), &ns, name(&o));
                }
            }
            if left == 0 {
                api.force_remove("namespaces", "", &ns);
            }
            continue;
        }
        if api.store.get("serviceaccounts", &ns, "default").is_none() {
            let def = api.def("serviceaccounts");
            let _ = api.create(
                &def,
                &ns,
                json!({"metadata": {"name": "default"}}),
                &Default::default(),
            );
        }
    }
}

fn hs256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&k, data).as_ref().to_vec()
}

/// The detached JWS (`header..signature`, HS256, kid = token id) of `content` for a token.
pub fn detached_jws(content: &str, token_id: &str, token_secret: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(format!("{{\"alg\":\"HS256\",\"kid\":\"{token_id}\"}}"));
    let payload = b64.encode(content);
    let sig = hs256(
        format!("{token_id}.{token_secret}").as_bytes(),
        format!("{header}.{payload}").as_bytes(),
    );
    format!("{header}..{}", b64.encode(sig))
}

/// The valid bootstrap tokens (id → secret data) from `kube-system` Secrets.
pub fn bootstrap_tokens(api: &ApiServer) -> BTreeMap<String, BTreeMap<String, String>> {
    use base64::Engine;
    let mut out = BTreeMap::new();
    for s in api.store.list("secrets", Some("kube-system")).0 {
        if s["type"] != "bootstrap.kubernetes.io/token" {
            continue;
        }
        let data: BTreeMap<String, String> = s["data"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str()?)
                    .ok()?;
                Some((k.clone(), String::from_utf8(raw).ok()?))
            })
            .collect();
        let Some(id) = data.get("token-id").cloned() else {
            continue;
        };
        if name(&s) != format!("bootstrap-token-{id}") {
            continue;
        }
        if let Some(exp) = data.get("expiration")
            && parse_time(exp).is_some_and(|t| t < SystemTime::now())
        {
            continue;
        }
        out.insert(id, data);
    }
    out
}

fn bootstrap_signer(api: &ApiServer, _o: &ControllerOptions) {
    let Some(ci) = api.store.get("configmaps", "kube-public", "cluster-info") else {
        return;
    };
    let Some(content) = ci["data"]["kubeconfig"].as_str() else {
        return;
    };
    let mut data = ci["data"].as_object().cloned().unwrap_or_default();
    data.retain(|k, _| !k.starts_with("jws-kubeconfig-"));
    for (id, d) in bootstrap_tokens(api) {
        if d.get("usage-bootstrap-signing").map(String::as_str) != Some("true") {
            continue;
        }
        let secret = d.get("token-secret").cloned().unwrap_or_default();
        data.insert(
            format!("jws-kubeconfig-{id}"),
            json!(detached_jws(content, &id, &secret)),
        );
    }
    if Value::Object(data.clone()) != ci["data"] {
        let mut t = api.store.txn();
        if let Some(cur) = t.get("configmaps", "kube-public", "cluster-info") {
            let mut n = (*cur).clone();
            n["data"] = Value::Object(data);
            t.put("configmaps", "kube-public", "cluster-info", n);
        }
    }
}

/// Records a core/v1 Event about `obj` (as `kubectl describe` shows them).
pub fn event(
    api: &ApiServer,
    obj: &Value,
    warning: bool,
    reason: &str,
    message: &str,
    component: &str,
    host: &str,
) {
    let ns = match namespace(obj) {
        "" => "default",
        n => n,
    };
    let ts = now();
    // one Event per (object, reason, message, source), counted, as the real recorder aggregates
    let mut h: u64 = 0xcbf29ce484222325;
    for b in format!(
        "{}/{reason}/{message}/{component}/{host}",
        util::s(&obj["metadata"], "uid")
    )
    .bytes()
    {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    let ename = format!("{}.{h:016x}", name(obj));
    let mut t = api.store.txn();
    if let Some(cur) = t.get("events", ns, &ename) {
        let mut e = (*cur).clone();
        e["count"] = json!(e["count"].as_i64().unwrap_or(1) + 1);
        e["lastTimestamp"] = json!(ts);
        t.put("events", ns, &ename, e);
        return;
    }
    let uid = t.new_uid();
    let mut source = json!({"component": component});
    if !host.is_empty() {
        source["host"] = json!(host);
    }
    let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": ename, "namespace": ns,
            "uid": uid, "creationTimestamp": ts},
        "involvedObject": {"kind": obj["kind"], "namespace": namespace(obj), "name": name(obj),
            "uid": obj["metadata"]["uid"], "apiVersion": obj["apiVersion"]},
        "reason": reason, "message": message, "source": source, "firstTimestamp": ts,
        "lastTimestamp": ts, "count": 1, "type": if warning { "Warning" } else { "Normal" },
        "reportingComponent": component, "reportingInstance": host});
    t.put("events", ns, &ename, ev);
}

/// A random pod name suffix (re-exported for kubelets and tests).
pub fn suffix() -> String {
    random_suffix(5)
}
