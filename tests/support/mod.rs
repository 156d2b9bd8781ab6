//! Shared by the integration tests: private Redis servers, child processes, bounded waits.
#![allow(dead_code)] // each test binary uses a different part

pub mod proxy;
pub mod server;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

pub use server::RedisServer;

/// The environment variable that makes an ignored child test do its work.
pub const CHILD_ENV: &str = "REDIS_MUTEX_CHILD";

/// Runs this test binary again as a child process that runs only the ignored test `name`,
/// with `env` set (and [`CHILD_ENV`], which child tests check first).
pub fn spawn_child(name: &str, env: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, "1")
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn the test binary as a child")
}

/// For child tests: the value of `key`, or a panic that says the test is a child's part.
pub fn child_env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| {
        panic!("this ignored test is run by another test as a child process; {key} is not set")
    })
}

/// Waits for `child` to exit, killing it after `timeout`; panics unless it succeeded.
pub fn finish_child(mut child: Child, timeout: Duration) -> Output {
    let status = finish_child_status(&mut child, timeout);
    let output = child.wait_with_output().expect("collect child output");
    assert!(
        status.success(),
        "child failed ({status}); stdout:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    output
}

/// Waits for `child` to exit and returns its status; kills it and panics after `timeout`.
pub fn finish_child_status(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            return status;
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("child still running after {timeout:?}");
        }
        // std offers no wait with a timeout; a child's exit has no other signal to await.
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a child's stdout line by line on a thread, so a test can wait for a given line.
pub struct Lines(mpsc::Receiver<String>);

impl Lines {
    pub fn new(stdout: ChildStdout) -> Lines {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// Waits up to `timeout` for a line containing `marker`; returns what follows it.
    /// (libtest may print the test's name on the same line first.)
    pub fn expect(&self, marker: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) => {
                    if let Some(at) = line.find(marker) {
                        return line[at + marker.len()..].to_string();
                    }
                }
                Err(e) => panic!("no line with {marker:?} from the child within {timeout:?}: {e}"),
            }
        }
    }
}

/// Polls `condition` until it holds or `timeout` passes; for states that no event
/// announces (a client blocked in Redis). Returns whether it held.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// How many clients the server has blocked (in `BLPOP`).
pub fn blocked_clients(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("clients").query(conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .expect("INFO clients has blocked_clients")
        .trim()
        .parse()
        .unwrap()
}

/// How many times the server ran `command` (from `INFO commandstats`).
pub fn command_calls(conn: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    let prefix = format!("cmdstat_{}:calls=", command.to_lowercase());
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

impl Lines {
    /// Waits up to `timeout` for a line containing `marker` and returns what follows it;
    /// `None` when the child closed its stdout or the time ran out first.
    pub fn find(&self, marker: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.0.recv_timeout(left).ok()?;
            if let Some(at) = line.find(marker) {
                return Some(line[at + marker.len()..].to_string());
            }
        }
    }
}

// Fault-injection helpers (tests/faults*.rs).

use redis_mutex::Pool;

/// How long [`drain`] waits for a connection and for its reply.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Returns once Redis has run everything sent on every connection of `pool`: a `PING` on
/// each, read after the replies still owed on it (Redis runs one connection's commands in
/// order).
pub fn drain(pool: &Pool) {
    let count = pool.state().connections;
    let mut conns: Vec<_> = (0..count)
        .map(|_| {
            pool.get_timeout(DRAIN_TIMEOUT)
                .expect("a pooled connection")
        })
        .collect();
    for conn in &mut conns {
        conn.set_read_timeout(Some(DRAIN_TIMEOUT)).unwrap();
        let pong: String = redis::cmd("PING").query(&mut **conn).unwrap();
        assert_eq!(pong, "PONG");
    }
}

/// A pool of at most `max_size` connections to `url`, failing a checkout after
/// `connection_timeout`, built without connecting.
pub fn pool_to(url: &str, max_size: u32, connection_timeout: Duration) -> Pool {
    Pool::builder()
        .test_on_check_out(false)
        .max_size(max_size)
        .min_idle(Some(0))
        .connection_timeout(connection_timeout)
        .build_unchecked(redis::Client::open(url).unwrap())
}

/// What a call on another thread came to, and how long it took.
pub type Outcome = (String, Result<(), String>, Duration);

/// A call to make on another thread.
pub type Call = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// Runs `call` on a new thread and reports its outcome on `tx`.
pub fn run_call(
    tx: &mpsc::Sender<Outcome>,
    label: &str,
    call: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> thread::JoinHandle<()> {
    let tx = tx.clone();
    let label = label.to_owned();
    thread::spawn(move || {
        let started = Instant::now();
        let result = call();
        tx.send((label, result, started.elapsed())).ok();
    })
}
