//! Connections from ctl to the agents, over mutual TLS with the admin identity.

use std::time::Duration;

use cluster_common::config::{ClusterConfig, HostSpec};
use cluster_common::pki::PkiLayout;
use cluster_common::tls::TlsMaterial;
use tonic::transport::{Channel, Endpoint};

/// How long to wait for an agent to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a unary call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin's view of the cluster's agents.
#[derive(Debug, Clone)]
pub struct Agents {
    tls: TlsMaterial,
    port: u16,
}

impl Agents {
    /// Loads the admin identity from the config's PKI directory.
    pub fn new(config: &ClusterConfig) -> anyhow::Result<Self> {
        let tls = TlsMaterial::admin(&PkiLayout::new(&config.pki_dir))?;
        Ok(Self {
            tls,
            port: config.agent_port,
        })
    }

    /// A lazily connecting channel to `host`'s agent (connects on first call).
    pub fn channel(&self, host: &HostSpec) -> anyhow::Result<Channel> {
        let endpoint = Endpoint::from_shared(format!("https://{}:{}", host.ip, self.port))?
            .tls_config(self.tls.client_config())?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        Ok(endpoint.connect_lazy())
    }
}
