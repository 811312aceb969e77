//! The controller runtime against the API server over the in-memory store:
//! informers, controllers and leader loops, without processes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_client::Api;
use flotilla_control::memstore::MemStore;
use flotilla_control::{ApiConfig, ApiServer, Store};
use flotilla_objects::api::{DeleteParams, ObjectApi, Reason};
use flotilla_objects::core::{ConfigMap, Pod};
use flotilla_objects::{ObjectMeta, OwnerReference};
use flotilla_runtime::informer::{BY_LABEL, BY_NAMESPACE, BY_OWNER};
use flotilla_runtime::{
    Action, Change, Controller, Informer, Informers, LeaderContext, LeaderLoop, Manager, ObjectRef,
    Reconciler,
};
use futures::future::BoxFuture;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

async fn setup() -> (MemStore, ApiServer) {
    let store = MemStore::new();
    let api = ApiServer::new(Arc::new(store.clone()), ApiConfig::default());
    api.ensure_namespaces().await.expect("namespaces");
    (store, api)
}

fn cm(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn next<K: Clone + std::fmt::Debug>(
    sub: &mut flotilla_runtime::Subscription<K>,
) -> Change<K> {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a change in time")
        .expect("informer running")
}

/// An index answers in namespace and name order, however it files them.
#[tokio::test]
async fn an_index_lists_its_objects_by_namespace_and_name() {
    let (_store, api) = setup().await;
    let dyn_api: Arc<dyn ObjectApi> = Arc::new(api.clone());
    let cms = Api::<ConfigMap>::namespaced_with(dyn_api.clone(), "default");
    let inf = Informer::<ConfigMap>::spawn(dyn_api);
    assert!(inf.wait_synced(Duration::from_secs(5)).await);
    let mut sub = inf.subscribe();
    // Created out of order; enough of them that a hash set's order is not
    // sorted by chance.
    let names: Vec<String> = (0..64)
        .map(|i| format!("cm-{:02}", (i * 37) % 64))
        .collect();
    for n in &names {
        let mut c = cm(n);
        c.metadata.labels.insert("app".into(), "web".into());
        cms.create(&c).await.expect("create");
    }
    for _ in &names {
        assert!(matches!(next(&mut sub).await, Change::Added(_)));
    }
    let mut sorted = names.clone();
    sorted.sort();
    for (index, value) in [(BY_NAMESPACE, "default"), (BY_LABEL, "app=web")] {
        let got: Vec<String> = inf
            .by_index(index, value)
            .iter()
            .map(|c| c.metadata.name.clone())
            .collect();
        assert_eq!(got, sorted, "{index}");
    }
}

#[tokio::test]
async fn an_informer_reports_each_change_with_old_and_new_and_indexes_them() {
    let (_store, api) = setup().await;
    let dyn_api: Arc<dyn ObjectApi> = Arc::new(api.clone());
    let cms = Api::<ConfigMap>::namespaced_with(dyn_api.clone(), "default");
    cms.create(&cm("before")).await.expect("before");
    let inf = Informer::<ConfigMap>::spawn(dyn_api);
    assert!(inf.wait_synced(Duration::from_secs(5)).await);
    assert!(inf.get("default", "before").is_some());
    let mut sub = inf.subscribe();

    let mut owned = cm("a");
    owned.metadata.labels.insert("app".into(), "web".into());
    owned.metadata.owner_references = vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "before".into(),
        uid: "owner-uid".into(),
        controller: Some(true),
        ..Default::default()
    }];
    cms.create(&owned).await.expect("a");
    assert!(matches!(next(&mut sub).await, Change::Added(k) if k.metadata.name == "a"));
    cms.patch("a", &json!({"data": {"x": "1"}}))
        .await
        .expect("patch");
    match next(&mut sub).await {
        Change::Updated { old, new } => {
            assert!(old.data.is_empty());
            assert_eq!(new.data.get("x").map(String::as_str), Some("1"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(inf.by_index(BY_OWNER, "owner-uid").len(), 1);
    assert_eq!(inf.by_index(BY_LABEL, "app=web").len(), 1);
    assert_eq!(inf.by_index(BY_NAMESPACE, "default").len(), 2);
    inf.add_index(
        "data-x",
        Arc::new(|c: &ConfigMap| c.data.get("x").cloned().into_iter().collect()),
    );
    assert_eq!(inf.by_index("data-x", "1").len(), 1);
    cms.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    match next(&mut sub).await {
        Change::Deleted(last) => assert_eq!(last.data.get("x").map(String::as_str), Some("1")),
        other => panic!("{other:?}"),
    }
    assert!(inf.by_index(BY_OWNER, "owner-uid").is_empty());
    assert!(inf.by_index("data-x", "1").is_empty());
}

#[tokio::test]
async fn an_informer_relists_after_compaction_and_reports_the_difference() {
    let (store, api) = setup().await;
    let dyn_api: Arc<dyn ObjectApi> = Arc::new(api.clone());
    let cms = Api::<ConfigMap>::namespaced_with(dyn_api.clone(), "default");
    cms.create(&cm("a")).await.expect("a");
    let inf = Informer::<ConfigMap>::spawn(dyn_api);
    assert!(inf.wait_synced(Duration::from_secs(5)).await);
    // The informer's watch ends and cannot resume (its master restarts)
    // while changes happen and are compacted away: it must relist.
    let mut sub = inf.subscribe();
    store.pause_watches(true);
    cms.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    cms.create(&cm("b")).await.expect("b");
    store.compact(store.revision());
    store.pause_watches(false);
    let mut seen: HashMap<String, &str> = HashMap::new();
    while seen.len() < 2 {
        match next(&mut sub).await {
            Change::Added(k) => seen.insert(k.metadata.name.clone(), "added"),
            Change::Deleted(k) => seen.insert(k.metadata.name.clone(), "deleted"),
            _ => None,
        };
    }
    assert_eq!(seen.get("a"), Some(&"deleted"));
    assert_eq!(seen.get("b"), Some(&"added"));
    assert_eq!(inf.keys(), vec![ObjectRef::new("default", "b")]);
}

/// Counts reconciles per key, and checks no key is reconciled twice at once.
#[derive(Default)]
struct Counter {
    calls: Mutex<HashMap<ObjectRef, usize>>,
    in_flight: Mutex<HashMap<ObjectRef, usize>>,
    overlaps: AtomicUsize,
    fail_first: Mutex<HashMap<String, usize>>,
}

#[async_trait::async_trait]
impl Reconciler<ConfigMap> for Counter {
    type Error = String;
    async fn reconcile(
        &self,
        key: &ObjectRef,
        _obj: Option<Arc<ConfigMap>>,
    ) -> Result<Action, String> {
        {
            let mut f = self.in_flight.lock().expect("lock");
            let n = f.entry(key.clone()).or_default();
            *n += 1;
            if *n > 1 {
                self.overlaps.fetch_add(1, Ordering::SeqCst);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        *self
            .in_flight
            .lock()
            .expect("lock")
            .entry(key.clone())
            .or_default() -= 1;
        *self
            .calls
            .lock()
            .expect("lock")
            .entry(key.clone())
            .or_default() += 1;
        let mut fails = self.fail_first.lock().expect("lock");
        if let Some(n) = fails.get_mut(&key.name) {
            if *n > 0 {
                *n -= 1;
                return Err(format!("{key} failed on purpose"));
            }
        }
        Ok(Action::Await)
    }
}

#[tokio::test]
async fn a_controller_reconciles_owners_of_changed_children_and_retries_failures() {
    let (_store, api) = setup().await;
    let dyn_api: Arc<dyn ObjectApi> = Arc::new(api.clone());
    let informers = Informers::new(dyn_api.clone());
    let cms = Api::<ConfigMap>::namespaced_with(dyn_api.clone(), "default");
    let parent = cms.create(&cm("parent")).await.expect("parent");
    let r = Arc::new(Counter::default());
    r.fail_first.lock().expect("lock").insert("flaky".into(), 3);
    let stop = CancellationToken::new();
    let ctl = Controller::new("test", informers.get::<ConfigMap>())
        .owns(informers.get::<Pod>())
        .workers(4);
    let task = tokio::spawn(ctl.run(r.clone(), stop.clone()));
    let calls = |name: &str| {
        r.calls
            .lock()
            .expect("lock")
            .get(&ObjectRef::new("default", name))
            .copied()
            .unwrap_or(0)
    };
    eventually("the parent is reconciled at start", || calls("parent") >= 1).await;
    // A pod controlled by the parent: its change reconciles the parent.
    let before = calls("parent");
    let pods = Api::<Pod>::namespaced_with(dyn_api.clone(), "default");
    let mut p: Pod =
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default",
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "parent",
            "uid": parent.metadata.uid, "controller": true}]},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
        .expect("pod");
    p = pods.create(&p).await.expect("pod");
    eventually("the owner is reconciled for its pod", || {
        calls("parent") > before
    })
    .await;
    // Failures come back (three times, then success).
    cms.create(&cm("flaky")).await.expect("flaky");
    eventually("the flaky key is retried until it succeeds", || {
        calls("flaky") >= 4
    })
    .await;
    // Many changes of one key: never two reconciles at once.
    for i in 0..20 {
        cms.patch("parent", &json!({"data": {"i": i.to_string()}}))
            .await
            .expect("patch");
    }
    let _ = p;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(r.overlaps.load(Ordering::SeqCst), 0);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the controller stops")
        .expect("task");
}

#[tokio::test]
async fn a_periodic_resync_reconciles_unchanged_keys_and_none_means_never() {
    let (_store, api) = setup().await;
    let dyn_api: Arc<dyn ObjectApi> = Arc::new(api.clone());
    let informers = Informers::new(dyn_api.clone());
    let cms = Api::<ConfigMap>::namespaced_with(dyn_api.clone(), "default");
    cms.create(&cm("a")).await.expect("a");
    cms.create(&cm("b")).await.expect("b");
    let stop = CancellationToken::new();
    let (resyncing, still) = (Arc::new(Counter::default()), Arc::new(Counter::default()));
    let fast = Controller::new("resyncing", informers.get::<ConfigMap>())
        .resync_every(Some(Duration::from_millis(40)));
    let never = Controller::new("never", informers.get::<ConfigMap>()).resync_every(None);
    let tasks = [
        tokio::spawn(fast.run(resyncing.clone(), stop.clone())),
        tokio::spawn(never.run(still.clone(), stop.clone())),
    ];
    let calls = |r: &Counter, name: &str| {
        r.calls
            .lock()
            .expect("lock")
            .get(&ObjectRef::new("default", name))
            .copied()
            .unwrap_or(0)
    };
    eventually("both controllers reconcile each key at start", || {
        ["a", "b"]
            .iter()
            .all(|n| calls(&resyncing, n) >= 1 && calls(&still, n) >= 1)
    })
    .await;
    // Nothing changes from here on: only the resync brings keys back.
    eventually(
        "every key is reconciled again and again by the resync",
        || ["a", "b"].iter().all(|n| calls(&resyncing, n) >= 4),
    )
    .await;
    // The same time passed for the controller without a resync, over the
    // same unchanged objects: it reconciled each key once, at start.
    assert_eq!((calls(&still, "a"), calls(&still, "b")), (1, 1));
    stop.cancel();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .expect("the controller stops")
            .expect("task");
    }
}

/// A leader loop that writes a ConfigMap named after its term every few
/// milliseconds, and records when it runs.
struct Writer {
    log: Arc<Mutex<Vec<(u64, &'static str)>>>,
    refused: Arc<AtomicUsize>,
}

impl LeaderLoop for Writer {
    fn name(&self) -> &'static str {
        "writer"
    }
    fn run(&self, ctx: LeaderContext) -> BoxFuture<'static, ()> {
        let (log, refused) = (self.log.clone(), self.refused.clone());
        Box::pin(async move {
            log.lock().expect("lock").push((ctx.term, "start"));
            let cms = Api::<ConfigMap>::namespaced_with(ctx.api.clone(), "default");
            let mut i = 0u64;
            loop {
                tokio::select! {
                    _ = ctx.stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(2)) => {}
                }
                i += 1;
                let res = cms.create(&cm(&format!("t{}-{i}", ctx.term))).await;
                if let Err(e) = res {
                    if e.is(Reason::Unavailable) && e.message.contains("is over") {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            // Slow to stop: the next term must wait for this.
            tokio::time::sleep(Duration::from_millis(30)).await;
            log.lock().expect("lock").push((ctx.term, "stop"));
        })
    }
}

#[tokio::test]
async fn leader_loops_start_and_stop_with_leadership_and_never_overlap() {
    let (store, api) = setup().await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let api2 = api.clone();
    let mut m = Manager::new(
        "m1",
        Arc::new(move |term| Arc::new(api2.fenced(term)) as Arc<dyn ObjectApi>),
    );
    m.add(Arc::new(Writer {
        log: log.clone(),
        refused: refused.clone(),
    }));
    let m = Arc::new(m);
    let (lead_tx, lead_rx) = watch::channel(None);
    let shutdown = CancellationToken::new();
    let task = {
        let (m, s) = (m.clone(), shutdown.clone());
        tokio::spawn(async move { m.run(lead_rx, s).await })
    };
    let mut running = m.running();
    for term in [3u64, 5, 6] {
        store.set_term(term);
        lead_tx.send_replace(Some(term));
        tokio::time::timeout(Duration::from_secs(5), running.wait_for(|t| *t == term))
            .await
            .expect("loops start")
            .expect("manager");
        let written = |t: u64| {
            store
                .keys_with_prefix(format!("/registry/configmaps/default/t{t}-").as_bytes())
                .len()
        };
        eventually("the loop writes in its term", || written(term) >= 3).await;
        // The store moves on to a new term before this master notices (a
        // new leader elsewhere): the loop's writes are refused meanwhile.
        store.set_term(term + 100);
        let at_term_end = written(term);
        let refused_before = refused.load(Ordering::SeqCst);
        eventually("the loop, still running, has its writes refused", || {
            refused.load(Ordering::SeqCst) >= refused_before + 3
        })
        .await;
        lead_tx.send_replace(None);
        tokio::time::timeout(Duration::from_secs(5), running.wait_for(|t| *t == 0))
            .await
            .expect("loops stop")
            .expect("manager");
        // Nothing the loop wrote landed once its term was over, though it
        // kept writing until it was stopped.
        assert_eq!(
            written(term),
            at_term_end,
            "a write of term {term} landed after the term ended"
        );
    }
    shutdown.cancel();
    task.await.expect("manager task");
    let log = log.lock().expect("lock").clone();
    assert_eq!(
        log,
        vec![
            (3, "start"),
            (3, "stop"),
            (5, "start"),
            (5, "stop"),
            (6, "start"),
            (6, "stop")
        ],
        "each term's loop stops before the next starts"
    );
}
