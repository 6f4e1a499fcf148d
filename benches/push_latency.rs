//! Webhook-to-push latency: how long from GitHub posting a `workflow_job` delivery until KEDA's
//! `StreamIsActive` stream reports the runner's activity flipping.
//!
//! The real path on loopback: the axum router (signature check, journal flush, board publish)
//! behind HTTP, the gRPC external scaler beside it, and a tonic client holding one stream the way
//! KEDA does. Each round posts a signed `queued` delivery, waits for the stream to say `true`,
//! then a `completed` one and waits for `false`; every flip is timed from the moment the POST is
//! sent. The HTTP answer time is printed alongside: the push should arrive no later.
//!
//! `cargo bench --bench push_latency -- [--flips 1000]`

// Its own `#![allow(dead_code)]` covers the helpers this bench does not use.
#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{API_SECRET, job_payload, signature};
use gaa::http::grpc::serve_tcp;
use gaa::metrics_api::external_scaler::proto::ScaledObjectRef;
use gaa::metrics_api::external_scaler::{ExternalScalerClient, PushScaler};
use tokio::net::TcpListener;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let flips = arg("--flips", 1000).max(2);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    runtime.block_on(measure(flips));
}

async fn measure(flips: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = common::state(dir.path(), None).await;
    let board = state.store.board().clone();

    let http_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP");
    let http_addr = http_listener.local_addr().expect("HTTP address");
    let app = gaa::http::router(state.clone());
    tokio::spawn(async move { axum::serve(http_listener, app).await });

    let grpc_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gRPC");
    let grpc_addr = grpc_listener.local_addr().expect("gRPC address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let grpc = tokio::spawn(serve_tcp(grpc_listener, PushScaler::new(board), async {
        let _ = stopped.await;
    }));

    let mut keda = ExternalScalerClient::connect(format!("http://{grpc_addr}")).await.expect("gRPC connect");
    let object = ScaledObjectRef { name: "api-linux".into(), namespace: "ci".into(), scaler_metadata: HashMap::new() };
    let mut activity = keda.stream_is_active(object).await.expect("StreamIsActive").into_inner();
    let first = activity.message().await.expect("first message").expect("stream open");
    assert!(!first.result, "the runner starts without demand");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let url = format!("http://{http_addr}/webhook");

    let mut pushed = Vec::with_capacity(flips as usize);
    let mut answered = Vec::with_capacity(flips as usize);
    for flip in 0..flips {
        let (job, action, expected) =
            if flip % 2 == 0 { (flip / 2 + 1, "queued", true) } else { (flip / 2 + 1, "completed", false) };
        let body = serde_json::to_vec(&job_payload("acme/api", job, action, &["self-hosted", "linux"])).expect("json");
        let request = http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-github-event", "workflow_job")
            .header("x-github-delivery", format!("push-latency-{flip}"))
            .header("x-hub-signature-256", signature(API_SECRET, &body))
            .body(body);
        let started = Instant::now();
        let (answer, push) = tokio::join!(
            async {
                let response = request.send().await.expect("POST /webhook");
                assert!(response.status().is_success(), "webhook answered {}", response.status());
                started.elapsed()
            },
            async {
                let message = activity.message().await.expect("stream message").expect("stream open");
                assert_eq!(message.result, expected, "flip {flip}");
                started.elapsed()
            }
        );
        answered.push(answer);
        pushed.push(push);
    }

    drop(activity);
    let _ = stop.send(());
    grpc.await.expect("gRPC task");
    state.store.shutdown().await;

    println!("push_latency: {flips} activity flips (queued → true, completed → false) over HTTP and gRPC on loopback");
    report("webhook POST → StreamIsActive push", &mut pushed);
    report("webhook POST → HTTP answer       ", &mut answered);
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what}  p50 {:7.3} ms  p90 {:7.3} ms  p99 {:7.3} ms  max {:7.3} ms",
        ms(at(0.50)),
        ms(at(0.90)),
        ms(at(0.99)),
        ms(samples[samples.len() - 1])
    );
}
