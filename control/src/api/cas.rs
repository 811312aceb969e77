//! The one read-modify-write loop behind update, status, patch, apply,
//! delete and bind: read the object, decide, write on the condition that it
//! is still the revision read, and retry a lost race.
//!
//! Reads start on this master (cheap, maybe stale). Once anything read
//! disagrees (the object absent, a precondition failing, a race lost, a
//! decision to write nothing), the loop reads again through the leader:
//! an answer that depends on what was read is only ever given from a
//! linearizable read, never from a copy this master has not caught up on.

use serde_json::Value;

use flotilla_objects::api::ApiError;

use super::json::decode;
use super::{store_err, ApiServer, CAS_RETRIES};
use crate::store::{Cond, Kv, Op, Txn, TxnResult};

/// How a read-modify-write loop reads.
#[derive(Default)]
pub(crate) struct Reader {
    pub linearizable: bool,
}

impl Reader {
    /// Switch to reads through the leader: true when that is new (read
    /// again), false when they already were (the disagreement stands).
    pub fn escalate(&mut self) -> bool {
        !std::mem::replace(&mut self.linearizable, true)
    }
}

/// What one round decided, given the object as read.
pub(crate) enum Step {
    /// Write this transaction (the object's own condition is added); the
    /// object is what it writes (for the answer).
    Write(Txn, Value),
    /// Write this transaction once `claims` are checked: store keys the
    /// object will hold (addresses), each put beside it on the condition
    /// that it is free.
    Claim(Txn, Value, Vec<Claim>),
    /// Nothing to write: the answer is this object.
    Unchanged(Value),
    /// A dry run: what would be written.
    DryRun(Value),
    /// What was read does not allow the call (a precondition failed, say):
    /// this error, once a read through the leader confirms it.
    Refuse(ApiError),
    /// Read again through the leader and decide again (an address this
    /// round picked turned out to be taken, say).
    Again,
}

/// A store key an object is to hold beside itself.
pub(crate) struct Claim {
    pub key: Vec<u8>,
    /// Named by the caller: this error when another object holds it. None:
    /// picked by the server, so picked again when taken.
    pub named: Option<ApiError>,
}

/// How the loop ended.
pub(crate) enum Outcome {
    /// Written at `revision`.
    Written {
        revision: i64,
        object: Value,
    },
    /// An earlier attempt of this call (same request id) wrote: the object
    /// as it is now (None: gone, maybe by that very write), and what this
    /// attempt would have written (Null when it did not get that far: the object
    /// was gone, or what is there now refused it).
    Replayed {
        now: Option<Value>,
        attempted: Value,
    },
    Unchanged(Value),
    DryRun(Value),
}

impl ApiServer {
    /// Run read-modify-write rounds on `key` until one writes, answers, or
    /// fails. `round` gets the stored key (None: absent) and the object
    /// decoded; `absent` is the error for a missing object.
    pub(crate) async fn cas<F>(
        &self,
        key: &[u8],
        absent: impl Fn() -> ApiError,
        conflict: impl Fn() -> ApiError,
        mut round: F,
    ) -> Result<Outcome, ApiError>
    where
        F: FnMut(&Kv, Value) -> Result<Step, ApiError>,
    {
        let mut rd = Reader::default();
        for _ in 0..CAS_RETRIES {
            let Some(kv) = self.read(key, rd.linearizable).await? else {
                if rd.escalate() {
                    continue;
                }
                // Gone: maybe by an earlier attempt of this very call (a
                // retried delete). Its request id tells.
                if self.applied_before(key).await? {
                    return Ok(Outcome::Replayed {
                        now: None,
                        attempted: Value::Null,
                    });
                }
                return Err(absent());
            };
            let cur = decode(&kv)?;
            let step = match round(&kv, cur)? {
                Step::Claim(txn, object, claims) => {
                    self.check_claims(txn, object, claims, &rd).await?
                }
                step => step,
            };
            match step {
                Step::Refuse(e) => {
                    if rd.escalate() {
                        continue;
                    }
                    // Refused on what is there now, which an earlier
                    // attempt of this very call may have made (a retried
                    // update whose resourceVersion precondition its own
                    // first write moved; a retried Binding of a pod its
                    // first attempt bound): answered as that attempt.
                    if self.applied_before(key).await? {
                        return Ok(Outcome::Replayed {
                            now: Some(decode(&kv)?),
                            attempted: Value::Null,
                        });
                    }
                    return Err(e);
                }
                Step::Unchanged(v) => {
                    if rd.escalate() {
                        continue;
                    }
                    return Ok(Outcome::Unchanged(v));
                }
                Step::DryRun(v) => return Ok(Outcome::DryRun(v)),
                Step::Again => {
                    rd.escalate();
                }
                Step::Claim(..) => unreachable!("claims are checked above"),
                Step::Write(mut txn, object) => {
                    txn.conds
                        .push(Cond::ModRevision(key.to_vec(), kv.mod_revision));
                    match self.write(txn).await? {
                        TxnResult::Committed(revision) => {
                            return Ok(Outcome::Written { revision, object })
                        }
                        TxnResult::Replayed { key, .. } => {
                            return Ok(Outcome::Replayed {
                                now: self.replayed(&key).await?,
                                attempted: object,
                            })
                        }
                        // Lost the race: read again through the leader (a
                        // precondition that no longer holds is then the
                        // caller's conflict).
                        TxnResult::Failed => {
                            rd.escalate();
                        }
                    }
                }
            }
        }
        Err(conflict())
    }

    /// Whether this call's request id was applied before (by an earlier
    /// attempt of the same call); false for a call without one. The probe's
    /// conditions cannot both hold: it writes nothing and is not remembered
    /// under the id; it only comes back as a replay if the id was applied.
    async fn applied_before(&self, key: &[u8]) -> Result<bool, ApiError> {
        if self.ctx.request.is_none() {
            return Ok(false);
        }
        let probe = Txn::new(
            vec![Cond::Absent(key.to_vec()), Cond::Present(key.to_vec())],
            vec![],
        );
        Ok(matches!(
            self.write(probe).await?,
            TxnResult::Replayed { .. }
        ))
    }

    /// Turn a claiming write into a plain one: every claimed key must be
    /// free (as read now); a taken key the caller named refuses the call, a
    /// taken key the server picked makes the round run again (a new pick).
    async fn check_claims(
        &self,
        mut txn: Txn,
        object: Value,
        claims: Vec<Claim>,
        rd: &Reader,
    ) -> Result<Step, ApiError> {
        let main = txn.ops.pop();
        for c in claims {
            if self.read(&c.key, rd.linearizable).await?.is_some() {
                return Ok(match c.named {
                    Some(e) => Step::Refuse(e),
                    None => Step::Again,
                });
            }
            txn.conds.push(Cond::Absent(c.key.clone()));
            let owner = match &main {
                Some(Op::Put(k, _)) | Some(Op::Delete(k)) => k.clone(),
                None => Vec::new(),
            };
            txn.ops.push(Op::Put(c.key, owner));
        }
        txn.ops.extend(main);
        Ok(Step::Write(txn, object))
    }

    /// Send a transaction with this call's fence and request id.
    pub(crate) async fn write(&self, mut txn: Txn) -> Result<TxnResult, ApiError> {
        txn.fence = self.ctx.fence;
        txn.request = self.ctx.request;
        self.store.txn(txn).await.map_err(store_err)
    }
}
