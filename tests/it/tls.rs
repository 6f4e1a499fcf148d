//! The TLS listener over real loopback sockets: mutual TLS, certificate rotation from files,
//! bearer tokens, and clients that misbehave.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::http::header::WWW_AUTHENTICATE;
use axum::routing::get;
use axum::{Extension, Router};
use gaa::config::DEFAULT_SHUTDOWN_GRACE;
use gaa::http::accept::{Listener, Protocol, Transport, serve_until};
use gaa::http::bearer::{BearerToken, require_bearer};
use gaa::http::limits::Limits;
use gaa::http::tls::{ClientCertChain, ReloadingTls, TlsError, TlsFiles};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

const POLL: Duration = Duration::from_millis(100);

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    pem: String,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { der: cert.der().clone(), pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    fn leaf(&self, name: &str, purpose: ExtendedKeyUsagePurpose, serial: u64) -> Leaf {
        let mut params = CertificateParams::new(vec![name.to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.serial_number = Some(SerialNumber::from(serial));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() }
    }

    fn server(&self, serial: u64) -> Leaf {
        self.leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth, serial)
    }

    fn client(&self, name: &str) -> Leaf {
        self.leaf(name, ExtendedKeyUsagePurpose::ClientAuth, 7)
    }
}

impl Leaf {
    fn identity(&self) -> reqwest::Identity {
        reqwest::Identity::from_pem(format!("{}{}", self.cert_pem, self.key_pem).as_bytes()).unwrap()
    }
}

struct Server {
    addr: SocketAddr,
    files: TlsFiles,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    _dir: TempDir,
}

impl Server {
    async fn start(leaf: &Leaf, client_ca: Option<&Ca>, router: Router) -> Self {
        let dir = TempDir::new().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            client_ca: client_ca.iter().map(|_| dir.path().join("ca.crt")).collect(),
        };
        std::fs::write(&files.cert, &leaf.cert_pem).unwrap();
        std::fs::write(&files.key, &leaf.key_pem).unwrap();
        if let (Some(path), Some(ca)) = (files.client_ca.first(), client_ca) {
            std::fs::write(path, &ca.pem).unwrap();
        }
        Self::serve(files, dir, router).await
    }

    async fn serve(files: TlsFiles, dir: TempDir, router: Router) -> Self {
        let tls = ReloadingTls::start(files.clone(), POLL).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let listener = Listener {
            name: "tls",
            tcp: listener,
            transport: Transport::Tls(tls),
            protocol: Protocol::Http,
            limits: Limits::default(),
        };
        let stopped = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve_until(listener, router, stopped, DEFAULT_SHUTDOWN_GRACE));
        Self { addr, files, stop: Some(stop), task, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    fn replace(&self, leaf: &Leaf) {
        std::fs::write(&self.files.cert, &leaf.cert_pem).unwrap();
        std::fs::write(&self.files.key, &leaf.key_pem).unwrap();
    }

    async fn shut_down(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), self.task).await.unwrap().unwrap();
    }
}

fn router() -> Router {
    Router::new().route("/hello", get(|| async { "hello" })).route("/whoami", get(whoami)).route("/slow", get(slow))
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_millis(300)).await;
    "slow"
}

async fn whoami(ConnectInfo(peer): ConnectInfo<SocketAddr>, chain: Option<Extension<ClientCertChain>>) -> String {
    let who = match chain {
        Some(Extension(ClientCertChain(certs))) => format!("client certificates: {}", certs.len()),
        None => "anonymous".to_owned(),
    };
    format!("{} {who}", peer.ip())
}

fn client(server: &Server, ca: &Ca, identity: Option<&Leaf>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap()])
        .resolve("localhost", server.addr)
        .timeout(Duration::from_secs(5));
    if let Some(leaf) = identity {
        builder = builder.identity(leaf.identity());
    }
    builder.build().unwrap()
}

/// The leaf certificate a fresh connection is offered.
async fn served_certificate(addr: SocketAddr, ca: &Ca) -> CertificateDer<'static> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

async fn wait_for_certificate(addr: SocketAddr, ca: &Ca, expected: &CertificateDer<'static>, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if served_certificate(addr, ca).await == *expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the new certificate was not served within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get_text(client: &reqwest::Client, url: &str) -> (StatusCode, String) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn client_signed_by_the_client_ca_is_served_and_identified() {
    let ca = Ca::new("metrics ca");
    let server = Server::start(&ca.server(1), Some(&ca), router()).await;

    let client = client(&server, &ca, Some(&ca.client("front-proxy-client")));
    let response = client.get(server.url("/whoami")).send().await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.text().await.unwrap(), "127.0.0.1 client certificates: 1");
    server.shut_down().await;
}

#[tokio::test]
async fn client_without_a_certificate_is_refused_when_a_client_ca_is_set() {
    let ca = Ca::new("metrics ca");
    let server = Server::start(&ca.server(1), Some(&ca), router()).await;

    let refused = client(&server, &ca, None).get(server.url("/hello")).send().await;

    assert!(refused.is_err(), "expected a TLS failure, got {refused:?}");
    server.shut_down().await;
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let ca = Ca::new("metrics ca");
    let stranger = Ca::new("some other ca");
    let server = Server::start(&ca.server(1), Some(&ca), router()).await;

    let refused = client(&server, &ca, Some(&stranger.client("intruder"))).get(server.url("/hello")).send().await;

    assert!(refused.is_err(), "expected a TLS failure, got {refused:?}");
    let admitted = client(&server, &ca, Some(&ca.client("keda")));
    assert_eq!(get_text(&admitted, &server.url("/hello")).await, (StatusCode::OK, "hello".to_owned()));
    server.shut_down().await;
}

/// A server trusting the client CAs at `ca_paths` (in its own directory), whichever exist.
async fn start_trusting(leaf: &Leaf, ca_paths: &[&str]) -> Server {
    let dir = TempDir::new().unwrap();
    let files = TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        client_ca: ca_paths.iter().map(|p| dir.path().join(p)).collect(),
    };
    std::fs::write(&files.cert, &leaf.cert_pem).unwrap();
    std::fs::write(&files.key, &leaf.key_pem).unwrap();
    Server::serve(files, dir, router()).await
}

#[tokio::test]
async fn clients_signed_by_either_of_two_client_cas_are_served() {
    let core = Ca::new("core ca");
    let front_proxy = Ca::new("front-proxy ca");
    let stranger = Ca::new("some other ca");
    let dir = TempDir::new().unwrap();
    let (core_path, proxy_path) = (dir.path().join("tls-ca.crt"), dir.path().join("front-proxy-ca.crt"));
    std::fs::write(&core_path, &core.pem).unwrap();
    std::fs::write(&proxy_path, &front_proxy.pem).unwrap();
    let server = start_trusting(&core.server(1), &[core_path.to_str().unwrap(), proxy_path.to_str().unwrap()]).await;

    let keda = client(&server, &core, Some(&core.client("keda")));
    let aggregator = client(&server, &core, Some(&front_proxy.client("front-proxy-client")));
    let intruder = client(&server, &core, Some(&stranger.client("intruder")));

    assert_eq!(get_text(&keda, &server.url("/hello")).await, (StatusCode::OK, "hello".to_owned()));
    assert_eq!(get_text(&aggregator, &server.url("/hello")).await, (StatusCode::OK, "hello".to_owned()));
    let refused = intruder.get(server.url("/hello")).send().await;
    assert!(refused.is_err(), "expected a TLS failure, got {refused:?}");
    server.shut_down().await;
}

#[tokio::test]
async fn a_client_ca_file_that_appears_later_is_trusted_once_it_does() {
    let core = Ca::new("core ca");
    let front_proxy = Ca::new("front-proxy ca");
    let dir = TempDir::new().unwrap();
    let (core_path, proxy_path) = (dir.path().join("tls-ca.crt"), dir.path().join("front-proxy-ca.crt"));
    std::fs::write(&core_path, &core.pem).unwrap();
    let server = start_trusting(&core.server(1), &[core_path.to_str().unwrap(), proxy_path.to_str().unwrap()]).await;
    let keda = client(&server, &core, Some(&core.client("keda")));
    let aggregator = client(&server, &core, Some(&front_proxy.client("front-proxy-client")));
    assert_eq!(get_text(&keda, &server.url("/hello")).await, (StatusCode::OK, "hello".to_owned()));
    let refused = aggregator.get(server.url("/hello")).send().await;
    assert!(refused.is_err(), "the front-proxy CA is not there yet, got {refused:?}");

    std::fs::write(&proxy_path, &front_proxy.pem).unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        // A fresh client each time: a refused handshake must not be reused from a pool.
        let aggregator = client(&server, &core, Some(&front_proxy.client("front-proxy-client")));
        if let Ok(response) = aggregator.get(server.url("/hello")).send().await {
            assert_eq!(response.status(), StatusCode::OK);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the new client CA was not trusted within 2s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get_text(&keda, &server.url("/hello")).await, (StatusCode::OK, "hello".to_owned()));
    server.shut_down().await;
}

#[tokio::test]
async fn client_cas_that_all_do_not_exist_are_an_error_at_startup() {
    let ca = Ca::new("metrics ca");
    let leaf = ca.server(1);
    let dir = TempDir::new().unwrap();
    let files = TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        client_ca: vec![dir.path().join("missing-ca.crt")],
    };
    std::fs::write(&files.cert, &leaf.cert_pem).unwrap();
    std::fs::write(&files.key, &leaf.key_pem).unwrap();

    let refused = ReloadingTls::start(files, POLL).unwrap_err();

    assert!(matches!(refused, TlsError::NoClientCa(_)), "{refused:?}");
}

#[tokio::test]
async fn http1_clients_are_served_as_well_as_http2() {
    let ca = Ca::new("metrics ca");
    let server = Server::start(&ca.server(1), None, router()).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http1 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap()])
        .resolve("localhost", server.addr)
        .http1_only()
        .build()
        .unwrap();

    let response = http1.get(server.url("/whoami")).send().await.unwrap();

    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.text().await.unwrap(), "127.0.0.1 anonymous");
    let http2 = client(&server, &ca, None).get(server.url("/hello")).send().await.unwrap();
    assert_eq!(http2.version(), reqwest::Version::HTTP_2);
    server.shut_down().await;
}

#[tokio::test]
async fn rotated_certificate_files_are_served_to_new_connections_within_a_second() {
    let ca = Ca::new("metrics ca");
    let first = ca.server(1);
    let server = Server::start(&first, None, router()).await;
    assert_eq!(served_certificate(server.addr, &ca).await, first.der);
    let https = client(&server, &ca, None);

    let second = ca.server(2);
    server.replace(&second);

    wait_for_certificate(server.addr, &ca, &second.der, Duration::from_secs(1)).await;
    assert_eq!(get_text(&https, &server.url("/hello")).await, (StatusCode::OK, "hello".to_owned()));
    server.shut_down().await;
}

#[tokio::test]
async fn unusable_replacements_keep_the_old_certificate_until_fixed() {
    let ca = Ca::new("metrics ca");
    let first = ca.server(1);
    let server = Server::start(&first, None, router()).await;
    let https = client(&server, &ca, None);

    std::fs::write(&server.files.cert, "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n")
        .unwrap();
    tokio::time::sleep(POLL * 5).await;
    assert_eq!(served_certificate(server.addr, &ca).await, first.der);
    assert_eq!(get_text(&https, &server.url("/hello")).await.0, StatusCode::OK);

    // A new certificate beside the old key: the pair does not match.
    let second = ca.server(2);
    std::fs::write(&server.files.cert, &second.cert_pem).unwrap();
    tokio::time::sleep(POLL * 5).await;
    assert_eq!(served_certificate(server.addr, &ca).await, first.der);

    std::fs::write(&server.files.key, &second.key_pem).unwrap();
    wait_for_certificate(server.addr, &ca, &second.der, Duration::from_secs(1)).await;
    server.shut_down().await;
}

/// Kubernetes projects a Secret as `tls.crt -> ..data/tls.crt`, `..data -> ..<timestamp>`, and
/// rotates it by renaming a new `..data` link over the old one.
#[cfg(unix)]
#[tokio::test]
async fn secret_volume_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;

    let ca = Ca::new("metrics ca");
    let first = ca.server(1);
    let dir = TempDir::new().unwrap();
    let project = |version: &str, leaf: &Leaf| {
        let target = dir.path().join(version);
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("tls.crt"), &leaf.cert_pem).unwrap();
        std::fs::write(target.join("tls.key"), &leaf.key_pem).unwrap();
        symlink(version, dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    };
    project("..2024_01_01_00_00_00.1", &first);
    symlink("..data/tls.crt", dir.path().join("tls.crt")).unwrap();
    symlink("..data/tls.key", dir.path().join("tls.key")).unwrap();
    let files = TlsFiles { cert: dir.path().join("tls.crt"), key: dir.path().join("tls.key"), client_ca: Vec::new() };
    let server = Server::serve(files, TempDir::new().unwrap(), router()).await;
    assert_eq!(served_certificate(server.addr, &ca).await, first.der);

    let second = ca.server(2);
    project("..2024_02_01_00_00_00.2", &second);

    wait_for_certificate(server.addr, &ca, &second.der, Duration::from_secs(1)).await;
    server.shut_down().await;
}

#[tokio::test]
async fn unusable_files_at_startup_are_an_error_that_names_the_file_and_not_the_key() {
    let ca = Ca::new("metrics ca");
    let leaf = ca.server(1);
    let dir = TempDir::new().unwrap();
    let files = TlsFiles { cert: dir.path().join("tls.crt"), key: dir.path().join("tls.key"), client_ca: Vec::new() };
    std::fs::write(&files.cert, &leaf.cert_pem).unwrap();

    let missing = ReloadingTls::start(files.clone(), POLL).unwrap_err();
    assert!(matches!(&missing, TlsError::Read { path, .. } if *path == files.key), "{missing:?}");

    let secret_looking = "TOPSECRETKEYMATERIAL";
    std::fs::write(&files.key, format!("-----BEGIN PRIVATE KEY-----\n{secret_looking}!!\n-----END PRIVATE KEY-----\n"))
        .unwrap();
    let broken = ReloadingTls::start(files.clone(), POLL).unwrap_err();
    let shown = format!("{broken} {broken:?}");
    assert!(shown.contains("tls.key"), "{shown}");
    assert!(!shown.contains(secret_looking), "{shown}");

    std::fs::write(&files.key, &ca.server(2).key_pem).unwrap();
    let mismatched = ReloadingTls::start(files.clone(), POLL).unwrap_err();
    assert!(matches!(&mismatched, TlsError::Rejected { path, .. } if *path == files.cert), "{mismatched:?}");

    std::fs::write(&files.key, &leaf.key_pem).unwrap();
    let tls = ReloadingTls::start(files, POLL).unwrap();
    assert!(!format!("{tls:?}").contains(&leaf.key_pem[40..80]));
    assert_eq!(tls.current().alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
}

/// Collects what the library logs, to check the token never shows up there.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn token_file(dir: &Path, token: &str) -> BearerToken {
    let path = dir.join("token");
    let mut file = std::fs::File::create(&path).unwrap();
    writeln!(file, "{token}").unwrap();
    BearerToken::from_file(&path).unwrap()
}

#[tokio::test]
async fn bearer_token_is_required_on_the_protected_routes_only() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("info,gaa=trace")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // The test runtime is single-threaded, so every task logs through this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let right = "gaa-metrics-7f3c9e2a41d8";
    let wrong = "gaa-metrics-guess-000000";
    let dir = TempDir::new().unwrap();
    let token = token_file(dir.path(), right);
    assert!(!format!("{token:?}").contains(right));
    let protected = Router::new()
        .route("/apis/value", get(|| async { "42" }))
        .route_layer(require_bearer(token))
        .merge(Router::new().route("/healthz", get(|| async { "ok" })));
    let ca = Ca::new("metrics ca");
    let server = Server::start(&ca.server(1), None, protected).await;
    let https = client(&server, &ca, None);
    let url = server.url("/apis/value");

    let missing = https.get(&url).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers()[WWW_AUTHENTICATE], r#"Bearer realm="metrics""#);

    let guessed = https.get(&url).bearer_auth(wrong).send().await.unwrap();
    assert_eq!(guessed.status(), StatusCode::UNAUTHORIZED);
    let challenge = guessed.headers()[WWW_AUTHENTICATE].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer ") && challenge.contains("invalid_token"), "{challenge}");
    let body = guessed.text().await.unwrap();
    assert!(!body.contains(wrong) && !body.contains(right), "{body}");

    let basic = https.get(&url).basic_auth("keda", Some(right)).send().await.unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);

    let granted = https.get(&url).bearer_auth(right).send().await.unwrap();
    assert_eq!(granted.status(), StatusCode::OK);
    assert_eq!(granted.text().await.unwrap(), "42");
    let lower = https.get(&url).header("authorization", format!("bearer {right}")).send().await.unwrap();
    assert_eq!(lower.status(), StatusCode::OK);
    assert_eq!(get_text(&https, &server.url("/healthz")).await, (StatusCode::OK, "ok".to_owned()));

    server.shut_down().await;
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("wrong bearer token"), "the rejection should be logged: {logged}");
    assert!(!logged.contains(right) && !logged.contains(wrong), "a token leaked into the logs: {logged}");
}

#[tokio::test]
async fn plain_http_and_silent_clients_fail_alone_and_the_server_keeps_serving() {
    let ca = Ca::new("metrics ca");
    let server = Server::start(&ca.server(1), None, router()).await;
    let https = client(&server, &ca, None);

    let _silent = TcpStream::connect(server.addr).await.unwrap();
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server should close a plain HTTP connection");
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP was answered: {answer:?}");

    let refused = https.get(format!("http://{}/hello", server.addr)).send().await;
    assert!(refused.is_err(), "{refused:?}");

    assert_eq!(get_text(&https, &server.url("/hello")).await, (StatusCode::OK, "hello".to_owned()));
    server.shut_down().await;
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish_and_stops_accepting() {
    let ca = Ca::new("metrics ca");
    let server = Server::start(&ca.server(1), None, router()).await;
    let https = client(&server, &ca, None);
    let addr = server.addr;
    let slow_url = server.url("/slow");
    let in_flight = tokio::spawn(async move { get_text(&https, &slow_url).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    server.shut_down().await;

    assert_eq!(in_flight.await.unwrap(), (StatusCode::OK, "slow".to_owned()));
    assert!(TcpStream::connect(addr).await.is_err(), "the listener should be closed");
}
