//! The real binary as KEDA meets it: the read API over mutual TLS with a bearer token, and the
//! external-push gRPC stream over mutual TLS with the same token, flipping the moment a signed
//! webhook queues a job.

use crate::common;

use std::time::Duration;

use common::server::{Server, free_port, manifests_dir};
use gaa::metrics_api::external_scaler::ExternalScalerClient;
use gaa::metrics_api::external_scaler::proto::ScaledObjectRef;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

struct Pem {
    cert: String,
    key: String,
}

fn pki() -> (Pem, Pem, Pem) {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "test ca");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = params.self_signed(&ca_key).unwrap();
    let ca = Pem { cert: ca_cert.pem(), key: String::new() };
    let issuer = Issuer::new(params, ca_key);
    let leaf = |name: &str, purpose| {
        let mut params = CertificateParams::new(vec![name.to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        Pem { cert: cert.pem(), key: key.serialize_pem() }
    };
    let server = leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let client = leaf("keda", ExtendedKeyUsagePurpose::ClientAuth);
    (ca, server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keda_reads_over_mutual_tls_and_is_pushed_the_flip_from_zero() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = tempfile::tempdir().unwrap();
    let (ca, server_pem, client_pem) = pki();
    let path = |name: &str| root.path().join(name);
    std::fs::write(path("ca.crt"), &ca.cert).unwrap();
    std::fs::write(path("tls.crt"), &server_pem.cert).unwrap();
    std::fs::write(path("tls.key"), &server_pem.key).unwrap();
    std::fs::write(path("token"), "keda-bearer-token\n").unwrap();
    let (tls_addr, grpc_addr) = (free_port(), free_port());
    let manifests = manifests_dir(root.path(), "");
    let (tls_listen, grpc_listen) = (tls_addr.to_string(), grpc_addr.to_string());
    let files: Vec<String> =
        ["tls.crt", "tls.key", "ca.crt", "token"].iter().map(|f| path(f).display().to_string()).collect();
    let args = [
        "--tls-listen",
        &tls_listen,
        "--grpc-listen",
        &grpc_listen,
        "--tls-cert",
        &files[0],
        "--tls-key",
        &files[1],
        "--client-ca",
        &files[2],
        "--metrics-token-file",
        &files[3],
    ];
    let server = Server::start_with(&path("data"), &manifests, &args).await;

    // gRPC over TLS with KEDA's client certificate and, since the server has a token file, the
    // token as `authorization` metadata: inactive, then active once a job is queued.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.cert))
        .identity(Identity::from_pem(&client_pem.cert, &client_pem.key))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{grpc_addr}")).unwrap().tls_config(tls).unwrap();
    let mut scaler = ExternalScalerClient::new(channel.connect().await.unwrap());
    let object = ScaledObjectRef { name: "api-linux".into(), namespace: "ci".into(), ..Default::default() };
    let refused = scaler.stream_is_active(object.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "certificate and token are both required: {refused:?}");
    let mut call = tonic::Request::new(object);
    call.metadata_mut().insert("authorization", "Bearer keda-bearer-token".parse().unwrap());
    let mut stream = scaler.stream_is_active(call).await.unwrap().into_inner();
    assert!(!stream.message().await.unwrap().unwrap().result);
    let webhooks = common::server::http();
    assert_eq!(server.deliver(&webhooks, "q-1", "acme/api", 1, "queued").await, 202);
    let flipped = tokio::time::timeout(Duration::from_secs(2), stream.message()).await.unwrap().unwrap().unwrap();
    assert!(flipped.result, "pushed active after the webhook");

    // The read API over mutual TLS: certificate and token both required.
    let tls_client = |identity: bool| {
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca.cert.as_bytes()).unwrap()])
            .resolve("localhost", tls_addr)
            .timeout(Duration::from_secs(5));
        if identity {
            let pem = format!("{}{}", client_pem.cert, client_pem.key);
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    };
    let url = format!("https://localhost:{}/api/v1/namespaces/ci/scaledactionrunners/api-linux", tls_addr.port());
    let answer = tls_client(true).get(&url).bearer_auth("keda-bearer-token").send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let body = answer.text().await.unwrap();
    assert_eq!(gjson::get(&body, "value").i64(), 1, "{body}");
    let no_token = tls_client(true).get(&url).send().await.unwrap();
    assert_eq!(no_token.status(), 401);
    assert!(
        tls_client(false).get(&url).bearer_auth("keda-bearer-token").send().await.is_err(),
        "no client certificate"
    );
    assert!(!server.log().contains("keda-bearer-token"), "the token is never logged");
}
