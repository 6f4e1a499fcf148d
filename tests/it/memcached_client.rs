//! The memcached access layer against real memcached servers (Debian's package), one or two per
//! test.

use crate::common::memcached as memcached_harness;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use gaa::store::memcached::{
    Credentials, ErrorKind, Memcached, MemcachedOptions, MultiGet, Operation, Protocol, StoreUrl,
};
use memcached_harness::MemcachedServer;

fn store_url(servers: &[&MemcachedServer]) -> StoreUrl {
    let list: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    format!("memcached://{}", list.join(",")).parse().expect("store URL")
}

fn connect(servers: &[&MemcachedServer]) -> Memcached {
    connect_with(servers, MemcachedOptions::default())
}

fn connect_with(servers: &[&MemcachedServer], options: MemcachedOptions) -> Memcached {
    Memcached::new(&store_url(servers), options).expect("memcached client")
}

/// Every value of a multi-get, failing the test if any server did not answer.
fn complete(multi: MultiGet) -> HashMap<String, (Vec<u8>, u64)> {
    assert!(multi.failures.is_empty(), "{:?}", multi.failures);
    multi.values
}

fn counter(value: &[u8]) -> u64 {
    std::str::from_utf8(value).expect("utf-8 counter").parse().expect("numeric counter")
}

#[test]
fn adding_a_key_that_exists_reports_false_and_keeps_the_first_value() {
    let server = MemcachedServer::start();
    let store = connect(&[&server]);

    assert!(store.add("demand/acme/api", b"first").unwrap());
    assert!(!store.add("demand/acme/api", b"second").unwrap());
    assert_eq!(store.gets("demand/acme/api").unwrap().unwrap().0, b"first");
}

#[test]
fn gets_returns_the_value_with_a_token_that_cas_accepts() {
    let server = MemcachedServer::start();
    let store = connect(&[&server]);
    assert_eq!(store.gets("k").unwrap(), None);

    assert!(store.add("k", b"v1").unwrap());
    let (value, token) = store.gets("k").unwrap().unwrap();
    assert_eq!(value, b"v1");
    assert!(store.cas("k", b"v2", token).unwrap());

    let (value, next_token) = store.gets("k").unwrap().unwrap();
    assert_eq!(value, b"v2");
    assert_ne!(next_token, token, "a successful cas must change the token");
}

#[test]
fn cas_with_a_stale_token_is_refused_and_leaves_the_value_unchanged() {
    let server = MemcachedServer::start();
    let store = connect(&[&server]);
    assert!(store.add("k", b"original").unwrap());
    let (_, stale) = store.gets("k").unwrap().unwrap();
    server.set("k", b"written by another replica");

    assert!(!store.cas("k", b"lost update", stale).unwrap());
    assert_eq!(store.gets("k").unwrap().unwrap().0, b"written by another replica");
}

#[test]
fn cas_on_a_key_that_vanished_reports_false_and_does_not_create_it() {
    let server = MemcachedServer::start();
    let store = connect(&[&server]);
    assert!(store.add("k", b"v").unwrap());
    let (_, token) = store.gets("k").unwrap().unwrap();
    assert!(server.delete("k"));
    assert!(!server.delete("k"));

    assert!(!store.cas("k", b"resurrected", token).unwrap());
    assert_eq!(store.gets("k").unwrap(), None);
}

#[test]
fn two_threads_incrementing_with_gets_and_cas_lose_no_update() {
    let server = MemcachedServer::start();
    assert!(connect(&[&server]).add("counter", b"0").unwrap());
    let start = Arc::new(Barrier::new(2));

    let workers: Vec<_> = (0..2)
        .map(|_| {
            // One client per thread, like two API replicas.
            let store = connect(&[&server]);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                let mut conflicts = 0u32;
                let mut done = 0;
                while done < 500 {
                    let (value, token) = store.gets("counter").unwrap().unwrap();
                    let next = (counter(&value) + 1).to_string();
                    if store.cas("counter", next.as_bytes(), token).unwrap() {
                        done += 1;
                    } else {
                        conflicts += 1;
                    }
                }
                conflicts
            })
        })
        .collect();
    let conflicts: u32 = workers.into_iter().map(|w| w.join().unwrap()).sum();

    let (value, _) = connect(&[&server]).gets("counter").unwrap().unwrap();
    assert_eq!(counter(&value), 1000);
    assert!(conflicts > 0, "the threads never raced, so cas was not exercised");
}

#[test]
fn get_multi_across_two_servers_returns_every_key_each_from_its_own_server() {
    let (first, second) = (MemcachedServer::start(), MemcachedServer::start());
    let store = connect(&[&first, &second]);
    let keys: Vec<String> = (0..300).map(|i| format!("demand/acme/runner-{i}")).collect();
    for key in &keys {
        assert!(store.add(key, key.as_bytes()).unwrap());
    }

    let values = complete(store.get_multi(&keys));
    assert_eq!(values.len(), keys.len());
    for key in &keys {
        assert_eq!(values[key].0, key.as_bytes(), "{key}");
    }

    // Ask each server on its own: every key is on exactly one of them, and both hold some.
    let on_first = complete(connect(&[&first]).get_multi(&keys));
    let on_second = complete(connect(&[&second]).get_multi(&keys));
    assert!(!on_first.is_empty() && !on_second.is_empty(), "{} / {}", on_first.len(), on_second.len());
    assert_eq!(on_first.len() + on_second.len(), keys.len());
    for key in &keys {
        let expected_server = store.server_for(key);
        let holder = if on_first.contains_key(key) { first.addr() } else { second.addr() };
        assert_eq!(holder, expected_server, "{key}");
    }
}

#[test]
fn get_multi_reads_keys_in_batches_and_ignores_duplicates_and_misses() {
    let server = MemcachedServer::start();
    let store = connect(&[&server]);
    let keys: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
    for key in keys.iter().step_by(2) {
        server.set(key, b"x");
    }
    let mut asked = keys.clone();
    asked.extend(keys.iter().take(10).cloned());

    let found = complete(store.get_multi(&asked));
    let expected: HashSet<&String> = keys.iter().step_by(2).collect();
    assert_eq!(found.keys().collect::<HashSet<_>>(), expected);
}

#[test]
fn get_multi_returns_the_live_servers_values_and_names_the_dead_server_and_its_keys() {
    let (live, mut dead) = (MemcachedServer::start(), MemcachedServer::start());
    let store = connect(&[&live, &dead]);
    let keys: Vec<String> = (0..100).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        assert!(store.add(key, b"v").unwrap());
    }
    dead.kill();

    let multi = store.get_multi(&keys);
    assert_eq!(multi.failures.len(), 1, "{:?}", multi.failures);
    let failure = &multi.failures[0];
    assert!(failure.error.is_unavailable(), "{}", failure.error);
    assert_eq!(failure.error.server(), dead.addr());
    assert!(failure.error.to_string().contains(&dead.addr()), "{}", failure.error);
    let unknown: HashSet<&String> = failure.keys.iter().collect();
    for key in &keys {
        let on_dead = store.server_for(key) == dead.addr();
        assert_eq!(unknown.contains(key), on_dead, "{key}");
        assert_eq!(multi.values.contains_key(key), !on_dead, "{key}");
    }
    assert!(!store.get_multi(&keys).failures.is_empty());
}

#[test]
fn a_value_written_through_one_client_is_read_through_another_with_the_same_servers() {
    let (first, second) = (MemcachedServer::start(), MemcachedServer::start());
    let writer = connect(&[&first, &second]);
    let reader = connect(&[&first, &second]);
    let keys: Vec<String> = (0..50).map(|i| format!("shared/{i}")).collect();
    for key in &keys {
        assert!(writer.add(key, format!("value of {key}").as_bytes()).unwrap());
    }

    for key in &keys {
        assert_eq!(reader.gets(key).unwrap().unwrap().0, format!("value of {key}").as_bytes());
    }
    assert_eq!(complete(reader.get_multi(&keys)).len(), keys.len());
}

#[test]
fn a_killed_server_fails_calls_quickly_as_unavailable_and_a_restart_is_picked_up_by_the_same_client() {
    let mut server = MemcachedServer::start();
    let store = connect(&[&server]);
    assert!(store.add("k", b"before").unwrap());

    server.kill();
    for attempt in 0..3 {
        let started = Instant::now();
        let error = store.gets("k").unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1), "attempt {attempt} took {:?}", started.elapsed());
        assert!(error.is_unavailable(), "attempt {attempt}: {error}");
        assert_eq!((error.server(), error.operation()), (server.addr().as_str(), Operation::Gets));
    }

    server.restart();
    assert_eq!(store.gets("k").unwrap(), None, "a restarted memcached comes back empty");
    assert!(store.add("k", b"after").unwrap());
    assert_eq!(store.gets("k").unwrap().unwrap().0, b"after");
}

#[test]
fn a_hung_server_times_out_and_its_late_answer_is_never_taken_for_the_next_one() {
    let server = MemcachedServer::start();
    let store = Arc::new(connect(&[&server]));
    server.set("a", b"value of a");
    server.set("b", b"value of b");

    server.freeze();
    let started = Instant::now();
    let (answer, answered) = mpsc::channel();
    let caller = Arc::clone(&store);
    thread::spawn(move || answer.send(caller.gets("a")));
    // Fail rather than hang should the read timeout be missing.
    let result = answered.recv_timeout(Duration::from_secs(5));
    let elapsed = started.elapsed();
    server.thaw();
    let error = result.expect("gets on a hung server returned within 5 s").unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
    assert!(error.is_unavailable());
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    // The answer about "a" arrives after the timeout: it must not be read as the answer about "b".
    thread::sleep(Duration::from_millis(100));
    assert_eq!(store.gets("b").unwrap().unwrap().0, b"value of b");
}

#[test]
fn a_client_built_while_memcached_is_down_works_once_it_is_up() {
    let mut server = MemcachedServer::start();
    server.kill();

    let store = connect(&[&server]);
    assert!(store.add("k", b"v").unwrap_err().is_unavailable());

    server.restart();
    assert!(store.add("k", b"v").unwrap());
    assert_eq!(store.gets("k").unwrap().unwrap().0, b"v");
}

#[test]
fn a_value_over_the_item_size_limit_is_reported_as_too_large_and_the_connection_stays_usable() {
    let server = MemcachedServer::start_with_args(&["-I", "1m"]);
    let store = connect(&[&server]);

    let error = store.add("big", &vec![b'x'; 2 << 20]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ValueTooLarge, "{error}");
    assert!(!error.is_unavailable());
    assert!(store.add("small", b"ok").unwrap());
    assert_eq!(store.gets("small").unwrap().unwrap().0, b"ok");
}

#[test]
fn the_ascii_protocol_supports_gets_cas_and_get_multi_but_refuses_add() {
    let server = MemcachedServer::start();
    let store = connect_with(&[&server], MemcachedOptions { protocol: Protocol::Ascii, ..Default::default() });

    server.set("k", b"v1");
    let (_, token) = store.gets("k").unwrap().unwrap();
    assert!(store.cas("k", b"v2", token).unwrap());
    assert!(!store.cas("k", b"v3", token).unwrap());
    let found = complete(store.get_multi(&["k".to_string(), "absent".to_string()]));
    assert_eq!(found["k"].0, b"v2");
    assert_eq!(found.len(), 1);

    let error = store.add("new", b"v").unwrap_err();
    assert_eq!((error.kind(), error.operation()), (ErrorKind::Unsupported, Operation::Add));
}

/// memcached `-Y`: ASCII-only authentication against a file of `user:password` lines.
struct AuthenticatedServer {
    server: MemcachedServer,
    _dir: tempfile::TempDir,
}

fn start_with_auth_file(lines: &str) -> AuthenticatedServer {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // memcached drops to `nobody` before reading the file when the tests run as root.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("auth");
    std::fs::write(&path, lines).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = MemcachedServer::start_with_args(&["-Y", path.to_str().unwrap()]);
    AuthenticatedServer { server, _dir: dir }
}

fn ascii_with(credentials: Option<Credentials>) -> MemcachedOptions {
    MemcachedOptions { protocol: Protocol::Ascii, credentials, ..Default::default() }
}

#[test]
fn the_right_credentials_open_an_ascii_auth_server() {
    let auth = start_with_auth_file("alice:S3cret-pw\nbob:other\n");
    let credentials = Credentials::new("alice", "S3cret-pw").unwrap();
    let store = connect_with(&[&auth.server], ascii_with(Some(credentials)));

    auth.server.set_as("bob", "other", "k", b"v1");
    let (value, token) = store.gets("k").unwrap().unwrap();
    assert_eq!(value, b"v1");
    assert!(store.cas("k", b"v2", token).unwrap());
    assert_eq!(complete(store.get_multi(&["k".to_string()]))["k"].0, b"v2");
}

#[test]
fn a_wrong_password_fails_as_authentication_without_revealing_it() {
    let auth = start_with_auth_file("alice:S3cret-pw\n");
    let credentials = Credentials::new("alice", "Wrong-pw").unwrap();
    let store = connect_with(&[&auth.server], ascii_with(Some(credentials)));

    let error = store.gets("k").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Authentication, "{error}");
    assert!(!error.is_unavailable());
    assert!(!format!("{error} {error:?} {store:?}").contains("Wrong-pw"), "{error}");
}

#[test]
fn no_credentials_fail_as_authentication_on_an_ascii_auth_server() {
    let auth = start_with_auth_file("alice:S3cret-pw\n");
    let store = connect_with(&[&auth.server], ascii_with(None));

    let error = store.gets("k").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Authentication, "{error}");
}

/// memcached `-S`: SASL PLAIN on the binary protocol, checked against a sasldb made with
/// `saslpasswd2` (Debian's sasl2-bin, which scripts/test.sh does not install).
struct SaslServer {
    server: MemcachedServer,
    _dir: tempfile::TempDir,
}

fn start_with_sasl_user(username: &str, password: &str) -> SaslServer {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sasldb = dir.path().join("sasldb2");
    let mut saslpasswd = match Command::new("saslpasswd2")
        .args(["-p", "-c", "-a", "memcached", "-f", sasldb.to_str().unwrap(), username])
        .stdin(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("saslpasswd2 is not installed (apt-get install sasl2-bin): {e}"),
    };
    saslpasswd.stdin.take().unwrap().write_all(password.as_bytes()).unwrap();
    assert!(saslpasswd.wait().unwrap().success(), "saslpasswd2 failed");
    std::fs::set_permissions(&sasldb, std::fs::Permissions::from_mode(0o644)).unwrap();
    let conf = format!("mech_list: plain\nsasldb_path: {}\n", sasldb.display());
    std::fs::write(dir.path().join("memcached.conf"), conf).unwrap();
    let server = MemcachedServer::start_with(&["-S"], &[("SASL_CONF_PATH", dir.path().to_str().unwrap())]);
    SaslServer { server, _dir: dir }
}

#[test]
fn sasl_plain_admits_the_right_password_and_refuses_a_wrong_one_on_the_binary_protocol() {
    let sasl = start_with_sasl_user("alice", "S3cret-pw");
    let with = |credentials| MemcachedOptions { credentials, ..Default::default() };

    let store = connect_with(&[&sasl.server], with(Some(Credentials::new("alice", "S3cret-pw").unwrap())));
    assert!(store.add("k", b"v").unwrap());
    assert!(!store.add("k", b"other").unwrap());
    assert_eq!(store.gets("k").unwrap().unwrap().0, b"v");

    let wrong = connect_with(&[&sasl.server], with(Some(Credentials::new("alice", "Wrong-pw").unwrap())));
    let error = wrong.gets("k").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Authentication, "{error}");
    assert!(!error.to_string().contains("Wrong-pw"), "{error}");

    let anonymous = connect_with(&[&sasl.server], with(None));
    assert_eq!(anonymous.gets("k").unwrap_err().kind(), ErrorKind::Authentication);
}
