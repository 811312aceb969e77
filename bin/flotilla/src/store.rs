//! The replicated store as the control plane sees it: [`flotilla_control::Store`]
//! implemented over a running master, in process (no network hop).

use std::time::Duration;

use flotilla_control::store::{
    Change, Cond, Kv, Op, Page, Store, StoreError, Txn, TxnResult, WatchMsg, WatchStream,
};
use flotilla_raftstore::error::{Error as RaftError, RangeError};
use flotilla_raftstore::kv::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, EventType, KeyValue, KvError,
    PutRequest, RangeRequest, RequestOp, ResponseOp, TxnRequest,
};
use flotilla_raftstore::types::{Command, Outcome};
use flotilla_raftstore::watch::{follow_map, WatchItem};
use flotilla_raftstore::Master;

/// The object API's view of one master.
pub struct MasterStore {
    master: Master,
}

impl MasterStore {
    pub fn new(master: Master) -> Self {
        MasterStore { master }
    }
}

fn kv(k: KeyValue) -> Kv {
    Kv {
        key: k.key,
        value: k.value,
        create_revision: k.create_revision,
        mod_revision: k.mod_revision,
        stale: false,
    }
}

fn raft_err(e: RaftError) -> StoreError {
    match e {
        RaftError::NoLeader
        | RaftError::Timeout
        | RaftError::Unavailable(_)
        | RaftError::Kv(KvError::TooManyRequests) => StoreError::Unavailable(e.to_string()),
        RaftError::Kv(KvError::Compacted { compact_revision }) => {
            StoreError::Compacted { compact_revision }
        }
        RaftError::Kv(KvError::RequestTooLarge) => StoreError::TooLarge,
        other => StoreError::Other(other.to_string()),
    }
}

fn range_err(e: RangeError) -> StoreError {
    match e {
        RangeError::Kv(KvError::Compacted { compact_revision }) => {
            StoreError::Compacted { compact_revision }
        }
        other => StoreError::Other(other.to_string()),
    }
}

fn cond(c: Cond) -> Compare {
    let (key, result, target) = match c {
        Cond::Absent(k) => (k, CompareResult::Equal, CompareTarget::Create(0)),
        Cond::Present(k) => (k, CompareResult::Greater, CompareTarget::Create(0)),
        Cond::ModRevision(k, r) => (k, CompareResult::Equal, CompareTarget::Mod(r)),
    };
    Compare {
        result,
        target,
        key,
        range_end: vec![],
    }
}

fn op(o: Op) -> RequestOp {
    match o {
        Op::Put(key, value) => RequestOp::Put(PutRequest {
            key,
            value,
            ..Default::default()
        }),
        Op::Delete(key) => RequestOp::DeleteRange(DeleteRangeRequest {
            key,
            range_end: vec![],
            prev_kv: false,
        }),
    }
}

fn to_msg(item: WatchItem) -> WatchMsg {
    match item {
        WatchItem::Events { revision, events } => WatchMsg::Changes {
            revision,
            changes: events
                .into_iter()
                .map(|e| match e.kind {
                    EventType::Put => Change::Put {
                        kv: kv(e.kv),
                        prev: e.prev_kv.map(kv),
                    },
                    EventType::Delete => Change::Delete {
                        key: e.kv.key,
                        prev: e.prev_kv.map(kv),
                    },
                })
                .collect(),
        },
        WatchItem::Compacted { compact_revision } => WatchMsg::Compacted { compact_revision },
        WatchItem::Failed(m) => WatchMsg::Failed(m),
    }
}

#[async_trait::async_trait]
impl Store for MasterStore {
    async fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        revision: i64,
        linearizable: bool,
    ) -> Result<Page, StoreError> {
        if linearizable {
            self.master.linearize().await.map_err(raft_err)?;
        }
        let req = RangeRequest {
            key: start.to_vec(),
            range_end: end.to_vec(),
            limit: limit as i64,
            revision,
            ..Default::default()
        };
        let (resp, now) = self.master.range_now(req).await.map_err(range_err)?;
        // The items are as of the revision read at.
        let rev = if revision > 0 { revision } else { now };
        Ok(Page {
            kvs: resp.kvs.into_iter().map(kv).collect(),
            more: resp.more,
            revision: rev,
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        // The main key (the last op's), read back in the same transaction,
        // so that a replay of a request id says which object it wrote.
        let main = match txn.ops.last() {
            Some(Op::Put(k, _)) | Some(Op::Delete(k)) => Some(k.clone()),
            None => None,
        };
        let mut success: Vec<RequestOp> = txn.ops.into_iter().map(op).collect();
        if let Some(k) = &main {
            success.push(RequestOp::Range(RangeRequest {
                key: k.clone(),
                keys_only: true,
                ..Default::default()
            }));
        }
        let t = TxnRequest {
            compare: txn.conds.into_iter().map(cond).collect(),
            success,
            failure: vec![],
        };
        // A fenced write is refused by the state machine itself once its
        // term is over (see `Command::Fenced`), on every master alike.
        let cmd = match txn.fence {
            Some(term) => Command::Fenced {
                term,
                cmd: Box::new(Command::Txn(t)),
            },
            None => Command::Txn(t),
        };
        let (r, replayed) = match txn.request {
            Some(id) => self
                .master
                .propose_once((id.0, id.1), cmd)
                .await
                .map_err(raft_err)?,
            None => (self.master.propose(cmd).await.map_err(raft_err)?, false),
        };
        match r.outcome {
            Outcome::Fenced { term } => Err(StoreError::Fenced { term }),
            Outcome::Txn(Ok(t)) if !t.succeeded => Ok(TxnResult::Failed),
            Outcome::Txn(Ok(t)) if replayed => {
                // The key the first application wrote (its read-back),
                // not this attempt's: a generated name differs per attempt.
                let key = match t.responses.last() {
                    Some(ResponseOp::Range(r)) => r.kvs.first().map(|kv| kv.key.clone()),
                    _ => None,
                };
                Ok(TxnResult::Replayed {
                    revision: r.revision,
                    key: key.or(main).unwrap_or_default(),
                })
            }
            Outcome::Txn(Ok(_)) => Ok(TxnResult::Committed(r.revision)),
            Outcome::Txn(Err(e)) => Err(raft_err(RaftError::Kv(e))),
            other => Err(StoreError::Other(format!("unexpected outcome {other:?}"))),
        }
    }

    fn watch(&self, start: &[u8], end: &[u8], from: i64) -> WatchStream {
        // One channel from the follower to the reader: its progress counter
        // then says exactly what the reader has seen once the channel is empty.
        let f = follow_map(&self.master, start.to_vec(), end.to_vec(), from, 64, to_msg);
        WatchStream {
            start_revision: f.start_revision,
            progress: f.next,
            rx: f.rx,
        }
    }

    fn revision(&self) -> i64 {
        self.master.revision()
    }

    async fn current_revision(&self) -> Result<i64, StoreError> {
        // The read index, applied here: the store's revision now covers it.
        self.master.linearize().await.map_err(raft_err)?;
        Ok(self.master.revision())
    }

    fn compact_revision(&self) -> i64 {
        self.master.compact_revision()
    }

    fn max_value_bytes(&self) -> usize {
        // Room for the key and the request's framing.
        self.master
            .config()
            .limits
            .max_request_bytes
            .saturating_sub(4096)
    }
}

/// How long the master waits between attempts to create the namespaces
/// that always exist.
pub const BOOTSTRAP_RETRY: Duration = Duration::from_millis(500);
