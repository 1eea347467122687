//! The long-running side of the simulated cluster, owned by the harness: the simulated API
//! server (a [`simkube::SimCluster`]) that `kubeadm init` asks for, the nodes `kubeadm join`
//! registers, the bootstrap tokens `kubeadm token create` mints, and the kubelet simulations
//! `systemctl restart kubelet` starts. The short-lived shims reach it through the control socket
//! with one JSON request per connection (`{"op": "...", ...}`), see [`World::handle`].
//!
//! The simulated cluster runs on a tokio runtime owned by a dedicated thread, so the harness can
//! be created and dropped from sync or async code alike.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use cluster_common::config::ClusterConfig;
use serde_json::{Value, json};
use simkube::{NodeSpec, ServeHandle, SimCluster, SimOptions};

/// `sha256:<hex>` of the DER SubjectPublicKeyInfo of a PEM certificate (kubeadm's CA pin).
pub fn ca_cert_hash(cert_pem: &str) -> Result<String, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| format!("CA certificate is not PEM: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("CA certificate does not parse: {e}"))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.tbs_certificate.subject_pki.raw);
    Ok(format!("sha256:{}", hex_lower(digest.as_ref())))
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A random bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn random_token() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 22];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).expect("random");
    let s: String = bytes
        .iter()
        .map(|b| CHARS[*b as usize % CHARS.len()] as char)
        .collect();
    format!("{}.{}", &s[..6], &s[6..])
}

/// Whether `t` looks like a bootstrap token.
pub fn valid_token(t: &str) -> bool {
    let Some((id, secret)) = t.split_once('.') else {
        return false;
    };
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    ok(id, 6) && ok(secret, 16)
}

struct Runtime {
    handle: tokio::runtime::Handle,
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

struct Running {
    sim: SimCluster,
    _serve: ServeHandle,
    endpoint: String,
    url: String,
    master_host: String,
}

/// The simulated cluster behind the shims.
pub struct World {
    config: Arc<ClusterConfig>,
    state: PathBuf,
    netns: Option<HashMap<String, String>>,
    runtime: Mutex<Option<Runtime>>,
    cluster: Mutex<Option<Running>>,
    /// host → node name registered by init/join.
    nodes: Mutex<HashMap<String, String>>,
    /// Multiplies the simulated delays (image pulls, starts).
    pub delay_scale: f64,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl World {
    /// A world for `config` with its state under `state`; `netns` maps host → namespace.
    pub fn new(
        config: Arc<ClusterConfig>,
        state: PathBuf,
        netns: Option<HashMap<String, String>>,
    ) -> Self {
        let delay_scale = std::env::var("TESTBED_DELAY_SCALE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.1);
        Self {
            config,
            state,
            netns,
            runtime: Mutex::new(None),
            cluster: Mutex::new(None),
            nodes: Mutex::new(HashMap::new()),
            delay_scale,
        }
    }

    fn rt(&self) -> tokio::runtime::Handle {
        let mut g = self.runtime.lock().expect("runtime lock");
        if let Some(r) = g.as_ref() {
            return r.handle.clone();
        }
        let (htx, hrx) = std::sync::mpsc::channel();
        let (stop, srx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("testbed-world".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("world runtime");
                let _ = htx.send(rt.handle().clone());
                let _ = srx.recv();
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .expect("spawn world thread");
        let handle = hrx.recv().expect("world runtime handle");
        *g = Some(Runtime {
            handle: handle.clone(),
            stop,
            thread,
        });
        handle
    }

    /// The admin client of the running simulated cluster, if `kubeadm init` ran.
    pub fn kube_client(&self) -> Option<kube::Client> {
        let g = self.cluster.lock().expect("cluster lock");
        let h = self.rt();
        let _e = h.enter();
        g.as_ref().map(|r| r.sim.kube_client())
    }

    /// The API server URL, if `kubeadm init` ran.
    pub fn api_url(&self) -> Option<String> {
        self.cluster
            .lock()
            .expect("cluster lock")
            .as_ref()
            .map(|r| r.url.clone())
    }

    /// Whether the kubelet simulation of `host` was started (and not stopped).
    pub fn kubelet_running(&self, host: &str) -> bool {
        self.nodes
            .lock()
            .expect("lock")
            .contains_key(&format!("running:{host}"))
    }

    /// Answers one control request.
    pub fn handle_request(&self, req: &Value) -> Result<Value, String> {
        let op = req.get("op").and_then(Value::as_str).unwrap_or("");
        let s = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        match op {
            "ping" => {
                Ok(json!({"hosts": self.config.hosts().count(), "netns": self.netns.is_some()}))
            }
            "kubeadm_init" => self.init(req),
            "kubeadm_join" => self.join(req),
            "token_create" => self.token_create(
                req.get("token").and_then(Value::as_str),
                req.get("ttl_secs").and_then(Value::as_u64).unwrap_or(86400),
                &s("description"),
            ),
            "token_list" => self.token_list(),
            "token_delete" => self.token_delete(&s("token_id")),
            "kubelet_start" => self.kubelet(&s("host"), true),
            "kubelet_stop" => self.kubelet(&s("host"), false),
            "reset" => self.reset(&s("host")),
            other => Err(format!("unknown control request {other:?}")),
        }
    }

    fn bind(
        &self,
        host: &str,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<std::net::TcpListener> {
        match self.netns.as_ref().and_then(|m| m.get(host)) {
            Some(ns) => crate::netns::bind_in(ns, addr),
            None => std::net::TcpListener::bind(addr),
        }
    }

    fn host_root(&self, host: &str) -> PathBuf {
        self.state.join(host).join("root")
    }

    fn init(&self, req: &Value) -> Result<Value, String> {
        let s = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let host = s("host");
        let node = s("node_name");
        let advertise = s("advertise");
        let port = req.get("port").and_then(Value::as_u64).unwrap_or(6443);
        let mut g = self.cluster.lock().expect("cluster lock");
        if g.is_some() {
            return Err(format!("[ERROR Port-{port}]: Port {port} is in use"));
        }
        let addr: std::net::SocketAddr = format!("{advertise}:{port}")
            .parse()
            .map_err(|e| format!("invalid advertise address {advertise:?}: {e}"))?;
        let std_listener = self
            .bind(&host, addr)
            .map_err(|e| format!("[ERROR Port-{port}]: Port {port} is in use ({e})"))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        // The simulated API server keeps simkube's default version whatever kubeadm deploys:
        // the installed kubectl dispatcher picks its client by the server's minor, and only the
        // clients simkube speaks (JSON, not protobuf) must be chosen.
        let mut opts = SimOptions {
            delay_scale: self.delay_scale,
            heartbeat: Duration::from_millis(500),
            node_grace: Duration::from_secs(5),
            tick: Duration::from_millis(50),
            ..Default::default()
        };
        if let Ok(c) = s("service_subnet").parse() {
            opts.service_cidr = c;
        }
        if let Ok(c) = s("pod_subnet").parse() {
            opts.pod_cidr = c;
        }
        let h = self.rt();
        let _e = h.enter();
        let sim = SimCluster::new(opts).map_err(|e| e.to_string())?;
        let listener =
            tokio::net::TcpListener::from_std(std_listener).map_err(|e| e.to_string())?;
        let mut sans: Vec<String> = vec![
            node.clone(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
            "10.96.0.1".into(),
        ];
        if let Some(extra) = req.get("cert_sans").and_then(Value::as_array) {
            sans.extend(extra.iter().filter_map(Value::as_str).map(str::to_string));
        }
        let serve = sim
            .serve_https(listener, None, &sans)
            .map_err(|e| e.to_string())?;
        let url = format!("https://{addr}");
        sim.publish_cluster_info(&url).map_err(|e| e.to_string())?;
        sim.register_node(&NodeSpec {
            name: node.clone(),
            ip: s("node_ip"),
            control_plane: true,
        })
        .map_err(|e| e.to_string())?;
        if let Some(cc) = req.get("cluster_configuration").and_then(Value::as_str) {
            let _ = sim.apply_object(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
                "data": {"ClusterConfiguration": cc}}));
        }
        // The CNI (Calico's operator in the simulated cluster) writes its config on each node.
        let roots: Arc<Mutex<HashMap<String, PathBuf>>> = Arc::new(Mutex::new(HashMap::new()));
        let state = self.state.clone();
        let config = self.config.clone();
        sim.on_cni_installed(move |node| {
            let host = config
                .hosts()
                .find(|h| h.name.as_str() == node)
                .map(|h| h.name.to_string())
                .unwrap_or_else(|| node.to_string());
            let dir = state.join(host).join("root/etc/cni/net.d");
            if dir.is_dir() {
                let _ = std::fs::write(
                    dir.join("10-calico.conflist"),
                    "{\n  \"name\": \"k8s-pod-network\",\n  \"cniVersion\": \"0.3.1\",\n  \"plugins\": [{\"type\": \"calico\"}, {\"type\": \"portmap\", \"capabilities\": {\"portMappings\": true}}]\n}\n",
                );
                let _ = std::fs::write(dir.join("calico-kubeconfig"), "# written by calico-node\n");
            }
        });
        drop(roots);
        let ca_crt = sim.ca().cert_pem.clone();
        let ca_key = sim.ca().key_pem().to_string();
        let kc = |user: &str, groups: &[&str]| {
            sim.kubeconfig(&url, user, groups)
                .map_err(|e| e.to_string())
        };
        let admin = kc("kubernetes-admin", &["kubeadm:cluster-admins"])?;
        let super_admin = kc("kubernetes-super-admin", &["system:masters"])?;
        let kubelet = kc(&format!("system:node:{node}"), &["system:nodes"])?;
        let cm = kc("system:kube-controller-manager", &[])?;
        let sched = kc("system:kube-scheduler", &[])?;
        let endpoint = format!("{addr}");
        *g = Some(Running {
            sim,
            _serve: serve,
            endpoint: endpoint.clone(),
            url: url.clone(),
            master_host: host.clone(),
        });
        drop(g);
        self.nodes.lock().expect("lock").insert(host, node);
        let token = self.token_create(
            req.get("token").and_then(Value::as_str),
            req.get("token_ttl_secs")
                .and_then(Value::as_u64)
                .unwrap_or(86400),
            "The default bootstrap token generated by 'kubeadm init'.",
        )?;
        Ok(json!({
            "ca_crt": ca_crt, "ca_key": ca_key, "admin": admin, "super_admin": super_admin,
            "kubelet": kubelet, "controller_manager": cm, "scheduler": sched,
            "url": url, "endpoint": endpoint, "token": token["token"], "ca_hash": ca_cert_hash(&ca_crt)?,
        }))
    }

    fn token_create(
        &self,
        token: Option<&str>,
        ttl_secs: u64,
        description: &str,
    ) -> Result<Value, String> {
        let g = self.cluster.lock().expect("cluster lock");
        let Some(run) = g.as_ref() else {
            return Err("couldn't create a Kubernetes client from file \"/etc/kubernetes/admin.conf\": the API server is not running".into());
        };
        let token = token.map(str::to_string).unwrap_or_else(random_token);
        if !valid_token(&token) {
            return Err(format!(
                "the bootstrap token \"{token}\" was not of the form \"^([a-z0-9]{{6}})\\.([a-z0-9]{{16}})$\""
            ));
        }
        let (id, secret) = token.split_once('.').expect("validated");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut data = serde_json::Map::new();
        data.insert("token-id".into(), json!(b64(id)));
        data.insert("token-secret".into(), json!(b64(secret)));
        data.insert("usage-bootstrap-authentication".into(), json!(b64("true")));
        data.insert("usage-bootstrap-signing".into(), json!(b64("true")));
        data.insert(
            "auth-extra-groups".into(),
            json!(b64("system:bootstrappers:kubeadm:default-node-token")),
        );
        data.insert("description".into(), json!(b64(description)));
        if ttl_secs > 0 {
            let exp = SystemTime::now() + Duration::from_secs(ttl_secs);
            data.insert(
                "expiration".into(),
                json!(b64(&simkube::util::rfc3339(exp))),
            );
        }
        let h = self.rt();
        let _e = h.enter();
        run.sim
            .apply_object(json!({"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
                "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
                "data": data}))
            .map_err(|e| e.to_string())?;
        Ok(
            json!({"token": token, "endpoint": run.endpoint, "ca_hash": ca_cert_hash(&run.sim.ca().cert_pem)?}),
        )
    }

    fn token_list(&self) -> Result<Value, String> {
        let g = self.cluster.lock().expect("cluster lock");
        let run = g.as_ref().ok_or("the API server is not running")?;
        let tokens = simkube::controllers::bootstrap_tokens(&run.sim.api);
        Ok(json!(tokens.iter().map(|(id, d)| json!({"id": id, "expiration": d.get("expiration"), "description": d.get("description")})).collect::<Vec<_>>()))
    }

    fn token_delete(&self, id: &str) -> Result<Value, String> {
        let g = self.cluster.lock().expect("cluster lock");
        let run = g.as_ref().ok_or("the API server is not running")?;
        let id = id.split('.').next().unwrap_or("");
        let h = self.rt();
        let _e = h.enter();
        run.sim
            .api
            .force_remove("secrets", "kube-system", &format!("bootstrap-token-{id}"))
            .ok_or_else(|| format!("bootstrap token \"{id}\" not found"))?;
        Ok(json!({"deleted": id}))
    }

    fn join(&self, req: &Value) -> Result<Value, String> {
        let s = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let host = s("host");
        let endpoint = s("endpoint");
        let token = s("token");
        let node = s("node_name");
        let (id, secret) = token.split_once('.').unwrap_or(("", ""));
        let deadline = Instant::now() + Duration::from_secs(3);
        let cluster_info = format!(
            "https://{endpoint}/api/v1/namespaces/kube-public/configmaps/cluster-info?timeout=10s"
        );
        loop {
            let g = self.cluster.lock().expect("cluster lock");
            let Some(run) = g.as_ref().filter(|r| r.endpoint == endpoint) else {
                drop(g);
                if Instant::now() > deadline {
                    return Err(format!(
                        "couldn't validate the identity of the API Server: failed to request the cluster-info ConfigMap: Get \"{cluster_info}\": dial tcp {endpoint}: connect: connection refused"
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
                continue;
            };
            let tokens = simkube::controllers::bootstrap_tokens(&run.sim.api);
            let signed = run
                .sim
                .api
                .store
                .get("configmaps", "kube-public", "cluster-info")
                .is_some_and(|cm| cm["data"].get(format!("jws-kubeconfig-{id}")).is_some());
            match tokens.get(id) {
                Some(d) if signed => {
                    if d.get("token-secret").map(String::as_str) != Some(secret) {
                        return Err("couldn't validate the identity of the API Server: failed to verify JWS signature of received cluster info object, can't trust this API server".into());
                    }
                }
                _ if Instant::now() > deadline => {
                    return Err(format!(
                        "couldn't validate the identity of the API Server: could not find a JWS signature in the cluster-info ConfigMap for token ID \"{id}\""
                    ));
                }
                _ => {
                    drop(g);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            let actual = ca_cert_hash(&run.sim.ca().cert_pem)?;
            let pins: Vec<String> = req
                .get("ca_hashes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            if pins.is_empty()
                && !req
                    .get("unsafe_skip_ca")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            {
                return Err("discovery.bootstrapToken: Invalid value: \"\": using token-based discovery without caCertHashes can be unsafe. Set unsafeSkipCAVerification as true in your kubeadm config file or pass --discovery-token-unsafe-skip-ca-verification flag to continue".into());
            }
            if !pins.is_empty() && !pins.iter().any(|p| p.eq_ignore_ascii_case(&actual)) {
                return Err(format!(
                    "couldn't validate the identity of the API Server: cluster CA found in cluster-info ConfigMap is invalid: none of the public keys \"{actual}\" are pinned"
                ));
            }
            if let Some(existing) = run.sim.api.store.get("nodes", "", &node)
                && simkube::controllers::node_ready(&existing)
            {
                return Err(format!(
                    "a Node with name \"{node}\" and status \"Ready\" already exists in the cluster. You must delete the existing Node or change the name of this new joining Node"
                ));
            }
            let ca_crt = run.sim.ca().cert_pem.clone();
            if req
                .get("discover_only")
                .and_then(Value::as_bool)
                .unwrap_or(false)
            {
                return Ok(json!({"ca_crt": ca_crt}));
            }
            let h = self.rt();
            let _e = h.enter();
            run.sim
                .register_node(&NodeSpec {
                    name: node.clone(),
                    ip: s("node_ip"),
                    control_plane: false,
                })
                .map_err(|e| e.to_string())?;
            let kubelet = run
                .sim
                .kubeconfig(&run.url, &format!("system:node:{node}"), &["system:nodes"])
                .map_err(|e| e.to_string())?;
            drop(g);
            self.nodes.lock().expect("lock").insert(host, node);
            return Ok(json!({"ca_crt": ca_crt, "kubelet": kubelet}));
        }
    }

    fn kubelet(&self, host: &str, run: bool) -> Result<Value, String> {
        let node = self.nodes.lock().expect("lock").get(host).cloned();
        let g = self.cluster.lock().expect("cluster lock");
        let (Some(node), Some(c)) = (node, g.as_ref()) else {
            if run {
                return Err(format!(
                    "kubelet on {host}: the node is not part of a running cluster"
                ));
            }
            return Ok(Value::Null);
        };
        let h = self.rt();
        let _e = h.enter();
        let key = format!("running:{host}");
        if run {
            c.sim.start_kubelet(&node);
            self.nodes.lock().expect("lock").insert(key, node);
        } else {
            c.sim.stop_kubelet(&node);
            self.nodes.lock().expect("lock").remove(&key);
        }
        Ok(Value::Null)
    }

    fn reset(&self, host: &str) -> Result<Value, String> {
        let _ = self.kubelet(host, false);
        let mut g = self.cluster.lock().expect("cluster lock");
        if g.as_ref().is_some_and(|r| r.master_host == host) {
            let run = g.take().expect("checked");
            let h = self.rt();
            let _e = h.enter();
            drop(run);
        }
        self.nodes.lock().expect("lock").remove(host);
        let _ = self.host_root(host);
        Ok(Value::Null)
    }

    /// Stops every simulated API server and kubelet, and the runtime they run on.
    pub fn shutdown(&self) {
        if let Some(run) = self.cluster.lock().expect("cluster lock").take() {
            let h = self.rt();
            let _e = h.enter();
            drop(run);
        }
        if let Some(rt) = self.runtime.lock().expect("runtime lock").take() {
            let _ = rt.stop.send(());
            let _ = rt.thread.join();
        }
    }
}
