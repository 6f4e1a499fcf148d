//! A spec that cannot be built, or an object our types cannot read, becomes a `Ready=False`
//! condition and a Warning Event, and waits for the next change instead of retrying in a loop.

use kube::ResourceExt;
use kube::api::ApiResource;
use kube::core::DeserializeGuard;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, api::DynamicObject};
use serde::de::DeserializeOwned;

use super::apply::api_for;
use super::context::Context;
use super::error::ReconcileError;
use super::status::{OwnStatus, Readiness, set_ready, write_status};
use crate::operator::SpecError;

/// Says on `object`, whose spec cannot be built, why.
pub(super) async fn invalid_spec<K, S>(
    ctx: &Context,
    object: &K,
    current: Option<&S>,
    error: &SpecError,
    kind: &'static str,
) -> Result<Action, ReconcileError>
where
    K: Resource<DynamicType = ()>,
    S: OwnStatus,
{
    report(ctx, &object.object_ref(&()), &object.name_any(), error).await;
    let generation = object.meta().generation;
    write_status(&ctx.client, object, current, |status| set_ready(status, &Readiness::invalid(error), generation))
        .await?;
    ctx.metrics.count(kind, "invalid");
    Ok(Action::await_change())
}

/// Says on `object`, which our types cannot read (written before an upgrade, say), why.
pub(super) async fn unreadable<K, S>(
    ctx: &Context,
    object: &DeserializeGuard<K>,
    invalid: &InvalidObject,
    kind: &'static str,
) -> Result<Action, ReconcileError>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
    S: OwnStatus,
{
    // Its status as the cluster holds it, untyped since its spec does not fit our types.
    let name = object.name_any();
    let api = api_for(&ctx.client, &ApiResource::erase::<K>(&()), object.meta().namespace.as_deref());
    let live: Option<DynamicObject> = api
        .get_opt(&name)
        .await
        .map_err(|source| ReconcileError::Dereference { what: format!("{kind} {name}"), source })?;
    let current: Option<S> =
        live.and_then(|live| live.data.get("status").cloned()).and_then(|status| serde_json::from_value(status).ok());
    invalid_spec(ctx, object, current.as_ref(), &SpecError::Unreadable(invalid.error.clone()), kind).await
}

async fn report(ctx: &Context, reference: &k8s_openapi::api::core::v1::ObjectReference, name: &str, error: &SpecError) {
    tracing::warn!(object = %name, %error, "invalid spec");
    let event = Event {
        type_: EventType::Warning,
        reason: error.reason().into(),
        note: Some(error.to_string().chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(failure) = ctx.recorder.publish(&event, reference).await {
        tracing::warn!(error = %failure, "could not publish an Event");
    }
}
