//! One connection: made within the connect timeout, its replies bounded by the response
//! timeout from the first byte ([`connect`]), and what we know of its socket ([`Link`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo};

use super::health::Failure;

/// A connection as the pool keeps it, with what we know about its socket.
pub(crate) struct Link {
    pub(super) conn: redis::Connection,
    pub(super) state: LinkState,
    /// The server it is connected to, for error messages.
    pub(super) server: Arc<str>,
    /// Its place among its pool's connections (see `Room`).
    pub(super) place: Option<Place>,
}

/// The room of one server's connections: those the pool makes in the background and those
/// callers make on their own threads while it recovers stay within `max_size` together
/// (r2d2 knows only its own).
#[derive(Debug)]
pub(crate) struct Room {
    open: AtomicU32,
    max: u32,
}

impl Room {
    pub(super) fn new(max: u32) -> Arc<Room> {
        Arc::new(Room {
            open: AtomicU32::new(0),
            max,
        })
    }

    /// A place for one more connection, if there is room.
    pub(super) fn take(self: &Arc<Room>) -> Option<Place> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Place(self.clone()))
    }
}

/// One connection's place in its [`Room`], given back when the connection closes.
#[derive(Debug)]
pub(crate) struct Place(Arc<Room>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What we last did to a connection, so that a hot path does not repeat it.
#[derive(Debug, Default, Clone)]
pub(crate) struct LinkState {
    /// The socket's read timeout as we last set it.
    pub(crate) read_timeout: Option<Duration>,
    /// The socket's write timeout as we last set it.
    pub(crate) write_timeout: Option<Duration>,
    /// The server-side id of the connection (`CLIENT ID`), for `CLIENT UNBLOCK`.
    pub(crate) client_id: Option<i64>,
    /// Set when the connection must not be used again (its server was demoted, say).
    pub(crate) broken: bool,
    /// When it went back to the pool last: one idle for long is checked before use.
    pub(crate) idle_since: Option<std::time::Instant>,
}

/// `info`'s address as errors show it: `host:port` or a socket path, never a password.
pub(super) fn server_name(info: &ConnectionInfo) -> String {
    info.addr().to_string()
}

/// Connects to `info` within `connect_timeout` (the handshake and a `PING` included), then
/// bounds every later read and write by `response_timeout`.
pub(super) fn connect(
    info: &ConnectionInfo,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<Link, Failure> {
    connect_then(info, connect_timeout, response_timeout, |_| Ok(()))
}

/// [`connect`], with `check` run on the new connection within the same `connect_timeout`.
fn connect_then(
    info: &ConnectionInfo,
    connect_timeout: Duration,
    response_timeout: Duration,
    check: impl FnOnce(&mut redis::Connection) -> Result<(), Failure>,
) -> Result<Link, Failure> {
    let started = std::time::Instant::now();
    // No `CLIENT SETINFO` in redis-rs's handshake: its replies are read with a timeout per
    // read, not for the whole, so a stalled server made a connect take twice its budget.
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    let bare = info.clone().set_redis_settings(settings);
    let client = redis::Client::open(bare).map_err(Failure::new)?;
    let mut conn = client
        .get_connection_with_timeout(connect_timeout)
        .map_err(Failure::new)?;
    let set_timeouts = |conn: &redis::Connection, timeout: Duration| {
        let timeout = Some(timeout.max(super::MIN_TIMEOUT));
        conn.set_read_timeout(timeout).map_err(Failure::new)?;
        conn.set_write_timeout(timeout).map_err(Failure::new)?;
        Ok::<_, Failure>(timeout)
    };
    // What is left of the connect timeout bounds the checks.
    set_timeouts(&conn, connect_timeout.saturating_sub(started.elapsed()))?;
    // A server that wants a password we did not give answers NOAUTH only now; later, a
    // long command would get a protocol error and a closed connection instead.
    redis::cmd("PING")
        .query::<String>(&mut conn)
        .map_err(Failure::new)?;
    check(&mut conn)?;
    let timeout = set_timeouts(&conn, response_timeout)?;
    Ok(Link {
        conn,
        state: LinkState {
            read_timeout: timeout,
            write_timeout: timeout,
            // Idle from the start: a connection the pool made in the background may sit in
            // it unused, and be closed by the server or the network meanwhile.
            idle_since: Some(std::time::Instant::now()),
            ..LinkState::default()
        },
        server: server_name(info).into(),
        place: None,
    })
}

/// Connects to `info`, a server given by its address, as [`connect`] does, and checks that
/// it is one that can hold locks: not a Sentinel, not a node of a cluster, something that
/// speaks Redis, with the database asked for and no password it does not want. Each of
/// those fails with one line that says what is there and what to use instead.
pub(super) fn connect_direct(
    info: &ConnectionInfo,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<Link, Failure> {
    let server = server_name(info);
    let check = |conn: &mut redis::Connection| {
        let about: String = match redis::cmd("INFO").arg("server").query(conn) {
            Ok(about) => about,
            // An ACL user allowed only the locks' commands, or a server that renamed
            // `INFO`: there is nothing to tell by, and the server answered as Redis does.
            Err(e) if e.code().is_some() => return Ok(()),
            Err(e) => return Err(Failure::new(e)),
        };
        match misplaced(&server, &about) {
            Some(instead) => Err(Failure::wrong("url", instead, wrong_server(&server))),
            None => Ok(()),
        }
    };
    connect_then(info, connect_timeout, response_timeout, check)
        .map_err(|failure| explain(failure, info, connect_timeout, response_timeout))
}

/// What to use instead of a server whose `INFO server` is `about`, if it holds no locks of
/// its own: a Sentinel, or a node of a cluster.
fn misplaced(server: &str, about: &str) -> Option<String> {
    let mode = about
        .lines()
        .find_map(|l| {
            l.strip_prefix("redis_mode:")
                .or(l.strip_prefix("server_mode:"))
        })
        .map(str::trim);
    match mode {
        Some("sentinel") => Some(format!(
            "redis at {server} is a Sentinel, which holds no locks; use \
             `Pool::sentinel(&[\"redis://{server}/\"], \"<service>\")` (`SENTINEL MASTERS` \
             there lists its services)"
        )),
        Some("cluster") => Some(format!(
            "redis at {server} is a node of a Redis Cluster; use \
             `Pool::cluster(&[\"redis://{server}/\"])`"
        )),
        _ => None,
    }
}

/// A connection attempt to a server given by its address that failed, made clearer where
/// what is at the address says why: it does not speak Redis, it has no such database, or
/// it wants no password at all.
fn explain(
    failure: Failure,
    info: &ConnectionInfo,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Failure {
    let server = server_name(info);
    let failure = failure.not_redis("url", &server);
    let source = failure.clone().into_source();
    let detail = source.detail().unwrap_or_default();
    if detail.contains("DB index is out of range") {
        let db = info.redis_settings().db();
        let reason = format!(
            "redis at {server} has no database {db} (it has 16 unless its `databases` \
             setting says otherwise: `CONFIG GET databases`); pick a lower one in the url"
        );
        return Failure::wrong("url", reason, source);
    }
    if failure.is_auth() && info.redis_settings().password().is_some() {
        // Does it answer without any? Then it has no password to check ours against.
        let settings = redis::RedisConnectionInfo::default().set_db(info.redis_settings().db());
        let bare = info.clone().set_redis_settings(settings);
        if connect(&bare, connect_timeout, response_timeout).is_ok() {
            let reason = format!(
                "redis at {server} has no password set (it answers without one), and refused \
                 the credentials given; drop them from the url, or set them up on the server \
                 (`requirepass`, or an ACL user)"
            );
            return Failure::wrong("password", reason, source);
        }
    }
    failure
}

/// The error a misplaced server's failure carries.
fn wrong_server(server: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "not a server that holds locks",
        server.to_owned(),
    ))
}

/// `template` with its address replaced by `host:port`, keeping its TLS settings.
pub(super) fn at(template: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let addr = match template.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    template.clone().set_addr(addr)
}

/// Connects to `info` and checks that the server is a primary (`ROLE`).
pub(super) fn connect_checked(
    info: &ConnectionInfo,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<Link, Failure> {
    let mut link = connect(info, connect_timeout, response_timeout)?;
    if is_primary(&mut link)? {
        return Ok(link);
    }
    Err(not_a_primary(info))
}

/// Whether the server of `link` says it is a primary (`ROLE`).
pub(super) fn is_primary(link: &mut Link) -> Result<bool, Failure> {
    let role: redis::Value = redis::cmd("ROLE")
        .query(&mut link.conn)
        .map_err(Failure::new)?;
    Ok(matches!(&role, redis::Value::Array(parts)
        if matches!(parts.first(), Some(redis::Value::BulkString(r)) if r == b"master")))
}

/// The failure of a connection to `info`, which is not a primary.
pub(super) fn not_a_primary(info: &ConnectionInfo) -> Failure {
    Failure::new(redis::RedisError::from((
        redis::ErrorKind::Io,
        "the server sentinel names as primary is not one (yet); a failover is under way",
        server_name(info),
    )))
}
