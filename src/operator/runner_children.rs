//! What a `ScaledActionRunner` becomes: the runner StatefulSet, its KEDA ScaledObject, and the
//! narrow RBAC that lets the API server read the runner's Secrets and each runner pod read only
//! its own credentials.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapProjection, Container, DownwardAPIProjection, DownwardAPIVolumeFile, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ExecAction, HostPathVolumeSource, KeyToPath, Lifecycle, LifecycleHandler, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, ProjectedVolumeSource,
    ResourceRequirements, ServiceAccount, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
    VolumeResourceRequirements,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::{Resource, ResourceExt};

use super::children::{Child, SpecError, labels, selector_labels};
use super::keda::{Advanced, AuthenticationRef, HpaConfig, ScaleTargetRef, ScaledObject, ScaledObjectSpec, Trigger};
use super::{ApiServer, Settings, ports};
use crate::crd::{RunnerTemplate, ScaledActionRunner, TriggerKind};

/// Where each runner pod finds its own registration files (`.runner`, `.credentials`,
/// `.credentials_rsaparams`), copied there by the credentials init container.
pub const CREDENTIALS_DIR: &str = "/runner-credentials";
/// The runner's work directory (its volume claim is mounted here).
pub const WORK_DIR: &str = "/home/runner/_work";
/// Where the init container's own service-account token is mounted: the standard path, so the
/// in-cluster client finds it, in that container only.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Runs before the runner container is stopped: waits while the runner's worker process (which
/// exists only while a job runs) is alive. The bracket keeps grep from matching itself.
pub const DRAIN_SCRIPT: &str = "while grep -qs 'Runner\\.Worke[r]' /proc/[0-9]*/cmdline; do sleep 2; done";
/// Copies the pod's registration files into the runner's home, then starts the runner.
const START_WITH_CREDENTIALS: &str = "set -e; home=\"${RUNNER_HOME:-/home/runner}\"; \
     cp /runner-credentials/.runner /runner-credentials/.credentials /runner-credentials/.credentials_rsaparams \"$home/\"; \
     exec \"$home/run.sh\"";

/// Everything a runner needs applied, in apply order (RBAC and accounts before the pods that use
/// them, the StatefulSet before the ScaledObject that scales it).
pub fn runner_children(
    runner: &ScaledActionRunner,
    settings: &Settings,
    api_server: Option<&ApiServer>,
) -> Result<Vec<Child>, SpecError> {
    let name = runner.name_any();
    let namespace = runner.namespace().unwrap_or_else(|| crate::catalog::DEFAULT_NAMESPACE.to_owned());
    validate(runner)?;
    let owner = runner.controller_owner_ref(&());
    let meta = |object_name: String, component: &str| ObjectMeta {
        name: Some(object_name),
        namespace: Some(namespace.clone()),
        labels: Some(labels(&name, component)),
        owner_references: owner.clone().map(|owner| vec![owner]),
        ..ObjectMeta::default()
    };

    let mut children = Vec::new();
    if let Some(api_server) = api_server {
        children.extend(api_server_secret_access(runner, api_server, &meta));
    }
    let template = runner.spec.runner.clone().unwrap_or_default();
    let credentials = !runner.spec.runner_secrets.is_empty();
    let service_account = match template.service_account_name.as_deref().filter(|account| !account.is_empty()) {
        Some(account) => Some(account.to_owned()),
        None if credentials => {
            let account = format!("{name}-runner");
            children.push(Child::typed(&ServiceAccount {
                metadata: meta(account.clone(), "runner"),
                automount_service_account_token: Some(false),
                ..ServiceAccount::default()
            }));
            Some(account)
        }
        None => None,
    };
    if credentials {
        let account = service_account.clone().unwrap_or_default();
        children.extend(credentials_access(runner, &account, &namespace, &meta));
    }
    children.push(Child::typed(&stateful_set(
        runner,
        &template,
        settings,
        service_account,
        meta(name.clone(), "runner"),
    )?));
    if let Some(api_server) = api_server {
        children.push(Child::typed(&scaled_object(runner, api_server, meta(name.clone(), "runner"))));
    }
    Ok(children)
}

/// What the runner asks for that is not honoured as written, one sentence each (for its `Ready`
/// condition and `render`'s notes); the runner is still applied.
pub fn runner_warnings(runner: &ScaledActionRunner) -> Vec<String> {
    let spec = &runner.spec;
    let mut warnings = Vec::new();
    let image_named =
        spec.runner.as_ref().and_then(|template| template.image.as_deref()).is_some_and(|image| !image.is_empty());
    if spec.runner_secrets.is_empty() && !image_named {
        warnings.push(
            "no runnerSecrets and no runner.image: the default image (GitHub's runner) does not register itself; \
             onboard with --runner-dir, or name an image that registers from its environment"
                .to_owned(),
        );
    }
    if let Some(limit) = registered_limit(runner)
        && limit < spec.max_runners
    {
        warnings.push(format!(
            "runnerSecrets names {limit} registered runners but maxRunners is {}: at most {limit} run, one per registration",
            spec.max_runners
        ));
    }
    warnings
}

/// With pre-registered runners, each pod needs a registration of its own: no more pods than
/// `runnerSecrets` can run.
fn registered_limit(runner: &ScaledActionRunner) -> Option<i32> {
    let secrets = runner.spec.runner_secrets.len();
    (secrets > 0).then(|| i32::try_from(secrets).unwrap_or(i32::MAX))
}

fn validate(runner: &ScaledActionRunner) -> Result<(), SpecError> {
    let spec = &runner.spec;
    let invalid = |field, reason: String| Err(SpecError::Invalid { field, reason });
    if spec.owner.trim().is_empty() || spec.repo.trim().is_empty() {
        return invalid("owner", "owner and repo must name the repository".into());
    }
    if spec.max_runners < 0 {
        return invalid("maxRunners", format!("must not be negative (is {})", spec.max_runners));
    }
    if spec.min_runners() < 0 || spec.min_runners() > spec.max_runners {
        return invalid("minRunners", format!("must be between 0 and maxRunners ({})", spec.max_runners));
    }
    if let Err(problem) = spec.scale_factor().parse::<crate::demand::ScaleFactor>() {
        return invalid("scaleFactor", problem.to_string());
    }
    if let Err(problem) = spec.force_scale_up_window() {
        return invalid("forceScaleUpWindow", problem.to_string());
    }
    if let Err(problem) = spec.force_scale_up_frequency() {
        return invalid("forceScaleUpFrequency", problem.to_string());
    }
    if let Some(template) = &spec.runner
        && template.termination_grace_period_seconds() < 0
    {
        return invalid("runner.terminationGracePeriodSeconds", "must not be negative".into());
    }
    Ok(())
}

/// Lets the API server read exactly the Secrets this runner names (by name, so it can watch
/// them with a `metadata.name` field selector), and nothing else in the namespace.
fn api_server_secret_access(
    runner: &ScaledActionRunner,
    api_server: &ApiServer,
    meta: &impl Fn(String, &str) -> ObjectMeta,
) -> Vec<Child> {
    let mut names: Vec<String> = runner.spec.webhook_secret.iter().cloned().collect();
    if api_server.token_namespace.is_none() {
        names.extend(runner.spec.github_token_secret.iter().cloned());
    }
    names.retain(|secret| !secret.is_empty());
    names.dedup();
    if names.is_empty() {
        return Vec::new();
    }
    let object_name = format!("{}-api-server", runner.name_any());
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: api_server.name.clone(),
        namespace: Some(api_server.namespace.clone()),
        ..Subject::default()
    };
    secret_reader(meta(object_name, "api-server-access"), names, &["get", "list", "watch"], subject)
}

/// Lets the runner pods' service account read the runner's credential Secrets: only the
/// credentials init container holds a token, and it copies the one Secret of its own ordinal.
fn credentials_access(
    runner: &ScaledActionRunner,
    account: &str,
    namespace: &str,
    meta: &impl Fn(String, &str) -> ObjectMeta,
) -> Vec<Child> {
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: account.to_owned(),
        namespace: Some(namespace.to_owned()),
        ..Subject::default()
    };
    let object_name = format!("{}-runner-credentials", runner.name_any());
    secret_reader(meta(object_name, "runner"), runner.spec.runner_secrets.clone(), &["get"], subject)
}

fn secret_reader(metadata: ObjectMeta, names: Vec<String>, verbs: &[&str], subject: Subject) -> Vec<Child> {
    let name = metadata.name.clone().unwrap_or_default();
    let role = Role {
        metadata: metadata.clone(),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            resource_names: Some(names),
            verbs: verbs.iter().map(|verb| (*verb).to_owned()).collect(),
            ..PolicyRule::default()
        }]),
    };
    let binding = RoleBinding {
        metadata,
        role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "Role".into(), name },
        subjects: Some(vec![subject]),
    };
    vec![Child::typed(&role), Child::typed(&binding)]
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs.iter().map(|(key, value)| ((*key).to_owned(), Quantity((*value).to_owned()))).collect()
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..EnvVar::default() }
}

fn env_from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..ObjectFieldSelector::default() }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// The runner pods. Replicas are left out: KEDA owns them (the controller sets `minRunners`
/// once, when it creates the StatefulSet).
fn stateful_set(
    runner: &ScaledActionRunner,
    template: &RunnerTemplate,
    settings: &Settings,
    service_account: Option<String>,
    metadata: ObjectMeta,
) -> Result<StatefulSet, SpecError> {
    let name = runner.name_any();
    let spec = &runner.spec;
    let credentials = !spec.runner_secrets.is_empty();
    let image =
        template.image.clone().filter(|image| !image.is_empty()).unwrap_or_else(|| settings.runner_image.clone());

    let mut runner_env = vec![
        env_from_field("RUNNER_NAME", "metadata.name"),
        env("REPO_URL", format!("https://github.com/{}/{}", spec.owner, spec.repo)),
        env("LABELS", spec.runner_labels().join(",")),
        env("RUNNER_WORKDIR", WORK_DIR),
    ];
    if credentials {
        runner_env.push(env("RUNNER_CREDENTIALS_DIR", CREDENTIALS_DIR));
    }
    // The user's variables win over ours on a shared name.
    runner_env.retain(|ours| !template.env.iter().any(|theirs| theirs.name == ours.name));
    runner_env.extend(template.env.iter().cloned());

    let mut mounts = vec![mount("work", WORK_DIR, false)];
    let mut volumes = Vec::new();
    if credentials {
        mounts.push(mount("runner-credentials", CREDENTIALS_DIR, true));
        volumes.push(Volume {
            name: "runner-credentials".into(),
            empty_dir: Some(EmptyDirVolumeSource { medium: Some("Memory".into()), ..EmptyDirVolumeSource::default() }),
            ..Volume::default()
        });
        volumes.push(init_token_volume());
    }
    if template.mount_docker_sock() {
        mounts.push(mount("docker-sock", "/var/run/docker.sock", false));
        volumes.push(Volume {
            name: "docker-sock".into(),
            host_path: Some(HostPathVolumeSource { path: "/var/run/docker.sock".into(), type_: Some("Socket".into()) }),
            ..Volume::default()
        });
    }

    let container = Container {
        name: "runner".into(),
        image: Some(image),
        command: credentials.then(|| vec!["/bin/sh".into(), "-c".into(), START_WITH_CREDENTIALS.into()]),
        env: Some(runner_env),
        resources: Some(ResourceRequirements {
            limits: Some(template.limits.clone().unwrap_or_else(|| quantities(&[("cpu", "2"), ("memory", "2000Mi")]))),
            requests: Some(
                template.requests.clone().unwrap_or_else(|| quantities(&[("cpu", "200m"), ("memory", "200Mi")])),
            ),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(mounts),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction { command: Some(vec!["/bin/sh".into(), "-c".into(), DRAIN_SCRIPT.into()]) }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        ..Container::default()
    };
    let init_containers = credentials.then(|| {
        vec![Container {
            name: "credentials".into(),
            image: Some(settings.image.clone()),
            args: Some(vec![
                "runner-credentials".into(),
                "--secrets".into(),
                spec.runner_secrets.join(","),
                "--dir".into(),
                CREDENTIALS_DIR.into(),
            ]),
            env: Some(vec![env_from_field("POD_NAME", "metadata.name")]),
            volume_mounts: Some(vec![
                mount("runner-credentials", CREDENTIALS_DIR, false),
                mount("credentials-token", SERVICE_ACCOUNT_DIR, true),
            ]),
            security_context: Some(restricted_container()),
            ..Container::default()
        }]
    });

    let selector = selector_labels(&name, "runner");
    let mut pod_labels = selector.clone();
    pod_labels.extend(labels(&name, "runner"));
    let user_account = template.service_account_name.as_deref().is_some_and(|account| !account.is_empty());
    let pod = PodSpec {
        // Job code never gets a Kubernetes token unless the user chose the account.
        automount_service_account_token: (!user_account).then_some(false),
        service_account_name: service_account,
        containers: vec![container],
        init_containers,
        volumes: (!volumes.is_empty()).then_some(volumes),
        node_selector: Some(template.node_selector()).filter(|selector| !selector.is_empty()),
        tolerations: Some(template.tolerations.clone()).filter(|tolerations| !tolerations.is_empty()),
        termination_grace_period_seconds: Some(template.termination_grace_period_seconds()),
        ..PodSpec::default()
    };
    let work_claim = template.work_volume_claim_template.clone().unwrap_or_else(|| PersistentVolumeClaimSpec {
        access_modes: Some(vec!["ReadWriteOnce".into()]),
        resources: Some(VolumeResourceRequirements {
            requests: Some(quantities(&[("storage", "5Gi")])),
            ..VolumeResourceRequirements::default()
        }),
        ..PersistentVolumeClaimSpec::default()
    });
    let set_spec = StatefulSetSpec {
        selector: LabelSelector { match_labels: Some(selector), ..LabelSelector::default() },
        // Every runner a burst of jobs asks for starts at once, not one after another.
        pod_management_policy: Some("Parallel".into()),
        persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
            when_deleted: Some("Delete".into()),
            when_scaled: Some("Retain".into()),
        }),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(pod_labels),
                annotations: Some(template.annotations.clone()).filter(|annotations| !annotations.is_empty()),
                ..ObjectMeta::default()
            }),
            spec: Some(pod),
        },
        volume_claim_templates: Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta { name: Some("work".into()), ..ObjectMeta::default() },
            spec: Some(work_claim),
            ..PersistentVolumeClaim::default()
        }]),
        ..StatefulSetSpec::default()
    };
    let set_spec = match template.patch.as_deref().filter(|patch| !patch.trim().is_empty()) {
        Some(patch) => apply_patch(set_spec, patch)?,
        None => set_spec,
    };
    Ok(StatefulSet { metadata, spec: Some(set_spec), ..StatefulSet::default() })
}

/// The init container's token, CA and namespace at the standard path, so only that container
/// can call the API server (the pod does not automount a token).
fn init_token_volume() -> Volume {
    let item = |key: &str| KeyToPath { key: key.into(), path: key.into(), ..KeyToPath::default() };
    Volume {
        name: "credentials-token".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: Some(3607),
                        ..ServiceAccountTokenProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![item("ca.crt")]),
                        ..ConfigMapProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.namespace".into(),
                                ..ObjectFieldSelector::default()
                            }),
                            ..DownwardAPIVolumeFile::default()
                        }]),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn restricted_container() -> k8s_openapi::api::core::v1::SecurityContext {
    k8s_openapi::api::core::v1::SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        capabilities: Some(k8s_openapi::api::core::v1::Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(k8s_openapi::api::core::v1::SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Applies the original's RFC 6902 `runner.patch` to the StatefulSet's spec.
fn apply_patch(spec: StatefulSetSpec, patch: &str) -> Result<StatefulSetSpec, SpecError> {
    // The original took the patch as YAML or JSON text; YAML is a superset of JSON.
    let operations: json_patch::Patch =
        serde_saphyr::from_str(patch).map_err(|error| SpecError::PatchParse(error.to_string()))?;
    let mut document = serde_json::to_value(spec).map_err(|error| SpecError::PatchedShape(error.to_string()))?;
    json_patch::patch(&mut document, &operations).map_err(|error| SpecError::PatchApply(error.to_string()))?;
    serde_json::from_value(document).map_err(|error| SpecError::PatchedShape(error.to_string()))
}

/// KEDA scales the StatefulSet between `minRunners` and `maxRunners` on the API server's
/// desired runner count (`targetValue` 1: replicas = the value).
fn scaled_object(runner: &ScaledActionRunner, api_server: &ApiServer, metadata: ObjectMeta) -> ScaledObject {
    let name = runner.name_any();
    let namespace = metadata.namespace.clone().unwrap_or_default();
    let scaling = runner.spec.scaling.clone().unwrap_or_default();
    let kind = scaling.trigger.unwrap_or_default();
    let authentication = api_server
        .cluster_trigger_authentication
        .as_ref()
        .map(|auth| AuthenticationRef { name: auth.clone(), kind: Some("ClusterTriggerAuthentication".into()) });
    let mut triggers = Vec::new();
    if matches!(kind, TriggerKind::ExternalPush | TriggerKind::Both) {
        triggers.push(Trigger {
            type_: "external-push".into(),
            name: Some("push".into()),
            metadata: BTreeMap::from([
                ("scalerAddress".into(), format!("{}:{}", api_server.host(), ports::GRPC)),
                ("runnerNamespace".into(), namespace.clone()),
                ("runnerName".into(), name.clone()),
            ]),
            authentication_ref: authentication.clone(),
        });
    }
    if matches!(kind, TriggerKind::MetricsApi | TriggerKind::Both) {
        let mut metadata = BTreeMap::from([
            (
                "url".into(),
                format!(
                    "https://{}:{}/api/v1/namespaces/{namespace}/scaledactionrunners/{name}",
                    api_server.host(),
                    ports::TLS
                ),
            ),
            ("format".into(), "json".into()),
            ("valueLocation".into(), "value".into()),
            ("targetValue".into(), "1".into()),
            ("activationTargetValue".into(), "0".into()),
        ]);
        if authentication.is_some() {
            metadata.insert("authMode".into(), "tls".into());
        }
        triggers.push(Trigger {
            type_: "metrics-api".into(),
            name: Some("poll".into()),
            metadata,
            authentication_ref: authentication,
        });
    }
    ScaledObject {
        metadata,
        spec: ScaledObjectSpec {
            scale_target_ref: ScaleTargetRef { api_version: "apps/v1".into(), kind: "StatefulSet".into(), name },
            min_replica_count: Some(runner.spec.min_runners()),
            max_replica_count: Some(
                registered_limit(runner).map_or(runner.spec.max_runners, |limit| limit.min(runner.spec.max_runners)),
            ),
            polling_interval: scaling.polling_interval,
            cooldown_period: scaling.cooldown_period,
            advanced: scaling.behavior.map(|behavior| Advanced {
                horizontal_pod_autoscaler_config: Some(HpaConfig { behavior: Some(behavior) }),
            }),
            triggers,
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

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

    /// Runs the real preStop script against a process named like the runner's worker.
    #[test]
    fn the_drain_script_returns_only_after_the_running_job_has_ended() {
        let mut worker =
            std::process::Command::new("bash").args(["-c", "exec -a Runner.Worker sleep 1"]).spawn().expect("bash");
        let drained = std::process::Command::new("sh").args(["-c", DRAIN_SCRIPT]).status().expect("sh");
        assert!(drained.success());
        assert!(worker.try_wait().unwrap().is_some(), "the script returned while the job was still running");
        // With no job running it returns at once.
        assert!(std::process::Command::new("sh").args(["-c", DRAIN_SCRIPT]).status().unwrap().success());
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
        spec["runner"] = json!({"patch": "[{\"op\": \"replace\", \"path\": \"/podManagementPolicy\", \"value\": \"OrderedReady\"}]"});
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
        assert_eq!(
            triggers[0]["authenticationRef"],
            json!({"name": "metrics", "kind": "ClusterTriggerAuthentication"})
        );
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
}
