//! Which repositories an organisation's runner groups admit, as GitHub's settings say: the
//! groups (`GET /orgs/{org}/actions/runner-groups`), the repositories of a group open to selected
//! ones (`GET /orgs/{org}/actions/runner-groups/{id}/repositories`), and the organisation's
//! public repositories (`GET /orgs/{org}/repos?type=public`) for groups closed to them. Every
//! listing reads all pages with the client's conditional requests, so settings that did not
//! change cost no credit.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::client::{Fetched, GitHubClient, InstallationToken, PER_PAGE};
use super::error::GitHubError;
use super::org::{InstallationRepositoryPage, Repository, RepositoryPage, checked_organisation};
use super::runners::{RunnerGroup, RunnerGroupPage};
use super::token::Token;
use crate::demand::GroupAccess;

/// A runner group open to the organisation's repositories GitHub lists for it.
const SELECTED: &str = "selected";
/// A runner group open to private (and internal) repositories only.
const PRIVATE: &str = "private";

impl GitHubClient {
    /// Every runner group of organisation `org` (its own and those its enterprise shares), all
    /// pages.
    pub async fn list_runner_groups(&self, token: &Token, org: &str) -> Result<Fetched<Vec<RunnerGroup>>, GitHubError> {
        let org = checked_organisation(org)?;
        let url = self.url(&format!("/orgs/{org}/actions/runner-groups?per_page={PER_PAGE}"))?;
        self.list::<RunnerGroupPage>(token, "runner_groups", url).await
    }

    /// The repositories runner group `group` of `org` is open to (for a group whose visibility
    /// is `selected`), all pages.
    pub async fn list_group_repos(
        &self,
        token: &Token,
        org: &str,
        group: u64,
    ) -> Result<Fetched<Vec<Repository>>, GitHubError> {
        let org = checked_organisation(org)?;
        let url = self.url(&format!("/orgs/{org}/actions/runner-groups/{group}/repositories?per_page={PER_PAGE}"))?;
        self.list::<InstallationRepositoryPage>(token, "runner_group_repos", url).await
    }

    /// A token of App installation `installation` (with the App's `jwt`) that reads the
    /// organisation's runner groups and repositories and nothing else: the resync's own
    /// installation token reads Actions only. `None` when the installation is gone.
    pub async fn create_group_reader_token(
        &self,
        jwt: &Token,
        installation: u64,
    ) -> Result<Fetched<Option<InstallationToken>>, GitHubError> {
        let permissions = serde_json::json!({"organization_self_hosted_runners": "read", "metadata": "read"});
        self.mint_installation_token(jwt, installation, permissions).await
    }

    /// The public repositories of organisation `org`, all pages.
    pub async fn list_public_repos(&self, token: &Token, org: &str) -> Result<Fetched<Vec<Repository>>, GitHubError> {
        let org = checked_organisation(org)?;
        let url = self.url(&format!("/orgs/{org}/repos?type=public&per_page={PER_PAGE}"))?;
        self.list::<RepositoryPage>(token, "org_public_repos", url).await
    }
}

/// Whether reading `group`'s access needs its list of selected repositories.
pub fn needs_repositories(group: &RunnerGroup) -> bool {
    group.visibility.eq_ignore_ascii_case(SELECTED)
}

/// Whether reading `group`'s access needs the organisation's public repositories: the group is
/// closed to them.
pub fn needs_public_repositories(group: &RunnerGroup) -> bool {
    group.visibility.eq_ignore_ascii_case(PRIVATE) || group.allows_public_repositories == Some(false)
}

/// The repositories of `owner` (lower-cased) that `group` admits.
///
/// - visibility `selected`: the repositories in `selected`; `all` or `private`: every one;
/// - closed to public repositories (visibility `private`, or `allows_public_repositories`
///   false): not those in `public`;
/// - restricted to selected workflows: only the repositories those workflows live in (a
///   delivery does not say which workflow file a job comes from, so every job of such a
///   repository is admitted).
///
/// A list that was not read (`None`) restricts nothing: what is not known admits.
pub fn access(
    owner: &str,
    group: &RunnerGroup,
    selected: Option<&[Repository]>,
    public: Option<&BTreeSet<String>>,
) -> GroupAccess {
    let prefix = format!("{owner}/");
    let names = |repos: &[Repository]| -> BTreeSet<String> {
        repos.iter().map(|r| r.full_name.to_ascii_lowercase()).filter(|name| name.starts_with(&prefix)).collect()
    };
    let mut only: Option<BTreeSet<String>> = match selected {
        Some(repos) if needs_repositories(group) => Some(names(repos)),
        _ => None,
    };
    if group.restricted_to_workflows {
        // `owner/repo/.github/workflows/file.yml@ref`
        let workflows: BTreeSet<String> = group
            .selected_workflows
            .iter()
            .filter_map(|workflow| {
                let mut parts = workflow.splitn(3, '/');
                Some(format!("{}/{}", parts.next()?, parts.next()?).to_ascii_lowercase())
            })
            .filter(|name| name.starts_with(&prefix))
            .collect();
        only = Some(match only {
            Some(repos) => repos.intersection(&workflows).cloned().collect(),
            None => workflows,
        });
    }
    let closed = public.filter(|_| needs_public_repositories(group));
    match (only, closed) {
        (Some(mut repos), closed) => {
            if let Some(public) = closed {
                repos.retain(|repo| !public.contains(repo));
            }
            GroupAccess::Only(Arc::new(repos))
        }
        (None, Some(public)) if !public.is_empty() => GroupAccess::Except(Arc::new(public.clone())),
        (None, _) => GroupAccess::Every,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(visibility: &str, public: Option<bool>) -> RunnerGroup {
        RunnerGroup {
            id: 2,
            name: "builders".into(),
            visibility: visibility.into(),
            allows_public_repositories: public,
            ..RunnerGroup::default()
        }
    }

    fn repos(names: &[&str]) -> Vec<Repository> {
        names.iter().map(|n| Repository { id: 1, full_name: (*n).into(), ..Repository::default() }).collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_string()).collect()
    }

    fn admitted(access: &GroupAccess, candidates: &[&str]) -> Vec<String> {
        candidates.iter().filter(|r| access.admits(r)).map(|r| (*r).to_string()).collect()
    }

    const REPOS: [&str; 4] = ["acme/api", "acme/web", "acme/site", "acme/docs"];

    #[test]
    fn a_group_open_to_all_repositories_admits_every_one_and_public_ones_only_when_it_allows_them() {
        let public = set(&["acme/site"]);
        let open = access("acme", &group("all", Some(true)), None, Some(&public));
        assert_eq!(open, GroupAccess::Every);
        let closed = access("acme", &group("all", Some(false)), None, Some(&public));
        assert_eq!(admitted(&closed, &REPOS), ["acme/api", "acme/web", "acme/docs"]);
        let private = access("acme", &group("private", Some(true)), None, Some(&public));
        assert_eq!(admitted(&private, &REPOS), ["acme/api", "acme/web", "acme/docs"], "visibility private");
        // An organisation without public repositories, and a public list not read, restrict nothing.
        assert_eq!(access("acme", &group("all", Some(false)), None, Some(&set(&[]))), GroupAccess::Every);
        assert_eq!(access("acme", &group("all", Some(false)), None, None), GroupAccess::Every);
        // A GitHub that does not say whether public repositories are allowed restricts nothing.
        assert!(!needs_public_repositories(&group("all", None)));
    }

    #[test]
    fn a_group_open_to_selected_repositories_admits_those_of_its_organisation_only() {
        let selected = repos(&["Acme/API", "acme/site", "other/api"]);
        let only = access("acme", &group("Selected", Some(true)), Some(&selected), None);
        assert_eq!(admitted(&only, &REPOS), ["acme/api", "acme/site"]);
        assert!(!only.admits("other/api"), "another organisation's repository");
        let public = set(&["acme/site"]);
        let closed = access("acme", &group("selected", Some(false)), Some(&selected), Some(&public));
        assert_eq!(admitted(&closed, &REPOS), ["acme/api"]);
        let none = access("acme", &group("selected", Some(true)), Some(&[]), None);
        assert_eq!(admitted(&none, &REPOS), Vec::<String>::new(), "a group open to no repository admits none");
        // Its list not read: every repository, rather than a job that never gets a runner.
        assert_eq!(access("acme", &group("selected", Some(true)), None, None), GroupAccess::Every);
        assert!(needs_repositories(&group("selected", None)) && !needs_repositories(&group("all", None)));
    }

    #[test]
    fn a_group_restricted_to_workflows_admits_the_repositories_they_live_in() {
        let mut restricted = group("all", Some(true));
        restricted.restricted_to_workflows = true;
        restricted.selected_workflows = vec![
            "acme/web/.github/workflows/deploy.yml@refs/heads/main".into(),
            "Acme/Docs/.github/workflows/publish.yml@v2".into(),
            "other/web/.github/workflows/deploy.yml@main".into(),
            "nonsense".into(),
        ];
        let only = access("acme", &restricted, None, None);
        assert_eq!(admitted(&only, &REPOS), ["acme/web", "acme/docs"]);
        restricted.visibility = "selected".into();
        let both = access("acme", &restricted, Some(&repos(&["acme/api", "acme/web"])), None);
        assert_eq!(admitted(&both, &REPOS), ["acme/web"], "selected repositories and workflows both apply");
    }
}
