//! The CNI: Calico through its operator. The operator's manifests come from cluster.yaml
//! (`cni.operatorCrds`, `cni.tigeraOperator`: URLs fetched with `curl` on the host — `https://` on
//! real VMs, `file:///srv/mirror/...` in the test world — or plain local paths), then an `Installation` whose IP pool is the pod CIDR and whose node address
//! autodetection uses the node's InternalIP (the kubelet's `--node-ip`, i.e. the private-network
//! NIC on two-NIC Vagrant VMs). Everything is applied server-side.

use std::path::{Path, PathBuf};

use cluster_common::ClusterConfig;
use cluster_common::manifest::{self, Applier, Manifest};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};
use node_agent::exec::{Cmd, CommandRunner};

use crate::Error;

/// Field manager of everything the master agent applies.
pub const FIELD_MANAGER: &str = "master-agent";
/// The name of the Calico `Installation` (the operator only reconciles `default`).
pub const INSTALLATION: &str = "default";

/// The `Installation` for cluster.yaml's pod CIDR.
pub fn installation(config: &ClusterConfig) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "operator.tigera.io/v1",
        "kind": "Installation",
        "metadata": {"name": INSTALLATION},
        "spec": {
            "calicoNetwork": {
                "ipPools": [{
                    "name": "default-ipv4-ippool",
                    "blockSize": 26,
                    "cidr": config.pod_cidr.to_string(),
                    "encapsulation": "VXLANCrossSubnet",
                    "natOutgoing": "Enabled",
                    "nodeSelector": "all()",
                }],
                "nodeAddressAutodetectionV4": {"kubernetes": "NodeInternalIP"},
            },
        },
    })
}

fn installation_api(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("operator.tigera.io", "v1", "Installation");
    Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk))
}

/// Whether the `Installation` exists with cluster.yaml's pod CIDR (then the manifests before it
/// were applied too: it is applied last).
pub async fn installed(client: &Client, config: &ClusterConfig) -> Result<bool, Error> {
    match installation_api(client).get_opt(INSTALLATION).await {
        Ok(Some(obj)) => {
            let cidr = &obj.data["spec"]["calicoNetwork"]["ipPools"][0]["cidr"];
            Ok(cidr.as_str() == Some(&config.pod_cidr.to_string()))
        }
        Ok(None) => Ok(false),
        // The CRD itself is not there yet.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(source) => Err(Error::Kube {
            what: "read the Calico Installation".into(),
            source,
        }),
    }
}

/// Where a manifest source points: a URL to fetch, or a local file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A URL (`https://`, `http://`, `file://`), fetched by `curl` on the host, like the package
    /// keys of host preparation (so `file:///srv/mirror/...` is a path on the host).
    Url(String),
    /// A plain path read by the agent (relative paths against cluster.yaml's directory).
    File(PathBuf),
}

/// Classifies a cluster.yaml manifest reference.
pub fn source(reference: &str, config_dir: &Path) -> Source {
    if reference.contains("://") {
        return Source::Url(reference.to_string());
    }
    let path = Path::new(reference);
    Source::File(if path.is_absolute() {
        path.to_path_buf()
    } else {
        config_dir.join(path)
    })
}

/// Reads one manifest source as text.
pub async fn fetch(
    reference: &str,
    config_dir: &Path,
    runner: &dyn CommandRunner,
) -> Result<String, Error> {
    let fail = |message: String| Error::Fetch {
        source_ref: reference.to_string(),
        message,
    };
    match source(reference, config_dir) {
        Source::Url(url) => {
            let cmd = Cmd::new("curl").args(["-fsSL", "--retry", "3", &url]);
            let out = runner.run(&cmd).await.map_err(|e| fail(e.to_string()))?;
            String::from_utf8(out.stdout).map_err(|_| fail("is not UTF-8 text".into()))
        }
        Source::File(path) => tokio::fs::read_to_string(&path)
            .await
            .map_err(|e| fail(format!("{}: {e}", path.display()))),
    }
}

/// Installs Calico unless it is installed. Returns whether anything was applied.
pub async fn ensure(
    client: &Client,
    config: &ClusterConfig,
    runner: &dyn CommandRunner,
) -> Result<bool, Error> {
    if installed(client, config).await? {
        return Ok(false);
    }
    let mut manifests: Vec<Manifest> = Vec::new();
    for reference in [&config.cni.operator_crds, &config.cni.tigera_operator] {
        let text = fetch(reference, &config.dir(), runner).await?;
        manifests.extend(manifest::parse_str(&text, Path::new(reference))?);
    }
    let installation = serde_yaml_ng::to_string(&installation(config))
        .map_err(|e| Error::Internal(format!("Installation does not serialise: {e}")))?;
    manifests.extend(manifest::parse_str(
        &installation,
        Path::new("installation.yaml"),
    )?);
    Applier::new(client.clone(), FIELD_MANAGER)
        .force_conflicts(true)
        .apply_all(manifests)
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installation_pool_is_the_pod_cidr_and_addresses_come_from_internal_ip() {
        let config = ClusterConfig::parse(
            "master: {name: m, ip: 192.168.50.10}\npodCIDR: 10.244.0.0/16\n",
            Path::new("c.yaml"),
        )
        .unwrap();
        let i = installation(&config);
        assert_eq!(i["kind"], "Installation");
        assert_eq!(i["metadata"]["name"], "default");
        let net = &i["spec"]["calicoNetwork"];
        assert_eq!(net["ipPools"][0]["cidr"], "10.244.0.0/16");
        assert_eq!(
            net["nodeAddressAutodetectionV4"],
            serde_json::json!({"kubernetes": "NodeInternalIP"})
        );
    }

    #[test]
    fn sources_are_urls_or_files_relative_to_cluster_yaml() {
        let dir = Path::new("/c");
        assert_eq!(
            source("https://x/y.yaml", dir),
            Source::Url("https://x/y.yaml".into())
        );
        assert_eq!(
            source("f/crds.yaml", dir),
            Source::File("/c/f/crds.yaml".into())
        );
        assert_eq!(
            source("file:///srv/mirror/c.yaml", dir),
            Source::Url("file:///srv/mirror/c.yaml".into())
        );
        assert_eq!(source("/abs.yaml", dir), Source::File("/abs.yaml".into()));
    }

    #[tokio::test]
    async fn urls_are_fetched_with_curl_failing_on_http_errors() {
        let runner = node_agent::exec::RecordingRunner::new();
        runner.respond(|_| {
            Some(node_agent::exec::Output {
                stdout: b"kind: X".to_vec(),
                ..Default::default()
            })
        });
        let text = fetch("https://h/m.yaml", Path::new("/c"), &runner)
            .await
            .unwrap();
        assert_eq!(text, "kind: X");
        assert_eq!(
            runner.lines(),
            vec!["curl -fsSL --retry 3 https://h/m.yaml"]
        );
    }
}
