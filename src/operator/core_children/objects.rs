//! The objects of the API server stack, one builder per object.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, KeyToPath, PodSpec, PodTemplateSpec,
    ResourceRequirements, SecretKeySelector, SecretVolumeSource, Service, ServiceAccount, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{APIService, APIServiceSpec, ServiceReference};
use kube::Resource;

use super::server_args::paths;
use super::service_monitor::{
    SecretOrConfigMap, ServiceMonitor, ServiceMonitorEndpoint, ServiceMonitorSpec, ServiceMonitorTls,
};
use super::{
    API_SERVER, CUSTOM_METRICS_API_SERVICE, HPA_CONTROLLER, MEMCACHED, MEMCACHED_USER, RESYNC_LEASE,
    SERVICE_MONITOR_LABEL, external_memcached_user, front_proxy_name, memcached_name, token_namespace,
};
use crate::crd::{ScaledActionRunnerCore, ScaledActionRunnerCoreSpec};
use crate::operator::builders::{
    IMAGE_USER, container_port, container_security, http_probe, pod_security, quantities, role_ref, rule,
    service_account_subject, service_port, spread_over_nodes, strings, tcp_probe,
};
use crate::operator::children::{labels, selector_labels};
use crate::operator::keda::{ClusterTriggerAuthentication, ClusterTriggerAuthenticationSpec, tls_parameters};
use crate::operator::{Child, Settings, ports};

pub(super) struct Stack<'a> {
    pub(super) core: &'a ScaledActionRunnerCore,
    pub(super) spec: &'a ScaledActionRunnerCoreSpec,
    pub(super) settings: &'a Settings,
    pub(super) instance: &'a str,
}

impl Stack<'_> {
    pub(super) fn namespace(&self) -> &str {
        &self.spec.api_server_namespace
    }

    pub(super) fn name(&self) -> &str {
        &self.spec.api_server_name
    }

    pub(super) fn metadata(&self, name: &str, namespace: Option<&str>, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: namespace.map(str::to_owned),
            labels: Some(labels(self.instance, component)),
            owner_references: self.core.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        }
    }

    pub(super) fn namespaced(&self, name: &str, component: &str) -> ObjectMeta {
        self.metadata(name, Some(self.namespace()), component)
    }

    /// Cluster-scoped and cross-namespace RBAC names carry the API server's namespace and name,
    /// so two installs (or a rename) never fight over one object.
    pub(super) fn rbac_name(&self, purpose: &str) -> String {
        format!("github-action-autoscaler:{}:{}:{purpose}", self.namespace(), self.name())
    }

    pub(super) fn subject(&self) -> Subject {
        service_account_subject(self.namespace(), self.name())
    }

    pub(super) fn service_account(&self) -> ServiceAccount {
        ServiceAccount { metadata: self.namespaced(self.name(), API_SERVER), ..ServiceAccount::default() }
    }

    /// Least privilege: read ScaledActionRunners (cluster-wide or in the listed namespaces), one
    /// Lease, the token namespace's Secrets when there is one, and custom metrics for the HPA.
    /// Runners' own Secrets are granted by name by each ScaledActionRunner's children.
    pub(super) fn rbac(&self) -> Vec<Child> {
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

    pub(super) fn cluster_role(&self, name: &str, rules: Vec<PolicyRule>) -> Child {
        Child::typed(&ClusterRole {
            metadata: self.metadata(name, None, API_SERVER),
            rules: Some(rules),
            ..ClusterRole::default()
        })
    }

    pub(super) fn cluster_role_binding(&self, name: &str, role: &str, subjects: Vec<Subject>) -> Child {
        Child::typed(&ClusterRoleBinding {
            metadata: self.metadata(name, None, API_SERVER),
            role_ref: role_ref("ClusterRole", role),
            subjects: Some(subjects),
        })
    }

    pub(super) fn role_and_binding(&self, name: &str, namespace: &str, rules: Vec<PolicyRule>) -> [Child; 2] {
        [
            Child::typed(&Role { metadata: self.metadata(name, Some(namespace), API_SERVER), rules: Some(rules) }),
            Child::typed(&RoleBinding {
                metadata: self.metadata(name, Some(namespace), API_SERVER),
                role_ref: role_ref("Role", name),
                subjects: Some(vec![self.subject()]),
            }),
        ]
    }

    pub(super) fn front_proxy_config_map(&self, pem: &str) -> ConfigMap {
        ConfigMap {
            metadata: self.namespaced(&front_proxy_name(self.spec), API_SERVER),
            data: Some(BTreeMap::from([("ca.crt".to_owned(), pem.to_owned())])),
            ..ConfigMap::default()
        }
    }

    pub(super) fn service(&self) -> Service {
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

    pub(super) fn deployment(&self, args: &[String]) -> Deployment {
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

    pub(super) fn disruption_budget(&self) -> PodDisruptionBudget {
        self.budget(self.name(), API_SERVER)
    }

    pub(super) fn memcached_disruption_budget(&self) -> PodDisruptionBudget {
        self.budget(&memcached_name(self.spec), MEMCACHED)
    }

    pub(super) fn budget(&self, name: &str, component: &str) -> PodDisruptionBudget {
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
    pub(super) fn memcached_service(&self) -> Service {
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

    pub(super) fn memcached_stateful_set(&self) -> StatefulSet {
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
    pub(super) fn api_service(&self, ca_bundle: Option<&[u8]>) -> APIService {
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
    pub(super) fn cluster_trigger_authentication(&self) -> ClusterTriggerAuthentication {
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
    pub(super) fn service_monitor(&self) -> ServiceMonitor {
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
    pub(super) fn scrape_tls(&self) -> ServiceMonitorTls {
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
