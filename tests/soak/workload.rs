//! The workload: runs and jobs that GitHub (the fake) creates and moves along, and the webhook
//! deliveries GitHub would send for each change, built from the example payloads in
//! `fixtures/webhooks/`, signed with the repository's secret, sent late, out of order, twice,
//! or never.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::common::fake_github::{FakeGitHub, JobState};
use crate::common::rng::Rng;
use crate::common::signature;
use crate::fleet::Fleet;
use crate::model::{JobKind, KINDS, ORG, Repo};

/// Share of deliveries GitHub never delivers (left to the resync), in percent.
const DROPPED_PERCENT: u64 = 5;
/// Share of delivered changes sent a second time, with the same delivery id, in percent.
const DUPLICATE_PERCENT: u64 = 8;
/// Share of deliveries sent form-encoded (`payload=`) instead of as JSON, in percent.
const FORM_PERCENT: u64 = 10;
/// Deliveries in flight at once.
const IN_FLIGHT: usize = 48;

/// A job's state as a rank: later states rank higher.
pub fn rank(state: JobState) -> u8 {
    match state {
        JobState::Waiting => 0,
        JobState::Queued => 1,
        JobState::InProgress => 2,
        JobState::Completed => 3,
    }
}

/// What the soak knows about one job's deliveries.
#[derive(Debug)]
pub struct JobRecord {
    pub repo: usize,
    pub kind: usize,
    /// Each change GitHub made to the job, and whether any delivery of it was acknowledged.
    pub changes: Vec<(JobState, bool)>,
}

impl JobRecord {
    /// The furthest state any acknowledged delivery reported.
    pub fn acknowledged(&self) -> Option<JobState> {
        self.changes.iter().filter(|(_, acked)| *acked).map(|(s, _)| *s).max_by_key(|s| rank(*s))
    }

    /// Every change the job went through was acknowledged at least once.
    pub fn fully_acknowledged(&self) -> bool {
        self.changes.iter().all(|(_, acked)| *acked)
    }
}

/// What happened to deliveries, for the summary.
#[derive(Debug, Default, Clone)]
pub struct DeliveryStats {
    pub changes: u64,
    /// Deliveries sent (first sends and duplicates).
    pub sent: u64,
    pub duplicates_sent: u64,
    /// Answered 2xx.
    pub acknowledged: u64,
    /// Answered `200 duplicate`.
    pub duplicate_answers: u64,
    /// Never sent: GitHub "lost" them.
    pub dropped: u64,
    /// Sent but refused or not answered (a replica being killed, a 5xx): not acknowledged.
    pub failed: u64,
    pub failures: HashMap<String, u64>,
    pub form_encoded: u64,
    pub jobs: u64,
    pub runs: u64,
}

/// The soak's record of every job and delivery, shared by the workload and the checks.
#[derive(Default)]
pub struct Ledger {
    pub jobs: HashMap<u64, JobRecord>,
    pub stats: DeliveryStats,
}

pub type SharedLedger = Arc<Mutex<Ledger>>;

pub fn lock(ledger: &SharedLedger) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The example payloads, by the change they report.
struct Fixtures {
    queued: Vec<Value>,
    waiting: Value,
    in_progress: Value,
    completed: Value,
    cancelled: Value,
}

impl Fixtures {
    fn load() -> Self {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/webhooks");
        let read = |name: &str| -> Value {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
        };
        Self {
            queued: vec![
                read("workflow_job.queued.json"),
                read("workflow_job.queued.gpu.json"),
                read("workflow_job.rerun.queued.json"),
            ],
            waiting: read("workflow_job.waiting.json"),
            in_progress: read("workflow_job.in_progress.json"),
            completed: read("workflow_job.completed.json"),
            cancelled: read("workflow_job.completed.cancelled.json"),
        }
    }
}

/// One job's life as the workload plans it.
struct Job {
    run_id: u64,
    repo: usize,
    kind: usize,
    created: i64,
    started: Option<i64>,
}

enum Step {
    NewRun,
    /// GitHub moves job `id` to a state (cancelled: completed without starting).
    Change {
        id: u64,
        state: JobState,
        cancelled: bool,
    },
    /// A delivery goes out (again, when a duplicate).
    Send {
        delivery: Arc<Delivery>,
        duplicate: bool,
    },
}

pub struct Delivery {
    job: u64,
    change: usize,
    id: String,
    body: Vec<u8>,
    form: bool,
    signature: String,
}

pub struct Workload {
    github: Arc<FakeGitHub>,
    repos: Arc<Vec<Repo>>,
    repo_ids: Vec<u64>,
    fleet: Arc<Fleet>,
    ledger: SharedLedger,
    rng: Rng,
    fixtures: Fixtures,
    jobs: HashMap<u64, Job>,
    used_ids: HashSet<u64>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    steps: HashMap<u64, Step>,
    next_step: u64,
    client: reqwest::Client,
    sending: JoinSet<()>,
    slots: Arc<Semaphore>,
}

fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix).expect("a time in range").strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Workload {
    pub fn new(
        github: Arc<FakeGitHub>,
        repos: Arc<Vec<Repo>>,
        fleet: Arc<Fleet>,
        ledger: SharedLedger,
        seed: u64,
    ) -> Self {
        let repo_ids = repos
            .iter()
            .map(|r| {
                github.add_repo(&r.full_name());
                github.repo_id(&r.full_name()).expect("the repository was just made")
            })
            .collect();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client");
        Self {
            github,
            repos,
            repo_ids,
            fleet,
            ledger,
            rng: Rng(seed | 1),
            fixtures: Fixtures::load(),
            jobs: HashMap::new(),
            used_ids: HashSet::new(),
            queue: BinaryHeap::new(),
            steps: HashMap::new(),
            next_step: 0,
            client,
            sending: JoinSet::new(),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
        }
    }

    fn at(&mut self, when: Instant, step: Step) {
        self.next_step += 1;
        self.steps.insert(self.next_step, step);
        self.queue.push(Reverse((when, self.next_step)));
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.rng.below(hi - lo + 1))
    }

    fn fresh_id(&mut self) -> u64 {
        loop {
            let id = 10_000_000_000 + self.rng.below(80_000_000_000);
            if self.used_ids.insert(id) {
                return id;
            }
        }
    }

    fn pick_kind(&mut self) -> usize {
        let total: u64 = KINDS.iter().map(|k| k.weight).sum();
        let mut pick = self.rng.below(total);
        for (i, kind) in KINDS.iter().enumerate() {
            if pick < kind.weight {
                return i;
            }
            pick -= kind.weight;
        }
        0
    }

    /// Creates runs and moves jobs along until `until`; then stops changing GitHub and sends
    /// only the deliveries already due for changes made (late ones and duplicates included).
    pub async fn run(mut self, until: Instant) -> DeliveryStats {
        self.at(Instant::now(), Step::NewRun);
        while let Some(Reverse((when, key))) = self.queue.pop() {
            let Some(step) = self.steps.remove(&key) else { continue };
            if when > until && !matches!(step, Step::Send { .. }) {
                continue;
            }
            tokio::time::sleep_until(when.into()).await;
            match step {
                Step::NewRun => {
                    self.new_run();
                    let next = self.millis(100, 1100);
                    self.at(Instant::now() + next, Step::NewRun);
                }
                Step::Change { id, state, cancelled } => self.change(id, state, cancelled),
                Step::Send { delivery, duplicate } => self.send(delivery, duplicate).await,
            }
            // Reap finished sends as we go.
            while self.sending.try_join_next().is_some() {}
        }
        while self.sending.join_next().await.is_some() {}
        lock(&self.ledger).stats.clone()
    }

    fn new_run(&mut self) {
        let repo = self.rng.below(self.repos.len() as u64) as usize;
        let run_id = self.fresh_id();
        let jobs = 1 + self.rng.below(4);
        lock(&self.ledger).stats.runs += 1;
        for _ in 0..jobs {
            let id = self.fresh_id();
            let kind = self.pick_kind();
            self.jobs.insert(id, Job { run_id, repo, kind, created: unix_now(), started: None });
            lock(&self.ledger).jobs.insert(id, JobRecord { repo, kind, changes: Vec::new() });
            lock(&self.ledger).stats.jobs += 1;
            // A few wait for a deployment approval first.
            let now = Instant::now();
            if self.rng.below(100) < 5 {
                self.at(now, Step::Change { id, state: JobState::Waiting, cancelled: false });
                let approved = self.millis(2_000, 10_000);
                self.at(now + approved, Step::Change { id, state: JobState::Queued, cancelled: false });
            } else {
                self.at(now, Step::Change { id, state: JobState::Queued, cancelled: false });
            }
        }
    }

    fn change(&mut self, id: u64, state: JobState, cancelled: bool) {
        let (repo, kind, run_id) = {
            let job = &self.jobs[&id];
            (job.repo, job.kind, job.run_id)
        };
        let full_name = self.repos[repo].full_name();
        if state == JobState::Waiting || (state == JobState::Queued && !self.has_changes(id)) {
            self.github.add_job(&full_name, run_id, id, KINDS[kind].labels, state);
        } else {
            self.github.set_job_status(id, state);
        }
        let now = Instant::now();
        match state {
            JobState::Waiting => {}
            JobState::Queued => {
                let wait = self.millis(1_000, 20_000);
                if self.rng.below(100) < 10 {
                    self.at(now + wait, Step::Change { id, state: JobState::Completed, cancelled: true });
                } else {
                    self.at(now + wait, Step::Change { id, state: JobState::InProgress, cancelled: false });
                }
            }
            JobState::InProgress => {
                if let Some(job) = self.jobs.get_mut(&id) {
                    job.started = Some(unix_now());
                }
                let work = self.millis(2_000, 40_000);
                self.at(now + work, Step::Change { id, state: JobState::Completed, cancelled: false });
            }
            JobState::Completed => {}
        }
        let change = {
            let mut ledger = lock(&self.ledger);
            ledger.stats.changes += 1;
            let record = ledger.jobs.get_mut(&id).expect("a job the workload made");
            record.changes.push((state, false));
            record.changes.len() - 1
        };
        let dropped = self.rng.below(100) < DROPPED_PERCENT;
        let delivery = (!dropped).then(|| Arc::new(self.delivery(id, repo, kind, run_id, state, cancelled, change)));
        if state == JobState::Completed {
            self.jobs.remove(&id);
        }
        let Some(delivery) = delivery else {
            lock(&self.ledger).stats.dropped += 1;
            return;
        };
        // Out of order: each delivery leaves up to three seconds late.
        let late = self.millis(0, 3_000);
        self.at(now + late, Step::Send { delivery: delivery.clone(), duplicate: false });
        if self.rng.below(100) < DUPLICATE_PERCENT {
            let again = self.millis(1_000, 20_000);
            self.at(now + again, Step::Send { delivery, duplicate: true });
        }
    }

    fn has_changes(&self, id: u64) -> bool {
        lock(&self.ledger).jobs.get(&id).is_some_and(|r| !r.changes.is_empty())
    }

    #[allow(clippy::too_many_arguments)]
    fn delivery(
        &mut self,
        id: u64,
        repo: usize,
        kind: usize,
        run_id: u64,
        state: JobState,
        cancelled: bool,
        change: usize,
    ) -> Delivery {
        let kind: &JobKind = &KINDS[kind];
        let repo_def = &self.repos[repo];
        let (created, started) = self.jobs.get(&id).map_or_else(|| (unix_now(), None), |j| (j.created, j.started));
        let mut payload = match state {
            JobState::Queued => {
                let pick = self.rng.below(self.fixtures.queued.len() as u64) as usize;
                self.fixtures.queued[pick].clone()
            }
            JobState::Waiting => self.fixtures.waiting.clone(),
            JobState::InProgress => self.fixtures.in_progress.clone(),
            JobState::Completed if cancelled => self.fixtures.cancelled.clone(),
            JobState::Completed => self.fixtures.completed.clone(),
        };
        let full_name = repo_def.full_name();
        let now = unix_now();
        payload["action"] = json!(state.as_str());
        let job = &mut payload["workflow_job"];
        job["id"] = json!(id);
        job["run_id"] = json!(run_id);
        job["run_attempt"] = json!(1);
        job["status"] = json!(state.as_str());
        job["labels"] = json!(kind.labels);
        job["created_at"] = json!(rfc3339(created));
        job["started_at"] = json!(rfc3339(started.unwrap_or(created)));
        job["completed_at"] = if state == JobState::Completed { json!(rfc3339(now)) } else { Value::Null };
        job["url"] = json!(format!("https://api.github.com/repos/{full_name}/actions/jobs/{id}"));
        job["html_url"] = json!(format!("https://github.com/{full_name}/actions/runs/{run_id}/job/{id}"));
        job["run_url"] = json!(format!("https://api.github.com/repos/{full_name}/actions/runs/{run_id}"));
        let repository = &mut payload["repository"];
        repository["id"] = json!(self.repo_ids[repo]);
        repository["name"] = json!(repo_def.name);
        repository["full_name"] = json!(full_name);
        repository["owner"]["login"] = json!(ORG);
        payload["organization"]["login"] = json!(ORG);
        let text = serde_json::to_string(&payload).expect("JSON serialises");
        let form = self.rng.below(100) < FORM_PERCENT;
        let body = if form {
            form_urlencoded::Serializer::new(String::new()).append_pair("payload", &text).finish().into_bytes()
        } else {
            text.into_bytes()
        };
        let delivery_id = format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            self.rng.next() as u32,
            self.rng.next() as u16,
            self.rng.next() % 0x1000,
            self.rng.next() % 0x1000,
            self.rng.next() % 0x1_0000_0000_0000
        );
        let signature = signature(&repo_def.secret, &body);
        Delivery { job: id, change, id: delivery_id, body, form, signature }
    }

    async fn send(&mut self, delivery: Arc<Delivery>, duplicate: bool) {
        let Some(addr) = self.fleet.pick_live(self.rng.next()) else {
            let mut ledger = lock(&self.ledger);
            ledger.stats.sent += 1;
            ledger.stats.failed += 1;
            *ledger.stats.failures.entry("no replica up".into()).or_default() += 1;
            return;
        };
        let permit = self.slots.clone().acquire_owned().await.expect("the semaphore stays open");
        let client = self.client.clone();
        let ledger = self.ledger.clone();
        self.sending.spawn(async move {
            let content_type = if delivery.form { "application/x-www-form-urlencoded" } else { "application/json" };
            let answer = client
                .post(format!("http://{addr}/webhook"))
                .header("content-type", content_type)
                .header("x-github-event", "workflow_job")
                .header("x-github-delivery", &delivery.id)
                .header("x-hub-signature-256", &delivery.signature)
                .header("user-agent", "GitHub-Hookshot/soak")
                .body(delivery.body.clone())
                .send()
                .await;
            let outcome = match answer {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let text = response.text().await.unwrap_or_default();
                    if (200..300).contains(&status) { Ok(text) } else { Err(format!("{status} {}", text.trim())) }
                }
                Err(error) => Err(if error.is_connect() {
                    "connection refused".to_owned()
                } else if error.is_timeout() {
                    "timed out".to_owned()
                } else {
                    "connection lost".to_owned()
                }),
            };
            drop(permit);
            let mut ledger = lock(&ledger);
            ledger.stats.sent += 1;
            if duplicate {
                ledger.stats.duplicates_sent += 1;
            }
            if delivery.form {
                ledger.stats.form_encoded += 1;
            }
            match outcome {
                Ok(text) => {
                    ledger.stats.acknowledged += 1;
                    if text.contains("duplicate") {
                        ledger.stats.duplicate_answers += 1;
                    }
                    if let Some(record) = ledger.jobs.get_mut(&delivery.job) {
                        record.changes[delivery.change].1 = true;
                    }
                }
                Err(reason) => {
                    ledger.stats.failed += 1;
                    let reason: String = reason.chars().take(80).collect();
                    *ledger.stats.failures.entry(reason).or_default() += 1;
                }
            }
        });
    }
}
