//! The API server's workload: its Service, Deployment, disruption budget and the front-proxy
//! CA it mounts.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, KeyToPath, PodSpec, PodTemplateSpec,
    ResourceRequirements, SecretVolumeSource, Service, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::server_args::paths;
use super::stack::Stack;
use super::{API_SERVER, external_memcached_user, front_proxy_name};
use crate::operator::builders::{
    IMAGE_USER, container_port, container_security, http_probe, pod_security, quantities, service_port,
    spread_over_nodes,
};
use crate::operator::children::{labels, selector_labels};
use crate::operator::ports;

impl Stack<'_> {
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
