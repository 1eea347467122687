//! The resource registry: the built-in resources the simulated API server serves, plus the ones
//! that CustomResourceDefinitions add at run time.

use serde_json::{Value, json};

/// Where the scale subresource reads and writes (dotted JSON paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSpec {
    /// `.spec.replicas`.
    pub spec_replicas: String,
    /// `.status.replicas`.
    pub status_replicas: String,
    /// Where the label selector lives: `spec.selector` as a LabelSelector object for built-ins
    /// (`None`), or a string path for custom resources.
    pub selector_path: Option<String>,
}

/// One served resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceDef {
    /// API group ("" for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural resource name.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names (`po`, `deploy`, …).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Has a status subresource.
    pub status: bool,
    /// Has a scale subresource.
    pub scale: Option<ScaleSpec>,
}

impl ResourceDef {
    /// `plural.group` (or `plural` for core): the storage key.
    pub fn gr(&self) -> String {
        gr(&self.group, &self.plural)
    }

    /// `group/version` or `v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The discovery entries (resource and subresources) for an APIResourceList.
    pub fn discovery(&self) -> Vec<Value> {
        let mut verbs = vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ];
        if self.plural == "bindings" || self.plural == "selfsubjectreviews" {
            verbs = vec!["create"];
        }
        let mut out = vec![json!({
            "name": self.plural, "singularName": self.singular, "namespaced": self.namespaced,
            "kind": self.kind, "verbs": verbs, "shortNames": self.short_names,
            "categories": self.categories, "storageVersionHash": "simkube0000=",
        })];
        if self.status {
            out.push(json!({"name": format!("{}/status", self.plural), "singularName": "",
                "namespaced": self.namespaced, "kind": self.kind, "verbs": ["get", "patch", "update"]}));
        }
        if self.scale.is_some() {
            out.push(
                json!({"name": format!("{}/scale", self.plural), "singularName": "",
                "namespaced": self.namespaced, "group": "autoscaling", "version": "v1",
                "kind": "Scale", "verbs": ["get", "patch", "update"]}),
            );
        }
        if self.plural == "pods" && self.group.is_empty() {
            out.push(
                json!({"name": "pods/binding", "singularName": "", "namespaced": true,
                "kind": "Binding", "verbs": ["create"]}),
            );
            out.push(
                json!({"name": "pods/log", "singularName": "", "namespaced": true,
                "kind": "Pod", "verbs": ["get"]}),
            );
        }
        out
    }
}

/// The storage key of a resource: `plural.group` or `plural`.
pub fn gr(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

fn def(
    group: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
    scale: bool,
) -> ResourceDef {
    let all = matches!(
        plural,
        "pods" | "services" | "deployments" | "replicasets" | "daemonsets" | "statefulsets"
    );
    ResourceDef {
        group: group.to_string(),
        version: "v1".to_string(),
        plural: plural.to_string(),
        singular: kind.to_lowercase(),
        kind: kind.to_string(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: if all { vec!["all".to_string()] } else { vec![] },
        status,
        scale: scale.then(|| ScaleSpec {
            spec_replicas: "spec.replicas".into(),
            status_replicas: "status.replicas".into(),
            selector_path: None,
        }),
    }
}

/// The built-in resources.
pub fn builtins() -> Vec<ResourceDef> {
    let core = "";
    let apps = "apps";
    let rbac = "rbac.authorization.k8s.io";
    vec![
        def(core, "namespaces", "Namespace", false, &["ns"], true, false),
        def(core, "nodes", "Node", false, &["no"], true, false),
        def(core, "pods", "Pod", true, &["po"], true, false),
        def(core, "services", "Service", true, &["svc"], true, false),
        def(core, "endpoints", "Endpoints", true, &["ep"], false, false),
        def(core, "configmaps", "ConfigMap", true, &["cm"], false, false),
        def(core, "secrets", "Secret", true, &[], false, false),
        def(
            core,
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            false,
            false,
        ),
        def(core, "events", "Event", true, &["ev"], false, false),
        def(
            core,
            "persistentvolumeclaims",
            "PersistentVolumeClaim",
            true,
            &["pvc"],
            true,
            false,
        ),
        def(
            apps,
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            true,
            true,
        ),
        def(apps, "replicasets", "ReplicaSet", true, &["rs"], true, true),
        def(apps, "daemonsets", "DaemonSet", true, &["ds"], true, false),
        def(
            apps,
            "statefulsets",
            "StatefulSet",
            true,
            &["sts"],
            true,
            true,
        ),
        def(
            apps,
            "controllerrevisions",
            "ControllerRevision",
            true,
            &[],
            false,
            false,
        ),
        def(
            "coordination.k8s.io",
            "leases",
            "Lease",
            true,
            &[],
            false,
            false,
        ),
        def(rbac, "roles", "Role", true, &[], false, false),
        def(rbac, "rolebindings", "RoleBinding", true, &[], false, false),
        def(
            rbac,
            "clusterroles",
            "ClusterRole",
            false,
            &[],
            false,
            false,
        ),
        def(
            rbac,
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            false,
            false,
        ),
        def(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
            false,
        ),
        def(
            "policy",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            &["pdb"],
            true,
            false,
        ),
        def(
            "scheduling.k8s.io",
            "priorityclasses",
            "PriorityClass",
            false,
            &["pc"],
            false,
            false,
        ),
        def(
            "authentication.k8s.io",
            "selfsubjectreviews",
            "SelfSubjectReview",
            false,
            &[],
            false,
            false,
        ),
        def(
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            false,
            &[],
            false,
            false,
        ),
        def(
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
            false,
            &[],
            false,
            false,
        ),
    ]
}

/// The resources a CRD object defines (one per served version).
pub fn from_crd(crd: &Value) -> Vec<ResourceDef> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default();
    let kind = names["kind"].as_str().unwrap_or_default();
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Vec::new();
    }
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for v in spec["versions"].as_array().into_iter().flatten() {
        if v["served"] == Value::Bool(false) {
            continue;
        }
        let sub = &v["subresources"];
        out.push(ResourceDef {
            group: group.to_string(),
            version: v["name"].as_str().unwrap_or("v1").to_string(),
            plural: plural.to_string(),
            singular: names["singular"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| kind.to_lowercase()),
            kind: kind.to_string(),
            namespaced: spec["scope"].as_str() != Some("Cluster"),
            short_names: strs(&names["shortNames"]),
            categories: strs(&names["categories"]),
            status: sub.get("status").is_some(),
            scale: sub.get("scale").map(|s| ScaleSpec {
                spec_replicas: s["specReplicasPath"]
                    .as_str()
                    .unwrap_or(".spec.replicas")
                    .trim_start_matches('.')
                    .to_string(),
                status_replicas: s["statusReplicasPath"]
                    .as_str()
                    .unwrap_or(".status.replicas")
                    .trim_start_matches('.')
                    .to_string(),
                selector_path: s["labelSelectorPath"]
                    .as_str()
                    .map(|p| p.trim_start_matches('.').to_string()),
            }),
        });
    }
    out
}
