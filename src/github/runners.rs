//! Self-hosted runner registration: just-in-time configurations for ephemeral runners
//! (`POST …/actions/runners/generate-jitconfig`), the runners registered (`GET …/actions/runners`),
//! their removal (`DELETE …/actions/runners/{id}`), and an organisation's runner groups
//! (`GET /orgs/{org}/actions/runner-groups`), for a repository's runners or an organisation's.
//!
//! Permissions: a repository's runners need *Administration: read and write* (fine-grained;
//! `repo` for a classic token), an organisation's *Self-hosted runners: read and write*
//! (`admin:org`); a GitHub App's installation token needs the same.
//!
//! Minting is not idempotent: when it times out, GitHub may have registered the runner anyway, and
//! minting again under the same name answers [`GitHubError::Conflict`]. The registration is then
//! in [`GitHubClient::list_runners`], offline, for [`GitHubClient::delete_runner`] to remove.

use std::fmt;

use secrecy::SecretString;
use secrecy::zeroize::Zeroizing;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::client::{Fetched, GitHubClient, InstallationToken, PER_PAGE, Page, Sent, checked_repository};
use super::error::GitHubError;
use super::org::checked_organisation;
use super::token::Token;

/// The runner group of a repository's runners, and the `Default` group every organisation has.
pub const DEFAULT_RUNNER_GROUP_ID: u64 = 1;

/// Whose runners: a repository's, or an organisation's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RunnerScope {
    Repository { owner: String, repo: String },
    Organization { org: String },
}

impl RunnerScope {
    pub fn repository(owner: impl Into<String>, repo: impl Into<String>) -> Self {
        Self::Repository { owner: owner.into(), repo: repo.into() }
    }

    pub fn organization(org: impl Into<String>) -> Self {
        Self::Organization { org: org.into() }
    }

    /// `/repos/{owner}/{repo}` or `/orgs/{org}`, once the names are checked safe for a URL path.
    pub fn api_path(&self) -> Result<String, GitHubError> {
        match self {
            Self::Repository { owner, repo } => {
                Ok(format!("/repos/{}", checked_repository(&format!("{owner}/{repo}"))?))
            }
            Self::Organization { org } => Ok(format!("/orgs/{}", checked_organisation(org)?)),
        }
    }
}

/// `acme/api`, or `organisation acme`.
impl fmt::Display for RunnerScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Repository { owner, repo } => write!(f, "{owner}/{repo}"),
            Self::Organization { org } => write!(f, "organisation {org}"),
        }
    }
}

/// A just-in-time runner GitHub registered, and the configuration its one start needs
/// (`./run.sh --jitconfig …`). Neither `Debug` nor any error shows the configuration: it lets
/// whoever holds it take a job.
#[derive(Clone)]
pub struct JitConfig {
    pub runner_id: u64,
    pub name: String,
    /// The labels GitHub registered the runner with.
    pub labels: Vec<String>,
    pub encoded_jit_config: SecretString,
}

impl fmt::Debug for JitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JitConfig")
            .field("runner_id", &self.runner_id)
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("encoded_jit_config", &"[redacted]")
            .finish()
    }
}

/// A runner's connection as GitHub reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerStatus {
    Online,
    Offline,
    /// Anything GitHub may add.
    #[default]
    #[serde(other)]
    Unknown,
}

/// A label of a runner: `read-only` ones GitHub gives (`self-hosted`, the OS, the architecture),
/// `custom` ones it was registered with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerLabel {
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// A self-hosted runner as `GET …/actions/runners` lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfHostedRunner {
    pub id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub status: RunnerStatus,
    /// Running a job: GitHub will not delete it.
    #[serde(default)]
    pub busy: bool,
    #[serde(default)]
    pub labels: Vec<RunnerLabel>,
}

impl SelfHostedRunner {
    pub fn label_names(&self) -> impl Iterator<Item = &str> {
        self.labels.iter().map(|l| l.name.as_str())
    }
}

/// A page of `GET …/actions/runners`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerPage {
    #[serde(default)]
    pub total_count: u64,
    #[serde(default)]
    pub runners: Vec<SelfHostedRunner>,
}

impl Page for RunnerPage {
    type Item = SelfHostedRunner;
    fn into_items(self) -> Vec<SelfHostedRunner> {
        self.runners
    }
    fn id(item: &SelfHostedRunner) -> u64 {
        item.id
    }
}

/// An organisation's runner group, the fields we read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerGroup {
    pub id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub default: bool,
    /// `all`, `selected` (the repositories GitHub lists for the group) or `private`.
    #[serde(default)]
    pub visibility: String,
    /// Whether public repositories may use the group's runners (not every GitHub says).
    #[serde(default)]
    pub allows_public_repositories: Option<bool>,
    #[serde(default)]
    pub restricted_to_workflows: bool,
    /// `owner/repo/.github/workflows/file.yml@ref`, when restricted to workflows.
    #[serde(default)]
    pub selected_workflows: Vec<String>,
}

/// A page of `GET /orgs/{org}/actions/runner-groups`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerGroupPage {
    #[serde(default)]
    pub total_count: u64,
    #[serde(default)]
    pub runner_groups: Vec<RunnerGroup>,
}

impl Page for RunnerGroupPage {
    type Item = RunnerGroup;
    fn into_items(self) -> Vec<RunnerGroup> {
        self.runner_groups
    }
    fn id(item: &RunnerGroup) -> u64 {
        item.id
    }
}

#[derive(Serialize)]
struct JitRequest<'a> {
    name: &'a str,
    runner_group_id: u64,
    labels: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    work_folder: Option<&'a str>,
}

/// GitHub's 201 to generate-jitconfig.
#[derive(Deserialize)]
struct JitAnswer {
    runner: SelfHostedRunner,
    encoded_jit_config: String,
}

impl JitAnswer {
    fn into_config(self) -> Result<JitConfig, GitHubError> {
        if self.runner.id == 0 || self.encoded_jit_config.is_empty() {
            return Err(GitHubError::Decode("a JIT configuration without its runner id or configuration".into()));
        }
        let labels = self.runner.label_names().map(str::to_string).collect();
        Ok(JitConfig {
            runner_id: self.runner.id,
            name: self.runner.name,
            labels,
            encoded_jit_config: SecretString::from(self.encoded_jit_config),
        })
    }
}

/// GitHub's 201 to generate-jitconfig. A decoding error says where, never what: serde quotes
/// the strings it did not expect, and this answer holds a credential.
fn decode_jit_answer(body: &[u8]) -> Result<JitAnswer, GitHubError> {
    serde_json::from_slice(body)
        .map_err(|e| GitHubError::Decode(format!("generate-jitconfig answer, line {} column {}", e.line(), e.column())))
}

/// The group named `name` among `groups`: exactly so if one is, else ignoring ASCII case
/// (GitHub's group names are case-insensitive).
fn group_named(groups: &[RunnerGroup], name: &str) -> Option<u64> {
    find_group(groups, name).map(|g| g.id)
}

/// The group named `name`: exactly, else ignoring case.
pub fn find_group<'a>(groups: &'a [RunnerGroup], name: &str) -> Option<&'a RunnerGroup> {
    let exact = groups.iter().find(|g| g.name == name);
    exact.or_else(|| groups.iter().find(|g| g.name.eq_ignore_ascii_case(name)))
}

impl GitHubClient {
    /// Registers just-in-time runner `name` in `scope` (in group `runner_group_id`:
    /// [`DEFAULT_RUNNER_GROUP_ID`] for a repository) with `labels` (1 to 100 of them), and
    /// returns its one-time configuration. `work_folder` defaults to GitHub's `_work`.
    ///
    /// [`GitHubError::Conflict`] when a runner of that name is registered already;
    /// [`GitHubError::Unprocessable`] when GitHub finds the request invalid (name, labels);
    /// [`GitHubError::NotFound`] when the repository, organisation or group is unknown to the
    /// token; [`GitHubError::Forbidden`] without the permission (or for a group not ours).
    pub async fn generate_jitconfig(
        &self,
        token: &Token,
        scope: &RunnerScope,
        name: &str,
        runner_group_id: u64,
        labels: &[String],
        work_folder: Option<&str>,
    ) -> Result<JitConfig, GitHubError> {
        let url = self.url(&format!("{}/actions/runners/generate-jitconfig", scope.api_path()?))?;
        let body = JitRequest { name, runner_group_id, labels, work_folder };
        let mut fetched = Fetched::cost_only(());
        match self.send(token, "generate_jitconfig", self.http().post(url).json(&body), &mut fetched).await? {
            Sent::Done { body } => {
                // The answer holds the configuration: zeroed once decoded.
                let body = Zeroizing::new(Vec::from(body));
                decode_jit_answer(&body)?.into_config()
            }
            Sent::Refused { status, message } => Err(refusal(status.as_u16(), message)),
        }
    }

    /// Every self-hosted runner registered in `scope`, all pages, each once; revalidated for free
    /// when nothing changed.
    pub async fn list_runners(
        &self,
        token: &Token,
        scope: &RunnerScope,
    ) -> Result<Fetched<Vec<SelfHostedRunner>>, GitHubError> {
        let url = self.url(&format!("{}/actions/runners?per_page={PER_PAGE}", scope.api_path()?))?;
        self.list::<RunnerPage>(token, "runners", url).await
    }

    /// The runner registered in `scope` as `name` (GitHub's `name` filter of the runner list),
    /// for instance the registration a timed-out mint left behind ([`GitHubError::Conflict`]).
    pub async fn runner_named(
        &self,
        token: &Token,
        scope: &RunnerScope,
        name: &str,
    ) -> Result<Fetched<Option<SelfHostedRunner>>, GitHubError> {
        let query = form_urlencoded::Serializer::new(String::new()).append_pair("name", name).finish();
        let url = self.url(&format!("{}/actions/runners?{query}&per_page={PER_PAGE}", scope.api_path()?))?;
        let listed = self.list::<RunnerPage>(token, "runners", url).await?;
        let found = listed.value.iter().find(|r| r.name.eq_ignore_ascii_case(name)).cloned();
        Ok(Fetched {
            value: found,
            requests: listed.requests,
            not_modified: listed.not_modified,
            credits: listed.credits,
        })
    }

    /// Removes runner `runner_id` from `scope`: `true` when GitHub removed it, `false` when it
    /// was gone already. [`GitHubError::RunnerBusy`] while it runs a job (GitHub's 422).
    pub async fn delete_runner(&self, token: &Token, scope: &RunnerScope, runner_id: u64) -> Result<bool, GitHubError> {
        let url = self.url(&format!("{}/actions/runners/{runner_id}", scope.api_path()?))?;
        let mut fetched = Fetched::cost_only(());
        match self.send(token, "delete_runner", self.http().delete(url), &mut fetched).await? {
            Sent::Done { .. } => Ok(true),
            Sent::Refused { status, .. } if status.as_u16() == 404 => Ok(false),
            Sent::Refused { status, message } if status.as_u16() == 422 => {
                Err(GitHubError::RunnerBusy { runner_id, message })
            }
            Sent::Refused { status, message } => Err(refusal(status.as_u16(), message)),
        }
    }

    /// A new token of installation `installation` that may register and remove runners in
    /// `scope` and nothing else (repository *Administration: write*, or the organisation's
    /// *Self-hosted runners: write*), minted with the App's JWT; `None` when GitHub knows no such
    /// installation of the App. [`GitHubError::Unprocessable`] when the App was not granted the
    /// permission.
    pub async fn create_runner_installation_token(
        &self,
        jwt: &Token,
        installation: u64,
        scope: &RunnerScope,
    ) -> Result<Fetched<Option<InstallationToken>>, GitHubError> {
        let permissions = match scope {
            RunnerScope::Repository { .. } => json!({"administration": "write", "metadata": "read"}),
            RunnerScope::Organization { .. } => json!({"organization_self_hosted_runners": "write"}),
        };
        self.mint_installation_token(jwt, installation, permissions).await
    }

    /// The id of organisation `org`'s runner group `name` (all pages read); `None` when it has
    /// none of that name. A repository's runners use [`DEFAULT_RUNNER_GROUP_ID`].
    pub async fn runner_group_id(&self, token: &Token, org: &str, name: &str) -> Result<Option<u64>, GitHubError> {
        let org = checked_organisation(org)?;
        let url = self.url(&format!("/orgs/{org}/actions/runner-groups?per_page={PER_PAGE}"))?;
        let groups = self.list::<RunnerGroupPage>(token, "runner_groups", url).await?;
        Ok(group_named(&groups.value, name))
    }
}

/// The error of a 404, 409 or 422 that means nothing particular to the endpoint.
fn refusal(status: u16, message: String) -> GitHubError {
    match status {
        404 => GitHubError::NotFound,
        409 => GitHubError::Conflict { message },
        422 => GitHubError::Unprocessable { message },
        status => GitHubError::Unexpected { status },
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn a_scope_names_its_api_path_once_its_names_are_safe() {
        assert_eq!(RunnerScope::repository("acme", "api.rs").api_path(), Ok("/repos/acme/api.rs".into()));
        assert_eq!(RunnerScope::organization("acme-corp").api_path(), Ok("/orgs/acme-corp".into()));
        for (owner, repo) in [("acme", ""), ("", "api"), ("acme", "a/b"), ("acme", ".."), ("a b", "api")] {
            let refused = RunnerScope::repository(owner, repo).api_path();
            assert!(matches!(refused, Err(GitHubError::InvalidRepository(_))), "{owner}/{repo}");
        }
        for org in ["", "..", "acme/api", "a?b"] {
            assert!(matches!(RunnerScope::organization(org).api_path(), Err(GitHubError::InvalidOrganisation(_))));
        }
        assert_eq!(RunnerScope::repository("acme", "api").to_string(), "acme/api");
        assert_eq!(RunnerScope::organization("acme").to_string(), "organisation acme");
    }

    #[test]
    fn a_jit_answer_decodes_and_its_configuration_never_prints() {
        let answer: JitAnswer = serde_json::from_str(
            r#"{"runner": {"id": 23, "name": "New runner", "os": "unknown", "status": "offline", "busy": false,
                 "labels": [{"id": 5, "name": "self-hosted", "type": "read-only"},
                            {"id": 7, "name": "gpu", "type": "custom"}]},
                "encoded_jit_config": "abc123SECRETxyz"}"#,
        )
        .unwrap();
        let config = answer.into_config().unwrap();
        assert_eq!((config.runner_id, config.name.as_str()), (23, "New runner"));
        assert_eq!(config.labels, ["self-hosted", "gpu"]);
        assert_eq!(config.encoded_jit_config.expose_secret(), "abc123SECRETxyz");
        let shown = format!("{config:?}");
        assert!(!shown.contains("SECRET") && shown.contains("redacted") && shown.contains("23"), "{shown}");
        let empty = decode_jit_answer(br#"{"runner": {"id": 1}, "encoded_jit_config": ""}"#).unwrap();
        assert!(matches!(empty.into_config(), Err(GitHubError::Decode(_))));
        // A malformed answer is described by position only, never by what it held.
        let Err(malformed) = decode_jit_answer(br#"{"runner": {"id": 1}, "encoded_jit_config": ["abcSECRET"]}"#) else {
            panic!("an array is no configuration")
        };
        let Err(odd_id) = decode_jit_answer(br#"{"runner": {"id": "abcSECRET"}, "encoded_jit_config": "x"}"#) else {
            panic!("a string is no id")
        };
        for error in [malformed, odd_id] {
            assert!(matches!(&error, GitHubError::Decode(_)) && !error.to_string().contains("SECRET"), "{error}");
        }
    }

    #[test]
    fn the_request_body_is_what_github_documents() {
        let labels = vec!["linux".to_string(), "gpu".to_string()];
        let body = JitRequest { name: "ci-linux-abc12", runner_group_id: 1, labels: &labels, work_folder: None };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"name": "ci-linux-abc12", "runner_group_id": 1, "labels": ["linux", "gpu"]})
        );
        let body = JitRequest { work_folder: Some("_work"), ..body };
        assert_eq!(serde_json::to_value(&body).unwrap()["work_folder"], "_work");
    }

    #[test]
    fn a_runner_list_decodes_what_github_sends_and_survives_the_page_cache() {
        let page: RunnerPage = serde_json::from_str(
            r#"{"total_count": 2, "runners": [
                {"id": 23, "name": "MBP", "os": "macos", "status": "online", "busy": true, "ephemeral": false,
                 "labels": [{"id": 5, "name": "self-hosted", "type": "read-only"}]},
                {"id": 24, "name": "iMac", "os": "macos", "status": "offline", "busy": false, "labels": []},
                {"id": 25, "name": "new", "status": "starting"}]}"#,
        )
        .unwrap();
        assert_eq!(page.runners[0].status, RunnerStatus::Online);
        assert!(page.runners[0].busy);
        assert_eq!(page.runners[0].label_names().collect::<Vec<_>>(), ["self-hosted"]);
        assert_eq!(page.runners[1].status, RunnerStatus::Offline);
        assert_eq!(page.runners[2].status, RunnerStatus::Unknown, "a status GitHub may add later");
        // The client keeps pages re-serialized from these models and decodes them on a 304.
        let kept: RunnerPage = serde_json::from_slice(&serde_json::to_vec(&page).unwrap()).unwrap();
        assert_eq!(kept, page);
        assert_eq!(kept.into_items().iter().map(|r| r.id).collect::<Vec<_>>(), [23, 24, 25]);
    }

    #[test]
    fn a_group_is_found_by_its_name_exactly_first_then_ignoring_case() {
        let group = |id, name: &str| RunnerGroup { id, name: name.into(), default: id == 1, ..RunnerGroup::default() };
        let groups = [group(1, "Default"), group(4, "GPU"), group(5, "gpu")];
        assert_eq!(group_named(&groups, "Default"), Some(1));
        assert_eq!(group_named(&groups, "default"), Some(1));
        assert_eq!(group_named(&groups, "gpu"), Some(5));
        assert_eq!(group_named(&groups, "GPU"), Some(4));
        assert_eq!(group_named(&groups, "arm"), None);
    }

    #[test]
    fn refusals_become_the_errors_their_status_means() {
        assert_eq!(refusal(404, "Not Found".into()), GitHubError::NotFound);
        assert_eq!(refusal(409, "taken".into()), GitHubError::Conflict { message: "taken".into() });
        assert_eq!(refusal(422, "bad".into()), GitHubError::Unprocessable { message: "bad".into() });
        assert_eq!(GitHubError::RunnerBusy { runner_id: 3, message: String::new() }.category(), "runner_busy");
    }
}
