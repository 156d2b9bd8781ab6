//! The one wait loop every lock that waits in Redis uses: try the acquire script; while the
//! lock is held, sleep in `BLPOP` on its signal lists, woken by a release, until the
//! holder's lease may have run out or the caller's deadline passes; then try again.
//!
//! The deadline is kept on our clock, not the server's: Redis answers a timed-out `BLPOP`
//! on its timer tick, which on an idle server can be a whole `1/hz` (100 ms by default)
//! late. When the reply has not come [`BLPOP_GRACE`] after the wait, the connection is
//! unblocked with `CLIENT UNBLOCK` from a spare connection to the same server, or, with
//! none to spare, waited out with a `PING` behind the `BLPOP`.

use std::thread;
use std::time::{Duration, Instant};

use crate::conn::{self, Conn, Route};
use crate::metrics::{self, Labels};
use crate::pool::{MIN_TIMEOUT, Redirect, redirect_of};
use crate::{Pool, Result};

/// How long past a `BLPOP`'s own timeout we wait for the server's reply before unblocking
/// it ourselves. An idle server answers on its next tick, up to `1/hz` late, so waiting
/// longer buys nothing: every millisecond here is a millisecond of `try_lock_for` lateness.
const BLPOP_GRACE: Duration = Duration::from_millis(1);

/// How long a waiter sleeps without a connection when the pool has none to spare, before
/// it tries again.
const EXHAUSTED_POOL_WAIT: Duration = Duration::from_millis(20);

/// The longest a waiter sleeps before trying again: what a lost wake-up costs at most.
pub(crate) const MAX_WAIT: Duration = Duration::from_millis(1000);

/// What one acquire attempt found.
#[derive(Debug)]
pub(crate) enum Attempt<T> {
    /// The lock is ours.
    Granted(T),
    /// Held elsewhere: try again once woken, or after at most this long (the holder's
    /// remaining lease, say), whichever comes first.
    Blocked(Duration),
}

/// How the loop ended.
pub(crate) enum Acquired<T> {
    Granted(T),
    /// The deadline passed with the lock held elsewhere; the connection is given back for
    /// any clean-up the caller owes.
    TimedOut(Box<Conn>),
    /// The server stopped answering during the wait. The connection, open with a request's
    /// reply outstanding, is given back so that the caller's clean-up goes right behind
    /// that request, without waiting for an answer (see [`conn::undo_after_lost_reply`]).
    Failed(Box<Conn>, crate::Error),
}

/// How [`wait_for_signal`] ended.
enum Waited {
    /// Go on with this connection, and the wake-up if a signal ended the wait.
    Next(Conn, Option<Woken>),
    Failed(Conn, crate::Error),
}

/// What a waiter waits on.
pub(crate) struct Wait<'a> {
    pub(crate) pool: &'a Pool,
    /// Routes the requests: a key of the lock.
    pub(crate) route: &'a str,
    /// The lists a release pushes to.
    pub(crate) signals: &'a [&'a str],
    /// `None`: wait until granted.
    pub(crate) deadline: Option<Instant>,
    pub(crate) response_timeout: Duration,
    pub(crate) name: &'a str,
    /// The labels of the lock's metrics.
    pub(crate) labels: &'a Labels,
}

/// A wake-up: the list that was pushed to, what was pushed, and when the wait began (a
/// grant handed over in the wake-up was made after that).
#[derive(Debug)]
pub(crate) struct Woken {
    pub(crate) list: String,
    pub(crate) value: String,
    pub(crate) since: Instant,
}

/// Runs `attempt` until it grants the lock or the deadline passes, sleeping in `BLPOP`
/// between attempts. `attempt` gets a connection and the wake-up that ended the last wait
/// (if a signal ended it), and gives the connection back with what it found.
pub(crate) fn acquire<T>(
    wait: &Wait<'_>,
    mut attempt: impl FnMut(Conn, Option<Woken>) -> Result<(Conn, Attempt<T>)>,
) -> Result<Acquired<T>> {
    let started = Instant::now();
    let mut conn = checkout_for_lock(wait)?;
    let mut woken = None;
    let mut contended = false;
    loop {
        conn.set_read_timeout(reply_wait(wait))?;
        let (back, found) = attempt(conn, woken.take())?;
        conn = back;
        let mut nap = match found {
            Attempt::Granted(granted) => {
                metrics::acquired(wait.labels, started.elapsed(), contended);
                return Ok(Acquired::Granted(granted));
            }
            Attempt::Blocked(hint) => hint.min(MAX_WAIT),
        };
        contended = true;
        if let Some(deadline) = wait.deadline {
            let now = Instant::now();
            if now >= deadline {
                // A call that could wait and waited in vain, not a mere `try_lock`.
                if deadline > started {
                    metrics::timed_out(wait.labels);
                }
                return Ok(Acquired::TimedOut(Box::new(conn)));
            }
            nap = nap.min(deadline - now);
        }
        log::trace!("lock `{}` is held; waiting up to {nap:?}", wait.name);
        match wait_for_signal(conn, wait, nap)? {
            Waited::Next(next, signal) => (conn, woken) = (next, signal),
            Waited::Failed(conn, e) => return Ok(Acquired::Failed(Box::new(conn), e)),
        }
    }
}

/// How long the next reply may be waited for: the response timeout, and for a call with a
/// deadline no later than two response timeouts past it, so that the requests made after
/// the wait (an unblock, the last attempt) cannot add up to more.
fn reply_wait(wait: &Wait<'_>) -> Duration {
    let rt = wait.response_timeout;
    match wait.deadline {
        Some(deadline) => rt.min(
            deadline
                .checked_add(rt * 2)
                .map_or(rt, |end| end.saturating_duration_since(Instant::now())),
        ),
        None => rt,
    }
}

/// Checks a connection out for a lock call. Waiting for a connection is bounded like
/// waiting for a reply, not by the deadline: the deadline is how long to wait for the lock,
/// and even a `try_` call needs one round trip.
pub(crate) fn checkout_for_lock(wait: &Wait<'_>) -> Result<Conn> {
    let pool_wait = wait.pool.connection_timeout();
    let checkout_wait = match wait.deadline {
        Some(deadline) => pool_wait.min(
            deadline
                .saturating_duration_since(Instant::now())
                .max(wait.response_timeout),
        ),
        None => pool_wait,
    };
    conn::checkout(
        wait.pool,
        Route::Key(wait.route),
        checkout_wait,
        wait.response_timeout,
    )
}

/// Sleeps in `BLPOP` on the signal lists for `nap` (at least 1 ms), then returns the
/// connection to go on with, and the wake-up if a signal ended the wait.
///
/// A `BLPOP` never takes the pool's last connection: whoever holds the lock may need one to
/// release it. When the pool has none to spare, the connection goes back to the pool for up
/// to [`EXHAUSTED_POOL_WAIT`] of the nap instead.
fn wait_for_signal(conn: Conn, wait: &Wait<'_>, nap: Duration) -> Result<Waited> {
    let nap = nap.max(MIN_TIMEOUT);
    if conn.node().exhausted() {
        drop(conn);
        log::trace!(
            "no connection to spare for a BLPOP; waiting {EXHAUSTED_POOL_WAIT:?} without one"
        );
        // Nothing to wait on without a connection: the one place where a waiter sleeps on
        // its own clock, and only while the pool is exhausted.
        thread::sleep(nap.min(EXHAUSTED_POOL_WAIT));
        return Ok(Waited::Next(checkout_for_lock(wait)?, None));
    }
    let mut conn = conn;
    let id = conn.client_id()?;
    let mut blpop = redis::cmd("BLPOP");
    blpop
        .arg(wait.signals)
        .arg(format!("{:.3}", nap.as_secs_f64()));
    // Only the reply waits; the command itself is written at once.
    conn.set_read_timeout(nap + BLPOP_GRACE)?;
    let since = Instant::now();
    let outcome = blpop
        .query::<Option<(String, String)>>(&mut *conn)
        .map(|popped| popped.map(|(list, value)| Woken { list, value, since }));
    // Later commands on this connection are ordinary ones again.
    conn.set_read_timeout(wait.response_timeout)?;
    match outcome {
        Ok(woken) => Ok(Waited::Next(conn, woken)),
        Err(e) if conn::reply_pending(&e) => {
            log::trace!(
                "BLPOP {:?} not answered {BLPOP_GRACE:?} after its {nap:?} timeout",
                wait.signals
            );
            match conn.spare(reply_wait(wait)) {
                Some(mut other) => {
                    match redis::cmd("CLIENT")
                        .arg("UNBLOCK")
                        .arg(id)
                        .query::<i64>(&mut *other)
                    {
                        Ok(_) => {}
                        // The server does not answer: neither connection is fit to go on
                        // with, and another request would only wait out its own timeout.
                        Err(e) if conn::reply_pending(&e) => {
                            conn.mark_broken();
                            let e = other.fail(e, wait.name, "CLIENT UNBLOCK");
                            return Ok(Waited::Failed(other, e));
                        }
                        // Without the right to unblock (ACL), the old connection finishes
                        // its BLPOP on the server's clock; whoever uses it next waits for
                        // that at most.
                        Err(e) => log::debug!("CLIENT UNBLOCK {id} failed: {e}"),
                    }
                    Ok(Waited::Next(other, None))
                }
                None => {
                    // Queued behind the BLPOP, the PING's reply comes once the server has
                    // ended it; redis-rs skips the BLPOP's late reply.
                    conn.set_read_timeout(reply_wait(wait))?;
                    redis::cmd("PING")
                        .query::<String>(&mut *conn)
                        .map_err(|e| conn.fail(e, wait.name, "PING"))?;
                    Ok(Waited::Next(conn, None))
                }
            }
        }
        Err(e) if redirect_of(&e).is_some() => {
            // The server ended the wait (its slot moved, it was demoted): nothing was
            // popped. Try again on a connection routed anew.
            log::debug!(
                "waiting for lock `{}` ended with {e}; trying again",
                wait.name
            );
            if redirect_of(&e) == Some(Redirect::Demoted) {
                conn.mark_broken();
            }
            drop(conn);
            Ok(Waited::Next(checkout_for_lock(wait)?, None))
        }
        Err(e) => Err(conn.fail(e, wait.name, "BLPOP")),
    }
}

/// With `wait_replicas`: waits up to `timeout` for `wanted` replicas to acknowledge what
/// was written on `conn` (`WAIT`); returns how many did.
pub(crate) fn await_replicas(
    conn: &mut Conn,
    wanted: usize,
    timeout: Duration,
    response_timeout: Duration,
    name: &str,
) -> Result<usize> {
    conn.set_read_timeout(timeout + response_timeout)?;
    let acked = redis::cmd("WAIT")
        .arg(wanted)
        .arg(crate::duration::millis(timeout))
        .query::<i64>(&mut **conn);
    conn.set_read_timeout(response_timeout)?;
    match acked {
        Ok(acked) => Ok(usize::try_from(acked).unwrap_or(0)),
        Err(e) => Err(conn.fail(e, name, "WAIT")),
    }
}
