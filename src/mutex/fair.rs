//! Fair mode of a [`RedisMutex`]: waiters queue in order of arrival, across processes, and a
//! release hands the lock to the first live waiter inside the release script, so that the
//! waiter's wake-up is its grant: one round trip from the release to the next holder.
//!
//! A waiter's queue entry carries a deadline it refreshes while it waits (every
//! [`HEARTBEAT`]); a release skips entries whose deadline passed, so a waiter that crashed,
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

use super::RedisMutex;
use super::calls::FairOp;
use crate::acquire::{self, ENTRY_TTL, Found, HEARTBEAT, Request};
use crate::error::{Error, Result};
use crate::options::AttemptId;
use crate::scripts::{Acquire, Call};
use crate::wait::Woken;

/// An acquire in fair mode: one waiter id for the whole call, its queue entry refreshed by
/// each attempt, and its own wake list, which carries a grant handed over to it.
pub(super) struct Fair<'a> {
    mutex: &'a RedisMutex,
    waiter: AttemptId,
    /// The waiter's own list: a release pushes the grant it hands over there.
    wake: String,
    /// No attempt sent yet: the waiter has no entry or wake list to clear.
    first: bool,
}

impl<'a> Fair<'a> {
    /// An acquire of `mutex`.
    pub(super) fn new(mutex: &'a RedisMutex) -> Fair<'a> {
        let waiter = AttemptId::new();
        Fair {
            wake: mutex.keys().wake(waiter.as_str()),
            mutex,
            waiter,
            first: true,
        }
    }

    fn call(&self, op: FairOp) -> Call {
        self.mutex.calls.fair(self.waiter.as_str(), op)
    }
}

impl Request for Fair<'_> {
    type Reply = Acquire;
    /// The waiter id the grant was made for: its release notes that waiter as done.
    type Extra = String;
    const QUEUES: bool = true;
    const HANDED_OVER: bool = true;

    /// Its own list, which carries its grant; and the signal list, which wakes it when a
    /// client that is not fair releases (python-redis-lock, or a mutex without `fair`).
    fn signals(&self) -> Vec<String> {
        vec![self.wake.clone(), self.mutex.keys().signal.clone()]
    }

    fn attempt(&mut self, queue: bool) -> Call {
        let entry = queue.then_some(ENTRY_TTL);
        let first = std::mem::replace(&mut self.first, false);
        self.call(FairOp::Acquire { entry, first })
    }

    fn read(&mut self, reply: Acquire) -> Result<Found<String>> {
        Ok(match reply {
            Acquire::Granted { token } => Found::Granted {
                token,
                extra: self.waiter.as_str().to_owned(),
            },
            Acquire::Held { left } => Found::Blocked(acquire::until_expiry(left)),
            Acquire::LeftToWaiter => Found::Blocked(HEARTBEAT),
            Acquire::WrongType { .. } => return Err(self.mutex.wrong_type()),
            Acquire::Undone => return Err(Error::Protocol { what: "acquire" }),
        })
    }

    /// Handed over by a release: the wake-up is the grant, unless a lock without expiry
    /// was handed over with a provisional one, which an attempt claims.
    fn woken(&mut self, woken: &Woken) -> Result<Option<(u64, String)>> {
        if woken.list != self.wake || self.mutex.options.expire.is_none() {
            return Ok(None);
        }
        let token = woken.value.parse().map_err(|_| Error::Protocol {
            what: "a fair handoff",
        })?;
        Ok(Some((token, self.waiter.as_str().to_owned())))
    }

    /// Leaves the queue, passing on a grant made to us meanwhile.
    fn undo(&self) -> Vec<Call> {
        vec![self.call(FairOp::Leave)]
    }

    fn withdraw(&self) -> Option<Call> {
        Some(self.call(FairOp::Leave))
    }

    /// A new waiter, at the back of the queue: the undone one (its place, its wake list)
    /// is noted as gone.
    fn undone(&mut self) {
        self.waiter = AttemptId::new();
        self.wake = self.mutex.keys().wake(self.waiter.as_str());
        self.first = true;
    }
}
