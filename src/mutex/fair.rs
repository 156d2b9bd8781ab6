//! Fair mode of a [`RedisMutex`]: waiters queue in order of arrival, across processes, and a
//! release hands the lock to the first live waiter inside the release script, so that the
//! waiter's wake-up is its grant: one round trip from the release to the next holder.
//!
//! A waiter's queue entry carries a deadline it refreshes while it waits (every
//! [`REFRESH`]); a release skips entries whose deadline passed, so a waiter that crashed,
//! was paused or gave up holds nobody up. A waiter that gives up (its deadline passed)
//! leaves the queue, and passes on a grant handed to it meanwhile.
//!
//! A grant counts only once the lock confirms it. A wake-up popped by the `BLPOP` that
//! follows an attempt was pushed after that attempt ran, and the attempt emptied the wake
//! list, so it is a grant made since: its lease counts from before the attempt was sent. A
//! grant whose wake-up was never read (the `BLPOP` had ended, or its reply was lost) is
//! found by the next attempt instead, which claims it only if the lock and its marker still
//! name it, and sets its expiry anew. A lock without expiry is handed over with a
//! provisional one, so that a waiter that died meanwhile does not hold it forever: its
//! wake-up is claimed with one more attempt, which lifts it.

use std::time::{Duration, Instant};

use super::RedisMutex;
use super::calls::{ENTRY_TTL, FairOp};
use crate::conn::{self, Conn, Undone};
use crate::held::NewGrant;
use crate::local::Turn;
use crate::options::AttemptId;
use crate::wait::{self, Acquired, Attempt};
use crate::{Error, Result};

/// How often a waiting fair waiter refreshes its queue entry: its `BLPOP` never waits
/// longer.
pub(super) const REFRESH: Duration = Duration::from_millis(500);

impl RedisMutex {
    /// Takes the lock in fair mode, waiting until `deadline` (`None`: forever). `Ok(None)`
    /// when the deadline passed with the lock held elsewhere (having left the queue).
    pub(super) fn acquire_fair(
        &self,
        deadline: Option<Instant>,
        turn: Option<&Turn>,
    ) -> Result<Option<NewGrant>> {
        let waiter = AttemptId::new();
        let waiter = waiter.as_str();
        // A release by a thread of this process may hand us the lock as it is.
        if let Some(turn) = turn {
            turn.waits_as(waiter);
        }
        let wake = self.keys().wake(waiter);
        // Our own list carries our grant; the signal list wakes us when a client that is
        // not fair releases (python-redis-lock, or a mutex without `fair`).
        let signals = [wake.as_str(), self.keys().signal.as_str()];
        // When the last attempt was sent: a grant that wakes us was made after it ran.
        let mut last_attempt: Option<Instant> = None;
        let acquired = wait::acquire(&self.wait(&signals, deadline), |mut conn, woken| {
            // Handed over by a release: the wake-up is the grant, unless a lock without
            // expiry was handed over with a provisional one, which an attempt claims.
            let handed = woken.as_ref().filter(|w| w.list == wake).map(|w| {
                let (token, kept) = match w.value.strip_suffix("|kept") {
                    Some(token) => (token, true),
                    None => (w.value.as_str(), false),
                };
                (token, kept || self.options.expire.is_some())
            });
            if let (Some((token, true)), Some(sent_at)) = (handed, last_attempt) {
                let token = token.parse().map_err(|_| Error::Protocol {
                    what: "a fair handoff",
                })?;
                let granted = self.granted(&mut conn, waiter, sent_at, token)?;
                return Ok((conn, Attempt::Granted(granted)));
            }
            last_attempt = Some(Instant::now());
            let will_wait = deadline.is_none_or(|deadline| Instant::now() < deadline);
            let call = self.calls.fair(
                waiter,
                FairOp::Acquire {
                    entry: will_wait.then_some(ENTRY_TTL),
                },
            );
            self.send_acquire(conn, (&call, None), waiter, (REFRESH, REFRESH), |c, _| {
                self.leave(c, waiter, true)
            })
        })?;
        match acquired {
            Acquired::Granted(granted) => Ok(Some(granted)),
            Acquired::TimedOut(conn) => {
                self.leave_on(conn.map(|conn| *conn), waiter);
                Ok(None)
            }
            // Its attempts never give way.
            Acquired::GaveWay(conn) => {
                self.leave_on(Some(*conn), waiter);
                Ok(None)
            }
            // A grant may have been handed to us meanwhile: pass it on, right behind the
            // request that was not answered.
            Acquired::Failed(mut conn, e) => {
                Err(self.leave(&mut conn, waiter, true).stranded().unwrap_or(e))
            }
        }
    }

    /// Leaves the queue on `conn`, or on a connection of its own for a waiter that had none
    /// (it was waiting for a turn to wait in Redis).
    fn leave_on(&self, conn: Option<Conn>, waiter: &str) {
        let conn = match conn {
            Some(conn) => Ok(conn),
            None => conn::checkout(
                &self.pool,
                &self.keys().lock,
                self.pool
                    .connection_timeout()
                    .min(self.options.response_timeout),
                self.options.response_timeout,
            ),
        };
        match conn {
            Ok(mut conn) => drop(self.leave(&mut conn, waiter, false)),
            Err(e) => self.leave_failed(&e),
        }
    }

    /// Leaves the queue, passing on a grant made to us meanwhile (handed over, or made by an
    /// acquire whose reply was lost). After a lost reply (`undo`) it goes right behind the
    /// lost call on the same connection, without waiting for its own reply (see
    /// [`conn::undo_after_lost_reply`]); [`Undone::Failed`] carries the error of a failover
    /// that moved the lock before the leave could reach it.
    fn leave(&self, conn: &mut Conn, waiter: &str, undo: bool) -> Undone {
        let call = self.calls.fair(waiter, FairOp::Leave);
        let left = if undo {
            conn::undo_after_lost_reply(
                conn,
                &self.pool,
                (&self.keys().lock, &self.name),
                self.options.response_timeout,
                &[call.eval()],
            )
        } else {
            call.invoke::<i64>(&mut **conn)
                .map(|_| Undone::Answered)
                .map_err(|e| conn.fail(e, &self.name, "leave"))
        };
        left.unwrap_or_else(|e| {
            self.leave_failed(&e);
            Undone::Failed(matches!(e, Error::Stranded { .. }).then_some(e))
        })
    }

    fn leave_failed(&self, e: &Error) {
        log::warn!(
            "lock `{}`: leaving the fair queue failed ({e}); the entry expires within \
             {ENTRY_TTL:?}, and a grant handed to us meanwhile is held by nobody {}",
            self.name,
            wait::held_by_nobody_until(self.options.expire)
        );
    }
}
