//! How the Lua scripts are sent, and the replies the kinds share. Each kind's scripts are
//! files in its folder (`src/<kind>/*.lua`), each opening with a comment that states its
//! `KEYS`, `ARGV` and replies.
//!
//! A [`Call`] is sent as `EVALSHA`: `redis::Script` loads the script on `NOSCRIPT` (a
//! restarted server, `SCRIPT FLUSH`, a cluster node seen for the first time) and tries
//! again, so a call stays one round trip. On a connection with a reply still unread it is
//! sent as one plain `EVAL` with the source instead ([`Call::eval`]): there a `NOSCRIPT`
//! could come after we stopped waiting, and nobody would load the script.
//!
//! Each script's replies are a type here, decoded in one place ([`FromRedisValue`]): the
//! callers match on meanings, not numbers. A reply outside a script's documented set fails
//! to decode, and the call reports [`Error::Protocol`](crate::Error::Protocol).
//!
//! Redis scripts cannot include one another: the parts several scripts share (the clock,
//! `fence`, `touch`, the notes of releases) are files of their own under `src/scripts/`,
//! joined in front of each script that uses them at build time ([`lua!`]).

use std::sync::LazyLock;
use std::time::Duration;

use redis::{FromRedisValue, ParsingError, RedisResult, Script, ToRedisArgs, Value};

use crate::conn::Conn;

/// How long after a request a second copy of it (or its undo) may still come: twice the
/// response timeout, at least 10 s (an undo is sent at most a response timeout after its
/// call, right behind it). The least a grant marker lives, and how long a release's
/// tombstone stays.
pub(crate) fn undo_window(response_timeout: Duration) -> Duration {
    response_timeout
        .saturating_mul(2)
        .max(Duration::from_secs(10))
}

/// A script and its source.
pub(crate) struct Lua {
    name: &'static str,
    script: Script,
    source: &'static str,
}

impl Lua {
    pub(crate) fn new(file: &'static str, source: &'static str) -> Lua {
        Lua {
            name: file.trim_end_matches(".lua"),
            script: Script::new(source),
            source,
        }
    }

    /// The script's source, as sent by a plain `EVAL`: its shared parts, then its own.
    #[cfg(test)]
    pub(crate) fn source(&self) -> &'static str {
        self.source
    }

    /// The script's name: its file's, without `.lua`.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// A call of this script, to be given keys and arguments.
    pub(crate) fn call(&'static self) -> Call {
        Call {
            lua: self,
            keys: Parts::with_capacity(96, 6),
            args: Parts::with_capacity(96, 8),
        }
    }
}

/// A script call with its keys and arguments, each encoded once, into one buffer for the
/// keys and one for the arguments: a call is built for every request on the hot path.
pub(crate) struct Call {
    lua: &'static Lua,
    keys: Parts,
    args: Parts,
}

/// Command parts (keys, or arguments) back to back, and where each ends.
struct Parts {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Parts {
    /// Room for `parts` parts of `bytes` bytes in all, the size of most calls: a call then
    /// allocates twice, whatever its parts.
    fn with_capacity(bytes: usize, parts: usize) -> Parts {
        Parts {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(parts),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.bytes[start..end])
    }
}

impl redis::RedisWrite for Parts {
    fn write_arg(&mut self, arg: &[u8]) {
        self.bytes.extend_from_slice(arg);
        self.ends.push(self.bytes.len());
    }

    fn writer_for_next_arg(&mut self) -> impl std::io::Write + '_ {
        NextPart(self)
    }
}

/// The writer of one part; the part ends when it is dropped.
struct NextPart<'a>(&'a mut Parts);

impl std::io::Write for NextPart<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for NextPart<'_> {
    fn drop(&mut self) {
        self.0.ends.push(self.0.bytes.len());
    }
}

impl Call {
    /// The same keys and arguments, for `lua` (a script that takes them and more).
    pub(crate) fn with_script(self, lua: &'static Lua) -> Call {
        Call { lua, ..self }
    }

    pub(crate) fn key(&mut self, key: impl ToRedisArgs) -> &mut Call {
        key.write_redis_args(&mut self.keys);
        self
    }

    pub(crate) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Call {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// The command `verb script numkeys keys... args...`.
    fn command(&self, verb: &str, script: &str) -> redis::Cmd {
        let mut cmd = redis::Cmd::with_capacity(
            3 + self.keys.ends.len() + self.args.ends.len(),
            verb.len() + script.len() + 8 + self.keys.bytes.len() + self.args.bytes.len(),
        );
        cmd.arg(verb).arg(script).arg(self.keys.ends.len());
        for part in self.keys.iter().chain(self.args.iter()) {
            cmd.arg(part);
        }
        cmd
    }

    /// Runs the call as `EVALSHA`, loading the script first if the server lacks it; the
    /// load and the second `EVALSHA` share the deadline of the first.
    pub(crate) fn invoke<T: FromRedisValue>(&self, conn: &mut Conn) -> RedisResult<T> {
        let cmd = self.command("EVALSHA", self.lua.script.get_hash());
        match cmd.query(&mut **conn) {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // A socket whose timeout cannot be set fails the next read anyway.
                conn.keep_deadline().ok();
                self.lua.script.load(&mut **conn)?;
                conn.keep_deadline().ok();
                cmd.query(&mut **conn)
            }
            result => result,
        }
    }

    /// The call as one plain `EVAL` with the script's source, for a connection that has a
    /// reply still unread.
    pub(crate) fn eval(&self) -> redis::Cmd {
        self.command("EVAL", self.lua.source)
    }

    /// Runs the call as [`eval`](Self::eval) when `pending`, else as
    /// [`invoke`](Self::invoke).
    pub(crate) fn run<T: FromRedisValue>(&self, conn: &mut Conn, pending: bool) -> RedisResult<T> {
        if pending {
            self.eval().query(&mut **conn)
        } else {
            self.invoke(conn)
        }
    }
}

/// What an acquire script answers (`acquire.lua`, `fair.lua`'s acquire,
/// `rwlock_acquire.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquire {
    /// Ours, with the grant's fencing token (0 for a read lease, which takes none).
    Granted { token: u64 },
    /// Held elsewhere: how long until the earliest blocker's lease runs out (`None`: it has
    /// no expiry).
    Held { left: Option<Duration> },
    /// Free, but left to another waiter: one a release woke, or one ahead in the queue.
    LeftToWaiter,
    /// A key of the lock holds another type: some other program uses the name. `key` is
    /// its index in the call's keys (from 1), or 0 for the lock's own key.
    WrongType { key: usize },
    /// This request was undone: a copy of it that came late (a live call never sends an
    /// id again once it is undone).
    Undone,
}

impl FromRedisValue for Acquire {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let (outcome, detail) = <(i64, i64)>::from_redis_value(v)?;
        Ok(match outcome {
            1 => Acquire::Granted {
                token: u64::try_from(detail).map_err(|_| bad("acquire", outcome, detail))?,
            },
            0 => Acquire::Held {
                left: u64::try_from(detail).ok().map(Duration::from_millis),
            },
            2 => Acquire::LeftToWaiter,
            3 => Acquire::Undone,
            -1 => Acquire::WrongType {
                key: usize::try_from(detail).map_err(|_| bad("acquire", outcome, detail))?,
            },
            _ => return Err(bad("acquire", outcome, detail)),
        })
    }
}

/// What a compare-and-extend answers for one lock (`extend.lua`, per key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extend {
    /// Ours, and its lease set anew.
    Extended,
    /// Gone: expired, reset or released.
    Gone,
    /// Held by another owner or grant (or the key holds another type).
    Taken,
}

impl FromRedisValue for Extend {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        match i64::from_redis_value(v)? {
            1 => Ok(Extend::Extended),
            0 => Ok(Extend::Gone),
            -1 => Ok(Extend::Taken),
            other => Err(bad("extend", other, 0)),
        }
    }
}

/// What `resume.lua` or `rwlock_resume.lua` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resume {
    /// Taken over: the grant's new fencing token (0 for a read lease), and how long its
    /// lease has left (`None`: it has no expiry).
    Taken { token: u64, left: Option<Duration> },
    /// The lock does not hold that grant any more.
    Gone,
    /// A key of the lock holds another type.
    WrongType,
}

impl FromRedisValue for Resume {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let (outcome, token, left) = <(i64, i64, i64)>::from_redis_value(v)?;
        Ok(match outcome {
            1 => Resume::Taken {
                token: u64::try_from(token).map_err(|_| bad("resume", outcome, token))?,
                left: u64::try_from(left).ok().map(Duration::from_millis),
            },
            0 => Resume::Gone,
            -1 => Resume::WrongType,
            _ => return Err(bad("resume", outcome, token)),
        })
    }
}

/// A reply outside a script's documented set.
pub(crate) fn bad(script: &str, outcome: i64, detail: i64) -> ParsingError {
    ParsingError::from(format!(
        "the {script} script answered {{{outcome}, {detail}}}, which this version does not know"
    ))
}

/// A script of this crate, `src/<file>`, with the shared parts it uses (`src/<part>`, each
/// defining a local or two: the clock, `fence`, `touch`) joined in front of it at build
/// time, since Redis scripts cannot include one another.
macro_rules! lua {
    ([$($part:literal),*], $file:literal) => {
        std::sync::LazyLock::new(|| {
            $crate::scripts::Lua::new(
                $file,
                concat!(
                    $(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/", $part)),)*
                    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/", $file)),
                ),
            )
        })
    };
}

pub(crate) use lua;

/// Read-write leases and semaphore permits: compare-and-extend (or check) of any number of
/// sorted-set leases in one call.
pub(crate) static LEASE_EXTEND: LazyLock<Lua> = lua!(
    ["scripts/clock.lua", "scripts/now.lua", "scripts/touch.lua"],
    "scripts/lease_extend.lua"
);

#[cfg(test)]
mod tests {
    use super::*;

    static SOME: LazyLock<Lua> = lua!(
        ["scripts/clock.lua", "scripts/now.lua"],
        "scripts/lease_extend.lua"
    );

    fn decode<T: FromRedisValue>(v: Value) -> Result<T, ParsingError> {
        T::from_redis_value(v)
    }

    fn pair(a: i64, b: i64) -> Value {
        Value::Array(vec![Value::Int(a), Value::Int(b)])
    }

    #[test]
    fn resume_replies_decode() {
        let triple = |a, b, c| Value::Array(vec![Value::Int(a), Value::Int(b), Value::Int(c)]);
        assert_eq!(
            decode::<Resume>(triple(1, 9, 1500)).unwrap(),
            Resume::Taken {
                token: 9,
                left: Some(Duration::from_millis(1500))
            }
        );
        assert_eq!(
            decode::<Resume>(triple(1, 9, -1)).unwrap(),
            Resume::Taken {
                token: 9,
                left: None
            }
        );
        assert_eq!(decode::<Resume>(triple(0, 0, 0)).unwrap(), Resume::Gone);
        assert_eq!(
            decode::<Resume>(triple(-1, 0, 0)).unwrap(),
            Resume::WrongType
        );
        assert!(decode::<Resume>(triple(5, 0, 0)).is_err());
    }

    #[test]
    fn replies_decode_to_their_meanings_and_nothing_else() {
        assert_eq!(
            decode::<Acquire>(pair(1, 42)).unwrap(),
            Acquire::Granted { token: 42 }
        );
        assert_eq!(
            decode::<Acquire>(pair(0, 250)).unwrap(),
            Acquire::Held {
                left: Some(Duration::from_millis(250))
            }
        );
        assert_eq!(
            decode::<Acquire>(pair(0, -1)).unwrap(),
            Acquire::Held { left: None }
        );
        assert_eq!(
            decode::<Acquire>(pair(2, 0)).unwrap(),
            Acquire::LeftToWaiter
        );
        assert_eq!(
            decode::<Acquire>(pair(-1, 3)).unwrap(),
            Acquire::WrongType { key: 3 }
        );
        assert!(decode::<Acquire>(pair(1, -5)).is_err(), "a negative token");
        assert!(decode::<Acquire>(pair(7, 0)).is_err());
        assert!(decode::<Acquire>(Value::Int(1)).is_err());
        assert_eq!(decode::<Extend>(Value::Int(-1)).unwrap(), Extend::Taken);
        assert_eq!(
            decode::<Vec<Extend>>(Value::Array(vec![Value::Int(1), Value::Int(0)])).unwrap(),
            [Extend::Extended, Extend::Gone]
        );
    }

    #[test]
    fn a_call_is_sent_as_evalsha_with_its_keys_then_its_arguments() {
        let mut call = SOME.call();
        call.key("lock:a")
            .arg("me")
            .key(&["lock-signal:a", "lock-grant:a"][..])
            .arg(1000u64);
        let packed = call
            .command("EVALSHA", SOME.script.get_hash())
            .get_packed_command();
        let expected = redis::cmd("EVALSHA")
            .arg(SOME.script.get_hash())
            .arg(3)
            .arg("lock:a")
            .arg("lock-signal:a")
            .arg("lock-grant:a")
            .arg("me")
            .arg(1000)
            .get_packed_command();
        assert_eq!(
            String::from_utf8_lossy(&packed),
            String::from_utf8_lossy(&expected)
        );
    }

    #[test]
    fn shared_parts_come_before_the_script() {
        let source = SOME.source();
        let clock = source.find("redis.call('TIME')").unwrap();
        let own = source.find("Sets the remaining lease").unwrap();
        assert!(clock < own, "{source}");
        assert_eq!(SOME.name(), "scripts/lease_extend");
    }

    #[test]
    fn a_plain_eval_carries_the_source_keys_and_arguments() {
        let mut call = SOME.call();
        call.key("lock:a").key("lock-signal:a").arg("me").arg(1000);
        let packed = call.eval().get_packed_command();
        let text = String::from_utf8_lossy(&packed);
        assert!(text.contains("EVAL"));
        assert!(text.contains(SOME.source));
        assert!(text.contains("lock-signal:a") && text.contains("me"));
    }
}
