//! Plain-text tables for bench output (stdout), alongside the JSON the scenarios return.

use std::fmt::Write as _;

/// A titled table: the first column left-aligned, the rest right-aligned.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: impl Into<String>, columns: &[&str]) -> Table {
        Table {
            title: title.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let n = self.columns.len();
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::from("|");
            for (i, w) in widths.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                if i == 0 {
                    let _ = write!(out, " {c:<w$} |");
                } else {
                    let _ = write!(out, " {c:>w$} |");
                }
            }
            out.push('\n');
            out
        };
        let mut out = format!("{}\n", self.title);
        out.push_str(&line(&self.columns));
        out.push('|');
        for (i, w) in widths.iter().enumerate() {
            out.push_str(if i == 0 { ":" } else { "" });
            out.push_str(&"-".repeat(*w + 1));
            out.push_str(if i == 0 { "|" } else { ":|" });
        }
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

/// Seconds with millisecond precision.
pub fn secs(s: f64) -> String {
    format!("{s:.3} s")
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_as_markdown() {
        let mut t = Table::new("fanout", &["clusters", "time"]);
        t.row(vec!["10".into(), "1.5 s".into()]);
        t.row(vec!["1000".into(), "12.25 s".into()]);
        assert_eq!(
            t.render(),
            "fanout\n| clusters |    time |\n|:---------|--------:|\n| 10       |   1.5 s |\n| 1000     | 12.25 s |\n"
        );
    }
}
