//! What the read API serves: each runner's counts and desired size, published by the writer after
//! every batch. Readers never wait on the journal.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use crate::demand::{Counts, ForcedScaleUp, RunnerDemand, RunnerIndex, RunnerKey};

/// What the resync last found for a runner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResyncInfo {
    pub with_token: bool,
    /// Unix seconds.
    pub last_time: Option<i64>,
    pub last_drift: Option<i64>,
}

/// An ephemeral runner's registrations on GitHub, as the last housekeeping pass saw them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Registrations {
    pub registered: u32,
    pub busy: u32,
}

fn decorate(
    mut view: RunnerDemand,
    stale: bool,
    resync: Option<&ResyncInfo>,
    forced: bool,
    registrations: Option<&Registrations>,
) -> RunnerDemand {
    view.stale = stale;
    if let Some(registrations) = registrations {
        view.registered_runners = Some(registrations.registered);
        view.busy_runners = Some(registrations.busy);
    }
    if forced {
        view.forced_scale_up = true;
        view.desired_runners = view.max_runners;
        view.value = view.max_runners;
    }
    if let Some(info) = resync {
        view.source = if info.with_token { "webhooks+github" } else { "webhooks" };
        view.last_resync_time =
            info.last_time.and_then(|t| jiff::Timestamp::from_second(t).ok()).map(|t| t.to_string());
        view.last_drift = info.last_drift;
    }
    view
}

/// What `Board::refresh_forced` found.
#[derive(Debug, Default)]
pub struct ForcedRefresh {
    /// Unix time at which the next window opens or closes, if any runner has a schedule.
    pub next: Option<i64>,
    /// The runners whose window opened or closed, as now served.
    pub changed: Vec<RunnerDemand>,
}

/// The published view, and a version per runner that ticks only when that runner's view changes
/// or it is removed (for push consumers).
#[derive(Debug)]
pub struct Board {
    published: RwLock<Published>,
    /// One signal per runner someone subscribed to; a removed runner's ticks once more and then
    /// closes. Lock order: `signals` before `published` and `forced`.
    signals: RwLock<HashMap<RunnerKey, watch::Sender<u64>>>,
    stale: AtomicBool,
    resync: RwLock<HashMap<RunnerKey, ResyncInfo>>,
    forced: RwLock<Forced>,
    registrations: RwLock<HashMap<RunnerKey, Registrations>>,
}

/// The runners served and their counts. A runner's view is made from the two when it is read,
/// so the board holds no copy of what the index already holds.
#[derive(Debug, Default)]
struct Published {
    index: RunnerIndex,
    /// The counts of each runner of `index`, by position.
    counts: Vec<Counts>,
}

impl Published {
    fn position(&self, key: &RunnerKey) -> Option<usize> {
        self.index.position(key)
    }

    fn view(&self, position: usize) -> Option<RunnerDemand> {
        Some(RunnerDemand::new(self.index.at(position)?, *self.counts.get(position)?))
    }
}

/// Runners with forced scale-ups, and those inside a forced window now.
#[derive(Debug, Default)]
struct Forced {
    schedules: HashMap<RunnerKey, ForcedScaleUp>,
    active: HashSet<RunnerKey>,
}

impl Default for Board {
    fn default() -> Self {
        Self {
            published: RwLock::new(Published::default()),
            signals: RwLock::new(HashMap::new()),
            stale: AtomicBool::new(false),
            resync: RwLock::new(HashMap::new()),
            registrations: RwLock::new(HashMap::new()),
            forced: RwLock::new(Forced::default()),
        }
    }
}

impl Board {
    pub fn get(&self, key: &RunnerKey) -> Option<RunnerDemand> {
        let stale = self.is_stale();
        let resync = self.resync.read().unwrap_or_else(|p| p.into_inner());
        let registrations = self.registrations.read().unwrap_or_else(|p| p.into_inner());
        let forced = self.forced.read().unwrap_or_else(|p| p.into_inner());
        let published = self.read();
        let view = published.view(published.position(key)?)?;
        Some(decorate(view, stale, resync.get(key), forced.active.contains(key), registrations.get(key)))
    }

    pub fn list(&self) -> Vec<RunnerDemand> {
        self.views(|index| 0..index.len())
    }

    /// The runners of one namespace, in name order, found without going through the others.
    pub fn namespace(&self, namespace: &str) -> Vec<RunnerDemand> {
        self.views(|index| index.in_namespace(namespace))
    }

    fn views(&self, positions: impl FnOnce(&RunnerIndex) -> std::ops::Range<usize>) -> Vec<RunnerDemand> {
        let stale = self.is_stale();
        let resync = self.resync.read().unwrap_or_else(|p| p.into_inner());
        let registrations = self.registrations.read().unwrap_or_else(|p| p.into_inner());
        let forced = self.forced.read().unwrap_or_else(|p| p.into_inner());
        let published = self.read();
        positions(&published.index)
            .filter_map(|position| {
                let key = &published.index.at(position)?.key;
                let view = published.view(position)?;
                Some(decorate(view, stale, resync.get(key), forced.active.contains(key), registrations.get(key)))
            })
            .collect()
    }

    /// Whether a runner is active as KEDA reads it (it has demand, or is inside a forced window),
    /// without making its view; `None` when it is not served.
    pub fn activity(&self, key: &RunnerKey) -> Option<bool> {
        let forced = self.forced.read().unwrap_or_else(|p| p.into_inner());
        let published = self.read();
        let counts = published.counts.get(published.position(key)?)?;
        Some(counts.demand() > 0 || forced.active.contains(key))
    }

    /// A receiver that sees a version change whenever this runner's view changes, and then
    /// closes once it is removed; `None` when the runner is not served.
    pub fn subscribe_runner(&self, key: &RunnerKey) -> Option<watch::Receiver<u64>> {
        // Under the signals lock, which `publish_all` holds while it removes runners: a runner
        // found here has its signal closed by any later removal.
        let mut signals = self.signals.write().unwrap_or_else(|p| p.into_inner());
        self.read().position(key)?;
        Some(signals.entry(key.clone()).or_insert_with(|| watch::channel(0).0).subscribe())
    }

    /// Ticks the signals of these runners.
    fn signal<'a>(&self, keys: impl IntoIterator<Item = &'a RunnerKey>) {
        let signals = self.signals.read().unwrap_or_else(|p| p.into_inner());
        if signals.is_empty() {
            return;
        }
        for key in keys {
            if let Some(signal) = signals.get(key) {
                signal.send_modify(|v| *v += 1);
            }
        }
    }

    /// Opens and closes forced scale-up windows as of unix time `now` (a change reaches push
    /// consumers like any other): says when the next window opens or closes, and gives the views
    /// of the runners whose window just opened or closed.
    pub fn refresh_forced(&self, now: i64) -> ForcedRefresh {
        let mut forced = self.forced.write().unwrap_or_else(|p| p.into_inner());
        let active: HashSet<RunnerKey> =
            forced.schedules.iter().filter(|(_, schedule)| schedule.active(now)).map(|(key, _)| key.clone()).collect();
        let next = forced.schedules.values().map(|schedule| schedule.next_change(now)).min();
        if active == forced.active {
            return ForcedRefresh { next, changed: Vec::new() };
        }
        let flipped: Vec<RunnerKey> = active.symmetric_difference(&forced.active).cloned().collect();
        for key in &flipped {
            tracing::info!(runner = %key, active = active.contains(key), "forced scale-up window");
        }
        forced.active = active;
        drop(forced);
        self.signal(&flipped);
        ForcedRefresh { next, changed: flipped.iter().filter_map(|key| self.get(key)).collect() }
    }

    /// Records what the resync found for a runner.
    /// An ephemeral runner's registrations on GitHub (shown in its view from now on).
    pub fn set_registrations(&self, key: &RunnerKey, registrations: Registrations) {
        self.registrations.write().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), registrations);
    }

    pub fn set_resync(&self, key: &RunnerKey, info: ResyncInfo) {
        self.resync.write().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), info);
    }

    /// Whether the numbers may be out of date (the shared store is unreachable).
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    pub fn set_stale(&self, stale: bool) {
        self.stale.store(stale, Ordering::Relaxed);
    }

    pub fn len(&self) -> usize {
        self.read().index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Published> {
        // A writer that panicked mid-update left a board that is still whole; keep serving it.
        self.published.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Published> {
        self.published.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the runner set: runners not in `index` disappear, new ones start at the counts
    /// `counts` gives (runners already shown keep their numbers when `counts` has none).
    pub fn publish_all(&self, index: &RunnerIndex, counts: impl Fn(&RunnerKey) -> Option<Counts>) {
        let mut signals = self.signals.write().unwrap_or_else(|p| p.into_inner());
        let mut published = self.write();
        let old = &*published;
        let fresh: Vec<Counts> = index
            .iter()
            .map(|runner| {
                let known = old.position(&runner.key).and_then(|position| old.counts.get(position).copied());
                counts(&runner.key).or(known).unwrap_or_default()
            })
            .collect();
        // Only the runners whose view changes (or that go) are told.
        let mut changed: HashSet<RunnerKey> = index
            .iter()
            .zip(&fresh)
            .filter(|(runner, counts)| match old.position(&runner.key) {
                Some(position) => old.index.at(position) != Some(*runner) || old.counts.get(position) != Some(*counts),
                None => true,
            })
            .map(|(runner, _)| runner.key.clone())
            .collect();
        let removed: Vec<RunnerKey> =
            old.index.iter().filter(|runner| index.position(&runner.key).is_none()).map(|r| r.key.clone()).collect();
        *published = Published { index: index.clone(), counts: fresh };
        drop(published);
        let mut forced = self.forced.write().unwrap_or_else(|p| p.into_inner());
        forced.schedules = index.iter().filter_map(|runner| Some((runner.key.clone(), runner.forced?))).collect();
        let Forced { schedules, active } = &mut *forced;
        changed.extend(active.iter().filter(|key| !schedules.contains_key(*key)).cloned());
        active.retain(|key| schedules.contains_key(key));
        drop(forced);
        for key in &removed {
            // The last tick, then the channel closes with the sender.
            if let Some(signal) = signals.remove(key) {
                signal.send_modify(|v| *v += 1);
            }
        }
        // Signals nobody listens to any more go; a new subscriber makes a new one.
        signals.retain(|_, signal| signal.receiver_count() > 0);
        drop(signals);
        self.signal(&changed);
    }

    /// Republishes the given runners' counts; returns the views that changed, as served (a
    /// runner inside a forced window asks for `maxRunners`). Runners not served are skipped.
    pub fn publish<'a>(&self, counts: impl IntoIterator<Item = (&'a RunnerKey, Counts)>) -> Vec<RunnerDemand> {
        let stale = self.is_stale();
        // The same lock order as `get` and `list`: resync, forced, published.
        let resync = self.resync.read().unwrap_or_else(|p| p.into_inner());
        let registrations = self.registrations.read().unwrap_or_else(|p| p.into_inner());
        let forced = self.forced.read().unwrap_or_else(|p| p.into_inner());
        let mut updated = Vec::new();
        let mut touched = Vec::new();
        {
            let mut published = self.write();
            for (key, counts) in counts {
                let Some(position) = published.position(key) else { continue };
                if published.counts[position] == counts {
                    continue;
                }
                published.counts[position] = counts;
                if let Some(view) = published.view(position) {
                    updated.push(decorate(
                        view,
                        stale,
                        resync.get(key),
                        forced.active.contains(key),
                        registrations.get(key),
                    ));
                }
                touched.push(key);
            }
        }
        drop((forced, resync));
        self.signal(touched);
        updated
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::demand::{Runner, ScaleFactor};

    fn index(forced: Option<ForcedScaleUp>) -> RunnerIndex {
        let mut runner = Runner::new(RunnerKey::new("ci", "web"), "acme", "web", ["linux"], 0, 4, ScaleFactor::Linear);
        runner.forced = forced;
        RunnerIndex::new(vec![runner])
    }

    #[test]
    fn a_forced_window_asks_for_every_runner_and_tells_push_consumers_when_it_opens_and_closes() {
        let board = Board::default();
        let schedule = ForcedScaleUp::new(Duration::from_secs(1000), Duration::from_secs(100), 0);
        board.publish_all(&index(schedule), |_| None);
        let key = RunnerKey::new("ci", "web");
        let mut version = board.subscribe_runner(&key).unwrap();
        version.borrow_and_update();

        let opened = board.refresh_forced(50);
        assert_eq!(opened.next, Some(100), "open until 100");
        assert!(version.has_changed().unwrap(), "the opening is pushed");
        let view = board.get(&key).unwrap();
        assert!(view.forced_scale_up);
        assert_eq!((view.desired_runners, view.value, view.demand), (4, 4, 0));
        assert_eq!(opened.changed, vec![view], "the opened runner is reported as served");
        version.borrow_and_update();
        let unchanged = board.refresh_forced(60);
        assert_eq!((unchanged.next, unchanged.changed.len()), (Some(100), 0));
        assert!(!version.has_changed().unwrap(), "nothing changed, nothing pushed");

        let closed = board.refresh_forced(100);
        assert_eq!(closed.next, Some(1000));
        assert!(version.has_changed().unwrap());
        let view = board.get(&key).unwrap();
        assert!(!view.forced_scale_up);
        assert_eq!(view.desired_runners, 0);
        assert_eq!(closed.changed, vec![view]);
    }

    #[test]
    fn counts_published_inside_a_forced_window_are_returned_as_served() {
        let board = Board::default();
        let index = index(ForcedScaleUp::new(Duration::from_secs(1000), Duration::from_secs(100), 0));
        board.publish_all(&index, |_| None);
        board.refresh_forced(50);
        let key = RunnerKey::new("ci", "web");
        let counts = Counts { queued: 1, in_progress: 0 };
        let published = board.publish([(&key, counts)]);
        assert_eq!(published.len(), 1);
        assert!(published[0].forced_scale_up);
        assert_eq!((published[0].demand, published[0].desired_runners), (1, 4));
        board.refresh_forced(100);
        let published = board.publish([(&key, Counts::default())]);
        assert_eq!((published[0].demand, published[0].desired_runners), (0, 0));
    }

    #[test]
    fn runners_without_a_schedule_are_never_forced_and_a_removed_schedule_closes_its_window() {
        let board = Board::default();
        board.publish_all(&index(ForcedScaleUp::new(Duration::from_secs(1000), Duration::from_secs(100), 0)), |_| None);
        board.refresh_forced(10);
        board.publish_all(&index(None), |_| None);
        assert_eq!(board.refresh_forced(20).next, None);
        assert!(!board.get(&RunnerKey::new("ci", "web")).unwrap().forced_scale_up);
    }

    #[test]
    fn a_runners_signal_ticks_for_its_own_changes_only_and_closes_once_it_is_removed() {
        let two = |max: u32| {
            RunnerIndex::new([
                Runner::new(RunnerKey::new("ci", "web"), "acme", "web", ["linux"], 0, max, ScaleFactor::Linear),
                Runner::new(RunnerKey::new("ci", "api"), "acme", "api", ["linux"], 0, 4, ScaleFactor::Linear),
            ])
        };
        let board = Board::default();
        board.publish_all(&two(4), |_| None);
        let (web, api) = (RunnerKey::new("ci", "web"), RunnerKey::new("ci", "api"));
        let mut web_signal = board.subscribe_runner(&web).unwrap();
        let mut api_signal = board.subscribe_runner(&api).unwrap();
        assert!(board.subscribe_runner(&RunnerKey::new("ci", "nope")).is_none());

        board.publish([(&web, Counts { queued: 1, in_progress: 0 })]);
        assert!(web_signal.has_changed().unwrap());
        assert!(!api_signal.has_changed().unwrap(), "another runner's delivery does not tick it");
        assert_eq!((board.activity(&web), board.activity(&api)), (Some(true), Some(false)));
        web_signal.borrow_and_update();

        board.publish_all(&two(9), |_| None);
        assert!(web_signal.has_changed().unwrap(), "its spec changed");
        assert!(!api_signal.has_changed().unwrap(), "republished unchanged");
        web_signal.borrow_and_update();

        board.publish_all(&index(None), |_| None);
        assert!(futures::executor::block_on(api_signal.changed()).is_ok(), "removed: one last tick");
        assert!(futures::executor::block_on(api_signal.changed()).is_err(), "then closed");
        assert_eq!(board.activity(&api), None);
    }

    #[test]
    fn a_namespace_is_read_without_the_others_and_a_runner_by_its_key() {
        let runners = [("ci", "a"), ("ci", "b"), ("cj", "a"), ("c", "z")].map(|(ns, name)| {
            Runner::new(RunnerKey::new(ns, name), "acme", name, ["linux"], 0, 4, ScaleFactor::Linear)
        });
        let index = RunnerIndex::new(runners);
        let board = Board::default();
        board.publish_all(&index, |key| Some(Counts { queued: u64::from(key.name == "b"), in_progress: 0 }));
        let names = |ns: &str| board.namespace(ns).into_iter().map(|v| (v.namespace, v.name)).collect::<Vec<_>>();
        assert_eq!(names("ci"), [("ci".to_string(), "a".to_string()), ("ci".to_string(), "b".to_string())]);
        assert_eq!(names("cj"), [("cj".to_string(), "a".to_string())]);
        assert!(names("nope").is_empty());
        assert_eq!(board.get(&RunnerKey::new("ci", "b")).unwrap().demand, 1);
        assert!(board.get(&RunnerKey::new("ci", "c")).is_none());
        assert_eq!(board.list().len(), 4);
    }

    #[test]
    fn counts_and_resync_findings_survive_a_new_runner_set() {
        let board = Board::default();
        let web = RunnerKey::new("ci", "web");
        board.publish_all(&index(None), |_| None);
        board.publish([(&web, Counts { queued: 2, in_progress: 1 })]);
        board.set_resync(&web, ResyncInfo { with_token: true, last_time: Some(0), last_drift: Some(1) });
        let api = Runner::new(RunnerKey::new("ci", "api"), "acme", "api", ["linux"], 0, 4, ScaleFactor::Linear);
        let web_runner = index(None).get(&web).unwrap().clone();
        board.publish_all(&RunnerIndex::new([api, web_runner]), |_| None);
        let view = board.get(&web).unwrap();
        assert_eq!((view.queued, view.in_progress, view.source, view.last_drift), (2, 1, "webhooks+github", Some(1)));
        assert_eq!(board.get(&RunnerKey::new("ci", "api")).unwrap().demand, 0);
    }

    #[test]
    fn a_signal_exists_only_while_someone_listens() {
        let board = Board::default();
        let web = RunnerKey::new("ci", "web");
        board.publish_all(&index(None), |_| None);
        assert_eq!(board.signals.read().unwrap().len(), 0, "no subscriber, no signal");
        let signal = board.subscribe_runner(&web).unwrap();
        let again = board.subscribe_runner(&web).unwrap();
        assert!(signal.same_channel(&again), "one signal per runner");
        drop((signal, again));
        board.publish_all(&index(None), |_| None);
        assert_eq!(board.signals.read().unwrap().len(), 0, "dropped once nobody listens");
        let mut late = board.subscribe_runner(&web).unwrap();
        board.publish([(&web, Counts { queued: 1, in_progress: 0 })]);
        assert!(late.has_changed().unwrap(), "a new subscriber is told too");
        late.borrow_and_update();
    }
}
