//! The memcached the API servers share when the core creates it.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, ResourceRequirements, Service, ServiceSpec};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::stack::Stack;
use super::{MEMCACHED, MEMCACHED_USER, memcached_name};
use crate::operator::builders::{
    container_port, container_security, pod_security, quantities, service_port, spread_over_nodes, strings, tcp_probe,
};
use crate::operator::children::{labels, selector_labels};
use crate::operator::ports;

impl Stack<'_> {
    pub(super) fn memcached_disruption_budget(&self) -> PodDisruptionBudget {
        self.budget(&memcached_name(self.spec), MEMCACHED)
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
}
