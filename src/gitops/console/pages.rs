//! The console's pages: server-rendered HTML (maud escapes every value, so text from Git
//! shows as text), one function per page, pure functions of the status views.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::model::{Cell, Filters, Fleet, STATUSES, cell_id};
use crate::api::{ExecutionStatus, Instance, OperatorVersion, PlanStatus};
use crate::gitops::serve::{ClusterStatus, InstanceStatusView, RepoStatus};
use crate::gitops::status::InstanceDetail;

/// What every page carries besides its content.
#[derive(Debug, Clone, Default)]
pub struct Chrome {
    pub title: String,
    /// The session's CSRF token (sessions only).
    pub csrf: Option<String>,
    /// Whether this viewer may act (a write token, or no tokens on a loopback listener).
    pub can_write: bool,
    /// Why actions are off when they are.
    pub write_note: Option<String>,
    /// The signed-in token's name (with tokens configured).
    pub signed_in: Option<String>,
    /// The event stream this page listens to.
    pub events: String,
    /// Which menu entry is current: `fleet`, `revisions`, `clusters` or empty.
    pub nav: &'static str,
    /// No menu and no live indicator (the sign-in page shows nothing else).
    pub bare: bool,
}

pub fn status_class(status: &str) -> String {
    format!("st-{}", status.to_lowercase().replace('_', "-"))
}

/// A status as a badge: colour and text, never colour alone.
fn badge(status: &str) -> Markup {
    html! { span class={"badge " (status_class(status))} { (status.replace('_', " ")) } }
}

fn short(rev: &str) -> &str {
    rev.get(..7).unwrap_or(rev)
}

pub fn layout(c: &Chrome, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (c.title) " · kudo" }
                link rel="stylesheet" href="/console/console.css";
                @if let Some(t) = &c.csrf { meta name="kudo-csrf" content=(t); }
                meta name="kudo-events" content=(c.events);
                script src="/console/console.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                @if !c.bare { header {
                    nav aria-label="Main" {
                        a class="brand" href="/" { "kudo" }
                        a href="/" aria-current=[(c.nav == "fleet").then_some("page")] { "Fleet" }
                        a href="/revisions" aria-current=[(c.nav == "revisions").then_some("page")] { "Revisions" }
                        a href="/clusters" aria-current=[(c.nav == "clusters").then_some("page")] { "Clusters" }
                    }
                    div class="tools" {
                        span id="live" role="status" aria-live="polite" data-state="connecting" { "connecting…" }
                        button type="button" id="theme" aria-label="Switch light or dark theme" { "◐ theme" }
                        @if let Some(who) = &c.signed_in {
                            form method="post" action="/logout" class="inline" {
                                @if let Some(t) = &c.csrf { input type="hidden" name="csrf" value=(t); }
                                span class="who" { "signed in as " (who) }
                                " "
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                } }
                @if let Some(note) = &c.write_note { p class="note" { (note) } }
                main id="main" tabindex="-1" { (main) }
                div id="toast" role="status" aria-live="polite" {}
                dialog id="confirm" aria-labelledby="confirm-text" {
                    form method="dialog" {
                        p id="confirm-text" {}
                        menu {
                            button value="cancel" type="submit" { "Cancel" }
                            button value="ok" type="submit" id="confirm-ok" class="primary" { "Confirm" }
                        }
                    }
                }
            }
        }
    }
}

/// An action button: the script confirms it, then posts `body` to `url`.
fn action(c: &Chrome, label: &str, url: &str, body: &str, confirm: &str) -> Markup {
    html! {
        button type="button" class="action" data-url=(url) data-body=(body) data-confirm=(confirm)
            disabled[!c.can_write] title=[(!c.can_write).then_some("needs a write token")] { (label) }
    }
}

fn select(name: &str, label: &str, options: &[String], current: Option<&str>) -> Markup {
    html! {
        label { (label) " "
            select name=(name) {
                option value="" { "all" }
                @for o in options {
                    option value=(o) selected[current == Some(o.as_str())] { (o) }
                }
            }
        }
    }
}

fn cell_html(cluster: &str, key: &str, cell: Option<&Cell>) -> Markup {
    let id = cell_id(cluster, key);
    match cell {
        None => {
            html! { td id=(format!("cell:{id}")) class="st-not-targeted" data-status="NOT_TARGETED" { span class="status" { "—" } } }
        }
        Some(cell) => html! {
            td id=(format!("cell:{id}")) class=(status_class(&cell.status)) data-status=(cell.status) {
                a href=(format!("/instances/{key}#cluster-{cluster}")) title=(cell.message) {
                    span class="status" { (cell.status.replace('_', " ")) }
                    " "
                    span class="plan" { (cell.plan) }
                    " "
                    span class="steps" { @if cell.total > 0 { (cell.done) "/" (cell.total) } }
                    " "
                    span class="rev" { @if let Some(r) = &cell.revision { (short(r)) } @if !cell.current && cell.status != "NOT_APPLIED" { " (older spec)" } }
                }
            }
        },
    }
}

/// `/`: the fleet matrix, one row per cluster and one column per instance.
pub fn matrix(c: &Chrome, fleet: &Fleet, f: &Filters) -> Markup {
    let view = fleet.view(f);
    let (namespaces, frameworks) = fleet.choices();
    let statuses: Vec<String> = STATUSES.iter().map(|s| s.to_string()).collect();
    let main = html! {
        h1 { "Fleet" }
        form class="filters" method="get" action="/" role="search" {
            (select("namespace", "Namespace", &namespaces, f.namespace()))
            (select("framework", "Framework", &frameworks, f.framework()))
            label { "Cluster label " input type="text" name="label" placeholder="env=prod" value=[f.label()]; }
            (select("status", "Status", &statuses, f.status()))
            label { "Search " input type="search" id="search" name="q" placeholder="cluster or instance (/)" value=[f.q()]; }
            button type="submit" { "Filter" }
            @if *f != Filters::default() { a href="/" { "clear" } }
        }
        ul class="counts" id="counts" aria-label="Cells by status" {
            @for (s, n) in &view.counts {
                li data-status=(s) { (badge(s)) " " b { (n) } }
            }
        }
        @if fleet.instances.is_empty() {
            p { "No instance is declared yet: see " a href="/revisions" { "Revisions" } "." }
        }
        table id="matrix" class="matrix" {
            caption { (view.matching_rows) " clusters × " (view.columns.len()) " instances; page " (view.page) " of " (view.pages) }
            thead {
                tr {
                    th scope="col" { "Cluster" }
                    @for &i in &view.columns {
                        @let col = &fleet.instances[i];
                        th scope="col" id=(format!("col:{}", col.key())) {
                            a href=(format!("/instances/{}", col.key())) { (col.key()) }
                            br;
                            small { (col.framework) " " (col.version) " · " (short(&col.revision)) }
                            br;
                            small class="rollout" { (col.rollout) }
                        }
                    }
                }
            }
            tbody {
                @for &r in &view.rows {
                    @let row = &fleet.clusters[r];
                    tr id=(format!("row:{}", row.name)) {
                        th scope="row" class=(if row.up { "up" } else { "down" }) {
                            span class={"badge " (if row.up { "st-up" } else { "st-down" })} { (if row.up { "up" } else { "down" }) }
                            " " (row.name)
                            small class="reason" { @if let Some(why) = &row.reason { (why) } }
                        }
                        @for &i in &view.columns {
                            @let key = fleet.instances[i].key();
                            (cell_html(&row.name, &key, fleet.cell(&row.name, &key)))
                        }
                    }
                }
            }
        }
        nav class="pager" aria-label="Pages" {
            @if view.page > 1 { a rel="prev" href=(format!("/?{}", f.query(view.page - 1))) { "← previous" } }
            span { "page " (view.page) " of " (view.pages) }
            @if view.page < view.pages { a rel="next" href=(format!("/?{}", f.query(view.page + 1))) { "next →" } }
        }
    };
    layout(c, main)
}

fn plan_rows(ov: Option<&OperatorVersion>, inst: &Instance) -> Vec<(String, Option<PlanStatus>)> {
    let recorded = inst
        .status
        .as_ref()
        .map(|s| s.plan_status.clone())
        .unwrap_or_default();
    let mut names: Vec<String> = ov
        .map(|ov| ov.spec.plans.keys().cloned().collect())
        .unwrap_or_default();
    names.extend(recorded.keys().cloned());
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let p = recorded.get(&n).cloned();
            (n, p)
        })
        .collect()
}

fn st(s: Option<ExecutionStatus>) -> &'static str {
    s.map(ExecutionStatus::as_str).unwrap_or("NEVER_RUN")
}

fn time(t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> String {
    t.as_ref().map(|t| t.0.to_string()).unwrap_or_default()
}

/// Each applied object with whether the `Drifted` condition names it.
pub fn drift_rows(inst: &Instance) -> Vec<(String, String)> {
    let Some(status) = &inst.status else {
        return Vec::new();
    };
    let drifted = status
        .conditions
        .iter()
        .find(|c| c.type_ == crate::engine::drift::DRIFT_CONDITION && c.status == "True")
        .map(|c| c.message.clone());
    status
        .applied
        .iter()
        .map(|o| {
            let name = if o.namespace.is_empty() {
                o.name.clone()
            } else {
                format!("{}/{}", o.namespace, o.name)
            };
            let label = format!("{} {name}", o.kind);
            let state = match &drifted {
                Some(m) => match m.find(&format!("{label}:")) {
                    Some(at) => {
                        let rest = &m[at + label.len() + 1..];
                        let what = rest.split(';').next().unwrap_or_default().trim();
                        format!("drifted: {what}")
                    }
                    // The condition names the first few; the log has the rest.
                    None if m.contains(" more") => {
                        "not named (more drifted; see the log)".to_string()
                    }
                    None => "in sync".to_string(),
                },
                None => "in sync".to_string(),
            };
            (label, state)
        })
        .collect()
}

/// A rollout's state as a status word and its reason.
pub fn rollout_state(state: &crate::gitops::rollout::State) -> (&'static str, Option<String>) {
    use crate::gitops::rollout::State;
    match state {
        State::Progressing { wave, waves } => (
            "PROGRESSING",
            (*waves > 1).then(|| format!("wave {} of {waves}", wave + 1)),
        ),
        State::Waiting {
            stage,
            gate,
            reason,
        } => (
            "WAITING",
            Some(format!("stage {stage}, {gate} gate: {reason}")),
        ),
        State::Paused => ("PAUSED", None),
        State::Complete => ("COMPLETE", None),
        State::Halted { cluster, reason } => {
            ("HALTED", Some(format!("{reason} (at cluster {cluster})")))
        }
    }
}

/// `InProgress` → `IN_PROGRESS`.
fn screaming(camel: &str) -> String {
    let mut out = String::new();
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(ch.to_uppercase());
    }
    out
}

/// `/instances/{ns}/{name}`: the rollout, then the instance on each of its clusters.
pub fn instance(
    c: &Chrome,
    view: &InstanceStatusView,
    detail: &InstanceDetail,
    clusters: &[ClusterStatus],
) -> Markup {
    let key = format!("{}/{}", view.namespace, view.name);
    let rollout_url = format!("/api/v1/rollouts/{key}");
    let (state_name, state_reason) = rollout_state(&view.rollout);
    let paused = view.paused_by.is_some();
    let main = html! {
        h1 { (key) }
        p class="meta" {
            (view.framework) " " (view.version) " · revision " code { (short(&view.revision)) }
        }
        section aria-labelledby="rollout" {
            h2 id="rollout" { "Rollout" }
            p class="rollout-state" data-state=(state_name) {
                (badge(state_name))
                @if let Some(r) = &state_reason { " " span class="reason" { (r) } }
            }
            @if let Some(by) = &view.paused_by {
                p class="paused" data-paused="true" { (badge("PAUSED")) " by " (by) ": no new spec reaches a cluster; what runs keeps running." }
            }
            div class="actions" {
                @if paused {
                    (action(c, "Resume", &format!("{rollout_url}/resume"), "", &format!("Resume the rollout of {key}?")))
                } @else {
                    (action(c, "Pause", &format!("{rollout_url}/pause"), "", &format!("Pause the rollout of {key}? What runs keeps running.")))
                }
                (action(c, "Revert", &format!("{rollout_url}/revert"), "", &format!("Revert {key} to its last good spec on every cluster that runs another? A plan runs; nothing is restored.")))
            }
            @if !view.stages.is_empty() {
                ol class="stages" {
                    @for s in &view.stages {
                        li data-state=(s.state) {
                            strong { (s.name) } " " (badge(&s.state.to_uppercase()))
                            " " small { (s.clusters.join(", ")) }
                            @if !s.gates.is_empty() {
                                ul class="gates" {
                                    @for g in &s.gates {
                                        li data-state=(g.state) {
                                            (g.gate) @if !g.detail.is_empty() { " " code { (g.detail) } }
                                            " " (badge(&g.state.to_uppercase()))
                                            @if let Some(r) = &g.reason { " " span class="reason" { (r) } }
                                            @if g.gate == "approval" && g.state == "waiting" {
                                                " " (action(c, "Approve", &format!("{rollout_url}/approve"), &serde_json::json!({"stage": s.name}).to_string(), &format!("Approve stage {} of {key}?", s.name)))
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @for (cluster, ci) in &detail.clusters {
            @let up = clusters.iter().find(|s| &s.name == cluster);
            section id=(format!("cluster-{cluster}")) class="cluster" aria-labelledby=(format!("h-{cluster}")) {
                h2 id=(format!("h-{cluster}")) {
                    "On " (cluster) " "
                    @match up {
                        Some(s) if s.up => span class="badge st-up" { "up" },
                        Some(s) => { span class="badge st-down" { "down" } " " small { (s.reason.clone().unwrap_or_default()) } },
                        None => {},
                    }
                }
                p { "Rollout progress here: " (badge(&screaming(&ci.progress))) }
                @match &ci.instance {
                    None => p { "No Instance here yet." },
                    Some(inst) => {
                        @let plans = plan_rows(ci.operator_version.as_ref(), inst);
                        @let base = format!("/api/v1/instances/{key}/clusters/{cluster}/plans");
                        div class="actions" {
                            form class="inline trigger" data-url=(base) {
                                label { "Plan " select name="plan" {
                                    @for (p, _) in &plans { option value=(p) { (p) } }
                                } }
                                " "
                                button type="button" class="action" data-url=(format!("{base}/trigger")) data-plan-from="plan" data-confirm=(format!("Run the selected plan of {key} on {cluster}?")) disabled[!c.can_write] { "Trigger" }
                            }
                            (action(c, "Cancel plan", &format!("{base}/cancel"), "", &format!("Cancel the running plan of {key} on {cluster}?")))
                            (action(c, "Retry plan", &format!("{base}/retry"), "", &format!("Retry the failed plan of {key} on {cluster} from its first unfinished step?")))
                        }
                        h3 { "Plans" }
                        table class="plans" {
                            thead { tr { th scope="col" { "Plan / phase / step" } th scope="col" { "Status" } th scope="col" { "Message" } th scope="col" { "Started" } th scope="col" { "Updated" } } }
                            tbody {
                                @for (name, p) in &plans {
                                    tr class="plan" {
                                        th scope="row" { (name) }
                                        td { (badge(st(p.as_ref().and_then(|p| p.status)))) }
                                        td { @if let Some(p) = p { (p.message) } }
                                        td { @if let Some(p) = p { (time(&p.started_at)) } }
                                        td { @if let Some(p) = p { (time(&p.last_updated_timestamp)) } }
                                    }
                                    @if let Some(p) = p {
                                        @for ph in &p.phases {
                                            tr class="phase" {
                                                th scope="row" { (PreEscaped("&nbsp;&nbsp;")) (ph.name) }
                                                td { (badge(st(ph.status))) }
                                                td { (ph.message) } td {} td {}
                                            }
                                            @for s in &ph.steps {
                                                tr class="step" {
                                                    th scope="row" { (PreEscaped("&nbsp;&nbsp;&nbsp;&nbsp;")) (s.name) }
                                                    td { (badge(st(s.status))) }
                                                    td { (s.message) }
                                                    td { (time(&s.started_at)) } td {}
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        h3 { "Parameters" }
                        @if inst.spec.parameters.is_empty() { p { "None set (the defaults apply)." } }
                        @else {
                            table class="params" {
                                thead { tr { th scope="col" { "Name" } th scope="col" { "Value" } } }
                                tbody {
                                    @for (k, v) in &inst.spec.parameters {
                                        tr { th scope="row" { (k) } td { code { (v) } } }
                                    }
                                }
                            }
                        }
                        h3 { "Applied objects" }
                        @let objects = drift_rows(inst);
                        @if objects.is_empty() { p { "None yet." } }
                        @else {
                            table class="objects" {
                                thead { tr { th scope="col" { "Object" } th scope="col" { "Drift" } } }
                                tbody {
                                    @for (o, d) in &objects {
                                        tr { th scope="row" { (o) } td class=(if d == "in sync" { "in-sync" } else { "drifted" }) { (d) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(c, main)
}

fn commit(
    label: &str,
    rev: &Option<String>,
    info: &Option<crate::gitops::serve::CommitInfo>,
) -> Markup {
    html! {
        tr {
            th scope="row" { (label) }
            td { @if let Some(r) = rev { code { (short(r)) } } @else { "—" } }
            @match info {
                Some(i) => {
                    td class="subject" { (i.subject) }
                    td { (i.author) }
                    td { @match &i.signer { Some(s) => span class="badge st-complete" { "verified: " (s) }, None => "not verified" } }
                },
                None => { td {} td {} td {} },
            }
        }
    }
}

/// `/revisions`: per repository the revision seen and the one applied, and every error of
/// a refused one with its file and line.
pub fn revisions(c: &Chrome, repos: &[RepoStatus]) -> Markup {
    let main = html! {
        h1 { "Revisions" }
        @for r in repos {
            section class="repo" id=(format!("repo-{}", r.name)) aria-labelledby=(format!("r-{}", r.name)) {
                h2 id=(format!("r-{}", r.name)) { (r.name) " "
                    @if r.errors.is_empty() { span class="badge st-complete" { "applied" } }
                    @else if r.revision != r.applied_revision { span class="badge st-fatal-error" { "refused" } }
                    @else { span class="badge st-error" { "sync failing" } }
                }
                table class="revs" {
                    thead { tr { th scope="col" {} th scope="col" { "Commit" } th scope="col" { "Subject" } th scope="col" { "Author" } th scope="col" { "Signature" } } }
                    tbody {
                        (commit("Seen", &r.revision, &r.commit))
                        (commit("Applied", &r.applied_revision, &r.applied_commit))
                    }
                }
                @if !r.errors.is_empty() {
                    h3 { (r.errors.len()) " error" @if r.errors.len() != 1 { "s" } " (the applied revision keeps running)" }
                    ul class="errors" { @for e in &r.errors { li { code { (e) } } } }
                }
                @if let Some(h) = &r.held_deletions {
                    p class="held" { (h.count) " deletions of " code { (short(&h.revision)) } " wait for confirmation." }
                }
                @if let Some(w) = &r.webhook_error { p class="reason" { "Webhook: " (w) } }
            }
        }
    };
    layout(c, main)
}

/// `/clusters`: every cluster, up or down with the error category and reason.
pub fn clusters(c: &Chrome, clusters: &[ClusterStatus]) -> Markup {
    // Sharded: which member drives each cluster.
    let sharded = clusters.iter().any(|s| s.owner.is_some());
    let main = html! {
        h1 { "Clusters" }
        table class="clusters" {
            thead { tr {
                th scope="col" { "Cluster" } th scope="col" { "State" } th scope="col" { "Category" }
                th scope="col" { "Reason" } th scope="col" { "Labels" } th scope="col" { "API latency" } th scope="col" { "Last contact" }
                @if sharded { th scope="col" { "Driven by" } }
            } }
            tbody {
                @for s in clusters {
                    tr id=(format!("cluster:{}", s.name)) {
                        th scope="row" { a href=(format!("/?q={}", s.name)) { (s.name) } }
                        td { span class={"badge " (if s.up { "st-up" } else { "st-down" })} { (if s.up { "up" } else { "down" }) } }
                        td { (s.category.clone().unwrap_or_default()) }
                        td class="reason" { (s.reason.clone().unwrap_or_default()) }
                        td { @for (k, v) in &s.labels { code { (k) "=" (v) } " " } }
                        td { @if let Some(ms) = s.latency_ms { (ms) " ms" } }
                        td { (s.last_contact.clone().unwrap_or_default()) }
                        @if sharded { td class="owner" { (s.owner.clone().unwrap_or_else(|| "(none yet)".into())) } }
                    }
                }
            }
        }
    };
    layout(c, main)
}

/// `/login`: asks for an API token (with tokens configured, nothing else shows before it).
pub fn login(error: Option<&str>, next: &str) -> Markup {
    let c = Chrome {
        title: "Sign in".into(),
        events: String::new(),
        bare: true,
        ..Default::default()
    };
    let main = html! {
        h1 { "Sign in" }
        p { "This kudo needs an API token. It is exchanged for a session cookie and never kept in the page or its address." }
        @if let Some(e) = error { p class="error" role="alert" id="login-error" { (e) } }
        form method="post" action="/login" class="login" {
            input type="hidden" name="next" value=(next);
            label { "API token " input type="password" name="token" id="token" autocomplete="current-password" required autofocus; }
            " "
            button type="submit" class="primary" { "Sign in" }
        }
    };
    layout(&c, main)
}

/// 404: what was not found, and the way back.
pub fn not_found(c: &Chrome, what: &str) -> Markup {
    let main = html! {
        h1 { "Not found" }
        p id="not-found" { (what) }
        p { a href="/" { "Back to the fleet" } }
    };
    layout(c, main)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitops::console::model::{ClusterRow, InstanceCol};

    /// Sharded, the clusters page says which member drives each cluster (escaped); unsharded
    /// it has no such column.
    #[test]
    fn the_clusters_page_names_the_driving_member_only_when_sharded() {
        let mut a = ClusterStatus {
            name: "a".into(),
            up: true,
            ..Default::default()
        };
        let plain = clusters(&Chrome::default(), std::slice::from_ref(&a)).into_string();
        assert!(!plain.contains("Driven by"), "{plain}");
        a.owner = Some("kudo-1<b>".into());
        let b = ClusterStatus {
            name: "b".into(),
            ..Default::default()
        };
        let page = clusters(&Chrome::default(), &[a, b]).into_string();
        assert!(page.contains("Driven by"), "{page}");
        assert!(page.contains("kudo-1&lt;b&gt;"), "{page}");
        assert!(page.contains("(none yet)"), "{page}");
    }

    #[test]
    fn text_from_git_is_escaped_everywhere() {
        let evil = "<script>alert(1)</script>";
        let mut fleet = Fleet::default();
        fleet.clusters.push(ClusterRow {
            name: "a".into(),
            up: false,
            reason: Some(evil.into()),
            ..Default::default()
        });
        fleet.instances.push(InstanceCol {
            namespace: "ns".into(),
            name: evil.into(),
            ..Default::default()
        });
        let page = matrix(&Chrome::default(), &fleet, &Filters::default()).into_string();
        assert!(!page.contains(evil), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        let repo = RepoStatus {
            name: "r".into(),
            revision: Some("abcdef0123".into()),
            errors: vec![format!("abcdef0: a.yaml:3: {evil}")],
            commit: Some(crate::gitops::serve::CommitInfo {
                subject: evil.into(),
                author: evil.into(),
                signer: None,
            }),
            ..Default::default()
        };
        let page = revisions(&Chrome::default(), &[repo]).into_string();
        assert!(!page.contains(evil));
        assert!(page.contains("a.yaml:3: &lt;script&gt;"));
        let page = not_found(&Chrome::default(), evil).into_string();
        assert!(!page.contains(evil));
    }

    #[test]
    fn actions_are_disabled_without_write_and_cells_say_their_status_in_text() {
        let mut fleet = Fleet::default();
        fleet.clusters.push(ClusterRow {
            name: "a".into(),
            up: true,
            ..Default::default()
        });
        fleet.instances.push(InstanceCol {
            namespace: "ns".into(),
            name: "zk".into(),
            ..Default::default()
        });
        fleet.cells.insert(
            ("a".into(), "ns/zk".into()),
            Cell {
                plan: "deploy".into(),
                status: "IN_PROGRESS".into(),
                done: 1,
                total: 3,
                revision: Some("0123456789".into()),
                current: true,
                message: String::new(),
            },
        );
        let page = matrix(&Chrome::default(), &fleet, &Filters::default()).into_string();
        assert!(
            page.contains(r#"id="cell:a|ns/zk" class="st-in-progress""#),
            "{page}"
        );
        assert!(
            page.contains(">IN PROGRESS<") && page.contains(">1/3<") && page.contains(">0123456<")
        );
        let b = action(&Chrome::default(), "Pause", "/x", "", "sure?").into_string();
        assert!(b.contains("disabled") && b.contains("needs a write token"));
        let writer = Chrome {
            can_write: true,
            ..Default::default()
        };
        assert!(
            !action(&writer, "Pause", "/x", "", "sure?")
                .into_string()
                .contains("disabled")
        );
    }

    #[test]
    fn drift_names_the_objects_the_condition_names() {
        let inst: Instance = serde_json::from_value(serde_json::json!({
            "apiVersion": "kudo.dev/v1beta1", "kind": "Instance",
            "metadata": {"name": "i", "namespace": "ns"},
            "spec": {"operatorVersion": {"name": "ov"}},
            "status": {
                "conditions": [{"type": "Drifted", "status": "True", "message": "1 object drifted: ConfigMap ns/cfg: data.x"}],
                "applied": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "ns", "name": "cfg"},
                    {"apiVersion": "v1", "kind": "Service", "namespace": "ns", "name": "svc"}
                ]
            }
        }))
        .expect("instance");
        assert_eq!(
            drift_rows(&inst),
            vec![
                (
                    "ConfigMap ns/cfg".to_string(),
                    "drifted: data.x".to_string()
                ),
                ("Service ns/svc".to_string(), "in sync".to_string()),
            ]
        );
        // More drifted than the condition names: the unnamed ones are not called in sync.
        let mut many = inst.clone();
        if let Some(s) = many.status.as_mut() {
            s.conditions[0].message =
                "7 objects drifted: ConfigMap ns/cfg: data.x; and 6 more".into();
        }
        assert_eq!(
            drift_rows(&many)[1].1,
            "not named (more drifted; see the log)"
        );
    }
}
