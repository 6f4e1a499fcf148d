//! The controllers. Each reconcile is a short pipeline: dereference (read the cluster) → build
//! (pure: [`runner_children`], [`core_children`]) → apply (server-side apply, one field manager)
//! → prune what is no longer wanted → status. A spec that cannot be built becomes a `Ready=False`
//! condition and an Event, and waits for the next change instead of retrying in a loop.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::core_children::{CoreInputs, core_children, core_warnings};
use super::render::{CA_KEY, FRONT_PROXY_CA_CONFIG_MAP, FRONT_PROXY_CA_KEY};
use super::runner_children::{runner_children, runner_warnings};
use super::{ApiServer, Child, FIELD_MANAGER, MANAGED_BY, Settings, SpecError};
use crate::crd::{CORE_NAME, ScaledActionRunner, ScaledActionRunnerCore};

/// Field manager of the one apply that creates a StatefulSet with `minRunners` replicas. It never
/// applies again, so the replicas it set pass to KEDA's HPA instead of being reset by ours.
pub const INITIAL_REPLICAS_MANAGER: &str = "github-action-autoscaler-initial-replicas";
const RUNNER_KIND: &str = "ScaledActionRunner";
const CORE_KIND: &str = "ScaledActionRunnerCore";
/// How often a healthy object is looked at again (status: demand, replicas).
const REFRESH: Duration = Duration::from_secs(60);

/// Why a reconcile failed; retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("reading {what}: {source}")]
    Dereference {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("applying {object}: {source}")]
    Apply {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("removing {object}: {source}")]
    Prune {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status: {0}")]
    Status(#[source] kube::Error),
    #[error("the object has no namespace or name")]
    Unnamed,
}

impl ReconcileError {
    /// A fixed label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Dereference { .. } => "dereference",
            Self::Apply { .. } => "apply",
            Self::Prune { .. } => "prune",
            Self::Status(_) => "status",
            Self::Unnamed => "unnamed",
        }
    }
}

/// Reads a runner's demand from the API server's read API, for the runner's status.
///
/// In a cluster over the API server's mutual-TLS port, presenting the core's `sslCertSecret`
/// certificate (its plain port serves no reads); the client is rebuilt when the Secret changes.
#[derive(Debug, Clone)]
pub struct DemandReader {
    http: reqwest::Client,
    /// Base URL used instead of the API server's Service (tests); `http://` reads without a
    /// certificate.
    base: Option<String>,
    /// The mutual-TLS client and a digest of the Secret data it was built from.
    tls: Arc<Mutex<Option<CertifiedClient>>>,
}

/// A client presenting a certificate, and the digest of the Secret data it was built from.
type CertifiedClient = ([u8; 32], reqwest::Client);

/// How long one read of demand may take.
const DEMAND_READ_TIMEOUT: Duration = Duration::from_secs(3);

impl DemandReader {
    pub fn new(base: Option<String>) -> Self {
        crate::github::client::install_crypto_provider();
        let http = reqwest::Client::builder().timeout(DEMAND_READ_TIMEOUT).build().unwrap_or_default();
        Self { http, base, tls: Arc::default() }
    }

    /// The runner's view (`demand`, `queued`, `inProgress`, `desiredRunners`, `lastResyncTime`,
    /// `lastDrift`), or None when the API server cannot say (it is starting, or unreachable, or
    /// the certificate Secret is not there yet).
    pub async fn read(
        &self,
        client: &Client,
        api_server: &ApiServer,
        cert_secret: &str,
        namespace: &str,
        name: &str,
    ) -> Option<serde_json::Value> {
        let path = format!("/api/v1/namespaces/{namespace}/scaledactionrunners/{name}");
        let base = match &self.base {
            Some(base) => base.clone(),
            None => format!("https://{}:{}", api_server.host(), super::ports::TLS),
        };
        let http = if base.starts_with("https://") {
            let secret = Api::<Secret>::namespaced(client.clone(), &api_server.namespace)
                .get_opt(cert_secret)
                .await
                .ok()
                .flatten()?;
            self.tls_client(&secret)?
        } else {
            self.http.clone()
        };
        let request = http.get(format!("{base}{path}"));
        let answer = request.send().await.ok()?;
        if !answer.status().is_success() {
            return None;
        }
        answer.json().await.ok()
    }

    /// A client trusting the Secret's `ca.crt` and presenting its `tls.crt`/`tls.key`.
    fn tls_client(&self, secret: &Secret) -> Option<reqwest::Client> {
        use sha2::Digest as _;
        let data = secret.data.as_ref()?;
        let [cert, key, ca] = ["tls.crt", "tls.key", CA_KEY].map(|key| data.get(key).map(|bytes| bytes.0.as_slice()));
        let (cert, key, ca) = (cert?, key?, ca?);
        let mut digest = sha2::Sha256::new();
        for part in [cert, key, ca] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part);
        }
        let digest: [u8; 32] = digest.finalize().into();
        let mut cached = self.tls.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((seen, http)) = cached.as_ref()
            && *seen == digest
        {
            return Some(http.clone());
        }
        let identity = reqwest::Identity::from_pem(&[cert, b"\n", key].concat()).ok()?;
        let roots = reqwest::Certificate::from_pem_bundle(ca).ok()?;
        let http = reqwest::Client::builder()
            .timeout(DEMAND_READ_TIMEOUT)
            .tls_certs_only(roots)
            .identity(identity)
            .build()
            .ok()?;
        *cached = Some((digest, http.clone()));
        Some(http)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `ScaledActionRunner` or `ScaledActionRunnerCore`.
    pub kind: &'static str,
    /// `applied`, `invalid`, `ignored`, or the failed step's [`ReconcileError::category`].
    pub outcome: &'static str,
}

/// The operator's Prometheus metrics (prefix `gaa_operator_`).
#[derive(Debug)]
pub struct OperatorMetrics {
    registry: prometheus_client::registry::Registry,
    pub reconciles:
        prometheus_client::metrics::family::Family<ReconcileLabels, prometheus_client::metrics::counter::Counter>,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        let mut registry = prometheus_client::registry::Registry::with_prefix("gaa_operator");
        let reconciles = prometheus_client::metrics::family::Family::default();
        registry.register("reconciles", "Reconciles by kind and outcome", reconciles.clone());
        Self { registry, reconciles }
    }
}

impl OperatorMetrics {
    fn count(&self, kind: &'static str, outcome: &'static str) {
        self.reconciles.get_or_create(&ReconcileLabels { kind, outcome }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// What the reconcilers share.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub recorder: Recorder,
    /// Where runner status reads the demand; None leaves demand out of the status.
    pub demand: Option<DemandReader>,
    pub metrics: OperatorMetrics,
    /// Consecutive failures per object, for the retry backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// What was last applied to each child, so an unchanged child is not applied again.
    applied: AppliedChildren,
}

/// The digest of what was last applied to each child and the version of the child it left:
/// while both still hold, applying again would change nothing, so a periodic refresh of an idle
/// object makes no writes. The version is our field manager's entry in the child's
/// `managedFields`, which only moves when the fields we own do: a status update (the
/// aggregator's on an APIService, KEDA's on a ScaledObject) leaves it alone, while anyone else
/// taking or changing one of our fields moves it, and the next reconcile (the child's watch
/// starts one) applies again.
#[derive(Debug, Default)]
struct AppliedChildren(Mutex<HashMap<String, ([u8; 32], String)>>);

impl AppliedChildren {
    fn key(child: &Child) -> String {
        let meta = child.object.meta();
        format!(
            "{}/{}/{}/{}",
            child.resource.group,
            child.resource.kind,
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        )
    }

    fn digest(child: &Child) -> [u8; 32] {
        use sha2::Digest as _;
        // Serializing a JSON value cannot fail; an empty body only means "apply again".
        sha2::Sha256::digest(serde_json::to_vec(&child.object).unwrap_or_default()).into()
    }

    /// The version a child was left at by the last apply of what `digest` describes.
    fn version_after(&self, key: &str, digest: &[u8; 32]) -> Option<String> {
        let applied = self.0.lock().ok()?;
        applied.get(key).filter(|(last, _)| last == digest).map(|(_, version)| version.clone())
    }

    fn record(&self, key: String, digest: [u8; 32], version: Option<String>) {
        if let Ok(mut applied) = self.0.lock() {
            match version {
                Some(version) => applied.insert(key, (digest, version)),
                None => applied.remove(&key),
            };
        }
    }
}

/// The version [`AppliedChildren`] compares: a digest of our field manager's `Apply` entry in
/// the object's `managedFields`, if it has one.
fn child_version(meta: &kube::api::ObjectMeta) -> Option<String> {
    use sha2::Digest as _;
    let ours = meta.managed_fields.as_ref()?.iter().find(|entry| {
        entry.manager.as_deref() == Some(FIELD_MANAGER)
            && entry.operation.as_deref() == Some("Apply")
            && entry.subresource.as_deref().unwrap_or_default().is_empty()
    })?;
    let text = serde_json::to_vec(&(&ours.api_version, &ours.fields_v1)).ok()?;
    Some(hex::encode(sha2::Sha256::digest(text)))
}

impl Context {
    pub fn new(client: Client, settings: Settings, demand: Option<DemandReader>) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            settings,
            recorder,
            demand,
            metrics: OperatorMetrics::default(),
            failures: Mutex::default(),
            applied: AppliedChildren::default(),
        }
    }

    fn succeeded(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }

    /// 5 s, 10 s, 20 s … up to 5 minutes.
    fn backoff(&self, key: &str) -> Duration {
        let attempt = self
            .failures
            .lock()
            .map(|mut failures| {
                let count = failures.entry(key.to_owned()).or_default();
                *count = count.saturating_add(1);
                *count
            })
            .unwrap_or(1);
        Duration::from_secs(5u64.saturating_mul(1 << attempt.min(6).saturating_sub(1)).min(300))
    }
}

/// Runs both controllers until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let managed = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    let owned = watcher::Config::default().labels(&managed);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // Watched untyped: one object our types cannot read (written before an upgrade, say) becomes
    // that object's condition in its own reconcile instead of failing the whole list.
    let runner_type = ApiResource::erase::<ScaledActionRunner>(&());
    let core_type = ApiResource::erase::<ScaledActionRunnerCore>(&());
    // Every runner's ScaledObject and Secret access depend on the core: look at all of them
    // again when it changes.
    let core_changes = watcher(Api::<DynamicObject>::all_with(client.clone(), &core_type), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .filter_map(|event| async move { event.ok().map(|_| ()) });
    let runners = Controller::new_with(
        Api::<DynamicObject>::all_with(client.clone(), &runner_type),
        watcher::Config::default().any_semantic(),
        runner_type,
    )
    .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
    .reconcile_all_on(core_changes)
    .graceful_shutdown_on(stopped(stop_rx.clone()))
    .run(reconcile_runner_object, error_policy(RUNNER_KIND), ctx.clone())
    .for_each(|result| async move { log_result("ScaledActionRunner", result) });
    let cores = Controller::new_with(
        Api::<DynamicObject>::all_with(client.clone(), &core_type),
        watcher::Config::default().any_semantic(),
        core_type,
    )
    .owns(Api::<Deployment>::all(client.clone()), owned)
    .graceful_shutdown_on(stopped(stop_rx))
    .run(reconcile_core_object, error_policy(CORE_KIND), ctx)
    .for_each(|result| async move { log_result("ScaledActionRunnerCore", result) });
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    tokio::join!(runners, cores);
}

fn log_result(
    kind: &str,
    result: Result<
        (kube::runtime::reflector::ObjectRef<DynamicObject>, Action),
        kube::runtime::controller::Error<ReconcileError, watcher::Error>,
    >,
) {
    match result {
        Ok((object, _)) => tracing::debug!(kind, object = %object.name, "reconciled"),
        // The error policy has logged it, with its step and the retry delay.
        Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
        Err(error) => tracing::warn!(kind, %error, "controller error"),
    }
}

/// Retries a failed reconcile with backoff, counted by kind and the step that failed.
fn error_policy(kind: &'static str) -> impl Fn(Arc<DynamicObject>, &ReconcileError, Arc<Context>) -> Action {
    move |object, error, ctx| {
        let key = backoff_key(kind, object.namespace().as_deref(), &object.name_any());
        let delay = ctx.backoff(&key);
        ctx.metrics.count(kind, error.category());
        tracing::warn!(object = %key, category = error.category(), %error, retry_secs = delay.as_secs(), "reconcile failed");
        Action::requeue(delay)
    }
}

/// The key an object's consecutive failures are counted under.
fn backoff_key(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(namespace) => format!("{kind}/{namespace}/{name}"),
        None => format!("{kind}/{name}"),
    }
}

/// The kinds a runner's children may have, for pruning (the StatefulSet is always wanted).
fn runner_kinds() -> Vec<ApiResource> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    vec![
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<Role>(&()),
        ApiResource::erase::<RoleBinding>(&()),
        ApiResource::erase::<super::keda::ScaledObject>(&()),
    ]
}

/// The kinds the core's children may have, for pruning.
fn core_kinds() -> Vec<ApiResource> {
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
        ApiResource::erase::<super::keda::ClusterTriggerAuthentication>(&()),
    ]
}

/// Reads the watched object as a ScaledActionRunner, or says on it why it cannot be read.
pub async fn reconcile_runner_object(object: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let problem = match typed::<ScaledActionRunner>(&object) {
        Ok(runner) => return reconcile_runner(Arc::new(runner), ctx).await,
        Err(problem) => SpecError::Unreadable(problem),
    };
    let (Some(namespace), Some(name)) = (object.namespace(), object.metadata.name.clone()) else {
        return Err(ReconcileError::Unnamed);
    };
    report_invalid(&ctx, object.as_ref(), &object.object_ref(&ApiResource::erase::<ScaledActionRunner>(&())), &problem)
        .await;
    let status = ready_status(object.as_ref(), false, problem.reason(), &problem.to_string());
    let api = Api::<ScaledActionRunner>::namespaced(ctx.client.clone(), &namespace);
    write_status(&api, &name, object.data.get("status"), status).await?;
    ctx.metrics.count(RUNNER_KIND, "invalid");
    Ok(Action::await_change())
}

/// Reads the watched object as a ScaledActionRunnerCore, or says on it why it cannot be read.
pub async fn reconcile_core_object(object: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let problem = match typed::<ScaledActionRunnerCore>(&object) {
        Ok(core) => return reconcile_core(Arc::new(core), ctx).await,
        Err(problem) => SpecError::Unreadable(problem),
    };
    let reference = object.object_ref(&ApiResource::erase::<ScaledActionRunnerCore>(&()));
    report_invalid(&ctx, object.as_ref(), &reference, &problem).await;
    let status = ready_status(object.as_ref(), false, problem.reason(), &problem.to_string());
    let api = Api::<ScaledActionRunnerCore>::all(ctx.client.clone());
    write_status(&api, &object.name_any(), object.data.get("status"), status).await?;
    ctx.metrics.count(CORE_KIND, "invalid");
    Ok(Action::await_change())
}

/// A watched object as one of our types; the reason when it does not fit them.
fn typed<K: serde::de::DeserializeOwned>(object: &DynamicObject) -> Result<K, String> {
    let value = serde_json::to_value(object).map_err(|error| error.to_string())?;
    serde_json::from_value(value).map_err(|error| error.to_string())
}

pub async fn reconcile_runner(runner: Arc<ScaledActionRunner>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let (Some(namespace), Some(name)) = (runner.namespace(), runner.metadata.name.clone()) else {
        return Err(ReconcileError::Unnamed);
    };
    let client = &ctx.client;
    let key = backoff_key(RUNNER_KIND, Some(&namespace), &name);
    let runners = Api::<ScaledActionRunner>::namespaced(client.clone(), &namespace);
    let current = runner.status.as_ref().and_then(|status| serde_json::to_value(status).ok());

    // Dereference: the core says where the API server runs.
    let core = Api::<ScaledActionRunnerCore>::all(client.clone()).get_opt(CORE_NAME).await.map_err(|source| {
        ReconcileError::Dereference { what: format!("ScaledActionRunnerCore {CORE_NAME}"), source }
    })?;
    let api_server = core.as_ref().map(|core| ApiServer::from_core(&core.spec));

    // Build (pure).
    let children = match runner_children(&runner, &ctx.settings, api_server.as_ref()) {
        Ok(children) => children,
        Err(error) => {
            report_invalid(&ctx, runner.as_ref(), &runner.object_ref(&()), &error).await;
            let status = ready_status(runner.as_ref(), false, error.reason(), &error.to_string());
            write_status(&runners, &name, current.as_ref(), status).await?;
            ctx.succeeded(&key);
            ctx.metrics.count(RUNNER_KIND, "invalid");
            return Ok(Action::await_change());
        }
    };

    // Apply.
    let mut missing = Vec::new();
    let mut immutable = None;
    for child in &children {
        let stateful_set = child.resource.kind == "StatefulSet";
        if stateful_set {
            create_with_replicas(client, child, runner.spec.min_runners()).await?;
        }
        match apply(client, &ctx.applied, child).await {
            Ok(()) => {}
            // The ScaledObject's CRD is absent until KEDA is installed: say so, keep the rest.
            Err(ReconcileError::Apply { source: kube::Error::Api(status), .. })
                if status.code == 404 && child.resource.group == "keda.sh" =>
            {
                missing.push(child.resource.kind.clone());
            }
            // A change a StatefulSet cannot take in place (its volume claim templates, say):
            // never delete it for the user, since that would stop running jobs; say how.
            Err(ReconcileError::Apply { source: kube::Error::Api(status), .. })
                if status.code == 422 && stateful_set =>
            {
                immutable = Some(status.message.clone());
            }
            Err(error) => return Err(error),
        }
    }
    prune(client, runner.as_ref(), Some(&namespace), &children, &runner_kinds()).await?;

    // Status.
    let replicas = Api::<StatefulSet>::namespaced(client.clone(), &namespace)
        .get_opt(&name)
        .await
        .ok()
        .flatten()
        .and_then(|set| set.status.map(|status| status.replicas));
    let (ready, reason, message) = if let Some(refusal) = immutable {
        let how = format!(
            "the StatefulSet cannot take this change in place ({refusal}); to apply it, `kubectl delete statefulset \
             {name} -n {namespace} --cascade=orphan`: running runners keep running and the operator recreates it"
        );
        (false, "StatefulSetImmutable", how)
    } else if core.is_none() {
        (false, "CoreMissing", format!("no ScaledActionRunnerCore named {CORE_NAME}: the runners are not scaled"))
    } else if !missing.is_empty() {
        (false, "KedaMissing", format!("KEDA is not installed: the cluster has no {} resource", missing.join(", ")))
    } else {
        (true, "Applied", with_warnings(format!("{} objects applied", children.len()), &runner_warnings(&runner)))
    };
    let mut status = ready_status(runner.as_ref(), ready, reason, &message);
    status["replicas"] = json!(replicas);
    if let (Some(reader), Some(api_server), Some(core)) = (&ctx.demand, &api_server, &core)
        && let Some(view) = reader.read(client, api_server, &core.spec.ssl_cert_secret, &namespace, &name).await
    {
        for field in ["demand", "queued", "inProgress", "desiredRunners", "lastResyncTime", "lastDrift"] {
            if let Some(value) = view.get(field).filter(|value| !value.is_null()) {
                status[field] = value.clone();
            }
        }
    }
    write_status(&runners, &name, current.as_ref(), status).await?;
    ctx.succeeded(&key);
    ctx.metrics.count(RUNNER_KIND, "applied");
    Ok(Action::requeue(REFRESH))
}

pub async fn reconcile_core(core: Arc<ScaledActionRunnerCore>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let name = core.name_any();
    let client = &ctx.client;
    let api = Api::<ScaledActionRunnerCore>::all(client.clone());
    let current = core.status.as_ref().and_then(|status| serde_json::to_value(status).ok());
    if name != CORE_NAME {
        let message = format!("only the ScaledActionRunnerCore named {CORE_NAME:?} is used; this one is ignored");
        write_status(&api, &name, current.as_ref(), ready_status(core.as_ref(), false, "NotCore", &message)).await?;
        return Ok(Action::await_change());
    }
    let spec = &core.spec;

    // Dereference: the CA the APIService trusts, and the aggregator's client CA.
    let secret = Api::<Secret>::namespaced(client.clone(), &spec.api_server_namespace)
        .get_opt(&spec.ssl_cert_secret)
        .await
        .map_err(|source| ReconcileError::Dereference {
            what: format!("Secret {}/{}", spec.api_server_namespace, spec.ssl_cert_secret),
            source,
        })?;
    let ca = secret.and_then(|secret| secret.data?.remove(CA_KEY)).map(|bytes| bytes.0);
    let front_proxy = Api::<ConfigMap>::namespaced(client.clone(), FRONT_PROXY_CA_CONFIG_MAP.0)
        .get_opt(FRONT_PROXY_CA_CONFIG_MAP.1)
        .await
        .map_err(|source| ReconcileError::Dereference {
            what: format!("ConfigMap {}/{}", FRONT_PROXY_CA_CONFIG_MAP.0, FRONT_PROXY_CA_CONFIG_MAP.1),
            source,
        })?
        .and_then(|map| map.data?.remove(FRONT_PROXY_CA_KEY));

    // Build (pure).
    let inputs = CoreInputs { ca_bundle: ca.as_deref(), front_proxy_ca: front_proxy.as_deref() };
    let children = match core_children(&core, &ctx.settings, &inputs) {
        Ok(children) => children,
        Err(error) => {
            report_invalid(&ctx, core.as_ref(), &core.object_ref(&()), &error).await;
            let status = ready_status(core.as_ref(), false, error.reason(), &error.to_string());
            write_status(&api, &name, current.as_ref(), status).await?;
            ctx.metrics.count(CORE_KIND, "invalid");
            return Ok(Action::await_change());
        }
    };

    // Apply, then prune.
    let mut missing = BTreeSet::new();
    for child in &children {
        match apply(client, &ctx.applied, child).await {
            Ok(()) => {}
            // KEDA's and Prometheus' CRDs are optional: the rest still works without them.
            Err(ReconcileError::Apply { source: kube::Error::Api(status), .. })
                if status.code == 404
                    && matches!(child.resource.group.as_str(), "keda.sh" | "monitoring.coreos.com") =>
            {
                missing.insert(child.resource.kind.clone());
            }
            Err(error) => return Err(error),
        }
    }
    prune(client, core.as_ref(), None, &children, &core_kinds()).await?;

    // Status.
    let available = Api::<Deployment>::namespaced(client.clone(), &spec.api_server_namespace)
        .get_opt(&spec.api_server_name)
        .await
        .ok()
        .flatten()
        .and_then(|deployment| deployment.status?.available_replicas)
        .unwrap_or(0);
    let (ready, reason, message) = if ca.is_none() {
        (
            false,
            "CertificateMissing",
            format!(
                "Secret {}/{} has no {CA_KEY}: the APIService cannot trust the API server yet",
                spec.api_server_namespace, spec.ssl_cert_secret
            ),
        )
    } else if spec.create_api_server() && available == 0 {
        (false, "ApiServerUnavailable", "no API server replica is available yet".to_owned())
    } else if !missing.is_empty() {
        let kinds: Vec<_> = missing.into_iter().collect();
        (
            false,
            "CrdMissing",
            format!("the cluster has no {} resource (install KEDA / the Prometheus operator)", kinds.join(", ")),
        )
    } else {
        let applied = format!("{} objects applied; {available} API server replicas available", children.len());
        (true, "Applied", with_warnings(applied, &core_warnings(&core)))
    };
    write_status(&api, &name, current.as_ref(), ready_status(core.as_ref(), ready, reason, &message)).await?;
    ctx.succeeded(&backoff_key(CORE_KIND, None, &name));
    ctx.metrics.count(CORE_KIND, "applied");
    Ok(Action::requeue(REFRESH))
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

fn api_for(client: &Client, resource: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

/// Deletes objects this owner made earlier that it no longer wants (a runner that stopped
/// naming secrets, a core that stopped asking for memcached). Only objects carrying the owner's
/// uid are touched.
async fn prune<K: Resource<DynamicType = ()>>(
    client: &Client,
    owner: &K,
    namespace: Option<&str>,
    wanted: &[Child],
    kinds: &[ApiResource],
) -> Result<(), ReconcileError> {
    let Some(uid) = owner.meta().uid.clone() else {
        return Ok(());
    };
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
    Ok(())
}

/// Merges `status` into the object's status, unless `current` (the status it has) already says
/// all of it: a reconcile that changes nothing writes nothing, so it does not wake the
/// controller again. The `Ready` condition keeps its transition time while its status holds.
async fn write_status<K>(
    api: &Api<K>,
    name: &str,
    current: Option<&serde_json::Value>,
    mut status: serde_json::Value,
) -> Result<(), ReconcileError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let null = serde_json::Value::Null;
    let current = current.unwrap_or(&null);
    let before = current.pointer("/conditions/0");
    if let Some(after) = status.pointer_mut("/conditions/0")
        && let Some(before) = before.filter(|before| before.get("status") == after.get("status"))
        && let Some(time) = before.get("lastTransitionTime")
    {
        after["lastTransitionTime"] = time.clone();
    }
    let unchanged = status
        .as_object()
        .is_some_and(|fields| fields.iter().all(|(field, value)| current.get(field).unwrap_or(&null) == value));
    if unchanged {
        return Ok(());
    }
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
        .await
        .map_err(ReconcileError::Status)?;
    Ok(())
}

/// A condition message followed by what is not honoured as written.
fn with_warnings(message: String, warnings: &[String]) -> String {
    if warnings.is_empty() {
        return message;
    }
    format!("{message}; but: {}", warnings.join("; "))
}

/// A status holding only the `Ready` condition (its transition time now; [`write_status`] keeps
/// the old one while the status holds) and the generation it was computed from.
fn ready_status<K: Resource>(object: &K, ready: bool, reason: &str, message: &str) -> serde_json::Value {
    let condition = Condition {
        type_: "Ready".into(),
        status: if ready { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.chars().take(1024).collect(),
        observed_generation: object.meta().generation,
        last_transition_time: Time(jiff::Timestamp::now()),
    };
    json!({ "conditions": [condition], "observedGeneration": object.meta().generation })
}

async fn report_invalid<K: Resource>(
    ctx: &Context,
    object: &K,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    error: &SpecError,
) {
    tracing::warn!(object = %object.meta().name.clone().unwrap_or_default(), %error, "invalid spec");
    let event = Event {
        type_: EventType::Warning,
        reason: error.reason().into(),
        note: Some(error.to_string().chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(failure) = ctx.recorder.publish(&event, reference).await {
        tracing::warn!(error = %failure, "could not publish an Event");
    }
}
