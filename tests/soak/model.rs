//! The soak's world: repositories, the runners serving them (as the manifests a user would
//! write), the kinds of job workflows ask for, and which runner each kind must count toward.
//! The assignment here is written out by hand from the label rules, not computed by the
//! product's matching code, so the soak's truth does not share the code it checks.

use std::collections::BTreeMap;
use std::fmt::Write as _;

pub const ORG: &str = "soak-org";
pub const REPOS: usize = 16;

/// A runner's labels beyond `self-hosted`, by flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flavour {
    Linux,
    Gpu,
    Arm,
    Large,
}

impl Flavour {
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Linux => "linux",
            Flavour::Gpu => "gpu",
            Flavour::Arm => "arm",
            Flavour::Large => "large",
        }
    }

    fn runner_labels(self) -> &'static str {
        match self {
            Flavour::Linux => "linux",
            Flavour::Gpu => "linux,gpu",
            Flavour::Arm => "linux,arm64",
            Flavour::Large => "linux,x64,large",
        }
    }
}

/// The labels a job asks for, and the flavour that must take it (the most specific runner
/// whose labels hold every one of the job's).
pub struct JobKind {
    pub labels: &'static [&'static str],
    pub flavour: Option<Flavour>,
    /// Relative frequency.
    pub weight: u64,
}

pub const KINDS: &[JobKind] = &[
    // Fits every runner; `linux` has the fewest labels beyond the job's.
    JobKind { labels: &["self-hosted", "linux"], flavour: Some(Flavour::Linux), weight: 40 },
    // `self-hosted` alone: still the plain linux runner (one extra label against two or more).
    JobKind { labels: &["self-hosted"], flavour: Some(Flavour::Linux), weight: 5 },
    JobKind { labels: &["self-hosted", "linux", "gpu"], flavour: Some(Flavour::Gpu), weight: 15 },
    // Labels are case-insensitive.
    JobKind { labels: &["Self-Hosted", "Linux", "GPU"], flavour: Some(Flavour::Gpu), weight: 5 },
    JobKind { labels: &["self-hosted", "linux", "arm64"], flavour: Some(Flavour::Arm), weight: 12 },
    JobKind { labels: &["self-hosted", "linux", "x64"], flavour: Some(Flavour::Large), weight: 8 },
    JobKind { labels: &["self-hosted", "large"], flavour: Some(Flavour::Large), weight: 5 },
    // No runner of ours can run it: never anyone's demand.
    JobKind { labels: &["self-hosted", "windows"], flavour: None, weight: 10 },
];

pub struct Repo {
    pub name: String,
    pub namespace: String,
    pub secret: String,
    pub flavours: Vec<Flavour>,
}

impl Repo {
    /// `owner/name`.
    pub fn full_name(&self) -> String {
        format!("{ORG}/{}", self.name)
    }

    pub fn runner_name(&self, flavour: Flavour) -> String {
        format!("{}-{}", self.name, flavour.name())
    }

    /// The runner (namespace, name) a job of `kind` counts toward, if any.
    pub fn runner_for(&self, kind: &JobKind) -> Option<(String, String)> {
        let flavour = kind.flavour.filter(|f| self.flavours.contains(f))?;
        Some((self.namespace.clone(), self.runner_name(flavour)))
    }
}

/// Sixteen repositories over four namespaces; every one has a plain linux runner, some also
/// GPU, arm64 and large x64 runners (34 runners in all).
pub fn repos() -> Vec<Repo> {
    (0..REPOS)
        .map(|i| {
            let mut flavours = vec![Flavour::Linux];
            if i % 2 == 0 {
                flavours.push(Flavour::Gpu);
            }
            if i % 3 == 0 {
                flavours.push(Flavour::Arm);
            }
            if i % 4 == 1 {
                flavours.push(Flavour::Large);
            }
            Repo {
                name: format!("service-{i:02}"),
                namespace: format!("team-{}", i % 4),
                secret: format!("soak-webhook-secret-{i:02}-{}", i * 7919),
                flavours,
            }
        })
        .collect()
}

/// The ScaledActionRunner and Secret documents both replicas serve.
pub fn manifests(repos: &[Repo]) -> String {
    let mut yaml = String::new();
    for repo in repos {
        for flavour in &repo.flavours {
            let _ = write!(
                yaml,
                "apiVersion: runner.devjoes.com/v1alpha1\nkind: ScaledActionRunner\nmetadata: {{name: {name}, namespace: {ns}}}\n\
                 spec:\n  owner: {ORG}\n  repo: {repo}\n  maxRunners: 1000\n  scaleFactor: \"0\"\n  webhookSecret: {repo}-hook\n  \
                 runner: {{runnerLabels: \"{labels}\"}}\n---\n",
                name = repo.runner_name(*flavour),
                ns = repo.namespace,
                repo = repo.name,
                labels = flavour.runner_labels(),
            );
        }
        let _ = write!(
            yaml,
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {repo}-hook, namespace: {ns}}}\nstringData: {{webhook-secret: {secret}}}\n---\n",
            repo = repo.name,
            ns = repo.namespace,
            secret = repo.secret,
        );
    }
    yaml
}

/// (queued, in progress) per runner.
pub type Counts = BTreeMap<(String, String), (u64, u64)>;

/// Every runner at zero: a runner missing from a count has no demand.
pub fn zero_counts(repos: &[Repo]) -> Counts {
    repos
        .iter()
        .flat_map(|repo| repo.flavours.iter().map(|f| ((repo.namespace.clone(), repo.runner_name(*f)), (0, 0))))
        .collect()
}
