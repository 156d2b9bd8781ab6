//! Pooled connections with bounded replies, and the blocking wait on a signal list.
//!
//! Sync `redis` connections have no read timeout unless one is set, so a stalled server
//! would hang every caller. Every connection this crate checks out gets a read and write
//! timeout; the value last set is remembered in the connection's r2d2 extensions so that a
//! hot path does not pay a `setsockopt` per command.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use r2d2::PooledConnection;

use crate::{Pool, Result};

pub(crate) type Conn = PooledConnection<redis::Client>;

/// The smallest timeout a socket accepts (zero means "none" to the OS and is refused).
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// How long past a `BLPOP`'s own timeout we wait for the server's reply before unblocking
/// it ourselves. Redis checks blocked clients' timeouts once per event-loop pass, which on
/// an idle server can be a whole `1/hz` (100 ms by default) late.
const BLPOP_GRACE: Duration = Duration::from_millis(5);

/// The read timeout currently set on a connection's socket, as we last set it.
struct ReadTimeout(Duration);

/// The write timeout currently set on a connection's socket, as we last set it.
struct WriteTimeout(Duration);

/// The server-side id of a connection (`CLIENT ID`), for `CLIENT UNBLOCK`.
struct ClientId(i64);

/// Identifies the pool a connection came from: connections are never shared between
/// pools, so locks acquired on connections with the same tag can be renewed together.
#[derive(Clone, Copy)]
struct PoolTag(u64);

static NEXT_POOL_TAG: AtomicU64 = AtomicU64::new(1);

/// Checks a connection out of `pool`, waiting at most `checkout_timeout`, with replies
/// bounded by `response_timeout`.
pub(crate) fn checkout(
    pool: &Pool,
    checkout_timeout: Duration,
    response_timeout: Duration,
) -> Result<Conn> {
    let mut conn = pool.get_timeout(checkout_timeout)?;
    set_timeout(&mut conn, response_timeout)?;
    Ok(conn)
}

/// Checks a connection out of `pool` for a lock call that waits until `deadline` (`None`:
/// forever). Waiting for a connection is bounded like waiting for a reply, not by the
/// deadline: the deadline is how long to wait for the lock, and even a `try_` call needs
/// one round trip.
pub(crate) fn checkout_for_lock(
    pool: &Pool,
    deadline: Option<Instant>,
    response_timeout: Duration,
) -> Result<Conn> {
    let checkout_timeout = match deadline {
        Some(deadline) => pool.connection_timeout().min(
            deadline
                .saturating_duration_since(Instant::now())
                .max(response_timeout),
        ),
        None => pool.connection_timeout(),
    };
    checkout(pool, checkout_timeout, response_timeout)
}

/// Whether a failed call's effect is unknown: no reply came (a timeout, a broken
/// connection), so Redis may have run it, or may still.
pub(crate) fn reply_lost(error: &redis::RedisError) -> bool {
    !matches!(
        error.kind(),
        redis::ErrorKind::Server(_) | redis::ErrorKind::UnexpectedReturnType
    )
}

/// [`reply_lost`] for this crate's errors: whether a call that failed with `error` may have
/// run on the server all the same (or may still).
pub(crate) fn may_have_run(error: &crate::Error) -> bool {
    matches!(error, crate::Error::Redis(e) if reply_lost(e))
}

/// Runs `commands` to undo a call whose reply was lost on `conn`: on `conn` itself while it
/// is open, so that Redis runs them after the lost call, however late that comes; else on
/// one fresh connection, since the lost call then ran already or never will. Stops at the
/// first failure.
pub(crate) fn undo_after_lost_reply(
    conn: &mut Conn,
    pool: &Pool,
    response_timeout: Duration,
    commands: &[redis::Cmd],
) -> Result<()> {
    let mut fresh = None;
    for command in commands {
        let target: &mut Conn = if redis::ConnectionLike::is_open(&**conn) {
            conn
        } else {
            match &mut fresh {
                Some(fresh) => fresh,
                None => fresh.insert(checkout(pool, pool.connection_timeout(), response_timeout)?),
            }
        };
        command.query::<redis::Value>(&mut **target)?;
    }
    Ok(())
}

/// Bounds the next reads and writes on `conn` by `timeout` (at least 1 ms).
pub(crate) fn set_timeout(conn: &mut Conn, timeout: Duration) -> Result<()> {
    set_read_timeout(conn, timeout)?;
    let timeout = timeout.max(MIN_TIMEOUT);
    if !matches!(PooledConnection::extensions(conn).get(), Some(WriteTimeout(t)) if *t == timeout) {
        conn.set_write_timeout(Some(timeout))?;
        PooledConnection::extensions_mut(conn).insert(WriteTimeout(timeout));
    }
    Ok(())
}

/// Bounds the next reads on `conn` by `timeout` (at least 1 ms).
pub(crate) fn set_read_timeout(conn: &mut Conn, timeout: Duration) -> Result<()> {
    let timeout = timeout.max(MIN_TIMEOUT);
    if !matches!(PooledConnection::extensions(conn).get(), Some(ReadTimeout(t)) if *t == timeout) {
        conn.set_read_timeout(Some(timeout))?;
        PooledConnection::extensions_mut(conn).insert(ReadTimeout(timeout));
    }
    Ok(())
}

/// The tag of the pool `conn` belongs to (see [`PoolTag`]).
pub(crate) fn pool_tag(conn: &mut Conn) -> u64 {
    if let Some(PoolTag(tag)) = PooledConnection::extensions(conn).get() {
        return *tag;
    }
    let tag = NEXT_POOL_TAG.fetch_add(1, Ordering::Relaxed);
    PooledConnection::extensions_mut(conn).insert(PoolTag(tag));
    tag
}

fn client_id(conn: &mut Conn) -> Result<i64> {
    if let Some(ClientId(id)) = PooledConnection::extensions(conn).get() {
        return Ok(*id);
    }
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut **conn)?;
    PooledConnection::extensions_mut(conn).insert(ClientId(id));
    Ok(id)
}

/// How long a waiter sleeps without a connection when the pool has none to spare, before
/// it tries again.
const EXHAUSTED_POOL_WAIT: Duration = Duration::from_millis(20);

/// Whether `pool` has no idle connection left and may not open another.
fn exhausted(pool: &Pool) -> bool {
    let state = pool.state();
    state.idle_connections == 0 && state.connections >= pool.max_size()
}

/// Sleeps in `BLPOP` on `signal_keys` (woken by a signal pushed to any of them) for `wait`
/// (at least 1 ms), then returns the connection to go on with.
///
/// The socket's read timeout always covers the wait. Because Redis may answer a timed-out
/// `BLPOP` up to a `1/hz` late, the wait is also kept on our clock: when the server has not
/// answered `BLPOP_GRACE` after `wait`, the connection is unblocked with `CLIENT UNBLOCK`
/// from a second connection, which is then returned instead (the first goes back to the
/// pool with its late reply marked to be skipped by redis-rs). Without a spare connection,
/// a `PING` on the first one waits out the server's own timeout instead. Either way a
/// signal that reached us in that moment is not lost, as long as the caller tries to
/// acquire once more, which it always does after a wait.
///
/// A `BLPOP` never takes the pool's last connection: whoever holds the lock may need one to
/// release it. When the pool has none to spare, the connection goes back to the pool for
/// up to [`EXHAUSTED_POOL_WAIT`] of the wait instead, and a new one is checked out after,
/// as for a lock call with `deadline` (see [`checkout_for_lock`]).
pub(crate) fn wait_for_signal(
    conn: Conn,
    pool: &Pool,
    signal_keys: &[&str],
    wait: Duration,
    deadline: Option<Instant>,
    response_timeout: Duration,
) -> Result<Conn> {
    let wait = wait.max(MIN_TIMEOUT);
    if exhausted(pool) {
        drop(conn);
        log::trace!(
            "no connection to spare for a BLPOP; waiting {EXHAUSTED_POOL_WAIT:?} without one"
        );
        // Nothing to wait on without a connection: this is the one place where a waiter
        // sleeps on its own clock, and only while the pool is exhausted.
        std::thread::sleep(wait.min(EXHAUSTED_POOL_WAIT));
        return checkout_for_lock(pool, deadline, response_timeout);
    }
    let mut conn = conn;
    let id = client_id(&mut conn)?;
    let mut blpop = redis::cmd("BLPOP");
    blpop
        .arg(signal_keys)
        .arg(format!("{:.3}", wait.as_secs_f64()));
    // Only the reply waits; the command itself is written at once.
    set_read_timeout(&mut conn, wait + BLPOP_GRACE)?;
    let outcome = blpop.query::<Option<(String, String)>>(&mut *conn);
    // Later commands on this connection are ordinary ones again.
    set_read_timeout(&mut conn, response_timeout)?;
    match outcome {
        Ok(_) => Ok(conn),
        Err(e) if e.is_timeout() => {
            log::trace!(
                "BLPOP {signal_keys:?} not answered {BLPOP_GRACE:?} after its {wait:?} timeout"
            );
            match pool.try_get() {
                Some(mut other) => {
                    set_timeout(&mut other, response_timeout)?;
                    if let Err(e) = redis::cmd("CLIENT")
                        .arg("UNBLOCK")
                        .arg(id)
                        .query::<i64>(&mut *other)
                    {
                        // Without the right to unblock (ACL), the old connection finishes
                        // its BLPOP on the server's clock; whoever uses it next waits for
                        // that at most.
                        log::debug!("CLIENT UNBLOCK {id} failed: {e}");
                    }
                    Ok(other)
                }
                None => {
                    // Queued behind the BLPOP, the PING's reply comes once the server has
                    // ended it; redis-rs skips the BLPOP's late reply.
                    redis::cmd("PING").query::<String>(&mut *conn)?;
                    Ok(conn)
                }
            }
        }
        Err(e) => Err(e.into()),
    }
}
