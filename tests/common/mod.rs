//! Helpers shared by the integration tests: signed deliveries, a runner catalog, a server state.
#![allow(dead_code)]

pub mod app_keys;
pub mod fake_github;
pub mod memcached;
pub mod pki;
pub mod resync;
pub mod rng;
pub mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gaa::catalog::Catalog;
use gaa::http::AppState;
use gaa::manifests::Manifests;
use gaa::metrics::Metrics;
use gaa::store::{StoreHandle, WriterConfig};
use gaa::webhook::secret_bytes;
use gaa::webhook::signature::sign;
use serde_json::{Value, json};

pub const API_SECRET: &str = "api-webhook-secret";
pub const WEB_SECRET: &str = "web-webhook-secret";
pub const ORG_SECRET: &str = "organisation-secret";

/// Runners of two repositories: `acme/api` has a plain linux runner and a GPU runner (its
/// secret as stringData), `acme/web` one runner (its secret as base64 data).
pub const MANIFESTS: &str = r#"
apiVersion: runner.devjoes.com/v1alpha1
kind: ScaledActionRunner
metadata: {name: api-linux, namespace: ci}
spec:
  owner: acme
  repo: api
  maxRunners: 10
  scaleFactor: "0"
  webhookSecret: api-hook
  runner: {runnerLabels: "linux"}
---
apiVersion: runner.devjoes.com/v1alpha1
kind: ScaledActionRunner
metadata: {name: api-gpu, namespace: ci}
spec:
  owner: acme
  repo: api
  maxRunners: 2
  scaleFactor: "0"
  webhookSecret: api-hook
  runner: {runnerLabels: "linux,gpu"}
---
apiVersion: runner.devjoes.com/v1alpha1
kind: ScaledActionRunner
metadata: {name: web, namespace: frontend}
spec:
  owner: acme
  repo: web
  maxRunners: 3
  minRunners: 1
  webhookSecret: web-hook
  runner: {runnerLabels: "linux"}
---
apiVersion: v1
kind: Secret
metadata: {name: api-hook, namespace: ci}
stringData: {webhook-secret: api-webhook-secret}
---
apiVersion: v1
kind: Secret
metadata: {name: web-hook, namespace: frontend}
data: {webhook-secret: d2ViLXdlYmhvb2stc2VjcmV0}
"#;

pub fn catalog(organisation: Option<&str>) -> Catalog {
    let mut manifests = Manifests::default();
    manifests.add_file(Path::new("test.yaml"), MANIFESTS);
    assert!(manifests.problems.is_empty(), "{:?}", manifests.problems);
    let (catalog, problems) = Catalog::build(
        manifests.runners.iter().map(|l| &l.object),
        manifests.secrets.iter().map(|l| &l.object),
        organisation.map(secret_bytes),
    );
    assert!(problems.is_empty(), "{problems:?}");
    catalog
}

/// A server state over a fresh journal in `dir`.
pub async fn state(dir: &Path, organisation: Option<&str>) -> AppState {
    state_with(dir, organisation, WriterConfig::default())
}

/// A server state over a fresh journal in `dir`, its writer configured by `config`.
pub fn state_with(dir: &Path, organisation: Option<&str>, config: WriterConfig) -> AppState {
    let catalog = catalog(organisation);
    let metrics = Arc::new(Metrics::new());
    let store = StoreHandle::start(dir, catalog.runners, config, metrics.clone()).unwrap();
    AppState::new(store, metrics, catalog.secrets, 0)
}

/// A `workflow_job` payload as GitHub shapes it (the fields we read, and some we do not).
pub fn job_payload(repo: &str, job_id: u64, action: &str, labels: &[&str]) -> Value {
    let repo_id = if repo == "acme/api" { 1001 } else { 2002 };
    json!({
        "action": action,
        "workflow_job": {
            "id": job_id,
            "run_id": job_id / 10 + 1,
            "run_attempt": 1,
            "status": action,
            "conclusion": if action == "completed" { json!("success") } else { Value::Null },
            "labels": labels,
            "created_at": seconds_ago(60),
            "started_at": seconds_ago(55),
            "runner_id": Value::Null,
            "name": "build",
        },
        "repository": {"id": repo_id, "full_name": repo, "name": repo.split('/').nth(1)},
        "sender": {"login": "octocat"},
    })
}

/// An RFC 3339 time `seconds` before now: job times in test data are always relative to the day
/// the test runs, because the server ends jobs GitHub itself would have cancelled by now.
pub fn seconds_ago(seconds: i64) -> String {
    let then = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(seconds);
    then.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn signature(secret: &str, body: &[u8]) -> String {
    sign(secret.as_bytes(), body)
}

/// Every `.rs` file under `dir`, at any depth.
pub fn rust_sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            found.extend(rust_sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}
