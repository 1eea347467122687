//! The Kubernetes side of `ctl`: the admin client, `kubectl rollout status` logic driven by a
//! watch, and pod rows like `kubectl get pod -o wide`.
//!
//! The client is built from the admin kubeconfig that `ctl bootstrap` writes next to
//! cluster.yaml ([`ClusterConfig::admin_kubeconfig_path`]); before that, every command that needs
//! the cluster says to run `ctl bootstrap` first. Nothing here writes files.

use std::path::PathBuf;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use cluster_common::config::ClusterConfig;

/// The field manager of everything `ctl deploy` applies.
pub const FIELD_MANAGER: &str = "ctl";
/// The field manager of `ctl scale` (owns `.spec.replicas` after a scale).
pub const SCALE_MANAGER: &str = "ctl-scale";

/// Errors that name what the operator gave or what the cluster holds.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No admin kubeconfig yet.
    #[error("no admin kubeconfig at {}: run `ctl bootstrap` first", path.display())]
    NoKubeconfig {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The kubeconfig exists but is unusable.
    #[error("admin kubeconfig {} is unusable: {message}", path.display())]
    BadKubeconfig {
        /// Its path.
        path: PathBuf,
        /// What is wrong (never its content).
        message: String,
    },
    /// `--replicas` is not an integer in range.
    #[error("--replicas {input:?}: {reason}")]
    BadReplicas {
        /// What was given.
        input: String,
        /// What is wrong.
        reason: String,
    },
    /// The scale target is not `NAME` or `deploy/NAME`.
    #[error("{input:?}: expected NAME or deploy/NAME (only Deployments can be scaled)")]
    BadTarget {
        /// What was given.
        input: String,
    },
    /// No such Deployment.
    #[error(
        "Deployment {name:?} not found in namespace {namespace:?}; {}",
        existing_list(existing)
    )]
    UnknownDeployment {
        /// The name asked for.
        name: String,
        /// The namespace searched.
        namespace: String,
        /// The Deployments that exist there.
        existing: Vec<String>,
    },
    /// The rollout exceeded its progress deadline.
    #[error("{name:?} exceeded its progress deadline: {message}")]
    RolloutFailed {
        /// Deployment name.
        name: String,
        /// The Progressing condition's message.
        message: String,
    },
    /// The workload is gone (deleted while we waited, or never created).
    #[error("{name:?} does not exist (deleted while waiting for its rollout?)")]
    Deleted {
        /// Deployment name.
        name: String,
    },
    /// Waiting took too long.
    #[error("{name:?} not rolled out after {after:?}: {last}")]
    Timeout {
        /// Deployment name.
        name: String,
        /// How long we waited.
        after: Duration,
        /// The last rollout status seen.
        last: String,
    },
}

fn existing_list(existing: &[String]) -> String {
    if existing.is_empty() {
        "there are no Deployments there".into()
    } else {
        format!("existing Deployments: {}", existing.join(", "))
    }
}

/// A client for the cluster from the admin kubeconfig next to cluster.yaml.
pub async fn client(config: &ClusterConfig) -> Result<Client, AppError> {
    let path = config.admin_kubeconfig_path();
    if !path.exists() {
        return Err(AppError::NoKubeconfig { path });
    }
    client_from(&path).await
}

/// A client from the kubeconfig at `path`.
pub async fn client_from(path: &std::path::Path) -> Result<Client, AppError> {
    let bad = |message: String| AppError::BadKubeconfig {
        path: path.to_path_buf(),
        message,
    };
    let kc = Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| bad(e.to_string()))?;
    Client::try_from(cfg).map_err(|e| bad(e.to_string()))
}

/// Where a rollout stands, as `kubectl rollout status` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Every replica updated and available, no old ones left.
    Complete,
    /// Still going; the message says what it waits for.
    Waiting(String),
    /// `ProgressDeadlineExceeded`.
    Failed(String),
}

/// `kubectl rollout status` for a Deployment.
///
/// Not `kube::runtime::wait::conditions::is_deployment_completed`: that only reads the
/// `NewReplicaSetAvailable` reason of the Progressing condition, which is still true right after
/// a pure scale. Here: `observedGeneration >= generation`, then `updatedReplicas ==
/// spec.replicas`, `replicas == updatedReplicas`, `availableReplicas == updatedReplicas`; a
/// `ProgressDeadlineExceeded` condition fails.
pub fn rollout_status(d: &Deployment) -> Rollout {
    let name = d.name_any();
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(status) = &d.status else {
        return Rollout::Waiting(format!(
            "waiting for deployment {name:?} spec update to be observed"
        ));
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return Rollout::Waiting(format!(
            "waiting for deployment {name:?} spec update to be observed"
        ));
    }
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing")
        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        return Rollout::Failed(c.message.clone().unwrap_or_default());
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated != want {
        return Rollout::Waiting(format!("{updated} of {want} replicas of {name:?} updated"));
    }
    if replicas != updated {
        return Rollout::Waiting(format!(
            "{} old replicas of {name:?} pending termination",
            replicas - updated
        ));
    }
    if available != updated {
        return Rollout::Waiting(format!(
            "{available} of {updated} replicas of {name:?} available"
        ));
    }
    Rollout::Complete
}

/// Waits, on a watch of this one Deployment, until [`rollout_status`] is complete; prints each
/// new waiting message through `progress`.
pub async fn wait_rollout(
    api: &Api<Deployment>,
    name: &str,
    timeout: Duration,
    progress: impl FnMut(&str),
) -> Result<Deployment, AppError> {
    wait_until(api, name, timeout, rollout_status, progress).await
}

/// `kubectl rollout status` for a DaemonSet: the new generation observed, every scheduled pod
/// updated and available.
pub fn daemonset_status(ds: &DaemonSet) -> Rollout {
    let name = ds.name_any();
    let generation = ds.metadata.generation.unwrap_or(0);
    let Some(s) = &ds.status else {
        return Rollout::Waiting(format!("waiting for daemon set {name:?} to be observed"));
    };
    if s.observed_generation.unwrap_or(0) < generation {
        return Rollout::Waiting(format!("waiting for daemon set {name:?} to be observed"));
    }
    let want = s.desired_number_scheduled;
    let updated = s.updated_number_scheduled.unwrap_or(0);
    let available = s.number_available.unwrap_or(0);
    if updated < want {
        return Rollout::Waiting(format!("{updated} of {want} pods of {name:?} updated"));
    }
    if available < want {
        return Rollout::Waiting(format!("{available} of {want} pods of {name:?} available"));
    }
    Rollout::Complete
}

/// `kubectl rollout status` for a StatefulSet: the new generation observed, every replica
/// ready, the update revision rolled out.
pub fn statefulset_status(sts: &StatefulSet) -> Rollout {
    let name = sts.name_any();
    let generation = sts.metadata.generation.unwrap_or(0);
    let Some(s) = &sts.status else {
        return Rollout::Waiting(format!("waiting for statefulset {name:?} to be observed"));
    };
    if s.observed_generation.unwrap_or(0) == 0 || s.observed_generation.unwrap_or(0) < generation {
        return Rollout::Waiting(format!("waiting for statefulset {name:?} to be observed"));
    }
    let want = sts.spec.as_ref().and_then(|sp| sp.replicas).unwrap_or(1);
    let ready = s.ready_replicas.unwrap_or(0);
    if ready < want {
        return Rollout::Waiting(format!("{ready} of {want} pods of {name:?} ready"));
    }
    if s.update_revision.is_some() && s.update_revision != s.current_revision {
        return Rollout::Waiting(format!("statefulset {name:?} rolling update in progress"));
    }
    Rollout::Complete
}

/// Waits, on a watch of the one object `name`, until `status` says complete; prints each new
/// waiting message through `progress`. The watch uses `default_backoff` (no sleep-polling).
pub async fn wait_until<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    status: fn(&K) -> Rollout,
    mut progress: impl FnMut(&str),
) -> Result<K, AppError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api.clone(), cfg).default_backoff().boxed();
    let mut last = String::from("no status seen yet");
    let mut seen = false;
    let fut = async {
        while let Some(event) = stream.try_next().await.transpose() {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    // default_backoff retries; report and go on.
                    tracing::debug!(error = %e, "watch error");
                    continue;
                }
            };
            let d = match event {
                watcher::Event::Apply(d) | watcher::Event::InitApply(d) => d,
                watcher::Event::Delete(_) => {
                    return Err(AppError::Deleted { name: name.into() });
                }
                watcher::Event::InitDone if !seen => {
                    return Err(AppError::Deleted { name: name.into() });
                }
                watcher::Event::Init | watcher::Event::InitDone => continue,
            };
            seen = true;
            match status(&d) {
                Rollout::Complete => return Ok(d),
                Rollout::Failed(message) => {
                    return Err(AppError::RolloutFailed {
                        name: name.into(),
                        message,
                    });
                }
                Rollout::Waiting(msg) => {
                    if msg != last {
                        progress(&msg);
                        last = msg;
                    }
                }
            }
        }
        Err(AppError::Deleted { name: name.into() })
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(AppError::Timeout {
            name: name.into(),
            after: timeout,
            last,
        }),
    }
}

/// The Deployment `name` in `namespace`, or an error listing the Deployments that exist there.
pub async fn get_deployment(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Deployment> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    if let Some(d) = api.get_opt(name).await? {
        return Ok(d);
    }
    let existing = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|d| d.name_any())
        .collect();
    Err(AppError::UnknownDeployment {
        name: name.into(),
        namespace: namespace.into(),
        existing,
    }
    .into())
}

/// `matchLabels` of a Deployment as a label selector (`a=b,c=d`).
pub fn selector(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// The pods of a Deployment (by its selector), oldest first.
pub async fn pods_of(client: &Client, d: &Deployment) -> anyhow::Result<Vec<Pod>> {
    let ns = d.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut pods = api
        .list(&ListParams::default().labels(&selector(d)))
        .await?
        .items;
    pods.retain(|p| p.metadata.deletion_timestamp.is_none());
    pods.sort_by(|a, b| {
        a.creation_timestamp()
            .map(|t| t.0)
            .cmp(&b.creation_timestamp().map(|t| t.0))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    Ok(pods)
}

/// Columns of `kubectl get pod -o wide` that matter here.
pub const POD_WIDE_HEADER: [&str; 7] = ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"];

/// One `kubectl get pod -o wide` row: name, ready, status, restarts, age, IP, node.
pub fn pod_row(p: &Pod, now: Now) -> Vec<String> {
    let status = p.status.as_ref();
    let statuses = status
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let total = p.spec.as_ref().map(|s| s.containers.len()).unwrap_or(0);
    let ready = statuses.iter().filter(|c| c.ready).count();
    let restarts: i32 = statuses.iter().map(|c| c.restart_count).sum();
    vec![
        p.name_any(),
        format!("{ready}/{total}"),
        pod_status(p),
        restarts.to_string(),
        age(p.creation_timestamp().as_ref(), now),
        status
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_else(|| "<none>".into()),
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| "<none>".into()),
    ]
}

/// The STATUS column of kubectl: a waiting/terminated reason beats the phase; `Terminating`
/// when deleted.
pub fn pod_status(p: &Pod) -> String {
    if p.metadata.deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    let status = p.status.as_ref();
    let mut reason = status
        .and_then(|s| s.reason.clone())
        .or_else(|| status.and_then(|s| s.phase.clone()))
        .unwrap_or_else(|| "Unknown".into());
    for c in status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
    {
        if let Some(state) = &c.state {
            if let Some(w) = state.waiting.as_ref().and_then(|w| w.reason.clone()) {
                reason = w;
            } else if let Some(t) = &state.terminated {
                reason = t
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("ExitCode:{}", t.exit_code));
            }
        }
    }
    reason
}

/// A point in time (UTC) to compute ages against; injectable in tests.
#[derive(Debug, Clone, Copy)]
pub struct Now(pub k8s_openapi::jiff::Timestamp);

impl Now {
    /// The current time.
    pub fn system() -> Self {
        Now(k8s_openapi::jiff::Timestamp::now())
    }
}

/// kubectl's short age: `45s`, `3m12s`, `5h`, `2d3h`...
pub fn age(created: Option<&Time>, now: Now) -> String {
    let Some(t) = created else {
        return "<unknown>".into();
    };
    let secs = (now.0.as_second() - t.0.as_second()).max(0);
    human_duration(secs)
}

/// Seconds as kubectl's `HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        match secs % 60 {
            0 => format!("{m}m"),
            s => format!("{m}m{s}s"),
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        match m % 60 {
            0 => format!("{h}h"),
            mm => format!("{h}h{mm}m"),
        }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        match h % 24 {
            0 => format!("{d}d"),
            hh => format!("{d}d{hh}h"),
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(json: serde_json::Value) -> Deployment {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn rollout_waits_for_the_new_generation_to_be_observed() {
        let d = deployment(serde_json::json!({
            "metadata": {"name": "letschat", "generation": 3},
            "spec": {"replicas": 3, "selector": {}, "template": {}},
            "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1,
                       "availableReplicas": 1,
                       "conditions": [{"type": "Progressing", "status": "True",
                                       "reason": "NewReplicaSetAvailable"}]}
        }));
        // is_deployment_completed would say yes here (NewReplicaSetAvailable).
        assert!(matches!(rollout_status(&d), Rollout::Waiting(m) if m.contains("observed")));
    }

    #[test]
    fn rollout_after_a_scale_waits_for_every_replica_to_be_available() {
        let mut d = deployment(serde_json::json!({
            "metadata": {"name": "letschat", "generation": 2},
            "spec": {"replicas": 3, "selector": {}, "template": {}},
            "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3,
                       "availableReplicas": 1,
                       "conditions": [{"type": "Progressing", "status": "True",
                                       "reason": "NewReplicaSetAvailable"}]}
        }));
        assert_eq!(
            rollout_status(&d),
            Rollout::Waiting("1 of 3 replicas of \"letschat\" available".into())
        );
        d.status.as_mut().unwrap().available_replicas = Some(3);
        assert_eq!(rollout_status(&d), Rollout::Complete);
        d.status.as_mut().unwrap().replicas = Some(4);
        assert!(matches!(rollout_status(&d), Rollout::Waiting(m) if m.contains("termination")));
    }

    #[test]
    fn progress_deadline_exceeded_fails_the_rollout() {
        let d = deployment(serde_json::json!({
            "metadata": {"name": "x", "generation": 1},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                       "conditions": [{"type": "Progressing", "status": "False",
                                       "reason": "ProgressDeadlineExceeded",
                                       "message": "ReplicaSet \"x-1\" has timed out progressing."}]}
        }));
        assert_eq!(
            rollout_status(&d),
            Rollout::Failed("ReplicaSet \"x-1\" has timed out progressing.".into())
        );
    }

    #[test]
    fn daemonsets_and_statefulsets_wait_for_every_pod() {
        let mut ds: DaemonSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "calico-node", "generation": 1},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 3,
                       "currentNumberScheduled": 3, "numberMisscheduled": 0, "numberReady": 2,
                       "updatedNumberScheduled": 3, "numberAvailable": 2}
        }))
        .unwrap();
        assert_eq!(
            daemonset_status(&ds),
            Rollout::Waiting("2 of 3 pods of \"calico-node\" available".into())
        );
        ds.status.as_mut().unwrap().number_available = Some(3);
        assert_eq!(daemonset_status(&ds), Rollout::Complete);
        let mut sts: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "generation": 2},
            "spec": {"replicas": 2, "selector": {}, "serviceName": "db", "template": {}},
            "status": {"observedGeneration": 2, "replicas": 2, "readyReplicas": 1,
                       "currentRevision": "db-1", "updateRevision": "db-1"}
        }))
        .unwrap();
        assert!(matches!(statefulset_status(&sts), Rollout::Waiting(_)));
        sts.status.as_mut().unwrap().ready_replicas = Some(2);
        assert_eq!(statefulset_status(&sts), Rollout::Complete);
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(192), "3m12s");
        assert_eq!(human_duration(60 * 25), "25m");
        assert_eq!(human_duration(3600 * 5 + 60 * 7), "5h7m");
        assert_eq!(human_duration(3600 * 26), "26h");
        assert_eq!(human_duration(86400 * 2 + 3600 * 3), "2d3h");
    }

    #[test]
    fn crash_looping_pod_shows_the_waiting_reason() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "letschat-1"},
            "spec": {"containers": [{"name": "letschat"}], "nodeName": "node-1"},
            "status": {"phase": "Running", "podIP": "10.244.1.5",
                       "containerStatuses": [{"name": "letschat", "ready": false, "restartCount": 4,
                           "image": "i", "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        }))
        .unwrap();
        let row = pod_row(&p, Now::system());
        assert_eq!(row[..4], ["letschat-1", "0/1", "CrashLoopBackOff", "4"]);
        assert_eq!(row[5..], ["10.244.1.5", "node-1"]);
    }
}
