//! The key-value model, etcd v3 semantics, in Flotilla's own types.
//!
//! The gRPC layer converts protobuf to these at the edge; the log carries
//! these; the store (`mvcc`) executes them.

use serde::{Deserialize, Serialize};

// Byte strings are `serde_bytes`: bincode writes them as it wrote a
// `Vec<u8>` (a length, then the bytes; the format fixtures check it) but
// reads and writes them in one copy rather than byte by byte.

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub lease: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Put,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventType,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    pub limit: i64,
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub serializable: bool,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    pub count: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    pub prev_kv: Option<KeyValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeRequest {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// What a comparison looks at, with the operand it compares against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    Lease(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub result: CompareResult,
    pub target: CompareTarget,
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

impl TxnRequest {
    /// A transaction of one operation, as Put and DeleteRange are carried.
    pub fn single(op: RequestOp) -> Self {
        TxnRequest {
            compare: vec![],
            success: vec![op],
            failure: vec![],
        }
    }

    /// True when no branch writes: such a transaction is served as a read.
    pub fn is_read_only(&self) -> bool {
        self.success
            .iter()
            .chain(self.failure.iter())
            .all(|op| match op {
                RequestOp::Range(_) => true,
                RequestOp::Txn(t) => t.is_read_only(),
                _ => false,
            })
    }
}

/// Errors of the key-value model. The messages are etcd's own, because etcd
/// clients match on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum KvError {
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted { compact_revision: i64 },
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: key is too large ({size} bytes; the limit is {limit})")]
    KeyTooLarge { size: usize, limit: usize },
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: {0}")]
    InvalidArgument(String),
    /// More distinct requests than can be remembered for a retry: refused
    /// rather than risking a double apply. (Last, so that the encoding of
    /// the variants before it does not change.)
    #[error("etcdserver: too many requests")]
    TooManyRequests,
}

/// Limits checked on every request before it reaches the log.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub max_key_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 1_572_864,
            max_txn_ops: 128,
            max_key_bytes: 32 * 1024,
        }
    }
}

impl Limits {
    fn check_key(&self, key: &[u8]) -> Result<(), KvError> {
        if key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        if key.len() > self.max_key_bytes {
            return Err(KvError::KeyTooLarge {
                size: key.len(),
                limit: self.max_key_bytes,
            });
        }
        Ok(())
    }

    pub(crate) fn check_range(&self, r: &RangeRequest) -> Result<(), KvError> {
        self.check_key(&r.key)?;
        if r.limit < 0 {
            return Err(KvError::InvalidArgument(
                "range limit must not be negative".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn check_put(&self, p: &PutRequest) -> Result<(), KvError> {
        self.check_key(&p.key)?;
        if p.ignore_value && !p.value.is_empty() {
            return Err(KvError::ValueProvided);
        }
        if p.ignore_lease && p.lease != 0 {
            return Err(KvError::LeaseProvided);
        }
        if p.key.len() + p.value.len() > self.max_request_bytes {
            return Err(KvError::RequestTooLarge);
        }
        Ok(())
    }

    pub(crate) fn check_delete(&self, d: &DeleteRangeRequest) -> Result<(), KvError> {
        self.check_key(&d.key)
    }

    /// Validate a transaction: sizes, operation count, and that no key is
    /// written twice (etcd's rule: a put may not overlap another put or a
    /// delete in the same branch, nested transactions included).
    pub(crate) fn check_txn(&self, t: &TxnRequest) -> Result<(), KvError> {
        if t.compare.len() > self.max_txn_ops
            || t.success.len() > self.max_txn_ops
            || t.failure.len() > self.max_txn_ops
        {
            return Err(KvError::TooManyOps);
        }
        for c in &t.compare {
            self.check_key(&c.key)?;
        }
        for branch in [&t.success, &t.failure] {
            for op in branch.iter() {
                match op {
                    RequestOp::Range(r) => self.check_range(r)?,
                    RequestOp::Put(p) => self.check_put(p)?,
                    RequestOp::DeleteRange(d) => self.check_delete(d)?,
                    RequestOp::Txn(n) => self.check_txn(n)?,
                }
            }
            let mut puts: Vec<&[u8]> = Vec::new();
            let mut dels: Vec<(&[u8], &[u8])> = Vec::new();
            collect_writes(branch, &mut puts, &mut dels);
            puts.sort();
            if puts.windows(2).any(|w| w[0] == w[1]) {
                return Err(KvError::DuplicateKey);
            }
            for p in &puts {
                if dels.iter().any(|(k, e)| in_range(p, k, e)) {
                    return Err(KvError::DuplicateKey);
                }
            }
        }
        Ok(())
    }
}

fn collect_writes<'a>(
    ops: &'a [RequestOp],
    puts: &mut Vec<&'a [u8]>,
    dels: &mut Vec<(&'a [u8], &'a [u8])>,
) {
    for op in ops {
        match op {
            RequestOp::Put(p) => puts.push(&p.key),
            RequestOp::DeleteRange(d) => dels.push((&d.key, &d.range_end)),
            RequestOp::Txn(t) => {
                // Either branch may run; both count against the parent's writes.
                collect_writes(&t.success, puts, dels);
                collect_writes(&t.failure, puts, dels);
            }
            RequestOp::Range(_) => {}
        }
    }
}

/// Whether `key` falls in etcd's range `[start, end)`: an empty end means the
/// single key `start`, an end of `\0` means every key from `start` on.
pub(crate) fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        key == start
    } else if end == [0] {
        key >= start
    } else {
        key >= start && key < end
    }
}

/// Whether some key from `first` to `last` (both included) is in `[start,
/// end)` (etcd range rules, as [`in_range`]).
pub(crate) fn range_meets(first: &[u8], last: &[u8], start: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        first <= start && start <= last
    } else if end == [0] {
        last >= start
    } else {
        last >= start && first < end
    }
}

/// Whether `[key, end)` holds one key at most: no end (etcd's "this key"),
/// or an end that is the key followed by a zero byte, the next key after it
/// (as the object API asks for one object). An end of a lone zero byte is
/// not one: it means every key from `key` on.
pub(crate) fn one_key(key: &[u8], end: &[u8]) -> bool {
    end.is_empty()
        || (end != [0]
            && end.len() == key.len() + 1
            && end.starts_with(key)
            && end.last() == Some(&0))
}

/// Approximate encoded size of a request, for the request size limit.
pub(crate) fn txn_size(t: &TxnRequest) -> usize {
    fn op_size(op: &RequestOp) -> usize {
        match op {
            RequestOp::Range(r) => r.key.len() + r.range_end.len() + 16,
            RequestOp::Put(p) => p.key.len() + p.value.len() + 16,
            RequestOp::DeleteRange(d) => d.key.len() + d.range_end.len() + 8,
            RequestOp::Txn(t) => txn_size(t),
        }
    }
    let cmp: usize = t
        .compare
        .iter()
        .map(|c| {
            c.key.len()
                + c.range_end.len()
                + match &c.target {
                    CompareTarget::Value(v) => v.len(),
                    _ => 8,
                }
        })
        .sum();
    cmp + t
        .success
        .iter()
        .chain(t.failure.iter())
        .map(op_size)
        .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_etcd_conventions() {
        assert!(in_range(b"a", b"a", b""));
        assert!(!in_range(b"ab", b"a", b""));
        assert!(in_range(b"zzz", b"a", b"\0"));
        assert!(in_range(b"ab", b"a", b"b"));
        assert!(!in_range(b"b", b"a", b"b"));
    }

    #[test]
    fn txn_validation_rejects_duplicate_and_overlapping_writes() {
        let l = Limits::default();
        let put = |k: &str| {
            RequestOp::Put(PutRequest {
                key: k.into(),
                ..Default::default()
            })
        };
        let t = TxnRequest {
            success: vec![put("a"), put("a")],
            ..Default::default()
        };
        assert_eq!(l.check_txn(&t), Err(KvError::DuplicateKey));
        let del = RequestOp::DeleteRange(DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            prev_kv: false,
        });
        let t = TxnRequest {
            success: vec![put("ab"), del],
            ..Default::default()
        };
        assert_eq!(l.check_txn(&t), Err(KvError::DuplicateKey));
        let t = TxnRequest {
            success: (0..129).map(|i| put(&format!("k{i}"))).collect(),
            ..Default::default()
        };
        assert_eq!(l.check_txn(&t), Err(KvError::TooManyOps));
        let t = TxnRequest {
            success: vec![put("a")],
            failure: vec![put("a")],
            ..Default::default()
        };
        assert_eq!(
            l.check_txn(&t),
            Ok(()),
            "the same key in different branches is fine"
        );
        assert_eq!(l.check_put(&PutRequest::default()), Err(KvError::EmptyKey));
    }
}
