//! The local list of package repositories, `repositories.yaml` in the kudo home.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RepoError;

/// `$KUDO_HOME`, else `$XDG_CONFIG_HOME/kudo`, else `~/.config/kudo`.
pub fn kudo_home() -> PathBuf {
    if let Some(h) = std::env::var_os("KUDO_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(x).join("kudo");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".config").join("kudo")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepoEntry {
    pub name: String,
    /// Base URL; the index is `<url>/index.yaml`.
    pub url: String,
    /// PEM file of extra CAs trusted for this repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl RepoEntry {
    /// The index URL.
    pub fn index_url(&self) -> String {
        format!("{}/{}", self.url.trim_end_matches('/'), super::INDEX_FILE)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoList {
    #[serde(default)]
    pub repositories: Vec<RepoEntry>,
}

impl RepoList {
    pub fn path(home: &Path) -> PathBuf {
        home.join("repositories.yaml")
    }

    /// Reads the list; a missing file is an empty list.
    pub fn load(home: &Path) -> Result<RepoList, RepoError> {
        let path = RepoList::path(home);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_saphyr::from_str(&text)
                .map_err(|e| RepoError::file(&path, e.without_snippet())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RepoList::default()),
            Err(e) => Err(RepoError::file(&path, e)),
        }
    }

    pub fn save(&self, home: &Path) -> Result<(), RepoError> {
        let path = RepoList::path(home);
        std::fs::create_dir_all(home).map_err(|e| RepoError::file(home, e))?;
        let text = serde_saphyr::to_string(self).map_err(|e| RepoError::file(&path, e))?;
        write_atomic(&path, text.as_bytes())
    }

    pub fn get(&self, name: &str) -> Result<&RepoEntry, RepoError> {
        self.repositories
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| RepoError::UnknownRepo {
                name: name.to_string(),
                known: self.names(),
            })
    }

    pub fn names(&self) -> String {
        if self.repositories.is_empty() {
            return "none".into();
        }
        self.repositories
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn add(&mut self, entry: RepoEntry) -> Result<(), RepoError> {
        if let Some(r) = self.repositories.iter().find(|r| r.name == entry.name) {
            return Err(RepoError::RepoExists {
                name: r.name.clone(),
                url: r.url.clone(),
            });
        }
        if !super::is_safe_segment(&entry.name) {
            return Err(RepoError::Unsafe {
                what: "repository name".into(),
                value: entry.name.clone(),
                reason: "it names a cache folder: no '/', '..' or control characters".into(),
            });
        }
        check_repo_url(&entry.name, &entry.url)?;
        self.repositories.push(entry);
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<RepoEntry, RepoError> {
        let i = self
            .repositories
            .iter()
            .position(|r| r.name == name)
            .ok_or_else(|| RepoError::UnknownRepo {
                name: name.to_string(),
                known: self.names(),
            })?;
        Ok(self.repositories.remove(i))
    }
}

/// A repository URL must be http(s) and hold no credentials (they would show in messages,
/// status and the saved list); the error never echoes a URL that holds them.
fn check_repo_url(name: &str, url: &str) -> Result<(), RepoError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| RepoError::BadUrl {
        // Shown as written unless it may hold credentials.
        url: if url.contains('@') {
            super::client::redact_url(url)
        } else {
            url.to_string()
        },
        reason: e.to_string(),
    })?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(RepoError::BadUrl {
            url: super::client::redact_url(url),
            reason: format!(
                "repository {name}: credentials in the URL are refused (they would show in logs and status)"
            ),
        });
    }
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(RepoError::BadUrl {
            url: super::client::redact_url(url),
            reason: format!("repository {name}: only http and https are supported"),
        });
    }
    Ok(())
}

/// The `packageRepositories:` list of `kudo.yaml` (same entries as `repositories.yaml`);
/// problems are named `packageRepositories[i].<field>`. A relative `caFile` is resolved
/// against `base` and must exist.
pub fn parse_config(
    value: Option<&serde_json::Value>,
    base: &Path,
) -> Result<Vec<RepoEntry>, Vec<String>> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let entries: Vec<RepoEntry> = serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        vec![format!(
            "packageRepositories{}: {}",
            at(&e.path().to_string()),
            e.inner()
        )]
    })?;
    let mut list = RepoList::default();
    let mut problems = Vec::new();
    for (i, mut e) in entries.into_iter().enumerate() {
        if let Some(ca) = &e.ca_file {
            let p = base.join(ca);
            if !p.is_file() {
                problems.push(format!(
                    "packageRepositories[{i}].caFile: file {} does not exist",
                    p.display()
                ));
            }
            e.ca_file = Some(p);
        }
        if let Err(err) = list.add(e) {
            problems.push(format!("packageRepositories[{i}]: {err}"));
        }
    }
    if problems.is_empty() {
        Ok(list.repositories)
    } else {
        Err(problems)
    }
}

fn at(path: &str) -> String {
    match path {
        "." => String::new(),
        p if p.starts_with('[') => p.to_string(),
        p => format!(".{p}"),
    }
}

/// Writes via a temporary file in the same folder, so readers never see half a file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RepoError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| RepoError::file(dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| RepoError::file(dir, e))?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(|e| RepoError::file(path, e))?;
    tmp.persist(path).map_err(|e| RepoError::file(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_remove_round_trip_through_the_file() {
        let home = tempfile::tempdir().expect("tmp");
        let mut list = RepoList::load(home.path()).expect("empty");
        assert!(list.repositories.is_empty());
        list.add(RepoEntry {
            name: "community".into(),
            url: "http://127.0.0.1:1/repo".into(),
            ca_file: None,
        })
        .expect("add");
        let dup = list
            .add(RepoEntry {
                name: "community".into(),
                url: "http://x".into(),
                ca_file: None,
            })
            .unwrap_err();
        assert!(dup.to_string().contains("community"), "{dup}");
        let bad = list
            .add(RepoEntry {
                name: "b".into(),
                url: "not a url".into(),
                ca_file: None,
            })
            .unwrap_err();
        assert!(bad.to_string().contains("not a url"), "{bad}");
        list.save(home.path()).expect("save");
        let back = RepoList::load(home.path()).expect("load");
        assert_eq!(back, list);
        assert_eq!(
            back.get("community").expect("get").index_url(),
            "http://127.0.0.1:1/repo/index.yaml"
        );
        let mut back = back;
        let e = back.remove("nope").unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("community"), "{e}");
        back.remove("community").expect("remove");
        assert!(back.repositories.is_empty());
    }

    #[test]
    fn repository_urls_with_credentials_and_path_names_are_refused() {
        let mut list = RepoList::default();
        for (name, url) in [
            ("community", "https://ghp_T0KEN@example.com/repo"),
            ("community", "https://bot:s3cret@example.com/repo"),
            ("community", "file:///srv/repo"),
            ("../../x", "https://example.com/repo"),
        ] {
            let e = list
                .add(RepoEntry {
                    name: name.into(),
                    url: url.into(),
                    ca_file: None,
                })
                .unwrap_err()
                .to_string();
            assert!(!e.contains("T0KEN") && !e.contains("s3cret"), "{e}");
            assert!(e.contains(name) || e.contains("community"), "{e}");
        }
        assert!(list.repositories.is_empty());
    }

    #[test]
    fn kudo_yaml_package_repositories_and_their_problems() {
        let text = "listen: 127.0.0.1:0\nrepositories:\n  - {name: r, url: /}\nclusters:\n  - {name: c, sim: {}}\npackageRepositories:\n  - {name: community, url: 'http://127.0.0.1:1/repo'}\nnotifications:\n  sinks:\n    - {name: w, webhook: {url: 'http://127.0.0.1:1/h'}}\n";
        let c =
            crate::gitops::config::Config::parse("kudo.yaml", text, Path::new("/")).expect("valid");
        assert_eq!(c.package_repositories[0].name, "community");
        assert_eq!(c.notifications.sinks[0].name, "w");
        let bad = text.replace("url: 'http://127.0.0.1:1/repo'", "urls: x");
        let e = crate::gitops::config::Config::parse("kudo.yaml", &bad, Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("packageRepositories[0]") && e.contains("urls"),
            "{e}"
        );
        let dup = text.replace(
            "packageRepositories:\n",
            "packageRepositories:\n  - {name: community, url: 'http://h/x', caFile: nope.pem}\n",
        );
        let e = crate::gitops::config::Config::parse("kudo.yaml", &dup, Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nope.pem") && e.contains("already exists"),
            "{e}"
        );
    }
}
