//! Where the cluster PKI lives, relative to its directory (`pki/` next to cluster.yaml by
//! default; on a VM, the same layout holding only that host's key):
//!
//! ```text
//! pki/ca.crt                 cluster CA certificate
//! pki/ca.key                 cluster CA key (0600; only on the operator's machine)
//! pki/admin.crt, admin.key   the operator's client identity (role admin)
//! pki/hosts/<name>.crt/.key  each host's identity (server and client use)
//! ```

use std::path::{Path, PathBuf};

/// File names inside a PKI directory.
#[derive(Debug, Clone)]
pub struct PkiLayout {
    dir: PathBuf,
}

impl PkiLayout {
    /// The layout rooted at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The PKI directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cluster CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The cluster CA private key.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// The admin client certificate.
    pub fn admin_cert(&self) -> PathBuf {
        self.dir.join("admin.crt")
    }

    /// The admin client key.
    pub fn admin_key(&self) -> PathBuf {
        self.dir.join("admin.key")
    }

    /// The directory of host identities.
    pub fn hosts_dir(&self) -> PathBuf {
        self.dir.join("hosts")
    }

    /// A host's certificate.
    pub fn host_cert(&self, host: &str) -> PathBuf {
        self.hosts_dir().join(format!("{host}.crt"))
    }

    /// A host's private key.
    pub fn host_key(&self, host: &str) -> PathBuf {
        self.hosts_dir().join(format!("{host}.key"))
    }
}
