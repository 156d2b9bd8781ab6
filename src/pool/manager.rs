//! How the pools make connections: to one server as given, or (behind Sentinel) to the
//! primary the sentinels name, which `sentinel` follows.

use std::sync::Arc;
use std::time::Duration;

use redis::ConnectionInfo;

use super::health::Health;
use super::link::{Link, Room, connect, connect_direct};
use super::sentinel::{Primary, SentinelTarget, connect_primary};
use crate::error::Error;

/// Where connections go.
#[derive(Debug, Clone)]
pub(super) enum Target {
    /// One server, as given: checked to be one that holds locks on its own.
    Direct(ConnectionInfo),
    /// A node of a cluster, as its slot map names it.
    ClusterNode(ConnectionInfo),
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
    /// The room of a pool's connections (none for a single check of a server).
    pub(super) room: Option<Arc<Room>>,
}

impl Manager {
    /// A connection, its connect bounded by `wait` as well as by the connect timeout (a
    /// caller's thread connects within what is left of its call); `None` when the pool's
    /// connections fill its room.
    pub(crate) fn connect_in_room(&self, wait: Duration) -> Result<Option<Link>, Error> {
        let place = match &self.room {
            Some(room) => match room.take() {
                Some(place) => Some(place),
                None => return Ok(None),
            },
            None => None,
        };
        let mut link = self.connect_within(wait)?;
        link.place = place;
        Ok(Some(link))
    }

    /// A connection made within `wait` and the connect timeout, outside any room.
    fn connect_within(&self, wait: Duration) -> Result<Link, Error> {
        let timeout = self.connect_timeout.min(wait);
        // Nothing is left of the call: no attempt (a zero timeout would wait without end),
        // and no failure of the server's.
        if timeout < super::MIN_TIMEOUT {
            return Err(Error::Timeout {
                server: self.health.server().to_owned(),
                after: wait,
            });
        }
        let connected = match &self.target {
            Target::Direct(info) => connect_direct(info, timeout, self.response_timeout),
            Target::ClusterNode(info) => connect(info, timeout, self.response_timeout),
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
            room: self.room.clone(),
        }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Link;
    type Error = Error;

    /// A full room is no failure of the server: r2d2 tries again after a backoff, by when
    /// the connections made on callers' threads may have closed.
    fn connect(&self) -> Result<Link, Error> {
        self.connect_in_room(self.connect_timeout)?
            .ok_or_else(|| Error::PoolTimeout {
                server: self.health.server().to_owned(),
                after: Duration::ZERO,
            })
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
