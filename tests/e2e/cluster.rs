//! The cluster under test and the tools the steps drive it with: kubectl, helm, a kube client,
//! our own binary, and waiting for what the controllers do.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Res<T = ()> = Result<T, Error>;

/// Fails the step with a message.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => { return Err(format!($($arg)*).into()) };
}

/// What every step shares: the cluster, the repository, and the processes the steps started.
pub struct Ctx {
    pub root: PathBuf,
    pub bin: PathBuf,
    pub work: tempfile::TempDir,
    pub operator: Option<Process>,
    /// Where the operator serves `/healthz` and `/metrics`.
    pub operator_listen: String,
    /// Keeps the suite's node alive while it stands in for a kubelet.
    pub heartbeat: Option<tokio::task::JoinHandle<()>>,
}

/// A process of ours (the operator, `serve`) with its log in a file.
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn start(program: &Path, args: &[&str], env: &[(&str, &str)], log: PathBuf) -> Res<Self> {
        let out = std::fs::File::create(&log)?;
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", program.display()))?;
        Ok(Self { child, log })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Ctx {
    /// The cluster named by `KUBECONFIG`, which must answer; `kubectl` and `helm` must be found.
    pub async fn connect() -> Res<Self> {
        if std::env::var_os("KUBECONFIG").is_none() {
            fail!("KUBECONFIG is not set: run the suite through scripts/e2e.sh (or scripts/dev-cluster up)");
        }
        for (tool, args) in [("kubectl", ["version", "--client"]), ("helm", ["version", "--short"])] {
            let version = run(tool, &args, None).map_err(|e| format!("{tool} is not usable: {e}"))?;
            println!("{tool}: {}", version.lines().next().unwrap_or_default().trim());
        }
        let client = kube::Client::try_default().await?;
        let version = client.apiserver_version().await?;
        println!("cluster: Kubernetes {}.{} ({})", version.major, version.minor, version.git_version);
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let bin = std::env::var_os("GAA_E2E_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_github-action-autoscaler")));
        Ok(Self {
            root,
            bin,
            work: tempfile::tempdir()?,
            operator: None,
            operator_listen: String::new(),
            heartbeat: None,
        })
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// `kubectl` as the cluster's admin.
    pub fn kubectl(&self, args: &[&str]) -> Res<String> {
        run("kubectl", args, None)
    }

    /// `kubectl apply --server-side -f -` of `yaml`, as the cluster's admin.
    pub fn apply(&self, yaml: &str) -> Res<String> {
        run("kubectl", &["apply", "--server-side", "--force-conflicts", "-f", "-"], Some(yaml))
    }

    /// A kubeconfig for the cluster that authenticates with a fresh token of a ServiceAccount, so
    /// whatever uses it is held to that account's RBAC.
    pub fn service_account_kubeconfig(&self, namespace: &str, account: &str) -> Res<PathBuf> {
        let token = self.kubectl(&["-n", namespace, "create", "token", account, "--duration=2h"])?;
        let raw = self.kubectl(&["config", "view", "--raw", "--minify", "-o", "json"])?;
        let config: serde_json::Value = serde_json::from_str(&raw)?;
        let cluster = &config["clusters"][0]["cluster"];
        let server = cluster["server"].as_str().ok_or("the admin kubeconfig names no server")?;
        let mut cluster_entry = serde_json::json!({"server": server});
        if let Some(ca) = cluster["certificate-authority-data"].as_str() {
            cluster_entry["certificate-authority-data"] = ca.into();
        } else if let Some(ca) = cluster["certificate-authority"].as_str() {
            cluster_entry["certificate-authority"] = ca.into();
        }
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "sa",
            "clusters": [{"name": "e2e", "cluster": cluster_entry}],
            "users": [{"name": account, "user": {"token": token.trim()}}],
            "contexts": [{"name": "sa", "context": {"cluster": "e2e", "user": account, "namespace": namespace}}],
        });
        let path = self.work.path().join(format!("{namespace}-{account}.kubeconfig"));
        std::fs::write(&path, serde_json::to_vec_pretty(&kubeconfig)?)?;
        Ok(path)
    }

    /// The API server's audit log, where `scripts/dev-cluster` has it write one.
    pub fn audit_log(&self) -> PathBuf {
        std::env::var_os("GAA_E2E_AUDIT_LOG").map(PathBuf::from).unwrap_or_else(|| {
            let state =
                std::env::var_os("GAA_DEV_CLUSTER_DIR").map_or_else(|| "/tmp/gaa-dev-cluster".into(), PathBuf::from);
            state.join("audit.log")
        })
    }

    pub async fn stop(&mut self) {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
        }
        crate::steps::forget_service_names();
        if let Some(mut operator) = self.operator.take() {
            operator.stop();
        }
    }
}

/// Runs a tool, feeding it `stdin`; its standard output, or an error with its standard error.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Res<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write as _;
        pipe.write_all(text.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        fail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// Polls `check` every 200 ms until it holds, for at most `limit`; the error names `what`, with
/// the last reason `check` gave.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F) -> Res<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Res<bool>>,
{
    let started = Instant::now();
    let mut last = String::new();
    loop {
        match check().await {
            Ok(true) => return Ok(started.elapsed()),
            Ok(false) => last.clear(),
            Err(e) => last = e.to_string(),
        }
        if started.elapsed() > limit {
            fail!("{what}: not within {limit:?}{}", if last.is_empty() { String::new() } else { format!(" ({last})") });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
