//! Shared by the integration tests: private servers, child processes, bounded waits,
//! server statistics. One place for each helper; test files keep only what is theirs.

pub mod cluster;
pub mod history;
pub mod proxy;
pub mod python;
pub mod sentinel;
pub mod server;

use std::io::{BufRead, BufReader};
use std::panic::{self, AssertUnwindSafe};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

#[allow(unused_imports)] // each test binary uses a different part
pub use server::{RedisServer, connect, free_port, pool_at, signal};

/// The bound on any one blocking step of a test: a step still running after this is hung,
/// and the test fails saying so instead of hanging the run.
pub const HANG: Duration = Duration::from_secs(20);

/// Taken by the tests that drive failovers of many servers under contention (Sentinel and
/// Cluster), so that they take turns: each starts a dozen servers and election timers, and
/// two or three at once on a 2-core machine starve a cluster's gossip past its timeouts.
pub fn failover_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// The environment variable that makes an ignored child test do its work.
pub const CHILD_ENV: &str = "REDIS_MUTEX_CHILD";

/// A test of this binary running as a child process: the ignored test `name`, alone.
pub struct ChildTest {
    pub child: Child,
    name: String,
}

/// Runs this test binary again as a child process that runs only the ignored test `name`
/// of the module `module` (the caller's `module_path!()`), with `env` set (and
/// [`CHILD_ENV`], which child tests check first).
pub fn spawn_child(module: &str, name: &str, env: &[(&str, String)]) -> ChildTest {
    // libtest names a test by its path below the crate: `kinds::mutex::child_...`.
    let name = &match module.split_once("::") {
        Some((_, path)) => format!("{path}::{name}"),
        None => name.to_owned(),
    };
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
    ChildTest {
        child: cmd.spawn().expect("spawn the test binary as a child"),
        name: name.to_owned(),
    }
}

impl ChildTest {
    /// The child's output, line by line, to wait for a given line.
    pub fn lines(&mut self) -> Lines {
        Lines::new(
            self.child
                .stdout
                .take()
                .expect("stdout is piped and not taken yet"),
        )
    }

    /// Waits for the child to exit (killing it after `timeout`) and asserts that it ran
    /// exactly its one test and that the test passed: a filter that matches nothing runs
    /// zero tests and exits 0, which is no pass.
    pub fn finish(mut self, timeout: Duration) -> String {
        let status = wait_or_kill(&mut self.child, timeout);
        let mut stdout = String::new();
        if let Some(out) = self.child.stdout.take() {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                stdout.push_str(&line);
                stdout.push('\n');
            }
        }
        check_child_ran(&self.name, status.success(), &stdout);
        stdout
    }

    /// As [`finish`](Self::finish), for a child whose stdout was taken by
    /// [`lines`](Self::lines): checks everything `lines` has read and reads the rest.
    pub fn finish_with(mut self, lines: &Lines, timeout: Duration) {
        let status = wait_or_kill(&mut self.child, timeout);
        lines.rest(timeout);
        check_child_ran(&self.name, status.success(), &lines.transcript());
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Kills the child (it is expected not to finish).
    pub fn kill(mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Asserts that libtest's output says exactly the test `name` ran and passed. (With
/// `--nocapture` the test's own output may come between its name and its "ok", so the
/// summary line says whether it passed.)
fn check_child_ran(name: &str, success: bool, stdout: &str) {
    let ran = stdout.contains("running 1 test")
        && stdout.contains(&format!("test {name} ... "))
        && stdout.contains("test result: ok. 1 passed; 0 failed");
    assert!(
        success && ran,
        "the child test `{name}` did not run and pass exactly once (exit success: {success}); \
         its output:\n{stdout}"
    );
}

/// Waits for `child` to exit and returns its status; kills it and panics after `timeout`.
pub fn wait_or_kill(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
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

/// Runs `cmd` to its end within `timeout`, killing it after; returns its output.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out = spawn("stdout", move || read_all(stdout));
    let err = spawn("stderr", move || read_all(stderr));
    let status = wait_or_kill(&mut child, timeout);
    Output {
        status,
        stdout: out.join(timeout),
        stderr: err.join(timeout),
    }
}

fn read_all(mut r: impl std::io::Read) -> Vec<u8> {
    let mut buf = Vec::new();
    r.read_to_end(&mut buf).ok();
    buf
}

/// For child tests: the value of `key`, or a panic that says the test is a child's part.
pub fn child_env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| {
        panic!("this ignored test is run by another test as a child process; {key} is not set")
    })
}

/// A thread whose end is awaited with a deadline ([`Task::join`]), so that a deadlock
/// fails the test instead of hanging the run.
pub struct Task<T> {
    what: String,
    done: mpsc::Receiver<thread::Result<T>>,
}

/// Runs `f` on a new thread; `what` names it in a failure.
pub fn spawn<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> Task<T> {
    let (tx, done) = mpsc::channel();
    thread::Builder::new()
        .name(what.to_owned())
        .spawn(move || {
            tx.send(panic::catch_unwind(AssertUnwindSafe(f))).ok();
        })
        .expect("spawn a test thread");
    Task {
        what: what.to_owned(),
        done,
    }
}

impl<T> Task<T> {
    /// What the thread returned; its panic goes on here; a thread still running after
    /// `timeout` fails the test.
    pub fn join(self, timeout: Duration) -> T {
        match self.done.recv_timeout(timeout) {
            Ok(Ok(value)) => value,
            Ok(Err(panicked)) => panic::resume_unwind(panicked),
            Err(_) => panic!("`{}` still running after {timeout:?}: hung", self.what),
        }
    }

    /// The result if the thread is done now.
    pub fn try_join(&self) -> Option<thread::Result<T>> {
        self.done.try_recv().ok()
    }
}

/// Reads a child's stdout line by line on a thread, so a test can wait for a given line;
/// keeps every line read, for [`transcript`](Self::transcript).
pub struct Lines {
    rx: mpsc::Receiver<String>,
    read: std::sync::Mutex<Vec<String>>,
}

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
        Lines {
            rx,
            read: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The next line, within `timeout`.
    fn next(&self, timeout: Duration) -> Result<String, mpsc::RecvTimeoutError> {
        let line = self.rx.recv_timeout(timeout)?;
        self.read.lock().unwrap().push(line.clone());
        Ok(line)
    }

    /// Every line read so far.
    pub fn transcript(&self) -> String {
        let mut all = self.read.lock().unwrap().join("\n");
        all.push('\n');
        all
    }

    /// Waits up to `timeout` for a line containing `marker`; returns what follows it.
    /// (libtest may print the test's name on the same line first.)
    pub fn expect(&self, marker: &str, timeout: Duration) -> String {
        self.find(marker, timeout)
            .unwrap_or_else(|| panic!("no line with {marker:?} from the child within {timeout:?}"))
    }

    /// Waits up to `timeout` for a line containing `marker` and returns what follows it;
    /// `None` when the child closed its stdout or the time ran out first.
    pub fn find(&self, marker: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next(left).ok()?;
            if let Some(at) = line.find(marker) {
                return Some(line[at + marker.len()..].to_string());
            }
        }
    }

    /// The lines before the first one containing `marker`, and what follows the marker on
    /// that line; panics when it does not come within `timeout`.
    pub fn until(&self, marker: &str, timeout: Duration) -> (Vec<String>, String) {
        let deadline = Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next(left).unwrap_or_else(|e| {
                panic!("no line with {marker:?} from the child within {timeout:?}: {e}")
            });
            match line.find(marker) {
                Some(at) => return (before, line[at + marker.len()..].to_string()),
                None => before.push(line),
            }
        }
    }

    /// Every line until the child closes its stdout (or `timeout` passes).
    pub fn rest(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut rest = String::new();
        while let Ok(line) = self.next(deadline.saturating_duration_since(Instant::now())) {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
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

/// A script of the crate (`src/<file>`), as the crate sends it, for tests that play a
/// client's part by hand: the shared parts (the clock, `fence`, `touch`, a read-write lock's
/// `wake`, an election's `value`) in front of it, as the crate joins them.
pub fn script(file: &str) -> redis::Script {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let read = |path: &str| {
        std::fs::read_to_string(src.join(path)).unwrap_or_else(|e| panic!("src/{path}: {e}"))
    };
    let mut source: String = [
        "scripts/clock.lua",
        "scripts/now.lua",
        "scripts/fence.lua",
        "scripts/touch.lua",
        "scripts/notes.lua",
    ]
    .into_iter()
    .map(read)
    .collect();
    if file.starts_with("rwlock/") {
        source.push_str(&read("rwlock/wake.lua"));
    }
    if file == "election/proclaim.lua" {
        source.push_str(&read("election/value.lua"));
    }
    source.push_str(&read(file));
    redis::Script::new(&source)
}

/// One field of `INFO <section>`.
pub fn info_field(conn: &mut redis::Connection, section: &str, field: &str) -> Option<String> {
    let info: String = redis::cmd("INFO").arg(section).query(conn).unwrap();
    let prefix = format!("{field}:");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.trim().to_owned())
}

/// How many clients the server has blocked (in `BLPOP`).
pub fn blocked_clients(conn: &mut redis::Connection) -> u64 {
    info_field(conn, "clients", "blocked_clients")
        .expect("INFO clients has blocked_clients")
        .parse()
        .unwrap()
}

/// How many times the server ran `command`, and the mean microseconds per call, from
/// `INFO commandstats`.
pub fn command_stats(conn: &mut redis::Connection, command: &str) -> (u64, f64) {
    let Some(stats) = info_field(
        conn,
        "commandstats",
        &format!("cmdstat_{}", command.to_lowercase()),
    ) else {
        return (0, 0.0);
    };
    let field = |name: &str| {
        stats
            .split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or("0")
            .to_owned()
    };
    (
        field("calls").parse().unwrap(),
        field("usec_per_call").parse().unwrap(),
    )
}

/// How many times the server ran `command`.
pub fn command_calls(conn: &mut redis::Connection, command: &str) -> u64 {
    command_stats(conn, command).0
}

/// How many scripts the server ran, as `EVAL` or `EVALSHA`.
pub fn script_calls(conn: &mut redis::Connection) -> u64 {
    command_calls(conn, "eval") + command_calls(conn, "evalsha")
}

/// Returns once the server has run every command that reached it before this call: two
/// `PING`s on a fresh connection. Redis reads and runs every client's ready input in each
/// pass of its event loop, so input that arrived before the first `PING` has run by the
/// time the second is answered. Bytes a fault proxy still holds are not covered: await their
/// effect instead.
pub fn settle(server: &RedisServer) {
    let mut conn = server.connection();
    for _ in 0..2 {
        let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
        assert_eq!(pong, "PONG");
    }
}
