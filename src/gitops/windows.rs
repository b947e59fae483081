//! Maintenance windows of a cluster (kudo.yaml `windows:`): a cron schedule that opens a
//! window of a given duration, in UTC or a named time zone. A new spec reaches a cluster with
//! windows only while one is open; outside them the cluster is held with the reason.

use std::str::FromStr as _;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeZone as _};
use croner::Cron;

/// One window: opens at each `schedule` occurrence, for `duration`.
#[derive(Debug, Clone)]
pub struct Window {
    pub schedule: String,
    cron: Cron,
    pub duration: Duration,
    /// IANA name; `None` is UTC.
    pub timezone: Option<String>,
}

impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        self.schedule == other.schedule
            && self.duration == other.duration
            && self.timezone == other.timezone
    }
}

impl Eq for Window {}

impl Window {
    /// Checks the schedule (five fields, as cron) and the time zone.
    pub fn new(
        schedule: &str,
        duration: Duration,
        timezone: Option<&str>,
    ) -> Result<Window, String> {
        if schedule.split_whitespace().count() != 5 {
            return Err(format!(
                "schedule {schedule:?} must have five fields (minute hour day-of-month month day-of-week)"
            ));
        }
        let cron = Cron::from_str(schedule).map_err(|e| format!("schedule {schedule:?}: {e}"))?;
        if duration.is_zero() {
            return Err("duration must be longer than 0s".into());
        }
        if let Some(tz) = timezone {
            jiff::tz::TimeZone::get(tz).map_err(|e| format!("timezone {tz:?}: {e}"))?;
        }
        Ok(Window {
            schedule: schedule.to_string(),
            cron,
            duration,
            timezone: timezone.map(str::to_string),
        })
    }

    /// `now_ms` (Unix ms) as a time in the window's zone (its offset at that instant).
    fn local(&self, now_ms: i64) -> Option<DateTime<FixedOffset>> {
        let offset = match &self.timezone {
            None => 0,
            Some(tz) => {
                let zone = jiff::tz::TimeZone::get(tz).ok()?;
                let ts = jiff::Timestamp::from_millisecond(now_ms).ok()?;
                zone.to_offset(ts).seconds()
            }
        };
        FixedOffset::east_opt(offset)?
            .timestamp_millis_opt(now_ms)
            .single()
    }

    /// Whether a window is open at `now_ms`: the latest occurrence at or before now started
    /// less than `duration` ago.
    pub fn is_open(&self, now_ms: i64) -> bool {
        let Some(now) = self.local(now_ms) else {
            return false;
        };
        match self.cron.find_previous_occurrence(&now, true) {
            Ok(start) => {
                now.timestamp_millis() - start.timestamp_millis() < self.duration.as_millis() as i64
            }
            Err(_) => false,
        }
    }

    /// When the next window opens after `now_ms`, as RFC 3339 in the window's zone.
    pub fn next_open(&self, now_ms: i64) -> Option<String> {
        let now = self.local(now_ms)?;
        self.cron
            .find_next_occurrence(&now, false)
            .ok()
            .map(|t| t.to_rfc3339())
    }
}

/// Why a cluster with `windows` is closed at `now_ms`, or `None` while one is open (or it
/// has none).
pub fn closed_reason(windows: &[Window], now_ms: i64) -> Option<String> {
    if windows.is_empty() || windows.iter().any(|w| w.is_open(now_ms)) {
        return None;
    }
    let next = windows
        .iter()
        .filter_map(|w| w.next_open(now_ms))
        .min()
        .unwrap_or_else(|| "never".into());
    Some(format!(
        "outside its maintenance windows (next opens {next})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("time")
            .timestamp_millis()
    }

    #[test]
    fn a_weekday_evening_window_in_utc() {
        let w = Window::new("0 22 * * 1-5", Duration::from_secs(4 * 3600), None).expect("window");
        // Wednesday 2026-12-02.
        assert!(!w.is_open(at("2026-12-02T21:59:00Z")));
        assert!(w.is_open(at("2026-12-02T22:00:00Z")));
        assert!(w.is_open(at("2026-12-03T01:59:00Z")), "spans midnight");
        assert!(!w.is_open(at("2026-12-03T02:00:00Z")));
        // Saturday evening: no window.
        assert!(!w.is_open(at("2026-12-05T23:00:00Z")));
        assert_eq!(
            closed_reason(&[w], at("2026-12-05T23:00:00Z")).as_deref(),
            Some("outside its maintenance windows (next opens 2026-12-07T22:00:00+00:00)")
        );
    }

    #[test]
    fn a_window_in_a_named_time_zone() {
        let w = Window::new(
            "0 22 * * *",
            Duration::from_secs(3600),
            Some("Europe/Berlin"),
        )
        .expect("window");
        // 22:00 in Berlin is 21:00 UTC in winter.
        assert!(w.is_open(at("2026-12-02T21:30:00Z")));
        assert!(!w.is_open(at("2026-12-02T22:30:00Z")));
    }

    #[test]
    fn bad_schedules_durations_and_zones_are_refused_with_the_reason() {
        let e = Window::new("0 22 * *", Duration::from_secs(60), None).expect_err("four fields");
        assert!(e.contains("must have five fields"), "{e}");
        let e = Window::new("0 25 * * *", Duration::from_secs(60), None).expect_err("hour 25");
        assert!(e.contains("schedule \"0 25 * * *\""), "{e}");
        let e = Window::new("0 22 * * *", Duration::ZERO, None).expect_err("zero");
        assert!(e.contains("longer than 0s"), "{e}");
        let e = Window::new("0 22 * * *", Duration::from_secs(60), Some("Mars/Olympus"))
            .expect_err("zone");
        assert!(e.contains("timezone \"Mars/Olympus\""), "{e}");
        assert_eq!(closed_reason(&[], 0), None);
    }
}
