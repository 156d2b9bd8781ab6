//! Operator tools that act on every lock of the protocol at once.

use crate::conn;
use crate::lease::millis;
use crate::mutex::unexpected_reply;
use crate::options::{DEFAULT_RESPONSE_TIMEOUT, DEFAULT_SIGNAL_EXPIRE};
use crate::scripts::RESET;
use crate::{Pool, Result};

/// How many keys one `SCAN` step asks for, and so how many locks one reset call deletes:
/// small enough that neither keeps Redis busy for more than a millisecond or two.
const SCAN_COUNT: usize = 500;

const LOCK_PREFIX: &[u8] = b"lock:";
const SIGNAL_PREFIX: &[u8] = b"lock-signal:";

/// Deletes every lock of the protocol (every string key `lock:*`) in the pool's database,
/// wakes one waiter of each, and returns how many locks it deleted. Meant for start-up,
/// when no process of the fleet can hold a lock yet: a holder is not told.
///
/// Walks the keyspace with `SCAN` (never `KEYS`), deleting each step's locks with one
/// script call, so Redis is never busy for more than a millisecond or two at a time. Keys
/// outside the protocol stay, including `lock:*` keys that are not strings. Locks taken
/// while it runs may or may not be deleted.
///
/// # Errors
///
/// [`Error::Redis`](crate::Error::Redis) or [`Error::Pool`](crate::Error::Pool) when Redis
/// cannot be reached; locks deleted before the failure stay deleted.
///
/// # Examples
///
/// ```no_run
/// use redis_mutex::{reset_all, Pool};
///
/// let pool = Pool::builder().build(redis::Client::open("redis://127.0.0.1/")?)?;
/// let removed = reset_all(&pool)?;
/// println!("removed {removed} stale locks");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn reset_all(pool: &Pool) -> Result<usize> {
    let mut conn = conn::checkout(pool, pool.connection_timeout(), DEFAULT_RESPONSE_TIMEOUT)?;
    let signal_ms = millis(DEFAULT_SIGNAL_EXPIRE);
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("lock:*")
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query(&mut *conn)?;
        if !keys.is_empty() {
            let mut reset = RESET.arg(signal_ms);
            for key in &keys {
                let mut signal = SIGNAL_PREFIX.to_vec();
                signal.extend_from_slice(&key[LOCK_PREFIX.len()..]);
                reset.key(key).key(signal);
            }
            let results: Vec<i64> = reset.invoke(&mut *conn)?;
            if results.len() != keys.len() {
                return Err(unexpected_reply("reset"));
            }
            deleted += results.iter().filter(|&&r| r == 1).count();
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    log::debug!("reset_all deleted {deleted} lock(s)");
    Ok(deleted)
}
