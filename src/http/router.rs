//! The routes of the HTTP and TLS listeners.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use super::access::ReadAccess;
use super::bearer::{BearerToken, require_bearer};
use super::state::AppState;
use crate::webhook::{self, MAX_BODY_BYTES};
use crate::{api, jit, metrics_api};

/// Every route, reads open to all: for tests and embedding behind something that authenticates.
pub fn router(state: AppState) -> Router {
    router_for(state, &ReadAccess::Open)
}

/// The routes; with a token, reading demand and metrics requires `Authorization: Bearer`
/// (KEDA's `authMode: bearer`), while webhooks (signed) and health probes stay open.
pub fn router_with(state: AppState, token: Option<BearerToken>) -> Router {
    router_for(state, &token.map_or(ReadAccess::Open, ReadAccess::Token))
}

/// The routes of a listener with `access`: webhooks (signed) and health probes always; reading
/// demand and metrics only when the listener may serve reads, behind the token when it has one.
pub fn router_for(state: AppState, access: &ReadAccess) -> Router {
    let reads = || {
        Router::new()
            .route("/api/v1/scaledactionrunners", get(api::list_runners))
            .route("/api/v1/namespaces/{namespace}/scaledactionrunners/{name}", get(api::get_runner))
            .route("/metrics", get(api::metrics))
            .merge(metrics_api::custom_metrics::routes())
    };
    // A pod's own token authenticates it (see `jit`): on every listener, whatever reads need.
    let routes = Router::new()
        .route("/webhook", post(webhook::webhook))
        .route("/api/v1/namespaces/{namespace}/scaledactionrunners/{name}/jitconfig", post(jit::jitconfig))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz));
    let routes = match access {
        ReadAccess::Closed => routes,
        ReadAccess::Open => routes.merge(reads()),
        ReadAccess::Token(token) => routes.merge(reads().route_layer(require_bearer(token.clone()))),
    };
    routes.fallback(api::fallback).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).with_state(state)
}
