//! KUDO's repository index (`index.yaml`): which versions of which packages a repository
//! holds, where their .tgz files are and their sha256 digests. Pure: parsing, building from
//! packages, merging and resolving a request to one version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::RepoError;
use crate::package::OperatorFile;

/// The index file name below a repository URL.
pub const INDEX_FILE: &str = "index.yaml";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    #[serde(default)]
    pub api_version: String,
    /// Package name → its versions.
    #[serde(default)]
    pub entries: BTreeMap<String, Vec<PackageVersion>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated: Option<String>,
}

/// One package version in an index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageVersion {
    pub name: String,
    pub operator_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app_version: String,
    #[serde(default)]
    pub urls: Vec<String>,
    /// Lower-case hex sha256 of the .tgz.
    #[serde(default)]
    pub digest: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kudo_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintainers: Vec<crate::api::Maintainer>,
}

impl PackageVersion {
    /// `operatorVersion` (with `appVersion` when set), as versions are listed to people.
    pub fn label(&self) -> String {
        if self.app_version.is_empty() {
            self.operator_version.clone()
        } else {
            format!("{} (app {})", self.operator_version, self.app_version)
        }
    }

    /// The index entry of a package file.
    pub fn of(op: &OperatorFile, digest: &str, url: String) -> PackageVersion {
        PackageVersion {
            name: op.name.clone(),
            operator_version: op.operator_version.clone(),
            app_version: op.app_version.clone(),
            urls: vec![url],
            digest: digest.to_string(),
            description: op.description.clone(),
            kudo_version: op.kudo_version.clone(),
            maintainers: op.maintainers.clone(),
        }
    }
}

impl Index {
    pub fn new() -> Index {
        Index {
            api_version: "v1".into(),
            ..Default::default()
        }
    }

    /// Parses an index; errors name `url` (where it came from) and the line.
    pub fn parse(url: &str, text: &str) -> Result<Index, RepoError> {
        let index: Index = serde_saphyr::from_str(text).map_err(|e| RepoError::BadIndex {
            url: url.to_string(),
            reason: e.without_snippet().to_string(),
        })?;
        if index.api_version != "v1" {
            return Err(RepoError::BadIndex {
                url: url.to_string(),
                reason: format!(
                    "apiVersion is {:?}, only \"v1\" is supported",
                    index.api_version
                ),
            });
        }
        // Names, versions and digests end up in messages, lookups and cache file names:
        // anything that is not plainly what it claims to be refuses the whole index.
        let bad = |reason: String| RepoError::BadIndex {
            url: url.to_string(),
            reason,
        };
        for (name, versions) in &index.entries {
            if !super::is_safe_segment(name) {
                return Err(bad(format!(
                    "package name {name:?} is not a plain name (no '/', '..' or control characters)"
                )));
            }
            for v in versions {
                let at = format!("entry {name} {:?}", v.operator_version);
                if v.name != *name || v.urls.is_empty() {
                    return Err(bad(format!(
                        "{at}: needs name {name:?} and at least one url"
                    )));
                }
                if !super::is_safe_segment(&v.operator_version)
                    || (!v.app_version.is_empty() && !super::is_safe_segment(&v.app_version))
                {
                    return Err(bad(format!(
                        "{at}: operatorVersion and appVersion must be plain versions (no '/', '..' or control characters)"
                    )));
                }
                if !super::is_sha256_hex(&v.digest) {
                    return Err(bad(format!(
                        "{at}: digest {:?} is not a sha256 digest (exactly 64 lower-case hex digits)",
                        v.digest
                    )));
                }
            }
        }
        Ok(index)
    }

    pub fn to_yaml(&self) -> String {
        // Serialising plain data into a String cannot fail.
        serde_saphyr::to_string(self).unwrap_or_default()
    }

    /// Adds or replaces the entry with the same name and operator/app version; entries stay
    /// sorted newest first.
    pub fn upsert(&mut self, v: PackageVersion) {
        let list = self.entries.entry(v.name.clone()).or_default();
        list.retain(|e| {
            !(e.operator_version == v.operator_version && e.app_version == v.app_version)
        });
        list.push(v);
        list.sort_by(|a, b| version_order(b, a));
    }

    /// Every entry of `other` not present here (by name, operator and app version) is added:
    /// the existing index wins, as `helm repo index --merge` does.
    pub fn merge_from(&mut self, other: Index) {
        for (_, versions) in other.entries {
            for v in versions {
                let present = self.entries.get(&v.name).is_some_and(|l| {
                    l.iter().any(|e| {
                        e.operator_version == v.operator_version && e.app_version == v.app_version
                    })
                });
                if !present {
                    self.upsert(v);
                }
            }
        }
    }

    /// The newest version of `name` matching the requested operator and app versions. Each
    /// request is an exact version or a semver requirement (`^1.2`, `>=1.0, <2`). A
    /// pre-release is chosen only when no stable version matches.
    pub fn resolve(
        &self,
        repo: &str,
        name: &str,
        operator_version: Option<&str>,
        app_version: Option<&str>,
    ) -> Result<&PackageVersion, RepoError> {
        let Some(versions) = self.entries.get(name) else {
            return Err(RepoError::UnknownPackage {
                repo: repo.to_string(),
                name: name.to_string(),
                available: self.entries.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        };
        let matching = versions
            .iter()
            .filter(|v| operator_version.is_none_or(|want| matches(&v.operator_version, want)))
            .filter(|v| app_version.is_none_or(|want| matches(&v.app_version, want)));
        // Pre-releases only when nothing stable matches (or when asked for exactly).
        let (stable, pre): (Vec<&PackageVersion>, Vec<&PackageVersion>) =
            matching.partition(|v| !is_prerelease(&v.operator_version));
        let pool = if stable.is_empty() { pre } else { stable };
        pool.into_iter()
            .max_by(|a, b| version_order(a, b))
            .ok_or_else(|| {
                let mut sorted: Vec<&PackageVersion> = versions.iter().collect();
                sorted.sort_by(|a, b| version_order(b, a));
                RepoError::UnknownVersion {
                    repo: repo.to_string(),
                    name: name.to_string(),
                    wanted: [
                        operator_version.map(|v| format!("operator version {v}")),
                        app_version.map(|v| format!("app version {v}")),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", "),
                    available: sorted
                        .iter()
                        .map(|v| v.label())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })
    }
}

/// A version read leniently: `1.2` is `1.2.0`, a leading `v` is dropped.
pub fn lenient_version(s: &str) -> Option<semver::Version> {
    let t = s.trim().trim_start_matches('v');
    if let Ok(v) = semver::Version::parse(t) {
        return Some(v);
    }
    let (core, rest) = match t.find(['-', '+']) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let dots = core.matches('.').count();
    let padded = match dots {
        0 => format!("{core}.0.0{rest}"),
        1 => format!("{core}.0{rest}"),
        _ => return None,
    };
    semver::Version::parse(&padded).ok()
}

fn is_prerelease(v: &str) -> bool {
    lenient_version(v).is_some_and(|v| !v.pre.is_empty())
}

fn matches(have: &str, want: &str) -> bool {
    if have == want {
        return true;
    }
    let Some(v) = lenient_version(have) else {
        return false;
    };
    if let Some(w) = lenient_version(want) {
        return v == w;
    }
    semver::VersionReq::parse(want).is_ok_and(|req| req.matches(&v))
}

/// Semver order of operator version, then app version; unparsable versions sort first, by text.
fn version_order(a: &PackageVersion, b: &PackageVersion) -> std::cmp::Ordering {
    let key = |s: &str| (lenient_version(s), s.to_string());
    key(&a.operator_version)
        .cmp(&key(&b.operator_version))
        .then_with(|| key(&a.app_version).cmp(&key(&b.app_version)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(name: &str, ov: &str, av: &str) -> PackageVersion {
        PackageVersion {
            name: name.into(),
            operator_version: ov.into(),
            app_version: av.into(),
            urls: vec![format!("{name}-{ov}.tgz")],
            digest: "a".repeat(64),
            ..Default::default()
        }
    }

    fn index() -> Index {
        let mut i = Index::new();
        for (ov, av) in [
            ("1.2.0", "2.4.0"),
            ("1.10.0", "2.5.1"),
            ("1.3.0", "2.5.0"),
            ("2.0.0-rc1", "3.0"),
        ] {
            i.upsert(pv("kafka", ov, av));
        }
        i
    }

    #[test]
    fn resolves_the_newest_match_by_semver_not_text() {
        let i = index();
        assert_eq!(
            i.resolve("r", "kafka", None, None)
                .expect("newest")
                .operator_version,
            "1.10.0"
        );
        assert_eq!(
            i.resolve("r", "kafka", Some("~1.2"), None)
                .expect("req")
                .operator_version,
            "1.2.0"
        );
        assert_eq!(
            i.resolve("r", "kafka", None, Some("2.5.0"))
                .expect("app")
                .operator_version,
            "1.3.0"
        );
        assert_eq!(
            i.resolve("r", "kafka", Some("2.0.0-rc1"), None)
                .expect("exact pre-release")
                .app_version,
            "3.0"
        );
    }

    #[test]
    fn unknown_package_or_version_lists_what_exists() {
        let i = index();
        let e = i.resolve("community", "kafak", None, None).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("kafak") && m.contains("community") && m.contains("kafka"),
            "{m}"
        );
        let e = i
            .resolve("community", "kafka", Some("9.9.9"), None)
            .unwrap_err();
        let m = e.to_string();
        assert!(m.contains("9.9.9"), "{m}");
        assert!(
            m.contains(
                "2.0.0-rc1 (app 3.0), 1.10.0 (app 2.5.1), 1.3.0 (app 2.5.0), 1.2.0 (app 2.4.0)"
            ),
            "{m}"
        );
    }

    #[test]
    fn an_index_that_does_not_parse_names_the_url() {
        let url = "http://127.0.0.1:1/repo/index.yaml";
        let m = Index::parse(url, "apiVersion: v1\nentries: [oops\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains(url), "{m}");
        let m = Index::parse(url, "apiVersion: v2\nentries: {}\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains(url) && m.contains("v2"), "{m}");
        let m = Index::parse(
            url,
            "apiVersion: v1\nentries:\n  kafka:\n  - name: kafka\n    operatorVersion: 1.0.0\n    urls: [x.tgz]\n    digest: abc\n",
        )
        .unwrap_err()
        .to_string();
        assert!(m.contains(url) && m.contains("digest"), "{m}");
    }

    #[test]
    fn digest_that_is_a_path_is_refused_at_parse_time() {
        let url = "http://127.0.0.1:1/repo/index.yaml";
        let entry = |name: &str, version: &str, digest: &str| {
            format!(
                "apiVersion: v1\nentries:\n  '{name}':\n  - name: '{name}'\n    operatorVersion: '{version}'\n    urls: [x.tgz]\n    digest: '{digest}'\n"
            )
        };
        let good = "0123456789abcdef".repeat(4);
        Index::parse(url, &entry("kafka", "1.0.0", &good)).expect("valid");
        let path = format!("{}../../../victim", "./".repeat(24));
        for (name, version, digest) in [
            ("kafka", "1.0.0", path.as_str()),
            ("kafka", "1.0.0", &good.to_uppercase()),
            ("kafka", "1.0.0", &format!("{}g", &good[1..])),
            ("../kafka", "1.0.0", &good),
            ("kafka", "../../1.0.0", &good),
            ("kafka", "..", &good),
        ] {
            let m = Index::parse(url, &entry(name, version, digest))
                .unwrap_err()
                .to_string();
            assert!(m.contains(url), "{m}");
        }
        let m = Index::parse(url, &entry("kafka", "1.0.0", &path))
            .unwrap_err()
            .to_string();
        assert!(m.contains("64 lower-case hex"), "{m}");
    }

    #[test]
    fn round_trips_and_merges_keeping_existing_entries() {
        let i = index();
        let back = Index::parse("mem", &i.to_yaml()).expect("parse back");
        assert_eq!(back, i);
        let mut other = Index::new();
        let mut changed = pv("kafka", "1.2.0", "2.4.0");
        changed.digest = "b".repeat(64);
        other.upsert(changed);
        other.upsert(pv("zookeeper", "0.3.0", ""));
        let mut merged = i.clone();
        merged.merge_from(other);
        assert_eq!(merged.entries["kafka"].len(), 4);
        let kept = merged.entries["kafka"]
            .iter()
            .find(|v| v.operator_version == "1.2.0")
            .expect("1.2.0");
        assert_eq!(kept.digest, "a".repeat(64));
        assert_eq!(merged.entries["zookeeper"].len(), 1);
    }
}
