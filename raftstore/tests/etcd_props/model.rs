//! Reads at every revision agree with a small model after random puts,
//! deletes and transactions.

use super::strategies::rare;
use super::*;

/// Keys and values of the model's cases, under a prefix of each case's own.
const SUFFIXES: &[&[u8]] = &[b"a", b"b", b"b\0", b"c", b"\xff"];
const VALUES: &[&[u8]] = &[b"", b"x", b"yy", b"\0"];

/// The model: every live key's latest version.
type Model = BTreeMap<Vec<u8>, mvccpb::KeyValue>;

/// An op of the model's transactions.
#[derive(Debug, Clone)]
enum MOp {
    /// Key and value (indexes), prev_kv, ignore_value.
    Put(usize, usize, bool, bool),
    /// Key, range end (0: the key alone, 1: up to "c", 2: the whole case), prev_kv.
    Del(usize, usize, bool),
    /// A read in the transaction: key, range end (as for a delete).
    Get(usize, usize),
}

/// Compares, success and failure: a single write when there are none and
/// one op (sent as a Put or a DeleteRange then), a transaction otherwise.
/// A compare is a key (index), the case's whole range or that key alone,
/// target, result, and operand: a version, a revision after the case's
/// start, or a value (index).
type MTxn = (Vec<(usize, bool, i32, i32, i64)>, Vec<MOp>, Vec<MOp>);

fn mtxn() -> impl Strategy<Value = MTxn> {
    let k = 0..SUFFIXES.len();
    let put = (k.clone(), 0..VALUES.len(), any::<bool>(), rare());
    let del = (k.clone(), 0..3usize, any::<bool>());
    let w = prop_oneof![
        3 => put.prop_map(|(k, v, p, i)| MOp::Put(k, v, p, i)),
        1 => del.prop_map(|(k, e, p)| MOp::Del(k, e, p)),
        1 => (k.clone(), 0..3usize).prop_map(|(k, e)| MOp::Get(k, e)),
    ];
    let cmp = (k, prop::bool::weighted(0.2), 0..4i32, 0..4i32, -1i64..6);
    let ws = prop::collection::vec(w.clone(), 0..3);
    prop_oneof![
        2 => w.prop_map(|w| (vec![], vec![w], vec![])),
        1 => (prop::collection::vec(cmp, 0..3), ws.clone(), ws),
    ]
}

fn live(m: &Model, k: &[u8], e: &[u8]) -> Vec<mvccpb::KeyValue> {
    m.values()
        .filter(|kv| in_range(&kv.key, k, e))
        .cloned()
        .collect()
}

/// Whether etcd refuses a branch before running it: a key put twice, put
/// and deleted, or a value given to a put that keeps the old one.
fn refused(ops: &[pb::RequestOp]) -> bool {
    let reqs: Vec<_> = ops.iter().filter_map(|o| o.request.as_ref()).collect();
    reqs.iter().enumerate().any(|(i, a)| {
        let R::RequestPut(p) = a else { return false };
        (p.ignore_value && !p.value.is_empty())
            || reqs.iter().enumerate().any(|(j, b)| match b {
                R::RequestPut(q) => i != j && q.key == p.key,
                R::RequestDeleteRange(d) => in_range(&p.key, &d.key, &d.range_end),
                _ => false,
            })
    })
}

/// What the model expects of a branch at revision `rev`: the new state and
/// each op's response (without a header), or `None` for a refusal.
fn branch(m: &Model, ops: &[pb::RequestOp], rev: i64) -> Option<(Model, Vec<Rsp>)> {
    let (mut m, mut out) = (m.clone(), Vec::new());
    for op in ops {
        out.push(match op.request.clone()? {
            R::RequestPut(p) => {
                let prev = m.get(&p.key).cloned();
                let mut kv = prev.clone().unwrap_or(mvccpb::KeyValue {
                    create_revision: rev,
                    ..Default::default()
                });
                if !p.ignore_value {
                    kv.value = p.value;
                } else if prev.is_none() {
                    return None;
                }
                (kv.key, kv.mod_revision, kv.version) = (p.key.clone(), rev, kv.version + 1);
                m.insert(p.key, kv);
                Rsp::ResponsePut(pb::PutResponse {
                    header: None,
                    prev_kv: prev.filter(|_| p.prev_kv),
                })
            }
            R::RequestDeleteRange(d) => {
                let gone = live(&m, &d.key, &d.range_end);
                m.retain(|k, _| !in_range(k, &d.key, &d.range_end));
                let deleted = gone.len() as i64;
                let prev_kvs = if d.prev_kv { gone } else { vec![] };
                Rsp::ResponseDeleteRange(pb::DeleteRangeResponse {
                    header: None,
                    deleted,
                    prev_kvs,
                })
            }
            R::RequestRange(r) => {
                let kvs = live(&m, &r.key, &r.range_end);
                let count = kvs.len() as i64;
                Rsp::ResponseRange(pb::RangeResponse {
                    header: None,
                    kvs,
                    more: false,
                    count,
                })
            }
            R::RequestTxn(_) => return None,
        });
    }
    Some((m, out))
}

/// Whether a compare holds in the model (etcd's rules: every key in its
/// range must satisfy it; no key compares as an absent one, but by value).
fn holds(m: &Model, c: &pb::Compare) -> bool {
    let kvs = live(m, &c.key, &c.range_end);
    if kvs.is_empty() && c.target == 3 {
        return false;
    }
    let kvs = if kvs.is_empty() {
        vec![mvccpb::KeyValue::default()]
    } else {
        kvs
    };
    kvs.iter().all(|kv| {
        let ord = match c.target_union.clone() {
            Some(U::Version(v)) => kv.version.cmp(&v),
            Some(U::CreateRevision(v)) => kv.create_revision.cmp(&v),
            Some(U::ModRevision(v)) => kv.mod_revision.cmp(&v),
            Some(U::Value(v)) => kv.value.cmp(&v),
            other => unreachable!("the model compares no {other:?}"),
        };
        use std::cmp::Ordering::*;
        matches!(
            (c.result, ord),
            (0, Equal) | (1, Greater) | (2, Less) | (3, Less | Greater)
        )
    })
}

/// `t` on the keys under `p` (which end at `pe`), from the case's start `base`.
fn txn_of(p: &[u8], pe: &[u8], base: i64, (c, s, f): &MTxn) -> pb::TxnRequest {
    let key = |i: usize| [p, SUFFIXES[i]].concat();
    let ops = |ws: &[MOp]| -> Vec<pb::RequestOp> {
        let op = |w: &MOp| match *w {
            MOp::Put(k, v, prev_kv, ignore_value) => {
                let value = VALUES[v].to_vec();
                R::RequestPut(pb::PutRequest {
                    key: key(k),
                    value,
                    prev_kv,
                    ignore_value,
                    ..Default::default()
                })
            }
            MOp::Get(k, e) => {
                let range_end = [vec![], key(3), pe.to_vec()][e].clone();
                R::RequestRange(pb::RangeRequest {
                    key: key(k),
                    range_end,
                    ..Default::default()
                })
            }
            MOp::Del(k, e, prev_kv) => {
                let range_end = [vec![], key(3), pe.to_vec()][e].clone();
                R::RequestDeleteRange(pb::DeleteRangeRequest {
                    key: key(k),
                    range_end,
                    prev_kv,
                })
            }
        };
        ws.iter()
            .map(|w| pb::RequestOp {
                request: Some(op(w)),
            })
            .collect()
    };
    let compare = c.iter().map(|&(k, all, target, result, x)| {
        let target_union = Some(match target {
            0 => U::Version(x),
            1 => U::CreateRevision(base + x),
            2 => U::ModRevision(base + x),
            _ => U::Value(VALUES[x.rem_euclid(4) as usize].to_vec()),
        });
        let range_end = if all { pe.to_vec() } else { vec![] };
        pb::Compare {
            key: key(k),
            range_end,
            target,
            result,
            target_union,
        }
    });
    pb::TxnRequest {
        compare: compare.collect(),
        success: ops(s),
        failure: ops(f),
    }
}

/// Send `t`: a lone write as a Put or DeleteRange call (its answer as a
/// transaction's), anything else as a Txn.
async fn send_txn(
    fx: &Fx,
    t: pb::TxnRequest,
) -> Result<Result<pb::TxnResponse, Status>, TestCaseError> {
    let one = |header, r| {
        let responses = vec![pb::ResponseOp { response: Some(r) }];
        pb::TxnResponse {
            header,
            succeeded: true,
            responses,
        }
    };
    let lone = match (&t.compare[..], &t.success[..], &t.failure[..]) {
        ([], [op], []) => op.request.clone(),
        _ => None,
    };
    let mut kv = fx.kv.clone();
    Ok(match lone {
        Some(R::RequestPut(p)) => {
            let r = fx.call("put", async move { kv.put(Request::new(p)).await });
            r.await?.map(|r| one(r.header, Rsp::ResponsePut(r)))
        }
        Some(R::RequestDeleteRange(d)) => {
            let r = fx.call("delete_range", async move {
                kv.delete_range(Request::new(d)).await
            });
            r.await?.map(|r| one(r.header, Rsp::ResponseDeleteRange(r)))
        }
        _ => {
            fx.call("txn", async move { kv.txn(Request::new(t)).await })
                .await?
        }
    })
}

/// Run `txns` on a case's own keys, checking every answer against the
/// model; then read the keys at every revision the case made.
async fn model_case(fx: &Fx, n: usize, txns: Vec<MTxn>, opts: MRange) -> Result<(), TestCaseError> {
    let (p, pe) = (
        format!("m/{n}/").into_bytes(),
        format!("m/{n}0").into_bytes(),
    );
    let base = fx.m.revision();
    let (mut m, mut rev) = (Model::new(), base);
    let mut history = vec![(base, m.clone())];
    for mt in txns {
        let t = txn_of(&p, &pe, base, &mt);
        let ok = t.compare.iter().all(|c| holds(&m, c));
        let allowed = !refused(&t.success) && !refused(&t.failure);
        let want = allowed.then(|| branch(&m, if ok { &t.success } else { &t.failure }, rev + 1));
        let got = send_txn(fx, t).await?;
        let Some((next, rsps)) = want.flatten() else {
            prop_assert!(
                matches!(&got, Err(s) if s.code() == Code::InvalidArgument),
                "{mt:?}: {got:?}"
            );
            continue;
        };
        let got = got.map_err(bad)?;
        let wrote = next != m || rsps.iter().any(|r| matches!(r, Rsp::ResponsePut(_)));
        rev += i64::from(wrote);
        prop_assert_eq!(got.header.map(|h| h.revision), Some(rev), "{:?}", mt);
        prop_assert_eq!(got.succeeded, ok, "{:?}", mt);
        let got = got.responses.into_iter().filter_map(|r| match r.response? {
            Rsp::ResponsePut(p) => Some(Rsp::ResponsePut(pb::PutResponse { header: None, ..p })),
            Rsp::ResponseRange(r) => {
                Some(Rsp::ResponseRange(pb::RangeResponse { header: None, ..r }))
            }
            Rsp::ResponseDeleteRange(d) => {
                Some(Rsp::ResponseDeleteRange(pb::DeleteRangeResponse {
                    header: None,
                    ..d
                }))
            }
            _ => None,
        });
        prop_assert_eq!(got.collect::<Vec<_>>(), rsps, "{:?}", mt);
        m = next;
        if wrote {
            history.push((rev, m.clone()));
        }
    }
    // Every revision the case made, read with the case's range options.
    let (limit, sort_order, sort_target, keys_only, count_only, f) = opts;
    let f = f.map(|d| d.map_or(0, |d| base + d));
    for (at, m) in history.iter().chain([&(0, m)]) {
        let r = pb::RangeRequest {
            key: p.clone(),
            range_end: pe.clone(),
            revision: *at,
            limit,
            sort_order,
            sort_target,
            keys_only,
            count_only,
            serializable: false,
            min_mod_revision: f[0],
            max_mod_revision: f[1],
            min_create_revision: f[2],
            max_create_revision: f[3],
        };
        let got = ask!(fx, kv.range(r.clone())).ok_or_else(|| bad(format!("refused: {r:?}")))?;
        // As etcd: count before the filters, no keys with count_only, the
        // filters, the sort (keys by default; a target other than the key
        // ascends by default; ties in key order, as this store sorts
        // stably, where etcd may answer them in any order), the limit,
        // then no values with keys_only.
        let mut kvs = live(m, &p, &pe);
        let count = kvs.len() as i64;
        if count_only {
            kvs.clear();
        }
        let [min_mod, max_mod, min_create, max_create] = f;
        kvs.retain(|kv| {
            let within = |v, min, max| (min == 0 || v >= min) && (max == 0 || v <= max);
            within(kv.mod_revision, min_mod, max_mod)
                && within(kv.create_revision, min_create, max_create)
        });
        let descend = sort_order == 2;
        if sort_order != 0 || sort_target != 0 {
            kvs.sort_by(|a, b| {
                let o = match sort_target {
                    0 => a.key.cmp(&b.key),
                    1 => a.version.cmp(&b.version),
                    2 => a.create_revision.cmp(&b.create_revision),
                    3 => a.mod_revision.cmp(&b.mod_revision),
                    _ => a.value.cmp(&b.value),
                };
                if descend {
                    o.reverse()
                } else {
                    o
                }
            });
        }
        let more = limit > 0 && kvs.len() > limit as usize;
        kvs.truncate(if more { limit as usize } else { kvs.len() });
        if keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        let want = pb::RangeResponse {
            header: got.header,
            kvs,
            more,
            count,
        };
        prop_assert_eq!(got, want, "{:?}", r);
    }
    Ok(())
}

/// Range options: limit, sort order and target, keys_only, count_only, and
/// the min and max mod and create revision filters (from the case's start).
type MRange = (i64, i32, i32, bool, bool, [Option<i64>; 4]);

fn mrange() -> impl Strategy<Value = MRange> {
    let f = || prop::option::weighted(0.2, -1i64..14);
    let flags = (any::<bool>(), prop::bool::weighted(0.2));
    let filters = [f(), f(), f(), f()];
    (0i64..4, 0..3i32, 0..5i32, flags, filters).prop_map(|(l, o, t, (k, c), f)| (l, o, t, k, c, f))
}

#[test]
fn reads_at_every_revision_agree_with_a_model_after_random_writes() {
    let fx = Fx::start();
    let n = AtomicUsize::new(0);
    let case = (prop::collection::vec(mtxn(), 1..12), mrange());
    fx.check(800, case, |(txns, opts)| {
        fx.rt
            .block_on(model_case(&fx, n.fetch_add(1, SeqCst), txns, opts))
    });
}

/// Found by the model above: a count_only range with a limit below the
/// count answered `more`, where etcd answers no keys and so none more.
#[test]
fn a_count_only_range_has_no_more_keys_whatever_its_limit() {
    let fx = Fx::start();
    let got = fx.rt.block_on(async {
        for key in [b"c/1", b"c/2"] {
            ask!(
                fx,
                kv.put(pb::PutRequest {
                    key: key.to_vec(),
                    ..Default::default()
                })
            );
        }
        let (key, range_end) = (b"c/".to_vec(), b"c0".to_vec());
        let r = pb::RangeRequest {
            key,
            range_end,
            limit: 1,
            count_only: true,
            ..Default::default()
        };
        let t = pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(R::RequestRange(r.clone())),
            }],
            ..Default::default()
        };
        let in_txn =
            match ask!(fx, kv.txn(t)).and_then(|t| t.responses.into_iter().next()?.response) {
                Some(Rsp::ResponseRange(r)) => r,
                other => return fail(format!("{other:?}")),
            };
        Ok([ask!(fx, kv.range(r)).unwrap_or_default(), in_txn])
    });
    for r in got.expect("answered") {
        assert_eq!((r.kvs.len(), r.more, r.count), (0, false, 2), "{r:?}");
    }
}
