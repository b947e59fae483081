//! Runs a kuttl suite against a cluster: set-up (control plane, CRDs, manifests, `kudo
//! manager`, suite commands), then each test case in a fresh namespace, steps in index
//! order (deletes, commands, applies, then asserts and errors polled until the timeout),
//! and the report (a line per step, summary table, JUnit XML).
//!
//! The pure decisions (namespace defaulting, label selectors, the assert verdict) are free
//! functions tested without a cluster; everything else talks to the real API server.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use super::KuttlError;
use super::case::{Discovered, FileObject, Step, TestCase, TestSuite, discover_each, parse_docs};
use super::command::{self, Background, Env};
use super::report::{CaseReport, junit_xml, summary_table};
use crate::cluster::{Cluster, ClusterError, ErrorKind, ObjectRef};
use crate::util::subset::{Mismatch, is_subset, mismatches};

/// How often asserts are re-checked while waiting.
const POLL: Duration = Duration::from_millis(250);
/// JUnit file name in the artifacts dir (kuttl's default report name).
pub const REPORT_FILE: &str = "kuttl-report.xml";
/// Environment variable naming the envtest script for `startControlPlane`.
pub const ENVTEST_SCRIPT_ENV: &str = "KUDO_ENVTEST_SCRIPT";

/// Everything a run needs besides the suite file's content.
#[derive(Debug, Clone)]
pub struct Options {
    pub suite: TestSuite,
    /// Relative paths of the suite resolve against this folder (the suite file's).
    pub base_dir: PathBuf,
    /// Shown in the JUnit report.
    pub suite_name: String,
    /// Use this cluster instead of starting a control plane.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// `scripts/envtest`; found next to the suite or the binary when not given.
    pub envtest_script: Option<PathBuf>,
    /// This binary: `kubectl kudo` and `kudo manager` run it.
    pub kudo_binary: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Kuttl(#[from] KuttlError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("set-up: {0}")]
    Setup(String),
}

/// The outcome of a whole run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub cases: Vec<CaseReport>,
    pub wall: Duration,
}

impl RunSummary {
    pub fn passed(&self) -> bool {
        !self.cases.is_empty() && self.cases.iter().all(CaseReport::passed)
    }
}

/// Shared by every case of a run.
struct Harness {
    suite: TestSuite,
    cluster: Cluster,
    kubeconfig: PathBuf,
    bin_dir: PathBuf,
    log_dir: PathBuf,
}

/// Runs the suite and prints progress, the summary table and failures to stdout.
pub async fn run(opts: Options) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let suite = &opts.suite;
    let test_dirs: Vec<PathBuf> = suite
        .test_dirs
        .iter()
        .map(|d| opts.base_dir.join(d))
        .collect();
    let mut found = discover_each(&test_dirs)?;
    if !suite.only.is_empty() {
        for wanted in &suite.only {
            if !found.iter().any(|d| &d.name == wanted) {
                return Err(RunError::Setup(format!(
                    "no test case named {wanted:?} in {}",
                    list_paths(&test_dirs)
                )));
            }
        }
        found.retain(|d| suite.only.contains(&d.name));
    }
    if found.is_empty() {
        return Err(RunError::Setup(format!(
            "no test cases found in {}",
            list_paths(&test_dirs)
        )));
    }

    let tools = tempfile::Builder::new()
        .prefix("kudo-test-")
        .tempdir()
        .map_err(|e| RunError::Setup(format!("cannot create a temporary folder: {e}")))?;
    let bin_dir = tools.path().join("bin");
    link_tools(&bin_dir, &opts.kudo_binary)?;
    let log_dir = match &suite.artifacts_dir {
        Some(d) => opts.base_dir.join(d),
        None => std::env::temp_dir().join(format!("kudo-test-logs-{}", std::process::id())),
    };
    std::fs::create_dir_all(&log_dir)
        .map_err(|e| RunError::Setup(format!("cannot create {}: {e}", log_dir.display())))?;

    // The cluster: given, or the project's envtest environment, or $KUBECONFIG.
    let source_kubeconfig = match (&opts.kubeconfig, suite.start_control_plane) {
        (Some(k), _) => k.clone(),
        (None, true) => start_control_plane(&opts)?,
        (None, false) => default_kubeconfig()?,
    };
    // Commands (kubectl, kubectl kudo) must see the chosen context as the current one.
    let kubeconfig = match &opts.context {
        Some(ctx) => pin_context(&source_kubeconfig, ctx, tools.path())?,
        None => source_kubeconfig.clone(),
    };
    let cluster = Cluster::from_kubeconfig("test", &kubeconfig, None).await?;
    println!(
        "kudo test: {} case(s) on {} (kubeconfig {})",
        found.len(),
        cluster.client().default_namespace(),
        kubeconfig.display()
    );

    if let Some(crd_dir) = &suite.crd_dir {
        install_crds(&cluster, &opts.base_dir.join(crd_dir)).await?;
    }
    for dir in &suite.manifest_dirs {
        install_manifests(&cluster, &opts.base_dir.join(dir)).await?;
    }

    let harness = Harness {
        suite: suite.clone(),
        cluster,
        kubeconfig: kubeconfig.clone(),
        bin_dir,
        log_dir: log_dir.clone(),
    };
    let mut background: Vec<Background> = Vec::new();
    if suite.start_kudo {
        let log = log_dir.join("kudo-manager.log");
        let line = format!(
            "exec {} manager --kubeconfig {} --poll-interval 200ms",
            shell_quote(&opts.kudo_binary.display().to_string()),
            shell_quote(&kubeconfig.display().to_string())
        );
        let expanded = command::Expanded {
            display: "kudo manager".into(),
            shell: line,
        };
        let env = harness.env(&opts.base_dir, "default");
        let bg = command::spawn(&expanded, &env, &log)
            .map_err(|e| RunError::Setup(format!("cannot start kudo manager: {e}")))?;
        println!("kudo test: started kudo manager (log {})", log.display());
        background.push(bg);
    }
    for (i, cmd) in suite.commands.iter().enumerate() {
        let expanded = command::expand(cmd, "default")
            .map_err(|e| RunError::Setup(format!("suite command {i}: {e}")))?;
        let env = harness.env(&opts.base_dir, "default");
        if cmd.background {
            let log = log_dir.join(format!("suite-command-{i}.log"));
            let bg = command::spawn(&expanded, &env, &log)
                .map_err(|e| RunError::Setup(format!("cannot start {}: {e}", expanded.display)))?;
            background.push(bg);
            continue;
        }
        let out = command::run(&expanded, &env, harness.timeout(cmd.timeout, 0)).await;
        if !out.success && !cmd.ignore_failure {
            stop_all(background).await;
            return Err(RunError::Setup(format!(
                "suite command `{}` failed ({}):\n{}",
                expanded.display,
                out.status,
                indent(&out.output)
            )));
        }
    }

    let parallel = suite.parallel.max(1);
    let order: Vec<String> = found.iter().map(|d| d.name.clone()).collect();
    let mut cases: Vec<CaseReport> = futures::stream::iter(found)
        .map(|d| harness.run_case(d))
        .buffer_unordered(parallel)
        .collect()
        .await;
    cases.sort_by_key(|c| order.iter().position(|n| n == &c.name));
    for mut bg in background {
        if let Some(status) = bg.exited() {
            println!(
                "kudo test: note: background command `{}` had exited early ({status})",
                bg.display
            );
        }
        bg.stop().await;
    }

    let wall = started.elapsed();
    for c in cases.iter().filter(|c| !c.passed()) {
        println!(
            "\n--- FAIL: {}\n{}",
            c.name,
            c.failure.as_deref().unwrap_or("")
        );
    }
    println!("\n{}", summary_table(&cases));
    if suite.artifacts_dir.is_some() {
        let path = log_dir.join(REPORT_FILE);
        std::fs::write(&path, junit_xml(&opts.suite_name, &cases, wall))
            .map_err(|e| RunError::Setup(format!("cannot write {}: {e}", path.display())))?;
        println!("JUnit report: {}", path.display());
    }
    Ok(RunSummary { cases, wall })
}

async fn stop_all(background: Vec<Background>) {
    for bg in background {
        bg.stop().await;
    }
}

impl Harness {
    fn env(&self, dir: &Path, namespace: &str) -> Env {
        Env {
            dir: dir.to_path_buf(),
            bin_dir: self.bin_dir.clone(),
            kubeconfig: self.kubeconfig.clone(),
            namespace: namespace.to_string(),
        }
    }

    /// The first non-zero of a command's/assert's own, the step's, and the suite's timeout.
    fn timeout(&self, own: u64, step: u64) -> Duration {
        Duration::from_secs(
            [own, step, self.suite.timeout]
                .into_iter()
                .find(|t| *t > 0)
                .unwrap_or(30),
        )
    }

    async fn run_case(&self, discovered: Discovered) -> CaseReport {
        let started = Instant::now();
        let name = discovered.name.clone();
        let case = match discovered.case {
            Ok(case) => case,
            Err(e) => {
                println!("[{name}] cannot be read: {e}");
                return CaseReport {
                    name,
                    steps_passed: 0,
                    steps_total: 0,
                    duration: started.elapsed(),
                    failure: Some(e.to_string()),
                };
            }
        };
        let (namespace, created) = match self.prepare_namespace().await {
            Ok(v) => v,
            Err(e) => {
                return CaseReport {
                    name,
                    steps_passed: 0,
                    steps_total: case.steps.len(),
                    duration: started.elapsed(),
                    failure: Some(format!("cannot create the test namespace: {e}")),
                };
            }
        };
        println!("[{name}] namespace {namespace}");
        let background = Mutex::new(Vec::new());
        let mut passed = 0;
        let mut failure = None;
        for step in &case.steps {
            let label = step_label(step);
            let t = Instant::now();
            println!("[{name}] step {label}: running");
            match self.run_step(&case, step, &namespace, &background).await {
                Ok(()) => {
                    passed += 1;
                    println!(
                        "[{name}] step {label}: PASS ({:.1}s)",
                        t.elapsed().as_secs_f64()
                    );
                }
                Err(msg) => {
                    println!(
                        "[{name}] step {label}: FAIL ({:.1}s)",
                        t.elapsed().as_secs_f64()
                    );
                    failure = Some(format!("step {label}: {msg}"));
                    break;
                }
            }
        }
        let bgs = std::mem::take(&mut *background.lock().unwrap_or_else(|p| p.into_inner()));
        stop_all(bgs).await;
        if created && !self.suite.skip_delete {
            let ns = ObjectRef::new("v1", "Namespace", None, namespace.clone());
            if let Err(e) = self.cluster.delete(&ns).await {
                println!("[{name}] note: deleting namespace {namespace}: {e}");
            }
        }
        CaseReport {
            name,
            steps_passed: passed,
            steps_total: case.steps.len(),
            duration: started.elapsed(),
            failure,
        }
    }

    /// The suite's namespace (created when missing, never deleted), else a fresh random one.
    async fn prepare_namespace(&self) -> Result<(String, bool), ClusterError> {
        let (name, fresh) = match &self.suite.namespace {
            Some(ns) => (ns.clone(), false),
            None => (random_namespace(), true),
        };
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match self.cluster.create(&obj).await {
            Ok(_) => Ok((name, fresh)),
            Err(e) if e.kind() == ErrorKind::Conflict && !fresh => Ok((name, false)),
            Err(e) => Err(e),
        }
    }

    async fn run_step(
        &self,
        case: &TestCase,
        step: &Step,
        namespace: &str,
        background: &Mutex<Vec<Background>>,
    ) -> Result<(), String> {
        let ts = &step.test_step;
        // 1. Deletes.
        for d in &ts.delete {
            self.delete(d, namespace).await?;
        }
        // 2. Commands, in the test folder.
        let env = self.env(&case.dir, namespace);
        for cmd in &ts.commands {
            let expanded = command::expand(cmd, namespace).map_err(|e| e.to_string())?;
            if cmd.background {
                let log = self
                    .log_dir
                    .join(format!("{}-{:02}-background.log", case.name, step.index));
                let bg = command::spawn(&expanded, &env, &log)
                    .map_err(|e| format!("cannot start `{}`: {e}", expanded.display))?;
                background
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(bg);
                continue;
            }
            let out = command::run(&expanded, &env, self.timeout(cmd.timeout, ts.timeout)).await;
            if !out.success && !cmd.ignore_failure {
                return Err(format!(
                    "command `{}` failed ({}):\n{}",
                    expanded.display,
                    out.status,
                    indent(&out.output)
                ));
            }
        }
        // 3. Applies: the step's files, then the files its TestStep names.
        let mut applies = step.apply.clone();
        applies.extend(read_files(&case.dir, &ts.apply)?);
        for fo in &applies {
            self.apply(fo, namespace).await?;
        }
        // 4. Asserts and errors, polled together until the timeout.
        let mut asserts = step.asserts.clone();
        asserts.extend(read_files(&case.dir, &ts.assert)?);
        let mut errors = step.errors.clone();
        errors.extend(read_files(&case.dir, &ts.error)?);
        if asserts.is_empty() && errors.is_empty() && step.test_assert.commands.is_empty() {
            return Ok(());
        }
        let timeout = self.timeout(step.test_assert.timeout, ts.timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match self.check(case, step, &asserts, &errors, namespace).await {
                Verdict::Pass => return Ok(()),
                Verdict::Fatal(msg) => return Err(msg),
                Verdict::NotYet(msg) => msg,
            };
            if tokio::time::Instant::now() + POLL > deadline {
                return Err(format!(
                    "not satisfied within {}s:\n{}",
                    timeout.as_secs(),
                    indent(&last)
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn check(
        &self,
        case: &TestCase,
        step: &Step,
        asserts: &[FileObject],
        errors: &[FileObject],
        namespace: &str,
    ) -> Verdict {
        let env = self.env(&case.dir, namespace);
        for cmd in &step.test_assert.commands {
            let expanded = match command::expand(cmd, namespace) {
                Ok(e) => e,
                Err(e) => return Verdict::Fatal(e.to_string()),
            };
            let out = command::run(&expanded, &env, self.timeout(cmd.timeout, 0)).await;
            if !out.success && !cmd.ignore_failure {
                return Verdict::NotYet(format!(
                    "assert command `{}` failed ({}):\n{}",
                    expanded.display,
                    out.status,
                    indent(&out.output)
                ));
            }
        }
        let mut pending = Vec::new();
        for fo in asserts {
            match self.find(fo, namespace).await {
                Err(fatal) => return Verdict::Fatal(fatal),
                Ok(Found::Match(_)) => {}
                Ok(Found::NoMatch(why)) => pending.push(format!("assert {why}")),
            }
        }
        if !pending.is_empty() {
            return Verdict::NotYet(pending.join("\n"));
        }
        for fo in errors {
            match self.find(fo, namespace).await {
                Err(fatal) => return Verdict::Fatal(fatal),
                Ok(Found::Match(what)) => pending.push(format!(
                    "errors {}: {what} matches an object that must not exist in this form",
                    file_name(&fo.file)
                )),
                Ok(Found::NoMatch(_)) => {}
            }
        }
        if pending.is_empty() {
            Verdict::Pass
        } else {
            Verdict::NotYet(pending.join("\n"))
        }
    }

    /// Looks for a live object matching the partial object `fo`; a kind the cluster does not
    /// serve is fatal at once (waiting cannot help).
    async fn find(&self, fo: &FileObject, namespace: &str) -> Result<Found, String> {
        let file = file_name(&fo.file);
        let expected = &fo.object;
        let kind = str_at(expected, "/kind");
        let api_version = str_at(expected, "/apiVersion");
        if kind.is_empty() || api_version.is_empty() {
            return Err(format!("{file}: an object without apiVersion and kind"));
        }
        let namespaced = self.namespaced(expected, &file).await?;
        let ns = namespaced.then(|| {
            let own = str_at(expected, "/metadata/namespace");
            if own.is_empty() {
                namespace.to_string()
            } else {
                own
            }
        });
        let name = str_at(expected, "/metadata/name");
        let where_ = ns
            .as_deref()
            .map(|n| format!(" in namespace {n}"))
            .unwrap_or_default();
        if !name.is_empty() {
            let r = ObjectRef::new(api_version.clone(), kind.clone(), ns.as_deref(), name);
            let live = self
                .cluster
                .get_opt(&r)
                .await
                .map_err(|e| format!("{file}: {e}"))?;
            let what = format!("{api_version} {kind} {}", qualified(&r));
            return Ok(match live {
                None => Found::NoMatch(format!("{file}: {what}: not found")),
                Some(live) => {
                    let diff = mismatches(expected, &live);
                    if diff.is_empty() {
                        Found::Match(what)
                    } else {
                        Found::NoMatch(format!("{file}: {what}:\n{}", diff_lines(&diff)))
                    }
                }
            });
        }
        let selector = label_selector(expected);
        let candidates = self
            .cluster
            .list(&[(&api_version, &kind)], ns.as_deref(), &selector)
            .await
            .map_err(|e| format!("{file}: {e}"))?;
        let labels = if selector.is_empty() {
            String::new()
        } else {
            format!(" with labels {selector}")
        };
        let what = format!("{api_version} {kind} (any name{labels}){where_}");
        if let Some(hit) = candidates.iter().find(|c| is_subset(expected, c)) {
            let hit_name = str_at(hit, "/metadata/name");
            return Ok(Found::Match(format!("{api_version} {kind} {hit_name}")));
        }
        Ok(Found::NoMatch(match closest(expected, &candidates) {
            None => format!("{file}: {what}: no such object"),
            Some((name, diff)) => format!(
                "{file}: {what}: {} candidate(s), none matches; closest is {name}:\n{}",
                candidates.len(),
                diff_lines(&diff)
            ),
        }))
    }

    async fn namespaced(&self, obj: &Value, file: &str) -> Result<bool, String> {
        let mut probe = obj.clone();
        if str_at(&probe, "/metadata/name").is_empty() {
            probe["metadata"]["name"] = json!("probe");
        }
        match self.cluster.is_namespaced(&probe).await {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == ErrorKind::UnknownKind => Err(format!(
                "{file}: kind {} (apiVersion {}) is not known to the cluster (is its CRD installed?)",
                str_at(obj, "/kind"),
                str_at(obj, "/apiVersion")
            )),
            Err(e) => Err(format!("{file}: {e}")),
        }
    }

    /// Creates the object, or merges it into the existing one (kuttl's apply).
    async fn apply(&self, fo: &FileObject, namespace: &str) -> Result<(), String> {
        let file = file_name(&fo.file);
        let namespaced = self.namespaced(&fo.object, &file).await?;
        let obj = with_namespace(&fo.object, namespace, namespaced);
        let r = ObjectRef::from_object(&obj).map_err(|e| format!("{file}: {e}"))?;
        let exists = self
            .cluster
            .get_opt(&r)
            .await
            .map_err(|e| format!("{file}: {e}"))?
            .is_some();
        let result = if exists {
            self.cluster.merge_patch(&obj).await
        } else {
            match self.cluster.create(&obj).await {
                Err(e) if e.kind() == ErrorKind::Conflict => self.cluster.merge_patch(&obj).await,
                other => other,
            }
        };
        result
            .map(|_| ())
            .map_err(|e| format!("applying {file}: {e}"))
    }

    async fn delete(&self, d: &super::case::DeleteRef, namespace: &str) -> Result<(), String> {
        let probe =
            json!({"apiVersion": d.api_version, "kind": d.kind, "metadata": {"name": "probe"}});
        let namespaced = self.namespaced(&probe, "delete").await?;
        let ns = namespaced.then(|| d.namespace.clone().unwrap_or_else(|| namespace.to_string()));
        let wait = self.timeout(0, 0);
        let names: Vec<String> = match &d.name {
            Some(n) => vec![n.clone()],
            None => {
                let selector = d
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                self.cluster
                    .list(&[(&d.api_version, &d.kind)], ns.as_deref(), &selector)
                    .await
                    .map_err(|e| format!("delete: {e}"))?
                    .iter()
                    .map(|o| str_at(o, "/metadata/name"))
                    .collect()
            }
        };
        for name in names {
            let r = ObjectRef::new(d.api_version.clone(), d.kind.clone(), ns.as_deref(), name);
            self.cluster
                .delete_and_wait(&r, wait)
                .await
                .map_err(|e| format!("delete: {e}"))?;
        }
        Ok(())
    }
}

/// The verdict of one look at a step's asserts and errors.
#[derive(Debug)]
enum Verdict {
    Pass,
    /// Not (yet) satisfied: what differs.
    NotYet(String),
    /// Waiting cannot help (an unknown kind, a malformed assert).
    Fatal(String),
}

enum Found {
    Match(String),
    NoMatch(String),
}

/// `00-install` style label of a step.
pub fn step_label(step: &Step) -> String {
    if step.name.is_empty() {
        format!("{:02}", step.index)
    } else {
        format!("{:02}-{}", step.index, step.name)
    }
}

/// An object as applied in a test: namespaced kinds without a namespace get the test's.
pub fn with_namespace(obj: &Value, namespace: &str, namespaced: bool) -> Value {
    let mut obj = obj.clone();
    if namespaced && str_at(&obj, "/metadata/namespace").is_empty() {
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        obj["metadata"]["namespace"] = json!(namespace);
    }
    obj
}

/// The equality label selector of a nameless expected object (`k1=v1,k2=v2`).
pub fn label_selector(expected: &Value) -> String {
    expected
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// The candidate differing least from `expected`, with its differences.
pub fn closest(expected: &Value, candidates: &[Value]) -> Option<(String, Vec<Mismatch>)> {
    candidates
        .iter()
        .map(|c| (str_at(c, "/metadata/name"), mismatches(expected, c)))
        .min_by_key(|(_, diff)| diff.len())
}

/// A random namespace name as kuttl makes them (`kudo-test-` + 8 lowercase characters).
pub fn random_namespace() -> String {
    let suffix: String = (0..8)
        .map(|_| {
            let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
            alphabet[fastrand::usize(..alphabet.len())] as char
        })
        .collect();
    format!("kudo-test-{suffix}")
}

fn diff_lines(diff: &[Mismatch]) -> String {
    diff.iter()
        .map(|m| format!("  {m}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn qualified(r: &ObjectRef) -> String {
    match &r.namespace {
        Some(ns) => format!("{ns}/{}", r.name),
        None => r.name.clone(),
    }
}

fn str_at(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| p.display().to_string())
}

fn indent(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn list_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Reads the extra files a `TestStep` names (relative to the test folder).
fn read_files(dir: &Path, files: &[String]) -> Result<Vec<FileObject>, String> {
    let mut out = Vec::new();
    for f in files {
        let path = dir.join(f);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let docs = parse_docs(&path, &text).map_err(|e| e.to_string())?;
        out.extend(docs.into_iter().map(|object| FileObject {
            file: path.clone(),
            object,
        }));
    }
    Ok(out)
}

/// A folder holding `kubectl-kudo` and `kudo` links to this binary, put first on PATH for
/// test commands so that `kubectl kudo ...` runs us.
fn link_tools(bin_dir: &Path, binary: &Path) -> Result<(), RunError> {
    let err = |e: std::io::Error| {
        RunError::Setup(format!(
            "cannot link {} into {}: {e}",
            binary.display(),
            bin_dir.display()
        ))
    };
    std::fs::create_dir_all(bin_dir).map_err(err)?;
    for name in ["kubectl-kudo", "kudo"] {
        std::os::unix::fs::symlink(binary, bin_dir.join(name)).map_err(err)?;
    }
    // Without kubectl on the machine, `kubectl kudo ...` still reaches kudo; any other
    // kubectl command says what is missing.
    if !on_path("kubectl") {
        use std::os::unix::fs::PermissionsExt as _;
        let shim = bin_dir.join("kubectl");
        let script = format!(
            "#!/bin/sh\nif [ \"$1\" = kudo ]; then shift; exec '{}' \"$@\"; fi\necho 'kubectl is not installed; only `kubectl kudo` is available here' >&2\nexit 127\n",
            binary.display()
        );
        std::fs::write(&shim, script).map_err(err)?;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).map_err(err)?;
    }
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// A copy of the kubeconfig whose current context is `context`.
fn pin_context(path: &Path, context: &str, dir: &Path) -> Result<PathBuf, RunError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| RunError::Setup(format!("cannot read {}: {e}", path.display())))?;
    let mut config: Value = serde_saphyr::from_str(&text)
        .map_err(|e| RunError::Setup(format!("{}: {e}", path.display())))?;
    let known = config
        .get("contexts")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["name"] == context));
    if !known {
        return Err(RunError::Setup(format!(
            "context {context:?} is not in kubeconfig {}",
            path.display()
        )));
    }
    config["current-context"] = json!(context);
    let out = dir.join("kubeconfig");
    let body =
        serde_json::to_string(&config).map_err(|e| RunError::Setup(format!("kubeconfig: {e}")))?;
    std::fs::write(&out, body)
        .map_err(|e| RunError::Setup(format!("cannot write {}: {e}", out.display())))?;
    Ok(out)
}

fn default_kubeconfig() -> Result<PathBuf, RunError> {
    if let Some(k) = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
        return Ok(PathBuf::from(k));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    match home.map(|h| h.join(".kube/config")).filter(|p| p.exists()) {
        Some(p) => Ok(p),
        None => Err(RunError::Setup(
            "no cluster: give --kubeconfig, set KUBECONFIG, or set startControlPlane: true".into(),
        )),
    }
}

/// Finds `scripts/envtest`: the explicit path, $KUDO_ENVTEST_SCRIPT, then a `scripts/envtest`
/// in a parent folder of the suite file or of this binary (the project checkout).
pub fn find_envtest_script(
    explicit: Option<&Path>,
    base_dir: &Path,
    binary: &Path,
) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(ENVTEST_SCRIPT_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let base = std::fs::canonicalize(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
    let bin = std::fs::canonicalize(binary).unwrap_or_else(|_| binary.to_path_buf());
    base.ancestors()
        .chain(bin.ancestors())
        .map(|d| d.join("scripts/envtest"))
        .find(|p| p.is_file())
}

/// Runs `scripts/envtest up` (which reuses a running environment) and returns its
/// kubeconfig. The environment is left running for the next run; `scripts/envtest down`
/// stops it.
fn start_control_plane(opts: &Options) -> Result<PathBuf, RunError> {
    let script = find_envtest_script(
        opts.envtest_script.as_deref(),
        &opts.base_dir,
        &opts.kudo_binary,
    )
    .ok_or_else(|| {
        RunError::Setup(format!(
            "startControlPlane: cannot find scripts/envtest above {} or {}; pass --envtest-script or set {ENVTEST_SCRIPT_ENV}",
            opts.base_dir.display(),
            opts.kudo_binary.display()
        ))
    })?;
    println!(
        "kudo test: starting the control plane ({} up)",
        script.display()
    );
    let out = std::process::Command::new("bash")
        .arg(&script)
        .args(["up", "--clusters", "1"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| RunError::Setup(format!("cannot run {}: {e}", script.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(RunError::Setup(format!(
            "{} up failed:\n{}{}",
            script.display(),
            stdout,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("export KUBECONFIG="))
        .map(|p| PathBuf::from(p.trim().trim_matches('"')))
        .ok_or_else(|| {
            RunError::Setup(format!(
                "{} up printed no `export KUBECONFIG=` line:\n{stdout}",
                script.display()
            ))
        })
}

/// Applies every YAML document of the files in `dir` (sorted), e.g. the suite's CRDs; then
/// waits until each CRD is established.
async fn install_crds(cluster: &Cluster, dir: &Path) -> Result<(), RunError> {
    let mut crds = Vec::new();
    for obj in read_dir_objects(dir)? {
        cluster.apply(&obj.object).await?;
        if str_at(&obj.object, "/kind") == "CustomResourceDefinition" {
            crds.push(ObjectRef::from_object(&obj.object).map_err(RunError::Setup)?);
        }
    }
    for r in crds {
        let h = cluster.wait_healthy(&r, Duration::from_secs(60)).await?;
        if !h.is_healthy() {
            return Err(RunError::Setup(format!(
                "CRD {} not established: {h:?}",
                r.name
            )));
        }
    }
    Ok(())
}

/// Creates (or merges into) every object of the files in `dir`; namespaced objects without
/// a namespace go to the kubeconfig context's namespace.
async fn install_manifests(cluster: &Cluster, dir: &Path) -> Result<(), RunError> {
    for fo in read_dir_objects(dir)? {
        let result = match cluster.create(&fo.object).await {
            Err(e) if e.kind() == ErrorKind::Conflict => cluster.merge_patch(&fo.object).await,
            other => other,
        };
        result.map_err(|e| RunError::Setup(format!("{}: {e}", fo.file.display())))?;
    }
    Ok(())
}

fn read_dir_objects(dir: &Path) -> Result<Vec<FileObject>, RunError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| KuttlError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| KuttlError::Io {
            path: file.clone(),
            source,
        })?;
        out.extend(
            parse_docs(&file, &text)?
                .into_iter()
                .map(|object| FileObject {
                    file: file.clone(),
                    object,
                }),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_objects_without_namespace_get_the_test_namespace() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
        assert_eq!(
            with_namespace(&cm, "kudo-test-x", true)["metadata"]["namespace"],
            "kudo-test-x"
        );
        let own = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "other"}});
        assert_eq!(
            with_namespace(&own, "kudo-test-x", true)["metadata"]["namespace"],
            "other"
        );
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}});
        assert!(
            with_namespace(&ns, "kudo-test-x", false)["metadata"]
                .get("namespace")
                .is_none()
        );
    }

    #[test]
    fn nameless_asserts_select_by_labels_and_report_the_closest() {
        let expected =
            json!({"kind": "Service", "metadata": {"labels": {"memory": "1Gi", "cpu": "0.25"}}});
        assert_eq!(label_selector(&expected), "memory=1Gi,cpu=0.25");
        assert_eq!(label_selector(&json!({"kind": "Service"})), "");
        let candidates = vec![
            json!({"kind": "Service", "metadata": {"name": "far", "labels": {"memory": "2Gi", "cpu": "1"}}}),
            json!({"kind": "Service", "metadata": {"name": "near", "labels": {"memory": "1Gi", "cpu": "1"}}}),
        ];
        let (name, diff) = closest(&expected, &candidates).expect("some");
        assert_eq!(name, "near");
        assert_eq!(diff.len(), 1);
        assert_eq!(diff[0].path, ".metadata.labels.cpu");
        assert!(closest(&expected, &[]).is_none());
    }

    #[test]
    fn random_namespaces_are_valid_and_distinct() {
        let a = random_namespace();
        let b = random_namespace();
        assert_ne!(a, b);
        assert!(a.starts_with("kudo-test-") && a.len() == 18);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    #[test]
    fn steps_are_labelled_by_index_and_name() {
        let step = Step {
            index: 3,
            name: "upgrade".into(),
            ..Step::default()
        };
        assert_eq!(step_label(&step), "03-upgrade");
        let bare = Step {
            index: 1,
            ..Step::default()
        };
        assert_eq!(step_label(&bare), "01");
    }

    #[test]
    fn envtest_script_is_found_above_the_suite() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("scripts")).expect("mkdir");
        std::fs::write(dir.path().join("scripts/envtest"), "#!/bin/sh\n").expect("write");
        let suite_dir = dir.path().join("tests/kuttl");
        std::fs::create_dir_all(&suite_dir).expect("mkdir");
        let found = find_envtest_script(None, &suite_dir, Path::new("/nonexistent/kudo"));
        let want = std::fs::canonicalize(dir.path().join("scripts/envtest")).expect("canon");
        assert_eq!(found, Some(want));
        let explicit =
            find_envtest_script(Some(Path::new("/x/envtest")), &suite_dir, Path::new("/"));
        assert_eq!(explicit, Some(PathBuf::from("/x/envtest")));
    }
}
