//! The real binary on real filesystems: acknowledged deliveries survive a power cut (an ext4
//! image on a loop device, shut down without flushing its journal), and a full disk makes the
//! server fail its liveness probe so a restart rebuilds it from the journal.
//!
//! These tests need root, `mkfs.ext4`, `losetup`, `mount` and `python3` (for the shutdown
//! ioctl); they fail, never skip, when something is missing.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::server::{Server, http, join_all, manifests_dir};

/// Runs a command that must succeed; panics with its output otherwise.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} could not be started ({e}); these tests need it installed"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn assert_root() {
    assert_eq!(run("id", &["-u"]), "0", "these tests mount filesystems and need root (CI runs them as root)");
}

/// An ext4 filesystem in a file, attached to a loop device and mounted; unmounted and detached
/// when dropped, even when the test fails.
struct Ext4Image {
    image: PathBuf,
    mount: PathBuf,
    device: Option<String>,
    mounted: bool,
}

impl Ext4Image {
    fn create(root: &Path, megabytes: u64) -> Self {
        assert_root();
        let image = root.join("disk.img");
        std::fs::File::create(&image).unwrap().set_len(megabytes * 1024 * 1024).unwrap();
        run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        let mount = root.join("disk");
        std::fs::create_dir_all(&mount).unwrap();
        let mut disk = Self { image, mount, device: None, mounted: false };
        disk.attach_and_mount();
        disk
    }

    /// Attaches the image and mounts it (ext4 replays its journal, as after a power cut).
    fn attach_and_mount(&mut self) {
        let device = run("losetup", &["--find", "--show", self.image.to_str().unwrap()]);
        self.device = Some(device.clone());
        run("mount", &["-t", "ext4", &device, self.mount.to_str().unwrap()]);
        self.mounted = true;
    }

    /// Cuts the power: `EXT4_IOC_SHUTDOWN` with `EXT4_GOING_FLAGS_NOLOGFLUSH`, so what ext4 had
    /// not committed to its journal is gone and every later write fails, as if the machine had
    /// stopped. An ioctl needs `unsafe` in Rust; Python's `fcntl.ioctl` makes the call.
    fn cut_power(&self) {
        const SHUTDOWN: &str = "import fcntl, os, struct, sys\n\
            fd = os.open(sys.argv[1], os.O_RDONLY)\n\
            fcntl.ioctl(fd, 0x8004587D, struct.pack('I', 2))  # EXT4_IOC_SHUTDOWN, NOLOGFLUSH\n";
        run("python3", &["-c", SHUTDOWN, self.mount.to_str().unwrap()]);
    }

    fn unmount_and_detach(&mut self) {
        if self.mounted {
            run("umount", &[self.mount.to_str().unwrap()]);
            self.mounted = false;
        }
        if let Some(device) = self.device.take() {
            run("losetup", &["-d", &device]);
        }
    }
}

impl Drop for Ext4Image {
    fn drop(&mut self) {
        if self.mounted {
            let mount = self.mount.to_str().unwrap_or_default();
            let unmounted = Command::new("umount").arg(mount).status().is_ok_and(|s| s.success());
            if !unmounted {
                let _ = Command::new("umount").args(["-l", mount]).status();
            }
        }
        if let Some(device) = self.device.take() {
            let _ = Command::new("losetup").args(["-d", &device]).status();
        }
    }
}

/// A tmpfs of a given size, unmounted when dropped.
struct Tmpfs {
    mount: PathBuf,
}

impl Tmpfs {
    fn mount(root: &Path, size: &str) -> Self {
        assert_root();
        let mount = root.join("tmpfs");
        std::fs::create_dir_all(&mount).unwrap();
        run("mount", &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", mount.to_str().unwrap()]);
        Self { mount }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let mount = self.mount.to_str().unwrap_or_default();
        if !Command::new("umount").arg(mount).status().is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").args(["-l", mount]).status();
        }
    }
}

async fn status_of(server: &Server, path: &str) -> u16 {
    common::server::get(format!("http://{}{path}", server.addr)).await.unwrap().status().as_u16()
}

/// A queued-job delivery for `acme/api`, as a task of its own so a chunk is sent concurrently and
/// each status stays with its delivery.
async fn deliver_to(client: reqwest::Client, addr: std::net::SocketAddr, delivery: String, job: u64) -> u16 {
    let body = serde_json::to_vec(&common::job_payload("acme/api", job, "queued", &["self-hosted", "linux"])).unwrap();
    client
        .post(format!("http://{addr}/webhook"))
        .header("content-type", "application/json")
        .header("x-github-event", "workflow_job")
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", common::signature(common::API_SECRET, &body))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn kill_9(mut server: Server) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// Deliveries that were answered 2xx just before the power went must all be there after it
/// comes back: each a queued job, so the count shows a lost one, and a redelivery of each is a
/// duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_deliveries_survive_a_power_cut_on_ext4() {
    let root = tempfile::tempdir().unwrap();
    let manifests = manifests_dir(root.path(), "");
    let mut disk = Ext4Image::create(root.path(), 64);
    let data = disk.mount.clone();
    let server = Server::start(&data, &manifests).await;
    let client = http();

    let plan: Vec<(String, u64)> = (1..=280).map(|j| (format!("p-{j}"), j)).collect();
    for (n, chunk) in plan.chunks(20).enumerate() {
        let sends = chunk.iter().map(|(d, j)| server.deliver(&client, d, "acme/api", *j, "queued"));
        for status in join_all(sends).await {
            assert_eq!(status, 202, "log:\n{}", server.log());
        }
        if n == 1 {
            // The first 40, and the journal's files and their names, are committed by ext4 (as
            // they would be a few seconds later anyway): what is at stake is only what follows.
            run("sync", &["-f", data.to_str().unwrap()]);
        }
    }
    // The power goes right after the last 2xx.
    disk.cut_power();
    kill_9(server);
    disk.unmount_and_detach();
    disk.attach_and_mount();

    let server = Server::start(&data, &manifests).await;
    let view = server.runner("ci", "api-linux").await;
    assert_eq!(view["queued"], 280, "every acknowledged delivery is counted after the power cut: {view}");
    let mut lost = Vec::new();
    for (delivery, job) in &plan {
        if server.deliver(&client, delivery, "acme/api", *job, "queued").await != 200 {
            lost.push(delivery.clone());
        }
    }
    assert!(lost.is_empty(), "acknowledged, then accepted again as new after the power cut: {lost:?}");
}

/// Fills the filesystem until a journal write fails, then gives the space back: the server must
/// fail its liveness probe (so Kubernetes restarts it), and the restarted server must hold every
/// delivery that was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_full_disk_the_server_fails_liveness_and_a_restart_keeps_every_acknowledged_delivery() {
    let root = tempfile::tempdir().unwrap();
    let manifests = manifests_dir(root.path(), "");
    let disk = Tmpfs::mount(root.path(), "16m");
    let data = disk.mount.join("data");
    let server = Server::start(&data, &manifests).await;
    let client = http();
    assert_eq!(status_of(&server, "/healthz").await, 200);

    // Everything but a little is taken by another file.
    let filler = disk.mount.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
    }

    let mut acknowledged = Vec::new();
    let mut refused = 0;
    let mut job = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while refused == 0 {
        assert!(Instant::now() < deadline, "no delivery was refused on a full disk; log:\n{}", server.log());
        let chunk: Vec<(String, u64)> = (job + 1..=job + 16).map(|j| (format!("f-{j}"), j)).collect();
        job += 16;
        let sends: Vec<_> =
            chunk.iter().map(|(d, j)| tokio::spawn(deliver_to(client.clone(), server.addr, d.clone(), *j))).collect();
        for ((delivery, job), send) in chunk.into_iter().zip(sends) {
            match send.await.unwrap() {
                202 => acknowledged.push((delivery, job)),
                503 => refused += 1,
                status => panic!("delivery {delivery}: status {status}"),
            }
        }
    }
    assert_eq!(server.deliver(&client, "after-1", "acme/api", 100_000, "queued").await, 503);
    assert_eq!(status_of(&server, "/readyz").await, 503);

    // The space comes back; the server must still not pretend to be alive.
    std::fs::remove_file(&filler).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        status_of(&server, "/healthz").await,
        503,
        "after a journal write failed, liveness fails so the pod is restarted; log:\n{}",
        server.log()
    );

    // What Kubernetes does next: a new process on the same data.
    kill_9(server);
    let server = Server::start(&data, &manifests).await;
    assert_eq!(status_of(&server, "/healthz").await, 200);
    assert_eq!(status_of(&server, "/readyz").await, 200);
    let queued = server.runner("ci", "api-linux").await["queued"].as_u64().unwrap();
    let known = acknowledged.len() as u64;
    assert!((known..=known + refused).contains(&queued), "{queued} queued: {known} acknowledged, {refused} refused");
    for (delivery, job) in &acknowledged {
        assert_eq!(server.deliver(&client, delivery, "acme/api", *job, "queued").await, 200, "{delivery}");
    }
    assert_eq!(server.deliver(&client, "after-2", "acme/api", 100_001, "queued").await, 202);
}
