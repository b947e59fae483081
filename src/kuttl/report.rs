//! What a test run reports: per-case results, the summary table people read, and JUnit XML
//! for CI. Pure: the runner fills [`CaseReport`]s, these functions only format them.

use std::fmt::Write as _;
use std::time::Duration;

/// The result of one test case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseReport {
    pub name: String,
    /// Steps that passed, and how many the case has (0 when it could not be read).
    pub steps_passed: usize,
    pub steps_total: usize,
    pub duration: Duration,
    /// `None` when the case passed; else what failed (step, assert diff, command output).
    pub failure: Option<String>,
}

impl CaseReport {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

/// The summary table: one row per case (test, steps, result, time) and a total line.
pub fn summary_table(cases: &[CaseReport]) -> String {
    let width = cases
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0)
        .max("TEST".len());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:>5}  {:<6}  {:>8}",
        "TEST", "STEPS", "RESULT", "TIME"
    );
    for c in cases {
        let _ = writeln!(
            out,
            "{:<width$}  {:>5}  {:<6}  {:>7.1}s",
            c.name,
            format!("{}/{}", c.steps_passed, c.steps_total),
            if c.passed() { "PASS" } else { "FAIL" },
            c.duration.as_secs_f64()
        );
    }
    let failed = cases.iter().filter(|c| !c.passed()).count();
    let total: Duration = cases.iter().map(|c| c.duration).sum();
    let _ = writeln!(
        out,
        "{} passed, {} failed, {} total ({:.1}s of test time)",
        cases.len() - failed,
        failed,
        cases.len(),
        total.as_secs_f64()
    );
    out
}

/// JUnit XML (the dialect Jenkins, GitLab and GitHub reporters read): one `testsuite`, one
/// `testcase` per case, a `failure` element holding the failure text.
pub fn junit_xml(suite_name: &str, cases: &[CaseReport], wall: Duration) -> String {
    let failures = cases.iter().filter(|c| !c.passed()).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" time=\"{:.3}\">",
        escape(suite_name),
        cases.len(),
        failures,
        wall.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" time=\"{:.3}\">",
        escape(suite_name),
        cases.len(),
        failures,
        wall.as_secs_f64()
    );
    for c in cases {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            escape(suite_name),
            escape(&c.name),
            c.duration.as_secs_f64()
        );
        match &c.failure {
            None => out.push_str("/>\n"),
            Some(text) => {
                let first = text.lines().next().unwrap_or_default();
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    escape(first),
                    escape(text)
                );
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// XML escaping for attribute values and text; characters XML 1.0 forbids are dropped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cases() -> Vec<CaseReport> {
        vec![
            CaseReport {
                name: "first-operator-test".into(),
                steps_passed: 2,
                steps_total: 2,
                duration: Duration::from_millis(3400),
                failure: None,
            },
            CaseReport {
                name: "broken".into(),
                steps_passed: 0,
                steps_total: 1,
                duration: Duration::from_millis(500),
                failure: Some("step 00-install: assert <Instance> \"x\" & more".into()),
            },
        ]
    }

    #[test]
    fn table_has_one_row_per_case_and_totals() {
        let t = summary_table(&cases());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("TEST"));
        assert!(lines[1].contains("first-operator-test") && lines[1].contains("2/2"));
        assert!(lines[1].contains("PASS") && lines[1].contains("3.4s"));
        assert!(
            lines[2].contains("broken") && lines[2].contains("0/1") && lines[2].contains("FAIL")
        );
        assert_eq!(lines[3], "1 passed, 1 failed, 2 total (3.9s of test time)");
    }

    #[test]
    fn junit_escapes_and_marks_failures() {
        let x = junit_xml("kudo", &cases(), Duration::from_secs(4));
        assert!(x.contains("tests=\"2\" failures=\"1\""), "{x}");
        assert!(x.contains(
            "<testcase classname=\"kudo\" name=\"first-operator-test\" time=\"3.400\"/>"
        ));
        assert!(
            x.contains("&lt;Instance&gt; &quot;x&quot; &amp; more</failure>"),
            "{x}"
        );
        assert_eq!(x.matches("<testcase").count(), 2);
    }
}
