//! Demand into status: a periodic task reads each runner's demand from the API server and
//! writes it into the runner's status when it changed, apart from the reconcile, so that a
//! reconcile makes no HTTP call and an idle cluster sees no writes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde::Deserialize;

use super::context::Context;
use super::runner::RunnerObject;
use super::status::write_status;
use crate::crd::{ScaledActionRunner, ScaledActionRunnerStatus};
use crate::operator::ApiServer;
use crate::operator::render::CA_KEY;

/// How often every runner's demand is read and, when it changed, written.
pub const DEMAND_REFRESH: Duration = Duration::from_secs(60);

/// The fields of the API server's runner view that the runner's status shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DemandView {
    pub demand: Option<i64>,
    pub queued: Option<i64>,
    pub in_progress: Option<i64>,
    pub desired_runners: Option<i32>,
    pub last_resync_time: Option<String>,
    pub last_drift: Option<i64>,
    pub registered_runners: Option<i32>,
    pub busy_runners: Option<i32>,
}

impl DemandView {
    /// Sets what the view knows; what it does not know keeps its last value.
    fn write_into(&self, status: &mut ScaledActionRunnerStatus) {
        fn known<T: Clone>(value: &Option<T>, into: &mut Option<T>) {
            if value.is_some() {
                into.clone_from(value);
            }
        }
        known(&self.demand, &mut status.demand);
        known(&self.queued, &mut status.queued);
        known(&self.in_progress, &mut status.in_progress);
        known(&self.desired_runners, &mut status.desired_runners);
        known(&self.last_resync_time, &mut status.last_resync_time);
        known(&self.last_drift, &mut status.last_drift);
        known(&self.registered_runners, &mut status.registered_runners);
        known(&self.busy_runners, &mut status.busy_runners);
    }
}

/// Writes every runner's demand into its status each [`DEMAND_REFRESH`], until `stop`.
pub async fn run_demand_task(
    ctx: Arc<Context>,
    runners: Store<RunnerObject>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut ticks = tokio::time::interval(DEMAND_REFRESH);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => publish_demand(&ctx, &runners.state()).await,
            () = stop.cancelled() => return,
        }
    }
}

/// Writes each runner's demand, as the API server counts it, into its status; a runner whose
/// status already says it is not written.
pub async fn publish_demand(ctx: &Context, runners: &[Arc<RunnerObject>]) {
    let (Some(reader), Ok(Some(core))) = (&ctx.demand, ctx.core()) else {
        return;
    };
    let api_server = ApiServer::from_core(&core.spec);
    for object in runners {
        let Ok(runner) = &object.0 else {
            continue;
        };
        let (Some(namespace), name) = (runner.namespace(), runner.name_any()) else {
            continue;
        };
        let Some(view) = reader.read(&ctx.client, &api_server, &core.spec.ssl_cert_secret, &namespace, &name).await
        else {
            continue;
        };
        let written = write_status::<ScaledActionRunner, ScaledActionRunnerStatus>(
            &ctx.client,
            runner,
            runner.status.as_ref(),
            |status| view.write_into(status),
        )
        .await;
        if let Err(error) = written {
            tracing::warn!(runner = %format!("{namespace}/{name}"), %error, "could not write the runner's demand");
        }
    }
}

/// Reads a runner's demand from the API server's read API, for the runner's status.
///
/// In a cluster over the API server's mutual-TLS port, presenting the core's `sslCertSecret`
/// certificate (its plain port serves no reads); the client is rebuilt when the Secret changes.
#[derive(Debug, Clone)]
pub struct DemandReader {
    http: reqwest::Client,
    /// Base URL used instead of the API server's Service (tests); `http://` reads without a
    /// certificate.
    base: Option<String>,
    /// The mutual-TLS client and a digest of the Secret data it was built from.
    tls: Arc<Mutex<Option<CertifiedClient>>>,
}

/// A client presenting a certificate, and the digest of the Secret data it was built from.
type CertifiedClient = ([u8; 32], reqwest::Client);

/// How long one read of demand may take.
const DEMAND_READ_TIMEOUT: Duration = Duration::from_secs(3);

impl DemandReader {
    pub fn new(base: Option<String>) -> Self {
        crate::github::client::install_crypto_provider();
        let http = reqwest::Client::builder().timeout(DEMAND_READ_TIMEOUT).build().unwrap_or_default();
        Self { http, base, tls: Arc::default() }
    }

    /// The runner's demand as the API server counts it, or None when the API server cannot
    /// say (it is starting, or unreachable, or the certificate Secret is not there yet).
    pub async fn read(
        &self,
        client: &Client,
        api_server: &ApiServer,
        cert_secret: &str,
        namespace: &str,
        name: &str,
    ) -> Option<DemandView> {
        let path = format!("/api/v1/namespaces/{namespace}/scaledactionrunners/{name}");
        let base = match &self.base {
            Some(base) => base.clone(),
            None => format!("https://{}:{}", api_server.host(), crate::operator::ports::TLS),
        };
        let http = if base.starts_with("https://") {
            let secret = Api::<Secret>::namespaced(client.clone(), &api_server.namespace)
                .get_opt(cert_secret)
                .await
                .ok()
                .flatten()?;
            self.tls_client(&secret)?
        } else {
            self.http.clone()
        };
        let request = http.get(format!("{base}{path}"));
        let answer = request.send().await.ok()?;
        if !answer.status().is_success() {
            return None;
        }
        answer.json().await.ok()
    }

    /// A client trusting the Secret's `ca.crt` and presenting its `tls.crt`/`tls.key`.
    fn tls_client(&self, secret: &Secret) -> Option<reqwest::Client> {
        use sha2::Digest as _;
        let data = secret.data.as_ref()?;
        let [cert, key, ca] = ["tls.crt", "tls.key", CA_KEY].map(|key| data.get(key).map(|bytes| bytes.0.as_slice()));
        let (cert, key, ca) = (cert?, key?, ca?);
        let mut digest = sha2::Sha256::new();
        for part in [cert, key, ca] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part);
        }
        let digest: [u8; 32] = digest.finalize().into();
        let mut cached = self.tls.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((seen, http)) = cached.as_ref()
            && *seen == digest
        {
            return Some(http.clone());
        }
        let identity = reqwest::Identity::from_pem(&[cert, b"\n", key].concat()).ok()?;
        let roots = reqwest::Certificate::from_pem_bundle(ca).ok()?;
        let http = reqwest::Client::builder()
            .timeout(DEMAND_READ_TIMEOUT)
            .tls_certs_only(roots)
            .identity(identity)
            .build()
            .ok()?;
        *cached = Some((digest, http.clone()));
        Some(http)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_apis_view_reaches_the_status_and_what_it_does_not_say_keeps_its_last_value() {
        // As serve answers for an ephemeral runner (the read API's camelCase fields).
        let view: DemandView = serde_json::from_value(serde_json::json!({
            "demand": 3, "queued": 1, "inProgress": 2, "desiredRunners": 3,
            "registeredRunners": 4, "busyRunners": 2, "scope": "repository"
        }))
        .unwrap();
        let mut status = ScaledActionRunnerStatus { last_drift: Some(5), ..ScaledActionRunnerStatus::default() };
        view.write_into(&mut status);
        assert_eq!((status.demand, status.queued, status.in_progress), (Some(3), Some(1), Some(2)));
        assert_eq!((status.registered_runners, status.busy_runners), (Some(4), Some(2)));
        assert_eq!(status.last_drift, Some(5), "a field the view leaves out keeps its value");
        // A runner that is not ephemeral: no registration counts in the view, none in the status.
        let plain: DemandView = serde_json::from_value(serde_json::json!({"demand": 0})).unwrap();
        let mut status = ScaledActionRunnerStatus::default();
        plain.write_into(&mut status);
        assert_eq!((status.registered_runners, status.busy_runners), (None, None));
    }
}
