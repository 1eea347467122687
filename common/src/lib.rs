//! What `ctl`, the master agent and the node agents share.
//!
//! - [`config`]: the one `cluster.yaml`, parsed, defaulted and validated.
//! - [`manifest`]: multi-document YAML → discovery → ordered server-side apply (`kubectl apply
//!   --server-side -f` as a library).
//! - [`pki`]: where the cluster CA, host and admin certificates live.
//! - [`identity`]: roles carried by client certificates and their authorisation rules.
//! - [`tls`]: tonic server and client TLS configuration for mutual TLS.
//! - [`telemetry`]: one logging init for every binary; signal-driven shutdown.
//!
//! Nothing here changes the host: it reads the config and PKI files it is pointed at.

pub mod config;
pub mod fsutil;
pub mod identity;
pub mod manifest;
pub mod pki;
pub mod telemetry;
pub mod tls;

pub use config::{ClusterConfig, ConfigError, HostSpec};
pub use identity::{Identity, Role};
