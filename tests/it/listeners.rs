//! The real binary's listeners against hostile and unauthenticated clients: slow clients cannot
//! keep a signed delivery out, a partial request cannot hold SIGTERM, and only listeners that
//! authenticate serve demand (HTTP and gRPC).

use crate::common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::server::{Server, free_port, http, manifests_dir};
use gaa::metrics_api::external_scaler::ExternalScalerClient;
use gaa::metrics_api::external_scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const PARTIAL_HEAD: &[u8] = b"POST /webhook HTTP/1.1\r\nHost: autoscaler\r\nX-GitHub-Event: workflow_job\r\n";
const PARTIAL_BODY: &[u8] = b"POST /webhook HTTP/1.1\r\nHost: autoscaler\r\nContent-Type: application/json\r\nX-GitHub-Event: workflow_job\r\nContent-Length: 100000\r\n\r\n{\"action\":";

/// Sends `start`, then one more byte every 200 ms until the task is aborted or the server hangs up.
fn trickle(addr: SocketAddr, start: &'static [u8]) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut stream) = TcpStream::connect(addr).await else { return };
        if stream.write_all(start).await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if stream.write_all(b"x").await.is_err() {
                return;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_delivery_is_answered_while_idle_and_trickling_clients_hold_every_connection() {
    let root = tempfile::tempdir().unwrap();
    let manifests = manifests_dir(root.path(), "");
    // 256 open files: without a cap below it, 300 idle sockets leave the server none to accept with.
    let server = Server::launch(&root.path().join("data"), &manifests, &[], &[], Some(256)).await;
    let tricklers: Vec<_> =
        (0..40).map(|n| trickle(server.addr, if n % 2 == 0 { PARTIAL_HEAD } else { PARTIAL_BODY })).collect();
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Let the server accept them all.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let delivered = tokio::time::timeout(
        Duration::from_secs(5),
        server.deliver(&http(), "d-under-attack", "acme/api", 7, "queued"),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(delivered, Ok(202), "a signed delivery is answered within 5 s; log:\n{}", server.log());
    eprintln!("signed delivery answered in {took:?} with 300 idle sockets and 40 trickling clients held open");
    assert!(server.log().contains("max_connections=128"), "the cap fits the open-files limit: {}", server.log());
    for trickler in tricklers {
        trickler.abort();
    }
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_process_within_the_grace_while_a_client_holds_a_partial_request() {
    let root = tempfile::tempdir().unwrap();
    let manifests = manifests_dir(root.path(), "");
    let env = [("GAA_SHUTDOWN_GRACE", "2s"), ("GAA_BODY_READ_TIMEOUT", "60s"), ("GAA_HEADER_READ_TIMEOUT", "60s")];
    let mut server = Server::launch(&root.path().join("data"), &manifests, &[], &env, None).await;
    assert_eq!(server.deliver(&http(), "d-1", "acme/api", 1, "queued").await, 202);
    // A request whose body never comes, a request head that never ends, and an idle socket.
    let mut partial_body = TcpStream::connect(server.addr).await.unwrap();
    partial_body.write_all(PARTIAL_BODY).await.unwrap();
    let mut partial_head = TcpStream::connect(server.addr).await.unwrap();
    partial_head.write_all(PARTIAL_HEAD).await.unwrap();
    let _idle = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = server.child.id().to_string();
    let signalled = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(20),
            "still running 20 s after SIGTERM; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("exited {:?} after SIGTERM with a partial request held", signalled.elapsed());
    assert!(status.success(), "exit status {status}; log:\n{}", server.log());
    assert!(server.log().contains("journal flushed and closed"), "{}", server.log());
    drop(server);

    let server = Server::start(&root.path().join("data"), &manifests).await;
    assert_eq!(server.runner("ci", "api-linux").await["demand"], 1, "the acknowledged delivery survived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_listener_serves_demand_only_with_a_token_or_when_told_to() {
    let root = tempfile::tempdir().unwrap();
    let manifests = manifests_dir(root.path(), "");
    let client = http();
    let reads = [
        "/api/v1/scaledactionrunners",
        "/api/v1/namespaces/ci/scaledactionrunners/api-linux",
        "/metrics",
        "/apis/custom.metrics.k8s.io/v1beta1/namespaces/ci/scaledactionrunners/api-linux/desired-runners",
    ];
    let status = |server: &Server, path: &str, token: Option<&str>| {
        let mut request = client.get(format!("http://{}{path}", server.addr));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };

    // No token, no flag: webhooks and probes only.
    let closed = Server::launch(&root.path().join("closed"), &manifests, &[], &[], None).await;
    assert_eq!(closed.deliver(&client, "d-1", "acme/api", 1, "queued").await, 202);
    assert_eq!(status(&closed, "/healthz", None).await, 200);
    assert_eq!(status(&closed, "/readyz", None).await, 200);
    for path in reads {
        assert_eq!(status(&closed, path, None).await, 404, "{path} on a listener that authenticates nobody");
    }
    assert!(closed.log().contains("not served"), "the log says reads are off: {}", closed.log());

    // With a token: reads for its bearer only.
    std::fs::write(root.path().join("token"), "reader-token\n").unwrap();
    let token_file = root.path().join("token").display().to_string();
    let guarded =
        Server::launch(&root.path().join("guarded"), &manifests, &["--metrics-token-file", &token_file], &[], None)
            .await;
    for path in reads {
        assert_eq!(status(&guarded, path, None).await, 401, "{path} without the token");
        assert_eq!(status(&guarded, path, Some("reader-token")).await, 200, "{path} with the token");
    }

    // Told so explicitly (the standalone quick start): open.
    let open = Server::launch(&root.path().join("open"), &manifests, &["--unauthenticated-reads"], &[], None).await;
    for path in reads {
        assert_eq!(status(&open, path, None).await, 200, "{path} with --unauthenticated-reads");
    }
}

fn object() -> ScaledObjectRef {
    ScaledObjectRef { name: "api-linux".into(), namespace: "ci".into(), ..Default::default() }
}

async fn grpc(addr: SocketAddr, tls: Option<&str>) -> ExternalScalerClient<Channel> {
    let channel = match tls {
        None => Channel::from_shared(format!("http://{addr}")).unwrap(),
        Some(ca) => Channel::from_shared(format!("https://localhost:{}", addr.port()))
            .unwrap()
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost"))
            .unwrap(),
    };
    ExternalScalerClient::new(channel.connect().await.unwrap())
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_need_the_token_and_a_listener_that_authenticates_nobody_refuses_them() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = tempfile::tempdir().unwrap();
    let manifests = manifests_dir(root.path(), "");
    let path = |name: &str| root.path().join(name).display().to_string();
    std::fs::write(path("token"), "keda-token\n").unwrap();

    // Plain gRPC with a token file: the token is required.
    let grpc_addr = free_port().to_string();
    let args = ["--grpc-listen", &grpc_addr, "--metrics-token-file", &path("token")];
    let guarded = Server::launch(&root.path().join("guarded"), &manifests, &args, &[], None).await;
    assert_eq!(guarded.deliver(&http(), "d-1", "acme/api", 1, "queued").await, 202);
    let mut scaler = grpc(grpc_addr.parse().unwrap(), None).await;
    let refused = scaler.is_active(object()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let request = GetMetricsRequest { scaled_object_ref: Some(object()), metric_name: String::new() };
    let refused = scaler.get_metrics(request.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let wrong = scaler.get_metrics(with_token(request.clone(), "guess")).await.unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated, "{wrong:?}");
    let metrics = scaler.get_metrics(with_token(request, "keda-token")).await.unwrap().into_inner();
    assert_eq!(metrics.metric_values[0].metric_value, 1);
    assert!(scaler.is_active(with_token(object(), "keda-token")).await.unwrap().into_inner().result);
    assert!(!guarded.log().contains("keda-token"), "the token is never logged");

    // gRPC over TLS without client certificates or token: every call refused.
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(path("tls.crt"), certified.cert.pem()).unwrap();
    std::fs::write(path("tls.key"), certified.signing_key.serialize_pem()).unwrap();
    let (grpc_addr, tls_addr) = (free_port().to_string(), free_port().to_string());
    let args = [
        "--grpc-listen",
        &grpc_addr,
        "--tls-listen",
        &tls_addr,
        "--tls-cert",
        &path("tls.crt"),
        "--tls-key",
        &path("tls.key"),
    ];
    let open_tls = Server::launch(&root.path().join("tls"), &manifests, &args, &[], None).await;
    let mut scaler = grpc(grpc_addr.parse().unwrap(), Some(&certified.cert.pem())).await;
    let refused = scaler.is_active(object()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let refused = scaler.stream_is_active(object()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    drop(open_tls);
}

/// Opens `n` connections to `addr` that never send a byte.
async fn idle_sockets(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        sockets.push(TcpStream::connect(addr).await.unwrap());
    }
    sockets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_and_grpc_listeners_also_serve_a_complete_request_while_idle_sockets_fill_them() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::pki::write_mutual_tls(root.path());
    let path = |name: &str| root.path().join(name).display().to_string();
    let (tls_addr, grpc_addr) = (free_port(), free_port());
    let (tls_listen, grpc_listen) = (tls_addr.to_string(), grpc_addr.to_string());
    let args = [
        "--tls-listen",
        &tls_listen,
        "--grpc-listen",
        &grpc_listen,
        "--tls-cert",
        &path("tls.crt"),
        "--tls-key",
        &path("tls.key"),
        "--client-ca",
        &path("ca.crt"),
    ];
    // 256 open files for three listeners: 300 idle sockets on each would take them all.
    let server =
        Server::launch(&root.path().join("data"), &manifests_dir(root.path(), ""), &args, &[], Some(256)).await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca))
        .identity(Identity::from_pem(&cert, &key))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{grpc_addr}")).unwrap().tls_config(tls).unwrap();
    // KEDA's stream, open before the flood: busy, so never the one closed to make room.
    let mut keda = ExternalScalerClient::new(channel.connect().await.unwrap());
    let mut stream = keda.stream_is_active(object()).await.unwrap().into_inner();
    assert!(!stream.message().await.unwrap().unwrap().result);
    let _plain = idle_sockets(server.addr, 300).await;
    let _tls = idle_sockets(tls_addr, 300).await;
    let _grpc = idle_sockets(grpc_addr, 300).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let delivered =
        tokio::time::timeout(Duration::from_secs(5), server.deliver(&http(), "d-1", "acme/api", 1, "queued")).await;
    assert_eq!(delivered, Ok(202), "plain: a signed delivery is answered; log:\n{}", server.log());
    let flipped = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
    assert!(
        matches!(flipped, Ok(Ok(Some(ref message))) if message.result),
        "KEDA's stream survived the flood and was pushed the flip: {flipped:?}"
    );

    let identity = reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap();
    let reader = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
        .identity(identity)
        .resolve("localhost", tls_addr)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/api/v1/namespaces/ci/scaledactionrunners/api-linux", tls_addr.port());
    let answer = reader.get(&url).send().await.unwrap_or_else(|e| panic!("TLS read: {e}; log:\n{}", server.log()));
    assert_eq!(answer.status(), 200);
    assert_eq!(gjson::get(&answer.text().await.unwrap(), "demand").i64(), 1);

    // A new connection is still served.
    let active = tokio::time::timeout(Duration::from_secs(5), async {
        let mut scaler = ExternalScalerClient::new(channel.connect().await.unwrap());
        scaler.is_active(object()).await.unwrap().into_inner().result
    })
    .await;
    assert_eq!(active, Ok(true), "gRPC: answered over mutual TLS; log:\n{}", server.log());
}

/// Reads until the server closes the connection; the bytes it sent, or `None` if it is still
/// open after `within`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, within: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_are_closed_at_their_timeouts_on_plain_and_tls_listeners() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = tempfile::tempdir().unwrap();
    let (ca, _, _) = common::pki::write_mutual_tls(root.path());
    let path = |name: &str| root.path().join(name).display().to_string();
    let tls_addr = free_port();
    let tls_listen = tls_addr.to_string();
    let args = ["--tls-listen", &tls_listen, "--tls-cert", &path("tls.crt"), "--tls-key", &path("tls.key")];
    let env = [("GAA_HEADER_READ_TIMEOUT", "1s"), ("GAA_BODY_READ_TIMEOUT", "1s"), ("GAA_IDLE_TIMEOUT", "1s")];
    let server = Server::launch(&root.path().join("data"), &manifests_dir(root.path(), ""), &args, &env, None).await;
    let within = Duration::from_secs(5);

    // Plain: silent from the start, a head that never ends, a body that never ends.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut head = TcpStream::connect(server.addr).await.unwrap();
    head.write_all(PARTIAL_HEAD).await.unwrap();
    let mut body = TcpStream::connect(server.addr).await.unwrap();
    body.write_all(PARTIAL_BODY).await.unwrap();
    // Kept alive after one answered request.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: autoscaler\r\n\r\n").await.unwrap();
    assert!(closed_within(&mut silent, within).await.is_some(), "a silent connection is closed");
    assert!(closed_within(&mut head, within).await.is_some(), "a head that never ends is cut off");
    assert!(closed_within(&mut body, within).await.is_some(), "a body that never ends is cut off");
    let answered = closed_within(&mut kept, within).await.expect("an idle keep-alive connection is closed");
    assert!(answered.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answered));

    // TLS: a client that completes the handshake and then sends nothing.
    let mut roots = rustls::RootCertStore::empty();
    for der in <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(ca.as_bytes()) {
        roots.add(der.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    assert!(closed_within(&mut tls, within).await.is_some(), "a TLS client that sends no request is closed");
}
