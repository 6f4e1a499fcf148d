//! Writing children: server-side apply with the one field manager (skipped while nothing
//! changed), the runner StatefulSet's one-time creation with replicas, and pruning what an
//! owner no longer wants.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::applied::{AppliedChildren, PrunedSets, child_version};
use super::error::ReconcileError;
use crate::operator::{Child, FIELD_MANAGER, MANAGED_BY};

/// Field manager of the one apply that creates a StatefulSet with `minRunners` replicas. It never
/// applies again, so the replicas it set pass to KEDA's HPA instead of being reset by ours.
pub const INITIAL_REPLICAS_MANAGER: &str = "github-action-autoscaler-initial-replicas";

/// How a set of children is applied.
pub(super) struct ApplyRules<'a> {
    /// API groups whose CRDs may be absent (KEDA, Prometheus): their children are skipped.
    pub optional_groups: &'a [&'a str],
    /// The runner's StatefulSet: created once with these replicas, and a change it cannot take
    /// in place reported instead of failing.
    pub stateful_set_replicas: Option<i32>,
}

/// What applying left undone without failing.
#[derive(Debug, Default)]
pub(super) struct Applied {
    /// Kinds whose CRD the cluster does not have.
    pub missing: BTreeSet<String>,
    /// Why the StatefulSet refused a change in place.
    pub refused: Option<String>,
}

/// Applies every child in order.
pub(super) async fn apply_children(
    client: &Client,
    applied: &AppliedChildren,
    children: &[Child],
    rules: &ApplyRules<'_>,
) -> Result<Applied, ReconcileError> {
    let mut outcome = Applied::default();
    for child in children {
        let stateful_set = child.resource.kind == "StatefulSet" && rules.stateful_set_replicas.is_some();
        if let Some(replicas) = rules.stateful_set_replicas.filter(|_| stateful_set) {
            create_with_replicas(client, child, replicas).await?;
        }
        match apply(client, applied, child).await {
            Ok(()) => {}
            // The CRD is absent until KEDA / the Prometheus operator is installed: say so, keep the rest.
            Err(ReconcileError::Apply { source: kube::Error::Api(status), .. })
                if status.code == 404 && rules.optional_groups.contains(&child.resource.group.as_str()) =>
            {
                outcome.missing.insert(child.resource.kind.clone());
            }
            // A change a StatefulSet cannot take in place (its volume claim templates, say):
            // never delete it for the user, since that would stop running jobs; say how.
            Err(ReconcileError::Apply { source: kube::Error::Api(status), .. })
                if status.code == 422 && stateful_set =>
            {
                outcome.refused = Some(status.message.clone());
            }
            Err(error) => return Err(error),
        }
    }
    Ok(outcome)
}

/// Server-side apply with the one field manager, unless the child is as the last apply of the
/// same object left it (then a read, not a write).
async fn apply(client: &Client, applied: &AppliedChildren, child: &Child) -> Result<(), ReconcileError> {
    let api = api_for(client, &child.resource, child.object.namespace().as_deref());
    let name = child.object.name_any();
    let failed = |source| ReconcileError::Apply { object: child.describe(), source };
    let (key, digest) = (AppliedChildren::key(child), AppliedChildren::digest(child));
    if let Some(version) = applied.version_after(&key, &digest) {
        let live = api.get_metadata_opt(&name).await.map_err(failed)?;
        if live.is_some_and(|live| child_version(&live.metadata).as_ref() == Some(&version)) {
            return Ok(());
        }
    }
    let result = api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&child.object)).await;
    match result {
        Ok(object) => {
            applied.record(key, digest, child_version(&object.metadata));
            Ok(())
        }
        Err(source) => {
            applied.record(key, digest, None);
            Err(failed(source))
        }
    }
}

/// Creates a runner StatefulSet that does not exist yet with `replicas` (the runner's
/// `minRunners`), applied by a manager that never applies again, so KEDA's HPA owns replicas
/// from then on and our applies (which leave replicas out) never reset them.
async fn create_with_replicas(client: &Client, child: &Child, replicas: i32) -> Result<(), ReconcileError> {
    let api = api_for(client, &child.resource, child.object.namespace().as_deref());
    let name = child.object.name_any();
    let failed = |source| ReconcileError::Apply { object: child.describe(), source };
    if api.get_opt(&name).await.map_err(failed)?.is_some() {
        return Ok(());
    }
    let mut initial = child.object.clone();
    if let Some(spec) = initial.data.get_mut("spec").and_then(|spec| spec.as_object_mut()) {
        spec.insert("replicas".into(), json!(replicas));
    }
    api.patch(&name, &PatchParams::apply(INITIAL_REPLICAS_MANAGER).force(), &Patch::Apply(&initial))
        .await
        .map_err(failed)?;
    Ok(())
}

pub(super) fn api_for(client: &Client, resource: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

/// Deletes objects this owner made earlier that it no longer wants (a runner that stopped
/// naming secrets, a core that stopped asking for memcached). Only objects carrying the owner's
/// uid are touched.
pub(super) async fn prune<K: Resource<DynamicType = ()>>(
    client: &Client,
    pruned: &PrunedSets,
    owner: &K,
    namespace: Option<&str>,
    wanted: &[Child],
    kinds: &[ApiResource],
) -> Result<(), ReconcileError> {
    let Some(uid) = owner.meta().uid.clone() else {
        return Ok(());
    };
    let digest = PrunedSets::digest(wanted);
    if pruned.holds(&uid, &digest) {
        return Ok(());
    }
    let selector = format!("{}={},{}={}", "app.kubernetes.io/instance", owner.name_any(), MANAGED_BY.0, MANAGED_BY.1);
    for kind in kinds {
        let api = api_for(client, kind, namespace);
        let listed = match api.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => list,
            // An optional CRD (KEDA, Prometheus) that is not installed holds nothing to prune.
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(source) => return Err(ReconcileError::Prune { object: format!("{} list", kind.kind), source }),
        };
        for object in listed {
            let owned = object.owner_references().iter().any(|reference| reference.uid == uid);
            let still_wanted = wanted.iter().any(|child| {
                child.resource.kind == kind.kind
                    && child.resource.group == kind.group
                    && child.object.name_any() == object.name_any()
                    && child.object.namespace() == object.namespace()
            });
            if owned && !still_wanted {
                let object_api = api_for(client, kind, object.namespace().as_deref());
                let described = format!("{} {}", kind.kind, object.name_any());
                object_api
                    .delete(&object.name_any(), &DeleteParams::background())
                    .await
                    .map_err(|source| ReconcileError::Prune { object: described.clone(), source })?;
                tracing::info!(object = %described, "removed an object no longer wanted");
            }
        }
    }
    pruned.record(uid, digest);
    Ok(())
}

/// The kinds a runner's children may have, for pruning (the StatefulSet is always wanted).
pub(super) fn runner_kinds() -> Vec<ApiResource> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    vec![
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<Role>(&()),
        ApiResource::erase::<RoleBinding>(&()),
        ApiResource::erase::<crate::operator::keda::ScaledObject>(&()),
    ]
}

/// The kinds the core's children may have, for pruning.
pub(super) fn core_kinds() -> Vec<ApiResource> {
    use k8s_openapi::api::core::v1::{Service, ServiceAccount};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
    vec![
        ApiResource::erase::<Deployment>(&()),
        ApiResource::erase::<StatefulSet>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<PodDisruptionBudget>(&()),
        ApiResource::erase::<Role>(&()),
        ApiResource::erase::<RoleBinding>(&()),
        ApiResource::erase::<ClusterRole>(&()),
        ApiResource::erase::<ClusterRoleBinding>(&()),
        ApiResource::erase::<APIService>(&()),
        ApiResource::erase::<crate::operator::keda::ClusterTriggerAuthentication>(&()),
    ]
}
