//! `onboard`: creates (or updates) a repository's webhook and prints the Secrets and the
//! ScaledActionRunner to apply; optionally registers the runners up front (`--runner-dir`), as
//! the original add-runner did, so no admin token has to be kept.
//!
//! Order matters: every input is checked and the output file opened before GitHub is changed,
//! so a failure never leaves a hook whose new secret was printed nowhere.

pub mod github;
pub mod hook;
pub mod registration;
pub mod render;

use std::io::Write;
use std::path::{Path, PathBuf};

use self::github::{Api, Failure};
use self::hook::{HookChange, WebhookUrlProblem};
use self::registration::RegistrationError;
use self::render::{Onboarding, Runners};
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
    #[error("reading repository {repo}: {source}")]
    ReadRepository {
        repo: String,
        #[source]
        source: GitHubError,
    },
    #[error("listing the webhooks of {repo}: {source}")]
    ListHooks {
        repo: String,
        #[source]
        source: GitHubError,
    },
    #[error("creating the webhook of {repo}: {source} {message}")]
    CreateHook {
        repo: String,
        message: String,
        #[source]
        source: GitHubError,
    },
    #[error("updating webhook {id} of {repo}: {source} {message}")]
    UpdateHook {
        repo: String,
        id: u64,
        message: String,
        #[source]
        source: GitHubError,
    },
    #[error("getting a runner registration token for {repo}: {source}")]
    RegistrationToken {
        repo: String,
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

/// Checks the flags that need no file or network.
pub fn check_args(args: &OnboardArgs) -> Result<(), OnboardError> {
    let bad = |flag: &'static str, value: &str, reason: &str| {
        Err(OnboardError::Argument { flag, value: value.to_owned(), reason: reason.to_owned() })
    };
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
    if !is_github_name(&args.owner) {
        return bad("owner", &args.owner, "a GitHub user or organisation name (letters, digits, '-', '_', '.')");
    }
    if !is_github_name(&args.repo) {
        return bad("repo", &args.repo, "a repository name without its owner (letters, digits, '-', '_', '.')");
    }
    if args.min_runners.is_some_and(|min| min > args.max_runners) {
        return bad(
            "min-runners",
            &format!("{:?}", args.min_runners.unwrap_or_default()),
            "must not exceed --max-runners",
        );
    }
    Ok(())
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
    check_args(&args)?;
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
    let repo = format!("{}/{}", args.owner, args.repo);

    // Read-only checks: the repository exists, the admin token administers it, the read token sees it.
    let admin_check =
        api.repository(&admin_token, &args.owner, &args.repo).await.map_err(|failure| match failure.error {
            GitHubError::NotFound => OnboardError::RepositoryNotFound { repo: repo.clone() },
            GitHubError::Unauthorized => OnboardError::TokenRejected { which: "admin" },
            source => OnboardError::ReadRepository { repo: repo.clone(), source },
        })?;
    if admin_check.permissions.is_some_and(|p| !p.admin) {
        return Err(OnboardError::NoAdminRights {
            repo: repo.clone(),
            what: "GitHub reports its account's permission on the repository as below admin".into(),
            needs: needs(args.runner_dir.is_some()),
        });
    }
    api.repository(&read_token, &args.owner, &args.repo).await.map_err(|failure| match failure.error {
        GitHubError::NotFound => OnboardError::ReadTokenCannotSee { repo: repo.clone() },
        GitHubError::Unauthorized => OnboardError::TokenRejected { which: "read" },
        source => OnboardError::ReadRepository { repo: repo.clone(), source },
    })?;
    let listed = api.hooks(&admin_token, &args.owner, &args.repo).await.map_err(|failure| {
        admin_failure(failure, &repo, args.runner_dir.is_some(), |source, _| OnboardError::ListHooks {
            repo: repo.clone(),
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
    let outcome =
        match (&change, args.dry_run) {
            (HookChange::Create { .. }, true) => HookOutcome::WouldCreate,
            (HookChange::Update { id, .. }, true) => HookOutcome::WouldUpdate(*id),
            (HookChange::Create { .. }, false) => {
                let id = api.create_hook(&admin_token, &args.owner, &args.repo, &body).await.map_err(|failure| {
                    admin_failure(failure, &repo, args.runner_dir.is_some(), |source, message| {
                        OnboardError::CreateHook { repo: repo.clone(), message, source }
                    })
                })?;
                HookOutcome::Created(id)
            }
            (HookChange::Update { id, .. }, false) => {
                api.update_hook(&admin_token, &args.owner, &args.repo, *id, &body).await.map_err(|failure| {
                    admin_failure(failure, &repo, args.runner_dir.is_some(), |source, message| {
                        OnboardError::UpdateHook { repo: repo.clone(), id: *id, message, source }
                    })
                })?;
                HookOutcome::Updated(*id)
            }
        };
    report(&outcome, &repo, &webhook_url);

    let count = u32::try_from(args.max_runners).unwrap_or(0);
    let runners = match (&args.runner_dir, args.dry_run) {
        (None, _) => Runners::SelfRegistering,
        (Some(_), true) => {
            tracing::info!(count, "dry run: no runners registered; their Secrets are named but not printed");
            Runners::Named(count)
        }
        (Some(dir), false) => {
            let registration =
                api.registration_token(&admin_token, &args.owner, &args.repo).await.map_err(|failure| {
                    admin_failure(failure, &repo, true, |source, _| OnboardError::RegistrationToken {
                        repo: repo.clone(),
                        source,
                    })
                })?;
            let labels = render::parse_labels(&args.labels);
            let web_url = registration::repository_web_url(api.base(), &args.owner, &args.repo);
            let mut registered = Vec::new();
            for ordinal in 0..count {
                let name = render::runner_secret_name(&args.name, ordinal);
                let arguments = registration::config_args(&web_url, &registration, &name, &labels);
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
            tracing::info!(count, "runners registered");
            Runners::Registered(registered)
        }
    };

    let onboarding = Onboarding {
        name: args.name.clone(),
        namespace: args.namespace.clone(),
        token_namespace: args.token_namespace.clone().unwrap_or_else(|| args.namespace.clone()),
        owner: args.owner.clone(),
        repo: args.repo.clone(),
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

/// The fine-grained permissions the calls need.
fn needs(registers: bool) -> String {
    if registers { "Webhooks: read and write, and Administration: read and write" } else { "Webhooks: read and write" }
        .to_owned()
}

/// A 401, 403 or 404 on an admin-only call is a token problem; anything else is `other`'s.
fn admin_failure(
    failure: Failure,
    repo: &str,
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
    OnboardError::NoAdminRights { repo: repo.to_owned(), what, needs: needs(registers) }
}

fn report(outcome: &HookOutcome, repo: &str, url: &reqwest::Url) {
    match outcome {
        HookOutcome::Created(id) => tracing::info!(repo, hook = id, %url, "webhook created"),
        HookOutcome::Updated(id) => tracing::info!(repo, hook = id, %url, "webhook updated with a new secret"),
        HookOutcome::WouldCreate => tracing::info!(repo, %url, "dry run: a webhook would be created; GitHub unchanged"),
        HookOutcome::WouldUpdate(id) => {
            tracing::info!(repo, hook = id, %url, "dry run: this webhook would be updated; GitHub unchanged")
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
            (args.name.as_str(), args.owner.as_str(), args.repo.as_str(), args.max_runners),
            ("api", "acme", "api", 4)
        );
        assert_eq!((args.read_token, args.admin_token), (PathBuf::from("read"), PathBuf::from("admin")));
        assert_eq!((args.labels.as_str(), args.namespace.as_str()), ("linux,gpu", "ci"));
        assert_eq!(args.token_namespace.as_deref(), Some("github"));
        assert_eq!(args.output, Some(PathBuf::from("out.yaml")));
        assert!(check_args(&parse(&[]).unwrap()).is_ok());
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
            ("--owner", |a, v| a.owner = format!("a {v}")),
            ("--repo", |a, _| a.repo = "..".into()),
        ];
        for (flag, spoil) in cases {
            let mut args = parse(&[]).unwrap();
            spoil(&mut args, "A".to_lowercase());
            let error = check_args(&args).map(|()| "accepted".to_owned()).unwrap_or_else(|e| e.to_string());
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
        let error = admin_failure(failure, "acme/api", false, |_, _| OnboardError::Random);
        let text = error.to_string();
        assert!(text.contains("no admin rights on acme/api"), "{text}");
        assert!(text.contains("webhooks=write"), "{text}");
        assert!(text.contains("Webhooks: read and write"), "{text}");
    }

    #[test]
    fn a_hidden_hooks_endpoint_is_read_as_missing_admin_rights() {
        let failure = Failure { error: GitHubError::NotFound, message: "Not Found".into(), accepted_permissions: None };
        let text = admin_failure(failure, "acme/api", true, |_, _| OnboardError::Random).to_string();
        assert!(text.contains("no admin rights on acme/api (GitHub answered 404 \"Not Found\")"), "{text}");
        assert!(text.contains("Administration: read and write"), "{text}");
    }

    #[test]
    fn other_failures_keep_their_step() {
        let failure = Failure::from(GitHubError::Server { status: 502 });
        let error = admin_failure(failure, "acme/api", false, |source, _| OnboardError::ListHooks {
            repo: "acme/api".into(),
            source,
        });
        assert_eq!(error.to_string(), "listing the webhooks of acme/api: GitHub server error (502)");
    }
}
