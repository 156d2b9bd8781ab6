//! [`Calls`]: the script calls of one mutex, built in one place from its keys and options,
//! for the lock (acquire, undo, fair mode's queue) and for its grants (release, extend).

use std::sync::Arc;
use std::time::Duration;

use super::keys::MutexKeys;
use super::{ACQUIRE, FAIR, RELEASE, RESUME, UNDO};
use crate::scripts::{Call, undo_window};
use crate::time::millis;

/// What every script call of one mutex needs to know.
#[derive(Debug, Clone)]
pub(super) struct Calls {
    pub(super) keys: MutexKeys,
    pub(super) owner: Arc<str>,
    /// The expiry of a grant in milliseconds; 0 for a lock that never expires.
    expire_ms: u64,
    /// How long a grant marker lives: as long as its lock, and long enough for an undo to
    /// follow its acquire.
    marker_ms: u64,
    /// How long a wake-up waits in its list.
    signal_ms: u64,
    /// How long a release's tombstone says it happened: as long as a re-sent release may
    /// come.
    released_ms: u64,
    /// Fair mode: releases hand the lock over.
    pub(super) fair: bool,
}

/// What a call of `fair.lua` does.
#[derive(Debug, Clone, Copy)]
pub(super) enum FairOp {
    /// Take the lock, claim a grant handed to us, or (with an entry's life) queue; `first`:
    /// the call's first attempt, whose waiter has no entry or wake list yet.
    Acquire {
        entry: Option<Duration>,
        first: bool,
    },
    /// Release the grant with this token, handing the lock to the first live waiter.
    Release { token: u64 },
    /// Leave the queue, passing on a grant handed to us meanwhile.
    Leave,
}

/// How long the grant marker of a lock without expiry lives: long past any request of the
/// grant's that could still arrive, and gone a week after a client that knows nothing of
/// it (python-redis-lock, an operator's `DEL`) removed the lock. Past it, a lock of ours
/// without expiry has no marker, and its grants are told apart by owner id alone.
const MARKER_WITHOUT_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a lock without expiry handed to a fair waiter lives until the waiter claims
/// it: a few entry lives (the waiter was live a moment ago), so that one that died
/// meanwhile holds nobody up for longer.
const CLAIM_WINDOW: Duration = Duration::from_millis(3000);

impl Calls {
    pub(super) fn new(
        keys: MutexKeys,
        owner: &str,
        expire: Option<Duration>,
        signal_expire: Duration,
        response_timeout: Duration,
        fair: bool,
    ) -> Calls {
        Calls {
            keys,
            owner: owner.into(),
            expire_ms: expire.map_or(0, millis),
            marker_ms: millis(match expire {
                Some(expire) => undo_window(response_timeout).max(expire),
                None => MARKER_WITHOUT_EXPIRY.max(undo_window(response_timeout)),
            }),
            released_ms: millis(undo_window(response_timeout)),
            signal_ms: millis(signal_expire),
            fair,
        }
    }

    /// These calls for a grant held under another owner id: one resumed from a handle.
    pub(super) fn with_owner(&self, owner: &str) -> Calls {
        Calls {
            owner: owner.into(),
            ..self.clone()
        }
    }

    /// `resume.lua`: takes over the grant of this owner id with the fencing token `token`,
    /// for the attempt `attempt`.
    pub(super) fn resume(&self, token: u64, attempt: &str) -> Call {
        let mut call = RESUME.call();
        call.key(&self.keys.lock)
            .key(&self.keys.grant)
            .key(&self.keys.fencing)
            .arg(&*self.owner)
            .arg(token)
            .arg(attempt)
            .arg(self.released_ms)
            .arg(millis(MARKER_WITHOUT_EXPIRY));
        call
    }

    /// `acquire.lua` for the attempt `attempt`; `polite` right after our own release.
    pub(super) fn acquire(&self, attempt: &str, polite: bool) -> Call {
        let mut call = ACQUIRE.call();
        call.key(&self.keys.lock)
            .key(&self.keys.signal)
            .key(&self.keys.fencing)
            .key(&self.keys.grant)
            .arg(&*self.owner)
            .arg(self.expire_ms)
            .arg(if polite { "1" } else { "0" })
            .arg(attempt)
            .arg(self.marker_ms)
            .arg(&self.keys.done_prefix);
        call
    }

    /// Undoes the grant of `attempt` (a waiter, in fair mode), whose reply was lost.
    pub(super) fn undo(&self, attempt: &str) -> Call {
        if self.fair {
            return self.fair(attempt, FairOp::Leave);
        }
        let mut call = UNDO.call();
        call.key(&self.keys.lock)
            .key(&self.keys.signal)
            .key(&self.keys.grant)
            .key(self.keys.done(attempt))
            .arg(&*self.owner)
            .arg(self.signal_ms)
            .arg(attempt)
            .arg(self.released_ms);
        call
    }

    /// Releases the grant with fencing token `token`, made for the request `id` (in fair
    /// mode, handing it over).
    pub(super) fn release(&self, token: u64, id: &str) -> Call {
        if self.fair {
            return self.fair(id, FairOp::Release { token });
        }
        let mut call = RELEASE.call();
        call.key(&self.keys.lock)
            .key(&self.keys.signal)
            .key(&self.keys.grant)
            .key(&self.keys.released)
            .key(self.keys.done(id))
            .arg(&*self.owner)
            .arg(self.signal_ms)
            .arg(token)
            .arg(self.released_ms);
        call
    }

    /// A call of `fair.lua` for the waiter `waiter`.
    pub(super) fn fair(&self, waiter: &str, op: FairOp) -> Call {
        let (name, entry_ms, token) = match op {
            FairOp::Acquire { entry, first } => (
                if first { "first" } else { "acquire" },
                entry.map_or(0, millis),
                0,
            ),
            FairOp::Release { token } => ("release", 0, token),
            FairOp::Leave => ("leave", 0, 0),
        };
        let mut call = FAIR.call();
        call.key(&self.keys.lock)
            .key(&self.keys.signal)
            .key(&self.keys.fencing)
            .key(&self.keys.grant)
            .key(&self.keys.queue)
            .key(&self.keys.waiters)
            .key(self.keys.wake(waiter))
            .key(&self.keys.released)
            .arg(name)
            .arg(&*self.owner)
            .arg(waiter)
            .arg(self.expire_ms)
            .arg(entry_ms)
            .arg(self.marker_ms)
            .arg(&self.keys.wake_prefix)
            .arg(self.signal_ms)
            .arg(token)
            .arg(millis(CLAIM_WINDOW))
            .arg(self.released_ms)
            .arg(&self.keys.done_prefix);
        call
    }

    /// Adds the compare-and-extend of the grant with `token` to a call of `extend.lua`, which
    /// extends any number of locks of one slot at once: to `lease_ms` (`0`: only checks it).
    pub(super) fn extend_into(&self, call: &mut Call, lease_ms: u64, token: u64) {
        call.key(&self.keys.lock).key(&self.keys.grant);
        let mut keys = 2;
        if let Some(kept) = &self.keys.kept {
            call.key(kept);
            keys += 1;
        }
        call.arg(&*self.owner).arg(lease_ms).arg(token).arg(keys);
    }
}
