//! Kubelet simulation: per node, heartbeats (node status conditions and a Lease) while the
//! kubelet runs, Ready only with a CNI installed; pods bound to the node go Pending →
//! ContainerCreating → Running, become ready after their image's start delay, crash and restart
//! with CrashLoopBackOff back-off, fail with ErrImagePull for unknown images, and deleted pods
//! are stopped and removed. Image behaviour comes from [`ImageTable`].

use crate::apiserver::ApiServer;
use crate::controllers::set_condition;
use crate::util::{self, name, namespace, now};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a container of an image does once started.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// Runs and becomes ready after `ready_after`.
    Serve {
        /// Start-up time until the readiness probe passes.
        ready_after: Duration,
    },
    /// Needs a Service with a ready endpoint when it starts; without one it exits with code 1
    /// after `fail_after` (Let's Chat without MongoDB: "Could not connect to database").
    NeedsService {
        /// The Service name (in the pod's namespace).
        service: String,
        /// Start-up time when the service is there.
        ready_after: Duration,
        /// Time until it exits when the service is missing.
        fail_after: Duration,
    },
    /// Exits with `code` after `after` (for tests).
    Exit {
        /// Exit code.
        code: i32,
        /// Run time.
        after: Duration,
    },
    /// The Calico node agent: once ready, marks its node's CNI installed.
    CalicoNode {
        /// Start-up time.
        ready_after: Duration,
    },
    /// The Tigera operator: once ready, turns `Installation` objects into calico-node.
    TigeraOperator {
        /// Start-up time.
        ready_after: Duration,
    },
}

/// The image behaviour table (repository without tag → behaviour; `repo:tag` entries win).
#[derive(Debug, Clone)]
pub struct ImageTable {
    /// Entries.
    pub entries: Vec<(String, Behaviour)>,
    /// Time to "pull" an image.
    pub pull: Duration,
}

impl Default for ImageTable {
    fn default() -> Self {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        ImageTable {
            pull: ms(500),
            entries: vec![
                ("mongo:4.4".into(), Behaviour::Serve { ready_after: s(2) }),
                ("mongo".into(), Behaviour::Serve { ready_after: s(2) }),
                (
                    "sdelements/lets-chat".into(),
                    Behaviour::NeedsService {
                        service: "mongo".into(),
                        ready_after: s(1),
                        fail_after: ms(800),
                    },
                ),
                (
                    "nginx".into(),
                    Behaviour::Serve {
                        ready_after: ms(300),
                    },
                ),
                (
                    "busybox".into(),
                    Behaviour::Serve {
                        ready_after: ms(100),
                    },
                ),
                (
                    "registry.k8s.io/pause".into(),
                    Behaviour::Serve {
                        ready_after: ms(100),
                    },
                ),
                (
                    "quay.io/tigera/operator".into(),
                    Behaviour::TigeraOperator { ready_after: s(1) },
                ),
                (
                    "calico/node".into(),
                    Behaviour::CalicoNode { ready_after: s(1) },
                ),
                (
                    "docker.io/calico/node".into(),
                    Behaviour::CalicoNode { ready_after: s(1) },
                ),
                (
                    "quay.io/calico/node".into(),
                    Behaviour::CalicoNode { ready_after: s(1) },
                ),
            ],
        }
    }
}

impl ImageTable {
    /// The behaviour of `image`, if known.
    pub fn lookup(&self, image: &str) -> Option<&Behaviour> {
        let repo = match image.rsplit_once(':') {
            Some((r, tag)) if !tag.contains('/') => r,
            _ => image,
        };
        let repo = repo.split('@').next().unwrap_or(repo);
        let short = repo.strip_prefix("docker.io/").unwrap_or(repo);
        let short = short.strip_prefix("library/").unwrap_or(short);
        self.entries
            .iter()
            .find(|(k, _)| k == image)
            .or_else(|| self.entries.iter().find(|(k, _)| k == repo || k == short))
            .map(|(_, b)| b)
    }
}

/// Callback run when a node's CNI becomes installed (the host harness writes the host's
/// `etc/cni/net.d/10-calico.conflist`).
pub type CniHook = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Debug, Default)]
struct PodRun {
    started: Option<Instant>,
    ready_at: Option<Instant>,
    exit_at: Option<(Instant, i32)>,
    backoff_until: Option<Instant>,
    restarts: u32,
    last_exit: Option<(i32, String, String, String)>,
    seen: Option<Instant>,
    ip: String,
    kill_at: Option<Instant>,
    pull_failed: bool,
    started_at_s: String,
    /// The resourceVersion this kubelet last saw or wrote while the pod was steady (running,
    /// ready, nothing scheduled): an unchanged pod is skipped.
    steady_rv: Option<String>,
    /// When the container last exited (its state shows `terminated` for a moment, then
    /// `waiting: CrashLoopBackOff`, as kubectl's STATUS `Error` → `CrashLoopBackOff`).
    exited_at: Option<Instant>,
}

/// The simulated state of one node.
#[derive(Debug, Default)]
pub struct NodeSim {
    /// Kubelet running (heartbeating).
    pub running: bool,
    /// A CNI is installed.
    pub cni: bool,
    /// InternalIP.
    pub ip: String,
    pod_cidr: Option<ipnet::Ipv4Net>,
    next_ip: u32,
    last_heartbeat: Option<Instant>,
    last_cni: bool,
    pods: HashMap<String, PodRun>,
}

/// All kubelets.
pub struct Kubelets {
    api: Arc<ApiServer>,
    /// Per node.
    pub nodes: Mutex<HashMap<String, NodeSim>>,
    images: ImageTable,
    scale: f64,
    heartbeat: Duration,
    hooks: Mutex<Vec<CniHook>>,
}

impl std::fmt::Debug for Kubelets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelets").finish_non_exhaustive()
    }
}

impl Kubelets {
    /// New kubelets with an image table and delay scale.
    pub fn new(api: Arc<ApiServer>, images: ImageTable, scale: f64, heartbeat: Duration) -> Self {
        Kubelets {
            api,
            nodes: Mutex::new(HashMap::new()),
            images,
            scale,
            heartbeat,
            hooks: Mutex::new(Vec::new()),
        }
    }

    fn d(&self, d: Duration) -> Duration {
        d.mul_f64(self.scale)
    }

    /// Adds a CNI hook.
    pub fn on_cni_installed(&self, hook: CniHook) {
        self.hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(hook);
    }

    /// Registers a node's simulation.
    pub fn add_node(&self, node: &str, ip: &str, pod_cidr: Option<ipnet::Ipv4Net>) {
        let mut g = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let n = g.entry(node.to_string()).or_default();
        n.ip = ip.to_string();
        n.pod_cidr = pod_cidr;
    }

    /// Starts or stops a node's kubelet.
    pub fn set_running(&self, node: &str, running: bool) {
        let mut g = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let n = g.entry(node.to_string()).or_default();
        n.running = running;
        n.last_heartbeat = None;
    }

    /// Marks a node's CNI installed (or not); runs the hooks on installation.
    pub fn set_cni(&self, node: &str, installed: bool) {
        let was = {
            let mut g = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            let n = g.entry(node.to_string()).or_default();
            std::mem::replace(&mut n.cni, installed)
        };
        if installed && !was {
            let hooks: Vec<CniHook> = self.hooks.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for h in hooks {
                h(node);
            }
        }
    }

    /// Runs all kubelets until `stop`.
    pub async fn run(self: Arc<Self>, tick: Duration, stop: tokio_util::sync::CancellationToken) {
        let mut changed = self.api.store.changed.subscribe();
        loop {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step())).is_err() {
                tracing::error!("the kubelet simulation panicked; continuing");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = changed.changed() => tokio::time::sleep(Duration::from_millis(5)).await,
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// One pass over every node.
    pub fn step(&self) {
        let pods = self.api.store.list("pods", None).0;
        let mut by_node: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
        for p in pods {
            if let Some(n) = p["spec"]["nodeName"].as_str() {
                by_node.entry(n.to_string()).or_default().push(p);
            }
        }
        let mut cni_installs = Vec::new();
        let mut g = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        for (node, sim) in g.iter_mut() {
            if !sim.running {
                continue;
            }
            let now_i = Instant::now();
            if sim
                .last_heartbeat
                .is_none_or(|t| now_i - t >= self.heartbeat)
                || sim.last_cni != sim.cni
            {
                self.heartbeat(node, sim);
                sim.last_heartbeat = Some(now_i);
                sim.last_cni = sim.cni;
            }
            let mine = by_node.remove(node).unwrap_or_default();
            let live: std::collections::HashSet<String> = mine
                .iter()
                .map(|p| util::s(&p["metadata"], "uid").to_string())
                .collect();
            sim.pods.retain(|uid, _| live.contains(uid));
            for p in mine {
                if let Some(n) = self.pod(node, sim, &p) {
                    cni_installs.push(n);
                }
            }
        }
        drop(g);
        for n in cni_installs {
            self.set_cni(&n, true);
        }
    }

    fn heartbeat(&self, node: &str, sim: &NodeSim) {
        let mut t = self.api.store.txn();
        let Some(cur) = t.get("nodes", "", node) else {
            return;
        };
        let mut n = (*cur).clone();
        let ts = now();
        let conds = [
            (
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            (
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            (
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        ];
        for (ty, st, reason, msg) in conds {
            set_condition(&mut n, ty, st, reason, msg);
        }
        if sim.cni {
            set_condition(
                &mut n,
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
            );
        } else {
            set_condition(
                &mut n,
                "Ready",
                "False",
                "KubeletNotReady",
                "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
            );
        }
        for c in n["status"]["conditions"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            c["lastHeartbeatTime"] = json!(ts);
            if let Some(o) = c.as_object_mut() {
                o.remove("lastProbeTime");
            }
        }
        t.put("nodes", "", node, n);
        // the node Lease
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {
            "name": node, "namespace": "kube-node-lease", "uid": format!("lease-{node}"),
            "creationTimestamp": ts},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": ts.trim_end_matches('Z').to_string() + ".000000Z"}});
        if t.get("namespaces", "", "kube-node-lease").is_some() {
            t.put("leases.coordination.k8s.io", "kube-node-lease", node, lease);
        }
    }

    /// Advances one pod; returns a node name whose CNI this pod installs.
    fn pod(&self, node: &str, sim: &mut NodeSim, p: &Value) -> Option<String> {
        let uid = util::s(&p["metadata"], "uid").to_string();
        let (ns, pname) = (namespace(p).to_string(), name(p).to_string());
        let now_i = Instant::now();
        let host_network = p["spec"]["hostNetwork"] == json!(true);
        let node_ip = sim.ip.clone();
        let cni = sim.cni;
        if !sim.pods.contains_key(&uid) {
            let ip = if host_network {
                node_ip.clone()
            } else {
                sim.next_ip += 1;
                match sim.pod_cidr {
                    Some(c) => {
                        Ipv4Addr::from(u32::from(c.network()) + 1 + (sim.next_ip % 250)).to_string()
                    }
                    None => String::new(),
                }
            };
            sim.pods.insert(
                uid.clone(),
                PodRun {
                    seen: Some(now_i),
                    ip,
                    ..Default::default()
                },
            );
        }
        let run = sim.pods.get_mut(&uid).expect("inserted");
        let rv = util::s(&p["metadata"], "resourceVersion").to_string();
        if run.steady_rv.as_deref() == Some(rv.as_str()) {
            return None;
        }
        run.steady_rv = None;
        // deletion: stop, then remove the object
        if p["metadata"]["deletionTimestamp"].is_string() {
            let grace = p["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(30)
                .max(0) as u64;
            let stop = self
                .d(Duration::from_millis(300))
                .min(Duration::from_secs(grace));
            if run.kill_at.is_none() {
                let cname = util::s(&p["spec"]["containers"][0], "name");
                let msg = format!("Stopping container {cname}");
                crate::controllers::event(&self.api, p, false, "Killing", &msg, "kubelet", node);
            }
            let at = *run.kill_at.get_or_insert(now_i + stop);
            if now_i >= at {
                self.api.force_remove("pods", &ns, &pname);
            }
            return None;
        }
        if p["status"]["phase"] == "Succeeded" || p["status"]["phase"] == "Failed" {
            return None;
        }
        let containers = p["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let image = util::s(&containers[0], "image").to_string();
        let cname = util::s(&containers[0], "name").to_string();
        let behaviour = self.images.lookup(&image).cloned();
        let seen = run.seen.unwrap_or(now_i);
        let mut waiting: Option<(String, String)> = None;
        let mut running = false;
        let mut ready = false;
        let mut install_cni = None;
        let network_ok = host_network || cni;
        let pulling =
            now_i < seen + self.d(self.images.pull) && run.started.is_none() && !run.pull_failed;
        if !network_ok || pulling {
            waiting = Some(("ContainerCreating".into(), String::new()));
        } else if behaviour.is_none() {
            if !run.pull_failed {
                let msg = format!(
                    "Failed to pull image \"{image}\": pull access denied, repository does not exist or may require authorization"
                );
                crate::controllers::event(&self.api, p, true, "Failed", &msg, "kubelet", node);
            }
            run.pull_failed = true;
            let first = now_i < seen + self.d(self.images.pull) + self.d(Duration::from_secs(2));
            waiting = Some(if first {
                (
                    "ErrImagePull".into(),
                    format!(
                        "failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": pull access denied, repository does not exist or may require authorization"
                    ),
                )
            } else {
                (
                    "ImagePullBackOff".into(),
                    format!("Back-off pulling image \"{image}\""),
                )
            });
        } else if let Some(until) = run.backoff_until {
            if now_i < until {
                waiting = Some((
                    "CrashLoopBackOff".into(),
                    format!(
                        "back-off {}s restarting failed container={cname} pod={pname}_{ns}({uid})",
                        backoff_secs(run.restarts)
                    ),
                ));
            } else {
                run.backoff_until = None;
                run.started = None;
            }
        }
        let behaviour = behaviour.unwrap_or(Behaviour::Serve {
            ready_after: Duration::ZERO,
        });
        if waiting.is_none() {
            if run.started.is_none() {
                if run.restarts == 0 {
                    let msg = format!("Successfully pulled image \"{image}\"");
                    crate::controllers::event(&self.api, p, false, "Pulled", &msg, "kubelet", node);
                }
                let msg = format!("Started container {cname}");
                crate::controllers::event(&self.api, p, false, "Started", &msg, "kubelet", node);
                run.started = Some(now_i);
                run.started_at_s = now();
                run.ready_at = None;
                run.exit_at = None;
                match &behaviour {
                    Behaviour::Serve { ready_after }
                    | Behaviour::CalicoNode { ready_after }
                    | Behaviour::TigeraOperator { ready_after } => {
                        run.ready_at = Some(now_i + self.d(*ready_after));
                    }
                    Behaviour::NeedsService {
                        service,
                        ready_after,
                        fail_after,
                    } => {
                        if self.service_ready(&ns, service) {
                            run.ready_at = Some(now_i + self.d(*ready_after));
                        } else {
                            run.exit_at = Some((now_i + self.d(*fail_after), 1));
                        }
                    }
                    Behaviour::Exit { code, after } => {
                        run.exit_at = Some((now_i + self.d(*after), *code));
                    }
                }
            }
            if let Some((at, code)) = run.exit_at
                && now_i >= at
            {
                run.restarts += 1;
                run.last_exit = Some((
                    code,
                    if code == 0 {
                        "Completed".into()
                    } else {
                        "Error".into()
                    },
                    run.started_at_s.clone(),
                    now(),
                ));
                run.exited_at = Some(now_i);
                // a floor keeps delay_scale 0 from restarting in a busy loop
                let backoff = self
                    .d(Duration::from_secs(backoff_secs(run.restarts)))
                    .max(Duration::from_millis(20));
                run.backoff_until = Some(now_i + backoff);
                let msg = format!(
                    "Back-off restarting failed container {cname} in pod {pname}_{ns}({uid})"
                );
                crate::controllers::event(&self.api, p, true, "BackOff", &msg, "kubelet", node);
                run.started = None;
                waiting = Some((
                    "CrashLoopBackOff".into(),
                    format!(
                        "back-off {}s restarting failed container={cname} pod={pname}_{ns}({uid})",
                        backoff_secs(run.restarts)
                    ),
                ));
            } else {
                running = true;
                ready = run.ready_at.is_some_and(|r| now_i >= r);
                if ready && matches!(behaviour, Behaviour::CalicoNode { .. }) && !cni {
                    install_cni = Some(node.to_string());
                }
            }
        }
        if ready && matches!(behaviour, Behaviour::TigeraOperator { .. }) {
            crate::calico::operator_step(&self.api);
        }
        // the status
        let mut n = p.clone();
        let st = &mut n["status"];
        st["phase"] = json!(if running || run.restarts > 0 {
            "Running"
        } else {
            "Pending"
        });
        if run.restarts > 0 && !running {
            st["phase"] = json!("Running");
        }
        st["hostIP"] = json!(node_ip);
        st["hostIPs"] = json!([{"ip": node_ip}]);
        if network_ok && !run.ip.is_empty() {
            st["podIP"] = json!(run.ip);
            st["podIPs"] = json!([{"ip": run.ip}]);
        }
        if st["startTime"].is_null() {
            st["startTime"] = json!(now());
        }
        st["qosClass"] = json!("BestEffort");
        let just_exited = run
            .exited_at
            .is_some_and(|t| now_i < t + self.d(Duration::from_secs(1)));
        let state = if let (true, Some((code, reason, started, finished))) = (
            just_exited && waiting.as_ref().is_some_and(|w| w.0 == "CrashLoopBackOff"),
            &run.last_exit,
        ) {
            json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": started,
                "finishedAt": finished, "containerID": format!("containerd://{uid}-{}", run.restarts)}})
        } else if let Some((reason, msg)) = &waiting {
            let mut w = json!({"reason": reason});
            if !msg.is_empty() {
                w["message"] = json!(msg);
            }
            json!({"waiting": w})
        } else {
            json!({"running": {"startedAt": run.started_at_s}})
        };
        let mut last_state = json!({});
        if let Some((code, reason, started, finished)) = &run.last_exit {
            last_state = json!({"terminated": {"exitCode": code, "reason": reason,
                "startedAt": started, "finishedAt": finished, "containerID": format!("containerd://{uid}-{}", run.restarts)}});
        }
        let statuses: Vec<Value> = containers
            .iter()
            .map(|c| {
                let mut cs = json!({"name": c["name"], "image": c["image"], "imageID": "",
                    "ready": ready, "started": running, "restartCount": run.restarts,
                    "state": state, "lastState": last_state});
                if running || run.restarts > 0 {
                    cs["containerID"] = json!(format!("containerd://{uid}-{}", run.restarts));
                    cs["imageID"] = json!(format!("{}@sha256:simkube", util::s(c, "image")));
                }
                cs
            })
            .collect();
        st["containerStatuses"] = json!(statuses);
        set_condition(
            &mut n,
            "PodReadyToStartContainers",
            if network_ok { "True" } else { "False" },
            "",
            "",
        );
        set_condition(&mut n, "Initialized", "True", "", "");
        let (r, reason) = if ready {
            ("True", "")
        } else {
            ("False", "ContainersNotReady")
        };
        let msg = if ready {
            String::new()
        } else {
            format!("containers with unready status: [{cname}]")
        };
        set_condition(&mut n, "Ready", r, reason, &msg);
        set_condition(&mut n, "ContainersReady", r, reason, &msg);
        set_condition(&mut n, "PodScheduled", "True", "", "");
        let steady = running
            && ready
            && run.exit_at.is_none()
            && install_cni.is_none()
            && !matches!(behaviour, Behaviour::TigeraOperator { .. });
        if n != *p {
            let mut t = self.api.store.txn();
            if let Some(cur) = t.get("pods", &ns, &pname)
                && cur["metadata"]["uid"] == p["metadata"]["uid"]
                && cur["metadata"]["resourceVersion"] == p["metadata"]["resourceVersion"]
            {
                let stored = t.put("pods", &ns, &pname, n);
                if steady {
                    run.steady_rv =
                        Some(util::s(&stored["metadata"], "resourceVersion").to_string());
                }
            }
        } else if steady {
            run.steady_rv = Some(rv);
        }
        install_cni
    }

    fn service_ready(&self, ns: &str, svc: &str) -> bool {
        self.api.store.get("endpoints", ns, svc).is_some_and(|e| {
            e["subsets"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["addresses"].as_array().is_some_and(|a| !a.is_empty()))
        })
    }
}

/// CrashLoopBackOff delay after `restarts` failures: 10 s doubling, capped at 300 s.
pub fn backoff_secs(restarts: u32) -> u64 {
    (10u64 << restarts.saturating_sub(1).min(5)).min(300)
}
