//! [`SemaphoreGrant`]: the permits one guard holds, as the lease core and the renewal
//! service see them.

use std::sync::Arc;
use std::time::Duration;

use super::keys::SemaphoreKeys;
use super::script;
use crate::renewal::{OnServer, ServerGrant};
use crate::scripts::{Call, LEASE_EXTEND, Lua, undo_window};
use crate::time::millis;

/// The permits one guard holds: enough to release, extend, check and renew them without
/// the semaphore.
pub(super) struct SemaphoreGrant {
    pub(super) on: OnServer,
    pub(super) keys: Arc<SemaphoreKeys>,
    /// Its entry in the holder set: `<permits>/<capacity>/<fencing token>:<lease id>`.
    pub(super) member: String,
    /// The capacity the semaphore was built with (the script's fallback).
    pub(super) capacity: u32,
    pub(super) fair: bool,
    /// How long a wake-up waits in its list.
    pub(super) signal_expire: Duration,
}

impl ServerGrant for SemaphoreGrant {
    fn kind(&self) -> &'static str {
        "semaphore permit"
    }

    fn on(&self) -> &OnServer {
        &self.on
    }

    fn route(&self) -> &str {
        &self.keys.holders
    }

    /// Gives the permits back, wakes the waiters they are enough for, and notes the
    /// release for a moment, so that the same release sent again is told it happened.
    fn release_call(&self) -> Call {
        let mut call = script(&self.keys, "release", self.capacity, self.signal_expire);
        call.arg(&self.member)
            .arg(if self.fair { "1" } else { "0" })
            .arg("0")
            .arg(millis(undo_window(self.on.response_timeout)))
            .arg(millis(super::CAPACITY_LIFE));
        call
    }

    fn extend_script(&self) -> &'static Lua {
        &LEASE_EXTEND
    }

    /// Keeps a capacity set by `set_permits` alive with the permits.
    fn extend_part(&self, call: &mut Call, lease_ms: u64) {
        call.arg(1)
            .arg(&self.member)
            .arg(lease_ms)
            .arg(millis(super::CAPACITY_LIFE))
            .key(&self.keys.holders)
            .key(&self.keys.capacity);
    }
}
