//! The objects onboarding prints: the read-token Secret, the webhook Secret, one credentials
//! Secret per pre-registered runner, and the ScaledActionRunner naming them (a repository's, or
//! an organisation's: no `repo`, and its `runnerGroup` when one was named). Pure.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use secrecy::ExposeSecret;

use super::target::Target;
use crate::crd::{
    GITHUB_TOKEN_KEY_PREFIX, RunnerTemplate, ScaledActionRunner, ScaledActionRunnerSpec, WEBHOOK_SECRET_KEY,
};
use crate::operator::Child;
use crate::operator::render::{YamlError, to_yaml};
use crate::webhook::SecretBytes;

/// The files `config.sh` writes into the runner directory, which the runner pod's init
/// container writes back (`runner-credentials`): the Secret keys are exactly these names.
pub const RUNNER_FILES: [&str; 3] = [".runner", ".credentials", ".credentials_rsaparams"];

/// Label on every object onboarding prints, so they can be found (and told apart from the
/// operator's children).
pub const CREATED_BY: (&str, &str) = ("app.kubernetes.io/created-by", "github-action-autoscaler-onboard");

/// Everything the printed objects are made of.
#[derive(Debug, Clone)]
pub struct Onboarding {
    pub name: String,
    pub namespace: String,
    /// Namespace of the read-token Secret (the core's `apiServerPatTokenNamespace`, or else the
    /// runner's own).
    pub token_namespace: String,
    /// Whose runners: a repository's or an organisation's.
    pub target: Target,
    pub max_runners: i32,
    pub min_runners: Option<i32>,
    pub labels: Vec<String>,
    pub image: Option<String>,
    pub read_token: SecretBytes,
    pub webhook_secret: SecretBytes,
    pub runners: Runners,
}

/// The runners' identities.
#[derive(Debug, Clone, PartialEq)]
pub enum Runners {
    /// Runners register themselves when they start (no `runnerSecrets`).
    SelfRegistering,
    /// `runnerSecrets` are named but their Secrets are not printed (a dry run registers none).
    Named(u32),
    /// Registered at onboarding: the files of ordinal i become Secret `<name>-i`.
    Registered(Vec<RunnerFiles>),
}

/// One registered runner's files, keyed by file name ([`RUNNER_FILES`]).
#[derive(Clone, PartialEq)]
pub struct RunnerFiles(pub BTreeMap<String, Vec<u8>>);

impl std::fmt::Debug for RunnerFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The files hold the runner's private key: names only.
        f.debug_tuple("RunnerFiles").field(&self.0.keys().collect::<Vec<_>>()).finish()
    }
}

pub fn token_secret_name(name: &str) -> String {
    format!("{name}-github-token")
}

pub fn webhook_secret_name(name: &str) -> String {
    format!("{name}-webhook")
}

/// The Secret of the runner pod with this ordinal, as the original add-runner named it.
pub fn runner_secret_name(name: &str, ordinal: u32) -> String {
    format!("{name}-{ordinal}")
}

/// Splits `a, b,,c` into labels, trimmed, without empties or repeats (case-insensitive, as
/// GitHub matches them), in the order given.
pub fn parse_labels(list: &str) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    for label in list.split(',').map(str::trim).filter(|label| !label.is_empty()) {
        if !labels.iter().any(|known| known.eq_ignore_ascii_case(label)) {
            labels.push(label.to_owned());
        }
    }
    labels
}

fn secret(name: String, namespace: &str, data: BTreeMap<String, Vec<u8>>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(CREATED_BY.0.to_owned(), CREATED_BY.1.to_owned())])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data.into_iter().map(|(key, value)| (key, ByteString(value))).collect()),
        ..Secret::default()
    }
}

/// The Secrets, in the order to apply them, then the ScaledActionRunner that names them.
pub fn objects(onboarding: &Onboarding) -> (Vec<Secret>, ScaledActionRunner) {
    let o = onboarding;
    let mut secrets = vec![
        secret(
            token_secret_name(&o.name),
            &o.token_namespace,
            BTreeMap::from([(GITHUB_TOKEN_KEY_PREFIX.to_owned(), o.read_token.expose_secret().to_vec())]),
        ),
        secret(
            webhook_secret_name(&o.name),
            &o.namespace,
            BTreeMap::from([(WEBHOOK_SECRET_KEY.to_owned(), o.webhook_secret.expose_secret().to_vec())]),
        ),
    ];
    let runner_secrets = match &o.runners {
        Runners::SelfRegistering => Vec::new(),
        Runners::Named(count) => (0..*count).map(|i| runner_secret_name(&o.name, i)).collect(),
        Runners::Registered(files) => {
            let mut names = Vec::new();
            for (ordinal, files) in (0u32..).zip(files) {
                let name = runner_secret_name(&o.name, ordinal);
                secrets.push(secret(name.clone(), &o.namespace, files.0.clone()));
                names.push(name);
            }
            names
        }
    };
    let template = RunnerTemplate {
        image: o.image.clone(),
        runner_labels: (!o.labels.is_empty()).then(|| o.labels.join(",")),
        ..RunnerTemplate::default()
    };
    let spec = ScaledActionRunnerSpec {
        owner: o.target.owner().to_owned(),
        repo: o.target.repo().map(str::to_owned),
        runner_group: match &o.target {
            Target::Organisation { runner_group, .. } => runner_group.clone(),
            Target::Repository { .. } => None,
        },
        max_runners: o.max_runners,
        min_runners: o.min_runners,
        runner_secrets,
        github_token_secret: Some(token_secret_name(&o.name)),
        webhook_secret: Some(webhook_secret_name(&o.name)),
        scaling: None,
        scale_factor: None,
        metrics_selector: None,
        selector: None,
        force_scale_up_window: None,
        force_scale_up_frequency: None,
        runner: (template != RunnerTemplate::default()).then_some(template),
    };
    let mut runner = ScaledActionRunner::new(&o.name, spec);
    runner.metadata.namespace = Some(o.namespace.clone());
    runner.metadata.labels = Some(BTreeMap::from([(CREATED_BY.0.to_owned(), CREATED_BY.1.to_owned())]));
    (secrets, runner)
}

/// The objects as one YAML stream, after a comment saying what the stream holds.
pub fn yaml(onboarding: &Onboarding) -> Result<String, YamlError> {
    let (secrets, runner) = objects(onboarding);
    let mut children: Vec<Child> = secrets.iter().map(Child::typed).collect();
    children.push(Child::typed(&runner));
    let mut text = format!(
        "# Onboarding of {} by `github-action-autoscaler onboard`.\n# Holds a GitHub token and the webhook secret: apply it, never commit it.\n",
        onboarding.target
    );
    text.push_str(&to_yaml(&children)?);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::manifests::Manifests;
    use crate::webhook::secret_bytes;

    fn onboarding(runners: Runners) -> Onboarding {
        Onboarding {
            name: "api".into(),
            namespace: "ci".into(),
            token_namespace: "github".into(),
            target: Target::Repository { owner: "acme".into(), repo: "api".into() },
            max_runners: 2,
            min_runners: None,
            labels: vec!["linux".into(), "gpu".into()],
            image: None,
            read_token: secret_bytes("ghp_read"),
            webhook_secret: secret_bytes("hook-secret"),
            runners,
        }
    }

    fn files(ordinal: u32) -> RunnerFiles {
        RunnerFiles(RUNNER_FILES.iter().map(|f| ((*f).to_owned(), format!("{f} of {ordinal}").into_bytes())).collect())
    }

    #[test]
    fn labels_are_trimmed_without_empties_or_repeats() {
        assert_eq!(parse_labels(" linux, gpu,,Linux ,"), vec!["linux", "gpu"]);
        assert!(parse_labels(" , ").is_empty());
    }

    #[test]
    fn the_runner_names_its_token_and_webhook_secrets_and_its_labels() {
        let (secrets, runner) = objects(&onboarding(Runners::SelfRegistering));
        let spec = &runner.spec;
        assert_eq!(spec.github_token_secret.as_deref(), Some("api-github-token"));
        assert_eq!(spec.webhook_secret.as_deref(), Some("api-webhook"));
        assert_eq!(spec.runner_labels(), vec!["linux", "gpu"]);
        assert!(spec.runner_secrets.is_empty());
        assert_eq!(runner.metadata.namespace.as_deref(), Some("ci"));
        let names: Vec<_> = secrets.iter().map(|s| (s.metadata.namespace.clone(), s.metadata.name.clone())).collect();
        assert_eq!(
            names,
            vec![
                (Some("github".into()), Some("api-github-token".into())),
                (Some("ci".into()), Some("api-webhook".into()))
            ]
        );
        assert_eq!(secrets[0].data.as_ref().unwrap()["token"].0, b"ghp_read");
        assert_eq!(secrets[1].data.as_ref().unwrap()["webhook-secret"].0, b"hook-secret");
    }

    #[test]
    fn registered_runners_get_one_secret_per_ordinal_keyed_by_file_name() {
        let (secrets, runner) = objects(&onboarding(Runners::Registered(vec![files(0), files(1)])));
        assert_eq!(runner.spec.runner_secrets, vec!["api-0", "api-1"]);
        let second = secrets.iter().find(|s| s.metadata.name.as_deref() == Some("api-1")).unwrap();
        let data = second.data.as_ref().unwrap();
        assert_eq!(
            data.keys().map(String::as_str).collect::<Vec<_>>(),
            vec![".credentials", ".credentials_rsaparams", ".runner"]
        );
        assert_eq!(data[".runner"].0, b".runner of 1");
    }

    #[test]
    fn a_dry_run_names_runner_secrets_without_printing_them() {
        let (secrets, runner) = objects(&onboarding(Runners::Named(2)));
        assert_eq!(runner.spec.runner_secrets, vec!["api-0", "api-1"]);
        assert_eq!(secrets.len(), 2);
    }

    #[test]
    fn the_yaml_loads_as_the_manifests_serve_reads_and_the_runner_is_served() {
        let mut o = onboarding(Runners::SelfRegistering);
        o.token_namespace = o.namespace.clone();
        let text = yaml(&o).unwrap();
        let mut manifests = Manifests::default();
        manifests.add_file(std::path::Path::new("onboard.yaml"), &text);
        assert!(manifests.problems.is_empty(), "{:?}", manifests.problems);
        assert_eq!((manifests.runners.len(), manifests.secrets.len()), (1, 2));
        let (catalog, problems) = Catalog::build(
            manifests.runners.iter().map(|l| &l.object),
            manifests.secrets.iter().map(|l| &l.object),
            None,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(catalog.runners.len(), 1);
        assert_eq!(catalog.tokens.len(), 1, "its token reads its repository");

        // An organisation runner's YAML is served as an organisation runner, its secret signing
        // for every repository of the organisation.
        o.target = Target::Organisation { org: "Acme".into(), runner_group: Some("gpu".into()) };
        let mut manifests = Manifests::default();
        manifests.add_file(std::path::Path::new("onboard.yaml"), &yaml(&o).unwrap());
        assert!(manifests.problems.is_empty(), "{:?}", manifests.problems);
        let (catalog, problems) = Catalog::build(
            manifests.runners.iter().map(|l| &l.object),
            manifests.secrets.iter().map(|l| &l.object),
            None,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let runner = catalog.runners.iter().next().unwrap();
        assert_eq!((runner.scope, runner.repo.as_str()), (crate::demand::Scope::Organization, "acme"));
        assert_eq!(catalog.secrets.organisations(), 1);
        assert!(catalog.tokens.contains_key("acme"), "its token reads the organisation's repositories");
    }

    /// The printed ScaledActionRunner's spec, as JSON.
    fn printed_spec(o: &Onboarding) -> serde_json::Value {
        let (_, runner) = objects(o);
        Child::typed(&runner).object.data["spec"].clone()
    }

    #[test]
    fn an_organisation_runner_is_printed_without_a_repository_and_with_its_group_only_when_named() {
        let mut o = onboarding(Runners::SelfRegistering);
        let repository = printed_spec(&o);
        assert_eq!((repository["owner"].as_str(), repository["repo"].as_str()), (Some("acme"), Some("api")));
        assert!(repository.get("runnerGroup").is_none());

        o.target = Target::Organisation { org: "acme".into(), runner_group: None };
        let default_group = printed_spec(&o);
        assert_eq!(default_group["owner"], "acme");
        assert!(default_group.get("repo").is_none(), "{default_group}");
        assert!(default_group.get("runnerGroup").is_none(), "Default is left implicit: {default_group}");
        assert_eq!(default_group["webhookSecret"], "api-webhook");

        o.target = Target::Organisation { org: "acme".into(), runner_group: Some("gpu".into()) };
        assert_eq!(printed_spec(&o)["runnerGroup"], "gpu");
        let text = yaml(&o).unwrap();
        assert!(text.starts_with("# Onboarding of organisation acme by"), "{text}");
        assert!(text.contains("runnerGroup: gpu") && !text.contains("repo:"), "{text}");
    }

    #[test]
    fn the_image_and_min_runners_are_set_only_when_given() {
        let mut o = onboarding(Runners::SelfRegistering);
        o.labels.clear();
        let (_, bare) = objects(&o);
        assert_eq!((bare.spec.runner.clone(), bare.spec.min_runners), (None, None));
        o.image = Some("ghcr.io/acme/runner:1".into());
        o.min_runners = Some(1);
        let (_, set) = objects(&o);
        assert_eq!(set.spec.runner.and_then(|r| r.image).as_deref(), Some("ghcr.io/acme/runner:1"));
        assert_eq!(set.spec.min_runners, Some(1));
    }
}
