//! Which runner serves a job: label matching and most-specific assignment.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::job::{GROUP_MARK, normalize_labels};
use super::scaling::{ForcedScaleUp, ScaleFactor};

/// The runner group an organisation runner registers in unless it names one.
pub const DEFAULT_RUNNER_GROUP: &str = "Default";

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

/// Which repositories a runner serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One repository.
    Repository,
    /// Every repository of an organisation.
    Organization,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Repository => "repository",
            Self::Organization => "organization",
        }
    }
}

/// Which repositories of its organisation an organisation runner may take jobs from, as its
/// runner group's settings on GitHub say (visibility, public repositories, selected workflows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GroupAccess {
    /// Every repository: the group admits all, or its settings are not known (yet). Not knowing
    /// admits: a runner too many costs less than a job that never gets one.
    #[default]
    Every,
    /// Only these repositories (lower-cased `owner/repo`).
    Only(Arc<BTreeSet<String>>),
    /// Every repository but these (public repositories the group does not admit).
    Except(Arc<BTreeSet<String>>),
}

impl GroupAccess {
    /// Whether the group's runners may take jobs of `repo` (lower-cased `owner/repo`).
    pub fn admits(&self, repo: &str) -> bool {
        match self {
            Self::Every => true,
            Self::Only(repos) => repos.contains(repo),
            Self::Except(repos) => !repos.contains(repo),
        }
    }
}

/// What GitHub says each runner group of an organisation admits, by lower-cased owner and
/// lower-cased group name. A group that is missing admits every repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunnerGroups(pub BTreeMap<(String, String), GroupAccess>);

impl RunnerGroups {
    /// The access of `owner`'s group `group` (any case).
    pub fn access(&self, owner: &str, group: &str) -> GroupAccess {
        self.0.get(&(owner.to_ascii_lowercase(), group.to_ascii_lowercase())).cloned().unwrap_or_default()
    }
}

/// What demand needs to know of a ScaledActionRunner.
#[derive(Debug, Clone, PartialEq)]
pub struct Runner {
    pub key: RunnerKey,
    /// Lower-cased `owner/repo` of a repository runner; the lower-cased owner (no `/`) of an
    /// organisation runner.
    pub repo: String,
    pub scope: Scope,
    /// Lower-cased, including the implied `self-hosted`.
    pub labels: BTreeSet<String>,
    pub min_runners: u32,
    pub max_runners: u32,
    pub scale_factor: ScaleFactor,
    /// Forced scale-ups to `max_runners`, for pre-registered runners (see [`ForcedScaleUp`]).
    pub forced: Option<ForcedScaleUp>,
    /// Just-in-time runners: the API server mints each pod's registration.
    pub ephemeral: bool,
    /// The runner group an organisation runner registers in (as written).
    pub runner_group: Option<String>,
    /// The repositories an organisation runner's group admits ([`RunnerIndex::with_groups`]).
    pub access: GroupAccess,
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
            scope: Scope::Repository,
            labels,
            min_runners,
            max_runners,
            scale_factor,
            forced: None,
            ephemeral: false,
            runner_group: None,
            access: GroupAccess::Every,
        }
    }

    /// An organisation runner of `owner`: it may take the jobs of every repository of `owner`.
    pub fn organization(
        key: RunnerKey,
        owner: &str,
        labels: impl IntoIterator<Item = impl AsRef<str>>,
        min_runners: u32,
        max_runners: u32,
        scale_factor: ScaleFactor,
    ) -> Self {
        let mut runner = Self::new(key, owner, "", labels, min_runners, max_runners, scale_factor);
        runner.repo = owner.to_ascii_lowercase();
        runner.scope = Scope::Organization;
        runner
    }

    /// The lower-cased owner of the repository, or the organisation.
    pub fn owner(&self) -> &str {
        self.repo.split_once('/').map_or(self.repo.as_str(), |(owner, _)| owner)
    }

    /// The runner group an organisation runner registers in (`Default` unless it names one);
    /// `None` for a repository runner.
    pub fn group(&self) -> Option<&str> {
        match self.scope {
            Scope::Repository => None,
            Scope::Organization => Some(self.runner_group.as_deref().unwrap_or(DEFAULT_RUNNER_GROUP)),
        }
    }

    /// Labels this runner has beyond the job's, or `None` when it cannot run the job.
    /// `job_labels` must be normalized (lower-case).
    ///
    /// A job without labels named only a runner group (`runs-on: {group: NAME}`; GitHub's
    /// queued deliveries say which group only once a runner took the job): only an
    /// organisation runner can take it. A job GitHub says ran in a group (a label starting with
    /// [`GROUP_MARK`]) counts toward organisation runners of that group only (a repository
    /// runner, in no group of ours, may still have taken it).
    fn surplus(&self, job_labels: &[String]) -> Option<usize> {
        let mut shared = usize::from(!job_labels.iter().any(|l| l == IMPLIED_LABEL));
        let mut labelled = false;
        for label in job_labels {
            if let Some(group) = label.strip_prefix(GROUP_MARK) {
                if self.group().is_some_and(|own| !own.eq_ignore_ascii_case(group)) {
                    return None;
                }
                continue;
            }
            if !self.labels.contains(label) {
                return None;
            }
            labelled = true;
            shared += 1;
        }
        if !labelled && self.scope == Scope::Repository {
            return None;
        }
        Some(self.labels.len() - shared)
    }
}

/// All runners, by key and grouped by repository for assignment. Cheap to clone: every clone
/// shares one copy (the store, the board, the resync and the shared sync each hold one).
#[derive(Debug, Clone, Default)]
pub struct RunnerIndex(Arc<Runners>);

#[derive(Debug, Default)]
struct Runners {
    /// In key (namespace/name) order, one per key.
    sorted: Vec<Runner>,
    /// Each runner's position, by a hash of its key, in hash order: a lookup searches this
    /// dense array and compares one key, instead of following a key's strings at every step
    /// of a search through `sorted`.
    hashed: Vec<(u64, u32)>,
    hasher: RandomState,
    /// Positions in `sorted` of each repository's runners, and under the owner alone of each
    /// organisation's runners, in key order.
    by_repo: HashMap<String, Vec<u32>>,
}

impl RunnerIndex {
    /// Builds the index; of two runners with the same key the last one wins.
    pub fn new(runners: impl IntoIterator<Item = Runner>) -> Self {
        let unique: BTreeMap<RunnerKey, Runner> = runners.into_iter().map(|r| (r.key.clone(), r)).collect();
        let sorted: Vec<Runner> = unique.into_values().collect();
        let hasher = RandomState::new();
        let mut hashed = Vec::with_capacity(sorted.len());
        let mut by_repo: HashMap<String, Vec<u32>> = HashMap::new();
        for (position, runner) in sorted.iter().enumerate() {
            let position = u32::try_from(position).expect("fewer than 2^32 runners");
            hashed.push((hasher.hash_one(&runner.key), position));
            by_repo.entry(runner.repo.clone()).or_default().push(position);
        }
        hashed.sort_unstable();
        Self(Arc::new(Runners { sorted, hashed, hasher, by_repo }))
    }

    pub fn len(&self) -> usize {
        self.0.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.sorted.is_empty()
    }

    /// Whether both are clones of one index.
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Every runner in namespace/name order.
    pub fn iter(&self) -> impl Iterator<Item = &Runner> {
        self.0.sorted.iter()
    }

    /// Where a runner is in [`iter`](Self::iter)'s order.
    pub fn position(&self, key: &RunnerKey) -> Option<usize> {
        let Runners { sorted, hashed, hasher, .. } = &*self.0;
        let hash = hasher.hash_one(key);
        let first = hashed.partition_point(|(h, _)| *h < hash);
        hashed[first..]
            .iter()
            .take_while(|(h, _)| *h == hash)
            .map(|(_, position)| *position as usize)
            .find(|&position| sorted[position].key == *key)
    }

    /// The runner at a position of [`iter`](Self::iter)'s order.
    pub fn at(&self, position: usize) -> Option<&Runner> {
        self.0.sorted.get(position)
    }

    pub fn get(&self, key: &RunnerKey) -> Option<&Runner> {
        self.position(key).map(|position| &self.0.sorted[position])
    }

    /// The positions of a namespace's runners, in name order.
    pub fn in_namespace(&self, namespace: &str) -> std::ops::Range<usize> {
        let sorted = &self.0.sorted;
        let start = sorted.partition_point(|runner| runner.key.namespace.as_str() < namespace);
        let end = start + sorted[start..].partition_point(|runner| runner.key.namespace == namespace);
        start..end
    }

    /// The repository runners of one repository (lower-cased `owner/repo`), or the organisation
    /// runners of one organisation (lower-cased owner), in namespace/name order.
    pub fn for_repo<'a>(&'a self, repo_full_name: &str) -> impl Iterator<Item = &'a Runner> + 'a {
        let sorted = &self.0.sorted;
        self.0.by_repo.get(repo_full_name).into_iter().flatten().map(move |&position| &sorted[position as usize])
    }

    /// Every runner that may take jobs of a repository (lower-cased `owner/repo`): its repository
    /// runners, then its owner's organisation runners whose group admits the repository.
    pub fn candidates<'a, 'r>(&'a self, repo_full_name: &'r str) -> impl Iterator<Item = &'a Runner> + use<'a, 'r> {
        let by_repo = &self.0.by_repo;
        // An organisation's runners are filed under the owner alone: a name without a `/` is no
        // repository and finds none.
        let owner = repo_full_name.split_once('/').map(|(owner, _)| owner);
        let organization = owner.and_then(|owner| by_repo.get(owner));
        let sorted = &self.0.sorted;
        owner
            .and_then(|_| by_repo.get(repo_full_name))
            .into_iter()
            .chain(organization)
            .flatten()
            .map(move |&position| &sorted[position as usize])
            .filter(move |runner| runner.access.admits(repo_full_name))
    }

    /// This index with each organisation runner's [`GroupAccess`] as `groups` says (and every
    /// repository admitted where it says nothing); the same index when nothing changes.
    pub fn with_groups(&self, groups: &RunnerGroups) -> Self {
        let access = |runner: &Runner| match runner.group() {
            Some(group) => groups.access(runner.owner(), group),
            None => GroupAccess::Every,
        };
        if self.iter().all(|runner| runner.access == access(runner)) {
            return self.clone();
        }
        Self::new(self.iter().map(|runner| Runner { access: access(runner), ..runner.clone() }))
    }

    /// Whether any organisation runner serves `owner` (lower-cased).
    pub fn serves_organization(&self, owner: &str) -> bool {
        self.0.by_repo.contains_key(owner)
    }

    /// The organisations (lower-cased owners) that have organisation runners, in name order.
    pub fn organizations(&self) -> Vec<&str> {
        let mut owners: Vec<&str> =
            self.0.sorted.iter().filter(|r| r.scope == Scope::Organization).map(|r| r.repo.as_str()).collect();
        owners.sort_unstable();
        owners.dedup();
        owners
    }

    /// The runner a job of a repository counts toward: among the runners that may take the
    /// repository's jobs ([`candidates`](Self::candidates)) and carry every job label, the one
    /// with the fewest labels beyond the job's; on a tie a repository runner before an
    /// organisation runner, then the first by namespace/name.
    pub fn assign(&self, repo_full_name: &str, job_labels: &[String]) -> Option<&RunnerKey> {
        self.candidates(repo_full_name)
            .filter_map(|runner| runner.surplus(job_labels).map(|surplus| (surplus, runner.scope, &runner.key)))
            .min()
            .map(|(_, _, key)| key)
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

    fn org_runner(ns: &str, name: &str, owner: &str, labels: &str) -> Runner {
        Runner::organization(RunnerKey::new(ns, name), owner, labels.split(','), 0, 10, ScaleFactor::Linear)
    }

    #[test]
    fn an_organisation_runner_takes_jobs_of_every_repository_of_its_owner_only() {
        let index = RunnerIndex::new([org_runner("ci", "org", "Acme", "linux")]);
        assert_eq!(index.assign("acme/api", &labels(&["linux"])), Some(&RunnerKey::new("ci", "org")));
        assert_eq!(index.assign("acme/web", &labels(&["linux"])), Some(&RunnerKey::new("ci", "org")));
        assert_eq!(index.assign("other/api", &labels(&["linux"])), None, "another organisation's repository");
        assert_eq!(index.assign("acme/api", &labels(&["gpu"])), None, "labels still decide");
        assert_eq!(index.assign("acme", &labels(&["linux"])), None, "a name without a repository is no repository");
        assert_eq!(index.organizations(), ["acme"]);
        assert!(index.serves_organization("acme") && !index.serves_organization("other"));
    }

    #[test]
    fn across_scopes_the_most_specific_runner_wins_and_a_tie_goes_to_the_repository_runner() {
        // `a` sorts before `z`: only the scope can put the repository runner first on a tie.
        let index = RunnerIndex::new([
            org_runner("a", "org-linux", "acme", "linux"),
            org_runner("a", "org-gpu", "acme", "linux,gpu"),
            runner("z", "repo-linux", "linux"),
            runner("z", "repo-linux-x64", "linux,x64"),
        ]);
        let assign = |repo: &str, l: &[&str]| index.assign(repo, &labels(l)).map(|k| k.to_string());
        assert_eq!(assign("acme/api", &["linux"]).as_deref(), Some("z/repo-linux"), "tie: repository first");
        assert_eq!(assign("acme/api", &["gpu"]).as_deref(), Some("a/org-gpu"), "only the organisation has it");
        assert_eq!(assign("acme/api", &["x64"]).as_deref(), Some("z/repo-linux-x64"));
        assert_eq!(assign("acme/web", &["linux"]).as_deref(), Some("a/org-linux"), "no repository runner there");
        // A more specific organisation runner beats a less specific repository runner.
        let index = RunnerIndex::new([runner("z", "repo-plain", ""), org_runner("a", "org-linux", "acme", "linux")]);
        assert_eq!(index.assign("acme/api", &labels(&["linux"])), Some(&RunnerKey::new("a", "org-linux")));
        assert_eq!(index.assign("acme/api", &labels(&["self-hosted"])), Some(&RunnerKey::new("z", "repo-plain")));
        let candidates: Vec<String> = index.candidates("acme/api").map(|r| r.key.to_string()).collect();
        assert_eq!(candidates, ["z/repo-plain", "a/org-linux"]);
    }

    fn groups(entries: &[(&str, &str, GroupAccess)]) -> RunnerGroups {
        RunnerGroups(entries.iter().map(|(o, g, a)| ((o.to_string(), g.to_string()), a.clone())).collect())
    }

    fn only(repos: &[&str]) -> GroupAccess {
        GroupAccess::Only(Arc::new(repos.iter().map(|r| r.to_string()).collect()))
    }

    #[test]
    fn an_organisation_runner_takes_only_jobs_of_repositories_its_group_admits() {
        let mut builders = org_runner("a", "builders", "acme", "linux");
        builders.runner_group = Some("Builders".into());
        let index = RunnerIndex::new([builders, org_runner("b", "default", "acme", "linux")]);
        let assign = |index: &RunnerIndex, repo: &str| index.assign(repo, &labels(&["linux"])).map(|k| k.to_string());
        // Nothing read yet: every repository, and `a` wins the tie by name.
        assert_eq!(assign(&index, "acme/web").as_deref(), Some("a/builders"));
        let read = groups(&[
            ("acme", "builders", only(&["acme/api"])),
            ("acme", "default", GroupAccess::Except(Arc::new(["acme/site".to_string()].into()))),
        ]);
        let admitted = index.with_groups(&read);
        assert_eq!(assign(&admitted, "acme/api").as_deref(), Some("a/builders"));
        assert_eq!(assign(&admitted, "acme/web").as_deref(), Some("b/default"), "not selected for builders");
        assert_eq!(assign(&admitted, "acme/site"), None, "a public repository neither group admits");
        let candidates: Vec<String> = admitted.candidates("acme/web").map(|r| r.key.to_string()).collect();
        assert_eq!(candidates, ["b/default"]);
        // The same settings read again give the same index; other settings a new one.
        assert!(admitted.with_groups(&read).same(&admitted));
        assert!(!admitted.with_groups(&RunnerGroups::default()).same(&admitted));
        assert_eq!(assign(&admitted.with_groups(&RunnerGroups::default()), "acme/site").as_deref(), Some("a/builders"));
        // Another organisation's group of the same name changes nothing here.
        assert!(index.with_groups(&groups(&[("other", "builders", only(&[]))])).same(&index));
    }

    #[test]
    fn a_job_that_names_only_a_runner_group_goes_to_an_organisation_runner() {
        // `runs-on: {group: gpu}` arrives with no labels: a repository runner is in no group.
        let index = RunnerIndex::new([runner("a", "repo", "linux"), org_runner("z", "org-gpu", "acme", "gpu,large")]);
        assert_eq!(index.assign("acme/api", &labels(&[])), Some(&RunnerKey::new("z", "org-gpu")));
        let repository_only = RunnerIndex::new([runner("a", "repo", "linux")]);
        assert_eq!(repository_only.assign("acme/api", &labels(&[])), None);
        // A group that does not admit the repository cannot take it either.
        let mut gpu = org_runner("z", "org-gpu", "acme", "gpu");
        gpu.runner_group = Some("gpu".into());
        let closed = RunnerIndex::new([gpu]).with_groups(&groups(&[("acme", "gpu", only(&["acme/web"]))]));
        assert_eq!(closed.assign("acme/api", &labels(&[])), None);
        assert_eq!(closed.assign("acme/web", &labels(&[])), Some(&RunnerKey::new("z", "org-gpu")));
    }

    #[test]
    fn runners_of_other_repositories_never_match() {
        let index = RunnerIndex::new([runner("ci", "linux", "linux")]);
        assert_eq!(index.assign("acme/web", &labels(&["linux"])), None);
    }

    #[test]
    fn runners_are_found_by_key_and_by_namespace_and_the_last_of_one_key_wins() {
        let index = RunnerIndex::new([
            runner("web", "b", "linux"),
            runner("ci", "z", "linux"),
            runner("ci", "a", "linux"),
            runner("web", "b", "gpu"),
            runner("ops", "m", "linux"),
        ]);
        let keys: Vec<String> = index.iter().map(|r| r.key.to_string()).collect();
        assert_eq!(keys, ["ci/a", "ci/z", "ops/m", "web/b"]);
        assert!(index.get(&RunnerKey::new("web", "b")).unwrap().labels.contains("gpu"));
        assert_eq!(index.get(&RunnerKey::new("web", "a")), None);
        let names =
            |ns: &str| index.in_namespace(ns).map(|p| index.at(p).unwrap().key.name.clone()).collect::<Vec<_>>();
        assert_eq!(names("ci"), ["a", "z"]);
        assert_eq!(names("web"), ["b"]);
        assert!(names("cj").is_empty() && names("a").is_empty() && names("zz").is_empty());
    }

    #[test]
    fn every_runner_is_found_at_its_place_among_thousands_and_no_other_key_is() {
        let index = RunnerIndex::new((0..3000).map(|i| runner(&format!("ns-{}", i % 7), &format!("r-{i}"), "linux")));
        for (position, runner) in index.iter().enumerate() {
            assert_eq!(index.position(&runner.key), Some(position));
        }
        assert_eq!(index.position(&RunnerKey::new("ns-0", "r-1")), None, "r-1 is in ns-1");
        assert_eq!(index.position(&RunnerKey::new("ns-7", "r-7")), None);
    }

    #[test]
    fn clones_share_one_copy() {
        let index = RunnerIndex::new([runner("ci", "linux", "linux")]);
        assert!(index.clone().same(&index));
        assert!(!RunnerIndex::new([runner("ci", "linux", "linux")]).same(&index));
    }
}
