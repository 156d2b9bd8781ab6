//! An auto-renewed lock outlives its 1 s expiry through 3 s of work, then is reset behind
//! its back, and the guard finds out.
//!
//! ```text
//! cargo run --example renewal
//! ```

#[path = "../tests/support/server.rs"]
mod server;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use redis_mutex::{Pool, RedisMutex};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (url, _server) = server::example_server();
    let pool = Pool::builder()
        .test_on_check_out(false)
        .build(redis::Client::open(url)?)?;
    let (lost_tx, lost_rx) = mpsc::channel();
    let lost_tx = std::sync::Mutex::new(lost_tx);
    let mutex = RedisMutex::builder(pool.clone(), "examples:renewal")
        .expire(Duration::from_secs(1))
        .auto_renewal(true)
        .on_lost(move |name| {
            lost_tx.lock().unwrap().send(name.to_string()).ok();
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
    RedisMutex::new(pool, "examples:renewal").reset()?;
    let name = lost_rx.recv_timeout(Duration::from_secs(5))?;
    println!(
        "on_lost: `{name}` is no longer ours; is_lost() = {}",
        guard.is_lost()
    );
    match guard.ensure_held() {
        Err(e) => println!("ensure_held: {e}"),
        Ok(()) => unreachable!("a lost guard stays lost"),
    }
    Ok(())
}
