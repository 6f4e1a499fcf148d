//! The HTTP surface, driven in-process with `oneshot`: every status code the receiver and the
//! read API answer with.

use crate::common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use gaa::http::{AppState, router};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Delivery {
    event: Option<&'static str>,
    id: Option<String>,
    signature: Option<String>,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Delivery {
    fn job(secret: &str, delivery: &str, repo: &str, job: u64, action: &str, labels: &[&str]) -> Self {
        let body = serde_json::to_vec(&job_payload(repo, job, action, labels)).unwrap();
        Self::signed(secret, "workflow_job", delivery, body)
    }

    fn signed(secret: &str, event: &'static str, delivery: &str, body: Vec<u8>) -> Self {
        Self {
            event: Some(event),
            id: Some(delivery.to_string()),
            signature: Some(signature(secret, &body)),
            content_type: "application/json",
            body,
        }
    }

    fn request(&self) -> Request<Body> {
        let mut builder = Request::post("/webhook").header("content-type", self.content_type);
        if let Some(event) = self.event {
            builder = builder.header("x-github-event", event);
        }
        if let Some(id) = &self.id {
            builder = builder.header("x-github-delivery", id);
        }
        if let Some(signature) = &self.signature {
            builder = builder.header("x-hub-signature-256", signature);
        }
        builder.body(Body::from(self.body.clone())).unwrap()
    }
}

async fn send(state: &AppState, request: Request<Body>) -> (StatusCode, Value) {
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, body)
}

async fn deliver(state: &AppState, delivery: &Delivery) -> (StatusCode, Value) {
    send(state, delivery.request()).await
}

async fn runner(state: &AppState, ns: &str, name: &str) -> (StatusCode, Value) {
    let uri = format!("/api/v1/namespaces/{ns}/scaledactionrunners/{name}");
    send(state, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn demand(state: &AppState, ns: &str, name: &str) -> u64 {
    let (status, body) = runner(state, ns, name).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["demand"].as_u64().unwrap()
}

#[tokio::test]
async fn a_signed_queued_job_is_accepted_and_becomes_demand() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    let (status, body) =
        deliver(&state, &Delivery::job(API_SECRET, "d1", "acme/api", 11, "queued", &["self-hosted", "linux"])).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, view) = runner(&state, "ci", "api-linux").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["demand"], 1);
    assert_eq!(view["queued"], 1);
    assert_eq!(view["inProgress"], 0);
    assert_eq!(view["desiredRunners"], 1);
    assert_eq!(view["value"], 1);
}

#[tokio::test]
async fn a_redelivery_is_acknowledged_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    let queued = Delivery::job(API_SECRET, "same-guid", "acme/api", 11, "queued", &["linux"]);
    assert_eq!(deliver(&state, &queued).await.0, StatusCode::ACCEPTED);
    let (status, body) = deliver(&state, &queued).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["outcome"], "duplicate");
    assert_eq!(demand(&state, "ci", "api-linux").await, 1);
}

#[tokio::test]
async fn the_form_encoded_body_github_can_send_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    let json = serde_json::to_string(&job_payload("acme/api", 12, "queued", &["linux"])).unwrap();
    let body: String = form_urlencoded::Serializer::new(String::new()).append_pair("payload", &json).finish();
    let mut delivery = Delivery::signed(API_SECRET, "workflow_job", "f1", body.into_bytes());
    delivery.content_type = "application/x-www-form-urlencoded";
    assert_eq!(deliver(&state, &delivery).await.0, StatusCode::ACCEPTED);
    assert_eq!(demand(&state, "ci", "api-linux").await, 1);
}

#[tokio::test]
async fn a_missing_signature_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    let mut delivery = Delivery::job(API_SECRET, "d1", "acme/api", 11, "queued", &["linux"]);
    delivery.signature = None;
    let (status, body) = deliver(&state, &delivery).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "missing X-Hub-Signature-256 header");
    assert_eq!(demand(&state, "ci", "api-linux").await, 0);
}

#[tokio::test]
async fn a_malformed_signature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    for bad in ["sha1=0123", "sha256=nothex", "sha256=abcd", ""] {
        let mut delivery = Delivery::job(API_SECRET, "d1", "acme/api", 11, "queued", &["linux"]);
        delivery.signature = Some(bad.to_string());
        let (status, body) = deliver(&state, &delivery).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(body["error"], "malformed X-Hub-Signature-256 header", "{bad}");
    }
}

#[tokio::test]
async fn a_wrong_signature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    let delivery = Delivery::job("not-the-secret", "d1", "acme/api", 11, "queued", &["linux"]);
    let (status, body) = deliver(&state, &delivery).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "signature does not match");
    assert_eq!(demand(&state, "ci", "api-linux").await, 0);
}

#[tokio::test]
async fn payload_signed_for_another_repository_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    // acme/web's payload signed with acme/api's secret, and the reverse.
    let (status, _) = deliver(&state, &Delivery::job(API_SECRET, "d1", "acme/web", 11, "queued", &["linux"])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = deliver(&state, &Delivery::job(WEB_SECRET, "d2", "acme/api", 12, "queued", &["linux"])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(demand(&state, "frontend", "web").await, 0);
    assert_eq!(demand(&state, "ci", "api-linux").await, 0);
    let (status, _) = deliver(&state, &Delivery::job(WEB_SECRET, "d3", "acme/web", 13, "queued", &["linux"])).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

/// A tenant holding only acme/web's secret names acme/api's job ids in deliveries for acme/web
/// (with a larger repository id, which used to win the job's merge).
fn web_delivery_naming(delivery: &str, job: u64, action: &str) -> Delivery {
    let mut payload = job_payload("acme/web", job, action, &["linux"]);
    payload["repository"]["id"] = json!(u64::MAX);
    Delivery::signed(WEB_SECRET, "workflow_job", delivery, serde_json::to_vec(&payload).unwrap())
}

#[tokio::test]
async fn a_delivery_signed_for_one_repository_cannot_move_or_end_another_repositorys_job() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    let victim = Delivery::job(API_SECRET, "v1", "acme/api", 500, "queued", &["linux"]);
    assert_eq!(deliver(&state, &victim).await.0, StatusCode::ACCEPTED);
    for (delivery, action) in [("a1", "queued"), ("a2", "completed")] {
        assert_eq!(deliver(&state, &web_delivery_naming(delivery, 500, action)).await.0, StatusCode::ACCEPTED);
    }
    assert_eq!(demand(&state, "ci", "api-linux").await, 1, "the victim's job still counts");
    assert_eq!(demand(&state, "frontend", "web").await, 0);
    let started = Delivery::job(API_SECRET, "v2", "acme/api", 500, "in_progress", &["linux"]);
    assert_eq!(deliver(&state, &started).await.0, StatusCode::ACCEPTED);
    let (_, body) = runner(&state, "ci", "api-linux").await;
    assert_eq!((body["queued"].as_u64(), body["inProgress"].as_u64()), (Some(0), Some(1)), "{body}");
}

#[tokio::test]
async fn a_replayed_delivery_of_a_forgotten_job_does_not_open_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(std::sync::atomic::AtomicI64::new(jiff::Timestamp::now().as_second()));
    let clock: gaa::clock::Clock = {
        let now = now.clone();
        Arc::new(move || now.load(std::sync::atomic::Ordering::SeqCst))
    };
    let retention = std::time::Duration::from_secs(3600);
    let state = state_with(dir.path(), None, gaa::store::WriterConfig { retention, clock, ..Default::default() });
    let started = Delivery::job(API_SECRET, "d1", "acme/api", 900, "in_progress", &["linux"]);
    assert_eq!(deliver(&state, &started).await.0, StatusCode::ACCEPTED);
    let done = Delivery::job(API_SECRET, "d2", "acme/api", 900, "completed", &["linux"]);
    assert_eq!(deliver(&state, &done).await.0, StatusCode::ACCEPTED);
    // Two hours on, the finished job has been forgotten; a captured delivery comes back with a
    // new delivery id.
    now.fetch_add(2 * 3600, std::sync::atomic::Ordering::SeqCst);
    state.store.checkpoint().await.unwrap();
    let mut replay = started;
    replay.id = Some("replayed".into());
    let (status, body) = deliver(&state, &replay).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["reason"], "job is older than the journal's retention");
    assert_eq!(demand(&state, "ci", "api-linux").await, 0);
}

#[tokio::test]
async fn job_ids_completed_in_advance_by_another_repository_do_not_hide_its_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    for job in 600..605 {
        let attack = web_delivery_naming(&format!("a{job}"), job, "completed");
        assert_eq!(deliver(&state, &attack).await.0, StatusCode::ACCEPTED);
    }
    for job in 600..605 {
        let queued = Delivery::job(API_SECRET, &format!("v{job}"), "acme/api", job, "queued", &["linux"]);
        assert_eq!(deliver(&state, &queued).await.0, StatusCode::ACCEPTED);
    }
    assert_eq!(demand(&state, "ci", "api-linux").await, 5);
}

#[tokio::test]
async fn a_repository_without_a_secret_is_refused_unless_its_organisations_secret_signs_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    let (status, body) =
        deliver(&state, &Delivery::job(ORG_SECRET, "d1", "acme/other", 11, "queued", &["linux"])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "signature does not match");

    let dir = tempfile::tempdir().unwrap();
    let state = common::state(dir.path(), Some(ORG_SECRET)).await;
    let (status, _) = deliver(&state, &Delivery::job(ORG_SECRET, "d1", "acme/other", 11, "queued", &["linux"])).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = deliver(&state, &Delivery::job(ORG_SECRET, "d2", "acme/api", 12, "queued", &["linux"])).await;
    assert_eq!(status, StatusCode::ACCEPTED, "the organisation secret covers the organisation's repositories");
    assert_eq!(demand(&state, "ci", "api-linux").await, 1);
    let (status, _) = deliver(&state, &Delivery::job(ORG_SECRET, "d3", "other/api", 13, "queued", &["linux"])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "but no other organisation's");
}

#[tokio::test]
async fn verified_but_malformed_json_is_a_bad_request() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), Some(ORG_SECRET)).await;
    let delivery = Delivery::signed(ORG_SECRET, "workflow_job", "d1", b"{not json".to_vec());
    let (status, body) = deliver(&state, &delivery).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // The same broken body signed with a wrong secret is unauthorised, not a bad request.
    let mut delivery = Delivery::signed("wrong", "workflow_job", "d1", b"{not json".to_vec());
    delivery.signature = Some(signature("wrong", &delivery.body));
    assert_eq!(deliver(&state, &delivery).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_payload_whose_fields_have_the_wrong_types_is_a_bad_request_once_verified() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    let body = br#"{"action":"queued","workflow_job":{"id":"eleven"},"repository":{"id":1001,"full_name":"acme/api"}}"#;
    let (status, body) = deliver(&state, &Delivery::signed(API_SECRET, "workflow_job", "d1", body.to_vec())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn a_workflow_job_without_id_or_repository_is_a_bad_request() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), Some(ORG_SECRET)).await;
    let mut no_id = job_payload("acme/api", 1, "queued", &["linux"]);
    no_id["workflow_job"].as_object_mut().unwrap().remove("id");
    let (status, body) =
        deliver(&state, &Delivery::signed(API_SECRET, "workflow_job", "d1", serde_json::to_vec(&no_id).unwrap())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "workflow_job payload has no workflow_job.id");
    let mut no_repo = job_payload("acme/api", 1, "queued", &["linux"]);
    no_repo.as_object_mut().unwrap().remove("repository");
    let (status, body) =
        deliver(&state, &Delivery::signed(ORG_SECRET, "workflow_job", "d2", serde_json::to_vec(&no_repo).unwrap()))
            .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "workflow_job payload has no repository.id and full_name");
}

#[tokio::test]
async fn missing_event_or_delivery_headers_are_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    let mut delivery = Delivery::job(API_SECRET, "d1", "acme/api", 11, "queued", &["linux"]);
    delivery.id = None;
    let (status, body) = deliver(&state, &delivery).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "missing X-GitHub-Delivery header");
    let mut delivery = Delivery::job(API_SECRET, "d1", "acme/api", 11, "queued", &["linux"]);
    delivery.event = None;
    let (status, body) = deliver(&state, &delivery).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "missing X-GitHub-Event header");
    assert_eq!(demand(&state, "ci", "api-linux").await, 0);
}

#[tokio::test]
async fn a_body_over_1_mib_is_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    let mut body = br#"{"padding":""#.to_vec();
    body.resize(gaa::webhook::MAX_BODY_BYTES + 1, b'x');
    let delivery = Delivery::signed(API_SECRET, "workflow_job", "d1", body);
    let (status, body) = deliver(&state, &delivery).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "payload larger than 1024 KiB");
    assert_eq!(state.intake.in_use(), 0);
}

/// A body that never ends: a handler that reads it before refusing never answers.
fn endless_body() -> Body {
    Body::from_stream(futures::stream::unfold((), |()| async {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        Some((Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"xxxxxxxx")), ()))
    }))
}

#[tokio::test]
async fn a_missing_or_malformed_signature_is_refused_before_the_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    for signature in [None, Some("sha1=00"), Some("sha256=zz")] {
        let mut request = Request::post("/webhook").header("x-github-event", "workflow_job");
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        let answered = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            send(&state, request.body(endless_body()).unwrap()),
        )
        .await
        .unwrap_or_else(|_| panic!("no answer with signature {signature:?}: the body was read first"));
        assert_eq!(answered.0, StatusCode::UNAUTHORIZED, "{signature:?}");
    }
}

#[tokio::test]
async fn an_unserved_repository_and_a_wrong_signature_get_the_same_answer() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    let unserved = deliver(&state, &Delivery::job("guess", "d1", "acme/unserved", 1, "queued", &[])).await;
    let wrong = deliver(&state, &Delivery::job("guess", "d2", "acme/api", 1, "queued", &[])).await;
    assert_eq!(unserved, wrong);
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_body_naming_a_second_repository_after_the_signed_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    // Signed with acme/web's secret for the first repository it names; the parser used to take
    // the last one, acme/api.
    let payload = job_payload("acme/api", 700, "queued", &["linux"]).to_string();
    let body = payload.replacen("{", r#"{"repository":{"id":2002,"full_name":"acme/web"},"#, 1);
    let (status, body) = deliver(&state, &Delivery::signed(WEB_SECRET, "workflow_job", "d1", body.into_bytes())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(demand(&state, "ci", "api-linux").await, 0);
    assert_eq!(demand(&state, "frontend", "web").await, 0);
}

#[tokio::test]
async fn a_ping_is_answered_with_200() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    let body = br#"{"zen":"Keep it logically awesome.","hook_id":1,"hook":{"type":"Repository"},"repository":{"id":1001,"full_name":"acme/api"}}"#;
    let (status, body) = deliver(&state, &Delivery::signed(API_SECRET, "ping", "p1", body.to_vec())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["outcome"], "pong");
}

#[tokio::test]
async fn other_events_and_unknown_actions_are_ignored_with_2xx_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    let push = serde_json::to_vec(
        &serde_json::json!({"ref":"refs/heads/main","repository":{"id":1001,"full_name":"acme/api"}}),
    )
    .unwrap();
    let (status, body) = deliver(&state, &Delivery::signed(API_SECRET, "push", "e1", push)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["outcome"], "ignored");
    let (status, body) =
        deliver(&state, &Delivery::job(API_SECRET, "e2", "acme/api", 11, "teleported", &["linux"])).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["outcome"], "ignored");
    assert_eq!(demand(&state, "ci", "api-linux").await, 0);
    let (_, metrics) = send(&state, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains(r#"gaa_webhook_deliveries_total{event="other",action="none",outcome="ignored"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"gaa_webhook_deliveries_total{event="workflow_job",action="other",outcome="ignored"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_job_goes_to_the_most_specific_runner_that_carries_all_its_labels() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    deliver(&state, &Delivery::job(API_SECRET, "d1", "acme/api", 1, "queued", &["self-hosted", "linux", "gpu"])).await;
    deliver(&state, &Delivery::job(API_SECRET, "d2", "acme/api", 2, "queued", &["self-hosted", "linux"])).await;
    deliver(&state, &Delivery::job(API_SECRET, "d3", "acme/api", 3, "queued", &["self-hosted", "windows"])).await;
    assert_eq!(demand(&state, "ci", "api-gpu").await, 1);
    assert_eq!(demand(&state, "ci", "api-linux").await, 1);
}

#[tokio::test]
async fn waiting_is_not_demand_and_completed_is_final() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    deliver(&state, &Delivery::job(API_SECRET, "w", "acme/api", 5, "waiting", &["linux"])).await;
    assert_eq!(demand(&state, "ci", "api-linux").await, 0);
    deliver(&state, &Delivery::job(API_SECRET, "c", "acme/api", 5, "completed", &["linux"])).await;
    deliver(&state, &Delivery::job(API_SECRET, "q", "acme/api", 5, "queued", &["linux"])).await;
    deliver(&state, &Delivery::job(API_SECRET, "i", "acme/api", 5, "in_progress", &["linux"])).await;
    assert_eq!(demand(&state, "ci", "api-linux").await, 0);
}

#[tokio::test]
async fn the_read_api_answers_404_for_unknown_runners_and_lists_all() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    let (status, body) = runner(&state, "ci", "nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "scaledactionrunner ci/nope not found");
    // Same name, other namespace: runners are namespaced.
    assert_eq!(runner(&state, "frontend", "api-linux").await.0, StatusCode::NOT_FOUND);
    let (status, list) = send(&state, Request::get("/api/v1/scaledactionrunners").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("{}/{}", i["namespace"].as_str().unwrap(), i["name"].as_str().unwrap()))
        .collect();
    assert_eq!(names, vec!["ci/api-gpu", "ci/api-linux", "frontend/web"]);
    // minRunners 1 holds the desired count up with no demand.
    let (_, web) = runner(&state, "frontend", "web").await;
    assert_eq!((web["demand"].as_u64(), web["desiredRunners"].as_u64()), (Some(0), Some(1)));
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    deliver(&state, &Delivery::job(API_SECRET, "d1", "acme/api", 1, "queued", &["linux"])).await;
    let (status, _) = send(&state, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, ready) = send(&state, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["runners"], 3);
    let (status, metrics) = send(&state, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics.as_str().unwrap();
    assert!(text.contains(r#"gaa_runner_demand{namespace="ci",name="api-linux"} 1"#), "{text}");
    assert!(
        text.contains(r#"gaa_webhook_deliveries_total{event="workflow_job",action="queued",outcome="accepted"} 1"#),
        "{text}"
    );
    assert!(text.contains("gaa_journal_size_bytes"), "{text}");
    assert_eq!(send(&state, Request::get("/nope").body(Body::empty()).unwrap()).await.0, StatusCode::NOT_FOUND);
}
