//! A connection lent out of a [`Pool`] for the caller's own commands ([`PooledConnection`],
//! from [`Pool::connection`] and [`Pool::connection_for`]): checked out as the locks' own
//! are, bounded by the same timeouts, and given back on drop only as it came (no reply
//! owed, no transaction open, no state a lock request must not meet).

use std::fmt;

use redis::{Cmd, ConnectionLike, RedisResult, Value};

use super::{Conn, checkout, checkout_node, reply_lost};
use crate::error::{Error, Result};
use crate::pool::{Pool, Redirect, redirect_of};
use crate::time::Deadline;

/// A connection of a [`Pool`], lent for your own commands on the servers that hold the
/// locks (a fencing check, a counter): from [`Pool::connection`], or on a cluster
/// [`Pool::connection_for`] a key. It goes back to the pool when dropped.
///
/// Run commands on it through [`redis::ConnectionLike`], as on any `redis` connection:
/// `redis::cmd(..).query(&mut conn)`, a pipeline, a [`redis::Script`], or the
/// [`redis::Commands`] methods.
///
/// It is one of the pool's connections and bounded as the locks' are: it counts against
/// [`max_size`](Pool::max_size) while lent (hold it briefly; a pool whose every connection
/// is lent makes the locks wait for one), and each reply is awaited at most the pool's
/// [response timeout](crate::PoolBuilder::response_timeout), so a blocking command
/// (`BLPOP`, `WAIT`, `XREAD BLOCK`) must ask for less than that. It has no access to the
/// socket or its timeouts, and no publish/subscribe mode: keep a connection of your own for
/// those.
///
/// It goes back to the pool only as it came. A connection that a lock request must not
/// meet is closed instead when dropped: one whose reply did not come (a timeout, a broken
/// connection), one with a `MULTI` or `WATCH` still open, one that changed what it is
/// (`SELECT`, `AUTH`, `HELLO`, `CLIENT REPLY`, `CLIENT TRACKING`, a subscription, `RESET`,
/// ...). The pool makes another in its place. (A pool given to `Pool::try_from` cannot
/// close one: its r2d2 manager keeps every connection that is still open, so leave none
/// changed there.)
///
/// On a cluster it is a connection to the primary that served its key's slot when it was
/// lent: a command about a key of another slot, or of one that moved since, gets a
/// `MOVED` error (which the pool notes, so that the next connection lent for it goes to
/// the new primary).
///
/// # Examples
///
/// ```no_run
/// use redis_mutex::{Pool, RedisMutex};
///
/// let pool = Pool::new("redis://127.0.0.1:6379/")?;
/// let mutex = RedisMutex::builder(pool.clone(), "nightly-report").build()?;
/// let guard = mutex.lock()?;
/// // Storage that refuses a late write: the token must beat the last one written.
/// let mut conn = pool.connection()?;
/// let written: bool = redis::Script::new(
///     r"if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then return 0 end
///       redis.call('SET', KEYS[1], ARGV[1]) redis.call('SET', KEYS[2], ARGV[2]) return 1",
/// )
/// .key("report:token")
/// .key("report:body")
/// .arg(guard.fencing_token())
/// .arg("the report")
/// .invoke(&mut conn)?;
/// drop(conn); // back to the pool
/// if !written {
///     println!("a later holder wrote the report already");
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a lent connection goes back to the pool when dropped"]
pub struct PooledConnection {
    conn: Conn,
    pool: Pool,
    /// What was sent on it so far leaves it as it came.
    state: Sent,
}

/// What the commands sent on a lent connection did to it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sent {
    /// A `MULTI` without its `EXEC` or `DISCARD` yet.
    multi: bool,
    /// A `WATCH` without its `EXEC`, `DISCARD` or `UNWATCH` yet.
    watching: bool,
    /// A command that changed the connection (see [`effect`]), or a reply that did not
    /// come: it must not go back to the pool.
    changed: bool,
}

impl Sent {
    fn clean(self) -> bool {
        !self.multi && !self.watching && !self.changed
    }

    /// Notes the commands of `packed`, as redis-rs packs them (RESP arrays of bulk
    /// strings); what cannot be read counts as a change.
    fn note(&mut self, packed: &[u8]) {
        let Some(commands) = commands(packed) else {
            self.changed = true;
            return;
        };
        for [name, sub] in commands {
            match effect(name, sub) {
                Effect::None => {}
                Effect::Multi => self.multi = true,
                Effect::Watch => self.watching = true,
                Effect::Unwatch => self.watching = false,
                Effect::EndTransaction => {
                    self.multi = false;
                    self.watching = false;
                }
                Effect::Changes => self.changed = true,
            }
        }
    }
}

/// What a command does to the connection it is sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    None,
    Multi,
    Watch,
    Unwatch,
    EndTransaction,
    /// It changes what later commands on the connection meet: its database, its user, its
    /// protocol, whether replies come, its mode.
    Changes,
}

/// What the command `name` (with its first argument `sub`, empty if none) does to its
/// connection.
fn effect(name: &[u8], sub: &[u8]) -> Effect {
    let is = |word: &str| name.eq_ignore_ascii_case(word.as_bytes());
    if is("MULTI") {
        return Effect::Multi;
    }
    if is("WATCH") {
        return Effect::Watch;
    }
    if is("UNWATCH") {
        return Effect::Unwatch;
    }
    if is("EXEC") || is("DISCARD") {
        return Effect::EndTransaction;
    }
    const CHANGES: [&str; 14] = [
        "SELECT",
        "AUTH",
        "HELLO",
        "RESET",
        "QUIT",
        "MONITOR",
        "SUBSCRIBE",
        "PSUBSCRIBE",
        "SSUBSCRIBE",
        "READONLY",
        "READWRITE",
        "SYNC",
        "PSYNC",
        "REPLCONF",
    ];
    if CHANGES.iter().any(|word| is(word)) {
        return Effect::Changes;
    }
    // `CLIENT` asks about connections, or changes this one (`REPLY`, `TRACKING`,
    // `CACHING`, `NO-EVICT`, `SETNAME`, ...): any but the questions counts as a change.
    const CLIENT_QUESTIONS: [&str; 10] = [
        "ID",
        "INFO",
        "GETNAME",
        "LIST",
        "KILL",
        "UNBLOCK",
        "PAUSE",
        "UNPAUSE",
        "GETREDIR",
        "TRACKINGINFO",
    ];
    if is("CLIENT") {
        let asks = CLIENT_QUESTIONS
            .iter()
            .any(|word| sub.eq_ignore_ascii_case(word.as_bytes()));
        if !asks {
            return Effect::Changes;
        }
    }
    Effect::None
}

/// The name and first argument (empty if none) of each command of `packed`, RESP arrays
/// of bulk strings as redis-rs packs commands and pipelines; `None` when it is not that.
fn commands(packed: &[u8]) -> Option<Vec<[&[u8]; 2]>> {
    /// The line at `*at` without its `\r\n`, moving `*at` past it.
    fn line<'a>(packed: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
        let rest = packed.get(*at..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        *at += end + 2;
        Some(&rest[..end])
    }
    /// The number after the one-byte `mark` that opens a line.
    fn number(line: &[u8], mark: u8) -> Option<usize> {
        let (first, digits) = line.split_first()?;
        if *first != mark {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    }
    let mut found = Vec::new();
    let mut at = 0;
    while at < packed.len() {
        let words = number(line(packed, &mut at)?, b'*')?;
        let mut command: [&[u8]; 2] = [b"", b""];
        for i in 0..words {
            let len = number(line(packed, &mut at)?, b'$')?;
            let word = packed.get(at..at.checked_add(len)?)?;
            at += len;
            if packed.get(at..at + 2)? != b"\r\n" {
                return None;
            }
            at += 2;
            if let Some(slot) = command.get_mut(i) {
                *slot = word;
            }
        }
        found.push(command);
    }
    Some(found)
}

impl PooledConnection {
    /// Lends `conn`, checked out of `pool`, bounding each of its replies by the pool's
    /// response timeout.
    fn lend(pool: &Pool, mut conn: Conn) -> Result<PooledConnection> {
        conn.set_timeout(pool.response_timeout())?;
        Ok(PooledConnection {
            conn,
            pool: pool.clone(),
            state: Sent::default(),
        })
    }

    /// Notes what a request's failure says about the connection: one whose reply did not
    /// come, or a server's refusal (see [`PooledConnection::refused`]).
    fn failed(&mut self, e: &redis::RedisError) {
        if reply_lost(e) {
            // A reply may still come, or the connection is gone: either way nobody else
            // meets it. Behind Sentinel, a failover may be under way.
            self.state.changed = true;
            self.conn.node().doubt();
        } else {
            self.refused(e);
        }
    }

    /// Notes a reply, which may be a server's refusal (redis-rs hands those over as
    /// values, and `query` makes them errors later).
    fn replied(&mut self, value: &Value) {
        if let Value::ServerError(e) = value {
            self.refused(&redis::RedisError::from(e.clone()));
        }
    }

    /// A server's refusal: a slot that moved is noted in the slot map, so that the next
    /// connection lent for it goes to its new primary; a server that is no longer a
    /// primary closes the connection when it is given back.
    fn refused(&mut self, e: &redis::RedisError) {
        match (redirect_of(e), self.pool.as_cluster()) {
            (Some(Redirect::Moved { slot, addr }), Some(cluster)) => cluster.moved(slot, &addr),
            (Some(Redirect::Demoted), cluster) => {
                self.state.changed = true;
                self.conn.node().doubt();
                if let Some(cluster) = cluster {
                    cluster.refresh().ok();
                }
            }
            _ => {}
        }
    }
}

impl ConnectionLike for PooledConnection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.state.note(cmd);
        let result = self.conn.req_packed_command(cmd);
        match &result {
            Ok(value) => self.replied(value),
            Err(e) => self.failed(e),
        }
        result
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.state.note(cmd);
        let result = self.conn.req_packed_commands(cmd, offset, count);
        match &result {
            Ok(values) => values.iter().for_each(|value| self.replied(value)),
            Err(e) => self.failed(e),
        }
        result
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        self.state.note(&cmd.get_packed_command());
        let result = self.conn.req_command(cmd);
        match &result {
            Ok(value) => self.replied(value),
            Err(e) => self.failed(e),
        }
        result
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }

    fn check_connection(&mut self) -> bool {
        let open = self.conn.check_connection();
        if !open {
            self.state.changed = true;
        }
        open
    }

    fn is_open(&self) -> bool {
        self.conn.is_open()
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        if !self.state.clean() || !self.conn.is_open() {
            log::debug!(
                "a lent connection to {} came back changed ({:?}); closing it",
                self.conn.server(),
                self.state
            );
            self.conn.mark_broken();
        }
    }
}

impl fmt::Debug for PooledConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConnection")
            .field("server", &self.conn.server())
            .field("db", &self.conn.get_db())
            .finish_non_exhaustive()
    }
}

/// How long a lent connection may take to come: the pool's connection timeout to get a
/// free one, and a response timeout for the check of one that sat idle.
fn lending_deadline(pool: &Pool) -> Deadline {
    Deadline::after(
        pool.connection_timeout()
            .saturating_add(pool.response_timeout()),
    )
}

impl Pool {
    /// Lends one of the pool's connections, for your own commands on the server that holds
    /// the locks (on a single server, or behind Sentinel the primary it names now). It goes
    /// back to the pool when dropped; see [`PooledConnection`] for what it may be used for.
    ///
    /// It comes as the locks' own do: an idle one at once, else a new one within the
    /// [connect timeout](crate::PoolBuilder::connect_timeout), else the first to come free
    /// within the [connection timeout](crate::PoolBuilder::connection_timeout); one that sat
    /// idle is checked first (`PING`, within the response timeout).
    ///
    /// # Errors
    ///
    /// [`Error::PoolTimeout`] when all [`max_size`](Pool::max_size) connections stay in use
    /// (lent, or the locks') for the connection timeout; [`Error::Unreachable`],
    /// [`Error::AuthFailed`] or [`Error::Timeout`] when the server cannot be reached or
    /// does not answer; [`Error::InvalidOptions`] on a cluster, where a connection is lent
    /// for a key ([`connection_for`](Pool::connection_for)).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis::Commands;
    /// use redis_mutex::Pool;
    ///
    /// let pool = Pool::new("redis://127.0.0.1:6379/")?;
    /// let mut conn = pool.connection()?;
    /// let runs: u64 = conn.incr("nightly-report:runs", 1)?;
    /// println!("run number {runs}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connection(&self) -> Result<PooledConnection> {
        let Some(node) = self.single() else {
            return Err(Error::invalid(
                "key",
                "a cluster pool lends a connection for a key: use `Pool::connection_for(key)`, \
                 which reaches the primary serving the key's slot",
            ));
        };
        let conn = checkout_node(self, node, lending_deadline(self))?;
        PooledConnection::lend(self, conn)
    }

    /// Lends one of the pool's connections for commands about `key`: on a cluster, to the
    /// primary serving the key's slot (every key with the same hash tag is there too: a
    /// lock's keys carry its name as their tag, `{name}`); on a single server or behind
    /// Sentinel, to the primary, as [`connection`](Pool::connection). It goes back to the
    /// pool when dropped; see [`PooledConnection`].
    ///
    /// It comes as [`connection`](Pool::connection)'s does. On a cluster, a primary that
    /// cannot be reached makes the pool ask for the slot map again, and try the primary it
    /// names then.
    ///
    /// # Errors
    ///
    /// As for [`connection`](Pool::connection), without the cluster's
    /// [`Error::InvalidOptions`]; on a cluster, [`Error::Redis`] when no node serves the
    /// key's slot.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis::Commands;
    /// use redis_mutex::Pool;
    ///
    /// let pool = Pool::cluster(&["redis://10.0.0.1:7000/", "redis://10.0.0.2:7000/"])?;
    /// // The same hash tag as the lock `{nightly-report}`: the same node.
    /// let key = "{nightly-report}:runs";
    /// let mut conn = pool.connection_for(key)?;
    /// let runs: u64 = conn.incr(key, 1)?;
    /// println!("run number {runs}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connection_for(&self, key: &str) -> Result<PooledConnection> {
        let conn = checkout(self, key, lending_deadline(self))?;
        PooledConnection::lend(self, conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(commands: &[&mut redis::Cmd]) -> Sent {
        let mut sent = Sent::default();
        for cmd in commands {
            sent.note(&cmd.get_packed_command());
        }
        sent
    }

    #[test]
    fn packed_commands_and_pipelines_are_read_back() {
        let set = redis::cmd("SET").arg("k").arg("v").get_packed_command();
        assert_eq!(commands(&set), Some(vec![[&b"SET"[..], b"k"]]));
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("INCR").arg("n").cmd("PING");
        let packed = pipe.get_packed_pipeline();
        let names: Vec<&[u8]> = commands(&packed)
            .unwrap()
            .into_iter()
            .map(|[name, _]| name)
            .collect();
        assert_eq!(names, [&b"MULTI"[..], b"INCR", b"PING", b"EXEC"]);
        assert_eq!(commands(b"*1\r\n$4\r\nPING"), None, "cut short");
        assert_eq!(commands(b"PING\r\n"), None, "inline");
        assert_eq!(commands(b""), Some(vec![]));
    }

    #[test]
    fn a_connection_goes_back_only_as_it_came() {
        let cmd = |name: &str| redis::cmd(name);
        let clean = sent(&[cmd("GET").arg("k"), cmd("client").arg("id")]);
        assert!(clean.clean(), "{clean:?}");
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("SET").arg("k").arg("v");
        let mut in_pipe = Sent::default();
        in_pipe.note(&pipe.get_packed_pipeline());
        assert!(
            in_pipe.clean(),
            "MULTI .. EXEC in one pipeline: {in_pipe:?}"
        );
        let watched = sent(&[cmd("WATCH").arg("k"), &mut cmd("unwatch")]);
        assert!(watched.clean(), "{watched:?}");
        for left in [
            sent(&[cmd("WATCH").arg("k")]),
            sent(&[&mut cmd("MULTI")]),
            sent(&[cmd("select").arg(1)]),
            sent(&[cmd("CLIENT").arg("REPLY").arg("OFF")]),
            sent(&[cmd("CLIENT").arg("no-evict").arg("on")]),
            sent(&[cmd("SUBSCRIBE").arg("ch")]),
            sent(&[cmd("HELLO").arg(3)]),
        ] {
            assert!(!left.clean(), "{left:?}");
        }
        let mut unreadable = Sent::default();
        unreadable.note(b"GET k\r\n");
        assert!(!unreadable.clean());
    }
}
