//! What was last applied to each child, so an unchanged child is not applied again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::operator::{Child, FIELD_MANAGER};

/// The digest of what was last applied to each child and the version of the child it left:
/// while both still hold, applying again would change nothing, so a periodic refresh of an idle
/// object makes no writes. The version is our field manager's entry in the child's
/// `managedFields`, which only moves when the fields we own do: a status update (the
/// aggregator's on an APIService, KEDA's on a ScaledObject) leaves it alone, while anyone else
/// taking or changing one of our fields moves it, and the next reconcile (the child's watch
/// starts one) applies again.
///
/// Entries not used for [`FORGET_AFTER`] are dropped: a deleted owner's children are not
/// reconciled again.
#[derive(Debug, Default)]
pub(super) struct AppliedChildren(Mutex<HashMap<String, AppliedChild>>);

/// The digest of what was applied, the version it left, and when the entry was last used.
type AppliedChild = ([u8; 32], String, Instant);

/// Longer than three periodic refreshes of a Ready object, so only what no reconcile looks at
/// any more is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3 * 600);

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
        let mut applied = self.0.lock().ok()?;
        let (_, version, used) = applied.get_mut(key).filter(|(last, _, _)| last == digest)?;
        *used = Instant::now();
        Some(version.clone())
    }

    pub(super) fn record(&self, key: String, digest: [u8; 32], version: Option<String>) {
        if let Ok(mut applied) = self.0.lock() {
            let now = Instant::now();
            applied.retain(|_, (_, _, used)| now.saturating_duration_since(*used) < FORGET_AFTER);
            match version {
                Some(version) => applied.insert(key, (digest, version, now)),
                None => applied.remove(&key),
            };
        }
    }
}

/// The set of children each owner (by uid) was last pruned down to. Only the operator creates
/// an owner's children, so while an owner still wants the same set, listing every kind again
/// would find nothing to delete, and a periodic refresh lists nothing. A changed set, and the
/// first look after the operator starts, prune as before. Owners not looked at for
/// [`FORGET_AFTER`] are dropped (a deleted owner's children go with it, by owner reference).
#[derive(Debug, Default)]
pub(super) struct PrunedSets(Mutex<HashMap<String, ([u8; 32], Instant)>>);

impl PrunedSets {
    /// A digest of which children `wanted` names, whatever their content.
    pub(super) fn digest(wanted: &[Child]) -> [u8; 32] {
        use sha2::Digest as _;
        let mut keys: Vec<String> = wanted.iter().map(AppliedChildren::key).collect();
        keys.sort_unstable();
        sha2::Sha256::digest(keys.join("\n")).into()
    }

    /// Whether `owner` was last pruned down to the set `digest` describes.
    pub(super) fn holds(&self, owner: &str, digest: &[u8; 32]) -> bool {
        let Ok(mut pruned) = self.0.lock() else { return false };
        match pruned.get_mut(owner) {
            Some((last, used)) if last == digest => {
                *used = Instant::now();
                true
            }
            _ => false,
        }
    }

    pub(super) fn record(&self, owner: String, digest: [u8; 32]) {
        if let Ok(mut pruned) = self.0.lock() {
            let now = Instant::now();
            pruned.retain(|_, (_, used)| now.saturating_duration_since(*used) < FORGET_AFTER);
            pruned.insert(owner, (digest, now));
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
