//! Kubernetes manifests: parse multi-document YAML, resolve kinds through discovery, apply them
//! in dependency order with server-side apply.
//!
//! This is `kubectl apply --server-side -f` as a library, shared by `ctl deploy` and the CNI
//! installation in `ctl bootstrap`.
//!
//! # API
//!
//! - [`load_paths`]`(&[path])`: files or directories (their `*.yaml`, `*.yml` and `*.json`
//!   files, sorted by name, not recursive) → `Vec<`[`Manifest`]`>`. [`parse_str`]`(text, origin)`
//!   does the same for text (embedded defaults); `origin` names it in errors. Every document must
//!   be a mapping with `apiVersion`, `kind` and `metadata.name`; empty documents are skipped and
//!   `kind: List` is flattened into its items. Errors ([`ManifestError::Yaml`],
//!   [`ManifestError::Invalid`]) carry the file and the 1-based line.
//! - [`Applier::new`]`(client, field_manager)` then [`Applier::force_conflicts`]`(bool)` and
//!   [`Applier::default_namespace`]`(ns)`; [`Applier::apply_all`]`(manifests)` → one
//!   [`Applied`] per object ([`Outcome`]: created, configured or unchanged).
//!
//! # What `apply_all` does
//!
//! 1. Resolves every `apiVersion`/`kind` through discovery (`kube::discovery::pinned_group`, one
//!    request per group version, cached). A kind the server does not serve yet is accepted only
//!    when a CustomResourceDefinition in the same batch defines it; anything else fails before
//!    anything is applied ([`ManifestError::UnknownKind`]).
//! 2. Orders the objects with a stable sort by [`rank`]: Namespaces, then
//!    CustomResourceDefinitions, then config, RBAC, storage and Services, then workloads, then
//!    everything else (custom resources, webhooks, API services). Within a rank, file order holds.
//! 3. Applies each object with `PATCH ...?fieldManager=<manager>[&force=true]`
//!    (`application/apply-patch+yaml`), after a `GET` that tells created / configured / unchanged
//!    apart (an unchanged object keeps its `resourceVersion`).
//! 4. After the CRDs of the batch are applied, waits (watch, bounded by
//!    [`Applier::crd_timeout`]) until each is `Established`, then forgets the cached discovery of
//!    their groups so that their custom resources resolve.
//!
//! A conflict with another field manager stops the run with [`ManifestError::Conflict`]
//! ([`ApplyConflict`]), which
//! lists which manager owns which field and says to use `--force-conflicts` to take them.
//! Objects applied before the failing one stay applied (apply is idempotent: fix and re-run).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::core::gvk::GroupVersion;
use kube::discovery::{self, ApiCapabilities, ApiGroup, ApiResource, Scope};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use serde_json::Value;

/// Where a manifest came from: a file (or an embedded text's name) and the 1-based line where its
/// document starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file, or the name given to [`parse_str`].
    pub file: PathBuf,
    /// 1-based line of the document start (or of the error).
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One Kubernetes object read from a manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Where it was read.
    pub origin: Origin,
    /// The object as written (apiVersion, kind, metadata, the rest).
    pub object: Value,
}

impl Manifest {
    /// `apiVersion`.
    pub fn api_version(&self) -> &str {
        self.object["apiVersion"].as_str().unwrap_or_default()
    }
    /// `kind`.
    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
    /// `metadata.namespace`, if written.
    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"].as_str()
    }
    fn gvk(&self) -> Result<GroupVersionKind, ManifestError> {
        let gv: GroupVersion = self
            .api_version()
            .parse()
            .map_err(|_| ManifestError::Invalid {
                origin: self.origin.clone(),
                message: format!("apiVersion {:?} is not GROUP/VERSION", self.api_version()),
            })?;
        Ok(GroupVersionKind::gvk(&gv.group, &gv.version, self.kind()))
    }
    /// `Kind/name` or `Kind/namespace/name`, for messages.
    pub fn display_name(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{}/{}/{}", self.kind(), ns, self.name()),
            None => format!("{}/{}", self.kind(), self.name()),
        }
    }
}

/// A field owned by another manager, from a server-side apply conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldConflict {
    /// The field manager that owns the field (e.g. `kubectl-client-side-apply`).
    pub manager: String,
    /// The field path (e.g. `.spec.replicas`).
    pub field: String,
}

/// Why manifests could not be read or applied.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or directory could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The paths held no manifest at all.
    #[error("no manifests found in {}", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    Empty {
        /// The paths given.
        paths: Vec<PathBuf>,
    },
    /// Not YAML.
    #[error("{origin}: malformed YAML: {message}")]
    Yaml {
        /// File and line of the error.
        origin: Origin,
        /// The parser's message.
        message: String,
    },
    /// YAML, but not a Kubernetes object.
    #[error("{origin}: {message}")]
    Invalid {
        /// File and line of the document.
        origin: Origin,
        /// What is wrong.
        message: String,
    },
    /// The server serves no such kind, and no CRD in the batch defines it.
    #[error(
        "{origin}: the API server has no kind {kind} in {api_version} (and no CustomResourceDefinition in these manifests defines it)"
    )]
    UnknownKind {
        /// Where the object was read.
        origin: Origin,
        /// Its apiVersion.
        api_version: String,
        /// Its kind.
        kind: String,
    },
    /// Discovery itself failed (server unreachable, unauthorised...).
    #[error("discovery of {api_version} failed: {error}")]
    Discovery {
        /// The group version asked about.
        api_version: String,
        /// The client error.
        #[source]
        error: Box<kube::Error>,
    },
    /// Server-side apply found fields owned by other managers.
    #[error("{0}")]
    Conflict(Box<ApplyConflict>),
    /// The server rejected the object.
    #[error("{origin}: applying {object} failed: {error}")]
    Apply {
        /// `Kind/namespace/name`.
        object: String,
        /// Where the object was read.
        origin: Origin,
        /// The client error.
        #[source]
        error: Box<kube::Error>,
    },
    /// A CRD did not become Established in time.
    #[error("CustomResourceDefinition {name} is not Established after {timeout:?}{}", detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    CrdNotEstablished {
        /// CRD name.
        name: String,
        /// How long we waited.
        timeout: Duration,
        /// Watch error, if any.
        detail: Option<String>,
    },
}

/// A server-side apply conflict: which manager owns which field.
#[derive(Debug, Clone)]
pub struct ApplyConflict {
    /// `Kind/namespace/name`.
    pub object: String,
    /// Where the object was read.
    pub origin: Origin,
    /// Our field manager.
    pub manager: String,
    /// Which manager owns which field (may be empty when the server's message is unusual).
    pub conflicts: Vec<FieldConflict>,
    /// The server's message.
    pub message: String,
}

impl fmt::Display for ApplyConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: applying {} as field manager {:?} conflicts with other field managers:",
            self.origin, self.object, self.manager
        )?;
        if self.conflicts.is_empty() {
            write!(f, "\n  {}", self.message)?;
        }
        for c in &self.conflicts {
            write!(f, "\n  {} is owned by {:?}", c.field, c.manager)?;
        }
        write!(
            f,
            "\nre-run with --force-conflicts to take ownership of these fields (the other manager may set them back), or remove them from the manifest"
        )
    }
}

/// What applying one object did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist.
    Created,
    /// It existed and changed.
    Configured,
    /// It existed and nothing changed.
    Unchanged,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        })
    }
}

/// One applied object.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Kind.
    pub kind: String,
    /// Namespace (None for cluster-scoped objects).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// What changed.
    pub outcome: Outcome,
    /// The object as the server returned it.
    pub object: DynamicObject,
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind.to_lowercase();
        match &self.namespace {
            Some(ns) => write!(f, "{kind}/{} ({ns}) {}", self.name, self.outcome),
            None => write!(f, "{kind}/{} {}", self.name, self.outcome),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Reads manifests from files and directories (`*.yaml`, `*.yml`, `*.json`, sorted, not
/// recursive), in the order given.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<Manifest>, ManifestError> {
    let mut out = Vec::new();
    for path in paths {
        let read_err = |error| ManifestError::Read {
            path: path.clone(),
            error,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        let files = if meta.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(path).map_err(read_err)? {
                let p = entry.map_err(read_err)?.path();
                let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
                if p.is_file() && matches!(ext, "yaml" | "yml" | "json") {
                    files.push(p);
                }
            }
            files.sort();
            files
        } else {
            vec![path.clone()]
        };
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|error| ManifestError::Read {
                path: file.clone(),
                error,
            })?;
            out.extend(parse_str(&text, &file)?);
        }
    }
    if out.is_empty() {
        return Err(ManifestError::Empty {
            paths: paths.to_vec(),
        });
    }
    Ok(out)
}

/// Parses multi-document YAML (or JSON) text; `origin` names it in errors.
pub fn parse_str(text: &str, origin: &Path) -> Result<Vec<Manifest>, ManifestError> {
    let mut out = Vec::new();
    for (start_line, doc) in split_documents(text) {
        if doc.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#')
        }) {
            continue;
        }
        let value: Value = serde_yaml_ng::from_str(&doc).map_err(|e| {
            let line = e
                .location()
                .map(|l| start_line + l.line() - 1)
                .unwrap_or(start_line);
            ManifestError::Yaml {
                origin: Origin {
                    file: origin.to_path_buf(),
                    line,
                },
                message: strip_location(&e.to_string()),
            }
        })?;
        let doc_origin = Origin {
            file: origin.to_path_buf(),
            line: first_content_line(&doc, start_line),
        };
        push_object(value, doc_origin, &mut out)?;
    }
    Ok(out)
}

fn push_object(value: Value, origin: Origin, out: &mut Vec<Manifest>) -> Result<(), ManifestError> {
    let invalid = |message: String| ManifestError::Invalid {
        origin: origin.clone(),
        message,
    };
    let obj = match value {
        Value::Null => return Ok(()),
        Value::Object(o) => o,
        other => {
            return Err(invalid(format!(
                "a Kubernetes object must be a mapping, found {}",
                json_type(&other)
            )));
        }
    };
    let api_version = match obj.get("apiVersion") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(invalid("missing apiVersion".into())),
    };
    let kind = match obj.get("kind") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(invalid("missing kind".into())),
    };
    if kind.ends_with("List")
        && api_version == "v1"
        && let Some(Value::Array(items)) = obj.get("items")
    {
        for item in items {
            push_object(item.clone(), origin.clone(), out)?;
        }
        return Ok(());
    }
    match obj.get("metadata").and_then(|m| m.get("name")) {
        Some(Value::String(s)) if !s.is_empty() => {}
        _ => {
            return Err(invalid(format!(
                "{kind} has no metadata.name (server-side apply needs one)"
            )));
        }
    }
    if let Some(ns) = obj.get("metadata").and_then(|m| m.get("namespace"))
        && !ns.is_string()
    {
        return Err(invalid("metadata.namespace must be a string".into()));
    }
    let object = Value::Object(obj);
    let m = Manifest { origin, object };
    m.gvk()?;
    out.push(m);
    Ok(())
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Splits YAML text on `---` document markers: (1-based line of the document's first line, text).
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker {
            docs.push((start, std::mem::take(&mut cur)));
            start = i + 2;
            // `--- {inline: doc}` keeps its content on the marker line.
            let rest = line[3..].trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                cur.push_str(rest);
                cur.push('\n');
                start = i + 1;
            }
        } else if line == "..." {
            continue;
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    docs.push((start, cur));
    docs
}

fn first_content_line(doc: &str, start: usize) -> usize {
    doc.lines()
        .position(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
        .map(|i| start + i)
        .unwrap_or(start)
}

/// serde_yaml_ng appends " at line L column C" with document-relative numbers; we print our own.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Ordering

/// Apply order of a kind: 0 Namespace, 1 CustomResourceDefinition, 2 config/RBAC/storage/
/// Services, 3 workloads, 4 anything else (custom resources, webhooks, API services).
pub fn rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        "ServiceAccount"
        | "Secret"
        | "ConfigMap"
        | "ResourceQuota"
        | "LimitRange"
        | "NetworkPolicy"
        | "PodDisruptionBudget"
        | "PriorityClass"
        | "StorageClass"
        | "PersistentVolume"
        | "PersistentVolumeClaim"
        | "ClusterRole"
        | "ClusterRoleBinding"
        | "Role"
        | "RoleBinding"
        | "Service"
        | "Endpoints"
        | "EndpointSlice"
        | "IngressClass"
        | "RuntimeClass" => 2,
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Pod"
        | "Job"
        | "CronJob"
        | "HorizontalPodAutoscaler" => 3,
        _ => 4,
    }
}

/// Stable sort into apply order (see [`rank`]).
pub fn order(manifests: &mut [Manifest]) {
    manifests.sort_by_key(|m| rank(m.kind()));
}

// ---------------------------------------------------------------------------------------------
// Applying

/// Applies manifests with server-side apply as one field manager.
pub struct Applier {
    client: Client,
    manager: String,
    force: bool,
    default_namespace: String,
    crd_timeout: Duration,
    groups: HashMap<String, Option<ApiGroup>>,
}

enum Resolved {
    Served(ApiResource, ApiCapabilities),
    /// Defined by a CRD of this batch; resolved again after it is Established.
    Pending,
}

impl Applier {
    /// An applier with field manager `manager`, no forcing, namespace `default`, CRD timeout 60 s.
    pub fn new(client: Client, manager: impl Into<String>) -> Self {
        Self {
            client,
            manager: manager.into(),
            force: false,
            default_namespace: "default".into(),
            crd_timeout: Duration::from_secs(60),
            groups: HashMap::new(),
        }
    }

    /// Take fields owned by other managers instead of failing (`--force-conflicts`).
    pub fn force_conflicts(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// Namespace for namespaced objects that name none.
    pub fn default_namespace(mut self, ns: impl Into<String>) -> Self {
        self.default_namespace = ns.into();
        self
    }

    /// How long to wait for each CRD to become Established.
    pub fn crd_timeout(mut self, timeout: Duration) -> Self {
        self.crd_timeout = timeout;
        self
    }

    async fn group(&mut self, api_version: &str) -> Result<Option<&ApiGroup>, ManifestError> {
        if !self.groups.contains_key(api_version) {
            let gv: GroupVersion = api_version.parse().map_err(|_| ManifestError::Discovery {
                api_version: api_version.into(),
                error: Box::new(kube::Error::Discovery(
                    kube::error::DiscoveryError::InvalidGroupVersion(api_version.into()),
                )),
            })?;
            let group = match discovery::pinned_group(&self.client, &gv).await {
                Ok(g) => Some(g),
                Err(kube::Error::Api(s)) if s.is_not_found() => None,
                Err(error) => {
                    return Err(ManifestError::Discovery {
                        api_version: api_version.into(),
                        error: Box::new(error),
                    });
                }
            };
            self.groups.insert(api_version.to_string(), group);
        }
        Ok(self.groups.get(api_version).and_then(Option::as_ref))
    }

    async fn resolve(
        &mut self,
        m: &Manifest,
        batch_crds: &[(String, String, String)],
    ) -> Result<Resolved, ManifestError> {
        let gvk = m.gvk()?;
        if let Some(group) = self.group(m.api_version()).await?
            && let Some((ar, caps)) = group.recommended_kind(&gvk.kind)
        {
            return Ok(Resolved::Served(ar, caps));
        }
        if batch_crds
            .iter()
            .any(|(g, v, k)| *g == gvk.group && *v == gvk.version && *k == gvk.kind)
        {
            return Ok(Resolved::Pending);
        }
        Err(ManifestError::UnknownKind {
            origin: m.origin.clone(),
            api_version: m.api_version().into(),
            kind: m.kind().into(),
        })
    }

    /// Resolves, orders and applies `manifests` (see the module doc).
    pub async fn apply_all(
        &mut self,
        mut manifests: Vec<Manifest>,
    ) -> Result<Vec<Applied>, ManifestError> {
        order(&mut manifests);
        let batch_crds = crd_kinds(&manifests);
        // Resolve everything first: a typo fails before anything changes.
        let mut resolved = Vec::with_capacity(manifests.len());
        for m in &manifests {
            resolved.push(self.resolve(m, &batch_crds).await?);
        }
        let mut applied = Vec::with_capacity(manifests.len());
        let mut crds_pending: Vec<String> = Vec::new();
        for (m, r) in manifests.iter().zip(resolved) {
            if !crds_pending.is_empty() && rank(m.kind()) > 1 {
                self.await_crds(&crds_pending).await?;
                crds_pending.clear();
            }
            let (ar, caps) = match r {
                Resolved::Served(ar, caps) => (ar, caps),
                Resolved::Pending => match self.resolve(m, &[]).await? {
                    Resolved::Served(ar, caps) => (ar, caps),
                    Resolved::Pending => unreachable!("no batch CRDs given"),
                },
            };
            let a = self.apply_one(m, &ar, &caps).await?;
            if m.kind() == "CustomResourceDefinition" {
                crds_pending.push(a.name.clone());
            }
            applied.push(a);
        }
        if !crds_pending.is_empty() {
            self.await_crds(&crds_pending).await?;
        }
        Ok(applied)
    }

    async fn await_crds(&mut self, names: &[String]) -> Result<(), ManifestError> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        for name in names {
            let wait = await_condition(api.clone(), name, conditions::is_crd_established());
            match tokio::time::timeout(self.crd_timeout, wait).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(ManifestError::CrdNotEstablished {
                        name: name.clone(),
                        timeout: self.crd_timeout,
                        detail: Some(e.to_string()),
                    });
                }
                Err(_) => {
                    return Err(ManifestError::CrdNotEstablished {
                        name: name.clone(),
                        timeout: self.crd_timeout,
                        detail: None,
                    });
                }
            }
        }
        // Re-run discovery for everything: new groups/kinds are now served.
        self.groups.clear();
        Ok(())
    }

    async fn apply_one(
        &mut self,
        m: &Manifest,
        ar: &ApiResource,
        caps: &ApiCapabilities,
    ) -> Result<Applied, ManifestError> {
        let name = m.name().to_string();
        let mut body = m.object.clone();
        let (api, namespace): (Api<DynamicObject>, Option<String>) = match caps.scope {
            Scope::Namespaced => {
                let ns = m.namespace().unwrap_or(&self.default_namespace).to_string();
                body["metadata"]["namespace"] = Value::String(ns.clone());
                (Api::namespaced_with(self.client.clone(), &ns, ar), Some(ns))
            }
            Scope::Cluster => {
                if let Some(meta) = body["metadata"].as_object_mut() {
                    meta.remove("namespace");
                }
                (Api::all_with(self.client.clone(), ar), None)
            }
        };
        let object_name = match &namespace {
            Some(ns) => format!("{}/{}/{}", m.kind(), ns, name),
            None => format!("{}/{}", m.kind(), name),
        };
        let apply_err = |error| ManifestError::Apply {
            object: object_name.clone(),
            origin: m.origin.clone(),
            error: Box::new(error),
        };
        let before = api.get_opt(&name).await.map_err(apply_err)?;
        let mut pp = PatchParams::apply(&self.manager);
        if self.force {
            pp = pp.force();
        }
        let after = match api.patch(&name, &pp, &Patch::Apply(&body)).await {
            Ok(o) => o,
            Err(kube::Error::Api(s)) if s.is_conflict() => {
                return Err(ManifestError::Conflict(Box::new(ApplyConflict {
                    object: object_name,
                    origin: m.origin.clone(),
                    manager: self.manager.clone(),
                    conflicts: parse_conflicts(&s),
                    message: s.message.clone(),
                })));
            }
            Err(e) => return Err(apply_err(e)),
        };
        let outcome = match &before {
            None => Outcome::Created,
            Some(b) if b.resource_version() == after.resource_version() => Outcome::Unchanged,
            Some(_) => Outcome::Configured,
        };
        tracing::info!(object = %object_name, %outcome, "applied");
        Ok(Applied {
            kind: m.kind().into(),
            namespace,
            name,
            outcome,
            object: after,
        })
    }
}

/// (group, version, kind) for every version of every CRD in the batch.
fn crd_kinds(manifests: &[Manifest]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for m in manifests.iter().filter(|m| {
        m.kind() == "CustomResourceDefinition"
            && m.api_version().starts_with("apiextensions.k8s.io/")
    }) {
        let spec = &m.object["spec"];
        let group = spec["group"].as_str().unwrap_or_default();
        let kind = spec["names"]["kind"].as_str().unwrap_or_default();
        for v in spec["versions"].as_array().into_iter().flatten() {
            if let Some(version) = v["name"].as_str() {
                out.push((group.into(), version.into(), kind.into()));
            }
        }
    }
    out
}

/// Which manager owns which field, from a 409 apply conflict.
///
/// The API server puts one `FieldManagerConflict` cause per field in `details.causes`
/// (`message: conflict with "kubectl" using apps/v1`, `field: .spec.replicas`); without causes
/// the message reads `Apply failed with N conflicts: conflict with "m" using v: .a.b`.
pub fn parse_conflicts(status: &kube::core::Status) -> Vec<FieldConflict> {
    let mut out = Vec::new();
    if let Some(details) = &status.details {
        for c in &details.causes {
            if c.reason == "FieldManagerConflict" || c.message.starts_with("conflict with") {
                out.push(FieldConflict {
                    manager: quoted(&c.message).unwrap_or_else(|| c.message.clone()),
                    field: c.field.clone(),
                });
            }
        }
    }
    if out.is_empty() {
        // "conflict with \"m\" using v: .a" or "conflicts with \"m\" using v:\n- .a\n- .b"
        let mut manager = String::new();
        for line in status.message.lines() {
            let line = line.trim();
            if let Some(field) = line.strip_prefix("- ") {
                if field.starts_with('.') && !manager.is_empty() {
                    out.push(FieldConflict {
                        manager: manager.clone(),
                        field: field.into(),
                    });
                }
                continue;
            }
            for part in line.split(" with \"").skip(1) {
                let Some(m) = quoted(&format!("\"{part}")) else {
                    continue;
                };
                manager = m;
                if let Some((_, field)) = part.split_once(": ") {
                    let field = field.split([',', ' ']).next().unwrap_or_default();
                    if field.starts_with('.') {
                        out.push(FieldConflict {
                            manager: manager.clone(),
                            field: field.into(),
                        });
                    }
                }
            }
        }
    }
    out
}

fn quoted(s: &str) -> Option<String> {
    let start = s.find('"')? + 1;
    let end = start + s[start..].find('"')?;
    Some(s[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Manifest>, ManifestError> {
        parse_str(text, Path::new("m.yaml"))
    }

    #[test]
    fn multi_document_yaml_gives_one_manifest_per_document_with_its_line() {
        let text = "# leading comment\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n\n---\n# c\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  namespace: a\n";
        let ms = parse(text).unwrap();
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].origin.line, 2);
        assert_eq!(ms[1].origin.line, 10);
        assert_eq!(ms[1].display_name(), "ConfigMap/a/b");
    }

    #[test]
    fn malformed_yaml_names_file_and_absolute_line() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n";
        let err = parse(text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("m.yaml:"), "{msg}");
        match err {
            ManifestError::Yaml { origin, .. } => assert!(origin.line >= 9, "{origin}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn document_without_kind_or_name_is_rejected_with_its_line() {
        let err = parse("apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n---\napiVersion: v1\nmetadata:\n  name: b\n").unwrap_err();
        assert_eq!(err.to_string(), "m.yaml:6: missing kind");
        let err = parse("apiVersion: v1\nkind: Pod\nmetadata: {}\n").unwrap_err();
        assert!(err.to_string().contains("metadata.name"), "{err}");
        let err = parse("- a\n- b\n").unwrap_err();
        assert!(err.to_string().contains("mapping"), "{err}");
    }

    #[test]
    fn lists_are_flattened() {
        let ms = parse("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: b}\n").unwrap();
        assert_eq!(
            ms.iter().map(Manifest::kind).collect::<Vec<_>>(),
            ["ConfigMap", "Secret"]
        );
    }

    #[test]
    fn order_puts_namespaces_and_crds_first_then_config_then_workloads_keeping_file_order() {
        let text = [
            ("apps/v1", "Deployment", "d1"),
            ("operator.tigera.io/v1", "Installation", "default"),
            ("v1", "Service", "s1"),
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition", "c"),
            ("v1", "Namespace", "n"),
            ("apps/v1", "Deployment", "d2"),
            ("v1", "ConfigMap", "cm"),
        ]
        .iter()
        .map(|(a, k, n)| format!("apiVersion: {a}\nkind: {k}\nmetadata:\n  name: {n}\n"))
        .collect::<Vec<_>>()
        .join("---\n");
        let mut ms = parse(&text).unwrap();
        order(&mut ms);
        let names: Vec<_> = ms.iter().map(Manifest::name).collect();
        assert_eq!(names, ["n", "c", "s1", "cm", "d1", "d2", "default"]);
    }

    #[test]
    fn directories_are_read_sorted_and_empty_input_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("a.yml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
        let ms = load_paths(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(
            ms.iter().map(Manifest::name).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_paths(&[empty.path().to_path_buf()]),
            Err(ManifestError::Empty { .. })
        ));
        let missing = dir.path().join("nope.yaml");
        let err = load_paths(&[missing]).unwrap_err();
        assert!(err.to_string().contains("nope.yaml"), "{err}");
    }

    #[test]
    fn conflicts_are_read_from_causes_or_message() {
        let s: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 409, "reason": "Conflict",
            "message": "Apply failed with 1 conflict: conflict with \"kubectl-scale\" using apps/v1: .spec.replicas",
            "details": {"causes": [{"reason": "FieldManagerConflict",
                "message": "conflict with \"kubectl-scale\" using apps/v1", "field": ".spec.replicas"}]}
        }))
        .unwrap();
        assert_eq!(
            parse_conflicts(&s),
            [FieldConflict {
                manager: "kubectl-scale".into(),
                field: ".spec.replicas".into()
            }]
        );
        let s: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 409, "reason": "Conflict",
            "message": "Apply failed with 2 conflicts: conflicts with \"other\" using v1:\n- .data.a\n- .data.b"
        }))
        .unwrap();
        let conflicts = parse_conflicts(&s);
        assert_eq!(conflicts.len(), 2);
        assert_eq!(conflicts[1].manager, "other");
        assert_eq!(conflicts[1].field, ".data.b");
        let err = ManifestError::Conflict(Box::new(ApplyConflict {
            object: "ConfigMap/default/x".into(),
            origin: Origin {
                file: "x.yaml".into(),
                line: 1,
            },
            manager: "ctl".into(),
            conflicts: parse_conflicts(&s),
            message: s.message.clone(),
        }));
        let msg = err.to_string();
        assert!(msg.contains("--force-conflicts"), "{msg}");
        assert!(msg.contains(".data.a is owned by \"other\""), "{msg}");
    }
}
