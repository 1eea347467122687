//! The node agent: a gRPC daemon baked into every VM image.
//!
//! It serves the `Host` service (facts, prepare, reset) on every host and the `Worker` service
//! (join) on nodes, over mutual TLS, authorising each call by the role in the caller's
//! certificate. The master agent reuses this crate's plumbing ([`server`]) and Host service.
//!
//! On the host it reads files under `--root` (default `/`): `etc/os-release`, `proc/swaps`,
//! `proc/meminfo`, `proc/cpuinfo`; what has no file there comes from `sysinfo`.

pub mod error;
pub mod events;
pub mod exec;
pub mod facts;
pub mod host_service;
pub mod server;
pub mod worker;

pub use error::{Error, Result};
pub use server::{AgentContext, AgentOptions};
