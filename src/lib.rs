//! A distributed lock held in Redis that feels like [`std::sync::Mutex`]: [`lock`] blocks,
//! [`try_lock`] doesn't, and the guard releases on drop. Threads in many processes on many
//! machines exclude each other; Rust and Python services can share locks, since the keys,
//! values and scripts are those of [python-redis-lock] 4.x.
//!
//! [`lock`]: RedisMutex::lock
//! [`try_lock`]: RedisMutex::try_lock
//! [python-redis-lock]: https://pypi.org/project/python-redis-lock/
//!
//! # Quick start
//!
//! ```no_run
//! use std::time::Duration;
//! use redis_mutex::{Pool, RedisMutex};
//!
//! let client = redis::Client::open("redis://127.0.0.1/")?;
//! // One connection checkout per lock and per release; skipping r2d2's PING on checkout
//! // keeps a lock+unlock at two round trips instead of four.
//! let pool = Pool::builder().test_on_check_out(false).build(client)?;
//!
//! let mutex = RedisMutex::builder(pool, "nightly-report")
//!     .expire(Duration::from_secs(30)) // a crashed holder frees it after 30 s
//!     .auto_renewal(true)              // ...but a live one keeps it as long as it needs
//!     .build()?;
//!
//! let guard = mutex.lock()?;
//! // only one thread of the whole fleet runs here at a time
//! guard.ensure_held()?; // before anything that must not run twice
//! guard.unlock()?;      // or just drop the guard
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How it works
//!
//! A lock named `jobs` is the string key `lock:jobs`, holding the owner id of whoever holds
//! it, with an expiry if one was set.
//!
//! - **Acquire** is one script call, `SET lock:jobs <id> NX PX <expiry>`, which also returns
//!   the holder's remaining lease when the lock is taken.
//! - **Waiting**: a waiter sleeps in `BLPOP lock-signal:jobs`, with a timeout bounded by its
//!   own deadline, by the holder's remaining lease and by one second; then it tries again.
//!   Nobody polls: a release wakes a waiter in about one round trip, a crashed holder's
//!   expiry is noticed right after it happens, and a wake-up that was lost costs at most a
//!   second.
//! - **Release** is one script call: if `lock:jobs` still holds our id, replace the signal
//!   list by a single element (which wakes exactly one waiter), let it expire after
//!   `signal_expire`, and delete the lock. Otherwise change nothing and report it.
//! - Threads of one process that share a [`RedisMutex`] queue on a local
//!   [`parking_lot`] mutex first, so N local waiters use one connection, not N.
//! - With [auto-renewal](RedisMutexBuilder::auto_renewal), one background thread per
//!   process renews every auto-renewed lease, in batches, compare-and-extend only.
//!
//! The full protocol is in `docs/protocol.md`, renewal in `docs/renewal.md`.
//!
//! # Read-write locks
//!
//! [`RedisRwLock`] locks a path in a tree (`tenants/42/invoices`) for reading or writing,
//! like [`std::sync::RwLock`]: readers share, a writer excludes readers and writers, and a
//! lock on a path also excludes conflicting locks on its ancestors and descendants. A
//! waiting writer keeps new readers out, so it is not starved; write guards carry fencing
//! tokens. Every acquire and release is one script, waiters sleep in `BLPOP`, and the keys
//! (`rwlock:*`) are this crate's own. See `docs/rwlock.md`.
//!
//! # Differences from `std::sync::Mutex`
//!
//! - Acquiring can fail: Redis may be unreachable, so [`lock`](RedisMutex::lock) returns a
//!   `Result`.
//! - A held lock can be lost: its lease can run out (a process paused longer than the
//!   expiry) or an operator can [`reset`](RedisMutex::reset) it. Check
//!   [`RedisMutexGuard::ensure_held`] before steps that must not run twice, and use
//!   auto-renewal for work of unknown length.
//! - No poisoning: a thread that panics while holding the guard releases the lock on unwind.
//! - No data inside: the mutex protects something outside the process (a job, a file, a
//!   table), so there is nothing to deref to.
//! - Locking again from the thread that holds the guard waits forever (it does not
//!   re-enter), as with std.
//! - A guard cannot be sent to another thread.
//!
//! # Guarantees and limits
//!
//! While Redis works and no lease runs out, at most one guard of a name exists at a time
//! across every process that uses the same Redis. What no Redis lock can promise:
//!
//! - **Pauses.** A holder stopped longer than its lease (GC, swapping, SIGSTOP, a VM
//!   migration) resumes believing it holds a lock that someone else now holds.
//!   Auto-renewal makes this rare and [`RedisMutexGuard::is_lost`] reports it afterwards,
//!   but nothing can prevent it. Storage that must never see two writers should check a
//!   fencing token as well.
//! - **Failover.** Redis replication is asynchronous: a lock written to a primary that dies
//!   before replicating it is gone on the new primary, and a second holder can get it.
//!   [`Redlock`] spreads a lock over independent servers to survive the loss of a
//!   minority of them; see `docs/redlock.md` for what that does and does not buy.
//! - **Clocks.** [`RedisMutexGuard::valid_for`] counts on this process's monotonic clock,
//!   less 1% and 2 ms for drift, from before the acquiring request was sent.
//!
//! # Log levels
//!
//! This crate logs through the [`log`] facade:
//!
//! | level | what |
//! |---|---|
//! | WARN | a lock lost while held; a release on drop that failed or found the lock gone |
//! | DEBUG | acquire, release, reset; a renewal that failed and will be retried |
//! | TRACE | each wait and each renewal batch |
//!
//! # Minimum supported Rust version
//!
//! Rust 1.95: the newest toolchain, and the only one this crate is built and tested with.
//! The code needs 1.88 (let chains in edition 2024, and `redis` 1.x), but an untested claim
//! is not a promise. The MSRV is raised only in a minor release.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod admin;
mod conn;
mod error;
mod lease;
mod mutex;
mod options;
mod redlock;
mod renewal;
mod rwlock;
mod scripts;

pub use admin::reset_all;
pub use error::{Error, Result, TryLockError};
pub use mutex::{RedisMutex, RedisMutexBuilder, RedisMutexGuard};
pub use redlock::{Redlock, RedlockBuilder, RedlockGuard};
pub use rwlock::{RedisRwLock, RedisRwLockBuilder, RedisRwLockReadGuard, RedisRwLockWriteGuard};

pub use r2d2;
pub use redis;

/// The connection pool every lock of this crate runs on: blocking `redis` connections
/// pooled by `r2d2`.
///
/// Build it with `test_on_check_out(false)`: r2d2 otherwise sends a `PING` on every
/// checkout, and a lock+unlock checks out twice.
pub type Pool = r2d2::Pool<redis::Client>;
