//! Simulated Kubernetes for the test world (test infrastructure only: no product crate depends
//! on it). A Kubernetes API server in Rust that the real `kubectl` and kube-rs accept, with
//! controllers and a kubelet simulation per node. It touches nothing on the host except the
//! sockets it listens on and the kubeconfig files it is asked to write.
//!
//! What it serves: discovery (`/version`, `/api`, `/apis`, resource lists with
//! `deployments/scale` as `autoscaling/v1 Scale`), `meta.k8s.io/v1 Table` output with the real
//! printers' columns, core/v1 (namespaces, nodes, pods incl. `log` and `binding`, services,
//! endpoints, configmaps, secrets, serviceaccounts, events), apps/v1 (deployments,
//! replicasets, daemonsets with status/scale), leases, RBAC, CRDs and then their custom
//! resources generically. Verbs: get, list and watch with label/field selectors, bookmarks and
//! an in-stream 410 for a too-old version; create, update, delete (graceful for bound pods,
//! finalizers, propagation), deletecollection; merge, JSON, strategic merge patch and
//! server-side apply with `managedFields`, conflicts naming the other manager, and `force`.
//! Controllers ([`controllers`]): Deployment, ReplicaSet, DaemonSet, scheduler, Endpoints, GC,
//! pod GC, namespaces, node lifecycle, token cleaner, bootstrap signer; Events as
//! `kubectl describe` shows them. Kubelets: [`kubelet`].
//!
//! # Interface
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use simkube::{NodeSpec, SimCluster, SimOptions};
//! let cluster = SimCluster::new(SimOptions::fast(0.05))?; // delays × 0.05
//! let client: kube::Client = cluster.kube_client(); // in-process, as kubernetes-admin
//! cluster.register_node(&NodeSpec { name: "node-1".into(), ip: "127.0.0.11".into(), control_plane: false })?;
//! cluster.start_kubelet("node-1"); // heartbeats; Ready once a CNI is installed
//! cluster.set_cni_installed("node-1", true);
//! cluster.on_cni_installed(|node| println!("write etc/cni/net.d/10-calico.conflist on {node}"));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let handle = cluster.serve_https(listener, None, &["k8s-master".into()])?;
//! cluster.write_kubeconfig("k.yaml".as_ref(), &handle.url(), "kubernetes-admin", &["kubeadm:cluster-admins"])?;
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! - `SimCluster::new(SimOptions{version, kubectl_minor, service_cidr, pod_cidr, delay_scale,
//!   heartbeat, node_grace, images, ca, tick})` (needs a tokio runtime; dropping it stops
//!   everything); `SimOptions::fast(scale)` for tests. `cluster.api` is the store and API
//!   semantics for direct reads (`api.store.get("nodes", "", name)`).
//! - `serve_https(listener, Some(&Ca::from_pem(ca_crt, ca_key)?), sans)`: serve with kubeadm's
//!   CA; client certificates from it authenticate (CN = user, O = groups); bearer bootstrap
//!   tokens authenticate against their `kube-system/bootstrap-token-<id>` Secrets (not
//!   expired, `usage-bootstrap-authentication: "true"`) as `system:bootstrap:<id>` in
//!   `system:bootstrappers` + `auth-extra-groups`; a bad token is 401. Anonymous callers reach
//!   only `/version`, `/healthz` and `kube-public/cluster-info` (else 403). Bootstrap tokens may
//!   only read ConfigMaps in `kube-public`/`kube-system` and Nodes; every other authenticated
//!   user may do everything (RBAC objects are stored, not evaluated).
//! - Node control: `register_node`, `deregister_node`, `start_kubelet`, `stop_kubelet` (the
//!   node goes Unknown after `node_grace`), `set_cni_installed`, `on_cni_installed(hook)`;
//!   `publish_cluster_info(url)` (the bootstrap signer adds one detached HS256 JWS per signing
//!   token; the token cleaner deletes expired token Secrets); `expire_watches()` forces 410s;
//!   `apply_object(json)` creates or replaces any object as the admin.
//! - Kubeconfigs: `kubeconfig(url, user, groups)`, `write_kubeconfig(path, url, user, groups)`.
//! - `kubectl`: the installed `kubectl` is a dispatcher that asks `/version` (User-Agent
//!   `kubectl-dispatcher/v1.0`) and runs `kubectl.1.<minor>` (1.27–1.33 installed; any other
//!   minor runs its built-in 1.32). kubectl ≥ 1.32 sends protobuf bodies for typed generators
//!   (`kubectl create deployment|namespace|configmap …`), which this JSON-only server answers
//!   with 415, so the dispatcher is told minor 31 (`SimOptions::kubectl_minor`) while every
//!   other client sees `SimOptions::version`. `/openapi/v3` serves stub documents declaring the
//!   `fieldValidation` parameter, so kubectl validates server-side (no `--validate=false`
//!   needed); schemas are not served (`kubectl explain` does not work).
//! - Images (see [`kubelet::ImageTable`]): `mongo:4.4` ready after 2 s; `sdelements/lets-chat`
//!   exits 1 unless Service `mongo` has a ready endpoint when it starts (CrashLoopBackOff);
//!   `quay.io/tigera/operator` turns `Installation`s into a `calico-node` DaemonSet whose pods
//!   mark their node's CNI installed; unknown images fail with `ErrImagePull`.

pub mod apiserver;
pub mod calico;
pub mod cluster;
pub mod controllers;
pub mod fields;
pub mod http;
pub mod kubelet;
pub mod pki;
pub mod resources;
pub mod standalone;
pub mod store;
pub mod table;
pub mod util;

pub use cluster::{NodeSpec, ServeHandle, SimCluster, SimError, SimOptions, admin};
pub use pki::Ca;
