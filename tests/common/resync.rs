//! A reconciler over a fresh journal and the fake GitHub, in simulated time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use gaa::clock::Clock;
use gaa::demand::{RunnerIndex, RunnerKey};
use gaa::github::GitHubClient;
use gaa::github::reconciler::{Pass, Reconciler, ReconcilerConfig, RepoTokens};
use gaa::metrics::Metrics;
use gaa::store::{StoreHandle, WriterConfig};

use super::fake_github::FakeGitHub;

pub struct ResyncWorld {
    pub github: FakeGitHub,
    pub store: StoreHandle,
    pub reconciler: Reconciler,
    pub metrics: Arc<Metrics>,
    /// The simulated time, unix seconds, that the journal, the client and the fake all read.
    pub now: Arc<AtomicI64>,
    pub dir: tempfile::TempDir,
}

impl ResyncWorld {
    /// `index`'s runners, resynced with `tokens`, from `start`.
    pub fn start(
        github: FakeGitHub,
        start: i64,
        index: RunnerIndex,
        tokens: RepoTokens,
        config: ReconcilerConfig,
    ) -> Self {
        github.set_now(start);
        let now = Arc::new(AtomicI64::new(start));
        let clock = clock_of(&now);
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let writer = WriterConfig { clock: clock.clone(), ..WriterConfig::default() };
        let store = StoreHandle::start(dir.path(), index.clone(), writer, metrics.clone()).unwrap();
        let client = GitHubClient::new(&github.url(), metrics.clone()).unwrap().with_clock(move || clock());
        let mut reconciler = Reconciler::new(Arc::new(client), store.clone(), config, metrics.clone());
        reconciler.set_catalog(index, tokens, start);
        Self { github, store, reconciler, metrics, now, dir }
    }

    /// A clock that reads the simulated time.
    pub fn clock(&self) -> Clock {
        clock_of(&self.now)
    }

    pub fn now(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    /// Advances simulated time by `step` and runs a pass.
    pub async fn tick(&mut self, step: i64) -> Pass {
        let now = self.now.fetch_add(step, Ordering::SeqCst) + step;
        self.github.set_now(now);
        self.reconciler.resync_due(now).await
    }

    /// The demand of runner `ci/name`.
    pub fn demand(&self, name: &str) -> u64 {
        self.store.board().get(&RunnerKey::new("ci", name)).unwrap().demand
    }
}

fn clock_of(now: &Arc<AtomicI64>) -> Clock {
    let now = now.clone();
    Arc::new(move || now.load(Ordering::SeqCst))
}
