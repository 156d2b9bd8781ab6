//! The lease behind a guard, read or write: release, extend, checks, and its renewal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::keys::Mode;
use super::{Grant, RedisRwLock};
use crate::conn::{self, Conn};
use crate::lease::{Lease, lease_end, millis};
use crate::renewal::{self, Registration, Renew, Renewal};
use crate::scripts::RWLOCK_EXTEND;
use crate::{Error, Pool, Result};

/// One lease held in Redis, read or write: what both guards share.
pub(super) struct Held<'a> {
    pub(super) lock: &'a RedisRwLock,
    mode: Mode,
    lease_id: String,
    pub(super) lease: Arc<Lease>,
    renewal: Option<Registration>,
    released: bool,
}

impl<'a> Held<'a> {
    pub(super) fn new(lock: &'a RedisRwLock, grant: &Grant) -> Held<'a> {
        Held {
            lock,
            mode: grant.mode,
            lease_id: grant.lease_id.clone(),
            lease: Arc::new(Lease::new(
                &lock.path,
                grant.sent_at,
                lock.options.expire,
                lock.options.on_lost.clone(),
            )),
            renewal: None,
            released: false,
        }
    }

    /// Registers the lease with the renewal thread when the lock auto-renews.
    pub(super) fn start_renewal(&mut self, acquired_at: Instant) -> Result<()> {
        let options = &self.lock.options;
        if let (true, Some(ttl)) = (options.auto_renewal, options.expire) {
            let target = LeaseRenewal {
                pool: self.lock.pool.clone(),
                sets: self.lock.keys.lease_sets(self.mode),
                lease_id: self.lease_id.clone(),
                ttl,
                response_timeout: options.response_timeout,
            };
            self.renewal = Some(renewal::register(
                self.lease.clone(),
                renewal::Target::Own(Arc::new(target)),
                acquired_at,
            )?);
        }
        Ok(())
    }

    fn lost_error(&self) -> Error {
        Error::LockLost {
            name: self.lock.path.clone(),
        }
    }

    fn ensure_not_lost(&self) -> Result<()> {
        if self.lease.is_lost() {
            return Err(self.lost_error());
        }
        Ok(())
    }

    /// Stops renewal and runs the release script; whether the lease was still ours. Does
    /// nothing the second time.
    fn release(&mut self) -> Result<bool> {
        if self.released {
            return Ok(false);
        }
        self.released = true;
        if let Some(renewal) = self.renewal.take() {
            renewal.cancel();
        }
        let lock = self.lock;
        let released = lock
            .checkout()
            .and_then(|mut conn| lock.release_entry(&mut conn, self.mode.held(), &self.lease_id));
        match &released {
            Ok(true) => log::debug!("released {} lock `{}`", self.mode.name(), lock.path),
            Ok(false) => self
                .lease
                .mark_lost_quietly("its release found it no longer ours"),
            Err(_) => {}
        }
        released
    }

    pub(super) fn unlock(&mut self) -> Result<()> {
        let known_lost = self.lease.is_lost();
        let released = self.release();
        if known_lost {
            return Err(self.lost_error());
        }
        match released? {
            true => Ok(()),
            false => Err(Error::NotAcquired {
                name: self.lock.path.clone(),
            }),
        }
    }

    /// The release on drop, which can only log.
    pub(super) fn release_on_drop(&mut self) {
        if self.released {
            return;
        }
        match self.release() {
            Ok(_) if !self.lease.is_lost() => {}
            Ok(_) => log::warn!(
                "{} lock `{}` was no longer ours when its guard was dropped",
                self.mode.name(),
                self.lock.path
            ),
            Err(e) => log::warn!(
                "releasing {} lock `{}` failed; it stays until it expires: {e}",
                self.mode.name(),
                self.lock.path
            ),
        }
    }

    pub(super) fn extend(&self, lease: Duration) -> Result<()> {
        crate::options::check_extend(&self.lock.path, self.lock.options.expire, lease)?;
        self.ensure_not_lost()?;
        // Ordered with the renewals: see `Registration::hold`.
        let _hold = self.renewal.as_ref().map(Registration::hold);
        let mut conn = self.lock.checkout()?;
        let sent_at = Instant::now();
        let sets = self.lock.keys.lease_sets(self.mode);
        let extended = extend(&mut conn, &sets, &self.lease_id, millis(lease))
            .map_err(|e| self.lease.after_lost_reply(e, sent_at, lease))?;
        if extended {
            self.lease.extended(sent_at, lease);
            Ok(())
        } else {
            self.lease
                .mark_lost_quietly("an extend found it no longer ours");
            Err(Error::NotAcquired {
                name: self.lock.path.clone(),
            })
        }
    }

    pub(super) fn is_held(&self) -> Result<bool> {
        let mut conn = self.lock.checkout()?;
        let sets = self.lock.keys.lease_sets(self.mode);
        let held = extend(&mut conn, &sets, &self.lease_id, 0)?;
        if !held {
            self.lease.mark_lost_quietly("it is no longer ours");
        }
        Ok(held && !self.lease.is_lost())
    }

    pub(super) fn ensure_held(&self) -> Result<()> {
        if self
            .lease
            .still_held(self.lock.options.expire, || self.is_held())?
        {
            Ok(())
        } else {
            Err(self.lost_error())
        }
    }
}

/// Runs the extend script: sets the lease to `lease_ms`, or only checks it with 0.
fn extend(conn: &mut Conn, sets: &[String], lease_id: &str, lease_ms: u64) -> Result<bool> {
    let extended: i64 = RWLOCK_EXTEND
        .key(sets)
        .arg(lease_id)
        .arg(lease_ms)
        .invoke(&mut **conn)?;
    Ok(extended == 1)
}

/// What the renewal thread extends for one auto-renewed guard.
struct LeaseRenewal {
    pool: Pool,
    sets: Vec<String>,
    lease_id: String,
    ttl: Duration,
    response_timeout: Duration,
}

impl Renew for LeaseRenewal {
    fn ttl(&self) -> Duration {
        self.ttl
    }

    fn renew(&self, timeout: Duration) -> Renewal {
        let timeout = timeout.min(self.response_timeout);
        let sent_at = Instant::now();
        let result = conn::checkout(&self.pool, timeout, timeout)
            .and_then(|mut conn| extend(&mut conn, &self.sets, &self.lease_id, millis(self.ttl)))
            .map(|held| (sent_at, held))
            .map_err(|e| (sent_at, e));
        match result {
            Ok((sent_at, true)) => Renewal::Renewed {
                sent_at,
                valid_until: lease_end(sent_at, self.ttl),
            },
            Ok((_, false)) => Renewal::Gone,
            Err((sent_at, e)) if conn::may_have_run(&e) => Renewal::MayHaveRun {
                sent_at,
                why: e.to_string(),
            },
            Err((_, e)) => Renewal::Failed(e.to_string()),
        }
    }
}
