//! The minting rule against in-memory stand-ins for the cluster and GitHub.

use std::collections::HashMap;
use std::sync::Mutex;

use secrecy::ExposeSecret;

use super::*;
use crate::demand::{Runner, ScaleFactor};
use crate::github::Token;

/// Tokens the "cluster" knows, by token text.
struct Pods(HashMap<&'static str, BoundPod>);

impl PodIdentity for Pods {
    fn identify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<BoundPod, IdentityError>> {
        let found = self.0.get(token).cloned().ok_or_else(|| IdentityError::Refused("unknown token".into()));
        Box::pin(async move { found })
    }
}

/// GitHub's runners by name, as GitHub enforces them: one per name.
#[derive(Default)]
struct GitHub {
    runners: Mutex<HashMap<String, Registered>>,
    next_id: Mutex<u64>,
    calls: Mutex<Vec<String>>,
}

impl GitHub {
    fn set_busy(&self, name: &str, busy: bool) {
        self.runners.lock().unwrap().get_mut(name).unwrap().busy = busy;
    }
    /// A just-in-time runner's one job ended: GitHub removes it.
    fn finish(&self, name: &str) {
        self.runners.lock().unwrap().remove(name);
    }
    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl Registrar for GitHub {
    fn mint<'a>(&'a self, runner: &'a EphemeralRunner, name: &'a str) -> BoxFuture<'a, Result<Minted, RegistrarError>> {
        self.calls.lock().unwrap().push(format!("mint {name}"));
        let mut runners = self.runners.lock().unwrap();
        let result = if runners.contains_key(name) {
            Err(RegistrarError::NameTaken)
        } else {
            let mut next = self.next_id.lock().unwrap();
            *next += 1;
            runners.insert(name.to_string(), Registered { id: *next, busy: false });
            let encoded = format!("config-of-{name}-for-{}", runner.key);
            Ok(Minted { runner_id: *next, runner_name: name.to_string(), encoded: encoded.into() })
        };
        Box::pin(async move { result })
    }
    fn find<'a>(
        &'a self,
        _: &'a EphemeralRunner,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Registered>, RegistrarError>> {
        self.calls.lock().unwrap().push(format!("find {name}"));
        let found = self.runners.lock().unwrap().get(name).copied();
        Box::pin(async move { Ok(found) })
    }
    fn list<'a>(&'a self, _: &'a EphemeralRunner) -> BoxFuture<'a, Result<Vec<Listed>, RegistrarError>> {
        let runners = self.runners.lock().unwrap();
        let listed = runners
            .iter()
            .map(|(name, r)| Listed { id: r.id, name: name.clone(), online: true, busy: r.busy })
            .collect();
        Box::pin(async move { Ok(listed) })
    }
    fn delete<'a>(&'a self, _: &'a EphemeralRunner, id: u64) -> BoxFuture<'a, Result<Deleted, RegistrarError>> {
        self.calls.lock().unwrap().push(format!("delete {id}"));
        let mut runners = self.runners.lock().unwrap();
        let busy = runners.values().any(|r| r.id == id && r.busy);
        if !busy {
            runners.retain(|_, r| r.id != id);
        }
        Box::pin(async move { Ok(if busy { Deleted::Busy } else { Deleted::Gone }) })
    }
}

fn pod(namespace: &str, name: &str, uid: &str, set: Option<&str>) -> BoundPod {
    BoundPod { namespace: namespace.into(), name: name.into(), uid: uid.into(), stateful_set: set.map(String::from) }
}

fn service(github: Arc<GitHub>) -> JitService {
    let mut ephemeral = Runner::new(RunnerKey::new("ci", "jit"), "acme", "api", ["linux"], 0, 5, ScaleFactor::Linear);
    ephemeral.ephemeral = true;
    let mut org = Runner::organization(RunnerKey::new("ci", "org"), "acme", ["linux"], 0, 5, ScaleFactor::Linear);
    org.ephemeral = true;
    let plain = Runner::new(RunnerKey::new("ci", "plain"), "acme", "api", ["linux"], 0, 5, ScaleFactor::Linear);
    let index = RunnerIndex::new([ephemeral, org, plain]);
    let credential: Credential = Token::new("ghp_serve_only").into();
    let tokens = RepoTokens(HashMap::from([
        ("acme/api".to_string(), vec![credential.clone()]),
        ("acme".to_string(), vec![credential]),
    ]));
    let (_tx, catalogs) = watch::channel((index, tokens));
    std::mem::forget(_tx);
    let pods = Pods(HashMap::from([
        ("h.jit-0.s", pod("ci", "jit-0", "0a1b2c3d-0000", Some("jit"))),
        ("h.jit-1.s", pod("ci", "jit-1", "99999999-0000", Some("jit"))),
        ("h.org-0.s", pod("ci", "org-0", "77777777-0000", Some("org"))),
        ("h.plain-0.s", pod("ci", "plain-0", "55555555-0000", Some("plain"))),
        ("h.lone.s", pod("ci", "lone", "44444444-0000", None)),
        ("h.elsewhere.s", pod("other", "jit-0", "33333333-0000", Some("jit"))),
    ]));
    JitService::new(Arc::new(pods), github, catalogs, Arc::new(Metrics::new()))
}

async fn status(service: &JitService, runner: &str, token: Option<&str>) -> Result<String, u16> {
    service.issue("ci", runner, token).await.map(|m| m.runner_name).map_err(|e| e.status())
}

#[tokio::test]
async fn each_refusal_has_its_status() {
    let service = service(Arc::new(GitHub::default()));
    assert_eq!(status(&service, "jit", None).await, Err(401), "no token");
    assert_eq!(status(&service, "jit", Some("not a jwt")).await, Err(401), "not a token's shape");
    let huge = format!("h.{}.s", "a".repeat(9000));
    assert_eq!(status(&service, "jit", Some(&huge)).await, Err(401), "too long to be one");
    assert_eq!(status(&service, "jit", Some("h.forged.s")).await, Err(401), "a token the cluster refuses");
    assert_eq!(status(&service, "nope", Some("h.jit-0.s")).await, Err(404), "no such runner");
    assert_eq!(status(&service, "jit", Some("h.org-0.s")).await, Err(403), "a pod of another runner");
    assert_eq!(status(&service, "jit", Some("h.lone.s")).await, Err(403), "a pod of no StatefulSet");
    assert_eq!(
        status(&service, "jit", Some("h.elsewhere.s")).await,
        Err(403),
        "a pod of that name in another namespace"
    );
    assert_eq!(status(&service, "plain", Some("h.plain-0.s")).await, Err(409), "not ephemeral");
}

#[tokio::test]
async fn a_pod_holds_one_registration_at_a_time_and_gets_the_next_once_its_job_ended() {
    let github = Arc::new(GitHub::default());
    let service = service(github.clone());
    let minted = service.issue("ci", "jit", Some("h.jit-0.s")).await.unwrap();
    assert_eq!(minted.runner_name, "jit-0-0a1b2c3d");
    assert!(minted.encoded.expose_secret().contains("ci/jit"));
    assert!(!format!("{minted:?}").contains("config-of"), "Debug shows no configuration");
    // The runner takes a job; job code asks for another registration with the pod's token.
    github.set_busy("jit-0-0a1b2c3d", true);
    github.calls();
    assert_eq!(status(&service, "jit", Some("h.jit-0.s")).await, Err(409));
    assert_eq!(github.calls(), ["mint jit-0-0a1b2c3d", "find jit-0-0a1b2c3d"], "nothing deleted or minted");
    // Another pod of the same runner is not held up.
    assert_eq!(status(&service, "jit", Some("h.jit-1.s")).await.as_deref(), Ok("jit-1-99999999"));
    // The job ends and GitHub removes the runner: the restarted runner gets a new registration.
    github.finish("jit-0-0a1b2c3d");
    github.calls();
    assert_eq!(status(&service, "jit", Some("h.jit-0.s")).await.as_deref(), Ok("jit-0-0a1b2c3d"));
    assert_eq!(github.calls(), ["mint jit-0-0a1b2c3d"]);
}

#[tokio::test]
async fn a_registration_that_never_took_a_job_is_deleted_before_the_next_is_minted() {
    let github = Arc::new(GitHub::default());
    let service = service(github.clone());
    let first = service.issue("ci", "org", Some("h.org-0.s")).await.unwrap();
    github.calls();
    let second = service.issue("ci", "org", Some("h.org-0.s")).await.unwrap();
    assert_eq!(first.runner_name, second.runner_name);
    assert_ne!(first.runner_id, second.runner_id);
    let delete = format!("delete {}", first.runner_id);
    assert_eq!(github.calls(), ["mint org-0-77777777", "find org-0-77777777", delete.as_str(), "mint org-0-77777777"]);
}

#[test]
fn runner_names_fit_githubs_limit_and_tell_pods_of_one_name_apart() {
    let long = "r".repeat(63);
    let name = runner_name(&pod("ci", &long, "abcdef12-3456", None));
    assert_eq!(name.len(), 64);
    assert!(name.ends_with("-abcdef12"));
    let before = runner_name(&pod("ci", "jit-0", "11111111-a", None));
    let after = runner_name(&pod("ci", "jit-0", "22222222-b", None));
    assert_ne!(before, after, "a pod recreated under the same name is another pod");
}

#[test]
fn an_ephemeral_runners_view_names_its_place_group_and_labels_without_self_hosted() {
    let mut org =
        Runner::organization(RunnerKey::new("ci", "org"), "Acme", ["linux", "x64"], 0, 5, ScaleFactor::Linear);
    org.ephemeral = true;
    org.runner_group = Some("builders".into());
    let tokens = RepoTokens(HashMap::from([("acme".to_string(), vec![Token::new("t").into()])]));
    let view = ephemeral_view(&org, &tokens).unwrap();
    assert_eq!(view.place, Place::Organization { org: "acme".into(), group: "builders".into() });
    assert_eq!(view.labels, ["linux", "x64"]);
    let no_credential = ephemeral_view(&org, &RepoTokens::default()).unwrap_err();
    assert_eq!(no_credential.status(), 409);
}
