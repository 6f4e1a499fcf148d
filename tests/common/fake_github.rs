//! An in-process fake of the GitHub REST endpoints the reconciler polls, behaving as GitHub documents
//! them: workflow runs and jobs with pagination by `Link` header, weak `ETag`s with free `304`s,
//! per-token primary rate limits with their headers, and injected faults (secondary limits, server
//! errors, slowness).
//!
//! Modelled on GitHub's REST documentation ("List workflow runs for a repository", "List jobs for a
//! workflow run", "Get a workflow run", "Get a job for a workflow run", "Rate limits for the REST API", "Best practices":
//! conditional requests, "Using pagination in the REST API"). Simplifications, on purpose:
//! - only a `200` costs a primary-limit credit; `304`, `4xx` and `5xx` are free here (GitHub may
//!   count errors; a client must not rely on either);
//! - a token's hourly window opens at its first request and closes an hour later (the
//!   `X-RateLimit-Reset`); `credits_used` counts across windows;
//! - an exhausted token gets the `403` even with a matching `If-None-Match`;
//! - one attempt per run (`run_attempt` 1), so `filter=latest` and `filter=all` agree;
//! - a `Link` keeps the request's path and query (GitHub sometimes rewrites the path to
//!   `/repositories/{id}/…`: follow the links, never build them);
//! - requests without a `User-Agent` are refused with GitHub's `403`, before authentication.
//!
//! Onboarding endpoints ("Repository webhooks", "Self-hosted runners", "Get a repository"): a
//! repository's hooks (list with `Link` pagination, create, update; secrets never shown), the
//! registration token, and per token and repository access ([`Access`]): a token without admin
//! rights gets GitHub's `404` on hooks and `403` on the registration token, a fine-grained token
//! without the permission a `403`, both with `X-Accepted-GitHub-Permissions`.
//!
//! Organisation endpoints ("Organization webhooks", "List organization repositories",
//! "Self-hosted runner groups"): an organisation's hooks as a repository's, its repositories
//! (newest first, paginated, `type` `all`, `public` or `private`; an installation token sees only
//! its installation's), its runner groups (`Default`, id 1, in every one) with their repository
//! access ([`GroupAccess`]) and a `selected` group's repositories, and runner registration tokens;
//! per token and organisation access as for repositories, with the organisation permissions'
//! names. Repositories are private unless made public.
//!
//! Self-hosted runner endpoints ("Self-hosted runners", for a repository or an organisation):
//! just-in-time configurations (`generate-jitconfig`: `409` for a name already registered there,
//! `422` for an empty or over-long name or no labels, `404` for a runner group that is not the
//! place's, as GitHub answers for an unknown group), runner lists (paginated, conditional), a
//! runner, and its removal (`422` while it runs a job). Access as for the registration token;
//! an installation token needs the runner permission among those it was minted with. Test
//! helpers stand in for the runner itself: it starts with its configuration (once), takes a
//! job, finishes it and, when just-in-time, is removed by GitHub. See the block before the App's.
//!
//! GitHub App endpoints ("Authenticating as a GitHub App", "Apps"): a JWT checked against the
//! App's public key and its times, installation lookup per repository or organisation,
//! installation tokens that expire, read only the installation's repositories (listed by
//! `GET /installation/repositories`) and share its rate limit; see the block at the end of the
//! file.
//!
//! Order of checks for every request: `User-Agent` → token (`401`) → the next matching injected
//! fault → primary limit (`403`) → route (`404`) → `If-None-Match` (`304`, free) → `200` (1 credit).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

/// GitHub's primary rate-limit window.
const WINDOW_SECS: i64 = 3600;
const DEFAULT_PER_PAGE: usize = 30;
const MAX_PER_PAGE: usize = 100;
/// The runner group every organisation has.
const DEFAULT_RUNNER_GROUP_ID: u64 = 1;
/// GitHub's longest runner name (the runner's own `config.sh` refuses longer ones).
const MAX_RUNNER_NAME_CHARS: usize = 64;
/// GitHub's bounds on a just-in-time runner's labels.
const MAX_RUNNER_LABELS: usize = 100;
/// Runner ids start here, apart from the ids of the runners `set_job_status` invents.
const FIRST_RUNNER_ID: u64 = 50_000_000;
const RATE_LIMIT_DOCS: &str = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api";

/// A job's `status` as GitHub reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Queued,
    InProgress,
    Completed,
    Waiting,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::InProgress => "in_progress",
            JobState::Completed => "completed",
            JobState::Waiting => "waiting",
        }
    }
}

/// A misbehaviour served instead of (or, for `Slow`, before) the normal answer. Each is consumed
/// by exactly one authenticated request, in the order injected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// An answer with this status (e.g. 500, 502, 503) and a JSON message.
    ServerError { status: u16 },
    /// GitHub's secondary-limit answer: `status` (403 or 429) with `Retry-After`.
    SecondaryLimit { retry_after_secs: u64, status: u16 },
    /// The primary-limit `403` with `X-RateLimit-Remaining: 0`, once, whatever the token has left.
    PrimaryExhausted,
    /// Waits this long, then answers normally.
    Slow { delay: Duration },
}

/// One request as the fake saw it, with the status it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub if_none_match: Option<String>,
    pub status: u16,
    /// The token presented, known or not.
    pub token: Option<String>,
}

/// A job as the fake holds it: the ground truth a test compares with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobView {
    pub id: u64,
    pub run_id: u64,
    /// `owner/name` as the repository was created.
    pub repo: String,
    pub labels: Vec<String>,
    pub status: JobState,
}

/// What a token may do on a repository. Tokens are `Admin` everywhere unless told otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Admin,
    /// The account can read the repository but does not administer it.
    Read,
    /// A fine-grained token of an admin account, granted neither Webhooks nor Administration.
    FineGrainedWithoutAdminPermissions,
}

/// A repository hook as the fake holds it, secret included (GitHub never shows it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookView {
    pub id: u64,
    pub name: String,
    pub active: bool,
    pub events: Vec<String>,
    pub url: String,
    pub content_type: String,
    pub insecure_ssl: String,
    pub secret: Option<String>,
}

/// Which repositories' jobs an organisation's runner group serves, as its settings set it
/// ("Self-hosted runner groups": visibility, public repositories, workflow restrictions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupAccess {
    /// `all` (every repository of the organisation), `selected` (the `selected_repositories`) or
    /// `private` (every private repository).
    pub visibility: &'static str,
    /// Public repositories may use the group too (GitHub's default: no).
    pub allows_public_repositories: bool,
    /// `owner/name` of the repositories a `selected` group serves; empty for the other visibilities.
    pub selected_repositories: Vec<String>,
    /// The workflows it is restricted to, as `owner/repo/.github/workflows/build.yml@refs/heads/main`;
    /// empty: any workflow.
    pub selected_workflows: Vec<String>,
}

impl Default for GroupAccess {
    /// A new group's access: every repository, public ones not allowed, any workflow.
    fn default() -> Self {
        Self {
            visibility: "all",
            allows_public_repositories: false,
            selected_repositories: Vec::new(),
            selected_workflows: Vec::new(),
        }
    }
}

pub struct FakeGitHub {
    addr: SocketAddr,
    world: Arc<Mutex<World>>,
    task: JoinHandle<()>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGitHub {
    /// Serves on 127.0.0.1 on a free port until dropped.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake GitHub");
        let addr = listener.local_addr().expect("the fake GitHub's address");
        let world = Arc::new(Mutex::new(World::new(format!("http://{addr}"))));
        let app = Router::new().fallback(answer).with_state(world.clone());
        let task = tokio::spawn(async move {
            // Only ends when the task is aborted on drop.
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, world, task }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A token with `limit` requests an hour, all remaining.
    pub fn add_token(&self, token: &str, limit: u32) {
        self.world().tokens.insert(token.to_owned(), Quota { limit, used: 0, window_start: None, spent: 0 });
    }

    /// Makes a repository (`owner/name`) exist with no runs; `add_job` creates it too.
    pub fn add_repo(&self, repo: &str) {
        self.world().repo_mut(repo);
    }

    /// Adds (or replaces) a job in run `run_id` of `repo`, creating the repository and run if needed.
    pub fn add_job(&self, repo: &str, run_id: u64, job_id: u64, labels: &[&str], status: JobState) {
        let mut world = self.world();
        let now = world.now();
        let key = repo_key(repo);
        if let Some(existing) = world.jobs.get(&job_id) {
            assert!(
                existing.repo == key && existing.run_id == run_id,
                "job {job_id} already belongs to run {} of {}",
                existing.run_id,
                existing.repo
            );
        }
        let run = world.repo_mut(repo).runs.entry(run_id).or_insert_with(|| Run {
            id: run_id,
            created_at: now,
            updated_at: now,
            jobs: BTreeSet::new(),
        });
        run.jobs.insert(job_id);
        run.updated_at = now;
        let mut job = Job {
            id: job_id,
            run_id,
            repo: key,
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            status: JobState::Queued,
            created_at: now,
            started_at: now,
            completed_at: None,
            runner: None,
        };
        job.transition(status, now);
        world.jobs.insert(job_id, job);
    }

    /// Moves a known job to `status` (a runner is assigned when it starts; `completed` succeeds).
    pub fn set_job_status(&self, job_id: u64, status: JobState) {
        let mut world = self.world();
        let now = world.now();
        let job = world.jobs.get_mut(&job_id).unwrap_or_else(|| panic!("no job {job_id} in the fake GitHub"));
        if job.status == status {
            return;
        }
        job.transition(status, now);
        let (repo, run_id) = (job.repo.clone(), job.run_id);
        if let Some(run) = world.repos.get_mut(&repo).and_then(|r| r.runs.get_mut(&run_id)) {
            run.updated_at = now;
        }
    }

    /// Deletes a run and its jobs (they answer 404 afterwards).
    pub fn remove_run(&self, repo: &str, run_id: u64) {
        let mut world = self.world();
        let removed = world.repos.get_mut(&repo_key(repo)).and_then(|r| r.runs.remove(&run_id));
        if let Some(run) = removed {
            for job in run.jobs {
                world.jobs.remove(&job);
            }
        }
    }

    /// Primary-limit credits this token has spent since it was added, across windows.
    pub fn credits_used(&self, token: &str) -> u32 {
        self.world().tokens.get(token).map_or(0, |q| q.spent)
    }

    /// What `X-RateLimit-Remaining` would say now.
    pub fn remaining(&self, token: &str) -> u32 {
        let world = self.world();
        let now = world.now();
        world.tokens.get(token).map_or(0, |q| if q.expired(now) { q.limit } else { q.limit.saturating_sub(q.used) })
    }

    /// Leaves `remaining` requests in the token's current window (opening one if needed).
    pub fn set_remaining(&self, token: &str, remaining: u32) {
        let mut world = self.world();
        let now = world.now();
        let quota = world.tokens.get_mut(token).unwrap_or_else(|| panic!("no token {token} in the fake GitHub"));
        quota.roll(now);
        quota.used = quota.limit.saturating_sub(remaining);
    }

    /// Sets what `token` may do on `repo` (default: [`Access::Admin`]).
    pub fn set_access(&self, token: &str, repo: &str, access: Access) {
        self.world().access.insert((token.to_owned(), repo_key(repo)), access);
    }

    /// Adds a hook to `repo` (creating the repository) as if made earlier; returns its id.
    pub fn add_hook(&self, repo: &str, url: &str, events: &[&str]) -> u64 {
        let mut world = self.world();
        let hook = made_earlier(&mut world, url, events);
        let id = hook.id;
        world.repo_mut(repo).hooks.push(hook);
        id
    }

    /// The hooks of `repo`, oldest first.
    pub fn hooks(&self, repo: &str) -> Vec<HookView> {
        self.world().repos.get(&repo_key(repo)).map(|r| r.hooks.clone()).unwrap_or_default()
    }

    /// Registration tokens handed out, oldest first.
    pub fn registration_tokens(&self) -> Vec<String> {
        self.world().registration_tokens.iter().map(|(_, token)| token.clone()).collect()
    }

    /// Registration tokens handed out for `place` (`owner/name`, or an organisation's login), oldest first.
    pub fn registration_tokens_of(&self, place: &str) -> Vec<String> {
        let key = repo_key(place);
        self.world().registration_tokens.iter().filter(|(k, _)| *k == key).map(|(_, token)| token.clone()).collect()
    }

    /// Makes organisation `org` exist, with its `Default` runner group and no repositories.
    pub fn add_org(&self, org: &str) {
        self.world().org_mut(org);
    }

    /// Adds repository `name` to organisation `org` (creating both); its id.
    pub fn add_org_repo(&self, org: &str, name: &str) -> u64 {
        let mut world = self.world();
        world.org_mut(org);
        world.repo_mut(&format!("{org}/{name}")).id
    }

    /// Archives (or unarchives) `repo`; organisation listings show it with `archived: true`.
    pub fn set_archived(&self, repo: &str, archived: bool) {
        self.world().repo_mut(repo).archived = archived;
    }

    /// Makes `repo` (created if needed) public, or private again (every repository starts private).
    pub fn set_repo_public(&self, repo: &str, public: bool) {
        self.world().repo_mut(repo).public = public;
    }

    /// Sets what `token` may do on organisation `org` (default: [`Access::Admin`], an owner).
    pub fn set_org_access(&self, token: &str, org: &str, access: Access) {
        self.world().access.insert((token.to_owned(), repo_key(org)), access);
    }

    /// Adds a hook to organisation `org` (creating it) as if made earlier; returns its id.
    pub fn add_org_hook(&self, org: &str, url: &str, events: &[&str]) -> u64 {
        let mut world = self.world();
        let hook = made_earlier(&mut world, url, events);
        let id = hook.id;
        world.org_mut(org).hooks.push(hook);
        id
    }

    /// The hooks of organisation `org`, oldest first.
    pub fn org_hooks(&self, org: &str) -> Vec<HookView> {
        self.world().orgs.get(&repo_key(org)).map(|o| o.hooks.clone()).unwrap_or_default()
    }

    /// Adds runner group `name` to organisation `org` (creating it), serving every repository
    /// but public ones, any workflow; its id.
    pub fn add_runner_group(&self, org: &str, name: &str) -> u64 {
        let mut world = self.world();
        world.next_runner_group_id += 1;
        let id = world.next_runner_group_id;
        world.org_mut(org).runner_groups.push(RunnerGroup::new(id, name));
        id
    }

    /// Sets which repositories' jobs runner group `group` (by name, `Default` included) of
    /// organisation `org` (created if needed) serves. Panics for an unknown group, a visibility
    /// other than `all`, `selected` or `private`, or selected repositories on a group that is
    /// not `selected`. Selected repositories need not exist; only existing ones are listed.
    pub fn set_runner_group_access(&self, org: &str, group: &str, access: GroupAccess) {
        let visibility = match access.visibility {
            "all" => "all",
            "selected" => "selected",
            "private" => "private",
            other => panic!("a runner group's visibility is all, selected or private, not {other:?}"),
        };
        assert!(
            visibility == "selected" || access.selected_repositories.is_empty(),
            "only a selected group has selected repositories"
        );
        let mut world = self.world();
        let groups = &mut world.org_mut(org).runner_groups;
        let found = groups.iter_mut().find(|g| g.name.eq_ignore_ascii_case(group));
        let found = found.unwrap_or_else(|| panic!("no runner group {group} in organisation {org}"));
        let mut repositories: Vec<String> = Vec::new();
        for key in access.selected_repositories.iter().map(|r| repo_key(r)) {
            if !repositories.contains(&key) {
                repositories.push(key);
            }
        }
        found.visibility = visibility;
        found.allows_public_repositories = access.allows_public_repositories;
        found.restricted_to_workflows = !access.selected_workflows.is_empty();
        found.selected_workflows = access.selected_workflows;
        found.selected_repositories = repositories;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.world().requests.clone()
    }

    /// Authenticated requests received so far, answered or not (a `Slow` one counts on arrival).
    pub fn admitted(&self) -> u64 {
        self.world().admitted
    }

    pub fn clear_requests(&self) {
        self.world().requests.clear();
    }

    /// Queues a fault for the next authenticated request.
    pub fn inject(&self, fault: Fault) {
        self.world().faults.push_back(Injected { path_contains: None, fault });
    }

    /// Queues a fault for the next authenticated request whose path contains `path_contains`.
    pub fn inject_on(&self, path_contains: &str, fault: Fault) {
        self.world().faults.push_back(Injected { path_contains: Some(path_contains.to_owned()), fault });
    }

    /// Serves `fault` to every authenticated request no queued fault matches (an outage, a
    /// stretch of secondary limits), until called again with `None`.
    pub fn set_standing_fault(&self, fault: Option<Fault>) {
        self.world().standing = fault;
    }

    /// Every job GitHub knows, in job-id order.
    pub fn jobs(&self) -> Vec<JobView> {
        let world = self.world();
        world
            .jobs
            .values()
            .map(|job| JobView {
                id: job.id,
                run_id: job.run_id,
                repo: world.repos.get(&job.repo).map_or_else(|| job.repo.clone(), |r| r.full_name.clone()),
                labels: job.labels.clone(),
                status: job.status,
            })
            .collect()
    }

    /// The id GitHub gave `repo` (`owner/name`), if it exists.
    pub fn repo_id(&self, repo: &str) -> Option<u64> {
        self.world().repos.get(&repo_key(repo)).map(|r| r.id)
    }

    /// Pins the clock (unix seconds) used for rate-limit windows and timestamps; real time until then.
    pub fn set_now(&self, unix_seconds: i64) {
        self.world().clock = Some(unix_seconds);
    }

    /// Moves the clock forward, pinning it.
    pub fn advance(&self, seconds: i64) {
        let mut world = self.world();
        let now = world.now();
        world.clock = Some(now + seconds);
    }

    pub fn now(&self) -> i64 {
        self.world().now()
    }

    fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }
}

type Shared = Arc<Mutex<World>>;

fn lock(world: &Shared) -> MutexGuard<'_, World> {
    // A test that panicked mid-request must not hide its own failure behind a poisoned lock.
    world.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Quota {
    limit: u32,
    used: u32,
    window_start: Option<i64>,
    spent: u32,
}

impl Quota {
    fn expired(&self, now: i64) -> bool {
        self.window_start.is_none_or(|start| now >= start + WINDOW_SECS)
    }

    fn roll(&mut self, now: i64) {
        if self.expired(now) {
            self.window_start = Some(now);
            self.used = 0;
        }
    }

    fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.used)
    }

    fn reset(&self, now: i64) -> i64 {
        self.window_start.unwrap_or(now) + WINDOW_SECS
    }
}

struct Injected {
    path_contains: Option<String>,
    fault: Fault,
}

struct Repo {
    id: u64,
    full_name: String,
    archived: bool,
    /// Public (`"visibility": "public"`); private otherwise.
    public: bool,
    runs: BTreeMap<u64, Run>,
    hooks: Vec<HookView>,
}

/// An organisation: its hooks and runner groups (`Default`, id 1, in every one). Its
/// repositories are those whose owner it is.
struct Org {
    id: u64,
    login: String,
    hooks: Vec<HookView>,
    runner_groups: Vec<RunnerGroup>,
}

/// A runner group of an organisation, with the access its settings give it.
struct RunnerGroup {
    id: u64,
    name: String,
    /// `all`, `selected` or `private`.
    visibility: &'static str,
    allows_public_repositories: bool,
    restricted_to_workflows: bool,
    /// `owner/repo/.github/workflows/file.yml@ref`; empty unless restricted.
    selected_workflows: Vec<String>,
    /// Repository keys (lower-cased `owner/name`) a `selected` group serves, in the order set.
    selected_repositories: Vec<String>,
}

impl RunnerGroup {
    /// A new group as GitHub makes it: every repository but public ones, any workflow.
    fn new(id: u64, name: &str) -> Self {
        Self {
            id,
            name: name.to_owned(),
            visibility: "all",
            allows_public_repositories: false,
            restricted_to_workflows: false,
            selected_workflows: Vec::new(),
            selected_repositories: Vec::new(),
        }
    }

    /// The group as `GET /orgs/{org}/actions/runner-groups` lists it; `org_url` is the
    /// organisation's API URL.
    fn json(&self, org_url: &str) -> Value {
        let url = format!("{org_url}/actions/runner-groups/{}", self.id);
        let mut json = json!({
            "id": self.id,
            "name": self.name,
            "visibility": self.visibility,
            "default": self.id == DEFAULT_RUNNER_GROUP_ID,
            "allows_public_repositories": self.allows_public_repositories,
            "restricted_to_workflows": self.restricted_to_workflows,
            "selected_workflows": self.selected_workflows,
            "inherited": false,
            "runners_url": format!("{url}/runners"),
        });
        if self.visibility == "selected" {
            json["selected_repositories_url"] = json!(format!("{url}/repositories"));
        }
        json
    }
}

struct Run {
    id: u64,
    created_at: i64,
    updated_at: i64,
    jobs: BTreeSet<u64>,
}

struct Job {
    id: u64,
    run_id: u64,
    /// Key into `World::repos`.
    repo: String,
    labels: Vec<String>,
    status: JobState,
    created_at: i64,
    started_at: i64,
    completed_at: Option<i64>,
    /// The runner picked when the job started: (id, name).
    runner: Option<(u64, String)>,
}

impl Job {
    fn transition(&mut self, status: JobState, now: i64) {
        match status {
            JobState::Queued | JobState::Waiting => {
                self.runner = None;
                self.completed_at = None;
            }
            JobState::InProgress => {
                self.started_at = now;
                self.completed_at = None;
                self.runner = Some((1_000_000 + self.id, format!("fake-runner-{}", self.id)));
            }
            JobState::Completed => self.completed_at = Some(now),
        }
        self.status = status;
    }

    fn conclusion(&self) -> Value {
        if self.status == JobState::Completed { json!("success") } else { Value::Null }
    }
}

struct World {
    base_url: String,
    clock: Option<i64>,
    tokens: HashMap<String, Quota>,
    /// Keyed by lower-cased `owner/name`: GitHub's names are case-insensitive.
    repos: BTreeMap<String, Repo>,
    jobs: BTreeMap<u64, Job>,
    faults: VecDeque<Injected>,
    /// Served to every authenticated request that no queued fault matches, until cleared.
    standing: Option<Fault>,
    requests: Vec<Recorded>,
    /// Authenticated requests let in, counted before any delay (so a slow answer shows at once).
    admitted: u64,
    served: u64,
    access: HashMap<(String, String), Access>,
    next_hook_id: u64,
    /// Registration tokens handed out, with the repository or organisation key they register to.
    registration_tokens: Vec<(String, String)>,
    /// Keyed by lower-cased login.
    orgs: BTreeMap<String, Org>,
    next_runner_group_id: u64,
    /// Self-hosted runners of every repository and organisation, by id.
    runners: BTreeMap<u64, FakeRunner>,
    next_runner_id: u64,
    /// Just-in-time configurations handed out, oldest first, with their runner's id.
    jit_configs: Vec<(String, u64)>,
    /// GitHub Apps, their installations and installation tokens (see the block at the end).
    apps: Apps,
}

fn repo_key(repo: &str) -> String {
    repo.to_ascii_lowercase()
}

/// What a request turned into, before it becomes an HTTP response.
struct Reply {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(status: StatusCode, body: &Value) -> Self {
        let body = serde_json::to_vec(body).expect("JSON serialises");
        Self { status, headers: vec![("content-type", "application/json; charset=utf-8".to_owned())], body }
    }

    fn error(status: StatusCode, message: &str, documentation_url: &str) -> Self {
        let body = json!({"message": message, "documentation_url": documentation_url, "status": status.as_str()});
        Self::json(status, &body)
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// The outcome of the checks made before any delay.
enum Admission {
    Refused(Reply),
    Admitted { token: String, fault: Option<Fault> },
}

impl World {
    fn new(base_url: String) -> Self {
        Self {
            base_url,
            clock: None,
            tokens: HashMap::new(),
            repos: BTreeMap::new(),
            jobs: BTreeMap::new(),
            faults: VecDeque::new(),
            standing: None,
            requests: Vec::new(),
            admitted: 0,
            served: 0,
            access: HashMap::new(),
            next_hook_id: 0,
            registration_tokens: Vec::new(),
            orgs: BTreeMap::new(),
            next_runner_group_id: DEFAULT_RUNNER_GROUP_ID,
            runners: BTreeMap::new(),
            next_runner_id: FIRST_RUNNER_ID,
            jit_configs: Vec::new(),
            apps: Apps::default(),
        }
    }

    fn now(&self) -> i64 {
        self.clock.unwrap_or_else(|| {
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        })
    }

    fn repo_mut(&mut self, repo: &str) -> &mut Repo {
        let id = 100_000 + self.repos.len() as u64;
        self.repos.entry(repo_key(repo)).or_insert_with(|| Repo {
            id,
            full_name: repo.to_owned(),
            archived: false,
            public: false,
            runs: BTreeMap::new(),
            hooks: Vec::new(),
        })
    }

    fn org_mut(&mut self, org: &str) -> &mut Org {
        let id = 9_000_000 + self.orgs.len() as u64;
        self.orgs.entry(repo_key(org)).or_insert_with(|| Org {
            id,
            login: org.to_owned(),
            hooks: Vec::new(),
            runner_groups: vec![RunnerGroup::new(DEFAULT_RUNNER_GROUP_ID, "Default")],
        })
    }

    fn admit(&mut self, path: &str, headers: &HeaderMap, token: Option<&str>) -> Admission {
        let has_agent = headers.get(header::USER_AGENT).is_some_and(|v| !v.as_bytes().is_empty());
        if !has_agent {
            let message = "Request forbidden by administrative rules. Please make sure your request has a User-Agent \
                           header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). \
                           Check https://developer.github.com for other possible causes.\n";
            return Admission::Refused(Reply {
                status: StatusCode::FORBIDDEN,
                headers: vec![("content-type", "text/plain; charset=utf-8".to_owned())],
                body: message.as_bytes().to_vec(),
            });
        }
        let now = self.now();
        let Some(quota) = token.and_then(|t| self.quota_of(t)) else {
            return Admission::Refused(Reply::error(
                StatusCode::UNAUTHORIZED,
                "Bad credentials",
                "https://docs.github.com/rest",
            ));
        };
        quota.roll(now);
        let matching = self.faults.iter().position(|f| f.path_contains.as_deref().is_none_or(|p| path.contains(p)));
        let fault = matching.and_then(|i| self.faults.remove(i)).map(|f| f.fault).or_else(|| self.standing.clone());
        self.admitted += 1;
        Admission::Admitted { token: token.unwrap_or_default().to_owned(), fault }
    }

    /// Answers an admitted request; `fault` is any fault still to serve (not `Slow`, already waited).
    fn respond(
        &mut self,
        method: &Method,
        uri: &Uri,
        if_none_match: Option<&str>,
        token: &str,
        fault: Option<Fault>,
        body: &[u8],
    ) -> Reply {
        let now = self.now();
        self.served += 1;
        let request_id = format!("FAKE:{:08X}", self.served);
        let Some(quota) = self.quota_of(token) else {
            return Reply::error(StatusCode::UNAUTHORIZED, "Bad credentials", "https://docs.github.com/rest");
        };
        quota.roll(now);
        let exhausted = matches!(fault, Some(Fault::PrimaryExhausted)) || quota.remaining() == 0;
        let reply = match fault {
            Some(Fault::ServerError { status }) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                Some(Reply::json(status, &json!({"message": "Server Error"})))
            }
            Some(Fault::SecondaryLimit { retry_after_secs, status }) => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
                let message = format!(
                    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you \
                     reach out to GitHub Support for help, please include the request ID {request_id}."
                );
                let docs = format!("{RATE_LIMIT_DOCS}#about-secondary-rate-limits");
                Some(Reply::error(status, &message, &docs).header("retry-after", retry_after_secs.to_string()))
            }
            _ if exhausted => Some(Reply::error(
                StatusCode::FORBIDDEN,
                "API rate limit exceeded for user ID 1.",
                &format!("{RATE_LIMIT_DOCS}#about-primary-rate-limits"),
            )),
            _ => None,
        };
        let reply = reply.or_else(|| self.outside_installation(token, uri.path()));
        let reply = reply.or_else(|| self.manage(method, uri, if_none_match, token, body, now));
        let reply = reply.unwrap_or_else(|| match self.route(method, uri, token) {
            Err(not_found) => not_found,
            Ok((body, link)) => {
                let body = serde_json::to_vec(&body).expect("JSON serialises");
                let etag = format!("W/\"{}\"", hex::encode(Sha256::digest(&body)));
                if if_none_match.is_some_and(|candidates| etag_matches(candidates, &etag)) {
                    Reply { status: StatusCode::NOT_MODIFIED, headers: vec![("etag", etag)], body: Vec::new() }
                } else {
                    if let Some(quota) = self.quota_of(token) {
                        quota.used += 1;
                        quota.spent += 1;
                    }
                    let mut reply = Reply {
                        status: StatusCode::OK,
                        headers: vec![
                            ("content-type", "application/json; charset=utf-8".to_owned()),
                            ("cache-control", "private, max-age=60, s-maxage=60".to_owned()),
                            ("vary", "Accept, Authorization, Cookie, X-GitHub-OTP".to_owned()),
                            ("etag", etag),
                        ],
                        body,
                    };
                    if let Some(link) = link {
                        reply = reply.header("link", link);
                    }
                    reply
                }
            }
        });
        let mut reply =
            reply.header("x-github-request-id", request_id).header("x-github-media-type", "github.v3; format=json");
        if let Some(quota) = self.quota_ref(token) {
            let (remaining, used) = if exhausted { (0, quota.limit) } else { (quota.remaining(), quota.used) };
            reply = reply
                .header("x-ratelimit-limit", quota.limit.to_string())
                .header("x-ratelimit-remaining", remaining.to_string())
                .header("x-ratelimit-used", used.to_string())
                .header("x-ratelimit-reset", quota.reset(now).to_string())
                .header("x-ratelimit-resource", "core");
        }
        reply
    }

    /// The onboarding endpoints (repository or organisation, hooks, registration token, runner
    /// groups); `None` for any other path. A `2xx` costs a credit.
    fn manage(
        &mut self,
        method: &Method,
        uri: &Uri,
        if_none_match: Option<&str>,
        token: &str,
        body: &[u8],
        now: i64,
    ) -> Option<Reply> {
        let segments: Vec<&str> = uri.path().trim_end_matches('/').split('/').collect();
        let (place, rest) = match segments.as_slice() {
            ["", "repos", owner, name, rest @ ..] => (Place::Repo(repo_key(&format!("{owner}/{name}"))), rest.to_vec()),
            ["", "orgs", org, rest @ ..] => (Place::Org(repo_key(org)), rest.to_vec()),
            _ => return None,
        };
        let endpoint = match (&place, rest.as_slice()) {
            (Place::Repo(_), []) => Endpoint::Repository,
            (Place::Org(_), []) => Endpoint::Organisation,
            (_, ["hooks"]) => Endpoint::Hooks,
            (_, ["hooks", id]) => Endpoint::Hook(id.parse().ok()?),
            (_, ["actions", "runners", "registration-token"]) => Endpoint::RegistrationToken,
            (Place::Org(_), ["actions", "runner-groups"]) => Endpoint::RunnerGroups,
            (Place::Org(_), ["actions", "runner-groups", id, "repositories"]) => {
                Endpoint::RunnerGroupRepositories(id.parse().ok()?)
            }
            (_, ["actions", "runners"]) => Endpoint::Runners,
            (_, ["actions", "runners", "generate-jitconfig"]) => Endpoint::JitConfig,
            (_, ["actions", "runners", id]) => Endpoint::Runner(id.parse().ok()?),
            _ => return None,
        };
        let reply = match self.installation_refusal(token, endpoint, &place, method) {
            Some(refused) => refused,
            None => self.manage_endpoint(method, uri, endpoint, &place, token, body, now),
        };
        // A GET revalidates as the polled endpoints do: a matching validator is a free 304.
        let reply = if *method == Method::GET && reply.status == StatusCode::OK {
            let etag = format!("W/\"{}\"", hex::encode(Sha256::digest(&reply.body)));
            if if_none_match.is_some_and(|candidates| etag_matches(candidates, &etag)) {
                return Some(Reply {
                    status: StatusCode::NOT_MODIFIED,
                    headers: vec![("etag", etag)],
                    body: Vec::new(),
                });
            }
            reply.header("etag", etag)
        } else {
            reply
        };
        if reply.status.is_success()
            && let Some(quota) = self.quota_of(token)
        {
            quota.used += 1;
            quota.spent += 1;
        }
        Some(reply)
    }

    #[allow(clippy::too_many_arguments)]
    fn manage_endpoint(
        &mut self,
        method: &Method,
        uri: &Uri,
        endpoint: Endpoint,
        place: &Place,
        token: &str,
        body: &[u8],
        now: i64,
    ) -> Reply {
        let not_found = || Reply::error(StatusCode::NOT_FOUND, "Not Found", "https://docs.github.com/rest");
        let key = place.key();
        let access = self.access.get(&(token.to_owned(), key.to_owned())).copied().unwrap_or(Access::Admin);
        let (full_name, place_id) = match place {
            Place::Repo(key) => match self.repos.get(key) {
                Some(repo) => (repo.full_name.clone(), repo.id),
                None => return not_found(),
            },
            Place::Org(key) => match self.orgs.get(key) {
                Some(org) => (org.login.clone(), org.id),
                None => return not_found(),
            },
        };
        let writes = *method != Method::GET;
        let org = matches!(place, Place::Org(_));
        // GitHub names the fine-grained permission an endpoint takes on its answers.
        let permission = match (endpoint, org) {
            (Endpoint::Repository | Endpoint::Organisation, _) => "metadata=read",
            (Endpoint::Hooks | Endpoint::Hook(_), false) if writes => "webhooks=write",
            (Endpoint::Hooks | Endpoint::Hook(_), false) => "webhooks=read",
            (Endpoint::Hooks | Endpoint::Hook(_), true) if writes => "organization_hooks=write",
            (Endpoint::Hooks | Endpoint::Hook(_), true) => "organization_hooks=read",
            (Endpoint::RegistrationToken, false) => "administration=write",
            (Endpoint::RegistrationToken, true) => "organization_self_hosted_runners=write",
            (Endpoint::RunnerGroups | Endpoint::RunnerGroupRepositories(_), _) => {
                "organization_self_hosted_runners=read"
            }
            (Endpoint::Runners | Endpoint::JitConfig | Endpoint::Runner(_), _) => runner_permission(org, writes),
        };
        let refused = match (endpoint, access) {
            (Endpoint::Repository | Endpoint::Organisation, _) | (_, Access::Admin) => None,
            (Endpoint::Hooks | Endpoint::Hook(_), Access::Read) => Some(not_found()),
            (_, Access::Read) if org => Some(Reply::error(
                StatusCode::FORBIDDEN,
                "Must have admin rights to Organization.",
                "https://docs.github.com/rest/actions/self-hosted-runners#create-a-registration-token-for-an-organization",
            )),
            (_, Access::Read) => Some(Reply::error(
                StatusCode::FORBIDDEN,
                "Must have admin rights to Repository.",
                "https://docs.github.com/rest/actions/self-hosted-runners#create-a-registration-token-for-a-repository",
            )),
            (_, Access::FineGrainedWithoutAdminPermissions) => Some(Reply::error(
                StatusCode::FORBIDDEN,
                "Resource not accessible by personal access token",
                if org {
                    "https://docs.github.com/rest/orgs/webhooks"
                } else {
                    "https://docs.github.com/rest/repos/webhooks"
                },
            )),
        };
        if let Some(reply) = refused {
            return reply.header("x-accepted-github-permissions", permission);
        }
        let hooks_url = match place {
            Place::Repo(_) => format!("{}/repos/{full_name}/hooks", self.base_url),
            Place::Org(_) => format!("{}/orgs/{full_name}/hooks", self.base_url),
        };
        let kind = if org { "Organization" } else { "Repository" };
        let reply = match (endpoint, method.clone()) {
            (Endpoint::Repository, Method::GET) => {
                let admin = access != Access::Read;
                let name = full_name.split('/').nth(1).unwrap_or_default().to_owned();
                let public = self.repos.get(key).is_some_and(|r| r.public);
                Reply::json(
                    StatusCode::OK,
                    &json!({
                        "id": place_id,
                        "name": name,
                        "full_name": full_name,
                        "private": !public,
                        "visibility": if public { "public" } else { "private" },
                        "html_url": format!("https://github.com/{full_name}"),
                        "permissions": {"admin": admin, "maintain": admin, "push": admin, "triage": admin, "pull": true},
                    }),
                )
            }
            (Endpoint::Organisation, Method::GET) => Reply::json(
                StatusCode::OK,
                &json!({
                    "login": full_name,
                    "id": place_id,
                    "type": "Organization",
                    "url": format!("{}/orgs/{full_name}", self.base_url),
                    "repos_url": format!("{}/orgs/{full_name}/repos", self.base_url),
                    "hooks_url": hooks_url,
                    "html_url": format!("https://github.com/{full_name}"),
                }),
            ),
            (Endpoint::Hooks, Method::GET) => {
                let params: Vec<(String, String)> =
                    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()).into_owned().collect();
                let listed = self.hooks_of(place).iter().map(|h| hook_json(h, &hooks_url, kind)).collect();
                let ((page, _), link) = self.paginate(uri, &params, listed);
                let reply = Reply::json(StatusCode::OK, &Value::Array(page));
                match link {
                    Some(link) => reply.header("link", link),
                    None => reply,
                }
            }
            (Endpoint::Hooks, Method::POST) => {
                let Ok(request) = serde_json::from_slice::<Value>(body) else { return bad_json() };
                let Some(url) = request.pointer("/config/url").and_then(Value::as_str).filter(|u| !u.is_empty()) else {
                    return invalid("Config must contain url.");
                };
                if self.hooks_of(place).iter().any(|h| h.url == url) {
                    return invalid(&format!("Hook already exists on this {}", kind.to_ascii_lowercase()));
                }
                self.next_hook_id += 1;
                let mut hook = HookView {
                    id: self.next_hook_id,
                    name: request["name"].as_str().unwrap_or("web").to_owned(),
                    active: true,
                    events: vec!["push".into()],
                    url: url.to_owned(),
                    content_type: "form".into(),
                    insecure_ssl: "0".into(),
                    secret: None,
                };
                update_hook(&mut hook, &request);
                let json = hook_json(&hook, &hooks_url, kind);
                if let Some(hooks) = self.hooks_of_mut(place) {
                    hooks.push(hook);
                }
                Reply::json(StatusCode::CREATED, &json)
            }
            (Endpoint::Hook(id), Method::PATCH) => {
                let Ok(request) = serde_json::from_slice::<Value>(body) else { return bad_json() };
                let Some(hook) = self.hooks_of_mut(place).and_then(|hooks| hooks.iter_mut().find(|h| h.id == id))
                else {
                    return not_found();
                };
                update_hook(hook, &request);
                Reply::json(StatusCode::OK, &hook_json(hook, &hooks_url, kind))
            }
            (Endpoint::Hook(id), Method::GET) => match self.hooks_of(place).iter().find(|h| h.id == id) {
                Some(hook) => Reply::json(StatusCode::OK, &hook_json(hook, &hooks_url, kind)),
                None => not_found(),
            },
            (Endpoint::RegistrationToken, Method::POST) => {
                let token = format!("AFAKEREG{:020}", self.served * 7919 + self.registration_tokens.len() as u64);
                self.registration_tokens.push((key.to_owned(), token.clone()));
                Reply::json(StatusCode::CREATED, &json!({"token": token, "expires_at": rfc3339(now + 3600)}))
            }
            (Endpoint::RunnerGroups, Method::GET) => {
                let params: Vec<(String, String)> =
                    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()).into_owned().collect();
                let org_url = format!("{}/orgs/{full_name}", self.base_url);
                let groups: Vec<Value> = self.orgs[key].runner_groups.iter().map(|g| g.json(&org_url)).collect();
                let ((page, total), link) = self.paginate(uri, &params, groups);
                let reply = Reply::json(StatusCode::OK, &json!({"total_count": total, "runner_groups": page}));
                match link {
                    Some(link) => reply.header("link", link),
                    None => reply,
                }
            }
            (Endpoint::RunnerGroupRepositories(id), Method::GET) => {
                match self.orgs[key].runner_groups.iter().find(|g| g.id == id) {
                    None => not_found(),
                    Some(group) => {
                        let params: Vec<(String, String)> =
                            form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()).into_owned().collect();
                        let repos: Vec<Value> = group
                            .selected_repositories
                            .iter()
                            .filter_map(|key| self.repos.get(key))
                            .map(|r| self.repo_json(r))
                            .collect();
                        let ((page, total), link) = self.paginate(uri, &params, repos);
                        let reply = Reply::json(StatusCode::OK, &json!({"total_count": total, "repositories": page}));
                        match link {
                            Some(link) => reply.header("link", link),
                            None => reply,
                        }
                    }
                }
            }
            (Endpoint::Runners, Method::GET) => self.list_runners(uri, key),
            (Endpoint::JitConfig, Method::POST) => self.generate_jitconfig(key, body),
            (Endpoint::Runner(id), Method::GET) => match self.runners.get(&id).filter(|r| r.place == key) {
                Some(runner) => Reply::json(StatusCode::OK, &runner.json()),
                None => not_found(),
            },
            (Endpoint::Runner(id), Method::DELETE) => self.delete_runner(key, id),
            _ => not_found(),
        };
        reply.header("x-accepted-github-permissions", permission)
    }

    /// The hooks of a repository or organisation (none when it does not exist).
    fn hooks_of(&self, place: &Place) -> &[HookView] {
        match place {
            Place::Repo(key) => self.repos.get(key).map_or(&[], |r| r.hooks.as_slice()),
            Place::Org(key) => self.orgs.get(key).map_or(&[], |o| o.hooks.as_slice()),
        }
    }

    fn hooks_of_mut(&mut self, place: &Place) -> Option<&mut Vec<HookView>> {
        match place {
            Place::Repo(key) => self.repos.get_mut(key).map(|r| &mut r.hooks),
            Place::Org(key) => self.orgs.get_mut(key).map(|o| &mut o.hooks),
        }
    }

    /// The JSON body and `Link` header of a GET, or the 404.
    fn route(&self, method: &Method, uri: &Uri, token: &str) -> Result<(Value, Option<String>), Reply> {
        let not_found = || Reply::error(StatusCode::NOT_FOUND, "Not Found", "https://docs.github.com/rest");
        if method != Method::GET {
            return Err(not_found());
        }
        let params: Vec<(String, String)> =
            form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()).into_owned().collect();
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let segments: Vec<&str> = uri.path().split('/').collect();
        match segments.as_slice() {
            ["", "orgs", org, "repos"] => {
                let org = repo_key(org);
                if !self.orgs.contains_key(&org) {
                    return Err(not_found());
                }
                let visible = self.installation_of(token).map(|i| &i.repos);
                // GitHub's `type`: `all` (the default), `public`, `private`; the others (forks,
                // sources, member) list all here.
                let wanted = match param("type") {
                    Some("public") => Some(true),
                    Some("private") => Some(false),
                    _ => None,
                };
                let mut repos: Vec<&Repo> = self
                    .repos
                    .iter()
                    .filter(|(key, _)| key.split('/').next() == Some(org.as_str()))
                    .filter(|(key, _)| visible.is_none_or(|v| v.contains(*key)))
                    .map(|(_, repo)| repo)
                    .filter(|repo| wanted.is_none_or(|public| repo.public == public))
                    .collect();
                // GitHub's default order: newest first (`sort=created`), or by name with `sort=full_name`.
                if param("sort") == Some("full_name") {
                    repos.sort_by_key(|r| r.full_name.to_ascii_lowercase());
                } else {
                    repos.sort_by_key(|r| std::cmp::Reverse(r.id));
                }
                let repos = repos.into_iter().map(|r| self.repo_json(r)).collect();
                let ((page, _), link) = self.paginate(uri, &params, repos);
                Ok((Value::Array(page), link))
            }
            ["", "installation", "repositories"] => {
                let Some(installation) = self.installation_of(token) else {
                    return Err(Reply::error(
                        StatusCode::FORBIDDEN,
                        "You must authenticate with an installation access token in order to list repositories for an installation.",
                        "https://docs.github.com/rest/apps/installations#list-repositories-accessible-to-the-app-installation",
                    ));
                };
                let repos = installation.repos.iter().filter_map(|key| self.repos.get(key)).map(|r| self.repo_json(r));
                let (page, link) = self.paginate(uri, &params, repos.collect());
                let body = json!({"total_count": page.1, "repository_selection": "selected", "repositories": page.0});
                Ok((body, link))
            }
            ["", "repos", owner, name, "actions", "runs"] => {
                let repo = self.repos.get(&repo_key(&format!("{owner}/{name}"))).ok_or_else(not_found)?;
                let wanted = param("status");
                let runs: Vec<Value> = repo
                    .runs
                    .values()
                    .rev()
                    .map(|run| self.run_json(repo, run))
                    .filter(|run| wanted.is_none_or(|w| run["status"] == w || run["conclusion"] == w))
                    .collect();
                let (page, link) = self.paginate(uri, &params, runs);
                Ok((json!({"total_count": page.1, "workflow_runs": page.0}), link))
            }
            ["", "repos", owner, name, "actions", "runs", run_id] => {
                let repo = self.repos.get(&repo_key(&format!("{owner}/{name}"))).ok_or_else(not_found)?;
                let run = run_id.parse().ok().and_then(|id: u64| repo.runs.get(&id)).ok_or_else(not_found)?;
                Ok((self.run_json(repo, run), None))
            }
            ["", "repos", owner, name, "actions", "runs", run_id, "jobs"] => {
                let repo = self.repos.get(&repo_key(&format!("{owner}/{name}"))).ok_or_else(not_found)?;
                let run = run_id.parse().ok().and_then(|id: u64| repo.runs.get(&id)).ok_or_else(not_found)?;
                let jobs: Vec<Value> =
                    run.jobs.iter().filter_map(|id| self.jobs.get(id)).map(|j| self.job_json(j)).collect();
                let (page, link) = self.paginate(uri, &params, jobs);
                Ok((json!({"total_count": page.1, "jobs": page.0}), link))
            }
            ["", "repos", owner, name, "actions", "jobs", job_id] => {
                let key = repo_key(&format!("{owner}/{name}"));
                let job = job_id.parse().ok().and_then(|id: u64| self.jobs.get(&id)).filter(|j| j.repo == key);
                Ok((self.job_json(job.ok_or_else(not_found)?), None))
            }
            _ => Err(not_found()),
        }
    }

    /// One page of `items` as GitHub cuts it, with its total and `Link` header (none on a single page).
    fn paginate(
        &self,
        uri: &Uri,
        params: &[(String, String)],
        items: Vec<Value>,
    ) -> ((Vec<Value>, usize), Option<String>) {
        let param = |name: &str| params.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.parse::<usize>().ok());
        let per_page = param("per_page").filter(|&n| n > 0).map_or(DEFAULT_PER_PAGE, |n| n.min(MAX_PER_PAGE));
        let page = param("page").filter(|&n| n > 0).unwrap_or(1);
        let total = items.len();
        let last = total.div_ceil(per_page).max(1);
        let shown = items.into_iter().skip((page - 1).saturating_mul(per_page)).take(per_page).collect();
        let href = |to: usize| {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (k, v) in params.iter().filter(|(k, _)| k != "page") {
                query.append_pair(k, v);
            }
            query.append_pair("page", &to.to_string());
            format!("<{}{}?{}>", self.base_url, uri.path(), query.finish())
        };
        let mut links = Vec::new();
        if page > 1 {
            links.push(format!("{}; rel=\"prev\"", href(page - 1)));
        }
        if page < last {
            links.push(format!("{}; rel=\"next\"", href(page + 1)));
            links.push(format!("{}; rel=\"last\"", href(last)));
        }
        if page > 1 {
            links.push(format!("{}; rel=\"first\"", href(1)));
        }
        ((shown, total), (!links.is_empty()).then(|| links.join(", ")))
    }

    /// The live installation whose token `token` is.
    fn installation_of(&self, token: &str) -> Option<&FakeInstallation> {
        let now = self.now();
        let issued = self.apps.tokens.get(token).filter(|t| !t.revoked && t.expires_at > now)?;
        self.apps.installations.get(&issued.installation)
    }

    fn repo_json(&self, repo: &Repo) -> Value {
        let full = &repo.full_name;
        let (owner, name) = full.split_once('/').unwrap_or((full, ""));
        let kind = if self.orgs.contains_key(&repo_key(owner)) { "Organization" } else { "User" };
        json!({
            "id": repo.id,
            "node_id": format!("R_fake{}", repo.id),
            "name": name,
            "full_name": full,
            "private": !repo.public,
            "owner": {"login": owner, "type": kind},
            "html_url": format!("https://github.com/{full}"),
            "url": format!("{}/repos/{full}", self.base_url),
            "archived": repo.archived,
            "disabled": false,
            "visibility": if repo.public { "public" } else { "private" },
        })
    }

    fn run_status(&self, run: &Run) -> JobState {
        let states: Vec<JobState> = run.jobs.iter().filter_map(|id| self.jobs.get(id)).map(|j| j.status).collect();
        [JobState::InProgress, JobState::Queued, JobState::Waiting]
            .into_iter()
            .find(|s| states.contains(s))
            .unwrap_or(JobState::Completed)
    }

    fn run_json(&self, repo: &Repo, run: &Run) -> Value {
        let full = &repo.full_name;
        let api = format!("{}/repos/{full}/actions/runs/{}", self.base_url, run.id);
        let status = self.run_status(run);
        json!({
            "id": run.id,
            "name": "CI",
            "node_id": format!("WFR_fake{}", run.id),
            "head_branch": "main",
            "head_sha": head_sha(run.id),
            "path": ".github/workflows/ci.yml",
            "display_title": format!("CI run {}", run.id),
            "run_number": run.id,
            "event": "push",
            "status": status.as_str(),
            "conclusion": if status == JobState::Completed { json!("success") } else { Value::Null },
            "workflow_id": 1,
            "url": api,
            "html_url": format!("https://github.com/{full}/actions/runs/{}", run.id),
            "created_at": rfc3339(run.created_at),
            "updated_at": rfc3339(run.updated_at),
            "run_attempt": 1,
            "run_started_at": rfc3339(run.created_at),
            "jobs_url": format!("{api}/jobs"),
            "repository": {"id": repo.id, "name": full.split('/').nth(1), "full_name": full},
        })
    }

    fn job_json(&self, job: &Job) -> Value {
        let full = self.repos.get(&job.repo).map_or(job.repo.as_str(), |r| r.full_name.as_str());
        let (runner_id, runner_name) = job.runner.clone().map_or((None, None), |(id, name)| (Some(id), Some(name)));
        let assigned = runner_id.is_some();
        json!({
            "id": job.id,
            "run_id": job.run_id,
            "run_url": format!("{}/repos/{full}/actions/runs/{}", self.base_url, job.run_id),
            "run_attempt": 1,
            "node_id": format!("CR_fake{}", job.id),
            "head_sha": head_sha(job.run_id),
            "url": format!("{}/repos/{full}/actions/jobs/{}", self.base_url, job.id),
            "html_url": format!("https://github.com/{full}/actions/runs/{}/job/{}", job.run_id, job.id),
            "status": job.status.as_str(),
            "conclusion": job.conclusion(),
            "created_at": rfc3339(job.created_at),
            "started_at": rfc3339(job.started_at),
            "completed_at": job.completed_at.map(rfc3339),
            "name": format!("job-{}", job.id),
            "steps": [],
            "check_run_url": format!("{}/repos/{full}/check-runs/{}", self.base_url, job.id),
            "labels": job.labels,
            "runner_id": runner_id,
            "runner_name": runner_name,
            "runner_group_id": assigned.then_some(1),
            "runner_group_name": assigned.then_some("Default"),
            "workflow_name": "CI",
            "head_branch": "main",
        })
    }
}

/// `If-None-Match` uses the weak comparison: `W/"x"` and `"x"` name the same representation.
fn etag_matches(candidates: &str, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    candidates.split(',').any(|c| c.trim() == "*" || opaque(c) == opaque(etag))
}

fn head_sha(run_id: u64) -> String {
    hex::encode(&Sha256::digest(run_id.to_be_bytes())[..20])
}

fn rfc3339(unix_seconds: i64) -> String {
    jiff::Timestamp::from_second(unix_seconds)
        .map_or_else(|_| "1970-01-01T00:00:00Z".to_owned(), |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

fn presented_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let known = scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token");
    known.then(|| token.trim().to_owned())
}

async fn answer(State(world): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let token = presented_token(&headers);
    let if_none_match = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let app_reply = lock(&world).answer_app(&method, &uri, &headers, &body);
    let admission = match app_reply {
        // A GitHub App endpoint, authenticated with the App's JWT rather than a token.
        Some(reply) => Admission::Refused(reply),
        None => lock(&world).admit(uri.path(), &headers, token.as_deref()),
    };
    let reply = match admission {
        Admission::Refused(reply) => reply,
        Admission::Admitted { token, fault } => {
            let fault = match fault {
                Some(Fault::Slow { delay }) => {
                    tokio::time::sleep(delay).await;
                    None
                }
                other => other,
            };
            lock(&world).respond(&method, &uri, if_none_match.as_deref(), &token, fault, &body)
        }
    };
    lock(&world).requests.push(Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        if_none_match,
        status: reply.status.as_u16(),
        token,
    });
    let mut response = Response::builder().status(reply.status);
    for (name, value) in reply.headers {
        response = response.header(name, value);
    }
    response.body(Body::from(reply.body)).expect("a valid response")
}

#[derive(Clone, Copy)]
enum Endpoint {
    Repository,
    Organisation,
    Hooks,
    Hook(u64),
    RegistrationToken,
    RunnerGroups,
    RunnerGroupRepositories(u64),
    Runners,
    JitConfig,
    Runner(u64),
}

/// Where an onboarding endpoint acts: a repository or an organisation, by lower-cased key.
enum Place {
    Repo(String),
    Org(String),
}

impl Place {
    fn key(&self) -> &str {
        match self {
            Self::Repo(key) | Self::Org(key) => key,
        }
    }
}

fn bad_json() -> Reply {
    Reply::error(StatusCode::BAD_REQUEST, "Problems parsing JSON", "https://docs.github.com/rest/repos/webhooks")
}

/// GitHub's `422` for a request it understood but will not do.
fn invalid(message: &str) -> Reply {
    let body = json!({
        "message": "Validation Failed",
        "errors": [{"resource": "Hook", "code": "custom", "message": message}],
        "documentation_url": "https://docs.github.com/rest/repos/webhooks",
        "status": "422",
    });
    Reply::json(StatusCode::UNPROCESSABLE_ENTITY, &body)
}

/// Applies a create or update body: `config` replaces the configuration (GitHub's PATCH of the
/// hook, unlike `PATCH …/config`), `events` replaces the events, `add_events`/`remove_events` edit them.
fn update_hook(hook: &mut HookView, request: &Value) {
    if let Some(active) = request["active"].as_bool() {
        hook.active = active;
    }
    if let Some(config) = request.get("config").filter(|c| c.is_object()) {
        let text = |key: &str| {
            config.get(key).and_then(|v| v.as_str().map(str::to_owned).or_else(|| v.as_i64().map(|n| n.to_string())))
        };
        hook.url = text("url").unwrap_or_else(|| hook.url.clone());
        hook.content_type = text("content_type").unwrap_or_else(|| "form".into());
        hook.insecure_ssl = text("insecure_ssl").unwrap_or_else(|| "0".into());
        hook.secret = text("secret").filter(|s| !s.is_empty());
    }
    let list = |key: &str| -> Option<Vec<String>> {
        request.get(key)?.as_array().map(|a| a.iter().filter_map(|e| e.as_str().map(str::to_owned)).collect())
    };
    if let Some(events) = list("events") {
        hook.events = events;
    }
    for event in list("add_events").unwrap_or_default() {
        if !hook.events.contains(&event) {
            hook.events.push(event);
        }
    }
    let removed = list("remove_events").unwrap_or_default();
    hook.events.retain(|e| !removed.contains(e));
}

/// A hook as GitHub shows it: the secret masked.
fn hook_json(hook: &HookView, hooks_url: &str, kind: &str) -> Value {
    let mut config = json!({"content_type": hook.content_type, "insecure_ssl": hook.insecure_ssl, "url": hook.url});
    if hook.secret.is_some() {
        config["secret"] = json!("********");
    }
    let url = format!("{hooks_url}/{}", hook.id);
    json!({
        "type": kind,
        "id": hook.id,
        "name": hook.name,
        "active": hook.active,
        "events": hook.events,
        "config": config,
        "url": url,
        "test_url": format!("{url}/test"),
        "ping_url": format!("{url}/pings"),
        "deliveries_url": format!("{url}/deliveries"),
        "last_response": {"code": null, "status": "unused", "message": null},
    })
}

// ---------------------------------------------------------------------------------------------
// Self-hosted runners: just-in-time configurations, runner lists, removal, and the runner's side.
//
// As GitHub documents them ("REST API endpoints for self-hosted runners", "Using just-in-time
// runners"): a configuration registers its runner at once (offline, not busy) and starts it
// once; the runner takes one job and GitHub removes it after that job. A registration that
// never ran a job stays, offline, until deleted. GitHub will not delete a runner running a job.

/// A self-hosted runner as the fake holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerView {
    pub id: u64,
    pub name: String,
    /// `owner/name`, or the organisation's login, as created.
    pub place: String,
    pub os: String,
    /// `online` or `offline`.
    pub status: String,
    pub busy: bool,
    /// The labels it was registered with, GitHub's own (`self-hosted`, …) first.
    pub labels: Vec<String>,
    pub group_id: u64,
    pub work_folder: Option<String>,
    /// Registered from a just-in-time configuration.
    pub jit: bool,
    /// The job it runs, when one was given it with `runner_takes_job`.
    pub job: Option<u64>,
}

struct FakeRunner {
    id: u64,
    /// Key of the repository or organisation (lower-cased).
    place: String,
    name: String,
    os: String,
    status: &'static str,
    busy: bool,
    /// `(name, read-only)`.
    labels: Vec<(String, bool)>,
    group_id: u64,
    work_folder: Option<String>,
    jit: bool,
    /// Its configuration was used to start it.
    started: bool,
    job: Option<u64>,
}

impl FakeRunner {
    fn json(&self) -> Value {
        let labels: Vec<Value> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, (name, read_only))| {
                json!({"id": i + 1, "name": name, "type": if *read_only { "read-only" } else { "custom" }})
            })
            .collect();
        json!({
            "id": self.id,
            "name": self.name,
            "os": self.os,
            "status": self.status,
            "busy": self.busy,
            "ephemeral": self.jit,
            "runner_group_id": self.group_id,
            "labels": labels,
        })
    }
}

/// The fine-grained permission the runner endpoints of a repository or organisation take.
fn runner_permission(org: bool, writes: bool) -> &'static str {
    match (org, writes) {
        (false, false) => "administration=read",
        (false, true) => "administration=write",
        (true, false) => "organization_self_hosted_runners=read",
        (true, true) => "organization_self_hosted_runners=write",
    }
}

/// GitHub's `422` for a runner request it will not do.
fn runner_invalid(message: &str) -> Reply {
    Reply::error(
        StatusCode::UNPROCESSABLE_ENTITY,
        message,
        "https://docs.github.com/rest/actions/self-hosted-runners#create-configuration-for-a-just-in-time-runner-for-a-repository",
    )
}

impl World {
    /// An installation token may use the runner endpoints with the runner permission only, and
    /// an organisation's with an installation on that organisation.
    fn installation_refusal(&self, token: &str, endpoint: Endpoint, place: &Place, method: &Method) -> Option<Reply> {
        // Runners, and runner groups (which an organisation's installation reads as runners).
        let runners_or_groups = matches!(
            endpoint,
            Endpoint::Runners
                | Endpoint::JitConfig
                | Endpoint::Runner(_)
                | Endpoint::RunnerGroups
                | Endpoint::RunnerGroupRepositories(_)
        );
        if !runners_or_groups {
            return None;
        }
        let issued = self.apps.tokens.get(token)?;
        let installation = self.apps.installations.get(&issued.installation)?;
        let org = matches!(place, Place::Org(_));
        let permission = runner_permission(org, *method != Method::GET);
        let (name, level) = permission.split_once('=')?;
        let granted = issued
            .permissions
            .as_ref()
            .is_none_or(|p| p.get(name).is_some_and(|have| have == "write" || (have == "read" && level == "read")));
        let outside = org && installation.account.as_deref() != Some(place.key());
        (!granted || outside).then(|| {
            Reply::error(
                StatusCode::FORBIDDEN,
                "Resource not accessible by integration",
                "https://docs.github.com/rest/actions/self-hosted-runners",
            )
            .header("x-accepted-github-permissions", permission)
        })
    }

    fn list_runners(&self, uri: &Uri, key: &str) -> Reply {
        let params: Vec<(String, String)> =
            form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()).into_owned().collect();
        let wanted = params.iter().find(|(k, _)| k == "name").map(|(_, v)| v.as_str());
        let runners: Vec<Value> = self
            .runners
            .values()
            .filter(|r| r.place == key && wanted.is_none_or(|w| r.name == w))
            .map(FakeRunner::json)
            .collect();
        let ((page, total), link) = self.paginate(uri, &params, runners);
        let reply = Reply::json(StatusCode::OK, &json!({"total_count": total, "runners": page}));
        match link {
            Some(link) => reply.header("link", link),
            None => reply,
        }
    }

    fn generate_jitconfig(&mut self, key: &str, body: &[u8]) -> Reply {
        let Ok(request) = serde_json::from_slice::<Value>(body) else { return bad_json() };
        let missing = |field: &str| runner_invalid(&format!("Invalid input: object is missing required key: {field}."));
        let Some(name) = request.get("name").and_then(Value::as_str) else { return missing("name") };
        let Some(group_id) = request.get("runner_group_id").and_then(Value::as_u64) else {
            return missing("runner_group_id");
        };
        let Some(labels) = request.get("labels").and_then(Value::as_array) else { return missing("labels") };
        let labels: Vec<String> = labels.iter().filter_map(Value::as_str).map(str::to_owned).collect();
        if name.trim().is_empty() || name.chars().count() > MAX_RUNNER_NAME_CHARS {
            return runner_invalid(&format!(
                "Invalid input: name must be between 1 and {MAX_RUNNER_NAME_CHARS} characters."
            ));
        }
        if labels.is_empty() || labels.len() > MAX_RUNNER_LABELS || labels.iter().any(|l| l.trim().is_empty()) {
            return runner_invalid(&format!("Invalid input: labels must hold 1 to {MAX_RUNNER_LABELS} names."));
        }
        let group_known = match self.orgs.get(key) {
            Some(org) => org.runner_groups.iter().any(|g| g.id == group_id),
            None => group_id == DEFAULT_RUNNER_GROUP_ID,
        };
        if !group_known {
            return Reply::error(StatusCode::NOT_FOUND, "Not Found", "https://docs.github.com/rest");
        }
        if self.runners.values().any(|r| r.place == key && r.name.eq_ignore_ascii_case(name)) {
            return Reply::error(
                StatusCode::CONFLICT,
                &format!("Already exists - A runner with the name {name} already exists."),
                "https://docs.github.com/rest/actions/self-hosted-runners",
            );
        }
        self.next_runner_id += 1;
        let id = self.next_runner_id;
        let mut all_labels = vec![("self-hosted".to_owned(), true)];
        all_labels.extend(labels.into_iter().filter(|l| l != "self-hosted").map(|l| (l, false)));
        let runner = FakeRunner {
            id,
            place: key.to_owned(),
            name: name.to_owned(),
            os: "unknown".to_owned(),
            status: "offline",
            busy: false,
            labels: all_labels,
            group_id,
            work_folder: request.get("work_folder").and_then(Value::as_str).map(str::to_owned),
            jit: true,
            started: false,
            job: None,
        };
        use base64::Engine as _;
        let nonce = hex::encode(&Sha256::digest(format!("{id}:{}:{}", self.served, self.jit_configs.len()))[..16]);
        let inner = json!({"runner_id": id, "place": key, "credentials": nonce});
        let config = base64::engine::general_purpose::STANDARD.encode(inner.to_string());
        let reply = Reply::json(StatusCode::CREATED, &json!({"runner": runner.json(), "encoded_jit_config": config}));
        self.jit_configs.push((config, id));
        self.runners.insert(id, runner);
        reply
    }

    fn delete_runner(&mut self, key: &str, id: u64) -> Reply {
        match self.runners.get(&id).filter(|r| r.place == key) {
            None => Reply::error(StatusCode::NOT_FOUND, "Not Found", "https://docs.github.com/rest"),
            Some(runner) if runner.busy => Reply::error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("Bad request - Runner \"{}\" is still running a job\"", runner.name),
                "https://docs.github.com/rest/actions/self-hosted-runners#delete-a-self-hosted-runner-from-a-repository",
            ),
            Some(_) => {
                self.runners.remove(&id);
                Reply { status: StatusCode::NO_CONTENT, headers: Vec::new(), body: Vec::new() }
            }
        }
    }

    fn runner_view(&self, runner: &FakeRunner) -> RunnerView {
        let place = match (self.repos.get(&runner.place), self.orgs.get(&runner.place)) {
            (Some(repo), _) => repo.full_name.clone(),
            (None, Some(org)) => org.login.clone(),
            (None, None) => runner.place.clone(),
        };
        RunnerView {
            id: runner.id,
            name: runner.name.clone(),
            place,
            os: runner.os.clone(),
            status: runner.status.to_owned(),
            busy: runner.busy,
            labels: runner.labels.iter().map(|(name, _)| name.clone()).collect(),
            group_id: runner.group_id,
            work_folder: runner.work_folder.clone(),
            jit: runner.jit,
            job: runner.job,
        }
    }

    fn runner_mut(&mut self, id: u64) -> &mut FakeRunner {
        self.runners.get_mut(&id).unwrap_or_else(|| panic!("no runner {id} in the fake GitHub"))
    }
}

impl FakeGitHub {
    /// Registers runner `name` the classic way (`config.sh`) at `place`, a repository
    /// (`owner/name`) or an organisation's login (created if needed), online and idle, in the
    /// `Default` group; its id.
    pub fn add_runner(&self, place: &str, name: &str, labels: &[&str]) -> u64 {
        let mut world = self.world();
        if place.contains('/') {
            world.repo_mut(place);
        } else {
            world.org_mut(place);
        }
        world.next_runner_id += 1;
        let id = world.next_runner_id;
        let mut all_labels: Vec<(String, bool)> =
            ["self-hosted", "Linux", "X64"].iter().map(|l| ((*l).to_owned(), true)).collect();
        all_labels.extend(labels.iter().map(|l| ((*l).to_owned(), false)));
        let runner = FakeRunner {
            id,
            place: repo_key(place),
            name: name.to_owned(),
            os: "Linux".to_owned(),
            status: "online",
            busy: false,
            labels: all_labels,
            group_id: DEFAULT_RUNNER_GROUP_ID,
            work_folder: None,
            jit: false,
            started: true,
            job: None,
        };
        world.runners.insert(id, runner);
        id
    }

    /// The runners registered at `place` (`owner/name`, or an organisation's login), by id.
    pub fn runners_of(&self, place: &str) -> Vec<RunnerView> {
        let world = self.world();
        let key = repo_key(place);
        world.runners.values().filter(|r| r.place == key).map(|r| world.runner_view(r)).collect()
    }

    /// A runner, wherever it is registered; `None` once removed.
    pub fn runner(&self, id: u64) -> Option<RunnerView> {
        let world = self.world();
        world.runners.get(&id).map(|r| world.runner_view(r))
    }

    pub fn set_runner_busy(&self, id: u64, busy: bool) {
        self.world().runner_mut(id).busy = busy;
    }

    /// `online` or `offline`.
    pub fn set_runner_status(&self, id: u64, status: &str) {
        let status = match status {
            "online" => "online",
            "offline" => "offline",
            other => panic!("a runner is online or offline, not {other:?}"),
        };
        self.world().runner_mut(id).status = status;
    }

    /// Removes a runner as if deleted in GitHub's settings.
    pub fn remove_runner(&self, id: u64) {
        self.world().runners.remove(&id);
    }

    /// Every just-in-time configuration handed out, oldest first, to look for in logs.
    pub fn jit_configs_minted(&self) -> Vec<String> {
        self.world().jit_configs.iter().map(|(config, _)| config.clone()).collect()
    }

    /// The runner a just-in-time configuration registered (whether or not it still exists).
    pub fn jit_runner(&self, encoded_jit_config: &str) -> Option<u64> {
        self.world().jit_configs.iter().find(|(config, _)| config == encoded_jit_config).map(|(_, id)| *id)
    }

    /// What `./run.sh --jitconfig` does: the runner comes online; its id. `None` when GitHub
    /// never handed out that configuration, it was used already, or its runner is gone.
    pub fn start_jit_runner(&self, encoded_jit_config: &str) -> Option<u64> {
        let id = self.jit_runner(encoded_jit_config)?;
        let mut world = self.world();
        let runner = world.runners.get_mut(&id).filter(|r| !r.started)?;
        runner.started = true;
        runner.status = "online";
        runner.os = "Linux".to_owned();
        Some(id)
    }

    /// The runner takes job `job_id` (queued before, in progress now on this runner): busy.
    pub fn runner_takes_job(&self, runner_id: u64, job_id: u64) {
        self.set_job_status(job_id, JobState::InProgress);
        let mut world = self.world();
        let runner = world.runner_mut(runner_id);
        assert!(runner.job.is_none(), "runner {runner_id} already runs job {:?}", runner.job);
        runner.busy = true;
        runner.status = "online";
        runner.job = Some(job_id);
        let name = runner.name.clone();
        if let Some(job) = world.jobs.get_mut(&job_id) {
            job.runner = Some((runner_id, name));
        }
    }

    /// The runner finishes its job (completed): idle again, or, a just-in-time runner, removed
    /// by GitHub as after its one job.
    pub fn runner_finishes_job(&self, runner_id: u64) {
        let job = {
            let mut world = self.world();
            let runner = world.runner_mut(runner_id);
            runner.busy = false;
            let job = runner.job.take();
            if runner.jit {
                world.runners.remove(&runner_id);
            }
            job
        };
        if let Some(job) = job {
            self.set_job_status(job, JobState::Completed);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GitHub Apps: JWTs, installations, installation tokens.
//
// As GitHub documents them ("Generating a JSON Web Token (JWT) for a GitHub App", "Get a
// repository installation for the authenticated app", "Create an installation access token for
// an app", "Rate limits for the REST API"):
// - a JWT is RS256, signed with the App's private key, `iss` its App id (number or string) or
//   client id, `iat` not in the future, `exp` in the future and at most 10 minutes ahead (of now
//   and of `iat`); anything else is a `401`, whose reason the fake keeps for tests;
// - the App's own requests have their own quota (the App's, not an installation's);
// - an installation token reads the installation's repositories only (`404` elsewhere), lives
//   `token_lifetime` seconds (an hour unless a test shortens it), and spends the installation's
//   quota: 5,000 an hour plus 50 per repository beyond 20, at most 12,500, unless set.

/// What a JWT must satisfy, as GitHub's answers word it; the fake keeps the short reason.
const JWT_UNDECODABLE: &str = "A JSON web token could not be decoded";
const JWT_MAX_LIFETIME: i64 = 600;

struct FakeApp {
    id: u64,
    client_id: String,
    key: jsonwebtoken::DecodingKey,
    quota: Quota,
}

struct FakeInstallation {
    app: u64,
    /// The lower-cased login of the account (user or organisation) it is installed on.
    account: Option<String>,
    /// Repository keys (lower-cased `owner/name`).
    repos: BTreeSet<String>,
    quota: Quota,
    minted: u32,
    suspended: bool,
}

struct IssuedToken {
    installation: u64,
    expires_at: i64,
    revoked: bool,
    /// What it was minted with (`permission` → `read`/`write`); `None`: all the App has.
    permissions: Option<BTreeMap<String, String>>,
}

struct Apps {
    apps: BTreeMap<u64, FakeApp>,
    installations: BTreeMap<u64, FakeInstallation>,
    tokens: HashMap<String, IssuedToken>,
    token_lifetime: i64,
    /// Distinct JWTs accepted.
    jwts: BTreeSet<String>,
    rejections: Vec<String>,
    lookups: BTreeMap<String, u32>,
}

impl Default for Apps {
    fn default() -> Self {
        Self {
            apps: BTreeMap::new(),
            installations: BTreeMap::new(),
            tokens: HashMap::new(),
            token_lifetime: 3600,
            jwts: BTreeSet::new(),
            rejections: Vec::new(),
            lookups: BTreeMap::new(),
        }
    }
}

/// An installation's hourly limit as GitHub computes it for an organisation's installation.
pub fn installation_limit(repositories: usize) -> u32 {
    let extra = u32::try_from(repositories.saturating_sub(20)).unwrap_or(u32::MAX).saturating_mul(50);
    5000u32.saturating_add(extra).min(12_500)
}

impl FakeGitHub {
    /// A GitHub App whose JWTs must verify with `public_key_pem` (SPKI); its own requests may
    /// spend 5,000 an hour.
    pub fn add_app(&self, app_id: u64, client_id: &str, public_key_pem: &str) {
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(public_key_pem.as_bytes()).expect("an RSA public key");
        let quota = Quota { limit: 5000, used: 0, window_start: None, spent: 0 };
        self.world().apps.apps.insert(app_id, FakeApp { id: app_id, client_id: client_id.to_owned(), key, quota });
    }

    /// Installs App `app_id` on `repos` (created if needed) as installation `installation_id`,
    /// with GitHub's limit for that many repositories.
    pub fn add_installation(&self, app_id: u64, installation_id: u64, repos: &[&str]) {
        let mut world = self.world();
        for repo in repos {
            world.repo_mut(repo);
        }
        let repos: BTreeSet<String> = repos.iter().map(|r| repo_key(r)).collect();
        // An installation belongs to one account: the owner of its repositories.
        let owners: BTreeSet<&str> = repos.iter().filter_map(|r| r.split('/').next()).collect();
        let account = (owners.len() == 1).then(|| owners.iter().next().map(|o| (*o).to_owned())).flatten();
        let quota = Quota { limit: installation_limit(repos.len()), used: 0, window_start: None, spent: 0 };
        let installation = FakeInstallation { app: app_id, account, repos, quota, minted: 0, suspended: false };
        world.apps.installations.insert(installation_id, installation);
    }

    /// Sets an installation's hourly limit (15,000 for an Enterprise Cloud organisation's).
    pub fn set_installation_limit(&self, installation_id: u64, limit: u32) {
        self.world().apps.installations.get_mut(&installation_id).expect("an installation").quota.limit = limit;
    }

    /// Sets the hourly limit of the App's own (JWT) requests.
    pub fn set_app_limit(&self, app_id: u64, limit: u32) {
        self.world().apps.apps.get_mut(&app_id).expect("an App").quota.limit = limit;
    }

    /// How long installation tokens minted from now on live (an hour by default).
    pub fn set_installation_token_lifetime(&self, seconds: i64) {
        self.world().apps.token_lifetime = seconds;
    }

    /// Every token of the installation minted so far answers `401` from now on.
    pub fn revoke_installation_tokens(&self, installation_id: u64) {
        for token in self.world().apps.tokens.values_mut().filter(|t| t.installation == installation_id) {
            token.revoked = true;
        }
    }

    /// Minting tokens for the installation answers `403` (suspended) until called with `false`.
    pub fn suspend_installation(&self, installation_id: u64, suspended: bool) {
        self.world().apps.installations.get_mut(&installation_id).expect("an installation").suspended = suspended;
    }

    /// Installation tokens minted for the installation so far.
    pub fn installation_tokens_minted(&self, installation_id: u64) -> u32 {
        self.world().apps.installations.get(&installation_id).map_or(0, |i| i.minted)
    }

    /// Every installation token minted so far, to look for in logs.
    pub fn installation_tokens(&self) -> Vec<String> {
        self.world().apps.tokens.keys().cloned().collect()
    }

    /// Installation lookups answered for `repo` (`GET /repos/{owner}/{repo}/installation`), or
    /// for an organisation's login (`GET /orgs/{org}/installation`).
    pub fn installation_lookups(&self, repo: &str) -> u32 {
        self.world().apps.lookups.get(&repo_key(repo)).copied().unwrap_or(0)
    }

    /// Distinct JWTs accepted so far.
    pub fn jwts_accepted(&self) -> usize {
        self.world().apps.jwts.len()
    }

    /// Why each refused JWT was refused, oldest first: `malformed`, `not RS256`, `unknown
    /// issuer`, `bad signature`, `expired`, `not yet valid`, `exp too far`.
    pub fn jwt_rejections(&self) -> Vec<String> {
        self.world().apps.rejections.clone()
    }

    /// Credits the installation's tokens spent since it was added, across windows.
    pub fn installation_credits_used(&self, installation_id: u64) -> u32 {
        self.world().apps.installations.get(&installation_id).map_or(0, |i| i.quota.spent)
    }

    /// What `X-RateLimit-Remaining` would say now to the installation's tokens.
    pub fn installation_remaining(&self, installation_id: u64) -> u32 {
        let world = self.world();
        let now = world.now();
        world
            .apps
            .installations
            .get(&installation_id)
            .map_or(0, |i| if i.quota.expired(now) { i.quota.limit } else { i.quota.remaining() })
    }

    /// Credits the App's own (JWT) requests spent since it was added.
    pub fn app_credits_used(&self, app_id: u64) -> u32 {
        self.world().apps.apps.get(&app_id).map_or(0, |a| a.quota.spent)
    }
}

/// A JWT's claims as the fake reads them: the times as integers, `iss` a number or a string.
#[derive(serde::Deserialize)]
struct JwtClaims {
    iat: i64,
    exp: i64,
    iss: Value,
}

impl World {
    /// The quota a token spends: its own, or its installation's for a live installation token.
    fn quota_of(&mut self, token: &str) -> Option<&mut Quota> {
        if self.tokens.contains_key(token) {
            return self.tokens.get_mut(token);
        }
        let now = self.now();
        let issued = self.apps.tokens.get(token).filter(|t| !t.revoked && t.expires_at > now)?;
        self.apps.installations.get_mut(&issued.installation).map(|i| &mut i.quota)
    }

    fn quota_ref(&self, token: &str) -> Option<&Quota> {
        if let Some(quota) = self.tokens.get(token) {
            return Some(quota);
        }
        let issued = self.apps.tokens.get(token)?;
        self.apps.installations.get(&issued.installation).map(|i| &i.quota)
    }

    /// GitHub's `404` for an installation token reading a repository outside its installation.
    fn outside_installation(&self, token: &str, path: &str) -> Option<Reply> {
        let issued = self.apps.tokens.get(token)?;
        let installation = self.apps.installations.get(&issued.installation)?;
        let ["", "repos", owner, name, ..] = path.split('/').collect::<Vec<_>>()[..] else { return None };
        let inside = installation.repos.contains(&repo_key(&format!("{owner}/{name}")));
        (!inside).then(|| Reply::error(StatusCode::NOT_FOUND, "Not Found", "https://docs.github.com/rest"))
    }

    /// The App whose JWT the request carries, or the `401` (its reason kept).
    fn app_of(&mut self, headers: &HeaderMap) -> Result<u64, Reply> {
        let refuse = |apps: &mut Apps, reason: &str, message: &str| {
            apps.rejections.push(reason.to_owned());
            Reply::error(StatusCode::UNAUTHORIZED, message, "https://docs.github.com/rest")
        };
        let Some(jwt) = presented_token(headers) else {
            return Err(refuse(&mut self.apps, "malformed", JWT_UNDECODABLE));
        };
        let Ok(header) = jsonwebtoken::decode_header(&jwt) else {
            return Err(refuse(&mut self.apps, "malformed", JWT_UNDECODABLE));
        };
        if header.alg != jsonwebtoken::Algorithm::RS256 {
            return Err(refuse(&mut self.apps, "not RS256", JWT_UNDECODABLE));
        }
        // The issuer first (unverified), to know whose key must verify the signature.
        use base64::Engine as _;
        let claims = jwt
            .split('.')
            .nth(1)
            .and_then(|part| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).ok())
            .and_then(|bytes| serde_json::from_slice::<JwtClaims>(&bytes).ok());
        let Some(claims) = claims else {
            return Err(refuse(&mut self.apps, "malformed", JWT_UNDECODABLE));
        };
        let issuer = match &claims.iss {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => String::new(),
        };
        let app = self.apps.apps.values().find(|a| a.id.to_string() == issuer || a.client_id == issuer);
        let Some(app) = app else {
            return Err(refuse(&mut self.apps, "unknown issuer", "Integration not found"));
        };
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        // Times are checked below against the fake's clock, which tests move.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let app_id = app.id;
        if jsonwebtoken::decode::<Value>(&jwt, &app.key, &validation).is_err() {
            return Err(refuse(&mut self.apps, "bad signature", JWT_UNDECODABLE));
        }
        let now = self.now();
        if claims.exp <= now {
            let message = "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires";
            return Err(refuse(&mut self.apps, "expired", message));
        }
        if claims.iat > now {
            let message =
                "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued";
            return Err(refuse(&mut self.apps, "not yet valid", message));
        }
        if claims.exp > now + JWT_MAX_LIFETIME || claims.exp - claims.iat > JWT_MAX_LIFETIME {
            let message = "'Expiration time' claim ('exp') is too far in the future";
            return Err(refuse(&mut self.apps, "exp too far", message));
        }
        self.apps.jwts.insert(jwt);
        Ok(app_id)
    }

    /// Answers a GitHub App endpoint; `None` for any other path (and for requests without a
    /// `User-Agent`, which the common checks refuse).
    fn answer_app(&mut self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Option<Reply> {
        let segments: Vec<&str> = uri.path().trim_end_matches('/').split('/').collect();
        let lookup = match segments.as_slice() {
            ["", "repos", owner, name, "installation"] => Some((repo_key(&format!("{owner}/{name}")), false)),
            ["", "orgs", org, "installation"] => Some((repo_key(org), true)),
            ["", "app", ..] => None,
            _ => return None,
        };
        if headers.get(header::USER_AGENT).is_none_or(|v| v.as_bytes().is_empty()) {
            return None;
        }
        let app_id = match self.app_of(headers) {
            Ok(app) => app,
            Err(refused) => return Some(refused),
        };
        let now = self.now();
        self.served += 1;
        let not_found = || Reply::error(StatusCode::NOT_FOUND, "Not Found", "https://docs.github.com/rest");
        let quota = &mut self.apps.apps.get_mut(&app_id)?.quota;
        quota.roll(now);
        let reply = if quota.remaining() == 0 {
            Reply::error(
                StatusCode::FORBIDDEN,
                "API rate limit exceeded for app ID.",
                &format!("{RATE_LIMIT_DOCS}#about-primary-rate-limits"),
            )
        } else if let Some((repo, org)) = lookup {
            *self.apps.lookups.entry(repo.clone()).or_default() += 1;
            let found = self
                .apps
                .installations
                .iter()
                .find(|(_, i)| {
                    i.app == app_id
                        && if org { i.account.as_deref() == Some(repo.as_str()) } else { i.repos.contains(&repo) }
                })
                .map(|(id, _)| *id);
            match (found, method == Method::GET) {
                (Some(id), true) => Reply::json(
                    StatusCode::OK,
                    &json!({
                        "id": id,
                        "app_id": app_id,
                        "account": {"login": repo.split('/').next()},
                        "repository_selection": "selected",
                        "permissions": {"actions": "read", "metadata": "read"},
                    }),
                ),
                _ => not_found(),
            }
        } else {
            match (segments.as_slice(), method.clone()) {
                (["", "app", "installations", id, "access_tokens"], Method::POST) => {
                    let id: u64 = id.parse().unwrap_or(0);
                    let lifetime = self.apps.token_lifetime;
                    match self.apps.installations.get_mut(&id).filter(|i| i.app == app_id) {
                        None => not_found(),
                        Some(installation) if installation.suspended => Reply::error(
                            StatusCode::FORBIDDEN,
                            "This installation has been suspended",
                            "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app",
                        ),
                        Some(installation) => {
                            installation.minted += 1;
                            let digest = Sha256::digest(format!("{id}:{}:{}", installation.minted, self.served));
                            let token = format!("ghs_{}", &hex::encode(digest)[..36]);
                            let expires_at = now + lifetime;
                            // The permissions asked for, as GitHub narrows a token to them.
                            let permissions = serde_json::from_slice::<Value>(body).ok().and_then(|b| {
                                serde_json::from_value::<BTreeMap<String, String>>(b["permissions"].clone()).ok()
                            });
                            let shown = permissions.clone().map_or_else(
                                || json!({"actions": "read", "metadata": "read", "administration": "write", "organization_self_hosted_runners": "write"}),
                                |p| json!(p),
                            );
                            let issued = IssuedToken { installation: id, expires_at, revoked: false, permissions };
                            self.apps.tokens.insert(token.clone(), issued);
                            Reply::json(
                                StatusCode::CREATED,
                                &json!({
                                    "token": token,
                                    "expires_at": rfc3339(expires_at),
                                    "permissions": shown,
                                    "repository_selection": "selected",
                                }),
                            )
                        }
                    }
                }
                (["", "app"], Method::GET) => Reply::json(StatusCode::OK, &json!({"id": app_id, "slug": "fake-app"})),
                _ => not_found(),
            }
        };
        let quota = &mut self.apps.apps.get_mut(&app_id)?.quota;
        if reply.status.is_success() {
            quota.used += 1;
            quota.spent += 1;
        }
        Some(
            reply
                .header("x-ratelimit-limit", quota.limit.to_string())
                .header("x-ratelimit-remaining", quota.remaining().to_string())
                .header("x-ratelimit-used", quota.used.to_string())
                .header("x-ratelimit-reset", quota.reset(now).to_string())
                .header("x-ratelimit-resource", "core"),
        )
    }
}

/// A webhook as if made earlier (active, JSON, no secret shown), with the next hook id.
fn made_earlier(world: &mut World, url: &str, events: &[&str]) -> HookView {
    world.next_hook_id += 1;
    HookView {
        id: world.next_hook_id,
        name: "web".into(),
        active: true,
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        url: url.to_owned(),
        content_type: "json".into(),
        insecure_ssl: "0".into(),
        secret: None,
    }
}
