//! What a `ScaledActionRunner` becomes: the runner StatefulSet, its KEDA ScaledObject, and the
//! narrow RBAC that lets the API server read the runner's Secrets and each runner pod read only
//! its own credentials. [`validate`] checks the spec, [`access`] builds the RBAC, [`pod`] the
//! StatefulSet and [`scaled_object`] KEDA's ScaledObject.

mod access;
mod drain;
mod pod;
mod scaled_object;
#[cfg(test)]
mod tests;
mod validate;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::children::{Child, SpecError, labels};
use super::{ApiServer, Settings};
use crate::crd::ScaledActionRunner;

pub use drain::DRAIN_SCRIPT;
use drain::{MESSAGE_RECORD_DIR, START_EPHEMERAL, START_WITH_CREDENTIALS};

/// Where each runner pod finds its own registration files (`.runner`, `.credentials`,
/// `.credentials_rsaparams`), copied there by the credentials init container.
pub const CREDENTIALS_DIR: &str = "/runner-credentials";
/// The runner's work directory (its volume claim is mounted here).
pub const WORK_DIR: &str = "/home/runner/_work";
/// Where the init container's own service-account token is mounted: the standard path, so the
/// in-cluster client finds it, in that container only.
pub(super) const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Where a just-in-time runner's pod token for the API server is mounted (audience
/// [`crate::jit::AUDIENCE`]: the Kubernetes API refuses it).
pub const JIT_TOKEN_DIR: &str = "/var/run/secrets/github-action-autoscaler";

/// Everything a runner needs applied, in apply order (RBAC and accounts before the pods that use
/// them, the StatefulSet before the ScaledObject that scales it).
pub fn runner_children(
    runner: &ScaledActionRunner,
    settings: &Settings,
    api_server: Option<&ApiServer>,
) -> Result<Vec<Child>, SpecError> {
    let name = runner.name_any();
    let namespace = runner.namespace().unwrap_or_else(|| crate::catalog::DEFAULT_NAMESPACE.to_owned());
    validate::validate(runner)?;
    let owner = runner.controller_owner_ref(&());
    let meta = |object_name: String, component: &str| ObjectMeta {
        name: Some(object_name),
        namespace: Some(namespace.clone()),
        labels: Some(labels(&name, component)),
        owner_references: owner.clone().map(|owner| vec![owner]),
        ..ObjectMeta::default()
    };

    let mut children = Vec::new();
    if let Some(api_server) = api_server {
        children.extend(access::api_server_secret_access(runner, api_server, &meta));
    }
    let template = runner.spec.runner.clone().unwrap_or_default();
    let credentials = !runner.spec.runner_secrets.is_empty();
    let ephemeral = runner.spec.ephemeral();
    let service_account = match template.service_account_name.as_deref().filter(|account| !account.is_empty()) {
        Some(account) => Some(account.to_owned()),
        // An account of its own, with no permissions: its pod-bound token only proves who the pod is.
        None if credentials || ephemeral => {
            let account = format!("{name}-runner");
            children.push(Child::typed(&ServiceAccount {
                metadata: meta(account.clone(), "runner"),
                automount_service_account_token: Some(false),
                ..ServiceAccount::default()
            }));
            Some(account)
        }
        None => None,
    };
    if credentials {
        let account = service_account.clone().unwrap_or_default();
        children.extend(access::credentials_access(runner, &account, &namespace, &meta));
    }
    // The API server's plain listener, in the cluster, where the pods ask for configurations.
    let jit_url = api_server.filter(|_| ephemeral).map(|api| {
        format!(
            "http://{}.{}.svc:{}/api/v1/namespaces/{namespace}/scaledactionrunners/{name}/jitconfig",
            api.name,
            api.namespace,
            crate::operator::ports::HTTP
        )
    });
    children.push(Child::typed(&pod::stateful_set(
        runner,
        &template,
        settings,
        service_account,
        jit_url,
        meta(name.clone(), "runner"),
    )?));
    if let Some(api_server) = api_server {
        children.push(Child::typed(&scaled_object::scaled_object(runner, api_server, meta(name.clone(), "runner"))));
    }
    Ok(children)
}

/// What the runner asks for that is not honoured as written, one sentence each (for its `Ready`
/// condition and `render`'s notes); the runner is still applied.
pub fn runner_warnings(runner: &ScaledActionRunner) -> Vec<String> {
    let spec = &runner.spec;
    let mut warnings = Vec::new();
    let image_named =
        spec.runner.as_ref().and_then(|template| template.image.as_deref()).is_some_and(|image| !image.is_empty());
    if spec.runner_secrets.is_empty() && !image_named && !spec.ephemeral() {
        warnings.push(
            "no runnerSecrets and no runner.image: the default image (GitHub's runner) does not register itself; \
             onboard with --runner-dir, or name an image that registers from its environment"
                .to_owned(),
        );
    }
    if let Some(limit) = registered_limit(runner)
        && limit < spec.max_runners
    {
        warnings.push(format!(
            "runnerSecrets names {limit} registered runners but maxRunners is {}: at most {limit} run, one per registration",
            spec.max_runners
        ));
    }
    warnings
}

/// With pre-registered runners, each pod needs a registration of its own: no more pods than
/// `runnerSecrets` can run.
pub(super) fn registered_limit(runner: &ScaledActionRunner) -> Option<i32> {
    let secrets = runner.spec.runner_secrets.len();
    (secrets > 0).then(|| i32::try_from(secrets).unwrap_or(i32::MAX))
}
