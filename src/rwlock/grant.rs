//! [`RwGrant`]: one read or write lease of a [`RedisRwLock`](super::RedisRwLock), as the
//! lease core and the renewal service see it.

use std::sync::Arc;
use std::time::Duration;

use super::RELEASE;
use super::keys::{Mode, RwKeys};
use crate::renewal::{OnServer, ServerGrant};
use crate::scripts::{Call, LEASE_EXTEND, Lua, undo_window};
use crate::time::millis;

/// One read or write lease: enough to release, extend, check and renew it without the lock.
pub(super) struct RwGrant {
    pub(super) on: OnServer,
    pub(super) keys: Arc<RwKeys>,
    pub(super) mode: Mode,
    /// The lease's id, its entry in the path's holder set and its ancestors'.
    pub(super) lease_id: String,
    /// How long a wake-up waits in its list.
    pub(super) signal_expire: Duration,
}

impl ServerGrant for RwGrant {
    fn kind(&self) -> &'static str {
        match self.mode {
            Mode::Read => "read lock",
            Mode::Write => "write lock",
        }
    }

    fn on(&self) -> &OnServer {
        &self.on
    }

    fn route(&self) -> &str {
        &self.keys.all()[0]
    }

    /// Removes the lease, wakes whom it held back, and notes the release for a moment, so
    /// that the same release sent again is told it happened.
    fn release_call(&self) -> Call {
        let mut call = RELEASE.call();
        call.key(self.keys.all())
            .key(&self.keys.released)
            .arg(self.mode.held())
            .arg(&self.lease_id)
            .arg(millis(self.signal_expire))
            .arg(millis(undo_window(self.on.response_timeout)));
        call
    }

    fn extend_script(&self) -> &'static Lua {
        &LEASE_EXTEND
    }

    fn extend_part(&self, call: &mut Call, lease_ms: u64) {
        let sets = self.keys.lease_sets(self.mode);
        call.arg(sets.len())
            .arg(&self.lease_id)
            .arg(lease_ms)
            .arg(0)
            .key(sets);
    }
}
