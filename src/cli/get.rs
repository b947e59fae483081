//! `kudo get instances|operators|operatorversions`: what is installed in a namespace.

use serde_json::Value;

use super::CliResult;
use super::kube::{KUDO_API, KubeArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    Instances,
    Operators,
    Operatorversions,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    pub what: What,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// One table row per object: name plus the columns that matter for the kind.
pub fn rows(what: What, items: &[Value]) -> Vec<Vec<String>> {
    let s = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let mut out = vec![
        match what {
            What::Instances => vec!["NAME", "OPERATORVERSION", "PLAN", "STATUS"],
            What::Operators => vec!["NAME", "URL"],
            What::Operatorversions => vec!["NAME", "OPERATOR", "VERSION", "APPVERSION"],
        }
        .into_iter()
        .map(String::from)
        .collect(),
    ];
    for v in items {
        let name = s(v, "/metadata/name");
        out.push(match what {
            What::Instances => {
                // The plan running now, else the most recently updated one.
                let plans = v.pointer("/status/planStatus").and_then(Value::as_object);
                let latest = plans.and_then(|ps| {
                    ps.iter().max_by_key(|(_, p)| {
                        let running = matches!(
                            p["status"].as_str(),
                            Some("PENDING" | "IN_PROGRESS" | "ERROR")
                        );
                        (
                            running,
                            p["lastUpdatedTimestamp"].as_str().unwrap_or("").to_string(),
                        )
                    })
                });
                let (plan, status) = latest
                    .map(|(n, p)| (n.clone(), p["status"].as_str().unwrap_or("").to_string()))
                    .unwrap_or_default();
                vec![name, s(v, "/spec/operatorVersion/name"), plan, status]
            }
            What::Operators => vec![name, s(v, "/spec/url")],
            What::Operatorversions => vec![
                name,
                s(v, "/spec/operator/name"),
                s(v, "/spec/version"),
                s(v, "/spec/appVersion"),
            ],
        });
    }
    out
}

pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map(Vec::len).unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
                .collect();
            format!("{}\n", line.join("   ").trim_end())
        })
        .collect()
}

pub async fn run(args: Args) -> CliResult {
    let cluster = args.kube.connect().await?;
    let kind = match args.what {
        What::Instances => "Instance",
        What::Operators => "Operator",
        What::Operatorversions => "OperatorVersion",
    };
    let items = cluster
        .list(&[(KUDO_API, kind)], Some(&args.kube.namespace), "")
        .await?;
    if items.is_empty() {
        println!("No {kind}s in namespace {}", args.kube.namespace);
        return Ok(());
    }
    print!("{}", table(&rows(args.what, &items)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn instance_rows_show_the_running_plan() {
        let items = vec![json!({
            "metadata": {"name": "toy1"},
            "spec": {"operatorVersion": {"name": "toy-1.0.0"}},
            "status": {"planStatus": {
                "deploy": {"status": "COMPLETE", "lastUpdatedTimestamp": "2024-01-02T00:00:00Z"},
                "update": {"status": "IN_PROGRESS", "lastUpdatedTimestamp": "2024-01-01T00:00:00Z"}
            }}
        })];
        let t = table(&rows(What::Instances, &items));
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        assert_eq!(lines[1], "toy1   toy-1.0.0         update   IN_PROGRESS");
    }
}
