//! A scheduler takes a job's lock and hands it to the worker process that runs the job: the
//! worker resumes the lock from its handle, holds it with auto-renewal through several
//! expiries, and releases it; meanwhile nobody else can take it.
//!
//! ```text
//! cargo run --example handoff
//! ```

#[path = "../tests/support/server.rs"]
#[allow(dead_code)] // each example uses a part
mod server;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use redis_mutex::{LockHandle, Pool, RedisMutex};

/// The job lock's lease: the worker holds it three times as long, renewed all along.
const LEASE: Duration = Duration::from_secs(1);

fn job_lock(url: &str, name: &str) -> redis_mutex::Result<RedisMutex> {
    RedisMutex::builder(Pool::new(url)?, name)
        .expire(LEASE)
        .auto_renewal(true)
        .build()
}

/// The worker: resumes the lock named by the handle it was given, runs the job, releases.
fn worker(url: &str, handle: &str) -> Result<(), Box<dyn std::error::Error>> {
    let handle: LockHandle = handle.parse()?;
    let lock = job_lock(url, handle.name())?;
    let guard = lock.resume(&handle)?;
    println!(
        "  worker {}: resumed `{}` (token {} became {}), running the job for 3 s",
        std::process::id(),
        handle.name(),
        handle.fencing_token().unwrap_or_default(),
        guard.fencing_token()
    );
    let started = Instant::now();
    while started.elapsed() < LEASE * 3 {
        thread::sleep(LEASE / 2); // a step of the job
        guard.ensure_held()?; // stop if the lock was lost
    }
    guard.unlock()?;
    println!("  worker: done, lock released");
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, url, handle] = &args[..]
        && role == "worker"
    {
        return worker(url, handle);
    }
    let (url, _server) = server::example_server();
    let lock = job_lock(&url, "jobs:nightly-report")?;
    let handle = lock.lock()?.into_handle();
    println!(
        "scheduler: locked `{}`; handing it over as\n  {handle}",
        handle.name()
    );
    let mut child = Command::new(std::env::current_exe()?)
        .args(["worker", &url, &handle.to_string()])
        .spawn()?;

    // Someone else tries while the worker holds it.
    let other = job_lock(&url, "jobs:nightly-report")?;
    thread::sleep(LEASE * 2);
    println!(
        "scheduler: another process tries the lock 2 s (two leases) later: {}",
        match other.try_lock() {
            Ok(_) => "got it (wrong!)",
            Err(_) => "held, as it should be",
        }
    );
    // And the handle cannot be used twice.
    match job_lock(&url, "jobs:nightly-report")?.resume(&handle) {
        Ok(_) => println!("scheduler: resumed the handle again (wrong!)"),
        Err(e) => println!("scheduler: resuming the handle again: {e}"),
    }
    let status = child.wait()?;
    let guard = other.lock()?;
    println!(
        "scheduler: the worker exited ({status}); the lock is free again: token {}",
        guard.fencing_token()
    );
    Ok(())
}
