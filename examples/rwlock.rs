//! Shelf readers share a library; a writer of the library waits for them, later readers for it.
//!
//! ```text
//! cargo run --example rwlock                              # starts a throwaway redis-server
//! REDIS_URL=redis://127.0.0.1:6380/ cargo run --example rwlock
//! ```

#[path = "../tests/support/server.rs"]
#[allow(dead_code)] // each example uses a part
mod server;

use std::thread;
use std::time::{Duration, Instant};

use redis_mutex::{Pool, RedisRwLock};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (url, _server) = server::example_server();
    let pool = Pool::new(&url)?;
    let started = Instant::now();
    let log = |who: &str, what: &str| {
        println!("{:>5} ms  {who:<18} {what}", started.elapsed().as_millis())
    };

    // Each actor has its own lock object, as separate processes would.
    let lock = |path: &str| {
        RedisRwLock::builder(pool.clone(), path)
            .expire(Duration::from_secs(10))
            .build()
    };
    thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
        let mut actors = Vec::new();
        for (who, path, delay, hold, write) in [
            ("reader of books", "library/books", 0, 300, false),
            ("reader of maps", "library/maps", 50, 300, false),
            ("writer of library", "library", 100, 200, true),
            ("late reader", "library/books", 150, 100, false),
        ] {
            let lock = lock(path)?;
            actors.push(s.spawn(move || -> redis_mutex::Result<()> {
                thread::sleep(Duration::from_millis(delay));
                log(
                    who,
                    &format!("wants to {} {path}", if write { "write" } else { "read" }),
                );
                if write {
                    let guard = lock.write()?;
                    log(
                        who,
                        &format!("writes (fencing token {})", guard.fencing_token()),
                    );
                    thread::sleep(Duration::from_millis(hold));
                    log(who, "is done");
                } else {
                    let _guard = lock.read()?;
                    log(who, "reads");
                    thread::sleep(Duration::from_millis(hold));
                    log(who, "is done");
                }
                Ok(())
            }));
        }
        for actor in actors {
            actor.join().expect("actor panicked")?;
        }
        Ok(())
    })?;
    println!("the writer waited for both readers; the late reader waited for the writer");
    Ok(())
}
