//! The read API and operational endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::demand::{RunnerDemand, RunnerKey};
use crate::metrics::Metrics;
use crate::store::{Board, StoreHandle};

/// Whether the runners and their Secrets have been loaded, and how many were left out or
/// served only in part: what `/readyz` reports besides the store.
#[derive(Debug)]
pub struct CatalogStatus {
    /// False in a cluster until the first full list of runners and their Secrets was seen.
    loaded: AtomicBool,
    problems: AtomicUsize,
}

impl CatalogStatus {
    /// A catalog complete now (standalone: loaded from the manifests).
    pub fn loaded(problems: usize) -> Self {
        Self { loaded: AtomicBool::new(true), problems: AtomicUsize::new(problems) }
    }

    /// A catalog not ready until [`set`](Self::set) is called.
    pub fn waiting() -> Self {
        Self { loaded: AtomicBool::new(false), problems: AtomicUsize::new(0) }
    }

    /// Records a complete catalog with `problems`.
    pub fn set(&self, problems: usize) {
        self.problems.store(problems, Ordering::Relaxed);
        self.loaded.store(true, Ordering::Release);
    }

    /// Runners (or manifest documents) left out or served only in part.
    pub fn problems(&self) -> usize {
        self.problems.load(Ordering::Relaxed)
    }

    /// Whether the runners and their Secrets have been loaded once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }
}

/// An API error: a status and a short message, as JSON.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn not_found(message: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message, "code": self.status.as_u16()}))).into_response()
    }
}

/// `GET /api/v1/namespaces/{ns}/scaledactionrunners/{name}`
pub async fn get_runner(
    State(board): State<Arc<Board>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let key = RunnerKey::new(namespace, name);
    let view = board.get(&key).ok_or_else(|| ApiError::not_found(format!("scaledactionrunner {key} not found")))?;
    Ok(Json(view).into_response())
}

/// `GET /api/v1/scaledactionrunners`
pub async fn list_runners(State(board): State<Arc<Board>>) -> Response {
    /// Written straight from the views: `json!` would first copy them all into a `Value` tree
    /// (tens of MiB at 10,000 runners).
    #[derive(serde::Serialize)]
    struct Items {
        items: Vec<RunnerDemand>,
    }
    Json(Items { items: board.list() }).into_response()
}

/// `GET /healthz`: the process is up and can still journal. Once a journal write has failed
/// (a full or failing disk), the state may hold deliveries that are not on disk and sled may
/// refuse every later write, so liveness fails: the kubelet restarts the container, which
/// rebuilds the state from the journal (and fails to start until the disk can be written again).
pub async fn healthz(State(store): State<StoreHandle>) -> Response {
    if !store.is_healthy() {
        let body = json!({"status": "journal write failed; restart to rebuild from the journal"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    "ok".into_response()
}

/// `GET /readyz`: the journal is open and replayed, runners (and in a cluster their Secrets) are
/// loaded. A shared store that cannot be reached makes the answer `degraded` but still ready:
/// deliveries are journaled and the last known demand is served.
pub async fn readyz(
    State(store): State<StoreHandle>,
    State(catalog): State<Arc<CatalogStatus>>,
    State(metrics): State<Arc<Metrics>>,
) -> Response {
    let kind = if store.is_shared() { "memcached" } else { "sled" };
    if !store.is_healthy() {
        let body = json!({"status": "journal write failed; restart to rebuild from the journal", "store": kind});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    if !catalog.is_loaded() {
        let body = json!({"status": "waiting for the ScaledActionRunners and their Secrets", "store": kind});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let degraded = store.is_shared() && store.board().is_stale();
    let body = json!({
        "status": if degraded { "degraded" } else { "ready" },
        "store": kind,
        "degraded": degraded,
        "backlogJobs": metrics.store_backlog.get(),
        "runners": store.board().len(),
        "manifestProblems": catalog.problems(),
    });
    (StatusCode::OK, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.encode())
        .into_response()
}

pub async fn fallback() -> ApiError {
    ApiError::not_found("no such endpoint")
}
