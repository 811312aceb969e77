//! Lease workload checker. Each lease is granted with a TTL, one key is put
//! attached to it, then the client keeps it alive for a while, reads the key,
//! and finally either revokes the lease or lets it expire.
//!
//! The model is conservative: a grant or keep-alive that was answered with a
//! positive TTL was processed no earlier than its invocation, so the lease
//! cannot expire before `invocation + TTL` of any of them that completed
//! before the observation was invoked (a renewal whose answer was lost counts
//! for nothing). Violations:
//! - `early-expiry`: a linearizable read, invoked after the put of the key was
//!   acknowledged, finds the key gone (or a keep-alive answers TTL 0) before
//!   that guaranteed lifetime has elapsed, with no revoke invoked yet;
//! - `resurrected`: once the key was seen gone (or the lease reported gone),
//!   a later read finds it again or a later keep-alive renews the lease;
//! - `survived-revoke`: after a revoke was acknowledged, a later read still
//!   finds the key or a later keep-alive still renews the lease;
//! - `late-expiry`: a read invoked more than [`LATE_SLACK_TTLS`] TTLs plus
//!   [`LATE_SLACK_US`] after the last renewal that may have taken effect
//!   (answered, or unknown: up to its completion) still finds the key. A
//!   new leader renews every lease (etcd's `Promote`, Flotilla's reset on a
//!   term change), so one election inside the lease's life may add a TTL;
//!   leases whose overdue window meets a fault window (a fault until 10 s
//!   after its heal) are not judged, only counted.

use std::collections::BTreeMap;

use serde_json::json;

use super::{ms, CheckResult, Violation};
use crate::history::{Entry, Op, Status};

#[derive(Default)]
struct Lease<'a> {
    grant: Option<&'a Entry>,
    ttl_us: u64,
    ops: Vec<&'a Entry>,
}

/// TTLs a lease may outlive its last renewal by: its own, and one more for
/// a leader change.
pub const LATE_SLACK_TTLS: u64 = 2;
/// And beyond them: the expiry timer's period, the revoke's commit, the
/// clients' clock against the leader's.
pub const LATE_SLACK_US: u64 = 2_000_000;

pub fn check(history: &[Entry]) -> CheckResult {
    check_with(history, &[])
}

/// [`check`], with the windows in which faults were active (microseconds,
/// `[from, to)`): no `late-expiry` is judged across them.
pub fn check_with(history: &[Entry], busy: &[(u64, u64)]) -> CheckResult {
    let mut leases: BTreeMap<i64, Lease> = BTreeMap::new();
    let mut ungranted = 0usize;
    for e in history {
        match &e.op {
            Op::LeaseGrant {
                lease: Some(id),
                ttl: Some(ttl),
            } if e.status == Status::Ok => {
                let l = leases.entry(*id).or_default();
                l.grant = Some(e);
                l.ttl_us = (*ttl).max(0) as u64 * 1_000_000;
            }
            Op::LeaseGrant { .. } => ungranted += 1,
            Op::LeasePut { lease, .. }
            | Op::LeaseKeepAlive { lease, .. }
            | Op::LeaseRevoke { lease }
            | Op::LeaseRead { lease, .. } => leases.entry(*lease).or_default().ops.push(e),
            _ => {}
        }
    }

    let mut violations = Vec::new();
    let (mut reads, mut keepalives, mut expired, mut revoked) = (0, 0, 0, 0);
    let (mut in_time, mut late_excused) = (0, 0);
    for (id, l) in &leases {
        let Some(grant) = l.grant else { continue };
        // Renewals: (invocation, completion, guaranteed lifetime from the invocation).
        let mut renewals: Vec<(u64, u64, u64)> = vec![(grant.invoke, grant.complete, l.ttl_us)];
        for e in &l.ops {
            if let (Status::Ok, Op::LeaseKeepAlive { ttl: Some(t), .. }) = (e.status, &e.op) {
                if *t > 0 {
                    renewals.push((e.invoke, e.complete, l.ttl_us.min(*t as u64 * 1_000_000)));
                }
            }
        }
        // Guaranteed alive until, counting renewals answered before `t`.
        let alive_until = |t: u64| -> (u64, Option<&(u64, u64, u64)>) {
            renewals
                .iter()
                .filter(|(_, c, _)| *c < t)
                .map(|r| (r.0 + r.2, Some(r)))
                .max_by_key(|(u, _)| *u)
                .unwrap_or((0, None))
        };
        let put_acked = l
            .ops
            .iter()
            .filter(|e| e.status == Status::Ok && matches!(e.op, Op::LeasePut { .. }))
            .map(|e| e.complete)
            .min();
        let revoke_invoked = l
            .ops
            .iter()
            .filter(|e| e.status != Status::Fail && matches!(e.op, Op::LeaseRevoke { .. }))
            .map(|e| e.invoke)
            .min()
            .unwrap_or(u64::MAX);
        let revoke_acked = l
            .ops
            .iter()
            .find(|e| e.status == Status::Ok && matches!(e.op, Op::LeaseRevoke { .. }))
            .copied();
        if revoke_acked.is_some() {
            revoked += 1;
        }

        // When (and by which op) the lease or its key was first seen gone.
        let mut gone: Option<&Entry> = None;
        for e in &l.ops {
            if e.status != Status::Ok {
                continue;
            }
            let gone_now = match e.op {
                Op::LeaseRead {
                    present: Some(false),
                    ..
                } => {
                    reads += 1;
                    put_acked.is_some_and(|p| p < e.invoke)
                }
                Op::LeaseRead { .. } => {
                    reads += 1;
                    false
                }
                Op::LeaseKeepAlive { ttl: Some(0), .. } => {
                    keepalives += 1;
                    true
                }
                Op::LeaseKeepAlive { .. } => {
                    keepalives += 1;
                    false
                }
                _ => false,
            };
            if !gone_now {
                continue;
            }
            let (until, by) = alive_until(e.invoke);
            if e.complete < until && e.complete < revoke_invoked {
                let mut excerpt = vec![grant.clone()];
                excerpt.extend(
                    l.ops
                        .iter()
                        .filter(|o| o.invoke <= e.complete)
                        .map(|o| (*o).clone()),
                );
                violations.push(Violation {
                    kind: "early-expiry".into(),
                    message: format!(
                        "lease {id:x} (TTL {}s): {:?} answered at {} says it is gone, but a renewal \
                         invoked at {} guarantees it until {} and no revoke was invoked before",
                        l.ttl_us / 1_000_000,
                        e.op,
                        ms(e.complete),
                        ms(by.map(|r| r.0).unwrap_or(0)),
                        ms(until)
                    ),
                    excerpt,
                });
            }
            if gone.is_none_or(|g| e.complete < g.complete) {
                gone = Some(e);
            }
        }
        if gone.is_some() && revoke_invoked == u64::MAX {
            expired += 1;
        }

        // Gone in time: once no renewal can hold it any longer.
        let last_renewal = l
            .ops
            .iter()
            .filter(|e| match (e.status, &e.op) {
                (Status::Ok, Op::LeaseKeepAlive { ttl: Some(t), .. }) => *t > 0,
                (Status::Info, Op::LeaseKeepAlive { .. }) => true,
                _ => false,
            })
            .map(|e| e.complete)
            .fold(grant.complete, u64::max);
        let overdue = last_renewal + LATE_SLACK_TTLS * l.ttl_us + LATE_SLACK_US;
        let late_read = l.ops.iter().find(|e| {
            e.status == Status::Ok
                && e.invoke > overdue
                && matches!(
                    e.op,
                    Op::LeaseRead {
                        present: Some(true),
                        ..
                    }
                )
        });
        if let Some(r) = late_read {
            if busy
                .iter()
                .any(|&(from, to)| from < r.invoke && to > last_renewal)
            {
                late_excused += 1;
            } else {
                violations.push(Violation {
                    kind: "late-expiry".into(),
                    message: format!(
                        "lease {id:x} (TTL {}s): last renewed by {}, yet a read invoked at {} \
                         ({} after it, no fault in between) finds its key",
                        l.ttl_us / 1_000_000,
                        ms(last_renewal),
                        ms(r.invoke),
                        ms(r.invoke - last_renewal)
                    ),
                    excerpt: vec![grant.clone(), (*r).clone()],
                });
            }
        } else if revoke_invoked == u64::MAX && gone.is_some_and(|g| g.invoke <= overdue) {
            in_time += 1;
        }

        // Nothing comes back after it was seen gone, or after a revoke.
        let ends = [
            gone.map(|g| ("resurrected", g)),
            revoke_acked.map(|r| ("survived-revoke", r)),
        ];
        for (kind, end) in ends.into_iter().flatten() {
            let alive_after: Vec<&&Entry> = l
                .ops
                .iter()
                .filter(|e| {
                    e.status == Status::Ok
                        && e.invoke > end.complete
                        && (matches!(
                            e.op,
                            Op::LeaseRead {
                                present: Some(true),
                                ..
                            }
                        ) || matches!(e.op, Op::LeaseKeepAlive { ttl: Some(t), .. } if t > 0))
                })
                .collect();
            if let Some(first) = alive_after.first() {
                violations.push(Violation {
                    kind: kind.into(),
                    message: format!(
                        "lease {id:x}: {:?} answered at {} says it is gone, yet {:?} invoked at {} finds it alive",
                        end.op,
                        ms(end.complete),
                        first.op,
                        ms(first.invoke)
                    ),
                    excerpt: vec![end.clone(), (**first).clone()],
                });
            }
        }
    }
    CheckResult::new(
        "lease",
        json!({
            "leases": leases.values().filter(|l| l.grant.is_some()).count(),
            "grants_unknown": ungranted, "reads": reads, "keepalives": keepalives,
            "expired_seen": expired, "revoked": revoked,
            "expired_in_time": in_time, "late_expiry_excused": late_excused,
        }),
        violations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Validity;

    const S: u64 = 1_000_000;

    fn at(invoke: u64, complete: u64, op: Op) -> Entry {
        Entry::ok(1, invoke, complete, op)
    }
    fn grant(t: u64, ttl: i64) -> Entry {
        at(
            t,
            t + 1000,
            Op::LeaseGrant {
                lease: Some(7),
                ttl: Some(ttl),
            },
        )
    }
    fn put(t: u64) -> Entry {
        at(
            t,
            t + 1000,
            Op::LeasePut {
                key: "l/1".into(),
                lease: 7,
            },
        )
    }
    fn ka(t: u64, ttl: i64) -> Entry {
        at(
            t,
            t + 1000,
            Op::LeaseKeepAlive {
                lease: 7,
                ttl: Some(ttl),
            },
        )
    }
    fn read(t: u64, present: bool) -> Entry {
        at(
            t,
            t + 1000,
            Op::LeaseRead {
                key: "l/1".into(),
                lease: 7,
                present: Some(present),
            },
        )
    }
    fn revoke(t: u64) -> Entry {
        at(t, t + 1000, Op::LeaseRevoke { lease: 7 })
    }

    #[test]
    fn a_key_read_long_after_the_last_renewal_is_late_expiry_unless_a_fault_was_on() {
        // TTL 2 s, last renewed by 1.5 s: overdue after 1.5 + 2 x 2 + 2 = 7.5 s.
        let h = vec![
            grant(0, 2),
            put(10_000),
            ka(S / 2, 2),
            read(3 * S, true),
            read(7 * S, true),
            read(8 * S, true),
        ];
        let r = check(&h);
        assert_eq!(r.validity, Validity::Invalid, "{r:#?}");
        assert_eq!(r.violations[0].kind, "late-expiry");
        // A fault (a leader change may renew every lease) in between: not judged.
        let r = check_with(&h, &[(4 * S, 5 * S)]);
        assert!(r.is_valid(), "{r:#?}");
        assert_eq!(r.stats["late_expiry_excused"], 1);
        // A fault before the last renewal does not excuse it.
        let r = check_with(&h, &[(0, S / 4)]);
        assert_eq!(r.validity, Validity::Invalid, "{r:#?}");
        // An unknown keep-alive may have renewed it as late as its answer.
        let mut unknown = ka(4 * S, 2);
        unknown.status = Status::Info;
        unknown.complete = 6 * S;
        let mut h2 = h.clone();
        h2.insert(4, unknown);
        assert!(check(&h2).is_valid(), "{:#?}", check(&h2));
    }

    #[test]
    fn kept_alive_then_expired_is_valid() {
        let h = vec![
            grant(0, 2),
            put(10_000),
            read(S, true),
            ka(S + 500_000, 2),
            read(3 * S, true),
            // last renewal invoked at 1.5 s: gone after 3.5 s is fine
            read(3 * S + 600_000, false),
            ka(4 * S, 0),
            read(5 * S, false),
        ];
        let r = check(&h);
        assert!(r.is_valid(), "{r:#?}");
        assert_eq!(r.stats["expired_seen"], 1);
        assert_eq!(r.stats["expired_in_time"], 1);
    }

    #[test]
    fn lost_keepalive_answer_does_not_extend_the_lease() {
        let mut lost = ka(S, 2);
        lost.status = Status::Info;
        let h = vec![grant(0, 2), put(10_000), lost, read(2 * S + 100_000, false)];
        assert!(check(&h).is_valid());
    }

    #[test]
    fn key_gone_before_ttl_since_last_keepalive_is_early_expiry() {
        let h = vec![
            grant(0, 2),
            put(10_000),
            ka(S, 2),
            // renewed at 1 s for 2 s: must live until 3 s
            read(2 * S + 500_000, false),
        ];
        let r = check(&h);
        assert_eq!(r.validity, Validity::Invalid);
        assert_eq!(r.violations[0].kind, "early-expiry", "{r:#?}");
    }

    #[test]
    fn keepalive_answering_ttl_zero_too_early_is_early_expiry() {
        let h = vec![grant(0, 5), put(10_000), ka(S, 0)];
        assert_eq!(check(&h).violations[0].kind, "early-expiry");
    }

    #[test]
    fn revoke_allows_disappearance_but_nothing_survives_it() {
        let h = vec![
            grant(0, 10),
            put(10_000),
            revoke(S),
            read(S + 500_000, false),
        ];
        assert!(check(&h).is_valid());
        let h = vec![
            grant(0, 10),
            put(10_000),
            revoke(S),
            read(S + 500_000, true),
        ];
        assert_eq!(check(&h).violations[0].kind, "survived-revoke");
    }

    #[test]
    fn key_back_after_it_was_gone_is_resurrection() {
        let h = vec![
            grant(0, 1),
            put(10_000),
            read(2 * S, false),
            read(3 * S, true),
        ];
        let r = check(&h);
        assert_eq!(r.violations[0].kind, "resurrected", "{r:#?}");
    }
}
