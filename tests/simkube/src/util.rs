//! Small helpers over untyped objects: dotted paths, timestamps, label and field selectors.

use serde_json::{Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The value at a dotted path (`spec.replicas`), if any.
pub fn get_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        cur = cur.get(seg)?;
    }
    Some(cur)
}

/// Sets the value at a dotted path, creating maps on the way.
pub fn set_path(v: &mut Value, path: &str, val: Value) {
    let segs: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
    let mut cur = v;
    for (i, seg) in segs.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let m = cur.as_object_mut().expect("object");
        if i + 1 == segs.len() {
            m.insert(seg.to_string(), val);
            return;
        }
        cur = m
            .entry(seg.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// RFC 3339 with seconds, as Kubernetes writes `metav1.Time`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let odt = time::OffsetDateTime::from_unix_timestamp(d.as_secs() as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    odt.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Now, formatted.
pub fn now() -> String {
    rfc3339(SystemTime::now())
}

/// Parses an RFC 3339 time.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let secs = t.unix_timestamp();
    (secs >= 0).then(|| UNIX_EPOCH + Duration::from_secs(secs as u64))
}

/// kubectl-style short age: `5s`, `3m`, `2d`.
pub fn age(ts: Option<&str>) -> String {
    let Some(t) = ts.and_then(parse_time) else {
        return "<unknown>".into();
    };
    let d = SystemTime::now()
        .duration_since(t)
        .unwrap_or_default()
        .as_secs();
    match d {
        0..120 => format!("{d}s"),
        120..600 => format!("{}m{}s", d / 60, d % 60),
        600..10800 => format!("{}m", d / 60),
        10800..172800 => format!("{}h", d / 3600),
        _ => format!("{}d", d / 86400),
    }
}

/// The string at `v[key]`, or "".
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The object's `metadata.name`.
pub fn name(v: &Value) -> &str {
    s(&v["metadata"], "name")
}

/// The object's `metadata.namespace` ("" if none).
pub fn namespace(v: &Value) -> &str {
    s(&v["metadata"], "namespace")
}

/// The object's labels as (key, value) pairs.
pub fn labels(v: &Value) -> Map<String, Value> {
    v["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector (string form: `app=web,tier in (a,b),!x`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Req>);

/// A selector string that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid selector {0:?}")]
pub struct BadSelector(pub String);

impl LabelSelector {
    /// Parses the string form.
    pub fn parse(s: &str) -> Result<Self, BadSelector> {
        let bad = || BadSelector(s.to_string());
        let mut reqs = Vec::new();
        // split on commas outside parentheses
        let mut parts = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        for p in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            let set = |rest: &str| -> Result<Vec<String>, BadSelector> {
                let r = rest.trim();
                let r = r
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(bad)?;
                Ok(r.split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect())
            };
            if let Some(k) = p.strip_prefix('!') {
                reqs.push(Req::NotExists(k.trim().to_string()));
            } else if let Some((k, v)) = p.split_once("!=") {
                reqs.push(Req::Ne(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = p.split_once("==") {
                reqs.push(Req::Eq(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = p.split_once('=') {
                reqs.push(Req::Eq(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = p.split_once(" notin ") {
                reqs.push(Req::NotIn(k.trim().into(), set(v)?));
            } else if let Some((k, v)) = p.split_once(" in ") {
                reqs.push(Req::In(k.trim().into(), set(v)?));
            } else if p.chars().all(|c| c.is_alphanumeric() || "-_./".contains(c)) {
                reqs.push(Req::Exists(p.to_string()));
            } else {
                return Err(bad());
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// From a `metav1.LabelSelector` object. `None` selects nothing (a null selector).
    pub fn from_object(v: &Value) -> Option<Self> {
        let o = v.as_object()?;
        let mut reqs = Vec::new();
        for (k, val) in o
            .get("matchLabels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            reqs.push(Req::Eq(k.clone(), val.as_str().unwrap_or("").to_string()));
        }
        for e in o
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let k = s(e, "key").to_string();
            let vals: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect();
            reqs.push(match s(e, "operator") {
                "In" => Req::In(k, vals),
                "NotIn" => Req::NotIn(k, vals),
                "Exists" => Req::Exists(k),
                _ => Req::NotExists(k),
            });
        }
        Some(LabelSelector(reqs))
    }

    /// Whether the labels match.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::Ne(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The string form.
    pub fn to_string_form(&self) -> String {
        self.0
            .iter()
            .map(|r| match r {
                Req::Eq(k, v) => format!("{k}={v}"),
                Req::Ne(k, v) => format!("{k}!={v}"),
                Req::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Req::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Req::Exists(k) => k.clone(),
                Req::NotExists(k) => format!("!{k}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A parsed field selector: `metadata.name=x,spec.nodeName!=y`.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses the string form.
    pub fn parse(s: &str) -> Result<Self, BadSelector> {
        let mut out = Vec::new();
        for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some((k, v)) = p.split_once("!=") {
                out.push((k.trim().to_string(), false, v.trim().to_string()));
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                out.push((k.trim().to_string(), true, v.trim().to_string()));
            } else {
                return Err(BadSelector(s.to_string()));
            }
        }
        Ok(FieldSelector(out))
    }

    /// Whether the object matches.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(k, eq, v)| {
            let actual = match get_path(obj, k) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            (actual == *v) == *eq
        })
    }
}
