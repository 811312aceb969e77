//! Consistency promises of the store, checked through the etcd API of real
//! masters: linearizable reads from followers, gap-free watches resumed on
//! another master, automatic compaction, and bad input that changes nothing.

mod common;

use std::time::Duration;

use common::*;
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::watch_client::WatchClient;
use flotilla_proto::etcdserverpb::{
    watch_request, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use tokio_stream::StreamExt;

async fn get(addr: &str, key: &str, serializable: bool) -> anyhow::Result<(Option<String>, i64)> {
    let mut kv = KvClient::new(channel(addr).await?);
    let r = kv
        .range(RangeRequest {
            key: key.as_bytes().to_vec(),
            serializable,
            ..Default::default()
        })
        .await?
        .into_inner();
    let rev = r.header.map(|h| h.revision).unwrap_or(0);
    Ok((
        r.kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
        rev,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_reads_on_followers_see_every_acknowledged_write() {
    if skip_on_etcd(
        "linearizable_reads_on_followers_see_every_acknowledged_write",
        true,
    ) {
        return;
    }
    let cluster = Cluster::start(3, Opts::default()).await;
    let leader = cluster.leader().await;
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let mut stale_serializable = 0;
    for i in 0..60 {
        let value = format!("v{i}");
        put(&cluster.client_addr(leader), "lin/key", &value)
            .await
            .expect("put through the leader");
        let f = &cluster.client_addr(followers[i % 2]);
        // Linearizable (the default): must see the write the leader just acknowledged.
        let (got, _) = get(f, "lin/key", false).await.expect("linearizable read");
        assert_eq!(
            got.as_deref(),
            Some(value.as_str()),
            "a linearizable read on a follower missed an acknowledged write"
        );
        // Serializable: may lag; counted to show what the read index buys.
        let (got, _) = get(f, "lin/key", true).await.expect("serializable read");
        if got.as_deref() != Some(value.as_str()) {
            stale_serializable += 1;
        }
    }
    println!("serializable follower reads that were stale: {stale_serializable} of 60");

    // A follower that slept through a write: right after it wakes, a
    // linearizable read must wait for it to catch up; a serializable one may not.
    let mut cluster = cluster;
    let f = followers[0];
    cluster.pause(f);
    put(&cluster.client_addr(leader), "lin/key", "while-paused")
        .await
        .expect("put while a follower sleeps");
    cluster.resume(f);
    let (got, _) = get(&cluster.client_addr(f), "lin/key", false)
        .await
        .expect("linearizable read after resume");
    assert_eq!(
        got.as_deref(),
        Some("while-paused"),
        "a woken follower served a stale linearizable read"
    );

    // A follower cut off from every other master must refuse a linearizable
    // read (it cannot confirm it is up to date) but still serve a serializable one.
    let others: Vec<usize> = (0..3).filter(|&i| i != f).collect();
    for &o in &others {
        cluster.pause(o);
    }
    let res = tokio::time::timeout(
        Duration::from_secs(15),
        get(&cluster.client_addr(f), "lin/key", false),
    )
    .await;
    let refused = matches!(res, Err(_) | Ok(Err(_)));
    let (got, _) = get(&cluster.client_addr(f), "lin/key", true)
        .await
        .expect("serializable read without a quorum");
    for &o in &others {
        cluster.resume(o);
    }
    assert!(
        refused,
        "a follower without a quorum answered a linearizable read: {res:?}"
    );
    assert_eq!(got.as_deref(), Some("while-paused"));
}

async fn open_watch(
    addr: &str,
    prefix: &str,
    start_revision: i64,
) -> anyhow::Result<(
    tokio::sync::mpsc::Sender<WatchRequest>,
    tonic::Streaming<WatchResponse>,
)> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix.as_bytes()),
                start_revision,
                ..Default::default()
            },
        )),
    })
    .await?;
    let mut w = WatchClient::new(channel(addr).await?);
    let stream = w
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, stream))
}

/// Read watch responses until `want` events arrived or a compaction ended the
/// watch; returns the (revision, key) of every event and the compact revision.
async fn collect(
    stream: &mut tonic::Streaming<WatchResponse>,
    want: usize,
) -> (Vec<(i64, String)>, i64) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < want {
        let msg = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("watch delivered {} of {want} events in 30 s", seen.len()));
        let resp = msg.expect("watch stream ended").expect("watch error");
        if resp.compact_revision != 0 {
            return (seen, resp.compact_revision);
        }
        for ev in resp.events {
            let kv = ev.kv.expect("event kv");
            seen.push((
                kv.mod_revision,
                String::from_utf8_lossy(&kv.key).into_owned(),
            ));
        }
    }
    (seen, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumed_on_another_master_is_ordered_and_gap_free() {
    if skip_on_etcd(
        "watch_resumed_on_another_master_is_ordered_and_gap_free",
        true,
    ) {
        return;
    }
    let cluster = Cluster::start(3, Opts::default()).await;
    let start = put(&cluster.client_addr(0), "other/key", "x")
        .await
        .expect("put")
        + 1;
    let (_keep, mut first) = open_watch(&cluster.client_addr(1), "w/", start)
        .await
        .expect("watch");
    let mut acked = Vec::new();
    for i in 0..150 {
        let addr = cluster.client_addr(i % 3);
        let rev = put(&addr, &format!("w/{}", i % 17), &format!("{i}"))
            .await
            .expect("put");
        acked.push(rev);
        // Writes outside the prefix must not show up, nor leave a gap.
        if i % 10 == 0 {
            put(&addr, "other/key", "y").await.expect("put");
        }
    }
    // Half the events from one master, then resume on another from the next revision.
    let (mut seen, compacted) = collect(&mut first, 75).await;
    assert_eq!(compacted, 0);
    seen.truncate(75);
    drop(first);
    let resume_from = seen.last().expect("events").0 + 1;
    let (_keep2, mut second) = open_watch(&cluster.client_addr(2), "w/", resume_from)
        .await
        .expect("watch");
    let (rest, compacted) = collect(&mut second, 75).await;
    assert_eq!(compacted, 0);
    seen.extend(rest.into_iter().take(75));
    let revisions: Vec<i64> = seen.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        revisions, acked,
        "the watch did not deliver exactly the acknowledged writes, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_compaction_forgets_old_revisions() {
    if skip_on_etcd("automatic_compaction_forgets_old_revisions", false) {
        return;
    }
    let opts = Opts {
        auto_compaction_retention: Some(50),
        ..Opts::default()
    };
    let cluster = Cluster::start(3, opts).await;
    let addr = cluster.client_addr(0);
    for i in 0..300 {
        put(&addr, &format!("c/{}", i % 5), &format!("{i}"))
            .await
            .expect("put");
    }
    let mut kv = KvClient::new(channel(&addr).await.expect("channel"));
    wait_until(
        Duration::from_secs(20),
        "revision 2 is compacted",
        async || match kv
            .range(RangeRequest {
                key: b"c/0".to_vec(),
                revision: 2,
                ..Default::default()
            })
            .await
        {
            Err(s) => s.message().contains("required revision has been compacted"),
            Ok(_) => false,
        },
    )
    .await;
    // The kept window still answers, on every master.
    let recent = put(&addr, "c/0", "last").await.expect("put") - 10;
    for i in 0..3 {
        let mut kv = KvClient::new(channel(&cluster.client_addr(i)).await.expect("channel"));
        kv.range(RangeRequest {
            key: b"c/0".to_vec(),
            revision: recent,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("master {i}: a recent revision was compacted: {e}"));
    }
    // A watch from a compacted revision is told so, with the compact revision.
    let (_keep, mut w) = open_watch(&addr, "c/", 2).await.expect("watch");
    let (_, compact) = collect(&mut w, 1_000_000).await;
    assert!(
        compact > 2,
        "a watch from a compacted revision got no compaction notice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_key_is_rejected_and_changes_nothing() {
    if skip_on_etcd("oversized_key_is_rejected_and_changes_nothing", false) {
        return;
    }
    let cluster = Cluster::start(3, Opts::default()).await;
    let addr = cluster.client_addr(0);
    let before = put(&addr, "k", "v").await.expect("put");
    let mut kv = KvClient::new(channel(&addr).await.expect("channel"));
    let err = kv
        .put(PutRequest {
            key: vec![b'x'; 40 * 1024],
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("a 40 KiB key was accepted");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("key is too large"),
        "unclear error: {}",
        err.message()
    );
    let err = kv
        .put(PutRequest {
            key: vec![],
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("empty key");
    assert!(
        err.message().contains("key is not provided"),
        "unclear error: {}",
        err.message()
    );
    let (_, rev) = get(&addr, "k", false).await.expect("get");
    assert_eq!(rev, before, "a rejected request changed the store");
}

/// Regression (found by tests/jepsen): a keep-alive of a lease that has just
/// expired must not answer "expired" (TTL 0) while the lease's keys can
/// still be read; it answers once the revocation is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_reports_expiry_only_once_the_keys_are_gone() {
    use flotilla_proto::etcdserverpb::lease_client::LeaseClient;
    use flotilla_proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest};
    if skip_on_etcd(
        "keep_alive_reports_expiry_only_once_the_keys_are_gone",
        true,
    ) {
        return;
    }
    let cluster = Cluster::start(3, Opts::default()).await;
    let leader = cluster.leader().await;
    let addr = cluster.client_addr(leader);
    let mut lease = LeaseClient::new(channel(&addr).await.expect("channel"));
    let mut kv = KvClient::new(channel(&addr).await.expect("channel"));
    for round in 0..3 {
        let granted = lease
            .lease_grant(LeaseGrantRequest { ttl: 2, id: 0 })
            .await
            .expect("grant")
            .into_inner();
        let t0 = tokio::time::Instant::now();
        let key = format!("lease/{round}");
        kv.put(PutRequest {
            key: key.clone().into_bytes(),
            value: b"v".to_vec(),
            lease: granted.id,
            ..Default::default()
        })
        .await
        .expect("put with lease");
        // Probe only after the TTL has run out (a probe before would renew it).
        tokio::time::sleep_until(t0 + Duration::from_millis(2050)).await;
        let deadline = t0 + Duration::from_secs(10);
        loop {
            let mut replies = lease
                .lease_keep_alive(tokio_stream::iter(vec![LeaseKeepAliveRequest {
                    id: granted.id,
                }]))
                .await
                .expect("keep-alive stream")
                .into_inner();
            let ttl = replies
                .next()
                .await
                .expect("a keep-alive reply")
                .expect("keep-alive")
                .ttl;
            if ttl <= 0 {
                let (got, _) = get(&addr, &key, true).await.expect("read");
                assert_eq!(
                    got, None,
                    "round {round}: told the lease expired, yet its key is still there"
                );
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: the lease never expired"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Regression (found by tests/jepsen): a leader that was paused while its
/// leases ran out must not revoke, when it wakes, a lease that the new
/// leader has kept alive meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_does_not_revoke_a_lease_the_new_leader_renewed() {
    use flotilla_proto::etcdserverpb::lease_client::LeaseClient;
    use flotilla_proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest};
    if skip_on_etcd(
        "a_deposed_leader_does_not_revoke_a_lease_the_new_leader_renewed",
        true,
    ) {
        return;
    }
    let mut cluster = Cluster::start(3, Opts::default()).await;
    let old = cluster.leader().await;
    let via = (old + 1) % 3;
    let addr = cluster.client_addr(via);
    let mut lease = LeaseClient::new(channel(&addr).await.expect("channel"));
    let granted = lease
        .lease_grant(LeaseGrantRequest { ttl: 2, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    put_with_lease(&addr, "deposed/key", granted.id).await;
    async fn renew(lease: &mut LeaseClient<tonic::transport::Channel>, id: i64) -> Option<i64> {
        let mut replies = lease
            .lease_keep_alive(tokio_stream::iter(vec![LeaseKeepAliveRequest { id }]))
            .await
            .ok()?
            .into_inner();
        replies.next().await?.ok().map(|r| r.ttl)
    }
    cluster.pause(old);
    // Keep the lease alive through the election and well past its TTL, so
    // that the sleeping leader's clock says it expired long ago.
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < until {
        let _ = renew(&mut lease, granted.id).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(
        matches!(renew(&mut lease, granted.id).await, Some(t) if t > 0),
        "the new leader lost the lease"
    );
    cluster.resume(old);
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let ttl = renew(&mut lease, granted.id).await;
        assert!(
            !matches!(ttl, Some(t) if t <= 0),
            "the lease was revoked after the old leader woke up"
        );
        let (got, _) = get(&addr, "deposed/key", false).await.expect("read");
        assert_eq!(
            got.as_deref(),
            Some("v"),
            "the lease's key vanished after the old leader woke up"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn put_with_lease(addr: &str, key: &str, lease: i64) {
    let mut kv = KvClient::new(channel(addr).await.expect("channel"));
    kv.put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        lease,
        ..Default::default()
    })
    .await
    .expect("put with lease");
}
