//! What the server knows of the cluster: the ScaledActionRunners and the Secrets they name, fed by
//! watch events. Pure: the edge runs the watches and asks which Secret watches are wanted now.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use crate::catalog::{Catalog, DEFAULT_NAMESPACE, RunnerProblem, TOKEN_KEY_PREFIX, WEBHOOK_SECRET_KEY};
use crate::crd::ScaledActionRunner;
use crate::webhook::SecretBytes;

/// A namespaced object's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }

    fn of<K: ResourceExt>(object: &K) -> Self {
        Self::new(object.namespace().unwrap_or_else(|| DEFAULT_NAMESPACE.into()), object.name_any())
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where ScaledActionRunners are watched: one namespace, or all of them (`None`).
pub type RunnerScope = Option<String>;

/// One watch on Secrets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretWatch {
    /// One Secret, selected by `metadata.name`: RBAC can then name it in `resourceNames`.
    Named(ObjectRef),
    /// Every Secret of the token namespace, where the operator grants list and watch.
    Namespace(String),
}

impl SecretWatch {
    pub fn namespace(&self) -> &str {
        match self {
            Self::Named(key) => &key.namespace,
            Self::Namespace(namespace) => namespace,
        }
    }

    /// The field selector of the watch, if it selects one Secret.
    pub fn field_selector(&self) -> Option<String> {
        match self {
            Self::Named(key) => Some(format!("metadata.name={}", key.name)),
            Self::Namespace(_) => None,
        }
    }

    fn covers(&self, key: &ObjectRef) -> bool {
        match self {
            Self::Named(named) => named == key,
            Self::Namespace(namespace) => *namespace == key.namespace,
        }
    }
}

/// The runners and Secrets seen so far, and which watches have delivered their first list.
///
/// Secrets are kept only while a wanted watch covers them, and only their webhook-secret and
/// token keys. Not `Debug`-derived: it holds secret bytes.
pub struct ClusterIndex {
    scopes: Vec<RunnerScope>,
    token_namespace: Option<String>,
    runners: BTreeMap<ObjectRef, ScaledActionRunner>,
    secrets: BTreeMap<ObjectRef, Secret>,
    listed_scopes: BTreeSet<RunnerScope>,
    listed_secrets: BTreeSet<SecretWatch>,
}

impl fmt::Debug for ClusterIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterIndex")
            .field("scopes", &self.scopes)
            .field("token_namespace", &self.token_namespace)
            .field("runners", &self.runners.len())
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

impl ClusterIndex {
    /// Runners are watched in `namespaces` (none: all of them, with one watch); `token_namespace`
    /// holds every runner's `githubTokenSecret` when given.
    pub fn new(namespaces: &[String], token_namespace: Option<String>) -> Self {
        let mut scopes: Vec<RunnerScope> =
            namespaces.iter().map(|n| n.trim()).filter(|n| !n.is_empty()).map(|n| Some(n.to_string())).collect();
        scopes.sort();
        scopes.dedup();
        if scopes.is_empty() {
            scopes.push(None);
        }
        let token_namespace = token_namespace.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
        Self {
            scopes,
            token_namespace,
            runners: BTreeMap::new(),
            secrets: BTreeMap::new(),
            listed_scopes: BTreeSet::new(),
            listed_secrets: BTreeSet::new(),
        }
    }

    /// The runner watches to run, one per scope.
    pub fn runner_scopes(&self) -> &[RunnerScope] {
        &self.scopes
    }

    pub fn token_namespace(&self) -> Option<&str> {
        self.token_namespace.as_deref()
    }

    /// Records an added or changed runner; true when the catalog may change (a status update
    /// alone does not).
    pub fn apply_runner(&mut self, runner: ScaledActionRunner) -> bool {
        let key = ObjectRef::of(&runner);
        let changed = self.runners.get(&key).is_none_or(|known| known.spec != runner.spec);
        self.runners.insert(key, runner);
        if changed {
            self.forget_unwanted();
        }
        changed
    }

    pub fn delete_runner(&mut self, runner: &ScaledActionRunner) -> bool {
        let removed = self.runners.remove(&ObjectRef::of(runner)).is_some();
        if removed {
            self.forget_unwanted();
        }
        removed
    }

    /// A full list of the runners in `scope` (after a watch (re)started): runners of the scope that
    /// are not in it are gone.
    pub fn list_runners(&mut self, scope: &RunnerScope, runners: Vec<ScaledActionRunner>) -> bool {
        let listed: BTreeMap<ObjectRef, ScaledActionRunner> =
            runners.into_iter().map(|r| (ObjectRef::of(&r), r)).collect();
        let before = self.runners.len();
        let mut changed = false;
        self.runners.retain(|key, known| {
            let keep = !in_scope(scope, key) || listed.get(key).is_some_and(|r| r.spec == known.spec);
            changed |= !keep;
            keep
        });
        changed |= before != self.runners.len();
        for (key, runner) in listed {
            changed |= !self.runners.contains_key(&key);
            self.runners.insert(key, runner);
        }
        changed |= self.listed_scopes.insert(scope.clone());
        self.forget_unwanted();
        changed
    }

    /// Records an added or changed Secret; ignored unless a wanted watch covers it.
    pub fn apply_secret(&mut self, secret: Secret) -> bool {
        let key = ObjectRef::of(&secret);
        if !self.is_wanted(&key) {
            return false;
        }
        let secret = relevant_part(&secret);
        let changed = self.secrets.get(&key).is_none_or(|known| known.data != secret.data);
        self.secrets.insert(key, secret);
        changed
    }

    pub fn delete_secret(&mut self, secret: &Secret) -> bool {
        self.secrets.remove(&ObjectRef::of(secret)).is_some()
    }

    /// A full list of what `watch` selects (after it (re)started); ignored once unwanted.
    pub fn list_secrets(&mut self, watch: &SecretWatch, secrets: Vec<Secret>) -> bool {
        if !self.wanted_secret_watches().contains(watch) {
            return false;
        }
        let listed: BTreeMap<ObjectRef, Secret> = secrets
            .iter()
            .map(|s| (ObjectRef::of(s), relevant_part(s)))
            .filter(|(key, _)| watch.covers(key) && self.is_wanted(key))
            .collect();
        let before = self.secrets.len();
        let mut changed = false;
        self.secrets.retain(|key, known| {
            let keep = !watch.covers(key) || listed.get(key).is_some_and(|s| s.data == known.data);
            changed |= !keep;
            keep
        });
        changed |= before != self.secrets.len();
        for (key, secret) in listed {
            changed |= !self.secrets.contains_key(&key);
            self.secrets.insert(key, secret);
        }
        changed |= self.listed_secrets.insert(watch.clone());
        changed
    }

    /// The Secret watches the runners need now: each runner's webhook Secret by name, and its
    /// token Secret by name, or the whole token namespace when there is one.
    pub fn wanted_secret_watches(&self) -> BTreeSet<SecretWatch> {
        let mut wanted = BTreeSet::new();
        for (key, runner) in &self.runners {
            if let Some(name) = named(runner.spec.webhook_secret.as_deref()) {
                wanted.insert(self.watch_for(ObjectRef::new(key.namespace.clone(), name)));
            }
            if let Some(name) = named(runner.spec.github_token_secret.as_deref()) {
                let namespace = self.token_namespace.clone().unwrap_or_else(|| key.namespace.clone());
                wanted.insert(self.watch_for(ObjectRef::new(namespace, name)));
            }
        }
        wanted
    }

    /// Whether every runner watch and every wanted Secret watch has delivered its first list.
    pub fn is_synced(&self) -> bool {
        self.runners_listed() && self.pending_secret_watches().is_empty()
    }

    /// Whether every runner watch has delivered its first list.
    pub fn runners_listed(&self) -> bool {
        self.scopes.iter().all(|s| self.listed_scopes.contains(s))
    }

    /// Wanted Secret watches that have not delivered their first list yet.
    pub fn pending_secret_watches(&self) -> Vec<SecretWatch> {
        self.wanted_secret_watches().into_iter().filter(|w| !self.listed_secrets.contains(w)).collect()
    }

    pub fn runners(&self) -> impl Iterator<Item = (&ObjectRef, &ScaledActionRunner)> {
        self.runners.iter()
    }

    /// The catalog of the runners and Secrets seen, with each problem and the runner it concerns.
    pub fn build_catalog(&self, organisation: Option<SecretBytes>) -> (Catalog, Vec<(ObjectRef, RunnerProblem)>) {
        let keys: Vec<&ObjectRef> = self.runners.keys().collect();
        let (catalog, problems) = Catalog::build_with(
            self.runners.values(),
            self.secrets.values(),
            organisation,
            self.token_namespace.as_deref(),
        );
        let problems = problems
            .into_iter()
            .filter_map(|(position, problem)| keys.get(position).map(|key| ((*key).clone(), problem)))
            .collect();
        (catalog, problems)
    }

    /// A Secret in the token namespace is read through that namespace's watch.
    fn watch_for(&self, key: ObjectRef) -> SecretWatch {
        match &self.token_namespace {
            Some(namespace) if *namespace == key.namespace => SecretWatch::Namespace(namespace.clone()),
            _ => SecretWatch::Named(key),
        }
    }

    fn is_wanted(&self, key: &ObjectRef) -> bool {
        self.wanted_secret_watches().iter().any(|w| w.covers(key))
    }

    /// Drops Secrets and list marks of watches no runner needs any more.
    fn forget_unwanted(&mut self) {
        let wanted = self.wanted_secret_watches();
        self.secrets.retain(|key, _| wanted.iter().any(|w| w.covers(key)));
        self.listed_secrets.retain(|w| wanted.contains(w));
    }
}

fn named(name: Option<&str>) -> Option<&str> {
    name.map(str::trim).filter(|n| !n.is_empty())
}

fn in_scope(scope: &RunnerScope, key: &ObjectRef) -> bool {
    scope.as_ref().is_none_or(|namespace| *namespace == key.namespace)
}

/// Only what the catalog reads: identity and the webhook-secret and token keys, with
/// `stringData` folded into `data` as the API server would.
fn relevant_part(secret: &Secret) -> Secret {
    let relevant = |key: &str| key == WEBHOOK_SECRET_KEY || key.starts_with(TOKEN_KEY_PREFIX);
    let mut data: BTreeMap<String, k8s_openapi::ByteString> =
        secret.data.iter().flatten().filter(|(k, _)| relevant(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    for (key, text) in secret.string_data.iter().flatten().filter(|(k, _)| relevant(k)) {
        data.insert(key.clone(), k8s_openapi::ByteString(text.as_bytes().to_vec()));
    }
    let mut kept = Secret::default();
    kept.metadata.name = secret.metadata.name.clone();
    kept.metadata.namespace = secret.metadata.namespace.clone();
    kept.data = Some(data);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use serde_json::json;

    fn runner(
        namespace: &str,
        name: &str,
        repo: &str,
        webhook: Option<&str>,
        token: Option<&str>,
    ) -> ScaledActionRunner {
        serde_json::from_value(json!({
            "apiVersion": "runner.devjoes.com/v1alpha1",
            "kind": "ScaledActionRunner",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"owner": "acme", "repo": repo, "maxRunners": 3, "webhookSecret": webhook, "githubTokenSecret": token},
        }))
        .unwrap()
    }

    fn secret(namespace: &str, name: &str, data: &[(&str, &str)]) -> Secret {
        let mut secret = Secret::default();
        secret.metadata.name = Some(name.into());
        secret.metadata.namespace = Some(namespace.into());
        secret.string_data = Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        secret
    }

    fn named(namespace: &str, name: &str) -> SecretWatch {
        SecretWatch::Named(ObjectRef::new(namespace, name))
    }

    /// An index over all namespaces whose runner list has been seen.
    fn listed(runners: Vec<ScaledActionRunner>) -> ClusterIndex {
        let mut index = ClusterIndex::new(&[], None);
        index.list_runners(&None, runners);
        index
    }

    fn webhook_secrets_of(index: &ClusterIndex, repo: &str) -> Vec<Vec<u8>> {
        let (catalog, _) = index.build_catalog(None);
        catalog.secrets.for_repo(Some(repo)).map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn no_namespaces_means_one_cluster_wide_runner_watch() {
        assert_eq!(ClusterIndex::new(&[], None).runner_scopes(), &[None]);
        let index = ClusterIndex::new(&["b".into(), " a ".into(), "b".into(), String::new()], None);
        assert_eq!(index.runner_scopes(), &[Some("a".into()), Some("b".into())]);
    }

    #[test]
    fn each_runner_wants_its_webhook_and_token_secrets_by_name_in_its_namespace() {
        let index = listed(vec![
            runner("ci", "api", "api", Some("api-hook"), Some("api-token")),
            runner("web", "web", "web", Some("web-hook"), None),
        ]);
        let wanted: Vec<SecretWatch> = index.wanted_secret_watches().into_iter().collect();
        assert_eq!(wanted, vec![named("ci", "api-hook"), named("ci", "api-token"), named("web", "web-hook")]);
        assert_eq!(named("ci", "api-hook").field_selector().as_deref(), Some("metadata.name=api-hook"));
    }

    #[test]
    fn token_secrets_come_from_one_namespace_wide_watch_of_the_token_namespace() {
        let mut index = ClusterIndex::new(&[], Some("gaa-system".into()));
        index.list_runners(&None, vec![runner("ci", "api", "api", Some("api-hook"), Some("api-token"))]);
        let wanted: Vec<SecretWatch> = index.wanted_secret_watches().into_iter().collect();
        assert_eq!(wanted, vec![named("ci", "api-hook"), SecretWatch::Namespace("gaa-system".into())]);
        assert_eq!(SecretWatch::Namespace("gaa-system".into()).field_selector(), None);
    }

    #[test]
    fn not_synced_until_runners_and_every_wanted_secret_have_been_listed() {
        let mut index = ClusterIndex::new(&["ci".into(), "web".into()], None);
        assert!(!index.is_synced());
        index.list_runners(&Some("ci".into()), vec![runner("ci", "api", "api", Some("api-hook"), None)]);
        index.list_runners(&Some("web".into()), vec![]);
        assert!(index.runners_listed());
        assert!(!index.is_synced(), "the webhook Secret has not been listed yet");
        assert_eq!(index.pending_secret_watches(), vec![named("ci", "api-hook")]);
        index.list_secrets(&named("ci", "api-hook"), vec![]);
        assert!(index.is_synced(), "a listed but missing Secret is a warning, not a wait");
    }

    #[test]
    fn a_listed_secret_signs_its_repository_and_a_change_replaces_it() {
        let mut index = listed(vec![runner("ci", "api", "api", Some("api-hook"), None)]);
        assert!(
            index.list_secrets(&named("ci", "api-hook"), vec![secret("ci", "api-hook", &[("webhook-secret", "one")])])
        );
        assert_eq!(webhook_secrets_of(&index, "acme/api"), vec![b"one".to_vec()]);
        assert!(index.apply_secret(secret("ci", "api-hook", &[("webhook-secret", "two")])));
        assert_eq!(webhook_secrets_of(&index, "acme/api"), vec![b"two".to_vec()]);
        assert!(!index.apply_secret(secret("ci", "api-hook", &[("webhook-secret", "two")])), "nothing changed");
        assert!(index.delete_secret(&secret("ci", "api-hook", &[])));
        assert!(webhook_secrets_of(&index, "acme/api").is_empty());
    }

    #[test]
    fn secrets_no_runner_names_are_not_kept() {
        let mut index = listed(vec![runner("ci", "api", "api", Some("api-hook"), None)]);
        assert!(!index.apply_secret(secret("ci", "other", &[("webhook-secret", "x")])));
        assert!(!index.list_secrets(&named("ci", "other"), vec![secret("ci", "other", &[("webhook-secret", "x")])]));
        assert!(!index.apply_secret(secret("web", "api-hook", &[("webhook-secret", "x")])), "wrong namespace");
    }

    #[test]
    fn a_deleted_runner_disappears_and_its_secret_is_no_longer_wanted() {
        let api = runner("ci", "api", "api", Some("api-hook"), None);
        let mut index = listed(vec![api.clone()]);
        index.list_secrets(&named("ci", "api-hook"), vec![secret("ci", "api-hook", &[("webhook-secret", "one")])]);
        assert!(index.delete_runner(&api));
        assert!(index.wanted_secret_watches().is_empty());
        assert_eq!(index.runners().count(), 0);
        index.apply_runner(api);
        assert!(webhook_secrets_of(&index, "acme/api").is_empty(), "the forgotten Secret must be listed again");
        assert!(!index.is_synced());
    }

    #[test]
    fn a_status_update_does_not_change_the_catalog_but_a_spec_change_does() {
        let api = runner("ci", "api", "api", None, None);
        let mut index = listed(vec![api.clone()]);
        let mut with_status = api.clone();
        with_status.status = Some(Default::default());
        assert!(!index.apply_runner(with_status));
        let mut bigger = api;
        bigger.spec.max_runners = 9;
        assert!(index.apply_runner(bigger));
    }

    #[test]
    fn a_relist_drops_runners_of_its_scope_that_are_gone() {
        let mut index = ClusterIndex::new(&["ci".into(), "web".into()], None);
        index.list_runners(
            &Some("ci".into()),
            vec![runner("ci", "a", "a", None, None), runner("ci", "b", "b", None, None)],
        );
        index.list_runners(&Some("web".into()), vec![runner("web", "w", "w", None, None)]);
        assert!(index.list_runners(&Some("ci".into()), vec![runner("ci", "b", "b", None, None)]));
        let names: Vec<String> = index.runners().map(|(key, _)| key.to_string()).collect();
        assert_eq!(names, vec!["ci/b", "web/w"]);
    }

    #[test]
    fn tokens_are_read_from_the_token_namespace_when_there_is_one() {
        let mut index = ClusterIndex::new(&[], Some("gaa-system".into()));
        index.list_runners(&None, vec![runner("ci", "api", "api", None, Some("pat"))]);
        let watch = SecretWatch::Namespace("gaa-system".into());
        index.list_secrets(
            &watch,
            vec![
                secret("gaa-system", "pat", &[("token", "t1"), ("token2", "t2"), ("other", "x")]),
                secret("ci", "pat", &[("token", "wrong")]),
            ],
        );
        let (catalog, problems) = index.build_catalog(None);
        assert!(problems.is_empty(), "{problems:?}");
        let tokens: Vec<&[u8]> = catalog.tokens["acme/api"].iter().map(|secret| secret.expose_secret()).collect();
        assert_eq!(tokens, vec![b"t1".as_slice(), b"t2".as_slice()]);
    }

    #[test]
    fn problems_name_the_runner_they_concern() {
        let index =
            listed(vec![runner("ci", "api", "api", Some("api-hook"), None), runner("ci", "bad", " ", None, None)]);
        let (catalog, problems) = index.build_catalog(None);
        assert_eq!(catalog.runners.len(), 1);
        let named: Vec<(String, bool)> = problems.iter().map(|(key, p)| (key.to_string(), p.is_warning())).collect();
        assert_eq!(named, vec![("ci/api".into(), true), ("ci/bad".into(), false)]);
    }

    #[test]
    fn debug_output_never_shows_secret_bytes() {
        let mut index = listed(vec![runner("ci", "api", "api", Some("api-hook"), None)]);
        index.apply_secret(secret("ci", "api-hook", &[("webhook-secret", "hunter2")]));
        assert!(!format!("{index:?}").contains("hunter2"));
    }
}
