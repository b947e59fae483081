//! Label and field selectors as the list and watch query parameters spell them.

use serde_json::Value;

use super::error::SimError;

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    reqs: Vec<Req>,
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

impl Selector {
    /// Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h` (`==` accepted for `=`).
    pub fn parse(s: &str) -> Result<Selector, SimError> {
        let mut reqs = Vec::new();
        let bad =
            |part: &str| SimError::BadRequest(format!("unable to parse requirement: {part:?}"));
        for part in split_top(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let set = |rest: &str| -> Option<Vec<String>> {
                let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
                Some(
                    inner
                        .split(',')
                        .map(|v| v.trim().to_string())
                        .filter(|v| !v.is_empty())
                        .collect(),
                )
            };
            let req = if let Some((k, v)) = part.split_once("!=") {
                Req::NotEq(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Req::Eq(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Req::NotIn(k.trim().to_string(), set(rest).ok_or_else(|| bad(part))?)
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Req::In(k.trim().to_string(), set(rest).ok_or_else(|| bad(part))?)
            } else if let Some(k) = part.strip_prefix('!') {
                Req::NotExists(k.trim().to_string())
            } else if part.contains(' ') || part.contains('(') {
                return Err(bad(part));
            } else {
                Req::Exists(part.to_string())
            };
            reqs.push(req);
        }
        Ok(Selector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether `lookup` (key → value) satisfies every requirement.
    pub fn matches<'a>(&self, lookup: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.reqs.iter().all(|r| match r {
            Req::Eq(k, v) => lookup(k) == Some(v.as_str()),
            Req::NotEq(k, v) => lookup(k) != Some(v.as_str()),
            Req::In(k, vs) => lookup(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => lookup(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => lookup(k).is_some(),
            Req::NotExists(k) => lookup(k).is_none(),
        })
    }

    /// Label selector over `metadata.labels`.
    pub fn matches_labels(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        self.matches(|k| labels.and_then(|l| l.get(k)).and_then(Value::as_str))
    }

    /// Field selector over dotted paths (`metadata.name`, `status.phase`, ...). A missing field
    /// compares as the empty string, as the real server does for the fields it supports.
    pub fn matches_fields(&self, obj: &Value) -> bool {
        self.matches(|k| {
            let ptr = format!("/{}", k.replace('.', "/"));
            Some(obj.pointer(&ptr).and_then(Value::as_str).unwrap_or(""))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_based_and_equality_requirements() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "fe"}}});
        let ok = |s: &str| Selector::parse(s).expect("parses").matches_labels(&obj);
        assert!(ok("app=web"));
        assert!(ok("app==web,tier in (fe,be)"));
        assert!(!ok("app!=web"));
        assert!(ok("tier notin (be),!missing,app"));
        assert!(!ok("missing"));
    }

    #[test]
    fn field_selector_and_parse_error() {
        let obj =
            json!({"metadata": {"name": "a", "namespace": "ns"}, "status": {"phase": "Running"}});
        let sel = Selector::parse("metadata.name=a,status.phase!=Pending").expect("parses");
        assert!(sel.matches_fields(&obj));
        let err = Selector::parse("app in x").expect_err("bad");
        assert!(err.to_string().contains("app in x"));
    }
}
