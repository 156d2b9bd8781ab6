//! Wire compatibility with python-redis-lock 4.x: a Rust and a Python process exclude and
//! wake each other on the same lock.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;

use crate::support::{HANG, Lines, RedisServer, blocked_clients, eventually};
use redis::Commands;
use redis_mutex::{RedisMutex, TryLockError};

/// One python-redis-lock client: `hold` takes the lock, says "locked", and releases it when
/// told on stdin; `wait` checks the lock is held, says "waiting", then blocks until it gets
/// it, says "acquired" and releases it.
const PYTHON: &str = r#"
import logging, sys, redis, redis_lock
assert redis_lock.__version__.startswith("4."), redis_lock.__version__
# `wait` tries the lock first, expecting it held: python-redis-lock warns of that failed
# try ("Failed to acquire Lock(...)") through logging, which with no handler set goes to
# stderr. Its errors still do.
logging.getLogger("redis_lock.acquire").setLevel(logging.ERROR)
port, mode, name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = redis_lock.Lock(redis.StrictRedis(host="127.0.0.1", port=port), name, id="python-" + mode)
if mode == "hold":
    assert lock.acquire(blocking=True)
    print("@locked", flush=True)
    sys.stdin.readline()
    lock.release()
    print("@released", flush=True)
else:
    assert not lock.acquire(blocking=False), "the lock should be held by Rust"
    print("@waiting", flush=True)
    assert lock.acquire(blocking=True)
    print("@acquired", flush=True)
    lock.release()
"#;

/// Runs [`PYTHON`] in `mode` on the lock `name`, with the Python of `crate::support::python`
/// (the packages pinned in tests/requirements.txt).
fn python(server: &RedisServer, mode: &str, name: &str) -> Child {
    let python = crate::support::python::python();
    Command::new(python)
        .args(["-c", PYTHON, &server.port().to_string(), mode, name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()))
}

fn finish(mut child: Child) {
    let status = crate::support::wait_or_kill(&mut child, HANG);
    assert!(status.success(), "the Python side failed: {status}");
}

#[test]
fn python_holds_rust_waits_and_is_woken_by_the_python_release() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let mut py = python(&server, "hold", "shared job");
    let lines = Lines::new(py.stdout.take().unwrap());
    lines.expect("@locked", HANG);

    let mutex = Arc::new(RedisMutex::new(server.pool(), "shared job").unwrap());
    assert!(matches!(mutex.try_lock(), Err(TryLockError::WouldBlock)));
    assert_eq!(
        mutex.get_owner_id().unwrap().as_deref(),
        Some("python-hold")
    );

    let (acquired_tx, acquired_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let waiter = mutex.clone();
    let holding = crate::support::spawn("the Rust waiter", move || {
        let _guard = waiter.lock().unwrap();
        acquired_tx.send(()).unwrap();
        release_rx.recv_timeout(HANG).ok();
    });
    assert!(
        eventually(HANG, || blocked_clients(&mut conn) == 1),
        "Rust never waited in BLPOP"
    );
    writeln!(py.stdin.as_mut().unwrap()).unwrap();
    lines.expect("@released", HANG);
    acquired_rx
        .recv_timeout(HANG)
        .expect("Rust got the lock after Python released it");
    let signal: bool = conn.exists("lock-signal:shared job").unwrap();
    assert!(
        !signal,
        "Rust was woken by Python's signal, not by a timeout"
    );
    assert_eq!(
        mutex.get_owner_id().unwrap().as_deref(),
        Some(mutex.owner_id())
    );
    drop(release_tx);
    holding.join(HANG);
    finish(py);
}

#[test]
fn rust_holds_python_waits_and_is_woken_by_the_rust_release() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let mutex = RedisMutex::builder(server.pool(), "shared job")
        .owner_id("rust-holder")
        .build()
        .unwrap();
    let guard = mutex.lock().unwrap();

    let mut py = python(&server, "wait", "shared job");
    let lines = Lines::new(py.stdout.take().unwrap());
    lines.expect("@waiting", HANG);
    // python-redis-lock waits in BLPOP without a timeout when the lock has no expiry:
    // only our release's signal can wake it.
    assert!(
        eventually(HANG, || blocked_clients(&mut conn) == 1),
        "Python never waited in BLPOP"
    );
    let owner: String = conn.get("lock:shared job").unwrap();
    assert_eq!(owner, "rust-holder");
    guard.unlock().unwrap();
    lines.expect("@acquired", HANG);
    finish(py);
    assert!(!mutex.is_locked().unwrap(), "Python released it again");
}
