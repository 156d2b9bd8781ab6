//! [`Leadership`]: a term of an election, held by its leader.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::{RedisElection, ValueOp};
use crate::error::{Error, LostReason, Result};
use crate::mutex::{ArcRedisMutexGuard, RedisMutexGuard};

/// A [`Leadership`] that owns a reference to its election, from
/// [`RedisElection::campaign_arc`]: `'static`, to keep in a struct or send to a thread.
pub type ArcLeadership = Leadership<'static>;

/// The election a term belongs to: borrowed, or shared ([`ArcLeadership`]).
pub(super) enum Of<'a> {
    Borrowed(&'a RedisElection),
    Owned(Arc<RedisElection>),
}

impl Of<'_> {
    pub(super) fn get(&self) -> &RedisElection {
        match self {
            Of::Borrowed(election) => election,
            Of::Owned(election) => election,
        }
    }
}

/// A term's grant of the election's mutex, borrowed from it or owning a reference to it.
pub(super) enum Term<'a> {
    Borrowed(RedisMutexGuard<'a>),
    Owned(ArcRedisMutexGuard),
}

/// Calls the same method of either guard.
macro_rules! either {
    ($term:expr, $guard:ident => $call:expr) => {
        match $term {
            Term::Borrowed($guard) => $call,
            Term::Owned($guard) => $call,
        }
    };
}

impl Term<'_> {
    pub(super) fn fencing_token(&self) -> u64 {
        either!(self, g => g.fencing_token())
    }

    fn is_lost(&self) -> bool {
        either!(self, g => g.is_lost())
    }

    fn ensure_held(&self) -> Result<()> {
        either!(self, g => g.ensure_held())
    }

    fn is_held(&self) -> Result<bool> {
        either!(self, g => g.is_held())
    }

    fn valid_for(&self) -> Option<Duration> {
        either!(self, g => g.valid_for())
    }

    fn extend(&self, lease: Duration) -> Result<()> {
        either!(self, g => g.extend(lease))
    }

    fn unlock(self) -> Result<()> {
        either!(self, g => g.unlock())
    }
}

/// A term of a [`RedisElection`]: this candidate leads while it lives. Dropping it, or
/// [`resign`](Self::resign), ends the term: the proclaimed value is withdrawn (observers see
/// nobody leading within a round trip) and the next candidate is woken.
///
/// While it lives, the term's lease is renewed (unless
/// [`auto_renewal`](crate::RedisElectionBuilder::auto_renewal) was turned off); a renewal
/// that finds the term gone (a reset, a failover that lost it) or cannot reach Redis
/// before the lease ends marks it lost, and
/// [`on_lost`](crate::RedisElectionBuilder::on_lost) runs. Check
/// [`ensure_held`](Self::ensure_held) before each step that must not run twice, or fence the
/// step with [`term`](Self::term).
///
/// # Examples
///
/// ```no_run
/// use redis_mutex::{Pool, RedisElection};
///
/// let election = RedisElection::new(Pool::new("redis://127.0.0.1/")?, "scheduler")?;
/// let leadership = election.campaign("10.0.0.7:8080")?;
/// leadership.proclaim("10.0.0.7:9090")?; // same term, new value
/// leadership.ensure_held()?;
/// leadership.resign()?;
/// # Ok::<(), redis_mutex::Error>(())
/// ```
#[must_use = "dropping a Leadership resigns at once"]
pub struct Leadership<'a> {
    election: Of<'a>,
    /// The term's lease: a grant of the election's mutex. Taken by `resign`.
    guard: Option<Term<'a>>,
    /// The term: the grant's fencing token.
    term: u64,
    /// What this term proclaimed last, and the number of its last proclaim.
    value: Mutex<(String, u64)>,
}

impl fmt::Debug for Leadership<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leadership")
            .field("election", &self.election().name())
            .field("term", &self.term())
            .field("value", &self.value.lock().0)
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl<'a> Leadership<'a> {
    pub(super) fn new(election: Of<'a>, guard: Term<'a>, value: String) -> Leadership<'a> {
        Leadership {
            election,
            term: guard.fencing_token(),
            guard: Some(guard),
            value: Mutex::new((value, 1)),
        }
    }

    /// The term's grant (only `resign` and `drop` take it, each with the Leadership itself).
    fn guard(&self) -> Result<&Term<'a>> {
        self.guard.as_ref().ok_or_else(|| Error::LockLost {
            name: self.election().name().to_owned(),
            reason: LostReason::TakenOver,
        })
    }

    /// The election this term belongs to.
    pub fn election(&self) -> &RedisElection {
        self.election.get()
    }

    /// The term: this grant's fencing token, higher than every earlier term's of this
    /// election, across restarts and failovers (as the locks' tokens). Give it to storage
    /// that refuses a write with a term lower than one it has seen, so that a leader that
    /// lost its term without knowing it cannot overwrite its successor's work.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// What this term proclaimed last.
    pub fn value(&self) -> String {
        self.value.lock().0.clone()
    }

    /// Proclaims a new value for this term, keeping the term: observers see it within a
    /// round trip.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when the term has ended (nothing is proclaimed then); the errors
    /// of a request when Redis cannot be reached ([`Error::Unreachable`],
    /// [`Error::Timeout`], ...), when the value may or may not have been proclaimed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{Pool, RedisElection};
    ///
    /// let election = RedisElection::new(Pool::new("redis://127.0.0.1/")?, "shards")?;
    /// let leadership = election.campaign(r#"{"shards":[]}"#)?;
    /// leadership.proclaim(r#"{"shards":["a","b"]}"#)?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn proclaim(&self, value: impl Into<String>) -> Result<()> {
        let value = value.into();
        let mut proclaimed = self.value.lock();
        let election = self.election();
        let seq = proclaimed.1 + 1;
        proclaimed.1 = seq;
        if election.send_proclaim(
            ValueOp::Proclaim,
            election.owner_id(),
            self.term,
            &value,
            seq,
        )? {
            proclaimed.0 = value;
            return Ok(());
        }
        // The term is gone: let the lease core find out why, and say so.
        let guard = self.guard()?;
        if let Ok(true) = guard.is_held() {
            return Err(Error::Protocol { what: "proclaim" });
        }
        guard.ensure_held()?;
        Err(Error::LockLost {
            name: election.name().to_owned(),
            reason: LostReason::TakenOver,
        })
    }

    /// Whether the term is known to be lost: a renewal found it gone or taken over, or
    /// could not reach Redis before the lease ran out. No round trip. Once lost, always
    /// lost.
    pub fn is_lost(&self) -> bool {
        self.guard.as_ref().is_none_or(|guard| guard.is_lost())
    }

    /// `Ok` while this candidate still leads: no round trip while more than a third of the
    /// lease is certainly left, else one.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when the term is lost (with why, as far as this process knows);
    /// the errors of a request when it had to ask Redis and could not.
    pub fn ensure_held(&self) -> Result<()> {
        self.guard()?.ensure_held()
    }

    /// Whether this candidate still leads, asked of Redis (one round trip).
    ///
    /// # Errors
    ///
    /// The errors of a request when Redis cannot be reached.
    pub fn is_held(&self) -> Result<bool> {
        self.guard()?.is_held()
    }

    /// How long the term is certainly still ours, by this process's monotonic clock (see
    /// [`RedisMutexGuard::valid_for`]); zero once lost.
    pub fn valid_for(&self) -> Duration {
        self.guard.as_ref().map_or(Duration::ZERO, |guard| {
            guard.valid_for().unwrap_or(Duration::MAX)
        })
    }

    /// Sets the term's remaining lease to `lease`, for a leader that renews by hand
    /// ([`auto_renewal`](crate::RedisElectionBuilder::auto_renewal) off).
    ///
    /// # Errors
    ///
    /// As for [`RedisMutexGuard::extend`].
    pub fn extend(&self, lease: Duration) -> Result<()> {
        self.guard()?.extend(lease)
    }

    /// Ends the term: withdraws the proclaimed value (observers see nobody leading), then
    /// frees the role for the next candidate: two requests, one after the other, each
    /// within the response timeout (a withdraw that fails is logged, and the release sent
    /// all the same: a value whose term is gone is nobody's).
    ///
    /// # Errors
    ///
    /// [`Error::NotAcquired`] when the term had ended already (with the likely cause);
    /// [`Error::ReleaseDeferred`] when Redis could not be reached: the release is sent
    /// again in the background while the lease lasts.
    pub fn resign(mut self) -> Result<()> {
        let guard = self
            .guard
            .take()
            .ok_or(Error::Protocol { what: "resign" })?;
        self.withdraw();
        guard.unlock()
    }

    /// Withdraws this term's value, if it is still the one proclaimed; a failure is logged
    /// (the value is read as nobody's once the term's grant is gone).
    fn withdraw(&self) {
        let election = self.election();
        let term = self.term;
        if let Err(e) = election.send_proclaim(ValueOp::Withdraw, election.owner_id(), term, "", 0)
        {
            log::debug!(
                "election `{}`: the value of term {term} could not be withdrawn: {e}",
                election.name()
            );
        }
    }
}

impl Drop for Leadership<'_> {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            self.withdraw();
            drop(guard);
        }
    }
}
