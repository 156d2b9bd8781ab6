//! The renewal service: keeps every auto-renewed lease of the process alive, and marks a
//! lease lost when it finds it gone or cannot renew it before it runs out.
//!
//! Every lock kind renews through one seam, [`Renew`]. Leases are grouped in lanes, one per
//! server (or, for a Redlock, per set of servers), each renewed by a thread of its own
//! (`lane`), so that a stalled server delays only its own leases; with one server, one
//! thread does it all. A lane sleeps on its [`Scheduler`](scheduler::Scheduler) until a
//! renewal is due, then renews everything due about then, leases of one batch key in one
//! call.
//!
//! Cancelling (a guard dropped or unlocked) takes the lease off its lane at once, so that
//! the release is sent without waiting: a renewal of it already on the wire can reach the
//! server after the release, where it finds the grant gone (every renew script compares
//! the grant's own owner id, token or lease id) and changes nothing; its outcome is
//! ignored.

mod lane;
mod scheduler;

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Result;
use crate::lease::Lease;

/// Which thread renews a lease: leases of one lane share a server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LaneKey {
    /// The pool (or Redlock) the lease was taken through.
    pub(crate) pool: u64,
    /// The server within it, for a cluster's nodes.
    pub(crate) server: Option<Arc<str>>,
}

/// How one lock kind renews a lease: the seam between the renewal service and the locks.
pub(crate) trait Renew: Send + Sync + 'static {
    /// The lease each renewal restores; renewals come a third of it apart.
    fn ttl(&self) -> Duration;

    /// The lane (thread) that renews it.
    fn lane(&self) -> LaneKey;

    /// The longest one renewal takes: how long a manual extend waits for one on the wire.
    fn bound(&self) -> Duration;

    /// Leases whose key is the same can be renewed together by
    /// [`renew_batch`](Self::renew_batch); `None` for leases renewed one by one.
    fn batch_key(&self) -> Option<u64> {
        None
    }

    /// Renews the lease once, within about `timeout` (what the lease has left: a later
    /// answer is of no use).
    fn renew(&self, timeout: Duration) -> Renewal;

    /// Renews `batch`, leases of this one's batch key (this one among them), in one call
    /// within about `timeout`; one outcome per lease, in order. Called only when
    /// [`batch_key`](Self::batch_key) is `Some`.
    fn renew_batch(&self, batch: &[&dyn Renew], timeout: Duration) -> Vec<Renewal> {
        batch.iter().map(|lease| lease.renew(timeout)).collect()
    }

    /// For [`renew_batch`](Self::renew_batch), which gets its own kind back.
    fn as_any(&self) -> &dyn Any;
}

/// What became of one renewal.
#[derive(Debug)]
pub(crate) enum Renewal {
    /// Renewed by a request sent at `sent_at` with the lease `ttl`.
    Renewed { sent_at: Instant, ttl: Duration },
    /// Renewed, and certainly ours until `valid_until` (a Redlock works that out itself).
    RenewedUntil {
        sent_at: Instant,
        valid_until: Instant,
    },
    /// The lock is no longer ours: gone (`taken: false`) or held by another owner.
    Gone { taken: bool },
    /// The renewal failed; the message says why. It is tried again while the lease lasts.
    Failed(String),
    /// The renewal's reply was lost: it failed as far as we know, but Redis may have run
    /// it (or may still), setting the lease to `ttl` from then on, which may be shorter
    /// than what a manual extend set. Tried again like `Failed`.
    MayHaveRun {
        sent_at: Instant,
        ttl: Duration,
        why: String,
    },
}

/// Renewal of one lease; dropping it (or [`Registration::cancel`]) stops the renewal.
pub(crate) struct Registration {
    lane: Arc<lane::Lane>,
    id: u64,
    bound: Duration,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .finish()
    }
}

/// Schedules `lease` for renewal through `target`: first a third of the ttl after
/// `acquired_at`, then a third of it after each renewal.
///
/// # Errors
///
/// [`Error::RenewalThread`](crate::Error::RenewalThread) when the lane's thread could not be
/// started.
pub(crate) fn register(
    lease: Arc<Lease>,
    target: Arc<dyn Renew>,
    acquired_at: Instant,
) -> Result<Registration> {
    let bound = target.bound();
    let (lane, id) = lane::register(lease, target, acquired_at)?;
    Ok(Registration { lane, id, bound })
}

impl Registration {
    /// Stops renewing, at once: a renewal of this lease already on the wire is not waited
    /// for (see the module docs).
    pub(crate) fn cancel(self) {
        // Drop does the work.
    }

    /// Keeps renewals off this lease until the returned hold is dropped, after waiting for
    /// a renewal of it already on the wire to settle. A manual extend runs under a hold:
    /// two requests on different connections could reach Redis in either order, and the
    /// lease clock must not take the longer one for the last.
    pub(crate) fn hold(&self) -> Hold<'_> {
        self.lane.hold(self.id, self.bound);
        Hold { registration: self }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.lane.cancel(self.id);
    }
}

/// See [`Registration::hold`]. Dropping it lets renewal go on, a third of the lease later
/// (of what the lease has left, if that is less).
#[derive(Debug)]
pub(crate) struct Hold<'a> {
    registration: &'a Registration,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let registration = self.registration;
        registration.lane.release_hold(registration.id);
    }
}
