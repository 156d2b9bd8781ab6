//! [`RedlockGrant`]: a lock held on a majority of instances, as the lease core and the
//! renewal service see it: released, extended and checked by a round on every instance at
//! once, each request on the instance's pending connection if it has one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::extension::{Claim, Round, extend_round};
use super::fanout::{fan_out, request};
use super::quorum::{Majority, majority, quorum};
use super::{failures, release_on};
use crate::error::{Error, LostReason, Result};
use crate::held::Grant;
use crate::lease::Lease;
use crate::pool::Pool;
use crate::renewal::{LaneKey, Renew, RenewAlone, Renewal, Renewing};
use crate::time::millis;

/// One Redlock grant: the instances, the claim (key, token, pending connections), and the
/// round's settings.
pub(super) struct RedlockGrant {
    pub(super) pools: Arc<[Pool]>,
    pub(super) claim: Arc<Claim>,
    /// The ttl the lock was taken with; auto-extension restores it.
    pub(super) ttl: Duration,
    pub(super) instance_timeout: Duration,
    pub(super) drift_factor: f64,
    /// The Redlock the grant came from: its auto-extensions share a lane.
    pub(super) redlock_id: u64,
}

impl RedlockGrant {
    fn n(&self) -> usize {
        self.pools.len()
    }

    /// One extend round with `ttl`, over by `deadline` (the end of the validity it set out
    /// with): the lease's new end when it counts (a majority, in time), else what the
    /// round says.
    fn extend_by(&self, ttl: Duration, deadline: Instant) -> std::result::Result<Instant, Round> {
        // The guard's own extend, check or release may hold the connections for a round.
        let Some(mut pending) = self.claim.pending.try_lock_until(deadline) else {
            return Err(Round::empty(self.n()));
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if pending.is_empty() || left.is_zero() {
            // Released, or out of time.
            return Err(Round::empty(self.n()));
        }
        let timeout = self.instance_timeout.min(ttl).min(left);
        let round = extend_round(&self.pools, &self.claim, &mut pending, millis(ttl), timeout);
        drop(pending);
        match round.valid_until(ttl, self.drift_factor, deadline) {
            Some(valid_until) => {
                log::trace!(
                    "extended redlock `{}` on {} of {} instances in {:?}",
                    self.claim.resource,
                    round.extended(),
                    self.n(),
                    round.finished - round.started
                );
                Ok(valid_until)
            }
            None => Err(round),
        }
    }
}

impl Grant for RedlockGrant {
    fn kind(&self) -> &'static str {
        "redlock"
    }

    fn name(&self) -> &str {
        &self.claim.resource
    }

    fn release(&self) -> Result<bool> {
        let targets = std::mem::take(&mut *self.claim.pending.lock())
            .into_iter()
            .enumerate()
            .collect();
        let results: Vec<Result<i64>> = release_on(
            &self.pools,
            self.instance_timeout,
            &self.claim.resource,
            &self.claim.token,
            targets,
        )
        .into_iter()
        .map(|(_, reply)| reply.result)
        .collect();
        let released = results.iter().filter(|r| matches!(r, Ok(1))).count();
        let failures = failures(results);
        match majority(released, failures.len(), self.n()) {
            Majority::Yes => {
                for (i, e) in &failures {
                    log::debug!(
                        "releasing redlock `{}` failed on instance {i}; the key expires by \
                         itself: {e}",
                        self.claim.resource
                    );
                }
                Ok(true)
            }
            Majority::No => Ok(false),
            Majority::Unknown => Err(Error::NoQuorum {
                granted: released,
                needed: quorum(self.n()),
                failures,
            }),
        }
    }

    /// Counts only with a majority, within the current validity; the validity is then
    /// counted anew from `ttl`, as for an acquisition. Otherwise the validity does not
    /// grow, and shrinks to what `ttl` would give, should that be less, since some
    /// instances may have taken it.
    fn extend(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let ttl = Duration::from_millis(millis(ttl));
        // Held for the round: the guard's rounds and auto-extension's do not overlap.
        let mut pending = self.claim.pending.lock();
        let left = lease.valid_for().unwrap_or_default();
        let not_acquired = || Error::NotAcquired {
            name: self.claim.resource.clone(),
            reason: LostReason::Expired,
        };
        if left.is_zero() {
            return Err(not_acquired());
        }
        let deadline = Instant::now() + left;
        // A reply after the validity ran out is of no use.
        let timeout = self.instance_timeout.min(ttl).min(left);
        let round = extend_round(&self.pools, &self.claim, &mut pending, millis(ttl), timeout);
        drop(pending);
        if let Some(valid_until) = round.valid_until(ttl, self.drift_factor, deadline) {
            lease.extend_to(valid_until);
            return Ok(true);
        }
        lease.shorten_to(round.shortest_end(ttl, self.drift_factor));
        if round.finished >= deadline {
            return Err(not_acquired());
        }
        if round.not_ours() >= quorum(self.n()) {
            return Ok(false);
        }
        Err(Error::NoQuorum {
            granted: round.extended(),
            needed: quorum(self.n()),
            failures: failures(round.results),
        })
    }

    /// Asks every instance at once, on the pending connections, whether its key holds our
    /// token: `true` on a majority, `false` when even the failed ones would make none.
    fn check(&self) -> Result<bool> {
        let resource = self.claim.resource.as_str();
        let mut pending = self.claim.pending.lock();
        let targets: Vec<_> = pending.drain(..).enumerate().collect();
        let replies = fan_out(targets, |(i, conn)| {
            request(
                &self.pools[i],
                resource,
                conn,
                self.instance_timeout,
                |conn, _| {
                    redis::cmd("GET")
                        .arg(resource)
                        .query::<Option<String>>(conn)
                },
            )
        });
        let mut results = Vec::with_capacity(self.n());
        for reply in replies {
            pending.push(reply.conn);
            results.push(reply.result);
        }
        drop(pending);
        let ours = results
            .iter()
            .filter(|r| matches!(r, Ok(Some(value)) if *value == self.claim.token))
            .count();
        let failures = failures(results);
        match majority(ours, failures.len(), self.n()) {
            Majority::Yes => Ok(true),
            Majority::No => Ok(false),
            Majority::Unknown => Err(Error::NoQuorum {
                granted: ours,
                needed: quorum(self.n()),
                failures,
            }),
        }
    }
}

impl Renew for RedlockGrant {
    fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lane(&self) -> LaneKey {
        LaneKey::Redlock(self.redlock_id)
    }

    /// A round, and a round of the guard's own before it.
    fn bound(&self) -> Duration {
        self.instance_timeout.saturating_mul(2)
    }

    /// Each lock alone: its renewal is a round on every instance.
    fn renewing(&self) -> Renewing<'_> {
        Renewing::Alone(self)
    }
}

impl RenewAlone for RedlockGrant {
    /// One extend round, over within `timeout` (the validity left): renewed on a majority
    /// in time, gone when a majority said the key is not ours, else failed.
    fn renew(&self, timeout: Duration) -> Renewal {
        let called = Instant::now();
        let deadline = match called.checked_add(timeout) {
            Some(deadline) if !timeout.is_zero() => deadline,
            _ => return Renewal::Failed("the validity had run out before the renewal".into()),
        };
        match self.extend_by(self.ttl, deadline) {
            Ok(valid_until) => Renewal::RenewedUntil {
                sent_at: called,
                valid_until,
            },
            Err(round) if round.results.is_empty() => {
                Renewal::Failed("the guard's own request outlasted the validity".into())
            }
            Err(round) if round.not_ours() >= quorum(self.n()) => Renewal::Gone { taken: true },
            Err(round) => Renewal::Failed(round.describe(deadline)),
        }
    }
}
