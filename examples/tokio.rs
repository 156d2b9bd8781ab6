//! Thirty-two tokio tasks on a runtime of two worker threads take turns on one lock, each
//! holding it across an `.await`, and none waits on a runtime thread: the pattern of "From
//! async code" in the crate docs (`spawn_blocking` and `lock_arc`, released in there), and
//! with the `tokio` feature the same through `lock_async`.
//!
//! ```text
//! cargo run --example tokio                      # starts a throwaway redis-server
//! cargo run --example tokio --features tokio     # lock_async as well
//! REDIS_URL=redis://127.0.0.1:6380/ cargo run --example tokio
//! ```

#[path = "../tests/support/server.rs"]
#[allow(dead_code)] // each example uses a part
mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis_mutex::{Pool, RedisMutex};
use tokio::task::spawn_blocking;

/// What the tasks and their errors are.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

const WORKERS: usize = 2;
const TASKS: usize = 32;

fn main() -> Result<(), BoxError> {
    let (url, _server) = server::example_server();
    // Made before the runtime: Pool::new connects once, and blocks while it does.
    let pool = Pool::new(&url)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()?;
    for &way in Way::ALL {
        let run = runtime.block_on(turns(pool.clone(), TASKS, way))?;
        println!(
            "{TASKS} tasks on {WORKERS} worker threads, {}: {} turns, at most {} at once, in {:.2?}",
            way.describe(),
            run.turns,
            run.most_at_once,
            run.took
        );
    }
    Ok(())
}

/// How the tasks take the lock.
#[derive(Clone, Copy, Debug)]
pub enum Way {
    /// `lock_arc` in `spawn_blocking`, and `unlock` in another: no feature needed.
    SpawnBlocking,
    /// `lock_async`, and `unlock().await` (the `tokio` feature).
    #[cfg(feature = "tokio")]
    LockAsync,
}

impl Way {
    /// Every way this build has.
    pub const ALL: &[Way] = &[
        Way::SpawnBlocking,
        #[cfg(feature = "tokio")]
        Way::LockAsync,
    ];

    fn describe(self) -> &'static str {
        match self {
            Way::SpawnBlocking => "spawn_blocking + lock_arc",
            #[cfg(feature = "tokio")]
            Way::LockAsync => "lock_async",
        }
    }
}

/// What a run of turns saw.
#[derive(Debug)]
pub struct Turns {
    /// How many turns were taken.
    pub turns: usize,
    /// The most tasks that were ever inside the lock at once: 1, or the lock failed.
    pub most_at_once: usize,
    /// From the first task's start to the last one's end.
    pub took: Duration,
}

/// `tasks` tasks, spawned on the runtime this runs in, take one turn each on one lock and
/// await inside it. `tests/tokio.rs` runs it too.
pub async fn turns(pool: Pool, tasks: usize, way: Way) -> Result<Turns, BoxError> {
    let mutex = Arc::new(
        RedisMutex::builder(pool, "examples:tokio")
            .expire(Duration::from_secs(10))
            .auto_renewal(true)
            .build()?,
    );
    let inside = Arc::new(AtomicUsize::new(0));
    let most_at_once = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (mutex, inside, most) = (mutex.clone(), inside.clone(), most_at_once.clone());
            tokio::spawn(async move {
                match way {
                    Way::SpawnBlocking => {
                        // The wait runs on the blocking pool; the guard is owned (`'static`).
                        let waiting = mutex.clone();
                        let guard = spawn_blocking(move || waiting.lock_arc()).await??;
                        work(&inside, &most).await;
                        // So does the release: unlock (or drop) it in there.
                        spawn_blocking(move || guard.unlock()).await??;
                    }
                    #[cfg(feature = "tokio")]
                    Way::LockAsync => {
                        let guard = mutex.lock_async().await?;
                        work(&inside, &most).await;
                        guard.unlock().await?; // or drop it: it releases on the blocking pool
                    }
                }
                Ok::<(), BoxError>(())
            })
        })
        .collect();
    let mut turns = 0;
    for handle in handles {
        handle.await??;
        turns += 1;
    }
    Ok(Turns {
        turns,
        most_at_once: most_at_once.load(Ordering::SeqCst),
        took: started.elapsed(),
    })
}

/// The work under the lock: it awaits, so other tasks run on the worker meanwhile.
async fn work(inside: &AtomicUsize, most: &AtomicUsize) {
    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
    most.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2)).await;
    inside.fetch_sub(1, Ordering::SeqCst);
}
