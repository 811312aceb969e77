//! Watch workload checker. Writers put unique values under one prefix and
//! note the revision each acknowledged put returned; watchers watch that
//! prefix from one start revision, resuming (after a broken stream, on
//! another master) from the revision after the last event they saw.
//!
//! Every watcher must see the same gap-free, ordered sequence of events:
//! - its events come in increasing revision order, never twice;
//! - an event never comes from before the revision its watch (re)started at;
//! - all watchers and all acknowledged writes agree on what happened at each
//!   revision (key, value), and each event comes from a write that was
//!   attempted (and not definitely failed);
//! - between its start revision and the last event it saw, a watcher saw
//!   every event that any other watcher saw or any acknowledged write made;
//! - by the end (faults healed), every watcher saw every acknowledged write.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::json;

use super::{CheckResult, Violation};
use crate::history::{Entry, Op, Status};

#[derive(Clone, Debug, PartialEq, Eq)]
struct Event {
    value: String,
    delete: bool,
}

#[derive(Default)]
struct Watcher<'a> {
    start: Option<i64>,
    /// (revision, key, entry) in the order received.
    events: Vec<(i64, String, &'a Entry)>,
    opens: usize,
}

/// At most this many violations of one kind per watcher are reported.
const MAX_PER_KIND: usize = 5;

pub fn check(history: &[Entry]) -> CheckResult {
    // (key, value) -> put
    let mut puts: HashMap<(&str, &str), &Entry> = HashMap::new();
    let mut acked: BTreeMap<(i64, String), (&Entry, Event)> = BTreeMap::new();
    let mut watchers: BTreeMap<u32, Watcher> = BTreeMap::new();
    let mut violations = Vec::new();
    for e in history {
        match &e.op {
            Op::WatchPut {
                key,
                value,
                revision,
            } => {
                puts.insert((key, value), e);
                if let (Status::Ok, Some(rev)) = (e.status, revision) {
                    let ev = Event {
                        value: value.clone(),
                        delete: false,
                    };
                    if let Some((other, _)) = acked.insert((*rev, key.clone()), (e, ev)) {
                        violations.push(Violation {
                            kind: "duplicate-revision".into(),
                            message: format!(
                                "two acknowledged puts of {key} returned revision {rev}"
                            ),
                            excerpt: vec![other.clone(), e.clone()],
                        });
                    }
                }
            }
            Op::WatchOpen {
                watcher,
                from_revision,
            } => {
                let w = watchers.entry(*watcher).or_default();
                w.start.get_or_insert(*from_revision);
                w.opens += 1;
            }
            Op::WatchEvent {
                watcher,
                revision,
                key,
                ..
            } => {
                watchers
                    .entry(*watcher)
                    .or_default()
                    .events
                    .push((*revision, key.clone(), e));
            }
            _ => {}
        }
    }

    // What happened at each (revision, key): acknowledged writes first, then
    // what the watchers saw; any disagreement is a violation.
    let mut canonical: BTreeMap<(i64, String), (Event, &Entry)> = acked
        .iter()
        .map(|(k, (e, ev))| (k.clone(), (ev.clone(), *e)))
        .collect();
    for (id, w) in &watchers {
        let mut reported: HashMap<&str, usize> = HashMap::new();
        let mut report = |kind: &'static str, v: Violation, out: &mut Vec<Violation>| {
            let n = reported.entry(kind).or_default();
            *n += 1;
            if *n <= MAX_PER_KIND {
                out.push(v);
            }
        };
        let mut prev: Option<(i64, &str, &Entry)> = None;
        let mut seen: BTreeSet<(i64, &str)> = BTreeSet::new();
        let mut current_start = w.start.unwrap_or(i64::MIN);
        // Opens and events interleave in time: replay them in order to know
        // which start revision each event answers.
        let opens: Vec<(u64, i64)> = history
            .iter()
            .filter_map(|e| match e.op {
                Op::WatchOpen {
                    watcher,
                    from_revision,
                } if watcher == *id => Some((e.invoke, from_revision)),
                _ => None,
            })
            .collect();
        let mut next_open = 0;
        for (rev, key, e) in &w.events {
            while next_open < opens.len() && opens[next_open].0 <= e.invoke {
                current_start = opens[next_open].1;
                next_open += 1;
            }
            let (value, delete) = match &e.op {
                Op::WatchEvent { value, delete, .. } => (value.clone(), *delete),
                _ => unreachable!(),
            };
            if *rev < current_start {
                report(
                    "event-before-start",
                    Violation {
                        kind: "event-before-start".into(),
                        message: format!(
                            "watcher {id} got revision {rev} ({key}) from a watch started at {current_start}"
                        ),
                        excerpt: vec![(*e).clone()],
                    },
                    &mut violations,
                );
            }
            if let Some((prev_rev, prev_key, prev_e)) = prev {
                if *rev < prev_rev {
                    report(
                        "out-of-order",
                        Violation {
                            kind: "out-of-order".into(),
                            message: format!(
                                "watcher {id} got revision {rev} ({key}) after revision {prev_rev} ({prev_key})"
                            ),
                            excerpt: vec![prev_e.clone(), (*e).clone()],
                        },
                        &mut violations,
                    );
                }
            }
            if !seen.insert((*rev, key)) {
                report(
                    "duplicate-event",
                    Violation {
                        kind: "duplicate-event".into(),
                        message: format!("watcher {id} got revision {rev} ({key}) twice"),
                        excerpt: vec![(*e).clone()],
                    },
                    &mut violations,
                );
            }
            prev = Some((*rev, key, e));
            // Must come from an attempted write, at the revision it returned.
            match puts.get(&(key.as_str(), value.as_str())) {
                None => report(
                    "phantom-event",
                    Violation {
                        kind: "phantom-event".into(),
                        message: format!(
                            "watcher {id} got {key}={value} at revision {rev}: no such write was attempted"
                        ),
                        excerpt: vec![(*e).clone()],
                    },
                    &mut violations,
                ),
                Some(p) if p.status == Status::Fail || p.invoke > e.complete => report(
                    "phantom-event",
                    Violation {
                        kind: "phantom-event".into(),
                        message: format!(
                            "watcher {id} got {key}={value} at revision {rev}, from a write that failed or came later"
                        ),
                        excerpt: vec![(*p).clone(), (*e).clone()],
                    },
                    &mut violations,
                ),
                Some(p) => {
                    if let (
                        Status::Ok,
                        Op::WatchPut {
                            revision: Some(r), ..
                        },
                    ) = (p.status, &p.op)
                    {
                        if r != rev {
                            report(
                                "inconsistent-event",
                                Violation {
                                    kind: "inconsistent-event".into(),
                                    message: format!(
                                        "watcher {id} got {key}={value} at revision {rev}, but the put returned revision {r}"
                                    ),
                                    excerpt: vec![(*p).clone(), (*e).clone()],
                                },
                                &mut violations,
                            );
                        }
                    }
                }
            }
            let ev = Event { value, delete };
            match canonical.get(&(*rev, key.clone())) {
                Some((known, src)) if *known != ev => report(
                    "inconsistent-event",
                    Violation {
                        kind: "inconsistent-event".into(),
                        message: format!(
                            "watcher {id} got {key}={:?} (delete: {}) at revision {rev}, but that revision is {:?} (delete: {}) elsewhere",
                            ev.value, ev.delete, known.value, known.delete
                        ),
                        excerpt: vec![(*src).clone(), (*e).clone()],
                    },
                    &mut violations,
                ),
                Some(_) => {}
                None => {
                    canonical.insert((*rev, key.clone()), (ev, e));
                }
            }
        }
    }

    // Values are unique per put: one (key, value) at two revisions means a
    // single write was applied twice.
    let mut applied_at: BTreeMap<(&str, &str), BTreeMap<i64, &Entry>> = BTreeMap::new();
    for w in watchers.values() {
        for (rev, key, e) in &w.events {
            if let Op::WatchEvent {
                value,
                delete: false,
                ..
            } = &e.op
            {
                applied_at
                    .entry((key.as_str(), value.as_str()))
                    .or_default()
                    .entry(*rev)
                    .or_insert(e);
            }
        }
    }
    for ((key, value), revs) in &applied_at {
        if revs.len() > 1 {
            let mut excerpt: Vec<Entry> = puts
                .get(&(*key, *value))
                .map(|p| vec![(*p).clone()])
                .unwrap_or_default();
            excerpt.extend(revs.values().map(|e| (*e).clone()));
            violations.push(Violation {
                kind: "applied-twice".into(),
                message: format!(
                    "one put of {key}={value} shows up at revisions {:?}: a single write was applied more than once",
                    revs.keys().collect::<Vec<_>>()
                ),
                excerpt,
            });
        }
    }

    // Gaps: every known event between a watcher's start and its last event,
    // and (by the end) every acknowledged write, must have reached it.
    let max_acked = acked.keys().map(|(r, _)| *r).max();
    let mut total_events = 0;
    for (id, w) in &watchers {
        total_events += w.events.len();
        let start = w.start.unwrap_or(i64::MIN);
        let last = w.events.iter().map(|(r, _, _)| *r).max();
        let seen: BTreeSet<(i64, &str)> =
            w.events.iter().map(|(r, k, _)| (*r, k.as_str())).collect();
        let upto = last.unwrap_or(i64::MIN);
        let skipped: Vec<_> = canonical
            .iter()
            .filter(|((r, k), _)| *r >= start && *r <= upto && !seen.contains(&(*r, k.as_str())))
            .collect();
        if !skipped.is_empty() {
            violations.push(Violation {
                kind: "skipped-event".into(),
                message: format!(
                    "watcher {id} (from revision {start}, last event at revision {upto}) skipped {} events, first at revisions {:?}",
                    skipped.len(),
                    skipped.iter().take(10).map(|((r, k), _)| format!("{r}:{k}")).collect::<Vec<_>>()
                ),
                excerpt: skipped.iter().take(10).map(|(_, (_, e))| (*e).clone()).collect(),
            });
        }
        if let Some(max) = max_acked {
            if upto < max {
                let missing: Vec<_> = acked
                    .iter()
                    .filter(|((r, _), _)| *r > upto && *r >= start)
                    .collect();
                if !missing.is_empty() {
                    violations.push(Violation {
                        kind: "incomplete".into(),
                        message: format!(
                            "watcher {id} ended at revision {upto} and never got {} acknowledged writes up to revision {max}",
                            missing.len()
                        ),
                        excerpt: missing.iter().take(10).map(|(_, (e, _))| (*e).clone()).collect(),
                    });
                }
            }
        }
    }
    CheckResult::new(
        "watch",
        json!({
            "puts": puts.len(), "acked_puts": acked.len(), "watchers": watchers.len(),
            "events": total_events,
            "reopens": watchers.values().map(|w| w.opens.saturating_sub(1)).sum::<usize>(),
            "max_acked_revision": max_acked,
        }),
        violations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Validity;

    fn put(t: u64, key: &str, value: &str, rev: Option<i64>, status: Status) -> Entry {
        Entry {
            status,
            ..Entry::ok(
                1,
                t,
                t + 5,
                Op::WatchPut {
                    key: key.into(),
                    value: value.into(),
                    revision: rev,
                },
            )
        }
    }
    fn open(t: u64, w: u32, from: i64) -> Entry {
        Entry::ok(
            100 + w,
            t,
            t,
            Op::WatchOpen {
                watcher: w,
                from_revision: from,
            },
        )
    }
    fn ev(t: u64, w: u32, rev: i64, key: &str, value: &str) -> Entry {
        Entry::ok(
            100 + w,
            t,
            t,
            Op::WatchEvent {
                watcher: w,
                revision: rev,
                key: key.into(),
                value: value.into(),
                delete: false,
            },
        )
    }

    /// Two writes acknowledged at revisions 5 and 7, one unknown that landed
    /// at 6; watcher 0 sees all three in one stream, watcher 1 resumes.
    fn valid() -> Vec<Entry> {
        vec![
            open(0, 0, 5),
            open(0, 1, 5),
            put(10, "w/a", "1", Some(5), Status::Ok),
            put(20, "w/b", "2", None, Status::Info),
            put(30, "w/a", "3", Some(7), Status::Ok),
            ev(40, 0, 5, "w/a", "1"),
            ev(41, 0, 6, "w/b", "2"),
            ev(42, 0, 7, "w/a", "3"),
            ev(40, 1, 5, "w/a", "1"),
            open(45, 1, 6),
            ev(50, 1, 6, "w/b", "2"),
            ev(51, 1, 7, "w/a", "3"),
        ]
    }

    #[test]
    fn valid_history_with_resume() {
        let r = check(&valid());
        assert!(r.is_valid(), "{r:#?}");
        assert_eq!(r.stats["reopens"], 1);
    }

    #[test]
    fn skipped_event_is_a_violation() {
        let mut h = valid();
        // watcher 1 resumes past revision 6 and never sees it
        h.retain(|e| {
            !matches!(
                e.op,
                Op::WatchEvent {
                    watcher: 1,
                    revision: 6,
                    ..
                }
            )
        });
        let r = check(&h);
        assert_eq!(r.validity, Validity::Invalid);
        assert_eq!(r.violations[0].kind, "skipped-event", "{r:#?}");
        assert!(r.violations[0].message.contains("6:w/b"));
    }

    #[test]
    fn skipped_acknowledged_write_is_caught_even_if_no_watcher_saw_it() {
        let h = vec![
            open(0, 0, 5),
            put(10, "w/a", "1", Some(5), Status::Ok),
            put(20, "w/a", "2", Some(6), Status::Ok),
            put(30, "w/a", "3", Some(7), Status::Ok),
            ev(40, 0, 5, "w/a", "1"),
            ev(42, 0, 7, "w/a", "3"),
        ];
        let r = check(&h);
        assert_eq!(r.violations[0].kind, "skipped-event", "{r:#?}");
    }

    #[test]
    fn reordered_duplicated_and_early_events_are_violations() {
        let mut h = valid();
        h.push(ev(60, 1, 6, "w/b", "2"));
        let kinds: Vec<String> = check(&h).violations.into_iter().map(|v| v.kind).collect();
        assert!(kinds.contains(&"out-of-order".to_string()), "{kinds:?}");
        assert!(kinds.contains(&"duplicate-event".to_string()), "{kinds:?}");

        let mut h = valid();
        h.push(open(70, 1, 8));
        h.push(ev(71, 1, 5, "w/a", "1"));
        let kinds: Vec<String> = check(&h).violations.into_iter().map(|v| v.kind).collect();
        assert!(
            kinds.contains(&"event-before-start".to_string()),
            "{kinds:?}"
        );
    }

    #[test]
    fn events_disagreeing_with_write_revisions_or_never_written_are_violations() {
        let mut h = valid();
        // watcher 1 sees w/a=3 at revision 8 instead of 7
        for e in &mut h {
            if let Op::WatchEvent {
                watcher: 1,
                revision,
                value,
                ..
            } = &mut e.op
            {
                if value == "3" {
                    *revision = 8;
                }
            }
        }
        let kinds: Vec<String> = check(&h).violations.into_iter().map(|v| v.kind).collect();
        assert!(kinds.contains(&"skipped-event".to_string()), "{kinds:?}");
        assert!(
            kinds.contains(&"inconsistent-event".to_string()),
            "{kinds:?}"
        );

        let mut h = valid();
        h.push(ev(60, 0, 9, "w/c", "never"));
        let r = check(&h);
        assert_eq!(r.violations[0].kind, "phantom-event", "{r:#?}");

        let mut h = valid();
        h.push(ev(60, 0, 7, "w/a", "other"));
        let kinds: Vec<String> = check(&h).violations.into_iter().map(|v| v.kind).collect();
        assert!(
            kinds.contains(&"inconsistent-event".to_string()),
            "{kinds:?}"
        );
    }

    #[test]
    fn one_put_seen_at_two_revisions_is_applied_twice() {
        // The put of w/a=1 is applied at 5, then again at 6 (a retried
        // proposal); its answer says 6.
        let h = vec![
            open(0, 0, 5),
            put(10, "w/a", "1", Some(6), Status::Ok),
            ev(40, 0, 5, "w/a", "1"),
            ev(41, 0, 6, "w/a", "1"),
        ];
        let kinds: Vec<String> = check(&h).violations.into_iter().map(|v| v.kind).collect();
        assert!(kinds.contains(&"applied-twice".to_string()), "{kinds:?}");
    }

    #[test]
    fn watcher_that_never_catches_up_is_incomplete() {
        let mut h = valid();
        h.retain(|e| {
            !matches!(
                e.op,
                Op::WatchEvent {
                    watcher: 1,
                    revision: 7,
                    ..
                }
            )
        });
        let r = check(&h);
        assert_eq!(r.violations[0].kind, "incomplete", "{r:#?}");
    }
}
