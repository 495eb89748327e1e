//! Counter increments batched in the worker: a host call costs about as much as
//! the rest of a request's work in the filter, and a request bumps two to four
//! counters. They go to Envoy in one call per counter that moved when this worker
//! has no stream in flight (so a client that reads stats after its answer sees
//! them), when the oldest one waited [`FLUSH_MS`], and on the root tick. A
//! Prometheus scrape sees at most [`FLUSH_MS`] less than happened.

use std::cell::{Cell, RefCell};

/// The longest a batched increment waits while streams keep coming.
pub const FLUSH_MS: u64 = 50;

/// Pending increments per counter position, and the streams in flight.
#[derive(Debug, Default)]
pub struct Counters {
    pending: RefCell<Vec<u32>>,
    /// Positions with a pending increment, in the order they first moved.
    moved: RefCell<Vec<usize>>,
    /// When the oldest pending increment was noticed (a stream end or tick).
    since_ms: Cell<Option<u64>>,
    in_flight: Cell<u32>,
}

impl Counters {
    /// Room for `positions` counters.
    pub fn new(positions: usize) -> Counters {
        Counters {
            pending: RefCell::new(vec![0; positions]),
            ..Counters::default()
        }
    }

    /// One increment of the counter at `pos` (ignored out of range).
    pub fn add(&self, pos: usize) {
        let mut p = self.pending.borrow_mut();
        if let Some(n) = p.get_mut(pos) {
            if *n == 0 {
                self.moved.borrow_mut().push(pos);
            }
            *n = n.saturating_add(1);
        }
    }

    /// Increments of `pos` not yet handed to the host.
    pub fn pending(&self, pos: usize) -> u32 {
        self.pending.borrow().get(pos).copied().unwrap_or(0)
    }

    /// A stream started.
    pub fn opened(&self) {
        self.in_flight.set(self.in_flight.get().saturating_add(1));
    }

    /// A stream ended: whether to flush now (no stream left in flight).
    pub fn closed(&self) -> bool {
        let n = self.in_flight.get().saturating_sub(1);
        self.in_flight.set(n);
        n == 0 && !self.moved.borrow().is_empty()
    }

    /// Whether the batch waited long enough at `now_ms` (the first call that
    /// finds it non-empty starts its clock).
    pub fn due(&self, now_ms: u64) -> bool {
        if self.moved.borrow().is_empty() {
            return false;
        }
        match self.since_ms.get() {
            Some(t) => now_ms.saturating_sub(t) >= FLUSH_MS,
            None => {
                self.since_ms.set(Some(now_ms));
                false
            }
        }
    }

    /// Takes every pending increment: (position, count) pairs.
    pub fn drain(&self) -> Vec<(usize, u32)> {
        self.since_ms.set(None);
        let moved = std::mem::take(&mut *self.moved.borrow_mut());
        let mut p = self.pending.borrow_mut();
        moved
            .into_iter()
            .filter_map(|pos| {
                let n = std::mem::take(p.get_mut(pos)?);
                (n > 0).then_some((pos, n))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn increments_add_up_and_drain_once() {
        let c = Counters::new(4);
        c.add(2);
        c.add(2);
        c.add(0);
        c.add(9);
        assert_eq!(c.pending(2), 2);
        assert_eq!(c.drain(), vec![(2, 2), (0, 1)]);
        assert_eq!(c.pending(2), 0);
        assert!(c.drain().is_empty());
    }

    #[test]
    fn the_last_stream_in_flight_flushes() {
        let c = Counters::new(2);
        c.opened();
        c.opened();
        c.add(1);
        assert!(!c.closed(), "one still in flight");
        assert!(c.closed());
        c.drain();
        c.opened();
        assert!(!c.closed(), "nothing pending");
    }

    #[test]
    fn a_batch_is_due_after_it_waited() {
        let c = Counters::new(2);
        assert!(!c.due(0));
        c.add(0);
        assert!(!c.due(1_000), "starts the clock");
        assert!(!c.due(1_000 + FLUSH_MS - 1));
        assert!(c.due(1_000 + FLUSH_MS));
        c.drain();
        c.add(1);
        assert!(!c.due(5_000));
    }
}
