//! `custom.metrics.k8s.io` (`v1beta1` and `v1beta2`), as the original project served it, for
//! plain HPAs through an APIService: discovery, and metric values of ScaledActionRunners.
//!
//! Metrics per runner: `desired-runners` (what KEDA and HPAs scale on; also served under the
//! runner's own name, the original project's metric name), `demand`, `queued`, `in-progress`.
//! `*` as the runner name or the metric means all. `labelSelector` (and `metricLabelSelector`)
//! filter runners by the labels the original put on its metric items (`cr_name`, `cr_namespace`,
//! `cr_owner`, `cr_repo`), in Kubernetes' selector grammar; an invalid one is a 400 `Status`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::demand::{RunnerDemand, RunnerKey};
use crate::store::Board;

mod selector;
use selector::Selector;

pub const GROUP: &str = "custom.metrics.k8s.io";
const RESOURCE: &str = "scaledactionrunners";
const RESOURCE_GROUP: &str = "scaledactionrunners.runner.devjoes.com";
const METRICS: [&str; 4] = ["desired-runners", "demand", "queued", "in-progress"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1beta1,
    V1beta2,
}

impl Version {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "v1beta1" => Some(Self::V1beta1),
            "v1beta2" => Some(Self::V1beta2),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::V1beta1 => "v1beta1",
            Self::V1beta2 => "v1beta2",
        }
    }
}

/// A Kubernetes `Status` error, as the API server answers.
fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, Json(body)).into_response()
}

fn not_found(message: String) -> Response {
    status(StatusCode::NOT_FOUND, "NotFound", message)
}

fn bad_request(message: String) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// The routes, to be mounted at the root of the TLS listener; they read only the board.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Board>: FromRef<S>,
{
    Router::new()
        .route("/apis/custom.metrics.k8s.io", get(group))
        .route("/apis/custom.metrics.k8s.io/{version}", get(discovery))
        .route("/apis/custom.metrics.k8s.io/{version}/namespaces/{namespace}/{resource}/{name}/{metric}", get(values))
}

async fn group() -> Response {
    let versions: Vec<Value> = [Version::V1beta2, Version::V1beta1]
        .iter()
        .map(|v| json!({"groupVersion": format!("{GROUP}/{}", v.as_str()), "version": v.as_str()}))
        .collect();
    Json(json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": GROUP,
        "versions": versions, "preferredVersion": versions[0],
    }))
    .into_response()
}

async fn discovery(Path(version): Path<String>) -> Response {
    let Some(version) = Version::parse(&version) else {
        return not_found(format!("the server could not find {GROUP}/{version}"));
    };
    let resources: Vec<Value> = METRICS
        .iter()
        .map(|metric| {
            json!({
                "name": format!("{RESOURCE_GROUP}/{metric}"), "singularName": "", "namespaced": true,
                "kind": "MetricValueList", "verbs": ["get"],
            })
        })
        .collect();
    Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{}", version.as_str()), "resources": resources,
    }))
    .into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Selectors {
    label_selector: Option<String>,
    /// Every metric here carries its runner's labels, so this filters the same way.
    metric_label_selector: Option<String>,
}

/// The labels the original project put on metric items, borrowed from the runner's view.
#[derive(Serialize)]
struct ItemLabels<'a> {
    cr_name: &'a str,
    cr_namespace: &'a str,
    cr_owner: &'a str,
    cr_repo: &'a str,
}

impl<'a> ItemLabels<'a> {
    fn of(view: &'a RunnerDemand) -> Self {
        let (owner, repo) = view.repository.split_once('/').unwrap_or((view.repository.as_str(), ""));
        Self { cr_name: &view.name, cr_namespace: &view.namespace, cr_owner: owner, cr_repo: repo }
    }

    /// As selectors read them.
    fn map(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("cr_name".to_string(), self.cr_name.to_string()),
            ("cr_namespace".to_string(), self.cr_namespace.to_string()),
            ("cr_owner".to_string(), self.cr_owner.to_string()),
            ("cr_repo".to_string(), self.cr_repo.to_string()),
        ])
    }
}

// A MetricValueList, written straight from the runners' views (fields in the order the API
// server writes them).

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MetricValueList<'a> {
    kind: &'static str,
    api_version: String,
    metadata: Empty,
    items: Vec<MetricValue<'a>>,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DescribedObject<'a> {
    kind: &'static str,
    namespace: &'a str,
    name: &'a str,
    api_version: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LabelSelector<'a> {
    match_labels: &'a ItemLabels<'a>,
}

#[derive(Serialize)]
struct MetricIdentifier<'a> {
    name: &'a str,
    selector: LabelSelector<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum MetricValue<'a> {
    #[serde(rename_all = "camelCase")]
    V1beta1 {
        described_object: DescribedObject<'a>,
        metric_name: &'a str,
        timestamp: &'a str,
        value: String,
        selector: LabelSelector<'a>,
    },
    #[serde(rename_all = "camelCase")]
    V1beta2 {
        described_object: DescribedObject<'a>,
        metric: MetricIdentifier<'a>,
        timestamp: &'a str,
        window_seconds: u32,
        value: String,
    },
}

fn metric_value(view: &RunnerDemand, metric: &str) -> Option<u64> {
    match metric {
        "desired-runners" => Some(u64::from(view.value)),
        "demand" => Some(view.demand),
        "queued" => Some(view.queued),
        "in-progress" => Some(view.in_progress),
        // The original project named the metric after the runner.
        other if other == view.name => Some(u64::from(view.value)),
        _ => None,
    }
}

async fn values(
    State(board): State<Arc<Board>>,
    Path((version, namespace, resource, name, metric)): Path<(String, String, String, String, String)>,
    Query(selectors): Query<Selectors>,
) -> Response {
    let Some(version) = Version::parse(&version) else {
        return not_found(format!("the server could not find {GROUP}/{version}"));
    };
    let resource_lower = resource.to_ascii_lowercase();
    if resource_lower != RESOURCE && resource_lower != RESOURCE_GROUP {
        return not_found(format!("the server could not find the metric {metric} for {resource}"));
    }
    // Parsed before anything is looked up: an invalid selector is the caller's error, as the
    // API server answers it, not a selector that matches nothing.
    let parse = |text: Option<&str>| Selector::parse(text.unwrap_or_default());
    let (label_selector, metric_selector) =
        match (parse(selectors.label_selector.as_deref()), parse(selectors.metric_label_selector.as_deref())) {
            (Ok(label), Ok(metric)) => (label, metric),
            (Err(error), _) | (_, Err(error)) => return bad_request(error.to_string()),
        };
    // Looked up by namespace (and name): the other runners are neither copied nor visited.
    let candidates = match name.as_str() {
        "*" => board.namespace(&namespace),
        name => board.get(&RunnerKey::new(namespace.as_str(), name)).into_iter().collect(),
    };
    let selecting = !(label_selector.is_empty() && metric_selector.is_empty());
    let runners: Vec<RunnerDemand> = candidates
        .into_iter()
        .filter(|v| {
            if !selecting {
                return true;
            }
            let labels = ItemLabels::of(v).map();
            label_selector.matches(&labels) && metric_selector.matches(&labels)
        })
        .collect();
    if runners.is_empty() && name != "*" {
        return not_found(format!("{RESOURCE_GROUP} \"{name}\" not found in namespace \"{namespace}\""));
    }
    let timestamp = jiff::Timestamp::now().round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_default();
    let labels: Vec<ItemLabels<'_>> = runners.iter().map(ItemLabels::of).collect();
    let names: Vec<&str> = if metric == "*" { METRICS.to_vec() } else { vec![metric.as_str()] };
    let mut items = Vec::new();
    for (view, labels) in runners.iter().zip(&labels) {
        for metric_name in names.iter().copied() {
            let Some(value) = metric_value(view, metric_name) else { continue };
            let described_object = DescribedObject {
                kind: "ScaledActionRunner",
                namespace: &view.namespace,
                name: &view.name,
                api_version: "runner.devjoes.com/v1alpha1",
            };
            let selector = LabelSelector { match_labels: labels };
            let value = value.to_string();
            items.push(match version {
                Version::V1beta1 => {
                    MetricValue::V1beta1 { described_object, metric_name, timestamp: &timestamp, value, selector }
                }
                Version::V1beta2 => MetricValue::V1beta2 {
                    described_object,
                    metric: MetricIdentifier { name: metric_name, selector },
                    timestamp: &timestamp,
                    window_seconds: 0,
                    value,
                },
            });
        }
    }
    if items.is_empty() && name != "*" {
        return not_found(format!("the server could not find the metric {metric} for {RESOURCE_GROUP} {name}"));
    }
    let api_version = format!("{GROUP}/{}", version.as_str());
    Json(MetricValueList { kind: "MetricValueList", api_version, metadata: Empty {}, items }).into_response()
}
