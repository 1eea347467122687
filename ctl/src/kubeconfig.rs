//! `ctl kubeconfig [-o PATH]`: the cluster's admin kubeconfig, fetched from the master agent
//! over mutual TLS (admin identity only). `ctl bootstrap` writes it next to cluster.yaml
//! (`admin.kubeconfig`, mode 0600); `~/.kube/config` is never touched unless asked with `-o`.

use std::path::Path;

use agent_proto::{ControlPlaneClient, v1};
use anyhow::Context as _;
use cluster_common::config::ClusterConfig;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::agents::Agents;
use cluster_common::fsutil::write_atomic;

/// The admin kubeconfig (YAML bytes; secret) from the master agent.
pub async fn fetch(config: &ClusterConfig, agents: &Agents) -> anyhow::Result<Vec<u8>> {
    let mut cp = ControlPlaneClient::new(agents.channel(&config.master)?);
    let resp = cp
        .admin_kubeconfig(v1::AdminKubeconfigRequest {})
        .await
        .with_context(|| {
            format!(
                "master agent {} ({}) gave no admin kubeconfig",
                config.master.name,
                config.agent_endpoint(&config.master)
            )
        })?;
    Ok(resp.into_inner().kubeconfig)
}

/// Writes `kubeconfig` to `path` (0600, atomically) unless it already holds exactly that.
/// Returns whether the file changed.
pub fn write(path: &Path, kubeconfig: &[u8]) -> anyhow::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == kubeconfig) {
        return Ok(false);
    }
    write_atomic(path, kubeconfig, 0o600)
        .with_context(|| format!("cannot write the admin kubeconfig to {}", path.display()))?;
    Ok(true)
}

/// A Kubernetes client from kubeconfig bytes (as [`fetch`] returns them).
pub async fn client_from_bytes(kubeconfig: &[u8]) -> anyhow::Result<Client> {
    let text = std::str::from_utf8(kubeconfig).context("admin kubeconfig is not UTF-8")?;
    let kc = Kubeconfig::from_yaml(text).context("admin kubeconfig is not a kubeconfig")?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .context("admin kubeconfig is unusable")?;
    cfg.connect_timeout = Some(std::time::Duration::from_secs(3));
    cfg.read_timeout = Some(std::time::Duration::from_secs(30));
    Client::try_from(cfg).context("admin kubeconfig is unusable")
}

/// `ctl kubeconfig`.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeconfigArgs {
    /// Write it to this file (0600, atomically) instead of printing it on stdout. Nothing writes
    /// `~/.kube/config` unless it is given here.
    #[arg(long, short = 'o')]
    pub output: Option<std::path::PathBuf>,
}

impl KubeconfigArgs {
    /// Prints or writes the admin kubeconfig.
    pub async fn run(&self, config: &ClusterConfig) -> anyhow::Result<std::process::ExitCode> {
        let agents = crate::bootstrap::preflight(config)?;
        let bytes = fetch(config, &agents).await?;
        match &self.output {
            Some(path) => {
                write(path, &bytes)?;
                eprintln!("wrote {}", path.display());
            }
            None => {
                use std::io::Write as _;
                std::io::stdout().write_all(&bytes)?;
            }
        }
        Ok(std::process::ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn written_kubeconfig_is_private_and_rewritten_only_when_it_differs() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("admin.kubeconfig");
        assert!(write(&p, b"one").unwrap());
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!write(&p, b"one").unwrap(), "same content: unchanged");
        assert!(write(&p, b"two").unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
    }
}
