//! The API server's semantics, independent of HTTP: create, update, patch (merge, JSON,
//! strategic, server-side apply), delete (graceful for pods, finalizers, propagation), the
//! scale subresource, defaulting and allocation (cluster IPs, node ports), and errors as
//! `Status` objects.

use crate::fields::{self, Managed};
use crate::resources::{ResourceDef, ScaleSpec};
use crate::store::{Store, Txn};
use crate::util::{self, LabelSelector, get_path, set_path};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

/// An API error, rendered as a `Status`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP code.
    pub code: u16,
    /// Machine reason (`NotFound`, `AlreadyExists`, `Conflict`, …).
    pub reason: &'static str,
    /// Human message.
    pub message: String,
    /// `details` (name, group, kind, causes).
    pub details: Value,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// A new error.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: Value::Null,
        }
    }

    /// 404 for an object.
    pub fn not_found(def: &ResourceDef, name: &str) -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(def)),
        );
        e.details = json!({"name": name, "group": def.group, "kind": def.plural});
        e
    }

    /// 400 Bad Request.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 422 Invalid.
    pub fn invalid(def: &ResourceDef, name: &str, message: impl Into<String>) -> Self {
        let m = message.into();
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {m}", def.kind),
        );
        e.details = json!({"name": name, "group": def.group, "kind": def.kind});
        e
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code});
        if !self.details.is_null() {
            s["details"] = self.details.clone();
        }
        s
    }
}

fn qualified(def: &ResourceDef) -> String {
    if def.group.is_empty() {
        def.plural.clone()
    } else {
        format!("{}.{}", def.plural, def.group)
    }
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    /// The object.
    Main,
    /// `/status`.
    Status,
    /// `/scale`.
    Scale,
}

/// How a patch body is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// RFC 6902.
    Json,
    /// RFC 7386.
    Merge,
    /// Kubernetes strategic merge patch.
    Strategic,
    /// Server-side apply.
    Apply,
}

/// Who writes and how.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// Field manager.
    pub manager: String,
    /// Server-side apply `force`.
    pub force: bool,
    /// Dry run: validate and answer, store nothing.
    pub dry_run: bool,
}

/// The API server state shared by HTTP handlers, controllers and kubelets.
#[derive(Debug)]
pub struct ApiServer {
    /// Objects.
    pub store: Store,
    registry: RwLock<Vec<ResourceDef>>,
    /// The service CIDR (first address is the `kubernetes` Service).
    pub service_cidr: ipnet::Ipv4Net,
    /// The reported version (`1.33`).
    pub version: (u32, u32),
}

impl ApiServer {
    /// A server with the built-in resources.
    pub fn new(service_cidr: ipnet::Ipv4Net, version: (u32, u32)) -> Self {
        ApiServer {
            store: Store::new(),
            registry: RwLock::new(crate::resources::builtins()),
            service_cidr,
            version,
        }
    }

    /// All served resources.
    pub fn resources(&self) -> Vec<ResourceDef> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The resource `plural` in `group`/`version`.
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ResourceDef> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|d| d.group == group && d.version == version && d.plural == plural)
            .cloned()
    }

    /// The built-in resource by storage key (`pods`, `deployments.apps`).
    pub fn def(&self, gr: &str) -> ResourceDef {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|d| d.gr() == gr)
            .cloned()
            .unwrap_or_else(|| panic!("unknown resource {gr}"))
    }

    fn refresh_crds(&self) {
        let (crds, _) = self
            .store
            .list("customresourcedefinitions.apiextensions.k8s.io", None);
        let mut defs = crate::resources::builtins();
        for c in crds {
            if c["metadata"]["deletionTimestamp"].is_string() {
                continue;
            }
            for d in crate::resources::from_crd(&c) {
                if !defs
                    .iter()
                    .any(|x| x.group == d.group && x.version == d.version && x.plural == d.plural)
                {
                    defs.push(d);
                }
            }
        }
        *self.registry.write().unwrap_or_else(|p| p.into_inner()) = defs;
    }

    /// Creates an object.
    pub fn create(
        &self,
        def: &ResourceDef,
        ns: &str,
        mut obj: Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad("the body is not a JSON object"));
        }
        check_kind(def, &obj)?;
        obj["apiVersion"] = json!(def.api_version());
        obj["kind"] = json!(def.kind);
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let body_ns = util::namespace(&obj).to_string();
        if def.namespaced {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad(format!(
                    "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})"
                )));
            }
            obj["metadata"]["namespace"] = json!(ns);
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        let mut t = self.store.txn();
        if util::name(&obj).is_empty() {
            let prefix = util::s(&obj["metadata"], "generateName").to_string();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    def,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
            let name = loop {
                let n = format!("{prefix}{}", random_suffix(5));
                if t.get(&def.gr(), ns, &n).is_none() {
                    break n;
                }
            };
            obj["metadata"]["name"] = json!(name);
        }
        let name = util::name(&obj).to_string();
        validate_name(def, &name)?;
        if def.namespaced {
            match t.get("namespaces", "", ns) {
                None => {
                    return Err(ApiError::not_found(&self.def("namespaces"), ns));
                }
                Some(n) if n["status"]["phase"] == "Terminating" => {
                    return Err(ApiError::new(
                        403,
                        "Forbidden",
                        format!(
                            "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                            qualified(def)
                        ),
                    ));
                }
                _ => {}
            }
        }
        if t.get(&def.gr(), ns, &name).is_some() {
            let mut e = ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", qualified(def)),
            );
            e.details = json!({"name": name, "group": def.group, "kind": def.plural});
            return Err(e);
        }
        let now = util::now();
        {
            let md = obj["metadata"].as_object_mut().expect("metadata object");
            for k in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
            ] {
                md.remove(k);
            }
            md.insert("uid".into(), json!(t.new_uid()));
            md.insert("creationTimestamp".into(), json!(now));
            md.insert("generation".into(), json!(1));
        }
        if def.status && def.kind != "Pod" && def.kind != "Namespace" && def.kind != "Node" {
            // the status of a new object is the server's (controllers fill it)
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        self.default_object(def, &mut obj, &t)?;
        let mut managed = Managed::default();
        let builtin = is_builtin(def);
        if !opts.manager.is_empty() {
            managed.record_update(
                &opts.manager,
                "",
                &def.api_version(),
                &json!({}),
                &fields::tracked(&obj, !def.status, false),
                builtin,
                &now,
            );
        }
        managed.write(&mut obj);
        if opts.dry_run {
            return Ok(obj);
        }
        let stored = t.put(&def.gr(), ns, &name, obj);
        drop(t);
        if def.kind == "CustomResourceDefinition" {
            self.refresh_crds();
        }
        Ok((*stored).clone())
    }

    /// The current object or 404.
    pub fn get(&self, def: &ResourceDef, ns: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        self.store
            .get(&def.gr(), ns, name)
            .ok_or_else(|| ApiError::not_found(def, name))
    }

    /// PUT: replaces an object (or its status, or its scale).
    pub fn replace(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        body: Value,
        sub: Sub,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        if util::name(&body) != name && !util::name(&body).is_empty() {
            return Err(ApiError::bad(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                util::name(&body)
            )));
        }
        let mut t = self.store.txn();
        let Some(old) = t.get(&def.gr(), ns, name) else {
            if sub == Sub::Main {
                drop(t);
                return self.create(def, ns, body, opts);
            }
            return Err(ApiError::not_found(def, name));
        };
        let want_rv = body["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !want_rv.is_empty() && want_rv != util::s(&old["metadata"], "resourceVersion") {
            return Err(conflict(def, name));
        }
        let new = match sub {
            Sub::Scale => {
                let replicas = body["spec"]["replicas"].as_i64().unwrap_or(0);
                let scale = def
                    .scale
                    .clone()
                    .ok_or_else(|| ApiError::not_found(def, name))?;
                let mut n = (*old).clone();
                set_path(&mut n, &scale.spec_replicas, json!(replicas));
                n
            }
            _ => body,
        };
        let out = self.commit(&mut t, def, ns, name, &old, new, sub, opts, None)?;
        drop(t);
        if def.kind == "CustomResourceDefinition" {
            self.refresh_crds();
        }
        Ok(if sub == Sub::Scale {
            scale_of(def, &out)
        } else {
            out
        })
    }

    /// PATCH (including server-side apply, which may create).
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &[u8],
        sub: Sub,
        opts: &WriteOpts,
    ) -> Result<(Value, bool), ApiError> {
        let patch: Value = match kind {
            PatchKind::Apply => serde_yaml_ng::from_slice(body).map_err(|e| {
                ApiError::bad(format!("the apply configuration is not YAML or JSON: {e}"))
            })?,
            _ => serde_json::from_slice(body)
                .map_err(|e| ApiError::bad(format!("the patch is not JSON: {e}")))?,
        };
        let body_name = util::name(&patch);
        if kind == PatchKind::Apply && !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if kind == PatchKind::Apply && opts.manager.is_empty() {
            return Err(ApiError::bad(
                "PATCH of type application/apply-patch+yaml requires the fieldManager parameter",
            ));
        }
        let mut t = self.store.txn();
        let Some(old) = t.get(&def.gr(), ns, name) else {
            if kind == PatchKind::Apply && sub == Sub::Main {
                drop(t);
                check_kind(def, &patch)?;
                let mut obj = patch.clone();
                if util::name(&obj).is_empty() {
                    obj["metadata"]["name"] = json!(name);
                }
                let create_opts = WriteOpts {
                    dry_run: opts.dry_run,
                    ..WriteOpts::default()
                };
                let created = self.create(def, ns, obj, &create_opts)?;
                // record ownership as Apply
                let mut t = self.store.txn();
                let mut managed = Managed::default();
                let builtin = is_builtin(def);
                let cfg = fields::tracked(&patch, !def.status, false);
                fields::apply(
                    &mut managed,
                    &opts.manager,
                    "",
                    &def.api_version(),
                    &json!({}),
                    &cfg,
                    true,
                    builtin,
                    &util::now(),
                )
                .ok();
                let mut obj = created;
                managed.write(&mut obj);
                if opts.dry_run {
                    return Ok((obj, true));
                }
                let stored = t.put(&def.gr(), ns, name, obj);
                return Ok(((*stored).clone(), true));
            }
            return Err(ApiError::not_found(def, name));
        };
        let builtin = is_builtin(def);
        let base = if sub == Sub::Scale {
            scale_of(def, &old)
        } else {
            (*old).clone()
        };
        let mut managed_override = None;
        let mut new = match kind {
            PatchKind::Merge => {
                let mut n = base.clone();
                fields::merge_patch(&mut n, &patch);
                n
            }
            PatchKind::Strategic => {
                if !builtin {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        "strategic merge patch is not supported for custom resources; use a merge patch",
                    ));
                }
                let mut n = base.clone();
                fields::strategic_merge(&mut n, &patch, true);
                n
            }
            PatchKind::Json => {
                let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                    .map_err(|e| ApiError::bad(format!("the JSON patch is not valid: {e}")))?;
                let mut n = base.clone();
                json_patch::patch(&mut n, &ops).map_err(|e| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!("the JSON patch does not apply: {e}"),
                    )
                })?;
                n
            }
            PatchKind::Apply => {
                if sub == Sub::Scale {
                    let mut n = base.clone();
                    fields::merge_patch(&mut n, &patch);
                    n
                } else {
                    check_kind(def, &patch)?;
                    let only_status = sub == Sub::Status;
                    let with_status = !def.status || only_status;
                    let live_t = fields::tracked(&old, with_status, only_status);
                    let cfg = fields::tracked(&patch, with_status, only_status);
                    let mut managed = Managed::read(&old);
                    let subname = if only_status { "status" } else { "" };
                    let merged = fields::apply(
                        &mut managed,
                        &opts.manager,
                        subname,
                        &def.api_version(),
                        &live_t,
                        &cfg,
                        opts.force,
                        builtin,
                        &util::now(),
                    )
                    .map_err(|c| {
                        let mut e = ApiError::new(409, "Conflict", fields::conflict_message(&c));
                        e.details = json!({"name": name, "group": def.group, "kind": def.plural,
                            "causes": c.iter().map(|c| json!({"type": "FieldManagerConflict",
                                "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                                "field": c.field})).collect::<Vec<_>>()});
                        e
                    })?;
                    managed_override = Some(managed);
                    let mut n = (*old).clone();
                    let m = n.as_object_mut().expect("object");
                    if only_status {
                        m.insert("status".into(), merged["status"].clone());
                    } else {
                        let status = m.get("status").cloned();
                        let keep_md = m.get("metadata").cloned().unwrap_or(json!({}));
                        m.retain(|k, _| k == "apiVersion" || k == "kind");
                        for (k, v) in merged.as_object().into_iter().flatten() {
                            m.insert(k.clone(), v.clone());
                        }
                        let mut md = keep_md;
                        for k in ["labels", "annotations", "ownerReferences", "finalizers"] {
                            match merged["metadata"].get(k) {
                                Some(v) => md[k] = v.clone(),
                                None => {
                                    if let Some(o) = md.as_object_mut() {
                                        o.remove(k);
                                    }
                                }
                            }
                        }
                        m.insert("metadata".into(), md);
                        if def.status
                            && let Some(s) = status
                        {
                            m.insert("status".into(), s);
                        }
                    }
                    n
                }
            }
        };
        if sub == Sub::Scale {
            let replicas = new["spec"]["replicas"].as_i64().unwrap_or(0);
            let scale = def
                .scale
                .clone()
                .ok_or_else(|| ApiError::not_found(def, name))?;
            let mut n = (*old).clone();
            set_path(&mut n, &scale.spec_replicas, json!(replicas));
            new = n;
        }
        // a patch never moves the object
        new["metadata"]["name"] = json!(name);
        if !ns.is_empty() {
            new["metadata"]["namespace"] = json!(ns);
        }
        if kind != PatchKind::Apply
            && let Some(m) = new["metadata"].as_object_mut()
            && m.get("resourceVersion").and_then(Value::as_str)
                == old["metadata"]["resourceVersion"].as_str()
        {
            m.remove("resourceVersion");
        }
        let out = self.commit(
            &mut t,
            def,
            ns,
            name,
            &old,
            new,
            sub,
            opts,
            managed_override,
        )?;
        drop(t);
        if def.kind == "CustomResourceDefinition" {
            self.refresh_crds();
        }
        Ok((
            if sub == Sub::Scale {
                scale_of(def, &out)
            } else {
                out
            },
            false,
        ))
    }

    /// The common tail of PUT and PATCH.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        t: &mut Txn<'_>,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        old: &Value,
        mut new: Value,
        sub: Sub,
        opts: &WriteOpts,
        managed_override: Option<Managed>,
    ) -> Result<Value, ApiError> {
        if !new.is_object() {
            return Err(ApiError::bad("the object is not a JSON object"));
        }
        let want_rv = new["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if !want_rv.is_empty() && want_rv != util::s(&old["metadata"], "resourceVersion") {
            return Err(conflict(def, name));
        }
        new["apiVersion"] = json!(def.api_version());
        new["kind"] = json!(def.kind);
        // server-owned metadata stays
        let omd = old["metadata"].as_object().cloned().unwrap_or_default();
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        {
            let md = new["metadata"].as_object_mut().expect("object");
            for k in [
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "name",
                "namespace",
            ] {
                match omd.get(k) {
                    Some(v) => {
                        md.insert(k.into(), v.clone());
                    }
                    None => {
                        md.remove(k);
                    }
                }
            }
        }
        match sub {
            Sub::Status => {
                // only the status changes
                let mut n = old.clone();
                n["status"] = new["status"].clone();
                new = n;
            }
            Sub::Main | Sub::Scale if def.status => match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            },
            _ => {}
        }
        self.default_object(def, &mut new, t)?;
        self.preserve_allocations(def, old, &mut new);
        // generation: bumps when anything but metadata and status changes
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("metadata");
                m.remove("status");
            }
            v
        };
        if strip(old) != strip(&new) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(g + 1);
        }
        let now = util::now();
        let builtin = is_builtin(def);
        let mut managed = match managed_override {
            Some(m) => m,
            None => {
                let mut m = Managed::read(old);
                if !opts.manager.is_empty() {
                    let only_status = sub == Sub::Status;
                    let with_status = !def.status || only_status;
                    m.record_update(
                        &opts.manager,
                        match sub {
                            Sub::Status => "status",
                            Sub::Scale => "scale",
                            Sub::Main => "",
                        },
                        &def.api_version(),
                        &fields::tracked(old, with_status, only_status),
                        &fields::tracked(&new, with_status, only_status),
                        builtin,
                        &now,
                    );
                }
                m
            }
        };
        if sub != Sub::Main || opts.manager.is_empty() {
            // keep whatever the caller sent out of managedFields
            let mut m2 = Managed::read(old);
            for (k, v) in managed.entries {
                m2.entries.insert(k, v);
            }
            managed = m2;
        }
        managed.write(&mut new);
        if opts.dry_run {
            return Ok(new);
        }
        // finalizers emptied on a deleting object: it goes
        if new["metadata"]["deletionTimestamp"].is_string()
            && new["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty())
            && def.kind != "Pod"
        {
            let last = t.remove(&def.gr(), ns, name);
            return Ok(last.map(|v| (*v).clone()).unwrap_or(new));
        }
        // a write that changes nothing but managedFields timestamps is a no-op (as the real
        // server: the resourceVersion stays)
        let without_mf = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v["metadata"].as_object_mut() {
                m.remove("managedFields");
                m.remove("resourceVersion");
            }
            v
        };
        let same_owners = |a: &Value, b: &Value| {
            let strip = |v: &Value| -> Vec<Value> {
                v["metadata"]["managedFields"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|mut e| {
                        if let Some(o) = e.as_object_mut() {
                            o.remove("time");
                        }
                        e
                    })
                    .collect()
            };
            strip(a) == strip(b)
        };
        if without_mf(old) == without_mf(&new) && same_owners(old, &new) {
            return Ok(old.clone());
        }
        let stored = t.put(&def.gr(), ns, name, new);
        Ok((*stored).clone())
    }

    /// DELETE.
    pub fn delete(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        options: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut t = self.store.txn();
        let Some(old) = t.get(&def.gr(), ns, name) else {
            return Err(ApiError::not_found(def, name));
        };
        if let Some(uid) = options["preconditions"]["uid"].as_str()
            && uid != util::s(&old["metadata"], "uid")
        {
            return Err(conflict(def, name));
        }
        if dry_run {
            return Ok((*old).clone());
        }
        let policy = options["propagationPolicy"].as_str().unwrap_or(
            if options["orphanDependents"] == json!(true) {
                "Orphan"
            } else {
                "Background"
            },
        );
        if policy == "Orphan" {
            let uid = util::s(&old["metadata"], "uid").to_string();
            orphan_dependents(&mut t, &uid);
        }
        let finalizers = old["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        let graceful_pod = def.kind == "Pod" && old["spec"]["nodeName"].is_string() && {
            let grace = options["gracePeriodSeconds"]
                .as_i64()
                .or(old["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30);
            grace > 0
        };
        if def.kind == "Namespace" {
            let mut n = (*old).clone();
            if n["status"]["phase"] != "Terminating" {
                n["metadata"]["deletionTimestamp"] = json!(util::now());
                n["status"]["phase"] = json!("Terminating");
                let s = t.put(&def.gr(), ns, name, n);
                return Ok((*s).clone());
            }
            return Ok((*old).clone());
        }
        if finalizers || graceful_pod {
            if old["metadata"]["deletionTimestamp"].is_string() {
                return Ok((*old).clone());
            }
            let mut n = (*old).clone();
            let grace = options["gracePeriodSeconds"]
                .as_i64()
                .or(old["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(if graceful_pod { 30 } else { 0 });
            n["metadata"]["deletionTimestamp"] = json!(util::now());
            n["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            let s = t.put(&def.gr(), ns, name, n);
            return Ok((*s).clone());
        }
        let last = t.remove(&def.gr(), ns, name).expect("present");
        drop(t);
        if def.kind == "CustomResourceDefinition" {
            self.refresh_crds();
        }
        Ok((*last).clone())
    }

    /// Removes an object now (kubelet's final delete, GC), ignoring grace and finalizers.
    pub fn force_remove(&self, gr: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.store.txn().remove(gr, ns, name)
    }

    /// Re-reads the CRDs into the registry (after a CRD changed).
    pub fn crds_changed(&self) {
        self.refresh_crds();
    }

    fn preserve_allocations(&self, def: &ResourceDef, old: &Value, new: &mut Value) {
        if def.kind != "Service" {
            return;
        }
        if new["spec"]["clusterIP"].as_str().unwrap_or("").is_empty()
            && let Some(ip) = old["spec"]["clusterIP"].as_str()
        {
            new["spec"]["clusterIP"] = json!(ip);
            new["spec"]["clusterIPs"] = json!([ip]);
        }
        let old_ports = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
        if let Some(ports) = new["spec"]["ports"].as_array_mut() {
            for p in ports {
                if p["nodePort"].is_null()
                    && let Some(op) = old_ports.iter().find(|o| o["port"] == p["port"])
                    && !op["nodePort"].is_null()
                {
                    p["nodePort"] = op["nodePort"].clone();
                }
            }
        }
    }

    /// Defaulting and allocation on create/update, as the real registry does for the fields
    /// our controllers read.
    fn default_object(
        &self,
        def: &ResourceDef,
        obj: &mut Value,
        t: &Txn<'_>,
    ) -> Result<(), ApiError> {
        let name = util::name(obj).to_string();
        match def.kind.as_str() {
            "Pod" => {
                if obj["spec"]["containers"]
                    .as_array()
                    .is_none_or(|c| c.is_empty())
                {
                    return Err(ApiError::invalid(
                        def,
                        &name,
                        "spec.containers: Required value",
                    ));
                }
                default_pod_spec(&mut obj["spec"]);
                if obj["status"]["phase"].is_null() {
                    obj["status"]["phase"] = json!("Pending");
                    obj["status"]["qosClass"] = json!("BestEffort");
                }
            }
            "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => {
                let spec = &mut obj["spec"];
                if spec["selector"].is_null() {
                    return Err(ApiError::invalid(
                        def,
                        &name,
                        "spec.selector: Required value",
                    ));
                }
                let sel = LabelSelector::from_object(&spec["selector"]).unwrap_or_default();
                let tl = spec["template"]["metadata"]["labels"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                if sel.is_empty() || !sel.matches(&tl) {
                    return Err(ApiError::invalid(
                        def,
                        &name,
                        "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`",
                    ));
                }
                if def.kind != "DaemonSet" && spec["replicas"].is_null() {
                    spec["replicas"] = json!(1);
                }
                if def.kind == "Deployment" {
                    if spec["strategy"].is_null() {
                        spec["strategy"] = json!({"type": "RollingUpdate",
                            "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}});
                    }
                    if spec["progressDeadlineSeconds"].is_null() {
                        spec["progressDeadlineSeconds"] = json!(600);
                    }
                }
                if def.kind == "DaemonSet" && spec["updateStrategy"].is_null() {
                    spec["updateStrategy"] = json!({"type": "RollingUpdate",
                        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}});
                }
                if spec["revisionHistoryLimit"].is_null() && def.kind != "ReplicaSet" {
                    spec["revisionHistoryLimit"] = json!(10);
                }
                if spec["template"]["spec"]["containers"]
                    .as_array()
                    .is_none_or(|c| c.is_empty())
                {
                    return Err(ApiError::invalid(
                        def,
                        &name,
                        "spec.template.spec.containers: Required value",
                    ));
                }
                default_pod_spec(&mut spec["template"]["spec"]);
            }
            "Service" => self.default_service(def, obj, t)?,
            "Namespace" => {
                obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
                if obj["status"]["phase"].is_null() {
                    obj["status"]["phase"] = json!("Active");
                }
                if obj["spec"]["finalizers"].is_null() {
                    obj["spec"]["finalizers"] = json!(["kubernetes"]);
                }
            }
            "Secret" => {
                if let Some(sd) = obj.get("stringData").and_then(Value::as_object).cloned() {
                    use base64::Engine;
                    for (k, v) in sd {
                        obj["data"][&k] = json!(
                            base64::engine::general_purpose::STANDARD
                                .encode(v.as_str().unwrap_or(""))
                        );
                    }
                    if let Some(m) = obj.as_object_mut() {
                        m.remove("stringData");
                    }
                }
                if obj["type"].is_null() {
                    obj["type"] = json!("Opaque");
                }
            }
            "CustomResourceDefinition" => {
                let names = obj["spec"]["names"].clone();
                obj["status"] = json!({"acceptedNames": names, "storedVersions":
                    obj["spec"]["versions"].as_array().into_iter().flatten()
                        .filter(|v| v["storage"] == json!(true)).map(|v| v["name"].clone()).collect::<Vec<_>>(),
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                         "message": "no conflicts found", "lastTransitionTime": util::now()},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                         "message": "the initial names have been accepted", "lastTransitionTime": util::now()}]});
            }
            _ => {}
        }
        Ok(())
    }

    fn default_service(
        &self,
        def: &ResourceDef,
        obj: &mut Value,
        t: &Txn<'_>,
    ) -> Result<(), ApiError> {
        let name = util::name(obj).to_string();
        let ns = util::namespace(obj).to_string();
        let spec = &mut obj["spec"];
        if spec["type"].is_null() {
            spec["type"] = json!("ClusterIP");
        }
        if spec["sessionAffinity"].is_null() {
            spec["sessionAffinity"] = json!("None");
        }
        let ty = util::s(spec, "type").to_string();
        if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty.as_str()) {
            return Err(ApiError::invalid(
                def,
                &name,
                format!("spec.type: Unsupported value: \"{ty}\""),
            ));
        }
        let services = t.list("services", None);
        let others: Vec<&Arc<Value>> = services
            .iter()
            .filter(|s| !(util::name(s) == name && util::namespace(s) == ns))
            .collect();
        if ty != "ExternalName" && spec["clusterIP"].as_str().unwrap_or("").is_empty() {
            let used: BTreeSet<String> = others
                .iter()
                .filter_map(|s| s["spec"]["clusterIP"].as_str().map(str::to_string))
                .collect();
            let ip = if name == "kubernetes" && util::namespace(obj) == "default" {
                Some(nth(&self.service_cidr, 1))
            } else {
                (10..self.service_cidr.hosts().count().min(60_000) as u32)
                    .map(|i| nth(&self.service_cidr, i))
                    .find(|ip| !used.contains(&ip.to_string()))
            };
            let ip = ip.ok_or_else(|| {
                ApiError::new(500, "InternalError", "the service CIDR is exhausted")
            })?;
            let spec = &mut obj["spec"];
            spec["clusterIP"] = json!(ip.to_string());
            spec["clusterIPs"] = json!([ip.to_string()]);
            spec["ipFamilies"] = json!(["IPv4"]);
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
        let spec = &mut obj["spec"];
        if spec["internalTrafficPolicy"].is_null() && ty != "ExternalName" {
            spec["internalTrafficPolicy"] = json!("Cluster");
        }
        let node_port = ty == "NodePort" || ty == "LoadBalancer";
        if node_port && spec["externalTrafficPolicy"].is_null() {
            spec["externalTrafficPolicy"] = json!("Cluster");
        }
        let mut used_ports: BTreeSet<i64> = others
            .iter()
            .flat_map(|s| s["spec"]["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["nodePort"].as_i64())
            .collect();
        if let Some(ports) = obj["spec"]["ports"].as_array_mut() {
            for p in ports.iter_mut() {
                if p["protocol"].is_null() {
                    p["protocol"] = json!("TCP");
                }
                if p["targetPort"].is_null() {
                    p["targetPort"] = p["port"].clone();
                }
                if node_port {
                    match p["nodePort"].as_i64() {
                        Some(np) => {
                            if !(30000..=32767).contains(&np) {
                                return Err(ApiError::invalid(
                                    def,
                                    &name,
                                    format!(
                                        "spec.ports[0].nodePort: Invalid value: {np}: provided port is not in the valid range. The range of valid ports is 30000-32767"
                                    ),
                                ));
                            }
                            if used_ports.contains(&np) {
                                return Err(ApiError::invalid(
                                    def,
                                    &name,
                                    format!(
                                        "spec.ports[0].nodePort: Invalid value: {np}: provided port is already allocated"
                                    ),
                                ));
                            }
                            used_ports.insert(np);
                        }
                        None => {
                            let start = 30000 + (rand_u32() % 2768) as i64;
                            let np = (0..2768)
                                .map(|i| 30000 + (start - 30000 + i) % 2768)
                                .find(|np| !used_ports.contains(np))
                                .ok_or_else(|| {
                                    ApiError::new(500, "InternalError", "no free node port")
                                })?;
                            used_ports.insert(np);
                            p["nodePort"] = json!(np);
                        }
                    }
                } else if let Some(m) = p.as_object_mut() {
                    m.remove("nodePort");
                }
            }
        }
        if obj["status"].is_null() {
            obj["status"] = json!({"loadBalancer": {}});
        }
        Ok(())
    }
}

fn nth(net: &ipnet::Ipv4Net, i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + i)
}

fn default_pod_spec(spec: &mut Value) {
    let defaults = [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("securityContext", json!({})),
        ("enableServiceLinks", json!(true)),
    ];
    for (k, v) in defaults {
        if spec[k].is_null() {
            spec[k] = v;
        }
    }
    if spec["serviceAccountName"].is_null() {
        spec["serviceAccountName"] = json!("default");
        spec["serviceAccount"] = json!("default");
    }
    for list in ["containers", "initContainers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            let image = util::s(c, "image").to_string();
            let latest =
                !image.rsplit('/').next().unwrap_or("").contains(':') || image.ends_with(":latest");
            if c["imagePullPolicy"].is_null() {
                c["imagePullPolicy"] = json!(if latest { "Always" } else { "IfNotPresent" });
            }
            if c["terminationMessagePath"].is_null() {
                c["terminationMessagePath"] = json!("/dev/termination-log");
                c["terminationMessagePolicy"] = json!("File");
            }
            if c["resources"].is_null() {
                c["resources"] = json!({});
            }
            for p in c["ports"].as_array_mut().into_iter().flatten() {
                if p["protocol"].is_null() {
                    p["protocol"] = json!("TCP");
                }
            }
        }
    }
}

fn orphan_dependents(t: &mut Txn<'_>, uid: &str) {
    for gr in [
        "pods",
        "replicasets.apps",
        "deployments.apps",
        "daemonsets.apps",
        "endpoints",
    ] {
        for o in t.list(gr, None) {
            let refs = o["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if refs.iter().any(|r| r["uid"] == uid) {
                let mut n = (*o).clone();
                let kept: Vec<Value> = refs.into_iter().filter(|r| r["uid"] != uid).collect();
                n["metadata"]["ownerReferences"] = json!(kept);
                let (ns, name) = (util::namespace(&o).to_string(), util::name(&o).to_string());
                t.put(gr, &ns, &name, n);
            }
        }
    }
}

fn conflict(def: &ResourceDef, name: &str) -> ApiError {
    let mut e = ApiError::new(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            qualified(def)
        ),
    );
    e.details = json!({"name": name, "group": def.group, "kind": def.plural});
    e
}

fn check_kind(def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    let kind = util::s(obj, "kind");
    let av = util::s(obj, "apiVersion");
    if (!kind.is_empty() && kind != def.kind) || (!av.is_empty() && av != def.api_version()) {
        return Err(ApiError::bad(format!(
            "the API version in the data ({av}) and kind ({kind}) do not match the resource {} ({})",
            def.plural,
            def.api_version()
        )));
    }
    Ok(())
}

fn validate_name(def: &ResourceDef, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == ':'
        })
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            def,
            name,
            format!(
                "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ))
    }
}

/// Whether a resource is built in (strategic merge and merge keys apply).
pub fn is_builtin(def: &ResourceDef) -> bool {
    crate::resources::builtins()
        .iter()
        .any(|b| b.group == def.group && b.plural == def.plural)
}

/// The `autoscaling/v1 Scale` view of an object.
pub fn scale_of(def: &ResourceDef, obj: &Value) -> Value {
    let sc = def.scale.clone().unwrap_or(ScaleSpec {
        spec_replicas: "spec.replicas".into(),
        status_replicas: "status.replicas".into(),
        selector_path: None,
    });
    let md = &obj["metadata"];
    let selector = match &sc.selector_path {
        Some(p) => get_path(obj, p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        None => LabelSelector::from_object(&obj["spec"]["selector"])
            .map(|s| s.to_string_form())
            .unwrap_or_default(),
    };
    let mut m = Map::new();
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = md.get(k) {
            m.insert(k.into(), v.clone());
        }
    }
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": m,
        "spec": {"replicas": get_path(obj, &sc.spec_replicas).and_then(Value::as_i64).unwrap_or(0)},
        "status": {"replicas": get_path(obj, &sc.status_replicas).and_then(Value::as_i64).unwrap_or(0),
            "selector": selector}})
}

/// Random lowercase suffix of `n` characters from Kubernetes' alphabet.
pub fn random_suffix(n: usize) -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..n)
        .map(|_| ALPHA[(rand_u32() as usize) % ALPHA.len()] as char)
        .collect()
}

/// A random u32 (ring's system RNG).
pub fn rand_u32() -> u32 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("system randomness");
    u32::from_le_bytes(b)
}
