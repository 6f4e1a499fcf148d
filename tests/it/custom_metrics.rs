//! What KEDA's metrics-api trigger and the HPA (through custom.metrics.k8s.io) read: shapes,
//! the `*` and selector forms, 404 `Status` objects, and the JSON paths KEDA is told to use,
//! checked with a gjson implementation.

use crate::common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use gaa::demand::{JobEvent, JobStatus, RepoRef};
use gaa::http::{AppState, router};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

async fn get(state: &AppState, uri: &str) -> (StatusCode, String) {
    let response = router(state.clone()).oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// ci/api-linux: 3 queued + 1 running (desired 4, scaleFactor "0"); ci/api-gpu: none.
async fn state_with_demand(dir: &std::path::Path) -> AppState {
    let state = state(dir, None).await;
    for job in 1..=4 {
        let status = if job == 4 { JobStatus::InProgress } else { JobStatus::Queued };
        let event = JobEvent::new(job, 1, 1, RepoRef::new(1001, "acme/api"), status, ["linux"]);
        state.store.record(&format!("d{job}"), event).await.unwrap();
    }
    state
}

#[tokio::test]
async fn keda_metrics_api_finds_the_desired_count_with_the_documented_gjson_path() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with_demand(dir.path()).await;
    let (status, body) = get(&state, "/api/v1/namespaces/ci/scaledactionrunners/api-linux").await;
    assert_eq!(status, StatusCode::OK);
    // The README's trigger: valueLocation "value".
    assert_eq!(gjson::get(&body, "value").i64(), 4);
    assert_eq!(gjson::get(&body, "demand").i64(), 4);
}

#[tokio::test]
async fn discovery_lists_the_runner_metrics_in_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    for version in ["v1beta1", "v1beta2"] {
        let (status, body) = get(&state, &format!("/apis/custom.metrics.k8s.io/{version}")).await;
        assert_eq!(status, StatusCode::OK);
        let list: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(list["kind"], "APIResourceList");
        assert_eq!(list["groupVersion"], format!("custom.metrics.k8s.io/{version}"));
        let names: Vec<&str> =
            list["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"scaledactionrunners.runner.devjoes.com/desired-runners"), "{names:?}");
        assert!(
            list["resources"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["namespaced"] == true && r["kind"] == "MetricValueList")
        );
    }
    assert_eq!(get(&state, "/apis/custom.metrics.k8s.io/v2").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_metric_value_list_carries_the_desired_count_where_keda_and_the_hpa_look() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with_demand(dir.path()).await;
    let uri = "/apis/custom.metrics.k8s.io/v1beta1/namespaces/ci/scaledactionrunners.runner.devjoes.com/api-linux/desired-runners";
    let (status, body) = get(&state, uri).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(gjson::get(&body, "kind").str(), "MetricValueList");
    assert_eq!(gjson::get(&body, "items.0.value").str(), "4");
    assert_eq!(gjson::get(&body, "items.0.metricName").str(), "desired-runners");
    assert_eq!(gjson::get(&body, "items.0.describedObject.kind").str(), "ScaledActionRunner");
    assert_eq!(gjson::get(&body, "items.0.selector.matchLabels.cr_repo").str(), "api");
    // The original project's form: capitalised resource, `*` metric, metric named after the runner.
    let (status, body) =
        get(&state, "/apis/custom.metrics.k8s.io/v1beta1/namespaces/ci/Scaledactionrunners/api-linux/*").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gjson::get(&body, "items.#").i64(), 4, "{body}");
    let (_, body) =
        get(&state, "/apis/custom.metrics.k8s.io/v1beta1/namespaces/ci/scaledactionrunners/api-linux/api-linux").await;
    assert_eq!(gjson::get(&body, "items.0.value").str(), "4");
    // v1beta2 nests the metric name.
    let (_, body) =
        get(&state, "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ci/scaledactionrunners/api-linux/queued").await;
    assert_eq!(gjson::get(&body, "items.0.metric.name").str(), "queued");
    assert_eq!(gjson::get(&body, "items.0.value").str(), "3");
}

#[tokio::test]
async fn star_and_label_selectors_choose_runners() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with_demand(dir.path()).await;
    let base = "/apis/custom.metrics.k8s.io/v1beta1/namespaces/ci/scaledactionrunners/*/desired-runners";
    let (_, body) = get(&state, base).await;
    assert_eq!(gjson::get(&body, "items.#").i64(), 2, "{body}");
    let (_, body) = get(&state, &format!("{base}?labelSelector=cr_name%3Dapi-gpu")).await;
    assert_eq!(gjson::get(&body, "items.#").i64(), 1);
    assert_eq!(gjson::get(&body, "items.0.describedObject.name").str(), "api-gpu");
    let (status, body) = get(&state, &format!("{base}?labelSelector=cr_name%3Dnone")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gjson::get(&body, "items.#").i64(), 0);
}

#[tokio::test]
async fn set_based_selectors_choose_runners_and_keep_their_commas() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with_demand(dir.path()).await;
    let base = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ci/scaledactionrunners/*/desired-runners";
    let names = |body: &str| -> Vec<String> {
        let list: Value = serde_json::from_str(body).unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["describedObject"]["name"].as_str().unwrap().into())
            .collect()
    };
    // cr_name in (api-gpu, other), cr_repo
    let (status, body) =
        get(&state, &format!("{base}?labelSelector=cr_name%20in%20%28api-gpu%2C%20other%29%2Ccr_repo")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(names(&body), ["api-gpu"]);
    // cr_name notin (api-gpu)
    let (_, body) = get(&state, &format!("{base}?metricLabelSelector=cr_name%20notin%20%28api-gpu%29")).await;
    assert_eq!(names(&body), ["api-linux"]);
}

#[tokio::test]
async fn an_invalid_selector_is_a_bad_request_like_the_api_servers() {
    let dir = tempfile::tempdir().unwrap();
    let state = state_with_demand(dir.path()).await;
    let base = "/apis/custom.metrics.k8s.io/v1beta1/namespaces/ci/scaledactionrunners/*/desired-runners";
    // cr_name in (api-gpu
    for query in ["labelSelector=cr_name%20in%20%28api-gpu", "metricLabelSelector=cr_name%3D%3Da%3Db"] {
        let (status, body) = get(&state, &format!("{base}?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let status_object: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (status_object["kind"].as_str(), status_object["reason"].as_str()),
            (Some("Status"), Some("BadRequest"))
        );
        assert_eq!(status_object["code"], 400);
    }
}

#[tokio::test]
async fn unknown_runners_get_a_kubernetes_status_404() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(dir.path(), None).await;
    let (status, body) =
        get(&state, "/apis/custom.metrics.k8s.io/v1beta1/namespaces/ci/scaledactionrunners/nope/desired-runners").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let status_object: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status_object["kind"], "Status");
    assert_eq!(status_object["reason"], "NotFound");
    assert_eq!(status_object["code"], 404);
    assert_eq!(status_object["status"], "Failure");
    // Same name in another namespace is another runner.
    let (status, _) = get(
        &state,
        "/apis/custom.metrics.k8s.io/v1beta1/namespaces/frontend/scaledactionrunners/api-linux/desired-runners",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
