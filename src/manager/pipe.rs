//! Pipe tasks (KUDO's way to hand a file generated at run time, e.g. a certificate, to later
//! templates): naming of the ConfigMap/Secret artifacts, the `.Pipes` map, and copying a
//! file out of a running pod.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::api::OperatorVersionSpec;

/// Largest file a pipe copies (a ConfigMap or Secret holds about 1 MiB).
pub const MAX_PIPE_BYTES: usize = 1024 * 1024;

/// The artifact's name: stable for (instance, task, key), so every template can know it
/// before the pipe has run; a DNS-1123 name of at most 63 characters.
pub fn artifact_name(instance: &str, task: &str, key: &str) -> String {
    let raw = format!("{instance}-{task}-{key}").to_ascii_lowercase();
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.len() > 63 {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(raw.as_bytes());
        let suffix: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        name.truncate(54);
        name = format!("{}-{suffix}", name.trim_end_matches('-'));
    }
    name.trim_matches('-').to_string()
}

/// `.Pipes`: every pipe key of the operator version → its artifact's name.
pub fn names(ov: &OperatorVersionSpec, instance: &str) -> BTreeMap<String, String> {
    ov.tasks
        .iter()
        .filter(|t| t.kind == crate::api::TaskKind::Pipe)
        .flat_map(|t| {
            t.spec
                .pipe
                .iter()
                .map(move |p| (p.key.clone(), artifact_name(instance, &t.name, &p.key)))
        })
        .collect()
}

/// The ConfigMap or Secret holding a piped file under its base name.
pub fn artifact(kind: &str, name: &str, file: &str, content: &[u8]) -> Value {
    let key = file.rsplit('/').next().unwrap_or(file);
    let data = if kind == "Secret" {
        json!({ key: base64::engine::general_purpose::STANDARD.encode(content) })
    } else {
        json!({ key: String::from_utf8_lossy(content) })
    };
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}, "data": data})
}

/// Reads `file` from the pod's first container with `cat` over exec, refusing files over
/// [`MAX_PIPE_BYTES`].
pub async fn read_file(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    file: &str,
) -> Result<Vec<u8>, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = AttachParams::default()
        .stdout(true)
        .stderr(false)
        .stdin(false);
    let mut process = pods
        .exec(pod, vec!["cat", file], &params)
        .await
        .map_err(|e| format!("pipe pod {pod}: cannot read {file}: {e}"))?;
    let mut stdout = process
        .stdout()
        .ok_or_else(|| format!("pipe pod {pod}: no stdout from cat {file}"))?;
    let mut content = Vec::new();
    let mut limited = (&mut stdout).take(MAX_PIPE_BYTES as u64 + 1);
    limited
        .read_to_end(&mut content)
        .await
        .map_err(|e| format!("pipe pod {pod}: reading {file}: {e}"))?;
    process
        .join()
        .await
        .map_err(|e| format!("pipe pod {pod}: cat {file}: {e}"))?;
    if content.len() > MAX_PIPE_BYTES {
        return Err(format!(
            "pipe pod {pod}: {file} is larger than {MAX_PIPE_BYTES} bytes"
        ));
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names_are_stable_dns_names() {
        assert_eq!(artifact_name("zk", "gen-cert", "Cert"), "zk-gen-cert-cert");
        assert_eq!(artifact_name("zk", "gen_cert", "a.b"), "zk-gen-cert-a-b");
        let long = artifact_name(&"x".repeat(60), "task", "key");
        assert!(long.len() <= 63, "{long}");
        assert_eq!(long, artifact_name(&"x".repeat(60), "task", "key"));
        assert_ne!(long, artifact_name(&"x".repeat(60), "task", "other"));
    }

    #[test]
    fn pipes_map_every_key_and_artifacts_hold_the_file() {
        let ov: OperatorVersionSpec = serde_saphyr::from_str(
            "tasks:\n  - name: gen\n    kind: Pipe\n    spec:\n      pod: pod.yaml\n      pipe:\n        - {file: /tmp/cert.pem, kind: Secret, key: Cert}\n        - {file: /tmp/ca.pem, kind: ConfigMap, key: Ca}\n",
        )
        .expect("spec");
        let pipes = names(&ov, "inst");
        assert_eq!(pipes.get("Cert").map(String::as_str), Some("inst-gen-cert"));
        assert_eq!(pipes.get("Ca").map(String::as_str), Some("inst-gen-ca"));
        let secret = artifact("Secret", "n", "/tmp/cert.pem", b"PEM");
        assert_eq!(secret["data"]["cert.pem"], "UEVN");
        let cm = artifact("ConfigMap", "n", "/tmp/ca.pem", b"CA");
        assert_eq!(cm["data"]["ca.pem"], "CA");
    }
}
