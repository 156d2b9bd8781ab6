//! A holder pauses past its lease; storage that checks fencing tokens refuses its late write.
//!
//! ```text
//! cargo run --example fencing
//! ```

#[path = "../tests/support/server.rs"]
#[allow(dead_code)] // each example uses a part
mod server;

use std::thread;
use std::time::Duration;

use redis::Script;
use redis_mutex::{Pool, RedisMutex};

/// The storage: a Redis hash standing in for a database that remembers the highest token
/// it has accepted and refuses anything older.
const FENCED_WRITE: &str = r"
local seen = tonumber(redis.call('HGET', KEYS[1], 'token') or '0')
if tonumber(ARGV[1]) <= seen then return 0 end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'value', ARGV[2])
return 1";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (url, _server) = server::example_server();
    let pool = Pool::new(&url)?;
    let mut storage = redis::Client::open(url)?.get_connection()?;
    let write = Script::new(FENCED_WRITE);

    let slow = RedisMutex::builder(pool.clone(), "examples:fencing")
        .expire(Duration::from_millis(200))
        .build()?;
    let fast = RedisMutex::new(pool, "examples:fencing")?;

    let paused = slow.lock()?;
    println!(
        "holder A has the lock with token {}",
        paused.fencing_token()
    );
    println!("holder A pauses for 500 ms (a GC pause, a swapped-out page...)");
    thread::sleep(Duration::from_millis(500));

    let next = fast.lock()?;
    println!(
        "A's lease ran out; holder B has the lock with token {}",
        next.fencing_token()
    );
    let accepted: i64 = write
        .key("examples:fencing:storage")
        .arg(next.fencing_token())
        .arg("B's data")
        .invoke(&mut storage)?;
    println!(
        "B writes with token {}: accepted = {}",
        next.fencing_token(),
        accepted == 1
    );

    println!(
        "A wakes up, still believing it holds the lock (is_lost() = {})",
        paused.is_lost()
    );
    let accepted: i64 = write
        .key("examples:fencing:storage")
        .arg(paused.fencing_token())
        .arg("A's stale data")
        .invoke(&mut storage)?;
    println!(
        "A writes with token {}: accepted = {}",
        paused.fencing_token(),
        accepted == 1
    );
    assert_eq!(accepted, 0, "the storage refused the stale write");
    Ok(())
}
