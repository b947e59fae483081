//! gopkg.in/yaml.v2 `Marshal`, reproduced byte for byte: the encoder's quoting decisions
//! (`resolve`), libyaml's scalar analysis and style selection, block layout (indentless
//! sequences in mappings), 80-column folding, and yaml.v2's "natural" key order.

use super::budget;
use super::gofmt;
use super::value::Value;
use std::cmp::Ordering;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

struct Analysis {
    multiline: bool,
    flow_plain: bool,
    block_plain: bool,
    single: bool,
    block: bool,
}

fn is_printable(c: char) -> bool {
    let u = c as u32;
    u == 0x0A
        || (0x20..=0x7E).contains(&u)
        || u == 0x85
        || (0xA0..=0xD7FF).contains(&u)
        || ((0xE000..=0xFFFD).contains(&u) && u != 0xFEFF)
        || (0x10000..=0x10FFFF).contains(&u)
}

fn is_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn analyze(value: &str) -> Analysis {
    if value.is_empty() {
        return Analysis {
            multiline: false,
            flow_plain: false,
            block_plain: true,
            single: true,
            block: false,
        };
    }
    let cs: Vec<char> = value.chars().collect();
    let (mut block_ind, mut flow_ind, mut line_breaks, mut special) = (false, false, false, false);
    let (mut leading_space, mut leading_break, mut trailing_space, mut trailing_break) =
        (false, false, false, false);
    let (mut break_space, mut space_break) = (false, false);
    let (mut prev_space, mut prev_break) = (false, false);
    if value.starts_with("---") || value.starts_with("...") {
        block_ind = true;
        flow_ind = true;
    }
    let mut preceded_by_ws = true;
    for i in 0..cs.len() {
        let c = cs[i];
        let followed_by_ws = i + 1 >= cs.len() || is_blank(cs[i + 1]) || is_break(cs[i + 1]);
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => {
                    flow_ind = true;
                    block_ind = true;
                }
                '?' | ':' => {
                    flow_ind = true;
                    if followed_by_ws {
                        block_ind = true;
                    }
                }
                '-' if followed_by_ws => {
                    flow_ind = true;
                    block_ind = true;
                }
                _ => {}
            }
        } else {
            match c {
                ',' | '?' | '[' | ']' | '{' | '}' => flow_ind = true,
                ':' => {
                    flow_ind = true;
                    if followed_by_ws {
                        block_ind = true;
                    }
                }
                '#' if preceded_by_ws => {
                    flow_ind = true;
                    block_ind = true;
                }
                _ => {}
            }
        }
        if !is_printable(c) {
            special = true;
        }
        if c == ' ' {
            if i == 0 {
                leading_space = true;
            }
            if i + 1 == cs.len() {
                trailing_space = true;
            }
            if prev_break {
                break_space = true;
            }
            prev_space = true;
            prev_break = false;
        } else if is_break(c) {
            line_breaks = true;
            if i == 0 {
                leading_break = true;
            }
            if i + 1 == cs.len() {
                trailing_break = true;
            }
            if prev_space {
                space_break = true;
            }
            prev_space = false;
            prev_break = true;
        } else {
            prev_space = false;
            prev_break = false;
        }
        preceded_by_ws = is_blank(c) || is_break(c);
    }
    let mut a = Analysis {
        multiline: line_breaks,
        flow_plain: true,
        block_plain: true,
        single: true,
        block: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.flow_plain = false;
        a.block_plain = false;
    }
    if trailing_space {
        a.block = false;
    }
    if break_space {
        a.flow_plain = false;
        a.block_plain = false;
        a.single = false;
    }
    if space_break || special {
        a.flow_plain = false;
        a.block_plain = false;
        a.single = false;
        a.block = false;
    }
    if line_breaks {
        a.flow_plain = false;
        a.block_plain = false;
    }
    if flow_ind {
        a.flow_plain = false;
    }
    if block_ind {
        a.block_plain = false;
    }
    a
}

/// yaml.v2 resolve(): would this text, unquoted, read back as something other than a string?
fn resolves_to_non_string(s: &str) -> bool {
    const SPECIAL: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", "n", "N", "no",
        "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF", "", "~", "null", "Null",
        "NULL", ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf",
        "-.Inf", "-.INF", "<<",
    ];
    if SPECIAL.contains(&s) {
        return true;
    }
    let first = s.as_bytes()[0];
    match first {
        b'.' => s.parse::<f64>().is_ok() || go_parse_float(s),
        b'+' | b'-' | b'0'..=b'9' => {
            if is_timestamp(s) {
                return true;
            }
            let plain = s.replace('_', "");
            if go_parse_int(&plain) {
                return true;
            }
            if is_yaml_float(&plain) {
                return true;
            }
            if let Some(b) = plain
                .strip_prefix("0b")
                .or_else(|| plain.strip_prefix("-0b"))
            {
                return !b.is_empty() && i64::from_str_radix(b, 2).is_ok();
            }
            false
        }
        _ => false,
    }
}

fn go_parse_float(s: &str) -> bool {
    // strconv.ParseFloat accepts forms like ".5", ".5e3"
    let t = s.trim_start_matches(['+', '-']);
    !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && t.parse::<f64>().is_ok()
}

/// strconv.ParseInt(s, 0, 64) or ParseUint.
fn go_parse_int(s: &str) -> bool {
    let t = s.strip_prefix(['+', '-']).unwrap_or(s);
    if t.is_empty() {
        return false;
    }
    let l = t.to_ascii_lowercase();
    if let Some(h) = l.strip_prefix("0x") {
        return !h.is_empty() && u64::from_str_radix(h, 16).is_ok();
    }
    if let Some(o) = l.strip_prefix("0o") {
        return !o.is_empty() && u64::from_str_radix(o, 8).is_ok();
    }
    if let Some(b) = l.strip_prefix("0b") {
        return !b.is_empty() && u64::from_str_radix(b, 2).is_ok();
    }
    if l.len() > 1 && l.starts_with('0') {
        return u64::from_str_radix(&l[1..], 8).is_ok();
    }
    l.parse::<u64>().is_ok()
}

/// yamlStyleFloat: ^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$
fn is_yaml_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let st = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - st
    };
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            digits(&mut i);
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// yaml.v2 parseTimestamp: "2006-1-2", "2006-1-2 15:4:5.999999999", "2006-1-2T15:4:5.999999999Z07:00".
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let lead = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if lead != 4 || lead == b.len() || b[lead] != b'-' {
        return false;
    }
    let re = regex::Regex::new(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:([Tt ])(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.\d{1,9})?(Z|[+-]\d{2}:\d{2})?)?$").expect("static regex");
    let Some(c) = re.captures(s) else {
        return false;
    };
    let num = |i: usize| {
        c.get(i)
            .and_then(|m| m.as_str().parse::<u32>().ok())
            .unwrap_or(0)
    };
    if !(1..=12).contains(&num(2)) || !(1..=31).contains(&num(3)) {
        return false;
    }
    if let Some(sep) = c.get(4) {
        if num(5) > 23 || num(6) > 59 || num(7) > 59 {
            return false;
        }
        let zone = c.get(8).is_some();
        // the space form has no zone; the T form requires one
        if sep.as_str() == " " && zone {
            return false;
        }
        if sep.as_str() != " " && !zone {
            return false;
        }
    }
    true
}

fn is_base60_float(s: &str) -> bool {
    let c = s.as_bytes()[0];
    if !(c == b'+' || c == b'-' || c.is_ascii_digit()) || !s.contains(':') {
        return false;
    }
    regex::Regex::new(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
        .expect("static regex")
        .is_match(s)
}

struct Emitter {
    out: String,
    column: usize,
    whitespace: bool,
    indention: bool,
    indent: i32,
    indents: Vec<i32>,
    flow_level: usize,
    /// Nesting of the value being emitted.
    depth: usize,
    /// The budget limit the emitter ran into.
    stopped: Option<budget::Overrun>,
}

const BEST_INDENT: i32 = 2;
const BEST_WIDTH: usize = 80;

impl Emitter {
    fn put(&mut self, c: char) {
        self.out.push(c);
        self.column += 1;
    }
    fn put_break(&mut self) {
        self.out.push('\n');
        self.column = 0;
    }
    fn increase_indent(&mut self, flow: bool, indentless: bool) {
        self.indents.push(self.indent);
        if self.indent < 0 {
            self.indent = if flow { BEST_INDENT } else { 0 };
        } else if !indentless {
            self.indent += BEST_INDENT;
        }
    }
    fn pop_indent(&mut self) {
        self.indent = self.indents.pop().unwrap_or(-1);
    }
    fn write_indent(&mut self) {
        let indent = self.indent.max(0) as usize;
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.put_break();
        }
        while self.column < indent {
            self.put(' ');
        }
        self.whitespace = true;
        self.indention = true;
    }
    fn write_indicator(&mut self, ind: &str, need_ws: bool, is_ws: bool, is_indention: bool) {
        if need_ws && !self.whitespace {
            self.put(' ');
        }
        for c in ind.chars() {
            self.put(c);
        }
        self.whitespace = is_ws;
        self.indention = self.indention && is_indention;
    }

    /// Emits a node, stopping (with the overrun recorded) past the render budget.
    fn node(&mut self, v: &Value, mapping_ctx: bool, simple_key: bool) {
        let nested = matches!(v, Value::List(..) | Value::Map(_));
        let r = budget::tick()
            .and_then(|_| budget::string(self.out.len()))
            .and_then(|_| match nested {
                true => budget::value_depth(self.depth + 1),
                false => Ok(()),
            });
        if let Err(o) = r {
            self.stopped.get_or_insert(o);
        }
        if self.stopped.is_some() {
            return;
        }
        self.depth += usize::from(nested);
        self.node_inner(v, mapping_ctx, simple_key);
        self.depth -= usize::from(nested);
    }

    fn node_inner(&mut self, v: &Value, mapping_ctx: bool, simple_key: bool) {
        match v {
            Value::Map(m) => {
                let m = m.borrow();
                if m.is_empty() {
                    self.write_indicator("{", true, true, false);
                    self.increase_indent(true, false);
                    self.pop_indent();
                    self.write_indicator("}", false, false, false);
                    return;
                }
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort_by(|a, b| key_cmp(a, b));
                self.increase_indent(false, false);
                for k in keys {
                    self.write_indent();
                    let simple = k.chars().count() <= 128 && !k.chars().any(is_break);
                    if simple {
                        self.scalar_str(k, true);
                        self.write_indicator(":", false, false, false);
                    } else {
                        self.write_indicator("?", true, false, true);
                        self.scalar_str(k, false);
                        self.write_indent();
                        self.write_indicator(":", true, false, true);
                    }
                    self.node(&m[k], true, false);
                }
                self.pop_indent();
            }
            Value::List(l, _) => {
                if l.is_empty() {
                    self.write_indicator("[", true, true, false);
                    self.increase_indent(true, false);
                    self.pop_indent();
                    self.write_indicator("]", false, false, false);
                    return;
                }
                let indentless = mapping_ctx && !self.indention;
                self.increase_indent(false, indentless);
                for e in l.iter() {
                    self.write_indent();
                    self.write_indicator("-", true, false, true);
                    self.node(e, false, false);
                }
                self.pop_indent();
            }
            Value::Str(s) => self.scalar_str(s, simple_key),
            Value::Nil => self.scalar("null", Style::Plain, simple_key),
            Value::Bool(b) => {
                self.scalar(if *b { "true" } else { "false" }, Style::Plain, simple_key);
            }
            Value::Int(i) => self.scalar(&i.to_string(), Style::Plain, simple_key),
            Value::Float(f) => {
                let s = match gofmt::format_g(*f, None, false).as_str() {
                    "+Inf" => ".inf".to_string(),
                    "-Inf" => "-.inf".to_string(),
                    "NaN" => ".nan".to_string(),
                    s => s.to_string(),
                };
                self.scalar(&s, Style::Plain, simple_key);
            }
            Value::Duration(d) => self.scalar_str(&gofmt::duration_string(*d), simple_key),
            Value::Time(t, _) => self.scalar(
                &t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                Style::Plain,
                simple_key,
            ),
        }
    }

    /// The encoder's stringv: plain unless it would resolve to another type; literal if multi-line.
    fn scalar_str(&mut self, s: &str, simple_key: bool) {
        let can_plain = !resolves_to_non_string(s) && (s.is_empty() || !is_base60_float(s));
        let style = if s.contains('\n') {
            Style::Literal
        } else if can_plain {
            Style::Plain
        } else {
            Style::Double
        };
        self.scalar(s, style, simple_key);
    }

    fn scalar(&mut self, value: &str, requested: Style, simple_key: bool) {
        let a = analyze(value);
        let mut style = requested;
        if simple_key && a.multiline {
            style = Style::Double;
        }
        if style == Style::Plain {
            if (self.flow_level > 0 && !a.flow_plain) || (self.flow_level == 0 && !a.block_plain) {
                style = Style::Single;
            }
            if value.is_empty() && (self.flow_level > 0 || simple_key) {
                style = Style::Single;
            }
        }
        if style == Style::Single && !a.single {
            style = Style::Double;
        }
        if style == Style::Literal && (!a.block || self.flow_level > 0 || simple_key) {
            style = Style::Double;
        }
        self.increase_indent(true, false);
        let allow_breaks = !simple_key;
        match style {
            Style::Plain => self.write_plain(value, allow_breaks),
            Style::Single => self.write_single(value, allow_breaks),
            Style::Double => self.write_double(value, allow_breaks),
            Style::Literal => self.write_literal(value),
        }
        self.pop_indent();
    }

    fn write_plain(&mut self, value: &str, allow_breaks: bool) {
        if !self.whitespace {
            self.put(' ');
        }
        let cs: Vec<char> = value.chars().collect();
        let mut spaces = false;
        let mut breaks = false;
        let mut i = 0;
        while i < cs.len() {
            let c = cs[i];
            if c == ' ' {
                if allow_breaks
                    && !spaces
                    && self.column > BEST_WIDTH
                    && cs.get(i + 1) != Some(&' ')
                {
                    self.write_indent();
                } else {
                    self.put(c);
                }
                spaces = true;
            } else if is_break(c) {
                if !breaks && c == '\n' {
                    self.put_break();
                }
                self.write_break(c);
                self.indention = true;
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                self.put(c);
                self.indention = false;
                spaces = false;
                breaks = false;
            }
            i += 1;
        }
        self.whitespace = false;
        self.indention = false;
    }

    fn write_break(&mut self, c: char) {
        if c == '\n' {
            self.put_break();
        } else {
            self.out.push(c);
            self.column = 0;
        }
    }

    fn write_single(&mut self, value: &str, allow_breaks: bool) {
        self.write_indicator("'", true, false, false);
        let cs: Vec<char> = value.chars().collect();
        let mut spaces = false;
        let mut breaks = false;
        for i in 0..cs.len() {
            let c = cs[i];
            if c == ' ' {
                if allow_breaks
                    && !spaces
                    && self.column > BEST_WIDTH
                    && i > 0
                    && i < cs.len() - 1
                    && cs.get(i + 1) != Some(&' ')
                {
                    self.write_indent();
                } else {
                    self.put(c);
                }
                spaces = true;
            } else if is_break(c) {
                if !breaks && c == '\n' {
                    self.put_break();
                }
                self.write_break(c);
                self.indention = true;
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                if c == '\'' {
                    self.put('\'');
                }
                self.put(c);
                self.indention = false;
                spaces = false;
                breaks = false;
            }
        }
        self.write_indicator("'", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_double(&mut self, value: &str, allow_breaks: bool) {
        self.write_indicator("\"", true, false, false);
        let cs: Vec<char> = value.chars().collect();
        let mut spaces = false;
        for i in 0..cs.len() {
            let c = cs[i];
            if !is_printable(c) || c == '\u{FEFF}' || is_break(c) || c == '"' || c == '\\' {
                self.put('\\');
                match c {
                    '\0' => self.put('0'),
                    '\x07' => self.put('a'),
                    '\x08' => self.put('b'),
                    '\t' => self.put('t'),
                    '\n' => self.put('n'),
                    '\x0b' => self.put('v'),
                    '\x0c' => self.put('f'),
                    '\r' => self.put('r'),
                    '\x1b' => self.put('e'),
                    '"' => self.put('"'),
                    '\\' => self.put('\\'),
                    '\u{85}' => self.put('N'),
                    '\u{A0}' => self.put('_'),
                    '\u{2028}' => self.put('L'),
                    '\u{2029}' => self.put('P'),
                    c => {
                        let v = c as u32;
                        let (p, w) = if v <= 0xFF {
                            ('x', 2)
                        } else if v <= 0xFFFF {
                            ('u', 4)
                        } else {
                            ('U', 8)
                        };
                        self.put(p);
                        for ch in format!("{v:0w$X}").chars() {
                            self.put(ch);
                        }
                    }
                }
                spaces = false;
            } else if c == ' ' {
                if allow_breaks && !spaces && self.column > BEST_WIDTH && i > 0 && i < cs.len() - 1
                {
                    self.write_indent();
                    if cs.get(i + 1) == Some(&' ') {
                        self.put('\\');
                    }
                } else {
                    self.put(c);
                }
                spaces = true;
            } else {
                self.put(c);
                spaces = false;
            }
        }
        self.write_indicator("\"", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_literal(&mut self, value: &str) {
        self.write_indicator("|", true, false, false);
        let cs: Vec<char> = value.chars().collect();
        if cs.first().is_some_and(|c| *c == ' ' || is_break(*c)) {
            self.write_indicator(&BEST_INDENT.to_string(), false, false, false);
        }
        let chomp = match cs.len() {
            0 => Some("-"),
            n => {
                if !is_break(cs[n - 1]) {
                    Some("-")
                } else if n == 1 || is_break(cs[n - 2]) {
                    Some("+")
                } else {
                    None
                }
            }
        };
        if let Some(h) = chomp {
            self.write_indicator(h, false, false, false);
        }
        self.put_break();
        self.indention = true;
        self.whitespace = true;
        let mut breaks = true;
        for &c in &cs {
            if is_break(c) {
                self.write_break(c);
                self.indention = true;
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                self.put(c);
                self.indention = false;
                breaks = false;
            }
        }
    }
}

/// yaml.v2 keyList.Less for string keys: letters after non-letters, digit runs numerically.
fn key_cmp(a: &str, b: &str) -> Ordering {
    let ar: Vec<char> = a.chars().collect();
    let br: Vec<char> = b.chars().collect();
    let less = |ar: &[char], br: &[char]| -> bool {
        let mut i = 0;
        while i < ar.len() && i < br.len() {
            if ar[i] == br[i] {
                i += 1;
                continue;
            }
            let al = ar[i].is_alphabetic();
            let bl = br[i].is_alphabetic();
            if al && bl {
                return ar[i] < br[i];
            }
            if al || bl {
                return bl;
            }
            let (mut an, mut bn) = (0i64, 0i64);
            if ar[i] == '0' || br[i] == '0' {
                let mut j = i as isize - 1;
                while j >= 0 && ar[j as usize].is_ascii_digit() {
                    if ar[j as usize] != '0' {
                        an = 1;
                        bn = 1;
                        break;
                    }
                    j -= 1;
                }
            }
            let mut ai = i;
            while ai < ar.len() && ar[ai].is_ascii_digit() {
                an = an.wrapping_mul(10).wrapping_add(ar[ai] as i64 - '0' as i64);
                ai += 1;
            }
            let mut bi = i;
            while bi < br.len() && br[bi].is_ascii_digit() {
                bn = bn.wrapping_mul(10).wrapping_add(br[bi] as i64 - '0' as i64);
                bi += 1;
            }
            if an != bn {
                return an < bn;
            }
            if ai != bi {
                return ai < bi;
            }
            return ar[i] < br[i];
        }
        ar.len() < br.len()
    };
    if less(&ar, &br) {
        Ordering::Less
    } else if less(&br, &ar) {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

/// yaml.Marshal(v) as a string.
pub fn marshal(v: &Value) -> Result<String, String> {
    let mut e = Emitter {
        out: String::new(),
        column: 0,
        whitespace: true,
        indention: true,
        indent: -1,
        indents: Vec::new(),
        flow_level: 0,
        depth: 0,
        stopped: None,
    };
    e.node(v, false, false);
    if let Some(o) = e.stopped {
        return Err(o.to_string());
    }
    // document end: write_indent at indent 0
    e.indent = -1;
    e.write_indent();
    Ok(e.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(j: serde_json::Value) -> String {
        marshal(&Value::from_json(&j)).unwrap_or_default()
    }

    #[test]
    fn yaml_v2_layout() {
        assert_eq!(
            y(serde_json::json!({"b": 1, "a": [1, 2], "c": {"d": "x"}})),
            "a:\n- 1\n- 2\nb: 1\nc:\n  d: x\n"
        );
        assert_eq!(
            y(serde_json::json!([{"a": 1, "b": [true]}, []])),
            "- a: 1\n  b:\n  - true\n- []\n"
        );
        assert_eq!(
            y(serde_json::json!({"e": {}, "n": null})),
            "e: {}\n\"n\": null\n"
        );
        assert_eq!(y(serde_json::json!("hello")), "hello\n");
    }

    #[test]
    fn yaml_v2_quoting() {
        assert_eq!(
            y(
                serde_json::json!({"a": "true", "b": "", "c": "1.5", "d": "0x1F", "e": "2021-01-01", "f": "y", "g": "hello: world", "h": "- x", "i": " lead", "j": "tab\there", "k": "it's"})
            ),
            "a: \"true\"\nb: \"\"\nc: \"1.5\"\nd: \"0x1F\"\ne: \"2021-01-01\"\nf: \"y\"\ng: 'hello: world'\nh: '- x'\ni: ' lead'\nj: \"tab\\there\"\nk: it's\n"
        );
        assert_eq!(
            y(serde_json::json!({"m": "line1\nline2\n", "n": "a\nb"})),
            "m: |\n  line1\n  line2\n\"n\": |-\n  a\n  b\n"
        );
        assert_eq!(y(serde_json::json!({"x": "1:20"})), "x: \"1:20\"\n");
    }

    #[test]
    fn yaml_v2_key_order_and_folding() {
        assert_eq!(
            y(serde_json::json!({"a10": 1, "a2": 2, "B": 3, "_x": 4})),
            "_x: 4\nB: 3\na2: 2\na10: 1\n"
        );
        let long = "word ".repeat(20) + "end";
        let out = y(serde_json::json!({"k": long}));
        assert!(out.starts_with("k: word word"), "{out}");
        assert!(out.contains("\n  word"), "{out}");
    }
}
