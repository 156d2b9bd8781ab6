//! What a failed call means: whether its reply may still come ([`reply_pending`]), whether
//! its effect is unknown ([`reply_lost`]), and this crate's error for it ([`classify`]).

use std::time::Duration;

use crate::error::Error;

/// Whether a read ended before its reply came but the connection may still deliver it: a
/// timeout, or a signal that interrupted the read (a process stopped and continued).
/// redis-rs skips the late reply on the connection's next read.
pub(crate) fn reply_pending(e: &redis::RedisError) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let io = std::error::Error::source(e).and_then(|source| {
        source.downcast_ref::<std::io::Error>().or_else(|| {
            source
                .downcast_ref::<Shared>()
                .and_then(|shared| shared.downcast_ref::<std::io::Error>())
        })
    });
    e.is_timeout() || io.is_some_and(|io| io.kind() == std::io::ErrorKind::Interrupted)
}

/// Whether a failed call's effect is unknown: no reply came (a timeout, a broken
/// connection), so Redis may have run it, or may still.
pub(crate) fn reply_lost(error: &redis::RedisError) -> bool {
    !matches!(
        error.kind(),
        redis::ErrorKind::Server(_)
            | redis::ErrorKind::Extension
            | redis::ErrorKind::UnexpectedReturnType
            | redis::ErrorKind::Parse
    )
}

/// This crate's error for `e`, a failure of `what` on a connection to `server` whose reads
/// were bounded by `after`, about the lock `lock`.
pub(crate) fn classify(
    e: redis::RedisError,
    server: &str,
    after: Duration,
    lock: &str,
    what: &'static str,
) -> Error {
    let server = server.to_owned();
    // Redis 7 passes a script's WRONGTYPE on with its code; 6.2 wraps it in an ERR.
    if e.code() == Some("WRONGTYPE") || e.detail().is_some_and(|d| d.contains("WRONGTYPE")) {
        return Error::WrongType {
            name: lock.to_owned(),
            key: None,
        };
    }
    if reply_pending(&e) {
        return Error::Timeout { server, after };
    }
    match e.kind() {
        redis::ErrorKind::AuthenticationFailed => Error::AuthFailed { server, source: e },
        redis::ErrorKind::UnexpectedReturnType | redis::ErrorKind::Parse => {
            Error::Protocol { what }
        }
        redis::ErrorKind::Server(_) | redis::ErrorKind::Extension => {
            Error::Redis { server, source: e }
        }
        _ if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
            Error::Unreachable { server, source: e }
        }
        _ => Error::Redis { server, source: e },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::tests::server_error;

    fn io(kind: std::io::ErrorKind) -> redis::RedisError {
        std::io::Error::new(kind, "x").into()
    }

    #[test]
    fn an_interrupted_read_may_still_get_its_reply() {
        assert!(reply_pending(&io(std::io::ErrorKind::Interrupted)));
        assert!(reply_pending(&io(std::io::ErrorKind::TimedOut)));
        assert!(!reply_pending(&io(std::io::ErrorKind::ConnectionReset)));
        assert!(!reply_pending(&server_error("ERR no")));
    }

    #[test]
    fn only_answers_count_as_replies() {
        assert!(reply_lost(&io(std::io::ErrorKind::TimedOut)));
        assert!(reply_lost(&io(std::io::ErrorKind::ConnectionReset)));
        assert!(!reply_lost(&server_error("ERR no")));
        assert!(!reply_lost(&server_error("WRONGTYPE no")));
        assert!(!reply_lost(&server_error("SOMETHINGNEW no")));
    }

    #[test]
    fn errors_name_their_server_and_kind() {
        let c = |e| classify(e, "h:1", Duration::from_secs(2), "jobs", "acquire");
        assert!(matches!(
            c(server_error("WRONGTYPE Operation against a key")),
            Error::WrongType { name, key: None } if name == "jobs"
        ));
        assert!(matches!(
            c(io(std::io::ErrorKind::TimedOut)),
            Error::Timeout { server, .. } if server == "h:1"
        ));
        assert!(c(io(std::io::ErrorKind::ConnectionRefused)).is_unreachable());
        assert!(matches!(
            c(server_error("NOPERM no")),
            Error::Redis { server, .. } if server == "h:1"
        ));
        let wrong_shape =
            redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "shape"));
        assert!(matches!(
            c(wrong_shape),
            Error::Protocol { what: "acquire" }
        ));
    }
}
