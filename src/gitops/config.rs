//! The control plane's configuration file (`kudo.yaml`): repositories to sync, clusters to
//! drive and the HTTP listen address.
//!
//! Validation reports every problem at once (unknown keys, missing files, bad URLs, duplicate
//! names, ...) so that a broken config is fixed in one round trip. Secrets never appear in the
//! file itself: it names files holding them, read only when needed and never logged.

use crate::util::dns::is_dns_label;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Where a configuration came from when no file was given.
pub const EMBEDDED_NAME: &str = "<embedded default>";

/// The default configuration: `repos-example/` watched as a local directory, three simulated
/// clusters. Paths are relative to the current directory.
pub const EMBEDDED_DEFAULT: &str = r#"
listen: 127.0.0.1:8080
repositories:
  - name: example
    url: repos-example
clusters:
  - name: dev
    sim: {readyDelay: 1s}
    labels: {env: dev}
  - name: staging
    sim: {readyDelay: 1s}
    labels: {env: staging}
  - name: prod
    sim: {readyDelay: 2s}
    labels: {env: prod}
"#;

/// `repositories[].maxDeletions` when not given.
pub const DEFAULT_MAX_DELETIONS: u32 = 5;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where bare mirrors of remote repositories are kept.
    pub cache_dir: PathBuf,
    pub repositories: Vec<Repository>,
    pub clusters: Vec<ClusterConfig>,
    /// Package repositories instances may take frameworks from (`spec.repository`).
    pub package_repositories: Vec<crate::repo::RepoEntry>,
    /// Notification sinks (`notifications:`, see [`crate::notify::config`]).
    pub notifications: crate::notify::NotifyConfig,
    /// When set, only the replica holding the Lease writes to clusters (off: always writes).
    pub leader_election: Option<LeaderElectionConfig>,
    /// When set, `/api/v1/*` (except the webhook) requires `Authorization: Bearer <token>`;
    /// kept as one write token named `default` (see [`Config::api_tokens`]).
    pub api_token_file: Option<PathBuf>,
    /// Named API tokens with a role (`apiTokens:`); writes need a `write` token, and with no
    /// token at all, writes are allowed only on a loopback listener.
    pub api_tokens: Vec<ApiToken>,
    /// The name this control plane records on every Instance and object it creates
    /// (`controlPlane:`, default `kudo`): two control planes sharing a cluster must differ,
    /// and neither ever touches the other's.
    pub control_plane: String,
    /// `webhook:` limits of the Git webhook endpoint.
    pub webhook: WebhookConfig,
    /// `prometheus:` the server `prometheus` rollout gates query.
    pub prometheus: Option<PrometheusConfig>,
    /// `sharding: {enabled: true}`: clusters are spread over every replica (see
    /// `gitops::shard`); `None` when off.
    pub sharding: Option<ShardingConfig>,
}

/// `sharding: {enabled, memberLeaseDuration}`. Needs `leaderElection` (the member Leases
/// and cluster claims live beside its Lease).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardingConfig {
    /// How long a member's Lease (and with it its claims on clusters) lives unrenewed.
    pub member_lease_duration: Duration,
}

impl ShardingConfig {
    /// Clock skew between replicas the fencing tolerates: a member stops writing this long
    /// before its Lease could be judged expired by another.
    pub fn margin(&self) -> Duration {
        self.member_lease_duration / 4
    }

    /// How often a member renews its Lease and looks at the others.
    pub fn tick(&self) -> Duration {
        self.member_lease_duration / 8
    }
}

/// `prometheus: {url, bearerTokenFile, caFile}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusConfig {
    /// Base URL (`http(s)://host:port`, with any path prefix).
    pub url: String,
    /// Read for every query, so a rotated token needs no restart.
    pub bearer_token_file: Option<PathBuf>,
    /// Added to the system roots.
    pub ca_file: Option<PathBuf>,
}

/// One `apiTokens[]` entry: the token is read from `file` on every request (rotation needs
/// no restart), and `name` is what audit logs record.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiToken {
    pub name: String,
    pub file: PathBuf,
    pub role: TokenRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRole {
    Read,
    Write,
}

impl Config {
    /// Every API token, the legacy `apiTokenFile` included (as the write token `default`).
    pub fn all_api_tokens(&self) -> Vec<ApiToken> {
        let mut all = self.api_tokens.clone();
        if let Some(file) = &self.api_token_file {
            all.push(ApiToken {
                name: "default".into(),
                file: file.clone(),
                role: TokenRole::Write,
            });
        }
        all
    }
}

/// `webhook: {ratePerMinute, burst}`: a token bucket over every request to the webhook
/// endpoint (authenticated or not), so a flood is answered 429 before any HMAC is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookConfig {
    pub rate_per_minute: u32,
    pub burst: u32,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            rate_per_minute: 60,
            burst: 10,
        }
    }
}

/// `leaderElection:` where the Lease lives and its timing (see `gitops::leader`).
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderElectionConfig {
    /// `Kubeconfig` or `InCluster` (never `Sim`).
    pub access: ClusterAccess,
    pub namespace: String,
    pub name: String,
    /// Holder identity; default: pod or host name plus a random suffix.
    pub identity: Option<String>,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Repository {
    pub name: String,
    /// Instance×cluster deletions one revision may cause before they wait for confirmation
    /// (`maxDeletions`, default [`DEFAULT_MAX_DELETIONS`]).
    pub max_deletions: u32,
    pub source: Source,
    /// Branch, tag or commit; `None` for a local directory, `HEAD` of the remote otherwise.
    pub reference: Option<String>,
    /// Subfolder holding `frameworks/` and `instances/`.
    pub path: String,
    pub interval: Duration,
    pub credentials: Credentials,
    /// File holding the webhook secret (GitHub HMAC key / GitLab token).
    pub webhook_secret_file: Option<PathBuf>,
    /// When set, only commits signed by a trusted key are applied.
    pub verify: Option<Verification>,
    /// Deadline of one sync (fetch, verify, load); a sync past it is abandoned as failed.
    pub timeout: Duration,
    /// Apply a revision that does not descend from the last applied one (a branch moved
    /// back, history rewritten); off: such a revision is refused.
    pub allow_rollback: bool,
}

/// The keys a repository trusts to sign commits (`verify:`); at least one file is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// SSH keys, in the format of git's `gpg.ssh.allowedSignersFile`.
    pub allowed_signers_file: Option<PathBuf>,
    /// OpenPGP public keys, ASCII-armored (`gpg --armor --export`).
    pub openpgp_keys_file: Option<PathBuf>,
}

/// Where a repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A Git URL (`https://`, `http://`, `ssh://`, scp-like `user@host:path`, `git://`,
    /// `file://`) or a local path holding a Git repository.
    Git(String),
    /// A plain local directory (not a Git repository), watched for changes.
    Dir(PathBuf),
}

/// Files holding credentials; all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub token_file: Option<PathBuf>,
    pub username_file: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
    pub ssh_key_file: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub access: ClusterAccess,
    /// Upper bound of one API request to this cluster.
    pub request_timeout: Duration,
    /// `paused: true`: no new spec reaches this cluster (what runs keeps running).
    pub paused: bool,
    /// Maintenance windows: with any, a new spec reaches the cluster only inside one.
    pub windows: Vec<super::windows::Window>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClusterAccess {
    Kubeconfig {
        path: PathBuf,
        context: Option<String>,
    },
    InCluster,
    Sim(SimConfig),
    /// `agent: true`: the cluster runs kudo's engine itself (`kudo manager --agent`) and
    /// pulls its desired state from the management cluster, namespace
    /// [`ClusterAccess::agent_namespace`]; the control plane needs no access to it.
    Agent,
}

impl ClusterAccess {
    /// The management cluster's namespace of an agent cluster: its desired state (one
    /// ConfigMap per Instance), the status its agent writes back, its heartbeat Lease.
    pub fn agent_namespace(cluster: &str) -> String {
        format!("kudo-agent-{cluster}")
    }
}

/// An embedded simulated cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Added to every API request.
    pub latency: Duration,
    /// How long workloads take to become ready (Jobs take the same to finish).
    pub ready_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            latency: Duration::ZERO,
            ready_delay: Duration::from_millis(500),
        }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} problem(s), kudo serve refuses to start:",
            self.file,
            self.problems.len()
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates a config file; relative paths in it are relative to its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            problems: vec![format!("cannot read the file: {e}")],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&path.display().to_string(), &text, base)
    }

    /// The embedded default (used when no config file is given).
    pub fn embedded(base: &Path) -> Result<Config, ConfigError> {
        Config::parse(EMBEDDED_NAME, EMBEDDED_DEFAULT, base)
    }

    /// Parses and validates config text; `base` resolves relative paths.
    pub fn parse(file: &str, text: &str, base: &Path) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            file: file.to_string(),
            problems,
        };
        let value: Value = match serde_saphyr::from_str(text) {
            Ok(Value::Null) => Value::Object(Default::default()),
            Ok(v) => v,
            Err(e) => return Err(fail(vec![format!("not valid YAML: {e}")])),
        };
        let mut v = Validator {
            problems: Vec::new(),
            names: BTreeMap::new(),
            base: base.to_path_buf(),
        };
        let config = v.config(&value);
        if v.problems.is_empty() {
            Ok(config)
        } else {
            Err(fail(v.problems))
        }
    }

    pub fn repository(&self, name: &str) -> Option<&Repository> {
        self.repositories.iter().find(|r| r.name == name)
    }
}

/// Walks the YAML value by hand so that every problem is collected, not just serde's first.
struct Validator {
    problems: Vec<String>,
    /// Names seen per section ("repositories", "clusters"), for the duplicate check.
    names: BTreeMap<&'static str, Vec<String>>,
    base: PathBuf,
}

const TOP_KEYS: &[&str] = &[
    "listen",
    "cacheDir",
    "repositories",
    "clusters",
    "packageRepositories",
    "notifications",
    "leaderElection",
    "apiTokenFile",
    "apiTokens",
    "controlPlane",
    "webhook",
    "prometheus",
    "sharding",
];
const SHARDING_KEYS: &[&str] = &["enabled", "memberLeaseDuration"];
const PROMETHEUS_KEYS: &[&str] = &["url", "bearerTokenFile", "caFile"];
const TOKEN_KEYS: &[&str] = &["name", "file", "role"];
const WEBHOOK_KEYS: &[&str] = &["ratePerMinute", "burst"];
const LEADER_KEYS: &[&str] = &[
    "kubeconfig",
    "context",
    "inCluster",
    "namespace",
    "name",
    "identity",
    "leaseDuration",
    "renewDeadline",
    "retryPeriod",
];
const REPO_KEYS: &[&str] = &[
    "name",
    "url",
    "ref",
    "path",
    "interval",
    "credentials",
    "webhookSecretFile",
    "verify",
    "maxDeletions",
    "timeout",
    "allowRollback",
];
const VERIFY_KEYS: &[&str] = &["allowedSignersFile", "openpgpKeysFile"];
const CRED_KEYS: &[&str] = &[
    "tokenFile",
    "usernameFile",
    "passwordFile",
    "sshKeyFile",
    "knownHostsFile",
];
const CLUSTER_KEYS: &[&str] = &[
    "name",
    "kubeconfig",
    "context",
    "inCluster",
    "sim",
    "agent",
    "labels",
    "requestTimeout",
    "paused",
    "windows",
];
const WINDOW_KEYS: &[&str] = &["schedule", "duration", "timezone"];
const SIM_KEYS: &[&str] = &["latency", "readyDelay"];

impl Validator {
    fn problem(&mut self, at: &str, what: impl fmt::Display) {
        let at = if at.is_empty() { "(top level)" } else { at };
        self.problems.push(format!("{at}: {what}"));
    }

    fn map<'a>(
        &mut self,
        at: &str,
        value: &'a Value,
        known: &[&str],
    ) -> Option<&'a serde_json::Map<String, Value>> {
        let Value::Object(map) = value else {
            self.problem(at, format!("expected a mapping, found {}", kind(value)));
            return None;
        };
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                let at = join(at, key);
                self.problem(
                    &at,
                    format!("unknown key (expected one of: {})", known.join(", ")),
                );
            }
        }
        Some(map)
    }

    fn string(
        &mut self,
        at: &str,
        map: &serde_json::Map<String, Value>,
        key: &str,
    ) -> Option<String> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                self.problem(
                    &join(at, key),
                    format!("expected a string, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn duration(
        &mut self,
        at: &str,
        map: &serde_json::Map<String, Value>,
        key: &str,
        default: Duration,
    ) -> Duration {
        match self.string(at, map, key) {
            None => default,
            Some(s) => crate::util::duration::parse(&s).unwrap_or_else(|reason| {
                self.problem(&join(at, key), reason);
                default
            }),
        }
    }

    /// A path that must name an existing file.
    fn file(
        &mut self,
        at: &str,
        map: &serde_json::Map<String, Value>,
        key: &str,
    ) -> Option<PathBuf> {
        let s = self.string(at, map, key)?;
        let path = self.base.join(expand_home(&s));
        if !path.is_file() {
            self.problem(
                &join(at, key),
                format!("file {} does not exist", path.display()),
            );
        }
        Some(path)
    }

    fn config(&mut self, value: &Value) -> Config {
        let empty = serde_json::Map::new();
        let top = self.map("", value, TOP_KEYS).unwrap_or(&empty);
        let listen_text = self
            .string("", top, "listen")
            .unwrap_or_else(|| "127.0.0.1:8080".to_string());
        let listen = listen_text.parse().unwrap_or_else(|_| {
            self.problem(
                "listen",
                format!("{listen_text:?} is not an address like 127.0.0.1:8080 or [::]:8080"),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let cache_dir = self
            .string("", top, "cacheDir")
            .map(|s| self.base.join(expand_home(&s)))
            .unwrap_or_else(default_cache_dir);

        let mut repositories = Vec::new();
        match top.get("repositories") {
            None | Some(Value::Null) => {
                self.problem("repositories", "at least one repository is required");
            }
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    self.problem("repositories", "at least one repository is required");
                }
                for (i, item) in items.iter().enumerate() {
                    if let Some(r) = self.repository(&format!("repositories[{i}]"), item) {
                        repositories.push(r);
                    }
                }
            }
            Some(other) => self.problem(
                "repositories",
                format!("expected a list, found {}", kind(other)),
            ),
        }
        let mut clusters = Vec::new();
        match top.get("clusters") {
            None | Some(Value::Null) => {
                self.problem("clusters", "at least one cluster is required");
            }
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    self.problem("clusters", "at least one cluster is required");
                }
                for (i, item) in items.iter().enumerate() {
                    if let Some(c) = self.cluster(&format!("clusters[{i}]"), item) {
                        clusters.push(c);
                    }
                }
            }
            Some(other) => self.problem(
                "clusters",
                format!("expected a list, found {}", kind(other)),
            ),
        }
        for (section, names) in std::mem::take(&mut self.names) {
            let mut seen = BTreeSet::new();
            for name in names {
                if !seen.insert(name.clone()) {
                    self.problem(section, format!("name {name:?} is used twice"));
                }
            }
        }
        let notifications = crate::notify::config::parse(top.get("notifications"), &self.base)
            .unwrap_or_else(|problems| {
                self.problems.extend(problems);
                Default::default()
            });
        let package_repositories =
            crate::repo::store::parse_config(top.get("packageRepositories"), &self.base)
                .unwrap_or_else(|problems| {
                    self.problems.extend(problems);
                    Vec::new()
                });
        let leader_election = match top.get("leaderElection") {
            None | Some(Value::Null) => None,
            Some(v) => self.leader_election(v),
        };
        let api_token_file = self.file("", top, "apiTokenFile");
        let api_tokens = self.api_tokens(top.get("apiTokens"));
        let control_plane = self
            .string("", top, "controlPlane")
            .unwrap_or_else(|| crate::engine::objects::DEFAULT_CONTROL_PLANE.to_string());
        if !is_dns_label(&control_plane) {
            self.problem(
                "controlPlane",
                format!(
                    "{control_plane:?} must be a DNS label (lowercase letters, digits and '-', at most 63): it becomes a label value"
                ),
            );
        }
        let webhook = self.webhook(top.get("webhook"));
        let prometheus = self.prometheus(top.get("prometheus"));
        let sharding = self.sharding(top.get("sharding"), leader_election.is_some());
        if leader_election.is_none() {
            for (i, c) in clusters.iter().enumerate() {
                if c.access == ClusterAccess::Agent {
                    self.problem(
                        &format!("clusters[{i}].agent"),
                        format!("agent cluster {} needs leaderElection: its desired state and heartbeat live in the management cluster, the one leaderElection names", c.name),
                    );
                }
            }
        }
        Config {
            listen,
            cache_dir,
            repositories,
            clusters,
            package_repositories,
            notifications,
            leader_election,
            api_token_file,
            api_tokens,
            control_plane,
            webhook,
            prometheus,
            sharding,
        }
    }

    fn sharding(&mut self, value: Option<&Value>, leader_election: bool) -> Option<ShardingConfig> {
        let at = "sharding";
        let value = value.filter(|v| !v.is_null())?;
        let map = self.map(at, value, SHARDING_KEYS)?;
        let enabled = match map.get("enabled") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.problem(
                    &join(at, "enabled"),
                    format!("expected true or false, found {}", kind(other)),
                );
                false
            }
        };
        let member_lease_duration =
            self.duration(at, map, "memberLeaseDuration", Duration::from_secs(15));
        if member_lease_duration < Duration::from_secs(2) {
            self.problem(&join(at, "memberLeaseDuration"), "must be at least 2s");
        }
        if enabled && !leader_election {
            self.problem(
                &join(at, "enabled"),
                "sharding needs leaderElection: the member Leases and cluster claims live in its namespace, and its leader is the one writer of Instance specs",
            );
        }
        enabled.then_some(ShardingConfig {
            member_lease_duration,
        })
    }

    fn prometheus(&mut self, value: Option<&Value>) -> Option<PrometheusConfig> {
        let value = value.filter(|v| !v.is_null())?;
        let map = self.map("prometheus", value, PROMETHEUS_KEYS)?;
        let url = self.string("prometheus", map, "url");
        let bearer_token_file = self.file("prometheus", map, "bearerTokenFile");
        let ca_file = self.file("prometheus", map, "caFile");
        let Some(url) = url else {
            self.problem(
                "prometheus.url",
                "is required (e.g. http://prometheus:9090)",
            );
            return None;
        };
        match reqwest::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                self.problem(
                    "prometheus.url",
                    format!("{url:?} is not an http:// or https:// URL"),
                );
                return None;
            }
        }
        Some(PrometheusConfig {
            url,
            bearer_token_file,
            ca_file,
        })
    }

    fn api_tokens(&mut self, value: Option<&Value>) -> Vec<ApiToken> {
        let items = match value {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.problem(
                    "apiTokens",
                    format!("expected a list, found {}", kind(other)),
                );
                return Vec::new();
            }
        };
        let mut tokens = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("apiTokens[{i}]");
            let Some(map) = self.map(&at, item, TOKEN_KEYS) else {
                continue;
            };
            let name = self.name("apiTokens", &at, map);
            let file = self.file(&at, map, "file");
            if file.is_none() {
                self.problem(
                    &join(&at, "file"),
                    "is required (the token is read from it)",
                );
            }
            let role = match self.string(&at, map, "role").as_deref() {
                Some("read") => Some(TokenRole::Read),
                Some("write") => Some(TokenRole::Write),
                None => {
                    self.problem(&join(&at, "role"), "is required: read or write");
                    None
                }
                Some(other) => {
                    self.problem(
                        &join(&at, "role"),
                        format!("{other:?} is not a role (expected read or write)"),
                    );
                    None
                }
            };
            if let (Some(name), Some(file), Some(role)) = (name, file, role) {
                tokens.push(ApiToken { name, file, role });
            }
        }
        tokens
    }

    fn webhook(&mut self, value: Option<&Value>) -> WebhookConfig {
        let mut config = WebhookConfig::default();
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return config;
        };
        let Some(map) = self.map("webhook", value, WEBHOOK_KEYS) else {
            return config;
        };
        for (key, slot) in [
            ("ratePerMinute", &mut config.rate_per_minute),
            ("burst", &mut config.burst),
        ] {
            match map.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Number(n))
                    if n.as_u64().is_some_and(|n| (1..=1_000_000).contains(&n)) =>
                {
                    *slot = n
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(*slot);
                }
                Some(other) => self.problem(
                    &join("webhook", key),
                    format!("expected a whole number from 1 to 1000000, found {other}"),
                ),
            }
        }
        config
    }

    fn leader_election(&mut self, value: &Value) -> Option<LeaderElectionConfig> {
        let at = "leaderElection";
        let map = self.map(at, value, LEADER_KEYS)?;
        let access = if self.string(at, map, "kubeconfig").is_some() {
            ClusterAccess::Kubeconfig {
                path: self.file(at, map, "kubeconfig").unwrap_or_default(),
                context: self.string(at, map, "context"),
            }
        } else {
            ClusterAccess::InCluster
        };
        let namespace = self
            .string(at, map, "namespace")
            .unwrap_or_else(|| "kudo-system".to_string());
        let name = self
            .string(at, map, "name")
            .unwrap_or_else(|| "kudo".to_string());
        let lease_duration = self.duration(at, map, "leaseDuration", Duration::from_secs(15));
        let renew_deadline = self.duration(at, map, "renewDeadline", Duration::from_secs(10));
        let retry_period = self.duration(at, map, "retryPeriod", Duration::from_secs(2));
        if lease_duration < Duration::from_secs(1) {
            self.problem(&join(at, "leaseDuration"), "must be at least 1s");
        }
        if renew_deadline >= lease_duration {
            self.problem(
                &join(at, "renewDeadline"),
                "must be shorter than leaseDuration (the gap keeps two leaders apart)",
            );
        }
        if retry_period >= renew_deadline {
            self.problem(
                &join(at, "retryPeriod"),
                "must be shorter than renewDeadline",
            );
        }
        // A leader notices a lapsed renewal up to one retryPeriod late; a standby may take
        // the lease leaseDuration after the last renewal it saw.
        if retry_period + renew_deadline >= lease_duration {
            self.problem(
                &join(at, "retryPeriod"),
                "retryPeriod + renewDeadline must be shorter than leaseDuration (otherwise a standby may take the lease while the old leader still writes)",
            );
        }
        Some(LeaderElectionConfig {
            access,
            namespace,
            name,
            identity: self.string(at, map, "identity"),
            lease_duration,
            renew_deadline,
            retry_period,
        })
    }

    fn name(
        &mut self,
        section: &'static str,
        at: &str,
        map: &serde_json::Map<String, Value>,
    ) -> Option<String> {
        let name = self.string(at, map, "name");
        if let Some(n) = &name {
            self.names.entry(section).or_default().push(n.clone());
        }
        match &name {
            None => self.problem(&join(at, "name"), "is required"),
            Some(n) if !is_dns_label(n) => self.problem(
                &join(at, "name"),
                format!(
                    "{n:?} must be a DNS label (lowercase letters, digits and '-', at most 63)"
                ),
            ),
            _ => {}
        }
        name
    }

    fn repository(&mut self, at: &str, value: &Value) -> Option<Repository> {
        let map = self.map(at, value, REPO_KEYS)?;
        let name = self.name("repositories", at, map);
        let url = self.string(at, map, "url");
        let source = match &url {
            None => {
                self.problem(&join(at, "url"), "is required");
                None
            }
            Some(u) => match classify_url(u, &self.base) {
                Ok(s) => Some(s),
                Err(reason) => {
                    // A refused credential names the repository too, never the secret.
                    let reason = match &name {
                        Some(n) if url_has_credentials(u) => format!("repository {n}: {reason}"),
                        _ => reason,
                    };
                    self.problem(&join(at, "url"), reason);
                    None
                }
            },
        };
        let reference = self.string(at, map, "ref");
        if let (Some(Source::Dir(_)), Some(_)) = (&source, &reference) {
            self.problem(
                &join(at, "ref"),
                "a plain local directory has no refs; remove `ref` or make it a Git repository",
            );
        }
        let path = self
            .string(at, map, "path")
            .unwrap_or_default()
            .trim_matches('/')
            .to_string();
        if path.split('/').any(|c| c == "..") {
            self.problem(
                &join(at, "path"),
                format!("{path:?} must stay inside the repository"),
            );
        }
        let interval = self.duration(at, map, "interval", Duration::from_secs(60));
        let credentials = match map.get("credentials") {
            None | Some(Value::Null) => Credentials::default(),
            Some(c) => {
                let cat = join(at, "credentials");
                match self.map(&cat, c, CRED_KEYS) {
                    Some(c) => {
                        let creds = Credentials {
                            token_file: self.file(&cat, c, "tokenFile"),
                            username_file: self.file(&cat, c, "usernameFile"),
                            password_file: self.file(&cat, c, "passwordFile"),
                            ssh_key_file: self.file(&cat, c, "sshKeyFile"),
                            known_hosts_file: self.file(&cat, c, "knownHostsFile"),
                        };
                        if creds.username_file.is_some() != creds.password_file.is_some() {
                            self.problem(&cat, "usernameFile and passwordFile go together");
                        }
                        creds
                    }
                    None => Credentials::default(),
                }
            }
        };
        let webhook_secret_file = self.file(at, map, "webhookSecretFile");
        let max_deletions = match map.get("maxDeletions") {
            None | Some(Value::Null) => DEFAULT_MAX_DELETIONS,
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)) => {
                n.as_u64().unwrap_or_default() as u32
            }
            Some(other) => {
                self.problem(
                    &join(at, "maxDeletions"),
                    format!("{other} is not a whole number ≥ 0"),
                );
                DEFAULT_MAX_DELETIONS
            }
        };
        let verify = match map.get("verify") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let vat = join(at, "verify");
                let v = self.map(&vat, v, VERIFY_KEYS).cloned().unwrap_or_default();
                let verification = Verification {
                    allowed_signers_file: self.file(&vat, &v, "allowedSignersFile"),
                    openpgp_keys_file: self.file(&vat, &v, "openpgpKeysFile"),
                };
                if verification.allowed_signers_file.is_none()
                    && verification.openpgp_keys_file.is_none()
                {
                    self.problem(
                        &vat,
                        "needs allowedSignersFile (SSH keys), openpgpKeysFile (OpenPGP keys) or both",
                    );
                }
                if matches!(source, Some(Source::Dir(_))) {
                    self.problem(&vat, "a plain local directory has no commits to verify");
                }
                Some(verification)
            }
        };
        let timeout = self.duration(at, map, "timeout", Duration::from_secs(120));
        if timeout.is_zero() {
            self.problem(&join(at, "timeout"), "must be longer than 0s");
        }
        let allow_rollback = match map.get("allowRollback") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.problem(
                    &join(at, "allowRollback"),
                    format!("expected true or false, found {}", kind(other)),
                );
                false
            }
        };
        Some(Repository {
            name: name?,
            source: source?,
            reference,
            path,
            interval,
            credentials,
            webhook_secret_file,
            verify,
            max_deletions,
            timeout,
            allow_rollback,
        })
    }

    fn cluster(&mut self, at: &str, value: &Value) -> Option<ClusterConfig> {
        let map = self.map(at, value, CLUSTER_KEYS)?;
        let name = self.name("clusters", at, map);
        let mut labels = BTreeMap::new();
        match map.get("labels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(l)) => {
                for (k, v) in l {
                    match v {
                        Value::String(s) => {
                            labels.insert(k.clone(), s.clone());
                        }
                        Value::Number(_) | Value::Bool(_) => {
                            labels.insert(k.clone(), v.to_string());
                        }
                        other => self.problem(
                            &join(&join(at, "labels"), k),
                            format!("expected a string, found {}", kind(other)),
                        ),
                    }
                }
            }
            Some(other) => self.problem(
                &join(at, "labels"),
                format!("expected a mapping, found {}", kind(other)),
            ),
        }
        let request_timeout = self.duration(at, map, "requestTimeout", Duration::from_secs(10));
        let in_cluster = matches!(map.get("inCluster"), Some(Value::Bool(true)));
        let agent = matches!(map.get("agent"), Some(Value::Bool(true)));
        let chosen = ["kubeconfig", "inCluster", "sim", "agent"]
            .iter()
            .filter(|k| {
                map.get(**k)
                    .is_some_and(|v| !v.is_null() && *v != Value::Bool(false))
            })
            .count();
        if chosen != 1 {
            self.problem(
                at,
                "exactly one of kubeconfig, inCluster: true, sim: {} or agent: true is required",
            );
        }
        let access = if let Some(sim) = map.get("sim").filter(|v| !v.is_null()) {
            let sat = join(at, "sim");
            let defaults = SimConfig::default();
            let s = self.map(&sat, sim, SIM_KEYS).cloned().unwrap_or_default();
            ClusterAccess::Sim(SimConfig {
                latency: self.duration(&sat, &s, "latency", defaults.latency),
                ready_delay: self.duration(&sat, &s, "readyDelay", defaults.ready_delay),
            })
        } else if in_cluster {
            ClusterAccess::InCluster
        } else if agent {
            if let Some(n) = &name
                && n.len() > 52
            {
                self.problem(
                    &join(at, "agent"),
                    format!("cluster name {n:?} is too long for an agent cluster: its namespace kudo-agent-{n} must be a DNS label (at most 52 characters)"),
                );
            }
            ClusterAccess::Agent
        } else {
            let path = self.file(at, map, "kubeconfig").unwrap_or_default();
            ClusterAccess::Kubeconfig {
                path,
                context: self.string(at, map, "context"),
            }
        };
        let paused = match map.get("paused") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.problem(
                    &join(at, "paused"),
                    format!("expected true or false, found {}", kind(other)),
                );
                false
            }
        };
        let windows = self.windows(at, name.as_deref(), map.get("windows"));
        Some(ClusterConfig {
            name: name?,
            labels,
            access,
            request_timeout,
            paused,
            windows,
        })
    }

    fn windows(
        &mut self,
        at: &str,
        cluster: Option<&str>,
        value: Option<&Value>,
    ) -> Vec<super::windows::Window> {
        let cluster = cluster.unwrap_or("?");
        let at = join(at, "windows");
        let items = match value {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.problem(&at, format!("expected a list, found {}", kind(other)));
                return Vec::new();
            }
        };
        let mut windows = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let wat = format!("{at}[{i}]");
            let Some(map) = self.map(&wat, item, WINDOW_KEYS) else {
                continue;
            };
            let Some(schedule) = self.string(&wat, map, "schedule") else {
                self.problem(
                    &join(&wat, "schedule"),
                    "is required (cron: \"0 22 * * 1-5\")",
                );
                continue;
            };
            if self.string(&wat, map, "duration").is_none() {
                self.problem(&join(&wat, "duration"), "is required (e.g. 4h)");
                continue;
            }
            let duration = self.duration(&wat, map, "duration", Duration::ZERO);
            let timezone = self.string(&wat, map, "timezone");
            match super::windows::Window::new(&schedule, duration, timezone.as_deref()) {
                Ok(w) => windows.push(w),
                Err(reason) => self.problem(&wat, format!("cluster {cluster}: {reason}")),
            }
        }
        windows
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn expand_home(s: &str) -> PathBuf {
    match (s.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(s),
    }
}

fn default_cache_dir() -> PathBuf {
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir).join("kudo"),
        None => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".cache/kudo"),
            None => std::env::temp_dir().join("kudo-cache"),
        },
    }
}

/// Whether a `scheme://` URL carries a secret in its userinfo: any userinfo over https,
/// http and git (`https://TOKEN@host`, `https://user:pass@host`); over ssh only a password
/// (`ssh://git@host/...` names a user, not a secret).
fn url_has_credentials(url: &str) -> bool {
    let Some((scheme, rest)) = url.trim().split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    match authority.rsplit_once('@') {
        None => false,
        Some((user, _)) => scheme != "ssh" || user.contains(':'),
    }
}

/// Decides what a repository `url` is. Local paths must exist; a local path holding a Git
/// repository (a `.git` folder, or a bare repository) is synced as Git, any other folder
/// is watched as a plain directory.
pub fn classify_url(url: &str, base: &Path) -> Result<Source, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("is empty".to_string());
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        return match scheme {
            "https" | "http" | "ssh" | "git" => {
                let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
                let (userinfo, host_port) = match authority.rsplit_once('@') {
                    Some((user, host)) => (Some(user), host),
                    None => (None, authority),
                };
                // Messages show the URL without its userinfo, which may be a secret.
                let shown = match userinfo {
                    Some(_) => format!(
                        "{scheme}://{host_port}{}",
                        rest.get(authority.len()..).unwrap_or_default()
                    ),
                    None => url.to_string(),
                };
                if url_has_credentials(url) {
                    return Err(format!(
                        "{shown:?}: credentials in the URL are refused (they would show in logs and status); put the secret in credentials.tokenFile or usernameFile/passwordFile"
                    ));
                }
                let host = host_port.split(':').next().unwrap_or_default();
                if host.is_empty() {
                    Err(format!("{shown:?} has no host"))
                } else if rest.split_once('/').is_none_or(|(_, p)| p.is_empty()) {
                    Err(format!("{shown:?} names no repository path"))
                } else {
                    Ok(Source::Git(url.to_string()))
                }
            }
            "file" => {
                if rest.is_empty() {
                    Err(format!("{url:?} names no path"))
                } else if !Path::new(rest).exists() {
                    Err(format!("{url:?}: {rest} does not exist"))
                } else {
                    Ok(Source::Git(url.to_string()))
                }
            }
            other => Err(format!(
                "{url:?}: unsupported scheme {other:?} (use https, http, ssh, git, file or a local path)"
            )),
        };
    }
    // scp-like `user@host:path` (not a Windows drive or a local path with a colon).
    if let Some((left, right)) = url.split_once(':')
        && left.contains('@')
        && !left.contains('/')
        && !right.is_empty()
    {
        return Ok(Source::Git(url.to_string()));
    }
    let path = base.join(expand_home(url));
    if !path.is_dir() {
        return Err(format!(
            "{url:?}: local directory {} does not exist",
            path.display()
        ));
    }
    if path.join(".git").exists() || (path.join("HEAD").is_file() && path.join("objects").is_dir())
    {
        Ok(Source::Git(path.display().to_string()))
    } else {
        Ok(Source::Dir(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str, base: &Path) -> Vec<String> {
        Config::parse("kudo.yaml", text, base)
            .expect_err("config must be refused")
            .problems
    }

    #[test]
    fn full_example_parses() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("kc"), "apiVersion: v1\nkind: Config\n").expect("write");
        std::fs::write(dir.path().join("token"), "t").expect("write");
        std::fs::write(dir.path().join("hook"), "s").expect("write");
        let text = r#"
listen: 0.0.0.0:9090
cacheDir: cache
repositories:
  - name: platform
    url: https://git.example.com/acme/platform.git
    ref: main
    path: deploy/kudo
    interval: 30s
    credentials: {tokenFile: token}
    webhookSecretFile: hook
clusters:
  - name: prod-eu
    kubeconfig: kc
    context: prod-eu
    labels: {env: prod, region: eu}
    requestTimeout: 5s
  - name: dev
    sim: {latency: 10ms, readyDelay: 2s}
    labels: {env: dev}
"#;
        let c = Config::parse("kudo.yaml", text, dir.path()).expect("valid");
        assert_eq!(c.listen.port(), 9090);
        assert_eq!(c.cache_dir, dir.path().join("cache"));
        let r = &c.repositories[0];
        assert_eq!(r.reference.as_deref(), Some("main"));
        assert_eq!(r.path, "deploy/kudo");
        assert_eq!(r.interval, Duration::from_secs(30));
        assert_eq!(r.credentials.token_file, Some(dir.path().join("token")));
        assert_eq!(c.clusters[0].labels["region"], "eu");
        assert_eq!(c.clusters[0].request_timeout, Duration::from_secs(5));
        assert_eq!(
            c.clusters[1].access,
            ClusterAccess::Sim(SimConfig {
                latency: Duration::from_millis(10),
                ready_delay: Duration::from_secs(2)
            })
        );
    }

    #[test]
    fn every_problem_is_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = r#"
listen: nowhere
colour: blue
repositories:
  - name: a
    url: ftp://example.com/x.git
    intervall: 5s
  - name: a
    url: https:///nohost
  - name: Bad_Name
    url: ./missing-dir
clusters:
  - name: one
    kubeconfig: /nonexistent/kubeconfig
  - name: one
    sim: {latencyy: 1s}
  - name: two
"#;
        let p = problems(text, dir.path());
        let all = p.join("\n");
        for needle in [
            "listen: \"nowhere\" is not an address",
            "colour: unknown key",
            "repositories[0].url: \"ftp://example.com/x.git\": unsupported scheme \"ftp\"",
            "repositories[0].intervall: unknown key",
            "repositories[1].url: \"https:///nohost\" has no host",
            "repositories[2].name: \"Bad_Name\" must be a DNS label",
            "repositories[2].url: \"./missing-dir\": local directory",
            "clusters[0].kubeconfig: file /nonexistent/kubeconfig does not exist",
            "clusters[1].sim.latencyy: unknown key",
            "clusters[2]: exactly one of kubeconfig",
            "repositories: name \"a\" is used twice",
            "clusters: name \"one\" is used twice",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(p.len(), 12, "{all}");
    }

    #[test]
    fn missing_sections_and_credential_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let all = problems("listen: 127.0.0.1:1\n", dir.path()).join("\n");
        assert!(
            all.contains("repositories: at least one repository is required"),
            "{all}"
        );
        assert!(
            all.contains("clusters: at least one cluster is required"),
            "{all}"
        );
        let text = "repositories:\n  - name: r\n    url: https://h/x.git\n    credentials: {usernameFile: u}\n    webhookSecretFile: s\nclusters:\n  - {name: c, sim: {}}\n";
        let all = problems(text, dir.path()).join("\n");
        assert!(
            all.contains("repositories[0].credentials.usernameFile: file"),
            "{all}"
        );
        assert!(
            all.contains("usernameFile and passwordFile go together"),
            "{all}"
        );
        assert!(
            all.contains("repositories[0].webhookSecretFile: file"),
            "{all}"
        );
    }

    #[test]
    fn urls_are_classified() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path();
        assert!(matches!(
            classify_url("git@github.com:acme/x.git", base),
            Ok(Source::Git(_))
        ));
        assert!(matches!(
            classify_url("git://127.0.0.1:9418/x", base),
            Ok(Source::Git(_))
        ));
        assert!(matches!(classify_url(".", base), Ok(Source::Dir(_))));
        std::fs::create_dir(base.join("repo")).expect("mkdir");
        std::fs::create_dir(base.join("repo/.git")).expect("mkdir");
        assert!(matches!(classify_url("repo", base), Ok(Source::Git(_))));
        let url = format!("file://{}", base.join("repo").display());
        assert!(matches!(classify_url(&url, base), Ok(Source::Git(_))));
        assert!(classify_url("file:///does/not/exist", base).is_err());
        let err = classify_url("https://bot:ghp-secret@github.com/acme/x.git", base)
            .expect_err("refused");
        assert!(err.contains("credentials"), "{err}");
        assert!(!err.contains("ghp-secret"), "{err}");
        assert!(matches!(
            classify_url("ssh://git@github.com/acme/x.git", base),
            Ok(Source::Git(_))
        ));
    }

    #[test]
    fn repository_url_with_a_token_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        for url in [
            "https://ghp_T0KEN@github.com/acme/x.git",
            "https://bot:T0KEN@github.com/acme/x.git",
            "http://T0KEN@127.0.0.1:1/x.git",
            "https://T0KEN@/x.git",
            "git://T0KEN:x@h/x.git",
        ] {
            let text = format!(
                "repositories:\n  - name: platform\n    url: {url}\nclusters: [{{name: c, sim: {{}}}}]\n"
            );
            let e = Config::parse("kudo.yaml", &text, dir.path())
                .expect_err("refused")
                .to_string();
            assert!(!e.contains("T0KEN"), "{e}");
            assert!(
                e.contains("repositories[0].url") && e.contains("platform"),
                "names the repository and the field: {e}"
            );
            assert!(e.contains("credentials"), "{e}");
        }
        // An ssh user is not a credential.
        for url in [
            "git@github.com:acme/x.git",
            "ssh://git@github.com/acme/x.git",
        ] {
            let text = format!(
                "repositories:\n  - name: platform\n    url: '{url}'\nclusters: [{{name: c, sim: {{}}}}]\n"
            );
            Config::parse("kudo.yaml", &text, dir.path()).expect("ssh user is fine");
        }
    }

    #[test]
    fn sink_and_package_repository_urls_with_credentials_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "repositories: [{name: r, url: .}]\nclusters: [{name: c, sim: {}}]\npackageRepositories:\n  - {name: community, url: 'https://T0KEN@example.com/repo'}\nnotifications:\n  sinks:\n    - {name: w, webhook: {url: 'https://u:T0KEN@example.com/h'}}\n    - {name: s, slack: {url: 'hooks.slack.com/services/T0KEN'}}\n";
        let e = Config::parse("kudo.yaml", text, dir.path())
            .expect_err("refused")
            .to_string();
        assert!(!e.contains("T0KEN"), "{e}");
        assert!(e.contains("packageRepositories[0]"), "{e}");
        assert!(e.contains("notifications.sinks[0].webhook.url"), "{e}");
        assert!(e.contains("notifications.sinks[1].slack.url"), "{e}");
    }

    #[test]
    fn embedded_default_is_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let c = Config::embedded(root).expect("embedded default is valid");
        assert_eq!(c.clusters.len(), 3);
        assert!(matches!(c.repositories[0].source, Source::Dir(_)));
    }

    #[test]
    fn production_keys_parse_and_bad_values_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["kc", "signers", "token", "keys.asc"] {
            std::fs::write(dir.path().join(f), "x").expect("write");
        }
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join(".git")).expect("mkdir");
        let text = format!(
            "apiTokenFile: token\nleaderElection: {{kubeconfig: kc, context: mgmt, namespace: ops, leaseDuration: 20s, renewDeadline: 15s, retryPeriod: 1s}}\nrepositories:\n  - {{name: r, url: {}, verify: {{allowedSignersFile: signers, openpgpKeysFile: keys.asc}}}}\n  - {{name: p, url: {}, verify: {{openpgpKeysFile: keys.asc}}}}\nclusters:\n  - {{name: c, sim: {{}}}}\n",
            repo.display(),
            repo.display()
        );
        let c = Config::parse("kudo.yaml", &text, dir.path()).expect("valid");
        let le = c.leader_election.expect("leader election");
        assert_eq!(le.namespace, "ops");
        assert_eq!(le.name, "kudo");
        assert_eq!(le.lease_duration, Duration::from_secs(20));
        assert!(
            matches!(le.access, ClusterAccess::Kubeconfig { ref context, .. } if context.as_deref() == Some("mgmt"))
        );
        assert_eq!(c.api_token_file, Some(dir.path().join("token")));
        assert_eq!(
            c.repositories[0].verify,
            Some(Verification {
                allowed_signers_file: Some(dir.path().join("signers")),
                openpgp_keys_file: Some(dir.path().join("keys.asc")),
            })
        );
        assert_eq!(
            c.repositories[1].verify,
            Some(Verification {
                allowed_signers_file: None,
                openpgp_keys_file: Some(dir.path().join("keys.asc")),
            })
        );
        let in_cluster = "leaderElection: {}\nrepositories: [{name: r, url: .}]\nclusters: [{name: c, sim: {}}]\n";
        let c = Config::parse("kudo.yaml", in_cluster, dir.path()).expect("valid");
        let le = c.leader_election.expect("leader election");
        assert_eq!(le.access, ClusterAccess::InCluster);
        assert_eq!(le.namespace, "kudo-system");

        let bad = "apiTokenFile: missing-token\nleaderElection: {leaseDuration: 5s, renewDeadline: 5s, retryPeriod: 6s, colour: red}\nrepositories:\n  - {name: r, url: ., verify: {allowedSignersFile: nope}}\n  - {name: s, url: ., verify: {}}\n  - {name: t, url: ., verify: {openpgpKeysFile: no-keys.asc}}\nclusters: [{name: c, sim: {}}]\n";
        let all = problems(bad, dir.path()).join("\n");
        for needle in [
            "apiTokenFile: file",
            "missing-token does not exist",
            "leaderElection.colour: unknown key",
            "leaderElection.renewDeadline: must be shorter than leaseDuration",
            "leaderElection.retryPeriod: must be shorter than renewDeadline",
            "repositories[0].verify.allowedSignersFile: file",
            "repositories[0].verify: a plain local directory has no commits to verify",
            "repositories[1].verify: needs allowedSignersFile (SSH keys), openpgpKeysFile (OpenPGP keys) or both",
            "repositories[2].verify.openpgpKeysFile: file",
            "no-keys.asc does not exist",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn retry_and_renew_that_reach_the_lease_duration_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = |lease: &str, renew: &str, retry: &str| {
            format!(
                "leaderElection: {{leaseDuration: {lease}, renewDeadline: {renew}, retryPeriod: {retry}}}\nrepositories: [{{name: r, url: .}}]\nclusters: [{{name: c, sim: {{}}}}]\n"
            )
        };
        // 10s + 5s = 15s: a standby could take over while the leader has not yet noticed.
        let all = problems(&text("15s", "10s", "5s"), dir.path()).join("\n");
        assert!(
            all.contains("leaderElection.retryPeriod: retryPeriod + renewDeadline must be shorter than leaseDuration"),
            "{all}"
        );
        assert!(Config::parse("kudo.yaml", &text("15s", "10s", "2s"), dir.path()).is_ok());
    }

    /// `sharding:` is off unless enabled, needs leaderElection, and names its bad fields.
    #[test]
    fn sharding_needs_leader_election_and_names_bad_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = "repositories: [{name: r, url: .}]\nclusters: [{name: c, sim: {}}]\n";
        let on = format!(
            "{base}leaderElection: {{}}\nsharding: {{enabled: true, memberLeaseDuration: 8s}}\n"
        );
        let c = Config::parse("kudo.yaml", &on, dir.path()).expect("valid");
        let s = c.sharding.expect("sharding on");
        assert_eq!(s.member_lease_duration, Duration::from_secs(8));
        assert_eq!(s.margin(), Duration::from_secs(2));
        let off = format!("{base}leaderElection: {{}}\nsharding: {{enabled: false}}\n");
        assert_eq!(
            Config::parse("kudo.yaml", &off, dir.path())
                .expect("valid")
                .sharding,
            None
        );
        let bad = format!(
            "{base}sharding: {{enabled: yes-please, memberLeaseDuration: 1s, replicas: 3}}\n"
        );
        let all = problems(&bad, dir.path()).join("\n");
        for needle in [
            "sharding.enabled: expected true or false",
            "sharding.memberLeaseDuration: must be at least 2s",
            "sharding.replicas: unknown key",
        ] {
            assert!(all.contains(needle), "{needle:?} in:\n{all}");
        }
        let alone = format!("{base}sharding: {{enabled: true}}\n");
        let all = problems(&alone, dir.path()).join("\n");
        assert!(
            all.contains("sharding.enabled: sharding needs leaderElection"),
            "{all}"
        );
    }

    /// kudo.yaml takes the one duration syntax: Go durations (`1h30m` was refused before)
    /// and bare seconds (as it always did).
    #[test]
    fn durations_are_go_durations_or_bare_seconds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let doc = |interval: &str| {
            format!(
                "clusters:\n  - {{name: c, sim: {{}}}}\nrepositories:\n  - name: r\n    url: https://h/x.git\n    interval: {interval}\n"
            )
        };
        for (text, secs) in [("1h30m", 5400), ("30", 30), ("500ms", 0), ("2m", 120)] {
            let c = Config::parse("kudo.yaml", &doc(text), dir.path()).expect(text);
            assert_eq!(c.repositories[0].interval.as_secs(), secs, "{text}");
        }
        let e = Config::parse("kudo.yaml", &doc("5 parsecs"), dir.path())
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("repositories[0].interval") && e.contains("unknown unit"),
            "{e}"
        );
    }

    #[test]
    fn sync_timeout_rollback_and_webhook_limits_are_read_with_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = "clusters:\n  - {name: c, sim: {}}\nrepositories:\n  - name: r\n    url: https://h/x.git\n";
        let c = Config::parse("kudo.yaml", base, dir.path()).expect("valid");
        assert_eq!(c.repositories[0].timeout, Duration::from_secs(120));
        assert!(!c.repositories[0].allow_rollback);
        assert_eq!(c.webhook, WebhookConfig::default());
        let text = format!(
            "{base}    timeout: 30s\n    allowRollback: true\nwebhook: {{ratePerMinute: 5, burst: 2}}\n"
        );
        let c = Config::parse("kudo.yaml", &text, dir.path()).expect("valid");
        assert_eq!(c.repositories[0].timeout, Duration::from_secs(30));
        assert!(c.repositories[0].allow_rollback);
        assert_eq!(
            c.webhook,
            WebhookConfig {
                rate_per_minute: 5,
                burst: 2
            }
        );
        let text = format!(
            "{base}    timeout: 0s\n    allowRollback: maybe\nwebhook: {{ratePerMinute: 0, burst: x, rate: 1}}\n"
        );
        let all = problems(&text, dir.path()).join("\n");
        for needle in [
            "repositories[0].timeout: must be longer than 0s",
            "repositories[0].allowRollback: expected true or false, found a string",
            "webhook.ratePerMinute: expected a whole number from 1 to 1000000, found 0",
            "webhook.burst: expected a whole number",
            "webhook.rate: unknown key",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn paused_clusters_and_windows_are_read_and_bad_windows_name_the_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "repositories: [{name: r, url: https://h/x.git}]\nclusters:\n  - {name: a, sim: {}, paused: true}\n  - name: b\n    sim: {}\n    windows: [{schedule: '0 22 * * 1-5', duration: 4h, timezone: Europe/Berlin}]\n";
        let c = Config::parse("kudo.yaml", text, dir.path()).expect("valid");
        assert!(c.clusters[0].paused && c.clusters[0].windows.is_empty());
        assert!(!c.clusters[1].paused);
        assert_eq!(c.clusters[1].windows[0].schedule, "0 22 * * 1-5");
        assert_eq!(
            c.clusters[1].windows[0].duration,
            Duration::from_secs(4 * 3600)
        );
        let bad = "repositories: [{name: r, url: https://h/x.git}]\nclusters:\n  - name: prod-eu\n    sim: {}\n    paused: sometimes\n    windows:\n      - {schedule: '0 25 * * *', duration: 1h}\n      - {schedule: '0 22 * * *', duration: 1h, timezone: Mars/Olympus}\n      - {schedule: '0 22 * * *'}\n      - {schedule: '0 22 * * *', duration: 1h, every: day}\n";
        let all = problems(bad, dir.path()).join("\n");
        for needle in [
            "clusters[0].paused: expected true or false",
            "clusters[0].windows[0]: cluster prod-eu: schedule \"0 25 * * *\"",
            "clusters[0].windows[1]: cluster prod-eu: timezone \"Mars/Olympus\"",
            "clusters[0].windows[2].duration: is required",
            "clusters[0].windows[3].every: unknown key",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn prometheus_for_rollout_gates_is_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = "clusters:\n  - {name: c, sim: {}}\nrepositories:\n  - name: r\n    url: https://h/x.git\n";
        let c = Config::parse("kudo.yaml", base, dir.path()).expect("valid");
        assert_eq!(c.prometheus, None);
        std::fs::write(dir.path().join("token"), "t").expect("token");
        let text =
            format!("{base}prometheus: {{url: 'https://prom:9090/p', bearerTokenFile: token}}\n");
        let c = Config::parse("kudo.yaml", &text, dir.path()).expect("valid");
        assert_eq!(
            c.prometheus,
            Some(PrometheusConfig {
                url: "https://prom:9090/p".into(),
                bearer_token_file: Some(dir.path().join("token")),
                ca_file: None,
            })
        );
        let text = format!("{base}prometheus: {{url: 'prom:9090', caFile: nope.pem, step: 1}}\n");
        let all = problems(&text, dir.path()).join("\n");
        for needle in [
            "prometheus.url: \"prom:9090\" is not an http:// or https:// URL",
            "prometheus.caFile: file",
            "prometheus.step: unknown key",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        let all = problems(&format!("{base}prometheus: {{}}\n"), dir.path()).join("\n");
        assert!(all.contains("prometheus.url: is required"), "{all}");
    }
}
