//! What a call whose reply was lost owes: its undo, sent right behind it.

use std::time::Duration;

use super::{Conn, checkout, reply_pending, serves};
use crate::error::{Error, Result};
use crate::pool::Pool;
use crate::time::Deadline;

/// What became of an undo.
#[derive(Debug)]
pub(crate) enum Undone {
    /// Sent right behind the call it undoes, its reply not waited for.
    Sent,
    /// Answered: neither the call nor the undo can still run, so nothing of the call stands.
    Answered,
    /// It failed, and a grant may stand held by nobody until it expires; with the error of
    /// a failover that moved the lock before the undo could reach it.
    Failed(Option<Error>),
}

impl Undone {
    /// The error to return instead of the call's own, if any.
    pub(crate) fn stranded(self) -> Option<Error> {
        match self {
            Undone::Failed(stranded) => stranded,
            Undone::Sent | Undone::Answered => None,
        }
    }
}

/// How long an undo waits for its own reply: not at all, in effect. It was sent right
/// behind the call it undoes, so the server runs it after that call, whenever that is; a
/// reply that does not come in this time is skipped by the connection later, and the caller
/// keeps its bound.
const UNDO_REPLY_WAIT: Duration = Duration::from_millis(1);

/// Sends `commands` to undo a call about the lock `name` whose reply was lost on `conn`,
/// where that call went (`route`: a key of the lock):
///
/// - on `conn` itself while it is open and its server still serves `route`, so that Redis
///   runs them after the lost call, however late that comes; their replies are not waited
///   for (see [`UNDO_REPLY_WAIT`]);
/// - on a fresh connection to that server when `conn` broke, since the lost call then ran
///   already or never will, waiting for the answers until the lost call's deadline (a
///   pooled connection closed by the same event is passed over): [`Undone::Answered`]
///   tells the caller that it may send the call again;
/// - when a failover or a slot migration put `route` on another server meanwhile, on that
///   server, waiting for the answers one response timeout more (the one exception to a
///   call's bound): the lost call's effect, if it reached the new primary before it took
///   over, is there, and a demoted server's writes are lost anyway.
///
/// # Errors
///
/// An error reply that comes at once, or a failure to send. [`Error::Stranded`] when the
/// undo on another server failed: a grant may stand there, held by nobody.
pub(crate) fn undo_after_lost_reply(
    conn: &mut Conn,
    pool: &Pool,
    route: &str,
    name: &str,
    commands: &[redis::Cmd],
) -> Result<Undone> {
    let serves = serves(conn, pool, route);
    if conn.is_open() && serves {
        return send_unwaited(conn, commands).map(|()| Undone::Sent);
    }
    if serves {
        return send_awaited(pool, route, conn.deadline(), commands).map(|()| Undone::Answered);
    }
    let stranded = |_| Error::Stranded {
        name: name.to_owned(),
        server: conn.server().to_owned(),
    };
    let deadline = Deadline::after(pool.response_timeout());
    let mut primary = checkout(pool, route, deadline).map_err(stranded)?;
    log::debug!(
        "undoing a request to {} on {}, which serves its key now",
        conn.server(),
        primary.server()
    );
    for command in commands {
        command
            .query::<redis::Value>(&mut *primary)
            .map_err(|e| primary.fail(e, "", "an undo"))
            .map_err(stranded)?;
    }
    Ok(Undone::Answered)
}

/// Sends `commands` on a fresh connection for `route`, waiting for their answers; a pooled
/// connection found closed (by the event that closed the caller's) is passed over.
fn send_awaited(
    pool: &Pool,
    route: &str,
    deadline: Deadline,
    commands: &[redis::Cmd],
) -> Result<()> {
    let ran = super::run_repeatable(pool, route, deadline, |c| {
        let mut pipe = redis::pipe();
        for command in commands {
            pipe.add_command(command.clone()).ignore();
        }
        pipe.query::<()>(&mut **c)
    })?;
    let mut conn = ran.conn;
    ran.result.map_err(|e| conn.fail(e, "", "an undo"))
}

/// Sends `commands` on `target` without waiting for their replies.
pub(crate) fn send_unwaited(target: &mut Conn, commands: &[redis::Cmd]) -> Result<()> {
    for command in commands {
        target.set_read_timeout(UNDO_REPLY_WAIT)?;
        let sent = command.query::<redis::Value>(&mut **target);
        match sent {
            Ok(_) => {}
            // Sent; its reply is not waited for, nor left for the connection's next user.
            Err(e) if reply_pending(&e) => target.mark_broken(),
            Err(e) => return Err(target.fail(e, "", "an undo")),
        }
    }
    Ok(())
}
