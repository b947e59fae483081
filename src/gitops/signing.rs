//! Signed commits: a repository may require every applied commit to be signed by a trusted key
//! (`verify:` in kudo.yaml), with either or both kinds of signature git makes:
//!
//! - SSH (`git commit -S` with `gpg.format=ssh`), by a key listed in an allowed-signers file in
//!   the format of git's `gpg.ssh.allowedSignersFile` (`<principals> [options] <key-type>
//!   <base64>`). The sshsig check uses the `ssh-key` crate (Ed25519 keys).
//! - OpenPGP (`git commit -S` with gpg), by a key of an ASCII-armored public keyring (one or more
//!   public keys, as `gpg --armor --export` writes them). The check uses the pure-Rust `pgp`
//!   crate (rpgp). The signature's issuer fingerprint (or, when it names none, its key ID) is
//!   looked up among the primary keys and subkeys of the keyring; the signature must verify
//!   over the commit without its `gpgsig` header, and the key must have been usable for signing
//!   when the signature was made: a valid self-signature (a subkey: a valid binding signature
//!   with the signing flag and a valid back-signature), not yet expired, and never revoked.
//!
//! When only one kind is trusted, a commit signed with the other kind is refused, saying which
//! kind is trusted. A refused commit is never applied; the caller keeps the last good revision
//! running. Every refusal names the commit, its committer and, when known, the signer.

use std::path::Path;

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey, SignedPublicSubKey};
use pgp::packet::{Signature, SignatureType, SubpacketData};
use pgp::types::{KeyDetails, Tag, Timestamp};
use ssh_key::{HashAlg, PublicKey, SshSig};

use super::config::Verification;

/// The namespace git signs commits in.
const GIT_NAMESPACE: &str = "git";

const PGP_SIGNATURE: &str = "-----BEGIN PGP SIGNATURE-----";
const SSH_SIGNATURE: &str = "-----BEGIN SSH SIGNATURE-----";
const PGP_PUBLIC_BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
const PGP_PUBLIC_END: &str = "-----END PGP PUBLIC KEY BLOCK-----";
const PGP_PRIVATE: &str = "-----BEGIN PGP PRIVATE KEY BLOCK-----";

const SSH_TRUST: &str = "SSH signatures (verify.allowedSignersFile)";
const PGP_TRUST: &str = "OpenPGP signatures (verify.openpgpKeysFile)";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("allowed signers file {file}: {reason}")]
    SignersFile { file: String, reason: String },
    #[error("OpenPGP keys file {file}: {reason}")]
    KeyringFile { file: String, reason: String },
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
        "commit {commit} (committer {committer}) is signed by {signer}, a key that {reason}; the signature is not trusted"
    )]
    UnusableKey {
        commit: String,
        committer: String,
        signer: String,
        reason: String,
    },
    #[error(
        "commit {commit} (committer {committer}) has {kind} signature, but the repository trusts only {trusted}"
    )]
    KindNotTrusted {
        commit: String,
        committer: String,
        kind: &'static str,
        trusted: &'static str,
    },
    #[error(
        "commit {commit} (committer {committer}) is signed by {signer}, which is not listed as a key; the allowed signers file's cert-authority lines ({lines}) are not supported: kudo does not verify SSH certificates"
    )]
    CertificateAuthority {
        commit: String,
        committer: String,
        signer: String,
        lines: String,
    },
    #[error("commit {commit}: {reason}")]
    Git { commit: String, reason: String },
}

impl SigningError {
    /// Whether this is a verdict about the commit's signature (remembered: the commit stays
    /// refused until the ref moves), not a failure to read the trust files or the mirror
    /// (a sync failure, retried with backoff).
    pub fn is_verdict(&self) -> bool {
        !matches!(
            self,
            SigningError::SignersFile { .. }
                | SigningError::KeyringFile { .. }
                | SigningError::Git { .. }
        )
    }
}

/// The keys a repository trusts: SSH allowed signers, OpenPGP keys, or both.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub ssh: Option<AllowedSigners>,
    pub openpgp: Option<OpenPgpKeys>,
}

impl Trust {
    /// Reads the files `verify:` names (blocking).
    pub fn load(verify: &Verification) -> Result<Trust, SigningError> {
        Ok(Trust {
            ssh: verify
                .allowed_signers_file
                .as_deref()
                .map(AllowedSigners::load)
                .transpose()?,
            openpgp: verify
                .openpgp_keys_file
                .as_deref()
                .map(OpenPgpKeys::load)
                .transpose()?,
        })
    }

    /// Pure: checks an armored signature over `signed` (the commit without its signature) with
    /// the trusted keys of its kind. `at` (Unix seconds) is the commit's committer time, which
    /// SSH `valid-after`/`valid-before` are compared with (as `git verify-commit` does through
    /// `ssh-keygen -Overify-time`). Returns who signed.
    pub fn verify(
        &self,
        commit: &str,
        committer: &str,
        signature: &str,
        signed: &[u8],
        at: i64,
    ) -> Result<String, SigningError> {
        let trusted = match (&self.ssh, &self.openpgp) {
            (Some(_), None) => SSH_TRUST,
            (None, Some(_)) => PGP_TRUST,
            (Some(_), Some(_)) => "SSH and OpenPGP signatures",
            (None, None) => "signatures by no key (verify names no keys file)",
        };
        let other_kind = |kind| SigningError::KindNotTrusted {
            commit: commit.to_string(),
            committer: committer.to_string(),
            kind,
            trusted,
        };
        if signature.contains(PGP_SIGNATURE) {
            let keys = self
                .openpgp
                .as_ref()
                .ok_or_else(|| other_kind("an OpenPGP"))?;
            keys.verify(commit, committer, signature, signed)
        } else if signature.contains(SSH_SIGNATURE) {
            let signers = self.ssh.as_ref().ok_or_else(|| other_kind("an SSH"))?;
            signers.verify(commit, committer, signature, signed, at)
        } else {
            Err(SigningError::BadSignature {
                commit: commit.to_string(),
                committer: committer.to_string(),
                signer: "(unknown signature format)".into(),
                reason: format!("neither an SSH nor an OpenPGP signature; trusted: {trusted}"),
            })
        }
    }
}

/// Keys allowed to sign, with the principal (usually an e-mail) each is listed under and the
/// options of its line, with ssh-keygen's ALLOWED SIGNERS semantics: `namespaces="..."` (a
/// pattern list that must match `git`), `valid-after="..."` and `valid-before="..."`
/// (`YYYYMMDD[HHMM[SS]]`, a trailing `Z` for UTC, else the local time zone, compared with the
/// commit's committer time). `cert-authority` lines are read but trust nothing: SSH
/// certificates are not verified, and a refusal says so.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    keys: Vec<Signer>,
    /// Line numbers of `cert-authority` lines.
    ca_lines: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Signer {
    line: usize,
    principal: String,
    key: PublicKey,
    namespaces: Option<String>,
    valid_after: Option<i64>,
    valid_before: Option<i64>,
}

#[derive(Debug, Default)]
struct SignerOptions {
    cert_authority: bool,
    namespaces: Option<String>,
    valid_after: Option<i64>,
    valid_before: Option<i64>,
}

/// The first field of `s` (ended by whitespace outside double quotes) and the rest.
fn split_field(s: &str) -> (&str, &str) {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c.is_whitespace() && !quoted {
            return (&s[..i], s[i..].trim_start());
        }
    }
    (s, "")
}

/// `option[,option...]` split on commas outside double quotes.
fn split_options(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut from = 0;
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == ',' && !quoted {
            out.push(&s[from..i]);
            from = i + 1;
        }
    }
    out.push(&s[from..]);
    out
}

fn dequote<'a>(name: &str, value: &'a str) -> Result<&'a str, String> {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .filter(|v| !v.contains('"'))
        .ok_or_else(|| format!("option {name}: the value must be in double quotes"))
}

/// ssh-keygen's `parse_absolute_time`: `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, UTC with
/// a trailing `Z`, else the local time zone. Unix seconds.
fn parse_signer_time(name: &str, text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "option {name}: {text:?} is not a time like 20250131, 202501311200 or 20250131120000Z"
        )
    };
    let (digits, utc) = match text.strip_suffix(['Z', 'z']) {
        Some(d) => (d, true),
        None => (text, false),
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let num = |from: usize, to: usize| -> Result<i32, String> {
        digits
            .get(from..to)
            .and_then(|d| d.parse().ok())
            .ok_or_else(bad)
    };
    let part = |from: usize| -> Result<i8, String> {
        if digits.len() > from {
            i8::try_from(num(from, from + 2)?).map_err(|_| bad())
        } else {
            Ok(0)
        }
    };
    let year = i16::try_from(num(0, 4)?).map_err(|_| bad())?;
    let month = i8::try_from(num(4, 6)?).map_err(|_| bad())?;
    let day = i8::try_from(num(6, 8)?).map_err(|_| bad())?;
    let civil = jiff::civil::DateTime::new(year, month, day, part(8)?, part(10)?, part(12)?, 0)
        .map_err(|_| bad())?;
    let zone = if utc {
        jiff::tz::TimeZone::UTC
    } else {
        jiff::tz::TimeZone::system()
    };
    civil
        .to_zoned(zone)
        .map(|z| z.timestamp().as_second())
        .map_err(|_| bad())
}

fn parse_signer_options(opts: &str) -> Result<SignerOptions, String> {
    let mut o = SignerOptions::default();
    for opt in split_options(opts) {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n.to_ascii_lowercase(), Some(v)),
            None => (opt.to_ascii_lowercase(), None),
        };
        match (name.as_str(), value) {
            ("cert-authority", None) => o.cert_authority = true,
            ("namespaces", Some(v)) => {
                if o.namespaces.is_some() {
                    return Err("more than one namespaces= option".into());
                }
                o.namespaces = Some(dequote("namespaces", v)?.to_string());
            }
            ("valid-after" | "valid-before", Some(v)) => {
                let t = parse_signer_time(&name, dequote(&name, v)?)?;
                let slot = if name == "valid-after" {
                    &mut o.valid_after
                } else {
                    &mut o.valid_before
                };
                if slot.replace(t).is_some() {
                    return Err(format!("more than one {name}= option"));
                }
            }
            _ => {
                return Err(format!(
                    "unsupported option {opt:?} (ssh-keygen knows cert-authority, namespaces=\"...\", valid-after=\"...\", valid-before=\"...\")"
                ));
            }
        }
    }
    if let (Some(after), Some(before)) = (o.valid_after, o.valid_before)
        && before <= after
    {
        return Err("valid-before is not after valid-after".into());
    }
    Ok(o)
}

/// ssh-keygen's `match_pattern_list`: comma-separated wildcard patterns, `!` negates; the
/// text must match a positive pattern and no negated one.
fn matches_pattern_list(text: &str, list: &str) -> bool {
    let mut matched = false;
    for pattern in list.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if super::git::wildcard_match(pattern, text) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

fn utc(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| t.to_string())
}

impl Signer {
    /// Why this line does not allow a git signature at committer time `at`, if it does not.
    fn refuses(&self, at: i64) -> Option<String> {
        let line = self.line;
        if let Some(ns) = &self.namespaces
            && !matches_pattern_list(GIT_NAMESPACE, ns)
        {
            return Some(format!(
                "is allowed (line {line}) only for namespaces=\"{ns}\", which does not include git"
            ));
        }
        if let Some(after) = self.valid_after
            && at < after
        {
            return Some(format!(
                "is not yet valid (line {line}: valid-after {}) at the commit's committer time {}",
                utc(after),
                utc(at)
            ));
        }
        if let Some(before) = self.valid_before
            && at > before
        {
            return Some(format!(
                "expired (line {line}: valid-before {}) before the commit's committer time {}",
                utc(before),
                utc(at)
            ));
        }
        None
    }
}

impl AllowedSigners {
    pub fn load(path: &Path) -> Result<AllowedSigners, SigningError> {
        let text = std::fs::read_to_string(path).map_err(|e| SigningError::SignersFile {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        AllowedSigners::parse(&path.display().to_string(), &text)
    }

    /// Parses git's allowed-signers format (`<principals> [options] <key-type> <base64>
    /// [comment]`); a bad line is an error naming its number.
    pub fn parse(file: &str, text: &str) -> Result<AllowedSigners, SigningError> {
        let mut keys = Vec::new();
        let mut ca_lines = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| SigningError::SignersFile {
                file: file.to_string(),
                reason: format!("line {}: {reason}", n + 1),
            };
            let is_key_type =
                |f: &str| f.starts_with("ssh-") || f.starts_with("ecdsa-") || f.starts_with("sk-");
            let (principals, rest) = split_field(line);
            if is_key_type(principals) {
                return Err(bad("no principal before the key".into()));
            }
            let (first, _) = split_field(rest);
            let (options, key_text) = if is_key_type(first) {
                (SignerOptions::default(), rest)
            } else if first.is_empty() {
                return Err(bad(
                    "no key (expected `<principals> [options] <key-type> <base64>`)".into(),
                ));
            } else {
                let (opts, key_text) = split_field(rest);
                (parse_signer_options(opts).map_err(bad)?, key_text)
            };
            let (kind, after) = split_field(key_text);
            let (data, _comment) = split_field(after);
            if !is_key_type(kind) {
                return Err(bad(
                    "no key (expected `<principals> [options] <key-type> <base64>`)".into(),
                ));
            }
            if data.is_empty() {
                return Err(bad("key type without key data".into()));
            }
            let key = PublicKey::from_openssh(&format!("{kind} {data}"))
                .map_err(|e| bad(format!("not a public key: {e}")))?;
            if options.cert_authority {
                ca_lines.push(n + 1);
                continue;
            }
            keys.push(Signer {
                line: n + 1,
                principal: principals.trim_matches('"').to_string(),
                key,
                namespaces: options.namespaces,
                valid_after: options.valid_after,
                valid_before: options.valid_before,
            });
        }
        if keys.is_empty() {
            let reason = if ca_lines.is_empty() {
                "lists no key".to_string()
            } else {
                format!(
                    "lists only cert-authority lines ({}), which kudo does not support (it does not verify SSH certificates): list the signers' keys",
                    join_lines(&ca_lines)
                )
            };
            return Err(SigningError::SignersFile {
                file: file.to_string(),
                reason,
            });
        }
        Ok(AllowedSigners { keys, ca_lines })
    }

    /// Pure: checks an armored SSH signature over `signed` (the commit without its signature)
    /// made at committer time `at`. Returns who signed (principal and key fingerprint).
    pub fn verify(
        &self,
        commit: &str,
        committer: &str,
        signature: &str,
        signed: &[u8],
        at: i64,
    ) -> Result<String, SigningError> {
        let sig = SshSig::from_pem(signature.trim()).map_err(|e| SigningError::BadSignature {
            commit: commit.to_string(),
            committer: committer.to_string(),
            signer: "(unreadable signature)".into(),
            reason: e.to_string(),
        })?;
        let signer = format!("key {}", sig.public_key().fingerprint(HashAlg::Sha256));
        let listed: Vec<&Signer> = self
            .keys
            .iter()
            .filter(|s| s.key.key_data() == sig.public_key())
            .collect();
        let Some(first) = listed.first() else {
            return Err(if self.ca_lines.is_empty() {
                SigningError::NotAllowed {
                    commit: commit.to_string(),
                    committer: committer.to_string(),
                    signer,
                }
            } else {
                SigningError::CertificateAuthority {
                    commit: commit.to_string(),
                    committer: committer.to_string(),
                    signer,
                    lines: join_lines(&self.ca_lines),
                }
            });
        };
        first
            .key
            .verify(GIT_NAMESPACE, signed, &sig)
            .map_err(|e| SigningError::BadSignature {
                commit: commit.to_string(),
                committer: committer.to_string(),
                signer: format!("{} ({signer})", first.principal),
                reason: e.to_string(),
            })?;
        // As ssh-keygen: any line listing the key whose options allow it.
        let mut refusals = Vec::new();
        for line in &listed {
            match line.refuses(at) {
                None => return Ok(format!("{} ({signer})", line.principal)),
                Some(why) => refusals.push(why),
            }
        }
        Err(SigningError::UnusableKey {
            commit: commit.to_string(),
            committer: committer.to_string(),
            signer: format!("{} ({signer})", first.principal),
            reason: refusals.join("; and "),
        })
    }
}

fn join_lines(lines: &[usize]) -> String {
    let lines: Vec<String> = lines.iter().map(|l| format!("line {l}")).collect();
    lines.join(", ")
}

/// OpenPGP public keys trusted to sign (each with its subkeys).
#[derive(Debug, Clone)]
pub struct OpenPgpKeys {
    keys: Vec<SignedPublicKey>,
}

impl OpenPgpKeys {
    pub fn load(path: &Path) -> Result<OpenPgpKeys, SigningError> {
        let text = std::fs::read_to_string(path).map_err(|e| SigningError::KeyringFile {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        OpenPgpKeys::parse(&path.display().to_string(), &text)
    }

    /// Parses ASCII-armored public key blocks: several keys in one block (`gpg --armor --export
    /// a b`) or several blocks one after another. A bad block is an error naming its number.
    pub fn parse(file: &str, text: &str) -> Result<OpenPgpKeys, SigningError> {
        let bad = |reason: String| SigningError::KeyringFile {
            file: file.to_string(),
            reason,
        };
        if text.contains(PGP_PRIVATE) {
            return Err(bad(
                "holds a private key block; export only public keys (gpg --armor --export)".into(),
            ));
        }
        let mut keys = Vec::new();
        let mut rest = text;
        let mut block = 0;
        while let Some(start) = rest.find(PGP_PUBLIC_BEGIN) {
            block += 1;
            let from = &rest[start..];
            let Some(end) = from.find(PGP_PUBLIC_END).map(|e| e + PGP_PUBLIC_END.len()) else {
                return Err(bad(format!(
                    "public key block {block} has no {PGP_PUBLIC_END} line"
                )));
            };
            let (armored, after) = from.split_at(end);
            rest = after;
            let (parsed, _) = SignedPublicKey::from_armor_many(armored.as_bytes())
                .map_err(|e| bad(format!("public key block {block}: {}", pgp_error(e))))?;
            let before = keys.len();
            for key in parsed {
                keys.push(
                    key.map_err(|e| bad(format!("public key block {block}: {}", pgp_error(e))))?,
                );
            }
            if keys.len() == before {
                return Err(bad(format!("public key block {block} holds no public key")));
            }
        }
        if block == 0 {
            return Err(bad(format!(
                "no ASCII-armored public key ({PGP_PUBLIC_BEGIN}); write it with gpg --armor --export"
            )));
        }
        Ok(OpenPgpKeys { keys })
    }

    /// Pure: checks an armored OpenPGP signature over `signed` (the commit without its
    /// signature). Returns who signed (user ID and fingerprints).
    pub fn verify(
        &self,
        commit: &str,
        committer: &str,
        signature: &str,
        signed: &[u8],
    ) -> Result<String, SigningError> {
        let bad = |signer: &str, reason: String| SigningError::BadSignature {
            commit: commit.to_string(),
            committer: committer.to_string(),
            signer: signer.to_string(),
            reason,
        };
        let (sig, _) = DetachedSignature::from_armor_single(signature.trim().as_bytes())
            .map_err(|e| bad("(unreadable OpenPGP signature)", pgp_error(e)))?;
        let sig = sig.signature;
        let fingerprints = sig.issuer_fingerprint();
        let key_ids = sig.issuer_key_id();
        let issuer = if let Some(fp) = fingerprints.first() {
            format!("OpenPGP key {fp:X}")
        } else if let Some(id) = key_ids.first() {
            format!("OpenPGP key ID {}", hex::encode_upper(id))
        } else {
            return Err(bad(
                "(an OpenPGP key it does not name)",
                "the signature names no issuer key".into(),
            ));
        };
        if !matches!(sig.typ(), Some(SignatureType::Binary | SignatureType::Text)) {
            return Err(bad(
                &issuer,
                format!("a {:?} signature is not a signature over data", sig.typ()),
            ));
        }
        let Some(made) = sig.created() else {
            return Err(bad(&issuer, "the signature has no creation time".into()));
        };
        // The fingerprint when the signature names one (it then decides alone), else the key ID.
        let is_issuer = |k: &dyn KeyDetails| {
            if fingerprints.is_empty() {
                key_ids.contains(&&k.legacy_key_id())
            } else {
                fingerprints.contains(&&k.fingerprint())
            }
        };
        let mut refusal = None;
        for key in &self.keys {
            let components = std::iter::once(None).chain(key.public_subkeys.iter().map(Some));
            for sub in components {
                let verified = match sub {
                    None if is_issuer(&key.primary_key) => sig.verify(&key.primary_key, signed),
                    Some(s) if is_issuer(&s.key) => sig.verify(&s.key, signed),
                    _ => continue,
                };
                let signer = pgp_signer(key, sub);
                let err = match verified
                    .map_err(pgp_error)
                    .and_then(|()| signature_alive(&sig, made, Timestamp::now()))
                {
                    Err(reason) => bad(&signer, reason),
                    Ok(()) => match usable(key, sub, made) {
                        Ok(()) => return Ok(signer),
                        Err(reason) => SigningError::UnusableKey {
                            commit: commit.to_string(),
                            committer: committer.to_string(),
                            signer,
                            reason,
                        },
                    },
                };
                refusal.get_or_insert(err);
            }
        }
        Err(refusal.unwrap_or_else(|| SigningError::NotAllowed {
            commit: commit.to_string(),
            committer: committer.to_string(),
            signer: issuer,
        }))
    }
}

/// "Alice <alice@example.com> (OpenPGP key <fingerprint>[, subkey <fingerprint>])".
fn pgp_signer(key: &SignedPublicKey, sub: Option<&SignedPublicSubKey>) -> String {
    let users = &key.details.users;
    let user = users.iter().find(|u| u.is_primary()).or(users.first());
    let mut fingerprints = format!("OpenPGP key {:X}", key.primary_key.fingerprint());
    if let Some(sub) = sub {
        fingerprints.push_str(&format!(", subkey {:X}", sub.key.fingerprint()));
    }
    match user {
        Some(u) => format!("{} ({fingerprints})", String::from_utf8_lossy(u.id.id())),
        None => fingerprints,
    }
}

/// One short line: rpgp's assertion failures span lines and end with what failed, and a parser
/// error may quote the input byte by byte.
fn pgp_error(e: pgp::errors::Error) -> String {
    let text = e.to_string();
    let text = match text.strip_prefix("assertion failed") {
        Some(rest) => rest.rsplit("`: ").next().unwrap_or(rest),
        None => &text,
    };
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn time(t: Timestamp) -> String {
    jiff::Timestamp::from_second(i64::from(t.as_secs()))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| t.as_secs().to_string())
}

/// A signature with an expiration time must not have expired by `now`.
fn signature_alive(sig: &Signature, made: Timestamp, now: Timestamp) -> Result<(), String> {
    match sig.signature_expiration_time().map(|d| d.as_secs()) {
        Some(d)
            if d > 0 && u64::from(now.as_secs()) >= u64::from(made.as_secs()) + u64::from(d) =>
        {
            Err(format!(
                "the signature expired at {}",
                time(Timestamp::from_secs(made.as_secs().saturating_add(d)))
            ))
        }
        _ => Ok(()),
    }
}

/// A key (or subkey) created at `created`, expiring `expires` later, was alive at `at`.
fn key_alive(created: Timestamp, expires: Option<u32>, at: Timestamp) -> Result<(), String> {
    if at.as_secs() < created.as_secs() {
        return Err(format!(
            "was created at {}, after the signature was made ({})",
            time(created),
            time(at)
        ));
    }
    match expires {
        Some(d)
            if d > 0 && u64::from(at.as_secs()) >= u64::from(created.as_secs()) + u64::from(d) =>
        {
            Err(format!(
                "expired at {}, before the signature was made ({})",
                time(Timestamp::from_secs(created.as_secs().saturating_add(d))),
                time(at)
            ))
        }
        _ => Ok(()),
    }
}

fn newest<'a>(sigs: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    sigs.max_by_key(|s| s.created().map(Timestamp::as_secs).unwrap_or(0))
}

fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    })
}

/// Whether the key (its primary, or the subkey `sub`) could sign at `at`: never revoked, a valid
/// self-signature, alive then, allowed to sign; a subkey also bound by a valid binding signature
/// with the signing flag and a valid back-signature. Returns what is wrong, to follow "a key that".
fn usable(
    key: &SignedPublicKey,
    sub: Option<&SignedPublicSubKey>,
    at: Timestamp,
) -> Result<(), String> {
    let primary = &key.primary_key;
    if key
        .details
        .revocation_signatures
        .iter()
        .any(|s| s.verify_key(primary).is_ok())
    {
        return Err("is revoked".into());
    }
    let direct = key
        .details
        .direct_signatures
        .iter()
        .filter(|s| s.verify_key(primary).is_ok());
    let certifications = key.details.users.iter().flat_map(|u| {
        u.signatures.iter().filter(|s| {
            matches!(
                s.typ(),
                Some(
                    SignatureType::CertGeneric
                        | SignatureType::CertPersona
                        | SignatureType::CertCasual
                        | SignatureType::CertPositive
                )
            ) && s.verify_certification(primary, Tag::UserId, &u.id).is_ok()
        })
    });
    let Some(selfsig) = newest(direct.chain(certifications)) else {
        return Err("has no valid self-signature".into());
    };
    key_alive(
        primary.created_at(),
        selfsig.key_expiration_time().map(|d| d.as_secs()),
        at,
    )?;
    let Some(sub) = sub else {
        if has_key_flags(selfsig) && !selfsig.key_flags().sign() {
            return Err("may not sign (its key flags)".into());
        }
        return Ok(());
    };
    let bound = |s: &&Signature, typ| {
        s.typ() == Some(typ) && s.verify_subkey_binding(primary, &sub.key).is_ok()
    };
    if sub
        .signatures
        .iter()
        .any(|s| bound(&s, SignatureType::SubkeyRevocation))
    {
        return Err("is a revoked subkey".into());
    }
    let Some(binding) = newest(
        sub.signatures
            .iter()
            .filter(|s| bound(s, SignatureType::SubkeyBinding)),
    ) else {
        return Err("is a subkey without a valid binding signature".into());
    };
    if !binding.key_flags().sign() {
        return Err("is a subkey not bound for signing".into());
    }
    if binding
        .embedded_signature()
        .is_none_or(|back| back.verify_primary_key_binding(&sub.key, primary).is_err())
    {
        return Err("is a signing subkey without a valid back-signature".into());
    }
    key_alive(
        sub.key.created_at(),
        binding.key_expiration_time().map(|d| d.as_secs()),
        at,
    )
}

/// Verifies commit `commit` of the repository at `repo` (a mirror). Blocking.
pub fn verify_commit(repo: &Path, commit: &str, trust: &Trust) -> Result<String, SigningError> {
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
    let at = c.committer().when().seconds();
    match repo.extract_signature(&oid, None) {
        Ok((signature, signed)) => trust.verify(
            commit,
            &committer,
            &String::from_utf8_lossy(&signature),
            &signed,
            at,
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
        assert_eq!(ok.keys[1].principal, "bob@example.com");
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
    fn signatures_of_an_untrusted_kind_or_format_are_refused_with_the_commit() {
        let ssh_only = Trust {
            ssh: Some(AllowedSigners::parse("a", &format!("alice {KEY}")).expect("valid")),
            openpgp: None,
        };
        let err = ssh_only
            .verify("abc123", "A <a@x>", ALICE_SIG, PAYLOAD.as_bytes(), 0)
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("commit abc123 (committer A <a@x>) has an OpenPGP signature")
                && err.contains("trusts only SSH signatures (verify.allowedSignersFile)"),
            "{err}"
        );
        let err = ssh_only
            .verify(
                "abc123",
                "A <a@x>",
                "-----BEGIN SSH SIGNATURE-----\nnope\n-----END SSH SIGNATURE-----",
                b"x",
                0,
            )
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("commit abc123") && err.contains("does not verify"),
            "{err}"
        );
        let pgp_only = Trust {
            ssh: None,
            openpgp: Some(keys(&[ALICE])),
        };
        let err = pgp_only
            .verify(
                "abc123",
                "A <a@x>",
                "-----BEGIN SSH SIGNATURE-----\nnope\n-----END SSH SIGNATURE-----",
                b"x",
                0,
            )
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("commit abc123 (committer A <a@x>) has an SSH signature")
                && err.contains("trusts only OpenPGP signatures (verify.openpgpKeysFile)"),
            "{err}"
        );
        let err = pgp_only
            .verify(
                "abc123",
                "A <a@x>",
                "-----BEGIN SIGNED MESSAGE-----",
                b"x",
                0,
            )
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("commit abc123") && err.contains("neither an SSH nor an OpenPGP"),
            "{err}"
        );
    }

    // Made by testdata/openpgp/make.sh (real gpg keys and detached signatures over PAYLOAD).
    const PAYLOAD: &str = include_str!("testdata/openpgp/payload.txt");
    const ALICE: &str = include_str!("testdata/openpgp/alice.asc");
    const ALICE_SIG: &str = include_str!("testdata/openpgp/alice.sig");
    const ALICE_FPR: &str = include_str!("testdata/openpgp/alice.fpr");
    const BOB: &str = include_str!("testdata/openpgp/bob.asc");
    const BOB_SIG: &str = include_str!("testdata/openpgp/bob.sig");
    const CAROL: &str = include_str!("testdata/openpgp/carol.asc");
    const CAROL_SIG: &str = include_str!("testdata/openpgp/carol.sig");
    const DAVE: &str = include_str!("testdata/openpgp/dave.asc");
    const DAVE_SIG: &str = include_str!("testdata/openpgp/dave.sig");
    const ERIN: &str = include_str!("testdata/openpgp/erin.asc");
    const ERIN_SIG: &str = include_str!("testdata/openpgp/erin.sig");

    fn keys(blocks: &[&str]) -> OpenPgpKeys {
        OpenPgpKeys::parse("keys.asc", &blocks.concat()).expect("valid keyring")
    }

    #[test]
    fn openpgp_keys_files_are_parsed_and_bad_ones_named() {
        assert_eq!(keys(&[ALICE, "\n# comment\n", BOB]).keys.len(), 2);
        let refused = |text: &str| {
            OpenPgpKeys::parse("keys.asc", text)
                .expect_err("refused")
                .to_string()
        };
        let err = refused("alice@example.com ssh-ed25519 AAAA\n");
        assert!(
            err.contains("OpenPGP keys file keys.asc: no ASCII-armored public key"),
            "{err}"
        );
        let err = refused(
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5\n=AAAA\n-----END PGP PUBLIC KEY BLOCK-----\n",
        );
        assert!(
            err.contains("OpenPGP keys file keys.asc: public key block 1:"),
            "{err}"
        );
        let err = refused(&format!(
            "{ALICE}-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!! not base64 !!!\n-----END PGP PUBLIC KEY BLOCK-----\n"
        ));
        assert!(err.contains("keys.asc: public key block 2:"), "{err}");
        let cut = &ALICE[..ALICE.len() / 2];
        let err = refused(cut);
        assert!(
            err.contains(
                "keys.asc: public key block 1 has no -----END PGP PUBLIC KEY BLOCK----- line"
            ),
            "{err}"
        );
        let err = refused("-----BEGIN PGP PRIVATE KEY BLOCK-----\n...\n");
        assert!(err.contains("keys.asc: holds a private key"), "{err}");
        let missing = std::path::Path::new("/nonexistent/keys.asc");
        let err = OpenPgpKeys::load(missing).expect_err("refused").to_string();
        assert!(
            err.contains("OpenPGP keys file /nonexistent/keys.asc:"),
            "{err}"
        );
    }

    #[test]
    fn openpgp_signatures_verify_against_the_keyring_only() {
        let all = keys(&[ALICE, BOB, CAROL, DAVE, ERIN]);
        let verify = |keys: &OpenPgpKeys, sig: &str, payload: &str| {
            keys.verify("abc123", "A <a@x>", sig, payload.as_bytes())
        };
        let signer = verify(&all, ALICE_SIG, PAYLOAD).expect("alice's primary key signs");
        assert_eq!(
            signer,
            format!(
                "Alice <alice@example.com> (OpenPGP key {})",
                ALICE_FPR.trim()
            )
        );
        let signer = verify(&all, BOB_SIG, PAYLOAD).expect("bob's subkey signs");
        assert!(
            signer.starts_with("Bob <bob@example.com> (OpenPGP key ")
                && signer.contains(", subkey "),
            "{signer}"
        );
        let signer = verify(&all, ERIN_SIG, PAYLOAD).expect("RSA");
        assert!(signer.starts_with("Erin <erin@example.com>"), "{signer}");

        let err = verify(&all, ALICE_SIG, "tampered payload\n")
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains(
                "commit abc123 (committer A <a@x>): the signature by Alice <alice@example.com>"
            ) && err.contains("does not verify"),
            "{err}"
        );
        let err = verify(&keys(&[BOB]), ALICE_SIG, PAYLOAD)
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains(&format!(
                "commit abc123 (committer A <a@x>) is signed by OpenPGP key {}, which is not an allowed signer",
                ALICE_FPR.trim()
            )),
            "{err}"
        );
        let err = verify(&all, CAROL_SIG, PAYLOAD)
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("is signed by Carol <carol@example.com>")
                && err.contains("a key that expired at")
                && err.contains("before the signature was made"),
            "{err}"
        );
        let err = verify(&all, DAVE_SIG, PAYLOAD)
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("is signed by Dave <dave@example.com>")
                && err.contains("a key that is revoked"),
            "{err}"
        );
        let err = verify(
            &all,
            "-----BEGIN PGP SIGNATURE-----\n\nbm9wZQ==\n-----END PGP SIGNATURE-----\n",
            PAYLOAD,
        )
        .expect_err("refused")
        .to_string();
        assert!(
            err.contains("commit abc123")
                && err.contains("(unreadable OpenPGP signature) does not verify"),
            "{err}"
        );
    }

    /// A real ed25519 key and an SSH signature over `payload` in git's namespace, made by
    /// ssh-keygen. Returns the public key line and the armored signature.
    fn ssh_signed(dir: &Path, name: &str, payload: &[u8]) -> (String, String) {
        let key = dir.join(name);
        let run = |args: &[&str]| {
            let out = std::process::Command::new("ssh-keygen")
                .args(args)
                .output()
                .expect("ssh-keygen runs");
            assert!(
                out.status.success(),
                "ssh-keygen {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let key_path = key.display().to_string();
        run(&["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", &key_path]);
        let data = dir.join(format!("{name}.payload"));
        std::fs::write(&data, payload).expect("payload");
        run(&[
            "-Y",
            "sign",
            "-n",
            "git",
            "-f",
            &key_path,
            &data.display().to_string(),
        ]);
        let public = std::fs::read_to_string(key.with_extension("pub")).expect("pub");
        let sig = std::fs::read_to_string(dir.join(format!("{name}.payload.sig"))).expect("sig");
        (public.trim().to_string(), sig)
    }

    const AT: i64 = 1_750_000_000; // 2025-06-15T15:06:40Z

    fn check(allowed: &str, sig: &str, at: i64) -> Result<String, SigningError> {
        AllowedSigners::parse("allowed", allowed)?.verify("c1", "A <a@x>", sig, b"payload", at)
    }

    #[test]
    fn allowed_signers_namespaces_must_include_git() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, sig) = ssh_signed(dir.path(), "alice", b"payload");
        assert!(check(&format!("alice {key}"), &sig, AT).is_ok());
        for ok in ["git", "file,git", "*", "g?t", "*,!file"] {
            let line = format!("alice namespaces=\"{ok}\" {key}");
            assert_eq!(
                check(&line, &sig, AT)
                    .as_deref()
                    .map(|s| s.starts_with("alice (key SHA256:")),
                Ok(true),
                "{line}"
            );
        }
        for refused in ["file", "gitx", "*,!git", "!git,git"] {
            let line = format!("alice namespaces=\"{refused}\" {key}");
            let err = check(&line, &sig, AT).expect_err(&line).to_string();
            assert!(
                err.contains("commit c1")
                    && err.contains(&format!(
                        "is allowed (line 1) only for namespaces=\"{refused}\", which does not include git"
                    )),
                "{err}"
            );
        }
    }

    #[test]
    fn allowed_signers_validity_is_compared_with_the_committer_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, sig) = ssh_signed(dir.path(), "alice", b"payload");
        let after = format!("alice valid-after=\"20250601Z\" {key}");
        assert!(check(&after, &sig, AT).is_ok());
        let err = check(&after, &sig, AT - 30 * 86_400)
            .expect_err("not yet")
            .to_string();
        assert!(
            err.contains("is not yet valid (line 1: valid-after 2025-06-01T00:00:00Z) at the commit's committer time 2025-05-16"),
            "{err}"
        );
        let before = format!("alice valid-before=\"202506151506Z\" {key}");
        assert!(check(&before, &sig, AT - 40).is_ok());
        let err = check(&before, &sig, AT).expect_err("expired").to_string();
        assert!(
            err.contains("expired (line 1: valid-before 2025-06-15T15:06:00Z) before the commit's committer time 2025-06-15T15:06:40Z"),
            "{err}"
        );
        let window =
            format!("alice valid-after=\"20250101000000Z\",valid-before=\"20251231Z\" {key}");
        assert!(check(&window, &sig, AT).is_ok());
        assert!(check(&window, &sig, AT + 365 * 86_400).is_err());
        // As ssh-keygen: any line of the key that allows it will do.
        let two = format!("{before}\nalice@new valid-after=\"20250615Z\" {key}\n");
        assert_eq!(
            check(&two, &sig, AT)
                .as_deref()
                .map(|s| s.starts_with("alice@new ")),
            Ok(true)
        );
        // Local time without Z parses (the zone is the machine's).
        assert!(
            AllowedSigners::parse("a", &format!("alice valid-after=\"202506011200\" {key}"))
                .is_ok()
        );
    }

    #[test]
    fn cert_authority_lines_trust_nothing_and_say_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (alice, sig) = ssh_signed(dir.path(), "alice", b"payload");
        let (ca, _) = ssh_signed(dir.path(), "ca", b"payload");
        let err = AllowedSigners::parse("allowed", &format!("*@example.com cert-authority {ca}\n"))
            .expect_err("only a CA")
            .to_string();
        assert!(
            err.contains("allowed signers file allowed: lists only cert-authority lines (line 1)")
                && err.contains("does not verify SSH certificates"),
            "{err}"
        );
        // The CA's own key as a signer is not trusted either; the refusal names the CA lines.
        let (bob, _) = ssh_signed(dir.path(), "bob", b"payload");
        let file = format!("bob {bob}\n*@example.com cert-authority {alice}\n");
        let err = check(&file, &sig, AT).expect_err("CA only").to_string();
        assert!(
            err.contains("commit c1 (committer A <a@x>) is signed by key SHA256:")
                && err.contains("cert-authority lines (line 2) are not supported"),
            "{err}"
        );
        assert!(
            check(
                &format!("alice {alice}\n*@x cert-authority {ca}\n"),
                &sig,
                AT
            )
            .is_ok()
        );
    }

    #[test]
    fn allowed_signers_options_are_checked_per_line() {
        let refused = |line: &str| {
            AllowedSigners::parse("allowed", &format!("# x\n{line}\n"))
                .expect_err(line)
                .to_string()
        };
        for (line, needle) in [
            (
                format!("a no-touch-required {KEY}"),
                "line 2: unsupported option \"no-touch-required\"",
            ),
            (
                format!("a namespaces=git {KEY}"),
                "line 2: option namespaces: the value must be in double quotes",
            ),
            (
                format!("a valid-after=\"2025\" {KEY}"),
                "line 2: option valid-after: \"2025\" is not a time",
            ),
            (
                format!("a valid-before=\"20251301Z\" {KEY}"),
                "is not a time",
            ),
            (
                format!("a valid-after=\"20250102Z\",valid-before=\"20250101Z\" {KEY}"),
                "line 2: valid-before is not after valid-after",
            ),
            (
                format!("a namespaces=\"git\",namespaces=\"file\" {KEY}"),
                "line 2: more than one namespaces= option",
            ),
            ("a namespaces=\"git\"".to_string(), "line 2: no key"),
            (KEY.to_string(), "line 2: no principal before the key"),
        ] {
            let err = refused(&line);
            assert!(err.contains(needle), "{line}: {err}");
        }
        // Quoted values may hold commas and spaces.
        let ok = AllowedSigners::parse(
            "a",
            &format!(
                "\"alice smith\" namespaces=\"file, git\",valid-after=\"20200101Z\" {KEY} comment"
            ),
        )
        .expect("valid");
        assert_eq!(ok.keys[0].principal, "alice smith");
        assert_eq!(ok.keys[0].namespaces.as_deref(), Some("file, git"));
    }

    #[test]
    fn trust_file_failures_are_not_verdicts() {
        let missing = AllowedSigners::load(Path::new("/nonexistent/allowed")).expect_err("missing");
        assert!(!missing.is_verdict());
        let keyring = OpenPgpKeys::load(Path::new("/nonexistent/keys.asc")).expect_err("missing");
        assert!(!keyring.is_verdict());
        let garbled = AllowedSigners::parse("allowed", "a ssh-ed25519 bm90LWEta2V5\n")
            .expect_err("not a key");
        assert!(
            !garbled.is_verdict(),
            "a broken trust file is retried, not held against a commit"
        );
        let unsigned = SigningError::Unsigned {
            commit: "c".into(),
            committer: "x".into(),
        };
        assert!(unsigned.is_verdict());
    }
}
