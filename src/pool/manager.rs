//! How one connection is made: connected within the connect timeout, its replies bounded by
//! the response timeout from the first byte, and (behind Sentinel) to the current primary.

use std::sync::Arc;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo};

use super::health::{Failure, Health};
use crate::Error;

/// Where connections go.
#[derive(Debug, Clone)]
pub(super) enum Target {
    /// One server, as given.
    Direct(ConnectionInfo),
    /// The primary that Sentinel names for a service, asked anew for every connection.
    Sentinel(SentinelTarget),
}

/// A service monitored by Sentinel.
#[derive(Debug, Clone)]
pub(super) struct SentinelTarget {
    pub(super) sentinels: Vec<ConnectionInfo>,
    pub(super) service: String,
    /// The credentials, database and TLS mode for the primary; its address is Sentinel's.
    pub(super) node: ConnectionInfo,
}

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

/// Makes connections for one r2d2 pool.
#[derive(Debug)]
pub(crate) struct Manager {
    pub(super) target: Target,
    pub(super) connect_timeout: Duration,
    pub(super) response_timeout: Duration,
    pub(super) health: Arc<Health>,
}

impl Manager {
    /// The same settings and health, for a second manager of the same server.
    pub(super) fn clone_settings(&self) -> Manager {
        Manager {
            target: self.target.clone(),
            connect_timeout: self.connect_timeout,
            response_timeout: self.response_timeout,
            health: self.health.clone(),
        }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Link;
    type Error = Error;

    fn connect(&self) -> Result<Link, Error> {
        let connected = match &self.target {
            Target::Direct(info) => connect(info, self.connect_timeout, self.response_timeout),
            Target::Sentinel(target) => {
                connect_primary(target, self.connect_timeout, self.response_timeout)
            }
        };
        match connected {
            Ok(link) => {
                self.health.connected();
                Ok(link)
            }
            Err(failure) => Err(self.health.failed(failure)),
        }
    }

    /// Not used for checkouts (the pools never test on checkout); bounded by the
    /// connection's timeouts, which are set before anything is sent.
    fn is_valid(&self, link: &mut Link) -> Result<(), Error> {
        redis::cmd("PING")
            .query::<String>(&mut link.conn)
            .map(drop)
            .map_err(|source| Error::Redis {
                server: link.server.to_string(),
                source,
            })
    }

    fn has_broken(&self, link: &mut Link) -> bool {
        link.state.broken || !redis::ConnectionLike::is_open(&link.conn)
    }
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

/// Asks the sentinels, in turn, for the primary of the service, connects to it and checks
/// that it is a primary (Sentinel's view can lag a failover). Every step is bounded by the
/// timeouts.
fn connect_primary(
    target: &SentinelTarget,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<Link, Failure> {
    let mut last = None;
    for sentinel in &target.sentinels {
        let primary = connect(sentinel, connect_timeout, response_timeout).and_then(|mut link| {
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&target.service)
                .query::<Option<(String, u16)>>(&mut link.conn)
                .map_err(Failure::new)
        });
        let (host, port) = match primary {
            Ok(Some(address)) => address,
            Ok(None) => {
                last = Some(Failure::new(redis::RedisError::from((
                    redis::ErrorKind::MasterNameNotFoundBySentinel,
                    "no primary of that name is known to sentinel",
                    format!("service `{}` at {}", target.service, server_name(sentinel)),
                ))));
                continue;
            }
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let info = at(&target.node, &host, port);
        let mut link = connect(&info, connect_timeout, response_timeout)?;
        let role: redis::Value = redis::cmd("ROLE")
            .query(&mut link.conn)
            .map_err(Failure::new)?;
        let is_primary = matches!(&role, redis::Value::Array(parts)
            if matches!(parts.first(), Some(redis::Value::BulkString(r)) if r == b"master"));
        if is_primary {
            return Ok(link);
        }
        last = Some(Failure::new(redis::RedisError::from((
            redis::ErrorKind::Io,
            "the server sentinel names as primary is not one (yet); a failover is under way",
            format!("{host}:{port}"),
        ))));
    }
    Err(last.unwrap_or_else(|| {
        Failure::new(redis::RedisError::from((
            redis::ErrorKind::EmptySentinelList,
            "no sentinel given",
        )))
    }))
}
