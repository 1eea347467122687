//! The master agent's errors and their one mapping to gRPC status codes.

use cluster_common::identity::AuthError;

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
        }
    }
}
