//! Whether the answer of a proposal retried under one request id is final
//! (see [`settle`]).

use crate::error::{Error, Result};
use crate::kv::{CompareResult, CompareTarget};
use crate::types::{Command, CommandResult, Outcome};

/// The answer of a proposal whose last attempt was applied, after
/// `unanswered` earlier attempts of the same request id ended without an
/// answer.
///
/// The state machine remembers a request id only once its command wrote
/// something: a transaction whose compares failed, or that wrote nothing,
/// is not remembered, so that the object API may retry its
/// read-modify-write rounds under one id. But an earlier attempt may still
/// reach the log after this one was answered (a forward held up by a lossy
/// network and delivered later, an entry a deposed leader appended), and it
/// is then applied anew: a compare-and-swap answered "failed" could swap
/// later, after the client went on. The chaos tests' lossy nemesis (CI's
/// seed 201 on 2d99040) read 4 from a register just written 0; the only
/// operation that could write 4 then was a CAS from 0 to 4 answered
/// "failed" 0.4 s earlier, after 0.7 s of attempts under packet loss (an
/// inference from the history: the masters' logs do not show it). Such an
/// answer is not final, so it is not given: the call ends as timed out,
/// its outcome unknown, as etcd answers a proposal it lost track of.
///
/// This holds whoever made the id. An object API request keeps its id
/// across its rounds, and its create compares on the object's absence,
/// which comes back once the object is deleted: a create answered
/// "already exists" could otherwise create the object later. A round
/// that settles as failed had no other attempt, so no earlier round's copy
/// is left either. A compare that can never pass again is final (see
/// [`fails_for_good`]): an update's compare on the object's revision.
pub(super) fn settle(cmd: &Command, r: CommandResult, unanswered: usize) -> Result<CommandResult> {
    if unanswered > 0 && !final_answer(&r) && !fails_for_good(cmd, &r) {
        tracing::debug!(
            unanswered,
            "an earlier attempt may still be applied: the outcome is unknown"
        );
        return Err(Error::Timeout);
    }
    Ok(r)
}

/// Whether `r`, the answer of `cmd`, is a transaction that failed its
/// compares and would fail them again whenever a copy is applied: every
/// compare asks that one key's mod or create revision equal a revision
/// already reached, which no key can take again (revisions only grow),
/// so the compare that failed fails for good. Its failure branch must be
/// empty (a branch that wrote nothing now might write later).
fn fails_for_good(cmd: &Command, r: &CommandResult) -> bool {
    let (Command::Txn(t), Outcome::Txn(Ok(resp))) = (cmd.innermost(), &r.outcome) else {
        return false;
    };
    !resp.succeeded
        && t.failure.is_empty()
        && !t.compare.is_empty()
        && t.compare.iter().all(|c| {
            c.range_end.is_empty()
                && c.result == CompareResult::Equal
                && matches!(c.target,
                    CompareTarget::Mod(rev) | CompareTarget::Create(rev)
                        if rev > 0 && rev <= r.revision)
        })
}

/// Whether an applied command's answer stays true whatever copy of it is
/// applied later: a replay, anything but a transaction, or a transaction
/// that wrote (its id is then remembered, and a later copy replays it).
fn final_answer(r: &CommandResult) -> bool {
    match &r.outcome {
        Outcome::Txn(Ok(t)) => txn_wrote(t),
        // Refused for the window's room: a later copy may find room.
        Outcome::Txn(Err(crate::kv::KvError::TooManyRequests)) => false,
        _ => true,
    }
}

fn txn_wrote(t: &crate::kv::TxnResponse) -> bool {
    use crate::kv::ResponseOp;
    t.responses.iter().any(|op| match op {
        ResponseOp::Put(_) => true,
        ResponseOp::DeleteRange(d) => d.deleted > 0,
        ResponseOp::Txn(inner) => txn_wrote(inner),
        ResponseOp::Range(_) => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{
        Compare, DeleteRangeResponse, PutResponse, RangeResponse, ResponseOp, TxnRequest,
        TxnResponse,
    };

    fn txn(succeeded: bool, responses: Vec<ResponseOp>) -> CommandResult {
        CommandResult {
            revision: 7,
            outcome: Outcome::Txn(Ok(TxnResponse {
                succeeded,
                responses,
            })),
        }
    }

    fn compare(target: CompareTarget) -> Compare {
        Compare {
            result: CompareResult::Equal,
            target,
            key: b"k".to_vec(),
            range_end: vec![],
        }
    }

    /// A transaction under a request id, as proposals carry them.
    fn once(compare: Vec<Compare>) -> Command {
        Command::Once {
            id: (1, 42),
            cmd: Box::new(Command::Txn(TxnRequest {
                compare,
                success: vec![],
                failure: vec![],
            })),
        }
    }

    /// A compare-and-swap on a value, as an etcd client's CAS.
    fn cas_on_value() -> Command {
        once(vec![compare(CompareTarget::Value(b"0".to_vec()))])
    }

    #[test]
    fn a_failed_compare_after_an_unanswered_attempt_is_not_a_final_answer() {
        let failed_cas = txn(false, vec![]);
        assert!(matches!(
            settle(&cas_on_value(), failed_cas.clone(), 1),
            Err(Error::Timeout)
        ));
        // Answered at the first attempt: no other copy was sent.
        assert!(settle(&cas_on_value(), failed_cas, 0).is_ok());
    }

    #[test]
    fn an_object_create_refused_after_an_unanswered_attempt_is_not_final() {
        // The object API's create: its own request id, a compare on the
        // key's absence (create revision 0), which passes again once the
        // object is deleted. Before, a caller's id kept a failed answer.
        let create = Command::Once {
            id: (1, 42),
            cmd: Box::new(Command::Fenced {
                term: 3,
                cmd: Box::new(Command::Txn(TxnRequest {
                    compare: vec![compare(CompareTarget::Create(0))],
                    success: vec![],
                    failure: vec![],
                })),
            }),
        };
        assert!(matches!(
            settle(&create, txn(false, vec![]), 1),
            Err(Error::Timeout)
        ));
        assert!(settle(&create, txn(false, vec![]), 0).is_ok());
    }

    #[test]
    fn a_compare_on_a_revision_already_reached_fails_for_good() {
        let failed = txn(false, vec![]);
        // An update of an object at revision 5 (the answer's store revision is 7).
        let update = once(vec![compare(CompareTarget::Mod(5))]);
        assert!(settle(&update, failed.clone(), 1).is_ok());
        let by_create = once(vec![compare(CompareTarget::Create(7))]);
        assert!(settle(&by_create, failed.clone(), 1).is_ok());
        // Not for good: a revision not reached yet, a range, another
        // compare beside it, a failure branch, another comparison.
        let future = once(vec![compare(CompareTarget::Mod(8))]);
        let mut range = compare(CompareTarget::Mod(5));
        range.range_end = b"l".to_vec();
        let mixed = once(vec![
            compare(CompareTarget::Mod(5)),
            compare(CompareTarget::Create(0)),
        ]);
        let mut with_failure = once(vec![compare(CompareTarget::Mod(5))]);
        if let Command::Once { cmd, .. } = &mut with_failure {
            if let Command::Txn(t) = cmd.as_mut() {
                t.failure
                    .push(crate::kv::RequestOp::Range(Default::default()));
            }
        }
        let mut greater = compare(CompareTarget::Mod(5));
        greater.result = CompareResult::Greater;
        for cmd in [
            future,
            once(vec![range]),
            mixed,
            with_failure,
            once(vec![greater]),
        ] {
            assert!(
                matches!(settle(&cmd, failed.clone(), 1), Err(Error::Timeout)),
                "{cmd:?}"
            );
        }
        // A transaction that succeeded without writing is not covered.
        let read = txn(true, vec![ResponseOp::Range(RangeResponse::default())]);
        assert!(matches!(settle(&update, read, 1), Err(Error::Timeout)));
    }

    #[test]
    fn an_answer_that_a_later_copy_replays_is_final() {
        let cmd = cas_on_value();
        let put = txn(true, vec![ResponseOp::Put(PutResponse::default())]);
        assert!(settle(&cmd, put, 2).is_ok());
        let deleted = txn(
            true,
            vec![ResponseOp::DeleteRange(DeleteRangeResponse {
                deleted: 1,
                prev_kvs: vec![],
            })],
        );
        assert!(settle(&cmd, deleted, 1).is_ok());
        let nested = txn(
            false,
            vec![ResponseOp::Txn(TxnResponse {
                succeeded: true,
                responses: vec![ResponseOp::Put(PutResponse::default())],
            })],
        );
        assert!(settle(&cmd, nested, 1).is_ok());
    }

    #[test]
    fn a_transaction_that_wrote_nothing_is_not_final_after_an_unanswered_attempt() {
        let cmd = cas_on_value();
        let nothing_deleted = txn(
            true,
            vec![ResponseOp::DeleteRange(DeleteRangeResponse {
                deleted: 0,
                prev_kvs: vec![],
            })],
        );
        assert!(matches!(
            settle(&cmd, nothing_deleted, 1),
            Err(Error::Timeout)
        ));
        let read = txn(true, vec![ResponseOp::Range(RangeResponse::default())]);
        assert!(matches!(settle(&cmd, read, 1), Err(Error::Timeout)));
        let refused = CommandResult {
            revision: 7,
            outcome: Outcome::Txn(Err(crate::kv::KvError::TooManyRequests)),
        };
        assert!(matches!(settle(&cmd, refused, 1), Err(Error::Timeout)));
    }
}
