//! Runner groups in the real binary: two organisation runners of one organisation in two
//! groups, each counting only the jobs of repositories its group admits on GitHub, following
//! the groups' settings as they change, and a running job counted in the group it ran in.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::collections::HashSet;

use common::app_keys::app_key_pair;
use common::fake_github::{FakeGitHub, GroupAccess, JobState};
use common::server::{Server, http};
use serde_json::{Value, json};

const ACME_SECRET: &str = "acme-organisation-webhook-secret";
const ACME_TOKEN: &str = "ghp_acme_organisation_token";
const READER_TOKEN: &str = "ghp_acme_token_that_cannot_read_groups";

fn document(kind: &str, name: &str, body: Value) -> String {
    let (api, key) = match kind {
        "Secret" => ("v1", "stringData"),
        _ => ("runner.devjoes.com/v1alpha1", "spec"),
    };
    let mut object = json!({"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "ci"}});
    object[key] = body;
    object.to_string()
}

/// `builders` registers in group `builders`, `general` in `Default`; both carry `linux` and read
/// GitHub with `credential` (a Secret's keys).
fn manifests(root: &Path, credential: &[(&str, &str)]) -> PathBuf {
    let dir = root.join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let runner = |group: Option<&str>| {
        let mut spec = json!({"owner": "acme", "maxRunners": 9, "scaleFactor": "0", "webhookSecret": "acme-hook",
            "githubTokenSecret": "acme-token", "runner": {"runnerLabels": "linux"}});
        if let Some(group) = group {
            spec["runnerGroup"] = json!(group);
        }
        spec
    };
    let documents = [
        document("ScaledActionRunner", "builders", runner(Some("builders"))),
        document("ScaledActionRunner", "general", runner(None)),
        document("Secret", "acme-hook", json!({"webhook-secret": ACME_SECRET})),
        document("Secret", "acme-token", credential.iter().map(|(k, v)| (k.to_string(), json!(v))).collect()),
    ];
    std::fs::write(dir.join("runners.yaml"), documents.join("\n---\n")).unwrap();
    dir
}

fn payload(repo: &str, job: u64, labels: &[&str]) -> Vec<u8> {
    let mut payload = common::job_payload(repo, job, "queued", labels);
    payload["repository"]["id"] = json!(job * 1000);
    payload["workflow_job"]["run_id"] = json!(job * 10);
    serde_json::to_vec(&payload).unwrap()
}

async fn demands(server: &Server) -> [u64; 2] {
    let mut out = [0; 2];
    for (slot, name) in out.iter_mut().zip(["builders", "general"]) {
        *slot = server.runner("ci", name).await["demand"].as_u64().unwrap();
    }
    out
}

async fn demands_until(server: &Server, want: [u64; 2], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = demands(server).await;
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: demands {now:?}, wanted {want:?}\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// acme: api, web and tools private, site public; group `builders` open to acme/api alone,
/// `Default` to every private repository.
fn organisation(github: &FakeGitHub) {
    for name in ["api", "web", "site", "tools"] {
        github.add_org_repo("acme", name);
    }
    github.set_repo_public("acme/site", true);
    github.add_runner_group("acme", "builders");
    let selected = |repos: &[&str]| GroupAccess {
        visibility: "selected",
        selected_repositories: repos.iter().map(|r| r.to_string()).collect(),
        ..GroupAccess::default()
    };
    github.set_runner_group_access("acme", "builders", selected(&["acme/api"]));
}

async fn start(github: &FakeGitHub, root: &Path, credential: &[(&str, &str)]) -> Server {
    let manifests = manifests(root, credential);
    let args = ["--github-api-url", &github.url(), "--cache-window", "1s", "--cache-window-when-empty", "2s"]
        .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with(&root.join("data"), &manifests, &args).await
}

/// Queues four jobs at GitHub and delivers them: acme/api and acme/web (`linux`), acme/site
/// (public, `linux`), and one of acme/web that names only a runner group (no labels).
async fn queue_jobs(github: &FakeGitHub, server: &Server) {
    let linux = &["self-hosted", "linux"][..];
    let jobs: [(&str, u64, &[&str]); 4] =
        [("acme/api", 1, linux), ("acme/web", 2, linux), ("acme/site", 3, linux), ("acme/web", 4, &[])];
    let client = http();
    for (repo, job, labels) in jobs {
        github.add_job(repo, job * 10, job, labels, JobState::Queued);
        let delivery = format!("d{job}");
        assert_eq!(server.deliver_signed(&client, &delivery, payload(repo, job, labels), ACME_SECRET).await, 202);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organisation_runners_count_only_jobs_of_repositories_their_runner_groups_admit_as_the_groups_change() {
    let github = FakeGitHub::start().await;
    github.add_token(ACME_TOKEN, 5000);
    organisation(&github);
    let root = tempfile::tempdir().unwrap();
    let server = start(&github, root.path(), &[("token", ACME_TOKEN)]).await;
    queue_jobs(&github, &server).await;
    // builders: acme/api. general: acme/web's two jobs (the one naming only a group included:
    // no repository runner could take it). acme/site is public: neither group admits it.
    demands_until(&server, [1, 2], "each group's repositories").await;
    // The organisation opens builders to acme/web too: builders now wins acme/web's jobs (a tie
    // between equally specific runners goes by name).
    let open_to = |repos: &[&str]| GroupAccess {
        visibility: "selected",
        selected_repositories: repos.iter().map(|r| r.to_string()).collect(),
        ..GroupAccess::default()
    };
    github.set_runner_group_access("acme", "builders", open_to(&["acme/api", "acme/web"]));
    demands_until(&server, [3, 0], "builders open to acme/web").await;
    // Default lets public repositories in: acme/site's job finds a runner.
    github.set_runner_group_access(
        "acme",
        "Default",
        GroupAccess { allows_public_repositories: true, ..GroupAccess::default() },
    );
    demands_until(&server, [3, 1], "Default open to public repositories").await;
    // A runner of Default took acme/web's `linux` job after all (its runner was free first):
    // the in-progress delivery names the group, and the job counts there from now on.
    github.set_job_status(2, JobState::InProgress);
    let mut started = common::job_payload("acme/web", 2, "in_progress", &["self-hosted", "linux"]);
    started["repository"]["id"] = json!(2000);
    started["workflow_job"]["run_id"] = json!(20);
    started["workflow_job"]["runner_group_name"] = json!("Default");
    let body = serde_json::to_vec(&started).unwrap();
    assert_eq!(server.deliver_signed(&http(), "d2-started", body, ACME_SECRET).await, 202);
    demands_until(&server, [2, 2], "the job counted in the group it ran in").await;
    // Settings read again unchanged cost nothing: GitHub answers 304.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let requests = github.requests();
    let reads = |path: &str| requests.iter().filter(|r| r.path == path).map(|r| r.status).collect::<Vec<u16>>();
    let groups = reads("/orgs/acme/actions/runner-groups");
    assert!(groups.len() >= 4, "read every 2 s (the idle window): {groups:?}");
    assert!(groups.iter().filter(|s| **s == 304).count() >= 2, "unchanged groups revalidate: {groups:?}");
    assert!(groups.iter().all(|s| matches!(s, 200 | 304)), "{groups:?}");
    let group_id = requests
        .iter()
        .find_map(|r| r.path.strip_prefix("/orgs/acme/actions/runner-groups/").map(str::to_string))
        .expect("builders' repositories were read");
    assert!(reads(&format!("/orgs/acme/actions/runner-groups/{group_id}")).contains(&304), "{group_id}");
    let log = server.log();
    assert!(log.contains("runner group access read"), "{log}");
    assert!(!log.contains(ACME_TOKEN) && !log.contains(ACME_SECRET), "a secret leaked:\n{log}");
    // The group a job ran in is journaled with it. Restarted with a token GitHub refuses (no
    // resync, no groups read: every repository admitted), the journal alone still puts the
    // running job in Default; builders takes the three others.
    drop(server);
    let server = start(&github, root.path(), &[("token", "ghp_a_token_github_does_not_know")]).await;
    demands_until(&server, [3, 1], "after a restart, from the journal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_that_cannot_be_read_admit_every_repository_and_say_why() {
    let github = FakeGitHub::start().await;
    github.add_token(READER_TOKEN, 5000);
    github.set_org_access(READER_TOKEN, "acme", common::fake_github::Access::Read);
    organisation(&github);
    let root = tempfile::tempdir().unwrap();
    let server = start(&github, root.path(), &[("token", READER_TOKEN)]).await;
    queue_jobs(&github, &server).await;
    // Nothing is known of the groups: every job counts, the most specific runner by name first
    // (a runner too many costs less than a job that never gets one).
    demands_until(&server, [4, 0], "every repository admitted").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("runner groups could not be read") {
        assert!(Instant::now() < deadline, "no warning:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = server.log();
    assert!(log.contains("admin:org") && log.contains("403"), "the warning says what is missing:\n{log}");
    assert!(!log.contains(READER_TOKEN), "the token leaked:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_app_reads_the_groups_with_a_token_that_may_read_runner_groups_and_nothing_else() {
    const APP_ID: u64 = 7272;
    let github = FakeGitHub::start().await;
    github.add_app(APP_ID, "Iv23liGroupsApp", &app_key_pair("groups").public);
    organisation(&github);
    github.add_installation(APP_ID, 41, &["acme/api", "acme/web", "acme/site", "acme/tools"]);
    let root = tempfile::tempdir().unwrap();
    let key = app_key_pair("groups").pkcs1;
    let server = start(&github, root.path(), &[("app-id", &APP_ID.to_string()), ("private-key", &key)]).await;
    queue_jobs(&github, &server).await;
    // The fake refuses runner groups to a token without organization_self_hosted_runners (as
    // GitHub does): had the resync's Actions-only token been used, every repository would count.
    demands_until(&server, [1, 2], "each group's repositories, read through the App").await;
    let requests = github.requests();
    let tokens = |prefix: &str| -> HashSet<String> {
        requests.iter().filter(|r| r.path.starts_with(prefix)).filter_map(|r| r.token.clone()).collect()
    };
    let groups = tokens("/orgs/acme/actions/runner-groups");
    let resync = tokens("/repos/acme/");
    assert!(!groups.is_empty() && groups.iter().all(|t| t.starts_with("ghs_")), "{groups:?}");
    assert!(groups.is_disjoint(&resync), "groups {groups:?}, resync {resync:?}");
    let refused = requests.iter().filter(|r| r.path.starts_with("/orgs/acme/actions/") && r.status == 403).count();
    assert_eq!(refused, 0, "no group read was refused");
    let log = server.log();
    for token in groups.iter().chain(&resync) {
        assert!(!log.contains(token.as_str()), "{token} leaked:\n{log}");
    }
}
