//! Requests on kinds compiled into kudo (its own Instance and OperatorVersion): typed in and
//! out, with no discovery (the kind is known), and errors in the same bounded categories as
//! every other request of the cluster layer.

use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Cluster, ErrorKind, Result};

/// A namespaced kind whose type is compiled in.
pub trait NamespacedResource:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> NamespacedResource for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// `Kind namespace/name`, as errors name the object.
fn describe<K: NamespacedResource>(namespace: &str, name: &str) -> String {
    format!("{} {namespace}/{name}", K::kind(&()))
}

impl Cluster {
    /// The object `namespace/name` of kind `K`, or `None` when it does not exist.
    pub async fn get_resource_opt<K: NamespacedResource>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<K>> {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let object = describe::<K>(namespace, name);
        match self.call("get", &object, api.get(name)).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// JSON merge patch (RFC 7386) of `namespace/name`. With `expect_version`, the patch
    /// carries that `metadata.resourceVersion`: the server refuses it
    /// ([`ErrorKind::Conflict`]) when the object changed since that version was read.
    /// Returns the object as written (its new resourceVersion included).
    pub async fn merge_patch_resource<K: NamespacedResource>(
        &self,
        namespace: &str,
        name: &str,
        patch: &Value,
        expect_version: Option<&str>,
    ) -> Result<K> {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let object = describe::<K>(namespace, name);
        let body = match expect_version {
            Some(version) => guarded(patch, version),
            None => patch.clone(),
        };
        self.call(
            "patch",
            &object,
            api.patch(name, &PatchParams::default(), &Patch::Merge(&body)),
        )
        .await
    }

    /// JSON merge patch of the `status` subresource of `namespace/name`. Returns the object
    /// as written.
    pub async fn merge_patch_resource_status<K: NamespacedResource>(
        &self,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<K> {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let object = describe::<K>(namespace, name);
        self.call(
            "patch status",
            &object,
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch)),
        )
        .await
    }
}

/// `patch` with `metadata.resourceVersion` set to `version` (a merge patch carrying it is
/// refused when the object is at another version).
fn guarded(patch: &Value, version: &str) -> Value {
    let mut body = patch.clone();
    if let Some(fields) = body.as_object_mut() {
        let meta = fields
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("resourceVersion".into(), Value::String(version.into()));
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_guarded_patch_carries_the_version_read_and_keeps_the_rest() {
        let patch = json!({"metadata": {"finalizers": ["a"]}, "spec": {"x": 1}});
        assert_eq!(
            guarded(&patch, "42"),
            json!({"metadata": {"finalizers": ["a"], "resourceVersion": "42"}, "spec": {"x": 1}})
        );
        assert_eq!(
            guarded(&json!({"spec": {}}), "7"),
            json!({"metadata": {"resourceVersion": "7"}, "spec": {}})
        );
    }
}
