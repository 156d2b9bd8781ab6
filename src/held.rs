//! The lease core every guard is built on: a grant held in Redis, its lease clock, its
//! registration with the renewal service, and the calls every guard offers (`unlock`,
//! `extend`, `is_held`, `ensure_held`, `valid_for`, `is_lost`), once for every kind.
//!
//! A kind says what its grants are by implementing [`ServerGrant`] (a grant on one server:
//! its release call, and its part of a call of its extend script), or, for a Redlock,
//! [`Grant`] and [`Renew`] itself. Every extend of a single-server grant, by its guard or
//! by the renewal service, is one call of its kind's extend script, sent by
//! [`renewal::extend`] and read back into a [`Renewal`] that the lease applies
//! ([`Lease::apply`]): one hop, one mapping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn;
use crate::error::{Error, LostReason, Result};
use crate::lease::{Holder, Lease, NewGrant, Renewal};
use crate::metrics;
use crate::options::LockOptions;
use crate::release;
use crate::renewal::{self, LaneKey, Registration, Renew, Renewing, ServerGrant};
use crate::scripts::Extend;
use crate::time::{Deadline, check_duration};

/// One grant as a guard sees it: the requests it makes about it.
pub(crate) trait Grant: Send + Sync + 'static {
    /// What the lock is called in logs: "lock", "read lock", "redlock", ...
    fn kind(&self) -> &'static str;

    /// The lock's name (a path, a resource).
    fn name(&self) -> &str;

    /// Releases the grant; whether it was still ours (`false`: nothing was changed).
    fn release(&self) -> Result<bool>;

    /// Sets the grant's remaining lease to `ttl` if it is still ours, and moves `lease`
    /// with it (cutting it, if the reply was lost). `Ok(false)` when it is no longer ours.
    fn extend(&self, lease: &Lease, ttl: Duration) -> Result<bool>;

    /// Asks whether the grant is still ours.
    fn check(&self) -> Result<bool>;

    /// Whether a failover has moved the lock away from the server that granted it, as far
    /// as the pool knows: a loss is then told as the failover's.
    fn moved(&self) -> bool {
        false
    }
}

impl<G: ServerGrant> Grant for G {
    fn kind(&self) -> &'static str {
        ServerGrant::kind(self)
    }

    fn name(&self) -> &str {
        &self.on().name
    }

    fn release(&self) -> Result<bool> {
        let on = self.on();
        let call = self.release_call();
        let deadline = Deadline::after(on.response_timeout);
        let ran =
            conn::run_repeatable(&on.pool, self.route(), deadline, |c| call.invoke::<i64>(c))?;
        Ok(ran.reply(&on.name, "release")? > 0)
    }

    fn extend(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let (extended, renewal) = extend_one(self, ttl)?;
        lease.apply(&renewal);
        extended
    }

    fn check(&self) -> Result<bool> {
        extend_one(self, Duration::ZERO)?.0
    }

    fn moved(&self) -> bool {
        let on = self.on();
        on.pool.moved(self.route(), &on.granted_on)
    }
}

impl<G: ServerGrant> Renew for G {
    fn ttl(&self) -> Duration {
        // Only grants with an expiry are renewed.
        self.on().ttl.unwrap_or(Duration::MAX)
    }

    fn lane(&self) -> LaneKey {
        let on = self.on();
        LaneKey::Pool {
            pool: on.pool.id(),
            server: on.server.clone(),
        }
    }

    fn bound(&self) -> Duration {
        self.on().response_timeout
    }

    fn renewing(&self) -> Renewing<'_> {
        Renewing::Batched(self)
    }
}

/// Sends an extend of one grant to `ttl` (zero: a check), within its response timeout:
/// whether it was ours (or the request's error), and what that means for its lease.
fn extend_one(grant: &dyn ServerGrant, ttl: Duration) -> Result<(Result<bool>, Renewal)> {
    let deadline = Deadline::after(grant.on().response_timeout);
    let (sent_at, sent) = renewal::extend(&[(grant, ttl)], deadline);
    let outcome = sent.as_ref().map(|extended| extended[0]);
    let renewal = renewal::renewal(sent_at, ttl, outcome);
    let ours = match sent {
        Ok(extended) => Ok(extended[0] == Extend::Extended),
        Err(failed) => Err(failed.into_error()),
    };
    Ok((ours, renewal))
}

/// A grant held by a guard. Dropping it does nothing: guards call
/// [`release_on_drop`](Self::release_on_drop) from their own `Drop`.
pub(crate) struct Held<G> {
    grant: Arc<G>,
    lease: Arc<Lease>,
    renewal: Option<Registration>,
    /// The lease the lock was taken with (`None`: no expiry).
    expire: Option<Duration>,
    released: bool,
    /// Whether the release (by `unlock` or on drop) found the grant ours and removed it.
    released_ours: bool,
    /// When the grant was asked for, for the hold time.
    acquired_at: Instant,
}

impl<G: Grant + Renew> Held<G> {
    /// Holds a grant just made (`new`), with a lease clock for `holder` that counts from
    /// when it was asked for, on the lock's `options` (expiry, auto-renewal, `on_lost`).
    ///
    /// # Errors
    ///
    /// [`Error::RenewalThread`]; the grant is released again then.
    pub(crate) fn granted(
        grant: G,
        holder: Holder,
        new: &NewGrant,
        options: &LockOptions,
    ) -> Result<Held<G>> {
        let lease = Lease::new(holder, new.sent_at, options.expire, options.on_lost.clone());
        Held::new(
            grant,
            lease,
            options.expire,
            options.auto_renewal,
            new.sent_at,
        )
    }

    /// Holds a grant taken over from a lock handle (`new`, whose lease has `left` by the
    /// server's clock when asked; `None`: no expiry), on the resuming lock's `options`. The
    /// lease clock counts `left` from when the request was sent; renewals (with the lock's
    /// expiry, if it has one) are due as if the grant had been made one expiry before its
    /// lease ends, the first at once if that is past.
    ///
    /// # Errors
    ///
    /// [`Error::RenewalThread`]; the grant is released again then.
    pub(crate) fn resumed(
        grant: G,
        holder: Holder,
        new: &NewGrant,
        left: Option<Duration>,
        options: &LockOptions,
    ) -> Result<Held<G>> {
        let lease = Lease::new(holder, new.sent_at, left, options.on_lost.clone());
        let Some(left) = left else {
            return Held::hold(grant, lease, None, false, (new.sent_at, new.sent_at));
        };
        let ends = new.sent_at + left;
        let (expire, renew_from) = match options.expire {
            Some(expire) => (expire, ends.checked_sub(expire).unwrap_or(new.sent_at)),
            None => (left, new.sent_at),
        };
        let auto_renew = options.auto_renewal && options.expire.is_some();
        Held::hold(
            grant,
            lease,
            Some(expire),
            auto_renew,
            (new.sent_at, renew_from.min(new.sent_at)),
        )
    }

    /// Holds `grant`, its lease clock `lease`, and has it renewed from `acquired_at` when
    /// `auto_renew` is set (and the lock expires).
    ///
    /// # Errors
    ///
    /// [`Error::RenewalThread`]; the grant is released again then.
    pub(crate) fn new(
        grant: G,
        lease: Lease,
        expire: Option<Duration>,
        auto_renew: bool,
        acquired_at: Instant,
    ) -> Result<Held<G>> {
        Held::hold(grant, lease, expire, auto_renew, (acquired_at, acquired_at))
    }

    /// [`new`](Self::new), with renewals due as for a grant made at `renew_from` (before
    /// `acquired_at` for a grant taken over with less than its whole lease left).
    fn hold(
        grant: G,
        lease: Lease,
        expire: Option<Duration>,
        auto_renew: bool,
        (acquired_at, renew_from): (Instant, Instant),
    ) -> Result<Held<G>> {
        let mut held = Held {
            grant: Arc::new(grant),
            lease: Arc::new(lease),
            renewal: None,
            expire,
            released: false,
            released_ours: false,
            acquired_at,
        };
        if auto_renew && expire.is_some() {
            let target: Arc<dyn Renew> = held.grant.clone();
            match renewal::register(held.lease.clone(), target, renew_from) {
                Ok(registration) => {
                    held.lease.renewed_from_now();
                    held.renewal = Some(registration);
                }
                Err(e) => {
                    held.release_on_drop();
                    return Err(e);
                }
            }
        }
        Ok(held)
    }
}

impl<G: Grant> Held<G> {
    pub(crate) fn grant(&self) -> &G {
        &self.grant
    }

    pub(crate) fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The lease, shared: for the note of a grant in its lock's local side.
    pub(crate) fn lease_arc(&self) -> &Arc<Lease> {
        &self.lease
    }

    /// The grant's fencing token, if it has one.
    pub(crate) fn lease_token(&self) -> Option<u64> {
        self.lease.fencing_token()
    }

    /// Whether the last release found the grant ours and removed it.
    pub(crate) fn released_ours(&self) -> bool {
        self.released_ours
    }

    pub(crate) fn valid_for(&self) -> Option<Duration> {
        self.lease.valid_for()
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.lease.is_lost()
    }

    /// Why the grant is no longer ours, as far as this process knows: a failover that moved
    /// the lock away from the server that granted it, else what the lease knows.
    fn why_lost(&self) -> LostReason {
        if self.grant.moved() {
            LostReason::Failover
        } else {
            self.lease.lost_reason()
        }
    }

    /// Marks the lease lost, found so by one of the holder's own calls (`what`).
    fn found_lost(&self, what: &str) {
        self.lease.mark_lost_quietly(self.why_lost(), what);
    }

    fn lost_error(&self) -> Error {
        Error::LockLost {
            name: self.grant.name().to_owned(),
            reason: self.why_lost(),
        }
    }

    fn not_acquired(&self) -> Error {
        Error::NotAcquired {
            name: self.grant.name().to_owned(),
            reason: self.why_lost(),
        }
    }

    /// Stops renewal, then releases; whether the grant was still ours. Does nothing the
    /// second time.
    fn release(&mut self) -> Result<bool> {
        if std::mem::replace(&mut self.released, true) {
            return Ok(false);
        }
        if let Some(renewal) = self.renewal.take() {
            renewal.cancel();
        }
        let released = self.grant.release().map_err(|e| self.defer(e));
        if let Ok(ours) = released {
            metrics::released(self.lease.labels(), self.acquired_at.elapsed(), ours);
        }
        match &released {
            Ok(true) => {
                self.released_ours = true;
                log::debug!("released {} `{}`", self.grant.kind(), self.grant.name());
            }
            Ok(false) => self.found_lost("its release found it no longer ours"),
            Err(_) => {}
        }
        released
    }

    /// `e`, a release's failure; one that may not have reached the server is sent again in
    /// the background while the lease lasts (a minute without expiry), and told so.
    fn defer(&self, e: Error) -> Error {
        if !release::unsent(&e) {
            return e;
        }
        let retry_for = self.lease.valid_for().unwrap_or(release::WITHOUT_EXPIRY);
        let grant = self.grant.clone();
        let again = release::Release {
            kind: grant.kind(),
            name: grant.name().to_owned(),
            send: Box::new(move || grant.release()),
        };
        if retry_for.is_zero() || release::retry(again, retry_for).is_err() {
            return e;
        }
        Error::ReleaseDeferred {
            name: self.grant.name().to_owned(),
            retry_for,
            cause: Box::new(e),
        }
    }

    /// Releases the grant and says whether it was still ours.
    ///
    /// Errors: [`Error::LockLost`] when it was known lost (the release was still tried);
    /// [`Error::NotAcquired`] when it was no longer ours; [`Error::ReleaseDeferred`] when it
    /// could not be sent (it is sent again in the background); the release's own error.
    pub(crate) fn unlock(&mut self) -> Result<()> {
        let known_lost = self.lease.is_lost();
        let released = self.release();
        if known_lost {
            return Err(self.lost_error());
        }
        match released? {
            true => Ok(()),
            false => Err(self.not_acquired()),
        }
    }

    /// Lets the grant go without releasing it: renewal stops (a renewal already on the wire
    /// is not waited for), and nothing is sent on drop. For a guard turned into a lock
    /// handle, whose grant another process resumes.
    pub(crate) fn keep(&mut self) {
        self.released = true;
        if let Some(renewal) = self.renewal.take() {
            renewal.cancel();
        }
    }

    /// The release on drop, which can only log.
    pub(crate) fn release_on_drop(&mut self) {
        if self.released {
            return;
        }
        let (kind, name) = (self.grant.kind(), self.grant.name().to_owned());
        match self.release() {
            Ok(_) if !self.lease.is_lost() => {}
            Ok(_) => log::warn!("{kind} `{name}` was no longer ours when its guard was dropped"),
            Err(e @ Error::ReleaseDeferred { .. }) => log::warn!("{e}"),
            Err(e) => {
                log::warn!("releasing {kind} `{name}` failed; it stays until it expires: {e}")
            }
        }
    }

    /// Sets the remaining lease to `ttl`, if the grant is still ours.
    ///
    /// Errors: [`Error::NotExpirable`] without expiry; [`Error::InvalidOptions`] for a
    /// `ttl` out of range; [`Error::LockLost`] once lost; [`Error::NotAcquired`] when no
    /// longer ours (the guard is then marked lost); the request's own error.
    pub(crate) fn extend(&self, ttl: Duration) -> Result<()> {
        if self.expire.is_none() {
            return Err(Error::NotExpirable {
                name: self.grant.name().to_owned(),
            });
        }
        check_duration("lease", ttl)?;
        if self.lease.is_lost() {
            return Err(self.lost_error());
        }
        // Ordered with the renewals: see `Registration::hold`.
        let _hold = self.renewal.as_ref().map(Registration::hold);
        if self.grant.extend(&self.lease, ttl)? {
            Ok(())
        } else {
            self.found_lost("an extend found it no longer ours");
            Err(self.not_acquired())
        }
    }

    /// Sets the remaining lease back to the whole expiry the lock was taken with.
    ///
    /// Errors: as for [`extend`](Self::extend).
    pub(crate) fn renew(&self) -> Result<()> {
        match self.expire {
            Some(ttl) => self.extend(ttl),
            None => Err(Error::NotExpirable {
                name: self.grant.name().to_owned(),
            }),
        }
    }

    /// Asks Redis whether the grant is still ours; marks it lost when it is not.
    pub(crate) fn is_held(&self) -> Result<bool> {
        let held = self.grant.check()?;
        if !held {
            self.found_lost("it is no longer ours");
        }
        Ok(held && !self.lease.is_lost())
    }

    /// `Ok` while the grant is ours: no round trip while more than a third of the lease is
    /// certainly left, else [`is_held`](Self::is_held).
    pub(crate) fn ensure_held(&self) -> Result<()> {
        if self.lease.is_lost() {
            // Known lost (or run out on the clock: the renewal service reports that).
            return Err(self.lost_error());
        }
        if self.lease.still_held(self.expire, || self.is_held())? {
            Ok(())
        } else {
            self.found_lost("it is no longer ours");
            Err(self.lost_error())
        }
    }
}

/// The methods every guard of a single-server lock offers, with their docs: each guard
/// type has a private `fn held(&self) -> &Held<_>`. `$setup` is example code that binds
/// `guard` to a guard of a lock with a 10 s expiry.
macro_rules! guard_methods {
    ($what:literal, $setup:expr) => {
        #[doc = concat!("Sets the ", $what, "'s remaining lease to `lease` (it does not add to it), if it is")]
        /// still ours. [`valid_for`](Self::valid_for) moves with it. When the reply is lost,
        /// the lease is counted as the shorter of the old and the new one, now and for
        /// later calls, since the request may still reach Redis after them. With
        /// auto-renewal, it first waits for a renewal already on the wire to settle (about one
        /// response timeout at most), so that the two cannot land in the wrong order: a
        /// call can take about two response timeouts.
        ///
        /// # Errors
        ///
        /// [`Error::NotExpirable`](crate::Error::NotExpirable) when the lock has no expiry;
        /// [`Error::InvalidOptions`](crate::Error::InvalidOptions) for a `lease` under 1 ms
        /// or over 10 years; [`Error::LockLost`](crate::Error::LockLost) when the guard was
        /// lost; [`Error::NotAcquired`](crate::Error::NotAcquired) when the lock is no
        /// longer ours (the guard is then marked lost); [`Error::Timeout`](crate::Error::Timeout),
        /// [`Error::Unreachable`](crate::Error::Unreachable) and the other errors of a
        /// request when Redis cannot be reached.
        ///
        /// # Examples
        ///
        /// ```no_run
        #[doc = $setup]
        /// // the work turns out to be large
        /// guard.extend(std::time::Duration::from_secs(60))?;
        /// # Ok::<(), redis_mutex::Error>(())
        /// ```
        pub fn extend(&self, lease: std::time::Duration) -> crate::error::Result<()> {
            self.held().extend(lease)
        }

        #[doc = concat!("Asks Redis whether the ", $what, " is still ours. When it is not, the guard is")]
        /// marked [lost](Self::is_lost).
        ///
        /// # Errors
        ///
        /// The errors of a request ([`Error::Timeout`](crate::Error::Timeout),
        /// [`Error::Unreachable`](crate::Error::Unreachable), ...) when Redis cannot be
        /// asked.
        ///
        /// # Examples
        ///
        /// ```no_run
        #[doc = $setup]
        /// assert!(guard.is_held()?);
        /// # Ok::<(), redis_mutex::Error>(())
        /// ```
        pub fn is_held(&self) -> crate::error::Result<bool> {
            self.held().is_held()
        }

        #[doc = concat!("Whether the ", $what, " is known to be lost: a renewal found it gone or taken over,")]
        /// Redis could not be reached before the lease ran out, or a call on this guard
        /// found it no longer ours. No round trip. Once lost, always lost.
        ///
        /// A guard without auto-renewal is only found lost by its own calls
        /// ([`extend`](Self::extend), [`is_held`](Self::is_held),
        /// [`ensure_held`](Self::ensure_held)).
        ///
        /// # Examples
        ///
        /// ```no_run
        #[doc = $setup]
        /// while !guard.is_lost() {
        ///     // one more step of the work
        /// #   break;
        /// }
        /// # Ok::<(), redis_mutex::Error>(())
        /// ```
        pub fn is_lost(&self) -> bool {
            self.held().is_lost()
        }

        #[doc = concat!("Returns `Ok` if the ", $what, " is still ours, cheaply: no round trip while the local")]
        /// lease has more than a third of the expiry left, else one request. Call it before
        /// each step of long work that must not run twice.
        ///
        /// # Errors
        ///
        /// [`Error::LockLost`](crate::Error::LockLost) once the guard is lost (and the call
        /// that finds it so marks it); the errors of a request when Redis has to be asked
        /// and cannot be.
        ///
        /// # Examples
        ///
        /// ```no_run
        #[doc = $setup]
        /// for batch in 0..100 {
        ///     guard.ensure_held()?; // stop if another worker may have taken over
        ///     // process(batch)
        /// #   let _ = batch;
        /// }
        /// # Ok::<(), redis_mutex::Error>(())
        /// ```
        pub fn ensure_held(&self) -> crate::error::Result<()> {
            self.held().ensure_held()
        }

        #[doc = concat!("How long the ", $what, " is certainly still ours, by this process's monotonic clock:")]
        /// from an instant taken before the acquiring request was sent, less a margin for
        /// clock drift (1% plus 2 ms). Renewals and [`extend`](Self::extend) move it
        /// forward. `None` for a lock without expiry; zero once lost or run out.
        ///
        /// # Examples
        ///
        /// ```no_run
        #[doc = $setup]
        /// assert!(guard.valid_for().unwrap() <= std::time::Duration::from_secs(10));
        /// # Ok::<(), redis_mutex::Error>(())
        /// ```
        pub fn valid_for(&self) -> Option<std::time::Duration> {
            self.held().valid_for()
        }
    };
}

pub(crate) use guard_methods;
