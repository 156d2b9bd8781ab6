//! Following the primary behind Sentinel: [`Primary`] says which server the sentinels name
//! now, kept up to date by a thread subscribed to their announcements (as Jedis's sentinel
//! pool does), and asked again of them after a connection error. A pooled connection to any
//! other server is stale: it is closed, never used for a lock request.
//!
//! The old primary takes writes until it is reconfigured, well after the replica stopped
//! replicating from it; a grant made there in between is lost when it is demoted. So the
//! watcher moves to the replica the moment the sentinels tell it to stop replicating
//! (`+failover-state-send-slaveof-noone`), not when they announce the switch
//! (`+switch-master`, up to a second later): a lock call that cannot reach a primary yet
//! fails, which is better than a grant that is lost.

use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use super::manager::{SentinelTarget, connect, server_name};

/// How long the watcher waits for a message before it looks whether the pool is gone and
/// whether it was asked to ask the sentinels again.
const TICK: Duration = Duration::from_millis(500);

/// The longest pause between two attempts to reach a sentinel that failed.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The primary the sentinels name for a service, as far as this process knows.
#[derive(Debug)]
pub(crate) struct Primary {
    service: String,
    /// `host:port`, as connections name their server; `None` until first known.
    address: RwLock<Option<String>>,
    /// Set after a connection error: the watcher asks the sentinels again.
    ask_again: AtomicBool,
}

impl Primary {
    /// Whether `server` (a connection's `host:port`) is the primary, as far as is known:
    /// a connection to any other server is stale.
    pub(crate) fn is(&self, server: &str) -> bool {
        self.address.read().as_deref().is_none_or(|a| a == server)
    }

    /// Has the watcher ask the sentinels again, at its next tick.
    pub(crate) fn doubt(&self) {
        self.ask_again.store(true, Ordering::Relaxed);
    }

    /// Records what the sentinels say; logs a change.
    fn set(&self, address: String) {
        let mut current = self.address.write();
        if current.as_deref() != Some(address.as_str()) {
            match current.as_deref() {
                Some(old) => log::info!(
                    "the primary of `{}` moved from {old} to {address}; connections to {old} \
                     are closed",
                    self.service
                ),
                None => log::debug!("the primary of `{}` is {address}", self.service),
            }
            *current = Some(address);
        }
    }
}

/// Starts following the primary of `target`'s service on a thread of its own, which asks
/// the sentinels, then watches them, and ends within a tick once the returned `Primary` is
/// dropped. Until the first answer, no connection is taken for stale.
pub(super) fn follow(
    target: &SentinelTarget,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Arc<Primary> {
    let primary = Arc::new(Primary {
        service: target.service.clone(),
        address: RwLock::new(None),
        ask_again: AtomicBool::new(false),
    });
    let watcher = Watcher {
        target: target.clone(),
        primary: Arc::downgrade(&primary),
        connect_timeout,
        response_timeout,
    };
    let spawned = thread::Builder::new()
        .name("redis-mutex-sentinel".into())
        .spawn(move || watcher.run());
    if let Err(e) = spawned {
        log::warn!(
            "no thread to watch the sentinels of `{}` ({e}); a failover is noticed when a \
             connection breaks",
            target.service
        );
    }
    primary
}

/// The sentinels tell the replica they promote to stop replicating: writes to the old
/// primary are lost from here on.
const PROMOTING: &str = "+failover-state-send-slaveof-noone";

/// The sentinels announce the new primary.
const SWITCHED: &str = "+switch-master";

/// The server an announcement on `channel` names as `service`'s new primary, if it does:
/// `+switch-master <service> <old ip> <old port> <new ip> <new port>`, or
/// `+failover-state-send-slaveof-noone slave <ip:port> <ip> <port> @ <service> <ip> <port>`.
fn new_primary<'a>(channel: &str, payload: &'a str, service: &str) -> Option<(&'a str, u16)> {
    let parts: Vec<&'a str> = payload.split(' ').collect();
    let (named, host, port) = match (channel, &parts[..]) {
        (SWITCHED, [named, _, _, host, port]) => (*named, *host, *port),
        (PROMOTING, ["slave", _, host, port, "@", named, _, _]) => (*named, *host, *port),
        _ => return None,
    };
    (named == service).then_some((host, port.parse().ok()?))
}

struct Watcher {
    target: SentinelTarget,
    primary: Weak<Primary>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl Watcher {
    /// Asks the sentinels, in turn, who the primary is; records the first answer.
    fn ask(&self, primary: &Primary) -> bool {
        for sentinel in &self.target.sentinels {
            let named = connect(sentinel, self.connect_timeout, self.response_timeout)
                .ok()
                .and_then(|mut link| {
                    redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(&self.target.service)
                        .query::<Option<(String, u16)>>(&mut link.conn)
                        .ok()
                        .flatten()
                });
            if let Some((host, port)) = named {
                let info = super::manager::at(&self.target.node, &host, port);
                primary.set(server_name(&info));
                return true;
            }
        }
        false
    }

    /// Subscribes to `+switch-master` on one sentinel after another, for as long as the pool
    /// lives.
    fn run(self) {
        let mut backoff = TICK;
        for sentinel in self.target.sentinels.iter().cycle() {
            let Some(primary) = self.primary.upgrade() else {
                return;
            };
            drop(primary);
            match self.listen(sentinel) {
                // The pool is gone.
                Ok(()) => return,
                Err(e) => {
                    log::debug!(
                        "watching sentinel {} for `{}` failed ({e}); trying the next",
                        server_name(sentinel),
                        self.target.service
                    );
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Listens on one sentinel until the pool is gone (`Ok`) or the sentinel fails.
    fn listen(&self, sentinel: &redis::ConnectionInfo) -> redis::RedisResult<()> {
        let mut link = connect(sentinel, self.connect_timeout, self.response_timeout)
            .map_err(|f| f.into_source())?;
        // What changed while nobody listened.
        if let Some(primary) = self.primary.upgrade() {
            self.ask(&primary);
        }
        let mut pubsub = link.conn.as_pubsub();
        pubsub.subscribe(&[PROMOTING, SWITCHED][..])?;
        pubsub.set_read_timeout(Some(TICK))?;
        loop {
            let Some(primary) = self.primary.upgrade() else {
                return Ok(());
            };
            if primary.ask_again.swap(false, Ordering::Relaxed) {
                self.ask(&primary);
            }
            match pubsub.get_message() {
                Ok(message) => {
                    let payload: String = message.get_payload()?;
                    if let Some((host, port)) =
                        new_primary(message.get_channel_name(), &payload, &self.target.service)
                    {
                        let info = super::manager::at(&self.target.node, host, port);
                        primary.set(server_name(&info));
                    }
                }
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_name_the_new_primary() {
        assert_eq!(
            new_primary(
                SWITCHED,
                "mymaster 127.0.0.1 6380 127.0.0.1 6381",
                "mymaster"
            ),
            Some(("127.0.0.1", 6381))
        );
        assert_eq!(
            new_primary(
                PROMOTING,
                "slave 127.0.0.1:6381 127.0.0.1 6381 @ mymaster 127.0.0.1 6380",
                "mymaster"
            ),
            Some(("127.0.0.1", 6381))
        );
        assert_eq!(
            new_primary(SWITCHED, "other 127.0.0.1 6380 127.0.0.1 6381", "mymaster"),
            None
        );
        assert_eq!(new_primary(SWITCHED, "garbage", "mymaster"), None);
        assert_eq!(
            new_primary("+sdown", "master mymaster 127.0.0.1 6380", "mymaster"),
            None
        );
    }
}
