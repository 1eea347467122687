//! [`SimCluster`]: the in-process simulated cluster (API server state, controllers, kubelets),
//! its in-process kube-rs client, its HTTPS server and node control for host harnesses.

use crate::apiserver::{ApiServer, WriteOpts};
use crate::controllers::{self, ControllerOptions};
use crate::http::{Auth, Body, Server, User};
use crate::kubelet::{CniHook, ImageTable, Kubelets};
use crate::pki::{Ca, Issued, PkiError};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Errors of the simulated cluster.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// PKI.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// An API call failed.
    #[error("API: {0}")]
    Api(#[from] crate::apiserver::ApiError),
    /// I/O (listener, files).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Options of a simulated cluster.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The version `/version` reports (default 1.31).
    pub version: (u32, u32),
    /// The minor version `/version` reports to the `kubectl` dispatcher (User-Agent
    /// `kubectl-dispatcher/…`), which then runs `kubectl.1.<minor>` (1.27–1.33 are installed; any
    /// other minor runs its built-in 1.32). kubectl ≥ 1.32 sends protobuf bodies for typed
    /// `kubectl create <kind>` generators, which this JSON-only server refuses (415), so the
    /// default is 31 whatever `version` says. `None` tells the dispatcher the real version.
    pub kubectl_minor: Option<u32>,
    /// Service CIDR (kubeadm's default 10.96.0.0/12).
    pub service_cidr: ipnet::Ipv4Net,
    /// Pod CIDR, split into one /24 per node.
    pub pod_cidr: ipnet::Ipv4Net,
    /// Multiplies every simulated delay (image pull, start, back-off); 0 makes them instant.
    pub delay_scale: f64,
    /// Kubelet heartbeat period.
    pub heartbeat: Duration,
    /// A node without heartbeat for this long goes Unknown.
    pub node_grace: Duration,
    /// How images behave.
    pub images: ImageTable,
    /// The CA (cert PEM, key PEM); generated when `None`.
    pub ca: Option<(String, String)>,
    /// Kubelet tick (start delays, back-off, heartbeats are checked this often); the
    /// controllers' time-based checks run every 5 ticks.
    pub tick: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            version: (1, 31),
            kubectl_minor: Some(31),
            service_cidr: "10.96.0.0/12".parse().expect("cidr"),
            pod_cidr: "10.244.0.0/16".parse().expect("cidr"),
            delay_scale: 1.0,
            heartbeat: Duration::from_secs(10),
            node_grace: Duration::from_secs(40),
            images: ImageTable::default(),
            ca: None,
            tick: Duration::from_millis(200),
        }
    }
}

impl SimOptions {
    /// Options for fast tests: delays scaled by `scale`, heartbeats every 100 ms, grace 3 s
    /// (heartbeat times have second resolution, so the grace must exceed 1 s).
    pub fn fast(scale: f64) -> Self {
        SimOptions {
            delay_scale: scale,
            heartbeat: Duration::from_millis(100),
            node_grace: Duration::from_secs(3),
            tick: Duration::from_millis(20),
            ..Default::default()
        }
    }
}

/// A node to register.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// InternalIP.
    pub ip: String,
    /// Control-plane node (labelled and tainted `NoSchedule`).
    pub control_plane: bool,
}

/// The simulated cluster. Dropping it stops its controllers, kubelets and servers.
pub struct SimCluster {
    /// API semantics and store.
    pub api: Arc<ApiServer>,
    server: Arc<Server>,
    kubelets: Arc<Kubelets>,
    ca: Arc<Ca>,
    opts: SimOptions,
    stop: CancellationToken,
    ctrl: ControllerOptions,
}

impl std::fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCluster").finish_non_exhaustive()
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The admin identity (kubeadm's admin.conf: CN kubernetes-admin, O kubeadm:cluster-admins).
pub fn admin() -> User {
    User {
        name: "kubernetes-admin".into(),
        groups: vec![
            "kubeadm:cluster-admins".into(),
            "system:authenticated".into(),
        ],
    }
}

impl SimCluster {
    /// Starts a cluster (needs a tokio runtime): namespaces `default`, `kube-system`,
    /// `kube-public`, `kube-node-lease`, the `kubernetes` Service; controllers and kubelets run.
    pub fn new(opts: SimOptions) -> Result<Self, SimError> {
        let ca = match &opts.ca {
            Some((c, k)) => Ca::from_pem(c, k)?,
            None => Ca::generate()?,
        };
        let api = Arc::new(ApiServer::new(opts.service_cidr, opts.version));
        let server = Arc::new(Server {
            api: api.clone(),
            watch_reset: std::sync::Mutex::new(CancellationToken::new()),
            bookmark_every: Duration::from_secs(1),
            dispatcher_minor: opts.kubectl_minor,
        });
        let kubelets = Arc::new(Kubelets::new(
            api.clone(),
            opts.images.clone(),
            opts.delay_scale,
            opts.heartbeat,
        ));
        let stop = CancellationToken::new();
        let ctrl = ControllerOptions {
            node_grace: opts.node_grace,
            server_url: "https://127.0.0.1:6443".into(),
            ca_pem: ca.cert_pem.clone(),
        };
        let c = SimCluster {
            api,
            server,
            kubelets,
            ca: Arc::new(ca),
            opts,
            stop,
            ctrl,
        };
        let ns = c.api.def("namespaces");
        for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            c.api.create(
                &ns,
                "",
                json!({"metadata": {"name": n}}),
                &WriteOpts::default(),
            )?;
        }
        let svc = c.api.def("services");
        c.api.create(
            &svc,
            "default",
            json!({"metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 6443, "protocol": "TCP"}]}}),
            &WriteOpts::default(),
        )?;
        // controllers react to every change; their tick only drives time-based transitions
        // (node grace, progress deadline), so it can be slower than the kubelets'
        tokio::spawn(controllers::run(
            c.api.clone(),
            c.ctrl.clone(),
            c.opts.tick * 5,
            c.stop.clone(),
        ));
        tokio::spawn(c.kubelets.clone().run(c.opts.tick, c.stop.clone()));
        Ok(c)
    }

    /// The options.
    pub fn options(&self) -> &SimOptions {
        &self.opts
    }

    /// The CA.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// A kube-rs client talking to this cluster in-process, as the admin.
    pub fn kube_client(&self) -> kube::Client {
        self.kube_client_as(admin())
    }

    /// A kube-rs client talking in-process as `user`.
    pub fn kube_client_as(&self, user: User) -> kube::Client {
        let server = self.server.clone();
        let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let server = server.clone();
            let user = user.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                let resp: http::Response<Body> = server
                    .handle(Auth::User(user), http::Request::from_parts(parts, bytes))
                    .await;
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        kube::Client::new(svc, "default")
    }

    /// Registers a node (Node object with labels, control-plane taint, pod CIDR, addresses).
    /// It stays NotReady until its kubelet runs and a CNI is installed.
    pub fn register_node(&self, spec: &NodeSpec) -> Result<(), SimError> {
        let index = self.api.store.list("nodes", None).0.len() as u32;
        let cidr = pod_subnet(&self.opts.pod_cidr, index);
        let mut labels = json!({"kubernetes.io/hostname": spec.name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"});
        let mut node_spec = json!({});
        if let Some(c) = cidr {
            node_spec["podCIDR"] = json!(c.to_string());
            node_spec["podCIDRs"] = json!([c.to_string()]);
        }
        if spec.control_plane {
            labels["node-role.kubernetes.io/control-plane"] = json!("");
            labels["node.kubernetes.io/exclude-from-external-load-balancers"] = json!("");
            node_spec["taints"] =
                json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]);
        }
        let (ma, mi) = self.opts.version;
        let node = json!({"metadata": {"name": spec.name, "labels": labels,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
            "spec": node_spec,
            "status": {"addresses": [{"type": "InternalIP", "address": spec.ip}, {"type": "Hostname", "address": spec.name}],
                "capacity": {"cpu": "2", "memory": "2035828Ki", "pods": "110", "ephemeral-storage": "40581564Ki"},
                "allocatable": {"cpu": "2", "memory": "1933428Ki", "pods": "110", "ephemeral-storage": "37399969085"},
                "nodeInfo": {"kubeletVersion": format!("v{ma}.{mi}.0"), "kubeProxyVersion": format!("v{ma}.{mi}.0"),
                    "osImage": "Ubuntu 24.04.1 LTS", "kernelVersion": "6.8.0-45-generic",
                    "containerRuntimeVersion": "containerd://1.7.22", "operatingSystem": "linux", "architecture": "amd64",
                    "machineID": "", "systemUUID": "", "bootID": ""},
                "conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                    "message": "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
                    "lastHeartbeatTime": crate::util::now(), "lastTransitionTime": crate::util::now()}]}});
        let def = self.api.def("nodes");
        match self.api.create(&def, "", node, &WriteOpts::default()) {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e.into()),
        }
        self.kubelets.add_node(&spec.name, &spec.ip, cidr);
        Ok(())
    }

    /// Removes a node: its kubelet stops and its Node object goes (its pods are then collected),
    /// as after `kubeadm reset` and `kubectl delete node`.
    pub fn deregister_node(&self, node: &str) {
        self.kubelets.set_running(node, false);
        self.api.force_remove("nodes", "", node);
    }

    /// Starts a node's kubelet simulation (heartbeats, pods).
    pub fn start_kubelet(&self, node: &str) {
        self.kubelets.set_running(node, true);
    }

    /// Stops a node's kubelet: no more heartbeats, the node goes Unknown after the grace.
    pub fn stop_kubelet(&self, node: &str) {
        self.kubelets.set_running(node, false);
    }

    /// Marks a node's CNI installed (or removed).
    pub fn set_cni_installed(&self, node: &str, installed: bool) {
        self.kubelets.set_cni(node, installed);
    }

    /// Registers a callback run with the node name when a node's CNI becomes installed.
    pub fn on_cni_installed(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        let hook: CniHook = Arc::new(hook);
        self.kubelets.on_cni_installed(hook);
    }

    /// Ends every open watch and forgets the watch history: clients re-watching from their last
    /// resourceVersion get an in-stream 410 Gone and must relist.
    pub fn expire_watches(&self) {
        self.api.store.compact();
        let mut g = self
            .server
            .watch_reset
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        g.cancel();
        *g = CancellationToken::new();
    }

    /// Writes `kube-public/cluster-info` (kubeconfig with the CA and `server_url`); the bootstrap
    /// signer adds one `jws-kubeconfig-<id>` per signing bootstrap token.
    pub fn publish_cluster_info(&self, server_url: &str) -> Result<(), SimError> {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca.cert_pem);
        let kc = format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server_url}\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: null\n"
        );
        let def = self.api.def("configmaps");
        let cm = json!({"metadata": {"name": "cluster-info"}, "data": {"kubeconfig": kc}});
        self.api.replace(
            &def,
            "kube-public",
            "cluster-info",
            cm,
            crate::apiserver::Sub::Main,
            &WriteOpts::default(),
        )?;
        Ok(())
    }

    /// A kubeconfig (YAML) for `user` in `groups` with a fresh client certificate from the CA.
    pub fn kubeconfig(
        &self,
        server_url: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<String, SimError> {
        let issued = self.ca.client(user, groups)?;
        Ok(kubeconfig_yaml(
            server_url,
            &self.ca.cert_pem,
            user,
            &issued,
        ))
    }

    /// Writes a kubeconfig for `user` to `path` (mode 0600, atomically).
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        server_url: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<(), SimError> {
        let text = self.kubeconfig(server_url, user, groups)?;
        write_private(path, text.as_bytes())
    }

    /// Serves the API over HTTPS on `listener` until the handle is shut down (or the cluster is
    /// dropped). The serving certificate is issued by `ca` (default: the cluster's CA) with the
    /// usual names plus `extra_sans`; client certificates from that CA authenticate (CN = user,
    /// O = groups), as do bootstrap tokens.
    pub fn serve_https(
        &self,
        listener: tokio::net::TcpListener,
        ca: Option<&Ca>,
        extra_sans: &[String],
    ) -> Result<ServeHandle, SimError> {
        let ca = ca.unwrap_or(&self.ca);
        let addr = listener.local_addr().map_err(|source| SimError::Io {
            what: "listener address".into(),
            source,
        })?;
        let mut sans = extra_sans.to_vec();
        sans.push(addr.ip().to_string());
        if self
            .api
            .store
            .get("endpoints", "default", "kubernetes")
            .is_none()
        {
            let _ = self.apply_object(json!({"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": "kubernetes", "namespace": "default",
                    "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                "subsets": [{"addresses": [{"ip": addr.ip().to_string()}],
                    "ports": [{"name": "https", "port": addr.port(), "protocol": "TCP"}]}]}));
        }
        let serving: Issued = ca.serving(&sans)?;
        let cfg = ca.server_config(&serving)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        let stop = self.stop.child_token();
        let server = self.server.clone();
        let api = self.api.clone();
        let s2 = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = s2.cancelled() => return,
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                };
                let acceptor = acceptor.clone();
                let server = server.clone();
                let api = api.clone();
                let s3 = s2.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let cert_user = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| crate::pki::cert_identity(c.as_ref()));
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let server = server.clone();
                            let api = api.clone();
                            let cert_user = cert_user.clone();
                            async move {
                                let auth = authenticate(&api, cert_user, req.headers());
                                let (parts, body) = req.into_parts();
                                let bytes = body
                                    .collect()
                                    .await
                                    .map(|c| c.to_bytes())
                                    .unwrap_or_default();
                                Ok::<_, std::convert::Infallible>(
                                    server
                                        .handle(auth, http::Request::from_parts(parts, bytes))
                                        .await,
                                )
                            }
                        },
                    );
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = s3.cancelled() => {}
                    }
                });
            }
        });
        Ok(ServeHandle {
            addr,
            stop,
            task: Some(task),
        })
    }

    /// Creates (or replaces) an object from JSON as the admin (for harnesses and tests).
    pub fn apply_object(&self, obj: Value) -> Result<Value, SimError> {
        let av = obj["apiVersion"].as_str().unwrap_or("v1");
        let (group, version) = av.split_once('/').unwrap_or(("", av));
        let kind = obj["kind"].as_str().unwrap_or("");
        let def = self
            .api
            .resources()
            .into_iter()
            .find(|d| d.group == group && d.version == version && d.kind == kind)
            .ok_or_else(|| {
                crate::apiserver::ApiError::bad(format!("no resource for {av} {kind}"))
            })?;
        let ns = if def.namespaced {
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let name = crate::util::name(&obj).to_string();
        Ok(self.api.replace(
            &def,
            &ns,
            &name,
            obj,
            crate::apiserver::Sub::Main,
            &WriteOpts::default(),
        )?)
    }
}

fn authenticate(
    api: &ApiServer,
    cert_user: Option<(String, Vec<String>)>,
    headers: &http::HeaderMap,
) -> Auth {
    if let Some(h) = headers.get("authorization").and_then(|v| v.to_str().ok())
        && let Some(token) = h.strip_prefix("Bearer ")
    {
        let token = token.trim();
        if let Some((id, secret)) = token.split_once('.')
            && let Some(d) = controllers::bootstrap_tokens(api).get(id)
            && d.get("token-secret").map(String::as_str) == Some(secret)
            && d.get("usage-bootstrap-authentication").map(String::as_str) == Some("true")
        {
            let mut groups = vec!["system:bootstrappers".to_string()];
            groups.extend(
                d.get("auth-extra-groups")
                    .map(|g| {
                        g.split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default(),
            );
            groups.push("system:authenticated".into());
            return Auth::User(User {
                name: format!("system:bootstrap:{id}"),
                groups,
            });
        }
        return Auth::Invalid;
    }
    match cert_user {
        Some((name, mut groups)) => {
            groups.push("system:authenticated".into());
            Auth::User(User { name, groups })
        }
        None => Auth::Anonymous,
    }
}

/// A running HTTPS server.
#[derive(Debug)]
pub struct ServeHandle {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ServeHandle {
    /// `https://addr`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops serving (open connections are closed) and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for ServeHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn pod_subnet(cidr: &ipnet::Ipv4Net, index: u32) -> Option<ipnet::Ipv4Net> {
    if cidr.prefix_len() > 24 {
        return None;
    }
    let base = u32::from(cidr.network()) + (index << 8);
    let net = ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(base), 24).ok()?;
    cidr.contains(&net.network()).then_some(net)
}

/// A kubeconfig with embedded CA, client certificate and key.
pub fn kubeconfig_yaml(server_url: &str, ca_pem: &str, user: &str, issued: &Issued) -> String {
    use base64::Engine;
    let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: simkube\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: {user}@simkube\n  context:\n    cluster: simkube\n    user: {user}\ncurrent-context: {user}@simkube\npreferences: {{}}\n",
        b(ca_pem),
        b(&issued.cert_pem),
        b(&issued.key_pem)
    )
}

/// Writes a private file atomically (temp file in the same directory, 0600, fsync, rename).
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), SimError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |source| SimError::Io { what, source }
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(io("create a temporary file for"))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io("set permissions of"))?;
    tmp.write_all(data).map_err(io("write"))?;
    tmp.as_file().sync_all().map_err(io("sync"))?;
    tmp.persist(path).map_err(|e| SimError::Io {
        what: format!("rename into {}", path.display()),
        source: e.error,
    })?;
    Ok(())
}

/// Bytes → body (for tests).
pub fn body(b: &'static [u8]) -> Bytes {
    Bytes::from_static(b)
}
