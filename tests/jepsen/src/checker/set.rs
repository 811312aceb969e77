//! Set workload checker: clients add unique elements; the final read (after
//! the faults are healed) must contain every acknowledged add, and nothing
//! that was never attempted. Adds with an unknown outcome may be there or not.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::{CheckResult, Validity, Violation};
use crate::history::{Entry, Op, Status};

pub fn check(history: &[Entry]) -> CheckResult {
    let mut adds: BTreeMap<u64, &Entry> = BTreeMap::new();
    let mut final_read: Option<(&Entry, BTreeSet<u64>)> = None;
    for e in history {
        match &e.op {
            Op::Add { element } => {
                adds.insert(*element, e);
            }
            Op::SetRead {
                elements: Some(els),
            } if e.status == Status::Ok
                && final_read
                    .as_ref()
                    .is_none_or(|(f, _)| f.invoke <= e.invoke) =>
            {
                final_read = Some((e, els.iter().copied().collect()));
            }
            _ => {}
        }
    }
    let ok = adds.values().filter(|e| e.status == Status::Ok).count();
    let unknown = adds.values().filter(|e| e.status == Status::Info).count();
    let Some((read, present)) = final_read else {
        return CheckResult {
            checker: "set".into(),
            validity: if adds.is_empty() {
                Validity::Valid
            } else {
                Validity::Unknown
            },
            stats: json!({"attempted": adds.len(), "ok": ok}),
            violations: Vec::new(),
            note: Some("no successful final read".into()),
        };
    };
    let mut violations = Vec::new();
    let lost: Vec<&Entry> = adds
        .iter()
        .filter(|(el, e)| e.status == Status::Ok && !present.contains(el))
        .map(|(_, e)| *e)
        .collect();
    if !lost.is_empty() {
        let mut excerpt: Vec<Entry> = lost.iter().take(20).map(|e| (*e).clone()).collect();
        excerpt.push(read.clone());
        violations.push(Violation {
            kind: "lost-add".into(),
            message: format!(
                "{} acknowledged adds are missing from the final read: {:?}",
                lost.len(),
                lost.iter()
                    .take(20)
                    .map(|e| match e.op {
                        Op::Add { element } => element,
                        _ => 0,
                    })
                    .collect::<Vec<_>>()
            ),
            excerpt,
        });
    }
    let unexpected: Vec<u64> = present
        .iter()
        .filter(|el| {
            adds.get(el)
                .is_none_or(|e| e.status == Status::Fail || e.invoke > read.complete)
        })
        .copied()
        .collect();
    if !unexpected.is_empty() {
        violations.push(Violation {
            kind: "unexpected-element".into(),
            message: format!(
                "the final read holds {} elements never (successfully) attempted: {:?}",
                unexpected.len(),
                &unexpected[..unexpected.len().min(20)]
            ),
            excerpt: vec![read.clone()],
        });
    }
    let recovered = adds
        .iter()
        .filter(|(el, e)| e.status == Status::Info && present.contains(el))
        .count();
    CheckResult::new(
        "set",
        json!({
            "attempted": adds.len(), "ok": ok, "unknown": unknown,
            "unknown_present": recovered, "final_read_size": present.len(),
            "lost": lost.len(), "unexpected": unexpected.len(),
        }),
        violations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(el: u64, status: Status) -> Entry {
        Entry {
            status,
            ..Entry::ok(1, el * 10, el * 10 + 5, Op::Add { element: el })
        }
    }
    fn read(els: &[u64]) -> Entry {
        Entry::ok(
            0,
            10_000,
            10_010,
            Op::SetRead {
                elements: Some(els.to_vec()),
            },
        )
    }

    #[test]
    fn valid_set_with_unknown_adds_either_way() {
        let h = vec![
            add(1, Status::Ok),
            add(2, Status::Info),
            add(3, Status::Info),
            add(4, Status::Fail),
            read(&[1, 2]),
        ];
        let r = check(&h);
        assert!(r.is_valid(), "{r:#?}");
        assert_eq!(r.stats["unknown_present"], 1);
    }

    #[test]
    fn lost_acknowledged_add_is_a_violation() {
        let h = vec![add(1, Status::Ok), add(2, Status::Ok), read(&[1])];
        let r = check(&h);
        assert_eq!(r.validity, Validity::Invalid);
        assert_eq!(r.violations[0].kind, "lost-add");
        assert!(r.violations[0].message.contains("[2]"));
    }

    #[test]
    fn element_never_attempted_or_failed_is_a_violation() {
        let r = check(&[add(1, Status::Ok), read(&[1, 7])]);
        assert_eq!(r.violations[0].kind, "unexpected-element");
        let r = check(&[add(1, Status::Ok), add(2, Status::Fail), read(&[1, 2])]);
        assert_eq!(r.validity, Validity::Invalid);
    }

    #[test]
    fn missing_final_read_is_unknown() {
        assert_eq!(check(&[add(1, Status::Ok)]).validity, Validity::Unknown);
    }
}
