//! Leader election (`RedisElection`), tested from the issue's promise alone: one leader at a
//! time whatever the number of candidates, objects, threads and connections; terms that
//! never go back (resign, crash, pause, operator reset, restart); what `leader()` and an
//! observer report, and when; fair order; the operator tools; no key python-redis-lock
//! could take. Random choices are seeded: `ELECTION_SEED` replays a run.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::cluster::Cluster;
use crate::support::proxy::FaultProxy;
use crate::support::sentinel::Sentinels;
use crate::support::{
    HANG, RedisServer, Task, child_env, connect, eventually, info_field, pool_at, run_bounded,
    signal, spawn, spawn_child,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::Commands;
use redis_mutex::{
    Error, Leader, Observer, Pool, RedisElection, RedisMutex, TryLockError, list_locks, reset_all,
};

/// How soon a change (a campaign won, a proclaim, a resign) must reach an observer, or a
/// resigned leader's waiting successor be elected: the issue says one round trip (well under
/// a millisecond on loopback); this only catches a wait that naps or polls instead of being
/// woken, with room for a loaded machine.
const PROMPT: Duration = Duration::from_millis(500);

/// How far before a crashed leader's lease end (as `leader()` reported it) a successor may
/// be seen without that being a takeover of a live lease: the read's own round trip and
/// the clocks' drift.
const EARLY: Duration = Duration::from_millis(100);

/// This run's seed: `ELECTION_SEED`, or a fresh one. Printed by every caller.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("ELECTION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("{test}: seed {seed} (ELECTION_SEED={seed} replays it)");
    seed
}

// ---------------------------------------------------------------------------------------
// Adapters: the only places that depend on shapes the issue leaves open.
// ---------------------------------------------------------------------------------------

/// `valid_for()` as `Option<Duration>`, whether the crate returns a `Duration` or, as the
/// guards of its other kinds do, an `Option<Duration>`.
trait Validity {
    fn validity(self) -> Option<Duration>;
}

impl Validity for Duration {
    fn validity(self) -> Option<Duration> {
        Some(self)
    }
}

impl Validity for Option<Duration> {
    fn validity(self) -> Option<Duration> {
        self
    }
}

/// One step of an observer: a change (the new state), nothing within the wait, or an error.
#[derive(Debug)]
enum Step {
    Change(Option<Leader>),
    Quiet,
    Failed(String),
}

/// The bounded wait's reply as a [`Step`]: `Option<Result<Option<Leader>>>` (as the
/// iterator's `next`, `None` for nothing yet) or `Result<Option<Option<Leader>>>`.
trait IntoStep {
    fn into_step(self) -> Step;
}

impl IntoStep for Option<Result<Option<Leader>, Error>> {
    fn into_step(self) -> Step {
        match self {
            None => Step::Quiet,
            Some(Ok(state)) => Step::Change(state),
            Some(Err(e)) => Step::Failed(e.to_string()),
        }
    }
}

impl IntoStep for Result<Option<Option<Leader>>, Error> {
    fn into_step(self) -> Step {
        match self {
            Ok(None) => Step::Quiet,
            Ok(Some(state)) => Step::Change(state),
            Err(e) => Step::Failed(e.to_string()),
        }
    }
}

/// The observer's bounded wait for the next change. The issue leaves its name open; it is
/// guessed as `next_timeout`.
fn next_step(observer: &mut Observer, within: Duration) -> Step {
    observer.next_timeout(within).into_step()
}

/// The next change within `within`, or a failure that says what was waited for.
fn next_change(observer: &mut Observer, within: Duration, what: &str) -> Option<Leader> {
    let started = Instant::now();
    loop {
        let left = within.saturating_sub(started.elapsed());
        match next_step(observer, left) {
            Step::Change(state) => return state,
            Step::Failed(e) => panic!("{what}: the observer failed: {e}"),
            Step::Quiet if started.elapsed() >= within => {
                panic!("{what}: no change reached the observer within {within:?}")
            }
            // A wait that returned before its time: wait the rest.
            Step::Quiet => {}
        }
    }
}

/// A one-line description of a state, for messages.
fn show(state: &Option<Leader>) -> String {
    state.as_ref().map_or("no leader".to_owned(), show_leader)
}

fn show_leader(l: &Leader) -> String {
    format!(
        "{} leads (term {}, value {:?}, lease left {:?})",
        l.owner_id, l.term, l.value, l.expires_in
    )
}

/// Asserts that `state` is `owner` leading with `value` in `term`.
fn assert_leads(state: &Option<Leader>, owner: &str, value: &str, term: u64, what: &str) {
    let Some(l) = state else {
        panic!("{what}: expected {owner} to lead with {value:?} in term {term}, got no leader")
    };
    assert_eq!(
        (l.owner_id.as_str(), l.value.as_str(), l.term),
        (owner, value, term),
        "{what}: {}",
        show(state)
    );
}

/// An observer on a thread of its own (its own `RedisElection` and pool), sending every
/// change with the instant it arrived, until stopped. For tests whose main thread is busy
/// elsewhere; the observer is built on that thread, so it need not be `Send`.
struct Watch {
    rx: mpsc::Receiver<(Instant, Result<Option<Leader>, String>)>,
    stop: Arc<AtomicBool>,
    task: Task<()>,
}

impl Watch {
    fn start(pool: Pool, name: &str) -> Watch {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let (name, stopping) = (name.to_owned(), stop.clone());
        let task = spawn(&format!("observer of {name}"), move || {
            let election = RedisElection::new(pool, name.as_str()).unwrap();
            let mut observer = election.observe().unwrap();
            while !stopping.load(Ordering::SeqCst) {
                let item = match next_step(&mut observer, Duration::from_millis(200)) {
                    Step::Quiet => continue,
                    Step::Change(state) => Ok(state),
                    Step::Failed(e) => Err(e),
                };
                if tx.send((Instant::now(), item)).is_err() {
                    break;
                }
            }
        });
        Watch { rx, stop, task }
    }

    /// The next change within `within`; panics on none, or on an error.
    fn next(&self, within: Duration, what: &str) -> (Instant, Option<Leader>) {
        match self.rx.recv_timeout(within) {
            Ok((at, Ok(state))) => (at, state),
            Ok((_, Err(e))) => panic!("{what}: the observer failed: {e}"),
            Err(_) => panic!("{what}: no change reached the observer within {within:?}"),
        }
    }

    /// Every change that arrives within `within`, errors included.
    fn drain(&self, within: Duration) -> Vec<(Instant, Result<Option<Leader>, String>)> {
        let deadline = Instant::now() + within;
        let mut all = Vec::new();
        while let Ok(item) = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            all.push(item);
        }
        all
    }

    /// Stops the thread (which drops its observer) and waits for it.
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let Watch { rx, task, .. } = self;
        drop(rx);
        task.join(HANG);
    }
}

/// Every key in the server's database.
fn all_keys(conn: &mut redis::Connection) -> Vec<String> {
    let mut keys: Vec<String> = conn
        .scan::<String>()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    keys.sort();
    keys
}

/// A count that grows when anything is added to the database: one per key, plus the size
/// of each collection. A candidate that queues (fair mode) raises it. Keys about to expire
/// (a counter that lives a millisecond) are left out: their going would lower it.
fn footprint(conn: &mut redis::Connection) -> u64 {
    let mut total = 0;
    for key in all_keys(conn) {
        let pttl: i64 = conn.pttl(&key).unwrap();
        if (0..100).contains(&pttl) || pttl == -2 {
            continue;
        }
        let kind: String = redis::cmd("TYPE").arg(&key).query(conn).unwrap();
        let size: u64 = match kind.as_str() {
            "list" => conn.llen(&key).unwrap(),
            "zset" => conn.zcard(&key).unwrap(),
            "set" => conn.scard(&key).unwrap(),
            "hash" => conn.hlen(&key).unwrap(),
            "stream" => redis::cmd("XLEN").arg(&key).query(conn).unwrap(),
            _ => 0,
        };
        total += 1 + size;
    }
    total
}

/// The ids of the server's clients now.
fn client_ids(conn: &mut redis::Connection) -> BTreeSet<u64> {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(conn).unwrap();
    list.lines()
        .filter_map(|l| client_field(l, "id")?.parse().ok())
        .collect()
}

fn client_field<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(field)?.strip_prefix('='))
}

/// Whether a client not in `known` has run a command beyond a connection's set-up: a
/// candidate of a new pool has made its first attempt.
fn a_new_client_acted(conn: &mut redis::Connection, known: &BTreeSet<u64>) -> bool {
    const SET_UP: &[&str] = &[
        "NULL",
        "client|setinfo",
        "client|setname",
        "client|id",
        "client|list",
        "hello",
        "ping",
        "select",
        "auth",
        "info",
        "readonly",
    ];
    let list: String = redis::cmd("CLIENT").arg("LIST").query(conn).unwrap();
    list.lines().any(|l| {
        let id: Option<u64> = client_field(l, "id").and_then(|id| id.parse().ok());
        let cmd = client_field(l, "cmd").unwrap_or("NULL");
        id.is_some_and(|id| !known.contains(&id)) && !SET_UP.contains(&cmd)
    })
}

/// What clients send to a server, as `MONITOR` shows it: each request a line, the
/// commands scripts run left out.
struct Monitor {
    conn: redis::Connection,
}

impl Monitor {
    fn start(server: &RedisServer) -> Monitor {
        let mut conn = server.connection();
        let _: String = redis::cmd("MONITOR").query(&mut conn).unwrap();
        Monitor { conn }
    }

    /// Every request sent since `start`, up to a marker sent now.
    fn finish(mut self, server: &RedisServer) -> Vec<String> {
        let marker = format!("end-of-monitor-{}", rand::rng().random::<u64>());
        let _: String = redis::cmd("ECHO")
            .arg(&marker)
            .query(&mut server.connection())
            .unwrap();
        let mut sent = Vec::new();
        let deadline = Instant::now() + HANG;
        loop {
            assert!(Instant::now() < deadline, "MONITOR never showed the marker");
            let line = match self.conn.recv_response().unwrap() {
                redis::Value::SimpleString(s) => s,
                redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                other => format!("{other:?}"),
            };
            if line.contains(&marker) {
                return sent;
            }
            if !line.contains(" lua]") {
                sent.push(line);
            }
        }
    }
}

/// Every key with its type, expiry and contents, for a failure's message.
fn dump(conn: &mut redis::Connection) -> String {
    let mut out = String::new();
    for key in all_keys(conn) {
        let kind: String = redis::cmd("TYPE").arg(&key).query(conn).unwrap();
        let pttl: i64 = conn.pttl(&key).unwrap();
        let contents: String = match kind.as_str() {
            "string" => format!("{:?}", conn.get::<_, String>(&key).unwrap()),
            "list" => format!("{:?}", conn.lrange::<_, Vec<String>>(&key, 0, -1).unwrap()),
            "zset" => format!(
                "{:?}",
                conn.zrange_withscores::<_, Vec<(String, String)>>(&key, 0, -1)
                    .unwrap()
            ),
            "set" => format!("{:?}", conn.smembers::<_, Vec<String>>(&key).unwrap()),
            "hash" => format!(
                "{:?}",
                conn.hgetall::<_, Vec<(String, String)>>(&key).unwrap()
            ),
            other => other.to_owned(),
        };
        out.push_str(&format!("  {key} ({kind}, pttl {pttl}): {contents}\n"));
    }
    out
}

fn connected_clients(conn: &mut redis::Connection) -> u64 {
    info_field(conn, "clients", "connected_clients")
        .unwrap()
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// One leader at a time.
// ---------------------------------------------------------------------------------------

/// One term as its leader was told it: from the campaign's return to the resign, clipped to
/// what `valid_for()` promised at the start.
#[derive(Debug, Clone)]
struct Term {
    owner: String,
    term: u64,
    from: Instant,
    to: Instant,
    values: [String; 2],
}

/// Twelve threads, each building its own `RedisElection` per round (random expiry, random
/// `campaign` or `try_campaign_for`, random resign or drop), on a pool of three
/// connections, with an observer on another pool: never two inside at once, validities
/// that never overlap, terms strictly rising in the order the leaders were told, and every
/// value the observer reads is one its term's leader proclaimed, in order.
#[test]
fn one_leader_at_a_time_among_threads_outnumbering_connections() {
    crowd(false);
}

/// As [`one_leader_at_a_time_among_threads_outnumbering_connections`], in fair mode, with
/// the observer on the crowd's own pool of three connections.
#[test]
fn one_leader_at_a_time_in_fair_mode_with_the_observer_on_the_crowded_pool() {
    crowd(true);
}

fn crowd(fair: bool) {
    let seed = seed(&format!("one_leader_at_a_time (fair: {fair})"));
    let server = RedisServer::start();
    let pool = server.pool_with(Pool::builder().max_size(3));
    let name = "crowd";
    let watch = Watch::start(if fair { pool.clone() } else { server.pool() }, name);
    let (_, first) = watch.next(HANG, "the observer's first item");
    assert!(first.is_none(), "nobody campaigned yet: {}", show(&first));

    let (threads, rounds) = (12, 5);
    let inside = Arc::new(AtomicUsize::new(0));
    let most_inside = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(threads));
    let tasks: Vec<_> = (0..threads)
        .map(|t| {
            let (pool, inside, most_inside, start) = (
                pool.clone(),
                inside.clone(),
                most_inside.clone(),
                start.clone(),
            );
            spawn(&format!("candidate-{t}"), move || {
                let mut rng = StdRng::seed_from_u64(seed ^ ((t as u64 + 1) * 0x9e37_79b9));
                start.wait();
                let mut terms = Vec::new();
                for r in 0..rounds {
                    let owner = format!("t{t}-r{r}");
                    let expire = Duration::from_millis(rng.random_range(700..3000));
                    let election = RedisElection::builder(pool.clone(), name)
                        .owner_id(owner.as_str())
                        .expire(expire)
                        .fair(fair)
                        .build()
                        .unwrap();
                    let values = [format!("{owner}-a"), format!("{owner}-b")];
                    let leadership = if rng.random_bool(0.5) {
                        election
                            .campaign(values[0].as_str())
                            .unwrap_or_else(|e| panic!("{owner}: campaign: {e}"))
                    } else {
                        election
                            .try_campaign_for(values[0].as_str(), HANG * 3)
                            .unwrap_or_else(|e| panic!("{owner}: try_campaign_for: {e}"))
                    };
                    let from = Instant::now();
                    let valid = leadership.valid_for().validity();
                    let now_inside = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most_inside.fetch_max(now_inside, Ordering::SeqCst);
                    let term = leadership.term();
                    // The leader's work.
                    thread::sleep(Duration::from_millis(rng.random_range(0..4)));
                    leadership
                        .proclaim(values[1].as_str())
                        .unwrap_or_else(|e| panic!("{owner}: proclaim: {e}"));
                    leadership
                        .ensure_held()
                        .unwrap_or_else(|e| panic!("{owner}: ensure_held: {e}"));
                    let to = Instant::now();
                    inside.fetch_sub(1, Ordering::SeqCst);
                    let to = valid.map_or(to, |v| to.min(from + v));
                    if rng.random_bool(0.5) {
                        leadership
                            .resign()
                            .unwrap_or_else(|e| panic!("{owner}: resign: {e}"));
                    } else {
                        drop(leadership);
                    }
                    terms.push(Term {
                        owner,
                        term,
                        from,
                        to,
                        values,
                    });
                }
                terms
            })
        })
        .collect();
    let mut terms: Vec<Term> = tasks.into_iter().flat_map(|t| t.join(HANG * 6)).collect();
    assert_eq!(terms.len(), threads * rounds);
    assert_eq!(
        most_inside.load(Ordering::SeqCst),
        1,
        "two leaders were inside at once"
    );

    terms.sort_by_key(|t| t.from);
    for pair in terms.windows(2) {
        assert!(
            pair[1].from >= pair[0].to,
            "two leaders told they lead with overlapping validity: {pair:#?}"
        );
        assert!(
            pair[1].term > pair[0].term,
            "terms do not rise in the order the leaders were told: {} then {}",
            pair[0].term,
            pair[1].term
        );
    }

    // What the observer saw: known terms only, never going back, each term's values in
    // the order its leader proclaimed them; and no leader at the end.
    let by_term: BTreeMap<u64, &Term> = terms.iter().map(|t| (t.term, t)).collect();
    let mut seen: Vec<Option<Leader>> = Vec::new();
    let ended = eventually(HANG, || {
        for (_, item) in watch.drain(Duration::from_millis(50)) {
            seen.push(item.unwrap_or_else(|e| panic!("the observer failed: {e}")));
        }
        matches!(seen.last(), Some(None))
    });
    assert!(
        ended,
        "the observer's last item is not \"no leader\" after every leader resigned: {}",
        seen.last().map_or("nothing".to_owned(), show)
    );
    let mut last: Option<(u64, usize)> = None;
    let mut terms_seen = BTreeSet::new();
    for state in seen.iter().flatten() {
        let term = by_term.get(&state.term).unwrap_or_else(|| {
            panic!(
                "the observer reported a term no leader was told: {}",
                show_leader(state)
            )
        });
        assert_eq!(state.owner_id, term.owner, "term {}", state.term);
        let index = term
            .values
            .iter()
            .position(|v| *v == state.value)
            .unwrap_or_else(|| {
                panic!(
                    "term {}: the observer read {:?}, which its leader never proclaimed",
                    state.term, state.value
                )
            });
        if let Some(previous) = last {
            assert!(
                (state.term, index) > previous,
                "the observer went back: {previous:?} then {:?}",
                (state.term, index)
            );
        }
        last = Some((state.term, index));
        terms_seen.insert(state.term);
    }
    println!(
        "{} terms; the observer reported {} items covering {} terms",
        terms.len(),
        seen.len(),
        terms_seen.len()
    );
    watch.stop();
}

/// `try_campaign` and `try_campaign_for` give `WouldBlock` while another leads, whether
/// the other is an object of this pool or of another; a waiter is elected within a round
/// trip of the resign (not at its next nap), with a higher term.
#[test]
fn try_campaign_would_block_while_another_leads() {
    let server = RedisServer::start();
    let pool = server.pool();
    let a = RedisElection::builder(pool.clone(), "busy")
        .owner_id("a")
        .build()
        .unwrap();
    let same_pool = RedisElection::builder(pool.clone(), "busy")
        .owner_id("b")
        .build()
        .unwrap();
    let other_pool = RedisElection::builder(server.pool(), "busy")
        .owner_id("c")
        .build()
        .unwrap();
    let leading = a.campaign("a").unwrap();
    let t1 = leading.term();
    for (what, e) in [("same pool", &same_pool), ("other pool", &other_pool)] {
        assert!(
            matches!(e.try_campaign("x"), Err(TryLockError::WouldBlock)),
            "{what}: try_campaign while a leads"
        );
        let started = Instant::now();
        let r = e.try_campaign_for("x", Duration::from_millis(300));
        let took = started.elapsed();
        assert!(
            matches!(r, Err(TryLockError::WouldBlock)),
            "{what}: try_campaign_for while a leads"
        );
        assert!(
            took >= Duration::from_millis(250)
                && took <= Duration::from_millis(300) + Duration::from_secs(2),
            "{what}: try_campaign_for(300 ms) gave up after {took:?}"
        );
    }
    // The failed attempts changed nothing.
    assert_leads(
        &a.leader().unwrap(),
        "a",
        "a",
        t1,
        "after the failed attempts",
    );
    leading.ensure_held().unwrap();

    // A waiter of another pool, woken by the resign.
    let mut conn = server.connection();
    let known = client_ids(&mut conn);
    let url = server.url();
    let (won_tx, won_rx) = mpsc::channel();
    let waiter = spawn("waiter", move || {
        let e = RedisElection::builder(pool_at(&url), "busy")
            .owner_id("d")
            .build()
            .unwrap();
        let l = e
            .try_campaign_for("d", HANG)
            .unwrap_or_else(|e| panic!("the waiter: {e}"));
        won_tx.send((Instant::now(), l.term())).unwrap();
        l.resign().unwrap();
    });
    // Let the waiter's first attempt reach Redis (should it not have, it must still be
    // elected promptly once the leader resigns).
    let _ = eventually(Duration::from_secs(2), || {
        a_new_client_acted(&mut conn, &known)
    });
    leading.resign().unwrap();
    let resigned = Instant::now();
    let (won, t2) = won_rx
        .recv_timeout(HANG)
        .expect("the waiter was never elected");
    waiter.join(HANG);
    let late = won.saturating_duration_since(resigned);
    println!("elected {late:?} after the resign");
    assert!(
        late <= PROMPT,
        "the waiter was elected {late:?} after the leader resigned"
    );
    assert!(t2 > t1, "term {t2} after term {t1}");
    // Free again: a try succeeds at once.
    let l = same_pool.try_campaign("b").unwrap();
    assert!(l.term() > t2);
}

/// `leader()`, for anyone (another object, another pool): who leads, what it proclaimed,
/// its term, the lease left; a proclaim changes the value and keeps the term; no leader
/// after the resign; names do not leak into one another.
#[test]
fn leader_reports_owner_value_term_and_lease() {
    let server = RedisServer::start();
    let expire = Duration::from_secs(10);
    let leader_side = RedisElection::builder(server.pool(), "reported")
        .owner_id("node-a")
        .expire(expire)
        .build()
        .unwrap();
    let anyone = RedisElection::new(server.pool(), "reported").unwrap();
    let elsewhere = RedisElection::new(server.pool(), "reported-not").unwrap();
    assert!(anyone.leader().unwrap().is_none());

    let l = leader_side.campaign("http://a:1").unwrap();
    let term = l.term();
    let valid = l.valid_for().validity();
    assert!(
        valid.is_some_and(|v| v > Duration::ZERO && v <= expire),
        "valid_for {valid:?} with a {expire:?} expiry"
    );
    assert!(!l.is_lost());
    l.ensure_held().unwrap();
    for (what, e) in [("the leader's object", &leader_side), ("anyone", &anyone)] {
        let state = e.leader().unwrap();
        assert_leads(&state, "node-a", "http://a:1", term, what);
        let left = state.unwrap().expires_in;
        assert!(
            left.is_some_and(|d| d > Duration::ZERO && d <= expire),
            "{what}: lease left {left:?} with a {expire:?} expiry"
        );
    }
    assert!(
        elsewhere.leader().unwrap().is_none(),
        "another name has a leader"
    );

    l.proclaim("http://a:2").unwrap();
    assert_leads(
        &anyone.leader().unwrap(),
        "node-a",
        "http://a:2",
        term,
        "after proclaim",
    );
    assert_eq!(l.term(), term, "proclaim changed the term");
    l.proclaim("").unwrap();
    assert_leads(
        &anyone.leader().unwrap(),
        "node-a",
        "",
        term,
        "after an empty proclaim",
    );
    // Values are any string: spaces, newlines, non-ASCII.
    let odd = "v 1\n\"ü\"\t{x}";
    l.proclaim(odd).unwrap();
    assert_leads(&anyone.leader().unwrap(), "node-a", odd, term, "odd value");

    l.resign().unwrap();
    assert!(
        anyone.leader().unwrap().is_none(),
        "a leader after the resign"
    );
    assert!(leader_side.leader().unwrap().is_none());
}

/// Without `owner_id`, each object campaigns as someone else: a second object of the same
/// pool is refused while the first leads, and the two report different owners. Without
/// `expire`, the lease is finite (a crashed leader must lose the role).
#[test]
fn default_owner_is_per_object_and_default_lease_is_finite() {
    let server = RedisServer::start();
    let pool = server.pool();
    let first = RedisElection::new(pool.clone(), "defaults").unwrap();
    let second = RedisElection::new(pool.clone(), "defaults").unwrap();
    let l = first.campaign("first").unwrap();
    assert!(matches!(
        second.try_campaign("second"),
        Err(TryLockError::WouldBlock)
    ));
    let a = first.leader().unwrap().expect("first leads");
    assert!(!a.owner_id.is_empty());
    assert!(
        a.expires_in.is_some(),
        "the default lease has no end: a crashed leader would keep the role forever"
    );
    assert!(
        l.valid_for().validity().is_some_and(|v| v > Duration::ZERO),
        "valid_for"
    );
    drop(l);
    let l = second.try_campaign("second").unwrap();
    let b = second.leader().unwrap().expect("second leads");
    assert_ne!(
        a.owner_id, b.owner_id,
        "two objects share a default owner id"
    );
    assert!(b.term > a.term);
    drop(l);
}

// ---------------------------------------------------------------------------------------
// Observers.
// ---------------------------------------------------------------------------------------

/// An observer's first item is the state when it started; then one item per change, each
/// within a round trip (campaign won, proclaim, resign, drop), and nothing in between: no
/// repeats, and no polling while nothing changes.
#[test]
fn an_observer_sees_each_change_once_and_promptly() {
    let server = RedisServer::start();

    let name = "observed";
    let watcher = RedisElection::new(server.pool(), name).unwrap();
    let mut observer = watcher.observe().unwrap();
    let first = next_change(&mut observer, HANG, "the first item");
    assert!(first.is_none(), "first item: {}", show(&first));

    // Nothing changes: the bounded wait waits, and sends (almost) no requests: a wait
    // renewed now and then, as a mutex's waiter's, not a poll. (MONITOR shows what clients
    // send; what their scripts run is left out.)
    let monitor = Monitor::start(&server);
    let started = Instant::now();
    let quiet = next_step(&mut observer, Duration::from_secs(2));
    let waited = started.elapsed();
    let sent = monitor.finish(&server);
    assert!(matches!(quiet, Step::Quiet), "nothing changed: {quiet:?}");
    assert!(
        waited >= Duration::from_millis(1500) && waited < HANG,
        "a 2 s wait for a change returned after {waited:?}"
    );
    println!(
        "an idle observer sent {} requests in {waited:?}: {sent:#?}",
        sent.len()
    );
    assert!(
        sent.len() <= 6,
        "an observer with nothing to see sent {} requests in {waited:?}: it polls: {sent:#?}",
        sent.len()
    );

    let a = RedisElection::builder(server.pool(), name)
        .owner_id("a")
        .build()
        .unwrap();
    let la = a.campaign("a-1").unwrap();
    let won = Instant::now();
    let state = next_change(&mut observer, HANG, "the campaign won");
    let late = won.elapsed();
    assert_leads(&state, "a", "a-1", la.term(), "the campaign won");
    assert!(late <= PROMPT, "a won campaign seen after {late:?}");

    la.proclaim("a-2").unwrap();
    let proclaimed = Instant::now();
    let state = next_change(&mut observer, HANG, "the proclaim");
    let late = proclaimed.elapsed();
    assert_leads(&state, "a", "a-2", la.term(), "the proclaim");
    assert!(late <= PROMPT, "a proclaim seen after {late:?}");

    let t1 = la.term();
    la.resign().unwrap();
    let resigned = Instant::now();
    let state = next_change(&mut observer, HANG, "the resign");
    let late = resigned.elapsed();
    assert!(state.is_none(), "after the resign: {}", show(&state));
    assert!(late <= PROMPT, "a resign seen after {late:?}");

    let b = RedisElection::builder(server.pool(), name)
        .owner_id("b")
        .build()
        .unwrap();
    let lb = b.campaign("b-1").unwrap();
    let t2 = lb.term();
    assert!(t2 > t1);
    let state = next_change(&mut observer, HANG, "b's campaign");
    assert_leads(&state, "b", "b-1", t2, "b's campaign");

    // A second observer, started while b leads: its first item is b.
    let mut late_comer = b.observe().unwrap();
    let state = next_change(&mut late_comer, HANG, "a late observer's first item");
    assert_leads(&state, "b", "b-1", t2, "a late observer's first item");

    drop(lb); // drop resigns
    let dropped = Instant::now();
    for (what, o) in [("first", &mut observer), ("late", &mut late_comer)] {
        let state = next_change(o, HANG, "the drop");
        let late = dropped.elapsed();
        assert!(
            state.is_none(),
            "{what} observer after the drop: {}",
            show(&state)
        );
        assert!(
            late <= PROMPT,
            "{what} observer: a drop seen after {late:?}"
        );
    }
    for (what, o) in [("first", &mut observer), ("late", &mut late_comer)] {
        let extra = next_step(o, Duration::from_millis(300));
        assert!(
            matches!(extra, Step::Quiet),
            "{what} observer: an item with nothing changed: {extra:?}"
        );
    }
}

/// Observers dropped stop: twenty observers made and dropped on a pool of two connections
/// leave no connection or wait behind, and the election still works on that pool.
#[test]
fn dropped_observers_stop_and_release_their_connections() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let pool = server.pool_with(Pool::builder().max_size(2));
    let e = RedisElection::builder(pool.clone(), "dropped")
        .owner_id("e")
        .build()
        .unwrap();
    {
        let mut o = e.observe().unwrap();
        assert!(next_change(&mut o, HANG, "first").is_none());
    }
    let baseline = connected_clients(&mut conn);
    for i in 0..20 {
        let mut o = e.observe().unwrap();
        let first = next_change(&mut o, HANG, &format!("observer {i}'s first item"));
        assert!(first.is_none());
        drop(o);
    }
    let settled = eventually(HANG, || connected_clients(&mut conn) <= baseline + 2);
    assert!(
        settled,
        "{} clients after 20 observers were dropped, {baseline} before",
        connected_clients(&mut conn)
    );
    let l = e
        .try_campaign_for("e", HANG)
        .unwrap_or_else(|err| panic!("campaign after dropped observers: {err}"));
    assert_leads(
        &e.leader().unwrap(),
        "e",
        "e",
        l.term(),
        "after dropped observers",
    );
}

// ---------------------------------------------------------------------------------------
// Leaders that misbehave.
// ---------------------------------------------------------------------------------------

/// The lease of a leader that is killed or paused.
const CHILD_LEASE: Duration = Duration::from_millis(2500);

/// Child side of [`a_killed_leader_is_replaced_when_its_lease_ends`]: campaigns, says so,
/// and leads until it is killed.
#[test]
#[ignore = "run as a child process by a_killed_leader_is_replaced_when_its_lease_ends"]
fn child_leads_until_killed() {
    let url = child_env("REDIS_URL");
    let election = RedisElection::builder(pool_at(&url), child_env("ELECTION"))
        .owner_id("child")
        .expire(CHILD_LEASE)
        .build()
        .unwrap();
    let leadership = election.campaign("child-value").unwrap();
    println!("@leading {}", leadership.term());
    // Lead until the parent kills this process (bounded all the same).
    thread::sleep(Duration::from_secs(60));
}

/// A leader killed with SIGKILL (nobody resigns) is seen gone by an observer when its lease
/// ends, not before; one of three waiting candidates (each its own pool) is elected then;
/// all three are elected in turn, with terms above the killed leader's.
#[test]
fn a_killed_leader_is_replaced_when_its_lease_ends() {
    let server = RedisServer::start();
    let name = "killed";
    let mut child = spawn_child(
        module_path!(),
        "child_leads_until_killed",
        &[("REDIS_URL", server.url()), ("ELECTION", name.to_owned())],
    );
    let lines = child.lines();
    let t0: u64 = lines.expect("@leading ", HANG).trim().parse().unwrap();
    let watch = Watch::start(server.pool(), name);
    let (_, first) = watch.next(HANG, "the observer's first item");
    assert_leads(
        &first,
        "child",
        "child-value",
        t0,
        "the observer's first item",
    );

    let (won_tx, won_rx) = mpsc::channel();
    let candidates: Vec<_> = (0..3)
        .map(|i| {
            let (url, won_tx) = (server.url(), won_tx.clone());
            spawn(&format!("candidate-{i}"), move || {
                let e = RedisElection::builder(pool_at(&url), name)
                    .owner_id(format!("c{i}"))
                    .build()
                    .unwrap();
                let l = e
                    .try_campaign_for(format!("c{i}"), HANG * 2)
                    .unwrap_or_else(|err| panic!("c{i}: {err}"));
                won_tx.send((Instant::now(), i, l.term())).unwrap();
                l.resign().unwrap();
            })
        })
        .collect();
    // Nobody is elected while the child lives and renews (two leases' worth).
    assert!(
        won_rx.recv_timeout(CHILD_LEASE * 2).is_err(),
        "a candidate was elected while the leader lived"
    );
    let anyone = RedisElection::new(server.pool(), name).unwrap();
    child.kill(); // SIGKILL: no resign
    let state = anyone.leader().unwrap();
    let asked = Instant::now();
    assert_leads(&state, "child", "child-value", t0, "right after the kill");
    let left = state.unwrap().expires_in.expect("a lease left");
    let lease_end = asked + left;
    println!("the killed leader's lease had {left:?} left");

    let mut wins: Vec<(Instant, usize, u64)> = (0..3)
        .map(|_| {
            won_rx
                .recv_timeout(HANG * 2)
                .expect("a candidate never elected")
        })
        .collect();
    for c in candidates {
        c.join(HANG);
    }
    wins.sort();
    let (first_win, _, _) = wins[0];
    assert!(
        first_win + EARLY >= lease_end,
        "elected {:?} before the killed leader's lease ended",
        lease_end.saturating_duration_since(first_win)
    );
    let late = first_win.saturating_duration_since(lease_end);
    println!("the successor was elected {late:?} after the lease ended");
    assert!(
        late <= PROMPT,
        "the successor was elected {late:?} after the killed leader's lease ended"
    );
    let terms: Vec<u64> = wins.iter().map(|w| w.2).collect();
    assert!(
        t0 < terms[0] && terms.windows(2).all(|w| w[0] < w[1]),
        "terms after {t0}, in election order: {terms:?}"
    );

    // The observer: the killed leader's end no earlier than its lease, and promptly.
    let (gone_at, next) = watch.next(HANG, "the killed leader's end");
    assert!(
        next.as_ref().is_none_or(|l| l.owner_id != "child"),
        "{}",
        show(&next)
    );
    assert!(
        gone_at + EARLY >= lease_end,
        "the observer saw the killed leader go {:?} before its lease ended",
        lease_end.saturating_duration_since(gone_at)
    );
    let late = gone_at.saturating_duration_since(lease_end);
    assert!(
        late <= PROMPT,
        "the observer saw the killed leader go {late:?} after its lease ended"
    );
    let rest = watch.drain(PROMPT);
    let mut last_term = t0;
    for (_, item) in rest.iter().map(|(at, i)| (at, i.as_ref().unwrap())) {
        if let Some(l) = item {
            assert!(l.term >= last_term, "the observer's terms went back");
            last_term = l.term;
        }
    }
    watch.stop();
}

/// Child side of [`a_paused_leader_is_deposed_and_learns_it`]: campaigns, says so, and
/// once the parent says it resumed this process, reports what its `Leadership` says.
#[test]
#[ignore = "run as a child process by a_paused_leader_is_deposed_and_learns_it"]
fn child_leads_and_is_paused() {
    let url = child_env("REDIS_URL");
    let election = RedisElection::builder(pool_at(&url), child_env("ELECTION"))
        .owner_id("paused")
        .expire(CHILD_LEASE)
        .build()
        .unwrap();
    let leadership = election.campaign("paused-value").unwrap();
    println!("@leading {}", leadership.term());
    let mut conn = connect(&url);
    let mut resumed = false;
    for _ in 0..60 {
        // SIGSTOP and SIGCONT interrupt the read (EINTR): a new connection, and again.
        match redis::cmd("BLPOP")
            .arg("resumed")
            .arg(1)
            .query::<Option<(String, String)>>(&mut conn)
        {
            Ok(Some(_)) => {
                resumed = true;
                break;
            }
            Ok(None) => {}
            Err(_) => conn = connect(&url),
        }
    }
    assert!(resumed, "the parent never said it resumed this process");
    let ensured = leadership.ensure_held();
    let lost = leadership.is_lost();
    let proclaimed = leadership.proclaim("stale value");
    let valid = leadership.valid_for().validity();
    println!(
        "@after ensure_held_err={} is_lost={} proclaim_err={} valid_zero={} ({ensured:?}, {proclaimed:?}, {valid:?})",
        ensured.is_err(),
        lost,
        proclaimed.is_err(),
        valid.is_some_and(|v| v.is_zero()),
    );
    let resigned = leadership.resign();
    println!("@resigned {resigned:?}");
}

/// A leader paused (SIGSTOP) past its lease is replaced; resumed, its `ensure_held` fails,
/// `is_lost` says so, its `valid_for` is zero, and its late `proclaim` and `resign` change
/// nothing: the new leader's value is what `leader()` and observers read.
#[test]
fn a_paused_leader_is_deposed_and_learns_it() {
    let server = RedisServer::start();
    let name = "paused";
    let mut child = spawn_child(
        module_path!(),
        "child_leads_and_is_paused",
        &[("REDIS_URL", server.url()), ("ELECTION", name.to_owned())],
    );
    let lines = child.lines();
    let t0: u64 = lines.expect("@leading ", HANG).trim().parse().unwrap();
    let watch = Watch::start(server.pool(), name);
    let (_, first) = watch.next(HANG, "the observer's first item");
    assert_leads(&first, "paused", "paused-value", t0, "first item");

    signal(child.id(), "STOP");
    let stopped = Instant::now();
    let successor = RedisElection::builder(server.pool(), name)
        .owner_id("successor")
        .expire(Duration::from_secs(30))
        .build()
        .unwrap();
    let l = successor
        .try_campaign_for("new-1", HANG)
        .unwrap_or_else(|e| panic!("the successor: {e}"));
    let waited = stopped.elapsed();
    println!("elected {waited:?} after the leader was paused");
    assert!(
        waited + EARLY >= CHILD_LEASE / 2,
        "elected {waited:?} after a leader with a {CHILD_LEASE:?} lease was paused"
    );
    let t1 = l.term();
    assert!(t1 > t0);
    l.proclaim("new-2").unwrap();

    signal(child.id(), "CONT");
    let _: () = server.connection().rpush("resumed", 1).unwrap();
    let after = lines.expect("@after ", HANG);
    println!("the resumed leader: {after}");
    for expected in [
        "ensure_held_err=true",
        "is_lost=true",
        "proclaim_err=true",
        "valid_zero=true",
    ] {
        assert!(
            after.contains(expected),
            "the resumed leader: expected {expected}: {after}"
        );
    }
    lines.expect("@resigned", HANG);
    child.finish_with(&lines, HANG);

    assert_leads(
        &successor.leader().unwrap(),
        "successor",
        "new-2",
        t1,
        "after the deposed leader's late calls",
    );
    l.ensure_held().unwrap();
    assert!(!l.is_lost());
    let all: Vec<Option<Leader>> = watch
        .drain(PROMPT)
        .into_iter()
        .map(|(_, i)| i.unwrap())
        .collect();
    assert!(
        all.iter()
            .flatten()
            .all(|s| s.value != "stale value" && (s.owner_id != "paused" || s.term == t0)),
        "the observer saw the deposed leader's late calls: {all:#?}"
    );
    assert_leads(
        all.last().unwrap_or(&first),
        "successor",
        "new-2",
        t1,
        "the observer's last item",
    );
    watch.stop();
}

/// An operator's reset (`reset_all`) forces a new election: nobody leads right after it,
/// the observer sees it, the deposed leader finds out (`is_lost`, `ensure_held`, `on_lost`)
/// and its late calls change nothing; the next leader's term is higher.
#[test]
fn an_operator_reset_forces_a_new_election() {
    let server = RedisServer::start();
    let pool = server.pool();
    let name = "reset-me";
    let watch = Watch::start(server.pool(), name);
    assert!(watch.next(HANG, "first item").1.is_none());
    let lost = Arc::new(AtomicBool::new(false));
    let flag = lost.clone();
    let a = RedisElection::builder(pool.clone(), name)
        .owner_id("a")
        .expire(Duration::from_secs(3))
        .on_lost(move |_| flag.store(true, Ordering::SeqCst))
        .build()
        .unwrap();
    let la = a.campaign("a").unwrap();
    let t1 = la.term();
    assert_leads(
        &watch.next(HANG, "a's campaign").1,
        "a",
        "a",
        t1,
        "a's campaign",
    );

    let cleared = reset_all(&pool).unwrap();
    assert!(
        cleared >= 1,
        "reset_all cleared {cleared} locks with an election led"
    );
    let state = a.leader().unwrap();
    assert!(state.is_none(), "right after the reset: {}", show(&state));
    let (_, seen) = watch.next(HANG, "the reset");
    assert!(
        seen.is_none(),
        "the observer after the reset: {}",
        show(&seen)
    );
    assert!(
        eventually(HANG, || la.is_lost()),
        "the reset leader never found out (is_lost)"
    );
    assert!(la.ensure_held().is_err());
    assert!(
        eventually(HANG, || lost.load(Ordering::SeqCst)),
        "on_lost never ran"
    );
    // Nobody else campaigned: the deposed leader did not take the role back by renewing.
    assert!(a.leader().unwrap().is_none(), "the reset leader came back");

    let b = RedisElection::builder(server.pool(), name)
        .owner_id("b")
        .build()
        .unwrap();
    let lb = b.try_campaign("b").unwrap();
    assert!(lb.term() > t1, "term {} after {t1}", lb.term());
    assert!(
        la.proclaim("a late").is_err(),
        "a deposed leader proclaimed"
    );
    drop(la);
    assert_leads(
        &b.leader().unwrap(),
        "b",
        "b",
        lb.term(),
        "after a's late calls",
    );
    lb.ensure_held().unwrap();
    let (_, seen) = watch.next(HANG, "b's campaign");
    assert_leads(&seen, "b", "b", lb.term(), "the observer");
    let extra = watch.drain(Duration::from_millis(300));
    assert!(
        extra
            .iter()
            .all(|(_, i)| matches!(i, Ok(Some(l)) if l.owner_id == "b")),
        "the deposed leader's drop or proclaim reached the observer: {extra:?}"
    );
    watch.stop();
}

/// Terms rise across resign, drop, a reset and a server restart without persistence (which
/// loses every key): the term is a fencing token, strictly rising across every term.
#[test]
fn terms_rise_across_resign_drop_reset_and_restart() {
    let mut server = RedisServer::start();
    let mut terms = Vec::new();
    {
        let e1 = RedisElection::new(server.pool(), "terms").unwrap();
        let e2 = RedisElection::new(server.pool(), "terms").unwrap();
        let l = e1.campaign("1").unwrap();
        terms.push(l.term());
        l.resign().unwrap();
        let l = e2.try_campaign("2").unwrap();
        terms.push(l.term());
        drop(l);
        // The drop resigned: free at once.
        let l = e1.try_campaign("3").unwrap();
        terms.push(l.term());
        assert!(reset_all(&server.pool()).unwrap() >= 1);
        let l2 = e2.try_campaign("4").unwrap();
        terms.push(l2.term());
        drop(l);
        drop(l2);
    }
    server.restart();
    let e = RedisElection::new(server.pool(), "terms").unwrap();
    assert!(e.leader().unwrap().is_none());
    let l = e.campaign("5").unwrap();
    terms.push(l.term());
    assert!(
        terms.windows(2).all(|w| w[0] < w[1]),
        "terms went back: {terms:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Fair mode.
// ---------------------------------------------------------------------------------------

/// In fair mode, candidates (each of its own pool: processes) are elected in the order
/// they arrived, each once the one before resigns.
#[test]
fn fair_candidates_are_elected_in_order_of_arrival() {
    let seed = seed("fair_order");
    let mut rng = StdRng::seed_from_u64(seed);
    let server = RedisServer::start();
    let mut conn = server.connection();
    let name = "fifo";
    let leader = RedisElection::builder(server.pool(), name)
        .owner_id("first")
        .fair(true)
        .build()
        .unwrap();
    let l = leader.campaign("first").unwrap();
    let mut order: Vec<usize> = (0..4).collect();
    // Arrival order: random, not the order the objects were made.
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    println!("arrival order: {order:?}");
    let elected = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let mut dumps = Vec::new();
    for &i in &order {
        let before = footprint(&mut conn);
        let (url, elected) = (server.url(), elected.clone());
        tasks.push(spawn(&format!("candidate-{i}"), move || {
            let e = RedisElection::builder(pool_at(&url), name)
                .owner_id(format!("c{i}"))
                .fair(true)
                .build()
                .unwrap();
            let l = e
                .try_campaign_for(format!("c{i}"), HANG * 2)
                .unwrap_or_else(|err| panic!("c{i}: {err}"));
            elected.lock().unwrap().push((i, l.term()));
            l.resign().unwrap();
        }));
        assert!(
            eventually(HANG, || footprint(&mut conn) > before),
            "candidate {i}'s arrival left no trace in Redis"
        );
        dumps.push(format!("after candidate {i} arrived:\n{}", dump(&mut conn)));
    }
    l.resign().unwrap();
    for t in tasks {
        t.join(HANG * 3);
    }
    let elected = elected.lock().unwrap().clone();
    let who: Vec<usize> = elected.iter().map(|e| e.0).collect();
    assert_eq!(
        who,
        order,
        "elected out of the order of arrival; the database as each arrived:\n{}",
        dumps.join("\n")
    );
    assert!(elected.windows(2).all(|w| w[0].1 < w[1].1), "{elected:?}");
}

// ---------------------------------------------------------------------------------------
// Keys, operators, options.
// ---------------------------------------------------------------------------------------

/// python-redis-lock's script: a lock named after the election, taken and released, then
/// `reset_all`, which deletes every `lock:*` key.
const PYTHON: &str = r#"
import sys, redis, redis_lock
port, name = int(sys.argv[1]), sys.argv[2]
conn = redis.StrictRedis(host="127.0.0.1", port=port)
lock = redis_lock.Lock(conn, name, id="python")
print("@acquired", lock.acquire(blocking=False), flush=True)
lock.release()
redis_lock.reset_all(conn)
print("@reset_all", flush=True)
"#;

/// No key of an election is a `lock:*` key: a mutex (or python-redis-lock's lock) of the
/// same name is taken freely while the election is led, and python-redis-lock's
/// `reset_all` (which deletes every `lock:*`) leaves the leader leading.
#[test]
fn the_election_never_uses_python_redis_lock_keys() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let name = "jobs";
    let watch = Watch::start(server.pool(), name);
    assert!(watch.next(HANG, "first").1.is_none());
    let a = RedisElection::builder(server.pool(), name)
        .owner_id("a")
        .fair(true)
        .build()
        .unwrap();
    let la = a.campaign("a").unwrap();
    let t1 = la.term();
    assert_leads(
        &watch.next(HANG, "a's campaign").1,
        "a",
        "a",
        t1,
        "observer",
    );
    // A waiting candidate too, so that every key the election uses is there.
    let before = footprint(&mut conn);
    let url = server.url();
    let waiter = spawn("waiter", move || {
        let e = RedisElection::builder(pool_at(&url), name)
            .owner_id("b")
            .fair(true)
            .build()
            .unwrap();
        let l = e.try_campaign_for("b", HANG).unwrap();
        l.term()
    });
    let _ = eventually(Duration::from_secs(2), || footprint(&mut conn) > before);

    let keys = all_keys(&mut conn);
    println!("keys with an election led and a candidate waiting: {keys:?}");
    assert!(!keys.is_empty());
    let python_like: Vec<&String> = keys.iter().filter(|k| k.starts_with("lock:")).collect();
    assert!(
        python_like.is_empty(),
        "python-redis-lock could take these keys: {python_like:?}"
    );

    // A mutex of the same name: another thing entirely.
    let mutex = RedisMutex::new(server.pool(), name).unwrap();
    let guard = mutex
        .try_lock()
        .unwrap_or_else(|e| panic!("a mutex named like the election: {e}"));
    assert_leads(&a.leader().unwrap(), "a", "a", t1, "with the mutex held");
    drop(guard);

    // python-redis-lock itself.
    let python = crate::support::python::python();
    let out = run_bounded(
        Command::new(python).args(["-c", PYTHON, &server.port().to_string(), name]),
        HANG,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("@acquired True"),
        "python-redis-lock could not take `{name}` while the election was led: {stdout}"
    );
    assert!(stdout.contains("@reset_all"));
    assert_leads(
        &a.leader().unwrap(),
        "a",
        "a",
        t1,
        "after python-redis-lock's reset_all",
    );
    la.ensure_held().unwrap();
    assert!(!la.is_lost());
    let extra = watch.drain(Duration::from_millis(300));
    assert!(
        extra.is_empty(),
        "python's calls changed the election: {extra:?}"
    );

    la.resign().unwrap();
    let t2 = waiter.join(HANG);
    assert!(t2 > t1);
    watch.stop();
}

/// `list_locks` shows a led election, of kind `election`, with its leader, term, value and
/// lease left; and `named` finds it; and neither once it is resigned.
#[test]
fn list_locks_shows_an_election() {
    let server = RedisServer::start();
    let pool = server.pool();
    let expire = Duration::from_secs(10);
    let e = RedisElection::builder(pool.clone(), "listed")
        .owner_id("node-7")
        .expire(expire)
        .build()
        .unwrap();
    let l = e.campaign("value-for-listing").unwrap();
    let term = l.term();
    // Something else held too, so that the election is told apart.
    let _mutex = RedisMutex::new(pool.clone(), "listed-mutex")
        .unwrap()
        .lock()
        .unwrap();
    let all: Vec<_> = list_locks(&pool).collect::<Result<_, _>>().unwrap();
    println!("{all:#?}");
    let found: Vec<_> = all
        .iter()
        .filter(|i| i.kind.to_string() == "election")
        .collect();
    assert_eq!(found.len(), 1, "elections listed: {all:#?}");
    let info = found[0];
    assert_eq!(info.name, "listed");
    assert_eq!(info.owner_id, "node-7");
    assert!(
        info.expires_in
            .is_some_and(|d| d > Duration::ZERO && d <= expire),
        "lease left: {:?}",
        info.expires_in
    );
    let shown = format!("{info:?}");
    assert!(
        shown.contains(&term.to_string()),
        "the term {term} is not shown: {shown}"
    );
    assert!(
        shown.contains("value-for-listing"),
        "the value is not shown: {shown}"
    );

    let named: Vec<_> = list_locks(&pool)
        .named("listed")
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        named.iter().any(|i| i.kind.to_string() == "election"),
        "named(\"listed\"): {named:#?}"
    );

    l.resign().unwrap();
    let all: Vec<_> = list_locks(&pool).collect::<Result<_, _>>().unwrap();
    assert!(
        all.iter().all(|i| i.kind.to_string() != "election"),
        "a resigned election is still listed: {all:#?}"
    );
}

/// Once every leader resigned and every object is dropped, no key the election made is
/// left without an expiry.
#[test]
fn no_key_is_left_without_an_expiry() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    {
        let a = RedisElection::new(server.pool(), "tidy").unwrap();
        let b = RedisElection::builder(server.pool(), "tidy")
            .fair(true)
            .build()
            .unwrap();
        let mut o = a.observe().unwrap();
        assert!(next_change(&mut o, HANG, "first").is_none());
        let l = a.campaign("a").unwrap();
        l.proclaim("a2").unwrap();
        drop(l);
        let l = b.campaign("b").unwrap();
        l.resign().unwrap();
    }
    let keys = all_keys(&mut conn);
    let forever: Vec<&String> = keys
        .iter()
        .filter(|k| conn.pttl::<_, i64>(k.as_str()).unwrap() == -1)
        .collect();
    assert!(
        forever.is_empty(),
        "keys left without an expiry: {forever:?} (of {keys:?})"
    );
}

/// Bad input is an error, not a panic: an empty name.
#[test]
fn an_empty_name_is_an_error() {
    let server = RedisServer::start();
    let pool = server.pool();
    let built = catch_unwind(AssertUnwindSafe(|| {
        RedisElection::builder(pool.clone(), "").build()
    }));
    let built = built.expect("an empty name panicked in build()");
    assert!(
        matches!(built, Err(Error::InvalidOptions { .. })),
        "build() with an empty name: {:?}",
        built.as_ref().err()
    );
    let new = catch_unwind(AssertUnwindSafe(|| RedisElection::new(pool.clone(), "")));
    let new = new.expect("an empty name panicked in new()");
    assert!(new.is_err(), "new() with an empty name");
}

/// `wait_replicas` with no replica to acknowledge: the campaign fails, and nobody is left
/// leading (the grant is not kept by nobody).
#[test]
fn wait_replicas_without_replicas_fails_and_leaves_no_leader() {
    let server = RedisServer::start();
    let e = RedisElection::builder(server.pool(), "replicated")
        .owner_id("r")
        .wait_replicas(1, Duration::from_millis(200))
        .build()
        .unwrap();
    let started = Instant::now();
    let r = e.campaign("r");
    assert!(
        r.is_err(),
        "a campaign acknowledged by no replica succeeded"
    );
    assert!(started.elapsed() < HANG);
    drop(r);
    assert!(
        e.leader().unwrap().is_none(),
        "a failed campaign left a leader"
    );
    let other = RedisElection::new(server.pool(), "replicated").unwrap();
    let l = other.try_campaign("o").unwrap();
    l.resign().unwrap();
}

/// A server that stops answering: the calls fail within their bound (the response timeout)
/// instead of hanging, and an observer's bounded wait returns.
#[test]
fn a_stalled_server_fails_calls_within_their_bound() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let rt = Duration::from_millis(300);
    let pool = proxy.pool_with(Pool::builder().response_timeout(rt));
    // A short lease: a request held by the stall and delivered by the heal may grant a
    // lease that no `Leadership` holds; it must run out well within the test's wait.
    let e = RedisElection::builder(pool.clone(), "stalled")
        .owner_id("s")
        .expire(Duration::from_secs(2))
        .response_timeout(rt)
        .build()
        .unwrap();
    let mut o = e.observe().unwrap();
    assert!(next_change(&mut o, HANG, "first").is_none());
    proxy.stall();
    let bound = rt * 3 + Duration::from_secs(2);
    let started = Instant::now();
    let r = e.try_campaign("s");
    let took = started.elapsed();
    assert!(
        matches!(r, Err(TryLockError::Error(_))),
        "try_campaign on a stalled server: {:?}",
        r.as_ref().err()
    );
    assert!(
        took <= bound,
        "try_campaign took {took:?} on a stalled server"
    );
    let started = Instant::now();
    let r = e.leader();
    assert!(r.is_err(), "leader() on a stalled server");
    assert!(
        started.elapsed() <= bound,
        "leader() took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let step = next_step(&mut o, Duration::from_millis(500));
    let took = started.elapsed();
    println!("the observer on a stalled server: {step:?} after {took:?}");
    assert!(took <= bound, "the observer's wait took {took:?}");
    proxy.heal();
    // Healed: it works again.
    let l = e
        .try_campaign_for("s", HANG)
        .unwrap_or_else(|err| panic!("after the heal: {err}"));
    assert_leads(&e.leader().unwrap(), "s", "s", l.term(), "after the heal");
}

// ---------------------------------------------------------------------------------------
// Deployments.
// ---------------------------------------------------------------------------------------

/// The life of an election through two pools (two processes): observer, campaign,
/// `WouldBlock`, proclaim, a waiter woken by the resign.
fn life_cycle(pool_a: Pool, pool_b: Pool, name: &str) {
    let a = RedisElection::builder(pool_a, name)
        .owner_id("a")
        .expire(Duration::from_secs(5))
        .build()
        .unwrap();
    let b = RedisElection::builder(pool_b.clone(), name)
        .owner_id("b")
        .expire(Duration::from_secs(5))
        .build()
        .unwrap();
    let watch = Watch::start(pool_b.clone(), name);
    assert!(watch.next(HANG, "first").1.is_none());
    let la = a.campaign("a-1").unwrap();
    let t1 = la.term();
    assert_leads(&watch.next(HANG, "campaign").1, "a", "a-1", t1, "campaign");
    assert!(matches!(b.try_campaign("b"), Err(TryLockError::WouldBlock)));
    assert_leads(&b.leader().unwrap(), "a", "a-1", t1, "b's view");
    la.proclaim("a-2").unwrap();
    assert_leads(&watch.next(HANG, "proclaim").1, "a", "a-2", t1, "proclaim");
    la.resign().unwrap();
    let (_, state) = watch.next(HANG, "resign");
    assert!(state.is_none(), "after the resign: {}", show(&state));
    let lb = b.try_campaign_for("b-1", HANG).unwrap();
    assert!(lb.term() > t1);
    assert_leads(&watch.next(HANG, "b").1, "b", "b-1", lb.term(), "b");
    drop(lb);
    assert!(watch.next(HANG, "drop").1.is_none());
    watch.stop();
}

/// Names of every shape (a hash tag's braces, colons, spaces, non-ASCII, the longest
/// allowed) work, each election apart from the others; a name past the longest is an
/// error, not a panic. Every name is tried; the failures are listed together.
fn odd_names(pool: &Pool) {
    let longest = "n".repeat(redis_mutex::MAX_NAME_LEN);
    let names = [
        "{tag}",
        "a{b}c",
        "}{",
        "{}",
        "x:y:z",
        "with space",
        "ünï-cödé",
        longest.as_str(),
    ];
    let mut failures = Vec::new();
    for n in names {
        let tried = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
            let owner = format!("owner of {n}");
            let value = format!("value of {n}");
            let e = RedisElection::builder(pool.clone(), n)
                .owner_id(owner.as_str())
                .build()
                .map_err(|e| format!("build: {e}"))?;
            let mut o = e.observe().map_err(|e| format!("observe: {e}"))?;
            let first = next_change(&mut o, HANG, n);
            if first.is_some() {
                return Err(format!("first item {}", show(&first)));
            }
            let l = e
                .try_campaign(value.as_str())
                .map_err(|e| format!("try_campaign: {e}"))?;
            assert_leads(
                &e.leader().map_err(|e| e.to_string())?,
                &owner,
                &value,
                l.term(),
                n,
            );
            let seen = next_change(&mut o, HANG, n);
            assert_leads(&seen, &owner, &value, l.term(), n);
            l.resign().map_err(|e| format!("resign: {e}"))?;
            Ok(())
        }));
        match tried {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{:?}: {e}", truncate(n))),
            Err(_) => failures.push(format!("{:?}: panicked", truncate(n))),
        }
    }
    let too_long = "n".repeat(redis_mutex::MAX_NAME_LEN + 1);
    let built = catch_unwind(AssertUnwindSafe(|| {
        RedisElection::builder(pool.clone(), too_long.as_str()).build()
    }));
    match built {
        Err(_) => failures.push("a name past MAX_NAME_LEN panicked".to_owned()),
        // Accepted: then it must work.
        Ok(Ok(e)) => match e.try_campaign("v") {
            Ok(l) => l.resign().unwrap(),
            Err(err) => failures.push(format!("a name past MAX_NAME_LEN built, then: {err}")),
        },
        Ok(Err(_)) => {}
    }
    assert!(failures.is_empty(), "names that do not work: {failures:#?}");
}

fn truncate(name: &str) -> String {
    name.chars().take(20).collect()
}

#[test]
fn names_of_every_shape() {
    let server = RedisServer::start();
    odd_names(&server.pool());
}

#[test]
fn names_of_every_shape_on_a_cluster() {
    let cluster = Cluster::start(3);
    odd_names(&cluster.pool());
}

#[test]
fn an_election_on_a_cluster() {
    let cluster = Cluster::start(3);
    life_cycle(cluster.pool(), cluster.pool(), "clustered");
    // No key of it is python-redis-lock's, on any primary.
    let e = RedisElection::new(cluster.pool(), "clustered-keys").unwrap();
    let l = e.campaign("v").unwrap();
    for node in &cluster.nodes {
        let mut conn = node.connection();
        let keys = all_keys(&mut conn);
        assert!(
            keys.iter().all(|k| !k.starts_with("lock:")),
            "node {}: {keys:?}",
            node.port()
        );
    }
    l.resign().unwrap();
}

#[test]
fn an_election_behind_sentinel() {
    let sentinels = Sentinels::start();
    life_cycle(sentinels.pool(), sentinels.pool(), "sentinelled");
    // With a replica to acknowledge, `wait_replicas` lets the campaign through.
    let e = RedisElection::builder(sentinels.pool(), "replicated")
        .wait_replicas(1, Duration::from_secs(5))
        .build()
        .unwrap();
    let l = e.campaign("v").unwrap();
    l.ensure_held().unwrap();
    l.resign().unwrap();
}

// ---------------------------------------------------------------------------------------
// Across processes, with a nemesis.
// ---------------------------------------------------------------------------------------

/// How many times each thread of [`child_campaigns_with_history`] campaigns.
const ROUNDS: usize = 12;

/// Child side of [`leaders_across_processes_never_overlap_under_pauses`]: threads that
/// outnumber the pool's connections, each campaigning with an object of its own per round,
/// logging every grant (the term as its token) and every moment it was told it leads
/// (`ensure_held`, `proclaim` and `resign` returning `Ok`).
#[test]
#[ignore = "run as a child process by leaders_across_processes_never_overlap_under_pauses"]
fn child_campaigns_with_history() {
    use crate::support::history::{Claim, Log, now};
    let url = child_env("REDIS_URL");
    let seed: u64 = child_env("SEED").parse().unwrap();
    let fair = child_env("FAIR") == "true";
    let log = Log::open(std::path::Path::new(&child_env("LOG")));
    let pool = Pool::builder().max_size(2).build(&url).unwrap();
    let pid = std::process::id();
    let bound = Some(Duration::from_secs(3));
    let threads: Vec<_> = (0..5u64)
        .map(|t| {
            let (pool, log) = (pool.clone(), log.clone());
            spawn(&format!("campaigner-{t}"), move || {
                let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(pid) << 8) ^ t);
                for r in 0..ROUNDS {
                    let owner = format!("w{pid}-t{t}-r{r}");
                    let election = RedisElection::builder(pool.clone(), "contested")
                        .owner_id(owner.as_str())
                        .expire(Duration::from_millis(rng.random_range(400..1500)))
                        .fair(fair)
                        .build()
                        .unwrap();
                    let (asked, got) = log.call("campaign", None, || {
                        election.try_campaign_for(format!("{owner}-0"), HANG * 4)
                    });
                    let leadership = got.unwrap_or_else(|e| panic!("{owner}: {e}"));
                    log.grant(
                        &owner,
                        "contested",
                        (&Claim::Exclusive, leadership.term()),
                        &owner,
                        asked,
                    );
                    let mut lost = false;
                    for step in 0..rng.random_range(1..4) {
                        thread::sleep(Duration::from_millis(rng.random_range(0..15)));
                        let (asked, held) =
                            log.call("ensure_held", bound, || leadership.ensure_held());
                        if held.is_err() {
                            lost = true;
                            break;
                        }
                        log.held(&owner, asked);
                        let (asked, said) = log.call("proclaim", bound, || {
                            leadership.proclaim(format!("{owner}-{}", step + 1))
                        });
                        if said.is_err() {
                            lost = true;
                            break;
                        }
                        log.held(&owner, asked);
                    }
                    let (asked, resigned) = log.call("resign", bound, || leadership.resign());
                    if resigned.is_ok() && !lost {
                        log.held(&owner, asked);
                    }
                    if lost {
                        println!("@lost {owner}");
                    }
                    let _ = now();
                }
            })
        })
        .collect();
    for t in threads {
        t.join(HANG * 6);
    }
}

/// Three processes of five threads on pools of two connections campaign for one election
/// while a nemesis pauses a random process (SIGSTOP) for a random time, often past the
/// leases. The history of every grant and every moment a leader was told it leads has no
/// two leaders at once, and terms that rise; every call returns within its bound.
#[test]
fn leaders_across_processes_never_overlap_under_pauses() {
    use crate::support::history::{self, Pause, now};
    let seed = seed("across_processes");
    let mut rng = StdRng::seed_from_u64(seed);
    let fair = rng.random_bool(0.5);
    println!("fair: {fair}");
    let server = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("redis-mutex-election-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let logs: Vec<_> = (0..3)
        .map(|i| dir.join(format!("history-{i}.log")))
        .collect();
    let mut children: Vec<_> = logs
        .iter()
        .map(|log| {
            std::fs::remove_file(log).ok();
            spawn_child(
                module_path!(),
                "child_campaigns_with_history",
                &[
                    ("REDIS_URL", server.url()),
                    ("SEED", seed.to_string()),
                    ("FAIR", fair.to_string()),
                    ("LOG", log.to_string_lossy().into_owned()),
                ],
            )
        })
        .collect();
    let mut pauses = Vec::new();
    let deadline = Instant::now() + HANG * 6;
    while Instant::now() < deadline {
        let running: Vec<usize> = (0..children.len())
            .filter(|&i| children[i].child.try_wait().unwrap().is_none())
            .collect();
        if running.is_empty() {
            break;
        }
        // The nemesis's schedule: random gaps and pause lengths, not a wait for an event.
        thread::sleep(Duration::from_millis(rng.random_range(50..400)));
        let victim = running[rng.random_range(0..running.len())];
        let pid = children[victim].id();
        let length = Duration::from_millis(rng.random_range(200..2500));
        let from = now();
        signal(pid, "STOP");
        thread::sleep(length);
        signal(pid, "CONT");
        pauses.push(Pause {
            pid,
            from,
            to: now(),
        });
    }
    println!("{} pauses", pauses.len());
    let mut lost = 0;
    for child in children.drain(..) {
        let out = child.finish(HANG * 6);
        lost += out.matches("@lost ").count();
    }
    let checked = history::check(&logs, &pauses);
    println!("{}; {lost} leaders found they lost", checked.summary());
    assert_eq!(checked.grants, 3 * 5 * ROUNDS, "grants logged");
    checked.assert_clean(seed);
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------------------------------
// More of the world.
// ---------------------------------------------------------------------------------------

/// A live leader keeps the role far past its expiry (its lease is renewed), though six
/// candidates and an observer share its pool of two connections: it is never lost, and the
/// candidates time out with `WouldBlock`, not an error.
#[test]
fn a_live_leader_keeps_the_role_on_a_crowded_pool() {
    let server = RedisServer::start();
    let pool = server.pool_with(Pool::builder().max_size(2));
    let name = "kept";
    let expire = Duration::from_millis(600);
    let leader = RedisElection::builder(pool.clone(), name)
        .owner_id("leader")
        .expire(expire)
        .build()
        .unwrap();
    let l = leader.campaign("leader").unwrap();
    let term = l.term();
    let watch = Watch::start(pool.clone(), name);
    let (_, first) = watch.next(HANG, "first");
    assert_leads(&first, "leader", "leader", term, "first");
    let candidates: Vec<_> = (0..6)
        .map(|i| {
            let pool = pool.clone();
            spawn(&format!("candidate-{i}"), move || {
                let e = RedisElection::builder(pool, name)
                    .owner_id(format!("c{i}"))
                    .expire(expire)
                    .build()
                    .unwrap();
                e.try_campaign_for("c", Duration::from_secs(3))
                    .map(|l| l.term())
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    let anyone = RedisElection::new(server.pool(), name).unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    // A check every 50 ms for five leases: the leader is never lost.
    while Instant::now() < until {
        assert!(!l.is_lost(), "a live leader lost the role");
        l.ensure_held()
            .unwrap_or_else(|e| panic!("a live leader: ensure_held: {e}"));
        assert_leads(
            &anyone.leader().unwrap(),
            "leader",
            "leader",
            term,
            "meanwhile",
        );
        thread::sleep(Duration::from_millis(50));
    }
    for (i, c) in candidates.into_iter().enumerate() {
        let r = c.join(HANG);
        assert_eq!(
            r,
            Err(TryLockError::WouldBlock.to_string()),
            "candidate {i} while the leader lived"
        );
    }
    assert!(l.valid_for().validity().is_some_and(|v| v > Duration::ZERO));
    l.proclaim("still here").unwrap();
    assert_leads(
        &watch.next(HANG, "proclaim").1,
        "leader",
        "still here",
        term,
        "proclaim",
    );
    l.resign().unwrap();
    assert!(watch.next(HANG, "resign").1.is_none());
    watch.stop();
}

/// The object that leads, or another with the same owner id, is refused while it leads:
/// one owner id is not two leaders.
#[test]
fn a_leader_does_not_lead_twice() {
    let server = RedisServer::start();
    let e = RedisElection::builder(server.pool(), "once")
        .owner_id("same")
        .build()
        .unwrap();
    let twin = RedisElection::builder(server.pool(), "once")
        .owner_id("same")
        .build()
        .unwrap();
    let l = e.campaign("first").unwrap();
    let again = e.try_campaign("second");
    assert!(
        matches!(again, Err(TryLockError::WouldBlock)),
        "the leading object campaigned again: {:?}",
        again.as_ref().map(|l| l.term())
    );
    drop(again);
    let twin_try = twin.try_campaign_for("twin", Duration::from_millis(200));
    assert!(
        matches!(twin_try, Err(TryLockError::WouldBlock)),
        "an object with the leader's owner id was elected too: {:?}",
        twin_try.as_ref().map(|l| l.term())
    );
    drop(twin_try);
    // The refused attempts took nothing from the leader.
    l.ensure_held().unwrap();
    assert_leads(
        &e.leader().unwrap(),
        "same",
        "first",
        l.term(),
        "after the attempts",
    );
    l.resign().unwrap();
}

/// An observer across a server restart without persistence: it may report errors while
/// the server is down, but goes on, and the terms it reports never go back. The leader
/// from before the restart finds out it lost the role within its lease (a restart without
/// persistence is a documented limit: until then it may still believe it leads).
#[test]
fn an_observer_goes_on_across_a_restart_and_its_terms_never_go_back() {
    let mut server = RedisServer::start();
    let name = "restarted";
    let watch = Watch::start(server.pool(), name);
    assert!(watch.next(HANG, "first").1.is_none());
    let expire = Duration::from_secs(3);
    let a = RedisElection::builder(server.pool(), name)
        .owner_id("a")
        .expire(expire)
        .build()
        .unwrap();
    let la = a.campaign("a").unwrap();
    let t1 = la.term();
    assert_leads(&watch.next(HANG, "a").1, "a", "a", t1, "a");
    server.restart();
    let restarted = Instant::now();
    let b = RedisElection::builder(server.pool(), name)
        .owner_id("b")
        .build()
        .unwrap();
    let lb = b
        .try_campaign_for("b", HANG)
        .unwrap_or_else(|e| panic!("after the restart: {e}"));
    let t2 = lb.term();
    assert!(t2 > t1, "term {t2} after a restart, {t1} before");
    assert!(
        eventually(HANG, || la.is_lost()),
        "a never found out it lost the role in the restart"
    );
    let found = restarted.elapsed();
    println!("a found out {found:?} after the restart");
    assert!(
        found <= expire + PROMPT,
        "a believed it led {found:?} after the restart, with a {expire:?} lease"
    );
    assert!(la.ensure_held().is_err());
    let mut seen = Vec::new();
    let reached = eventually(HANG, || {
        for (_, item) in watch.drain(Duration::from_millis(50)) {
            seen.push(item);
        }
        matches!(seen.last(), Some(Ok(Some(l))) if l.owner_id == "b")
    });
    assert!(
        reached,
        "the observer never reported b after the restart: {seen:#?}"
    );
    let mut last = t1;
    for item in seen.iter().filter_map(|i| i.as_ref().ok()).flatten() {
        assert!(
            item.term >= last,
            "the observer's terms went back: {seen:#?}"
        );
        last = item.term;
    }
    drop(la);
    lb.resign().unwrap();
    watch.stop();
}

/// Proclaims in quick succession: the observer sees them in order, each at most once,
/// ending with the last; `try_campaign_for` with no time at all is `try_campaign`.
#[test]
fn quick_proclaims_reach_an_observer_in_order() {
    let server = RedisServer::start();
    let name = "quick";
    let e = RedisElection::builder(server.pool(), name)
        .owner_id("q")
        .build()
        .unwrap();
    let other = RedisElection::new(server.pool(), name).unwrap();
    let mut observer = other.observe().unwrap();
    assert!(next_change(&mut observer, HANG, "first").is_none());
    let l = e.try_campaign_for("v0", Duration::ZERO).unwrap();
    assert!(matches!(
        other.try_campaign_for("x", Duration::ZERO),
        Err(TryLockError::WouldBlock)
    ));
    for i in 1..=30 {
        l.proclaim(format!("v{i}")).unwrap();
    }
    let mut seen = Vec::new();
    loop {
        let state = next_change(&mut observer, HANG, "the proclaims");
        let state = state.expect("a leader");
        assert_eq!(state.term, l.term());
        let n: usize = state.value[1..].parse().unwrap();
        seen.push(n);
        if n == 30 {
            break;
        }
    }
    println!("the observer saw {} of 31 values: {seen:?}", seen.len());
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "values out of order or repeated: {seen:?}"
    );
    let extra = next_step(&mut observer, Duration::from_millis(300));
    assert!(
        matches!(extra, Step::Quiet),
        "after the last value: {extra:?}"
    );
    l.resign().unwrap();
}

/// A Sentinel failover under a leader: the leader either keeps the role on the new
/// primary or finds out it lost it; terms after it are above every term before; an
/// observer goes on and reports the next leader.
#[test]
fn an_election_across_a_sentinel_failover() {
    let sentinels = Sentinels::start();
    let name = "failed-over";
    let watch = Watch::start(sentinels.pool(), name);
    assert!(watch.next(HANG, "first").1.is_none());
    let a = RedisElection::builder(sentinels.pool(), name)
        .owner_id("a")
        .expire(Duration::from_secs(2))
        .build()
        .unwrap();
    let la = a.campaign("a").unwrap();
    let t1 = la.term();
    assert_leads(&watch.next(HANG, "a").1, "a", "a", t1, "a");
    sentinels.failover();
    // Either still a's (replicated) or lost, and a knows which within a lease or so.
    let settled = eventually(HANG, || {
        la.is_lost() || matches!(a.leader(), Ok(Some(ref l)) if l.owner_id == "a" && l.term == t1)
    });
    assert!(settled, "after the failover, neither a's nor lost");
    let kept = !la.is_lost();
    println!(
        "after the failover a {}",
        if kept { "still leads" } else { "lost the role" }
    );
    if kept {
        la.proclaim("a after").unwrap();
        la.resign().unwrap();
    } else {
        drop(la);
    }
    let b = RedisElection::builder(sentinels.pool(), name)
        .owner_id("b")
        .build()
        .unwrap();
    let lb = b
        .try_campaign_for("b", HANG)
        .unwrap_or_else(|e| panic!("b after the failover: {e}"));
    assert!(
        lb.term() > t1,
        "term {} after the failover, {t1} before",
        lb.term()
    );
    let mut seen = Vec::new();
    let reached = eventually(HANG, || {
        for (_, item) in watch.drain(Duration::from_millis(50)) {
            seen.push(item);
        }
        matches!(seen.last(), Some(Ok(Some(l))) if l.owner_id == "b")
    });
    assert!(
        reached,
        "the observer never reported b after the failover: {seen:#?}"
    );
    let mut last = t1;
    for item in seen.iter().filter_map(|i| i.as_ref().ok()).flatten() {
        assert!(
            item.term >= last,
            "the observer's terms went back: {seen:#?}"
        );
        last = item.term;
    }
    lb.resign().unwrap();
    watch.stop();
}

// ---------------------------------------------------------------------------------------
// A network that misbehaves.
// ---------------------------------------------------------------------------------------

/// A leader cut off (the network stalls) right after it was elected, over a slow link, is
/// told by `valid_for` no more than its lease as the server counts it: the next leader is
/// elected only after that validity ends. Once the link heals, the old leader's late
/// renewals and resign take nothing from the new one.
#[test]
fn a_partitioned_leaders_validity_ends_before_the_next_leader_is_elected() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let name = "partitioned";
    let expire = Duration::from_millis(1500);
    let rt = Duration::from_secs(5);
    let far = RedisElection::builder(proxy.pool_with(Pool::builder().response_timeout(rt)), name)
        .owner_id("far")
        .expire(expire)
        .response_timeout(rt)
        .build()
        .unwrap();
    // The script cache and the connection, warm.
    let warm = far.campaign("warm").unwrap();
    let t0 = warm.term();
    warm.resign().unwrap();
    proxy.set_latency(Duration::from_millis(300));
    let l = far.campaign("far").unwrap();
    let returned = Instant::now();
    let valid = l.valid_for().validity().expect("a lease");
    let told_until = returned + valid;
    proxy.stall();
    assert!(
        valid <= expire,
        "valid_for {valid:?} with a {expire:?} lease"
    );
    let near = RedisElection::builder(server.pool(), name)
        .owner_id("near")
        .build()
        .unwrap();
    let ln = near
        .try_campaign_for("near", HANG)
        .unwrap_or_else(|e| panic!("near: {e}"));
    let elected = Instant::now();
    println!(
        "the partitioned leader was told {valid:?}; the next was elected {:?} after that ended",
        elected.saturating_duration_since(told_until)
    );
    assert!(
        elected >= told_until,
        "elected {:?} before the partitioned leader's validity ended",
        told_until - elected
    );
    assert!(ln.term() > l.term() && l.term() > t0);
    assert!(
        eventually(HANG, || l.is_lost()),
        "the partitioned leader never found out"
    );
    proxy.heal();
    assert!(l.ensure_held().is_err());
    assert!(l.proclaim("far, late").is_err());
    drop(l);
    assert_leads(
        &near.leader().unwrap(),
        "near",
        "near",
        ln.term(),
        "after the partitioned leader's late calls",
    );
    ln.ensure_held().unwrap();
    ln.resign().unwrap();
}

/// A resign whose reply is lost (the connection closes after the request ran) still frees
/// the role at once: the next candidate is elected within a round trip, not at the end of
/// the lease.
#[test]
fn a_resign_whose_reply_is_lost_still_frees_the_role() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let name = "cut-resign";
    let e = RedisElection::builder(proxy.pool(), name)
        .owner_id("r")
        .expire(Duration::from_secs(10))
        .build()
        .unwrap();
    e.campaign("warm").unwrap().resign().unwrap();
    let l = e.campaign("r").unwrap();
    proxy.cut_before_next_reply();
    let resigned = l.resign();
    let done = Instant::now();
    println!("a resign whose reply was lost: {resigned:?}");
    let other = RedisElection::builder(server.pool(), name)
        .owner_id("o")
        .build()
        .unwrap();
    let lo = other
        .try_campaign_for("o", HANG)
        .unwrap_or_else(|err| panic!("after the resign: {err}"));
    let late = done.elapsed();
    assert!(
        late <= PROMPT,
        "elected {late:?} after a resign whose reply was lost: the role stayed taken"
    );
    lo.resign().unwrap();
}

/// A campaign whose reply is lost (the request ran, the connection closed): the candidate
/// either leads, knowing it, or fails and leaves nobody leading (the grant undone), rather
/// than a leader that nobody is for a whole lease.
#[test]
fn a_campaign_whose_reply_is_lost_leaves_no_leader_behind() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    for (k, how) in ["try_campaign", "try_campaign_for", "campaign"]
        .iter()
        .enumerate()
    {
        let name = format!("cut-campaign-{k}");
        let e = RedisElection::builder(proxy.pool(), name.as_str())
            .owner_id("c")
            .expire(Duration::from_secs(15))
            .build()
            .unwrap();
        e.campaign("warm").unwrap().resign().unwrap();
        proxy.cut_before_next_reply();
        let started = Instant::now();
        let result = match *how {
            "try_campaign" => e.try_campaign("c").map_err(|e| e.to_string()),
            "try_campaign_for" => e
                .try_campaign_for("c", Duration::from_secs(3))
                .map_err(|e| e.to_string()),
            _ => e.campaign("c").map_err(|e| e.to_string()),
        };
        let took = started.elapsed();
        println!(
            "{how} whose reply was lost: {:?} after {took:?}",
            result.as_ref().map(|l| l.term())
        );
        assert!(took < Duration::from_secs(10), "{how} took {took:?}");
        let observer = RedisElection::new(server.pool(), name.as_str()).unwrap();
        match result {
            Ok(l) => {
                assert_leads(&observer.leader().unwrap(), "c", "c", l.term(), how);
                l.resign().unwrap();
                assert!(
                    observer.leader().unwrap().is_none(),
                    "{how}: after the resign"
                );
            }
            Err(err) => {
                let freed = eventually(Duration::from_secs(2), || {
                    observer.leader().unwrap().is_none()
                });
                assert!(
                    freed,
                    "{how} failed ({err}) and left {} for its lease",
                    show(&observer.leader().unwrap())
                );
            }
        }
        let l = observer
            .try_campaign_for("next", Duration::from_secs(2))
            .unwrap_or_else(|err| panic!("{how}: the next candidate: {err}"));
        l.resign().unwrap();
    }
}

/// The lease of a fair candidate killed while queued.
const DEAD_CANDIDATE_LEASE: Duration = Duration::from_secs(3);

/// How many candidates have a place in the fair queue of the election `name` (the fair
/// mutex's waiters hash under the election's keys), live or stale.
fn waiters(conn: &mut redis::Connection, name: &str) -> u64 {
    conn.hlen(format!("election-waiters:{name}")).unwrap_or(0)
}

/// In fair mode, a queued candidate that gives up (`try_campaign_for` runs out) holds
/// nobody up: the next candidate is elected within a round trip of the resign. One killed
/// while queued, whose place is still fresh when the leader resigns, may be handed the role
/// and hold it up for its own lease at most, as a fair mutex's dead waiter does (with a
/// 30 s lease, that is 30 s with `leader()` saying nobody leads); so it is given a short one
/// here, and the next is elected within that lease plus the life of a place in the queue.
#[test]
fn fair_candidates_that_give_up_or_die_hold_nobody_up() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let name = "fair-gone";
    let leader = RedisElection::builder(server.pool(), name)
        .owner_id("leader")
        .expire(Duration::from_secs(30))
        .fair(true)
        .build()
        .unwrap();
    let queue = |i: &str, wait: Duration| {
        let (url, i) = (server.url(), i.to_owned());
        spawn(&format!("candidate-{i}"), move || {
            let e = RedisElection::builder(pool_at(&url), name)
                .owner_id(i.as_str())
                .expire(Duration::from_secs(30))
                .fair(true)
                .build()
                .unwrap();
            e.try_campaign_for(i.as_str(), wait)
                .map(|l| {
                    let at = Instant::now();
                    let term = l.term();
                    l.resign().unwrap();
                    (at, term)
                })
                .map_err(|e| e.to_string())
        })
    };

    // One that gives up.
    let l = leader.campaign("leader").unwrap();
    let before = waiters(&mut conn, name);
    let quitter = queue("quitter", Duration::from_millis(700));
    assert!(
        eventually(HANG, || waiters(&mut conn, name) > before),
        "the quitter never queued"
    );
    let before = waiters(&mut conn, name);
    let next = queue("next", HANG);
    assert!(
        eventually(HANG, || waiters(&mut conn, name) > before),
        "next never queued"
    );
    assert_eq!(
        quitter.join(HANG),
        Err(TryLockError::WouldBlock.to_string())
    );
    l.resign().unwrap();
    let resigned = Instant::now();
    let (at, _) = next.join(HANG).unwrap();
    let late = at.saturating_duration_since(resigned);
    println!("after a candidate gave up, the next was elected {late:?} after the resign");
    assert!(
        late <= PROMPT,
        "elected {late:?} after the resign, behind one that gave up"
    );

    // One that is killed while queued.
    let l = leader.campaign("leader").unwrap();
    let before = waiters(&mut conn, name);
    let mut child = spawn_child(
        module_path!(),
        "child_queues_until_killed",
        &[("REDIS_URL", server.url()), ("ELECTION", name.to_owned())],
    );
    let lines = child.lines();
    lines.expect("@queuing", HANG);
    assert!(
        eventually(HANG, || waiters(&mut conn, name) > before),
        "the child never queued"
    );
    let before = waiters(&mut conn, name);
    let next = queue("after-the-dead", HANG);
    assert!(
        eventually(HANG, || waiters(&mut conn, name) > before),
        "the next never queued"
    );
    let queued = dump(&mut conn);
    child.kill();
    l.resign().unwrap();
    let resigned = Instant::now();
    let mut done = None;
    let elected = eventually(DEAD_CANDIDATE_LEASE + Duration::from_millis(1500), || {
        done = next.try_join();
        done.is_some()
    });
    if !elected {
        let anyone = RedisElection::builder(server.pool(), name)
            .owner_id("anyone")
            .build()
            .unwrap();
        let reported = anyone.leader().unwrap();
        let tried = anyone.try_campaign("anyone").map(|l| l.term());
        let now = dump(&mut conn);
        let took = eventually(HANG * 2, || {
            done = next.try_join();
            done.is_some()
        })
        .then(|| resigned.elapsed());
        panic!(
            "the candidate behind a killed one was not elected within its lease and a queue \
             place's life of the resign \
             (its try_campaign_for returned {took:?} after the resign); then leader() said {} and a \
             try_campaign gave {tried:?}; the database with both queued:\n{queued}and \
             then:\n{now}",
            show(&reported),
        );
    }
    let (at, _) = match done.unwrap() {
        Ok(r) => r.unwrap(),
        Err(p) => std::panic::resume_unwind(p),
    };
    let late = at.saturating_duration_since(resigned);
    println!("after a queued candidate was killed, the next was elected {late:?} after the resign");
    assert!(
        late <= DEAD_CANDIDATE_LEASE + Duration::from_millis(1500),
        "elected {late:?} after the resign, behind a killed candidate"
    );
}

/// Child side of [`fair_candidates_that_give_up_or_die_hold_nobody_up`]: queues in fair
/// mode and waits there until killed.
#[test]
#[ignore = "run as a child process by fair_candidates_that_give_up_or_die_hold_nobody_up"]
fn child_queues_until_killed() {
    let e = RedisElection::builder(pool_at(&child_env("REDIS_URL")), child_env("ELECTION"))
        .owner_id("doomed")
        .expire(DEAD_CANDIDATE_LEASE)
        .fair(true)
        .build()
        .unwrap();
    println!("@queuing");
    let r = e.try_campaign_for("doomed", Duration::from_secs(60));
    println!("@unexpected {:?}", r.map(|l| l.term()));
}

/// The owned form: a term won with `campaign_arc` is `'static`, goes to another thread,
/// proclaims and resigns there; meanwhile nobody else can win, and observers follow.
#[test]
fn an_owned_term_travels_to_another_thread() {
    let server = RedisServer::start();
    let election = Arc::new(
        RedisElection::builder(server.pool(), "owned")
            .owner_id("owner")
            .build()
            .unwrap(),
    );
    let rival = Arc::new(RedisElection::new(server.pool(), "owned").unwrap());
    let mut observer = rival.observe().unwrap();
    assert_eq!(observer.next().unwrap().unwrap(), None);
    let leadership: redis_mutex::ArcLeadership = election.campaign_arc("a").unwrap();
    let term = leadership.term();
    assert!(matches!(
        rival.try_campaign_arc_for("b", Duration::ZERO),
        Err(TryLockError::WouldBlock)
    ));
    let seen = next_change(&mut observer, HANG, "campaign_arc").expect("a leader");
    assert_eq!((seen.term, seen.value.as_str()), (term, "a"));
    let worker = spawn("owned term", move || {
        leadership.proclaim("from another thread").unwrap();
        leadership.resign()
    });
    let seen = next_change(&mut observer, HANG, "proclaim").expect("a leader");
    assert_eq!(
        (seen.term, seen.value.as_str()),
        (term, "from another thread")
    );
    worker.join(HANG).unwrap();
    assert_eq!(next_change(&mut observer, HANG, "resign"), None);
    let next = rival.try_campaign_arc_for("b", HANG).unwrap();
    assert!(next.term() > term);
}

/// Found by a review: a wait with no time left still looks once, as `try_lock` makes one
/// attempt; a caller polling with `next_timeout(ZERO)` sees every change.
#[test]
fn a_zero_timeout_still_looks_once() {
    let server = RedisServer::start();
    let election = RedisElection::builder(server.pool(), "zero")
        .owner_id("leader")
        .build()
        .unwrap();
    let mut observer = election.observe().unwrap();
    assert_eq!(
        observer.next_timeout(Duration::ZERO).unwrap().unwrap(),
        None
    );
    assert!(
        observer.next_timeout(Duration::ZERO).is_none(),
        "no change yet"
    );
    let leadership = election.campaign("v").unwrap();
    let seen = observer
        .next_timeout(Duration::ZERO)
        .expect("the change, at once")
        .unwrap()
        .expect("a leader");
    assert_eq!(
        (seen.term, seen.owner_id.as_str()),
        (leadership.term(), "leader")
    );
    drop(leadership);
    assert_eq!(
        observer
            .next_timeout(Duration::ZERO)
            .expect("the resign")
            .unwrap(),
        None
    );
}

/// Found by a review: a copy of an earlier proclaim of the same term that comes late (held
/// in a proxy, or sent again after a timeout while a later one went through) changes
/// nothing; and a copy of a reset's clear that comes late leaves a later term's value.
#[test]
fn a_late_copy_of_a_proclaim_or_a_clear_changes_nothing() {
    let server = RedisServer::start();
    let mut conn = server.connection();
    let election = RedisElection::builder(server.pool(), "late")
        .owner_id("leader")
        .build()
        .unwrap();
    let leadership = election.campaign("v1").unwrap();
    let term = leadership.term();
    leadership.proclaim("v2").unwrap();
    leadership.proclaim("v3").unwrap();
    let proclaim = crate::support::script("election/proclaim.lua");
    let send = |conn: &mut redis::Connection, op: &str, term: u64, value: &str, seq: u64| -> i64 {
        proclaim
            .key("election:late")
            .key("election-grant:late")
            .key("election-value:late")
            .key("election-observers:late")
            .arg(op)
            .arg("leader")
            .arg(term)
            .arg(value)
            .arg("election-observe:late:")
            .arg(30_000)
            .arg(seq)
            .invoke(conn)
            .unwrap()
    };
    // The copy of the second proclaim (number 2 in its term) comes after the third.
    assert_eq!(send(&mut conn, "proclaim", term, "v2", 2), 1);
    let leader = election.leader().unwrap().expect("a leader");
    assert_eq!((leader.term, leader.value.as_str()), (term, "v3"));
    // A reset's clear of this term, then a later term, then the clear's copy.
    assert!(election.reset().unwrap());
    drop(leadership);
    let next = election.campaign("w").unwrap();
    assert!(next.term() > term);
    assert_eq!(send(&mut conn, "clear", term, "", 0), 1);
    let leader = election
        .leader()
        .unwrap()
        .expect("the later term still leads");
    assert_eq!((leader.term, leader.value.as_str()), (next.term(), "w"));
}

/// Found by a review: an observer whose server is away pauses between failed waits (a
/// caller that goes on after an error does not spin), and recovers once it is back.
#[test]
fn an_observer_of_a_server_that_is_away_does_not_spin() {
    let mut server = RedisServer::start();
    let pool = Pool::builder()
        .response_timeout(Duration::from_millis(200))
        .connection_timeout(Duration::from_millis(200))
        .build(&server.url())
        .unwrap();
    let election = RedisElection::new(pool, "away").unwrap();
    let mut observer = election.observe().unwrap();
    assert_eq!(observer.next().unwrap().unwrap(), None);
    server.pause();
    let started = Instant::now();
    let mut errors = 0;
    while started.elapsed() < Duration::from_secs(2) {
        if let Some(Err(_)) = observer.next_timeout(Duration::from_millis(100)) {
            errors += 1;
        }
    }
    server.resume();
    println!("{errors} errors in 2 s while the server was paused");
    assert!(errors < 100, "{errors} errors in 2 s: the observer spins");
    let leader = RedisElection::new(server.pool(), "away").unwrap();
    let leadership = leader.campaign("back").unwrap();
    let seen = next_change(&mut observer, HANG, "after the server came back");
    assert_eq!(seen.map(|l| l.term), Some(leadership.term()));
}

/// A campaign's grant proclaims its value in the same call (the default mode), so observers
/// hear of it at once; when that call's reply is lost, the grant is undone, and so is what
/// observers were told: the last state an observer hands out is what `leader()` says.
#[test]
fn observers_are_not_left_with_a_campaign_whose_reply_was_lost() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    for (k, how) in ["try_campaign", "campaign"].iter().enumerate() {
        let name = format!("lost-campaign-{k}");
        let candidate = RedisElection::builder(proxy.pool(), name.as_str())
            .owner_id("c")
            .expire(Duration::from_secs(15))
            .build()
            .unwrap();
        candidate.campaign("warm").unwrap().resign().unwrap();
        let follower = RedisElection::new(server.pool(), name.as_str()).unwrap();
        let mut observer = follower.observe().unwrap();
        assert_eq!(observer.next().unwrap().unwrap(), None);
        proxy.cut_before_next_reply();
        let result = match *how {
            "try_campaign" => candidate.try_campaign("c").map_err(|e| e.to_string()),
            _ => candidate.campaign("c").map_err(|e| e.to_string()),
        };
        let mut last = None;
        while let Some(change) = observer.next_timeout(Duration::from_millis(500)) {
            last = change.unwrap();
        }
        let truth = follower.leader().unwrap();
        println!(
            "{how} whose reply was lost: {:?}; the observer's last state: {}; leader(): {}",
            result.as_ref().map(|l| l.term()),
            show(&last),
            show(&truth)
        );
        assert_eq!(
            last.map(|l| (l.owner_id, l.term)),
            truth.map(|l| (l.owner_id, l.term)),
            "{how}: the observer was left with another state than the election's"
        );
        drop(result);
    }
}
