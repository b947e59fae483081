//! Masterminds/semver v3 as sprig uses it: `semver` parsing and `semverCompare` constraints.

use super::value::Value;
use std::cmp::Ordering;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: String,
    pub meta: String,
    pub original: String,
}

pub fn parse(v: &str) -> Result<Version, String> {
    let invalid = || "Invalid Semantic Version".to_string();
    let t = v.strip_prefix('v').unwrap_or(v);
    let (t, meta) = t.split_once('+').unwrap_or((t, ""));
    let (t, pre) = t.split_once('-').unwrap_or((t, ""));
    let parts: Vec<&str> = t.split('.').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(invalid());
    }
    let num = |i: usize| -> Result<u64, String> {
        parts
            .get(i)
            .map(|p| p.parse::<u64>().map_err(|_| invalid()))
            .unwrap_or(Ok(0))
    };
    Ok(Version {
        major: num(0)?,
        minor: num(1)?,
        patch: num(2)?,
        pre: pre.to_string(),
        meta: meta.to_string(),
        original: v.to_string(),
    })
}

fn cmp_pre(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    let (pa, pb): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    for i in 0..pa.len().max(pb.len()) {
        match (pa.get(i), pb.get(i)) {
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(p), Ok(q)) => p.cmp(&q),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    _ => x.cmp(y),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
            _ => {}
        }
    }
    Ordering::Equal
}

pub fn cmp(a: &Version, b: &Version) -> Ordering {
    (a.major, a.minor, a.patch)
        .cmp(&(b.major, b.minor, b.patch))
        .then_with(|| cmp_pre(&a.pre, &b.pre))
}

pub fn semver_value(v: &str) -> Result<Value, String> {
    let p = parse(v)?;
    let mut m = BTreeMap::new();
    m.insert("Major".into(), Value::Int(p.major as i64));
    m.insert("Minor".into(), Value::Int(p.minor as i64));
    m.insert("Patch".into(), Value::Int(p.patch as i64));
    m.insert("Prerelease".into(), Value::str(p.pre));
    m.insert("Metadata".into(), Value::str(p.meta));
    m.insert("Original".into(), Value::str(p.original));
    Ok(Value::map(m))
}

/// One constraint term like ">=1.2", "~1.2.3", "^2", "1.x", "*".
fn check_term(term: &str, v: &Version) -> Result<bool, String> {
    let term = term.trim();
    let ops = [">=", "<=", "!=", "=>", "=<", ">", "<", "=", "~>", "~", "^"];
    let (op, rest) = ops
        .iter()
        .find_map(|o| term.strip_prefix(o).map(|r| (*o, r.trim())))
        .unwrap_or(("", term));
    let rest = rest.strip_prefix('v').unwrap_or(rest);
    let wild = |p: &str| p == "x" || p == "X" || p == "*";
    let (core, pre) = rest
        .split_once('-')
        .map(|(c, p)| (c, p.split('+').next().unwrap_or("")))
        .unwrap_or((rest.split('+').next().unwrap_or(rest), ""));
    let parts: Vec<&str> = if core.is_empty() {
        vec![]
    } else {
        core.split('.').collect()
    };
    let n_specified = parts.iter().take_while(|p| !wild(p)).count();
    let get = |i: usize| -> Result<u64, String> {
        match parts.get(i) {
            Some(p) if !wild(p) => p
                .parse()
                .map_err(|_| format!("improper constraint: {term}")),
            _ => Ok(0),
        }
    };
    let c = Version {
        major: get(0)?,
        minor: get(1)?,
        patch: get(2)?,
        pre: pre.to_string(),
        meta: String::new(),
        original: rest.to_string(),
    };
    // prereleases only match constraints that carry one
    if !v.pre.is_empty() && c.pre.is_empty() {
        return Ok(false);
    }
    let o = cmp(v, &c);
    let bump = |lvl: usize| -> Version {
        let mut u = c.clone();
        u.pre.clear();
        match lvl {
            0 => {
                u.major += 1;
                u.minor = 0;
                u.patch = 0;
            }
            1 => {
                u.minor += 1;
                u.patch = 0;
            }
            _ => u.patch += 1,
        }
        u
    };
    Ok(match op {
        "" | "=" => {
            if n_specified < 3 {
                o != Ordering::Less
                    && (n_specified == 0 || cmp(v, &bump(n_specified - 1)) == Ordering::Less)
            } else {
                o == Ordering::Equal
            }
        }
        "!=" => {
            if n_specified < 3 {
                !(o != Ordering::Less
                    && (n_specified == 0 || cmp(v, &bump(n_specified - 1)) == Ordering::Less))
            } else {
                o != Ordering::Equal
            }
        }
        ">" => {
            if n_specified < 3 && n_specified > 0 {
                cmp(v, &bump(n_specified - 1)) != Ordering::Less
            } else {
                o == Ordering::Greater
            }
        }
        ">=" | "=>" => o != Ordering::Less,
        "<" => o == Ordering::Less,
        "<=" | "=<" => {
            if n_specified < 3 && n_specified > 0 {
                cmp(v, &bump(n_specified - 1)) == Ordering::Less
            } else {
                o != Ordering::Greater
            }
        }
        "~" | "~>" => {
            o != Ordering::Less
                && cmp(v, &bump(if n_specified <= 1 { 0 } else { 1 })) == Ordering::Less
        }
        "^" => {
            let lvl = if c.major > 0 || n_specified <= 1 {
                0
            } else if c.minor > 0 || n_specified == 2 {
                1
            } else {
                2
            };
            o != Ordering::Less && cmp(v, &bump(lvl)) == Ordering::Less
        }
        _ => return Err(format!("improper constraint: {term}")),
    })
}

/// semverCompare: `||`-separated groups of comma/space-separated terms (and hyphen ranges).
pub fn compare(constraint: &str, version: &str) -> Result<bool, String> {
    let v = parse(version).map_err(|_| "Invalid Semantic Version".to_string())?;
    for group in constraint.split("||") {
        let g = group.trim();
        let mut terms: Vec<String> = Vec::new();
        let toks: Vec<&str> = g.split([',', ' ']).filter(|t| !t.is_empty()).collect();
        let mut i = 0;
        while i < toks.len() {
            if i + 2 < toks.len() && toks[i + 1] == "-" {
                terms.push(format!(">={}", toks[i]));
                terms.push(format!("<={}", toks[i + 2]));
                i += 3;
            } else if matches!(toks[i], ">=" | "<=" | ">" | "<" | "=" | "!=" | "~" | "^")
                && i + 1 < toks.len()
            {
                terms.push(format!("{}{}", toks[i], toks[i + 1]));
                i += 2;
            } else {
                terms.push(toks[i].to_string());
                i += 1;
            }
        }
        let mut ok = true;
        for t in &terms {
            if !check_term(t, &v)? {
                ok = false;
                break;
            }
        }
        if ok {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn constraints() {
        assert_eq!(compare(">=1.2.0", "1.3.0"), Ok(true));
        assert_eq!(compare("^1.2.0", "2.0.0"), Ok(false));
        assert_eq!(compare("~1.2.0", "1.2.9"), Ok(true));
        assert_eq!(compare("~1.2.0", "1.3.0"), Ok(false));
        assert_eq!(compare("1.2.x", "1.2.7"), Ok(true));
        assert_eq!(compare(">1.0, <2.0", "1.5.0"), Ok(true));
        assert_eq!(compare("<1.0 || >=3", "3.1.0"), Ok(true));
        assert_eq!(compare("1.1 - 1.3", "1.2.5"), Ok(true));
        assert!(compare(">=1", "notaversion").is_err());
    }
}
