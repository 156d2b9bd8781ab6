//! A connection in use: checked out for a key (on a cluster, from the primary serving the
//! key's slot), with replies bounded by a timeout, the routing of a command through
//! redirections, and the errors a call ends in, each naming its server.
//!
//! Nothing here sends a command twice unless the server said it did not run it (`MOVED`,
//! `ASK`, `TRYAGAIN`, `READONLY`, ...): a command whose reply was lost is the caller's to
//! undo, on the same connection (see [`undo_after_lost_reply`]).

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use r2d2::PooledConnection;

use crate::pool::{Link, LinkState, MIN_TIMEOUT, Manager, Node, NodePool, Redirect, redirect_of};
use crate::{Error, Pool, Result};

/// Where a command goes: the primary serving a key's slot (on a pool that is not a cluster,
/// its one server).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Route<'a> {
    Key(&'a str),
}

/// How many redirections or refusals one command follows before giving up.
const MAX_REDIRECTS: u32 = 16;

/// The first pause after a refusal that may pass (`TRYAGAIN`, `LOADING`, ...); doubled on
/// each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);

/// A connection checked out of a pool, returned to it when dropped.
pub(crate) struct Conn {
    link: Pooled,
    node: Arc<Node>,
    /// It was used before it went back to the pool (not made for this checkout): the server
    /// or the network may have closed it meanwhile.
    reused: bool,
}

enum Pooled {
    Own(PooledConnection<Manager>),
    /// A connection made on the caller's thread while the pool's last attempt had failed,
    /// closed when dropped.
    Detached(Link),
    /// A connection of a pool given to [`Pool::try_from`]; what we know of its socket lives
    /// in its r2d2 extensions between checkouts.
    Foreign {
        conn: PooledConnection<redis::Client>,
        state: LinkState,
    },
}

impl Conn {
    fn parts(&mut self) -> (&mut redis::Connection, &mut LinkState) {
        match &mut self.link {
            Pooled::Own(pooled) => {
                let Link { conn, state, .. } = &mut **pooled;
                (conn, state)
            }
            Pooled::Detached(Link { conn, state, .. }) => (conn, state),
            Pooled::Foreign { conn, state } => (&mut **conn, state),
        }
    }

    fn connection(&self) -> &redis::Connection {
        match &self.link {
            Pooled::Own(pooled) => &pooled.conn,
            Pooled::Detached(link) => &link.conn,
            Pooled::Foreign { conn, .. } => conn,
        }
    }

    /// The server this connection is to, as errors name it.
    pub(crate) fn server(&self) -> &str {
        match &self.link {
            Pooled::Own(pooled) => &pooled.server,
            Pooled::Detached(link) => &link.server,
            Pooled::Foreign { .. } => self.node.server(),
        }
    }

    /// The node (server) the connection belongs to.
    pub(crate) fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The read timeout now in force.
    pub(crate) fn read_timeout(&mut self) -> Duration {
        self.parts().1.read_timeout.unwrap_or(Duration::ZERO)
    }

    /// Bounds the next reads and writes by `timeout` (at least 1 ms).
    pub(crate) fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.set_read_timeout(timeout)?;
        self.set_socket_timeout(
            timeout,
            |state| &mut state.write_timeout,
            |conn, t| conn.set_write_timeout(t),
        )
    }

    /// Bounds the next reads by `timeout` (at least 1 ms); writes keep theirs.
    pub(crate) fn set_read_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.set_socket_timeout(
            timeout,
            |state| &mut state.read_timeout,
            |conn, t| conn.set_read_timeout(t),
        )
    }

    /// Sets one of the socket's timeouts with `set`, unless `cached` says it has it
    /// already: a syscall saved on most calls.
    fn set_socket_timeout(
        &mut self,
        timeout: Duration,
        cached: impl FnOnce(&mut LinkState) -> &mut Option<Duration>,
        set: impl FnOnce(&redis::Connection, Option<Duration>) -> redis::RedisResult<()>,
    ) -> Result<()> {
        let timeout = Some(timeout.max(MIN_TIMEOUT));
        let (conn, state) = self.parts();
        let cached = cached(state);
        if *cached != timeout {
            let result = set(conn, timeout);
            *cached = result.is_ok().then_some(timeout).flatten();
            result.map_err(|e| self.fail(e, "", "setting a socket timeout"))?;
        }
        Ok(())
    }

    /// The server-side id of this connection, for `CLIENT UNBLOCK`; asked once.
    pub(crate) fn client_id(&mut self) -> Result<i64> {
        if let Some(id) = self.parts().1.client_id {
            return Ok(id);
        }
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query(self)
            .map_err(|e| self.fail(e, "", "CLIENT ID"))?;
        self.parts().1.client_id = Some(id);
        Ok(id)
    }

    /// Keeps the pool from handing the connection out again: its server is no longer what
    /// it was (demoted, say).
    pub(crate) fn mark_broken(&mut self) {
        self.parts().1.broken = true;
    }

    /// Whether the connection is still open, as far as the client knows.
    pub(crate) fn is_open(&self) -> bool {
        redis::ConnectionLike::is_open(self.connection())
    }

    /// Another idle connection to the same server, if one is free now.
    pub(crate) fn spare(&self, response_timeout: Duration) -> Option<Conn> {
        let mut conn = wrap(try_get(&self.node)?, self.node.clone());
        conn.set_timeout(response_timeout).ok()?;
        Some(conn)
    }

    /// This crate's error for `e`, a failure of `what` on this connection, about the lock
    /// `lock` (for a key of the wrong type).
    ///
    /// A connection whose reply did not come in time is not reused: its next user would
    /// first wait for that late reply, one more response timeout on top of its own. (An
    /// undo owed for the call is sent on it before this.)
    pub(crate) fn fail(&mut self, e: redis::RedisError, lock: &str, what: &'static str) -> Error {
        if reply_pending(&e) {
            self.mark_broken();
        }
        let after = self.read_timeout();
        classify(e, self.server(), after, lock, what)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.parts().1.idle_since = Some(Instant::now());
        if let Pooled::Foreign { conn, state } = &mut self.link {
            PooledConnection::extensions_mut(conn).insert(std::mem::take(state));
        }
    }
}

/// How long a pooled connection may sit idle before it is checked (`PING`) on checkout: a
/// connection the server or the network closed meanwhile fails its first use, and a lock
/// request sent on it would end in doubt for nothing. Connections in steady use skip it.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// A pooled connection, either kind.
enum Checkout {
    Own(PooledConnection<Manager>),
    Foreign(PooledConnection<redis::Client>),
}

fn try_get(node: &Node) -> Option<Checkout> {
    match &node.pool {
        NodePool::Own(pool) => pool.try_get().map(Checkout::Own),
        NodePool::Foreign(pool) => pool.try_get().map(Checkout::Foreign),
    }
}

fn get_timeout(node: &Node, wait: Duration) -> Option<Checkout> {
    match &node.pool {
        NodePool::Own(pool) => pool.get_timeout(wait).ok().map(Checkout::Own),
        NodePool::Foreign(pool) => pool.get_timeout(wait).ok().map(Checkout::Foreign),
    }
}

fn wrap(checkout: Checkout, node: Arc<Node>) -> Conn {
    let link = match checkout {
        Checkout::Own(pooled) => Pooled::Own(pooled),
        Checkout::Foreign(mut conn) => {
            let state = PooledConnection::extensions_mut(&mut conn)
                .remove::<LinkState>()
                .unwrap_or_default();
            Pooled::Foreign { conn, state }
        }
    };
    Conn {
        link,
        node,
        reused: false,
    }
}

/// Checks a connection out of `node`, waiting at most `wait` for a free one, with replies
/// bounded by `response_timeout`. A connection that sat idle for more than [`IDLE_CHECK`]
/// is checked first; one found closed is dropped for another.
///
/// A server whose last connection attempt failed is reported at once (when no connection
/// is idle), and one that fails while we wait is reported within about the connect
/// timeout, rather than after the whole `wait`: r2d2 keeps trying in the background, and
/// the next call gets a connection as soon as one is made.
pub(crate) fn checkout_node(
    node: &Arc<Node>,
    wait: Duration,
    response_timeout: Duration,
    connect_timeout: Duration,
) -> Result<Conn> {
    let started = Instant::now();
    loop {
        let left = wait.saturating_sub(started.elapsed()).max(MIN_TIMEOUT);
        let mut conn = checkout_any(node, left, response_timeout, connect_timeout)?;
        let idle = conn.parts().1.idle_since.take();
        conn.reused = idle.is_some();
        if idle.is_none_or(|since| since.elapsed() < IDLE_CHECK) {
            return Ok(conn);
        }
        match redis::cmd("PING").query::<String>(&mut *conn) {
            Ok(_) => return Ok(conn),
            // A stalled server is not a closed connection: no other will do better.
            Err(e) if reply_pending(&e) || !reply_lost(&e) => {
                return Err(conn.fail(e, "", "PING"));
            }
            Err(e) => {
                log::debug!(
                    "a pooled connection to {} was closed ({e}); taking another",
                    conn.server()
                );
                conn.mark_broken();
            }
        }
    }
}

/// The first and the longest slice of [`get_watching_health`]'s wait.
const HEALTH_SLICES: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(200));

/// Waits up to `wait` for a connection of `node`, in slices that double from 5 ms to
/// 200 ms, and returns the server's failure as soon as a connection attempt (r2d2's, in the
/// background) has failed: r2d2 wakes its waiters for a new connection, not for a failed
/// attempt. `None` when `wait` passed with neither.
fn get_watching_health(node: &Node, wait: Duration) -> Result<Option<Checkout>> {
    let started = Instant::now();
    let mut slice = HEALTH_SLICES.0;
    loop {
        let left = wait.saturating_sub(started.elapsed());
        if let Some(checkout) = get_timeout(node, slice.min(left)) {
            return Ok(Some(checkout));
        }
        if let Some(failure) = node.health.failure() {
            return Err(failure);
        }
        if started.elapsed() >= wait {
            return Ok(None);
        }
        slice = (slice * 2).min(HEALTH_SLICES.1);
    }
}

/// [`checkout_node`] without the idle check.
fn checkout_any(
    node: &Arc<Node>,
    wait: Duration,
    response_timeout: Duration,
    connect_timeout: Duration,
) -> Result<Conn> {
    // An idle connection, at once: the common case.
    if let Some(checkout) = try_get(node) {
        let mut conn = wrap(checkout, node.clone());
        conn.set_timeout(response_timeout)?;
        return Ok(conn);
    }
    let started = Instant::now();
    let checkout = match node.health.failure() {
        Some(failure) => match try_get(node) {
            Some(checkout) => checkout,
            None => {
                // The pool's last attempt failed, and its next one may be a backoff away:
                // try now, on this thread, rather than report a failure that may be stale.
                let Some(manager) = &node.manager else {
                    return Err(failure);
                };
                let link = r2d2::ManageConnection::connect(manager)?;
                let mut conn = Conn {
                    link: Pooled::Detached(link),
                    node: node.clone(),
                    reused: false,
                };
                conn.set_timeout(response_timeout)?;
                return Ok(conn);
            }
        },
        None => {
            // A first share of the wait long enough for one connection attempt to end,
            // watching for it to fail.
            let first = wait.min(connect_timeout + Duration::from_millis(100));
            match get_watching_health(node, first)? {
                Some(checkout) => checkout,
                None => {
                    let left = wait.saturating_sub(started.elapsed());
                    get_timeout(node, left).ok_or_else(|| {
                        node.health.failure().unwrap_or_else(|| Error::PoolTimeout {
                            server: node.server().to_owned(),
                            after: wait,
                        })
                    })?
                }
            }
        }
    };
    let mut conn = wrap(checkout, node.clone());
    conn.set_timeout(response_timeout)?;
    Ok(conn)
}

/// Checks a connection out of `pool` for `route`, waiting at most `wait` for a free one,
/// with replies bounded by `response_timeout`. On a cluster, a primary that cannot be
/// reached makes the slot map be asked for again (a failover may have promoted another).
pub(crate) fn checkout(
    pool: &Pool,
    route: Route<'_>,
    wait: Duration,
    response_timeout: Duration,
) -> Result<Conn> {
    let connect_timeout = pool.config().connect_timeout;
    let Some(cluster) = pool.as_cluster() else {
        let node = pool
            .single()
            .expect("a pool is a cluster or a single server");
        return checkout_node(node, wait, response_timeout, connect_timeout);
    };
    let Route::Key(key) = route;
    let node = cluster.node_for(key)?;
    match checkout_node(&node, wait, response_timeout, connect_timeout) {
        Err(e) if e.is_unreachable() => {
            cluster.refresh().ok();
            let other = cluster.node_for(key)?;
            if Arc::ptr_eq(&other, &node) {
                return Err(e);
            }
            checkout_node(&other, wait, response_timeout, connect_timeout)
        }
        result => result,
    }
}

/// The outcome of [`run`]: the connection the command went on last (to undo it there, if
/// its reply was lost), and the command's own result.
pub(crate) struct Ran<T> {
    pub(crate) conn: Conn,
    pub(crate) result: redis::RedisResult<T>,
}

/// [`run`] for a call that may grant a lock (`what` names it in errors). When its reply is
/// lost, Redis may have run it or may still: `undo` then runs on the same connection
/// before the error is returned, so that no grant is left that nobody holds. Every
/// granting call goes through here.
pub(crate) fn run_grant<T>(
    pool: &Pool,
    route: Route<'_>,
    conn: Conn,
    response_timeout: Duration,
    (name, what): (&str, &'static str),
    op: impl FnMut(&mut Conn) -> redis::RedisResult<T>,
    undo: impl FnOnce(&mut Conn, &redis::RedisError),
) -> Result<(Conn, T)> {
    let mut ran = run(pool, route, Some(conn), response_timeout, op)?;
    match ran.result {
        Ok(reply) => Ok((ran.conn, reply)),
        Err(e) => {
            if reply_lost(&e) {
                undo(&mut ran.conn, &e);
            }
            Err(ran.conn.fail(e, name, what))
        }
    }
}

/// Runs `op` (one command or one script call, on `conn` if given, else on a connection
/// checked out for `route`), following the cluster's redirections and retrying the
/// refusals that say the command did not run, within about `response_timeout`.
///
/// Only a failure to get a connection is an `Err`; the command's own failure is in
/// [`Ran::result`], with the connection, so that the caller can tell a lost reply (see
/// [`reply_lost`]) from an answer, and undo the first on the same connection.
pub(crate) fn run<T>(
    pool: &Pool,
    route: Route<'_>,
    conn: Option<Conn>,
    response_timeout: Duration,
    mut op: impl FnMut(&mut Conn) -> redis::RedisResult<T>,
) -> Result<Ran<T>> {
    let started = Instant::now();
    let wait = pool.config().connection_timeout.min(response_timeout);
    let mut conn = match conn {
        Some(conn) => conn,
        None => checkout(pool, route, wait, response_timeout)?,
    };
    let mut backoff = FIRST_BACKOFF;
    let mut asking = false;
    for _ in 0..MAX_REDIRECTS {
        let result = if asking {
            redis::cmd("ASKING")
                .query::<()>(&mut conn)
                .and_then(|()| op(&mut conn))
        } else {
            op(&mut conn)
        };
        asking = false;
        let redirect = match &result {
            Err(e) => redirect_of(e),
            Ok(_) => None,
        };
        let left = response_timeout.saturating_sub(started.elapsed());
        let Some(redirect) = redirect.filter(|_| !left.is_zero()) else {
            return Ok(Ran { conn, result });
        };
        log::trace!("{} refused a command: {redirect:?}", conn.server());
        let cluster = pool.as_cluster();
        conn = match (redirect, cluster) {
            (Redirect::Moved { slot, addr }, Some(cluster)) => {
                cluster.moved(slot, &addr);
                checkout(pool, route, wait.min(left), response_timeout)?
            }
            (Redirect::Ask { addr }, Some(cluster)) => {
                asking = true;
                let node = cluster.node(&addr);
                checkout_node(
                    &node,
                    wait.min(left),
                    response_timeout,
                    pool.config().connect_timeout,
                )?
            }
            (Redirect::Moved { .. } | Redirect::Ask { .. }, None) => {
                return Err(Error::invalid(
                    "pool",
                    format!(
                        "redis at {} is a cluster node; build the pool with `Pool::cluster`",
                        conn.server()
                    ),
                ));
            }
            (Redirect::Later, _) => {
                drop(conn);
                thread::sleep(backoff.min(left));
                backoff = backoff.saturating_mul(2);
                checkout(pool, route, wait.min(left), response_timeout)?
            }
            (Redirect::Demoted, cluster) => {
                conn.mark_broken();
                drop(conn);
                if let Some(cluster) = cluster {
                    cluster.refresh().ok();
                }
                checkout(pool, route, wait.min(left), response_timeout)?
            }
        };
    }
    let result = op(&mut conn);
    Ok(Ran { conn, result })
}

/// [`run`] on a connection checked out for `route`, for a command that may be sent twice
/// (a compare-and-set, a read): when the pooled connection turns out to have been closed
/// before any reply came (the server or the network dropped it while it sat idle), the
/// command goes once more on another connection, instead of failing a call that never
/// reached the server.
pub(crate) fn run_repeatable<T>(
    pool: &Pool,
    route: Route<'_>,
    response_timeout: Duration,
    mut op: impl FnMut(&mut Conn) -> redis::RedisResult<T>,
) -> Result<Ran<T>> {
    // Every idle connection may have been closed by the same event: try each at most once.
    for _ in 0..pool.config().max_size {
        let mut ran = run(pool, route, None, response_timeout, &mut op)?;
        let closed = match &ran.result {
            Err(e) => ran.conn.reused && reply_lost(e) && !reply_pending(e),
            Ok(_) => false,
        };
        if !closed {
            return Ok(ran);
        }
        log::debug!(
            "a pooled connection to {} was closed; sending again",
            ran.conn.server()
        );
        ran.conn.mark_broken();
    }
    run(pool, route, None, response_timeout, op)
}

/// Whether a read ended before its reply came but the connection may still deliver it: a
/// timeout, or a signal that interrupted the read (a process stopped and continued).
/// redis-rs skips the late reply on the connection's next read.
pub(crate) fn reply_pending(e: &redis::RedisError) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let io = std::error::Error::source(e).and_then(|source| {
        source.downcast_ref::<std::io::Error>().or_else(|| {
            source
                .downcast_ref::<Shared>()
                .and_then(|shared| shared.downcast_ref::<std::io::Error>())
        })
    });
    e.is_timeout() || io.is_some_and(|io| io.kind() == std::io::ErrorKind::Interrupted)
}

/// Whether a failed call's effect is unknown: no reply came (a timeout, a broken
/// connection), so Redis may have run it, or may still.
pub(crate) fn reply_lost(error: &redis::RedisError) -> bool {
    !matches!(
        error.kind(),
        redis::ErrorKind::Server(_)
            | redis::ErrorKind::Extension
            | redis::ErrorKind::UnexpectedReturnType
            | redis::ErrorKind::Parse
    )
}

/// This crate's error for `e`, a failure of `what` on a connection to `server` whose reads
/// were bounded by `after`, about the lock `lock`.
pub(crate) fn classify(
    e: redis::RedisError,
    server: &str,
    after: Duration,
    lock: &str,
    what: &'static str,
) -> Error {
    let server = server.to_owned();
    if e.code() == Some("WRONGTYPE") {
        return Error::WrongType {
            name: lock.to_owned(),
        };
    }
    if reply_pending(&e) {
        return Error::Timeout { server, after };
    }
    match e.kind() {
        redis::ErrorKind::AuthenticationFailed => Error::AuthFailed { server, source: e },
        redis::ErrorKind::UnexpectedReturnType | redis::ErrorKind::Parse => {
            Error::Protocol { what }
        }
        redis::ErrorKind::Server(_) | redis::ErrorKind::Extension => {
            Error::Redis { server, source: e }
        }
        _ if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
            Error::Unreachable { server, source: e }
        }
        _ => Error::Redis { server, source: e },
    }
}

/// How long an undo waits for its own reply: not at all, in effect. It was sent right
/// behind the call it undoes, so the server runs it after that call, whenever that is; a
/// reply that does not come in this time is skipped by the connection later, and the caller
/// keeps its bound.
const UNDO_REPLY_WAIT: Duration = Duration::from_millis(1);

/// Sends `commands` to undo a call whose reply was lost on `conn`: on `conn` itself while
/// it is open, so that Redis runs them after the lost call, however late that comes; else
/// on one fresh connection, since the lost call then ran already or never will. Their
/// replies are not waited for (see [`UNDO_REPLY_WAIT`]); an error reply that comes at once,
/// or a failure to send, is returned.
pub(crate) fn undo_after_lost_reply(
    conn: &mut Conn,
    pool: &Pool,
    route: Route<'_>,
    response_timeout: Duration,
    commands: &[redis::Cmd],
) -> Result<()> {
    let mut fresh: Option<Conn> = None;
    for command in commands {
        let target = if conn.is_open() {
            &mut *conn
        } else {
            match &mut fresh {
                Some(fresh) => fresh,
                None => fresh.insert(checkout(
                    pool,
                    route,
                    pool.config().connection_timeout.min(response_timeout),
                    response_timeout,
                )?),
            }
        };
        target.set_read_timeout(UNDO_REPLY_WAIT)?;
        let sent = command.query::<redis::Value>(&mut *target);
        target.set_read_timeout(response_timeout)?;
        match sent {
            Ok(_) => {}
            // Sent; its reply is not waited for, nor left for the connection's next user.
            Err(e) if reply_pending(&e) => target.mark_broken(),
            Err(e) => return Err(target.fail(e, "", "an undo")),
        }
    }
    Ok(())
}

impl Deref for Conn {
    type Target = redis::Connection;

    fn deref(&self) -> &redis::Connection {
        self.connection()
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut redis::Connection {
        self.parts().0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The error a server's `-text` reply becomes.
    pub(crate) fn server_error(text: &str) -> redis::RedisError {
        redis::parse_redis_value(format!("-{text}\r\n").as_bytes())
            .unwrap()
            .extract_error()
            .unwrap_err()
    }

    fn io(kind: std::io::ErrorKind) -> redis::RedisError {
        std::io::Error::new(kind, "x").into()
    }

    #[test]
    fn an_interrupted_read_may_still_get_its_reply() {
        assert!(reply_pending(&io(std::io::ErrorKind::Interrupted)));
        assert!(reply_pending(&io(std::io::ErrorKind::TimedOut)));
        assert!(!reply_pending(&io(std::io::ErrorKind::ConnectionReset)));
        assert!(!reply_pending(&server_error("ERR no")));
    }

    #[test]
    fn only_answers_count_as_replies() {
        assert!(reply_lost(&io(std::io::ErrorKind::TimedOut)));
        assert!(reply_lost(&io(std::io::ErrorKind::ConnectionReset)));
        assert!(!reply_lost(&server_error("ERR no")));
        assert!(!reply_lost(&server_error("WRONGTYPE no")));
        assert!(!reply_lost(&server_error("SOMETHINGNEW no")));
    }

    #[test]
    fn errors_name_their_server_and_kind() {
        let c = |e| classify(e, "h:1", Duration::from_secs(2), "jobs", "acquire");
        assert!(matches!(
            c(server_error("WRONGTYPE Operation against a key")),
            Error::WrongType { name } if name == "jobs"
        ));
        assert!(matches!(
            c(io(std::io::ErrorKind::TimedOut)),
            Error::Timeout { server, .. } if server == "h:1"
        ));
        assert!(c(io(std::io::ErrorKind::ConnectionRefused)).is_unreachable());
        assert!(matches!(
            c(server_error("NOPERM no")),
            Error::Redis { server, .. } if server == "h:1"
        ));
        let wrong_shape =
            redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "shape"));
        assert!(matches!(
            c(wrong_shape),
            Error::Protocol { what: "acquire" }
        ));
    }
}
