//! The function table: Go's text/template builtins, sprig's text functions (see
//! `sprig.rs`) and KUDO's `toYaml`. KUDO removes `env expandenv base dir clean ext isAbs`.

use super::gofmt;
use super::value::{ListKind, Value};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::LazyLock;

/// How a function call failed.
pub enum FnErr {
    /// The function returned an error (Go: `error calling NAME: MSG`).
    Msg(String),
    /// Argument `idx` has the wrong Go type.
    Type { idx: usize, expected: &'static str },
    /// The call would exceed the render budget.
    Budget(super::budget::Overrun),
}

impl From<super::budget::Overrun> for FnErr {
    fn from(o: super::budget::Overrun) -> Self {
        FnErr::Budget(o)
    }
}

pub type FResult = Result<Value, FnErr>;
pub type F = fn(&[Value]) -> FResult;

pub struct FuncDef {
    pub min: usize,
    pub max: Option<usize>,
    pub f: F,
}

pub fn err<T>(m: impl Into<String>) -> Result<T, FnErr> {
    Err(FnErr::Msg(m.into()))
}

/// A strict `string` parameter.
pub fn s(a: &[Value], i: usize) -> Result<&str, FnErr> {
    match a.get(i) {
        Some(Value::Str(x)) => Ok(x),
        _ => Err(FnErr::Type {
            idx: i,
            expected: "string",
        }),
    }
}

/// A strict `int` parameter.
pub fn n(a: &[Value], i: usize) -> Result<i64, FnErr> {
    match a.get(i) {
        Some(Value::Int(x)) => Ok(*x),
        _ => Err(FnErr::Type {
            idx: i,
            expected: "int",
        }),
    }
}

/// A strict `bool` parameter.
pub fn b(a: &[Value], i: usize) -> Result<bool, FnErr> {
    match a.get(i) {
        Some(Value::Bool(x)) => Ok(*x),
        _ => Err(FnErr::Type {
            idx: i,
            expected: "bool",
        }),
    }
}

/// A `map[string]interface{}` parameter.
pub fn m(a: &[Value], i: usize) -> Result<super::value::MapRef, FnErr> {
    match a.get(i) {
        Some(Value::Map(x)) => Ok(x.clone()),
        _ => Err(FnErr::Type {
            idx: i,
            expected: "map[string]interface {}",
        }),
    }
}

pub static FUNCS: LazyLock<HashMap<&'static str, FuncDef>> = LazyLock::new(|| {
    let mut t: HashMap<&'static str, FuncDef> = HashMap::new();
    let mut add = |name: &'static str, min: usize, max: Option<usize>, f: F| {
        t.insert(name, FuncDef { min, max, f });
    };
    // Go builtins
    add("and", 1, None, |_| Ok(Value::Nil));
    add("or", 1, None, |_| Ok(Value::Nil));
    add("not", 1, Some(1), |a| Ok(Value::Bool(!a[0].truthy())));
    add("len", 1, Some(1), builtin_len);
    add("index", 1, None, builtin_index);
    add("slice", 1, None, builtin_slice);
    add("print", 0, None, |a| Ok(Value::str(gofmt::sprint(a))));
    add("println", 0, None, |a| Ok(Value::str(gofmt::sprintln(a))));
    add("printf", 1, None, |a| {
        Ok(Value::str(gofmt::sprintf(s(a, 0)?, &a[1..])))
    });
    add("html", 0, None, |a| {
        Ok(Value::str(html_escape(&eval_args(a))))
    });
    add("js", 0, None, |a| Ok(Value::str(js_escape(&eval_args(a)))));
    add("urlquery", 0, None, |a| {
        Ok(Value::str(query_escape(&eval_args(a))))
    });
    add("call", 1, None, |a| match &a[0] {
        Value::Nil => err("call of nil"),
        v => err(format!("non-function of type {}", v.type_name())),
    });
    add("eq", 1, None, builtin_eq);
    add("ne", 2, Some(2), |a| {
        builtin_eq(a).map(|v| Value::Bool(!v.truthy()))
    });
    add("lt", 2, Some(2), |a| lt(&a[0], &a[1]).map(Value::Bool));
    add("le", 2, Some(2), |a| le(&a[0], &a[1]).map(Value::Bool));
    add("gt", 2, Some(2), |a| {
        le(&a[0], &a[1]).map(|v| Value::Bool(!v))
    });
    add("ge", 2, Some(2), |a| {
        lt(&a[0], &a[1]).map(|v| Value::Bool(!v))
    });
    // KUDO
    add("toYaml", 1, Some(1), |a| {
        super::yaml::marshal(&a[0])
            .map(Value::str)
            .map_err(FnErr::Msg)
    });
    super::sprig::register(&mut add);
    for removed in ["env", "expandenv", "base", "dir", "clean", "ext", "isAbs"] {
        t.remove(removed);
    }
    t
});

pub fn lookup(name: &str) -> Option<&'static FuncDef> {
    FUNCS.get(name)
}

pub fn exists(name: &str) -> bool {
    FUNCS.contains_key(name)
}

/// text/template's evalArgs: a single string is used as is, otherwise fmt.Sprint.
fn eval_args(a: &[Value]) -> String {
    if let [Value::Str(s)] = a {
        return s.to_string();
    }
    gofmt::sprint(a)
}

fn builtin_len(a: &[Value]) -> FResult {
    match &a[0] {
        Value::Str(s) => Ok(Value::Int(s.len() as i64)),
        Value::List(l, _) => Ok(Value::Int(l.len() as i64)),
        Value::Map(m) => Ok(Value::Int(m.borrow().len() as i64)),
        Value::Nil => err("len of nil pointer"),
        v => err(format!("len of type {}", v.type_name())),
    }
}

fn index_of(v: &Value, len: usize, cap_ok: bool) -> Result<usize, FnErr> {
    let i = match v {
        Value::Int(i) => *i,
        Value::Nil => return err("cannot index slice/array with nil"),
        v => {
            return err(format!(
                "cannot index slice/array with type {}",
                v.type_name()
            ));
        }
    };
    if i < 0 || (i as usize) > len || (!cap_ok && i as usize == len) {
        return err(format!("index out of range: {i}"));
    }
    Ok(i as usize)
}

fn builtin_index(a: &[Value]) -> FResult {
    let mut item = a[0].clone();
    for idx in &a[1..] {
        item = match &item {
            Value::List(l, _) => {
                let i = index_of(idx, l.len(), false)?;
                l[i].clone()
            }
            Value::Str(s) => {
                let i = index_of(idx, s.len(), false)?;
                Value::Int(s.as_bytes()[i] as i64)
            }
            Value::Map(m) => match idx {
                Value::Str(k) => m.borrow().get(&**k).cloned().unwrap_or(Value::Nil),
                Value::Nil => Value::Nil,
                v => {
                    return err(format!(
                        "value has type {}; should be string",
                        v.type_name()
                    ));
                }
            },
            Value::Nil => return err("index of untyped nil"),
            v => return err(format!("can't index item of type {}", v.type_name())),
        };
    }
    Ok(item)
}

fn builtin_slice(a: &[Value]) -> FResult {
    let item = &a[0];
    let idx = &a[1..];
    let len = match item {
        Value::Str(s) => {
            if idx.len() > 2 {
                return err("cannot 3-index slice a string".to_string());
            }
            s.len()
        }
        Value::List(l, _) => l.len(),
        Value::Nil => return err("slice of untyped nil"),
        v => return err(format!("can't slice item of type {}", v.type_name())),
    };
    if idx.len() > 3 {
        return err(format!("too many slice indexes: {}", idx.len()));
    }
    let mut ix = [0usize, len, len];
    for (k, v) in idx.iter().enumerate() {
        ix[k] = index_of(v, len, true)?;
    }
    if ix[0] > ix[1] {
        return err(format!("invalid slice index: {} > {}", ix[0], ix[1]));
    }
    if idx.len() == 3 && ix[1] > ix[2] {
        return err(format!("invalid slice index: {} > {}", ix[1], ix[2]));
    }
    match item {
        Value::Str(s) => match s.get(ix[0]..ix[1]) {
            Some(sub) => Ok(Value::str(sub)),
            None => Ok(Value::str(
                String::from_utf8_lossy(&s.as_bytes()[ix[0]..ix[1]]).to_string(),
            )),
        },
        Value::List(l, k) => Ok(Value::List(Rc::new(l[ix[0]..ix[1]].to_vec()), *k)),
        _ => Ok(Value::Nil),
    }
}

#[derive(PartialEq, Clone, Copy)]
enum Kind {
    Invalid,
    Bool,
    Int,
    Float,
    Str,
    Other,
}

fn basic_kind(v: &Value) -> Kind {
    match v {
        Value::Nil => Kind::Invalid,
        Value::Bool(_) => Kind::Bool,
        Value::Int(_) | Value::Duration(_) => Kind::Int,
        Value::Float(_) => Kind::Float,
        Value::Str(_) => Kind::Str,
        _ => Kind::Other,
    }
}

fn as_i(v: &Value) -> i64 {
    match v {
        Value::Int(i) | Value::Duration(i) => *i,
        _ => 0,
    }
}
fn as_f(v: &Value) -> f64 {
    match v {
        Value::Float(f) => *f,
        _ => 0.0,
    }
}

fn eq2(a: &Value, b: &Value) -> Result<bool, FnErr> {
    let (k1, k2) = (basic_kind(a), basic_kind(b));
    if k1 != k2 {
        if k1 != Kind::Invalid && k2 != Kind::Invalid {
            return err("incompatible types for comparison");
        }
        return Ok(false);
    }
    Ok(match k1 {
        Kind::Invalid => true,
        Kind::Bool => matches!((a, b), (Value::Bool(x), Value::Bool(y)) if x == y),
        Kind::Int => as_i(a) == as_i(b),
        Kind::Float => as_f(a) == as_f(b),
        Kind::Str => a.as_str() == b.as_str(),
        Kind::Other => match (a, b) {
            (Value::Time(x, _), Value::Time(y, _)) => x == y,
            _ => {
                return err(format!(
                    "non-comparable type {}: {}",
                    gofmt::value_v(b),
                    b.type_name()
                ));
            }
        },
    })
}

fn builtin_eq(a: &[Value]) -> FResult {
    if a.len() < 2 {
        return err("missing argument for comparison");
    }
    for other in &a[1..] {
        if eq2(&a[0], other)? {
            return Ok(Value::Bool(true));
        }
    }
    Ok(Value::Bool(false))
}

fn lt(a: &Value, b: &Value) -> Result<bool, FnErr> {
    let (k1, k2) = (basic_kind(a), basic_kind(b));
    for k in [k1, k2] {
        if matches!(k, Kind::Invalid | Kind::Other) {
            return err("invalid type for comparison");
        }
    }
    if k1 != k2 {
        return err("incompatible types for comparison");
    }
    match k1 {
        Kind::Bool => err("invalid type for comparison"),
        Kind::Int => Ok(as_i(a) < as_i(b)),
        Kind::Float => Ok(as_f(a) < as_f(b)),
        Kind::Str => Ok(a.as_str() < b.as_str()),
        _ => err("invalid type for comparison"),
    }
}

fn le(a: &Value, b: &Value) -> Result<bool, FnErr> {
    if lt(a, b)? {
        return Ok(true);
    }
    eq2(a, b)
}

/// template.HTMLEscapeString.
pub fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\0' => o.push('\u{FFFD}'),
            '"' => o.push_str("&#34;"),
            '\'' => o.push_str("&#39;"),
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            c => o.push(c),
        }
    }
    o
}

/// template.JSEscapeString.
pub fn js_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '\'' => o.push_str("\\'"),
            '"' => o.push_str("\\\""),
            '<' => o.push_str("\\u003C"),
            '>' => o.push_str("\\u003E"),
            '&' => o.push_str("\\u0026"),
            '=' => o.push_str("\\u003D"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04X}", c as u32)),
            c if (c as u32) < 0x80 => o.push(c),
            c if gofmt::is_print(c) => o.push(c),
            c => o.push_str(&format!("\\u{:04X}", c as u32)),
        }
    }
    o
}

/// url.QueryEscape.
pub fn query_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                o.push(b as char);
            }
            b' ' => o.push('+'),
            b => o.push_str(&format!("%{b:02X}")),
        }
    }
    o
}

/// A list of ints (sprig's `until` returns `[]int`).
pub fn int_list(v: Vec<i64>) -> Value {
    Value::List(
        Rc::new(v.into_iter().map(Value::Int).collect()),
        ListKind::Int,
    )
}
