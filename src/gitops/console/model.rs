//! The fleet as the console shows it: one row per cluster, one column per instance, one cell
//! where an instance targets a cluster. Pure data, built by the daemon from one snapshot;
//! the pages render it and the event stream sends the difference of two of them.

use std::collections::BTreeMap;

use serde::Serialize;

/// Rows of the matrix on one page (1,000 clusters are 10 pages).
pub const PAGE_ROWS: usize = 100;

/// Everything the matrix and the change stream need, at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fleet {
    /// In configuration order.
    pub clusters: Vec<ClusterRow>,
    /// Sorted by `namespace/name`.
    pub instances: Vec<InstanceCol>,
    /// `(cluster, namespace/name)` → the instance there.
    pub cells: BTreeMap<(String, String), Cell>,
    pub repositories: Vec<RepoRow>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClusterRow {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub up: bool,
    /// `category: message` when down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InstanceCol {
    pub namespace: String,
    pub name: String,
    pub framework: String,
    pub version: String,
    /// The desired revision (short).
    pub revision: String,
    /// The rollout in a few words (`Complete`, `Waiting: prod approval`, ...).
    pub rollout: String,
}

impl InstanceCol {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One instance on one cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cell {
    /// The plan shown (the running one, else the last); empty when none ran.
    pub plan: String,
    /// KUDO's plan status (`IN_PROGRESS`, `COMPLETE`, `FATAL_ERROR`, ...), or `NOT_APPLIED`
    /// (no Instance there yet) or `PENDING` (applied, no plan started).
    pub status: String,
    pub done: usize,
    pub total: usize,
    /// The revision that applied the live Instance (short).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Whether the live Instance runs the desired spec (false: an older one, or none).
    pub current: bool,
    /// The deepest message of the plan shown.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RepoRow {
    pub name: String,
    pub revision: Option<String>,
    pub applied: Option<String>,
    pub errors: usize,
}

/// Every status a cell can show, in the order the counts list them.
pub const STATUSES: &[&str] = &[
    "COMPLETE",
    "IN_PROGRESS",
    "PENDING",
    "NOT_APPLIED",
    "ERROR",
    "FATAL_ERROR",
    "CANCELLED",
    "UNKNOWN",
];

/// What the matrix shows: the query string of `/` and of its event stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct Filters {
    pub namespace: Option<String>,
    pub framework: Option<String>,
    /// `key=value`: clusters with that label.
    pub label: Option<String>,
    pub status: Option<String>,
    /// Part of a cluster's or an instance's name.
    pub q: Option<String>,
    /// 1-based.
    pub page: Option<usize>,
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl Filters {
    pub fn namespace(&self) -> Option<&str> {
        given(&self.namespace)
    }
    pub fn framework(&self) -> Option<&str> {
        given(&self.framework)
    }
    pub fn label(&self) -> Option<&str> {
        given(&self.label)
    }
    pub fn status(&self) -> Option<&str> {
        given(&self.status)
    }
    pub fn q(&self) -> Option<&str> {
        given(&self.q)
    }
    pub fn page(&self) -> usize {
        self.page.unwrap_or(1).max(1)
    }

    /// The query string that keeps these filters with another page (`page` 0: none).
    pub fn query(&self, page: usize) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("namespace", self.namespace()),
            ("framework", self.framework()),
            ("label", self.label()),
            ("status", self.status()),
            ("q", self.q()),
        ] {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
        if page > 1 {
            q.append_pair("page", &page.to_string());
        }
        q.finish()
    }
}

/// The matrix for some filters: the columns and this page's rows, and the counts over every
/// page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// Indexes into `Fleet::instances`.
    pub columns: Vec<usize>,
    /// Indexes into `Fleet::clusters`, this page only.
    pub rows: Vec<usize>,
    /// Clusters that pass the filters, on every page.
    pub matching_rows: usize,
    pub page: usize,
    pub pages: usize,
    /// Status → cells that pass the filters (every page), in [`STATUSES`] order first.
    pub counts: Vec<(String, usize)>,
}

impl Fleet {
    pub fn cell(&self, cluster: &str, key: &str) -> Option<&Cell> {
        self.cells.get(&(cluster.to_string(), key.to_string()))
    }

    /// Which columns, rows and counts `f` selects. A search matching some instance's name
    /// narrows the columns to those; otherwise it narrows the rows to matching clusters.
    pub fn view(&self, f: &Filters) -> View {
        let q = f.q().map(str::to_lowercase);
        let mut columns: Vec<usize> = (0..self.instances.len())
            .filter(|&i| {
                let c = &self.instances[i];
                f.namespace().is_none_or(|n| c.namespace == n)
                    && f.framework().is_none_or(|n| c.framework == n)
            })
            .collect();
        let mut rows_by_q = q.clone();
        if let Some(q) = &q {
            let named: Vec<usize> = columns
                .iter()
                .copied()
                .filter(|&i| self.instances[i].key().to_lowercase().contains(q))
                .collect();
            if !named.is_empty() {
                columns = named;
                rows_by_q = None;
            }
        }
        let label = f.label().map(|l| match l.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
            None => (l.to_string(), None),
        });
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut matching = Vec::new();
        for (r, c) in self.clusters.iter().enumerate() {
            if let Some((k, v)) = &label {
                let has = c
                    .labels
                    .get(k)
                    .is_some_and(|have| v.as_ref().is_none_or(|v| v == have));
                if !has {
                    continue;
                }
            }
            if let Some(q) = &rows_by_q
                && !c.name.to_lowercase().contains(q)
            {
                continue;
            }
            let cells: Vec<&Cell> = columns
                .iter()
                .filter_map(|&i| self.cell(&c.name, &self.instances[i].key()))
                .collect();
            let wanted = match f.status() {
                Some(s) => cells.iter().any(|cell| cell.status == s),
                None => true,
            };
            if !wanted {
                continue;
            }
            for cell in cells {
                if f.status().is_none_or(|s| cell.status == s) {
                    *counts.entry(cell.status.clone()).or_default() += 1;
                }
            }
            matching.push(r);
        }
        let pages = matching.len().div_ceil(PAGE_ROWS).max(1);
        let page = f.page().min(pages);
        let rows = matching
            .iter()
            .copied()
            .skip((page - 1) * PAGE_ROWS)
            .take(PAGE_ROWS)
            .collect();
        let mut ordered: Vec<(String, usize)> = STATUSES
            .iter()
            .filter_map(|s| counts.remove(*s).map(|n| (s.to_string(), n)))
            .collect();
        ordered.extend(counts);
        View {
            columns,
            rows,
            matching_rows: matching.len(),
            page,
            pages,
            counts: ordered,
        }
    }

    /// Frameworks and namespaces of the columns (for the filter menus).
    pub fn choices(&self) -> (Vec<String>, Vec<String>) {
        let mut ns: Vec<String> = self.instances.iter().map(|c| c.namespace.clone()).collect();
        let mut fw: Vec<String> = self.instances.iter().map(|c| c.framework.clone()).collect();
        ns.sort();
        ns.dedup();
        fw.sort();
        fw.dedup();
        (ns, fw)
    }
}

/// What changed on a matrix page between two fleets, as its event stream sends it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MatrixUpdate {
    /// `cluster|namespace/name` → the cell now (cells of this page only).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cells: BTreeMap<String, Cell>,
    /// Clusters of this page whose state changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterRow>,
    /// Instances whose rollout changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceCol>,
    pub counts: Vec<(String, usize)>,
    /// The page's rows or columns changed (a filter now selects others): the page reloads
    /// its table.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub layout: bool,
}

impl MatrixUpdate {
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
            && self.clusters.is_empty()
            && self.instances.is_empty()
            && !self.layout
    }
}

/// The id a cell has in the page and in updates.
pub fn cell_id(cluster: &str, key: &str) -> String {
    format!("{cluster}|{key}")
}

/// What the page showing `view` of `old` must change to show `new` (`old` None: everything
/// on the page). Counts are always sent whole.
pub fn matrix_update(old: Option<&Fleet>, new: &Fleet, f: &Filters) -> MatrixUpdate {
    let view = new.view(f);
    let mut u = MatrixUpdate {
        counts: view.counts.clone(),
        ..Default::default()
    };
    if let Some(old) = old {
        let before = old.view(f);
        let ids = |fl: &Fleet, v: &View| {
            (
                v.rows
                    .iter()
                    .map(|&r| fl.clusters[r].name.clone())
                    .collect::<Vec<_>>(),
                v.columns
                    .iter()
                    .map(|&c| fl.instances[c].key())
                    .collect::<Vec<_>>(),
            )
        };
        if ids(old, &before) != ids(new, &view) {
            u.layout = true;
            return u;
        }
    }
    for &r in &view.rows {
        let row = &new.clusters[r];
        if old.is_none_or(|o| o.clusters.iter().find(|c| c.name == row.name) != Some(row)) {
            u.clusters.push(row.clone());
        }
        for &c in &view.columns {
            let key = new.instances[c].key();
            let now = new.cell(&row.name, &key);
            let then = old.map(|o| o.cell(&row.name, &key));
            if then.is_none_or(|t| t != now) {
                u.cells.insert(
                    cell_id(&row.name, &key),
                    now.cloned().unwrap_or_else(|| Cell {
                        status: "NOT_TARGETED".into(),
                        ..Default::default()
                    }),
                );
            }
        }
    }
    for &c in &view.columns {
        let col = &new.instances[c];
        if old.is_none_or(|o| o.instances.iter().find(|i| i.key() == col.key()) != Some(col)) {
            u.instances.push(col.clone());
        }
    }
    u
}

/// Whether anything an instance's page shows changed (its cells or its rollout).
pub fn instance_changed(old: &Fleet, new: &Fleet, key: &str) -> bool {
    let col = |f: &Fleet| f.instances.iter().find(|i| i.key() == key).cloned();
    let cells = |f: &Fleet| -> Vec<(String, Cell)> {
        f.cells
            .iter()
            .filter(|((_, k), _)| k == key)
            .map(|((c, _), v)| (c.clone(), v.clone()))
            .collect()
    };
    col(old) != col(new) || cells(old) != cells(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(clusters: usize) -> Fleet {
        let mut f = Fleet::default();
        for i in 0..clusters {
            f.clusters.push(ClusterRow {
                name: format!("c{i:04}"),
                labels: [(
                    "env".to_string(),
                    if i % 2 == 0 { "prod" } else { "dev" }.to_string(),
                )]
                .into(),
                up: true,
                reason: None,
            });
        }
        for (ns, name, fw) in [("a", "zk", "zookeeper"), ("b", "kafka", "kafka")] {
            f.instances.push(InstanceCol {
                namespace: ns.into(),
                name: name.into(),
                framework: fw.into(),
                ..Default::default()
            });
            for c in &f.clusters {
                f.cells.insert(
                    (c.name.clone(), format!("{ns}/{name}")),
                    Cell {
                        status: "COMPLETE".into(),
                        ..Default::default()
                    },
                );
            }
        }
        f
    }

    #[test]
    fn filters_narrow_rows_and_columns_and_counts_cover_every_page() {
        let mut f = fleet(250);
        f.cells
            .get_mut(&("c0003".to_string(), "b/kafka".to_string()))
            .expect("cell")
            .status = "FATAL_ERROR".into();
        let all = f.view(&Filters::default());
        assert_eq!((all.columns.len(), all.rows.len(), all.pages), (2, 100, 3));
        assert_eq!(
            all.counts,
            vec![
                ("COMPLETE".to_string(), 499),
                ("FATAL_ERROR".to_string(), 1)
            ]
        );
        let last = f.view(&Filters {
            page: Some(9),
            ..Default::default()
        });
        assert_eq!(
            (last.page, last.rows.len()),
            (3, 50),
            "a page past the end shows the last"
        );
        let failed = f.view(&Filters {
            status: Some("FATAL_ERROR".into()),
            ..Default::default()
        });
        assert_eq!(failed.rows, vec![3]);
        assert_eq!(failed.counts, vec![("FATAL_ERROR".to_string(), 1)]);
        let prod = f.view(&Filters {
            label: Some("env=prod".into()),
            framework: Some("kafka".into()),
            ..Default::default()
        });
        assert_eq!((prod.matching_rows, prod.columns.clone()), (125, vec![1]));
        let by_instance = f.view(&Filters {
            q: Some("ZK".into()),
            ..Default::default()
        });
        assert_eq!(
            (by_instance.columns, by_instance.matching_rows),
            (vec![0], 250)
        );
        let by_cluster = f.view(&Filters {
            q: Some("c001".into()),
            ..Default::default()
        });
        assert_eq!(
            (by_cluster.columns.len(), by_cluster.matching_rows),
            (2, 10)
        );
    }

    #[test]
    fn an_update_carries_only_what_changed_on_the_page() {
        let old = fleet(150);
        let mut new = old.clone();
        for c in ["c0001", "c0120"] {
            new.cells
                .get_mut(&(c.to_string(), "a/zk".to_string()))
                .expect("cell")
                .status = "IN_PROGRESS".into();
        }
        new.clusters[2].up = false;
        let u = matrix_update(Some(&old), &new, &Filters::default());
        assert_eq!(u.cells.keys().collect::<Vec<_>>(), vec!["c0001|a/zk"]);
        assert_eq!(u.clusters.len(), 1);
        assert!(!u.layout && u.instances.is_empty());
        assert!(
            u.counts.contains(&("IN_PROGRESS".to_string(), 2)),
            "{:?}",
            u.counts
        );
        let second = matrix_update(
            Some(&old),
            &new,
            &Filters {
                page: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(second.cells.keys().collect::<Vec<_>>(), vec!["c0120|a/zk"]);
        assert!(matrix_update(Some(&new), &new, &Filters::default()).is_empty());
        // A status filter whose rows change: the page reloads its table.
        let filtered = Filters {
            status: Some("IN_PROGRESS".into()),
            ..Default::default()
        };
        assert!(matrix_update(Some(&old), &new, &filtered).layout);
        assert!(instance_changed(&old, &new, "a/zk"));
        assert!(!instance_changed(&old, &new, "b/kafka"));
    }

    #[test]
    fn the_query_keeps_filters_and_drops_empty_ones() {
        let f = Filters {
            namespace: Some("a b".into()),
            status: Some(" ".into()),
            ..Default::default()
        };
        assert_eq!(f.query(2), "namespace=a+b&page=2");
        assert_eq!(f.query(1), "namespace=a+b");
    }
}
