//! Framework packages: loading `operator.yaml`, `params.yaml` and `templates/**` from any
//! file tree, converting them to `Operator` + `OperatorVersion` as KUDO does, resolving and
//! validating parameter values, and rendering a task's resources.

mod convert;
mod crd;
pub mod dependencies;
mod files;
mod params;
pub mod redact;
mod render;
mod tree;
mod verify;

use std::collections::BTreeMap;

/// Where a kudo Git repository keeps framework packages (`frameworks/NAME/VERSION/`).
pub const FRAMEWORKS_DIR: &str = "frameworks/";
/// Where a kudo Git repository keeps instance documents.
pub const INSTANCES_DIR: &str = "instances/";

pub use convert::{go_value_string, operator_version_name, wrap_param_value};
pub use crd::{CRD_ANNOTATION, CrdConfig};
pub use files::{Group, OperatorFile, PackageParameter, ParamsFile};
pub use params::{
    ParamError, ParamErrors, RenderContext, context_value, params_value, resolve_parameters,
};
pub use render::{
    RenderError, RenderedObject, TemplateOutcome, parse_documents, plan_tasks, render_plan,
    render_task, render_templates, split_documents,
};
pub use tree::{DirTree, FileTree, MemTree, TreeLimits, open};
pub use verify::{VerifyReport, param_references, verify};

/// The files KUDO looks for at a package root.
pub const OPERATOR_FILE: &str = "operator.yaml";
pub const PARAMS_FILE: &str = "params.yaml";
pub const TEMPLATES_DIR: &str = "templates/";

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a package directory")]
    NotADirectory { path: String },
    #[error("{archive}: not a readable .tgz package: {message}")]
    Archive { archive: String, message: String },
    #[error("{archive}: entry {entry:?} escapes the package root; the package is refused")]
    EscapingEntry { archive: String, entry: String },
    #[error("{package}: refused, {what}")]
    TooLarge { package: String, what: String },
    #[error(
        "{package}: symlink {link} points outside the tree (to {target}); nothing outside the root is read"
    )]
    EscapingLink {
        package: String,
        link: String,
        target: String,
    },
    #[error("{package}: symlink {link} makes a cycle (it leads back to a folder containing it)")]
    LinkCycle { package: String, link: String },
    #[error("{package}: no file {file}")]
    MissingFile { package: String, file: String },
    #[error("{package}: not a KUDO package: operator.yaml is missing at the package root")]
    NoOperatorFile { package: String },
    #[error("{package}: params.yaml is missing at the package root")]
    NoParamsFile { package: String },
    #[error("{package}: {file} is not valid UTF-8")]
    NotUtf8 { package: String, file: String },
    #[error("{package}: {file}:{line}:{column}: {message}")]
    Yaml {
        package: String,
        file: String,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{package}: {file}: {message}")]
    Invalid {
        package: String,
        file: String,
        message: String,
    },
}

/// A package as read from its files, before conversion.
#[derive(Debug, Clone, PartialEq)]
pub struct Package {
    /// Where it was read from, for messages.
    pub source: String,
    pub operator: OperatorFile,
    pub params: ParamsFile,
    /// Path below `templates/` to the template text.
    pub templates: BTreeMap<String, String>,
}

/// The cluster objects a package becomes.
#[derive(Debug, Clone)]
pub struct Resources {
    pub operator: crate::api::Operator,
    pub operator_version: crate::api::OperatorVersion,
}

impl Package {
    /// Reads a package from any file tree. Files other than operator.yaml, params.yaml and
    /// templates/** (READMEs, tests beside the package) are ignored.
    pub fn load(tree: &dyn FileTree) -> Result<Package, PackageError> {
        let source = tree.describe();
        let paths = tree.paths()?;
        if !paths.iter().any(|p| p == OPERATOR_FILE) {
            return Err(PackageError::NoOperatorFile { package: source });
        }
        if !paths.iter().any(|p| p == PARAMS_FILE) {
            return Err(PackageError::NoParamsFile { package: source });
        }
        let text = |path: &str| -> Result<String, PackageError> {
            String::from_utf8(tree.read(path)?).map_err(|_| PackageError::NotUtf8 {
                package: source.clone(),
                file: path.to_string(),
            })
        };
        let operator: OperatorFile = parse_yaml(&source, OPERATOR_FILE, &text(OPERATOR_FILE)?)?;
        check_api_version(&source, OPERATOR_FILE, &operator.api_version)?;
        let params: ParamsFile = parse_yaml(&source, PARAMS_FILE, &text(PARAMS_FILE)?)?;
        check_api_version(&source, PARAMS_FILE, &params.api_version)?;
        let mut templates = BTreeMap::new();
        for path in &paths {
            if let Some(key) = path.strip_prefix(TEMPLATES_DIR) {
                templates.insert(key.to_string(), text(path)?);
            }
        }
        Ok(Package {
            source,
            operator,
            params,
            templates,
        })
    }

    /// Loads a directory or `.tgz` package from disk.
    pub fn load_path(path: &std::path::Path) -> Result<Package, PackageError> {
        Package::load(open(path)?.as_ref())
    }

    /// The Operator and OperatorVersion objects, as `kubectl kudo install` creates them.
    pub fn to_resources(&self) -> Result<Resources, PackageError> {
        convert::to_resources(self)
    }
}

/// Parses one package file, keeping the line and column of syntax and type errors.
fn parse_yaml<T: serde::de::DeserializeOwned>(
    package: &str,
    file: &str,
    text: &str,
) -> Result<T, PackageError> {
    let typed_err = match serde_saphyr::from_str(text) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    // Go's decoder reads `key:` (null) as the field's zero value anywhere in the tree (e.g.
    // `resources:` of a task with none); retry without nulls before reporting the error.
    let Ok(mut value) = serde_saphyr::from_str::<serde_json::Value>(text) else {
        return Err(yaml_error(package, file, &typed_err));
    };
    drop_nulls(&mut value);
    serde_json::from_value(value).map_err(|_| yaml_error(package, file, &typed_err))
}

fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

pub(crate) fn yaml_error(package: &str, file: &str, e: &serde_saphyr::Error) -> PackageError {
    match e.location() {
        Some(loc) => PackageError::Yaml {
            package: package.to_string(),
            file: file.to_string(),
            line: loc.line(),
            column: loc.column(),
            message: yaml_message(e),
        },
        None => PackageError::Invalid {
            package: package.to_string(),
            file: file.to_string(),
            message: yaml_message(e),
        },
    }
}

/// [`yaml_message`] for other modules reading YAML (the gitops instance documents).
pub fn yaml_message_public(e: &serde_saphyr::Error) -> String {
    yaml_message(e)
}

/// serde-saphyr's message without its source snippet and its own `line N column M: `
/// prefix, for messages that place the location themselves.
pub(crate) fn yaml_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let rest = text
        .strip_prefix("line ")
        .and_then(|r| r.split_once(": "))
        .filter(|(loc, _)| loc.contains(" column "))
        .map(|(_, msg)| msg.to_string());
    rest.unwrap_or(text)
}

fn check_api_version(package: &str, file: &str, api_version: &str) -> Result<(), PackageError> {
    if api_version.is_empty() || api_version == crate::api::API_VERSION {
        return Ok(());
    }
    Err(PackageError::Invalid {
        package: package.to_string(),
        file: file.to_string(),
        message: format!(
            "apiVersion is {api_version:?}, only {} is supported",
            crate::api::API_VERSION
        ),
    })
}

#[cfg(test)]
mod tests;
