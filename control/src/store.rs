//! What the API server needs from the replicated store, and nothing more:
//! ranges at a revision, compare-and-swap transactions, and ordered watches.
//!
//! The master binary implements [`Store`] over the Raft-replicated MVCC
//! store; this crate never sees Raft or RocksDB.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use tokio::sync::mpsc;

/// A stored key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// Not stored as the API server would write it now (encrypted with a
    /// key that is no longer the first, say: [`crate::encryption`]): an
    /// update that changes nothing writes it anyway.
    pub stale: bool,
}

/// A condition of a transaction.
#[derive(Debug, Clone)]
pub enum Cond {
    /// The key does not exist.
    Absent(Vec<u8>),
    /// The key exists.
    Present(Vec<u8>),
    /// The key was last written at this revision.
    ModRevision(Vec<u8>, i64),
}

/// A write of a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// A page of a range read.
#[derive(Debug, Clone)]
pub struct Page {
    pub kvs: Vec<Kv>,
    /// More keys follow in the range.
    pub more: bool,
    /// The revision the page was read at.
    pub revision: i64,
}

/// One key's change in a watched revision.
#[derive(Debug, Clone)]
pub enum Change {
    Put { kv: Kv, prev: Option<Kv> },
    Delete { key: Vec<u8>, prev: Option<Kv> },
}

#[derive(Debug, Clone)]
pub enum WatchMsg {
    /// The changes of one revision, in order.
    Changes { revision: i64, changes: Vec<Change> },
    /// The start revision is compacted; the stream ends.
    Compacted { compact_revision: i64 },
    /// The stream failed and ends.
    Failed(String),
}

/// An ordered, gap-free stream of the changes in a key range.
pub struct WatchStream {
    /// The store's revision when the stream began.
    pub start_revision: i64,
    /// Every revision below this one has been delivered.
    pub progress: Arc<AtomicI64>,
    pub rx: mpsc::Receiver<WatchMsg>,
}

/// A request id: the same on every retry of one API call. The store
/// applies a transaction carrying it at most once; a retry of one that
/// committed is answered with the first outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64, pub u64);

impl RequestId {
    /// Parse 32 hex digits (the client's encoding). None for anything else.
    pub fn parse(s: &str) -> Option<RequestId> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let hi = u64::from_str_radix(&s[..16], 16).ok()?;
        let lo = u64::from_str_radix(&s[16..], 16).ok()?;
        Some(RequestId(hi, lo))
    }
}

/// A compare-and-swap transaction.
#[derive(Debug, Clone, Default)]
pub struct Txn {
    /// Every condition must hold, or nothing is written.
    pub conds: Vec<Cond>,
    /// Written atomically, at one new revision. The last op is the
    /// transaction's main key (the object): a replay reports that key.
    pub ops: Vec<Op>,
    /// Only a leader still in this Raft term may have it applied (a
    /// controller's write): the store refuses it once the term is over.
    pub fence: Option<u64>,
    /// Applied at most once (see [`RequestId`]).
    pub request: Option<RequestId>,
}

impl Txn {
    pub fn new(conds: Vec<Cond>, ops: Vec<Op>) -> Self {
        Txn {
            conds,
            ops,
            ..Default::default()
        }
    }
}

/// What became of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnResult {
    /// Written at this revision.
    Committed(i64),
    /// A condition did not hold: nothing was written.
    Failed,
    /// The request id was applied before (an earlier attempt of the same
    /// call committed): nothing was written now; `key` is the main key that
    /// earlier attempt wrote, at `revision`.
    Replayed { revision: i64, key: Vec<u8> },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No quorum, no leader, shutting down: another master may serve.
    #[error("{0}")]
    Unavailable(String),
    /// A fenced write whose leadership term is over (a deposed leader's
    /// controller): refused, nothing written.
    #[error("leadership of term {term} is over; the write was refused")]
    Fenced { term: u64 },
    #[error("required revision has been compacted (compacted to {compact_revision})")]
    Compacted { compact_revision: i64 },
    #[error("request is too large")]
    TooLarge,
    #[error("{0}")]
    Other(String),
}

/// The replicated store as the API server uses it.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Keys in `[start, end)` in key order, at `revision` (0: the latest),
    /// at most `limit` (0: no limit). Linearizable unless told otherwise.
    async fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        revision: i64,
        linearizable: bool,
    ) -> Result<Page, StoreError>;

    /// Apply the transaction's ops atomically if every condition holds.
    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError>;

    /// Follow `[start, end)` from revision `from` (0: from the next one).
    fn watch(&self, start: &[u8], end: &[u8], from: i64) -> WatchStream;

    /// The latest revision this master has applied.
    fn revision(&self) -> i64;

    /// The latest revision, linearizably (a read index): every write
    /// acknowledged before the call is at or below it, and this master has
    /// applied it.
    async fn current_revision(&self) -> Result<i64, StoreError>;

    /// Revisions below this are compacted away on this master.
    fn compact_revision(&self) -> i64;

    /// The largest value the store takes in one write.
    fn max_value_bytes(&self) -> usize;
}

pub use flotilla_proto::prefix_end;

/// The smallest key after `key`.
pub fn key_after(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logs_request_id_is_the_clients() {
        // The masters' request spans read the header the client writes.
        assert_eq!(
            flotilla_telemetry::request::HEADER,
            flotilla_objects::api::REQUEST_ID_HEADER
        );
    }

    #[test]
    fn request_ids_parse_the_clients_encoding_only() {
        assert_eq!(
            RequestId::parse("0123456789abcdef00000000000000ff"),
            Some(RequestId(0x0123_4567_89ab_cdef, 0xff))
        );
        assert_eq!(RequestId::parse(""), None);
        assert_eq!(RequestId::parse("xyz"), None);
        assert_eq!(RequestId::parse("0123456789abcdef00000000000000fg"), None);
    }
}
