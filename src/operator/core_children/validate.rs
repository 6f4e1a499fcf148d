//! Whether a core's spec can be built: names Kubernetes would refuse, negative counts,
//! unreadable durations and contradictory memcached settings, each named by its field.

use std::time::Duration;

use super::{MAX_STATEFUL_SET_NAME, memcache_servers, memcached_name};
use crate::crd::{DurationError, ScaledActionRunnerCoreSpec};
use crate::operator::SpecError;

/// The parts of a spec that had to be parsed to be checked, kept for building.
pub(super) struct Valid {
    pub(super) cache_window: Duration,
    pub(super) cache_window_when_empty: Duration,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid { field, reason: reason.into() }
}

fn duration(field: &'static str, value: Result<Duration, DurationError>) -> Result<Duration, SpecError> {
    value.map_err(|error| invalid(field, error.to_string()))
}

pub(super) fn validate(spec: &ScaledActionRunnerCoreSpec) -> Result<Valid, SpecError> {
    require_name("apiServerNamespace", &spec.api_server_namespace, NameRule::Label)?;
    // The name is also a Service's, which must start with a letter (DNS-1035).
    require_name("apiServerName", &spec.api_server_name, NameRule::ServiceName)?;
    require_name("sslCertSecret", &spec.ssl_cert_secret, NameRule::Subdomain)?;
    for namespace in &spec.namespaces {
        require_name("namespaces", namespace, NameRule::Label)?;
    }
    for (field, value) in [
        ("apiServerPatTokenNamespace", &spec.api_server_pat_token_namespace),
        ("prometheusNamespace", &spec.prometheus_namespace),
    ] {
        if let Some(namespace) = value.as_deref().filter(|namespace| !namespace.is_empty()) {
            require_name(field, namespace, NameRule::Label)?;
        }
    }
    for (field, replicas) in
        [("apiServerReplicas", spec.api_server_replicas), ("memcachedReplicas", spec.memcached_replicas)]
    {
        if replicas.is_some_and(|replicas| replicas < 0) {
            return Err(invalid(field, "must not be negative"));
        }
    }
    let valid = Valid {
        cache_window: duration("cacheWindow", spec.cache_window())?,
        cache_window_when_empty: duration("cacheWindowWhenEmpty", spec.cache_window_when_empty())?,
    };
    duration("resyncInterval", spec.resync_interval())?;

    if spec.create_memcached() {
        if spec.memcached_auth() {
            return Err(invalid(
                "memcachedAuth",
                "the memcached the operator deploys has no SASL users; set createMemcached: false and point \
                 memcacheServers at a memcached with authentication, or turn memcachedAuth off",
            ));
        }
        if memcached_name(spec).len() > MAX_STATEFUL_SET_NAME {
            return Err(invalid(
                "apiServerName",
                format!(
                    "the memcached StatefulSet {:?} would be longer than {MAX_STATEFUL_SET_NAME} characters",
                    memcached_name(spec)
                ),
            ));
        }
    } else if spec.create_api_server() {
        if memcache_servers(spec).is_empty() {
            return Err(invalid("memcacheServers", "must list host:port of memcached when createMemcached is false"));
        }
        if spec.memcached_auth() {
            if spec.memcache_user().is_none_or(str::is_empty) {
                return Err(invalid("memcacheUser", "is required when memcachedAuth is true"));
            }
            match spec.memcache_creds_secret.as_deref() {
                Some(secret) if !secret.is_empty() => require_name("memcacheCredsSecret", secret, NameRule::Subdomain)?,
                _ => return Err(invalid("memcacheCredsSecret", "is required when memcachedAuth is true")),
            }
        }
    }
    Ok(valid)
}

#[derive(Clone, Copy)]
enum NameRule {
    /// DNS-1123 label: namespaces.
    Label,
    /// DNS-1035 label: Service names.
    ServiceName,
    /// DNS-1123 subdomain: Secrets.
    Subdomain,
}

fn require_name(field: &'static str, value: &str, rule: NameRule) -> Result<(), SpecError> {
    if value.is_empty() {
        return Err(invalid(field, "is required"));
    }
    let (ok, what) = match rule {
        NameRule::Label => {
            (is_dns1123_label(value), "a DNS-1123 label (lower-case letters, digits and '-', at most 63)")
        }
        NameRule::ServiceName => (
            is_dns1123_label(value) && value.starts_with(|c: char| c.is_ascii_lowercase()),
            "a DNS-1035 label (a lower-case letter, then letters, digits and '-', at most 63)",
        ),
        NameRule::Subdomain => (is_dns1123_subdomain(value), "a DNS-1123 subdomain (lower-case, at most 253)"),
    };
    if ok { Ok(()) } else { Err(invalid(field, format!("{value:?} is not {what}"))) }
}

fn is_dns1123_label(value: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&value.len())
        && value.chars().all(|c| alphanumeric(c) || c == '-')
        && value.starts_with(alphanumeric)
        && value.ends_with(alphanumeric)
}

fn is_dns1123_subdomain(value: &str) -> bool {
    value.len() <= 253 && value.split('.').all(is_dns1123_label)
}
