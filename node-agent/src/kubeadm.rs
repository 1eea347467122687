//! What both agents know about kubeadm on the host: the files it leaves (whether this host is
//! initialised or joined), the private directory where a kubeadm config file lives for the
//! duration of one command, and the `JoinConfiguration` a node runs `kubeadm join` with.
//!
//! Config files can hold a bootstrap token, so they are written 0600 inside a fresh 0700
//! directory under `<root>/run/k8s-agent/` (a tmpfs on a real VM) and removed right after the
//! command; leftovers of an agent killed mid-command are swept before the next one.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use agent_proto::JoinTicket;
use cluster_common::HostSpec;

/// kubeadm's admin kubeconfig: present once `kubeadm init` has run.
pub const ADMIN_CONF: &str = "etc/kubernetes/admin.conf";
/// kubeadm's super-admin kubeconfig (Kubernetes ≥ 1.29).
pub const SUPER_ADMIN_CONF: &str = "etc/kubernetes/super-admin.conf";
/// The kubelet's kubeconfig: present once `kubeadm init` or `kubeadm join` has run.
pub const KUBELET_CONF: &str = "etc/kubernetes/kubelet.conf";
/// The kubelet's bootstrap kubeconfig (during TLS bootstrap).
pub const BOOTSTRAP_KUBELET_CONF: &str = "etc/kubernetes/bootstrap-kubelet.conf";
/// The cluster CA certificate kubeadm writes.
pub const CA_CERT: &str = "etc/kubernetes/pki/ca.crt";
/// CNI configuration directory, which `kubeadm reset` leaves behind.
pub const CNI_NET_D: &str = "etc/cni/net.d";
/// Where the agents keep kubeadm config files for the duration of one command.
pub const PRIVATE_DIR: &str = "run/k8s-agent";
/// The container runtime socket kubeadm and the kubelet use (containerd).
pub const CRI_SOCKET: &str = "unix:///var/run/containerd/containerd.sock";
/// kubeadm config API version.
pub const KUBEADM_API: &str = "kubeadm.k8s.io/v1beta4";

/// `rel` (one of the constants above) under the host root.
pub fn host_path(root: &Path, rel: &str) -> PathBuf {
    root.join(rel)
}

/// A kubeadm config file in a private directory, removed (with the directory) on drop.
#[derive(Debug)]
pub struct PrivateConfig {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl PrivateConfig {
    /// Writes `contents` to `<root>/run/k8s-agent/<purpose>/<random>/<name>` with mode 0600,
    /// after removing what an earlier, interrupted command of the same purpose left behind.
    /// Callers serialise commands of one purpose (one kubeadm at a time per host).
    pub fn write(root: &Path, purpose: &str, name: &str, contents: &[u8]) -> std::io::Result<Self> {
        let base = root.join(PRIVATE_DIR).join(purpose);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&base)?;
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700))?;
        for stale in std::fs::read_dir(&base)?.flatten() {
            let _ = std::fs::remove_dir_all(stale.path());
        }
        let dir = tempfile::Builder::new()
            .prefix("kubeadm-")
            .tempdir_in(&base)?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        let path = dir.path().join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(contents)?;
        f.sync_all()?;
        Ok(Self {
            dir: Some(dir),
            path,
        })
    }

    /// The file (under the host root).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file as the host's commands see it (`/run/k8s-agent/...`), for `kubeadm --config`:
    /// commands run on the host, so they get host paths, whatever `--root` the agent has.
    pub fn host_arg(&self, root: &Path) -> String {
        match self.path.strip_prefix(root) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => self.path.display().to_string(),
        }
    }

    /// Removes the file and its directory now, reporting failure.
    pub fn remove(mut self) -> std::io::Result<()> {
        match self.dir.take() {
            Some(d) => d.close(),
            None => Ok(()),
        }
    }
}

impl Drop for PrivateConfig {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            let _ = d.close();
        }
    }
}

/// `nodeRegistration` shared by init and join: node name, CRI socket, kubelet node IP (v1beta4
/// `kubeletExtraArgs` is a list of `{name, value}`).
pub fn node_registration(host: &HostSpec) -> serde_json::Value {
    serde_json::json!({
        "name": host.name.as_str(),
        "criSocket": CRI_SOCKET,
        "kubeletExtraArgs": [{"name": "node-ip", "value": host.ip.to_string()}],
    })
}

/// The `JoinConfiguration` for `host` with `ticket`. Holds the token: write it with
/// [`PrivateConfig`] only.
pub fn join_configuration(host: &HostSpec, ticket: &JoinTicket) -> String {
    let doc = serde_json::json!({
        "apiVersion": KUBEADM_API,
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "apiServerEndpoint": ticket.api_server_endpoint,
                "token": ticket.token.expose(),
                "caCertHashes": ticket.ca_cert_hashes.iter().map(|h| h.as_str()).collect::<Vec<_>>(),
            },
        },
        "nodeRegistration": node_registration(host),
    });
    serde_yaml_ng::to_string(&doc).expect("a JSON value always serialises to YAML")
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_proto::{BootstrapToken, CaCertHash};
    use std::time::{Duration, SystemTime};

    fn host() -> HostSpec {
        HostSpec {
            name: agent_proto::NodeName::parse("node-1").unwrap(),
            ip: "192.168.50.11".parse().unwrap(),
            role: cluster_common::config::HostRole::Node,
            cpus: 2,
            memory_mb: 2048,
        }
    }

    fn ticket() -> JoinTicket {
        JoinTicket {
            api_server_endpoint: "192.168.50.10:6443".into(),
            token: BootstrapToken::parse("abcdef.0123456789abcdef").unwrap(),
            ca_cert_hashes: vec![
                CaCertHash::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap(),
            ],
            expires_at: SystemTime::now() + Duration::from_secs(600),
        }
    }

    #[test]
    fn join_configuration_is_v1beta4_with_discovery_and_node_ip() {
        let text = join_configuration(&host(), &ticket());
        let v: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(v["apiVersion"], "kubeadm.k8s.io/v1beta4");
        assert_eq!(v["kind"], "JoinConfiguration");
        let bt = &v["discovery"]["bootstrapToken"];
        assert_eq!(bt["apiServerEndpoint"], "192.168.50.10:6443");
        assert_eq!(bt["token"], "abcdef.0123456789abcdef");
        assert_eq!(bt["caCertHashes"][0], format!("sha256:{}", "ab".repeat(32)));
        let nr = &v["nodeRegistration"];
        assert_eq!(nr["name"], "node-1");
        assert_eq!(
            nr["kubeletExtraArgs"],
            serde_json::json!([{"name": "node-ip", "value": "192.168.50.11"}])
        );
    }

    #[test]
    fn private_config_is_0600_in_a_0700_dir_and_removed_on_drop() {
        let root = tempfile::tempdir().unwrap();
        let cfg = PrivateConfig::write(root.path(), "join", "join.yaml", b"secret").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(cfg.path()), 0o600);
        assert_eq!(mode(cfg.path().parent().unwrap()), 0o700);
        assert_eq!(mode(&root.path().join(PRIVATE_DIR).join("join")), 0o700);
        assert_eq!(std::fs::read(cfg.path()).unwrap(), b"secret");
        let arg = cfg.host_arg(root.path());
        assert!(arg.starts_with("/run/k8s-agent/join/kubeadm-"), "{arg}");
        assert!(arg.ends_with("/join.yaml"), "{arg}");
        let path = cfg.path().to_path_buf();
        drop(cfg);
        assert!(!path.exists());
        assert!(!path.parent().unwrap().exists());
    }

    #[test]
    fn leftovers_of_an_interrupted_command_are_swept() {
        let root = tempfile::tempdir().unwrap();
        let first = PrivateConfig::write(root.path(), "join", "join.yaml", b"old").unwrap();
        let old = first.path().to_path_buf();
        std::mem::forget(first); // an agent killed mid-command
        assert!(old.exists());
        let second = PrivateConfig::write(root.path(), "join", "join.yaml", b"new").unwrap();
        assert!(!old.exists(), "stale secret file left behind");
        second.remove().unwrap();
        let left: Vec<_> = std::fs::read_dir(root.path().join(PRIVATE_DIR).join("join"))
            .unwrap()
            .collect();
        assert!(left.is_empty());
    }
}
