//! `kudo repo`: the package repositories `kudo install NAME` resolves from, and building an
//! index for a folder of packages to serve as a repository.
//!
//! The list lives in `repositories.yaml` of the kudo home (`$KUDO_HOME`, else
//! `$XDG_CONFIG_HOME/kudo`, else `~/.config/kudo`); fetched indexes and packages are cached
//! below `cache/` there.

use std::path::{Path, PathBuf};

use super::{CliError, CliResult};
use crate::repo::{
    HttpOptions, INDEX_FILE, Index, RepoClient, RepoEntry, RepoError, RepoList, build_index,
    kudo_home,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: RepoCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum RepoCommand {
    /// Adds a repository (its index, `<URL>/index.yaml`, is fetched to check it).
    Add {
        name: String,
        /// Base URL of the repository.
        url: String,
        /// PEM file of extra CAs to trust for it (the system roots are always trusted).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        #[command(flatten)]
        home: Home,
    },
    /// Lists the repositories.
    List {
        #[command(flatten)]
        home: Home,
    },
    /// Removes a repository.
    Remove {
        name: String,
        #[command(flatten)]
        home: Home,
    },
    /// Writes `DIR/index.yaml` for the .tgz packages in DIR (see `kudo package create`).
    Index {
        dir: PathBuf,
        /// Base URL the packages will be served from; default: URLs relative to the index.
        #[arg(long)]
        url: Option<String>,
        /// Keep the entries of an existing DIR/index.yaml (they win over rebuilt ones).
        #[arg(long)]
        merge: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct Home {
    /// The kudo home holding repositories.yaml and the download cache.
    #[arg(long = "home", env = "KUDO_HOME", value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl Home {
    pub fn path(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(kudo_home)
    }
}

pub async fn run(args: Args) -> CliResult {
    match args.command {
        RepoCommand::Add {
            name,
            url,
            ca_file,
            home,
        } => {
            let home = home.path();
            let mut list = RepoList::load(&home)?;
            let entry = RepoEntry {
                name: name.clone(),
                url: url.trim_end_matches('/').to_string(),
                ca_file: ca_file.map(|p| std::path::absolute(&p).unwrap_or(p)),
            };
            list.add(entry.clone())?;
            let client = RepoClient::new(&entry, &home.join("cache"), HttpOptions::default())?;
            let index = client.index().await?;
            list.save(&home)?;
            println!(
                "repository {name} added ({} package(s), {} version(s))",
                index.entries.len(),
                index.entries.values().map(Vec::len).sum::<usize>()
            );
            Ok(())
        }
        RepoCommand::List { home } => {
            let list = RepoList::load(&home.path())?;
            if list.repositories.is_empty() {
                println!("no repositories; add one with `kudo repo add NAME URL`");
            }
            for r in &list.repositories {
                println!("{}\t{}", r.name, r.url);
            }
            Ok(())
        }
        RepoCommand::Remove { name, home } => {
            let home = home.path();
            let mut list = RepoList::load(&home)?;
            list.remove(&name)?;
            list.save(&home)?;
            let _ = std::fs::remove_dir_all(home.join("cache").join("index").join(&name));
            println!("repository {name} removed");
            Ok(())
        }
        RepoCommand::Index { dir, url, merge } => {
            let index = index_dir(&dir, url.as_deref(), merge)?;
            let path = dir.join(INDEX_FILE);
            std::fs::write(&path, index.to_yaml()).map_err(|e| RepoError::file(&path, e))?;
            println!(
                "{}: {} package(s), {} version(s)",
                path.display(),
                index.entries.len(),
                index.entries.values().map(Vec::len).sum::<usize>()
            );
            Ok(())
        }
    }
}

/// The index for DIR, merged into the existing one when asked.
pub fn index_dir(dir: &Path, url: Option<&str>, merge: bool) -> Result<Index, RepoError> {
    let built = build_index(dir, url)?;
    if !merge {
        return Ok(built);
    }
    let path = dir.join(INDEX_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut existing = Index::parse(&path.display().to_string(), &text)?;
            existing.merge_from(built);
            Ok(existing)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(built),
        Err(e) => Err(RepoError::file(&path, e)),
    }
}

/// What `kudo install` was asked for, when it names a package in a repository.
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    pub repo: Option<String>,
    pub operator_version: Option<String>,
    pub app_version: Option<String>,
}

/// The local file of the package `name`: downloaded from the named repository (or the first
/// configured one that has it), verified against the index digest.
pub async fn fetch_package(home: &Path, name: &str, wanted: &Wanted) -> Result<PathBuf, CliError> {
    let list = RepoList::load(home)?;
    let repos: Vec<&RepoEntry> = match &wanted.repo {
        Some(r) => vec![list.get(r)?],
        None if list.repositories.is_empty() => {
            return Err(format!(
                "{name}: no such file or folder, and no package repository is configured \
                 (kudo home {}); add one with `kudo repo add NAME URL`",
                home.display()
            )
            .into());
        }
        None => list.repositories.iter().collect(),
    };
    let mut first_err: Option<RepoError> = None;
    for repo in repos {
        let client = RepoClient::new(repo, &home.join("cache"), HttpOptions::default())?;
        let index = client.index().await?;
        match index.resolve(
            &repo.name,
            name,
            wanted.operator_version.as_deref(),
            wanted.app_version.as_deref(),
        ) {
            Ok(pv) => {
                eprintln!(
                    "{name}: operator version {} from repository {} (sha256 {})",
                    pv.label(),
                    repo.name,
                    pv.digest
                );
                return Ok(client.download(pv).await?);
            }
            // A package found with no matching version is the answer to report.
            Err(e @ RepoError::UnknownVersion { .. }) => return Err(Box::new(e)),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(Box::new(first_err.unwrap_or(RepoError::UnknownRepo {
        name: wanted.repo.clone().unwrap_or_default(),
        known: list.names(),
    })))
}
