//! The `ScaledActionRunnerCore` reconcile.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};

use super::apply::{Applied, ApplyRules, apply_children, core_kinds, prune};
use super::context::{Context, backoff_key};
use super::error::ReconcileError;
use super::invalid::{invalid_spec, unreadable};
use super::status::{Readiness, set_ready, with_warnings, write_status};
use super::{CORE_KIND, refresh_after};
use crate::crd::{CORE_NAME, ScaledActionRunnerCore, ScaledActionRunnerCoreSpec, ScaledActionRunnerCoreStatus};
use crate::operator::core_children::{CoreInputs, core_children, core_warnings};
use crate::operator::render::{CA_KEY, FRONT_PROXY_CA_CONFIG_MAP, FRONT_PROXY_CA_KEY};

/// Dereference → validate and build → apply → prune → status.
pub async fn reconcile_core(
    object: Arc<DeserializeGuard<ScaledActionRunnerCore>>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let core = match &object.0 {
        Ok(core) => core,
        Err(invalid) => return unreadable::<_, ScaledActionRunnerCoreStatus>(&ctx, &object, invalid, CORE_KIND).await,
    };
    if core.name_any() != CORE_NAME {
        return ignore(&ctx, core).await;
    }

    // Dereference (client): the CA the APIService trusts, and the aggregator's client CA.
    let sources = CoreSources::read(&ctx.client, &core.spec).await?;

    // Validate and build (pure).
    let children = match core_children(core, &ctx.settings, &sources.inputs()) {
        Ok(children) => children,
        Err(error) => return invalid_spec(&ctx, core, core.status.as_ref(), &error, CORE_KIND).await,
    };

    // Apply (client); KEDA's and Prometheus' CRDs are optional: the rest works without them.
    let rules = ApplyRules { optional_groups: &["keda.sh", "monitoring.coreos.com"], stateful_set_replicas: None };
    let applied = apply_children(&ctx.client, &ctx.applied, &children, &rules).await?;

    // Prune (client): what the core made earlier and no longer wants.
    prune(&ctx.client, &ctx.pruned, core, None, &children, &core_kinds()).await?;

    // Status (client).
    let available = available_replicas(&ctx.client, &core.spec).await;
    let readiness = readiness(core, &sources, available, &applied, children.len());
    let generation = core.metadata.generation;
    write_status(&ctx.client, core, core.status.as_ref(), |status: &mut ScaledActionRunnerCoreStatus| {
        set_ready(status, &readiness, generation)
    })
    .await?;
    ctx.succeeded(&backoff_key(CORE_KIND, None, &core.name_any()));
    ctx.metrics.count(CORE_KIND, "applied");
    Ok(Action::requeue(refresh_after(readiness.ready)))
}

/// A core under another name: the cluster can hold only one custom metrics APIService.
async fn ignore(ctx: &Context, core: &ScaledActionRunnerCore) -> Result<Action, ReconcileError> {
    let message = format!("only the ScaledActionRunnerCore named {CORE_NAME:?} is used; this one is ignored");
    let readiness = Readiness::not_ready("NotCore", message);
    let generation = core.metadata.generation;
    write_status(&ctx.client, core, core.status.as_ref(), |status: &mut ScaledActionRunnerCoreStatus| {
        set_ready(status, &readiness, generation)
    })
    .await?;
    Ok(Action::await_change())
}

/// What a core's children are built from besides its spec.
struct CoreSources {
    /// `ca.crt` of the core's `sslCertSecret`.
    ca: Option<Vec<u8>>,
    /// The aggregator's front-proxy client CA.
    front_proxy: Option<String>,
}

impl CoreSources {
    async fn read(client: &Client, spec: &ScaledActionRunnerCoreSpec) -> Result<Self, ReconcileError> {
        let secret = Api::<Secret>::namespaced(client.clone(), &spec.api_server_namespace)
            .get_opt(&spec.ssl_cert_secret)
            .await
            .map_err(|source| ReconcileError::Dereference {
                what: format!("Secret {}/{}", spec.api_server_namespace, spec.ssl_cert_secret),
                source,
            })?;
        let ca = secret.and_then(|secret| secret.data?.remove(CA_KEY)).map(|bytes| bytes.0);
        let (namespace, name) = FRONT_PROXY_CA_CONFIG_MAP;
        let front_proxy = Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|source| ReconcileError::Dereference { what: format!("ConfigMap {namespace}/{name}"), source })?
            .and_then(|map| map.data?.remove(FRONT_PROXY_CA_KEY));
        Ok(Self { ca, front_proxy })
    }

    fn inputs(&self) -> CoreInputs<'_> {
        CoreInputs { ca_bundle: self.ca.as_deref(), front_proxy_ca: self.front_proxy.as_deref() }
    }
}

/// Available replicas of the API server's Deployment; 0 when unknown.
async fn available_replicas(client: &Client, spec: &ScaledActionRunnerCoreSpec) -> i32 {
    let deployment = Api::<Deployment>::namespaced(client.clone(), &spec.api_server_namespace)
        .get_opt(&spec.api_server_name)
        .await
        .ok()
        .flatten();
    deployment.and_then(|deployment| deployment.status?.available_replicas).unwrap_or(0)
}

/// What the core's `Ready` condition says after its children were applied.
fn readiness(
    core: &ScaledActionRunnerCore,
    sources: &CoreSources,
    available: i32,
    applied: &Applied,
    count: usize,
) -> Readiness {
    let spec = &core.spec;
    if sources.ca.is_none() {
        Readiness::not_ready(
            "CertificateMissing",
            format!(
                "Secret {}/{} has no {CA_KEY}: the APIService cannot trust the API server yet",
                spec.api_server_namespace, spec.ssl_cert_secret
            ),
        )
    } else if spec.create_api_server() && available == 0 {
        Readiness::not_ready("ApiServerUnavailable", "no API server replica is available yet".to_owned())
    } else if !applied.missing.is_empty() {
        let kinds: Vec<_> = applied.missing.iter().map(String::as_str).collect();
        Readiness::not_ready(
            "CrdMissing",
            format!("the cluster has no {} resource (install KEDA / the Prometheus operator)", kinds.join(", ")),
        )
    } else {
        let message = format!("{count} objects applied; {available} API server replicas available");
        Readiness::ready(with_warnings(message, &core_warnings(core)))
    }
}
