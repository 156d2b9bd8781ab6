//! An auto-renewed lock outlives its 1 s expiry through 3 s of work, and learns of a reset.
//!
//! ```text
//! cargo run --example renewal
//! ```

#[path = "../tests/support/server.rs"]
#[allow(dead_code)] // each example uses a part
mod server;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use redis_mutex::{Pool, RedisMutex};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (url, _server) = server::example_server();
    let pool = Pool::new(&url)?;
    let (lost_tx, lost_rx) = mpsc::channel();
    let mutex = RedisMutex::builder(pool.clone(), "examples:renewal")
        .expire(Duration::from_secs(1))
        .auto_renewal(true)
        .on_lost(move |lost| {
            lost_tx.send(lost.clone()).ok();
        })
        .build()?;

    let guard = mutex.lock()?;
    for step in 1..=6 {
        guard.ensure_held()?; // no round trip while the lease is healthy
        println!(
            "step {step}: still ours, certainly for {:?} more",
            guard.valid_for().unwrap()
        );
        thread::sleep(Duration::from_millis(500)); // the work
    }

    println!("an operator resets the lock...");
    RedisMutex::new(pool, "examples:renewal")?.reset()?;
    let lost = lost_rx.recv_timeout(Duration::from_secs(5))?;
    println!(
        "on_lost: `{}` is no longer ours ({}); is_lost() = {}",
        lost.name,
        lost.reason,
        guard.is_lost()
    );
    match guard.ensure_held() {
        Err(e) => println!("ensure_held: {e}"),
        Ok(()) => unreachable!("a lost guard stays lost"),
    }
    Ok(())
}
