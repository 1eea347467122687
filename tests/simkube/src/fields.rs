//! Patches and field ownership: JSON merge patch, strategic merge patch (merge keys of the
//! built-in list fields we use, `$patch: delete|replace`), and server-side apply with
//! `metadata.managedFields` (FieldsV1), per-manager field sets, conflicts and `force`.

use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// A field path in FieldsV1 notation: `f:spec`, `k:{"name":"web"}`, `.`.
pub type FieldPath = Vec<String>;
/// A set of field paths.
pub type FieldSet = BTreeSet<FieldPath>;

/// The merge key of a list field of a built-in kind (`None`: atomic list).
pub fn merge_key(parent: &[String], field: &str) -> Option<&'static [&'static str]> {
    let in_container = parent
        .iter()
        .any(|p| p == "containers" || p == "initContainers" || p == "ephemeralContainers");
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => &["name"],
        "ports" if in_container => &["containerPort"],
        "ports" => &["port"],
        "volumeMounts" => &["mountPath"],
        "conditions" => &["type"],
        "ownerReferences" => &["uid"],
        _ => return None,
    })
}

fn key_of(item: &Value, keys: &[&str]) -> Option<Map<String, Value>> {
    let mut m = Map::new();
    for k in keys {
        m.insert((*k).to_string(), item.get(*k)?.clone());
    }
    Some(m)
}

fn find_keyed(list: &[Value], keys: &[&str], want: &Map<String, Value>) -> Option<usize> {
    list.iter()
        .position(|i| key_of(i, keys).as_ref() == Some(want))
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(doc: &mut Value, patch: &Value) {
    json_patch::merge(doc, patch);
}

/// Strategic merge patch, with merge keys for the built-in lists when `builtin`.
pub fn strategic_merge(doc: &mut Value, patch: &Value, builtin: bool) {
    sm(doc, patch, &mut Vec::new(), builtin);
}

fn sm(doc: &mut Value, patch: &Value, path: &mut Vec<String>, builtin: bool) {
    let Some(pm) = patch.as_object() else {
        *doc = patch.clone();
        return;
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = pm.clone();
        p.remove("$patch");
        *doc = Value::Object(p);
        return;
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let dm = doc.as_object_mut().expect("object");
    for (k, v) in pm {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (dm.get_mut(field), v.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if v.is_null() {
            dm.remove(k);
            continue;
        }
        let keys = if builtin { merge_key(path, k) } else { None };
        match (keys, v) {
            (Some(keys), Value::Array(items)) => {
                let target = dm.entry(k.clone()).or_insert_with(|| json!([]));
                if !target.is_array() {
                    *target = json!([]);
                }
                let list = target.as_array_mut().expect("array");
                path.push(k.clone());
                for item in items {
                    let Some(key) = key_of(item, keys) else {
                        continue;
                    };
                    let pos = find_keyed(list, keys, &key);
                    match item.get("$patch").and_then(Value::as_str) {
                        Some("delete") => {
                            if let Some(i) = pos {
                                list.remove(i);
                            }
                        }
                        _ => match pos {
                            Some(i) => sm(&mut list[i], item, path, builtin),
                            None => {
                                let mut fresh = Value::Object(Map::new());
                                sm(&mut fresh, item, path, builtin);
                                list.push(fresh);
                            }
                        },
                    }
                }
                path.pop();
            }
            (_, Value::Object(_)) => {
                let target = dm.entry(k.clone()).or_insert_with(|| json!({}));
                path.push(k.clone());
                sm(target, v, path, builtin);
                path.pop();
            }
            _ => {
                dm.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The fields of an object that field management tracks (no status unless `with_status`, no
/// server-set metadata).
pub fn tracked(obj: &Value, with_status: bool, only_status: bool) -> Value {
    let mut o = obj.as_object().cloned().unwrap_or_default();
    o.remove("apiVersion");
    o.remove("kind");
    if only_status {
        return json!({"status": o.get("status").cloned().unwrap_or(Value::Null)});
    }
    if !with_status {
        o.remove("status");
    }
    if let Some(Value::Object(md)) = o.get_mut("metadata") {
        md.retain(|k, _| {
            matches!(
                k.as_str(),
                "labels" | "annotations" | "ownerReferences" | "finalizers"
            )
        });
        if md.is_empty() {
            o.remove("metadata");
        }
    }
    Value::Object(o)
}

/// The leaf field paths of `v`.
pub fn fields_of(v: &Value, builtin: bool) -> FieldSet {
    let mut out = FieldSet::new();
    walk(v, &mut Vec::new(), &mut Vec::new(), builtin, &mut out);
    out
}

fn walk(
    v: &Value,
    names: &mut Vec<String>,
    prefix: &mut FieldPath,
    builtin: bool,
    out: &mut FieldSet,
) {
    let Some(m) = v.as_object() else {
        return;
    };
    for (k, child) in m {
        if child.is_null() {
            continue;
        }
        prefix.push(format!("f:{k}"));
        let keys = if builtin { merge_key(names, k) } else { None };
        match (child, keys) {
            (Value::Object(cm), _) if !cm.is_empty() => {
                names.push(k.clone());
                walk(child, names, prefix, builtin, out);
                names.pop();
            }
            (Value::Array(items), Some(keys)) if !items.is_empty() => {
                names.push(k.clone());
                for item in items {
                    if let Some(key) = key_of(item, keys) {
                        prefix.push(format!("k:{}", Value::Object(key)));
                        let mut dot = prefix.clone();
                        dot.push(".".into());
                        out.insert(dot);
                        walk(item, names, prefix, builtin, out);
                        prefix.pop();
                    }
                }
                names.pop();
            }
            _ => {
                out.insert(prefix.clone());
            }
        }
        prefix.pop();
    }
}

/// The value at a field path.
pub fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            cur = cur.get(f)?;
        } else if let Some(k) = seg.strip_prefix("k:") {
            let want: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur = cur
                .as_array()?
                .iter()
                .find(|i| want.iter().all(|(kk, vv)| i.get(kk) == Some(vv)))?;
        } else if seg == "." {
            return Some(cur);
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Removes the field at a path (a `.` path removes the keyed list item).
fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    if last == "." {
        let Some((item, list_path)) = parent.split_last() else {
            return;
        };
        let Some(want) = item
            .strip_prefix("k:")
            .and_then(|k| serde_json::from_str::<Map<String, Value>>(k).ok())
        else {
            return;
        };
        if let Some(Value::Array(list)) = lookup_mut(v, list_path) {
            list.retain(|i| !want.iter().all(|(kk, vv)| i.get(kk) == Some(vv)));
        }
        return;
    }
    if let (Some(f), Some(Value::Object(m))) = (last.strip_prefix("f:"), lookup_mut(v, parent)) {
        m.remove(f);
    }
}

fn lookup_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = v;
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            cur = cur.get_mut(f)?;
        } else if let Some(k) = seg.strip_prefix("k:") {
            let want: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur = cur
                .as_array_mut()?
                .iter_mut()
                .find(|i| want.iter().all(|(kk, vv)| i.get(kk) == Some(vv)))?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// FieldsV1 JSON of a set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for p in set {
        let mut cur = &mut root;
        for seg in p {
            cur = cur
                .entry(seg.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("object");
        }
    }
    Value::Object(root)
}

/// The set in a FieldsV1 JSON.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn rec(v: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        for (k, c) in m {
            prefix.push(k.clone());
            if c.as_object().is_none_or(|o| o.is_empty()) {
                out.insert(prefix.clone());
            } else {
                rec(c, prefix, out);
            }
            prefix.pop();
        }
    }
    let mut out = FieldSet::new();
    rec(v, &mut Vec::new(), &mut out);
    out
}

/// A path as a human reads it: `.spec.template.spec.containers[name="web"].image`.
pub fn display_path(p: &[String]) -> String {
    let mut s = String::new();
    for seg in p {
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let m: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let inner: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", inner.join(",")));
        }
    }
    s
}

/// The managed-fields entries of an object, keyed by (manager, operation, subresource).
#[derive(Debug, Clone, Default)]
pub struct Managed {
    /// Entry key → (apiVersion, time, fields).
    pub entries: BTreeMap<(String, String, String), (String, String, FieldSet)>,
}

impl Managed {
    /// Reads `metadata.managedFields`.
    pub fn read(obj: &Value) -> Self {
        let mut m = Managed::default();
        for e in obj["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let key = (
                e["manager"].as_str().unwrap_or("").to_string(),
                e["operation"].as_str().unwrap_or("Update").to_string(),
                e["subresource"].as_str().unwrap_or("").to_string(),
            );
            m.entries.insert(
                key,
                (
                    e["apiVersion"].as_str().unwrap_or("").to_string(),
                    e["time"].as_str().unwrap_or("").to_string(),
                    from_fields_v1(&e["fieldsV1"]),
                ),
            );
        }
        m
    }

    /// Writes `metadata.managedFields` (dropping empty entries).
    pub fn write(&self, obj: &mut Value) {
        let list: Vec<Value> = self
            .entries
            .iter()
            .filter(|(_, (_, _, f))| !f.is_empty())
            .map(|((mgr, op, sub), (av, t, f))| {
                let mut e = json!({"manager": mgr, "operation": op, "apiVersion": av, "time": t,
                    "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(f)});
                if !sub.is_empty() {
                    e["subresource"] = json!(sub);
                }
                e
            })
            .collect();
        if list.is_empty() {
            if let Some(md) = obj["metadata"].as_object_mut() {
                md.remove("managedFields");
            }
        } else {
            obj["metadata"]["managedFields"] = Value::Array(list);
        }
    }

    /// Records an update (PUT, merge/JSON/strategic patch) by `manager`: it owns the fields it
    /// changed; other managers lose them.
    #[allow(clippy::too_many_arguments)]
    pub fn record_update(
        &mut self,
        manager: &str,
        sub: &str,
        api_version: &str,
        old: &Value,
        new: &Value,
        builtin: bool,
        now: &str,
    ) {
        let (old_f, new_f) = (fields_of(old, builtin), fields_of(new, builtin));
        let changed: FieldSet = new_f
            .iter()
            .filter(|p| lookup(old, p) != lookup(new, p))
            .chain(old_f.difference(&new_f))
            .cloned()
            .collect();
        if changed.is_empty() {
            return;
        }
        for ((m, _, s), (_, _, f)) in self.entries.iter_mut() {
            if m != manager || s != sub {
                f.retain(|p| !changed.contains(p));
            }
        }
        let key = (manager.to_string(), "Update".to_string(), sub.to_string());
        let e = self
            .entries
            .entry(key)
            .or_insert_with(|| (api_version.to_string(), now.to_string(), FieldSet::new()));
        e.0 = api_version.to_string();
        e.1 = now.to_string();
        e.2.extend(changed.into_iter().filter(|p| new_f.contains(p)));
        e.2.retain(|p| new_f.contains(p));
    }
}

/// A conflict of an apply with another manager's field.
#[derive(Debug, Clone)]
pub struct Conflict {
    /// The other manager.
    pub manager: String,
    /// Its entry's apiVersion.
    pub api_version: String,
    /// The field.
    pub field: String,
}

/// Server-side apply of `config` (tracked fields only) by `manager` onto `live` (tracked view
/// `live_t`). Returns the merged tracked object, or the conflicts.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    managed: &mut Managed,
    manager: &str,
    sub: &str,
    api_version: &str,
    live_t: &Value,
    config: &Value,
    force: bool,
    builtin: bool,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let new_set = fields_of(config, builtin);
    let me = (manager.to_string(), "Apply".to_string(), sub.to_string());
    let mut conflicts = Vec::new();
    for p in new_set.iter().filter(|p| p.last().is_none_or(|l| l != ".")) {
        let live_v = lookup(live_t, p);
        if live_v.is_none() || live_v == lookup(config, p) {
            continue;
        }
        for (k, (av, _, f)) in &managed.entries {
            if *k != me && f.contains(p) {
                conflicts.push(Conflict {
                    manager: k.0.clone(),
                    api_version: av.clone(),
                    field: display_path(p),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    // force (or no conflict): others lose the fields whose values this apply sets differently
    for (k, (_, _, f)) in managed.entries.iter_mut() {
        if *k != me {
            f.retain(|p| {
                !(new_set.contains(p)
                    && lookup(live_t, p).is_some()
                    && lookup(live_t, p) != lookup(config, p))
            });
        }
    }
    let mut merged = live_t.clone();
    apply_merge(&mut merged, config, &mut Vec::new(), builtin);
    // fields this manager applied before but not now: removed when nobody else owns them
    let prev = managed
        .entries
        .get(&me)
        .map(|e| e.2.clone())
        .unwrap_or_default();
    let others: FieldSet = managed
        .entries
        .iter()
        .filter(|(k, _)| **k != me)
        .flat_map(|(_, (_, _, f))| f.iter().cloned())
        .collect();
    let mut gone: Vec<&FieldPath> = prev
        .difference(&new_set)
        .filter(|p| !others.contains(*p))
        .collect();
    gone.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in gone {
        remove_path(&mut merged, p);
    }
    managed.entries.insert(
        me,
        (api_version.to_string(), now.to_string(), new_set.clone()),
    );
    Ok(merged)
}

fn apply_merge(live: &mut Value, cfg: &Value, names: &mut Vec<String>, builtin: bool) {
    let (Some(lm), Some(cm)) = (live.as_object_mut(), cfg.as_object()) else {
        *live = cfg.clone();
        return;
    };
    for (k, v) in cm {
        if v.is_null() {
            continue;
        }
        let keys = if builtin { merge_key(names, k) } else { None };
        match (lm.get_mut(k), v, keys) {
            (Some(l @ Value::Object(_)), Value::Object(_), _) => {
                names.push(k.clone());
                apply_merge(l, v, names, builtin);
                names.pop();
            }
            (Some(Value::Array(list)), Value::Array(items), Some(keys)) => {
                names.push(k.clone());
                let mut out = Vec::new();
                for item in items {
                    let Some(key) = key_of(item, keys) else {
                        continue;
                    };
                    match find_keyed(list, keys, &key) {
                        Some(i) => {
                            let mut cur = list.remove(i);
                            apply_merge(&mut cur, item, names, builtin);
                            out.push(cur);
                        }
                        None => out.push(item.clone()),
                    }
                }
                // items others own stay, after the applied ones
                out.append(list);
                *list = out;
                names.pop();
            }
            _ => {
                lm.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The message of a conflict error, as the real API server words it.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    let n = conflicts.len();
    if n == 1 {
        let c = &conflicts[0];
        return format!(
            "Apply failed with 1 conflict: conflict with \"{}\" using {}: {}",
            c.manager, c.api_version, c.field
        );
    }
    let mut s = format!("Apply failed with {n} conflicts: ");
    let parts: Vec<String> = conflicts
        .iter()
        .map(|c| {
            format!(
                "conflict with \"{}\" using {}: {}",
                c.manager, c.api_version, c.field
            )
        })
        .collect();
    s.push_str(&parts.join("\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let mut d =
            json!({"spec":{"containers":[{"name":"a","image":"x"},{"name":"b","image":"y"}]}});
        strategic_merge(
            &mut d,
            &json!({"spec":{"containers":[{"name":"b","image":"z"}]}}),
            true,
        );
        assert_eq!(d["spec"]["containers"][0]["image"], "x");
        assert_eq!(d["spec"]["containers"][1]["image"], "z");
    }

    #[test]
    fn apply_conflicts_name_the_other_manager_and_force_takes_over() {
        let mut m = Managed::default();
        let live = json!({"spec":{"replicas":1}});
        let cfg = json!({"spec":{"replicas":1}});
        let merged = apply(&mut m, "a", "", "apps/v1", &live, &cfg, false, true, "t").unwrap();
        let cfg2 = json!({"spec":{"replicas":3}});
        let err = apply(&mut m, "b", "", "apps/v1", &merged, &cfg2, false, true, "t").unwrap_err();
        assert_eq!(err[0].manager, "a");
        assert_eq!(err[0].field, ".spec.replicas");
        let merged = apply(&mut m, "b", "", "apps/v1", &merged, &cfg2, true, true, "t").unwrap();
        assert_eq!(merged["spec"]["replicas"], 3);
        assert!(
            m.entries[&("a".into(), "Apply".into(), "".into())]
                .2
                .is_empty()
        );
    }

    #[test]
    fn apply_removes_fields_the_manager_no_longer_sets() {
        let mut m = Managed::default();
        let live = json!({});
        let cfg = json!({"metadata":{"labels":{"a":"1","b":"2"}}});
        let merged = apply(&mut m, "x", "", "v1", &live, &cfg, false, true, "t").unwrap();
        let cfg = json!({"metadata":{"labels":{"a":"1"}}});
        let merged = apply(&mut m, "x", "", "v1", &merged, &cfg, false, true, "t").unwrap();
        assert_eq!(merged, json!({"metadata":{"labels":{"a":"1"}}}));
    }
}
