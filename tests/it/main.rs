//! Every integration test, in one binary: one link instead of one per file. Each module is
//! what used to be a file of its own under `tests/`; `tests/common` is shared by all of them
//! (and by the end-to-end suite, `tests/e2e`, which runs against a real control plane).

#[path = "../common/mod.rs"]
mod common;

mod architecture;
mod cluster_serve;
mod crds;
mod custom_metrics;
mod deploy;
mod durability;
mod external_scaler;
mod fake_github;
mod github_app;
mod github_client;
mod github_jit;
mod github_org;
mod group_commit;
mod jit;
mod journal_compaction;
mod keda_process;
mod lease;
mod listeners;
mod memcached_client;
mod memcached_store;
mod onboard;
mod operator;
mod ordering;
mod organisation;
mod process;
mod reconciler;
mod runner_groups;
mod shared_sync;
mod test_data;
mod tls;
mod webhook_router;
