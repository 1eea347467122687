//! The HTTP face of the API server: routing of `/api` and `/apis` paths, discovery, OpenAPI
//! stubs, authentication results turned into 401/403, list/get/watch with selectors and Table
//! output, writes, and the streaming watch protocol (one JSON event per line, bookmarks, an
//! in-stream 410 `Status` for a too-old resourceVersion).

use crate::apiserver::{ApiError, ApiServer, PatchKind, Sub, WriteOpts};
use crate::resources::ResourceDef;
use crate::store::EventType;
use crate::table;
use crate::util::{self, FieldSelector, LabelSelector};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A response body (full or streaming).
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User name (`kubernetes-admin`, `system:node:node-1`, `system:bootstrap:abcdef`).
    pub name: String,
    /// Groups.
    pub groups: Vec<String>,
}

/// The outcome of authentication.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A known user.
    User(User),
    /// No credentials.
    Anonymous,
    /// Credentials that do not authenticate.
    Invalid,
}

/// Everything the HTTP layer needs.
#[derive(Debug)]
pub struct Server {
    /// The API semantics.
    pub api: Arc<ApiServer>,
    /// Cancelled to end every open watch (clients then re-watch from their last version).
    pub watch_reset: std::sync::Mutex<CancellationToken>,
    /// How often watches send bookmarks.
    pub bookmark_every: Duration,
    /// The minor version told to the kubectl dispatcher (see [`crate::SimOptions`]).
    pub dispatcher_minor: Option<u32>,
}

fn full(code: StatusCode, ct: &str, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", ct)
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .expect("response")
}

fn json_resp(code: u16, v: &Value) -> Response<Body> {
    full(
        StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        "application/json",
        serde_json::to_vec(v).expect("json"),
    )
}

fn err(e: ApiError) -> Response<Body> {
    json_resp(e.code, &e.status())
}

fn query(uri: &http::Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a path names.
#[derive(Debug)]
struct Target {
    def: ResourceDef,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

impl Server {
    /// Handles one request from `auth`.
    pub async fn handle(self: &Arc<Self>, auth: Auth, req: Request<Bytes>) -> Response<Body> {
        let path = req.uri().path().trim_end_matches('/').to_string();
        let public = matches!(
            path.as_str(),
            "/version" | "/healthz" | "/livez" | "/readyz"
        ) || (req.method() == Method::GET
            && path == "/api/v1/namespaces/kube-public/configmaps/cluster-info");
        let user = match auth {
            Auth::User(u) => Some(u),
            Auth::Invalid => {
                return json_resp(
                    401,
                    &ApiError::new(401, "Unauthorized", "Unauthorized").status(),
                );
            }
            Auth::Anonymous => None,
        };
        if user.is_none() && !public {
            return err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "forbidden: User \"system:anonymous\" cannot {} path \"{path}\"",
                    req.method().as_str().to_lowercase()
                ),
            ));
        }
        tracing::debug!(method = %req.method(), uri = %req.uri(), "request");
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segs.as_slice() {
            ["version"] => {
                let (ma, mut mi) = self.api.version;
                let dispatcher = req
                    .headers()
                    .get("user-agent")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|ua| ua.starts_with("kubectl-dispatcher"));
                if dispatcher && let Some(m) = self.dispatcher_minor {
                    mi = m;
                }
                json_resp(
                    200,
                    &json!({"major": ma.to_string(), "minor": mi.to_string(),
                    "gitVersion": format!("v{ma}.{mi}.0"), "gitCommit": "simkube", "gitTreeState": "clean",
                    "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
                    "platform": "linux/amd64"}),
                )
            }
            ["healthz"] | ["livez"] | ["readyz"] => {
                full(StatusCode::OK, "text/plain", b"ok".to_vec())
            }
            ["api"] => json_resp(
                200,
                &json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
            ),
            ["apis"] => json_resp(200, &self.group_list()),
            ["api", "v1"] => json_resp(200, &self.resource_list("", "v1")),
            ["apis", g] => match self.group(g) {
                Some(v) => json_resp(200, &v),
                None => err(ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )),
            },
            ["apis", g, v] => {
                let l = self.resource_list(g, v);
                if l["resources"].as_array().is_none_or(|r| r.is_empty()) {
                    err(ApiError::new(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    ))
                } else {
                    json_resp(200, &l)
                }
            }
            ["openapi", "v3"] => json_resp(200, &self.openapi_root()),
            ["openapi", "v3", "api", v] => json_resp(200, &self.openapi_gv("", v)),
            ["openapi", "v3", "apis", g, v] => json_resp(200, &self.openapi_gv(g, v)),
            ["openapi", ..] | ["swagger.json"] => err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )),
            _ => {
                let target = match self.target(&segs) {
                    Ok(t) => t,
                    Err(e) => return err(e),
                };
                self.resource_request(
                    target,
                    user.unwrap_or(User {
                        name: "system:anonymous".into(),
                        groups: vec!["system:unauthenticated".into()],
                    }),
                    req,
                )
                .await
            }
        }
    }

    /// `/openapi/v3`: one entry per group-version.
    fn openapi_root(&self) -> Value {
        let mut paths = serde_json::Map::new();
        for d in self.api.resources() {
            let p = if d.group.is_empty() {
                format!("api/{}", d.version)
            } else {
                format!("apis/{}/{}", d.group, d.version)
            };
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=simkube{}", self.api.resources().len())}),
            );
        }
        json!({"paths": paths})
    }

    /// A minimal OpenAPI v3 document of a group-version: one PATCH operation per kind that
    /// declares the `fieldValidation` parameter, so kubectl leaves validation to the server
    /// (which accepts it; schemas are not served, so `kubectl explain` does not work).
    fn openapi_gv(&self, g: &str, v: &str) -> Value {
        let mut paths = serde_json::Map::new();
        for d in self
            .api
            .resources()
            .iter()
            .filter(|d| d.group == g && d.version == v)
        {
            let prefix = if g.is_empty() {
                format!("/api/{v}")
            } else {
                format!("/apis/{g}/{v}")
            };
            let path = if d.namespaced {
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", d.plural)
            } else {
                format!("{prefix}/{}/{{name}}", d.plural)
            };
            let params: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation", "force"]
                .iter()
                .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string"}}))
                .collect();
            paths.insert(
                path,
                json!({"patch": {"operationId": format!("patch{}", d.kind),
                    "x-kubernetes-group-version-kind": {"group": d.group, "version": d.version, "kind": d.kind},
                    "x-kubernetes-action": "patch", "parameters": params,
                    "responses": {"200": {"description": "OK"}}}}),
            );
        }
        let (ma, mi) = self.api.version;
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": format!("v{ma}.{mi}.0")},
            "paths": paths, "components": {"schemas": {}}})
    }

    fn group_list(&self) -> Value {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for d in self.api.resources() {
            if d.group.is_empty() {
                continue;
            }
            match groups.iter_mut().find(|(g, _)| *g == d.group) {
                Some((_, vs)) => {
                    if !vs.contains(&d.version) {
                        vs.push(d.version.clone())
                    }
                }
                None => groups.push((d.group.clone(), vec![d.version.clone()])),
            }
        }
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(g, vs)| group_json(&g, &vs))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    fn group(&self, g: &str) -> Option<Value> {
        let mut vs: Vec<String> = Vec::new();
        for d in self.api.resources() {
            if d.group == g && !vs.contains(&d.version) {
                vs.push(d.version.clone());
            }
        }
        if vs.is_empty() {
            return None;
        }
        let mut v = group_json(g, &vs);
        v["kind"] = json!("APIGroup");
        v["apiVersion"] = json!("v1");
        Some(v)
    }

    fn resource_list(&self, g: &str, v: &str) -> Value {
        let resources: Vec<Value> = self
            .api
            .resources()
            .iter()
            .filter(|d| d.group == g && d.version == v)
            .flat_map(|d| d.discovery())
            .collect();
        let gv = if g.is_empty() {
            v.to_string()
        } else {
            format!("{g}/{v}")
        };
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
    }

    fn target(&self, segs: &[&str]) -> Result<Target, ApiError> {
        let nf = || {
            ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        };
        let (group, version, rest) = match segs {
            ["api", "v1", rest @ ..] => ("", "v1", rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return Err(nf()),
        };
        let find = |plural: &str| self.api.resource(group, version, plural).ok_or_else(nf);
        // namespaces/{ns}/{resource}... unless it is the namespace itself (or its status)
        if let ["namespaces", ns, res, rest2 @ ..] = rest
            && !(matches!(*res, "status" | "finalize") && rest2.is_empty())
        {
            let def = find(res)?;
            if !def.namespaced {
                return Err(nf());
            }
            return Ok(Target {
                def,
                ns: Some(ns.to_string()),
                name: rest2.first().map(|s| s.to_string()),
                sub: rest2.get(1).map(|s| s.to_string()),
            });
        }
        match rest {
            [res, tail @ ..] if tail.len() <= 2 => {
                let def = find(res)?;
                if tail.is_empty() && def.namespaced {
                    // list across namespaces
                    return Ok(Target {
                        def,
                        ns: None,
                        name: None,
                        sub: None,
                    });
                }
                if def.namespaced {
                    return Err(nf());
                }
                Ok(Target {
                    def,
                    ns: Some(String::new()),
                    name: tail.first().map(|s| s.to_string()),
                    sub: tail.get(1).map(|s| s.to_string()),
                })
            }
            _ => Err(nf()),
        }
    }

    async fn resource_request(
        self: &Arc<Self>,
        t: Target,
        user: User,
        req: Request<Bytes>,
    ) -> Response<Body> {
        let q = query(req.uri());
        let accept = req
            .headers()
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let ua = req
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown")
            .to_string();
        let ct = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string();
        let manager = q.get("fieldManager").cloned().unwrap_or_else(|| {
            ua.split('/')
                .next()
                .unwrap_or("unknown")
                .chars()
                .take(128)
                .collect()
        });
        let opts = WriteOpts {
            manager,
            force: q.get("force").is_some_and(|v| v == "true"),
            dry_run: q.get("dryRun").is_some_and(|v| v == "All"),
        };
        if let Some(denied) = bootstrapper_denied(&user, &t, req.method()) {
            return err(denied);
        }
        if t.def.plural == "selfsubjectreviews" {
            return json_resp(
                201,
                &json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                    "metadata": {"creationTimestamp": null},
                    "status": {"userInfo": {"username": user.name, "groups": user.groups}}}),
            );
        }
        if t.def.kind == "Pod"
            && t.sub.as_deref() == Some("log")
            && let Some(name) = &t.name
        {
            let ns = t.ns.clone().unwrap_or_default();
            return match self.api.get(&t.def, &ns, name) {
                Ok(p) => full(StatusCode::OK, "text/plain", pod_log(&p).into_bytes()),
                Err(e) => err(e),
            };
        }
        let sub = match t.sub.as_deref() {
            None => Sub::Main,
            Some("status") if t.def.status => Sub::Status,
            Some("scale") if t.def.scale.is_some() => Sub::Scale,
            Some("binding") if t.def.kind == "Pod" => Sub::Main,
            Some(_) => {
                return err(ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ));
            }
        };
        if ct.contains("protobuf") || ct.contains("cbor") {
            return err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {ct})"
                ),
            ));
        }
        let ns = t.ns.clone().unwrap_or_default();
        let method = req.method().clone();
        let body = req.into_body();
        let parse = |b: &Bytes| -> Result<Value, ApiError> {
            if ct.contains("yaml") {
                serde_yaml_ng::from_slice(b)
                    .map_err(|e| ApiError::bad(format!("the body is not YAML: {e}")))
            } else {
                serde_json::from_slice(b)
                    .map_err(|e| ApiError::bad(format!("the body is not JSON: {e}")))
            }
        };
        let api = &self.api;
        let as_table = accept.contains("as=Table");
        let include = q
            .get("includeObject")
            .cloned()
            .unwrap_or_else(|| "Metadata".into());
        let result: Result<(u16, Value), ApiError> = match (&method, &t.name) {
            (&Method::GET, None) => {
                if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                    return self.watch(t, q, as_table, include);
                }
                self.list(&t, &q, as_table, &include).map(|v| (200, v))
            }
            (&Method::GET, Some(name)) => api.get(&t.def, &ns, name).map(|o| {
                let o = if sub == Sub::Scale {
                    crate::apiserver::scale_of(&t.def, &o)
                } else {
                    (*o).clone()
                };
                if as_table && sub == Sub::Main {
                    let rv = util::s(&o["metadata"], "resourceVersion").to_string();
                    (200, table::table(&t.def.kind, &[&o], &rv, &include, true))
                } else {
                    (200, o)
                }
            }),
            (&Method::POST, None) => parse(&body).and_then(|b| api.create(&t.def, &ns, b, &opts)).map(|o| (201, o)),
            (&Method::POST, Some(name)) if t.sub.as_deref() == Some("binding") => parse(&body).and_then(|b| {
                let node = b["target"]["name"].as_str().unwrap_or("").to_string();
                let patch = json!({"spec": {"nodeName": node}});
                api.patch(&t.def, &ns, name, PatchKind::Merge, patch.to_string().as_bytes(), Sub::Main, &opts)
                    .map(|_| (201, json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201})))
            }),
            (&Method::PUT, Some(name)) => parse(&body)
                .and_then(|b| api.replace(&t.def, &ns, name, b, sub, &opts))
                .map(|o| (200, o)),
            (&Method::PATCH, Some(name)) => {
                let kind = if ct.starts_with("application/json-patch") {
                    PatchKind::Json
                } else if ct.starts_with("application/merge-patch") {
                    PatchKind::Merge
                } else if ct.starts_with("application/strategic-merge-patch") {
                    PatchKind::Strategic
                } else if ct.starts_with("application/apply-patch") {
                    PatchKind::Apply
                } else {
                    return err(ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct})")));
                };
                api.patch(&t.def, &ns, name, kind, &body, sub, &opts)
                    .map(|(o, created)| (if created { 201 } else { 200 }, o))
            }
            (&Method::DELETE, Some(name)) => {
                let opts_v: Value = if body.is_empty() {
                    json!({})
                } else {
                    serde_json::from_slice(&body).unwrap_or(json!({}))
                };
                let mut opts_v = opts_v;
                if let Some(g) = q.get("gracePeriodSeconds").and_then(|g| g.parse::<i64>().ok()) {
                    opts_v["gracePeriodSeconds"] = json!(g);
                }
                if let Some(p) = q.get("propagationPolicy") {
                    opts_v["propagationPolicy"] = json!(p);
                }
                api.delete(&t.def, &ns, name, &opts_v, opts.dry_run).map(|o| (200, o))
            }
            (&Method::DELETE, None) => {
                let (items, _) = api.store.list(&t.def.gr(), t.ns.as_deref());
                let sel = match selectors(&q) {
                    Ok(s) => s,
                    Err(e) => return err(e),
                };
                let mut deleted = Vec::new();
                for o in items.iter().filter(|o| sel.0.matches(&util::labels(o)) && sel.1.matches(o)) {
                    if let Ok(d) = api.delete(&t.def, util::namespace(o), util::name(o), &json!({}), opts.dry_run) {
                        deleted.push(d);
                    }
                }
                Ok((200, json!({"kind": format!("{}List", t.def.kind), "apiVersion": t.def.api_version(),
                    "metadata": {"resourceVersion": api.store.rv().to_string()}, "items": deleted})))
            }
            _ => Err(ApiError::new(405, "MethodNotAllowed", format!("{method} is not supported here"))),
        };
        match result {
            Ok((code, v)) => json_resp(code, &v),
            Err(e) => err(e),
        }
    }

    fn list(
        &self,
        t: &Target,
        q: &HashMap<String, String>,
        as_table: bool,
        include: &str,
    ) -> Result<Value, ApiError> {
        let (label, field) = selectors(q)?;
        let (items, rv) = self
            .api
            .store
            .list(&t.def.gr(), t.ns.as_deref().filter(|n| !n.is_empty()));
        let items: Vec<&Value> = items
            .iter()
            .map(|a| a.as_ref())
            .filter(|o| label.matches(&util::labels(o)) && field.matches(o))
            .collect();
        let rv = rv.to_string();
        if as_table {
            return Ok(table::table(&t.def.kind, &items, &rv, include, true));
        }
        Ok(
            json!({"kind": format!("{}List", t.def.kind), "apiVersion": t.def.api_version(),
            "metadata": {"resourceVersion": rv}, "items": items}),
        )
    }

    fn watch(
        self: &Arc<Self>,
        t: Target,
        q: HashMap<String, String>,
        as_table: bool,
        include: String,
    ) -> Response<Body> {
        let (label, field) = match selectors(&q) {
            Ok(s) => s,
            Err(e) => return err(e),
        };
        let rv_param = q.get("resourceVersion").cloned().unwrap_or_default();
        let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
        let initial_events = q.get("sendInitialEvents").is_some_and(|v| v == "true");
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs);
        let from: u64 = rv_param.parse().unwrap_or(0);
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
        let srv = self.clone();
        let reset = srv
            .watch_reset
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let gr = t.def.gr();
        let ns = t.ns.clone().filter(|n| !n.is_empty());
        let kind = t.def.kind.clone();
        let api_version = t.def.api_version();
        tokio::spawn(async move {
            let mut first_table = true;
            let mut enc = |ty: &str, o: &Value| -> Bytes {
                let object = if as_table && ty != "ERROR" && ty != "BOOKMARK" {
                    let rv = util::s(&o["metadata"], "resourceVersion").to_string();
                    let t = table::table(&kind, &[o], &rv, &include, first_table);
                    first_table = false;
                    t
                } else {
                    o.clone()
                };
                let mut line =
                    serde_json::to_vec(&json!({"type": ty, "object": object})).expect("json");
                line.push(b'\n');
                Bytes::from(line)
            };
            let matches = |o: &Value| {
                label.matches(&util::labels(o))
                    && field.matches(o)
                    && ns.as_deref().is_none_or(|n| util::namespace(o) == n)
            };
            let sub = srv.api.store.subscribe(
                if rv_param.is_empty() || rv_param == "0" || initial_events {
                    0
                } else {
                    from
                },
            );
            let (replay, mut live, now_rv) = match sub {
                Ok(s) => s,
                Err(_) => {
                    let st = ApiError::new(
                        410,
                        "Expired",
                        format!("too old resource version: {from} ({})", srv.api.store.rv()),
                    );
                    let _ = tx.send(enc("ERROR", &st.status())).await;
                    return;
                }
            };
            let mut last_rv = now_rv;
            if rv_param.is_empty() || rv_param == "0" || initial_events {
                let (items, _) = srv.api.store.list(&gr, ns.as_deref());
                for o in items.iter().filter(|o| matches(o)) {
                    if tx.send(enc("ADDED", o)).await.is_err() {
                        return;
                    }
                }
                if initial_events {
                    let bm = json!({"kind": kind, "apiVersion": api_version, "metadata": {
                        "resourceVersion": now_rv.to_string(),
                        "annotations": {"k8s.io/initial-events-end": "true"}}});
                    if tx.send(enc("BOOKMARK", &bm)).await.is_err() {
                        return;
                    }
                }
            }
            let emit = |c: &crate::store::Change| -> Option<(&'static str, Value)> {
                if c.gr != gr {
                    return None;
                }
                let now_m = matches(&c.object);
                let before = c.prev.as_ref().is_some_and(|p| matches(p));
                match c.kind {
                    EventType::Added if now_m => Some(("ADDED", (*c.object).clone())),
                    EventType::Modified if now_m && before => {
                        Some(("MODIFIED", (*c.object).clone()))
                    }
                    EventType::Modified if now_m => Some(("ADDED", (*c.object).clone())),
                    EventType::Modified if before => Some(("DELETED", (*c.object).clone())),
                    EventType::Deleted if before || now_m => Some(("DELETED", (*c.object).clone())),
                    _ => None,
                }
            };
            for c in replay {
                last_rv = last_rv.max(c.rv);
                if let Some((ty, o)) = emit(&c)
                    && tx.send(enc(ty, &o)).await.is_err()
                {
                    return;
                }
            }
            let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
            let mut tick = tokio::time::interval(srv.bookmark_every);
            tick.tick().await;
            loop {
                let sleep_until = deadline
                    .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
                tokio::select! {
                    _ = reset.cancelled() => return,
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep_until(sleep_until) => return,
                    _ = tick.tick(), if bookmarks => {
                        let bm = json!({"kind": kind, "apiVersion": api_version,
                            "metadata": {"resourceVersion": last_rv.to_string()}});
                        if tx.send(enc("BOOKMARK", &bm)).await.is_err() { return; }
                    }
                    c = live.recv() => match c {
                        Ok(c) => {
                            if c.rv <= last_rv { continue; }
                            last_rv = c.rv;
                            if let Some((ty, o)) = emit(&c)
                                && tx.send(enc(ty, &o)).await.is_err()
                            {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            let st = ApiError::new(410, "Expired", "watch fell behind; relist");
                            let _ = tx.send(enc("ERROR", &st.status())).await;
                            return;
                        }
                        Err(_) => return,
                    }
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let stream =
            futures::StreamExt::map(stream, |b| Ok::<_, Infallible>(http_body::Frame::data(b)));
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("transfer-encoding", "chunked")
            .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
            .expect("response")
    }
}

/// The only thing simulated authorization restricts: a bootstrap token (group
/// `system:bootstrappers`) may read the ConfigMaps and Nodes `kubeadm join` reads, and nothing
/// else (the real RBAC kubeadm sets up grants about that). Every other authenticated user may do
/// everything.
fn bootstrapper_denied(user: &User, t: &Target, method: &Method) -> Option<ApiError> {
    if !user.groups.iter().any(|g| g == "system:bootstrappers") {
        return None;
    }
    let read = matches!(*method, Method::GET);
    let ns = t.ns.as_deref().unwrap_or("");
    let allowed = t.def.plural == "selfsubjectreviews"
        || (read && t.def.plural == "configmaps" && matches!(ns, "kube-public" | "kube-system"))
        || (read && t.def.plural == "nodes");
    (!allowed).then(|| {
        let verb = match (method.as_str(), t.name.is_some()) {
            ("GET", true) => "get",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", _) => "delete",
            (m, _) => m,
        }
        .to_lowercase();
        let scope = if ns.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{ns}\"")
        };
        let group = if t.def.group.is_empty() { "\"\"".to_string() } else { format!("\"{}\"", t.def.group) };
        ApiError::new(
            403,
            "Forbidden",
            format!(
                "{} is forbidden: User \"{}\" cannot {verb} resource \"{}\" in API group {group} {scope}",
                t.def.plural, user.name, t.def.plural
            ),
        )
    })
}

/// What a simulated container "printed": start-up lines, and the crash reason of a container
/// that exited (Let's Chat without MongoDB).
fn pod_log(p: &Value) -> String {
    let mut out = String::new();
    for c in p["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let image = util::s(c, "image");
        if c["state"]["running"].is_object() || c["lastState"]["terminated"].is_object() {
            out.push_str(&format!(
                "simulated container {} ({image}) started\n",
                util::s(c, "name")
            ));
        }
        if image.contains("lets-chat")
            && c["lastState"]["terminated"].is_object()
            && c["ready"] != json!(true)
        {
            out.push_str("error: Could not connect to database: MongoError: failed to connect to server [mongo:27017] on first connect\n");
        }
        if c["ready"] == json!(true) {
            out.push_str("ready\n");
        }
    }
    out
}

fn group_json(g: &str, vs: &[String]) -> Value {
    let versions: Vec<Value> = vs
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
}

fn selectors(q: &HashMap<String, String>) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let l = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad(format!("unable to parse requirement: {e}")))?;
    let f = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad(format!("invalid field selector: {e}")))?;
    Ok((l, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decodes_percent_escapes() {
        let u: http::Uri = "/x?labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=1"
            .parse()
            .unwrap();
        let q = query(&u);
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["watch"], "1");
    }
}
