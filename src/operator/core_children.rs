//! What a `ScaledActionRunnerCore` becomes: the API server stack (Deployment, Service,
//! ServiceAccount, least-privilege RBAC, memcached, the custom metrics APIService, KEDA's
//! ClusterTriggerAuthentication and a ServiceMonitor). Pure: the controller reads the inputs.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction,
    KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
    TCPSocketAction, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{APIService, APIServiceSpec, ServiceReference};
use kube::{CustomResource, Resource};
use serde::{Deserialize, Serialize};

use super::children::{labels, selector_labels};
use super::keda::{ClusterTriggerAuthentication, ClusterTriggerAuthenticationSpec, tls_parameters};
use super::{Child, Settings, SpecError, ports};
use crate::crd::{CORE_NAME, DurationError, ScaledActionRunnerCore, ScaledActionRunnerCoreSpec};

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
const API_SERVER: &str = "api-server";
/// `app.kubernetes.io/component` of the memcached StatefulSet and its Service.
const MEMCACHED: &str = "memcached";
/// Uid of the distroless `nonroot` user our image runs as.
pub(super) const IMAGE_USER: i64 = 65532;
/// Uid of the `memcache` user of the official memcached image.
const MEMCACHED_USER: i64 = 11211;
/// Longest StatefulSet name whose pods' `controller-revision-hash` label still fits 63 chars.
const MAX_STATEFUL_SET_NAME: usize = 52;

/// What the controller reads from the cluster for a core; `None` when unknown (offline).
#[derive(Debug, Clone, Copy, Default)]
pub struct CoreInputs<'a> {
    /// `ca.crt` of the core's `sslCertSecret` (PEM), read by the controller; None offline.
    pub ca_bundle: Option<&'a [u8]>,
    /// The API aggregator's front-proxy client CA (PEM) — `requestheader-client-ca-file` of
    /// ConfigMap kube-system/extension-apiserver-authentication — None when unknown.
    pub front_proxy_ca: Option<&'a str>,
}

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

/// Everything a core becomes, in apply order (identities and permissions before workloads).
/// Only called for the core named `core`; every child is labelled for it and, when the core
/// has a uid, owned by it so that deleting the core removes them.
pub fn core_children(
    core: &ScaledActionRunnerCore,
    settings: &Settings,
    inputs: &CoreInputs,
) -> Result<Vec<Child>, SpecError> {
    let spec = &core.spec;
    let valid = validate(spec)?;
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
        let args = api_server_args(spec, &valid);
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

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// The parts of a spec that had to be parsed to be checked, kept for building.
struct Valid {
    cache_window: Duration,
    cache_window_when_empty: Duration,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid { field, reason: reason.into() }
}

fn duration(field: &'static str, value: Result<Duration, DurationError>) -> Result<Duration, SpecError> {
    value.map_err(|error| invalid(field, error.to_string()))
}

fn validate(spec: &ScaledActionRunnerCoreSpec) -> Result<Valid, SpecError> {
    require_name("apiServerNamespace", &spec.api_server_namespace, NameRule::Label)?;
    // The name is also a Service's, which must start with a letter (DNS-1035).
    require_name("apiServerName", &spec.api_server_name, NameRule::ServiceName)?;
    require_name("sslCertSecret", &spec.ssl_cert_secret, NameRule::Subdomain)?;
    for namespace in &spec.namespaces {
        require_name("namespaces", namespace, NameRule::Label)?;
    }
    for (field, value) in [
        ("apiServerPatTokenNamespace", &spec.api_server_pat_token_namespace),
        ("prometheusNamespace", &spec.prometheus_namespace),
    ] {
        if let Some(namespace) = value.as_deref().filter(|namespace| !namespace.is_empty()) {
            require_name(field, namespace, NameRule::Label)?;
        }
    }
    for (field, replicas) in
        [("apiServerReplicas", spec.api_server_replicas), ("memcachedReplicas", spec.memcached_replicas)]
    {
        if replicas.is_some_and(|replicas| replicas < 0) {
            return Err(invalid(field, "must not be negative"));
        }
    }
    let valid = Valid {
        cache_window: duration("cacheWindow", spec.cache_window())?,
        cache_window_when_empty: duration("cacheWindowWhenEmpty", spec.cache_window_when_empty())?,
    };
    duration("resyncInterval", spec.resync_interval())?;

    if spec.create_memcached() {
        if spec.memcached_auth() {
            return Err(invalid(
                "memcachedAuth",
                "the memcached the operator deploys has no SASL users; set createMemcached: false and point \
                 memcacheServers at a memcached with authentication, or turn memcachedAuth off",
            ));
        }
        if memcached_name(spec).len() > MAX_STATEFUL_SET_NAME {
            return Err(invalid(
                "apiServerName",
                format!(
                    "the memcached StatefulSet {:?} would be longer than {MAX_STATEFUL_SET_NAME} characters",
                    memcached_name(spec)
                ),
            ));
        }
    } else if spec.create_api_server() {
        if memcache_servers(spec).is_empty() {
            return Err(invalid("memcacheServers", "must list host:port of memcached when createMemcached is false"));
        }
        if spec.memcached_auth() {
            if spec.memcache_user().is_none_or(str::is_empty) {
                return Err(invalid("memcacheUser", "is required when memcachedAuth is true"));
            }
            match spec.memcache_creds_secret.as_deref() {
                Some(secret) if !secret.is_empty() => require_name("memcacheCredsSecret", secret, NameRule::Subdomain)?,
                _ => return Err(invalid("memcacheCredsSecret", "is required when memcachedAuth is true")),
            }
        }
    }
    Ok(valid)
}

#[derive(Clone, Copy)]
enum NameRule {
    /// DNS-1123 label: namespaces.
    Label,
    /// DNS-1035 label: Service names.
    ServiceName,
    /// DNS-1123 subdomain: Secrets.
    Subdomain,
}

fn require_name(field: &'static str, value: &str, rule: NameRule) -> Result<(), SpecError> {
    if value.is_empty() {
        return Err(invalid(field, "is required"));
    }
    let (ok, what) = match rule {
        NameRule::Label => {
            (is_dns1123_label(value), "a DNS-1123 label (lower-case letters, digits and '-', at most 63)")
        }
        NameRule::ServiceName => (
            is_dns1123_label(value) && value.starts_with(|c: char| c.is_ascii_lowercase()),
            "a DNS-1035 label (a lower-case letter, then letters, digits and '-', at most 63)",
        ),
        NameRule::Subdomain => (is_dns1123_subdomain(value), "a DNS-1123 subdomain (lower-case, at most 253)"),
    };
    if ok { Ok(()) } else { Err(invalid(field, format!("{value:?} is not {what}"))) }
}

fn is_dns1123_label(value: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&value.len())
        && value.chars().all(|c| alphanumeric(c) || c == '-')
        && value.starts_with(alphanumeric)
        && value.ends_with(alphanumeric)
}

fn is_dns1123_subdomain(value: &str) -> bool {
    value.len() <= 253 && value.split('.').all(is_dns1123_label)
}

// ---------------------------------------------------------------------------------------------
// The API server's command line
// ---------------------------------------------------------------------------------------------

/// Where the API server's pod mounts its files.
mod paths {
    pub const TLS: &str = "/tls";
    pub const FRONT_PROXY: &str = "/front-proxy";
    pub const DATA: &str = "/data";
    pub const MEMCACHED: &str = "/memcached";
}

fn memcached_name(spec: &ScaledActionRunnerCoreSpec) -> String {
    format!("{}-cache", spec.api_server_name)
}

fn front_proxy_name(spec: &ScaledActionRunnerCoreSpec) -> String {
    format!("{}-front-proxy-ca", spec.api_server_name)
}

/// The `host:port` entries of `memcacheServers`, trimmed, empty ones dropped.
fn memcache_servers(spec: &ScaledActionRunnerCoreSpec) -> Vec<&str> {
    spec.memcache_servers.as_deref().unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
}

/// A duration as `serve` parses it, in the coarsest exact unit.
fn duration_arg(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else if duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}ns", duration.as_nanos())
    }
}

/// `serve`'s arguments, carrying every setting of the core that the server uses.
/// Whether `serve` accepts this command line.
fn server_accepts(args: &[String]) -> bool {
    use clap::Parser;
    let command_line = std::iter::once("github-action-autoscaler".to_owned()).chain(args.iter().cloned());
    crate::config::Cli::try_parse_from(command_line).is_ok()
}

/// `apiServerExtraArgs`, one flag at a time (a flag and the values after it): those `serve`
/// accepts after the operator's own, and a warning for each it would refuse (the original
/// server's `--v=4` or `--secure-port`, a typo, a flag the operator already sets). The API
/// server would exit on any of them, so they are left out instead of crash-looping its pods.
fn extra_args(base: &[String], extra: &[String]) -> (Vec<String>, Vec<String>) {
    let mut groups: Vec<Vec<String>> = Vec::new();
    for arg in extra {
        match groups.last_mut() {
            Some(group) if !arg.starts_with('-') => group.push(arg.clone()),
            _ => groups.push(vec![arg.clone()]),
        }
    }
    let (mut kept, mut warnings) = (Vec::new(), Vec::new());
    for group in groups {
        let candidate: Vec<String> = base.iter().chain(&kept).chain(&group).cloned().collect();
        if server_accepts(&candidate) {
            kept.extend(group);
        } else {
            warnings.push(format!(
                "apiServerExtraArgs {:?} is not a flag the API server accepts; left out",
                group.join(" ")
            ));
        }
    }
    (kept, warnings)
}

/// What the core asks for that is not honoured, one sentence each (for its `Ready` condition
/// and `render`'s notes); the core is still applied.
pub fn core_warnings(core: &ScaledActionRunnerCore) -> Vec<String> {
    let spec = &core.spec;
    let Ok(valid) = validate(spec) else {
        return Vec::new();
    };
    if !spec.create_api_server() {
        return Vec::new();
    }
    let base = base_server_args(spec, &valid);
    extra_args(&base, &spec.api_server_extra_args).1
}

fn api_server_args(spec: &ScaledActionRunnerCoreSpec, valid: &Valid) -> Vec<String> {
    let mut args = base_server_args(spec, valid);
    let (extra, _) = extra_args(&args, &spec.api_server_extra_args);
    args.extend(extra);
    args
}

fn base_server_args(spec: &ScaledActionRunnerCoreSpec, valid: &Valid) -> Vec<String> {
    let store = if spec.create_memcached() {
        let service = memcached_name(spec);
        // One stable DNS name per StatefulSet pod: the client hashes keys over a fixed server list.
        let servers: Vec<String> = (0..spec.memcached_replicas())
            .map(|ordinal| {
                format!("{service}-{ordinal}.{service}.{}.svc:{}", spec.api_server_namespace, ports::MEMCACHED)
            })
            .collect();
        format!("memcached://{}", servers.join(","))
    } else {
        format!("memcached://{}", memcache_servers(spec).join(","))
    };
    let mut args: Vec<String> = [
        "serve",
        "--listen",
        &format!("0.0.0.0:{}", ports::HTTP),
        "--tls-listen",
        &format!("0.0.0.0:{}", ports::TLS),
        "--grpc-listen",
        &format!("0.0.0.0:{}", ports::GRPC),
        "--tls-cert",
        &format!("{}/tls.crt", paths::TLS),
        "--tls-key",
        &format!("{}/tls.key", paths::TLS),
        "--client-ca",
        &format!("{}/ca.crt", paths::TLS),
        "--client-ca",
        &format!("{}/ca.crt", paths::FRONT_PROXY),
        "--data-dir",
        paths::DATA,
        "--store",
        &store,
        "--lease-namespace",
        &spec.api_server_namespace,
        // Pinned, because the lease Role grants updates to this name only.
        "--lease-name",
        RESYNC_LEASE,
        "--cache-window",
        &duration_arg(valid.cache_window),
        "--cache-window-when-empty",
        &duration_arg(valid.cache_window_when_empty),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    if !spec.namespaces.is_empty() {
        args.extend(["--namespaces".to_owned(), spec.namespaces.join(",")]);
    }
    if let Some(namespace) = token_namespace(spec) {
        args.extend(["--token-namespace".to_owned(), namespace.to_owned()]);
    }
    if let Some(user) = external_memcached_user(spec) {
        args.extend([
            "--memcached-user".to_owned(),
            user.to_owned(),
            "--memcached-password-file".to_owned(),
            format!("{}/password", paths::MEMCACHED),
        ]);
    }
    args.extend(["--log-format".to_owned(), "json".to_owned()]);
    args
}

fn token_namespace(spec: &ScaledActionRunnerCoreSpec) -> Option<&str> {
    spec.api_server_pat_token_namespace.as_deref().filter(|namespace| !namespace.is_empty())
}

/// The SASL user for an existing memcached, when the core asks for authentication to one.
fn external_memcached_user(spec: &ScaledActionRunnerCoreSpec) -> Option<&str> {
    (!spec.create_memcached() && spec.memcached_auth()).then(|| spec.memcache_user()).flatten()
}

// ---------------------------------------------------------------------------------------------
// The objects
// ---------------------------------------------------------------------------------------------

struct Stack<'a> {
    core: &'a ScaledActionRunnerCore,
    spec: &'a ScaledActionRunnerCoreSpec,
    settings: &'a Settings,
    instance: &'a str,
}

pub(super) fn strings<const N: usize>(items: [&str; N]) -> Vec<String> {
    items.into_iter().map(str::to_owned).collect()
}

pub(super) fn quantities<const N: usize>(items: [(&str, &str); N]) -> BTreeMap<String, Quantity> {
    items.into_iter().map(|(key, value)| (key.to_owned(), Quantity(value.to_owned()))).collect()
}

/// Restricted pod security defaults for a pod running as `user`.
pub(super) fn pod_security(user: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user),
        run_as_group: Some(user),
        fs_group: Some(user),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() }),
        ..PodSecurityContext::default()
    }
}

pub(super) fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        privileged: Some(false),
        capabilities: Some(Capabilities { drop: Some(strings(["ALL"])), ..Capabilities::default() }),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() }),
        ..SecurityContext::default()
    }
}

pub(super) fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort { name: Some(name.into()), container_port: port, protocol: Some("TCP".into()), ..Default::default() }
}

fn service_port(name: &str, port: i32, app_protocol: Option<&str>) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        app_protocol: app_protocol.map(str::to_owned),
        ..ServicePort::default()
    }
}

pub(super) fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(ports::HTTP),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn tcp_probe(period: i32, failures: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(ports::MEMCACHED), ..TCPSocketAction::default() }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// Spread replicas over nodes when the scheduler can, without refusing to schedule.
fn spread_over_nodes(selector: &BTreeMap<String, String>) -> Vec<TopologySpreadConstraint> {
    vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "kubernetes.io/hostname".into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(LabelSelector { match_labels: Some(selector.clone()), ..LabelSelector::default() }),
        ..TopologySpreadConstraint::default()
    }]
}

pub(super) fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(groups.iter().map(|group| (*group).to_owned()).collect()),
        resources: Some(resources.iter().map(|resource| (*resource).to_owned()).collect()),
        verbs: verbs.iter().map(|verb| (*verb).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

pub(super) fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: kind.into(), name: name.into() }
}

pub(super) fn service_account_subject(namespace: &str, name: &str) -> Subject {
    Subject { kind: "ServiceAccount".into(), name: name.into(), namespace: Some(namespace.into()), api_group: None }
}

impl Stack<'_> {
    fn namespace(&self) -> &str {
        &self.spec.api_server_namespace
    }

    fn name(&self) -> &str {
        &self.spec.api_server_name
    }

    fn metadata(&self, name: &str, namespace: Option<&str>, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: namespace.map(str::to_owned),
            labels: Some(labels(self.instance, component)),
            owner_references: self.core.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        }
    }

    fn namespaced(&self, name: &str, component: &str) -> ObjectMeta {
        self.metadata(name, Some(self.namespace()), component)
    }

    /// Cluster-scoped and cross-namespace RBAC names carry the API server's namespace and name,
    /// so two installs (or a rename) never fight over one object.
    fn rbac_name(&self, purpose: &str) -> String {
        format!("github-action-autoscaler:{}:{}:{purpose}", self.namespace(), self.name())
    }

    fn subject(&self) -> Subject {
        service_account_subject(self.namespace(), self.name())
    }

    fn service_account(&self) -> ServiceAccount {
        ServiceAccount { metadata: self.namespaced(self.name(), API_SERVER), ..ServiceAccount::default() }
    }

    /// Least privilege: read ScaledActionRunners (cluster-wide or in the listed namespaces), one
    /// Lease, the token namespace's Secrets when there is one, and custom metrics for the HPA.
    /// Runners' own Secrets are granted by name by each ScaledActionRunner's children.
    fn rbac(&self) -> Vec<Child> {
        let runners = rule(&["runner.devjoes.com"], &["scaledactionrunners"], &["get", "list", "watch"]);
        let runners_name = self.rbac_name("runners");
        let mut children = Vec::new();
        if self.spec.namespaces.is_empty() {
            children.push(self.cluster_role(&runners_name, vec![runners]));
            children.push(self.cluster_role_binding(&runners_name, &runners_name, vec![self.subject()]));
        } else {
            for namespace in &self.spec.namespaces {
                children.extend(self.role_and_binding(&runners_name, namespace, vec![runners.clone()]));
            }
        }

        let mut lease = rule(&["coordination.k8s.io"], &["leases"], &["get", "update"]);
        lease.resource_names = Some(vec![RESYNC_LEASE.to_owned()]);
        let lease_rules = vec![rule(&["coordination.k8s.io"], &["leases"], &["create"]), lease];
        children.extend(self.role_and_binding(&self.rbac_name("resync-lease"), self.namespace(), lease_rules));

        if let Some(namespace) = token_namespace(self.spec) {
            // That namespace holds nothing but GitHub tokens, so reading all of it is the intent.
            let tokens = vec![rule(&[""], &["secrets"], &["get", "list", "watch"])];
            children.extend(self.role_and_binding(&self.rbac_name("tokens"), namespace, tokens));
        }

        // As prometheus-adapter does: let the HPA controller read what this server serves.
        let metrics_name = self.rbac_name("custom-metrics-reader");
        let metrics = vec![rule(&["custom.metrics.k8s.io"], &["*"], &["get", "list"])];
        children.push(self.cluster_role(&metrics_name, metrics));
        let hpa = service_account_subject(HPA_CONTROLLER.0, HPA_CONTROLLER.1);
        children.push(self.cluster_role_binding(&metrics_name, &metrics_name, vec![hpa]));
        children
    }

    fn cluster_role(&self, name: &str, rules: Vec<PolicyRule>) -> Child {
        Child::typed(&ClusterRole {
            metadata: self.metadata(name, None, API_SERVER),
            rules: Some(rules),
            ..ClusterRole::default()
        })
    }

    fn cluster_role_binding(&self, name: &str, role: &str, subjects: Vec<Subject>) -> Child {
        Child::typed(&ClusterRoleBinding {
            metadata: self.metadata(name, None, API_SERVER),
            role_ref: role_ref("ClusterRole", role),
            subjects: Some(subjects),
        })
    }

    fn role_and_binding(&self, name: &str, namespace: &str, rules: Vec<PolicyRule>) -> [Child; 2] {
        [
            Child::typed(&Role { metadata: self.metadata(name, Some(namespace), API_SERVER), rules: Some(rules) }),
            Child::typed(&RoleBinding {
                metadata: self.metadata(name, Some(namespace), API_SERVER),
                role_ref: role_ref("Role", name),
                subjects: Some(vec![self.subject()]),
            }),
        ]
    }

    fn front_proxy_config_map(&self, pem: &str) -> ConfigMap {
        ConfigMap {
            metadata: self.namespaced(&front_proxy_name(self.spec), API_SERVER),
            data: Some(BTreeMap::from([("ca.crt".to_owned(), pem.to_owned())])),
            ..ConfigMap::default()
        }
    }

    fn service(&self) -> Service {
        Service {
            metadata: self.namespaced(self.name(), API_SERVER),
            spec: Some(ServiceSpec {
                selector: Some(selector_labels(self.instance, API_SERVER)),
                ports: Some(vec![
                    service_port("http", ports::HTTP, None),
                    service_port("https", ports::TLS, None),
                    service_port("grpc", ports::GRPC, Some("grpc")),
                ]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn deployment(&self, args: &[String]) -> Deployment {
        let selector = selector_labels(self.instance, API_SERVER);
        let image = self
            .spec
            .api_server_image
            .as_deref()
            .filter(|image| !image.is_empty() && !is_original_api_server(image))
            .unwrap_or(&self.settings.image)
            .to_owned();
        let mut volumes = vec![
            Volume {
                name: "tls".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(self.spec.ssl_cert_secret.clone()),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "front-proxy".into(),
                // Optional: the aggregator's CA may be unknown; the server then trusts only ca.crt.
                config_map: Some(ConfigMapVolumeSource {
                    name: front_proxy_name(self.spec),
                    optional: Some(true),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume { name: "data".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
        ];
        let mut mounts = vec![
            mount("tls", paths::TLS, true),
            mount("front-proxy", paths::FRONT_PROXY, true),
            mount("data", paths::DATA, false),
        ];
        if external_memcached_user(self.spec).is_some() {
            volumes.push(Volume {
                name: "memcached".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: self.spec.memcache_creds_secret.clone(),
                    items: Some(vec![KeyToPath { key: "password".into(), path: "password".into(), mode: None }]),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            });
            mounts.push(mount("memcached", paths::MEMCACHED, true));
        }
        let container = Container {
            name: API_SERVER.into(),
            image: Some(image),
            args: Some(args.to_vec()),
            ports: Some(vec![
                container_port("http", ports::HTTP),
                container_port("https", ports::TLS),
                container_port("grpc", ports::GRPC),
            ]),
            readiness_probe: Some(http_probe("/readyz", 5, 3)),
            liveness_probe: Some(http_probe("/healthz", 10, 6)),
            resources: Some(ResourceRequirements {
                requests: Some(quantities([("cpu", "100m"), ("memory", "128Mi")])),
                limits: Some(quantities([("memory", "512Mi")])),
                ..ResourceRequirements::default()
            }),
            security_context: Some(container_security()),
            volume_mounts: Some(mounts),
            ..Container::default()
        };
        Deployment {
            metadata: self.namespaced(self.name(), API_SERVER),
            spec: Some(DeploymentSpec {
                replicas: Some(self.spec.api_server_replicas()),
                selector: LabelSelector { match_labels: Some(selector.clone()), ..LabelSelector::default() },
                // Keep every replica serving during a rollout: the HPA and KEDA read through it.
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_unavailable: Some(IntOrString::Int(0)),
                        max_surge: Some(IntOrString::Int(1)),
                    }),
                }),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(self.instance, API_SERVER)),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        service_account_name: Some(self.name().to_owned()),
                        security_context: Some(pod_security(IMAGE_USER)),
                        topology_spread_constraints: Some(spread_over_nodes(&selector)),
                        containers: vec![container],
                        volumes: Some(volumes),
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }
    }

    fn disruption_budget(&self) -> PodDisruptionBudget {
        self.budget(self.name(), API_SERVER)
    }

    fn memcached_disruption_budget(&self) -> PodDisruptionBudget {
        self.budget(&memcached_name(self.spec), MEMCACHED)
    }

    fn budget(&self, name: &str, component: &str) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: self.namespaced(name, component),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(LabelSelector {
                    match_labels: Some(selector_labels(self.instance, component)),
                    ..LabelSelector::default()
                }),
                ..PodDisruptionBudgetSpec::default()
            }),
            ..PodDisruptionBudget::default()
        }
    }

    /// Headless, and publishing pods before they are ready, so each pod's DNS name (the store's
    /// server list) resolves as soon as the pod exists.
    fn memcached_service(&self) -> Service {
        let name = memcached_name(self.spec);
        Service {
            metadata: self.namespaced(&name, MEMCACHED),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                publish_not_ready_addresses: Some(true),
                selector: Some(selector_labels(self.instance, MEMCACHED)),
                ports: Some(vec![service_port("memcached", ports::MEMCACHED, None)]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn memcached_stateful_set(&self) -> StatefulSet {
        let name = memcached_name(self.spec);
        let selector = selector_labels(self.instance, MEMCACHED);
        let image = self
            .spec
            .memcached_image
            .as_deref()
            .filter(|image| !image.is_empty())
            .unwrap_or(&self.settings.memcached_image)
            .to_owned();
        let container = Container {
            name: MEMCACHED.into(),
            image: Some(image),
            // The binary itself, past any image entrypoint (Bitnami's, which the original
            // defaulted to, would try to run the flags); it is on PATH in both images.
            command: Some(strings(["memcached"])),
            // 64 MiB of items is far more than job states and counters need; 1024 connections
            // covers every API server replica's pool.
            args: Some(strings(["-m", "64", "-c", "1024", "-p", "11211"])),
            ports: Some(vec![container_port("memcached", ports::MEMCACHED)]),
            readiness_probe: Some(tcp_probe(5, 3)),
            liveness_probe: Some(tcp_probe(10, 6)),
            resources: Some(ResourceRequirements {
                requests: Some(quantities([("cpu", "50m"), ("memory", "96Mi")])),
                limits: Some(quantities([("memory", "128Mi")])),
                ..ResourceRequirements::default()
            }),
            security_context: Some(container_security()),
            ..Container::default()
        };
        StatefulSet {
            metadata: self.namespaced(&name, MEMCACHED),
            spec: Some(StatefulSetSpec {
                replicas: Some(self.spec.memcached_replicas()),
                service_name: Some(name.clone()),
                // Cache servers need no start order; start them all at once.
                pod_management_policy: Some("Parallel".into()),
                selector: LabelSelector { match_labels: Some(selector.clone()), ..LabelSelector::default() },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(self.instance, MEMCACHED)),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        automount_service_account_token: Some(false),
                        security_context: Some(pod_security(MEMCACHED_USER)),
                        topology_spread_constraints: Some(spread_over_nodes(&selector)),
                        containers: vec![container],
                        ..PodSpec::default()
                    }),
                },
                ..StatefulSetSpec::default()
            }),
            ..StatefulSet::default()
        }
    }

    /// The custom metrics API, served over TLS and verified with the core's CA (never
    /// `insecureSkipTLSVerify`); without the CA the aggregator cannot reach it yet.
    fn api_service(&self, ca_bundle: Option<&[u8]>) -> APIService {
        APIService {
            metadata: self.metadata(CUSTOM_METRICS_API_SERVICE, None, API_SERVER),
            spec: Some(APIServiceSpec {
                service: Some(ServiceReference {
                    namespace: Some(self.namespace().to_owned()),
                    name: Some(self.name().to_owned()),
                    port: Some(ports::TLS),
                }),
                group: Some("custom.metrics.k8s.io".into()),
                version: Some("v1beta1".into()),
                group_priority_minimum: 100,
                version_priority: 100,
                ca_bundle: ca_bundle.map(|pem| ByteString(pem.to_vec())),
                ..APIServiceSpec::default()
            }),
            ..APIService::default()
        }
    }

    /// KEDA reads the named Secret from its own namespace (`kedaNamespace`), where the user's
    /// client certificate of that name lives, as the original README set it up.
    fn cluster_trigger_authentication(&self) -> ClusterTriggerAuthentication {
        ClusterTriggerAuthentication {
            metadata: self.metadata(self.name(), None, API_SERVER),
            spec: ClusterTriggerAuthenticationSpec { secret_target_ref: tls_parameters(&self.spec.ssl_cert_secret) },
        }
    }

    /// In the API server's namespace (kube-prometheus-stack watches every namespace by default),
    /// labelled [`SERVICE_MONITOR_LABEL`] so its default selector picks it up.
    ///
    /// It scrapes the mutual-TLS port, presenting the `sslCertSecret` certificate as its client
    /// certificate (that certificate needs the `client auth` usage): `serve` answers reads only
    /// where it authenticates the client, and the operator never writes Secrets, so it cannot
    /// mint a token for the plain port.
    fn service_monitor(&self) -> ServiceMonitor {
        let mut metadata = self.namespaced(self.name(), API_SERVER);
        metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(SERVICE_MONITOR_LABEL.0.to_owned(), SERVICE_MONITOR_LABEL.1.to_owned());
        ServiceMonitor {
            metadata,
            spec: ServiceMonitorSpec {
                selector: LabelSelector {
                    match_labels: Some(selector_labels(self.instance, API_SERVER)),
                    ..LabelSelector::default()
                },
                endpoints: vec![ServiceMonitorEndpoint {
                    port: "https".into(),
                    path: "/metrics".into(),
                    scheme: Some("https".into()),
                    tls_config: Some(self.scrape_tls()),
                }],
            },
        }
    }

    /// The `sslCertSecret`'s CA to verify the API server as its Service's DNS name, and its
    /// certificate and key as the client certificate.
    fn scrape_tls(&self) -> ServiceMonitorTls {
        let key = |key: &str| SecretKeySelector {
            name: self.spec.ssl_cert_secret.clone(),
            key: key.into(),
            ..SecretKeySelector::default()
        };
        ServiceMonitorTls {
            ca: SecretOrConfigMap { secret: key("ca.crt") },
            cert: SecretOrConfigMap { secret: key("tls.crt") },
            key_secret: key("tls.key"),
            server_name: format!("{}.{}.svc", self.name(), self.namespace()),
        }
    }
}

/// The original project's Go API server image, which README-era cores name: it cannot run
/// `serve`, so such cores get this product's image instead.
const ORIGINAL_API_SERVER_IMAGE: &str = "joeshearn/github-runner-autoscaler-apiserver";

fn is_original_api_server(image: &str) -> bool {
    let image = image.trim_start_matches("docker.io/").trim_start_matches("index.docker.io/");
    image.strip_prefix(ORIGINAL_API_SERVER_IMAGE).is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '@']))
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(read_only), ..VolumeMount::default() }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::operator::DEFAULT_IMAGE;

    const UID: &str = "8a1f0c2e-0000-4000-8000-000000000001";

    fn core_with(spec: Value, uid: Option<&str>) -> ScaledActionRunnerCore {
        let mut spec_fields =
            json!({"apiServerName": "metrics", "apiServerNamespace": "github", "sslCertSecret": "tls-cert"});
        if let (Some(fields), Value::Object(extra)) = (spec_fields.as_object_mut(), spec) {
            fields.extend(extra);
        }
        let mut metadata = json!({"name": "core"});
        if let Some(uid) = uid {
            metadata["uid"] = json!(uid);
        }
        serde_json::from_value(json!({
            "apiVersion": "runner.devjoes.com/v1alpha1", "kind": "ScaledActionRunnerCore",
            "metadata": metadata, "spec": spec_fields,
        }))
        .expect("a valid core")
    }

    fn core(spec: Value) -> ScaledActionRunnerCore {
        core_with(spec, Some(UID))
    }

    fn children(spec: Value) -> Vec<Child> {
        children_with(spec, &CoreInputs::default())
    }

    fn children_with(spec: Value, inputs: &CoreInputs) -> Vec<Child> {
        core_children(&core(spec), &Settings::default(), inputs).expect("a valid spec")
    }

    fn error(spec: Value) -> SpecError {
        core_children(&core(spec), &Settings::default(), &CoreInputs::default()).expect_err("an invalid spec")
    }

    fn field(spec: Value) -> &'static str {
        match error(spec) {
            SpecError::Invalid { field, .. } => field,
            other => panic!("expected SpecError::Invalid, got {other:?}"),
        }
    }

    fn summary(children: &[Child]) -> Vec<String> {
        children.iter().map(Child::describe).collect()
    }

    fn find(children: &[Child], kind: &str, name: &str) -> Value {
        children
            .iter()
            .find(|child| child.resource.kind == kind && child.object.metadata.name.as_deref() == Some(name))
            .map(Child::to_value)
            .unwrap_or_else(|| panic!("no {kind} {name} in {:#?}", summary(children)))
    }

    fn args(children: &[Child]) -> Vec<String> {
        let deployment = find(children, "Deployment", "metrics");
        serde_json::from_value(deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone())
            .expect("args are strings")
    }

    fn flag(args: &[String], name: &str) -> Vec<String> {
        args.windows(2).filter(|pair| pair[0] == name).map(|pair| pair[1].clone()).collect()
    }

    fn rules(children: &[Child]) -> Vec<(String, PolicyRule)> {
        children
            .iter()
            .filter(|child| matches!(child.resource.kind.as_str(), "Role" | "ClusterRole"))
            .flat_map(|child| {
                let rules: Vec<PolicyRule> =
                    serde_json::from_value(child.to_value()["rules"].clone()).expect("rules parse");
                rules.into_iter().map(move |rule| (child.describe(), rule))
            })
            .collect()
    }

    fn mentions(rule: &PolicyRule, resource: &str) -> bool {
        rule.resources.iter().flatten().any(|r| r == resource || r == "*" || r.starts_with(&format!("{resource}/")))
            && rule.api_groups.iter().flatten().any(|group| group.is_empty() || group == "*")
    }

    #[test]
    fn the_readme_core_becomes_the_whole_api_server_stack() {
        let children = children_with(
            json!({"prometheusNamespace": "monitoring"}),
            &CoreInputs { ca_bundle: None, front_proxy_ca: Some("PEM") },
        );
        assert_eq!(
            summary(&children),
            [
                "ServiceAccount github/metrics",
                "ClusterRole github-action-autoscaler:github:metrics:runners",
                "ClusterRoleBinding github-action-autoscaler:github:metrics:runners",
                "Role github/github-action-autoscaler:github:metrics:resync-lease",
                "RoleBinding github/github-action-autoscaler:github:metrics:resync-lease",
                "ClusterRole github-action-autoscaler:github:metrics:custom-metrics-reader",
                "ClusterRoleBinding github-action-autoscaler:github:metrics:custom-metrics-reader",
                "ConfigMap github/metrics-front-proxy-ca",
                "Service github/metrics-cache",
                "StatefulSet github/metrics-cache",
                "PodDisruptionBudget github/metrics-cache",
                "Service github/metrics",
                "Deployment github/metrics",
                "PodDisruptionBudget github/metrics",
                "APIService v1beta1.custom.metrics.k8s.io",
                "ClusterTriggerAuthentication metrics",
                "ServiceMonitor github/metrics",
            ]
        );
    }

    #[test]
    fn api_server_args_carry_the_cores_settings_then_its_extra_args() {
        let args = args(&children(json!({
            "cacheWindow": "90s", "cacheWindowWhenEmpty": 1_500_000_000i64,
            "namespaces": ["team-a", "team-b"], "apiServerPatTokenNamespace": "github-tokens",
            "apiServerExtraArgs": ["--store-prefix", "blue:"],
        })));
        assert_eq!(args[0], "serve");
        assert_eq!(flag(&args, "--cache-window"), ["90s"]);
        assert_eq!(flag(&args, "--cache-window-when-empty"), ["1500ms"]);
        assert_eq!(flag(&args, "--namespaces"), ["team-a,team-b"]);
        assert_eq!(flag(&args, "--token-namespace"), ["github-tokens"]);
        assert_eq!(flag(&args, "--lease-namespace"), ["github"]);
        assert_eq!(flag(&args, "--log-format"), ["json"]);
        assert_eq!(args[args.len() - 2..], ["--store-prefix", "blue:"]);
    }

    #[test]
    fn api_server_listens_on_every_port_with_mutual_tls_from_the_mounted_files() {
        let args = args(&children(json!({})));
        assert_eq!(flag(&args, "--listen"), ["0.0.0.0:8080"]);
        assert_eq!(flag(&args, "--tls-listen"), ["0.0.0.0:8443"]);
        assert_eq!(flag(&args, "--grpc-listen"), ["0.0.0.0:9090"]);
        assert_eq!(flag(&args, "--tls-cert"), ["/tls/tls.crt"]);
        assert_eq!(flag(&args, "--tls-key"), ["/tls/tls.key"]);
        assert_eq!(flag(&args, "--client-ca"), ["/tls/ca.crt", "/front-proxy/ca.crt"]);
        assert_eq!(flag(&args, "--data-dir"), ["/data"]);
    }

    #[test]
    fn serve_knows_every_flag_the_core_passes() {
        use clap::CommandFactory;
        let cli = crate::config::Cli::command();
        let serve = cli.find_subcommand("serve").expect("a serve subcommand");
        let known: Vec<&str> =
            serve.get_arguments().chain(cli.get_arguments()).filter_map(|arg| arg.get_long()).collect();
        let spec = json!({"namespaces": ["a"], "apiServerPatTokenNamespace": "t", "createMemcached": false,
            "memcacheServers": "m:1", "memcachedAuth": true, "memcacheUser": "u", "memcacheCredsSecret": "s"});
        for arg in args(&children(spec)).iter().filter_map(|arg| arg.strip_prefix("--")) {
            assert!(known.contains(&arg), "serve has no --{arg}");
        }
    }

    #[test]
    fn serve_parses_the_api_servers_command_line() {
        use clap::Parser;
        let mut command_line = vec!["github-action-autoscaler".to_owned()];
        command_line.extend(args(&children(json!({"namespaces": ["a"], "apiServerPatTokenNamespace": "t"}))));
        if let Err(error) = crate::config::Cli::try_parse_from(&command_line) {
            panic!("{error}");
        }
    }

    #[test]
    fn extra_args_the_api_server_would_refuse_are_left_out_with_a_warning() {
        let spec = json!({"apiServerExtraArgs": ["--v=4", "--journal-retention", "5d", "--secure-port", "6443", "--listen=0.0.0.0:1"]});
        let args = args(&children(spec.clone()));
        assert_eq!(flag(&args, "--journal-retention"), ["5d"], "a flag of ours is kept with its value");
        assert!(
            !args.iter().any(|arg| arg.starts_with("--v") || arg.starts_with("--secure-port") || arg == "6443"),
            "{args:?}"
        );
        assert_eq!(flag(&args, "--listen"), ["0.0.0.0:8080"], "the operator's own flags cannot be overridden twice");
        let warnings = core_warnings(&core(spec));
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains("--v=4") && warnings[1].contains("--secure-port 6443"), "{warnings:?}");
    }

    #[test]
    fn unset_cache_windows_pass_the_cores_defaults() {
        let args = args(&children(json!({})));
        assert_eq!(flag(&args, "--cache-window"), ["300s"]);
        assert_eq!(flag(&args, "--cache-window-when-empty"), ["1800s"]);
        assert!(flag(&args, "--namespaces").is_empty());
        assert!(flag(&args, "--token-namespace").is_empty());
        assert!(flag(&args, "--memcached-user").is_empty());
    }

    #[test]
    fn the_store_lists_each_memcached_pod_by_its_stable_name() {
        let args = args(&children(json!({"memcachedReplicas": 3})));
        assert_eq!(
            flag(&args, "--store"),
            ["memcached://metrics-cache-0.metrics-cache.github.svc:11211,\
              metrics-cache-1.metrics-cache.github.svc:11211,metrics-cache-2.metrics-cache.github.svc:11211"]
        );
        let stateful_set = find(&children(json!({"memcachedReplicas": 3})), "StatefulSet", "metrics-cache");
        assert_eq!(stateful_set["spec"]["replicas"], 3);
        assert_eq!(stateful_set["spec"]["serviceName"], "metrics-cache");
    }

    #[test]
    fn memcached_service_is_headless_and_publishes_pods_before_they_are_ready() {
        let service = find(&children(json!({})), "Service", "metrics-cache");
        assert_eq!(service["spec"]["clusterIP"], "None");
        assert_eq!(service["spec"]["publishNotReadyAddresses"], true);
        assert_eq!(service["spec"]["ports"][0]["port"], 11211);
        assert_eq!(service["spec"]["selector"]["app.kubernetes.io/component"], "memcached");
    }

    #[test]
    fn an_existing_memcached_replaces_the_deployed_one() {
        let children = children(json!({"createMemcached": false, "memcacheServers": " a:11211, b:11211 ,"}));
        assert_eq!(flag(&args(&children), "--store"), ["memcached://a:11211,b:11211"]);
        assert!(!children.iter().any(|child| child.object.metadata.name.as_deref() == Some("metrics-cache")));
    }

    #[test]
    fn an_existing_memcached_with_auth_is_reached_with_the_user_and_a_mounted_password() {
        let children = children(json!({
            "createMemcached": false, "memcacheServers": "a:11211", "MemcachedAuth": true,
            "memcachedUser": "autoscaler", "memcacheCredsSecret": "memcached-creds",
        }));
        let args = args(&children);
        assert_eq!(flag(&args, "--memcached-user"), ["autoscaler"]);
        assert_eq!(flag(&args, "--memcached-password-file"), ["/memcached/password"]);
        let pod = &find(&children, "Deployment", "metrics")["spec"]["template"]["spec"];
        let volume = pod["volumes"].as_array().and_then(|volumes| volumes.iter().find(|v| v["name"] == "memcached"));
        assert_eq!(
            volume.map(|volume| &volume["secret"]),
            Some(&json!({"secretName": "memcached-creds", "items": [{"key": "password", "path": "password"}]}))
        );
    }

    #[test]
    fn an_existing_memcached_must_be_named() {
        assert_eq!(field(json!({"createMemcached": false})), "memcacheServers");
        assert_eq!(field(json!({"createMemcached": false, "memcacheServers": " , "})), "memcacheServers");
    }

    #[test]
    fn memcached_auth_is_refused_for_the_memcached_the_operator_deploys() {
        let SpecError::Invalid { field, reason } = error(json!({"memcachedAuth": true})) else {
            panic!("expected an invalid spec");
        };
        assert_eq!(field, "memcachedAuth");
        assert!(reason.contains("createMemcached: false"), "{reason}");
    }

    #[test]
    fn memcached_auth_needs_a_user_and_a_secret() {
        let base = json!({"createMemcached": false, "memcacheServers": "a:1", "memcachedAuth": true});
        assert_eq!(field(base.clone()), "memcacheUser");
        let mut with_user = base;
        with_user["memcacheUser"] = json!("u");
        assert_eq!(field(with_user), "memcacheCredsSecret");
    }

    #[test]
    fn no_rule_grants_secrets_except_the_token_namespace_role() {
        for spec in [json!({}), json!({"namespaces": ["a", "b"]})] {
            let granted: Vec<_> =
                rules(&children(spec)).into_iter().filter(|(_, rule)| mentions(rule, "secrets")).collect();
            assert!(granted.is_empty(), "{granted:#?}");
        }
        let granted: Vec<_> = rules(&children(json!({"apiServerPatTokenNamespace": "github-tokens"})))
            .into_iter()
            .filter(|(_, rule)| mentions(rule, "secrets"))
            .collect();
        assert_eq!(granted.len(), 1, "{granted:#?}");
        assert_eq!(granted[0].0, "Role github-tokens/github-action-autoscaler:github:metrics:tokens");
        assert_eq!(granted[0].1.verbs, ["get", "list", "watch"]);
    }

    #[test]
    fn the_token_role_is_bound_to_the_api_servers_service_account() {
        let children = children(json!({"apiServerPatTokenNamespace": "github-tokens"}));
        let binding = find(&children, "RoleBinding", "github-action-autoscaler:github:metrics:tokens");
        assert_eq!(binding["metadata"]["namespace"], "github-tokens");
        assert_eq!(binding["subjects"], json!([{"kind": "ServiceAccount", "name": "metrics", "namespace": "github"}]));
        assert_eq!(binding["roleRef"]["kind"], "Role");
    }

    #[test]
    fn runners_are_read_cluster_wide_unless_namespaces_are_listed() {
        let cluster_wide = children(json!({}));
        let role = find(&cluster_wide, "ClusterRole", "github-action-autoscaler:github:metrics:runners");
        assert_eq!(
            role["rules"],
            json!([{"apiGroups": ["runner.devjoes.com"], "resources": ["scaledactionrunners"], "verbs": ["get", "list", "watch"]}])
        );

        let listed = children(json!({"namespaces": ["team-a", "team-b"]}));
        assert!(!summary(&listed).iter().any(|child| child.ends_with(":runners") && child.starts_with("Cluster")));
        for namespace in ["team-a", "team-b"] {
            let name = format!("{namespace}/github-action-autoscaler:github:metrics:runners");
            assert!(summary(&listed).contains(&format!("Role {name}")), "{:#?}", summary(&listed));
            assert!(summary(&listed).contains(&format!("RoleBinding {name}")), "{:#?}", summary(&listed));
        }
    }

    #[test]
    fn lease_updates_are_limited_to_the_resync_lease() {
        let role = find(&children(json!({})), "Role", "github-action-autoscaler:github:metrics:resync-lease");
        assert_eq!(role["metadata"]["namespace"], "github");
        assert_eq!(
            role["rules"],
            json!([
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                 "resourceNames": ["github-action-autoscaler-resync"], "verbs": ["get", "update"]},
            ])
        );
    }

    #[test]
    fn the_hpa_controller_may_read_custom_metrics() {
        let children = children(json!({}));
        let name = "github-action-autoscaler:github:metrics:custom-metrics-reader";
        let role = find(&children, "ClusterRole", name);
        assert_eq!(
            role["rules"],
            json!([{"apiGroups": ["custom.metrics.k8s.io"], "resources": ["*"], "verbs": ["get", "list"]}])
        );
        let binding = find(&children, "ClusterRoleBinding", name);
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "horizontal-pod-autoscaler", "namespace": "kube-system"}])
        );
    }

    #[test]
    fn every_child_is_labelled_and_owned_by_the_core_when_it_has_a_uid() {
        let spec = json!({"prometheusNamespace": "monitoring", "apiServerPatTokenNamespace": "t", "namespaces": ["a"]});
        let inputs = CoreInputs { ca_bundle: Some(b"CA"), front_proxy_ca: Some("PEM") };
        let owned = core_children(&core(spec.clone()), &Settings::default(), &inputs).expect("valid");
        for child in &owned {
            let owners = child.object.metadata.owner_references.as_deref().unwrap_or_default();
            assert_eq!(owners.len(), 1, "{}", child.describe());
            assert_eq!((owners[0].kind.as_str(), owners[0].uid.as_str()), ("ScaledActionRunnerCore", UID));
            assert_eq!(owners[0].controller, Some(true));
            let labels = child.object.metadata.labels.as_ref().expect("labels");
            assert_eq!(
                labels.get("app.kubernetes.io/instance").map(String::as_str),
                Some("core"),
                "{}",
                child.describe()
            );
            assert_eq!(
                labels.get("app.kubernetes.io/managed-by").map(String::as_str),
                Some("github-action-autoscaler")
            );
        }
        let unowned = core_children(&core_with(spec, None), &Settings::default(), &inputs).expect("valid");
        assert_eq!(unowned.len(), owned.len());
        assert!(unowned.iter().all(|child| child.object.metadata.owner_references.is_none()));
    }

    #[test]
    fn service_monitor_exists_only_when_prometheus_is_named() {
        let kinds =
            |spec| summary(&children(spec)).into_iter().filter(|child| child.starts_with("ServiceMonitor")).count();
        assert_eq!(kinds(json!({})), 0);
        assert_eq!(kinds(json!({"prometheusNamespace": ""})), 0);
        let monitor = find(&children(json!({"prometheusNamespace": "monitoring"})), "ServiceMonitor", "metrics");
        assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(monitor["metadata"]["namespace"], "github");
        assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
        let secret = |key: &str| json!({"name": "tls-cert", "key": key});
        assert_eq!(
            monitor["spec"]["endpoints"],
            json!([{
                "port": "https",
                "path": "/metrics",
                "scheme": "https",
                "tlsConfig": {
                    "ca": {"secret": secret("ca.crt")},
                    "cert": {"secret": secret("tls.crt")},
                    "keySecret": secret("tls.key"),
                    "serverName": "metrics.github.svc",
                },
            }]),
            "the plain port serves no reads: Prometheus scrapes the mutual-TLS port with the core's certificate"
        );
        assert_eq!(monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"], "api-server");
    }

    #[test]
    fn service_exposes_http_https_and_grpc_and_selects_the_deployments_pods() {
        let children = children(json!({}));
        let service = find(&children, "Service", "metrics");
        let ports: Vec<_> = service["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|port| (port["name"].clone(), port["port"].clone(), port.get("appProtocol").cloned()))
            .collect();
        assert_eq!(
            ports,
            [
                (json!("http"), json!(8080), None),
                (json!("https"), json!(8443), None),
                (json!("grpc"), json!(9090), Some(json!("grpc"))),
            ]
        );
        let deployment = find(&children, "Deployment", "metrics");
        assert_eq!(service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"]);
        let pod_labels = deployment["spec"]["template"]["metadata"]["labels"].as_object().expect("pod labels");
        for (key, value) in service["spec"]["selector"].as_object().expect("selector") {
            assert_eq!(pod_labels.get(key), Some(value));
        }
    }

    #[test]
    fn api_server_pods_are_locked_down_probed_and_mount_their_certificates() {
        let children = children(json!({"apiServerReplicas": 3, "apiServerImage": "example/api:1"}));
        let deployment = find(&children, "Deployment", "metrics");
        assert_eq!(deployment["spec"]["replicas"], 3);
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], "metrics");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
        let container = &pod["containers"][0];
        assert_eq!(container["image"], "example/api:1");
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(container["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(container["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": 8080}));
        assert_eq!(container["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": 8080}));
        assert!(container["resources"]["requests"]["memory"].is_string());
        assert_eq!(
            pod["volumes"],
            json!([
                {"name": "tls", "secret": {"secretName": "tls-cert"}},
                {"name": "front-proxy", "configMap": {"name": "metrics-front-proxy-ca", "optional": true}},
                {"name": "data", "emptyDir": {}},
            ])
        );
        let budget = find(&children, "PodDisruptionBudget", "metrics");
        assert_eq!(budget["spec"]["maxUnavailable"], 1);
        assert_eq!(budget["spec"]["selector"], deployment["spec"]["selector"]);
    }

    #[test]
    fn images_default_to_the_operators_settings() {
        let settings =
            Settings { image: "ours/api:2".into(), memcached_image: "ours/memcached:3".into(), ..Settings::default() };
        let children =
            core_children(&core(json!({"apiServerImage": ""})), &settings, &CoreInputs::default()).expect("valid");
        let image =
            |kind, name| find(&children, kind, name)["spec"]["template"]["spec"]["containers"][0]["image"].clone();
        assert_eq!(image("Deployment", "metrics"), "ours/api:2");
        assert_eq!(image("StatefulSet", "metrics-cache"), "ours/memcached:3");
    }

    #[test]
    fn the_original_go_api_server_image_is_replaced_by_ours() {
        for original in [
            "joeshearn/github-runner-autoscaler-apiserver:latest",
            "docker.io/joeshearn/github-runner-autoscaler-apiserver:v0.3",
            "joeshearn/github-runner-autoscaler-apiserver",
        ] {
            let deployment = find(&children(json!({"apiServerImage": original})), "Deployment", "metrics");
            assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["image"], DEFAULT_IMAGE, "{original}");
        }
        let fork = find(
            &children(json!({"apiServerImage": "joeshearn/github-runner-autoscaler-apiserver-fork:1"})),
            "Deployment",
            "metrics",
        );
        assert_eq!(
            fork["spec"]["template"]["spec"]["containers"][0]["image"],
            "joeshearn/github-runner-autoscaler-apiserver-fork:1"
        );
    }

    #[test]
    fn memcached_pods_are_locked_down_and_probed_over_tcp() {
        let stateful_set =
            find(&children(json!({"memcachedImage": "example/memcached:1"})), "StatefulSet", "metrics-cache");
        let pod = &stateful_set["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        let container = &pod["containers"][0];
        assert_eq!(container["image"], "example/memcached:1");
        assert_eq!(container["command"], json!(["memcached"]));
        assert_eq!(container["readinessProbe"]["tcpSocket"]["port"], 11211);
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    }

    #[test]
    fn without_create_api_server_no_deployment_is_written_but_the_service_stays() {
        let children = children(json!({"createApiServer": false, "createMemcached": false}));
        let kinds = summary(&children);
        assert!(!kinds.iter().any(|child| child.starts_with("Deployment") || child.starts_with("PodDisruptionBudget")));
        assert!(kinds.contains(&"Service github/metrics".to_owned()));
    }

    #[test]
    fn api_service_trusts_the_cores_ca_and_never_skips_verification() {
        let with_ca = children_with(
            json!({}),
            &CoreInputs { ca_bundle: Some(b"-----BEGIN CERTIFICATE-----"), front_proxy_ca: None },
        );
        let api_service = find(&with_ca, "APIService", "v1beta1.custom.metrics.k8s.io");
        assert_eq!(api_service["apiVersion"], "apiregistration.k8s.io/v1");
        assert_eq!(api_service["spec"]["service"], json!({"namespace": "github", "name": "metrics", "port": 8443}));
        assert_eq!(api_service["spec"]["group"], "custom.metrics.k8s.io");
        assert_eq!(api_service["spec"]["version"], "v1beta1");
        assert_eq!(api_service["spec"]["groupPriorityMinimum"], 100);
        assert_eq!(api_service["spec"]["versionPriority"], 100);
        assert_eq!(api_service["spec"]["caBundle"], "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t");
        assert!(api_service["spec"].get("insecureSkipTLSVerify").is_none());

        let without_ca = find(&children(json!({})), "APIService", "v1beta1.custom.metrics.k8s.io");
        assert!(without_ca["spec"].get("caBundle").is_none());
        assert!(without_ca["spec"].get("insecureSkipTLSVerify").is_none());
    }

    #[test]
    fn the_front_proxy_ca_is_published_only_when_known() {
        assert!(!summary(&children(json!({}))).iter().any(|child| child.starts_with("ConfigMap")));
        let children = children_with(json!({}), &CoreInputs { ca_bundle: None, front_proxy_ca: Some("FRONT") });
        assert_eq!(find(&children, "ConfigMap", "metrics-front-proxy-ca")["data"], json!({"ca.crt": "FRONT"}));
    }

    #[test]
    fn keda_authenticates_with_the_tls_secret_through_a_cluster_trigger_authentication() {
        let authentication = find(&children(json!({})), "ClusterTriggerAuthentication", "metrics");
        assert_eq!(authentication["apiVersion"], "keda.sh/v1alpha1");
        assert!(authentication["metadata"].get("namespace").is_none());
        let refs = authentication["spec"]["secretTargetRef"].as_array().expect("refs");
        assert_eq!(refs.len(), 6);
        assert!(refs.iter().all(|r| r["name"] == "tls-cert"));
        assert!(!summary(&children(json!({"createAuthentication": false}))).iter().any(|c| c.contains("TriggerAuth")));
    }

    #[test]
    fn invalid_specs_name_the_offending_field() {
        let cases = [
            (json!({"apiServerNamespace": ""}), "apiServerNamespace"),
            (json!({"apiServerNamespace": "Github"}), "apiServerNamespace"),
            (json!({"apiServerName": ""}), "apiServerName"),
            (json!({"apiServerName": "1metrics"}), "apiServerName"),
            (json!({"apiServerName": "metrics_server"}), "apiServerName"),
            (json!({"apiServerName": "m".repeat(47)}), "apiServerName"),
            (json!({"sslCertSecret": ""}), "sslCertSecret"),
            (json!({"sslCertSecret": "tls..cert"}), "sslCertSecret"),
            (json!({"namespaces": ["ok", "Not-OK"]}), "namespaces"),
            (json!({"apiServerPatTokenNamespace": "tokens!"}), "apiServerPatTokenNamespace"),
            (json!({"prometheusNamespace": "-monitoring"}), "prometheusNamespace"),
            (json!({"apiServerReplicas": -1}), "apiServerReplicas"),
            (json!({"memcachedReplicas": -2}), "memcachedReplicas"),
            (json!({"cacheWindow": "soon"}), "cacheWindow"),
            (json!({"cacheWindowWhenEmpty": -5}), "cacheWindowWhenEmpty"),
            (json!({"resyncInterval": "5 fortnights"}), "resyncInterval"),
        ];
        for (spec, expected) in cases {
            assert_eq!(field(spec.clone()), expected, "{spec}");
        }
    }

    #[test]
    fn a_long_name_is_fine_without_the_memcached_statefulset() {
        let spec = json!({"apiServerName": "m".repeat(60), "createMemcached": false, "memcacheServers": "a:1"});
        assert!(core_children(&core(spec), &Settings::default(), &CoreInputs::default()).is_ok());
    }

    #[test]
    fn durations_are_passed_in_the_coarsest_exact_unit() {
        assert_eq!(duration_arg(Duration::from_secs(120)), "120s");
        assert_eq!(duration_arg(Duration::from_millis(1_500)), "1500ms");
        assert_eq!(duration_arg(Duration::from_nanos(1_000_000_001)), "1000000001ns");
    }
}
