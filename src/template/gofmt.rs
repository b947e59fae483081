//! Go's `fmt` formatting (`%v` of every value kind, the printf verbs) and `strconv`
//! helpers, so rendered text matches what Go prints byte for byte.

use super::budget;
use super::value::Value;
use std::fmt::Write;

/// Decimal digits (no trailing zeros) and decimal point position, like strconv's decimal.
fn float_digits(f: f64, sig: Option<usize>) -> (String, i32) {
    let s = match sig {
        None => format!("{:e}", f.abs()),
        Some(p) => format!("{:.*e}", p.max(1) - 1, f.abs()),
    };
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    if digits == "0" {
        return (digits, 1);
    }
    (digits, exp + 1)
}

fn fmt_e(neg: bool, digits: &str, dp: i32, prec: usize, upper: bool) -> String {
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    let mut chars = digits.chars();
    out.push(chars.next().unwrap_or('0'));
    if prec > 0 {
        out.push('.');
        let rest: String = chars.collect();
        out.push_str(&rest);
        for _ in rest.len()..prec {
            out.push('0');
        }
    }
    out.push(if upper { 'E' } else { 'e' });
    let exp = if digits == "0" { 0 } else { dp - 1 };
    out.push(if exp < 0 { '-' } else { '+' });
    let _ = write!(out, "{:02}", exp.abs());
    out
}

fn fmt_f(neg: bool, digits: &str, dp: i32, prec: usize) -> String {
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    let d = digits.as_bytes();
    if dp > 0 {
        for i in 0..dp as usize {
            out.push(if i < d.len() { d[i] as char } else { '0' });
        }
    } else {
        out.push('0');
    }
    if prec > 0 {
        out.push('.');
        for i in 0..prec as i32 {
            let j = dp + i;
            out.push(if j < 0 || j as usize >= d.len() {
                '0'
            } else {
                d[j as usize] as char
            });
        }
    }
    out
}

fn special(f: f64) -> Option<String> {
    if f.is_nan() {
        Some("NaN".into())
    } else if f.is_infinite() {
        Some(if f > 0.0 { "+Inf" } else { "-Inf" }.into())
    } else {
        None
    }
}

/// strconv.FormatFloat(f, 'g', prec, 64); prec None = shortest.
pub fn format_g(f: f64, prec: Option<usize>, upper: bool) -> String {
    if let Some(s) = special(f) {
        return s;
    }
    let neg = f.is_sign_negative();
    let (digits, dp) = float_digits(f, prec.map(|p| p.max(1)));
    let nd = digits.len() as i32;
    let mut eprec = prec.map(|p| p.max(1) as i32).unwrap_or(nd);
    if eprec > nd && nd >= dp {
        eprec = nd;
    }
    if prec.is_none() {
        eprec = 6;
    }
    let exp = dp - 1;
    if exp < -4 || exp >= eprec {
        return fmt_e(neg, &digits, dp, (nd - 1).max(0) as usize, upper);
    }
    fmt_f(neg, &digits, dp, (nd - dp).max(0) as usize)
}

pub fn format_e(f: f64, prec: usize, upper: bool) -> String {
    if let Some(s) = special(f) {
        return s;
    }
    let (digits, dp) = float_digits(f, Some(prec + 1));
    fmt_e(f.is_sign_negative(), &digits, dp, prec, upper)
}

pub fn format_f(f: f64, prec: usize) -> String {
    if let Some(s) = special(f) {
        return s;
    }
    format!("{f:.prec$}")
}

/// Go's %v of a float64.
pub fn float_v(f: f64) -> String {
    format_g(f, None, false)
}

/// strconv.Quote.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        quote_char_into(&mut out, c, '"');
    }
    out.push('"');
    out
}

fn quote_char_into(out: &mut String, c: char, q: char) {
    match c {
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        '\\' => out.push_str("\\\\"),
        c if c == q => {
            out.push('\\');
            out.push(c);
        }
        c if is_print(c) => out.push(c),
        c if (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if (c as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

/// An approximation of unicode.IsPrint: graphic characters and the ASCII space.
pub fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    !(0xFFF9..=0xFFFB).contains(&u)
        && !(0xE000..=0xF8FF).contains(&u)
        && u != 0xFEFF
        && !(0x200B..=0x200F).contains(&u)
        && !(0x2028..=0x202E).contains(&u)
        && !(0x2060..=0x206F).contains(&u)
}

/// strconv.QuoteRune.
pub fn quote_rune(c: char) -> String {
    let mut out = String::from("'");
    quote_char_into(&mut out, c, '\'');
    out.push('\'');
    out
}

/// Go's time.Duration.String().
pub fn duration_string(d: i64) -> String {
    if d == 0 {
        return "0s".into();
    }
    let neg = d < 0;
    let u = d.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        // sub-second: ns, µs, ms
        let (unit, div) = if u < 1000 {
            ("ns", 1u64)
        } else if u < 1_000_000 {
            ("µs", 1000)
        } else {
            ("ms", 1_000_000)
        };
        out.push_str(&frac_string(u, div));
        out.push_str(unit);
    } else {
        let h = u / 3_600_000_000_000;
        let rem = u % 3_600_000_000_000;
        let m = rem / 60_000_000_000;
        let s_ns = rem % 60_000_000_000;
        if h > 0 {
            let _ = write!(out, "{h}h");
        }
        if h > 0 || m > 0 {
            let _ = write!(out, "{m}m");
        }
        out.push_str(&frac_string(s_ns, 1_000_000_000));
        out.push('s');
    }
    if neg { format!("-{out}") } else { out }
}

fn frac_string(v: u64, div: u64) -> String {
    let int = v / div;
    let frac = v % div;
    if frac == 0 {
        return int.to_string();
    }
    let width = (div as f64).log10().round() as usize;
    let mut f = format!("{frac:0width$}");
    while f.ends_with('0') {
        f.pop();
    }
    format!("{int}.{f}")
}

/// Go's time.Time.String(): "2006-01-02 15:04:05.999999999 -0700 MST".
pub fn time_string(t: &chrono::DateTime<chrono::FixedOffset>, zone: &str) -> String {
    let mut s = t.format("%Y-%m-%d %H:%M:%S").to_string();
    let ns = t.timestamp_subsec_nanos();
    if ns != 0 {
        let mut f = format!("{ns:09}");
        while f.ends_with('0') {
            f.pop();
        }
        s.push('.');
        s.push_str(&f);
    }
    let _ = write!(s, " {} {}", t.format("%z"), zone);
    s
}

/// fmt's %v (also what `print` and `{{ . }}` use inside containers). Stops early past
/// the string or value depth budget, which records the overrun for the executor.
pub fn value_v(v: &Value) -> String {
    let mut out = String::new();
    write_v(&mut out, v, 0);
    out
}

/// Whether a walk printing into `out` must stop (a budget overrun is recorded).
fn walk_stop(out: &str, depth: usize) -> bool {
    budget::stop() || budget::string_full(out.len()) || budget::value_depth(depth).is_err()
}

fn write_v(out: &mut String, v: &Value, depth: usize) {
    if matches!(v, Value::List(..) | Value::Map(_)) && walk_stop(out, depth + 1) {
        return;
    }
    match v {
        Value::Nil => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => out.push_str(&float_v(*f)),
        Value::Str(s) => out.push_str(s),
        Value::List(l, _) => {
            out.push('[');
            for (i, e) in l.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                    if walk_stop(out, depth + 1) {
                        return;
                    }
                }
                write_v(out, e, depth + 1);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push_str("map[");
            for (i, (k, e)) in m.borrow().iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                if walk_stop(out, depth + 1) {
                    return;
                }
                out.push_str(k);
                out.push(':');
                write_v(out, e, depth + 1);
            }
            out.push(']');
        }
        Value::Time(t, z) => out.push_str(&time_string(t, z)),
        Value::Duration(d) => out.push_str(&duration_string(*d)),
    }
}

#[derive(Default, Clone, Copy)]
struct Flags {
    minus: bool,
    plus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

fn pad(out: &mut String, s: &str, f: &Flags) {
    let n = s.chars().count();
    let w = f.width.unwrap_or(0);
    if n >= w {
        out.push_str(s);
        return;
    }
    let fill = w - n;
    if f.minus {
        out.push_str(s);
        out.extend(std::iter::repeat_n(' ', fill));
    } else if f.zero {
        // zero padding goes after the sign
        let (sign, rest) = if s.starts_with('-') || s.starts_with('+') {
            s.split_at(1)
        } else {
            ("", s)
        };
        out.push_str(sign);
        out.extend(std::iter::repeat_n('0', fill));
        out.push_str(rest);
    } else {
        out.extend(std::iter::repeat_n(' ', fill));
        out.push_str(s);
    }
}

fn bad_verb(out: &mut String, verb: char, v: &Value) {
    match v {
        Value::Nil => {
            let _ = write!(out, "%!{verb}(<nil>)");
        }
        _ => {
            let _ = write!(out, "%!{verb}({}={})", v.type_name(), value_v(v));
        }
    }
}

fn fmt_int(out: &mut String, i: i64, verb: char, f: &Flags) {
    let neg = i < 0;
    let u = i.unsigned_abs();
    let mut digits = match verb {
        'd' | 'v' => u.to_string(),
        'b' => format!("{u:b}"),
        'o' | 'O' => format!("{u:o}"),
        'x' => format!("{u:x}"),
        'X' => format!("{u:X}"),
        _ => String::new(),
    };
    if let Some(p) = f.prec {
        if p == 0 && u == 0 {
            digits.clear();
        }
        if digits.len() < p {
            digits = format!("{}{digits}", "0".repeat(p - digits.len()));
        }
    }
    let prefix = match verb {
        'O' => "0o",
        'o' if f.sharp => "0",
        'x' if f.sharp => "0x",
        'X' if f.sharp => "0X",
        'b' if f.sharp => "0b",
        _ => "",
    };
    let sign = if neg {
        "-"
    } else if f.plus {
        "+"
    } else if f.space {
        " "
    } else {
        ""
    };
    let s = format!("{sign}{prefix}{digits}");
    let mut ff = *f;
    if f.prec.is_some() {
        ff.zero = false;
    }
    pad(out, &s, &ff);
}

fn fmt_float(out: &mut String, x: f64, verb: char, f: &Flags) {
    let mut s = match verb {
        'v' | 'g' => format_g(x, f.prec, false),
        'G' => format_g(x, f.prec, true),
        'e' => format_e(x, f.prec.unwrap_or(6), false),
        'E' => format_e(x, f.prec.unwrap_or(6), true),
        'f' | 'F' => format_f(x, f.prec.unwrap_or(6)),
        _ => String::new(),
    };
    if f.plus && !s.starts_with('-') && !s.starts_with('+') {
        s.insert(0, '+');
    } else if f.space && !s.starts_with('-') && !s.starts_with('+') {
        s.insert(0, ' ');
    } else if s == "+Inf" && !f.plus {
        s = "+Inf".into();
    }
    let mut ff = *f;
    if x.is_infinite() || x.is_nan() {
        ff.zero = false;
    }
    pad(out, &s, &ff);
}

fn fmt_str(out: &mut String, s: &str, verb: char, f: &Flags) {
    let s: String = match f.prec {
        Some(p) if verb == 's' || verb == 'v' || verb == 'q' => s.chars().take(p).collect(),
        _ => s.to_string(),
    };
    let r = match verb {
        'v' | 's' => s,
        'q' => {
            if f.sharp && !s.contains('`') {
                format!("`{s}`")
            } else {
                quote(&s)
            }
        }
        'x' | 'X' => {
            let mut h = String::new();
            for (i, b) in s.bytes().enumerate() {
                if f.space && i > 0 {
                    h.push(' ');
                }
                if verb == 'x' {
                    let _ = write!(h, "{b:02x}");
                } else {
                    let _ = write!(h, "{b:02X}");
                }
            }
            h
        }
        _ => unreachable_str(),
    };
    pad(out, &r, f);
}

fn unreachable_str() -> String {
    String::new()
}

/// Formats one operand with one verb, Go-style, appending to `out`.
fn fmt_arg(out: &mut String, v: &Value, verb: char, f: &Flags, depth: usize) {
    if matches!(v, Value::List(..) | Value::Map(_)) && walk_stop(out, depth + 1) {
        return;
    }
    if verb == 'T' {
        pad(out, v.type_name(), f);
        return;
    }
    match v {
        Value::Nil => match verb {
            'v' => pad(out, "<nil>", f),
            _ => bad_verb(out, verb, v),
        },
        Value::Bool(b) => match verb {
            'v' | 't' => pad(out, if *b { "true" } else { "false" }, f),
            _ => bad_verb(out, verb, v),
        },
        Value::Int(i) => match verb {
            'v' | 'd' | 'b' | 'o' | 'O' | 'x' | 'X' => fmt_int(out, *i, verb, f),
            'c' => pad(
                out,
                &char::from_u32(*i as u32).unwrap_or('\u{FFFD}').to_string(),
                f,
            ),
            'q' => pad(
                out,
                &quote_rune(char::from_u32(*i as u32).unwrap_or('\u{FFFD}')),
                f,
            ),
            'U' => pad(out, &format!("U+{i:04X}"), f),
            _ => bad_verb(out, verb, v),
        },
        Value::Duration(d) => match verb {
            'v' | 's' => pad(out, &duration_string(*d), f),
            'd' | 'x' | 'X' | 'o' | 'b' => fmt_int(out, *d, verb, f),
            _ => bad_verb(out, verb, v),
        },
        Value::Float(x) => match verb {
            'v' | 'g' | 'G' | 'e' | 'E' | 'f' | 'F' => fmt_float(out, *x, verb, f),
            _ => bad_verb(out, verb, v),
        },
        Value::Str(s) => match verb {
            'v' | 's' | 'q' | 'x' | 'X' => fmt_str(out, s, verb, f),
            _ => bad_verb(out, verb, v),
        },
        Value::Time(t, z) => match verb {
            'v' | 's' => pad(out, &time_string(t, z), f),
            'q' => pad(out, &quote(&time_string(t, z)), f),
            _ => bad_verb(out, verb, v),
        },
        Value::List(l, _) => {
            out.push('[');
            for (i, e) in l.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                if walk_stop(out, depth + 1) {
                    return;
                }
                fmt_arg(out, e, verb, f, depth + 1);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push_str("map[");
            for (i, (k, e)) in m.borrow().iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                if walk_stop(out, depth + 1) {
                    return;
                }
                fmt_str(out, k, if verb == 'd' { 'v' } else { verb }, f);
                out.push(':');
                fmt_arg(out, e, verb, f, depth + 1);
            }
            out.push(']');
        }
    }
}

/// Go's fmt refuses widths and precisions past a million (`tooLarge`).
fn too_large(x: i64) -> bool {
    !(-1_000_000..=1_000_000).contains(&x)
}

/// fmt.Sprintf with Go's verbs, flags, width and precision, and Go's error notations
/// (`%!d(string=x)`, `%!s(MISSING)`, `%!(EXTRA ...)`).
pub fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut argi = 0;
    let chars: Vec<char> = format.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '%' {
            out.push(c);
            i += 1;
            continue;
        }
        i += 1;
        let mut f = Flags::default();
        while i < chars.len() {
            match chars[i] {
                '-' => {
                    f.minus = true;
                    f.zero = false;
                }
                '+' => f.plus = true,
                '#' => f.sharp = true,
                ' ' => f.space = true,
                '0' => f.zero = !f.minus,
                _ => break,
            }
            i += 1;
        }
        // width
        if i < chars.len() && chars[i] == '*' {
            i += 1;
            match args.get(argi) {
                Some(Value::Int(w)) if !too_large(*w) => {
                    if *w < 0 {
                        f.minus = true;
                        f.zero = false;
                    }
                    f.width = Some(w.unsigned_abs() as usize);
                }
                _ => out.push_str("%!(BADWIDTH)"),
            }
            argi += 1;
        } else {
            let mut w = None;
            while i < chars.len() && chars[i].is_ascii_digit() {
                if too_large(w.unwrap_or(0) as i64) {
                    // Go's parsenum gives up and consumes the rest of the format.
                    i = chars.len();
                    w = None;
                    break;
                }
                w = Some(w.unwrap_or(0) * 10 + chars[i].to_digit(10).unwrap_or(0) as usize);
                i += 1;
            }
            f.width = w;
        }
        if i < chars.len() && chars[i] == '.' {
            i += 1;
            if i < chars.len() && chars[i] == '*' {
                i += 1;
                match args.get(argi) {
                    Some(Value::Int(p)) if *p >= 0 && !too_large(*p) => f.prec = Some(*p as usize),
                    _ => out.push_str("%!(BADPREC)"),
                }
                argi += 1;
            } else {
                let mut p = 0;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    if too_large(p as i64) {
                        i = chars.len();
                        break;
                    }
                    p = p * 10 + chars[i].to_digit(10).unwrap_or(0) as usize;
                    i += 1;
                }
                f.prec = Some(p);
            }
        }
        if i >= chars.len() {
            out.push_str("%!(NOVERB)");
            break;
        }
        let verb = chars[i];
        i += 1;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(argi) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        argi += 1;
        if verb == 'v' && f.sharp {
            out.push_str(&sharp_v(arg, 0));
            continue;
        }
        fmt_arg(&mut out, arg, verb, &f, 0);
        if budget::string_full(out.len()) {
            break;
        }
    }
    if argi < args.len() {
        out.push_str("%!(EXTRA ");
        for (n, a) in args[argi..].iter().enumerate() {
            if n > 0 {
                out.push_str(", ");
            }
            match a {
                Value::Nil => out.push_str("<nil>"),
                _ => {
                    let _ = write!(out, "{}={}", a.type_name(), value_v(a));
                }
            }
        }
        out.push(')');
    }
    out
}

/// Go's %#v (Go-syntax representation), for the kinds we model.
pub fn sharp_v(v: &Value, depth: usize) -> String {
    if matches!(v, Value::List(..) | Value::Map(_)) && walk_stop("", depth + 1) {
        return String::new();
    }
    match v {
        Value::Nil => "<nil>".into(),
        Value::Str(s) => quote(s),
        Value::Float(f) => {
            let s = float_v(*f);
            if s.contains(['.', 'e', 'I', 'N']) {
                s
            } else {
                s.to_string()
            }
        }
        Value::List(l, _) => {
            let mut inner: Vec<String> = Vec::new();
            let mut total = 0usize;
            for e in l.iter() {
                let part = sharp_v(e, depth + 1);
                total += part.len() + 2;
                if budget::string_full(total) {
                    return String::new();
                }
                inner.push(part);
            }
            format!("{}{{{}}}", v.type_name(), inner.join(", "))
        }
        Value::Map(m) => {
            let mut inner: Vec<String> = Vec::new();
            let mut total = 0usize;
            for (k, e) in m.borrow().iter() {
                let part = format!("{}:{}", quote(k), sharp_v(e, depth + 1));
                total += part.len() + 2;
                if budget::string_full(total) {
                    return String::new();
                }
                inner.push(part);
            }
            format!("map[string]interface {{}}{{{}}}", inner.join(", "))
        }
        other => value_v(other),
    }
}

/// fmt.Sprint: spaces between operands when neither side is a string.
pub fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !matches!(a, Value::Str(_)) && !matches!(args[i - 1], Value::Str(_)) {
            out.push(' ');
        }
        write_v(&mut out, a, 0);
        if budget::string_full(out.len()) {
            break;
        }
    }
    out
}

/// fmt.Sprintln: always spaces, trailing newline.
pub fn sprintln(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_v(&mut out, a, 0);
        if budget::string_full(out.len()) {
            break;
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_go() {
        assert_eq!(float_v(3.0), "3");
        assert_eq!(float_v(1e6), "1e+06");
        assert_eq!(float_v(123456.0), "123456");
        assert_eq!(float_v(0.0001), "0.0001");
        assert_eq!(float_v(0.00001), "1e-05");
        assert_eq!(float_v(1.5), "1.5");
        assert_eq!(float_v(123456789.0), "1.23456789e+08");
        assert_eq!(
            sprintf(
                "%5.2f|%e|%g|%.3g",
                &[
                    Value::Float(3.25159),
                    Value::Float(1234.5),
                    Value::Float(0.5),
                    Value::Float(1234.5)
                ]
            ),
            " 3.25|1.234500e+03|0.5|1.23e+03"
        );
    }

    #[test]
    fn printf_verbs_and_errors() {
        let s = |x: &str| Value::str(x);
        assert_eq!(
            sprintf(
                "%s-%d-%v-%q-%t",
                &[
                    s("a"),
                    Value::Int(5),
                    Value::Float(2.5),
                    s("h\"i"),
                    Value::Bool(true)
                ]
            ),
            "a-5-2.5-\"h\\\"i\"-true"
        );
        assert_eq!(sprintf("%d", &[s("x")]), "%!d(string=x)");
        assert_eq!(sprintf("%d %d", &[Value::Int(1)]), "1 %!d(MISSING)");
        assert_eq!(
            sprintf("%d", &[Value::Int(1), s("x")]),
            "1%!(EXTRA string=x)"
        );
        assert_eq!(
            sprintf(
                "%05d|%-4d|%x|%X|%o|%b",
                &[
                    Value::Int(-42),
                    Value::Int(7),
                    Value::Int(255),
                    Value::Int(255),
                    Value::Int(8),
                    Value::Int(5)
                ]
            ),
            "-0042|7   |ff|FF|10|101"
        );
        assert_eq!(sprintf("%x", &[s("hi")]), "6869");
        assert_eq!(
            sprintf("%v", &[Value::list(vec![Value::Int(1), s("a")])]),
            "[1 a]"
        );
        assert_eq!(sprintf("%6.2f%%", &[Value::Float(99.5)]), " 99.50%");
    }

    #[test]
    fn durations() {
        assert_eq!(duration_string(90 * 1_000_000_000), "1m30s");
        assert_eq!(duration_string(3_600_000_000_000), "1h0m0s");
        assert_eq!(duration_string(1_500_000), "1.5ms");
        assert_eq!(duration_string(0), "0s");
    }
}
