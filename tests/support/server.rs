//! Private `redis-server` processes on free loopback ports, for tests, examples and the
//! benchmark. Never port 6379, never a server this code did not start; every server is
//! killed when its handle drops.
#![allow(dead_code)] // each test binary and example uses a different part

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use redis_mutex::Pool;

const HOW_TO_INSTALL: &str = "redis-server (6.2 or newer) must be on PATH for the tests: \
     `apt-get install redis-server` on Debian/Ubuntu, `brew install redis` on macOS";

/// How long a server may take to say it is ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A `redis-server` this process started, listening on 127.0.0.1.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra_args: Vec<String>,
    paused: bool,
}

impl RedisServer {
    /// Starts a server with no persistence on a free port. Panics, saying how to install
    /// Redis, when `redis-server` is missing.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments (`["--maxmemory", "1mb"]`).
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
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", self.dir.to_str().expect("temp dir is UTF-8")])
            .args(["--logfile", ""])
            .args(&self.extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e}); {HOW_TO_INSTALL}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (ready_tx, ready_rx) = mpsc::channel();
        // Reads the log until the server is ready, then keeps draining it so the server
        // never blocks on a full pipe.
        thread::spawn(move || {
            let mut log = String::new();
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(tx) = &ready_tx {
                    log.push_str(&line);
                    log.push('\n');
                    if line.contains("Ready to accept connections") {
                        tx.send(Ok(())).ok();
                        ready_tx = None;
                    }
                }
            }
            if let Some(tx) = ready_tx {
                tx.send(Err(log)).ok();
            }
        });
        match ready_rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(())) => {
                self.child = Some(child);
                Ok(())
            }
            Ok(Err(log)) => {
                child.kill().ok();
                child.wait().ok();
                Err(format!("redis-server on port {} exited:\n{log}", self.port))
            }
            Err(_) => {
                child.kill().ok();
                child.wait().ok();
                Err(format!(
                    "redis-server on port {} not ready after {STARTUP_TIMEOUT:?}",
                    self.port
                ))
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A pool as the README recommends: no `PING` on checkout.
    pub fn pool(&self) -> Pool {
        self.pool_with(r2d2::Pool::builder().test_on_check_out(false))
    }

    /// A pool built by `builder`, which should not wait for connections at start-up, so
    /// that it can be made while the server is down.
    pub fn pool_with(&self, builder: r2d2::Builder<redis::Client>) -> Pool {
        let client = redis::Client::open(self.url()).expect("valid URL");
        builder
            .connection_timeout(Duration::from_secs(5))
            .build(client)
            .expect("pool to a running server")
    }

    /// A direct connection, to look at or change keys behind the locks' backs.
    pub fn connection(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("valid URL");
        let conn = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect to the test server");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn
    }

    /// Kills the server with SIGKILL (its data is gone: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                signal(&child, "CONT");
                self.paused = false;
            }
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Starts the server again on the same port, empty.
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
        panic!("could not restart redis-server: {last_error}");
    }

    /// Stops the server with SIGSTOP: connections stay open and nothing is answered.
    pub fn pause(&mut self) {
        signal(self.child.as_ref().expect("server running"), "STOP");
        self.paused = true;
    }

    /// Resumes a paused server with SIGCONT.
    pub fn resume(&mut self) {
        signal(self.child.as_ref().expect("server running"), "CONT");
        self.paused = false;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {} failed", child.id());
}

/// A loopback port nobody listens on now (the OS's pick, so never 6379 unless free and
/// chosen by chance; checked anyway).
fn free_port() -> u16 {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        if port != 6379 {
            return port;
        }
    }
    panic!("the OS kept offering port 6379");
}

/// A pool to the server at `url`, built as the README recommends (no `PING` on checkout):
/// for child processes, which get only the URL.
pub fn pool_at(url: &str) -> Pool {
    r2d2::Pool::builder()
        .test_on_check_out(false)
        .build(redis::Client::open(url).expect("valid URL"))
        .expect("pool to a running server")
}

/// The server examples use: `REDIS_URL` when set, else a throwaway server (`None` when
/// `REDIS_URL` is set, so the caller keeps the returned handle alive otherwise).
pub fn example_server() -> (String, Option<RedisServer>) {
    match std::env::var("REDIS_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let server = RedisServer::start();
            eprintln!(
                "REDIS_URL is not set: started a throwaway redis-server at {}",
                server.url()
            );
            (server.url(), Some(server))
        }
    }
}
