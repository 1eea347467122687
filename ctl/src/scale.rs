//! `ctl scale NAME|deploy/NAME --replicas N`: the Deployment's scale subresource, then a
//! watch until the rollout is complete (`kubectl rollout status` logic, see
//! [`crate::kube::rollout_status`]), then its pods like `kubectl get pod -o wide`.
//!
//! Input is checked before anything is sent: N must be an integer in 0..=[`MAX_REPLICAS`], the
//! target a Deployment name that exists (else the error lists the Deployments that do).

use std::time::Duration;

use anyhow::Result;
use cluster_common::config::MAX_APP_REPLICAS;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::kube::{AppError, SCALE_MANAGER, get_deployment, pods_of, wait_rollout};

/// The most replicas `ctl scale` accepts (a typo guard on a small VM cluster): 50.
pub const MAX_REPLICAS: u32 = MAX_APP_REPLICAS;

/// Parses `--replicas`: a non-negative integer up to [`MAX_REPLICAS`].
pub fn parse_replicas(input: &str) -> Result<i32, AppError> {
    let bad = |reason: String| AppError::BadReplicas {
        input: input.into(),
        reason,
    };
    let n: i64 = input
        .trim()
        .parse()
        .map_err(|_| bad("not a whole number".into()))?;
    if n < 0 {
        return Err(bad("must not be negative".into()));
    }
    if n > i64::from(MAX_REPLICAS) {
        return Err(bad(format!("more than the limit of {MAX_REPLICAS}")));
    }
    Ok(n as i32)
}

/// Parses the target: `NAME`, `deploy/NAME`, `deployment/NAME`, `deployments/NAME` or
/// `deployment.apps/NAME`.
pub fn parse_target(input: &str) -> Result<String, AppError> {
    let bad = || AppError::BadTarget {
        input: input.into(),
    };
    let name = match input.split_once('/') {
        None => input,
        Some((kind, name)) => match kind {
            "deploy" | "deployment" | "deployments" | "deployment.apps" | "deployments.apps" => {
                name
            }
            _ => return Err(bad()),
        },
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(name.to_string())
    } else {
        Err(bad())
    }
}

/// What `ctl scale` ends with.
#[derive(Debug)]
pub struct Scaled {
    /// The Deployment after the rollout.
    pub deployment: Deployment,
    /// Its pods, oldest first.
    pub pods: Vec<Pod>,
}

/// Scales Deployment `name` in `namespace` to `replicas` and waits for the rollout.
pub async fn scale(
    client: &Client,
    namespace: &str,
    name: &str,
    replicas: i32,
    timeout: Duration,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Scaled> {
    get_deployment(client, namespace, name).await?;
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let pp = PatchParams {
        field_manager: Some(SCALE_MANAGER.into()),
        ..PatchParams::default()
    };
    let patch = serde_json::json!({ "spec": { "replicas": replicas } });
    api.patch_scale(name, &pp, &Patch::Merge(&patch)).await?;
    progress(&format!("deployment/{name} scaled to {replicas}"));
    let deployment = wait_rollout(&api, name, timeout, &mut *progress).await?;
    let pods = pods_of(client, &deployment).await?;
    Ok(Scaled { deployment, pods })
}

/// `ctl scale NAME|deploy/NAME --replicas N`.
#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// The Deployment: `NAME` or `deploy/NAME`.
    pub target: String,
    /// Desired replicas: a whole number from 0 to 50.
    #[arg(long, allow_hyphen_values = true)]
    pub replicas: String,
    /// Namespace (default: cluster.yaml app.namespace).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// How long to wait for the rollout, e.g. `5m`, `90s`.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl ScaleArgs {
    /// Runs the command: progress on stderr, the pods table on stdout.
    pub async fn run(
        self,
        config: &cluster_common::ClusterConfig,
    ) -> Result<std::process::ExitCode> {
        // Bad input fails before the cluster is contacted.
        let replicas = parse_replicas(&self.replicas)?;
        let name = parse_target(&self.target)?;
        let client = crate::kube::client(config).await?;
        let ns = self.namespace.as_deref().unwrap_or(&config.app.namespace);
        let mut progress = |m: &str| eprintln!("{m}");
        let scaled = scale(&client, ns, &name, replicas, self.timeout, &mut progress).await?;
        let now = crate::kube::Now::system();
        let rows: Vec<_> = scaled
            .pods
            .iter()
            .map(|p| crate::kube::pod_row(p, now))
            .collect();
        eprintln!("deployment/{name} rolled out: {replicas} replicas available");
        print!(
            "{}",
            crate::output::table(&crate::kube::POD_WIDE_HEADER, &rows)
        );
        Ok(std::process::ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_must_be_a_whole_number_in_range() {
        assert_eq!(parse_replicas("3").unwrap(), 3);
        assert_eq!(parse_replicas("0").unwrap(), 0);
        assert_eq!(parse_replicas("50").unwrap(), 50);
        for (input, want) in [
            ("-1", "must not be negative"),
            ("three", "not a whole number"),
            ("2.5", "not a whole number"),
            ("", "not a whole number"),
            ("51", "more than the limit of 50"),
            ("99999999999999999999", "not a whole number"),
        ] {
            let msg = parse_replicas(input).unwrap_err().to_string();
            assert!(msg.contains(want), "{input}: {msg}");
            assert!(msg.contains(&format!("{input:?}")), "{msg}");
        }
    }

    #[test]
    fn targets_are_names_or_deploy_slash_names() {
        assert_eq!(parse_target("letschat").unwrap(), "letschat");
        assert_eq!(parse_target("deploy/letschat").unwrap(), "letschat");
        assert_eq!(
            parse_target("deployment.apps/letschat").unwrap(),
            "letschat"
        );
        for bad in ["svc/letschat", "deploy/", "Lets_Chat", "-x", "a/b/c"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }
}
