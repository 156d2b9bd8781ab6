//! [`MutexGrant`]: one grant of a [`RedisMutex`](super::RedisMutex) lock, as the lease core
//! and the renewal service see it: released, extended and checked with compare-and-set
//! scripts on the owner id and the grant's token, and renewed in batches of up to 500 per
//! call.

use std::sync::Arc;
use std::time::Duration;

use super::calls::Calls;
use crate::Result;
use crate::conn::{self, Failed};
use crate::held::{Grant, OnServer, ServerGrant, extend_lease};
use crate::keys::{hash_tag, marker_token};
use crate::lease::Lease;
use crate::local::Local;
use crate::renewal::{Batch, BatchKey, BatchPart, Renewing};
use crate::scripts::{EXTEND, Extend, Release};

/// One grant of a mutex: enough to release, extend, check and renew it without the mutex.
pub(super) struct MutexGrant {
    pub(super) on: OnServer,
    /// The mutex's script calls (its keys, owner id, fair mode).
    pub(super) calls: Arc<Calls>,
    /// This grant's fencing token, which its marker (`lock-grant:<name>`) names while it
    /// lasts: a release, extend or check of this grant leaves a later grant to the same
    /// owner id alone (a call of ours that came late, or was sent twice, must not touch it).
    pub(super) token: u64,
    /// The mutex's local side: in fair mode, a release hands the lock to a waiter of this
    /// process that it knows is live as it is, without the claim a lock without expiry
    /// needs otherwise.
    pub(super) local: Arc<Local>,
}

impl MutexGrant {
    fn route(&self) -> &str {
        &self.calls.keys.lock
    }

    /// Runs `op` on a connection for the lock, sending it once more when a pooled
    /// connection turns out closed; its failure becomes this crate's error for `what`.
    fn run<T>(
        &self,
        what: &'static str,
        op: impl FnMut(&mut conn::Conn) -> redis::RedisResult<T>,
    ) -> std::result::Result<T, Failed> {
        conn::run_repeatable(&self.on.pool, self.route(), self.on.response_timeout, op)
            .map_err(Failed::Refused)?
            .outcome(&self.on.name, what)
    }
}

impl Grant for MutexGrant {
    fn kind(&self) -> &'static str {
        "lock"
    }

    fn name(&self) -> &str {
        &self.on.name
    }

    fn release(&self) -> Result<bool> {
        let ours = self.calls.fair.then(|| self.local.waiter()).flatten();
        let call = self.calls.release(self.token, ours.as_deref());
        let released = self.run("release", |c| call.invoke::<Release>(c));
        Ok(released.map_err(Failed::into_error)? != Release::NotOurs)
    }

    fn extend(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let call = self.calls.extend(ttl, self.token);
        extend_lease(lease, ttl, || {
            let extended = self.run("extend", |c| call.invoke::<Vec<Extend>>(c))?;
            Ok(extended.first() == Some(&Extend::Extended))
        })
    }

    fn check(&self) -> Result<bool> {
        // The lock and its marker share a slot on a cluster.
        let keys = &self.calls.keys;
        let (owner, marker) = self
            .run("MGET", |c| {
                redis::cmd("MGET")
                    .arg(&keys.lock)
                    .arg(&keys.grant)
                    .query::<(Option<String>, Option<String>)>(c)
            })
            .map_err(Failed::into_error)?;
        Ok(owner.as_deref() == Some(&*self.calls.owner)
            && marker.is_none_or(|m| marker_token(&m) == Some(self.token)))
    }
}

impl ServerGrant for MutexGrant {
    fn on_server(&self) -> &OnServer {
        &self.on
    }

    /// Locks of one pool (on a cluster, of one hash tag, so one slot) and one response
    /// timeout are renewed together, in one call of `extend.lua`.
    fn renewing(&self) -> Renewing<'_> {
        let lock = &self.calls.keys.lock;
        Renewing::Batched(Batch {
            key: BatchKey {
                script: "extend",
                pool: self.on.pool.id(),
                tag: self
                    .on
                    .pool
                    .is_cluster()
                    .then(|| hash_tag(lock).unwrap_or(lock).into()),
                response_timeout: self.on.response_timeout,
            },
            pool: &self.on.pool,
            route: lock,
            script: &EXTEND,
            part: self,
        })
    }
}

impl BatchPart for MutexGrant {
    fn add_to(&self, call: &mut crate::scripts::Call) {
        let ttl = self.on.ttl.unwrap_or(Duration::MAX);
        self.calls.extend_into(call, ttl, self.token);
    }
}
