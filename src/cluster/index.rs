//! What the server knows of the cluster: the ScaledActionRunners and the Secrets they name, fed by
//! watch events. Pure: the edge runs the watches and asks which Secret watches are wanted now.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use crate::catalog::{APP_KEYS, Catalog, DEFAULT_NAMESPACE, RunnerProblem, TOKEN_KEY_PREFIX, WEBHOOK_SECRET_KEY};
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
    /// The names and versions of the Secrets of a namespace that holds runners (a metadata-only
    /// watch: no Secret's data comes down it); the Secrets runners name there are then read one
    /// by one with `get`, which RBAC grants by name.
    Metadata(String),
    /// Every Secret of the token namespace, data included, where the operator grants list and watch.
    Namespace(String),
}

impl SecretWatch {
    pub fn namespace(&self) -> &str {
        match self {
            Self::Metadata(namespace) | Self::Namespace(namespace) => namespace,
        }
    }

    fn covers(&self, key: &ObjectRef) -> bool {
        self.namespace() == key.namespace
    }
}

/// A Secret a runner names to be read with `get`, at the version its namespace's watch last saw.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretFetch {
    pub key: ObjectRef,
    /// Empty when the watch has not seen the Secret (it was named after the watch listed).
    pub version: String,
}

/// What [`ClusterIndex::fetched`] records for a Secret read as absent.
const ABSENT: &str = "";

/// The runners and Secrets seen so far, and which watches have delivered their first list.
///
/// Secret data is kept only for the Secrets runners name (and the token namespace's), and only
/// their webhook-secret, token and GitHub App keys; of the other Secrets of a runner's namespace nothing is
/// kept. Not `Debug`-derived: it holds secret bytes.
pub struct ClusterIndex {
    scopes: Vec<RunnerScope>,
    token_namespace: Option<String>,
    runners: BTreeMap<ObjectRef, ScaledActionRunner>,
    secrets: BTreeMap<ObjectRef, Secret>,
    listed_scopes: BTreeSet<RunnerScope>,
    listed_secrets: BTreeSet<SecretWatch>,
    /// The Secret watches the runners need, kept in step with the runners.
    wanted: BTreeSet<SecretWatch>,
    /// The Secrets runners name that are read with `get` (those outside the token namespace).
    named: BTreeSet<ObjectRef>,
    /// The version of each named Secret its namespace's watch last saw.
    versions: BTreeMap<ObjectRef, String>,
    /// The version each named Secret was last read for (`ABSENT` once known not to exist).
    fetched: BTreeMap<ObjectRef, String>,
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
            wanted: BTreeSet::new(),
            named: BTreeSet::new(),
            versions: BTreeMap::new(),
            fetched: BTreeMap::new(),
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

    /// Records an added or changed Secret of the token namespace's watch; ignored unless a wanted
    /// watch of it covers it.
    pub fn apply_secret(&mut self, secret: Secret) -> bool {
        let key = ObjectRef::of(&secret);
        if !self.read_whole(&key) {
            return false;
        }
        let secret = relevant_part(&secret);
        let changed = self.secrets.get(&key).is_none_or(|known| known.data != secret.data);
        self.secrets.insert(key, secret);
        changed
    }

    pub fn delete_secret(&mut self, secret: &Secret) -> bool {
        let key = ObjectRef::of(secret);
        self.read_whole(&key) && self.secrets.remove(&key).is_some()
    }

    /// A full list of what a [`SecretWatch::Namespace`] watch selects (after it (re)started);
    /// ignored once unwanted.
    pub fn list_secrets(&mut self, watch: &SecretWatch, secrets: Vec<Secret>) -> bool {
        if !matches!(watch, SecretWatch::Namespace(_)) || !self.wanted.contains(watch) {
            return false;
        }
        let listed: BTreeMap<ObjectRef, Secret> =
            secrets.iter().map(|s| (ObjectRef::of(s), relevant_part(s))).filter(|(key, _)| watch.covers(key)).collect();
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

    /// A Secret's name and version, as a metadata watch saw it added or changed; only the ones
    /// runners name are kept. True when it must be read again.
    pub fn apply_secret_version(&mut self, key: ObjectRef, version: String) -> bool {
        if !self.named.contains(&key) {
            return false;
        }
        let changed = self.versions.get(&key) != Some(&version);
        self.versions.insert(key, version);
        changed
    }

    /// A Secret a metadata watch saw deleted: if a runner names it, it signs nothing any more.
    pub fn delete_secret_version(&mut self, key: &ObjectRef) -> bool {
        if !self.named.contains(key) {
            return false;
        }
        self.versions.remove(key);
        self.fetched.insert(key.clone(), ABSENT.to_owned());
        self.secrets.remove(key).is_some()
    }

    /// A full list of a [`SecretWatch::Metadata`] watch's namespace, as names and versions: the
    /// named Secrets not in it do not exist. Ignored once unwanted.
    pub fn list_secret_versions(&mut self, watch: &SecretWatch, listed: Vec<(ObjectRef, String)>) -> bool {
        if !matches!(watch, SecretWatch::Metadata(_)) || !self.wanted.contains(watch) {
            return false;
        }
        let listed: BTreeMap<ObjectRef, String> =
            listed.into_iter().filter(|(key, _)| watch.covers(key) && self.named.contains(key)).collect();
        let mut changed = false;
        let named: Vec<ObjectRef> = self.named.iter().filter(|key| watch.covers(key)).cloned().collect();
        for key in named {
            match listed.get(&key) {
                Some(version) => {
                    self.versions.insert(key, version.clone());
                }
                None => changed |= self.delete_secret_version(&key),
            }
        }
        changed |= self.listed_secrets.insert(watch.clone());
        changed
    }

    /// The named Secrets to read now: those whose namespace has been listed and whose version
    /// differs from the one last read (or that were never read).
    pub fn secret_fetches(&self) -> Vec<SecretFetch> {
        self.named
            .iter()
            .filter(|key| self.listed_secrets.contains(&SecretWatch::Metadata(key.namespace.clone())))
            .filter_map(|key| {
                let version = self.versions.get(key).map_or(ABSENT, String::as_str);
                (self.fetched.get(key).map(String::as_str) != Some(version))
                    .then(|| SecretFetch { key: key.clone(), version: version.to_owned() })
            })
            .collect()
    }

    /// What a `get` for `fetch` answered (`None`: no such Secret). True when the catalog may change.
    pub fn fetched_secret(&mut self, fetch: &SecretFetch, secret: Option<Secret>) -> bool {
        let key = &fetch.key;
        if !self.named.contains(key) {
            return false;
        }
        match secret {
            Some(secret) => {
                let version = secret.metadata.resource_version.clone().unwrap_or_default();
                if fetch.version == ABSENT && !self.versions.contains_key(key) && !version.is_empty() {
                    // Named after its namespace was listed: from now on the watch's versions count.
                    self.versions.insert(key.clone(), version.clone());
                }
                let read_for = if fetch.version == ABSENT { version } else { fetch.version.clone() };
                self.fetched.insert(key.clone(), read_for);
                let secret = relevant_part(&secret);
                let changed = self.secrets.get(key).is_none_or(|known| known.data != secret.data);
                self.secrets.insert(key.clone(), secret);
                changed
            }
            None => {
                self.fetched.insert(key.clone(), ABSENT.to_owned());
                self.secrets.remove(key).is_some()
            }
        }
    }

    /// The Secret watches the runners need now: a metadata watch of each namespace whose runners
    /// name Secrets there, and the whole token namespace when there is one.
    pub fn wanted_secret_watches(&self) -> BTreeSet<SecretWatch> {
        self.wanted.clone()
    }

    /// Whether every runner watch and every wanted Secret watch has delivered its first list, and
    /// every named Secret that exists has been read.
    pub fn is_synced(&self) -> bool {
        self.runners_listed() && self.pending_secret_watches().is_empty()
    }

    /// Whether every runner watch has delivered its first list.
    pub fn runners_listed(&self) -> bool {
        self.scopes.iter().all(|s| self.listed_scopes.contains(s))
    }

    /// Wanted Secret watches that have not delivered their first list yet, or whose namespace
    /// has named Secrets still to be read.
    pub fn pending_secret_watches(&self) -> Vec<SecretWatch> {
        let fetching: BTreeSet<SecretWatch> =
            self.secret_fetches().into_iter().map(|fetch| SecretWatch::Metadata(fetch.key.namespace)).collect();
        self.wanted.iter().filter(|w| !self.listed_secrets.contains(w) || fetching.contains(w)).cloned().collect()
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

    /// Whether the Secret comes whole down a wanted watch of the token namespace.
    fn read_whole(&self, key: &ObjectRef) -> bool {
        self.wanted.contains(&SecretWatch::Namespace(key.namespace.clone()))
    }

    /// Recomputes the wanted watches and named Secrets from the runners, and drops what no runner
    /// needs any more.
    fn forget_unwanted(&mut self) {
        let mut wanted = BTreeSet::new();
        let mut named_keys = BTreeSet::new();
        for (key, runner) in &self.runners {
            let webhook = named(runner.spec.webhook_secret.as_deref()).map(|name| (key.namespace.clone(), name));
            let token = named(runner.spec.github_token_secret.as_deref())
                .map(|name| (self.token_namespace.clone().unwrap_or_else(|| key.namespace.clone()), name));
            for (namespace, name) in webhook.into_iter().chain(token) {
                if self.token_namespace.as_deref() == Some(namespace.as_str()) {
                    wanted.insert(SecretWatch::Namespace(namespace));
                } else {
                    wanted.insert(SecretWatch::Metadata(namespace.clone()));
                    named_keys.insert(ObjectRef::new(namespace, name));
                }
            }
        }
        self.secrets.retain(|key, _| {
            named_keys.contains(key) || wanted.contains(&SecretWatch::Namespace(key.namespace.clone()))
        });
        self.versions.retain(|key, _| named_keys.contains(key));
        self.fetched.retain(|key, _| named_keys.contains(key));
        self.listed_secrets.retain(|w| wanted.contains(w));
        self.wanted = wanted;
        self.named = named_keys;
    }
}

fn named(name: Option<&str>) -> Option<&str> {
    name.map(str::trim).filter(|n| !n.is_empty())
}

fn in_scope(scope: &RunnerScope, key: &ObjectRef) -> bool {
    scope.as_ref().is_none_or(|namespace| *namespace == key.namespace)
}

/// Only what the catalog reads: identity and the webhook-secret, token and GitHub App keys,
/// with `stringData` folded into `data` as the API server would.
fn relevant_part(secret: &Secret) -> Secret {
    let relevant =
        |key: &str| key == WEBHOOK_SECRET_KEY || key.starts_with(TOKEN_KEY_PREFIX) || APP_KEYS.contains(&key);
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

    fn names_in(namespace: &str) -> SecretWatch {
        SecretWatch::Metadata(namespace.into())
    }

    fn fetch(namespace: &str, name: &str, version: &str) -> SecretFetch {
        SecretFetch { key: ObjectRef::new(namespace, name), version: version.into() }
    }

    /// A Secret as a `get` answers it, at `version`.
    fn read(namespace: &str, name: &str, version: &str, data: &[(&str, &str)]) -> Option<Secret> {
        let mut secret = secret(namespace, name, data);
        secret.metadata.resource_version = Some(version.into());
        Some(secret)
    }

    /// Lists `namespace` with the given names and versions, then answers the fetches it asks for.
    fn list_and_read(index: &mut ClusterIndex, namespace: &str, secrets: &[(&str, &str, &str)]) {
        let listed = secrets.iter().map(|(name, version, _)| (ObjectRef::new(namespace, *name), version.to_string()));
        index.list_secret_versions(&names_in(namespace), listed.collect());
        for fetch in index.secret_fetches() {
            let found = secrets.iter().find(|(name, _, _)| *name == fetch.key.name);
            let answer =
                found.and_then(|(name, version, value)| read(namespace, name, version, &[("webhook-secret", value)]));
            index.fetched_secret(&fetch, answer);
        }
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
    fn one_metadata_watch_per_namespace_whose_runners_name_secrets() {
        let index = listed(vec![
            runner("ci", "api", "api", Some("api-hook"), Some("api-token")),
            runner("ci", "web", "web", Some("web-hook"), None),
            runner("docs", "docs", "docs", Some("docs-hook"), None),
            runner("plain", "plain", "plain", None, None),
        ]);
        let wanted: Vec<SecretWatch> = index.wanted_secret_watches().into_iter().collect();
        assert_eq!(wanted, vec![names_in("ci"), names_in("docs")]);
    }

    #[test]
    fn token_secrets_come_from_one_namespace_wide_watch_of_the_token_namespace() {
        let mut index = ClusterIndex::new(&[], Some("gaa-system".into()));
        index.list_runners(&None, vec![runner("ci", "api", "api", Some("api-hook"), Some("api-token"))]);
        let wanted: Vec<SecretWatch> = index.wanted_secret_watches().into_iter().collect();
        assert_eq!(wanted, vec![names_in("ci"), SecretWatch::Namespace("gaa-system".into())]);
    }

    #[test]
    fn not_synced_until_runners_and_every_wanted_secret_have_been_listed_and_read() {
        let mut index = ClusterIndex::new(&["ci".into(), "web".into()], None);
        assert!(!index.is_synced());
        index.list_runners(&Some("ci".into()), vec![runner("ci", "api", "api", Some("api-hook"), None)]);
        index.list_runners(&Some("web".into()), vec![]);
        assert!(index.runners_listed());
        assert!(!index.is_synced(), "the namespace's Secrets have not been listed yet");
        assert_eq!(index.pending_secret_watches(), vec![names_in("ci")]);
        assert!(index.secret_fetches().is_empty(), "nothing is read before its namespace is listed");
        index.list_secret_versions(&names_in("ci"), vec![(ObjectRef::new("ci", "api-hook"), "7".into())]);
        assert!(!index.is_synced(), "the named Secret has not been read yet");
        assert_eq!(index.secret_fetches(), vec![fetch("ci", "api-hook", "7")]);
        index.fetched_secret(&fetch("ci", "api-hook", "7"), read("ci", "api-hook", "7", &[("webhook-secret", "x")]));
        assert!(index.is_synced());
        assert!(index.secret_fetches().is_empty());
    }

    #[test]
    fn a_listed_but_missing_secret_is_a_warning_not_a_wait() {
        let mut index = listed(vec![runner("ci", "api", "api", Some("api-hook"), None)]);
        index.list_secret_versions(&names_in("ci"), vec![]);
        assert!(index.secret_fetches().is_empty());
        assert!(index.is_synced());
    }

    #[test]
    fn a_read_secret_signs_its_repository_and_a_new_version_is_read_again() {
        let mut index = listed(vec![runner("ci", "api", "api", Some("api-hook"), None)]);
        list_and_read(&mut index, "ci", &[("api-hook", "1", "one")]);
        assert_eq!(webhook_secrets_of(&index, "acme/api"), vec![b"one".to_vec()]);
        assert!(index.apply_secret_version(ObjectRef::new("ci", "api-hook"), "2".into()));
        assert_eq!(index.secret_fetches(), vec![fetch("ci", "api-hook", "2")]);
        assert!(
            index.fetched_secret(
                &fetch("ci", "api-hook", "2"),
                read("ci", "api-hook", "2", &[("webhook-secret", "two")])
            )
        );
        assert_eq!(webhook_secrets_of(&index, "acme/api"), vec![b"two".to_vec()]);
        assert!(!index.apply_secret_version(ObjectRef::new("ci", "api-hook"), "2".into()), "nothing changed");
        assert!(index.delete_secret_version(&ObjectRef::new("ci", "api-hook")));
        assert!(webhook_secrets_of(&index, "acme/api").is_empty());
        assert!(index.secret_fetches().is_empty(), "a deleted Secret is not read");
    }

    #[test]
    fn a_secret_named_after_its_namespace_was_listed_is_read_once() {
        let mut index = listed(vec![runner("ci", "api", "api", Some("api-hook"), None)]);
        list_and_read(&mut index, "ci", &[("api-hook", "1", "one"), ("new-hook", "5", "new")]);
        index.apply_runner(runner("ci", "new", "new", Some("new-hook"), None));
        assert_eq!(index.secret_fetches(), vec![fetch("ci", "new-hook", "")], "its version was never kept");
        index.fetched_secret(&fetch("ci", "new-hook", ""), read("ci", "new-hook", "5", &[("webhook-secret", "new")]));
        assert!(index.secret_fetches().is_empty());
        assert!(
            !index.apply_secret_version(ObjectRef::new("ci", "new-hook"), "5".into()),
            "the version it was read at"
        );
        assert_eq!(webhook_secrets_of(&index, "acme/new"), vec![b"new".to_vec()]);
    }

    #[test]
    fn secrets_no_runner_names_are_neither_kept_nor_read() {
        let mut index = listed(vec![runner("ci", "api", "api", Some("api-hook"), None)]);
        index.list_secret_versions(
            &names_in("ci"),
            vec![(ObjectRef::new("ci", "api-hook"), "1".into()), (ObjectRef::new("ci", "other"), "1".into())],
        );
        assert_eq!(index.secret_fetches(), vec![fetch("ci", "api-hook", "1")]);
        assert!(!index.apply_secret_version(ObjectRef::new("ci", "other"), "2".into()));
        assert!(
            !index.fetched_secret(&fetch("ci", "other", "2"), read("ci", "other", "2", &[("webhook-secret", "x")]))
        );
        assert!(!index.apply_secret(secret("ci", "other", &[("webhook-secret", "x")])), "not the token namespace");
        assert!(!index.list_secrets(&names_in("ci"), vec![secret("ci", "api-hook", &[("webhook-secret", "x")])]));
        assert!(webhook_secrets_of(&index, "acme/api").is_empty());
    }

    #[test]
    fn a_deleted_runner_disappears_and_its_secret_is_no_longer_wanted() {
        let api = runner("ci", "api", "api", Some("api-hook"), None);
        let mut index = listed(vec![api.clone()]);
        list_and_read(&mut index, "ci", &[("api-hook", "1", "one")]);
        assert_eq!(webhook_secrets_of(&index, "acme/api"), vec![b"one".to_vec()]);
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
    fn the_github_app_keys_of_a_token_secret_are_kept_and_nothing_else() {
        let app = [("app-id", "42"), ("private-key", "not a key"), ("installation-id", "7"), ("other", "x")];
        let kept = relevant_part(&secret("ci", "app", &app));
        let keys: Vec<&String> = kept.data.iter().flat_map(|d| d.keys()).collect();
        assert_eq!(keys, ["app-id", "installation-id", "private-key"]);
        let mut index = ClusterIndex::new(&[], Some("gaa-system".into()));
        index.list_runners(&None, vec![runner("ci", "api", "api", None, Some("app"))]);
        index.list_secrets(&SecretWatch::Namespace("gaa-system".into()), vec![secret("gaa-system", "app", &app)]);
        let (_, problems) = index.build_catalog(None);
        // The App's keys reached the catalog, which read them as App credentials.
        assert!(matches!(problems.as_slice(), [(_, RunnerProblem::AppCredentials { .. })]), "{problems:?}");
    }

    #[test]
    fn problems_name_the_runner_they_concern() {
        let mut bad = runner("ci", "bad", "web", None, None);
        bad.spec.max_runners = -1;
        let index = listed(vec![runner("ci", "api", "api", Some("api-hook"), None), bad]);
        let (catalog, problems) = index.build_catalog(None);
        assert_eq!(catalog.runners.len(), 1);
        let named: Vec<(String, bool)> = problems.iter().map(|(key, p)| (key.to_string(), p.is_warning())).collect();
        assert_eq!(named, vec![("ci/api".into(), true), ("ci/bad".into(), false)]);
    }

    #[test]
    fn debug_output_never_shows_secret_bytes() {
        let mut index = listed(vec![runner("ci", "api", "api", Some("api-hook"), None)]);
        list_and_read(&mut index, "ci", &[("api-hook", "1", "hunter2")]);
        assert_eq!(webhook_secrets_of(&index, "acme/api"), vec![b"hunter2".to_vec()]);
        assert!(!format!("{index:?}").contains("hunter2"));
    }
}
