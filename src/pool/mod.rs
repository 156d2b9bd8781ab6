//! [`Pool`] and [`PoolBuilder`]: how this crate's connections are made, to one server, to the
//! primary that Sentinel names, or to the primaries of a Redis Cluster.
//!
//! Every connection is made within the connect timeout and gets its read and write timeouts
//! before its first byte is sent, so no call can wait on a stalled server longer than the
//! response timeout; the pools never send an unbounded `PING` on checkout. `manager` makes
//! one connection, `health` remembers whether the last attempt failed, `cluster` keeps the
//! slot map. Checking out and routing a command is the job of `conn`, one layer up.

mod blocking;
mod builder;
mod checkout;
mod cluster;
mod health;
mod link;
mod manager;
mod sentinel;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

#[cfg(test)]
pub(crate) use blocking::three_in_line;
pub(crate) use blocking::{Blocking, Turn};
pub(crate) use checkout::Pooled;
pub(crate) use cluster::{Cluster, Redirect, redirect_of};
pub(crate) use health::Health;
pub(crate) use link::{Link, LinkState};
pub(crate) use manager::Manager;
use manager::Target;
use sentinel::Primary;

pub use builder::PoolBuilder;

use crate::error::{Error, Result};

/// The smallest timeout a socket accepts (zero means "none" to the OS and is refused).
pub(crate) const MIN_TIMEOUT: Duration = Duration::from_millis(1);

const DEFAULT_MAX_SIZE: u32 = 16;
const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long r2d2's own workers wait between two attempts to connect to a server that failed:
/// r2d2 backs off up to half its configured wait, which is otherwise unused here (every
/// checkout passes its own).
const R2D2_RETRY_CAP: Duration = Duration::from_secs(1);

static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

/// The connections every lock of this crate runs on: blocking `redis` connections, pooled by
/// `r2d2`, to one server ([`Pool::new`]), to the primary that Sentinel names
/// ([`Pool::sentinel`]) or to a Redis Cluster ([`Pool::cluster`]).
///
/// Cheap to clone: clones share the connections. Every connection is made within the
/// [connect timeout](PoolBuilder::connect_timeout) and bounds every reply by the
/// [response timeout](PoolBuilder::response_timeout) from its first byte, so a stalled
/// server cannot hang a call; a server that cannot be reached is reported by the call that
/// needs it, naming the server, without waiting out the pool's
/// [connection timeout](PoolBuilder::connection_timeout).
///
/// # Examples
///
/// ```no_run
/// use redis_mutex::{Pool, RedisMutex};
///
/// let pool = Pool::new("redis://127.0.0.1:6379/")?;
/// let mutex = RedisMutex::new(pool.clone(), "nightly-report")?;
/// # Ok::<(), redis_mutex::Error>(())
/// ```
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    config: Config,
    topology: Topology,
}

/// The settings every connection of a pool is made with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) max_size: u32,
    min_idle: u32,
    pub(crate) connection_timeout: Duration,
    response_timeout: Duration,
    pub(crate) connect_timeout: Duration,
}

enum Topology {
    /// One server, or the primary behind Sentinel.
    Single(Arc<Node>),
    /// A Redis Cluster: one node per primary, found through the slot map.
    Cluster(Cluster),
}

/// The connections to one server.
pub(crate) struct Node {
    pool: NodePool,
    health: Arc<Health>,
    /// How the pool makes a connection, to make one at once when the last attempt failed
    /// (none for a foreign pool).
    manager: Option<Manager>,
    /// The turns to wait in `BLPOP` on this server's connections.
    pub(crate) blocking: Arc<Blocking>,
    /// Behind Sentinel: the server the sentinels name as primary now. A connection to any
    /// other is stale.
    primary: Option<Arc<Primary>>,
    /// On a cluster: the node was dropped from the slot map (it serves no slot any more).
    retired: AtomicBool,
    /// When a connection was last made on a caller's thread because the pool's last
    /// attempt had failed: for a while after, the pool's own attempts may still be a
    /// backoff away (see `Node::get`).
    detached_at: parking_lot::Mutex<Option<std::time::Instant>>,
}

/// An r2d2 pool of this crate's, or one given to [`Pool::try_from`].
enum NodePool {
    Own(r2d2::Pool<Manager>),
    Foreign(r2d2::Pool<redis::Client>),
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Pool");
        match &self.inner.topology {
            Topology::Single(node) => s.field("server", &node.server()),
            Topology::Cluster(cluster) => s.field("cluster", cluster),
        };
        s.field("max_size", &self.inner.config.max_size)
            .field("connection_timeout", &self.inner.config.connection_timeout)
            .field("response_timeout", &self.inner.config.response_timeout)
            .field("connect_timeout", &self.inner.config.connect_timeout)
            .finish()
    }
}

impl Node {
    /// The server, as errors name it.
    fn server(&self) -> &str {
        self.health.server()
    }

    fn new(target: Target, server: String, config: &Config) -> Arc<Node> {
        let primary = match &target {
            Target::Sentinel(sentinel) => Some(sentinel::follow(
                sentinel,
                config.connect_timeout,
                config.response_timeout,
            )),
            Target::Direct(_) | Target::ClusterNode(_) => None,
        };
        let health = Arc::new(Health::new(server));
        let manager = Manager {
            target,
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            health: health.clone(),
            primary: primary.clone(),
            room: Some(link::Room::new(config.max_size)),
        };
        let spare = manager.clone_settings();
        let pool = r2d2::Pool::builder()
            .max_size(config.max_size)
            .min_idle(Some(config.min_idle))
            .test_on_check_out(false)
            .connection_timeout(R2D2_RETRY_CAP * 2)
            // Failures are logged once per change of state by `Health`.
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager);
        Arc::new(Node {
            pool: NodePool::Own(pool),
            health,
            manager: Some(spare),
            blocking: Blocking::new(config.max_size),
            primary,
            retired: AtomicBool::new(false),
            detached_at: parking_lot::Mutex::new(None),
        })
    }

    /// Whether a connection to `server` is stale: behind Sentinel, to a server that is no
    /// longer the primary; on a cluster, to a node that serves no slot any more.
    pub(crate) fn is_stale(&self, server: &str) -> bool {
        self.retired.load(Ordering::Relaxed) || self.primary.as_ref().is_some_and(|p| !p.is(server))
    }

    /// The node serves no slot any more: its connections are stale.
    fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// A request to this server failed: behind Sentinel, ask the sentinels again (a
    /// failover may be under way).
    pub(crate) fn doubt(&self) {
        if let Some(primary) = &self.primary {
            primary.doubt();
        }
    }
}

impl Pool {
    /// A pool of connections to the server at `url`, with the default settings (see
    /// [`PoolBuilder`]); connects once to check that the server can be reached.
    ///
    /// `url` is `redis://[user:password@]host[:port][/db]`, `rediss://…` for TLS (with the
    /// `tls-rustls` feature), or `unix:///path/to/socket`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for a URL that cannot be parsed, and when what is at the
    /// address cannot hold the locks (a Sentinel, a node of a cluster, something that does
    /// not speak Redis), has no such database, or has no password and was given one;
    /// [`Error::Unreachable`] when nothing answers at the address within the connect
    /// timeout (2 s), or TLS fails; [`Error::AuthFailed`] when the server refuses the
    /// credentials.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::Pool;
    ///
    /// let pool = Pool::new("redis://127.0.0.1:6379/")?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn new(url: &str) -> Result<Pool> {
        Pool::builder().build(url)
    }

    /// A pool of connections to a Redis Cluster, found from any of its `nodes`, with the
    /// default settings. See [`PoolBuilder::build_cluster`].
    ///
    /// # Errors
    ///
    /// As for [`PoolBuilder::build_cluster`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::Pool;
    ///
    /// let pool = Pool::cluster(&["redis://10.0.0.1:7000/", "redis://10.0.0.2:7000/"])?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn cluster(nodes: &[&str]) -> Result<Pool> {
        Pool::builder().build_cluster(nodes)
    }

    /// A pool of connections to the primary that Sentinel names `service`, with the default
    /// settings. See [`PoolBuilder::build_sentinel`].
    ///
    /// # Errors
    ///
    /// As for [`PoolBuilder::build_sentinel`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::Pool;
    ///
    /// let sentinels = ["redis://10.0.0.1:26379/", "redis://10.0.0.2:26379/"];
    /// let pool = Pool::sentinel(&sentinels, "mymaster")?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn sentinel(sentinels: &[&str], service: &str) -> Result<Pool> {
        Pool::builder().build_sentinel(sentinels, service)
    }

    /// A builder to set how connections are made before building a pool.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::Pool;
    ///
    /// let pool = Pool::builder()
    ///     .max_size(32)
    ///     .response_timeout(Duration::from_millis(500))
    ///     .build("redis://127.0.0.1:6379/")?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// How many connections the pool keeps at most to each server (to each primary, on a
    /// cluster): the locks' and those lent by [`connection`](Pool::connection) together.
    /// Set with [`PoolBuilder::max_size`]; for a pool given to [`Pool::try_from`], that
    /// pool's.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::Pool;
    ///
    /// let pool = Pool::builder().max_size(32).build("redis://127.0.0.1:6379/")?;
    /// assert_eq!(pool.max_size(), 32);
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn max_size(&self) -> u32 {
        self.inner.config.max_size
    }

    /// The longest wait for any one reply, for every connection of the pool.
    pub fn response_timeout(&self) -> Duration {
        self.inner.config.response_timeout
    }

    /// The longest wait for a free connection.
    pub fn connection_timeout(&self) -> Duration {
        self.inner.config.connection_timeout
    }

    /// Whether this is a Redis Cluster pool (keys then carry hash tags).
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.topology, Topology::Cluster(_))
    }

    /// Identifies the pool: clones share it.
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The cluster behind the pool, if it is one.
    pub(crate) fn as_cluster(&self) -> Option<&Cluster> {
        match &self.inner.topology {
            Topology::Cluster(cluster) => Some(cluster),
            Topology::Single(_) => None,
        }
    }

    /// The one server of a pool that is not a cluster.
    pub(crate) fn single(&self) -> Option<&Arc<Node>> {
        match &self.inner.topology {
            Topology::Single(node) => Some(node),
            Topology::Cluster(_) => None,
        }
    }

    /// Whether a failover (or a slot migration) has moved `route` away from `server`, the
    /// server a grant was made on, as far as the pool knows without asking.
    pub(crate) fn moved(&self, route: &str, server: &str) -> bool {
        match &self.inner.topology {
            Topology::Cluster(cluster) => cluster
                .owner_of(route)
                .is_some_and(|owner| &*owner != server),
            Topology::Single(node) => node.is_stale(server),
        }
    }

    /// Every primary (a pool's one server, or each primary of a cluster), for walking the
    /// whole keyspace.
    pub(crate) fn primaries(&self) -> Result<Vec<Arc<Node>>> {
        match &self.inner.topology {
            Topology::Single(node) => Ok(vec![node.clone()]),
            Topology::Cluster(cluster) => cluster.primaries(),
        }
    }

    fn with_topology(config: Config, topology: Topology) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
                config,
                topology,
            }),
        }
    }
}

impl TryFrom<r2d2::Pool<redis::Client>> for Pool {
    type Error = Error;

    /// Takes an r2d2 pool that you built yourself. Its connections get their read and write
    /// timeouts (the default response timeout, 2 s) when checked out; connecting is r2d2's
    /// business.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for a pool that tests connections on checkout (r2d2's
    /// default): that `PING` runs before this crate can set a timeout, and on a stalled
    /// server it waits forever. Build it with `.test_on_check_out(false)`, or better, use
    /// [`Pool::builder`]. The same for a pool of one connection: a waiter blocks on one
    /// while a holder releases on another (see [`PoolBuilder::max_size`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::Pool;
    ///
    /// let client = redis::Client::open("redis://127.0.0.1/")?;
    /// let theirs = r2d2::Pool::builder().test_on_check_out(false).build(client)?;
    /// let pool = Pool::try_from(theirs)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn try_from(pool: r2d2::Pool<redis::Client>) -> Result<Pool> {
        if pool.test_on_check_out() {
            return Err(Error::invalid(
                "pool",
                "the r2d2 pool tests connections on checkout with a PING that has no timeout \
                 and hangs on a stalled server; build it with `.test_on_check_out(false)`, or \
                 use `Pool::builder()`",
            ));
        }
        if pool.max_size() < MIN_MAX_SIZE {
            return Err(Error::invalid("pool", too_small(pool.max_size())));
        }
        let config = Config {
            max_size: pool.max_size(),
            min_idle: pool.min_idle().unwrap_or(0),
            connection_timeout: pool.connection_timeout(),
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        };
        let node = Arc::new(Node {
            pool: NodePool::Foreign(pool),
            health: Arc::new(Health::new("the server of an r2d2 pool".to_owned())),
            manager: None,
            blocking: Blocking::new(config.max_size),
            primary: None,
            retired: AtomicBool::new(false),
            detached_at: parking_lot::Mutex::new(None),
        });
        Ok(Pool::with_topology(config, Topology::Single(node)))
    }
}

/// The fewest connections a pool may have: one to wait on, one to release on.
const MIN_MAX_SIZE: u32 = 2;

fn too_small(max_size: u32) -> String {
    format!(
        "{max_size} connection(s) is too few: a waiter blocks in BLPOP on one while a holder \
         releases on another; give 2 or more"
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A pool that never connects, for tests that stop at validation.
    pub(crate) fn unconnected() -> Pool {
        let client = redis::Client::open("redis://127.0.0.1:1/").unwrap();
        let r2d2 = r2d2::Pool::builder()
            .max_size(2)
            .min_idle(Some(0))
            .test_on_check_out(false)
            .build_unchecked(client);
        Pool::try_from(r2d2).unwrap()
    }

    fn field(result: Result<Pool>) -> &'static str {
        match result {
            Err(Error::InvalidOptions { field, .. }) => field,
            Err(e) => panic!("expected InvalidOptions, got {e}"),
            Ok(p) => panic!("expected InvalidOptions, got {p:?}"),
        }
    }

    #[test]
    fn bad_settings_are_refused_before_connecting() {
        let url = "redis://127.0.0.1:1/";
        assert_eq!(field(Pool::builder().max_size(0).build(url)), "max_size");
        assert_eq!(field(Pool::builder().max_size(1).build(url)), "max_size");
        assert_eq!(
            field(Pool::builder().max_size(2).min_idle(3).build(url)),
            "min_idle"
        );
        assert_eq!(
            field(Pool::builder().response_timeout(Duration::ZERO).build(url)),
            "response_timeout"
        );
        assert_eq!(
            field(Pool::builder().connect_timeout(Duration::MAX).build(url)),
            "connect_timeout"
        );
        assert_eq!(
            field(
                Pool::builder()
                    .connection_timeout(Duration::ZERO)
                    .build(url)
            ),
            "connection_timeout"
        );
        assert_eq!(field(Pool::new("http://x")), "url");
        assert_eq!(field(Pool::cluster(&[])), "nodes");
        assert_eq!(field(Pool::cluster(&["nonsense"])), "nodes");
        assert_eq!(field(Pool::sentinel(&[], "m")), "sentinels");
        assert_eq!(field(Pool::sentinel(&[url], "")), "service");
    }

    #[test]
    fn a_foreign_pool_that_pings_on_checkout_is_refused() {
        let client = redis::Client::open("redis://127.0.0.1:1/").unwrap();
        let pinging = r2d2::Pool::builder()
            .min_idle(Some(0))
            .build_unchecked(client.clone());
        match Pool::try_from(pinging) {
            Err(Error::InvalidOptions {
                field: "pool",
                reason,
            }) => {
                assert!(reason.contains("test_on_check_out(false)"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let quiet = r2d2::Pool::builder()
            .max_size(2)
            .min_idle(Some(0))
            .test_on_check_out(false)
            .build_unchecked(client.clone());
        assert!(!Pool::try_from(quiet).unwrap().is_cluster());
        let one = r2d2::Pool::builder()
            .max_size(1)
            .min_idle(Some(0))
            .test_on_check_out(false)
            .build_unchecked(client);
        assert!(matches!(
            Pool::try_from(one),
            Err(Error::InvalidOptions { field: "pool", .. })
        ));
    }
}
