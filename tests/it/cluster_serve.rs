//! `serve` in a cluster, against a scripted Kubernetes API (kube's tower-test mock): runners and the
//! Secrets they name are watched (one metadata-only watch per namespace, a `get` per named Secret),
//! and changes reach the webhook router without a restart.

use crate::common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use bytes::Bytes;
use common::{job_payload, signature};
use gaa::cluster::{self, CatalogUpdates, WatchConfig};
use gaa::http::{AppState, router};
use gaa::metrics::Metrics;
use gaa::serve::follow_catalog;
use gaa::store::{StoreHandle, WriterConfig};
use gaa::webhook::WebhookSecrets;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tower::ServiceExt;

type ApiBody = UnsyncBoxBody<Bytes, Infallible>;
type WatchSender = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

const RUNNERS: &str = "/apis/runner.devjoes.com/v1alpha1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Runner,
    Secret,
}

/// An open watch: what it selects, and the stream its events go down.
struct OpenWatch {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    /// Sends names and versions only (`as=PartialObjectMetadata`).
    metadata_only: bool,
    events: WatchSender,
}

impl OpenWatch {
    fn selects(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        self.kind == kind
            && self.namespace.as_deref().is_none_or(|n| n == namespace)
            && self.name.as_deref().is_none_or(|n| n == name)
    }
}

/// The API server's objects, open watches and every request it was sent.
#[derive(Default)]
struct ApiState {
    objects: BTreeMap<(String, String, String), Value>,
    version: u64,
    watches: Vec<OpenWatch>,
    requests: Vec<String>,
    /// Secrets RBAC does not let the server read.
    forbidden: Vec<String>,
}

/// A Kubernetes API that lists and watches ScaledActionRunners and Secrets, as the real one would.
struct FakeApi {
    state: Arc<Mutex<ApiState>>,
    _serving: tokio::task::JoinHandle<()>,
}

fn key_of(kind: Kind, namespace: &str, name: &str) -> (String, String, String) {
    (format!("{kind:?}"), namespace.to_string(), name.to_string())
}

impl FakeApi {
    fn start() -> (Self, kube::Client) {
        let (service, mut handle) = tower_test::mock::pair::<Request<kube::client::Body>, Response<ApiBody>>();
        let state = Arc::new(Mutex::new(ApiState::default()));
        let shared = state.clone();
        let serving = tokio::spawn(async move {
            while let Some((request, reply)) = handle.next_request().await {
                let response = shared.lock().unwrap().answer(&request);
                reply.send_response(response);
            }
        });
        (Self { state, _serving: serving }, kube::Client::new(service, "default"))
    }

    fn put(&self, kind: Kind, mut object: Value) {
        let mut state = self.state.lock().unwrap();
        state.version += 1;
        object["metadata"]["resourceVersion"] = json!(state.version.to_string());
        let (namespace, name) =
            (object["metadata"]["namespace"].as_str().unwrap(), object["metadata"]["name"].as_str().unwrap());
        let key = key_of(kind, namespace, name);
        let verb = if state.objects.contains_key(&key) { "MODIFIED" } else { "ADDED" };
        state.notify(kind, namespace, name, verb, &object);
        state.objects.insert(key, object);
    }

    fn delete(&self, kind: Kind, namespace: &str, name: &str) {
        let mut state = self.state.lock().unwrap();
        let mut object = state.objects.remove(&key_of(kind, namespace, name)).expect("no such object");
        state.version += 1;
        object["metadata"]["resourceVersion"] = json!(state.version.to_string());
        state.notify(kind, namespace, name, "DELETED", &object);
    }

    fn put_runner(&self, namespace: &str, name: &str, repo: &str, webhook_secret: &str) {
        self.put(Kind::Runner, runner(namespace, name, repo, webhook_secret));
    }

    fn put_secret(&self, namespace: &str, name: &str, webhook_secret: &str) {
        self.put(
            Kind::Secret,
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "data": {"webhook-secret": base64(webhook_secret)},
            }),
        );
    }

    fn forbid_secret(&self, name: &str) {
        self.state.lock().unwrap().forbidden.push(name.to_string());
    }

    fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Watches of Secrets in `namespace` whose client is still reading.
    fn open_secret_watches(&self, namespace: &str) -> usize {
        let state = self.state.lock().unwrap();
        state
            .watches
            .iter()
            .filter(|w| w.kind == Kind::Secret && w.namespace.as_deref() == Some(namespace) && !w.events.is_closed())
            .count()
    }
}

impl ApiState {
    fn notify(&mut self, kind: Kind, namespace: &str, name: &str, verb: &str, object: &Value) {
        let line = format!("{}\n", json!({"type": verb, "object": object}));
        let metadata_line = format!("{}\n", json!({"type": verb, "object": metadata_only(object)}));
        self.watches.retain(|w| !w.events.is_closed());
        for watch in self.watches.iter().filter(|w| w.selects(kind, namespace, name)) {
            let line = if watch.metadata_only { &metadata_line } else { &line };
            let _ = watch.events.try_send(Ok(Frame::data(Bytes::from(line.clone()))));
        }
    }

    fn answer(&mut self, request: &Request<kube::client::Body>) -> Response<ApiBody> {
        let uri = request.uri();
        let metadata = request
            .headers()
            .get("accept")
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
        self.requests.push(format!("{uri}{}", if metadata { " [metadata]" } else { "" }));
        let query: BTreeMap<String, String> =
            form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
        let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
        let (kind, namespace) = match segments.as_slice() {
            ["apis", "runner.devjoes.com", "v1alpha1", "scaledactionrunners"] => (Kind::Runner, None),
            ["apis", "runner.devjoes.com", "v1alpha1", "namespaces", ns, "scaledactionrunners"] => {
                (Kind::Runner, Some(ns.to_string()))
            }
            ["api", "v1", "namespaces", ns, "secrets"] => (Kind::Secret, Some(ns.to_string())),
            ["api", "v1", "namespaces", ns, "secrets", name] => {
                if self.forbidden.iter().any(|f| f == name) {
                    return forbidden();
                }
                return match self.objects.get(&key_of(Kind::Secret, ns, name)) {
                    Some(object) => full(StatusCode::OK, object.clone()),
                    None => full(
                        StatusCode::NOT_FOUND,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
                    ),
                };
            }
            ["api", "v1", "secrets"] => (Kind::Secret, None),
            _ => return full(StatusCode::NOT_FOUND, json!({"kind": "Status", "code": 404})),
        };
        let name = query.get("fieldSelector").and_then(|s| s.strip_prefix("metadata.name=")).map(str::to_string);
        if kind == Kind::Secret && name.as_ref().is_some_and(|n| self.forbidden.contains(n)) {
            return forbidden();
        }
        if query.get("watch").is_some_and(|w| w == "true") {
            let (events, stream) = mpsc::channel(64);
            self.watches.push(OpenWatch { kind, namespace, name, metadata_only: metadata, events });
            let body = StreamBody::new(ReceiverStream::new(stream)).boxed_unsync();
            return Response::builder().status(StatusCode::OK).body(body).unwrap();
        }
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|((k, ns, n), _)| {
                *k == format!("{kind:?}")
                    && namespace.as_deref().is_none_or(|want| want == ns)
                    && name.as_deref().is_none_or(|want| want == n)
            })
            .map(|(_, object)| if metadata { metadata_only(object) } else { object.clone() })
            .collect();
        let (api_version, list_kind) = match kind {
            _ if metadata => ("meta.k8s.io/v1", "PartialObjectMetadataList"),
            Kind::Runner => ("v1", "ScaledActionRunnerList"),
            Kind::Secret => ("v1", "SecretList"),
        };
        full(
            StatusCode::OK,
            json!({"apiVersion": api_version, "kind": list_kind, "metadata": {"resourceVersion": self.version.to_string()}, "items": items}),
        )
    }
}

/// What the API server sends for an object when asked for metadata only.
fn metadata_only(object: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": object["metadata"]})
}

fn forbidden() -> Response<ApiBody> {
    full(
        StatusCode::FORBIDDEN,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403, "message": "secrets is forbidden"}),
    )
}

fn full(status: StatusCode, body: Value) -> Response<ApiBody> {
    let body = Full::new(Bytes::from(body.to_string())).boxed_unsync();
    Response::builder().status(status).body(body).unwrap()
}

fn base64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn runner(namespace: &str, name: &str, repo: &str, webhook_secret: &str) -> Value {
    json!({
        "apiVersion": "runner.devjoes.com/v1alpha1",
        "kind": "ScaledActionRunner",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"owner": "acme", "repo": repo, "maxRunners": 3, "scaleFactor": "0", "webhookSecret": webhook_secret},
    })
}

/// A server state following the catalogs the cluster watches publish.
struct Serving {
    state: AppState,
    updates: CatalogUpdates,
    _stop: tokio_util::sync::DropGuard,
    _dir: TempDir,
}

impl Serving {
    async fn start(client: kube::Client, namespaces: &[&str]) -> Self {
        let dir = TempDir::new().unwrap();
        let metrics = Arc::new(Metrics::new());
        let store =
            StoreHandle::start(dir.path(), Default::default(), WriterConfig::default(), metrics.clone()).unwrap();
        let state = AppState::waiting_for_catalog(store, metrics, WebhookSecrets::default());
        let stopped = tokio_util::sync::CancellationToken::new();
        let stop = stopped.clone().drop_guard();
        let mut config = WatchConfig::new(namespaces.iter().map(|n| n.to_string()).collect(), None, None);
        config.debounce = Duration::from_millis(20);
        let (updates, _watching) = cluster::start(client, config, stopped);
        tokio::spawn(follow_catalog(state.clone(), updates.clone(), None, None));
        Self { state, updates, _stop: stop, _dir: dir }
    }

    /// Waits until the published catalog satisfies `check`.
    async fn until(&mut self, what: &str, check: impl Fn(&cluster::CatalogUpdate) -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if self.updates.borrow_and_update().as_deref().is_some_and(&check) {
                    return;
                }
                self.updates.changed().await.unwrap();
            }
        })
        .await;
        assert!(waited.is_ok(), "timed out waiting until {what}");
    }

    /// Delivers a queued job for `repo` signed with `secret`, until the router's answer is
    /// `expected` (the router takes the catalog a moment after it is published).
    async fn delivery_is_answered(&self, repo: &str, secret: &str, expected: StatusCode) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut job = 0;
        loop {
            job += 1;
            let status = self.deliver(repo, secret, job).await;
            if status == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a delivery signed for {repo} got {status}, not {expected}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn deliver(&self, repo: &str, secret: &str, job: u64) -> StatusCode {
        let body = serde_json::to_vec(&job_payload(repo, job, "queued", &["self-hosted", "linux"])).unwrap();
        let request = Request::post("/webhook")
            .header("content-type", "application/json")
            .header("x-github-event", "workflow_job")
            .header("x-github-delivery", format!("delivery-{secret}-{job}"))
            .header("x-hub-signature-256", signature(secret, &body))
            .body(Body::from(body))
            .unwrap();
        router(self.state.clone()).oneshot(request).await.unwrap().status()
    }

    async fn readyz(&self) -> StatusCode {
        let request = Request::get("/readyz").body(Body::empty()).unwrap();
        let response = router(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let _ = response.into_body().collect().await;
        status
    }
}

fn has_runner(update: &cluster::CatalogUpdate, name: &str) -> bool {
    update.catalog.runners.iter().any(|r| r.key.name == name)
}

fn secret_requests(api: &FakeApi) -> Vec<String> {
    api.requests().into_iter().filter(|r| r.contains("/secrets")).collect()
}

#[tokio::test]
async fn a_runner_created_in_the_cluster_is_served_with_its_webhook_secret() {
    let (api, client) = FakeApi::start();
    let mut serving = Serving::start(client, &[]).await;
    serving.until("the empty cluster is listed", |_| true).await;
    assert_eq!(serving.readyz().await, StatusCode::OK);

    api.put_secret("ci", "api-hook", "first-secret");
    api.put_runner("ci", "api", "api", "api-hook");

    serving
        .until("the runner is in the catalog", |u| has_runner(u, "api") && u.catalog.secrets.repositories() == 1)
        .await;
    serving.delivery_is_answered("acme/api", "first-secret", StatusCode::ACCEPTED).await;
    assert_eq!(serving.deliver("acme/api", "not-the-secret", 999).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn one_metadata_only_watch_per_namespace_and_only_the_named_secrets_are_read() {
    let (api, client) = FakeApi::start();
    api.put_secret("ci", "api-hook", "api-secret");
    api.put_secret("ci", "web-hook", "web-secret");
    api.put_secret("ci", "unrelated", "not-ours");
    api.put_runner("ci", "api", "api", "api-hook");
    api.put_runner("ci", "web", "web", "web-hook");
    let mut serving = Serving::start(client, &["ci"]).await;

    serving
        .until("both runners are in the catalog with their Secrets", |u| {
            has_runner(u, "api") && has_runner(u, "web") && u.catalog.secrets.repositories() == 2
        })
        .await;
    serving.delivery_is_answered("acme/web", "web-secret", StatusCode::ACCEPTED).await;

    assert_eq!(api.open_secret_watches("ci"), 1, "one watch for the namespace, not one per Secret");
    let requests = secret_requests(&api);
    let mut read: Vec<&str> = Vec::new();
    for request in &requests {
        match request.strip_prefix("/api/v1/namespaces/ci/secrets") {
            Some(query) if query.starts_with('?') => {
                assert!(request.ends_with(" [metadata]"), "a list or watch that carries Secret data: {request}")
            }
            Some(name) => read.push(name),
            None => panic!("a Secret request outside the runners' namespace: {request}"),
        }
    }
    read.sort();
    read.dedup();
    assert_eq!(read, ["/api-hook", "/web-hook"], "only the named Secrets are read: {requests:?}");
    let runner_requests: Vec<String> =
        api.requests().into_iter().filter(|r| r.contains("scaledactionrunners")).collect();
    assert!(runner_requests.iter().all(|r| r.starts_with(&format!("{RUNNERS}/namespaces/ci/"))), "{runner_requests:?}");
}

#[tokio::test]
async fn a_changed_secret_replaces_the_old_one() {
    let (api, client) = FakeApi::start();
    api.put_secret("ci", "api-hook", "first-secret");
    api.put_runner("ci", "api", "api", "api-hook");
    let mut serving = Serving::start(client, &[]).await;
    serving.until("the runner is in the catalog", |u| has_runner(u, "api")).await;
    serving.delivery_is_answered("acme/api", "first-secret", StatusCode::ACCEPTED).await;
    let before = serving.updates.borrow().clone().unwrap();

    api.put_secret("ci", "api-hook", "rotated-secret");

    serving.until("a new catalog is published", |u| !std::ptr::eq(u, &*before)).await;
    serving.delivery_is_answered("acme/api", "rotated-secret", StatusCode::ACCEPTED).await;
    assert_eq!(serving.deliver("acme/api", "first-secret", 999).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_secret_created_after_its_runner_signs_once_it_appears() {
    let (api, client) = FakeApi::start();
    api.put_runner("ci", "api", "api", "api-hook");
    let mut serving = Serving::start(client, &[]).await;
    serving.until("the runner is in the catalog", |u| has_runner(u, "api")).await;
    assert_eq!(serving.deliver("acme/api", "late-secret", 1).await, StatusCode::UNAUTHORIZED);

    api.put_secret("ci", "api-hook", "late-secret");

    serving.until("the Secret signs", |u| u.catalog.secrets.repositories() == 1).await;
    serving.delivery_is_answered("acme/api", "late-secret", StatusCode::ACCEPTED).await;
    api.delete(Kind::Secret, "ci", "api-hook");
    serving.until("the deleted Secret signs no more", |u| u.catalog.secrets.repositories() == 0).await;
    serving.delivery_is_answered("acme/api", "late-secret", StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn a_deleted_runner_disappears_and_the_namespace_watch_stops_with_the_last_one() {
    let (api, client) = FakeApi::start();
    api.put_secret("ci", "api-hook", "api-secret");
    api.put_secret("ci", "web-hook", "web-secret");
    api.put_runner("ci", "api", "api", "api-hook");
    api.put_runner("ci", "web", "web", "web-hook");
    let mut serving = Serving::start(client, &[]).await;
    serving.until("both runners are in the catalog", |u| has_runner(u, "api") && has_runner(u, "web")).await;
    assert_eq!(api.open_secret_watches("ci"), 1);

    api.delete(Kind::Runner, "ci", "api");

    serving.until("the runner is gone", |u| !has_runner(u, "api") && has_runner(u, "web")).await;
    serving.delivery_is_answered("acme/api", "api-secret", StatusCode::UNAUTHORIZED).await;
    assert_eq!(serving.deliver("acme/web", "web-secret", 999).await, StatusCode::ACCEPTED);
    assert_eq!(api.open_secret_watches("ci"), 1, "the other runner's Secret is still watched");

    api.delete(Kind::Runner, "ci", "web");
    serving.until("the last runner is gone", |u| !has_runner(u, "web")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while api.open_secret_watches("ci") > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the namespace's Secret watch outlived its last runner");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn not_ready_until_the_runners_and_their_secrets_have_been_listed() {
    let (api, client) = FakeApi::start();
    api.put_secret("ci", "api-hook", "api-secret");
    api.put_runner("ci", "api", "api", "api-hook");
    let dir = TempDir::new().unwrap();
    let metrics = Arc::new(Metrics::new());
    let store = StoreHandle::start(dir.path(), Default::default(), WriterConfig::default(), metrics.clone()).unwrap();
    let state = AppState::waiting_for_catalog(store, metrics, WebhookSecrets::default());
    let readyz = || async {
        let request = Request::get("/readyz").body(Body::empty()).unwrap();
        router(state.clone()).oneshot(request).await.unwrap().status()
    };
    assert_eq!(readyz().await, StatusCode::SERVICE_UNAVAILABLE);

    let stopped = tokio_util::sync::CancellationToken::new();
    let (mut updates, _watching) = cluster::start(client, WatchConfig::new(Vec::new(), None, None), stopped);
    tokio::spawn(follow_catalog(state.clone(), updates.clone(), None, None));
    tokio::time::timeout(Duration::from_secs(5), updates.wait_for(|u| u.is_some())).await.unwrap().unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while readyz().await != StatusCode::OK {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let published = updates.borrow().clone().unwrap();
    assert_eq!(published.catalog.secrets.repositories(), 1, "the first catalog already has the Secret");
}

#[tokio::test]
async fn tokens_are_read_from_the_token_namespace_the_only_one_listed_whole() {
    let (api, client) = FakeApi::start();
    api.put_secret("ci", "api-hook", "api-secret");
    let mut token = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pat", "namespace": "gaa-system"},
        "data": {"token": base64("ghp_first"), "token2": base64("ghp_second"), "other": base64("ignored")},
    });
    api.put(Kind::Secret, token.clone());
    let mut with_token = runner("ci", "api", "api", "api-hook");
    with_token["spec"]["githubTokenSecret"] = json!("pat");
    api.put(Kind::Runner, with_token);
    let stopped = tokio_util::sync::CancellationToken::new();
    let config = WatchConfig::new(Vec::new(), Some("gaa-system".into()), None);
    let (mut updates, _watching) = cluster::start(client, config, stopped);

    let tokens = |updates: &CatalogUpdates| -> Vec<Vec<u8>> {
        let update = updates.borrow().clone().unwrap();
        update.catalog.tokens.get("acme/api").into_iter().flatten().map(|t| t.expose_secret().to_vec()).collect()
    };
    tokio::time::timeout(Duration::from_secs(5), updates.wait_for(|u| u.is_some())).await.unwrap().unwrap();
    assert_eq!(tokens(&updates), vec![b"ghp_first".to_vec(), b"ghp_second".to_vec()]);

    token["data"]["token2"] = json!(base64("ghp_rotated"));
    api.put(Kind::Secret, token);
    let rotated = updates.wait_for(|u| {
        u.as_ref().is_some_and(|u| {
            u.catalog.tokens.get("acme/api").is_some_and(|t| t.iter().any(|t| t.expose_secret() == b"ghp_rotated"))
        })
    });
    tokio::time::timeout(Duration::from_secs(5), rotated).await.unwrap().unwrap();

    for request in secret_requests(&api) {
        let in_token_namespace = request.starts_with("/api/v1/namespaces/gaa-system/secrets?");
        let names_only = request.starts_with("/api/v1/namespaces/ci/secrets?") && request.ends_with(" [metadata]");
        let by_name = request == "/api/v1/namespaces/ci/secrets/api-hook";
        assert!(
            in_token_namespace || names_only || by_name,
            "a Secret request outside the token namespace reads more than the named Secret: {request}"
        );
    }
}

#[tokio::test]
async fn a_secret_the_server_may_not_read_holds_back_the_others_only_for_the_grace_period() {
    let (api, client) = FakeApi::start();
    api.put_secret("ci", "api-hook", "api-secret");
    api.put_runner("ci", "api", "api", "api-hook");
    api.put_secret("ci", "locked-hook", "locked-secret");
    api.put_runner("ci", "locked", "locked", "locked-hook");
    api.forbid_secret("locked-hook");
    let stopped = tokio_util::sync::CancellationToken::new();
    let mut config = WatchConfig::new(Vec::new(), None, None);
    config.sync_grace = Duration::from_millis(500);
    let started = tokio::time::Instant::now();
    let (mut updates, _watching) = cluster::start(client, config, stopped);

    tokio::time::timeout(Duration::from_secs(5), updates.wait_for(|u| u.is_some())).await.unwrap().unwrap();

    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "published before the grace period: {:?}",
        started.elapsed()
    );
    let published = updates.borrow().clone().unwrap();
    assert!(has_runner(&published, "api") && has_runner(&published, "locked"));
    assert_eq!(published.catalog.secrets.repositories(), 1, "only the readable Secret signs");
}

#[tokio::test]
async fn a_runner_our_types_cannot_read_is_left_out_and_the_others_still_load() {
    let (api, client) = FakeApi::start();
    api.put_secret("ci", "web-hook", "web-secret");
    api.put_runner("ci", "web", "web", "web-hook");
    let mut unreadable = runner("ci", "odd", "odd", "web-hook");
    unreadable["spec"]["maxRunners"] = json!("plenty");
    api.put(Kind::Runner, unreadable);
    let mut serving = Serving::start(client, &[]).await;
    serving.until("the readable runner is in the catalog", |u| has_runner(u, "web") && !has_runner(u, "odd")).await;
    assert_eq!(serving.deliver("acme/web", "web-secret", 1).await, StatusCode::ACCEPTED);

    // Fixed, it joins without a restart; deleted while unreadable, nothing breaks either.
    api.put_runner("ci", "odd", "odd", "web-hook");
    serving.until("the fixed runner joins", |u| has_runner(u, "odd")).await;
    api.delete(Kind::Runner, "ci", "odd");
    serving.until("the deleted runner leaves", |u| !has_runner(u, "odd") && has_runner(u, "web")).await;
}
