//! The dynamic value model templates operate on: Go's `interface{}` as seen through
//! `reflect`, reduced to the kinds that JSON data and sprig functions produce.

use super::budget::{self, Overrun};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// A shared, mutable map: sprig's `set`/`unset` mutate maps in place, and Go maps are
/// reference types, so every copy of a map value sees the mutation.
pub type MapRef = Rc<RefCell<BTreeMap<String, Value>>>;

/// Go types a list may carry; only affects `typeOf`/`kindOf` and error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    Any,
    Str,
    Int,
}

#[derive(Clone, Debug)]
pub enum Value {
    /// An invalid reflect.Value or a nil interface (prints `<no value>` at top level).
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    List(Rc<Vec<Value>>, ListKind),
    Map(MapRef),
    /// A point in time (sprig date functions), with the zone name Go would print.
    Time(chrono::DateTime<chrono::FixedOffset>, Rc<str>),
    /// A Go time.Duration in nanoseconds.
    Duration(i64),
}

impl Value {
    pub fn str(s: impl Into<Rc<str>>) -> Value {
        Value::Str(s.into())
    }
    pub fn list(v: Vec<Value>) -> Value {
        Value::List(Rc::new(v), ListKind::Any)
    }
    pub fn str_list(v: Vec<String>) -> Value {
        Value::List(
            Rc::new(v.into_iter().map(Value::str).collect()),
            ListKind::Str,
        )
    }
    pub fn map(m: BTreeMap<String, Value>) -> Value {
        Value::Map(Rc::new(RefCell::new(m)))
    }

    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::Float(u as f64)
                } else {
                    Value::Float(n.as_f64().unwrap_or(0.0))
                }
            }
            serde_json::Value::String(s) => Value::str(s.as_str()),
            serde_json::Value::Array(a) => Value::list(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::map(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Nil => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => serde_json::Value::String(s.to_string()),
            Value::List(l, _) => serde_json::Value::Array(l.iter().map(|v| v.to_json()).collect()),
            Value::Map(m) => serde_json::Value::Object(
                m.borrow()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
            Value::Time(t, _) => serde_json::Value::String(t.to_rfc3339()),
            Value::Duration(d) => serde_json::Value::from(*d),
        }
    }

    /// Go's template truth: non-zero, non-empty.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l, _) => !l.is_empty(),
            Value::Map(m) => !m.borrow().is_empty(),
            Value::Time(..) => true,
            Value::Duration(d) => *d != 0,
        }
    }

    /// The Go type name, as `%T` and sprig `typeOf` print it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "<nil>",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::List(_, ListKind::Any) => "[]interface {}",
            Value::List(_, ListKind::Str) => "[]string",
            Value::List(_, ListKind::Int) => "[]int",
            Value::Map(_) => "map[string]interface {}",
            Value::Time(..) => "time.Time",
            Value::Duration(_) => "time.Duration",
        }
    }

    /// The reflect.Kind name, as sprig `kindOf` prints it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Nil => "invalid",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::Duration(_) => {
                if matches!(self, Value::Duration(_)) {
                    "int64"
                } else {
                    "int"
                }
            }
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::List(..) => "slice",
            Value::Map(_) => "map",
            Value::Time(..) => "struct",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Go's `reflect.DeepEqual` on our model. Like Go, a pair of lists or maps already
    /// under comparison counts as equal, so values that share parts are compared in time
    /// linear in their distinct parts. Past the value depth budget it answers false and
    /// records the overrun.
    pub fn deep_equal(&self, other: &Value) -> bool {
        let mut seen = std::collections::HashSet::new();
        deep_equal(self, other, &mut seen, 0)
    }

    /// A deep copy (maps are shared references otherwise); lists and maps share nothing
    /// with the original. Refused past the value depth budget or when it would copy more
    /// values than the list budget (a value that shares parts can be exponentially large).
    pub fn deep_copy(&self) -> Result<Value, Overrun> {
        let mut count = 0usize;
        deep_copy(self, 0, &mut count)
    }

    /// Whether a map of this value is mutably borrowed (being modified): storing the
    /// value in that map would make it contain itself.
    pub fn reaches_borrowed_map(&self) -> bool {
        let mut seen = std::collections::HashSet::new();
        reaches_borrowed(self, &mut seen, 0)
    }
}

fn deep_equal(
    a: &Value,
    b: &Value,
    seen: &mut std::collections::HashSet<(usize, usize)>,
    depth: usize,
) -> bool {
    match (a, b) {
        (Value::Nil, Value::Nil) => true,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Int(a), Value::Int(b)) => a == b,
        (Value::Float(a), Value::Float(b)) => a == b,
        (Value::Str(a), Value::Str(b)) => a == b,
        (Value::List(x, ka), Value::List(y, kb)) => {
            if ka != kb || x.len() != y.len() {
                return false;
            }
            if Rc::ptr_eq(x, y) || !seen.insert((Rc::as_ptr(x) as usize, Rc::as_ptr(y) as usize)) {
                return true;
            }
            if budget::value_depth(depth + 1).is_err() || budget::stop() {
                return false;
            }
            x.iter()
                .zip(y.iter())
                .all(|(p, q)| deep_equal(p, q, seen, depth + 1))
        }
        (Value::Map(x), Value::Map(y)) => {
            if Rc::ptr_eq(x, y) || !seen.insert((Rc::as_ptr(x) as usize, Rc::as_ptr(y) as usize)) {
                return true;
            }
            if budget::value_depth(depth + 1).is_err() || budget::stop() {
                return false;
            }
            let (Ok(x), Ok(y)) = (x.try_borrow(), y.try_borrow()) else {
                return false;
            };
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| deep_equal(v, w, seen, depth + 1)))
        }
        (Value::Time(a, _), Value::Time(b, _)) => a == b,
        (Value::Duration(a), Value::Duration(b)) => a == b,
        _ => false,
    }
}

fn deep_copy(v: &Value, depth: usize, count: &mut usize) -> Result<Value, Overrun> {
    *count += 1;
    budget::list(*count)?;
    budget::tick()?;
    Ok(match v {
        Value::List(l, k) => {
            budget::value_depth(depth + 1)?;
            let mut out = Vec::with_capacity(l.len());
            for e in l.iter() {
                out.push(deep_copy(e, depth + 1, count)?);
            }
            Value::List(Rc::new(out), *k)
        }
        Value::Map(m) => {
            budget::value_depth(depth + 1)?;
            let mut out = BTreeMap::new();
            for (k, e) in m.borrow().iter() {
                out.insert(k.clone(), deep_copy(e, depth + 1, count)?);
            }
            Value::map(out)
        }
        v => v.clone(),
    })
}

/// Past the value depth budget it answers true (the overrun is recorded).
fn reaches_borrowed(v: &Value, seen: &mut std::collections::HashSet<usize>, depth: usize) -> bool {
    if matches!(v, Value::List(..) | Value::Map(_)) && budget::value_depth(depth + 1).is_err() {
        return true;
    }
    match v {
        Value::List(l, _) => {
            seen.insert(Rc::as_ptr(l) as usize)
                && l.iter().any(|e| reaches_borrowed(e, seen, depth + 1))
        }
        Value::Map(m) => {
            if !seen.insert(Rc::as_ptr(m) as *const u8 as usize) {
                return false;
            }
            match m.try_borrow() {
                Ok(m) => m.values().any(|e| reaches_borrowed(e, seen, depth + 1)),
                Err(_) => true,
            }
        }
        _ => false,
    }
}

/// Dropping a value frees nested lists and maps from a heap stack, not by recursion: a
/// template can build a value a million levels deep (`$l = list $l` in a loop), and
/// recursive drop glue would overflow the thread stack.
impl Drop for Value {
    fn drop(&mut self) {
        let mut stack = Vec::new();
        take_children(self, &mut stack);
        while let Some(mut v) = stack.pop() {
            take_children(&mut v, &mut stack);
        }
    }
}

/// Moves the children of a list or map this value alone owns onto `stack`.
fn take_children(v: &mut Value, stack: &mut Vec<Value>) {
    match v {
        Value::List(l, _) => {
            if let Some(items) = Rc::get_mut(l) {
                stack.append(items);
            }
        }
        Value::Map(m) => {
            if let Some(cell) = Rc::get_mut(m) {
                stack.extend(std::mem::take(cell.get_mut()).into_values());
            }
        }
        _ => {}
    }
}
