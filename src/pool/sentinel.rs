//! Following the primary behind Sentinel: [`Primary`] says which server the sentinels name
//! now, kept up to date by one thread per sentinel, each subscribed to that sentinel's
//! announcements (as Jedis's sentinel pool does, but to every sentinel, not one), and asked
//! again of them after a connection error. A pooled connection to any other server is
//! stale: it is closed, never used for a lock request.
//!
//! The old primary takes writes until it is reconfigured, well after the replica stopped
//! replicating from it; a grant made there in between is lost when it is demoted. So the
//! pool moves to the replica the moment the sentinel that leads the failover tells it to
//! stop replicating (`+failover-state-send-slaveof-noone`), not when the sentinels announce
//! the switch (`+switch-master`, up to a second later): a lock call that cannot reach a
//! primary yet fails, which is better than a grant that is lost. Only the leader announces
//! that step, and any sentinel may lead (a real election picks one among them), hence a
//! listener on each.
//!
//! Announcements carry no epoch, and arrive on several connections: each listener keeps
//! the epoch its sentinel last announced (`+new-epoch`, which a leader announces just
//! before it starts a failover), and a switch is confirmed by asking that sentinel for its
//! configuration and the epoch of it (`SENTINEL MASTER`). The pool never moves to a
//! configuration older than one it has seen, so it never moves back to a primary it left
//! unless a later failover names it. A promotion that the sentinels do not confirm (the
//! failover was aborted, `-failover-abort-*`, or is still not done after the sentinels'
//! own `failover-timeout`) is abandoned for what the sentinels name: the pool is never
//! stranded on a replica that was never promoted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::ConnectionInfo;

use super::health::Failure;
use super::link::{Link, at, connect, connect_checked, is_primary, not_a_primary, server_name};

/// A service monitored by Sentinel.
#[derive(Debug, Clone)]
pub(super) struct SentinelTarget {
    pub(super) sentinels: Vec<ConnectionInfo>,
    pub(super) service: String,
    /// The credentials, database and TLS mode for the primary; its address is Sentinel's.
    pub(super) node: ConnectionInfo,
}

/// How long a listener waits for a message before it looks whether the pool is gone,
/// whether it was asked to ask its sentinel again, and whether a promotion is overdue.
const TICK: Duration = Duration::from_millis(500);

/// The longest pause between two attempts to reach a sentinel that failed.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How long a promotion may go unconfirmed before the sentinels' word is taken instead,
/// until a sentinel says its `failover-timeout`: Sentinel's default.
const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(180);

/// The leader of a failover tells the replica it promotes to stop replicating: writes to
/// the old primary are lost from here on.
const PROMOTING: &str = "+failover-state-send-slaveof-noone";

/// A sentinel announces the new primary, once its configuration has it.
const SWITCHED: &str = "+switch-master";

/// A sentinel's epoch moved on: a failover starts (its leader's), or it voted in one.
const NEW_EPOCH: &str = "+new-epoch";

/// The leader gave a failover up (`-failover-abort-slave-timeout`, ...).
const ABORTED: &str = "-failover-abort-*";

/// A server the sentinels name as primary, and the epoch of the configuration (or of the
/// failover) that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Named {
    host: String,
    port: u16,
    /// `host:port`, as connections name their server.
    server: String,
    epoch: u64,
}

/// A replica that the leader of a failover is promoting.
#[derive(Debug)]
struct Promotion {
    named: Named,
    since: Instant,
    /// The sentinel that announced it (its index in the pool's list): the leader, the only
    /// one whose abort counts.
    leader: usize,
    /// Its leader announced that it gave the failover up.
    aborted: bool,
}

/// What this process knows of the sentinels' choice.
#[derive(Debug, Default)]
struct View {
    /// The primary of the newest configuration a sentinel confirmed.
    confirmed: Option<Named>,
    /// A promotion under way, newer than `confirmed`: the pool follows it at once.
    promoting: Option<Promotion>,
    /// The sentinels' `failover-timeout`, as last told.
    failover_timeout: Option<Duration>,
    /// The server requests go to said it is not a primary: the sentinels' next word is
    /// taken whatever its epoch (their epochs may have started again from 0, say).
    refused: Option<String>,
}

impl View {
    /// Where lock requests go: the replica being promoted, else the confirmed primary.
    fn current(&self) -> Option<&Named> {
        self.promoting
            .as_ref()
            .map(|p| &p.named)
            .or(self.confirmed.as_ref())
    }

    /// How long a promotion may go unconfirmed: the sentinels' own failover timeout.
    fn patience(&self) -> Duration {
        self.failover_timeout.unwrap_or(DEFAULT_FAILOVER_TIMEOUT)
    }

    /// Whether a promotion under way was given up, or is past the sentinels' own timeout:
    /// the sentinels' configuration decides again.
    fn promotion_overdue(&self) -> bool {
        self.promoting
            .as_ref()
            .is_some_and(|p| p.aborted || p.since.elapsed() >= self.patience())
    }
}

/// The primary the sentinels name for a service, as far as this process knows.
#[derive(Debug)]
pub(crate) struct Primary {
    service: String,
    view: Mutex<View>,
    /// Bumped after a connection error: every listener asks its sentinel again.
    doubts: AtomicU64,
}

impl Primary {
    fn new(service: &str) -> Primary {
        Primary {
            service: service.to_owned(),
            view: Mutex::new(View::default()),
            doubts: AtomicU64::new(0),
        }
    }

    /// Whether `server` (a connection's `host:port`) is the primary, as far as is known:
    /// a connection to any other server is stale.
    pub(crate) fn is(&self, server: &str) -> bool {
        self.view
            .lock()
            .current()
            .is_none_or(|n| n.server == server)
    }

    /// The server lock requests go to now, if known.
    fn current(&self) -> Option<Named> {
        self.view.lock().current().cloned()
    }

    /// Has every listener ask its sentinel again, at its next tick.
    pub(crate) fn doubt(&self) {
        self.doubts.fetch_add(1, Ordering::Relaxed);
    }

    /// `server`, which requests go to, said it is not a primary. Of a replica being
    /// promoted, that is to be expected for a moment; of the confirmed primary, it means the
    /// sentinels moved on without the pool hearing of it (their epochs may have started
    /// again from 0): their next word is taken, whatever its epoch.
    fn refused(&self, server: &str) {
        let mut view = self.view.lock();
        if view.promoting.is_none() && view.confirmed.as_ref().is_some_and(|c| c.server == server) {
            view.refused = Some(server.to_owned());
        }
        drop(view);
        self.doubt();
    }

    /// Applies `change` to the view; logs where requests go when that moved.
    fn update(&self, change: impl FnOnce(&mut View)) {
        let mut view = self.view.lock();
        let before = view.current().cloned();
        change(&mut view);
        let after = view.current();
        if before.as_ref().map(|n| &n.server) == after.map(|n| &n.server) {
            return;
        }
        let Some(after) = after else { return };
        let how = if view.promoting.is_some() {
            "is being promoted"
        } else {
            "is the primary"
        };
        match before {
            Some(before) => log::info!(
                "{} {how} of `{}` (epoch {}); connections to {} are closed",
                after.server,
                self.service,
                after.epoch,
                before.server,
            ),
            None => log::debug!(
                "{} {how} of `{}` (epoch {})",
                after.server,
                self.service,
                after.epoch
            ),
        }
    }

    /// A sentinel's configuration names `named` (its epoch the configuration's).
    fn told(&self, named: Named, failover_timeout: Option<Duration>) {
        self.update(|view| {
            view.failover_timeout = failover_timeout.or(view.failover_timeout);
            // The confirmed primary refused to be one: the sentinels know better.
            let refused = view.promoting.is_none()
                && view.confirmed.as_ref().map(|c| &c.server) == view.refused.as_ref();
            if refused
                && view
                    .confirmed
                    .as_ref()
                    .is_some_and(|c| c.server != named.server)
            {
                log::warn!(
                    "{} is not a primary; following the sentinels' word, {} (epoch {})",
                    view.refused.as_deref().unwrap_or_default(),
                    named.server,
                    named.epoch
                );
                view.refused = None;
                view.confirmed = Some(named);
                return;
            }
            if let Some(promotion) = &view.promoting {
                let confirms = named.epoch >= promotion.named.epoch
                    || (named.server == promotion.named.server
                        && view
                            .confirmed
                            .as_ref()
                            .is_none_or(|c| named.epoch > c.epoch));
                if !confirms && !view.promotion_overdue() {
                    // A sentinel that has not heard of the failover yet.
                    return;
                }
                if !confirms {
                    log::warn!(
                        "the promotion of {} to primary of `{}` was not confirmed (the \
                         failover was aborted or took longer than {:?}); following the \
                         sentinels' configuration again",
                        promotion.named.server,
                        self.service,
                        view.patience()
                    );
                }
                view.promoting = None;
            }
            // Of one epoch, one configuration: an answer of the same epoch naming another
            // server does not move the pool back and forth.
            let newer = view.confirmed.as_ref().is_none_or(|c| {
                named.epoch > c.epoch || (named.epoch == c.epoch && named.server == c.server)
            });
            if newer {
                view.confirmed = Some(named);
            }
        });
    }

    /// The leader of a failover (of epoch `named.epoch`), the sentinel `leader`, promotes
    /// `named`.
    fn promoting(&self, named: Named, leader: usize) {
        self.update(|view| {
            let newer = |epoch: u64, server: &str| {
                named.epoch > epoch || (named.epoch == epoch && named.server != server)
            };
            let fresh = view
                .confirmed
                .as_ref()
                .is_none_or(|c| newer(c.epoch, &c.server))
                && view
                    .promoting
                    .as_ref()
                    .is_none_or(|p| newer(p.named.epoch, &p.named.server));
            if fresh {
                view.promoting = Some(Promotion {
                    named,
                    since: Instant::now(),
                    leader,
                    aborted: false,
                });
            }
        });
    }

    /// The sentinel `leader` gave a failover up: the promotion it announced, if any.
    /// (Another sentinel's abort is of a failover it did not get to lead.)
    fn aborted(&self, leader: usize) {
        if let Some(promotion) = &mut self.view.lock().promoting
            && promotion.leader == leader
        {
            promotion.aborted = true;
        }
    }

    fn promotion_overdue(&self) -> bool {
        self.view.lock().promotion_overdue()
    }
}

/// Starts following the primary of `target`'s service: one listener thread per sentinel,
/// each asking its sentinel, then watching it, and ending within a tick once the returned
/// `Primary` is dropped. Until the first answer, no connection is taken for stale.
pub(super) fn follow(
    target: &SentinelTarget,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Arc<Primary> {
    let primary = Arc::new(Primary::new(&target.service));
    let target = Arc::new(target.clone());
    for (index, sentinel) in target.sentinels.iter().enumerate() {
        let listener = Listener {
            index,
            sentinel: sentinel.clone(),
            target: target.clone(),
            primary: Arc::downgrade(&primary),
            connect_timeout,
            response_timeout,
        };
        let spawned = thread::Builder::new()
            .name("redis-mutex-sentinel".into())
            .spawn(move || listener.run());
        if let Err(e) = spawned {
            log::warn!(
                "no thread to watch sentinel {} of `{}` ({e}); a failover it leads is \
                 noticed when the others announce it, or when a connection breaks",
                server_name(sentinel),
                target.service
            );
        }
    }
    primary
}

/// The server an announcement of a promotion names as `service`'s new primary:
/// `slave <ip:port> <ip> <port> @ <service> <ip> <port>`.
fn promoted<'a>(payload: &'a str, service: &str) -> Option<(&'a str, u16)> {
    let parts: Vec<&'a str> = payload.split(' ').collect();
    match &parts[..] {
        ["slave", _, host, port, "@", named, _, _] if *named == service => {
            Some((host, port.parse().ok()?))
        }
        _ => None,
    }
}

/// Whether an announcement is about `service`: `<service> ...` (`+switch-master`),
/// `master <service> <ip> <port>`, or `... @ <service> <ip> <port>`.
fn about(channel: &str, payload: &str, service: &str) -> bool {
    let parts: Vec<&str> = payload.split(' ').collect();
    match &parts[..] {
        [named, ..] if channel == SWITCHED => *named == service,
        ["master", named, ..] => *named == service,
        [.., "@", named, _, _] => *named == service,
        _ => false,
    }
}

/// What `SENTINEL MASTER <service>` says of the configuration: its epoch, and the
/// sentinel's failover timeout.
fn parse_master(fields: &HashMap<String, String>) -> Option<(u64, Option<Duration>)> {
    let epoch = fields.get("config-epoch")?.parse().ok()?;
    let timeout = fields
        .get("failover-timeout")
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis);
    Some((epoch, timeout))
}

/// Listens to one sentinel for as long as the pool lives.
struct Listener {
    /// Its sentinel's place in the pool's list.
    index: usize,
    sentinel: ConnectionInfo,
    target: Arc<SentinelTarget>,
    primary: Weak<Primary>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl Listener {
    fn run(self) {
        let mut backoff = TICK;
        while self.primary.strong_count() > 0 {
            match self.listen() {
                // The pool is gone.
                Ok(()) => return,
                Err((e, listened)) => {
                    log::debug!(
                        "watching sentinel {} for `{}` failed ({e}); trying again",
                        server_name(&self.sentinel),
                        self.target.service
                    );
                    if listened {
                        backoff = TICK;
                    }
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// `host:port` named at `epoch`, with the primary's credentials and TLS mode.
    fn named(&self, host: &str, port: u16, epoch: u64) -> Named {
        let info = at(&self.target.node, host, port);
        Named {
            host: host.to_owned(),
            port,
            server: server_name(&info),
            epoch,
        }
    }

    /// Asks the sentinel (on `query`, a connection of its own) which primary its
    /// configuration names, and tells `primary`. The configuration's epoch, if the
    /// sentinel knows the service. The address comes from `GET-MASTER-ADDR-BY-NAME`, which
    /// names the promoted replica as soon as the configuration's epoch moves to its
    /// failover's (`SENTINEL MASTER` keeps the old address until the switch is announced);
    /// the epoch and the failover timeout from `SENTINEL MASTER`, sent together.
    fn ask(&self, query: &mut Link, primary: &Primary) -> redis::RedisResult<Option<u64>> {
        let service = &self.target.service;
        type Answer = (Option<(String, u16)>, HashMap<String, String>);
        let answer: redis::RedisResult<Answer> = redis::pipe()
            .cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(service)
            .cmd("SENTINEL")
            .arg("MASTER")
            .arg(service)
            .query(&mut query.conn);
        let (address, fields) = match answer {
            Ok(answer) => answer,
            // It does not monitor this service: nothing to learn from it.
            Err(e) if matches!(e.kind(), redis::ErrorKind::Server(_)) => {
                log::debug!(
                    "sentinel {} does not know `{service}`: {e}",
                    server_name(&self.sentinel),
                );
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let (Some((host, port)), Some((epoch, timeout))) = (address, parse_master(&fields)) else {
            return Ok(None);
        };
        primary.told(self.named(&host, port, epoch), timeout);
        Ok(Some(epoch))
    }

    /// Listens until the pool is gone (`Ok`) or the sentinel fails (with whether it was
    /// listened to at all).
    fn listen(&self) -> Result<(), (redis::RedisError, bool)> {
        let connect = || {
            connect(&self.sentinel, self.connect_timeout, self.response_timeout)
                .map_err(|f| (f.into_source(), false))
        };
        let mut query = connect()?;
        let mut link = connect()?;
        let listening = |e| (e, true);
        let mut pubsub = link.conn.as_pubsub();
        pubsub
            .subscribe(&[NEW_EPOCH, PROMOTING, SWITCHED][..])
            .map_err(|e| (e, false))?;
        pubsub.psubscribe(ABORTED).map_err(|e| (e, false))?;
        pubsub
            .set_read_timeout(Some(TICK))
            .map_err(|e| (e, false))?;
        let service = self.target.service.as_str();
        // What changed while nobody listened, asked once subscribed so that nothing falls
        // in between. A failover announced from here on is of a later epoch than this
        // configuration's.
        let mut doubts = self
            .primary
            .upgrade()
            .map(|p| p.doubts.load(Ordering::Relaxed));
        let mut epoch = match self.primary.upgrade() {
            Some(primary) => self.ask(&mut query, &primary).map_err(listening)?,
            None => return Ok(()),
        };
        let mut epoch_announced = false;
        loop {
            let Some(primary) = self.primary.upgrade() else {
                return Ok(());
            };
            let now = Some(primary.doubts.load(Ordering::Relaxed));
            if now != doubts || primary.promotion_overdue() {
                doubts = now;
                self.ask(&mut query, &primary).map_err(listening)?;
            }
            let message = match pubsub.get_message() {
                Ok(message) => message,
                Err(e) if e.is_timeout() => continue,
                Err(e) => return Err((e, true)),
            };
            let payload: String = message.get_payload().map_err(listening)?;
            let channel = message.get_channel_name();
            if channel == NEW_EPOCH {
                if let Ok(announced) = payload.trim().parse::<u64>() {
                    epoch = Some(epoch.map_or(announced, |e| e.max(announced)));
                    epoch_announced = true;
                }
                continue;
            }
            if !about(channel, &payload, service) {
                continue;
            }
            // The failover's epoch: announced by its leader as it started; if that was
            // before we listened, later than the configuration we were told.
            let failover_epoch = match epoch {
                Some(e) if epoch_announced => e,
                Some(e) => e + 1,
                None => 0,
            };
            match channel {
                PROMOTING => {
                    if let Some((host, port)) = promoted(&payload, service) {
                        primary.promoting(self.named(host, port, failover_epoch), self.index);
                    }
                }
                SWITCHED => {
                    self.ask(&mut query, &primary).map_err(listening)?;
                }
                aborted if aborted.starts_with("-failover-abort") => {
                    primary.aborted(self.index);
                    self.ask(&mut query, &primary).map_err(listening)?;
                }
                _ => {}
            }
        }
    }
}

/// Connects to the primary of the service and checks that it is one (Sentinel's view can
/// lag a failover): the server the pool's listeners follow (`primary`), once they know it;
/// until then, the first a sentinel names, asked in turn. Every step is bounded by the
/// timeouts.
pub(super) fn connect_primary(
    target: &SentinelTarget,
    primary: Option<&Primary>,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<Link, Failure> {
    if let Some((primary, named)) = primary.and_then(|p| Some((p, p.current()?))) {
        // Never a server the listeners moved away from, whatever a lagging sentinel says;
        // when this one fails, they ask the sentinels again, and when it is not a primary,
        // they take the sentinels' word whatever its epoch.
        let info = at(&target.node, &named.host, named.port);
        let mut link =
            connect(&info, connect_timeout, response_timeout).inspect_err(|_| primary.doubt())?;
        if is_primary(&mut link).inspect_err(|_| primary.doubt())? {
            return Ok(link);
        }
        primary.refused(&named.server);
        return Err(not_a_primary(&info));
    }
    let mut last = None;
    for sentinel in &target.sentinels {
        let primary = connect(sentinel, connect_timeout, response_timeout)
            .map_err(|f| f.not_redis("sentinels", &server_name(sentinel)))
            .and_then(|mut link| {
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(&target.service)
                    .query::<Option<(String, u16)>>(&mut link.conn)
                    .map_err(|e| not_a_sentinel(e, sentinel))
            });
        let (host, port) = match primary {
            Ok(Some(address)) => address,
            Ok(None) => {
                last = Some(Failure::new(redis::RedisError::from((
                    redis::ErrorKind::MasterNameNotFoundBySentinel,
                    "no primary of that name is known to sentinel",
                    format!("service `{}` at {}", target.service, server_name(sentinel)),
                ))));
                continue;
            }
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        match connect_checked(
            &at(&target.node, &host, port),
            connect_timeout,
            response_timeout,
        ) {
            Ok(link) => return Ok(link),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        Failure::new(redis::RedisError::from((
            redis::ErrorKind::EmptySentinelList,
            "no sentinel given",
        )))
    }))
}

/// A failure of `SENTINEL` at `sentinel`: one line that says so when what answers there is
/// a plain server (`unknown command`), not a Sentinel.
fn not_a_sentinel(e: redis::RedisError, sentinel: &redis::ConnectionInfo) -> Failure {
    if !e.detail().is_some_and(|d| d.contains("unknown command")) {
        return Failure::new(e);
    }
    let server = server_name(sentinel);
    let reason = format!(
        "redis at {server} is not a Sentinel (it does not know `SENTINEL`); give the \
         sentinels' addresses (port 26379 by default), or use `Pool::new(\"redis://{server}/\")` \
         for a server without Sentinel"
    );
    Failure::wrong("sentinels", reason, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(port: u16, epoch: u64) -> Named {
        Named {
            host: "127.0.0.1".into(),
            port,
            server: format!("127.0.0.1:{port}"),
            epoch,
        }
    }

    fn at_port(primary: &Primary) -> Option<u16> {
        primary.current().map(|n| n.port)
    }

    #[test]
    fn announcements_name_the_new_primary() {
        assert_eq!(
            promoted(
                "slave 127.0.0.1:6381 127.0.0.1 6381 @ mymaster 127.0.0.1 6380",
                "mymaster"
            ),
            Some(("127.0.0.1", 6381))
        );
        assert_eq!(
            promoted(
                "slave 127.0.0.1:6381 127.0.0.1 6381 @ other 127.0.0.1 6380",
                "mymaster"
            ),
            None
        );
        assert_eq!(promoted("garbage", "mymaster"), None);
        assert!(about(
            SWITCHED,
            "mymaster 127.0.0.1 6380 127.0.0.1 6381",
            "mymaster"
        ));
        assert!(!about(
            SWITCHED,
            "other 127.0.0.1 6380 127.0.0.1 6381",
            "mymaster"
        ));
        assert!(about(
            "-failover-abort-slave-timeout",
            "master mymaster 127.0.0.1 6380",
            "mymaster"
        ));
        assert!(!about(
            "-failover-abort-slave-timeout",
            "master other 127.0.0.1 6380",
            "mymaster"
        ));
    }

    #[test]
    fn a_promotion_moves_at_once_and_a_stale_word_never_moves_back() {
        let primary = Primary::new("mymaster");
        primary.told(named(6380, 1), Some(Duration::from_secs(4)));
        assert_eq!(at_port(&primary), Some(6380));
        // The leader of epoch 2 promotes the replica: requests go there at once.
        primary.promoting(named(6381, 2), 0);
        assert_eq!(at_port(&primary), Some(6381));
        assert!(!primary.is("127.0.0.1:6380"));
        // A sentinel that has not heard of it yet still names the old primary.
        primary.told(named(6380, 1), None);
        assert_eq!(at_port(&primary), Some(6381));
        // A late announcement of an older failover.
        primary.promoting(named(6380, 1), 1);
        assert_eq!(at_port(&primary), Some(6381));
        // Confirmed; then a lagging sentinel's older configuration is ignored.
        primary.told(named(6381, 2), None);
        primary.told(named(6380, 1), None);
        assert_eq!(at_port(&primary), Some(6381));
        // A later failover back to the first server is followed.
        primary.promoting(named(6380, 3), 2);
        primary.told(named(6380, 3), None);
        assert_eq!(at_port(&primary), Some(6380));
    }

    #[test]
    fn an_aborted_promotion_gives_way_to_the_sentinels_configuration() {
        let primary = Primary::new("mymaster");
        primary.told(named(6380, 1), Some(Duration::from_secs(4)));
        primary.promoting(named(6381, 2), 1);
        // Another sentinel's abort is of a failover it did not lead.
        primary.aborted(0);
        assert!(!primary.promotion_overdue());
        primary.aborted(1);
        assert!(primary.promotion_overdue());
        primary.told(named(6380, 1), None);
        assert_eq!(at_port(&primary), Some(6380));
        assert!(!primary.promotion_overdue());
    }

    #[test]
    fn a_promotion_never_confirmed_is_given_up_after_the_failover_timeout() {
        let primary = Primary::new("mymaster");
        primary.told(named(6380, 1), Some(Duration::from_millis(1)));
        primary.promoting(named(6381, 2), 0);
        std::thread::sleep(Duration::from_millis(5));
        assert!(primary.promotion_overdue());
        primary.told(named(6380, 1), None);
        assert_eq!(at_port(&primary), Some(6380));
    }

    #[test]
    fn sentinel_master_fields_are_read() {
        let fields: HashMap<String, String> = [("config-epoch", "7"), ("failover-timeout", "4000")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(
            parse_master(&fields),
            Some((7, Some(Duration::from_secs(4))))
        );
    }

    #[test]
    fn one_epoch_names_one_server_until_the_followed_one_refuses() {
        let primary = Primary::new("mymaster");
        primary.told(named(6380, 5), None);
        // Another server at the same epoch: not a reason to move.
        primary.told(named(6381, 5), None);
        assert_eq!(at_port(&primary), Some(6380));
        // Sentinels started afresh, their epochs from 0: the followed server refuses to be
        // a primary, and their word is taken.
        primary.told(named(6381, 1), None);
        assert_eq!(at_port(&primary), Some(6380));
        primary.refused("127.0.0.1:6380");
        primary.told(named(6381, 1), None);
        assert_eq!(at_port(&primary), Some(6381));
    }
}
