//! How the pools make connections: to one server as given, or (behind Sentinel) to the
//! primary the sentinels name, which `sentinel` follows.

use std::sync::Arc;
use std::time::Duration;

use redis::ConnectionInfo;

use super::health::Health;
use super::link::{Link, connect};
use super::sentinel::{Primary, SentinelTarget, connect_primary};
use crate::error::Error;

/// Where connections go.
#[derive(Debug, Clone)]
pub(super) enum Target {
    /// One server, as given.
    Direct(ConnectionInfo),
    /// The primary that Sentinel names for a service.
    Sentinel(SentinelTarget),
}

/// Makes connections for one r2d2 pool.
#[derive(Debug)]
pub(crate) struct Manager {
    pub(super) target: Target,
    pub(super) connect_timeout: Duration,
    pub(super) response_timeout: Duration,
    pub(super) health: Arc<Health>,
    /// Behind Sentinel, once the pool follows the sentinels: the server they name now.
    pub(super) primary: Option<Arc<Primary>>,
}

impl Manager {
    /// A connection, its connect bounded by `wait` as well as by the connect timeout (a
    /// caller's thread connects within what is left of its call).
    pub(crate) fn connect_within(&self, wait: Duration) -> Result<Link, Error> {
        let timeout = self.connect_timeout.min(wait);
        let connected = match &self.target {
            Target::Direct(info) => connect(info, timeout, self.response_timeout),
            Target::Sentinel(target) => connect_primary(
                target,
                self.primary.as_deref(),
                timeout,
                self.response_timeout,
            ),
        };
        match connected {
            Ok(link) => {
                self.health.connected();
                Ok(link)
            }
            Err(failure) => Err(self.health.failed(failure)),
        }
    }

    /// The same settings and health, for a second manager of the same server.
    pub(super) fn clone_settings(&self) -> Manager {
        Manager {
            target: self.target.clone(),
            connect_timeout: self.connect_timeout,
            response_timeout: self.response_timeout,
            health: self.health.clone(),
            primary: self.primary.clone(),
        }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Link;
    type Error = Error;

    fn connect(&self) -> Result<Link, Error> {
        self.connect_within(self.connect_timeout)
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
