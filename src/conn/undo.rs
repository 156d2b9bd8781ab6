//! What a call whose reply was lost owes: its undo, sent right behind it.

use std::time::Duration;

use super::{Conn, checkout, reply_pending};
use crate::{Pool, Result};

/// How long an undo waits for its own reply: not at all, in effect. It was sent right
/// behind the call it undoes, so the server runs it after that call, whenever that is; a
/// reply that does not come in this time is skipped by the connection later, and the caller
/// keeps its bound.
const UNDO_REPLY_WAIT: Duration = Duration::from_millis(1);

/// Sends `commands` to undo a call whose reply was lost on `conn`: on `conn` itself while
/// it is open, so that Redis runs them after the lost call, however late that comes; else
/// on one fresh connection, since the lost call then ran already or never will. Their
/// replies are not waited for (see [`UNDO_REPLY_WAIT`]); an error reply that comes at once,
/// or a failure to send, is returned.
pub(crate) fn undo_after_lost_reply(
    conn: &mut Conn,
    pool: &Pool,
    route: &str,
    response_timeout: Duration,
    commands: &[redis::Cmd],
) -> Result<()> {
    let mut fresh: Option<Conn> = None;
    for command in commands {
        let target = if conn.is_open() {
            &mut *conn
        } else {
            match &mut fresh {
                Some(fresh) => fresh,
                None => fresh.insert(checkout(
                    pool,
                    route,
                    pool.config().connection_timeout.min(response_timeout),
                    response_timeout,
                )?),
            }
        };
        target.set_read_timeout(UNDO_REPLY_WAIT)?;
        let sent = command.query::<redis::Value>(&mut *target);
        target.set_read_timeout(response_timeout)?;
        match sent {
            Ok(_) => {}
            // Sent; its reply is not waited for, nor left for the connection's next user.
            Err(e) if reply_pending(&e) => target.mark_broken(),
            Err(e) => return Err(target.fail(e, "", "an undo")),
        }
    }
    Ok(())
}
