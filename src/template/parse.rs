//! The parser of Go's text/template (`parse.go`): builds the node tree and the set of
//! `define`d templates, with Go's parse-time checks (undefined functions and variables).

use super::lexer::{Item, Tok, go_rune};
use std::collections::HashMap;
use std::fmt;

/// Positions on every node mirror Go's parse tree; not all are read yet.
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub enum Node {
    Text(String),
    Action {
        pos: usize,
        pipe: Pipe,
    },
    If {
        pos: usize,
        pipe: Pipe,
        list: Vec<Node>,
        else_list: Option<Vec<Node>>,
    },
    With {
        pos: usize,
        pipe: Pipe,
        list: Vec<Node>,
        else_list: Option<Vec<Node>>,
    },
    Range {
        pos: usize,
        pipe: Pipe,
        list: Vec<Node>,
        else_list: Option<Vec<Node>>,
    },
    Template {
        pos: usize,
        name: String,
        pipe: Option<Pipe>,
    },
    Break {
        pos: usize,
    },
    Continue {
        pos: usize,
    },
}

#[derive(Clone, Debug)]
pub struct Pipe {
    pub pos: usize,
    pub decl: Vec<String>,
    pub is_assign: bool,
    pub cmds: Vec<Command>,
}

#[derive(Clone, Debug)]
pub struct Command {
    pub pos: usize,
    pub args: Vec<Arg>,
}

#[derive(Clone, Debug)]
pub enum Num {
    Int(i64),
    Float(f64),
}

#[derive(Clone, Debug)]
pub enum Arg {
    Field {
        pos: usize,
        idents: Vec<String>,
    },
    Variable {
        pos: usize,
        name: String,
        fields: Vec<String>,
    },
    Dot {
        pos: usize,
    },
    Nil {
        pos: usize,
    },
    Bool {
        pos: usize,
        val: bool,
    },
    Number {
        pos: usize,
        text: String,
        val: Num,
    },
    Str {
        pos: usize,
        quoted: String,
        val: String,
    },
    Ident {
        pos: usize,
        name: String,
    },
    Pipe {
        pos: usize,
        pipe: Box<Pipe>,
    },
    Chain {
        pos: usize,
        node: Box<Arg>,
        fields: Vec<String>,
    },
}

impl Arg {
    pub fn pos(&self) -> usize {
        match self {
            Arg::Field { pos, .. }
            | Arg::Variable { pos, .. }
            | Arg::Dot { pos }
            | Arg::Nil { pos }
            | Arg::Bool { pos, .. }
            | Arg::Number { pos, .. }
            | Arg::Str { pos, .. }
            | Arg::Ident { pos, .. }
            | Arg::Pipe { pos, .. }
            | Arg::Chain { pos, .. } => *pos,
        }
    }
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Field { idents, .. } => {
                for i in idents {
                    write!(f, ".{i}")?;
                }
                Ok(())
            }
            Arg::Variable { name, fields, .. } => {
                write!(f, "{name}")?;
                for i in fields {
                    write!(f, ".{i}")?;
                }
                Ok(())
            }
            Arg::Dot { .. } => write!(f, "."),
            Arg::Nil { .. } => write!(f, "nil"),
            Arg::Bool { val, .. } => write!(f, "{val}"),
            Arg::Number { text, .. } => write!(f, "{text}"),
            Arg::Str { quoted, .. } => write!(f, "{quoted}"),
            Arg::Ident { name, .. } => write!(f, "{name}"),
            Arg::Pipe { pipe, .. } => write!(f, "({pipe})"),
            Arg::Chain { node, fields, .. } => {
                write!(f, "{node}")?;
                for i in fields {
                    write!(f, ".{i}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                write!(f, " ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.decl.is_empty() {
            write!(f, "{}", self.decl.join(", "))?;
            write!(f, "{}", if self.is_assign { " = " } else { " := " })?;
        }
        for (i, c) in self.cmds.iter().enumerate() {
            if i > 0 {
                write!(f, " | ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct ParseErr {
    pub pos: usize,
    pub message: String,
}

type PResult<T> = Result<T, ParseErr>;

/// A parsed file: its main body plus every template it defines (by name).
pub struct Parsed {
    pub root: Vec<Node>,
    pub defines: HashMap<String, Vec<Node>>,
}

pub fn parse(items: Vec<Item>, has_func: &dyn Fn(&str) -> bool) -> PResult<Parsed> {
    let mut p = Parser {
        items,
        i: 0,
        vars: vec!["$".into()],
        range_depth: 0,
        nesting: 0,
        defines: HashMap::new(),
        has_func,
    };
    let mut root = Vec::new();
    while p.peek().tok != Tok::Eof {
        if p.peek().tok == Tok::LeftDelim {
            let save = p.i;
            p.next();
            if p.next_non_space().tok == Tok::Define {
                p.parse_definition()?;
                continue;
            }
            p.i = save;
        }
        match p.text_or_action()? {
            Parsed1::End(pos) => {
                return Err(ParseErr {
                    pos,
                    message: "unexpected {{end}}".into(),
                });
            }
            Parsed1::Else(pos) => {
                return Err(ParseErr {
                    pos,
                    message: "unexpected {{else}}".into(),
                });
            }
            Parsed1::Node(n) => root.push(n),
        }
    }
    Ok(Parsed {
        root,
        defines: p.defines,
    })
}

enum Parsed1 {
    Node(Node),
    End(usize),
    Else(usize),
}

struct Parser<'a> {
    items: Vec<Item>,
    i: usize,
    vars: Vec<String>,
    range_depth: usize,
    /// Nesting of blocks and parentheses: the parser, the executor and dropping the tree
    /// recurse once per level, so it is capped like execution nesting.
    nesting: usize,
    defines: HashMap<String, Vec<Node>>,
    has_func: &'a dyn Fn(&str) -> bool,
}

fn item_desc(it: &Item) -> String {
    match it.tok {
        Tok::Eof => "EOF".into(),
        Tok::Block
        | Tok::Break
        | Tok::Continue
        | Tok::Define
        | Tok::Else
        | Tok::End
        | Tok::If
        | Tok::Range
        | Tok::Template
        | Tok::With
        | Tok::Nil => {
            format!("<{}>", it.val)
        }
        _ => {
            if it.val.chars().count() > 10 {
                let s: String = it.val.chars().take(10).collect();
                format!("{}...", super::gofmt::quote(&s))
            } else {
                super::gofmt::quote(&it.val)
            }
        }
    }
}

impl Parser<'_> {
    fn peek(&self) -> &Item {
        &self.items[self.i.min(self.items.len() - 1)]
    }
    fn next(&mut self) -> Item {
        let it = self.items[self.i.min(self.items.len() - 1)].clone();
        if self.i < self.items.len() {
            self.i += 1;
        }
        it
    }
    fn backup(&mut self) {
        self.i -= 1;
    }
    fn next_non_space(&mut self) -> Item {
        loop {
            let it = self.next();
            if it.tok != Tok::Space {
                return it;
            }
        }
    }
    fn peek_non_space(&mut self) -> Item {
        let it = self.next_non_space();
        self.backup();
        it
    }
    fn err<T>(&self, pos: usize, message: impl Into<String>) -> PResult<T> {
        Err(ParseErr {
            pos,
            message: message.into(),
        })
    }
    fn unexpected<T>(&self, it: &Item, context: &str) -> PResult<T> {
        self.err(
            it.pos,
            format!("unexpected {} in {}", item_desc(it), context),
        )
    }
    fn expect(&mut self, tok: Tok, context: &str) -> PResult<Item> {
        let it = self.next_non_space();
        if it.tok != tok {
            return self.unexpected(&it, context);
        }
        Ok(it)
    }

    fn parse_definition(&mut self) -> PResult<()> {
        let context = "define clause";
        let it = self.next_non_space();
        if it.tok != Tok::String && it.tok != Tok::RawString {
            return self.unexpected(&it, context);
        }
        let name = unquote(&it.val).map_err(|m| ParseErr {
            pos: it.pos,
            message: m,
        })?;
        self.expect(Tok::RightDelim, context)?;
        let saved = std::mem::replace(&mut self.vars, vec!["$".into()]);
        let (list, end) = self.item_list()?;
        self.vars = saved;
        if let Parsed1::Else(pos) = end {
            return self.err(pos, format!("unexpected {{{{else}}}} in {context}"));
        }
        self.add_define(it.pos, name, list)
    }

    fn add_define(&mut self, pos: usize, name: String, list: Vec<Node>) -> PResult<()> {
        if let Some(existing) = self.defines.get(&name) {
            if !is_empty_tree(existing) && !is_empty_tree(&list) {
                return self.err(
                    pos,
                    format!(
                        "template: multiple definition of template {}",
                        super::gofmt::quote(&name)
                    ),
                );
            }
            if is_empty_tree(&list) {
                return Ok(());
            }
        }
        self.defines.insert(name, list);
        Ok(())
    }

    /// Parses nodes until {{end}} or {{else}}, returning which ended it.
    fn item_list(&mut self) -> PResult<(Vec<Node>, Parsed1)> {
        let mut list = Vec::new();
        while self.peek_non_space().tok != Tok::Eof {
            match self.text_or_action()? {
                Parsed1::Node(n) => list.push(n),
                end => return Ok((list, end)),
            }
        }
        let pos = self.peek().pos;
        self.err(pos, "unexpected EOF")
    }

    fn text_or_action(&mut self) -> PResult<Parsed1> {
        let it = self.next_non_space();
        match it.tok {
            Tok::Text => Ok(Parsed1::Node(Node::Text(it.val))),
            Tok::LeftDelim => self.action(),
            _ => self.unexpected(&it, "input"),
        }
    }

    fn action(&mut self) -> PResult<Parsed1> {
        let it = self.next_non_space();
        match it.tok {
            Tok::Block => return self.block_control(),
            Tok::Break => {
                if self.range_depth == 0 {
                    return self.err(it.pos, "{{break}} outside {{range}}");
                }
                self.expect(Tok::RightDelim, "{{break}}")?;
                return Ok(Parsed1::Node(Node::Break { pos: it.pos }));
            }
            Tok::Continue => {
                if self.range_depth == 0 {
                    return self.err(it.pos, "{{continue}} outside {{range}}");
                }
                self.expect(Tok::RightDelim, "{{continue}}")?;
                return Ok(Parsed1::Node(Node::Continue { pos: it.pos }));
            }
            Tok::Else => {
                let peek = self.peek_non_space();
                if peek.tok == Tok::If || peek.tok == Tok::With {
                    return Ok(Parsed1::Else(peek.pos));
                }
                let t = self.expect(Tok::RightDelim, "else")?;
                return Ok(Parsed1::Else(t.pos));
            }
            Tok::End => {
                let t = self.expect(Tok::RightDelim, "end")?;
                return Ok(Parsed1::End(t.pos));
            }
            Tok::If => return self.control("if").map(Parsed1::Node),
            Tok::Range => return self.control("range").map(Parsed1::Node),
            Tok::With => return self.control("with").map(Parsed1::Node),
            Tok::Template => return self.template_control().map(Parsed1::Node),
            _ => {}
        }
        self.backup();
        let pos = self.peek().pos;
        let pipe = self.pipeline("command", Tok::RightDelim)?;
        Ok(Parsed1::Node(Node::Action { pos, pipe }))
    }

    fn deeper(&mut self, pos: usize) -> PResult<()> {
        self.nesting += 1;
        let max = super::RenderBudget::default().max_depth;
        if self.nesting > max {
            return self.err(
                pos,
                format!("blocks and parentheses nest deeper than {max} levels (render budget)"),
            );
        }
        Ok(())
    }

    fn control(&mut self, context: &str) -> PResult<Node> {
        let pos = self.peek().pos;
        self.deeper(pos)?;
        let r = super::budget::with_stack(|| self.control_body(context));
        self.nesting -= 1;
        r
    }

    fn control_body(&mut self, context: &str) -> PResult<Node> {
        let mark = self.vars.len();
        let pipe = self.pipeline(context, Tok::RightDelim)?;
        if context == "range" {
            self.range_depth += 1;
        }
        let (list, next) = self.item_list()?;
        if context == "range" {
            self.range_depth -= 1;
        }
        let mut else_list = None;
        if let Parsed1::Else(epos) = next {
            let peek = self.peek_non_space();
            if context == "if" && peek.tok == Tok::If {
                self.next_non_space();
                else_list = Some(vec![self.control("if")?]);
            } else if context == "with" && peek.tok == Tok::With {
                self.next_non_space();
                else_list = Some(vec![self.control("with")?]);
            } else {
                let (el, n2) = self.item_list()?;
                if let Parsed1::Else(p) = n2 {
                    let _ = epos;
                    return self.err(p, "expected end; found {{else}}");
                }
                else_list = Some(el);
            }
        }
        self.vars.truncate(mark);
        let pos = pipe.pos;
        Ok(match context {
            "if" => Node::If {
                pos,
                pipe,
                list,
                else_list,
            },
            "with" => Node::With {
                pos,
                pipe,
                list,
                else_list,
            },
            _ => Node::Range {
                pos,
                pipe,
                list,
                else_list,
            },
        })
    }

    fn template_name(&mut self, context: &str) -> PResult<(Item, String)> {
        let it = self.next_non_space();
        match it.tok {
            Tok::String | Tok::RawString => {
                let s = unquote(&it.val).map_err(|m| ParseErr {
                    pos: it.pos,
                    message: m,
                })?;
                Ok((it, s))
            }
            _ => self.unexpected(&it, context),
        }
    }

    fn template_control(&mut self) -> PResult<Node> {
        let context = "template clause";
        let (it, name) = self.template_name(context)?;
        let mut pipe = None;
        if self.next_non_space().tok != Tok::RightDelim {
            self.backup();
            pipe = Some(self.pipeline(context, Tok::RightDelim)?);
        }
        Ok(Node::Template {
            pos: it.pos,
            name,
            pipe,
        })
    }

    fn block_control(&mut self) -> PResult<Parsed1> {
        let context = "block clause";
        let (it, name) = self.template_name(context)?;
        let pipe = self.pipeline(context, Tok::RightDelim)?;
        self.deeper(it.pos)?;
        let saved = std::mem::replace(&mut self.vars, vec!["$".into()]);
        let saved_depth = std::mem::replace(&mut self.range_depth, 0);
        let (list, end) = super::budget::with_stack(|| self.item_list())?;
        self.vars = saved;
        self.range_depth = saved_depth;
        self.nesting -= 1;
        if let Parsed1::Else(pos) = end {
            return self.err(pos, format!("unexpected {{{{else}}}} in {context}"));
        }
        self.add_define(it.pos, name.clone(), list)?;
        Ok(Parsed1::Node(Node::Template {
            pos: it.pos,
            name,
            pipe: Some(pipe),
        }))
    }

    fn pipeline(&mut self, context: &str, end: Tok) -> PResult<Pipe> {
        let first = self.peek_non_space();
        let mut pipe = Pipe {
            pos: first.pos,
            decl: Vec::new(),
            is_assign: false,
            cmds: Vec::new(),
        };
        // declarations
        loop {
            let v = self.peek_non_space();
            if v.tok != Tok::Variable {
                break;
            }
            let save = self.i;
            self.next_non_space();
            let after_var = self.peek().clone();
            let next = self.peek_non_space();
            if next.tok == Tok::Assign || next.tok == Tok::Declare {
                pipe.is_assign = next.tok == Tok::Assign;
                self.next_non_space();
                pipe.decl.push(v.val.clone());
                self.vars.push(v.val.clone());
                break;
            } else if next.tok == Tok::Char && next.val == "," {
                self.next_non_space();
                pipe.decl.push(v.val.clone());
                self.vars.push(v.val.clone());
                if context == "range" && pipe.decl.len() < 2 {
                    let pk = self.peek_non_space();
                    if matches!(pk.tok, Tok::Variable | Tok::RightDelim | Tok::RightParen) {
                        continue;
                    }
                    return self.err(pk.pos, "range can only initialize variables");
                }
                return self.err(next.pos, format!("too many declarations in {context}"));
            } else {
                let _ = after_var;
                self.i = save;
                break;
            }
        }
        loop {
            let it = self.next_non_space();
            if it.tok == end {
                self.check_pipeline(&pipe, context, it.pos)?;
                return Ok(pipe);
            }
            match it.tok {
                Tok::Bool
                | Tok::CharConstant
                | Tok::Dot
                | Tok::Field
                | Tok::Identifier
                | Tok::Number
                | Tok::Nil
                | Tok::RawString
                | Tok::String
                | Tok::Variable
                | Tok::LeftParen => {
                    self.backup();
                    let c = self.command()?;
                    pipe.cmds.push(c);
                }
                _ => return self.unexpected(&it, context),
            }
        }
    }

    fn check_pipeline(&self, pipe: &Pipe, context: &str, pos: usize) -> PResult<()> {
        if pipe.cmds.is_empty() {
            return self.err(
                pos,
                format!("missing command in {context}")
                    .replace("missing command in command", "missing command"),
            );
        }
        for (i, c) in pipe.cmds.iter().enumerate().skip(1) {
            if matches!(
                c.args[0],
                Arg::Bool { .. }
                    | Arg::Dot { .. }
                    | Arg::Nil { .. }
                    | Arg::Number { .. }
                    | Arg::Str { .. }
            ) {
                return self.err(
                    c.pos,
                    format!("non executable command in pipeline stage {}", i + 1),
                );
            }
        }
        Ok(())
    }

    fn command(&mut self) -> PResult<Command> {
        let pos = self.peek_non_space().pos;
        let mut cmd = Command {
            pos,
            args: Vec::new(),
        };
        loop {
            self.peek_non_space();
            if let Some(op) = self.operand()? {
                cmd.args.push(op);
            }
            let it = self.next();
            match it.tok {
                Tok::Space => continue,
                Tok::RightDelim | Tok::RightParen => self.backup(),
                Tok::Pipe => {}
                _ => return self.unexpected(&it, "operand"),
            }
            break;
        }
        if cmd.args.is_empty() {
            return self.err(pos, "empty command");
        }
        Ok(cmd)
    }

    fn operand(&mut self) -> PResult<Option<Arg>> {
        let Some(node) = self.term()? else {
            return Ok(None);
        };
        if self.peek().tok == Tok::Field {
            let chain_pos = self.peek().pos;
            let mut fields = Vec::new();
            while self.peek().tok == Tok::Field {
                fields.push(self.next().val[1..].to_string());
            }
            return match node {
                Arg::Field { mut idents, .. } => {
                    idents.extend(fields);
                    Ok(Some(Arg::Field {
                        pos: chain_pos,
                        idents,
                    }))
                }
                Arg::Variable {
                    name,
                    fields: mut f0,
                    ..
                } => {
                    f0.extend(fields);
                    Ok(Some(Arg::Variable {
                        pos: chain_pos,
                        name,
                        fields: f0,
                    }))
                }
                Arg::Bool { .. }
                | Arg::Str { .. }
                | Arg::Number { .. }
                | Arg::Nil { .. }
                | Arg::Dot { .. } => self.err(
                    chain_pos,
                    format!(
                        "unexpected . after term {}",
                        super::gofmt::quote(&node.to_string())
                    ),
                ),
                other => Ok(Some(Arg::Chain {
                    pos: chain_pos,
                    node: Box::new(other),
                    fields,
                })),
            };
        }
        Ok(Some(node))
    }

    fn term(&mut self) -> PResult<Option<Arg>> {
        let it = self.next_non_space();
        let pos = it.pos;
        Ok(Some(match it.tok {
            Tok::Identifier => {
                if !(self.has_func)(&it.val) {
                    return self.err(
                        pos,
                        format!("function {} not defined", super::gofmt::quote(&it.val)),
                    );
                }
                Arg::Ident { pos, name: it.val }
            }
            Tok::Dot => Arg::Dot { pos },
            Tok::Nil => Arg::Nil { pos },
            Tok::Variable => {
                if !self.vars.contains(&it.val) {
                    return self.err(
                        pos,
                        format!("undefined variable {}", super::gofmt::quote(&it.val)),
                    );
                }
                Arg::Variable {
                    pos,
                    name: it.val,
                    fields: Vec::new(),
                }
            }
            Tok::Field => Arg::Field {
                pos,
                idents: vec![it.val[1..].to_string()],
            },
            Tok::Bool => Arg::Bool {
                pos,
                val: it.val == "true",
            },
            Tok::Number | Tok::CharConstant => {
                let val = parse_number(&it.val, it.tok == Tok::CharConstant)
                    .map_err(|m| ParseErr { pos, message: m })?;
                Arg::Number {
                    pos,
                    text: it.val,
                    val,
                }
            }
            Tok::LeftParen => {
                self.deeper(pos)?;
                let pipe = super::budget::with_stack(|| {
                    self.pipeline("parenthesized pipeline", Tok::RightParen)
                })?;
                self.nesting -= 1;
                Arg::Pipe {
                    pos,
                    pipe: Box::new(pipe),
                }
            }
            Tok::String | Tok::RawString => {
                let s = unquote(&it.val).map_err(|m| ParseErr { pos, message: m })?;
                Arg::Str {
                    pos,
                    quoted: it.val,
                    val: s,
                }
            }
            _ => {
                self.backup();
                return Ok(None);
            }
        }))
    }
}

fn is_empty_tree(list: &[Node]) -> bool {
    list.iter()
        .all(|n| matches!(n, Node::Text(t) if t.trim().is_empty()))
}

fn parse_number(text: &str, is_char: bool) -> Result<Num, String> {
    if is_char {
        let s = unquote(text)?;
        let mut cs = s.chars();
        return match (cs.next(), cs.next()) {
            (Some(c), None) => Ok(Num::Int(c as i64)),
            _ => Err(format!("malformed character constant: {text}")),
        };
    }
    if text.ends_with('i') {
        return Err(format!("complex numbers are not supported: {text}"));
    }
    let clean: String = text.chars().filter(|c| *c != '_').collect();
    let (neg, body) = match clean.strip_prefix('-') {
        Some(b) => (true, b.to_string()),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean).to_string()),
    };
    let lower = body.to_ascii_lowercase();
    let int = if let Some(h) = lower.strip_prefix("0x") {
        if h.contains('p') || h.contains('.') {
            None
        } else {
            i64::from_str_radix(h, 16).ok()
        }
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()
    } else if lower.len() > 1 && lower.starts_with('0') && lower.chars().all(|c| c.is_ascii_digit())
    {
        i64::from_str_radix(&lower[1..], 8).ok()
    } else {
        lower.parse::<i64>().ok()
    };
    if let Some(i) = int {
        return Ok(Num::Int(if neg { -i } else { i }));
    }
    let f: f64 = if let Some(h) = lower.strip_prefix("0x") {
        parse_hex_float(h)
            .ok_or_else(|| format!("illegal number syntax: {}", super::gofmt::quote(text)))?
    } else {
        lower
            .parse()
            .map_err(|_| format!("illegal number syntax: {}", super::gofmt::quote(text)))?
    };
    let f = if neg { -f } else { f };
    if !text.contains(['.', 'e', 'E', 'p', 'P']) && f.fract() == 0.0 {
        return Err(format!("{text} overflows int"));
    }
    Ok(Num::Float(f))
}

fn parse_hex_float(h: &str) -> Option<f64> {
    let (mant, exp) = h.split_once('p').unwrap_or((h, "0"));
    let (ip, fp) = mant.split_once('.').unwrap_or((mant, ""));
    let mut v = 0f64;
    for c in ip.chars() {
        v = v * 16.0 + c.to_digit(16)? as f64;
    }
    let mut scale = 1.0 / 16.0;
    for c in fp.chars() {
        v += c.to_digit(16)? as f64 * scale;
        scale /= 16.0;
    }
    let e: i32 = exp.parse().ok()?;
    Some(v * 2f64.powi(e))
}

/// strconv.Unquote for "..." , `...` and '...'.
pub fn unquote(s: &str) -> Result<String, String> {
    let bad = || "invalid syntax".to_string();
    if s.len() < 2 {
        return Err(bad());
    }
    let q = s.as_bytes()[0];
    if q == b'`' {
        return Ok(s[1..s.len() - 1].replace('\r', ""));
    }
    let body = &s[1..s.len() - 1];
    let mut out = String::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = chars.next().ok_or_else(bad)?;
        match e {
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\x0b'),
            '\\' => out.push('\\'),
            '"' if q == b'"' => out.push('"'),
            '\'' if q == b'\'' => out.push('\''),
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = (0..n).filter_map(|_| chars.next()).collect();
                if hex.len() != n {
                    return Err(bad());
                }
                let v = u32::from_str_radix(&hex, 16).map_err(|_| bad())?;
                if e == 'x' {
                    // a byte; only valid UTF-8 survives in Rust strings
                    out.push(char::from_u32(v).ok_or_else(bad)?);
                } else {
                    out.push(char::from_u32(v).ok_or_else(bad)?);
                }
            }
            '0'..='7' => {
                let mut v = e.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    let d = chars.next().and_then(|c| c.to_digit(8)).ok_or_else(bad)?;
                    v = v * 8 + d;
                }
                out.push(char::from_u32(v).ok_or_else(bad)?);
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

#[allow(dead_code)]
fn rune_desc(c: char) -> String {
    go_rune(c)
}
