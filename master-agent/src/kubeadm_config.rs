//! The kubeadm v1beta4 `InitConfiguration` + `ClusterConfiguration` rendered from cluster.yaml:
//! what the seed passed as `kubeadm init` flags, now one typed file.

use cluster_common::ClusterConfig;
use node_agent::kubeadm::{KUBEADM_API, node_registration};

/// The port the API server listens on.
pub const API_SERVER_PORT: u16 = 6443;

/// How long the bootstrap token that `kubeadm init` always creates lives. Nodes never use it
/// (they get their own tokens through join tickets), so it is kept short and deleted after init.
pub const INIT_TOKEN_TTL: &str = "10m0s";

/// The description of the token `kubeadm init` creates, so it can be told apart.
pub const INIT_TOKEN_DESCRIPTION: &str =
    "created by kubeadm init; unused: nodes join with tickets from the master agent";

/// `kubernetesVersion`: the exact release when cluster.yaml pins a package version
/// (`1.35.0-1.1` → `v1.35.0`), else the installed kubeadm's own release (`kubeadm version -o
/// short`, passed as `installed`), else the newest patch of the minor (`stable-1.35`, which
/// kubeadm resolves online).
pub fn kubernetes_version(config: &ClusterConfig, installed: Option<&str>) -> String {
    if let Some(p) = &config.kubernetes_package_version {
        let release = p.split('-').next().unwrap_or(p);
        return format!("v{}", release.trim_start_matches('v'));
    }
    let minor = config.kubernetes_version.trim_start_matches('v');
    match installed.map(str::trim) {
        Some(v) if v.trim_start_matches('v').starts_with(&format!("{minor}.")) => {
            format!("v{}", v.trim_start_matches('v'))
        }
        _ => format!("stable-{minor}"),
    }
}

/// The two YAML documents for `kubeadm init --config`, for Kubernetes `version` (see
/// [`kubernetes_version`]). Holds no secret.
pub fn init_configuration(config: &ClusterConfig, version: &str) -> String {
    let master = &config.master;
    let init = serde_json::json!({
        "apiVersion": KUBEADM_API,
        "kind": "InitConfiguration",
        "bootstrapTokens": [{
            "description": INIT_TOKEN_DESCRIPTION,
            "ttl": INIT_TOKEN_TTL,
        }],
        "localAPIEndpoint": {
            "advertiseAddress": master.ip.to_string(),
            "bindPort": API_SERVER_PORT,
        },
        "nodeRegistration": node_registration(master),
    });
    let cluster = serde_json::json!({
        "apiVersion": KUBEADM_API,
        "kind": "ClusterConfiguration",
        "kubernetesVersion": version,
        "apiServer": {
            "certSANs": [master.ip.to_string(), master.name.as_str()],
        },
        "networking": {
            "podSubnet": config.pod_cidr.to_string(),
            "serviceSubnet": config.service_cidr.to_string(),
        },
    });
    let doc = |v: &serde_json::Value| {
        serde_yaml_ng::to_string(v).expect("a JSON value always serialises to YAML")
    };
    format!("{}---\n{}", doc(&init), doc(&cluster))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(extra: &str) -> ClusterConfig {
        let text = format!(
            "master: {{name: k8s-master, ip: 192.168.50.10}}\nnodes:\n  - {{name: node-1, ip: 192.168.50.11}}\npodCIDR: 10.244.0.0/16\n{extra}"
        );
        ClusterConfig::parse(&text, Path::new("/c/cluster.yaml")).unwrap()
    }

    fn docs(text: &str) -> Vec<serde_json::Value> {
        text.split("---\n")
            .map(|d| serde_yaml_ng::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn init_configuration_carries_what_the_seed_passed_as_flags() {
        let d = docs(&init_configuration(&config(""), "v1.35.2"));
        assert_eq!(d.len(), 2);
        let (init, cluster) = (&d[0], &d[1]);
        assert_eq!(init["apiVersion"], "kubeadm.k8s.io/v1beta4");
        assert_eq!(init["kind"], "InitConfiguration");
        assert_eq!(
            init["localAPIEndpoint"]["advertiseAddress"],
            "192.168.50.10"
        );
        assert_eq!(init["localAPIEndpoint"]["bindPort"], 6443);
        assert_eq!(init["nodeRegistration"]["name"], "k8s-master");
        assert_eq!(
            init["nodeRegistration"]["kubeletExtraArgs"],
            serde_json::json!([{"name": "node-ip", "value": "192.168.50.10"}])
        );
        assert_eq!(cluster["kind"], "ClusterConfiguration");
        assert_eq!(
            cluster["apiServer"]["certSANs"],
            serde_json::json!(["192.168.50.10", "k8s-master"])
        );
        assert_eq!(cluster["networking"]["podSubnet"], "10.244.0.0/16");
        assert_eq!(cluster["networking"]["serviceSubnet"], "10.96.0.0/12");
        assert_eq!(cluster["kubernetesVersion"], "v1.35.2");
    }

    #[test]
    fn the_init_token_is_short_lived_and_holds_no_secret() {
        let text = init_configuration(&config(""), "v1.35.2");
        let d = docs(&text);
        let tokens = d[0]["bootstrapTokens"].as_array().unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0]["ttl"], INIT_TOKEN_TTL);
        assert!(tokens[0].get("token").is_none(), "{text}");
    }

    #[test]
    fn release_comes_from_the_pin_then_the_installed_kubeadm_then_the_minor() {
        let c = config("kubernetes: {version: \"1.34\", packageVersion: 1.34.2-1.1}\n");
        assert_eq!(kubernetes_version(&c, Some("v1.34.5")), "v1.34.2");
        let c = config("kubernetes: {version: \"1.33\"}\n");
        assert_eq!(kubernetes_version(&c, Some("v1.33.4\n")), "v1.33.4");
        assert_eq!(kubernetes_version(&c, Some("v1.32.9")), "stable-1.33");
        assert_eq!(kubernetes_version(&c, None), "stable-1.33");
    }
}
