//! `github-action-autoscaler onboard`, the real binary, against the fake GitHub on loopback.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use common::fake_github::{Access, FakeGitHub};
use common::job_payload;
use common::server::{Server, http};
use gaa::catalog::secret_value;
use gaa::crd::ScaledActionRunner;
use gaa::manifests::Manifests;
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_github-action-autoscaler");
const ADMIN: &str = "ghp_AdminTokenOnlyForCalls0123456789";
const READ: &str = "ghp_ReadTokenForTheSecret9876543210";
const REPO: &str = "acme/api";
const HOOK_URL: &str = "https://ci.example.com/webhook";
const ORG: &str = "acme";

struct Setup {
    github: FakeGitHub,
    dir: tempfile::TempDir,
    read: PathBuf,
    admin: PathBuf,
}

async fn setup() -> Setup {
    let setup = setup_without_repository().await;
    setup.github.add_repo(REPO);
    setup
}

async fn setup_without_repository() -> Setup {
    let github = FakeGitHub::start().await;
    github.add_token(ADMIN, 5000);
    github.add_token(READ, 5000);
    let dir = tempfile::tempdir().unwrap();
    let read = dir.path().join("read-token");
    let admin = dir.path().join("admin-token");
    std::fs::write(&read, format!("{READ}\n")).unwrap();
    std::fs::write(&admin, format!("{ADMIN}\n")).unwrap();
    Setup { github, dir, read, admin }
}

struct Outcome {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Setup {
    /// Onboards `acme/api` as runner `api` in namespace `ci` with `extra` flags, logging at
    /// trace level so a leak would show.
    async fn onboard(&self, extra: &[&str]) -> Outcome {
        self.onboard_with_env(extra, &[]).await
    }

    async fn onboard_with_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Outcome {
        self.onboard_target(&["-o", "acme", "-r", "api"], extra, env).await
    }

    /// Onboards the runners of organisation `acme` as runner `api`, like [`Self::onboard`].
    async fn onboard_org(&self, extra: &[&str]) -> Outcome {
        self.onboard_target(&["--org", ORG], extra, &[]).await
    }

    /// Onboards whatever `target` (`-o … -r …`, `--org …`, or a mistake) names.
    async fn onboard_target(&self, target: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Outcome {
        let mut command = Command::new(BIN);
        command
            .args(["onboard", "-n", "api", "-m", "2", "-l", "linux", "-s", "ci"])
            .args(target)
            .arg("-p")
            .arg(&self.read)
            .arg("-a")
            .arg(&self.admin)
            .args(["--github-api-url", &self.github.url()])
            .args(extra)
            .env("GAA_LOG", "trace")
            .env("TMPDIR", self.scratch());
        if !extra.contains(&"--webhook-url") {
            command.args(["--webhook-url", HOOK_URL]);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        std::fs::create_dir_all(self.scratch()).unwrap();
        let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
        Outcome {
            success: output.status.success(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    /// The onboarding process's temporary directory.
    fn scratch(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }
}

fn manifests(yaml: &str) -> Manifests {
    let mut manifests = Manifests::default();
    manifests.add_file(Path::new("onboard.yaml"), yaml);
    assert!(manifests.problems.is_empty(), "{:?}", manifests.problems);
    manifests
}

fn secret<'a>(manifests: &'a Manifests, name: &str) -> &'a Secret {
    let found = manifests.secrets.iter().find(|s| s.object.metadata.name.as_deref() == Some(name));
    &found.unwrap_or_else(|| panic!("no Secret {name} printed")).object
}

fn secret_text(manifests: &Manifests, name: &str, key: &str) -> String {
    let value = secret_value(secret(manifests, name), key).unwrap_or_else(|| panic!("Secret {name} has no {key}"));
    String::from_utf8(secrecy::ExposeSecret::expose_secret(&value).to_vec()).unwrap()
}

fn printed_webhook_secret(yaml: &str) -> String {
    secret_text(&manifests(yaml), "api-webhook", "webhook-secret")
}

fn only_runner(manifests: &Manifests) -> &ScaledActionRunner {
    assert_eq!(manifests.runners.len(), 1);
    &manifests.runners[0].object
}

#[tokio::test]
async fn first_run_creates_one_active_json_workflow_job_hook_signed_with_the_printed_secret() {
    let setup = setup().await;
    let run = setup.onboard(&[]).await;
    assert!(run.success, "{}", run.stderr);
    let hooks = setup.github.hooks(REPO);
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!(hook.url, HOOK_URL);
    assert_eq!(hook.events, vec!["workflow_job"]);
    assert_eq!((hook.content_type.as_str(), hook.insecure_ssl.as_str(), hook.active), ("json", "0", true));
    let secret = printed_webhook_secret(&run.stdout);
    assert_eq!(hook.secret.as_deref(), Some(secret.as_str()));
    assert!(secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()), "{secret}");
    assert!(run.stderr.contains("webhook created"), "{}", run.stderr);
}

#[tokio::test]
async fn second_run_updates_the_same_hook_with_a_new_secret_and_adds_none() {
    let setup = setup().await;
    let first = setup.onboard(&[]).await;
    let output = setup.dir.path().join("api.yaml");
    let second = setup.onboard(&["-f", output.to_str().unwrap()]).await;
    assert!(first.success && second.success, "{}{}", first.stderr, second.stderr);
    assert_eq!(second.stdout, "", "with --output nothing goes to standard output");
    let hooks = setup.github.hooks(REPO);
    assert_eq!(hooks.len(), 1, "running twice leaves one hook");
    let written = std::fs::read_to_string(&output).unwrap();
    let (old, new) = (printed_webhook_secret(&first.stdout), printed_webhook_secret(&written));
    assert_ne!(old, new, "each run rotates the secret");
    assert_eq!(hooks[0].secret.as_deref(), Some(new.as_str()), "the hook has the secret just printed");
    assert!(second.stderr.contains("webhook updated"), "{}", second.stderr);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&output).unwrap().permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn a_hook_listed_on_a_later_page_is_updated_in_place_keeping_its_other_events() {
    let setup = setup().await;
    for i in 0..150 {
        setup.github.add_hook(REPO, &format!("https://other-{i}.example.com/hook"), &["push"]);
    }
    let ours = setup.github.add_hook(REPO, HOOK_URL, &["push"]);
    let run = setup.onboard(&[]).await;
    assert!(run.success, "{}", run.stderr);
    let hooks = setup.github.hooks(REPO);
    assert_eq!(hooks.len(), 151);
    let hook = hooks.iter().find(|h| h.id == ours).unwrap();
    assert_eq!(hook.events, vec!["push", "workflow_job"]);
    assert_eq!(hook.secret, Some(printed_webhook_secret(&run.stdout)));
    let pages = setup.github.requests().iter().filter(|r| r.method == "GET" && r.path.ends_with("/hooks")).count();
    assert_eq!(pages, 2, "both pages of 100 were read");
}

#[tokio::test]
async fn a_dry_run_changes_nothing_on_github_and_still_prints_the_yaml() {
    let setup = setup().await;
    let run = setup.onboard(&["--dry-run"]).await;
    assert!(run.success, "{}", run.stderr);
    assert!(setup.github.hooks(REPO).is_empty());
    let methods: BTreeSet<String> = setup.github.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, BTreeSet::from(["GET".to_owned()]));
    assert!(run.stderr.contains("would be created"), "{}", run.stderr);
    assert_eq!(printed_webhook_secret(&run.stdout).len(), 64);
}

#[tokio::test]
async fn a_token_of_an_account_without_admin_rights_is_told_to_use_an_admin_token() {
    let setup = setup().await;
    setup.github.set_access(ADMIN, REPO, Access::Read);
    let run = setup.onboard(&[]).await;
    assert!(!run.success);
    assert!(run.stderr.contains("the admin token has no admin rights on acme/api"), "{}", run.stderr);
    assert!(run.stderr.contains("use a token of an account that administers the repository"), "{}", run.stderr);
    assert!(setup.github.hooks(REPO).is_empty());
    assert_eq!(run.stdout, "");
}

#[tokio::test]
async fn a_fine_grained_token_without_the_webhooks_permission_gets_githubs_403_and_the_permission_to_add() {
    let setup = setup().await;
    setup.github.set_access(ADMIN, REPO, Access::FineGrainedWithoutAdminPermissions);
    let run = setup.onboard(&[]).await;
    assert!(!run.success);
    assert!(run.stderr.contains("GitHub answered 403"), "{}", run.stderr);
    assert!(run.stderr.contains("webhooks=read"), "{}", run.stderr);
    assert!(run.stderr.contains("Webhooks: read and write"), "{}", run.stderr);
}

#[tokio::test]
async fn an_unknown_repository_is_reported_with_what_to_check() {
    let setup = setup_without_repository().await;
    let run = setup.onboard(&[]).await;
    assert!(!run.success);
    assert!(run.stderr.contains("repository acme/api not found: check --owner and --repo"), "{}", run.stderr);
    assert_eq!(run.stdout, "");
}

#[tokio::test]
async fn webhook_urls_github_cannot_use_are_refused_before_any_call() {
    let setup = setup().await;
    for (url, says) in [
        ("http://ci.example.com/webhook", "use https://"),
        ("ftp://ci.example.com/webhook", "cannot deliver to a ftp:// URL"),
        ("ci.example.com/webhook", "not a URL"),
    ] {
        let run = setup.onboard(&["--webhook-url", url]).await;
        assert!(!run.success, "{url}");
        assert!(run.stderr.contains(says), "{url}: {}", run.stderr);
    }
    assert!(setup.github.requests().is_empty());
}

#[tokio::test]
async fn an_empty_or_missing_token_file_is_refused_naming_the_file() {
    let setup = setup().await;
    std::fs::write(&setup.admin, "\n").unwrap();
    let empty = setup.onboard(&[]).await;
    assert!(!empty.success);
    assert!(empty.stderr.contains("the admin token file") && empty.stderr.contains("is empty"), "{}", empty.stderr);
    std::fs::remove_file(&setup.read).unwrap();
    let missing = setup.onboard(&[]).await;
    assert!(!missing.success);
    assert!(
        missing.stderr.contains(&format!("reading the read token file {}", setup.read.display())),
        "{}",
        missing.stderr
    );
    assert!(setup.github.requests().is_empty());
}

#[tokio::test]
async fn a_revoked_admin_token_is_told_to_be_replaced() {
    let setup = setup().await;
    std::fs::write(&setup.admin, "ghp_revoked\n").unwrap();
    let run = setup.onboard(&[]).await;
    assert!(!run.success);
    assert!(run.stderr.contains("GitHub rejected the admin token (401)"), "{}", run.stderr);
}

#[tokio::test]
async fn tokens_never_reach_the_logs_and_the_admin_token_never_the_output() {
    let setup = setup().await;
    let run = setup.onboard(&[]).await;
    assert!(run.success, "{}", run.stderr);
    let encoded = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    for token in [ADMIN, READ] {
        assert!(!run.stderr.contains(token), "a token is in the log");
        assert!(!run.stderr.contains(&encoded(token)), "an encoded token is in the log");
    }
    assert!(!run.stdout.contains(ADMIN) && !run.stdout.contains(&encoded(ADMIN)), "the admin token was printed");
    assert_eq!(secret_text(&manifests(&run.stdout), "api-github-token", "token"), READ);
}

/// Where the schema validator (`scripts/validate-manifests`) finds a dry run's output: the
/// target directory's `onboard-rendered.yaml`.
fn rendered_path() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("onboard-rendered.yaml")
}

#[tokio::test]
async fn the_printed_yaml_is_our_crd_and_round_trips_unchanged() {
    let setup = setup().await;
    let run =
        setup.onboard(&["--dry-run", "-g", "github", "--min-runners", "1", "--image", "ghcr.io/acme/runner:2"]).await;
    assert!(run.success, "{}", run.stderr);
    std::fs::write(rendered_path(), &run.stdout).unwrap();
    let documents: Vec<Value> = serde_saphyr::from_multiple(&run.stdout).unwrap();
    let kinds: Vec<&str> = documents.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["Secret", "Secret", "ScaledActionRunner"]);
    for document in &documents {
        // A misspelt field would be dropped by the typed model: the document would not come back unchanged.
        let back = match document["kind"].as_str() {
            Some("Secret") => serde_json::to_value(serde_json::from_value::<Secret>(document.clone()).unwrap()),
            _ => serde_json::to_value(serde_json::from_value::<ScaledActionRunner>(document.clone()).unwrap()),
        };
        assert_eq!(&back.unwrap(), document);
    }
    let runner = &documents[2];
    assert_eq!(runner["apiVersion"], "runner.devjoes.com/v1alpha1");
    assert_eq!(runner["metadata"]["namespace"], "ci");
    let spec = &runner["spec"];
    assert_eq!((spec["owner"].as_str(), spec["repo"].as_str()), (Some("acme"), Some("api")));
    assert_eq!((spec["maxRunners"].as_i64(), spec["minRunners"].as_i64()), (Some(2), Some(1)));
    assert_eq!(spec["githubTokenSecret"], "api-github-token");
    assert_eq!(spec["webhookSecret"], "api-webhook");
    assert_eq!(spec["runner"]["runnerLabels"], "linux");
    assert_eq!(spec["runner"]["image"], "ghcr.io/acme/runner:2");
    assert_eq!(documents[0]["metadata"]["namespace"], "github", "the token Secret goes to --token-namespace");
    assert_eq!(documents[1]["metadata"]["namespace"], "ci");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_loaded_with_the_printed_yaml_accepts_a_delivery_signed_with_the_printed_secret() {
    let setup = setup().await;
    let run = setup.onboard(&[]).await;
    assert!(run.success, "{}", run.stderr);
    let manifests_dir = setup.dir.path().join("manifests");
    std::fs::create_dir_all(&manifests_dir).unwrap();
    std::fs::write(manifests_dir.join("api.yaml"), &run.stdout).unwrap();
    let data = setup.dir.path().join("data");
    let server = Server::start_with(&data, &manifests_dir, &["--github-api-url", &setup.github.url()]).await;
    let secret = printed_webhook_secret(&run.stdout);
    let body = serde_json::to_vec(&job_payload(REPO, 41, "queued", &["self-hosted", "linux"])).unwrap();
    let client = http();
    assert_eq!(server.deliver_signed(&client, "d-wrong", body.clone(), "not-the-printed-secret").await, 401);
    assert_eq!(server.deliver_signed(&client, "d-right", body, &secret).await, 202, "{}", server.log());
    let runner = server.runner("ci", "api").await;
    assert_eq!(runner["demand"], 1, "{runner}");
}

/// A copy of the stand-in runner distribution, so a test can see it is left untouched.
fn fake_runner_dir(root: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/onboard/fake-runner");
    let copy = root.join("actions-runner");
    std::fs::create_dir_all(copy.join("bin")).unwrap();
    for file in ["config.sh", "bin/README"] {
        std::fs::copy(source.join(file), copy.join(file)).unwrap();
    }
    copy
}

#[tokio::test]
async fn a_runner_dir_registers_one_runner_per_ordinal_into_its_own_secret() {
    let setup = setup().await;
    let runner_dir = fake_runner_dir(setup.dir.path());
    let run = setup.onboard(&["--runner-dir", runner_dir.to_str().unwrap()]).await;
    assert!(run.success, "{}", run.stderr);
    let printed = manifests(&run.stdout);
    assert_eq!(only_runner(&printed).spec.runner_secrets, vec!["api-0", "api-1"]);
    let tokens = setup.github.registration_tokens();
    assert_eq!(tokens.len(), 1, "one registration token serves every runner");
    for ordinal in 0..2 {
        let name = format!("api-{ordinal}");
        let data = secret(&printed, &name).data.clone().unwrap();
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(keys, vec![".credentials", ".credentials_rsaparams", ".runner"]);
        let runner: Value = serde_json::from_slice(&data[".runner"].0).unwrap();
        assert_eq!(runner["agentName"], name.as_str());
        assert_eq!(runner["gitHubUrl"], format!("{}/acme/api", setup.github.url()));
        assert_eq!((runner["labels"].as_str(), runner["workFolder"].as_str()), (Some("linux"), Some("_work")));
        assert_eq!(runner["runnerGroup"], "", "a repository's runners name no runner group");
        assert!(String::from_utf8_lossy(&data[".credentials"].0).contains(&tokens[0]));
        let pod_dir = setup.dir.path().join(format!("pod-{ordinal}"));
        std::fs::create_dir_all(&pod_dir).unwrap();
        let written = gaa::operator::credentials::write_files(secret(&printed, &name), &pod_dir).unwrap();
        assert_eq!(written, 3, "the init container writes the three files back");
    }
    assert!(!run.stderr.contains(&tokens[0]), "the registration token is in the log");
    assert!(!runner_dir.join(".runner").exists(), "the distribution itself was configured");
    assert_eq!(std::fs::read_dir(setup.scratch()).unwrap().count(), 0, "a scratch copy was left behind");
}

#[tokio::test]
async fn a_failing_config_sh_is_reported_with_its_output_but_not_the_token() {
    let setup = setup().await;
    let runner_dir = fake_runner_dir(setup.dir.path());
    let run =
        setup.onboard_with_env(&["--runner-dir", runner_dir.to_str().unwrap()], &[("FAKE_CONFIG_SH_FAIL", "1")]).await;
    assert!(!run.success);
    assert!(run.stderr.contains("config.sh failed for runner api-0"), "{}", run.stderr);
    assert!(run.stderr.contains("Http response code: Forbidden"), "{}", run.stderr);
    let tokens = setup.github.registration_tokens();
    assert!(!tokens.is_empty() && !run.stderr.contains(&tokens[0]), "the registration token is in the error");
    assert_eq!(run.stdout, "");
    assert_eq!(std::fs::read_dir(setup.scratch()).unwrap().count(), 0, "a scratch copy was left behind");
}

#[tokio::test]
async fn a_dry_run_with_a_runner_dir_names_the_runner_secrets_but_registers_nothing() {
    let setup = setup().await;
    let runner_dir = fake_runner_dir(setup.dir.path());
    let run = setup.onboard(&["--dry-run", "--runner-dir", runner_dir.to_str().unwrap()]).await;
    assert!(run.success, "{}", run.stderr);
    assert!(setup.github.registration_tokens().is_empty());
    let printed = manifests(&run.stdout);
    assert_eq!(only_runner(&printed).spec.runner_secrets, vec!["api-0", "api-1"]);
    assert_eq!(printed.secrets.len(), 2, "only the token and webhook Secrets");
}

/// `scripts/onboard.sh` with the binary under test and a kubectl that keeps what it was given.
async fn onboard_script(setup: &Setup, extra: &[&str]) -> (Outcome, Option<String>) {
    let applied = setup.dir.path().join("applied.yaml");
    let kubectl = setup.dir.path().join("kubectl");
    std::fs::write(
        &kubectl,
        format!("#!/bin/sh\n[ \"$1 $2 $3\" = 'apply -f -' ] || exit 9\ncat > '{}'\n", applied.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut command = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/onboard.sh"));
    command
        .args(["-n", "api", "-o", "acme", "-r", "api", "-m", "2", "-s", "ci", "--webhook-url", HOOK_URL])
        .arg("-p")
        .arg(&setup.read)
        .arg("-a")
        .arg(&setup.admin)
        .args(["--github-api-url", &setup.github.url()])
        .args(extra)
        .env("GAA_BIN", BIN)
        .env("KUBECTL", &kubectl);
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    let outcome = Outcome {
        success: output.status.success(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    };
    (outcome, std::fs::read_to_string(applied).ok())
}

#[tokio::test]
async fn the_script_applies_what_onboard_printed() {
    let setup = setup().await;
    let (run, applied) = onboard_script(&setup, &[]).await;
    assert!(run.success, "{}", run.stderr);
    let applied = applied.expect("kubectl apply -f - was not run");
    assert_eq!(setup.github.hooks(REPO)[0].secret, Some(printed_webhook_secret(&applied)));
}

#[tokio::test]
async fn the_script_with_dry_run_prints_and_applies_nothing() {
    let setup = setup().await;
    let (run, applied) = onboard_script(&setup, &["--dry-run"]).await;
    assert!(run.success, "{}", run.stderr);
    assert_eq!(applied, None, "kubectl was run on a dry run");
    assert_eq!(only_runner(&manifests(&run.stdout)).spec.owner, "acme");
    assert!(setup.github.hooks(REPO).is_empty());
}

// Organisation runners (`--org`).

/// Every document of a printed YAML stream, as JSON.
fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---\n")
        .map(|doc| doc.trim_start_matches("---\n"))
        .filter(|doc| doc.lines().any(|line| !line.starts_with('#') && !line.trim().is_empty()))
        .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap_or_else(|e| panic!("{e}: {doc}")))
        .collect()
}

/// The printed ScaledActionRunner's spec.
fn printed_runner_spec(yaml: &str) -> Value {
    let runners: Vec<Value> =
        documents(yaml).into_iter().filter(|d| d["kind"] == "ScaledActionRunner").map(|d| d["spec"].clone()).collect();
    assert_eq!(runners.len(), 1, "{yaml}");
    runners[0].clone()
}

/// The printed Secret `name`'s `key`, decoded.
fn printed_secret(yaml: &str, name: &str, key: &str) -> String {
    let secret = documents(yaml)
        .into_iter()
        .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no Secret {name} printed"));
    let encoded = secret["data"][key].as_str().unwrap_or_else(|| panic!("Secret {name} has no {key}"));
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).unwrap()).unwrap()
}

async fn org_setup() -> Setup {
    let setup = setup_without_repository().await;
    setup.github.add_org_repo(ORG, "api");
    setup.github.add_org_repo(ORG, "web");
    setup
}

#[tokio::test]
async fn an_organisation_gets_one_workflow_job_hook_that_a_second_run_updates_in_place() {
    let setup = org_setup().await;
    let first = setup.onboard_org(&[]).await;
    assert!(first.success, "{}", first.stderr);
    let hooks = setup.github.org_hooks(ORG);
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!((hook.url.as_str(), hook.events.clone()), (HOOK_URL, vec!["workflow_job".to_owned()]));
    assert_eq!((hook.content_type.as_str(), hook.insecure_ssl.as_str(), hook.active), ("json", "0", true));
    assert_eq!(hook.secret, Some(printed_secret(&first.stdout, "api-webhook", "webhook-secret")));
    assert!(first.stderr.contains("webhook created"), "{}", first.stderr);
    assert!(setup.github.hooks("acme/api").is_empty() && setup.github.hooks("acme/web").is_empty());

    let second = setup.onboard_org(&[]).await;
    assert!(second.success, "{}", second.stderr);
    let hooks = setup.github.org_hooks(ORG);
    assert_eq!(hooks.len(), 1, "running twice leaves one hook");
    assert_eq!(hooks[0].id, hook.id, "updated in place");
    let rotated = printed_secret(&second.stdout, "api-webhook", "webhook-secret");
    assert_ne!(hook.secret.as_deref(), Some(rotated.as_str()), "each run rotates the secret");
    assert_eq!(hooks[0].secret, Some(rotated));
    assert!(second.stderr.contains("webhook updated"), "{}", second.stderr);
    assert!(second.stderr.contains("scope=\"organisation acme\""), "{}", second.stderr);
    for run in [&first, &second] {
        assert!(!run.stderr.contains(ADMIN) && !run.stderr.contains(READ), "a token is in the log");
        assert!(!run.stdout.contains(ADMIN), "the admin token is in the output");
    }
    let writes: BTreeSet<String> =
        setup.github.requests().into_iter().filter(|r| r.method != "GET").map(|r| r.path).collect();
    assert_eq!(writes, BTreeSet::from(["/orgs/acme/hooks".to_owned(), format!("/orgs/acme/hooks/{}", hook.id)]));
}

#[tokio::test]
async fn the_organisation_runner_is_printed_without_a_repository_and_with_its_group_when_named() {
    let setup = org_setup().await;
    let run = setup.onboard_org(&[]).await;
    assert!(run.success, "{}", run.stderr);
    let spec = printed_runner_spec(&run.stdout);
    assert_eq!(spec["owner"], ORG);
    assert!(spec.get("repo").is_none() && spec.get("runnerGroup").is_none(), "{spec}");
    assert_eq!(
        (spec["githubTokenSecret"].as_str(), spec["webhookSecret"].as_str()),
        (Some("api-github-token"), Some("api-webhook"))
    );
    assert_eq!(printed_secret(&run.stdout, "api-github-token", "token"), READ);
    assert!(run.stdout.starts_with("# Onboarding of organisation acme"), "{}", run.stdout);

    let grouped = setup.onboard_org(&["--runner-group", "gpu"]).await;
    assert!(grouped.success, "{}", grouped.stderr);
    assert_eq!(printed_runner_spec(&grouped.stdout)["runnerGroup"], "gpu");
    assert_eq!(setup.github.org_hooks(ORG).len(), 1);
}

#[tokio::test]
async fn org_with_repo_or_owner_is_refused_before_any_call() {
    let setup = org_setup().await;
    for (target, expected) in [
        (&["--org", ORG, "-r", "api"][..], "--org with --repo"),
        (&["--org", ORG, "-o", ORG][..], "--org with --owner"),
        (&["-o", ORG][..], "--owner without --repo"),
    ] {
        let run = setup.onboard_target(target, &[], &[]).await;
        assert!(!run.success, "{target:?} was accepted");
        assert!(run.stderr.contains(expected), "{target:?}: {}", run.stderr);
        assert_eq!(run.stdout, "");
    }
    let run = setup.onboard(&["--runner-group", "gpu"]).await;
    assert!(run.stderr.contains("--runner-group without --org"), "{}", run.stderr);
    assert!(setup.github.requests().is_empty(), "GitHub was called");
}

#[tokio::test]
async fn an_admin_token_that_does_not_own_the_organisation_is_told_the_scope_and_permission_github_wants() {
    let setup = org_setup().await;
    setup.github.set_org_access(ADMIN, ORG, Access::Read);
    let member = setup.onboard_org(&[]).await;
    assert!(!member.success);
    assert!(member.stderr.contains("the admin token is not an owner's of organisation acme"), "{}", member.stderr);
    assert!(member.stderr.contains("classic `admin:org_hook` scope"), "{}", member.stderr);

    setup.github.set_org_access(ADMIN, ORG, Access::FineGrainedWithoutAdminPermissions);
    let fine_grained = setup.onboard_org(&[]).await;
    assert!(!fine_grained.success);
    assert!(fine_grained.stderr.contains("organization_hooks=read"), "{}", fine_grained.stderr);
    assert!(
        fine_grained.stderr.contains("organisation permission Webhooks: read and write"),
        "{}",
        fine_grained.stderr
    );
    assert!(setup.github.org_hooks(ORG).is_empty());
    assert_eq!(fine_grained.stdout, "");
}

#[tokio::test]
async fn an_unknown_organisation_or_a_users_login_is_reported_with_what_to_check() {
    let setup = org_setup().await;
    setup.github.add_repo("someone/api");
    for org in ["nobody", "someone"] {
        let run = setup.onboard_target(&["--org", org], &[], &[]).await;
        assert!(!run.success);
        assert!(run.stderr.contains(&format!("organisation {org} not found: check --org")), "{}", run.stderr);
        assert!(run.stderr.contains("use --owner and --repo"), "{}", run.stderr);
    }
    assert!(setup.github.requests().iter().all(|r| r.method == "GET"));
}

#[tokio::test]
async fn a_runner_dir_registers_the_organisations_runners_into_their_runner_group() {
    let setup = org_setup().await;
    setup.github.add_runner_group(ORG, "gpu");
    let runner_dir = fake_runner_dir(setup.dir.path());
    let run = setup.onboard_org(&["--runner-dir", runner_dir.to_str().unwrap(), "--runner-group", "gpu"]).await;
    assert!(run.success, "{}", run.stderr);
    let tokens = setup.github.registration_tokens_of(ORG);
    assert_eq!(tokens.len(), 1, "one organisation registration token serves every runner");
    assert!(setup.github.registration_tokens_of("acme/api").is_empty());
    let spec = printed_runner_spec(&run.stdout);
    assert_eq!(spec["runnerSecrets"], serde_json::json!(["api-0", "api-1"]));
    for ordinal in 0..2 {
        let name = format!("api-{ordinal}");
        let runner: Value = serde_json::from_str(&printed_secret(&run.stdout, &name, ".runner")).unwrap();
        assert_eq!(runner["agentName"], name.as_str());
        assert_eq!(runner["gitHubUrl"], format!("{}/acme", setup.github.url()), "registered at the organisation");
        assert_eq!(runner["runnerGroup"], "gpu");
        assert!(printed_secret(&run.stdout, &name, ".credentials").contains(&tokens[0]));
    }
    assert!(!run.stderr.contains(&tokens[0]), "the registration token is in the log");
    assert_eq!(std::fs::read_dir(setup.scratch()).unwrap().count(), 0, "a scratch copy was left behind");

    let default = setup.onboard_org(&["--runner-dir", runner_dir.to_str().unwrap()]).await;
    assert!(default.success, "{}", default.stderr);
    let runner: Value = serde_json::from_str(&printed_secret(&default.stdout, "api-0", ".runner")).unwrap();
    assert_eq!(runner["runnerGroup"], "Default", "without --runner-group the runners go to Default");
}

#[tokio::test]
async fn a_runner_group_the_organisation_lacks_is_refused_before_github_is_changed() {
    let setup = org_setup().await;
    setup.github.add_runner_group(ORG, "gpu");
    let runner_dir = fake_runner_dir(setup.dir.path());
    let run = setup.onboard_org(&["--runner-dir", runner_dir.to_str().unwrap(), "--runner-group", "arm"]).await;
    assert!(!run.success);
    assert!(
        run.stderr.contains("organisation acme has no runner group \"arm\" (it has Default, gpu)"),
        "{}",
        run.stderr
    );
    assert!(setup.github.org_hooks(ORG).is_empty(), "the hook was changed");
    assert!(setup.github.registration_tokens().is_empty());
    assert_eq!(run.stdout, "");
}

#[tokio::test]
async fn an_organisation_dry_run_only_reads_and_says_what_it_would_do() {
    let setup = org_setup().await;
    setup.github.add_runner_group(ORG, "gpu");
    let runner_dir = fake_runner_dir(setup.dir.path());
    let run =
        setup.onboard_org(&["--dry-run", "--runner-dir", runner_dir.to_str().unwrap(), "--runner-group", "gpu"]).await;
    assert!(run.success, "{}", run.stderr);
    assert!(run.stderr.contains("would be created"), "{}", run.stderr);
    let methods: BTreeSet<String> = setup.github.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, BTreeSet::from(["GET".to_owned()]));
    assert!(setup.github.org_hooks(ORG).is_empty() && setup.github.registration_tokens().is_empty());
    let spec = printed_runner_spec(&run.stdout);
    assert_eq!(
        (spec["runnerGroup"].as_str(), spec["runnerSecrets"].clone()),
        (Some("gpu"), serde_json::json!(["api-0", "api-1"]))
    );
}
