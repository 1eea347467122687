//! `ctl facts`: asks every agent for its host facts in parallel.

use agent_proto::{HostClient, v1};
use cluster_common::config::{ClusterConfig, HostSpec};
use serde::Serialize;

use crate::agents::Agents;
use crate::output::{self, Format};

/// One host's row.
#[derive(Debug, Clone, Serialize)]
pub struct HostFactsRow {
    /// Host name from cluster.yaml.
    pub name: String,
    /// master or node.
    pub role: String,
    /// IP from cluster.yaml.
    pub ip: String,
    /// Whether the agent answered.
    pub reachable: bool,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the agent reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts: Option<Facts>,
}

/// The facts an agent reported.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// e.g. `Ubuntu 24.04.1 LTS`.
    pub os: String,
    /// `ID` from os-release.
    pub os_id: String,
    /// `VERSION_ID` from os-release.
    pub os_version: String,
    /// Kernel release.
    pub kernel: String,
    /// Logical CPUs.
    pub cpus: u32,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Total active swap in bytes.
    pub swap_bytes: u64,
    /// Active swap areas.
    pub swaps: Vec<String>,
    /// Agent version.
    pub agent_version: String,
}

async fn ask(agents: &Agents, host: &HostSpec) -> HostFactsRow {
    let mut row = HostFactsRow {
        name: host.name.to_string(),
        role: host.role.to_string(),
        ip: host.ip.to_string(),
        reachable: false,
        error: None,
        facts: None,
    };
    let result = async {
        let mut client = HostClient::new(agents.channel(host)?);
        let f = client.facts(v1::FactsRequest {}).await?.into_inner();
        anyhow::Ok(f)
    }
    .await;
    match result {
        Ok(f) => {
            row.reachable = true;
            row.facts = Some(Facts {
                os: f.os_pretty_name,
                os_id: f.os_id,
                os_version: f.os_version_id,
                kernel: f.kernel,
                cpus: f.cpus,
                memory_bytes: f.memory_total_bytes,
                swap_bytes: f.swap_total_bytes,
                swaps: f.swaps.into_iter().map(|s| s.path).collect(),
                agent_version: f.agent_version,
            });
        }
        Err(e) => row.error = Some(describe(&e)),
    }
    row
}

/// A one-line reason from a connection or call error.
pub fn describe(e: &anyhow::Error) -> String {
    if let Some(s) = e.downcast_ref::<tonic::Status>() {
        let mut msg = format!("{:?}: {}", s.code(), s.message());
        if let Some(src) = std::error::Error::source(s) {
            msg.push_str(&format!(" ({})", chain(src)));
        }
        return msg;
    }
    chain(e.as_ref())
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.contains(&t) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Asks every host of `config` in parallel, master first in the result.
pub async fn gather(config: &ClusterConfig, agents: &Agents) -> Vec<HostFactsRow> {
    futures::future::join_all(config.hosts().map(|h| ask(agents, h))).await
}

/// Renders rows in `format`.
pub fn render(rows: &[HostFactsRow], format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(rows)? + "\n",
        Format::Yaml => serde_yaml_ng::to_string(rows)?,
        Format::Table => {
            let body: Vec<Vec<String>> = rows
                .iter()
                .map(|r| match &r.facts {
                    Some(f) => vec![
                        r.name.clone(),
                        r.role.clone(),
                        r.ip.clone(),
                        "yes".into(),
                        f.os.clone(),
                        f.kernel.clone(),
                        f.cpus.to_string(),
                        output::bytes(f.memory_bytes),
                        if f.swap_bytes == 0 {
                            "off".into()
                        } else {
                            format!("{} on", output::bytes(f.swap_bytes))
                        },
                        f.agent_version.clone(),
                    ],
                    None => vec![
                        r.name.clone(),
                        r.role.clone(),
                        r.ip.clone(),
                        "no".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                    ],
                })
                .collect();
            output::table(
                &[
                    "NAME",
                    "ROLE",
                    "IP",
                    "REACHABLE",
                    "OS",
                    "KERNEL",
                    "CPUS",
                    "MEMORY",
                    "SWAP",
                    "AGENT",
                ],
                &body,
            )
        }
    })
}
