//! Work that runs at most once per period across a fleet: [`RedisMutex::once_per`], and the
//! two steps it is made of for callers that hold the lock themselves (`redis-mutex run
//! --once-per`): [`RedisMutex::period_window`] and [`RedisMutex::mark_period_done`].
//!
//! Periods are windows of the server's clock, `floor(now / period)`: each UTC day for 24 h,
//! each hour for 1 h. A window is marked done by `lock-once:<name>:<period ms>:<window>`
//! (`<token>|<ms since 1970>|<owner id>`), written by `once_per.lua` only while the lock is
//! held by the grant whose token it names; it lives until its window has ended.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::keys::LOCKS;
use super::{ONCE_PER, RedisMutex, RedisMutexGuard};
use crate::conn;
use crate::error::{Error, LostReason, Result};
use crate::time::millis;

/// How long a done marker outlives its window: past any clock difference between the
/// servers a failover moves the lock between.
const MARKER_GRACE: Duration = Duration::from_secs(60);

/// What [`RedisMutex::once_per`] did.
#[derive(Debug)]
pub enum OncePer<T, E> {
    /// The closure ran in this window and returned `Ok`: the window is marked done.
    Ran(T),
    /// The closure ran in this window and returned `Err`: the window is not marked, and
    /// the next caller runs it again.
    Failed(E),
    /// The window was done already, by whom and when it says; the closure did not run.
    AlreadyDone(PeriodDone),
}

impl<T, E> OncePer<T, E> {
    /// The closure's `Ok` value, when it ran and succeeded.
    pub fn ran(self) -> Option<T> {
        match self {
            OncePer::Ran(t) => Some(t),
            _ => None,
        }
    }

    /// The closure's `Err` value, when it ran and failed.
    pub fn failed(self) -> Option<E> {
        match self {
            OncePer::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Who did the window, when it was done already and the closure did not run.
    pub fn done_by(&self) -> Option<&PeriodDone> {
        match self {
            OncePer::AlreadyDone(done) => Some(done),
            _ => None,
        }
    }
}

/// Who did a window of a period, and when (the server's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeriodDone {
    /// The owner id the lock was held under.
    pub owner_id: String,
    /// The fencing token of the grant that did it.
    pub fencing_token: u64,
    /// When it was marked done (the work's end), by the server's clock.
    pub at: SystemTime,
}

/// A window of a period, as the server's clock places it now, and whether it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeriodWindow {
    /// The period.
    pub period: Duration,
    /// When the window began: a multiple of the period since 1970 (UTC).
    pub start: SystemTime,
    /// Who did it, if anyone.
    pub done: Option<PeriodDone>,
    /// Its number: the server's `floor(now / period)`.
    index: u64,
}

impl PeriodWindow {
    /// When the window ends (and the next begins).
    pub fn end(&self) -> SystemTime {
        self.start + self.period
    }
}

/// `<token>|<ms>|<owner id>`, the marker's value; `None` for another shape.
fn parse_marker(marker: &str) -> Option<PeriodDone> {
    let mut parts = marker.splitn(3, '|');
    let fencing_token = parts.next()?.parse().ok()?;
    let ms: u64 = parts.next()?.parse().ok()?;
    let owner_id = parts.next()?.to_owned();
    Some(PeriodDone {
        owner_id,
        fencing_token,
        at: UNIX_EPOCH + Duration::from_millis(ms),
    })
}

fn check_period(period: Duration) -> Result<u64> {
    if period < Duration::from_millis(1) || period > crate::time::MAX_DURATION {
        return Err(Error::invalid(
            "period",
            format!("{period:?} is not between 1 ms and 10 years"),
        ));
    }
    Ok(millis(period))
}

impl RedisMutex {
    /// Runs `f` under the lock at most once in each window of `period` across every
    /// process that calls it for this name, and marks the window done when `f` returns
    /// `Ok`. Windows are of the server's clock, `floor(now / period)`: each UTC day for
    /// 24 h, each hour for 1 h (not spans from the last run: a daily job started at 02:05
    /// does not make tomorrow's 02:00 skip).
    ///
    /// A caller that comes while another runs `f` waits for the lock (as
    /// [`lock`](Self::lock)) and then finds the window done. The mark is written by one
    /// script only while this grant still holds the lock (checked by its fencing token), so
    /// a run whose lock was lost (expired during a pause, reset) does not mark the window:
    /// use auto-renewal for work longer than the expiry. When `f` returns `Err`, the window
    /// stays open and the next caller runs `f` again. A window is the one the server's
    /// clock was in when the lock was taken, however long `f` runs.
    ///
    /// Returns `OncePer::Ran` with `f`'s `Ok` value, `OncePer::Failed` with its `Err`, or
    /// `OncePer::AlreadyDone` with who did the window and when (`f` did not run).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for a period under 1 ms or over 10 years. As for
    /// [`lock`](Self::lock) before `f` runs. After `f` returned `Ok`:
    /// [`Error::LockLost`] when the lock was no longer held by this grant (the window is
    /// not marked, `f`'s value is dropped), or the mark's or the release's own error.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, RedisMutex};
    ///
    /// let mutex = RedisMutex::builder(Pool::new("redis://127.0.0.1/")?, "nightly-report")
    ///     .expire(Duration::from_secs(60))
    ///     .auto_renewal(true)
    ///     .build()?;
    /// // Every host's cron calls this; one host a day runs the report.
    /// let outcome = mutex.once_per(Duration::from_secs(24 * 3600), || {
    ///     // ... make the report ...
    ///     Ok::<_, std::io::Error>(42)
    /// })?;
    /// if let Some(done) = outcome.done_by() {
    ///     println!("done today already, by {} at {:?}", done.owner_id, done.at);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn once_per<T, E>(
        &self,
        period: Duration,
        f: impl FnOnce() -> std::result::Result<T, E>,
    ) -> Result<OncePer<T, E>> {
        // Done already: no need to wait for the lock.
        if let Some(done) = self.period_window(period)?.done {
            return Ok(OncePer::AlreadyDone(done));
        }
        let guard = self.lock()?;
        let window = self.period_window(period)?;
        if let Some(done) = window.done {
            guard.unlock()?;
            return Ok(OncePer::AlreadyDone(done));
        }
        match f() {
            Ok(value) => {
                self.mark_period_done(&guard, &window)?;
                guard.unlock()?;
                Ok(OncePer::Ran(value))
            }
            Err(e) => {
                guard.unlock()?;
                Ok(OncePer::Failed(e))
            }
        }
    }

    /// The window of `period` the server's clock is in now, and who did it if it is done:
    /// the first half of [`once_per`](Self::once_per), for callers that hold the lock
    /// themselves (ask again once the lock is taken: the window may have been done while
    /// this caller waited).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for a period under 1 ms or over 10 years;
    /// [`Error::Unreachable`], [`Error::Timeout`], [`Error::PoolTimeout`] or
    /// [`Error::Redis`] when Redis cannot be asked.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use redis_mutex::{Pool, RedisMutex};
    /// let mutex = RedisMutex::new(Pool::new("redis://127.0.0.1/")?, "hourly-sync")?;
    /// let window = mutex.period_window(Duration::from_secs(3600))?;
    /// match window.done {
    ///     Some(done) => println!("this hour's sync was done by {}", done.owner_id),
    ///     None => println!("not yet done this hour (it began at {:?})", window.start),
    /// }
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn period_window(&self, period: Duration) -> Result<PeriodWindow> {
        let period_ms = check_period(period)?;
        let keys = self.keys();
        let ran = conn::run_repeatable(&self.pool, &keys.lock, self.deadline(), |c| {
            let (secs, micros): (u64, u64) = redis::cmd("TIME").query(c)?;
            let now_ms = secs * 1000 + micros / 1000;
            let index = now_ms / period_ms;
            let marker: Option<String> = redis::cmd("GET")
                .arg(self.done_key(period_ms, index))
                .query(c)?;
            Ok((index, marker))
        })?;
        let (index, marker) = ran.reply(&self.name, "period_window")?;
        Ok(PeriodWindow {
            period,
            start: UNIX_EPOCH + Duration::from_millis(index.saturating_mul(period_ms)),
            done: marker.as_deref().and_then(parse_marker),
            index,
        })
    }

    /// Marks `window` done by the grant `guard` holds, only if that grant still holds the
    /// lock (one script checks its fencing token and writes the mark): the second half of
    /// [`once_per`](Self::once_per). When the window was marked already (by a holder of a
    /// lock taken under another mutex object's view of it), the mark found is returned.
    ///
    /// Returns the mark: who, with which token, when.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when the lock is no longer held by this grant (nothing is
    /// written); [`Error::InvalidOptions`] when `guard` is not a guard of this mutex;
    /// [`Error::Unreachable`], [`Error::Timeout`], [`Error::PoolTimeout`] or
    /// [`Error::Redis`] when Redis cannot be asked.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use redis_mutex::{Pool, RedisMutex};
    /// let mutex = RedisMutex::new(Pool::new("redis://127.0.0.1/")?, "hourly-sync")?;
    /// let guard = mutex.lock()?;
    /// let window = mutex.period_window(Duration::from_secs(3600))?;
    /// if window.done.is_none() {
    ///     // ... sync ...
    ///     mutex.mark_period_done(&guard, &window)?;
    /// }
    /// guard.unlock()?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn mark_period_done(
        &self,
        guard: &RedisMutexGuard<'_>,
        window: &PeriodWindow,
    ) -> Result<PeriodDone> {
        if !std::ptr::eq(guard.mutex(), self) {
            return Err(Error::invalid(
                "guard",
                "a guard of another mutex object; mark through the mutex it was locked with",
            ));
        }
        let period_ms = check_period(window.period)?;
        let handle = guard.handle();
        let keys = self.keys();
        let end_ms = window.index.saturating_add(1).saturating_mul(period_ms);
        let mut call = ONCE_PER.call();
        call.key(&keys.lock)
            .key(&keys.grant)
            .key(self.done_key(period_ms, window.index))
            .arg(handle.holder())
            .arg(guard.fencing_token())
            .arg(end_ms)
            .arg(millis(MARKER_GRACE));
        let ran = conn::run_repeatable(&self.pool, &keys.lock, self.deadline(), |c| {
            call.invoke::<redis::Value>(c)
        })?;
        let reply = ran.reply(&self.name, "mark_period_done")?;
        let marker = match reply {
            redis::Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
            redis::Value::Int(0) => {
                // Why, as far as can be told: the lease ran out, someone else holds it, or
                // it was deleted under us.
                let ran_out = !guard.is_lost() && guard.valid_for().is_some_and(|d| d.is_zero());
                let reason = if self.get_owner_id()?.is_some() {
                    LostReason::TakenOver
                } else if ran_out {
                    LostReason::Expired
                } else {
                    LostReason::Reset
                };
                return Err(Error::LockLost {
                    name: self.name.to_string(),
                    reason,
                });
            }
            _ => None,
        };
        marker
            .as_deref()
            .and_then(parse_marker)
            .ok_or(Error::Protocol {
                what: "mark_period_done",
            })
    }

    /// The key that marks window `index` of a period of `period_ms` done, beside the lock's
    /// (in its slot on a cluster).
    fn done_key(&self, period_ms: u64, index: u64) -> String {
        let lock = &self.keys().lock;
        let tagged = lock.strip_prefix(LOCKS.lock).unwrap_or(lock);
        format!("lock-once:{tagged}:{period_ms}:{index}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_is_read_back() {
        let done = parse_marker("17|1700000000123|host-1/a|b").unwrap();
        assert_eq!(done.fencing_token, 17);
        assert_eq!(done.owner_id, "host-1/a|b");
        assert_eq!(
            done.at,
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
        );
        assert!(parse_marker("x|1|o").is_none());
    }

    #[test]
    fn periods_are_bounded() {
        assert!(check_period(Duration::ZERO).is_err());
        assert_eq!(check_period(Duration::from_secs(1)).unwrap(), 1000);
    }
}
