//! Releases that could not be sent, sent again in the background: a guard's `unlock`
//! consumes it, so its caller cannot try again, and the lock would otherwise stay until its
//! lease ran out (forever, without one). One thread, started on the first such release,
//! sends each again every few hundred milliseconds, until it is answered or its time is up.
//! The same thread drops the guards the `tokio` feature hands it, so that their releases
//! wait neither on a runtime thread nor behind the calls that fill tokio's blocking pool.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};

/// A release to send again: what it is, for the logs, and how to send it (answering
/// whether the grant was still ours).
pub(crate) struct Release {
    pub(crate) kind: &'static str,
    pub(crate) name: String,
    pub(crate) send: Box<dyn Fn() -> Result<bool> + Send>,
}

/// How long a release of a lock without expiry is tried again for.
pub(crate) const WITHOUT_EXPIRY: Duration = Duration::from_secs(60);

/// The first pause between two tries, and the longest.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(1));

/// A release to send again, and when.
struct Pending {
    release: Release,
    /// When trying stops: the lease's end.
    until: Instant,
    next: Instant,
    pause: Duration,
}

#[derive(Default)]
struct Queue {
    pending: Mutex<Vec<Pending>>,
    /// Guards to drop (and so release) on the thread.
    drops: Mutex<Vec<Box<dyn Send>>>,
    added: Condvar,
    /// Whether the thread runs.
    running: Mutex<bool>,
}

static QUEUE: LazyLock<Queue> = LazyLock::new(Queue::default);

/// Whether `e` says a release may not have reached the server (and so may be sent again):
/// no connection, no answer in time, or a connection that broke.
pub(crate) fn unsent(e: &Error) -> bool {
    match e {
        Error::Timeout { .. } | Error::PoolTimeout { .. } | Error::Unreachable { .. } => true,
        Error::Redis { source, .. } => {
            source.is_io_error() || source.is_connection_dropped() || source.is_timeout()
        }
        _ => false,
    }
}

/// Sends `release` again in the background until it is answered or `retry_for` has
/// passed; `Err` only when the thread that does it cannot be started.
pub(crate) fn retry(release: Release, retry_for: Duration) -> Result<()> {
    start()?;
    let now = Instant::now();
    QUEUE.pending.lock().push(Pending {
        release,
        until: now + retry_for,
        next: now + BACKOFF.0,
        pause: BACKOFF.0,
    });
    QUEUE.added.notify_one();
    Ok(())
}

/// Drops `guard` on the release thread, which releases it there; here, if the thread
/// cannot be started.
#[cfg(feature = "tokio")]
pub(crate) fn drop_later(guard: Box<dyn Send>) {
    if start().is_err() {
        return drop(guard);
    }
    QUEUE.drops.lock().push(guard);
    let _pending = QUEUE.pending.lock();
    QUEUE.added.notify_one();
}

fn start() -> Result<()> {
    let mut running = QUEUE.running.lock();
    if !*running {
        std::thread::Builder::new()
            .name("redis-mutex-release".into())
            .spawn(run)
            .map_err(Error::RenewalThread)?;
        *running = true;
    }
    Ok(())
}

/// The thread: sends each release when it is due.
fn run() {
    let mut pending = QUEUE.pending.lock();
    loop {
        let drops = std::mem::take(&mut *QUEUE.drops.lock());
        if !drops.is_empty() {
            drop(pending);
            drop(drops);
            pending = QUEUE.pending.lock();
            continue;
        }
        let now = Instant::now();
        let due = pending.iter().position(|p| p.next <= now);
        let Some(i) = due else {
            match pending.iter().map(|p| p.next).min() {
                Some(next) => {
                    QUEUE.added.wait_until(&mut pending, next);
                }
                None => QUEUE.added.wait(&mut pending),
            }
            continue;
        };
        let mut job = pending.swap_remove(i);
        drop(pending);
        let (kind, name) = (job.release.kind, job.release.name.clone());
        match (job.release.send)() {
            Ok(true) => log::info!("released {kind} `{name}` on a later try"),
            Ok(false) => {
                log::info!("{kind} `{name}` was no longer ours when its release got through")
            }
            Err(e) if unsent(&e) && Instant::now() < job.until => {
                log::debug!("releasing {kind} `{name}` failed again: {e}");
                job.next = (Instant::now() + job.pause).min(job.until);
                job.pause = (job.pause * 2).min(BACKOFF.1);
                QUEUE.pending.lock().push(job);
            }
            Err(e) => log::warn!(
                "gave up releasing {kind} `{name}`; it stays until its lease runs out: {e}"
            ),
        }
        pending = QUEUE.pending.lock();
    }
}
