//! The wait in Redis between two attempts: sleep in `BLPOP` on the lock's signal lists,
//! woken by a release, until the holder's lease may have run out or the caller's deadline
//! passes. The driver (`acquire.rs`) decides when to wait and for how long; this is how.
//!
//! A connection waits in `BLPOP` only with a turn of its server's
//! [`Blocking`](crate::pool::Blocking) (all but one of a pool's connections may wait at
//! once); without one, the waiter gives its connection back and waits in the process for a
//! turn. Nobody calls a script on a timer.
//!
//! The deadline is kept on our clock, not the server's: Redis answers a timed-out `BLPOP`
//! on its timer tick, which on an idle server can be a whole `1/hz` (100 ms by default)
//! late. When the reply has not come [`BLPOP_GRACE`] after the wait, the connection is
//! unblocked with `CLIENT UNBLOCK` from a spare connection to the same server, or, with
//! none to spare, waited out with a `PING` behind the `BLPOP`, each within what is left of
//! the call's bound. Either way the `BLPOP` may have popped something whose reply is never
//! read: a lock kind whose wake-ups carry grants (fair mode) finds such a grant again with
//! its next attempt.

use std::time::{Duration, Instant};

use crate::conn::{self, Conn};
use crate::error::Result;
use crate::pool::Pool;
use crate::pool::{Redirect, Turn, redirect_of};
use crate::time::Deadline;

/// How long past a `BLPOP`'s own timeout we wait for the server's reply before unblocking
/// it ourselves. An idle server answers on its next tick, up to `1/hz` late, so waiting
/// longer buys nothing: every millisecond here is a millisecond of `try_lock_for` lateness.
const BLPOP_GRACE: Duration = Duration::from_millis(1);

/// A wake-up: the list that was pushed to, and what was pushed. The `BLPOP` that popped it
/// ran right after the attempt before it, on the same connection: what it popped was pushed
/// after that attempt ran.
#[derive(Debug)]
pub(crate) struct Woken {
    pub(crate) list: String,
    pub(crate) value: String,
}

/// How one wait ended.
pub(crate) enum Waited {
    /// Go on with this connection, and the wake-up if a signal ended the wait.
    Next(Conn, Option<Woken>),
    /// The deadline passed while this waiter waited for a turn, without a connection.
    TimedOut,
    /// The server stopped answering: the connection, with a request's reply outstanding,
    /// for a clean-up right behind it.
    Failed(Conn, crate::error::Error),
}

/// The waits of one acquire call: what it waits on, until when, and its turn to wait on
/// its server's connections.
pub(crate) struct Waiting<'a> {
    pool: &'a Pool,
    /// A key of the lock: routes the connection.
    route: &'a str,
    name: &'a str,
    /// The lists a release pushes to.
    pub(crate) signals: Vec<String>,
    /// When the caller stops waiting (`None`: never).
    until: Option<Instant>,
    /// When the call must return by: `until` and one reply.
    end: Option<Instant>,
    response_timeout: Duration,
    /// A turn of the connection's server's `Blocking`, kept between waits unless others
    /// want one.
    turn: Option<Turn>,
    /// The last wait ended with a broken connection: another in a row fails the call,
    /// rather than loop on a connection that something keeps cutting.
    broke: bool,
}

impl<'a> Waiting<'a> {
    /// The waits for the lock `name` (`route`: a key of it) on `pool`, on `signals`, until
    /// `until`, each request answered within `response_timeout`.
    pub(crate) fn new(
        pool: &'a Pool,
        route: &'a str,
        name: &'a str,
        signals: Vec<String>,
        until: Option<Instant>,
        response_timeout: Duration,
    ) -> Waiting<'a> {
        Waiting {
            pool,
            route,
            name,
            signals,
            until,
            end: until.and_then(|until| until.checked_add(response_timeout)),
            response_timeout,
            turn: None,
            broke: false,
        }
    }

    /// The deadline of a request sent now: one response timeout, within the call's end.
    pub(crate) fn request(&self) -> Deadline {
        Deadline::of_request(self.response_timeout, self.end)
    }

    /// A connection for a request of the lock, due by [`request`](Self::request).
    pub(crate) fn checkout(&self) -> Result<Conn> {
        conn::checkout(self.pool, self.route, self.request())
    }

    /// `conn`, if its server serves the lock still; else a connection to the one that does
    /// (the server was demoted, or the slot moved, while we waited on it).
    pub(crate) fn serving(&self, mut conn: Conn) -> Result<Conn> {
        if conn::serves(&conn, self.pool, self.route) {
            return Ok(conn);
        }
        conn.mark_broken();
        drop(conn);
        self.checkout()
    }

    /// Waits in Redis on `conn` for a signal, for `nap` at most (at least 1 ms), with a
    /// turn of its server; without one, in the process for a turn, then gives back a fresh
    /// connection to try again on (time has passed).
    pub(crate) fn sleep(&mut self, conn: Conn, nap: Duration) -> Result<Waited> {
        let blocking = conn.node().blocking.clone();
        if self.turn.as_ref().is_none_or(|turn| !turn.is_of(&blocking)) {
            self.turn = blocking.try_enter();
        }
        if self.turn.is_none() {
            // Every connection that may wait is waiting: wait in the process for a turn,
            // without a connection.
            drop(conn);
            log::trace!("lock `{}`: waiting for a turn to wait in Redis", self.name);
            let Some(turn) = blocking.enter(self.until) else {
                return Ok(Waited::TimedOut);
            };
            self.turn = Some(turn);
            return Ok(Waited::Next(self.checkout()?, None));
        }
        log::trace!("lock `{}` is held; waiting up to {nap:?}", self.name);
        let waited = self.blpop(conn, nap)?;
        // Others wait for a turn: give this one up, and queue for it again if need be.
        if matches!(waited, Waited::Next(_, None))
            && self.turn.as_ref().is_some_and(Turn::contended)
        {
            self.turn = None;
        }
        Ok(waited)
    }

    /// `BLPOP` on the signal lists for `nap`, then the connection to go on with, and the
    /// wake-up if a signal ended the wait.
    fn blpop(&mut self, mut conn: Conn, nap: Duration) -> Result<Waited> {
        let nap = nap.max(crate::pool::MIN_TIMEOUT);
        let id = conn.client_id()?;
        let mut blpop = redis::cmd("BLPOP");
        blpop
            .arg(&self.signals)
            .arg(format!("{:.3}", nap.as_secs_f64()));
        // Only the reply waits; the command itself is written at once.
        conn.set_read_timeout(nap + BLPOP_GRACE)?;
        let outcome = blpop
            .query::<Option<(String, String)>>(&mut *conn)
            .map(|popped| popped.map(|(list, value)| Woken { list, value }));
        let broke = std::mem::take(&mut self.broke);
        match outcome {
            Ok(woken) => Ok(Waited::Next(conn, woken)),
            Err(e) if conn::reply_pending(&e) => {
                log::trace!(
                    "BLPOP {:?} not answered {BLPOP_GRACE:?} after its {nap:?} timeout",
                    self.signals
                );
                self.unblock(conn, id)
            }
            Err(e) if redirect_of(&e).is_some() => {
                // The server ended the wait (its slot moved, it was demoted): nothing was
                // popped. Try again on a connection routed anew.
                log::debug!(
                    "waiting for lock `{}` ended with {e}; trying again",
                    self.name
                );
                if redirect_of(&e) == Some(Redirect::Demoted) {
                    conn.mark_broken();
                }
                drop(conn);
                Ok(Waited::Next(self.checkout()?, None))
            }
            // The connection broke (a restart, a proxy that cut it): the lock may be free
            // now, since a restart without persistence frees every lock. Try again on
            // another.
            Err(e) if conn::reply_lost(&e) && !broke => {
                self.broke = true;
                log::debug!(
                    "waiting for lock `{}` ended with a broken connection ({e}); trying again",
                    self.name
                );
                conn.mark_broken();
                drop(conn);
                Ok(Waited::Next(self.checkout()?, None))
            }
            Err(e) => Err(conn.fail(e, self.name, "BLPOP")),
        }
    }

    /// Ends a `BLPOP` (the connection `id`) whose reply is late: `CLIENT UNBLOCK` from a
    /// spare connection to the same server, or, with none to spare, a `PING` queued behind
    /// it, whose reply comes once the server has ended it (redis-rs skips the `BLPOP`'s late
    /// reply, and whatever it popped: the next attempt finds a grant that came in it).
    fn unblock(&self, mut conn: Conn, id: i64) -> Result<Waited> {
        let Some(mut other) = conn.spare(self.request()) else {
            conn.answer_by(self.request())?;
            redis::cmd("PING")
                .query::<String>(&mut *conn)
                .map_err(|e| conn.fail(e, self.name, "PING"))?;
            return Ok(Waited::Next(conn, None));
        };
        match redis::cmd("CLIENT")
            .arg("UNBLOCK")
            .arg(id)
            .query::<i64>(&mut *other)
        {
            Ok(_) => {}
            // The server does not answer: neither connection is fit to go on with, and
            // another request would only wait out its own timeout.
            Err(e) if conn::reply_pending(&e) => {
                conn.mark_broken();
                let e = other.fail(e, self.name, "CLIENT UNBLOCK");
                return Ok(Waited::Failed(other, e));
            }
            // Without the right to unblock (ACL), the old connection finishes its BLPOP on
            // the server's clock; whoever uses it next waits for that at most.
            Err(e) => log::debug!("CLIENT UNBLOCK {id} failed: {e}"),
        }
        Ok(Waited::Next(other, None))
    }
}
