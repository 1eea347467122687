//! `ctl deploy letschat` and `ctl deploy -f PATH...`: server-side apply of manifests.
//!
//! `deploy letschat` applies the embedded manifests (`ctl/manifests/letschat/`) in two steps:
//! MongoDB (Deployment with a readiness probe + ClusterIP Service `mongo`), waited for until
//! Ready, then Let's Chat (Deployment with a readiness probe on HTTP `/` + NodePort Service
//! `letschat`), waited for until available. cluster.yaml `app` overrides the namespace, images,
//! replicas and nodePort. Everything goes through [`cluster_common::manifest`] with the field
//! manager [`FIELD_MANAGER`], so a second deploy changes nothing.
//!
//! `deploy -f` is `kubectl apply --server-side -f`: kinds through discovery, Namespaces and CRDs
//! first, then config and Services, then workloads. With `--wait`, workloads are applied one at a
//! time in the order given and each Deployment, DaemonSet and StatefulSet is waited for
//! (`kubectl rollout status` logic) before the next (other kinds are not waited for), so
//! dependencies listed first (MongoDB before Let's Chat, as in the seed) are up before their
//! users start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use cluster_common::config::{AppSpec, ClusterConfig, HostRole};
use cluster_common::manifest::{self, Applied, Applier, Manifest};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client};
use serde_json::Value;

use crate::kube::{FIELD_MANAGER, daemonset_status, statefulset_status, wait_rollout, wait_until};

/// The embedded MongoDB manifests (Deployment + Service).
pub const MONGO_YAML: &str = include_str!("../manifests/letschat/mongo.yaml");
/// The embedded Let's Chat manifests (Deployment + Service).
pub const LETSCHAT_YAML: &str = include_str!("../manifests/letschat/letschat.yaml");

/// Options shared by both forms of deploy.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// Take fields owned by other managers (`--force-conflicts`).
    pub force_conflicts: bool,
    /// How long to wait for each workload.
    pub timeout: Duration,
}

/// What `deploy letschat` did.
#[derive(Debug)]
pub struct LetsChatReport {
    /// Every object applied, MongoDB first.
    pub applied: Vec<Applied>,
    /// `http://<worker-ip>:<nodePort>` per worker.
    pub urls: Vec<String>,
}

/// The embedded manifests with cluster.yaml's `app` settings: (MongoDB, Let's Chat).
pub fn letschat_manifests(app: &AppSpec) -> Result<(Vec<Manifest>, Vec<Manifest>)> {
    let mut mongo = manifest::parse_str(MONGO_YAML, Path::new("<embedded>/mongo.yaml"))?;
    let mut letschat = manifest::parse_str(LETSCHAT_YAML, Path::new("<embedded>/letschat.yaml"))?;
    for m in mongo.iter_mut().chain(letschat.iter_mut()) {
        m.object["metadata"]["namespace"] = Value::String(app.namespace.clone());
    }
    for m in &mut mongo {
        if m.kind() == "Deployment" {
            m.object["spec"]["template"]["spec"]["containers"][0]["image"] =
                Value::String(app.mongo_image.clone());
        }
    }
    for m in &mut letschat {
        match m.kind() {
            "Deployment" => {
                m.object["spec"]["replicas"] = Value::from(app.replicas);
                m.object["spec"]["template"]["spec"]["containers"][0]["image"] =
                    Value::String(app.letschat_image.clone());
            }
            "Service" => {
                if let Some(port) = app.node_port {
                    m.object["spec"]["ports"][0]["nodePort"] = Value::from(port);
                }
            }
            _ => {}
        }
    }
    Ok((mongo, letschat))
}

/// `ctl deploy letschat`: MongoDB, wait Ready, Let's Chat, wait available; the URLs.
pub async fn deploy_letschat(
    client: &Client,
    config: &ClusterConfig,
    opts: &DeployOptions,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<LetsChatReport> {
    let app = &config.app;
    let (mongo, letschat) = letschat_manifests(app)?;
    let mut applier = Applier::new(client.clone(), FIELD_MANAGER)
        .force_conflicts(opts.force_conflicts)
        .default_namespace(&app.namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &app.namespace);

    let mut applied = applier.apply_all(mongo).await?;
    for a in &applied {
        progress(&a.to_string());
    }
    progress("waiting for MongoDB to be Ready");
    wait_rollout(&deployments, "mongo", opts.timeout, &mut *progress).await?;

    let second = applier.apply_all(letschat).await?;
    for a in &second {
        progress(&a.to_string());
    }
    applied.extend(second);
    progress("waiting for Let's Chat to be available");
    wait_rollout(&deployments, "letschat", opts.timeout, &mut *progress).await?;

    let services: Api<Service> = Api::namespaced(client.clone(), &app.namespace);
    let svc = services
        .get("letschat")
        .await
        .context("reading Service letschat")?;
    let urls = node_port(&svc)
        .map(|port| {
            config
                .hosts()
                .filter(|h| h.role == HostRole::Node)
                .map(|h| format!("http://{}:{port}", h.ip))
                .collect()
        })
        .unwrap_or_default();
    Ok(LetsChatReport { applied, urls })
}

/// The first nodePort of a Service.
pub fn node_port(svc: &Service) -> Option<i32> {
    svc.spec
        .as_ref()?
        .ports
        .as_ref()?
        .iter()
        .find_map(|p| p.node_port)
}

/// `ctl deploy -f PATH... [--wait]`.
pub async fn deploy_files(
    client: &Client,
    paths: &[PathBuf],
    namespace: &str,
    wait: bool,
    opts: &DeployOptions,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Vec<Applied>> {
    let manifests = manifest::load_paths(paths)?;
    let mut applier = Applier::new(client.clone(), FIELD_MANAGER)
        .force_conflicts(opts.force_conflicts)
        .default_namespace(namespace);
    if !wait {
        let applied = applier.apply_all(manifests).await?;
        for a in &applied {
            progress(&a.to_string());
        }
        return Ok(applied);
    }
    // Everything but workloads first (in dependency order), then each workload in the order
    // given, waited for before the next.
    let (workloads, rest): (Vec<_>, Vec<_>) = manifests
        .into_iter()
        .partition(|m| manifest::rank(m.kind()) == 3);
    let mut applied = applier.apply_all(rest).await?;
    for a in &applied {
        progress(&a.to_string());
    }
    for w in workloads {
        let mut one = applier.apply_all(vec![w]).await?;
        let a = one.remove(0);
        progress(&a.to_string());
        let ns = a.namespace.clone().unwrap_or_else(|| namespace.to_string());
        let what = format!("{}/{}", a.kind.to_lowercase(), a.name);
        let t = opts.timeout;
        match a.kind.as_str() {
            "Deployment" => {
                progress(&format!("waiting for {what} to be available"));
                let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
                wait_rollout(&api, &a.name, t, &mut *progress).await?;
            }
            "DaemonSet" => {
                progress(&format!("waiting for {what} to be available"));
                let api: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
                wait_until(&api, &a.name, t, daemonset_status, &mut *progress).await?;
            }
            "StatefulSet" => {
                progress(&format!("waiting for {what} to be ready"));
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
                wait_until(&api, &a.name, t, statefulset_status, &mut *progress).await?;
            }
            _ => {}
        }
        applied.push(a);
    }
    Ok(applied)
}

/// `ctl deploy`: `letschat`, or `-f PATH...`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["app", "files"])))]
pub struct DeployArgs {
    /// The built-in application to deploy: `letschat` (MongoDB, then Let's Chat; settings from
    /// cluster.yaml `app`).
    #[arg(value_parser = ["letschat"])]
    pub app: Option<String>,
    /// Manifest files or directories (multi-document YAML), like `kubectl apply --server-side -f`.
    /// Repeatable; directories are read by name, not recursively.
    #[arg(short = 'f', long = "filename", num_args = 1.., conflicts_with = "app")]
    pub files: Vec<PathBuf>,
    /// With -f: apply workloads one at a time in the order given; each Deployment, DaemonSet and
    /// StatefulSet is waited for until rolled out before the next. `deploy letschat` always
    /// waits.
    #[arg(long)]
    pub wait: bool,
    /// Namespace for objects that name none (default: cluster.yaml app.namespace).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Take ownership of fields that another field manager owns (server-side apply force).
    #[arg(long)]
    pub force_conflicts: bool,
    /// How long to wait for each workload, e.g. `5m`, `90s`.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl DeployArgs {
    /// Runs the command: progress on stderr, URLs (letschat) on stdout.
    pub async fn run(self, config: &ClusterConfig) -> Result<std::process::ExitCode> {
        let client = crate::kube::client(config).await?;
        let opts = DeployOptions {
            force_conflicts: self.force_conflicts,
            timeout: self.timeout,
        };
        let mut progress = |m: &str| eprintln!("{m}");
        if self.app.is_some() {
            let report = deploy_letschat(&client, config, &opts, &mut progress).await?;
            let changed = report
                .applied
                .iter()
                .filter(|a| a.outcome != manifest::Outcome::Unchanged)
                .count();
            eprintln!("Let's Chat is available ({changed} objects changed)");
            for url in &report.urls {
                println!("{url}");
            }
        } else {
            let ns = self.namespace.as_deref().unwrap_or(&config.app.namespace);
            deploy_files(&client, &self.files, ns, self.wait, &opts, &mut progress).await?;
        }
        Ok(std::process::ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_manifests_take_cluster_yaml_overrides() {
        let app = AppSpec {
            namespace: "chat".into(),
            mongo_image: "registry.local/mongo:4.4.29".into(),
            letschat_image: "registry.local/lets-chat:0.4.8".into(),
            replicas: 2,
            node_port: Some(30961),
        };
        let (mongo, letschat) = letschat_manifests(&app).unwrap();
        assert_eq!(
            mongo.iter().map(Manifest::display_name).collect::<Vec<_>>(),
            ["Deployment/chat/mongo", "Service/chat/mongo"]
        );
        assert_eq!(
            mongo[0].object["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.local/mongo:4.4.29"
        );
        assert_eq!(letschat[0].object["spec"]["replicas"], 2);
        assert_eq!(
            letschat[0].object["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.local/lets-chat:0.4.8"
        );
        assert_eq!(letschat[1].object["spec"]["ports"][0]["nodePort"], 30961);
        assert_eq!(letschat[1].object["spec"]["type"], "NodePort");
    }

    #[test]
    fn default_manifests_pin_mongo_4_4_with_probes() {
        let (mongo, letschat) = letschat_manifests(&AppSpec::default()).unwrap();
        let c = &mongo[0].object["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "mongo:4.4");
        assert!(c["readinessProbe"].is_object());
        let c = &letschat[0].object["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "sdelements/lets-chat");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/");
        assert_eq!(c["ports"][0]["containerPort"], 8080);
        assert!(
            letschat[1].object["spec"]["ports"][0]
                .get("nodePort")
                .is_none()
        );
        assert_eq!(mongo[1].object["spec"]["ports"][0]["port"], 27017);
        assert_eq!(mongo[1].object["spec"]["type"], "ClusterIP");
    }

    #[test]
    fn seed_examples_parse_as_apps_v1() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/letschat");
        let ms = manifest::load_paths(&[dir]).unwrap();
        assert_eq!(ms.len(), 4);
        for m in ms.iter().filter(|m| m.kind() == "Deployment") {
            assert_eq!(m.api_version(), "apps/v1");
        }
    }
}
