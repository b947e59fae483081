//! sprig's date functions with Go's reference-time layouts ("2006-01-02 15:04:05").
//! The controller's local zone is taken to be UTC; named zones other than UTC fall back
//! to UTC (as sprig does when a zone cannot be loaded).

use super::funcs::{F, FResult, FnErr, s};
use super::gofmt;
use super::value::Value;
use chrono::{DateTime, Datelike, FixedOffset, TimeZone, Timelike, Utc};

type T = DateTime<FixedOffset>;

fn utc(t: DateTime<Utc>) -> Value {
    Value::Time(t.fixed_offset(), "UTC".into())
}

/// Accepts what sprig's `date` accepts: a time, or unix seconds as an int.
fn as_time(v: &Value) -> (T, String) {
    match v {
        Value::Time(t, z) => (*t, z.to_string()),
        Value::Int(i) => (
            Utc.timestamp_opt(*i, 0)
                .single()
                .unwrap_or_default()
                .fixed_offset(),
            "UTC".into(),
        ),
        _ => (Utc::now().fixed_offset(), "UTC".into()),
    }
}

const CHUNKS: &[&str] = &[
    "January",
    "Jan",
    "Monday",
    "Mon",
    "MST",
    "2006",
    "-07:00:00",
    "-070000",
    "-07:00",
    "-0700",
    "-07",
    "Z07:00:00",
    "Z070000",
    "Z07:00",
    "Z0700",
    "Z07",
    "002",
    "01",
    "02",
    "03",
    "04",
    "05",
    "06",
    "_2",
    "15",
    "PM",
    "pm",
    "1",
    "2",
    "3",
    "4",
    "5",
];

/// Splits a Go layout into literal text and std chunks.
fn chunks(layout: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut i = 0;
    let b = layout.as_bytes();
    while i < layout.len() {
        let rest = &layout[i..];
        // fractional seconds: .000 / ,000 / .999 after a seconds field
        if (rest.starts_with(".0")
            || rest.starts_with(".9")
            || rest.starts_with(",0")
            || rest.starts_with(",9"))
            && i > 0
        {
            let d = b[i + 1];
            let mut j = i + 1;
            while j < b.len() && b[j] == d {
                j += 1;
            }
            if j >= b.len() || !b[j].is_ascii_digit() {
                if !lit.is_empty() {
                    out.push((false, std::mem::take(&mut lit)));
                }
                out.push((true, layout[i..j].to_string()));
                i = j;
                continue;
            }
        }
        if let Some(c) = CHUNKS.iter().find(|c| rest.starts_with(**c)) {
            // "Jan" must not match "January"-like words that aren't chunks; Go checks "Mon" vs "Month"
            if *c == "Mon" && rest.starts_with("Month") {
                lit.push_str("Mon");
                i += 3;
                continue;
            }
            if !lit.is_empty() {
                out.push((false, std::mem::take(&mut lit)));
            }
            out.push((true, c.to_string()));
            i += c.len();
            continue;
        }
        let ch = rest.chars().next().unwrap_or(' ');
        lit.push(ch);
        i += ch.len_utf8();
    }
    if !lit.is_empty() {
        out.push((false, lit));
    }
    out
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

fn zone_fmt(off: i32, chunk: &str) -> String {
    if chunk.starts_with('Z') && off == 0 {
        return "Z".into();
    }
    let sign = if off < 0 { '-' } else { '+' };
    let a = off.abs();
    let (h, m, sec) = (a / 3600, (a / 60) % 60, a % 60);
    match chunk.trim_start_matches('Z').trim_start_matches('-') {
        "07:00:00" => format!("{sign}{h:02}:{m:02}:{sec:02}"),
        "070000" => format!("{sign}{h:02}{m:02}{sec:02}"),
        "07:00" => format!("{sign}{h:02}:{m:02}"),
        "0700" => format!("{sign}{h:02}{m:02}"),
        _ => format!("{sign}{h:02}"),
    }
}

/// time.Time.Format.
pub fn format(t: &T, zone: &str, layout: &str) -> String {
    let mut out = String::new();
    for (is_chunk, c) in chunks(layout) {
        if !is_chunk {
            out.push_str(&c);
            continue;
        }
        let h12 = if t.hour().is_multiple_of(12) {
            12
        } else {
            t.hour() % 12
        };
        let s = match c.as_str() {
            "January" => MONTHS[t.month0() as usize].to_string(),
            "Jan" => MONTHS[t.month0() as usize][..3].to_string(),
            "Monday" => DAYS[t.weekday().num_days_from_sunday() as usize].to_string(),
            "Mon" => DAYS[t.weekday().num_days_from_sunday() as usize][..3].to_string(),
            "MST" => zone.to_string(),
            "2006" => format!("{:04}", t.year()),
            "06" => format!("{:02}", t.year() % 100),
            "01" => format!("{:02}", t.month()),
            "1" => t.month().to_string(),
            "02" => format!("{:02}", t.day()),
            "_2" => format!("{:>2}", t.day()),
            "2" => t.day().to_string(),
            "002" => format!("{:03}", t.ordinal()),
            "15" => format!("{:02}", t.hour()),
            "03" => format!("{h12:02}"),
            "3" => h12.to_string(),
            "04" => format!("{:02}", t.minute()),
            "4" => t.minute().to_string(),
            "05" => format!("{:02}", t.second()),
            "5" => t.second().to_string(),
            "PM" => (if t.hour() >= 12 { "PM" } else { "AM" }).to_string(),
            "pm" => (if t.hour() >= 12 { "pm" } else { "am" }).to_string(),
            z if z.starts_with('-') || z.starts_with('Z') => {
                zone_fmt(t.offset().local_minus_utc(), z)
            }
            f => {
                // fractional seconds
                let digits = f.len() - 1;
                let ns = format!("{:09}", t.nanosecond());
                let mut frac = ns[..digits.min(9)].to_string();
                let sep = &f[..1];
                if f.as_bytes()[1] == b'9' {
                    frac = ns.trim_end_matches('0').chars().take(digits).collect();
                    if frac.is_empty() {
                        String::new()
                    } else {
                        format!("{sep}{frac}")
                    }
                } else {
                    format!("{sep}{frac}")
                }
            }
        };
        out.push_str(&s);
    }
    out
}

/// time.ParseInLocation (UTC) for the common layout elements.
pub fn parse(layout: &str, value: &str) -> Result<(T, String), String> {
    let bad = || {
        format!(
            "parsing time {} as {}: cannot parse",
            gofmt::quote(value),
            gofmt::quote(layout)
        )
    };
    let mut rest = value;
    let (mut y, mut mo, mut d, mut h, mut mi, mut sec, mut ns, mut off) =
        (1i32, 1u32, 1u32, 0u32, 0u32, 0u32, 0u32, 0i32);
    let mut pm: Option<bool> = None;
    let mut zone = "UTC".to_string();
    let take_num = |r: &mut &str, min: usize, max: usize| -> Result<u32, String> {
        let n = r
            .chars()
            .take(max)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if n < min {
            return Err(bad());
        }
        let v = r[..n].parse().map_err(|_| bad())?;
        *r = &r[n..];
        Ok(v)
    };
    for (is_chunk, c) in chunks(layout) {
        if !is_chunk {
            rest = rest.strip_prefix(c.as_str()).ok_or_else(bad)?;
            continue;
        }
        match c.as_str() {
            "January" | "Jan" => {
                let i = MONTHS
                    .iter()
                    .position(|m| {
                        if c == "Jan" {
                            rest.starts_with(&m[..3])
                        } else {
                            rest.starts_with(m)
                        }
                    })
                    .ok_or_else(bad)?;
                rest = &rest[if c == "Jan" { 3 } else { MONTHS[i].len() }..];
                mo = i as u32 + 1;
            }
            "Monday" | "Mon" => {
                let i = DAYS
                    .iter()
                    .position(|m| {
                        if c == "Mon" {
                            rest.starts_with(&m[..3])
                        } else {
                            rest.starts_with(m)
                        }
                    })
                    .ok_or_else(bad)?;
                rest = &rest[if c == "Mon" { 3 } else { DAYS[i].len() }..];
            }
            "MST" => {
                let n = rest.chars().take_while(|c| c.is_ascii_uppercase()).count();
                zone = rest[..n].to_string();
                rest = &rest[n..];
            }
            "2006" => y = take_num(&mut rest, 4, 4)? as i32,
            "06" => y = 1900 + take_num(&mut rest, 2, 2)? as i32,
            "01" => mo = take_num(&mut rest, 2, 2)?,
            "1" => mo = take_num(&mut rest, 1, 2)?,
            "02" => d = take_num(&mut rest, 2, 2)?,
            "_2" => {
                rest = rest.strip_prefix(' ').unwrap_or(rest);
                d = take_num(&mut rest, 1, 2)?;
            }
            "2" => d = take_num(&mut rest, 1, 2)?,
            "002" => {
                let _ = take_num(&mut rest, 3, 3)?;
            }
            "15" => h = take_num(&mut rest, 1, 2)?,
            "03" => h = take_num(&mut rest, 2, 2)?,
            "3" => h = take_num(&mut rest, 1, 2)?,
            "04" => mi = take_num(&mut rest, 2, 2)?,
            "4" => mi = take_num(&mut rest, 1, 2)?,
            "05" => sec = take_num(&mut rest, 2, 2)?,
            "5" => sec = take_num(&mut rest, 1, 2)?,
            "PM" | "pm" => {
                let p = rest.get(..2).ok_or_else(bad)?.to_ascii_uppercase();
                pm = Some(p == "PM");
                rest = &rest[2..];
            }
            z if z.starts_with('-') || z.starts_with('Z') => {
                if z.starts_with('Z') && rest.starts_with('Z') {
                    rest = &rest[1..];
                } else {
                    let sign = match rest.chars().next() {
                        Some('+') => 1,
                        Some('-') => -1,
                        _ => return Err(bad()),
                    };
                    rest = &rest[1..];
                    let hh = take_num(&mut rest, 2, 2)? as i32;
                    rest = rest.strip_prefix(':').unwrap_or(rest);
                    let mm = if z.len() > 3 {
                        take_num(&mut rest, 2, 2)? as i32
                    } else {
                        0
                    };
                    off = sign * (hh * 3600 + mm * 60);
                    zone = String::new();
                }
            }
            _ => {
                // fractional seconds
                if let Some(r) = rest.strip_prefix(['.', ',']) {
                    let n = r.chars().take_while(|c| c.is_ascii_digit()).count();
                    let digits = format!("{:0<9}", &r[..n.min(9)]);
                    ns = digits.parse().unwrap_or(0);
                    rest = &r[n..];
                }
            }
        }
        // Go also accepts fractional seconds after a seconds field not in the layout
        if (c == "05" || c == "5")
            && rest.starts_with('.')
            && !layout.contains(".0")
            && !layout.contains(".9")
        {
            let r = &rest[1..];
            let n = r.chars().take_while(|c| c.is_ascii_digit()).count();
            ns = format!("{:0<9}", &r[..n.min(9)]).parse().unwrap_or(0);
            rest = &r[n..];
        }
    }
    if !rest.is_empty() {
        return Err(format!(
            "parsing time {}: extra text: {}",
            gofmt::quote(value),
            gofmt::quote(rest)
        ));
    }
    if let Some(p) = pm {
        if p && h < 12 {
            h += 12;
        } else if !p && h == 12 {
            h = 0;
        }
    }
    let tz = FixedOffset::east_opt(off).ok_or_else(bad)?;
    let t = tz
        .with_ymd_and_hms(y, mo, d, h, mi, sec)
        .single()
        .ok_or_else(|| format!("parsing time {}: day out of range", gofmt::quote(value)))?;
    let t = t + chrono::Duration::nanoseconds(ns as i64);
    if zone.is_empty() {
        zone = if off == 0 {
            "UTC".into()
        } else {
            String::new()
        };
    }
    Ok((t, zone))
}

/// time.ParseDuration.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("time: invalid duration {}", gofmt::quote(s));
    let (neg, mut r) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if r == "0" {
        return Ok(0);
    }
    if r.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !r.is_empty() {
        let n = r
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .count();
        if n == 0 {
            return Err(bad());
        }
        let v: f64 = r[..n].parse().map_err(|_| bad())?;
        r = &r[n..];
        let u = r
            .chars()
            .take_while(|c| !c.is_ascii_digit() && *c != '.')
            .collect::<String>();
        r = &r[u.len()..];
        let mult = match u.as_str() {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 6e10,
            "h" => 3.6e12,
            "" => {
                return Err(format!(
                    "time: missing unit in duration {}",
                    gofmt::quote(s)
                ));
            }
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    gofmt::quote(&u),
                    gofmt::quote(s)
                ));
            }
        };
        total += v * mult;
    }
    Ok(if neg { -(total as i64) } else { total as i64 })
}

fn duration_round(v: &Value) -> String {
    let d: i64 = match v {
        Value::Str(s) => parse_duration(s).unwrap_or(0),
        Value::Duration(d) => *d,
        Value::Int(i) => *i,
        Value::Time(t, _) => (Utc::now().fixed_offset() - *t)
            .num_nanoseconds()
            .unwrap_or(0),
        _ => 0,
    };
    let u = d.unsigned_abs() / 1_000_000_000;
    let (year, month, day, hour, minute) = (31_536_000u64, 2_592_000u64, 86_400u64, 3600u64, 60u64);
    let r = if u > year {
        format!("{}y", u / year)
    } else if u > month {
        format!("{}mo", u / month)
    } else if u > day {
        format!("{}d", u / day)
    } else if u > hour {
        format!("{}h", u / hour)
    } else if u > minute {
        format!("{}m", u / minute)
    } else {
        format!("{u}s")
    };
    if d < 0 { format!("-{r}") } else { r }
}

pub fn register(add: &mut dyn FnMut(&'static str, usize, Option<usize>, F)) {
    let one = Some(1);
    let two = Some(2);
    let three = Some(3);
    add("now", 0, Some(0), |_| Ok(utc(Utc::now())));
    add("date", 2, two, |a| {
        let (t, z) = as_time(&a[1]);
        Ok(Value::str(format(&t, &z, s(a, 0)?)))
    });
    for name in ["dateInZone", "date_in_zone"] {
        add(name, 3, three, |a| {
            let (t, _) = as_time(&a[1]);
            let _zone = s(a, 2)?;
            Ok(Value::str(format(
                &t.with_timezone(&Utc).fixed_offset(),
                "UTC",
                s(a, 0)?,
            )))
        });
    }
    add("htmlDate", 1, one, |a| {
        let (t, z) = as_time(&a[0]);
        Ok(Value::str(format(&t, &z, "2006-01-02")))
    });
    add("htmlDateInZone", 2, two, |a| {
        let (t, _) = as_time(&a[0]);
        Ok(Value::str(format(
            &t.with_timezone(&Utc).fixed_offset(),
            "UTC",
            "2006-01-02",
        )))
    });
    add("toDate", 2, two, |a| {
        Ok(parse(s(a, 0)?, s(a, 1)?)
            .map(|(t, z)| Value::Time(t, z.into()))
            .unwrap_or_else(|_| {
                Value::Time(
                    Utc.timestamp_opt(-62135596800, 0)
                        .single()
                        .unwrap_or_default()
                        .fixed_offset(),
                    "UTC".into(),
                )
            }))
    });
    add("mustToDate", 2, two, |a| {
        parse(s(a, 0)?, s(a, 1)?)
            .map(|(t, z)| Value::Time(t, z.into()))
            .map_err(FnErr::Msg)
    });
    add("unixEpoch", 1, one, |a| match &a[0] {
        Value::Time(t, _) => Ok(Value::str(t.timestamp().to_string())),
        _ => Err(FnErr::Type {
            idx: 0,
            expected: "time.Time",
        }),
    });
    for (name, must) in [
        ("dateModify", false),
        ("date_modify", false),
        ("mustDateModify", true),
        ("must_date_modify", true),
    ] {
        let f: F = if must {
            |a| date_modify(a, true)
        } else {
            |a| date_modify(a, false)
        };
        add(name, 2, two, f);
    }
    add("ago", 1, one, |a| {
        let (t, _) = as_time(&a[0]);
        let d = (Utc::now().fixed_offset() - t)
            .num_nanoseconds()
            .unwrap_or(0);
        let rounded = (((d as f64) / 1e9).round() as i64).saturating_mul(1_000_000_000);
        Ok(Value::str(gofmt::duration_string(rounded)))
    });
    add("duration", 1, one, |a| {
        let n: i64 = match &a[0] {
            Value::Str(s) => s.parse().unwrap_or(0),
            Value::Int(i) => *i,
            _ => 0,
        };
        Ok(Value::str(gofmt::duration_string(
            n.saturating_mul(1_000_000_000),
        )))
    });
    add("durationRound", 1, one, |a| {
        Ok(Value::str(duration_round(&a[0])))
    });
}

fn date_modify(a: &[Value], must: bool) -> FResult {
    let fmt = s(a, 0)?;
    let Value::Time(t, z) = &a[1] else {
        return Err(FnErr::Type {
            idx: 1,
            expected: "time.Time",
        });
    };
    match parse_duration(fmt) {
        // chrono panics past its range (±262,000 years), reachable by chaining dateModify.
        Ok(d) => match t.checked_add_signed(chrono::Duration::nanoseconds(d)) {
            Some(t) => Ok(Value::Time(t, z.clone())),
            None => Err(FnErr::Msg(format!(
                "time {} plus {} is out of range",
                gofmt::time_string(t, z),
                gofmt::duration_string(d)
            ))),
        },
        Err(e) if must => Err(FnErr::Msg(e)),
        Err(_) => Ok(a[1].clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn go_layouts() {
        let (t, z) = parse("2006-01-02 15:04:05", "2021-03-04 05:06:07").expect("parses");
        assert_eq!(
            format(&t, &z, "Jan 2, 2006 at 3:04pm (MST)"),
            "Mar 4, 2021 at 5:06am (UTC)"
        );
        assert_eq!(format(&t, &z, time_rfc3339()), "2021-03-04T05:06:07Z");
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000_000_000));
    }
    fn time_rfc3339() -> &'static str {
        "2006-01-02T15:04:05Z07:00"
    }
}
