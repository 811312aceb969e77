//! Strategies for etcd requests: keys (binary, empty, at the size limit),
//! range ends, revisions (relative to the store's), leases, enum values and
//! ints no enum has, and transactions nested in transactions.

use super::*;

/// A revision, chosen relative to the store's when the request is sent.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rev {
    Abs(i64),
    Latest(i64),
    Compacted(i64),
}

pub(crate) fn rev() -> impl Strategy<Value = Rev> {
    prop_oneof![
        Just(Rev::Abs(0)),
        prop_oneof![Just(i64::MIN), Just(i64::MAX), -3i64..0, any::<i64>()].prop_map(Rev::Abs),
        (-3i64..=2).prop_map(Rev::Latest),
        (-2i64..=2).prop_map(Rev::Compacted),
    ]
}

/// A revision or version inside a request that holds several.
pub(crate) fn num() -> impl Strategy<Value = i64> {
    prop_oneof![8 => Just(0i64), 4 => 1i64..300, 1 => -2i64..0, 1 => any::<i64>()]
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum LeaseSel {
    Fixed(i64),
    /// One granted earlier in this test, if any.
    Granted(Index),
}

pub(crate) fn lease() -> impl Strategy<Value = LeaseSel> {
    prop_oneof![
        2 => Just(LeaseSel::Fixed(0)),
        1 => prop_oneof![any::<i64>(), -2i64..4].prop_map(LeaseSel::Fixed),
        2 => any::<Index>().prop_map(LeaseSel::Granted),
    ]
}

const KEYS: &[&[u8]] = &[
    b"a",
    b"a/",
    b"a/b",
    b"b",
    b"\0",
    b"\0\xff",
    b"\xff",
    b"\xff\xff",
    b"z",
];

pub(crate) fn key() -> BoxedStrategy<Vec<u8>> {
    let max_key = flotilla_raftstore::kv::Limits::default().max_key_bytes;
    prop_oneof![
        60 => prop::sample::select(KEYS).prop_map(<[u8]>::to_vec),
        40 => prop::collection::vec(any::<u8>(), 1..6),
        1 => Just(vec![]),
        1 => (max_key - 1..=max_key + 1).prop_map(|n| vec![b'k'; n]),
    ]
    .boxed()
}

/// A range end: none, `\0` (every key from the start on), or a key.
pub(crate) fn end() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![2 => Just(vec![]), 1 => Just(vec![0]), 2 => key()]
}

pub(crate) fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(vec![]), prop::collection::vec(any::<u8>(), 0..24)]
}

/// A flag that makes most requests invalid when set.
pub(crate) fn rare() -> impl Strategy<Value = bool> + Clone {
    prop::bool::weighted(0.05)
}

/// An enum field: its values, and ints no enum has.
pub(crate) fn enum_int(n: i32) -> impl Strategy<Value = i32> {
    prop_oneof![200 => 0..n, 1 => any::<i32>(), 1 => Just(-1)]
}

pub(crate) fn range_req() -> impl Strategy<Value = pb::RangeRequest> {
    let filters = prop_oneof![4 => Just((0, 0, 0, 0)), 1 => (num(), num(), num(), num())];
    let sort = (enum_int(3), enum_int(5));
    let limit = prop_oneof![20 => Just(0i64), 10 => 1i64..4, 1 => -2i64..0, 1 => any::<i64>()];
    let revision = prop_oneof![8 => Just(0), 1 => num()];
    let flags = (rare(), rare(), rare());
    (key(), end(), limit, revision, sort, flags, filters).prop_map(
        |(key, e, limit, rev, s, f, m)| pb::RangeRequest {
            key,
            range_end: e,
            limit,
            revision: rev,
            sort_order: s.0,
            sort_target: s.1,
            serializable: f.0,
            keys_only: f.1,
            count_only: f.2,
            min_mod_revision: m.0,
            max_mod_revision: m.1,
            min_create_revision: m.2,
            max_create_revision: m.3,
        },
    )
}

pub(crate) fn put_req() -> impl Strategy<Value = pb::PutRequest> {
    let lease = prop_oneof![12 => Just(0i64), 1 => any::<i64>()];
    (key(), value(), lease, (any::<bool>(), rare(), rare())).prop_map(|(key, value, lease, f)| {
        pb::PutRequest {
            key,
            value,
            lease,
            prev_kv: f.0,
            ignore_value: f.1,
            ignore_lease: f.2,
        }
    })
}

pub(crate) fn delete_req() -> impl Strategy<Value = pb::DeleteRangeRequest> {
    (key(), end(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| pb::DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

pub(crate) fn compare() -> impl Strategy<Value = pb::Compare> {
    let operand = prop_oneof![
        Just(None),
        num().prop_map(|v| Some(U::Version(v))),
        num().prop_map(|v| Some(U::CreateRevision(v))),
        num().prop_map(|v| Some(U::ModRevision(v))),
        value().prop_map(|v| Some(U::Value(v))),
        num().prop_map(|v| Some(U::Lease(v))),
    ];
    (enum_int(4), enum_int(5), key(), end(), operand).prop_map(|(result, target, key, e, u)| {
        pb::Compare {
            result,
            target,
            key,
            range_end: e,
            target_union: u,
        }
    })
}

pub(crate) fn txn_req() -> BoxedStrategy<pb::TxnRequest> {
    let leaf = prop_oneof![
        40 => range_req().prop_map(|r| Some(R::RequestRange(r))),
        40 => put_req().prop_map(|p| Some(R::RequestPut(p))),
        20 => delete_req().prop_map(|d| Some(R::RequestDeleteRange(d))),
        1 => Just(None),
    ];
    let txn = |op: BoxedStrategy<pb::RequestOp>| {
        let ops = prop::collection::vec(op, 0..3);
        (prop::collection::vec(compare(), 0..3), ops.clone(), ops).prop_map(
            |(compare, success, failure)| pb::TxnRequest {
                compare,
                success,
                failure,
            },
        )
    };
    let op = leaf
        .prop_map(|request| pb::RequestOp { request })
        .prop_recursive(2, 8, 3, move |op| {
            txn(op).prop_map(|t| pb::RequestOp {
                request: Some(R::RequestTxn(t)),
            })
        });
    txn(op.boxed()).boxed()
}
