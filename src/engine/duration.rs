//! Go's duration syntax (`300ms`, `10m`, `1h30m`), used by plan/step timeouts in packages
//! and by duration flags, so authors write what they know from Kubernetes and Go tools.

use std::time::Duration;

/// Parses a Go duration: one or more `<number><unit>` with units ns, us (µs), ms, s, m, h.
/// A bare number is refused (Go refuses it too, except `0`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?} is missing a unit (use ns, us, ms, s, m or h)"))?;
        if num_len == 0 {
            return Err(format!("{text:?} is not a duration like 30s, 10m or 1h30m"));
        }
        let number: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("{text:?}: {:?} is not a number", &rest[..num_len]))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => {
                return Err(format!(
                    "{text:?}: unknown unit {other:?} (use ns, us, ms, s, m or h)"
                ));
            }
        };
        total += number * factor;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::parse;
    use std::time::Duration;

    #[test]
    fn go_durations() {
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert!(
            parse("10")
                .expect_err("unitless")
                .contains("missing a unit")
        );
        assert!(parse("5 minutes").is_err());
        assert!(
            parse("3d")
                .expect_err("days")
                .contains("unknown unit \"d\"")
        );
        assert!(parse("").is_err());
    }
}
