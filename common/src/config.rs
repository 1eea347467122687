//! `cluster.yaml`: one file describes the cluster, for `ctl`, the agents and the Vagrantfile.
//!
//! The fixed keys are `master`, `nodes`, `podCIDR`; everything else has a default, so this is a
//! complete config:
//!
//! ```yaml
//! master: {name: k8s-master, ip: 192.168.50.10}
//! nodes:
//!   - {name: node-1, ip: 192.168.50.11}
//!   - {name: node-2, ip: 192.168.50.12}
//! podCIDR: 10.244.0.0/16
//! ```
//!
//! Parsing is two-phase, as in bottlerocket and neon: serde reads a raw struct (unknown fields
//! refused), then [`RawConfig::validate`] turns it into a [`ClusterConfig`] whose fields are
//! parsed types. Every error names the file, the field path and what is wrong.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_proto::NodeName;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The agent port when cluster.yaml does not set `agentPort`.
pub const DEFAULT_AGENT_PORT: u16 = 50051;
/// The Kubernetes minor release when cluster.yaml does not set `kubernetes.version`.
pub const DEFAULT_KUBERNETES_VERSION: &str = "1.35";
/// kubeadm's default service CIDR.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";
/// The oldest minor whose kubeadm speaks the v1beta4 config API we render.
pub const OLDEST_SUPPORTED_MINOR: u32 = 31;
/// Pod CIDRs we suggest, in order, when the configured one collides.
const SUGGESTED_POD_CIDRS: &[&str] = &[
    "10.244.0.0/16",
    "10.200.0.0/16",
    "172.16.0.0/16",
    "100.64.0.0/16",
];
/// Host names that would collide with the PKI's own file names.
const RESERVED_HOST_NAMES: &[&str] = &["admin", "ca"];

/// Errors from loading cluster.yaml.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {error}", file.display())]
    Read {
        /// The config file.
        file: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The YAML does not match the schema (syntax, unknown field, wrong type).
    #[error("{}: {message}", file.display())]
    Parse {
        /// The config file.
        file: PathBuf,
        /// serde's message, which names the field path, line and column.
        message: String,
    },
    /// The values are well-formed but not a valid cluster.
    #[error("{}: {}", file.display(), problems.iter().map(ToString::to_string).collect::<Vec<_>>().join(&format!("\n{}: ", file.display())))]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// Every problem found, not just the first.
        problems: Vec<Problem>,
    },
}

/// One validation problem: a field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// e.g. `nodes[1].ip`.
    pub field: String,
    /// e.g. `192.168.50.11 is also the IP of nodes[0] (node-1)`.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A host as written in cluster.yaml.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawHost {
    /// Host and Kubernetes node name.
    pub name: String,
    /// The host's IP on the cluster network (the Vagrant private network).
    pub ip: String,
    /// vCPUs for the VM (Vagrant). Default: 2.
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Memory for the VM in MiB (Vagrant). Default: 2048.
    #[serde(default)]
    pub memory_mb: Option<u32>,
}

/// Kubernetes release settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesSpec {
    /// Minor release, e.g. "1.35": selects the pkgs.k8s.io repository.
    #[serde(default = "default_k8s_version")]
    pub version: String,
    /// Exact apt package version to pin (e.g. "1.35.0-1.1"); default: the newest in the repository.
    #[serde(default)]
    pub package_version: Option<String>,
}

impl Default for KubernetesSpec {
    fn default() -> Self {
        Self {
            version: default_k8s_version(),
            package_version: None,
        }
    }
}

fn default_k8s_version() -> String {
    DEFAULT_KUBERNETES_VERSION.to_string()
}

/// Where the host steps fetch packages from. `{minor}` in a value is replaced by the Kubernetes
/// minor version (e.g. `v1.35`). The test world points these at local files.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PackageSources {
    /// Armored key of the Kubernetes apt repository.
    #[serde(default = "default_k8s_key_url")]
    pub kubernetes_key_url: String,
    /// Base URL of the Kubernetes apt repository (a flat repository: suite `/`).
    #[serde(default = "default_k8s_repo")]
    pub kubernetes_repo: String,
    /// Armored key of Docker's apt repository.
    #[serde(default = "default_docker_key_url")]
    pub docker_key_url: String,
    /// Base URL of Docker's apt repository.
    #[serde(default = "default_docker_repo")]
    pub docker_repo: String,
    /// Also install `docker-ce` and `docker-ce-cli`, as the seed did. Kubernetes only needs
    /// containerd.
    #[serde(default)]
    pub install_docker: bool,
}

impl Default for PackageSources {
    fn default() -> Self {
        Self {
            kubernetes_key_url: default_k8s_key_url(),
            kubernetes_repo: default_k8s_repo(),
            docker_key_url: default_docker_key_url(),
            docker_repo: default_docker_repo(),
            install_docker: false,
        }
    }
}

fn default_k8s_key_url() -> String {
    "https://pkgs.k8s.io/core:/stable:/{minor}/deb/Release.key".into()
}
fn default_k8s_repo() -> String {
    "https://pkgs.k8s.io/core:/stable:/{minor}/deb/".into()
}
fn default_docker_key_url() -> String {
    "https://download.docker.com/linux/ubuntu/gpg".into()
}
fn default_docker_repo() -> String {
    "https://download.docker.com/linux/ubuntu".into()
}

/// The CNI: Calico through its operator.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CniSpec {
    /// Calico release, e.g. "v3.30.3"; `{calico}` in the URLs below is replaced by it.
    #[serde(default = "default_calico_version")]
    pub calico_version: String,
    /// The operator's CRDs manifest (URL or local path).
    #[serde(default = "default_operator_crds")]
    pub operator_crds: String,
    /// The tigera-operator manifest (URL or local path).
    #[serde(default = "default_tigera_operator")]
    pub tigera_operator: String,
}

impl Default for CniSpec {
    fn default() -> Self {
        Self {
            calico_version: default_calico_version(),
            operator_crds: default_operator_crds(),
            tigera_operator: default_tigera_operator(),
        }
    }
}

fn default_calico_version() -> String {
    "v3.30.3".into()
}
fn default_operator_crds() -> String {
    "https://raw.githubusercontent.com/projectcalico/calico/{calico}/manifests/operator-crds.yaml"
        .into()
}
fn default_tigera_operator() -> String {
    "https://raw.githubusercontent.com/projectcalico/calico/{calico}/manifests/tigera-operator.yaml"
        .into()
}

/// The application `ctl deploy letschat` installs.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AppSpec {
    /// Namespace for MongoDB and Let's Chat.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// MongoDB image: Let's Chat 0.4.8 needs MongoDB < 5.1.
    #[serde(default = "default_mongo_image")]
    pub mongo_image: String,
    /// Let's Chat image.
    #[serde(default = "default_letschat_image")]
    pub letschat_image: String,
    /// Let's Chat replicas on deploy.
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Fixed NodePort for Let's Chat (30000-32767); default: one the cluster picks.
    #[serde(default)]
    pub node_port: Option<u16>,
}

impl Default for AppSpec {
    fn default() -> Self {
        Self {
            namespace: default_namespace(),
            mongo_image: default_mongo_image(),
            letschat_image: default_letschat_image(),
            replicas: default_replicas(),
            node_port: None,
        }
    }
}

fn default_namespace() -> String {
    "default".into()
}
fn default_mongo_image() -> String {
    "mongo:4.4".into()
}
fn default_letschat_image() -> String {
    "sdelements/lets-chat".into()
}
/// The most replicas `ctl deploy`/`ctl scale` accept: a guard against typos (`--replicas 300`)
/// on a three-VM cluster.
pub const MAX_APP_REPLICAS: u32 = 50;

fn default_replicas() -> u32 {
    1
}

/// Join settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JoinSpec {
    /// Lifetime of a join ticket's bootstrap token, e.g. "15m".
    #[serde(default = "default_ticket_ttl", with = "humantime_serde")]
    pub ticket_ttl: Duration,
}

impl Default for JoinSpec {
    fn default() -> Self {
        Self {
            ticket_ttl: default_ticket_ttl(),
        }
    }
}

fn default_ticket_ttl() -> Duration {
    Duration::from_secs(15 * 60)
}

/// cluster.yaml as written, before validation.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawConfig {
    /// The control-plane host.
    pub master: RawHost,
    /// Worker hosts; empty for a single-node cluster.
    #[serde(default)]
    pub nodes: Vec<RawHost>,
    /// Pod network; must not overlap the service CIDR or contain a host IP.
    #[serde(rename = "podCIDR")]
    pub pod_cidr: String,
    /// Service network (kubeadm's default 10.96.0.0/12).
    #[serde(rename = "serviceCIDR", default = "default_service_cidr")]
    pub service_cidr: String,
    /// TCP port every agent serves gRPC on.
    #[serde(default = "default_agent_port")]
    pub agent_port: u16,
    /// Directory of the cluster PKI, relative to this file. Default: `pki`.
    #[serde(default)]
    pub pki_dir: Option<PathBuf>,
    /// Kubernetes release.
    #[serde(default)]
    pub kubernetes: KubernetesSpec,
    /// Package sources.
    #[serde(default)]
    pub packages: PackageSources,
    /// CNI.
    #[serde(default)]
    pub cni: CniSpec,
    /// Application settings.
    #[serde(default)]
    pub app: AppSpec,
    /// Join settings.
    #[serde(default)]
    pub join: JoinSpec,
}

fn default_service_cidr() -> String {
    DEFAULT_SERVICE_CIDR.into()
}
fn default_agent_port() -> u16 {
    DEFAULT_AGENT_PORT
}

/// The role a host plays in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostRole {
    /// The control plane (kubeadm init).
    Master,
    /// A worker (kubeadm join).
    Node,
}

impl HostRole {
    /// `master` or `node`.
    pub fn as_str(self) -> &'static str {
        match self {
            HostRole::Master => "master",
            HostRole::Node => "node",
        }
    }
}

impl fmt::Display for HostRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// Host and node name.
    pub name: NodeName,
    /// Cluster-network IP.
    pub ip: Ipv4Addr,
    /// Master or node.
    pub role: HostRole,
    /// vCPUs for the VM.
    pub cpus: u32,
    /// Memory in MiB for the VM.
    pub memory_mb: u32,
}

/// A validated cluster.yaml.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// The control-plane host.
    pub master: HostSpec,
    /// Worker hosts.
    pub nodes: Vec<HostSpec>,
    /// Pod network.
    pub pod_cidr: Ipv4Net,
    /// Service network.
    pub service_cidr: Ipv4Net,
    /// gRPC port of every agent.
    pub agent_port: u16,
    /// Absolute (or config-relative) PKI directory.
    pub pki_dir: PathBuf,
    /// Kubernetes minor, e.g. "1.35".
    pub kubernetes_version: String,
    /// Exact package version to pin, if any.
    pub kubernetes_package_version: Option<String>,
    /// Package sources with `{minor}` resolved.
    pub packages: PackageSources,
    /// CNI settings with `{calico}` resolved.
    pub cni: CniSpec,
    /// Application settings.
    pub app: AppSpec,
    /// Join settings.
    pub join: JoinSpec,
}

impl ClusterConfig {
    /// Reads and validates a cluster.yaml.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            file: path.to_path_buf(),
            error,
        })?;
        Self::parse(&text, path)
    }

    /// Validates YAML text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
            file: path.to_path_buf(),
            message: e.to_string(),
        })?;
        raw.validate(path)
    }

    /// Every host, master first.
    pub fn hosts(&self) -> impl Iterator<Item = &HostSpec> {
        std::iter::once(&self.master).chain(self.nodes.iter())
    }

    /// The host called `name`, if cluster.yaml has one.
    pub fn host(&self, name: &str) -> Option<&HostSpec> {
        self.hosts().find(|h| h.name.as_str() == name)
    }

    /// The directory holding cluster.yaml.
    pub fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// Where `ctl` writes the admin kubeconfig: `admin.kubeconfig` next to cluster.yaml.
    pub fn admin_kubeconfig_path(&self) -> PathBuf {
        self.dir().join("admin.kubeconfig")
    }

    /// `host:port` of the agent on `host`.
    pub fn agent_endpoint(&self, host: &HostSpec) -> std::net::SocketAddr {
        std::net::SocketAddr::from((host.ip, self.agent_port))
    }

    /// The API server endpoint kubeadm will serve: the master's IP on 6443.
    pub fn api_server_endpoint(&self) -> String {
        format!("{}:6443", self.master.ip)
    }
}

impl RawConfig {
    /// Checks everything and resolves defaults into a [`ClusterConfig`].
    pub fn validate(self, path: &Path) -> Result<ClusterConfig, ConfigError> {
        let mut problems = Vec::new();
        let mut problem =
            |field: String, message: String| problems.push(Problem { field, message });

        let mut hosts = Vec::new();
        let raw_hosts = std::iter::once(("master".to_string(), &self.master, HostRole::Master))
            .chain(
                self.nodes
                    .iter()
                    .enumerate()
                    .map(|(i, h)| (format!("nodes[{i}]"), h, HostRole::Node)),
            );
        let mut names: HashMap<String, String> = HashMap::new();
        let mut ips: HashMap<Ipv4Addr, String> = HashMap::new();
        for (field, raw, role) in raw_hosts {
            let name = match NodeName::parse(&raw.name) {
                Ok(n) if RESERVED_HOST_NAMES.contains(&n.as_str()) => {
                    problem(
                        format!("{field}.name"),
                        format!("{:?} is reserved for the PKI; pick another name", raw.name),
                    );
                    None
                }
                Ok(n) => Some(n),
                Err(e) => {
                    problem(format!("{field}.name"), e);
                    None
                }
            };
            if let Some(n) = &name
                && let Some(other) = names.insert(n.to_string(), field.clone())
            {
                problem(
                    format!("{field}.name"),
                    format!("{n:?} is also the name of {other}; host names must be unique"),
                );
            }
            let ip = match raw.ip.parse::<Ipv4Addr>() {
                Ok(ip) if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() => {
                    problem(
                        format!("{field}.ip"),
                        format!("{ip} cannot be a host address"),
                    );
                    None
                }
                Ok(ip) => Some(ip),
                Err(_) => {
                    problem(
                        format!("{field}.ip"),
                        format!("{:?} is not an IPv4 address", raw.ip),
                    );
                    None
                }
            };
            if let Some(ip) = ip
                && let Some(other) = ips.insert(ip, field.clone())
            {
                problem(
                    format!("{field}.ip"),
                    format!("{ip} is also the IP of {other}; host IPs must be unique"),
                );
            }
            let cpus = raw.cpus.unwrap_or(2);
            let memory_mb = raw.memory_mb.unwrap_or(2048);
            if cpus == 0 {
                problem(format!("{field}.cpus"), "must be at least 1".into());
            }
            if role == HostRole::Master && cpus < 2 {
                problem(
                    format!("{field}.cpus"),
                    format!(
                        "{cpus} is too few: kubeadm needs at least 2 CPUs on the control plane"
                    ),
                );
            }
            if role == HostRole::Master && memory_mb < 1700 {
                problem(
                    format!("{field}.memoryMb"),
                    format!(
                        "{memory_mb} MiB is too little: kubeadm needs at least 1700 MB on the control plane"
                    ),
                );
            }
            if let (Some(name), Some(ip)) = (name, ip) {
                hosts.push((
                    field,
                    HostSpec {
                        name,
                        ip,
                        role,
                        cpus,
                        memory_mb,
                    },
                ));
            }
        }

        let pod_cidr = parse_cidr("podCIDR", &self.pod_cidr, &mut problem);
        let service_cidr = parse_cidr("serviceCIDR", &self.service_cidr, &mut problem);
        let host_ips: Vec<(String, &HostSpec)> =
            hosts.iter().map(|(f, h)| (format!("{f}.ip"), h)).collect();
        if let (Some(pod), Some(svc)) = (pod_cidr, service_cidr)
            && (pod.contains(&svc.network()) || svc.contains(&pod.network()))
        {
            problem(
                "podCIDR".into(),
                format!(
                    "{pod} overlaps serviceCIDR {svc}; pods and services need separate ranges, e.g. podCIDR {}",
                    suggest_pod_cidr(&hosts, Some(svc))
                ),
            );
        }
        for (field, cidr) in [("podCIDR", pod_cidr), ("serviceCIDR", service_cidr)] {
            let Some(cidr) = cidr else { continue };
            let inside: Vec<String> = host_ips
                .iter()
                .filter(|(_, h)| cidr.contains(&h.ip))
                .map(|(f, h)| format!("{} ({f}, {})", h.ip, h.name))
                .collect();
            if !inside.is_empty() {
                let suggestion = match field {
                    "podCIDR" => format!(
                        "use a free range such as {}",
                        suggest_pod_cidr(&hosts, service_cidr)
                    ),
                    _ => format!("use a free range such as {DEFAULT_SERVICE_CIDR}"),
                };
                problem(
                    field.into(),
                    format!(
                        "{cidr} contains the host network: {} {} inside it; routing to those hosts would break. {suggestion}",
                        inside.join(", "),
                        if inside.len() == 1 { "is" } else { "are" }
                    ),
                );
            }
        }
        if let Some(pod) = pod_cidr
            && pod.prefix_len() > 24
        {
            problem(
                "podCIDR".into(),
                format!(
                    "{pod} is too small: each node takes a /24 of it, so the prefix must be /24 or shorter"
                ),
            );
        }
        if self.agent_port == 0 {
            problem(
                "agentPort".into(),
                "must be a TCP port from 1 to 65535".into(),
            );
        }
        let minor = parse_minor(&self.kubernetes.version);
        match minor {
            Some(m) if m >= OLDEST_SUPPORTED_MINOR => {}
            Some(_) => problem(
                "kubernetes.version".into(),
                format!(
                    "{:?} is too old: the kubeadm v1beta4 config we render needs 1.{OLDEST_SUPPORTED_MINOR} or newer (default {DEFAULT_KUBERNETES_VERSION})",
                    self.kubernetes.version
                ),
            ),
            None => problem(
                "kubernetes.version".into(),
                format!(
                    "{:?} is not a minor release like \"{DEFAULT_KUBERNETES_VERSION}\"",
                    self.kubernetes.version
                ),
            ),
        }
        if let Some(port) = self.app.node_port
            && !(30000..=32767).contains(&port)
        {
            problem(
                "app.nodePort".into(),
                format!("{port} is outside the NodePort range 30000-32767"),
            );
        }
        if !(1..=MAX_APP_REPLICAS).contains(&self.app.replicas) {
            problem(
                "app.replicas".into(),
                format!(
                    "{} is outside 1-{MAX_APP_REPLICAS} (the limit of `ctl scale` too)",
                    self.app.replicas
                ),
            );
        }
        if NodeName::parse(&self.app.namespace).is_err() {
            problem(
                "app.namespace".into(),
                format!(
                    "{:?} is not a valid namespace name (an RFC 1123 label)",
                    self.app.namespace
                ),
            );
        }
        if self.join.ticket_ttl < Duration::from_secs(60)
            || self.join.ticket_ttl > Duration::from_secs(24 * 3600)
        {
            problem(
                "join.ticketTtl".into(),
                format!(
                    "{} is out of range: a join ticket lives from 1m to 24h",
                    humantime_serde::re::humantime::format_duration(self.join.ticket_ttl)
                ),
            );
        }

        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                file: path.to_path_buf(),
                problems,
            });
        }
        let minor_tag = format!("v{}", self.kubernetes.version);
        let resolve = |s: &str| s.replace("{minor}", &minor_tag);
        let packages = PackageSources {
            kubernetes_key_url: resolve(&self.packages.kubernetes_key_url),
            kubernetes_repo: resolve(&self.packages.kubernetes_repo),
            docker_key_url: self.packages.docker_key_url.clone(),
            docker_repo: self.packages.docker_repo.clone(),
            install_docker: self.packages.install_docker,
        };
        let calico = |s: &str| s.replace("{calico}", &self.cni.calico_version);
        let cni = CniSpec {
            calico_version: self.cni.calico_version.clone(),
            operator_crds: calico(&self.cni.operator_crds),
            tigera_operator: calico(&self.cni.tigera_operator),
        };
        let mut hosts = hosts.into_iter().map(|(_, h)| h);
        let master = hosts.next().expect("the master validated");
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let pki_dir = dir.join(self.pki_dir.unwrap_or_else(|| PathBuf::from("pki")));
        Ok(ClusterConfig {
            path: path.to_path_buf(),
            master,
            nodes: hosts.collect(),
            pod_cidr: pod_cidr.expect("validated"),
            service_cidr: service_cidr.expect("validated"),
            agent_port: self.agent_port,
            pki_dir,
            kubernetes_version: self.kubernetes.version,
            kubernetes_package_version: self.kubernetes.package_version,
            packages,
            cni,
            app: self.app,
            join: self.join,
        })
    }
}

fn parse_minor(v: &str) -> Option<u32> {
    let (major, minor) = v.split_once('.')?;
    if major != "1" {
        return None;
    }
    minor.parse().ok()
}

fn parse_cidr(field: &str, s: &str, problem: &mut impl FnMut(String, String)) -> Option<Ipv4Net> {
    match s.parse::<Ipv4Net>() {
        Ok(net) if net.trunc() != net => {
            problem(
                field.into(),
                format!("{s} has host bits set; did you mean {}?", net.trunc()),
            );
            None
        }
        Ok(net) => Some(net),
        Err(_) => {
            problem(
                field.into(),
                format!("{s:?} is not an IPv4 CIDR like 10.244.0.0/16"),
            );
            None
        }
    }
}

fn suggest_pod_cidr(hosts: &[(String, HostSpec)], service: Option<Ipv4Net>) -> Ipv4Net {
    let free = |net: &Ipv4Net| {
        hosts.iter().all(|(_, h)| !net.contains(&h.ip))
            && service.is_none_or(|s| !s.contains(&net.network()) && !net.contains(&s.network()))
    };
    SUGGESTED_POD_CIDRS
        .iter()
        .map(|s| s.parse::<Ipv4Net>().expect("constant CIDR"))
        .find(free)
        .unwrap_or_else(|| "10.244.0.0/16".parse().expect("constant CIDR"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "master: {name: k8s-master, ip: 192.168.50.10}
nodes:
  - {name: node-1, ip: 192.168.50.11}
  - {name: node-2, ip: 192.168.50.12}
podCIDR: 10.244.0.0/16
";

    fn parse(text: &str) -> Result<ClusterConfig, ConfigError> {
        ClusterConfig::parse(text, Path::new("/tmp/c/cluster.yaml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_config_is_complete_with_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.master.name.as_str(), "k8s-master");
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.agent_port, 50051);
        assert_eq!(c.service_cidr.to_string(), "10.96.0.0/12");
        assert_eq!(c.pki_dir, Path::new("/tmp/c/pki"));
        assert_eq!(c.kubernetes_version, "1.35");
        assert_eq!(
            c.packages.kubernetes_key_url,
            "https://pkgs.k8s.io/core:/stable:/v1.35/deb/Release.key"
        );
        assert_eq!(c.join.ticket_ttl, Duration::from_secs(900));
        assert_eq!(c.app.mongo_image, "mongo:4.4");
        assert_eq!(c.host("node-2").unwrap().role, HostRole::Node);
    }

    #[test]
    fn single_node_cluster_is_valid() {
        let c = parse("master: {name: solo, ip: 10.0.0.5}\nnodes: []\npodCIDR: 10.244.0.0/16\n")
            .unwrap();
        assert!(c.nodes.is_empty());
        assert_eq!(c.hosts().count(), 1);
    }

    #[test]
    fn seed_pod_cidr_is_refused_naming_both_ranges_and_a_free_one() {
        let e = err(&MINIMAL.replace("10.244.0.0/16", "192.168.0.0/16"));
        assert!(
            e.contains("/tmp/c/cluster.yaml: podCIDR: 192.168.0.0/16"),
            "{e}"
        );
        assert!(e.contains("192.168.50.10"), "{e}");
        assert!(e.contains("10.244.0.0/16"), "suggests a free range: {e}");
    }

    #[test]
    fn invalid_ip_names_the_field_path() {
        let e = err(&MINIMAL.replace("192.168.50.12", "192.168.50.300"));
        assert!(
            e.contains("nodes[1].ip: \"192.168.50.300\" is not an IPv4 address"),
            "{e}"
        );
    }

    #[test]
    fn invalid_cidr_and_host_bits_are_refused() {
        assert!(err(&MINIMAL.replace("10.244.0.0/16", "10.244.0.0/33")).contains("podCIDR"));
        let e = err(&MINIMAL.replace("10.244.0.0/16", "10.244.1.0/16"));
        assert!(e.contains("did you mean 10.244.0.0/16"), "{e}");
    }

    #[test]
    fn duplicate_names_and_ips_are_refused() {
        let e = err(&MINIMAL.replace("node-2, ip: 192.168.50.12", "node-1, ip: 192.168.50.11"));
        assert!(
            e.contains("nodes[1].name: \"node-1\" is also the name of nodes[0]"),
            "{e}"
        );
        assert!(
            e.contains("nodes[1].ip: 192.168.50.11 is also the IP of nodes[0]"),
            "{e}"
        );
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let e = err(&MINIMAL.replace("podCIDR", "podCidr"));
        assert!(e.contains("podCidr"), "{e}");
        let e = err(&MINIMAL.replace("{name: node-1,", "{name: node-1, ipp: 1,"));
        assert!(e.contains("nodes[0]") && e.contains("ipp"), "{e}");
    }

    #[test]
    fn pod_and_service_cidr_must_not_overlap() {
        let e = err(&format!("{MINIMAL}serviceCIDR: 10.244.128.0/20\n"));
        assert!(e.contains("overlaps serviceCIDR 10.244.128.0/20"), "{e}");
    }

    #[test]
    fn service_cidr_must_not_contain_hosts() {
        let e = err(&format!("{MINIMAL}serviceCIDR: 192.168.0.0/16\n"));
        assert!(
            e.contains("serviceCIDR: 192.168.0.0/16 contains the host network"),
            "{e}"
        );
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let text = MINIMAL
            .replace("k8s-master", "K8S")
            .replace("192.168.50.12", "nope");
        match parse(&text).unwrap_err() {
            ConfigError::Invalid { problems, .. } => assert_eq!(problems.len(), 2, "{problems:?}"),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn reserved_and_bad_values_are_refused() {
        assert!(err(&MINIMAL.replace("node-1,", "admin,")).contains("reserved"));
        assert!(err(&format!("{MINIMAL}kubernetes: {{version: \"1.20\"}}\n")).contains("too old"));
        assert!(err(&format!("{MINIMAL}app: {{nodePort: 80}}\n")).contains("30000-32767"));
        assert!(err(&format!("{MINIMAL}agentPort: 0\n")).contains("agentPort"));
        assert!(err(&format!("{MINIMAL}join: {{ticketTtl: 5s}}\n")).contains("join.ticketTtl"));
        assert!(
            err(&MINIMAL.replace("ip: 192.168.50.10}", "ip: 192.168.50.10, cpus: 1}"))
                .contains("master.cpus")
        );
    }

    #[test]
    fn missing_file_is_named() {
        let e = ClusterConfig::load("/nonexistent/cluster.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/nonexistent/cluster.yaml: cannot read"),
            "{e}"
        );
    }
}
