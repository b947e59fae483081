//! Which clusters an instance lands on: a Kubernetes-style label selector over the labels
//! clusters are registered with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A cluster as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// `matchLabels` and `matchExpressions`, ANDed; an empty selector selects every cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Problems with the selector itself (unknown operators, values where none belong).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, r) in self.match_expressions.iter().enumerate() {
            match r.operator.as_str() {
                "In" | "NotIn" if r.values.is_empty() => out.push(format!(
                    "matchExpressions[{i}]: operator {} needs at least one value",
                    r.operator
                )),
                "Exists" | "DoesNotExist" if !r.values.is_empty() => out.push(format!(
                    "matchExpressions[{i}]: operator {} takes no values",
                    r.operator
                )),
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => out.push(format!(
                    "matchExpressions[{i}]: unknown operator {other:?} (use In, NotIn, Exists or DoesNotExist)"
                )),
            }
        }
        out
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => value.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !r.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

/// The names of the clusters `selector` selects, in the given order.
pub fn targets(selector: &LabelSelector, clusters: &[ClusterInfo]) -> Vec<String> {
    clusters
        .iter()
        .filter(|c| selector.matches(&c.labels))
        .map(|c| c.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, env: &str) -> ClusterInfo {
        ClusterInfo {
            name: name.to_string(),
            labels: [("env".to_string(), env.to_string())].into(),
        }
    }

    fn fleet() -> Vec<ClusterInfo> {
        vec![
            cluster("dev", "dev"),
            cluster("staging", "staging"),
            cluster("prod-a", "prod"),
            cluster("prod-b", "prod"),
            ClusterInfo {
                name: "bare".into(),
                labels: BTreeMap::new(),
            },
        ]
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            operator: op.into(),
            values: values.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn empty_selector_selects_all() {
        assert_eq!(targets(&LabelSelector::default(), &fleet()).len(), 5);
    }

    #[test]
    fn match_labels_and_expressions() {
        let s = LabelSelector {
            match_labels: [("env".into(), "prod".into())].into(),
            ..Default::default()
        };
        assert_eq!(targets(&s, &fleet()), ["prod-a", "prod-b"]);
        let s = LabelSelector {
            match_expressions: vec![expr("env", "In", &["dev", "staging"])],
            ..Default::default()
        };
        assert_eq!(targets(&s, &fleet()), ["dev", "staging"]);
        let s = LabelSelector {
            match_expressions: vec![expr("env", "NotIn", &["dev"])],
            ..Default::default()
        };
        assert_eq!(
            targets(&s, &fleet()),
            ["staging", "prod-a", "prod-b", "bare"]
        );
        let s = LabelSelector {
            match_expressions: vec![expr("env", "DoesNotExist", &[])],
            ..Default::default()
        };
        assert_eq!(targets(&s, &fleet()), ["bare"]);
        let s = LabelSelector {
            match_expressions: vec![expr("env", "Exists", &[]), expr("env", "NotIn", &["prod"])],
            ..Default::default()
        };
        assert_eq!(targets(&s, &fleet()), ["dev", "staging"]);
    }

    #[test]
    fn bad_selectors_are_named() {
        let s = LabelSelector {
            match_expressions: vec![
                expr("env", "Equals", &["x"]),
                expr("env", "In", &[]),
                expr("env", "Exists", &["x"]),
            ],
            ..Default::default()
        };
        let p = s.problems().join("\n");
        assert!(
            p.contains("matchExpressions[0]: unknown operator \"Equals\""),
            "{p}"
        );
        assert!(
            p.contains("matchExpressions[1]: operator In needs at least one value"),
            "{p}"
        );
        assert!(
            p.contains("matchExpressions[2]: operator Exists takes no values"),
            "{p}"
        );
    }
}
