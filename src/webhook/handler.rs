//! `POST /webhook`: cap, verify, parse, journal, answer. Nothing slow happens before the answer
//! except the journal flush the answer promises.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::intake::{BodyError, Intake};
use super::payload::{EventKind, JobDelivery, Payload, action_label, locate_repository};
use super::secrets::LiveSecrets;
use super::signature::{self, SignatureError};
use crate::metrics::Metrics;
use crate::store::{Recorded, StoreError, StoreHandle};

const SIGNATURE_HEADER: &str = "x-hub-signature-256";
const EVENT_HEADER: &str = "x-github-event";
const DELIVERY_HEADER: &str = "x-github-delivery";

/// The answer to a delivery. Reasons are short and never echo secrets or internals.
#[derive(Debug)]
pub enum Outcome {
    Accepted,
    Duplicate,
    Pong,
    Ignored(&'static str),
    Unauthorized(&'static str),
    BadRequest(String),
    TooLarge,
    /// The budget for unverified bodies is spent.
    Busy,
    Unavailable(StoreError),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Pong => "pong",
            Self::Ignored(_) => "ignored",
            Self::Unauthorized(_) => "unauthorized",
            Self::BadRequest(_) => "bad_request",
            Self::TooLarge => "too_large",
            Self::Busy => "busy",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        let json = |status: StatusCode, body: String| {
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        };
        // Answers to GitHub are fixed strings where possible: no JSON building on the hot path.
        let fixed = |status: StatusCode, body: &'static str| {
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        };
        match self {
            Self::Accepted => fixed(StatusCode::ACCEPTED, r#"{"outcome":"accepted"}"#),
            Self::Duplicate => fixed(StatusCode::OK, r#"{"outcome":"duplicate"}"#),
            Self::Pong => fixed(StatusCode::OK, r#"{"outcome":"pong"}"#),
            Self::Ignored(why) => json(StatusCode::ACCEPTED, json!({"outcome": "ignored", "reason": why}).to_string()),
            Self::Unauthorized(why) => json(StatusCode::UNAUTHORIZED, json!({"error": why}).to_string()),
            Self::BadRequest(why) => json(StatusCode::BAD_REQUEST, json!({"error": why}).to_string()),
            Self::TooLarge => {
                json(StatusCode::PAYLOAD_TOO_LARGE, json!({"error": BodyError::TooLarge.to_string()}).to_string())
            }
            Self::Busy => {
                let mut response =
                    json(StatusCode::SERVICE_UNAVAILABLE, json!({"error": BodyError::Busy.to_string()}).to_string());
                response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                response
            }
            Self::Unavailable(e) => {
                let mut response = json(StatusCode::SERVICE_UNAVAILABLE, json!({"error": e.to_string()}).to_string());
                response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                response
            }
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The JSON document inside the body: the body itself, or the `payload` field of a form.
fn json_document<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>, &'static str> {
    let is_form = header_str(headers, header::CONTENT_TYPE.as_str())
        .is_some_and(|ct| ct.trim_start().starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    form_urlencoded::parse(body)
        .find(|(name, _)| name == "payload")
        .map(|(_, value)| std::borrow::Cow::Owned(value.into_owned().into_bytes()))
        .ok_or("form body has no payload field")
}

/// What the handler reads and writes: the secrets that may sign, the budget of unverified
/// bodies, and the store deliveries are journaled in.
struct Receiver<'a> {
    secrets: &'a LiveSecrets,
    intake: &'a Intake,
    store: &'a StoreHandle,
}

pub async fn webhook(
    State(secrets): State<LiveSecrets>,
    State(intake): State<Arc<Intake>>,
    State(store): State<StoreHandle>,
    State(metrics): State<Arc<Metrics>>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let event = header_str(&headers, EVENT_HEADER).map(EventKind::parse);
    let receiver = Receiver { secrets: &secrets, intake: &intake, store: &store };
    let (outcome, action) = receive(&receiver, &headers, event, body).await;
    let event_label = event.map_or("none", EventKind::as_str);
    metrics.delivery(event_label, action, outcome.label());
    match &outcome {
        Outcome::Unauthorized(why) | Outcome::Ignored(why) => {
            tracing::debug!(event = event_label, reason = why, "delivery not used")
        }
        Outcome::BadRequest(why) => {
            tracing::info!(event = event_label, reason = %why, "delivery refused")
        }
        Outcome::Busy => tracing::warn!("delivery refused: the budget for unverified bodies is spent"),
        Outcome::Unavailable(e) => {
            tracing::warn!(error = %e, "delivery refused: store unavailable")
        }
        _ => {}
    }
    outcome.into_response()
}

/// Cheapest refusal first: the signature header before a byte of the body is read, the body
/// under its cap and the shared budget, the repository (which says whose secrets may sign it)
/// read from the front of the document, the signature over the whole body, and only then the
/// whole document parsed.
async fn receive(
    state: &Receiver<'_>,
    headers: &HeaderMap,
    event: Option<EventKind>,
    body: Body,
) -> (Outcome, &'static str) {
    let signature = match signature::Signature::parse(header_str(headers, SIGNATURE_HEADER)) {
        Ok(signature) => signature,
        Err(e) => return (Outcome::Unauthorized(reason(e)), "none"),
    };
    let (body, _held) = match state.intake.read(headers, body).await {
        Ok(read) => read,
        Err(BodyError::TooLarge) => return (Outcome::TooLarge, "none"),
        Err(BodyError::Busy) => return (Outcome::Busy, "none"),
        Err(e @ BodyError::Read(_)) => return (Outcome::BadRequest(e.to_string()), "none"),
    };
    let document = match json_document(headers, &body) {
        Ok(document) => document,
        Err(why) => {
            let outcome = match verify(state, &signature, &body, None) {
                Ok(()) => Outcome::BadRequest(why.into()),
                Err(unauthorized) => Outcome::Unauthorized(unauthorized),
            };
            return (outcome, "none");
        }
    };
    let repo = locate_repository(&document);
    if let Err(why) = verify(state, &signature, &body, repo.as_deref()) {
        return (Outcome::Unauthorized(why), "none");
    }
    let payload: Payload = match serde_json::from_slice(&document) {
        Ok(payload) => payload,
        Err(e) => {
            return (Outcome::BadRequest(format!("payload is not valid JSON for this event: {e}")), "none");
        }
    };
    // The signature was checked against the secrets of the first repository the document names;
    // a document that names another one further on is not GitHub's.
    if payload.repository_name() != repo {
        return (Outcome::BadRequest("payload names more than one repository".into()), "none");
    }
    let action = action_label(payload.action.as_deref());
    let Some(event) = event else {
        return (Outcome::BadRequest("missing X-GitHub-Event header".into()), action);
    };
    match event {
        EventKind::Ping => (Outcome::Pong, action),
        EventKind::Other => (Outcome::Ignored("event is not workflow_job"), action),
        EventKind::WorkflowJob => {
            let delivery = match JobDelivery::from_payload(&payload) {
                Ok(JobDelivery::Event(job)) => job,
                Ok(JobDelivery::UnknownAction) => {
                    return (Outcome::Ignored("action is not tracked"), action);
                }
                Err(e) => return (Outcome::BadRequest(e.to_string()), action),
            };
            let Some(delivery_id) = header_str(headers, DELIVERY_HEADER).map(str::trim).filter(|d| !d.is_empty())
            else {
                return (Outcome::BadRequest("missing X-GitHub-Delivery header".into()), action);
            };
            match state.store.record(delivery_id, delivery).await {
                Ok(Recorded::Accepted) => (Outcome::Accepted, action),
                Ok(Recorded::Duplicate) => (Outcome::Duplicate, action),
                Ok(Recorded::PastRetention) => (Outcome::Ignored("job is older than the journal's retention"), action),
                Err(e) => (Outcome::Unavailable(e), action),
            }
        }
    }
}

/// Whether the body is signed with a secret that covers a payload naming `repo`. A repository
/// nobody holds a secret for gets the same answer as a wrong signature (and costs no hashing),
/// so a stranger cannot learn which repositories are served.
fn verify(
    state: &Receiver<'_>,
    signature: &signature::Signature,
    body: &[u8],
    repo: Option<&str>,
) -> Result<(), &'static str> {
    if state.secrets.current().for_repo(repo).any(|secret| signature.matches(secret, body)) {
        Ok(())
    } else {
        Err(reason(SignatureError::Mismatch))
    }
}

fn reason(error: SignatureError) -> &'static str {
    match error {
        SignatureError::Missing => "missing X-Hub-Signature-256 header",
        SignatureError::Malformed => "malformed X-Hub-Signature-256 header",
        SignatureError::Mismatch => "signature does not match",
    }
}
