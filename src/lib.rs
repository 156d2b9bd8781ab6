//! A distributed lock held in Redis that feels like [`std::sync::Mutex`]: [`lock`] blocks,
//! [`try_lock`] doesn't, and the guard releases on drop. Threads in many processes on many
//! machines exclude each other; Rust and Python services can share locks, since the keys,
//! values and scripts are those of [python-redis-lock] 4.x. It runs on a single Redis (or
//! Valkey), a primary behind Sentinel, or a Redis Cluster, through the same [`Pool`].
//!
//! [`lock`]: RedisMutex::lock
//! [`try_lock`]: RedisMutex::try_lock
//! [python-redis-lock]: https://pypi.org/project/python-redis-lock/
//!
//! # Quick start
//!
//! ```toml
//! [dependencies]
//! redis-mutex = "0.2" # until it is on crates.io: { path = "../redis-mutex" }, a clone
//! ```
//!
//! ```no_run
//! use redis_mutex::{Pool, RedisMutex};
//! use std::time::Duration;
//!
//! fn main() -> Result<(), redis_mutex::Error> {
//!     let pool = Pool::new("redis://127.0.0.1:6379/")?;
//!     let mutex = RedisMutex::builder(pool, "nightly-report")
//!         .expire(Duration::from_secs(30)) // a crashed holder frees it after 30 s...
//!         .auto_renewal(true) // ...a live one keeps it as long as it needs
//!         .build()?;
//!
//!     let guard = mutex.lock()?;
//!     // ... only one thread of the whole fleet runs this at a time ...
//!     guard.ensure_held()?; // before each step that must not run twice
//!     guard.unlock()?; // or just drop the guard
//!     Ok(())
//! }
//! ```
//!
//! A Redis Cluster is `Pool::cluster(&["redis://10.0.0.1:7000/"])?`, a primary behind
//! Sentinel `Pool::sentinel(&["redis://10.0.0.1:26379/"], "mymaster")?`; everything else
//! stays the same. [`with_lock`](RedisMutex::with_lock) runs a closure under the lock.
//!
//! # Which lock?
//!
//! - [`RedisMutex`]: one holder at a time, for a name. The usual choice.
//! - [`RedisRwLock`]: readers share, a writer excludes, on the paths of a tree
//!   (`tenants/42/invoices`); a lock on a path also covers its subtree.
//! - [`RedisSemaphore`]: at most N holders at once ("at most 5 calls to that API"), each
//!   grant of permits a lease that a crashed holder gives back (see `docs/semaphore.md`).
//! - [`Redlock`]: one lock on a majority of independent servers, to survive the loss of a
//!   minority of them (at a price: see `docs/redlock.md`).
//! - [`RedisElection`]: one leader at a time among candidates, with a term number that
//!   fences, a value it proclaims, and observers woken by every change (`docs/election.md`).
//! - Auto-renewal (with an expiry) for work of unknown length: a crashed holder frees the
//!   lock one expiry after it died, a live one keeps it. Without it, pick an expiry longer
//!   than the work ever takes.
//! - A job that must run once, not once at a time, needs a "done" marker as well as a
//!   lock: a waiting worker otherwise runs it again after the first finishes.
//! - To take a lock in one process and hold it in another (a scheduler hands a job's lock
//!   to its worker; a process restarted in place resumes what it held): a guard's
//!   [`into_handle`](RedisMutexGuard::into_handle) gives a [`LockHandle`], a string that
//!   [`RedisMutex::resume`] turns back into a guard there, if the lock still holds exactly
//!   that grant.
//!
//! # How it works
//!
//! A mutex named `jobs` is the string key `lock:jobs`, holding the owner id of whoever holds
//! it, with an expiry if one was set (on a cluster, `lock:{jobs}`: see `docs/deployments.md`).
//!
//! - **Acquire** is one script call: `SET NX` with the expiry, plus a fencing token; or the
//!   holder's remaining lease when the lock is taken.
//! - **Waiting**: a waiter sleeps in `BLPOP lock-signal:jobs`, with a timeout bounded by its
//!   own deadline, by the holder's remaining lease and by one second; then it tries again.
//!   Nobody polls: a release wakes a waiter in about one round trip, a crashed holder's
//!   expiry is noticed right after it happens, and a wake-up that was lost costs at most a
//!   second. A [`try_lock_for`](RedisMutex::try_lock_for) that gives up returns a few
//!   milliseconds after its deadline (`docs/performance.md` has the figures).
//! - **Release** is one script call: if `lock:jobs` still holds our id, push one element to
//!   the signal list (which wakes exactly one waiter) and delete the lock; otherwise change
//!   nothing and report it.
//! - In [fair mode](RedisMutexBuilder::fair), waiters queue in Redis in order of arrival,
//!   and a release hands the lock straight to the first of them: its wake-up is its grant.
//! - **What waiting costs.** Every [`RedisMutex`] of one [`Pool`] and name in a process
//!   shares one local side, whether threads share one mutex or each builds its own: one
//!   waiting thread waits in Redis, on one connection, and the others wait in the process
//!   for their turn to, without a call. A thread that holds the lock takes no turn: when
//!   its grant ends (released, reset, expired), the waiter of its process is woken as one
//!   of any other process is. A grant costs two script calls (the acquire and the
//!   release), and a waiter in Redis one more per second it waits (500 ms in fair mode),
//!   however many threads want the name. All but one of a pool's
//!   connections may wait at once, so a holder can always release; a process that waits
//!   for more names at once than that takes turns, a second each.
//! - With [auto-renewal](RedisMutexBuilder::auto_renewal), a background thread per server
//!   renews every auto-renewed lease on it, in batches, compare-and-extend only.
//! - Every connection has its read and write timeouts before its first byte, so every call
//!   is bounded by the [response timeout](PoolBuilder::response_timeout) (2 s by default)
//!   per request, however the server fails.
//!
//! The full protocol is in `docs/mutex.md`, the code's map in `docs/architecture.md`.
//!
//! # Differences from `std::sync::Mutex`
//!
//! - Acquiring can fail: Redis may be unreachable, so [`lock`](RedisMutex::lock) returns a
//!   `Result`, and fails within its bounds rather than hang.
//! - A held lock can be lost: its lease can run out (a process paused longer than the
//!   expiry) or an operator can [`reset`](RedisMutex::reset) it. Check
//!   [`RedisMutexGuard::ensure_held`] before steps that must not run twice, and use
//!   auto-renewal for work of unknown length.
//! - No poisoning: a thread that panics while holding the guard releases the lock on unwind.
//! - No data inside: the mutex protects something outside the process (a job, a file, a
//!   table), so there is nothing to deref to.
//! - Locking again from the thread that holds the guard waits forever (it does not
//!   re-enter), as with std.
//! - Guards may be sent to other threads, and [`lock_arc`](RedisMutex::lock_arc) gives one
//!   that owns its mutex.
//!
//! # From async code
//!
//! The calls block their thread while they wait, as [`std::sync::Mutex::lock`] does. From
//! async code (tokio), make them on the runtime's blocking pool, and release there too; a
//! guard may then live across `.await`s:
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use redis_mutex::{Pool, RedisMutex};
//! use tokio::task::spawn_blocking;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//!     let pool = Pool::new("redis://127.0.0.1/")?; // connects once: at start-up
//!     let mutex = Arc::new(
//!         RedisMutex::builder(pool, "nightly-report")
//!             .expire(Duration::from_secs(30))
//!             .build()?,
//!     );
//!
//!     let waiting = mutex.clone();
//!     let guard = spawn_blocking(move || waiting.lock_arc()).await??; // an owned guard
//!     tokio::time::sleep(Duration::from_millis(10)).await; // ... the work, awaiting as it goes ...
//!     spawn_blocking(move || guard.unlock()).await??; // or drop it in there
//!     Ok(())
//! }
//! ```
//!
//! With the `tokio` feature, `mutex.lock_async().await?` does both halves: it waits on the
//! blocking pool and gives a guard whose drop releases off the runtime (module `redis_mutex::tokio`;
//! also for [`RedisSemaphore`]). `examples/tokio.rs` runs 32 tasks on two worker threads
//! both ways.
//!
//! **Why.** [`lock`](RedisMutex::lock) called in a task blocks the runtime thread it runs on
//! until the lock is free, and that thread runs no other task meanwhile. A holder that is a
//! task parked at an `.await` with its guard needs a runtime thread to resume and release.
//! On a `current_thread` runtime there is none left as soon as one task waits; on a
//! multi-thread runtime, none once as many tasks wait as there are workers. The holder
//! then never releases:
//!
//! - with [auto-renewal](RedisMutexBuilder::auto_renewal) (whose thread keeps renewing the
//!   parked holder's lease) or without an expiry, the program hangs, for good and silently;
//! - with an expiry alone, each waiter gets the lock only when the holder's lease runs
//!   out, while the parked holder still believes it holds it: its work runs unprotected,
//!   and its `unlock` returns [`Error::NotAcquired`]. Each turn costs a whole lease.
//!
//! On the blocking pool a waiting call holds none of the runtime's threads, so holders
//! always resume and release, however many tasks wait. What it costs:
//!
//! - A call that waits holds a thread of the blocking pool until it returns (tokio allows
//!   512), and a release needs one too: keep fewer calls waiting at once than that (a
//!   `tokio::sync::Semaphore` in front of them), or give them a deadline
//!   ([`try_lock_arc_for`](RedisMutex::try_lock_arc_for)).
//! - Dropping the future that awaits a `spawn_blocking` does not stop its call, and a
//!   runtime that is dropped waits for its blocking pool: a bounded wait is
//!   `try_lock_arc_for`, not `tokio::time::timeout`.
//! - A guard dropped on a runtime thread (a task that returns early with `?`, or panics)
//!   releases on that thread: one round trip that waits for no other task, within the
//!   response timeout. The `tokio` feature's guard hands it to a thread of the crate's
//!   instead.
//! - [`RedisRwLock`]'s guards borrow the lock, so they cannot be moved into a
//!   `spawn_blocking` and out again: take, use and release one within one closure on the
//!   blocking pool (or on a thread of its own).
//!
//! # Guarantees and limits
//!
//! While Redis works and no lease runs out, at most one guard of a name exists at a time
//! across every process that uses the same Redis. Every call returns within its bound
//! (its own deadline plus one response timeout; `docs/reliability.md` states it exactly),
//! whatever the server does. What no Redis lock can promise:
//!
//! - **Pauses.** A holder stopped longer than its lease (GC, swapping, SIGSTOP, a VM
//!   migration) resumes believing it holds a lock that someone else now holds.
//!   Auto-renewal makes this rare and [`RedisMutexGuard::is_lost`] reports it afterwards,
//!   but nothing can prevent it. Storage that must never see two writers should check a
//!   [fencing token](RedisMutexGuard::fencing_token) as well.
//! - **Failover.** Redis replication is asynchronous: a lock written to a primary that dies
//!   before replicating it is gone on the new primary, and a second holder can get it
//!   (`docs/deployments.md` has what failovers measure here).
//!   [`wait_replicas`](RedisMutexBuilder::wait_replicas) narrows that window, at the price
//!   of grants refused while a demoted primary resynchronises; [`Redlock`] spreads a lock over independent servers
//!   to survive the loss of a minority of them. See `docs/redlock.md`.
//! - **Restarts without persistence** free every lock the server held.
//! - **Clocks.** [`RedisMutexGuard::valid_for`] counts on this process's monotonic clock,
//!   less 1% and 2 ms for drift, from before the acquiring request was sent.
//!
//! # Log levels
//!
//! This crate logs through the [`log`](https://docs.rs/log) facade:
//!
//! | level | what |
//! |---|---|
//! | ERROR | an `on_lost` callback that panicked (nothing else: failures are returned) |
//! | WARN | a lock lost while held; a release on drop that failed or found the lock gone; a lost reply whose undo failed too (a lock may be held by nobody until it expires); a server that cannot be reached (once, until it can again) |
//! | INFO | a server that can be reached again |
//! | DEBUG | acquire, release, reset; a renewal that failed and will be retried |
//! | TRACE | each wait, each renewal batch, each redirection |
//!
//! # Crate features
//!
//! | feature | what it adds |
//! |---|---|
//! | `tls-rustls` | `rediss://` connections through rustls (root certificates from the system, or a `redis::Client::build_with_tls` given to [`PoolBuilder::build_with_client`]) |
//! | `cli` | the `redis-mutex` command (`cargo install --path . --features cli` from a clone): `list`, `owner`, `reset`, `reset-owned-by`, `reset-all`, `watch` |
//! | `metrics` | counters, histograms and a gauge through the [`metrics`](https://docs.rs/metrics) facade; see `docs/operations.md` |
//! | `tokio` | async forms of the blocking calls (`lock_async`, `acquire_async`, ...) that wait on tokio's blocking pool, and guards that release off the runtime when dropped; see "From async code" |
//!
//! None is on by default; Sentinel and Cluster need none.
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

mod acquire;
mod admin;
mod conn;
mod election;
mod error;
mod family;
mod handle;
mod held;
mod keys;
mod lease;
mod local;
mod metrics;
mod mutex;
mod options;
mod pool;
mod redlock;
mod release;
mod renewal;
mod rwlock;
mod scripts;
mod semaphore;
mod time;
#[cfg(feature = "tokio")]
pub mod tokio;
mod wait;

pub use admin::{ListLocks, list_locks, reset_all, reset_owned_by};
pub use conn::PooledConnection;
pub use election::{
    ArcLeadership, Leader, Leadership, Observer, RedisElection, RedisElectionBuilder,
};
pub use error::{Error, LostReason, Result, TryLockError};
pub use family::{LockInfo, LockKind, PermitsInfo};
pub use handle::{HandleKind, LockHandle};
pub use keys::MAX_NAME_LEN;
pub use lease::LostLock;
pub use mutex::{
    ArcRedisMutexGuard, OncePer, PeriodDone, PeriodWindow, RedisMutex, RedisMutexBuilder,
    RedisMutexGuard, Released, last_release, lock_info,
};
pub use pool::{Pool, PoolBuilder};
pub use redlock::{Redlock, RedlockBuilder, RedlockGuard};
pub use rwlock::{RedisRwLock, RedisRwLockBuilder, RedisRwLockReadGuard, RedisRwLockWriteGuard};
pub use semaphore::{
    ArcRedisSemaphorePermit, RedisSemaphore, RedisSemaphoreBuilder, RedisSemaphorePermit,
    SemaphoreHolder,
};

pub use r2d2;
/// The `redis` crate (1.x) this one is built on, re-exported so that your own commands use
/// the version the pool's connections speak: [`Pool::connection`] and
/// [`Pool::connection_for`] lend a [`PooledConnection`], a [`redis::ConnectionLike`] on
/// which `redis::cmd(..)`, pipelines, a [`redis::Script`] and the [`redis::Commands`]
/// methods run. Name it through this path (`redis_mutex::redis`) rather than a `redis`
/// dependency of your own, or keep that one's version the same as this crate's: the lent
/// connection implements this version's traits.
///
/// # Examples
///
/// ```no_run
/// use redis_mutex::Pool;
/// use redis_mutex::redis::Commands;
///
/// let pool = Pool::new("redis://127.0.0.1:6379/")?;
/// let mut conn = pool.connection()?;
/// let runs: u64 = conn.incr("nightly-report:runs", 1)?;
/// println!("run number {runs}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub use redis;

/// The README's code, compiled with the doc tests so that it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The semaphore page's code, compiled with the doc tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/semaphore.md")]
struct SemaphoreDoctests;
