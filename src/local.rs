//! The local side of waiting: every lock object of one pool and one name in this process
//! shares one [`Local`], so that however many objects its threads built, one of them at a
//! time waits in Redis for that lock (as Redisson shares one subscription per lock name and
//! client), and the others wait in the process for their turn to.
//!
//! It orders waiters, never holders. A thread that holds a grant holds no turn: another
//! thread of its process waits in Redis like a thread of any other process, and is woken
//! by the same release, reset or expiry at the same moment. What a holder leaves here is a
//! note of its lease ([`Holding`]), so that a waiter of its process need not send an
//! attempt it knows will fail (see [`Local::held_for`]).
//!
//! A lock kind keeps its `Local`s in a [`Locals`] of its own, keyed by the pool and a key
//! of the lock; one lives as long as a lock object uses it.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::lease::Lease;
use crate::pool::Pool;
use crate::time::wait_on;

/// The `Local`s of one lock kind, by pool and lock key.
pub(crate) struct Locals {
    by_key: Mutex<Queues>,
}

struct Queues {
    by_key: HashMap<(u64, String), Weak<Local>>,
    /// How many entries there were after the last sweep of dead ones: the next sweep comes
    /// when there are twice as many, so sweeping costs O(1) per call over time.
    swept_at: usize,
}

impl Locals {
    pub(crate) fn new() -> Locals {
        Locals {
            by_key: Mutex::new(Queues {
                by_key: HashMap::new(),
                swept_at: 0,
            }),
        }
    }

    /// The `Local` of the lock `key` on `pool`, shared with every other object of that lock
    /// in this process; made if none lives.
    pub(crate) fn get(&self, pool: &Pool, key: &str) -> Arc<Local> {
        let mut queues = self.by_key.lock();
        let id = (pool.id(), key.to_owned());
        if let Some(local) = queues.by_key.get(&id).and_then(Weak::upgrade) {
            return local;
        }
        let local = Arc::new(Local::default());
        queues.by_key.insert(id, Arc::downgrade(&local));
        if queues.by_key.len() > 2 * queues.swept_at.max(32) {
            queues.by_key.retain(|_, local| local.strong_count() > 0);
            queues.swept_at = queues.by_key.len();
        }
        local
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_key.lock().by_key.len()
    }
}

/// The threads of this process that wait for one lock, and the grants they hold.
#[derive(Debug, Default)]
pub(crate) struct Local {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// The threads waiting for their turn, as `(ticket, need)`, in the order they came.
    queue: Vec<(u64, u32)>,
    /// The thread whose turn it is: it waits in Redis.
    turn: Option<TurnState>,
    next_ticket: u64,
    /// The grants this process's threads hold, by id.
    held: Vec<(u64, Weak<Lease>)>,
    /// When one of them was last released in Redis, and found ours.
    released_at: Option<Instant>,
}

#[derive(Debug)]
struct TurnState {
    ticket: u64,
    need: u32,
    /// A thread that needs less came: this one should give its turn up.
    give_way: bool,
    /// The id this thread waits under in Redis, if it has one: where a request to give way
    /// is pushed.
    waiter: Option<String>,
}

impl State {
    /// The ticket whose turn is next: the smallest need, the earliest among equals.
    fn next(&self) -> Option<u64> {
        let mut best: Option<(u64, u32)> = None;
        for &(ticket, need) in &self.queue {
            if best.is_none_or(|(_, n)| need < n) {
                best = Some((ticket, need));
            }
        }
        best.map(|(ticket, _)| ticket)
    }
}

/// This thread's turn to wait in Redis; the next thread's comes when it is dropped.
#[derive(Debug)]
pub(crate) struct Turn {
    local: Arc<Local>,
    ticket: u64,
}

/// A thread's place in the queue for a turn: given up when dropped, unless it became the
/// turn.
struct Place<'a> {
    local: &'a Local,
    ticket: u64,
    taken: bool,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.taken {
            let mut state = self.local.state.lock();
            state.queue.retain(|&(t, _)| t != self.ticket);
            self.local.changed.notify_all();
        }
    }
}

/// A grant held by a thread of this process, noted until dropped.
#[derive(Debug)]
pub(crate) struct Holding {
    local: Arc<Local>,
    id: u64,
}

impl Local {
    /// Waits until it is this thread's turn to wait in Redis, until `deadline` (`None`: as
    /// long as it takes); `None` when the deadline passed first.
    ///
    /// Turns go to the threads that `need` least first (a semaphore's permits; 1 for the
    /// other kinds, and in fair mode), in the order they came among equals. A thread that
    /// needs less than the one whose turn it is asks it to give way: `nudge` gets the id
    /// that thread waits under in Redis, if it said ([`Turn::waits_as`]), to end its wait
    /// there at once.
    pub(crate) fn turn(
        self: &Arc<Self>,
        need: u32,
        deadline: Option<Instant>,
        nudge: impl FnOnce(&str),
    ) -> Option<Turn> {
        let mut state = self.state.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push((ticket, need));
        // Out of the queue on every way out, a panic in `nudge` included.
        let mut place = Place {
            local: self,
            ticket,
            taken: false,
        };
        let mut nudge = Some(nudge);
        loop {
            if state.turn.is_none() && state.next() == Some(ticket) {
                state.queue.retain(|&(t, _)| t != ticket);
                state.turn = Some(TurnState {
                    ticket,
                    need,
                    give_way: false,
                    waiter: None,
                });
                place.taken = true;
                return Some(Turn {
                    local: self.clone(),
                    ticket,
                });
            }
            if let Some(turn) = &mut state.turn
                && need < turn.need
                && !turn.give_way
            {
                turn.give_way = true;
                if let (Some(waiter), Some(nudge)) = (turn.waiter.clone(), nudge.take()) {
                    drop(state);
                    nudge(&waiter);
                    state = self.state.lock();
                    continue;
                }
            }
            if wait_on(&self.changed, &mut state, deadline) {
                drop(state);
                return None;
            }
        }
    }

    /// Notes a grant a thread of this process holds, with its lease, until the returned
    /// `Holding` is dropped.
    pub(crate) fn hold(self: &Arc<Self>, lease: &Arc<Lease>) -> Holding {
        let mut state = self.state.lock();
        let id = state.next_ticket;
        state.next_ticket += 1;
        state.held.push((id, Arc::downgrade(lease)));
        Holding {
            local: self.clone(),
            id,
        }
    }

    /// How long a grant held by a thread of this process stands in Redis at least, from
    /// what its lease clock knows: `None` when none does (none is held, or each was lost or
    /// ran out), `Some(None)` for one without expiry. A waiter of this process need not
    /// try a lock that one of these holds exclusively before then: it is woken by the
    /// release, or a reset, if either comes first.
    pub(crate) fn held_for(&self) -> Option<Option<Duration>> {
        let state = self.state.lock();
        let mut longest: Option<Option<Duration>> = None;
        for (_, lease) in &state.held {
            let Some(lease) = lease.upgrade() else {
                continue;
            };
            if lease.is_lost() {
                continue;
            }
            let left = match lease.valid_for() {
                Some(left) if left.is_zero() => continue,
                left => left,
            };
            longest = Some(match (longest, left) {
                (Some(None), _) | (_, None) => None,
                (Some(Some(a)), Some(b)) => Some(a.max(b)),
                (None, Some(b)) => Some(b),
            });
        }
        longest
    }

    /// When a thread of this process last released the lock in Redis (and it was ours),
    /// once: the next acquire asks for it.
    pub(crate) fn take_released_at(&self) -> Option<Instant> {
        self.state.lock().released_at.take()
    }
}

impl Turn {
    /// Says under which id this thread waits in Redis (its wake list's): a thread that
    /// needs less wakes it there to have it give way.
    pub(crate) fn waits_as(&self, waiter: &str) {
        if let Some(turn) = &mut self.local.state.lock().turn
            && turn.ticket == self.ticket
        {
            turn.waiter = Some(waiter.to_owned());
        }
    }

    /// Whether a thread that needs less came since: this one should give its turn up (and
    /// queue for it again).
    pub(crate) fn should_give_way(&self) -> bool {
        self.local
            .state
            .lock()
            .turn
            .as_ref()
            .is_some_and(|turn| turn.ticket == self.ticket && turn.give_way)
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut state = self.local.state.lock();
        if state.turn.as_ref().is_some_and(|t| t.ticket == self.ticket) {
            state.turn = None;
        }
        self.local.changed.notify_all();
    }
}

impl Holding {
    /// The grant was released in Redis, and was ours.
    pub(crate) fn released(&self) {
        self.local.state.lock().released_at = Some(Instant::now());
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.local
            .state
            .lock()
            .held
            .retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::Holder;
    use crate::metrics::Labels;

    #[test]
    fn objects_of_one_lock_share_a_local_and_others_do_not() {
        let locals = Locals::new();
        let pool = crate::pool::tests::unconnected();
        let other_pool = crate::pool::tests::unconnected();
        let a = locals.get(&pool, "lock:a");
        assert!(
            Arc::ptr_eq(&a, &locals.get(&pool.clone(), "lock:a")),
            "a clone of the pool"
        );
        assert!(
            !Arc::ptr_eq(&a, &locals.get(&pool, "lock:b")),
            "another name"
        );
        assert!(
            !Arc::ptr_eq(&a, &locals.get(&other_pool, "lock:a")),
            "another pool"
        );
        let weak = Arc::downgrade(&a);
        drop(a);
        drop(locals.get(&pool, "lock:a"));
        assert!(weak.upgrade().is_none(), "made anew once unused");
    }

    #[test]
    fn locals_nobody_uses_are_swept() {
        let locals = Locals::new();
        let pool = crate::pool::tests::unconnected();
        let kept: Vec<_> = (0..10)
            .map(|i| locals.get(&pool, &format!("kept:{i}")))
            .collect();
        for i in 0..10_000 {
            drop(locals.get(&pool, &format!("lock:{i}")));
        }
        assert!(
            locals.len() <= 100,
            "{} entries for 10 live locals",
            locals.len()
        );
        assert_eq!(kept.len(), 10);
    }

    fn lease(ttl: Option<Duration>) -> Arc<Lease> {
        let holder = Holder {
            name: "a".into(),
            owner_id: "o".into(),
            fencing_token: None,
            labels: Labels::new("mutex", None),
        };
        Arc::new(Lease::new(holder, Instant::now(), ttl, None))
    }

    #[test]
    fn turns_go_one_at_a_time_in_order_and_a_deadline_ends_the_wait() {
        let local = Arc::new(Local::default());
        let first = local.turn(1, None, |_| {}).unwrap();
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(
            local.turn(1, Some(soon), |_| {}).is_none(),
            "one turn at a time"
        );
        let queued = local.clone();
        let (waiters, order) = crate::pool::three_in_line(
            move || queued.turn(1, None, |_| {}).unwrap(),
            || local.state.lock().queue.len(),
        );
        drop(first);
        for waiter in waiters {
            waiter.join().unwrap();
        }
        assert_eq!(*order.lock(), [0, 1, 2]);
    }

    #[test]
    fn a_smaller_need_asks_the_turn_to_give_way_and_goes_first() {
        let local = Arc::new(Local::default());
        let big = local.turn(3, None, |_| {}).unwrap();
        big.waits_as("big");
        let nudged = Arc::new(Mutex::new(None));
        let small = {
            let (local, nudged) = (local.clone(), nudged.clone());
            std::thread::spawn(move || {
                let turn = local
                    .turn(1, None, |list| *nudged.lock() = Some(list.to_owned()))
                    .unwrap();
                drop(turn);
            })
        };
        while nudged.lock().is_none() {
            std::thread::yield_now();
        }
        assert_eq!(nudged.lock().as_deref(), Some("big"));
        assert!(big.should_give_way());
        drop(big);
        small.join().unwrap();
    }

    #[test]
    fn holders_take_no_turn_and_say_how_long_they_block() {
        let local = Arc::new(Local::default());
        assert_eq!(local.held_for(), None);
        let short = lease(Some(Duration::from_secs(10)));
        let holding = local.hold(&short);
        // A holder takes no turn: a waiter of its process gets one at once.
        drop(local.turn(1, Some(Instant::now()), |_| {}).unwrap());
        let left = local.held_for().unwrap().unwrap();
        assert!(left > Duration::from_secs(9) && left <= Duration::from_secs(10));
        let forever = lease(None);
        let also = local.hold(&forever);
        assert_eq!(local.held_for(), Some(None));
        drop(also);
        short.mark_lost_quietly(crate::error::LostReason::Expired, "test");
        assert_eq!(local.held_for(), None, "a lost grant blocks nobody");
        holding.released();
        drop(holding);
        assert!(local.take_released_at().is_some());
        assert!(local.take_released_at().is_none());
    }
}
