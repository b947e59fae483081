//! The sprig v3 text function library (Masterminds/sprig `TxtFuncMap`), with Go's
//! behaviours: loose numeric casts (spf13/cast), `must*` variants returning errors,
//! maps sorted by key.

use super::budget::{self, Overrun};
use super::funcs::{F, FResult, FnErr, b, err, int_list, m, n, s};
use super::gofmt;
use super::value::{ListKind, Value};
use base64::Engine as _;
use std::collections::BTreeMap;
use std::rc::Rc;

/// sprig's strval: strings as is, everything else via %v.
pub fn strval(v: &Value) -> String {
    match v {
        Value::Str(s) => s.to_string(),
        v => gofmt::value_v(v),
    }
}

fn parse_int_base0(s: &str) -> Option<i64> {
    let s = s.trim_start_matches('+');
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let body = body.replace('_', "");
    let lower = body.to_ascii_lowercase();
    let v = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if let Some(bn) = lower.strip_prefix("0b") {
        i64::from_str_radix(bn, 2).ok()
    } else if lower.len() > 1 && lower.starts_with('0') {
        i64::from_str_radix(&lower[1..], 8).ok()
    } else if lower.is_empty() {
        None
    } else {
        lower.parse().ok()
    }?;
    Some(if neg { -v } else { v })
}

/// cast.ToInt64: loose conversion, 0 on failure.
pub fn to_i64(v: &Value) -> i64 {
    match v {
        Value::Int(i) | Value::Duration(i) => *i,
        Value::Float(f) => *f as i64,
        Value::Bool(b) => i64::from(*b),
        Value::Str(s) => {
            let t = s.trim();
            let t = t.strip_suffix(".0").unwrap_or(t);
            parse_int_base0(t).unwrap_or(0)
        }
        _ => 0,
    }
}

/// cast.ToFloat64.
pub fn to_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) | Value::Duration(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Str(s) => s.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

/// sprig's empty.
pub fn empty(v: &Value) -> bool {
    !v.truthy()
}

fn list_of(v: &Value, what: &str) -> Result<Rc<Vec<Value>>, FnErr> {
    match v {
        Value::List(l, _) => Ok(l.clone()),
        v => err(format!("Cannot {what} on type {}", v.type_name())),
    }
}

fn vlist(v: Vec<Value>) -> Value {
    Value::list(v)
}

/// sprig's strslice, refused once the strings add up past the string budget.
fn strslice(v: &Value) -> Result<Vec<String>, Overrun> {
    match v {
        Value::List(l, _) => {
            let mut total = 0usize;
            let mut out = Vec::with_capacity(l.len());
            for x in l.iter().filter(|x| !matches!(x, Value::Nil)) {
                let sv = strval(x);
                total = total.saturating_add(sv.len());
                budget::string(total)?;
                out.push(sv);
            }
            Ok(out)
        }
        Value::Nil => Ok(vec![]),
        v => Ok(vec![strval(v)]),
    }
}

fn must<T>(r: Result<T, FnErr>) -> Result<T, FnErr> {
    r
}

/// Go's strings.Title.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_sep = true;
    for c in s.chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = !(c.is_alphanumeric() || c == '_' || c == '\'');
        if c.is_whitespace() {
            prev_sep = true;
        }
    }
    out
}

fn untitle(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_space = true;
    for c in s.chars() {
        if prev_space {
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
        prev_space = c.is_whitespace();
    }
    out
}

fn initials(s: &str) -> String {
    let mut out = String::new();
    let mut prev_space = true;
    for c in s.chars() {
        if c.is_whitespace() {
            prev_space = true;
        } else if prev_space {
            out.push(c);
            prev_space = false;
        }
    }
    out
}

fn swapcase(s: &str) -> String {
    s.chars()
        .flat_map(|c| -> Vec<char> {
            if c.is_uppercase() {
                c.to_lowercase().collect()
            } else if c.is_lowercase() {
                c.to_uppercase().collect()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Splits into words the way xstrings' case converters do: on non-alphanumerics and
/// at lower→upper and UPPER→Upperlower transitions.
fn words(s: &str) -> Vec<String> {
    let cs: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    for i in 0..cs.len() {
        let c = cs[i];
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if c.is_uppercase() && !cur.is_empty() {
            let prev = cs[i - 1];
            let next_lower = cs.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower) {
                out.push(std::mem::take(&mut cur));
            }
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn snakecase(s: &str, sep: &str) -> String {
    words(s)
        .iter()
        .map(|w| w.to_lowercase())
        .collect::<Vec<_>>()
        .join(sep)
}

/// xstrings.ToCamelCase: removes underscores and upper-cases the following letter.
fn camelcase(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while chars.peek() == Some(&'_') {
        out.push('_');
        chars.next();
    }
    let mut upper_next = true;
    let mut pending_underscores = 0;
    for c in chars {
        if c == '_' {
            pending_underscores += 1;
            upper_next = true;
            continue;
        }
        if pending_underscores > 1 {
            out.extend(std::iter::repeat_n('_', pending_underscores - 1));
        }
        pending_underscores = 0;
        if upper_next {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        upper_next = false;
    }
    out.extend(std::iter::repeat_n('_', pending_underscores));
    out
}

/// goutils.WrapCustom.
fn wrap_custom(s: &str, width: i64, nl: &str, wrap_long: bool) -> String {
    if s.is_empty() {
        return String::new();
    }
    let nl = if nl.is_empty() { "\n" } else { nl };
    let w = width.max(1) as usize;
    let b = s.as_bytes();
    let len = b.len();
    let mut off = 0;
    let mut out = String::new();
    let sub = |a: usize, e: usize| String::from_utf8_lossy(&b[a..e]).to_string();
    while len - off > w {
        if b[off] == b' ' {
            off += 1;
            continue;
        }
        let end = (w + off + 1).min(len);
        let space = sub(off, end).rfind(' ');
        if let Some(sp) = space {
            let at = sp + off;
            out.push_str(&sub(off, at));
            out.push_str(nl);
            off = at + 1;
        } else if wrap_long {
            out.push_str(&sub(off, w + off));
            out.push_str(nl);
            off += w;
        } else {
            let end = w + off;
            match sub(end, len).find(' ') {
                None => {
                    out.push_str(&sub(off, len));
                    off = len;
                }
                Some(i) => {
                    let at = i + end;
                    out.push_str(&sub(off, at));
                    out.push_str(nl);
                    off = at + 1;
                }
            }
        }
    }
    out.push_str(&sub(off, len));
    out
}

/// The character boundary at or before byte `i` (clamped to the length). Go's `trunc`,
/// `substr`, `abbrev` and `abbrevboth` cut bytes and may split a character; ours move a
/// cut that lands inside a character back to where that character starts.
fn floor_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `s[from..to]` with both cuts moved back to character boundaries.
fn cut(s: &str, from: usize, to: usize) -> &str {
    let (from, to) = (floor_boundary(s, from), floor_boundary(s, to));
    s.get(from..to.max(from)).unwrap_or("")
}

/// goutils.Abbreviate; cuts inside a character move back to its start.
fn abbrev(width: i64, s: &str) -> String {
    if width < 4 || s.len() as i64 <= width {
        return s.to_string();
    }
    format!("{}...", cut(s, 0, (width - 3) as usize))
}

/// goutils.AbbreviateFull; cuts inside a character move back to its start.
fn abbrevboth(left: i64, right: i64, s: &str) -> String {
    if right < 4 || (left > 0 && right < 7) {
        return s.to_string();
    }
    if s.is_empty() {
        return String::new();
    }
    let len = s.len() as i64;
    if len <= right {
        return s.to_string();
    }
    let mut off = left.min(len);
    if len - off < right - 3 {
        off = len - (right - 3);
    }
    if off <= 4 {
        return format!("{}...", cut(s, 0, (right - 3) as usize));
    }
    if off + right - 3 < len {
        return format!("...{}", abbrev(right - 3, cut(s, off as usize, s.len())));
    }
    format!("...{}", cut(s, (len - (right - 3)) as usize, s.len()))
}

fn rand_string(count: i64, charset: &[u8]) -> Result<String, Overrun> {
    budget::string(count.max(0) as usize)?;
    Ok((0..count.max(0))
        .map(|_| charset[fastrand::usize(..charset.len())] as char)
        .collect())
}

/// sprig's indent: `width` spaces before every line, within the string budget.
fn indent(width: i64, s: &str) -> Result<String, Overrun> {
    let w = width.max(0) as usize;
    let lines = s.bytes().filter(|&b| b == b'\n').count() + 1;
    budget::string(lines.saturating_mul(w).saturating_add(s.len() + 1))?;
    let pad = " ".repeat(w);
    Ok(format!("{pad}{}", s.replace('\n', &format!("\n{pad}"))))
}

/// Strings joined by `sep`, refused past the string budget before it is built.
fn join_checked(parts: &[String], sep: &str) -> Result<String, Overrun> {
    let total = parts
        .iter()
        .fold(0usize, |acc, p| acc.saturating_add(p.len()))
        .saturating_add(sep.len().saturating_mul(parts.len()));
    budget::string(total)?;
    Ok(parts.join(sep))
}

/// sprig's untilStep, refused past the list budget before it is built. Go's loop wraps
/// around on overflow and never ends; this one stops where the next step would overflow.
fn until_step(start: i64, stop: i64, step: i64) -> Result<Vec<i64>, Overrun> {
    let count = if (stop < start && step < 0) || (stop > start && step > 0) {
        (start.abs_diff(stop) - 1) / step.unsigned_abs() + 1
    } else {
        0
    };
    budget::list(usize::try_from(count).unwrap_or(usize::MAX))?;
    let mut v = Vec::with_capacity(count as usize);
    let mut i = start;
    while (step > 0 && i < stop) || (step < 0 && i > stop) {
        v.push(i);
        match i.checked_add(step) {
            Some(next) => i = next,
            None => break,
        }
    }
    Ok(v)
}

/// sprig's seq (inclusive ranges). Where `end ± 1` would overflow, the range stops at
/// `end` without the overflow.
fn seq(p: &[i64]) -> Result<String, Overrun> {
    let inclusive = |start: i64, end: i64, step: i64| -> Result<Vec<i64>, Overrun> {
        match end.checked_add(if end < start { -1 } else { 1 }) {
            Some(stop) => until_step(start, stop, step),
            None => {
                let mut v = until_step(start, end, step)?;
                if (i128::from(end) - i128::from(start)) % i128::from(step) == 0 {
                    v.push(end);
                }
                Ok(v)
            }
        }
    };
    let v = match p.len() {
        1 => {
            let (start, end) = (1, p[0]);
            inclusive(start, end, if end < start { -1 } else { 1 })?
        }
        2 => {
            let (start, end) = (p[0], p[1]);
            inclusive(start, end, if end < start { -1 } else { 1 })?
        }
        3 => {
            let (start, step, end) = (p[0], p[1], p[2]);
            if end < start && step > 0 {
                return Ok(String::new());
            }
            if step == 0 {
                return Ok(String::new());
            }
            inclusive(start, end, step)?
        }
        _ => vec![],
    };
    budget::string(v.len().saturating_mul(21))?;
    Ok(v.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(" "))
}

fn round(x: f64, p: i64, r_opt: f64) -> f64 {
    let pow = 10f64.powi(p as i32);
    let digit = pow * x;
    let (int, div) = (digit.trunc(), digit.fract());
    let rounded = if div >= r_opt { int + 1.0 } else { int };
    if x < 0.0 {
        // math.Modf keeps the sign on both parts; sprig's logic follows it
        let rounded = if div <= -r_opt { int - 1.0 } else { int };
        return rounded / pow;
    }
    rounded / pow
}

/// Go's encoding/json float formatting.
fn json_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = gofmt::format_e(f, 16, false);
        // shortest: use Rust's shortest repr in e form, Go style exponent
        let short = format!("{f:e}");
        let (mant, exp) = short.split_once('e').unwrap_or((&short, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let _ = s;
        return format!("{mant}e{}{:02}", if exp < 0 { "-" } else { "+" }, exp.abs())
            .replace("e-0", "e-")
            .replace("e+0", "e+");
    }
    let s = format!("{f}");
    s
}

fn json_str(out: &mut String, s: &str, html: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' if html => out.push_str(&format!("\\u{:04x}", c as u32)),
            '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// encoding/json Marshal (compact) or MarshalIndent(v, "", "  ").
pub fn to_json(v: &Value, html: bool, indent: Option<usize>) -> String {
    let mut out = String::new();
    json_write(&mut out, v, html, indent, 0);
    out
}

fn json_write(out: &mut String, v: &Value, html: bool, indent: Option<usize>, level: usize) {
    if matches!(v, Value::List(..) | Value::Map(_))
        && (budget::stop()
            || budget::string_full(out.len())
            || budget::value_depth(level + 1).is_err())
    {
        return;
    }
    let nl = |out: &mut String, lvl: usize| {
        if let Some(w) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', w * lvl));
        }
    };
    match v {
        Value::Nil => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) | Value::Duration(i) => out.push_str(&i.to_string()),
        Value::Float(f) => out.push_str(&json_float(*f)),
        Value::Str(s) => json_str(out, s, html),
        Value::Time(t, _) => json_str(
            out,
            &t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            html,
        ),
        Value::List(l, _) => {
            if l.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, e) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    if budget::string_full(out.len()) {
                        return;
                    }
                }
                nl(out, level + 1);
                json_write(out, e, html, indent, level + 1);
            }
            nl(out, level);
            out.push(']');
        }
        Value::Map(m) => {
            let m = m.borrow();
            if m.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (i, (k, e)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    if budget::string_full(out.len()) {
                        return;
                    }
                }
                nl(out, level + 1);
                json_str(out, k, html);
                out.push(':');
                if indent.is_some() {
                    out.push(' ');
                }
                json_write(out, e, html, indent, level + 1);
            }
            nl(out, level);
            out.push('}');
        }
    }
}

/// json.Unmarshal into interface{}: numbers become float64.
fn from_json(s: &str) -> Result<Value, FnErr> {
    let v: serde_json::Value = serde_json::from_str(s).map_err(|e| FnErr::Msg(e.to_string()))?;
    fn conv(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(0.0)),
            serde_json::Value::Array(a) => Value::list(a.iter().map(conv).collect()),
            serde_json::Value::Object(o) => {
                Value::map(o.iter().map(|(k, v)| (k.clone(), conv(v))).collect())
            }
            other => Value::from_json(other),
        }
    }
    Ok(conv(&v))
}

/// mergo.Merge / mergo.Merge(WithOverride) for map[string]interface{}.
fn merge_into(
    dst: &mut BTreeMap<String, Value>,
    src: &BTreeMap<String, Value>,
    overwrite: bool,
    depth: usize,
) -> Result<(), Overrun> {
    budget::value_depth(depth + 1)?;
    budget::tick()?;
    // A value that reaches a map being merged into would make that map contain itself.
    let insert = |dst: &mut BTreeMap<String, Value>, k: &String, sv: &Value| {
        if sv.reaches_borrowed_map() {
            return Err(budget::trip(Overrun::Cycle));
        }
        dst.insert(k.clone(), sv.clone());
        Ok(())
    };
    for (k, sv) in src {
        match dst.get(k) {
            None => insert(dst, k, sv)?,
            Some(Value::Map(dm)) if matches!(sv, Value::Map(_)) => {
                if let Value::Map(sm) = sv
                    && !Rc::ptr_eq(dm, sm)
                {
                    let (Ok(sm), Ok(mut dm)) = (sm.try_borrow(), dm.try_borrow_mut()) else {
                        return Err(budget::trip(Overrun::Cycle));
                    };
                    let sm = sm.clone();
                    merge_into(&mut dm, &sm, overwrite, depth + 1)?;
                }
            }
            Some(dv) => {
                if !empty(sv) && (overwrite || empty(dv)) {
                    insert(dst, k, sv)?;
                }
            }
        }
    }
    Ok(())
}

/// At most how many parts splitting `s` on `sep` gives (an empty separator splits
/// between characters).
fn parts_count(sep: &str, s: &str) -> usize {
    if sep.is_empty() {
        s.chars().count() + 1
    } else {
        s.matches(sep).count() + 1
    }
}

fn in_list(l: &[Value], v: &Value) -> bool {
    l.iter().any(|x| !budget::stop() && x.deep_equal(v))
}

/// Regexp.ReplaceAllString (`expand`: `$1` references) built piece by piece within the
/// string budget.
fn replace_all(re: &regex::Regex, src: &str, rep: &str, expand: bool) -> Result<String, Overrun> {
    let mut out = String::new();
    let mut last = 0;
    for caps in re.captures_iter(src) {
        let Some(m) = caps.get(0) else { continue };
        out.push_str(src.get(last..m.start()).unwrap_or(""));
        if expand {
            caps.expand(rep, &mut out);
        } else {
            out.push_str(rep);
        }
        last = m.end();
        budget::string(out.len())?;
        budget::tick()?;
    }
    out.push_str(src.get(last..).unwrap_or(""));
    budget::string(out.len())?;
    Ok(out)
}

fn regex(re: &str) -> Result<regex::Regex, FnErr> {
    regex::Regex::new(re).map_err(|e| FnErr::Msg(format!("error parsing regexp: {e}")))
}

fn b32enc(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    for chunk in data.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let bits = u64::from_be_bytes([0, 0, 0, buf[0], buf[1], buf[2], buf[3], buf[4]]);
        let nchars = (chunk.len() * 8).div_ceil(5);
        for i in 0..8 {
            if i < nchars {
                out.push(A[((bits >> (35 - i * 5)) & 31) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b32dec(s: &str) -> Result<Vec<u8>, String> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let t = s.trim_end_matches('=');
    let mut bits: u64 = 0;
    let mut nbits = 0;
    let mut out = Vec::new();
    for (i, c) in t.bytes().enumerate() {
        let Some(v) = A.iter().position(|&a| a == c) else {
            return Err(format!("illegal base32 data at input byte {i}"));
        };
        bits = (bits << 5) | v as u64;
        nbits += 5;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    Ok(out)
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn uuidv4() -> String {
    let mut b = [0u8; 16];
    for x in &mut b {
        *x = fastrand::u8(..);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn dict_of(a: &[Value]) -> Value {
    let mut d = BTreeMap::new();
    let mut i = 0;
    while i < a.len() {
        let k = strval(&a[i]);
        let v = a.get(i + 1).cloned().unwrap_or_else(|| Value::str(""));
        d.insert(k, v);
        i += 2;
    }
    Value::map(d)
}

fn dig(keys: &[Value], default: &Value, dict: &Value) -> FResult {
    let mut cur = dict.clone();
    for k in keys {
        let key = match k {
            Value::Str(s) => s.to_string(),
            _ => return err("interface conversion: interface {} is not string"),
        };
        let next = match &cur {
            Value::Map(m) => m.borrow().get(&key).cloned(),
            _ => return err("interface conversion: interface {} is not map[string]interface {}"),
        };
        match next {
            Some(v) => cur = v,
            None => return Ok(default.clone()),
        }
    }
    Ok(cur)
}

fn url_parse(v: &str) -> FResult {
    // scheme://userinfo@host/path?query#fragment
    let mut d = BTreeMap::new();
    let (rest, fragment) = v.split_once('#').unwrap_or((v, ""));
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (scheme, rest) = match rest.split_once(':') {
        Some((sc, r))
            if !sc.is_empty()
                && sc
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                && sc.starts_with(|c: char| c.is_ascii_alphabetic()) =>
        {
            (sc.to_string(), r)
        }
        _ => (String::new(), rest),
    };
    let (mut userinfo, mut host, mut path, mut opaque) =
        (String::new(), String::new(), String::new(), String::new());
    if let Some(r) = rest.strip_prefix("//") {
        let (authority, p) = match r.find('/') {
            Some(i) => (&r[..i], &r[i..]),
            None => (r, ""),
        };
        if let Some((u, h)) = authority.rsplit_once('@') {
            userinfo = u.to_string();
            host = h.to_string();
        } else {
            host = authority.to_string();
        }
        path = p.to_string();
    } else if !scheme.is_empty() && !rest.starts_with('/') {
        opaque = rest.to_string();
    } else {
        path = rest.to_string();
    }
    let hostname = if host.starts_with('[') {
        host.trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or("")
            .to_string()
    } else {
        host.split(':').next().unwrap_or("").to_string()
    };
    for (k, v) in [
        ("scheme", scheme),
        ("host", host),
        ("hostname", hostname),
        ("path", path),
        ("query", query.to_string()),
        ("opaque", opaque),
        ("fragment", fragment.to_string()),
        ("userinfo", userinfo),
    ] {
        d.insert(k.to_string(), Value::str(v));
    }
    Ok(Value::map(d))
}

fn url_join(d: &BTreeMap<String, Value>) -> String {
    let g = |k: &str| d.get(k).map(strval).unwrap_or_default();
    let mut out = String::new();
    let scheme = g("scheme");
    if !scheme.is_empty() {
        out.push_str(&scheme);
        out.push(':');
    }
    let opaque = g("opaque");
    if !opaque.is_empty() {
        out.push_str(&opaque);
    } else {
        let host = g("host");
        let user = g("userinfo");
        if !scheme.is_empty() || !host.is_empty() || !user.is_empty() {
            out.push_str("//");
            if !user.is_empty() {
                out.push_str(&user);
                out.push('@');
            }
            out.push_str(&host);
        }
        let path = g("path");
        if !path.is_empty() && !path.starts_with('/') && !host.is_empty() {
            out.push('/');
        }
        out.push_str(&path);
    }
    let q = g("query");
    if !q.is_empty() {
        out.push('?');
        out.push_str(&q);
    }
    let f = g("fragment");
    if !f.is_empty() {
        out.push('#');
        out.push_str(&f);
    }
    out
}

fn path_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let j = parts.join("/");
    match (rooted, j.is_empty()) {
        (true, _) => format!("/{j}"),
        (false, true) => ".".into(),
        (false, false) => j,
    }
}

fn path_base(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return "/".into();
    }
    t.rsplit('/').next().unwrap_or(t).to_string()
}

fn path_dir(p: &str) -> String {
    let i = p.rfind('/').map(|i| i + 1).unwrap_or(0);
    path_clean(&p[..i])
}

fn path_ext(p: &str) -> String {
    for (i, c) in p.char_indices().rev() {
        if c == '/' {
            break;
        }
        if c == '.' {
            return p[i..].to_string();
        }
    }
    String::new()
}

pub fn register(add: &mut dyn FnMut(&'static str, usize, Option<usize>, F)) {
    let one = Some(1);
    let two = Some(2);
    let three = Some(3);
    add("hello", 0, Some(0), |_| Ok(Value::str("Hello!")));
    // strings
    add("abbrev", 2, two, |a| {
        Ok(Value::str(abbrev(n(a, 0)?, s(a, 1)?)))
    });
    add("abbrevboth", 3, three, |a| {
        Ok(Value::str(abbrevboth(n(a, 0)?, n(a, 1)?, s(a, 2)?)))
    });
    // Byte counts as in Go; a cut inside a character moves back to its start.
    add("trunc", 2, two, |a| {
        let (c, st) = (n(a, 0)?, s(a, 1)?);
        let l = st.len() as i64;
        let r = if c < 0 && l.saturating_add(c) > 0 {
            cut(st, (l + c) as usize, st.len())
        } else if c >= 0 && l > c {
            cut(st, 0, c as usize)
        } else {
            st
        };
        Ok(Value::str(r))
    });
    add("trim", 1, one, |a| Ok(Value::str(s(a, 0)?.trim())));
    add("upper", 1, one, |a| Ok(Value::str(s(a, 0)?.to_uppercase())));
    add("lower", 1, one, |a| Ok(Value::str(s(a, 0)?.to_lowercase())));
    add("title", 1, one, |a| Ok(Value::str(title(s(a, 0)?))));
    add("untitle", 1, one, |a| Ok(Value::str(untitle(s(a, 0)?))));
    // Byte offsets as in Go (out of range is Go's runtime error); a cut inside a
    // character moves back to its start.
    add("substr", 3, three, |a| {
        let (start, end, st) = (n(a, 0)?, n(a, 1)?, s(a, 2)?);
        let l = st.len() as i64;
        let (from, to) = if start < 0 {
            (0, end.max(0))
        } else if end < 0 || end > l {
            (start, l)
        } else {
            (start, end)
        };
        if to > l || from > to {
            return err(format!(
                "runtime error: slice bounds out of range [{start}:{end}]"
            ));
        }
        Ok(Value::str(cut(st, from as usize, to as usize)))
    });
    add("repeat", 2, two, |a| {
        let c = n(a, 0)?;
        if c < 0 {
            return err("strings: negative Repeat count");
        }
        let st = s(a, 1)?;
        budget::string(st.len().saturating_mul(c as usize))?;
        Ok(Value::str(st.repeat(c as usize)))
    });
    for name in ["trimall", "trimAll"] {
        add(name, 2, two, |a| {
            let set: std::collections::BTreeSet<char> = s(a, 0)?.chars().collect();
            Ok(Value::str(s(a, 1)?.trim_matches(|c| set.contains(&c))))
        });
    }
    add("trimSuffix", 2, two, |a| {
        let st = s(a, 1)?;
        Ok(Value::str(st.strip_suffix(s(a, 0)?).unwrap_or(st)))
    });
    add("trimPrefix", 2, two, |a| {
        let st = s(a, 1)?;
        Ok(Value::str(st.strip_prefix(s(a, 0)?).unwrap_or(st)))
    });
    add("nospace", 1, one, |a| {
        Ok(Value::str(
            s(a, 0)?
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>(),
        ))
    });
    add("initials", 1, one, |a| Ok(Value::str(initials(s(a, 0)?))));
    add("randAlphaNum", 1, one, |a| {
        Ok(Value::str(rand_string(
            n(a, 0)?,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        )?))
    });
    add("randAlpha", 1, one, |a| {
        Ok(Value::str(rand_string(
            n(a, 0)?,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        )?))
    });
    add("randAscii", 1, one, |a| {
        let cs: Vec<u8> = (32u8..127).collect();
        Ok(Value::str(rand_string(n(a, 0)?, &cs)?))
    });
    add("randNumeric", 1, one, |a| {
        Ok(Value::str(rand_string(n(a, 0)?, b"0123456789")?))
    });
    add("swapcase", 1, one, |a| Ok(Value::str(swapcase(s(a, 0)?))));
    add("shuffle", 1, one, |a| {
        let mut cs: Vec<char> = s(a, 0)?.chars().collect();
        fastrand::shuffle(&mut cs);
        Ok(Value::str(cs.into_iter().collect::<String>()))
    });
    add("snakecase", 1, one, |a| {
        Ok(Value::str(snakecase(s(a, 0)?, "_")))
    });
    add("kebabcase", 1, one, |a| {
        Ok(Value::str(snakecase(s(a, 0)?, "-")))
    });
    add("camelcase", 1, one, |a| Ok(Value::str(camelcase(s(a, 0)?))));
    add("wrap", 2, two, |a| {
        Ok(Value::str(wrap_custom(s(a, 1)?, n(a, 0)?, "\n", false)))
    });
    add("wrapWith", 3, three, |a| {
        Ok(Value::str(wrap_custom(s(a, 2)?, n(a, 0)?, s(a, 1)?, true)))
    });
    add("contains", 2, two, |a| {
        Ok(Value::Bool(s(a, 1)?.contains(s(a, 0)?)))
    });
    add("hasPrefix", 2, two, |a| {
        Ok(Value::Bool(s(a, 1)?.starts_with(s(a, 0)?)))
    });
    add("hasSuffix", 2, two, |a| {
        Ok(Value::Bool(s(a, 1)?.ends_with(s(a, 0)?)))
    });
    add("quote", 0, None, |a| {
        let parts: Vec<String> = a
            .iter()
            .filter(|v| !matches!(v, Value::Nil))
            .map(|v| gofmt::quote(&strval(v)))
            .collect();
        Ok(Value::str(join_checked(&parts, " ")?))
    });
    add("squote", 0, None, |a| {
        let parts: Vec<String> = a
            .iter()
            .filter(|v| !matches!(v, Value::Nil))
            .map(|v| format!("'{}'", strval(v)))
            .collect();
        Ok(Value::str(join_checked(&parts, " ")?))
    });
    add("cat", 0, None, |a| {
        let parts: Vec<String> = a
            .iter()
            .filter(|v| !matches!(v, Value::Nil))
            .map(gofmt::value_v)
            .collect();
        Ok(Value::str(join_checked(&parts, " ")?))
    });
    add("indent", 2, two, |a| {
        Ok(Value::str(indent(n(a, 0)?, s(a, 1)?)?))
    });
    add("nindent", 2, two, |a| {
        Ok(Value::str(format!("\n{}", indent(n(a, 0)?, s(a, 1)?)?)))
    });
    add("replace", 3, three, |a| {
        let (old, new, st) = (s(a, 0)?, s(a, 1)?, s(a, 2)?);
        let hits = if old.is_empty() {
            st.chars().count() + 1
        } else {
            st.matches(old).count()
        };
        budget::string(st.len().saturating_add(hits.saturating_mul(new.len())))?;
        Ok(Value::str(st.replace(old, new)))
    });
    add("plural", 3, three, |a| {
        Ok(Value::str(if n(a, 2)? == 1 { s(a, 0)? } else { s(a, 1)? }))
    });
    add("sha1sum", 1, one, |a| {
        use sha1::Digest;
        Ok(Value::str(hex(&sha1::Sha1::digest(s(a, 0)?.as_bytes()))))
    });
    add("sha256sum", 1, one, |a| {
        use sha2::Digest;
        Ok(Value::str(hex(&sha2::Sha256::digest(s(a, 0)?.as_bytes()))))
    });
    add("adler32sum", 1, one, |a| {
        Ok(Value::str(adler32(s(a, 0)?.as_bytes()).to_string()))
    });
    add("toString", 1, one, |a| Ok(Value::str(strval(&a[0]))));
    // conversions
    add("atoi", 1, one, |a| {
        Ok(Value::Int(s(a, 0)?.parse().unwrap_or(0)))
    });
    add("int64", 1, one, |a| Ok(Value::Int(to_i64(&a[0]))));
    add("int", 1, one, |a| Ok(Value::Int(to_i64(&a[0]))));
    add("float64", 1, one, |a| Ok(Value::Float(to_f64(&a[0]))));
    add("toDecimal", 1, one, |a| {
        Ok(Value::Int(
            i64::from_str_radix(&strval(&a[0]), 8).unwrap_or(0),
        ))
    });
    add("seq", 0, None, |a| {
        let mut p = Vec::new();
        for i in 0..a.len() {
            p.push(n(a, i)?);
        }
        Ok(Value::str(seq(&p)?))
    });
    add("split", 2, two, |a| {
        let (sep, st) = (s(a, 0)?, s(a, 1)?);
        budget::list(parts_count(sep, st))?;
        let d = st
            .split(sep)
            .enumerate()
            .map(|(i, p)| (format!("_{i}"), Value::str(p)))
            .collect();
        Ok(Value::map(d))
    });
    add("splitList", 2, two, |a| {
        let (sep, st) = (s(a, 0)?, s(a, 1)?);
        budget::list(parts_count(sep, st))?;
        let parts: Vec<String> = if sep.is_empty() {
            st.chars().map(String::from).collect()
        } else {
            st.split(sep).map(String::from).collect()
        };
        Ok(Value::str_list(parts))
    });
    add("splitn", 3, three, |a| {
        let (sep, c, st) = (s(a, 0)?, n(a, 1)?, s(a, 2)?);
        budget::list(parts_count(sep, st).min(c.max(0) as usize))?;
        let parts: Vec<&str> = if c < 0 {
            st.split(sep).collect()
        } else {
            st.splitn(c as usize, sep).collect()
        };
        Ok(Value::map(
            parts
                .into_iter()
                .enumerate()
                .map(|(i, p)| (format!("_{i}"), Value::str(p)))
                .collect(),
        ))
    });
    add("toStrings", 1, one, |a| {
        Ok(Value::str_list(strslice(&a[0])?))
    });
    add("until", 1, one, |a| {
        let c = n(a, 0)?;
        Ok(int_list(until_step(0, c, if c < 0 { -1 } else { 1 })?))
    });
    add("untilStep", 3, three, |a| {
        Ok(int_list(until_step(n(a, 0)?, n(a, 1)?, n(a, 2)?)?))
    });
    // math
    add("add1", 1, one, |a| {
        Ok(Value::Int(to_i64(&a[0]).wrapping_add(1)))
    });
    add("add", 0, None, |a| {
        Ok(Value::Int(
            a.iter().fold(0i64, |acc, v| acc.wrapping_add(to_i64(v))),
        ))
    });
    add("sub", 2, two, |a| {
        Ok(Value::Int(to_i64(&a[0]).wrapping_sub(to_i64(&a[1]))))
    });
    add("div", 2, two, |a| {
        let d = to_i64(&a[1]);
        if d == 0 {
            return err("runtime error: integer divide by zero");
        }
        Ok(Value::Int(to_i64(&a[0]).wrapping_div(d)))
    });
    add("mod", 2, two, |a| {
        let d = to_i64(&a[1]);
        if d == 0 {
            return err("runtime error: integer divide by zero");
        }
        Ok(Value::Int(to_i64(&a[0]).wrapping_rem(d)))
    });
    add("mul", 1, None, |a| {
        Ok(Value::Int(
            a.iter().fold(1i64, |acc, v| acc.wrapping_mul(to_i64(v))),
        ))
    });
    add("randInt", 2, two, |a| {
        let (lo, hi) = (n(a, 0)?, n(a, 1)?);
        if hi <= lo {
            return err("invalid argument to Intn");
        }
        Ok(Value::Int(fastrand::i64(lo..hi)))
    });
    add("add1f", 1, one, |a| Ok(Value::Float(to_f64(&a[0]) + 1.0)));
    add("addf", 0, None, |a| {
        Ok(Value::Float(a.iter().map(to_f64).sum()))
    });
    add("subf", 1, None, |a| {
        Ok(Value::Float(
            a[1..].iter().fold(to_f64(&a[0]), |acc, v| acc - to_f64(v)),
        ))
    });
    add("divf", 1, None, |a| {
        Ok(Value::Float(
            a[1..].iter().fold(to_f64(&a[0]), |acc, v| acc / to_f64(v)),
        ))
    });
    add("mulf", 1, None, |a| {
        Ok(Value::Float(
            a[1..].iter().fold(to_f64(&a[0]), |acc, v| acc * to_f64(v)),
        ))
    });
    for name in ["biggest", "max"] {
        add(name, 1, None, |a| {
            Ok(Value::Int(a.iter().map(to_i64).max().unwrap_or(0)))
        });
    }
    add("min", 1, None, |a| {
        Ok(Value::Int(a.iter().map(to_i64).min().unwrap_or(0)))
    });
    add("maxf", 1, None, |a| {
        Ok(Value::Float(
            a.iter().map(to_f64).fold(f64::NEG_INFINITY, f64::max),
        ))
    });
    add("minf", 1, None, |a| {
        Ok(Value::Float(
            a.iter().map(to_f64).fold(f64::INFINITY, f64::min),
        ))
    });
    add("ceil", 1, one, |a| Ok(Value::Float(to_f64(&a[0]).ceil())));
    add("floor", 1, one, |a| Ok(Value::Float(to_f64(&a[0]).floor())));
    add("round", 2, three, |a| {
        let r = a.get(2).map(to_f64).unwrap_or(0.5);
        Ok(Value::Float(round(to_f64(&a[0]), n(a, 1)?, r)))
    });
    // lists of strings
    add("join", 2, two, |a| {
        Ok(Value::str(join_checked(&strslice(&a[1])?, s(a, 0)?)?))
    });
    add("sortAlpha", 1, one, |a| match &a[0] {
        Value::List(..) => {
            let mut v = strslice(&a[0])?;
            v.sort();
            Ok(Value::str_list(v))
        }
        v => Ok(Value::str_list(vec![strval(v)])),
    });
    // defaults
    add("default", 1, None, |a| {
        if a.len() < 2 || empty(&a[1]) {
            return Ok(a[0].clone());
        }
        Ok(a[1].clone())
    });
    add("empty", 1, one, |a| Ok(Value::Bool(empty(&a[0]))));
    add("coalesce", 0, None, |a| {
        Ok(a.iter().find(|v| !empty(v)).cloned().unwrap_or(Value::Nil))
    });
    add("all", 0, None, |a| {
        Ok(Value::Bool(a.iter().all(|v| !empty(v))))
    });
    add("any", 0, None, |a| {
        Ok(Value::Bool(a.iter().any(|v| !empty(v))))
    });
    for (name, f) in [
        (
            "compact",
            (|a: &[Value]| -> FResult {
                Ok(vlist(
                    list_of(&a[0], "compact")
                        .unwrap_or_default()
                        .iter()
                        .filter(|v| !empty(v))
                        .cloned()
                        .collect(),
                ))
            }) as F,
        ),
        ("mustCompact", |a| {
            Ok(vlist(
                list_of(&a[0], "compact")?
                    .iter()
                    .filter(|v| !empty(v))
                    .cloned()
                    .collect(),
            ))
        }),
    ] {
        add(name, 1, one, f);
    }
    add("fromJson", 1, one, |a| {
        Ok(from_json(s(a, 0)?).unwrap_or(Value::Nil))
    });
    add("mustFromJson", 1, one, |a| from_json(s(a, 0)?));
    for name in ["toJson", "mustToJson"] {
        add(name, 1, one, |a| Ok(Value::str(to_json(&a[0], true, None))));
    }
    for name in ["toPrettyJson", "mustToPrettyJson"] {
        add(name, 1, one, |a| {
            Ok(Value::str(to_json(&a[0], true, Some(2))))
        });
    }
    for name in ["toRawJson", "mustToRawJson"] {
        add(name, 1, one, |a| {
            Ok(Value::str(to_json(&a[0], false, None)))
        });
    }
    add("ternary", 3, three, |a| {
        Ok(if b(a, 2)? { a[0].clone() } else { a[1].clone() })
    });
    add("deepCopy", 1, one, |a| Ok(a[0].deep_copy()?));
    add("mustDeepCopy", 1, one, |a| Ok(a[0].deep_copy()?));
    // reflection
    add("typeOf", 1, one, |a| Ok(Value::str(a[0].type_name())));
    add("typeIs", 2, two, |a| {
        Ok(Value::Bool(s(a, 0)? == a[1].type_name()))
    });
    add("typeIsLike", 2, two, |a| {
        let t = s(a, 0)?;
        Ok(Value::Bool(
            t == a[1].type_name() || t == format!("*{}", a[1].type_name()),
        ))
    });
    add("kindOf", 1, one, |a| Ok(Value::str(a[0].kind_name())));
    add("kindIs", 2, two, |a| {
        Ok(Value::Bool(s(a, 0)? == a[1].kind_name()))
    });
    add("deepEqual", 2, two, |a| {
        Ok(Value::Bool(a[0].deep_equal(&a[1])))
    });
    // paths (os* are filepath variants; same on Unix)
    add("osBase", 1, one, |a| Ok(Value::str(path_base(s(a, 0)?))));
    add("osClean", 1, one, |a| Ok(Value::str(path_clean(s(a, 0)?))));
    add("osDir", 1, one, |a| Ok(Value::str(path_dir(s(a, 0)?))));
    add("osExt", 1, one, |a| Ok(Value::str(path_ext(s(a, 0)?))));
    add("osIsAbs", 1, one, |a| {
        Ok(Value::Bool(s(a, 0)?.starts_with('/')))
    });
    // encoding
    add("b64enc", 1, one, |a| {
        Ok(Value::str(
            base64::engine::general_purpose::STANDARD.encode(s(a, 0)?),
        ))
    });
    add("b64dec", 1, one, |a| {
        Ok(Value::str(
            match base64::engine::general_purpose::STANDARD.decode(s(a, 0)?) {
                Ok(d) => String::from_utf8_lossy(&d).to_string(),
                Err(e) => e.to_string(),
            },
        ))
    });
    add("b32enc", 1, one, |a| {
        Ok(Value::str(b32enc(s(a, 0)?.as_bytes())))
    });
    add("b32dec", 1, one, |a| {
        Ok(Value::str(match b32dec(s(a, 0)?) {
            Ok(d) => String::from_utf8_lossy(&d).to_string(),
            Err(e) => e,
        }))
    });
    // lists
    add("tuple", 0, None, |a| Ok(vlist(a.to_vec())));
    add("list", 0, None, |a| Ok(vlist(a.to_vec())));
    for (name, must_) in [
        ("append", false),
        ("push", false),
        ("mustAppend", true),
        ("mustPush", true),
    ] {
        let _ = must_;
        add(name, 2, two, |a| {
            let mut l = list_of(&a[0], "append")?.to_vec();
            l.push(a[1].clone());
            Ok(vlist(l))
        });
    }
    for name in ["prepend", "mustPrepend"] {
        add(name, 2, two, |a| {
            let mut l = vec![a[1].clone()];
            l.extend(list_of(&a[0], "prepend")?.iter().cloned());
            Ok(vlist(l))
        });
    }
    add("first", 1, one, |a| {
        Ok(list_of(&a[0], "find first")?
            .first()
            .cloned()
            .unwrap_or(Value::Nil))
    });
    add("mustFirst", 1, one, |a| {
        Ok(list_of(&a[0], "find first")?
            .first()
            .cloned()
            .unwrap_or(Value::Nil))
    });
    add("last", 1, one, |a| {
        Ok(list_of(&a[0], "find last")?
            .last()
            .cloned()
            .unwrap_or(Value::Nil))
    });
    add("mustLast", 1, one, |a| {
        Ok(list_of(&a[0], "find last")?
            .last()
            .cloned()
            .unwrap_or(Value::Nil))
    });
    for name in ["rest", "mustRest"] {
        add(name, 1, one, |a| {
            let l = list_of(&a[0], "find rest")?;
            Ok(if l.is_empty() {
                Value::Nil
            } else {
                vlist(l[1..].to_vec())
            })
        });
    }
    for name in ["initial", "mustInitial"] {
        add(name, 1, one, |a| {
            let l = list_of(&a[0], "find initial")?;
            Ok(if l.is_empty() {
                Value::Nil
            } else {
                vlist(l[..l.len() - 1].to_vec())
            })
        });
    }
    for name in ["reverse", "mustReverse"] {
        add(name, 1, one, |a| {
            let mut l = list_of(&a[0], "find reverse")?.to_vec();
            l.reverse();
            Ok(vlist(l))
        });
    }
    for name in ["uniq", "mustUniq"] {
        add(name, 1, one, |a| {
            let mut out: Vec<Value> = Vec::new();
            for v in list_of(&a[0], "find uniq")?.iter() {
                budget::tick()?;
                if !in_list(&out, v) {
                    out.push(v.clone());
                }
            }
            Ok(vlist(out))
        });
    }
    for name in ["without", "mustWithout"] {
        add(name, 1, None, |a| {
            let l = list_of(&a[0], "find without")?;
            Ok(vlist(
                l.iter().filter(|v| !in_list(&a[1..], v)).cloned().collect(),
            ))
        });
    }
    for name in ["has", "mustHas"] {
        add(name, 2, two, |a| match &a[1] {
            Value::Nil => Ok(Value::Bool(false)),
            h => Ok(Value::Bool(in_list(&list_of(h, "find has")?, &a[0]))),
        });
    }
    for name in ["slice", "mustSlice"] {
        // sprig's slice shadows the builtin (sprig's FuncMap wins in Funcs()).
        add(name, 1, None, |a| {
            let l = match &a[0] {
                Value::List(l, _) => l.clone(),
                v => {
                    return err(format!(
                        "list should be type of slice or array but {}",
                        v.kind_name()
                    ));
                }
            };
            let idx: Vec<i64> = a[1..].iter().map(to_i64).collect();
            let (lo, hi) = match idx.as_slice() {
                [] => (0, l.len() as i64),
                [lo] => (*lo, l.len() as i64),
                [lo, hi, ..] => (*lo, *hi),
            };
            if lo < 0 || hi < lo || hi as usize > l.len() {
                return err(format!(
                    "runtime error: slice bounds out of range [{lo}:{hi}]"
                ));
            }
            Ok(vlist(l[lo as usize..hi as usize].to_vec()))
        });
    }
    add("concat", 0, None, |a| {
        let mut out = Vec::new();
        for v in a {
            let l = list_of(v, "concat")?;
            budget::list(out.len().saturating_add(l.len()))?;
            out.extend(l.iter().cloned());
        }
        Ok(vlist(out))
    });
    for name in ["chunk", "mustChunk"] {
        add(name, 2, two, |a| {
            let size = n(a, 0)?;
            if size <= 0 {
                return err("size must be positive");
            }
            let l = list_of(&a[1], "chunk")?;
            Ok(vlist(
                l.chunks(size as usize).map(|c| vlist(c.to_vec())).collect(),
            ))
        });
    }
    add("dig", 3, None, |a| {
        let k = a.len();
        dig(&a[..k - 2], &a[k - 2], &a[k - 1])
    });
    // dicts
    add("dict", 0, None, |a| Ok(dict_of(a)));
    add("get", 2, two, |a| {
        Ok(m(a, 0)?
            .borrow()
            .get(s(a, 1)?)
            .cloned()
            .unwrap_or_else(|| Value::str("")))
    });
    add("set", 3, three, |a| {
        let d = m(a, 0)?;
        let key = s(a, 1)?.to_string();
        let Ok(mut map) = d.try_borrow_mut() else {
            return Err(budget::trip(Overrun::Cycle).into());
        };
        if a[2].reaches_borrowed_map() {
            return Err(budget::trip(Overrun::Cycle).into());
        }
        map.insert(key, a[2].clone());
        drop(map);
        Ok(Value::Map(d))
    });
    add("unset", 2, two, |a| {
        let d = m(a, 0)?;
        d.borrow_mut().remove(s(a, 1)?);
        Ok(Value::Map(d))
    });
    add("hasKey", 2, two, |a| {
        Ok(Value::Bool(m(a, 0)?.borrow().contains_key(s(a, 1)?)))
    });
    add("pluck", 1, None, |a| {
        let key = s(a, 0)?;
        let mut out = Vec::new();
        for i in 1..a.len() {
            if let Some(v) = m(a, i)?.borrow().get(key) {
                out.push(v.clone());
            }
        }
        Ok(vlist(out))
    });
    add("keys", 0, None, |a| {
        let mut out = Vec::new();
        for i in 0..a.len() {
            out.extend(m(a, i)?.borrow().keys().cloned());
        }
        Ok(Value::str_list(out))
    });
    add("values", 1, one, |a| {
        Ok(vlist(m(a, 0)?.borrow().values().cloned().collect()))
    });
    add("pick", 1, None, |a| {
        let d = m(a, 0)?;
        let mut out = BTreeMap::new();
        for i in 1..a.len() {
            let k = s(a, i)?;
            if let Some(v) = d.borrow().get(k) {
                out.insert(k.to_string(), v.clone());
            }
        }
        Ok(Value::map(out))
    });
    add("omit", 1, None, |a| {
        let d = m(a, 0)?;
        let mut keys = Vec::new();
        for i in 1..a.len() {
            keys.push(s(a, i)?.to_string());
        }
        Ok(Value::map(
            d.borrow()
                .iter()
                .filter(|(k, _)| !keys.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ))
    });
    for (name, over) in [
        ("merge", false),
        ("mustMerge", false),
        ("mergeOverwrite", true),
        ("mustMergeOverwrite", true),
    ] {
        let f: F = if over {
            |a| {
                let d = m(a, 0)?;
                for i in 1..a.len() {
                    let src = m(a, i)?.borrow().clone();
                    merge_into(&mut d.borrow_mut(), &src, true, 0)?;
                }
                Ok(Value::Map(d))
            }
        } else {
            |a| {
                let d = m(a, 0)?;
                for i in 1..a.len() {
                    let src = m(a, i)?.borrow().clone();
                    merge_into(&mut d.borrow_mut(), &src, false, 0)?;
                }
                Ok(Value::Map(d))
            }
        };
        add(name, 1, None, f);
    }
    // crypto-ish
    add("uuidv4", 0, Some(0), |_| Ok(Value::str(uuidv4())));
    add("randBytes", 1, one, |a| {
        let count = n(a, 0)?.max(0);
        budget::string((count as usize).saturating_mul(4) / 3)?;
        let bytes: Vec<u8> = (0..count).map(|_| fastrand::u8(..)).collect();
        Ok(Value::str(
            base64::engine::general_purpose::STANDARD.encode(bytes),
        ))
    });
    // semver
    add("semver", 1, one, |a| {
        super::semver::semver_value(s(a, 0)?).map_err(FnErr::Msg)
    });
    add("semverCompare", 2, two, |a| {
        super::semver::compare(s(a, 0)?, s(a, 1)?)
            .map(Value::Bool)
            .map_err(FnErr::Msg)
    });
    // flow
    add("fail", 1, one, |a| err(s(a, 0)?.to_string()));
    // regex
    add("regexMatch", 2, two, |a| {
        Ok(Value::Bool(
            regex(s(a, 0)?)
                .map(|r| r.is_match(s(a, 1).unwrap_or("")))
                .unwrap_or(false),
        ))
    });
    add("mustRegexMatch", 2, two, |a| {
        Ok(Value::Bool(regex(s(a, 0)?)?.is_match(s(a, 1)?)))
    });
    for name in ["regexFindAll", "mustRegexFindAll"] {
        add(name, 3, three, |a| {
            let r = regex(s(a, 0)?)?;
            let c = n(a, 2)?;
            let max = budget::limits().max_list_len;
            let take = if c < 0 {
                max + 1
            } else {
                (c as usize).min(max + 1)
            };
            let v: Vec<String> = r
                .find_iter(s(a, 1)?)
                .map(|m| m.as_str().to_string())
                .take(take)
                .collect();
            budget::list(v.len())?;
            Ok(Value::str_list(v))
        });
    }
    for name in ["regexFind", "mustRegexFind"] {
        add(name, 2, two, |a| {
            Ok(Value::str(
                regex(s(a, 0)?)?
                    .find(s(a, 1)?)
                    .map(|m| m.as_str())
                    .unwrap_or(""),
            ))
        });
    }
    for name in ["regexReplaceAll", "mustRegexReplaceAll"] {
        add(name, 3, three, |a| {
            Ok(Value::str(replace_all(
                &regex(s(a, 0)?)?,
                s(a, 1)?,
                s(a, 2)?,
                true,
            )?))
        });
    }
    for name in ["regexReplaceAllLiteral", "mustRegexReplaceAllLiteral"] {
        add(name, 3, three, |a| {
            Ok(Value::str(replace_all(
                &regex(s(a, 0)?)?,
                s(a, 1)?,
                s(a, 2)?,
                false,
            )?))
        });
    }
    for name in ["regexSplit", "mustRegexSplit"] {
        add(name, 3, three, |a| {
            let r = regex(s(a, 0)?)?;
            let c = n(a, 2)?;
            let st = s(a, 1)?;
            let max = budget::limits().max_list_len;
            let v: Vec<String> = if c == 0 {
                vec![]
            } else if c < 0 {
                r.split(st).map(String::from).take(max + 1).collect()
            } else {
                r.splitn(st, c as usize)
                    .map(String::from)
                    .take(max + 1)
                    .collect()
            };
            budget::list(v.len())?;
            Ok(Value::str_list(v))
        });
    }
    add("regexQuoteMeta", 1, one, |a| {
        Ok(Value::str(regex::escape(s(a, 0)?)))
    });
    add("urlParse", 1, one, |a| url_parse(s(a, 0)?));
    add("urlJoin", 1, one, |a| {
        Ok(Value::str(url_join(&m(a, 0)?.borrow())))
    });
    super::dates::register(add);
    let _ = must::<()>;
    let _ = ListKind::Any;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_match_go() {
        assert_eq!(to_i64(&Value::str("010")), 8);
        assert_eq!(to_i64(&Value::str("42")), 42);
        assert_eq!(to_i64(&Value::str("x")), 0);
        assert_eq!(to_i64(&Value::Float(3.9)), 3);
        assert_eq!(camelcase("http_server"), "HttpServer");
        assert_eq!(snakecase("FirstName", "_"), "first_name");
        assert_eq!(snakecase("HTTPServer", "_"), "http_server");
        assert_eq!(
            wrap_custom("Hello World Foo", 5, "\n", false),
            "Hello\nWorld\nFoo"
        );
        assert_eq!(abbrev(5, "hello world"), "he...");
        assert_eq!(abbrevboth(5, 10, "1234 5678 9123"), "...5678...");
        assert_eq!(b32enc(b"hello"), "NBSWY3DP");
        assert_eq!(b32dec("NBSWY3DP").unwrap_or_default(), b"hello");
        assert_eq!(adler32(b"Wikipedia"), 0x11E60398);
        assert_eq!(seq(&[3]).ok().as_deref(), Some("1 2 3"));
        assert_eq!(seq(&[0, 2, 10]).ok().as_deref(), Some("0 2 4 6 8 10"));
        assert_eq!(title("hello world-foo"), "Hello World-Foo");
        assert_eq!(json_float(1e21), "1e+21");
        assert_eq!(json_float(0.5), "0.5");
    }
}
