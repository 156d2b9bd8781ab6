//! Whether a server could be connected to at the last attempt: logged once per change of
//! state, and told to callers waiting for a connection so they need not wait out their
//! timeout.

use parking_lot::Mutex;

use crate::error::Error;

/// The outcome of the last connection attempt to one server.
#[derive(Debug)]
pub(crate) struct Health {
    server: String,
    last_failure: Mutex<Option<Failure>>,
}

/// Why the last connection attempt failed.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    auth: bool,
    /// What is at the address is not what the pool was built for (a Sentinel given as a
    /// server, a database it does not have, ...): the setting to change, and how.
    wrong: Option<(&'static str, String)>,
    source: redis::RedisError,
}

impl Failure {
    /// Sorts a failed connection attempt: refused credentials, or no connection at all.
    pub(super) fn new(source: redis::RedisError) -> Failure {
        let auth = source.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(source.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"));
        Failure {
            auth,
            wrong: None,
            source,
        }
    }

    /// The server at the address is not what the pool was built for: `field` says what to
    /// change, `reason` (naming the server) what is there and what to use instead.
    pub(super) fn wrong(field: &'static str, reason: String, source: redis::RedisError) -> Failure {
        Failure {
            auth: false,
            wrong: Some((field, reason)),
            source,
        }
    }

    /// This failure, or, when what answered does not speak the Redis protocol (a parse
    /// error: an HTTP server, say), one that says so and names `field` (`server` is the
    /// address) as the setting to change.
    pub(super) fn not_redis(self, field: &'static str, server: &str) -> Failure {
        if !matches!(
            self.source.kind(),
            redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType
        ) {
            return self;
        }
        let reason = format!(
            "what answers at {server} does not speak the Redis protocol (an HTTP server, \
             say); check the host and port"
        );
        Failure::wrong(field, reason, self.source)
    }

    /// Whether the credentials were refused.
    pub(super) fn is_auth(&self) -> bool {
        self.auth
    }

    /// The error the attempt failed with.
    pub(super) fn into_source(self) -> redis::RedisError {
        self.source
    }

    pub(super) fn to_error(&self, server: &str) -> Error {
        if let Some((field, reason)) = &self.wrong {
            return Error::invalid(field, reason.clone());
        }
        let server = server.to_owned();
        let source = self.source.clone();
        if self.auth {
            Error::AuthFailed { server, source }
        } else {
            Error::Unreachable { server, source }
        }
    }
}

impl Health {
    pub(super) fn new(server: String) -> Health {
        Health {
            server,
            last_failure: Mutex::new(None),
        }
    }

    pub(super) fn server(&self) -> &str {
        &self.server
    }

    /// Records a successful connection; logs the recovery if the last attempt had failed.
    pub(super) fn connected(&self) {
        if self.last_failure.lock().take().is_some() {
            log::info!("connected to redis at {} again", self.server);
        }
    }

    /// Records a failed connection attempt; logs it at WARN if the last one had succeeded.
    /// Returns the error for the caller.
    pub(super) fn failed(&self, failure: Failure) -> Error {
        let error = failure.to_error(&self.server);
        let mut last = self.last_failure.lock();
        if last.is_none() {
            log::warn!("{error}; retrying in the background");
        }
        *last = Some(failure);
        error
    }

    /// Why the last connection attempt failed, if it did.
    pub(super) fn failure(&self) -> Option<Error> {
        self.last_failure
            .lock()
            .as_ref()
            .map(|f| f.to_error(&self.server))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_kept_until_a_connection_succeeds() {
        let health = Health::new("127.0.0.1:1".into());
        assert!(health.failure().is_none());
        let refused: redis::RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        assert!(health.failed(Failure::new(refused)).is_unreachable());
        assert!(health.failure().unwrap().is_unreachable());
        health.connected();
        assert!(health.failure().is_none());
        let auth = redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        assert!(matches!(
            health.failed(Failure::new(auth)),
            Error::AuthFailed { .. }
        ));
    }
}
