//! The crate's errors: one enum for every call, and [`TryLockError`] for the calls that may
//! also find the lock held.

use std::fmt;
use std::time::Duration;

/// Why a lock was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostReason {
    /// Someone else holds it now: it ran out and was taken, or was taken by a client that
    /// shares our owner id.
    TakenOver,
    /// It was deleted while our lease still ran: a `reset`, `reset_all`, or a server that
    /// restarted without it.
    Reset,
    /// Its lease ran out before a renewal reached Redis (a pause longer than the lease).
    Expired,
    /// Redis could not be reached until the lease ran out.
    Unreachable,
    /// A failover (Sentinel's, or a Cluster's) moved the lock to a server that never had
    /// this grant: Redis replicates asynchronously, and the grant was made on the old
    /// primary too shortly before it was demoted. `wait_replicas` narrows this.
    Failover,
}

impl LostReason {
    /// The reason as the `reason` label of the lost-locks metric: a word, not a phrase.
    pub(crate) fn label(self) -> &'static str {
        match self {
            LostReason::TakenOver => "taken_over",
            LostReason::Reset => "reset",
            LostReason::Expired => "expired",
            LostReason::Unreachable => "unreachable",
            LostReason::Failover => "failover",
        }
    }
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LostReason::TakenOver => "taken over",
            LostReason::Reset => "reset",
            LostReason::Expired => "expired",
            LostReason::Unreachable => "unreachable until the lease ran out",
            LostReason::Failover => "moved by a failover",
        })
    }
}

/// The end of a message about a request that may be sent again: left out where the crate
/// sends it again itself.
const MAY_TRY_AGAIN: &str = "; the call may be tried again";

/// What a loss's cause means, and what to do about it, for an error's message.
struct LossDisplay(LostReason);

impl fmt::Display for LossDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            LostReason::Expired => {
                "its lease ran out first; use a longer expiry or auto-renewal if the work \
                 outlives the lease"
            }
            LostReason::Reset => {
                "it was deleted while its lease ran (a `reset`, `reset_all`, or a server \
                 restarted without persistence)"
            }
            LostReason::TakenOver => "another owner holds it now",
            LostReason::Unreachable => "redis could not be reached until its lease ran out",
            LostReason::Failover => {
                "a failover moved it to a server that never had this grant (replication is \
                 asynchronous; `wait_replicas` narrows this)"
            }
        })
    }
}

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when taking, keeping or releasing a lock.
///
/// Messages are short, lowercase, carry no trailing period, and say what to do. Errors about
/// a server name it (`host:port` or a socket path; never a password).
///
/// `Debug` shows the variant and its message, as `std::io::Error`'s does, so that a `?` in
/// a `main` that returns `Result<(), redis_mutex::Error>` tells the user what to do:
///
/// ```
/// let e = redis_mutex::Pool::new("redis://127.0.0.1:99999/").unwrap_err();
/// assert!(format!("{e:?}").starts_with("InvalidOptions: invalid `url`"), "{e:?}");
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// We are not (or no longer) the owner of the lock: it expired, was reset, was moved by
    /// a failover, or was taken by someone else after one of those. `reason` is the likely
    /// cause, from what this process knows: the lease's clock (run out: `Expired`), the
    /// pool's view of its servers (the server that granted it is no longer the lock's
    /// primary: `Failover`), and otherwise a deletion while the lease ran (`Reset`: a
    /// `reset`, `reset_all`, or a server restarted without it).
    ///
    /// Returned by `unlock` and `extend` of every guard, and by
    /// [`RedlockGuard::extend`](crate::RedlockGuard::extend) when the validity had run out.
    #[error("lock `{name}` is not held by this owner: {}", LossDisplay(*reason))]
    NotAcquired {
        /// The lock's name.
        name: String,
        /// The likely cause.
        reason: LostReason,
    },

    /// The lock has no expiry, so it cannot be extended.
    ///
    /// Returned by [`RedisMutexGuard::extend`](crate::RedisMutexGuard::extend) and
    /// [`RedisMutexGuard::renew`](crate::RedisMutexGuard::renew) on a mutex built without
    /// [`expire`](crate::RedisMutexBuilder::expire).
    #[error("lock `{name}` has no expiry and cannot be extended; build it with `.expire(..)`")]
    NotExpirable {
        /// The lock's name.
        name: String,
    },

    /// The lease was lost while the guard was held: a renewal found another owner or none,
    /// or Redis could not be reached before the lease ran out. Whatever the guard protected
    /// may have been entered by someone else since.
    ///
    /// Returned by `ensure_held`, `extend` and `unlock` of every guard once its `is_lost()`
    /// is true, and by [`RedisMutex::with_lock`](crate::RedisMutex::with_lock) when the
    /// lock was lost while the closure ran.
    #[error(
        "lock `{name}` was lost while held: {}; stop the work it protected and lock again",
        LossDisplay(*reason)
    )]
    LockLost {
        /// The lock's name.
        name: String,
        /// Why, as far as this process knows (see [`Error::NotAcquired`]).
        reason: LostReason,
    },

    /// A builder was given options that cannot work together, or a call an argument it
    /// cannot use.
    ///
    /// Returned by every `build()`, by the `new` constructors, and by calls given a bad
    /// duration or name (`extend`, [`Redlock::lock`](crate::Redlock::lock)).
    #[error("invalid `{field}`: {reason}")]
    InvalidOptions {
        /// The builder method (option) or the argument at fault.
        field: &'static str,
        /// What is wrong with it and what would be accepted.
        reason: String,
    },

    /// A Redlock attempt was not granted by a majority of instances within the lease, or
    /// too many instances failed for the answer to be known.
    ///
    /// Returned by [`Redlock::lock`](crate::Redlock::lock),
    /// [`Redlock::try_lock`](crate::Redlock::try_lock) (inside
    /// [`TryLockError::Error`], when failures decide it) and
    /// [`RedlockGuard::extend`](crate::RedlockGuard::extend); by
    /// [`Redlock::is_locked`](crate::Redlock::is_locked),
    /// [`RedlockGuard::ensure_held`](crate::RedlockGuard::ensure_held) and
    /// [`RedlockGuard::unlock`](crate::RedlockGuard::unlock) when the failing instances
    /// decide the answer.
    #[error("{}", NoQuorumDisplay { granted: *granted, needed: *needed, failures })]
    NoQuorum {
        /// How many instances granted the request in the last attempt (for `is_locked`,
        /// how many hold the key; for `unlock`, how many released it).
        granted: usize,
        /// How many grants make a majority.
        needed: usize,
        /// The instances that failed with an error (not those that were merely held by
        /// someone else), as `(index into the pool list, error)`.
        failures: Vec<(usize, Error)>,
    },

    /// A key of the lock holds a hash, list or other type, not what the lock stores there:
    /// some other program uses the name. Nothing was changed.
    ///
    /// Returned by every call that reads or writes the lock's keys, and by
    /// [`lock_info`](crate::lock_info).
    #[error("{}", WrongTypeDisplay { name, key: key.as_deref() })]
    WrongType {
        /// The lock's name (a read-write lock's path).
        name: String,
        /// The key that holds another type, where it is known (`lock:<name>`, say).
        key: Option<String>,
    },

    /// Fewer replicas than asked acknowledged a grant in time, so a failover could lose it.
    /// The grant was released again: the lock is not held.
    ///
    /// Returned by the locking methods of a mutex or read-write lock built with
    /// `wait_replicas`.
    #[error(
        "the grant reached {acked} of the {wanted} replicas asked for in time, so it was \
         released; check the replicas, or lower `wait_replicas`"
    )]
    NotReplicated {
        /// How many replicas acknowledged the grant.
        acked: usize,
        /// How many were asked for.
        wanted: usize,
    },

    /// No connection to the server could be made: it refused, did not answer within the
    /// connect timeout, its name did not resolve, or TLS failed; or the server closed a
    /// connection in use (it restarted, or a proxy or the network cut it).
    ///
    /// Returned by [`Pool::new`](crate::Pool::new) and the other pool constructors, and by
    /// every method that talks to Redis.
    #[error("{}", UnreachableDisplay { server, source })]
    Unreachable {
        /// The server: `host:port`, or a socket path.
        server: String,
        /// What the connection attempt failed with.
        #[source]
        source: redis::RedisError,
    },

    /// The server refused our credentials (a wrong password or user name, or a user not
    /// allowed to log in), or wants a password and was given none.
    ///
    /// Returned by the pool constructors and by every method that talks to Redis.
    #[error("{}", AuthFailedDisplay { server, source })]
    AuthFailed {
        /// The server: `host:port`, or a socket path.
        server: String,
        /// The server's answer.
        #[source]
        source: redis::RedisError,
    },

    /// A lock request got no answer, and a failover (or a slot migration) put the lock on
    /// another server before the request could be undone there. If the request ran and
    /// reached the new primary before it took over, the lock is held there by nobody until
    /// it expires, or, without an expiry, until it is reset; `lock_info` shows it. Logged
    /// at WARN too.
    ///
    /// Returned by the locking methods of a mutex or read-write lock behind Sentinel or on
    /// a cluster.
    #[error(
        "a request for lock `{name}` to redis at {server} got no answer and a failover moved \
         the lock before the request could be undone; it may be held by nobody until it \
         expires, or until it is reset if it has no expiry (`lock_info` shows who holds it)"
    )]
    Stranded {
        /// The lock's name.
        name: String,
        /// The server the request went to.
        server: String,
    },

    /// The server did not answer within the response timeout: it is stalled, overloaded or
    /// cut off. The call's effect is unknown; the crate has undone what it could.
    ///
    /// Returned by every method that talks to Redis.
    #[error(
        "redis at {server} did not answer within {after:?}; it may be stalled, overloaded or cut off"
    )]
    Timeout {
        /// The server: `host:port`, or a socket path.
        server: String,
        /// How long we waited.
        after: Duration,
    },

    /// No pooled connection became free in time: every connection of the pool was in use.
    ///
    /// Returned by every method that talks to Redis.
    #[error(
        "no connection to {server} became free within {after:?}; raise the pool's `max_size`, or hold fewer locks at once"
    )]
    PoolTimeout {
        /// The server: `host:port`, or a socket path.
        server: String,
        /// How long we waited.
        after: Duration,
    },

    /// The server answered a command with an error (not a timeout, not a refused
    /// connection): an ACL that forbids a command, a read-only replica, a server out of
    /// memory.
    ///
    /// Returned by every method that talks to Redis.
    #[error("redis at {server} answered with an error: {source}")]
    Redis {
        /// The server: `host:port`, or a socket path.
        server: String,
        /// The server's error.
        #[source]
        source: redis::RedisError,
    },

    /// A reply had a shape this crate does not expect: the server is not a Redis 6.2+ (or
    /// Valkey), or a script of another version answered under our script's hash.
    ///
    /// Returned by every method that talks to Redis.
    #[error("unexpected reply from redis to {what}; use redis 6.2 or newer, or valkey")]
    Protocol {
        /// The request that got the reply.
        what: &'static str,
    },

    /// The process could not start a background thread that renews leases.
    ///
    /// Returned by the locking methods of a mutex or read-write lock with auto-renewal, and
    /// of a Redlock built with [`auto_extend(true)`](crate::RedlockBuilder::auto_extend);
    /// the lock is released again, and a later call tries again.
    #[error("could not start the lease renewal thread: {0}; the process may be out of threads")]
    RenewalThread(#[source] std::io::Error),

    /// The tokio runtime shut down before an async call (the `tokio` feature's
    /// `lock_async`, ...) could run on its blocking pool: the call did not run, so nothing
    /// was taken or released (a guard's release then happens as it is dropped).
    ///
    /// Returned by the async methods of the `tokio` feature.
    #[error("the tokio runtime shut down before the call could run; nothing was taken")]
    RuntimeShutDown,

    /// A lock handle no longer names the lock's current grant: the grant was resumed
    /// already, released, ran out, or the lock was taken again since. Nothing was changed.
    ///
    /// Returned by [`RedisMutex::resume`](crate::RedisMutex::resume),
    /// [`RedisRwLock::resume_read`](crate::RedisRwLock::resume_read) and
    /// [`RedisRwLock::resume_write`](crate::RedisRwLock::resume_write).
    #[error(
        "the handle of lock `{name}` no longer names its current grant (it was resumed \
         already, released, expired or taken again); lock it anew instead"
    )]
    HandleStale {
        /// The lock's name.
        name: String,
    },

    /// A release could not be sent, or got no answer (the server was unreachable, or slow):
    /// it is sent again in the background, every few hundred milliseconds, until it is
    /// answered or `retry_for` (what was left of the lease; a minute for a lock without
    /// expiry) has passed. The guard is gone: the lock is free once a retry lands, or when
    /// its lease runs out, whichever comes first.
    ///
    /// Returned by `unlock` of every guard and `release` of a semaphore permit.
    #[error(
        "lock `{name}` could not be released now ({}); the release is sent again in the \
         background for up to {retry_for:.1?}, while its lease lasts",
        cause.to_string().trim_end_matches(MAY_TRY_AGAIN)
    )]
    ReleaseDeferred {
        /// The lock's name.
        name: String,
        /// How long the release is retried for.
        retry_for: Duration,
        /// Why the release could not be sent (in the message, not as its `source()`: that
        /// error's advice to try the call again is for a call the caller can make again,
        /// and this one is made again for them).
        cause: Box<Error>,
    },
}

impl Error {
    /// True for [`Error::LockLost`].
    pub fn is_lock_lost(&self) -> bool {
        matches!(self, Error::LockLost { .. })
    }

    /// True for [`Error::NotAcquired`].
    pub fn is_not_acquired(&self) -> bool {
        matches!(self, Error::NotAcquired { .. })
    }

    /// True for [`Error::NoQuorum`].
    pub fn is_no_quorum(&self) -> bool {
        matches!(self, Error::NoQuorum { .. })
    }

    /// True for [`Error::WrongType`].
    pub fn is_wrong_type(&self) -> bool {
        matches!(self, Error::WrongType { .. })
    }

    /// True for every timeout: a reply that did not come ([`Error::Timeout`]), a pool with
    /// no free connection ([`Error::PoolTimeout`]), and a connection attempt that timed
    /// out ([`Error::Unreachable`]); and for a release deferred by one
    /// ([`Error::ReleaseDeferred`]).
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::PoolTimeout { .. } => true,
            Error::Unreachable { source, .. } => source.is_timeout(),
            Error::ReleaseDeferred { cause, .. } => cause.is_timeout(),
            _ => false,
        }
    }

    /// True when no connection could be made: [`Error::Unreachable`], or a release
    /// deferred for that ([`Error::ReleaseDeferred`]).
    pub fn is_unreachable(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::ReleaseDeferred { cause, .. } => cause.is_unreachable(),
            _ => false,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidOptions {
            field,
            reason: reason.into(),
        }
    }
}

impl fmt::Debug for Error {
    /// The variant's name and the message, as `std::io::Error`'s `Debug` gives its kind and
    /// message: what a `?` in `main` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let variant = match self {
            Error::NotAcquired { .. } => "NotAcquired",
            Error::NotExpirable { .. } => "NotExpirable",
            Error::LockLost { .. } => "LockLost",
            Error::InvalidOptions { .. } => "InvalidOptions",
            Error::NoQuorum { .. } => "NoQuorum",
            Error::WrongType { .. } => "WrongType",
            Error::NotReplicated { .. } => "NotReplicated",
            Error::Unreachable { .. } => "Unreachable",
            Error::AuthFailed { .. } => "AuthFailed",
            Error::Stranded { .. } => "Stranded",
            Error::Timeout { .. } => "Timeout",
            Error::PoolTimeout { .. } => "PoolTimeout",
            Error::Redis { .. } => "Redis",
            Error::Protocol { .. } => "Protocol",
            Error::RenewalThread(_) => "RenewalThread",
            Error::HandleStale { .. } => "HandleStale",
            Error::RuntimeShutDown => "RuntimeShutDown",
            Error::ReleaseDeferred { .. } => "ReleaseDeferred",
        };
        write!(f, "{variant}: {self}")
    }
}

/// The I/O error under `e`, if it is one.
fn io_error(e: &redis::RedisError) -> Option<&std::io::Error> {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    std::error::Error::source(e).and_then(|source| {
        source.downcast_ref::<std::io::Error>().or_else(|| {
            source
                .downcast_ref::<Shared>()
                .and_then(|shared| shared.downcast_ref::<std::io::Error>())
        })
    })
}

struct UnreachableDisplay<'a> {
    server: &'a str,
    source: &'a redis::RedisError,
}

impl fmt::Display for UnreachableDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
        let (server, e) = (self.server, self.source);
        let closed = io_error(e).is_some_and(|io| {
            matches!(
                io.kind(),
                UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted
            )
        });
        if closed && !e.is_connection_refusal() {
            return write!(
                f,
                "redis at {server} closed the connection (it restarted, or a proxy or the \
                 network cut it){MAY_TRY_AGAIN}"
            );
        }
        let what = if e.is_connection_refusal() && !e.is_timeout() {
            "connection refused".to_owned()
        } else if e.is_timeout() {
            "timed out".to_owned()
        } else if matches!(
            e.kind(),
            redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType
        ) {
            return write!(
                f,
                "what answers at {server} does not speak the Redis protocol (an HTTP server, \
                 say); check the host and port"
            );
        } else {
            e.to_string()
        };
        write!(
            f,
            "cannot connect to redis at {server}: {what}; check that it runs and that the \
             address is right"
        )
    }
}

struct AuthFailedDisplay<'a> {
    server: &'a str,
    source: &'a redis::RedisError,
}

impl fmt::Display for AuthFailedDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (server, e) = (self.server, self.source);
        if e.code() == Some("NOAUTH") {
            return write!(
                f,
                "redis at {server} wants a password and none was given; put it in the url \
                 (redis://:password@host:port/ or redis://user:password@host:port/)"
            );
        }
        write!(
            f,
            "redis at {server} refused our credentials ({e}); check the user name and \
             password in the url"
        )
    }
}

struct WrongTypeDisplay<'a> {
    name: &'a str,
    key: Option<&'a str>,
}

impl fmt::Display for WrongTypeDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name;
        match self.key {
            Some(key) => write!(
                f,
                "key `{key}` of lock `{name}` holds another type than a lock; if nothing \
                 else uses it, delete it (redis-cli DEL '{key}'), or use another lock name"
            ),
            None => write!(
                f,
                "a key of lock `{name}` holds another type than a lock (see redis-cli --scan \
                 --pattern '*{name}*'); if nothing else uses it, delete it, or use another \
                 lock name"
            ),
        }
    }
}

struct NoQuorumDisplay<'a> {
    granted: usize,
    needed: usize,
    failures: &'a [(usize, Error)],
}

impl fmt::Display for NoQuorumDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no quorum: {} of the {} grants needed were given in time",
            self.granted, self.needed
        )?;
        for (index, error) in self.failures {
            write!(f, "; instance {index}: {error}")?;
        }
        f.write_str("; the resource is held elsewhere or too many instances are down")
    }
}

/// Why a non-blocking or timed attempt gave no guard.
///
/// Named as in [`std::sync::TryLockError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TryLockError {
    /// The lock is held (by another process, or another guard of this one), and did not
    /// become free before the timeout.
    #[error(
        "the lock is held; try again later, or wait for it with `lock()` (`read()`, `write()`, \
         `acquire()`)"
    )]
    WouldBlock,
    /// The attempt failed.
    #[error(transparent)]
    Error(#[from] Error),
}

impl TryLockError {
    /// True for [`TryLockError::WouldBlock`].
    pub fn is_would_block(&self) -> bool {
        matches!(self, TryLockError::WouldBlock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> redis::RedisError {
        std::io::Error::new(kind, "x").into()
    }

    #[test]
    fn messages_are_lowercase_and_say_what_to_do() {
        let errors = [
            Error::NotAcquired {
                name: "a".into(),
                reason: LostReason::Expired,
            },
            Error::NotExpirable { name: "a".into() },
            Error::LockLost {
                name: "a".into(),
                reason: LostReason::Reset,
            },
            Error::invalid("expire", "must be greater than zero"),
            Error::NoQuorum {
                granted: 1,
                needed: 3,
                failures: vec![(2, Error::invalid("x", "y"))],
            },
            Error::WrongType {
                name: "a".into(),
                key: Some("lock:a".into()),
            },
            Error::NotReplicated {
                acked: 0,
                wanted: 1,
            },
            Error::Unreachable {
                server: "127.0.0.1:1".into(),
                source: io(std::io::ErrorKind::ConnectionRefused),
            },
            Error::Timeout {
                server: "127.0.0.1:1".into(),
                after: Duration::from_secs(2),
            },
            Error::PoolTimeout {
                server: "127.0.0.1:1".into(),
                after: Duration::from_secs(2),
            },
            Error::Protocol { what: "acquire" },
        ];
        for e in &errors {
            let text = e.to_string();
            assert!(text.chars().next().unwrap().is_lowercase(), "{text}");
            assert!(!text.ends_with('.'), "{text}");
        }
        assert_eq!(
            errors[4].to_string(),
            "no quorum: 1 of the 3 grants needed were given in time; \
             instance 2: invalid `x`: y; \
             the resource is held elsewhere or too many instances are down"
        );
        assert_eq!(
            errors[7].to_string(),
            "cannot connect to redis at 127.0.0.1:1: connection refused; \
             check that it runs and that the address is right"
        );
        assert!(TryLockError::WouldBlock.is_would_block());
        assert!(errors[2].is_lock_lost());
        assert!(errors[7].is_unreachable() && !errors[7].is_timeout());
        assert!(errors[8].is_timeout() && errors[9].is_timeout());
        assert!(errors[5].is_wrong_type());
    }

    #[test]
    fn a_closed_connection_and_a_missing_password_say_what_happened() {
        let closed = Error::Unreachable {
            server: "127.0.0.1:1".into(),
            source: io(std::io::ErrorKind::UnexpectedEof),
        };
        assert_eq!(
            closed.to_string(),
            "redis at 127.0.0.1:1 closed the connection (it restarted, or a proxy or the \
             network cut it); the call may be tried again"
        );
        let noauth = Error::AuthFailed {
            server: "127.0.0.1:1".into(),
            source: crate::conn::tests::server_error("NOAUTH Authentication required."),
        };
        assert!(
            noauth
                .to_string()
                .starts_with("redis at 127.0.0.1:1 wants a password and none was given"),
            "{noauth}"
        );
    }

    #[test]
    fn debug_shows_the_variant_and_the_message() {
        let e = Error::LockLost {
            name: "a".into(),
            reason: LostReason::Reset,
        };
        assert_eq!(format!("{e:?}"), format!("LockLost: {e}"));
        let e = TryLockError::Error(Error::invalid("lease", "x"));
        assert_eq!(
            format!("{e:?}"),
            "Error(InvalidOptions: invalid `lease`: x)"
        );
    }

    #[test]
    fn a_connect_timeout_is_a_timeout_and_unreachable() {
        let e = Error::Unreachable {
            server: "10.0.0.1:6379".into(),
            source: io(std::io::ErrorKind::TimedOut),
        };
        assert!(e.is_timeout() && e.is_unreachable());
        assert!(e.to_string().contains("timed out"), "{e}");
    }

    #[test]
    fn each_predicate_is_true_for_its_variant_only() {
        let unreachable = |kind| Error::Unreachable {
            server: "127.0.0.1:1".into(),
            source: io(kind),
        };
        let timeout = Error::Timeout {
            server: "127.0.0.1:1".into(),
            after: Duration::from_secs(2),
        };
        let errors = [
            Error::NotAcquired {
                name: "a".into(),
                reason: LostReason::Expired,
            },
            Error::LockLost {
                name: "a".into(),
                reason: LostReason::Reset,
            },
            Error::NoQuorum {
                granted: 1,
                needed: 3,
                failures: vec![],
            },
            Error::WrongType {
                name: "a".into(),
                key: Some("lock:a".into()),
            },
            unreachable(std::io::ErrorKind::ConnectionRefused),
            timeout,
            Error::invalid("expire", "x"),
        ];
        type Predicate = fn(&Error) -> bool;
        let predicates: [(Predicate, &[usize]); 6] = [
            (Error::is_not_acquired, &[0]),
            (Error::is_lock_lost, &[1]),
            (Error::is_no_quorum, &[2]),
            (Error::is_wrong_type, &[3]),
            (Error::is_unreachable, &[4]),
            (Error::is_timeout, &[5]),
        ];
        for (index, (predicate, true_for)) in predicates.iter().enumerate() {
            for (at, e) in errors.iter().enumerate() {
                assert_eq!(
                    predicate(e),
                    true_for.contains(&at),
                    "predicate {index} on {e}"
                );
            }
        }
        let would_block = TryLockError::WouldBlock;
        let failed = TryLockError::from(Error::LockLost {
            name: "a".into(),
            reason: LostReason::Reset,
        });
        assert!(would_block.is_would_block() && !failed.is_would_block());
    }

    #[test]
    fn a_connect_failure_neither_refused_nor_timed_out_says_what_it_was() {
        let e = Error::Unreachable {
            server: "127.0.0.1:6380".into(),
            source: std::io::Error::other("tls handshake failed").into(),
        };
        let text = e.to_string();
        assert!(text.contains("tls handshake failed"), "{text}");
        assert!(!text.contains("connection refused"), "{text}");
        assert!(!e.is_timeout() && e.is_unreachable());
    }
}
