//! The request ids a master gives the calls it proposes (see
//! [`crate::types::Command::Once`]).

use std::sync::atomic::{AtomicU32, Ordering};

use rand::Rng;

/// Request ids in order: a random 32-bit epoch drawn when the master
/// starts, then a counter. The state machine files each remembered id
/// under its bytes (`once/` ++ be(master) ++ be(id)), so ids in order are
/// written beside the last one, where random ids were written at a random
/// place among up to two million remembered ones: each put's insert into
/// the memtable's skip list (and its delete when the id is forgotten)
/// searched it from the top. Uniqueness: within a run the counter does
/// not repeat until four billion ids, long after the window of 60 s forgot
/// them; across restarts two runs' ids meet only if their epochs match
/// (one chance in 2^32 per pair of runs that overlap in the window),
/// rarer than two random 64-bit ids meeting among the window's millions.
#[derive(Debug)]
pub(crate) struct RequestIds {
    epoch: u64,
    next: AtomicU32,
}

impl RequestIds {
    pub(crate) fn new() -> Self {
        Self::with_epoch(rand::thread_rng().gen())
    }

    fn with_epoch(epoch: u32) -> Self {
        RequestIds {
            epoch: u64::from(epoch) << 32,
            next: AtomicU32::new(0),
        }
    }

    /// The next id.
    pub(crate) fn next(&self) -> u64 {
        self.epoch | u64::from(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_grow_in_byte_order_and_differ_across_epochs() {
        let ids = RequestIds::with_epoch(7);
        let a: Vec<u64> = (0..1000).map(|_| ids.next()).collect();
        let bytes: Vec<[u8; 8]> = a.iter().map(|i| i.to_be_bytes()).collect();
        assert!(bytes.windows(2).all(|w| w[0] < w[1]));
        let other = RequestIds::with_epoch(8);
        assert!(!a.contains(&other.next()));
    }
}
