//! The pool's recovery connections. While the pool's last connection attempt has failed, a
//! caller makes a connection on its own thread; that connection counts against `max_size`,
//! and connecting is inside the caller's bound (docs/reliability.md, "The bound of a call":
//! "waiting for a pooled connection and connecting a new one are inside that bound"), not
//! bounded by the connect timeout alone.
//!
//! The outage here makes connects hang, as a server behind a dropped route does: the test's
//! gate (a forwarding proxy of its own) cuts every connection, stops accepting, and fills
//! its listen queue, so that the kernel drops every new SYN; healing drains the queue and
//! forwards again. The gate counts the connections open through it at once.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::support::{HANG, RedisServer, spawn};
use redis_mutex::{Pool, RedisMutex, TryLockError};

/// The pool's response timeout.
const RT: Duration = Duration::from_millis(300);

/// The pool's connect timeout: far longer than the calls' waits.
const CONNECT: Duration = Duration::from_secs(2);

/// The pool's size.
const MAX_SIZE: usize = 4;

/// Scheduling slack on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(250);

/// A forwarding proxy to a server whose new connections can be made to hang.
struct Gate {
    port: u16,
    shared: Arc<GateShared>,
    acceptor: Option<JoinHandle<()>>,
    /// Connections that fill the listen queue while the gate is closed.
    fillers: Mutex<Vec<TcpStream>>,
}

struct GateShared {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    closed: bool,
    parked: bool,
    shutdown: bool,
    links: HashMap<u64, (TcpStream, TcpStream)>,
    next_id: u64,
    /// The most connections open through the gate at once.
    peak: usize,
    /// Local ports of the fillers, dropped when the gate accepts them on healing.
    filler_ports: HashSet<u16>,
    pumps: Vec<JoinHandle<()>>,
}

impl Gate {
    fn start(upstream: u16) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        assert_ne!(port, 6379);
        let shared = Arc::new(GateShared {
            state: Mutex::new(GateState::default()),
            changed: Condvar::new(),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::spawn(move || gate_loop(listener, upstream, &shared))
        };
        Gate {
            port,
            shared,
            acceptor: Some(acceptor),
            fillers: Mutex::new(Vec::new()),
        }
    }

    fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn peak(&self) -> usize {
        self.shared.state.lock().unwrap().peak
    }

    /// The outage: every open connection is cut, and new ones hang in `connect`.
    fn close(&self) {
        self.shared.state.lock().unwrap().closed = true;
        // The acceptor may be blocked in `accept`: a connection of our own wakes it, and it
        // parks instead of accepting more.
        let waker = TcpStream::connect_timeout(&self.addr(), HANG);
        let mut state = self.shared.state.lock().unwrap();
        let deadline = Instant::now() + HANG;
        while !state.parked && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            state = self.shared.changed.wait_timeout(state, left).unwrap().0;
        }
        assert!(state.parked, "the gate's acceptor never stopped accepting");
        for (_, (client, server)) in state.links.drain() {
            client.shutdown(Shutdown::Both).ok();
            server.shutdown(Shutdown::Both).ok();
        }
        drop(state);
        drop(waker);
        // Fill the listen queue: once it is full, the kernel drops every SYN, and a
        // `connect` waits for its own timeout.
        let mut fillers = self.fillers.lock().unwrap();
        for _ in 0..2000 {
            match TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)) {
                Ok(filler) => {
                    let port = filler.local_addr().unwrap().port();
                    self.shared.state.lock().unwrap().filler_ports.insert(port);
                    fillers.push(filler);
                }
                Err(_) => return,
            }
        }
        panic!("the gate's listen queue never filled");
    }

    /// The server is back: the fillers go, and the gate forwards again; returns once the
    /// listen queue is drained (a `connect` from then on is accepted at once).
    fn open(&self) {
        self.fillers.lock().unwrap().clear();
        let mut state = self.shared.state.lock().unwrap();
        state.closed = false;
        self.shared.changed.notify_all();
        let deadline = Instant::now() + HANG;
        while !state.filler_ports.is_empty() && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            state = self.shared.changed.wait_timeout(state, left).unwrap().0;
        }
        assert!(
            state.filler_ports.is_empty(),
            "the gate's listen queue never drained"
        );
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock().unwrap();
        state.shutdown = true;
        state.closed = false;
        for (_, (client, server)) in state.links.drain() {
            client.shutdown(Shutdown::Both).ok();
            server.shutdown(Shutdown::Both).ok();
        }
        drop(state);
        self.shared.changed.notify_all();
        self.fillers.lock().unwrap().clear();
        TcpStream::connect_timeout(&self.addr(), HANG).ok();
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.join().ok();
        }
        let pumps = std::mem::take(&mut self.shared.state.lock().unwrap().pumps);
        for pump in pumps {
            pump.join().ok();
        }
    }
}

fn gate_loop(listener: TcpListener, upstream: u16, shared: &Arc<GateShared>) {
    loop {
        {
            let mut state = shared.state.lock().unwrap();
            while state.closed && !state.shutdown {
                state.parked = true;
                shared.changed.notify_all();
                state = shared.changed.wait(state).unwrap();
            }
            state.parked = false;
            if state.shutdown {
                return;
            }
        }
        let Ok((client, peer)) = listener.accept() else {
            continue;
        };
        let mut state = shared.state.lock().unwrap();
        if state.shutdown {
            return;
        }
        if state.filler_ports.remove(&peer.port()) {
            shared.changed.notify_all();
            continue; // a filler: dropped
        }
        if state.closed {
            continue; // the waker: dropped
        }
        drop(state);
        let upstream: SocketAddr = ([127, 0, 0, 1], upstream).into();
        let Ok(server) = TcpStream::connect_timeout(&upstream, HANG) else {
            continue;
        };
        client.set_nodelay(true).ok();
        server.set_nodelay(true).ok();
        let mut state = shared.state.lock().unwrap();
        let id = state.next_id;
        state.next_id += 1;
        state.links.insert(
            id,
            (client.try_clone().unwrap(), server.try_clone().unwrap()),
        );
        state.peak = state.peak.max(state.links.len());
        for (from, to) in [
            (client.try_clone().unwrap(), server.try_clone().unwrap()),
            (server.try_clone().unwrap(), client.try_clone().unwrap()),
        ] {
            let shared = shared.clone();
            state.pumps.push(thread::spawn(move || {
                forward(&from, &to);
                from.shutdown(Shutdown::Both).ok();
                to.shutdown(Shutdown::Both).ok();
                shared.state.lock().unwrap().links.remove(&id);
            }));
        }
    }
}

fn forward(mut from: &TcpStream, mut to: &TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// The pool of these tests, through `gate`, and a mutex on it that has connected once.
fn pool_through(gate: &Gate) -> (Pool, RedisMutex) {
    let pool = Pool::builder()
        .max_size(MAX_SIZE as u32)
        .connect_timeout(CONNECT)
        .response_timeout(RT)
        .connect_lazy(true)
        .build(&gate.url())
        .unwrap();
    let mutex = RedisMutex::new(pool.clone(), "recovery").unwrap();
    mutex.lock().unwrap().unlock().unwrap();
    (pool, mutex)
}

/// The wait of each call during the outage.
const WAIT: Duration = Duration::from_millis(300);

/// Closes the gate and makes `try_lock_for(WAIT)` calls for longer than twice the connect
/// timeout, so that the pool's own attempts fail and callers connect on their own threads;
/// returns how long each took. None may be granted.
fn outage(gate: &Gate, mutex: &RedisMutex) -> Vec<(Duration, Result<(), TryLockError>)> {
    gate.close();
    let outage = Instant::now();
    let mut calls = Vec::new();
    while outage.elapsed() < CONNECT * 2 + Duration::from_millis(500) && calls.len() < 20 {
        let called = Instant::now();
        let outcome = mutex.try_lock_for(WAIT).map(drop);
        assert!(
            outcome.is_err(),
            "a lock granted through a gate that lets nothing through"
        );
        calls.push((called.elapsed(), outcome));
    }
    calls
}

/// During an outage in which connects hang, every `try_lock_for(300 ms)` returns within its
/// wait plus one response timeout (plus slack), never after the 2 s connect timeout: also
/// once the pool's own attempts have failed and callers connect on their own threads.
#[test]
fn calls_during_an_outage_that_hangs_connects_keep_their_bound() {
    let server = RedisServer::start();
    let gate = Gate::start(server.port());
    let (_pool, mutex) = pool_through(&gate);
    let calls = outage(&gate, &mutex);
    let took: Vec<String> = calls.iter().map(|(t, _)| format!("{t:.0?}")).collect();
    println!("during the outage, each try_lock_for({WAIT:?}) took: {took:?}");
    let bound = WAIT + RT + SLACK;
    for (took, outcome) in &calls {
        assert!(
            *took <= bound,
            "during the outage, a try_lock_for({WAIT:?}) took {took:?}, past its bound of \
             {bound:?} (its wait, one {RT:?} response timeout and {SLACK:?} of slack; the \
             connect timeout is {CONNECT:?}): {outcome:?}"
        );
    }
}

/// When the server comes back after such an outage, eight callers at once (each able to
/// connect on its own thread, the pool's last attempt having failed and its next one a
/// backoff away) never hold more connections to it than the pool's `max_size` of four,
/// each keeps its bound, and all get their locks. (A call made while the server is out
/// fails with `Unreachable` within its bound: `docs/reliability.md`.)
#[test]
fn connections_made_while_recovering_from_an_outage_count_against_max_size() {
    let server = RedisServer::start();
    let gate = Gate::start(server.port());
    let (pool, mutex) = pool_through(&gate);
    outage(&gate, &mutex);
    gate.open();
    let wait = Duration::from_secs(3);
    let callers: Vec<_> = (0..8)
        .map(|i| {
            let mutex = RedisMutex::new(pool.clone(), format!("recovery-{i}")).unwrap();
            spawn("caller", move || {
                let called = Instant::now();
                let outcome = mutex
                    .try_lock_for(wait)
                    .and_then(|g| g.unlock().map_err(TryLockError::Error));
                (called.elapsed(), outcome)
            })
        })
        .collect();
    let outcomes: Vec<(Duration, Result<(), TryLockError>)> =
        callers.into_iter().map(|c| c.join(HANG)).collect();
    let peak = gate.peak();
    println!("after the outage: {outcomes:?}; at most {peak} connections at once");
    assert!(
        peak <= MAX_SIZE,
        "{peak} connections of a pool of max_size {MAX_SIZE} were open to the server at once"
    );
    for (took, outcome) in &outcomes {
        assert!(
            *took <= wait + RT + SLACK,
            "a caller across the recovery took {took:?}, past its {wait:?} wait, one {RT:?} \
             response timeout and {SLACK:?} of slack: {outcome:?}"
        );
    }
    assert!(
        outcomes.iter().all(|(_, outcome)| outcome.is_ok()),
        "a caller did not get its lock once the server was back: {outcomes:?}"
    );
}
