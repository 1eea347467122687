//! `ctl get pods|deploy|svc|nodes [-n NS|-A] [-o wide|json|yaml]`: a quick look at the cluster
//! without kubectl. Tables follow kubectl's columns; json/yaml print a `v1` `List` like
//! `kubectl get -o json`.

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::ListParams;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::kube::{Now, POD_WIDE_HEADER, age, pod_row};
use crate::output::table;

/// What to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Pods.
    #[value(alias = "pod", alias = "po")]
    Pods,
    /// Deployments.
    #[value(alias = "deployment", alias = "deployments")]
    Deploy,
    /// Services.
    #[value(alias = "service", alias = "services")]
    Svc,
    /// Nodes (cluster-scoped: -n/-A do not apply).
    #[value(alias = "node", alias = "no")]
    Nodes,
}

/// `-o` for `ctl get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum GetFormat {
    /// kubectl's default columns.
    #[default]
    Table,
    /// More columns (pod IP and node, selectors, images, node addresses).
    Wide,
    /// A v1 List as JSON.
    Json,
    /// A v1 List as YAML.
    Yaml,
}

/// Which namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One namespace.
    Namespace(String),
    /// `-A`.
    All,
}

/// Lists `kind` and renders it.
pub async fn get(client: &Client, kind: Kind, scope: &Scope, format: GetFormat) -> Result<String> {
    let now = Now::system();
    match kind {
        Kind::Pods => {
            let items: Vec<Pod> = list(client, scope).await?;
            render(
                &items,
                scope,
                format,
                |p, wide| pods_row(p, wide, now),
                pods_header,
            )
        }
        Kind::Deploy => {
            let items: Vec<Deployment> = list(client, scope).await?;
            render(
                &items,
                scope,
                format,
                |d, wide| deploy_row(d, wide, now),
                deploy_header,
            )
        }
        Kind::Svc => {
            let items: Vec<Service> = list(client, scope).await?;
            render(
                &items,
                scope,
                format,
                |s, wide| svc_row(s, wide, now),
                svc_header,
            )
        }
        Kind::Nodes => {
            let items: Vec<Node> = Api::all(client.clone())
                .list(&ListParams::default())
                .await?
                .items;
            render(
                &items,
                &Scope::Namespace(String::new()),
                format,
                |n, wide| node_row(n, wide, now),
                node_header,
            )
        }
    }
}

async fn list<K>(client: &Client, scope: &Scope) -> Result<Vec<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = match scope {
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
        Scope::All => Api::all(client.clone()),
    };
    let mut items = api.list(&ListParams::default()).await?.items;
    items.sort_by_key(|a| (a.namespace(), a.name_any()));
    Ok(items)
}

fn render<K>(
    items: &[K],
    scope: &Scope,
    format: GetFormat,
    row: impl Fn(&K, bool) -> Vec<String>,
    header: fn(bool) -> Vec<&'static str>,
) -> Result<String>
where
    K: Resource + Serialize + ResourceExt,
    K::DynamicType: Default,
{
    match format {
        GetFormat::Json => Ok(serde_json::to_string_pretty(&as_list(items)?)? + "\n"),
        GetFormat::Yaml => Ok(serde_yaml_ng::to_string(&as_list(items)?)?),
        GetFormat::Table | GetFormat::Wide => {
            let wide = format == GetFormat::Wide;
            let all = *scope == Scope::All;
            if items.is_empty() {
                return Ok(String::new());
            }
            let mut h = header(wide);
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| {
                    let mut r = row(i, wide);
                    if all {
                        r.insert(0, i.namespace().unwrap_or_default());
                    }
                    r
                })
                .collect();
            if all {
                h.insert(0, "NAMESPACE");
            }
            Ok(table(&h, &rows))
        }
    }
}

/// Items as a `v1` `List` with apiVersion/kind on every item, as kubectl prints them.
fn as_list<K>(items: &[K]) -> Result<serde_json::Value>
where
    K: Resource + Serialize,
    K::DynamicType: Default,
{
    let dt = K::DynamicType::default();
    let mut out = Vec::with_capacity(items.len());
    for i in items {
        let mut v = serde_json::to_value(i)?;
        v["apiVersion"] = K::api_version(&dt).into_owned().into();
        v["kind"] = K::kind(&dt).into_owned().into();
        out.push(v);
    }
    Ok(serde_json::json!({"apiVersion": "v1", "kind": "List", "items": out, "metadata": {}}))
}

fn pods_header(wide: bool) -> Vec<&'static str> {
    if wide {
        POD_WIDE_HEADER.to_vec()
    } else {
        POD_WIDE_HEADER[..5].to_vec()
    }
}

fn pods_row(p: &Pod, wide: bool, now: Now) -> Vec<String> {
    let mut r = pod_row(p, now);
    if !wide {
        r.truncate(5);
    }
    r
}

fn deploy_header(wide: bool) -> Vec<&'static str> {
    let mut h = vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"];
    if wide {
        h.extend(["CONTAINERS", "IMAGES", "SELECTOR"]);
    }
    h
}

fn deploy_row(d: &Deployment, wide: bool, now: Now) -> Vec<String> {
    let s = d.status.clone().unwrap_or_default();
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let mut r = vec![
        d.name_any(),
        format!("{}/{want}", s.ready_replicas.unwrap_or(0)),
        s.updated_replicas.unwrap_or(0).to_string(),
        s.available_replicas.unwrap_or(0).to_string(),
        age(d.creation_timestamp().as_ref(), now),
    ];
    if wide {
        let containers = d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        r.push(join(containers.iter().map(|c| c.name.clone())));
        r.push(join(containers.iter().filter_map(|c| c.image.clone())));
        r.push(crate::kube::selector(d));
    }
    r
}

fn svc_header(wide: bool) -> Vec<&'static str> {
    let mut h = vec![
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
    ];
    if wide {
        h.push("SELECTOR");
    }
    h
}

fn svc_row(s: &Service, wide: bool, now: Now) -> Vec<String> {
    let spec = s.spec.clone().unwrap_or_default();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            match p.node_port {
                Some(np) => format!("{}:{np}/{proto}", p.port),
                None => format!("{}/{proto}", p.port),
            }
        })
        .collect::<Vec<_>>();
    let external = spec
        .external_ips
        .clone()
        .filter(|v| !v.is_empty())
        .map(|v| v.join(","))
        .unwrap_or_else(|| "<none>".into());
    let mut r = vec![
        s.name_any(),
        spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
        spec.cluster_ip.clone().unwrap_or_else(|| "<none>".into()),
        external,
        if ports.is_empty() {
            "<none>".into()
        } else {
            ports.join(",")
        },
        age(s.creation_timestamp().as_ref(), now),
    ];
    if wide {
        r.push(
            spec.selector
                .map(|m| join(m.iter().map(|(k, v)| format!("{k}={v}"))))
                .unwrap_or_else(|| "<none>".into()),
        );
    }
    r
}

fn node_header(wide: bool) -> Vec<&'static str> {
    let mut h = vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"];
    if wide {
        h.extend([
            "INTERNAL-IP",
            "OS-IMAGE",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME",
        ]);
    }
    h
}

fn node_row(n: &Node, wide: bool, now: Now) -> Vec<String> {
    let status = n.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map(|c| {
            if c.status == "True" {
                "Ready"
            } else {
                "NotReady"
            }
        })
        .unwrap_or("Unknown");
    let unschedulable = n
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let roles: Vec<String> = n
        .labels()
        .keys()
        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
        .map(String::from)
        .collect();
    let info = status.node_info.clone().unwrap_or_default();
    let mut r = vec![
        n.name_any(),
        if unschedulable {
            format!("{ready},SchedulingDisabled")
        } else {
            ready.into()
        },
        if roles.is_empty() {
            "<none>".into()
        } else {
            roles.join(",")
        },
        age(n.creation_timestamp().as_ref(), now),
        info.kubelet_version.clone(),
    ];
    if wide {
        let ip = status
            .addresses
            .iter()
            .flatten()
            .find(|a| a.type_ == "InternalIP")
            .map(|a| a.address.clone())
            .unwrap_or_else(|| "<none>".into());
        r.extend([
            ip,
            info.os_image.clone(),
            info.kernel_version.clone(),
            info.container_runtime_version.clone(),
        ]);
    }
    r
}

fn join(it: impl Iterator<Item = String>) -> String {
    it.collect::<Vec<_>>().join(",")
}

/// `ctl get pods|deploy|svc|nodes`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// What to list: pods, deploy, svc or nodes.
    #[arg(value_enum)]
    pub kind: Kind,
    /// Namespace (default: cluster.yaml app.namespace).
    #[arg(long, short = 'n', conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(long = "all-namespaces", short = 'A')]
    pub all_namespaces: bool,
    /// Output: table (default), wide, json or yaml.
    #[arg(long, short = 'o', value_enum, default_value_t = GetFormat::Table)]
    pub output: GetFormat,
}

impl GetArgs {
    /// Runs the command: data on stdout.
    pub async fn run(
        self,
        config: &cluster_common::ClusterConfig,
    ) -> Result<std::process::ExitCode> {
        let client = crate::kube::client(config).await?;
        let scope = if self.all_namespaces {
            Scope::All
        } else {
            Scope::Namespace(
                self.namespace
                    .unwrap_or_else(|| config.app.namespace.clone()),
            )
        };
        let out = get(&client, self.kind, &scope, self.output).await?;
        if out.is_empty() {
            match &scope {
                Scope::Namespace(ns) if self.kind != Kind::Nodes => {
                    eprintln!("No resources found in {ns} namespace.")
                }
                _ => eprintln!("No resources found"),
            }
        }
        print!("{out}");
        Ok(std::process::ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "letschat", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "10.99.77.113",
                     "selector": {"app": "letschat"},
                     "ports": [{"port": 8080, "nodePort": 30961, "protocol": "TCP"}]}
        }))
        .unwrap()
    }

    #[test]
    fn services_show_node_ports_like_kubectl() {
        let out = render(
            &[svc()],
            &Scope::All,
            GetFormat::Wide,
            |s, w| svc_row(s, w, Now::system()),
            svc_header,
        )
        .unwrap();
        let lines: Vec<_> = out.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE   NAME"), "{out}");
        assert!(
            lines[1].contains("NodePort   10.99.77.113   <none>        8080:30961/TCP"),
            "{out}"
        );
        assert!(lines[1].ends_with("app=letschat"), "{out}");
    }

    #[test]
    fn json_output_is_a_list_with_kinds() {
        let out = render(
            &[svc()],
            &Scope::Namespace("default".into()),
            GetFormat::Json,
            |s, w| svc_row(s, w, Now::system()),
            svc_header,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["kind"], "List");
        assert_eq!(v["items"][0]["kind"], "Service");
        assert_eq!(v["items"][0]["apiVersion"], "v1");
    }
}
