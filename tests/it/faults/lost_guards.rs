//! Dropping a lost guard on a stopped server keeps its bound, whatever else the renewal
//! service is doing: a guard is one call within one response timeout (docs/reliability.md,
//! "The bound of a call"). A guard with an 800 ms auto-renewed lease on a server that is
//! then stopped (SIGSTOP) is found lost by its lease clock; dropping it sends its release,
//! which must give up after one response timeout (302 ms alone), also when another
//! auto-renewed guard (60 s lease) lives beside it, on a second pool to the same server
//! (4.02 s before the fix) or on the same pool.

use std::time::{Duration, Instant};

use crate::support::{RedisServer, eventually};
use redis_mutex::{Pool, RedisMutex};

/// The pools' response timeout: the bound of a guard's release.
const RT: Duration = Duration::from_millis(300);

/// Scheduling slack on a loaded 2-core machine: the drop must return within 700 ms, less
/// than a fifth of the 4.02 s it took before the fix and far below the 1 s connect timeout
/// plus a response timeout.
const SLACK: Duration = Duration::from_millis(400);

/// The pools of the issue: four connections, a connect timeout (and a checkout wait) of
/// 1 s, a 300 ms response timeout.
fn pool(server: &RedisServer) -> Pool {
    server.pool_with(
        Pool::builder()
            .max_size(4)
            .connect_timeout(Duration::from_secs(1))
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(RT),
    )
}

fn renewed(pool: Pool, name: &str, lease: Duration) -> RedisMutex {
    RedisMutex::builder(pool, name)
        .expire(lease)
        .auto_renewal(true)
        .build()
        .unwrap()
}

/// Where the other guard lives, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Beside {
    Nothing,
    SecondPool,
    SamePool,
}

/// Takes an 800 ms auto-renewed guard (and, per `beside`, a 60 s one), stops the server,
/// waits until the short guard is found lost, and times dropping it.
fn drop_a_lost_guard(beside: Beside) {
    let mut server = RedisServer::start();
    let pool_a = pool(&server);
    let short = renewed(pool_a.clone(), "lost-short", Duration::from_millis(800));
    let long = match beside {
        Beside::Nothing => None,
        Beside::SecondPool => Some(renewed(pool(&server), "beside", Duration::from_secs(60))),
        Beside::SamePool => Some(renewed(pool_a, "beside", Duration::from_secs(60))),
    };
    let long_guard = long.as_ref().map(|m| m.lock().unwrap());
    let guard = short.lock().unwrap();
    server.pause();
    let stopped = Instant::now();
    // The lease clock runs out about 800 ms after the last confirmed renewal.
    assert!(
        eventually(Duration::from_secs(5), || guard.is_lost()),
        "{beside:?}: the 800 ms guard on the stopped server was never found lost"
    );
    let lost_after = stopped.elapsed();
    let dropped = Instant::now();
    drop(guard);
    let took = dropped.elapsed();
    println!("{beside:?}: found lost {lost_after:?} after the stop; dropping it took {took:?}");
    server.resume();
    drop(long_guard);
    assert!(
        took < RT + SLACK,
        "{beside:?}: dropping the lost guard on the stopped server took {took:?}, past one \
         {RT:?} response timeout and {SLACK:?} of slack"
    );
}

/// Alone: dropping the lost guard takes about one response timeout.
#[test]
fn dropping_a_lost_guard_alone_on_a_stopped_server_takes_one_response_timeout() {
    drop_a_lost_guard(Beside::Nothing);
}

/// With another auto-renewed guard (60 s lease) on a second pool to the same stopped
/// server, dropping the lost guard still takes about one response timeout.
#[test]
fn dropping_a_lost_guard_beside_a_guard_of_another_pool_takes_one_response_timeout() {
    drop_a_lost_guard(Beside::SecondPool);
}

/// The same with the other guard on the lost guard's own pool.
#[test]
fn dropping_a_lost_guard_beside_a_guard_of_its_pool_takes_one_response_timeout() {
    drop_a_lost_guard(Beside::SamePool);
}
