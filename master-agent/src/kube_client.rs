//! The master agent's Kubernetes client: kubeadm's `etc/kubernetes/admin.conf` under the host
//! root, and the waits built on it (API server answering, node Ready).

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use node_agent::kubeadm::{ADMIN_CONF, host_path};

use crate::Error;
use crate::tokens::node_ready;

/// A client authenticated as kubeadm's cluster admin. [`Error::NotInitialised`] when
/// `kubeadm init` has not written admin.conf yet.
pub async fn admin_client(root: &Path) -> Result<Client, Error> {
    let path = host_path(root, ADMIN_CONF);
    if !path.exists() {
        return Err(Error::NotInitialised { path });
    }
    let kc = Kubeconfig::read_from(&path).map_err(|e| Error::Kubeconfig {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig {
            path: path.clone(),
            message: e.to_string(),
        })?;
    cfg.connect_timeout = Some(Duration::from_secs(3));
    cfg.read_timeout = Some(Duration::from_secs(30));
    Client::try_from(cfg).map_err(|e| Error::Kubeconfig {
        path,
        message: e.to_string(),
    })
}

/// Whether the API server answers `GET /version`.
pub async fn api_up(client: &Client, endpoint: &str) -> Result<(), Error> {
    client
        .apiserver_version()
        .await
        .map(|_| ())
        .map_err(|e| Error::ApiUnavailable {
            endpoint: endpoint.to_string(),
            message: e.to_string(),
        })
}

/// Waits until the API server answers, up to `timeout`.
pub async fn wait_api_up(
    client: &Client,
    endpoint: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<(), Error> {
    let start = Instant::now();
    loop {
        match api_up(client, endpoint).await {
            Ok(()) => return Ok(()),
            Err(e) if start.elapsed() >= timeout => return Err(e),
            Err(_) => tokio::time::sleep(poll).await,
        }
    }
}

/// Waits until node `name` is Ready, up to `timeout`. Returns whether it was Ready at once.
pub async fn wait_node_ready(
    client: &Client,
    name: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<bool, Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let start = Instant::now();
    let mut first = true;
    loop {
        let ready = nodes
            .get_opt(name)
            .await
            .map_err(|source| Error::Kube {
                what: format!("read node {name}"),
                source,
            })?
            .as_ref()
            .is_some_and(node_ready);
        if ready {
            return Ok(first);
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: format!("node {name} to be Ready"),
                waited: start.elapsed(),
            });
        }
        first = false;
        tokio::time::sleep(poll).await;
    }
}
