//! Whether the answer of a proposal retried under one request id is final
//! (see [`settle`]).

use crate::error::{Error, Result};
use crate::types::{CommandResult, Outcome};

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
/// inference from the history: the masters' logs do not show it). Such an answer is
/// not final, so it is not given: the call ends as timed out, its outcome
/// unknown, as etcd answers a proposal it lost track of. Only for ids made
/// here, one per call: a caller's own id spans its rounds, whose compares
/// (on a resourceVersion, which never comes back) a late copy fails again.
pub(super) fn settle(r: CommandResult, fresh_id: bool, unanswered: usize) -> Result<CommandResult> {
    if fresh_id && unanswered > 0 && !final_answer(&r) {
        tracing::debug!(
            unanswered,
            "an earlier attempt may still be applied: the outcome is unknown"
        );
        return Err(Error::Timeout);
    }
    Ok(r)
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
    use crate::kv::{DeleteRangeResponse, PutResponse, RangeResponse, ResponseOp, TxnResponse};

    fn txn(succeeded: bool, responses: Vec<ResponseOp>) -> CommandResult {
        CommandResult {
            revision: 7,
            outcome: Outcome::Txn(Ok(TxnResponse {
                succeeded,
                responses,
            })),
        }
    }

    #[test]
    fn a_failed_compare_after_an_unanswered_attempt_is_not_a_final_answer() {
        let failed_cas = txn(false, vec![]);
        assert!(matches!(
            settle(failed_cas.clone(), true, 1),
            Err(Error::Timeout)
        ));
        // Answered at the first attempt: no other copy was sent.
        assert!(settle(failed_cas.clone(), true, 0).is_ok());
        // A caller's own id (the object API's rounds) keeps its answer.
        assert!(settle(failed_cas, false, 1).is_ok());
    }

    #[test]
    fn an_answer_that_a_later_copy_replays_is_final() {
        let put = txn(true, vec![ResponseOp::Put(PutResponse::default())]);
        assert!(settle(put, true, 2).is_ok());
        let deleted = txn(
            true,
            vec![ResponseOp::DeleteRange(DeleteRangeResponse {
                deleted: 1,
                prev_kvs: vec![],
            })],
        );
        assert!(settle(deleted, true, 1).is_ok());
        let nested = txn(
            false,
            vec![ResponseOp::Txn(TxnResponse {
                succeeded: true,
                responses: vec![ResponseOp::Put(PutResponse::default())],
            })],
        );
        assert!(settle(nested, true, 1).is_ok());
    }

    #[test]
    fn a_transaction_that_wrote_nothing_is_not_final_after_an_unanswered_attempt() {
        let nothing_deleted = txn(
            true,
            vec![ResponseOp::DeleteRange(DeleteRangeResponse {
                deleted: 0,
                prev_kvs: vec![],
            })],
        );
        assert!(matches!(
            settle(nothing_deleted, true, 1),
            Err(Error::Timeout)
        ));
        let read = txn(true, vec![ResponseOp::Range(RangeResponse::default())]);
        assert!(matches!(settle(read, true, 1), Err(Error::Timeout)));
        let refused = CommandResult {
            revision: 7,
            outcome: Outcome::Txn(Err(crate::kv::KvError::TooManyRequests)),
        };
        assert!(matches!(settle(refused, true, 1), Err(Error::Timeout)));
    }
}
