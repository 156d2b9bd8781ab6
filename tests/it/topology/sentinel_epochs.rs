//! Review experiment: during RECONF_SLAVES the leading sentinel's SENTINEL MASTER names the
//! OLD address with the NEW config-epoch; the pool's `told` treats that as a confirmation.

use std::thread;
use std::time::{Duration, Instant};

use crate::support::sentinel::{SERVICE, Sentinels};
use crate::support::{HANG, RedisServer, eventually, info_field};
use redis_mutex::{Pool, RedisMutex};

fn master_fields(url: &str) -> (u16, u64) {
    let mut c = crate::support::connect(url);
    let v: Vec<String> = redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg(SERVICE)
        .query(&mut c)
        .unwrap();
    let f = |k: &str| {
        v.chunks(2)
            .find(|kv| kv[0] == k)
            .map(|kv| kv[1].clone())
            .unwrap()
    };
    (
        f("port").parse().unwrap(),
        f("config-epoch").parse().unwrap(),
    )
}

#[test]
fn leader_reports_old_address_with_new_epoch() {
    // R1 (the replica that will be promoted) refuses PSYNC/SYNC: a second replica can never
    // sync from it, so the leader stays in RECONF_SLAVES until failover-timeout.
    let set = Sentinels::start_with_replica_args(&[
        "--rename-command",
        "PSYNC",
        "",
        "--rename-command",
        "SYNC",
        "",
    ]);
    let p = set.servers[0].port();
    let r1 = set.servers[1].port();
    let ps = p.to_string();
    let r2 = RedisServer::start_with(&["--replicaof", "127.0.0.1", &ps, "--replica-priority", "0"]);
    let mut c2 = r2.connection();
    assert!(eventually(HANG, || info_field(
        &mut c2,
        "replication",
        "master_link_status"
    )
    .as_deref()
        == Some("up")));
    for k in 0..3 {
        let mut c = crate::support::connect(&set.sentinel_url(k));
        assert!(eventually(HANG, || {
            let reps: Vec<redis::Value> = redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg(SERVICE)
                .query(&mut c)
                .unwrap_or_default();
            reps.len() == 2
        }));
        let _: () = redis::cmd("SENTINEL")
            .arg("SET")
            .arg(SERVICE)
            .arg("failover-timeout")
            .arg("30000")
            .query(&mut c)
            .unwrap();
    }
    let (_, epoch0) = master_fields(&set.sentinel_url(0));
    eprintln!("P={p} R1={r1} R2={} epoch0={epoch0}", r2.port());
    let mut c = crate::support::connect(&set.sentinel_url(0));
    let asked = eventually(HANG, || {
        redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(SERVICE)
            .query::<()>(&mut c)
            .is_ok()
    });
    assert!(asked);
    let started = Instant::now();
    // Wait until the leader has the new epoch and the others name R1.
    assert!(eventually(HANG, || master_fields(&set.sentinel_url(0)).1 > epoch0));
    assert!(eventually(HANG, || (1..3).all(|k| set.primary_port_by(k) == Some(r1))));
    for k in 0..3 {
        eprintln!(
            "{:?} sentinel {k}: SENTINEL MASTER (port, epoch) = {:?}, GET-MASTER-ADDR = {:?}",
            started.elapsed(),
            master_fields(&set.sentinel_url(k)),
            set.primary_port_by(k)
        );
    }
    let mut pc = set.servers[0].connection();
    eprintln!(
        "old primary role: {:?}",
        info_field(&mut pc, "replication", "role")
    );
    // Fresh pools built now: where do their grants go?
    let (mut on_p, mut on_r1, mut failed) = (0, 0, 0);
    for i in 0..12 {
        let pool: Pool = set.pool_with(Pool::builder().connect_lazy(true));
        thread::sleep(Duration::from_millis(300));
        let name = format!("tie-{i}");
        let m = RedisMutex::builder(pool, &name)
            .expire(Duration::from_secs(60))
            .build()
            .unwrap();
        match m.try_lock() {
            Ok(g) => {
                std::mem::forget(g);
            }
            Err(e) => {
                failed += 1;
                eprintln!("try_lock failed: {e}");
                continue;
            }
        }
        let key = format!("lock:{name}");
        let mut rc = set.servers[1].connection();
        let on_old: Option<String> = redis::cmd("GET").arg(&key).query(&mut pc).unwrap();
        let on_new: Option<String> = redis::cmd("GET").arg(&key).query(&mut rc).unwrap();
        if on_old.is_some() {
            on_p += 1
        }
        if on_new.is_some() {
            on_r1 += 1
        }
    }
    eprintln!(
        "{:?}: grants on old primary {on_p}, on new primary {on_r1}, failed {failed}",
        started.elapsed()
    );
    for k in 0..3 {
        eprintln!(
            "sentinel {k}: SENTINEL MASTER = {:?}",
            master_fields(&set.sentinel_url(k))
        );
    }
    assert_eq!(
        on_p, 0,
        "grants made on the old primary while the sentinels' new primary is R1"
    );
}

#[test]
fn existing_pool_flaps_back_after_a_doubt() {
    let set = Sentinels::start_with_replica_args(&[
        "--rename-command",
        "PSYNC",
        "",
        "--rename-command",
        "SYNC",
        "",
    ]);
    let p = set.servers[0].port();
    let r1 = set.servers[1].port();
    let ps = p.to_string();
    let r2 = RedisServer::start_with(&["--replicaof", "127.0.0.1", &ps, "--replica-priority", "0"]);
    let mut c2 = r2.connection();
    assert!(eventually(HANG, || info_field(
        &mut c2,
        "replication",
        "master_link_status"
    )
    .as_deref()
        == Some("up")));
    for k in 0..3 {
        let mut c = crate::support::connect(&set.sentinel_url(k));
        assert!(eventually(HANG, || {
            let reps: Vec<redis::Value> = redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg(SERVICE)
                .query(&mut c)
                .unwrap_or_default();
            reps.len() == 2
        }));
        let _: () = redis::cmd("SENTINEL")
            .arg("SET")
            .arg(SERVICE)
            .arg("failover-timeout")
            .arg("30000")
            .query(&mut c)
            .unwrap();
    }
    let pool: Pool = set.pool_with(Pool::builder().response_timeout(Duration::from_millis(100)));
    thread::sleep(Duration::from_millis(500));
    let (_, epoch0) = master_fields(&set.sentinel_url(0));
    let mut c = crate::support::connect(&set.sentinel_url(0));
    assert!(eventually(HANG, || redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg(SERVICE)
        .query::<()>(&mut c)
        .is_ok()));
    assert!(eventually(HANG, || master_fields(&set.sentinel_url(0)).1 > epoch0));
    assert!(eventually(HANG, || (1..3).all(|k| set.primary_port_by(k) == Some(r1))));
    thread::sleep(Duration::from_millis(1500));
    let mut where_ = Vec::new();
    for i in 0..12 {
        // A timeout on the pool (the new primary pauses briefly): the listeners are asked again.
        let mut rc = set.servers[1].connection();
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(300)
            .arg("ALL")
            .query(&mut rc)
            .unwrap();
        let m = RedisMutex::builder(pool.clone(), format!("doubt-{i}"))
            .build()
            .unwrap();
        let _ = m.try_lock().map(std::mem::forget);
        thread::sleep(Duration::from_millis(1200));
        let name = format!("after-{i}");
        let m = RedisMutex::builder(pool.clone(), &name)
            .expire(Duration::from_secs(60))
            .build()
            .unwrap();
        let r = m.try_lock().map(std::mem::forget);
        let key = format!("lock:{name}");
        let mut pc = set.servers[0].connection();
        let mut rc = set.servers[1].connection();
        let on_old: Option<String> = redis::cmd("GET").arg(&key).query(&mut pc).unwrap();
        let on_new: Option<String> = redis::cmd("GET").arg(&key).query(&mut rc).unwrap();
        eprintln!(
            "{i}: P role {:?}; S0 {:?}",
            info_field(&mut pc, "replication", "role"),
            master_fields(&set.sentinel_url(0))
        );
        where_.push(match (r.is_ok(), on_old.is_some(), on_new.is_some()) {
            (false, _, _) => "err",
            (_, true, _) => "OLD",
            (_, _, true) => "new",
            _ => "?",
        });
    }
    eprintln!("grants after each doubt: {where_:?}");
    assert!(!where_.contains(&"OLD"));
}

#[test]
fn fresh_sentinels_lower_epochs_strand_the_pool() {
    let mut set = Sentinels::start();
    let pool: Pool = set.pool_with(Pool::builder().response_timeout(Duration::from_millis(300)));
    let try_new = |pool: &Pool, name: &str| {
        RedisMutex::builder(pool.clone(), name)
            .expire(Duration::from_secs(60))
            .build()
            .unwrap()
            .try_lock()
            .map(std::mem::forget)
    };
    assert!(try_new(&pool, "a").is_ok());
    set.failover_led_by(0);
    set.failover_led_by(1);
    let primary = set.servers[set.primary_index()].port();
    eprintln!("epoch now {:?}", master_fields(&set.sentinel_url(0)));
    thread::sleep(Duration::from_secs(2));
    let b = try_new(&pool, "b");
    eprintln!(
        "after two failovers: {:?}",
        b.as_ref().err().map(|e| e.to_string())
    );
    if b.is_err() {
        thread::sleep(Duration::from_secs(3));
        eprintln!(
            "again: {:?}",
            try_new(&pool, "b2").err().map(|e| e.to_string())
        );
    }
    // Sentinels redeployed without their saved state (epochs start at 0 again).
    set.restart_fresh(primary);
    eprintln!("fresh sentinels: {:?}", master_fields(&set.sentinel_url(0)));
    thread::sleep(Duration::from_secs(3));
    let new = set.failover_led_by(0);
    eprintln!(
        "after failover by fresh sentinels: {:?}; new primary port {}",
        master_fields(&set.sentinel_url(0)),
        set.servers[new].port()
    );
    let mut ok = 0;
    let mut errs = Vec::new();
    for i in 0..20 {
        thread::sleep(Duration::from_millis(500));
        match try_new(&pool, &format!("c{i}")) {
            Ok(()) => ok += 1,
            Err(e) => errs.push(e.to_string()),
        }
    }
    let fresh = set.pool();
    eprintln!(
        "old pool: {ok}/20 ok over 10 s; last error {:?}; fresh pool: {:?}",
        errs.last(),
        try_new(&fresh, "d").is_ok()
    );
    assert!(ok > 0, "the pool never recovered");
}

#[test]
fn window_with_two_healthy_replicas() {
    let set = Sentinels::start();
    let p = set.servers[0].port();
    let ps = p.to_string();
    let r2 = RedisServer::start_with(&["--replicaof", "127.0.0.1", &ps, "--replica-priority", "0"]);
    let mut c2 = r2.connection();
    assert!(eventually(HANG, || info_field(
        &mut c2,
        "replication",
        "master_link_status"
    )
    .as_deref()
        == Some("up")));
    for k in 0..3 {
        let mut c = crate::support::connect(&set.sentinel_url(k));
        assert!(eventually(HANG, || {
            let reps: Vec<redis::Value> = redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg(SERVICE)
                .query(&mut c)
                .unwrap_or_default();
            reps.len() == 2
        }));
        let _: () = redis::cmd("SENTINEL")
            .arg("SET")
            .arg(SERVICE)
            .arg("failover-timeout")
            .arg("20000")
            .query(&mut c)
            .unwrap();
    }
    let (_, epoch0) = master_fields(&set.sentinel_url(0));
    let mut c = crate::support::connect(&set.sentinel_url(0));
    assert!(eventually(HANG, || redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg(SERVICE)
        .query::<()>(&mut c)
        .is_ok()));
    let t0 = Instant::now();
    let (mut first, mut last) = (None, None);
    while t0.elapsed() < Duration::from_secs(30) {
        let (port, epoch) = master_fields(&set.sentinel_url(0));
        if port == p && epoch > epoch0 {
            first.get_or_insert(t0.elapsed());
            last = Some(t0.elapsed());
        }
        if port != p {
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "leader said (old address, new epoch) from {first:?} to {last:?} after SENTINEL FAILOVER"
    );
}
