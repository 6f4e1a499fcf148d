//! The runner's RBAC: the API server may read the Secrets the runner names (and watch the names
//! and versions of its namespace's Secrets), and the runner pods' account may read their own
//! registration Secrets, each by name and nothing else.

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::crd::ScaledActionRunner;
use crate::operator::builders::role_ref;
use crate::operator::{ApiServer, Child};

/// Lets the API server `get` exactly the Secrets this runner names, by name, and `list`/`watch`
/// the namespace's Secrets, which it does metadata-only: one watch per namespace tells it when a
/// named Secret changes, where one watch per Secret did not scale. RBAC cannot hold a list to
/// metadata, so the README says what this grant allows.
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
    let ephemeral = runner.spec.ephemeral();
    if names.is_empty() && !ephemeral {
        return Vec::new();
    }
    let object_name = format!("{}-api-server", runner.name_any());
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: api_server.name.clone(),
        namespace: Some(api_server.namespace.clone()),
        ..Subject::default()
    };
    let (role, binding) = secret_reader(meta(object_name, "api-server-access"), names, &["get"], subject);
    let mut role = role;
    let versions = PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["secrets".into()]),
        verbs: vec!["list".into(), "watch".into()],
        ..PolicyRule::default()
    };
    let rules = role.rules.get_or_insert_with(Vec::new);
    if names_are_empty(rules) {
        rules.clear();
    } else {
        rules.push(versions);
    }
    if ephemeral {
        // To check that a token's pod is one of this runner's (a pod's name is not known ahead),
        // and which registrations' pods are gone.
        rules.push(PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..PolicyRule::default()
        });
    }
    vec![Child::typed(&role), Child::typed(&binding)]
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
    let (role, binding) =
        secret_reader(meta(object_name, "runner"), runner.spec.runner_secrets.clone(), &["get"], subject);
    vec![Child::typed(&role), Child::typed(&binding)]
}

fn secret_reader(metadata: ObjectMeta, names: Vec<String>, verbs: &[&str], subject: Subject) -> (Role, RoleBinding) {
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
    (role, binding)
}

/// Whether the only rule names no Secret (an ephemeral runner naming none).
fn names_are_empty(rules: &[PolicyRule]) -> bool {
    rules.iter().all(|rule| rule.resource_names.as_ref().is_some_and(Vec::is_empty))
}
