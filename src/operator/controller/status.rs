//! Status as typed structs, written by server-side apply with the one field manager, and only
//! when it changed: a reconcile or demand refresh that changes nothing writes nothing.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{ApiResource, Patch, PatchParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::apply::api_for;
use super::error::ReconcileError;
use crate::crd::{ScaledActionRunnerCoreStatus, ScaledActionRunnerStatus};
use crate::operator::{FIELD_MANAGER, SpecError};

/// The only condition the operator writes.
const READY: &str = "Ready";
/// Longest condition message kept.
const MESSAGE_LIMIT: usize = 1024;

/// What the `Ready` condition says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Readiness {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Readiness {
    pub fn ready(message: String) -> Self {
        Self { ready: true, reason: "Applied", message }
    }

    pub fn not_ready(reason: &'static str, message: String) -> Self {
        Self { ready: false, reason, message }
    }

    pub fn invalid(error: &SpecError) -> Self {
        Self::not_ready(error.reason(), error.to_string())
    }
}

/// A status type of ours: which of its fields this operator writes, and its `Ready` condition.
pub(super) trait OwnStatus: Default + Clone + PartialEq + Serialize + DeserializeOwned {
    /// The fields this operator writes; the rest belongs to other managers (or to nobody).
    fn ours(&self) -> Self;
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    fn set_observed_generation(&mut self, generation: Option<i64>);
}

impl OwnStatus for ScaledActionRunnerStatus {
    fn ours(&self) -> Self {
        Self { conditions: ready_only(&self.conditions), referenced_secrets: BTreeMap::new(), ..self.clone() }
    }

    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }

    fn set_observed_generation(&mut self, generation: Option<i64>) {
        self.observed_generation = generation;
    }
}

impl OwnStatus for ScaledActionRunnerCoreStatus {
    fn ours(&self) -> Self {
        Self { conditions: ready_only(&self.conditions), ..self.clone() }
    }

    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }

    fn set_observed_generation(&mut self, generation: Option<i64>) {
        self.observed_generation = generation;
    }
}

fn ready_only(conditions: &[Condition]) -> Vec<Condition> {
    conditions.iter().filter(|condition| condition.type_ == READY).cloned().collect()
}

/// Sets the `Ready` condition and the generation it was computed from; the condition keeps its
/// transition time while its status holds.
pub(super) fn set_ready<S: OwnStatus>(status: &mut S, readiness: &Readiness, generation: Option<i64>) {
    let value = if readiness.ready { "True" } else { "False" };
    let conditions = status.conditions_mut();
    let since = conditions
        .iter()
        .find(|condition| condition.type_ == READY && condition.status == value)
        .map_or_else(|| Time(jiff::Timestamp::now()), |condition| condition.last_transition_time.clone());
    *conditions = vec![Condition {
        type_: READY.into(),
        status: value.into(),
        reason: readiness.reason.into(),
        message: readiness.message.chars().take(MESSAGE_LIMIT).collect(),
        observed_generation: generation,
        last_transition_time: since,
    }];
    status.set_observed_generation(generation);
}

/// Applies the part of `object`'s status this operator writes, as `update` leaves it, unless
/// `current` already says all of it: then nothing is written, so nothing wakes up.
pub(super) async fn write_status<K, S>(
    client: &Client,
    object: &K,
    current: Option<&S>,
    update: impl FnOnce(&mut S),
) -> Result<(), ReconcileError>
where
    K: Resource<DynamicType = ()>,
    S: OwnStatus,
{
    let current = current.map(S::ours).unwrap_or_default();
    let mut desired = current.clone();
    update(&mut desired);
    if desired == current {
        return Ok(());
    }
    let resource = ApiResource::erase::<K>(&());
    let name = object.meta().name.as_deref().ok_or(ReconcileError::Unnamed)?;
    // Untyped, so that the answer about an object our types cannot read still parses.
    let api = api_for(client, &resource, object.meta().namespace.as_deref());
    let body = json!({ "apiVersion": resource.api_version, "kind": resource.kind, "status": desired });
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(ReconcileError::Status)?;
    Ok(())
}

/// A condition message followed by what is not honoured as written.
pub(super) fn with_warnings(message: String, warnings: &[String]) -> String {
    if warnings.is_empty() {
        return message;
    }
    format!("{message}; but: {}", warnings.join("; "))
}
