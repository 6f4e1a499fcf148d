//! The resync loop: asks GitHub what is queued and running in each repository that has runners,
//! compares with what webhooks built, and journals the difference, within the cache windows and
//! the rate limits.
//!
//! Each pass takes the repositories that are due, a few at a time. Per repository: the queued
//! and in-progress run lists (conditional: an unchanged list is a free 304), the jobs of those
//! runs (every page; skipped when both lists are unchanged), a lookup of each job we think is
//! open that GitHub no longer lists, and the corrections through the journal like any delivery.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::app::{Credential, GitHubApp};
use super::client::{GitHubClient, JobFilter, RunStatus};
use super::error::GitHubError;
use super::groups;
use super::installations::{CacheFootprint, Installations, Minted};
use super::models::WorkflowJob;
use super::resync::{Comparison, GitHubJob, KnownJob, Lookups, RunAnswer, Schedule, Windows, compare, repair_run};
use super::token::{Budget, Token};
use crate::demand::job::{mark_group, normalize_labels};
use crate::demand::{GroupAccess, JobEvent, JobStatus, RepoRef, RunnerGroups, RunnerIndex, RunnerKey};
use crate::metrics::Metrics;
use crate::store::{ResyncInfo, StoreError, StoreHandle};

/// GitHub's secondary limit is 900 points a minute per token; leave headroom for retries.
const POINTS_PER_MINUTE: u32 = 800;
/// Corrections handed to the store at once (well under its queue).
const RECORD_CHUNK: usize = 1024;
/// The shortest pause after a repeated secondary limit, and the longest the doubling reaches.
const SECONDARY_REPEAT_FLOOR: Duration = Duration::from_secs(60);
const SECONDARY_CAP: Duration = Duration::from_secs(900);
/// How often an organisation's runner groups are read again (sooner when the idle window is
/// shorter): a repository newly admitted to a group waits at most this long for runners.
/// Settings that did not change answer 304, which costs no credit.
const GROUP_REFRESH_SECS: i64 = 120;
/// When runner groups that could not be read are tried again.
const GROUP_RETRY_SECS: i64 = 60;
/// A runner-group reading installation token is replaced this long before it expires.
const GROUP_TOKEN_RENEW_SECS: i64 = 300;

#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    pub windows: Windows,
    /// Jobs we learned about this recently are not judged missing from GitHub's lists.
    pub settle: Duration,
    /// Repositories resynced at once.
    pub concurrency: usize,
    /// Questions about jobs GitHub's open lists no longer show, per repository and pass: one per
    /// run (its status, or its jobs, every page), or per job whose run is unknown.
    pub max_lookups: usize,
    /// Primary-limit credits kept in reserve: below them a token waits for its reset.
    pub reserve_credits: u32,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            windows: Windows::default(),
            settle: Duration::from_secs(60),
            concurrency: 8,
            max_lookups: 100,
            reserve_credits: 100,
        }
    }
}

/// Credentials that may read each repository (lower-cased `owner/name`): tokens, used in turn,
/// or a GitHub App. A key without `/` is an organisation (lower-cased owner): its credentials
/// read every repository of the organisation that has none of its own.
#[derive(Debug, Clone, Default)]
pub struct RepoTokens(pub HashMap<String, Vec<Credential>>);

impl RepoTokens {
    /// The credentials that read `repo`: its own, else its organisation's.
    pub fn for_repo(&self, repo: &str) -> Option<&Vec<Credential>> {
        let own = self.0.get(repo).filter(|c| !c.is_empty());
        own.or_else(|| {
            let (owner, _) = repo.split_once('/')?;
            self.0.get(owner).filter(|c| !c.is_empty())
        })
    }
}

/// What one repository's resync did.
#[derive(Debug, Default)]
pub struct RepoOutcome {
    pub requests: u32,
    pub credits: u32,
    pub not_modified: u32,
    pub corrections: usize,
    pub busy: bool,
    pub drift: HashMap<RunnerKey, i64>,
}

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub resynced: usize,
    pub deferred: usize,
    pub failed: usize,
    pub requests: u32,
    pub credits: u32,
    pub corrections: usize,
}

/// What the reconciler keeps per repository and token: it follows the catalog, so repositories
/// and tokens that go away take their state with them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Repositories scheduled.
    pub repositories: usize,
    /// Repositories with a token rotation.
    pub rotations: usize,
    /// Repositories whose last job listing is kept.
    pub job_lists: usize,
    /// Budgets (tokens, App installations, Apps) with pacing state.
    pub paced_tokens: usize,
    /// What is kept of GitHub Apps: JWTs, repositories' installations, installation tokens.
    pub apps: CacheFootprint,
    /// Pages kept for conditional requests: each repository's run lists and the job lists of
    /// its open runs, and lookups of the last [`PAGE_HORIZON_SECS`] (or two idle windows).
    pub cached_pages: usize,
}

/// A page kept for conditional requests that no resync has asked for in this long (or in two
/// idle windows, or twice as far as the last repository is due, when longer) is dropped.
pub const PAGE_HORIZON_SECS: i64 = 600;

/// Why one repository's resync failed, by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    /// Listing runs and jobs, or looking one up.
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    #[error("reading our open jobs from the store: {0}")]
    OpenJobs(#[source] StoreError),
    #[error("journaling a correction: {0}")]
    Correction(#[source] StoreError),
}

/// A finished repository resync.
struct Finished {
    repo: String,
    /// The budget the repository's own requests spent (its token's, or its installation's).
    budget: Budget,
    /// A GitHub App's budget and the requests its JWT made (installation lookup, minting).
    app: Option<(Budget, u32)>,
    /// The budget whose answer failed the resync: the App's when getting a token failed.
    failed_on: Budget,
    outcome: Result<RepoOutcome, ResyncError>,
    jobs_seen: Vec<GitHubJob>,
    /// The runs of the jobs we hold open (see `Reconciler::run_of`).
    runs: HashMap<u64, u64>,
}

/// Per-token pacing: points spent in the last minute, and a pause after a limit answer.
#[derive(Debug, Default)]
struct TokenPace {
    spent: VecDeque<(i64, u32)>,
    paused_until: i64,
    secondary_backoff: Option<Duration>,
}

impl TokenPace {
    fn points_last_minute(&mut self, now: i64) -> u32 {
        while self.spent.front().is_some_and(|(at, _)| *at <= now - 60) {
            self.spent.pop_front();
        }
        self.spent.iter().map(|(_, p)| p).sum()
    }
}

/// The shared pieces a repository resync needs (cheap to clone into a task).
#[derive(Clone)]
struct Shared {
    client: Arc<GitHubClient>,
    store: StoreHandle,
    index: Arc<RunnerIndex>,
    config: ReconcilerConfig,
    metrics: Arc<Metrics>,
    installations: Arc<Installations>,
}

pub struct Reconciler {
    shared: Shared,
    tokens: RepoTokens,
    schedule: Schedule,
    pace: HashMap<Budget, TokenPace>,
    rotation: HashMap<String, usize>,
    /// Per repository: the jobs of its open runs at the last full listing, reused while both run
    /// lists answer 304.
    last_jobs: HashMap<String, Vec<GitHubJob>>,
    /// Per repository: the run of each open job the store knows without one (a job only another
    /// replica journaled), as GitHub's lists showed it while the job was open; once its completion
    /// is lost, this lets it be repaired with its run's one request instead of one of its own.
    run_of: HashMap<String, HashMap<u64, u64>>,
    /// Repositories of organisations with organisation runners that the resync covers besides
    /// the repository runners' (see [`Reconciler::cover_organisations`]).
    organisation_repos: HashSet<String>,
    /// Organisations whose repositories were listed since start, and when a failed listing may
    /// be tried again.
    listed: HashSet<String>,
    listing_retry: HashMap<String, i64>,
    /// Repositories a listing found, each resynced once whatever its activity.
    first_look: HashSet<String>,
    /// The runners as the catalog has them; `shared.index` holds them with `groups` applied.
    catalog: RunnerIndex,
    /// What the organisations' runner groups admit, as last read.
    groups: RunnerGroups,
    /// Per organisation (lower-cased), when its runner groups are read next.
    groups_due: HashMap<String, i64>,
    /// Groups named by runners that GitHub does not know, already warned about.
    groups_missing: HashSet<(String, String)>,
    /// Organisations whose runner groups could not be read, already warned about.
    groups_unreadable: HashSet<String>,
    /// Per App and installation: the token that reads runner groups, and when it expires.
    group_tokens: HashMap<(String, u64), (Token, i64)>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler").field("repositories", &self.schedule.len()).finish_non_exhaustive()
    }
}

impl Reconciler {
    pub fn new(client: Arc<GitHubClient>, store: StoreHandle, config: ReconcilerConfig, metrics: Arc<Metrics>) -> Self {
        let installations = Arc::new(Installations::new(client.clone()));
        Self {
            shared: Shared { client, store, index: Arc::new(RunnerIndex::default()), config, metrics, installations },
            tokens: RepoTokens::default(),
            schedule: Schedule::default(),
            pace: HashMap::new(),
            rotation: HashMap::new(),
            last_jobs: HashMap::new(),
            run_of: HashMap::new(),
            organisation_repos: HashSet::new(),
            listed: HashSet::new(),
            listing_retry: HashMap::new(),
            first_look: HashSet::new(),
            catalog: RunnerIndex::default(),
            groups: RunnerGroups::default(),
            groups_due: HashMap::new(),
            groups_missing: HashSet::new(),
            groups_unreadable: HashSet::new(),
            group_tokens: HashMap::new(),
        }
    }

    /// Which runners exist and which tokens read which repository. Repositories without a token
    /// are served by webhooks alone, and their runners say so.
    pub fn set_catalog(&mut self, index: RunnerIndex, tokens: RepoTokens, now: i64) {
        for runner in index.iter() {
            let with_token = tokens.0.get(&runner.repo).is_some_and(|t| !t.is_empty());
            let board = self.shared.store.board();
            let mut info = board.get(&runner.key).map_or(ResyncInfo::default(), |v| ResyncInfo {
                with_token,
                last_time: v
                    .last_resync_time
                    .as_deref()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .map(|t| t.as_second()),
                last_drift: v.last_drift,
            });
            info.with_token = with_token;
            board.set_resync(&runner.key, info);
        }
        // Organisations' repositories stay covered while their organisation still has runners.
        let served = |repo: &String| repo.split_once('/').is_some_and(|(owner, _)| index.serves_organization(owner));
        self.first_look.retain(served);
        self.listed.retain(|owner| index.serves_organization(owner));
        self.organisation_repos.retain(|repo| {
            repo.split_once('/')
                .is_some_and(|(owner, _)| index.serves_organization(owner) && tokens.for_repo(repo).is_some())
        });
        self.reschedule(&tokens, now);
        let mut in_use: HashSet<Budget> = HashSet::new();
        let (mut apps, mut app_repos, mut named) = (HashSet::new(), HashSet::new(), HashSet::new());
        {
            let cache = self.shared.installations.cache();
            for (repo, credentials) in &tokens.0 {
                for credential in credentials {
                    match credential {
                        Credential::Token(token) => {
                            in_use.insert(token.budget().clone());
                        }
                        Credential::App(app) => {
                            in_use.insert(Budget::App(app.issuer().to_string()));
                            named.extend(app.installation());
                            apps.insert(app.identity().clone());
                            // An organisation's App reads the organisation's covered repositories.
                            let prefix = format!("{repo}/");
                            // (An organisation's own entry is its installation on the organisation.)
                            let read = std::iter::once(repo)
                                .chain(self.organisation_repos.iter().filter(|r| r.starts_with(&prefix)));
                            for repo in read {
                                in_use.extend(cache.installation(app, repo).map(Budget::Installation));
                                app_repos.insert(repo.clone());
                            }
                        }
                    }
                }
            }
        }
        self.shared.installations.cache().retain(&apps, &app_repos, &named);
        // A paused budget is remembered until its pause ends, in case it comes back.
        self.pace.retain(|budget, pace| in_use.contains(budget) || pace.paused_until > now);
        // A new organisation, or a runner in another group, has its groups read at once.
        let wanted = group_names(&index);
        let known = group_names(&self.catalog);
        for (owner, names) in &wanted {
            if known.get(owner) != Some(names) {
                self.groups_due.insert(owner.clone(), now);
            }
        }
        self.groups_due.retain(|owner, _| wanted.contains_key(owner));
        self.groups.0.retain(|(owner, group), _| wanted.get(owner).is_some_and(|names| names.contains(group)));
        self.shared.index = Arc::new(index.with_groups(&self.groups));
        self.catalog = index;
        self.tokens = tokens;
    }

    /// When an organisation's runner groups are read next, if any organisation has runners.
    pub fn groups_due(&self) -> Option<i64> {
        self.groups_due.values().min().copied()
    }

    /// Reads the runner groups of every organisation whose turn it is (see [`groups::access`])
    /// and, when what they admit changed, hands it to the store, so each organisation runner
    /// counts only jobs of repositories its group admits. Runs on every replica, leading or
    /// not: each replica's demand must agree. Groups that cannot be read keep what was last
    /// read (at first: every repository).
    pub async fn refresh_groups(&mut self, now: i64) {
        let due: Vec<String> =
            self.groups_due.iter().filter(|(_, at)| **at <= now).map(|(owner, _)| owner.clone()).collect();
        if due.is_empty() {
            return;
        }
        let wanted = group_names(&self.catalog);
        let idle = i64::try_from(self.shared.config.windows.idle.as_secs()).unwrap_or(i64::MAX);
        let every = GROUP_REFRESH_SECS.min(idle.max(1));
        let before = self.groups.clone();
        for owner in due {
            let Some(names) = wanted.get(&owner) else { continue };
            let next = match self.read_groups(&owner, names, now).await {
                None => now + GROUP_RETRY_SECS.min(every),
                Some(Ok(read)) => {
                    self.groups_unreadable.remove(&owner);
                    for (group, access) in read {
                        self.groups.0.insert((owner.clone(), group), access);
                    }
                    now + every
                }
                Some(Err(error)) if !self.groups_unreadable.insert(owner.clone()) => {
                    tracing::debug!(organisation = %owner, %error, "the organisation's runner groups could not be read again");
                    now + GROUP_RETRY_SECS.min(every)
                }
                Some(Err(error)) => {
                    tracing::warn!(
                        organisation = %owner,
                        %error,
                        "the organisation's runner groups could not be read: its runners count the jobs of the repositories their groups admitted when last read (at first, every repository); reading them needs the organisation's self-hosted runners read permission (a token: admin:org)"
                    );
                    now + GROUP_RETRY_SECS.min(every)
                }
            };
            self.groups_due.insert(owner, next);
        }
        if self.groups == before {
            return;
        }
        for ((owner, group), access) in &self.groups.0 {
            if before.0.get(&(owner.clone(), group.clone())) != Some(access) {
                let admits = match access {
                    GroupAccess::Every => "every repository".to_string(),
                    GroupAccess::Only(repos) => format!("{} repositories", repos.len()),
                    GroupAccess::Except(repos) => format!("every repository but {} public ones", repos.len()),
                };
                tracing::info!(organisation = %owner, runner_group = %group, admits, "runner group access read");
            }
        }
        self.shared.index = Arc::new(self.catalog.with_groups(&self.groups));
        if let Err(error) = self.shared.store.set_runner_groups(self.groups.clone()).await {
            tracing::error!(%error, "the store stopped: runner group changes are no longer applied");
        }
    }

    /// Reads what organisation `owner`'s groups `names` (lower-cased) admit; `None` when its
    /// credential may not spend now.
    async fn read_groups(
        &mut self,
        owner: &str,
        names: &BTreeSet<String>,
        now: i64,
    ) -> Option<Result<BTreeMap<String, GroupAccess>, GitHubError>> {
        let (token, budget) = match self.group_token(owner, now).await? {
            Ok(found) => found,
            Err(error) => return Some(Err(error)),
        };
        let client = self.shared.client.clone();
        let mut requests = 0;
        let result = async {
            let listed = client.list_runner_groups(&token, owner).await?;
            requests += listed.requests;
            let mut found = Vec::new();
            for name in names {
                match super::runners::find_group(&listed.value, name) {
                    Some(group) => found.push((name.clone(), group.clone())),
                    None => {
                        if self.groups_missing.insert((owner.to_string(), name.clone())) {
                            tracing::warn!(organisation = %owner, runner_group = %name, "GitHub knows no such runner group: its runners cannot register, and count the jobs of every repository");
                        }
                    }
                }
            }
            let public = if found.iter().any(|(_, group)| groups::needs_public_repositories(group)) {
                let public = client.list_public_repos(&token, owner).await?;
                requests += public.requests;
                Some(public.value.iter().map(|r| r.full_name.to_ascii_lowercase()).collect::<BTreeSet<String>>())
            } else {
                None
            };
            let mut read = BTreeMap::new();
            for name in names {
                let access = match found.iter().find(|(found, _)| found == name) {
                    None => GroupAccess::Every,
                    Some((_, group)) => {
                        let selected = if groups::needs_repositories(group) {
                            let repos = client.list_group_repos(&token, owner, group.id).await?;
                            requests += repos.requests;
                            Some(repos.value)
                        } else {
                            None
                        };
                        groups::access(owner, group, selected.as_deref(), public.as_ref())
                    }
                };
                read.insert(name.clone(), access);
            }
            Ok(read)
        }
        .await;
        self.pace.entry(budget).or_default().spent.push_back((now, requests));
        Some(result)
    }

    /// A token that reads organisation `owner`'s runner groups (its token, or a token of its
    /// App's installation on the organisation asking for that alone) and the budget it spends;
    /// `None` when a token may not spend now.
    async fn group_token(&mut self, owner: &str, now: i64) -> Option<Result<(Token, Budget), GitHubError>> {
        let credential = self.tokens.0.get(owner).and_then(|c| c.first()).cloned()?;
        let Credential::App(app) = credential else { return self.org_token(owner, now).await };
        let mut spent = 0;
        let installations = self.shared.installations.clone();
        let client = self.shared.client.clone();
        let tokens = &mut self.group_tokens;
        let result = async {
            let installation = installations.installation(&app, owner, now, &mut spent).await?;
            let key = (app.issuer().to_string(), installation);
            if let Some((token, expires_at)) = tokens.get(&key)
                && expires_at - GROUP_TOKEN_RENEW_SECS > now
            {
                return Ok((token.clone(), Budget::Installation(installation)));
            }
            let jwt = installations.jwt(&app, now)?;
            spent += 1;
            let minted = client.create_group_reader_token(&jwt, installation).await?;
            let minted = minted.value.ok_or_else(|| GitHubError::NotInstalled(owner.to_string()))?;
            tokens.retain(|_, (_, expires_at)| *expires_at > now);
            tokens.insert(key, (minted.token.clone(), minted.expires_at));
            Ok((minted.token, Budget::Installation(installation)))
        }
        .await;
        if spent > 0 {
            let app_budget = Budget::App(app.issuer().to_string());
            self.pace.entry(app_budget).or_default().spent.push_back((now, spent));
        }
        Some(result)
    }

    /// A token that reads organisation `owner` (its token, or its App's installation token on
    /// the organisation) and the budget it spends; `None` when a token may not spend now.
    async fn org_token(&mut self, owner: &str, now: i64) -> Option<Result<(Token, Budget), GitHubError>> {
        let credential = self.tokens.0.get(owner).and_then(|c| c.first()).cloned()?;
        match credential {
            Credential::Token(token) => {
                if self.ready_at(token.budget(), false, now) > now {
                    return None;
                }
                let budget = token.budget().clone();
                Some(Ok((token, budget)))
            }
            Credential::App(app) => {
                let (obtained, spent) = self.shared.installations.token(&app, owner, now).await;
                if spent > 0 {
                    let app_budget = Budget::App(app.issuer().to_string());
                    self.pace.entry(app_budget).or_default().spent.push_back((now, spent));
                }
                Some(obtained.map(|obtained| (obtained.token, Budget::Installation(obtained.installation))))
            }
        }
    }

    pub fn footprint(&self) -> Footprint {
        Footprint {
            repositories: self.schedule.len(),
            rotations: self.rotation.len(),
            job_lists: self.last_jobs.len(),
            paced_tokens: self.pace.len(),
            apps: self.shared.installations.footprint(),
            cached_pages: self.shared.client.cached_pages(),
        }
    }

    /// JWTs signed and installation tokens minted since start.
    pub fn minted(&self) -> Minted {
        self.shared.installations.minted()
    }

    pub fn next_due(&self) -> Option<i64> {
        self.schedule.next_due()
    }

    /// Brings the organisations' repositories into the resync: for every organisation with
    /// organisation runners and credentials, each repository of it that has an open job or had a
    /// job change within `cacheWindowWhenEmpty` (GitHub has no organisation-wide list of queued
    /// jobs, so a repository no delivery named is not asked about), and once after start every
    /// repository the organisation's listing shows (jobs queued while no one listened). A
    /// repository leaves once it has neither.
    pub async fn cover_organisations(&mut self, now: i64) {
        self.list_organisations(now).await;
        let owners: HashSet<String> = self
            .shared
            .index
            .organizations()
            .into_iter()
            .filter(|owner| self.tokens.0.get(*owner).is_some_and(|c| !c.is_empty()))
            .map(str::to_string)
            .collect();
        let wanted: HashSet<String> = if owners.is_empty() {
            HashSet::new()
        } else {
            let since = now - i64::try_from(self.shared.config.windows.idle.as_secs()).unwrap_or(i64::MAX / 2);
            match self.shared.store.active_repos(&owners, since).await {
                Ok(repos) => repos
                    .into_iter()
                    .chain(self.first_look.iter().cloned())
                    .filter(|repo| !self.tokens.0.contains_key(repo))
                    .collect(),
                Err(error) => {
                    tracing::warn!(%error, "the store did not say which repositories are active; keeping the last set");
                    return;
                }
            }
        };
        if wanted == self.organisation_repos {
            return;
        }
        self.organisation_repos = wanted;
        let tokens = std::mem::take(&mut self.tokens);
        self.reschedule(&tokens, now);
        self.tokens = tokens;
    }

    /// Schedules the repositories the resync covers (those with credentials of their own, and
    /// the organisations' covered ones) and forgets what it kept for any other.
    fn reschedule(&mut self, tokens: &RepoTokens, now: i64) {
        let covered: HashSet<String> = tokens
            .0
            .iter()
            .filter(|(repo, credentials)| repo.contains('/') && !credentials.is_empty())
            .map(|(repo, _)| repo.clone())
            .chain(self.organisation_repos.iter().cloned())
            .collect();
        self.last_jobs.retain(|repo, _| covered.contains(repo));
        self.run_of.retain(|repo, _| covered.contains(repo));
        self.rotation.retain(|repo, _| covered.contains(repo));
        self.schedule.set_repos(covered, now, self.shared.config.windows);
    }

    /// Lists the repositories of one organisation not listed since start (one a pass, when its
    /// credential may spend): with a token `GET /orgs/{org}/repos`, with a GitHub App its
    /// installation's `GET /installation/repositories`; a page of 100 repositories a request.
    /// Archived and disabled repositories run no jobs and are left out.
    async fn list_organisations(&mut self, now: i64) {
        let owner = self.shared.index.organizations().into_iter().find(|owner| {
            !self.listed.contains(*owner)
                && self.listing_retry.get(*owner).is_none_or(|at| *at <= now)
                && self.tokens.0.get(*owner).is_some_and(|c| !c.is_empty())
        });
        let Some(owner) = owner.map(str::to_string) else { return };
        let Some(found) = self.org_token(&owner, now).await else { return };
        let listed = match found {
            Ok((token, budget)) => {
                let listed = match &budget {
                    Budget::Installation(_) => self.shared.client.list_installation_repos(&token).await,
                    _ => self.shared.client.list_org_repos(&token, &owner).await,
                };
                if let Ok(fetched) = &listed {
                    self.pace.entry(budget).or_default().spent.push_back((now, fetched.requests));
                }
                listed
            }
            Err(error) => Err(error),
        };
        match listed {
            Ok(fetched) => {
                let prefix = format!("{owner}/");
                let repos: Vec<String> = fetched
                    .value
                    .iter()
                    .filter(|r| !r.archived && !r.disabled)
                    .map(|r| r.full_name.to_ascii_lowercase())
                    .filter(|name| name.starts_with(&prefix))
                    .collect();
                tracing::info!(organisation = %owner, repositories = repos.len(), requests = fetched.requests, "organisation's repositories listed for a first look");
                self.first_look.extend(repos);
                self.listed.insert(owner.clone());
                self.listing_retry.remove(&owner);
            }
            Err(error) => {
                tracing::warn!(organisation = %owner, %error, "listing the organisation's repositories failed; will retry");
                self.listing_retry.insert(owner, now + 60);
            }
        }
    }

    /// A credential for `repo` that may spend now, rotating between the repository's
    /// credentials, with the budget its requests will spend; else when the first may.
    fn pick_credential(&mut self, repo: &str, now: i64) -> Result<(Credential, Budget), i64> {
        let credentials = self.tokens.for_repo(repo).cloned().unwrap_or_default();
        let board = self.shared.store.board();
        let busy = self.shared.index.candidates(repo).any(|r| board.get(&r.key).is_some_and(|v| v.demand > 0));
        let start = *self.rotation.get(repo).unwrap_or(&0);
        let mut earliest = i64::MAX;
        for offset in 0..credentials.len() {
            let credential = &credentials[(start + offset) % credentials.len()];
            let (budget, ready_at) = match credential {
                Credential::Token(token) => (token.budget().clone(), self.ready_at(token.budget(), busy, now)),
                Credential::App(app) => {
                    let (budget, app_ready) = self.app_budget(app, repo, now);
                    match budget {
                        // The installation is paced as a token is.
                        Budget::Installation(_) => (budget.clone(), app_ready.max(self.ready_at(&budget, busy, now))),
                        _ => (budget, app_ready),
                    }
                }
            };
            if ready_at <= now {
                self.rotation.insert(repo.to_string(), start + offset + 1);
                return Ok((credential.clone(), budget));
            }
            earliest = earliest.min(ready_at);
        }
        Err(if earliest == i64::MAX { now + 60 } else { earliest })
    }

    /// The budget a repository read through `app` spends (its installation's once known, else
    /// the App's, which pays the lookup), and when the App may spend its own.
    fn app_budget(&mut self, app: &GitHubApp, repo: &str, now: i64) -> (Budget, i64) {
        let app_budget = Budget::App(app.issuer().to_string());
        let (installation, has_token, not_installed) = {
            let cache = self.shared.installations.cache();
            let installation = cache.installation(app, repo);
            let has_token = installation.is_some_and(|id| cache.token(app.identity(), id, now).is_some());
            (installation, has_token, cache.not_installed_until(app, repo).unwrap_or(now))
        };
        // The App's requests are few (a lookup per repository, a token per installation an
        // hour): only its pauses and reserve hold them back, not the even pacing, and only when
        // this resync needs one.
        let app_ready = if has_token { now } else { self.ready_at(&app_budget, true, now) };
        match installation {
            Some(id) => (Budget::Installation(id), app_ready.max(not_installed)),
            None => (app_budget, app_ready.max(not_installed)),
        }
    }

    /// When `budget` may spend again: after any pause, under 800 points a minute, above its
    /// reserve, and (unless `busy`) no faster than its hour's credits spread over the hour.
    fn ready_at(&mut self, budget: &Budget, busy: bool, now: i64) -> i64 {
        let pace = self.pace.entry(budget.clone()).or_default();
        let mut ready_at = pace.paused_until;
        if pace.points_last_minute(now) >= POINTS_PER_MINUTE {
            ready_at = ready_at.max(pace.spent.front().map_or(now, |(at, _)| at + 60));
        }
        if let Some(limit) = self.shared.client.budget_limit(budget)
            && limit.reset > now
        {
            if limit.remaining <= u64::from(self.shared.config.reserve_credits) {
                ready_at = ready_at.max(limit.reset);
            } else if !busy {
                // Spend an hour's credits evenly over the hour (plus a 5% burst): a cold start
                // of thousands of first listings stretches out instead of draining the budget,
                // and repositories with demand keep their credits.
                ready_at = ready_at.max(paced_until(limit.limit, limit.remaining, limit.reset, now));
            }
        }
        ready_at
    }

    /// Resyncs every repository due at `now` (our clock, unix seconds), a few at a time.
    pub async fn resync_due(&mut self, now: i64) -> Pass {
        self.cover_organisations(now).await;
        let mut pass = Pass::default();
        self.shared.metrics.resync_lag.set(self.schedule.lag(now) as f64);
        let due = self.schedule.due(now, usize::MAX);
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        let mut queue = due.into_iter();
        loop {
            while tasks.len() < self.shared.config.concurrency.max(1) {
                let Some(repo) = queue.next() else { break };
                match self.pick_credential(&repo, now) {
                    Err(at) => {
                        self.schedule.defer(&repo, at);
                        pass.deferred += 1;
                    }
                    Ok((credential, budget)) => {
                        let shared = self.shared.clone();
                        let cached = self.last_jobs.get(&repo).cloned();
                        let runs = self.run_of.get(&repo).cloned().unwrap_or_default();
                        tasks.spawn(resync_with(shared, credential, budget, repo, now, cached, runs));
                    }
                }
            }
            let Some(joined) = tasks.join_next().await else { break };
            let Ok(Finished { repo, budget, app, failed_on, outcome, jobs_seen, runs }) = joined else {
                pass.failed += 1;
                continue;
            };
            if let Some((app_budget, requests)) = app.filter(|(_, requests)| *requests > 0) {
                self.pace.entry(app_budget).or_default().spent.push_back((now, requests));
            }
            let pace = self.pace.entry(if outcome.is_ok() { budget } else { failed_on.clone() }).or_default();
            match outcome {
                Ok(outcome) => {
                    pace.spent.push_back((now, outcome.requests));
                    pace.secondary_backoff = None;
                    pass.resynced += 1;
                    pass.requests += outcome.requests;
                    pass.credits += outcome.credits;
                    pass.corrections += outcome.corrections;
                    self.last_jobs.insert(repo.clone(), jobs_seen);
                    self.first_look.remove(&repo);
                    if runs.is_empty() {
                        self.run_of.remove(&repo);
                    } else {
                        self.run_of.insert(repo.clone(), runs);
                    }
                    self.record_outcome(&repo, &outcome, now);
                    self.schedule.done(&repo, now, outcome.busy, self.shared.config.windows);
                }
                Err(ResyncError::GitHub(GitHubError::RateLimited { retry_after, secondary })) => {
                    // Keep the last good demand; wait as GitHub asks, longer on repeats. Answers to
                    // requests this pass sent before another's limit paused the token (it is
                    // paused past the pass's start) are that same limit, not repeats of it.
                    let repeat = pace.paused_until <= now;
                    let wait = if secondary && repeat {
                        let wait = secondary_wait(pace.secondary_backoff, retry_after);
                        pace.secondary_backoff = Some(wait);
                        wait
                    } else {
                        retry_after
                    };
                    let until = now + i64::try_from(wait.as_secs()).unwrap_or(i64::MAX / 2).max(1);
                    pace.paused_until = pace.paused_until.max(until);
                    tracing::warn!(%repo, budget = %failed_on, wait_secs = wait.as_secs(), secondary, "GitHub rate limit: paused");
                    self.schedule.defer(&repo, until);
                    pass.deferred += 1;
                }
                Err(error) => {
                    tracing::warn!(%repo, budget = %failed_on, %error, "resync failed; will retry");
                    self.schedule.defer(&repo, now + 60);
                    pass.failed += 1;
                }
            }
        }
        // Pages kept by lookups of finished runs, and those of tokens no longer used: nothing asks
        // for them again within the windows. (Pages of runs that left the open lists went at once.)
        // While the budget's pacing defers repositories (a cold start of thousands), their next
        // turn is further ahead than the idle window: their pages are kept until then.
        let idle = i64::try_from(self.shared.config.windows.idle.as_secs()).unwrap_or(i64::MAX);
        let reach = self.schedule.reach(now).saturating_mul(2);
        let horizon = idle.saturating_mul(2).max(PAGE_HORIZON_SECS).max(reach);
        self.shared.client.expire_pages(now.saturating_sub(horizon));
        pass
    }

    fn record_outcome(&self, repo: &str, outcome: &RepoOutcome, now: i64) {
        let metrics = &self.shared.metrics;
        for runner in self.shared.index.candidates(repo) {
            let drift = outcome.drift.get(&runner.key).copied().unwrap_or(0);
            let labels =
                crate::metrics::RunnerLabels { namespace: runner.key.namespace.clone(), name: runner.key.name.clone() };
            metrics.drift.get_or_create(&labels).set(drift);
            if drift != 0 {
                metrics.drift_corrections.get_or_create(&labels).inc_by(drift.unsigned_abs());
                tracing::info!(runner = %runner.key, drift, "resync corrected demand from GitHub");
            }
            self.shared.store.board().set_resync(
                &runner.key,
                ResyncInfo { with_token: true, last_time: Some(now), last_drift: Some(drift) },
            );
        }
    }

    /// Runs passes until `stop` resolves (at once, even in the middle of a pass), sleeping until
    /// the next repository is due. Passes run
    /// only while `leading` says this replica holds the resync lease; each new catalog from
    /// `catalogs` (runners and tokens watched in a cluster) replaces the current one.
    pub async fn run(
        mut self,
        clock: crate::clock::Clock,
        mut leading: tokio::sync::watch::Receiver<bool>,
        stop: tokio_util::sync::CancellationToken,
        mut catalogs: Option<tokio::sync::watch::Receiver<(RunnerIndex, RepoTokens)>>,
    ) {
        loop {
            if let Some(catalogs) = catalogs.as_mut().filter(|catalogs| catalogs.has_changed().unwrap_or(false)) {
                let (runners, tokens) = catalogs.borrow_and_update().clone();
                self.set_catalog(runners, tokens, clock());
            }
            // Every replica reads the runner groups: each one's demand must agree.
            tokio::select! {
                () = self.refresh_groups(clock()) => {}
                () = stop.cancelled() => return,
            }
            // A replica without the lease only waits for the lease, a new catalog, or its
            // runner groups' turn.
            let mut sleep = Duration::from_secs(3600);
            if *leading.borrow_and_update() {
                // A stop cancels a pass in flight (its requests are dropped): a slow GitHub must
                // not hold the shutdown past its grace. Corrections journaled so far stay.
                let pass = tokio::select! {
                    pass = self.resync_due(clock()) => pass,
                    () = stop.cancelled() => {
                        tracing::info!("resync stopped in the middle of a pass");
                        return;
                    }
                };
                if pass.resynced + pass.deferred + pass.failed > 0 {
                    tracing::debug!(?pass, "resync pass");
                }
                let next = self.next_due().unwrap_or(clock() + 60);
                sleep = Duration::from_secs(u64::try_from((next - clock()).clamp(1, 60)).unwrap_or(1));
            }
            if let Some(groups) = self.groups_due() {
                sleep = sleep.min(Duration::from_secs(u64::try_from((groups - clock()).max(1)).unwrap_or(1)));
            }
            let new_catalog = async {
                match catalogs.as_mut() {
                    Some(catalogs) => catalogs.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                true = new_catalog => {}
                Ok(()) = leading.changed() => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

/// Per organisation (lower-cased owner), the runner groups (lower-cased) its runners register in.
fn group_names(index: &RunnerIndex) -> HashMap<String, BTreeSet<String>> {
    let mut names: HashMap<String, BTreeSet<String>> = HashMap::new();
    for runner in index.iter() {
        if let Some(group) = runner.group() {
            names.entry(runner.owner().to_string()).or_default().insert(group.to_ascii_lowercase());
        }
    }
    names
}

/// The pause after a secondary limit: what GitHub asks the first time; on a repeat twice the
/// last pause, at least a minute, at most 15 minutes (unless GitHub itself asks for longer).
fn secondary_wait(last: Option<Duration>, retry_after: Duration) -> Duration {
    match last {
        None => retry_after,
        Some(last) => (last * 2).max(SECONDARY_REPEAT_FLOOR).min(SECONDARY_CAP).max(retry_after),
    }
}

/// When a token that has `remaining` of `limit` credits in a window ending at `reset` may spend
/// again, spending evenly over the hour with a 5% burst (`now` when it may spend already).
fn paced_until(limit: u64, remaining: u64, reset: i64, now: i64) -> i64 {
    if limit == 0 {
        return now;
    }
    let window_start = reset - 3600;
    let burst = limit / 20;
    let used = limit.saturating_sub(remaining);
    let spendable_from = window_start + (used.saturating_sub(burst) as i64 * 3600) / limit as i64;
    spendable_from.max(now)
}

fn github_job(job: &WorkflowJob) -> GitHubJob {
    let since = match job.status.as_deref() {
        Some("in_progress") | Some("completed") => job.started_at.as_deref().or(job.created_at.as_deref()),
        _ => job.created_at.as_deref(),
    }
    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    .map(|t| t.as_second());
    let status = job.status.as_deref().and_then(JobStatus::parse);
    let mut labels = normalize_labels(&job.labels);
    // The group of the runner that took it, as a delivery records it.
    mark_group(&mut labels, status, job.runner_group_name.as_deref());
    GitHubJob { id: job.id, run_id: job.run_id, run_attempt: job.run_attempt.unwrap_or(1), status, labels, since }
}

/// One repository's resync with `credential`: a token as it is; a GitHub App through its
/// installation's token, minted anew once if GitHub refuses the cached one (revoked, or expired
/// early).
async fn resync_with(
    shared: Shared,
    credential: Credential,
    budget: Budget,
    repo: String,
    now: i64,
    cached: Option<Vec<GitHubJob>>,
    mut runs: HashMap<u64, u64>,
) -> Finished {
    let mut jobs_seen = Vec::new();
    let app = match credential {
        Credential::Token(token) => {
            let outcome = resync_repo(&shared, &token, &repo, now, cached, &mut jobs_seen, &mut runs).await;
            return Finished { repo, failed_on: budget.clone(), budget, app: None, outcome, jobs_seen, runs };
        }
        Credential::App(app) => app,
    };
    let app_budget = Budget::App(app.issuer().to_string());
    let mut app_requests = 0;
    let mut attempt = 0;
    let (budget, outcome) = loop {
        attempt += 1;
        let (obtained, spent) = shared.installations.token(&app, &repo, now).await;
        app_requests += spent;
        let obtained = match obtained {
            Ok(obtained) => obtained,
            Err(error) => {
                let finished = Finished {
                    repo,
                    budget: app_budget.clone(),
                    app: Some((app_budget.clone(), app_requests)),
                    failed_on: app_budget,
                    outcome: Err(error.into()),
                    jobs_seen,
                    runs,
                };
                return finished;
            }
        };
        let budget = Budget::Installation(obtained.installation);
        let outcome =
            resync_repo(&shared, &obtained.token, &repo, now, cached.clone(), &mut jobs_seen, &mut runs).await;
        match outcome {
            Err(ResyncError::GitHub(GitHubError::Unauthorized)) if attempt == 1 => {
                tracing::info!(%repo, installation = obtained.installation, "GitHub refused the installation token; minting a new one");
                shared.installations.refused(&app, obtained.installation, &obtained.token);
            }
            outcome => break (budget, outcome),
        }
    };
    Finished {
        repo,
        failed_on: budget.clone(),
        budget,
        app: Some((app_budget, app_requests)),
        outcome,
        jobs_seen,
        runs,
    }
}

/// One repository: list, compare, look up, correct. `jobs_seen` receives the jobs of the open
/// runs, for reuse while the run lists stay unchanged; `run_of` holds the runs GitHub showed for
/// the open jobs the store knows without one, and is left holding those still open.
async fn resync_repo(
    shared: &Shared,
    token: &Token,
    repo: &str,
    now: i64,
    cached: Option<Vec<GitHubJob>>,
    jobs_seen: &mut Vec<GitHubJob>,
    run_of: &mut HashMap<u64, u64>,
) -> Result<RepoOutcome, ResyncError> {
    let client = &shared.client;
    let mut outcome = RepoOutcome::default();
    let mut count = |requests: u32, credits: u32, not_modified: u32| {
        outcome.requests += requests;
        outcome.credits += credits;
        outcome.not_modified += not_modified;
    };
    let queued = client.list_runs(token, repo, RunStatus::Queued).await?;
    count(queued.requests, queued.credits, queued.not_modified);
    let running = client.list_runs(token, repo, RunStatus::InProgress).await?;
    count(running.requests, running.credits, running.not_modified);
    let unchanged = queued.credits == 0 && running.credits == 0;
    let open_runs: HashSet<u64> = queued.value.iter().chain(running.value.iter()).map(|r| r.id).collect();
    // Runs open at the last listing and not now: nothing lists their jobs again.
    if let Some(before) = &cached {
        let finished: HashSet<u64> = before.iter().map(|j| j.run_id).filter(|run| !open_runs.contains(run)).collect();
        for run in finished {
            client.forget_run(token, repo, run);
        }
    }
    let github: Vec<GitHubJob> = match cached {
        Some(jobs) if unchanged => jobs,
        _ => {
            let mut jobs = Vec::new();
            for run in queued.value.iter().chain(running.value.iter()) {
                let listed = client.list_jobs(token, repo, run.id, JobFilter::Latest).await?;
                count(listed.requests, listed.credits, listed.not_modified);
                jobs.extend(listed.value.iter().map(github_job));
            }
            jobs
        }
    };
    let open = shared.store.open_jobs(repo).await.map_err(ResyncError::OpenJobs)?;
    // The run of each open job the store knows without one (only another replica journaled it):
    // as GitHub lists it now, else as it was listed while the job was open.
    let listed: HashMap<u64, u64> = github.iter().filter(|j| j.run_id != 0).map(|j| (j.id, j.run_id)).collect();
    *run_of = open
        .iter()
        .filter(|j| j.run_id == 0)
        .filter_map(|j| listed.get(&j.id).or_else(|| run_of.get(&j.id)).map(|&run| (j.id, run)))
        .collect();
    let ours: Vec<KnownJob> = open
        .into_iter()
        .map(|j| KnownJob {
            id: j.id,
            run_id: if j.run_id == 0 { run_of.get(&j.id).copied().unwrap_or(0) } else { j.run_id },
            run_attempt: j.run_attempt,
            status: j.status,
            labels: j.labels,
            changed_at: j.changed_at,
        })
        .collect();
    let repo_ref = RepoRef::new(0, repo);
    let Comparison { mut corrections, unseen, drift } =
        compare(&repo_ref, &shared.index, &github, &ours, now, shared.config.settle);
    // Jobs GitHub's open lists no longer show: one question per run, however many were lost.
    let lookups = Lookups::new(&unseen, &ours);
    let mut budget = shared.config.max_lookups;
    for (&run_id, job_ids) in &lookups.runs {
        if budget == 0 {
            break;
        }
        budget -= 1;
        let known: Vec<&KnownJob> = ours.iter().filter(|j| job_ids.contains(&j.id)).collect();
        // A run still listed open lost these jobs from its latest attempt: ask for every
        // attempt's jobs. Any other run: its status first, which settles a finished run at once.
        let mut settled = None;
        if !open_runs.contains(&run_id) {
            let run = client.get_run(token, repo, run_id).await?;
            count(run.requests, run.credits, run.not_modified);
            settled = match &run.value {
                None => Some(RunAnswer::Gone),
                Some(run) if run.status.as_deref() == Some("completed") => Some(RunAnswer::Completed),
                Some(_) => None,
            };
        }
        let listed: Vec<GitHubJob>;
        let answer = match settled {
            Some(answer) => answer,
            None => match client.list_jobs(token, repo, run_id, JobFilter::All).await {
                Err(GitHubError::NotFound) => RunAnswer::Gone,
                Err(error) => return Err(error.into()),
                Ok(jobs) => {
                    count(jobs.requests, jobs.credits, jobs.not_modified);
                    listed = jobs.value.iter().map(github_job).collect();
                    RunAnswer::Jobs(&listed)
                }
            },
        };
        corrections.extend(repair_run(&repo_ref, answer, &known));
    }
    let runs_left = lookups.runs.len().saturating_sub(shared.config.max_lookups);
    let lone_left = lookups.lone.len().saturating_sub(budget);
    for job_id in lookups.lone.into_iter().take(budget) {
        let found = client.get_job(token, repo, job_id).await?;
        count(found.requests, found.credits, found.not_modified);
        let known = ours.iter().find(|j| j.id == job_id);
        let status = match &found.value {
            // Gone from GitHub altogether: nothing will ever run it.
            None => Some(JobStatus::Completed),
            Some(job) => job.status.as_deref().and_then(JobStatus::parse),
        };
        if let (Some(status), Some(known)) = (status, known)
            && status > known.status
        {
            let base = found.value.as_ref().map(github_job);
            corrections.push(JobEvent::new(
                job_id,
                base.as_ref().map_or(known.run_id, |b| b.run_id),
                base.as_ref().map_or(known.run_attempt, |b| b.run_attempt),
                repo_ref.clone(),
                status,
                known.labels.iter(),
            ));
        }
    }
    // Lookups left for the next pass bring it back within the busy window, not the idle one.
    outcome.busy = github.iter().any(|j| j.status.is_some_and(JobStatus::is_demand)) || runs_left + lone_left > 0;
    // Sent together, so they share group commits instead of one flush each.
    for chunk in corrections.chunks(RECORD_CHUNK) {
        let records = chunk.iter().map(|event| async move {
            let delivery = format!("resync:{}:{}", event.job_id, event.status.as_str());
            shared.store.record(&delivery, event.clone()).await
        });
        for recorded in futures::future::join_all(records).await {
            recorded.map_err(ResyncError::Correction)?;
        }
    }
    outcome.corrections = corrections.len();
    outcome.drift = drift;
    *jobs_seen = github;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{paced_until, secondary_wait};

    #[test]
    fn a_repeated_secondary_limit_doubles_from_a_minute_up_to_fifteen() {
        let s = Duration::from_secs;
        assert_eq!(secondary_wait(None, s(5)), s(5), "the first time, as GitHub asks");
        assert_eq!(secondary_wait(Some(s(5)), s(5)), s(60));
        assert_eq!(secondary_wait(Some(s(60)), s(1)), s(120));
        assert_eq!(secondary_wait(Some(s(900)), s(900)), s(900));
        assert_eq!(secondary_wait(Some(s(900)), s(1200)), s(1200), "GitHub's own longer wait holds");
    }

    #[test]
    fn credits_are_paced_evenly_over_the_window_with_a_small_burst() {
        // Window 0..3600, 5000 credits: by t=720 a fifth (1000) plus the 250 burst may be spent.
        assert_eq!(paced_until(5000, 5000 - 1250, 3600, 720), 720);
        assert_eq!(paced_until(5000, 5000 - 1260, 3600, 720), 727);
        assert_eq!(paced_until(5000, 0, 3600, 0), 3420);
        assert_eq!(paced_until(0, 0, 3600, 5), 5);
    }
}
