//! Registering runners up front (`--runner-dir`): the official runner's `config.sh`, run once
//! per StatefulSet ordinal in a scratch copy of the distribution, leaves the three files the
//! runner pod needs; they become that ordinal's Secret, so no admin token has to be kept.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use reqwest::Url;

use secrecy::ExposeSecret;

use super::render::{RUNNER_FILES, RunnerFiles};
use crate::webhook::SecretBytes;

/// The runner work directory name, relative to the runner directory (the runner image's).
pub const WORK_DIR: &str = "_work";
/// Lines of `config.sh` output quoted when it fails.
const OUTPUT_TAIL_LINES: usize = 20;

/// Why a runner could not be registered. Names the runner; never holds the token.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("{dir} has no executable config.sh: point --runner-dir at an unpacked actions/runner release")]
    NoConfigSh { dir: String },
    #[error("copying the runner distribution to {scratch}: {source}")]
    Copy {
        scratch: String,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {config_sh}: {source}")]
    Start {
        config_sh: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config.sh failed for runner {runner} ({status}); its output ends:\n{output}")]
    Failed { runner: String, status: String, output: String },
    #[error("config.sh succeeded for runner {runner} but wrote no {file}: is --runner-dir an actions/runner release?")]
    MissingFile { runner: String, file: &'static str },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One argument of `config.sh`; the registration token never shows in `Debug` or [`describe`].
#[derive(Clone)]
pub enum Arg {
    Plain(String),
    Secret(SecretBytes),
}

impl PartialEq for Arg {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Plain(a), Self::Plain(b)) => a == b,
            (Self::Secret(a), Self::Secret(b)) => a.expose_secret() == b.expose_secret(),
            _ => false,
        }
    }
}

impl fmt::Debug for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plain(text) => write!(f, "{text:?}"),
            Self::Secret(_) => f.write_str("<redacted>"),
        }
    }
}

/// The arguments as a shell-like line for logs, the token as `***`.
pub fn describe(args: &[Arg]) -> String {
    args.iter()
        .map(|arg| match arg {
            Arg::Plain(text) => text.clone(),
            Arg::Secret(_) => "***".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The web address of `owner/repo` for `config.sh --url`, derived from the REST API's root:
/// `https://api.github.com` → `https://github.com`, GitHub Enterprise Server's
/// `https://HOST/api/v3` → `https://HOST`, GHE.com's `https://api.SUB.ghe.com` →
/// `https://SUB.ghe.com`; any other root (a test server) is used as it is.
pub fn repository_web_url(api_url: &Url, owner: &str, repo: &str) -> String {
    web_url(api_url, &format!("{owner}/{repo}"))
}

/// The web address of a page (`owner/repo`, or an organisation's `org`) on the GitHub whose
/// REST API root is `api_url`, as [`repository_web_url`] derives it.
pub fn web_url(api_url: &Url, page: &str) -> String {
    let mut web = api_url.clone();
    let api_path = web.path().trim_end_matches('/').to_owned();
    if let Some(root) = api_path.strip_suffix("/api/v3") {
        web.set_path(root);
    } else if let Some(host) = web.host_str().and_then(|h| h.strip_prefix("api.")).map(str::to_owned) {
        // A host always parses after dropping a leading label; keep the original if not.
        if web.set_host(Some(&host)).is_err() {
            web = api_url.clone();
        }
    }
    format!("{}/{page}", web.as_str().trim_end_matches('/'))
}

/// `config.sh` arguments registering runner `runner_name` without prompting, not installed as a
/// service, replacing a runner of the same name (a re-run re-registers), never self-updating
/// (the image pins the version), with `labels` on top of the runner's default labels, and for an
/// organisation's runners (`url` an organisation's page) into `runner_group`.
pub fn config_args(
    url: &str,
    token: &SecretBytes,
    runner_name: &str,
    labels: &[String],
    runner_group: Option<&str>,
) -> Vec<Arg> {
    let plain = |text: &str| Arg::Plain(text.to_owned());
    let mut args = vec![
        plain("--unattended"),
        plain("--url"),
        plain(url),
        plain("--token"),
        Arg::Secret(token.clone()),
        plain("--name"),
        plain(runner_name),
        plain("--work"),
        plain(WORK_DIR),
        plain("--replace"),
        plain("--disableupdate"),
    ];
    if !labels.is_empty() {
        args.extend([plain("--labels"), Arg::Plain(labels.join(","))]);
    }
    if let Some(group) = runner_group {
        args.extend([plain("--runnergroup"), plain(group)]);
    }
    args
}

/// Whether `dir` holds an executable `config.sh`.
pub fn check_runner_dir(dir: &Path) -> Result<(), RegistrationError> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        std::fs::metadata(dir.join("config.sh")).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if executable { Ok(()) } else { Err(RegistrationError::NoConfigSh { dir: dir.display().to_string() }) }
}

/// Registers one runner: copies `dir` to `scratch` (files under subdirectories hard-linked
/// where possible: the distribution is hundreds of megabytes), runs `config.sh` there and
/// reads the files it wrote. `scratch` is removed afterwards, whatever happened.
pub fn register(dir: &Path, scratch: &Path, runner_name: &str, args: &[Arg]) -> Result<RunnerFiles, RegistrationError> {
    let result = copy_distribution(dir, scratch)
        .map_err(|source| RegistrationError::Copy { scratch: scratch.display().to_string(), source })
        .and_then(|()| run_config_sh(scratch, runner_name, args))
        .and_then(|()| read_files(scratch, runner_name));
    // Holds a private key; nothing more to do if it is already gone.
    let _ = std::fs::remove_dir_all(scratch);
    result
}

fn copy_distribution(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        // A distribution configured before must not hand its identity to the copies.
        if RUNNER_FILES.iter().any(|file| name == *file) {
            continue;
        }
        let kind = entry.file_type()?;
        let target = to.join(&name);
        if kind.is_dir() {
            link_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            // Top-level files (config.sh, env.sh, .env, .path) are rewritten in place by the
            // scripts: a real copy, so the distribution is never modified.
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn link_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            link_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn run_config_sh(scratch: &Path, runner_name: &str, args: &[Arg]) -> Result<(), RegistrationError> {
    let config_sh = scratch.join("config.sh");
    let token = args.iter().find_map(|arg| match arg {
        Arg::Secret(secret) => Some(secret.clone()),
        Arg::Plain(_) => None,
    });
    let os_args: Vec<OsString> = args
        .iter()
        .map(|arg| match arg {
            Arg::Plain(text) => OsString::from(text),
            Arg::Secret(secret) => OsString::from(String::from_utf8_lossy(secret.expose_secret()).into_owned()),
        })
        .collect();
    tracing::info!(runner = runner_name, args = %describe(args), "running config.sh");
    let output = Command::new(&config_sh)
        .args(&os_args)
        .current_dir(scratch)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| RegistrationError::Start { config_sh: config_sh.display().to_string(), source })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    if let Some(token) = token.filter(|t| !t.expose_secret().is_empty()) {
        text = text.replace(&*String::from_utf8_lossy(token.expose_secret()), "***");
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(OUTPUT_TAIL_LINES)..].join("\n");
    Err(RegistrationError::Failed { runner: runner_name.to_owned(), status: output.status.to_string(), output: tail })
}

fn read_files(scratch: &Path, runner_name: &str) -> Result<RunnerFiles, RegistrationError> {
    let mut files = BTreeMap::new();
    for file in RUNNER_FILES {
        let path: PathBuf = scratch.join(file);
        match std::fs::read(&path) {
            Ok(bytes) => {
                files.insert(file.to_owned(), bytes);
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(RegistrationError::MissingFile { runner: runner_name.to_owned(), file });
            }
            Err(source) => return Err(RegistrationError::Read { path: path.display().to_string(), source }),
        }
    }
    Ok(RunnerFiles(files))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::secret_bytes;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn github_com_api_becomes_the_github_com_repository_page() {
        assert_eq!(repository_web_url(&url("https://api.github.com"), "acme", "api"), "https://github.com/acme/api");
    }

    #[test]
    fn enterprise_server_api_v3_becomes_the_server_root() {
        assert_eq!(
            repository_web_url(&url("https://ghe.example.com/api/v3/"), "acme", "api"),
            "https://ghe.example.com/acme/api"
        );
    }

    #[test]
    fn ghe_com_api_host_loses_its_api_label() {
        assert_eq!(
            repository_web_url(&url("https://api.octo.ghe.com"), "acme", "api"),
            "https://octo.ghe.com/acme/api"
        );
    }

    #[test]
    fn any_other_api_root_is_used_as_it_is() {
        assert_eq!(repository_web_url(&url("http://127.0.0.1:9/"), "acme", "api"), "http://127.0.0.1:9/acme/api");
    }

    #[test]
    fn config_sh_runs_unattended_replacing_without_service_or_updates() {
        let args = config_args(
            "https://github.com/acme/api",
            &secret_bytes("REGTOKEN"),
            "api-0",
            &["linux".into(), "gpu".into()],
            None,
        );
        assert_eq!(
            describe(&args),
            "--unattended --url https://github.com/acme/api --token *** --name api-0 --work _work --replace --disableupdate --labels linux,gpu"
        );
        assert!(!format!("{args:?}").contains("REGTOKEN"));
        assert!(args.contains(&Arg::Secret(secret_bytes("REGTOKEN"))));
    }

    #[test]
    fn no_labels_means_no_labels_flag() {
        let args = config_args("https://github.com/acme/api", &secret_bytes("T"), "api-0", &[], None);
        assert!(!describe(&args).contains("--labels"));
        assert!(!describe(&args).contains("--runnergroup"), "a repository's runners have no group");
    }

    #[test]
    fn organisation_runners_register_at_the_organisations_page_into_their_group() {
        let url = web_url(&url("https://api.github.com"), "acme");
        assert_eq!(url, "https://github.com/acme");
        let args = config_args(&url, &secret_bytes("T"), "build-0", &[], Some("gpu runners"));
        assert_eq!(
            describe(&args),
            "--unattended --url https://github.com/acme --token *** --name build-0 --work _work --replace --disableupdate --runnergroup gpu runners"
        );
        assert!(args.contains(&Arg::Plain("gpu runners".into())), "the group is one argument");
    }
}
