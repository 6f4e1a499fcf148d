//! `POST /api/v1/namespaces/{namespace}/scaledactionrunners/{name}/jitconfig`: the pod's
//! token in `Authorization: Bearer`, the configuration in the answer.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::json;

use super::JitService;

/// Answers `200 {"runnerName", "runnerId", "encodedJitConfig"}`, or the refusal's status with
/// `{"error": reason}` (and `Retry-After` for 429 and 503).
pub async fn jitconfig(
    State(service): State<Option<Arc<JitService>>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(service) = service else {
        let body =
            json!({"error": "just-in-time runners need serve to run in a cluster (it checks pods' tokens there)"});
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match service.issue(&namespace, &name, token).await {
        Ok(minted) => {
            let body = json!({
                "runnerName": minted.runner_name,
                "runnerId": minted.runner_id,
                "encodedJitConfig": minted.encoded.expose_secret(),
            });
            let mut response = (StatusCode::OK, Json(body)).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(error) => {
            let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            tracing::info!(runner = %format!("{namespace}/{name}"), status = status.as_u16(), reason = %error, "just-in-time configuration refused");
            let mut response = (status, Json(json!({"error": error.to_string()}))).into_response();
            if let Some(after) = error.retry_after() {
                let seconds = after.as_secs().max(1).to_string();
                if let Ok(value) = HeaderValue::from_str(&seconds) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
            }
            response
        }
    }
}
