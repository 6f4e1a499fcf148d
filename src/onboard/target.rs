//! Whose runners onboarding sets up: one repository's, or an organisation's (every repository
//! of it, registered in a runner group). Decides the API paths, the runners' web URL and how
//! the target is named in messages. Pure.

use std::fmt;

/// The runner group every organisation has, where runners go unless told otherwise.
pub const DEFAULT_RUNNER_GROUP: &str = "Default";

/// Whose runners these are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Runners of `owner/repo`.
    Repository { owner: String, repo: String },
    /// Runners of organisation `org`, in `runner_group` (`None`: [`DEFAULT_RUNNER_GROUP`]).
    Organisation { org: String, runner_group: Option<String> },
}

impl Target {
    /// The user or organisation that owns the runners' repositories.
    pub fn owner(&self) -> &str {
        match self {
            Self::Repository { owner, .. } => owner,
            Self::Organisation { org, .. } => org,
        }
    }

    /// The repository, for a repository's runners.
    pub fn repo(&self) -> Option<&str> {
        match self {
            Self::Repository { repo, .. } => Some(repo),
            Self::Organisation { .. } => None,
        }
    }

    /// The runner group named with `--runner-group`, if any.
    pub fn runner_group(&self) -> Option<&str> {
        match self {
            Self::Repository { .. } => None,
            Self::Organisation { runner_group, .. } => runner_group.as_deref(),
        }
    }

    /// The REST path the target's hooks and runners hang under: `/repos/{owner}/{repo}` or
    /// `/orgs/{org}`.
    pub fn api_path(&self) -> String {
        match self {
            Self::Repository { owner, repo } => format!("/repos/{owner}/{repo}"),
            Self::Organisation { org, .. } => format!("/orgs/{org}"),
        }
    }

    /// The path of the target's web page (what `config.sh --url` takes): `owner/repo` or `org`.
    pub fn web_path(&self) -> String {
        match self {
            Self::Repository { owner, repo } => format!("{owner}/{repo}"),
            Self::Organisation { org, .. } => org.clone(),
        }
    }

    /// `config.sh --runnergroup`: an organisation's runners always name theirs; a repository's
    /// have none.
    pub fn registration_group(&self) -> Option<&str> {
        match self {
            Self::Repository { .. } => None,
            Self::Organisation { runner_group, .. } => Some(runner_group.as_deref().unwrap_or(DEFAULT_RUNNER_GROUP)),
        }
    }
}

/// `acme/api`, or `organisation acme`.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Repository { owner, repo } => write!(f, "{owner}/{repo}"),
            Self::Organisation { org, .. } => write!(f, "organisation {org}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(group: Option<&str>) -> Target {
        Target::Organisation { org: "acme".into(), runner_group: group.map(str::to_owned) }
    }

    #[test]
    fn a_repository_hangs_under_repos_and_has_no_runner_group() {
        let target = Target::Repository { owner: "acme".into(), repo: "api".into() };
        assert_eq!((target.api_path(), target.web_path()), ("/repos/acme/api".into(), "acme/api".into()));
        assert_eq!((target.repo(), target.registration_group()), (Some("api"), None));
        assert_eq!(target.to_string(), "acme/api");
    }

    #[test]
    fn an_organisation_hangs_under_orgs_and_registers_in_default_unless_told() {
        assert_eq!((org(None).api_path(), org(None).web_path()), ("/orgs/acme".into(), "acme".into()));
        assert_eq!((org(None).repo(), org(None).runner_group()), (None, None));
        assert_eq!(org(None).registration_group(), Some("Default"));
        assert_eq!(org(Some("gpu")).registration_group(), Some("gpu"));
        assert_eq!(org(None).to_string(), "organisation acme");
    }
}
