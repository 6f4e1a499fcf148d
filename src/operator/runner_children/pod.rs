//! The runner pods: a StatefulSet whose pods drain their job before stopping and, with
//! pre-registered runners, copy only their own credentials through an init container.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapProjection, Container, DownwardAPIProjection, DownwardAPIVolumeFile, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ExecAction, HostPathVolumeSource, KeyToPath, Lifecycle, LifecycleHandler, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, ProjectedVolumeSource,
    ResourceRequirements, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::ResourceExt;

use super::{
    CREDENTIALS_DIR, DRAIN_SCRIPT, JIT_TOKEN_DIR, MESSAGE_RECORD_DIR, SERVICE_ACCOUNT_DIR, START_EPHEMERAL,
    START_WITH_CREDENTIALS, WORK_DIR,
};
use crate::crd::{RunnerTemplate, ScaledActionRunner};
use crate::operator::builders::{env, quantities};
use crate::operator::children::{labels, selector_labels};
use crate::operator::{Settings, SpecError};

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

/// A mount; `readOnly` is written only when true (the runner pods have always been rendered so).
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
pub(super) fn stateful_set(
    runner: &ScaledActionRunner,
    template: &RunnerTemplate,
    settings: &Settings,
    service_account: Option<String>,
    jit_url: Option<String>,
    metadata: ObjectMeta,
) -> Result<StatefulSet, SpecError> {
    let name = runner.name_any();
    let spec = &runner.spec;
    let credentials = !spec.runner_secrets.is_empty();
    let image =
        template.image.clone().filter(|image| !image.is_empty()).unwrap_or_else(|| settings.runner_image.clone());

    // A self-registering image registers where these say: the repository, or the organisation
    // and its runner group (named as common runner images read them).
    let mut runner_env = vec![env_from_field("RUNNER_NAME", "metadata.name")];
    match spec.runner_group() {
        None => runner_env.push(env("REPO_URL", spec.github_url())),
        Some(group) => runner_env.extend([
            env("ORG_URL", spec.github_url()),
            env("ORG_NAME", spec.owner.trim().to_string()),
            env("RUNNER_SCOPE", "org".to_string()),
            env("RUNNER_GROUP", group.to_string()),
        ]),
    }
    runner_env.extend([
        env("LABELS", spec.runner_labels().join(",")),
        env("RUNNER_WORKDIR", WORK_DIR),
        // The drain reads the messages the listener has received (see drain.sh).
        env("RUNNER_PERFLOG", MESSAGE_RECORD_DIR),
    ]);
    if credentials {
        runner_env.push(env("RUNNER_CREDENTIALS_DIR", CREDENTIALS_DIR));
    }
    let ephemeral = spec.ephemeral();
    if ephemeral {
        runner_env.push(env("GAA_JIT_URL", jit_url.unwrap_or_default()));
        runner_env.push(env("GAA_JIT_TOKEN_FILE", format!("{JIT_TOKEN_DIR}/token")));
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
    if ephemeral {
        mounts.push(mount("jit-token", JIT_TOKEN_DIR, true));
        volumes.push(jit_token_volume());
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
        command: if ephemeral {
            Some(vec!["/bin/sh".into(), "-c".into(), START_EPHEMERAL.into()])
        } else {
            credentials.then(|| vec!["/bin/sh".into(), "-c".into(), START_WITH_CREDENTIALS.into()])
        },
        env: Some(runner_env),
        resources: Some(ResourceRequirements {
            limits: Some(template.limits.clone().unwrap_or_else(|| quantities([("cpu", "2"), ("memory", "2000Mi")]))),
            requests: Some(
                template.requests.clone().unwrap_or_else(|| quantities([("cpu", "200m"), ("memory", "200Mi")])),
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
            requests: Some(quantities([("storage", "5Gi")])),
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

/// A just-in-time runner's token for the API server: its audience is the API server's alone (the
/// Kubernetes API refuses it), it is bound to the pod and lives 10 minutes (the kubelet renews it).
fn jit_token_volume() -> Volume {
    Volume {
        name: "jit-token".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    path: "token".into(),
                    audience: Some(crate::jit::AUDIENCE.into()),
                    expiration_seconds: Some(600),
                }),
                ..VolumeProjection::default()
            }]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
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
