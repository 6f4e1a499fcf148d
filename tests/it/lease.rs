//! Resync leadership on a Kubernetes Lease, against kube's tower-test mock API server: create
//! when absent, renew our own, respect another's live lease, take an expired one, and lose a race
//! gracefully (409). Expiry is judged on our clock from when we saw the record change, whatever
//! the holder's clock wrote in `renewTime`.

use axum::http::{Method, Request, Response, StatusCode};
use gaa::lease::{LeaseConfig, Observed, try_lead};
use k8s_openapi::api::coordination::v1::Lease;
use kube::client::Body;
use kube::{Api, Client};
use serde_json::{Value, json};
use tower_test::mock;

const NOW: i64 = 1_800_000_000;

fn api() -> (Api<Lease>, mock::Handle<Request<Body>, Response<Body>>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "gaa");
    (Api::namespaced(client, "gaa"), handle)
}

fn config() -> LeaseConfig {
    LeaseConfig::new("gaa", "resync", "replica-a")
}

fn lease(holder: &str, renewed: i64, version: &str) -> Value {
    let renewed = jiff::Timestamp::from_second(renewed).unwrap().to_string();
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "resync", "namespace": "gaa", "resourceVersion": version},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed, "acquireTime": renewed, "leaseTransitions": 3}
    })
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder().status(status).body(Body::from(serde_json::to_vec(body).unwrap())).unwrap()
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": reason, "reason": reason, "code": code})
}

async fn body_json(request: Request<Body>) -> Value {
    let bytes = request.into_body().collect_bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Answers the next request with `reply` after checking its method and path; returns its body.
async fn expect(
    handle: &mut mock::Handle<Request<Body>, Response<Body>>,
    method: Method,
    path: &str,
    reply: Response<Body>,
) -> Option<Value> {
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method(), method);
    assert_eq!(request.uri().path(), path);
    let body = if method == Method::GET { None } else { Some(body_json(request).await) };
    send.send_response(reply);
    body
}

const ONE: &str = "/apis/coordination.k8s.io/v1/namespaces/gaa/leases/resync";
const ALL: &str = "/apis/coordination.k8s.io/v1/namespaces/gaa/leases";

#[tokio::test]
async fn an_absent_lease_is_created_with_us_as_holder() {
    let (api, mut handle) = api();
    let server = tokio::spawn(async move {
        expect(&mut handle, Method::GET, ONE, json_response(StatusCode::NOT_FOUND, &status(404, "NotFound"))).await;
        let created =
            expect(&mut handle, Method::POST, ALL, json_response(StatusCode::CREATED, &lease("replica-a", NOW, "1")))
                .await;
        created.unwrap()
    });
    assert!(try_lead(&api, &config(), &mut Observed::default(), NOW).await.unwrap());
    let created = server.await.unwrap();
    assert_eq!(created["spec"]["holderIdentity"], "replica-a");
    assert_eq!(created["spec"]["leaseDurationSeconds"], 15);
}

#[tokio::test]
async fn our_own_lease_is_renewed_with_the_version_we_read() {
    let (api, mut handle) = api();
    let server = tokio::spawn(async move {
        expect(&mut handle, Method::GET, ONE, json_response(StatusCode::OK, &lease("replica-a", NOW - 5, "7"))).await;
        expect(&mut handle, Method::PUT, ONE, json_response(StatusCode::OK, &lease("replica-a", NOW, "8")))
            .await
            .unwrap()
    });
    assert!(try_lead(&api, &config(), &mut Observed::default(), NOW).await.unwrap());
    let renewed = server.await.unwrap();
    assert_eq!(renewed["metadata"]["resourceVersion"], "7");
    assert_eq!(renewed["spec"]["renewTime"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap().as_second(), NOW);
    assert_eq!(renewed["spec"]["leaseTransitions"], 3, "renewing is not a transition");
}

#[tokio::test]
async fn another_replicas_live_lease_is_left_alone() {
    let (api, mut handle) = api();
    let server = tokio::spawn(async move {
        expect(&mut handle, Method::GET, ONE, json_response(StatusCode::OK, &lease("replica-b", NOW - 5, "7"))).await;
        handle
    });
    assert!(!try_lead(&api, &config(), &mut Observed::default(), NOW).await.unwrap());
    let mut handle = server.await.unwrap();
    // No write followed the read.
    assert!(tokio::time::timeout(std::time::Duration::from_millis(50), handle.next_request()).await.is_err());
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_counted_as_a_transition() {
    let (api, mut handle) = api();
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            expect(&mut handle, Method::GET, ONE, json_response(StatusCode::OK, &lease("replica-b", NOW - 60, "7")))
                .await;
        }
        expect(&mut handle, Method::PUT, ONE, json_response(StatusCode::OK, &lease("replica-a", NOW, "8")))
            .await
            .unwrap()
    });
    let mut observed = Observed::default();
    // First sight of the record: its holder may have renewed just now, whatever renewTime says.
    assert!(!try_lead(&api, &config(), &mut observed, NOW - 15).await.unwrap());
    // Unchanged for the lease's 15 s on our clock.
    assert!(try_lead(&api, &config(), &mut observed, NOW).await.unwrap());
    let taken = server.await.unwrap();
    assert_eq!(taken["spec"]["holderIdentity"], "replica-a");
    assert_eq!(taken["spec"]["leaseTransitions"], 4);
}

#[tokio::test]
async fn a_holder_whose_clock_is_behind_ours_keeps_the_lease_while_it_renews() {
    let (api, mut handle) = api();
    // replica-b's clock runs 10 minutes behind ours; it renews every 5 s by its clock.
    let skew = 600;
    let server = tokio::spawn(async move {
        for round in 0..6 {
            let renewed = NOW - skew + round * 5;
            let reply = lease("replica-b", renewed, &(10 + round).to_string());
            expect(&mut handle, Method::GET, ONE, json_response(StatusCode::OK, &reply)).await;
        }
        handle
    });
    let mut observed = Observed::default();
    for round in 0..6 {
        assert!(!try_lead(&api, &config(), &mut observed, NOW + round * 5).await.unwrap(), "round {round}");
    }
    let mut handle = server.await.unwrap();
    assert!(tokio::time::timeout(std::time::Duration::from_millis(50), handle.next_request()).await.is_err());
}

#[tokio::test]
async fn a_holder_whose_clock_is_ahead_loses_the_lease_a_duration_after_it_stops_renewing() {
    let (api, mut handle) = api();
    // replica-b's clock runs an hour ahead; it renewed once and died.
    let stopped = lease("replica-b", NOW + 3600, "7");
    let server = tokio::spawn(async move {
        for _ in 0..3 {
            expect(&mut handle, Method::GET, ONE, json_response(StatusCode::OK, &stopped)).await;
        }
        expect(&mut handle, Method::PUT, ONE, json_response(StatusCode::OK, &lease("replica-a", NOW + 15, "8")))
            .await
            .unwrap()
    });
    let mut observed = Observed::default();
    assert!(!try_lead(&api, &config(), &mut observed, NOW).await.unwrap());
    assert!(!try_lead(&api, &config(), &mut observed, NOW + 14).await.unwrap());
    assert!(try_lead(&api, &config(), &mut observed, NOW + 15).await.unwrap());
    assert_eq!(server.await.unwrap()["spec"]["holderIdentity"], "replica-a");
}

#[tokio::test]
async fn losing_the_race_for_an_expired_lease_is_not_an_error() {
    let (api, mut handle) = api();
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            expect(&mut handle, Method::GET, ONE, json_response(StatusCode::OK, &lease("replica-b", NOW - 60, "7")))
                .await;
        }
        expect(&mut handle, Method::PUT, ONE, json_response(StatusCode::CONFLICT, &status(409, "Conflict"))).await;
    });
    let mut observed = Observed::default();
    assert!(!try_lead(&api, &config(), &mut observed, NOW - 15).await.unwrap());
    assert!(!try_lead(&api, &config(), &mut observed, NOW).await.unwrap());
    server.await.unwrap();
}
