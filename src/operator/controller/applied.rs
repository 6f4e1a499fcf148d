//! What was last applied to each child, so an unchanged child is not applied again.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::operator::{Child, FIELD_MANAGER};

/// The digest of what was last applied to each child and the version of the child it left:
/// while both still hold, applying again would change nothing, so a periodic refresh of an idle
/// object makes no writes. The version is our field manager's entry in the child's
/// `managedFields`, which only moves when the fields we own do: a status update (the
/// aggregator's on an APIService, KEDA's on a ScaledObject) leaves it alone, while anyone else
/// taking or changing one of our fields moves it, and the next reconcile (the child's watch
/// starts one) applies again.
#[derive(Debug, Default)]
pub(super) struct AppliedChildren(Mutex<HashMap<String, ([u8; 32], String)>>);

impl AppliedChildren {
    pub(super) fn key(child: &Child) -> String {
        let meta = &child.object.metadata;
        format!(
            "{}/{}/{}/{}",
            child.resource.group,
            child.resource.kind,
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        )
    }

    pub(super) fn digest(child: &Child) -> [u8; 32] {
        use sha2::Digest as _;
        // Serializing a JSON value cannot fail; an empty body only means "apply again".
        sha2::Sha256::digest(serde_json::to_vec(&child.object).unwrap_or_default()).into()
    }

    /// The version a child was left at by the last apply of what `digest` describes.
    pub(super) fn version_after(&self, key: &str, digest: &[u8; 32]) -> Option<String> {
        let applied = self.0.lock().ok()?;
        applied.get(key).filter(|(last, _)| last == digest).map(|(_, version)| version.clone())
    }

    pub(super) fn record(&self, key: String, digest: [u8; 32], version: Option<String>) {
        if let Ok(mut applied) = self.0.lock() {
            match version {
                Some(version) => applied.insert(key, (digest, version)),
                None => applied.remove(&key),
            };
        }
    }
}

/// The version [`AppliedChildren`] compares: a digest of our field manager's `Apply` entry in
/// the object's `managedFields`, if it has one.
pub(super) fn child_version(meta: &kube::api::ObjectMeta) -> Option<String> {
    use sha2::Digest as _;
    let ours = meta.managed_fields.as_ref()?.iter().find(|entry| {
        entry.manager.as_deref() == Some(FIELD_MANAGER)
            && entry.operation.as_deref() == Some("Apply")
            && entry.subresource.as_deref().unwrap_or_default().is_empty()
    })?;
    let text = serde_json::to_vec(&(&ours.api_version, &ours.fields_v1)).ok()?;
    Some(hex::encode(sha2::Sha256::digest(text)))
}
