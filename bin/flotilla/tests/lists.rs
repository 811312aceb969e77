//! Lists of real masters and their resourceVersion semantics over the wire:
//! a consistent list ("" , the default) sees every write acknowledged before
//! it on any master, followers included (their watch caches serve it once
//! they have caught up); "0", NotOlderThan and Exact as Kubernetes has them.
//!
//! Flotilla only: with `FLOTILLA_TEST_TARGET=etcd` every test here is skipped.

mod common;

use std::time::Duration;

use common::*;
use flotilla_client::{Client, ListParams, Reason};
use serde_json::{json, Value};

fn cm(name: &str, v: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": v}})
}

fn rv_of(v: &Value) -> i64 {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistent_list_on_a_follower_sees_every_acknowledged_write() {
    if skip_on_etcd(
        "a_consistent_list_on_a_follower_sees_every_acknowledged_write",
        false,
    ) {
        return;
    }
    let cluster = Cluster::start(3, Opts::default()).await;
    cluster.wait_ready(Duration::from_secs(30)).await;
    let leader = cluster.leader().await;
    let at = |i: usize| Client::connect(&[cluster.client_addr(i)]).expect("client");
    let writer = at(leader);
    let followers: Vec<Client> = (0..3).filter(|i| *i != leader).map(at).collect();
    wait_for(Duration::from_secs(15), "namespace default", async || {
        writer.get("namespaces", "", "default").await
    })
    .await;
    // Each follower's configmap cache is started and loaded by a first list.
    for f in &followers {
        f.list("configmaps", "default", &ListParams::default())
            .await
            .expect("first list");
    }
    // Write through the leader, list on a follower at once: the write is
    // there every time (a follower applies it, and its cache follows it,
    // a moment after the leader acknowledged it).
    let mut first = None;
    for i in 0..200 {
        let name = format!("c{i:03}");
        let (w, _) = writer
            .create("configmaps", "default", &cm(&name, "1"), false)
            .await
            .expect("create");
        let rv = rv_of(&w);
        first.get_or_insert((name.clone(), rv));
        let f = &followers[i % followers.len()];
        let l = f
            .list("configmaps", "default", &ListParams::default())
            .await
            .expect("consistent list");
        let lrv: i64 = l.resource_version.parse().expect("list rv");
        assert!(lrv >= rv, "round {i}: list at {lrv}, write at {rv}");
        assert!(
            l.items
                .iter()
                .any(|o| o.pointer("/metadata/name") == Some(&json!(name))),
            "round {i}: {name} (written at {rv}) is missing from a consistent list at {lrv}"
        );
        assert_eq!(l.items.len(), i + 1, "round {i}");
    }
    // Over the wire: Exact reads the old revision, NotOlderThan at least it,
    // "0" whatever the master has (never more than was written).
    let (name, rv) = first.expect("a write");
    let mut changed = writer
        .get("configmaps", "default", &name)
        .await
        .expect("get");
    changed["data"]["v"] = json!("2");
    writer
        .update("configmaps", "default", &changed)
        .await
        .expect("update");
    let f = &followers[0];
    let exact = f
        .list(
            "configmaps",
            "default",
            &ListParams::default().exact(&rv.to_string()),
        )
        .await
        .expect("exact");
    assert_eq!(exact.resource_version, rv.to_string());
    assert_eq!(exact.items.len(), 1);
    assert_eq!(exact.items[0]["data"]["v"], json!("1"));
    let newer = f
        .list(
            "configmaps",
            "default",
            &ListParams::default().at(&rv.to_string()),
        )
        .await
        .expect("not older than");
    assert!(newer.resource_version.parse::<i64>().expect("rv") >= rv);
    assert_eq!(newer.items.len(), 200);
    let any = f
        .list("configmaps", "default", &ListParams::default().at("0"))
        .await
        .expect("any");
    assert!((199..=200).contains(&any.items.len()));
    let e = f
        .list("configmaps", "default", &ListParams::default().exact("0"))
        .await
        .unwrap_err();
    assert_eq!(e.reason, Reason::BadRequest, "{}", e.message);
}
