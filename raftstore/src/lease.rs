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
    /// Grants and revokes told so far (see [`ResetTicket`]).
    changes: u64,
    /// Those told while a reset reads the leases from the store, numbered.
    journal: Vec<(u64, Change)>,
    /// Resets between [`Lessor::begin_reset`] and their end.
    resets: usize,
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Granted(i64, i64),
    Revoked(i64),
}

/// A reset of the clocks under way: [`Lessor::begin_reset`], then the
/// leases read from the store, then [`Lessor::finish_reset_for_term`]. The
/// grants and revokes applied meanwhile are told to the lessor, maybe
/// after the read saw them, maybe before, and are replayed over what was
/// read: a reset that cleared the table and filled it from an earlier read
/// lost a lease granted in between, and a keep-alive then found no such
/// lease (the chaos tests' member-kill nemesis, seed 607).
#[must_use = "a reset begun must be finished or dropped"]
pub struct ResetTicket<'a> {
    lessor: &'a Lessor,
    after: u64,
    done: bool,
}

impl Drop for ResetTicket<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut m = self.lessor.lock();
            m.end_reset();
        }
    }
}

impl Change {
    fn apply(self, leases: &mut HashMap<i64, (i64, Instant)>) {
        match self {
            Change::Granted(id, ttl) => {
                leases.insert(id, (ttl, Lessor::expiry(ttl)));
            }
            Change::Revoked(id) => {
                leases.remove(&id);
            }
        }
    }
}

impl State {
    fn told(&mut self, c: Change) {
        c.apply(&mut self.leases);
        self.changes += 1;
        if self.resets > 0 {
            let n = self.changes;
            self.journal.push((n, c));
        }
    }

    fn end_reset(&mut self) {
        self.resets = self.resets.saturating_sub(1);
        if self.resets == 0 {
            self.journal.clear();
        }
    }
}

impl Lessor {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expiry(ttl: i64) -> Instant {
        Instant::now() + Duration::from_secs(ttl.max(0) as u64)
    }

    pub fn granted(&self, id: i64, ttl: i64) {
        self.lock().told(Change::Granted(id, ttl));
    }

    pub fn revoked(&self, id: i64) {
        self.lock().told(Change::Revoked(id));
    }

    /// Begin a reset of the clocks for a leadership term: read the leases
    /// from the store after this, then finish with
    /// [`Lessor::finish_reset_for_term`].
    pub fn begin_reset(&self) -> ResetTicket<'_> {
        let mut m = self.lock();
        m.resets += 1;
        ResetTicket {
            lessor: self,
            after: m.changes,
            done: false,
        }
    }

    /// Start every lease's clock again for a leadership term that begins,
    /// from `leases` (read from the store after `ticket` was taken) and the
    /// grants and revokes told since the ticket, in their order.
    pub fn finish_reset_for_term(
        &self,
        mut ticket: ResetTicket<'_>,
        term: u64,
        leases: &[(i64, i64)],
    ) {
        ticket.done = true;
        let mut m = self.lock();
        if m.term != Some(term) {
            Self::restart(&mut m, leases);
            let State {
                leases, journal, ..
            } = &mut *m;
            for (_, c) in journal.iter().filter(|(n, _)| *n > ticket.after) {
                c.apply(leases);
            }
            m.term = Some(term);
        }
        m.end_reset();
    }

    /// Start every lease's clock again (after a snapshot replaced the
    /// state); the clocks belong to no leadership term.
    pub fn reset(&self, leases: &[(i64, i64)]) {
        let mut m = self.lock();
        Self::restart(&mut m, leases);
        m.term = None;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_grant_applied_while_a_reset_reads_the_store_is_kept() {
        let l = Lessor::default();
        l.granted(1, 5);
        let ticket = l.begin_reset();
        // The read of the store (below) was taken before this grant applied.
        l.granted(7, 10);
        l.finish_reset_for_term(ticket, 3, &[(1, 5)]);
        assert_eq!(l.renew(7), Renewal::Renewed(10), "the grant in between");
        assert_eq!(l.renew(1), Renewal::Renewed(5), "the lease read");
        assert_eq!(l.term(), Some(3));
    }

    #[tokio::test]
    async fn a_revoke_applied_while_a_reset_reads_the_store_is_kept() {
        let l = Lessor::default();
        l.granted(1, 5);
        let ticket = l.begin_reset();
        // The read still found lease 1; its revoke applied after.
        l.revoked(1);
        l.finish_reset_for_term(ticket, 3, &[(1, 5)]);
        assert_eq!(l.renew(1), Renewal::Unknown);
    }

    #[tokio::test]
    async fn a_second_reset_of_a_term_keeps_the_clocks_and_an_abandoned_one_stops_the_journal() {
        let l = Lessor::default();
        let t = l.begin_reset();
        l.finish_reset_for_term(t, 3, &[(1, 5)]);
        // Read before lease 1's revoke, finished after it: the term's
        // clocks are already running and stay as they are.
        let t = l.begin_reset();
        l.revoked(1);
        l.finish_reset_for_term(t, 3, &[(1, 5)]);
        assert_eq!(l.renew(1), Renewal::Unknown);
        // A reset dropped on an error journals nothing more.
        drop(l.begin_reset());
        l.granted(2, 5);
        let m = l.lock();
        assert_eq!(m.resets, 0);
        assert!(m.journal.is_empty());
    }
}
