//! The master agent's errors and their one mapping to gRPC status codes.

use std::path::PathBuf;

use cluster_common::identity::AuthError;
use node_agent::exec::ExecError;

/// Everything that can go wrong in the master agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller is not authenticated or not allowed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request does not hold what the protocol promises.
    #[error(transparent)]
    InvalidRequest(#[from] agent_proto::InvalidMessage),
    /// A node asked for a ticket but is not a node of cluster.yaml.
    #[error("{0:?} is not a node of this cluster")]
    UnknownNode(String),
    /// The RPC belongs to a later part of the protocol that this agent does not serve yet.
    #[error("{0} is not implemented by this agent version")]
    NotImplemented(&'static str),
    /// `kubeadm init` has not run on this host yet: nodes retry.
    #[error(
        "the control plane is not initialised yet ({} does not exist): `ctl bootstrap` initialises it",
        path.display()
    )]
    NotInitialised {
        /// The admin kubeconfig that is missing.
        path: PathBuf,
    },
    /// The API server does not answer (yet): nodes retry.
    #[error("the API server at {endpoint} does not answer: {message}")]
    ApiUnavailable {
        /// host:port.
        endpoint: String,
        /// What the client said.
        message: String,
    },
    /// The node is already a Ready member of the cluster: a ticket would only make a duplicate.
    #[error(
        "node {0} is already registered and Ready: reset it (`ctl reset --host {0}`) before joining it again"
    )]
    AlreadyJoined(String),
    /// kubeadm's kubeconfig cannot be used.
    #[error("cannot use {}: {message}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A Kubernetes API call failed.
    #[error("cannot {what}: {source}")]
    Kube {
        /// What we tried.
        what: String,
        /// The client error.
        source: kube::Error,
    },
    /// The cluster CA cannot be read or parsed.
    #[error("cluster CA {}: {problem}", path.display())]
    CaCert {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A CNI manifest could not be fetched.
    #[error("cannot fetch the CNI manifest {source_ref}: {message}")]
    Fetch {
        /// URL or path from cluster.yaml.
        source_ref: String,
        /// What went wrong.
        message: String,
    },
    /// Manifests could not be parsed or applied.
    #[error(transparent)]
    Manifest(#[from] cluster_common::manifest::ManifestError),
    /// A host command failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// A host file could not be written or removed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing, with the path.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Waiting for something took longer than allowed.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What we waited for.
        what: String,
        /// How long.
        waited: std::time::Duration,
    },
    /// A bug or an impossible state.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The master agent's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::Auth(a) => a.into(),
            Error::InvalidRequest(_) => tonic::Status::invalid_argument(msg),
            Error::UnknownNode(_) => tonic::Status::not_found(msg),
            Error::NotImplemented(_) => tonic::Status::unimplemented(msg),
            Error::NotInitialised { .. } => tonic::Status::failed_precondition(msg),
            Error::ApiUnavailable { .. } => tonic::Status::unavailable(msg),
            Error::AlreadyJoined(_) => tonic::Status::already_exists(msg),
            Error::Kube {
                source: kube::Error::Api(_),
                ..
            } => tonic::Status::internal(msg),
            Error::Kube { .. } => tonic::Status::unavailable(msg),
            Error::Fetch { .. } => tonic::Status::unavailable(msg),
            Error::Timeout { .. } => tonic::Status::deadline_exceeded(msg),
            Error::Kubeconfig { .. }
            | Error::CaCert { .. }
            | Error::Manifest(_)
            | Error::Exec(_)
            | Error::Io { .. }
            | Error::Internal(_) => tonic::Status::internal(msg),
        }
    }
}
