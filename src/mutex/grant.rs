//! [`MutexGrant`]: one grant of a [`RedisMutex`](super::RedisMutex) lock, as the lease core
//! and the renewal service see it: released, extended and checked with compare-and-set
//! scripts on the owner id and the grant's token, and renewed in batches of up to 500 per
//! call.

use std::sync::Arc;

use super::EXTEND;
use super::calls::Calls;
use crate::renewal::{OnServer, ServerGrant};
use crate::scripts::{Call, Lua};

/// One grant of a mutex: enough to release, extend, check and renew it without the mutex.
pub(super) struct MutexGrant {
    pub(super) on: OnServer,
    /// The mutex's script calls (its keys, owner id, fair mode).
    pub(super) calls: Arc<Calls>,
    /// This grant's fencing token, which its marker (`lock-grant:<name>`) names while it
    /// lasts: a release, extend or check of this grant leaves a later grant to the same
    /// owner id alone (a call of ours that came late, or was sent twice, must not touch it).
    pub(super) token: u64,
    /// The id of the request that made it (in fair mode, of its waiter): its release notes
    /// that request as done.
    pub(super) id: String,
}

impl ServerGrant for MutexGrant {
    fn kind(&self) -> &'static str {
        "lock"
    }

    fn on(&self) -> &OnServer {
        &self.on
    }

    fn route(&self) -> &str {
        &self.calls.keys.lock
    }

    fn release_call(&self) -> Call {
        self.calls.release(self.token, &self.id)
    }

    /// Locks of one pool (on a cluster, of one hash tag, so one slot) and one response
    /// timeout are renewed together, in one call of `extend.lua`.
    fn extend_script(&self) -> &'static Lua {
        &EXTEND
    }

    fn extend_part(&self, call: &mut Call, lease_ms: u64) {
        self.calls.extend_into(call, lease_ms, self.token);
    }
}
