//! A primary, a replica and three sentinels on loopback for tests, and failovers: asked of
//! a given sentinel ([`Sentinels::failover_led_by`]) or elected by the sentinels themselves
//! with the primary stopped ([`Sentinels::elect`]), each timed to the moment the replica
//! first answers `ROLE` as a primary.

use redis_mutex::{Pool, PoolBuilder};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use super::server::{RedisServer, free_port, server_binary, wait_until_ready};
use super::{HANG, eventually, info_field};

/// What the sentinel leading a failover announces as it starts promoting the replica.
pub const SEND_SLAVEOF_NOONE: &str = "+failover-state-send-slaveof-noone";
/// What the leading sentinel announces when the replica was not promoted in time.
pub const ABORT_SLAVE_TIMEOUT: &str = "-failover-abort-slave-timeout";

/// The bound on an election: the primary found down (`down-after-milliseconds`), a leader
/// elected, perhaps after a split vote and a new attempt (twice `failover-timeout` later),
/// the replica promoted.
pub const ELECTION: Duration = Duration::from_secs(40);

/// The name the sentinels monitor the primary under.
pub const SERVICE: &str = "mymaster";

/// One sentinel process.
pub struct Sentinel {
    child: Child,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// A primary (`servers[0]` at start), its replica, and three sentinels watching them.
pub struct Sentinels {
    pub servers: Vec<RedisServer>,
    pub sentinels: Vec<Sentinel>,
}

impl Sentinels {
    /// Starts them all and waits until every sentinel knows the primary and the replica's
    /// link is up.
    pub fn start() -> Sentinels {
        Sentinels::start_with_replica_args(&[])
    }

    /// As [`start`](Self::start), with extra arguments for the replica's server
    /// (`["--rename-command", "SLAVEOF", "x"]` makes every promotion of it fail).
    pub fn start_with_replica_args(extra: &[&str]) -> Sentinels {
        let primary = RedisServer::start();
        let port = primary.port().to_string();
        let mut args = vec!["--replicaof", "127.0.0.1", port.as_str()];
        args.extend_from_slice(extra);
        let replica = RedisServer::start_with(&args);
        let sentinels: Vec<Sentinel> = (0..3).map(|_| start_sentinel(primary.port())).collect();
        let set = Sentinels {
            servers: vec![primary, replica],
            sentinels,
        };
        let mut conn = set.servers[1].connection();
        let up = eventually(HANG, || {
            info_field(&mut conn, "replication", "master_link_status").as_deref() == Some("up")
        });
        assert!(up, "the replica's link never came up");
        for sentinel in &set.sentinels {
            let mut conn = super::connect(&format!("redis://127.0.0.1:{}/", sentinel.port));
            let knows = eventually(HANG, || {
                let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(SERVICE)
                    .query(&mut conn)
                    .unwrap_or_default();
                !replicas.is_empty()
            });
            assert!(knows, "sentinel {} never saw the replica", sentinel.port);
        }
        set
    }

    /// The sentinels' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("redis://127.0.0.1:{}/", s.port))
            .collect()
    }

    pub fn pool(&self) -> Pool {
        self.pool_with(Pool::builder())
    }

    pub fn pool_with(&self, builder: PoolBuilder) -> Pool {
        let urls = self.urls();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        builder
            .build_sentinel(&urls, SERVICE)
            .expect("a pool through the sentinels")
    }

    /// The port of the primary, as the first sentinel names it.
    pub fn primary_port(&self) -> u16 {
        let mut conn = super::connect(&self.urls()[0]);
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(SERVICE)
            .query(&mut conn)
            .unwrap();
        port
    }

    /// The index into `servers` of the server on `port`.
    pub fn index_of(&self, port: u16) -> usize {
        self.servers
            .iter()
            .position(|s| s.port() == port)
            .expect("one of ours")
    }

    /// Asks a sentinel for a failover and waits until every sentinel names the other
    /// server and it says it is a primary. Returns the new primary's index.
    pub fn failover(&self) -> usize {
        let old = self.primary_port();
        let mut conn = super::connect(&self.urls()[0]);
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(SERVICE)
            .query(&mut conn)
            .unwrap();
        let moved = eventually(HANG, || {
            self.sentinels.iter().all(|s| {
                let mut conn = super::connect(&format!("redis://127.0.0.1:{}/", s.port));
                let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(SERVICE)
                    .query(&mut conn)
                    .unwrap_or(None);
                addr.is_some_and(|(_, port)| port != old)
            })
        });
        assert!(moved, "the sentinels did not fail over within {HANG:?}");
        let new = self.index_of(self.primary_port());
        let mut conn = self.servers[new].connection();
        let promoted = eventually(HANG, || {
            info_field(&mut conn, "replication", "role").as_deref() == Some("master")
        });
        assert!(promoted, "the new primary does not say it is one");
        new
    }
}

/// One failover as the harness saw it, on this process's monotonic clock.
#[derive(Debug, Clone)]
pub struct Promotion {
    /// The index into `servers` of the old primary.
    pub old: usize,
    /// The index into `servers` of the new primary.
    pub new: usize,
    /// The sentinel that announced [`SEND_SLAVEOF_NOONE`]: the one that led the failover.
    pub leader: Option<usize>,
    /// When the failover was asked for (or, for an election, the primary stopped).
    pub started: Instant,
    /// When the new primary first answered `ROLE` as a primary (polled every millisecond).
    pub promoted: Instant,
    /// When the old primary first answered `ROLE` as a replica: demoted by a sentinel.
    pub demoted: Instant,
}

impl Sentinels {
    /// The sentinel `k`'s URL.
    pub fn sentinel_url(&self, k: usize) -> String {
        format!("redis://127.0.0.1:{}/", self.sentinels[k].port)
    }

    /// The port of the primary as sentinel `k` names it now (`None` when it cannot be asked).
    pub fn primary_port_by(&self, k: usize) -> Option<u16> {
        let mut conn = quick_connection(&self.sentinel_url(k)).ok()?;
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(SERVICE)
            .query(&mut conn)
            .ok()?;
        addr.map(|(_, port)| port)
    }

    /// The index into `servers` of the primary, as every sentinel names it (they agree once
    /// a failover is [done](Self::failover_led_by)).
    pub fn primary_index(&self) -> usize {
        let ports: Vec<Option<u16>> = (0..self.sentinels.len())
            .map(|k| self.primary_port_by(k))
            .collect();
        let port = ports[0].expect("sentinel 0 names a primary");
        assert!(
            ports.iter().all(|p| *p == Some(port)),
            "the sentinels disagree on the primary: {ports:?}"
        );
        self.index_of(port)
    }

    /// Asks sentinel `k` for a failover (`SENTINEL FAILOVER`: it leads it, without an
    /// election) and waits until it is done (see [`failover_led_by_timed`]). Returns the
    /// new primary's index.
    ///
    /// [`failover_led_by_timed`]: Self::failover_led_by_timed
    pub fn failover_led_by(&self, k: usize) -> usize {
        self.failover_led_by_timed(k).new
    }

    /// Asks sentinel `k` for a failover and waits until it is done: the replica answers
    /// `ROLE` as a primary, every sentinel names it, the old primary has been demoted by a
    /// sentinel and is in sync with it, and every sentinel sees the old primary as a
    /// healthy replica (so that the next failover can promote it).
    pub fn failover_led_by_timed(&self, k: usize) -> Promotion {
        let old = self.primary_index();
        let new = 1 - old;
        let promoted = RoleWatch::start(&self.servers[new].url(), "master");
        let demoted = RoleWatch::start(&self.servers[old].url(), "slave");
        let announced = Announcements::start(&self.urls(), &[SEND_SLAVEOF_NOONE]);
        let started = Instant::now();
        // A sentinel refuses while it still sees no healthy replica or a failover is in
        // progress; both pass.
        let mut conn = super::connect(&self.sentinel_url(k));
        let mut refused = String::new();
        let asked = eventually(HANG, || {
            match redis::cmd("SENTINEL")
                .arg("FAILOVER")
                .arg(SERVICE)
                .query::<()>(&mut conn)
            {
                Ok(()) => true,
                Err(e) => {
                    refused = e.to_string();
                    thread::sleep(Duration::from_millis(100));
                    false
                }
            }
        });
        assert!(asked, "sentinel {k} refused the failover: {refused}");
        let promoted = promoted
            .wait(HANG)
            .unwrap_or_else(|| panic!("server {new} was not promoted within {HANG:?}"));
        self.await_done(old, new);
        let demoted = demoted
            .wait(HANG)
            .unwrap_or_else(|| panic!("server {old} was not demoted within {HANG:?}"));
        let leader = announced.first(SEND_SLAVEOF_NOONE, Duration::from_secs(1));
        assert_eq!(
            leader,
            Some(k),
            "sentinel {k} was asked to lead the failover"
        );
        Promotion {
            old,
            new,
            leader,
            started,
            promoted,
            demoted,
        }
    }

    /// A real election: stops the primary (SIGSTOP) until the sentinels find it down, elect
    /// a leader among themselves and it promotes the replica; wakes the old primary
    /// (SIGCONT) the moment the replica answers `ROLE` as a primary (it still believes it
    /// is the primary until a sentinel demotes it), and waits until the failover is done as
    /// for [`failover_led_by_timed`](Self::failover_led_by_timed).
    pub fn elect(&mut self) -> Promotion {
        let old = self.primary_index();
        let new = 1 - old;
        let promoted = RoleWatch::start(&self.servers[new].url(), "master");
        let demoted = RoleWatch::start(&self.servers[old].url(), "slave");
        let announced = Announcements::start(&self.urls(), &[SEND_SLAVEOF_NOONE]);
        let started = Instant::now();
        self.servers[old].pause();
        let at = promoted.wait(ELECTION);
        self.servers[old].resume();
        let promoted = at.unwrap_or_else(|| {
            panic!("the sentinels did not promote server {new} within {ELECTION:?}")
        });
        self.await_done(old, new);
        let demoted = demoted
            .wait(HANG)
            .unwrap_or_else(|| panic!("server {old} was not demoted within {HANG:?}"));
        let leader = announced.first(SEND_SLAVEOF_NOONE, Duration::from_secs(1));
        Promotion {
            old,
            new,
            leader,
            started,
            promoted,
            demoted,
        }
    }

    /// Waits until every sentinel names `new`, `old` is its replica in sync, and every
    /// sentinel sees `old` as a healthy replica.
    fn await_done(&self, old: usize, new: usize) {
        let new_port = self.servers[new].port();
        let old_port = self.servers[old].port();
        let named = eventually(HANG, || {
            (0..self.sentinels.len()).all(|k| self.primary_port_by(k) == Some(new_port))
        });
        assert!(
            named,
            "the sentinels did not all name server {new} within {HANG:?}"
        );
        let synced = eventually(HANG, || {
            let Ok(mut conn) = quick_connection(&self.servers[old].url()) else {
                return false;
            };
            let replication: redis::RedisResult<String> =
                redis::cmd("INFO").arg("replication").query(&mut conn);
            replication.is_ok_and(|info| {
                info.contains("role:slave")
                    && info.contains(&format!("master_port:{new_port}"))
                    && info.contains("master_link_status:up")
            })
        });
        assert!(
            synced,
            "server {old} did not become a replica of server {new} in sync within {HANG:?}"
        );
        // Healthy, and reported as a replica by its own `INFO`: a sentinel whose last `INFO`
        // of it came before the demotion would demote it again once a next failover
        // promotes it.
        let seen = eventually(HANG, || {
            (0..self.sentinels.len()).all(|k| {
                self.replica_field(k, old_port, "flags").as_deref() == Some("slave")
                    && self.replica_field(k, old_port, "role-reported").as_deref() == Some("slave")
            })
        });
        assert!(
            seen,
            "the sentinels did not all see server {old} as a healthy replica within {HANG:?}"
        );
    }

    /// The field `name` that sentinel `k` shows for the replica on `port`.
    fn replica_field(&self, k: usize, port: u16, name: &str) -> Option<String> {
        let mut conn = quick_connection(&self.sentinel_url(k)).ok()?;
        let replicas: Vec<Vec<String>> = redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg(SERVICE)
            .query(&mut conn)
            .ok()?;
        replicas.iter().find_map(|fields| {
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|kv| kv[0] == name)
                    .and_then(|kv| kv.get(1).cloned())
            };
            (field("port")? == port.to_string()).then(|| field(name))?
        })
    }
}

/// A connection with short timeouts, for polling servers that may be stopped.
fn quick_connection(url: &str) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(url)?;
    let conn = client.get_connection_with_timeout(Duration::from_millis(200))?;
    conn.set_read_timeout(Some(Duration::from_millis(200)))?;
    conn.set_write_timeout(Some(Duration::from_millis(200)))?;
    Ok(conn)
}

/// Polls a server's `ROLE` every millisecond on a thread and records the first moment it
/// answers `role` (`master` or `slave`): the observation of a promotion or a demotion.
pub struct RoleWatch {
    seen: mpsc::Receiver<Instant>,
    stop: Arc<AtomicBool>,
}

impl RoleWatch {
    /// Starts polling the server at `url` until it answers `role`, for at most two minutes.
    pub fn start(url: &str, role: &'static str) -> RoleWatch {
        let (tx, seen) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let url = url.to_owned();
        thread::Builder::new()
            .name(format!("role watch {url}"))
            .spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut conn = None;
                while !stopping.load(Ordering::SeqCst) && Instant::now() < deadline {
                    if conn.is_none() {
                        conn = quick_connection(&url).ok();
                    }
                    if let Some(c) = conn.as_mut() {
                        match redis::cmd("ROLE").query::<Vec<redis::Value>>(c) {
                            Ok(reply) => {
                                let answered = match reply.first() {
                                    Some(redis::Value::BulkString(b)) => b == role.as_bytes(),
                                    Some(redis::Value::SimpleString(s)) => s == role,
                                    _ => false,
                                };
                                if answered {
                                    tx.send(Instant::now()).ok();
                                    return;
                                }
                            }
                            Err(_) => conn = None,
                        }
                    }
                    // Observation, not a wait for a signal: the role has no event to await.
                    thread::sleep(Duration::from_millis(1));
                }
            })
            .expect("spawn a role watch");
        RoleWatch { seen, stop }
    }

    /// The first moment the server answered the role, waiting up to `timeout` for it.
    pub fn wait(&self, timeout: Duration) -> Option<Instant> {
        self.seen.recv_timeout(timeout).ok()
    }
}

impl Drop for RoleWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One announcement a sentinel published.
#[derive(Debug, Clone)]
pub struct Announcement {
    /// The index of the sentinel that published it.
    pub sentinel: usize,
    pub channel: String,
    pub at: Instant,
}

/// Subscriptions to some of every sentinel's event channels, each on a thread, recording
/// what they publish until dropped.
pub struct Announcements {
    heard: Arc<Mutex<Vec<Announcement>>>,
    stop: Arc<AtomicBool>,
}

impl Announcements {
    /// Subscribes to `channels` on each sentinel at `urls`; returns once every subscription
    /// is in place.
    pub fn start(urls: &[String], channels: &[&str]) -> Announcements {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready) = mpsc::channel();
        for (k, url) in urls.iter().enumerate() {
            let (heard, stopping, ready_tx) = (heard.clone(), stop.clone(), ready_tx.clone());
            let url = url.clone();
            let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
            thread::Builder::new()
                .name(format!("announcements of sentinel {k}"))
                .spawn(move || {
                    let mut conn = super::connect(&url);
                    let mut pubsub = conn.as_pubsub();
                    for channel in &channels {
                        pubsub.subscribe(channel).expect("subscribe to a sentinel");
                    }
                    pubsub
                        .set_read_timeout(Some(Duration::from_millis(100)))
                        .unwrap();
                    ready_tx.send(()).ok();
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while !stopping.load(Ordering::SeqCst) && Instant::now() < deadline {
                        match pubsub.get_message() {
                            Ok(msg) => heard.lock().unwrap().push(Announcement {
                                sentinel: k,
                                channel: msg.get_channel_name().to_owned(),
                                at: Instant::now(),
                            }),
                            Err(e) if e.is_timeout() => {}
                            Err(_) => break,
                        }
                    }
                })
                .expect("spawn a subscriber");
        }
        for _ in urls {
            ready
                .recv_timeout(HANG)
                .expect("a subscription to a sentinel within HANG");
        }
        Announcements { heard, stop }
    }

    /// Everything heard so far, in the order heard.
    pub fn heard(&self) -> Vec<Announcement> {
        self.heard.lock().unwrap().clone()
    }

    /// The sentinel that first announced on `channel`, waiting up to `timeout` for one.
    pub fn first(&self, channel: &str, timeout: Duration) -> Option<usize> {
        self.wait_for(channel, timeout).map(|a| a.sentinel)
    }

    /// The first announcement on `channel`, waiting up to `timeout` for one.
    pub fn wait_for(&self, channel: &str, timeout: Duration) -> Option<Announcement> {
        let mut found = None;
        eventually(timeout, || {
            found = self.heard().into_iter().find(|a| a.channel == channel);
            found.is_some()
        });
        found
    }
}

impl Drop for Announcements {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Sentinels {
    /// Review helper: replaces every sentinel with a fresh one (no saved state: epochs
    /// start again at 0) on the same port, monitoring the server on `primary`.
    pub fn restart_fresh(&mut self, primary: u16) {
        let ports: Vec<u16> = self.sentinels.iter().map(|s| s.port).collect();
        self.sentinels.clear();
        thread::sleep(Duration::from_millis(300));
        for port in ports {
            self.sentinels.push(start_sentinel_on(primary, port));
        }
        for sentinel in &self.sentinels {
            let mut conn = super::connect(&format!("redis://127.0.0.1:{}/", sentinel.port));
            let knows = eventually(HANG, || {
                let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(SERVICE)
                    .query(&mut conn)
                    .unwrap_or_default();
                !replicas.is_empty()
            });
            assert!(knows);
        }
    }
}

fn start_sentinel(primary: u16) -> Sentinel {
    start_sentinel_on(primary, free_port())
}

fn start_sentinel_on(primary: u16, port: u16) -> Sentinel {
    let dir = std::env::temp_dir().join(format!(
        "redis-mutex-sentinel-{}-{port}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("create the sentinel's directory");
    let config = dir.join("sentinel.conf");
    std::fs::write(
        &config,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\n\
             sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n\
             sentinel down-after-milliseconds {SERVICE} 1000\n\
             sentinel failover-timeout {SERVICE} 4000\n",
            dir.display()
        ),
    )
    .expect("write the sentinel's configuration");
    let (binary, _) = server_binary();
    let mut child = Command::new(binary)
        .arg(&config)
        .arg("--sentinel")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the server binary as a sentinel");
    if let Err(log) = wait_until_ready(&mut child, "Sentinel ID is") {
        panic!("sentinel on port {port} did not start: {log}");
    }
    Sentinel { child, port, dir }
}

impl Sentinels {
    /// As [`start_with_replica_args`](Self::start_with_replica_args), with a second replica
    /// of the primary as `servers[2]`, which is never promoted (`replica-priority 0`): a
    /// failover has one more replica to reconfigure. It is started before the sentinels, so
    /// that they know both replicas from their first look at the primary instead of at its
    /// next `INFO`, up to ten seconds later; and the primary feeds its replicas at once
    /// (`repl-diskless-sync-delay 0`) instead of waiting 5 s for more of them.
    pub fn start_with_second_replica(extra: &[&str]) -> Sentinels {
        let primary = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]);
        let port = primary.port().to_string();
        let mut args = vec!["--replicaof", "127.0.0.1", port.as_str()];
        args.extend_from_slice(extra);
        let replica = RedisServer::start_with(&args);
        let second = RedisServer::start_with(&[
            "--replicaof",
            "127.0.0.1",
            port.as_str(),
            "--replica-priority",
            "0",
        ]);
        for server in [&replica, &second] {
            let mut conn = server.connection();
            let up = eventually(HANG, || {
                info_field(&mut conn, "replication", "master_link_status").as_deref() == Some("up")
            });
            assert!(up, "the link of replica {} never came up", server.port());
        }
        let sentinels: Vec<Sentinel> = (0..3).map(|_| start_sentinel(primary.port())).collect();
        let set = Sentinels {
            servers: vec![primary, replica, second],
            sentinels,
        };
        for k in 0..set.sentinels.len() {
            let mut conn = super::connect(&set.sentinel_url(k));
            let mut known = 0;
            let knows = eventually(HANG, || {
                let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(SERVICE)
                    .query(&mut conn)
                    .unwrap_or_default();
                known = replicas.len();
                known == 2
            });
            assert!(
                knows,
                "sentinel {k} should know both replicas within {HANG:?}; it knows {known}"
            );
        }
        set
    }
}
