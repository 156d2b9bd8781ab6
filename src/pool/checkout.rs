//! Getting a connection of one server: [`Pooled`], the one type every checkout gives,
//! whatever made it (this crate's r2d2 pool, a foreign one given to `Pool::try_from`, or the
//! caller's own thread while the pool's last attempt had failed), and [`Node::get`], which
//! waits for one while watching the server's health.

use std::time::{Duration, Instant};

use r2d2::PooledConnection;

use super::{Link, LinkState, Manager, Node, NodePool};
use crate::error::{Error, Result};

/// A connection checked out of one server's pool, given back when dropped.
pub(crate) enum Pooled {
    Own(PooledConnection<Manager>),
    /// Made on the caller's thread while the pool's last attempt had failed; closed when
    /// dropped, when it stops counting against the pool's size (the count it is in).
    Detached(Link),
    /// Of a pool given to `Pool::try_from`: what we know of its socket lives in its r2d2
    /// extensions between checkouts.
    Foreign {
        conn: PooledConnection<redis::Client>,
        state: LinkState,
    },
}

impl Pooled {
    /// The connection, and what we know of its socket.
    pub(crate) fn parts(&mut self) -> (&mut redis::Connection, &mut LinkState) {
        match self {
            Pooled::Own(pooled) => {
                let Link { conn, state, .. } = &mut **pooled;
                (conn, state)
            }
            Pooled::Detached(Link { conn, state, .. }) => (conn, state),
            Pooled::Foreign { conn, state } => (&mut **conn, state),
        }
    }

    pub(crate) fn connection(&self) -> &redis::Connection {
        match self {
            Pooled::Own(pooled) => &pooled.conn,
            Pooled::Detached(link) => &link.conn,
            Pooled::Foreign { conn, .. } => conn,
        }
    }

    /// The server it is connected to, as errors name it (a foreign pool's is its node's).
    pub(crate) fn server<'a>(&'a self, node: &'a Node) -> &'a str {
        match self {
            Pooled::Own(pooled) => &pooled.server,
            Pooled::Detached(link) => &link.server,
            Pooled::Foreign { .. } => node.server(),
        }
    }

    fn foreign(mut conn: PooledConnection<redis::Client>) -> Pooled {
        let state = PooledConnection::extensions_mut(&mut conn)
            .remove::<LinkState>()
            .unwrap_or_default();
        Pooled::Foreign { conn, state }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.parts().1.idle_since = Some(Instant::now());
        match self {
            Pooled::Foreign { conn, state } => {
                PooledConnection::extensions_mut(conn).insert(std::mem::take(state));
            }
            Pooled::Own(_) | Pooled::Detached(_) => {}
        }
    }
}

/// How long after a connection made on a caller's thread the pool counts as recovering:
/// r2d2's attempts back off up to a second (`R2D2_RETRY_CAP`).
const RECOVERY: Duration = Duration::from_secs(1);

/// The first and the longest slice of [`Node::get_watching_health`]'s wait.
const HEALTH_SLICES: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(200));

impl Node {
    /// An idle connection, if one is free now.
    pub(crate) fn try_get(&self) -> Option<Pooled> {
        loop {
            let pooled = match &self.pool {
                NodePool::Own(pool) => pool.try_get().map(Pooled::Own),
                NodePool::Foreign(pool) => pool.try_get().map(Pooled::foreign),
            };
            if let Some(pooled) = self.fresh(pooled?) {
                return Some(pooled);
            }
        }
    }

    fn get_timeout(&self, wait: Duration) -> Option<Pooled> {
        let started = Instant::now();
        loop {
            let left = wait.saturating_sub(started.elapsed());
            let pooled = match &self.pool {
                NodePool::Own(pool) => pool.get_timeout(left).ok().map(Pooled::Own),
                NodePool::Foreign(pool) => pool.get_timeout(left).ok().map(Pooled::foreign),
            };
            if let Some(pooled) = self.fresh(pooled?) {
                return Some(pooled);
            }
        }
    }

    /// Whether a connection was made on a caller's thread, the pool's last attempt having
    /// failed, less than [`RECOVERY`] ago, and the pool still lacks connections it may
    /// have: its own attempts back off up to a second after failing, and a caller would
    /// wait for them in vain.
    fn recovering(&self) -> bool {
        let recent = self
            .detached_at
            .lock()
            .is_some_and(|at| at.elapsed() < RECOVERY);
        recent
            && match &self.pool {
                NodePool::Own(pool) => pool.state().connections < pool.max_size(),
                NodePool::Foreign(_) => false,
            }
    }

    fn pool_timeout(&self, wait: Duration) -> Error {
        Error::PoolTimeout {
            server: self.server().to_owned(),
            after: wait,
        }
    }

    /// `pooled`, unless it is stale (to a server Sentinel no longer names): then it is
    /// closed.
    fn fresh(&self, mut pooled: Pooled) -> Option<Pooled> {
        if self.is_stale(pooled.server(self)) {
            log::debug!(
                "closing a connection to {}, no longer the primary",
                pooled.server(self)
            );
            pooled.parts().1.broken = true;
            return None;
        }
        Some(pooled)
    }

    /// A connection, waiting at most `wait` for a free one.
    ///
    /// A server whose last connection attempt failed is reported at once (when no
    /// connection is idle; or, with a manager of ours, after one attempt on this thread,
    /// since the pool's next one may be a backoff away), and one that fails while we wait
    /// is reported within about the connect timeout, rather than after the whole `wait`:
    /// r2d2 keeps trying in the background, and the next call gets a connection as soon as
    /// one is made.
    ///
    /// # Errors
    ///
    /// The server's failure ([`Error::Unreachable`], [`Error::AuthFailed`]), or
    /// [`Error::PoolTimeout`] when every connection stayed busy.
    pub(crate) fn get(&self, wait: Duration, connect_timeout: Duration) -> Result<Pooled> {
        // An idle connection, at once: the common case.
        if let Some(pooled) = self.try_get() {
            return Ok(pooled);
        }
        let started = Instant::now();
        // The pool's last attempt failed, or its attempts may still be a backoff away after
        // a failure (a connection was made here for that less than `RECOVERY` ago, and it
        // lacks some): connect on this thread rather than wait for it.
        let failure = self.health.failure();
        if failure.is_some() || self.recovering() {
            let Some(manager) = &self.manager else {
                return Err(failure.unwrap_or_else(|| self.pool_timeout(wait)));
            };
            return self.connect_here(manager, wait, failure);
        }
        // A first share of the wait long enough for one connection attempt to end, watching
        // for it to fail.
        let first = wait.min(connect_timeout + Duration::from_millis(100));
        if let Some(pooled) = self.get_watching_health(first)? {
            return Ok(pooled);
        }
        let left = wait.saturating_sub(started.elapsed());
        self.get_timeout(left).ok_or_else(|| {
            self.health
                .failure()
                .unwrap_or_else(|| self.pool_timeout(wait))
        })
    }

    /// A connection made on this thread within `wait`, counted against the pool's size;
    /// while the pool's connections and other callers' fill it, a pooled one that comes
    /// free or room for one more, whichever comes first. `failure`: the pool's last attempt
    /// failed (reported if `wait` passes with neither).
    fn connect_here(
        &self,
        manager: &Manager,
        wait: Duration,
        failure: Option<Error>,
    ) -> Result<Pooled> {
        let started = Instant::now();
        let mut slice = HEALTH_SLICES.0;
        loop {
            let left = wait.saturating_sub(started.elapsed());
            if let Some(link) = manager.connect_in_room(left)? {
                if failure.is_some() {
                    *self.detached_at.lock() = Some(Instant::now());
                }
                return Ok(Pooled::Detached(link));
            }
            if let Some(pooled) = self.get_timeout(slice.min(left)) {
                return Ok(pooled);
            }
            if started.elapsed() >= wait {
                let failure = self.health.failure().or(failure);
                return Err(failure.unwrap_or_else(|| self.pool_timeout(wait)));
            }
            slice = (slice * 2).min(HEALTH_SLICES.1);
        }
    }

    /// Waits up to `wait` for a connection, in slices that double from 5 ms to 200 ms, and
    /// returns the server's failure as soon as a connection attempt (r2d2's, in the
    /// background) has failed: r2d2 wakes its waiters for a new connection, not for a
    /// failed attempt. `None` when `wait` passed with neither.
    fn get_watching_health(&self, wait: Duration) -> Result<Option<Pooled>> {
        let started = Instant::now();
        let mut slice = HEALTH_SLICES.0;
        loop {
            let left = wait.saturating_sub(started.elapsed());
            if let Some(pooled) = self.get_timeout(slice.min(left)) {
                return Ok(Some(pooled));
            }
            if let Some(failure) = self.health.failure() {
                return Err(failure);
            }
            if started.elapsed() >= wait {
                return Ok(None);
            }
            slice = (slice * 2).min(HEALTH_SLICES.1);
        }
    }
}
