//! One representation for every object the operator writes, typed (k8s-openapi) or not (KEDA):
//! its API resource, for applying it, and its body, for applying or printing it.

use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject};
use kube::core::TypeMeta;
use kube::{Resource, ResourceExt};
use serde::Serialize;

use super::MANAGED_BY;

/// An object to apply: its API resource and its full body (apiVersion, kind, metadata, rest).
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    pub resource: ApiResource,
    pub object: DynamicObject,
}

/// Why a custom resource's spec cannot be turned into objects. Shown in the resource's `Ready`
/// condition and an Event; fixing the spec is the only remedy, so it is not retried in a loop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("spec.{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("spec.runner.patch is not a valid RFC 6902 JSON patch: {0}")]
    PatchParse(String),
    #[error("spec.runner.patch does not apply to the StatefulSet's spec: {0}")]
    PatchApply(String),
    #[error("the patched StatefulSet spec is no longer a StatefulSet spec: {0}")]
    PatchedShape(String),
    #[error("the object cannot be read: {0}")]
    Unreadable(String),
}

impl SpecError {
    /// A short CamelCase reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid { .. } | Self::Unreadable(_) => "InvalidSpec",
            Self::PatchParse(_) | Self::PatchApply(_) | Self::PatchedShape(_) => "InvalidPatch",
        }
    }
}

impl Child {
    /// Wraps a typed Kubernetes object.
    pub fn typed<K>(object: &K) -> Self
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        let resource = ApiResource::erase::<K>(&());
        let value = serde_json::to_value(object).unwrap_or_default();
        let metadata = object.meta().clone();
        let data = match value {
            serde_json::Value::Object(mut map) => {
                for key in ["apiVersion", "kind", "metadata"] {
                    map.remove(key);
                }
                serde_json::Value::Object(map)
            }
            other => other,
        };
        let types = TypeMeta { api_version: resource.api_version.clone(), kind: resource.kind.clone() };
        Self { resource, object: DynamicObject { types: Some(types), metadata, data } }
    }

    /// `kind namespace/name`, for logs and messages.
    pub fn describe(&self) -> String {
        match self.object.namespace() {
            Some(namespace) => format!("{} {}/{}", self.resource.kind, namespace, self.object.name_any()),
            None => format!("{} {}", self.resource.kind, self.object.name_any()),
        }
    }

    /// The body as JSON, with apiVersion and kind first.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(&self.object).unwrap_or_default()
    }
}

/// Labels on every object made for `instance` (a runner's or the core's name), plus `component`.
pub fn labels(instance: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "github-action-autoscaler".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), instance.to_owned()),
        ("app.kubernetes.io/component".to_owned(), component.to_owned()),
        (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
    ])
}

/// The subset of [`labels`] that selects pods (stable across versions of the operator).
pub fn selector_labels(instance: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "github-action-autoscaler".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), instance.to_owned()),
        ("app.kubernetes.io/component".to_owned(), component.to_owned()),
    ])
}
