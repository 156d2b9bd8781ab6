//! The one background thread that keeps every auto-renewed lease of the process alive.
//!
//! Guards register their lease here; the thread sleeps on a deadline queue until the
//! earliest renewal is due, then renews everything due at about the same time together:
//! per pool, one `EVALSHA` of the multi-key extend script for up to [`BATCH`] locks, so
//! 10,000 leases cost a few dozen round trips per renewal interval, not 10,000. Renewal is
//! compare-and-extend: it never re-creates a lock that is gone and never extends another
//! owner's. A lease found gone, or not renewed before it ran out, is marked lost.
//!
//! Cancelling (a guard being dropped or unlocked) waits for a renewal of that lease that is
//! already on the wire, so that no renewal reaches the server after the guard has let go.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, LazyLock};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::conn;
use crate::lease::{Lease, lease_end, millis};
use crate::scripts::EXTEND;
use crate::{Error, Pool, Result};

/// The most locks renewed by one script call: bounds how long one call keeps Redis busy
/// (well under a millisecond).
const BATCH: usize = 500;

/// What the renewal thread extends for one lease.
pub(crate) enum Target {
    /// One lock key of this crate's protocol: renewed by compare-and-extend, together with
    /// the other keys of its pool.
    Key(KeyTarget),
    /// A lease that knows how to renew itself (a Redlock, a read-write lock): renewed on
    /// its own.
    Own(Arc<dyn Renew>),
}

impl Target {
    fn ttl(&self) -> Duration {
        match self {
            Target::Key(key) => key.ttl,
            Target::Own(own) => own.ttl(),
        }
    }
}

/// A lease that renews itself, for [`Target::Own`].
pub(crate) trait Renew: Send + Sync {
    /// The lease each renewal restores; renewals come a third of it apart.
    fn ttl(&self) -> Duration;

    /// Renews the lease once, returning within about `timeout` (the time the local lease
    /// has left: a later answer is of no use).
    fn renew(&self, timeout: Duration) -> Renewal;
}

/// What became of one renewal.
pub(crate) enum Renewal {
    /// Renewed by a request sent at `sent_at`; the lease is certainly ours until
    /// `valid_until`.
    Renewed {
        sent_at: Instant,
        valid_until: Instant,
    },
    /// The lock is no longer ours.
    Gone,
    /// The renewal failed; the message says why. It is tried again while the lease lasts.
    Failed(String),
    /// The renewal's reply was lost: it failed as far as we know, but Redis may have run
    /// it (or may still), setting the lease to `ttl` from then on. That can be shorter than
    /// the lease we counted on (after a longer manual extend), so the lease clock is cut
    /// to what the request sent at `sent_at` would leave. Tried again like `Failed`.
    MayHaveRun { sent_at: Instant, why: String },
}

/// A lock key for [`Target::Key`].
pub(crate) struct KeyTarget {
    pub(crate) pool: Pool,
    /// Leases with the same group came through the same pool and are renewed together.
    pub(crate) group: u64,
    pub(crate) key: String,
    pub(crate) owner: String,
    pub(crate) ttl: Duration,
    pub(crate) response_timeout: Duration,
}

struct Entry {
    lease: Arc<Lease>,
    target: Arc<Target>,
    due: Instant,
    in_flight: bool,
}

#[derive(Default)]
struct Queue {
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    entries: HashMap<u64, Entry>,
    next_id: u64,
    thread_running: bool,
}

struct Renewer {
    queue: Mutex<Queue>,
    /// Wakes the thread (new or cancelled entries) and cancellers (a batch came back).
    changed: Condvar,
}

static RENEWER: LazyLock<Renewer> = LazyLock::new(|| Renewer {
    queue: Mutex::new(Queue::default()),
    changed: Condvar::new(),
});

impl Queue {
    /// Pops deadlines of cancelled or rescheduled entries off the top of the queue.
    fn drop_stale_deadlines(&mut self) {
        while let Some(&Reverse((due, id))) = self.deadlines.peek() {
            match self.entries.get(&id) {
                Some(entry) if entry.due == due => break,
                _ => {
                    self.deadlines.pop();
                }
            }
        }
    }
}

/// Renewal of one lease; dropping it (or [`Registration::cancel`]) stops the renewal.
#[derive(Debug)]
pub(crate) struct Registration {
    id: u64,
}

/// Schedules `lease` for renewal: first at a third of the lease from `acquired_at`, then a
/// third of the lease after each renewal.
pub(crate) fn register(
    lease: Arc<Lease>,
    target: Target,
    acquired_at: Instant,
) -> Result<Registration> {
    let renewer = &*RENEWER;
    let mut queue = renewer.queue.lock();
    if !queue.thread_running {
        thread::Builder::new()
            .name("redis-mutex-renewal".into())
            .spawn(|| RENEWER.run())
            .map_err(Error::RenewalThread)?;
        queue.thread_running = true;
    }
    let id = queue.next_id;
    queue.next_id += 1;
    let due = next_due(acquired_at, target.ttl());
    queue.deadlines.push(Reverse((due, id)));
    queue.entries.insert(
        id,
        Entry {
            lease,
            target: Arc::new(target),
            due,
            in_flight: false,
        },
    );
    renewer.changed.notify_all();
    Ok(Registration { id })
}

impl Registration {
    /// Stops renewing; returns once no renewal of this lease is on the wire.
    pub(crate) fn cancel(self) {
        // Drop does the work.
    }

    /// Keeps the renewal thread off this lease until the returned hold is dropped, after
    /// waiting for a renewal of it already on the wire to be settled. A manual extend runs
    /// under a hold: two requests on different connections could reach Redis in either
    /// order, and the lease clock must not take the longer one for the last.
    pub(crate) fn hold(&self) -> Hold<'_> {
        let renewer = &*RENEWER;
        let mut queue = renewer.queue.lock();
        while queue.entries.get(&self.id).is_some_and(|e| e.in_flight) {
            renewer.changed.wait(&mut queue);
        }
        if let Some(entry) = queue.entries.get_mut(&self.id) {
            entry.in_flight = true;
        }
        Hold { registration: self }
    }
}

/// See [`Registration::hold`]. Dropping it lets renewal go on, a third of the lease later
/// (of what the lease has left, if that is less).
#[derive(Debug)]
pub(crate) struct Hold<'a> {
    registration: &'a Registration,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let renewer = &*RENEWER;
        let mut queue = renewer.queue.lock();
        let id = self.registration.id;
        if let Some(entry) = queue.entries.get_mut(&id) {
            entry.in_flight = false;
            // A manual extend may have left less than the usual lease: renew within a third
            // of whichever is shorter.
            let ttl = entry.target.ttl();
            let left = entry.lease.valid_for().unwrap_or(ttl).min(ttl);
            entry.due = next_due(Instant::now(), left);
            let due = entry.due;
            queue.deadlines.push(Reverse((due, id)));
        }
        renewer.changed.notify_all();
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let renewer = &*RENEWER;
        let mut queue = renewer.queue.lock();
        while queue.entries.get(&self.id).is_some_and(|e| e.in_flight) {
            renewer.changed.wait(&mut queue);
        }
        queue.entries.remove(&self.id);
        renewer.changed.notify_all();
    }
}

fn next_due(renewed_at: Instant, ttl: Duration) -> Instant {
    renewed_at + ttl / 3
}

/// How early a renewal may be sent to join a batch: a sixth of the lease.
fn coalesce_window(ttl: Duration) -> Duration {
    ttl / 6
}

/// One lease taken into a batch.
struct Job {
    id: u64,
    lease: Arc<Lease>,
    target: Arc<Target>,
}

impl Renewer {
    fn run(&self) {
        struct Running;
        impl Drop for Running {
            // Also on a panic: the next registration starts a new thread.
            fn drop(&mut self) {
                let mut queue = RENEWER.queue.lock();
                queue.thread_running = false;
                // A batch that was on the wire will never be settled: let cancels and
                // extends waiting for it go on, and the next thread renew its leases.
                let now = Instant::now();
                let Queue {
                    entries, deadlines, ..
                } = &mut *queue;
                for (&id, entry) in entries.iter_mut().filter(|(_, e)| e.in_flight) {
                    entry.in_flight = false;
                    entry.due = now;
                    deadlines.push(Reverse((now, id)));
                }
                RENEWER.changed.notify_all();
            }
        }
        let _running = Running;
        log::debug!("lease renewal thread started");
        loop {
            let jobs = self.next_batch();
            let outcomes = renew(&jobs);
            self.settle(jobs, outcomes);
        }
    }

    /// Sleeps until a renewal is due, then takes it and every other one due within its
    /// coalescing window. Wake-ups before anything is due (a registration, a cancel) take
    /// nothing: a window that slid forward on each of them would cut batches into slivers.
    fn next_batch(&self) -> Vec<Job> {
        let mut guard = self.queue.lock();
        loop {
            let queue = &mut *guard;
            queue.drop_stale_deadlines();
            let now = Instant::now();
            match queue.deadlines.peek() {
                None => {
                    self.changed.wait(&mut guard);
                    continue;
                }
                Some(&Reverse((due, _))) if due > now => {
                    self.changed.wait_until(&mut guard, due);
                    continue;
                }
                Some(_) => {}
            }
            let mut jobs = Vec::new();
            loop {
                queue.drop_stale_deadlines();
                let Some(&Reverse((due, id))) = queue.deadlines.peek() else {
                    break;
                };
                let Some(entry) = queue.entries.get_mut(&id) else {
                    break;
                };
                if due > now + coalesce_window(entry.target.ttl()) {
                    break;
                }
                queue.deadlines.pop();
                if entry.in_flight {
                    continue; // held by a manual extend, which reschedules it
                }
                if entry.lease.is_lost() {
                    // Found lost by the holder's own call: nothing to renew, and its zero
                    // lease would cut the reply timeout of a whole batch to nothing.
                    queue.entries.remove(&id);
                    continue;
                }
                entry.in_flight = true;
                jobs.push(Job {
                    id,
                    lease: entry.lease.clone(),
                    target: entry.target.clone(),
                });
            }
            return jobs;
        }
    }

    /// Applies the outcomes, reschedules what goes on, and reports lost leases (outside the
    /// queue's lock: an `on_lost` callback may drop guards).
    fn settle(&self, jobs: Vec<Job>, outcomes: Vec<Renewal>) {
        let mut lost = Vec::new();
        {
            let mut queue = self.queue.lock();
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                let Some(entry) = queue.entries.get_mut(&job.id) else {
                    continue;
                };
                entry.in_flight = false;
                let ttl = job.target.ttl();
                let next = match outcome {
                    Renewal::Renewed {
                        sent_at,
                        valid_until,
                    } => {
                        job.lease.extend_to(valid_until);
                        Some(next_due(sent_at, ttl))
                    }
                    Renewal::Gone => {
                        lost.push((
                            job.lease,
                            "it is no longer ours: it expired, was reset or was taken over"
                                .to_owned(),
                        ));
                        None
                    }
                    Renewal::MayHaveRun { sent_at, why } => {
                        job.lease.shorten_to(lease_end(sent_at, ttl));
                        retry_or_lose(job.lease, ttl, why, &mut lost)
                    }
                    Renewal::Failed(why) => retry_or_lose(job.lease, ttl, why, &mut lost),
                };
                match next {
                    Some(due) => {
                        entry.due = due;
                        queue.deadlines.push(Reverse((due, job.id)));
                    }
                    None => {
                        queue.entries.remove(&job.id);
                    }
                }
            }
            self.changed.notify_all();
        }
        for (lease, why) in lost {
            lease.mark_lost(&why);
        }
    }
}

/// The most threads that renew self-renewing leases at once, besides the renewal thread.
const OWN_RENEWERS: usize = 4;

/// After a failed renewal: when to try again, while one more try fits in the lease; or,
/// once the lease ran out, the lease goes on `lost` with the reason.
fn retry_or_lose(
    lease: Arc<Lease>,
    ttl: Duration,
    why: String,
    lost: &mut Vec<(Arc<Lease>, String)>,
) -> Option<Instant> {
    match lease.valid_for() {
        Some(left) if !left.is_zero() => {
            log::debug!("renewing lock `{}` failed, retrying: {why}", lease.name());
            Some(Instant::now() + (ttl / 10).min(left / 2))
        }
        _ => {
            lost.push((
                lease,
                format!("redis could not be reached before the lease ran out: {why}"),
            ));
            None
        }
    }
}

/// Renews the jobs: lock keys with one script call per pool and [`BATCH`], on this thread;
/// self-renewing leases one call each, meanwhile, spread over up to [`OWN_RENEWERS`] scoped
/// threads, so that one slow lease (a Redlock waiting out a stalled instance) does not
/// hold up the others. Returns one outcome per job.
fn renew(jobs: &[Job]) -> Vec<Renewal> {
    let mut outcomes: Vec<Option<Renewal>> = jobs.iter().map(|_| None).collect();
    let mut keyed: Vec<(u64, usize, &KeyTarget)> = Vec::new();
    let mut own: Vec<(usize, &Arc<dyn Renew>)> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        match &*job.target {
            Target::Key(key) => keyed.push((key.group, i, key)),
            Target::Own(target) => own.push((i, target)),
        }
    }
    keyed.sort_by_key(|&(group, _, _)| group);
    let renew_own = |share: &[(usize, &Arc<dyn Renew>)]| -> Vec<(usize, Renewal)> {
        share
            .iter()
            .map(|&(i, target)| {
                let timeout = jobs[i].lease.valid_for().unwrap_or(target.ttl());
                (i, target.renew(timeout))
            })
            .collect()
    };
    let share = own.len().div_ceil(OWN_RENEWERS).max(1);
    let own_done = thread::scope(|scope| {
        let renewers: Vec<_> = own
            .chunks(share)
            .map(|chunk| {
                let renew_own = &renew_own;
                (
                    chunk,
                    thread::Builder::new()
                        .name("redis-mutex-renewal-own".into())
                        .spawn_scoped(scope, move || renew_own(chunk)),
                )
            })
            .collect();
        for group in keyed.chunk_by(|a, b| a.0 == b.0) {
            for batch in group.chunks(BATCH) {
                let results = renew_batch(jobs, batch);
                for (&(_, i, _), outcome) in batch.iter().zip(results) {
                    outcomes[i] = Some(outcome);
                }
            }
        }
        renewers
            .into_iter()
            .flat_map(|(chunk, renewer)| match renewer {
                // No thread to be had: renew them here, later but not never.
                Err(_) => renew_own(chunk),
                Ok(handle) => handle.join().unwrap_or_else(|_| {
                    chunk
                        .iter()
                        .map(|&(i, _)| (i, Renewal::Failed("the renewal panicked".to_owned())))
                        .collect()
                }),
            })
            .collect::<Vec<_>>()
    });
    for (i, outcome) in own_done {
        outcomes[i] = Some(outcome);
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Renewal::Failed("not renewed".to_owned())))
        .collect()
}

/// Renews lock keys of one pool with one script call.
fn renew_batch(jobs: &[Job], batch: &[(u64, usize, &KeyTarget)]) -> Vec<Renewal> {
    let first = batch[0].2;
    // A renewal that cannot come back before the earliest lease runs out is of no use.
    let timeout = batch
        .iter()
        .filter_map(|&(_, i, _)| jobs[i].lease.valid_for())
        .min()
        .unwrap_or(first.response_timeout)
        .min(first.response_timeout);
    let mut invocation = EXTEND.prepare_invoke();
    for (_, _, target) in batch {
        invocation
            .key(&target.key)
            .arg(&target.owner)
            .arg(millis(target.ttl));
    }
    let sent_at = Instant::now();
    // Only the reply is bounded by the lease: a write cut short by a tiny timeout would
    // leave half a command on a pooled connection.
    let result =
        conn::checkout(&first.pool, timeout, first.response_timeout).and_then(|mut conn| {
            conn::set_read_timeout(&mut conn, timeout)?;
            Ok(invocation.invoke::<Vec<i64>>(&mut *conn)?)
        });
    log::trace!(
        "renewed {} lease(s) in one call: {:?}",
        batch.len(),
        result.as_ref().map(|_| ())
    );
    match result {
        Ok(extended) if extended.len() == batch.len() => extended
            .into_iter()
            .zip(batch)
            .map(|(e, (_, _, target))| match e {
                1 => Renewal::Renewed {
                    sent_at,
                    valid_until: lease_end(sent_at, target.ttl),
                },
                _ => Renewal::Gone,
            })
            .collect(),
        Ok(extended) => {
            let why = format!(
                "the extend script answered {} times for {} locks",
                extended.len(),
                batch.len()
            );
            batch.iter().map(|_| Renewal::Failed(why.clone())).collect()
        }
        Err(e) => {
            let why = e.to_string();
            let may_have_run = conn::may_have_run(&e);
            batch
                .iter()
                .map(|_| match may_have_run {
                    true => Renewal::MayHaveRun {
                        sent_at,
                        why: why.clone(),
                    },
                    false => Renewal::Failed(why.clone()),
                })
                .collect()
        }
    }
}
