//! Execution of a parsed template (`exec.go`): pipelines, variables, control flow,
//! `missingkey=error`, and Go's error messages with template, line, column and context.

use super::budget::{self, Overrun, RenderBudget};
use super::funcs::{self, FnErr};
use super::gofmt;
use super::parse::{Arg, Command, Node, Num, Pipe};
use super::value::Value;
use super::{Template, TemplateError};

enum Flow {
    Normal,
    Break,
    Continue,
}

pub struct State<'a> {
    tmpl: &'a Template,
    /// Name of the template being executed (a `define`d one inside `template`).
    current: &'a str,
    pub out: String,
    vars: Vec<(String, Value)>,
    /// Nesting of template calls, blocks and parenthesised pipelines.
    depth: usize,
    budget: RenderBudget,
}

type R<T> = Result<T, TemplateError>;

pub fn execute(tmpl: &Template, data: &serde_json::Value, budget: &RenderBudget) -> R<String> {
    let _meter = budget::start(budget);
    let data = Value::from_json(data);
    let mut s = State {
        tmpl,
        current: &tmpl.name,
        out: String::new(),
        vars: vec![("$".into(), data.clone())],
        depth: 0,
        budget: *budget,
    };
    s.walk_list(&data, &tmpl.root)?;
    if let Some(o) = budget::overrun() {
        return Err(s.over(o));
    }
    Ok(s.out)
}

#[cfg(test)]
thread_local! {
    /// The stack left when each nesting level was entered (for measuring how much stack
    /// one level takes).
    pub static STACK_PROBE: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The Go printed form of a node, truncated as ErrorContext does.
fn context(s: String) -> String {
    if s.len() > 20 {
        let mut end = 20;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

impl<'a> State<'a> {
    fn over(&self, o: Overrun) -> TemplateError {
        TemplateError::Budget {
            template: self.tmpl.name.clone(),
            overrun: o,
        }
    }

    /// One level deeper: a block, a template call or a parenthesised pipeline.
    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > self.budget.max_depth {
            return Err(self.over(Overrun::Depth(self.budget.max_depth)));
        }
        #[cfg(test)]
        {
            let left = stacker::remaining_stack().unwrap_or(0);
            STACK_PROBE.with(|p| {
                let mut p = p.borrow_mut();
                p.resize(self.depth, 0);
                p[self.depth - 1] = left;
            });
        }
        budget::tick().map_err(|o| self.over(o))
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Runs one nesting level: counted against the depth budget, with enough stack.
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> R<T>) -> R<T> {
        self.enter()?;
        let r = budget::with_stack(|| f(self));
        self.leave();
        r
    }

    fn check_output(&self) -> R<()> {
        if self.out.len() > self.budget.max_output_bytes {
            return Err(self.over(Overrun::Output(self.budget.max_output_bytes)));
        }
        if let Some(o) = budget::overrun() {
            return Err(self.over(o));
        }
        Ok(())
    }

    /// A function's result: within the string and list limits.
    fn check_value(&self, v: &Value) -> R<()> {
        let r = match v {
            Value::Str(s) => budget::string(s.len()),
            Value::List(l, _) => budget::list(l.len()),
            Value::Map(m) => budget::list(m.borrow().len()),
            _ => Ok(()),
        };
        r.map_err(|o| self.over(o))?;
        match budget::overrun() {
            Some(o) => Err(self.over(o)),
            None => Ok(()),
        }
    }

    fn errorf(
        &self,
        pos: usize,
        ctx: &dyn std::fmt::Display,
        msg: impl Into<String>,
    ) -> TemplateError {
        let (line, col) = self.tmpl.line_col(pos);
        TemplateError::Exec {
            template: self.tmpl.name.clone(),
            line,
            col,
            message: format!(
                "executing {} at <{}>: {}",
                gofmt::quote(self.current),
                context(ctx.to_string()),
                msg.into()
            ),
        }
    }

    fn walk_list(&mut self, dot: &Value, list: &[Node]) -> R<Flow> {
        for n in list {
            match self.walk(dot, n)? {
                Flow::Normal => {}
                f => return Ok(f),
            }
        }
        Ok(Flow::Normal)
    }

    fn walk(&mut self, dot: &Value, node: &Node) -> R<Flow> {
        budget::tick().map_err(|o| self.over(o))?;
        match node {
            Node::Text(t) => {
                self.out.push_str(t);
                self.check_output()?;
            }
            Node::Action { pipe, .. } => {
                let v = self.eval_pipeline(dot, pipe)?;
                if pipe.decl.is_empty() {
                    match v {
                        Value::Nil => self.out.push_str("<no value>"),
                        v => self.out.push_str(&gofmt::value_v(&v)),
                    }
                    self.check_output()?;
                }
            }
            Node::If {
                pipe,
                list,
                else_list,
                ..
            }
            | Node::With {
                pipe,
                list,
                else_list,
                ..
            } => {
                return self.nested(|s| {
                    let mark = s.vars.len();
                    let v = s.eval_pipeline(dot, pipe)?;
                    let flow = if v.truthy() {
                        if matches!(node, Node::With { .. }) {
                            s.walk_list(&v, list)?
                        } else {
                            s.walk_list(dot, list)?
                        }
                    } else if let Some(el) = else_list {
                        s.walk_list(dot, el)?
                    } else {
                        Flow::Normal
                    };
                    s.vars.truncate(mark);
                    Ok(flow)
                });
            }
            Node::Range {
                pipe,
                list,
                else_list,
                ..
            } => {
                self.nested(|s| {
                    let mark = s.vars.len();
                    let r = s.walk_range(dot, pipe, list, else_list.as_deref());
                    s.vars.truncate(mark);
                    r
                })?;
            }
            Node::Template { pos, name, pipe } => {
                let Some(body) = self.tmpl.lookup(name) else {
                    let ctx = format!("{{{{template {}}}}}", gofmt::quote(name));
                    return Err(self.errorf(
                        *pos,
                        &ctx,
                        format!("template {} not defined", gofmt::quote(name)),
                    ));
                };
                let new_dot = match pipe {
                    Some(p) => self.eval_pipeline(dot, p)?,
                    None => Value::Nil,
                };
                self.nested(|s| {
                    let saved_vars =
                        std::mem::replace(&mut s.vars, vec![("$".into(), new_dot.clone())]);
                    let saved_name = s.current;
                    s.current = s.tmpl.define_name(name);
                    let r = s.walk_list(&new_dot, body);
                    s.current = saved_name;
                    s.vars = saved_vars;
                    r
                })?;
            }
            Node::Break { .. } => return Ok(Flow::Break),
            Node::Continue { .. } => return Ok(Flow::Continue),
        }
        Ok(Flow::Normal)
    }

    fn set_top_var(&mut self, n: usize, v: Value) {
        let len = self.vars.len();
        self.vars[len - n].1 = v;
    }

    fn one_iteration(
        &mut self,
        pipe: &Pipe,
        list: &[Node],
        mark: usize,
        index: Value,
        elem: Value,
    ) -> R<Flow> {
        budget::tick().map_err(|o| self.over(o))?;
        if !pipe.decl.is_empty() {
            if pipe.is_assign {
                let target = if pipe.decl.len() > 1 {
                    index.clone()
                } else {
                    elem.clone()
                };
                self.set_var(pipe.pos, &pipe.decl[0], target)?;
            } else {
                self.set_top_var(1, elem.clone());
            }
        }
        if pipe.decl.len() > 1 {
            if pipe.is_assign {
                self.set_var(pipe.pos, &pipe.decl[1], elem.clone())?;
            } else {
                self.set_top_var(2, index);
            }
        }
        let r = self.walk_list(&elem, list);
        self.vars.truncate(mark);
        r
    }

    fn walk_range(
        &mut self,
        dot: &Value,
        pipe: &Pipe,
        list: &[Node],
        else_list: Option<&[Node]>,
    ) -> R<()> {
        let val = self.eval_pipeline(dot, pipe)?;
        let mark = self.vars.len();
        let mut ran = false;
        match &val {
            Value::List(l, _) => {
                for (i, e) in l.iter().enumerate() {
                    ran = true;
                    if let Flow::Break =
                        self.one_iteration(pipe, list, mark, Value::Int(i as i64), e.clone())?
                    {
                        break;
                    }
                }
            }
            Value::Map(m) => {
                let entries: Vec<(String, Value)> = m
                    .borrow()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for (k, v) in entries {
                    ran = true;
                    if let Flow::Break = self.one_iteration(pipe, list, mark, Value::str(k), v)? {
                        break;
                    }
                }
            }
            Value::Int(n) => {
                if pipe.decl.len() > 1 {
                    return Err(self.errorf(
                        pipe.pos,
                        pipe,
                        format!("can't use {n} to iterate over more than one variable"),
                    ));
                }
                for i in 0..*n {
                    ran = true;
                    if let Flow::Break =
                        self.one_iteration(pipe, list, mark, Value::Int(i), Value::Int(i))?
                    {
                        break;
                    }
                }
            }
            Value::Nil => {}
            other => {
                return Err(self.errorf(
                    pipe.pos,
                    pipe,
                    format!("range can't iterate over {}", gofmt::value_v(other)),
                ));
            }
        }
        if !ran && let Some(el) = else_list {
            self.walk_list(dot, el)?;
        }
        Ok(())
    }

    fn set_var(&mut self, pos: usize, name: &str, v: Value) -> R<()> {
        for slot in self.vars.iter_mut().rev() {
            if slot.0 == name {
                slot.1 = v;
                return Ok(());
            }
        }
        Err(self.errorf(pos, &name, format!("undefined variable: {name}")))
    }

    fn var_value(&self, pos: usize, name: &str) -> R<Value> {
        for slot in self.vars.iter().rev() {
            if slot.0 == name {
                return Ok(slot.1.clone());
            }
        }
        Err(self.errorf(pos, &name, format!("undefined variable: {name}")))
    }

    fn eval_pipeline(&mut self, dot: &Value, pipe: &Pipe) -> R<Value> {
        let mut value: Option<Value> = None;
        for cmd in &pipe.cmds {
            value = Some(self.eval_command(dot, cmd, value)?);
        }
        let value = value.unwrap_or(Value::Nil);
        for d in &pipe.decl {
            if pipe.is_assign {
                self.set_var(pipe.pos, d, value.clone())?;
            } else {
                self.vars.push((d.clone(), value.clone()));
            }
        }
        Ok(value)
    }

    fn not_a_function(&self, cmd: &Command, final_: &Option<Value>) -> R<()> {
        if cmd.args.len() > 1 || final_.is_some() {
            return Err(self.errorf(
                cmd.args[0].pos(),
                &cmd.args[0],
                format!("can't give argument to non-function {}", cmd.args[0]),
            ));
        }
        Ok(())
    }

    fn eval_command(&mut self, dot: &Value, cmd: &Command, final_: Option<Value>) -> R<Value> {
        let first = &cmd.args[0];
        match first {
            Arg::Field { pos, idents } => {
                let has_args = cmd.args.len() > 1 || final_.is_some();
                self.eval_field_chain(*pos, first, dot.clone(), idents, has_args)
            }
            Arg::Chain { pos, node, fields } => {
                let has_args = cmd.args.len() > 1 || final_.is_some();
                if matches!(**node, Arg::Nil { .. }) {
                    return Err(self.errorf(
                        *pos,
                        first,
                        format!("indirection through explicit nil in {first}"),
                    ));
                }
                let recv = self.eval_arg(dot, node)?;
                self.eval_field_chain(*pos, first, recv, fields, has_args)
            }
            Arg::Ident { pos, name } => self.eval_function(dot, *pos, name, cmd, final_),
            Arg::Pipe { pipe, .. } => {
                self.not_a_function(cmd, &final_)?;
                self.nested(|s| s.eval_pipeline(dot, pipe))
            }
            Arg::Variable { pos, name, fields } => {
                let v = self.var_value(*pos, name)?;
                if fields.is_empty() {
                    self.not_a_function(cmd, &final_)?;
                    return Ok(v);
                }
                let has_args = cmd.args.len() > 1 || final_.is_some();
                self.eval_field_chain(*pos, first, v, fields, has_args)
            }
            _ => {
                self.not_a_function(cmd, &final_)?;
                match first {
                    Arg::Bool { val, .. } => Ok(Value::Bool(*val)),
                    Arg::Dot { .. } => Ok(dot.clone()),
                    Arg::Nil { pos } => Err(self.errorf(*pos, first, "nil is not a command")),
                    Arg::Number { val, .. } => Ok(num_value(val)),
                    Arg::Str { val, .. } => Ok(Value::str(val.as_str())),
                    _ => Ok(Value::Nil),
                }
            }
        }
    }

    fn eval_field_chain(
        &self,
        pos: usize,
        node: &Arg,
        mut recv: Value,
        idents: &[String],
        has_args: bool,
    ) -> R<Value> {
        let n = idents.len();
        for (i, name) in idents.iter().enumerate() {
            recv = self.eval_field(pos, node, name, recv, has_args && i == n - 1)?;
        }
        Ok(recv)
    }

    fn eval_field(
        &self,
        pos: usize,
        node: &Arg,
        name: &str,
        recv: Value,
        has_args: bool,
    ) -> R<Value> {
        match &recv {
            Value::Map(m) => {
                if has_args {
                    return Err(self.errorf(
                        pos,
                        node,
                        format!("{name} is not a method but has arguments"),
                    ));
                }
                match m.borrow().get(name) {
                    Some(v) => Ok(v.clone()),
                    None => Err(self.errorf(
                        pos,
                        node,
                        format!("map has no entry for key {}", gofmt::quote(name)),
                    )),
                }
            }
            Value::Nil => Err(self.errorf(
                pos,
                node,
                format!("nil pointer evaluating interface {{}}.{name}"),
            )),
            other => Err(self.errorf(
                pos,
                node,
                format!("can't evaluate field {name} in type {}", other.type_name()),
            )),
        }
    }

    /// Evaluates one argument node to a value (Go's evalArg for an interface{} parameter).
    fn eval_arg(&mut self, dot: &Value, arg: &Arg) -> R<Value> {
        match arg {
            Arg::Dot { .. } => Ok(dot.clone()),
            Arg::Nil { .. } => Ok(Value::Nil),
            Arg::Field { pos, idents } => {
                self.eval_field_chain(*pos, arg, dot.clone(), idents, false)
            }
            Arg::Variable { pos, name, fields } => {
                let v = self.var_value(*pos, name)?;
                self.eval_field_chain(*pos, arg, v, fields, false)
            }
            Arg::Pipe { pipe, .. } => self.nested(|s| s.eval_pipeline(dot, pipe)),
            Arg::Ident { pos, name } => {
                let cmd = Command {
                    pos: *pos,
                    args: vec![arg.clone()],
                };
                self.eval_function(dot, *pos, name, &cmd, None)
            }
            Arg::Chain { pos, node, fields } => {
                if matches!(**node, Arg::Nil { .. }) {
                    return Err(self.errorf(
                        *pos,
                        arg,
                        format!("indirection through explicit nil in {arg}"),
                    ));
                }
                let recv = self.eval_arg(dot, node)?;
                self.eval_field_chain(*pos, arg, recv, fields, false)
            }
            Arg::Bool { val, .. } => Ok(Value::Bool(*val)),
            Arg::Number { val, .. } => Ok(num_value(val)),
            Arg::Str { val, .. } => Ok(Value::str(val.as_str())),
        }
    }

    fn eval_function(
        &mut self,
        dot: &Value,
        pos: usize,
        name: &str,
        cmd: &Command,
        final_: Option<Value>,
    ) -> R<Value> {
        let Some(def) = funcs::lookup(name) else {
            return Err(self.errorf(
                pos,
                &name,
                format!("{} is not a defined function", gofmt::quote(name)),
            ));
        };
        let args = &cmd.args[1..];
        let nargs = args.len() + usize::from(final_.is_some());
        let arity_ok = nargs >= def.min && def.max.is_none_or(|m| nargs <= m);
        if !arity_ok {
            let want = match def.max {
                Some(m) if m == def.min => format!("want {m}"),
                None => format!("want at least {}", def.min),
                Some(m) => format!("want {}-{m}", def.min),
            };
            return Err(self.errorf(
                pos,
                &name,
                format!("wrong number of args for {name}: {want} got {nargs}"),
            ));
        }
        // and/or evaluate lazily and return an argument value.
        if name == "and" || name == "or" {
            let mut last = Value::Nil;
            let total = nargs;
            for i in 0..total {
                let v = if i < args.len() {
                    self.eval_arg(dot, &args[i])?
                } else {
                    final_.clone().unwrap_or(Value::Nil)
                };
                let t = v.truthy();
                last = v;
                if (name == "and" && !t) || (name == "or" && t) {
                    return Ok(last);
                }
            }
            return Ok(last);
        }
        let mut vals = Vec::with_capacity(nargs);
        for a in args {
            vals.push(self.eval_arg(dot, a)?);
        }
        if let Some(f) = final_ {
            vals.push(f);
        }
        budget::tick().map_err(|o| self.over(o))?;
        let r = (def.f)(&vals);
        if let Some(o) = budget::overrun() {
            return Err(self.over(o));
        }
        match r {
            Ok(v) => {
                self.check_value(&v)?;
                Ok(v)
            }
            Err(FnErr::Budget(o)) => Err(self.over(o)),
            Err(FnErr::Msg(m)) => {
                Err(self.errorf(cmd.pos, cmd, format!("error calling {name}: {m}")))
            }
            Err(FnErr::Type { idx, expected }) => {
                let got = vals.get(idx).map(|v| v.type_name()).unwrap_or("<nil>");
                let (p, ctx): (usize, String) = match args.get(idx) {
                    Some(a) => (a.pos(), a.to_string()),
                    None => (cmd.pos, cmd.to_string()),
                };
                let msg = if matches!(vals.get(idx), Some(Value::Nil)) {
                    format!("invalid value; expected {expected}")
                } else {
                    format!("wrong type for value; expected {expected}; got {got}")
                };
                Err(self.errorf(p, &ctx, msg))
            }
        }
    }
}

fn num_value(n: &Num) -> Value {
    match n {
        Num::Int(i) => Value::Int(*i),
        Num::Float(f) => Value::Float(*f),
    }
}
