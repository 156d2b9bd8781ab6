//! Extending single-server grants: one call of their kind's extend script, any number of
//! grants of one batch key in it, each adding its part; its answer (one
//! [`Extend`] per part) read back into one [`Renewal`] per grant ([`renewal`], the one
//! mapping of an extend's outcome). A guard's own `extend` and `is_held` are a batch of
//! one, sent the same way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{BatchKey, Renewal};
use super::{ServerGrant, lease_ms};
use crate::conn::{self, Failed};
use crate::keys::hash_tag;
use crate::scripts::Extend;
use crate::time::Deadline;

/// The batch key of `grant`: its script, pool, slot (on a cluster) and response timeout.
pub(super) fn key_of(grant: &dyn ServerGrant) -> BatchKey {
    let on = grant.on();
    let route = grant.route();
    BatchKey {
        script: grant.extend_script().name(),
        pool: on.pool.id(),
        tag: on
            .pool
            .is_cluster()
            .then(|| Arc::from(hash_tag(route).unwrap_or(route))),
        response_timeout: on.response_timeout,
    }
}

/// Sends one call of the extend script of `grants` (of one batch key), each setting its
/// lease to its `Duration` (zero: only checking it), its reply due by `deadline`: when it
/// was sent, and one answer per grant, in order, or how the call failed.
pub(crate) fn extend(
    grants: &[(&dyn ServerGrant, Duration)],
    deadline: Deadline,
) -> (Instant, Result<Vec<Extend>, Failed>) {
    let sent_at = Instant::now();
    let Some(&(first, _)) = grants.first() else {
        return (sent_at, Ok(Vec::new()));
    };
    let mut call = first.extend_script().call();
    for &(grant, ttl) in grants {
        grant.extend_part(&mut call, lease_ms(ttl));
    }
    let on = first.on();
    let route = first.route();
    let sent = conn::run(&on.pool, route, None, deadline, |c| {
        call.invoke::<Vec<Extend>>(c)
    })
    .map_err(Failed::Refused)
    .and_then(|ran| ran.outcome(&on.name, "extend"))
    .and_then(|extended| {
        if extended.len() == grants.len() {
            return Ok(extended);
        }
        Err(Failed::Refused(crate::error::Error::Protocol {
            what: "extend",
        }))
    });
    (sent_at, sent)
}

/// What one grant's part of an extend sent at `sent_at` with the lease `ttl` came to: the
/// one mapping of an extend's outcome, for a guard's extend and the renewal service alike.
pub(crate) fn renewal(
    sent_at: Instant,
    ttl: Duration,
    outcome: Result<Extend, &Failed>,
) -> Renewal {
    match outcome {
        Ok(Extend::Extended) => Renewal::Renewed { sent_at, ttl },
        Ok(Extend::Gone) => Renewal::Gone { taken: false },
        Ok(Extend::Taken) => Renewal::Gone { taken: true },
        Err(Failed::Refused(e)) => Renewal::Failed(e.to_string()),
        Err(Failed::NoReply(e)) => Renewal::MayHaveRun {
            sent_at,
            ttl,
            why: e.to_string(),
        },
    }
}

/// Renews `batch` (grants of one batch key, each with its ttl) in one call, due within
/// `timeout` (the shortest lease left): one outcome per grant, in order.
pub(super) fn renew(batch: &[(&dyn ServerGrant, Duration)], timeout: Duration) -> Vec<Renewal> {
    let Some(&(first, _)) = batch.first() else {
        return Vec::new();
    };
    let deadline = Deadline::after(timeout.min(first.on().response_timeout));
    let (sent_at, sent) = extend(batch, deadline);
    log::trace!(
        "renewed {} lease(s) in one call: {}",
        batch.len(),
        match &sent {
            Ok(_) => "answered",
            Err(Failed::Refused(_)) => "failed",
            Err(Failed::NoReply(_)) => "no reply",
        }
    );
    batch
        .iter()
        .enumerate()
        .map(|(i, &(_, ttl))| {
            let outcome = match &sent {
                Ok(extended) => Ok(extended[i]),
                Err(failed) => Err(failed),
            };
            renewal(sent_at, ttl, outcome)
        })
        .collect()
}
