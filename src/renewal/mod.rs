//! The renewal service: keeps every auto-renewed lease of the process alive, and marks a
//! lease lost when it finds it gone or cannot renew it before it runs out.
//!
//! Every lock kind renews through one seam, [`Renew`]. Leases are grouped in lanes, one per
//! server (or, for a Redlock, per set of servers), each renewed by a thread of its own
//! (`lane`), so that a stalled server delays only its own leases; with one server, one
//! thread does it all. A lane sleeps on its [`Scheduler`](scheduler::Scheduler) until a
//! renewal is due, then renews everything due about then: a lease renewed alone by its own
//! call ([`RenewAlone`]: a Redlock's round), leases of single-server grants of one
//! [`BatchKey`] in one call of their extend script (`batch`), to which each adds its part
//! ([`ServerGrant::extend_part`]). A batch key names its script, so a batch holds parts of
//! one shape only.
//!
//! Cancelling (a guard dropped or unlocked) takes the lease off its lane at once, so that
//! the release is sent without waiting: a renewal of it already on the wire can reach the
//! server after the release, where it finds the grant gone (every renew script compares
//! the grant's own owner id, token or lease id) and changes nothing; its outcome is
//! ignored.

mod batch;
mod lane;
mod scheduler;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use crate::lease::Renewal;
pub(crate) use batch::{extend, renewal};

use crate::error::Result;
use crate::lease::{Lease, NewGrant};
use crate::options::LockOptions;
use crate::pool::Pool;
use crate::scripts::{Call, Lua};
use crate::time::millis;

/// Which thread renews a lease: leases of one lane share a server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum LaneKey {
    /// A server of a pool (`Pool::id`): on a cluster, one of its nodes.
    Pool { pool: u64, server: Option<Arc<str>> },
    /// The servers of a Redlock (its own id: pools and Redlocks count apart).
    Redlock(u64),
}

/// How one lock kind renews a lease: the seam between the renewal service and the locks.
pub(super) trait Renew: Send + Sync + 'static {
    /// The lease each renewal restores; renewals come a third of it apart.
    fn ttl(&self) -> Duration;

    /// The lane (thread) that renews it.
    fn lane(&self) -> LaneKey;

    /// The longest one renewal takes: how long a manual extend waits for one on the wire.
    fn bound(&self) -> Duration;

    /// How the lease is renewed: alone, or with the other leases of its batch.
    fn renewing(&self) -> Renewing<'_>;
}

/// How a lease is renewed.
pub(crate) enum Renewing<'a> {
    /// By a call of its own (a Redlock's round on several servers).
    Alone(&'a dyn RenewAlone),
    /// With every grant of the same batch key, in one call of their extend script.
    Batched(&'a dyn ServerGrant),
}

/// A lease renewed by a call of its own.
pub(crate) trait RenewAlone {
    /// Renews the lease once, within about `timeout` (what the lease has left: a later
    /// answer is of no use).
    fn renew(&self, timeout: Duration) -> Renewal;
}

/// What the leases of one batch share: the script, the pool, the slot (on a cluster) and the
/// response timeout that bounds the call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BatchKey {
    /// The script's name: leases of different scripts never share a call.
    script: &'static str,
    pool: u64,
    /// On a cluster, the hash tag of the leases' keys: one slot per call.
    tag: Option<Arc<str>>,
    response_timeout: Duration,
}

/// Where a grant of a single-server lock lives, and what bounds its requests.
pub(crate) struct OnServer {
    pub(crate) pool: Pool,
    /// The lock's name (a read-write lock's path).
    pub(crate) name: Arc<str>,
    /// The expiry the lock was taken with; renewals restore it.
    pub(crate) ttl: Option<Duration>,
    pub(crate) response_timeout: Duration,
    /// On a cluster, the node the grant was made on: its renewals get a lane of their own.
    pub(crate) server: Option<Arc<str>>,
    /// The server the grant was made on.
    pub(crate) granted_on: Arc<str>,
}

impl OnServer {
    /// The place of a grant just made, on `options`.
    pub(crate) fn of(
        pool: &Pool,
        name: &Arc<str>,
        new: &NewGrant,
        options: &LockOptions,
    ) -> OnServer {
        OnServer {
            pool: pool.clone(),
            name: name.clone(),
            ttl: options.expire,
            response_timeout: options.response_timeout,
            server: new.server.clone(),
            granted_on: new.granted_on.clone(),
        }
    }
}

/// A grant of a lock on one server (a mutex's, a read or write lease, a semaphore's
/// permits): what its kind says about it. `Grant` and [`Renew`] come with it (in
/// `held.rs`).
pub(crate) trait ServerGrant: Send + Sync + 'static {
    /// What the lock is called in logs.
    fn kind(&self) -> &'static str;

    fn on(&self) -> &OnServer;

    /// A key of the lock: routes its requests. Grants whose routes share a hash tag are
    /// renewed together.
    fn route(&self) -> &str;

    /// The call that releases the grant; it answers a positive number when the grant was
    /// ours (or its release happened a moment ago: the same release sent again).
    fn release_call(&self) -> Call;

    /// The script that extends grants of this kind, any number in one call, answering one
    /// [`Extend`](crate::scripts::Extend) per grant.
    fn extend_script(&self) -> &'static Lua;

    /// Adds the grant's part to a call of [`extend_script`](Self::extend_script): set its
    /// lease to `lease_ms`, or only check it (`0`).
    fn extend_part(&self, call: &mut Call, lease_ms: u64);
}

/// The lease, in milliseconds, an extend of `ttl` asks for (`0`: a check).
fn lease_ms(ttl: Duration) -> u64 {
    if ttl.is_zero() { 0 } else { millis(ttl) }
}

/// Renewal of one lease; dropping it (or [`Registration::cancel`]) stops the renewal.
pub(super) struct Registration {
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
pub(super) fn register(
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
    pub(super) fn cancel(self) {
        // Drop does the work.
    }

    /// Keeps renewals off this lease until the returned hold is dropped, after waiting for
    /// a renewal of it already on the wire to settle. A manual extend runs under a hold:
    /// two requests on different connections could reach Redis in either order, and the
    /// lease clock must not take the longer one for the last.
    pub(super) fn hold(&self) -> Hold<'_> {
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
pub(super) struct Hold<'a> {
    registration: &'a Registration,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let registration = self.registration;
        registration.lane.release_hold(registration.id);
    }
}
