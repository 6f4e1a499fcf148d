//! What a runner becomes, asserted on the rendered objects.

use serde_json::{Value, json};

use super::*;
use crate::operator::children::SpecError;

fn runner(spec: Value) -> ScaledActionRunner {
    serde_json::from_value(json!({
        "apiVersion": "runner.devjoes.com/v1alpha1", "kind": "ScaledActionRunner",
        "metadata": {"name": "web", "namespace": "ci", "uid": "u1"},
        "spec": spec
    }))
    .unwrap()
}

fn api_server() -> ApiServer {
    ApiServer {
        namespace: "github".into(),
        name: "metrics".into(),
        token_namespace: None,
        cluster_trigger_authentication: Some("metrics".into()),
    }
}

fn rendered(spec: Value) -> Vec<Value> {
    let children = runner_children(&runner(spec), &Settings::default(), Some(&api_server())).unwrap();
    children.iter().map(Child::to_value).collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects.iter().find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
}

fn pod(objects: &[Value]) -> &Value {
    &find(objects, "StatefulSet", "web").expect("a StatefulSet")["spec"]["template"]["spec"]
}

fn base() -> Value {
    json!({"owner": "acme", "repo": "web", "maxRunners": 2})
}

#[test]
fn an_unreadable_forced_scale_up_duration_is_an_invalid_spec() {
    let mut spec = base();
    spec["forceScaleUpFrequency"] = json!("fortnightly");
    let error = runner_children(&runner(spec), &Settings::default(), None).unwrap_err();
    assert!(matches!(error, SpecError::Invalid { field: "forceScaleUpFrequency", .. }), "{error}");
}

#[test]
fn docker_sock_is_mounted_only_when_asked_for() {
    let objects = rendered(base());
    assert!(!serde_json::to_string(pod(&objects)).unwrap().contains("docker.sock"));
    let mut spec = base();
    spec["runner"] = json!({"mountDockerSock": true});
    let objects = rendered(spec);
    assert_eq!(pod(&objects)["volumes"][0]["hostPath"]["path"], "/var/run/docker.sock");
}

#[test]
fn runner_pods_drain_their_job_before_stopping_within_a_long_configurable_grace() {
    let objects = rendered(base());
    let pod = pod(&objects);
    assert_eq!(pod["terminationGracePeriodSeconds"], 3600);
    assert_eq!(pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][2], DRAIN_SCRIPT);
    let mut spec = base();
    spec["runner"] = json!({"terminationGracePeriodSeconds": 7200});
    assert_eq!(
        rendered(spec).iter().find(|o| o["kind"] == "StatefulSet").unwrap()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        7200
    );
}

#[test]
fn each_runner_pod_holds_only_its_own_credentials_and_job_code_gets_no_token() {
    let mut spec = base();
    spec["runnerSecrets"] = json!(["web-0", "web-1"]);
    let objects = rendered(spec);
    let pod = pod(&objects);
    let text = serde_json::to_string(pod).unwrap();
    assert!(!text.contains("\"secret\":"), "no Secret volume would give every pod every runner's files: {text}");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["serviceAccountName"], "web-runner");
    let init = &pod["initContainers"][0];
    assert_eq!(init["args"], json!(["runner-credentials", "--secrets", "web-0,web-1", "--dir", CREDENTIALS_DIR]));
    let runner_mounts = pod["containers"][0]["volumeMounts"].to_string();
    assert!(!runner_mounts.contains("credentials-token"), "the runner container never sees the token");
    let role = find(&objects, "Role", "web-runner-credentials").unwrap();
    assert_eq!(role["rules"][0]["resourceNames"], json!(["web-0", "web-1"]));
    assert_eq!(role["rules"][0]["verbs"], json!(["get"]));
}

#[test]
fn with_fewer_registrations_than_max_runners_only_the_registered_runners_start() {
    let mut spec = base();
    spec["runnerSecrets"] = json!(["web-0"]);
    let objects = rendered(spec.clone());
    assert_eq!(find(&objects, "ScaledObject", "web").unwrap()["spec"]["maxReplicaCount"], 1);
    let warnings = runner_warnings(&runner(spec));
    assert!(warnings[0].contains("at most 1 run"), "{warnings:?}");
    let mut registering = base();
    registering["runner"] = json!({"image": "registry.example.com/self-registering-runner:1"});
    assert!(runner_warnings(&runner(registering)).is_empty());
    assert!(runner_warnings(&runner(base()))[0].contains("does not register itself"));
}

#[test]
fn the_original_patch_is_applied_to_the_statefulset_spec_and_a_bad_one_is_reported() {
    let mut spec = base();
    spec["runner"] =
        json!({"patch": "[{\"op\": \"replace\", \"path\": \"/podManagementPolicy\", \"value\": \"OrderedReady\"}]"});
    let objects = rendered(spec);
    assert_eq!(find(&objects, "StatefulSet", "web").unwrap()["spec"]["podManagementPolicy"], "OrderedReady");
    let mut spec = base();
    spec["runner"] = json!({"patch": "- op: remove\n  path: /nothing/here\n"});
    let error = runner_children(&runner(spec), &Settings::default(), None).unwrap_err();
    assert_eq!(error.reason(), "InvalidPatch");
}

#[test]
fn the_trigger_is_external_push_by_default_and_metrics_api_on_request() {
    let objects = rendered(base());
    let triggers = &find(&objects, "ScaledObject", "web").unwrap()["spec"]["triggers"];
    assert_eq!(triggers.as_array().unwrap().len(), 1);
    assert_eq!(triggers[0]["type"], "external-push");
    assert_eq!(triggers[0]["authenticationRef"], json!({"name": "metrics", "kind": "ClusterTriggerAuthentication"}));
    let mut spec = base();
    spec["scaling"] = json!({"trigger": "both", "pollingInterval": 15});
    let objects = rendered(spec);
    let scaled = &find(&objects, "ScaledObject", "web").unwrap()["spec"];
    assert_eq!(scaled["pollingInterval"], 15);
    assert_eq!(scaled["triggers"][1]["type"], "metrics-api");
    assert_eq!(
        scaled["triggers"][1]["metadata"]["url"],
        "https://metrics.github.svc:8443/api/v1/namespaces/ci/scaledactionrunners/web"
    );
    assert_eq!(scaled["triggers"][1]["metadata"]["authMode"], "tls");
}

#[test]
fn token_secrets_in_the_core_token_namespace_are_not_granted_per_runner() {
    let mut spec = base();
    spec["webhookSecret"] = json!("hook");
    spec["githubTokenSecret"] = json!("tokens");
    let server = ApiServer { token_namespace: Some("tokens".into()), ..api_server() };
    let children = runner_children(&runner(spec), &Settings::default(), Some(&server)).unwrap();
    let role = children.iter().map(Child::to_value).find(|o| o["kind"] == "Role").unwrap();
    assert_eq!(role["rules"][0]["resourceNames"], json!(["hook"]));
}

#[test]
fn user_environment_overrides_ours_and_labels_reach_the_runner() {
    let mut spec = base();
    spec["runner"] = json!({"runnerLabels": "linux, gpu", "env": [{"name": "RUNNER_WORKDIR", "value": "/w"}]});
    let objects = rendered(spec);
    let env = &pod(&objects)["containers"][0]["env"];
    let value = |name: &str| {
        env.as_array().unwrap().iter().filter(|e| e["name"] == name).map(|e| e["value"].clone()).collect::<Vec<_>>()
    };
    assert_eq!(value("RUNNER_WORKDIR"), [json!("/w")]);
    assert_eq!(value("LABELS"), [json!("linux,gpu")]);
}

#[test]
fn the_api_server_gets_only_the_named_secrets_and_may_list_and_watch_the_namespace_for_their_versions() {
    let mut spec = base();
    spec["webhookSecret"] = json!("hook");
    spec["githubTokenSecret"] = json!("token");
    let children = runner_children(&runner(spec), &Settings::default(), Some(&api_server())).unwrap();
    let role = children
        .iter()
        .map(Child::to_value)
        .find(|o| o["kind"] == "Role" && o["metadata"]["name"] == "web-api-server")
        .unwrap();
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["hook", "token"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]},
        ])
    );
}

#[test]
fn an_organisation_runner_registers_at_its_organisation_in_its_runner_group() {
    let env_of = |spec: Value| {
        let objects = rendered(spec);
        let env = pod(&objects)["containers"][0]["env"].as_array().unwrap().clone();
        env.iter()
            .filter(|e| e["value"].is_string())
            .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_str().unwrap().to_string()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let org = env_of(json!({"owner": "acme", "maxRunners": 2, "runnerGroup": "builders"}));
    assert_eq!(org.get("ORG_URL").map(String::as_str), Some("https://github.com/acme"));
    assert_eq!(org.get("ORG_NAME").map(String::as_str), Some("acme"));
    assert_eq!(org.get("RUNNER_SCOPE").map(String::as_str), Some("org"));
    assert_eq!(org.get("RUNNER_GROUP").map(String::as_str), Some("builders"));
    assert!(!org.contains_key("REPO_URL"), "{org:?}");
    let default_group = env_of(json!({"owner": "acme", "maxRunners": 2}));
    assert_eq!(default_group.get("RUNNER_GROUP").map(String::as_str), Some("Default"));
    let repo = env_of(base());
    assert_eq!(repo.get("REPO_URL").map(String::as_str), Some("https://github.com/acme/web"));
    assert!(!repo.contains_key("ORG_URL") && !repo.contains_key("RUNNER_GROUP"), "{repo:?}");
    let error = runner_children(&runner(json!({"owner": " ", "maxRunners": 2})), &Settings::default(), None);
    assert!(matches!(error, Err(SpecError::Invalid { field: "owner", .. })));
}

#[test]
fn an_ephemeral_runners_pods_hold_no_github_credential_only_a_pod_bound_token_for_the_api_server() {
    let mut spec = base();
    spec["githubTokenSecret"] = json!("web-github");
    spec["runner"] = json!({"ephemeral": true, "runnerLabels": "linux"});
    let objects = rendered(spec);
    let pod = pod(&objects);
    let container = &pod["containers"][0];
    assert!(container["command"][2].as_str().unwrap().contains("--jitconfig"), "{container}");
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e["value"].as_str().unwrap_or("").to_owned()))
        .collect();
    let value = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    assert_eq!(
        value("GAA_JIT_URL").as_deref(),
        Some("http://metrics.github.svc:8080/api/v1/namespaces/ci/scaledactionrunners/web/jitconfig")
    );
    // No Secret reaches the pod: no env from Secrets, no Secret volumes, no init container.
    let text = serde_json::to_string(pod).unwrap();
    assert!(!text.contains("secretKeyRef") && !text.contains("\"secret\"") && !text.contains("web-github"), "{text}");
    assert!(pod["initContainers"].is_null(), "{pod}");
    assert_eq!(pod["automountServiceAccountToken"], false);
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "jit-token").unwrap();
    let projection = &volume["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(projection["audience"], "github-action-autoscaler");
    assert!(projection["expirationSeconds"].as_i64().unwrap() <= 3600);
    // Its own account, with no permissions; the API server may read pods to check tokens.
    assert_eq!(pod["serviceAccountName"], "web-runner");
    assert!(!objects.iter().any(|o| o["kind"] == "RoleBinding" && o["subjects"][0]["name"] == "web-runner"));
    let api_role = find(&objects, "Role", "web-api-server").expect("the API server's Role");
    let rules = api_role["rules"].as_array().unwrap();
    assert!(rules.iter().any(|r| r["resources"][0] == "pods" && r["verbs"] == json!(["get", "list"])), "{rules:?}");
    // Pre-registered credentials and just-in-time registration exclude each other.
    let mut both = base();
    both["runnerSecrets"] = json!(["web-0"]);
    both["runner"] = json!({"ephemeral": true});
    let error = runner_children(&runner(both), &Settings::default(), None).unwrap_err();
    assert!(matches!(error, SpecError::Invalid { field: "runner.ephemeral", .. }), "{error}");
}
