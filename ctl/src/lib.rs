//! `ctl`, the operator's CLI, as a library so tests can drive it in-process.
//!
//! - [`pki`]: `ctl pki init`: the cluster CA, one identity per host, the admin identity.
//! - [`agents`]: mutual-TLS connections to the agents with the admin identity.
//! - [`facts`]: `ctl facts`: every agent asked in parallel.
//!
//! It writes only under the PKI directory (and, later, the kubeconfig next to cluster.yaml).

pub mod agents;
pub mod facts;
pub mod fsutil;
pub mod output;
pub mod pki;
