//! One request per instance, to all instances at once: a scoped thread per instance (the
//! calling thread serving the first), each request bounded by a timeout that covers the pool
//! checkout and the reply.

use std::panic;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::conn::{self, Conn};
use crate::error::Result;
use crate::pool::Pool;
use crate::time::Deadline;

/// The result of one request to one instance.
pub(super) struct Reply<T> {
    pub(super) result: Result<T>,
    /// Whether a request was sent whose effect we do not know: its reply did not come in
    /// time, or its connection broke. The server may have run it, or may still run it.
    pub(super) in_doubt: bool,
    /// The connection on which a request's reply is still unread (it timed out), if any.
    /// The next request about the same key to this instance must go on it: Redis runs one
    /// connection's commands in the order they were sent, so a release sent on it can never
    /// overtake the `SET` it is meant to undo, however long the server was stalled.
    pub(super) conn: Option<Conn>,
}

/// Sends one request about `key` to the instance behind `pool`: on `pending`, a
/// connection with a reply still unread, if given (see [`Reply::conn`]), else on a
/// connection checked out now. The checkouts and the reply together take about `timeout`
/// at most.
///
/// `op` gets the connection and whether a reply on it is still unread; it must send
/// exactly one command (never a pipeline, whose every reply would wait a full timeout on a
/// stalled server).
///
/// A connection found broken (a pooled connection to a server that restarted since, or
/// one the server closed) is replaced by another one while time is left, at most once per
/// connection the pool can hold; the request is then [in doubt](Reply::in_doubt).
pub(super) fn request<T>(
    pool: &Pool,
    key: &str,
    pending: Option<Conn>,
    timeout: Duration,
    op: impl Fn(&mut Conn, bool) -> redis::RedisResult<T>,
) -> Reply<T> {
    let started = Instant::now();
    let mut pending = pending;
    let mut in_doubt = false;
    let mut tries: u32 = 0;
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        let had_pending = pending.is_some();
        let conn = match pending.take() {
            Some(mut conn) => match conn.set_timeout(socket_timeout(left)) {
                Ok(()) => conn,
                Err(e) => return failed(e, in_doubt, Some(conn)),
            },
            None if left.is_zero() => return failed(timed_out(), in_doubt, None),
            None => match conn::checkout(pool, key, Deadline::after(socket_timeout(left))) {
                Ok(conn) => conn,
                Err(e) => return failed(e, in_doubt, None),
            },
        };
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return failed(timed_out(), in_doubt, had_pending.then_some(conn));
        }
        tries += 1;
        // Redirections (a cluster's MOVED, ASK) are followed; only a command the server
        // said it did not run is sent again.
        let deadline = Deadline::after(socket_timeout(left));
        let ran = conn::run(pool, key, Some(conn), deadline, |c| op(c, had_pending));
        let mut ran = match ran {
            Ok(ran) => ran,
            Err(e) => return failed(e, in_doubt, None),
        };
        log::trace!(
            "redlock request: {:?} after {:?}",
            ran.result.as_ref().map(|_| ()),
            started.elapsed()
        );
        let e = match ran.result {
            Ok(value) => {
                return Reply {
                    result: Ok(value),
                    in_doubt,
                    conn: None,
                };
            }
            Err(e) if !conn::reply_lost(&e) => {
                let error = ran.conn.fail(e, key, "redlock request");
                return failed(error, in_doubt, None);
            }
            Err(e) => e,
        };
        let open = ran.conn.is_open();
        if conn::reply_pending(&e) && open {
            let error = ran.conn.fail(e, key, "redlock request");
            return failed(error, true, Some(ran.conn));
        }
        in_doubt = true;
        let broken = !open || e.is_connection_dropped();
        if !broken || tries > pool.config().max_size {
            let error = ran.conn.fail(e, key, "redlock request");
            return failed(error, in_doubt, None);
        }
        log::trace!("redlock request: broken connection ({e}); trying another one");
    }
}

/// `left` rounded down to whole milliseconds (at least 1 ms, the least a socket takes), so
/// that the request after this one on the same connection usually finds the timeout it
/// needs already set and skips the two `setsockopt` calls. Never more than `left`, but
/// for under 1 ms.
fn socket_timeout(left: Duration) -> Duration {
    Duration::from_millis(u64::try_from(left.as_millis()).unwrap_or(u64::MAX)).max(MIN_TIMEOUT)
}

const MIN_TIMEOUT: Duration = Duration::from_millis(1);

fn failed<T>(error: crate::error::Error, in_doubt: bool, conn: Option<Conn>) -> Reply<T> {
    Reply {
        result: Err(error),
        in_doubt,
        conn,
    }
}

fn timed_out() -> crate::error::Error {
    crate::error::Error::Timeout {
        server: "a redlock instance".to_owned(),
        after: Duration::ZERO,
    }
}

/// Runs `op` on every item at once, one thread per item, and returns the results in the
/// items' order: the calling thread runs the first item, scoped threads the others, so one
/// item costs no thread at all and `n` items cost `n − 1`. Should the OS refuse a thread,
/// that item runs on the calling thread too, after the first: slower, never skipped.
pub(super) fn fan_out<I: Send, T: Send>(items: Vec<I>, op: impl Fn(I) -> T + Sync) -> Vec<T> {
    let mut items = items.into_iter();
    let Some(first) = items.next() else {
        return Vec::new();
    };
    if items.as_slice().is_empty() {
        return vec![op(first)];
    }
    // Each other item sits in a slot so that it is still there for the calling thread when
    // its thread could not be started.
    let slots: Vec<Mutex<Option<I>>> = items.map(|i| Mutex::new(Some(i))).collect();
    let (op, slots) = (&op, &slots);
    thread::scope(|scope| {
        let handles: Vec<_> = slots
            .iter()
            .map(|slot| {
                thread::Builder::new()
                    .name("redis-mutex-redlock".into())
                    .spawn_scoped(scope, move || take(slot).map(op))
                    .inspect_err(|e| {
                        log::debug!("no thread for a redlock request ({e}); sending it inline")
                    })
                    .ok()
            })
            .collect();
        // The first request goes out while the threads start.
        let mut results = Vec::with_capacity(slots.len() + 1);
        results.push(op(first));
        for (handle, slot) in handles.into_iter().zip(slots) {
            let result = match handle {
                Some(handle) => handle.join().unwrap_or_else(|p| panic::resume_unwind(p)),
                None => take(slot).map(op),
            };
            // Each slot is taken exactly once: by its thread, or here when it had none.
            if let Some(result) = result {
                results.push(result);
            }
        }
        results
    })
}

fn take<I>(slot: &Mutex<Option<I>>) -> Option<I> {
    slot.lock().take()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_keeps_the_order_and_runs_at_once() {
        let started = Instant::now();
        let results = fan_out((0..8).collect(), |i: u64| {
            thread::sleep(Duration::from_millis(50));
            i * 10
        });
        assert_eq!(results, vec![0, 10, 20, 30, 40, 50, 60, 70]);
        // Sequential would take 400 ms; in parallel 50 ms plus thread start-up.
        assert!(
            started.elapsed() < Duration::from_millis(350),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(fan_out(vec![7], |i: i32| i + 1), vec![8]);
        assert!(fan_out(Vec::<i32>::new(), |i| i).is_empty());
    }

    #[test]
    fn the_calling_thread_serves_the_first_item_and_threads_the_others() {
        let caller = thread::current().id();
        let ran_on = fan_out((0..5).collect(), |i: usize| (i, thread::current().id()));
        assert_eq!(ran_on[0], (0, caller));
        for (i, &(item, id)) in ran_on.iter().enumerate().skip(1) {
            assert_eq!(item, i);
            assert_ne!(id, caller, "item {i} ran on the calling thread");
        }
        let distinct: std::collections::HashSet<_> = ran_on.iter().map(|(_, id)| id).collect();
        assert_eq!(distinct.len(), 5, "one thread per item");
        assert_eq!(
            fan_out(vec![7], |_: i32| thread::current().id()),
            vec![caller]
        );
    }

    #[test]
    fn socket_timeouts_are_whole_milliseconds_never_above_what_is_left() {
        let ms = Duration::from_millis;
        assert_eq!(socket_timeout(ms(50) - Duration::from_micros(3)), ms(49));
        assert_eq!(socket_timeout(ms(49) + Duration::from_micros(999)), ms(49));
        assert_eq!(socket_timeout(ms(50)), ms(50));
        // The least a socket accepts.
        assert_eq!(socket_timeout(Duration::from_micros(300)), ms(1));
        assert_eq!(socket_timeout(Duration::MAX), ms(u64::MAX));
    }

    #[test]
    fn running_out_of_time_is_a_timeout() {
        assert!(timed_out().is_timeout());
    }
}
