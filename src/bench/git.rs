//! `kudo bench git`: a generated repository (many framework versions, thousands of instance
//! files), cold sync, then one-file commits.
//!
//! Every phase goes through what `kudo serve` runs per revision (`sync_once`): a
//! [`GitSource`] mirror fetched from a `file://` URL, the tree at the commit read from the
//! object database, the package-repository overlay, and [`desired::load_cached`] with one
//! [`DesiredCache`] kept across revisions. The source repository is written with libgit2
//! (blobs and trees straight into the object database, no work tree or index), so setting
//! up 6,000 files takes well under a second. A `file://` fetch goes through libgit2's local
//! transport, which refuses shallow fetches: `sync` falls back to a full one, as it does for
//! any remote that refuses them.
//!
//! A broken load (errors, a wrong instance count, a change that does not show up) is a
//! [`BenchError`]: timing a load that failed would measure nothing. Re-parse and re-render
//! counts are reported against what a one-file commit should cost, not asserted (the unit
//! test below asserts them).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use git2::{FileMode, Oid, Repository as GitRepo, Signature, Time, build::TreeUpdateBuilder};
use serde_json::json;

use super::report::{mib, secs};
use super::{BenchError, Table, process};
use crate::gitops::config::{Repository, Source};
use crate::gitops::desired::{self, CacheStats, DesiredCache, DesiredState};
use crate::gitops::git::GitSource;
use crate::gitops::placement::ClusterInfo;

const SCENARIO: &str = "git";
const BRANCH: &str = "main";
/// The goal for the incremental part of a one-file commit (fetch excluded).
const TARGET_SECONDS: f64 = 0.050;

#[derive(Debug, Clone)]
pub struct GitOptions {
    /// Framework versions in the generated repository.
    pub versions: usize,
    /// Instance files under `instances/`.
    pub instances: usize,
    /// Simulated clusters registered (placement is computed against them).
    pub clusters: usize,
    /// Frameworks the versions are spread over (e.g. 20 frameworks × 10 versions).
    pub frameworks: usize,
    /// One-file commits measured per case (median and max are reported).
    pub commits: usize,
}

impl Default for GitOptions {
    fn default() -> Self {
        GitOptions {
            versions: 200,
            instances: 5000,
            clusters: 10,
            frameworks: 20,
            commits: 5,
        }
    }
}

fn setup(reason: impl Into<String>) -> BenchError {
    BenchError::Setup {
        scenario: SCENARIO,
        reason: reason.into(),
    }
}

fn git_err(what: &str) -> impl Fn(git2::Error) -> BenchError + '_ {
    move |e| setup(format!("{what}: {}", e.message()))
}

// ---- the generated repository ----

/// The (framework, version) of framework-version index `i`: versions are dealt round-robin
/// over the frameworks, so each framework gets `versions / frameworks` of them.
fn framework_version(i: usize, frameworks: usize) -> (String, String) {
    (
        format!("svc{:02}", i % frameworks),
        format!("1.{}.0", i / frameworks),
    )
}

fn operator_yaml(name: &str, version: &str, app: &str) -> String {
    let plan = "    strategy: serial
    phases:
      - name: main
        strategy: serial
        steps:
          - name: config
            tasks: [config]
          - name: app
            tasks: [app]
";
    format!(
        "apiVersion: kudo.dev/v1beta1
name: {name}
operatorVersion: {version}
appVersion: \"{app}\"
kudoVersion: 0.19.0
kubernetesVersion: 1.20.0
maintainers:
  - name: kudo bench
    email: bench@kudo.invalid
url: https://example.invalid/{name}
tasks:
  - name: config
    kind: Apply
    spec:
      resources: [configmap.yaml]
  - name: app
    kind: Apply
    spec:
      resources: [deployment.yaml, service.yaml]
plans:
  deploy:
{plan}  update:
{plan}"
    )
}

const PARAMS_YAML: &str = "apiVersion: kudo.dev/v1beta1
parameters:
  - name: REPLICAS
    description: Number of pods.
    type: integer
    default: 1
  - name: MEMORY_MB
    description: Memory limit, in MiB.
    type: integer
    default: 128
  - name: LOG_LEVEL
    description: How much the service logs.
    default: info
    enum: [debug, info, warn, error]
  - name: METRICS
    description: Expose the metrics port.
    type: boolean
    default: false
";

const CONFIGMAP_YAML: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Name }}-config
data:
  service.conf: |
    log-level {{ .Params.LOG_LEVEL }}
    memory {{ .Params.MEMORY_MB }}mb
";

fn deployment_yaml(name: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{{{ .Name }}}}
spec:
  replicas: {{{{ .Params.REPLICAS }}}}
  selector:
    matchLabels:
      app: {name}
      instance: {{{{ .Name }}}}
  template:
    metadata:
      labels:
        app: {name}
        instance: {{{{ .Name }}}}
    spec:
      containers:
        - name: {name}
          image: registry.example.invalid/{name}:{{{{ .AppVersion }}}}
          ports:
            - containerPort: 8080
              name: http
            {{{{- if eq .Params.METRICS \"true\" }}}}
            - containerPort: 9090
              name: metrics
            {{{{- end }}}}
          resources:
            limits:
              memory: {{{{ add (int .Params.MEMORY_MB) 32 }}}}Mi
          volumeMounts:
            - name: config
              mountPath: /etc/{name}
      volumes:
        - name: config
          configMap:
            name: {{{{ .Name }}}}-config
"
    )
}

fn service_yaml(name: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {{{{ .Name }}}}
spec:
  selector:
    app: {name}
    instance: {{{{ .Name }}}}
  ports:
    - name: http
      port: 8080
"
    )
}

/// Placement selectors the instances cycle through, and which clusters each selects
/// (computed here independently of `placement`, to check the loader's targets).
const SELECTORS: [(&str, &str); 4] = [
    ("      matchLabels: {env: prod}\n", "serial"),
    (
        "      matchExpressions:\n        - {key: env, operator: In, values: [dev, staging]}\n",
        "parallel",
    ),
    ("      matchLabels: {region: eu}\n", "{maxUnavailable: 2}"),
    (
        "      matchExpressions:\n        - {key: env, operator: NotIn, values: [dev]}\n",
        "{maxUnavailable: \"25%\"}",
    ),
];

fn selects(selector: usize, env: &str, region: &str) -> bool {
    match selector {
        0 => env == "prod",
        1 => env == "dev" || env == "staging",
        2 => region == "eu",
        _ => env != "dev",
    }
}

const ENVS: [&str; 3] = ["dev", "staging", "prod"];

fn cluster_labels(c: usize) -> (&'static str, &'static str) {
    (ENVS[c % 3], if c.is_multiple_of(2) { "eu" } else { "us" })
}

fn clusters(n: usize) -> Vec<ClusterInfo> {
    (0..n)
        .map(|c| {
            let (env, region) = cluster_labels(c);
            ClusterInfo {
                name: format!("cluster-{c:03}"),
                labels: [
                    ("env".to_string(), env.to_string()),
                    ("region".to_string(), region.to_string()),
                ]
                .into(),
            }
        })
        .collect()
}

/// Instance `j`: its file and its `namespace/name` key.
fn instance_names(j: usize) -> (String, String) {
    let ns = format!("team-{:02}", j % 50);
    let name = format!("inst-{j:05}");
    (
        format!("instances/{ns}/{name}.yaml"),
        format!("{ns}/{name}"),
    )
}

fn instance_yaml(j: usize, fv: &(String, String), replicas: usize) -> String {
    let (_, key) = instance_names(j);
    let (ns, name) = key.split_once('/').unwrap_or(("default", &key));
    let (selector, rollout) = SELECTORS[j % SELECTORS.len()];
    let level = ["debug", "info", "warn", "error"][j % 4];
    format!(
        "apiVersion: kudo.dev/v1beta1
kind: Instance
metadata:
  name: {name}
  namespace: {ns}
spec:
  framework: {}
  version: {}
  parameters:
    REPLICAS: {replicas}
    MEMORY_MB: {}
    LOG_LEVEL: {level}
    METRICS: {}
  placement:
    clusterSelector:
{selector}    rollout: {rollout}
",
        fv.0,
        fv.1,
        64 * (1 + j % 8),
        j.is_multiple_of(3),
    )
}

/// The source repository: a bare Git repository whose `main` gets one commit per change.
struct SourceRepo {
    repo: GitRepo,
    head: Oid,
    url: String,
    /// Regular files in the tree.
    files: usize,
    /// Framework-version index of each instance.
    instance_fv: Vec<usize>,
    fvs: Vec<(String, String)>,
    /// Sum over instances of the clusters each is placed on.
    expected_targets: usize,
    time: i64,
}

fn generate(opts: &GitOptions, dir: &Path) -> Result<SourceRepo, BenchError> {
    let repo = GitRepo::init_bare(dir).map_err(git_err("init the source repository"))?;
    let frameworks = opts.frameworks.min(opts.versions);
    let fvs: Vec<(String, String)> = (0..opts.versions)
        .map(|i| framework_version(i, frameworks))
        .collect();
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (i, (name, version)) in fvs.iter().enumerate() {
        let prefix = format!("frameworks/{name}/{version}/");
        let app = format!("{}.{}", 2 + i % 3, i / frameworks);
        files.insert(
            format!("{prefix}operator.yaml"),
            operator_yaml(name, version, &app).into_bytes(),
        );
        files.insert(format!("{prefix}params.yaml"), PARAMS_YAML.into());
        files.insert(
            format!("{prefix}templates/configmap.yaml"),
            CONFIGMAP_YAML.into(),
        );
        files.insert(
            format!("{prefix}templates/deployment.yaml"),
            deployment_yaml(name).into_bytes(),
        );
        files.insert(
            format!("{prefix}templates/service.yaml"),
            service_yaml(name).into_bytes(),
        );
    }
    let cl = clusters(opts.clusters);
    let mut instance_fv = Vec::with_capacity(opts.instances);
    let mut expected_targets = 0;
    for j in 0..opts.instances {
        let fv = j % fvs.len();
        instance_fv.push(fv);
        let (path, _) = instance_names(j);
        files.insert(path, instance_yaml(j, &fvs[fv], 1 + j % 3).into_bytes());
        expected_targets += (0..cl.len())
            .filter(|&c| {
                let (env, region) = cluster_labels(c);
                selects(j % SELECTORS.len(), env, region)
            })
            .count();
    }
    let url = format!("file://{}", dir.display());
    let mut src = SourceRepo {
        repo,
        head: Oid::zero(),
        url,
        files: files.len(),
        instance_fv,
        fvs,
        expected_targets,
        time: 1_700_000_000,
    };
    src.commit(&files, "generated repository")?;
    Ok(src)
}

impl SourceRepo {
    /// Commits `changes` (path → content) on top of `main` and returns the new commit id.
    fn commit(
        &mut self,
        changes: &BTreeMap<String, Vec<u8>>,
        message: &str,
    ) -> Result<String, BenchError> {
        let repo = &self.repo;
        let baseline = if self.head.is_zero() {
            let empty = repo
                .treebuilder(None)
                .and_then(|b| b.write())
                .map_err(git_err("write the empty tree"))?;
            repo.find_tree(empty)
        } else {
            repo.find_commit(self.head).and_then(|c| c.tree())
        }
        .map_err(git_err("read the baseline tree"))?;
        let mut update = TreeUpdateBuilder::new();
        for (path, content) in changes {
            let blob = repo.blob(content).map_err(git_err("write a blob"))?;
            update.upsert(path.as_str(), blob, FileMode::Blob);
        }
        let tree = update
            .create_updated(repo, &baseline)
            .and_then(|t| repo.find_tree(t))
            .map_err(git_err("write the tree"))?;
        self.time += 60;
        let sig = Signature::new("kudo bench", "bench@kudo.invalid", &Time::new(self.time, 0))
            .map_err(git_err("signature"))?;
        let parent = if self.head.is_zero() {
            None
        } else {
            Some(
                repo.find_commit(self.head)
                    .map_err(git_err("read the parent"))?,
            )
        };
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let oid = repo
            .commit(
                Some(&format!("refs/heads/{BRANCH}")),
                &sig,
                &sig,
                message,
                &tree,
                &parents,
            )
            .map_err(git_err("commit"))?;
        if self.head.is_zero() {
            repo.set_head(&format!("refs/heads/{BRANCH}"))
                .map_err(git_err("set HEAD"))?;
        }
        self.head = oid;
        Ok(oid.to_string())
    }
}

// ---- measuring ----

/// One sync as `kudo serve` does it, timed by part.
struct Sync {
    fetch: Duration,
    /// Listing the tree at the commit (`GitSource::tree`).
    tree: Duration,
    /// The package-repository overlay: finding `spec.repository` references.
    overlay: Duration,
    /// `load_cached`: parse, validate, render (what the cache does not hold).
    load: Duration,
    stats: CacheStats,
    state: DesiredState,
}

impl Sync {
    /// Everything but the fetch: what the ≤ 50 ms goal is about.
    fn incremental(&self) -> Duration {
        self.tree + self.overlay + self.load
    }
}

fn sync(
    git: &GitSource,
    expect: &str,
    clusters: &[ClusterInfo],
    cache: &mut DesiredCache,
) -> Result<Sync, BenchError> {
    let t = Instant::now();
    let commit = git.sync().map_err(|e| setup(e.to_string()))?;
    let fetch = t.elapsed();
    if commit != expect {
        return Err(setup(format!(
            "fetch gave commit {commit}, the source is at {expect}"
        )));
    }
    let t = Instant::now();
    let tree = git.tree(&commit).map_err(|e| setup(e.to_string()))?;
    let listed = t.elapsed();
    let t = Instant::now();
    // As `sync_once`: no package repositories are configured, so the overlay only looks for
    // `spec.repository` references (through the cache, as the daemon does).
    let tree = crate::repo::frameworks::overlay_cached(
        &tree,
        &[],
        Path::new("/nonexistent"),
        &mut cache.repository_refs,
    )
    .map_err(setup)?;
    let overlay = t.elapsed();
    let t = Instant::now();
    let before = cache.stats();
    let state = desired::load_cached(&tree, &commit, clusters, cache)
        .map_err(|e| setup(format!("the generated revision does not load: {e}")))?;
    let load = t.elapsed();
    let after = cache.stats();
    Ok(Sync {
        fetch,
        tree: listed,
        overlay,
        load,
        stats: CacheStats {
            packages_parsed: after.packages_parsed - before.packages_parsed,
            packages_reused: after.packages_reused - before.packages_reused,
            instances_rendered: after.instances_rendered - before.instances_rendered,
            instances_reused: after.instances_reused - before.instances_reused,
        },
        state,
    })
}

/// One one-file commit: what changed, what it should cost, what it cost.
#[derive(Debug, Clone)]
struct Round {
    file: String,
    fetch: f64,
    tree: f64,
    overlay: f64,
    load: f64,
    incremental: f64,
    stats: CacheStats,
    expected_parsed: u64,
    expected_rendered: u64,
}

impl Round {
    fn as_expected(&self) -> bool {
        self.stats.packages_parsed == self.expected_parsed
            && self.stats.instances_rendered == self.expected_rendered
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "file": self.file,
            "fetch_seconds": self.fetch,
            "tree_seconds": self.tree,
            "overlay_seconds": self.overlay,
            "load_seconds": self.load,
            "incremental_seconds": self.incremental,
            "packages_parsed": self.stats.packages_parsed,
            "packages_reused": self.stats.packages_reused,
            "instances_rendered": self.stats.instances_rendered,
            "instances_reused": self.stats.instances_reused,
            "expected_packages_parsed": self.expected_parsed,
            "expected_instances_rendered": self.expected_rendered,
            "as_expected": self.as_expected(),
        })
    }
}

fn round(s: &Sync, file: String, expected_parsed: u64, expected_rendered: u64) -> Round {
    Round {
        file,
        fetch: s.fetch.as_secs_f64(),
        tree: s.tree.as_secs_f64(),
        overlay: s.overlay.as_secs_f64(),
        load: s.load.as_secs_f64(),
        incremental: s.incremental().as_secs_f64(),
        stats: s.stats,
        expected_parsed,
        expected_rendered,
    }
}

/// Everything measured, before it becomes a table and JSON.
struct Figures {
    files: usize,
    generate: f64,
    cold: Round,
    instances: usize,
    targets: usize,
    instance_rounds: Vec<Round>,
    package_rounds: Vec<Round>,
}

fn measure(opts: &GitOptions) -> Result<Figures, BenchError> {
    if opts.versions == 0 || opts.instances == 0 || opts.clusters == 0 {
        return Err(setup(
            "--versions, --instances and --clusters must be at least 1",
        ));
    }
    if opts.frameworks == 0 || opts.commits == 0 {
        return Err(setup("--frameworks and --commits must be at least 1"));
    }
    let dir = tempfile::tempdir().map_err(|e| setup(format!("temp dir: {e}")))?;
    let t = Instant::now();
    let mut src = generate(opts, &dir.path().join("source.git"))?;
    let generate = t.elapsed().as_secs_f64();

    let repository = Repository {
        name: "bench".into(),
        source: Source::Git(src.url.clone()),
        reference: Some(BRANCH.into()),
        path: String::new(),
        interval: Duration::from_secs(60),
        credentials: Default::default(),
        webhook_secret_file: None,
        max_deletions: crate::gitops::config::DEFAULT_MAX_DELETIONS,
        verify: None,
        timeout: Duration::from_secs(120),
        allow_rollback: false,
    };
    let git = GitSource::new(&repository, &src.url, &dir.path().join("cache"));
    let clusters = clusters(opts.clusters);
    let mut cache = DesiredCache::new();

    // Cold: an empty mirror and an empty cache.
    let head = src.head.to_string();
    let cold = sync(&git, &head, &clusters, &mut cache)?;
    let instances = cold.state.instances.len();
    if instances != opts.instances || cold.state.frameworks.len() != opts.versions {
        return Err(setup(format!(
            "cold load gave {instances} instances and {} framework versions, generated {} and {}",
            cold.state.frameworks.len(),
            opts.instances,
            opts.versions
        )));
    }
    let targets: usize = cold.state.instances.values().map(|i| i.targets.len()).sum();
    if targets != src.expected_targets {
        return Err(setup(format!(
            "cold load placed instances on {targets} cluster targets, expected {}",
            src.expected_targets
        )));
    }
    let cold = round(
        &cold,
        "(all)".into(),
        opts.versions as u64,
        opts.instances as u64,
    );

    // One instance file changes: that instance alone should be rendered again.
    let mut instance_rounds = Vec::new();
    for r in 0..opts.commits {
        let j = (r * 7919 + 13) % opts.instances;
        let (path, key) = instance_names(j);
        let replicas = 100 + r;
        let text = instance_yaml(j, &src.fvs[src.instance_fv[j]], replicas);
        let commit = src.commit(&[(path.clone(), text.into_bytes())].into(), "one instance")?;
        let s = sync(&git, &commit, &clusters, &mut cache)?;
        let seen = s
            .state
            .instances
            .get(&key)
            .and_then(|i| i.parameters.get("REPLICAS"));
        if seen.map(String::as_str) != Some(replicas.to_string().as_str()) {
            return Err(setup(format!(
                "after changing {path}, {key} has REPLICAS {seen:?}, expected {replicas}"
            )));
        }
        instance_rounds.push(round(&s, path, 0, 1));
    }

    // One template of one framework version changes: that package should be parsed again
    // and only the instances using it rendered again.
    let mut package_rounds = Vec::new();
    for r in 0..opts.commits {
        let fv = (r * 37 + 5) % opts.versions;
        let (name, version) = &src.fvs[fv];
        let path = format!("frameworks/{name}/{version}/templates/configmap.yaml");
        let text = format!("{CONFIGMAP_YAML}  bench-round: \"{r}\"\n");
        let commit = src.commit(&[(path.clone(), text.into_bytes())].into(), "one template")?;
        let s = sync(&git, &commit, &clusters, &mut cache)?;
        if s.state.instances.len() != opts.instances {
            return Err(setup(format!(
                "after changing {path}, {} instances loaded, expected {}",
                s.state.instances.len(),
                opts.instances
            )));
        }
        let users = src.instance_fv.iter().filter(|&&i| i == fv).count() as u64;
        package_rounds.push(round(&s, path, 1, users));
    }

    Ok(Figures {
        files: src.files,
        generate,
        cold,
        instances,
        targets,
        instance_rounds,
        package_rounds,
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Median and max of one field over rounds.
fn spread(rounds: &[Round], field: impl Fn(&Round) -> f64) -> (f64, f64) {
    let mut v: Vec<f64> = rounds.iter().map(field).collect();
    let max = v.iter().copied().fold(0.0, f64::max);
    (median(&mut v), max)
}

/// A count over rounds: the value when every round agrees, else `min..max`.
fn counts(rounds: &[Round], field: impl Fn(&Round) -> u64) -> String {
    let min = rounds.iter().map(&field).min().unwrap_or(0);
    let max = rounds.iter().map(&field).max().unwrap_or(0);
    if min == max {
        min.to_string()
    } else {
        format!("{min}..{max}")
    }
}

fn summary(rounds: &[Round]) -> serde_json::Value {
    let (inc_med, inc_max) = spread(rounds, |r| r.incremental);
    let (fetch_med, fetch_max) = spread(rounds, |r| r.fetch);
    let (tree_med, _) = spread(rounds, |r| r.tree);
    let (overlay_med, _) = spread(rounds, |r| r.overlay);
    let (load_med, _) = spread(rounds, |r| r.load);
    json!({
        "commits": rounds.len(),
        "incremental_median_seconds": inc_med,
        "incremental_max_seconds": inc_max,
        "fetch_median_seconds": fetch_med,
        "fetch_max_seconds": fetch_max,
        "tree_median_seconds": tree_med,
        "overlay_median_seconds": overlay_med,
        "load_median_seconds": load_med,
        "all_as_expected": rounds.iter().all(Round::as_expected),
        "rounds": rounds.iter().map(Round::json).collect::<Vec<_>>(),
    })
}

pub fn run(opts: &GitOptions) -> Result<(Table, serde_json::Value), BenchError> {
    let f = measure(opts)?;
    let peak = process::peak_rss_bytes();
    let cpu = process::cpu_seconds();

    let mut table = Table::new(
        format!(
            "git: {} framework versions ({} frameworks), {} instance files, {} files in all, {} clusters",
            opts.versions,
            opts.frameworks.min(opts.versions),
            opts.instances,
            f.files,
            opts.clusters
        ),
        &[
            "phase",
            "time (median)",
            "max",
            "packages parsed",
            "instances rendered",
            "expected",
        ],
    );
    let dash = || "-".to_string();
    table.row(vec![
        "generate repository (libgit2, one commit)".into(),
        secs(f.generate),
        dash(),
        dash(),
        dash(),
        dash(),
    ]);
    let c = &f.cold;
    table.row(vec![
        "cold: fetch (empty mirror)".into(),
        secs(c.fetch),
        dash(),
        dash(),
        dash(),
        dash(),
    ]);
    table.row(vec![
        "cold: tree + parse + render".into(),
        secs(c.incremental),
        dash(),
        c.stats.packages_parsed.to_string(),
        c.stats.instances_rendered.to_string(),
        format!("{} / {}", c.expected_parsed, c.expected_rendered),
    ]);
    table.row(vec![
        "cold: total".into(),
        secs(c.fetch + c.incremental),
        dash(),
        dash(),
        dash(),
        dash(),
    ]);
    for (label, rounds) in [
        ("one instance file", &f.instance_rounds),
        ("one package template", &f.package_rounds),
    ] {
        let (fm, fx) = spread(rounds, |r| r.fetch);
        let (im, ix) = spread(rounds, |r| r.incremental);
        let (tm, tx) = spread(rounds, |r| r.tree);
        let (om, ox) = spread(rounds, |r| r.overlay);
        let (lm, lx) = spread(rounds, |r| r.load);
        let expected = format!(
            "{} / {}",
            counts(rounds, |r| r.expected_parsed),
            counts(rounds, |r| r.expected_rendered)
        );
        let n = rounds.len();
        table.row(vec![
            format!("{label} ×{n}: fetch"),
            secs(fm),
            secs(fx),
            dash(),
            dash(),
            dash(),
        ]);
        table.row(vec![
            format!("{label} ×{n}: tree listing"),
            secs(tm),
            secs(tx),
            dash(),
            dash(),
            dash(),
        ]);
        table.row(vec![
            format!("{label} ×{n}: package-repository overlay"),
            secs(om),
            secs(ox),
            dash(),
            dash(),
            dash(),
        ]);
        table.row(vec![
            format!("{label} ×{n}: load_cached"),
            secs(lm),
            secs(lx),
            dash(),
            dash(),
            dash(),
        ]);
        table.row(vec![
            format!("{label} ×{n}: incremental (no fetch)"),
            secs(im),
            secs(ix),
            counts(rounds, |r| r.stats.packages_parsed),
            counts(rounds, |r| r.stats.instances_rendered),
            expected,
        ]);
    }
    table.row(vec![
        "peak RSS".into(),
        peak.map(mib).unwrap_or_else(dash),
        dash(),
        dash(),
        dash(),
        dash(),
    ]);

    let json = json!({
        "scenario": SCENARIO,
        "options": {
            "versions": opts.versions,
            "frameworks": opts.frameworks.min(opts.versions),
            "instances": opts.instances,
            "clusters": opts.clusters,
            "commits": opts.commits,
        },
        "target_incremental_seconds": TARGET_SECONDS,
        "repository": {
            "files": f.files,
            "framework_versions": opts.versions,
            "instance_files": opts.instances,
            "generate_seconds": f.generate,
        },
        "cold": {
            "fetch_seconds": c.fetch,
            "tree_seconds": c.tree,
            "overlay_seconds": c.overlay,
            "load_seconds": c.load,
            "parse_render_seconds": c.incremental,
            "total_seconds": c.fetch + c.incremental,
            "packages_parsed": c.stats.packages_parsed,
            "instances_rendered": c.stats.instances_rendered,
            "instances": f.instances,
            "cluster_targets": f.targets,
        },
        "instance_commit": summary(&f.instance_rounds),
        "package_commit": summary(&f.package_rounds),
        "peak_rss_bytes": peak,
        "cpu_seconds": cpu,
    });
    Ok((table, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> GitOptions {
        GitOptions {
            versions: 4,
            instances: 20,
            clusters: 3,
            frameworks: 2,
            commits: 2,
        }
    }

    #[test]
    fn one_file_commits_redo_only_what_they_touch() {
        let f = measure(&tiny()).expect("scenario runs");
        assert_eq!(f.files, 4 * 5 + 20);
        assert_eq!(f.instances, 20);
        assert_eq!(f.cold.stats.packages_parsed, 4);
        assert_eq!(f.cold.stats.instances_rendered, 20);
        assert_eq!(f.instance_rounds.len(), 2);
        for r in &f.instance_rounds {
            assert_eq!(r.stats.packages_parsed, 0, "{}", r.file);
            assert_eq!(r.stats.packages_reused, 4, "{}", r.file);
            assert_eq!(r.stats.instances_rendered, 1, "{}", r.file);
            assert_eq!(r.stats.instances_reused, 19, "{}", r.file);
        }
        for r in &f.package_rounds {
            // 20 instances over 4 versions: 5 use the changed package.
            assert_eq!(r.stats.packages_parsed, 1, "{}", r.file);
            assert_eq!(r.stats.instances_rendered, 5, "{}", r.file);
            assert_eq!(r.stats.instances_reused, 15, "{}", r.file);
            assert!(r.as_expected());
        }
    }

    #[test]
    fn run_reports_numbers_not_strings() {
        let (table, json) = run(&tiny()).expect("scenario runs");
        assert!(table.render().contains("one instance file ×2: incremental"));
        assert_eq!(json["cold"]["instances_rendered"], 20);
        assert_eq!(json["instance_commit"]["all_as_expected"], true);
        assert!(json["instance_commit"]["incremental_median_seconds"].is_f64());
        assert_eq!(json["options"]["versions"], 4);
    }

    #[test]
    fn generated_targets_match_placement() {
        // 3 clusters: dev/eu, staging/us, prod/eu.
        let by_selector: Vec<usize> = (0..4)
            .map(|s| {
                (0..3)
                    .filter(|&c| {
                        let (e, r) = cluster_labels(c);
                        selects(s, e, r)
                    })
                    .count()
            })
            .collect();
        assert_eq!(by_selector, [1, 2, 2, 2]);
    }

    #[test]
    fn zero_sizes_are_refused() {
        let opts = GitOptions {
            instances: 0,
            ..tiny()
        };
        assert!(measure(&opts).is_err());
    }
}
