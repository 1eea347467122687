//! The master agent: the node agent's Host service plus the `ControlPlane` service
//! (`kubeadm init`, join tickets, admin kubeconfig) on the control-plane VM.
//!
//! Join tickets replace the seed's join-command file: a node asks over mutual TLS with its own
//! certificate and gets a typed ticket for itself only.

pub mod control_plane;
pub mod error;

pub use error::{Error, Result};
