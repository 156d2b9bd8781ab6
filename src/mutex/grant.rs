//! [`MutexGrant`]: one grant of a [`RedisMutex`](super::RedisMutex) lock, as the lease core
//! and the renewal service see it: released, extended and checked with compare-and-set
//! scripts on the owner id, and renewed in batches of up to 500 per call.

use std::any::Any;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::calls::Calls;
use crate::conn::{self, Route};
use crate::held::Grant;
use crate::keys::{hash_tag, marker_token};
use crate::lease::Lease;
use crate::renewal::{LaneKey, Renew, Renewal};
use crate::scripts::{EXTEND, Extend, Release};
use crate::{Error, Pool, Result};

/// One grant of a mutex: enough to release, extend, check and renew it without the mutex.
pub(crate) struct MutexGrant {
    pub(super) pool: Pool,
    /// The mutex's script calls (its keys, owner id, fair mode).
    pub(super) calls: Arc<Calls>,
    pub(super) name: Arc<str>,
    /// The expiry the lock was taken with; renewals restore it.
    pub(super) ttl: Option<Duration>,
    pub(super) response_timeout: Duration,
    /// On a cluster, the node the grant was made on: its renewals get a lane of their own.
    pub(super) server: Option<Arc<str>>,
    /// This grant's fencing token, which its marker (`lock-grant:<name>`) names while it
    /// lasts: a release, extend or check of this grant leaves a later grant to the same
    /// owner id alone (a call of ours that came late, or was sent twice, must not touch it).
    pub(super) token: u64,
}

impl MutexGrant {
    fn fail(&self, conn: &mut conn::Conn, e: redis::RedisError, what: &'static str) -> Error {
        conn.fail(e, &self.name, what)
    }

    fn route(&self) -> Route<'_> {
        Route::Key(&self.calls.keys.lock)
    }

    /// Sends a renewal call with its reply bounded by `reply_timeout`. The error says
    /// whether the call went out without a reply (it may have run, or may still).
    fn send_batch(
        &self,
        call: &crate::scripts::Call,
        reply_timeout: Duration,
    ) -> std::result::Result<Vec<Extend>, (bool, Error)> {
        let wait = reply_timeout.min(self.pool.connection_timeout());
        let mut conn = conn::checkout(&self.pool, self.route(), wait, self.response_timeout)
            .map_err(|e| (false, e))?;
        conn.set_read_timeout(reply_timeout)
            .map_err(|e| (false, e))?;
        let mut ran = conn::run(
            &self.pool,
            self.route(),
            Some(conn),
            self.response_timeout,
            |c| call.invoke::<Vec<Extend>>(c),
        )
        .map_err(|e| (false, e))?;
        ran.result.map_err(|e| {
            let lost = conn::reply_lost(&e);
            (lost, self.fail(&mut ran.conn, e, "renew"))
        })
    }
}

impl Grant for MutexGrant {
    fn kind(&self) -> &'static str {
        "lock"
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn release(&self) -> Result<bool> {
        let call = self.calls.release(self.token);
        let mut ran = conn::run_repeatable(&self.pool, self.route(), self.response_timeout, |c| {
            call.invoke::<Release>(c)
        })?;
        match ran.result {
            Ok(released) => Ok(released != Release::NotOurs),
            Err(e) => Err(self.fail(&mut ran.conn, e, "release")),
        }
    }

    fn extend(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let call = self.calls.extend(ttl, self.token);
        let sent_at = Instant::now();
        let mut ran = conn::run_repeatable(&self.pool, self.route(), self.response_timeout, |c| {
            call.invoke::<Vec<Extend>>(c)
        })?;
        match ran.result {
            Ok(extended) if extended.first() == Some(&Extend::Extended) => {
                lease.extended(sent_at, ttl);
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) => {
                if conn::reply_lost(&e) {
                    lease.lost_reply(sent_at, ttl);
                }
                Err(self.fail(&mut ran.conn, e, "extend"))
            }
        }
    }

    fn check(&self) -> Result<bool> {
        // The lock and its marker share a slot on a cluster.
        let keys = &self.calls.keys;
        let mut ran = conn::run_repeatable(&self.pool, self.route(), self.response_timeout, |c| {
            redis::cmd("MGET")
                .arg(&keys.lock)
                .arg(&keys.grant)
                .query::<(Option<String>, Option<String>)>(c)
        })?;
        match ran.result {
            Ok((owner, marker)) => Ok(owner.as_deref() == Some(&*self.calls.owner)
                && marker.is_none_or(|m| marker_token(&m) == Some(self.token))),
            Err(e) => Err(self.fail(&mut ran.conn, e, "MGET")),
        }
    }
}

impl Renew for MutexGrant {
    fn ttl(&self) -> Duration {
        // Only locks with an expiry are renewed.
        self.ttl.unwrap_or(Duration::MAX)
    }

    fn lane(&self) -> LaneKey {
        LaneKey {
            pool: self.pool.id(),
            server: self.server.clone(),
        }
    }

    fn bound(&self) -> Duration {
        self.response_timeout
    }

    /// Locks of one pool (on a cluster, of one hash tag, so one slot) and one response
    /// timeout are renewed together.
    fn batch_key(&self) -> Option<u64> {
        let mut hasher = DefaultHasher::new();
        self.pool.id().hash(&mut hasher);
        if self.pool.is_cluster() {
            hash_tag(&self.calls.keys.lock).hash(&mut hasher);
        }
        self.response_timeout.hash(&mut hasher);
        Some(hasher.finish())
    }

    fn renew(&self, timeout: Duration) -> Renewal {
        self.renew_batch(&[self], timeout)
            .pop()
            .unwrap_or_else(|| Renewal::Failed("the extend script gave no answer".to_owned()))
    }

    /// One `extend.lua` call for the batch. Only the reply is bounded by `timeout` (the
    /// lease left): a write cut short by a tiny timeout would leave half a command on a
    /// pooled connection.
    fn renew_batch(&self, batch: &[&dyn Renew], timeout: Duration) -> Vec<Renewal> {
        let grants: Vec<&MutexGrant> = batch
            .iter()
            .filter_map(|r| r.as_any().downcast_ref::<MutexGrant>())
            .collect();
        if grants.len() != batch.len() {
            return batch
                .iter()
                .map(|_| Renewal::Failed("a batch of mixed lock kinds".to_owned()))
                .collect();
        }
        let mut call = EXTEND.call();
        for grant in &grants {
            grant.calls.extend_into(&mut call, grant.ttl(), grant.token);
        }
        let reply_timeout = timeout.min(self.response_timeout);
        let sent_at = Instant::now();
        let result = self.send_batch(&call, reply_timeout);
        log::trace!(
            "renewed {} lease(s) in one call: {:?}",
            batch.len(),
            result.as_ref().map(|_| ())
        );
        match result {
            Ok(extended) if extended.len() == grants.len() => extended
                .into_iter()
                .zip(&grants)
                .map(|(e, grant)| match e {
                    Extend::Extended => Renewal::Renewed {
                        sent_at,
                        ttl: grant.ttl(),
                    },
                    Extend::Gone => Renewal::Gone { taken: false },
                    Extend::Taken => Renewal::Gone { taken: true },
                })
                .collect(),
            Ok(extended) => {
                let why = format!(
                    "the extend script answered {} times for {} locks",
                    extended.len(),
                    grants.len()
                );
                grants
                    .iter()
                    .map(|_| Renewal::Failed(why.clone()))
                    .collect()
            }
            Err((lost, e)) => {
                let why = e.to_string();
                grants
                    .iter()
                    .map(|grant| match lost {
                        true => Renewal::MayHaveRun {
                            sent_at,
                            ttl: grant.ttl(),
                            why: why.clone(),
                        },
                        false => Renewal::Failed(why.clone()),
                    })
                    .collect()
            }
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
