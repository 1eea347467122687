//! `ctl`, the operator's CLI, as a library so tests can drive it in-process.
//!
//! - [`pki`]: `ctl pki init`: the cluster CA, one identity per host, the admin identity.
//! - [`agents`]: mutual-TLS connections to the agents with the admin identity.
//! - [`facts`]: `ctl facts`: every agent asked in parallel.
//! - [`deploy`], [`scale`], [`get`]: Let's Chat and manifests on the cluster through [`kube`]
//!   (the admin kubeconfig next to cluster.yaml).
//!
//! It writes only under the PKI directory (and, later, the kubeconfig next to cluster.yaml).

pub mod agents;
pub mod bootstrap;
pub mod deploy;
pub mod facts;
pub mod get;
pub mod kube;
pub mod kubeconfig;
pub mod output;
pub mod pki;
pub mod prepare;
pub mod progress;
pub mod reset;
pub mod scale;
pub mod status;
