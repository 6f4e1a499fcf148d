//! The `ScaledActionRunner` reconcile.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};

use super::apply::{Applied, ApplyRules, apply_children, prune, runner_kinds};
use super::context::{Context, backoff_key};
use super::error::ReconcileError;
use super::invalid::{invalid_spec, unreadable};
use super::status::{Readiness, set_ready, with_warnings, write_status};
use super::{RUNNER_KIND, refresh_after};
use crate::crd::{CORE_NAME, ScaledActionRunner, ScaledActionRunnerStatus};
use crate::operator::ApiServer;
use crate::operator::runner_children::{runner_children, runner_warnings};

/// A runner as the watch reads it: ours, or why our types cannot read it.
pub type RunnerObject = DeserializeGuard<ScaledActionRunner>;

/// Dereference → validate and build → apply → prune → status.
pub async fn reconcile_runner(object: Arc<RunnerObject>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let runner = match &object.0 {
        Ok(runner) => runner,
        Err(invalid) => return unreadable::<_, ScaledActionRunnerStatus>(&ctx, &object, invalid, RUNNER_KIND).await,
    };
    let (Some(namespace), Some(name)) = (runner.namespace(), runner.metadata.name.clone()) else {
        return Err(ReconcileError::Unnamed);
    };
    let key = backoff_key(RUNNER_KIND, Some(&namespace), &name);

    // Dereference (the core store, no request): where the API server runs.
    let core = ctx.core()?;
    let api_server = core.as_ref().map(|core| ApiServer::from_core(&core.spec));

    // Validate and build (pure).
    let children = match runner_children(runner, &ctx.settings, api_server.as_ref()) {
        Ok(children) => children,
        Err(error) => {
            ctx.succeeded(&key);
            return invalid_spec(&ctx, runner, runner.status.as_ref(), &error, RUNNER_KIND).await;
        }
    };

    // Apply (client): access, then the StatefulSet (created once at minRunners), then KEDA's.
    let rules = ApplyRules { optional_groups: &["keda.sh"], stateful_set_replicas: Some(runner.spec.min_runners()) };
    let applied = apply_children(&ctx.client, &ctx.applied, &children, &rules).await?;

    // Prune (client): what the runner made earlier and no longer wants.
    prune(&ctx.client, &ctx.pruned, runner, Some(&namespace), &children, &runner_kinds()).await?;

    // Status (client): readiness and replicas; the demand task writes the demand.
    let replicas = stateful_set_replicas(&ctx.client, &namespace, &name).await;
    let readiness = readiness(runner, core.is_some(), &applied, children.len());
    let generation = runner.metadata.generation;
    write_status(&ctx.client, runner, runner.status.as_ref(), |status: &mut ScaledActionRunnerStatus| {
        set_ready(status, &readiness, generation);
        status.replicas = replicas;
        status.scope = Some(runner.spec.scope());
    })
    .await?;
    ctx.succeeded(&key);
    ctx.metrics.count(RUNNER_KIND, "applied");
    Ok(Action::requeue(refresh_after(readiness.ready)))
}

/// The replicas of the runner's StatefulSet, as KEDA left them; None when unknown.
async fn stateful_set_replicas(client: &Client, namespace: &str, name: &str) -> Option<i32> {
    let set = Api::<StatefulSet>::namespaced(client.clone(), namespace).get_opt(name).await.ok().flatten()?;
    set.status.map(|status| status.replicas)
}

/// What the runner's `Ready` condition says after its children were applied.
fn readiness(runner: &ScaledActionRunner, core: bool, applied: &Applied, count: usize) -> Readiness {
    let (name, namespace) = (runner.name_any(), runner.namespace().unwrap_or_default());
    if let Some(refusal) = &applied.refused {
        let how = format!(
            "the StatefulSet cannot take this change in place ({refusal}); to apply it, `kubectl delete statefulset \
             {name} -n {namespace} --cascade=orphan`: running runners keep running and the operator recreates it"
        );
        Readiness::not_ready("StatefulSetImmutable", how)
    } else if !core {
        Readiness::not_ready(
            "CoreMissing",
            format!("no ScaledActionRunnerCore named {CORE_NAME}: the runners are not scaled"),
        )
    } else if !applied.missing.is_empty() {
        let kinds: Vec<_> = applied.missing.iter().map(String::as_str).collect();
        Readiness::not_ready(
            "KedaMissing",
            format!("KEDA is not installed: the cluster has no {} resource", kinds.join(", ")),
        )
    } else {
        Readiness::ready(with_warnings(format!("{count} objects applied"), &runner_warnings(runner)))
    }
}
