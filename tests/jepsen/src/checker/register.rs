//! Register workload checker: each key is an independent register with
//! read, write, delete and compare-and-set; the history of each key must be
//! linearizable (Wing & Gong with memoization, see [`super::wgl`]).
//!
//! A read that got no answer has no effect and is dropped; a write or CAS
//! that got no answer (`info`) may take effect at any time after its
//! invocation, or never; a definite failure (`fail`) never took effect.

use std::collections::BTreeMap;

use serde_json::json;

use super::wgl::{self, Model, Operation, Outcome};
use super::{ms, CheckResult, Validity, Violation};
use crate::history::{Entry, Op, Status};

/// Search budget per key; past it the key's verdict is `unknown`.
pub const MAX_STEPS_PER_KEY: u64 = 5_000_000;

#[derive(Clone, Debug)]
pub enum Input {
    Read(Option<i64>),
    Write(i64),
    /// Delete: the register is absent afterwards.
    Delete,
    /// CAS from -> to that the server said succeeded (or whose answer was
    /// lost: if it took effect, it succeeded).
    CasApplied(i64, i64),
    /// CAS that the server said failed: a read that the value is not `from`.
    CasFailed(i64),
}

/// A register that starts absent.
pub struct Register;

impl Model for Register {
    type State = Option<i64>;
    type Input = Input;
    fn init(&self) -> Option<i64> {
        None
    }
    fn step(&self, s: &Option<i64>, i: &Input) -> Option<Option<i64>> {
        match *i {
            Input::Read(v) => (v == *s).then_some(*s),
            Input::Write(v) => Some(Some(v)),
            Input::Delete => Some(None),
            Input::CasApplied(from, to) => (*s == Some(from)).then_some(Some(to)),
            Input::CasFailed(from) => (*s != Some(from)).then_some(*s),
        }
    }
}

fn to_operation(e: &Entry) -> Option<(String, Operation<Input>)> {
    let ret = match e.status {
        Status::Ok => Some(e.complete),
        Status::Info => None,
        Status::Fail => return None,
    };
    let (key, input) = match &e.op {
        Op::Read { key, value } => {
            // An unanswered read has no effect.
            ret?;
            (key, Input::Read(*value))
        }
        Op::Write { key, value } => (key, Input::Write(*value)),
        Op::Delete { key } => (key, Input::Delete),
        Op::Cas {
            key,
            from,
            to,
            succeeded,
        } => match (ret, succeeded) {
            (Some(_), Some(false)) => (key, Input::CasFailed(*from)),
            (Some(_), Some(true)) | (None, _) => (key, Input::CasApplied(*from, *to)),
            (Some(_), None) => return None,
        },
        _ => return None,
    };
    Some((
        key.clone(),
        Operation {
            call: e.invoke,
            ret,
            input,
        },
    ))
}

/// The register workload's keys (the objects workload checks its own).
pub fn check(history: &[Entry]) -> CheckResult {
    check_with_budget(history, MAX_STEPS_PER_KEY)
}

pub fn check_with_budget(history: &[Entry], max_steps: u64) -> CheckResult {
    check_registers(history, max_steps, "register")
}

/// Check the registers of the operations of `workload` ("register" or
/// "objects").
pub fn check_registers(history: &[Entry], max_steps: u64, workload: &str) -> CheckResult {
    let mut per_key: BTreeMap<String, (Vec<Operation<Input>>, Vec<&Entry>)> = BTreeMap::new();
    let mut unknown_ops = 0usize;
    for e in history {
        if e.op.workload() != workload {
            continue;
        }
        if let Some((key, op)) = to_operation(e) {
            if op.ret.is_none() {
                unknown_ops += 1;
            }
            let slot = per_key.entry(key).or_default();
            slot.0.push(op);
            slot.1.push(e);
        }
    }
    let mut violations = Vec::new();
    let mut undecided = Vec::new();
    let mut ops = 0usize;
    for (key, (operations, entries)) in &per_key {
        ops += operations.len();
        match wgl::check(&Register, operations, max_steps) {
            Outcome::Linearizable => {}
            Outcome::Unknown { steps } => undecided.push(format!("{key} ({steps} steps)")),
            Outcome::NotLinearizable {
                stuck,
                prefix,
                state,
            } => {
                let s = entries[stuck];
                let from = s.invoke.saturating_sub(1_000_000);
                let mut excerpt: Vec<Entry> = entries
                    .iter()
                    .filter(|e| {
                        let end = if e.status == Status::Ok {
                            e.complete
                        } else {
                            u64::MAX
                        };
                        end >= from && e.invoke <= s.complete
                    })
                    .map(|e| (*e).clone())
                    .collect();
                if excerpt.len() > 40 {
                    excerpt.drain(..excerpt.len() - 40);
                }
                violations.push(Violation {
                    kind: "not-linearizable".into(),
                    message: format!(
                        "key {key}: no linearization of its {} operations; after {prefix} \
                         linearized, the register holds {state:?} and process {}'s {:?} \
                         ({:?}, invoked at {}, returned at {}) cannot take effect",
                        operations.len(),
                        s.process,
                        s.op,
                        s.status,
                        ms(s.invoke),
                        ms(s.complete)
                    ),
                    excerpt,
                });
            }
        }
    }
    let mut result = CheckResult::new(
        "register",
        json!({"keys": per_key.len(), "ops": ops, "unknown_outcome_writes": unknown_ops}),
        violations,
    );
    if result.violations.is_empty() && !undecided.is_empty() {
        result.validity = Validity::Unknown;
        result.note = Some(format!(
            "search budget exhausted for {}",
            undecided.join(", ")
        ));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(process: u32, invoke: u64, complete: u64, status: Status, op: Op) -> Entry {
        Entry {
            status,
            ..Entry::ok(process, invoke, complete, op)
        }
    }
    fn read(k: &str, v: Option<i64>) -> Op {
        Op::Read {
            key: k.into(),
            value: v,
        }
    }
    fn write(k: &str, v: i64) -> Op {
        Op::Write {
            key: k.into(),
            value: v,
        }
    }
    fn cas(k: &str, from: i64, to: i64, ok: Option<bool>) -> Op {
        Op::Cas {
            key: k.into(),
            from,
            to,
            succeeded: ok,
        }
    }

    #[test]
    fn valid_history_with_cas_and_unknowns() {
        let h = vec![
            e(1, 0, 10, Status::Ok, read("a", None)),
            e(1, 20, 30, Status::Ok, write("a", 1)),
            e(2, 25, 40, Status::Ok, cas("a", 1, 2, Some(true))),
            e(3, 41, 50, Status::Ok, cas("a", 1, 3, Some(false))),
            // lost answer, takes effect much later
            e(3, 60, 2_000_000, Status::Info, write("a", 4)),
            e(1, 70, 80, Status::Ok, read("a", Some(2))),
            e(1, 3_000_000, 3_000_010, Status::Ok, read("a", Some(4))),
            // another key is independent
            e(4, 0, 5, Status::Ok, write("b", 9)),
            e(4, 6, 7, Status::Ok, read("b", Some(9))),
            // failed ops never took effect; unanswered reads are ignored
            e(5, 100, 110, Status::Fail, write("b", 7)),
            e(5, 120, 130, Status::Info, read("b", Some(7))),
            e(4, 200, 210, Status::Ok, read("b", Some(9))),
        ];
        let r = check(&h);
        assert!(r.is_valid(), "{r:#?}");
        assert_eq!(r.stats["keys"], 2);
    }

    fn delete(k: &str) -> Op {
        Op::Delete { key: k.into() }
    }

    #[test]
    fn a_deleted_key_that_comes_back_is_a_violation() {
        // Deleted, then read: absent; written again, then present.
        let ok = vec![
            e(1, 0, 10, Status::Ok, write("a", 1)),
            e(1, 20, 30, Status::Ok, delete("a")),
            e(2, 40, 50, Status::Ok, read("a", None)),
            e(2, 60, 70, Status::Ok, cas("a", 1, 2, Some(false))),
            e(1, 80, 90, Status::Ok, write("a", 3)),
            e(2, 100, 110, Status::Ok, read("a", Some(3))),
        ];
        let r = check(&ok);
        assert!(r.is_valid(), "{r:#?}");
        // The value from before the delete read after the delete finished:
        // the older version is back (what a compaction that removes the
        // tombstone first would show).
        let back = vec![
            e(1, 0, 10, Status::Ok, write("a", 1)),
            e(1, 20, 30, Status::Ok, delete("a")),
            e(2, 40, 50, Status::Ok, read("a", Some(1))),
        ];
        assert!(!check(&back).is_valid());
        // A delete whose answer was lost may have taken effect, or not.
        let unknown = vec![
            e(1, 0, 10, Status::Ok, write("a", 1)),
            e(1, 20, 1_000, Status::Info, delete("a")),
            e(2, 40, 50, Status::Ok, read("a", Some(1))),
            e(2, 60, 70, Status::Ok, read("a", None)),
        ];
        assert!(check(&unknown).is_valid());
    }

    #[test]
    fn stale_read_is_a_violation() {
        let h = vec![
            e(1, 0, 10, Status::Ok, write("a", 1)),
            e(1, 20, 30, Status::Ok, write("a", 2)),
            e(2, 40, 50, Status::Ok, read("a", Some(1))),
        ];
        let r = check(&h);
        assert_eq!(r.validity, Validity::Invalid);
        assert_eq!(r.violations[0].kind, "not-linearizable");
        assert!(r.violations[0].message.contains("key a"), "{r:#?}");
        assert_eq!(
            r.violations[0].excerpt.last().unwrap().op,
            read("a", Some(1))
        );
    }

    #[test]
    fn lost_write_is_a_violation() {
        // An acknowledged write vanishes: later reads see the value before it.
        let h = vec![
            e(1, 0, 10, Status::Ok, write("a", 1)),
            e(2, 20, 30, Status::Ok, write("a", 2)),
            e(3, 40, 50, Status::Ok, read("a", Some(2))),
            e(3, 60, 70, Status::Ok, read("a", Some(1))),
        ];
        assert_eq!(check(&h).validity, Validity::Invalid);
    }

    #[test]
    fn cas_that_succeeded_on_the_wrong_value_is_a_violation() {
        let h = vec![
            e(1, 0, 10, Status::Ok, write("a", 1)),
            e(2, 20, 30, Status::Ok, cas("a", 5, 6, Some(true))),
        ];
        assert_eq!(check(&h).validity, Validity::Invalid);
        // and a failed CAS on the right value too
        let h = vec![
            e(1, 0, 10, Status::Ok, write("a", 1)),
            e(2, 20, 30, Status::Ok, cas("a", 1, 6, Some(false))),
        ];
        assert_eq!(check(&h).validity, Validity::Invalid);
    }

    #[test]
    fn read_of_a_value_never_written_is_a_violation() {
        let h = vec![e(1, 0, 10, Status::Ok, read("a", Some(3)))];
        assert_eq!(check(&h).validity, Validity::Invalid);
    }

    #[test]
    fn exhausted_budget_is_unknown_not_valid() {
        let mut h = Vec::new();
        for i in 0..12 {
            h.push(e(i, 0, 100, Status::Ok, write("a", i as i64)));
        }
        h.push(e(99, 200, 210, Status::Ok, read("a", Some(3))));
        let r = check_with_budget(&h, 10);
        assert_eq!(r.validity, Validity::Unknown, "{r:#?}");
    }
}
