//! The `redis-mutex` command, run as built against a real server: each subcommand's output
//! and exit code.

#[allow(dead_code)] // this binary uses a part
mod support;

use std::process::{Command, Output};
use std::time::Duration;

use redis_mutex::{RedisElection, RedisMutex, RedisRwLock, RedisSemaphore};
use support::{HANG, RedisServer, run_bounded};

fn redis_mutex(server: &RedisServer, args: &[&str]) -> Output {
    run_bounded(
        Command::new(env!("CARGO_BIN_EXE_redis-mutex"))
            .env("REDIS_URL", server.url())
            .args(args),
        HANG,
    )
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn list_shows_who_holds_what() {
    let server = RedisServer::start();
    let mutex = RedisMutex::builder(server.pool(), "nightly-report")
        .owner_id("host-7/report")
        .expire(Duration::from_secs(60))
        .build()
        .unwrap();
    let guard = mutex.lock().unwrap();
    let tree = RedisRwLock::builder(server.pool(), "tenants/42")
        .owner_id("reader")
        .build()
        .unwrap();
    let reading = tree.read().unwrap();
    let out = redis_mutex(&server, &["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    println!("{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    let report = lines
        .iter()
        .find(|l| l.starts_with("nightly-report"))
        .expect("the mutex");
    assert!(
        report.contains("mutex") && report.contains("host-7/report"),
        "{report}"
    );
    assert!(
        report.contains(&guard.fencing_token().to_string()),
        "{report}"
    );
    let read = lines
        .iter()
        .find(|l| l.starts_with("tenants/42"))
        .expect("the read lease");
    assert!(read.contains("read") && read.contains("reader#"), "{read}");

    let out = redis_mutex(&server, &["list", "--json", "--match", "nightly*"]);
    assert!(out.status.success());
    let json = text(&out.stdout);
    assert_eq!(json.lines().count(), 1, "{json}");
    let lock: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(lock["name"], "nightly-report");
    assert_eq!(lock["kind"], "mutex");
    assert_eq!(lock["owner_id"], "host-7/report");
    assert_eq!(lock["fencing_token"], guard.fencing_token());
    assert!(lock["expires_in_ms"].as_u64().unwrap() > 50_000);
    drop((guard, reading));
}

#[test]
fn owner_says_who_holds_a_lock_and_exits_1_when_it_is_free() {
    let server = RedisServer::start();
    let out = redis_mutex(&server, &["owner", "deploy"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("free"));
    let mutex = RedisMutex::builder(server.pool(), "deploy")
        .owner_id("ci-3")
        .expire(Duration::from_secs(30))
        .build()
        .unwrap();
    let _guard = mutex.lock().unwrap();
    let out = redis_mutex(&server, &["owner", "deploy"]);
    assert_eq!(out.status.code(), Some(0));
    let said = text(&out.stdout);
    assert!(said.contains("ci-3") && said.contains("s more"), "{said}");
}

#[test]
fn resets_free_locks_and_reset_all_refuses_without_yes() {
    let server = RedisServer::start();
    let pool = server.pool();
    let stuck = RedisMutex::builder(pool.clone(), "migrations")
        .owner_id("dead-worker")
        .build()
        .unwrap();
    std::mem::forget(stuck.lock().unwrap());
    let other = RedisMutex::builder(pool.clone(), "other")
        .owner_id("alive")
        .build()
        .unwrap();
    let kept = other.lock().unwrap();

    let out = redis_mutex(&server, &["reset-owned-by", "dead-worker"]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("removed 1"),
        "{}",
        text(&out.stdout)
    );
    assert!(!stuck.is_locked().unwrap());
    assert!(
        kept.is_held().unwrap(),
        "reset-owned-by touched another owner's lock"
    );

    let out = redis_mutex(&server, &["reset", "other"]);
    assert!(out.status.success());
    assert!(!other.is_locked().unwrap());

    let tree = RedisRwLock::new(pool.clone(), "tenants/7").unwrap();
    std::mem::forget(tree.write().unwrap());
    let out = redis_mutex(&server, &["reset", "--rwlock", "tenants/7"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        RedisRwLock::new(pool.clone(), "tenants")
            .unwrap()
            .try_write()
            .is_ok()
    );

    let again = RedisMutex::new(pool, "again").unwrap();
    std::mem::forget(again.lock().unwrap());
    let out = redis_mutex(&server, &["reset-all"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--yes"), "{}", text(&out.stderr));
    assert!(again.is_locked().unwrap(), "reset-all ran without --yes");
    let out = redis_mutex(&server, &["reset-all", "--yes"]);
    assert!(out.status.success());
    assert!(!again.is_locked().unwrap());
}

#[test]
fn usage_errors_exit_with_2_and_every_subcommand_has_help_with_an_example() {
    let server = RedisServer::start();
    let out = redis_mutex(&server, &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    for sub in [
        "list",
        "owner",
        "reset",
        "reset-owned-by",
        "reset-all",
        "watch",
        "run",
    ] {
        let out = redis_mutex(&server, &[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help");
        let help = text(&out.stdout);
        assert!(
            help.contains("Example"),
            "{sub} --help has no example:\n{help}"
        );
    }
    let unreachable = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_redis-mutex")).args([
            "--url",
            &format!("redis://127.0.0.1:{}/", support::free_port()),
            "list",
        ]),
        HANG,
    );
    assert_eq!(unreachable.status.code(), Some(3));
    for args in [&["owner", ""][..], &["watch", ""], &["reset", ""]] {
        let out = redis_mutex(&server, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("invalid `name`"),
            "{}",
            text(&out.stderr)
        );
    }
    assert!(
        text(&unreachable.stderr).contains("cannot connect"),
        "{}",
        text(&unreachable.stderr)
    );
}

#[test]
fn watch_prints_a_line_each_time_the_lock_changes_hands() {
    let server = RedisServer::start();
    let mut child = Command::new(env!("CARGO_BIN_EXE_redis-mutex"))
        .env("REDIS_URL", server.url())
        .args(["watch", "hot", "--interval-ms", "20"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = support::Lines::new(child.stdout.take().unwrap());
    lines.expect("`hot` free", HANG);
    let first = RedisMutex::builder(server.pool(), "hot")
        .owner_id("first")
        .build()
        .unwrap();
    let guard = first.lock().unwrap();
    let held = lines.expect("`hot` held by ", HANG);
    assert!(held.starts_with("first (token"), "{held}");
    drop(guard);
    let freed = lines.expect("`hot` free", HANG);
    assert!(freed.contains("first let go after"), "{freed}");

    let second = RedisMutex::builder(server.pool(), "hot")
        .owner_id("second")
        .build()
        .unwrap();
    std::mem::forget(second.lock().unwrap());
    lines.expect("`hot` held by second", HANG);
    assert!(second.reset().unwrap());
    let freed = lines.expect("`hot` free", HANG);
    assert!(freed.contains("second was reset after"), "{freed}");

    let third = RedisMutex::builder(server.pool(), "hot")
        .owner_id("third")
        .expire(Duration::from_millis(300))
        .build()
        .unwrap();
    std::mem::forget(third.lock().unwrap());
    lines.expect("`hot` held by third", HANG);
    let freed = lines.expect("`hot` free", HANG);
    assert!(freed.contains("third expired after"), "{freed}");

    // What python-redis-lock's release or an operator's DEL leaves: no note.
    let _: () = redis::cmd("SET")
        .arg("lock:hot")
        .arg("python")
        .query(&mut server.connection())
        .unwrap();
    lines.expect("`hot` held by python", HANG);
    let _: () = redis::cmd("DEL")
        .arg("lock:hot")
        .query(&mut server.connection())
        .unwrap();
    let freed = lines.expect("`hot` free", HANG);
    assert!(freed.contains("python is gone"), "{freed}");
    child.kill().ok();
    child.wait().ok();
}

#[test]
fn owner_and_list_name_a_key_that_is_not_a_lock() {
    let server = RedisServer::start();
    let _: () = redis::cmd("LPUSH")
        .arg("lock:x")
        .arg("a")
        .query(&mut server.connection())
        .unwrap();
    let out = redis_mutex(&server, &["owner", "x"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("`lock:x`"),
        "{}",
        text(&out.stderr)
    );
    let out = redis_mutex(&server, &["list"]);
    assert!(out.status.success());
    let listed = text(&out.stdout);
    assert!(listed.contains("not a lock"), "{listed}");
    assert!(listed.contains("key `lock:x`"), "{listed}");
    let out = redis_mutex(&server, &["list", "--json"]);
    assert!(
        text(&out.stdout).contains("\"key\":\"lock:x\""),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn owner_says_how_a_free_lock_was_let_go() {
    let server = RedisServer::start();
    let mutex = RedisMutex::new(server.pool(), "deploy").unwrap();
    let guard = mutex.lock().unwrap();
    let token = guard.fencing_token();
    drop(guard);
    let out = redis_mutex(&server, &["owner", "deploy"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains(&format!(
            "released by its holder moments ago, token {token}"
        )),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn owner_reset_and_list_know_a_semaphore_and_its_permits_tokens() {
    let server = RedisServer::start();
    let exports = RedisSemaphore::builder(server.pool(), "exports")
        .permits(3)
        .owner_id("worker-1")
        .build()
        .unwrap();
    let two = exports.acquire_many(2).unwrap();
    let token = two.fencing_token();

    let out = redis_mutex(&server, &["owner", "exports"]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("semaphore 2/3 (x2)") && said.contains("worker-1#"),
        "{said}"
    );
    assert!(said.contains(&format!("token {token}")), "{said}");
    let out = redis_mutex(&server, &["owner", "exports", "--json"]);
    let json = text(&out.stdout);
    assert_eq!(json.lines().count(), 1, "{json}");
    let grant: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(grant["kind"], "semaphore");
    assert_eq!(grant["fencing_token"], token);
    assert_eq!(grant["permits"]["held"], 2);

    let out = redis_mutex(&server, &["list"]);
    let table = text(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("exports"))
        .unwrap_or_else(|| panic!("no row for the semaphore:\n{table}"));
    assert!(row.contains(&token.to_string()), "no token: {row}");
    let out = redis_mutex(&server, &["list", "--json", "--match", "exports"]);
    let listed: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(listed["fencing_token"], token);

    // `reset NAME` without a flag takes the permits back, and says it was a semaphore.
    let out = redis_mutex(&server, &["reset", "exports"]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        said.contains("semaphore `exports`") && said.contains("1 grant"),
        "{said}"
    );
    assert!(exports.holders().unwrap().is_empty());
    assert!(!two.is_held().unwrap());
    let out = redis_mutex(&server, &["owner", "exports"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("free"));
}

#[test]
fn owner_and_reset_know_a_read_write_lock_and_a_name_held_twice() {
    let server = RedisServer::start();
    let pool = server.pool();
    let tree = RedisRwLock::builder(pool.clone(), "tenants/9")
        .owner_id("writer")
        .build()
        .unwrap();
    std::mem::forget(tree.write().unwrap());
    let out = redis_mutex(&server, &["owner", "tenants/9"]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("(write) is held by writer#"),
        "the write lease is not named: {said}"
    );
    let out = redis_mutex(&server, &["reset", "tenants/9"]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(said.contains("read-write lock `tenants/9`"), "{said}");
    assert!(tree.try_write().is_ok(), "the write lease is still held");

    // A mutex and a semaphore of one name: `owner` shows both; `reset` frees the mutex,
    // which is what the name means without a flag, and leaves the semaphore.
    let mutex = RedisMutex::builder(pool.clone(), "shared")
        .owner_id("m")
        .build()
        .unwrap();
    std::mem::forget(mutex.lock().unwrap());
    let semaphore = RedisSemaphore::builder(pool, "shared")
        .permits(2)
        .owner_id("s")
        .build()
        .unwrap();
    let permit = semaphore.acquire().unwrap();
    let out = redis_mutex(&server, &["owner", "shared"]);
    let said = text(&out.stdout);
    assert_eq!(said.lines().count(), 2, "{said}");
    assert!(said.contains("is held by m ") && said.contains("(semaphore 1/2) is held by s#"));
    let out = redis_mutex(&server, &["reset", "shared"]);
    assert!(
        text(&out.stdout).contains("the lock was removed"),
        "{}",
        text(&out.stdout)
    );
    assert!(!mutex.is_locked().unwrap());
    assert!(permit.is_held().unwrap(), "reset took the semaphore too");
    let out = redis_mutex(&server, &["reset", "--semaphore", "shared"]);
    assert!(out.status.success());
    assert!(!permit.is_held().unwrap());
}

#[test]
fn leader_list_watch_and_reset_know_an_election() {
    let server = RedisServer::start();
    let out = redis_mutex(&server, &["leader", "scheduler"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("nobody leads"));

    let mut child = Command::new(env!("CARGO_BIN_EXE_redis-mutex"))
        .env("REDIS_URL", server.url())
        .args(["watch", "--election", "scheduler"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = support::Lines::new(child.stdout.take().unwrap());
    lines.expect("`scheduler`: nobody leads", HANG);

    let election = RedisElection::builder(server.pool(), "scheduler")
        .owner_id("host-7")
        .build()
        .unwrap();
    let leadership = election.campaign("10.0.0.7:8080").unwrap();
    let term = leadership.term().to_string();
    let seen = lines.expect("`scheduler`: host-7 leads", HANG);
    assert!(
        seen.contains(&term) && seen.contains("10.0.0.7:8080"),
        "{seen}"
    );

    let out = redis_mutex(&server, &["leader", "scheduler"]);
    assert!(out.status.success());
    let said = text(&out.stdout);
    assert!(
        said.contains("host-7 leads") && said.contains(&term),
        "{said}"
    );
    let out = redis_mutex(&server, &["leader", "scheduler", "--json"]);
    let json = text(&out.stdout);
    assert!(json.contains("\"value\":\"10.0.0.7:8080\""), "{json}");

    let out = redis_mutex(&server, &["list"]);
    let table = text(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("scheduler"))
        .unwrap_or_else(|| panic!("no election listed: {table}"));
    assert!(
        row.contains("election") && row.contains("host-7") && row.contains(&term),
        "{row}"
    );
    assert!(row.contains("10.0.0.7:8080"), "{row}");

    leadership.proclaim("10.0.0.7:9090").unwrap();
    lines.expect("10.0.0.7:9090", HANG);

    // A stuck leader: the operator forces a new election.
    std::mem::forget(leadership);
    let out = redis_mutex(&server, &["reset", "--election", "scheduler"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("reset election `scheduler`"));
    lines.expect("`scheduler`: nobody leads", HANG);
    assert_eq!(election.leader().unwrap(), None);
    let next = RedisElection::new(server.pool(), "scheduler")
        .unwrap()
        .try_campaign("10.0.0.8:8080")
        .map(|l| l.term())
        .unwrap();
    assert!(next > term.parse().unwrap());
    child.kill().ok();
    child.wait().ok();
}
