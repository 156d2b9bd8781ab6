//! Security: unguessable owner ids and Redlock tokens, no release or extend by anyone but
//! the owner, an ACL user with a password, and TLS (with the `tls-rustls` feature).

#[allow(dead_code)] // this binary uses a part
mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use redis::Commands;
use redis_mutex::{Error, Pool, RedisMutex, Redlock, reset_all};
use support::{HANG, RedisServer};

const SAMPLES: usize = 100_000;

/// How long taking and releasing [`SAMPLES`] Redlocks may take.
const RUN: Duration = Duration::from_secs(300);

/// Checks that `ids` are 128-bit lowercase hex strings, all distinct, whose every hex
/// digit position is uniformly distributed: what a CSPRNG gives, and a counter, a clock or
/// a process id does not.
fn assert_random_hex_ids(what: &str, ids: &[String]) {
    assert_eq!(ids.len(), SAMPLES);
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        distinct.len(),
        ids.len(),
        "{what}: {} repeated",
        ids.len() - distinct.len()
    );
    for id in ids {
        assert_eq!(id.len(), 32, "{what} {id:?}: not 128 bits in hex");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{what} {id:?}: not lowercase hex"
        );
    }
    // Pearson's chi-square over the 16 digits, per position (15 degrees of freedom). A
    // uniform source exceeds 60 with a probability of about 1e-7 per position.
    let expected = SAMPLES as f64 / 16.0;
    for position in 0..32 {
        let mut counts = [0u64; 16];
        for id in ids {
            let digit = (id.as_bytes()[position] as char).to_digit(16).unwrap();
            counts[digit as usize] += 1;
        }
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        assert!(
            chi2 < 60.0,
            "{what}: digit {position} is not uniform (chi-square {chi2:.1}): {counts:?}"
        );
    }
    // And no two ids made one after the other share a long prefix, as a counter's would.
    let close = ids
        .windows(2)
        .filter(|pair| pair[0][..6] == pair[1][..6])
        .count();
    assert!(close < 5, "{what}: {close} consecutive ids share 24 bits");
}

#[test]
fn owner_ids_are_128_random_bits_and_never_repeat() {
    // Making a mutex talks to no server.
    let pool = Pool::builder()
        .min_idle(0)
        .connect_lazy(true)
        .build("redis://127.0.0.1:1/")
        .unwrap();
    let ids: Vec<String> = (0..SAMPLES)
        .map(|_| {
            RedisMutex::new(pool.clone(), "x")
                .unwrap()
                .owner_id()
                .to_owned()
        })
        .collect();
    assert_random_hex_ids("owner id", &ids);
}

#[test]
fn redlock_tokens_are_128_random_bits_and_never_repeat() {
    const THREADS: usize = 8;
    let server = RedisServer::start();
    let pool = server.pool_with(Pool::builder().max_size(THREADS as u32));
    // A generous instance timeout: this test is about tokens, and a machine busy with
    // other work can take longer than the default 50 ms to answer.
    let redlock = Arc::new(
        Redlock::builder(vec![pool])
            .instance_timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
    );
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let redlock = redlock.clone();
            support::spawn(&format!("locking thread {t}"), move || {
                (0..SAMPLES / THREADS)
                    .map(|i| {
                        let guard = redlock.lock(&format!("token-{t}-{i}"), HANG).unwrap();
                        let token = guard.owner_id().to_owned();
                        guard.unlock().unwrap();
                        token
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let tokens: Vec<String> = threads.into_iter().flat_map(|t| t.join(RUN)).collect();
    assert_random_hex_ids("redlock token", &tokens);
}

#[test]
fn a_former_owner_can_neither_release_nor_extend() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    // With and without auto-renewal: the renewal thread is a former owner too.
    for renewed in [false, true] {
        let name = format!("taken-over-{renewed}");
        let key = format!("lock:{name}");
        let former = RedisMutex::builder(pool.clone(), name.as_str())
            .expire(Duration::from_millis(100))
            .build()
            .unwrap();
        // Another process: another pool.
        let owner = RedisMutex::builder(server.pool(), name.as_str())
            .owner_id("the-owner")
            .expire(Duration::from_secs(60))
            .auto_renewal(renewed)
            .build()
            .unwrap();
        let stale = former.lock().unwrap();
        // The former owner's lease runs out and the owner takes the lock.
        let guard = owner.try_lock_for(HANG).unwrap();
        let before: i64 = conn.pttl(&key).unwrap();

        let extended = stale.extend(Duration::from_millis(50));
        assert!(
            matches!(
                extended,
                Err(Error::NotAcquired { .. } | Error::LockLost { .. })
            ),
            "{name}: extend by a former owner: {extended:?}"
        );
        assert!(stale.is_lost());
        assert!(matches!(stale.ensure_held(), Err(Error::LockLost { .. })));
        let unlocked = stale.unlock();
        assert!(
            matches!(
                unlocked,
                Err(Error::NotAcquired { .. } | Error::LockLost { .. })
            ),
            "{name}: unlock by a former owner: {unlocked:?}"
        );
        let holder: String = conn.get(&key).unwrap();
        assert_eq!(holder, "the-owner", "{name}: the owner keeps the lock");
        let pttl: i64 = conn.pttl(&key).unwrap();
        assert!(
            pttl > 50_000 && pttl <= before,
            "{name}: the owner's lease was changed to {pttl} ms"
        );
        let signalled: bool = conn.exists(format!("lock-signal:{name}")).unwrap();
        assert!(
            !signalled,
            "{name}: the former owner's unlock woke a waiter"
        );
        guard.unlock().unwrap();
    }

    // Redlock: the same over three instances.
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let redlock = Redlock::new(servers.iter().map(RedisServer::pool).collect()).unwrap();
    let stale = redlock
        .lock("resource", Duration::from_millis(100))
        .unwrap();
    let owner = Redlock::builder(servers.iter().map(RedisServer::pool).collect())
        .retry_count(100)
        .retry_delay(Duration::from_millis(20))
        .build()
        .unwrap();
    let guard = owner.lock("resource", Duration::from_secs(60)).unwrap();
    let extended = stale.extend(Duration::from_secs(1));
    assert!(
        matches!(extended, Err(Error::NotAcquired { .. })),
        "redlock extend by a former owner: {extended:?}"
    );
    let unlocked = stale.unlock();
    assert!(
        matches!(unlocked, Err(Error::NotAcquired { .. })),
        "redlock unlock by a former owner: {unlocked:?}"
    );
    // The owner holds a majority (one instance may have refused it while the stale key had
    // not yet expired there); wherever it holds the key, the stale unlock left it alone.
    let mut held = 0;
    for server in &servers {
        let mut conn = server.connection();
        let token: Option<String> = conn.get("resource").unwrap();
        if let Some(token) = token {
            assert_eq!(token, guard.owner_id(), "only the owner's token is left");
            let pttl: i64 = conn.pttl("resource").unwrap();
            assert!(pttl > 50_000, "the owner's lease was changed to {pttl} ms");
            held += 1;
        }
    }
    assert!(held >= 2, "the owner keeps its majority: {held} of 3");
    guard.unlock().unwrap();
}

#[test]
fn only_the_operator_tools_remove_someone_elses_lock() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool();
    let owner = RedisMutex::builder(pool.clone(), "operated")
        .owner_id("the-owner")
        .build()
        .unwrap();
    let guard = owner.lock().unwrap();
    // Another client, whatever its id, cannot take it.
    let other = RedisMutex::new(pool.clone(), "operated").unwrap();
    assert!(other.try_lock().unwrap_err().is_would_block());
    // reset and reset_all, documented as operator tools, can.
    assert!(other.reset().unwrap());
    let gone: bool = conn.exists("lock:operated").unwrap();
    assert!(!gone);
    assert!(matches!(guard.unlock(), Err(Error::NotAcquired { .. })));
    let guard = owner.lock().unwrap();
    assert_eq!(reset_all(&pool).unwrap(), 1);
    assert!(matches!(guard.unlock(), Err(Error::NotAcquired { .. })));
}

/// Takes an auto-renewed lock on the first of `pools`, holds it through a renewal or two
/// against a waiter on the second with a short deadline (a timed-out BLPOP), then hands it to
/// that waiter, blocked; `admin` is a direct connection to look on with. `how` says what
/// working renewal shows. (Two pools: a process's mutexes of one pool and name wait for
/// each other in the process.)
fn lock_renew_and_hand_over(
    pools: [&Pool; 2],
    admin: &mut redis::Connection,
    name: &str,
    how: &str,
) {
    let [pool, waiter_pool] = pools;
    let owner_id = format!("{name}-holder");
    let holder = RedisMutex::builder(pool.clone(), name)
        .owner_id(owner_id.as_str())
        .expire(Duration::from_millis(600))
        .auto_renewal(true)
        .build()
        .unwrap();
    let waiter = RedisMutex::new(waiter_pool.clone(), name).unwrap();
    let guard = holder.lock().unwrap();
    let owner: String = admin.get(format!("lock:{name}")).unwrap();
    assert_eq!(owner, owner_id);
    assert!(
        waiter
            .try_lock_for(Duration::from_millis(700))
            .unwrap_err()
            .is_would_block()
    );
    assert!(!guard.is_lost(), "{how}");
    let waiting = support::spawn("the waiter", move || {
        waiter
            .try_lock_for(HANG)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    assert!(
        support::eventually(HANG, || support::blocked_clients(admin) == 1),
        "the waiter never blocked"
    );
    guard.unlock().unwrap();
    waiting.join(HANG).expect("the waiter gets the lock");
}

#[test]
fn an_acl_user_with_a_password_locks_and_a_wrong_one_is_told() {
    // The default user is off; `locker` may touch only the protocol's keys (`lock*`) and
    // run nothing dangerous but the connection commands a waiter needs.
    let server = RedisServer::start_with(&[
        "--user",
        "default",
        "off",
        "--user",
        "admin",
        "on",
        ">admin-password",
        "~*",
        "&*",
        "+@all",
        "--user",
        "locker",
        "on",
        ">locker-password",
        "~lock*",
        "+@all",
        "-@dangerous",
        "+client|id",
        "+client|unblock",
        "--user",
        "stranger",
        "on",
        ">stranger-password",
        "~other:*",
        "+@all",
    ]);
    let pool_for = |user: &str, password: &str| {
        server.pool_with(
            Pool::builder()
                .username(user)
                .password(password)
                .max_size(4)
                .min_idle(0)
                .connection_timeout(Duration::from_millis(500))
                .connect_lazy(true),
        )
    };
    let mut admin = support::connect(&format!(
        "redis://admin:admin-password@127.0.0.1:{}/",
        server.port()
    ));

    let pool = pool_for("locker", "locker-password");
    let other = pool_for("locker", "locker-password");
    lock_renew_and_hand_over(
        [&pool, &other],
        &mut admin,
        "acl",
        "renewal works for the ACL user",
    );
    assert_eq!(reset_all(&pool).unwrap(), 0);

    // Building a pool that connects at once fails there, naming the server.
    let refused = Pool::builder()
        .username("locker")
        .password("wrong-password")
        .build(&server.url())
        .unwrap_err();
    let address = format!("127.0.0.1:{}", server.port());
    assert!(
        matches!(&refused, Error::AuthFailed { server, .. } if *server == address),
        "a wrong password at build: {refused:?}"
    );

    // Built without connecting, the pools' lock calls are told, each with its own error.
    let lock_error = |pool: Pool| RedisMutex::new(pool, "acl").unwrap().lock().unwrap_err();
    let wrong = lock_error(pool_for("locker", "wrong-password"));
    let text = wrong.to_string().to_lowercase();
    assert!(
        matches!(wrong, Error::AuthFailed { .. })
            && (text.contains("wrongpass") || text.contains("authentication failed")),
        "a wrong password: {wrong:?}"
    );
    let stranger = lock_error(pool_for("stranger", "stranger-password"));
    assert!(
        matches!(stranger, Error::Redis { .. })
            && stranger.to_string().to_lowercase().contains("noperm"),
        "a user without the keys: {stranger:?}"
    );
}

/// TLS with a certificate authority made for the test by the `openssl` command-line tool.
#[cfg(feature = "tls-rustls")]
mod tls {
    use std::path::Path;
    use std::process::Command;

    use super::*;

    /// Makes a CA and a certificate for 127.0.0.1 signed by it, in `dir`.
    fn make_certificates(dir: &Path) {
        let run = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("the TLS test needs the openssl command-line tool");
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let subject = |cn: &str| format!("/CN={cn}");
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            &subject("redis-mutex test CA"),
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            &subject("127.0.0.1"),
        ]);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
    }

    #[test]
    fn locks_work_over_tls_and_an_unknown_certificate_is_refused() {
        let dir = std::env::temp_dir().join(format!("redis-mutex-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        make_certificates(&dir);
        let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
        let tls_port = support::free_port();
        let server = RedisServer::start_with(&[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &file("server.crt"),
            "--tls-key-file",
            &file("server.key"),
            "--tls-ca-cert-file",
            &file("ca.crt"),
            "--tls-auth-clients",
            "no",
        ]);
        let url = format!("rediss://127.0.0.1:{tls_port}/");
        let client = redis::Client::build_with_tls(
            url.as_str(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(dir.join("ca.crt")).unwrap()),
            },
        )
        .unwrap();
        let pool = Pool::builder()
            .max_size(4)
            .build_with_client(client.clone())
            .unwrap();
        let other = Pool::builder()
            .max_size(4)
            .build_with_client(client)
            .unwrap();
        let mut conn = server.connection();

        lock_renew_and_hand_over([&pool, &other], &mut conn, "tls", "renewal works over TLS");
        // The pool's connections are the server's TLS ones.
        let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn).unwrap();
        let on_tls = clients
            .lines()
            .filter(|l| l.contains(&format!("laddr=127.0.0.1:{tls_port} ")))
            .count();
        assert!(on_tls >= 1, "no client on the TLS port: {clients}");

        // Without our CA, the server's certificate is refused, and the error says so: when
        // the pool is built, or, built without connecting, by the first lock.
        let refused = Pool::new(&url).unwrap_err();
        println!("without the CA, at build: {refused}");
        assert!(refused.is_unreachable(), "{refused:?}");
        assert!(
            refused.to_string().to_lowercase().contains("certificate"),
            "the error does not name the certificate: {refused}"
        );
        let untrusted = Pool::builder()
            .min_idle(0)
            .connection_timeout(Duration::from_millis(500))
            .connect_lazy(true)
            .build(&url)
            .unwrap();
        let text = RedisMutex::new(untrusted, "tls")
            .unwrap()
            .lock()
            .unwrap_err()
            .to_string();
        println!("without the CA: {text}");
        assert!(
            text.to_lowercase().contains("certificate"),
            "the error does not name the certificate: {text}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
