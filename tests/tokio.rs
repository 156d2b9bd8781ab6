//! From async code (tokio): the pattern of "From async code" in the crate docs never
//! deadlocks, with more tasks than the runtime has worker threads, on a multi-thread runtime
//! and on a current-thread one whose holder is parked at an `.await` while another task
//! waits; `examples/tokio.rs` runs as written. With the `tokio` feature (`cargo test
//! --features tokio --test tokio`), the async forms do the same, and a dropped
//! `AsyncGuard` releases without blocking the runtime's thread.
//!
//! Every runtime runs on a thread of its own, joined within `HANG`: a deadlock fails the
//! test instead of hanging the run. The locks have auto-renewal and long leases, so that a
//! deadlocked holder would never free its lock by expiry.

#[allow(dead_code)] // this binary uses a part
mod support;

/// The example, run by the tests below as written (it loads `support/server.rs` again).
#[path = "../examples/tokio.rs"]
#[allow(dead_code, clippy::duplicate_mod)] // the example's `main`
mod example;

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_mutex::{Pool, RedisMutex};
use support::{HANG, RedisServer, blocked_clients, eventually, spawn};
use tokio::runtime::{Builder, Runtime};
use tokio::task::spawn_blocking;

/// A lease no test lasts: a lock freed by its expiry would fail the test by `HANG` first.
const LEASE: Duration = Duration::from_secs(60);

fn multi_thread(workers: usize) -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

fn current_thread() -> Runtime {
    Builder::new_current_thread().enable_all().build().unwrap()
}

/// A mutex with auto-renewal on `pool`: a holder that never resumed would keep it forever.
fn renewed_mutex(pool: Pool, name: &str) -> Arc<RedisMutex> {
    Arc::new(
        RedisMutex::builder(pool, name)
            .expire(LEASE)
            .auto_renewal(true)
            .build()
            .unwrap(),
    )
}

/// Runs the example's turns (`tasks` tasks on one lock, each awaiting inside it) on
/// `runtime`, every way this build has, within `HANG`.
fn example_turns(what: &str, runtime: Runtime, tasks: usize) {
    let server = RedisServer::start();
    let pool = server.pool();
    let run = spawn(what, move || {
        example::Way::ALL
            .iter()
            .map(|&way| {
                let turns = runtime
                    .block_on(example::turns(pool.clone(), tasks, way))
                    .unwrap_or_else(|e| panic!("{way:?}: {e}"));
                (way, turns)
            })
            .collect::<Vec<_>>()
    })
    .join(HANG);
    for (way, turns) in run {
        println!("{what}, {way:?}: {turns:?}");
        assert_eq!(
            (turns.turns, turns.most_at_once),
            (tasks, 1),
            "{way:?}: expected {tasks} turns one at a time, saw {turns:?}"
        );
    }
}

#[test]
fn the_example_runs_32_tasks_on_2_workers_one_at_a_time() {
    example_turns("2 workers", multi_thread(2), 32);
}

#[test]
fn the_examples_tasks_take_turns_on_a_current_thread_runtime() {
    example_turns("current thread", current_thread(), 16);
}

/// A holder parked at an `.await` (which needs the runtime's only thread to resume) while
/// another task waits for its lock: the waiter waits on the blocking pool, so the holder
/// resumes and releases, and the waiter takes the lock from that release.
#[test]
fn a_holder_parked_at_an_await_releases_while_a_task_waits_on_a_current_thread_runtime() {
    let server = RedisServer::start();
    let mutex = renewed_mutex(server.pool(), "tokio:parked");
    let mut conn = server.connection();
    let runtime = current_thread();
    let (released, acquired) = spawn("current thread", move || {
        runtime.block_on(async move {
            let taken = mutex.clone();
            let guard = spawn_blocking(move || taken.lock_arc()).await??;
            let waiter = {
                let mutex = mutex.clone();
                tokio::spawn(async move {
                    let guard = spawn_blocking(move || mutex.lock_arc()).await??;
                    let acquired = Instant::now();
                    spawn_blocking(move || guard.unlock()).await??;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(acquired)
                })
            };
            // Parked with the guard until the waiter waits in Redis (it waits on the
            // blocking pool, so this task still gets the runtime's thread back).
            let waiting =
                spawn_blocking(move || eventually(HANG, || blocked_clients(&mut conn) >= 1))
                    .await?;
            assert!(waiting, "the waiter never waited in Redis");
            assert!(
                !waiter.is_finished(),
                "the waiter took a lock that was held"
            );
            let released = Instant::now();
            spawn_blocking(move || guard.unlock()).await??;
            let acquired = waiter.await??;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((released, acquired))
        })
    })
    .join(HANG)
    .unwrap();
    assert!(
        acquired >= released,
        "the waiter took the lock before the holder released it"
    );
}

/// The documented pattern with the releases as a task may do them: half unlock in
/// `spawn_blocking`, half drop the guard in there; two names, 32 tasks each, on two
/// workers.
#[test]
fn lock_await_unlock_with_more_tasks_than_workers_never_deadlocks() {
    const TASKS: usize = 32;
    let server = RedisServer::start();
    let mutexes = [
        renewed_mutex(server.pool(), "tokio:crowd-a"),
        renewed_mutex(server.pool(), "tokio:crowd-b"),
    ];
    let runtime = multi_thread(2);
    let started = Instant::now();
    let done = spawn("2 workers", move || {
        runtime.block_on(async move {
            let tasks: Vec<_> = (0..2 * TASKS)
                .map(|i| {
                    let mutex = mutexes[i % 2].clone();
                    tokio::spawn(async move {
                        let taken = mutex.clone();
                        let guard = spawn_blocking(move || taken.lock_arc()).await??;
                        tokio::task::yield_now().await;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        if i % 4 < 2 {
                            spawn_blocking(move || guard.unlock()).await??;
                        } else {
                            spawn_blocking(move || drop(guard)).await?;
                        }
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                    })
                })
                .collect();
            let mut done = 0;
            for task in tasks {
                task.await.unwrap().unwrap();
                done += 1;
            }
            done
        })
    })
    .join(HANG);
    println!("{done} turns on two names in {:.2?}", started.elapsed());
    assert_eq!(done, 2 * TASKS);
}

/// The `tokio` feature: `lock_async`, `try_lock_for_async`, the semaphore's forms, and
/// `AsyncGuard`'s drop.
#[cfg(feature = "tokio")]
mod feature {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::support::signal;
    use redis_mutex::tokio::AsyncGuard;
    use redis_mutex::{RedisSemaphore, TryLockError};

    use super::*;

    /// An `AsyncGuard` dropped on a current-thread runtime, while the server is stopped,
    /// returns at once: its release waits on the blocking pool (a release on the runtime's
    /// thread would take the whole response timeout). Once the server resumes, the
    /// release lands and the task that waited meanwhile takes the lock.
    #[test]
    fn a_dropped_async_guard_releases_off_the_runtime_thread() {
        let server = RedisServer::start();
        let pool = server.pool_with(Pool::builder().response_timeout(Duration::from_secs(5)));
        let mutex = renewed_mutex(pool, "tokio:dropped");
        let (pid, mut conn) = (server.pid(), server.connection());
        let runtime = current_thread();
        spawn("current thread", move || {
            runtime.block_on(async move {
                let guard = mutex.lock_async().await.unwrap();
                let waiter = tokio::spawn(mutex.clone().lock_async());
                let waiting =
                    spawn_blocking(move || eventually(HANG, || blocked_clients(&mut conn) >= 1))
                        .await
                        .unwrap();
                assert!(waiting, "the waiter never waited in Redis");
                signal(pid, "STOP");
                let dropped = Instant::now();
                drop(guard);
                let dropping = dropped.elapsed();
                signal(pid, "CONT");
                assert!(
                    dropping < Duration::from_secs(1),
                    "dropping the guard took {dropping:?}: the release ran on the runtime's thread"
                );
                let taken = waiter.await.unwrap().unwrap();
                assert!(!taken.is_lost());
                taken.unlock().await.unwrap();
            })
        })
        .join(HANG);
    }

    /// Outside a runtime there is no blocking pool: the guard releases where it is dropped.
    #[test]
    fn an_async_guard_dropped_outside_a_runtime_releases_on_the_spot() {
        let server = RedisServer::start();
        let mutex = renewed_mutex(server.pool(), "tokio:outside");
        let guard = AsyncGuard::new(mutex.lock_arc().unwrap());
        assert!(guard.valid_for().is_some(), "derefs to the guard");
        drop(guard);
        assert!(!mutex.is_locked().unwrap(), "released by the drop");
    }

    #[test]
    fn try_forms_give_up_while_the_lock_is_held() {
        let server = RedisServer::start();
        let mutex = renewed_mutex(server.pool(), "tokio:held");
        let held = mutex.lock_arc().unwrap();
        let runtime = multi_thread(2);
        let waited = spawn("2 workers", move || {
            runtime.block_on(async move {
                assert!(matches!(
                    mutex.try_lock_async().await,
                    Err(TryLockError::WouldBlock)
                ));
                let started = Instant::now();
                assert!(matches!(
                    mutex.try_lock_for_async(Duration::from_millis(200)).await,
                    Err(TryLockError::WouldBlock)
                ));
                let waited = started.elapsed();
                drop(held);
                let guard = mutex
                    .try_lock_for_async(Duration::from_secs(5))
                    .await
                    .unwrap();
                guard.unlock().await.unwrap();
                waited
            })
        })
        .join(HANG);
        assert!(
            waited >= Duration::from_millis(200),
            "try_lock_for_async gave up after {waited:?}, before its 200 ms"
        );
    }

    /// Every thread of the blocking pool waits for the lock (two, on a pool of two): the
    /// holder's `unlock().await`, which ends those waits, must not queue behind them; nor
    /// must a permit's `release().await`.
    #[test]
    fn unlock_await_is_not_held_up_by_waits_that_fill_the_blocking_pool() {
        let server = RedisServer::start();
        let mutex = renewed_mutex(server.pool(), "tokio:full-pool");
        let semaphore = Arc::new(
            RedisSemaphore::builder(server.pool(), "tokio:full-pool")
                .permits(1)
                .expire(LEASE)
                .auto_renewal(true)
                .build()
                .unwrap(),
        );
        let runtime = Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let turns = spawn("a pool of 2 blocking threads", move || {
            runtime.block_on(async move {
                let waiting = Arc::new(AtomicUsize::new(0));
                // Both blocking threads wait: two for the mutex, then two for the permit.
                let fill = |take: Arc<dyn Fn() + Send + Sync>| {
                    (0..2)
                        .map(|_| {
                            let (take, waiting) = (take.clone(), waiting.clone());
                            spawn_blocking(move || {
                                waiting.fetch_add(1, Ordering::SeqCst);
                                take();
                            })
                        })
                        .collect::<Vec<_>>()
                };
                let held = mutex.lock_async().await.unwrap();
                let taken = mutex.clone();
                let waiters = fill(Arc::new(move || {
                    taken.lock_arc().unwrap().unlock().unwrap()
                }));
                // Counted on this worker: a probe on the blocking pool would find no thread.
                assert!(
                    eventually(HANG, || waiting.load(Ordering::SeqCst) >= 2),
                    "the waiters never started"
                );
                held.unlock().await.unwrap();
                for waiter in waiters {
                    waiter.await.unwrap();
                }
                let permit = semaphore.acquire_async().await.unwrap();
                let taken = semaphore.clone();
                let waiters = fill(Arc::new(move || {
                    taken.acquire_arc().unwrap().release().unwrap()
                }));
                assert!(
                    eventually(HANG, || waiting.load(Ordering::SeqCst) >= 4),
                    "the semaphore's waiters never started"
                );
                permit.release().await.unwrap();
                for waiter in waiters {
                    waiter.await.unwrap();
                }
                waiting.load(Ordering::SeqCst)
            })
        })
        .join(HANG);
        assert_eq!(turns, 4);
    }

    /// An `unlock().await` waits for its own release only: not behind a dropped guard's
    /// release to a server that does not answer, whose release the crate's release thread
    /// is sending.
    #[test]
    fn unlock_await_does_not_wait_behind_a_release_to_a_stalled_server() {
        const RT: Duration = Duration::from_secs(2);
        let stalled = RedisServer::start();
        let proxy = crate::support::proxy::FaultProxy::start(stalled.port());
        let healthy = RedisServer::start();
        let builder = || Pool::builder().response_timeout(RT);
        let on_stalled = renewed_mutex(proxy.pool_with(builder()), "tokio:stalled");
        let on_healthy = renewed_mutex(healthy.pool_with(builder()), "tokio:healthy");
        let runtime = multi_thread(2);
        let took = spawn("2 workers", move || {
            runtime.block_on(async move {
                let dropped = on_stalled.lock_async().await.unwrap();
                let unlocked = on_healthy.lock_async().await.unwrap();
                proxy.stall();
                drop(dropped);
                // The dropped guard's release is on its way, and waits for its reply.
                let sent = spawn_blocking(move || {
                    let sent = eventually(HANG, || proxy.held_chunks() >= 1);
                    (sent, proxy)
                });
                let (sent, proxy) = sent.await.unwrap();
                assert!(sent, "the dropped guard's release was never sent");
                let started = Instant::now();
                unlocked.unlock().await.unwrap();
                let took = started.elapsed();
                proxy.heal();
                took
            })
        })
        .join(HANG);
        println!("unlock().await on the healthy server took {took:?}");
        assert!(
            took < RT / 2,
            "unlock().await took {took:?}: it waited behind a release to a stalled server"
        );
    }

    /// 24 tasks on two workers share two permits, each awaiting with its permit; half
    /// release with `release().await`, half drop the permit.
    #[test]
    fn semaphore_permits_taken_async_by_more_tasks_than_workers() {
        const TASKS: usize = 24;
        let server = RedisServer::start();
        let semaphore = Arc::new(
            RedisSemaphore::builder(server.pool(), "tokio:permits")
                .permits(2)
                .expire(LEASE)
                .auto_renewal(true)
                .build()
                .unwrap(),
        );
        let runtime = multi_thread(2);
        let (inside, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (inside_, most_) = (inside.clone(), most.clone());
        let done = spawn("2 workers", move || {
            runtime.block_on(async move {
                let tasks: Vec<_> = (0..TASKS)
                    .map(|i| {
                        let (semaphore, inside, most) =
                            (semaphore.clone(), inside_.clone(), most_.clone());
                        tokio::spawn(async move {
                            let permit = semaphore.acquire_async().await.unwrap();
                            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            inside.fetch_sub(1, Ordering::SeqCst);
                            if i % 2 == 0 {
                                permit.release().await.unwrap();
                            } else {
                                drop(permit);
                            }
                        })
                    })
                    .collect();
                let mut done = 0;
                for task in tasks {
                    task.await.unwrap();
                    done += 1;
                }
                done
            })
        })
        .join(HANG);
        assert_eq!(done, TASKS);
        let most = most.load(Ordering::SeqCst);
        assert!(most <= 2, "{most} tasks held a permit at once, of 2");
        assert_eq!(inside.load(Ordering::SeqCst), 0);
    }
}
