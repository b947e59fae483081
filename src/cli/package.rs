//! `kudo package`: checks and archives operator packages.

use std::path::PathBuf;

use super::CliResult;
use crate::package::{FileTree, Package, open, verify};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: PackageCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PackageCommand {
    /// Checks a package: plans referencing missing tasks, tasks referencing missing
    /// templates, templates that do not parse, parameters used but not declared or with
    /// invalid defaults (errors); parameters declared but unused (warnings). Parameter use
    /// is found by scanning template text for `.Params.NAME`.
    Verify {
        /// Package directory or .tgz file.
        package: PathBuf,
    },
    /// Writes a package directory as a .tgz (after verifying it).
    Create {
        /// Package directory.
        package: PathBuf,
        /// Output file, or a folder to write it in; default
        /// `<name>-<appVersion>_<operatorVersion>.tgz` (or `<name>-<operatorVersion>.tgz`) in
        /// the current directory.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PackageCommandError {
    #[error("{package}: {count} error(s):\n  {list}")]
    Invalid {
        package: String,
        count: usize,
        list: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

pub async fn run(args: Args) -> CliResult {
    match args.command {
        PackageCommand::Verify { package } => {
            let pkg = Package::load_path(&package)?;
            check(&pkg)?;
            println!("{}: package is valid", pkg.source);
            Ok(())
        }
        PackageCommand::Create { package, output } => {
            let pkg = Package::load_path(&package)?;
            check(&pkg)?;
            let op = &pkg.operator;
            let file_name = if op.app_version.is_empty() {
                format!("{}-{}.tgz", op.name, op.operator_version)
            } else {
                format!("{}-{}_{}.tgz", op.name, op.app_version, op.operator_version)
            };
            let output = match output {
                // An existing folder gets the default file name inside it.
                Some(dir) if dir.is_dir() => dir.join(file_name),
                Some(file) => file,
                None => PathBuf::from(file_name),
            };
            let tree = open(&package)?;
            let bytes = tgz(tree.as_ref())?;
            std::fs::write(&output, bytes).map_err(|source| PackageCommandError::Write {
                path: output.display().to_string(),
                source,
            })?;
            println!("{}", output.display());
            Ok(())
        }
    }
}

fn check(pkg: &Package) -> Result<(), PackageCommandError> {
    let report = verify(pkg);
    for w in &report.warnings {
        eprintln!("warning: {}: {w}", pkg.source);
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(PackageCommandError::Invalid {
            package: pkg.source.clone(),
            count: report.errors.len(),
            list: report.errors.join("\n  "),
        })
    }
}

/// The package files (operator.yaml, params.yaml, templates/**), sorted, with fixed
/// metadata so the same package always gives the same bytes.
fn tgz(tree: &dyn FileTree) -> Result<Vec<u8>, crate::cli::CliError> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    for path in tree.paths()? {
        let wanted = path == crate::package::OPERATOR_FILE
            || path == crate::package::PARAMS_FILE
            || path.starts_with(crate::package::TEMPLATES_DIR);
        if !wanted {
            continue;
        }
        let content = tree.read(&path)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, &path, content.as_slice())?;
    }
    Ok(builder.into_inner()?.finish()?)
}
