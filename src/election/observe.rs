//! [`Observer`]: follows an election, woken by each change.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::keys::ElectionKeys;
use super::{Leader, OBSERVER_TTL, read_leader};
use crate::conn;
use crate::error::Result;
use crate::lease::clock_margin;
use crate::metrics::{self, Labels};
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
/// 30 s, renewed by a read every 10 s), and every change (a campaign won, a proclaim, a
/// resign, a reset) pushes the new state to its own list (`election-observe:<name>:<id>`),
/// on which it sleeps in `BLPOP`: it hands the change out as soon as the `BLPOP`'s reply
/// comes, half a round trip after the change, with no read. A leader that crashed changes
/// nothing in Redis until its lease ends: the observer knows when that is (it read it), and
/// wakes then. Between waits it holds no connection; each wait borrows one of the pool's
/// for its `BLPOP` (as a waiting lock does, within the pool's turns to block). Terms it
/// reports never go back (a lower one, after a failover that lost a later term, is reported
/// as nobody leading); a change it missed while Redis could not be reached is reported
/// by the next state it reads, and changes closer together than a round trip may come as
/// one, the latest (a leader that proclaims twice at once). With the `metrics` feature it
/// records the time without a leader it saw (`redis_mutex_leaderless_seconds`). Dropping
/// it takes its registration out.
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
    /// When it last read (and so renewed its registration).
    read_at: Instant,
    /// The pause before the next try, after a failure.
    backoff: Option<Duration>,
    /// Since when nobody has led, after a leader it handed out went: the time without a
    /// leader, recorded when the next is handed out (`redis_mutex_leaderless_seconds`).
    leaderless_since: Option<Instant>,
    labels: Labels,
}

/// The pause after a failed wait, and the longest, doubling in between.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));

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
        labels: Labels,
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
            read_at: Instant::now(),
            backoff: None,
            leaderless_since: None,
            labels,
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
    /// [`Error::Timeout`](crate::Error::Timeout), ...); the next call tries again, after a
    /// pause (50 ms, doubling to 1 s while failures go on, never past its timeout).
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

    /// The next change, waiting until `until` (`None`: for ever). A wait with no time
    /// left still looks once (a read), as `try_lock` makes one attempt.
    fn wait(&mut self, until: Option<Instant>) -> Option<Result<Option<Leader>>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(self.report(first)));
        }
        // After a failure, a pause before trying again (never past `until`), so that a
        // caller that goes on after an error does not spin while Redis is away.
        if let Some(pause) = self.backoff {
            let left = until.map_or(pause, |until| {
                until.saturating_duration_since(Instant::now())
            });
            std::thread::sleep(pause.min(left));
        }
        let mut looked = false;
        loop {
            let now = Instant::now();
            let state = if until.is_some_and(|until| now >= until) {
                if looked {
                    return None;
                }
                self.read()
            } else {
                self.next_state(now, until)
            };
            looked = true;
            match state {
                Ok(state) => {
                    self.backoff = None;
                    let state = self.never_back(state);
                    if self.changed(&state) {
                        return Some(Ok(self.report(state)));
                    }
                }
                Err(e) => {
                    self.backoff = Some(self.backoff.map_or(BACKOFF.0, |b| (b * 2).min(BACKOFF.1)));
                    return Some(Err(e));
                }
            }
        }
    }

    /// Sleeps until a change wakes it (its wake-up carries the new state), the leader's
    /// lease ends (to see it crashed), its registration is due to be renewed (every third
    /// of its life), or `until`; then the state.
    fn next_state(&mut self, now: Instant, until: Option<Instant>) -> Result<Option<Leader>> {
        let mut nap = (self.read_at + OBSERVER_TTL / 3).saturating_duration_since(now);
        if let Some(end) = self.lease_end {
            let left = end.saturating_duration_since(now);
            nap = nap.min(left + clock_margin(left, 0.01));
        }
        if let Some(until) = until {
            nap = nap.min(until - now);
        }
        match self.sleep(nap)?.as_deref().and_then(decode) {
            Some(state) => {
                self.lease_end = lease_end(Instant::now(), &state);
                Ok(state)
            }
            None => self.read(),
        }
    }

    /// `state`, or nobody leading when its term is lower than one handed out already (a
    /// failover that lost a later term, a server clock set back): terms handed out never
    /// go back, and the leader handed out last leads no more.
    fn never_back(&self, state: Option<Leader>) -> Option<Leader> {
        state.filter(|leader| leader.term >= self.term)
    }

    /// Whether `state` is news: another leader, term or value, or nobody leading now.
    fn changed(&self, state: &Option<Leader>) -> bool {
        match (state, &self.last) {
            (Some(new), Some(old)) => {
                (new.term, &new.owner_id, &new.value) != (old.term, &old.owner_id, &old.value)
            }
            (None, None) => false,
            _ => true,
        }
    }

    /// Hands `state` out: notes its term, and the time without a leader it ends or begins.
    fn report(&mut self, state: Option<Leader>) -> Option<Leader> {
        match &state {
            Some(leader) => {
                self.term = self.term.max(leader.term);
                if let Some(since) = self.leaderless_since.take() {
                    metrics::leaderless(&self.labels, since.elapsed());
                }
            }
            None if self.last.is_some() => self.leaderless_since = Some(Instant::now()),
            None => {}
        }
        self.last = state.clone();
        state
    }

    /// Reads who leads, keeping the registration and taking the pending wake-ups.
    fn read(&mut self) -> Result<Option<Leader>> {
        let sent = Instant::now();
        let deadline = Deadline::after(self.response_timeout);
        let state = read_leader(&self.pool, &self.name, &self.keys, Some(&self.id), deadline)?;
        self.lease_end = lease_end(sent, &state);
        self.read_at = sent;
        Ok(state)
    }

    /// Sleeps in `BLPOP` on its list for `nap` at most; what a change pushed, if one woke it.
    fn sleep(&mut self, nap: Duration) -> Result<Option<String>> {
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
            Waited::Next(_, woken) => Ok(woken.map(|woken| woken.value)),
            Waited::TimedOut => Ok(None),
            Waited::Failed(_, e) => Err(e),
        }
    }
}

/// When the lease of `state`'s leader ends, by our clock, read at `at`.
fn lease_end(at: Instant, state: &Option<Leader>) -> Option<Instant> {
    state
        .as_ref()
        .and_then(|leader| leader.expires_in)
        .and_then(|left| at.checked_add(left))
}

/// The state a change pushed to an observer's list (`proclaim.lua`): `-` for nobody
/// leading, else `<term>|<pttl>|<bytes of the owner id>|<owner id><value>`; `None` for
/// anything else (then the observer reads).
fn decode(pushed: &str) -> Option<Option<Leader>> {
    if pushed == "-" {
        return Some(None);
    }
    let mut parts = pushed.splitn(4, '|');
    let term = parts.next()?.parse().ok()?;
    let pttl: i64 = parts.next()?.parse().ok()?;
    let owner_len: usize = parts.next()?.parse().ok()?;
    let rest = parts.next()?;
    Some(Some(Leader {
        owner_id: rest.get(..owner_len)?.to_owned(),
        value: rest.get(owner_len..)?.to_owned(),
        term,
        expires_in: crate::family::expires_in(pttl),
    }))
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
        if let Err(e) = done.and_then(|ran| ran.reply(&self.name, "observe")) {
            log::debug!("election `{}`: an observer could not leave: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pushed_state_is_read_back() {
        let leader = decode("17|1500|6|host|7a|b|c").unwrap().unwrap();
        assert_eq!(leader.term, 17);
        assert_eq!(leader.owner_id, "host|7");
        assert_eq!(leader.value, "a|b|c");
        assert_eq!(leader.expires_in, Some(Duration::from_millis(1500)));
        let empty = decode("17|-1|1|xé").unwrap().unwrap();
        assert_eq!((empty.owner_id.as_str(), empty.value.as_str()), ("x", "é"));
        assert_eq!(empty.expires_in, None);
        assert_eq!(decode("-"), Some(None));
        for bad in ["1", "x|1|1|a", "1|1|9|ab", "1|1|1|é"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
