//! How others reach the API server: the custom metrics APIService, KEDA's
//! ClusterTriggerAuthentication and Prometheus' ServiceMonitor.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::SecretKeySelector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{APIService, APIServiceSpec, ServiceReference};

use super::service_monitor::{
    SecretOrConfigMap, ServiceMonitor, ServiceMonitorEndpoint, ServiceMonitorSpec, ServiceMonitorTls,
};
use super::stack::Stack;
use super::{API_SERVER, CUSTOM_METRICS_API_SERVICE, SERVICE_MONITOR_LABEL};
use crate::operator::children::selector_labels;
use crate::operator::keda::{ClusterTriggerAuthentication, ClusterTriggerAuthenticationSpec, tls_parameters};
use crate::operator::ports;

impl Stack<'_> {
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
