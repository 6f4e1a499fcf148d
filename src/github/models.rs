//! The parts of GitHub's Actions REST answers the reconciler reads.
//!
//! GitHub's own examples omit fields its schema marks required, and real answers carry `null`
//! where a list is expected, so every field defaults: a missing `id` reads as 0, which callers
//! treat as "no such object". Unknown fields are ignored. The types also serialize, to the same
//! shape, so the client can keep a slim copy of a page for conditional requests.

use serde::{Deserialize, Deserializer, Serialize};

/// One workflow run, from `GET /repos/{owner}/{repo}/actions/runs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRun {
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: u64,
    /// `queued`, `in_progress`, `waiting`, `requested`, `pending`, `completed`, …
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub conclusion: Option<String>,
    #[serde(default)]
    pub run_attempt: Option<u32>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// One job of a run, from `…/actions/runs/{run_id}/jobs` or `…/actions/jobs/{job_id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowJob {
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub run_id: u64,
    #[serde(default)]
    pub run_attempt: Option<u32>,
    /// `queued`, `in_progress`, `waiting`, `requested`, `pending`, `completed`.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub conclusion: Option<String>,
    /// The `runs-on` labels, as written in the workflow (case preserved).
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: Vec<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
    /// `null` until a runner picks the job up.
    #[serde(default)]
    pub runner_id: Option<u64>,
    #[serde(default)]
    pub runner_name: Option<String>,
    /// The group of the runner that took the job; `null` until one did.
    #[serde(default)]
    pub runner_group_name: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// The envelope of a page of runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRunList {
    #[serde(default, deserialize_with = "null_as_default")]
    pub total_count: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub workflow_runs: Vec<WorkflowRun>,
}

/// The envelope of a page of jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowJobList {
    #[serde(default, deserialize_with = "null_as_default")]
    pub total_count: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub jobs: Vec<WorkflowJob>,
}

impl WorkflowRun {
    /// Unix seconds of `created_at`, when present and RFC 3339.
    pub fn created_unix(&self) -> Option<i64> {
        unix_seconds(self.created_at.as_deref())
    }
}

impl WorkflowJob {
    /// Unix seconds of `created_at`, when present and RFC 3339.
    pub fn created_unix(&self) -> Option<i64> {
        unix_seconds(self.created_at.as_deref())
    }
}

fn unix_seconds(text: Option<&str>) -> Option<i64> {
    text?.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// `#[serde(default)]` only covers a missing field; this also reads an explicit `null` as the
/// default, which GitHub sends for lists and counts more often than its schema admits.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_job_from_the_documentation_decodes() {
        let job: WorkflowJob = serde_json::from_str(
            r#"{
              "id": 399444496, "run_id": 29679449, "run_url": "https://api.github.com/repos/octo-org/octo-repo/actions/runs/29679449",
              "node_id": "MDEyOldvcmtmbG93IEpvYjM5OTQ0NDQ5Ng==", "head_sha": "f83a356604ae3c5d03e1b46ef4d1ca77d64a90b0",
              "url": "https://api.github.com/repos/octo-org/octo-repo/actions/jobs/399444496",
              "html_url": "https://github.com/octo-org/octo-repo/runs/29679449/jobs/399444496",
              "status": "completed", "conclusion": "success",
              "started_at": "2020-01-20T17:42:40Z", "completed_at": "2020-01-20T17:44:39Z",
              "name": "build",
              "steps": [{"name": "Set up job", "status": "completed", "conclusion": "success", "number": 1,
                         "started_at": "2020-01-20T09:42:40.000-08:00", "completed_at": "2020-01-20T09:42:41.000-08:00"}],
              "check_run_url": "https://api.github.com/repos/octo-org/octo-repo/check-runs/399444496",
              "labels": ["self-hosted", "foo", "bar"],
              "runner_id": 1, "runner_name": "my runner", "runner_group_id": 2, "runner_group_name": "my runner group",
              "workflow_name": "CI", "head_branch": "main"
            }"#,
        )
        .unwrap();
        assert_eq!((job.id, job.run_id), (399_444_496, 29_679_449));
        assert_eq!(job.status.as_deref(), Some("completed"));
        assert_eq!(job.conclusion.as_deref(), Some("success"));
        assert_eq!(job.labels, ["self-hosted", "foo", "bar"]);
        assert_eq!((job.runner_id, job.runner_name.as_deref()), (Some(1), Some("my runner")));
        // The documentation's example has no `run_attempt` and no `created_at`.
        assert_eq!((job.run_attempt, job.created_at.as_deref()), (None, None));
        assert_eq!(job.started_at.as_deref(), Some("2020-01-20T17:42:40Z"));
        assert_eq!(job.completed_at.as_deref(), Some("2020-01-20T17:44:39Z"));
    }

    #[test]
    fn a_queued_job_with_nulls_and_gaps_decodes() {
        let job: WorkflowJob = serde_json::from_str(
            r#"{"id": 7, "status": "queued", "conclusion": null, "labels": null, "runner_id": null,
                "runner_name": null, "started_at": null, "created_at": "2026-01-01T00:00:10Z"}"#,
        )
        .unwrap();
        assert_eq!(job.id, 7);
        assert_eq!(job.run_id, 0);
        assert!(job.labels.is_empty());
        assert_eq!((job.runner_id, job.conclusion.as_deref()), (None, None));
        assert_eq!(job.created_unix(), Some(1_767_225_610));
        assert_eq!(job.started_at, None);
    }

    #[test]
    fn a_page_of_runs_keeps_only_what_we_read() {
        let page: WorkflowRunList = serde_json::from_str(
            r#"{"total_count": 2, "workflow_runs": [
                 {"id": 30433642, "name": "Build", "node_id": "MDEyOldvcmtmbG93IFJ1bjI2OTI4OQ==", "head_branch": "master",
                  "run_number": 562, "event": "push", "status": "queued", "conclusion": null, "workflow_id": 159038,
                  "run_attempt": 2, "created_at": "2020-01-22T19:33:08Z", "updated_at": "2020-01-22T19:33:08Z",
                  "pull_requests": [], "head_commit": {"id": "acb5820ced9479c074f688cc328bf03f341a511d", "message": "x"},
                  "repository": {"id": 1296269, "full_name": "octocat/Hello-World"}},
                 {"id": 30433643}
               ]}"#,
        )
        .unwrap();
        assert_eq!(page.total_count, 2);
        let [first, second] = page.workflow_runs.as_slice() else { panic!("two runs expected") };
        assert_eq!((first.id, first.status.as_deref(), first.run_attempt), (30_433_642, Some("queued"), Some(2)));
        assert_eq!(first.name.as_deref(), Some("Build"));
        assert_eq!(first.created_unix(), Some(1_579_721_588));
        assert_eq!(second, &WorkflowRun { id: 30_433_643, ..WorkflowRun::default() });
    }

    #[test]
    fn an_envelope_without_its_list_is_empty() {
        let runs: WorkflowRunList = serde_json::from_str(r#"{"total_count": 0}"#).unwrap();
        assert!(runs.workflow_runs.is_empty());
        let jobs: WorkflowJobList = serde_json::from_str(r#"{"jobs": null}"#).unwrap();
        assert_eq!(jobs, WorkflowJobList::default());
    }

    #[test]
    fn the_slim_copy_reads_back_the_same() {
        let page = WorkflowJobList {
            total_count: 1,
            jobs: vec![WorkflowJob {
                id: 5,
                run_id: 2,
                run_attempt: Some(1),
                status: Some("in_progress".into()),
                labels: vec!["self-hosted".into(), "Linux".into()],
                runner_id: Some(9),
                ..WorkflowJob::default()
            }],
        };
        let bytes = serde_json::to_vec(&page).unwrap();
        assert_eq!(serde_json::from_slice::<WorkflowJobList>(&bytes).unwrap(), page);
    }

    #[test]
    fn a_wrongly_typed_field_is_an_error_not_a_silent_default() {
        assert!(serde_json::from_str::<WorkflowJob>(r#"{"id": "seven"}"#).is_err());
    }
}
