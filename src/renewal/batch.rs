//! Renewing a batch of leases in one script call: the call is built from every lease's part,
//! sent on one connection with its reply bounded by the leases' time left, and its answer
//! (one [`Extend`] per part) read back into one [`Renewal`] per lease. The lock kinds that
//! renew in batches only say what their part of the call is ([`BatchPart`]).

use std::time::{Duration, Instant};

use super::{Batch, Renewal};
use crate::conn::{self, Failed};
use crate::scripts::Extend;

/// Renews `batch` (leases of one batch key, each with its ttl) in one call within about
/// `timeout`: one outcome per lease, in order. Only the reply is bounded by `timeout` (the
/// lease left): a write cut short by a tiny timeout would leave half a command on a pooled
/// connection.
pub(super) fn renew(batch: &[(Batch<'_>, Duration)], timeout: Duration) -> Vec<Renewal> {
    let Some((first, _)) = batch.first() else {
        return Vec::new();
    };
    let mut call = first.script.call();
    for (lease, _) in batch {
        lease.part.add_to(&mut call);
    }
    let reply_timeout = timeout.min(first.key.response_timeout);
    let sent_at = Instant::now();
    let sent = send(first, reply_timeout, |c| call.invoke::<Vec<Extend>>(c));
    log::trace!(
        "renewed {} lease(s) in one call: {}",
        batch.len(),
        match &sent {
            Ok(_) => "answered",
            Err(Failed::Refused(_)) => "failed",
            Err(Failed::NoReply(_)) => "no reply",
        }
    );
    match sent {
        Ok(extended) if extended.len() == batch.len() => extended
            .into_iter()
            .zip(batch)
            .map(|(outcome, &(_, ttl))| match outcome {
                Extend::Extended => Renewal::Renewed { sent_at, ttl },
                Extend::Gone => Renewal::Gone { taken: false },
                Extend::Taken => Renewal::Gone { taken: true },
            })
            .collect(),
        Ok(extended) => {
            let why = format!(
                "the renewal script answered {} times for {} leases",
                extended.len(),
                batch.len()
            );
            batch.iter().map(|_| Renewal::Failed(why.clone())).collect()
        }
        Err(Failed::Refused(e)) => batch
            .iter()
            .map(|_| Renewal::Failed(e.to_string()))
            .collect(),
        Err(Failed::NoReply(e)) => batch
            .iter()
            .map(|&(_, ttl)| Renewal::MayHaveRun {
                sent_at,
                ttl,
                why: e.to_string(),
            })
            .collect(),
    }
}

/// Sends `op` on a connection of the batch's pool, with its reply bounded by
/// `reply_timeout`.
fn send<T>(
    batch: &Batch<'_>,
    reply_timeout: Duration,
    op: impl FnMut(&mut conn::Conn) -> redis::RedisResult<T>,
) -> Result<T, Failed> {
    let rt = batch.key.response_timeout;
    let wait = reply_timeout.min(batch.pool.connection_timeout());
    // The checkout (an idle connection's check included) is bounded like the reply.
    let mut conn =
        conn::checkout(batch.pool, batch.route, wait, reply_timeout).map_err(Failed::Refused)?;
    conn.set_read_timeout(reply_timeout)
        .map_err(Failed::Refused)?;
    conn::run(batch.pool, batch.route, Some(conn), rt, op)
        .map_err(Failed::Refused)?
        .outcome(batch.route, "renew")
}
