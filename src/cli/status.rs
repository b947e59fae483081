//! `kudo status`: every instance × cluster of a running `kudo serve`, from its status API.
//! Also the small HTTP client `kudo plan status --server` shares.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;

use serde_json::Value;

use super::CliResult;

/// Where `kudo serve` listens unless told otherwise (its default `listen`).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{url} is not an http:// URL of a kudo server: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot reach the kudo server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url}: HTTP {code}: {body}")]
    Status {
        url: String,
        code: u16,
        body: String,
    },
    #[error("{url}: the answer is not the expected JSON: {reason}")]
    Decode { url: String, reason: String },
}

/// The status matrix: instances (rows) × clusters (columns) with each plan's status.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `kudo serve` HTTP address.
    #[arg(long, env = "KUDO_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Print the status document as JSON instead of the matrix.
    #[arg(long, short = 'o', value_enum)]
    pub output: Option<Output>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Json,
}

pub async fn run(args: Args) -> CliResult {
    let doc = get_json(&args.server, "/api/v1/status").await?;
    match args.output {
        Some(Output::Json) => println!("{}", serde_json::to_string_pretty(&doc)?),
        None => print!("{}", matrix(&doc, use_colour())),
    }
    Ok(())
}

/// Colour only for a terminal, and never with NO_COLOR set (https://no-color.org).
pub fn use_colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// GETs `path` of the server and parses the JSON answer. Errors name the URL. A token is
/// sent when `KUDO_TOKEN_FILE` names a file holding one.
pub async fn get_json(server: &str, path: &str) -> Result<Value, ServerError> {
    let token = std::env::var_os("KUDO_TOKEN_FILE")
        .and_then(|f| std::fs::read_to_string(f).ok())
        .map(|t| t.trim().to_string());
    request_json(server, http::Method::GET, path, token.as_deref(), None).await
}

/// Sends a request (a JSON body for writes, a bearer token when given) and parses the JSON
/// answer; any status but 200 is an error carrying the server's reason.
pub async fn request_json(
    server: &str,
    method: http::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<Value, ServerError> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| ServerError::BadUrl {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    if uri.scheme_str() != Some("http") {
        return Err(ServerError::BadUrl {
            url,
            reason: "only http:// is served by `kudo serve`".into(),
        });
    }
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let unreachable = |reason: String| ServerError::Unreachable {
        url: url.clone(),
        reason,
    };
    let mut builder = http::Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let payload = match body {
        Some(b) => {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
            bytes::Bytes::from(serde_json::to_vec(b).unwrap_or_default())
        }
        None => bytes::Bytes::new(),
    };
    let request = builder
        .body(http_body_util::Full::new(payload))
        .map_err(|e| ServerError::BadUrl {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(10), client.request(request))
            .await
            .map_err(|_| unreachable("no answer within 10s".into()))?
            .map_err(|e| unreachable(error_chain(&e)))?;
    let code = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(error_chain(&e)))?
        .to_bytes();
    if code != 200 {
        return Err(ServerError::Status {
            url,
            code,
            body: String::from_utf8_lossy(&body).trim().to_string(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| ServerError::Decode {
        url,
        reason: e.to_string(),
    })
}

/// An error with its sources ("client error (Connect): tcp connect error: Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(out, ": {s}");
        source = s.source();
    }
    out
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn short(rev: &str) -> String {
    rev.split(',')
        .map(|r| r.chars().take(12).collect::<String>())
        .collect::<Vec<_>>()
        .join(",")
}

/// ANSI colour of a status word.
fn paint(text: &str, status: &str, colour: bool) -> String {
    if !colour {
        return text.to_string();
    }
    let code = match status {
        "COMPLETE" | "up" => "32",
        "IN_PROGRESS" | "PENDING" | "pending" | "notApplied" | "inProgress" | "progressing" => "33",
        "FATAL_ERROR" | "ERROR" | "down" | "failed" | "CANCELLED" => "31",
        _ => return text.to_string(),
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// One cell: the active plan and its status (with steps while running), else the rollout
/// progress; `-` when the instance is not placed on that cluster.
fn cell(view: Option<&Value>) -> (String, String) {
    let Some(v) = view else {
        return ("-".into(), String::new());
    };
    match v.get("detail").filter(|d| !d.is_null()) {
        Some(d) => {
            let status = s(d, "status");
            let mut text = format!("{} {}", s(d, "plan"), status);
            if matches!(status, "IN_PROGRESS" | "PENDING") {
                let _ = write!(
                    text,
                    " {}/{}",
                    d.get("stepsDone").and_then(Value::as_u64).unwrap_or(0),
                    d.get("stepsTotal").and_then(Value::as_u64).unwrap_or(0)
                );
            }
            (text, status.to_string())
        }
        None => {
            let progress = v
                .get("progress")
                .map(|p| {
                    p.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| progress_name(p))
                })
                .unwrap_or_default();
            (progress.clone(), progress)
        }
    }
}

/// A rollout `Progress` or `State` (`{"state": "complete", ...}`): its state word.
fn progress_name(p: &Value) -> String {
    p.get("state")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The matrix text of a status document.
pub fn matrix(doc: &Value, colour: bool) -> String {
    let empty = Vec::new();
    let arr = |k: &str| doc.get(k).and_then(Value::as_array).unwrap_or(&empty);
    let mut out = String::new();
    for r in arr("repositories") {
        let errors = r
            .get("errors")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let applied = r
            .get("appliedRevision")
            .and_then(Value::as_str)
            .map(short)
            .unwrap_or_else(|| "none".into());
        let _ = write!(out, "repository {}: revision {applied}", s(r, "name"));
        if errors > 0 {
            let first = r["errors"][0].as_str().unwrap_or("");
            let _ = write!(
                out,
                ", {}",
                paint(
                    &format!("{errors} error(s) in the newest revision: {first}"),
                    "ERROR",
                    colour
                )
            );
        }
        out.push('\n');
    }
    let clusters: Vec<&Value> = arr("clusters").iter().collect();
    for c in &clusters {
        let up = c.get("up").and_then(Value::as_bool).unwrap_or(false);
        let word = if up { "up" } else { "down" };
        let _ = write!(
            out,
            "cluster {}: {}",
            s(c, "name"),
            paint(word, word, colour)
        );
        if !up && let Some(reason) = c.get("reason").and_then(Value::as_str) {
            let _ = write!(out, " ({reason})");
        }
        out.push('\n');
    }
    let instances = arr("instances");
    if instances.is_empty() {
        out.push_str("no instances in the desired state\n");
        return out;
    }
    // Columns: clusters some instance targets, in configuration order.
    let columns: Vec<String> = clusters
        .iter()
        .map(|c| s(c, "name").to_string())
        .filter(|name| {
            instances
                .iter()
                .any(|i| i.get("clusters").and_then(|m| m.get(name)).is_some())
        })
        .collect();
    let mut rows: Vec<Vec<(String, String)>> = Vec::new();
    let mut header = vec![("INSTANCE".to_string(), String::new())];
    header.extend(columns.iter().map(|c| (c.to_uppercase(), String::new())));
    header.push(("ROLLOUT".into(), String::new()));
    rows.push(header);
    for i in instances {
        let mut row = vec![(
            format!("{}/{}", s(i, "namespace"), s(i, "name")),
            String::new(),
        )];
        for c in &columns {
            row.push(cell(i.get("clusters").and_then(|m| m.get(c))));
        }
        let rollout = i
            .get("rollout")
            .map(|r| {
                r.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| progress_name(r))
            })
            .unwrap_or_default();
        row.push((rollout.clone(), rollout));
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|col| {
            rows.iter()
                .map(|r| r[col].0.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut by_status: BTreeMap<&str, &str> = BTreeMap::new();
    by_status.insert("complete", "COMPLETE");
    by_status.insert("halted", "FATAL_ERROR");
    for row in rows {
        let last = row.len() - 1;
        for (col, (text, status)) in row.iter().enumerate() {
            let pad = widths[col] - text.chars().count();
            let status = by_status.get(status.as_str()).copied().unwrap_or(status);
            out.push_str(&paint(text, status, colour));
            if col != last {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "repositories": [{"name": "fleet", "revision": "bbbbbbbbbbbbbbbbbb", "appliedRevision": "aaaaaaaaaaaaaaaaaaaa",
                              "errors": ["instances/x.yaml:3: unknown field"], "consecutiveFailures": 0}],
            "clusters": [{"name": "dev", "up": true}, {"name": "prod", "up": false, "reason": "unreachable: connection refused"},
                         {"name": "spare", "up": true}],
            "instances": [
                {"namespace": "shop", "name": "db", "rollout": {"state": "halted", "cluster": "prod", "reason": "x"}, "clusters": {
                    "dev": {"progress": {"state": "complete"}, "plans": {}, "detail": {"plan": "deploy", "status": "COMPLETE", "stepsDone": 3, "stepsTotal": 3}},
                    "prod": {"progress": {"state": "failed", "message": "boom"}, "plans": {}, "detail": {"plan": "deploy", "status": "IN_PROGRESS", "stepsDone": 1, "stepsTotal": 3}}}},
                {"namespace": "shop", "name": "web", "rollout": {"state": "progressing", "wave": 0, "waves": 2}, "clusters": {
                    "dev": {"progress": {"state": "notApplied"}, "plans": {}}}}
            ]
        })
    }

    #[test]
    fn matrix_without_colour_is_plain_aligned_text() {
        let text = matrix(&doc(), false);
        let expected = "\
repository fleet: revision aaaaaaaaaaaa, 1 error(s) in the newest revision: instances/x.yaml:3: unknown field
cluster dev: up
cluster prod: down (unreachable: connection refused)
cluster spare: up
INSTANCE  DEV              PROD                    ROLLOUT
shop/db   deploy COMPLETE  deploy IN_PROGRESS 1/3  halted
shop/web  notApplied       -                       progressing
";
        pretty_assertions::assert_eq!(text, expected);
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn colour_marks_statuses() {
        let text = matrix(&doc(), true);
        assert!(text.contains("\x1b[32mdeploy COMPLETE\x1b[0m"), "{text}");
        assert!(text.contains("\x1b[31mdown\x1b[0m"), "{text}");
        assert!(
            text.contains("\x1b[33mdeploy IN_PROGRESS 1/3\x1b[0m"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_dead_server_is_named() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let e = get_json(&url, "/api/v1/status")
            .await
            .expect_err("nobody listens");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!(
                "cannot reach the kudo server at {url}/api/v1/status"
            )),
            "{msg}"
        );
        let e = get_json("https://example.invalid", "/x")
            .await
            .expect_err("https");
        assert!(
            e.to_string()
                .contains("https://example.invalid/x is not an http:// URL"),
            "{e}"
        );
    }
}
