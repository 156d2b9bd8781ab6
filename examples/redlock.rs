//! A Redlock over five Redis servers: lock, contention, extend, auto-extension, servers down.
//!
//! ```text
//! cargo run --example redlock                     # starts five throwaway redis-servers
//! REDIS_URLS=redis://a/,redis://b/,redis://c/ cargo run --example redlock
//! ```

#[path = "../tests/support/server.rs"]
#[allow(dead_code)] // each example uses a part
mod server;

use std::thread;
use std::time::Duration;

use redis_mutex::{Pool, Redlock};
use server::RedisServer;

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> BoxResult<()> {
    // Your servers, or five private ones that are gone when the example ends.
    let (urls, mut servers) = match std::env::var("REDIS_URLS") {
        Ok(urls) => (urls.split(',').map(str::to_owned).collect(), Vec::new()),
        Err(_) => {
            let servers: Vec<RedisServer> = (0..5).map(|_| RedisServer::start()).collect();
            let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
            eprintln!("REDIS_URLS is not set: started throwaway servers at {urls:?}");
            (urls, servers)
        }
    };
    let pools = urls
        .iter()
        .map(|url| Pool::new(url))
        .collect::<redis_mutex::Result<Vec<Pool>>>()?;

    let redlock = Redlock::builder(pools.clone())
        .retry_count(3)
        .retry_delay(Duration::from_millis(100))
        .build()?;
    let rival = Redlock::new(pools.clone())?;
    let ttl = Duration::from_secs(10);

    let guard = redlock.lock("example:report", ttl)?;
    println!(
        "locked `{}` with token {}, valid for {:?}",
        guard.resource(),
        guard.owner_id(),
        guard.valid_for().unwrap()
    );
    println!(
        "held on a majority: {}",
        redlock.is_locked("example:report")?
    );

    match rival.try_lock("example:report", ttl) {
        Ok(_) => println!("the rival got it too (this should never print)"),
        Err(e) => println!("the rival is refused: {e}"),
    }

    guard.extend(Duration::from_secs(30))?;
    println!("extended: valid for {:?}", guard.valid_for().unwrap());
    guard.unlock()?;
    println!(
        "unlocked; the rival now gets it: {}",
        rival.try_lock("example:report", ttl).is_ok()
    );

    // Auto-extension: a lock with a 1 s ttl outlives three seconds of work.
    let extending = Redlock::builder(pools)
        .auto_extend(true)
        .on_lost(|lost| {
            eprintln!(
                "lost `{}` ({}): stop the work it protects",
                lost.name, lost.reason
            )
        })
        .build()?;
    let guard = extending.lock("example:long-job", Duration::from_secs(1))?;
    for step in 1..=3 {
        thread::sleep(Duration::from_secs(1)); // one step of the work
        guard.ensure_held()?;
        println!(
            "step {step}: still held after {step} s, valid for {:?}",
            guard.valid_for().unwrap()
        );
    }
    guard.unlock()?;

    // Only with throwaway servers: stop some and see what still works.
    if servers.len() == 5 {
        servers[0].kill();
        servers[1].kill();
        let guard = redlock.lock("example:report", ttl)?;
        println!(
            "two of five servers down: still locked, valid for {:?}",
            guard.valid_for().unwrap()
        );
        drop(guard);
        servers[2].kill();
        match redlock.lock("example:report", ttl) {
            Ok(_) => println!("three of five down and still locked (this should never print)"),
            Err(e) => println!("three of five servers down: {e}"),
        }
    }
    Ok(())
}
