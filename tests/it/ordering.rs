//! Order and duplicates do not matter: any permutation of a trace, with any deliveries repeated,
//! ends in the same demand as the trace in order.

use std::collections::BTreeMap;

use gaa::demand::{
    Counts, DemandState, Job, JobEvent, JobStatus, RepoRef, Runner, RunnerIndex, RunnerKey, ScaleFactor,
};
use proptest::prelude::*;

const STATUSES: [JobStatus; 4] = [JobStatus::Waiting, JobStatus::Queued, JobStatus::InProgress, JobStatus::Completed];
const LABEL_SETS: [&[&str]; 4] = [&["self-hosted", "linux"], &["linux", "gpu"], &["self-hosted"], &["windows"]];
const REPOS: [&str; 2] = ["acme/api", "acme/web"];

fn index() -> RunnerIndex {
    let runner = |ns: &str, name: &str, repo: &str, labels: &[&str]| {
        Runner::new(RunnerKey::new(ns, name), "acme", repo, labels.iter().copied(), 0, 50, ScaleFactor::Linear)
    };
    RunnerIndex::new([
        runner("ci", "api-linux", "api", &["linux"]),
        runner("ci", "api-gpu", "api", &["linux", "gpu"]),
        runner("ci", "web", "web", &["linux"]),
        runner("other", "web", "web", &["linux"]),
    ])
}

/// One job's life as GitHub would send it: a forward path through the statuses.
fn job_trace() -> impl Strategy<Value = Vec<JobEvent>> {
    (any::<u64>(), 0..REPOS.len(), 0..LABEL_SETS.len(), proptest::collection::vec(any::<bool>(), 4), 1u32..3).prop_map(
        |(id, repo, labels, keep, attempt)| {
            let repo_ref = RepoRef::new(if repo == 0 { 1 } else { 2 }, REPOS[repo]);
            STATUSES
                .iter()
                .zip(keep)
                .filter(|(_, keep)| *keep)
                .map(|(status, _)| JobEvent::new(id, 7, attempt, repo_ref.clone(), *status, LABEL_SETS[labels].iter()))
                .collect()
        },
    )
}

fn final_counts(events: &[JobEvent]) -> Vec<(RunnerKey, u64, u64)> {
    let mut state = DemandState::new(index());
    for event in events {
        state.apply(event, 0);
    }
    let counts: BTreeMap<RunnerKey, Counts> =
        state.index().iter().map(|runner| (runner.key.clone(), state.counts(&runner.key))).collect();
    counts.into_iter().map(|(k, c)| (k, c.queued, c.in_progress)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_permutation_with_duplicates_gives_the_ordered_demand(
        jobs in proptest::collection::vec(job_trace(), 1..40),
        duplicates in proptest::collection::vec(any::<prop::sample::Index>(), 0..60),
        seed in any::<u64>(),
    ) {
        let ordered: Vec<JobEvent> = jobs.iter().flatten().cloned().collect();
        prop_assume!(!ordered.is_empty());
        let mut shuffled = ordered.clone();
        for index in &duplicates {
            shuffled.push(index.get(&ordered).clone());
        }
        // Fisher-Yates with a seeded xorshift: proptest shrinks the seed, so failures reproduce.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(final_counts(&shuffled), final_counts(&ordered));
    }
}

/// Deliveries of a few jobs, with replays: (delivery key, observation).
fn deliveries() -> impl Strategy<Value = Vec<(u64, JobEvent)>> {
    let one = (0u64..70, 0u64..4, 0..REPOS.len(), 0..STATUSES.len(), 0..LABEL_SETS.len(), 1u32..3, 0i64..3);
    proptest::collection::vec(one, 1..300).prop_map(|records| {
        records
            .into_iter()
            .map(|(delivery, id, repo, status, labels, attempt, since)| {
                let repo_ref = RepoRef::new(repo as u64 + 1, REPOS[repo]);
                let event = JobEvent::new(id, 7, attempt, repo_ref, STATUSES[status], LABEL_SETS[labels].iter())
                    .since((since > 0).then_some(since * 1000));
                (delivery, event)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The state keeps jobs in its own compact form; what it holds and which deliveries it
    /// refuses as replays must be exactly what plain `Job`s would hold and refuse.
    #[test]
    fn the_state_holds_and_refuses_exactly_what_plain_jobs_would(records in deliveries()) {
        let mut state = DemandState::new(index());
        let mut plain: BTreeMap<(String, u64), Job> = BTreeMap::new();
        for (now, (delivery, event)) in records.iter().enumerate() {
            let now = now as i64;
            let key = (event.repo.full_name.clone(), event.job_id);
            let expected_duplicate = plain.get(&key).is_some_and(|job| job.has_delivery(*delivery));
            let expected_change = match plain.get_mut(&key) {
                _ if expected_duplicate => false,
                Some(job) => job.merge(event, now),
                None => {
                    plain.insert(key.clone(), Job::from_event(event, now));
                    true
                }
            };
            if !expected_duplicate {
                plain.get_mut(&key).unwrap().remember_delivery(*delivery);
            }
            let applied = state.record(*delivery, event, now);
            prop_assert_eq!((applied.duplicate, applied.changed), (expected_duplicate, expected_change));
        }
        let held: BTreeMap<(String, u64), Job> =
            state.jobs().map(|job| ((job.repo.to_string(), job.id), job.to_job())).collect();
        prop_assert_eq!(&held, &plain);
        let mut rebuilt = DemandState::new(index());
        for job in plain.into_values() {
            rebuilt.restore(job);
        }
        for runner in index().iter() {
            prop_assert_eq!(rebuilt.counts(&runner.key), state.counts(&runner.key), "{}", runner.key);
        }
    }
}

#[test]
fn the_ordered_trace_itself_counts_only_unfinished_queued_and_running_jobs() {
    let repo = RepoRef::new(1, "acme/api");
    let events = [
        JobEvent::new(1, 1, 1, repo.clone(), JobStatus::Queued, ["linux"]),
        JobEvent::new(2, 1, 1, repo.clone(), JobStatus::Queued, ["linux"]),
        JobEvent::new(2, 1, 1, repo.clone(), JobStatus::InProgress, ["linux"]),
        JobEvent::new(3, 1, 1, repo.clone(), JobStatus::Queued, ["linux"]),
        JobEvent::new(3, 1, 1, repo.clone(), JobStatus::Completed, ["linux"]),
        JobEvent::new(4, 1, 1, repo, JobStatus::Waiting, ["linux"]),
    ];
    let counts = final_counts(&events);
    assert!(counts.contains(&(RunnerKey::new("ci", "api-linux"), 1, 1)), "{counts:?}");
}
