//! How a runner pod stops without losing a job: the preStop hook (`drain.sh`) and what the
//! container's start command does for it.

/// Runs before the runner container is stopped; see the script's own comments.
pub const DRAIN_SCRIPT: &str = include_str!("drain.sh");

/// Where the runner container's listener records the messages it receives (GitHub's runner
/// appends one line to `Runner.perf` there per message, before it acquires the job).
pub(super) const MESSAGE_RECORD_DIR: &str = "/tmp/runner-perf";

/// Copies the pod's registration files into the runner's home, then starts the runner, unless the
/// pod has begun to drain.
pub(super) const START_WITH_CREDENTIALS: &str = "set -e; [ ! -e /tmp/gaa-draining ] || exit 0; \
     home=\"${RUNNER_HOME:-/home/runner}\"; \
     cp /runner-credentials/.runner /runner-credentials/.credentials /runner-credentials/.credentials_rsaparams \"$home/\"; \
     exec \"$home/run.sh\"";

/// The start command of a just-in-time runner (see the script).
pub(super) const START_EPHEMERAL: &str = include_str!("start_ephemeral.sh");

#[cfg(test)]
mod tests {
    //! The real script against a stand-in listener that behaves like GitHub's where it matters:
    //! it records a message, takes a while to acquire the job, then runs it in a worker process,
    //! and a stop signal cancels a running job. The drain must never leave a job acquired but not
    //! finished, whatever the moment the job arrives.

    use std::path::{Path, PathBuf};
    use std::process::{Child, Command};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use super::DRAIN_SCRIPT;

    /// The script looks at every process of the machine (in a pod, of the container), so two of
    /// these tests at once would drain each other's stand-ins.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    /// The time the stand-in takes from recording a message to acquiring its job: below the
    /// quiet time the tests give the script (2 s, of which at least 1 s has passed, since the
    /// record's time is read in whole seconds).
    const ACQUIRE_SECONDS: &str = "0.5";

    /// Polls `queue` for a job file; on one, records the message, then acquires the job: GitHub
    /// may count it as taken as soon as the request leaves (so it moves to `acquired/` at once),
    /// and the answer comes ACQUIRE_SECONDS later. It then runs the job as a `Runner.Worker`
    /// process and moves it to `done/`. SIGTERM cancels a running job (`cancelled` is written),
    /// and a job acquired but never run stays in `acquired/`, as with GitHub's listener.
    const STAND_IN_LISTENER: &str = r#"
dir=$1
trap 'if [ -n "$worker" ]; then kill "$worker"; : >"$dir/cancelled"; fi; exit 143' TERM
while :; do
  for job in "$dir"/queue/*; do
    [ -e "$job" ] || continue
    echo "MessageReceived_RunnerJobRequest:$(date -u +%FT%TZ)" >>"$dir/perf/Runner.perf"
    mv "$job" "$dir/acquired/"
    sleep "$ACQUIRE_SECONDS"
    bash -c 'exec -a Runner.Worker sleep 0.3' &
    worker=$!
    wait "$worker"
    worker=
    mv "$dir/acquired/$(basename "$job")" "$dir/done/"
  done
  sleep 0.01
done
"#;

    struct StandIn {
        dir: PathBuf,
        listener: Child,
    }

    impl StandIn {
        fn start(dir: &Path) -> Self {
            for sub in ["queue", "acquired", "done", "perf"] {
                std::fs::create_dir_all(dir.join(sub)).unwrap();
            }
            let script = dir.join("stand-in-listener.sh");
            std::fs::write(&script, STAND_IN_LISTENER).unwrap();
            let listener = Command::new("bash")
                .args(["-c", "exec -a Runner.Listener bash \"$0\" \"$1\""])
                .arg(&script)
                .arg(dir)
                .env("ACQUIRE_SECONDS", ACQUIRE_SECONDS)
                .spawn()
                .expect("bash");
            let cmdline = format!("/proc/{}/cmdline", listener.id());
            wait_for("the stand-in listener to start", || {
                std::fs::read(&cmdline).is_ok_and(|c| c.starts_with(b"Runner.Listener"))
            });
            Self { dir: dir.to_owned(), listener }
        }

        fn offer_job(&self, name: &str) {
            std::fs::write(self.dir.join("queue").join(name), b"").unwrap();
        }

        fn message_recorded(&self) -> bool {
            std::fs::read_to_string(self.dir.join("perf/Runner.perf")).is_ok_and(|r| !r.is_empty())
        }

        /// Runs `script` as the kubelet runs a preStop hook, then stops the listener as the
        /// kubelet then stops the container.
        fn stop_with(&mut self, script: &str) {
            let drained = Command::new("sh")
                .args(["-c", script])
                .env("RUNNER_PERFLOG", self.dir.join("perf"))
                .env("GAA_DRAIN_QUIET_SECONDS", "2")
                .status()
                .expect("sh");
            assert!(drained.success(), "the drain failed: {drained}");
            // SIGCONT too, in case a script left it frozen (a frozen process never handles TERM).
            for signal in ["-TERM", "-CONT"] {
                let _ = Command::new("kill").args([signal, &self.listener.id().to_string()]).status();
            }
            let started = Instant::now();
            while self.listener.try_wait().unwrap().is_none() {
                assert!(started.elapsed() < Duration::from_secs(10), "the listener outlived its stop signal");
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        /// Every job offered was either never acquired (still queued: GitHub offers it to another
        /// runner) or finished; none was cancelled or left acquired.
        fn lost_jobs(&self) -> Vec<String> {
            let mut lost: Vec<String> = std::fs::read_dir(self.dir.join("acquired"))
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            if self.dir.join("cancelled").exists() {
                lost.push("a cancelled job".into());
            }
            lost
        }
    }

    impl Drop for StandIn {
        fn drop(&mut self) {
            let _ = self.listener.kill();
            let _ = self.listener.wait();
        }
    }

    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn scratch(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new().prefix(name).tempdir().unwrap()
    }

    /// The look-then-return hook this one replaces: it passes while a job is being acquired.
    const LOOK_ONCE: &str = "while grep -qs 'Runner\\.Worke[r]' /proc/[0-9]*/cmdline; do sleep 2; done";

    #[test]
    fn a_job_whose_message_arrived_just_before_the_drain_runs_to_the_end() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // The worst moment: the message is in, the job is being acquired, no worker exists yet.
        let dir = scratch("drain-worst");
        let mut runner = StandIn::start(dir.path());
        runner.offer_job("job-1");
        wait_for("the message", || runner.message_recorded());
        runner.stop_with(DRAIN_SCRIPT);
        assert_eq!(runner.lost_jobs(), Vec::<String>::new());
        assert!(dir.path().join("done/job-1").exists(), "the job ran to its end before the runner stopped");

        // The same moment defeats a hook that only looks for a running job.
        let dir = scratch("drain-look-once");
        let mut runner = StandIn::start(dir.path());
        runner.offer_job("job-1");
        wait_for("the message", || runner.message_recorded());
        runner.stop_with(LOOK_ONCE);
        assert!(!runner.lost_jobs().is_empty(), "the stand-in no longer reproduces the race");
    }

    #[test]
    fn wherever_a_job_arrives_around_the_drain_it_is_finished_or_left_for_another_runner() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // The job is offered this long after the drain starts (negative: before it).
        for offset_ms in [-400i64, -150, -50, 0, 10, 40, 120, 300] {
            let dir = scratch("drain-offset");
            let mut runner = StandIn::start(dir.path());
            let offer = |runner: &StandIn| runner.offer_job(&format!("job-at-{offset_ms}ms"));
            if offset_ms < 0 {
                offer(&runner);
                std::thread::sleep(Duration::from_millis(offset_ms.unsigned_abs()));
                runner.stop_with(DRAIN_SCRIPT);
            } else {
                std::thread::scope(|scope| {
                    let offering = scope.spawn(|| {
                        std::thread::sleep(Duration::from_millis(offset_ms as u64));
                        offer(&runner);
                    });
                    // The drain runs on this thread while the offer lands.
                    let drained = Command::new("sh")
                        .args(["-c", DRAIN_SCRIPT])
                        .env("RUNNER_PERFLOG", dir.path().join("perf"))
                        .env("GAA_DRAIN_QUIET_SECONDS", "2")
                        .status()
                        .expect("sh");
                    assert!(drained.success());
                    offering.join().unwrap();
                });
                runner.stop_with("true");
            }
            assert_eq!(runner.lost_jobs(), Vec::<String>::new(), "a job offered {offset_ms} ms after the drain began");
        }
    }

    #[test]
    fn an_idle_runner_with_no_recent_message_is_stopped_at_once_and_a_running_job_is_awaited() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = scratch("drain-idle");
        let mut runner = StandIn::start(dir.path());
        runner.stop_with(DRAIN_SCRIPT);
        let status = runner.listener.try_wait().unwrap().expect("stopped");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "an idle listener is killed while frozen, before any stop signal");
        assert!(std::path::Path::new("/tmp/gaa-draining").exists(), "the start command is told not to start again");

        // A job already running when the drain begins ends before the hook returns.
        let mut worker = Command::new("bash").args(["-c", "exec -a Runner.Worker sleep 1"]).spawn().expect("bash");
        let cmdline = format!("/proc/{}/cmdline", worker.id());
        wait_for("the stand-in job", || std::fs::read(&cmdline).is_ok_and(|c| c.starts_with(b"Runner.Worker")));
        assert!(Command::new("sh").args(["-c", DRAIN_SCRIPT]).status().unwrap().success());
        assert!(worker.try_wait().unwrap().is_some(), "the hook returned while the job was still running");
    }
}

#[cfg(test)]
mod start_ephemeral_tests {
    //! The real start script against a stand-in API server (over loopback HTTP) and a stand-in
    //! `run.sh` that records the configuration it was started with.

    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    use super::START_EPHEMERAL;

    /// Answers in turn: busy (409), then a configuration per request; records each token.
    #[derive(Clone, Default)]
    struct ApiServer {
        requests: Arc<Mutex<Vec<String>>>,
    }

    async fn answer(State(server): State<ApiServer>, headers: HeaderMap) -> (StatusCode, String) {
        let token = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let mut requests = server.requests.lock().unwrap();
        requests.push(token);
        match requests.len() {
            1 => (StatusCode::CONFLICT, r#"{"error":"this pod's runner is running a job"}"#.into()),
            n => (
                StatusCode::OK,
                format!(r#"{{"runnerName":"web-0-abc","runnerId":{n},"encodedJitConfig":"Q09ORklH{n}=="}}"#),
            ),
        }
    }

    #[tokio::test]
    async fn each_start_runs_the_runner_once_with_a_fresh_configuration_and_waits_while_refused() {
        let dir = tempfile::tempdir().unwrap();
        let server = ApiServer::default();
        let app = axum::Router::new().route("/jit", post(answer)).with_state(server.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jit", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        std::fs::write(dir.path().join("token"), "pod-bound-token\n").unwrap();
        let runs = dir.path().join("runs");
        std::fs::write(dir.path().join("run.sh"), format!("#!/bin/sh\necho \"$*\" >>{}\nsleep 0.2\n", runs.display()))
            .unwrap();
        std::process::Command::new("chmod").arg("+x").arg(dir.path().join("run.sh")).status().unwrap();
        let mut script = std::process::Command::new("sh")
            .args(["-c", START_EPHEMERAL])
            .env("RUNNER_HOME", dir.path())
            .env("GAA_JIT_URL", &url)
            .env("GAA_JIT_TOKEN_FILE", dir.path().join("token"))
            .env("GAA_JIT_RETRY_SECONDS", "0.1")
            .env("GAA_DRAINING_FILE", dir.path().join("draining"))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let lines = loop {
            let lines: Vec<String> =
                std::fs::read_to_string(&runs).unwrap_or_default().lines().map(str::to_owned).collect();
            if lines.len() >= 2 {
                break lines;
            }
            if Instant::now() >= deadline {
                let _ = script.kill();
                panic!("the runner did not run twice: {lines:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // Once the drain has begun, the script starts nothing more and ends.
        std::fs::write(dir.path().join("draining"), "").unwrap();
        let ended = Instant::now() + Duration::from_secs(10);
        while script.try_wait().unwrap().is_none() {
            if Instant::now() >= ended {
                let _ = script.kill();
                panic!("the start script kept going after the drain began");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let after = std::fs::read_to_string(&runs).unwrap().lines().count();
        assert!(after <= lines.len() + 1, "at most the start under way when the drain began: {after}");
        assert_eq!(lines[..2], ["--jitconfig Q09ORklH2==", "--jitconfig Q09ORklH3=="], "a new configuration each time");
        let requests = server.requests.lock().unwrap().clone();
        assert!(requests.len() >= 3, "refused once, then one request per start: {requests:?}");
        assert!(requests.iter().all(|t| t == "Bearer pod-bound-token"), "{requests:?}");
    }
}
