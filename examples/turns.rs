//! Three processes with two threads each take turns on one lock, and each turn is logged.
//!
//! ```text
//! cargo run --example turns                              # starts a throwaway redis-server
//! REDIS_URL=redis://127.0.0.1:6380/ cargo run --example turns
//! ```

#[path = "../tests/support/server.rs"]
#[allow(dead_code)] // each example uses a part
mod server;

use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use redis_mutex::{Pool, RedisMutex};

const PROCESSES: usize = 3;
const THREADS: usize = 2;
const TURNS: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(process) = std::env::args().nth(1) {
        return worker(&process, &std::env::var("REDIS_URL")?);
    }
    let (url, _server) = server::example_server();
    let started = Instant::now();
    let children = (0..PROCESSES)
        .map(|p| {
            Command::new(std::env::current_exe()?)
                .arg(format!("P{p}"))
                .env("REDIS_URL", &url)
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    for mut child in children {
        assert!(child.wait()?.success(), "a worker process failed");
    }
    println!(
        "{} turns of 50 ms, one at a time, in {:.2?}",
        PROCESSES * THREADS * TURNS,
        started.elapsed()
    );
    Ok(())
}

fn worker(process: &str, url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::new(url)?;
    let mutex = Arc::new(
        RedisMutex::builder(pool, "examples:turns")
            .expire(Duration::from_secs(10))
            .owner_id(format!("{process}/pid-{}", std::process::id()))
            .build()?,
    );
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let mutex = mutex.clone();
            let who = format!("{process}.T{t}");
            thread::spawn(move || -> redis_mutex::Result<()> {
                for turn in 1..=TURNS {
                    let guard = mutex.lock()?;
                    println!("{who} has the lock (turn {turn}/{TURNS})");
                    thread::sleep(Duration::from_millis(50)); // the work
                    println!("{who} lets go");
                    guard.unlock()?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker thread panicked")?;
    }
    Ok(())
}
