//! A real memcached for tests: Debian's `memcached` binary run in the foreground as a child
//! process on a free loopback port, killed when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const READY_WITHIN: Duration = Duration::from_secs(10);

pub struct MemcachedServer {
    port: u16,
    child: Option<Child>,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl MemcachedServer {
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Extra command-line arguments, kept for [`MemcachedServer::restart`].
    pub fn start_with_args(extra: &[&str]) -> Self {
        Self::start_with(extra, &[])
    }

    /// Extra arguments and environment variables (such as `SASL_CONF_PATH`).
    pub fn start_with(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        // Another process may grab the free port between our probe and memcached's bind: retry.
        let mut last_failure = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut server = MemcachedServer { port, child: None, extra: extra.clone(), env: env.clone() };
            match server.spawn() {
                Ok(()) => return server,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("memcached did not start: {last_failure}");
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Writes `key` over a plain ASCII connection, around the client under test: test setup, or
    /// another replica's write.
    pub fn set(&self, key: &str, value: &[u8]) {
        let mut connection = self.connect();
        assert_eq!(ask(&mut connection, &set_request(key, value)), "STORED", "set {key}");
    }

    /// [`MemcachedServer::set`] on a `-Y` server, authenticating first as memcached's ASCII auth
    /// asks: a `set` of any key whose value is `username password`.
    pub fn set_as(&self, username: &str, password: &str, key: &str, value: &[u8]) {
        let mut connection = self.connect();
        let auth = set_request("auth", format!("{username} {password}").as_bytes());
        assert_eq!(ask(&mut connection, &auth), "STORED", "authenticate as {username}");
        assert_eq!(ask(&mut connection, &set_request(key, value)), "STORED", "set {key}");
    }

    /// Reads `key` around the client under test; `None` when absent.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut connection = self.connect();
        connection.write_all(format!("get {key}\r\n").as_bytes()).expect("write to memcached");
        let header = read_line(&mut connection);
        if header == "END" {
            return None;
        }
        // VALUE <key> <flags> <bytes>
        let length: usize = header
            .split(' ')
            .nth(3)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("get {key}: memcached answered {header:?}"));
        let mut value = vec![0u8; length + 2];
        connection.read_exact(&mut value).expect("read memcached's value");
        value.truncate(length);
        assert_eq!(read_line(&mut connection), "END", "get {key}: one value, then END");
        Some(value)
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Deletes `key` around the client under test; false when it was absent.
    pub fn delete(&self, key: &str) -> bool {
        match ask(&mut self.connect(), format!("delete {key}\r\n").as_bytes()).as_str() {
            "DELETED" => true,
            "NOT_FOUND" => false,
            other => panic!("delete {key}: memcached answered {other:?}"),
        }
    }

    fn connect(&self) -> TcpStream {
        let connection = TcpStream::connect(self.addr()).expect("connect to memcached");
        connection.set_read_timeout(Some(READY_WITHIN)).expect("set a read timeout");
        connection
    }

    /// SIGSTOP: the port still accepts connections (the kernel completes the handshake) but
    /// nothing answers, like a hung server.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`MemcachedServer::freeze`].
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("memcached is not running");
        let status = Command::new("kill").args([signal, &child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill {signal} {} failed", child.id());
    }

    /// SIGKILL, then reap: the port refuses connections once this returns.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs and starts a new one on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(failure) = self.spawn() {
            panic!("memcached did not restart on port {}: {failure}", self.port);
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let mut command = Command::new("memcached");
        // -U 0: no UDP; -u is ignored unless we are root, where memcached refuses to run without it.
        command
            .args(["-l", "127.0.0.1", "-p", &port, "-U", "0", "-m", "64", "-c", "1024", "-u", "nobody"])
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("memcached is not installed: scripts/test.sh installs Debian's memcached package")
            }
            Err(e) => panic!("cannot run memcached: {e}"),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return Err(format!("memcached exited with {status}: {}", stderr.trim()));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("port {} did not accept connections within {READY_WITHIN:?}", self.port));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for MemcachedServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address of a bound socket").port()
}

fn set_request(key: &str, value: &[u8]) -> Vec<u8> {
    let mut request = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
    request.extend_from_slice(value);
    request.extend_from_slice(b"\r\n");
    request
}

/// Sends one request and reads memcached's one-line answer.
fn ask(connection: &mut TcpStream, request: &[u8]) -> String {
    connection.write_all(request).expect("write to memcached");
    read_line(connection)
}

fn read_line(connection: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        connection.read_exact(&mut byte).expect("read memcached's answer");
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).trim_end().to_string()
}
