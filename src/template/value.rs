//! The dynamic value model templates operate on: Go's `interface{}` as seen through
//! `reflect`, reduced to the kinds that JSON data and sprig functions produce.

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

    /// Go's `reflect.DeepEqual` on our model.
    pub fn deep_equal(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Nil, Value::Nil) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::List(a, ka), Value::List(b, kb)) => {
                ka == kb
                    && a.len() == b.len()
                    && a.iter().zip(b.iter()).all(|(x, y)| x.deep_equal(y))
            }
            (Value::Map(a), Value::Map(b)) => {
                let (a, b) = (a.borrow(), b.borrow());
                a.len() == b.len()
                    && a.iter()
                        .all(|(k, v)| b.get(k).is_some_and(|w| v.deep_equal(w)))
            }
            (Value::Time(a, _), Value::Time(b, _)) => a == b,
            (Value::Duration(a), Value::Duration(b)) => a == b,
            _ => false,
        }
    }

    /// A deep copy (maps are shared references otherwise).
    pub fn deep_copy(&self) -> Value {
        match self {
            Value::List(l, k) => {
                Value::List(Rc::new(l.iter().map(|v| v.deep_copy()).collect()), *k)
            }
            Value::Map(m) => Value::map(
                m.borrow()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.deep_copy()))
                    .collect(),
            ),
            v => v.clone(),
        }
    }
}
