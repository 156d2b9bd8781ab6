//! One connection: made within the connect timeout, its replies bounded by the response
//! timeout from the first byte ([`connect`]), and what we know of its socket ([`Link`]).

use std::sync::Arc;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo};

use super::health::Failure;

/// A connection as the pool keeps it, with what we know about its socket.
pub(crate) struct Link {
    pub(super) conn: redis::Connection,
    pub(super) state: LinkState,
    /// The server it is connected to, for error messages.
    pub(super) server: Arc<str>,
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

/// Connects to `info` within `connect_timeout` (the handshake included), then bounds every
/// later read and write by `response_timeout`.
pub(super) fn connect(
    info: &ConnectionInfo,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<Link, Failure> {
    let client = redis::Client::open(info.clone()).map_err(Failure::new)?;
    let conn = client
        .get_connection_with_timeout(connect_timeout)
        .map_err(Failure::new)?;
    let timeout = Some(response_timeout.max(super::MIN_TIMEOUT));
    conn.set_read_timeout(timeout).map_err(Failure::new)?;
    conn.set_write_timeout(timeout).map_err(Failure::new)?;
    let mut conn = conn;
    // A server that wants a password we did not give answers NOAUTH only now; later, a
    // long command would get a protocol error and a closed connection instead.
    redis::cmd("PING")
        .query::<String>(&mut conn)
        .map_err(Failure::new)?;
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
    })
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
