//! A primary, a replica and three sentinels on loopback for tests, and a failover.
#![allow(dead_code)] // each test binary uses a different part

use redis_mutex::{Pool, PoolBuilder};
use std::process::{Child, Command, Stdio};

use super::server::{RedisServer, free_port, server_binary, wait_until_ready};
use super::{HANG, eventually, info_field};

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
        let primary = RedisServer::start();
        let replica =
            RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port().to_string()]);
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

fn start_sentinel(primary: u16) -> Sentinel {
    let port = free_port();
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
