//! The local side of waiting: every lock object of one pool and one name in this process
//! shares one local queue, so that its threads wait for each other in the process and one
//! of them at a time waits in Redis, however many objects they built. (As Redisson shares
//! one subscription per lock name and client.)
//!
//! A lock kind keeps its queues in a [`Locals`] of its own, keyed by the pool and a key of
//! the lock; a queue lives as long as a lock object uses it.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::Pool;

/// The local queues of one lock kind, by pool and lock key.
pub(crate) struct Locals<T> {
    queues: Mutex<Queues<T>>,
}

struct Queues<T> {
    by_key: HashMap<(u64, String), Weak<T>>,
    /// How many entries there were after the last sweep of dead ones: the next sweep comes
    /// when there are twice as many, so sweeping costs O(1) per call over time.
    swept_at: usize,
}

impl<T: Default> Locals<T> {
    pub(crate) fn new() -> Locals<T> {
        Locals {
            queues: Mutex::new(Queues {
                by_key: HashMap::new(),
                swept_at: 0,
            }),
        }
    }

    /// The queue of the lock `key` on `pool`, shared with every other object of that lock
    /// in this process; made if none lives.
    pub(crate) fn get(&self, pool: &Pool, key: &str) -> Arc<T> {
        let mut queues = self.queues.lock();
        let id = (pool.id(), key.to_owned());
        if let Some(queue) = queues.by_key.get(&id).and_then(Weak::upgrade) {
            return queue;
        }
        let queue = Arc::new(T::default());
        queues.by_key.insert(id, Arc::downgrade(&queue));
        if queues.by_key.len() > 2 * queues.swept_at.max(32) {
            queues.by_key.retain(|_, queue| queue.strong_count() > 0);
            queues.swept_at = queues.by_key.len();
        }
        queue
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.queues.lock().by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_of_one_lock_share_a_queue_and_others_do_not() {
        let locals: Locals<Mutex<u32>> = Locals::new();
        let pool = crate::pool::tests::unconnected();
        let other_pool = crate::pool::tests::unconnected();
        let a = locals.get(&pool, "lock:a");
        *a.lock() = 7;
        assert_eq!(
            *locals.get(&pool.clone(), "lock:a").lock(),
            7,
            "a clone of the pool"
        );
        assert_eq!(*locals.get(&pool, "lock:b").lock(), 0, "another name");
        assert_eq!(*locals.get(&other_pool, "lock:a").lock(), 0, "another pool");
        drop(a);
        assert_eq!(
            *locals.get(&pool, "lock:a").lock(),
            0,
            "made anew once unused"
        );
    }

    #[test]
    fn queues_nobody_uses_are_swept() {
        let locals: Locals<Mutex<u32>> = Locals::new();
        let pool = crate::pool::tests::unconnected();
        let kept: Vec<_> = (0..10)
            .map(|i| locals.get(&pool, &format!("kept:{i}")))
            .collect();
        for i in 0..10_000 {
            drop(locals.get(&pool, &format!("lock:{i}")));
        }
        assert!(
            locals.len() <= 100,
            "{} entries for 10 live queues",
            locals.len()
        );
        assert_eq!(kept.len(), 10);
    }
}
