//! The lease clock every guard carries: how long the lock is certainly still ours
//! ([`Lease::valid_for`]), whether it was lost, and the callback that hears of it.
//!
//! The clock counts from before the request that set the lease left (the server's clock
//! started no earlier than ours), less a margin for clock drift. It never says "held"
//! longer than Redis will: a request whose reply was lost may still run, so the lease is
//! cut to what that request would leave, now and for every later request (see
//! [`Lease::lost_reply`]).

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::LostReason;
use crate::metrics::{self, Labels};

/// A callback run once when a held lock is found lost.
pub(crate) type OnLost = Arc<dyn Fn(&LostLock) + Send + Sync>;

/// A lock that was found lost while its guard was held: what an
/// [`on_lost`](crate::RedisMutexBuilder::on_lost) callback gets.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use redis_mutex::{LostReason, Pool, RedisMutex};
///
/// let pool = Pool::new("redis://127.0.0.1/")?;
/// let mutex = RedisMutex::builder(pool, "nightly-report")
///     .expire(Duration::from_secs(30))
///     .auto_renewal(true)
///     .on_lost(|lost| eprintln!("lost `{}` ({})", lost.name, lost.reason))
///     .build()?;
/// # Ok::<(), redis_mutex::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LostLock {
    /// The lock's name (a read-write lock's path, a Redlock's resource).
    pub name: String,
    /// The owner id the lock was held under (a read-write lease's id, a Redlock's token).
    pub owner_id: String,
    /// The grant's fencing token, for locks that have one.
    pub fencing_token: Option<u64>,
    /// Why it was lost.
    pub reason: LostReason,
}

/// A grant an acquire attempt just made, before a guard holds it.
#[derive(Debug)]
pub(crate) struct NewGrant {
    /// Taken before the granting request was sent: the lease counts from here.
    pub(crate) sent_at: Instant,
    /// Its fencing token (0 for a read lease, which takes none).
    pub(crate) token: u64,
    /// On a cluster, the node it was made on: its renewals get a lane of their own.
    pub(crate) server: Option<Arc<str>>,
    /// The server it was made on (`host:port`): if a failover moves the lock away from it,
    /// a loss is told as the failover's.
    pub(crate) granted_on: Arc<str>,
}

impl NewGrant {
    /// A grant made on `conn`'s server by a request sent at `sent_at`.
    pub(crate) fn on(
        conn: &crate::conn::Conn,
        pool: &crate::pool::Pool,
        sent_at: Instant,
        token: u64,
    ) -> NewGrant {
        NewGrant {
            sent_at,
            token,
            server: pool.is_cluster().then(|| conn.server().into()),
            granted_on: conn.server().into(),
        }
    }
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

/// The part of a lease we do not count on: clocks drift, and Redis rounds expiries to the
/// millisecond. The Redlock page's rule, with its default factor: 1% of the lease plus 2 ms.
pub(crate) fn clock_margin(ttl: Duration, drift_factor: f64) -> Duration {
    ttl.mul_f64(drift_factor) + Duration::from_millis(2)
}

const DRIFT_FACTOR: f64 = 0.01;

/// Until when a lease of `ttl`, granted by a request sent at `sent_at`, is certainly ours.
fn lease_end(sent_at: Instant, ttl: Duration) -> Instant {
    let certain = ttl.saturating_sub(clock_margin(ttl, DRIFT_FACTOR));
    // An expiry too far off to represent is, for any caller, forever.
    sent_at
        .checked_add(certain)
        .unwrap_or(sent_at + Duration::from_secs(u32::MAX.into()))
}

/// What a guard knows, without asking Redis, about how long its lock is still ours.
pub(crate) struct Lease {
    /// Who held what: the report for `on_lost` is made of it.
    holder: Holder,
    /// `None` for a lock that never expires.
    valid_until: Mutex<Option<Instant>>,
    /// The shortest lease a request whose reply was lost asked for: it may still run, after
    /// any later request, so no later request counts for more.
    doubt: Mutex<Option<Duration>>,
    lost: AtomicBool,
    /// Why it was lost, once that is known.
    reason: Mutex<Option<LostReason>>,
    /// Renewed by the renewal service: a lease that runs out unrenewed is lost by the clock.
    renewed: AtomicBool,
    /// The grant's handle was given out: another process may take the grant over at any
    /// moment, so the clock alone never says it is still ours.
    handed_out: AtomicBool,
    on_lost: Option<OnLost>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.holder.name)
            .field("valid_for", &self.valid_for())
            .field("lost", &self.is_lost())
            .finish()
    }
}

/// Who holds a lease: the lock's name, the owner id and the fencing token, if any; and the
/// labels of the lock's metrics. (Shared strings: one is made for every grant.)
#[derive(Debug, Clone)]
pub(crate) struct Holder {
    pub(crate) name: Arc<str>,
    pub(crate) owner_id: Arc<str>,
    pub(crate) fencing_token: Option<u64>,
    pub(crate) labels: Labels,
}

impl Lease {
    /// A lease granted by a request sent at `sent_at` with expiry `ttl` (`None`: never
    /// expires). `sent_at` must be taken before the request left.
    pub(crate) fn new(
        holder: Holder,
        sent_at: Instant,
        ttl: Option<Duration>,
        on_lost: Option<OnLost>,
    ) -> Self {
        Lease::with_end(holder, ttl.map(|ttl| lease_end(sent_at, ttl)), on_lost)
    }

    /// A lease that is certainly ours until `valid_until`, for locks that work out their
    /// validity themselves (a Redlock: the ttl less the time its round took and a margin).
    pub(crate) fn until(holder: Holder, valid_until: Instant, on_lost: Option<OnLost>) -> Self {
        Lease::with_end(holder, Some(valid_until), on_lost)
    }

    fn with_end(holder: Holder, valid_until: Option<Instant>, on_lost: Option<OnLost>) -> Self {
        Lease {
            holder,
            valid_until: Mutex::new(valid_until),
            doubt: Mutex::new(None),
            lost: AtomicBool::new(false),
            reason: Mutex::new(None),
            renewed: AtomicBool::new(false),
            handed_out: AtomicBool::new(false),
            on_lost,
        }
    }

    /// The renewal service keeps this lease: from now on, its clock running out is a loss.
    pub(crate) fn renewed_from_now(&self) {
        self.renewed.store(true, Ordering::Release);
    }

    pub(crate) fn name(&self) -> &str {
        &self.holder.name
    }

    pub(crate) fn fencing_token(&self) -> Option<u64> {
        self.holder.fencing_token
    }

    /// The labels of the lock's metrics.
    pub(crate) fn labels(&self) -> &Labels {
        &self.holder.labels
    }

    /// How long the lock is certainly still ours; `None` without expiry, zero once lost.
    pub(crate) fn valid_for(&self) -> Option<Duration> {
        let until = (*self.valid_until.lock())?;
        if self.is_lost() {
            return Some(Duration::ZERO);
        }
        Some(until.saturating_duration_since(Instant::now()))
    }

    /// Whether more than a third of a `lease` is certainly left: then `ensure_held` needs no
    /// round trip (a renewed lease never has less, and the lock cannot run out before the
    /// caller's next step). False for a lock without expiry.
    fn comfortably_valid(&self, lease: Option<Duration>) -> bool {
        matches!((self.valid_for(), lease), (Some(left), Some(lease)) if left > lease / 3)
    }

    /// Whether the lock is still ours, for `ensure_held`: false once lost; true without a
    /// round trip while the lease is [comfortably valid](Self::comfortably_valid) for a
    /// lease of `lease` (and its handle was not given out); else what `ask` (a question to
    /// Redis) answers.
    pub(crate) fn still_held(
        &self,
        lease: Option<Duration>,
        ask: impl FnOnce() -> crate::error::Result<bool>,
    ) -> crate::error::Result<bool> {
        if self.is_lost() {
            return Ok(false);
        }
        if self.comfortably_valid(lease) && !self.handed_out.load(Ordering::Acquire) {
            return Ok(true);
        }
        ask()
    }

    /// The grant's handle was given out: from now on, only Redis says it is still ours.
    pub(crate) fn hand_out(&self) {
        self.handed_out.store(true, Ordering::Release);
    }

    /// Records that a request sent at `sent_at` set the remaining lease to `ttl`: the lease
    /// then ends `ttl` later, or sooner if a request whose reply was lost asked for less
    /// (it may yet run after this one).
    fn extended(&self, sent_at: Instant, ttl: Duration) {
        let ttl = self.doubt.lock().map_or(ttl, |doubt| doubt.min(ttl));
        self.extend_to(lease_end(sent_at, ttl));
    }

    /// Records that the lock is certainly ours until `valid_until`.
    pub(crate) fn extend_to(&self, valid_until: Instant) {
        *self.valid_until.lock() = Some(valid_until);
    }

    /// Records that the lock may be ours no longer than `until`: the lease ends then at
    /// the latest (a lease without expiry gets one).
    pub(crate) fn shorten_to(&self, until: Instant) {
        let mut valid_until = self.valid_until.lock();
        *valid_until = Some(valid_until.map_or(until, |current| current.min(until)));
    }

    /// Records that a request sent at `sent_at` to set the lease to `ttl` got no reply:
    /// Redis may have run it, or may run it later still, after requests sent since. The
    /// lease may then end as early as `sent_at + ttl`, and no later request makes it last
    /// longer than `ttl` from when that request was sent.
    fn lost_reply(&self, sent_at: Instant, ttl: Duration) {
        {
            let mut doubt = self.doubt.lock();
            *doubt = Some(doubt.map_or(ttl, |d| d.min(ttl)));
        }
        self.shorten_to(lease_end(sent_at, ttl));
    }

    /// Moves the lease with what a renewal or an extend came to: on from when it was sent
    /// when it was renewed, cut to its ttl from then when its reply was lost (it may still
    /// run); nothing otherwise.
    pub(crate) fn apply(&self, renewal: &Renewal) {
        match *renewal {
            Renewal::Renewed { sent_at, ttl } => self.extended(sent_at, ttl),
            Renewal::RenewedUntil { valid_until, .. } => self.extend_to(valid_until),
            Renewal::MayHaveRun { sent_at, ttl, .. } => self.lost_reply(sent_at, ttl),
            Renewal::Gone { .. } | Renewal::Failed(_) => {}
        }
    }

    /// The shortest lease a later request can count on (see [`lost_reply`](Self::lost_reply)).
    pub(crate) fn doubt(&self) -> Option<Duration> {
        *self.doubt.lock()
    }

    /// Whether the lease is lost: marked so, or, for a renewed lease, run out on the clock
    /// with no renewal confirmed (the clock decides, not a reply that may never come; the
    /// renewal service reports it with `on_lost` when its bounded call returns).
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire) || self.ran_out_unrenewed()
    }

    /// A renewed lease whose clock has run out.
    fn ran_out_unrenewed(&self) -> bool {
        self.renewed.load(Ordering::Acquire)
            && self
                .valid_until
                .lock()
                .is_some_and(|until| Instant::now() >= until)
    }

    /// Marks the lease lost, once: logs why at WARN and runs the `on_lost` callback. Later
    /// calls do nothing. A panicking callback is logged, not propagated: it runs on the
    /// renewal thread, which serves other guards too.
    pub(crate) fn mark_lost(&self, reason: LostReason, why: &str) {
        if self.lost.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.reason.lock() = Some(reason);
        log::warn!("lock `{}` lost ({reason}): {why}", self.holder.name);
        metrics::lost(&self.holder.labels, reason.label());
        if let Some(callback) = &self.on_lost {
            let report = LostLock {
                name: self.holder.name.to_string(),
                owner_id: self.holder.owner_id.to_string(),
                fencing_token: self.holder.fencing_token,
                reason,
            };
            if catch_unwind(AssertUnwindSafe(|| callback(&report))).is_err() {
                log::error!(
                    "the on_lost callback of lock `{}` panicked",
                    self.holder.name
                );
            }
        }
    }

    /// Marks the lease lost without the `on_lost` callback: for losses found by the
    /// holder's own calls, which report them through their result.
    pub(crate) fn mark_lost_quietly(&self, reason: LostReason, why: &str) {
        if !self.lost.swap(true, Ordering::AcqRel) {
            *self.reason.lock() = Some(reason);
            log::debug!("lock `{}` lost ({reason}): {why}", self.holder.name);
            metrics::lost(&self.holder.labels, "found_by_holder");
        }
    }

    /// Why a lock found gone by a renewal was lost: while our lease still ran, it was
    /// deleted (or taken by someone sharing our id); after, it ran out.
    pub(crate) fn why_gone(&self, taken: bool) -> LostReason {
        match (taken, self.valid_for()) {
            (true, _) => LostReason::TakenOver,
            (false, Some(left)) if !left.is_zero() => LostReason::Reset,
            (false, None) => LostReason::Reset,
            _ => LostReason::Expired,
        }
    }

    /// Why the lease was lost, as far as is known: what its renewal found, else what its
    /// clock says (run out: expired; still running, or no expiry: deleted under it).
    pub(crate) fn lost_reason(&self) -> LostReason {
        if let Some(reason) = *self.reason.lock() {
            return reason;
        }
        let ran_out = self
            .valid_until
            .lock()
            .is_some_and(|until| Instant::now() >= until);
        if ran_out {
            LostReason::Expired
        } else {
            LostReason::Reset
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::atomic::AtomicUsize;

    fn holder() -> Holder {
        Holder {
            name: "a".into(),
            owner_id: "me".into(),
            fencing_token: Some(7),
            labels: Labels::new("mutex", None),
        }
    }

    #[test]
    fn lease_never_claims_more_than_the_ttl_minus_the_margin() {
        let sent_at = Instant::now();
        let lease = Lease::new(holder(), sent_at, Some(Duration::from_secs(10)), None);
        let left = lease.valid_for().unwrap();
        assert!(left <= Duration::from_millis(10_000 - 100 - 2), "{left:?}");
        assert!(left > Duration::from_secs(9), "{left:?}");
    }

    #[test]
    fn tiny_and_huge_ttls_do_not_overflow() {
        let now = Instant::now();
        let tiny = Lease::new(holder(), now, Some(Duration::from_millis(1)), None);
        assert_eq!(tiny.valid_for(), Some(Duration::ZERO));
        let huge = Lease::new(holder(), now, Some(Duration::MAX), None);
        assert!(huge.valid_for().unwrap() > Duration::from_secs(1 << 30));
        assert_eq!(Lease::new(holder(), now, None, None).valid_for(), None);
    }

    #[test]
    fn an_explicit_end_is_kept_and_only_shortened() {
        let now = Instant::now();
        let lease = Lease::until(holder(), now + Duration::from_secs(10), None);
        assert!(lease.valid_for().unwrap() > Duration::from_secs(9));
        lease.shorten_to(now + Duration::from_secs(20));
        assert!(lease.valid_for().unwrap() <= Duration::from_secs(10));
        lease.shorten_to(now + Duration::from_secs(1));
        assert!(lease.valid_for().unwrap() <= Duration::from_secs(1));
        let forever = Lease::new(holder(), now, None, None);
        forever.shorten_to(now);
        assert_eq!(forever.valid_for(), Some(Duration::ZERO));
    }

    #[test]
    fn a_lost_reply_caps_every_later_lease() {
        let s = Duration::from_secs;
        let lease = Lease::new(holder(), Instant::now(), Some(s(10)), None);
        // A renewal to 10 s whose reply was lost, then an extend to 60 s that came back:
        // the stale renewal may still land after the extend and cut the key to 10 s.
        lease.lost_reply(Instant::now(), s(10));
        lease.extended(Instant::now(), s(60));
        assert!(
            lease.valid_for().unwrap() <= s(10),
            "{:?}",
            lease.valid_for()
        );
        assert_eq!(lease.doubt(), Some(s(10)));
        // A shorter lost reply lowers the cap; a longer one does not raise it.
        lease.lost_reply(Instant::now(), s(3));
        lease.lost_reply(Instant::now(), s(30));
        lease.extended(Instant::now(), s(60));
        assert!(lease.valid_for().unwrap() <= s(3));
        // It also cuts the current lease at once.
        let other = Lease::new(holder(), Instant::now(), Some(s(60)), None);
        other.lost_reply(Instant::now(), s(2));
        assert!(other.valid_for().unwrap() <= s(2));
    }

    #[test]
    fn lost_is_sticky_and_reported_once_with_the_holder() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(None));
        let (counter, record) = (calls.clone(), seen.clone());
        let lease = Lease::new(
            holder(),
            Instant::now(),
            Some(Duration::from_secs(5)),
            Some(Arc::new(move |lost: &LostLock| {
                counter.fetch_add(1, Ordering::SeqCst);
                *record.lock() = Some(lost.clone());
            })),
        );
        assert_eq!(lease.why_gone(false), LostReason::Reset);
        assert_eq!(lease.why_gone(true), LostReason::TakenOver);
        lease.mark_lost(LostReason::Reset, "test");
        lease.mark_lost(LostReason::Expired, "again");
        lease.extended(Instant::now(), Duration::from_secs(5));
        assert!(lease.is_lost());
        assert_eq!(lease.valid_for(), Some(Duration::ZERO));
        assert_eq!(lease.why_gone(false), LostReason::Expired);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let seen = seen.lock().clone().unwrap();
        assert_eq!(
            (
                seen.name.as_str(),
                seen.owner_id.as_str(),
                seen.fencing_token,
                seen.reason
            ),
            ("a", "me", Some(7), LostReason::Reset)
        );
    }

    #[test]
    fn a_panicking_callback_goes_no_further() {
        let lease = Lease::new(
            holder(),
            Instant::now(),
            Some(Duration::from_secs(5)),
            Some(Arc::new(|_: &LostLock| panic!("boom"))),
        );
        lease.mark_lost(LostReason::Unreachable, "test");
        assert!(lease.is_lost());
    }

    #[test]
    fn a_lease_tells_who_holds_it() {
        let lease = Lease::new(holder(), Instant::now(), Some(Duration::from_secs(5)), None);
        assert_eq!((lease.name(), lease.fencing_token()), ("a", Some(7)));
        let debug = format!("{lease:?}");
        assert!(
            debug.contains("name: \"a\"") && debug.contains("lost: false"),
            "{debug}"
        );
        let untokened = Lease::new(
            Holder {
                fencing_token: None,
                ..holder()
            },
            Instant::now(),
            None,
            None,
        );
        assert_eq!(untokened.fencing_token(), None);
    }

    #[test]
    fn lost_reasons_read_as_words() {
        let words: Vec<String> = [
            LostReason::TakenOver,
            LostReason::Reset,
            LostReason::Expired,
            LostReason::Unreachable,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            words,
            [
                "taken over",
                "reset",
                "expired",
                "unreachable until the lease ran out"
            ]
        );
    }

    #[test]
    fn a_lease_is_comfortably_valid_while_more_than_a_third_is_left() {
        let s = Duration::from_secs;
        let now = Instant::now();
        let lease = Lease::until(holder(), now + s(10), None);
        assert!(lease.comfortably_valid(Some(s(15))), "10 s left of 15");
        assert!(!lease.comfortably_valid(Some(s(60))), "10 s left of 60");
        assert!(!lease.comfortably_valid(None), "no lease to compare with");
        let forever = Lease::new(holder(), now, None, None);
        assert!(!forever.comfortably_valid(Some(s(15))), "no expiry");
        lease.mark_lost_quietly(LostReason::Expired, "test");
        assert!(!lease.comfortably_valid(Some(s(15))), "lost");
    }

    #[test]
    fn still_held_asks_redis_only_when_the_clock_cannot_tell() {
        let s = Duration::from_secs;
        let asked = AtomicUsize::new(0);
        let ask = |answer: bool| {
            let asked = &asked;
            move || {
                asked.fetch_add(1, Ordering::SeqCst);
                Ok(answer)
            }
        };
        let lease = Lease::until(holder(), Instant::now() + s(10), None);
        // Comfortably valid: yes, without a round trip.
        assert!(lease.still_held(Some(s(15)), ask(false)).unwrap());
        assert_eq!(asked.load(Ordering::SeqCst), 0);
        // Not comfortably valid: Redis decides, either way.
        assert!(lease.still_held(Some(s(60)), ask(true)).unwrap());
        assert!(!lease.still_held(Some(s(60)), ask(false)).unwrap());
        assert_eq!(asked.load(Ordering::SeqCst), 2);
        let failed = lease.still_held(Some(s(60)), || Err(Error::Protocol { what: "test" }));
        assert!(matches!(failed, Err(Error::Protocol { .. })));
        // Lost: no, without a round trip.
        lease.mark_lost_quietly(LostReason::Expired, "test");
        assert!(!lease.still_held(Some(s(15)), ask(true)).unwrap());
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn an_extension_moves_the_end_of_the_lease() {
        let s = Duration::from_secs;
        let now = Instant::now();
        let lease = Lease::until(holder(), now + s(1), None);
        lease.extended(now, s(60));
        let left = lease.valid_for().unwrap();
        assert!(left > s(58) && left <= s(60), "{left:?}");
        // A later extension may also shorten it: it is what Redis was told last.
        lease.extended(now, s(10));
        assert!(lease.valid_for().unwrap() <= s(10));
        lease.extend_to(now + s(30));
        assert!(lease.valid_for().unwrap() > s(20));
        let forever = Lease::new(holder(), now, None, None);
        forever.extend_to(now + s(30));
        assert!(forever.valid_for().unwrap() <= s(30));
    }

    #[test]
    fn a_loss_found_by_the_holder_skips_the_callback_and_is_logged_once() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let lease = Lease::new(
            Holder {
                name: "quietly-lost".into(),
                ..holder()
            },
            Instant::now(),
            Some(Duration::from_secs(5)),
            Some(Arc::new(move |_: &LostLock| {
                counter.fetch_add(1, Ordering::SeqCst);
            })),
        );
        let logged = log_lines("quietly-lost");
        lease.mark_lost_quietly(LostReason::Expired, "test");
        lease.mark_lost_quietly(LostReason::Expired, "again");
        lease.mark_lost(LostReason::Reset, "and again");
        assert!(lease.is_lost());
        assert_eq!(lease.valid_for(), Some(Duration::ZERO));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "the holder's call reports it"
        );
        assert_eq!(logged(), ["lock `quietly-lost` lost (expired): test"]);
    }

    /// Starts keeping the log records that mention `marker` (this process' logger is this
    /// test module's); returns what they are so far.
    fn log_lines(marker: &'static str) -> impl Fn() -> Vec<String> {
        struct Recorder(Mutex<Vec<String>>);
        impl log::Log for Recorder {
            fn enabled(&self, _: &log::Metadata<'_>) -> bool {
                true
            }
            fn log(&self, record: &log::Record<'_>) {
                self.0.lock().push(record.args().to_string());
            }
            fn flush(&self) {}
        }
        static RECORDER: Recorder = Recorder(Mutex::new(Vec::new()));
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            log::set_logger(&RECORDER).expect("no other logger in the unit tests");
            log::set_max_level(log::LevelFilter::Trace);
        });
        move || {
            let lines = RECORDER.0.lock();
            lines
                .iter()
                .filter(|line| line.contains(marker))
                .cloned()
                .collect()
        }
    }
}
