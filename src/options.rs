//! Lock options, their defaults and their validation.

use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;

use crate::lease::OnLost;
use crate::{Error, Result};

/// How long a release signal waits for a waiter before Redis drops it (python-redis-lock's
/// default).
pub(crate) const DEFAULT_SIGNAL_EXPIRE: Duration = Duration::from_millis(1000);

/// How long any one Redis reply may take before the call fails.
pub(crate) const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Expiries past this are refused: Redis stores expiry times as milliseconds since 1970
/// in a signed 64-bit number, and a lease of decades is a lock that never expires.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// A renewal needs a round trip or two inside a third of the lease.
pub(crate) const MIN_RENEWED_EXPIRE: Duration = Duration::from_millis(30);

/// Options as the builder collected them.
#[derive(Clone, Default)]
pub(crate) struct LockOptionsBuilder {
    pub(crate) expire: Option<Duration>,
    pub(crate) owner_id: Option<String>,
    pub(crate) signal_expire: Option<Duration>,
    pub(crate) auto_renewal: bool,
    pub(crate) on_lost: Option<OnLost>,
    pub(crate) response_timeout: Option<Duration>,
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
}

impl std::fmt::Debug for LockOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockOptions")
            .field("expire", &self.expire)
            .field("owner_id", &self.owner_id)
            .field("signal_expire", &self.signal_expire)
            .field("auto_renewal", &self.auto_renewal)
            .field("on_lost", &self.on_lost.as_ref().map(|_| "Fn(&str)"))
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

fn check_duration(field: &'static str, d: Duration) -> Result<Duration> {
    if d < Duration::from_millis(1) {
        return Err(Error::invalid(
            field,
            format!("{d:?} is shorter than Redis' resolution; give at least 1 ms"),
        ));
    }
    if d > MAX_DURATION {
        return Err(Error::invalid(
            field,
            format!("{d:?} is longer than the 10 years this crate accepts"),
        ));
    }
    Ok(d)
}

impl Default for LockOptions {
    /// The options of `RedisMutex::new` and `RedisRwLock::new`: no expiry, a random owner
    /// id, and the default signal expiry and reply timeout.
    fn default() -> Self {
        LockOptions {
            expire: None,
            owner_id: random_id(),
            signal_expire: DEFAULT_SIGNAL_EXPIRE,
            auto_renewal: false,
            on_lost: None,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        }
    }
}

impl LockOptionsBuilder {
    pub(crate) fn on_lost(&mut self, callback: impl Fn(&str) + Send + Sync + 'static) {
        self.on_lost = Some(Arc::new(callback));
    }

    pub(crate) fn build(self) -> Result<LockOptions> {
        let expire = match self.expire {
            None => None,
            Some(d) => Some(check_duration("expire", d).map_err(|e| match e {
                Error::InvalidOptions { field, reason } if d > MAX_DURATION => Error::invalid(
                    field,
                    format!("{reason}; leave it unset for a lock that never expires"),
                ),
                e => e,
            })?),
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
            self.response_timeout.unwrap_or(DEFAULT_RESPONSE_TIMEOUT),
        )?;
        if self.auto_renewal {
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
        Ok(LockOptions {
            expire,
            owner_id,
            signal_expire,
            auto_renewal: self.auto_renewal,
            on_lost: self.on_lost,
            response_timeout,
        })
    }
}

/// Checks an `extend(lease)` on the lock `name` whose expiry option is `expire`.
pub(crate) fn check_extend(name: &str, expire: Option<Duration>, lease: Duration) -> Result<()> {
    if expire.is_none() {
        return Err(Error::NotExpirable {
            name: name.to_owned(),
        });
    }
    if lease < Duration::from_millis(1) || lease > MAX_DURATION {
        return Err(Error::invalid(
            "lease",
            format!("{lease:?} is not between 1 ms and 10 years"),
        ));
    }
    Ok(())
}

/// 128 bits from the thread's CSPRNG, as 32 lowercase hex digits.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(result: Result<LockOptions>) -> &'static str {
        match result {
            Err(Error::InvalidOptions { field, .. }) => field,
            Err(e) => panic!("expected InvalidOptions, got {e}"),
            Ok(o) => panic!("expected InvalidOptions, got {o:?}"),
        }
    }

    #[test]
    fn defaults() {
        // What `new` uses without validation is what the builder gives by default.
        let built = LockOptionsBuilder::default().build().unwrap();
        let o = LockOptions::default();
        assert_eq!(
            (
                built.expire,
                built.signal_expire,
                built.response_timeout,
                built.auto_renewal
            ),
            (
                o.expire,
                o.signal_expire,
                o.response_timeout,
                o.auto_renewal
            )
        );
        assert!(built.on_lost.is_none() && o.on_lost.is_none());
        assert_ne!(built.owner_id, o.owner_id, "each gets its own random id");
        assert_eq!(o.expire, None);
        assert_eq!(o.signal_expire, Duration::from_millis(1000));
        assert_eq!(o.response_timeout, Duration::from_secs(2));
        assert!(!o.auto_renewal);
        assert_eq!(o.owner_id.len(), 32);
    }

    #[test]
    fn bad_options_name_their_field() {
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
                    auto_renewal: true,
                    ..Default::default()
                },
                "auto_renewal",
            ),
            (
                LockOptionsBuilder {
                    auto_renewal: true,
                    expire: Some(Duration::from_millis(5)),
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
        ];
        for (builder, field) in cases {
            assert_eq!(field_of(builder.build()), field);
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
}
