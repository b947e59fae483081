//! The pure core of a simulated cluster: an in-memory object store with the API server's
//! write semantics (resourceVersion, generation, managed fields, finalizers, garbage
//! collection, namespaces, CRD registration) and a bounded event history for watch resume.
//! No I/O: the HTTP/tower layer calls these methods under a lock and publishes the events.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};

use super::error::SimError;
use super::managed::{self, Scope};
use super::patch;
use super::resources::{ResourceDef, builtin_resources, from_crd};
use super::selector::Selector;
use super::validate::{admit, tidy_metadata};

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watchers see it.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    /// `group/plural` of the resource.
    pub resource: String,
    pub namespace: String,
    pub kind: EventType,
    /// The object after the change (the deleted object for DELETED), as stored JSON.
    pub object: Arc<str>,
    /// The object before this change (for selector transitions in watches).
    pub prev: Option<Arc<str>>,
}

/// An object as kept in memory: compact JSON (a tenth of a parsed `Value`'s footprint) plus
/// the fields the store scans without parsing.
#[derive(Debug, Clone)]
pub struct Stored {
    json: Arc<str>,
    uid: Box<str>,
    owners: Box<[Box<str>]>,
}

impl Stored {
    fn new(obj: &Value) -> Stored {
        let owners = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .map(|refs| {
                refs.iter()
                    .filter_map(|r| r.get("uid").and_then(Value::as_str))
                    .map(Box::from)
                    .collect()
            })
            .unwrap_or_default();
        Stored {
            json: Arc::from(obj.to_string()),
            uid: Box::from(meta_str(obj, "uid")),
            owners,
        }
    }

    fn value(&self) -> Value {
        serde_json::from_str(&self.json).expect("the store only holds JSON it serialized")
    }
}

/// The body of a PATCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Strategic,
    Json,
    Apply { force: bool },
}

/// How dependents are handled on delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

/// Options of a DELETE.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Option<Propagation>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

/// Result of a DELETE: the object still exists (finalizers pending) or is gone.
#[derive(Debug, Clone)]
pub enum Deleted {
    Pending(Value),
    Gone(Value),
}

/// A page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub items: Vec<Arc<Value>>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
}

/// Identifies one request target.
#[derive(Debug, Clone)]
pub struct Target {
    pub def: Arc<ResourceDef>,
    pub version: String,
    /// Empty for cluster-scoped resources.
    pub namespace: String,
}

impl Target {
    /// Where this resource's list types come from (table or CRD schema).
    fn lists(&self) -> managed::Lists<'_> {
        if self.def.custom {
            managed::Lists::Schema(self.def.schema(&self.version))
        } else {
            managed::Lists::Builtin
        }
    }

    fn api_version(&self) -> String {
        self.def.api_version(&self.version)
    }

    fn not_found(&self, name: &str) -> SimError {
        SimError::not_found(&self.def.group, &self.def.plural, name)
    }
}

type Objects = BTreeMap<(String, String), Stored>;

/// The in-memory state of one simulated cluster.
#[derive(Debug, Clone)]
pub struct Store {
    rv: u64,
    seq: u64,
    defs: Vec<Arc<ResourceDef>>,
    objects: HashMap<String, Objects>,
    history: VecDeque<Event>,
    history_cap: usize,
    /// Events with rv greater than this are all in `history`.
    compacted_rv: u64,
    pending: Vec<Event>,
}

/// The built-in resource table, shared by every simulated cluster in the process.
fn shared_builtins() -> Vec<Arc<ResourceDef>> {
    static BUILTINS: std::sync::OnceLock<Vec<Arc<ResourceDef>>> = std::sync::OnceLock::new();
    BUILTINS
        .get_or_init(|| builtin_resources().into_iter().map(Arc::new).collect())
        .clone()
}

/// The current time as the API server writes it (RFC 3339, seconds).
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn meta_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Object without metadata and status: what counts as a spec change for `generation`.
fn spec_view(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.shift_remove("metadata");
        m.shift_remove("status");
    }
    v
}

fn parse_body(body: &[u8]) -> Result<Value, SimError> {
    if body.is_empty() {
        return Err(SimError::BadRequest(
            "the request body is empty".to_string(),
        ));
    }
    serde_json::from_slice(body).or_else(|json_err| {
        let text = std::str::from_utf8(body)
            .map_err(|_| SimError::BadRequest(format!("body is not JSON: {json_err}")))?;
        serde_saphyr::from_str::<Value>(text)
            .map_err(|e| SimError::BadRequest(format!("body is neither JSON nor YAML: {e}")))
    })
}

impl Default for Store {
    fn default() -> Self {
        Store::new(500)
    }
}

impl Store {
    /// A fresh cluster with namespaces `default`, `kube-system`, `kube-public` and
    /// `kube-node-lease`, keeping `history_cap` events for watch resume.
    pub fn new(history_cap: usize) -> Store {
        let mut s = Store {
            rv: 1,
            seq: 0,
            defs: shared_builtins(),
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_cap: history_cap.max(1),
            compacted_rv: 1,
            pending: Vec::new(),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let t = s
                .target("", "v1", "namespaces", "")
                .expect("builtin namespaces");
            s.create(
                &t,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                "kube-apiserver",
            )
            .expect("bootstrap namespace is valid");
        }
        s.pending.clear();
        s
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Every served resource (built-in and established custom ones).
    pub fn resources(&self) -> &[Arc<ResourceDef>] {
        &self.defs
    }

    /// Number of stored objects.
    pub fn len(&self) -> usize {
        self.objects.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the events produced since the last call (the caller publishes them).
    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.pending)
    }

    /// Resolves `group/version/plural` (or its singular/short name) to a request target.
    pub fn target(
        &self,
        group: &str,
        version: &str,
        resource: &str,
        namespace: &str,
    ) -> Result<Target, SimError> {
        let def = self
            .defs
            .iter()
            .find(|d| d.group == group && d.serves(version) && d.plural == resource)
            .ok_or_else(|| SimError::NoResource {
                path: format!("{group}/{version}/{resource}"),
            })?;
        Ok(Target {
            def: def.clone(),
            version: version.to_string(),
            namespace: if def.namespaced {
                namespace.to_string()
            } else {
                String::new()
            },
        })
    }

    /// A UUID-shaped uid unique across every simulated cluster of the process (and, through
    /// the start-time salt, across runs).
    fn next_uid(&mut self) -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static SALT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let salt = *SALT.get_or_init(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            (nanos ^ u64::from(std::process::id())).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
        let h = n.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ salt;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (h >> 32) as u32,
            (h >> 16) as u16,
            (h & 0xfff) as u16,
            (salt >> 20) as u16 & 0xfff,
            n & 0xffff_ffff_ffff
        )
    }

    fn bucket(&self, t: &Target) -> Option<&Objects> {
        self.objects.get(&t.def.key())
    }

    fn lookup(&self, t: &Target, name: &str) -> Option<Arc<Value>> {
        self.bucket(t)?
            .get(&(t.namespace.clone(), name.to_string()))
            .map(|s| Arc::new(s.value()))
    }

    /// Rewrites apiVersion for the requested version (custom resources serve every version
    /// from one stored copy; no conversion webhooks).
    fn present(&self, t: &Target, obj: &Arc<Value>) -> Arc<Value> {
        if obj.get("apiVersion").and_then(Value::as_str) == Some(&t.api_version()) {
            obj.clone()
        } else {
            let mut o = (**obj).clone();
            o["apiVersion"] = json!(t.api_version());
            Arc::new(o)
        }
    }

    fn record(
        &mut self,
        t_key: &str,
        namespace: &str,
        kind: EventType,
        object: Arc<str>,
        prev: Option<Arc<str>>,
    ) {
        let ev = Event {
            rv: self.rv,
            resource: t_key.to_string(),
            namespace: namespace.to_string(),
            kind,
            object,
            prev,
        };
        if self.history.len() >= self.history_cap
            && let Some(old) = self.history.pop_front()
        {
            self.compacted_rv = old.rv;
        }
        self.history.push_back(ev.clone());
        self.pending.push(ev);
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn store(&mut self, t: &Target, name: &str, mut obj: Value, kind: EventType) -> Arc<Value> {
        let rv = self.bump();
        meta_mut(&mut obj).insert("resourceVersion".to_string(), json!(rv.to_string()));
        let stored = Stored::new(&obj);
        let json = stored.json.clone();
        let prev = self
            .objects
            .entry(t.def.key())
            .or_default()
            .insert((t.namespace.clone(), name.to_string()), stored);
        self.record(&t.def.key(), &t.namespace, kind, json, prev.map(|p| p.json));
        Arc::new(obj)
    }

    fn remove(&mut self, t: &Target, name: &str, mut obj: Value) -> Value {
        let rv = self.bump();
        meta_mut(&mut obj).insert("resourceVersion".to_string(), json!(rv.to_string()));
        let prev = self
            .objects
            .get_mut(&t.def.key())
            .and_then(|b| b.remove(&(t.namespace.clone(), name.to_string())));
        self.record(
            &t.def.key(),
            &t.namespace,
            EventType::Deleted,
            Arc::from(obj.to_string()),
            prev.map(|p| p.json),
        );
        self.after_removal(t, &obj);
        obj
    }

    fn check_namespace(&self, t: &Target, creating: bool) -> Result<(), SimError> {
        if !t.def.namespaced {
            return Ok(());
        }
        if t.namespace.is_empty() {
            return Err(SimError::BadRequest(format!(
                "the namespace of the object is required for {}",
                t.def.plural
            )));
        }
        let ns_t = self.target("", "v1", "namespaces", "")?;
        match self.lookup(&ns_t, &t.namespace) {
            None => Err(SimError::not_found("", "namespaces", &t.namespace)),
            Some(ns) if creating && !meta_str(&ns, "deletionTimestamp").is_empty() => {
                Err(SimError::Forbidden(format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                    t.def.plural,
                    meta_str(&ns, "name"),
                    t.namespace
                )))
            }
            Some(_) => Ok(()),
        }
    }

    /// Checks the object's apiVersion/kind/namespace against the request and fills them in.
    fn normalize_identity(&self, t: &Target, obj: &mut Value) -> Result<(), SimError> {
        if !obj.is_object() {
            return Err(SimError::BadRequest(
                "the object is not a JSON object".to_string(),
            ));
        }
        let api_version = t.api_version();
        match obj.get("apiVersion").and_then(Value::as_str) {
            Some(v) if v != api_version => {
                return Err(SimError::BadRequest(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )));
            }
            _ => obj["apiVersion"] = json!(api_version),
        }
        match obj.get("kind").and_then(Value::as_str) {
            Some(k) if k != t.def.kind => {
                return Err(SimError::BadRequest(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    t.def.kind
                )));
            }
            _ => obj["kind"] = json!(t.def.kind),
        }
        let ns = meta_str(obj, "namespace").to_string();
        if t.def.namespaced {
            if !ns.is_empty() && ns != t.namespace {
                return Err(SimError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".to_string(),
                ));
            }
            meta_mut(obj).insert("namespace".to_string(), json!(t.namespace));
        } else {
            meta_mut(obj).shift_remove("namespace");
        }
        Ok(())
    }

    pub fn get(&self, t: &Target, name: &str) -> Result<Arc<Value>, SimError> {
        self.lookup(t, name)
            .map(|o| self.present(t, &o))
            .ok_or_else(|| t.not_found(name))
    }

    /// Lists objects (all namespaces when the target namespace is empty).
    pub fn list(
        &self,
        t: &Target,
        labels: &Selector,
        fields: &Selector,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListPage, SimError> {
        let after: Option<(String, String)> = match continue_token {
            Some(c) if !c.is_empty() => {
                let (ns, name) = c
                    .split_once('/')
                    .ok_or_else(|| SimError::BadRequest(format!("invalid continue token {c:?}")))?;
                Some((ns.to_string(), name.to_string()))
            }
            _ => None,
        };
        let mut items = Vec::new();
        let mut continue_out = None;
        if let Some(bucket) = self.bucket(t) {
            for ((ns, name), stored) in bucket {
                if !t.namespace.is_empty() && *ns != t.namespace {
                    continue;
                }
                if after
                    .as_ref()
                    .is_some_and(|a| (ns.as_str(), name.as_str()) <= (a.0.as_str(), a.1.as_str()))
                {
                    continue;
                }
                let obj = Arc::new(stored.value());
                if !labels.matches_labels(&obj) || !fields.matches_fields(&obj) {
                    continue;
                }
                if limit.is_some_and(|l| l > 0 && items.len() >= l) {
                    continue_out = items.last().map(|o: &Arc<Value>| {
                        format!("{}/{}", meta_str(o, "namespace"), meta_str(o, "name"))
                    });
                    break;
                }
                items.push(self.present(t, &obj));
            }
        }
        Ok(ListPage {
            items,
            resource_version: self.rv,
            continue_token: continue_out,
        })
    }

    /// Events after `rv` for the target's resource (and namespace), or 410 Gone when the
    /// history no longer reaches back that far. Objects carry the stored apiVersion.
    pub fn events_since(&self, t: &Target, rv: u64) -> Result<Vec<Event>, SimError> {
        if rv < self.compacted_rv {
            return Err(SimError::Gone {
                requested: rv,
                oldest: self.compacted_rv + 1,
            });
        }
        let key = t.def.key();
        Ok(self
            .history
            .iter()
            .filter(|e| e.rv > rv && e.resource == key)
            .filter(|e| t.namespace.is_empty() || e.namespace == t.namespace)
            .cloned()
            .collect())
    }

    pub fn create(
        &mut self,
        t: &Target,
        mut obj: Value,
        manager: &str,
    ) -> Result<Arc<Value>, SimError> {
        self.normalize_identity(t, &mut obj)?;
        self.check_namespace(t, true)?;
        let mut name = meta_str(&obj, "name").to_string();
        if name.is_empty() {
            let gen_name = meta_str(&obj, "generateName").to_string();
            if !gen_name.is_empty() {
                let uid = self.next_uid();
                name = format!("{gen_name}{}", &uid[uid.len() - 5..]);
                meta_mut(&mut obj).insert("name".to_string(), json!(name));
            }
        }
        if !name.is_empty() && self.lookup(t, &name).is_some() {
            return Err(SimError::AlreadyExists {
                group: t.def.group.clone(),
                resource: t.def.plural.clone(),
                name,
            });
        }
        if t.def.status
            && let Some(m) = obj.as_object_mut()
        {
            m.shift_remove("status");
        }
        let uid = self.next_uid();
        {
            let meta = meta_mut(&mut obj);
            for k in [
                "resourceVersion",
                "deletionTimestamp",
                "managedFields",
                "selfLink",
            ] {
                meta.shift_remove(k);
            }
            meta.insert("uid".to_string(), json!(uid));
            meta.insert("creationTimestamp".to_string(), json!(now()));
            if t.def.generation {
                meta.insert("generation".to_string(), json!(1));
            }
        }
        let mut obj = admit(&t.def, &t.version, obj, &uid)?;
        self.allocate(t, &mut obj, None);
        managed::track_update(
            None,
            &mut obj,
            manager,
            &t.api_version(),
            &now(),
            scope_of(t, false),
            t.lists(),
        );
        tidy_metadata(&mut obj);
        let stored = self.store(t, &name, obj, EventType::Added);
        self.after_write(t, &stored);
        Ok(self.present(t, &self.lookup(t, &name).unwrap_or(stored)))
    }

    /// Server-assigned fields (a Service's clusterIP), kept across updates.
    fn allocate(&mut self, t: &Target, obj: &mut Value, old: Option<&Value>) {
        if t.def.group.is_empty() && t.def.kind == "Service" {
            let ty = obj
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            if ty == "ExternalName" {
                return;
            }
            let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).cloned();
            let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
                return;
            };
            if !spec.contains_key("clusterIP") || spec.get("clusterIP") == Some(&json!("")) {
                let ip = match old_ip {
                    Some(ip) => ip,
                    None => {
                        self.seq += 1;
                        let n = self.seq;
                        json!(format!("10.96.{}.{}", (n / 250) % 250, n % 250 + 2))
                    }
                };
                spec.insert("clusterIP".to_string(), ip.clone());
                spec.insert("clusterIPs".to_string(), json!([ip]));
            } else if !spec.contains_key("clusterIPs") {
                let ip = spec.get("clusterIP").cloned().unwrap_or(Value::Null);
                spec.insert("clusterIPs".to_string(), json!([ip]));
            }
        }
    }

    /// PUT of the main resource or its status.
    pub fn update(
        &mut self,
        t: &Target,
        name: &str,
        mut obj: Value,
        status: bool,
        manager: &str,
    ) -> Result<Arc<Value>, SimError> {
        self.normalize_identity(t, &mut obj)?;
        let body_name = meta_str(&obj, "name");
        if body_name != name {
            return Err(SimError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let old = self.lookup(t, name).ok_or_else(|| t.not_found(name))?;
        let rv = meta_str(&obj, "resourceVersion");
        if !rv.is_empty() && rv != meta_str(&old, "resourceVersion") {
            return Err(self.stale(t, name));
        }
        self.write(t, name, &old, obj, status, Some(manager))
    }

    fn stale(&self, t: &Target, name: &str) -> SimError {
        SimError::Conflict {
            group: t.def.group.clone(),
            resource: t.def.plural.clone(),
            name: name.to_string(),
            why: "the object has been modified; please apply your changes to the latest version and try again".to_string(),
        }
    }

    /// PATCH of the main resource or its status (server-side apply may create).
    pub fn patch(
        &mut self,
        t: &Target,
        name: &str,
        kind: PatchKind,
        body: &[u8],
        status: bool,
        manager: Option<&str>,
    ) -> Result<Arc<Value>, SimError> {
        let body = parse_body(body)?;
        let old = self.lookup(t, name);
        if let PatchKind::Apply { force } = kind {
            let manager = manager.filter(|m| !m.is_empty()).ok_or_else(|| {
                SimError::BadRequest(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".to_string(),
                )
            })?;
            return self.apply(t, name, body, status, manager, force, old);
        }
        let manager = manager.unwrap_or("unknown");
        let old = old.ok_or_else(|| t.not_found(name))?;
        let mut new = (*old).clone();
        match kind {
            PatchKind::Merge => patch::merge_patch(&mut new, &body),
            PatchKind::Strategic => patch::strategic_merge(&mut new, &body, !t.def.custom)?,
            PatchKind::Json => patch::json_patch(&mut new, &body)?,
            PatchKind::Apply { .. } => {}
        }
        let rv = meta_str(&new, "resourceVersion");
        if !rv.is_empty() && rv != meta_str(&old, "resourceVersion") {
            return Err(self.stale(t, name));
        }
        self.write(t, name, &old, new, status, Some(manager))
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        t: &Target,
        name: &str,
        mut body: Value,
        status: bool,
        manager: &str,
        force: bool,
        old: Option<Arc<Value>>,
    ) -> Result<Arc<Value>, SimError> {
        self.normalize_identity(t, &mut body)?;
        let body_name = meta_str(&body, "name");
        if body_name != name {
            return Err(SimError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let scope = scope_of(t, status);
        let merged = managed::apply(
            old.as_deref(),
            &body,
            manager,
            &t.api_version(),
            &now(),
            force,
            scope,
            t.lists(),
        )
        .map_err(|conflicts| SimError::ApplyConflict {
            group: t.def.group.clone(),
            resource: t.def.plural.clone(),
            name: name.to_string(),
            api_version: t.api_version(),
            conflicts,
        })?;
        match old {
            None => {
                if status {
                    return Err(t.not_found(name));
                }
                let managed_fields = merged.pointer("/metadata/managedFields").cloned();
                self.check_namespace(t, true)?;
                let uid = self.next_uid();
                let mut obj = merged;
                if t.def.status
                    && let Some(m) = obj.as_object_mut()
                {
                    m.shift_remove("status");
                }
                {
                    let meta = meta_mut(&mut obj);
                    meta.insert("uid".to_string(), json!(uid));
                    meta.insert("creationTimestamp".to_string(), json!(now()));
                    if t.def.generation {
                        meta.insert("generation".to_string(), json!(1));
                    }
                }
                let mut obj = admit(&t.def, &t.version, obj, &uid)?;
                self.allocate(t, &mut obj, None);
                if let Some(mf) = managed_fields {
                    meta_mut(&mut obj).insert("managedFields".to_string(), mf);
                }
                tidy_metadata(&mut obj);
                let stored = self.store(t, name, obj, EventType::Added);
                self.after_write(t, &stored);
                Ok(self.present(t, &self.lookup(t, name).unwrap_or(stored)))
            }
            Some(old) => self.write(t, name, &old, merged, status, None),
        }
    }

    /// The shared tail of every update: immutable fields kept, status split, admission,
    /// field tracking, no-op detection, generation, finalizer completion.
    fn write(
        &mut self,
        t: &Target,
        name: &str,
        old: &Arc<Value>,
        mut new: Value,
        status: bool,
        manager: Option<&str>,
    ) -> Result<Arc<Value>, SimError> {
        self.normalize_identity(t, &mut new)?;
        let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
        if status {
            // Only status changes through /status; metadata and spec stay as they are.
            let mut merged = (**old).clone();
            match new.get("status") {
                Some(s) => merged["status"] = s.clone(),
                None => {
                    merged.as_object_mut().map(|m| m.shift_remove("status"));
                }
            }
            if let Some(mf) = new.pointer("/metadata/managedFields") {
                meta_mut(&mut merged).insert("managedFields".to_string(), mf.clone());
            }
            new = merged;
        } else if t.def.status {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().map(|m| m.shift_remove("status"));
                }
            }
        }
        {
            let meta = meta_mut(&mut new);
            for k in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
            ] {
                match old_meta.get(k) {
                    Some(v) => {
                        meta.insert(k.to_string(), v.clone());
                    }
                    None => {
                        meta.shift_remove(k);
                    }
                }
            }
        }
        let uid = meta_str(old, "uid").to_string();
        let mut new = admit(&t.def, &t.version, new, &uid)?;
        self.allocate(t, &mut new, Some(old));
        if let Some(m) = manager {
            managed::track_update(
                Some(old),
                &mut new,
                m,
                &t.api_version(),
                &now(),
                scope_of(t, status),
                t.lists(),
            );
        }
        tidy_metadata(&mut new);
        if new == **old {
            return Ok(self.present(t, old));
        }
        if t.def.generation && spec_view(&new) != spec_view(old) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".to_string(), json!(g + 1));
        }
        let deleting = !meta_str(&new, "deletionTimestamp").is_empty();
        if deleting && finalizers(&new).is_empty() {
            let gone = self.remove(t, name, new);
            return Ok(Arc::new(gone));
        }
        let stored = self.store(t, name, new, EventType::Modified);
        self.after_write(t, &stored);
        Ok(self.present(t, &self.lookup(t, name).unwrap_or(stored)))
    }

    /// Side effects of a write: a CRD becomes Established and its kind is served.
    fn after_write(&mut self, t: &Target, obj: &Arc<Value>) {
        if t.def.key() != "apiextensions.k8s.io/customresourcedefinitions" {
            return;
        }
        if !meta_str(obj, "deletionTimestamp").is_empty() {
            return;
        }
        let Some(def) = from_crd(obj) else { return };
        let key = def.key();
        self.defs.retain(|d| d.key() != key);
        self.defs.push(Arc::new(def));
        let established = obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
            });
        let accepted = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
        if established && obj.pointer("/status/acceptedNames") == Some(&accepted) {
            return;
        }
        let ts = now();
        let cond = |ty: &str, reason: &str, msg: &str| json!({"type": ty, "status": "True", "lastTransitionTime": ts, "reason": reason, "message": msg});
        let stored_versions: Vec<Value> = obj
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .filter(|v| v["storage"] == true)
                    .map(|v| v["name"].clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut new = (**obj).clone();
        new["status"] = json!({
            "acceptedNames": accepted,
            "conditions": [
                cond("NamesAccepted", "NoConflicts", "no conflicts found"),
                cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            ],
            "storedVersions": stored_versions,
        });
        let name = meta_str(obj, "name").to_string();
        self.store(t, &name, new, EventType::Modified);
    }

    /// Follow-ups once an object is gone: garbage collection of dependents, foreground owners
    /// and terminating namespaces that may now complete, CRD kinds no longer served.
    fn after_removal(&mut self, t: &Target, obj: &Value) {
        let uid = meta_str(obj, "uid").to_string();
        let ns = meta_str(obj, "namespace").to_string();
        // Background cascade (the dependents of a removed owner are collected).
        for (dt, name) in self.dependents(&uid) {
            let _ = self.delete(&dt, &name, &DeleteOptions::default());
        }
        // Owners waiting in foreground deletion for this dependent.
        if let Some(refs) = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
        {
            let owner_uids: Vec<String> = refs
                .iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                .collect();
            for ou in owner_uids {
                self.finish_foreground(&ou);
            }
        }
        if t.def.key() == "apiextensions.k8s.io/customresourcedefinitions"
            && let Some(def) = from_crd(obj)
        {
            let key = def.key();
            let objs: Vec<(String, String)> = self
                .objects
                .get(&key)
                .map(|b| b.keys().cloned().collect())
                .unwrap_or_default();
            for (ns, name) in objs {
                if let Some(o) = self
                    .objects
                    .get_mut(&key)
                    .and_then(|b| b.remove(&(ns.clone(), name)))
                {
                    let rv = self.bump();
                    let mut o = o.value();
                    meta_mut(&mut o).insert("resourceVersion".to_string(), json!(rv.to_string()));
                    self.record(
                        &key,
                        &ns,
                        EventType::Deleted,
                        Arc::from(o.to_string()),
                        None,
                    );
                }
            }
            self.defs.retain(|d| d.key() != key);
        }
        if !ns.is_empty() {
            self.finish_namespace(&ns);
        }
    }

    /// Objects whose ownerReferences name `uid`.
    fn dependents(&self, uid: &str) -> Vec<(Target, String)> {
        let mut out = Vec::new();
        if uid.is_empty() {
            return out;
        }
        for def in &self.defs {
            let Some(bucket) = self.objects.get(&def.key()) else {
                continue;
            };
            for ((ns, name), stored) in bucket {
                if stored.owners.iter().any(|o| **o == *uid) {
                    out.push((
                        Target {
                            def: def.clone(),
                            version: def.versions[0].clone(),
                            namespace: ns.clone(),
                        },
                        name.clone(),
                    ));
                }
            }
        }
        out
    }

    fn find_by_uid(&self, uid: &str) -> Option<(Target, String, Arc<Value>)> {
        for def in &self.defs {
            let Some(bucket) = self.objects.get(&def.key()) else {
                continue;
            };
            for ((ns, name), stored) in bucket {
                if *stored.uid == *uid {
                    return Some((
                        Target {
                            def: def.clone(),
                            version: def.versions[0].clone(),
                            namespace: ns.clone(),
                        },
                        name.clone(),
                        Arc::new(stored.value()),
                    ));
                }
            }
        }
        None
    }

    fn finish_foreground(&mut self, owner_uid: &str) {
        let found = self.find_by_uid(owner_uid);
        let Some((t, name, owner)) = found else {
            return;
        };
        let mut fins = finalizers(&owner);
        if !fins.iter().any(|f| f == "foregroundDeletion") || !self.dependents(owner_uid).is_empty()
        {
            return;
        }
        fins.retain(|f| f != "foregroundDeletion");
        let mut new = (*owner).clone();
        if fins.is_empty() {
            meta_mut(&mut new).shift_remove("finalizers");
            self.remove(&t, &name, new);
        } else {
            meta_mut(&mut new).insert("finalizers".to_string(), json!(fins));
            self.store(&t, &name, new, EventType::Modified);
        }
    }

    fn finish_namespace(&mut self, ns: &str) {
        let Ok(nt) = self.target("", "v1", "namespaces", "") else {
            return;
        };
        let Some(nso) = self.lookup(&nt, ns) else {
            return;
        };
        if meta_str(&nso, "deletionTimestamp").is_empty() {
            return;
        }
        let any_left = self
            .objects
            .iter()
            .filter(|(k, _)| k.as_str() != "/namespaces")
            .any(|(_, b)| b.keys().any(|(n, _)| n == ns));
        if !any_left {
            let new = (*nso).clone();
            self.remove(&nt, ns, new);
        }
    }

    /// DELETE: finalizers honoured, dependents collected per propagation policy.
    pub fn delete(
        &mut self,
        t: &Target,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted, SimError> {
        let old = self.lookup(t, name).ok_or_else(|| t.not_found(name))?;
        if opts
            .precondition_uid
            .as_deref()
            .is_some_and(|u| u != meta_str(&old, "uid"))
        {
            return Err(SimError::Conflict {
                group: t.def.group.clone(),
                resource: t.def.plural.clone(),
                name: name.to_string(),
                why: format!(
                    "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                    opts.precondition_uid.as_deref().unwrap_or_default(),
                    meta_str(&old, "uid")
                ),
            });
        }
        if opts
            .precondition_rv
            .as_deref()
            .is_some_and(|r| r != meta_str(&old, "resourceVersion"))
        {
            return Err(self.stale(t, name));
        }
        if !meta_str(&old, "deletionTimestamp").is_empty() {
            return Ok(Deleted::Pending(self.present(t, &old).as_ref().clone()));
        }
        let uid = meta_str(&old, "uid").to_string();
        let propagation = opts.propagation.unwrap_or(Propagation::Background);
        if propagation == Propagation::Orphan {
            for (dt, dname) in self.dependents(&uid) {
                if let Some(d) = self.lookup(&dt, &dname) {
                    let mut nd = (*d).clone();
                    if let Some(refs) = nd
                        .pointer_mut("/metadata/ownerReferences")
                        .and_then(Value::as_array_mut)
                    {
                        refs.retain(|r| r["uid"] != uid.as_str());
                        if refs.is_empty() {
                            meta_mut(&mut nd).shift_remove("ownerReferences");
                        }
                    }
                    self.store(&dt, &dname, nd, EventType::Modified);
                }
            }
        }
        let mut fins = finalizers(&old);
        let is_ns = t.def.key() == "/namespaces";
        let foreground =
            propagation == Propagation::Foreground && !self.dependents(&uid).is_empty();
        if foreground {
            fins.push("foregroundDeletion".to_string());
        }
        if fins.is_empty() && !is_ns {
            let gone = self.remove(t, name, (*old).clone());
            return Ok(Deleted::Gone(gone));
        }
        let mut new = (*old).clone();
        {
            let meta = meta_mut(&mut new);
            meta.insert("deletionTimestamp".to_string(), json!(now()));
            meta.insert("deletionGracePeriodSeconds".to_string(), json!(0));
            if !fins.is_empty() {
                meta.insert("finalizers".to_string(), json!(fins));
            }
        }
        if is_ns {
            new["status"]["phase"] = json!("Terminating");
        }
        let stored = self.store(t, name, new, EventType::Modified);
        if is_ns {
            let contents: Vec<(Target, String)> = self
                .defs
                .iter()
                .filter(|d| d.namespaced)
                .flat_map(|d| {
                    self.objects
                        .get(&d.key())
                        .map(|b| {
                            b.keys()
                                .filter(|(n, _)| n == name)
                                .map(|(n, obj_name)| {
                                    (
                                        Target {
                                            def: d.clone(),
                                            version: d.versions[0].clone(),
                                            namespace: n.clone(),
                                        },
                                        obj_name.clone(),
                                    )
                                })
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default()
                })
                .collect();
            for (ct, cname) in contents {
                let _ = self.delete(&ct, &cname, &DeleteOptions::default());
            }
            self.finish_namespace(name);
        } else if foreground {
            for (dt, dname) in self.dependents(&uid) {
                let _ = self.delete(
                    &dt,
                    &dname,
                    &DeleteOptions {
                        propagation: Some(Propagation::Foreground),
                        ..Default::default()
                    },
                );
            }
            self.finish_foreground(&uid);
        }
        match self.lookup(t, name) {
            Some(still) => Ok(Deleted::Pending(self.present(t, &still).as_ref().clone())),
            None => Ok(Deleted::Gone((*stored).clone())),
        }
    }

    /// DELETE of a collection (label/field selected) in the target namespace.
    pub fn delete_collection(
        &mut self,
        t: &Target,
        labels: &Selector,
        fields: &Selector,
        opts: &DeleteOptions,
    ) -> Result<Vec<Arc<Value>>, SimError> {
        let page = self.list(t, labels, fields, None, None)?;
        for o in &page.items {
            let mut tt = t.clone();
            tt.namespace = meta_str(o, "namespace").to_string();
            let _ = self.delete(&tt, meta_str(o, "name"), opts);
        }
        Ok(page.items)
    }
}

fn scope_of(t: &Target, status: bool) -> Scope {
    match (t.def.status, status) {
        (_, true) => Scope::Status,
        (true, false) => Scope::Main,
        (false, false) => Scope::All,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": "a"}}, "data": {"k": "v"}})
    }

    fn deploy(replicas: i64) -> Vec<u8> {
        serde_json::to_vec(&json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}}}))
        .expect("json")
    }

    #[test]
    fn bootstrap_namespaces_exist_and_missing_namespace_is_404() {
        let mut s = Store::default();
        let t = s.target("", "v1", "configmaps", "nope").expect("cm");
        let err = s.create(&t, cm("a"), "m").expect_err("404");
        assert_eq!(err.to_string(), "namespaces \"nope\" not found");
        let t = s.target("", "v1", "configmaps", "kube-system").expect("cm");
        s.create(&t, cm("a"), "m").expect("created");
    }

    #[test]
    fn apply_twice_is_a_noop_and_spec_change_bumps_generation() {
        let mut s = Store::default();
        let t = s.target("apps", "v1", "deployments", "default").expect("t");
        let a = s
            .patch(
                &t,
                "web",
                PatchKind::Apply { force: true },
                &deploy(1),
                false,
                Some("kudo"),
            )
            .expect("apply");
        let b = s
            .patch(
                &t,
                "web",
                PatchKind::Apply { force: true },
                &deploy(1),
                false,
                Some("kudo"),
            )
            .expect("apply");
        assert_eq!(
            a["metadata"]["resourceVersion"],
            b["metadata"]["resourceVersion"]
        );
        assert_eq!(b["metadata"]["generation"], 1);
        let c = s
            .patch(
                &t,
                "web",
                PatchKind::Apply { force: true },
                &deploy(2),
                false,
                Some("kudo"),
            )
            .expect("apply");
        assert_eq!(c["metadata"]["generation"], 2);
        assert_eq!(c["spec"]["replicas"], 2);
        // Status writes do not bump generation and the main resource ignores status.
        let mut st = (*c).clone();
        st["status"] = json!({"replicas": 2});
        let d = s
            .update(&t, "web", st.clone(), true, "ctrl")
            .expect("status");
        assert_eq!(d["metadata"]["generation"], 2);
        assert_eq!(d["status"]["replicas"], 2);
        st["status"] = json!({"replicas": 9});
        st["metadata"]["resourceVersion"] = d["metadata"]["resourceVersion"].clone();
        let e = s.update(&t, "web", st, false, "other").expect("main");
        assert_eq!(e["status"]["replicas"], 2);
    }

    #[test]
    fn stale_update_conflicts() {
        let mut s = Store::default();
        let t = s.target("", "v1", "configmaps", "default").expect("t");
        let a = s.create(&t, cm("a"), "m").expect("create");
        let mut v1 = (*a).clone();
        v1["data"]["k"] = json!("v1");
        s.update(&t, "a", v1.clone(), false, "m").expect("first");
        v1["data"]["k"] = json!("v2");
        let err = s.update(&t, "a", v1, false, "m").expect_err("stale");
        assert_eq!(err.code(), 409);
        assert!(
            err.to_string()
                .contains("configmaps \"a\": the object has been modified"),
            "{err}"
        );
    }

    #[test]
    fn finalizers_hold_deletion_and_owner_gc_cascades() {
        let mut s = Store::default();
        let t = s.target("", "v1", "configmaps", "default").expect("t");
        let owner = s.create(&t, cm("owner"), "m").expect("owner");
        let mut dep = cm("dep");
        dep["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}]);
        s.create(&t, dep, "m").expect("dep");
        let mut fin = cm("fin");
        fin["metadata"]["finalizers"] = json!(["x/y"]);
        s.create(&t, fin, "m").expect("fin");

        assert!(matches!(
            s.delete(&t, "owner", &DeleteOptions::default()),
            Ok(Deleted::Gone(_))
        ));
        assert!(s.get(&t, "dep").is_err(), "dependent collected");
        let pending = s
            .delete(&t, "fin", &DeleteOptions::default())
            .expect("delete");
        let Deleted::Pending(p) = pending else {
            panic!("finalizer must hold")
        };
        assert!(p["metadata"]["deletionTimestamp"].is_string());
        let mut cleared = p.clone();
        cleared["metadata"]["finalizers"] = json!([]);
        s.update(&t, "fin", cleared, false, "m").expect("clear");
        assert!(s.get(&t, "fin").is_err());
    }

    #[test]
    fn terminating_namespace_refuses_new_content_until_its_last_object_goes() {
        let mut s = Store::default();
        let nst = s.target("", "v1", "namespaces", "").expect("ns");
        s.create(
            &nst,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
            "m",
        )
        .expect("ns");
        let t = s.target("", "v1", "configmaps", "team").expect("t");
        let mut held = cm("held");
        held["metadata"]["finalizers"] = json!(["x/y"]);
        s.create(&t, held, "m").expect("held");
        let Deleted::Pending(ns) = s
            .delete(&nst, "team", &DeleteOptions::default())
            .expect("delete")
        else {
            panic!("namespace must wait for its content")
        };
        assert_eq!(ns["status"]["phase"], "Terminating");
        let err = s.create(&t, cm("new"), "m").expect_err("terminating");
        assert_eq!(err.code(), 403);
        assert!(
            err.to_string().contains("because it is being terminated"),
            "{err}"
        );
        let mut release = (*s.get(&t, "held").expect("held")).clone();
        release["metadata"]["finalizers"] = json!([]);
        s.update(&t, "held", release, false, "m").expect("release");
        assert!(
            s.get(&nst, "team").is_err(),
            "namespace gone with its last object"
        );
    }

    #[test]
    fn watch_history_resumes_and_expires() {
        let mut s = Store::new(3);
        let t = s.target("", "v1", "configmaps", "default").expect("t");
        let start = s.resource_version();
        for i in 0..2 {
            s.create(&t, cm(&format!("c{i}")), "m").expect("create");
        }
        let evs = s.events_since(&t, start).expect("resume");
        assert_eq!(evs.len(), 2);
        for i in 2..6 {
            s.create(&t, cm(&format!("c{i}")), "m").expect("create");
        }
        let err = s.events_since(&t, start).expect_err("gone");
        assert_eq!(err.code(), 410);
    }

    #[test]
    fn crd_becomes_established_and_serves_its_kind() {
        let mut s = Store::default();
        let t = s
            .target(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "",
            )
            .expect("t");
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}});
        s.create(&t, crd, "m").expect("crd");
        let got = s.get(&t, "widgets.example.com").expect("get");
        assert_eq!(got["status"]["conditions"][1]["type"], "Established");
        let wt = s
            .target("example.com", "v1", "widgets", "default")
            .expect("served");
        assert!(wt.def.status);
        s.delete(&t, "widgets.example.com", &DeleteOptions::default())
            .expect("delete");
        assert!(s.target("example.com", "v1", "widgets", "default").is_err());
    }
}
