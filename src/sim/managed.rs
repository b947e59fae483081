//! Field ownership (`metadata.managedFields`, FieldsV1) and server-side apply: a compact
//! re-statement of structured-merge-diff's rules for the list types kudo's objects use.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// One step of a field path, spelled as in FieldsV1 (`f:`, `k:`, `v:`, `i:`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pe {
    Field(String),
    /// An item of an associative list, by its key fields (JSON with sorted keys).
    Key(String),
    /// An item of a set list, by value (JSON).
    Value(String),
    Index(usize),
}

impl Pe {
    fn encode(&self) -> String {
        match self {
            Pe::Field(f) => format!("f:{f}"),
            Pe::Key(k) => format!("k:{k}"),
            Pe::Value(v) => format!("v:{v}"),
            Pe::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Option<Pe> {
        let (tag, rest) = s.split_at_checked(2)?;
        match tag {
            "f:" => Some(Pe::Field(rest.to_string())),
            "k:" => Some(Pe::Key(rest.to_string())),
            "v:" => Some(Pe::Value(rest.to_string())),
            "i:" => rest.parse().ok().map(Pe::Index),
            _ => None,
        }
    }
}

pub type Path = Vec<Pe>;

/// The `v:` spelling of a set-list item.
fn value_key(v: &Value) -> String {
    v.to_string()
}
pub type FieldSet = BTreeSet<Path>;

/// Human-readable path as the API server prints it in conflicts: `.spec.containers[name="x"].image`.
pub fn display_path(path: &[Pe]) -> String {
    let mut s = String::new();
    for pe in path {
        match pe {
            Pe::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Pe::Key(k) => {
                let parsed: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = parsed.iter().map(|(k, v)| format!("{k}={v}")).collect();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
            Pe::Value(v) => s.push_str(&format!("[={v}]")),
            Pe::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// How a list is merged and owned.
#[derive(Debug, Clone, PartialEq)]
enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// Where list types come from: the table of built-in kinds, or a custom resource's
/// structural schema (`x-kubernetes-list-type` / `x-kubernetes-list-map-keys`).
#[derive(Debug, Clone, Copy)]
pub enum Lists<'a> {
    Builtin,
    Schema(Option<&'a Value>),
}

/// The schema node at `path` (list items of any kind step into `items`).
fn schema_at<'a>(root: &'a Value, path: &[Pe]) -> Option<&'a Value> {
    let mut cur = root;
    for pe in path {
        cur = match pe {
            Pe::Field(f) => cur
                .get("properties")
                .and_then(|p| p.get(f))
                .or_else(|| cur.get("additionalProperties").filter(|a| a.is_object()))?,
            _ => cur.get("items")?,
        };
    }
    Some(cur)
}

/// The list type of the list at `path` holding `items`.
fn list_type(path: &[Pe], items: &[Value], lists: Lists<'_>) -> ListType {
    let in_metadata = matches!(path.first(), Some(Pe::Field(f)) if f == "metadata");
    match lists {
        Lists::Schema(schema) if !in_metadata => {
            let node = schema.and_then(|root| schema_at(root, path));
            let marker = node
                .and_then(|n| n.get("x-kubernetes-list-type"))
                .and_then(Value::as_str);
            match marker {
                Some("map") => {
                    let keys = node
                        .and_then(|n| n.get("x-kubernetes-list-map-keys"))
                        .and_then(Value::as_array)
                        .map(|ks| {
                            ks.iter()
                                .filter_map(|k| k.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    ListType::Map(keys)
                }
                Some("set") => ListType::Set,
                Some(_) => ListType::Atomic,
                // Unmarked lists are atomic; `conditions` under an unknown schema is keyed
                // by type, as every controller treats it.
                None if node.is_none() && last_field(path) == "conditions" => {
                    ListType::Map(vec!["type".to_string()])
                }
                None => ListType::Atomic,
            }
        }
        _ => builtin_list_type(last_field(path), items),
    }
}

/// The list type of field `name` in a built-in kind (as its OpenAPI markers declare).
fn builtin_list_type(name: &str, items: &[Value]) -> ListType {
    let has = |k: &str| items.iter().any(|i| i.get(k).is_some());
    let map = |keys: &[&str]| ListType::Map(keys.iter().map(|k| k.to_string()).collect());
    match name {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => map(&["name"]),
        "conditions" => map(&["type"]),
        "ports" if has("containerPort") => map(&["containerPort", "protocol"]),
        "ports" if has("port") => map(&["port", "protocol"]),
        "volumeMounts" => map(&["mountPath"]),
        "volumeDevices" => map(&["devicePath"]),
        "ownerReferences" => map(&["uid"]),
        "hostAliases" => map(&["ip"]),
        "topologySpreadConstraints" => map(&["topologyKey", "whenUnsatisfiable"]),
        "finalizers" => ListType::Set,
        _ => ListType::Atomic,
    }
}

/// The key of an associative-list item (protocol defaults to TCP as the server defaults it).
fn item_key(item: &Value, keys: &[String]) -> Option<String> {
    let mut m = Map::new();
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    for k in sorted {
        match item.get(k) {
            Some(v) => {
                m.insert(k.to_string(), v.clone());
            }
            None if k == "protocol" => {
                m.insert(k.to_string(), json!("TCP"));
            }
            None => {}
        }
    }
    if m.is_empty() {
        None
    } else {
        Some(Value::Object(m).to_string())
    }
}

fn last_field(path: &[Pe]) -> &str {
    match path.last() {
        Some(Pe::Field(f)) => f,
        _ => "",
    }
}

/// The leaf paths (and list-item paths) of `v`, with their values.
pub fn leaves<'a>(v: &'a Value, lists: Lists<'_>) -> BTreeMap<Path, &'a Value> {
    let mut out = BTreeMap::new();
    walk(v, &mut Vec::new(), lists, &mut out);
    out
}

fn walk<'a>(v: &'a Value, path: &mut Path, lists: Lists<'_>, out: &mut BTreeMap<Path, &'a Value>) {
    match v {
        Value::Object(m) if !m.is_empty() || path.is_empty() => {
            for (k, child) in m {
                path.push(Pe::Field(k.clone()));
                walk(child, path, lists, out);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match list_type(path, items, lists) {
            ListType::Atomic => {
                out.insert(path.clone(), v);
            }
            ListType::Set => {
                for item in items {
                    path.push(Pe::Value(item.to_string()));
                    out.insert(path.clone(), item);
                    path.pop();
                }
            }
            ListType::Map(keys) => {
                for (i, item) in items.iter().enumerate() {
                    let pe = item_key(item, &keys).map(Pe::Key).unwrap_or(Pe::Index(i));
                    path.push(pe);
                    out.insert(path.clone(), &Value::Null);
                    if item.is_object() {
                        walk(item, path, lists, out);
                    }
                    path.pop();
                }
            }
        },
        _ => {
            out.insert(path.clone(), v);
        }
    }
}

/// The value at `path` in `v`, if present.
pub fn get_at<'a>(v: &'a Value, path: &[Pe], lists: Lists<'_>) -> Option<&'a Value> {
    let mut cur = v;
    for (i, pe) in path.iter().enumerate() {
        cur = match (pe, cur) {
            (Pe::Field(f), Value::Object(m)) => m.get(f)?,
            (Pe::Key(k), Value::Array(items)) => {
                let ListType::Map(keys) = list_type(&path[..i], items, lists) else {
                    return None;
                };
                items
                    .iter()
                    .find(|i| item_key(i, &keys).as_deref() == Some(k))?
            }
            (Pe::Value(s), Value::Array(items)) => items.iter().find(|i| value_key(i) == *s)?,
            (Pe::Index(i), Value::Array(items)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Removes the field or list item at `path` from `v`.
fn remove_at(v: &mut Value, path: &[Pe], lists: Lists<'_>) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let Some(parent) = get_at_mut(v, parent_path, lists) else {
        return;
    };
    match (last, parent) {
        (Pe::Field(f), Value::Object(m)) => {
            m.shift_remove(f);
        }
        (Pe::Key(k), Value::Array(items)) => {
            if let ListType::Map(keys) = list_type(parent_path, items, lists) {
                items.retain(|i| item_key(i, &keys).as_deref() != Some(k));
            }
        }
        (Pe::Value(s), Value::Array(items)) => items.retain(|i| value_key(i) != *s),
        (Pe::Index(i), Value::Array(items)) if *i < items.len() => {
            items.remove(*i);
        }
        _ => {}
    }
}

fn get_at_mut<'a>(v: &'a mut Value, path: &[Pe], lists: Lists<'_>) -> Option<&'a mut Value> {
    let mut cur = v;
    for (i, pe) in path.iter().enumerate() {
        cur = match (pe, cur) {
            (Pe::Field(f), Value::Object(m)) => m.get_mut(f)?,
            (Pe::Key(k), Value::Array(items)) => {
                let ListType::Map(keys) = list_type(&path[..i], items, lists) else {
                    return None;
                };
                items
                    .iter_mut()
                    .find(|i| item_key(i, &keys).as_deref() == Some(k))?
            }
            (Pe::Value(s), Value::Array(items)) => items.iter_mut().find(|i| value_key(i) == *s)?,
            (Pe::Index(i), Value::Array(items)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Merges an applied configuration into the live object: maps recursively, associative
/// lists by key, set lists by value, everything else replaced.
pub fn merge_applied(live: &mut Value, applied: &Value, path: &mut Path, lists: Lists<'_>) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, av) in a {
                match l.get_mut(k) {
                    Some(lv) if !av.is_null() => {
                        path.push(Pe::Field(k.clone()));
                        merge_applied(lv, av, path, lists);
                        path.pop();
                    }
                    _ => {
                        l.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => match list_type(path, a, lists) {
            ListType::Atomic => *l = a.clone(),
            ListType::Set => {
                for item in a {
                    if !l.contains(item) {
                        l.push(item.clone());
                    }
                }
            }
            ListType::Map(keys) => {
                for item in a {
                    let key = item_key(item, &keys);
                    match l
                        .iter_mut()
                        .find(|i| key.is_some() && item_key(i, &keys) == key)
                    {
                        Some(existing) => {
                            // Any item element steps into the schema's `items`.
                            path.push(Pe::Index(0));
                            merge_applied(existing, item, path, lists);
                            path.pop();
                        }
                        None => l.push(item.clone()),
                    }
                }
            }
        },
        (l, a) => *l = a.clone(),
    }
}

/// One entry of `metadata.managedFields`.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    pub manager: String,
    /// "Apply" or "Update".
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

impl ManagedEntry {
    fn same_owner(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
}

/// Reads `metadata.managedFields` (entries that do not parse are dropped).
pub fn read_entries(obj: &Value) -> Vec<ManagedEntry> {
    let Some(items) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|e| {
            let mut fields = FieldSet::new();
            decode_fields(e.get("fieldsV1")?, &mut Vec::new(), &mut fields);
            Some(ManagedEntry {
                manager: e.get("manager")?.as_str()?.to_string(),
                operation: e.get("operation")?.as_str()?.to_string(),
                api_version: e
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                time: e
                    .get("time")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                fields,
            })
        })
        .collect()
}

fn decode_fields(node: &Value, path: &mut Path, out: &mut FieldSet) {
    let Some(m) = node.as_object() else { return };
    if m.is_empty() && !path.is_empty() {
        out.insert(path.clone());
        return;
    }
    for (k, child) in m {
        if k == "." {
            out.insert(path.clone());
            continue;
        }
        if let Some(pe) = Pe::decode(k) {
            path.push(pe);
            decode_fields(child, path, out);
            path.pop();
        }
    }
}

fn encode_fields(fields: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        member: bool,
        children: BTreeMap<String, Node>,
    }
    fn to_value(n: &Node) -> Value {
        let mut m = Map::new();
        if n.member && !n.children.is_empty() {
            m.insert(".".to_string(), json!({}));
        }
        for (k, c) in &n.children {
            m.insert(k.clone(), to_value(c));
        }
        Value::Object(m)
    }
    let mut root = Node::default();
    for path in fields {
        let mut cur = &mut root;
        for pe in path {
            cur = cur.children.entry(pe.encode()).or_default();
        }
        cur.member = true;
    }
    to_value(&root)
}

/// Writes entries back into `metadata.managedFields` (removed when empty).
pub fn write_entries(obj: &mut Value, entries: &[ManagedEntry]) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let items: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": encode_fields(&e.fields),
            });
            if let Some(s) = &e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    if items.is_empty() {
        meta.shift_remove("managedFields");
    } else {
        meta.insert("managedFields".to_string(), Value::Array(items));
    }
}

/// The part of an object whose fields are tracked: no server-managed metadata.
pub fn tracked_view(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.shift_remove("apiVersion");
        m.shift_remove("kind");
    }
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
        ] {
            meta.shift_remove(k);
        }
        if meta.is_empty() {
            v.as_object_mut().map(|m| m.shift_remove("metadata"));
        }
    }
    v
}

/// Scope of a write: the main resource or its status subresource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Main resource of a kind without a status subresource: every field.
    All,
    /// Main resource of a kind with a status subresource: everything but `status`.
    Main,
    /// The status subresource: only `status`.
    Status,
}

impl Scope {
    fn subresource(self) -> Option<&'static str> {
        match self {
            Scope::Status => Some("status"),
            _ => None,
        }
    }

    fn contains(self, path: &[Pe]) -> bool {
        let is_status = matches!(path.first(), Some(Pe::Field(f)) if f == "status");
        match self {
            Scope::All => true,
            Scope::Main => !is_status,
            Scope::Status => is_status,
        }
    }
}

/// Records an Update (create/PUT/PATCH) by `manager`: it takes ownership of every field it
/// changed; fields it removed or changed leave other managers' sets.
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    now: &str,
    scope: Scope,
    lists: Lists<'_>,
) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let old_view = old.map(tracked_view).unwrap_or(Value::Null);
    let new_view = tracked_view(new);
    let old_leaves = leaves(&old_view, lists);
    let new_leaves = leaves(&new_view, lists);
    let changed: FieldSet = new_leaves
        .iter()
        .filter(|(p, v)| scope.contains(p) && old_leaves.get(*p) != Some(*v))
        .map(|(p, _)| p.clone())
        .collect();
    let removed: FieldSet = old_leaves
        .keys()
        .filter(|p| scope.contains(p) && !new_leaves.contains_key(*p))
        .cloned()
        .collect();
    if changed.is_empty() && removed.is_empty() {
        write_entries(new, &entries);
        return;
    }
    let sub = scope.subresource();
    for e in &mut entries {
        e.fields.retain(|p| !removed.contains(p));
        if !e.same_owner(manager, "Update", sub) {
            e.fields.retain(|p| !changed.contains(p));
        }
    }
    match entries
        .iter_mut()
        .find(|e| e.same_owner(manager, "Update", sub))
    {
        Some(e) => {
            e.fields.extend(changed);
            e.time = now.to_string();
            e.api_version = api_version.to_string();
        }
        None => entries.push(ManagedEntry {
            manager: manager.to_string(),
            operation: "Update".to_string(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource: sub.map(str::to_string),
            fields: changed,
        }),
    }
    entries.retain(|e| !e.fields.is_empty());
    write_entries(new, &entries);
}

/// Server-side apply of `applied` onto `live` (None when creating) by `manager`.
/// Returns the merged object with its managedFields, or the conflicting (manager, field) pairs.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    api_version: &str,
    now: &str,
    force: bool,
    scope: Scope,
    lists: Lists<'_>,
) -> Result<Value, Vec<(String, String)>> {
    let mut entries = live.map(read_entries).unwrap_or_default();
    let live_view = live.map(tracked_view).unwrap_or(json!({}));
    let applied_view = tracked_view(applied);
    let applied_leaves = leaves(&applied_view, lists);
    let applied_set: FieldSet = applied_leaves
        .keys()
        .filter(|p| scope.contains(p))
        .cloned()
        .collect();
    let sub = scope.subresource();

    // Conflicts: a field another manager owns, set here to a different value.
    let mut conflicts = Vec::new();
    let mut taken: FieldSet = FieldSet::new();
    for e in &entries {
        if e.same_owner(manager, "Apply", sub) {
            continue;
        }
        for p in e.fields.iter().filter(|p| applied_set.contains(*p)) {
            let new_v = applied_leaves.get(p).copied();
            if new_v == Some(&Value::Null) && matches!(p.last(), Some(Pe::Key(_) | Pe::Index(_))) {
                continue; // list item presence, not a value
            }
            if get_at(&live_view, p, lists) != new_v {
                conflicts.push((e.manager.clone(), display_path(p)));
                taken.insert(p.clone());
            }
        }
    }
    if !conflicts.is_empty() && !force {
        conflicts.sort();
        conflicts.dedup();
        return Err(conflicts);
    }
    for e in &mut entries {
        if !e.same_owner(manager, "Apply", sub) {
            e.fields.retain(|p| !taken.contains(p));
        }
    }

    let mut result = match live {
        Some(l) => l.clone(),
        None => json!({}),
    };
    let mut applied_scoped = applied.clone();
    if let Some(m) = applied_scoped.as_object_mut() {
        match scope {
            Scope::Main => {
                m.shift_remove("status");
            }
            Scope::Status => {
                m.retain(|k, _| k == "status" || k == "apiVersion" || k == "kind");
            }
            Scope::All => {}
        }
    }
    merge_applied(&mut result, &applied_scoped, &mut Vec::new(), lists);

    // Fields this manager applied before and no longer does: removed unless someone else owns them.
    let previous: FieldSet = entries
        .iter()
        .find(|e| e.same_owner(manager, "Apply", sub))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: FieldSet = entries
        .iter()
        .filter(|e| !e.same_owner(manager, "Apply", sub))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut dropped: Vec<&Path> = previous
        .iter()
        .filter(|p| !applied_set.contains(*p))
        .filter(|p| !others.iter().any(|o| o.starts_with(p)))
        .collect();
    // Deepest first so removing an item does not hide its fields' removal.
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        remove_at(&mut result, p, lists);
    }

    match entries
        .iter_mut()
        .find(|e| e.same_owner(manager, "Apply", sub))
    {
        Some(e) => {
            if e.fields != applied_set {
                e.time = now.to_string();
            }
            e.fields = applied_set;
            e.api_version = api_version.to_string();
        }
        None => entries.push(ManagedEntry {
            manager: manager.to_string(),
            operation: "Apply".to_string(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource: sub.map(str::to_string),
            fields: applied_set,
        }),
    }
    entries.retain(|e| !e.fields.is_empty());
    write_entries(&mut result, &entries);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(image: &str, replicas: i64) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "web", "image": image, "ports": [{"containerPort": 80}]}
            ]}}}
        })
    }

    #[test]
    fn fieldsv1_roundtrips_with_item_markers() {
        let mut obj = deploy("nginx", 1);
        let r = apply(
            None,
            &obj.clone(),
            "kudo",
            "apps/v1",
            "t",
            false,
            Scope::Main,
            Lists::Builtin,
        )
        .expect("no conflict");
        let fv1 = r
            .pointer("/metadata/managedFields/0/fieldsV1")
            .expect("entry");
        let c = fv1
            .pointer("/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"web\"}")
            .expect("container keyed by name");
        assert!(c.get(".").is_some());
        assert!(
            c.pointer("/f:ports/k:{\"containerPort\":80,\"protocol\":\"TCP\"}")
                .is_some()
        );
        obj["metadata"]["managedFields"] = r["metadata"]["managedFields"].clone();
        let back = read_entries(&obj);
        assert_eq!(back[0].fields, read_entries(&r)[0].fields);
        assert!(back[0].fields.len() > 5);
    }

    #[test]
    fn apply_conflicts_with_other_manager_unless_forced() {
        let live = apply(
            None,
            &deploy("nginx", 1),
            "a",
            "apps/v1",
            "t",
            false,
            Scope::Main,
            Lists::Builtin,
        )
        .expect("create");
        let err = apply(
            Some(&live),
            &deploy("nginx", 3),
            "b",
            "apps/v1",
            "t",
            false,
            Scope::Main,
            Lists::Builtin,
        )
        .expect_err("conflict");
        assert_eq!(err, vec![("a".to_string(), ".spec.replicas".to_string())]);
        let forced = apply(
            Some(&live),
            &deploy("nginx", 3),
            "b",
            "apps/v1",
            "t",
            true,
            Scope::Main,
            Lists::Builtin,
        )
        .expect("forced");
        assert_eq!(forced["spec"]["replicas"], 3);
        let entries = read_entries(&forced);
        let a = entries
            .iter()
            .find(|e| e.manager == "a")
            .expect("a keeps other fields");
        assert!(!a.fields.contains(&vec![
            Pe::Field("spec".into()),
            Pe::Field("replicas".into())
        ]));
    }

    #[test]
    fn same_values_do_not_conflict_and_dropped_fields_are_removed() {
        let live = apply(
            None,
            &deploy("nginx", 1),
            "a",
            "apps/v1",
            "t",
            false,
            Scope::Main,
            Lists::Builtin,
        )
        .expect("create");
        let shared = apply(
            Some(&live),
            &deploy("nginx", 1),
            "b",
            "apps/v1",
            "t",
            false,
            Scope::Main,
            Lists::Builtin,
        )
        .expect("same values never conflict");
        let mut smaller = deploy("nginx", 1);
        smaller["metadata"]
            .as_object_mut()
            .expect("meta")
            .shift_remove("labels");
        let r = apply(
            Some(&live),
            &smaller,
            "a",
            "apps/v1",
            "t",
            false,
            Scope::Main,
            Lists::Builtin,
        )
        .expect("apply");
        assert!(r.pointer("/metadata/labels/app").is_none(), "{r}");
        // b co-owns the label, so a dropping it keeps it.
        let r = apply(
            Some(&shared),
            &smaller,
            "a",
            "apps/v1",
            "t",
            false,
            Scope::Main,
            Lists::Builtin,
        )
        .expect("apply");
        assert_eq!(r.pointer("/metadata/labels/app"), Some(&json!("web")));
    }

    #[test]
    fn update_takes_ownership_of_changed_fields() {
        let live = apply(
            None,
            &deploy("nginx", 1),
            "a",
            "apps/v1",
            "t",
            false,
            Scope::Main,
            Lists::Builtin,
        )
        .expect("create");
        let mut new = live.clone();
        new["spec"]["replicas"] = json!(5);
        track_update(
            Some(&live),
            &mut new,
            "kubectl",
            "apps/v1",
            "t2",
            Scope::Main,
            Lists::Builtin,
        );
        let err = apply(
            Some(&new),
            &deploy("nginx", 1),
            "a",
            "apps/v1",
            "t",
            false,
            Scope::Main,
            Lists::Builtin,
        )
        .expect_err("kubectl owns replicas now");
        assert_eq!(err[0].0, "kubectl");
    }

    #[test]
    fn custom_resource_lists_follow_schema_markers() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "members": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}, "role": {"type": "string"}}}},
            "tags": {"type": "array", "items": {"type": "string"}}}}}});
        let lists = Lists::Schema(Some(&schema));
        let obj = |member: &str, tag: &str| {
            json!({"apiVersion": "e.x/v1", "kind": "W", "metadata": {"name": "w"},
                "spec": {"members": [{"name": member, "role": "r"}], "tags": [tag]}})
        };
        let live = apply(
            None,
            &obj("a", "t1"),
            "one",
            "e.x/v1",
            "t",
            false,
            Scope::All,
            lists,
        )
        .expect("create");
        // Another manager adds a member: merged by key, no conflict on the map list.
        let err = apply(
            Some(&live),
            &obj("b", "t2"),
            "two",
            "e.x/v1",
            "t",
            false,
            Scope::All,
            lists,
        )
        .expect_err("the atomic tags list is owned by one");
        assert_eq!(err, vec![("one".to_string(), ".spec.tags".to_string())]);
        let merged = apply(
            Some(&live),
            &obj("b", "t2"),
            "two",
            "e.x/v1",
            "t",
            true,
            Scope::All,
            lists,
        )
        .expect("forced");
        let names: Vec<&str> = merged["spec"]["members"]
            .as_array()
            .expect("members")
            .iter()
            .filter_map(|m| m["name"].as_str())
            .collect();
        assert_eq!(names, ["a", "b"], "map list merged by key");
        assert_eq!(
            merged["spec"]["tags"],
            json!(["t2"]),
            "atomic list replaced"
        );
        let entries = read_entries(&merged);
        let two = entries.iter().find(|e| e.manager == "two").expect("two");
        assert!(
            two.fields
                .iter()
                .any(|p| matches!(p.get(2), Some(Pe::Key(k)) if k == "{\"name\":\"b\"}"))
        );
    }
}
