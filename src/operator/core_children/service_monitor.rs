//! The minimal Prometheus operator `ServiceMonitor` type the core writes.

use k8s_openapi::api::core::v1::SecretKeySelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// The minimal Prometheus operator `ServiceMonitor` the core writes: scrape the API server's
/// Service on its `https` port with a client certificate (the plain `http` port serves only
/// webhooks and probes). Field names follow the `monitoring.coreos.com/v1` CRD.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(group = "monitoring.coreos.com", version = "v1", kind = "ServiceMonitor", namespaced, schema = "disabled")]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    pub selector: LabelSelector,
    pub endpoints: Vec<ServiceMonitorEndpoint>,
}

/// One scraped port of a `ServiceMonitor`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorEndpoint {
    pub port: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<ServiceMonitorTls>,
}

/// How Prometheus verifies the API server and which client certificate it presents; the
/// Secrets are read from the ServiceMonitor's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorTls {
    pub ca: SecretOrConfigMap,
    pub cert: SecretOrConfigMap,
    pub key_secret: SecretKeySelector,
    pub server_name: String,
}

/// A key of a Secret (the only source the operator uses).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
pub struct SecretOrConfigMap {
    pub secret: SecretKeySelector,
}
