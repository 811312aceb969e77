//! Lease expiry, kept by the leader in memory as etcd does.
//!
//! Grants and revocations are replicated commands; keep-alives are not: they
//! only move an expiry time on the leader. A new leader gives every lease a
//! full TTL again, so a lease never expires early because leadership moved.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::{Duration, Instant};

/// Smallest TTL granted, in seconds: a lease must outlive a leader election.
pub const MIN_TTL: i64 = 2;
/// Largest TTL accepted, in seconds (etcd's limit).
pub const MAX_TTL: i64 = 9_000_000_000;

/// What a keep-alive found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed for this many seconds.
    Renewed(i64),
    /// Expired, but its revocation is not applied yet: its keys still exist.
    Expired,
    /// No such lease.
    Unknown,
}

#[derive(Default)]
pub struct Lessor {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Granted TTL and expiry of every lease.
    leases: HashMap<i64, (i64, Instant)>,
    /// The leadership term the expiry times were started for: only then are
    /// they a leader's (a follower's are only when each lease was granted).
    term: Option<u64>,
}

impl Lessor {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expiry(ttl: i64) -> Instant {
        Instant::now() + Duration::from_secs(ttl.max(0) as u64)
    }

    pub fn granted(&self, id: i64, ttl: i64) {
        self.lock().leases.insert(id, (ttl, Self::expiry(ttl)));
    }

    pub fn revoked(&self, id: i64) {
        self.lock().leases.remove(&id);
    }

    /// Start every lease's clock again (after a snapshot replaced the
    /// state); the clocks belong to no leadership term.
    pub fn reset(&self, leases: &[(i64, i64)]) {
        let mut m = self.lock();
        Self::restart(&mut m, leases);
        m.term = None;
    }

    /// Start every lease's clock again for a leadership term that begins.
    pub fn reset_for_term(&self, term: u64, leases: &[(i64, i64)]) {
        let mut m = self.lock();
        if m.term == Some(term) {
            // Restarted for this term already (by a concurrent caller).
            return;
        }
        Self::restart(&mut m, leases);
        m.term = Some(term);
    }

    /// The leadership term the clocks were last started for.
    pub fn term(&self) -> Option<u64> {
        self.lock().term
    }

    fn restart(m: &mut State, leases: &[(i64, i64)]) {
        m.leases.clear();
        for (id, ttl) in leases {
            m.leases.insert(*id, (*ttl, Self::expiry(*ttl)));
        }
    }

    /// Renew a lease that has not expired yet.
    pub fn renew(&self, id: i64) -> Renewal {
        let mut m = self.lock();
        let now = Instant::now();
        match m.leases.get_mut(&id) {
            Some((ttl, exp)) if *exp > now => {
                *exp = Self::expiry(*ttl);
                Renewal::Renewed(*ttl)
            }
            Some(_) => Renewal::Expired,
            None => Renewal::Unknown,
        }
    }

    /// Seconds left (rounded up) and granted TTL.
    pub fn remaining(&self, id: i64) -> Option<(i64, i64)> {
        let m = self.lock();
        let (ttl, exp) = m.leases.get(&id)?;
        let left = exp.saturating_duration_since(Instant::now());
        let secs = left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0);
        Some((secs, *ttl))
    }

    pub fn expired(&self) -> Vec<i64> {
        let now = Instant::now();
        self.lock()
            .leases
            .iter()
            .filter(|(_, (_, exp))| *exp <= now)
            .map(|(id, _)| *id)
            .collect()
    }
}
