//! A Redis Cluster: which primary serves which slot, one [`Node`] per primary, and how a
//! redirection or a refusal is to be read.
//!
//! The slot map comes from `CLUSTER SLOTS`, asked of any node that answers, at start and
//! again after a `MOVED` or a node that cannot be reached (at most every
//! [`REFRESH_INTERVAL`]). Commands are routed in `conn`; nothing here re-sends a command.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use redis::cluster_routing::Slot;
use redis::{ConnectionInfo, ServerErrorKind, Value};

use super::link;
use super::manager::Target;
use super::{Config, Node};
use crate::error::{Error, Result};

/// The shortest time between two refreshes of the slot map: a burst of redirections during
/// a migration costs one refresh, not one per command.
const REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// The primaries of a Redis Cluster and the slots they serve.
pub(crate) struct Cluster {
    seeds: Vec<ConnectionInfo>,
    config: Config,
    /// One node per primary address (`host:port`), made on first use.
    nodes: RwLock<HashMap<String, Arc<Node>>>,
    slots: RwLock<Arc<SlotMap>>,
    /// When the map was last asked for; held while it is being asked for.
    refreshed: Mutex<Option<Instant>>,
}

/// Which primary serves each slot.
#[derive(Default)]
struct SlotMap {
    owners: HashMap<Slot, Arc<str>>,
    /// Each primary once, as `(address, host, port)`.
    primaries: Vec<(Arc<str>, String, u16)>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slots = self.slots.read();
        let primaries: Vec<&str> = slots.primaries.iter().map(|(a, _, _)| &**a).collect();
        f.debug_struct("Cluster")
            .field("primaries", &primaries)
            .finish_non_exhaustive()
    }
}

/// How a refused command is to be retried. Each of these means the command did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Redirect {
    /// `MOVED`: the slot is served elsewhere now; go there.
    Moved { slot: u16, addr: String },
    /// `ASK`: this key is at `addr` while its slot migrates; ask there with `ASKING`.
    Ask { addr: String },
    /// `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`: try again in a moment.
    Later,
    /// `READONLY`, `MASTERDOWN`: the server is no longer a primary (or a replica that lost
    /// its primary); drop the connection and find the primary again, never retrying here.
    Demoted,
}

/// Whether `e` is a refusal to run a command that another try (elsewhere, or later) may
/// overcome.
pub(crate) fn redirect_of(e: &redis::RedisError) -> Option<Redirect> {
    if e.code() == Some("UNBLOCKED") {
        // A blocked command ended by a change of the server's role.
        return Some(Redirect::Demoted);
    }
    let redis::ErrorKind::Server(kind) = e.kind() else {
        return None;
    };
    match kind {
        ServerErrorKind::Moved => {
            let (addr, slot) = e.redirect_node()?;
            Some(Redirect::Moved {
                slot,
                addr: addr.to_owned(),
            })
        }
        ServerErrorKind::Ask => Some(Redirect::Ask {
            addr: e.redirect_node()?.0.to_owned(),
        }),
        ServerErrorKind::TryAgain | ServerErrorKind::ClusterDown | ServerErrorKind::BusyLoading => {
            Some(Redirect::Later)
        }
        // Not a primary (any more), or one that lost its own: never retried on it.
        ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown => Some(Redirect::Demoted),
        _ => None,
    }
}

impl Cluster {
    /// Asks the seeds for the slot map (unless `lazy`: then the first command does); fails
    /// when none answers.
    pub(super) fn connect(
        seeds: Vec<ConnectionInfo>,
        config: Config,
        lazy: bool,
    ) -> Result<Cluster> {
        let cluster = Cluster {
            seeds,
            config,
            nodes: RwLock::new(HashMap::new()),
            slots: RwLock::new(Arc::default()),
            refreshed: Mutex::new(None),
        };
        if !lazy {
            cluster.refresh_now()?;
        }
        Ok(cluster)
    }

    /// The node serving `key`'s slot.
    pub(crate) fn node_for(&self, key: &str) -> Result<Arc<Node>> {
        let slot = Slot::for_key(key);
        if let Some(addr) = self.owner(slot) {
            return Ok(self.node(&addr));
        }
        self.refresh()?;
        match self.owner(slot) {
            Some(addr) => Ok(self.node(&addr)),
            None => Err(Error::Redis {
                server: self.describe(),
                source: redis::RedisError::from((
                    redis::ErrorKind::Server(ServerErrorKind::ClusterDown),
                    "no node serves the slot of the key",
                    key.to_owned(),
                )),
            }),
        }
    }

    /// Whether `node` is the primary of `key`'s slot, as far as the slot map knows (a slot
    /// the map does not know is given the benefit of the doubt).
    pub(crate) fn serves(&self, node: &Node, key: &str) -> bool {
        self.owner(Slot::for_key(key))
            .is_none_or(|addr| *addr == *node.server())
    }

    /// The node at `addr` (`host:port`), as a redirection names it.
    pub(crate) fn node(&self, addr: &str) -> Arc<Node> {
        if let Some(node) = self.nodes.read().get(addr) {
            return node.clone();
        }
        let mut nodes = self.nodes.write();
        nodes
            .entry(addr.to_owned())
            .or_insert_with(|| {
                let (host, port) = split_addr(addr);
                let info = link::at(&self.seeds[0], host, port);
                Node::new(Target::ClusterNode(info), addr.to_owned(), &self.config)
            })
            .clone()
    }

    /// After `MOVED`: the slot is served by `addr` now, and the map is asked for again.
    pub(crate) fn moved(&self, slot: u16, addr: &str) {
        if let Some(slot) = Slot::new(slot) {
            let mut map = self.slots.write();
            let mut updated = SlotMap {
                owners: map.owners.clone(),
                primaries: map.primaries.clone(),
            };
            updated.owners.insert(slot, addr.into());
            *map = Arc::new(updated);
        }
        if let Err(e) = self.refresh() {
            log::debug!("refreshing the cluster's slot map after MOVED failed: {e}");
        }
    }

    /// Asks for the slot map again, unless that was done less than [`REFRESH_INTERVAL`]
    /// ago.
    pub(crate) fn refresh(&self) -> Result<()> {
        let mut refreshed = self.refreshed.lock();
        // A map not had yet is always asked for: the last attempt's error is the answer.
        let known = !self.slots.read().primaries.is_empty();
        if known && refreshed.is_some_and(|at| at.elapsed() < REFRESH_INTERVAL) {
            return Ok(());
        }
        let result = self.ask_for_slots();
        *refreshed = Some(Instant::now());
        result
    }

    fn refresh_now(&self) -> Result<()> {
        let mut refreshed = self.refreshed.lock();
        let result = self.ask_for_slots();
        *refreshed = Some(Instant::now());
        result
    }

    /// Every primary, for walking the keyspace.
    pub(super) fn primaries(&self) -> Result<Vec<Arc<Node>>> {
        self.refresh()?;
        let map = self.slots.read().clone();
        Ok(map
            .primaries
            .iter()
            .map(|(addr, _, _)| self.node(addr))
            .collect())
    }

    /// The primary that serves `key`'s slot, as the map says (no request is sent).
    pub(super) fn owner_of(&self, key: &str) -> Option<Arc<str>> {
        self.owner(Slot::for_key(key))
    }

    fn owner(&self, slot: Slot) -> Option<Arc<str>> {
        self.slots.read().owners.get(&slot).cloned()
    }

    fn describe(&self) -> String {
        let names: Vec<String> = self.seeds.iter().map(link::server_name).collect();
        format!("the cluster at {}", names.join(", "))
    }

    /// Asks the known primaries, then the seeds, for `CLUSTER SLOTS`, and keeps the first
    /// answer. Nodes that serve nothing any more are dropped, with their connections.
    fn ask_for_slots(&self) -> Result<()> {
        let known: Vec<ConnectionInfo> = self
            .slots
            .read()
            .primaries
            .iter()
            .map(|(_, host, port)| link::at(&self.seeds[0], host, *port))
            .collect();
        let mut last_error = None;
        for info in known.iter().chain(&self.seeds) {
            let server = link::server_name(info);
            let reply = link::connect(
                info,
                self.config.connect_timeout,
                self.config.response_timeout,
            )
            .map_err(|f| f.not_redis("nodes", &server).to_error(&server))
            .and_then(|mut link| {
                redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query::<Value>(&mut link.conn)
                    .map_err(|source| not_a_cluster(&server, source))
            });
            let map = match reply.and_then(|reply| parse_slots(&reply, info, &server)) {
                Ok(map) => map,
                Err(e @ Error::InvalidOptions { .. }) => return Err(e),
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            };
            let live: Vec<&str> = map.primaries.iter().map(|(a, _, _)| &**a).collect();
            // A node that serves no slot any more is dropped, and the connections to it
            // that are checked out now are stale: nothing more is sent on them.
            self.nodes.write().retain(|addr, node| {
                let serving = live.contains(&addr.as_str());
                if !serving {
                    node.retire();
                }
                serving
            });
            log::trace!("cluster slot map from {server}: primaries {live:?}");
            *self.slots.write() = Arc::new(map);
            return Ok(());
        }
        Err(last_error.unwrap_or_else(|| Error::invalid("nodes", "no node given")))
    }
}

fn not_a_cluster(server: &str, source: redis::RedisError) -> Error {
    if source
        .detail()
        .is_some_and(|d| d.contains("cluster support disabled"))
    {
        return Error::invalid(
            "nodes",
            format!(
                "redis at {server} is not in cluster mode; use `Pool::new` for a single server"
            ),
        );
    }
    Error::Redis {
        server: server.to_owned(),
        source,
    }
}

/// `host:port` (the host may hold colons, as IPv6 addresses do).
fn split_addr(addr: &str) -> (&str, u16) {
    match addr.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_start_matches('[').trim_end_matches(']'),
            port.parse().unwrap_or(0),
        ),
        None => (addr, 0),
    }
}

/// Reads a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, ..], replicas..], ..]`.
/// An empty host means the node that was asked.
fn parse_slots(reply: &Value, asked: &ConnectionInfo, server: &str) -> Result<SlotMap> {
    let bad = || Error::Protocol {
        what: "CLUSTER SLOTS",
    };
    let asked_host = match asked.addr() {
        redis::ConnectionAddr::Tcp(host, _) | redis::ConnectionAddr::TcpTls { host, .. } => {
            host.clone()
        }
        _ => String::new(),
    };
    let Value::Array(ranges) = reply else {
        return Err(bad());
    };
    let mut map = SlotMap::default();
    for range in ranges {
        let Value::Array(parts) = range else {
            return Err(bad());
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            return Err(bad());
        };
        let (Some(host), Some(Value::Int(port))) = (primary.first(), primary.get(1)) else {
            return Err(bad());
        };
        let host = match host {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            _ => return Err(bad()),
        };
        if host == "?" {
            continue; // an endpoint the node does not know
        }
        let host = if host.is_empty() {
            asked_host.clone()
        } else {
            host
        };
        let port = u16::try_from(*port).map_err(|_| bad())?;
        let addr: Arc<str> = format!("{host}:{port}").into();
        if !map.primaries.iter().any(|(a, _, _)| *a == addr) {
            map.primaries.push((addr.clone(), host, port));
        }
        for slot in *start..=*end {
            let slot = u16::try_from(slot)
                .ok()
                .and_then(Slot::new)
                .ok_or_else(bad)?;
            map.owners.insert(slot, addr.clone());
        }
    }
    if map.primaries.is_empty() {
        return Err(Error::Redis {
            server: server.to_owned(),
            source: redis::RedisError::from((
                redis::ErrorKind::Server(ServerErrorKind::ClusterDown),
                "the cluster serves no slot yet",
            )),
        });
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::tests::server_error;
    use redis::IntoConnectionInfo;

    #[test]
    fn redirections_are_read_from_the_servers_errors() {
        assert_eq!(
            redirect_of(&server_error("MOVED 3999 127.0.0.1:6381")),
            Some(Redirect::Moved {
                slot: 3999,
                addr: "127.0.0.1:6381".into()
            })
        );
        assert_eq!(
            redirect_of(&server_error("ASK 3999 127.0.0.1:6382")),
            Some(Redirect::Ask {
                addr: "127.0.0.1:6382".into()
            })
        );
        for later in ["TRYAGAIN x", "CLUSTERDOWN x", "LOADING x"] {
            assert_eq!(redirect_of(&server_error(later)), Some(Redirect::Later));
        }
        for demoted in ["READONLY x", "MASTERDOWN x"] {
            assert_eq!(redirect_of(&server_error(demoted)), Some(Redirect::Demoted));
        }
        assert_eq!(
            redirect_of(&server_error("UNBLOCKED force unblock")),
            Some(Redirect::Demoted)
        );
        assert_eq!(redirect_of(&server_error("ERR x")), None);
        let timeout: redis::RedisError =
            std::io::Error::new(std::io::ErrorKind::TimedOut, "t").into();
        assert_eq!(redirect_of(&timeout), None);
    }

    #[test]
    fn addresses_split_at_the_last_colon() {
        assert_eq!(split_addr("127.0.0.1:7000"), ("127.0.0.1", 7000));
        assert_eq!(split_addr("::1:7000"), ("::1", 7000));
        assert_eq!(split_addr("[::1]:7000"), ("::1", 7000));
    }

    #[test]
    fn the_slot_map_covers_each_range_with_its_primary() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(8191),
                node("10.0.0.1", 7000),
                node("10.0.0.2", 7001),
            ]),
            Value::Array(vec![Value::Int(8192), Value::Int(16383), node("", 7002)]),
        ]);
        let asked = "redis://10.0.0.9:7002".into_connection_info().unwrap();
        let map = parse_slots(&reply, &asked, "10.0.0.9:7002").unwrap();
        assert_eq!(map.primaries.len(), 2);
        assert_eq!(map.owners.len(), 16384);
        assert_eq!(&*map.owners[&Slot::new(0).unwrap()], "10.0.0.1:7000");
        assert_eq!(&*map.owners[&Slot::new(16383).unwrap()], "10.0.0.9:7002");
        // RESP3 servers may send the host as a simple string.
        let simple = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(16383),
            Value::Array(vec![
                Value::SimpleString("10.0.0.3".into()),
                Value::Int(7003),
            ]),
        ])]);
        let map = parse_slots(&simple, &asked, "10.0.0.9:7002").unwrap();
        assert_eq!(&*map.owners[&Slot::new(42).unwrap()], "10.0.0.3:7003");
        assert!(parse_slots(&Value::Int(1), &asked, "x").is_err());
        assert!(parse_slots(&Value::Array(vec![]), &asked, "x").is_err());
    }
}
