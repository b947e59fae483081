//! Real Git repositories and simulated clusters that outlive a daemon, with a framework
//! whose objects exercise ownership (shared by the deletion-safety and chaos tests).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kudo::cluster::{Cluster, ObjectRef};
use kudo::gitops::config::Config;
use kudo::gitops::serve::{Options, Shared};
use kudo::sim::SimCluster;
use kudo::sim::workload::{WorkloadConfig, Workloads};
use serde_json::Value;

pub const TIMEOUT: Duration = Duration::from_secs(60);

// ---- real Git repositories ----

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=kudo-test",
            "-c",
            "user.email=test@kudo.invalid",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub struct Repo {
    pub path: PathBuf,
}

impl Repo {
    pub fn new(root: &Path, name: &str) -> Repo {
        let path = root.join(name);
        std::fs::create_dir_all(&path).expect("mkdir");
        git(&path, &["init", "-q", "-b", "main"]);
        let repo = Repo { path };
        write_store(&repo);
        repo
    }

    pub fn write(&self, file: &str, text: &str) {
        let p = self.path.join(file);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.path.join(file)).expect("rm");
    }

    pub fn commit(&self, msg: &str) -> String {
        git(&self.path, &["add", "-A"]);
        git(&self.path, &["commit", "-q", "--allow-empty", "-m", msg]);
        git(&self.path, &["rev-parse", "HEAD"])
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.path.display())
    }
}

/// A framework whose objects exercise ownership: a ConfigMap of its own, a ClusterRole whose
/// name is a parameter (two instances can share it), an optional pre-existing ConfigMap, a
/// PersistentVolumeClaim and a ConfigMap marked `resource-policy: keep`.
pub fn write_store(repo: &Repo) {
    let base = "frameworks/store/1.0.0";
    repo.write(
        &format!("{base}/operator.yaml"),
        "apiVersion: kudo.dev/v1beta1\nname: store\noperatorVersion: 1.0.0\nkubernetesVersion: 1.20.0\ntasks:\n  - {name: main, kind: Apply, spec: {resources: [config.yaml, role.yaml, adopt.yaml, data.yaml, keep.yaml]}}\nplans:\n  deploy:\n    strategy: serial\n    phases:\n      - name: main\n        strategy: serial\n        steps:\n          - {name: main, tasks: [main]}\n",
    );
    repo.write(
        &format!("{base}/params.yaml"),
        "apiVersion: kudo.dev/v1beta1\nparameters:\n  - {name: ROLE, default: \"\"}\n  - {name: ADOPT, default: \"false\"}\n  - {name: DATA, default: \"false\"}\n",
    );
    repo.write(
        &format!("{base}/templates/config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Name }}-config\ndata:\n  owner: {{ .Namespace }}\n",
    );
    repo.write(
        &format!("{base}/templates/role.yaml"),
        "{{ if ne .Params.ROLE \"\" }}apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {{ .Params.ROLE }}\nrules: []\n{{ end }}",
    );
    repo.write(
        &format!("{base}/templates/adopt.yaml"),
        "{{ if eq .Params.ADOPT \"true\" }}apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: preexisting\ndata:\n  from: kudo\n{{ end }}",
    );
    repo.write(
        &format!("{base}/templates/data.yaml"),
        "{{ if eq .Params.DATA \"true\" }}apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {{ .Name }}-data\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n{{ end }}",
    );
    repo.write(
        &format!("{base}/templates/keep.yaml"),
        "{{ if eq .Params.DATA \"true\" }}apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Name }}-keep\n  annotations: {kudo.dev/resource-policy: keep}\n{{ end }}",
    );
}

pub fn instance_doc(name: &str, namespace: &str, params: &[(&str, &str)], extra: &str) -> String {
    let mut p = String::new();
    for (k, v) in params {
        p.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    let params = if p.is_empty() {
        String::new()
    } else {
        format!("  parameters:\n{p}")
    };
    format!(
        "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  framework: store\n  version: 1.0.0\n{params}  placement:\n    clusterSelector:\n      matchLabels: {{fleet: test}}\n{extra}"
    )
}

// ---- simulated clusters that outlive a daemon ----

pub struct Fleet {
    pub sims: BTreeMap<String, SimCluster>,
    _workloads: Vec<Workloads>,
}

impl Fleet {
    pub fn new(names: &[&str]) -> Fleet {
        let mut sims = BTreeMap::new();
        let mut workloads = Vec::new();
        for name in names {
            let sim = SimCluster::new(name);
            workloads.push(sim.spawn_workloads(WorkloadConfig {
                ready_delay: Duration::from_millis(20),
                job_duration: Duration::from_millis(20),
            }));
            sims.insert(name.to_string(), sim);
        }
        Fleet {
            sims,
            _workloads: workloads,
        }
    }

    /// Simulated clusters of which only `simulated` run the workload simulator: on the
    /// others nothing becomes ready (a Deployment stays unavailable, a plan IN_PROGRESS).
    pub fn with_workloads_on(names: &[&str], simulated: &[&str]) -> Fleet {
        let mut fleet = Fleet::new(&[]);
        for name in names {
            let sim = SimCluster::new(name);
            if simulated.contains(name) {
                fleet._workloads.push(sim.spawn_workloads(WorkloadConfig {
                    ready_delay: Duration::from_millis(20),
                    job_duration: Duration::from_millis(20),
                }));
            }
            fleet.sims.insert(name.to_string(), sim);
        }
        fleet
    }

    pub fn cluster(&self, name: &str) -> Cluster {
        Cluster::from_client(name, self.sims[name].client())
    }

    pub fn options(&self) -> Options {
        Options {
            observe_interval: Duration::from_millis(200),
            probe_interval: Duration::from_millis(500),
            clock: Default::default(),
            engine_poll: Duration::from_millis(200),
            debounce: Duration::from_millis(50),
            sims: self.sims.clone(),
            member: None,
        }
    }

    /// kudo.yaml for these clusters (all labelled fleet=test) and the given repositories
    /// (`name`, url, extra keys as YAML lines).
    pub fn config(&self, dir: &Path, top: &str, repos: &[(&str, String, &str)]) -> Config {
        let mut text = format!(
            "cacheDir: {}\n{top}repositories:\n",
            dir.join("cache").display()
        );
        for (name, url, extra) in repos {
            text.push_str(&format!(
                "  - name: {name}\n    url: {url}\n    interval: 1h\n{extra}"
            ));
        }
        text.push_str("clusters:\n");
        for name in self.sims.keys() {
            text.push_str(&format!(
                "  - name: {name}\n    sim: {{}}\n    labels: {{fleet: test}}\n"
            ));
        }
        Config::parse("kudo.yaml", &text, dir).expect("config")
    }
}

pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match condition().await {
            Ok(()) => return,
            Err(state) => assert!(Instant::now() < deadline, "timed out: {what}: {state}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn instance_ref(ns: &str, name: &str) -> ObjectRef {
    ObjectRef::new("kudo.dev/v1beta1", "Instance", Some(ns), name)
}

pub async fn get(cluster: &Cluster, r: &ObjectRef) -> Option<Value> {
    match cluster.get_opt(r).await {
        Ok(v) => v,
        // kudo's CRDs are not installed yet.
        Err(e) if e.kind() == kudo::cluster::ErrorKind::UnknownKind => None,
        Err(e) => panic!("get {r}: {e}"),
    }
}

pub async fn uid(cluster: &Cluster, r: &ObjectRef) -> Option<String> {
    get(cluster, r)
        .await
        .and_then(|v| v.pointer("/metadata/uid")?.as_str().map(str::to_string))
}

/// Waits until the Instance's deploy plan is COMPLETE on the cluster.
pub async fn wait_complete(cluster: &Cluster, ns: &str, name: &str) {
    let r = instance_ref(ns, name);
    wait_until(
        &format!("{ns}/{name} COMPLETE on {}", cluster.name()),
        || async {
            let v = get(cluster, &r).await;
            let status = v
                .as_ref()
                .and_then(|v| v.pointer("/status/planStatus/deploy/status"))
                .and_then(Value::as_str)
                .map(str::to_string);
            if status.as_deref() == Some("COMPLETE") {
                Ok(())
            } else {
                Err(format!("{status:?}"))
            }
        },
    )
    .await;
}

pub async fn wait_gone(cluster: &Cluster, r: &ObjectRef) {
    wait_until(&format!("{r} deleted on {}", cluster.name()), || async {
        match get(cluster, r).await {
            None => Ok(()),
            Some(_) => Err("still there".into()),
        }
    })
    .await;
}

/// Planner passes since now: the daemon has looked at least `n` more times.
pub async fn wait_passes(shared: &Shared, n: u64) {
    let target = shared.passes() + n;
    wait_until("planner passes", || async {
        if shared.passes() >= target {
            Ok(())
        } else {
            Err(format!("{} of {target}", shared.passes()))
        }
    })
    .await;
}

pub fn kept(shared: &Shared, cluster: &str) -> String {
    shared
        .status()
        .clusters
        .iter()
        .find(|c| c.name == cluster)
        .map(|c| c.kept_instances.join("\n"))
        .unwrap_or_default()
}
