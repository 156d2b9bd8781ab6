//! The options every lock kind that waits in Redis shares, their defaults, their validation,
//! and the builder setters that set them (one macro, so that each builder documents each
//! setter with its default without a copy to keep in step).

use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;

use crate::error::{Error, Result};
use crate::lease::{LostLock, OnLost};
use crate::pool::Pool;
use crate::time::{MAX_DURATION, check_duration};

/// How long a release signal waits for a waiter before Redis drops it (python-redis-lock's
/// default).
pub(crate) const DEFAULT_SIGNAL_EXPIRE: Duration = Duration::from_millis(1000);

/// A renewal needs a round trip or two inside a third of the lease.
pub(crate) const MIN_RENEWED_EXPIRE: Duration = Duration::from_millis(30);

/// Options as a builder collected them.
#[derive(Clone, Default)]
pub(crate) struct LockOptionsBuilder {
    pub(crate) expire: Option<Duration>,
    pub(crate) owner_id: Option<String>,
    pub(crate) signal_expire: Option<Duration>,
    pub(crate) auto_renewal: Option<bool>,
    on_lost: Option<OnLost>,
    pub(crate) response_timeout: Option<Duration>,
    pub(crate) wait_replicas: Option<(usize, Duration)>,
    pub(crate) metrics_label: Option<String>,
}

/// What a lock kind uses when a builder leaves an option unset.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Defaults {
    pub(crate) expire: Option<Duration>,
    pub(crate) auto_renewal: bool,
}

/// Options after validation, with defaults filled in.
#[derive(Clone)]
pub(crate) struct LockOptions {
    pub(crate) expire: Option<Duration>,
    pub(crate) owner_id: String,
    pub(crate) signal_expire: Duration,
    pub(crate) auto_renewal: bool,
    pub(crate) on_lost: Option<OnLost>,
    pub(crate) response_timeout: Duration,
    /// After a grant: `WAIT` for this many replicas, this long.
    pub(crate) wait_replicas: Option<(usize, Duration)>,
    /// The `lock` label of the lock's metrics, if the user gave one.
    pub(crate) metrics_label: Option<std::sync::Arc<str>>,
}

impl std::fmt::Debug for LockOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockOptions")
            .field("expire", &self.expire)
            .field("owner_id", &self.owner_id)
            .field("signal_expire", &self.signal_expire)
            .field("auto_renewal", &self.auto_renewal)
            .field("on_lost", &self.on_lost.as_ref().map(|_| "Fn(&LostLock)"))
            .field("response_timeout", &self.response_timeout)
            .field("wait_replicas", &self.wait_replicas)
            .field("metrics_label", &self.metrics_label)
            .finish()
    }
}

impl LockOptionsBuilder {
    pub(crate) fn on_lost(&mut self, callback: impl Fn(&LostLock) + Send + Sync + 'static) {
        self.on_lost = Some(Arc::new(callback));
    }

    /// Validates the options and fills in `defaults` and the pool's response timeout.
    pub(crate) fn build(self, defaults: Defaults, pool: &Pool) -> Result<LockOptions> {
        let expire = match self.expire.or(defaults.expire) {
            None => None,
            Some(d) if d > MAX_DURATION => {
                return Err(Error::invalid(
                    "expire",
                    format!(
                        "{d:?} is longer than the 10 years this crate accepts; leave it unset \
                         for a lock that never expires"
                    ),
                ));
            }
            Some(d) => Some(check_duration("expire", d)?),
        };
        let owner_id = match self.owner_id {
            Some(id) if id.is_empty() => {
                return Err(Error::invalid(
                    "owner_id",
                    "the owner id is empty; give a non-empty id, or leave it unset for a random one",
                ));
            }
            Some(id) => id,
            None => random_id(),
        };
        let signal_expire = check_duration(
            "signal_expire",
            self.signal_expire.unwrap_or(DEFAULT_SIGNAL_EXPIRE),
        )?;
        let response_timeout = check_duration(
            "response_timeout",
            self.response_timeout
                .unwrap_or_else(|| pool.response_timeout()),
        )?;
        let auto_renewal = self.auto_renewal.unwrap_or(defaults.auto_renewal);
        if auto_renewal {
            match expire {
                None => {
                    return Err(Error::invalid(
                        "auto_renewal",
                        "auto-renewal keeps an expiring lease alive, and this lock has no expiry; \
                         set `.expire(..)` too",
                    ));
                }
                Some(d) if d < MIN_RENEWED_EXPIRE => {
                    return Err(Error::invalid(
                        "expire",
                        format!(
                            "{d:?} is too short to renew in time; auto-renewal needs at least {MIN_RENEWED_EXPIRE:?}"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let wait_replicas = match self.wait_replicas {
            Some((0, _)) => {
                return Err(Error::invalid(
                    "wait_replicas",
                    "0 replicas is nothing to wait for; give 1 or more, or leave it unset",
                ));
            }
            Some((n, timeout)) => Some((n, check_duration("wait_replicas", timeout)?)),
            None => None,
        };
        Ok(LockOptions {
            expire,
            owner_id,
            signal_expire,
            auto_renewal,
            on_lost: self.on_lost,
            response_timeout,
            wait_replicas,
            metrics_label: self.metrics_label.map(Into::into),
        })
    }
}

/// 64 random bits as 16 lowercase hex digits, without an allocation: an acquire attempt's
/// or a fair waiter's id, made for every attempt.
#[derive(Clone, Copy)]
pub(crate) struct AttemptId([u8; 16]);

impl AttemptId {
    pub(crate) fn new() -> AttemptId {
        let bits = rand::random::<u64>();
        let mut hex = [0u8; 16];
        for (i, digit) in hex.iter_mut().enumerate() {
            *digit = b"0123456789abcdef"[((bits >> (60 - 4 * i)) & 0xf) as usize];
        }
        AttemptId(hex)
    }

    pub(crate) fn as_str(&self) -> &str {
        // Hex digits only.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// 128 bits from the thread's CSPRNG, as 32 lowercase hex digits.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The setters a builder of a lock that waits in Redis shares with the others, each
/// documented with its default. `$lock` names the lock in the docs ("mutex"), `$guard` its
/// guard type, `$expire_default` and `$renewal_default` the defaults' wording, and
/// `$owner_id` the first paragraph of `owner_id`'s doc: where operators see the id, and what
/// two holders sharing one do to each other, which differ by kind. Without it, the mutex's.
macro_rules! lock_option_setters {
    ($lock:literal, $guard:ty, $expire_default:literal, $renewal_default:literal) => {
        $crate::options::lock_option_setters!(
            $lock,
            $guard,
            $expire_default,
            $renewal_default,
            "Sets the id stored in Redis while we hold the lock, which operators see (in \
             [`get_owner_id`](crate::RedisMutex::get_owner_id), \
             [`list_locks`](crate::list_locks), `redis-mutex list` and `redis-mutex owner`) \
             and which [`reset_owned_by`](crate::reset_owned_by) frees. Give each holder its \
             own, stable id (`\"host-42/report-worker\"`): two lock objects with the same id \
             on the same name can release each other's lock."
        );
    };
    (
        $lock:literal,
        $guard:ty,
        $expire_default:literal,
        $renewal_default:literal,
        $owner_id:literal
    ) => {
        #[doc = concat!("Sets how long the ", $lock, " lives in Redis unless released, renewed or")]
        /// extended first: a holder that crashes frees it when its lease runs out, up to this
        /// long after it crashed.
        ///
        /// Must be between 1 ms and 10 years; with auto-renewal, at least 30 ms. Redis keeps
        /// it to the millisecond.
        ///
        #[doc = concat!("Defaults to ", $expire_default, ".")]
        pub fn expire(mut self, expire: std::time::Duration) -> Self {
            self.options.expire = Some(expire);
            self
        }

        #[doc = $owner_id]
        ///
        /// Must not be empty.
        ///
        /// Defaults to 128 random bits from a CSPRNG, as 32 hex digits, made anew per lock.
        pub fn owner_id(mut self, owner_id: impl Into<String>) -> Self {
            self.options.owner_id = Some(owner_id.into());
            self
        }

        /// Sets how long a wake-up pushed by a release stays in Redis for its waiter to
        /// take. Raise it for waiters that can be slower than this between two attempts.
        ///
        /// Must be between 1 ms and 10 years.
        ///
        /// Defaults to 1 s (as in python-redis-lock).
        pub fn signal_expire(mut self, signal_expire: std::time::Duration) -> Self {
            self.options.signal_expire = Some(signal_expire);
            self
        }

        /// Keeps the lease alive while a guard lives: a renewal thread of the process
        /// extends it each time a third of the [expiry](Self::expire) has passed, and marks
        #[doc = concat!("the guard lost ([`", stringify!($guard), "::is_lost`]) if it finds the lock gone or cannot")]
        /// reach Redis before the lease runs out.
        ///
        /// Needs an [expiry](Self::expire).
        ///
        #[doc = concat!("Defaults to ", $renewal_default, ".")]
        pub fn auto_renewal(mut self, auto_renewal: bool) -> Self {
            self.options.auto_renewal = Some(auto_renewal);
            self
        }

        /// Sets a callback run once, on a renewal thread, when an auto-renewed guard of this
        /// lock is found lost. It gets a [`LostLock`](crate::LostLock): the name, the owner
        /// id, the fencing token and why. Keep it short: it delays the renewal of other
        /// locks while it runs. A panic in it is logged and goes no further.
        ///
        /// Defaults to none (the loss is logged at WARN either way).
        pub fn on_lost(
            mut self,
            callback: impl Fn(&crate::lease::LostLock) + Send + Sync + 'static,
        ) -> Self {
            self.options.on_lost(callback);
            self
        }

        /// Sets how long any one Redis reply may take before the call fails with
        /// [`Error::Timeout`](crate::Error::Timeout), for this lock's calls. Waiting for the
        /// lock is not bound by it: a waiter's `BLPOP` waits as long as its wait.
        ///
        /// Must be between 1 ms and 10 years.
        ///
        /// Defaults to the pool's [response timeout](crate::PoolBuilder::response_timeout).
        pub fn response_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.options.response_timeout = Some(timeout);
            self
        }

        /// After each grant, waits up to `timeout` for `replicas` replicas to acknowledge it
        /// (`WAIT`), so that a failover to one of them keeps the lock. When fewer do, the
        /// grant is released and the call fails with
        /// [`Error::NotReplicated`](crate::Error::NotReplicated). It costs a replica round
        /// trip per grant; see `docs/deployments.md` for what it buys.
        ///
        /// `replicas` must be at least 1; `timeout` between 1 ms and 10 years.
        ///
        /// Defaults to not waiting.
        pub fn wait_replicas(mut self, replicas: usize, timeout: std::time::Duration) -> Self {
            self.options.wait_replicas = Some((replicas, timeout));
            self
        }

        /// Sets the `lock` label of this lock's metrics (with the `metrics` feature; see
        /// `docs/operations.md`). Each distinct label is a time series of its own: give one
        /// to the locks you want to watch one by one, not to locks named per request.
        ///
        /// Defaults to none: the metrics carry only the lock's kind.
        pub fn metrics_label(mut self, label: impl Into<String>) -> Self {
            self.options.metrics_label = Some(label.into());
            self
        }
    };
}

pub(crate) use lock_option_setters;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::tests::unconnected as pool;

    const MUTEX: Defaults = Defaults {
        expire: None,
        auto_renewal: false,
    };

    fn field_of(result: Result<LockOptions>) -> &'static str {
        match result {
            Err(Error::InvalidOptions { field, .. }) => field,
            Err(e) => panic!("expected InvalidOptions, got {e}"),
            Ok(o) => panic!("expected InvalidOptions, got {o:?}"),
        }
    }

    #[test]
    fn defaults() {
        let o = LockOptionsBuilder::default().build(MUTEX, &pool()).unwrap();
        assert_eq!(o.expire, None);
        assert_eq!(o.signal_expire, Duration::from_millis(1000));
        assert_eq!(o.response_timeout, Duration::from_secs(2));
        assert!(!o.auto_renewal);
        assert!(o.wait_replicas.is_none());
        assert_eq!(o.owner_id.len(), 32);
        let other = LockOptionsBuilder::default().build(MUTEX, &pool()).unwrap();
        assert_ne!(o.owner_id, other.owner_id, "each gets its own random id");
        let renewed = Defaults {
            expire: Some(Duration::from_secs(30)),
            auto_renewal: true,
        };
        let o = LockOptionsBuilder::default()
            .build(renewed, &pool())
            .unwrap();
        assert_eq!(
            (o.expire, o.auto_renewal),
            (Some(Duration::from_secs(30)), true)
        );
        let off = LockOptionsBuilder {
            auto_renewal: Some(false),
            ..Default::default()
        };
        assert!(!off.build(renewed, &pool()).unwrap().auto_renewal);
    }

    #[test]
    fn bad_options_name_their_field() {
        let ms = Duration::from_millis;
        let cases: Vec<(LockOptionsBuilder, &str)> = vec![
            (
                LockOptionsBuilder {
                    expire: Some(Duration::ZERO),
                    ..Default::default()
                },
                "expire",
            ),
            (
                LockOptionsBuilder {
                    expire: Some(Duration::MAX),
                    ..Default::default()
                },
                "expire",
            ),
            (
                LockOptionsBuilder {
                    signal_expire: Some(Duration::ZERO),
                    ..Default::default()
                },
                "signal_expire",
            ),
            (
                LockOptionsBuilder {
                    owner_id: Some(String::new()),
                    ..Default::default()
                },
                "owner_id",
            ),
            (
                LockOptionsBuilder {
                    auto_renewal: Some(true),
                    ..Default::default()
                },
                "auto_renewal",
            ),
            (
                LockOptionsBuilder {
                    auto_renewal: Some(true),
                    expire: Some(ms(5)),
                    ..Default::default()
                },
                "expire",
            ),
            (
                LockOptionsBuilder {
                    response_timeout: Some(Duration::from_nanos(10)),
                    ..Default::default()
                },
                "response_timeout",
            ),
            (
                LockOptionsBuilder {
                    wait_replicas: Some((0, ms(100))),
                    ..Default::default()
                },
                "wait_replicas",
            ),
            (
                LockOptionsBuilder {
                    wait_replicas: Some((1, Duration::ZERO)),
                    ..Default::default()
                },
                "wait_replicas",
            ),
        ];
        for (builder, field) in cases {
            assert_eq!(field_of(builder.build(MUTEX, &pool())), field);
        }
    }

    #[test]
    fn the_longest_expiry_and_the_shortest_renewed_one_are_accepted() {
        let ms = Duration::from_millis;
        let longest = LockOptionsBuilder {
            expire: Some(MAX_DURATION),
            ..Default::default()
        };
        assert_eq!(
            longest.build(MUTEX, &pool()).unwrap().expire,
            Some(MAX_DURATION)
        );
        let shortest_renewed = LockOptionsBuilder {
            expire: Some(MIN_RENEWED_EXPIRE),
            auto_renewal: Some(true),
            ..Default::default()
        };
        let o = shortest_renewed.build(MUTEX, &pool()).unwrap();
        assert_eq!((o.expire, o.auto_renewal), (Some(ms(30)), true));
    }

    #[test]
    fn an_expiry_too_long_suggests_no_expiry() {
        let builder = LockOptionsBuilder {
            expire: Some(MAX_DURATION + Duration::from_millis(1)),
            ..Default::default()
        };
        match builder.build(MUTEX, &pool()) {
            Err(Error::InvalidOptions { field, reason }) => {
                assert_eq!(field, "expire");
                assert!(reason.contains("leave it unset"), "{reason}");
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn the_on_lost_callback_is_kept_and_shown_without_its_body() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = calls.clone();
        let mut builder = LockOptionsBuilder {
            owner_id: Some("host-7/report".into()),
            ..Default::default()
        };
        builder.on_lost(move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let o = builder.build(MUTEX, &pool()).unwrap();
        assert_eq!(o.owner_id, "host-7/report");
        let callback = o.on_lost.as_ref().expect("the callback is kept");
        callback(&LostLock {
            name: "a".into(),
            owner_id: "host-7/report".into(),
            fencing_token: None,
            reason: crate::error::LostReason::Expired,
        });
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        let debug = format!("{o:?}");
        for shown in [
            "owner_id: \"host-7/report\"",
            "on_lost: Some(\"Fn(&LostLock)\")",
            "signal_expire: 1s",
        ] {
            assert!(debug.contains(shown), "{shown} in {debug}");
        }
    }

    #[test]
    fn random_ids_are_128_bit_hex_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| random_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| {
            id.len() == 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        }));
    }

    #[test]
    fn attempt_ids_are_64_bit_hex_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..10_000)
            .map(|_| AttemptId::new().as_str().to_owned())
            .collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| {
            id.len() == 16
                && id
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        }));
    }
}
