//! `ScaledActionRunnerCore`: the cluster-wide singleton that configures the API server, its
//! cache and the namespaces watched for `ScaledActionRunner`s.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::{DurationError, GoDuration};
use super::{conditions_schema, reflow_descriptions};

/// The only name a `ScaledActionRunnerCore` is acted on under; any other is ignored, because
/// the cluster can hold only one `v1beta1.custom.metrics.k8s.io` APIService.
pub const CORE_NAME: &str = "core";

/// How long demand read from GitHub is reused when `cacheWindow` is not set. Webhooks carry
/// demand; GitHub is asked only to repair what they missed, so this is minutes, not seconds.
pub const DEFAULT_CACHE_WINDOW: Duration = Duration::from_secs(5 * 60);
/// How long an empty queue is reused when `cacheWindowWhenEmpty` is not set: the longest a lost
/// webhook for an idle repository goes unrepaired.
pub const DEFAULT_CACHE_WINDOW_WHEN_EMPTY: Duration = Duration::from_secs(30 * 60);
/// How often every `ScaledActionRunner` is re-listed when `resyncInterval` is not set.
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(60);
/// Replicas of the API server and of memcached when not set.
pub const DEFAULT_REPLICAS: i32 = 2;
/// Namespace KEDA is installed in when `kedaNamespace` is not set.
pub const DEFAULT_KEDA_NAMESPACE: &str = "keda";

/// Cluster-wide configuration of the autoscaler: where its API server runs, how it caches
/// GitHub's answers and which namespaces it watches. Only the object named `core` is used.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
// Printer columns as JSON: clippy reads repeated `type_ = ..` keys as duplicated attributes.
#[kube(
    group = "runner.devjoes.com",
    version = "v1alpha1",
    kind = "ScaledActionRunnerCore",
    plural = "scaledactionrunnercore",
    shortname = "sarc",
    status = "ScaledActionRunnerCoreStatus",
    derive = "PartialEq",
    doc = "ScaledActionRunnerCore configures the autoscaler cluster-wide. Only the object named \
           `core` is acted on.",
    printcolumn = r#"{"name": "API Server Namespace", "type": "string", "jsonPath": ".spec.apiServerNamespace", "description": "Namespace the API server runs in"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "Whether the API server and its dependencies are ready"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = reflow_descriptions)]
pub struct ScaledActionRunnerCoreSpec {
    /// Namespace the API server (and its cache) is deployed to.
    pub api_server_namespace: String,

    /// Name of the API server's Deployment and Service; the APIService points at this Service.
    pub api_server_name: String,

    /// Name of the Secret, in `apiServerNamespace`, holding the API server's TLS certificate
    /// (`tls.crt`, `tls.key` and `ca.crt`, as cert-manager writes them).
    pub ssl_cert_secret: String,

    /// Container image of the API server. Defaults to the image the operator was released with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server_image: Option<String>,

    /// Number of API server replicas. Default: 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server_replicas: Option<i32>,

    /// Extra command-line arguments appended to the API server's container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_server_extra_args: Vec<String>,

    /// Namespace holding the Secrets named by runners' `githubTokenSecret`. When empty, each
    /// runner's token Secret is read from the runner's own namespace. (Spelled as in the README.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server_pat_token_namespace: Option<String>,

    /// Whether the operator deploys the API server. Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_api_server: Option<bool>,

    /// Whether the operator deploys memcached for the API server. Default: true. When false,
    /// `memcacheServers` (and optionally credentials) must point at an existing instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_memcached: Option<bool>,

    /// Whether the operator creates the KEDA ClusterTriggerAuthentication (named after the API
    /// server) that gives KEDA its client certificate. Default: true. When false, create one of
    /// that name yourself: the runners' ScaledObjects refer to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_authentication: Option<bool>,

    /// Namespace of the Prometheus operator. When set, a ServiceMonitor is created for the API
    /// server; when missing, none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_namespace: Option<String>,

    /// Number of memcached replicas when `createMemcached` is true. Default: 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memcached_replicas: Option<i32>,

    /// Container image of memcached when `createMemcached` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memcached_image: Option<String>,

    /// Namespace KEDA is installed in. Default: `keda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keda_namespace: Option<String>,

    /// Whether to authenticate to memcached with SASL. Default: false (SASL can cause issues).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memcached_auth: Option<bool>,

    /// README spelling of `memcachedAuth` (capital M). Used only when `memcachedAuth` is unset.
    #[serde(rename = "MemcachedAuth", default, skip_serializing_if = "Option::is_none")]
    pub memcached_auth_capitalised: Option<bool>,

    /// Name of the Secret holding the password of an existing memcached. Only used when
    /// `createMemcached` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memcache_creds_secret: Option<String>,

    /// User name for an existing memcached. Only used when `createMemcached` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memcache_user: Option<String>,

    /// README spelling of `memcacheUser`. Used only when `memcacheUser` is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memcached_user: Option<String>,

    /// Comma-separated `host:port` list of an existing memcached. Only used when
    /// `createMemcached` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memcache_servers: Option<String>,

    /// How long demand read from GitHub is reused before asking again, as a duration string
    /// (`1m`, `90s`) or integer nanoseconds. Default (also when zero): 5m, since webhooks carry
    /// the demand and GitHub is only asked to repair what they missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_window: Option<GoDuration>,

    /// How long an empty queue read from GitHub is reused before asking again, as a duration
    /// string or integer nanoseconds. Longer than `cacheWindow` to save API credits on idle
    /// repositories. Default (also when zero): 30m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_window_when_empty: Option<GoDuration>,

    /// How often every ScaledActionRunner is listed again from the cluster, on top of the
    /// watch, as a duration string or integer nanoseconds. Default (also when zero): 1m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync_interval: Option<GoDuration>,

    /// Namespaces watched for ScaledActionRunners. Empty means all namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

/// Observed state of the `ScaledActionRunnerCore`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(transform = reflow_descriptions)]
pub struct ScaledActionRunnerCoreStatus {
    /// Latest observations of the core's state, one per `type` (for example `Ready`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` the status was computed from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A duration field's value, or `default` when it is unset or zero (as the original did).
fn duration_or(value: Option<&GoDuration>, default: Duration) -> Result<Duration, DurationError> {
    match value.map(GoDuration::as_duration).transpose()? {
        Some(duration) if !duration.is_zero() => Ok(duration),
        _ => Ok(default),
    }
}

impl ScaledActionRunnerCoreSpec {
    /// The memcached user, from `memcacheUser` or else its README spelling `memcachedUser`.
    pub fn memcache_user(&self) -> Option<&str> {
        self.memcache_user.as_deref().or(self.memcached_user.as_deref())
    }

    /// Whether to use SASL with memcached, from `memcachedAuth` or else its README spelling
    /// `MemcachedAuth`; false when neither is set.
    pub fn memcached_auth(&self) -> bool {
        self.memcached_auth.or(self.memcached_auth_capitalised).unwrap_or(false)
    }

    /// Whether to deploy the API server (default true).
    pub fn create_api_server(&self) -> bool {
        self.create_api_server.unwrap_or(true)
    }

    /// Whether to deploy memcached (default true).
    pub fn create_memcached(&self) -> bool {
        self.create_memcached.unwrap_or(true)
    }

    /// Whether to create KEDA's ClusterTriggerAuthentication (default true).
    pub fn create_authentication(&self) -> bool {
        self.create_authentication.unwrap_or(true)
    }

    /// API server replicas; [`DEFAULT_REPLICAS`] when unset or zero.
    pub fn api_server_replicas(&self) -> i32 {
        positive_or_default(self.api_server_replicas)
    }

    /// Memcached replicas; [`DEFAULT_REPLICAS`] when unset or zero.
    pub fn memcached_replicas(&self) -> i32 {
        positive_or_default(self.memcached_replicas)
    }

    /// KEDA's namespace; [`DEFAULT_KEDA_NAMESPACE`] when unset or empty.
    pub fn keda_namespace(&self) -> &str {
        self.keda_namespace.as_deref().filter(|namespace| !namespace.is_empty()).unwrap_or(DEFAULT_KEDA_NAMESPACE)
    }

    /// `cacheWindow`, or [`DEFAULT_CACHE_WINDOW`] when unset or zero.
    pub fn cache_window(&self) -> Result<Duration, DurationError> {
        duration_or(self.cache_window.as_ref(), DEFAULT_CACHE_WINDOW)
    }

    /// `cacheWindowWhenEmpty`, or [`DEFAULT_CACHE_WINDOW_WHEN_EMPTY`] when unset or zero.
    pub fn cache_window_when_empty(&self) -> Result<Duration, DurationError> {
        duration_or(self.cache_window_when_empty.as_ref(), DEFAULT_CACHE_WINDOW_WHEN_EMPTY)
    }

    /// `resyncInterval`, or [`DEFAULT_RESYNC_INTERVAL`] when unset or zero.
    pub fn resync_interval(&self) -> Result<Duration, DurationError> {
        duration_or(self.resync_interval.as_ref(), DEFAULT_RESYNC_INTERVAL)
    }
}

fn positive_or_default(value: Option<i32>) -> i32 {
    value.filter(|replicas| *replicas > 0).unwrap_or(DEFAULT_REPLICAS)
}
