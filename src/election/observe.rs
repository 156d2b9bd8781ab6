//! [`Observer`]: follows an election, woken by each change.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::keys::ElectionKeys;
use super::{Leader, OBSERVER_TTL, read_leader};
use crate::conn;
use crate::error::Result;
use crate::lease::clock_margin;
use crate::options::random_id;
use crate::pool::Pool;
use crate::time::Deadline;
use crate::wait::{Waited, Waiting};

/// Follows a [`RedisElection`](crate::RedisElection): who leads, item by item. Made by
/// [`observe`](crate::RedisElection::observe).
///
/// The first item is who led when it started; then one item per change: a new leader, a
/// new value [proclaimed](crate::Leadership::proclaim), nobody leading (`None`). As an
/// [`Iterator`] it waits for ever for the next change (it never ends; a failure is an
/// `Err` item, and the next call tries again); [`next_timeout`](Self::next_timeout) waits
/// at most a given time.
///
/// It does not poll. The observer registers in Redis (`election-observers:<name>`, for
/// 30 s, renewed by each read), and every change (a campaign won, a proclaim, a resign, a
/// reset) pushes a wake-up to its own list (`election-observe:<name>:<id>`), on which it
/// sleeps in `BLPOP`: it sees the change within a round trip. A leader that crashed changes
/// nothing in Redis until its lease ends: the observer knows when that is (it read it), and
/// wakes then. Between waits it holds no connection; each wait borrows one of the pool's
/// for its `BLPOP` (as a waiting lock does, within the pool's turns to block). Terms it
/// reports never go back; a change it missed while Redis could not be reached is reported
/// by the next state it reads, and changes closer together than a round trip may come as
/// one, the latest (a leader that proclaims twice at once). Dropping it takes its
/// registration out.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use redis_mutex::{Pool, RedisElection};
///
/// let election = RedisElection::new(Pool::new("redis://127.0.0.1/")?, "scheduler")?;
/// let mut observer = election.observe()?;
/// let now = observer.next().unwrap()?; // who leads now
/// match observer.next_timeout(Duration::from_secs(5)) {
///     Some(change) => println!("now led by {:?}", change?.map(|l| l.owner_id)),
///     None => println!("no change in 5 s"),
/// }
/// # Ok::<(), redis_mutex::Error>(())
/// ```
pub struct Observer {
    pool: Pool,
    name: Arc<str>,
    keys: ElectionKeys,
    /// Its id: its entry in the observers' set, and its list.
    id: String,
    response_timeout: Duration,
    /// The state read when it started, not handed out yet.
    first: Option<Option<Leader>>,
    /// The last state handed out.
    last: Option<Leader>,
    /// The highest term handed out: a lower one is never reported.
    term: u64,
    /// When the lease of the leader last read ends, by our clock.
    lease_end: Option<Instant>,
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observer")
            .field("election", &self.name)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl Observer {
    /// Registers an observer of the election and reads who leads.
    pub(super) fn start(
        pool: Pool,
        name: Arc<str>,
        keys: ElectionKeys,
        response_timeout: Duration,
    ) -> Result<Observer> {
        let mut observer = Observer {
            pool,
            name,
            keys,
            id: random_id(),
            response_timeout,
            first: None,
            last: None,
            term: 0,
            lease_end: None,
        };
        observer.first = Some(observer.read()?);
        Ok(observer)
    }

    /// The last state handed out (`None` before the first, or when nobody led).
    pub fn last(&self) -> Option<&Leader> {
        self.last.as_ref()
    }

    /// The next change, waiting at most `timeout`; `None` when nothing changed by then.
    ///
    /// The first call returns the state when the observer started, at once.
    ///
    /// # Errors
    ///
    /// An `Err` item when Redis could not be reached or answered with an error
    /// ([`Error::Unreachable`](crate::Error::Unreachable),
    /// [`Error::Timeout`](crate::Error::Timeout), ...); the next call tries again.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{Pool, RedisElection};
    ///
    /// let election = RedisElection::new(Pool::new("redis://127.0.0.1/")?, "scheduler")?;
    /// let mut observer = election.observe()?;
    /// while let Some(change) = observer.next_timeout(Duration::from_secs(1)) {
    ///     println!("{:?}", change?);
    /// }
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<Option<Leader>>> {
        self.wait(Instant::now().checked_add(timeout))
    }

    /// The next change, waiting until `until` (`None`: for ever).
    fn wait(&mut self, until: Option<Instant>) -> Option<Result<Option<Leader>>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(self.report(first)));
        }
        loop {
            let now = Instant::now();
            if until.is_some_and(|until| now >= until) {
                return None;
            }
            // Woken by a change; else at the leader's lease's end, to see it crashed, and
            // every third of its registration's life, to keep it.
            let mut nap = OBSERVER_TTL / 3;
            if let Some(end) = self.lease_end {
                let left = end.saturating_duration_since(now);
                nap = nap.min(left + clock_margin(left, 0.01));
            }
            if let Some(until) = until {
                nap = nap.min(until - now);
            }
            if let Err(e) = self.sleep(nap) {
                return Some(Err(e));
            }
            match self.read() {
                Ok(state) if self.changed(&state) => return Some(Ok(self.report(state))),
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Whether `state` is news: another leader, term or value, or nobody leading now; never
    /// a term lower than one handed out.
    fn changed(&self, state: &Option<Leader>) -> bool {
        match (state, &self.last) {
            (Some(new), _) if new.term < self.term => false,
            (Some(new), Some(old)) => {
                (new.term, &new.owner_id, &new.value) != (old.term, &old.owner_id, &old.value)
            }
            (None, None) => false,
            _ => true,
        }
    }

    fn report(&mut self, state: Option<Leader>) -> Option<Leader> {
        if let Some(leader) = &state {
            self.term = self.term.max(leader.term);
        }
        self.last = state.clone();
        state
    }

    /// Reads who leads, keeping the registration and taking the pending wake-ups.
    fn read(&mut self) -> Result<Option<Leader>> {
        let sent = Instant::now();
        let deadline = Deadline::after(self.response_timeout);
        let state = read_leader(&self.pool, &self.name, &self.keys, Some(&self.id), deadline)?;
        self.lease_end = state
            .as_ref()
            .and_then(|leader| leader.expires_in)
            .and_then(|left| sent.checked_add(left));
        Ok(state)
    }

    /// Sleeps in `BLPOP` on its list for `nap` at most.
    fn sleep(&mut self, nap: Duration) -> Result<()> {
        let list = vec![self.keys.observe(&self.id)];
        let until = Instant::now().checked_add(nap);
        let mut waiting = Waiting::new(
            &self.pool,
            &self.keys.lock,
            &self.name,
            list,
            until,
            self.response_timeout,
        );
        let conn = waiting.checkout()?;
        match waiting.sleep(conn, nap)? {
            Waited::Next(..) | Waited::TimedOut => Ok(()),
            Waited::Failed(_, e) => Err(e),
        }
    }
}

impl Iterator for Observer {
    type Item = Result<Option<Leader>>;

    /// The next change, waiting for ever (see [`Observer`]); never `None`.
    fn next(&mut self) -> Option<Self::Item> {
        self.wait(None)
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let list = self.keys.observe(&self.id);
        let deadline = Deadline::after(self.response_timeout);
        let done = conn::run_repeatable(&self.pool, &self.keys.lock, deadline, |c| {
            redis::pipe()
                .zrem(&self.keys.observers, &self.id)
                .ignore()
                .del(&list)
                .ignore()
                .query::<()>(&mut **c)
        });
        if let Err(e) = done.and_then(|mut ran| {
            ran.result
                .map_err(|e| ran.conn.fail(e, &self.name, "observe"))
        }) {
            log::debug!("election `{}`: an observer could not leave: {e}", self.name);
        }
    }
}
