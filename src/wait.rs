//! The one wait loop every lock that waits in Redis uses: try the acquire script; while the
//! lock is held, sleep in `BLPOP` on its signal lists, woken by a release, until the
//! holder's lease may have run out or the caller's deadline passes; then try again.
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
//! none to spare, waited out with a `PING` behind the `BLPOP`. Either way the `BLPOP` may
//! have popped something whose reply is never read: a lock kind whose wake-ups carry grants
//! (fair mode) finds such a grant again with its next attempt.

use std::time::{Duration, Instant};

use crate::conn::{self, Conn, Undone};
use crate::held::NewGrant;
use crate::metrics::{self, Labels};
use crate::pool::{MIN_TIMEOUT, Redirect, Turn, redirect_of};
use crate::scripts::Resume;
use crate::{Pool, Result};

/// How long past a `BLPOP`'s own timeout we wait for the server's reply before unblocking
/// it ourselves. An idle server answers on its next tick, up to `1/hz` late, so waiting
/// longer buys nothing: every millisecond here is a millisecond of `try_lock_for` lateness.
const BLPOP_GRACE: Duration = Duration::from_millis(1);

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
    /// No attempt: this thread gives its turn to wait in Redis up to another of its
    /// process (a semaphore's waiter that wants fewer permits).
    GiveWay,
}

/// How the loop ended.
pub(crate) enum Acquired<T> {
    Granted(T),
    /// The deadline passed with the lock held elsewhere; the connection, if the waiter had
    /// one then (it has none while it waits for a turn), is given back for any clean-up the
    /// caller owes.
    TimedOut(Option<Box<Conn>>),
    /// The server stopped answering during the wait. The connection, open with a request's
    /// reply outstanding, is given back so that the caller's clean-up goes right behind
    /// that request, without waiting for an answer (see [`conn::undo_after_lost_reply`]).
    Failed(Box<Conn>, crate::Error),
    /// The attempt gave its turn up ([`Attempt::GiveWay`]); the connection is given back
    /// for the clean-up the caller owes.
    GaveWay(Box<Conn>),
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
    /// Wait in Redis this long before the first attempt (at most [`MAX_WAIT`]): a grant
    /// of this process stands until then at least, so the attempt would fail. A release or
    /// a reset that comes first ends the wait.
    pub(crate) first_nap: Option<Duration>,
}

/// A wake-up: the list that was pushed to, and what was pushed. The `BLPOP` that popped it
/// ran right after the attempt before it, on the same connection: what it popped was pushed
/// after that attempt ran.
#[derive(Debug)]
pub(crate) struct Woken {
    pub(crate) list: String,
    pub(crate) value: String,
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
    let mut turn: Option<Turn> = None;
    let mut skip_attempt = wait.first_nap;
    loop {
        if !conn::serves(&conn, wait.pool, wait.route) {
            // The server was demoted (or the slot moved) while we waited on it: an attempt
            // goes to the key's primary.
            conn.mark_broken();
            drop(conn);
            conn = checkout_for_lock(wait)?;
        }
        conn.set_read_timeout(reply_wait(wait))?;
        let mut nap = match skip_attempt.take() {
            Some(nap) => nap.min(MAX_WAIT),
            None => {
                let (back, found) = attempt(conn, woken.take())?;
                conn = back;
                match found {
                    Attempt::Granted(granted) => {
                        metrics::acquired(wait.labels, started.elapsed(), contended);
                        return Ok(Acquired::Granted(granted));
                    }
                    Attempt::Blocked(hint) => hint.min(MAX_WAIT),
                    Attempt::GiveWay => return Ok(Acquired::GaveWay(Box::new(conn))),
                }
            }
        };
        contended = true;
        if let Some(deadline) = wait.deadline {
            let now = Instant::now();
            if now >= deadline {
                timed_out(wait, started);
                return Ok(Acquired::TimedOut(Some(Box::new(conn))));
            }
            nap = nap.min(deadline - now);
        }
        let blocking = conn.node().blocking.clone();
        if turn.as_ref().is_none_or(|turn| !turn.is_of(&blocking)) {
            turn = blocking.try_enter();
        }
        if turn.is_none() {
            // Every connection that may wait is waiting: wait in the process for a turn,
            // without a connection, then try again (time has passed).
            drop(conn);
            log::trace!("lock `{}`: waiting for a turn to wait in Redis", wait.name);
            match blocking.enter(wait.deadline) {
                Some(granted) => turn = Some(granted),
                None => {
                    timed_out(wait, started);
                    return Ok(Acquired::TimedOut(None));
                }
            }
            conn = checkout_for_lock(wait)?;
            continue;
        }
        log::trace!("lock `{}` is held; waiting up to {nap:?}", wait.name);
        match wait_for_signal(conn, wait, nap)? {
            Waited::Next(next, signal) => (conn, woken) = (next, signal),
            Waited::Failed(conn, e) => return Ok(Acquired::Failed(Box::new(conn), e)),
        }
        // Others wait for a turn: give this one up, and queue for it again if need be.
        if woken.is_none() && turn.as_ref().is_some_and(Turn::contended) {
            turn = None;
        }
    }
}

/// Counts a call that could wait and waited in vain (not a mere `try_lock`).
fn timed_out(wait: &Wait<'_>, started: Instant) {
    if wait.deadline.is_some_and(|deadline| deadline > started) {
        metrics::timed_out(wait.labels);
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
fn checkout_for_lock(wait: &Wait<'_>) -> Result<Conn> {
    let pool_wait = wait.pool.connection_timeout();
    let checkout_wait = match wait.deadline {
        Some(deadline) => pool_wait.min(
            deadline
                .saturating_duration_since(Instant::now())
                .max(wait.response_timeout),
        ),
        None => pool_wait,
    };
    conn::checkout(wait.pool, wait.route, checkout_wait, wait.response_timeout)
}

/// Sleeps in `BLPOP` on the signal lists for `nap` (at least 1 ms), then returns the
/// connection to go on with, and the wake-up if a signal ended the wait. The caller holds a
/// turn of the connection's server.
fn wait_for_signal(mut conn: Conn, wait: &Wait<'_>, nap: Duration) -> Result<Waited> {
    let nap = nap.max(MIN_TIMEOUT);
    let id = conn.client_id()?;
    let mut blpop = redis::cmd("BLPOP");
    blpop
        .arg(wait.signals)
        .arg(format!("{:.3}", nap.as_secs_f64()));
    // Only the reply waits; the command itself is written at once.
    conn.set_read_timeout(nap + BLPOP_GRACE)?;
    let outcome = blpop
        .query::<Option<(String, String)>>(&mut *conn)
        .map(|popped| popped.map(|(list, value)| Woken { list, value }));
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
                    // ended it; redis-rs skips the BLPOP's late reply (and whatever it
                    // popped: the next attempt finds a grant that came in it).
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
        // The connection broke (a restart, a proxy that cut it): the lock may be free now,
        // since a restart without persistence frees every lock. Try again on another.
        Err(e) if conn::reply_lost(&e) => {
            log::debug!(
                "waiting for lock `{}` ended with a broken connection ({e}); trying again",
                wait.name
            );
            conn.mark_broken();
            drop(conn);
            Ok(Waited::Next(checkout_for_lock(wait)?, None))
        }
        Err(e) => Err(conn.fail(e, wait.name, "BLPOP")),
    }
}

/// With `wait_replicas`: waits up to `timeout` for `wanted` replicas to acknowledge what
/// was written on `conn` (`WAIT`); returns how many did.
fn await_replicas(
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

/// How long to wait before trying again when the lock is held by a lease with `left` to
/// run (`None`: no expiry): until just after it runs out, in case its holder crashed.
pub(crate) fn until_expiry(left: Option<Duration>) -> Duration {
    left.map_or(MAX_WAIT, |left| left + MIN_TIMEOUT)
}

/// With [`wait_replicas`](crate::RedisMutexBuilder::wait_replicas): waits for the replicas
/// to acknowledge the grant just made on `conn`, and when too few do (or the wait fails),
/// undoes it with `undo` (given why) and fails.
///
/// # Errors
///
/// [`Error::NotReplicated`](crate::Error::NotReplicated), or the `WAIT`'s own error.
pub(crate) fn replicate(
    conn: &mut Conn,
    wait_replicas: Option<(usize, Duration)>,
    response_timeout: Duration,
    name: &str,
    undo: impl FnOnce(&mut Conn, &str) -> Undone,
) -> Result<()> {
    let Some((wanted, timeout)) = wait_replicas else {
        return Ok(());
    };
    match await_replicas(conn, wanted, timeout, response_timeout, name) {
        Ok(acked) if acked >= wanted => Ok(()),
        Ok(acked) => Err(undo(conn, "too few replicas acknowledged it")
            .stranded()
            .unwrap_or(crate::Error::NotReplicated { acked, wanted })),
        Err(e) => Err(undo(conn, &e.to_string()).stranded().unwrap_or(e)),
    }
}

/// Sends `commands` to undo a grant that must not stand (its reply was lost, or too few
/// replicas have it), right behind the call that made it (see
/// [`conn::undo_after_lost_reply`]). When that fails, a grant may be held by nobody until it
/// expires: that is logged at WARN, naming the lock (`kind` and `name`), why it was undone,
/// and how long it may stand (`expire`). A failover that moved the lock before the undo
/// could reach it is returned ([`Error::Stranded`](crate::Error::Stranded)), for the call
/// to report instead of its own error.
pub(crate) fn undo(
    conn: &mut Conn,
    pool: &Pool,
    route: &str,
    response_timeout: Duration,
    commands: &[redis::Cmd],
    (kind, name, why): (&str, &str, &str),
    expire: Option<Duration>,
) -> Undone {
    match conn::undo_after_lost_reply(conn, pool, (route, name), response_timeout, commands) {
        Ok(undone) => undone,
        Err(e) => {
            log::warn!(
                "{kind} `{name}`: a grant had to be undone ({why}) and undoing it failed \
                 ({e}); if Redis granted it, it is held by nobody {}",
                held_by_nobody_until(expire)
            );
            Undone::Failed(matches!(e, crate::Error::Stranded { .. }).then_some(e))
        }
    }
}

/// Sends `call`, the take-over of a grant named by a lock handle (`resume.lua`,
/// `rwlock_resume.lua`), on a connection for the lock (`wait.route`), undone with `undo`
/// when its reply is lost, then waits for `wait_replicas`. The grant taken over and the
/// lease its server had left (`None`: no expiry).
///
/// # Errors
///
/// [`Error::LockLost`](crate::Error::LockLost) when the lock no longer holds that grant;
/// `wrong_type()` when a key holds another type; the request's, or `WAIT`'s, own.
pub(crate) fn take_over(
    wait: &Wait<'_>,
    call: &crate::scripts::Call,
    wait_replicas: Option<(usize, Duration)>,
    undo: impl Fn(&mut Conn, &str) -> Undone,
    wrong_type: impl FnOnce() -> crate::Error,
) -> Result<(NewGrant, Option<Duration>)> {
    let rt = wait.response_timeout;
    let conn = conn::checkout(
        wait.pool,
        wait.route,
        wait.pool.connection_timeout().min(rt),
        rt,
    )?;
    let sent_at = Instant::now();
    let (mut conn, reply) = conn::run_grant(
        wait.pool,
        wait.route,
        conn,
        rt,
        (wait.name, "resume"),
        |c| call.invoke::<Resume>(c),
        |c, e| undo(c, &e.to_string()),
    )?;
    let (token, left) = match reply {
        Resume::Taken { token, left } => (token, left),
        Resume::Gone => {
            return Err(crate::Error::LockLost {
                name: wait.name.to_owned(),
            });
        }
        Resume::WrongType => return Err(wrong_type()),
    };
    replicate(&mut conn, wait_replicas, rt, wait.name, undo)?;
    Ok((NewGrant::on(&conn, wait.pool, sent_at, token), left))
}

/// Until when a grant that nobody holds stands.
pub(crate) fn held_by_nobody_until(expire: Option<Duration>) -> String {
    match expire {
        Some(expire) => format!("until it expires (within {expire:?})"),
        None => "until it is reset (it has no expiry)".to_owned(),
    }
}
