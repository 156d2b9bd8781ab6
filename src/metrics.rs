//! What the locks report through the [`metrics`](https://docs.rs/metrics) facade, with the
//! `metrics` feature; without it every function here is empty and compiles to nothing.
//!
//! Every metric carries a `kind` label (`mutex`, `read`, `write`, `semaphore`, `redlock`, `election`) and, when the
//! lock was built with `metrics_label`, a `lock` label: names are the user's to put into
//! labels, since each distinct value is a time series. `docs/operations.md` lists them.

use std::sync::Arc;
use std::time::Duration;

/// The labels of one lock's metrics.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct Labels {
    kind: &'static str,
    lock: Option<Arc<str>>,
}

impl Labels {
    pub(crate) fn new(kind: &'static str, lock: Option<Arc<str>>) -> Labels {
        Labels { kind, lock }
    }

    /// The same lock, another kind (a read-write lock's read and write leases).
    pub(crate) fn of_kind(&self, kind: &'static str) -> Labels {
        Labels {
            kind,
            lock: self.lock.clone(),
        }
    }

    #[cfg(feature = "metrics")]
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![("kind", self.kind.to_owned())];
        if let Some(lock) = &self.lock {
            pairs.push(("lock", lock.to_string()));
        }
        pairs
    }
}

/// A lock was granted after `waited`; `contended` when it had to wait for a holder.
pub(crate) fn acquired(labels: &Labels, waited: Duration, contended: bool) {
    #[cfg(feature = "metrics")]
    {
        let pairs = labels.pairs();
        metrics::counter!("redis_mutex_acquired_total", &pairs).increment(1);
        if contended {
            metrics::counter!("redis_mutex_contended_total", &pairs).increment(1);
        }
        metrics::histogram!("redis_mutex_wait_seconds", &pairs).record(waited.as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (labels, waited, contended);
}

/// A timed acquire gave up: its deadline passed with the lock held elsewhere.
pub(crate) fn timed_out(labels: &Labels) {
    #[cfg(feature = "metrics")]
    metrics::counter!("redis_mutex_timeouts_total", &labels.pairs()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = labels;
}

/// A held lock was found lost, for `reason` (`taken_over`, `reset`, `expired`,
/// `unreachable`, or `found_by_holder` for a loss the holder's own call found).
pub(crate) fn lost(labels: &Labels, reason: &'static str) {
    #[cfg(feature = "metrics")]
    {
        let mut pairs = labels.pairs();
        pairs.push(("reason", reason.to_owned()));
        metrics::counter!("redis_mutex_lost_total", &pairs).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (labels, reason);
}

/// A guard let go after holding the lock `held_for`; `ours` when the release found the lock
/// still ours.
pub(crate) fn released(labels: &Labels, held_for: Duration, ours: bool) {
    #[cfg(feature = "metrics")]
    {
        let pairs = labels.pairs();
        metrics::histogram!("redis_mutex_hold_seconds", &pairs).record(held_for.as_secs_f64());
        if !ours {
            metrics::counter!("redis_mutex_release_not_held_total", &pairs).increment(1);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (labels, held_for, ours);
}

/// An election's observer saw a leader again, `leaderless` after it saw the last one go.
pub(crate) fn leaderless(labels: &Labels, leaderless: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!("redis_mutex_leaderless_seconds", &labels.pairs())
        .record(leaderless.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = (labels, leaderless);
}

/// A renewal failed (it is tried again while the lease lasts).
pub(crate) fn renewal_failed(labels: &Labels) {
    #[cfg(feature = "metrics")]
    metrics::counter!("redis_mutex_renewal_failures_total", &labels.pairs()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = labels;
}

/// One renewal call (a batch of leases, or one lease) took `took`.
pub(crate) fn renewal_call(took: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!("redis_mutex_renewal_batch_seconds").record(took.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = took;
}

/// `delta` leases more (or fewer) are kept alive by renewal.
pub(crate) fn renewed_leases(delta: f64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("redis_mutex_renewed_leases").increment(delta);
    #[cfg(not(feature = "metrics"))]
    let _ = delta;
}
