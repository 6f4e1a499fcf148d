//! `serve`'s cluster watches at platform scale: how many watches it opens against the Kubernetes
//! API, and the memory it holds, with `--runners` ScaledActionRunners (default 5,000) spread over
//! `--namespaces` namespaces (default 500).
//!
//! A mock API server runs in a child process (this binary again, so its memory is not counted)
//! on loopback over plain HTTP: it lists and holds open watches of ScaledActionRunners and
//! Secrets (by field selector, whole namespaces, metadata only) and answers `get`s, counting
//! each. Every runner names a webhook Secret and a token Secret of its own; each namespace also
//! holds `--others` Secrets no runner names (default 4). The parent runs `gaa::cluster::start`
//! over a kube client pointed at it, waits for the first full catalog, lets it settle, and
//! prints the watches open at the API server, the requests it was sent, the parent's resident
//! memory (now and at its peak) and its open file descriptors (connections).
//!
//! `cargo bench --bench cluster_watches -- [--runners 5000] [--namespaces 500] [--others 4]`

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

const MOCK_ENV: &str = "GAA_BENCH_MOCK_API";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let runners = arg("--runners", 5000).max(1);
    let namespaces = arg("--namespaces", 500).max(1);
    let others = arg("--others", 4);
    if std::env::var_os(MOCK_ENV).is_some() {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
        return runtime.block_on(mock(runners, namespaces, others));
    }
    let mut child = Command::new(std::env::current_exe().expect("this binary"))
        .args(std::env::args().skip(1))
        .env(MOCK_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the mock API server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("mock's stdout")).read_line(&mut line).expect("mock's address");
    let address = line.trim().to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    runtime.block_on(measure(&address, runners));
    let _ = child.kill();
    let _ = child.wait();
}

fn status_field(name: &str) -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find(|l| l.starts_with(name)).map(|l| l[name.len()..].trim().to_string()).unwrap_or_default()
}

async fn measure(address: &str, runners: u64) {
    let url: axum::http::Uri = format!("http://{address}").parse().expect("URL");
    let client = kube::Client::try_from(kube::Config::new(url)).expect("kube client");
    println!("before the watches: RSS {}", status_field("VmRSS:"));
    let stop = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let (mut updates, _task) =
        gaa::cluster::start(client, gaa::cluster::WatchConfig::new(vec![], None, None), stop.clone());
    loop {
        let full = updates.borrow_and_update().as_ref().is_some_and(|update| {
            update.catalog.runners.len() as u64 == runners && update.catalog.secrets.repositories() as u64 == runners
        });
        if full {
            break;
        }
        if tokio::time::timeout(Duration::from_secs(120), updates.changed()).await.is_err() {
            println!("no full catalog after two minutes");
            break;
        }
    }
    let loaded = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats: Value = reqwest_free_get(address, "/stats").await;
    let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
    println!(
        "first full catalog ({runners} runners, each with its webhook Secret) after {:.2} s",
        loaded.as_secs_f64()
    );
    println!(
        "API server: {} watches open ({} of Secrets), {} requests ({} lists, {} watches, {} gets)",
        stats["open_watches"],
        stats["open_secret_watches"],
        stats["requests"],
        stats["lists"],
        stats["watches"],
        stats["gets"]
    );
    println!(
        "serve's side: RSS {} (peak {}), {} open file descriptors",
        status_field("VmRSS:"),
        status_field("VmHWM:"),
        fds
    );
    stop.cancel();
}

/// A GET over a plain TCP connection, HTTP/1.0: the mock's counters.
async fn reqwest_free_get(address: &str, path: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect to the mock");
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: mock\r\n\r\n").as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    lists: AtomicU64,
    watches: AtomicU64,
    gets: AtomicU64,
    open_watches: AtomicU64,
    open_secret_watches: AtomicU64,
}

struct Mock {
    runners: Vec<Value>,
    /// Secrets by namespace, then name.
    secrets: BTreeMap<String, BTreeMap<String, Value>>,
    counters: Counters,
}

/// Counts a watch as open for as long as its response body exists.
struct OpenWatch(Arc<Mock>, bool);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.counters.open_watches.fetch_sub(1, Ordering::SeqCst);
        if self.1 {
            self.0.counters.open_secret_watches.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn base64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

async fn mock(runners: u64, namespaces: u64, others: u64) {
    let mut secrets: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    let secret = |namespace: &str, name: &str, key: &str, value: &str| {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1", "uid": format!("{namespace}-{name}")},
               "data": {key: base64(value)}})
    };
    let mut runner_objects = Vec::new();
    for i in 0..runners {
        let namespace = format!("team-{}", i % namespaces);
        let (hook, token) = (format!("runner-{i}-hook"), format!("runner-{i}-token"));
        runner_objects.push(json!({
            "apiVersion": "runner.devjoes.com/v1alpha1", "kind": "ScaledActionRunner",
            "metadata": {"name": format!("runner-{i}"), "namespace": namespace, "resourceVersion": "1", "uid": format!("r{i}")},
            "spec": {"owner": "acme", "repo": format!("repo-{i}"), "maxRunners": 10, "webhookSecret": hook, "githubTokenSecret": token},
        }));
        let held = secrets.entry(namespace.clone()).or_default();
        held.insert(hook.clone(), secret(&namespace, &hook, "webhook-secret", &format!("hook-{i}")));
        held.insert(token.clone(), secret(&namespace, &token, "token", &format!("ghp_{i}")));
    }
    for n in 0..namespaces {
        let namespace = format!("team-{n}");
        for o in 0..others {
            let name = format!("unrelated-{o}");
            let value = secret(&namespace, &name, "password", "not for serve");
            secrets.entry(namespace.clone()).or_default().insert(name, value);
        }
    }
    let state = Arc::new(Mock { runners: runner_objects, secrets, counters: Counters::default() });
    let app = axum::Router::new().fallback(answer).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("{}", listener.local_addr().expect("address"));
    let _ = axum::serve(listener, app).await;
}

fn json_response(status: StatusCode, body: Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

async fn answer(State(mock): State<Arc<Mock>>, uri: Uri, headers: HeaderMap) -> Response {
    let counters = &mock.counters;
    if uri.path() == "/stats" {
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        return json_response(
            StatusCode::OK,
            json!({"requests": get(&counters.requests), "lists": get(&counters.lists), "watches": get(&counters.watches),
                   "gets": get(&counters.gets), "open_watches": get(&counters.open_watches),
                   "open_secret_watches": get(&counters.open_secret_watches)}),
        );
    }
    counters.requests.fetch_add(1, Ordering::SeqCst);
    let query: HashMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let metadata_only =
        headers.get("accept").and_then(|a| a.to_str().ok()).is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    let (secrets, namespace, name) = match segments.as_slice() {
        ["apis", "runner.devjoes.com", "v1alpha1", "scaledactionrunners"] => (false, None, None),
        ["api", "v1", "namespaces", namespace, "secrets"] => (true, Some(namespace.to_string()), None),
        ["api", "v1", "namespaces", namespace, "secrets", name] => {
            (true, Some(namespace.to_string()), Some(name.to_string()))
        }
        _ => return json_response(StatusCode::NOT_FOUND, json!({"kind": "Status", "apiVersion": "v1", "code": 404})),
    };
    if query.get("watch").is_some_and(|w| w == "true") {
        counters.watches.fetch_add(1, Ordering::SeqCst);
        counters.open_watches.fetch_add(1, Ordering::SeqCst);
        if secrets {
            counters.open_secret_watches.fetch_add(1, Ordering::SeqCst);
        }
        let open = OpenWatch(mock.clone(), secrets);
        let held = futures::stream::pending::<Result<Bytes, Infallible>>();
        let body = futures::StreamExt::map(held, move |chunk| {
            let _ = &open;
            chunk
        });
        return Response::builder().status(StatusCode::OK).body(Body::from_stream(body)).unwrap_or_default();
    }
    let in_namespace = || namespace.as_ref().and_then(|n| mock.secrets.get(n));
    if let Some(name) = name {
        counters.gets.fetch_add(1, Ordering::SeqCst);
        return match in_namespace().and_then(|held| held.get(&name)) {
            Some(secret) => json_response(StatusCode::OK, secret.clone()),
            None => json_response(
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
            ),
        };
    }
    counters.lists.fetch_add(1, Ordering::SeqCst);
    if !secrets {
        return json_response(
            StatusCode::OK,
            json!({"apiVersion": "runner.devjoes.com/v1alpha1", "kind": "ScaledActionRunnerList",
                   "metadata": {"resourceVersion": "1"}, "items": mock.runners}),
        );
    }
    let named = query.get("fieldSelector").and_then(|s| s.strip_prefix("metadata.name="));
    let items: Vec<Value> = in_namespace()
        .into_iter()
        .flat_map(|held| held.values())
        .filter(|secret| named.is_none_or(|n| secret["metadata"]["name"] == n))
        .map(|secret| {
            if metadata_only {
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": secret["metadata"]})
            } else {
                secret.clone()
            }
        })
        .collect();
    let (api_version, kind) =
        if metadata_only { ("meta.k8s.io/v1", "PartialObjectMetadataList") } else { ("v1", "SecretList") };
    json_response(
        StatusCode::OK,
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items}),
    )
}
