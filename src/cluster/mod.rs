//! `serve` in a cluster: runners and the Secrets they name, watched through the Kubernetes API.
//!
//! [`index::ClusterIndex`] decides (pure); this edge runs one watch per runner scope, one
//! metadata-only Secret watch per namespace whose runners name Secrets (names and versions, never
//! data), a `get` of each named Secret when its version changes (RBAC grants `get` by name only),
//! and a whole watch of the token namespace when there is one. It feeds their events to the index
//! and publishes a rebuilt [`Catalog`] after each burst of changes.

pub mod index;

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::crd::ScaledActionRunner;
use crate::webhook::SecretBytes;
use index::{ClusterIndex, ObjectRef, RunnerScope, SecretFetch, SecretWatch};

/// Quiet time after a change before the catalog is rebuilt, so a burst rebuilds once.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// A steady stream of changes still rebuilds at least this often.
const MAX_DEBOUNCE: Duration = Duration::from_secs(2);

/// The default [`WatchConfig::sync_grace`].
pub const SYNC_GRACE: Duration = Duration::from_secs(10);

/// Named Secrets read at once: thousands named at start are read a few at a time, on a few
/// connections, instead of all at once.
const CONCURRENT_FETCHES: usize = 16;

/// Events applied together before the watches and reads are reconciled.
const BATCH: usize = 1024;

/// The first wait before a failed `get` of a named Secret is retried; it doubles up to a minute.
const FETCH_RETRY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Namespaces watched for ScaledActionRunners; empty watches all of them.
    pub namespaces: Vec<String>,
    /// Where every `githubTokenSecret` lives, when not in the runner's namespace.
    pub token_namespace: Option<String>,
    /// The organisation-wide webhook secret, added to every catalog.
    pub organisation: Option<SecretBytes>,
    pub debounce: Duration,
    /// How long a change waits for the Secret watches it started to list before it is published.
    pub sync_grace: Duration,
}

impl WatchConfig {
    pub fn new(namespaces: Vec<String>, token_namespace: Option<String>, organisation: Option<SecretBytes>) -> Self {
        Self { namespaces, token_namespace, organisation, debounce: DEBOUNCE, sync_grace: SYNC_GRACE }
    }

    /// The watches `--namespaces` and `--token-namespace` ask for, with the organisation's secret
    /// (read from `--webhook-secret-file` by the caller).
    pub fn from_args(args: &crate::config::ClusterArgs, organisation: Option<SecretBytes>) -> Self {
        Self::new(args.namespaces.clone(), args.token_namespace.clone(), organisation)
    }
}

/// A catalog built from what the watches saw; published once every watch has listed (a Secret
/// watch that cannot list is given up on after [`WatchConfig::sync_grace`]).
#[derive(Debug)]
pub struct CatalogUpdate {
    pub catalog: Catalog,
    /// Runners left out for an error (warnings are logged but not counted, as with manifests).
    pub problems: usize,
}

/// The latest catalog; `None` until the first full list of runners and their Secrets.
pub type CatalogUpdates = watch::Receiver<Option<Arc<CatalogUpdate>>>;

/// One event of one watch, or one named Secret read; Secret watches carry the generation of the
/// task that ran them, so the tail of a stopped watch is told from a restarted one.
enum Update {
    Runners(RunnerScope, Box<Event<ScaledActionRunner>>),
    Secrets(SecretWatch, u64, Box<Event<Secret>>),
    Versions(SecretWatch, u64, Box<Event<PartialObjectMeta<Secret>>>),
    Fetched(SecretFetch, Option<Box<Secret>>),
}

/// Starts the watches; they run until `stop` is cancelled (or the returned task is aborted).
pub fn start(client: Client, config: WatchConfig, stop: CancellationToken) -> (CatalogUpdates, JoinHandle<()>) {
    let (publish, updates) = watch::channel(None);
    let task = tokio::spawn(run(client, config, publish, stop));
    (updates, task)
}

/// Watch and read tasks, aborted when dropped (also when the owner task is).
struct Watches {
    runners: Vec<AbortHandle>,
    secrets: HashMap<SecretWatch, (u64, AbortHandle)>,
    generation: u64,
    /// Named Secrets being read, with the version each read is for.
    fetches: HashMap<ObjectRef, (String, AbortHandle)>,
    permits: Arc<Semaphore>,
}

impl Default for Watches {
    fn default() -> Self {
        Self {
            runners: Vec::new(),
            secrets: HashMap::new(),
            generation: 0,
            fetches: HashMap::new(),
            permits: Arc::new(Semaphore::new(CONCURRENT_FETCHES)),
        }
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        self.runners.iter().for_each(AbortHandle::abort);
        self.secrets.values().for_each(|(_, task)| task.abort());
        self.fetches.values().for_each(|(_, task)| task.abort());
    }
}

async fn run(
    client: Client,
    config: WatchConfig,
    publish: watch::Sender<Option<Arc<CatalogUpdate>>>,
    stop: CancellationToken,
) {
    let mut index = ClusterIndex::new(&config.namespaces, config.token_namespace.clone());
    let (tx, mut rx) = mpsc::channel::<Update>(1024);
    let mut watches = Watches::default();
    for scope in index.runner_scopes() {
        // Watched untyped, then read one by one: an object our types cannot read is left out
        // instead of failing the list of all the others.
        let resource = kube::api::ApiResource::erase::<ScaledActionRunner>(&());
        let api: Api<kube::api::DynamicObject> = match scope {
            None => Api::all_with(client.clone(), &resource),
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        };
        let (tx, scope) = (tx.clone(), scope.clone());
        let what = format!("ScaledActionRunners in {}", scope.as_deref().unwrap_or("all namespaces"));
        let stream =
            watcher::watcher(api, watcher::Config::default()).default_backoff().filter_map(|item| async move {
                match item {
                    Ok(event) => readable_runners(event).map(Ok),
                    Err(error) => Some(Err(error)),
                }
            });
        let task =
            tokio::spawn(forward(stream, what, move |event| Update::Runners(scope.clone(), Box::new(event)), tx));
        watches.runners.push(task.abort_handle());
    }
    tracing::info!(
        namespaces = ?index.runner_scopes(),
        token_namespace = ?index.token_namespace(),
        "watching ScaledActionRunners and the Secrets they name"
    );
    let mut lists = Lists::default();
    let mut reported: HashSet<(ObjectRef, String)> = HashSet::new();
    let mut first_change: Option<Instant> = None;
    let mut due: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            Some(update) = rx.recv() => {
                let mut changed = apply(&mut index, &mut lists, &mut watches, update);
                // A burst (thousands of Secrets read at start) is applied whole, then the watches
                // and reads are reconciled once, not once per event.
                for _ in 0..BATCH {
                    let Ok(update) = rx.try_recv() else { break };
                    changed |= apply(&mut index, &mut lists, &mut watches, update);
                }
                if changed {
                    restart_secret_watches(&client, &index, &mut watches, &tx);
                }
                start_fetches(&client, &index, &mut watches, &tx);
                if !changed {
                    continue;
                }
                let now = Instant::now();
                let first = *first_change.get_or_insert(now);
                due = Some((now + config.debounce).min(first + MAX_DEBOUNCE));
            }
            () = sleep_until(due) => {
                due = None;
                let Some(first) = first_change else { continue };
                if !index.runners_listed() {
                    continue;
                }
                // A Secret watch that cannot list (RBAC not granted yet) must not hold back the rest.
                let pending = index.pending_secret_watches();
                if !pending.is_empty() && Instant::now() < first + config.sync_grace {
                    due = Some(first + config.sync_grace);
                    continue;
                }
                if !pending.is_empty() {
                    tracing::warn!(?pending, "Secret watches have not listed yet; serving without them");
                }
                first_change = None;
                let update = build(&index, config.organisation.clone(), &mut reported);
                publish.send_replace(Some(Arc::new(update)));
            }
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Objects of a (re)started watch, held until its list is complete.
#[derive(Default)]
struct Lists {
    runners: HashMap<RunnerScope, Vec<ScaledActionRunner>>,
    secrets: HashMap<SecretWatch, Vec<Secret>>,
    versions: HashMap<SecretWatch, Vec<(ObjectRef, String)>>,
}

/// A Secret's identity and version, as a metadata watch reports it.
fn version_of(watch: &SecretWatch, meta: &PartialObjectMeta<Secret>) -> (ObjectRef, String) {
    let namespace = meta.metadata.namespace.clone().unwrap_or_else(|| watch.namespace().to_owned());
    let name = meta.metadata.name.clone().unwrap_or_default();
    (ObjectRef::new(namespace, name), meta.metadata.resource_version.clone().unwrap_or_default())
}

/// Feeds one event to the index; true when the catalog may have changed.
fn apply(index: &mut ClusterIndex, lists: &mut Lists, watches: &mut Watches, update: Update) -> bool {
    match update {
        Update::Runners(scope, event) => match *event {
            Event::Apply(runner) => index.apply_runner(runner),
            Event::Delete(runner) => index.delete_runner(&runner),
            Event::Init => {
                lists.runners.insert(scope, Vec::new());
                false
            }
            Event::InitApply(runner) => {
                lists.runners.entry(scope).or_default().push(runner);
                false
            }
            Event::InitDone => {
                let listed = lists.runners.remove(&scope).unwrap_or_default();
                index.list_runners(&scope, listed)
            }
        },
        Update::Secrets(watch, generation, event) => {
            if watches.secrets.get(&watch).is_none_or(|(current, _)| *current != generation) {
                return false;
            }
            match *event {
                Event::Apply(secret) => index.apply_secret(secret),
                Event::Delete(secret) => index.delete_secret(&secret),
                Event::Init => {
                    lists.secrets.insert(watch, Vec::new());
                    false
                }
                Event::InitApply(secret) => {
                    lists.secrets.entry(watch).or_default().push(secret);
                    false
                }
                Event::InitDone => {
                    let listed = lists.secrets.remove(&watch).unwrap_or_default();
                    index.list_secrets(&watch, listed)
                }
            }
        }
        Update::Versions(watch, generation, event) => {
            if watches.secrets.get(&watch).is_none_or(|(current, _)| *current != generation) {
                return false;
            }
            match *event {
                Event::Apply(meta) => {
                    let (key, version) = version_of(&watch, &meta);
                    index.apply_secret_version(key, version)
                }
                Event::Delete(meta) => index.delete_secret_version(&version_of(&watch, &meta).0),
                Event::Init => {
                    lists.versions.insert(watch, Vec::new());
                    false
                }
                Event::InitApply(meta) => {
                    let seen = version_of(&watch, &meta);
                    lists.versions.entry(watch).or_default().push(seen);
                    false
                }
                Event::InitDone => {
                    let listed = lists.versions.remove(&watch).unwrap_or_default();
                    index.list_secret_versions(&watch, listed)
                }
            }
        }
        Update::Fetched(fetch, secret) => {
            if watches.fetches.get(&fetch.key).is_some_and(|(version, _)| *version == fetch.version) {
                watches.fetches.remove(&fetch.key);
            }
            index.fetched_secret(&fetch, secret.map(|secret| *secret));
            // Even an unchanged Secret may be the last one a publication waits for.
            true
        }
    }
}

/// Reads each named Secret whose version changed (a few at a time), and stops reads no longer
/// needed.
fn start_fetches(client: &Client, index: &ClusterIndex, watches: &mut Watches, tx: &mpsc::Sender<Update>) {
    let wanted: HashMap<ObjectRef, String> =
        index.secret_fetches().into_iter().map(|fetch| (fetch.key, fetch.version)).collect();
    watches.fetches.retain(|key, (version, task)| {
        let keep = wanted.get(key) == Some(version);
        if !keep {
            task.abort();
        }
        keep
    });
    for (key, version) in wanted {
        if watches.fetches.contains_key(&key) {
            continue;
        }
        let api: Api<Secret> = Api::namespaced(client.clone(), &key.namespace);
        let fetch = SecretFetch { key: key.clone(), version: version.clone() };
        let task = tokio::spawn(read_secret(api, fetch, watches.permits.clone(), tx.clone()));
        watches.fetches.insert(key, (version, task.abort_handle()));
    }
}

/// One `get` of a named Secret, retried with backoff until it answers (a Secret RBAC does not
/// let us read yet is read once the runner's Role exists).
async fn read_secret(api: Api<Secret>, fetch: SecretFetch, permits: Arc<Semaphore>, tx: mpsc::Sender<Update>) {
    let mut retry = FETCH_RETRY;
    loop {
        let answer = {
            let Ok(_permit) = permits.acquire().await else { return };
            api.get_opt(&fetch.key.name).await
        };
        match answer {
            Ok(secret) => {
                let _ = tx.send(Update::Fetched(fetch, secret.map(Box::new))).await;
                return;
            }
            Err(error) => {
                tracing::warn!(secret = %fetch.key, %error, "reading a Secret a runner names failed; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// Starts a watch for each Secret now wanted and stops those no runner names any more.
fn restart_secret_watches(client: &Client, index: &ClusterIndex, watches: &mut Watches, tx: &mpsc::Sender<Update>) {
    let wanted = index.wanted_secret_watches();
    watches.secrets.retain(|watch, (_, task)| {
        let keep = wanted.contains(watch);
        if !keep {
            tracing::debug!(?watch, "no runner names the Secret any more: watch stopped");
            task.abort();
        }
        keep
    });
    for watch in wanted {
        if watches.secrets.contains_key(&watch) {
            continue;
        }
        watches.generation += 1;
        let generation = watches.generation;
        let tagged = watch.clone();
        let task = match &watch {
            SecretWatch::Metadata(namespace) => {
                tracing::debug!(%namespace, "watching the names and versions of a namespace's Secrets");
                let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), namespace);
                let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
                tokio::spawn(forward(
                    stream,
                    format!("Secret names in {namespace}"),
                    move |event| Update::Versions(tagged.clone(), generation, Box::new(event)),
                    tx.clone(),
                ))
            }
            SecretWatch::Namespace(namespace) => {
                tracing::debug!(%namespace, "watching the token namespace's Secrets");
                let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
                let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
                tokio::spawn(forward(
                    stream,
                    format!("Secrets in {namespace}"),
                    move |event| Update::Secrets(tagged.clone(), generation, Box::new(event)),
                    tx.clone(),
                ))
            }
        };
        watches.secrets.insert(watch, (generation, task.abort_handle()));
    }
}

/// Passes a watch's events on; errors are logged (the stream backs off and retries by itself).
async fn forward<K: Debug>(
    stream: impl Stream<Item = Result<Event<K>, watcher::Error>>,
    what: String,
    tag: impl Fn(Event<K>) -> Update,
    tx: mpsc::Sender<Update>,
) {
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                if tx.send(tag(event)).await.is_err() {
                    return;
                }
            }
            Err(error) => tracing::warn!(watch = %what, %error, "watch failed; retrying"),
        }
    }
}

/// A runner watch event as our types read it. An object that does not fit them is logged and
/// left out (a deleted one is still deleted, by name).
fn readable_runners(event: Event<kube::api::DynamicObject>) -> Option<Event<ScaledActionRunner>> {
    let read = |object: kube::api::DynamicObject| -> Option<ScaledActionRunner> {
        let name = format!(
            "{}/{}",
            object.metadata.namespace.as_deref().unwrap_or_default(),
            object.metadata.name.as_deref().unwrap_or_default()
        );
        let value = serde_json::to_value(object).ok()?;
        match serde_json::from_value(value) {
            Ok(runner) => Some(runner),
            Err(error) => {
                tracing::warn!(runner = %name, %error, "ScaledActionRunner cannot be read; left out");
                None
            }
        }
    };
    Some(match event {
        Event::Apply(object) => Event::Apply(read(object)?),
        Event::Delete(object) => {
            let stand_in = serde_json::json!({
                "apiVersion": "runner.devjoes.com/v1alpha1", "kind": "ScaledActionRunner",
                "metadata": object.metadata, "spec": {"owner": "", "repo": "", "maxRunners": 0},
            });
            Event::Delete(serde_json::from_value(stand_in).ok()?)
        }
        Event::Init => Event::Init,
        Event::InitApply(object) => Event::InitApply(read(object)?),
        Event::InitDone => Event::InitDone,
    })
}

/// Builds the catalog and logs the problems not reported before.
fn build(
    index: &ClusterIndex,
    organisation: Option<SecretBytes>,
    reported: &mut HashSet<(ObjectRef, String)>,
) -> CatalogUpdate {
    let (catalog, problems) = index.build_catalog(organisation);
    let mut errors = 0;
    let mut now_reported = HashSet::with_capacity(problems.len());
    for (runner, problem) in problems {
        let seen = (runner, problem.to_string());
        if !reported.contains(&seen) {
            if problem.is_warning() {
                tracing::warn!(runner = %seen.0, %problem, "runner loaded with a problem");
            } else {
                tracing::error!(runner = %seen.0, %problem, "runner skipped");
            }
        }
        errors += usize::from(!problem.is_warning());
        now_reported.insert(seen);
    }
    *reported = now_reported;
    tracing::info!(
        runners = catalog.runners.len(),
        repositories_with_secrets = catalog.secrets.repositories(),
        organisation_secret = catalog.secrets.has_organisation_secret(),
        problems = errors,
        "runners loaded from the cluster"
    );
    CatalogUpdate { catalog, problems: errors }
}
