//! The one acquire driver. Every lock kind that waits in Redis (the mutex in either mode,
//! the read-write lock, the semaphore) takes its grants through [`acquire`], as tokio's
//! Mutex, RwLock and Semaphore all stand on one `batch_semaphore`.
//!
//! A kind says what is its own in a [`Request`]: the attempt call, what a reply means, the
//! calls that undo an attempt and withdraw a waiter, the lists it waits on. The driver owns
//! the rest, once for every kind: sending each attempt within its deadline, undoing an
//! attempt whose reply was lost, waiting for replicas, the grant, the wait in Redis between
//! attempts (`wait.rs`), and withdrawing a waiter that stops waiting, whether its deadline
//! passed, it gave way, the server stopped answering or an attempt was refused.
//!
//! A call that waits until `until` returns by `until` plus one response timeout: every
//! request it sends is due within one response timeout and never after that end
//! ([`Deadline::of_request`]), a withdrawal after the end is sent without waiting for its
//! reply, and only `wait_replicas` (its own timeout) or an undo that a failover sends to
//! a new primary adds to it.

use std::time::{Duration, Instant};

use redis::FromRedisValue;

use crate::conn::{self, Conn, Undone};
use crate::error::{Error, Result};
use crate::lease::NewGrant;
use crate::metrics::{self, Labels};
use crate::options::LockOptions;
use crate::pool::Pool;
use crate::scripts::{Call, Resume};
use crate::time::Deadline;
use crate::wait::{Waited, Waiting, Woken};

/// How often a waiter that is queued in Redis (fair mode, a read-write lock, a semaphore)
/// tries again at least, which refreshes its entry: an entry lives [`ENTRY_TTL`], so that
/// a waiter that died, was paused or gave up holds nobody up for longer.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(500);

/// How long a waiter's entry lives unless refreshed: three heartbeats, so that one late
/// refresh does not drop a live waiter.
pub(crate) const ENTRY_TTL: Duration = Duration::from_millis(1500);

/// The longest a waiter that is not queued sleeps before trying again: what a lost wake-up
/// costs at most.
pub(crate) const MAX_WAIT: Duration = Duration::from_millis(1000);

/// What the driver needs of a lock, whatever its kind.
pub(crate) struct Lock<'a> {
    pub(crate) pool: &'a Pool,
    /// A key of the lock: routes its requests.
    pub(crate) route: &'a str,
    /// The lock's name (a read-write lock's path), for errors and logs.
    pub(crate) name: &'a str,
    /// What it is called in logs: "lock", "write lock", "semaphore", ...
    pub(crate) kind: &'static str,
    pub(crate) options: &'a LockOptions,
    pub(crate) labels: &'a Labels,
}

/// What an attempt found.
pub(crate) enum Found<E> {
    /// Ours, with the fencing token (0 for a read lease) and what else the kind's grant
    /// carries.
    Granted { token: u64, extra: E },
    /// Not now: try again once woken, or after at most this long (the holder's remaining
    /// lease, say).
    Blocked(Duration),
}

/// How an acquire call ended.
pub(crate) enum Outcome<E> {
    Granted(NewGrant, E),
    /// The deadline passed first.
    TimedOut,
    /// It gave its turn to wait in Redis up to another thread of its process (see
    /// [`Request::give_way`]); it takes its turn again.
    GaveWay,
}

/// What one lock kind says about its acquire requests; [`acquire`] does the rest.
pub(crate) trait Request {
    /// The reply of an attempt.
    type Reply: FromRedisValue;
    /// What a grant carries besides its token (a semaphore's: the capacity it was made
    /// under).
    type Extra;
    /// Whether a refused attempt that will wait leaves an entry in Redis (a waiter's place),
    /// which must be refreshed every [`HEARTBEAT`] and withdrawn when it stops waiting.
    const QUEUES: bool;
    /// Whether a release may hand it a grant while it waits (fair mode): its withdrawal then
    /// passes that grant on.
    const HANDED_OVER: bool = false;

    /// The lists a release pushes to, on which it waits.
    fn signals(&self) -> Vec<String>;

    /// The next attempt's call; `queue`: refused, it will wait (and, if it
    /// [queues](Self::QUEUES), keeps its place for [`ENTRY_TTL`]).
    fn attempt(&mut self, queue: bool) -> Call;

    /// What the reply of the attempt means.
    fn read(&mut self, reply: Self::Reply) -> Result<Found<Self::Extra>>;

    /// A grant that came with a wake-up (a fair handover), if this one is.
    fn woken(&mut self, _woken: &Woken) -> Result<Option<(u64, Self::Extra)>> {
        Ok(None)
    }

    /// What undoes the last attempt when its reply was lost, or its grant must not stand:
    /// its grant and its entry, if Redis made them, and nothing else's. The undo notes the
    /// ids it names as done, so that a copy of the attempt that comes late (held in a proxy
    /// or a socket buffer) is refused, or its grant taken back by the next attempt of
    /// anyone.
    fn undo(&self) -> Vec<Call>;

    /// Once an undo was sent: the next attempt goes under new ids (an id noted as done is
    /// never sent again), and, if they change, new [`signals`](Self::signals).
    fn undone(&mut self);

    /// What takes its entry out of the queue, passing on a grant handed to it meanwhile
    /// (for a request that [queues](Self::QUEUES)).
    fn withdraw(&self) -> Option<Call>;

    /// How long to wait before the first attempt, when it would surely fail (a grant of
    /// this process stands until then).
    fn first_nap(&self) -> Option<Duration> {
        None
    }

    /// Whether to give its turn to wait in Redis up to another thread of its process.
    fn give_way(&self) -> bool {
        false
    }
}

/// Takes `lock` for `request`, waiting until `until` (`None`: as long as it takes); see
/// the module docs.
///
/// # Errors
///
/// A request's failure ([`Error::Unreachable`], [`Error::Timeout`], ...), the error its
/// kind reads in a reply (`WrongType`, ...), [`Error::NotReplicated`], [`Error::Stranded`];
/// a waiter's entry is withdrawn first.
pub(crate) fn acquire<R: Request>(
    lock: &Lock<'_>,
    request: &mut R,
    until: Option<Instant>,
) -> Result<Outcome<R::Extra>> {
    let rt = lock.options.response_timeout;
    let mut waiting = Waiting::new(
        lock.pool,
        lock.route,
        lock.name,
        request.signals(),
        until,
        rt,
    );
    let mut entry = Entry::default();
    let outcome = drive(lock, request, &mut waiting, until, &mut entry);
    // Whatever ended the call, an entry left in the queue is withdrawn: a waiting writer
    // would hold readers back, a fair waiter could be handed the lock.
    if outcome.is_err() && entry.queued && !entry.settled {
        withdraw(lock, request, None, &waiting);
    }
    outcome
}

/// What became of a request's entry in Redis.
#[derive(Default)]
struct Entry {
    /// An attempt may have left one.
    queued: bool,
    /// Withdrawn (or undone) already: nothing is left to withdraw.
    settled: bool,
}

/// [`acquire`]'s loop.
fn drive<R: Request>(
    lock: &Lock<'_>,
    request: &mut R,
    waiting: &mut Waiting<'_>,
    until: Option<Instant>,
    entry: &mut Entry,
) -> Result<Outcome<R::Extra>> {
    let started = Instant::now();
    let mut conn = waiting.checkout()?;
    let mut woken: Option<Woken> = None;
    // When the last attempt was sent.
    let mut last_sent = None::<Instant>;
    let mut nap = request.first_nap();
    // Made to wait: for a sibling's lease, or by a refused attempt.
    let mut contended = nap.is_some();
    loop {
        if nap.is_none() {
            if entry.queued && request.give_way() {
                entry.settled = true;
                withdraw(lock, request, Some(conn), waiting);
                return Ok(Outcome::GaveWay);
            }
            // A grant that came with the wake-up, made after the last attempt ran: its lease
            // counts from before that attempt was sent.
            let handed = match (woken.take(), last_sent) {
                (Some(w), Some(_)) => request.woken(&w)?,
                _ => None,
            };
            let found = match handed {
                Some((token, extra)) => Found::Granted { token, extra },
                None => {
                    conn = waiting.serving(conn)?;
                    let queue = until.is_none_or(|until| Instant::now() < until);
                    let sent_at = Instant::now();
                    entry.queued |= R::QUEUES && queue;
                    let (back, found) = attempt(lock, request, conn, waiting, queue, entry)?;
                    conn = back;
                    last_sent = Some(sent_at);
                    found
                }
            };
            match found {
                Found::Granted { token, extra } => {
                    let sent_at = last_sent.unwrap_or(started);
                    // A grant that must not stand is undone with its entry.
                    entry.settled = true;
                    replicate(lock, &request.undo(), &mut conn)?;
                    log::debug!("acquired {} `{}`", lock.kind, lock.name);
                    metrics::acquired(lock.labels, started.elapsed(), contended || entry.queued);
                    return Ok(Outcome::Granted(
                        NewGrant::on(&conn, lock.pool, sent_at, token),
                        extra,
                    ));
                }
                Found::Blocked(hint) => {
                    contended = true;
                    nap = Some(hint);
                }
            }
        }
        let mut pause = nap.take().unwrap_or(MAX_WAIT).min(MAX_WAIT);
        if R::QUEUES {
            pause = pause.min(HEARTBEAT);
        }
        if let Some(until) = until {
            let now = Instant::now();
            if now >= until {
                timed_out(lock, until, started);
                if entry.queued {
                    entry.settled = true;
                    withdraw(lock, request, Some(conn), waiting);
                }
                return Ok(Outcome::TimedOut);
            }
            pause = pause.min(until - now);
        }
        match waiting.sleep(conn, pause)? {
            Waited::Next(next, signal) => (conn, woken) = (next, signal),
            Waited::TimedOut => {
                timed_out(lock, until.unwrap_or(started), started);
                if entry.queued {
                    entry.settled = true;
                    withdraw(lock, request, None, waiting);
                }
                return Ok(Outcome::TimedOut);
            }
            // A grant may have been handed to us meanwhile: the withdrawal passes it on,
            // right behind the request that was not answered.
            Waited::Failed(mut conn, e) => {
                entry.settled = true;
                let withdrawal: Vec<Call> = request.withdraw().into_iter().collect();
                let stranded = entry
                    .queued
                    .then(|| undo_because(lock, &withdrawal, &mut conn, &e.to_string()))
                    .and_then(Undone::stranded);
                return Err(stranded.unwrap_or(e));
            }
        }
    }
}

/// Sends one attempt of `request` on `conn`, undone (with its entry) when its reply is
/// lost, and reads what it found.
fn attempt<R: Request>(
    lock: &Lock<'_>,
    request: &mut R,
    mut conn: Conn,
    waiting: &mut Waiting<'_>,
    queue: bool,
    entry: &mut Entry,
) -> Result<(Conn, Found<R::Extra>)> {
    // The request and its call, shared by the send (which sends it again after an undo, as
    // a new attempt) and the undo.
    let sending = std::cell::RefCell::new((&mut *request, None::<Call>));
    let mut undone = false;
    conn.answer_by(waiting.request())?;
    let sent = conn::run_grant(
        lock.pool,
        lock.route,
        conn,
        lock.name,
        "acquire",
        |c| {
            let (request, call) = &mut *sending.borrow_mut();
            call.get_or_insert_with(|| request.attempt(queue))
                .invoke::<R::Reply>(c)
        },
        |c, e| {
            let (request, call) = &mut *sending.borrow_mut();
            let done = undo_because(lock, &request.undo(), c, &e.to_string());
            request.undone();
            *call = None;
            undone = true;
            done
        },
    );
    if undone {
        waiting.signals = request.signals();
    }
    // An attempt that got no answer was undone with its entry; one that was answered, or
    // never sent, leaves its entry to withdraw.
    let (conn, reply) = sent.inspect_err(|e| {
        entry.settled |= e.is_timeout() || matches!(e, Error::Stranded { .. });
    })?;
    Ok((conn, request.read(reply)?))
}

/// Withdraws `request`'s entry, if it has one: on `conn` if given (else on a connection of
/// its own), within what is left of the call's bound, or, once that has passed, sent
/// without waiting for its reply. Best effort: an entry left behind expires within
/// [`ENTRY_TTL`]; a grant handed to it meanwhile (fair mode) stands until it expires.
fn withdraw<R: Request>(lock: &Lock<'_>, request: &R, conn: Option<Conn>, waiting: &Waiting<'_>) {
    let Some(call) = request.withdraw() else {
        return;
    };
    let deadline = waiting.request();
    let conn = match conn {
        Some(conn) => Ok(conn),
        None => conn::checkout(lock.pool, lock.route, deadline),
    };
    let left = conn.and_then(|mut conn| {
        if deadline.passed() {
            return conn::send_unwaited(&mut conn, &[call.eval()]);
        }
        conn.answer_by(deadline)?;
        call.invoke::<redis::Value>(&mut conn)
            .map(drop)
            .map_err(|e| conn.fail(e, lock.name, "withdraw"))
    });
    match left {
        Err(e) if R::HANDED_OVER => log::warn!(
            "{} `{}`: withdrawing a waiter failed ({e}); its entry expires within \
             {ENTRY_TTL:?}, and a grant handed to it meanwhile is held by nobody {}",
            lock.kind,
            lock.name,
            held_by_nobody_until(lock.options.expire)
        ),
        Err(e) => log::debug!(
            "{} `{}`: withdrawing a waiter failed; its entry expires within {ENTRY_TTL:?}: {e}",
            lock.kind,
            lock.name
        ),
        Ok(()) => {}
    }
}

/// Counts a call that could wait and waited in vain (not a mere `try_lock`).
fn timed_out(lock: &Lock<'_>, until: Instant, started: Instant) {
    if until > started {
        metrics::timed_out(lock.labels);
    }
}

/// With `wait_replicas`: waits for the replicas to acknowledge the grant just made on
/// `conn`, and when too few do (or the wait fails), undoes it and fails.
///
/// # Errors
///
/// [`Error::NotReplicated`], or the `WAIT`'s own error (or the undo's, a grant stranded by a
/// failover).
fn replicate(lock: &Lock<'_>, undo_calls: &[Call], conn: &mut Conn) -> Result<()> {
    let Some((wanted, timeout)) = lock.options.wait_replicas else {
        return Ok(());
    };
    conn.set_read_timeout(timeout + lock.options.response_timeout)?;
    let acked = redis::cmd("WAIT")
        .arg(wanted)
        .arg(crate::time::millis(timeout))
        .query::<i64>(&mut **conn);
    let why = match acked {
        Ok(acked) if usize::try_from(acked).unwrap_or(0) >= wanted => return Ok(()),
        Ok(acked) => Error::NotReplicated {
            acked: usize::try_from(acked).unwrap_or(0),
            wanted,
        },
        Err(e) => conn.fail(e, lock.name, "WAIT"),
    };
    let undone = undo_because(lock, undo_calls, conn, &why.to_string());
    Err(undone.stranded().unwrap_or(why))
}

/// Sends `calls` to undo a grant that must not stand (its reply was lost, or too few
/// replicas have it), right behind the call that made it (see
/// [`conn::undo_after_lost_reply`]). When that fails, a grant may be held by nobody until
/// it expires: that is logged at WARN, naming the lock, why it was undone, and how long it
/// may stand. A failover that moved the lock before the undo could reach it comes back as
/// [`Error::Stranded`], for the call to report instead of its own error.
fn undo_because(lock: &Lock<'_>, calls: &[Call], conn: &mut Conn, why: &str) -> Undone {
    let commands: Vec<redis::Cmd> = calls.iter().map(Call::eval).collect();
    match conn::undo_after_lost_reply(conn, lock.pool, lock.route, lock.name, &commands) {
        Ok(undone) => undone,
        Err(e) => {
            log::warn!(
                "{} `{}`: a grant had to be undone ({why}) and undoing it failed ({e}); if \
                 Redis granted it, it is held by nobody {}",
                lock.kind,
                lock.name,
                held_by_nobody_until(lock.options.expire)
            );
            Undone::Failed(matches!(e, Error::Stranded { .. }).then_some(e))
        }
    }
}

/// Sends `call`, the take-over of a grant named by a lock handle, undone with `undo_calls`
/// when its reply is lost, then waits for `wait_replicas`: the grant taken over, and the
/// lease its server had left (`None`: no expiry). One request, within one response timeout.
///
/// # Errors
///
/// [`Error::HandleStale`] when the lock no longer holds that grant; `wrong_type()` when a key
/// holds another type; the request's, or `WAIT`'s, own.
pub(crate) fn take_over(
    lock: &Lock<'_>,
    call: &Call,
    undo_calls: &[Call],
    wrong_type: impl FnOnce() -> Error,
) -> Result<(NewGrant, Option<Duration>)> {
    let deadline = Deadline::of_request(lock.options.response_timeout, None);
    let conn = conn::checkout(lock.pool, lock.route, deadline)?;
    let sent_at = Instant::now();
    let (mut conn, reply) = conn::run_grant(
        lock.pool,
        lock.route,
        conn,
        lock.name,
        "resume",
        |c| call.invoke::<Resume>(c),
        |c, e| undo_because(lock, undo_calls, c, &e.to_string()),
    )?;
    let (token, left) = match reply {
        Resume::Taken { token, left } => (token, left),
        Resume::Gone => {
            return Err(Error::HandleStale {
                name: lock.name.to_owned(),
            });
        }
        Resume::WrongType => return Err(wrong_type()),
    };
    replicate(lock, undo_calls, &mut conn)?;
    Ok((NewGrant::on(&conn, lock.pool, sent_at, token), left))
}

/// How long to wait before trying again when the lock is held by a lease with `left` to
/// run (`None`: no expiry): until just after it runs out, in case its holder crashed.
pub(crate) fn until_expiry(left: Option<Duration>) -> Duration {
    left.map_or(MAX_WAIT, |left| left + crate::pool::MIN_TIMEOUT)
}

/// Until when a grant that nobody holds stands.
fn held_by_nobody_until(expire: Option<Duration>) -> String {
    match expire {
        Some(expire) => format!("until it expires (within {expire:?})"),
        None => "until it is reset (it has no expiry)".to_owned(),
    }
}
