//! What an organisation runner's resync needs to know beyond one repository: the repositories of
//! an organisation (`GET /orgs/{org}/repos`) or of an App installation
//! (`GET /installation/repositories`), and the installation of an App on an organisation
//! (`GET /orgs/{org}/installation`). Every listing reads all pages with the client's conditional
//! requests, so an unchanged organisation costs no credit.

use serde::{Deserialize, Serialize};

use super::client::{Fetched, GitHubClient, PER_PAGE, Page, decode};
use super::error::GitHubError;
use super::token::Token;

/// A repository as the listings show it, the fields the resync reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    #[serde(default)]
    pub id: u64,
    /// `owner/name`.
    #[serde(default)]
    pub full_name: String,
    /// Archived repositories run no workflows.
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub disabled: bool,
}

/// A page of `GET /orgs/{org}/repos`: a bare array.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RepositoryPage(pub Vec<Repository>);

/// A page of `GET /installation/repositories`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallationRepositoryPage {
    #[serde(default)]
    pub total_count: u64,
    #[serde(default)]
    pub repositories: Vec<Repository>,
}

impl Page for RepositoryPage {
    type Item = Repository;
    fn into_items(self) -> Vec<Repository> {
        self.0
    }
    fn id(item: &Repository) -> u64 {
        item.id
    }
}

impl Page for InstallationRepositoryPage {
    type Item = Repository;
    fn into_items(self) -> Vec<Repository> {
        self.repositories
    }
    fn id(item: &Repository) -> u64 {
        item.id
    }
}

/// `org` with GitHub's login characters only, so it is safe in a URL path.
pub(super) fn checked_organisation(org: &str) -> Result<&str, GitHubError> {
    let valid = !org.is_empty()
        && org != "."
        && org != ".."
        && org.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid { Ok(org) } else { Err(GitHubError::InvalidOrganisation(org.chars().take(200).collect())) }
}

impl GitHubClient {
    /// Every repository of organisation `org` the token can see, all pages, each once (an
    /// installation token sees its installation's only). [`GitHubError::NotFound`] when GitHub
    /// knows no such organisation (a user's login is none).
    pub async fn list_org_repos(&self, token: &Token, org: &str) -> Result<Fetched<Vec<Repository>>, GitHubError> {
        let org = checked_organisation(org)?;
        let url = self.url(&format!("/orgs/{org}/repos?per_page={PER_PAGE}"))?;
        self.list::<RepositoryPage>(token, "org_repos", url).await
    }

    /// Every repository the installation whose token this is may read, all pages, each once.
    pub async fn list_installation_repos(&self, token: &Token) -> Result<Fetched<Vec<Repository>>, GitHubError> {
        let url = self.url(&format!("/installation/repositories?per_page={PER_PAGE}"))?;
        self.list::<InstallationRepositoryPage>(token, "installation_repos", url).await
    }

    /// The id of the installation of the App whose JWT this is on organisation `org`
    /// (`GET /orgs/{org}/installation`); `None` when the App is not installed there.
    pub async fn find_org_installation(&self, jwt: &Token, org: &str) -> Result<Fetched<Option<u64>>, GitHubError> {
        #[derive(Deserialize)]
        struct Installation {
            id: u64,
        }
        let org = checked_organisation(org)?;
        let url = self.url(&format!("/orgs/{org}/installation"))?;
        let mut fetched = Fetched::cost_only(None);
        let request = self.http().get(url);
        if let Some(body) = self.send_as_app(jwt, "org_installation", request, &mut fetched).await? {
            fetched.value = Some(decode::<Installation>(&body)?.id).filter(|id| *id != 0);
        }
        Ok(fetched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organisation_names_are_checked_before_they_reach_a_path() {
        assert_eq!(checked_organisation("acme-corp.io"), Ok("acme-corp.io"));
        for bad in ["", ".", "..", "acme/api", "a b", "a?b", "../x"] {
            assert!(matches!(checked_organisation(bad), Err(GitHubError::InvalidOrganisation(_))), "{bad}");
        }
    }

    #[test]
    fn both_listings_decode_what_github_sends_and_keep_what_the_resync_reads() {
        let org: RepositoryPage = serde_json::from_str(
            r#"[{"id": 1296269, "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5", "name": "Hello-World",
                 "full_name": "octocat/Hello-World", "owner": {"login": "octocat"}, "private": false,
                 "archived": false, "disabled": false, "topics": ["octocat"]},
                {"id": 7, "full_name": "octocat/old", "archived": true}]"#,
        )
        .unwrap();
        assert_eq!(
            org.into_items(),
            vec![
                Repository { id: 1_296_269, full_name: "octocat/Hello-World".into(), archived: false, disabled: false },
                Repository { id: 7, full_name: "octocat/old".into(), archived: true, disabled: false },
            ]
        );
        let installation: InstallationRepositoryPage = serde_json::from_str(
            r#"{"total_count": 1, "repository_selection": "selected",
                "repositories": [{"id": 9, "full_name": "octocat/api"}]}"#,
        )
        .unwrap();
        assert_eq!(installation.total_count, 1);
        assert_eq!(installation.into_items()[0].full_name, "octocat/api");
    }
}
