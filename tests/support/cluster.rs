//! A Redis Cluster on loopback for tests: primaries with one replica each, made with
//! `redis-cli --cluster create`, and the operations the tests put it through (a manual
//! failover, a slot migration).

use std::process::Command;
use std::time::{Duration, Instant};

use redis_mutex::{Pool, PoolBuilder};

use super::server::{RedisServer, companion};
use super::{HANG, eventually, info_field, run_bounded};

/// How long the cluster may take to agree it is whole.
const FORMING: Duration = Duration::from_secs(60);

/// A cluster of `2 × primaries` servers this process started.
pub struct Cluster {
    pub nodes: Vec<RedisServer>,
}

impl Cluster {
    /// Starts `primaries` primaries with one replica each, and waits until every node says
    /// `cluster_state:ok` and every replica's link to its primary is up.
    pub fn start(primaries: usize) -> Cluster {
        let nodes: Vec<RedisServer> = (0..primaries * 2)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let created = run_bounded(
            Command::new(companion("cli"))
                .args(["--cluster", "create"])
                .args(&addresses)
                .args(["--cluster-replicas", "1", "--cluster-yes"]),
            HANG,
        );
        assert!(
            created.status.success(),
            "cluster create failed: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        let cluster = Cluster { nodes };
        cluster.wait_until_whole();
        cluster
    }

    /// Waits until every node says `cluster_state:ok`, agrees on the slots, and every
    /// replica's link is up.
    pub fn wait_until_whole(&self) {
        let formed = eventually(FORMING, || {
            self.nodes.iter().all(|node| {
                // A node just resumed may refuse a connection or two.
                let Ok(mut conn) = node.try_connection() else {
                    return false;
                };
                let Ok(info) = redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut conn) else {
                    return false;
                };
                let ok = info.contains("cluster_state:ok");
                let link = match info_field(&mut conn, "replication", "role").as_deref() {
                    Some("slave") => {
                        info_field(&mut conn, "replication", "master_link_status").as_deref()
                            == Some("up")
                    }
                    _ => true,
                };
                ok && link
            })
        });
        if !formed {
            let nodes: Vec<String> = self.nodes.iter().map(RedisServer::diagnosis).collect();
            panic!(
                "the cluster did not form within {FORMING:?}; its nodes:\n{}",
                nodes.join("\n")
            );
        }
    }

    /// The seed URLs a pool is built from (every node).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// A pool of the whole cluster.
    pub fn pool(&self) -> Pool {
        self.pool_with(Pool::builder())
    }

    pub fn pool_with(&self, builder: PoolBuilder) -> Pool {
        let urls = self.urls();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        builder.build_cluster(&urls).expect("a pool of the cluster")
    }

    /// The node (index into `nodes`) that is primary for `key` now, asked of the cluster.
    pub fn primary_of(&self, key: &str) -> usize {
        let mut conn = self.nodes[0].connection();
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .unwrap();
        self.primary_of_slot(slot)
    }

    /// The node (index into `nodes`) that serves `slot` now, as node 0 sees it.
    pub fn primary_of_slot(&self, slot: u16) -> usize {
        self.primary_of_slot_seen_by(0, slot)
            .unwrap_or_else(|| panic!("no node serves slot {slot}"))
    }

    /// The node (index into `nodes`) that serves `slot` now, as node `by` sees it.
    pub fn primary_of_slot_seen_by(&self, by: usize, slot: u16) -> Option<usize> {
        self.slots_seen_by(by)?
            .into_iter()
            .find(|&(start, end, _)| (start..=end).contains(&slot))
            .map(|(_, _, node)| node)
    }

    /// A slot `node` serves, as it sees itself, once it does (within [`HANG`]).
    fn first_slot_of(&self, node: usize) -> Option<u16> {
        let mut found = None;
        eventually(HANG, || {
            found = self
                .slots_seen_by(node)
                .and_then(|ranges| ranges.into_iter().find(|&(_, _, n)| n == node))
                .map(|(start, _, _)| start);
            found.is_some()
        });
        found
    }

    /// The slot ranges and their primaries (indices into `nodes`), as node `by` sees them;
    /// `None` while it cannot be asked (a node just resumed may refuse a connection or two).
    pub fn slots_seen_by(&self, by: usize) -> Option<Vec<(u16, u16, usize)>> {
        let mut conn = self.nodes[by].try_connection().ok()?;
        let shards: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn).ok()?;
        let mut ranges = Vec::new();
        for range in shards {
            let redis::Value::Array(parts) = range else {
                continue;
            };
            let (
                Some(redis::Value::Int(start)),
                Some(redis::Value::Int(end)),
                Some(redis::Value::Array(primary)),
            ) = (parts.first(), parts.get(1), parts.get(2))
            else {
                continue;
            };
            let Some(redis::Value::Int(port)) = primary.get(1) else {
                continue;
            };
            ranges.push((
                u16::try_from(*start).ok()?,
                u16::try_from(*end).ok()?,
                self.index_of_port(u16::try_from(*port).ok()?),
            ));
        }
        Some(ranges)
    }

    /// The slot of `key`.
    pub fn slot_of(&self, key: &str) -> u16 {
        let mut conn = self.nodes[0].connection();
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .unwrap()
    }

    fn index_of_port(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// The node id of node `i`.
    pub fn id_of(&self, i: usize) -> String {
        let mut conn = self.nodes[i].connection();
        redis::cmd("CLUSTER").arg("MYID").query(&mut conn).unwrap()
    }

    /// The replica (index into `nodes`) of the primary `primary`.
    pub fn replica_of(&self, primary: usize) -> usize {
        let id = self.id_of(primary);
        (0..self.nodes.len())
            .find(|&i| {
                let mut conn = self.nodes[i].connection();
                let role = info_field(&mut conn, "replication", "role");
                let port = info_field(&mut conn, "replication", "master_port");
                role.as_deref() == Some("slave")
                    && port.as_deref() == Some(&self.nodes[primary].port().to_string())
                    && !id.is_empty()
            })
            .unwrap_or_else(|| panic!("node {primary} has no replica"))
    }

    /// Promotes the replica of `primary` with `CLUSTER FAILOVER` and waits until it serves
    /// the slots; returns its index. Under repeated failovers a promoted replica is, once
    /// in a while, taken back by its old primary before the other nodes agree (seen once
    /// in 30 rounds); the failover is then asked for again, up to three times.
    pub fn failover(&self, primary: usize) -> usize {
        let replica = self.replica_of(primary);
        let mut conn = self.nodes[replica].connection();
        let mut views = String::new();
        for _attempt in 0..3 {
            let up = eventually(HANG, || {
                info_field(&mut conn, "replication", "master_link_status").as_deref() == Some("up")
            });
            assert!(up, "the replica's link never came up");
            let _: () = redis::cmd("CLUSTER")
                .arg("FAILOVER")
                .query(&mut conn)
                .unwrap();
            let promoted = eventually(HANG, || {
                info_field(&mut conn, "replication", "role").as_deref() == Some("master")
            });
            assert!(promoted, "the replica was not promoted within {HANG:?}");
            self.wait_until_whole();
            // Until every node sees the replica serve a slot its primary served.
            let Some(slot) = self.first_slot_of(replica) else {
                continue;
            };
            let agreed = eventually(HANG, || {
                (0..self.nodes.len())
                    .all(|by| self.primary_of_slot_seen_by(by, slot) == Some(replica))
            });
            if agreed {
                return replica;
            }
            views = self.views(slot);
            eprintln!(
                "cluster: the failover of node {primary} to {replica} was taken back ({views}); again"
            );
            self.wait_until_whole();
        }
        panic!(
            "the nodes did not agree on the failover of node {primary} to {replica} within \
             three tries; as each node sees it: {views}"
        );
    }

    /// What each node says of `slot` and of itself, for a failure's message.
    fn views(&self, slot: u16) -> String {
        (0..self.nodes.len())
            .map(|by| {
                let role = self.nodes[by]
                    .try_connection()
                    .ok()
                    .and_then(|mut c| info_field(&mut c, "replication", "role"));
                format!(
                    "node {by} ({role:?}) sees slot {slot} on {:?}",
                    self.primary_of_slot_seen_by(by, slot)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Stops `primary` (SIGSTOP), promotes its replica with `CLUSTER FAILOVER FORCE` (no
    /// handshake with the stopped primary), waits until the other nodes agree, then resumes
    /// the old primary, which becomes a replica. Returns the new primary's index.
    pub fn force_failover(&self, primary: usize) -> usize {
        let replica = self.replica_of(primary);
        let mut conn = self.nodes[replica].connection();
        super::signal(self.nodes[primary].pid(), "STOP");
        let _: () = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .arg("FORCE")
            .query(&mut conn)
            .unwrap();
        let promoted = eventually(HANG, || {
            info_field(&mut conn, "replication", "role").as_deref() == Some("master")
        });
        let slot = self.first_slot_of(replica);
        let agreed = slot.is_some_and(|slot| {
            eventually(HANG, || {
                (0..self.nodes.len())
                    .filter(|&by| by != primary)
                    .all(|by| self.primary_of_slot_seen_by(by, slot) == Some(replica))
            })
        });
        super::signal(self.nodes[primary].pid(), "CONT");
        assert!(
            promoted && agreed,
            "the forced failover did not complete within {HANG:?}"
        );
        self.wait_until_whole();
        replica
    }

    /// Moves `slot` from its primary to the primary `to`, keys and all, the way
    /// `redis-cli --cluster reshard` does: IMPORTING/MIGRATING, MIGRATE of each key, then
    /// SETSLOT NODE everywhere. Returns how long the slot was in migration.
    pub fn migrate_slot(&self, slot: u16, to: usize) -> Duration {
        let from = self.primary_of_slot(slot);
        assert_ne!(from, to, "slot {slot} is on node {to} already");
        let (from_id, to_id) = (self.id_of(from), self.id_of(to));
        let mut source = self.nodes[from].connection();
        let mut target = self.nodes[to].connection();
        let started = Instant::now();
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("IMPORTING")
            .arg(&from_id)
            .query(&mut target)
            .unwrap();
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("MIGRATING")
            .arg(&to_id)
            .query(&mut source)
            .unwrap();
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut source)
                .unwrap();
            if keys.is_empty() {
                break;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg("127.0.0.1")
                .arg(self.nodes[to].port())
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys);
            let _: redis::Value = migrate.query(&mut source).unwrap();
            assert!(started.elapsed() < HANG, "migrating slot {slot} hung");
        }
        for i in 0..self.nodes.len() {
            let mut conn = self.nodes[i].connection();
            let role = info_field(&mut conn, "replication", "role");
            if role.as_deref() == Some("master") {
                let _: () = redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("NODE")
                    .arg(&to_id)
                    .query(&mut conn)
                    .unwrap();
            }
        }
        let took = started.elapsed();
        self.wait_until_whole();
        took
    }
}
