//! The runner's RBAC: the API server may read the Secrets the runner names, and the runner
//! pods' account may read their own registration Secrets, each by name and nothing else.

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::crd::ScaledActionRunner;
use crate::operator::builders::role_ref;
use crate::operator::{ApiServer, Child};

/// Lets the API server read exactly the Secrets this runner names (by name, so it can watch
/// them with a `metadata.name` field selector), and nothing else in the namespace.
pub(super) fn api_server_secret_access(
    runner: &ScaledActionRunner,
    api_server: &ApiServer,
    meta: &impl Fn(String, &str) -> ObjectMeta,
) -> Vec<Child> {
    let mut names: Vec<String> = runner.spec.webhook_secret.iter().cloned().collect();
    if api_server.token_namespace.is_none() {
        names.extend(runner.spec.github_token_secret.iter().cloned());
    }
    names.retain(|secret| !secret.is_empty());
    names.dedup();
    if names.is_empty() {
        return Vec::new();
    }
    let object_name = format!("{}-api-server", runner.name_any());
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: api_server.name.clone(),
        namespace: Some(api_server.namespace.clone()),
        ..Subject::default()
    };
    secret_reader(meta(object_name, "api-server-access"), names, &["get", "list", "watch"], subject)
}

/// Lets the runner pods' service account read the runner's credential Secrets: only the
/// credentials init container holds a token, and it copies the one Secret of its own ordinal.
pub(super) fn credentials_access(
    runner: &ScaledActionRunner,
    account: &str,
    namespace: &str,
    meta: &impl Fn(String, &str) -> ObjectMeta,
) -> Vec<Child> {
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: account.to_owned(),
        namespace: Some(namespace.to_owned()),
        ..Subject::default()
    };
    let object_name = format!("{}-runner-credentials", runner.name_any());
    secret_reader(meta(object_name, "runner"), runner.spec.runner_secrets.clone(), &["get"], subject)
}

fn secret_reader(metadata: ObjectMeta, names: Vec<String>, verbs: &[&str], subject: Subject) -> Vec<Child> {
    let name = metadata.name.clone().unwrap_or_default();
    let role = Role {
        metadata: metadata.clone(),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            resource_names: Some(names),
            verbs: verbs.iter().map(|verb| (*verb).to_owned()).collect(),
            ..PolicyRule::default()
        }]),
    };
    let binding = RoleBinding { metadata, role_ref: role_ref("Role", &name), subjects: Some(vec![subject]) };
    vec![Child::typed(&role), Child::typed(&binding)]
}
