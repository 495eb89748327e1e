//! The within-request handoff in the VM's memory. Envoy runs a request's
//! downstream stream and every one of its attempts on one worker thread, and with
//! one `vm_id` (and VM configuration) both roles of the module share one VM there.
//! The downstream role opens a slot per request and names it in the tickets
//! header (which the attempts read anyway); each attempt marks the slot when it
//! starts and when its response headers come. The downstream role then knows,
//! without a host call, how many attempts there were and which upstream's answer
//! it is forwarding: the last attempt that got headers, unless another attempt
//! started after it (its answer was retried, not forwarded).
//!
//! Where the roles don't share a VM, the attempt finds no slot of its own VM (the
//! token names the VM) and falls back to the response header
//! [`super::within::SERVED_HEADER`], as does the downstream role when no attempt
//! touched its slot. The slots are a ring: a request still in flight after
//! [`CAPACITY`] newer ones on its worker falls back the same way.

use crate::ids::UpstreamId;
use std::cell::{Cell, RefCell};

/// Slots per VM (per worker thread).
pub const CAPACITY: usize = 4096;

/// A request's slot: this VM's id and the request's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// Which VM opened it.
    pub vm: u32,
    /// Which request.
    pub seq: u32,
}

/// What the attempts of a request left in its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    /// Attempts started.
    pub attempts: u32,
    /// The upstream whose answer is forwarded; `None`: the last attempt got no
    /// headers (Envoy answers itself).
    pub served: Option<UpstreamId>,
    /// That answer's status.
    pub status: Option<u16>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    seq: u32,
    open: bool,
    attempts: u32,
    served: Option<UpstreamId>,
    status: Option<u16>,
}

/// One VM's slots.
#[derive(Debug)]
pub struct Relay {
    vm: u32,
    next: Cell<u32>,
    slots: RefCell<Vec<Slot>>,
}

impl Relay {
    /// The slots of the VM `vm` (an id that tells VMs of one process apart).
    pub fn new(vm: u32) -> Relay {
        Relay {
            vm,
            next: Cell::new(0),
            slots: RefCell::new(Vec::new()),
        }
    }

    /// Opens the slot of a new request.
    pub fn open(&self) -> Token {
        let seq = self.next.get();
        self.next.set(seq.wrapping_add(1));
        let mut slots = self.slots.borrow_mut();
        let i = seq as usize % CAPACITY;
        if slots.len() <= i {
            slots.resize(i + 1, Slot::default());
        }
        slots[i] = Slot {
            seq,
            open: true,
            ..Slot::default()
        };
        Token { vm: self.vm, seq }
    }

    fn with<R>(&self, t: Token, f: impl FnOnce(&mut Slot) -> R) -> Option<R> {
        if t.vm != self.vm {
            return None;
        }
        let mut slots = self.slots.borrow_mut();
        let slot = slots.get_mut(t.seq as usize % CAPACITY)?;
        (slot.open && slot.seq == t.seq).then(|| f(slot))
    }

    /// An attempt of `t`'s request started (a retry: the answer before it, if
    /// any, is not the one forwarded). `false`: not a slot of this VM.
    pub fn attempt(&self, t: Token) -> bool {
        self.with(t, |s| {
            s.attempts = s.attempts.saturating_add(1);
            s.served = None;
            s.status = None;
        })
        .is_some()
    }

    /// An attempt of `t`'s request to `upstream` got response headers with
    /// `status`. `false`: not a slot of this VM (the attempt says it in the
    /// response header).
    pub fn served(&self, t: Token, upstream: UpstreamId, status: Option<u16>) -> bool {
        self.with(t, |s| {
            s.served = Some(upstream);
            s.status = status;
        })
        .is_some()
    }

    /// Closes `t`'s slot: what its attempts left, if one of them used it.
    pub fn close(&self, t: Token) -> Option<Relayed> {
        self.with(t, |s| {
            s.open = false;
            (s.attempts > 0).then_some(Relayed {
                attempts: s.attempts,
                served: s.served,
                status: s.served.and(s.status),
            })
        })
        .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const A: UpstreamId = UpstreamId::new(0);
    const B: UpstreamId = UpstreamId::new(1);

    #[test]
    fn the_last_attempt_with_headers_is_the_one_forwarded() {
        let r = Relay::new(7);
        let t = r.open();
        assert!(r.attempt(t));
        assert!(r.served(t, A, Some(503)));
        // Retried: A's answer was not forwarded.
        assert!(r.attempt(t));
        assert!(r.served(t, B, Some(200)));
        let got = r.close(t);
        assert_eq!(
            got,
            Some(Relayed {
                attempts: 2,
                served: Some(B),
                status: Some(200)
            })
        );
        assert_eq!(r.close(t), None, "closed once");
        assert!(!r.served(t, A, Some(503)));
    }

    #[test]
    fn a_last_attempt_without_headers_forwards_no_upstream() {
        let r = Relay::new(7);
        let t = r.open();
        r.attempt(t);
        r.served(t, A, Some(503));
        r.attempt(t);
        assert_eq!(
            r.close(t),
            Some(Relayed {
                attempts: 2,
                served: None,
                status: None
            })
        );
    }

    #[test]
    fn another_vms_token_or_an_untouched_slot_falls_back() {
        let (r, other) = (Relay::new(7), Relay::new(8));
        let t = r.open();
        assert!(!other.attempt(t));
        assert!(!other.served(t, A, Some(503)));
        assert_eq!(r.close(t), None, "no attempt used the slot");
    }

    #[test]
    fn a_slot_overwritten_by_a_newer_request_falls_back() {
        let r = Relay::new(7);
        let old = r.open();
        for _ in 0..CAPACITY {
            r.open();
        }
        assert!(!r.attempt(old));
        assert_eq!(r.close(old), None);
    }
}
