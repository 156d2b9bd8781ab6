//! [`RwGrant`]: one read or write lease of a [`RedisRwLock`](super::RedisRwLock), as the
//! lease core and the renewal service see it.

use std::sync::Arc;
use std::time::Duration;

use crate::conn::{self, Conn, Failed};
use crate::duration::millis;
use crate::held::{ExtendAlone, Grant, OnServer};
use crate::keys::{Mode, RwKeys};
use crate::lease::Lease;
use crate::scripts::{Extend, RWLOCK_EXTEND, RWLOCK_RELEASE, undo_window};
use crate::{Error, Result};

/// One lease on a path: enough to release, extend, check and renew it without the lock.
pub(super) struct RwGrant {
    pub(super) on: OnServer,
    pub(super) keys: Arc<RwKeys>,
    pub(super) mode: Mode,
    pub(super) lease_id: String,
    pub(super) signal_expire: Duration,
}

impl RwGrant {
    fn route(&self) -> &str {
        &self.keys.all()[0]
    }

    fn fail(&self, conn: &mut Conn, e: redis::RedisError, what: &'static str) -> Error {
        conn.fail(e, &self.on.name, what)
    }
}

impl Grant for RwGrant {
    fn kind(&self) -> &'static str {
        match self.mode {
            Mode::Read => "read lock",
            Mode::Write => "write lock",
        }
    }

    fn name(&self) -> &str {
        &self.on.name
    }

    fn release(&self) -> Result<bool> {
        let mut call = RWLOCK_RELEASE.call();
        call.key(self.keys.all())
            .key(&self.keys.released)
            .arg(self.mode.held())
            .arg(&self.lease_id)
            .arg(millis(self.signal_expire))
            .arg(millis(undo_window(self.on.response_timeout)));
        let mut ran =
            conn::run_repeatable(&self.on.pool, self.route(), self.on.response_timeout, |c| {
                call.invoke::<i64>(c)
            })?;
        match ran.result {
            Ok(released) => Ok(released > 0),
            Err(e) => Err(self.fail(&mut ran.conn, e, "release")),
        }
    }

    fn extend(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        self.extend_alone(lease, ttl)
    }

    fn check(&self) -> Result<bool> {
        self.check_alone()
    }
}

/// Each lease alone: its entry is in sorted sets of every level of its path.
impl ExtendAlone for RwGrant {
    fn on(&self) -> &OnServer {
        &self.on
    }

    fn send_extend(&self, lease_ms: u64, within: Duration) -> Result<bool, Failed> {
        let mut call = RWLOCK_EXTEND.call();
        call.key(self.keys.lease_sets(self.mode))
            .arg(&self.lease_id)
            .arg(lease_ms);
        let held = self
            .on
            .send_within(self.route(), within, "extend", |c| call.invoke::<Extend>(c))?;
        Ok(held == Extend::Extended)
    }
}
