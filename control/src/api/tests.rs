//! The API server's operations against the in-memory store: no processes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use flotilla_objects::api::{
    DeleteParams, EventType, ListParams, Propagation, Reason, WatchParams,
};
use flotilla_objects::registry;
use serde_json::{json, Value};

use super::json::str_at;
use super::read::{decode_continue, encode_continue};
use super::update::applied_config;
use super::watch::Cursor;
use super::*;
use crate::alloc::ServiceRanges;
use crate::memstore::MemStore;
use crate::store::{Change, Page, StoreError, Txn, TxnResult, WatchMsg, WatchStream};

async fn server_with(cfg: ApiConfig) -> (MemStore, ApiServer) {
    let store = MemStore::new();
    let api = ApiServer::new(Arc::new(store.clone()), cfg);
    api.ensure_namespaces().await.expect("namespaces");
    (store, api)
}

async fn server() -> (MemStore, ApiServer) {
    server_with(ApiConfig::default()).await
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

fn pod(name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}})
}

fn rv(v: &Value) -> i64 {
    str_at(v, "/metadata/resourceVersion").parse().unwrap_or(0)
}

const CM: &ResourceInfo = &registry::CONFIG_MAP;
const POD: &ResourceInfo = &registry::POD;
const NS: &ResourceInfo = &registry::NAMESPACE;
const SVC: &ResourceInfo = &registry::SERVICE;

/// A clock the test moves by hand.
#[derive(Clone)]
struct TestClock(Arc<Mutex<DateTime<Utc>>>);

impl TestClock {
    fn new() -> Self {
        TestClock(Arc::new(Mutex::new(
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .expect("time"),
        )))
    }
    fn advance(&self, secs: i64) {
        let mut t = self.0.lock().expect("clock");
        *t += chrono::Duration::seconds(secs);
    }
    fn clock(&self) -> Clock {
        let c = self.0.clone();
        Arc::new(move || *c.lock().expect("clock"))
    }
}

// ---- create ----

#[tokio::test]
async fn create_sets_server_fields_and_refuses_duplicates_and_missing_namespaces() {
    let (store, api) = server().await;
    let w = api
        .create(CM, "default", cm("a"), false)
        .await
        .expect("create");
    assert!(!str_at(&w.object, "/metadata/uid").is_empty());
    assert!(!str_at(&w.object, "/metadata/creationTimestamp").is_empty());
    assert_eq!(rv(&w.object), store.revision());
    let e = api.create(CM, "default", cm("a"), false).await.unwrap_err();
    assert_eq!(e.reason, Reason::AlreadyExists);
    assert_eq!(e.message, "configmaps \"a\" already exists");
    let e = api.create(CM, "nope", cm("b"), false).await.unwrap_err();
    assert_eq!(e.reason, Reason::NotFound);
    // Invalid objects name their field and write nothing.
    let before = store.revision();
    let e = api
        .create(
            CM,
            "default",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}}),
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason, Reason::Invalid);
    assert!(e.message.contains("metadata.name"), "{}", e.message);
    assert_eq!(store.revision(), before);
    // A pod starts Pending, without the status it was sent with.
    let mut p = pod("p", "");
    p["status"] = json!({"phase": "Running"});
    let w = api.create(POD, "default", p, false).await.expect("pod");
    assert_eq!(w.object["status"], json!({"phase": "Pending"}));
}

#[tokio::test]
async fn create_in_a_terminating_namespace_is_forbidden() {
    let (_store, api) = server().await;
    api.create(
        NS,
        "",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "t"}}),
        false,
    )
    .await
    .expect("ns");
    let (v, gone) = api
        .delete(NS, "", "t", &DeleteParams::default())
        .await
        .expect("delete ns");
    assert!(!gone, "a namespace waits for its finalizer");
    assert_eq!(v["status"]["phase"], "Terminating");
    let e = api.create(CM, "t", cm("a"), false).await.unwrap_err();
    assert_eq!(e.reason, Reason::Forbidden);
}

/// The JSON a create hands back without serializing its object is that
/// object, resourceVersion included.
#[tokio::test]
async fn a_creates_served_bytes_are_its_object() {
    let (_store, api) = server().await;
    let (w, served) = api
        .create_served(POD, "default", pod("p", "n1"), false)
        .await
        .expect("create");
    let served = served.expect("bytes at hand");
    let back: Value = serde_json::from_slice(&served).expect("JSON");
    assert_eq!(back, w.object);
    assert!(rv(&back) > 0);
    let (_, dry) = api
        .create_served(POD, "default", pod("q", "n1"), true)
        .await
        .expect("dry run");
    assert!(dry.is_none());
}

/// A get's bytes are the stored ones with the resourceVersion spliced in:
/// the object `get` decodes, at its revision, linearizable or not.
#[tokio::test]
async fn a_gets_served_bytes_are_its_object() {
    let (_store, api) = server().await;
    api.create(POD, "default", pod("p", "n1"), false)
        .await
        .expect("create");
    for serializable in [false, true] {
        let object = api
            .get(POD, "default", "p", serializable)
            .await
            .expect("get");
        let served = api
            .get_served(POD, "default", "p", serializable)
            .await
            .expect("get served");
        let back: Value = serde_json::from_slice(&served).expect("JSON");
        assert_eq!(back, object);
        assert!(rv(&back) > 0);
    }
    let missing = api.get_served(POD, "default", "q", false).await;
    assert_eq!(missing.expect_err("missing").reason, Reason::NotFound);
}

/// A create takes its first look at the namespace from the namespaces'
/// watch cache; a cache that has not seen the namespace marked terminating
/// does not let the create through (its write is conditioned on the
/// namespace's revision, and the retry reads through the leader).
#[tokio::test]
async fn create_in_a_namespace_the_cache_still_shows_active_is_forbidden() {
    let (store, api) = server().await;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "t"}});
    api.create(NS, "", ns, false).await.expect("ns");
    let key = object_key(NS, "", "t");
    let cache = api.caches.get(NS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while cache.object(&key).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cache never held t"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    api.create(CM, "t", cm("a"), false).await.expect("a");
    store.hold_watches(true);
    api.delete(NS, "", "t", &DeleteParams::default())
        .await
        .expect("delete ns");
    let seen = cache.object(&key).expect("still cached");
    assert!(
        !super::json::is_terminating(seen.object()),
        "the cache saw the delete: the test does not test the stale case"
    );
    let e = api.create(CM, "t", cm("b"), false).await.unwrap_err();
    assert_eq!(e.reason, Reason::Forbidden, "{e:?}");
    store.hold_watches(false);
}

#[tokio::test]
async fn a_retried_create_is_answered_with_the_first_attempts_object() {
    let (store, api) = server().await;
    let id = RequestId(7, 7);
    let mut obj = cm("");
    obj["metadata"] = json!({"generateName": "gen-"});
    let first = api
        .with_request(id)
        .create(CM, "default", obj.clone(), false)
        .await
        .expect("first");
    let revision = store.revision();
    // The same call again (a client retry after a lost answer): no second
    // object, even though the name is generated anew, and the first
    // object's own uid and name come back.
    let again = api
        .with_request(id)
        .create(CM, "default", obj, false)
        .await
        .expect("retry");
    assert_eq!(store.revision(), revision, "nothing written by the retry");
    assert_eq!(
        again.object["metadata"]["uid"],
        first.object["metadata"]["uid"]
    );
    assert_eq!(
        again.object["metadata"]["name"],
        first.object["metadata"]["name"]
    );
    assert_eq!(
        store
            .keys_with_prefix(b"/registry/configmaps/default/")
            .len(),
        1
    );
}

#[tokio::test]
async fn a_retried_update_and_delete_apply_once() {
    let (store, api) = server().await;
    api.create(CM, "default", cm("a"), false)
        .await
        .expect("create");
    let patch = json!({"data": {"n": "1"}});
    let id = RequestId(1, 1);
    let w = api
        .with_request(id)
        .patch(CM, "default", "a", patch.clone(), false, false)
        .await
        .expect("patch");
    let rev = store.revision();
    let again = api
        .with_request(id)
        .patch(CM, "default", "a", patch, false, false)
        .await
        .expect("patch retry");
    assert_eq!(store.revision(), rev);
    assert_eq!(again.object, w.object);
    let del = RequestId(2, 2);
    let (_, gone) = api
        .with_request(del)
        .delete(CM, "default", "a", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(gone);
    // The retry of the delete finds it deleted by itself, not NotFound.
    let (_, gone) = api
        .with_request(del)
        .delete(CM, "default", "a", &DeleteParams::default())
        .await
        .expect("delete retry");
    assert!(gone);
}

/// A retried call whose first attempt committed, but whose answer was lost,
/// must not be refused by a condition that only that first attempt made
/// false: the update's resourceVersion precondition (its own write moved
/// the version) and the Binding's "already bound" (its own write bound the
/// pod). Found by tests/jepsen (snapshot-kill, seed 502): the counter
/// client took the Conflict for a lost race, read again and incremented a
/// second time.
#[tokio::test]
async fn a_retry_is_not_refused_by_what_its_own_first_attempt_changed() {
    let (store, api) = server().await;
    let created = api
        .create(CM, "default", cm("a"), false)
        .await
        .expect("create");
    let mut next = created.object.clone();
    next["data"] = json!({"k": "1"});
    let id = RequestId(3, 3);
    let first = api
        .with_request(id)
        .update(CM, "default", next.clone(), false)
        .await
        .expect("update");
    let rev = store.revision();
    let again = api
        .with_request(id)
        .update(CM, "default", next.clone(), false)
        .await
        .expect("a retry of a committed update with its resourceVersion precondition");
    assert_eq!(store.revision(), rev, "nothing written by the retry");
    assert_eq!(again.object["data"], first.object["data"]);
    // Another call with the same stale precondition is a conflict.
    let e = api
        .with_request(RequestId(4, 4))
        .update(CM, "default", next, false)
        .await
        .unwrap_err();
    assert_eq!(e.reason, Reason::Conflict);

    let mut p = pod("p", "");
    p["spec"].as_object_mut().unwrap().remove("nodeName");
    api.create(POD, "default", p, false).await.expect("pod");
    let bind = RequestId(5, 5);
    api.with_request(bind)
        .bind("default", "p", "n1")
        .await
        .expect("bind");
    let rev = store.revision();
    let again = api
        .with_request(bind)
        .bind("default", "p", "n1")
        .await
        .expect("a retry of a committed Binding");
    assert_eq!(store.revision(), rev);
    assert_eq!(again["spec"]["nodeName"], "n1");
    let e = api
        .with_request(RequestId(6, 6))
        .bind("default", "p", "n2")
        .await
        .unwrap_err();
    assert_eq!(e.reason, Reason::Conflict);
}

// ---- get / list ----

#[tokio::test]
async fn lists_filter_page_at_one_revision_and_check_tokens() {
    let (_store, api) = server().await;
    for i in 0..7 {
        let mut o = cm(&format!("c{i}"));
        o["metadata"]["labels"] = json!({"parity": if i % 2 == 0 { "even" } else { "odd" }});
        api.create(CM, "default", o, false).await.expect("create");
    }
    let even = api
        .list(CM, "default", &ListParams::default().labels("parity=even"))
        .await
        .expect("list");
    assert_eq!(even.items.len(), 4);
    let p1 = api
        .list(CM, "default", &ListParams::default().limit(3))
        .await
        .expect("page 1");
    assert_eq!(p1.items.len(), 3);
    assert!(!p1.continue_token.is_empty());
    // A write between pages does not show in the next page.
    api.create(CM, "default", cm("c3a"), false)
        .await
        .expect("between");
    let p2 = api
        .list(
            CM,
            "default",
            &ListParams {
                limit: 10,
                continue_token: p1.continue_token.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("page 2");
    assert_eq!(p2.resource_version, p1.resource_version);
    assert_eq!(p2.items.len(), 4);
    let e = api
        .list(CM, "default", &ListParams::default().labels("a in (b"))
        .await
        .unwrap_err();
    assert_eq!(e.reason, Reason::BadRequest);
    let e = api
        .list(
            CM,
            "kube-system",
            &ListParams {
                continue_token: p1.continue_token,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason, Reason::BadRequest);
    let e = api.get(CM, "default", "missing", false).await.unwrap_err();
    assert_eq!(e.message, "configmaps \"missing\" not found");
}

#[test]
fn continue_tokens_belong_to_their_list() {
    let t = encode_continue(42, b"/registry/pods/default/b\0");
    let d = decode_continue(&t, b"/registry/pods/default/").expect("valid");
    assert_eq!(
        (d.revision, d.start.as_slice()),
        (42, &b"/registry/pods/default/b\0"[..])
    );
    assert_eq!(
        decode_continue(&t, b"/registry/secrets/")
            .err()
            .map(|e| e.reason),
        Some(Reason::BadRequest)
    );
    assert_eq!(
        decode_continue("%%%", b"/").err().map(|e| e.reason),
        Some(Reason::BadRequest)
    );
}

// ---- update / status / patch / apply ----

#[tokio::test]
async fn updates_honour_resource_versions_status_and_generation() {
    let (_store, api) = server().await;
    let created = api
        .create(POD, "default", pod("p", ""), false)
        .await
        .expect("create");
    assert_eq!(created.object["metadata"]["generation"], 1);
    // A stale resourceVersion is a Conflict.
    let mut stale = created.object.clone();
    api.patch(
        POD,
        "default",
        "p",
        json!({"metadata": {"labels": {"a": "b"}}}),
        false,
        false,
    )
    .await
    .expect("label");
    stale["metadata"]["labels"] = json!({"x": "y"});
    let e = api.update(POD, "default", stale, false).await.unwrap_err();
    assert_eq!(e.reason, Reason::Conflict);
    // Update never changes the status; UpdateStatus changes only it.
    let mut cur = api.get(POD, "default", "p", false).await.expect("get");
    cur["status"] = json!({"phase": "Running"});
    cur["spec"]["activeDeadlineSeconds"] = json!(60);
    let u = api
        .update(POD, "default", cur.clone(), false)
        .await
        .expect("update");
    assert_eq!(u.object["status"]["phase"], "Pending");
    assert_eq!(u.object["metadata"]["generation"], 2);
    let s = api
        .patch(
            POD,
            "default",
            "p",
            json!({"status": {"phase": "Running"}}),
            true,
            false,
        )
        .await
        .expect("status");
    assert_eq!(s.object["status"]["phase"], "Running");
    assert_eq!(
        s.object["metadata"]["generation"], 2,
        "status is not a spec change"
    );
    // Nothing to change: nothing written.
    let n = api
        .patch(
            POD,
            "default",
            "p",
            json!({"status": {"phase": "Running"}}),
            true,
            false,
        )
        .await
        .expect("no-op");
    assert!(!n.changed);
}

#[tokio::test]
async fn apply_creates_configures_and_keeps_other_writers_fields() {
    let (_store, api) = server().await;
    let m1 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "default"}, "data": {"x": "1", "y": "2"}});
    let (_, action) = api.apply("", m1.clone(), false).await.expect("apply");
    assert_eq!(action, "created");
    let (_, action) = api.apply("", m1, false).await.expect("apply again");
    assert_eq!(action, "unchanged");
    api.patch(
        CM,
        "default",
        "a",
        json!({"data": {"other": "kept"}}),
        false,
        false,
    )
    .await
    .expect("other writer");
    let m2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "default"}, "data": {"x": "1"}});
    let (w, action) = api.apply("", m2, false).await.expect("apply 2");
    assert_eq!(action, "configured");
    assert_eq!(w.object["data"], json!({"x": "1", "other": "kept"}));
}

#[test]
fn apply_remembers_only_the_manifest() {
    let manifest = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "a", "resourceVersion": "7", "uid": "u",
            "annotations": {LAST_APPLIED: "{}", "keep": "x"}},
        "data": {"k": "v"}, "status": {"ignored": true}});
    assert_eq!(
        applied_config(&manifest),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "a", "annotations": {"keep": "x"}}, "data": {"k": "v"}})
    );
}

fn svc(name: &str, ty: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"type": ty, "selector": {"app": name}, "ports": [{"port": 80}]}})
}

fn node_port(svc: &Value) -> i64 {
    svc["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .expect("a node port")
}

/// A server with two node ports, one of them held by NodePort Service `a`
/// (the port returned).
async fn one_of_two_node_ports_held() -> (MemStore, ApiServer, i64) {
    let cfg = ApiConfig {
        services: ServiceRanges::parse("10.96.0.0/24", "30000-30001").expect("ranges"),
        ..Default::default()
    };
    let (store, api) = server_with(cfg).await;
    let a = api
        .create(SVC, "default", svc("a", "NodePort"), false)
        .await
        .expect("a");
    let a_port = node_port(&a.object);
    (store, api, a_port)
}

#[tokio::test]
async fn a_service_update_picks_again_when_its_pick_is_taken() {
    // Two node ports: one held by `a`, so an update of `b` to NodePort has
    // one free port. A pick of the taken one must be picked again (it was
    // the server's own pick), never reported as "already allocated".
    let (_store, api, a_port) = one_of_two_node_ports_held().await;
    api.create(SVC, "default", svc("b", "ClusterIP"), false)
        .await
        .expect("b");
    for _ in 0..20 {
        let w = api
            .patch(
                SVC,
                "default",
                "b",
                json!({"spec": {"type": "NodePort"}}),
                false,
                false,
            )
            .await
            .expect("b to NodePort");
        let b_port = node_port(&w.object);
        assert_ne!(b_port, a_port);
        let back = json!({"spec": {"type": "ClusterIP", "externalTrafficPolicy": null, "ports": [{"port": 80}]}});
        api.patch(SVC, "default", "b", back, false, false)
            .await
            .expect("b back to ClusterIP");
    }
    // A port the caller names and someone holds is an error.
    let e = api
        .patch(
            SVC,
            "default",
            "b",
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": a_port}]}}),
            false,
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason, Reason::Invalid);
    assert!(
        e.message.contains("provided port is already allocated"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn a_service_create_picks_again_when_its_pick_is_taken() {
    // As above, on create: each round allocates from the object as given,
    // so a retry after the server's pick was taken picks again rather
    // than keep it as if the caller had named it.
    let (_store, api, a_port) = one_of_two_node_ports_held().await;
    for _ in 0..20 {
        let b = api
            .create(SVC, "default", svc("b", "NodePort"), false)
            .await
            .expect("b");
        let b_port = node_port(&b.object);
        assert_ne!(b_port, a_port);
        api.delete(SVC, "default", "b", &DeleteParams::default())
            .await
            .expect("delete b");
    }
}

// ---- delete ----

#[tokio::test]
async fn deletes_honour_preconditions_finalizers_and_propagation() {
    let (store, api) = server().await;
    let a = api.create(CM, "default", cm("a"), false).await.expect("a");
    let e = api
        .delete(
            CM,
            "default",
            "a",
            &DeleteParams {
                precondition_uid: "other".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason, Reason::Conflict);
    let (v, gone) = api
        .delete(
            CM,
            "default",
            "a",
            &DeleteParams {
                propagation: Some(Propagation::Foreground),
                ..Default::default()
            },
        )
        .await
        .expect("foreground");
    assert!(!gone);
    assert_eq!(v["metadata"]["finalizers"], json!([FOREGROUND_FINALIZER]));
    assert!(store.get_raw(&object_key(CM, "default", "a")).is_some());
    // Removing the last finalizer of a terminating object deletes it.
    api.patch(
        CM,
        "default",
        "a",
        json!({"metadata": {"finalizers": null}}),
        false,
        false,
    )
    .await
    .expect("finish");
    assert!(store.get_raw(&object_key(CM, "default", "a")).is_none());
    let _ = a;
    let e = api
        .delete(NS, "", "default", &DeleteParams::default())
        .await
        .unwrap_err();
    assert_eq!(e.reason, Reason::Forbidden);
}

#[tokio::test]
async fn a_shorter_grace_period_never_moves_the_deadline_later() {
    let clock = TestClock::new();
    let store = MemStore::new();
    let api =
        ApiServer::new(Arc::new(store.clone()), ApiConfig::default()).with_clock(clock.clock());
    api.ensure_namespaces().await.expect("namespaces");
    api.create(POD, "default", pod("p", "node-1"), false)
        .await
        .expect("pod");
    let grace = |g| DeleteParams {
        grace_period_seconds: Some(g),
        ..Default::default()
    };
    let (v, gone) = api
        .delete(POD, "default", "p", &grace(30))
        .await
        .expect("delete 30");
    assert!(!gone, "a bound pod waits for its agent");
    let first = str_at(&v, "/metadata/deletionTimestamp").to_string();
    assert_eq!(first, "2026-01-01T00:00:30Z");
    // 25 s later, a deletion with 10 s: Kubernetes counts the new grace from
    // when the deletion started (00:00:10), it does not push the deadline
    // to 00:00:35.
    clock.advance(25);
    let (v, _) = api
        .delete(POD, "default", "p", &grace(10))
        .await
        .expect("delete 10");
    assert_eq!(
        str_at(&v, "/metadata/deletionTimestamp"),
        "2026-01-01T00:00:10Z"
    );
    assert_eq!(v["metadata"]["deletionGracePeriodSeconds"], 10);
    // A longer one changes nothing.
    let (v, _) = api
        .delete(POD, "default", "p", &grace(60))
        .await
        .expect("delete 60");
    assert_eq!(
        str_at(&v, "/metadata/deletionTimestamp"),
        "2026-01-01T00:00:10Z"
    );
    // Grace 0 deletes at once.
    let (_, gone) = api
        .delete(POD, "default", "p", &grace(0))
        .await
        .expect("force");
    assert!(gone);
}

// ---- bind ----

#[tokio::test]
async fn bind_sets_the_node_once_and_refuses_a_second_binding() {
    let (_store, api) = server().await;
    api.create(POD, "default", pod("p", ""), false)
        .await
        .expect("pod");
    let b = api.bind("default", "p", "n1").await.expect("bind");
    assert_eq!(b["spec"]["nodeName"], "n1");
    assert_eq!(b["status"]["conditions"][0]["type"], "PodScheduled");
    assert_eq!(b["status"]["conditions"][0]["status"], "True");
    let e = api.bind("default", "p", "n2").await.unwrap_err();
    assert_eq!(e.reason, Reason::Conflict);
    assert!(
        e.message.contains("already assigned to node \"n1\""),
        "{}",
        e.message
    );
    assert_eq!(
        api.bind("default", "missing", "n1")
            .await
            .unwrap_err()
            .reason,
        Reason::NotFound
    );
    assert_eq!(
        api.bind("default", "p", "").await.unwrap_err().reason,
        Reason::Invalid
    );
}

#[tokio::test]
async fn concurrent_binds_bind_each_pod_exactly_once() {
    let (_store, api) = server().await;
    api.create(POD, "default", pod("p", ""), false)
        .await
        .expect("pod");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move { api.bind("default", "p", &format!("n{i}")).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.reason, Reason::Conflict),
        }
    }
    assert_eq!(ok, 1);
}

// ---- fencing ----

#[tokio::test]
async fn a_fenced_write_is_refused_once_its_term_is_over() {
    let (store, api) = server().await;
    store.set_term(3);
    let leader = api.fenced(3);
    leader
        .create(CM, "default", cm("a"), false)
        .await
        .expect("in term");
    store.set_term(4);
    let before = store.revision();
    let e = leader
        .create(CM, "default", cm("b"), false)
        .await
        .unwrap_err();
    assert_eq!(e.reason, Reason::Unavailable);
    assert!(e.message.contains("term 3 is over"), "{}", e.message);
    let e = leader
        .patch(
            CM,
            "default",
            "a",
            json!({"data": {"x": "y"}}),
            false,
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason, Reason::Unavailable);
    assert_eq!(store.revision(), before, "nothing written");
    // Reads are not fenced.
    leader.get(CM, "default", "a", false).await.expect("read");
}

// ---- watch ----

async fn next(rx: &mut WatchReceiver) -> (EventType, Value) {
    let (t, b) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event in time")
        .expect("open")
        .expect("not an error");
    (t, serde_json::from_slice(&b).expect("json"))
}

#[tokio::test]
async fn watches_deliver_in_order_through_selectors() {
    let (_store, api) = server().await;
    let start = api
        .create(CM, "default", cm("before"), false)
        .await
        .expect("before");
    let mut all = api
        .watch(
            CM,
            "default",
            &WatchParams {
                resource_version: rv(&start.object).to_string(),
                ..Default::default()
            },
        )
        .await
        .expect("watch");
    let mut sel = api
        .watch(
            CM,
            "default",
            &WatchParams {
                label_selector: "app=x".into(),
                resource_version: rv(&start.object).to_string(),
                ..Default::default()
            },
        )
        .await
        .expect("watch selector");
    api.create(CM, "default", cm("a"), false).await.expect("a");
    api.patch(
        CM,
        "default",
        "a",
        json!({"metadata": {"labels": {"app": "x"}}}),
        false,
        false,
    )
    .await
    .expect("label");
    api.patch(
        CM,
        "default",
        "a",
        json!({"metadata": {"labels": {"app": "y"}}}),
        false,
        false,
    )
    .await
    .expect("relabel");
    api.delete(CM, "default", "a", &DeleteParams::default())
        .await
        .expect("delete");
    let kinds: Vec<EventType> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(next(&mut all).await.0);
        }
        v
    };
    assert_eq!(
        kinds,
        [
            EventType::Added,
            EventType::Modified,
            EventType::Modified,
            EventType::Deleted
        ]
    );
    // Through the selector: ADDED when it starts matching, DELETED when it stops.
    assert_eq!(next(&mut sel).await.0, EventType::Added);
    assert_eq!(next(&mut sel).await.0, EventType::Deleted);
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_ends_gone() {
    let (store, api) = server().await;
    let a = api.create(CM, "default", cm("a"), false).await.expect("a");
    for i in 0..3 {
        api.patch(
            CM,
            "default",
            "a",
            json!({"data": {"i": i.to_string()}}),
            false,
            false,
        )
        .await
        .expect("patch");
    }
    store.compact(store.revision());
    let mut rx = api
        .watch(
            CM,
            "default",
            &WatchParams {
                resource_version: rv(&a.object).to_string(),
                ..Default::default()
            },
        )
        .await
        .expect("watch");
    let e = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("in time")
        .expect("open")
        .unwrap_err();
    assert_eq!(e.reason, Reason::Gone);
}

/// A store whose watches report a delete without the object's last version
/// (physical compaction raced the history read).
struct LosesPrev(MemStore);

#[async_trait::async_trait]
impl Store for LosesPrev {
    async fn range(
        &self,
        s: &[u8],
        e: &[u8],
        l: usize,
        r: i64,
        lin: bool,
    ) -> Result<Page, StoreError> {
        self.0.range(s, e, l, r, lin).await
    }
    async fn txn(&self, t: Txn) -> Result<TxnResult, StoreError> {
        self.0.txn(t).await
    }
    fn watch(&self, start: &[u8], end: &[u8], from: i64) -> WatchStream {
        let mut inner = self.0.watch(start, end, from);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(m) = inner.rx.recv().await {
                let m = match m {
                    WatchMsg::Changes { revision, changes } => WatchMsg::Changes {
                        revision,
                        changes: changes
                            .into_iter()
                            .map(|c| match c {
                                Change::Delete { key, .. } => Change::Delete { key, prev: None },
                                c => c,
                            })
                            .collect(),
                    },
                    m => m,
                };
                if tx.send(m).await.is_err() {
                    return;
                }
            }
        });
        WatchStream {
            start_revision: inner.start_revision,
            progress: inner.progress,
            rx,
        }
    }
    fn revision(&self) -> i64 {
        self.0.revision()
    }
    async fn current_revision(&self) -> Result<i64, StoreError> {
        self.0.current_revision().await
    }
    fn compact_revision(&self) -> i64 {
        self.0.compact_revision()
    }
    fn max_value_bytes(&self) -> usize {
        self.0.max_value_bytes()
    }
}

#[tokio::test]
async fn a_delete_the_store_cannot_read_comes_from_the_cache_or_ends_the_watch_gone() {
    let mem = MemStore::new();
    let api = ApiServer::new(Arc::new(LosesPrev(mem.clone())), ApiConfig::default());
    api.ensure_namespaces().await.expect("namespaces");
    let a = api.create(CM, "default", cm("a"), false).await.expect("a");
    api.create(CM, "default", cm("b"), false).await.expect("b");
    // A consistent list: the kind's cache has loaded and is at b.
    api.list(CM, "default", &ListParams::default())
        .await
        .expect("list");
    // Both paths: the watch cache (a recent start) and the store's own
    // history (a start before the cache's window).
    let mut cached = api
        .watch(
            CM,
            "default",
            &WatchParams {
                resource_version: mem.revision().to_string(),
                ..Default::default()
            },
        )
        .await
        .expect("watch");
    let mut history = api
        .watch(
            CM,
            "default",
            &WatchParams {
                resource_version: rv(&a.object).to_string(),
                ..Default::default()
            },
        )
        .await
        .expect("watch history");
    api.delete(CM, "default", "a", &DeleteParams::default())
        .await
        .expect("delete");
    api.create(CM, "default", cm("c"), false).await.expect("c");
    // The cache knows a's last state itself: its watchers get the delete.
    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), cached.recv())
            .await
            .expect("in time")
        {
            Some(Ok((t, o))) => {
                let o: Value = serde_json::from_slice(&o).expect("json");
                got.push((t, str_at(&o, "/metadata/name").to_string()));
            }
            other => panic!("the cached watch ended: {other:?}"),
        }
    }
    assert_eq!(
        got,
        [
            (EventType::Deleted, "a".into()),
            (EventType::Added, "c".into())
        ]
    );
    // The store's own history cannot: that watch ends Gone.
    for rx in [&mut history] {
        let mut got = Vec::new();
        let end = loop {
            match tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("in time")
            {
                Some(Ok((t, _))) => got.push(t),
                Some(Err(e)) => break Some(e),
                None => break None,
            }
        };
        // Whatever came before, the delete is never skipped on to "c".
        assert!(!got.contains(&EventType::Deleted));
        let e = end.expect("the watch ends with an error");
        assert_eq!(e.reason, Reason::Gone, "{}", e.message);
        assert!(got.len() <= 1, "only b's ADDED may come first: {got:?}");
    }
}

// ---- the watch cursor ----

/// Feed (revision) events through a cursor; return the accepted ones.
fn pass(c: &mut Cursor, revs: &[i64]) -> Vec<i64> {
    let mut seen = (0, 0);
    revs.iter()
        .copied()
        .filter(|r| c.accept(*r, &mut seen))
        .collect()
}

#[test]
fn a_resumed_cursor_skips_exactly_what_was_forwarded() {
    let mut c = Cursor::starting_at(10);
    assert_eq!(c.resume_from(), 10);
    // Events of revisions before the start (a cache that had not yet
    // reached them when the watcher joined) are not delivered.
    assert_eq!(pass(&mut c, &[8, 9, 9]), Vec::<i64>::new());
    // Revision 11 has three events; the stream breaks after the second.
    assert_eq!(pass(&mut c, &[10, 11, 11]), [10, 11, 11]);
    assert_eq!(c.resume_from(), 11);
    // Resuming from 11 replays its three events: only the third is new.
    assert_eq!(pass(&mut c, &[11, 11, 11, 12]), [11, 12]);
    // Revision 12 may have more events to come: resume from it.
    assert_eq!(c.resume_from(), 12);
    // Old revisions (a window that reaches further back) are skipped.
    assert_eq!(pass(&mut c, &[5, 12, 12, 13]), [12, 13]);
}
