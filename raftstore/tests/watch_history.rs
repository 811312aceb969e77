//! A delete of more keys than a revision hands the watchers (10,000) over
//! the etcd API: a watch on its range gets every delete, in key order,
//! each with the value and revision it deleted (read from history), and a
//! watch on another range goes on unhindered, its events in order.

use std::time::Duration;

use flotilla_proto::etcdserverpb as pb;
use flotilla_proto::mvccpb;
use flotilla_raftstore::MasterConfig;
use pb::request_op::Request as R;
use pb::watch_request::RequestUnion as W;

/// Keys deleted: one more than a revision hands out.
const KEYS: usize = 10_001;

/// A port below the kernel's ephemeral range, reserved for this process
/// (`flotilla_testkit::ports`): no outgoing connection can take it before
/// the master binds it.
fn free_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], flotilla_testkit::ports::free_port()))
}

fn put(key: String, value: String) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(R::RequestPut(pb::PutRequest {
            key: key.into_bytes(),
            value: value.into_bytes(),
            ..Default::default()
        })),
    }
}

/// Watch `[key, end)` from the next revision, with previous values.
async fn watch(
    ch: tonic::transport::Channel,
    key: &str,
    end: &str,
) -> (
    tokio::sync::mpsc::Sender<pb::WatchRequest>,
    tonic::Streaming<pb::WatchResponse>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::WatchRequest {
        request_union: Some(W::CreateRequest(pb::WatchCreateRequest {
            key: key.into(),
            range_end: end.into(),
            prev_kv: true,
            ..Default::default()
        })),
    })
    .await
    .expect("send");
    let mut client = pb::watch_client::WatchClient::new(ch).max_decoding_message_size(64 << 20);
    let mut stream = client
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    let created = next(&mut stream).await;
    assert!(created.created, "{created:?}");
    (tx, stream)
}

async fn next(s: &mut tonic::Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(60), s.message())
        .await
        .expect("a watch response within 60 s")
        .expect("the watch stream")
        .expect("the watch stream ended")
}

/// The next `n` events of a watch, with their revisions.
async fn events(s: &mut tonic::Streaming<pb::WatchResponse>, n: usize) -> Vec<mvccpb::Event> {
    let mut out = Vec::new();
    while out.len() < n {
        let r = next(s).await;
        assert!(!r.canceled, "the watch was canceled: {r:?}");
        out.extend(r.events);
    }
    assert_eq!(out.len(), n, "more events than written");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_of_very_many_keys_reaches_watchers_whole_with_previous_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = MasterConfig::new("m0", dir.path().join("m0"), free_addr(), free_addr());
    cfg.initial_cluster = vec![("m0".into(), cfg.peer_addr.to_string())];
    let url = format!("http://{}", cfg.client_addr);
    let running = flotilla_raftstore::start(cfg).await.expect("start");
    assert!(running.master.wait_ready(Duration::from_secs(30)).await);
    let ep = tonic::transport::Endpoint::from_shared(url).expect("url");
    let mut ch = None;
    for _ in 0..200 {
        if let Ok(c) = ep.connect().await {
            ch = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ch = ch.expect("the client port never listened");
    let mut kv = pb::kv_client::KvClient::new(ch.clone()).max_decoding_message_size(64 << 20);

    let (_a_tx, mut big) = watch(ch.clone(), "big/", "big0").await;
    let (_b_tx, mut other) = watch(ch.clone(), "other/", "other0").await;

    // The keys, 100 puts a transaction; each key's revision.
    let mut put_revs = Vec::with_capacity(KEYS);
    for first in (0..KEYS).step_by(100) {
        let last = (first + 100).min(KEYS);
        let ops = (first..last)
            .map(|i| put(format!("big/k{i:05}"), format!("v{i}")))
            .collect();
        let r = kv
            .txn(pb::TxnRequest {
                success: ops,
                ..Default::default()
            })
            .await
            .expect("txn")
            .into_inner();
        let rev = r.header.expect("header").revision;
        put_revs.extend(std::iter::repeat_n(rev, last - first));
    }
    let put_other = |k: &str| pb::PutRequest {
        key: k.into(),
        value: b"1".to_vec(),
        ..Default::default()
    };
    let x = kv
        .put(put_other("other/x"))
        .await
        .expect("put")
        .into_inner();
    let del = kv
        .delete_range(pb::DeleteRangeRequest {
            key: b"big/".to_vec(),
            range_end: b"big0".to_vec(),
            ..Default::default()
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(del.deleted, KEYS as i64);
    let del_rev = del.header.expect("header").revision;
    let y = kv
        .put(put_other("other/y"))
        .await
        .expect("put")
        .into_inner();

    // The other range's watch: its two puts, in order, nothing else.
    let evs = events(&mut other, 2).await;
    let seen: Vec<_> = evs
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().expect("kv");
            (kv.key.clone(), kv.mod_revision)
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (b"other/x".to_vec(), x.header.expect("header").revision),
            (b"other/y".to_vec(), y.header.expect("header").revision),
        ]
    );

    // The deleted range's watch: every put, then every delete at the
    // delete's revision, in key order, with what it deleted.
    let evs = events(&mut big, 2 * KEYS).await;
    for (i, e) in evs[KEYS..].iter().enumerate() {
        let key = format!("big/k{i:05}");
        assert_eq!(e.r#type, mvccpb::event::EventType::Delete as i32, "{key}");
        let kv = e.kv.as_ref().expect("kv");
        assert_eq!(
            (kv.key.as_slice(), kv.mod_revision),
            (key.as_bytes(), del_rev)
        );
        let prev = e.prev_kv.as_ref().expect("the deleted value");
        assert_eq!(prev.value, format!("v{i}").into_bytes(), "{key}");
        assert_eq!(prev.mod_revision, put_revs[i], "{key}");
    }
    running.shutdown().await;
}
