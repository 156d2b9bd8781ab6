//! A fault-injecting TCP proxy between the clients and a `redis-server`, on loopback only.
//!
//! Tests point their pools at [`FaultProxy::url`] and, on command, add latency, stall (take
//! bytes in and forward nothing: a network partition as the sender sees it), cut every open
//! connection, refuse new ones, and heal. Plain std threads: one accepting, two per
//! connection (one per direction). Everything stops when the proxy is dropped.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redis_mutex::{Pool, PoolBuilder};

/// How long the proxy waits for the upstream server to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long [`FaultProxy::stall`] waits for chunks already being written to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP proxy on `127.0.0.1` in front of one upstream port, with faults on command.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled on every change of the fault settings, on a cut, and when a chunk has been
    /// written.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    latency: Duration,
    stalled: bool,
    refusing: bool,
    /// Armed by [`FaultProxy::cut_before_next_reply`]: the next reply from the server
    /// closes its connection instead of being forwarded.
    cut_next_reply: bool,
    shutdown: bool,
    /// Open connections by id.
    links: HashMap<u64, Link>,
    next_id: u64,
    accepted: u64,
    /// Chunks being written right now (outside the lock).
    in_flight: usize,
    /// Chunks taken in and not yet forwarded: held by a stall, or delayed.
    held: usize,
    pumps: Vec<JoinHandle<()>>,
}

struct Link {
    client: TcpStream,
    server: TcpStream,
    cut: Arc<AtomicBool>,
}

impl Link {
    fn close(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.client.shutdown(Shutdown::Both).ok();
        self.server.shutdown(Shutdown::Both).ok();
    }
}

impl FaultProxy {
    /// Starts a healthy proxy on a free loopback port, forwarding to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> FaultProxy {
        let listener = loop_bind();
        let port = listener.local_addr().unwrap().port();
        let upstream: SocketAddr = ([127, 0, 0, 1], upstream).into();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("fault-proxy-{port}"))
                .spawn(move || accept_loop(listener, upstream, shared))
                .expect("start the proxy's accept thread")
        };
        FaultProxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A pool through the proxy with the default settings, built without connecting (so it
    /// can be made while the proxy stalls or refuses).
    pub fn pool(&self) -> Pool {
        self.pool_with(Pool::builder())
    }

    /// A pool through the proxy built by `builder`, without connecting first (the proxy
    /// may be refusing or stalled).
    pub fn pool_with(&self, builder: PoolBuilder) -> Pool {
        builder
            .connect_lazy(true)
            .build(&self.url())
            .expect("a valid URL")
    }

    /// Delays every chunk, in both directions, by `latency` from when the proxy read it.
    pub fn set_latency(&self, latency: Duration) {
        self.update(|s| s.latency = latency);
    }

    /// Stops forwarding in both directions, on open and new connections alike: bytes are
    /// taken in (the kernel buffers them) and held. Returns once no chunk is being written,
    /// so nothing reaches either side after it returns. [`heal`](Self::heal) delivers what
    /// was held, in order, as a network that comes back would.
    pub fn stall(&self) {
        self.update(|s| s.stalled = true);
        let mut state = self.shared.state.lock().unwrap();
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while state.in_flight > 0 && Instant::now() < deadline {
            state = self.wait_until(state, deadline);
        }
    }

    /// Closes every open connection on both sides (the client and the server each see the
    /// other hang up); bytes held by a stall are dropped. New connections are still taken.
    pub fn cut(&self) {
        let mut state = self.shared.state.lock().unwrap();
        for (_, link) in state.links.drain() {
            link.close();
        }
        drop(state);
        self.shared.changed.notify_all();
    }

    /// The next reply the server sends, on any connection, is not forwarded: its connection
    /// is closed on both sides instead (the request ran; the client sees the connection
    /// closed before any reply came). Once.
    pub fn cut_before_next_reply(&self) {
        self.update(|s| s.cut_next_reply = true);
    }

    /// Takes new connections and hangs up on them at once while `refuse` is true.
    pub fn refuse(&self, refuse: bool) {
        self.update(|s| s.refusing = refuse);
    }

    /// Back to a healthy proxy: no latency, no stall, new connections taken.
    pub fn heal(&self) {
        self.update(|s| {
            s.latency = Duration::ZERO;
            s.stalled = false;
            s.refusing = false;
        });
    }

    /// How many connections the proxy has accepted and forwarded (refused ones excluded).
    pub fn accepted(&self) -> u64 {
        self.shared.state.lock().unwrap().accepted
    }

    /// How many chunks the proxy has taken in and not forwarded yet (held by a stall, or
    /// delayed): a request on its way, which the sender is waiting on.
    pub fn held_chunks(&self) -> usize {
        self.shared.state.lock().unwrap().held
    }

    /// How many connections are open through the proxy now.
    pub fn open_connections(&self) -> usize {
        self.shared.state.lock().unwrap().links.len()
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.shared.state.lock().unwrap());
        self.shared.changed.notify_all();
    }

    fn wait_until<'a>(
        &'a self,
        state: MutexGuard<'a, State>,
        deadline: Instant,
    ) -> MutexGuard<'a, State> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.shared.changed.wait_timeout(state, left).unwrap().0
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.update(|s| s.shutdown = true);
        self.cut();
        // Wake the accept thread with a connection of our own; it sees the flag and ends.
        TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), CONNECT_TIMEOUT).ok();
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.join().ok();
        }
        let pumps = std::mem::take(&mut self.shared.state.lock().unwrap().pumps);
        for pump in pumps {
            pump.join().ok();
        }
    }
}

/// A listener on a free loopback port other than 6379.
fn loop_bind() -> TcpListener {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        if listener.local_addr().unwrap().port() != 6379 {
            return listener;
        }
    }
    panic!("the OS kept offering port 6379");
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let mut state = shared.state.lock().unwrap();
        if state.shutdown {
            return;
        }
        if state.refusing {
            drop(state);
            client.shutdown(Shutdown::Both).ok();
            continue;
        }
        drop(state);
        // A server that is down: hang up on the client, as the server would have.
        let Ok(server) = TcpStream::connect_timeout(&upstream, CONNECT_TIMEOUT) else {
            client.shutdown(Shutdown::Both).ok();
            continue;
        };
        client.set_nodelay(true).ok();
        server.set_nodelay(true).ok();
        state = shared.state.lock().unwrap();
        if state.shutdown {
            return;
        }
        // Told to refuse while it was connecting upstream: a `refuse` followed by a `cut`
        // must leave no connection open, this one included.
        if state.refusing {
            drop(state);
            client.shutdown(Shutdown::Both).ok();
            server.shutdown(Shutdown::Both).ok();
            continue;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.accepted += 1;
        let cut = Arc::new(AtomicBool::new(false));
        let link = Link {
            client: client.try_clone().expect("clone a socket"),
            server: server.try_clone().expect("clone a socket"),
            cut: cut.clone(),
        };
        let up = spawn_pump(
            &shared,
            id,
            "up",
            client.try_clone().unwrap(),
            server.try_clone().unwrap(),
            cut.clone(),
        );
        let down = spawn_pump(&shared, id, "down", server, client, cut);
        state.links.insert(id, link);
        // A thread that ended keeps its stack until joined: join those that are done, or a
        // long run of reconnections runs out of memory maps.
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut state.pumps)
            .into_iter()
            .partition(JoinHandle::is_finished);
        state.pumps = running;
        for pump in done {
            pump.join().ok();
        }
        state.pumps.extend(up);
        state.pumps.extend(down);
    }
}

fn spawn_pump(
    shared: &Arc<Shared>,
    id: u64,
    direction: &'static str,
    from: TcpStream,
    to: TcpStream,
    cut: Arc<AtomicBool>,
) -> Option<JoinHandle<()>> {
    let shared = shared.clone();
    thread::Builder::new()
        .name(format!("fault-proxy-{id}-{direction}"))
        .spawn(move || {
            pump(&shared, &from, &to, &cut, direction == "down");
            // Whichever direction ends first ends the connection for both.
            from.shutdown(Shutdown::Both).ok();
            to.shutdown(Shutdown::Both).ok();
            shared.state.lock().unwrap().links.remove(&id);
        })
        .ok()
}

/// Forwards chunks from `from` to `to` until either side closes, the link is cut or the
/// proxy shuts down, honouring latency and stalls.
fn pump(shared: &Shared, mut from: &TcpStream, mut to: &TcpStream, cut: &AtomicBool, down: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let received = Instant::now();
        let mut state = shared.state.lock().unwrap();
        if down && std::mem::take(&mut state.cut_next_reply) {
            cut.store(true, Ordering::SeqCst);
            return;
        }
        state.held += 1;
        loop {
            if state.shutdown || cut.load(Ordering::SeqCst) {
                state.held -= 1;
                return;
            }
            let due = received + state.latency;
            let now = Instant::now();
            if !state.stalled && now >= due {
                break;
            }
            // Until healed, cut or shut down; with latency, until the chunk is due.
            state = if state.stalled {
                shared.changed.wait(state).unwrap()
            } else {
                shared.changed.wait_timeout(state, due - now).unwrap().0
            };
        }
        state.held -= 1;
        state.in_flight += 1;
        drop(state);
        let written = to.write_all(&buf[..n]);
        shared.state.lock().unwrap().in_flight -= 1;
        shared.changed.notify_all();
        if written.is_err() {
            return;
        }
    }
}

/// A TCP proxy on `127.0.0.1` that can hold one request back: armed with
/// [`hold_next_containing`](Self::hold_next_containing), it takes the next chunk with given
/// bytes that a client sends on any connection, forwards nothing of it, and hangs up on that client at once (the client
/// sees its connection closed before any reply), while keeping the connection to the server
/// open. [`deliver_held`](Self::deliver_held) later sends the held bytes to the server on
/// that connection and returns the server's reply: a request's first copy reaching the server
/// late, after whatever the client did meanwhile on other connections. Every other chunk is
/// forwarded at once. Everything stops when the proxy is dropped.
pub struct HoldingProxy {
    port: u16,
    shared: Arc<HoldShared>,
    acceptor: Option<JoinHandle<()>>,
}

struct HoldShared {
    state: Mutex<HoldState>,
    /// Signalled when a request is held and when a held connection's server replies.
    changed: Condvar,
}

#[derive(Default)]
struct HoldState {
    /// Armed: the next chunk that contains these bytes is held.
    hold_next: Option<Vec<u8>>,
    /// The connection whose request is held, until its late copy has been answered.
    held_link: Option<u64>,
    /// The held request: the server side of its connection, and the bytes.
    held: Option<(TcpStream, Vec<u8>)>,
    /// What the server sent on the held connection (its reply to the late copy).
    late_reply: Vec<u8>,
    links: HashMap<u64, Link>,
    next_id: u64,
    accepted: u64,
    shutdown: bool,
    pumps: Vec<JoinHandle<()>>,
}

impl HoldingProxy {
    /// Starts a proxy on a free loopback port, forwarding to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> HoldingProxy {
        let listener = loop_bind();
        let port = listener.local_addr().unwrap().port();
        let upstream: SocketAddr = ([127, 0, 0, 1], upstream).into();
        let shared = Arc::new(HoldShared {
            state: Mutex::new(HoldState::default()),
            changed: Condvar::new(),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("holding-proxy-{port}"))
                .spawn(move || hold_accept_loop(listener, upstream, shared))
                .expect("start the proxy's accept thread")
        };
        HoldingProxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A pool through the proxy built by `builder`, without connecting first.
    pub fn pool_with(&self, builder: PoolBuilder) -> Pool {
        builder
            .connect_lazy(true)
            .build(&self.url())
            .expect("a valid URL")
    }

    /// How many connections the proxy has accepted.
    pub fn accepted(&self) -> u64 {
        self.shared.state.lock().unwrap().accepted
    }

    /// Arms the proxy: the next chunk any client sends that contains `bytes` (`b"EVAL"`:
    /// a script call) is held, and its client hung up on; chunks before it pass.
    pub fn hold_next_containing(&self, bytes: &[u8]) {
        self.shared.state.lock().unwrap().hold_next = Some(bytes.to_vec());
    }

    /// The bytes held, once a request has been held (`None` if none was within `timeout`).
    pub fn held(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.state.lock().unwrap();
        loop {
            if let Some((_, bytes)) = &state.held {
                return Some(bytes.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = self.shared.changed.wait_timeout(state, left).unwrap().0;
        }
    }

    /// Sends the held request to the server on its own connection, waits up to `timeout`
    /// for the server's reply (so the request has run when this returns `Some`), closes
    /// that connection and returns the reply. `None` if nothing was held or no reply came.
    pub fn deliver_held(&self, timeout: Duration) -> Option<Vec<u8>> {
        let (mut server, bytes) = self.shared.state.lock().unwrap().held.take()?;
        let written = server.write_all(&bytes);
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.state.lock().unwrap();
        while written.is_ok() && state.late_reply.is_empty() && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            state = self.shared.changed.wait_timeout(state, left).unwrap().0;
        }
        let reply = std::mem::take(&mut state.late_reply);
        if let Some(link) = state
            .held_link
            .take()
            .and_then(|id| state.links.remove(&id))
        {
            link.close();
        }
        drop(state);
        server.shutdown(Shutdown::Both).ok();
        (written.is_ok() && !reply.is_empty()).then_some(reply)
    }
}

impl Drop for HoldingProxy {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock().unwrap();
        state.shutdown = true;
        for (_, link) in state.links.drain() {
            link.close();
        }
        if let Some((server, _)) = state.held.take() {
            server.shutdown(Shutdown::Both).ok();
        }
        drop(state);
        self.shared.changed.notify_all();
        TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), CONNECT_TIMEOUT).ok();
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.join().ok();
        }
        let pumps = std::mem::take(&mut self.shared.state.lock().unwrap().pumps);
        for pump in pumps {
            pump.join().ok();
        }
    }
}

fn hold_accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<HoldShared>) {
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        if shared.state.lock().unwrap().shutdown {
            return;
        }
        let Ok(server) = TcpStream::connect_timeout(&upstream, CONNECT_TIMEOUT) else {
            client.shutdown(Shutdown::Both).ok();
            continue;
        };
        client.set_nodelay(true).ok();
        server.set_nodelay(true).ok();
        let mut state = shared.state.lock().unwrap();
        if state.shutdown {
            return;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.accepted += 1;
        let link = Link {
            client: client.try_clone().expect("clone a socket"),
            server: server.try_clone().expect("clone a socket"),
            cut: Arc::new(AtomicBool::new(false)),
        };
        state.links.insert(id, link);
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut state.pumps)
            .into_iter()
            .partition(JoinHandle::is_finished);
        state.pumps = running;
        for pump in done {
            pump.join().ok();
        }
        for up in [true, false] {
            let shared = shared.clone();
            let (from, to) = if up {
                (client.try_clone().unwrap(), server.try_clone().unwrap())
            } else {
                (server.try_clone().unwrap(), client.try_clone().unwrap())
            };
            let pump = thread::Builder::new()
                .name(format!("holding-proxy-{id}"))
                .spawn(move || hold_pump(&shared, id, up, &from, &to));
            state.pumps.extend(pump.ok());
        }
    }
}

/// Forwards chunks one way; upstream, holds the first matching chunk after the proxy was
/// armed (and hangs up on its client); downstream, keeps what the server sends on the held connection.
fn hold_pump(shared: &HoldShared, id: u64, up: bool, mut from: &TcpStream, mut to: &TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut state = shared.state.lock().unwrap();
        if state.shutdown {
            break;
        }
        let matches = |pattern: &Vec<u8>| {
            pattern.is_empty() || buf[..n].windows(pattern.len()).any(|w| w == &pattern[..])
        };
        if up && state.hold_next.as_ref().is_some_and(matches) {
            state.hold_next = None;
            // Held: the client sees its connection closed before any reply; the server side
            // stays open for the late delivery.
            state.held_link = Some(id);
            state.held = Some((to.try_clone().expect("clone a socket"), buf[..n].to_vec()));
            drop(state);
            shared.changed.notify_all();
            from.shutdown(Shutdown::Both).ok();
            return;
        }
        if state.held_link == Some(id) {
            if !up {
                state.late_reply.extend_from_slice(&buf[..n]);
                drop(state);
                shared.changed.notify_all();
            }
            continue;
        }
        drop(state);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let mut state = shared.state.lock().unwrap();
    if state.held_link != Some(id) {
        from.shutdown(Shutdown::Both).ok();
        to.shutdown(Shutdown::Both).ok();
        state.links.remove(&id);
    }
}
