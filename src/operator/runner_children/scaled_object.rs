//! KEDA's ScaledObject for a runner: which trigger, where the API server is, and the runner
//! counts it scales between.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::registered_limit;
use crate::crd::{ScaledActionRunner, TriggerKind};
use crate::operator::keda::{
    Advanced, AuthenticationRef, HpaConfig, ScaleTargetRef, ScaledObject, ScaledObjectSpec, Trigger,
};
use crate::operator::{ApiServer, ports};

/// KEDA scales the StatefulSet between `minRunners` and `maxRunners` on the API server's
/// desired runner count (`targetValue` 1: replicas = the value).
pub(super) fn scaled_object(runner: &ScaledActionRunner, api_server: &ApiServer, metadata: ObjectMeta) -> ScaledObject {
    let name = runner.name_any();
    let namespace = metadata.namespace.clone().unwrap_or_default();
    let scaling = runner.spec.scaling.clone().unwrap_or_default();
    let kind = scaling.trigger.unwrap_or_default();
    let authentication = api_server
        .cluster_trigger_authentication
        .as_ref()
        .map(|auth| AuthenticationRef { name: auth.clone(), kind: Some("ClusterTriggerAuthentication".into()) });
    let mut triggers = Vec::new();
    if matches!(kind, TriggerKind::ExternalPush | TriggerKind::Both) {
        triggers.push(Trigger {
            type_: "external-push".into(),
            name: Some("push".into()),
            metadata: BTreeMap::from([
                ("scalerAddress".into(), format!("{}:{}", api_server.host(), ports::GRPC)),
                ("runnerNamespace".into(), namespace.clone()),
                ("runnerName".into(), name.clone()),
            ]),
            authentication_ref: authentication.clone(),
        });
    }
    if matches!(kind, TriggerKind::MetricsApi | TriggerKind::Both) {
        let mut metadata = BTreeMap::from([
            (
                "url".into(),
                format!(
                    "https://{}:{}/api/v1/namespaces/{namespace}/scaledactionrunners/{name}",
                    api_server.host(),
                    ports::TLS
                ),
            ),
            ("format".into(), "json".into()),
            ("valueLocation".into(), "value".into()),
            ("targetValue".into(), "1".into()),
            ("activationTargetValue".into(), "0".into()),
        ]);
        if authentication.is_some() {
            metadata.insert("authMode".into(), "tls".into());
        }
        triggers.push(Trigger {
            type_: "metrics-api".into(),
            name: Some("poll".into()),
            metadata,
            authentication_ref: authentication,
        });
    }
    ScaledObject {
        metadata,
        spec: ScaledObjectSpec {
            scale_target_ref: ScaleTargetRef { api_version: "apps/v1".into(), kind: "StatefulSet".into(), name },
            min_replica_count: Some(runner.spec.min_runners()),
            max_replica_count: Some(
                registered_limit(runner).map_or(runner.spec.max_runners, |limit| limit.min(runner.spec.max_runners)),
            ),
            polling_interval: scaling.polling_interval,
            cooldown_period: scaling.cooldown_period,
            advanced: scaling.behavior.map(|behavior| Advanced {
                horizontal_pod_autoscaler_config: Some(HpaConfig { behavior: Some(behavior) }),
            }),
            triggers,
        },
    }
}
