//! What each sink kind sends for an event. Pure: the token is handed in.

use serde_json::json;

use super::config::SinkKind;
use super::{Event, EventKind};
use crate::repo::http::Request;

/// The request announcing `event` to a sink, or `None` when the sink has nothing to say about
/// it (a commit status needs a commit id and a plan or rollout outcome).
pub fn request(kind: &SinkKind, token: Option<&str>, event: &Event) -> Option<Request> {
    match kind {
        SinkKind::Webhook { url } => Some(Request::post_json(
            url,
            &serde_json::to_value(event).unwrap_or_default(),
        )),
        SinkKind::Slack { url } => Some(Request::post_json(url, &json!({"text": text(event)}))),
        SinkKind::GitHub {
            api_url,
            owner,
            repo,
            ..
        } => {
            let sha = commit(event)?;
            let state = match event.event {
                EventKind::PlanStarted => "pending",
                EventKind::PlanComplete => "success",
                EventKind::PlanFatalError | EventKind::RolloutHalted => "failure",
                EventKind::RevisionRefused => "error",
                EventKind::ClusterDown
                | EventKind::ClusterUp
                | EventKind::DeletionsHeld
                | EventKind::ApiWrite
                | EventKind::GateWaiting
                | EventKind::ApprovalRequired
                | EventKind::RolloutPaused
                | EventKind::RolloutResumed
                | EventKind::DependencyBlocked
                | EventKind::RolloutReverted => return None,
            };
            let url = format!(
                "{}/repos/{owner}/{repo}/statuses/{sha}",
                api_url.trim_end_matches('/')
            );
            let body = json!({
                "state": state,
                "context": context(event),
                "description": truncate(&description(event), 140),
            });
            let mut r = Request::post_json(url, &body)
                .header("accept", "application/vnd.github+json")
                .header("x-github-api-version", "2022-11-28");
            if let Some(t) = token {
                r = r.header("authorization", format!("Bearer {t}"));
            }
            Some(r)
        }
        SinkKind::GitLab {
            api_url, project, ..
        } => {
            let sha = commit(event)?;
            let state = match event.event {
                EventKind::PlanStarted => "running",
                EventKind::PlanComplete => "success",
                EventKind::PlanFatalError
                | EventKind::RolloutHalted
                | EventKind::RevisionRefused => "failed",
                EventKind::ClusterDown
                | EventKind::ClusterUp
                | EventKind::DeletionsHeld
                | EventKind::ApiWrite
                | EventKind::GateWaiting
                | EventKind::ApprovalRequired
                | EventKind::RolloutPaused
                | EventKind::RolloutResumed
                | EventKind::DependencyBlocked
                | EventKind::RolloutReverted => return None,
            };
            let id: String = form_urlencoded::byte_serialize(project.as_bytes()).collect();
            let url = format!(
                "{}/projects/{id}/statuses/{sha}",
                api_url.trim_end_matches('/')
            );
            let body = json!({
                "state": state,
                "name": context(event),
                "description": truncate(&description(event), 255),
            });
            let mut r = Request::post_json(url, &body);
            if let Some(t) = token {
                r = r.header("private-token", t);
            }
            Some(r)
        }
    }
}

/// One status context per cluster (`kudo/<cluster>`); `kudo` for events of no cluster.
pub fn context(event: &Event) -> String {
    match &event.cluster {
        Some(c) => format!("kudo/{c}"),
        None => "kudo".into(),
    }
}

/// The commit of the event, when it is one Git commit id (40 hex). Revisions combined
/// from several repositories (`a,b`) or content hashes of plain directories (`sha256:`…)
/// get no commit status.
fn commit(event: &Event) -> Option<&str> {
    let r = event.revision.as_deref()?;
    let hex = r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then_some(r)
}

fn description(event: &Event) -> String {
    match (&event.instance, &event.plan) {
        (Some(i), Some(p)) => format!("{i} {p}: {}", event.status),
        (Some(i), None) => format!("{i}: {}", event.message),
        _ => event.message.clone(),
    }
}

/// A one-line summary for chat.
fn text(event: &Event) -> String {
    let mut s = format!("kudo {}:", event.event.as_str());
    if let Some(c) = &event.cluster {
        s.push_str(&format!(" cluster {c}"));
    }
    if let Some(i) = &event.instance {
        s.push_str(&format!(" instance {i}"));
    }
    if let Some(p) = &event.plan {
        s.push_str(&format!(" plan {p} {}", event.status));
    }
    if let Some(r) = &event.revision {
        s.push_str(&format!(" at {}", r.get(..12).unwrap_or(r)));
    }
    if !event.message.is_empty() {
        s.push_str(&format!(" — {}", event.message));
    }
    s
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn event(kind: EventKind) -> Event {
        let mut e = Event::new(kind, "COMPLETE", "plan deploy complete")
            .cluster("prod-eu")
            .instance("ns/kafka")
            .revision(SHA);
        e.plan = Some("deploy".into());
        e
    }

    fn body(r: &Request) -> serde_json::Value {
        serde_json::from_slice(r.body.as_deref().expect("body")).expect("json")
    }

    #[test]
    fn github_status_per_cluster_context() {
        let kind = SinkKind::GitHub {
            api_url: "http://127.0.0.1:1/".into(),
            owner: "acme".into(),
            repo: "platform".into(),
            token_file: None,
        };
        let r = request(&kind, Some("t0k"), &event(EventKind::PlanComplete)).expect("request");
        assert_eq!(
            r.url,
            format!("http://127.0.0.1:1/repos/acme/platform/statuses/{SHA}")
        );
        let b = body(&r);
        assert_eq!(b["state"], "success");
        assert_eq!(b["context"], "kudo/prod-eu");
        assert!(
            r.headers
                .contains(&("authorization".into(), "Bearer t0k".into()))
        );
        assert_eq!(
            body(&request(&kind, None, &event(EventKind::PlanStarted)).expect("r"))["state"],
            "pending"
        );
        assert!(request(&kind, None, &event(EventKind::ClusterDown)).is_none());
        let mut combined = event(EventKind::PlanComplete);
        combined.revision = Some(format!("{SHA},{SHA}"));
        assert!(request(&kind, None, &combined).is_none());
    }

    #[test]
    fn gitlab_status_encodes_the_project_path() {
        let kind = SinkKind::GitLab {
            api_url: "http://h/api/v4".into(),
            project: "acme/platform".into(),
            token_file: None,
        };
        let r = request(&kind, Some("x"), &event(EventKind::PlanFatalError)).expect("request");
        assert_eq!(
            r.url,
            format!("http://h/api/v4/projects/acme%2Fplatform/statuses/{SHA}")
        );
        assert_eq!(body(&r)["state"], "failed");
        assert_eq!(body(&r)["name"], "kudo/prod-eu");
    }

    #[test]
    fn webhook_and_slack_bodies() {
        let r = request(
            &SinkKind::Webhook {
                url: "http://h/x".into(),
            },
            None,
            &event(EventKind::PlanComplete),
        )
        .expect("r");
        let b = body(&r);
        for k in [
            "cluster", "instance", "plan", "status", "revision", "message",
        ] {
            assert!(b.get(k).is_some(), "{k} missing in {b}");
        }
        assert_eq!(b["event"], "planComplete");
        let r = request(
            &SinkKind::Slack {
                url: "http://h/s".into(),
            },
            None,
            &event(EventKind::PlanComplete),
        )
        .expect("r");
        let t = body(&r)["text"].as_str().expect("text").to_string();
        assert!(
            t.contains("prod-eu") && t.contains("ns/kafka") && t.contains("deploy"),
            "{t}"
        );
    }
}
