//! Go `text/template` + sprig + KUDO's `toYaml`, rendering byte-identical to KUDO's
//! Go renderer (`missingkey=error`; `env expandenv base dir clean ext isAbs` absent).

mod budget;
mod dates;
mod exec;
mod funcs;
pub mod gofmt;
mod lexer;
mod parse;
pub(crate) mod semver;
mod sprig;
pub mod value;
mod yaml;

#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod tests;

pub use budget::RenderBudget;
use std::collections::HashMap;

/// Why parsing or rendering failed; `Display` is Go's message format.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum TemplateError {
    #[error("template: {template}:{line}:{col}: {message}")]
    Parse {
        template: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("template: {template}:{line}:{col}: {message}")]
    Exec {
        template: String,
        line: usize,
        col: usize,
        message: String,
    },
    /// The execution ran into a limit of its [`RenderBudget`].
    #[error("template {template:?}: {overrun} (render budget)")]
    Budget {
        template: String,
        overrun: budget::Overrun,
    },
}

/// A parsed template file with the templates it defines.
#[derive(Debug)]
pub struct Template {
    name: String,
    text: String,
    root: Vec<parse::Node>,
    defines: HashMap<String, Vec<parse::Node>>,
}

impl Template {
    /// `name` is used in error messages (the template path below templates/).
    pub fn parse(name: &str, text: &str) -> Result<Template, TemplateError> {
        let perr = |pos: usize, message: String| {
            let (line, col) = line_col(text, pos);
            TemplateError::Parse {
                template: name.to_string(),
                line,
                col,
                message,
            }
        };
        let items = lexer::lex(text).map_err(|e| perr(e.pos, e.message))?;
        let parsed = parse::parse(items, &funcs::exists).map_err(|e| perr(e.pos, e.message))?;
        Ok(Template {
            name: name.to_string(),
            text: text.to_string(),
            root: parsed.root,
            defines: parsed.defines,
        })
    }

    pub fn render(&self, data: &serde_json::Value) -> Result<String, TemplateError> {
        self.render_with(data, &RenderBudget::default())
    }

    pub fn render_with(
        &self,
        data: &serde_json::Value,
        budget: &RenderBudget,
    ) -> Result<String, TemplateError> {
        exec::execute(self, data, budget)
    }

    /// A defined template (or the file itself, by its own name).
    fn lookup(&self, name: &str) -> Option<&[parse::Node]> {
        if let Some(d) = self.defines.get(name) {
            return Some(d);
        }
        (name == self.name).then_some(&self.root[..])
    }

    fn define_name<'a>(&'a self, name: &str) -> &'a str {
        self.defines
            .get_key_value(name)
            .map(|(k, _)| k.as_str())
            .unwrap_or(&self.name)
    }

    fn line_col(&self, pos: usize) -> (usize, usize) {
        line_col(&self.text, pos)
    }
}

/// Line (1-based) and byte column (0-based, as Go's ErrorContext) of a byte offset.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let before = &text.as_bytes()[..pos];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let col = match before.iter().rposition(|&b| b == b'\n') {
        Some(i) => pos - i - 1,
        None => pos,
    };
    (line, col)
}

/// Every function a template can call (Go builtins, sprig, `toYaml`), sorted; for
/// fuzzing and documentation.
pub fn function_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = funcs::FUNCS.keys().copied().collect();
    names.sort_unstable();
    names
}

/// Parses and renders in one go.
pub fn render(name: &str, text: &str, data: &serde_json::Value) -> Result<String, TemplateError> {
    Template::parse(name, text)?.render(data)
}

/// Go gopkg.in/yaml.v2 `Marshal` output for a value ("" if it cannot be marshalled).
pub fn to_yaml(v: &serde_json::Value) -> String {
    yaml::marshal(&value::Value::from_json(v)).unwrap_or_default()
}
