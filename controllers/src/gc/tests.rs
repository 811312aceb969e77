//! The garbage collector against the API server over the in-memory store.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use flotilla_control::memstore::MemStore;
use flotilla_control::{ApiConfig, ApiServer};
use flotilla_objects::api::{DeleteParams, ListParams, ObjectApi, Propagation};
use flotilla_objects::core::Node;
use flotilla_runtime::{Informer, Informers, LeaderContext};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::*;

/// The orphan-pod quarantine in these tests.
const QUARANTINE: Duration = Duration::from_secs(1);

struct Env {
    store: MemStore,
    api: ApiServer,
    stop: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn env_with(informers: impl FnOnce(&ApiServer, &MemStore) -> Informers) -> Env {
    let store = MemStore::new();
    store.set_term(1);
    let api = ApiServer::new(Arc::new(store.clone()), ApiConfig::default());
    api.ensure_namespaces().await.expect("namespaces");
    let stop = CancellationToken::new();
    let fenced: Arc<dyn ObjectApi> = Arc::new(api.fenced(1));
    let ctx = LeaderContext {
        term: 1,
        api: fenced,
        informers: informers(&api, &store),
        stop: stop.clone(),
    };
    tokio::spawn(run(ctx, QUARANTINE));
    Env { store, api, stop }
}

async fn env() -> Env {
    env_with(|api, _| Informers::new(Arc::new(api.fenced(1)))).await
}

fn cm(name: &str, owners: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default", "ownerReferences": owners}})
}

fn owner_ref(v: &Value) -> Value {
    json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": v["metadata"]["name"],
        "uid": v["metadata"]["uid"], "controller": true}])
}

async fn create(e: &Env, v: Value) -> Value {
    e.api
        .create(&registry::CONFIG_MAP, "default", v, false)
        .await
        .expect("create")
        .object
}

fn exists(e: &Env, name: &str) -> bool {
    e.store
        .get_raw(format!("/registry/configmaps/default/{name}").as_bytes())
        .is_some()
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn create_node(e: &Env, name: &str) {
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
    e.api
        .create(&registry::NODE, "", node, false)
        .await
        .expect("node");
}

/// A pod in `default` already bound to `node`.
async fn bind_pod(e: &Env, pod: &str, node: &str) {
    let p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}});
    e.api
        .create(&registry::POD, "default", p, false)
        .await
        .expect("pod");
}

async fn delete(e: &Env, name: &str, p: Option<Propagation>) {
    e.api
        .delete(
            &registry::CONFIG_MAP,
            "default",
            name,
            &DeleteParams {
                propagation: p,
                ..Default::default()
            },
        )
        .await
        .expect("delete");
}

#[tokio::test]
async fn background_deletion_removes_dependents_after_their_owner() {
    let e = env().await;
    let owner = create(&e, cm("owner", json!([]))).await;
    create(&e, cm("dep", owner_ref(&owner))).await;
    delete(&e, "owner", None).await;
    until("the dependent is deleted", || !exists(&e, "dep")).await;
}

#[tokio::test]
async fn foreground_deletion_waits_for_dependents() {
    let e = env().await;
    let owner = create(&e, cm("owner", json!([]))).await;
    let dep = create(&e, cm("dep", owner_ref(&owner))).await;
    create(&e, cm("grandchild", owner_ref(&dep))).await;
    delete(&e, "owner", Some(Propagation::Foreground)).await;
    until("the whole tree is gone", || {
        !exists(&e, "owner") && !exists(&e, "dep") && !exists(&e, "grandchild")
    })
    .await;
}

#[tokio::test]
async fn orphaning_keeps_dependents_without_the_reference() {
    let e = env().await;
    let owner = create(&e, cm("owner", json!([]))).await;
    create(&e, cm("dep", owner_ref(&owner))).await;
    delete(&e, "owner", Some(Propagation::Orphan)).await;
    until("the owner is gone", || !exists(&e, "owner")).await;
    let dep = e
        .api
        .get(&registry::CONFIG_MAP, "default", "dep", false)
        .await
        .expect("dep kept");
    assert!(dep["metadata"].get("ownerReferences").is_none(), "{dep}");
}

#[tokio::test]
async fn a_namespace_goes_once_its_contents_are_gone() {
    let e = env().await;
    e.api
        .create(
            &registry::NAMESPACE,
            "",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "t"}}),
            false,
        )
        .await
        .expect("ns");
    for i in 0..5 {
        e.api
            .create(&registry::CONFIG_MAP, "t", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}")}}), false)
            .await
            .expect("cm");
    }
    // Kinds the collector once did not look after: the namespace went and
    // they stayed, to come back with a namespace of the same name.
    let others = [
        (
            &registry::ROLE,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "r"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        ),
        (
            &registry::ROLE_BINDING,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding", "metadata": {"name": "rb"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "u"}]}),
        ),
        (
            &registry::LEASE,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "l"}, "spec": {"holderIdentity": "x"}}),
        ),
    ];
    for (info, v) in others {
        e.api.create(info, "t", v, false).await.expect(info.kind);
    }
    e.api
        .delete(&registry::NAMESPACE, "", "t", &DeleteParams::default())
        .await
        .expect("delete ns");
    until("the namespace is gone", || {
        e.store.get_raw(b"/registry/namespaces/t").is_none()
    })
    .await;
    for kind in ["configmaps", "roles", "rolebindings", "leases"] {
        let left: Vec<String> = e
            .store
            .keys_with_prefix(format!("/registry/{kind}/t/").as_bytes())
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert!(
            left.is_empty(),
            "{kind} left in a deleted namespace: {left:?}"
        );
    }
}

#[tokio::test]
async fn the_collector_looks_after_every_kind_the_api_serves() {
    let store = MemStore::new();
    let api = ApiServer::new(Arc::new(store), ApiConfig::default());
    let kinds = Kinds::new(&Informers::new(Arc::new(api.fenced(1))));
    let mut seen: Vec<&str> = kinds.all().iter().map(|k| k.info().plural).collect();
    let mut served: Vec<&str> = registry::RESOURCES.iter().map(|r| r.plural).collect();
    seen.sort_unstable();
    served.sort_unstable();
    assert_eq!(seen, served, "the collector's kinds and the API's differ");
}

#[tokio::test]
async fn an_owner_of_a_kind_not_served_keeps_its_dependents() {
    let e = env().await;
    // A control: an owner of a kind this cluster serves, which does not
    // exist, so its dependent is deleted. Once that happened, the
    // collector has looked at both objects.
    create(&e, cm("dangling", json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "nobody", "uid": "no-such-uid"}]))).await;
    create(&e, cm("foreign", json!([{"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "widget-uid"}]))).await;
    create(
        &e,
        cm(
            "mixed",
            json!([
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "nobody", "uid": "no-such-uid"},
        {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "widget-uid"}]),
        ),
    )
    .await;
    until("the dangling dependent is deleted", || {
        !exists(&e, "dangling")
    })
    .await;
    // Let the collector's queue drain past the other two keys.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        exists(&e, "foreign"),
        "an owner of an unknown kind may exist"
    );
    assert!(
        exists(&e, "mixed"),
        "one unresolvable owner is enough to keep it"
    );
}

#[tokio::test]
async fn a_pod_of_a_node_missing_only_from_the_cache_is_not_deleted() {
    // The collector's node cache has not seen node n1 (it follows a copy
    // that is behind: here, one that never gets it); a linearizable read
    // shows the node exists.
    let e = env_with(|api, _store| {
        let informers = Informers::new(Arc::new(api.fenced(1)));
        let behind = ApiServer::new(Arc::new(MemStore::new()), ApiConfig::default());
        informers.insert(Informer::<Node>::spawn_with(
            Arc::new(behind),
            ListParams::default(),
        ));
        informers
    })
    .await;
    let past = ApiServer::new(e.api.store().clone(), ApiConfig::default())
        .with_clock(Arc::new(|| Utc::now() - chrono::Duration::hours(1)));
    create_node(&e, "n1").await;
    for (pod, on) in [("runs-on-n1", "n1"), ("on-a-missing-node", "gone")] {
        bind_pod(&e, pod, on).await;
        // Deleted an hour ago with 30 s of grace: long over.
        past.delete(&registry::POD, "default", pod, &DeleteParams::default())
            .await
            .expect("delete pod");
    }
    let pod_key = |n: &str| format!("/registry/pods/default/{n}");
    until("the pod of the missing node is deleted", || {
        e.store
            .get_raw(pod_key("on-a-missing-node").as_bytes())
            .is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        e.store.get_raw(pod_key("runs-on-n1").as_bytes()).is_some(),
        "its node exists: its agent completes the deletion"
    );
}

#[tokio::test]
async fn a_pod_bound_to_a_node_that_is_gone_is_deleted_after_the_quarantine() {
    let e = env().await;
    create_node(&e, "n1").await;
    let created = std::time::Instant::now();
    // Bound as the scheduler binds, none of them terminating: one to a
    // node that exists, one to a node that never comes, one to a node
    // that registers within the quarantine.
    for (pod, on) in [("on-n1", "n1"), ("on-gone", "gone"), ("on-late", "late")] {
        bind_pod(&e, pod, on).await;
    }
    create_node(&e, "late").await;
    let pod_key = |n: &str| format!("/registry/pods/default/{n}");
    until("the pod of the node that is gone is deleted", || {
        e.store.get_raw(pod_key("on-gone").as_bytes()).is_none()
    })
    .await;
    assert!(
        created.elapsed() >= QUARANTINE,
        "deleted after {:?}, before the quarantine",
        created.elapsed()
    );
    assert!(e.store.get_raw(pod_key("on-n1").as_bytes()).is_some());
    assert!(
        e.store.get_raw(pod_key("on-late").as_bytes()).is_some(),
        "its node registered within the quarantine"
    );
}
