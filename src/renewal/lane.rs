//! One lane: the leases of one server, and the thread that renews them.
//!
//! A lane's thread sleeps on its scheduler until a renewal is due, renews every lease due
//! about then (leases of one batch key in one call, at most [`BATCH`] at a time), applies
//! the outcomes to the leases' clocks, and reports the leases it found lost. It ends after
//! [`IDLE`] with nothing to renew; the next registration starts another.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::scheduler::{Scheduler, next_due};
use super::{BatchKey, LaneKey, Renew, Renewal, Renewing, batch};
use crate::error::LostReason;
use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::metrics;

/// The most leases renewed by one call: bounds how long one call keeps Redis busy (well
/// under a millisecond).
const BATCH: usize = 500;

/// How long a lane's thread waits with nothing to renew before it ends.
const IDLE: Duration = Duration::from_secs(10);

/// How much longer than a renewal's bound a hold waits for it, for the scheduling of the
/// lane's thread.
const SETTLE_SLACK: Duration = Duration::from_millis(500);

/// What one round of a lane does: the jobs to renew, the leases to report lost, and when the
/// round must be over by (the earliest end of a live lease of the lane).
struct Round {
    jobs: Vec<(u64, Arc<Job>)>,
    lost: Vec<Arc<Job>>,
    ends: Option<Instant>,
}

/// One registered lease: its clock, and how to renew it.
struct Job {
    lease: Arc<Lease>,
    target: Arc<dyn Renew>,
}

pub(super) struct Lane {
    key: LaneKey,
    state: Mutex<State>,
    /// Wakes the thread (a registration, a cancel, a hold released) and those waiting for a
    /// renewal to settle.
    changed: Condvar,
}

struct State {
    scheduler: Scheduler<Arc<Job>>,
    running: bool,
}

/// Every lane with leases (or a thread) of this process. Locked before any lane's state.
static LANES: LazyLock<Mutex<HashMap<LaneKey, Arc<Lane>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Registers `lease` in its lane, starting the lane's thread if it has none.
pub(super) fn register(
    lease: Arc<Lease>,
    target: Arc<dyn Renew>,
    acquired_at: Instant,
) -> Result<(Arc<Lane>, u64)> {
    let key = target.lane();
    let mut lanes = LANES.lock();
    let lane = lanes
        .entry(key.clone())
        .or_insert_with(|| {
            Arc::new(Lane {
                key,
                state: Mutex::new(State {
                    scheduler: Scheduler::default(),
                    running: false,
                }),
                changed: Condvar::new(),
            })
        })
        .clone();
    let mut state = lane.state.lock();
    if !state.running {
        spawn(&lane).map_err(Error::RenewalThread)?;
        state.running = true;
    }
    let ttl = target.ttl();
    let id = state
        .scheduler
        .insert(Arc::new(Job { lease, target }), ttl, acquired_at);
    metrics::renewed_leases(1.0);
    lane.changed.notify_all();
    Ok((lane.clone(), id))
}

fn spawn(lane: &Arc<Lane>) -> std::io::Result<()> {
    let lane = lane.clone();
    thread::Builder::new()
        .name("redis-mutex-renewal".into())
        .spawn(move || lane.run())
        .map(drop)
}

impl Lane {
    /// See [`Registration::hold`](super::Registration::hold).
    pub(super) fn hold(&self, id: u64, bound: Duration) {
        let deadline = Instant::now() + bound + SETTLE_SLACK;
        let mut state = self.state.lock();
        while !state.scheduler.hold(id) {
            if self.changed.wait_until(&mut state, deadline).timed_out() {
                log::debug!("a renewal outlasted its bound; extending beside it");
                return;
            }
        }
    }

    pub(super) fn release_hold(&self, id: u64) {
        let mut state = self.state.lock();
        let lease_left = state_lease_left(&state, id);
        state.scheduler.release_hold(id, Instant::now(), lease_left);
        self.changed.notify_all();
    }

    /// Stops renewing `id` at once. A renewal of it already on the wire is not waited for:
    /// it can only extend this grant, which is about to be released (the scripts compare
    /// the grant's own token, so a late one changes nothing), and its outcome is ignored.
    pub(super) fn cancel(&self, id: u64) {
        let mut state = self.state.lock();
        let before = state.scheduler.len();
        state.scheduler.cancel(id);
        // Gone now, or when the renewal on the wire settles (counted there).
        if state.scheduler.len() < before {
            metrics::renewed_leases(-1.0);
        }
        self.changed.notify_all();
    }

    fn run(self: Arc<Self>) {
        /// Also on a panic: lets waiters go on, and hands the leases left to a new thread.
        struct Running(Arc<Lane>);
        impl Drop for Running {
            fn drop(&mut self) {
                let lane = &self.0;
                let mut lanes = LANES.lock();
                let mut state = lane.state.lock();
                state.running = false;
                if state.scheduler.is_empty() {
                    if lanes.get(&lane.key).is_some_and(|l| Arc::ptr_eq(l, lane)) {
                        lanes.remove(&lane.key);
                    }
                } else if thread::panicking() {
                    // A batch that was on the wire will never be settled.
                    let now = Instant::now();
                    let stuck: Vec<u64> = state.scheduler.in_flight_ids();
                    for id in stuck {
                        state.scheduler.settle(id, Some(now));
                    }
                    if spawn(lane).is_ok() {
                        state.running = true;
                    }
                }
                drop(lanes);
                lane.changed.notify_all();
            }
        }
        let running = Running(self);
        let lane = &running.0;
        log::debug!("lease renewal thread started for {:?}", lane.key);
        while let Some(round) = lane.next_batch() {
            for job in round.lost {
                // Found lost by its holder (nothing happens then), or run out on the clock.
                job.lease.mark_lost(
                    LostReason::Unreachable,
                    "the lease ran out before a renewal was confirmed",
                );
            }
            if round.jobs.is_empty() {
                continue;
            }
            let outcomes = renew(&round.jobs, round.ends);
            lane.settle(round.jobs, outcomes);
        }
    }

    /// Sleeps until a renewal is due, then takes it and every other one due within its
    /// coalescing window, with the moment the round must be over by: the earliest end of a
    /// lease of the lane, so that a slow server holds no lease past its end. Leases that are
    /// lost (run out on the clock, or found lost by their holder) are taken off and
    /// returned, to be reported. `None` when the lane has had nothing to renew for
    /// [`IDLE`]: the thread then ends.
    fn next_batch(&self) -> Option<Round> {
        let mut state = self.state.lock();
        loop {
            let now = Instant::now();
            match state.scheduler.next_deadline() {
                None => {
                    let idle = self.changed.wait_for(&mut state, IDLE).timed_out();
                    if idle && state.scheduler.is_empty() {
                        // LANES comes first: let go of the lane to take it.
                        drop(state);
                        let mut lanes = LANES.lock();
                        let mut again = self.state.lock();
                        if again.scheduler.is_empty() {
                            again.running = false;
                            lanes.remove(&self.key);
                            return None;
                        }
                        drop(lanes);
                        state = again;
                    }
                    continue;
                }
                Some(due) if due > now => {
                    self.changed.wait_until(&mut state, due);
                    continue;
                }
                Some(_) => {}
            }
            let mut round = Round {
                jobs: Vec::new(),
                lost: Vec::new(),
                ends: None,
            };
            for (id, job) in state.scheduler.take_due(now) {
                if job.lease.is_lost() {
                    // Nothing to renew, and its zero lease would cut the reply timeout of
                    // a whole batch to nothing.
                    state.scheduler.settle(id, None);
                    metrics::renewed_leases(-1.0);
                    round.lost.push(job);
                } else {
                    round.jobs.push((id, job));
                }
            }
            round.ends = state
                .scheduler
                .items()
                .filter(|job| !job.lease.is_lost())
                .filter_map(|job| job.lease.valid_for())
                .min()
                .map(|left| now + left);
            if !round.jobs.is_empty() || !round.lost.is_empty() {
                return Some(round);
            }
            self.changed.notify_all();
        }
    }

    /// Applies the outcomes, reschedules what goes on, and reports lost leases (outside the
    /// lane's lock: an `on_lost` callback may drop guards).
    fn settle(&self, jobs: Vec<(u64, Arc<Job>)>, outcomes: Vec<Renewal>) {
        let mut lost = Vec::new();
        {
            let mut state = self.state.lock();
            let before = state.scheduler.len();
            for ((id, job), outcome) in jobs.into_iter().zip(outcomes) {
                // A lease let go while its renewal was on the wire: nothing to report.
                let next = match state.scheduler.is_cancelled(id) {
                    true => None,
                    false => apply(&job, outcome, &mut lost),
                };
                state.scheduler.settle(id, next);
            }
            metrics::renewed_leases(state.scheduler.len() as f64 - before as f64);
            self.changed.notify_all();
        }
        for (lease, reason, why) in lost {
            lease.mark_lost(reason, &why);
        }
    }
}

/// What the lease of entry `id` has left, if it is registered.
fn state_lease_left(state: &State, id: u64) -> Option<Duration> {
    state
        .scheduler
        .get(id)
        .and_then(|job| job.lease.valid_for())
}

type Lost = Vec<(Arc<Lease>, LostReason, String)>;

/// Applies one renewal's outcome to its lease; returns when it is due next, or `None` when
/// it goes on `lost`.
fn apply(job: &Job, outcome: Renewal, lost: &mut Lost) -> Option<Instant> {
    let lease = &job.lease;
    let ttl = job.target.ttl();
    lease.apply(&outcome);
    match outcome {
        Renewal::Renewed { sent_at, ttl } => {
            let ttl = lease.doubt().map_or(ttl, |doubt| doubt.min(ttl));
            Some(next_due(sent_at, ttl))
        }
        Renewal::RenewedUntil { sent_at, .. } => Some(next_due(sent_at, ttl)),
        Renewal::Gone { taken } => {
            let reason = lease.why_gone(taken);
            let why = match taken {
                true => "a renewal found it held by another owner",
                false => "a renewal found it gone",
            };
            lost.push((lease.clone(), reason, why.to_owned()));
            None
        }
        Renewal::MayHaveRun { ttl, why, .. } => {
            metrics::renewal_failed(lease.labels());
            retry_or_lose(lease, ttl, why, lost)
        }
        Renewal::Failed(why) => {
            metrics::renewal_failed(lease.labels());
            retry_or_lose(lease, ttl, why, lost)
        }
    }
}

/// After a failed renewal: when to try again, while the lease lasts (sooner as it runs
/// out); or, once it ran out, the lease goes on `lost`.
fn retry_or_lose(
    lease: &Arc<Lease>,
    ttl: Duration,
    why: String,
    lost: &mut Lost,
) -> Option<Instant> {
    match lease.valid_for() {
        Some(left) if !left.is_zero() => {
            log::debug!("renewing lock `{}` failed, retrying: {why}", lease.name());
            Some(Instant::now() + (ttl / 10).min(left / 2))
        }
        _ => {
            lost.push((
                lease.clone(),
                LostReason::Unreachable,
                format!("redis could not be reached before the lease ran out: {why}"),
            ));
            None
        }
    }
}

/// Renews the jobs: leases of one batch key together, [`BATCH`] at a time, on this thread;
/// the others (a Redlock's, each a round on several servers) one call each, meanwhile,
/// spread over up to [`SINGLE_RENEWERS`] scoped threads, so that one slow round does not
/// hold up the others. Returns one outcome per job.
fn renew(jobs: &[(u64, Arc<Job>)], ends: Option<Instant>) -> Vec<Renewal> {
    // No call outlives the earliest end of a lease of the lane.
    let round_left = ends.map(|ends| ends.saturating_duration_since(Instant::now()));
    let bounded = |left: Option<Duration>| match (left, round_left) {
        (Some(left), Some(round)) => Some(left.min(round)),
        (left, round) => left.or(round),
    };
    let mut outcomes: Vec<Option<Renewal>> = jobs.iter().map(|_| None).collect();
    let mut batches: HashMap<BatchKey, Vec<usize>> = HashMap::new();
    let mut singles = Vec::new();
    for (i, (_, job)) in jobs.iter().enumerate() {
        match job.target.renewing() {
            Renewing::Batched(grant) => batches.entry(batch::key_of(grant)).or_default().push(i),
            Renewing::Alone(_) => singles.push(i),
        }
    }
    let renew_one = |i: usize| {
        let job = &jobs[i].1;
        let timeout = bounded(job.lease.valid_for()).unwrap_or(job.target.ttl());
        let started = Instant::now();
        let outcome = match job.target.renewing() {
            Renewing::Alone(lease) => lease.renew(timeout),
            Renewing::Batched(_) => Renewal::Failed("a batched lease renewed alone".to_owned()),
        };
        metrics::renewal_call(started.elapsed());
        (i, outcome)
    };
    let share = singles.len().div_ceil(SINGLE_RENEWERS).max(1);
    let single_outcomes: Vec<(usize, Renewal)> = thread::scope(|scope| {
        let mut chunks = singles.chunks(share);
        // This thread takes the first share itself, after the batches.
        let own = chunks.next().unwrap_or_default();
        let helpers: Vec<_> = chunks
            .map(|chunk| {
                let renew_one = &renew_one;
                let spawned = thread::Builder::new()
                    .name("redis-mutex-renewal".into())
                    .spawn_scoped(scope, move || {
                        chunk.iter().map(|&i| renew_one(i)).collect::<Vec<_>>()
                    });
                (chunk, spawned)
            })
            .collect();
        renew_batches(jobs, &batches, round_left, &mut outcomes);
        let mut done: Vec<(usize, Renewal)> = own.iter().map(|&i| renew_one(i)).collect();
        for (chunk, spawned) in helpers {
            match spawned {
                // No thread to be had: renew them here, later but not never.
                Err(_) => done.extend(chunk.iter().map(|&i| renew_one(i))),
                Ok(handle) => match handle.join() {
                    Ok(results) => done.extend(results),
                    Err(_) => done.extend(
                        chunk
                            .iter()
                            .map(|&i| (i, Renewal::Failed("the renewal panicked".to_owned()))),
                    ),
                },
            }
        }
        done
    });
    for (i, outcome) in single_outcomes {
        outcomes[i] = Some(outcome);
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Renewal::Failed("not renewed".to_owned())))
        .collect()
}

/// The most threads that renew leases of no batch at once, besides the lane's own.
const SINGLE_RENEWERS: usize = 4;

/// Renews each batch group in calls of up to [`BATCH`] leases.
fn renew_batches(
    jobs: &[(u64, Arc<Job>)],
    batches: &HashMap<BatchKey, Vec<usize>>,
    round_left: Option<Duration>,
    outcomes: &mut [Option<Renewal>],
) {
    for group in batches.values() {
        for chunk in group.chunks(BATCH) {
            // A renewal that cannot come back before the earliest lease runs out is of no
            // use.
            let timeout = chunk
                .iter()
                .filter_map(|&i| jobs[i].1.lease.valid_for())
                .chain(round_left)
                .min()
                .unwrap_or(Duration::MAX);
            let parts: Vec<_> = chunk
                .iter()
                .filter_map(|&i| match jobs[i].1.target.renewing() {
                    Renewing::Batched(grant) => Some((grant, jobs[i].1.target.ttl())),
                    Renewing::Alone(_) => None,
                })
                .collect();
            let started = Instant::now();
            let results = batch::renew(&parts, timeout);
            metrics::renewal_call(started.elapsed());
            for (&i, outcome) in chunk.iter().zip(results) {
                outcomes[i] = Some(outcome);
            }
        }
    }
}
