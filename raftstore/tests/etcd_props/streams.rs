//! Watch and keep-alive streams, over loopback gRPC: every request answered,
//! in order, and only what a watch asked for delivered.

use super::strategies::*;
use super::*;

/// Watches to create (start revisions chosen when sent), a compaction
/// before them, the value then put at "a", one of them to cancel (by the
/// id it asks for, with the creates; and an open one, later), and leases
/// to keep alive.
type StreamCase = (
    Vec<(pb::WatchCreateRequest, Rev)>,
    Option<Rev>,
    Vec<u8>,
    Index,
    Vec<LeaseSel>,
);

fn stream_case() -> impl Strategy<Value = StreamCase> {
    let filters = prop::collection::vec(enum_int(2), 0..3);
    let id = prop_oneof![3 => Just(0i64), 2 => 1i64..4, 1 => any::<i64>()];
    let create = (key(), end(), rev(), filters, any::<[bool; 3]>(), id).prop_map(|c| {
        let (key, range_end, r, filters, [progress_notify, prev_kv, fragment], watch_id) = c;
        let start_revision = 0;
        let w = pb::WatchCreateRequest {
            key,
            range_end,
            start_revision,
            progress_notify,
            filters,
            prev_kv,
            watch_id,
            fragment,
        };
        (w, r)
    });
    let compact = prop_oneof![4 => Just(None), 1 => rev().prop_map(Some)];
    let creates = prop::collection::vec(create, 1..5);
    let alive = prop::collection::vec(lease(), 0..3);
    (creates, compact, value(), any::<Index>(), alive)
}

/// Open watches: the request, and the revision last delivered (at first,
/// the one before the start).
type Watches = BTreeMap<i64, (pb::WatchCreateRequest, i64)>;

/// Check the events of `r` against what its watch asked for; note those of "a".
fn delivered(
    ws: &mut Watches,
    r: &pb::WatchResponse,
    a: &mut Vec<(i64, mvccpb::Event)>,
) -> Result<(), TestCaseError> {
    let Some(rev) = r
        .events
        .first()
        .map(|e| e.kv.clone().unwrap_or_default().mod_revision)
    else {
        return Ok(());
    };
    let Some((w, last)) = ws.get_mut(&r.watch_id) else {
        return fail(format!("events for a watch that is not open: {r:?}"));
    };
    prop_assert!(rev > *last, "events at {} after {}: {:?}", rev, last, w);
    *last = rev;
    for e in &r.events {
        let kv = e.kv.clone().unwrap_or_default();
        prop_assert_eq!(kv.mod_revision, rev, "one revision per response: {:?}", r);
        prop_assert!(
            in_range(&kv.key, &w.key, &w.range_end),
            "out of range: {e:?} for {w:?}"
        );
        prop_assert!(!w.filters.contains(&e.r#type), "filtered: {e:?} for {w:?}");
        prop_assert!(
            w.prev_kv || e.prev_kv.is_none(),
            "a prev_kv not asked for: {w:?}"
        );
        if kv.key == b"a" {
            a.push((r.watch_id, e.clone()));
        }
    }
    Ok(())
}

/// Watches created, a write, cancels and a progress request; then keep-alives.
async fn streams(
    fx: &Fx,
    (creates, compact, value, cancel, alive): StreamCase,
) -> Result<(), TestCaseError> {
    use pb::watch_request::RequestUnion as W;
    if let Some(r) = compact {
        let revision = fx.rev(r);
        ask!(
            fx,
            kv.compact(pb::CompactionRequest {
                revision,
                physical: false
            })
        );
    }
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let send = |u| {
        tx.send(pb::WatchRequest {
            request_union: Some(u),
        })
    };
    let mut client = pb::watch_client::WatchClient::new(fx.channel.clone());
    let rx = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut rx = client.watch(rx).await.map_err(bad)?.into_inner();
    let (mut ws, mut a) = (Watches::new(), Vec::new());
    macro_rules! next {
        () => {{
            let r = rx
                .message()
                .await
                .map_err(bad)?
                .ok_or_else(|| bad("the watch stream ended"))?;
            delivered(&mut ws, &r, &mut a)?;
            if r.canceled && !r.created {
                ws.remove(&r.watch_id);
            }
            r
        }};
    }
    // The creates at once, and maybe at once a cancel of one of them by
    // its id: every create is answered, in order, before the cancel.
    let mut sent = Vec::new();
    for (mut w, r) in creates {
        w.start_revision = fx.rev(r);
        let _ = send(W::CreateRequest(w.clone())).await;
        sent.push(w);
    }
    let early = sent[cancel.index(sent.len())].watch_id;
    if early != 0 {
        let _ = send(W::CancelRequest(pb::WatchCancelRequest { watch_id: early })).await;
    }
    for w in sent {
        // (Events of the watches created before may come in between.)
        let r = loop {
            match next!() {
                r if r.created => break r,
                _ => {}
            }
        };
        prop_assert!(
            w.watch_id == 0 || r.watch_id == w.watch_id,
            "{r:?} for {w:?}"
        );
        if !r.canceled {
            let last = w.start_revision.max(1) - 1;
            ws.insert(r.watch_id, (w, last));
        }
    }
    // Every open watch that asked for this put of "a" gets it, as a read
    // of "a" then shows it (and the version before, if asked for).
    let get = || pb::RangeRequest {
        key: b"a".to_vec(),
        ..Default::default()
    };
    let before = ask!(fx, kv.range(get())).and_then(|r| r.kvs.into_iter().next());
    let put = pb::PutRequest {
        key: b"a".to_vec(),
        value,
        ..Default::default()
    };
    let at = ask!(fx, kv.put(put))
        .and_then(|p| p.header)
        .map_or(0, |h| h.revision);
    let after = ask!(fx, kv.range(get())).and_then(|r| r.kvs.into_iter().next());
    let wants = |w: &pb::WatchCreateRequest, last| {
        in_range(b"a", &w.key, &w.range_end) && !w.filters.contains(&0) && last < at
    };
    let expect: Vec<i64> = ws
        .iter()
        .filter(|(_, (w, l))| wants(w, *l))
        .map(|(id, _)| *id)
        .collect();
    let event = |a: &[(i64, mvccpb::Event)], id| {
        a.iter()
            .find(|(i, e)| *i == id && e.kv.as_ref().is_some_and(|kv| kv.mod_revision == at))
            .cloned()
    };
    while expect
        .iter()
        .any(|&id| ws.contains_key(&id) && event(&a, id).is_none())
    {
        next!();
    }
    *fx.stats
        .lock()
        .unwrap()
        .entry("watches given the put".into())
        .or_default() += expect.len();
    for (id, (w, _)) in ws.iter().filter(|(id, _)| expect.contains(id)) {
        let prev_kv = before.clone().filter(|_| w.prev_kv);
        let want = mvccpb::Event {
            r#type: 0,
            kv: after.clone(),
            prev_kv,
        };
        prop_assert_eq!(event(&a, *id), Some((*id, want)), "{:?}", w);
    }
    if let Some(&id) = ws.keys().nth(cancel.index(ws.len().max(1))) {
        let _ = send(W::CancelRequest(pb::WatchCancelRequest { watch_id: id })).await;
        while ws.contains_key(&id) {
            next!();
        }
    }
    let _ = send(W::ProgressRequest(pb::WatchProgressRequest {})).await;
    while !matches!(next!(), r if r.watch_id == -1 && !r.created && r.events.is_empty()) {}
    drop(tx);
    // Closing the request side ends the stream: no watcher outlives it.
    while let Some(r) = rx.message().await.map_err(bad)? {
        delivered(&mut ws, &r, &mut a)?;
    }

    // Keep-alives: of leases granted here (600 s), or unknown (0).
    if !alive.is_empty() {
        let g = ask!(
            fx,
            lease.lease_grant(pb::LeaseGrantRequest { ttl: 600, id: 0 })
        );
        fx.granted.lock().unwrap().extend(g.map(|g| g.id));
    }
    let ids: Vec<i64> = alive.into_iter().map(|l| fx.lease_id(l)).collect();
    let reqs: Vec<_> = ids
        .iter()
        .map(|&id| pb::LeaseKeepAliveRequest { id })
        .collect();
    let mut client = pb::lease_client::LeaseClient::new(fx.channel.clone());
    let mut answers = client
        .lease_keep_alive(tokio_stream::iter(reqs))
        .await
        .map_err(bad)?
        .into_inner();
    for id in ids {
        let a = answers
            .message()
            .await
            .map_err(bad)?
            .ok_or_else(|| bad("keep-alives ended"))?;
        let ttl = if fx.granted.lock().unwrap().contains(&id) {
            600
        } else {
            0
        };
        prop_assert!(a.id == id && a.ttl == ttl, "keep-alive of {id}: {a:?}");
    }
    Ok(())
}

#[test]
fn watch_and_keep_alive_streams_answer_every_request_with_what_was_asked() {
    let fx = Fx::start();
    fx.check(800, stream_case(), |c| {
        let limit = Duration::from_secs(30);
        let r = fx
            .rt
            .block_on(async { tokio::time::timeout(limit, streams(&fx, c)).await });
        r.unwrap_or_else(|_| fail("streams: no answer in 30 s".into()))
    });
}

/// Found while writing the streams property: a create followed at once by
/// a cancel of its id was never answered `created` (the watcher's task,
/// which answered, was aborted before it ran), and creates sent together
/// could be answered out of order. etcd answers each create, in order.
#[test]
fn pipelined_creates_are_answered_in_order_before_a_cancel() {
    use pb::watch_request::RequestUnion as W;
    let fx = Fx::start();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    for watch_id in 1..=20 {
        let w = pb::WatchCreateRequest {
            key: b"a".to_vec(),
            watch_id,
            ..Default::default()
        };
        tx.try_send(pb::WatchRequest {
            request_union: Some(W::CreateRequest(w)),
        })
        .expect("sent");
    }
    let cancel = pb::WatchCancelRequest { watch_id: 20 };
    tx.try_send(pb::WatchRequest {
        request_union: Some(W::CancelRequest(cancel)),
    })
    .expect("sent");
    let got = fx.rt.block_on(async {
        let mut client = pb::watch_client::WatchClient::new(fx.channel.clone());
        let rx = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut rx = client.watch(rx).await.expect("watch").into_inner();
        let mut got = Vec::new();
        let limit = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Ok(Some(r))) = tokio::time::timeout_at(limit, rx.message()).await {
            got.push((r.watch_id, r.created, r.canceled));
            if got.len() == 21 {
                break;
            }
        }
        got
    });
    let want: Vec<_> = (1..=20)
        .map(|id| (id, true, false))
        .chain([(20, false, true)])
        .collect();
    assert_eq!(got, want);
}
