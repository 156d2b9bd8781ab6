//! Fair mode of a [`RedisMutex`]: waiters queue in order of arrival, across processes, and a
//! release hands the lock to the first live waiter inside the release script, so that the
//! waiter's wake-up is its grant: one round trip from the release to the next holder.
//!
//! A waiter's queue entry carries a deadline it refreshes while it waits (every
//! [`REFRESH`]); a release skips entries whose deadline passed, so a waiter that crashed,
//! was paused or gave up holds nobody up. A waiter that gives up (its deadline passed)
//! leaves the queue, and passes on a grant handed to it meanwhile.

use std::time::{Duration, Instant};

use super::{Granted, RedisMutex};
use crate::conn::{self, Conn, Route};
use crate::duration::millis;
use crate::keys::MutexKeys;
use crate::scripts::{Call, FAIR};
use crate::wait::{self, Acquired, Attempt, Wait, Woken};
use crate::{Error, Result};

/// How often a waiting fair waiter refreshes its queue entry: its `BLPOP` never waits
/// longer.
pub(super) const REFRESH: Duration = Duration::from_millis(500);

/// How long a queue entry lives unless refreshed: two refreshes, so one late refresh does
/// not drop a live waiter, while a dead one is skipped within a second.
const ENTRY_TTL: Duration = Duration::from_millis(1000);

/// What `fair.lua` returns for an acquire that found the lock free but handed it to a
/// waiter ahead of us.
const HANDED_AHEAD: i64 = -2;

/// One call of `fair.lua`.
pub(super) struct FairCall<'a> {
    pub(super) keys: &'a MutexKeys,
    pub(super) owner: &'a str,
    pub(super) waiter: &'a str,
    pub(super) expire_ms: u64,
    /// 0: do not queue.
    pub(super) entry_ms: u64,
    pub(super) marker_ms: u64,
    pub(super) signal_ms: u64,
    /// For a release: the fencing token of the grant released (0 otherwise).
    pub(super) token: u64,
}

impl FairCall<'_> {
    pub(super) fn call(&self, op: &str) -> Call {
        let mut call = FAIR.call();
        call.key(&self.keys.lock)
            .key(&self.keys.signal)
            .key(&self.keys.fencing)
            .key(&self.keys.grant)
            .key(&self.keys.queue)
            .key(&self.keys.waiters)
            .key(self.keys.wake(self.waiter))
            .arg(op)
            .arg(self.owner)
            .arg(self.waiter)
            .arg(self.expire_ms)
            .arg(self.entry_ms)
            .arg(self.marker_ms)
            .arg(&self.keys.wake_prefix)
            .arg(self.signal_ms)
            .arg(self.token);
        call
    }
}

impl RedisMutex {
    /// Takes the lock in fair mode, waiting until `deadline` (`None`: forever). `Ok(None)`
    /// when the deadline passed with the lock held elsewhere (having left the queue).
    pub(super) fn acquire_fair(&self, deadline: Option<Instant>) -> Result<Option<Granted>> {
        let waiter = format!("{:016x}", rand::random::<u64>());
        let wake = self.keys.wake(&waiter);
        let fair = self.fair_call(&waiter);
        let wait = Wait {
            pool: &self.pool,
            route: &self.keys.lock,
            // Our own list carries our grant; the signal list wakes us when a client that
            // is not fair releases (python-redis-lock, or a mutex without `fair`).
            signals: &[&wake, &self.keys.signal],
            deadline,
            response_timeout: self.options.response_timeout,
            name: &self.name,
            labels: &self.labels,
        };
        let acquired = wait::acquire(&wait, |conn, woken| {
            if let Some(Woken { value, since, .. }) = woken.filter(|w| w.list == wake) {
                // Handed over by a release: the wake-up is the grant.
                let token = value.parse().map_err(|_| Error::Protocol {
                    what: "a fair handoff",
                })?;
                return self.granted(conn, &waiter, since, token);
            }
            let sent_at = Instant::now();
            let will_wait = deadline.is_none_or(|deadline| sent_at < deadline);
            let call = FairCall {
                entry_ms: if will_wait { millis(ENTRY_TTL) } else { 0 },
                ..fair
            }
            .call("acquire");
            let (conn, (outcome, detail)) = conn::run_grant(
                &self.pool,
                Route::Key(&self.keys.lock),
                conn,
                self.options.response_timeout,
                (&self.name, "acquire"),
                |c| call.invoke::<(i64, i64)>(c),
                |c, _| self.leave(c, &fair, true),
            )?;
            match outcome {
                super::GRANTED => {
                    let token =
                        u64::try_from(detail).map_err(|_| Error::Protocol { what: "acquire" })?;
                    self.granted(conn, &waiter, sent_at, token)
                }
                super::WRONG_TYPE => Err(Error::WrongType {
                    name: self.name.to_string(),
                }),
                _ => {
                    let hint = match u64::try_from(detail) {
                        Ok(left) if detail != HANDED_AHEAD => {
                            Duration::from_millis(left.saturating_add(1))
                        }
                        _ => REFRESH,
                    };
                    Ok((conn, Attempt::Blocked(hint.min(REFRESH))))
                }
            }
        })?;
        match acquired {
            Acquired::Granted(granted) => Ok(Some(granted)),
            Acquired::TimedOut(mut conn) => {
                self.leave(&mut conn, &fair, false);
                Ok(None)
            }
            // A grant may have been handed to us meanwhile: pass it on, right behind the
            // request that was not answered.
            Acquired::Failed(mut conn, e) => {
                self.leave(&mut conn, &fair, true);
                Err(e)
            }
        }
    }

    /// Leaves the queue, passing on a grant made to us meanwhile (handed over, or made by an
    /// acquire whose reply was lost). After a lost reply (`undo`) it goes right behind the
    /// lost call on the same connection, without waiting for its own reply.
    fn leave(&self, conn: &mut Conn, fair: &FairCall<'_>, undo: bool) {
        let call = fair.call("leave");
        let left = if undo {
            conn::undo_after_lost_reply(
                conn,
                &self.pool,
                Route::Key(&self.keys.lock),
                self.options.response_timeout,
                &[call.eval()],
            )
        } else {
            call.invoke::<i64>(&mut **conn)
                .map(drop)
                .map_err(|e| conn.fail(e, &self.name, "leave"))
        };
        if let Err(e) = left {
            log::debug!(
                "lock `{}`: leaving the fair queue failed; the entry expires within \
                 {ENTRY_TTL:?}, a grant made to us with the lease: {e}",
                self.name
            );
        }
    }
}
