//! Extending a held Redlock: one compare-and-`PEXPIRE` round on every instance, shared by
//! [`RedlockGuard::extend`](super::RedlockGuard::extend) and by auto-extension, which runs
//! it on the process's renewal thread as a [`Renew`] target.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::fanout::{fan_out, request};
use super::quorum::{quorum, validity};
use super::{EXTEND_SOURCE, eval};
use crate::conn::Conn;
use crate::lease::{Lease, millis};
use crate::renewal::{Renew, Renewal};
use crate::scripts::REDLOCK_EXTEND;
use crate::{Pool, Result};

/// What a guard and its auto-extension share: the lock's key and token, and per instance
/// the connection with a request on the key still pending, if any. The next request to that
/// instance goes on it, so that the server runs them in order; holding the mutex for a
/// round keeps the guard's own requests and the renewals from overlapping.
pub(super) struct Claim {
    pub(super) resource: String,
    pub(super) token: String,
    pub(super) pending: Mutex<Vec<Option<Conn>>>,
}

/// One extend round's replies, in the instances' order, and when it ran.
pub(super) struct Round {
    /// Before the first request left.
    pub(super) started: Instant,
    /// After the last reply came (or timed out).
    pub(super) finished: Instant,
    pub(super) results: Vec<Result<i64>>,
}

impl Round {
    /// How many instances set the new ttl on our key.
    pub(super) fn extended(&self) -> usize {
        self.results.iter().filter(|r| matches!(r, Ok(1))).count()
    }

    /// How many instances answered that the key is not ours (gone, or another token).
    pub(super) fn not_ours(&self) -> usize {
        self.results.iter().filter(|r| matches!(r, Ok(0))).count()
    }

    /// Until when the round made the lock ours: it counts when a majority extended and the
    /// round ended before `deadline` (the end of the validity it set out with). The validity
    /// is `ttl − elapsed − margin` from the end of the round, as for an acquisition.
    pub(super) fn valid_until(
        &self,
        ttl: Duration,
        drift_factor: f64,
        deadline: Instant,
    ) -> Option<Instant> {
        if self.extended() < quorum(self.results.len()) || self.finished >= deadline {
            return None;
        }
        let valid = validity(ttl, self.finished - self.started, drift_factor)?;
        Some(self.finished + valid)
    }

    /// The latest the lock can be counted on after a round that did not count: instances
    /// that took `ttl`, or may have (a timed-out reply), expire the key by then.
    pub(super) fn shortest_end(&self, ttl: Duration, drift_factor: f64) -> Instant {
        let elapsed = self.finished - self.started;
        self.finished + validity(ttl, elapsed, drift_factor).unwrap_or_default()
    }
}

/// Runs the compare-and-`PEXPIRE` script with `ttl_ms` on every instance at once, each on
/// its pending connection if it has one, each bounded by `timeout`. `pending` must hold one
/// entry per instance; it is given back the connections left pending by this round.
pub(super) fn extend_round(
    pools: &[Pool],
    claim: &Claim,
    pending: &mut Vec<Option<Conn>>,
    ttl_ms: u64,
    timeout: Duration,
) -> Round {
    let targets: Vec<_> = pending.drain(..).enumerate().collect();
    let started = Instant::now();
    let replies = fan_out(targets, |(i, conn)| {
        request(&pools[i], conn, timeout, |conn, is_pending| {
            eval(
                conn,
                is_pending,
                &REDLOCK_EXTEND,
                EXTEND_SOURCE,
                &claim.resource,
                &claim.token,
                Some(ttl_ms),
            )
        })
    });
    let finished = Instant::now();
    let mut results = Vec::with_capacity(replies.len());
    for reply in replies {
        pending.push(reply.conn);
        results.push(reply.result);
    }
    Round {
        started,
        finished,
        results,
    }
}

/// Auto-extension of one guard: what the renewal thread runs every third of the ttl.
pub(super) struct AutoExtend {
    pub(super) claim: Arc<Claim>,
    pub(super) lease: Arc<Lease>,
    pub(super) pools: Arc<[Pool]>,
    pub(super) ttl: Duration,
    pub(super) instance_timeout: Duration,
    pub(super) drift_factor: f64,
}

impl Renew for AutoExtend {
    fn ttl(&self) -> Duration {
        self.ttl
    }

    /// One extend round, over within `timeout` (the validity left): `Renewed` on a
    /// majority in time, `Gone` when a majority said the key is not ours, else `Failed`.
    fn renew(&self, timeout: Duration) -> Renewal {
        let called = Instant::now();
        let deadline = match called.checked_add(timeout) {
            Some(deadline) if !timeout.is_zero() => deadline,
            _ => return Renewal::Failed("the validity had run out before the renewal".into()),
        };
        // The guard's own extend, check or release may hold the connections for a round.
        let Some(mut pending) = self.claim.pending.try_lock_until(deadline) else {
            return Renewal::Failed("the guard's own request outlasted the validity".into());
        };
        if pending.is_empty() {
            // Released; the registration is being cancelled.
            return Renewal::Failed("the guard is being released".into());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Renewal::Failed("the validity ran out before the renewal was sent".into());
        }
        let per_instance = self.instance_timeout.min(self.ttl).min(left);
        let round = extend_round(
            &self.pools,
            &self.claim,
            &mut pending,
            millis(self.ttl),
            per_instance,
        );
        drop(pending);
        let n = round.results.len();
        if let Some(valid_until) = round.valid_until(self.ttl, self.drift_factor, deadline) {
            log::trace!(
                "auto-extended redlock `{}` on {} of {n} instances in {:?}",
                self.claim.resource,
                round.extended(),
                round.finished - round.started
            );
            return Renewal::Renewed {
                sent_at: round.started,
                valid_until,
            };
        }
        // Only matters after an explicit extend to a longer ttl than this one.
        self.lease
            .shorten_to(round.shortest_end(self.ttl, self.drift_factor));
        if round.not_ours() >= quorum(n) {
            return Renewal::Gone;
        }
        Renewal::Failed(describe(&round, deadline))
    }
}

/// Why a round did not count, for the renewal thread's log and the lost-lock message.
fn describe(round: &Round, deadline: Instant) -> String {
    let n = round.results.len();
    let mut why = if round.finished >= deadline {
        format!(
            "the extend round ended after the validity ran out ({} of {n} extended)",
            round.extended()
        )
    } else {
        format!(
            "{} of the {} extensions needed ({} of {n} instances said the key is not ours)",
            round.extended(),
            quorum(n),
            round.not_ours()
        )
    };
    for (i, result) in round.results.iter().enumerate() {
        if let Err(e) = result {
            why.push_str(&format!("; instance {i}: {e}"));
        }
    }
    why
}
