//! [`Pool`] and [`PoolBuilder`]: how this crate's connections are made, to one server, to the
//! primary that Sentinel names, or to the primaries of a Redis Cluster.
//!
//! Every connection is made within the connect timeout and gets its read and write timeouts
//! before its first byte is sent, so no call can wait on a stalled server longer than the
//! response timeout; the pools never send an unbounded `PING` on checkout. `manager` makes
//! one connection, `health` remembers whether the last attempt failed, `cluster` keeps the
//! slot map. Checking out and routing a command is the job of `conn`, one layer up.

mod blocking;
mod cluster;
mod health;
mod manager;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::{ConnectionInfo, IntoConnectionInfo};

pub(crate) use blocking::{Blocking, Turn};
pub(crate) use cluster::{Cluster, Redirect, redirect_of};
pub(crate) use health::Health;
pub(crate) use manager::{Link, LinkState, Manager};
use manager::{SentinelTarget, Target};

use crate::{Error, Result};

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
    pub(crate) min_idle: u32,
    pub(crate) connection_timeout: Duration,
    pub(crate) response_timeout: Duration,
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
    pub(crate) pool: NodePool,
    pub(crate) health: Arc<Health>,
    /// How the pool makes a connection, to make one at once when the last attempt failed
    /// (none for a foreign pool).
    pub(crate) manager: Option<Manager>,
    /// The turns to wait in `BLPOP` on this server's connections.
    pub(crate) blocking: Arc<Blocking>,
}

/// An r2d2 pool of this crate's, or one given to [`Pool::try_from`].
pub(crate) enum NodePool {
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
    pub(crate) fn server(&self) -> &str {
        self.health.server()
    }

    fn new(target: Target, server: String, config: &Config) -> Arc<Node> {
        let health = Arc::new(Health::new(server));
        let manager = Manager {
            target,
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            health: health.clone(),
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
        })
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
    /// [`Error::InvalidOptions`] for a URL that cannot be parsed; [`Error::Unreachable`]
    /// when nothing answers at the address within the connect timeout (2 s), or TLS fails;
    /// [`Error::AuthFailed`] when the server refuses the credentials.
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
        });
        Ok(Pool::with_topology(config, Topology::Single(node)))
    }
}

/// Builds a [`Pool`]; made by [`Pool::builder`]. Every setting has a default.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until built"]
pub struct PoolBuilder {
    config: Config,
    username: Option<String>,
    password: Option<String>,
    lazy: bool,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            config: Config {
                max_size: DEFAULT_MAX_SIZE,
                min_idle: 1,
                connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
                response_timeout: DEFAULT_RESPONSE_TIMEOUT,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            },
            username: None,
            password: None,
            lazy: false,
        }
    }
}

impl PoolBuilder {
    /// Sets the most connections the pool keeps open to one server (per primary of a
    /// cluster).
    ///
    /// Waiting takes one connection per lock name and process, however many threads and
    /// lock objects wait for it: the others wait in the process. A connection that waits in
    /// `BLPOP` is busy until the wait ends, and all but one connection may wait at once, so
    /// that a holder can always release; when more names are waited on at once than that,
    /// their waiters take turns (each wait in Redis lasts at most a second). Give a pool at
    /// least one more connection than names waited on at once.
    ///
    /// Must be at least 2.
    ///
    /// Defaults to 16.
    pub fn max_size(mut self, max_size: u32) -> Self {
        self.config.max_size = max_size;
        self
    }

    /// Sets how many idle connections the pool keeps open, making them in the background.
    ///
    /// Must be at most [`max_size`](Self::max_size).
    ///
    /// Defaults to 1.
    pub fn min_idle(mut self, min_idle: u32) -> Self {
        self.config.min_idle = min_idle;
        self
    }

    /// Sets the longest wait for a free connection when every connection is in use. A
    /// server that cannot be reached is reported at once, not after this.
    ///
    /// Must be between 1 ms and 10 years.
    ///
    /// Defaults to 5 s.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.config.connection_timeout = timeout;
        self
    }

    /// Sets the longest wait for any one reply: a call on a stalled server fails with
    /// [`Error::Timeout`] after this. A waiter's `BLPOP` waits longer, as long as its wait.
    /// Locks may set a shorter or longer one of their own.
    ///
    /// Must be between 1 ms and 10 years.
    ///
    /// Defaults to 2 s.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.config.response_timeout = timeout;
        self
    }

    /// Sets the longest a new connection may take, TCP, TLS and the handshake together.
    ///
    /// Must be between 1 ms and 10 years.
    ///
    /// Defaults to 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Sets the user name to log in with (Redis 6 ACLs), over what a URL says. With
    /// Sentinel it applies to the primary, not to the sentinels.
    ///
    /// Defaults to the URL's (for a cluster, the first node's; with Sentinel, the first
    /// sentinel's), or none.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Sets the password to log in with, over what a URL says. With Sentinel it applies to
    /// the primary, not to the sentinels.
    ///
    /// Defaults to the URL's (for a cluster, the first node's; with Sentinel, the first
    /// sentinel's), or none.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Builds the pool without connecting: for a service that may start before its Redis
    /// does. The first call that needs a connection makes one (and reports the server if
    /// it cannot be reached); a cluster's slot map is asked for then too.
    ///
    /// Defaults to `false`: building connects once, and fails naming the server when it
    /// cannot be reached.
    pub fn connect_lazy(mut self, lazy: bool) -> Self {
        self.lazy = lazy;
        self
    }

    /// Builds a pool of connections to the server at `url`, after connecting once to check
    /// that it can be reached (unless [lazy](Self::connect_lazy)).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for a setting out of range or a URL that cannot be parsed;
    /// [`Error::Unreachable`] when nothing answers at the address within the connect
    /// timeout, or TLS fails; [`Error::AuthFailed`] when the server refuses the
    /// credentials.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::Pool;
    ///
    /// let pool = Pool::builder().max_size(4).build("redis://127.0.0.1:6379/")?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn build(self, url: &str) -> Result<Pool> {
        let info = parse_url("url", url)?;
        self.build_with_info(info)
    }

    /// Builds a pool on a `redis::Client` made your way: for TLS with certificates of your
    /// own (`redis::Client::build_with_tls`), or settings a URL cannot say.
    ///
    /// # Errors
    ///
    /// As for [`build`](Self::build).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::Pool;
    ///
    /// let client = redis::Client::open("redis://127.0.0.1:6379/")?;
    /// let pool = Pool::builder().build_with_client(client)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build_with_client(self, client: redis::Client) -> Result<Pool> {
        self.build_with_info(client.get_connection_info().clone())
    }

    fn build_with_info(self, info: ConnectionInfo) -> Result<Pool> {
        self.check()?;
        let info = self.credentials(info);
        let server = manager::server_name(&info);
        if !self.lazy {
            // Fails fast, naming the server, instead of letting the first lock wait it out.
            manager::connect(
                &info,
                self.config.connect_timeout,
                self.config.response_timeout,
            )
            .map_err(|f| f.to_error(&server))?;
        }
        let node = Node::new(Target::Direct(info), server, &self.config);
        Ok(Pool::with_topology(self.config, Topology::Single(node)))
    }

    /// Builds a pool of connections to the primaries of a Redis Cluster, found from any of
    /// its `nodes` (`redis://host:port`; one is enough, more are tried in turn when one is
    /// down). The credentials and TLS mode of the first apply to every node.
    ///
    /// Commands go to the primary of their key's slot, on connections this crate controls:
    /// `MOVED` and `ASK` are followed, and no command whose reply was lost is ever sent
    /// again. Keys carry hash tags, so that the keys of one lock share a slot; see
    /// `docs/deployments.md`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for a setting out of range, an empty list, a URL that
    /// cannot be parsed, or a server that is not in cluster mode; [`Error::Unreachable`] or
    /// [`Error::AuthFailed`] when no node could be asked for the slot map.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::Pool;
    ///
    /// let pool = Pool::builder().max_size(8).build_cluster(&["redis://10.0.0.1:7000/"])?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn build_cluster(self, nodes: &[&str]) -> Result<Pool> {
        self.check()?;
        if nodes.is_empty() {
            return Err(Error::invalid(
                "nodes",
                "the node list is empty; give the URL of at least one node of the cluster",
            ));
        }
        let seeds = nodes
            .iter()
            .map(|url| parse_url("nodes", url).map(|info| self.credentials(info)))
            .collect::<Result<Vec<_>>>()?;
        let cluster = Cluster::connect(seeds, self.config, self.lazy)?;
        Ok(Pool::with_topology(self.config, Topology::Cluster(cluster)))
    }

    /// Builds a pool of connections to the primary that Sentinel names `service`, asked of
    /// the `sentinels` (`redis://host:26379`) in turn. Every new connection asks again, so
    /// after a failover the pool finds the new primary by itself: calls fail (within their
    /// bounds) while it is under way, then succeed without a new pool.
    ///
    /// The primary is connected to with the credentials and TLS mode of the first sentinel
    /// URL, unless [`username`](Self::username) or [`password`](Self::password) say
    /// otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for a setting out of range, an empty list or a URL that
    /// cannot be parsed; [`Error::Unreachable`] when no sentinel could be reached, none
    /// knows `service`, or its primary could not be reached; [`Error::AuthFailed`] when the
    /// primary refuses the credentials.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::Pool;
    ///
    /// let pool = Pool::builder()
    ///     .password("secret")
    ///     .build_sentinel(&["redis://10.0.0.1:26379/"], "mymaster")?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn build_sentinel(self, sentinels: &[&str], service: &str) -> Result<Pool> {
        self.check()?;
        if sentinels.is_empty() {
            return Err(Error::invalid(
                "sentinels",
                "the sentinel list is empty; give the URL of at least one sentinel",
            ));
        }
        if service.is_empty() {
            return Err(Error::invalid(
                "service",
                "the service name is empty; give the name sentinel monitors the primary under",
            ));
        }
        let sentinels = sentinels
            .iter()
            .map(|url| parse_url("sentinels", url))
            .collect::<Result<Vec<_>>>()?;
        let node = self.credentials(sentinels[0].clone());
        let names: Vec<String> = sentinels.iter().map(manager::server_name).collect();
        let server = format!("primary `{service}` (via sentinel {})", names.join(", "));
        let target = Target::Sentinel(SentinelTarget {
            // The sentinels themselves take no database number.
            sentinels: sentinels
                .into_iter()
                .map(|info| {
                    let settings = info.redis_settings().clone().set_db(0);
                    info.set_redis_settings(settings)
                })
                .collect(),
            service: service.to_owned(),
            node,
        });
        let manager = Manager {
            target: target.clone(),
            connect_timeout: self.config.connect_timeout,
            response_timeout: self.config.response_timeout,
            health: Arc::new(Health::new(server.clone())),
        };
        if !self.lazy {
            r2d2::ManageConnection::connect(&manager)?;
        }
        let node = Node::new(target, server, &self.config);
        Ok(Pool::with_topology(self.config, Topology::Single(node)))
    }

    fn check(&self) -> Result<()> {
        let c = &self.config;
        if c.max_size < MIN_MAX_SIZE {
            return Err(Error::invalid("max_size", too_small(c.max_size)));
        }
        if c.min_idle > c.max_size {
            return Err(Error::invalid(
                "min_idle",
                format!("{} is more than max_size ({})", c.min_idle, c.max_size),
            ));
        }
        for (field, d) in [
            ("connection_timeout", c.connection_timeout),
            ("response_timeout", c.response_timeout),
            ("connect_timeout", c.connect_timeout),
        ] {
            crate::duration::check_duration(field, d)?;
        }
        Ok(())
    }

    /// `info` with this builder's user name and password, if set.
    fn credentials(&self, info: ConnectionInfo) -> ConnectionInfo {
        let mut settings = info.redis_settings().clone();
        if let Some(username) = &self.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        info.set_redis_settings(settings)
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

fn parse_url(field: &'static str, url: &str) -> Result<ConnectionInfo> {
    url.into_connection_info().map_err(|e| {
        Error::invalid(
            field,
            format!(
                "{e} in {url:?}; write it like \"redis://[user:password@]host:port/db\", \
                 \"rediss://…\" for TLS or \"unix:///path/to/socket\""
            ),
        )
    })
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

    #[test]
    fn credentials_override_the_urls() {
        let builder = Pool::builder().username("u").password("p");
        let info = builder.credentials(parse_url("url", "redis://a:b@h:1/2").unwrap());
        assert_eq!(info.redis_settings().username(), Some("u"));
        assert_eq!(info.redis_settings().password(), Some("p"));
        assert_eq!(info.redis_settings().db(), 2);
        assert_eq!(manager::server_name(&info), "h:1");
    }
}
