//! The node agent's errors and their one mapping to gRPC status codes.

use cluster_common::identity::AuthError;

/// Everything that can go wrong in the node agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller is not authenticated or not allowed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request does not hold what the protocol promises.
    #[error(transparent)]
    InvalidRequest(#[from] agent_proto::InvalidMessage),
    /// The RPC belongs to a later part of the protocol that this agent does not serve yet.
    #[error("{0} is not implemented by this agent version")]
    NotImplemented(&'static str),
    /// Reading host facts failed.
    #[error("reading {what}: {source}")]
    HostRead {
        /// What was read, e.g. the file path.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The node agent's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::Auth(a) => a.into(),
            Error::InvalidRequest(_) => tonic::Status::invalid_argument(msg),
            Error::NotImplemented(_) => tonic::Status::unimplemented(msg),
            Error::HostRead { .. } => tonic::Status::internal(msg),
        }
    }
}
