//! `ctl status`: named health checks with pass/fail, like `talosctl health`: every agent
//! reachable and its host prepared, the control plane up, each host registered as a node, Ready,
//! with its InternalIP equal to its cluster.yaml IP, and the CNI installed. Exits non-zero when a
//! check fails. Changes nothing (prepare runs as a plan).

use agent_proto::{ControlPlaneClient, HostClient, StepEvent, StepState, v1};
use cluster_common::config::{ClusterConfig, HostSpec};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde::Serialize;

use crate::agents::Agents;
use crate::bootstrap::node_ready;
use crate::kubeconfig;
use crate::output::{self, Format};

/// One named check.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    /// e.g. `node node-1 Ready`.
    pub name: String,
    /// Whether it holds.
    pub ok: bool,
    /// What was seen, or what to do.
    pub detail: String,
}

fn check(name: impl Into<String>, result: Result<String, String>) -> Check {
    let (ok, detail) = match result {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    Check {
        name: name.into(),
        ok,
        detail,
    }
}

async fn agent_checks(agents: &Agents, host: &HostSpec) -> Vec<Check> {
    let name = host.name.as_str();
    let channel = match agents.channel(host) {
        Ok(c) => c,
        Err(e) => {
            return vec![check(
                format!("agent {name} reachable"),
                Err(format!("{e:#}")),
            )];
        }
    };
    let mut client = HostClient::new(channel);
    let reachable = client
        .facts(v1::FactsRequest {})
        .await
        .map(|f| format!("{} at {}", f.into_inner().os_pretty_name, host.ip))
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()));
    let up = reachable.is_ok();
    let mut out = vec![check(format!("agent {name} reachable"), reachable)];
    if !up {
        return out;
    }
    let prepared = async {
        let mut stream = client
            .prepare(v1::PrepareRequest { plan: true })
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        let mut pending = Vec::new();
        while let Some(item) = stream.next().await {
            let e = item.map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
            let e = StepEvent::try_from(e).map_err(|e| e.to_string())?;
            match e.state {
                StepState::Changed | StepState::Failed => {
                    pending.push(format!("{}: {}", e.step, e.message))
                }
                StepState::Running | StepState::Unchanged => {}
            }
        }
        if pending.is_empty() {
            Ok("every step unchanged".to_string())
        } else {
            Err(format!(
                "would change: {}; run `ctl prepare`",
                pending.join("; ")
            ))
        }
    }
    .await;
    out.push(check(format!("host {name} prepared"), prepared));
    out
}

/// Runs every check.
pub async fn run(config: &ClusterConfig, agents: &Agents) -> Vec<Check> {
    let mut checks: Vec<Check> =
        futures::future::join_all(config.hosts().map(|h| agent_checks(agents, h)))
            .await
            .into_iter()
            .flatten()
            .collect();

    let kubeconfig = async {
        let mut cp = ControlPlaneClient::new(
            agents
                .channel(&config.master)
                .map_err(|e| format!("{e:#}"))?,
        );
        cp.admin_kubeconfig(v1::AdminKubeconfigRequest {})
            .await
            .map(|r| r.into_inner().kubeconfig)
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    }
    .await;
    let client = match kubeconfig {
        Ok(bytes) => kubeconfig::client_from_bytes(&bytes)
            .await
            .map_err(|e| format!("{e:#}")),
        Err(e) => Err(e),
    };
    let endpoint = config.api_server_endpoint();
    let client = match client {
        Ok(c) => match c.apiserver_version().await {
            Ok(v) => {
                checks.push(check(
                    "control plane up",
                    Ok(format!("API server {endpoint} answers, {}", v.git_version)),
                ));
                c
            }
            Err(e) => {
                checks.push(check(
                    "control plane up",
                    Err(format!("API server {endpoint}: {e}")),
                ));
                return checks;
            }
        },
        Err(e) => {
            checks.push(check(
                "control plane up",
                Err(format!("no admin kubeconfig from the master agent: {e}")),
            ));
            return checks;
        }
    };

    let nodes: Api<Node> = Api::all(client.clone());
    let list = match nodes.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => {
            checks.push(check("nodes listed", Err(e.to_string())));
            return checks;
        }
    };
    for h in config.hosts() {
        let name = h.name.as_str();
        let node = list
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name));
        let Some(node) = node else {
            checks.push(check(
                format!("node {name} registered"),
                Err("not a node of the cluster: run `ctl bootstrap`".into()),
            ));
            continue;
        };
        checks.push(check(
            format!("node {name} registered"),
            Ok("registered".into()),
        ));
        checks.push(check(
            format!("node {name} Ready"),
            if node_ready(node) {
                Ok("Ready".into())
            } else {
                Err("not Ready".into())
            },
        ));
        let internal: Vec<String> = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .map(|a| {
                a.iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .map(|a| a.address.clone())
                    .collect()
            })
            .unwrap_or_default();
        let want = h.ip.to_string();
        checks.push(check(
            format!("node {name} InternalIP"),
            if internal.first() == Some(&want) {
                Ok(want)
            } else {
                Err(format!(
                    "InternalIP {} but cluster.yaml says {want}: the kubelet uses the wrong NIC (check --node-ip)",
                    if internal.is_empty() { "none".to_string() } else { internal.join(",") }
                ))
            },
        ));
    }
    let extra: Vec<String> = list
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .filter(|n| config.host(n).is_none())
        .collect();
    if !extra.is_empty() {
        checks.push(check(
            "no unknown nodes",
            Err(format!("nodes not in cluster.yaml: {}", extra.join(", "))),
        ));
    }

    let gvk = GroupVersionKind::gvk("operator.tigera.io", "v1", "Installation");
    let installations: Api<DynamicObject> = Api::all_with(client, &ApiResource::from_gvk(&gvk));
    let cni = match installations.get_opt("default").await {
        Ok(Some(i)) => {
            let cidr = i.data["spec"]["calicoNetwork"]["ipPools"][0]["cidr"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let degraded = i.data["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Degraded" && c["status"] == "True");
            if cidr != config.pod_cidr.to_string() {
                Err(format!(
                    "Calico IP pool {cidr:?} is not podCIDR {}",
                    config.pod_cidr
                ))
            } else if degraded {
                Err("Calico Installation is Degraded".into())
            } else {
                Ok(format!("Calico, IP pool {cidr}"))
            }
        }
        Ok(None) => Err("no Calico Installation: run `ctl bootstrap`".into()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            Err("Calico is not installed: run `ctl bootstrap`".into())
        }
        Err(e) => Err(e.to_string()),
    };
    checks.push(check("CNI ready", cni));
    checks
}

/// Renders the checks.
pub fn render(checks: &[Check], format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(checks)? + "\n",
        Format::Yaml => serde_yaml_ng::to_string(checks)?,
        Format::Table => {
            let rows: Vec<Vec<String>> = checks
                .iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        if c.ok { "PASS" } else { "FAIL" }.to_string(),
                        c.detail.clone(),
                    ]
                })
                .collect();
            output::table(&["CHECK", "RESULT", "DETAIL"], &rows)
        }
    })
}

/// `ctl status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

impl StatusArgs {
    /// Runs every check; exit code 1 when one fails.
    pub async fn run(&self, config: &ClusterConfig) -> anyhow::Result<std::process::ExitCode> {
        let agents = crate::bootstrap::preflight(config)?;
        let checks = run(config, &agents).await;
        print!("{}", render(&checks, self.output)?);
        let failed = checks.iter().filter(|c| !c.ok).count();
        if failed > 0 {
            eprintln!("{failed} of {} checks failed", checks.len());
            return Ok(std::process::ExitCode::FAILURE);
        }
        eprintln!("all {} checks passed", checks.len());
        Ok(std::process::ExitCode::SUCCESS)
    }
}
