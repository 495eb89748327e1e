//! Success batching: fast successes on a quiet breaker change nothing but the
//! window's call count, so a worker holds them and writes a batch per flush period
//! (one CAS write instead of one per request). A batch whose write failed is put
//! back, so its successes are not lost.

/// Most successes held before a write, whatever their age.
pub const MAX_HELD: u32 = 256;

/// Fast successes one worker holds for a breaker cell (at least one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Breaker epoch the requests were admitted in.
    pub epoch: u32,
    /// How many.
    pub count: u32,
    /// When the first was added (or the batch was put back).
    pub since_ms: u64,
}

impl Batch {
    /// Whether it has waited `flush_ms`.
    pub fn is_due(&self, now_ms: u64, flush_ms: u64) -> bool {
        now_ms.saturating_sub(self.since_ms) >= flush_ms
    }
}

/// Adds one success of `epoch` to what is `held`; returns a batch to write now if
/// one is due: a batch of an older epoch (stale anyway), or one that is full or
/// has waited `flush_ms`.
pub fn hold(held: &mut Option<Batch>, epoch: u32, now_ms: u64, flush_ms: u64) -> Option<Batch> {
    let mut due = None;
    if held.is_some_and(|b| b.epoch != epoch) {
        due = held.take();
    }
    let b = held.get_or_insert(Batch {
        epoch,
        count: 0,
        since_ms: now_ms,
    });
    b.count += 1;
    if b.count >= MAX_HELD || b.is_due(now_ms, flush_ms) {
        // An epoch change above already took one batch; that one is stale anyway.
        due = held.take();
    }
    due
}

/// Puts back a batch whose write failed: it is retried one flush period from now
/// (not on the next success), merged with what is held in the same epoch; a batch
/// of another epoch than the one held is dropped (the breaker would ignore it).
pub fn restore(held: &mut Option<Batch>, batch: Batch, now_ms: u64) {
    match held {
        None => {
            *held = Some(Batch {
                since_ms: now_ms,
                ..batch
            })
        }
        Some(h) if h.epoch == batch.epoch => {
            h.count = h.count.saturating_add(batch.count).min(MAX_HELD);
            h.since_ms = now_ms;
        }
        Some(_) => {}
    }
}
