//! github-action-autoscaler: per-repository GitHub Actions runner autoscaling driven by
//! `workflow_job` webhooks.

pub mod api;
pub mod catalog;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod crd;
pub mod demand;
pub mod github;
pub mod http;
pub mod jit;
pub mod lease;
pub mod manifests;
pub mod metrics;
pub mod metrics_api;
pub mod onboard;
pub mod operator;
pub mod serve;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod webhook;
