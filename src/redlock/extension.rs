//! Extending a held Redlock: one compare-and-`PEXPIRE` round on every instance, shared by
//! [`RedlockGuard::extend`](super::RedlockGuard::extend) and by auto-extension.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::EXTEND;
use super::fanout::{fan_out, request};
use super::quorum::{quorum, validity};
use crate::conn::Conn;
use crate::error::Result;
use crate::pool::Pool;
use crate::scripts::Extend;

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
    pub(super) results: Vec<Result<Extend>>,
}

impl Round {
    /// A round that sent nothing.
    pub(super) fn empty(_n: usize) -> Round {
        let now = Instant::now();
        Round {
            started: now,
            finished: now,
            results: Vec::new(),
        }
    }

    /// Why a round did not count, for the renewal's log and the lost-lock message.
    pub(super) fn describe(&self, deadline: Instant) -> String {
        let n = self.results.len();
        let mut why = if self.finished >= deadline {
            format!(
                "the extend round ended after the validity ran out ({} of {n} extended)",
                self.extended()
            )
        } else {
            format!(
                "{} of the {} extensions needed ({} of {n} instances said the key is not ours)",
                self.extended(),
                quorum(n),
                self.not_ours()
            )
        };
        for (i, result) in self.results.iter().enumerate() {
            if let Err(e) = result {
                why.push_str(&format!("; instance {i}: {e}"));
            }
        }
        why
    }

    /// How many instances set the new ttl on our key.
    pub(super) fn extended(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r, Ok(Extend::Extended)))
            .count()
    }

    /// How many instances answered that the key is not ours (gone, or another token).
    pub(super) fn not_ours(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r, Ok(Extend::Gone)))
            .count()
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
        let mut call = EXTEND.call();
        call.key(&claim.resource)
            .key(super::family::marker(&claim.resource, &pools[i]))
            .arg(&claim.token)
            .arg(ttl_ms);
        request(
            &pools[i],
            &claim.resource,
            conn,
            timeout,
            |conn, is_pending| call.run(conn, is_pending),
        )
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
