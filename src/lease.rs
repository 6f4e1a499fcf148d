//! Leader election on a Kubernetes Lease, so only one API server replica resyncs from GitHub
//! and the replicas do not pay GitHub twice. Standalone (no lease configured) a replica always
//! leads.
//!
//! The protocol is the one client-go uses: the holder renews `renewTime` well within
//! `leaseDurationSeconds`; anyone may take a lease whose record has not changed for that long.
//! "For that long" is measured on the observer's clock from when it saw the record change, never
//! by comparing the holder's `renewTime` with its own clock: with clocks apart, a live holder
//! would look expired (two replicas resyncing at once) or a dead one alive for too long.
//! Every write carries the `resourceVersion` it read, so of two replicas racing for an expired
//! lease exactly one wins (the other gets 409 Conflict).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's name (the pod name).
    pub identity: String,
    /// How long a holder that stops renewing keeps the lease.
    pub duration: Duration,
    /// How often the holder renews, and others retry.
    pub renew_every: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease {namespace}/{name}: {source}")]
    Api { namespace: String, name: String, source: kube::Error },
}

fn micro_time(unix_seconds: i64) -> Option<MicroTime> {
    jiff::Timestamp::from_second(unix_seconds).ok().map(MicroTime)
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// The lease record as this replica last saw it, and when that was by this replica's clock.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    record: Option<LeaseSpec>,
    at: i64,
}

impl Observed {
    /// Notes the record read at `now`; the time moves only when the record changed.
    fn saw(&mut self, record: &LeaseSpec, now: i64) {
        if self.record.as_ref() != Some(record) {
            self.record = Some(record.clone());
            self.at = now;
        }
    }

    /// Whether the record last seen may be taken at `now` by someone else than its holder:
    /// it has no holder, or it has not changed for its duration on our clock.
    fn expired(&self, now: i64) -> bool {
        let Some(spec) = &self.record else { return true };
        if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
            return true;
        }
        let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
        self.at.saturating_add(duration) <= now
    }
}

/// One election round at `now` (unix seconds, our clock): creates, renews or takes over the
/// lease when allowed. `observed` carries what earlier rounds saw; keep it between rounds.
/// Returns whether this replica holds the lease afterwards.
pub async fn try_lead(
    api: &Api<Lease>,
    config: &LeaseConfig,
    observed: &mut Observed,
    now: i64,
) -> Result<bool, LeaseError> {
    let api_error = |source| LeaseError::Api { namespace: config.namespace.clone(), name: config.name.clone(), source };
    let duration = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX);
    let current = match api.get_opt(&config.name).await {
        Ok(current) => current,
        Err(e) => return Err(api_error(e)),
    };
    let Some(mut lease) = current else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(duration),
                acquire_time: micro_time(now),
                renew_time: micro_time(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(created) => {
                observed.saw(created.spec.as_ref().unwrap_or(&LeaseSpec::default()), now);
                Ok(true)
            }
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(api_error(e)),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    observed.saw(spec, now);
    let ours = spec.holder_identity.as_deref() == Some(config.identity.as_str());
    if !ours && !observed.expired(now) {
        return Ok(false);
    }
    if !ours {
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = micro_time(now);
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = micro_time(now);
    spec.lease_duration_seconds = Some(duration);
    // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
    match api.replace(&config.name, &PostParams::default(), &lease).await {
        Ok(written) => {
            observed.saw(written.spec.as_ref().unwrap_or(&LeaseSpec::default()), now);
            Ok(true)
        }
        Err(e) if is_status(&e, 409) => Ok(false),
        Err(e) => Err(api_error(e)),
    }
}

/// Keeps electing until `stop`; publishes whether this replica leads. On errors it stops
/// leading (another replica may have taken over) and retries.
pub async fn run(
    api: Api<Lease>,
    config: LeaseConfig,
    clock: crate::clock::Clock,
    leading: watch::Sender<bool>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut observed = Observed::default();
    loop {
        let lead = match try_lead(&api, &config, &mut observed, clock()).await {
            Ok(lead) => lead,
            Err(error) => {
                tracing::warn!(%error, "lease election failed; not resyncing until it succeeds");
                false
            }
        };
        if *leading.borrow() != lead {
            tracing::info!(identity = %config.identity, lead, "resync leadership changed");
        }
        leading.send_replace(lead);
        tokio::select! {
            () = tokio::time::sleep(config.renew_every) => {}
            () = stop.cancelled() => return,
        }
    }
}

impl From<&crate::config::LeaseArgs> for Option<LeaseConfig> {
    /// No namespace (standalone): no lease, this process always resyncs.
    fn from(args: &crate::config::LeaseArgs) -> Self {
        let namespace = args.lease_namespace.as_ref()?;
        Some(LeaseConfig::new(namespace.clone(), args.lease_name.clone(), args.identity()))
    }
}
