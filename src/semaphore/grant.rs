//! [`SemaphoreGrant`]: the permits one guard holds, as the lease core and the renewal
//! service see them.

use std::sync::Arc;
use std::time::Duration;

use super::script;
use crate::conn::{self, Failed};
use crate::duration::millis;
use crate::held::{ExtendAlone, Grant, OnServer};
use crate::keys::SemaphoreKeys;
use crate::lease::Lease;
use crate::scripts::{Call, undo_window};
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
            .arg(if self.fair { "1" } else { "0" })
            .arg("0")
            .arg(millis(undo_window(self.on.response_timeout)));
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
        self.extend_alone(lease, ttl)
    }

    fn check(&self) -> Result<bool> {
        self.check_alone()
    }
}

/// Each grant alone: a semaphore's holders are few, and each is one member.
impl ExtendAlone for SemaphoreGrant {
    fn on(&self) -> &OnServer {
        &self.on
    }

    fn send_extend(&self, lease_ms: u64, within: Duration) -> Result<bool, Failed> {
        let mut call = self.call("extend");
        call.arg(&self.member).arg(lease_ms);
        let live = self
            .on
            .send_within(&self.keys.holders, within, "extend", |c| {
                call.invoke::<i64>(c)
            })?;
        Ok(live == 1)
    }
}

/// The error for a semaphore whose keys hold another type.
pub(super) fn wrong_type(name: &str) -> Error {
    Error::WrongType {
        name: name.to_owned(),
        key: None,
    }
}
