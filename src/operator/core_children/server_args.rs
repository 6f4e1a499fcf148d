//! The API server's command line: `serve` with every setting of the core the server uses, plus
//! those of `apiServerExtraArgs` that `serve` accepts.

use std::time::Duration;

use super::validate::Valid;
use super::{RESYNC_LEASE, external_memcached_user, memcache_servers, memcached_name, token_namespace};
use crate::crd::ScaledActionRunnerCoreSpec;
use crate::operator::ports;

/// Where the API server's pod mounts its files.
pub(super) mod paths {
    pub const TLS: &str = "/tls";
    pub const FRONT_PROXY: &str = "/front-proxy";
    pub const DATA: &str = "/data";
    pub const MEMCACHED: &str = "/memcached";
}

/// A duration as `serve` parses it, in the coarsest exact unit.
pub(super) fn duration_arg(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else if duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}ns", duration.as_nanos())
    }
}

/// `serve`'s arguments, carrying every setting of the core that the server uses.
/// Whether `serve` accepts this command line.
fn server_accepts(args: &[String]) -> bool {
    use clap::Parser;
    let command_line = std::iter::once("github-action-autoscaler".to_owned()).chain(args.iter().cloned());
    crate::config::Cli::try_parse_from(command_line).is_ok()
}

/// `apiServerExtraArgs`, one flag at a time (a flag and the values after it): those `serve`
/// accepts after the operator's own, and a warning for each it would refuse (the original
/// server's `--v=4` or `--secure-port`, a typo, a flag the operator already sets). The API
/// server would exit on any of them, so they are left out instead of crash-looping its pods.
fn extra_args(base: &[String], extra: &[String]) -> (Vec<String>, Vec<String>) {
    let mut groups: Vec<Vec<String>> = Vec::new();
    for arg in extra {
        match groups.last_mut() {
            Some(group) if !arg.starts_with('-') => group.push(arg.clone()),
            _ => groups.push(vec![arg.clone()]),
        }
    }
    let (mut kept, mut warnings) = (Vec::new(), Vec::new());
    for group in groups {
        let candidate: Vec<String> = base.iter().chain(&kept).chain(&group).cloned().collect();
        if server_accepts(&candidate) {
            kept.extend(group);
        } else {
            warnings.push(format!(
                "apiServerExtraArgs {:?} is not a flag the API server accepts; left out",
                group.join(" ")
            ));
        }
    }
    (kept, warnings)
}

pub(super) fn api_server_args(spec: &ScaledActionRunnerCoreSpec, valid: &Valid) -> Vec<String> {
    let mut args = base_server_args(spec, valid);
    let (extra, _) = extra_args(&args, &spec.api_server_extra_args);
    args.extend(extra);
    args
}

fn base_server_args(spec: &ScaledActionRunnerCoreSpec, valid: &Valid) -> Vec<String> {
    let store = if spec.create_memcached() {
        let service = memcached_name(spec);
        // One stable DNS name per StatefulSet pod: the client hashes keys over a fixed server list.
        let servers: Vec<String> = (0..spec.memcached_replicas())
            .map(|ordinal| {
                format!("{service}-{ordinal}.{service}.{}.svc:{}", spec.api_server_namespace, ports::MEMCACHED)
            })
            .collect();
        format!("memcached://{}", servers.join(","))
    } else {
        format!("memcached://{}", memcache_servers(spec).join(","))
    };
    let mut args: Vec<String> = [
        "serve",
        "--listen",
        &format!("0.0.0.0:{}", ports::HTTP),
        "--tls-listen",
        &format!("0.0.0.0:{}", ports::TLS),
        "--grpc-listen",
        &format!("0.0.0.0:{}", ports::GRPC),
        "--tls-cert",
        &format!("{}/tls.crt", paths::TLS),
        "--tls-key",
        &format!("{}/tls.key", paths::TLS),
        "--client-ca",
        &format!("{}/ca.crt", paths::TLS),
        "--client-ca",
        &format!("{}/ca.crt", paths::FRONT_PROXY),
        "--data-dir",
        paths::DATA,
        "--store",
        &store,
        "--lease-namespace",
        &spec.api_server_namespace,
        // Pinned, because the lease Role grants updates to this name only.
        "--lease-name",
        RESYNC_LEASE,
        "--cache-window",
        &duration_arg(valid.cache_window),
        "--cache-window-when-empty",
        &duration_arg(valid.cache_window_when_empty),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    if !spec.namespaces.is_empty() {
        args.extend(["--namespaces".to_owned(), spec.namespaces.join(",")]);
    }
    if let Some(namespace) = token_namespace(spec) {
        args.extend(["--token-namespace".to_owned(), namespace.to_owned()]);
    }
    if let Some(user) = external_memcached_user(spec) {
        args.extend([
            "--memcached-user".to_owned(),
            user.to_owned(),
            "--memcached-password-file".to_owned(),
            format!("{}/password", paths::MEMCACHED),
        ]);
    }
    args.extend(["--log-format".to_owned(), "json".to_owned()]);
    args
}

/// A warning for each `apiServerExtraArgs` flag `serve` would refuse.
pub(super) fn unaccepted_extra_args(spec: &ScaledActionRunnerCoreSpec, valid: &Valid) -> Vec<String> {
    let base = base_server_args(spec, valid);
    extra_args(&base, &spec.api_server_extra_args).1
}
