//! The `notifications:` section of `kudo.yaml`.
//!
//! ```yaml
//! notifications:
//!   queueSize: 256            # per sink; a full queue drops (counted, logged)
//!   sinks:
//!     - name: ops
//!       webhook: {url: https://hooks.example.com/kudo}
//!       events: [planComplete, planFatalError, rolloutHalted]   # default: all
//!       instances: ["kafka/*"]                                   # namespace/name globs
//!     - name: chat
//!       slack: {url: https://hooks.slack.com/services/T/B/X}
//!     - name: commits
//!       github: {owner: acme, repo: platform, tokenFile: /run/secrets/gh}  # apiUrl optional
//!     - name: gl
//!       gitlab: {project: "acme/platform", tokenFile: gl-token, apiUrl: https://gitlab.example.com/api/v4}
//! ```
//!
//! Event kinds: planStarted, planComplete, planFatalError, rolloutHalted, revisionRefused,
//! clusterDown, clusterUp. Instance globs only filter events about an instance.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::EventKind;

#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    pub queue_size: usize,
    pub sinks: Vec<SinkConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            queue_size: 256,
            sinks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    pub name: String,
    pub kind: SinkKind,
    /// Empty: every kind.
    pub events: Vec<EventKind>,
    /// `namespace/name` globs (`*` matches any run of characters); empty: every instance.
    pub instances: Vec<String>,
    /// Upper bound of one delivery attempt.
    pub timeout: Duration,
    /// Attempts after the first on 5xx and connection errors.
    pub retries: u32,
    /// First retry delay (doubled each time).
    pub backoff: Duration,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    Webhook {
        url: String,
    },
    Slack {
        url: String,
    },
    GitHub {
        api_url: String,
        owner: String,
        repo: String,
        token_file: Option<PathBuf>,
    },
    GitLab {
        api_url: String,
        project: String,
        token_file: Option<PathBuf>,
    },
}

impl SinkConfig {
    /// Whether this sink wants the event.
    pub fn wants(&self, e: &super::Event) -> bool {
        let kind_ok = self.events.is_empty() || self.events.contains(&e.event);
        let inst_ok = match &e.instance {
            Some(i) if !self.instances.is_empty() => self.instances.iter().any(|g| glob(g, i)),
            _ => true,
        };
        kind_ok && inst_ok
    }
}

/// `*` matches any run of characters; everything else literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    if !text.starts_with(first) || !text.ends_with(last) {
        return false;
    }
    // Both ends match on character boundaries; `get` refuses an overlap of the two.
    let Some(mut rest) = text.get(first.len()..text.len().saturating_sub(last.len())) else {
        return false;
    };
    for mid in parts.iter().skip(1).take(parts.len().saturating_sub(2)) {
        match rest.find(mid) {
            Some(i) => rest = rest.get(i + mid.len()..).unwrap_or_default(),
            None => return false,
        }
    }
    true
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    queue_size: Option<usize>,
    #[serde(default)]
    sinks: Vec<RawSink>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSink {
    name: String,
    #[serde(default)]
    webhook: Option<RawUrl>,
    #[serde(default)]
    slack: Option<RawUrl>,
    #[serde(default)]
    github: Option<RawGitHub>,
    #[serde(default)]
    gitlab: Option<RawGitLab>,
    #[serde(default)]
    events: Vec<EventKind>,
    #[serde(default)]
    instances: Vec<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    backoff: Option<String>,
    #[serde(default)]
    ca_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUrl {
    url: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawGitHub {
    #[serde(default)]
    api_url: Option<String>,
    owner: String,
    repo: String,
    #[serde(default)]
    token_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawGitLab {
    #[serde(default)]
    api_url: Option<String>,
    project: String,
    #[serde(default)]
    token_file: Option<String>,
}

/// Parses the section; every problem is returned as `notifications.<path>: <reason>`.
/// Relative files are resolved against `base` and must exist.
pub fn parse(value: Option<&Value>, base: &Path) -> Result<NotifyConfig, Vec<String>> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(NotifyConfig::default());
    };
    let raw: RawConfig = serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            "notifications".to_string()
        } else {
            format!("notifications.{path}")
        };
        vec![format!("{at}: {}", e.inner())]
    })?;
    let mut problems = Vec::new();
    let mut sinks = Vec::new();
    let file = |problems: &mut Vec<String>, at: &str, f: &Option<String>| -> Option<PathBuf> {
        let f = f.as_ref()?;
        let p = base.join(f);
        if !p.is_file() {
            problems.push(format!("{at}: file {} does not exist", p.display()));
        }
        Some(p)
    };
    // A sink URL may itself be a secret (a Slack webhook's path): never echoed.
    let url_ok = |problems: &mut Vec<String>, at: &str, u: &str| match reqwest::Url::parse(u) {
        Err(e) => problems.push(format!("{at}: not a URL: {e}")),
        Ok(url) if !url.username().is_empty() || url.password().is_some() => problems.push(
            format!("{at}: credentials in the URL are refused (they would show in logs)"),
        ),
        Ok(url) if !matches!(url.scheme(), "http" | "https") => problems.push(format!(
            "{at}: scheme {:?} is not http or https",
            url.scheme()
        )),
        Ok(_) => {}
    };
    for (i, s) in raw.sinks.into_iter().enumerate() {
        let at = format!("notifications.sinks[{i}]");
        if sinks.iter().any(|x: &SinkConfig| x.name == s.name) {
            problems.push(format!("{at}.name: {:?} is used twice", s.name));
        }
        let chosen = [
            s.webhook.is_some(),
            s.slack.is_some(),
            s.github.is_some(),
            s.gitlab.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if chosen != 1 {
            problems.push(format!(
                "{at}: exactly one of webhook, slack, github, gitlab is required"
            ));
            continue;
        }
        let kind = if let Some(w) = s.webhook {
            url_ok(&mut problems, &format!("{at}.webhook.url"), &w.url);
            SinkKind::Webhook { url: w.url }
        } else if let Some(w) = s.slack {
            url_ok(&mut problems, &format!("{at}.slack.url"), &w.url);
            SinkKind::Slack { url: w.url }
        } else if let Some(g) = s.github {
            let api_url = g
                .api_url
                .unwrap_or_else(|| "https://api.github.com".to_string());
            url_ok(&mut problems, &format!("{at}.github.apiUrl"), &api_url);
            SinkKind::GitHub {
                api_url,
                owner: g.owner,
                repo: g.repo,
                token_file: file(
                    &mut problems,
                    &format!("{at}.github.tokenFile"),
                    &g.token_file,
                ),
            }
        } else if let Some(g) = s.gitlab {
            let api_url = g
                .api_url
                .unwrap_or_else(|| "https://gitlab.com/api/v4".to_string());
            url_ok(&mut problems, &format!("{at}.gitlab.apiUrl"), &api_url);
            SinkKind::GitLab {
                api_url,
                project: g.project,
                token_file: file(
                    &mut problems,
                    &format!("{at}.gitlab.tokenFile"),
                    &g.token_file,
                ),
            }
        } else {
            continue;
        };
        let mut duration = |key: &str, v: &Option<String>, default: Duration| match v {
            None => default,
            Some(t) => crate::util::duration::parse(t).unwrap_or_else(|reason| {
                problems.push(format!("{at}.{key}: {reason}"));
                default
            }),
        };
        let timeout = duration("timeout", &s.timeout, Duration::from_secs(10));
        let backoff = duration("backoff", &s.backoff, Duration::from_millis(500));
        let ca_file = file(&mut problems, &format!("{at}.caFile"), &s.ca_file);
        sinks.push(SinkConfig {
            name: s.name,
            kind,
            events: s.events,
            instances: s.instances,
            timeout,
            retries: s.retries.unwrap_or(4),
            backoff,
            ca_file,
        });
    }
    if problems.is_empty() {
        Ok(NotifyConfig {
            queue_size: raw.queue_size.unwrap_or(256).max(1),
            sinks,
        })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Event;

    fn parse_text(text: &str) -> Result<NotifyConfig, Vec<String>> {
        let v: Value = serde_saphyr::from_str(text).expect("yaml");
        parse(Some(&v), Path::new("/"))
    }

    #[test]
    fn parses_every_sink_kind_with_defaults() {
        let c = parse_text(
            "queueSize: 5\nsinks:\n- name: a\n  webhook: {url: 'http://127.0.0.1:9/x'}\n  events: [planComplete]\n  instances: ['ns/*']\n- name: b\n  github: {owner: o, repo: r}\n- name: c\n  gitlab: {project: '42', apiUrl: 'http://127.0.0.1:9/api/v4'}\n- name: d\n  slack: {url: 'http://127.0.0.1:9/s'}\n  timeout: 2s\n",
        )
        .expect("valid");
        assert_eq!(c.queue_size, 5);
        assert_eq!(c.sinks.len(), 4);
        assert!(
            matches!(&c.sinks[1].kind, SinkKind::GitHub { api_url, .. } if api_url == "https://api.github.com")
        );
        assert_eq!(c.sinks[3].timeout, Duration::from_secs(2));
        let ev = Event::new(EventKind::PlanComplete, "COMPLETE", "").instance("ns/kafka");
        assert!(c.sinks[0].wants(&ev));
        assert!(
            !c.sinks[0].wants(&Event::new(EventKind::PlanStarted, "", "").instance("ns/kafka"))
        );
        assert!(!c.sinks[0].wants(&ev.clone().instance("other/kafka")));
        assert!(c.sinks[1].wants(&ev));
    }

    #[test]
    fn bad_sinks_are_named() {
        let e = parse_text("sinks:\n- name: a\n  webhook: {url: 'x'}\n  slack: {url: 'y'}\n")
            .unwrap_err();
        assert!(
            e[0].contains("notifications.sinks[0]") && e[0].contains("exactly one"),
            "{e:?}"
        );
        let e = parse_text("sinks:\n- name: a\n  webhok: {url: 'x'}\n").unwrap_err();
        assert!(
            e[0].contains("sinks[0]") && e[0].contains("webhok"),
            "{e:?}"
        );
        let e =
            parse_text("sinks:\n- name: a\n  webhook: {url: 'http://h/'}\n  events: [planDone]\n")
                .unwrap_err();
        assert!(e[0].contains("planDone"), "{e:?}");
        let e = parse_text(
            "sinks:\n- name: a\n  github: {owner: o, repo: r, tokenFile: /nonexistent/t}\n",
        )
        .unwrap_err();
        assert!(e[0].contains("/nonexistent/t"), "{e:?}");
    }

    #[test]
    fn globs() {
        assert!(glob("*", "a/b"));
        assert!(glob("kafka/*", "kafka/x"));
        assert!(glob("*/zk-*", "ns/zk-1"));
        assert!(!glob("*/zk-*", "ns/kafka"));
        assert!(glob("a/b", "a/b"));
        assert!(!glob("a*b*c", "abx"));
    }

    #[test]
    fn globs_on_multibyte_text_do_not_panic() {
        assert!(!glob("*a", "é"));
        assert!(glob("*é", "ns/é"));
        assert!(!glob("é*é", "é"));
        assert!(glob("é*é", "éé"));
        assert!(!glob("ab*ba", "aba"));
    }
}
