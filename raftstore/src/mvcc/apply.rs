//! Applying committed log entries: each command executed deterministically,
//! its writes in one RocksDB batch with the applied log id.

use std::sync::atomic::Ordering;

use rocksdb::WriteBatch;

use super::txn::{TxnCtx, TxnFail};
use super::*;

impl KvStore {
    /// Apply one committed log entry. Writes are not synced here: the log is
    /// durable, and a state machine that lost its tail re-applies it.
    pub fn apply(&self, entry: &Entry) -> Result<(CommandResult, Vec<Effects>), StoreError> {
        // The leader's stamp (log time), around the entry's command.
        let (stamp, normal) = match &entry.payload {
            openraft::EntryPayload::Normal(Command::At { ms, cmd }) => (Some(*ms), Some(&**cmd)),
            openraft::EntryPayload::Normal(cmd) => (None, Some(cmd)),
            _ => (None, None),
        };
        if let Some(Command::Batch(cmds)) = normal {
            return self.apply_batch(entry.log_id, stamp, cmds);
        }
        let meta = engine::cf(&self.db, CF_SM_META);
        let mut batch = WriteBatch::default();
        let log_id = Some(entry.log_id);
        batch.put_cf(meta, META_APPLIED, ser(&log_id)?);
        let mut effects = Effects::default();
        let result = match &entry.payload {
            openraft::EntryPayload::Blank => CommandResult {
                revision: self.revision(),
                outcome: Outcome::Done(Ok(())),
            },
            openraft::EntryPayload::Membership(m) => {
                let sm = StoredMembership::new(log_id, m.clone());
                batch.put_cf(meta, META_MEMBERSHIP, ser(&sm)?);
                CommandResult {
                    revision: self.revision(),
                    outcome: Outcome::Done(Ok(())),
                }
            }
            openraft::EntryPayload::Normal(_) => {
                if let Some(ms) = stamp {
                    self.stamp(ms, &mut batch, &mut effects);
                }
                let cmd = normal.unwrap_or_else(|| unreachable!("a normal entry has a command"));
                self.execute(cmd, entry.log_id.leader_id.term, &mut batch, &mut effects)?
            }
        };
        self.commit_write(batch, &result, &mut effects)?;
        Ok((result, vec![effects]))
    }

    /// Apply the commands of one batched entry in order, each with its own
    /// revision. Each command is written on its own, with a progress marker,
    /// and the entry counts as applied only with the last: a crash in the
    /// middle re-applies the entry and skips what was already written.
    fn apply_batch(
        &self,
        log_id: LogId,
        stamp: Option<u64>,
        cmds: &[Command],
    ) -> Result<(CommandResult, Vec<Effects>), StoreError> {
        let meta = engine::cf(&self.db, CF_SM_META);
        let done: Option<(u64, usize)> = match self.db.get_cf(meta, META_BATCH_PROGRESS)? {
            Some(v) => {
                Some(bincode::deserialize(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?)
            }
            None => None,
        };
        let skip_through = done.filter(|(idx, _)| *idx == log_id.index).map(|(_, i)| i);
        let mut results = Vec::with_capacity(cmds.len());
        let mut all = Vec::with_capacity(cmds.len());
        for (i, cmd) in cmds.iter().enumerate() {
            if skip_through.is_some_and(|d| i <= d) {
                results.push(CommandResult::default());
                continue;
            }
            let mut batch = WriteBatch::default();
            if i + 1 == cmds.len() {
                batch.put_cf(meta, META_APPLIED, ser(&Some(log_id))?);
                batch.delete_cf(meta, META_BATCH_PROGRESS);
            } else {
                batch.put_cf(meta, META_BATCH_PROGRESS, ser(&(log_id.index, i))?);
            }
            let mut fx = Effects::default();
            if let Some(ms) = stamp {
                self.stamp(ms, &mut batch, &mut fx);
            }
            let result = match cmd {
                Command::Batch(_) => CommandResult {
                    revision: self.revision(),
                    outcome: Outcome::Done(Err(KvError::InvalidArgument(
                        "batches do not nest".into(),
                    ))),
                },
                cmd => self.execute(cmd, log_id.leader_id.term, &mut batch, &mut fx)?,
            };
            self.commit_write(batch, &result, &mut fx)?;
            results.push(result);
            all.push(fx);
        }
        if cmds.is_empty() {
            let mut batch = WriteBatch::default();
            batch.put_cf(meta, META_APPLIED, ser(&Some(log_id))?);
            self.db.write(batch)?;
        }
        Ok((
            CommandResult {
                revision: self.revision(),
                outcome: Outcome::Batch(results),
            },
            all,
        ))
    }

    fn commit_write(
        &self,
        batch: WriteBatch,
        result: &CommandResult,
        effects: &mut Effects,
    ) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        self.db.write(batch)?;
        if let Some(h) = self.commit_seconds.get() {
            h.observe(started.elapsed().as_secs_f64());
        }
        effects.revision = result.revision;
        if let Some(c) = effects.compacted_to {
            self.compact_revision.store(c, Ordering::SeqCst);
        }
        // A replayed request reports the revision it was first applied at:
        // the store's revision never moves back.
        self.revision.fetch_max(result.revision, Ordering::SeqCst);
        if let Some(w) = effects.once {
            *self.once.lock().unwrap_or_else(|p| p.into_inner()) = w;
        }
        // In memory only once written: a failed write must leave no trace.
        if let Some(id) = effects.cluster_id {
            self.cluster_id.store(id, Ordering::SeqCst);
        }
        if effects.members_changed {
            let dir = self.members_from_db()?;
            *self.directory.write().unwrap_or_else(|p| p.into_inner()) = dir;
        }
        Ok(())
    }

    /// Execute `cmd`, carried by a log entry of Raft term `term`, into `batch`.
    fn execute(
        &self,
        cmd: &Command,
        term: u64,
        batch: &mut WriteBatch,
        fx: &mut Effects,
    ) -> Result<CommandResult, StoreError> {
        let cur = self.revision();
        let meta = engine::cf(&self.db, CF_SM_META);
        let done = |revision, r| CommandResult {
            revision,
            outcome: Outcome::Done(r),
        };
        Ok(match cmd {
            Command::Txn(req) => {
                let mut tx = TxnCtx::new(self, cur + 1);
                match tx.txn(req) {
                    Ok(resp) => {
                        let rev = tx.commit(batch, fx);
                        CommandResult {
                            revision: rev,
                            outcome: Outcome::Txn(Ok(resp)),
                        }
                    }
                    Err(TxnFail::Kv(e)) => CommandResult {
                        revision: cur,
                        outcome: Outcome::Txn(Err(e)),
                    },
                    Err(TxnFail::Store(e)) => return Err(e),
                }
            }
            Command::Compact { revision } => {
                let compacted = self.compact_revision();
                if *revision <= compacted {
                    done(
                        cur,
                        Err(KvError::Compacted {
                            compact_revision: compacted,
                        }),
                    )
                } else if *revision > cur {
                    done(cur, Err(KvError::FutureRevision))
                } else {
                    batch.put_cf(meta, META_COMPACT, revision.to_be_bytes());
                    fx.compacted_to = Some(*revision);
                    done(cur, Ok(()))
                }
            }
            Command::LeaseGrant { id, ttl } => {
                if self.lease_ttl_raw(*id)?.is_some() {
                    CommandResult {
                        revision: cur,
                        outcome: Outcome::LeaseGranted(Err(KvError::LeaseExists)),
                    }
                } else {
                    batch.put_cf(
                        engine::cf(&self.db, CF_LEASE),
                        engine::lease_key(*id),
                        ttl.to_be_bytes(),
                    );
                    fx.leases_granted.push((*id, *ttl));
                    CommandResult {
                        revision: cur,
                        outcome: Outcome::LeaseGranted(Ok((*id, *ttl))),
                    }
                }
            }
            Command::LeaseRevoke { id } => {
                if self.lease_ttl_raw(*id)?.is_none() {
                    done(cur, Err(KvError::LeaseNotFound))
                } else {
                    let mut tx = TxnCtx::new(self, cur + 1);
                    for key in self.lease_keys_raw(*id)? {
                        let d = DeleteRangeRequest {
                            key,
                            range_end: vec![],
                            prev_kv: false,
                        };
                        match tx.delete(&d) {
                            Ok(_) => {}
                            Err(TxnFail::Store(e)) => return Err(e),
                            Err(TxnFail::Kv(e)) => return Err(StoreError::Corrupt(e.to_string())),
                        }
                    }
                    let rev = tx.commit(batch, fx);
                    let lk = engine::cf(&self.db, CF_LEASE_KEYS);
                    let start = engine::lease_key(*id);
                    let end = engine::lease_key(id.wrapping_add(1));
                    if (*id as u64) < u64::MAX {
                        batch.delete_range_cf(lk, start, end);
                    }
                    batch.delete_cf(engine::cf(&self.db, CF_LEASE), engine::lease_key(*id));
                    fx.leases_revoked.push(*id);
                    done(rev, Ok(()))
                }
            }
            Command::RegisterMember { id, addrs } => {
                let mut k = META_MEMBER_PREFIX.to_vec();
                k.extend_from_slice(&id.to_be_bytes());
                batch.put_cf(
                    meta,
                    k,
                    bincode::serialize(addrs).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                );
                fx.members_changed = true;
                done(cur, Ok(()))
            }
            Command::UnregisterMember { id } => {
                let mut k = META_MEMBER_PREFIX.to_vec();
                k.extend_from_slice(&id.to_be_bytes());
                batch.delete_cf(meta, k);
                fx.members_changed = true;
                done(cur, Ok(()))
            }
            Command::Batch(_) => done(
                cur,
                Err(KvError::InvalidArgument("batches do not nest".into())),
            ),
            Command::Once { id, cmd } => {
                if let Some(first) = self.remembered(*id)? {
                    // Applied before: replay the first result, change nothing.
                    return Ok(CommandResult {
                        revision: first.revision,
                        outcome: Outcome::Replayed(Box::new(first)),
                    });
                }
                if !self.make_room(batch, fx)? {
                    // Remembering it would forget a young id, whose retry
                    // could then apply twice: refused, nothing applied.
                    return Ok(CommandResult {
                        revision: cur,
                        outcome: refusal(cmd, KvError::TooManyRequests),
                    });
                }
                let events_before = fx.events.len();
                let result = match cmd.as_ref() {
                    Command::Once { .. } | Command::Batch(_) | Command::At { .. } => done(
                        cur,
                        Err(KvError::InvalidArgument("request ids do not nest".into())),
                    ),
                    inner => self.execute(inner, term, batch, fx)?,
                };
                let wrote = fx.events.len() > events_before;
                if matches!(&result.outcome, Outcome::Fenced { .. }) {
                    // Refused, nothing done: a later attempt may be decided anew.
                    return Ok(result);
                }
                // Only a transaction that wrote something is remembered: one
                // whose compares failed, that was refused, or that wrote
                // nothing did nothing, so applying its id again later is as
                // if it were applied only then. That lets one API call retry
                // its read-modify-write rounds under one id, of which at
                // most one ever writes.
                if matches!(&result.outcome, Outcome::Txn(_)) && !wrote {
                    return Ok(result);
                }
                self.remember(*id, &result, batch, fx)?;
                result
            }
            Command::At { .. } => done(
                cur,
                Err(KvError::InvalidArgument(
                    "a time stamp is only around a log entry's command".into(),
                )),
            ),
            Command::SetClusterId { id } => {
                if self.cluster_id() == 0 && fx.cluster_id.is_none() {
                    batch.put_cf(meta, META_CLUSTER_ID, id.to_be_bytes());
                    fx.cluster_id = Some(*id);
                }
                done(cur, Ok(()))
            }
            Command::Fenced {
                term: fence,
                cmd: inner,
            } => {
                if *fence != term {
                    // Proposed by (or retried on) a leader of another term:
                    // the term the command belongs to is over.
                    CommandResult {
                        revision: cur,
                        outcome: Outcome::Fenced { term: *fence },
                    }
                } else {
                    match inner.as_ref() {
                        Command::Once { .. }
                        | Command::Batch(_)
                        | Command::Fenced { .. }
                        | Command::At { .. } => done(
                            cur,
                            Err(KvError::InvalidArgument(
                                "a fenced command holds a plain command".into(),
                            )),
                        ),
                        inner => self.execute(inner, term, batch, fx)?,
                    }
                }
            }
        })
    }
}

/// The outcome of a refused command, of the kind its caller expects.
fn refusal(cmd: &Command, e: KvError) -> Outcome {
    match cmd {
        Command::Txn(_) => Outcome::Txn(Err(e)),
        Command::LeaseGrant { .. } => Outcome::LeaseGranted(Err(e)),
        c => match c.wrapped() {
            Some(inner) => refusal(inner, e),
            None => Outcome::Done(Err(e)),
        },
    }
}
