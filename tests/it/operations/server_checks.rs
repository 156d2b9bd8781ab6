//! What a pool says when what is at its address cannot hold the locks (the issue "The server
//! at the address"): a Sentinel or a cluster node given to `Pool::new`, a plain server given
//! to `Pool::sentinel`, something that does not speak Redis (a TCP listener answering
//! `HTTP/1.1 400`, a real HTTP server, a server sending an SSH banner), a database the
//! server does not have, a password for a server that has none. Each is one line, no
//! panic, no hang, naming the server, what is there and what to use instead: at build, or
//! for a lazy pool at the first call of every kind, and at the calls after it. The right
//! pool to the same servers still locks, so the checks reject no good setup.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::cluster::Cluster;
use crate::support::sentinel::{SERVICE, Sentinels};
use crate::support::server::wait_until_ready;
use crate::support::{RedisServer, connect, free_port, spawn};
use redis::Commands;
use redis_mutex::{
    Error, Pool, PoolBuilder, RedisMutex, RedisRwLock, RedisSemaphore, TryLockError,
};

/// The bound on one call here: a connect (2 s by default) and a reply (2 s), with room for
/// a busy machine. A call still running after it is hung, and fails the test.
const CALL: Duration = Duration::from_secs(15);

/// Runs `f` on a thread of its own and returns what it returned; fails the test when it
/// panics or is still running after [`CALL`].
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let started = Instant::now();
    let out = spawn(what, f).join(CALL);
    println!("{what}: returned in {:?}", started.elapsed());
    out
}

/// Where a pool is pointed, and through which constructor.
#[derive(Clone, Debug)]
enum Target {
    /// `Pool::new(url)`.
    Server(String),
    /// `Pool::sentinel(urls, SERVICE)`.
    Sentinels(Vec<String>),
    /// `Pool::cluster(urls)`.
    Cluster(Vec<String>),
}

impl Target {
    /// The pool, built with the constructor users call first (`Pool::new`, ...).
    fn eager(&self) -> redis_mutex::Result<Pool> {
        match self {
            Target::Server(url) => Pool::new(url),
            Target::Sentinels(urls) => Pool::sentinel(&strs(urls), SERVICE),
            Target::Cluster(urls) => Pool::cluster(&strs(urls)),
        }
    }

    /// The pool, built by `builder`.
    fn build(&self, builder: PoolBuilder) -> redis_mutex::Result<Pool> {
        match self {
            Target::Server(url) => builder.build(url),
            Target::Sentinels(urls) => builder.build_sentinel(&strs(urls), SERVICE),
            Target::Cluster(urls) => builder.build_cluster(&strs(urls)),
        }
    }
}

fn strs(urls: &[String]) -> Vec<&str> {
    urls.iter().map(String::as_str).collect()
}

fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/")
}

/// What the one line about a misconfiguration must say.
#[derive(Clone, Copy, Debug)]
struct Says {
    /// The server at fault: the message names its address.
    port: u16,
    /// The constructor to use instead, cited exactly (`Pool::sentinel`).
    use_instead: Option<&'static str>,
    /// For each group, one of its phrases appears (case-insensitively) in the message with
    /// the APIs and the address it cites taken out: what is at the address.
    words: &'static [&'static [&'static str]],
    /// What it must not contain (case-insensitively): the messages of the issue.
    never: &'static [&'static str],
}

/// Checks the message of `err` against `says`, and prints it.
fn check(what: &str, err: &Error, says: &Says) {
    let message = err.to_string();
    println!("{what}: {err:?}");
    assert!(
        !message.contains('\n') && !message.contains('\r'),
        "{what}: the message is more than one line:\n{message}"
    );
    assert!(
        message.len() <= 500,
        "{what}: a message of {} bytes is a dump, not a line: {message}",
        message.len()
    );
    let address = format!("127.0.0.1:{}", says.port);
    assert!(
        message.contains(&address),
        "{what}: the message does not name the server {address}: {message}"
    );
    if let Some(api) = says.use_instead {
        assert!(
            message.contains(api),
            "{what}: the message does not say to use `{api}`: {message}"
        );
    }
    let prose = [
        "PoolBuilder::build_sentinel",
        "PoolBuilder::build_cluster",
        "build_sentinel",
        "build_cluster",
        "Pool::sentinel",
        "Pool::cluster",
        "Pool::new",
        address.as_str(),
    ]
    .iter()
    .fold(message.clone(), |m, cited| m.replace(cited, ""))
    .to_lowercase();
    for group in says.words {
        assert!(
            group.iter().any(|w| prose.contains(w)),
            "{what}: the message says none of {group:?} (besides the APIs and address it \
             cites): {message}"
        );
    }
    let lower = message.to_lowercase();
    for bad in says.never {
        assert!(
            !lower.contains(bad),
            "{what}: the message contains {bad:?}: {message}"
        );
    }
}

/// Building a pool with the plain constructor fails at once with `InvalidOptions` (as the
/// constructors' docs say for what cannot hold the locks), saying `says`.
fn refused_at_build(what: &str, target: &Target, says: &Says) -> Error {
    let target = target.clone();
    let outcome = bounded(what, move || target.eager());
    let err = match outcome {
        Ok(pool) => panic!("{what}: built a pool ({pool:?}) where it should have refused"),
        Err(e) => e,
    };
    check(what, &err, says);
    assert!(
        matches!(err, Error::InvalidOptions { .. }),
        "{what}: the docs say InvalidOptions for this; got {err:?}"
    );
    err
}

/// What one call on a pool did: `Ok` when it got what it asked for (a lock, a permit, an
/// answer), which a misconfigured pool must not give.
type Outcome = Result<(), Error>;

fn tried<T>(what: &str, outcome: Result<T, TryLockError>) -> Outcome {
    match outcome {
        Ok(_) => Ok(()),
        Err(TryLockError::Error(e)) => Err(e),
        Err(other) => panic!("{what}: {other:?}: nobody holds it, the server cannot be asked"),
    }
}

/// The calls of every kind that take a lock or read one, as a user's first call may be.
fn call(which: &str, pool: Pool) -> Outcome {
    match which {
        "RedisMutex::lock" => RedisMutex::new(pool, "checked").unwrap().lock().map(drop),
        "RedisMutex::try_lock" => {
            tried(which, RedisMutex::new(pool, "checked").unwrap().try_lock())
        }
        "RedisMutex::is_locked" => RedisMutex::new(pool, "checked")
            .unwrap()
            .is_locked()
            .map(drop),
        "RedisRwLock::write" => RedisRwLock::new(pool, "checked/tree")
            .unwrap()
            .write()
            .map(drop),
        "RedisRwLock::try_read" => tried(
            which,
            RedisRwLock::new(pool, "checked/tree").unwrap().try_read(),
        ),
        "RedisSemaphore::try_acquire" => tried(
            which,
            RedisSemaphore::new(pool, "checked", 2)
                .unwrap()
                .try_acquire(),
        ),
        other => unreachable!("no call {other}"),
    }
}

const CALLS: [&str; 6] = [
    "RedisMutex::lock",
    "RedisMutex::try_lock",
    "RedisMutex::is_locked",
    "RedisRwLock::write",
    "RedisRwLock::try_read",
    "RedisSemaphore::try_acquire",
];

/// A lazy pool to `target` builds without connecting; its first call (`lock()` on one fresh
/// pool, `try_lock()` on another) fails saying `says`, and so does every call after it, of
/// every kind.
fn refused_at_first_call(what: &str, target: &Target, says: &Says) {
    for first in ["RedisMutex::lock", "RedisMutex::try_lock"] {
        let target_ = target.clone();
        let pool = bounded(&format!("{what}: lazy build"), move || {
            target_.build(Pool::builder().connect_lazy(true))
        })
        .unwrap_or_else(|e| {
            panic!("{what}: a lazy pool connects to nothing at build, yet it failed: {e:?}")
        });
        let order = std::iter::once(first).chain(CALLS.iter().copied().filter(|c| *c != first));
        for (n, which) in order.chain(std::iter::once(first)).enumerate() {
            let step = format!("{what}: lazy, call {n}: {which}");
            let pool = pool.clone();
            let outcome = bounded(&step, move || call(which, pool));
            match outcome {
                Ok(()) => panic!("{step}: succeeded on a pool whose server cannot hold locks"),
                Err(e) => check(&step, &e, says),
            }
        }
    }
}

/// A pool to `target` (built eagerly, and lazily) locks every kind.
fn works(what: &str, target: &Target) {
    // Names of their own for each pool: a good setup is checked by what it grants, not by
    // what an earlier check left behind on the same server.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    for lazy in [false, true] {
        let step = format!("{what} (lazy: {lazy})");
        let name = format!("good-setup-{}", NEXT.fetch_add(1, Ordering::SeqCst));
        let target = target.clone();
        let step_ = step.clone();
        bounded(&step, move || {
            let step = step_;
            let pool = if lazy {
                target.build(Pool::builder().connect_lazy(true))
            } else {
                target.eager()
            }
            .unwrap_or_else(|e| panic!("{step}: a pool to a good setup: {e:?}"));
            let mutex = RedisMutex::new(pool.clone(), name.as_str()).unwrap();
            let guard = mutex
                .lock()
                .unwrap_or_else(|e| panic!("{step}: lock: {e:?}"));
            assert!(mutex.is_locked().unwrap(), "{step}");
            assert!(
                matches!(mutex.try_lock(), Err(TryLockError::WouldBlock)),
                "{step}: a held lock is held"
            );
            guard
                .unlock()
                .unwrap_or_else(|e| panic!("{step}: unlock: {e:?}"));
            drop(
                mutex
                    .try_lock()
                    .unwrap_or_else(|e| panic!("{step}: try_lock: {e:?}")),
            );
            let tree = RedisRwLock::new(pool.clone(), format!("{name}/tree")).unwrap();
            drop(
                tree.write()
                    .unwrap_or_else(|e| panic!("{step}: write: {e:?}")),
            );
            let semaphore = RedisSemaphore::new(pool, name.as_str(), 1).unwrap();
            drop(
                semaphore
                    .try_acquire()
                    .unwrap_or_else(|e| panic!("{step}: try_acquire: {e:?}")),
            );
        });
    }
}

const SENTINEL_AT_POOL_NEW: &[&[&str]] = &[&["sentinel"]];
const NOT_A_SENTINEL: &[&[&str]] = &[&[
    "not a sentinel",
    "not a redis sentinel",
    "no sentinel",
    "isn't a sentinel",
    "instead of a sentinel",
]];

#[test]
fn pool_new_at_a_sentinel_says_it_is_a_sentinel_and_to_use_pool_sentinel() {
    let set = Sentinels::start();
    for sentinel in &set.sentinels {
        let says = Says {
            port: sentinel.port,
            use_instead: Some("Pool::sentinel"),
            words: SENTINEL_AT_POOL_NEW,
            never: &["evalsha", "unknown command"],
        };
        let target = Target::Server(url(sentinel.port));
        let what = format!("Pool::new at sentinel {}", sentinel.port);
        refused_at_build(&what, &target, &says);
        refused_at_first_call(&what, &target, &says);
    }
    // The other way round, in the same deployment: the primary's address given as a
    // sentinel's.
    let primary = set.servers[0].port();
    let says = Says {
        port: primary,
        use_instead: None,
        words: NOT_A_SENTINEL,
        never: &["unknown command", "check that it runs"],
    };
    let target = Target::Sentinels(vec![url(primary)]);
    let what = format!("Pool::sentinel at the primary {primary}");
    refused_at_build(&what, &target, &says);
    refused_at_first_call(&what, &target, &says);
    // And the right pools to the same servers lock.
    works(
        "Pool::sentinel at the sentinels",
        &Target::Sentinels(set.urls()),
    );
    works("Pool::new at the primary", &Target::Server(url(primary)));
}

#[test]
fn pool_sentinel_at_a_plain_server_says_it_is_not_a_sentinel() {
    let server = RedisServer::start();
    let says = Says {
        port: server.port(),
        use_instead: None,
        words: NOT_A_SENTINEL,
        never: &["unknown command", "check that it runs"],
    };
    let target = Target::Sentinels(vec![server.url()]);
    refused_at_build("Pool::sentinel at a plain server", &target, &says);
    refused_at_first_call("Pool::sentinel at a plain server", &target, &says);
    // The plain constructor to the same server locks.
    works("Pool::new at a plain server", &Target::Server(server.url()));
}

/// What the issue says `Pool::cluster` says already, held to the same line, at build and at
/// every call of a lazy pool.
#[test]
fn pool_cluster_at_a_plain_server_says_it_is_not_in_cluster_mode_at_every_call() {
    let server = RedisServer::start();
    let says = Says {
        port: server.port(),
        use_instead: Some("Pool::new"),
        words: &[&["cluster"]],
        never: &[
            "unknown command",
            "cluster support is disabled",
            "clusterdown",
        ],
    };
    let target = Target::Cluster(vec![server.url()]);
    refused_at_build("Pool::cluster at a plain server", &target, &says);
    refused_at_first_call("Pool::cluster at a plain server", &target, &says);
}

fn cluster_node_says(port: u16) -> Says {
    Says {
        port,
        use_instead: Some("Pool::cluster"),
        words: &[&["cluster"]],
        never: &["moved", "clusterdown", "unknown command", "evalsha"],
    }
}

#[test]
fn pool_new_at_any_node_of_a_cluster_says_it_is_a_cluster_node_and_to_use_pool_cluster() {
    let cluster = Cluster::start(3);
    for (i, node) in cluster.nodes.iter().enumerate() {
        let mut conn = node.connection();
        let role = crate::support::info_field(&mut conn, "replication", "role");
        let what = format!(
            "Pool::new at cluster node {i} ({role:?}, port {})",
            node.port()
        );
        let says = cluster_node_says(node.port());
        let target = Target::Server(node.url());
        refused_at_build(&what, &target, &says);
        refused_at_first_call(&what, &target, &says);
    }
    // The cluster pool to the same nodes locks, from every node and from one replica alone.
    works(
        "Pool::cluster at every node",
        &Target::Cluster(cluster.urls()),
    );
    let replica = cluster.replica_of(cluster.primary_of("{seed}"));
    works(
        "Pool::cluster from a replica alone",
        &Target::Cluster(vec![cluster.nodes[replica].url()]),
    );
}

#[test]
fn pool_new_at_a_cluster_node_that_has_joined_no_cluster_yet_says_to_use_pool_cluster() {
    let node = RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
    ]);
    let what = "Pool::new at a lone cluster-enabled node";
    let says = cluster_node_says(node.port());
    let target = Target::Server(node.url());
    refused_at_build(what, &target, &says);
    refused_at_first_call(what, &target, &says);
}

/// A TCP listener on a free loopback port that does not speak Redis: each connection is
/// given to `serve` on a thread of its own. Stops accepting when dropped.
struct NotRedis {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl NotRedis {
    fn start(serve: fn(TcpStream)) -> NotRedis {
        let mut last = None;
        for _ in 0..5 {
            let port = free_port();
            let listener = match TcpListener::bind(("127.0.0.1", port)) {
                Ok(listener) => listener,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let stop = Arc::new(AtomicBool::new(false));
            let stopping = stop.clone();
            thread::Builder::new()
                .name(format!("not redis on {port}"))
                .spawn(move || {
                    // Bounded: far more connections than any test here makes.
                    for _ in 0..10_000 {
                        let Ok((stream, _)) = listener.accept() else {
                            break;
                        };
                        if stopping.load(Ordering::SeqCst) {
                            break;
                        }
                        thread::spawn(move || serve(stream));
                    }
                })
                .expect("spawn the listener's thread");
            return NotRedis { port, stop };
        }
        panic!("could not listen on a free port: {last:?}");
    }
}

impl Drop for NotRedis {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept, which then sees the flag.
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok();
    }
}

/// An HTTP server's answer to a request it cannot parse: reads the request, answers
/// `400 Bad Request` and closes (after reading what else comes, so that the close is a
/// FIN the client reads after the answer, not a reset).
fn answer_http_400(mut stream: TcpStream) {
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let mut buf = [0u8; 4096];
    // The request, whatever it is (a client that sends nothing is answered after 2 s).
    let _request = stream.read(&mut buf);
    stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").ok();
    stream.shutdown(Shutdown::Write).ok();
    for _ in 0..100 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// An SSH server's greeting, sent at once; then the connection stays open until the client
/// closes it (or 10 s pass).
fn send_ssh_banner(mut stream: TcpStream) {
    stream
        .write_all(b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5\r\n")
        .ok();
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok();
    let mut buf = [0u8; 4096];
    for _ in 0..10 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
}

/// Python's `http.server` on a free loopback port: a real HTTP server, whose answer to a
/// Redis request is a 400 with headers and an HTML page.
struct HttpServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl HttpServer {
    fn start() -> HttpServer {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir()
                .join(format!("redis-mutex-http-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create the HTTP server's directory");
            let mut child = Command::new("python3")
                .args(["-u", "-m", "http.server", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--directory"])
                .arg(&dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("run python3 -m http.server");
            match wait_until_ready(&mut child, "Serving HTTP") {
                Ok(()) => return HttpServer { child, port, dir },
                Err(log) => {
                    std::fs::remove_dir_all(&dir).ok();
                    last = log;
                }
            }
        }
        panic!("python3 -m http.server did not start: {last}");
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn not_redis_says(port: u16) -> Says {
    Says {
        port,
        use_instead: None,
        words: &[&["redis protocol"]],
        never: &["parse error"],
    }
}

#[test]
fn pool_new_at_a_listener_answering_http_400_says_it_does_not_speak_redis() {
    let listener = NotRedis::start(answer_http_400);
    let what = "Pool::new at a listener answering HTTP 400";
    let says = not_redis_says(listener.port);
    let target = Target::Server(url(listener.port));
    refused_at_build(what, &target, &says);
    refused_at_first_call(what, &target, &says);
}

#[test]
fn pool_new_at_a_real_http_server_says_it_does_not_speak_redis() {
    let http = HttpServer::start();
    // It is what it says it is: an HTTP server.
    let mut probe = TcpStream::connect(("127.0.0.1", http.port)).unwrap();
    probe.set_read_timeout(Some(CALL)).unwrap();
    probe
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    probe.read_to_string(&mut answer).ok();
    assert!(answer.starts_with("HTTP/1."), "{answer:?}");
    let what = "Pool::new at python's http.server";
    let says = not_redis_says(http.port);
    let target = Target::Server(url(http.port));
    refused_at_build(what, &target, &says);
    refused_at_first_call(what, &target, &says);
}

#[test]
fn pool_new_at_a_server_that_sends_a_banner_and_stays_open_says_it_does_not_speak_redis() {
    let listener = NotRedis::start(send_ssh_banner);
    let what = "Pool::new at an SSH-like banner";
    let says = not_redis_says(listener.port);
    let target = Target::Server(url(listener.port));
    refused_at_build(what, &target, &says);
    refused_at_first_call(what, &target, &says);
}

/// Beyond `Pool::new`: `Pool::sentinel` given a listener that does not speak Redis says so
/// in one line too.
#[test]
fn pool_sentinel_at_an_http_listener_says_it_does_not_speak_redis() {
    let listener = NotRedis::start(answer_http_400);
    let what = "Pool::sentinel at a listener answering HTTP 400";
    let target = Target::Sentinels(vec![url(listener.port)]);
    let says = not_redis_says(listener.port);
    refused_at_build(what, &target, &says);
    refused_at_first_call(what, &target, &says);
}

/// Beyond `Pool::new`: `Pool::cluster` given a listener that does not speak Redis says so
/// in one line too.
#[test]
fn pool_cluster_at_an_http_listener_says_it_does_not_speak_redis() {
    let listener = NotRedis::start(answer_http_400);
    let what = "Pool::cluster at a listener answering HTTP 400";
    let target = Target::Cluster(vec![url(listener.port)]);
    let says = not_redis_says(listener.port);
    refused_at_build(what, &target, &says);
    refused_at_first_call(what, &target, &says);
}

const DB_99: &[&[&str]] = &[&["99"], &["database", "db "]];
const DB_16: &[&[&str]] = &[&["16"], &["database", "db "]];

#[test]
fn a_database_the_server_does_not_have_is_named_not_unreachable() {
    let server = RedisServer::start();
    for db in [99, 16] {
        let what = format!("Pool::new at database {db} of a server with 16");
        let target = Target::Server(format!("redis://127.0.0.1:{}/{db}", server.port()));
        let says = Says {
            port: server.port(),
            use_instead: None,
            words: if db == 99 { DB_99 } else { DB_16 },
            never: &["unreachable", "could not connect", "cannot reach"],
        };
        let err = refused_at_build(&what, &target, &says);
        assert!(!err.is_unreachable(), "{what}: {err:?}");
        refused_at_first_call(&what, &target, &says);
        // Each lazy call, again, by its variant.
        let lazy = target
            .build(Pool::builder().connect_lazy(true))
            .unwrap_or_else(|e| panic!("{what}: lazy build: {e:?}"));
        let outcome = bounded(&what, move || call("RedisMutex::lock", lazy));
        let err = outcome.expect_err("locked in a database that does not exist");
        assert!(
            !err.is_unreachable(),
            "{what}: lazy: a server that answered is not unreachable: {err:?}"
        );
    }
    // The last database it has is fine, and the lock is there.
    let last = format!("redis://127.0.0.1:{}/15", server.port());
    works(
        "Pool::new at database 15 of 16",
        &Target::Server(last.clone()),
    );
    let pool = Pool::new(&last).unwrap();
    let mutex = RedisMutex::new(pool, "in-db-15").unwrap();
    let guard = mutex.lock().unwrap();
    let owner: Option<String> = connect(&last).get("lock:in-db-15").unwrap();
    assert_eq!(
        owner.as_deref(),
        Some(mutex.owner_id()),
        "the lock is in db 15"
    );
    guard.unlock().unwrap();
    // A server with a hundred databases has a 99th.
    let roomy = RedisServer::start_with(&["--databases", "100"]);
    works(
        "Pool::new at database 99 of 100",
        &Target::Server(format!("redis://127.0.0.1:{}/99", roomy.port())),
    );
}

const NO_PASSWORD_SET: &[&[&str]] = &[
    &["password"],
    &[
        "no password",
        "without a password",
        "not set",
        "drop",
        "remove",
        "none",
    ],
];

#[test]
fn a_password_for_a_server_without_one_says_the_server_has_none() {
    let server = RedisServer::start();
    let says = Says {
        port: server.port(),
        use_instead: None,
        words: NO_PASSWORD_SET,
        never: &["refused our credentials", "secret"],
    };
    let with_password = Target::Server(format!("redis://:secret@127.0.0.1:{}/", server.port()));
    let what = "a URL's password to a server without one";
    refused_at_build(what, &with_password, &says);
    refused_at_first_call(what, &with_password, &says);
    // The same password through the builder.
    let url = server.url();
    let built = bounded("the builder's password", move || {
        Pool::builder().password("secret").build(&url)
    });
    let err = built.expect_err("a builder's password to a server without one");
    check(
        "the builder's password to a server without one",
        &err,
        &says,
    );
    assert!(
        matches!(err, Error::InvalidOptions { .. }),
        "the docs say InvalidOptions for this: {err:?}"
    );
    let target = Target::Server(server.url());
    let lazy = target
        .build(Pool::builder().password("secret").connect_lazy(true))
        .expect("a lazy pool connects to nothing at build");
    let outcome = bounded("the builder's password, lazy", move || {
        call("RedisMutex::lock", lazy)
    });
    check(
        "the builder's password to a server without one, lazy",
        &outcome.expect_err("locked with a password the server does not have"),
        &says,
    );
    // Without the password, the same server locks.
    works("Pool::new without a password", &target);
    // A server that wants that password takes it.
    let guarded = RedisServer::start_with(&["--requirepass", "secret"]);
    works(
        "Pool::new with the password the server wants",
        &Target::Server(format!("redis://:secret@127.0.0.1:{}/", guarded.port())),
    );
    // And one that wants another still refuses our credentials, as before: the check
    // mistakes no wrong password for an unwanted one.
    let other = RedisServer::start_with(&["--requirepass", "another"]);
    let wrong = format!("redis://:secret@127.0.0.1:{}/", other.port());
    let err = bounded("a wrong password", move || Pool::new(&wrong))
        .expect_err("built a pool with a wrong password");
    println!("a wrong password: {err:?}");
    assert!(
        matches!(err, Error::AuthFailed { .. }),
        "the docs say AuthFailed for refused credentials: {err:?}"
    );
    let message = err.to_string().to_lowercase();
    assert!(
        !message.contains("no password") && !message.contains("drop") && !message.contains('\n'),
        "a wrong password is not an unwanted one: {err}"
    );
}
