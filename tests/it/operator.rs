//! The controllers against kube's tower-test mock API server: each test scripts the answers and
//! then asserts on the requests the reconcile (or the demand task) made. The core comes from the
//! context's store, as the core watch would leave it, never from a request.

use crate::common;

use std::sync::{Arc, Mutex};

use gaa::crd::{ScaledActionRunner, ScaledActionRunnerCore};
use gaa::operator::Settings;
use gaa::operator::controller::{
    Context, DemandReader, INITIAL_REPLICAS_MANAGER, REFRESH_NOT_READY, REFRESH_READY, RunnerObject, publish_demand,
    reconcile_core, reconcile_runner,
};
use hyper::{Request, Response};
use kube::Client;
use kube::client::Body;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    query: String,
    body: Value,
}

impl Call {
    fn field_manager(&self) -> Option<String> {
        self.query.split('&').find_map(|pair| pair.strip_prefix("fieldManager=")).map(str::to_owned)
    }
}

/// A mock API server that answers each request with `answer` and records it.
fn api_server(answer: impl Fn(&Call) -> (u16, Value) + Send + Sync + 'static) -> (Client, Arc<Mutex<Vec<Call>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let log = calls.clone();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().path().to_owned();
            let query = request.uri().query().unwrap_or_default().to_owned();
            let bytes = request.into_body().collect_bytes().await.unwrap_or_default();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let call = Call { method, path, query, body };
            let (status, reply) = answer(&call);
            log.lock().unwrap().push(call);
            let response = Response::builder().status(status).body(Body::from(serde_json::to_vec(&reply).unwrap()));
            respond.send_response(response.unwrap());
        }
    });
    (Client::new(service, "default"), calls)
}

fn not_found() -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404}),
    )
}

fn empty_list() -> (u16, Value) {
    (200, json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}))
}

fn core() -> Value {
    json!({
        "apiVersion": "runner.devjoes.com/v1alpha1", "kind": "ScaledActionRunnerCore",
        "metadata": {"name": "core", "uid": "core-uid"},
        "spec": {"apiServerName": "metrics", "apiServerNamespace": "github", "sslCertSecret": "tls-cert"}
    })
}

fn runner(spec: Value) -> ScaledActionRunner {
    serde_json::from_value(json!({
        "apiVersion": "runner.devjoes.com/v1alpha1", "kind": "ScaledActionRunner",
        "metadata": {"name": "web", "namespace": "ci", "uid": "runner-uid", "generation": 3},
        "spec": spec
    }))
    .unwrap()
}

/// A runner as the watch hands it to the reconcile.
fn watched(runner: ScaledActionRunner) -> Arc<RunnerObject> {
    Arc::new(DeserializeGuard(Ok(runner)))
}

fn watched_core(core: ScaledActionRunnerCore) -> Arc<DeserializeGuard<ScaledActionRunnerCore>> {
    Arc::new(DeserializeGuard(Ok(core)))
}

fn web_spec() -> Value {
    json!({"owner": "acme", "repo": "web", "maxRunners": 5, "minRunners": 1,
           "webhookSecret": "web-hook", "githubTokenSecret": "web-token",
           "runner": {"runnerLabels": "linux"}})
}

/// Answers like a cluster holding the core, no StatefulSet yet (unless `existing`), and KEDA.
fn cluster(existing_set: Option<Value>, keda: bool) -> impl Fn(&Call) -> (u16, Value) + Send + Sync + 'static {
    let created = Arc::new(Mutex::new(existing_set));
    move |call: &Call| {
        let path = call.path.as_str();
        match call.method.as_str() {
            "GET" if path.ends_with("/statefulsets/web") => {
                created.lock().unwrap().clone().map_or_else(not_found, |set| (200, set))
            }
            "GET" => empty_list(),
            "PATCH" if path.contains("/keda.sh/") && !keda => not_found(),
            "PATCH" if path.ends_with("/statefulsets/web") => {
                // Like the API server: status is kept; a new set reports the replicas it got.
                let mut set = call.body.clone();
                let mut known = created.lock().unwrap();
                set["status"] = match known.as_ref() {
                    Some(old) => old["status"].clone(),
                    None => json!({"replicas": call.body["spec"]["replicas"]}),
                };
                *known = Some(set.clone());
                (200, set)
            }
            "PATCH" if path.ends_with("/status") => {
                let mut object = serde_json::to_value(runner(web_spec())).unwrap();
                object["status"] = call.body["status"].clone();
                (200, object)
            }
            "PATCH" => (200, call.body.clone()),
            "POST" => (201, call.body.clone()),
            _ => not_found(),
        }
    }
}

/// A context whose core store holds the core named `core`, as the core watch leaves it.
fn context(client: Client) -> Arc<Context> {
    with_core(Context::new(client, Settings::default(), None))
}

fn with_core(ctx: Context) -> Arc<Context> {
    ctx.remember_core(serde_json::from_value(core()).unwrap());
    Arc::new(ctx)
}

fn patches<'a>(calls: &'a [Call], suffix: &str) -> Vec<&'a Call> {
    calls.iter().filter(|call| call.method == "PATCH" && call.path.ends_with(suffix)).collect()
}

fn status_of(calls: &[Call]) -> Value {
    patches(calls, "/scaledactionrunners/web/status").last().expect("a status patch").body["status"].clone()
}

#[tokio::test]
async fn a_new_runner_starts_at_min_runners_and_keda_owns_replicas_from_then_on() {
    let (client, calls) = api_server(cluster(None, true));
    let action = reconcile_runner(watched(runner(web_spec())), context(client)).await.unwrap();
    assert_eq!(action, Action::requeue(REFRESH_READY), "a Ready runner is looked at again rarely");
    let calls = calls.lock().unwrap().clone();

    let sets = patches(&calls, "/apis/apps/v1/namespaces/ci/statefulsets/web");
    assert_eq!(sets.len(), 2, "{sets:#?}");
    assert_eq!(sets[0].field_manager().as_deref(), Some(INITIAL_REPLICAS_MANAGER));
    assert_eq!(sets[0].body["spec"]["replicas"], 1, "created at minRunners");
    assert_eq!(sets[1].field_manager().as_deref(), Some("github-action-autoscaler"));
    assert!(sets[1].body["spec"].get("replicas").is_none(), "our applies leave replicas to KEDA");
    assert!(sets.iter().all(|call| call.query.contains("force=true")));
    assert_eq!(sets[1].body["metadata"]["ownerReferences"][0]["uid"], "runner-uid");
    assert_eq!(sets[1].body["metadata"]["ownerReferences"][0]["controller"], true);

    let scaled = patches(&calls, "/apis/keda.sh/v1alpha1/namespaces/ci/scaledobjects/web");
    assert_eq!(scaled.len(), 1);
    let trigger = &scaled[0].body["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "external-push");
    assert_eq!(trigger["metadata"]["scalerAddress"], "metrics.github.svc:9090");
    assert_eq!(scaled[0].body["spec"]["minReplicaCount"], 1);
    assert_eq!(scaled[0].body["spec"]["maxReplicaCount"], 5);

    let role = patches(&calls, "/roles/web-api-server");
    assert_eq!(role[0].body["rules"][0]["resourceNames"], json!(["web-hook", "web-token"]));
    let binding = patches(&calls, "/rolebindings/web-api-server");
    assert_eq!(
        binding[0].body["subjects"][0],
        json!({"kind": "ServiceAccount", "name": "metrics", "namespace": "github"})
    );

    let written = patches(&calls, "/scaledactionrunners/web/status");
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].field_manager().as_deref(), Some("github-action-autoscaler"), "server-side apply");
    assert!(written[0].query.contains("force=true"));
    assert_eq!(written[0].body["kind"], "ScaledActionRunner");
    let status = status_of(&calls);
    assert_eq!(status["observedGeneration"], 3);
    assert_eq!(status["replicas"], 1);
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][0]["status"], "True", "{status}");
    assert!(calls.iter().all(|call| call.method != "DELETE"), "nothing to prune");
}

#[tokio::test]
async fn a_changed_runner_is_updated_in_place_and_its_statefulset_never_recreated() {
    let existing = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                          "metadata": {"name": "web", "namespace": "ci"}, "spec": {"replicas": 4}, "status": {"replicas": 4}});
    let (client, calls) = api_server(cluster(Some(existing), true));
    let mut spec = web_spec();
    spec["runner"]["image"] = json!("registry.example/runner:2");
    reconcile_runner(watched(runner(spec)), context(client)).await.unwrap();
    let calls = calls.lock().unwrap().clone();
    let sets = patches(&calls, "/statefulsets/web");
    assert_eq!(sets.len(), 1, "one apply, no create: {sets:#?}");
    assert_eq!(sets[0].field_manager().as_deref(), Some("github-action-autoscaler"));
    assert_eq!(sets[0].body["spec"]["template"]["spec"]["containers"][0]["image"], "registry.example/runner:2");
    assert!(
        calls
            .iter()
            .all(|call| !(call.method == "DELETE" || call.method == "POST" && call.path.contains("statefulsets")))
    );
    assert_eq!(status_of(&calls)["replicas"], 4, "the replicas KEDA chose are reported, not reset");
}

#[tokio::test]
async fn a_runner_that_stops_naming_secrets_loses_the_access_it_had_and_nothing_else() {
    let stale = |name: &str, uid: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": name, "namespace": "ci",
                            "ownerReferences": [{"apiVersion": "runner.devjoes.com/v1alpha1", "kind": "ScaledActionRunner",
                                                 "name": "web", "uid": uid, "controller": true}]}})
    };
    let roles = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"},
                       "items": [stale("web-api-server", "runner-uid"), stale("web-other", "another-uid")]});
    let base = cluster(None, true);
    let (client, calls) = api_server(move |call| {
        if call.method == "GET" && call.path == "/apis/rbac.authorization.k8s.io/v1/namespaces/ci/roles" {
            assert!(call.query.contains("labelSelector"), "prune lists only our objects: {}", call.query);
            return (200, roles.clone());
        }
        if call.method == "DELETE" {
            return (200, json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}));
        }
        base(call)
    });
    let spec = json!({"owner": "acme", "repo": "web", "maxRunners": 2});
    reconcile_runner(watched(runner(spec)), context(client)).await.unwrap();
    let calls = calls.lock().unwrap().clone();
    let deleted: Vec<&str> =
        calls.iter().filter(|call| call.method == "DELETE").map(|call| call.path.as_str()).collect();
    assert_eq!(deleted, ["/apis/rbac.authorization.k8s.io/v1/namespaces/ci/roles/web-api-server"]);
    assert!(patches(&calls, "/roles/web-api-server").is_empty(), "no access is granted any more");
}

#[tokio::test]
async fn an_invalid_spec_becomes_a_condition_and_an_event_and_waits_for_a_change() {
    let (client, calls) = api_server(cluster(None, true));
    let spec = json!({"owner": "acme", "repo": "web", "maxRunners": 2, "minRunners": 3});
    let ctx = context(client);
    let action = reconcile_runner(watched(runner(spec)), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change(), "no retry loop on a spec only the user can fix");
    let metrics = ctx.metrics.encode();
    assert!(
        metrics.contains(r#"gaa_operator_reconciles_total{kind="ScaledActionRunner",outcome="invalid"} 1"#),
        "{metrics}"
    );
    let calls = calls.lock().unwrap().clone();
    assert!(patches(&calls, "/statefulsets/web").is_empty(), "nothing is applied from an invalid spec");
    let status = status_of(&calls);
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["conditions"][0]["reason"], "InvalidSpec");
    assert!(status["conditions"][0]["message"].as_str().unwrap().contains("minRunners"), "{status}");
    let event = calls.iter().find(|call| call.method == "POST" && call.path.ends_with("/events")).expect("an Event");
    assert_eq!(event.body["type"], "Warning");
    assert_eq!(event.body["reason"], "InvalidSpec");
    assert_eq!(event.body["regarding"]["name"], "web");
}

#[tokio::test]
async fn without_keda_the_runner_keeps_its_statefulset_and_says_what_is_missing() {
    let (client, calls) = api_server(cluster(None, false));
    reconcile_runner(watched(runner(web_spec())), context(client)).await.unwrap();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(patches(&calls, "/statefulsets/web").len(), 2);
    let status = status_of(&calls);
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["conditions"][0]["reason"], "KedaMissing", "{status}");
}

#[tokio::test]
async fn without_a_core_the_runner_gets_its_statefulset_but_no_scaled_object() {
    let (client, calls) = api_server(cluster(None, true));
    let ctx = Arc::new(Context::new(client, Settings::default(), None));
    let action = reconcile_runner(watched(runner(web_spec())), ctx).await.unwrap();
    assert_eq!(action, Action::requeue(REFRESH_NOT_READY), "a runner waiting for its core is looked at again soon");
    let calls = calls.lock().unwrap().clone();
    assert!(patches(&calls, "/scaledobjects/web").is_empty());
    assert!(patches(&calls, "/roles/web-api-server").is_empty(), "no API server to grant access to");
    assert_eq!(status_of(&calls)["conditions"][0]["reason"], "CoreMissing");
    assert!(calls.iter().all(|call| !call.path.contains("scaledactionrunnercore")), "the core is never asked for");
}

#[tokio::test]
async fn a_core_our_types_cannot_read_leaves_the_runner_as_it_is_and_is_retried_with_its_step() {
    let (client, calls) = api_server(cluster(None, true));
    let ctx = Context::new(client, Settings::default(), None);
    let mut unreadable = core();
    unreadable["spec"]["apiServerReplicas"] = json!("several");
    ctx.remember_core(serde_json::from_value(unreadable).unwrap());
    let error = reconcile_runner(watched(runner(web_spec())), Arc::new(ctx)).await.unwrap_err();
    assert_eq!(error.category(), "dereference");
    assert!(error.to_string().contains("ScaledActionRunnerCore core"), "{error}");
    let calls = calls.lock().unwrap();
    assert!(calls.iter().all(|call| call.method == "GET"), "nothing applied, pruned or written: {calls:#?}");
}

#[tokio::test]
async fn an_api_server_error_is_returned_for_a_retry_with_its_step() {
    let (client, _calls) = api_server(|call| {
        if call.path == "/api/v1/namespaces/github/secrets/tls-cert" {
            return (
                500,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 500, "message": "etcd timeout"}),
            );
        }
        not_found()
    });
    let error = reconcile_core(watched_core(core_object("core")), context(client)).await.unwrap_err();
    assert_eq!(error.category(), "dereference");
    assert!(error.to_string().contains("Secret github/tls-cert"), "{error}");
}

/// A runner named `api-linux` for acme/api, with `status`.
fn api_runner(status: Value) -> Arc<RunnerObject> {
    let mut object =
        runner(json!({"owner": "acme", "repo": "api", "maxRunners": 3, "runner": {"runnerLabels": "linux"}}));
    object.metadata.name = Some("api-linux".into());
    object.status = Some(serde_json::from_value(status).unwrap());
    watched(object)
}

/// A `serve` holding one queued job of acme/api, and a context whose demand reader asks it; the
/// server runs (and then its directory stays) while the last value lives.
async fn demand_task_with_one_queued_job()
-> (Arc<Context>, Arc<Mutex<Vec<Call>>>, (common::server::Server, tempfile::TempDir)) {
    use common::server::{Server, http, manifests_dir};
    let root = tempfile::tempdir().unwrap();
    let server = Server::start(&root.path().join("data"), &manifests_dir(root.path(), "")).await;
    assert_eq!(server.deliver(&http(), "d-1", "acme/api", 41, "queued").await, 202);
    let (client, calls) = api_server(cluster(None, true));
    let reader = DemandReader::new(Some(format!("http://{}", server.addr)));
    (with_core(Context::new(client, Settings::default(), Some(reader))), calls, (server, root))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demand_task_writes_the_demand_the_api_server_counts_and_keeps_the_rest_of_the_status() {
    let (ctx, calls, _server) = demand_task_with_one_queued_job().await;
    let ready = json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Applied", "message": "5 objects applied",
        "lastTransitionTime": "2020-01-01T00:00:00Z", "observedGeneration": 3}], "observedGeneration": 3, "replicas": 1});
    publish_demand(&ctx, &[api_runner(ready.clone())]).await;
    let calls = calls.lock().unwrap().clone();
    let written = patches(&calls, "/scaledactionrunners/api-linux/status");
    assert_eq!(written.len(), 1, "{calls:#?}");
    assert_eq!(written[0].field_manager().as_deref(), Some("github-action-autoscaler"), "the reconcile's manager");
    assert!(written[0].query.contains("force=true"));
    let status = &written[0].body["status"];
    assert_eq!(status["demand"], 1, "{status}");
    assert_eq!(status["queued"], 1);
    assert_eq!(status["desiredRunners"], 1);
    // One manager applies all of its fields each time, or the ones left out would be removed.
    assert_eq!(status["conditions"], ready["conditions"]);
    assert_eq!(status["replicas"], 1);
    assert!(calls.iter().all(|call| call.method == "GET" || call.path.ends_with("/status")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demand_task_writes_nothing_while_the_demand_holds() {
    let (ctx, calls, _server) = demand_task_with_one_queued_job().await;
    publish_demand(&ctx, &[api_runner(json!({}))]).await;
    let written = status_of_runner(&calls.lock().unwrap(), "api-linux");
    calls.lock().unwrap().clear();
    publish_demand(&ctx, &[api_runner(written)]).await;
    let calls = calls.lock().unwrap();
    assert!(patches(&calls, "/status").is_empty(), "the same demand was written again: {calls:#?}");
    assert!(calls.iter().all(|call| call.method == "GET"), "{calls:#?}");
}

#[tokio::test]
async fn a_reconcile_keeps_the_demand_the_demand_task_wrote() {
    let (client, calls) = api_server(cluster(None, true));
    // Nothing answers there: the demand shown is the one already in the status.
    let reader = DemandReader::new(Some("http://127.0.0.1:9".into()));
    let ctx = with_core(Context::new(client, Settings::default(), Some(reader)));
    reconcile_runner(api_runner(json!({"demand": 4, "queued": 4})), ctx).await.unwrap();
    let calls = calls.lock().unwrap().clone();
    let status = &patches(&calls, "/scaledactionrunners/api-linux/status")[0].body["status"];
    assert_eq!(status["demand"], 4, "the demand the task wrote is kept: {status}");
    assert_eq!(status["conditions"][0]["type"], "Ready");
}

fn status_of_runner(calls: &[Call], name: &str) -> Value {
    let suffix = format!("/scaledactionrunners/{name}/status");
    patches(calls, &suffix).last().expect("a status patch").body["status"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demand_task_reads_over_mutual_tls_with_the_certificate_of_the_core() {
    use base64::Engine as _;
    use common::server::{Server, free_port, http, manifests_dir};
    let root = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::pki::write_mutual_tls(root.path());
    let path = |name: &str| root.path().join(name).display().to_string();
    let tls = free_port();
    let tls_listen = tls.to_string();
    let args = [
        "--tls-listen",
        &tls_listen,
        "--tls-cert",
        &path("tls.crt"),
        "--tls-key",
        &path("tls.key"),
        "--client-ca",
        &path("ca.crt"),
    ];
    // As in a cluster: the plain listener serves no reads.
    let server = Server::launch(&root.path().join("data"), &manifests_dir(root.path(), ""), &args, &[], None).await;
    assert_eq!(server.deliver(&http(), "d-1", "acme/api", 41, "queued").await, 202);

    let encode = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls-cert", "namespace": "github"},
        "data": {"tls.crt": encode(&cert), "tls.key": encode(&key), "ca.crt": encode(&ca)},
    });
    let rest = cluster(None, true);
    let (client, calls) = api_server(move |call| {
        if call.method == "GET" && call.path == "/api/v1/namespaces/github/secrets/tls-cert" {
            return (200, secret.clone());
        }
        rest(call)
    });
    let reader = DemandReader::new(Some(format!("https://localhost:{}", tls.port())));
    let ctx = with_core(Context::new(client, Settings::default(), Some(reader)));
    publish_demand(&ctx, &[api_runner(json!({}))]).await;
    let status = status_of_runner(&calls.lock().unwrap(), "api-linux");
    assert_eq!(status["demand"], 1, "{status}");
    assert_eq!(status["desiredRunners"], 1, "{status}");
}

fn core_object(name: &str) -> gaa::crd::ScaledActionRunnerCore {
    let mut value = core();
    value["metadata"] = json!({"name": name, "uid": "core-uid", "generation": 2});
    serde_json::from_value(value).unwrap()
}

/// A cluster holding the core's certificate Secret and the aggregator's client CA.
fn core_cluster(call: &Call) -> (u16, Value) {
    let path = call.path.as_str();
    match call.method.as_str() {
        "GET" if path == "/api/v1/namespaces/github/secrets/tls-cert" => (
            200,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls-cert", "namespace": "github"},
                   "data": {"ca.crt": "Q0EgUEVN", "tls.crt": "eA==", "tls.key": "eA=="}}),
        ),
        "GET" if path == "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication" => (
            200,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
                   "data": {"requestheader-client-ca-file": "FRONT PROXY CA"}}),
        ),
        "GET" if path == "/apis/apps/v1/namespaces/github/deployments/metrics" => (
            200,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "metrics", "namespace": "github"},
                   "spec": {"selector": {}, "template": {}}, "status": {"availableReplicas": 2}}),
        ),
        "GET" => empty_list(),
        "PATCH" if path.ends_with("/status") => {
            let mut object = core();
            object["status"] = call.body["status"].clone();
            (200, object)
        }
        "PATCH" => (200, call.body.clone()),
        "POST" => (201, call.body.clone()),
        _ => not_found(),
    }
}

#[tokio::test]
async fn the_core_applies_its_stack_trusting_the_ca_of_its_certificate_secret_and_owns_all_of_it() {
    let (client, calls) = api_server(core_cluster);
    reconcile_core(watched_core(core_object("core")), context(client)).await.unwrap();
    let calls = calls.lock().unwrap().clone();
    let applied: Vec<&Call> =
        calls.iter().filter(|call| call.method == "PATCH" && !call.path.ends_with("/status")).collect();
    assert!(applied.len() >= 10, "{applied:#?}");
    for call in &applied {
        assert_eq!(call.field_manager().as_deref(), Some("github-action-autoscaler"), "{}", call.path);
        // Deleting the core lets the garbage collector remove every one of these.
        assert_eq!(call.body["metadata"]["ownerReferences"][0]["uid"], "core-uid", "{}", call.path);
    }
    let api_service = patches(&calls, "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.custom.metrics.k8s.io");
    assert_eq!(api_service[0].body["spec"]["caBundle"], "Q0EgUEVN", "the CA from tls-cert's ca.crt");
    assert!(api_service[0].body["spec"].get("insecureSkipTLSVerify").is_none());
    let mirrored = patches(&calls, "/api/v1/namespaces/github/configmaps/metrics-front-proxy-ca");
    assert_eq!(mirrored[0].body["data"]["ca.crt"], "FRONT PROXY CA");
    let deployment = patches(&calls, "/apis/apps/v1/namespaces/github/deployments/metrics");
    let args = deployment[0].body["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains("--cache-window") && args.contains("memcached://metrics-cache-0.metrics-cache.github.svc:11211"),
        "{args}"
    );
    let status = &patches(&calls, "/scaledactionrunnercore/core/status")[0].body["status"];
    assert_eq!(status["conditions"][0]["status"], "True", "{status}");
    assert_eq!(status["observedGeneration"], 2);
}

#[tokio::test]
async fn a_core_without_its_certificate_yet_applies_the_rest_and_says_what_it_waits_for() {
    let (client, calls) = api_server(|call| {
        if call.path == "/api/v1/namespaces/github/secrets/tls-cert" {
            return not_found();
        }
        core_cluster(call)
    });
    reconcile_core(watched_core(core_object("core")), context(client)).await.unwrap();
    let calls = calls.lock().unwrap().clone();
    let api_service = patches(&calls, "/apiservices/v1beta1.custom.metrics.k8s.io");
    assert!(api_service[0].body["spec"].get("caBundle").is_none());
    let status = &patches(&calls, "/scaledactionrunnercore/core/status")[0].body["status"];
    assert_eq!(status["conditions"][0]["reason"], "CertificateMissing", "{status}");
}

#[tokio::test]
async fn a_core_not_named_core_is_left_alone_with_a_reason() {
    let (client, calls) = api_server(core_cluster);
    let action = reconcile_core(watched_core(core_object("staging")), context(client)).await.unwrap();
    assert_eq!(action, Action::await_change());
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "only its status is written: {calls:#?}");
    assert_eq!(calls[0].body["status"]["conditions"][0]["reason"], "NotCore");
}

#[tokio::test]
async fn an_invalid_core_becomes_a_condition_and_an_event() {
    let (client, calls) = api_server(core_cluster);
    let mut core = core_object("core");
    core.spec.create_memcached = Some(false);
    let action = reconcile_core(watched_core(core), context(client)).await.unwrap();
    assert_eq!(action, Action::await_change());
    let calls = calls.lock().unwrap().clone();
    assert!(calls.iter().all(|call| call.method != "PATCH" || call.path.ends_with("/status")), "nothing applied");
    let status = &patches(&calls, "/status")[0].body["status"];
    assert_eq!(status["conditions"][0]["reason"], "InvalidSpec");
    assert!(status["conditions"][0]["message"].as_str().unwrap().contains("memcacheServers"), "{status}");
    assert!(calls.iter().any(|call| call.method == "POST" && call.path.ends_with("/events")));
}

#[tokio::test]
async fn what_is_not_honoured_as_written_is_said_in_the_ready_condition() {
    let (client, calls) = api_server(cluster(None, true));
    let mut spec = web_spec();
    spec["runnerSecrets"] = json!(["web-0", "web-1"]);
    reconcile_runner(watched(runner(spec)), context(client)).await.unwrap();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(patches(&calls, "/scaledobjects/web")[0].body["spec"]["maxReplicaCount"], 2);
    let condition = &status_of(&calls)["conditions"][0];
    assert_eq!(condition["status"], "True");
    assert!(condition["message"].as_str().unwrap().contains("at most 2 run"), "{condition}");
}

#[tokio::test]
async fn an_object_our_types_cannot_read_gets_a_condition_and_never_stalls_the_others() {
    let raw = json!({
        "apiVersion": "runner.devjoes.com/v1alpha1", "kind": "ScaledActionRunner",
        "metadata": {"name": "web", "namespace": "ci", "uid": "runner-uid", "generation": 3},
        "spec": {"owner": "acme", "repo": "web", "maxRunners": "plenty"}
    });
    let base = cluster(None, true);
    let live = raw.clone();
    let (client, calls) = api_server(move |call| {
        if call.method == "GET"
            && call.path == "/apis/runner.devjoes.com/v1alpha1/namespaces/ci/scaledactionrunners/web"
        {
            return (200, live.clone());
        }
        if call.method == "PATCH" && call.path.ends_with("/web/status") {
            // Answered as the cluster would: an object our types still cannot read.
            let mut object = live.clone();
            object["status"] = call.body["status"].clone();
            return (200, object);
        }
        base(call)
    });
    let ctx = context(client);
    let unreadable: Arc<RunnerObject> = Arc::new(serde_json::from_value(raw).unwrap());
    assert!(unreadable.0.is_err(), "the watch hands the reconcile an error, not a failed list");
    let action = reconcile_runner(unreadable, ctx.clone()).await.expect("the written status is not read back as ours");
    assert_eq!(action, Action::await_change());
    {
        let calls = calls.lock().unwrap();
        let status = status_of(&calls);
        assert_eq!(status["conditions"][0]["reason"], "InvalidSpec");
        assert!(status["conditions"][0]["message"].as_str().unwrap().contains("cannot be read"), "{status}");
        assert_eq!(status["observedGeneration"], 3);
        let event =
            calls.iter().find(|call| call.method == "POST" && call.path.ends_with("/events")).expect("an Event");
        assert_eq!(event.body["regarding"]["kind"], "ScaledActionRunner");
        assert_eq!(event.body["regarding"]["name"], "web");
        assert!(patches(&calls, "/statefulsets/web").is_empty());
    }
    // The next object, readable, is reconciled as usual by the same controller.
    reconcile_runner(watched(runner(web_spec())), ctx).await.unwrap();
    assert_eq!(patches(&calls.lock().unwrap(), "/statefulsets/web").len(), 2);
}

#[tokio::test]
async fn an_unreadable_object_whose_status_already_says_so_is_not_written_again() {
    let mut raw = json!({
        "apiVersion": "runner.devjoes.com/v1alpha1", "kind": "ScaledActionRunner",
        "metadata": {"name": "web", "namespace": "ci", "uid": "runner-uid", "generation": 3},
        "spec": {"owner": "acme", "repo": "web", "maxRunners": "plenty"}
    });
    let live = Arc::new(Mutex::new(raw.clone()));
    let seen = live.clone();
    let (client, calls) = api_server(move |call| match call.method.as_str() {
        "GET" if call.path.ends_with("/scaledactionrunners/web") => (200, seen.lock().unwrap().clone()),
        "PATCH" => {
            let mut object = seen.lock().unwrap().clone();
            object["status"] = call.body["status"].clone();
            *seen.lock().unwrap() = object.clone();
            (200, object)
        }
        "POST" => (201, call.body.clone()),
        _ => not_found(),
    });
    let ctx = context(client);
    reconcile_runner(Arc::new(serde_json::from_value(raw.clone()).unwrap()), ctx.clone()).await.unwrap();
    raw["status"] = live.lock().unwrap()["status"].clone();
    calls.lock().unwrap().clear();
    reconcile_runner(Arc::new(serde_json::from_value(raw).unwrap()), ctx).await.unwrap();
    assert!(patches(&calls.lock().unwrap(), "/status").is_empty(), "the same condition was written again");
}

#[tokio::test]
async fn a_change_the_statefulset_cannot_take_in_place_is_explained_and_nothing_is_deleted() {
    let existing = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                          "metadata": {"name": "web", "namespace": "ci"}, "spec": {"replicas": 2}, "status": {"replicas": 2}});
    let base = cluster(Some(existing), true);
    let (client, calls) = api_server(move |call| {
        if call.method == "PATCH" && call.path.ends_with("/statefulsets/web") {
            return (
                422,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Invalid", "code": 422,
                                "message": "StatefulSet.apps \"web\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"}),
            );
        }
        base(call)
    });
    let mut spec = web_spec();
    spec["runner"]["workVolumeClaimTemplate"] =
        json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "50Gi"}}});
    reconcile_runner(watched(runner(spec)), context(client)).await.unwrap();
    let calls = calls.lock().unwrap().clone();
    assert!(
        calls.iter().all(|call| call.method != "DELETE"),
        "the operator never deletes a StatefulSet with running jobs"
    );
    assert_eq!(patches(&calls, "/scaledobjects/web").len(), 1, "the rest is still applied");
    let condition = &status_of(&calls)["conditions"][0];
    assert_eq!(condition["reason"], "StatefulSetImmutable");
    assert!(condition["message"].as_str().unwrap().contains("--cascade=orphan"), "{condition}");
}

#[tokio::test]
async fn a_reconcile_that_changes_nothing_writes_no_status_so_it_does_not_wake_itself() {
    let (client, calls) = api_server(cluster(None, true));
    let ctx = context(client);
    reconcile_runner(watched(runner(web_spec())), ctx.clone()).await.unwrap();
    let written = status_of(&calls.lock().unwrap());
    let mut again = runner(web_spec());
    again.status = Some(serde_json::from_value(written).unwrap());
    calls.lock().unwrap().clear();
    reconcile_runner(watched(again), ctx).await.unwrap();
    let calls = calls.lock().unwrap();
    assert!(patches(&calls, "/status").is_empty(), "the same status was written again");
}

#[tokio::test]
async fn the_ready_condition_keeps_its_transition_time_while_its_status_holds() {
    let (client, calls) = api_server(cluster(None, true));
    let mut object = runner(web_spec());
    object.status = Some(
        serde_json::from_value(json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Applied",
            "message": "an older message", "lastTransitionTime": "2020-01-01T00:00:00Z", "observedGeneration": 2}]}))
        .unwrap(),
    );
    reconcile_runner(watched(object), context(client)).await.unwrap();
    let condition = &status_of(&calls.lock().unwrap())["conditions"][0];
    assert_eq!(condition["status"], "True");
    assert_eq!(condition["lastTransitionTime"], "2020-01-01T00:00:00Z", "{condition}");
    assert_ne!(condition["message"], "an older message");
}

#[tokio::test]
async fn fields_of_the_status_other_managers_own_are_neither_written_nor_a_reason_to_write() {
    let (client, calls) = api_server(cluster(None, true));
    let ctx = context(client);
    reconcile_runner(watched(runner(web_spec())), ctx.clone()).await.unwrap();
    let mut status = status_of(&calls.lock().unwrap());
    status["referencedSecrets"] = json!({"web-hook": "17"});
    let foreign = json!({"type": "Audited", "status": "True", "reason": "Checked", "message": "",
        "lastTransitionTime": "2020-01-01T00:00:00Z"});
    status["conditions"].as_array_mut().unwrap().push(foreign);
    let mut again = runner(web_spec());
    again.status = Some(serde_json::from_value(status).unwrap());
    calls.lock().unwrap().clear();
    reconcile_runner(watched(again.clone()), ctx.clone()).await.unwrap();
    assert!(patches(&calls.lock().unwrap(), "/status").is_empty(), "another manager's fields caused a write");

    // When the status does change, only our fields are applied.
    again.metadata.generation = Some(4);
    reconcile_runner(watched(again), ctx).await.unwrap();
    let written = status_of(&calls.lock().unwrap());
    assert_eq!(written["observedGeneration"], 4);
    assert!(written.get("referencedSecrets").is_none(), "{written}");
    let types: Vec<_> = written["conditions"].as_array().unwrap().iter().map(|c| c["type"].clone()).collect();
    assert_eq!(types, [json!("Ready")]);
}

#[tokio::test]
async fn an_owner_that_wants_the_same_children_again_lists_nothing_to_prune() {
    let (client, calls) = api_server(cluster(None, true));
    let ctx = context(client);
    let lists = |calls: &[Call]| calls.iter().filter(|call| call.query.contains("labelSelector")).count();
    reconcile_runner(watched(runner(web_spec())), ctx.clone()).await.unwrap();
    assert!(lists(&calls.lock().unwrap()) > 0, "the first look prunes");

    calls.lock().unwrap().clear();
    reconcile_runner(watched(runner(web_spec())), ctx.clone()).await.unwrap();
    assert_eq!(lists(&calls.lock().unwrap()), 0, "the same set of children was pruned again");

    // A different set of children (the runner stops naming its Secrets) is pruned again.
    calls.lock().unwrap().clear();
    let spec = json!({"owner": "acme", "repo": "web", "maxRunners": 2});
    reconcile_runner(watched(runner(spec)), ctx.clone()).await.unwrap();
    assert!(lists(&calls.lock().unwrap()) > 0, "a changed set of children is pruned");
}
