//! The shared value (`GAR1`/`GAR2`) from structured values: whatever jobs a replica holds encode
//! and decode to the same jobs, in whichever format fits, and merging them is a join.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Result, Unstructured};
use gaa::demand::JobStatus;
use gaa::demand::repo_jobs::{RepoJobs, SharedJob};
use libfuzzer_sys::fuzz_target;

const STATUSES: [JobStatus; 4] = [JobStatus::Waiting, JobStatus::Queued, JobStatus::InProgress, JobStatus::Completed];

/// A label: usually short, sometimes longer than the compact format's 255 bytes.
fn label(u: &mut Unstructured<'_>) -> Result<String> {
    let text: String = u.arbitrary()?;
    Ok(if u.ratio(1, 16)? { text.repeat(usize::from(u.int_in_range(2..=300u16)?)) } else { text })
}

/// A label set: usually a few, sometimes more than the compact format's 255.
fn labels(u: &mut Unstructured<'_>) -> Result<Vec<String>> {
    if u.ratio(1, 32)? {
        let prefix = label(u)?;
        let count = u.int_in_range(250..=300usize)?;
        return Ok((0..count).map(|i| format!("{prefix}{i}")).collect());
    }
    let count = u.int_in_range(0..=6usize)?;
    (0..count).map(|_| label(u)).collect()
}

fn job(u: &mut Unstructured<'_>, sets: &[Vec<String>]) -> Result<SharedJob> {
    let labels = match sets {
        [] => labels(u)?,
        _ if u.ratio(1, 8)? => labels(u)?,
        _ => u.choose(sets)?.clone(),
    };
    Ok(SharedJob { status: *u.choose(&STATUSES)?, labels, stamp_minutes: u.arbitrary()? })
}

/// Jobs of one repository. Label sets repeat between jobs, as runners' labels do.
fn repo_jobs(u: &mut Unstructured<'_>) -> Result<RepoJobs> {
    let sets: Vec<Vec<String>> = (0..u.int_in_range(0..=4usize)?).map(|_| labels(u)).collect::<Result<_>>()?;
    let mut jobs = BTreeMap::new();
    for _ in 0..u.arbitrary_len::<[u8; 12]>()? {
        // Ids near each other, as GitHub hands them out, and anywhere.
        let id = if u.arbitrary()? { u64::from(u.arbitrary::<u8>()?) } else { u.arbitrary()? };
        jobs.insert(id, job(u, &sets)?);
    }
    Ok(RepoJobs { generation: u.arbitrary()?, jobs })
}

#[derive(Debug)]
struct Input {
    left: RepoJobs,
    right: RepoJobs,
    limit: u16,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Self { left: repo_jobs(u)?, right: repo_jobs(u)?, limit: u.arbitrary()? })
    }
}

fn round_trips(value: &RepoJobs) {
    let encoded = value.encode();
    assert_eq!(RepoJobs::decode(&encoded).as_ref(), Ok(value));
    let fits_compact =
        value.jobs.values().all(|job| job.labels.len() <= 255 && job.labels.iter().all(|label| label.len() <= 255));
    if fits_compact && value.jobs.len() <= 65_535 {
        assert!(encoded.starts_with(b"GAR1"), "a value that fits is written in the compact format");
    }
}

fuzz_target!(|input: Input| {
    let Input { left, right, limit } = input;
    round_trips(&left);
    round_trips(&right);

    // Merging is a join: the same jobs whichever side merges into which, and merging again
    // changes nothing.
    let mut one = left.clone();
    one.merge(right.jobs.iter().map(|(id, job)| (*id, job)));
    let mut other = right.clone();
    other.merge(left.jobs.iter().map(|(id, job)| (*id, job)));
    assert_eq!(one.jobs, other.jobs);
    assert!(!one.merge(right.jobs.iter().map(|(id, job)| (*id, job))), "merging what is known changes nothing");
    assert!(!one.merge(left.jobs.iter().map(|(id, job)| (*id, job))), "merging what is known changes nothing");
    round_trips(&one);

    // Shrinking drops finished jobs only, until the value fits or none is left.
    let limit = usize::from(limit);
    let mut shrunk = one.clone();
    let dropped = shrunk.shrink_to(limit);
    assert_eq!(shrunk.jobs.len() + dropped, one.jobs.len());
    for (id, job) in &one.jobs {
        if job.status != JobStatus::Completed {
            assert_eq!(shrunk.jobs.get(id), Some(job), "open jobs are never dropped");
        }
    }
    let finished_left = shrunk.jobs.values().any(|job| job.status == JobStatus::Completed);
    assert!(shrunk.encode().len() <= limit || !finished_left, "{} bytes over {limit}", shrunk.encode().len());
    if dropped > 0 {
        assert!(one.encode().len() > limit);
    }
    round_trips(&shrunk);
});
