//! Fuzz targets on stable Rust (proptest) for the inputs kudo takes from outside: package
//! archives (random bytes, random tar streams, structured archives with hostile names, sizes
//! and YAML), `kudo.yaml`, instance documents and webhook verification.
//!
//! Invariant for every input: no panic, and output bounded (an error message grows at most
//! linearly with the input; a loaded package is no larger than its archive allows). Each
//! target prints its executions, the slowest input and the process's peak memory.
//!
//! Cases per target: `KUDO_FUZZ_CASES` (the default keeps this file near a minute in a
//! debug build on two cores). A longer campaign:
//! `KUDO_FUZZ_CASES=20000 cargo test --release --test fuzz_inputs -- --nocapture`.
//! A failure prints the smallest input found; `PROPTEST_RNG_SEED=<n>` replays a run.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};

use kudo::gitops::config::Config;
use kudo::gitops::desired::{self, DesiredCache};
use kudo::gitops::placement::ClusterInfo;
use kudo::package::{FileTree, MemTree, Package, verify};

fn cases(default: u32) -> u32 {
    std::env::var("KUDO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The process's peak resident memory in MiB (VmHWM).
fn peak_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib / 1024)
        .unwrap_or(0)
}

/// Runs one target: `cases` generated inputs (plus shrinking runs after a failure), each
/// checked by `test`; panics are caught by the runner and reported with the smallest input.
fn fuzz<S>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let cases = cases(default_cases);
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..RunnerConfig::default()
    });
    let execs = AtomicU64::new(0);
    let slowest = Mutex::new(Duration::ZERO);
    let started = Instant::now();
    let result = runner.run(&strategy, |input| {
        execs.fetch_add(1, Ordering::Relaxed);
        let t = Instant::now();
        let r = test(input);
        let took = t.elapsed();
        let mut s = slowest.lock().expect("slowest");
        *s = (*s).max(took);
        r
    });
    let peak = peak_mib();
    eprintln!(
        "fuzz {name}: {} execs ({cases} cases) in {:.1?}, slowest input {:.1?}, process peak RSS {peak} MiB",
        execs.load(Ordering::Relaxed),
        started.elapsed(),
        *slowest.lock().expect("slowest"),
    );
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
    assert!(peak < 1024, "fuzz {name}: peak RSS {peak} MiB");
}

/// An error message grows at most linearly with the input that caused it.
fn bounded(what: &str, message: &str, input_len: usize) -> Result<(), TestCaseError> {
    let bound = 64 * 1024 + 64 * input_len;
    if message.len() > bound {
        return Err(TestCaseError::fail(format!(
            "{what}: a {}-byte message for a {input_len}-byte input",
            message.len()
        )));
    }
    Ok(())
}

// ---- package archives ----

const OPERATOR: &str = "apiVersion: kudo.dev/v1beta1\nname: demo\noperatorVersion: 0.1.0\ntasks:\n  - name: app\n    kind: Apply\n    spec:\n      resources: [cm.yaml]\nplans:\n  deploy:\n    phases:\n      - name: main\n        steps:\n          - name: everything\n            tasks: [app]\n";
const PARAMS: &str = "apiVersion: kudo.dev/v1beta1\nparameters:\n  - name: A\n    default: x\n";
const TEMPLATE: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Name }}\ndata:\n  a: {{ .Params.A }}\n";

/// Loads a package from archive bytes the way `kudo package verify` does.
fn check_package(bytes: &[u8]) -> Result<(), TestCaseError> {
    let tree = match MemTree::from_tgz("fuzz.tgz", bytes) {
        Ok(t) => t,
        Err(e) => return bounded("archive error", &e.to_string(), bytes.len()),
    };
    let paths = tree
        .paths()
        .map_err(|e| TestCaseError::fail(format!("MemTree lists: {e}")))?;
    let mut total = 0usize;
    for p in &paths {
        total += tree
            .read(p)
            .map_err(|e| TestCaseError::fail(format!("listed {p} reads: {e}")))?
            .len();
    }
    prop_assert!(total <= 64 * 1024 * 1024, "{total} bytes unpacked");
    prop_assert!(paths.len() <= 10_000);
    match Package::load(&tree) {
        Ok(pkg) => {
            let _ = verify(&pkg);
            if let Err(e) = pkg.to_resources() {
                bounded("conversion error", &e.to_string(), bytes.len())?;
            }
        }
        Err(e) => bounded("package error", &e.to_string(), bytes.len())?,
    }
    Ok(())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("gzip in memory");
    gz.finish().expect("gzip in memory")
}

/// One tar entry, written raw so that names, types and sizes can lie.
#[derive(Debug, Clone)]
struct RawEntry {
    name: Vec<u8>,
    kind: u8,
    /// The size the header claims (may differ from `content`).
    declared: u64,
    content: Vec<u8>,
}

fn tar_bytes(entries: &[RawEntry], end_blocks: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut header = tar::Header::new_gnu();
        {
            let raw = header.as_old_mut();
            let n = e.name.len().min(raw.name.len());
            raw.name[..n].copy_from_slice(&e.name[..n]);
        }
        header.set_size(e.declared);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::new(e.kind));
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&e.content);
        let pad = (512 - e.content.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    if end_blocks {
        out.extend(std::iter::repeat_n(0u8, 1024));
    }
    out
}

fn entry_name() -> impl Strategy<Value = Vec<u8>> {
    let parts = prop::sample::select(vec![
        "operator.yaml",
        "params.yaml",
        "templates",
        "cm.yaml",
        "pkg",
        "..",
        ".",
        "",
        "/",
        "é",
        "a\\b",
        "templates/x.yaml",
        "../../etc/passwd",
        "\u{0}",
    ]);
    prop_oneof![
        prop::collection::vec(parts, 1..5).prop_map(|p| p.join("/").into_bytes()),
        prop::collection::vec(any::<u8>(), 0..100),
    ]
}

fn yaml_text() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop::sample::select(vec![
        OPERATOR,
        PARAMS,
        TEMPLATE,
        "---\n",
        "a: [",
        "key:\n",
        "- 1\n",
        "&a [*a]\n",
        "{{",
        "}}",
        "{{ .Params.A }}",
        "name: x\n",
        "apiVersion: v9\n",
        "tasks: 7\n",
        "plans: {a: {}}\n",
        "parameters: [{name: A, type: integer, default: x}]\n",
        "\u{feff}",
        "\t",
        "'",
        "\"",
        "!!binary AAAA\n",
        "? a\n: b\n",
        "99999999999999999999999999\n",
    ]);
    prop_oneof![
        4 => prop::collection::vec(fragment, 0..8).prop_map(|f| f.concat().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

fn raw_entry() -> impl Strategy<Value = RawEntry> {
    let kind = prop::sample::select(vec![
        b'0', b'0', b'0', b'0', b'5', b'2', b'1', b'3', b'6', b'L', b'x', b'g', b'K', b'S', b'Z',
    ]);
    (
        entry_name(),
        kind,
        yaml_text(),
        prop::option::weighted(0.2, 0u64..(1 << 40)),
    )
        .prop_map(|(name, kind, content, lie)| RawEntry {
            declared: lie.unwrap_or(content.len() as u64),
            name,
            kind,
            content,
        })
}

#[test]
fn fuzz_package_from_random_bytes() {
    fuzz(
        "package from random bytes",
        5000,
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..2048),
            // Past the gzip layer: random tar streams.
            prop::collection::vec(any::<u8>(), 0..4096).prop_map(|b| gzip(&b)),
        ],
        |bytes| check_package(&bytes),
    );
}

#[test]
fn fuzz_package_from_structured_archives() {
    let with_package = (
        prop::collection::vec(raw_entry(), 0..6),
        yaml_text(),
        yaml_text(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(mut entries, op, params, end, prefix)| {
            let dir = if prefix { "pkg/" } else { "" };
            for (name, content) in [("operator.yaml", op), ("params.yaml", params)] {
                entries.push(RawEntry {
                    name: format!("{dir}{name}").into_bytes(),
                    kind: b'0',
                    declared: content.len() as u64,
                    content,
                });
            }
            (entries, end)
        });
    fuzz(
        "package from structured archives",
        6000,
        with_package,
        |(entries, end)| check_package(&gzip(&tar_bytes(&entries, end))),
    );
}

// ---- kudo.yaml ----

const CONFIG: &str = "listen: 127.0.0.1:8080\ncacheDir: cache\nrepositories:\n  - name: platform\n    url: https://git.example.com/acme/platform.git\n    ref: main\n    path: deploy\n    interval: 30s\n    credentials: {tokenFile: token}\n  - name: local\n    url: .\nclusters:\n  - name: dev\n    sim: {latency: 10ms, readyDelay: 2s}\n    labels: {env: dev}\n  - name: prod\n    kubeconfig: kc\n    requestTimeout: 5s\npackageRepositories:\n  - {name: community, url: 'http://127.0.0.1:1/repo'}\nnotifications:\n  queueSize: 4\n  sinks:\n    - {name: w, webhook: {url: 'http://127.0.0.1:1/h'}, events: [planComplete], instances: ['ns/*'], timeout: 2s}\n    - {name: s, slack: {url: 'https://hooks.slack.com/services/T/B/X'}}\nleaderElection: {namespace: ops, leaseDuration: 20s, renewDeadline: 15s, retryPeriod: 1s}\n";

fn config_base() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().expect("tmp");
        for f in ["token", "kc"] {
            std::fs::write(d.path().join(f), "x").expect("write");
        }
        d
    })
    .path()
}

/// Replaces the value after one `key:` of the valid config with a random scalar.
fn mutated_config() -> impl Strategy<Value = String> {
    let value = prop::sample::select(vec![
        "",
        "~",
        "[]",
        "{}",
        "-1",
        "1e400",
        "99999999999999999999999h",
        "0s",
        "1.5.5s",
        "nan",
        "'http://u:p@h/x'",
        "'https://T@h/x'",
        "'git@h:x'",
        "'ftp://h/x'",
        "'../../etc'",
        "'\u{0}'",
        "'é'",
        "[a, [b, {c: d}]]",
        "!!binary AAAA",
        "*x",
        "&x a",
        "'0.0.0.0:99999'",
        "'[::1]:1'",
        "18446744073709551616",
        "true",
    ]);
    let keys = CONFIG
        .match_indices(": ")
        .map(|(i, _)| i)
        .collect::<Vec<_>>();
    (
        prop::collection::vec((prop::sample::select(keys), value), 1..4),
        any::<bool>(),
    )
        .prop_map(|(edits, truncate)| {
            let mut text = CONFIG.to_string();
            let mut edits = edits;
            edits.sort_by_key(|e| std::cmp::Reverse(e.0));
            edits.dedup_by_key(|e| e.0);
            for (at, v) in edits {
                let start = at + 2;
                let end = text[start..]
                    .find(['\n', ',', '}'])
                    .map(|e| start + e)
                    .unwrap_or(text.len());
                text.replace_range(start..end, v);
            }
            if truncate {
                let mut cut = text.len() / 2;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            text
        })
}

#[test]
fn fuzz_kudo_yaml() {
    let text = prop_oneof![
        3 => mutated_config(),
        1 => yaml_text().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => ".{0,300}",
    ];
    fuzz("kudo.yaml", 6000, text, |text| {
        if let Err(e) = Config::parse("kudo.yaml", &text, config_base()) {
            bounded("config error", &e.to_string(), text.len())?;
        }
        Ok(())
    });
}

// ---- instance documents ----

fn example_files() -> BTreeMap<String, Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("repos-example");
    let dir = kudo::package::DirTree::new(&root);
    dir.paths()
        .expect("example lists")
        .into_iter()
        .filter(|p| !p.starts_with("instances/"))
        .map(|p| {
            let b = dir.read(&p).expect("example reads");
            (p, b)
        })
        .collect()
}

fn clusters() -> Vec<ClusterInfo> {
    ["dev", "staging", "prod"]
        .iter()
        .map(|e| ClusterInfo {
            name: e.to_string(),
            labels: [("env".to_string(), e.to_string())].into(),
        })
        .collect()
}

fn scalar() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "",
            "1",
            "-1",
            "50%",
            "-5%",
            "101%",
            "999999999999999999999%",
            "serial",
            "parallel",
            "webcache",
            "1.1.0",
            "dev",
            "In",
            "NotIn",
            "Exists",
            "DoesNotExist",
            "Gt",
            "é",
            "a/b",
            "../x",
            "{{ .Name }}",
            "true",
        ])
        .prop_map(|s| json!(s)),
        ".{0,20}".prop_map(|s| json!(s)),
    ]
}

fn instance_doc() -> impl Strategy<Value = String> {
    use serde_json::json;
    let selector = prop_oneof![
        prop::collection::btree_map(".{0,8}", scalar(), 0..3)
            .prop_map(|m| json!({"matchLabels": m})),
        (scalar(), scalar(), prop::collection::vec(scalar(), 0..3)).prop_map(|(k, o, v)| {
            json!({"matchExpressions": [{"key": k, "operator": o, "values": v}]})
        }),
        scalar(),
    ];
    let rollout = prop_oneof![
        scalar(),
        scalar().prop_map(|m| json!({"maxUnavailable": m})),
    ];
    (
        scalar(),
        scalar(),
        prop::sample::select(vec!["webcache", "relay", "ledger", "nope", "../x"]),
        prop::sample::select(vec!["1.0.0", "1.1.0", "0.1.0", "9.9.9", ""]),
        prop::collection::btree_map("[A-Z_]{1,12}", scalar(), 0..4),
        selector,
        rollout,
        prop::collection::vec(scalar(), 0..3),
        prop::option::of(scalar()),
    )
        .prop_map(|(name, ns, fw, version, params, selector, rollout, canary, self_heal)| {
            let mut spec = json!({
                "framework": fw,
                "version": version,
                "parameters": params,
                "placement": {"clusterSelector": selector, "rollout": rollout, "canary": canary},
            });
            if let Some(h) = self_heal {
                spec["selfHeal"] = h;
            }
            json!({
                "apiVersion": "kudo.dev/v1beta1",
                "kind": "Instance",
                "metadata": {"name": name, "namespace": ns},
                "spec": spec,
            })
            .to_string()
        })
}

#[test]
fn fuzz_instance_documents() {
    let base = example_files();
    let clusters = clusters();
    let cache = Mutex::new(DesiredCache::new());
    let text = prop_oneof![
        4 => (prop::collection::vec(instance_doc(), 1..3)).prop_map(|d| d.join("\n---\n")),
        1 => yaml_text().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ];
    fuzz("instance documents", 3500, text, |text| {
        let mut files = base.clone();
        files.insert("instances/fuzz.yaml".into(), text.clone().into_bytes());
        let tree = MemTree::new("fuzz", files);
        let mut cache = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match desired::load_cached(&tree, "0123456789ab", &clusters, &mut cache) {
            Ok(state) => prop_assert!(state.instances.len() <= 2),
            Err(e) => bounded("revision error", &e.to_string(), text.len())?,
        }
        Ok(())
    });
}

// ---- webhook verification ----

#[derive(Debug, Clone)]
struct Hook {
    github: Option<Vec<u8>>,
    gitlab: Option<Vec<u8>>,
    body: Vec<u8>,
    secrets: Vec<Option<String>>,
    /// Sign the body with this repository's secret (when it has one).
    sign_with: Option<usize>,
}

fn hook() -> impl Strategy<Value = Hook> {
    let header = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..80),
        "sha256=[0-9a-f]{0,70}".prop_map(String::into_bytes),
        "sha256=.{0,70}".prop_map(String::into_bytes),
    ];
    (
        prop::option::of(header.clone()),
        prop::option::of(header),
        prop::collection::vec(any::<u8>(), 0..512),
        // Blank secrets are the concern of the webhook's own tests (issue 18, item 11).
        prop::collection::vec(prop::option::of("[!-~]{1,24}"), 0..4),
        prop::option::of(0usize..4),
    )
        .prop_map(|(github, gitlab, body, secrets, sign_with)| Hook {
            github,
            gitlab,
            body,
            secrets,
            sign_with,
        })
}

#[test]
fn fuzz_webhook_authorize() {
    use axum::http::{HeaderMap, HeaderValue};
    use kudo::gitops::webhook::{HookSecret, authorize, github_signature};
    fuzz("webhook authorize", 15000, hook(), |h| {
        // As the daemon reads secret files: blank ones are unusable (fail closed).
        let repos: Vec<(String, HookSecret)> = h
            .secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let secret = match s {
                    None => HookSecret::Open,
                    Some(s) if s.trim().is_empty() => HookSecret::Unavailable("empty".into()),
                    Some(s) => HookSecret::Secret(s.trim().to_string()),
                };
                (format!("r{i}"), secret)
            })
            .collect();
        let mut headers = HeaderMap::new();
        let signed = h
            .sign_with
            .and_then(|i| h.secrets.get(i).cloned().flatten())
            .map(|s| github_signature(&s, &h.body).into_bytes());
        if let Some(v) = signed.as_ref().or(h.github.as_ref())
            && let Ok(v) = HeaderValue::from_bytes(v)
        {
            headers.insert("x-hub-signature-256", v);
        }
        if let Some(v) = &h.gitlab
            && let Ok(v) = HeaderValue::from_bytes(v)
        {
            headers.insert("x-gitlab-token", v);
        }
        match authorize(&headers, &h.body, &repos) {
            Ok(names) => {
                for n in &names {
                    let (_, secret) = repos
                        .iter()
                        .find(|(r, _)| r == n)
                        .ok_or_else(|| TestCaseError::fail(format!("unknown repo {n}")))?;
                    // A repository with a secret is accepted only with that secret. (An open
                    // one is accepted for any request that presents no readable signature
                    // or token, as documented: a header that is not visible ASCII counts
                    // as absent.)
                    let ok = match (
                        secret,
                        headers.get("x-hub-signature-256"),
                        headers.get("x-gitlab-token"),
                    ) {
                        (HookSecret::Open, _, _) => true,
                        (HookSecret::Unavailable(_), _, _) => false,
                        (HookSecret::Secret(s), Some(sig), _) => {
                            sig.to_str().map(str::to_ascii_lowercase).ok()
                                == Some(github_signature(s, &h.body))
                        }
                        (HookSecret::Secret(s), None, Some(tok)) => {
                            tok.to_str().map(str::trim).ok() == Some(s.as_str())
                        }
                        _ => false,
                    };
                    prop_assert!(ok, "{n} accepted without its secret");
                }
            }
            Err(e) => bounded("webhook refusal", &e.to_string(), h.body.len())?,
        }
        Ok(())
    });
}

// ---- notification filters and URL redaction (from kudo.yaml) ----

#[test]
fn fuzz_sink_globs_and_url_redaction() {
    let pattern = prop::collection::vec(
        prop::sample::select(vec!["*", "a", "é", "/", "ns", "-", "**", "ab"]),
        0..6,
    )
    .prop_map(|p| p.concat());
    let text = prop_oneof![".{0,12}", "[aé/ns*-]{0,12}"];
    fuzz(
        "sink globs and URL redaction",
        15000,
        (pattern, text, ".{0,80}"),
        |(pattern, text, url)| {
            let matched = kudo::notify::config::glob(&pattern, &text);
            if !pattern.contains('*') {
                prop_assert_eq!(matched, pattern == text);
            }
            if pattern == "*" {
                prop_assert!(matched);
            }
            let shown = kudo::repo::client::redact_url(&url);
            // Only scheme, host and port survive: no path, query or userinfo.
            prop_assert!(!shown.contains('@') && !shown.contains('?'), "{shown}");
            prop_assert!(shown.len() <= url.len() + 32, "{shown}");
            Ok(())
        },
    );
}
