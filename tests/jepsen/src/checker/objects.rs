//! Objects workload checker.
//!
//! - Registers (ConfigMaps read with Get and written with Apply): each must
//!   be linearizable (the register checker, on the `objects/` keys).
//! - The counter: every acknowledged increment is in the final value, and
//!   nothing more than was attempted: `ok <= final <= ok + unknown`.
//! - Counter watchers: between two (re)opens, each value shown must be the
//!   previous one plus one (a watch resumed from the last resourceVersion
//!   seen must continue exactly where it stopped; one reopened with a fresh
//!   list may start anywhere not below what it saw), with increasing
//!   resourceVersions; and each watcher must reach the final value (one that
//!   was shown no value at all while increments succeeded is stalled too).
//! - Creates with generateName: the final list holds each acknowledged
//!   create's token, and no token twice.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::register::{self, MAX_STEPS_PER_KEY};
use super::{CheckResult, Validity, Violation};
use crate::history::{Entry, Op, Status};

pub fn check(history: &[Entry]) -> CheckResult {
    let reg = register::check_registers(history, MAX_STEPS_PER_KEY, "objects");
    let mut violations = reg.violations.clone();

    // The counter.
    let incs: Vec<&Entry> = history
        .iter()
        .filter(|e| matches!(e.op, Op::ObjInc { .. }))
        .collect();
    let ok = incs.iter().filter(|e| e.status == Status::Ok).count() as i64;
    let unknown = incs.iter().filter(|e| e.status == Status::Info).count() as i64;
    let final_read = history
        .iter()
        .filter(|e| e.status == Status::Ok)
        .filter_map(|e| match &e.op {
            Op::ObjCounterRead { value: Some(v), .. } => Some((e, *v)),
            _ => None,
        })
        .max_by_key(|(e, _)| e.invoke);
    let mut note = reg.note.clone();
    if let Some((read, value)) = final_read {
        if value < ok {
            violations.push(Violation {
                kind: "lost-update".into(),
                message: format!(
                    "the counter reads {value} after {ok} acknowledged increments ({unknown} unknown): {} acknowledged increments were lost",
                    ok - value
                ),
                excerpt: vec![read.clone()],
            });
        } else if value > ok + unknown {
            violations.push(Violation {
                kind: "phantom-update".into(),
                message: format!(
                    "the counter reads {value}, more than the {ok} acknowledged plus {unknown} unknown increments"
                ),
                excerpt: vec![read.clone()],
            });
        }
    } else if !incs.is_empty() && note.is_none() {
        note = Some("no successful final read of the counter".into());
    }

    // The watchers.
    let mut per_watcher: BTreeMap<u32, Vec<&Entry>> = BTreeMap::new();
    for e in history {
        match &e.op {
            Op::ObjCounterSeen { watcher, .. } | Op::ObjWatchOpen { watcher, .. } => {
                per_watcher.entry(*watcher).or_default().push(e)
            }
            _ => {}
        }
    }
    let mut seen_events = 0usize;
    for (w, entries) in &per_watcher {
        let mut last: Option<(i64, i64)> = None; // (value, revision)
        let mut fresh = true; // the next event may start anywhere (after a list)
        let mut recent: Vec<Entry> = Vec::new();
        for e in entries {
            recent.push((*e).clone());
            if recent.len() > 10 {
                recent.remove(0);
            }
            match &e.op {
                Op::ObjWatchOpen { from, .. } => fresh = from.is_empty(),
                Op::ObjCounterSeen {
                    value, revision, ..
                } => {
                    seen_events += 1;
                    if let Some((lv, lr)) = last {
                        let bad = if fresh {
                            *value < lv || *revision < lr
                        } else {
                            *value != lv + 1 || *revision <= lr
                        };
                        if bad {
                            violations.push(Violation {
                                kind: if *value > lv + 1 { "skipped-update" } else { "repeated-or-reordered-update" }.into(),
                                message: format!(
                                    "watcher {w} saw the counter go from {lv} (revision {lr}) to {value} (revision {revision}){}",
                                    if fresh { " after a relist" } else { "" }
                                ),
                                excerpt: recent.clone(),
                            });
                        }
                    }
                    last = Some((*value, *revision));
                    fresh = false;
                }
                _ => {}
            }
        }
        let fv = final_read.map(|(_, v)| v);
        match last {
            Some((lv, _)) => {
                if let Some(fv) = fv.filter(|&fv| lv < fv) {
                    violations.push(Violation {
                        kind: "watch-stalled".into(),
                        message: format!("watcher {w} last saw {lv}, the counter ended at {fv}"),
                        excerpt: recent.clone(),
                    });
                }
            }
            // It opened its watch and was never shown a value, although
            // the counter moved.
            None if ok > 0 || fv.is_some_and(|fv| fv > 0) => violations.push(Violation {
                kind: "watch-stalled".into(),
                message: format!(
                    "watcher {w} was shown no value at all, while {ok} increments were acknowledged (the counter ended at {})",
                    fv.map_or("an unread value".into(), |v| v.to_string())
                ),
                excerpt: recent.clone(),
            }),
            None => {}
        }
    }

    // Creates with generateName.
    let creates: Vec<&Entry> = history
        .iter()
        .filter(|e| matches!(e.op, Op::ObjCreate { .. }))
        .collect();
    let listed = history
        .iter()
        .filter(|e| e.status == Status::Ok)
        .filter_map(|e| match &e.op {
            Op::ObjCreatedList { tokens } => Some((e, tokens)),
            _ => None,
        })
        .max_by_key(|(e, _)| e.invoke);
    let created_ok = creates.iter().filter(|e| e.status == Status::Ok).count();
    match listed {
        Some((list, tokens)) => {
            let mut found = BTreeSet::new();
            for t in tokens {
                if !found.insert(t.as_str()) {
                    violations.push(Violation {
                        kind: "duplicate-create".into(),
                        message: format!("one create (token {t}) made more than one object"),
                        excerpt: creates
                            .iter()
                            .filter(|e| matches!(&e.op, Op::ObjCreate { token } if token == t))
                            .map(|e| (*e).clone())
                            .chain([list.clone()])
                            .collect(),
                    });
                }
            }
            for e in &creates {
                if let Op::ObjCreate { token } = &e.op {
                    if e.status == Status::Ok && !found.contains(token.as_str()) {
                        violations.push(Violation {
                            kind: "lost-create".into(),
                            message: format!(
                                "the acknowledged create of token {token} left no object"
                            ),
                            excerpt: vec![(*e).clone(), list.clone()],
                        });
                    }
                }
            }
        }
        None if !creates.is_empty() && note.is_none() => {
            note = Some("no successful final list of the created objects".into());
        }
        None => {}
    }

    let stats = json!({
        "registers": reg.stats,
        "creates": {"ok": created_ok, "total": creates.len(), "listed": listed.map(|(_, t)| t.len())},
        "increments": {"ok": ok, "unknown": unknown, "failed": incs.len() as i64 - ok - unknown},
        "final": final_read.map(|(_, v)| v),
        "watch_events": seen_events,
        "watchers": per_watcher.len(),
    });
    let validity = if !violations.is_empty() {
        Validity::Invalid
    } else if note.is_some() {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    CheckResult {
        checker: "objects".into(),
        validity,
        stats,
        violations,
        note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(p: u32, t: u64, status: Status) -> Entry {
        Entry {
            status,
            ..Entry::ok(
                p,
                t,
                t + 1,
                Op::ObjInc {
                    counter: "c".into(),
                },
            )
        }
    }

    fn read(t: u64, v: i64) -> Entry {
        Entry::ok(
            9,
            t,
            t + 1,
            Op::ObjCounterRead {
                counter: "c".into(),
                value: Some(v),
            },
        )
    }

    fn seen(w: u32, t: u64, value: i64, revision: i64) -> Entry {
        Entry::ok(
            w,
            t,
            t,
            Op::ObjCounterSeen {
                watcher: w,
                value,
                revision,
            },
        )
    }

    fn open(w: u32, t: u64, from: &str) -> Entry {
        Entry::ok(
            w,
            t,
            t,
            Op::ObjWatchOpen {
                watcher: w,
                from: from.into(),
            },
        )
    }

    fn kinds(r: &CheckResult) -> Vec<&str> {
        r.violations.iter().map(|v| v.kind.as_str()).collect()
    }

    #[test]
    fn counts_within_bounds_are_valid() {
        let h = vec![
            inc(1, 1, Status::Ok),
            inc(2, 2, Status::Ok),
            inc(3, 3, Status::Info),
            read(10, 3),
            open(0, 0, ""),
            seen(0, 1, 0, 5),
            seen(0, 2, 1, 6),
            open(0, 3, "6"),
            seen(0, 4, 2, 7),
            seen(0, 5, 3, 9),
        ];
        let r = check(&h);
        assert_eq!(r.validity, Validity::Valid, "{:?}", r.violations);
        assert_eq!(r.stats["final"], 3);
    }

    #[test]
    fn a_lost_increment_is_caught() {
        let h = vec![inc(1, 1, Status::Ok), inc(2, 2, Status::Ok), read(10, 1)];
        assert_eq!(kinds(&check(&h)), ["lost-update"]);
        let h = vec![inc(1, 1, Status::Ok), inc(2, 2, Status::Fail), read(10, 2)];
        assert_eq!(kinds(&check(&h)), ["phantom-update"]);
    }

    /// `n` increments of unknown outcome: any final value up to `n` is fine.
    fn with_incs(n: u64, mut h: Vec<Entry>) -> Vec<Entry> {
        h.extend((0..n).map(|i| inc(5, i, Status::Info)));
        h
    }

    #[test]
    fn watch_gaps_repeats_and_stalls_are_caught() {
        // Resumed from revision 6, the next value must be 2.
        let h = with_incs(
            5,
            vec![
                open(0, 0, ""),
                seen(0, 1, 1, 6),
                open(0, 2, "6"),
                seen(0, 3, 3, 8),
                read(10, 3),
            ],
        );
        assert_eq!(kinds(&check(&h)), ["skipped-update"]);
        let h = with_incs(
            5,
            vec![
                open(0, 0, ""),
                seen(0, 1, 1, 6),
                seen(0, 2, 1, 6),
                read(10, 1),
            ],
        );
        assert_eq!(kinds(&check(&h)), ["repeated-or-reordered-update"]);
        // After a relist the watcher may jump ahead, not back.
        let h = with_incs(
            5,
            vec![
                open(0, 0, ""),
                seen(0, 1, 1, 6),
                open(0, 2, ""),
                seen(0, 3, 5, 20),
                read(10, 5),
            ],
        );
        assert_eq!(check(&h).validity, Validity::Valid);
        let h = with_incs(5, vec![open(0, 0, ""), seen(0, 1, 1, 6), read(10, 4)]);
        assert_eq!(kinds(&check(&h)), ["watch-stalled"]);
    }

    #[test]
    fn a_watcher_shown_no_value_while_increments_succeeded_is_stalled() {
        // Watcher 0 follows the counter; watcher 1 opens its watch (twice)
        // and is never shown anything.
        let h = vec![
            open(0, 0, ""),
            open(1, 0, ""),
            seen(0, 1, 0, 5),
            inc(1, 2, Status::Ok),
            seen(0, 3, 1, 6),
            inc(2, 4, Status::Ok),
            seen(0, 5, 2, 7),
            open(1, 6, ""),
            read(10, 2),
        ];
        let r = check(&h);
        assert_eq!(kinds(&r), ["watch-stalled"], "{r:#?}");
        assert!(r.violations[0].message.contains("watcher 1"), "{r:#?}");
        // Without the final read, the acknowledged increments suffice.
        let h: Vec<Entry> = h
            .into_iter()
            .filter(|e| !matches!(e.op, Op::ObjCounterRead { .. }))
            .collect();
        assert!(kinds(&check(&h)).contains(&"watch-stalled"));
        // A counter that never moved: a silent watcher is no violation.
        let h = vec![
            open(0, 0, ""),
            open(1, 0, ""),
            seen(0, 1, 0, 5),
            read(10, 0),
        ];
        assert_eq!(check(&h).validity, Validity::Valid);
    }

    #[test]
    fn object_registers_are_checked_for_linearizability() {
        let k = "objects/jr-0".to_string();
        let h = vec![
            Entry::ok(
                1,
                0,
                10,
                Op::Write {
                    key: k.clone(),
                    value: 1,
                },
            ),
            Entry::ok(
                2,
                20,
                30,
                Op::Read {
                    key: k.clone(),
                    value: Some(2),
                },
            ),
        ];
        assert_eq!(kinds(&check(&h)), ["not-linearizable"]);
        // The plain register checker leaves them alone.
        assert!(register::check(&h).is_valid());
    }
    fn create(t: u64, token: &str, status: Status) -> Entry {
        Entry {
            status,
            ..Entry::ok(
                5,
                t,
                t + 1,
                Op::ObjCreate {
                    token: token.into(),
                },
            )
        }
    }

    fn listed(t: u64, tokens: &[&str]) -> Entry {
        Entry::ok(
            9,
            t,
            t + 1,
            Op::ObjCreatedList {
                tokens: tokens.iter().map(|t| t.to_string()).collect(),
            },
        )
    }

    #[test]
    fn a_create_that_made_two_objects_or_none_is_flagged() {
        let base = vec![
            create(0, "a", Status::Ok),
            create(2, "b", Status::Info),
            create(4, "c", Status::Ok),
        ];
        // An unknown create may or may not have made its object.
        let mut h = base.clone();
        h.push(listed(10, &["a", "c"]));
        assert!(check(&h).is_valid(), "{:?}", check(&h).violations);
        let mut h = base.clone();
        h.push(listed(10, &["a", "b", "c"]));
        assert!(check(&h).is_valid());
        // A retried create applied twice.
        let mut h = base.clone();
        h.push(listed(10, &["a", "b", "c", "c"]));
        assert_eq!(kinds(&check(&h)), ["duplicate-create"]);
        // An acknowledged create that left nothing.
        let mut h = base.clone();
        h.push(listed(10, &["c"]));
        assert_eq!(kinds(&check(&h)), ["lost-create"]);
        // No final list: the run cannot say.
        assert!(!check(&base).is_valid());
    }
}
