//! How many connections to one server may wait in `BLPOP` at once: all but one, so that a
//! holder's release, a renewal or a `try_lock` always finds a connection within its bound.
//! A waiter beyond that waits in the process for a turn, first come first served, without
//! talking to Redis; one whose turn others wait for gives it up after each wait in Redis, so
//! that every name waited on gets its turn.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// The turns to wait in Redis on one server's connections.
#[derive(Debug)]
pub(crate) struct Blocking {
    capacity: usize,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Turns taken.
    used: usize,
    /// Tickets of the waiters for a turn, oldest first.
    queue: VecDeque<u64>,
    next_ticket: u64,
}

/// A turn to wait in Redis on one connection; given back when dropped.
#[derive(Debug)]
pub(crate) struct Turn {
    blocking: Arc<Blocking>,
}

impl Blocking {
    /// Turns for a pool of `max_size` connections (at least 2): all but one of them.
    pub(super) fn new(max_size: u32) -> Arc<Blocking> {
        let capacity = usize::try_from(max_size.saturating_sub(1).max(1)).unwrap_or(usize::MAX);
        Arc::new(Blocking {
            capacity,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        })
    }

    /// A turn, if one is free now and nobody waits for one.
    pub(crate) fn try_enter(self: &Arc<Self>) -> Option<Turn> {
        let mut state = self.state.lock();
        if state.queue.is_empty() && state.used < self.capacity {
            state.used += 1;
            return Some(self.turn());
        }
        None
    }

    /// Waits for a turn, in the order of asking, until `deadline` (`None`: as long as it
    /// takes); `None` when the deadline passed first.
    pub(crate) fn enter(self: &Arc<Self>, deadline: Option<Instant>) -> Option<Turn> {
        let mut state = self.state.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push_back(ticket);
        loop {
            if state.queue.front() == Some(&ticket) && state.used < self.capacity {
                state.queue.pop_front();
                state.used += 1;
                // The next in line may be able to go too.
                self.changed.notify_all();
                return Some(self.turn());
            }
            if crate::time::wait_on(&self.changed, &mut state, deadline) {
                state.queue.retain(|&t| t != ticket);
                self.changed.notify_all();
                return None;
            }
        }
    }

    fn turn(self: &Arc<Self>) -> Turn {
        Turn {
            blocking: self.clone(),
        }
    }
}

impl Turn {
    /// Whether somebody waits for a turn on this server: then this one is given up after
    /// its wait in Redis.
    pub(crate) fn contended(&self) -> bool {
        !self.blocking.state.lock().queue.is_empty()
    }

    /// Whether this is a turn of `blocking`.
    pub(crate) fn is_of(&self, blocking: &Arc<Blocking>) -> bool {
        Arc::ptr_eq(&self.blocking, blocking)
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut state = self.blocking.state.lock();
        state.used -= 1;
        self.blocking.changed.notify_all();
    }
}

/// Three threads, each asking `enter` for a turn once the one before it is queued (`queued`
/// says how many are), each noting its number when its turn came: the threads, and the
/// numbers in the order they got their turns. For the tests of queues of turns.
#[cfg(test)]
pub(crate) fn three_in_line<T>(
    enter: impl Fn() -> T + Clone + Send + 'static,
    queued: impl Fn() -> usize,
) -> (Vec<std::thread::JoinHandle<()>>, Arc<Mutex<Vec<usize>>>) {
    let order = Arc::new(Mutex::new(Vec::new()));
    let waiters = (0..3)
        .map(|i| {
            let (enter, order) = (enter.clone(), order.clone());
            let waiter = std::thread::spawn(move || {
                let turn = enter();
                order.lock().push(i);
                drop(turn);
            });
            while queued() < i + 1 {
                std::thread::yield_now();
            }
            waiter
        })
        .collect();
    (waiters, order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_connection_is_always_left_for_other_requests() {
        let blocking = Blocking::new(3);
        let a = blocking.try_enter().unwrap();
        let b = blocking.try_enter().unwrap();
        assert!(
            blocking.try_enter().is_none(),
            "the third of three connections"
        );
        assert!(!a.contended());
        drop(b);
        assert!(blocking.try_enter().is_some());
        drop(a);
        // A pool of two: one turn.
        let two = Blocking::new(2);
        let only = two.try_enter().unwrap();
        assert!(two.try_enter().is_none());
        drop(only);
    }

    #[test]
    fn turns_go_in_the_order_asked_and_a_deadline_ends_the_wait() {
        let blocking = Blocking::new(2);
        let held = blocking.try_enter().unwrap();
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(blocking.enter(Some(soon)).is_none(), "no turn came");
        assert!(!held.contended(), "a waiter that gave up is gone");
        let queued = blocking.clone();
        let (waiters, order) = three_in_line(
            move || queued.enter(None).unwrap(),
            || blocking.state.lock().queue.len(),
        );
        assert!(held.contended());
        // Someone asking now while others wait gets in line.
        assert!(blocking.try_enter().is_none());
        drop(held);
        for waiter in waiters {
            waiter.join().unwrap();
        }
        assert_eq!(*order.lock(), [0, 1, 2]);
    }
}
