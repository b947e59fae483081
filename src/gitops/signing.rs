//! Signed commits: a repository may require every applied commit to carry an SSH signature
//! (`git commit -S` with `gpg.format=ssh`) by a key listed in an allowed-signers file, in the
//! format of git's `gpg.ssh.allowedSignersFile` (`<principals> [options] <key-type> <base64>`).
//! The sshsig check uses the `ssh-key` crate (Ed25519 keys). OpenPGP signatures are recognised
//! and refused with a message saying so: no OpenPGP verification is built in yet.
//!
//! A refused commit is never applied; the caller keeps the last good revision running.

use std::path::Path;

use ssh_key::{HashAlg, PublicKey, SshSig};

/// The namespace git signs commits in.
const GIT_NAMESPACE: &str = "git";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("allowed signers file {file}: {reason}")]
    SignersFile { file: String, reason: String },
    #[error(
        "commit {commit} (committer {committer}) is not signed; the repository requires commits signed by an allowed key"
    )]
    Unsigned { commit: String, committer: String },
    #[error(
        "commit {commit} (committer {committer}) is signed by {signer}, which is not an allowed signer"
    )]
    NotAllowed {
        commit: String,
        committer: String,
        signer: String,
    },
    #[error(
        "commit {commit} (committer {committer}): the signature by {signer} does not verify: {reason}"
    )]
    BadSignature {
        commit: String,
        committer: String,
        signer: String,
        reason: String,
    },
    #[error(
        "commit {commit} (committer {committer}) has an OpenPGP signature; only SSH signatures are verified (sign with gpg.format=ssh)"
    )]
    OpenPgp { commit: String, committer: String },
    #[error("commit {commit}: {reason}")]
    Git { commit: String, reason: String },
}

/// Keys allowed to sign, with the principal (usually an e-mail) each is listed under.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    keys: Vec<(String, PublicKey)>,
}

impl AllowedSigners {
    pub fn load(path: &Path) -> Result<AllowedSigners, SigningError> {
        let text = std::fs::read_to_string(path).map_err(|e| SigningError::SignersFile {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        AllowedSigners::parse(&path.display().to_string(), &text)
    }

    /// Parses git's allowed-signers format; a bad line is an error naming its number.
    pub fn parse(file: &str, text: &str) -> Result<AllowedSigners, SigningError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let bad = |reason: String| SigningError::SignersFile {
                file: file.to_string(),
                reason: format!("line {}: {reason}", n + 1),
            };
            // principals, optional options, then the key type and its base64.
            let Some(at) = fields.iter().position(|f| {
                f.starts_with("ssh-") || f.starts_with("ecdsa-") || f.starts_with("sk-")
            }) else {
                return Err(bad(
                    "no key (expected `<principals> <key-type> <base64>`)".into()
                ));
            };
            let (Some(kind), Some(data)) = (fields.get(at), fields.get(at + 1)) else {
                return Err(bad("key type without key data".into()));
            };
            if at == 0 {
                return Err(bad("no principal before the key".into()));
            }
            let key = PublicKey::from_openssh(&format!("{kind} {data}"))
                .map_err(|e| bad(format!("not a public key: {e}")))?;
            keys.push((fields[0].to_string(), key));
        }
        if keys.is_empty() {
            return Err(SigningError::SignersFile {
                file: file.to_string(),
                reason: "lists no key".into(),
            });
        }
        Ok(AllowedSigners { keys })
    }

    /// Pure: checks an armored signature over `signed` (the commit without its signature).
    /// Returns who signed (principal and key fingerprint).
    pub fn verify(
        &self,
        commit: &str,
        committer: &str,
        signature: &str,
        signed: &[u8],
    ) -> Result<String, SigningError> {
        if signature.contains("-----BEGIN PGP SIGNATURE-----") {
            return Err(SigningError::OpenPgp {
                commit: commit.to_string(),
                committer: committer.to_string(),
            });
        }
        let sig = SshSig::from_pem(signature.trim()).map_err(|e| SigningError::BadSignature {
            commit: commit.to_string(),
            committer: committer.to_string(),
            signer: "(unreadable signature)".into(),
            reason: e.to_string(),
        })?;
        let signer = format!("key {}", sig.public_key().fingerprint(HashAlg::Sha256));
        let Some((principal, key)) = self
            .keys
            .iter()
            .find(|(_, k)| k.key_data() == sig.public_key())
        else {
            return Err(SigningError::NotAllowed {
                commit: commit.to_string(),
                committer: committer.to_string(),
                signer,
            });
        };
        let signer = format!("{principal} ({signer})");
        key.verify(GIT_NAMESPACE, signed, &sig)
            .map_err(|e| SigningError::BadSignature {
                commit: commit.to_string(),
                committer: committer.to_string(),
                signer: signer.clone(),
                reason: e.to_string(),
            })?;
        Ok(signer)
    }
}

/// Verifies commit `commit` of the repository at `repo` (a mirror). Blocking.
pub fn verify_commit(
    repo: &Path,
    commit: &str,
    allowed: &AllowedSigners,
) -> Result<String, SigningError> {
    let git = |e: git2::Error| SigningError::Git {
        commit: commit.to_string(),
        reason: e.message().to_string(),
    };
    let repo = git2::Repository::open(repo).map_err(git)?;
    let oid = git2::Oid::from_str(commit).map_err(git)?;
    let c = repo.find_commit(oid).map_err(git)?;
    let committer = {
        let who = c.committer();
        format!(
            "{} <{}>",
            who.name().unwrap_or_default(),
            who.email().unwrap_or_default()
        )
    };
    match repo.extract_signature(&oid, None) {
        Ok((signature, signed)) => allowed.verify(
            commit,
            &committer,
            &String::from_utf8_lossy(&signature),
            &signed,
        ),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Err(SigningError::Unsigned {
            commit: commit.to_string(),
            committer,
        }),
        Err(e) => Err(git(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBkNOJ1W3eUDhdzsKqGzXeMY7pHXPD4nN2Rk0dfRgH6x";

    #[test]
    fn allowed_signers_lines_are_parsed_and_bad_ones_named() {
        let ok = AllowedSigners::parse(
            "allowed",
            &format!(
                "# team\nalice@example.com {KEY}\nbob@example.com namespaces=\"git\" {KEY} bob\n"
            ),
        )
        .expect("valid");
        assert_eq!(ok.keys.len(), 2);
        assert_eq!(ok.keys[1].0, "bob@example.com");
        let err = AllowedSigners::parse("allowed", "alice@example.com\n")
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("allowed signers file allowed: line 1: no key"),
            "{err}"
        );
        let err = AllowedSigners::parse("allowed", "a ssh-ed25519 bm90LWEta2V5\n")
            .expect_err("refused")
            .to_string();
        assert!(err.contains("line 1: not a public key"), "{err}");
        let err = AllowedSigners::parse("allowed", "# nothing\n")
            .expect_err("refused")
            .to_string();
        assert!(err.contains("lists no key"), "{err}");
    }

    #[test]
    fn pgp_and_garbage_signatures_are_refused_with_the_commit() {
        let allowed = AllowedSigners::parse("a", &format!("alice {KEY}")).expect("valid");
        let err = allowed
            .verify(
                "abc123",
                "A <a@x>",
                "-----BEGIN PGP SIGNATURE-----\n...",
                b"x",
            )
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("commit abc123") && err.contains("OpenPGP"),
            "{err}"
        );
        let err = allowed
            .verify(
                "abc123",
                "A <a@x>",
                "-----BEGIN SSH SIGNATURE-----\nnope\n-----END SSH SIGNATURE-----",
                b"x",
            )
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("commit abc123") && err.contains("does not verify"),
            "{err}"
        );
    }
}
