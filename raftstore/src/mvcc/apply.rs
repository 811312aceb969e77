//! Applying committed log entries: each command executed deterministically,
//! at its own revision. The commands of a batched entry share RocksDB
//! writes: consecutive commands that read nothing an earlier one of them
//! wrote (point transactions on other keys, other request ids) go into one
//! write, with the applied log id or a progress marker.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use rocksdb::WriteBatch;

use super::once::once_key;
use super::txn::{TxnCtx, TxnFail};
use super::*;

/// Commands executed but not yet written: their writes, and the state they
/// leave (which the next command of the group sees, and readers only once
/// written).
struct Group {
    batch: WriteBatch,
    /// The store's revision after the group's commands.
    revision: i64,
    /// The window of request ids after them.
    window: OnceWindow,
    /// User keys they wrote.
    keys: HashSet<Vec<u8>>,
    /// `once/` keys of request ids they remembered or forgot.
    once_keys: HashSet<Vec<u8>>,
    /// Index in the entry's effects of the group's first command.
    first: usize,
    len: usize,
}

/// What marks a group's write as part of its entry.
enum Marker {
    /// An entry that is not a batch: it is applied.
    Entry(Option<LogId>),
    /// A batch's last commands: it is applied.
    Applied(Option<LogId>),
    /// Commands up to this one of the entry are written.
    Progress(u64, usize),
}

impl Group {
    /// An empty group on the store as it is written.
    fn new(store: &KvStore, first: usize) -> Group {
        let window = *store.once.lock().unwrap_or_else(|p| p.into_inner());
        Group::at(store.revision(), window, first)
    }

    fn at(revision: i64, window: OnceWindow, first: usize) -> Group {
        Group {
            batch: WriteBatch::default(),
            revision,
            window,
            keys: HashSet::new(),
            once_keys: HashSet::new(),
            first,
            len: 0,
        }
    }

    /// Whether `cmd` may run against this group's state while its writes
    /// are not yet in the database: it is a transaction on single keys
    /// the group did not write, and it reads no request id or record of
    /// the window the group wrote.
    fn admits(&self, reads: Option<&PointReads<'_>>) -> bool {
        if self.len == 0 {
            return true;
        }
        let Some((keys, id)) = reads else {
            return false;
        };
        if keys.iter().any(|k| self.keys.contains(*k)) {
            return false;
        }
        if let Some(id) = id {
            // (Making room reads the window's oldest records; those of the
            // group are never read: see `make_room`.)
            if self.once_keys.contains(&once_key(*id)) {
                return false;
            }
        }
        true
    }

    /// Take in one executed command's state; `more` says that other
    /// commands may join the group after it (they must know its keys).
    fn add(&mut self, result: &CommandResult, fx: &mut Effects, more: bool) {
        fx.revision = result.revision;
        self.revision = self.revision.max(result.revision);
        if let Some(w) = fx.once {
            self.window = w;
        }
        if more {
            for ev in &fx.events {
                self.keys.insert(ev.kv.key.clone());
            }
        }
        self.once_keys.extend(fx.once_keys.drain(..));
        self.len += 1;
    }
}

/// The keys a command reads, and its request id.
type PointReads<'a> = (Vec<&'a [u8]>, Option<(u64, u64)>);

/// What a command reads, when it is a transaction whose every comparison
/// and operation names one key (the commands that may share a write with
/// the ones before them).
fn point_reads(cmd: &Command) -> Option<PointReads<'_>> {
    fn txn<'a>(t: &'a TxnRequest, out: &mut Vec<&'a [u8]>) -> Option<()> {
        for c in &t.compare {
            if !c.range_end.is_empty() {
                return None;
            }
            out.push(&c.key);
        }
        for op in t.success.iter().chain(&t.failure) {
            match op {
                RequestOp::Put(p) => out.push(&p.key),
                RequestOp::DeleteRange(d) if d.range_end.is_empty() => out.push(&d.key),
                RequestOp::Range(r) if r.range_end.is_empty() && r.revision <= 0 => {
                    out.push(&r.key)
                }
                RequestOp::Txn(inner) => txn(inner, out)?,
                _ => return None,
            }
        }
        Some(())
    }
    fn plain(cmd: &Command) -> Option<&TxnRequest> {
        match cmd {
            Command::Txn(t) => Some(t),
            Command::Fenced { cmd, .. } => match cmd.as_ref() {
                Command::Txn(t) => Some(t),
                _ => None,
            },
            _ => None,
        }
    }
    let (t, id) = match cmd {
        Command::Once { id, cmd } => (plain(cmd)?, Some(*id)),
        c => (plain(c)?, None),
    };
    let mut keys = Vec::new();
    txn(t, &mut keys)?;
    Some((keys, id))
}

impl KvStore {
    /// Apply one committed log entry. Writes are not synced here: the log is
    /// durable, and a state machine that lost its tail re-applies it.
    pub fn apply(&self, entry: &Entry) -> Result<(CommandResult, Vec<Effects>), StoreError> {
        // A view taken outside the state machine's task waits for this
        // entry whole (see `view_between_applies`).
        let _applying = self.between_applies();
        self.apply_entry(entry)
    }

    fn apply_entry(&self, entry: &Entry) -> Result<(CommandResult, Vec<Effects>), StoreError> {
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
        let mut group = Group::new(self, 0);
        let log_id = Some(entry.log_id);
        let mut fx = Effects {
            once: Some(group.window),
            ..Effects::default()
        };
        let result = match &entry.payload {
            openraft::EntryPayload::Blank => CommandResult {
                revision: group.revision,
                outcome: Outcome::Done(Ok(())),
            },
            openraft::EntryPayload::Membership(m) => {
                let sm = StoredMembership::new(log_id, m.clone());
                group.batch.put_cf(meta, META_MEMBERSHIP, ser(&sm)?);
                CommandResult {
                    revision: group.revision,
                    outcome: Outcome::Done(Ok(())),
                }
            }
            openraft::EntryPayload::Normal(_) => {
                if let Some(ms) = stamp {
                    self.stamp(ms, &mut fx);
                }
                let cmd = normal.unwrap_or_else(|| unreachable!("a normal entry has a command"));
                let term = entry.log_id.leader_id.term;
                self.execute(cmd, term, group.revision, &mut group.batch, &mut fx)?
            }
        };
        group.add(&result, &mut fx, false);
        let mut all = vec![fx];
        self.write_group(&mut group, Marker::Entry(log_id), &mut all)?;
        Ok((result, all))
    }

    /// Apply the commands of one batched entry in order, each with its own
    /// revision. Consecutive commands that read nothing the others wrote
    /// share one write (see [`Group::admits`]), which records how far the
    /// entry is written; the entry counts as applied only with its last
    /// command. A crash in the middle re-applies the entry and skips what
    /// was already written.
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
        let mut all: Vec<Effects> = Vec::with_capacity(cmds.len());
        let mut group = Group::new(self, 0);
        for (i, cmd) in cmds.iter().enumerate() {
            if skip_through.is_some_and(|d| i <= d) {
                results.push(CommandResult::default());
                continue;
            }
            let reads = point_reads(cmd);
            if !group.admits(reads.as_ref()) {
                self.write_group(&mut group, Marker::Progress(log_id.index, i - 1), &mut all)?;
            }
            let mut fx = Effects {
                once: Some(group.window),
                ..Effects::default()
            };
            if let Some(ms) = stamp {
                self.stamp(ms, &mut fx);
            }
            let result = match cmd {
                Command::Batch(_) => CommandResult {
                    revision: group.revision,
                    outcome: Outcome::Done(Err(KvError::InvalidArgument(
                        "batches do not nest".into(),
                    ))),
                },
                cmd => self.execute(
                    cmd,
                    log_id.leader_id.term,
                    group.revision,
                    &mut group.batch,
                    &mut fx,
                )?,
            };
            let last = i + 1 == cmds.len();
            // Anything but a point command is written by itself, right after.
            group.add(&result, &mut fx, !last && reads.is_some());
            results.push(result);
            all.push(fx);
            if last || reads.is_none() {
                let marker = if last {
                    Marker::Applied(Some(log_id))
                } else {
                    Marker::Progress(log_id.index, i)
                };
                self.write_group(&mut group, marker, &mut all)?;
            }
        }
        if cmds.is_empty() {
            self.write_group(&mut group, Marker::Applied(Some(log_id)), &mut all)?;
        }
        Ok((
            CommandResult {
                revision: self.revision(),
                outcome: Outcome::Batch(results),
            },
            all,
        ))
    }

    /// Write a group's commands with `marker`, then make what they changed
    /// visible (readers see a revision only once its writes are in), and
    /// start the next group.
    fn write_group(
        &self,
        next: &mut Group,
        marker: Marker,
        all: &mut [Effects],
    ) -> Result<(), StoreError> {
        // The next group starts from this one's state, nothing pending.
        let after = Group::at(next.revision, next.window, all.len());
        let mut group = std::mem::replace(next, after);
        let meta = engine::cf(&self.db, CF_SM_META);
        match marker {
            Marker::Entry(log_id) => group.batch.put_cf(meta, META_APPLIED, ser(&log_id)?),
            Marker::Applied(log_id) => {
                group.batch.put_cf(meta, META_APPLIED, ser(&log_id)?);
                group.batch.delete_cf(meta, META_BATCH_PROGRESS);
            }
            Marker::Progress(index, i) => {
                group
                    .batch
                    .put_cf(meta, META_BATCH_PROGRESS, ser(&(index, i))?);
            }
        }
        let written = *self.once.lock().unwrap_or_else(|p| p.into_inner());
        if group.window != written {
            self.write_window(&group.window, &mut group.batch);
        }
        if group.revision > self.revision() {
            group
                .batch
                .put_cf(meta, META_REVISION, group.revision.to_be_bytes());
        }
        let started = std::time::Instant::now();
        self.db.write(group.batch)?;
        if let Some(h) = self.commit_seconds.get() {
            h.observe(started.elapsed().as_secs_f64());
        }
        let fxs = all.get_mut(group.first..).unwrap_or_default();
        let mut members_changed = false;
        self.superseded.note(fxs);
        self.index.apply(
            fxs.iter_mut()
                .flat_map(|fx| std::mem::take(&mut fx.key_changes)),
        );
        for fx in fxs.iter() {
            if let Some(c) = fx.compacted_to {
                self.compact_revision.store(c, Ordering::SeqCst);
            }
            // In memory only once written: a failed write must leave no trace.
            if let Some(id) = fx.cluster_id {
                self.cluster_id.store(id, Ordering::SeqCst);
            }
            members_changed |= fx.members_changed;
        }
        *self.once.lock().unwrap_or_else(|p| p.into_inner()) = group.window;
        // A replayed request reports the revision it was first applied at:
        // the store's revision never moves back.
        self.revision.fetch_max(group.revision, Ordering::SeqCst);
        if members_changed {
            let dir = self.members_from_db()?;
            *self.directory.write().unwrap_or_else(|p| p.into_inner()) = dir;
        }
        Ok(())
    }

    /// Execute `cmd`, carried by a log entry of Raft term `term`, into
    /// `batch`, on a store at revision `cur` (its writes may not all be in
    /// the database yet: see [`Group`]).
    fn execute(
        &self,
        cmd: &Command,
        term: u64,
        cur: i64,
        batch: &mut WriteBatch,
        fx: &mut Effects,
    ) -> Result<CommandResult, StoreError> {
        let meta = engine::cf(&self.db, CF_SM_META);
        let done = |revision, r| CommandResult {
            revision,
            outcome: Outcome::Done(r),
        };
        Ok(match cmd {
            Command::Txn(req) => {
                let mut tx = TxnCtx::new(self, cur + 1, batch).applied();
                match tx.txn(req, true) {
                    Ok(resp) => {
                        let rev = tx.commit(fx);
                        CommandResult {
                            revision: rev,
                            outcome: Outcome::Txn(Ok(resp)),
                        }
                    }
                    Err(TxnFail::Kv(e)) => {
                        tx.abort();
                        CommandResult {
                            revision: cur,
                            outcome: Outcome::Txn(Err(e)),
                        }
                    }
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
                    let mut tx = TxnCtx::new(self, cur + 1, batch).applied();
                    match tx.revoke(*id, self.lease_keys_raw(*id)?) {
                        Ok(()) => {}
                        Err(TxnFail::Store(e)) => return Err(e),
                        Err(TxnFail::Kv(e)) => return Err(StoreError::Corrupt(e.to_string())),
                    }
                    let rev = tx.commit(fx);
                    // The attachments and the lease go in the last write
                    // (see `TxnCtx::revoke`).
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
                let mut evicted = Vec::new();
                let result = if self.make_room(&mut evicted, fx)? {
                    self.execute_once(*id, cmd, term, cur, batch, fx)?
                } else {
                    // Remembering it would forget a young id, whose retry
                    // could then apply twice: refused, nothing applied.
                    CommandResult {
                        revision: cur,
                        outcome: refusal(cmd, KvError::TooManyRequests),
                    }
                };
                // Forgotten ids are written after the command's own writes,
                // so that a command that starts a write has the batch to
                // itself (see `TxnCtx::new`).
                for key in evicted {
                    batch.delete_cf(meta, key);
                }
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
                        inner => self.execute(inner, term, cur, batch, fx)?,
                    }
                }
            }
        })
    }

    /// Execute the command of a request id that the window has room for,
    /// and remember its result if it changed anything.
    fn execute_once(
        &self,
        id: (u64, u64),
        cmd: &Command,
        term: u64,
        cur: i64,
        batch: &mut WriteBatch,
        fx: &mut Effects,
    ) -> Result<CommandResult, StoreError> {
        let events_before = fx.events.len() + fx.in_history.as_ref().map_or(0, |h| h.count);
        let result = match cmd {
            Command::Once { .. } | Command::Batch(_) | Command::At { .. } => CommandResult {
                revision: cur,
                outcome: Outcome::Done(Err(KvError::InvalidArgument(
                    "request ids do not nest".into(),
                ))),
            },
            inner => self.execute(inner, term, cur, batch, fx)?,
        };
        let wrote = fx.events.len() + fx.in_history.as_ref().map_or(0, |h| h.count) > events_before;
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
        self.remember(id, &result, batch, fx)?;
        Ok(result)
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
