//! Mutual-TLS configuration for agents (servers) and their callers (clients), from the PKI
//! layout. Agents ask for a client certificate but do not require one at the handshake, so a
//! call without one gets a clear `UNAUTHENTICATED` status instead of a bare connection reset; a
//! certificate from another CA still fails the handshake.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity as TlsIdentity, ServerTlsConfig};

use crate::pki::PkiLayout;

/// A PKI file that is missing or unreadable.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {problem}", path.display())]
pub struct PkiFileError {
    /// e.g. "certificate".
    pub what: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong, with what to do.
    pub problem: String,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, PkiFileError> {
    let bytes = std::fs::read(path).map_err(|e| PkiFileError {
        what,
        path: path.to_path_buf(),
        problem: if e.kind() == std::io::ErrorKind::NotFound {
            "is missing; create the PKI with `ctl --config cluster.yaml pki init`".into()
        } else {
            format!("cannot be read: {e}")
        },
    })?;
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN ") {
        return Err(PkiFileError {
            what,
            path: path.to_path_buf(),
            problem: "is not PEM".into(),
        });
    }
    Ok(bytes)
}

/// TLS material of one party: its certificate, key and the cluster CA.
#[derive(Clone)]
pub struct TlsMaterial {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsMaterial(<redacted>)")
    }
}

impl TlsMaterial {
    /// Reads a certificate, key and CA from explicit paths.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, PkiFileError> {
        Ok(Self {
            cert: read("certificate", cert)?,
            key: read("private key", key)?,
            ca: read("CA certificate", ca)?,
        })
    }

    /// The identity of host `name` in a PKI directory.
    pub fn host(pki: &PkiLayout, name: &str) -> Result<Self, PkiFileError> {
        Self::load(&pki.host_cert(name), &pki.host_key(name), &pki.ca_cert())
    }

    /// The admin identity in a PKI directory.
    pub fn admin(pki: &PkiLayout) -> Result<Self, PkiFileError> {
        Self::load(&pki.admin_cert(), &pki.admin_key(), &pki.ca_cert())
    }

    /// Builds from PEM bytes (tests).
    pub fn from_pem(cert: Vec<u8>, key: Vec<u8>, ca: Vec<u8>) -> Self {
        Self { cert, key, ca }
    }

    /// The cluster CA certificate (PEM).
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca
    }

    /// Server side: our identity, client certificates verified against the cluster CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(TlsIdentity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
            .client_auth_optional(true)
    }

    /// Client side: our identity, the server verified against the cluster CA.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .identity(TlsIdentity::from_pem(&self.cert, &self.key))
            .ca_certificate(Certificate::from_pem(&self.ca))
    }
}
