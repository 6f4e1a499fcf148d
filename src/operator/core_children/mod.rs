//! What a `ScaledActionRunnerCore` becomes: the API server stack (Deployment, Service,
//! ServiceAccount, least-privilege RBAC, memcached, the custom metrics APIService, KEDA's
//! ClusterTriggerAuthentication and a ServiceMonitor). Pure: the controller reads the inputs.
//! [`validate`] checks the spec, [`server_args`] writes the API server's command line, and
//! one file per part of the stack builds its objects ([`stack`] holds what they share).

mod api_server;
mod memcached;
mod rbac;
mod registration;
mod server_args;
mod service_monitor;
mod stack;
#[cfg(test)]
mod tests;
mod validate;

pub use self::service_monitor::{
    SecretOrConfigMap, ServiceMonitor, ServiceMonitorEndpoint, ServiceMonitorSpec, ServiceMonitorTls,
};
use self::stack::Stack;
use super::{Child, Settings, SpecError};
use crate::crd::{CORE_NAME, ScaledActionRunnerCore, ScaledActionRunnerCoreSpec};

/// Name of the Lease the API server replicas elect a resyncing replica with (`serve`'s default).
pub const RESYNC_LEASE: &str = "github-action-autoscaler-resync";
/// The APIService the core registers; there can be only one per cluster.
pub const CUSTOM_METRICS_API_SERVICE: &str = "v1beta1.custom.metrics.k8s.io";
/// The ServiceAccount kube-controller-manager's HPA controller reads metrics as.
pub const HPA_CONTROLLER: (&str, &str) = ("kube-system", "horizontal-pod-autoscaler");
/// Label kube-prometheus-stack's default `serviceMonitorSelector` matches (its release name in
/// the original README's install), so the ServiceMonitor is picked up without configuration.
pub const SERVICE_MONITOR_LABEL: (&str, &str) = ("release", "prometheus");

/// `app.kubernetes.io/component` of the API server and everything serving or authorising it.
pub(super) const API_SERVER: &str = "api-server";
/// `app.kubernetes.io/component` of the memcached StatefulSet and its Service.
pub(super) const MEMCACHED: &str = "memcached";
/// Uid of the `memcache` user of the official memcached image.
pub(super) const MEMCACHED_USER: i64 = 11211;
/// Longest StatefulSet name whose pods' `controller-revision-hash` label still fits 63 chars.
pub(super) const MAX_STATEFUL_SET_NAME: usize = 52;

/// What the controller reads from the cluster for a core; `None` when unknown (offline).
#[derive(Debug, Clone, Copy, Default)]
pub struct CoreInputs<'a> {
    /// `ca.crt` of the core's `sslCertSecret` (PEM), read by the controller; None offline.
    pub ca_bundle: Option<&'a [u8]>,
    /// The API aggregator's front-proxy client CA (PEM) — `requestheader-client-ca-file` of
    /// ConfigMap kube-system/extension-apiserver-authentication — None when unknown.
    pub front_proxy_ca: Option<&'a str>,
}

/// Everything a core becomes, in apply order (identities and permissions before workloads).
/// Only called for the core named `core`; every child is labelled for it and, when the core
/// has a uid, owned by it so that deleting the core removes them.
pub fn core_children(
    core: &ScaledActionRunnerCore,
    settings: &Settings,
    inputs: &CoreInputs,
) -> Result<Vec<Child>, SpecError> {
    let spec = &core.spec;
    let valid = validate::validate(spec)?;
    let stack = Stack { core, spec, settings, instance: core.metadata.name.as_deref().unwrap_or(CORE_NAME) };

    let mut children = vec![Child::typed(&stack.service_account())];
    children.extend(stack.rbac());
    if let Some(pem) = inputs.front_proxy_ca {
        children.push(Child::typed(&stack.front_proxy_config_map(pem)));
    }
    if spec.create_memcached() {
        children.push(Child::typed(&stack.memcached_service()));
        children.push(Child::typed(&stack.memcached_stateful_set()));
        children.push(Child::typed(&stack.memcached_disruption_budget()));
    }
    children.push(Child::typed(&stack.service()));
    if spec.create_api_server() {
        let args = server_args::api_server_args(spec, &valid);
        children.push(Child::typed(&stack.deployment(&args)));
        children.push(Child::typed(&stack.disruption_budget()));
    }
    children.push(Child::typed(&stack.api_service(inputs.ca_bundle)));
    if spec.create_authentication() {
        children.push(Child::typed(&stack.cluster_trigger_authentication()));
    }
    if spec.prometheus_namespace.as_deref().is_some_and(|namespace| !namespace.is_empty()) {
        children.push(Child::typed(&stack.service_monitor()));
    }
    Ok(children)
}

/// What the core asks for that is not honoured, one sentence each (for its `Ready` condition
/// and `render`'s notes); the core is still applied.
pub fn core_warnings(core: &ScaledActionRunnerCore) -> Vec<String> {
    let spec = &core.spec;
    let Ok(valid) = validate::validate(spec) else {
        return Vec::new();
    };
    if !spec.create_api_server() {
        return Vec::new();
    }
    server_args::unaccepted_extra_args(spec, &valid)
}

pub(super) fn memcached_name(spec: &ScaledActionRunnerCoreSpec) -> String {
    format!("{}-cache", spec.api_server_name)
}

pub(super) fn front_proxy_name(spec: &ScaledActionRunnerCoreSpec) -> String {
    format!("{}-front-proxy-ca", spec.api_server_name)
}

/// The `host:port` entries of `memcacheServers`, trimmed, empty ones dropped.
pub(super) fn memcache_servers(spec: &ScaledActionRunnerCoreSpec) -> Vec<&str> {
    spec.memcache_servers.as_deref().unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
}

pub(super) fn token_namespace(spec: &ScaledActionRunnerCoreSpec) -> Option<&str> {
    spec.api_server_pat_token_namespace.as_deref().filter(|namespace| !namespace.is_empty())
}

/// The SASL user for an existing memcached, when the core asks for authentication to one.
pub(super) fn external_memcached_user(spec: &ScaledActionRunnerCoreSpec) -> Option<&str> {
    (!spec.create_memcached() && spec.memcached_auth()).then(|| spec.memcache_user()).flatten()
}
