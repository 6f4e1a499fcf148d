//! The parts of KEDA's `keda.sh/v1alpha1` resources the operator writes: ScaledObject,
//! TriggerAuthentication and ClusterTriggerAuthentication. Field names follow KEDA's CRDs.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// KEDA `ScaledObject`: scales a workload on triggers.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(group = "keda.sh", version = "v1alpha1", kind = "ScaledObject", namespaced, schema = "disabled")]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectSpec {
    pub scale_target_ref: ScaleTargetRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_replica_count: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replica_count: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub polling_interval: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooldown_period: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advanced: Option<Advanced>,
    pub triggers: Vec<Trigger>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Advanced {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub horizontal_pod_autoscaler_config: Option<HpaConfig>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HpaConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication_ref: Option<AuthenticationRef>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationRef {
    pub name: String,
    /// `TriggerAuthentication` (default) or `ClusterTriggerAuthentication`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// KEDA `TriggerAuthentication`: where a trigger's credentials come from, in its namespace.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(group = "keda.sh", version = "v1alpha1", kind = "TriggerAuthentication", namespaced, schema = "disabled")]
#[serde(rename_all = "camelCase")]
pub struct TriggerAuthenticationSpec {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret_target_ref: Vec<SecretTargetRef>,
}

/// KEDA `ClusterTriggerAuthentication`: the same, cluster-wide; its Secrets are read from
/// KEDA's own namespace.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(group = "keda.sh", version = "v1alpha1", kind = "ClusterTriggerAuthentication", schema = "disabled")]
#[serde(rename_all = "camelCase")]
pub struct ClusterTriggerAuthenticationSpec {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret_target_ref: Vec<SecretTargetRef>,
}

/// One trigger parameter read from a Secret's key.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretTargetRef {
    pub parameter: String,
    pub name: String,
    pub key: String,
}

impl SecretTargetRef {
    pub fn new(parameter: &str, name: &str, key: &str) -> Self {
        Self { parameter: parameter.into(), name: name.into(), key: key.into() }
    }
}

/// The TLS parameters both API-server triggers need, from a Secret laid out as cert-manager
/// writes it: `ca` / `cert` / `key` for metrics-api, `caCert` / `tlsClientCert` /
/// `tlsClientKey` for external-push.
pub fn tls_parameters(secret: &str) -> Vec<SecretTargetRef> {
    [
        ("ca", "ca.crt"),
        ("cert", "tls.crt"),
        ("key", "tls.key"),
        ("caCert", "ca.crt"),
        ("tlsClientCert", "tls.crt"),
        ("tlsClientKey", "tls.key"),
    ]
    .into_iter()
    .map(|(parameter, key)| SecretTargetRef::new(parameter, secret, key))
    .collect()
}
