//! The store as a running master serves it: the revision a read reports,
//! and the refusal of data written in a format this release does not know.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::{PutRequest, RangeRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_reports_the_revision_it_read_at_while_writes_go_on() {
    let c = Cluster::start(1, Opts::default()).await;
    let addr = c.client_addr(0);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (addr, stop) = (addr.clone(), stop.clone());
            tokio::spawn(async move {
                let mut kv = KvClient::new(channel(&addr).await.expect("connect"));
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    kv.put(PutRequest {
                        key: format!("/hdr/{w}/{i}").into_bytes(),
                        value: b"v".to_vec(),
                        ..Default::default()
                    })
                    .await
                    .expect("put");
                    i += 1;
                }
            })
        })
        .collect();
    let mut kv = KvClient::new(channel(&addr).await.expect("connect"));
    let mut newer = 0;
    for _ in 0..2000 {
        let r = kv
            .range(RangeRequest {
                key: b"/hdr/".to_vec(),
                range_end: prefix_end(b"/hdr/"),
                keys_only: true,
                serializable: true,
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        let header = r.header.expect("header").revision;
        if r.kvs.iter().any(|kv| kv.mod_revision > header) {
            newer += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer");
    }
    assert_eq!(
        newer, 0,
        "{newer} of 2000 ranges returned data newer than their header revision \
         (a client that lists, then watches from header + 1, sees those writes twice)"
    );
}

#[tokio::test]
async fn flotilla_master_refuses_data_written_in_a_format_it_does_not_know() {
    if skip_on_etcd("format refusal", false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = flotilla_raftstore::engine::open(&dir.path().join("db")).expect("open");
        flotilla_raftstore::format::mark(&db, flotilla_raftstore::format::FORMAT_VERSION + 1)
            .expect("mark");
    }
    let peer = format!("127.0.0.1:{}", free_port());
    let client = format!("127.0.0.1:{}", free_port());
    let data_dir = dir.path().display().to_string();
    let args = [
        "master",
        "--name",
        "n1",
        "--data-dir",
        &data_dir,
        "--client-addr",
        &client,
        "--peer-addr",
        &peer,
        "--initial-cluster",
        &format!("n1={peer}"),
    ];
    let mut cmd = tokio::process::Command::new(flotilla_bin());
    cmd.args(args);
    let out = run_command(
        &mut cmd,
        "flotilla master".into(),
        None,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(out.code, Some(1), "{out}");
    let want = format!(
        "written in format {}",
        flotilla_raftstore::format::FORMAT_VERSION + 1
    );
    assert!(
        out.stderr.contains(&want) && out.stderr.contains("needs a newer Flotilla"),
        "{out}"
    );
}
