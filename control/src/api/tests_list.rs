//! Lists and their resourceVersion semantics against the in-memory store:
//! served from the watch cache when the caller allows it, from the store
//! otherwise, never older than asked.

use std::sync::Arc;
use std::time::Duration;

use flotilla_objects::api::{ListParams, Reason};
use flotilla_objects::registry;
use serde_json::{json, Value};

use super::json::str_at;
use super::*;
use crate::memstore::MemStore;

const CM: &ResourceInfo = &registry::CONFIG_MAP;

async fn server() -> (MemStore, ApiServer) {
    let store = MemStore::new();
    let api = ApiServer::new(Arc::new(store.clone()), ApiConfig::default());
    api.ensure_namespaces().await.expect("namespaces");
    (store, api)
}

fn cm(name: &str, data: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": data}})
}

fn names(l: &ListResult) -> Vec<String> {
    l.items
        .iter()
        .map(|i| str_at(i, "/metadata/name").to_string())
        .collect()
}

async fn list(api: &ApiServer, p: ListParams) -> Result<ListResult, ApiError> {
    api.list(CM, "default", &p).await
}

/// The kind's cache has loaded and reached the store's revision.
async fn cache_caught_up(api: &ApiServer, store: &MemStore) {
    let cache = api.caches.get(CM);
    assert!(
        cache
            .wait_for(store.revision(), Duration::from_secs(10))
            .await,
        "the cache never reached the store's revision"
    );
}

/// A server with a in its cache, then b written while the cache does not
/// follow the store (a master whose cache lags); b's revision. Lists wait
/// `fresh` for the cache.
async fn lagging_cache(fresh: Duration) -> (MemStore, ApiServer, i64) {
    let (store, api) = server().await;
    api.caches.set_fresh_timeout(fresh);
    api.create(CM, "default", cm("a", "1"), false)
        .await
        .expect("a");
    cache_caught_up(&api, &store).await;
    store.hold_watches(true);
    let b = api
        .create(CM, "default", cm("b", "1"), false)
        .await
        .expect("b");
    let b_rv = str_at(&b.object, "/metadata/resourceVersion")
        .parse()
        .expect("rv");
    (store, api, b_rv)
}

#[tokio::test]
async fn a_consistent_list_sees_every_acknowledged_write_even_when_the_cache_lags() {
    let (store, api, b_rv) = lagging_cache(Duration::from_secs(60)).await;
    // "0" (any) is the cache's state, at once: without b.
    let any = list(&api, ListParams::default().at("0"))
        .await
        .expect("any");
    assert_eq!(names(&any), ["a"]);
    assert!(any.resource_version < b_rv);
    // "" waits for the cache to reach the store's current revision.
    let api2 = api.clone();
    let mut consistent = tokio::spawn(async move { list(&api2, ListParams::default()).await });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut consistent)
            .await
            .is_err(),
        "a consistent list answered from a cache that has not seen the last write"
    );
    store.hold_watches(false);
    let l = tokio::time::timeout(Duration::from_secs(10), consistent)
        .await
        .expect("in time")
        .expect("task")
        .expect("list");
    assert_eq!(names(&l), ["a", "b"]);
    assert!(l.resource_version >= b_rv);
}

#[tokio::test]
async fn a_consistent_list_reads_the_store_when_the_cache_does_not_catch_up_in_time() {
    let (store, api, _) = lagging_cache(Duration::from_millis(100)).await;
    let l = list(&api, ListParams::default()).await.expect("list");
    assert_eq!(names(&l), ["a", "b"]);
    assert_eq!(l.resource_version, store.revision());
    // So does a list not older than a revision the cache has not reached
    // (the store here has it).
    let l = list(
        &api,
        ListParams::default().at(&store.revision().to_string()),
    )
    .await
    .expect("not older than");
    assert_eq!(names(&l), ["a", "b"]);
    store.hold_watches(false);
}

#[tokio::test]
async fn not_older_than_and_exact_read_at_the_revision_asked() {
    let (store, api) = server().await;
    api.caches.set_fresh_timeout(Duration::from_millis(200));
    let a1 = api
        .create(CM, "default", cm("a", "1"), false)
        .await
        .expect("a");
    let rv1 = str_at(&a1.object, "/metadata/resourceVersion").to_string();
    let mut a2 = a1.object.clone();
    a2["data"]["k"] = json!("2");
    api.update(CM, "default", a2, false).await.expect("update");
    cache_caught_up(&api, &store).await;
    // Not older than rv1: the latest the cache has, at or after it.
    let l = list(&api, ListParams::default().at(&rv1))
        .await
        .expect("not older than");
    assert_eq!(str_at(&l.items[0], "/data/k"), "2");
    assert!(l.resource_version >= rv1.parse::<i64>().expect("rv"));
    // Exactly rv1: a as it was then.
    let l = list(&api, ListParams::default().exact(&rv1))
        .await
        .expect("exact");
    assert_eq!(str_at(&l.items[0], "/data/k"), "1");
    assert_eq!(l.resource_version.to_string(), rv1);
    // Kubernetes' legacy rule: a revision with a limit and no match is exact.
    let l = list(&api, ListParams::default().at(&rv1).limit(5))
        .await
        .expect("legacy exact");
    assert_eq!(str_at(&l.items[0], "/data/k"), "1");
    // Exactly the cache's own revision: the same as the latest.
    let now = store.revision().to_string();
    let l = list(&api, ListParams::default().exact(&now))
        .await
        .expect("exact now");
    assert_eq!(str_at(&l.items[0], "/data/k"), "2");
    // A revision no master has reached yet: refused once the wait is over.
    let future = (store.revision() + 100).to_string();
    for p in [
        ListParams::default().at(&future),
        ListParams::default().exact(&future),
    ] {
        let e = list(&api, p).await.unwrap_err();
        assert_eq!(e.reason, Reason::Unavailable, "{}", e.message);
        assert!(
            e.message.contains("Too large resource version"),
            "{}",
            e.message
        );
    }
    // A compacted revision is gone.
    store.compact(store.revision());
    let e = list(&api, ListParams::default().exact(&rv1))
        .await
        .unwrap_err();
    assert_eq!(e.reason, Reason::Gone, "{}", e.message);
}

#[tokio::test]
async fn resource_version_parameters_are_validated_as_kubernetes_does() {
    let (_store, api) = server().await;
    let p1 = list(&api, ListParams::default().limit(1))
        .await
        .expect("page");
    let bad = [
        ListParams {
            resource_version_match: "Exact".into(),
            ..Default::default()
        },
        ListParams::default().exact("0"),
        ListParams {
            resource_version: "5".into(),
            resource_version_match: "Newest".into(),
            ..Default::default()
        },
        ListParams::default().at("-1"),
        ListParams::default().at("x"),
        ListParams {
            resource_version: "5".into(),
            continue_token: super::read::encode_continue(5, b"/registry/configmaps/default/"),
            ..Default::default()
        },
        ListParams {
            resource_version_match: "NotOlderThan".into(),
            continue_token: super::read::encode_continue(5, b"/registry/configmaps/default/"),
            ..Default::default()
        },
    ];
    for p in bad {
        let e = list(&api, p.clone()).await.unwrap_err();
        assert_eq!(e.reason, Reason::BadRequest, "{p:?}: {}", e.message);
    }
    // Any first page has no continue token on an empty list.
    assert!(p1.continue_token.is_empty());
}

#[tokio::test]
async fn pages_stay_at_the_first_pages_revision_from_the_cache_or_the_store() {
    let (store, api) = server().await;
    for i in 0..6 {
        let mut o = cm(&format!("c{i}"), "1");
        o["metadata"]["labels"] = json!({"parity": if i % 2 == 0 { "even" } else { "odd" }});
        api.create(CM, "default", o, false).await.expect("create");
    }
    cache_caught_up(&api, &store).await;
    // Nothing written between pages: every page from the cache.
    let p1 = list(&api, ListParams::default().limit(2))
        .await
        .expect("p1");
    assert_eq!(names(&p1), ["c0", "c1"]);
    let next = |token: &str, limit: i64| ListParams {
        limit,
        continue_token: token.to_string(),
        ..Default::default()
    };
    let p2 = list(&api, next(&p1.continue_token, 2)).await.expect("p2");
    assert_eq!(names(&p2), ["c2", "c3"]);
    assert_eq!(p2.resource_version, p1.resource_version);
    // Writes between pages (the cache moves on): the rest is read at the
    // pinned revision from the store; c5 is still there, c6 not yet.
    api.delete(CM, "default", "c5", &Default::default())
        .await
        .expect("delete");
    api.create(CM, "default", cm("c6", "1"), false)
        .await
        .expect("c6");
    cache_caught_up(&api, &store).await;
    let p3 = list(&api, next(&p2.continue_token, 0)).await.expect("p3");
    assert_eq!(names(&p3), ["c4", "c5"]);
    assert_eq!(p3.resource_version, p1.resource_version);
    assert!(p3.continue_token.is_empty());
    // Selectors page through the cache too.
    let mut got = Vec::new();
    let mut token = String::new();
    loop {
        let p = list(
            &api,
            ListParams {
                label_selector: "parity=even".into(),
                limit: 1,
                continue_token: token,
                ..Default::default()
            },
        )
        .await
        .expect("even page");
        got.extend(names(&p));
        if p.continue_token.is_empty() {
            break;
        }
        token = p.continue_token;
    }
    assert_eq!(got, ["c0", "c2", "c4"]);
    let odd = list(&api, ListParams::default().fields("metadata.name=c3"))
        .await
        .expect("field selector");
    assert_eq!(names(&odd), ["c3"]);
}
