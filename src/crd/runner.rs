//! `ScaledActionRunner`: one repository's self-hosted runners, scaled on its queued jobs.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::api::core::v1::{EnvVar, PersistentVolumeClaimSpec, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::duration::{DurationError, parse_duration};
use super::{conditions_schema, reflow_descriptions};
pub use crate::demand::Scope;

/// Key, in the Secret named by `webhookSecret`, holding the repository webhook's secret.
pub const WEBHOOK_SECRET_KEY: &str = "webhook-secret";
/// Keys of the Secret named by `githubTokenSecret` that start with this hold GitHub tokens
/// (`token`, `token1`, `tokenfoo`, …).
pub const GITHUB_TOKEN_KEY_PREFIX: &str = "token";
/// `scaleFactor` when it is not set.
pub const DEFAULT_SCALE_FACTOR: &str = "0.8";
/// Seconds a runner pod may take to finish its job when scaled down, when not set.
pub const DEFAULT_TERMINATION_GRACE_PERIOD: i64 = 3600;
/// `forceScaleUpWindow` when it is not set.
pub const DEFAULT_FORCE_SCALE_UP_WINDOW: Duration = Duration::from_secs(20 * 60);
/// `forceScaleUpFrequency` when it is not set: with the offset of up to a day, every
/// pre-registered runner connects within 13 days, before GitHub forgets it after 14.
pub const DEFAULT_FORCE_SCALE_UP_FREQUENCY: Duration = Duration::from_secs(12 * 24 * 60 * 60);

/// Self-hosted GitHub Actions runners for one repository (or, without `repo`, for every
/// repository of an organisation), scaled from zero to `maxRunners` on the queued and running
/// jobs they can take.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
// Printer columns as JSON: clippy reads repeated `type_ = ..` keys as duplicated attributes.
#[kube(
    group = "runner.devjoes.com",
    version = "v1alpha1",
    kind = "ScaledActionRunner",
    plural = "scaledactionrunners",
    shortname = "sar",
    namespaced,
    status = "ScaledActionRunnerStatus",
    derive = "PartialEq",
    doc = "ScaledActionRunner runs self-hosted GitHub Actions runners for one repository, or \
           for every repository of an organisation, and scales them on the jobs they can take.",
    printcolumn = r#"{"name": "Owner", "type": "string", "jsonPath": ".spec.owner"}"#,
    printcolumn = r#"{"name": "Repo", "type": "string", "jsonPath": ".spec.repo", "description": "Empty for an organisation runner"}"#,
    printcolumn = r#"{"name": "Scope", "type": "string", "jsonPath": ".status.scope", "description": "repository or organization"}"#,
    printcolumn = r#"{"name": "Group", "type": "string", "jsonPath": ".spec.runnerGroup", "priority": 1, "description": "Runner group of an organisation runner"}"#,
    printcolumn = r#"{"name": "Demand", "type": "integer", "jsonPath": ".status.demand", "description": "Jobs waiting for or running on these runners"}"#,
    printcolumn = r#"{"name": "Desired", "type": "integer", "jsonPath": ".status.desiredRunners", "description": "Runners the scaling function asks for"}"#,
    printcolumn = r#"{"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas", "description": "Runner pods currently requested"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = reflow_descriptions)]
pub struct ScaledActionRunnerSpec {
    /// GitHub user or organisation owning the repository (or, for an organisation runner, the
    /// organisation).
    pub owner: String,

    /// Repository name, without the owner. Unset (or empty): an organisation runner, serving
    /// every repository of `owner` whose jobs its labels match; where a repository runner and an
    /// organisation runner can both take a job, the one with fewer labels beyond the job's
    /// takes it, the repository runner on a tie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,

    /// Runner group an organisation runner registers in (the organisation's runner groups
    /// decide which repositories may use it). Default: `Default`. Ignored for repository
    /// runners, which GitHub keeps in no group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_group: Option<String>,

    /// Most runners to run at once.
    pub max_runners: i32,

    /// Fewest runners to keep, even with no demand. Default: 0 (scale to zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_runners: Option<i32>,

    /// Secrets, in this namespace, holding pre-registered runner credentials (one per replica,
    /// named `<name>-<index>`), as written by the original add-runner tool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runner_secrets: Vec<String>,

    /// Secret holding GitHub tokens used to read the job queue: every key starting with `token`
    /// (`token`, `token1`, …) is a token, one is picked per request. Read from the core's
    /// `apiServerPatTokenNamespace`, or else this namespace. Without it the runner is scaled on
    /// webhook events alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_token_secret: Option<String>,

    /// Secret, in this namespace, whose key `webhook-secret` holds the secret of the
    /// repository's webhook; deliveries for this repository must be signed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,

    /// How the KEDA ScaledObject created for this runner behaves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Scaling>,

    /// How demand maps to runners, as a decimal string: `"0"` scales linearly, any other `k`
    /// follows the logistic curve `max / (1 + max * e^(-k * jobs))`. Default: `"0.8"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_factor: Option<String>,

    /// Which jobs count as demand, as comma-separated labels over the job's metadata, e.g.
    /// `wf_name=main` or `wf_runs_on_deploy`. Unset (or `*`) counts every job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_selector: Option<String>,

    /// README spelling of `metricsSelector` (also what add-runner wrote). Used only when
    /// `metricsSelector` is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// How long a forced scale-up to `maxRunners` lasts, e.g. `20m`; long enough for nodes to be
    /// provisioned and runners to come online. `0` disables forced scale-ups. Default: 20m.
    /// Forced scale-ups keep pre-registered runners (`runnerSecrets`) known to GitHub, which
    /// forgets a runner that has not connected for 14 days; other runners have them only when
    /// this or `forceScaleUpFrequency` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_scale_up_window: Option<String>,

    /// Time between forced scale-ups to `maxRunners`, e.g. `288h` or `12d`, which keep runner
    /// registrations from expiring; a fixed delay of up to a day per runner is added, so runners
    /// do not all scale up at once. Default: 12d (GitHub forgets runners after 14 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_scale_up_frequency: Option<String>,

    /// How the runner pods (a StatefulSet) are built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<RunnerTemplate>,
}

/// Settings of the KEDA ScaledObject that scales the runners.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = reflow_descriptions)]
pub struct Scaling {
    /// Scale-up and scale-down policies of the HorizontalPodAutoscaler KEDA creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,

    /// Seconds between KEDA's checks of the demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling_interval: Option<i32>,

    /// Seconds to wait after the last active check before scaling to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_period: Option<i32>,

    /// How KEDA reads the demand: `externalPush` (default: the API server pushes a queued job
    /// to KEDA at once over gRPC, and KEDA reads the runner count over the same stream),
    /// `metricsApi` (KEDA polls the API server's JSON every `pollingInterval`, as the original
    /// project did) or `both`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<TriggerKind>,
}

/// Which KEDA trigger(s) the ScaledObject uses to read the demand.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TriggerKind {
    /// KEDA `external-push`: instant scale-up from zero.
    #[default]
    ExternalPush,
    /// KEDA `metrics-api`: polled.
    MetricsApi,
    /// Both triggers; KEDA follows the larger.
    Both,
}

/// How the runner pods are built.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = reflow_descriptions)]
pub struct RunnerTemplate {
    /// Container image of the runner. Defaults to the operator's runner image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Comma-separated labels the runners register with, matched against jobs' `runs-on`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_labels: Option<String>,

    /// Older README (and add-runner) spelling of `runnerLabels`; both lists are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,

    /// Extra environment variables of the runner container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Annotations added to the runner pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,

    /// Whether to mount the node's `/var/run/docker.sock` into the runner, which gives every
    /// job root on the node. Default: false (the original mounted it unless told not to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_docker_sock: Option<bool>,

    /// Just-in-time runners: each runner start registers a fresh runner for exactly one job,
    /// with a configuration the API server mints from GitHub for the pod (which proves who it is
    /// with its own ServiceAccount token, and holds no GitHub credential). Default: false
    /// (pre-registered or self-registering runners, as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<bool>,

    /// Node labels the runner pods must be scheduled on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// README spelling of `nodeSelector`, merged into it (`nodeSelector` wins on a shared key).
    /// Accepts a map or a list of `key=value` strings; other shapes are kept but ignored, as
    /// the original operator ignored this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selectors: Option<LooseNodeSelectors>,

    /// Service account of the runner pods. Default: `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Tolerations of the runner pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Claim template of each runner's work volume. Default: 5Gi on the default storage class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_volume_claim_template: Option<PersistentVolumeClaimSpec>,

    /// Resource limits of the runner container. Default: `{cpu: 2, memory: 2000Mi}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<BTreeMap<String, Quantity>>,

    /// Resource requests of the runner container. Default: `{cpu: 200m, memory: 200Mi}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<BTreeMap<String, Quantity>>,

    /// Seconds a runner pod being scaled down may take to finish its running job before it is
    /// killed: the pod stops only once no job is running, or when this runs out. Default: 3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,

    /// RFC 6902 JSON patch applied to the generated StatefulSet's `spec`, for anything the other
    /// fields do not cover. Prefer `replace` to `add`: the patch is applied on every reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
}

/// The README's `nodeSelectors`, kept exactly as written because its shape was never fixed:
/// the README showed `Default: []` while `nodeSelector` is a map, and the original schema
/// pruned the field, so any value was accepted.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(transparent)]
pub struct LooseNodeSelectors(pub Value);

impl LooseNodeSelectors {
    /// The selector pairs this value spells: a map's entries (scalar values as text), a list's
    /// `key=value` strings or single-entry maps. Anything else contributes nothing.
    pub fn pairs(&self) -> BTreeMap<String, String> {
        let mut pairs = BTreeMap::new();
        match &self.0 {
            Value::Object(map) => insert_scalar_entries(&mut pairs, map),
            Value::Array(items) => {
                for item in items {
                    match item {
                        Value::String(entry) => {
                            if let Some((key, value)) = entry.split_once('=') {
                                let key = key.trim();
                                if !key.is_empty() {
                                    pairs.insert(key.to_owned(), value.trim().to_owned());
                                }
                            }
                        }
                        Value::Object(map) => insert_scalar_entries(&mut pairs, map),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        pairs
    }
}

fn insert_scalar_entries(pairs: &mut BTreeMap<String, String>, map: &serde_json::Map<String, Value>) {
    for (key, value) in map {
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Bool(_) | Value::Number(_) => value.to_string(),
            _ => continue,
        };
        pairs.insert(key.clone(), text);
    }
}

impl JsonSchema for LooseNodeSelectors {
    fn schema_name() -> Cow<'static, str> {
        "LooseNodeSelectors".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
    }
}

/// Observed state of a `ScaledActionRunner`, written by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(transform = reflow_descriptions)]
pub struct ScaledActionRunnerStatus {
    /// Latest observations of the runner's state, one per `type` (for example `Ready`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` the status was computed from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Jobs counted as demand: queued plus in progress, after `metricsSelector`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demand: Option<i64>,

    /// Jobs waiting for a runner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<i64>,

    /// Jobs running on a runner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<i64>,

    /// Runners the scaling function asks for, between `minRunners` and `maxRunners`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_runners: Option<i32>,

    /// Replicas of the runner StatefulSet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// Ephemeral runners: just-in-time registrations GitHub holds for the runner's pods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registered_runners: Option<i32>,

    /// Ephemeral runners: of those registrations, the ones running a job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy_runners: Option<i32>,

    /// `repository` (the runner serves `repo`) or `organization` (every repository of `owner`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,

    /// When the demand was last reconciled against GitHub's API (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_resync_time: Option<String>,

    /// Demand GitHub's API reported minus the webhook-derived demand, at the last resync.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_drift: Option<i64>,

    /// Secrets the runners reference, by name, each with the version of its content last
    /// applied to the runners (kept from the original CRD).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub referenced_secrets: BTreeMap<String, String>,
}

/// Splits a comma-separated label list, trimming each label and dropping empty ones.
fn split_labels(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|label| !label.is_empty())
}

fn non_empty(value: Option<&String>) -> Option<&str> {
    value.map(|text| text.trim()).filter(|text| !text.is_empty())
}

impl RunnerTemplate {
    /// Labels the runners register with: `runnerLabels` then the older `labels`, split on
    /// commas, trimmed, without empties or repeats.
    pub fn runner_labels(&self) -> Vec<String> {
        let mut labels: Vec<String> = Vec::new();
        let lists = [self.runner_labels.as_deref(), self.labels.as_deref()];
        for label in lists.into_iter().flatten().flat_map(split_labels) {
            if !labels.iter().any(|known| known == label) {
                labels.push(label.to_owned());
            }
        }
        labels
    }

    /// Node selector of the runner pods: the README's `nodeSelectors` overlaid by
    /// `nodeSelector`.
    pub fn node_selector(&self) -> BTreeMap<String, String> {
        let mut selector = self.node_selectors.as_ref().map(LooseNodeSelectors::pairs).unwrap_or_default();
        selector.extend(self.node_selector.iter().map(|(key, value)| (key.clone(), value.clone())));
        selector
    }

    /// Whether to mount the Docker socket (default false).
    pub fn mount_docker_sock(&self) -> bool {
        self.mount_docker_sock.unwrap_or(false)
    }

    /// Whether the runners are just-in-time runners (default false).
    pub fn ephemeral(&self) -> bool {
        self.ephemeral.unwrap_or(false)
    }

    /// Grace period of a runner pod being scaled down (default [`DEFAULT_TERMINATION_GRACE_PERIOD`]).
    pub fn termination_grace_period_seconds(&self) -> i64 {
        self.termination_grace_period_seconds.unwrap_or(DEFAULT_TERMINATION_GRACE_PERIOD)
    }
}

pub use crate::demand::runners::DEFAULT_RUNNER_GROUP;

impl ScaledActionRunnerSpec {
    /// The repository's name, trimmed; `None` for an organisation runner.
    pub fn repository(&self) -> Option<&str> {
        self.repo.as_deref().map(str::trim).filter(|r| !r.is_empty())
    }

    /// Whether this runner serves one repository or the whole organisation.
    pub fn scope(&self) -> Scope {
        if self.repository().is_some() { Scope::Repository } else { Scope::Organization }
    }

    /// The runner group an organisation runner registers in ([`DEFAULT_RUNNER_GROUP`] when unset
    /// or blank); `None` for a repository runner.
    pub fn runner_group(&self) -> Option<&str> {
        match self.scope() {
            Scope::Repository => None,
            Scope::Organization => Some(non_empty(self.runner_group.as_ref()).unwrap_or(DEFAULT_RUNNER_GROUP)),
        }
    }

    /// The GitHub URL runners register at: the repository's, or the organisation's.
    pub fn github_url(&self) -> String {
        let owner = self.owner.trim();
        match self.repository() {
            Some(repo) => format!("https://github.com/{owner}/{repo}"),
            None => format!("https://github.com/{owner}"),
        }
    }

    /// Whether the runners are just-in-time runners ([`RunnerTemplate::ephemeral`]).
    pub fn ephemeral(&self) -> bool {
        self.runner.as_ref().is_some_and(RunnerTemplate::ephemeral)
    }

    /// Labels the runners register with; see [`RunnerTemplate::runner_labels`].
    pub fn runner_labels(&self) -> Vec<String> {
        self.runner.as_ref().map(RunnerTemplate::runner_labels).unwrap_or_default()
    }

    /// The metrics selector, from `metricsSelector` or else its README spelling `selector`.
    /// `None` selects every job: blank values and the README's default `*` count as unset.
    pub fn metrics_selector(&self) -> Option<&str> {
        let selects_some = |selector: &&str| *selector != "*";
        non_empty(self.metrics_selector.as_ref()).or(non_empty(self.selector.as_ref())).filter(selects_some)
    }

    /// Fewest runners (default 0).
    pub fn min_runners(&self) -> i32 {
        self.min_runners.unwrap_or(0)
    }

    /// `scaleFactor`, or [`DEFAULT_SCALE_FACTOR`] when unset or blank.
    pub fn scale_factor(&self) -> &str {
        non_empty(self.scale_factor.as_ref()).unwrap_or(DEFAULT_SCALE_FACTOR)
    }

    /// `forceScaleUpWindow`, or [`DEFAULT_FORCE_SCALE_UP_WINDOW`] when unset or blank; zero
    /// disables forced scale-ups.
    pub fn force_scale_up_window(&self) -> Result<Duration, DurationError> {
        non_empty(self.force_scale_up_window.as_ref()).map_or(Ok(DEFAULT_FORCE_SCALE_UP_WINDOW), parse_duration)
    }

    /// `forceScaleUpFrequency`, or [`DEFAULT_FORCE_SCALE_UP_FREQUENCY`] when unset or blank.
    pub fn force_scale_up_frequency(&self) -> Result<Duration, DurationError> {
        non_empty(self.force_scale_up_frequency.as_ref()).map_or(Ok(DEFAULT_FORCE_SCALE_UP_FREQUENCY), parse_duration)
    }
}
