//! What a core becomes, asserted on the rendered objects.

use std::time::Duration;

use serde_json::{Value, json};

use k8s_openapi::api::rbac::v1::PolicyRule;

use super::server_args::duration_arg;
use super::*;
use crate::operator::DEFAULT_IMAGE;

const UID: &str = "8a1f0c2e-0000-4000-8000-000000000001";

fn core_with(spec: Value, uid: Option<&str>) -> ScaledActionRunnerCore {
    let mut spec_fields =
        json!({"apiServerName": "metrics", "apiServerNamespace": "github", "sslCertSecret": "tls-cert"});
    if let (Some(fields), Value::Object(extra)) = (spec_fields.as_object_mut(), spec) {
        fields.extend(extra);
    }
    let mut metadata = json!({"name": "core"});
    if let Some(uid) = uid {
        metadata["uid"] = json!(uid);
    }
    serde_json::from_value(json!({
        "apiVersion": "runner.devjoes.com/v1alpha1", "kind": "ScaledActionRunnerCore",
        "metadata": metadata, "spec": spec_fields,
    }))
    .expect("a valid core")
}

fn core(spec: Value) -> ScaledActionRunnerCore {
    core_with(spec, Some(UID))
}

fn children(spec: Value) -> Vec<Child> {
    children_with(spec, &CoreInputs::default())
}

fn children_with(spec: Value, inputs: &CoreInputs) -> Vec<Child> {
    core_children(&core(spec), &Settings::default(), inputs).expect("a valid spec")
}

fn error(spec: Value) -> SpecError {
    core_children(&core(spec), &Settings::default(), &CoreInputs::default()).expect_err("an invalid spec")
}

fn field(spec: Value) -> &'static str {
    match error(spec) {
        SpecError::Invalid { field, .. } => field,
        other => panic!("expected SpecError::Invalid, got {other:?}"),
    }
}

fn summary(children: &[Child]) -> Vec<String> {
    children.iter().map(Child::describe).collect()
}

fn find(children: &[Child], kind: &str, name: &str) -> Value {
    children
        .iter()
        .find(|child| child.resource.kind == kind && child.object.metadata.name.as_deref() == Some(name))
        .map(Child::to_value)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:#?}", summary(children)))
}

fn args(children: &[Child]) -> Vec<String> {
    let deployment = find(children, "Deployment", "metrics");
    serde_json::from_value(deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone())
        .expect("args are strings")
}

fn flag(args: &[String], name: &str) -> Vec<String> {
    args.windows(2).filter(|pair| pair[0] == name).map(|pair| pair[1].clone()).collect()
}

fn rules(children: &[Child]) -> Vec<(String, PolicyRule)> {
    children
        .iter()
        .filter(|child| matches!(child.resource.kind.as_str(), "Role" | "ClusterRole"))
        .flat_map(|child| {
            let rules: Vec<PolicyRule> =
                serde_json::from_value(child.to_value()["rules"].clone()).expect("rules parse");
            rules.into_iter().map(move |rule| (child.describe(), rule))
        })
        .collect()
}

fn mentions(rule: &PolicyRule, resource: &str) -> bool {
    rule.resources.iter().flatten().any(|r| r == resource || r == "*" || r.starts_with(&format!("{resource}/")))
        && rule.api_groups.iter().flatten().any(|group| group.is_empty() || group == "*")
}

#[test]
fn the_readme_core_becomes_the_whole_api_server_stack() {
    let children = children_with(
        json!({"prometheusNamespace": "monitoring"}),
        &CoreInputs { ca_bundle: None, front_proxy_ca: Some("PEM") },
    );
    assert_eq!(
        summary(&children),
        [
            "ServiceAccount github/metrics",
            "ClusterRole github-action-autoscaler:github:metrics:runners",
            "ClusterRoleBinding github-action-autoscaler:github:metrics:runners",
            "Role github/github-action-autoscaler:github:metrics:resync-lease",
            "RoleBinding github/github-action-autoscaler:github:metrics:resync-lease",
            "ClusterRole github-action-autoscaler:github:metrics:token-reviews",
            "ClusterRoleBinding github-action-autoscaler:github:metrics:token-reviews",
            "ClusterRole github-action-autoscaler:github:metrics:custom-metrics-reader",
            "ClusterRoleBinding github-action-autoscaler:github:metrics:custom-metrics-reader",
            "ConfigMap github/metrics-front-proxy-ca",
            "Service github/metrics-cache",
            "StatefulSet github/metrics-cache",
            "PodDisruptionBudget github/metrics-cache",
            "Service github/metrics",
            "Deployment github/metrics",
            "PodDisruptionBudget github/metrics",
            "APIService v1beta1.custom.metrics.k8s.io",
            "ClusterTriggerAuthentication metrics",
            "ServiceMonitor github/metrics",
        ]
    );
}

#[test]
fn api_server_args_carry_the_cores_settings_then_its_extra_args() {
    let args = args(&children(json!({
        "cacheWindow": "90s", "cacheWindowWhenEmpty": 1_500_000_000i64,
        "namespaces": ["team-a", "team-b"], "apiServerPatTokenNamespace": "github-tokens",
        "apiServerExtraArgs": ["--store-prefix", "blue:"],
    })));
    assert_eq!(args[0], "serve");
    assert_eq!(flag(&args, "--cache-window"), ["90s"]);
    assert_eq!(flag(&args, "--cache-window-when-empty"), ["1500ms"]);
    assert_eq!(flag(&args, "--namespaces"), ["team-a,team-b"]);
    assert_eq!(flag(&args, "--token-namespace"), ["github-tokens"]);
    assert_eq!(flag(&args, "--lease-namespace"), ["github"]);
    assert_eq!(flag(&args, "--log-format"), ["json"]);
    assert_eq!(args[args.len() - 2..], ["--store-prefix", "blue:"]);
}

#[test]
fn api_server_listens_on_every_port_with_mutual_tls_from_the_mounted_files() {
    let args = args(&children(json!({})));
    assert_eq!(flag(&args, "--listen"), ["0.0.0.0:8080"]);
    assert_eq!(flag(&args, "--tls-listen"), ["0.0.0.0:8443"]);
    assert_eq!(flag(&args, "--grpc-listen"), ["0.0.0.0:9090"]);
    assert_eq!(flag(&args, "--tls-cert"), ["/tls/tls.crt"]);
    assert_eq!(flag(&args, "--tls-key"), ["/tls/tls.key"]);
    assert_eq!(flag(&args, "--client-ca"), ["/tls/ca.crt", "/front-proxy/ca.crt"]);
    assert_eq!(flag(&args, "--data-dir"), ["/data"]);
}

#[test]
fn serve_knows_every_flag_the_core_passes() {
    use clap::CommandFactory;
    let cli = crate::config::Cli::command();
    let serve = cli.find_subcommand("serve").expect("a serve subcommand");
    let known: Vec<&str> = serve.get_arguments().chain(cli.get_arguments()).filter_map(|arg| arg.get_long()).collect();
    let spec = json!({"namespaces": ["a"], "apiServerPatTokenNamespace": "t", "createMemcached": false,
        "memcacheServers": "m:1", "memcachedAuth": true, "memcacheUser": "u", "memcacheCredsSecret": "s"});
    for arg in args(&children(spec)).iter().filter_map(|arg| arg.strip_prefix("--")) {
        assert!(known.contains(&arg), "serve has no --{arg}");
    }
}

#[test]
fn serve_parses_the_api_servers_command_line() {
    use clap::Parser;
    let mut command_line = vec!["github-action-autoscaler".to_owned()];
    command_line.extend(args(&children(json!({"namespaces": ["a"], "apiServerPatTokenNamespace": "t"}))));
    if let Err(error) = crate::config::Cli::try_parse_from(&command_line) {
        panic!("{error}");
    }
}

#[test]
fn extra_args_the_api_server_would_refuse_are_left_out_with_a_warning() {
    let spec = json!({"apiServerExtraArgs": ["--v=4", "--journal-retention", "5d", "--secure-port", "6443", "--listen=0.0.0.0:1"]});
    let args = args(&children(spec.clone()));
    assert_eq!(flag(&args, "--journal-retention"), ["5d"], "a flag of ours is kept with its value");
    assert!(
        !args.iter().any(|arg| arg.starts_with("--v") || arg.starts_with("--secure-port") || arg == "6443"),
        "{args:?}"
    );
    assert_eq!(flag(&args, "--listen"), ["0.0.0.0:8080"], "the operator's own flags cannot be overridden twice");
    let warnings = core_warnings(&core(spec));
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings[0].contains("--v=4") && warnings[1].contains("--secure-port 6443"), "{warnings:?}");
}

#[test]
fn unset_cache_windows_pass_the_cores_defaults() {
    let args = args(&children(json!({})));
    assert_eq!(flag(&args, "--cache-window"), ["300s"]);
    assert_eq!(flag(&args, "--cache-window-when-empty"), ["1800s"]);
    assert!(flag(&args, "--namespaces").is_empty());
    assert!(flag(&args, "--token-namespace").is_empty());
    assert!(flag(&args, "--memcached-user").is_empty());
}

#[test]
fn the_store_lists_each_memcached_pod_by_its_stable_name() {
    let args = args(&children(json!({"memcachedReplicas": 3})));
    assert_eq!(
        flag(&args, "--store"),
        ["memcached://metrics-cache-0.metrics-cache.github.svc:11211,\
          metrics-cache-1.metrics-cache.github.svc:11211,metrics-cache-2.metrics-cache.github.svc:11211"]
    );
    let stateful_set = find(&children(json!({"memcachedReplicas": 3})), "StatefulSet", "metrics-cache");
    assert_eq!(stateful_set["spec"]["replicas"], 3);
    assert_eq!(stateful_set["spec"]["serviceName"], "metrics-cache");
}

#[test]
fn memcached_service_is_headless_and_publishes_pods_before_they_are_ready() {
    let service = find(&children(json!({})), "Service", "metrics-cache");
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(service["spec"]["publishNotReadyAddresses"], true);
    assert_eq!(service["spec"]["ports"][0]["port"], 11211);
    assert_eq!(service["spec"]["selector"]["app.kubernetes.io/component"], "memcached");
}

#[test]
fn an_existing_memcached_replaces_the_deployed_one() {
    let children = children(json!({"createMemcached": false, "memcacheServers": " a:11211, b:11211 ,"}));
    assert_eq!(flag(&args(&children), "--store"), ["memcached://a:11211,b:11211"]);
    assert!(!children.iter().any(|child| child.object.metadata.name.as_deref() == Some("metrics-cache")));
}

#[test]
fn an_existing_memcached_with_auth_is_reached_with_the_user_and_a_mounted_password() {
    let children = children(json!({
        "createMemcached": false, "memcacheServers": "a:11211", "MemcachedAuth": true,
        "memcachedUser": "autoscaler", "memcacheCredsSecret": "memcached-creds",
    }));
    let args = args(&children);
    assert_eq!(flag(&args, "--memcached-user"), ["autoscaler"]);
    assert_eq!(flag(&args, "--memcached-password-file"), ["/memcached/password"]);
    let pod = &find(&children, "Deployment", "metrics")["spec"]["template"]["spec"];
    let volume = pod["volumes"].as_array().and_then(|volumes| volumes.iter().find(|v| v["name"] == "memcached"));
    assert_eq!(
        volume.map(|volume| &volume["secret"]),
        Some(&json!({"secretName": "memcached-creds", "items": [{"key": "password", "path": "password"}]}))
    );
}

#[test]
fn an_existing_memcached_must_be_named() {
    assert_eq!(field(json!({"createMemcached": false})), "memcacheServers");
    assert_eq!(field(json!({"createMemcached": false, "memcacheServers": " , "})), "memcacheServers");
}

#[test]
fn memcached_auth_is_refused_for_the_memcached_the_operator_deploys() {
    let SpecError::Invalid { field, reason } = error(json!({"memcachedAuth": true})) else {
        panic!("expected an invalid spec");
    };
    assert_eq!(field, "memcachedAuth");
    assert!(reason.contains("createMemcached: false"), "{reason}");
}

#[test]
fn memcached_auth_needs_a_user_and_a_secret() {
    let base = json!({"createMemcached": false, "memcacheServers": "a:1", "memcachedAuth": true});
    assert_eq!(field(base.clone()), "memcacheUser");
    let mut with_user = base;
    with_user["memcacheUser"] = json!("u");
    assert_eq!(field(with_user), "memcacheCredsSecret");
}

#[test]
fn no_rule_grants_secrets_except_the_token_namespace_role() {
    for spec in [json!({}), json!({"namespaces": ["a", "b"]})] {
        let granted: Vec<_> =
            rules(&children(spec)).into_iter().filter(|(_, rule)| mentions(rule, "secrets")).collect();
        assert!(granted.is_empty(), "{granted:#?}");
    }
    let granted: Vec<_> = rules(&children(json!({"apiServerPatTokenNamespace": "github-tokens"})))
        .into_iter()
        .filter(|(_, rule)| mentions(rule, "secrets"))
        .collect();
    assert_eq!(granted.len(), 1, "{granted:#?}");
    assert_eq!(granted[0].0, "Role github-tokens/github-action-autoscaler:github:metrics:tokens");
    assert_eq!(granted[0].1.verbs, ["get", "list", "watch"]);
}

#[test]
fn the_token_role_is_bound_to_the_api_servers_service_account() {
    let children = children(json!({"apiServerPatTokenNamespace": "github-tokens"}));
    let binding = find(&children, "RoleBinding", "github-action-autoscaler:github:metrics:tokens");
    assert_eq!(binding["metadata"]["namespace"], "github-tokens");
    assert_eq!(binding["subjects"], json!([{"kind": "ServiceAccount", "name": "metrics", "namespace": "github"}]));
    assert_eq!(binding["roleRef"]["kind"], "Role");
}

#[test]
fn runners_are_read_cluster_wide_unless_namespaces_are_listed() {
    let cluster_wide = children(json!({}));
    let role = find(&cluster_wide, "ClusterRole", "github-action-autoscaler:github:metrics:runners");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["runner.devjoes.com"], "resources": ["scaledactionrunners"], "verbs": ["get", "list", "watch"]}])
    );

    let listed = children(json!({"namespaces": ["team-a", "team-b"]}));
    assert!(!summary(&listed).iter().any(|child| child.ends_with(":runners") && child.starts_with("Cluster")));
    for namespace in ["team-a", "team-b"] {
        let name = format!("{namespace}/github-action-autoscaler:github:metrics:runners");
        assert!(summary(&listed).contains(&format!("Role {name}")), "{:#?}", summary(&listed));
        assert!(summary(&listed).contains(&format!("RoleBinding {name}")), "{:#?}", summary(&listed));
    }
}

#[test]
fn lease_updates_are_limited_to_the_resync_lease() {
    let role = find(&children(json!({})), "Role", "github-action-autoscaler:github:metrics:resync-lease");
    assert_eq!(role["metadata"]["namespace"], "github");
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": ["github-action-autoscaler-resync"], "verbs": ["get", "update"]},
        ])
    );
}

#[test]
fn the_hpa_controller_may_read_custom_metrics() {
    let children = children(json!({}));
    let name = "github-action-autoscaler:github:metrics:custom-metrics-reader";
    let role = find(&children, "ClusterRole", name);
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["custom.metrics.k8s.io"], "resources": ["*"], "verbs": ["get", "list"]}])
    );
    let binding = find(&children, "ClusterRoleBinding", name);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "horizontal-pod-autoscaler", "namespace": "kube-system"}])
    );
}

#[test]
fn every_child_is_labelled_and_owned_by_the_core_when_it_has_a_uid() {
    let spec = json!({"prometheusNamespace": "monitoring", "apiServerPatTokenNamespace": "t", "namespaces": ["a"]});
    let inputs = CoreInputs { ca_bundle: Some(b"CA"), front_proxy_ca: Some("PEM") };
    let owned = core_children(&core(spec.clone()), &Settings::default(), &inputs).expect("valid");
    for child in &owned {
        let owners = child.object.metadata.owner_references.as_deref().unwrap_or_default();
        assert_eq!(owners.len(), 1, "{}", child.describe());
        assert_eq!((owners[0].kind.as_str(), owners[0].uid.as_str()), ("ScaledActionRunnerCore", UID));
        assert_eq!(owners[0].controller, Some(true));
        let labels = child.object.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels.get("app.kubernetes.io/instance").map(String::as_str), Some("core"), "{}", child.describe());
        assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("github-action-autoscaler"));
    }
    let unowned = core_children(&core_with(spec, None), &Settings::default(), &inputs).expect("valid");
    assert_eq!(unowned.len(), owned.len());
    assert!(unowned.iter().all(|child| child.object.metadata.owner_references.is_none()));
}

#[test]
fn service_monitor_exists_only_when_prometheus_is_named() {
    let kinds = |spec| summary(&children(spec)).into_iter().filter(|child| child.starts_with("ServiceMonitor")).count();
    assert_eq!(kinds(json!({})), 0);
    assert_eq!(kinds(json!({"prometheusNamespace": ""})), 0);
    let monitor = find(&children(json!({"prometheusNamespace": "monitoring"})), "ServiceMonitor", "metrics");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["namespace"], "github");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let secret = |key: &str| json!({"name": "tls-cert", "key": key});
    assert_eq!(
        monitor["spec"]["endpoints"],
        json!([{
            "port": "https",
            "path": "/metrics",
            "scheme": "https",
            "tlsConfig": {
                "ca": {"secret": secret("ca.crt")},
                "cert": {"secret": secret("tls.crt")},
                "keySecret": secret("tls.key"),
                "serverName": "metrics.github.svc",
            },
        }]),
        "the plain port serves no reads: Prometheus scrapes the mutual-TLS port with the core's certificate"
    );
    assert_eq!(monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"], "api-server");
}

#[test]
fn service_exposes_http_https_and_grpc_and_selects_the_deployments_pods() {
    let children = children(json!({}));
    let service = find(&children, "Service", "metrics");
    let ports: Vec<_> = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|port| (port["name"].clone(), port["port"].clone(), port.get("appProtocol").cloned()))
        .collect();
    assert_eq!(
        ports,
        [
            (json!("http"), json!(8080), None),
            (json!("https"), json!(8443), None),
            (json!("grpc"), json!(9090), Some(json!("grpc"))),
        ]
    );
    let deployment = find(&children, "Deployment", "metrics");
    assert_eq!(service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"]);
    let pod_labels = deployment["spec"]["template"]["metadata"]["labels"].as_object().expect("pod labels");
    for (key, value) in service["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(pod_labels.get(key), Some(value));
    }
}

#[test]
fn api_server_pods_are_locked_down_probed_and_mount_their_certificates() {
    let children = children(json!({"apiServerReplicas": 3, "apiServerImage": "example/api:1"}));
    let deployment = find(&children, "Deployment", "metrics");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "metrics");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "example/api:1");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": 8080}));
    assert_eq!(container["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": 8080}));
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert_eq!(
        pod["volumes"],
        json!([
            {"name": "tls", "secret": {"secretName": "tls-cert"}},
            {"name": "front-proxy", "configMap": {"name": "metrics-front-proxy-ca", "optional": true}},
            {"name": "data", "emptyDir": {}},
        ])
    );
    let budget = find(&children, "PodDisruptionBudget", "metrics");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    assert_eq!(budget["spec"]["selector"], deployment["spec"]["selector"]);
}

#[test]
fn images_default_to_the_operators_settings() {
    let settings =
        Settings { image: "ours/api:2".into(), memcached_image: "ours/memcached:3".into(), ..Settings::default() };
    let children =
        core_children(&core(json!({"apiServerImage": ""})), &settings, &CoreInputs::default()).expect("valid");
    let image = |kind, name| find(&children, kind, name)["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert_eq!(image("Deployment", "metrics"), "ours/api:2");
    assert_eq!(image("StatefulSet", "metrics-cache"), "ours/memcached:3");
}

#[test]
fn the_original_go_api_server_image_is_replaced_by_ours() {
    for original in [
        "joeshearn/github-runner-autoscaler-apiserver:latest",
        "docker.io/joeshearn/github-runner-autoscaler-apiserver:v0.3",
        "joeshearn/github-runner-autoscaler-apiserver",
    ] {
        let deployment = find(&children(json!({"apiServerImage": original})), "Deployment", "metrics");
        assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["image"], DEFAULT_IMAGE, "{original}");
    }
    let fork = find(
        &children(json!({"apiServerImage": "joeshearn/github-runner-autoscaler-apiserver-fork:1"})),
        "Deployment",
        "metrics",
    );
    assert_eq!(
        fork["spec"]["template"]["spec"]["containers"][0]["image"],
        "joeshearn/github-runner-autoscaler-apiserver-fork:1"
    );
}

#[test]
fn memcached_pods_are_locked_down_and_probed_over_tcp() {
    let stateful_set =
        find(&children(json!({"memcachedImage": "example/memcached:1"})), "StatefulSet", "metrics-cache");
    let pod = &stateful_set["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "example/memcached:1");
    assert_eq!(container["command"], json!(["memcached"]));
    assert_eq!(container["readinessProbe"]["tcpSocket"]["port"], 11211);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
}

#[test]
fn without_create_api_server_no_deployment_is_written_but_the_service_stays() {
    let children = children(json!({"createApiServer": false, "createMemcached": false}));
    let kinds = summary(&children);
    assert!(!kinds.iter().any(|child| child.starts_with("Deployment") || child.starts_with("PodDisruptionBudget")));
    assert!(kinds.contains(&"Service github/metrics".to_owned()));
}

#[test]
fn api_service_trusts_the_cores_ca_and_never_skips_verification() {
    let with_ca =
        children_with(json!({}), &CoreInputs { ca_bundle: Some(b"-----BEGIN CERTIFICATE-----"), front_proxy_ca: None });
    let api_service = find(&with_ca, "APIService", "v1beta1.custom.metrics.k8s.io");
    assert_eq!(api_service["apiVersion"], "apiregistration.k8s.io/v1");
    assert_eq!(api_service["spec"]["service"], json!({"namespace": "github", "name": "metrics", "port": 8443}));
    assert_eq!(api_service["spec"]["group"], "custom.metrics.k8s.io");
    assert_eq!(api_service["spec"]["version"], "v1beta1");
    assert_eq!(api_service["spec"]["groupPriorityMinimum"], 100);
    assert_eq!(api_service["spec"]["versionPriority"], 100);
    assert_eq!(api_service["spec"]["caBundle"], "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t");
    assert!(api_service["spec"].get("insecureSkipTLSVerify").is_none());

    let without_ca = find(&children(json!({})), "APIService", "v1beta1.custom.metrics.k8s.io");
    assert!(without_ca["spec"].get("caBundle").is_none());
    assert!(without_ca["spec"].get("insecureSkipTLSVerify").is_none());
}

#[test]
fn the_front_proxy_ca_is_published_only_when_known() {
    assert!(!summary(&children(json!({}))).iter().any(|child| child.starts_with("ConfigMap")));
    let children = children_with(json!({}), &CoreInputs { ca_bundle: None, front_proxy_ca: Some("FRONT") });
    assert_eq!(find(&children, "ConfigMap", "metrics-front-proxy-ca")["data"], json!({"ca.crt": "FRONT"}));
}

#[test]
fn keda_authenticates_with_the_tls_secret_through_a_cluster_trigger_authentication() {
    let authentication = find(&children(json!({})), "ClusterTriggerAuthentication", "metrics");
    assert_eq!(authentication["apiVersion"], "keda.sh/v1alpha1");
    assert!(authentication["metadata"].get("namespace").is_none());
    let refs = authentication["spec"]["secretTargetRef"].as_array().expect("refs");
    assert_eq!(refs.len(), 6);
    assert!(refs.iter().all(|r| r["name"] == "tls-cert"));
    assert!(!summary(&children(json!({"createAuthentication": false}))).iter().any(|c| c.contains("TriggerAuth")));
}

#[test]
fn invalid_specs_name_the_offending_field() {
    let cases = [
        (json!({"apiServerNamespace": ""}), "apiServerNamespace"),
        (json!({"apiServerNamespace": "Github"}), "apiServerNamespace"),
        (json!({"apiServerName": ""}), "apiServerName"),
        (json!({"apiServerName": "1metrics"}), "apiServerName"),
        (json!({"apiServerName": "metrics_server"}), "apiServerName"),
        (json!({"apiServerName": "m".repeat(47)}), "apiServerName"),
        (json!({"sslCertSecret": ""}), "sslCertSecret"),
        (json!({"sslCertSecret": "tls..cert"}), "sslCertSecret"),
        (json!({"namespaces": ["ok", "Not-OK"]}), "namespaces"),
        (json!({"apiServerPatTokenNamespace": "tokens!"}), "apiServerPatTokenNamespace"),
        (json!({"prometheusNamespace": "-monitoring"}), "prometheusNamespace"),
        (json!({"apiServerReplicas": -1}), "apiServerReplicas"),
        (json!({"memcachedReplicas": -2}), "memcachedReplicas"),
        (json!({"cacheWindow": "soon"}), "cacheWindow"),
        (json!({"cacheWindowWhenEmpty": -5}), "cacheWindowWhenEmpty"),
        (json!({"resyncInterval": "5 fortnights"}), "resyncInterval"),
    ];
    for (spec, expected) in cases {
        assert_eq!(field(spec.clone()), expected, "{spec}");
    }
}

#[test]
fn a_long_name_is_fine_without_the_memcached_statefulset() {
    let spec = json!({"apiServerName": "m".repeat(60), "createMemcached": false, "memcacheServers": "a:1"});
    assert!(core_children(&core(spec), &Settings::default(), &CoreInputs::default()).is_ok());
}

#[test]
fn durations_are_passed_in_the_coarsest_exact_unit() {
    assert_eq!(duration_arg(Duration::from_secs(120)), "120s");
    assert_eq!(duration_arg(Duration::from_millis(1_500)), "1500ms");
    assert_eq!(duration_arg(Duration::from_nanos(1_000_000_001)), "1000000001ns");
}
