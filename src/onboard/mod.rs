//! `onboard`: creates (or updates) a repository's webhook, or with `--org` an organisation's,
//! and prints the Secrets and the ScaledActionRunner to apply; optionally registers the runners
//! up front (`--runner-dir`, an organisation's into its runner group), as the original
//! add-runner did, so no admin token has to be kept.
//!
//! Order matters: every input is checked and the output file opened before GitHub is changed,
//! so a failure never leaves a hook whose new secret was printed nowhere.

pub mod github;
pub mod hook;
pub mod registration;
pub mod render;
pub mod target;

use std::io::Write;
use std::path::{Path, PathBuf};

use self::github::{Api, Failure};
use self::hook::{HookChange, WebhookUrlProblem};
use self::registration::RegistrationError;
use self::render::{Onboarding, Runners};
use self::target::Target;
use crate::config::OnboardArgs;
use crate::github::GitHubError;
use crate::operator::render::YamlError;
use crate::webhook::{SecretBytes, secret_bytes};

/// Random bytes in a webhook secret (hex-encoded: 64 characters).
pub const SECRET_BYTES: usize = 32;
/// The longest `--name`: StatefulSet pod names carry a 10-character revision hash in a label
/// limited to 63 characters.
const MAX_NAME_LEN: usize = 52;

/// Why onboarding failed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum OnboardError {
    #[error("--{flag} {value:?}: {reason}")]
    Argument { flag: &'static str, value: String, reason: String },
    #[error("{flags}: {reason}")]
    Flags { flags: &'static str, reason: &'static str },
    #[error("reading the {which} token file {path}: {source}; pass a file holding the token")]
    TokenFileUnreadable {
        which: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the {which} token file {path} is empty: write the token into it (one line)")]
    TokenFileEmpty { which: &'static str, path: String },
    #[error("the {which} token file {path} holds more than one line or is not text: it must hold just the token")]
    TokenFileMalformed { which: &'static str, path: String },
    #[error("--webhook-url {url}: {problem}")]
    WebhookUrl { url: String, problem: WebhookUrlProblem },
    #[error("--github-api-url: {0}")]
    ApiUrl(#[source] GitHubError),
    #[error("--runner-dir: {0}")]
    RunnerDir(#[source] RegistrationError),
    #[error("opening {path} for the output: {source}")]
    OpenOutput {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("GitHub rejected the {which} token (401): it is wrong, expired or revoked; create a new one")]
    TokenRejected { which: &'static str },
    #[error(
        "repository {repo} not found: check --owner and --repo, and that the admin token's account can see it (GitHub answers 404 for a private repository the token cannot read)"
    )]
    RepositoryNotFound { repo: String },
    #[error(
        "the read token cannot see {repo} (404): the server could not check its jobs; use a token with read access to the repository (classic `repo` scope for a private one, or fine-grained Actions: read)"
    )]
    ReadTokenCannotSee { repo: String },
    #[error(
        "the admin token has no admin rights on {repo} ({what}): use a token of an account that administers the repository, with the classic `repo` scope or the fine-grained {needs} permission"
    )]
    NoAdminRights { repo: String, what: String, needs: String },
    #[error(
        "organisation {org} not found: check --org (a user account has no organisation runners: use --owner and --repo for its repositories)"
    )]
    OrganisationNotFound { org: String },
    #[error(
        "the read token cannot see organisation {org} (404): the server could not check its jobs; use a token of a member with read access to its repositories (classic `repo` scope for private ones, or fine-grained Actions: read)"
    )]
    ReadTokenCannotSeeOrganisation { org: String },
    #[error(
        "the admin token is not an owner's of organisation {org} ({what}): use a token of an account that owns the organisation, with the classic {scopes} scope or the fine-grained organisation permission {needs}"
    )]
    NotOrganisationOwner { org: String, what: String, scopes: String, needs: String },
    #[error("reading organisation {org}: {source}")]
    ReadOrganisation {
        org: String,
        #[source]
        source: GitHubError,
    },
    #[error(
        "organisation {org} has no runner group {group:?} (it has {known}): create it in the organisation's settings (Actions, Runner groups) or leave --runner-group out to use Default"
    )]
    NoSuchRunnerGroup { org: String, group: String, known: String },
    #[error("listing the runner groups of organisation {org}: {source}")]
    ListRunnerGroups {
        org: String,
        #[source]
        source: GitHubError,
    },
    #[error("reading repository {repo}: {source}")]
    ReadRepository {
        repo: String,
        #[source]
        source: GitHubError,
    },
    #[error("listing the webhooks of {target}: {source}")]
    ListHooks {
        target: String,
        #[source]
        source: GitHubError,
    },
    #[error("creating the webhook of {target}: {source} {message}")]
    CreateHook {
        target: String,
        message: String,
        #[source]
        source: GitHubError,
    },
    #[error("updating webhook {id} of {target}: {source} {message}")]
    UpdateHook {
        target: String,
        id: u64,
        message: String,
        #[source]
        source: GitHubError,
    },
    #[error("getting a runner registration token for {target}: {source}")]
    RegistrationToken {
        target: String,
        #[source]
        source: GitHubError,
    },
    #[error(
        "registering runner {ordinal} of {count}: {source} (the webhook was already set: re-run the same command once fixed)"
    )]
    Register {
        ordinal: u32,
        count: u32,
        #[source]
        source: RegistrationError,
    },
    #[error("the system's random source failed; cannot make a webhook secret")]
    Random,
    #[error("{0}")]
    Render(#[source] YamlError),
    #[error("writing the output to {path}: {source}")]
    WriteOutput {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A fresh webhook secret: [`SECRET_BYTES`] bytes from `random`, hex-encoded (GitHub takes any
/// text; hex survives every shell and YAML).
pub fn fresh_secret(random: &dyn rustls::crypto::SecureRandom) -> Result<SecretBytes, OnboardError> {
    let mut bytes = [0u8; SECRET_BYTES];
    random.fill(&mut bytes).map_err(|_| OnboardError::Random)?;
    Ok(secret_bytes(hex::encode(bytes)))
}

/// A token from its file: one line of text, surrounding whitespace dropped.
pub fn read_token_file(which: &'static str, path: &Path) -> Result<SecretBytes, OnboardError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| OnboardError::TokenFileUnreadable {
        which,
        path: shown.clone(),
        source,
    })?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| OnboardError::TokenFileMalformed { which, path: shown.clone() })?
        .trim();
    if text.is_empty() {
        return Err(OnboardError::TokenFileEmpty { which, path: shown });
    }
    // A header value cannot hold control characters; a second line is a mistake, not a token.
    if text.chars().any(char::is_control) {
        return Err(OnboardError::TokenFileMalformed { which, path: shown });
    }
    Ok(secret_bytes(text))
}

/// Whether `value` is a Kubernetes DNS label (RFC 1123) at most `max` long.
fn is_dns_label(value: &str, max: usize) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn is_github_name(value: &str) -> bool {
    !value.is_empty()
        && value != "."
        && value != ".."
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The longest runner group name accepted (GitHub's own limit is not documented).
const MAX_RUNNER_GROUP_LEN: usize = 100;

/// Checks the flags that need no file or network; whose runners they set up.
pub fn check_args(args: &OnboardArgs) -> Result<Target, OnboardError> {
    let bad = |flag: &'static str, value: &str, reason: &str| {
        Err(OnboardError::Argument { flag, value: value.to_owned(), reason: reason.to_owned() })
    };
    let flags = |flags: &'static str, reason: &'static str| Err(OnboardError::Flags { flags, reason });
    if !is_dns_label(&args.name, MAX_NAME_LEN) {
        return bad(
            "name",
            &args.name,
            "use at most 52 lower-case letters, digits and '-', starting and ending with a letter or digit",
        );
    }
    for (flag, value) in [("namespace", Some(&args.namespace)), ("token-namespace", args.token_namespace.as_ref())] {
        if let Some(value) = value.filter(|v| !is_dns_label(v, 63)) {
            return bad(
                flag,
                value,
                "not a Kubernetes namespace name (lower-case letters, digits and '-', at most 63)",
            );
        }
    }
    let target = match (&args.org, &args.owner, &args.repo) {
        (Some(_), _, Some(_)) => {
            return flags(
                "--org with --repo",
                "an organisation runner takes jobs from every repository of the organisation and names none: give --org alone, or --owner and --repo for one repository's runners",
            );
        }
        (Some(_), Some(_), None) => {
            return flags(
                "--org with --owner",
                "--org names the organisation whose runners these are; --owner goes with --repo, for one repository's runners",
            );
        }
        (None, None, None) => {
            return flags(
                "no --owner and --repo, nor --org",
                "say whose runners these are: --owner OWNER --repo REPO for a repository's, --org ORG for an organisation's",
            );
        }
        (None, Some(_), None) => {
            return flags(
                "--owner without --repo",
                "give the repository with --repo, or --org alone for an organisation's runners",
            );
        }
        (None, None, Some(_)) => return flags("--repo without --owner", "give the repository's owner with --owner"),
        (Some(org), None, None) => {
            if !is_github_name(org) {
                return bad("org", org, "an organisation's name (letters, digits, '-', '_', '.')");
            }
            Target::Organisation { org: org.clone(), runner_group: args.runner_group.clone() }
        }
        (None, Some(owner), Some(repo)) => {
            if !is_github_name(owner) {
                return bad("owner", owner, "a GitHub user or organisation name (letters, digits, '-', '_', '.')");
            }
            if !is_github_name(repo) {
                return bad("repo", repo, "a repository name without its owner (letters, digits, '-', '_', '.')");
            }
            if args.runner_group.is_some() {
                return flags(
                    "--runner-group without --org",
                    "runner groups hold an organisation's runners; a repository's runners have none",
                );
            }
            Target::Repository { owner: owner.clone(), repo: repo.clone() }
        }
    };
    if let Some(group) = &args.runner_group {
        let trimmed = group.trim();
        if trimmed.is_empty() || trimmed != group || group.chars().any(char::is_control) {
            return bad("runner-group", group, "a runner group's name: not empty, one line, no surrounding spaces");
        }
        if group.chars().count() > MAX_RUNNER_GROUP_LEN {
            return bad("runner-group", group, "at most 100 characters");
        }
    }
    if args.min_runners.is_some_and(|min| min > args.max_runners) {
        return bad(
            "min-runners",
            &format!("{:?}", args.min_runners.unwrap_or_default()),
            "must not exceed --max-runners",
        );
    }
    Ok(target)
}

/// What `run` reports besides the YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    Created(u64),
    Updated(u64),
    WouldCreate,
    WouldUpdate(u64),
}

/// Runs the onboarding: checks, webhook, runners, YAML.
pub async fn run(args: OnboardArgs) -> Result<(), OnboardError> {
    let target = check_args(&args)?;
    let webhook_url = hook::check_webhook_url(&args.webhook_url)
        .map_err(|problem| OnboardError::WebhookUrl { url: args.webhook_url.clone(), problem })?;
    if webhook_url.path() != "/webhook" {
        tracing::warn!(url = %webhook_url, "the server receives deliveries at /webhook; this URL has another path");
    }
    let read_token = read_token_file("read", &args.read_token)?;
    let admin_token = read_token_file("admin", &args.admin_token)?;
    if let Some(dir) = &args.runner_dir {
        registration::check_runner_dir(dir).map_err(OnboardError::RunnerDir)?;
    }
    let api = Api::new(&args.github_api_url).map_err(OnboardError::ApiUrl)?;
    let webhook_secret = fresh_secret(rustls::crypto::ring::default_provider().secure_random)?;
    let mut output = open_output(args.output.as_deref())?;
    let registers = args.runner_dir.is_some();
    let shown = target.to_string();

    // Read-only checks: the target exists, the admin token administers it, the read token sees it.
    match &target {
        Target::Repository { owner, repo } => {
            check_repository(&api, &admin_token, &read_token, owner, repo, registers).await?
        }
        Target::Organisation { org, runner_group } => {
            check_organisation(&api, &admin_token, &read_token, org, runner_group.as_deref(), registers).await?;
        }
    }
    let listed = api.hooks(&admin_token, &target).await.map_err(|failure| {
        admin_failure(failure, &target, registers, |source, _| OnboardError::ListHooks {
            target: shown.clone(),
            source,
        })
    })?;
    let change = hook::plan(&listed, &webhook_url);
    if let HookChange::Update { duplicates, .. } = &change
        && !duplicates.is_empty()
    {
        tracing::warn!(
            ?duplicates,
            "other webhooks deliver to the same URL; left unchanged (delete them to avoid double deliveries)"
        );
    }

    // Changes on GitHub.
    let body = hook::request_body(&webhook_url, &webhook_secret, change.events());
    let outcome = match (&change, args.dry_run) {
        (HookChange::Create { .. }, true) => HookOutcome::WouldCreate,
        (HookChange::Update { id, .. }, true) => HookOutcome::WouldUpdate(*id),
        (HookChange::Create { .. }, false) => {
            let id = api.create_hook(&admin_token, &target, &body).await.map_err(|failure| {
                admin_failure(failure, &target, registers, |source, message| OnboardError::CreateHook {
                    target: shown.clone(),
                    message,
                    source,
                })
            })?;
            HookOutcome::Created(id)
        }
        (HookChange::Update { id, .. }, false) => {
            api.update_hook(&admin_token, &target, *id, &body).await.map_err(|failure| {
                admin_failure(failure, &target, registers, |source, message| OnboardError::UpdateHook {
                    target: shown.clone(),
                    id: *id,
                    message,
                    source,
                })
            })?;
            HookOutcome::Updated(*id)
        }
    };
    report(&outcome, &shown, &webhook_url);

    let count = u32::try_from(args.max_runners).unwrap_or(0);
    let runners = match (&args.runner_dir, args.dry_run) {
        (None, _) => Runners::SelfRegistering,
        (Some(_), true) => {
            tracing::info!(count, "dry run: no runners registered; their Secrets are named but not printed");
            Runners::Named(count)
        }
        (Some(dir), false) => {
            let registration = api.registration_token(&admin_token, &target).await.map_err(|failure| {
                admin_failure(failure, &target, true, |source, _| OnboardError::RegistrationToken {
                    target: shown.clone(),
                    source,
                })
            })?;
            let labels = render::parse_labels(&args.labels);
            let web_url = registration::web_url(api.base(), &target.web_path());
            let group = target.registration_group();
            let mut registered = Vec::new();
            for ordinal in 0..count {
                let name = render::runner_secret_name(&args.name, ordinal);
                let arguments = registration::config_args(&web_url, &registration, &name, &labels, group);
                let scratch = scratch_dir(&args.name, ordinal);
                let dir = dir.clone();
                let files =
                    tokio::task::spawn_blocking(move || registration::register(&dir, &scratch, &name, &arguments))
                        .await
                        .map_err(|e| OnboardError::Register {
                            ordinal,
                            count,
                            source: RegistrationError::Start {
                                config_sh: "config.sh".into(),
                                source: std::io::Error::other(e.to_string()),
                            },
                        })?
                        .map_err(|source| OnboardError::Register { ordinal, count, source })?;
                registered.push(files);
            }
            tracing::info!(count, runner_group = group, "runners registered");
            Runners::Registered(registered)
        }
    };

    let onboarding = Onboarding {
        name: args.name.clone(),
        namespace: args.namespace.clone(),
        token_namespace: args.token_namespace.clone().unwrap_or_else(|| args.namespace.clone()),
        target,
        max_runners: args.max_runners,
        min_runners: args.min_runners,
        labels: render::parse_labels(&args.labels),
        image: args.image.clone().filter(|image| !image.trim().is_empty()),
        read_token,
        webhook_secret,
        runners,
    };
    let yaml = render::yaml(&onboarding).map_err(OnboardError::Render)?;
    let shown = args.output.as_ref().map_or_else(|| "standard output".to_owned(), |p| p.display().to_string());
    output
        .write_all(yaml.as_bytes())
        .and_then(|()| output.flush())
        .map_err(|source| OnboardError::WriteOutput { path: shown, source })?;
    Ok(())
}

/// The repository exists, the admin token administers it and the read token sees it.
async fn check_repository(
    api: &Api,
    admin_token: &SecretBytes,
    read_token: &SecretBytes,
    owner: &str,
    repo: &str,
    registers: bool,
) -> Result<(), OnboardError> {
    let full = format!("{owner}/{repo}");
    let admin_check = api.repository(admin_token, owner, repo).await.map_err(|failure| match failure.error {
        GitHubError::NotFound => OnboardError::RepositoryNotFound { repo: full.clone() },
        GitHubError::Unauthorized => OnboardError::TokenRejected { which: "admin" },
        source => OnboardError::ReadRepository { repo: full.clone(), source },
    })?;
    if admin_check.permissions.is_some_and(|p| !p.admin) {
        return Err(OnboardError::NoAdminRights {
            repo: full,
            what: "GitHub reports its account's permission on the repository as below admin".into(),
            needs: needs(registers),
        });
    }
    api.repository(read_token, owner, repo).await.map_err(|failure| match failure.error {
        GitHubError::NotFound => OnboardError::ReadTokenCannotSee { repo: full.clone() },
        GitHubError::Unauthorized => OnboardError::TokenRejected { which: "read" },
        source => OnboardError::ReadRepository { repo: full.clone(), source },
    })?;
    Ok(())
}

/// The organisation exists and the read token sees it; with `--runner-dir`, the runner group
/// the runners go to exists (listing groups needs an owner's token, as registering does).
/// Whether the admin token is an owner's shows when its hooks are listed.
async fn check_organisation(
    api: &Api,
    admin_token: &SecretBytes,
    read_token: &SecretBytes,
    org: &str,
    runner_group: Option<&str>,
    registers: bool,
) -> Result<(), OnboardError> {
    for (which, token) in [("admin", admin_token), ("read", read_token)] {
        api.organisation(token, org).await.map_err(|failure| match failure.error {
            GitHubError::NotFound if which == "admin" => OnboardError::OrganisationNotFound { org: org.to_owned() },
            GitHubError::NotFound => OnboardError::ReadTokenCannotSeeOrganisation { org: org.to_owned() },
            GitHubError::Unauthorized => OnboardError::TokenRejected { which },
            source => OnboardError::ReadOrganisation { org: org.to_owned(), source },
        })?;
    }
    if let (Some(group), true) = (runner_group, registers) {
        let target = Target::Organisation { org: org.to_owned(), runner_group: Some(group.to_owned()) };
        let groups = api.runner_groups(admin_token, org).await.map_err(|failure| {
            admin_failure(failure, &target, true, |source, _| OnboardError::ListRunnerGroups {
                org: org.to_owned(),
                source,
            })
        })?;
        // GitHub compares runner group names without regard to case.
        if !groups.iter().any(|known| known.name.eq_ignore_ascii_case(group)) {
            let known = groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(OnboardError::NoSuchRunnerGroup { org: org.to_owned(), group: group.to_owned(), known });
        }
    }
    Ok(())
}

/// The fine-grained permissions the calls need.
fn needs(registers: bool) -> String {
    if registers { "Webhooks: read and write, and Administration: read and write" } else { "Webhooks: read and write" }
        .to_owned()
}

/// An organisation's: the classic scopes and the fine-grained organisation permissions.
fn organisation_needs(registers: bool) -> (String, String) {
    if registers {
        (
            "`admin:org_hook` and `admin:org`".to_owned(),
            "Webhooks: read and write, and Self-hosted runners: read and write".to_owned(),
        )
    } else {
        ("`admin:org_hook`".to_owned(), "Webhooks: read and write".to_owned())
    }
}

/// A 401, 403 or 404 on an admin-only call is a token problem; anything else is `other`'s.
fn admin_failure(
    failure: Failure,
    target: &Target,
    registers: bool,
    other: impl FnOnce(GitHubError, String) -> OnboardError,
) -> OnboardError {
    let status = match &failure.error {
        GitHubError::Unauthorized => return OnboardError::TokenRejected { which: "admin" },
        GitHubError::Forbidden { .. } => 403,
        GitHubError::NotFound => 404,
        _ => return other(failure.error, failure.message),
    };
    let mut what = format!("GitHub answered {status}");
    if !failure.message.is_empty() {
        what.push_str(&format!(" \"{}\"", failure.message));
    }
    if let Some(accepted) = &failure.accepted_permissions {
        what.push_str(&format!("; the endpoint accepts fine-grained permissions {accepted}"));
    }
    match target {
        Target::Repository { .. } => {
            OnboardError::NoAdminRights { repo: target.to_string(), what, needs: needs(registers) }
        }
        Target::Organisation { org, .. } => {
            let (scopes, needs) = organisation_needs(registers);
            OnboardError::NotOrganisationOwner { org: org.clone(), what, scopes, needs }
        }
    }
}

fn report(outcome: &HookOutcome, target: &str, url: &reqwest::Url) {
    match outcome {
        HookOutcome::Created(id) => tracing::info!(scope = target, hook = id, %url, "webhook created"),
        HookOutcome::Updated(id) => {
            tracing::info!(scope = target, hook = id, %url, "webhook updated with a new secret")
        }
        HookOutcome::WouldCreate => {
            tracing::info!(scope = target, %url, "dry run: a webhook would be created; GitHub unchanged")
        }
        HookOutcome::WouldUpdate(id) => {
            tracing::info!(scope = target, hook = id, %url, "dry run: this webhook would be updated; GitHub unchanged")
        }
    }
}

/// Standard output, or `path` created (or truncated) readable by its owner only: it will hold
/// secrets.
fn open_output(path: Option<&Path>) -> Result<Box<dyn Write>, OnboardError> {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(path) = path else { return Ok(Box::new(std::io::stdout())) };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| OnboardError::OpenOutput { path: path.display().to_string(), source })?;
    Ok(Box::new(file))
}

/// A fresh private directory for registering one runner.
fn scratch_dir(name: &str, ordinal: u32) -> PathBuf {
    let unique = jiff::Timestamp::now().as_nanosecond();
    std::env::temp_dir().join(format!("gaa-onboard-{name}-{ordinal}-{}-{unique}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use secrecy::ExposeSecret;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: OnboardArgs,
    }

    fn parse(extra: &[&str]) -> Result<OnboardArgs, clap::Error> {
        let mut argv = vec!["onboard", "-n", "api", "-o", "acme", "-r", "api", "-m", "4", "-p", "read", "-a", "admin"];
        argv.extend(["-w", "https://ci.example.com/webhook"]);
        argv.extend(extra);
        Cli::try_parse_from(argv).map(|cli| cli.args)
    }

    #[derive(Debug)]
    struct Fixed(u8);

    impl rustls::crypto::SecureRandom for Fixed {
        fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
            buf.fill(self.0);
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Broken;

    impl rustls::crypto::SecureRandom for Broken {
        fn fill(&self, _: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
            Err(rustls::crypto::GetRandomFailed)
        }
    }

    #[test]
    fn the_original_short_flags_still_work() {
        let args = parse(&["-l", "linux,gpu", "-s", "ci", "-g", "github", "-f", "out.yaml"]).unwrap();
        assert_eq!(
            (args.name.as_str(), args.owner.as_deref(), args.repo.as_deref(), args.max_runners),
            ("api", Some("acme"), Some("api"), 4)
        );
        assert_eq!((args.read_token, args.admin_token), (PathBuf::from("read"), PathBuf::from("admin")));
        assert_eq!((args.labels.as_str(), args.namespace.as_str()), ("linux,gpu", "ci"));
        assert_eq!(args.token_namespace.as_deref(), Some("github"));
        assert_eq!(args.output, Some(PathBuf::from("out.yaml")));
        assert_eq!(
            check_args(&parse(&[]).unwrap()).unwrap(),
            Target::Repository { owner: "acme".into(), repo: "api".into() }
        );
    }

    fn repository() -> Target {
        Target::Repository { owner: "acme".into(), repo: "api".into() }
    }

    /// `onboard` with only `extra` naming whose runners these are.
    fn parse_target(extra: &[&str]) -> OnboardArgs {
        let mut argv = vec!["onboard", "-n", "build", "-m", "4", "-p", "read", "-a", "admin"];
        argv.extend(["-w", "https://ci.example.com/webhook"]);
        argv.extend(extra);
        Cli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn org_alone_means_an_organisation_runner_in_the_group_given() {
        assert_eq!(
            check_args(&parse_target(&["--org", "acme"])).unwrap(),
            Target::Organisation { org: "acme".into(), runner_group: None }
        );
        assert_eq!(
            check_args(&parse_target(&["--org", "acme", "--runner-group", "gpu runners"])).unwrap(),
            Target::Organisation { org: "acme".into(), runner_group: Some("gpu runners".into()) }
        );
    }

    #[test]
    fn org_with_repo_or_owner_and_other_half_given_targets_are_refused_saying_why() {
        let cases: [(&[&str], &str); 6] = [
            (
                &["--org", "acme", "-r", "api"],
                "--org with --repo: an organisation runner takes jobs from every repository",
            ),
            (&["--org", "acme", "-o", "acme", "-r", "api"], "--org with --repo"),
            (&["--org", "acme", "-o", "acme"], "--org with --owner: --org names the organisation"),
            (&[], "no --owner and --repo, nor --org: say whose runners these are"),
            (&["-o", "acme"], "--owner without --repo: give the repository with --repo, or --org alone"),
            (&["-r", "api"], "--repo without --owner"),
        ];
        for (extra, expected) in cases {
            let error = check_args(&parse_target(extra)).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{extra:?}: {error}");
        }
    }

    #[test]
    fn a_runner_group_is_for_organisation_runners_only_and_must_be_a_name() {
        let error = check_args(&parse(&["--runner-group", "gpu"]).unwrap()).unwrap_err().to_string();
        assert!(
            error.starts_with("--runner-group without --org: runner groups hold an organisation's runners"),
            "{error}"
        );
        for bad in ["", " gpu", "gp\nu"] {
            let error = check_args(&parse_target(&["--org", "acme", "--runner-group", bad])).unwrap_err().to_string();
            assert!(error.starts_with("--runner-group"), "{bad:?}: {error}");
        }
        let error = check_args(&parse_target(&["--org", "acme/api"])).unwrap_err().to_string();
        assert!(error.starts_with("--org \"acme/api\": an organisation's name"), "{error}");
    }

    #[test]
    fn a_forbidden_organisation_call_names_the_classic_scope_and_the_organisation_permission() {
        let failure = Failure {
            error: GitHubError::NotFound,
            message: "Not Found".into(),
            accepted_permissions: Some("organization_hooks=read".into()),
        };
        let org = Target::Organisation { org: "acme".into(), runner_group: None };
        let text = admin_failure(failure.clone(), &org, false, |_, _| OnboardError::Random).to_string();
        assert!(text.contains("not an owner's of organisation acme (GitHub answered 404 \"Not Found\""), "{text}");
        assert!(text.contains("organization_hooks=read"), "{text}");
        assert!(text.contains("classic `admin:org_hook` scope"), "{text}");
        assert!(text.contains("organisation permission Webhooks: read and write"), "{text}");
        let registering = admin_failure(failure, &org, true, |_, _| OnboardError::Random).to_string();
        assert!(registering.contains("`admin:org_hook` and `admin:org`"), "{registering}");
        assert!(registering.contains("Self-hosted runners: read and write"), "{registering}");
    }

    #[test]
    fn zero_max_runners_is_refused_by_the_parser() {
        assert!(parse(&["-m", "0"]).is_err());
    }

    #[test]
    fn names_kubernetes_would_refuse_are_refused_before_any_call() {
        type Spoil = fn(&mut OnboardArgs, String);
        let cases: [(&str, Spoil); 6] = [
            ("--name", |a, v| a.name = v.to_uppercase()),
            ("--name", |a, v| a.name = format!("{v}-")),
            ("--name", |a, v| a.name = v.repeat(53)),
            ("--namespace", |a, v| a.namespace = v.to_uppercase()),
            ("--owner", |a, v| a.owner = Some(format!("a {v}"))),
            ("--repo", |a, _| a.repo = Some("..".into())),
        ];
        for (flag, spoil) in cases {
            let mut args = parse(&[]).unwrap();
            spoil(&mut args, "A".to_lowercase());
            let error = check_args(&args).map(|_| "accepted".to_owned()).unwrap_or_else(|e| e.to_string());
            assert!(error.starts_with(flag), "{flag}: {error}");
        }
    }

    #[test]
    fn more_min_than_max_runners_is_refused() {
        let error = check_args(&parse(&["--min-runners", "5"]).unwrap()).unwrap_err();
        assert!(error.to_string().contains("must not exceed --max-runners"), "{error}");
    }

    #[test]
    fn a_webhook_secret_is_32_random_bytes_in_hex() {
        let secret = fresh_secret(&Fixed(0xab)).unwrap();
        assert_eq!(secret.expose_secret(), "ab".repeat(32).as_bytes());
        assert!(matches!(fresh_secret(&Broken), Err(OnboardError::Random)));
    }

    #[test]
    fn two_fresh_secrets_from_the_system_differ() {
        let random = rustls::crypto::ring::default_provider().secure_random;
        assert_ne!(fresh_secret(random).unwrap().expose_secret(), fresh_secret(random).unwrap().expose_secret());
    }

    #[test]
    fn token_files_are_trimmed_and_empty_or_multi_line_ones_refused() {
        let dir = std::env::temp_dir().join(format!("gaa-onboard-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        assert_eq!(read_token_file("read", &write("ok", "  ghp_x\n")).unwrap().expose_secret(), b"ghp_x");
        assert!(matches!(read_token_file("read", &write("empty", " \n")), Err(OnboardError::TokenFileEmpty { .. })));
        assert!(matches!(
            read_token_file("read", &write("two", "a\nb\n")),
            Err(OnboardError::TokenFileMalformed { .. })
        ));
        let missing = read_token_file("admin", &dir.join("missing")).unwrap_err();
        assert!(missing.to_string().contains("reading the admin token file"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_forbidden_admin_call_names_the_permission_github_wants() {
        let failure = Failure {
            error: GitHubError::Forbidden { message: "Resource not accessible by personal access token".into() },
            message: "Resource not accessible by personal access token".into(),
            accepted_permissions: Some("webhooks=write".into()),
        };
        let error = admin_failure(failure, &repository(), false, |_, _| OnboardError::Random);
        let text = error.to_string();
        assert!(text.contains("no admin rights on acme/api"), "{text}");
        assert!(text.contains("webhooks=write"), "{text}");
        assert!(text.contains("Webhooks: read and write"), "{text}");
    }

    #[test]
    fn a_hidden_hooks_endpoint_is_read_as_missing_admin_rights() {
        let failure = Failure { error: GitHubError::NotFound, message: "Not Found".into(), accepted_permissions: None };
        let text = admin_failure(failure, &repository(), true, |_, _| OnboardError::Random).to_string();
        assert!(text.contains("no admin rights on acme/api (GitHub answered 404 \"Not Found\")"), "{text}");
        assert!(text.contains("Administration: read and write"), "{text}");
    }

    #[test]
    fn other_failures_keep_their_step() {
        let failure = Failure::from(GitHubError::Server { status: 502 });
        let error = admin_failure(failure, &repository(), false, |source, _| OnboardError::ListHooks {
            target: "acme/api".into(),
            source,
        });
        assert_eq!(error.to_string(), "listing the webhooks of acme/api: GitHub server error (502)");
    }
}
