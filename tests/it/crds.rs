//! The CustomResourceDefinitions: the checked-in YAML is current, manifests written for the
//! original operator survive the schema and parse, durations parse, and the schema is
//! structural.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gaa::crd::{
    DEFAULT_CACHE_WINDOW, DEFAULT_FORCE_SCALE_UP_FREQUENCY, DEFAULT_FORCE_SCALE_UP_WINDOW, DurationError, GoDuration,
    ScaledActionRunner, ScaledActionRunnerCore, ScaledActionRunnerStatus, Scope, crds_yaml, parse_duration,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResourceExt;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn Error>>;

const CHECKED_IN_CRDS: &str = "crds/runner.devjoes.com.yaml";

fn crate_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

// ---------------------------------------------------------------------------------------------
// The checked-in YAML
// ---------------------------------------------------------------------------------------------

#[test]
fn checked_in_crd_yaml_is_what_the_types_generate() -> TestResult {
    let generated = crds_yaml()?;
    let checked_in = std::fs::read_to_string(crate_path(CHECKED_IN_CRDS)).unwrap_or_default();
    let first_difference = checked_in.lines().zip(generated.lines()).position(|(old, new)| old != new).map_or_else(
        || "the files differ in length".to_owned(),
        |line| format!("first difference at line {}", line + 1),
    );
    assert!(
        checked_in == generated,
        "{CHECKED_IN_CRDS} is stale ({first_difference}); regenerate it with \
         `cargo run -- crds > {CHECKED_IN_CRDS}`"
    );
    Ok(())
}

#[test]
fn generated_yaml_is_two_documents_core_first_and_stable() -> TestResult {
    let yaml = crds_yaml()?;
    assert_eq!(yaml, crds_yaml()?);
    assert!(yaml.starts_with("---\n"));
    let crds: Vec<CustomResourceDefinition> = serde_saphyr::from_multiple(&yaml)?;
    let names: Vec<_> = crds.iter().map(|crd| crd.metadata.name.clone()).collect();
    assert_eq!(
        names,
        [
            Some("scaledactionrunnercore.runner.devjoes.com".to_owned()),
            Some("scaledactionrunners.runner.devjoes.com".to_owned()),
        ]
    );
    assert_eq!(crds[0], ScaledActionRunnerCore::crd());
    assert_eq!(crds[1], ScaledActionRunner::crd());
    Ok(())
}

#[test]
fn core_crd_keeps_the_original_singular_plural_so_clusters_upgrade_in_place() {
    let crd = ScaledActionRunnerCore::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("scaledactionrunnercore.runner.devjoes.com"));
    assert_eq!(crd.spec.group, "runner.devjoes.com");
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(crd.spec.names.plural, "scaledactionrunnercore");
    assert_eq!(crd.spec.names.short_names, Some(vec!["sarc".to_owned()]));
    assert_eq!(crd.spec.versions[0].name, "v1alpha1");
    assert!(has_status_subresource(&crd));
    assert_eq!(
        printer_columns(&crd),
        [
            ("API Server Namespace", ".spec.apiServerNamespace"),
            ("Ready", r#".status.conditions[?(@.type=="Ready")].status"#),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
}

#[test]
fn runner_crd_is_namespaced_with_short_name_sar_and_demand_columns() {
    let crd = ScaledActionRunner::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("scaledactionrunners.runner.devjoes.com"));
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["sar".to_owned()]));
    assert!(has_status_subresource(&crd));
    assert_eq!(
        printer_columns(&crd),
        [
            ("Owner", ".spec.owner"),
            ("Repo", ".spec.repo"),
            ("Scope", ".status.scope"),
            ("Group", ".spec.runnerGroup"),
            ("Demand", ".status.demand"),
            ("Desired", ".status.desiredRunners"),
            ("Replicas", ".status.replicas"),
            ("Ready", r#".status.conditions[?(@.type=="Ready")].status"#),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
}

fn has_status_subresource(crd: &CustomResourceDefinition) -> bool {
    crd.spec.versions[0].subresources.as_ref().is_some_and(|subresources| subresources.status.is_some())
}

fn printer_columns(crd: &CustomResourceDefinition) -> Vec<(&str, &str)> {
    crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|column| (column.name.as_str(), column.json_path.as_str()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Manifests written for the original operator
// ---------------------------------------------------------------------------------------------

/// The documents of a fixture, each as the API server would store it: checked against the
/// CRD's schema (nothing pruned, every type right), then deserialized from JSON.
fn admitted<K>(fixture: &str) -> Result<Vec<K>, Box<dyn Error>>
where
    K: DeserializeOwned + CustomResourceExt,
{
    let text = std::fs::read_to_string(crate_path(&format!("fixtures/original/{fixture}")))?;
    let documents: Vec<Value> = serde_saphyr::from_multiple(&text)?;
    let schema = openapi_schema(&K::crd())?;
    let mut objects = Vec::new();
    for (index, document) in documents.into_iter().enumerate() {
        let problems = schema_violations(&document, &schema);
        assert!(problems.is_empty(), "{fixture} document {index} would not be stored unchanged: {problems:#?}");
        objects.push(serde_json::from_value(document)?);
    }
    Ok(objects)
}

fn only<K>(mut objects: Vec<K>) -> Result<K, Box<dyn Error>> {
    match (objects.pop(), objects.is_empty()) {
        (Some(object), true) => Ok(object),
        _ => Err("expected exactly one document".into()),
    }
}

#[test]
fn example_core_from_the_original_readme_parses_with_defaults() -> TestResult {
    let core: ScaledActionRunnerCore = only(admitted("core-example.yaml")?)?;
    let spec = &core.spec;
    assert_eq!(core.metadata.name.as_deref(), Some("core"));
    assert_eq!(spec.api_server_name, "metrics");
    assert_eq!(spec.api_server_namespace, "github");
    assert_eq!(spec.ssl_cert_secret, "tls-cert");
    assert_eq!(spec.prometheus_namespace.as_deref(), Some("monitoring"));
    assert!(spec.create_api_server() && spec.create_memcached() && spec.create_authentication());
    assert_eq!(spec.api_server_replicas(), 2);
    assert_eq!(spec.memcached_replicas(), 2);
    assert_eq!(spec.keda_namespace(), "keda");
    assert!(!spec.memcached_auth());
    assert_eq!(spec.memcache_user(), None);
    assert_eq!(spec.cache_window()?, DEFAULT_CACHE_WINDOW);
    assert_eq!(spec.cache_window_when_empty()?, Duration::from_secs(1800));
    assert_eq!(spec.resync_interval()?, Duration::from_secs(60));
    assert_eq!(core.status, None);
    Ok(())
}

#[test]
fn core_with_every_crd_field_parses_durations_as_nanoseconds() -> TestResult {
    let core: ScaledActionRunnerCore = only(admitted("core-crd-spellings.yaml")?)?;
    let spec = &core.spec;
    assert_eq!(spec.api_server_replicas(), 3);
    assert_eq!(spec.api_server_extra_args, ["--v=4", "--secure-port=6443"]);
    assert!(spec.create_api_server());
    assert!(!spec.create_memcached());
    assert!(!spec.create_authentication());
    assert_eq!(spec.memcached_replicas(), 1);
    assert_eq!(spec.keda_namespace(), "keda-system");
    assert!(spec.memcached_auth());
    assert_eq!(spec.memcache_user(), Some("autoscaler"));
    assert_eq!(spec.memcache_servers.as_deref(), Some("memcached-0.cache:11211,memcached-1.cache:11211"));
    assert_eq!(spec.cache_window, Some(GoDuration::Nanoseconds(30_000_000_000)));
    assert_eq!(spec.cache_window()?, Duration::from_secs(30));
    assert_eq!(spec.cache_window_when_empty()?, Duration::from_secs(300));
    assert_eq!(spec.resync_interval()?, Duration::from_secs(90));
    assert_eq!(spec.namespaces, ["team-a", "team-b"]);
    assert_eq!(core.status, Some(Default::default()));
    Ok(())
}

#[test]
fn core_with_readme_spellings_merges_them_and_parses_string_durations() -> TestResult {
    let core: ScaledActionRunnerCore = only(admitted("core-readme-spellings.yaml")?)?;
    let spec = &core.spec;
    assert_eq!(spec.memcache_user, None);
    assert_eq!(spec.memcache_user(), Some("readme-user"));
    assert_eq!(spec.memcached_auth, None);
    assert!(spec.memcached_auth());
    assert_eq!(spec.api_server_pat_token_namespace.as_deref(), Some("github-tokens"));
    assert_eq!(spec.cache_window, Some(GoDuration::from("1m")));
    assert_eq!(spec.cache_window()?, Duration::from_secs(60));
    assert_eq!(spec.cache_window_when_empty()?, Duration::from_secs(150));
    assert_eq!(spec.resync_interval()?, Duration::from_secs(5_400));
    Ok(())
}

#[test]
fn crd_spelling_wins_when_both_core_spellings_are_set() -> TestResult {
    let core: ScaledActionRunnerCore = serde_json::from_value(json!({
        "apiVersion": "runner.devjoes.com/v1alpha1",
        "kind": "ScaledActionRunnerCore",
        "metadata": {"name": "core"},
        "spec": {
            "apiServerName": "metrics", "apiServerNamespace": "github", "sslCertSecret": "tls",
            "memcacheUser": "crd", "memcachedUser": "readme",
            "memcachedAuth": false, "MemcachedAuth": true,
            "cacheWindow": 0,
        }
    }))?;
    assert_eq!(core.spec.memcache_user(), Some("crd"));
    assert!(!core.spec.memcached_auth());
    assert_eq!(core.spec.cache_window()?, DEFAULT_CACHE_WINDOW);
    Ok(())
}

#[test]
fn runner_written_by_add_runner_parses_with_its_secrets_labels_and_selector() -> TestResult {
    let runner: ScaledActionRunner = only(admitted("runner-add-runner.yaml")?)?;
    let spec = &runner.spec;
    assert_eq!(runner.metadata.namespace.as_deref(), Some("example-repo"));
    assert_eq!((spec.owner.as_str(), spec.repository().unwrap_or_default()), ("devjoes", "example-repo"));
    assert_eq!(spec.max_runners, 4);
    assert_eq!(spec.min_runners(), 0);
    assert_eq!(spec.github_token_secret.as_deref(), Some("example-repo"));
    assert_eq!(spec.runner_secrets, ["example-repo-0", "example-repo-1", "example-repo-2", "example-repo-3"]);
    assert_eq!(spec.runner_labels(), ["self-hosted", "linux"]);
    assert_eq!(spec.metrics_selector(), Some("wf_runs_on_self-hosted,wf_runs_on_linux"));
    assert_eq!(spec.scale_factor(), "0.8");
    assert_eq!(spec.force_scale_up_window()?, DEFAULT_FORCE_SCALE_UP_WINDOW);
    assert_eq!(spec.force_scale_up_frequency()?, DEFAULT_FORCE_SCALE_UP_FREQUENCY);
    assert_eq!(spec.webhook_secret, None);
    Ok(())
}

#[test]
fn runner_with_every_crd_field_parses_into_kubernetes_types() -> TestResult {
    let runner: ScaledActionRunner = only(admitted("runner-crd-spellings.yaml")?)?;
    let spec = &runner.spec;
    assert_eq!(spec.min_runners(), 1);
    assert_eq!(spec.scale_factor(), "0");
    assert_eq!(spec.metrics_selector(), Some("wf_name=main"));
    assert_eq!(spec.force_scale_up_window()?, Duration::from_secs(30 * 60));
    assert_eq!(spec.force_scale_up_frequency()?, Duration::from_secs(480 * 3_600));

    let scaling = spec.scaling.as_ref().ok_or("scaling")?;
    assert_eq!(scaling.polling_interval, Some(15));
    assert_eq!(scaling.cooldown_period, Some(43_200));
    let behavior = scaling.behavior.as_ref().ok_or("behavior")?;
    let scale_down = behavior.scale_down.as_ref().ok_or("scaleDown")?;
    assert_eq!(scale_down.stabilization_window_seconds, Some(300));
    assert_eq!(scale_down.policies.as_ref().map(Vec::len), Some(1));

    let template = spec.runner.as_ref().ok_or("runner")?;
    assert_eq!(spec.runner_labels(), ["self-hosted", "linux", "gpu"]);
    assert!(!template.mount_docker_sock());
    assert_eq!(template.service_account_name.as_deref(), Some("builds-runner"));
    assert!(template.patch.as_deref().is_some_and(|patch| patch.contains("Parallel")));
    assert_eq!(template.node_selector(), BTreeMap::from([("kubernetes.io/os".to_owned(), "linux".to_owned())]));
    let env_names: Vec<_> = template.env.iter().map(|env| env.name.as_str()).collect();
    assert_eq!(env_names, ["RUNNER_WORKDIR", "API_TOKEN", "FEATURE_FLAGS", "POD_NAME", "CPU_LIMIT"]);
    assert_eq!(template.tolerations.len(), 2);
    assert_eq!(template.tolerations[1].toleration_seconds, Some(300));
    let limits = template.limits.as_ref().ok_or("limits")?;
    assert_eq!(limits.get("cpu"), Some(&Quantity("2".into())));
    assert_eq!(limits.get("memory"), Some(&Quantity("2000Mi".into())));
    let requests = template.requests.as_ref().ok_or("requests")?;
    assert_eq!(requests.get("cpu"), Some(&Quantity("200m".into())));
    let claim = template.work_volume_claim_template.as_ref().ok_or("workVolumeClaimTemplate")?;
    assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        claim
            .resources
            .as_ref()
            .and_then(|resources| resources.requests.as_ref())
            .and_then(|requests| requests.get("storage")),
        Some(&Quantity("5Gi".into()))
    );

    let status = runner.status.as_ref().ok_or("status")?;
    assert_eq!(status.referenced_secrets.get("builds-token").map(String::as_str), Some("1234"));
    Ok(())
}

#[test]
fn runner_with_both_spellings_merges_them_crd_spelling_first() -> TestResult {
    let runner: ScaledActionRunner = only(admitted("runner-both-spellings.yaml")?)?;
    let spec = &runner.spec;
    assert_eq!(spec.runner_labels(), ["deploy", "self-hosted", "linux"]);
    assert_eq!(spec.metrics_selector(), Some("wf_runs_on_deploy"));
    let template = spec.runner.as_ref().ok_or("runner")?;
    assert_eq!(
        template.node_selector(),
        BTreeMap::from([
            ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            ("pool".to_owned(), "ci".to_owned()),
            ("zone".to_owned(), "a".to_owned()),
        ])
    );
    assert_eq!(spec.force_scale_up_window()?, Duration::from_secs(20 * 60));
    assert_eq!(spec.force_scale_up_frequency()?, Duration::from_secs(20 * 86_400));
    Ok(())
}

#[test]
fn runner_with_readme_spellings_accepts_node_selectors_as_a_list() -> TestResult {
    let runners: Vec<ScaledActionRunner> = admitted("runner-readme-spellings.yaml")?;
    let [readme, empty] = runners.as_slice() else {
        return Err("expected two documents".into());
    };
    assert_eq!(readme.spec.runner_labels(), ["self-hosted"]);
    assert_eq!(readme.spec.metrics_selector(), None, "`*` selects every job");
    assert_eq!(readme.spec.scale_factor(), "0.8");
    assert_eq!(readme.spec.force_scale_up_window()?, Duration::from_secs(1_200));
    assert_eq!(readme.spec.force_scale_up_frequency()?, Duration::from_secs(20 * 86_400));
    let template = readme.spec.runner.as_ref().ok_or("runner")?;
    assert_eq!(
        template.node_selector(),
        BTreeMap::from([("kubernetes.io/arch".to_owned(), "amd64".to_owned()), ("pool".to_owned(), "ci".to_owned()),])
    );
    let empty_template = empty.spec.runner.as_ref().ok_or("runner")?;
    assert!(empty_template.node_selector().is_empty());
    assert!(empty.spec.runner_labels().is_empty());
    Ok(())
}

#[test]
fn runner_without_a_token_is_served_by_its_webhook_secret() -> TestResult {
    let manifest = json!({
        "apiVersion": "runner.devjoes.com/v1alpha1",
        "kind": "ScaledActionRunner",
        "metadata": {"name": "hooked", "namespace": "ci"},
        "spec": {"owner": "devjoes", "repo": "hooked", "maxRunners": 5, "webhookSecret": "hooked-hook"}
    });
    let problems = schema_violations(&manifest, &openapi_schema(&ScaledActionRunner::crd())?);
    assert!(problems.is_empty(), "{problems:#?}");
    let runner: ScaledActionRunner = serde_json::from_value(manifest)?;
    assert_eq!(runner.spec.webhook_secret.as_deref(), Some("hooked-hook"));
    assert_eq!(runner.spec.github_token_secret, None);
    assert!(runner.spec.runner_secrets.is_empty());
    assert!(runner.spec.runner_labels().is_empty());
    Ok(())
}

#[test]
fn an_organisation_runner_is_a_runner_without_repo_in_a_runner_group() -> TestResult {
    let schema = openapi_schema(&ScaledActionRunner::crd())?;
    let manifest = json!({"apiVersion": "runner.devjoes.com/v1alpha1", "kind": "ScaledActionRunner",
        "metadata": {"name": "org", "namespace": "ci"},
        "spec": {"owner": "devjoes", "maxRunners": 5, "runnerGroup": "builders", "webhookSecret": "org-hook"}});
    let problems = schema_violations(&manifest, &schema);
    assert!(problems.is_empty(), "{problems:#?}");
    let runner: ScaledActionRunner = serde_json::from_value(manifest)?;
    assert_eq!(runner.spec.scope(), Scope::Organization);
    assert_eq!(runner.spec.runner_group(), Some("builders"));
    assert_eq!(runner.spec.github_url(), "https://github.com/devjoes");
    // Without a group, GitHub's default group; a repository runner has none.
    let mut spec = runner.spec.clone();
    spec.runner_group = None;
    assert_eq!(spec.runner_group(), Some("Default"));
    spec.repo = Some(" ".into());
    assert_eq!(spec.scope(), Scope::Organization, "a blank repo is no repository");
    spec.repo = Some("api".into());
    assert_eq!((spec.scope(), spec.runner_group()), (Scope::Repository, None));
    assert_eq!(spec.github_url(), "https://github.com/devjoes/api");
    let status: ScaledActionRunnerStatus = serde_json::from_value(json!({"scope": "organization"}))?;
    assert_eq!(status.scope, Some(Scope::Organization));
    let wrong = json!({"apiVersion": "runner.devjoes.com/v1alpha1", "kind": "ScaledActionRunner",
        "metadata": {"name": "org"}, "spec": {"owner": "devjoes", "maxRunners": 5, "runnerGroup": 7}});
    assert!(!schema_violations(&wrong, &schema).is_empty(), "a runner group is a name");
    Ok(())
}

#[test]
fn runner_without_owner_or_max_runners_is_rejected() -> TestResult {
    let schema = openapi_schema(&ScaledActionRunner::crd())?;
    for missing in ["owner", "maxRunners"] {
        let mut spec = json!({"owner": "devjoes", "repo": "r", "maxRunners": 1});
        if let Value::Object(fields) = &mut spec {
            fields.remove(missing);
        }
        let manifest = json!({"apiVersion": "runner.devjoes.com/v1alpha1",
            "kind": "ScaledActionRunner", "metadata": {"name": "r"}, "spec": spec});
        assert!(!schema_violations(&manifest, &schema).is_empty(), "schema accepts a spec without {missing}");
        assert!(
            serde_json::from_value::<ScaledActionRunner>(manifest).is_err(),
            "type accepts a spec without {missing}"
        );
    }
    Ok(())
}

#[test]
fn empty_status_parses_and_serializes_as_an_empty_object() -> TestResult {
    let status: ScaledActionRunnerStatus = serde_json::from_value(json!({}))?;
    assert_eq!(status, ScaledActionRunnerStatus::default());
    assert_eq!(serde_json::to_value(&status)?, json!({}));
    Ok(())
}

#[test]
fn full_status_round_trips_through_json() -> TestResult {
    let status = json!({
        "conditions": [{"type": "Ready", "status": "True", "reason": "Scaled",
            "message": "2 runners for 3 jobs", "lastTransitionTime": "2024-05-01T10:00:00Z",
            "observedGeneration": 4}],
        "observedGeneration": 4, "demand": 3, "queued": 1, "inProgress": 2,
        "desiredRunners": 2, "replicas": 2, "lastResyncTime": "2024-05-01T10:00:00Z",
        "lastDrift": -1, "referencedSecrets": {"token": "17"}
    });
    let parsed: ScaledActionRunnerStatus = serde_json::from_value(status.clone())?;
    assert_eq!(parsed.conditions[0].type_, "Ready");
    assert_eq!(parsed.desired_runners, Some(2));
    assert_eq!(serde_json::to_value(&parsed)?, status);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------------------------

#[test]
fn go_style_durations_parse() {
    let cases = [
        ("300ms", Duration::from_millis(300)),
        ("30s", Duration::from_secs(30)),
        ("10m", Duration::from_secs(600)),
        ("1h30m", Duration::from_secs(5_400)),
        ("1.5h", Duration::from_secs(5_400)),
        ("2d", Duration::from_secs(172_800)),
        ("1h0m0.5s", Duration::from_millis(3_600_500)),
        (".5s", Duration::from_millis(500)),
        ("1.s", Duration::from_secs(1)),
        ("15us", Duration::from_micros(15)),
        ("15µs", Duration::from_micros(15)),
        ("7ns", Duration::from_nanos(7)),
        ("+5s", Duration::from_secs(5)),
        ("0", Duration::ZERO),
        ("-0", Duration::ZERO),
        ("0s", Duration::ZERO),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_duration(text), Ok(expected), "{text:?}");
    }
}

#[test]
fn readme_phrasings_with_spaces_and_long_units_parse() {
    let cases = [
        ("20 mins", Duration::from_secs(1_200)),
        ("20 days", Duration::from_secs(20 * 86_400)),
        (" 1h 30m ", Duration::from_secs(5_400)),
        ("1 hour", Duration::from_secs(3_600)),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_duration(text), Ok(expected), "{text:?}");
    }
}

#[test]
fn fractions_finer_than_a_nanosecond_are_dropped() {
    assert_eq!(parse_duration("1.0000000001s"), Ok(Duration::from_secs(1)));
    assert_eq!(parse_duration("0.5ns"), Ok(Duration::ZERO));
}

#[test]
fn a_fraction_of_more_than_eighteen_digits_is_read_exactly() {
    // A nanosecond is 0.0000000000166… minutes and 0.0000000000000115740… days: written with more
    // digits, rounded up, each is a hair over 1 ns; cut to 18 digits, a hair under.
    assert_eq!(parse_duration("0.000000000016666666666666666667m"), Ok(Duration::from_nanos(1)));
    assert_eq!(parse_duration("0.0000000000000115741d"), Ok(Duration::from_nanos(1)));
    assert_eq!(parse_duration("1.999999999999999999999999s"), Ok(Duration::from_nanos(1_999_999_999)));
}

#[test]
fn malformed_durations_are_rejected_with_the_reason() {
    assert_eq!(parse_duration(""), Err(DurationError::Empty));
    assert_eq!(parse_duration("  "), Err(DurationError::Empty));
    for text in ["10", "1h30", "1..5s"] {
        assert!(matches!(parse_duration(text), Err(DurationError::MissingUnit { .. })), "{text:?}");
    }
    for text in ["5y", "1M", "3 fortnights"] {
        assert!(matches!(parse_duration(text), Err(DurationError::UnknownUnit { .. })), "{text:?}");
    }
    for text in ["h", ".s", "-", "+", "s5"] {
        assert!(matches!(parse_duration(text), Err(DurationError::InvalidNumber { .. })), "{text:?}");
    }
}

#[test]
fn negative_durations_are_rejected() {
    assert!(matches!(parse_duration("-5s"), Err(DurationError::Negative { .. })));
    assert!(matches!(GoDuration::Nanoseconds(-1).as_duration(), Err(DurationError::Negative { .. })));
}

#[test]
fn durations_beyond_u64_nanoseconds_overflow() {
    for text in ["1000000d", "99999999999999999999999999999999999999999h"] {
        assert!(matches!(parse_duration(text), Err(DurationError::Overflow { .. })), "{text:?}");
    }
}

#[test]
fn integer_durations_are_nanoseconds() {
    assert_eq!(GoDuration::Nanoseconds(60_000_000_000).as_duration(), Ok(Duration::from_secs(60)));
    assert_eq!(GoDuration::from("2m").as_duration(), Ok(Duration::from_secs(120)));
}

#[test]
fn durations_keep_the_spelling_they_were_written_in() -> TestResult {
    let int: GoDuration = serde_json::from_str("60000000000")?;
    assert_eq!(int, GoDuration::Nanoseconds(60_000_000_000));
    assert_eq!(serde_json::to_string(&int)?, "60000000000");
    let text: GoDuration = serde_json::from_str("\"1m\"")?;
    assert_eq!(text, GoDuration::Text("1m".into()));
    assert_eq!(serde_json::to_string(&text)?, "\"1m\"");
    assert!(serde_json::from_str::<GoDuration>("1.5").is_err());
    assert!(serde_json::from_str::<GoDuration>("true").is_err());
    assert!(serde_json::from_str::<GoDuration>("18446744073709551615").is_err());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Structural schema
// ---------------------------------------------------------------------------------------------

fn openapi_schema(crd: &CustomResourceDefinition) -> Result<Value, Box<dyn Error>> {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|validation| validation.open_api_v3_schema.as_ref())
        .ok_or("the CRD has no openAPIV3Schema")?;
    Ok(serde_json::to_value(schema)?)
}

fn is_true(schema: &Value, key: &str) -> bool {
    schema.get(key) == Some(&Value::Bool(true))
}

/// Where `schema` breaks Kubernetes' structural-schema rules, as JSON paths.
fn structural_problems(schema: &Value, path: &str, problems: &mut Vec<String>) {
    for forbidden in ["$ref", "$defs", "definitions", "oneOf", "anyOf", "allOf", "not"] {
        if schema.get(forbidden).is_some() {
            problems.push(format!("{path}: has {forbidden}"));
        }
    }
    let typed = schema.get("type").is_some_and(Value::is_string);
    if !(typed
        || is_true(schema, "x-kubernetes-int-or-string")
        || is_true(schema, "x-kubernetes-preserve-unknown-fields"))
    {
        problems.push(format!("{path}: has no type"));
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    if properties.is_some() && additional.is_some() {
        problems.push(format!("{path}: has both properties and additionalProperties"));
    }
    if let Some(keys) = schema.get("x-kubernetes-list-map-keys").and_then(Value::as_array) {
        let required = schema.pointer("/items/required").and_then(Value::as_array);
        for key in keys {
            if !required.is_some_and(|required| required.contains(key)) {
                problems.push(format!("{path}: list-map key {key} is not required"));
            }
        }
    }
    for (name, property) in properties.into_iter().flatten() {
        structural_problems(property, &format!("{path}.{name}"), problems);
    }
    if let Some(additional) = additional.filter(|additional| additional.is_object()) {
        structural_problems(additional, &format!("{path}.*"), problems);
    }
    if let Some(items) = schema.get("items") {
        structural_problems(items, &format!("{path}[]"), problems);
    }
}

#[test]
fn both_schemas_are_structural() -> TestResult {
    for crd in [ScaledActionRunnerCore::crd(), ScaledActionRunner::crd()] {
        let mut problems = Vec::new();
        structural_problems(&openapi_schema(&crd)?, "", &mut problems);
        assert!(problems.is_empty(), "{:?}: {problems:#?}", crd.metadata.name);
    }
    Ok(())
}

#[test]
fn conditions_are_a_list_map_keyed_by_type() -> TestResult {
    for crd in [ScaledActionRunnerCore::crd(), ScaledActionRunner::crd()] {
        let schema = openapi_schema(&crd)?;
        let conditions = schema.pointer("/properties/status/properties/conditions").ok_or("no status.conditions")?;
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    }
    Ok(())
}

#[test]
fn every_spec_field_is_described() -> TestResult {
    fn undescribed(schema: &Value, path: &str, missing: &mut Vec<String>) {
        for (name, property) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
            let path = format!("{path}.{name}");
            if property.get("description").is_none() {
                missing.push(path.clone());
            }
            undescribed(property, &path, missing);
        }
    }
    for crd in [ScaledActionRunnerCore::crd(), ScaledActionRunner::crd()] {
        let mut missing = Vec::new();
        undescribed(&openapi_schema(&crd)?, "", &mut missing);
        assert!(missing.is_empty(), "{missing:#?}");
    }
    Ok(())
}

/// What the API server would do to `value` beyond storing it: fields it would prune, values
/// of the wrong type, required fields that are missing. A small model of structural-schema
/// validation, enough to show a manifest is accepted unchanged.
fn schema_violations(value: &Value, schema: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if let Value::Object(root) = value {
        // The API server handles these itself; they are not in the CRD's schema.
        let body: serde_json::Map<_, _> = root
            .iter()
            .filter(|(key, _)| !matches!(key.as_str(), "apiVersion" | "kind" | "metadata"))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        check_value(&Value::Object(body), schema, "", &mut problems);
    } else {
        problems.push("the document is not an object".into());
    }
    problems
}

fn check_value(value: &Value, schema: &Value, path: &str, problems: &mut Vec<String>) {
    if value.is_null() {
        if !is_true(schema, "nullable") {
            problems.push(format!("{path}: null is not allowed"));
        }
        return;
    }
    if is_true(schema, "x-kubernetes-int-or-string") {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            problems.push(format!("{path}: {value} is neither an integer nor a string"));
        }
        return;
    }
    let preserve_unknown = is_true(schema, "x-kubernetes-preserve-unknown-fields");
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => check_object(value, schema, path, preserve_unknown, problems),
        Some("array") => match (value.as_array(), schema.get("items")) {
            (Some(items), Some(item_schema)) => {
                for (index, item) in items.iter().enumerate() {
                    check_value(item, item_schema, &format!("{path}[{index}]"), problems);
                }
            }
            _ => problems.push(format!("{path}: {value} is not an array")),
        },
        Some("string") if !value.is_string() => {
            problems.push(format!("{path}: {value} is not a string"));
        }
        Some("integer") if !(value.is_i64() || value.is_u64()) => {
            problems.push(format!("{path}: {value} is not an integer"));
        }
        Some("number") if !value.is_number() => {
            problems.push(format!("{path}: {value} is not a number"));
        }
        Some("boolean") if !value.is_boolean() => {
            problems.push(format!("{path}: {value} is not a boolean"));
        }
        Some(_) => {}
        None if preserve_unknown => {}
        None => problems.push(format!("{path}: the schema has no type")),
    }
}

fn check_object(value: &Value, schema: &Value, path: &str, preserve_unknown: bool, problems: &mut Vec<String>) {
    let Some(fields) = value.as_object() else {
        problems.push(format!("{path}: {value} is not an object"));
        return;
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (name, field) in fields {
        let field_path = format!("{path}.{name}");
        match (properties.and_then(|p| p.get(name)), additional) {
            (Some(field_schema), _) | (None, Some(field_schema)) => {
                check_value(field, field_schema, &field_path, problems);
            }
            (None, None) if preserve_unknown => {}
            (None, None) => problems.push(format!("{field_path}: would be pruned")),
        }
    }
    for required in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if !fields.contains_key(required) {
            problems.push(format!("{path}.{required}: is required"));
        }
    }
}

#[test]
fn the_schema_model_notices_a_field_the_crd_would_prune() -> TestResult {
    let schema = openapi_schema(&ScaledActionRunner::crd())?;
    let manifest = json!({"spec": {"owner": "o", "repo": "r", "maxRunners": 1,
        "runner": {"nodeSelectr": {"a": "b"}}}});
    assert_eq!(schema_violations(&manifest, &schema), [".spec.runner.nodeSelectr: would be pruned"]);
    Ok(())
}
