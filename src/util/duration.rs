//! The one duration syntax of kudo: Go's (`time.ParseDuration`: `300ms`, `10m`, `1h30m`,
//! `1.5s`, units ns, us/µs, ms, s, m, h), used by plan and step timeouts in packages, by
//! kudo.yaml and by duration flags, so authors write what they know from Kubernetes and Go
//! tools. kudo.yaml has always taken a bare number as seconds (`interval: 30`); [`parse`]
//! keeps that, while [`parse_go`] refuses it as Go and KUDO do (package timeouts must stay
//! portable to KUDO). Negative durations are refused: nothing in kudo waits backwards.
//! (Template functions keep their own Go-exact parser in `template::dates`, which returns
//! signed nanoseconds.)

use std::time::Duration;

/// Why a text is not a duration; the message quotes the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} {reason}")]
pub struct DurationError {
    pub text: String,
    pub reason: String,
}

fn err(text: &str, reason: impl Into<String>) -> DurationError {
    DurationError {
        text: text.to_string(),
        reason: reason.into(),
    }
}

const HINT: &str = "is not a duration like 500ms, 30s, 10m or 1h30m";

/// A Go duration, or a bare number of seconds (`30`, `2.5`).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = s.parse().map_err(|_| err(text, HINT))?;
        return Duration::try_from_secs_f64(secs).map_err(|_| err(text, "is too long"));
    }
    parse_go(text)
}

/// A Go duration exactly: a bare number other than `0` is refused, as Go refuses it.
pub fn parse_go(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(err(text, "is empty, not a duration like 30s"));
    }
    if s.starts_with('-') {
        return Err(err(text, "is negative"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err(text, "is missing a unit (use ns, us, ms, s, m or h)"))?;
        if num_len == 0 {
            return Err(err(text, HINT));
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| {
            err(
                text,
                format!("{HINT}: {:?} is not a number", &rest[..num_len]),
            )
        })?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => {
                return Err(err(
                    text,
                    format!("has an unknown unit {other:?} (use ns, us, ms, s, m or h)"),
                ));
            }
        };
        total += number * factor;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| err(text, "is too long"))
}

/// [`parse_go`] for clap's `value_parser` (flags take Go durations).
pub fn flag(text: &str) -> Result<Duration, String> {
    parse_go(text).map_err(|e| e.to_string())
}

/// A duration the way [`parse`] reads it back, to whole seconds (`1h30m`, `10m`, `45s`;
/// under a second: `0s`), for messages.
pub fn format(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_reads_back() {
        for (d, text) in [
            (5400, "1h30m"),
            (600, "10m"),
            (45, "45s"),
            (0, "0s"),
            (3601, "1h1s"),
        ] {
            assert_eq!(format(Duration::from_secs(d)), text);
            assert_eq!(parse(text), Ok(Duration::from_secs(d)));
        }
    }

    #[test]
    fn go_syntax_everywhere() {
        for f in [parse, parse_go] {
            assert_eq!(f("10m"), Ok(Duration::from_secs(600)));
            assert_eq!(f("1h30m"), Ok(Duration::from_secs(5400)));
            assert_eq!(f("1.5s"), Ok(Duration::from_millis(1500)));
            assert_eq!(f("500ms"), Ok(Duration::from_millis(500)));
            assert_eq!(f("2us"), Ok(Duration::from_micros(2)));
            assert_eq!(f("2µs"), Ok(Duration::from_micros(2)));
            assert_eq!(f("+3s"), Ok(Duration::from_secs(3)));
            assert_eq!(f(" 0 "), Ok(Duration::ZERO));
        }
    }

    #[test]
    fn bare_seconds_only_where_kudo_yaml_took_them() {
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("2.5"), Ok(Duration::from_millis(2500)));
        let e = parse_go("30").unwrap_err();
        assert!(e.to_string().contains("missing a unit"), "{e}");
    }

    #[test]
    fn bad_durations_say_why_and_quote_the_text() {
        for (text, needle) in [
            ("", "empty"),
            ("-5s", "negative"),
            ("5 parsecs", "unknown unit"),
            ("5d", "unknown unit \"d\""),
            ("s", "not a duration"),
            ("1..2s", "not a number"),
            ("99999999999999999999999h", "too long"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(e.starts_with(&format!("{text:?}")), "{e}");
        }
    }
}
