//! The lease core every guard is built on: a grant held in Redis, its lease clock, its
//! registration with the renewal service, and the calls every guard offers (`unlock`,
//! `extend`, `is_held`, `ensure_held`, `valid_for`, `is_lost`). A lock kind says how to
//! release, extend and check one of its grants by implementing [`Grant`]; everything else
//! is here, once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn::{Conn, Failed};
use crate::duration::check_duration;
use crate::lease::{Holder, Lease};
use crate::metrics;
use crate::options::LockOptions;
use crate::renewal::{self, LaneKey, Registration, Renew, Renewal, Renewing};
use crate::{Error, Pool, Result};

/// A grant an acquire attempt just made, before a guard holds it.
#[derive(Debug)]
pub(crate) struct NewGrant {
    /// Taken before the granting request was sent: the lease counts from here.
    sent_at: Instant,
    /// Its fencing token (0 for a read lease, which takes none).
    pub(crate) token: u64,
    /// On a cluster, the node it was made on: its renewals get a lane of their own.
    server: Option<Arc<str>>,
}

impl NewGrant {
    /// A grant made on `conn`'s server by a request sent at `sent_at`.
    pub(crate) fn on(conn: &Conn, pool: &Pool, sent_at: Instant, token: u64) -> NewGrant {
        NewGrant {
            sent_at,
            token,
            server: pool.is_cluster().then(|| conn.server().into()),
        }
    }
}

/// One grant of a lock kind: the requests a guard makes about it.
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
}

/// Where a grant of a single-server lock lives, and what bounds its requests: the part of
/// every such grant the renewal service needs.
pub(crate) struct OnServer {
    pub(crate) pool: Pool,
    /// The lock's name (a read-write lock's path).
    pub(crate) name: Arc<str>,
    /// The expiry the lock was taken with; renewals restore it.
    pub(crate) ttl: Option<Duration>,
    pub(crate) response_timeout: Duration,
    /// On a cluster, the node the grant was made on: its renewals get a lane of their own.
    server: Option<Arc<str>>,
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
        }
    }
}

impl OnServer {
    /// Sends `op` (an extend or a check of a grant renewed alone, on a key `route` of its
    /// lock), the checkout and the reply both bounded by `reply_timeout` (a renewal's share
    /// of what is left of the lease, or the response timeout); `what` names it in errors.
    pub(crate) fn send_within<T>(
        &self,
        route: &str,
        reply_timeout: Duration,
        what: &'static str,
        op: impl FnMut(&mut Conn) -> redis::RedisResult<T>,
    ) -> std::result::Result<T, Failed> {
        let wait = reply_timeout.min(self.pool.connection_timeout());
        let mut conn = crate::conn::checkout(&self.pool, route, wait, reply_timeout)
            .map_err(Failed::Refused)?;
        conn.set_read_timeout(reply_timeout)
            .map_err(Failed::Refused)?;
        crate::conn::run(&self.pool, route, Some(conn), self.response_timeout, op)
            .map_err(Failed::Refused)?
            .outcome(&self.name, what)
    }

    /// One renewal of a grant renewed alone: `send` sets its lease to the lock's expiry (in
    /// ms) within the time given, and says whether the grant was still ours.
    pub(crate) fn renew_alone(
        &self,
        timeout: Duration,
        send: impl FnOnce(u64, Duration) -> std::result::Result<bool, Failed>,
    ) -> Renewal {
        let ttl = self.ttl.unwrap_or(Duration::MAX);
        let sent_at = Instant::now();
        match send(
            crate::duration::millis(ttl),
            timeout.min(self.response_timeout),
        ) {
            Ok(true) => Renewal::Renewed { sent_at, ttl },
            Ok(false) => Renewal::Gone { taken: false },
            Err(Failed::NoReply(e)) => Renewal::MayHaveRun {
                sent_at,
                ttl,
                why: e.to_string(),
            },
            Err(Failed::Refused(e)) => Renewal::Failed(e.to_string()),
        }
    }
}

/// A grant renewed alone, by one extend request of its own (a read-write lock's lease, a
/// semaphore's permits): its extend, check and renewal are all that request.
pub(crate) trait ExtendAlone: Send + Sync + 'static {
    fn on(&self) -> &OnServer;

    /// Sets the grant's lease to `lease_ms` (0: only checks it), the request bounded by
    /// `within`; whether it was still ours.
    fn send_extend(&self, lease_ms: u64, within: Duration) -> std::result::Result<bool, Failed>;

    /// [`Grant::extend`] by this request.
    fn extend_alone(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let within = self.on().response_timeout;
        extend_lease(lease, ttl, || {
            self.send_extend(crate::duration::millis(ttl), within)
        })
    }

    /// [`Grant::check`] by this request.
    fn check_alone(&self) -> Result<bool> {
        self.send_extend(0, self.on().response_timeout)
            .map_err(Failed::into_error)
    }
}

impl<G: ExtendAlone> ServerGrant for G {
    fn on_server(&self) -> &OnServer {
        self.on()
    }

    fn renewing(&self) -> Renewing<'_> {
        Renewing::Alone(self)
    }
}

impl<G: ExtendAlone> renewal::RenewAlone for G {
    fn renew(&self, timeout: Duration) -> Renewal {
        self.on()
            .renew_alone(timeout, |ms, within| self.send_extend(ms, within))
    }
}

/// A grant of a single-server lock: renewed on its server's lane, bounded by its response
/// timeout, restoring the lock's expiry; how is its own.
pub(crate) trait ServerGrant: Send + Sync + 'static {
    fn on_server(&self) -> &OnServer;

    /// How the grant is renewed: see [`Renew::renewing`].
    fn renewing(&self) -> Renewing<'_>;
}

impl<G: ServerGrant> Renew for G {
    fn ttl(&self) -> Duration {
        // Only grants with an expiry are renewed.
        self.on_server().ttl.unwrap_or(Duration::MAX)
    }

    fn lane(&self) -> LaneKey {
        let on = self.on_server();
        LaneKey::Pool {
            pool: on.pool.id(),
            server: on.server.clone(),
        }
    }

    fn bound(&self) -> Duration {
        self.on_server().response_timeout
    }

    fn renewing(&self) -> Renewing<'_> {
        ServerGrant::renewing(self)
    }
}

/// Sends an extend of a single-server grant to `ttl` (`send` says whether the grant was still
/// ours), and moves `lease` with what came of it: on from when it was sent when it was
/// extended, cut to `ttl` from then when its reply was lost (it may still run).
///
/// Errors: the request's.
pub(crate) fn extend_lease(
    lease: &Lease,
    ttl: Duration,
    send: impl FnOnce() -> std::result::Result<bool, Failed>,
) -> Result<bool> {
    let sent_at = Instant::now();
    match send() {
        Ok(true) => {
            lease.extended(sent_at, ttl);
            Ok(true)
        }
        Ok(false) => Ok(false),
        Err(Failed::NoReply(e)) => {
            lease.lost_reply(sent_at, ttl);
            Err(e)
        }
        Err(Failed::Refused(e)) => Err(e),
    }
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

    fn lost_error(&self) -> Error {
        Error::LockLost {
            name: self.grant.name().to_owned(),
        }
    }

    fn not_acquired(&self) -> Error {
        Error::NotAcquired {
            name: self.grant.name().to_owned(),
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
        let released = self.grant.release();
        if let Ok(ours) = released {
            metrics::released(self.lease.labels(), self.acquired_at.elapsed(), ours);
        }
        match &released {
            Ok(true) => {
                self.released_ours = true;
                log::debug!("released {} `{}`", self.grant.kind(), self.grant.name());
            }
            Ok(false) => self
                .lease
                .mark_lost_quietly("its release found it no longer ours"),
            Err(_) => {}
        }
        released
    }

    /// Releases the grant and says whether it was still ours.
    ///
    /// Errors: [`Error::LockLost`] when it was known lost (the release was still tried);
    /// [`Error::NotAcquired`] when it was no longer ours; the release's own error.
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
            self.lease
                .mark_lost_quietly("an extend found it no longer ours");
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
            self.lease.mark_lost_quietly("it is no longer ours");
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
            self.lease.mark_lost_quietly("it is no longer ours");
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
        pub fn extend(&self, lease: std::time::Duration) -> crate::Result<()> {
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
        pub fn is_held(&self) -> crate::Result<bool> {
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
        pub fn ensure_held(&self) -> crate::Result<()> {
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
