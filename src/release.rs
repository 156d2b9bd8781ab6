//! Releases that could not be sent, sent again in the background: a guard's `unlock`
//! consumes it, so its caller cannot try again, and the lock would otherwise stay until its
//! lease ran out (forever, without one). One thread, started on the first such release,
//! sends each again every few hundred milliseconds, until it is answered or its time is up.
//! The same thread drops the guards the `tokio` feature hands it, so that their releases
//! wait neither on a runtime thread nor behind the calls that fill tokio's blocking pool.
//!
//! What is due at once is sent at once, each on a scoped thread of its own (up to
//! [`AT_ONCE`]): a release to a server that does not answer takes a response timeout, and
//! must not hold up the others, nor the drops behind it, for longer than that.

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

/// The most releases and drops sent at once, each on a thread of its own.
const AT_ONCE: usize = 32;

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

/// The thread: sends the releases that are due, and drops the guards handed to it, each
/// batch at once.
fn run() {
    // Should the thread end by a panic (a release's own, in a caller's metrics recorder or
    // callback), the next release or drop handed over starts another.
    struct Restart;
    impl Drop for Restart {
        fn drop(&mut self) {
            *QUEUE.running.lock() = false;
        }
    }
    let _restart = Restart;
    let mut pending = QUEUE.pending.lock();
    loop {
        let mut drops = std::mem::take(&mut *QUEUE.drops.lock());
        let now = Instant::now();
        let mut due = Vec::new();
        let mut i = 0;
        while i < pending.len() && due.len() + drops.len() < AT_ONCE {
            if pending[i].next <= now {
                due.push(pending.swap_remove(i));
            } else {
                i += 1;
            }
        }
        if due.is_empty() && drops.is_empty() {
            let next = pending.iter().map(|p| p.next).min();
            crate::time::wait_on(&QUEUE.added, &mut pending, next);
            continue;
        }
        drop(pending);
        let later = drops.split_off(drops.len().min(AT_ONCE));
        QUEUE.drops.lock().extend(later);
        let again = send_all(due, drops);
        pending = QUEUE.pending.lock();
        pending.extend(again);
    }
}

/// Sends `due` and drops `drops`, each on a scoped thread (in turn here, when a thread
/// cannot be started); what is to be tried again.
fn send_all(due: Vec<Pending>, drops: Vec<Box<dyn Send>>) -> Vec<Pending> {
    std::thread::scope(|scope| {
        // Joined below, so that a panic in one (a caller's, in a drop) ends that one only.
        let dropping: Vec<_> = drops
            .into_iter()
            .filter_map(|guard| {
                // When no thread can be started, the guard goes with the closure: dropped
                // here.
                std::thread::Builder::new()
                    .name("redis-mutex-release".into())
                    .spawn_scoped(scope, move || drop(guard))
                    .ok()
            })
            .collect();
        let sending: Vec<_> = due
            .into_iter()
            .map(|job| {
                let job = std::sync::Arc::new(Mutex::new(Some(job)));
                let spawned = std::thread::Builder::new()
                    .name("redis-mutex-release".into())
                    .spawn_scoped(scope, {
                        let job = job.clone();
                        move || job.lock().take().and_then(send_again)
                    });
                (job, spawned)
            })
            .collect();
        let again = sending
            .into_iter()
            .filter_map(|(job, spawned)| match spawned {
                Ok(handle) => handle.join().ok().flatten(),
                // No thread: send it here.
                Err(_) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    job.lock().take().and_then(send_again)
                }))
                .ok()
                .flatten(),
            })
            .collect();
        for dropped in dropping {
            let _ = dropped.join();
        }
        again
    })
}

/// Sends one release again; the release, when it is to be tried again later.
fn send_again(mut job: Pending) -> Option<Pending> {
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
            return Some(job);
        }
        Err(e) => {
            log::warn!("gave up releasing {kind} `{name}`; it stays until its lease runs out: {e}")
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Whether `flag` is set within `within`.
    fn set_within(flag: &AtomicBool, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !flag.load(Ordering::SeqCst) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// A release that panics (in a caller's metrics recorder, say) ends itself only: the
    /// releases handed over after it are still sent.
    #[test]
    fn a_release_that_panics_leaves_the_thread_to_the_others() {
        let tried = Arc::new(AtomicBool::new(false));
        let flag = tried.clone();
        let panics = Release {
            kind: "test",
            name: "panics".into(),
            send: Box::new(move || {
                flag.store(true, Ordering::SeqCst);
                panic!("a recorder's panic, on the release thread");
            }),
        };
        retry(panics, Duration::from_secs(5)).unwrap();
        assert!(set_within(&tried, Duration::from_secs(10)), "never tried");
        let sent = Arc::new(AtomicBool::new(false));
        let flag = sent.clone();
        let after = Release {
            kind: "test",
            name: "after".into(),
            send: Box::new(move || {
                flag.store(true, Ordering::SeqCst);
                Ok(true)
            }),
        };
        retry(after, Duration::from_secs(5)).unwrap();
        assert!(
            set_within(&sent, Duration::from_secs(10)),
            "a release handed over after one that panicked was never sent"
        );
    }

    /// Sets its flag when dropped, and panics if asked to.
    struct OnDrop {
        flag: Arc<AtomicBool>,
        panics: bool,
    }

    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.flag.store(true, Ordering::SeqCst);
            assert!(
                !self.panics,
                "a guard's drop that panics, on the release thread"
            );
        }
    }

    /// The same for the guards the `tokio` feature hands over to be dropped.
    #[cfg(feature = "tokio")]
    #[test]
    fn a_drop_that_panics_leaves_the_thread_to_the_others() {
        let (tried, dropped) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        drop_later(Box::new(OnDrop {
            flag: tried.clone(),
            panics: true,
        }));
        assert!(set_within(&tried, Duration::from_secs(10)), "never dropped");
        drop_later(Box::new(OnDrop {
            flag: dropped.clone(),
            panics: false,
        }));
        assert!(
            set_within(&dropped, Duration::from_secs(10)),
            "a guard handed over after one whose drop panicked was never dropped"
        );
    }
}
