//! Which runner serves a job: label matching and most-specific assignment.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::Serialize;

use super::job::normalize_labels;
use super::scaling::{ForcedScaleUp, ScaleFactor};

/// The label every self-hosted runner carries without declaring it.
pub const IMPLIED_LABEL: &str = "self-hosted";

/// A ScaledActionRunner's identity. Ordered by namespace, then name (the tie-break of assignment).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RunnerKey {
    pub namespace: String,
    pub name: String,
}

impl RunnerKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for RunnerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What demand needs to know of a ScaledActionRunner.
#[derive(Debug, Clone, PartialEq)]
pub struct Runner {
    pub key: RunnerKey,
    /// Lower-cased `owner/repo`.
    pub repo: String,
    /// Lower-cased, including the implied `self-hosted`.
    pub labels: BTreeSet<String>,
    pub min_runners: u32,
    pub max_runners: u32,
    pub scale_factor: ScaleFactor,
    /// Forced scale-ups to `max_runners`, for pre-registered runners (see [`ForcedScaleUp`]).
    pub forced: Option<ForcedScaleUp>,
}

impl Runner {
    pub fn new(
        key: RunnerKey,
        owner: &str,
        repo: &str,
        labels: impl IntoIterator<Item = impl AsRef<str>>,
        min_runners: u32,
        max_runners: u32,
        scale_factor: ScaleFactor,
    ) -> Self {
        let mut labels: BTreeSet<String> = normalize_labels(labels).into_iter().collect();
        labels.insert(IMPLIED_LABEL.to_string());
        Self {
            key,
            repo: format!("{owner}/{repo}").to_ascii_lowercase(),
            labels,
            min_runners,
            max_runners,
            scale_factor,
            forced: None,
        }
    }

    /// Labels this runner has beyond the job's, or `None` when it cannot run the job.
    /// `job_labels` must be normalized (lower-case).
    fn surplus(&self, job_labels: &[String]) -> Option<usize> {
        let mut shared = usize::from(!job_labels.iter().any(|l| l == IMPLIED_LABEL));
        for label in job_labels {
            if !self.labels.contains(label) {
                return None;
            }
            shared += 1;
        }
        Some(self.labels.len() - shared)
    }
}

/// All runners, by key and grouped by repository for assignment.
#[derive(Debug, Clone, Default)]
pub struct RunnerIndex {
    runners: BTreeMap<RunnerKey, Runner>,
    by_repo: HashMap<String, Vec<RunnerKey>>,
}

impl RunnerIndex {
    /// Builds the index; of two runners with the same key the last one wins.
    pub fn new(runners: impl IntoIterator<Item = Runner>) -> Self {
        let runners: BTreeMap<RunnerKey, Runner> = runners.into_iter().map(|r| (r.key.clone(), r)).collect();
        let mut by_repo: HashMap<String, Vec<RunnerKey>> = HashMap::new();
        for runner in runners.values() {
            by_repo.entry(runner.repo.clone()).or_default().push(runner.key.clone());
        }
        Self { runners, by_repo }
    }

    pub fn len(&self) -> usize {
        self.runners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runners.is_empty()
    }

    /// Every runner in namespace/name order.
    pub fn iter(&self) -> impl Iterator<Item = &Runner> {
        self.runners.values()
    }

    pub fn get(&self, key: &RunnerKey) -> Option<&Runner> {
        self.runners.get(key)
    }

    /// The runners of one repository (lower-cased `owner/repo`), in namespace/name order.
    pub fn for_repo<'a>(&'a self, repo_full_name: &str) -> impl Iterator<Item = &'a Runner> + 'a {
        self.by_repo.get(repo_full_name).into_iter().flatten().filter_map(|key| self.runners.get(key))
    }

    /// The runner a job counts toward: among the repository's runners that carry every job label,
    /// the one with the fewest labels beyond the job's; ties go to the first by namespace/name.
    pub fn assign(&self, repo_full_name: &str, job_labels: &[String]) -> Option<&RunnerKey> {
        self.for_repo(repo_full_name)
            .filter_map(|runner| runner.surplus(job_labels).map(|surplus| (surplus, &runner.key)))
            .min()
            .map(|(_, key)| key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(ns: &str, name: &str, labels: &str) -> Runner {
        Runner::new(RunnerKey::new(ns, name), "acme", "api", labels.split(','), 0, 10, ScaleFactor::Linear)
    }

    fn labels(l: &[&str]) -> Vec<String> {
        normalize_labels(l)
    }

    #[test]
    fn a_gpu_job_goes_to_the_gpu_runner_not_the_plain_one() {
        let index = RunnerIndex::new([runner("ci", "linux", "linux"), runner("ci", "gpu", "linux,gpu")]);
        let job = labels(&["self-hosted", "linux", "gpu"]);
        assert_eq!(index.assign("acme/api", &job), Some(&RunnerKey::new("ci", "gpu")));
    }

    #[test]
    fn a_plain_job_goes_to_the_most_specific_runner_that_can_run_it() {
        let index = RunnerIndex::new([runner("ci", "gpu", "linux,gpu"), runner("ci", "linux", "linux")]);
        assert_eq!(index.assign("acme/api", &labels(&["self-hosted", "linux"])), Some(&RunnerKey::new("ci", "linux")));
    }

    #[test]
    fn equally_specific_runners_tie_break_by_namespace_then_name() {
        let index =
            RunnerIndex::new([runner("ci", "b", "linux"), runner("ci", "a", "LINUX"), runner("alpha", "z", "linux")]);
        assert_eq!(index.assign("acme/api", &labels(&["linux"])), Some(&RunnerKey::new("alpha", "z")));
    }

    #[test]
    fn a_job_with_a_label_no_runner_has_is_unassigned() {
        let index = RunnerIndex::new([runner("ci", "linux", "linux")]);
        assert_eq!(index.assign("acme/api", &labels(&["self-hosted", "windows"])), None);
        assert_eq!(index.assign("acme/api", &labels(&["ubuntu-latest"])), None);
    }

    #[test]
    fn self_hosted_is_implied_and_matching_ignores_case() {
        let index = RunnerIndex::new([runner("ci", "linux", "Linux")]);
        assert_eq!(index.assign("acme/api", &labels(&["Self-Hosted", "LINUX"])), Some(&RunnerKey::new("ci", "linux")));
        assert_eq!(index.assign("acme/api", &labels(&["self-hosted"])), Some(&RunnerKey::new("ci", "linux")));
    }

    #[test]
    fn runners_of_other_repositories_never_match() {
        let index = RunnerIndex::new([runner("ci", "linux", "linux")]);
        assert_eq!(index.assign("acme/web", &labels(&["linux"])), None);
    }
}
