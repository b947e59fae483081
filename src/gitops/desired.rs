//! The desired state of one revision: its framework packages and instance documents,
//! validated whole. Pure: it reads a [`FileTree`] (a Git tree at a commit, or a directory)
//! and the registered clusters, and either yields everything to apply or every error, each
//! naming the revision, the file, the line and the reason.

use crate::util::dns::is_dns_label;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::placement::{ClusterInfo, LabelSelector, targets};
use super::rollout::Strategy;
use crate::api::{Operator, OperatorVersion};
use crate::package::{
    FileTree, Package, PackageError, RenderContext, context_value, params_value, render_plan,
    resolve_parameters, split_documents, verify,
};

pub use crate::package::{FRAMEWORKS_DIR, INSTANCES_DIR};

/// One problem in a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredError {
    pub revision: String,
    pub file: String,
    pub line: Option<u64>,
    pub reason: String,
}

impl fmt::Display for DesiredError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rev = short(&self.revision);
        match self.line {
            Some(l) => write!(f, "{rev}: {}:{l}: {}", self.file, self.reason),
            None => write!(f, "{rev}: {}: {}", self.file, self.reason),
        }
    }
}

/// Every problem of a revision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RevisionErrors(pub Vec<DesiredError>);

impl fmt::Display for RevisionErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} error(s); nothing from this revision is applied:",
            self.0.len()
        )?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// The first 12 characters of a commit id or content hash.
pub fn short(revision: &str) -> &str {
    revision.get(..12).unwrap_or(revision)
}

/// A framework version, converted to the objects installed on clusters.
#[derive(Debug, Clone)]
pub struct Framework {
    pub name: String,
    pub version: String,
    pub operator: Operator,
    pub operator_version: OperatorVersion,
}

/// One instance document, resolved against its framework and the clusters.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredInstance {
    pub file: String,
    pub name: String,
    pub namespace: String,
    pub framework: String,
    pub version: String,
    /// The OperatorVersion object name (`<operator>-<appVersion>-<version>`).
    pub operator_version: String,
    pub parameters: BTreeMap<String, String>,
    pub strategy: Strategy,
    pub canary: Vec<String>,
    /// The rollout model over `targets` (today's forms read as stages too).
    pub rollout: super::stages::RolloutSpec,
    /// Instances whose current spec must be COMPLETE before this one's new spec reaches a
    /// cluster (`spec.dependsOn`).
    pub depends_on: Vec<super::stages::Dependency>,
    /// Target cluster names, in configuration order.
    pub targets: Vec<String>,
    /// Whether drift is repaired (`spec.selfHeal`, default true); applied to the Instance
    /// as the `kudo.dev/self-heal` annotation.
    pub self_heal: bool,
    /// `spec.deletionProtection`: recorded on the Instance (`kudo.dev/deletion-protection`)
    /// so that removing the document later only reports, never deletes.
    pub deletion_protection: bool,
    /// The repository declaring it (set when repositories are combined; empty before).
    pub repository: String,
}

impl DesiredInstance {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone)]
pub struct DesiredState {
    pub revision: String,
    /// (framework, version) → objects.
    pub frameworks: BTreeMap<(String, String), Framework>,
    /// By `namespace/name`.
    pub instances: BTreeMap<String, DesiredInstance>,
}

// ---- the instance document format ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Doc {
    api_version: String,
    kind: String,
    metadata: Meta,
    spec: DocSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocSpec {
    framework: String,
    version: String,
    /// A package repository of `kudo.yaml` (`packageRepositories`) holding the framework,
    /// instead of `frameworks/` in this repository; the control plane fetches it beforehand
    /// (see [`crate::repo::frameworks`]), so here it is only accepted.
    #[serde(default)]
    #[allow(dead_code)]
    repository: Option<String>,
    #[serde(default)]
    parameters: BTreeMap<String, Value>,
    placement: DocPlacement,
    #[serde(default, rename = "selfHeal")]
    self_heal: Option<bool>,
    #[serde(default, rename = "deletionProtection")]
    deletion_protection: Option<bool>,
    #[serde(default, rename = "dependsOn")]
    depends_on: Vec<DocDependency>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocDependency {
    instance: String,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DocPlacement {
    cluster_selector: LabelSelector,
    /// `parallel`, `serial` or a mapping (see [`super::stage_doc`]).
    #[serde(default)]
    rollout: Option<Value>,
    #[serde(default)]
    canary: Vec<String>,
}

/// A view of a subfolder of a tree, so a package loads from `frameworks/<n>/<v>/`.
struct SubTree<'a> {
    inner: &'a dyn FileTree,
    prefix: String,
    paths: Vec<String>,
}

impl FileTree for SubTree<'_> {
    fn describe(&self) -> String {
        self.prefix.trim_end_matches('/').to_string()
    }
    fn paths(&self) -> Result<Vec<String>, PackageError> {
        Ok(self.paths.clone())
    }
    fn read(&self, path: &str) -> Result<Vec<u8>, PackageError> {
        self.inner.read(&format!("{}{path}", self.prefix))
    }
    fn content_id(&self, path: &str) -> Option<String> {
        self.inner.content_id(&format!("{}{path}", self.prefix))
    }
}

/// A problem without its revision, as kept in the cache and replayed for a later revision.
type Problem = (String, Option<u64>, String);

/// What a package or an instance document gave: its value when valid, and its problems.
type Outcome<T> = (Option<T>, Vec<Problem>);

/// Counts of work done and saved, cumulative over the cache's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub packages_parsed: u64,
    pub packages_reused: u64,
    pub instances_rendered: u64,
    pub instances_reused: u64,
}

/// Work kept between revisions of one repository, so a one-file commit costs work in
/// proportion to that file: packages are keyed by the identity of their files (Git blob ids,
/// or content hashes for a directory), instance documents by their text plus everything
/// their outcome depends on (their package's key, the registered clusters). In memory only;
/// what the latest revision did not use is dropped.
#[derive(Debug, Default)]
pub struct DesiredCache {
    packages: HashMap<String, Outcome<Framework>>,
    /// Document key → the framework and version it names (None when it does not parse).
    refs: HashMap<String, Option<(String, String)>>,
    /// Instance file (path and Git blob id) → its documents' start lines and keys, so a file
    /// whose blob is unchanged is neither read nor hashed again: at thousands of files that
    /// reading, not rendering, is what a one-file commit costs. Valid for `files_typed_key`.
    files: HashMap<String, Vec<(u64, String)>>,
    files_typed_key: String,
    instances: HashMap<String, Outcome<DesiredInstance>>,
    /// `spec.repository` references per instance file, for the package-repository overlay
    /// (see [`crate::repo::frameworks::overlay_cached`]), which `kudo serve` runs before
    /// every load.
    pub repository_refs: crate::repo::frameworks::RefsCache,
    stats: CacheStats,
}

impl DesiredCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }
}

/// Keys used by one load, so the cache keeps exactly those.
#[derive(Default)]
struct Used {
    packages: HashSet<String>,
    refs: HashSet<String>,
    files: HashSet<String>,
    instances: HashSet<String>,
}

fn digest<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// A file's content identity: the tree's own id when it has one, else a hash of its bytes.
fn file_id(tree: &dyn FileTree, path: &str) -> Option<String> {
    tree.content_id(path).or_else(|| {
        let bytes = tree.read(path).ok()?;
        Some(format!("sha256:{}", hex::encode(Sha256::digest(&bytes))))
    })
}

/// Just the framework reference of an instance document, to find what its outcome depends on.
#[derive(Deserialize)]
struct RefDoc {
    spec: RefSpec,
}

#[derive(Deserialize)]
struct RefSpec {
    framework: String,
    version: String,
}

fn framework_ref(text: &str) -> Option<(String, String)> {
    serde_saphyr::from_str::<RefDoc>(text)
        .ok()
        .map(|d| (d.spec.framework, d.spec.version))
}

struct Loader<'a> {
    revision: &'a str,
    errors: Vec<DesiredError>,
}

impl Loader<'_> {
    fn error(&mut self, file: &str, line: Option<u64>, reason: impl Into<String>) {
        self.errors.push(DesiredError {
            revision: self.revision.to_string(),
            file: file.to_string(),
            line,
            reason: reason.into(),
        });
    }

    fn problems_since(&self, before: usize) -> Vec<Problem> {
        self.errors[before..]
            .iter()
            .map(|e| (e.file.clone(), e.line, e.reason.clone()))
            .collect()
    }

    fn replay(&mut self, problems: &[Problem]) {
        for (file, line, reason) in problems {
            self.error(file, *line, reason.clone());
        }
    }
}

/// Loads and validates a revision. `tree` is rooted at the repository's configured path.
pub fn load(
    tree: &dyn FileTree,
    revision: &str,
    clusters: &[ClusterInfo],
) -> Result<DesiredState, RevisionErrors> {
    load_cached(tree, revision, clusters, &mut DesiredCache::new())
}

/// [`load`], reusing what `cache` holds from earlier revisions of the same repository.
pub fn load_cached(
    tree: &dyn FileTree,
    revision: &str,
    clusters: &[ClusterInfo],
    cache: &mut DesiredCache,
) -> Result<DesiredState, RevisionErrors> {
    let mut used = Used::default();
    let result = load_with(tree, revision, clusters, cache, &mut used);
    cache.packages.retain(|k, _| used.packages.contains(k));
    cache.refs.retain(|k, _| used.refs.contains(k));
    cache.files.retain(|k, _| used.files.contains(k));
    cache.instances.retain(|k, _| used.instances.contains(k));
    result
}

fn load_with(
    tree: &dyn FileTree,
    revision: &str,
    clusters: &[ClusterInfo],
    cache: &mut DesiredCache,
    used: &mut Used,
) -> Result<DesiredState, RevisionErrors> {
    let mut l = Loader {
        revision,
        errors: Vec::new(),
    };
    let paths = match tree.paths() {
        Ok(p) => p,
        Err(e) => {
            l.error("", None, format!("cannot list files: {e}"));
            return Err(RevisionErrors(l.errors));
        }
    };
    let (frameworks, package_ids) = load_frameworks(&mut l, tree, &paths, cache, used);
    let mut instances = BTreeMap::new();
    let cluster_names: BTreeSet<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    // Targets and canary checks depend on the clusters, in order, and their labels.
    let clusters_key = digest(clusters.iter().flat_map(|c| {
        std::iter::once(c.name.as_str())
            .chain(c.labels.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]))
            .chain(std::iter::once("\u{1}"))
    }));
    let typed = typed_frameworks(&frameworks);
    let typed_key = crate::typed::gitops::targets_key(&typed);
    if cache.files_typed_key != typed_key {
        // Document keys include the typed key; file entries computed under another are stale.
        cache.files.clear();
        cache.files_typed_key = typed_key.clone();
    }
    for path in paths
        .iter()
        .filter(|p| p.starts_with(INSTANCES_DIR) && (p.ends_with(".yaml") || p.ends_with(".yml")))
    {
        // The file's text, read only when something about it is not cached.
        let mut text = FileText::Unread;
        let file_key = tree.content_id(path).map(|id| format!("{path}\0{id}"));
        let docs = match file_key.as_ref().and_then(|k| cache.files.get(k)) {
            Some(docs) => docs.clone(),
            None => {
                let Some(t) = text.get(&mut l, tree, path) else {
                    continue;
                };
                let docs: Vec<(u64, String)> = split_documents(t)
                    .into_iter()
                    .map(|(start, doc)| {
                        let doc_key =
                            digest(["doc", path.as_str(), &start.to_string(), doc, &typed_key]);
                        (start, doc_key)
                    })
                    .collect();
                if let Some(k) = &file_key {
                    cache.files.insert(k.clone(), docs.clone());
                }
                docs
            }
        };
        if let Some(k) = file_key {
            used.files.insert(k);
        }
        for (start, doc_key) in docs {
            let reference = match cache.refs.get(&doc_key) {
                Some(r) => r.clone(),
                None => {
                    let Some(doc) = text.document(&mut l, tree, path, start) else {
                        continue;
                    };
                    let r =
                        framework_ref(doc).or_else(|| crate::typed::gitops::reference(doc, &typed));
                    cache.refs.insert(doc_key.clone(), r.clone());
                    r
                }
            };
            used.refs.insert(doc_key.clone());
            // What else the outcome depends on: the package it names, or which versions of
            // that framework exist when it names a missing one. None: not cacheable.
            let depends = match &reference {
                None => Some(String::new()),
                Some(fv) if frameworks.contains_key(fv) => package_ids.get(fv).cloned(),
                Some((name, _)) => Some(format!(
                    "missing:{}",
                    frameworks
                        .keys()
                        .filter(|(n, _)| n == name)
                        .map(|(_, v)| v.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )),
            };
            let key = depends.map(|d| digest([doc_key.as_str(), &clusters_key, &d]));
            let cached = key.as_ref().and_then(|k| cache.instances.get(k)).cloned();
            let found = match cached {
                Some((inst, problems)) => {
                    cache.stats.instances_reused += 1;
                    l.replay(&problems);
                    inst
                }
                None => {
                    let Some(doc) = text.document(&mut l, tree, path, start) else {
                        continue;
                    };
                    cache.stats.instances_rendered += 1;
                    let before = l.errors.len();
                    let inst = instance(
                        &mut l,
                        path,
                        start,
                        doc,
                        &frameworks,
                        clusters,
                        &cluster_names,
                    );
                    if let Some(k) = &key {
                        let outcome = (inst.clone(), l.problems_since(before));
                        cache.instances.insert(k.clone(), outcome);
                    }
                    inst
                }
            };
            if let Some(k) = key {
                used.instances.insert(k);
            }
            let Some(inst) = found else {
                continue;
            };
            let key = inst.key();
            if let Some(prev) = instances.get(&key) {
                let prev: &DesiredInstance = prev;
                let reason = format!("instance {key} is also defined in {}", prev.file);
                l.error(path, Some(start), reason);
                continue;
            }
            instances.insert(key, inst);
        }
    }
    check_dependencies(&mut l, &instances);
    if l.errors.is_empty() {
        Ok(DesiredState {
            revision: revision.to_string(),
            frameworks,
            instances,
        })
    } else {
        Err(RevisionErrors(l.errors))
    }
}

/// `dependsOn` entries no repository declares: with every other repository loaded (`others`
/// is `None` while one has not), a dependency neither this revision nor another repository's
/// declares is a mistake (a typo, a removed instance) and refuses the revision, naming the
/// entry's file and line. While a repository has not loaded yet it may be that one's: the
/// rollout blocks instead, saying so.
pub fn unknown_dependencies(
    state: &DesiredState,
    others: Option<&[&DesiredState]>,
) -> Vec<DesiredError> {
    let Some(others) = others else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    for inst in state.instances.values() {
        for dep in &inst.depends_on {
            let declared = state.instances.contains_key(&dep.instance)
                || others
                    .iter()
                    .any(|o| o.instances.contains_key(&dep.instance));
            if !declared {
                errors.push(DesiredError {
                    revision: state.revision.clone(),
                    file: inst.file.clone(),
                    line: dep.line,
                    reason: format!(
                        "dependsOn {}: no instance of that name in this revision or any other repository",
                        dep.instance
                    ),
                });
            }
        }
    }
    errors
}

/// `dependsOn` within one revision: an instance depending on itself or on a cycle back to
/// itself is refused at each entry of the cycle. A dependency this revision does not declare
/// may belong to another repository: it is not refused here, and blocks until declared.
fn check_dependencies(l: &mut Loader<'_>, instances: &BTreeMap<String, DesiredInstance>) {
    for (key, inst) in instances {
        for dep in &inst.depends_on {
            // Depth-first from the dependency back to `key`, within this revision.
            let mut path = vec![key.clone(), dep.instance.clone()];
            let mut seen = BTreeSet::new();
            if reaches(instances, &dep.instance, key, &mut seen, &mut path) {
                l.error(
                    &inst.file,
                    dep.line,
                    format!("dependsOn forms a cycle: {}", path.join(" → ")),
                );
            }
        }
    }
}

fn reaches(
    instances: &BTreeMap<String, DesiredInstance>,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
    path: &mut Vec<String>,
) -> bool {
    if from == to {
        return true;
    }
    if !seen.insert(from.to_string()) {
        return false;
    }
    let Some(inst) = instances.get(from) else {
        return false;
    };
    for dep in &inst.depends_on {
        path.push(dep.instance.clone());
        if reaches(instances, &dep.instance, to, seen, path) {
            return true;
        }
        path.pop();
    }
    false
}

/// An instance file's text, read on first need; a failed read is reported once.
enum FileText {
    Unread,
    Read(String),
    Failed,
}

impl FileText {
    fn get(&mut self, l: &mut Loader<'_>, tree: &dyn FileTree, path: &str) -> Option<&str> {
        if let FileText::Unread = self {
            *self = match tree.read(path).map(String::from_utf8) {
                Ok(Ok(t)) => FileText::Read(t),
                Ok(Err(_)) => {
                    l.error(path, None, "not valid UTF-8");
                    FileText::Failed
                }
                Err(e) => {
                    l.error(path, None, e.to_string());
                    FileText::Failed
                }
            };
        }
        match self {
            FileText::Read(t) => Some(t.as_str()),
            _ => None,
        }
    }

    /// The document starting at line `start`.
    fn document(
        &mut self,
        l: &mut Loader<'_>,
        tree: &dyn FileTree,
        path: &str,
        start: u64,
    ) -> Option<&str> {
        let text = self.get(l, tree, path)?;
        let found = split_documents(text)
            .into_iter()
            .find(|(s, _)| *s == start)
            .map(|(_, doc)| doc);
        if found.is_none() {
            // The cache said the file (by blob id) has a document here; it must.
            l.error(
                path,
                Some(start),
                "internal: cached document not found in the file",
            );
        }
        found
    }
}

/// The frameworks as the typed-document reading sees them.
fn typed_frameworks(
    frameworks: &BTreeMap<(String, String), Framework>,
) -> Vec<crate::typed::gitops::TypedFramework<'_>> {
    frameworks
        .iter()
        .map(
            |((name, version), f)| crate::typed::gitops::TypedFramework {
                name,
                version,
                operator: &f.operator,
                spec: &f.operator_version.spec,
            },
        )
        .collect()
}

/// Frameworks by (name, version), and the cache key of each cacheable package.
type Frameworks = (
    BTreeMap<(String, String), Framework>,
    BTreeMap<(String, String), String>,
);

fn load_frameworks(
    l: &mut Loader<'_>,
    tree: &dyn FileTree,
    paths: &[String],
    cache: &mut DesiredCache,
    used: &mut Used,
) -> Frameworks {
    // frameworks/<name>/<version>/<file...>
    let mut dirs: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for p in paths {
        let Some(rest) = p.strip_prefix(FRAMEWORKS_DIR) else {
            continue;
        };
        let mut parts = rest.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(v), Some(file)) => dirs
                .entry((n.to_string(), v.to_string()))
                .or_default()
                .push(file.to_string()),
            _ => l.error(
                p,
                None,
                "frameworks/ holds <name>/<version>/ package folders only",
            ),
        }
    }
    let mut out = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for ((name, version), files) in dirs {
        let prefix = format!("{FRAMEWORKS_DIR}{name}/{version}/");
        let sub = SubTree {
            inner: tree,
            prefix: prefix.clone(),
            paths: files,
        };
        let file_ids: Option<Vec<String>> = sub.paths.iter().map(|p| file_id(&sub, p)).collect();
        let key = file_ids.map(|fids| {
            let parts = sub.paths.iter().zip(&fids).flat_map(|(p, i)| [p, i]);
            digest(
                [name.as_str(), version.as_str()]
                    .into_iter()
                    .chain(parts.map(String::as_str)),
            )
        });
        let fv = (name.clone(), version.clone());
        let framework = match key.as_ref().and_then(|k| cache.packages.get(k)).cloned() {
            Some((framework, problems)) => {
                cache.stats.packages_reused += 1;
                l.replay(&problems);
                framework
            }
            None => {
                cache.stats.packages_parsed += 1;
                let before = l.errors.len();
                let framework = load_package(l, &sub, &prefix, name, version);
                if let Some(k) = &key {
                    let outcome = (framework.clone(), l.problems_since(before));
                    cache.packages.insert(k.clone(), outcome);
                }
                framework
            }
        };
        if let Some(k) = key {
            used.packages.insert(k.clone());
            ids.insert(fv.clone(), k);
        }
        if let Some(f) = framework {
            out.insert(fv, f);
        }
    }
    (out, ids)
}

/// Parses and verifies one package folder.
fn load_package(
    l: &mut Loader<'_>,
    sub: &SubTree<'_>,
    prefix: &str,
    name: String,
    version: String,
) -> Option<Framework> {
    let package = match Package::load(sub) {
        Ok(p) => p,
        Err(e) => {
            let (file, line, reason) = package_error_location(prefix, &e);
            l.error(&file, line, reason);
            return None;
        }
    };
    let operator_file = format!("{prefix}operator.yaml");
    if package.operator.name != name {
        l.error(
            &operator_file,
            line_of_key(sub, "operator.yaml", "name"),
            format!(
                "name is {:?} but the package lives in frameworks/{name}/",
                package.operator.name
            ),
        );
    }
    if package.operator.operator_version != version {
        l.error(
            &operator_file,
            line_of_key(sub, "operator.yaml", "operatorVersion"),
            format!(
                "operatorVersion is {:?} but the package lives in frameworks/{name}/{version}/",
                package.operator.operator_version
            ),
        );
    }
    let report = verify(&package);
    for e in &report.errors {
        l.error(prefix, None, format!("package verify: {e}"));
    }
    match package.to_resources() {
        Ok(r) if report.errors.is_empty() => Some(Framework {
            name,
            version,
            operator: r.operator,
            operator_version: r.operator_version,
        }),
        Ok(_) => None,
        Err(e) => {
            let (file, line, reason) = package_error_location(prefix, &e);
            l.error(&file, line, reason);
            None
        }
    }
}

fn package_error_location(prefix: &str, e: &PackageError) -> (String, Option<u64>, String) {
    match e {
        PackageError::Yaml {
            file,
            line,
            message,
            ..
        } => (format!("{prefix}{file}"), Some(*line), message.clone()),
        PackageError::Invalid { file, message, .. } => {
            (format!("{prefix}{file}"), None, message.clone())
        }
        other => (prefix.to_string(), None, other.to_string()),
    }
}

/// The line of the first `key:` in a file (1-based), for messages about a value.
fn line_of_key(tree: &dyn FileTree, file: &str, key: &str) -> Option<u64> {
    let text = String::from_utf8(tree.read(file).ok()?).ok()?;
    key_line(&text, key)
}

fn key_line(text: &str, key: &str) -> Option<u64> {
    let needle = format!("{key}:");
    text.lines()
        .position(|l| {
            l.match_indices(&needle).any(|(i, _)| {
                l[..i]
                    .chars()
                    .next_back()
                    .is_none_or(|c| c.is_whitespace() || matches!(c, '{' | ',' | '-'))
            })
        })
        .map(|i| i as u64 + 1)
}

/// The line of `key` inside `placement.rollout` (inside its stage `stage`, counted by the
/// stages' `name:` keys, when given).
fn rollout_line(text: &str, stage: Option<usize>, key: &str) -> Option<u64> {
    let from = |line: u64, key: &str| -> Option<u64> {
        let skip = line.saturating_sub(1) as usize;
        let rest = text.lines().skip(skip).collect::<Vec<_>>().join("\n");
        key_line(&rest, key).map(|n| n + skip as u64)
    };
    let mut line = from(1, "rollout")?;
    if let Some(i) = stage {
        line = from(line, "stages")?;
        for _ in 0..=i {
            line = from(line + 1, "name")?;
        }
        if key == "name" {
            return Some(line);
        }
    }
    from(line, key)
}

#[allow(clippy::too_many_arguments)]
fn instance(
    l: &mut Loader<'_>,
    file: &str,
    start: u64,
    text: &str,
    frameworks: &BTreeMap<(String, String), Framework>,
    clusters: &[ClusterInfo],
    cluster_names: &BTreeSet<&str>,
) -> Option<DesiredInstance> {
    let at = |key: &str| key_line(text, key).map(|n| n + start - 1);
    // A typed document (`kind: ZooKeeper`) reads as the generic document it stands for.
    let doc: Doc = match crate::typed::gitops::read(text, &typed_frameworks(frameworks)) {
        Some(Ok(generic)) => match serde_json::from_value(generic) {
            Ok(d) => d,
            Err(e) => {
                l.error(file, Some(start), e.to_string());
                return None;
            }
        },
        Some(Err((key, reason))) => {
            l.error(file, at(&key).or(Some(start)), reason);
            return None;
        }
        None => match serde_saphyr::from_str(text) {
            Ok(d) => d,
            Err(e) => {
                let line = e
                    .location()
                    .map(|loc| loc.line() + start - 1)
                    .or(Some(start));
                l.error(file, line, crate::package::yaml_message_public(&e));
                return None;
            }
        },
    };
    let before = l.errors.len();
    if doc.api_version != crate::api::API_VERSION {
        l.error(
            file,
            at("apiVersion"),
            format!(
                "apiVersion is {:?}, expected {}",
                doc.api_version,
                crate::api::API_VERSION
            ),
        );
    }
    if doc.kind != "Instance" {
        l.error(
            file,
            at("kind"),
            format!("kind is {:?}, expected Instance", doc.kind),
        );
    }
    let namespace = doc
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    for (what, value) in [("name", &doc.metadata.name), ("namespace", &namespace)] {
        if !is_dns_label(value) {
            l.error(
                file,
                at(what),
                format!("metadata.{what} {value:?} is not a valid DNS label"),
            );
        }
    }
    for p in doc.spec.placement.cluster_selector.problems() {
        l.error(
            file,
            at("clusterSelector"),
            format!("placement.clusterSelector.{p}"),
        );
    }
    for c in &doc.spec.placement.canary {
        if !cluster_names.contains(c.as_str()) {
            l.error(
                file,
                at("canary"),
                format!("placement.canary names {c:?}, which is not a registered cluster"),
            );
        }
    }
    let targets = targets(&doc.spec.placement.cluster_selector, clusters);
    let mut depends_on = Vec::new();
    let dep_line = |i: usize| -> Option<u64> {
        let first = key_line(text, "dependsOn")?;
        let rest: Vec<&str> = text.lines().skip(first as usize).collect();
        let n = rest
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains("instance:"))
            .nth(i)
            .map(|(n, _)| n as u64 + 1)?;
        Some(first + n + start - 1)
    };
    for (i, d) in doc.spec.depends_on.iter().enumerate() {
        let line = dep_line(i).or(at("dependsOn"));
        let valid = d
            .instance
            .split_once('/')
            .is_some_and(|(ns, name)| is_dns_label(ns) && is_dns_label(name));
        if !valid {
            l.error(
                file,
                line,
                format!(
                    "dependsOn[{i}].instance {:?} is not NAMESPACE/NAME",
                    d.instance
                ),
            );
        }
        let scope = match d.scope.as_deref() {
            None | Some("sameCluster") => Some(super::stages::Scope::SameCluster),
            Some("everywhere") => Some(super::stages::Scope::Everywhere),
            Some(other) => {
                l.error(
                    file,
                    line,
                    format!("dependsOn[{i}].scope {other:?} is not sameCluster or everywhere"),
                );
                None
            }
        };
        if let (true, Some(scope)) = (valid, scope) {
            depends_on.push(super::stages::Dependency {
                instance: d.instance.clone(),
                scope,
                line,
            });
        }
    }
    let mut parameters = BTreeMap::new();
    for (k, v) in &doc.spec.parameters {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            Value::Bool(_) | Value::Number(_) => v.to_string(),
            other => serde_json::to_string(other).unwrap_or_default(),
        };
        parameters.insert(k.clone(), s);
    }
    let key = (doc.spec.framework.clone(), doc.spec.version.clone());
    let Some(fw) = frameworks.get(&key) else {
        let known: Vec<String> = frameworks
            .keys()
            .filter(|(n, _)| n == &doc.spec.framework)
            .map(|(_, v)| v.clone())
            .collect();
        let reason = if known.is_empty() {
            format!("framework {:?} is not in frameworks/", doc.spec.framework)
        } else {
            format!(
                "framework {} has no version {:?} (available: {})",
                doc.spec.framework,
                doc.spec.version,
                known.join(", ")
            )
        };
        l.error(file, at("version").or(at("framework")), reason);
        return None;
    };
    let spec = &fw.operator_version.spec;
    let plans: BTreeSet<String> = spec.plans.keys().cloned().collect();
    let rollout = match super::stage_doc::read(
        doc.spec.placement.rollout.as_ref(),
        &super::stage_doc::Context {
            targets: &targets,
            canary: &doc.spec.placement.canary,
            clusters,
            plans: &plans,
        },
    ) {
        Ok(read) => Some(read),
        Err(problems) => {
            for p in problems {
                let line = rollout_line(text, p.stage, &p.key).map(|n| n + start - 1);
                l.error(file, line.or(at("rollout")), p.reason);
            }
            None
        }
    };
    let resolved = match resolve_parameters(&spec.parameters, &parameters, None) {
        Ok(r) => r,
        Err(errors) => {
            for e in errors.0 {
                l.error(
                    file,
                    at(&e.parameter).or(at("parameters")),
                    format!("parameter {:?} {}", e.parameter, e.reason),
                );
            }
            return None;
        }
    };
    let params = match params_value(&spec.parameters, &resolved) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors.0 {
                l.error(
                    file,
                    at(&e.parameter),
                    format!("parameter {:?} {}", e.parameter, e.reason),
                );
            }
            return None;
        }
    };
    // Render every plan: a template error must surface now, not on a cluster mid-rollout.
    let base = RenderContext {
        instance_name: doc.metadata.name.clone(),
        namespace: namespace.clone(),
        operator_name: fw.name.clone(),
        operator_version: fw.version.clone(),
        app_version: spec.app_version.clone(),
        ..Default::default()
    };
    for plan in spec.plans.keys() {
        let data_for = |phase: &str, step: &str| {
            let ctx = RenderContext {
                plan_name: plan.clone(),
                phase_name: phase.to_string(),
                step_name: step.to_string(),
                ..base.clone()
            };
            context_value(&ctx, params.clone())
        };
        if let Err(e) = render_plan(spec, plan, None, None, &data_for) {
            l.error(
                file,
                Some(start),
                format!("rendering plan {plan} of {} {}: {e}", fw.name, fw.version),
            );
        }
    }
    if l.errors.len() > before {
        return None;
    }
    let (rollout, strategy) = rollout?;
    Some(DesiredInstance {
        file: file.to_string(),
        name: doc.metadata.name,
        namespace,
        framework: fw.name.clone(),
        version: fw.version.clone(),
        operator_version: fw
            .operator_version
            .metadata
            .name
            .clone()
            .unwrap_or_default(),
        parameters,
        strategy,
        canary: doc.spec.placement.canary,
        rollout,
        depends_on,
        targets,
        self_heal: doc.spec.self_heal.unwrap_or(true),
        deletion_protection: doc.spec.deletion_protection.unwrap_or(false),
        repository: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitops::rollout::Count;
    use crate::package::{DirTree, MemTree};

    fn clusters() -> Vec<ClusterInfo> {
        ["dev", "staging", "prod"]
            .iter()
            .map(|e| ClusterInfo {
                name: e.to_string(),
                labels: [("env".to_string(), e.to_string())].into(),
            })
            .collect()
    }

    /// The example repository with some files replaced or added.
    fn example_with(changes: &[(&str, Option<&str>)]) -> MemTree {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("repos-example");
        let dir = DirTree::new(&root);
        let mut files = BTreeMap::new();
        for p in dir.paths().expect("list") {
            files.insert(p.clone(), dir.read(&p).expect("read"));
        }
        for (path, content) in changes {
            match content {
                Some(c) => files.insert(path.to_string(), c.as_bytes().to_vec()),
                None => files.remove(*path),
            };
        }
        MemTree::new("repo", files)
    }

    const REV: &str = "0123456789abcdef0123456789abcdef01234567";

    fn errors(tree: &MemTree) -> String {
        load(tree, REV, &clusters())
            .expect_err("revision must be refused")
            .to_string()
    }

    #[test]
    fn example_repository_is_valid() {
        let state = load(&example_with(&[]), REV, &clusters()).expect("valid");
        assert_eq!(state.frameworks.len(), 4);
        let relay = &state.instances["messaging/edge-relay"];
        assert_eq!(relay.targets, ["dev", "staging", "prod"]);
        assert_eq!(relay.strategy, Strategy::Parallel);
        assert_eq!(relay.operator_version, "relay-2.0.0");
        assert_eq!(relay.parameters["WORKERS"], "2");
        assert!(relay.parameters["ROUTES"].contains("audit"));
        let cache = &state.instances["web/session-cache"];
        assert_eq!(cache.targets, ["dev", "staging"]);
        assert_eq!(cache.strategy, Strategy::Serial);
        assert_eq!(cache.parameters["METRICS_ENABLED"], "true");
        let ledger = &state.instances["finance/orders-ledger"];
        assert_eq!(ledger.targets, ["staging", "prod"]);
        let stages: Vec<(&str, &[String])> = ledger
            .rollout
            .stages
            .iter()
            .map(|s| (s.name.as_str(), s.clusters.as_slice()))
            .collect();
        assert_eq!(stages[0], ("staging", &["staging".to_string()][..]));
        assert_eq!(stages[1], ("prod", &["prod".to_string()][..]));
        assert_eq!(
            ledger.rollout.stages[1].strategy,
            Strategy::MaxUnavailable(Count::Percent(50))
        );
        assert_eq!(
            ledger.rollout.stages[1].gates,
            [crate::gitops::stages::Gate::Approval]
        );
        assert_eq!(state.instances["web/session-cache-prod"].targets, ["prod"]);
    }

    #[test]
    fn self_heal_defaults_to_true_and_can_be_turned_off() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("repos-example/instances/dev/session-cache.yaml");
        let doc = std::fs::read_to_string(path).expect("instance");
        let state = load(&example_with(&[]), REV, &clusters()).expect("valid");
        assert!(state.instances["web/session-cache"].self_heal);
        let off = format!("{doc}  selfHeal: false\n");
        let tree = example_with(&[("instances/dev/session-cache.yaml", Some(&off))]);
        let state = load(&tree, REV, &clusters()).expect("valid");
        assert!(!state.instances["web/session-cache"].self_heal);
        let bad = format!("{doc}  selfHeal: sometimes\n");
        let tree = example_with(&[("instances/dev/session-cache.yaml", Some(&bad))]);
        let message = errors(&tree);
        assert!(
            message.contains("instances/dev/session-cache.yaml"),
            "{message}"
        );
    }

    #[test]
    fn unchanged_packages_and_instances_are_reused() {
        let relay_doc = |workers: u32| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("repos-example/instances/all/edge-relay.yaml");
            std::fs::read_to_string(path)
                .expect("read")
                .replace("WORKERS: 2", &format!("WORKERS: {workers}"))
        };
        let mut cache = DesiredCache::new();
        let a = example_with(&[]);
        load_cached(&a, REV, &clusters(), &mut cache).expect("A valid");
        let s0 = cache.stats();
        assert_eq!((s0.packages_parsed, s0.instances_rendered), (4, 4));

        // B changes one instance file: that instance alone is rendered again.
        let doc = relay_doc(3);
        let b = example_with(&[("instances/all/edge-relay.yaml", Some(&doc))]);
        let state = load_cached(&b, "b", &clusters(), &mut cache).expect("B valid");
        assert_eq!(
            state.instances["messaging/edge-relay"].parameters["WORKERS"],
            "3"
        );
        let s1 = cache.stats();
        assert_eq!(s1.packages_parsed - s0.packages_parsed, 0);
        assert_eq!(s1.packages_reused - s0.packages_reused, 4);
        assert_eq!(s1.instances_rendered - s0.instances_rendered, 1);
        assert_eq!(s1.instances_reused - s0.instances_reused, 3);

        // C changes one file of the relay package: that package is parsed again, and the
        // one instance using it is rendered again.
        let routes = "frameworks/relay/2.0.0/templates/routes.yaml";
        let mut text = String::from_utf8(a.read(routes).expect("read")).expect("utf8");
        text.insert_str(0, "# changed\n");
        let c = example_with(&[
            ("instances/all/edge-relay.yaml", Some(&doc)),
            (routes, Some(&text)),
        ]);
        load_cached(&c, "c", &clusters(), &mut cache).expect("C valid");
        let s2 = cache.stats();
        assert_eq!(s2.packages_parsed - s1.packages_parsed, 1);
        assert_eq!(s2.instances_rendered - s1.instances_rendered, 1);

        // A cached error is reported again, naming the new revision.
        let bad = doc.replace("WORKERS: 3", "NOPE: 1");
        let d = example_with(&[("instances/all/edge-relay.yaml", Some(&bad))]);
        let first = load_cached(&d, "d1d1d1d1d1d1", &clusters(), &mut cache).expect_err("bad");
        let again = load_cached(&d, "d2d2d2d2d2d2", &clusters(), &mut cache).expect_err("bad");
        assert!(
            first
                .to_string()
                .contains("d1d1d1d1d1d1: instances/all/edge-relay.yaml"),
            "{first}"
        );
        assert!(
            again
                .to_string()
                .contains("d2d2d2d2d2d2: instances/all/edge-relay.yaml"),
            "{again}"
        );
        assert_eq!(cache.stats().instances_rendered - s2.instances_rendered, 1);

        // A different set of clusters changes targets: every instance is rendered again.
        let s3 = cache.stats();
        let two = &clusters()[..2];
        let state = load_cached(&a, REV, two, &mut cache).expect("valid on two clusters");
        assert_eq!(
            state.instances["messaging/edge-relay"].targets,
            ["dev", "staging"]
        );
        assert_eq!(cache.stats().instances_rendered - s3.instances_rendered, 4);
    }

    /// A tree with Git-like content ids that counts reads, per path.
    struct CountingTree {
        inner: MemTree,
        reads: std::cell::RefCell<BTreeMap<String, u32>>,
    }

    impl FileTree for CountingTree {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn paths(&self) -> Result<Vec<String>, PackageError> {
            self.inner.paths()
        }
        fn read(&self, path: &str) -> Result<Vec<u8>, PackageError> {
            *self.reads.borrow_mut().entry(path.to_string()).or_default() += 1;
            self.inner.read(path)
        }
        fn content_id(&self, path: &str) -> Option<String> {
            let bytes = self.inner.read(path).ok()?;
            Some(format!("blob:{}", hex::encode(Sha256::digest(&bytes))))
        }
    }

    #[test]
    fn unchanged_instance_files_with_content_ids_are_not_read() {
        let counting = |tree: MemTree| CountingTree {
            inner: tree,
            reads: Default::default(),
        };
        let mut cache = DesiredCache::new();
        let a = counting(example_with(&[]));
        load_cached(&a, REV, &clusters(), &mut cache).expect("A valid");
        assert_eq!(a.reads.borrow()["instances/all/edge-relay.yaml"], 1);

        let path = "instances/all/edge-relay.yaml";
        let doc = String::from_utf8(a.inner.read(path).expect("read"))
            .expect("utf8")
            .replace("WORKERS: 2", "WORKERS: 5");
        let b = counting(example_with(&[(path, Some(&doc))]));
        let state = load_cached(&b, "b", &clusters(), &mut cache).expect("B valid");
        assert_eq!(
            state.instances["messaging/edge-relay"].parameters["WORKERS"],
            "5"
        );
        let reads = b.reads.borrow();
        let instance_reads: Vec<_> = reads
            .iter()
            .filter(|(p, _)| p.starts_with(INSTANCES_DIR))
            .collect();
        assert_eq!(instance_reads, [(&path.to_string(), &1)], "{reads:?}");
        assert_eq!(state.instances.len(), 4);

        // A package change re-renders its instance, which reads that file again.
        let routes = "frameworks/relay/2.0.0/templates/routes.yaml";
        let text = format!(
            "# changed\n{}",
            String::from_utf8(a.inner.read(routes).expect("read")).expect("utf8")
        );
        let c = counting(example_with(&[(path, Some(&doc)), (routes, Some(&text))]));
        let before = cache.stats();
        load_cached(&c, "c", &clusters(), &mut cache).expect("C valid");
        assert_eq!(
            cache.stats().instances_rendered - before.instances_rendered,
            1
        );
        assert_eq!(c.reads.borrow().get(path), Some(&1));
        assert_eq!(
            c.reads.borrow().get("instances/dev/session-cache.yaml"),
            None
        );
    }

    /// Not a timing test: prints what the cache saves on the example repository.
    #[test]
    fn example_repository_load_time_with_cache() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("repos-example");
        let dir = DirTree::new(&root);
        let mut cache = DesiredCache::new();
        let t = std::time::Instant::now();
        load_cached(&dir, REV, &clusters(), &mut cache).expect("valid");
        let cold = t.elapsed();
        let t = std::time::Instant::now();
        load_cached(&dir, REV, &clusters(), &mut cache).expect("valid");
        let warm = t.elapsed();
        let s = cache.stats();
        assert_eq!((s.packages_reused, s.instances_reused), (4, 4));
        println!("repos-example load: cold {cold:?}, cached {warm:?} ({s:?})");
    }

    #[test]
    fn invalid_yaml_names_file_and_line() {
        let e = errors(&example_with(&[(
            "instances/bad.yaml",
            Some("apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: x\n spec: [\n"),
        )]));
        assert!(e.contains("0123456789ab: instances/bad.yaml:"), "{e}");
    }

    #[test]
    fn unknown_framework_version_is_named() {
        let doc = "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: x\nspec:\n  framework: webcache\n  version: 9.9.9\n  placement:\n    clusterSelector: {}\n";
        let e = errors(&example_with(&[("instances/x.yaml", Some(doc))]));
        assert!(
            e.contains("instances/x.yaml:7: framework webcache has no version \"9.9.9\" (available: 1.0.0, 1.1.0)"),
            "{e}"
        );
        let doc = doc.replace("framework: webcache", "framework: nosuch");
        let e = errors(&example_with(&[("instances/x.yaml", Some(&doc))]));
        assert!(
            e.contains("framework \"nosuch\" is not in frameworks/"),
            "{e}"
        );
    }

    #[test]
    fn bad_parameter_is_named_with_its_line() {
        let doc = "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: x\nspec:\n  framework: webcache\n  version: 1.0.0\n  parameters:\n    EVICTION_POLICY: random\n    NOPE: 1\n  placement:\n    clusterSelector: {}\n";
        let e = errors(&example_with(&[("instances/x.yaml", Some(doc))]));
        assert!(
            e.contains("instances/x.yaml:9: parameter \"EVICTION_POLICY\" has an invalid value"),
            "{e}"
        );
        assert!(
            e.contains("instances/x.yaml:10: parameter \"NOPE\" is not declared"),
            "{e}"
        );
    }

    #[test]
    fn template_error_is_named() {
        let broken = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Name }}-routes\ndata:\n  x: {{ .Params.NOPE.deeper }}\n";
        let e = errors(&example_with(&[(
            "frameworks/relay/2.0.0/templates/routes.yaml",
            Some(broken),
        )]));
        assert!(e.contains("frameworks/relay/2.0.0"), "{e}");
        let e2 = errors(&example_with(&[(
            "frameworks/relay/2.0.0/templates/routes.yaml",
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Name }\n"),
        )]));
        assert!(e2.contains("frameworks/relay/2.0.0"), "{e2}");
    }

    #[test]
    fn placement_problems_and_duplicates_are_named() {
        let doc = "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: edge-relay\n  namespace: messaging\nspec:\n  framework: relay\n  version: 2.0.0\n  placement:\n    clusterSelector:\n      matchExpressions: [{key: env, operator: Like, values: [x]}]\n    rollout: {maxUnavailable: \"0%\"}\n    canary: [moon]\n";
        let e = errors(&example_with(&[("instances/zz.yaml", Some(doc))]));
        assert!(e.contains("instances/zz.yaml:10: placement.clusterSelector.matchExpressions[0]: unknown operator \"Like\""), "{e}");
        assert!(
            e.contains("instances/zz.yaml:12: placement.rollout.maxUnavailable"),
            "{e}"
        );
        assert!(
            e.contains("instances/zz.yaml:13: placement.canary names \"moon\""),
            "{e}"
        );
        let ok = doc
            .replace("operator: Like", "operator: In")
            .replace("\"0%\"", "1")
            .replace("[moon]", "[]");
        let e = errors(&example_with(&[("instances/zz.yaml", Some(&ok))]));
        assert!(
            e.contains(
                "instance messaging/edge-relay is also defined in instances/all/edge-relay.yaml"
            ),
            "{e}"
        );
    }

    const STAGED: &str = "apiVersion: kudo.dev/v1beta1
kind: Instance
metadata:
  name: staged
  namespace: messaging
spec:
  framework: relay
  version: 2.0.0
  placement:
    clusterSelector: {}
    rollout:
      maxFailures: 1
      progressDeadline: 30m
      stages:
        - name: canary
          clusters: [staging]
          gates:
            - bake: 10m
        - name: prod
          clusterSelector: {matchLabels: {env: prod}}
          maxUnavailable: 25%
          gates:
            - approval: {}
";

    #[test]
    fn a_staged_rollout_resolves_its_stages_over_the_targets() {
        let tree = example_with(&[("instances/zz.yaml", Some(STAGED))]);
        let d = load(&tree, REV, &clusters()).expect("loads");
        let r = &d.instances["messaging/staged"].rollout;
        let stages: Vec<(&str, Vec<&str>)> = r
            .stages
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.clusters.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            stages,
            [
                ("canary", vec!["staging"]),
                ("prod", vec!["prod"]),
                ("remaining", vec!["dev"])
            ]
        );
        assert_eq!(r.max_failures, 1);
        assert_eq!(
            r.progress_deadline,
            Some(std::time::Duration::from_secs(1800))
        );
        assert_eq!(
            r.stages[0].gates,
            [crate::gitops::stages::Gate::Bake(
                std::time::Duration::from_secs(600)
            )]
        );
        assert_eq!(r.stages[1].gates, [crate::gitops::stages::Gate::Approval]);
        assert_eq!(
            r.stages[1].strategy,
            Strategy::MaxUnavailable(Count::Percent(25))
        );
    }

    #[test]
    fn staged_rollout_problems_are_named_with_their_lines() {
        let bad = |from: &str, to: &str| {
            assert!(STAGED.contains(from), "{from}");
            errors(&example_with(&[(
                "instances/zz.yaml",
                Some(&STAGED.replace(from, to)),
            )]))
        };
        let e = bad("maxFailures: 1", "maxFailurez: 1");
        assert!(
            e.contains("instances/zz.yaml:12: placement.rollout: unknown field `maxFailurez`"),
            "{e}"
        );
        let e = bad("- bake: 10m", "- bake: 10 minutes");
        assert!(
            e.contains(
                "instances/zz.yaml:18: placement.rollout.stages[0].gates[0].bake \"10 minutes\""
            ),
            "{e}"
        );
        let e = bad("clusters: [staging]", "clusters: [moon]");
        assert!(
            e.contains("instances/zz.yaml:16: placement.rollout.stages[0].clusters names \"moon\", which is not a registered cluster"),
            "{e}"
        );
        let e = bad("- name: prod", "- name: canary");
        assert!(
            e.contains("instances/zz.yaml:19: placement.rollout.stages[1].name \"canary\" must be non-empty, unique"),
            "{e}"
        );
        let e = bad(
            "          clusterSelector: {matchLabels: {env: prod}}\n",
            "",
        );
        assert!(
            e.contains("instances/zz.yaml:19: placement.rollout.stages[1] (prod) needs exactly one of clusters or clusterSelector"),
            "{e}"
        );
        let e = bad("- approval: {}", "- plan: smoke-test");
        assert!(
            e.contains("instances/zz.yaml:23: placement.rollout.stages[1].gates[0].plan names \"smoke-test\", which the framework does not have (plans: deploy"),
            "{e}"
        );
        let e = bad("- bake: 10m", "- prometheus: {query: up, timeout: soon}");
        assert!(
            e.contains("instances/zz.yaml:18: placement.rollout.stages[0].gates[0].prometheus.timeout \"soon\""),
            "{e}"
        );
        let e = bad("- bake: 10m", "- prometheus: {query: ' '}");
        assert!(
            e.contains("instances/zz.yaml:18: placement.rollout.stages[0].gates[0].prometheus.query is empty"),
            "{e}"
        );
        let e = bad("maxUnavailable: 25%", "maxUnavailable: 0");
        assert!(
            e.contains("instances/zz.yaml:21: placement.rollout.stages[1].maxUnavailable"),
            "{e}"
        );
        let e = bad("progressDeadline: 30m", "progressDeadline: soon");
        assert!(
            e.contains("instances/zz.yaml:13: placement.rollout.progressDeadline \"soon\""),
            "{e}"
        );
        let e = bad("maxFailures: 1", "onFailure: sometimes");
        assert!(
            e.contains("instances/zz.yaml:12: placement.rollout.onFailure \"sometimes\" is not halt or revert"),
            "{e}"
        );
        let e = bad("    rollout:\n", "    canary: [dev]\n    rollout:\n");
        assert!(
            e.contains("placement.canary and placement.rollout.stages together"),
            "{e}"
        );
    }

    #[test]
    fn depends_on_cycles_and_bad_entries_are_named_with_their_lines() {
        let doc = |name: &str, deps: &str| {
            format!(
                "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: {name}\n  namespace: data\nspec:\n  framework: relay\n  version: 2.0.0\n  placement:\n    clusterSelector: {{}}\n  dependsOn:\n{deps}"
            )
        };
        let a = doc("a", "    - instance: data/b\n");
        let b = doc(
            "b",
            "    - {instance: data/other, scope: everywhere}\n    - instance: data/a\n",
        );
        let e = errors(&example_with(&[
            ("instances/a.yaml", Some(&a)),
            ("instances/b.yaml", Some(&b)),
        ]));
        assert!(
            e.contains("instances/a.yaml:12: dependsOn forms a cycle: data/a → data/b → data/a"),
            "{e}"
        );
        assert!(
            e.contains("instances/b.yaml:13: dependsOn forms a cycle: data/b → data/a → data/b"),
            "{e}"
        );
        let own = doc("a", "    - instance: data/a\n");
        let e = errors(&example_with(&[("instances/a.yaml", Some(&own))]));
        assert!(
            e.contains("instances/a.yaml:12: dependsOn forms a cycle: data/a → data/a"),
            "{e}"
        );
        let bad = doc(
            "a",
            "    - {instance: zookeeper, scope: nearby}\n    - {instance: data/zk, scope: nearby}\n",
        );
        let e = errors(&example_with(&[("instances/a.yaml", Some(&bad))]));
        assert!(
            e.contains(
                "instances/a.yaml:12: dependsOn[0].instance \"zookeeper\" is not NAMESPACE/NAME"
            ),
            "{e}"
        );
        assert!(
            e.contains("instances/a.yaml:13: dependsOn[1].scope \"nearby\" is not sameCluster or everywhere"),
            "{e}"
        );
        // A dependency on an instance this revision does not declare loads (another
        // repository may declare it); the planner holds the rollout until it exists.
        let other = doc("a", "    - instance: data/elsewhere\n");
        let tree = example_with(&[("instances/a.yaml", Some(&other))]);
        let d = load(&tree, REV, &clusters()).expect("loads");
        assert_eq!(
            d.instances["data/a"].depends_on[0].instance,
            "data/elsewhere"
        );
        // Once every other repository has loaded, a dependency none of them declares is
        // refused with its file and line; another repository declaring it is fine; a
        // repository not loaded yet (None) may be the one.
        let e = unknown_dependencies(&d, Some(&[]));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            e[0].to_string(),
            format!(
                "{}: instances/a.yaml:12: dependsOn data/elsewhere: no instance of that name in this revision or any other repository",
                short(REV)
            )
        );
        let mut declared = d.clone();
        declared.instances = [("data/elsewhere".to_string(), d.instances["data/a"].clone())].into();
        assert!(unknown_dependencies(&d, Some(&[&declared])).is_empty());
        assert!(unknown_dependencies(&d, None).is_empty());
    }

    #[test]
    fn missing_placement_is_refused() {
        let doc = "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: x\nspec:\n  framework: relay\n  version: 2.0.0\n";
        let e = errors(&example_with(&[("instances/x.yaml", Some(doc))]));
        assert!(
            e.contains("instances/x.yaml") && e.contains("placement"),
            "{e}"
        );
    }
}
