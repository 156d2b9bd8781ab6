//! When each lease is due for renewal: a deadline queue with coalescing, in-flight marks and
//! cancellation. Pure bookkeeping on instants given by the caller, so it is tested without
//! a clock or a server.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// One registered lease.
struct Entry<T> {
    item: T,
    /// The lease each renewal restores: renewals come a third of it apart.
    ttl: Duration,
    due: Instant,
    /// A renewal of it is on the wire, or a manual extend holds it.
    in_flight: bool,
    /// Cancelled while in flight: dropped when settled.
    cancelled: bool,
}

/// The renewals of one lane, by due time.
pub(super) struct Scheduler<T> {
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    entries: HashMap<u64, Entry<T>>,
    next_id: u64,
}

impl<T> Default for Scheduler<T> {
    fn default() -> Self {
        Scheduler {
            deadlines: BinaryHeap::new(),
            entries: HashMap::new(),
            next_id: 0,
        }
    }
}

/// When a lease renewed (or granted) at `renewed_at` with `ttl` is next due: a third of the
/// lease later, so that two more tries fit before it runs out.
pub(super) fn next_due(renewed_at: Instant, ttl: Duration) -> Instant {
    renewed_at + ttl / 3
}

/// How early a renewal may be sent to join a batch: a sixth of the lease.
fn coalesce_window(ttl: Duration) -> Duration {
    ttl / 6
}

impl<T: Clone> Scheduler<T> {
    /// Registers a lease granted at `acquired_at`; returns its id.
    pub(super) fn insert(&mut self, item: T, ttl: Duration, acquired_at: Instant) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let due = next_due(acquired_at, ttl);
        self.deadlines.push(Reverse((due, id)));
        self.entries.insert(
            id,
            Entry {
                item,
                ttl,
                due,
                in_flight: false,
                cancelled: false,
            },
        );
        id
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether a renewal of `id` is on the wire (or a hold is on it).
    #[cfg(test)]
    fn in_flight(&self, id: u64) -> bool {
        self.entries.get(&id).is_some_and(|e| e.in_flight)
    }

    /// The earliest time anything is due, if anything is.
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_stale_deadlines();
        self.deadlines.peek().map(|&Reverse((due, _))| due)
    }

    /// When the earliest renewal is due by `now`, takes it and every other one due within
    /// its coalescing window (a sixth of its lease), marking them in flight; else nothing.
    /// Entries already in flight (held by a manual extend) are skipped: their hold
    /// reschedules them.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<(u64, T)> {
        let mut taken = Vec::new();
        match self.next_deadline() {
            Some(due) if due <= now => {}
            _ => return taken,
        }
        while let Some(&Reverse((due, id))) = self.deadlines.peek() {
            let Some(entry) = self.entries.get_mut(&id) else {
                self.deadlines.pop();
                continue;
            };
            if entry.due != due {
                self.deadlines.pop(); // rescheduled since
                continue;
            }
            if due > now + coalesce_window(entry.ttl) {
                break;
            }
            self.deadlines.pop();
            if entry.in_flight {
                continue;
            }
            entry.in_flight = true;
            taken.push((id, entry.item.clone()));
        }
        taken
    }

    /// Settles a renewal of `id` taken by [`take_due`](Self::take_due): due again at
    /// `next`, or dropped with `None`. An entry cancelled meanwhile is dropped either way.
    pub(super) fn settle(&mut self, id: u64, next: Option<Instant>) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        entry.in_flight = false;
        match next {
            Some(due) if !entry.cancelled => {
                entry.due = due;
                self.deadlines.push(Reverse((due, id)));
            }
            _ => {
                self.entries.remove(&id);
            }
        }
    }

    /// Keeps renewals off `id` until [`release_hold`](Self::release_hold). Returns false
    /// when a renewal of it is on the wire: wait for it to settle, then ask again.
    pub(super) fn hold(&mut self, id: u64) -> bool {
        match self.entries.get_mut(&id) {
            Some(entry) if entry.in_flight => false,
            Some(entry) => {
                entry.in_flight = true;
                true
            }
            None => true,
        }
    }

    /// Ends a hold: the next renewal is due a third of `left` (the lease left, if shorter
    /// than the usual one) after `now`.
    pub(super) fn release_hold(&mut self, id: u64, now: Instant, left: Option<Duration>) {
        if let Some(entry) = self.entries.get_mut(&id) {
            let left = left.unwrap_or(entry.ttl).min(entry.ttl);
            self.settle(id, Some(next_due(now, left)));
        }
    }

    /// Stops renewing `id`. Returns false when a renewal of it is on the wire: it is then
    /// dropped when that settles.
    pub(super) fn cancel(&mut self, id: u64) -> bool {
        match self.entries.get_mut(&id) {
            Some(entry) if entry.in_flight => {
                entry.cancelled = true;
                false
            }
            Some(_) => {
                self.entries.remove(&id);
                true
            }
            None => true,
        }
    }

    /// Whether `id` was cancelled while a renewal of it was on the wire.
    pub(super) fn is_cancelled(&self, id: u64) -> bool {
        self.entries.get(&id).is_some_and(|e| e.cancelled)
    }

    /// The item registered as `id`, if it still is.
    /// Every registered item.
    pub(super) fn items(&self) -> impl Iterator<Item = &T> {
        self.entries.values().map(|entry| &entry.item)
    }

    pub(super) fn get(&self, id: u64) -> Option<&T> {
        self.entries.get(&id).map(|e| &e.item)
    }

    /// The entries with a renewal on the wire.
    pub(super) fn in_flight_ids(&self) -> Vec<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| e.in_flight)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Pops deadlines of cancelled or rescheduled entries off the top of the queue.
    fn drop_stale_deadlines(&mut self) {
        while let Some(&Reverse((due, id))) = self.deadlines.peek() {
            match self.entries.get(&id) {
                Some(entry) if entry.due == due && !entry.in_flight => break,
                _ => {
                    self.deadlines.pop();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ids<'a>(taken: &[(u64, &'a str)]) -> Vec<&'a str> {
        let mut names: Vec<&str> = taken.iter().map(|&(_, n)| n).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn a_lease_is_due_a_third_of_its_ttl_after_the_grant() {
        let t0 = Instant::now();
        let mut s = Scheduler::default();
        s.insert("a", 300 * MS, t0);
        assert_eq!(s.next_deadline(), Some(t0 + 100 * MS));
        assert!(s.take_due(t0 + 99 * MS).is_empty());
        assert_eq!(ids(&s.take_due(t0 + 100 * MS)), ["a"]);
        // In flight: not taken twice.
        assert!(s.take_due(t0 + 200 * MS).is_empty());
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn renewals_come_out_in_due_order() {
        let t0 = Instant::now();
        let mut s = Scheduler::default();
        s.insert("late", 3000 * MS, t0);
        s.insert("early", 30 * MS, t0);
        s.insert("middle", 300 * MS, t0);
        assert_eq!(ids(&s.take_due(t0 + 10 * MS)), ["early"]);
        assert_eq!(ids(&s.take_due(t0 + 100 * MS)), ["middle"]);
        assert_eq!(ids(&s.take_due(t0 + 1000 * MS)), ["late"]);
    }

    #[test]
    fn leases_due_within_a_sixth_of_the_lease_are_batched() {
        let t0 = Instant::now();
        let mut s = Scheduler::default();
        // Due at 100, 110, 116 and 117 ms; the window of a 300 ms lease is 50 ms.
        s.insert("a", 300 * MS, t0);
        s.insert("b", 300 * MS, t0 + 10 * MS);
        s.insert("c", 300 * MS, t0 + 16 * MS);
        s.insert("far", 300 * MS, t0 + 60 * MS);
        assert_eq!(ids(&s.take_due(t0 + 100 * MS)), ["a", "b", "c"]);
        assert_eq!(ids(&s.take_due(t0 + 160 * MS)), ["far"]);
    }

    #[test]
    fn a_lease_due_at_the_very_end_of_the_window_joins_the_batch() {
        let t0 = Instant::now();
        let mut s = Scheduler::default();
        // Due at 100 and 150 ms; the window of a 300 ms lease is 50 ms.
        s.insert("a", 300 * MS, t0);
        s.insert("edge", 300 * MS, t0 + 50 * MS);
        s.insert("past", 300 * MS, t0 + 51 * MS);
        assert_eq!(ids(&s.take_due(t0 + 100 * MS)), ["a", "edge"]);
    }

    #[test]
    fn the_scheduler_knows_its_leases_and_which_are_on_the_wire() {
        let t0 = Instant::now();
        let mut s = Scheduler::default();
        assert!(s.is_empty());
        assert_eq!(s.len(), 0);
        assert!(s.in_flight_ids().is_empty());
        let a = s.insert("a", 300 * MS, t0);
        let b = s.insert("b", 3000 * MS, t0);
        assert!(!s.is_empty());
        assert_eq!(s.len(), 2);
        assert_eq!((s.get(a), s.get(b)), (Some(&"a"), Some(&"b")));
        assert!(s.in_flight_ids().is_empty());
        assert!(s.hold(b));
        assert_eq!(s.in_flight_ids(), [b]);
        assert_eq!(ids(&s.take_due(t0 + 100 * MS)), ["a"]);
        let mut on_the_wire = s.in_flight_ids();
        on_the_wire.sort_unstable();
        assert_eq!(on_the_wire, [a, b]);
        s.settle(a, None);
        assert_eq!((s.get(a), s.len()), (None, 1));
        assert_eq!(s.in_flight_ids(), [b]);
    }

    #[test]
    fn settled_renewals_are_rescheduled_or_dropped() {
        let t0 = Instant::now();
        let mut s = Scheduler::default();
        let a = s.insert("a", 300 * MS, t0);
        let b = s.insert("b", 300 * MS, t0);
        assert_eq!(s.take_due(t0 + 100 * MS).len(), 2);
        s.settle(a, Some(t0 + 200 * MS));
        s.settle(b, None);
        assert_eq!(s.len(), 1);
        assert_eq!(s.next_deadline(), Some(t0 + 200 * MS));
        assert_eq!(ids(&s.take_due(t0 + 200 * MS)), ["a"]);
    }

    #[test]
    fn a_cancelled_lease_is_never_taken_again() {
        let t0 = Instant::now();
        let mut s = Scheduler::default();
        let a = s.insert("a", 300 * MS, t0);
        s.insert("b", 300 * MS, t0);
        assert!(s.cancel(a));
        assert_eq!(ids(&s.take_due(t0 + 100 * MS)), ["b"]);
        assert!(s.cancel(a), "cancelling twice is harmless");
    }

    #[test]
    fn a_renewal_in_flight_while_its_guard_drops_is_dropped_when_it_settles() {
        let t0 = Instant::now();
        let mut s = Scheduler::default();
        let a = s.insert("a", 300 * MS, t0);
        assert_eq!(s.take_due(t0 + 100 * MS).len(), 1);
        assert!(s.in_flight(a));
        assert!(!s.is_cancelled(a));
        assert!(!s.cancel(a), "in flight: dropped when it settles");
        assert!(s.is_cancelled(a), "its outcome is to be ignored");
        s.settle(a, Some(t0 + 200 * MS));
        assert!(!s.in_flight(a));
        assert!(s.is_empty(), "a cancelled lease is not rescheduled");
        assert!(s.take_due(t0 + 1000 * MS).is_empty());
    }

    #[test]
    fn a_hold_keeps_renewals_off_and_reschedules_from_what_is_left() {
        let t0 = Instant::now();
        let mut s = Scheduler::default();
        let a = s.insert("a", 300 * MS, t0);
        assert!(s.hold(a));
        assert!(s.take_due(t0 + 100 * MS).is_empty(), "held: not renewed");
        // The extend under the hold left 60 ms: renew within 20 ms.
        s.release_hold(a, t0 + 100 * MS, Some(60 * MS));
        assert_eq!(s.next_deadline(), Some(t0 + 120 * MS));
        assert_eq!(s.take_due(t0 + 120 * MS).len(), 1);
        assert!(!s.hold(a), "a renewal on the wire must settle first");
        s.settle(a, Some(t0 + 220 * MS));
        assert!(s.hold(a));
        // A longer lease left than the usual one keeps the usual pace.
        s.release_hold(a, t0 + 300 * MS, Some(5000 * MS));
        assert_eq!(s.next_deadline(), Some(t0 + 400 * MS));
    }
}
