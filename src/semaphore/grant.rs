//! [`SemaphoreGrant`]: the permits one guard holds, as the lease core and the renewal
//! service see them.

use std::sync::Arc;
use std::time::Duration;

use super::script;
use crate::conn::{self, Failed};
use crate::duration::millis;
use crate::held::{Grant, OnServer, ServerGrant, extend_lease};
use crate::keys::SemaphoreKeys;
use crate::lease::Lease;
use crate::renewal::{RenewAlone, Renewal, Renewing};
use crate::scripts::Call;
use crate::{Error, Result};

/// One grant of permits: enough to release, extend, check and renew it without the
/// semaphore.
pub(super) struct SemaphoreGrant {
    pub(super) on: OnServer,
    pub(super) keys: Arc<SemaphoreKeys>,
    /// Its member of the holder set: `<permits>/<capacity>:<lease id>`.
    pub(super) member: String,
    /// The capacity the semaphore was built with, which the script needs for waking.
    pub(super) capacity: u32,
    pub(super) fair: bool,
    pub(super) signal_expire: Duration,
}

impl SemaphoreGrant {
    fn call(&self, op: &str) -> Call {
        script(&self.keys, op, self.capacity, self.signal_expire)
    }

    /// Runs the extend operation with `lease_ms` (0: only check), its reply bounded by
    /// `reply_timeout`.
    fn send_extend(&self, lease_ms: u64, reply_timeout: Duration) -> Result<bool, Failed> {
        let mut call = self.call("extend");
        call.arg(&self.member).arg(lease_ms);
        let live = self
            .on
            .send_within(&self.keys.holders, reply_timeout, "extend", |c| {
                call.invoke::<i64>(c)
            })?;
        Ok(live == 1)
    }
}

impl Grant for SemaphoreGrant {
    fn kind(&self) -> &'static str {
        "semaphore permit"
    }

    fn name(&self) -> &str {
        &self.on.name
    }

    fn release(&self) -> Result<bool> {
        let mut call = self.call("release");
        call.arg(&self.member)
            .arg(if self.fair { "1" } else { "0" });
        let route = &self.keys.holders;
        let mut ran = conn::run_repeatable(&self.on.pool, route, self.on.response_timeout, |c| {
            call.invoke::<i64>(c)
        })?;
        match ran.result {
            Ok(released) => Ok(released == 1),
            Err(e) => Err(ran.conn.fail(e, &self.on.name, "release")),
        }
    }

    fn extend(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        extend_lease(lease, ttl, || {
            self.send_extend(millis(ttl), self.on.response_timeout)
        })
    }

    fn check(&self) -> Result<bool> {
        self.send_extend(0, self.on.response_timeout)
            .map_err(Failed::into_error)
    }
}

impl ServerGrant for SemaphoreGrant {
    fn on_server(&self) -> &OnServer {
        &self.on
    }

    /// Each grant alone: a semaphore's holders are few, and each is one member.
    fn renewing(&self) -> Renewing<'_> {
        Renewing::Alone(self)
    }
}

impl RenewAlone for SemaphoreGrant {
    fn renew(&self, timeout: Duration) -> Renewal {
        self.on
            .renew_alone(timeout, |ms, within| self.send_extend(ms, within))
    }
}

/// The error for a semaphore whose keys hold another type.
pub(super) fn wrong_type(name: &str) -> Error {
    Error::WrongType {
        name: name.to_owned(),
        key: None,
    }
}
