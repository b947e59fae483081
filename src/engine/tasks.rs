//! The parts of task kinds that need no cluster: Dummy outcomes and Toggle's choice.

use crate::api::TaskSpec;

use super::workflow::TaskOutcome;

pub use crate::api::TaskKind;

/// A Dummy task: fatal or transient error when asked, done when `done`, else in progress
/// forever (KUDO uses it to hold a plan open in tests).
pub fn dummy(spec: &TaskSpec) -> TaskOutcome {
    if spec.want_err {
        if spec.fatal {
            TaskOutcome::Fatal("dummy task configured to fail fatally".into())
        } else {
            TaskOutcome::Error("dummy task configured to fail".into())
        }
    } else if spec.done {
        TaskOutcome::Done
    } else {
        TaskOutcome::InProgress("dummy task is never done".into())
    }
}

/// What a Toggle task does this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToggleMode {
    Apply,
    Delete,
}

/// Chooses Apply or Delete from the toggle's boolean parameter (its resolved string value).
pub fn toggle_mode(parameter: &str, value: Option<&str>) -> Result<ToggleMode, String> {
    match value.map(str::trim) {
        Some("true") | Some("True") | Some("TRUE") => Ok(ToggleMode::Apply),
        Some("false") | Some("False") | Some("FALSE") | Some("") => Ok(ToggleMode::Delete),
        Some(other) => Err(format!(
            "toggle parameter {parameter} must be a boolean, got {other:?}"
        )),
        None => Err(format!("toggle parameter {parameter} is not defined")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_outcomes() {
        let mut s = TaskSpec::default();
        assert!(matches!(dummy(&s), TaskOutcome::InProgress(_)));
        s.done = true;
        assert_eq!(dummy(&s), TaskOutcome::Done);
        s.want_err = true;
        assert!(matches!(dummy(&s), TaskOutcome::Error(_)));
        s.fatal = true;
        assert!(matches!(dummy(&s), TaskOutcome::Fatal(_)));
    }

    #[test]
    fn toggle_reads_booleans_and_names_bad_values() {
        assert_eq!(toggle_mode("ENABLED", Some("true")), Ok(ToggleMode::Apply));
        assert_eq!(
            toggle_mode("ENABLED", Some("false")),
            Ok(ToggleMode::Delete)
        );
        let err = toggle_mode("ENABLED", Some("yes please")).expect_err("bad");
        assert!(err.contains("ENABLED") && err.contains("yes please"));
        assert!(
            toggle_mode("ENABLED", None)
                .expect_err("missing")
                .contains("not defined")
        );
        assert!(TaskKind::parse("Apply").is_known() && !TaskKind::parse("Bogus").is_known());
    }
}
