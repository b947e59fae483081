//! Keeping the values of parameters marked `sensitive: true` (and of rendered Secrets) out of
//! every output kudo produces: status, API answers, logs, diffs, events and notifications.
//! Structured values are replaced by [`MASK`]; free text (a panic message, a rendered object
//! in a diff) is scrubbed of every sensitive value at least [`MIN_SCRUB_LEN`] bytes long.
//! Shorter values are still masked wherever they appear as a field, but not searched for in
//! free text, where they would match everywhere (a PIN `1` in every number).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::api::{Instance, OperatorVersion, Parameter};
use crate::api::{LAST_APPLIED_ANNOTATION, Snapshot};

/// What a sensitive value is shown as.
pub const MASK: &str = "(sensitive, not shown)";
/// A masked value that differs between the two sides of a diff.
pub const MASK_CHANGED: &str = "(sensitive, changed)";
/// A masked value that is the same on both sides of a diff.
pub const MASK_UNCHANGED: &str = "(sensitive, unchanged)";
/// Sensitive values shorter than this are not searched for in free text.
pub const MIN_SCRUB_LEN: usize = 4;

/// Names of the parameters marked `sensitive: true`.
pub fn sensitive_names(params: &[Parameter]) -> BTreeSet<String> {
    params
        .iter()
        .filter(|p| p.is_sensitive())
        .map(|p| p.name.clone())
        .collect()
}

/// Replaces the values of sensitive parameters by [`MASK`].
pub fn mask_parameters(values: &mut BTreeMap<String, String>, sensitive: &BTreeSet<String>) {
    for (name, value) in values.iter_mut() {
        if sensitive.contains(name) {
            *value = MASK.to_string();
        }
    }
}

/// The values of sensitive parameters worth searching for in free text (see [`scrub`]).
pub fn secret_values<'a>(
    values: impl IntoIterator<Item = (&'a String, &'a String)>,
    sensitive: &BTreeSet<String>,
) -> Vec<String> {
    let mut out: Vec<String> = values
        .into_iter()
        .filter(|(name, v)| sensitive.contains(*name) && v.len() >= MIN_SCRUB_LEN)
        .map(|(_, v)| v.clone())
        .collect();
    // Longest first, so a value containing another is replaced whole.
    out.sort_by_key(|v| std::cmp::Reverse(v.len()));
    out.dedup();
    out
}

/// `text` with every occurrence of a secret replaced by [`MASK`].
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.len() >= MIN_SCRUB_LEN && out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    out
}

/// A live Instance as kudo shows it: sensitive parameters masked in its spec and in the
/// engine's snapshot annotation, and their values scrubbed from status messages.
pub fn mask_instance(inst: &mut Instance, sensitive: &BTreeSet<String>) {
    let mut secrets = secret_values(&inst.spec.parameters, sensitive);
    mask_parameters(&mut inst.spec.parameters, sensitive);
    if let Some(annotations) = inst.metadata.annotations.as_mut()
        && let Some(raw) = annotations.get_mut(LAST_APPLIED_ANNOTATION)
    {
        match serde_json::from_str::<Snapshot>(raw) {
            Ok(mut snap) => {
                secrets.extend(secret_values(&snap.parameters, sensitive));
                mask_parameters(&mut snap.parameters, sensitive);
                *raw = serde_json::to_string(&snap).unwrap_or_else(|_| MASK.to_string());
            }
            // Unreadable: it may hold anything.
            Err(_) => *raw = MASK.to_string(),
        }
    }
    secrets.sort_by_key(|v| std::cmp::Reverse(v.len()));
    if secrets.is_empty() {
        return;
    }
    if let Some(status) = inst.status.as_mut() {
        let mut v = serde_json::to_value(&*status).unwrap_or(Value::Null);
        scrub_strings(&mut v, &secrets);
        if let Ok(s) = serde_json::from_value(v) {
            *status = s;
        }
    }
}

/// An OperatorVersion as kudo shows it: defaults of sensitive parameters masked.
pub fn mask_operator_version(ov: &mut OperatorVersion) {
    for p in &mut ov.spec.parameters {
        if p.is_sensitive() && p.default.is_some() {
            p.default = Some(MASK.to_string());
        }
    }
}

/// Every string inside `v` scrubbed of `secrets`.
pub fn scrub_strings(v: &mut Value, secrets: &[String]) {
    match v {
        Value::String(s) => {
            let clean = scrub(s, secrets);
            if clean != *s {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| scrub_strings(i, secrets)),
        Value::Object(map) => map.values_mut().for_each(|i| scrub_strings(i, secrets)),
        _ => {}
    }
}

fn is_secret(obj: &Value) -> bool {
    obj.get("kind").and_then(Value::as_str) == Some("Secret")
        && obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|a| a == "v1")
}

/// The two sides of a Secret's diff with every `data`/`stringData` value replaced by a
/// marker: [`MASK_CHANGED`] where the key's value differs between `old` and `new` (or
/// exists on one side only), [`MASK_UNCHANGED`] where it is the same. Keys stay visible.
/// `stringData` is compared as the `data` it becomes. Objects that are not Secrets are left
/// alone.
pub fn mask_secret_pair(old: Option<&mut Value>, new: Option<&mut Value>) {
    let side = |v: &Option<&mut Value>| -> Option<BTreeMap<String, Value>> {
        let v = v.as_deref()?;
        is_secret(v).then(|| secret_entries(v))
    };
    let (o, n) = (side(&old), side(&new));
    if o.is_none() && n.is_none() {
        return;
    }
    let empty = BTreeMap::new();
    let (o_ref, n_ref) = (o.as_ref().unwrap_or(&empty), n.as_ref().unwrap_or(&empty));
    for (this, other, v) in [(o_ref, n_ref, old), (n_ref, o_ref, new)] {
        let Some(v) = v else { continue };
        if !is_secret(v) {
            continue;
        }
        for field in ["data", "stringData"] {
            let Some(map) = v.get_mut(field).and_then(Value::as_object_mut) else {
                continue;
            };
            for (key, value) in map.iter_mut() {
                let same = this.get(key).is_some() && this.get(key) == other.get(key);
                *value = Value::String(if same { MASK_UNCHANGED } else { MASK_CHANGED }.into());
            }
        }
    }
}

/// A Secret's keys and their values as `data` would hold them (base64 of `stringData`).
fn secret_entries(v: &Value) -> BTreeMap<String, Value> {
    use base64::Engine as _;
    let mut out = BTreeMap::new();
    if let Some(data) = v.get("data").and_then(Value::as_object) {
        for (k, val) in data {
            out.insert(k.clone(), val.clone());
        }
    }
    if let Some(data) = v.get("stringData").and_then(Value::as_object) {
        for (k, val) in data {
            let encoded = match val {
                Value::String(s) => {
                    Value::String(base64::engine::general_purpose::STANDARD.encode(s))
                }
                other => other.clone(),
            };
            out.insert(k.clone(), encoded);
        }
    }
    out
}

/// The sensitive values of the running control plane's desired state, for the panic hook.
static PROCESS_SECRETS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Remembers the values [`install_panic_hook`] scrubs from panic messages.
pub fn set_process_secrets(secrets: Vec<String>) {
    *PROCESS_SECRETS.write().unwrap_or_else(|p| p.into_inner()) = secrets;
}

/// A panic message as the hook prints it: scrubbed of the process's sensitive values.
pub fn scrub_panic_message(message: &str) -> String {
    let secrets = PROCESS_SECRETS.read().unwrap_or_else(|p| p.into_inner());
    scrub(message, &secrets)
}

/// Replaces the default panic hook, which prints the raw panic message to stderr (a panic
/// in a template function quotes the text it was given, possibly a sensitive value), by one
/// that prints it scrubbed of the values given to [`set_process_secrets`].
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "(a panic without a message)".to_string()
        };
        let message = scrub_panic_message(&message);
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => format!("\n{backtrace}"),
            _ => String::new(),
        };
        eprintln!(
            "thread '{}' panicked at {at}:\n{message}{backtrace}",
            thread.name().unwrap_or("<unnamed>")
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(n: &[&str]) -> BTreeSet<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sensitive_parameters_are_masked_in_spec_snapshot_and_messages() {
        let snapshot = json!({"operatorVersion": "db-1", "parameters": {"PASSWORD": "hunter2-secret", "SIZE": "3"}});
        let mut inst: Instance = serde_json::from_value(json!({
            "apiVersion": "kudo.dev/v1beta1", "kind": "Instance",
            "metadata": {"name": "db", "namespace": "ns",
                "annotations": {LAST_APPLIED_ANNOTATION: snapshot.to_string()}},
            "spec": {"operatorVersion": {"name": "db-1"},
                "parameters": {"PASSWORD": "hunter2-secret", "SIZE": "3"}},
            "status": {"conditions": [{"type": "Ready", "status": "False",
                "message": "bad value hunter2-secret"}]}
        }))
        .expect("instance");
        mask_instance(&mut inst, &names(&["PASSWORD"]));
        let text = serde_json::to_string(&inst).expect("json");
        assert!(!text.contains("hunter2-secret"), "{text}");
        assert_eq!(inst.spec.parameters["PASSWORD"], MASK);
        assert_eq!(inst.spec.parameters["SIZE"], "3");
        assert!(text.contains(MASK), "{text}");
    }

    #[test]
    fn secret_values_become_changed_or_unchanged_markers_with_keys_kept() {
        let mut old = json!({"apiVersion": "v1", "kind": "Secret",
            "data": {"user": "YWRtaW4=", "password": "b2xkLXB3"}});
        // stringData "admin" is data "YWRtaW4=": unchanged.
        let mut new = json!({"apiVersion": "v1", "kind": "Secret",
            "data": {"password": "bmV3LXB3"}, "stringData": {"user": "admin", "token": "t0k3n-value"}});
        mask_secret_pair(Some(&mut old), Some(&mut new));
        assert_eq!(old["data"]["user"], MASK_UNCHANGED);
        assert_eq!(old["data"]["password"], MASK_CHANGED);
        assert_eq!(new["stringData"]["user"], MASK_UNCHANGED);
        assert_eq!(new["data"]["password"], MASK_CHANGED);
        assert_eq!(new["stringData"]["token"], MASK_CHANGED);
        let text = format!("{old}{new}");
        for secret in ["YWRtaW4=", "b2xkLXB3", "bmV3LXB3", "t0k3n-value", "admin"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        // A ConfigMap is not touched.
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}});
        mask_secret_pair(Some(&mut cm), None);
        assert_eq!(cm["data"]["a"], "b");
    }

    #[test]
    fn panic_messages_are_scrubbed_of_the_process_secrets() {
        set_process_secrets(vec!["ééé-sensitive-text".to_string()]);
        let m = scrub_panic_message("byte index 3 is not a char boundary of `ééé-sensitive-text`");
        assert_eq!(
            m,
            format!("byte index 3 is not a char boundary of `{MASK}`")
        );
        set_process_secrets(Vec::new());
    }

    #[test]
    fn short_values_are_not_searched_for_in_free_text() {
        let secrets = secret_values(
            &BTreeMap::from([
                ("PIN".to_string(), "12".to_string()),
                ("PW".to_string(), "longer-secret".to_string()),
            ]),
            &names(&["PIN", "PW"]),
        );
        assert_eq!(secrets, vec!["longer-secret".to_string()]);
        assert_eq!(
            scrub("a longer-secret b 12", &secrets),
            format!("a {MASK} b 12")
        );
    }
}
