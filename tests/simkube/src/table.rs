//! Server-side printing: `meta.k8s.io/v1 Table` responses with the column sets of the real
//! API server's printers (`pkg/printers/internalversion/printers.go`), so `kubectl get` and
//! `kubectl get -o wide` print what they print against a real cluster.

use crate::util::{age, get_path, labels, s};
use serde_json::{Value, json};

/// (name, type, priority) of each column, the NAME column first.
fn columns(kind: &str) -> Vec<(&'static str, &'static str, u8)> {
    let c = |n, p| (n, "string", p);
    match kind {
        "Pod" => vec![
            c("Name", 0),
            c("Ready", 0),
            c("Status", 0),
            c("Restarts", 0),
            c("Age", 0),
            c("IP", 1),
            c("Node", 1),
            c("Nominated Node", 1),
            c("Readiness Gates", 1),
        ],
        "Node" => vec![
            c("Name", 0),
            c("Status", 0),
            c("Roles", 0),
            c("Age", 0),
            c("Version", 0),
            c("Internal-IP", 1),
            c("External-IP", 1),
            c("OS-Image", 1),
            c("Kernel-Version", 1),
            c("Container-Runtime", 1),
        ],
        "Deployment" => vec![
            c("Name", 0),
            c("Ready", 0),
            c("Up-to-date", 0),
            c("Available", 0),
            c("Age", 0),
            c("Containers", 1),
            c("Images", 1),
            c("Selector", 1),
        ],
        "ReplicaSet" => vec![
            c("Name", 0),
            c("Desired", 0),
            c("Current", 0),
            c("Ready", 0),
            c("Age", 0),
            c("Containers", 1),
            c("Images", 1),
            c("Selector", 1),
        ],
        "DaemonSet" => vec![
            c("Name", 0),
            c("Desired", 0),
            c("Current", 0),
            c("Ready", 0),
            c("Up-to-date", 0),
            c("Available", 0),
            c("Node Selector", 0),
            c("Age", 0),
            c("Containers", 1),
            c("Images", 1),
            c("Selector", 1),
        ],
        "Service" => vec![
            c("Name", 0),
            c("Type", 0),
            c("Cluster-IP", 0),
            c("External-IP", 0),
            c("Port(s)", 0),
            c("Age", 0),
            c("Selector", 1),
        ],
        "Namespace" => vec![c("Name", 0), c("Status", 0), c("Age", 0)],
        "Endpoints" => vec![c("Name", 0), c("Endpoints", 0), c("Age", 0)],
        "ConfigMap" => vec![c("Name", 0), c("Data", 0), c("Age", 0)],
        "Secret" => vec![c("Name", 0), c("Type", 0), c("Data", 0), c("Age", 0)],
        "ServiceAccount" => vec![c("Name", 0), c("Secrets", 0), c("Age", 0)],
        "Lease" => vec![c("Name", 0), c("Holder", 0), c("Age", 0)],
        "Event" => vec![
            c("Last Seen", 0),
            c("Type", 0),
            c("Reason", 0),
            c("Object", 0),
            c("Message", 0),
        ],
        _ => vec![c("Name", 0), c("Created At", 0)],
    }
}

fn cells(kind: &str, o: &Value) -> Vec<Value> {
    let md = &o["metadata"];
    let name = json!(s(md, "name"));
    let ts = md["creationTimestamp"].as_str();
    let a = json!(age(ts));
    let spec = &o["spec"];
    let st = &o["status"];
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let sel = |v: &Value| {
        crate::util::LabelSelector::from_object(v)
            .map(|s| s.to_string_form())
            .unwrap_or_default()
    };
    let containers = |tpl: &Value| -> (String, String) {
        let cs = tpl["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (
            cs.iter()
                .map(|c| s(c, "name"))
                .collect::<Vec<_>>()
                .join(","),
            cs.iter()
                .map(|c| s(c, "image"))
                .collect::<Vec<_>>()
                .join(","),
        )
    };
    match kind {
        "Pod" => {
            let statuses = st["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = spec["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses
                .iter()
                .filter(|c| c["ready"] == json!(true))
                .count();
            let restarts: i64 = statuses.iter().map(|c| n(&c["restartCount"])).sum();
            let last_restart = statuses
                .iter()
                .filter_map(|c| c["lastState"]["terminated"]["finishedAt"].as_str())
                .max();
            let restarts = match last_restart {
                Some(t) if restarts > 0 => format!("{restarts} ({} ago)", age(Some(t))),
                _ => restarts.to_string(),
            };
            let gates = spec["readinessGates"].as_array().map_or(0, Vec::len);
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts),
                a,
                json!(st["podIP"].as_str().unwrap_or("<none>")),
                json!(spec["nodeName"].as_str().unwrap_or("<none>")),
                json!(st["nominatedNodeName"].as_str().unwrap_or("<none>")),
                json!(if gates == 0 {
                    "<none>".to_string()
                } else {
                    format!("0/{gates}")
                }),
            ]
        }
        "Node" => {
            let ready = st["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready");
            let mut status = match ready.map(|c| s(c, "status")) {
                Some("True") => "Ready".to_string(),
                _ => "NotReady".to_string(),
            };
            if spec["unschedulable"] == json!(true) {
                status.push_str(",SchedulingDisabled");
            }
            let mut roles: Vec<String> = labels(o)
                .keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .map(str::to_string)
                .collect();
            roles.sort();
            let addr = |t: &str| {
                st["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["type"] == t)
                    .map(|a| s(a, "address").to_string())
                    .unwrap_or_else(|| "<none>".into())
            };
            let info = &st["nodeInfo"];
            vec![
                name,
                json!(status),
                json!(if roles.is_empty() {
                    "<none>".into()
                } else {
                    roles.join(",")
                }),
                a,
                json!(s(info, "kubeletVersion")),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                json!(s(info, "osImage")),
                json!(s(info, "kernelVersion")),
                json!(s(info, "containerRuntimeVersion")),
            ]
        }
        "Deployment" => {
            let (cn, im) = containers(&spec["template"]);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    n(&st["readyReplicas"]),
                    n(&spec["replicas"])
                )),
                json!(n(&st["updatedReplicas"])),
                json!(n(&st["availableReplicas"])),
                a,
                json!(cn),
                json!(im),
                json!(sel(&spec["selector"])),
            ]
        }
        "ReplicaSet" => {
            let (cn, im) = containers(&spec["template"]);
            vec![
                name,
                json!(n(&spec["replicas"])),
                json!(n(&st["replicas"])),
                json!(n(&st["readyReplicas"])),
                a,
                json!(cn),
                json!(im),
                json!(sel(&spec["selector"])),
            ]
        }
        "DaemonSet" => {
            let (cn, im) = containers(&spec["template"]);
            let ns = spec["template"]["spec"]["nodeSelector"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                json!(n(&st["desiredNumberScheduled"])),
                json!(n(&st["currentNumberScheduled"])),
                json!(n(&st["numberReady"])),
                json!(n(&st["updatedNumberScheduled"])),
                json!(n(&st["numberAvailable"])),
                json!(ns),
                a,
                json!(cn),
                json!(im),
                json!(sel(&spec["selector"])),
            ]
        }
        "Service" => {
            let ports: Vec<String> = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64() {
                        Some(np) => format!("{}:{np}/{proto}", n(&p["port"])),
                        None => format!("{}/{proto}", n(&p["port"])),
                    }
                })
                .collect();
            let selector = spec["selector"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "<none>".into());
            let ext = if s(spec, "type") == "LoadBalancer" {
                "<pending>"
            } else {
                "<none>"
            };
            vec![
                name,
                json!(s(spec, "type")),
                json!(spec["clusterIP"].as_str().unwrap_or("<none>")),
                json!(ext),
                json!(if ports.is_empty() {
                    "<none>".into()
                } else {
                    ports.join(",")
                }),
                a,
                json!(selector),
            ]
        }
        "Namespace" => vec![name, json!(s(st, "phase")), a],
        "Endpoints" => {
            let mut eps = Vec::new();
            for sub in o["subsets"].as_array().into_iter().flatten() {
                for addr in sub["addresses"].as_array().into_iter().flatten() {
                    for p in sub["ports"].as_array().into_iter().flatten() {
                        eps.push(format!("{}:{}", s(addr, "ip"), n(&p["port"])));
                    }
                }
            }
            let shown = if eps.is_empty() {
                "<none>".to_string()
            } else if eps.len() > 3 {
                format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
            } else {
                eps.join(",")
            };
            vec![name, json!(shown), a]
        }
        "ConfigMap" => vec![name, json!(o["data"].as_object().map_or(0, |m| m.len())), a],
        "Secret" => vec![
            name,
            json!(s(o, "type")),
            json!(o["data"].as_object().map_or(0, |m| m.len())),
            a,
        ],
        "ServiceAccount" => vec![name, json!(o["secrets"].as_array().map_or(0, Vec::len)), a],
        "Lease" => vec![name, json!(s(spec, "holderIdentity")), a],
        "Event" => {
            let last = o["lastTimestamp"]
                .as_str()
                .or(o["eventTime"].as_str())
                .or(ts);
            let io = &o["involvedObject"];
            vec![
                json!(age(last)),
                json!(s(o, "type")),
                json!(s(o, "reason")),
                json!(format!(
                    "{}/{}",
                    s(io, "kind").to_lowercase(),
                    s(io, "name")
                )),
                json!(s(o, "message")),
            ]
        }
        _ => vec![name, json!(ts.unwrap_or(""))],
    }
}

/// The STATUS column of a pod, as kubectl prints it.
pub fn pod_status(pod: &Value) -> String {
    let st = &pod["status"];
    if pod["metadata"]["deletionTimestamp"].is_string() {
        return "Terminating".into();
    }
    let mut reason = st["reason"]
        .as_str()
        .unwrap_or(st["phase"].as_str().unwrap_or("Pending"))
        .to_string();
    for c in st["containerStatuses"].as_array().into_iter().flatten() {
        let state = &c["state"];
        if let Some(r) = get_path(state, "waiting.reason").and_then(Value::as_str) {
            reason = r.to_string();
        } else if let Some(t) = state.get("terminated") {
            reason = t["reason"].as_str().map_or_else(
                || format!("ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
                str::to_string,
            );
        }
    }
    reason
}

/// A Table of `objects` of `kind`. `include`: "None", "Metadata" (default) or "Object".
pub fn table(kind: &str, objects: &[&Value], rv: &str, include: &str, headers: bool) -> Value {
    let cols: Vec<Value> = columns(kind)
        .into_iter()
        .map(|(n, t, p)| {
            let mut c =
                json!({"name": n, "type": t, "format": "", "description": n, "priority": p});
            if n == "Name" {
                c["format"] = json!("name");
            }
            c
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let object = match include {
                "None" => Value::Null,
                "Object" => (*o).clone(),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"]}),
            };
            json!({"cells": cells(kind, o), "object": object})
        })
        .collect();
    let mut t = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv}, "rows": rows});
    if headers {
        t["columnDefinitions"] = Value::Array(cols);
    } else {
        t["columnDefinitions"] = json!([]);
    }
    t
}
