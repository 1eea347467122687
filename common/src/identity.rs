//! Who is calling: the role and name in a client certificate, and what each role may do.
//!
//! Certificates issued by `ctl pki init` carry the role in Subject O (`admin`, `master` or
//! `node`) and the host name in Subject CN, like Kubernetes' own client certificates carry
//! groups and user. Authorisation is by role: the admin may call everything; a node identity
//! may only ask the master for a join ticket for itself.

use std::fmt;

use x509_parser::prelude::{FromDer, X509Certificate};

/// The Subject O of an admin certificate.
pub const ADMIN_ORG: &str = "admin";
/// The Subject O of a master host certificate.
pub const MASTER_ORG: &str = "master";
/// The Subject O of a node host certificate.
pub const NODE_ORG: &str = "node";
/// The Subject CN of the admin certificate.
pub const ADMIN_CN: &str = "cluster-admin";

/// A caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The operator (ctl).
    Admin,
    /// The master agent's host.
    Master,
    /// A node agent's host.
    Node,
}

impl Role {
    /// The certificate organisation for this role.
    pub fn org(self) -> &'static str {
        match self {
            Role::Admin => ADMIN_ORG,
            Role::Master => MASTER_ORG,
            Role::Node => NODE_ORG,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.org())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// What the caller may do.
    pub role: Role,
    /// Host name (or `cluster-admin`).
    pub name: String,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.role, self.name)
    }
}

/// Why a call is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The TLS session has no client certificate.
    #[error("no client certificate: every agent RPC needs a certificate from `ctl pki init`")]
    NoCertificate,
    /// The certificate chain verified but does not carry a usable identity.
    #[error("client certificate has no usable identity: {0}")]
    BadCertificate(String),
    /// The identity may not do this.
    #[error("{who} may not {what}")]
    Forbidden {
        /// The caller.
        who: String,
        /// What it tried.
        what: String,
    },
}

impl From<AuthError> for tonic::Status {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::NoCertificate | AuthError::BadCertificate(_) => {
                tonic::Status::unauthenticated(e.to_string())
            }
            AuthError::Forbidden { .. } => tonic::Status::permission_denied(e.to_string()),
        }
    }
}

impl Identity {
    /// Reads the identity from a DER certificate (already verified against the cluster CA by
    /// the TLS handshake).
    pub fn from_der(der: &[u8]) -> Result<Self, AuthError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| AuthError::BadCertificate(format!("cannot parse: {e}")))?;
        let subject = cert.subject();
        let org = subject
            .iter_organization()
            .next()
            .and_then(|o| o.as_str().ok())
            .ok_or_else(|| AuthError::BadCertificate("no Subject O (role)".into()))?;
        let name = subject
            .iter_common_name()
            .next()
            .and_then(|o| o.as_str().ok())
            .ok_or_else(|| AuthError::BadCertificate("no Subject CN (name)".into()))?
            .to_string();
        let role = match org {
            ADMIN_ORG => Role::Admin,
            MASTER_ORG => Role::Master,
            NODE_ORG => Role::Node,
            other => {
                return Err(AuthError::BadCertificate(format!(
                    "unknown role {other:?} in Subject O"
                )));
            }
        };
        Ok(Self { role, name })
    }

    /// The identity of the peer of a tonic request (mutual TLS).
    pub fn of_request<T>(req: &tonic::Request<T>) -> Result<Self, AuthError> {
        let certs = req.peer_certs().ok_or(AuthError::NoCertificate)?;
        let leaf = certs.first().ok_or(AuthError::NoCertificate)?;
        Self::from_der(leaf.as_ref())
    }

    /// Only the admin may `what`.
    pub fn require_admin(&self, what: &str) -> Result<(), AuthError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                who: self.to_string(),
                what: what.to_string(),
            })
        }
    }

    /// Only the node called `node` may `what` (an admin may not act as a node).
    pub fn require_node(&self, node: &str, what: &str) -> Result<(), AuthError> {
        if self.role == Role::Node && self.name == node {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                who: self.to_string(),
                what: what.to_string(),
            })
        }
    }
}
