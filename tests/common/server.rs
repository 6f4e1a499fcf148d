//! The real binary as a test peer: start it, send it signed deliveries, read its API.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_github-action-autoscaler");

/// The program a test server runs: [`BIN`], or `GAA_TEST_SERVER_BIN` (a wrapper that ends by
/// exec'ing it, to profile the server under a test, e.g. with heaptrack's preload library).
fn bin() -> String {
    std::env::var("GAA_TEST_SERVER_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// `serve`'s arguments for a resync against the GitHub at `url` with `token` (written to a file
/// in `dir`), its windows `busy` and `idle` (durations such as `1s`).
pub fn resync_args(dir: &Path, url: &str, token: &str, busy: &str, idle: &str) -> Vec<String> {
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    [
        "--github-api-url",
        url,
        "--github-token-file",
        token_file.to_str().unwrap(),
        "--cache-window",
        busy,
        "--cache-window-when-empty",
        idle,
    ]
    .map(str::to_owned)
    .to_vec()
}

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr: PathBuf,
}

/// An HTTP client for tests. The crate builds reqwest without a built-in TLS provider (it uses
/// rustls on ring), so the provider is installed first, once per process.
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// GET `url` with [`http`].
pub async fn get(url: String) -> reqwest::Result<reqwest::Response> {
    http().get(url).send().await
}

pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

impl Server {
    pub async fn start(data: &Path, manifests: &Path) -> Self {
        Self::start_with(data, manifests, &[]).await
    }

    /// Starts the binary with extra `serve` arguments. Reads stay open on the plain listener
    /// (`GAA_UNAUTHENTICATED_READS`, as the standalone quick start runs it).
    pub async fn start_with(data: &Path, manifests: &Path, extra: &[&str]) -> Self {
        Self::launch(data, manifests, extra, &[("GAA_UNAUTHENTICATED_READS", "true")], None).await
    }

    /// Starts the binary with extra arguments and environment (set after the defaults, so they
    /// win), under a lower open-files limit when `open_files` is given.
    pub async fn launch(
        data: &Path,
        manifests: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        open_files: Option<u32>,
    ) -> Self {
        let addr = free_port();
        let stderr = data.with_extension(format!("{}.log", addr.port()));
        let mut command = match open_files {
            None => Command::new(bin()),
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell.args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\""), &bin()]);
                shell
            }
        };
        command
            .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
            .arg(data)
            .arg("--manifests")
            .arg(manifests)
            .args(extra)
            .env("GAA_LOG", "info");
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("the binary starts");
        let server = Self { child, addr, stderr };
        server.wait_healthy().await;
        server
    }

    pub async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = get(format!("http://{}/healthz", self.addr)).await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server did not become healthy; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub async fn deliver(&self, client: &reqwest::Client, delivery: &str, repo: &str, job: u64, action: &str) -> u16 {
        let body = serde_json::to_vec(&job_payload(repo, job, action, &["self-hosted", "linux"])).unwrap();
        let secret = if repo == "acme/api" { API_SECRET } else { WEB_SECRET };
        self.deliver_signed(client, delivery, body, secret).await
    }

    /// Posts `body` as a `workflow_job` delivery signed with `secret`; answers the status.
    pub async fn deliver_signed(&self, client: &reqwest::Client, delivery: &str, body: Vec<u8>, secret: &str) -> u16 {
        client
            .post(format!("http://{}/webhook", self.addr))
            .header("content-type", "application/json")
            .header("x-github-event", "workflow_job")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", signature(secret, &body))
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub async fn runner(&self, ns: &str, name: &str) -> Value {
        get(format!("http://{}/api/v1/namespaces/{ns}/scaledactionrunners/{name}", self.addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        get(format!("http://{}/metrics", self.addr)).await.unwrap().text().await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn manifests_dir(root: &Path, extra: &str) -> PathBuf {
    let dir = root.join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("runners.yaml"), MANIFESTS).unwrap();
    if !extra.is_empty() {
        std::fs::write(dir.join("broken.yml"), extra).unwrap();
    }
    dir
}

/// Joins futures concurrently without pulling in the futures crate.
pub async fn join_all<F: std::future::Future<Output = u16>>(futures: impl IntoIterator<Item = F>) -> Vec<u16> {
    let handles: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out = Vec::with_capacity(handles.len());
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for slot in pending.iter_mut() {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        out.push(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    out
}
