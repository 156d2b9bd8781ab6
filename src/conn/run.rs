//! Sending one command or script call: through a cluster's redirections and the refusals
//! that say it did not run, never twice otherwise; and, for a call that may grant a lock, its
//! undo when the reply is lost.

use std::thread;
use std::time::Duration;

use super::{Conn, Undone, checkout, checkout_node, reply_lost, reply_pending};
use crate::error::{Error, Result};
use crate::pool::Pool;
use crate::pool::{Redirect, redirect_of};
use crate::time::Deadline;

/// How many redirections or refusals one command follows before giving up.
const MAX_REDIRECTS: u32 = 16;

/// The least time left for a call sent again after its connection turned out closed.
const MIN_RETRY: Duration = Duration::from_millis(10);

/// The first pause after a refusal that may pass (`TRYAGAIN`, `LOADING`, ...); doubled on
/// each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);

/// The outcome of [`run`]: the connection the command went on last (to undo it there, if
/// its reply was lost), and the command's own result.
pub(crate) struct Ran<T> {
    pub(crate) conn: Conn,
    pub(crate) result: redis::RedisResult<T>,
}

impl<T> Ran<T> {
    /// The reply, or this crate's error for its failure (about the lock `lock`, in `what`);
    /// the connection goes back to the pool.
    pub(crate) fn reply(self, lock: &str, what: &'static str) -> Result<T> {
        let Ran { mut conn, result } = self;
        result.map_err(|e| conn.fail(e, lock, what))
    }
}

/// A call that got no answer it could use.
#[derive(Debug)]
pub(crate) enum Failed {
    /// It did nothing: it was never sent, or the server refused it.
    Refused(Error),
    /// It was sent and no reply came in time: Redis may have run it, or may still.
    NoReply(Error),
}

impl Failed {
    pub(crate) fn into_error(self) -> Error {
        match self {
            Failed::Refused(e) | Failed::NoReply(e) => e,
        }
    }
}

impl<T> Ran<T> {
    /// The command's answer, or how it failed, as this crate's error about the lock `lock`
    /// (`what` names the call).
    pub(crate) fn outcome(mut self, lock: &str, what: &'static str) -> Result<T, Failed> {
        self.result.map_err(|e| {
            let lost = reply_lost(&e);
            let e = self.conn.fail(e, lock, what);
            if lost {
                Failed::NoReply(e)
            } else {
                Failed::Refused(e)
            }
        })
    }
}

/// [`run`] for a call that may grant a lock (`what` names it in errors about the lock
/// `lock`), on `conn`, whose deadline bounds it. When its reply is lost, Redis may have run
/// it or may still: `undo` then runs on the same connection before the error is returned,
/// so that no grant is left that nobody holds; an error `undo` returns (a grant it could
/// not undo) is returned instead of the call's own. Every granting call goes through here.
///
/// A pooled connection that turns out to have been closed before any reply came (a server
/// restart, an idle connection cut by the network) fails no call: once its undo is
/// answered on another connection, nothing of the call stands, and it goes again there,
/// within what is left of the same deadline, and not at all when too little is left.
pub(crate) fn run_grant<T>(
    pool: &Pool,
    route: &str,
    conn: Conn,
    lock: &str,
    what: &'static str,
    mut op: impl FnMut(&mut Conn) -> redis::RedisResult<T>,
    mut undo: impl FnMut(&mut Conn, &redis::RedisError) -> Undone,
) -> Result<(Conn, T)> {
    let mut conn = conn;
    let deadline = conn.deadline();
    // Every idle connection may have been closed by the same event: each is tried once.
    let mut retries = pool.config().max_size.saturating_sub(1);
    loop {
        let mut ran = run(pool, route, Some(conn), deadline, &mut op)?;
        let e = match ran.result {
            Ok(reply) => return Ok((ran.conn, reply)),
            Err(e) if !reply_lost(&e) => return Err(ran.conn.fail(e, lock, what)),
            Err(e) => e,
        };
        let closed = ran.conn.reused && !reply_pending(&e);
        let undone = undo(&mut ran.conn, &e);
        match undone {
            Undone::Answered if closed && retries > 0 && deadline.left() >= MIN_RETRY => {
                retries -= 1;
                log::debug!(
                    "a pooled connection to {} was closed before {what} `{lock}` got its \
                     reply; undone, sending again",
                    ran.conn.server()
                );
                ran.conn.mark_broken();
                drop(ran.conn);
                conn = checkout(pool, route, deadline)?;
            }
            undone => {
                let error = ran.conn.fail(e, lock, what);
                return Err(undone.stranded().unwrap_or(error));
            }
        }
    }
}

/// Runs `op` (one command or one script call, on `conn` if given, else on a connection
/// checked out for `route`), following the cluster's redirections and retrying the
/// refusals that say the command did not run, all by `deadline`.
///
/// Only a failure to get a connection is an `Err`; the command's own failure is in
/// [`Ran::result`], with the connection, so that the caller can tell a lost reply (see
/// [`reply_lost`]) from an answer, and undo the first on the same connection.
pub(crate) fn run<T>(
    pool: &Pool,
    route: &str,
    conn: Option<Conn>,
    deadline: Deadline,
    mut op: impl FnMut(&mut Conn) -> redis::RedisResult<T>,
) -> Result<Ran<T>> {
    let mut conn = match conn {
        Some(mut conn) => {
            conn.answer_by(deadline)?;
            conn
        }
        None => checkout(pool, route, deadline)?,
    };
    let mut backoff = FIRST_BACKOFF;
    let mut asking = false;
    for _ in 0..MAX_REDIRECTS {
        let result = if asking {
            redis::cmd("ASKING")
                .query::<()>(&mut conn)
                .and_then(|()| op(&mut conn))
        } else {
            op(&mut conn)
        };
        asking = false;
        let redirect = match &result {
            Err(e) => redirect_of(e),
            Ok(_) => None,
        };
        let Some(redirect) = redirect.filter(|_| !deadline.passed()) else {
            return Ok(Ran { conn, result });
        };
        log::trace!("{} refused a command: {redirect:?}", conn.server());
        let cluster = pool.as_cluster();
        conn = match (redirect, cluster) {
            (Redirect::Moved { slot, addr }, Some(cluster)) => {
                cluster.moved(slot, &addr);
                checkout(pool, route, deadline)?
            }
            (Redirect::Ask { addr }, Some(cluster)) => {
                asking = true;
                checkout_node(pool, &cluster.node(&addr), deadline)?
            }
            (Redirect::Moved { .. } | Redirect::Ask { .. }, None) => {
                return Err(Error::invalid(
                    "pool",
                    format!(
                        "redis at {} is a cluster node; build the pool with `Pool::cluster`",
                        conn.server()
                    ),
                ));
            }
            (Redirect::Later, _) => {
                drop(conn);
                thread::sleep(backoff.min(deadline.left()));
                backoff = backoff.saturating_mul(2);
                checkout(pool, route, deadline)?
            }
            (Redirect::Demoted, cluster) => {
                conn.mark_broken();
                drop(conn);
                if let Some(cluster) = cluster {
                    cluster.refresh().ok();
                }
                checkout(pool, route, deadline)?
            }
        };
    }
    let result = op(&mut conn);
    Ok(Ran { conn, result })
}

/// [`run`] on a connection checked out for `route`, for a command that may be sent twice
/// (a compare-and-set, a read): when the pooled connection turns out to have been closed
/// before any reply came (the server or the network dropped it while it sat idle), the
/// command goes once more on another connection, instead of failing a call that never
/// reached the server.
pub(crate) fn run_repeatable<T>(
    pool: &Pool,
    route: &str,
    deadline: Deadline,
    mut op: impl FnMut(&mut Conn) -> redis::RedisResult<T>,
) -> Result<Ran<T>> {
    // Every idle connection may have been closed by the same event: try each at most once.
    for _ in 0..pool.config().max_size {
        let mut ran = run(pool, route, None, deadline, &mut op)?;
        let closed = match &ran.result {
            Err(e) => ran.conn.reused && reply_lost(e) && !reply_pending(e),
            Ok(_) => false,
        };
        if !closed || deadline.passed() {
            return Ok(ran);
        }
        log::debug!(
            "a pooled connection to {} was closed; sending again",
            ran.conn.server()
        );
        ran.conn.mark_broken();
    }
    run(pool, route, None, deadline, op)
}
