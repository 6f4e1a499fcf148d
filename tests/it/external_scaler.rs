//! KEDA's external-push scaler over real gRPC on loopback: a tonic client plays KEDA against a
//! store fed with job events.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gaa::demand::{JobEvent, JobStatus, RepoRef, Runner, RunnerIndex, RunnerKey, ScaleFactor};
use gaa::http::accept::Transport;
use gaa::http::grpc::{serve, serve_tcp};
use gaa::http::tls::{ReloadingTls, TlsFiles};
use gaa::metrics::Metrics;
use gaa::metrics_api::external_scaler::proto::{GetMetricsRequest, IsActiveResponse, ScaledObjectRef};
use gaa::metrics_api::external_scaler::{ExternalScalerClient, PushScaler, RUNNER_NAME_KEY, RUNNER_NAMESPACE_KEY};
use gaa::store::{StoreHandle, WriterConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Code, Streaming};

/// The requirement: a change reaches every open stream within this.
const PUSH_DEADLINE: Duration = Duration::from_millis(100);

fn runners() -> RunnerIndex {
    RunnerIndex::new([
        // The default logistic curve, so the metric (desired runners) differs from the demand.
        Runner::new(RunnerKey::new("ci", "api-linux"), "acme", "api", ["linux"], 0, 10, ScaleFactor::default()),
        Runner::new(RunnerKey::new("ci", "api-gpu"), "acme", "api", ["linux", "gpu"], 0, 2, ScaleFactor::Linear),
        Runner::new(RunnerKey::new("frontend", "web"), "acme", "web", ["linux"], 1, 3, ScaleFactor::Linear),
    ])
}

fn event(job: u64, status: JobStatus) -> JobEvent {
    JobEvent::new(job, 1, 1, RepoRef::new(1001, "acme/api"), status, ["linux"])
}

fn object(namespace: &str, name: &str) -> ScaledObjectRef {
    ScaledObjectRef { name: name.into(), namespace: namespace.into(), scaler_metadata: HashMap::new() }
}

struct Scaler {
    _dir: tempfile::TempDir,
    store: StoreHandle,
    scaler: PushScaler,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl Scaler {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store =
            StoreHandle::start(dir.path(), runners(), WriterConfig::default(), Arc::new(Metrics::new())).unwrap();
        let scaler = PushScaler::new(store.board().clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_tcp(listener, scaler.clone(), async {
            let _ = stopped.await;
        }));
        Self { _dir: dir, store, scaler, addr, stop: Some(stop), server }
    }

    /// A client on its own connection, as a separate KEDA operator would be.
    async fn client(&self) -> ExternalScalerClient<Channel> {
        ExternalScalerClient::connect(format!("http://{}", self.addr)).await.unwrap()
    }

    async fn record(&self, delivery: &str, event: JobEvent) {
        self.store.record(delivery, event).await.unwrap();
    }

    fn value(&self, namespace: &str, name: &str) -> u32 {
        self.store.board().get(&RunnerKey::new(namespace, name)).unwrap().value
    }

    /// Waits until the scaler counts `n` open streams, for up to five seconds.
    async fn open_streams_reach(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.scaler.open_streams() != n {
            assert!(Instant::now() < deadline, "open streams stayed at {} instead of {n}", self.scaler.open_streams());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
        served.expect("the server drains within five seconds").unwrap();
        self.store.shutdown().await;
    }
}

async fn stream(client: &mut ExternalScalerClient<Channel>, object: ScaledObjectRef) -> Streaming<IsActiveResponse> {
    client.stream_is_active(object).await.unwrap().into_inner()
}

/// The next activity a stream reports, within the push deadline.
async fn next_within_deadline(stream: &mut Streaming<IsActiveResponse>) -> bool {
    let started = Instant::now();
    let next = tokio::time::timeout(PUSH_DEADLINE, stream.message())
        .await
        .unwrap_or_else(|_| panic!("no push within {PUSH_DEADLINE:?}"));
    let message = next.unwrap().expect("the stream is still open");
    assert!(started.elapsed() <= PUSH_DEADLINE);
    message.result
}

/// Nothing more arrives on the stream for a while.
async fn stays_quiet(stream: &mut Streaming<IsActiveResponse>) {
    let next = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
    assert!(next.is_err(), "unexpected message: {next:?}");
}

#[tokio::test]
async fn stream_reports_inactive_at_once_then_each_flip_within_100ms() {
    let scaler = Scaler::start().await;
    let mut client = scaler.client().await;
    let mut activity = stream(&mut client, object("ci", "api-linux")).await;
    assert!(!next_within_deadline(&mut activity).await, "no demand yet");

    scaler.record("q1", event(1, JobStatus::Queued)).await;
    assert!(next_within_deadline(&mut activity).await, "a queued job makes the runner active");

    // More demand is no flip: nothing is sent.
    scaler.record("q2", event(2, JobStatus::Queued)).await;
    scaler.record("p1", event(1, JobStatus::InProgress)).await;
    stays_quiet(&mut activity).await;

    scaler.record("c1", event(1, JobStatus::Completed)).await;
    scaler.record("c2", event(2, JobStatus::Completed)).await;
    assert!(!next_within_deadline(&mut activity).await, "completed jobs leave no demand");
    stays_quiet(&mut activity).await;

    drop(activity);
    scaler.shutdown().await;
}

#[tokio::test]
async fn is_active_follows_demand() {
    let scaler = Scaler::start().await;
    let mut client = scaler.client().await;
    assert!(!client.is_active(object("ci", "api-linux")).await.unwrap().into_inner().result);
    scaler.record("q1", event(1, JobStatus::Queued)).await;
    assert!(client.is_active(object("ci", "api-linux")).await.unwrap().into_inner().result);
    assert!(!client.is_active(object("ci", "api-gpu")).await.unwrap().into_inner().result, "other runner");
    scaler.shutdown().await;
}

#[tokio::test]
async fn metrics_report_the_boards_value() {
    let scaler = Scaler::start().await;
    let mut client = scaler.client().await;
    for job in 1..=3 {
        scaler.record(&format!("q{job}"), event(job, JobStatus::Queued)).await;
    }
    let get = |namespace: &str, name: &str| GetMetricsRequest {
        scaled_object_ref: Some(object(namespace, name)),
        metric_name: format!("scaledactionrunner-{namespace}-{name}"),
    };

    let answer = client.get_metrics(get("ci", "api-linux")).await.unwrap().into_inner();
    let [value] = answer.metric_values.as_slice() else { panic!("one value: {answer:?}") };
    let expected = scaler.value("ci", "api-linux");
    assert_eq!(expected, 5, "three jobs on the logistic curve to ten runners");
    assert_eq!(value.metric_name, "scaledactionrunner-ci-api-linux");
    assert_eq!(value.metric_value, i64::from(expected));
    assert_eq!(value.metric_value_float, f64::from(expected));

    // Inactive, yet its floor of one runner is the value.
    let answer = client.get_metrics(get("frontend", "web")).await.unwrap().into_inner();
    assert_eq!(answer.metric_values[0].metric_value_float, 1.0);
    assert_eq!(scaler.value("frontend", "web"), 1);
    assert!(!client.is_active(object("frontend", "web")).await.unwrap().into_inner().result);
    scaler.shutdown().await;
}

#[tokio::test]
async fn metric_spec_is_one_metric_per_runner_with_target_one() {
    let scaler = Scaler::start().await;
    let mut client = scaler.client().await;
    let answer = client.get_metric_spec(object("ci", "api-gpu")).await.unwrap().into_inner();
    let [spec] = answer.metric_specs.as_slice() else { panic!("one spec: {answer:?}") };
    assert_eq!(spec.metric_name, "scaledactionrunner-ci-api-gpu");
    assert_eq!(spec.target_size, 1);
    assert_eq!(spec.target_size_float, 1.0);
    scaler.shutdown().await;
}

#[tokio::test]
async fn an_unknown_runner_is_not_found_on_every_call() {
    let scaler = Scaler::start().await;
    let mut client = scaler.client().await;
    let unknown = || object("ci", "nope");
    let codes = [
        client.is_active(unknown()).await.unwrap_err(),
        client.stream_is_active(unknown()).await.unwrap_err(),
        client.get_metric_spec(unknown()).await.unwrap_err(),
        client
            .get_metrics(GetMetricsRequest { scaled_object_ref: Some(unknown()), metric_name: "m".into() })
            .await
            .unwrap_err(),
    ];
    for status in codes {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(status.message().contains("ci/nope"), "names the runner: {}", status.message());
    }
    let status =
        client.get_metrics(GetMetricsRequest { scaled_object_ref: None, metric_name: "m".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(scaler.scaler.open_streams(), 0, "a refused stream is not counted");
    scaler.shutdown().await;
}

#[tokio::test]
async fn trigger_metadata_names_the_runner_over_the_scaled_object() {
    let scaler = Scaler::start().await;
    let mut client = scaler.client().await;
    scaler.record("q1", event(1, JobStatus::Queued)).await;
    let mut keda = object("keda-objects", "api-scaler");
    keda.scaler_metadata = HashMap::from([
        ("scalerAddress".to_string(), scaler.addr.to_string()),
        (RUNNER_NAMESPACE_KEY.to_string(), "ci".to_string()),
        (RUNNER_NAME_KEY.to_string(), "api-linux".to_string()),
    ]);
    assert!(client.is_active(keda.clone()).await.unwrap().into_inner().result);
    let spec = client.get_metric_spec(keda.clone()).await.unwrap().into_inner();
    assert_eq!(spec.metric_specs[0].metric_name, "scaledactionrunner-ci-api-linux");
    let mut activity = stream(&mut client, keda.clone()).await;
    assert!(next_within_deadline(&mut activity).await);

    // Only the name given: the namespace is the ScaledObject's.
    let mut same_namespace = object("ci", "api-scaler");
    same_namespace.scaler_metadata = HashMap::from([(RUNNER_NAME_KEY.to_string(), "api-gpu".to_string())]);
    let spec = client.get_metric_spec(same_namespace).await.unwrap().into_inner();
    assert_eq!(spec.metric_specs[0].metric_name, "scaledactionrunner-ci-api-gpu");
    drop(activity);
    scaler.shutdown().await;
}

#[tokio::test]
async fn fifty_concurrent_streams_all_see_each_flip() {
    let scaler = Scaler::start().await;
    // Half on connections of their own, half multiplexed on one, as KEDA's pool does.
    let shared = scaler.client().await;
    let mut streams = Vec::new();
    for i in 0..50 {
        let mut client = if i % 2 == 0 { scaler.client().await } else { shared.clone() };
        let mut activity = stream(&mut client, object("ci", "api-linux")).await;
        assert!(!next_within_deadline(&mut activity).await);
        streams.push((client, activity));
    }
    assert_eq!(scaler.scaler.open_streams(), 50);

    for (delivery, status, expected) in [("q1", JobStatus::Queued, true), ("c1", JobStatus::Completed, false)] {
        scaler.record(delivery, event(1, status)).await;
        let waits: Vec<_> = streams
            .drain(..)
            .map(|(client, mut activity)| {
                tokio::spawn(async move {
                    let result = next_within_deadline(&mut activity).await;
                    (client, activity, result)
                })
            })
            .collect();
        for wait in waits {
            let (client, activity, result) = wait.await.unwrap();
            assert_eq!(result, expected);
            streams.push((client, activity));
        }
    }
    drop(streams);
    scaler.open_streams_reach(0).await;
    scaler.shutdown().await;
}

#[tokio::test]
async fn dropped_clients_and_cancelled_streams_leave_nothing_open() {
    let scaler = Scaler::start().await;
    // Whole connections going away.
    let mut clients = Vec::new();
    for _ in 0..25 {
        let mut client = scaler.client().await;
        let mut activity = stream(&mut client, object("ci", "api-linux")).await;
        next_within_deadline(&mut activity).await;
        clients.push((client, activity));
    }
    // Streams cancelled on a connection that stays open (HTTP/2 RST_STREAM).
    let mut kept = scaler.client().await;
    let mut cancelled = Vec::new();
    for _ in 0..25 {
        let mut activity = stream(&mut kept, object("ci", "api-gpu")).await;
        next_within_deadline(&mut activity).await;
        cancelled.push(activity);
    }
    assert_eq!(scaler.scaler.open_streams(), 50);

    drop(clients);
    scaler.open_streams_reach(25).await;
    drop(cancelled);
    scaler.open_streams_reach(0).await;

    // The connection kept open still works, and changes no longer reach anything dropped.
    scaler.record("q1", event(1, JobStatus::Queued)).await;
    assert!(kept.is_active(object("ci", "api-linux")).await.unwrap().into_inner().result);
    let mut activity = stream(&mut kept, object("ci", "api-linux")).await;
    assert!(next_within_deadline(&mut activity).await);
    assert_eq!(scaler.scaler.open_streams(), 1);
    drop(activity);
    scaler.open_streams_reach(0).await;
    scaler.shutdown().await;
}

#[tokio::test]
async fn server_shutdown_ends_open_streams_cleanly() {
    let mut scaler = Scaler::start().await;
    let mut client = scaler.client().await;
    let mut activity = stream(&mut client, object("ci", "api-linux")).await;
    next_within_deadline(&mut activity).await;

    let _ = scaler.stop.take().unwrap().send(());
    let end = tokio::time::timeout(Duration::from_secs(5), activity.message()).await.expect("the stream ends");
    assert!(matches!(end, Ok(None)), "ends with status OK, not an error: {end:?}");
    scaler.open_streams_reach(0).await;
    scaler.shutdown().await;
}

#[tokio::test]
async fn removing_a_runner_ends_its_stream_with_not_found() {
    let scaler = Scaler::start().await;
    let mut client = scaler.client().await;
    let mut activity = stream(&mut client, object("ci", "api-gpu")).await;
    next_within_deadline(&mut activity).await;

    let without_gpu = RunnerIndex::new(runners().iter().filter(|r| r.key.name != "api-gpu").cloned());
    scaler.store.set_runners(without_gpu).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), activity.message()).await.expect("the stream ends");
    assert_eq!(end.unwrap_err().code(), Code::NotFound);
    scaler.open_streams_reach(0).await;
    scaler.shutdown().await;
}

#[tokio::test]
async fn the_scaler_is_served_over_tls_on_the_shared_accept_loop() {
    let identity = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles { cert: dir.path().join("tls.crt"), key: dir.path().join("tls.key"), client_ca: Vec::new() };
    std::fs::write(&files.cert, identity.cert.pem()).unwrap();
    std::fs::write(&files.key, identity.signing_key.serialize_pem()).unwrap();
    let tls = ReloadingTls::start(files, Duration::from_secs(5)).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let store = StoreHandle::start(dir.path(), runners(), WriterConfig::default(), Arc::new(Metrics::new())).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, Transport::Tls(tls), store.board().clone(), async {
        let _ = stopped.await;
    }));

    let ca = Certificate::from_pem(identity.cert.pem());
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(ca).domain_name("localhost"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ExternalScalerClient::new(channel);
    let mut activity = stream(&mut client, object("ci", "api-linux")).await;
    assert!(!next_within_deadline(&mut activity).await);
    store.record("q1", event(1, JobStatus::Queued)).await.unwrap();
    assert!(next_within_deadline(&mut activity).await);

    let _ = stop.send(());
    assert!(matches!(activity.message().await, Ok(None)));
    tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
    store.shutdown().await;
}
