//! Every request is answered or refused deliberately: structured calls of
//! every KV, Lease, Maintenance and Cluster method, and protobuf bytes
//! decoded as requests.

use super::strategies::*;
use super::*;

/// One call to a service.
#[derive(Debug, Clone)]
enum Op {
    Range(pb::RangeRequest, Rev),
    /// A put; its value this many bytes from the request size limit, if given.
    Put(pb::PutRequest, Option<i64>, LeaseSel),
    Delete(pb::DeleteRangeRequest),
    Txn(pb::TxnRequest),
    Compact(Rev, bool),
    Grant(i64, i64),
    Revoke(LeaseSel),
    TimeToLive(LeaseSel, bool),
    HashKv(Rev),
    /// Maintenance and cluster calls: which one, and a member id (0: this master's).
    Admin(u8, u64),
}

fn any_op() -> impl Strategy<Value = Op> {
    let near = prop_oneof![9 => Just(None), 1 => (-2i64..=3).prop_map(Some)];
    let ttl = prop_oneof![
        Just(0i64),
        -5i64..30,
        any::<i64>(),
        8_999_999_999i64..=9_000_000_001
    ];
    let id = prop_oneof![Just(0i64), -2i64..1000, any::<i64>()];
    prop_oneof![
        4 => (range_req(), rev()).prop_map(|(r, v)| Op::Range(r, v)),
        4 => (put_req(), near, lease()).prop_map(|(p, n, l)| Op::Put(p, n, l)),
        2 => delete_req().prop_map(Op::Delete),
        5 => txn_req().prop_map(Op::Txn),
        1 => (rev(), any::<bool>()).prop_map(|(r, p)| Op::Compact(r, p)),
        2 => (ttl, id).prop_map(|(t, i)| Op::Grant(t, i)),
        1 => lease().prop_map(Op::Revoke),
        1 => (lease(), any::<bool>()).prop_map(|(l, k)| Op::TimeToLive(l, k)),
        1 => rev().prop_map(Op::HashKv),
        1 => (0u8..9, prop_oneof![Just(0u64), any::<u64>()]).prop_map(|(w, i)| Op::Admin(w, i)),
    ]
}

/// Send `op`; then the store's revision must not have moved back.
async fn run(fx: &Fx, op: Op) -> Result<(), TestCaseError> {
    match op {
        Op::Range(mut r, v) => {
            r.revision = fx.rev(v);
            _ = ask!(fx, kv.range(r));
        }
        Op::Put(mut p, near, l) => {
            if let Some(d) = near {
                let max = fx.m.config().limits.max_request_bytes as i64;
                p.value = vec![b'v'; (max - p.key.len() as i64 + d).max(0) as usize];
            }
            if p.lease == 0 {
                p.lease = fx.lease_id(l);
            }
            _ = ask!(fx, kv.put(p));
        }
        Op::Delete(d) => _ = ask!(fx, kv.delete_range(d)),
        Op::Txn(t) => _ = ask!(fx, kv.txn(t)),
        Op::Compact(v, physical) => {
            let revision = fx.rev(v);
            _ = ask!(fx, kv.compact(pb::CompactionRequest { revision, physical }));
        }
        Op::Grant(ttl, id) => {
            if let Some(r) = ask!(fx, lease.lease_grant(pb::LeaseGrantRequest { ttl, id })) {
                prop_assert!(
                    r.id > 0 && r.ttl >= 2,
                    "granted {r:?} for ttl {ttl}, id {id}"
                );
                fx.granted.lock().unwrap().push(r.id);
            }
        }
        Op::Revoke(l) => {
            let id = fx.lease_id(l);
            _ = ask!(fx, lease.lease_revoke(pb::LeaseRevokeRequest { id }));
        }
        Op::TimeToLive(l, keys) => {
            let r = pb::LeaseTimeToLiveRequest {
                id: fx.lease_id(l),
                keys,
            };
            _ = ask!(fx, lease.lease_time_to_live(r));
        }
        Op::HashKv(v) => {
            let revision = fx.rev(v);
            _ = ask!(fx, maint.hash_kv(pb::HashKvRequest { revision }));
        }
        Op::Admin(which, id) => {
            let id = if id == 0 { fx.m.id() } else { id };
            match which {
                0 => _ = ask!(fx, maint.status(pb::StatusRequest {})),
                1 => _ = ask!(fx, maint.alarm(Default::default())),
                2 => _ = ask!(fx, lease.lease_leases(pb::LeaseLeasesRequest {})),
                3 => {
                    _ = ask!(
                        fx,
                        maint.move_leader(pb::MoveLeaderRequest { target_id: id })
                    )
                }
                4 => _ = ask!(fx, cluster.member_list(Default::default())),
                5 => _ = ask!(fx, cluster.member_remove(pb::MemberRemoveRequest { id })),
                6 => _ = ask!(fx, cluster.member_add(Default::default())),
                7 => {
                    _ = ask!(
                        fx,
                        cluster.member_update(pb::MemberUpdateRequest {
                            id,
                            ..Default::default()
                        })
                    )
                }
                _ => _ = ask!(fx, cluster.member_promote(pb::MemberPromoteRequest { id })),
            }
        }
    }
    let rev = fx.m.revision();
    prop_assert!(
        rev >= fx.seen.load(SeqCst),
        "the store's revision {rev} moved back"
    );
    Ok(())
}

#[test]
fn every_kv_lease_and_maintenance_request_is_answered_or_refused_deliberately() {
    let fx = Fx::start();
    fx.check(1500, prop::collection::vec(any_op(), 1..6), |ops| {
        ops.into_iter()
            .try_for_each(|op| fx.rt.block_on(run(&fx, op)))
    });
}

/// Bytes that may decode as a request of a kind (0-7): one encoded and then
/// overwritten, cut and extended at random, or random bytes.
fn raw() -> impl Strategy<Value = (u8, Vec<u8>)> {
    let encoded = prop_oneof![
        range_req().prop_map(|r| (0u8, r.encode_to_vec())),
        put_req().prop_map(|r| (1, r.encode_to_vec())),
        delete_req().prop_map(|r| (2, r.encode_to_vec())),
        txn_req().prop_map(|r| (3, r.encode_to_vec())),
        (num(), any::<bool>()).prop_map(|(revision, physical)| (
            4,
            pb::CompactionRequest { revision, physical }.encode_to_vec()
        )),
        (num(), num()).prop_map(|(ttl, id)| (5, pb::LeaseGrantRequest { ttl, id }.encode_to_vec())),
        num().prop_map(|id| (6, pb::LeaseRevokeRequest { id }.encode_to_vec())),
        (num(), any::<bool>())
            .prop_map(|(id, keys)| (7, pb::LeaseTimeToLiveRequest { id, keys }.encode_to_vec())),
    ];
    let edits = prop::collection::vec((any::<Index>(), any::<u8>()), 0..3);
    let cut = prop::option::weighted(0.2, any::<Index>());
    let tail = prop_oneof![3 => Just(vec![]), 1 => prop::collection::vec(any::<u8>(), 1..4)];
    prop_oneof![
        1 => (0u8..8, prop::collection::vec(any::<u8>(), 0..48)),
        4 => (encoded, edits, cut, tail).prop_map(|((k, mut b), e, cut, t)| {
            for (i, v) in e {
                if let Some(n) = b.len().checked_sub(1) {
                    b[i.index(n + 1)] = v;
                }
            }
            if let Some(c) = cut {
                b.truncate(c.index(b.len() + 1));
            }
            b.extend(t);
            (k, b)
        }),
    ]
}

/// Decode `b` as a request of `kind` and send it; false when it does not decode.
async fn run_raw(fx: &Fx, kind: u8, b: &[u8]) -> Result<bool, TestCaseError> {
    macro_rules! send {
        ($t:ident, $svc:ident . $m:ident) => {
            match pb::$t::decode(b) {
                Ok(req) => _ = ask!(fx, $svc.$m(req)),
                Err(_) => return Ok(false),
            }
        };
    }
    match kind {
        0 => send!(RangeRequest, kv.range),
        1 => send!(PutRequest, kv.put),
        2 => send!(DeleteRangeRequest, kv.delete_range),
        3 => send!(TxnRequest, kv.txn),
        4 => send!(CompactionRequest, kv.compact),
        5 => send!(LeaseGrantRequest, lease.lease_grant),
        6 => send!(LeaseRevokeRequest, lease.lease_revoke),
        _ => send!(LeaseTimeToLiveRequest, lease.lease_time_to_live),
    }
    Ok(true)
}

#[test]
fn protobuf_bytes_decoded_as_requests_are_answered_or_refused_deliberately() {
    let fx = Fx::start();
    let decoded = AtomicUsize::new(0);
    fx.check(3000, raw(), |(kind, b)| {
        if fx.rt.block_on(run_raw(&fx, kind, &b))? {
            decoded.fetch_add(1, SeqCst);
        }
        Ok(())
    });
    let decoded = decoded.into_inner();
    eprintln!("{decoded} of 3000 decoded");
    assert!(
        decoded > 900,
        "only {decoded} of 3000 inputs decoded: the property tests little"
    );
}
