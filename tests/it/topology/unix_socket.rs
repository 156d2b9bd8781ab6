//! The ways to reach a server that `Pool::new` takes besides TCP: a Unix socket.

use std::time::{Duration, Instant};

use crate::support::RedisServer;
use redis_mutex::{Pool, RedisMutex};

#[test]
fn a_unix_socket_pool_locks_and_an_absent_socket_is_named() {
    let dir = std::env::temp_dir().join(format!("redis-mutex-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("redis.sock");
    let socket = socket.to_str().expect("a UTF-8 temp dir");
    let server = RedisServer::start_with(&["--unixsocket", socket, "--unixsocketperm", "700"]);

    let pool = Pool::new(&format!("unix://{socket}")).unwrap();
    let mutex = RedisMutex::builder(pool.clone(), "over-a-socket")
        .expire(Duration::from_secs(5))
        .build()
        .unwrap();
    let guard = mutex.lock().unwrap();
    // The same lock seen over TCP: one server.
    let over_tcp = RedisMutex::new(server.pool(), "over-a-socket").unwrap();
    assert_eq!(
        over_tcp.get_owner_id().unwrap().as_deref(),
        Some(mutex.owner_id())
    );
    guard.unlock().unwrap();
    assert!(!over_tcp.is_locked().unwrap());

    // A socket nobody listens on: refused at once, and the error names the path.
    let absent = dir.join("absent.sock");
    let absent = absent.to_str().unwrap();
    let started = Instant::now();
    let err = Pool::new(&format!("unix://{absent}")).unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    assert!(err.to_string().contains(absent), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1), "{err}");

    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}
