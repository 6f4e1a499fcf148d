//! The processes under test and what is done to them: two `serve` replicas and a real memcached,
//! killed and restarted on a plan, GitHub's bad periods, and each replica's memory sampled.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::common::fake_github::{FakeGitHub, Fault};
use crate::common::memcached::MemcachedServer;
use crate::common::rng::Rng;
use crate::common::server::Server;

pub const NAMES: [&str; 2] = ["a", "b"];

fn guard<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where each replica can be reached right now (none while it is down).
#[derive(Debug, Default, Clone, Copy)]
pub struct Slot {
    pub addr: Option<SocketAddr>,
    pub pid: Option<u32>,
    /// How many times this replica has been started.
    pub incarnation: u32,
}

#[derive(Default)]
pub struct Fleet {
    slots: [Mutex<Slot>; 2],
    /// Replica processes found dead without having been killed.
    pub crashes: Mutex<Vec<String>>,
}

impl Fleet {
    pub fn slot(&self, i: usize) -> Slot {
        *guard(&self.slots[i])
    }

    /// A replica that is up, chosen by `roll` (as a load balancer would spread deliveries).
    pub fn pick_live(&self, roll: u64) -> Option<SocketAddr> {
        let first = (roll % 2) as usize;
        [first, 1 - first].into_iter().find_map(|i| self.slot(i).addr)
    }

    fn up(&self, i: usize, server: &Server) {
        let mut slot = guard(&self.slots[i]);
        slot.addr = Some(server.addr);
        slot.pid = Some(server.child.id());
        slot.incarnation += 1;
    }

    fn down(&self, i: usize) {
        let mut slot = guard(&self.slots[i]);
        slot.addr = None;
        slot.pid = None;
    }
}

/// The replicas' processes, their data and their arguments.
pub struct Replicas {
    pub servers: [Option<Server>; 2],
    dirs: [PathBuf; 2],
    manifests: PathBuf,
    args: Vec<String>,
    fleet: Arc<Fleet>,
    pid_file: PathBuf,
    memcached_pid: Option<u32>,
}

impl Replicas {
    pub fn new(work: &Path, manifests: PathBuf, args: Vec<String>, fleet: Arc<Fleet>) -> Self {
        let dirs = NAMES.map(|n| work.join(n));
        for dir in &dirs {
            std::fs::create_dir_all(dir).expect("a replica directory");
        }
        Self { servers: [None, None], dirs, manifests, args, fleet, pid_file: work.join("pids"), memcached_pid: None }
    }

    pub fn dir(&self, i: usize) -> &Path {
        &self.dirs[i]
    }

    pub async fn start(&mut self, i: usize) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env = [("GAA_UNAUTHENTICATED_READS", "true")];
        let server = Server::launch(&self.dirs[i].join("data"), &self.manifests, &args, &env, None).await;
        self.fleet.up(i, &server);
        self.servers[i] = Some(server);
        self.write_pids();
    }

    /// `kill -9`: no shutdown, no final checkpoint, deliveries in flight cut off. Deliveries
    /// keep going to it for a second, as a load balancer keeps routing to a pod until its
    /// readiness probe fails: they are refused and never acknowledged.
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut server) = self.servers[i].take() {
            // Found dead already: it crashed on its own.
            if let Ok(Some(status)) = server.child.try_wait() {
                guard(&self.fleet.crashes).push(format!(
                    "replica {} exited with {status}; log {}",
                    NAMES[i],
                    server.stderr.display()
                ));
            }
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        self.write_pids();
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.fleet.down(i);
    }

    pub fn set_memcached_pid(&mut self, pid: Option<u32>) {
        self.memcached_pid = pid;
        self.write_pids();
    }

    /// The processes this run owns, for scripts/soak.sh to end if the run itself dies.
    fn write_pids(&self) {
        let mut text = String::new();
        if let Some(pid) = self.memcached_pid {
            text.push_str(&format!("{pid} memcached\n"));
        }
        for server in self.servers.iter().flatten() {
            text.push_str(&format!("{} github-action-autoscaler\n", server.child.id()));
        }
        let _ = std::fs::write(&self.pid_file, text);
    }

    /// Every replica still running that has exited on its own is a crash.
    pub fn check_alive(&mut self) {
        for (i, server) in self.servers.iter_mut().enumerate() {
            if let Some(server) = server
                && let Ok(Some(status)) = server.child.try_wait()
            {
                guard(&self.fleet.crashes).push(format!(
                    "replica {} exited with {status}; log {}",
                    NAMES[i],
                    server.stderr.display()
                ));
            }
        }
    }
}

/// Something done to the system at a planned moment.
#[derive(Debug, Clone)]
pub enum Action {
    KillMemcached,
    StartMemcached,
    GitHub(Option<Fault>),
    KillReplica(usize),
    StartReplica(usize),
}

/// What was done, for the summary.
#[derive(Debug, Default)]
pub struct FaultLog {
    pub cycle: Duration,
    pub memcached_kills: u32,
    pub memcached_down: Duration,
    pub replica_kills: [u32; 2],
    pub replica_down: Duration,
    pub kills_during_memcached_outage: u32,
    /// (what, from, for), seconds since the start.
    pub github_periods: Vec<(String, f64, f64)>,
}

/// Faults spread over `workload`, in cycles of a sixth of it (30 s to 3 minutes): in each,
/// memcached dies and comes back empty, GitHub misbehaves for a while (5xx or secondary limits,
/// alternately), and one replica is `kill -9`ed and restarted (alternately), every third cycle
/// while memcached is down.
pub fn plan(workload: Duration, rng: &mut Rng) -> (Duration, Vec<(Duration, Action)>) {
    let cycle = (workload / 6).clamp(Duration::from_secs(30), Duration::from_secs(180));
    let cycles = (workload.as_secs_f64() / cycle.as_secs_f64()).floor() as u32;
    let memcached_down = (cycle.mul_f64(0.08)).clamp(Duration::from_secs(3), Duration::from_secs(12));
    let bad_github = cycle.mul_f64(0.25).min(Duration::from_secs(45));
    let mut actions = Vec::new();
    for c in 0..cycles {
        let base = cycle * c;
        let jitter = Duration::from_millis(rng.below(cycle.as_millis() as u64 / 20));
        let memcached_at = base + cycle.mul_f64(0.10) + jitter;
        actions.push((memcached_at, Action::KillMemcached));
        actions.push((memcached_at + memcached_down, Action::StartMemcached));
        let github_at = base + cycle.mul_f64(0.35) + jitter;
        let fault = if c % 2 == 0 {
            Fault::ServerError { status: [502, 503, 500][(c as usize / 2) % 3] }
        } else {
            Fault::SecondaryLimit { retry_after_secs: 5, status: if c % 4 == 1 { 403 } else { 429 } }
        };
        actions.push((github_at, Action::GitHub(Some(fault))));
        actions.push((github_at + bad_github, Action::GitHub(None)));
        let replica = (c % 2) as usize;
        let kill_at =
            if c % 3 == 2 { memcached_at + Duration::from_secs(1) } else { base + cycle.mul_f64(0.70) + jitter };
        let down = Duration::from_millis(2_000 + rng.below(3_000));
        actions.push((kill_at, Action::KillReplica(replica)));
        actions.push((kill_at + down, Action::StartReplica(replica)));
    }
    actions.sort_by_key(|(at, _)| *at);
    (cycle, actions)
}

/// Carries out `actions` from `start`; returns with everything running again and GitHub well.
pub async fn run_faults(
    start: Instant,
    actions: Vec<(Duration, Action)>,
    cycle: Duration,
    replicas: &mut Replicas,
    memcached: &mut MemcachedServer,
    github: &FakeGitHub,
) -> FaultLog {
    let mut log = FaultLog { cycle, ..FaultLog::default() };
    let mut memcached_since: Option<Instant> = None;
    let mut replica_since: [Option<Instant>; 2] = [None, None];
    let mut github_since: Option<(String, Instant)> = None;
    for (at, action) in actions {
        tokio::time::sleep_until((start + at).into()).await;
        replicas.check_alive();
        match action {
            Action::KillMemcached => {
                memcached.kill();
                replicas.set_memcached_pid(None);
                log.memcached_kills += 1;
                memcached_since = Some(Instant::now());
            }
            Action::StartMemcached => {
                memcached.restart();
                replicas.set_memcached_pid(memcached.pid());
                log.memcached_down += memcached_since.take().map_or(Duration::ZERO, |s| s.elapsed());
            }
            Action::GitHub(fault) => {
                if let Some((what, since)) = github_since.take() {
                    log.github_periods.push((what, (since - start).as_secs_f64(), since.elapsed().as_secs_f64()));
                }
                if let Some(fault) = &fault {
                    let what = match fault {
                        Fault::ServerError { status } => format!("{status}s"),
                        Fault::SecondaryLimit { status, retry_after_secs } => {
                            format!("secondary limit {status} (Retry-After {retry_after_secs})")
                        }
                        other => format!("{other:?}"),
                    };
                    github_since = Some((what, Instant::now()));
                }
                github.set_standing_fault(fault);
            }
            Action::KillReplica(i) => {
                replicas.kill(i).await;
                log.replica_kills[i] += 1;
                if memcached_since.is_some() {
                    log.kills_during_memcached_outage += 1;
                }
                replica_since[i] = Some(Instant::now());
            }
            Action::StartReplica(i) => {
                replicas.start(i).await;
                log.replica_down += replica_since[i].take().map_or(Duration::ZERO, |s| s.elapsed());
            }
        }
    }
    log
}

/// One reading of a replica's resident memory.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Seconds since the start.
    pub at: f64,
    pub replica: usize,
    pub incarnation: u32,
    pub rss_kib: u64,
    /// Of `rss_kib`: anonymous memory (the heap, what the allocator holds) and pages of mapped
    /// files (the binary's code, shared and bounded by its size).
    pub anon_kib: u64,
    pub file_kib: u64,
}

/// `VmRSS`, `RssAnon` and `RssFile` of `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("RssAnon:").unwrap_or(0), field("RssFile:").unwrap_or(0)))
}

/// Samples each replica's `VmRSS` every `every` until `stop` is cancelled.
pub async fn sample_memory(
    fleet: Arc<Fleet>,
    start: Instant,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    loop {
        for i in 0..2 {
            let slot = fleet.slot(i);
            if let Some((rss_kib, anon_kib, file_kib)) = slot.pid.and_then(rss_kib) {
                samples.push(Sample {
                    at: start.elapsed().as_secs_f64(),
                    replica: i,
                    incarnation: slot.incarnation,
                    rss_kib,
                    anon_kib,
                    file_kib,
                });
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return samples,
        }
    }
}
