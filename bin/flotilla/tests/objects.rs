//! The object API of real masters, through the Rust client library: server-set
//! fields and defaults, validation, optimistic concurrency, status, patch and
//! apply, paginated lists and selectors, watches (resumed on another master,
//! bookmarks, compaction), reflectors, deletion (garbage collection,
//! finalizers, grace, namespaces), failover, and stored objects written by a
//! future version.
//!
//! Flotilla only: with `FLOTILLA_TEST_TARGET=etcd` every test here is skipped.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use flotilla_client::client::WatchStream;
use flotilla_client::{
    Api, ApiError, Client, DeleteParams, EventType, ListParams, Propagation, Reason, Reflector,
    WatchEvent, WatchParams,
};
use flotilla_objects::core::{ConfigMap, Pod};
use flotilla_objects::Time;
use serde_json::{json, Value};
use tokio_stream::StreamExt;

// ------------------------------------------------------------------ helpers

fn addrs(c: &Cluster) -> Vec<String> {
    (0..c.masters.len()).map(|i| c.client_addr(i)).collect()
}

/// A client of every master (fails over between them).
fn client_all(c: &Cluster) -> Client {
    Client::connect(&addrs(c)).expect("client")
}

/// A client of master `i` alone.
fn client_at(c: &Cluster, i: usize) -> Client {
    Client::connect(&[c.client_addr(i)]).expect("client")
}

/// The namespaces every cluster has, as in Kubernetes.
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// A 3-master cluster whose namespaces default and kube-system exist, and a
/// client of all its masters; None when the target is etcd.
async fn start(test: &str) -> Option<(Cluster, Client)> {
    if skip_on_etcd(test, false) {
        return None;
    }
    // The API as clients see it: of the controllers only the garbage
    // collector runs (the others would act on the deployments and
    // replica sets these tests write by hand).
    let opts = Opts {
        extra_args: vec!["--controllers=garbage-collector".into()],
        ..Opts::default()
    };
    let cluster = Cluster::start(3, opts).await;
    let client = client_all(&cluster);
    wait_for(
        Duration::from_secs(15),
        "the namespaces default and kube-system exist",
        async || {
            client.get("namespaces", "", "default").await?;
            client.get("namespaces", "", "kube-system").await
        },
    )
    .await;
    Some((cluster, client))
}

/// The string at a JSON pointer, or a panic showing the object.
#[track_caller]
fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {ptr} in {v}"))
}

/// metadata.resourceVersion as a number.
#[track_caller]
fn rv(v: &Value) -> i64 {
    let r = s(v, "/metadata/resourceVersion");
    r.parse()
        .unwrap_or_else(|_| panic!("resourceVersion {r:?} is not a number in {v}"))
}

fn name(v: &Value) -> String {
    s(v, "/metadata/name").to_string()
}

fn names(items: &[Value]) -> Vec<String> {
    items.iter().map(name).collect()
}

/// The error of a call that must fail with `reason`.
#[track_caller]
fn err<T: std::fmt::Debug>(r: Result<T, ApiError>, reason: Reason) -> ApiError {
    match r {
        Ok(v) => panic!("expected {reason} error, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.reason, reason, "wrong reason for error: {}", e.message);
            e
        }
    }
}

fn pod_json(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]},
    })
}

fn cm_json(name: &str, data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": data,
    })
}

fn deployment_json(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]},
            },
        },
    })
}

fn replica_set_json(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"owner": name}},
            "template": {
                "metadata": {"labels": {"owner": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]},
            },
        },
    })
}

/// Names of the objects of `resource` in `ns` matching `labels`.
async fn list_names(c: &Client, resource: &str, ns: &str, labels: &str) -> BTreeSet<String> {
    let l = c
        .list_all(resource, ns, &ListParams::default().labels(labels))
        .await
        .unwrap_or_else(|e| panic!("list {resource} {labels:?}: {e}"));
    names(&l.items).into_iter().collect()
}

/// The next watch event (bookmarks included), within 10 s.
async fn next_event(w: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Err(_) => panic!("no watch event within 10 s"),
        Ok(None) => panic!("the watch stream ended"),
        Ok(Some(Err(e))) => panic!("the watch stream failed: {} ({})", e.message, e.reason),
        Ok(Some(Ok(ev))) => ev,
    }
}

/// The next event must be `kind` for object `obj`; returns its resourceVersion.
#[track_caller]
fn expect_event(ev: &WatchEvent, kind: EventType, obj: &str) -> i64 {
    assert_eq!(
        (ev.kind, name(&ev.object).as_str()),
        (kind, obj),
        "unexpected watch event {:?} {}",
        ev.kind,
        ev.object
    );
    rv(&ev.object)
}

/// The tests' and benchmarks' key layout (`flotilla_testkit`, which cannot
/// depend on the control plane) is the control plane's, for every kind.
#[test]
fn testkit_key_layout_is_the_control_planes() {
    use flotilla_control::api::{kind_prefix, object_key};
    use flotilla_objects::registry::RESOURCES;
    assert!(RESOURCES.iter().any(|r| r.namespaced) && RESOURCES.iter().any(|r| !r.namespaced));
    for &info in RESOURCES {
        let ns = if info.namespaced { "ns1" } else { "" };
        let key = flotilla_testkit::object_key(info.plural, ns, "x");
        assert_eq!(
            key.as_bytes(),
            object_key(info, "ns1", "x"),
            "{}",
            info.plural
        );
        let prefix = flotilla_testkit::kind_prefix(info.plural, ns);
        assert_eq!(
            prefix.as_bytes(),
            kind_prefix(info, "ns1"),
            "{}",
            info.plural
        );
        let all = flotilla_testkit::kind_prefix(info.plural, "");
        assert_eq!(all.as_bytes(), kind_prefix(info, ""), "{}", info.plural);
        assert!(key.starts_with(flotilla_testkit::KEY_PREFIX));
    }
}

/// The stored bytes and mod revision of a key, through the etcd API.
async fn stored(addr: &str, key: &str) -> Option<(Value, i64)> {
    let all = range_prefix(addr, key, false).await.expect("range");
    all.get(key).map(|(v, r)| {
        (
            serde_json::from_str(v).unwrap_or_else(|e| panic!("{key} is not JSON ({e}): {v}")),
            *r,
        )
    })
}

/// Compacts the store at its current revision (through etcdctl) and returns
/// that revision.
async fn compact_now(cluster: &Cluster, client: &Client) -> i64 {
    static MARKERS: AtomicUsize = AtomicUsize::new(0);
    // A write gives a revision at least as new as every earlier one.
    let marker = format!("compact-marker-{}", MARKERS.fetch_add(1, Ordering::Relaxed));
    let (v, _) = client
        .create("configmaps", "default", &cm_json(&marker, json!({})), false)
        .await
        .expect("marker");
    let rev = rv(&v);
    cluster.etcdctl(&["compact", &rev.to_string()]).await.ok();
    rev
}

// -------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_list_fill_server_fields_and_defaults() {
    let Some((cluster, client)) = start("create_get_list_fill_server_fields_and_defaults").await
    else {
        return;
    };
    let mut pod = pod_json("web", json!({"app": "web"}));
    pod["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80}]);
    // A scheduler no master runs: nothing but this test writes the pod (the
    // scheduler would mark it unschedulable), so every read must return
    // exactly what the create returned.
    pod["spec"]["schedulerName"] = json!("no-such-scheduler");
    let (created, warnings) = client
        .create("pods", "default", &pod, false)
        .await
        .expect("create pod");
    assert_eq!(warnings, Vec::<String>::new());

    // Server-set fields.
    let uid = s(&created, "/metadata/uid");
    assert_eq!(uid.len(), 36, "uid {uid:?}");
    assert_eq!(uid.matches('-').count(), 4, "uid {uid:?}");
    let ts = Time::parse(s(&created, "/metadata/creationTimestamp")).expect("RFC 3339");
    let age = (Time::now().0 - ts.0).num_seconds();
    assert!(
        (0..=10).contains(&age),
        "creationTimestamp {ts} is {age} s old"
    );
    assert_eq!(created["metadata"]["generation"], json!(1));
    assert_eq!(s(&created, "/metadata/namespace"), "default");
    assert_eq!(s(&created, "/apiVersion"), "v1");
    assert_eq!(s(&created, "/kind"), "Pod");
    assert_eq!(created["status"], json!({"phase": "Pending"}));
    // resourceVersion is the store's mod revision of the key, which is stored
    // without it.
    let key = flotilla_testkit::object_key("pods", "default", "web");
    let (raw, mod_rev) = stored(&cluster.client_addr(0), &key)
        .await
        .unwrap_or_else(|| panic!("the pod is stored under {key}"));
    assert_eq!(rv(&created), mod_rev);
    assert_eq!(
        raw["metadata"].get("resourceVersion"),
        None,
        "stored: {raw}"
    );
    assert_eq!(raw["metadata"]["uid"], created["metadata"]["uid"]);

    // Defaults.
    assert_eq!(s(&created, "/spec/restartPolicy"), "Always");
    assert_eq!(s(&created, "/spec/dnsPolicy"), "ClusterFirst");
    let (defaulted, _) = client
        .create("pods", "default", &pod_json("defaulted", json!({})), true)
        .await
        .expect("dry-run create");
    assert_eq!(s(&defaulted, "/spec/schedulerName"), "default-scheduler");
    assert_eq!(created["spec"]["terminationGracePeriodSeconds"], json!(30));
    assert_eq!(
        created["spec"]["containers"][0]["ports"][0],
        json!({"containerPort": 80, "protocol": "TCP"})
    );
    assert_eq!(
        s(&created, "/spec/containers/0/imagePullPolicy"),
        "IfNotPresent"
    );

    // Get (through every master) and list return the same object.
    for i in 0..3 {
        let got = client_at(&cluster, i)
            .get("pods", "default", "web")
            .await
            .expect("get");
        assert_eq!(got, created, "get through master {i}");
    }
    let typed = Api::<Pod>::namespaced(client.clone(), "default")
        .get("web")
        .await
        .expect("typed get");
    assert_eq!(typed.metadata.uid, uid);
    assert_eq!(typed.metadata.generation, 1);
    assert_eq!(typed.spec.restart_policy, "Always");
    let list = client
        .list("pods", "default", &ListParams::default())
        .await
        .expect("list");
    assert_eq!(list.items, vec![created.clone()]);
    assert_eq!(list.continue_token, "");
    let list_rv: i64 = list.resource_version.parse().expect("numeric list rv");
    assert!(
        list_rv >= rv(&created),
        "list rv {list_rv} < {}",
        rv(&created)
    );
    let everywhere = client
        .list("pods", "", &ListParams::default())
        .await
        .expect("list all namespaces");
    assert_eq!(names(&everywhere.items), vec!["web"]);

    // Deployment and Service defaults.
    let (d, _) = client
        .create("deployments", "default", &deployment_json("api"), false)
        .await
        .expect("create deployment");
    assert_eq!(d["spec"]["replicas"], json!(1));
    assert_eq!(
        d["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    assert_eq!(d["spec"]["revisionHistoryLimit"], json!(10));
    assert_eq!(d["spec"]["progressDeadlineSeconds"], json!(600));
    assert_eq!(d["metadata"]["generation"], json!(1));
    assert_eq!(d.get("status"), None, "a new deployment has no status: {d}");
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "api"},
        "spec": {"selector": {"app": "api"}, "ports": [{"port": 8080}]},
    });
    let (svc, _) = client
        .create("services", "default", &svc, false)
        .await
        .expect("create service");
    assert_eq!(s(&svc, "/spec/type"), "ClusterIP");
    assert_eq!(s(&svc, "/spec/sessionAffinity"), "None");
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"port": 8080, "targetPort": 8080, "protocol": "TCP"}])
    );
    // resourceVersions follow the store's revisions.
    assert!(rv(&created) < rv(&d) && rv(&d) < rv(&svc));

    // Errors, with Kubernetes' messages.
    let e = err(
        client.create("pods", "default", &pod, false).await,
        Reason::AlreadyExists,
    );
    assert_eq!(e.message, r#"pods "web" already exists"#);
    let e = err(
        client
            .create("deployments", "default", &deployment_json("api"), false)
            .await,
        Reason::AlreadyExists,
    );
    assert_eq!(e.message, r#"deployments.apps "api" already exists"#);
    let e = err(
        client.get("pods", "default", "nope").await,
        Reason::NotFound,
    );
    assert_eq!(e.message, r#"pods "nope" not found"#);
    let e = err(
        client.get("deployments", "default", "nope").await,
        Reason::NotFound,
    );
    assert_eq!(e.message, r#"deployments.apps "nope" not found"#);
    let e = err(
        client
            .create("pods", "ghost", &pod_json("web", json!({})), false)
            .await,
        Reason::NotFound,
    );
    assert_eq!(e.message, r#"namespaces "ghost" not found"#);
    let e = err(
        client.get("widgets", "default", "x").await,
        Reason::NotFound,
    );
    assert_eq!(
        e.message,
        r#"the server doesn't have a resource type "widgets""#
    );

    // The namespaces that always exist.
    for ns in SYSTEM_NAMESPACES {
        let n = client.get("namespaces", "", ns).await.expect("namespace");
        assert_eq!(s(&n, "/status/phase"), "Active", "{n}");
        assert_eq!(n["spec"]["finalizers"], json!(["kubernetes"]), "{n}");
        assert_eq!(n["metadata"].get("namespace"), None, "{n}");
    }
    let all_ns = list_names(&client, "namespaces", "", "").await;
    assert_eq!(
        all_ns,
        SYSTEM_NAMESPACES
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<String>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_objects_are_rejected_with_field_paths_and_not_stored() {
    let Some((_cluster, client)) =
        start("invalid_objects_are_rejected_with_field_paths_and_not_stored").await
    else {
        return;
    };
    let before = client
        .list("deployments", "", &ListParams::default())
        .await
        .expect("list");
    assert!(before.items.is_empty());

    let mut cases: Vec<(&str, Value, Vec<&str>)> = Vec::new();
    let mut no_image = deployment_json("web");
    no_image["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("image");
    cases.push((
        "deployments",
        no_image,
        vec![
            r#"Deployment.apps "web" is invalid: "#,
            "spec.template.spec.containers[0].image: Required value",
        ],
    ));
    let mut negative = deployment_json("web");
    negative["spec"]["replicas"] = json!(-1);
    cases.push((
        "deployments",
        negative,
        vec!["spec.replicas: Invalid value: -1: must be greater than or equal to 0"],
    ));
    let mut mismatch = deployment_json("web");
    mismatch["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    cases.push((
        "deployments",
        mismatch,
        vec![
            r#"spec.template.metadata.labels: Invalid value: {"app":"other"}"#,
            "`selector` does not match template `labels`",
        ],
    ));
    let mut three = deployment_json("web");
    three["spec"]["replicas"] = json!("three");
    cases.push((
        "deployments",
        three,
        vec![r#"spec.replicas: Invalid value: "three""#, "int32"],
    ));
    let mut port = pod_json("web", json!({}));
    port["spec"]["containers"][0]["ports"] = json!([{"containerPort": 70000}]);
    cases.push((
        "pods",
        port,
        vec![
            r#"Pod "web" is invalid: "#,
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ],
    ));
    cases.push((
        "pods",
        pod_json("Web_1", json!({})),
        vec![
            r#"Pod "Web_1" is invalid: "#,
            r#"metadata.name: Invalid value: "Web_1""#,
        ],
    ));
    let mut no_containers = pod_json("web", json!({}));
    no_containers["spec"]["containers"] = json!([]);
    cases.push((
        "pods",
        no_containers,
        vec!["spec.containers: Required value"],
    ));
    for (resource, obj, needles) in &cases {
        let e = err(
            client.create(resource, "default", obj, false).await,
            Reason::Invalid,
        );
        for n in needles {
            assert!(
                e.message.contains(n),
                "the message of {obj} should contain {n:?}: {}",
                e.message
            );
        }
        // Nothing stored.
        let e = err(
            client.get(resource, "default", &name(obj)).await,
            Reason::NotFound,
        );
        assert_eq!(e.reason, Reason::NotFound);
    }
    for resource in ["deployments", "pods"] {
        let after = client
            .list(resource, "", &ListParams::default())
            .await
            .expect("list");
        assert!(
            after.items.is_empty(),
            "{resource} stored: {:?}",
            after.items
        );
    }

    // An invalid update changes nothing either.
    let (d, _) = client
        .create("deployments", "default", &deployment_json("web"), false)
        .await
        .expect("valid deployment");
    let mut bad = d.clone();
    bad["spec"]["replicas"] = json!(-5);
    let e = err(
        client.update("deployments", "default", &bad).await,
        Reason::Invalid,
    );
    assert!(
        e.message
            .contains("spec.replicas: Invalid value: -5: must be greater than or equal to 0"),
        "{}",
        e.message
    );
    let got = client
        .get("deployments", "default", "web")
        .await
        .expect("get");
    assert_eq!(got, d);

    // Unknown fields: accepted with a warning each, and not stored.
    let mut unknown = pod_json("odd", json!({}));
    unknown["spec"]["foo"] = json!("bar");
    unknown["spec"]["containers"][0]["colour"] = json!("blue");
    let (created, warnings) = client
        .create("pods", "default", &unknown, false)
        .await
        .expect("create with unknown fields");
    let mut warnings = warnings;
    warnings.sort();
    assert_eq!(
        warnings,
        vec![
            r#"unknown field "spec.containers[0].colour""#.to_string(),
            r#"unknown field "spec.foo""#.to_string(),
        ]
    );
    assert_eq!(created["spec"].get("foo"), None);
    let got = client.get("pods", "default", "odd").await.expect("get");
    assert_eq!(got["spec"].get("foo"), None, "{got}");
    assert_eq!(got["spec"]["containers"][0].get("colour"), None, "{got}");
    assert_eq!(got, created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_concurrency_loses_no_update() {
    let Some((cluster, client)) = start("optimistic_concurrency_loses_no_update").await else {
        return;
    };
    let (v1, _) = client
        .create(
            "configmaps",
            "default",
            &cm_json("counter", json!({"n": "0"})),
            false,
        )
        .await
        .expect("create");
    let mut next = v1.clone();
    next["data"]["n"] = json!("1");
    let (v2, _) = client
        .update("configmaps", "default", &next)
        .await
        .expect("update with the current resourceVersion");
    assert!(rv(&v2) > rv(&v1));
    assert_eq!(v2["data"]["n"], json!("1"));
    // v1's resourceVersion is stale now.
    let mut stale = v1.clone();
    stale["data"]["n"] = json!("stale");
    let e = err(
        client.update("configmaps", "default", &stale).await,
        Reason::Conflict,
    );
    assert_eq!(
        e.message,
        r#"Operation cannot be fulfilled on configmaps "counter": the object has been modified; please apply your changes to the latest version and try again"#
    );
    let got = client
        .get("configmaps", "default", "counter")
        .await
        .unwrap();
    assert_eq!(got, v2, "a rejected update changed the object");

    // 8 tasks x 10 read-modify-write increments, through all three masters.
    let written = Arc::new(Mutex::new(Vec::new()));
    let conflicts = Arc::new(Mutex::new(0u32));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let c = client_at(&cluster, t % 3);
        let written = written.clone();
        let conflicts = conflicts.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                loop {
                    let mut cur = c.get("configmaps", "default", "counter").await.unwrap();
                    let n: i64 = s(&cur, "/data/n").parse().unwrap();
                    cur["data"]["n"] = json!((n + 1).to_string());
                    match c.update("configmaps", "default", &cur).await {
                        Ok((v, _)) => {
                            written.lock().unwrap().push((n + 1, rv(&v)));
                            break;
                        }
                        Err(e) if e.is(Reason::Conflict) => *conflicts.lock().unwrap() += 1,
                        Err(e) => panic!("update failed: {e} ({})", e.reason),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let got = client
        .get("configmaps", "default", "counter")
        .await
        .unwrap();
    assert_eq!(s(&got, "/data/n"), "81", "lost updates: {got}");
    let mut written = written.lock().unwrap().clone();
    written.sort();
    let values: Vec<i64> = written.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        values,
        (2..=81).collect::<Vec<_>>(),
        "each value written once"
    );
    let revs: Vec<i64> = written.iter().map(|(_, r)| *r).collect();
    assert!(
        revs.windows(2).all(|w| w[0] < w[1]),
        "larger values were written at later revisions: {written:?}"
    );
    assert_eq!(rv(&got), *revs.last().unwrap());
    println!("conflicts retried: {}", conflicts.lock().unwrap());

    // Without a resourceVersion an update is unconditional.
    let mut blind = got.clone();
    blind["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    blind["data"] = json!({"n": "blind"});
    let (v, _) = client
        .update("configmaps", "default", &blind)
        .await
        .expect("unconditional update");
    assert_eq!(v["data"], json!({"n": "blind"}));
    assert!(rv(&v) > rv(&got));
    assert_eq!(v["metadata"]["uid"], got["metadata"]["uid"]);
    // An update that changes nothing writes nothing.
    let (same, _) = client
        .update("configmaps", "default", &v)
        .await
        .expect("no-op update");
    assert_eq!(rv(&same), rv(&v));
    // An update of a missing object is NotFound.
    let e = err(
        client
            .update("configmaps", "default", &cm_json("missing", json!({})))
            .await,
        Reason::NotFound,
    );
    assert_eq!(e.message, r#"configmaps "missing" not found"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_written_apart_from_spec_and_generation_counts_spec_changes() {
    let Some((_cluster, client)) =
        start("status_is_written_apart_from_spec_and_generation_counts_spec_changes").await
    else {
        return;
    };
    let (d, _) = client
        .create("deployments", "default", &deployment_json("web"), false)
        .await
        .expect("create");
    assert_eq!(d["metadata"]["generation"], json!(1));

    // update_status writes the status only: a spec change in it is ignored.
    let mut st = d.clone();
    st["status"] = json!({"replicas": 3, "observedGeneration": 1});
    st["spec"]["replicas"] = json!(7);
    st["metadata"]["labels"] = json!({"sneaky": "yes"});
    let s1 = client
        .update_status("deployments", "default", &st)
        .await
        .expect("update_status");
    assert_eq!(
        s1["status"],
        json!({"replicas": 3, "observedGeneration": 1})
    );
    assert_eq!(s1["spec"], d["spec"]);
    assert_eq!(s1["metadata"].get("labels"), None, "{s1}");
    assert_eq!(s1["metadata"]["generation"], json!(1));
    assert!(rv(&s1) > rv(&d));
    assert_eq!(
        client.get("deployments", "default", "web").await.unwrap(),
        s1
    );

    // update (replace) writes metadata and spec only: the status is kept.
    let mut up = s1.clone();
    up["spec"]["replicas"] = json!(2);
    up["status"] = json!({"replicas": 99});
    let (u1, _) = client
        .update("deployments", "default", &up)
        .await
        .expect("update");
    assert_eq!(u1["spec"]["replicas"], json!(2));
    assert_eq!(
        u1["status"],
        json!({"replicas": 3, "observedGeneration": 1})
    );
    assert_eq!(u1["metadata"]["generation"], json!(2));

    // A label change keeps the generation.
    let mut lab = u1.clone();
    lab["metadata"]["labels"] = json!({"team": "a"});
    let (u2, _) = client
        .update("deployments", "default", &lab)
        .await
        .expect("label update");
    assert_eq!(u2["metadata"]["labels"], json!({"team": "a"}));
    assert_eq!(u2["metadata"]["generation"], json!(2));
    assert!(rv(&u2) > rv(&u1));
    // A client cannot set the generation, uid or creationTimestamp.
    let mut forged = u2.clone();
    forged["metadata"]["generation"] = json!(40);
    forged["metadata"]["uid"] = json!("");
    forged["metadata"]["creationTimestamp"] = json!("2000-01-01T00:00:00Z");
    let (u3, _) = client
        .update("deployments", "default", &forged)
        .await
        .expect("update");
    assert_eq!(u3["metadata"]["generation"], json!(2));
    assert_eq!(u3["metadata"]["uid"], d["metadata"]["uid"]);
    assert_eq!(
        u3["metadata"]["creationTimestamp"],
        d["metadata"]["creationTimestamp"]
    );

    // A status patch, and a stale status write.
    let p = client
        .patch(
            "deployments",
            "default",
            "web",
            &json!({"status": {"readyReplicas": 2}}),
            true,
        )
        .await
        .expect("status patch");
    assert_eq!(
        p["status"],
        json!({"replicas": 3, "observedGeneration": 1, "readyReplicas": 2})
    );
    assert_eq!(p["metadata"]["generation"], json!(2));
    assert_eq!(p["spec"], u2["spec"]);
    let e = err(
        client.update_status("deployments", "default", &st).await,
        Reason::Conflict,
    );
    assert!(
        e.message
            .starts_with("Operation cannot be fulfilled on deployments.apps \"web\""),
        "{}",
        e.message
    );
    // Kinds without a status have no status call.
    let (cm, _) = client
        .create("configmaps", "default", &cm_json("c", json!({})), false)
        .await
        .unwrap();
    let e = err(
        client.update_status("configmaps", "default", &cm).await,
        Reason::MethodNotAllowed,
    );
    assert_eq!(e.message, "configmaps have no status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_patch_sets_and_removes_fields_and_honours_resource_version() {
    let Some((_cluster, client)) =
        start("merge_patch_sets_and_removes_fields_and_honours_resource_version").await
    else {
        return;
    };
    let mut cm = cm_json("cfg", json!({"a": "1", "b": "2"}));
    cm["metadata"]["labels"] = json!({"app": "x"});
    let (v0, _) = client
        .create("configmaps", "default", &cm, false)
        .await
        .unwrap();
    let v1 = client
        .patch(
            "configmaps",
            "default",
            "cfg",
            &json!({"metadata": {"labels": {"tier": "fe"}}, "data": {"c": "3"}}),
            false,
        )
        .await
        .expect("patch");
    assert_eq!(v1["metadata"]["labels"], json!({"app": "x", "tier": "fe"}));
    assert_eq!(v1["data"], json!({"a": "1", "b": "2", "c": "3"}));
    assert!(rv(&v1) > rv(&v0));
    let v2 = client
        .patch(
            "configmaps",
            "default",
            "cfg",
            &json!({"metadata": {"labels": {"tier": null}}, "data": {"a": null}}),
            false,
        )
        .await
        .expect("patch with nulls");
    assert_eq!(v2["metadata"]["labels"], json!({"app": "x"}));
    assert_eq!(v2["data"], json!({"b": "2", "c": "3"}));
    assert_eq!(
        client.get("configmaps", "default", "cfg").await.unwrap(),
        v2
    );

    // A resourceVersion in the patch is a precondition.
    let stale = json!({"metadata": {"resourceVersion": v1["metadata"]["resourceVersion"], "labels": {"x": "y"}}});
    let e = err(
        client
            .patch("configmaps", "default", "cfg", &stale, false)
            .await,
        Reason::Conflict,
    );
    assert_eq!(
        e.message,
        r#"Operation cannot be fulfilled on configmaps "cfg": the object has been modified; please apply your changes to the latest version and try again"#
    );
    assert_eq!(
        client.get("configmaps", "default", "cfg").await.unwrap(),
        v2
    );
    let current = json!({"metadata": {"resourceVersion": v2["metadata"]["resourceVersion"], "labels": {"x": "y"}}});
    let v3 = client
        .patch("configmaps", "default", "cfg", &current, false)
        .await
        .expect("patch with the current resourceVersion");
    assert_eq!(v3["metadata"]["labels"], json!({"app": "x", "x": "y"}));

    // A patch that makes the object invalid is rejected.
    let e = err(
        client
            .patch(
                "configmaps",
                "default",
                "cfg",
                &json!({"metadata": {"labels": {"bad key!": "v"}}}),
                false,
            )
            .await,
        Reason::Invalid,
    );
    assert!(e.message.contains("metadata.labels"), "{}", e.message);
    // A patch may not rename the object.
    let e = err(
        client
            .patch(
                "configmaps",
                "default",
                "cfg",
                &json!({"metadata": {"name": "other"}}),
                false,
            )
            .await,
        Reason::BadRequest,
    );
    assert!(e.message.contains("does not match"), "{}", e.message);
    let e = err(
        client
            .patch(
                "configmaps",
                "default",
                "nope",
                &json!({"data": {"a": "1"}}),
                false,
            )
            .await,
        Reason::NotFound,
    );
    assert_eq!(e.message, r#"configmaps "nope" not found"#);
    assert_eq!(
        client.get("configmaps", "default", "cfg").await.unwrap(),
        v3
    );

    // Typed patch.
    let typed = Api::<ConfigMap>::namespaced(client.clone(), "default")
        .patch("cfg", &json!({"data": {"typed": "yes"}}))
        .await
        .expect("typed patch");
    assert_eq!(typed.data.get("typed").map(String::as_str), Some("yes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_configures_and_keeps_other_writers_fields() {
    let Some((_cluster, client)) =
        start("apply_creates_configures_and_keeps_other_writers_fields").await
    else {
        return;
    };
    let m1 = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cfg", "labels": {"a": "1", "b": "2"}},
        "data": {"x": "1", "y": "2"},
    });
    let a1 = client.apply("default", &m1, false).await.expect("apply");
    assert_eq!(a1.action, "created");
    assert_eq!(a1.object["data"], json!({"x": "1", "y": "2"}));
    assert_eq!(a1.object["metadata"]["labels"], json!({"a": "1", "b": "2"}));
    let last = s(
        &a1.object,
        "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration",
    );
    let last: Value = serde_json::from_str(last).expect("last-applied is JSON");
    assert_eq!(
        last,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "labels": {"a": "1", "b": "2"}}, "data": {"x": "1", "y": "2"}})
    );
    let a2 = client.apply("default", &m1, false).await.expect("re-apply");
    assert_eq!(a2.action, "unchanged");
    assert_eq!(rv(&a2.object), rv(&a1.object));

    // Someone else adds a label and a key.
    let other = client
        .patch(
            "configmaps",
            "default",
            "cfg",
            &json!({"metadata": {"labels": {"c": "3"}}, "data": {"z": "3"}}),
            false,
        )
        .await
        .expect("patch");
    // The manifest drops label b and key y and changes x.
    let m2 = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cfg", "labels": {"a": "1"}},
        "data": {"x": "10"},
    });
    let a3 = client.apply("default", &m2, false).await.expect("apply");
    assert_eq!(a3.action, "configured");
    assert!(rv(&a3.object) > rv(&other));
    assert_eq!(a3.object["metadata"]["labels"], json!({"a": "1", "c": "3"}));
    assert_eq!(a3.object["data"], json!({"x": "10", "z": "3"}));
    assert_eq!(
        client.get("configmaps", "default", "cfg").await.unwrap(),
        a3.object
    );
    let a4 = client.apply("default", &m2, false).await.expect("apply");
    assert_eq!(a4.action, "unchanged");
    assert_eq!(a4.object, a3.object);

    // A defaulted kind re-applies as unchanged; a spec change bumps the generation.
    let d = deployment_json("web");
    let d1 = client.apply("default", &d, false).await.expect("apply");
    assert_eq!(d1.action, "created");
    assert_eq!(d1.object["spec"]["replicas"], json!(1));
    let d2 = client.apply("default", &d, false).await.expect("apply");
    assert_eq!(d2.action, "unchanged");
    assert_eq!(d2.object["metadata"]["generation"], json!(1));
    let mut d3m = d.clone();
    d3m["spec"]["replicas"] = json!(4);
    let d3 = client.apply("default", &d3m, false).await.expect("apply");
    assert_eq!(d3.action, "configured");
    assert_eq!(d3.object["spec"]["replicas"], json!(4));
    assert_eq!(d3.object["metadata"]["generation"], json!(2));
    // Dropping replicas from the manifest removes it: the default comes back.
    let d4 = client.apply("default", &d, false).await.expect("apply");
    assert_eq!(d4.action, "configured");
    assert_eq!(d4.object["spec"]["replicas"], json!(1));

    // An invalid manifest is rejected and changes nothing.
    let mut bad = m2.clone();
    bad["metadata"]["labels"] = json!({"a": "bad value!"});
    let e = err(client.apply("default", &bad, false).await, Reason::Invalid);
    assert!(e.message.contains("metadata.labels"), "{}", e.message);
    assert_eq!(
        client.get("configmaps", "default", "cfg").await.unwrap(),
        a3.object
    );
    let e = err(
        client
            .apply(
                "default",
                &json!({"apiVersion": "v9", "kind": "Gizmo", "metadata": {"name": "g"}}),
                false,
            )
            .await,
        Reason::BadRequest,
    );
    assert_eq!(e.message, r#"no matches for kind "Gizmo" in version "v9""#);
}

/// Labels of the pods of the selector test: app a (even) or b (odd); tier x
/// (i % 3 == 0), y (i % 3 == 1) or none.
fn sel_labels(i: usize) -> Value {
    let app = if i.is_multiple_of(2) { "a" } else { "b" };
    match i % 3 {
        0 => json!({"app": app, "tier": "x"}),
        1 => json!({"app": app, "tier": "y"}),
        _ => json!({"app": app}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_at_one_revision_and_filter_by_selectors() {
    let Some((cluster, client)) = start("lists_page_at_one_revision_and_filter_by_selectors").await
    else {
        return;
    };
    for i in 0..25 {
        let mut p = pod_json(&format!("p{i:02}"), sel_labels(i));
        if i < 4 {
            p["spec"]["nodeName"] = json!("node-1");
        }
        client
            .create("pods", "default", &p, false)
            .await
            .expect("create");
    }
    client
        .patch(
            "pods",
            "default",
            "p01",
            &json!({"status": {"phase": "Running"}}),
            true,
        )
        .await
        .expect("status patch");
    let all: Vec<usize> = (0..25).collect();
    let pick = |f: &dyn Fn(usize) -> bool| -> BTreeSet<String> {
        all.iter()
            .filter(|&&i| f(i))
            .map(|i| format!("p{i:02}"))
            .collect()
    };

    // Label selectors.
    let tier = |i: usize| i % 3 != 2;
    let cases: Vec<(&str, BTreeSet<String>)> = vec![
        ("app=a", pick(&|i| i.is_multiple_of(2))),
        ("app==a", pick(&|i| i.is_multiple_of(2))),
        ("app!=a", pick(&|i| i % 2 == 1)),
        ("app in (a,b)", pick(&|_| true)),
        ("app in (b)", pick(&|i| i % 2 == 1)),
        ("tier notin (x)", pick(&|i| i % 3 != 0)),
        ("tier", pick(&tier)),
        ("!tier", pick(&|i| !tier(i))),
        ("app=a,tier=x", pick(&|i| i.is_multiple_of(6))),
        ("app=c", BTreeSet::new()),
    ];
    for (sel, want) in &cases {
        assert_eq!(
            &list_names(&client, "pods", "default", sel).await,
            want,
            "selector {sel:?}"
        );
    }
    assert_eq!(pick(&|i| i.is_multiple_of(2)).len(), 13);
    assert_eq!(pick(&|i| !tier(i)).len(), 8);

    // Field selectors (alone and with labels).
    let fields: Vec<(&str, &str, BTreeSet<String>)> = vec![
        ("metadata.name=p03", "", pick(&|i| i == 3)),
        ("metadata.name!=p03", "", pick(&|i| i != 3)),
        ("spec.nodeName=node-1", "", pick(&|i| i < 4)),
        ("spec.nodeName=", "", pick(&|i| i >= 4)),
        ("status.phase=Pending", "", pick(&|i| i != 1)),
        ("status.phase=Running", "", pick(&|i| i == 1)),
        (
            "spec.nodeName=node-1",
            "app=a",
            pick(&|i| i < 4 && i.is_multiple_of(2)),
        ),
        ("metadata.namespace=default", "", pick(&|_| true)),
        ("metadata.namespace=other", "", BTreeSet::new()),
    ];
    for (f, l, want) in &fields {
        let got = client
            .list_all("pods", "", &ListParams::default().fields(f).labels(l))
            .await
            .unwrap_or_else(|e| panic!("list {f:?}: {e}"));
        let got: BTreeSet<String> = names(&got.items).into_iter().collect();
        assert_eq!(&got, want, "fields {f:?} labels {l:?}");
    }

    // Bad selectors and tokens.
    for (l, f) in [
        ("app in (a", ""),
        ("a b", ""),
        ("", "spec.foo=x"),
        ("", "metadata.name"),
    ] {
        let e = err(
            client
                .list(
                    "pods",
                    "default",
                    &ListParams::default().labels(l).fields(f),
                )
                .await,
            Reason::BadRequest,
        );
        assert!(!e.message.is_empty());
    }
    let e = err(
        client
            .watch(
                "pods",
                "default",
                &WatchParams {
                    label_selector: "app in (a".into(),
                    ..Default::default()
                },
            )
            .await
            .map(|_| "a watch stream"),
        Reason::BadRequest,
    );
    assert!(!e.message.is_empty());
    let bad_token = ListParams {
        continue_token: "not a token!".into(),
        limit: 10,
        ..Default::default()
    };
    let e = err(
        client.list("pods", "default", &bad_token).await,
        Reason::BadRequest,
    );
    assert_eq!(e.message, "continue key is not valid: ill-formed token");

    // Pages of 10: 10 + 10 + 5, one revision, later writes invisible.
    let p1 = client
        .list("pods", "default", &ListParams::default().limit(10))
        .await
        .expect("page 1");
    assert_eq!(
        names(&p1.items),
        pick(&|i| i < 10).into_iter().collect::<Vec<_>>()
    );
    assert!(!p1.continue_token.is_empty());
    // A token is not valid for another kind's list.
    let foreign = ListParams {
        continue_token: p1.continue_token.clone(),
        limit: 10,
        ..Default::default()
    };
    let e = err(
        client.list("configmaps", "default", &foreign).await,
        Reason::BadRequest,
    );
    assert_eq!(
        e.message,
        "continue key is not valid: it does not belong to this list"
    );
    // Writes between the pages.
    client
        .create("pods", "default", &pod_json("p99", sel_labels(0)), false)
        .await
        .unwrap();
    client
        .delete("pods", "default", "p15", &DeleteParams::default())
        .await
        .unwrap();
    client
        .patch(
            "pods",
            "default",
            "p20",
            &json!({"metadata": {"labels": {"app": "z"}}}),
            false,
        )
        .await
        .unwrap();
    let next = |token: &str| ListParams {
        continue_token: token.to_string(),
        limit: 10,
        ..Default::default()
    };
    let p2 = client
        .list("pods", "default", &next(&p1.continue_token))
        .await
        .expect("page 2");
    assert_eq!(
        names(&p2.items),
        pick(&|i| (10..20).contains(&i))
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert_eq!(p2.resource_version, p1.resource_version);
    assert!(!p2.continue_token.is_empty());
    let p3 = client
        .list("pods", "default", &next(&p2.continue_token))
        .await
        .expect("page 3");
    assert_eq!(
        names(&p3.items),
        pick(&|i| i >= 20).into_iter().collect::<Vec<_>>()
    );
    assert_eq!(p3.resource_version, p1.resource_version);
    assert_eq!(p3.continue_token, "");
    assert_eq!(
        s(&p3.items[0], "/metadata/labels/app"),
        "a",
        "p20 as of the first page"
    );
    let snapshot: i64 = p1.resource_version.parse().unwrap();
    for item in p1.items.iter().chain(&p2.items).chain(&p3.items) {
        assert!(
            rv(item) <= snapshot,
            "{} is newer than the list",
            name(item)
        );
    }
    // A fresh list sees the writes.
    let now = list_names(&client, "pods", "default", "").await;
    let mut want = pick(&|i| i != 15);
    want.insert("p99".into());
    assert_eq!(now, want);

    // Paging with a selector: 13 pods with app=a before, now p20 is z and p99 is a.
    let sel = ListParams::default().labels("app=a").limit(5);
    let q1 = client.list("pods", "default", &sel).await.unwrap();
    assert_eq!(q1.items.len(), 5);
    let mut got = names(&q1.items);
    let mut token = q1.continue_token;
    let mut pages = 1;
    while !token.is_empty() {
        let q = client
            .list(
                "pods",
                "default",
                &ListParams {
                    continue_token: token,
                    ..sel.clone()
                },
            )
            .await
            .unwrap();
        assert!(q.items.len() <= 5);
        assert_eq!(q.resource_version, q1.resource_version);
        got.extend(names(&q.items));
        token = q.continue_token;
        pages += 1;
    }
    let mut want: Vec<String> = pick(&|i| i.is_multiple_of(2) && i != 20)
        .into_iter()
        .collect();
    want.push("p99".into());
    assert_eq!(got, want);
    assert_eq!(pages, 3);

    // A continue token whose revision was compacted is Gone.
    let g1 = client
        .list("pods", "default", &ListParams::default().limit(10))
        .await
        .unwrap();
    let rev = compact_now(&cluster, &client).await;
    assert!(rev > g1.resource_version.parse::<i64>().unwrap());
    let token = next(&g1.continue_token);
    let e = wait_for(
        Duration::from_secs(10),
        "the old continue token is Gone",
        async || match client.list("pods", "default", &token).await {
            Err(e) if e.is(Reason::Gone) => Ok(e),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    assert_eq!(
        e.message,
        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_deliver_ordered_events_and_resume_on_another_master() {
    let Some((cluster, client)) =
        start("watches_deliver_ordered_events_and_resume_on_another_master").await
    else {
        return;
    };
    let c0 = client_at(&cluster, 0);
    let c1 = client_at(&cluster, 1);
    let (w0, _) = c0
        .create("configmaps", "default", &cm_json("w0", json!({})), false)
        .await
        .unwrap();
    let start_rv = rv(&w0);
    let mut w = c0
        .watch(
            "configmaps",
            "default",
            &WatchParams {
                resource_version: start_rv.to_string(),
                ..Default::default()
            },
        )
        .await
        .expect("watch");
    let (a, _) = c0
        .create(
            "configmaps",
            "default",
            &cm_json("w1", json!({"v": "1"})),
            false,
        )
        .await
        .unwrap();
    let mut m = a.clone();
    m["data"]["v"] = json!("2");
    let (b, _) = c0.update("configmaps", "default", &m).await.unwrap();
    let (_, gone) = c0
        .delete("configmaps", "default", "w1", &DeleteParams::default())
        .await
        .unwrap();
    assert!(gone);
    let (d, _) = c0
        .create("configmaps", "default", &cm_json("w2", json!({})), false)
        .await
        .unwrap();

    let e1 = next_event(&mut w).await;
    assert_eq!(expect_event(&e1, EventType::Added, "w1"), rv(&a));
    assert_eq!(e1.object["data"], json!({"v": "1"}));
    assert_eq!(e1.object["metadata"]["uid"], a["metadata"]["uid"]);
    let e2 = next_event(&mut w).await;
    assert_eq!(expect_event(&e2, EventType::Modified, "w1"), rv(&b));
    assert_eq!(e2.object["data"], json!({"v": "2"}));
    let e3 = next_event(&mut w).await;
    let del_rv = expect_event(&e3, EventType::Deleted, "w1");
    assert!(
        rv(&b) < del_rv && del_rv < rv(&d),
        "{} < {del_rv} < {}",
        rv(&b),
        rv(&d)
    );
    assert_eq!(
        e3.object["data"],
        json!({"v": "2"}),
        "DELETED carries the last state"
    );
    let e4 = next_event(&mut w).await;
    assert_eq!(expect_event(&e4, EventType::Added, "w2"), rv(&d));

    // Resume from the MODIFIED event's resourceVersion on another master:
    // exactly the events after it, then the next new one.
    let mut r = c1
        .watch(
            "configmaps",
            "default",
            &WatchParams {
                resource_version: rv(&b).to_string(),
                ..Default::default()
            },
        )
        .await
        .expect("resumed watch");
    let r1 = next_event(&mut r).await;
    assert_eq!(expect_event(&r1, EventType::Deleted, "w1"), del_rv);
    let r2 = next_event(&mut r).await;
    assert_eq!(expect_event(&r2, EventType::Added, "w2"), rv(&d));
    let (marker, _) = c1
        .create("configmaps", "default", &cm_json("w3", json!({})), false)
        .await
        .unwrap();
    let r3 = next_event(&mut r).await;
    assert_eq!(expect_event(&r3, EventType::Added, "w3"), rv(&marker));
    let e5 = next_event(&mut w).await;
    assert_eq!(expect_event(&e5, EventType::Added, "w3"), rv(&marker));

    // Without a resourceVersion: the current objects as ADDED first.
    let mut fresh = c1
        .watch("configmaps", "default", &WatchParams::default())
        .await
        .expect("watch from now");
    let mut initial = Vec::new();
    for _ in 0..3 {
        let ev = next_event(&mut fresh).await;
        assert_eq!(ev.kind, EventType::Added);
        initial.push(name(&ev.object));
    }
    initial.sort();
    assert_eq!(initial, vec!["w0", "w2", "w3"]);
    let (w4, _) = c0
        .create("configmaps", "default", &cm_json("w4", json!({})), false)
        .await
        .unwrap();
    let f = next_event(&mut fresh).await;
    assert_eq!(expect_event(&f, EventType::Added, "w4"), rv(&w4));

    // A label-selector watch: an object that stops matching is DELETED, one
    // that starts matching ADDED; non-matching changes are not reported.
    let mut sel = c1
        .watch(
            "configmaps",
            "default",
            &WatchParams {
                label_selector: "sel=yes".into(),
                resource_version: rv(&w4).to_string(),
                ..Default::default()
            },
        )
        .await
        .expect("selector watch");
    let mut s1 = cm_json("s1", json!({}));
    s1["metadata"]["labels"] = json!({"sel": "yes"});
    let (s1v, _) = c0
        .create("configmaps", "default", &s1, false)
        .await
        .unwrap();
    let mut s2 = cm_json("s2", json!({}));
    s2["metadata"]["labels"] = json!({"sel": "no"});
    c0.create("configmaps", "default", &s2, false)
        .await
        .unwrap();
    let off = c0
        .patch(
            "configmaps",
            "default",
            "s1",
            &json!({"metadata": {"labels": {"sel": "no"}}}),
            false,
        )
        .await
        .unwrap();
    c0.patch(
        "configmaps",
        "default",
        "s2",
        &json!({"data": {"k": "v"}}),
        false,
    )
    .await
    .unwrap();
    let on = c0
        .patch(
            "configmaps",
            "default",
            "s2",
            &json!({"metadata": {"labels": {"sel": "yes"}}}),
            false,
        )
        .await
        .unwrap();
    let ev = next_event(&mut sel).await;
    assert_eq!(expect_event(&ev, EventType::Added, "s1"), rv(&s1v));
    let ev = next_event(&mut sel).await;
    assert_eq!(expect_event(&ev, EventType::Deleted, "s1"), rv(&off));
    assert_eq!(s(&ev.object, "/metadata/labels/sel"), "no");
    let ev = next_event(&mut sel).await;
    assert_eq!(expect_event(&ev, EventType::Added, "s2"), rv(&on));
    assert_eq!(ev.object["data"], json!({"k": "v"}));

    // No bookmarks unless asked for: the next event is the next change.
    let no_bm_start = rv(&on);
    let mut plain = c0
        .watch(
            "configmaps",
            "default",
            &WatchParams {
                resource_version: no_bm_start.to_string(),
                bookmarks: false,
                bookmark_interval: Duration::from_millis(200),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Bookmarks every 200 ms when asked for.
    let mut bm = c0
        .watch(
            "configmaps",
            "default",
            &WatchParams {
                resource_version: no_bm_start.to_string(),
                bookmarks: true,
                bookmark_interval: Duration::from_millis(200),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut marks = Vec::new();
    while marks.len() < 3 {
        let ev = next_event(&mut bm).await;
        assert_eq!(
            ev.kind,
            EventType::Bookmark,
            "no change was made: {}",
            ev.object
        );
        assert_eq!(s(&ev.object, "/kind"), "ConfigMap");
        assert_eq!(s(&ev.object, "/apiVersion"), "v1");
        marks.push(rv(&ev.object));
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "3 bookmarks at 200 ms took {took:?}"
    );
    assert!(
        marks.iter().all(|&m| m >= no_bm_start),
        "{marks:?} vs {no_bm_start}"
    );
    assert!(marks.windows(2).all(|w| w[0] <= w[1]), "{marks:?}");
    let (w5, _) = c0
        .create("configmaps", "default", &cm_json("w5", json!({})), false)
        .await
        .unwrap();
    loop {
        let ev = next_event(&mut bm).await;
        if ev.kind == EventType::Bookmark {
            assert!(
                rv(&ev.object) < rv(&w5),
                "a bookmark before the change it passed"
            );
            continue;
        }
        assert_eq!(expect_event(&ev, EventType::Added, "w5"), rv(&w5));
        break;
    }
    let ev = next_event(&mut bm).await;
    assert_eq!(ev.kind, EventType::Bookmark);
    assert!(
        rv(&ev.object) >= rv(&w5),
        "bookmark {} after {}",
        ev.object,
        rv(&w5)
    );
    let ev = next_event(&mut plain).await;
    assert_eq!(expect_event(&ev, EventType::Added, "w5"), rv(&w5));

    // Typed watch with bookmarks.
    let api = Api::<ConfigMap>::namespaced(c1.clone(), "default");
    let typed = api
        .watch(&WatchParams {
            resource_version: rv(&w5).to_string(),
            bookmarks: true,
            bookmark_interval: Duration::from_millis(100),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut typed = Box::pin(typed);
    match tokio::time::timeout(Duration::from_secs(5), typed.next()).await {
        Ok(Some(Ok(flotilla_client::Event::Bookmark(r)))) => {
            assert!(r.parse::<i64>().unwrap() >= rv(&w5), "{r}")
        }
        other => panic!("expected a typed bookmark, got {other:?}"),
    }

    // A watch from a compacted revision ends with Gone.
    let rev = compact_now(&cluster, &client).await;
    assert!(rev > start_rv);
    for c in [&c0, &c1] {
        let (item, rest) = wait_for(
            Duration::from_secs(10),
            "a compacted watch is Gone",
            async || {
                let mut st = c
                    .watch(
                        "configmaps",
                        "default",
                        &WatchParams {
                            resource_version: start_rv.to_string(),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| format!("watch call failed: {e} ({})", e.reason))?;
                let item = tokio::time::timeout(Duration::from_secs(5), st.next())
                    .await
                    .map_err(|_| "no item within 5 s".to_string())?;
                match item {
                    Some(Err(e)) if e.is(Reason::Gone) => {
                        let rest = tokio::time::timeout(Duration::from_secs(5), st.next()).await;
                        Ok((e, rest.map(|r| r.is_none())))
                    }
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        assert!(
            item.message.starts_with("too old resource version"),
            "{}",
            item.message
        );
        assert_eq!(rest, Ok(true), "the stream ends after Gone");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_cache_converges_after_bursts_and_compaction() {
    let Some((mut cluster, client)) =
        start("reflector_cache_converges_after_bursts_and_compaction").await
    else {
        return;
    };
    for i in 0..5 {
        client
            .create(
                "configmaps",
                "default",
                &cm_json(&format!("c{i}"), json!({"v": "0"})),
                false,
            )
            .await
            .unwrap();
    }
    // A configmap elsewhere, outside the reflector's namespace.
    client
        .create(
            "configmaps",
            "kube-system",
            &cm_json("outside", json!({})),
            false,
        )
        .await
        .unwrap();
    let api = Api::<ConfigMap>::namespaced(client_at(&cluster, 0), "default");
    let reflector = Reflector::spawn(api, ListParams::default());
    assert!(reflector.wait_until_ready(Duration::from_secs(10)).await);
    let cache = reflector.cache();
    let names_in = |c: &flotilla_client::Cache<ConfigMap>| -> Vec<String> {
        c.list().iter().map(|k| k.metadata.name.clone()).collect()
    };
    assert_eq!(names_in(&cache), vec!["c0", "c1", "c2", "c3", "c4"]);

    /// The server's view: name -> (resourceVersion, data).
    async fn server_view(c: &Client) -> BTreeMap<String, (String, Value)> {
        let l = c
            .list_all("configmaps", "default", &ListParams::default())
            .await
            .unwrap();
        l.items
            .iter()
            .map(|v| {
                (
                    name(v),
                    (
                        s(v, "/metadata/resourceVersion").to_string(),
                        v.get("data").cloned().unwrap_or_else(|| json!({})),
                    ),
                )
            })
            .collect()
    }
    fn cache_view(c: &flotilla_client::Cache<ConfigMap>) -> BTreeMap<String, (String, Value)> {
        c.list()
            .iter()
            .map(|k| {
                (
                    k.metadata.name.clone(),
                    (
                        k.metadata.resource_version.clone(),
                        serde_json::to_value(&k.data).unwrap(),
                    ),
                )
            })
            .collect()
    }

    /// Waits until the cache equals `want`; panics with the difference.
    async fn converge(
        cache: &flotilla_client::Cache<ConfigMap>,
        want: &BTreeMap<String, (String, Value)>,
        timeout: Duration,
        what: &str,
    ) {
        let start = Instant::now();
        loop {
            let got = cache_view(cache);
            if &got == want {
                return;
            }
            if start.elapsed() > timeout {
                let missing: Vec<_> = want
                    .iter()
                    .filter(|(k, v)| got.get(*k) != Some(v))
                    .collect();
                let extra: Vec<_> = got
                    .iter()
                    .filter(|(k, v)| want.get(*k) != Some(v))
                    .collect();
                panic!(
                    "timed out after {timeout:?} waiting until {what}: cache rv {}, missing or different {missing:?}, extra or different {extra:?}",
                    cache.resource_version()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // A burst of 50 writes: 30 creates, 10 updates, 10 deletes.
    let mut last = 0;
    for i in 0..30 {
        let (v, _) = client
            .create(
                "configmaps",
                "default",
                &cm_json(&format!("r{i:02}"), json!({"v": "0"})),
                false,
            )
            .await
            .unwrap();
        last = rv(&v);
    }
    for i in 20..30 {
        client
            .delete(
                "configmaps",
                "default",
                &format!("r{i:02}"),
                &DeleteParams::default(),
            )
            .await
            .unwrap();
    }
    for i in 0..10 {
        let v = client
            .patch(
                "configmaps",
                "default",
                &format!("r{i:02}"),
                &json!({"data": {"v": "1"}}),
                false,
            )
            .await
            .unwrap();
        last = rv(&v);
    }
    let want = server_view(&client).await;
    assert_eq!(want.len(), 25);
    assert_eq!(want["r05"].1, json!({"v": "1"}));
    converge(
        &cache,
        &want,
        Duration::from_secs(10),
        "the cache equals the store",
    )
    .await;
    assert_eq!(cache.resource_version(), last.to_string());
    assert!(cache.get("default", "r25").is_none());
    assert_eq!(cache.get("default", "r09").unwrap().data["v"], "1");
    assert!(cache.get("kube-system", "outside").is_none());

    // The reflector's only master goes away; meanwhile objects change and
    // the history is compacted, so that it must relist when it comes back.
    cluster.kill(0);
    for i in 0..5 {
        client
            .delete(
                "configmaps",
                "default",
                &format!("r{i:02}"),
                &DeleteParams::default(),
            )
            .await
            .unwrap();
    }
    for i in 30..35 {
        client
            .create(
                "configmaps",
                "default",
                &cm_json(&format!("r{i:02}"), json!({"v": "new"})),
                false,
            )
            .await
            .unwrap();
    }
    client
        .patch(
            "configmaps",
            "default",
            "c0",
            &json!({"data": {"v": "changed"}}),
            false,
        )
        .await
        .unwrap();
    compact_now(&cluster, &client).await;
    let want = server_view(&client).await;
    assert_eq!(want.len(), 25 - 5 + 5 + 1, "with the compaction marker");
    assert_ne!(cache_view(&cache), want);
    cluster.restart(0);
    converge(
        &cache,
        &want,
        Duration::from_secs(20),
        "the cache equals the store after the relist",
    )
    .await;
    // And it keeps following.
    let (v, _) = client
        .create(
            "configmaps",
            "default",
            &cm_json("after", json!({"v": "x"})),
            false,
        )
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the cache sees a write after the relist",
        async || {
            cache
                .get("default", "after")
                .is_some_and(|k| k.metadata.resource_version == rv(&v).to_string())
        },
    )
    .await;
    assert_eq!(cache.len(), 27);
}

/// A ReplicaSet `name` and three pods it owns; returns the owner's uid.
async fn owner_with_pods(client: &Client, name: &str, hold: Option<usize>) -> String {
    let (rs, _) = client
        .create("replicasets", "default", &replica_set_json(name), false)
        .await
        .expect("create replicaset");
    let uid = s(&rs, "/metadata/uid").to_string();
    for i in 0..3 {
        let mut p = pod_json(&format!("{name}-{i}"), json!({"owner": name}));
        p["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": uid,
            "controller": true, "blockOwnerDeletion": true,
        }]);
        if hold == Some(i) {
            p["metadata"]["finalizers"] = json!(["test.flotilla.dev/hold"]);
        }
        client
            .create("pods", "default", &p, false)
            .await
            .expect("create pod");
    }
    uid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_cascades_honours_finalizers_grace_and_namespaces() {
    let Some((_cluster, client)) =
        start("deletion_cascades_honours_finalizers_grace_and_namespaces").await
    else {
        return;
    };
    let pods_of = |owner: &str| format!("owner={owner}");
    let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|x| x.to_string()).collect() };

    // Background: the owner goes at once, its pods after it.
    owner_with_pods(&client, "bg", None).await;
    // A pod whose owner exists is left alone: the collector must not delete early.
    assert_eq!(
        list_names(&client, "pods", "default", &pods_of("bg")).await,
        set(&["bg-0", "bg-1", "bg-2"])
    );
    let (o, gone) = client
        .delete("replicasets", "default", "bg", &DeleteParams::default())
        .await
        .unwrap();
    assert!(gone);
    assert_eq!(name(&o), "bg");
    err(
        client.get("replicasets", "default", "bg").await,
        Reason::NotFound,
    );
    wait_until(
        Duration::from_secs(10),
        "the collector deletes bg's pods",
        async || {
            list_names(&client, "pods", "default", &pods_of("bg"))
                .await
                .is_empty()
        },
    )
    .await;

    // Foreground: the owner waits, terminating, until its pods are gone.
    owner_with_pods(&client, "fg", Some(0)).await;
    let (o, gone) = client
        .delete(
            "replicasets",
            "default",
            "fg",
            &DeleteParams {
                propagation: Some(Propagation::Foreground),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!gone);
    assert_eq!(o["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    assert!(o["metadata"]["deletionTimestamp"].is_string(), "{o}");
    wait_until(
        Duration::from_secs(10),
        "fg-1 and fg-2 are gone, fg-0 terminating",
        async || {
            let left = list_names(&client, "pods", "default", &pods_of("fg")).await;
            if left != set(&["fg-0"]) {
                return false;
            }
            let p = client.get("pods", "default", "fg-0").await.unwrap();
            p["metadata"]["deletionTimestamp"].is_string()
        },
    )
    .await;
    let o = client
        .get("replicasets", "default", "fg")
        .await
        .expect("the owner waits");
    assert!(o["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(o["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    // Release fg-0: a terminating object's finalizers may be removed.
    client
        .patch(
            "pods",
            "default",
            "fg-0",
            &json!({"metadata": {"finalizers": null}}),
            false,
        )
        .await
        .expect("release fg-0");
    wait_until(Duration::from_secs(10), "fg and its pods are gone", async || {
        matches!(client.get("replicasets", "default", "fg").await, Err(e) if e.is(Reason::NotFound))
            && list_names(&client, "pods", "default", &pods_of("fg")).await.is_empty()
    })
    .await;

    // Orphan: the pods stay, without their reference to the owner.
    owner_with_pods(&client, "or", None).await;
    let (o, gone) = client
        .delete(
            "replicasets",
            "default",
            "or",
            &DeleteParams {
                propagation: Some(Propagation::Orphan),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!gone);
    assert_eq!(o["metadata"]["finalizers"], json!(["orphan"]));
    wait_until(Duration::from_secs(10), "the orphaning owner is gone", async || {
        matches!(client.get("replicasets", "default", "or").await, Err(e) if e.is(Reason::NotFound))
    })
    .await;
    for i in 0..3 {
        let p = client
            .get("pods", "default", &format!("or-{i}"))
            .await
            .expect("orphan stays");
        assert_eq!(p["metadata"].get("ownerReferences"), None, "{p}");
        assert_eq!(p["metadata"].get("deletionTimestamp"), None, "{p}");
    }
    // Still there once the collector has seen the owner gone (another
    // background cascade, finished, shows it has looked again since).
    owner_with_pods(&client, "bg2", None).await;
    client
        .delete("replicasets", "default", "bg2", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the collector deletes bg2's pods",
        async || {
            list_names(&client, "pods", "default", &pods_of("bg2"))
                .await
                .is_empty()
        },
    )
    .await;
    assert_eq!(
        list_names(&client, "pods", "default", &pods_of("or")).await,
        set(&["or-0", "or-1", "or-2"])
    );

    // Preconditions.
    let p = client.get("pods", "default", "or-0").await.unwrap();
    let puid = s(&p, "/metadata/uid").to_string();
    let e = err(
        client
            .delete(
                "pods",
                "default",
                "or-0",
                &DeleteParams {
                    precondition_uid: "wrong".into(),
                    ..Default::default()
                },
            )
            .await,
        Reason::Conflict,
    );
    assert_eq!(
        e.message,
        format!(
            r#"Operation cannot be fulfilled on pods "or-0": Precondition failed: UID in precondition: wrong, UID in object meta: {puid}"#
        )
    );
    let stale = (rv(&p) - 1).to_string();
    let e = err(
        client
            .delete(
                "pods",
                "default",
                "or-0",
                &DeleteParams {
                    precondition_resource_version: stale.clone(),
                    ..Default::default()
                },
            )
            .await,
        Reason::Conflict,
    );
    assert_eq!(
        e.message,
        format!(
            r#"Operation cannot be fulfilled on pods "or-0": Precondition failed: ResourceVersion in precondition: {stale}, ResourceVersion in object meta: {}"#,
            rv(&p)
        )
    );
    client
        .get("pods", "default", "or-0")
        .await
        .expect("still there");
    let (_, gone) = client
        .delete(
            "pods",
            "default",
            "or-0",
            &DeleteParams {
                precondition_uid: puid.clone(),
                precondition_resource_version: rv(&p).to_string(),
                ..Default::default()
            },
        )
        .await
        .expect("delete with matching preconditions");
    assert!(gone, "an unbound pod goes at once");
    let e = err(
        client
            .delete("pods", "default", "or-0", &DeleteParams::default())
            .await,
        Reason::NotFound,
    );
    assert_eq!(e.message, r#"pods "or-0" not found"#);

    // A pod bound to a node gets its grace period; 0 deletes at once.
    let mut bound = pod_json("bound", json!({}));
    bound["spec"]["nodeName"] = json!("node-x");
    client
        .create("pods", "default", &bound, false)
        .await
        .unwrap();
    let (o, gone) = client
        .delete("pods", "default", "bound", &DeleteParams::default())
        .await
        .unwrap();
    assert!(!gone);
    assert_eq!(o["metadata"]["deletionGracePeriodSeconds"], json!(30));
    let at = Time::parse(s(&o, "/metadata/deletionTimestamp")).unwrap();
    let ahead = (at.0 - Time::now().0).num_seconds();
    assert!(
        (25..=31).contains(&ahead),
        "deletionTimestamp {ahead} s ahead"
    );
    let got = client
        .get("pods", "default", "bound")
        .await
        .expect("still there");
    assert_eq!(
        got["metadata"]["deletionTimestamp"],
        o["metadata"]["deletionTimestamp"]
    );
    let (_, gone) = client
        .delete(
            "pods",
            "default",
            "bound",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(gone);
    err(
        client.get("pods", "default", "bound").await,
        Reason::NotFound,
    );
    // A short grace on a node that does not exist: the collector deletes it
    // once the grace has run out.
    let mut bound = pod_json("bound2", json!({}));
    bound["spec"]["nodeName"] = json!("node-x");
    client
        .create("pods", "default", &bound, false)
        .await
        .unwrap();
    let (o, gone) = client
        .delete(
            "pods",
            "default",
            "bound2",
            &DeleteParams {
                grace_period_seconds: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!gone);
    assert_eq!(o["metadata"]["deletionGracePeriodSeconds"], json!(1));
    wait_until(Duration::from_secs(10), "the collector deletes bound2 after its grace", async || {
        matches!(client.get("pods", "default", "bound2").await, Err(e) if e.is(Reason::NotFound))
    })
    .await;

    // Namespaces: default may not be deleted; others take their contents along.
    let e = err(
        client
            .delete("namespaces", "", "default", &DeleteParams::default())
            .await,
        Reason::Forbidden,
    );
    assert_eq!(
        e.message,
        r#"namespaces "default" is forbidden: this namespace may not be deleted"#
    );
    err(
        client
            .delete("namespaces", "", "kube-system", &DeleteParams::default())
            .await,
        Reason::Forbidden,
    );
    for ns in ["team", "held"] {
        client
            .create(
                "namespaces",
                "",
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                false,
            )
            .await
            .unwrap();
        client
            .create("configmaps", ns, &cm_json("cfg", json!({})), false)
            .await
            .unwrap();
        client
            .create("pods", ns, &pod_json("p", json!({})), false)
            .await
            .unwrap();
    }
    client
        .patch(
            "configmaps",
            "held",
            "cfg",
            &json!({"metadata": {"finalizers": ["test.flotilla.dev/hold"]}}),
            false,
        )
        .await
        .unwrap();
    let (o, gone) = client
        .delete("namespaces", "", "team", &DeleteParams::default())
        .await
        .unwrap();
    assert!(!gone);
    assert_eq!(s(&o, "/status/phase"), "Terminating");
    assert!(o["metadata"]["deletionTimestamp"].is_string());
    wait_until(Duration::from_secs(10), "namespace team and its contents are gone", async || {
        matches!(client.get("namespaces", "", "team").await, Err(e) if e.is(Reason::NotFound))
    })
    .await;
    assert!(list_names(&client, "configmaps", "team", "")
        .await
        .is_empty());
    assert!(list_names(&client, "pods", "team", "").await.is_empty());
    // A terminating namespace takes no new objects.
    client
        .delete("namespaces", "", "held", &DeleteParams::default())
        .await
        .unwrap();
    let e = err(
        client
            .create("configmaps", "held", &cm_json("late", json!({})), false)
            .await,
        Reason::Forbidden,
    );
    assert_eq!(
        e.message,
        r#"configmaps "late" is forbidden: unable to create new content in namespace held because it is being terminated"#
    );
    wait_until(
        Duration::from_secs(10),
        "held's pod is gone and its configmap terminating",
        async || {
            list_names(&client, "pods", "held", "").await.is_empty()
                && client
                    .get("configmaps", "held", "cfg")
                    .await
                    .is_ok_and(|c| c["metadata"]["deletionTimestamp"].is_string())
        },
    )
    .await;
    let n = client
        .get("namespaces", "", "held")
        .await
        .expect("held waits for its configmap");
    assert_eq!(s(&n, "/status/phase"), "Terminating");
    client
        .patch(
            "configmaps",
            "held",
            "cfg",
            &json!({"metadata": {"finalizers": null}}),
            false,
        )
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "namespace held is gone", async || {
        matches!(client.get("namespaces", "", "held").await, Err(e) if e.is(Reason::NotFound))
    })
    .await;
    // The name can be used again.
    client
        .create(
            "namespaces",
            "",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "held"}}),
            false,
        )
        .await
        .expect("re-create held");
    client
        .create("configmaps", "held", &cm_json("late", json!({})), false)
        .await
        .expect("create in the new held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_survive_leader_loss() {
    let Some((mut cluster, client)) = start("acknowledged_creates_survive_leader_loss").await
    else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let ambiguous: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let errors: Arc<Mutex<Vec<ApiError>>> = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (stop, acked, ambiguous, errors, client) = (
            stop.clone(),
            acked.clone(),
            ambiguous.clone(),
            errors.clone(),
            client.clone(),
        );
        tokio::spawn(async move {
            for i in 0..5000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let n = format!("f{i:04}");
                match client
                    .create(
                        "configmaps",
                        "default",
                        &cm_json(&n, json!({"i": i.to_string()})),
                        false,
                    )
                    .await
                {
                    Ok(_) => acked.lock().unwrap().push(n),
                    // A retried create whose first try was applied.
                    Err(e) if e.is(Reason::AlreadyExists) => ambiguous.lock().unwrap().push(n),
                    Err(e) => errors.lock().unwrap().push(e),
                }
            }
        })
    };
    wait_until(
        Duration::from_secs(10),
        "50 creates before the kill",
        async || acked.lock().unwrap().len() >= 50,
    )
    .await;
    let leader = cluster.leader().await;
    let before = acked.lock().unwrap().len();
    cluster.kill(leader);
    wait_until(
        Duration::from_secs(20),
        "50 more creates after the leader's loss",
        async || acked.lock().unwrap().len() >= before + 50,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let acked = acked.lock().unwrap().clone();
    let ambiguous = ambiguous.lock().unwrap().clone();
    let errors = errors.lock().unwrap().clone();
    println!(
        "acked {} creates ({before} before the kill), {} ambiguous, errors: {errors:?}",
        acked.len(),
        ambiguous.len()
    );
    for e in &errors {
        assert_eq!(
            e.reason,
            Reason::Unavailable,
            "only Unavailable may fail a create: {}",
            e.message
        );
    }
    let stored = client
        .list_all("configmaps", "default", &ListParams::default())
        .await
        .expect("list after failover");
    let by_name: BTreeMap<String, Value> =
        stored.items.iter().map(|v| (name(v), v.clone())).collect();
    for n in acked.iter().chain(&ambiguous) {
        let v = by_name
            .get(n)
            .unwrap_or_else(|| panic!("acknowledged create {n} was lost"));
        let i: usize = n[1..].parse().unwrap();
        assert_eq!(s(v, "/data/i"), i.to_string(), "{v}");
    }
    assert!(
        ambiguous.is_empty(),
        "creates that were applied but reported AlreadyExists to their caller (retried by the client after failover): {ambiguous:?}"
    );
    // Every master that is left serves reads of every acknowledged create.
    for i in cluster.live() {
        let l = client_at(&cluster, i)
            .list_all("configmaps", "default", &ListParams::default())
            .await
            .expect("list");
        let got: BTreeSet<String> = names(&l.items).into_iter().collect();
        for n in &acked {
            assert!(got.contains(n), "master {i} misses {n}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_stored_by_a_future_version_are_served_and_updated() {
    let Some((cluster, client)) =
        start("objects_stored_by_a_future_version_are_served_and_updated").await
    else {
        return;
    };
    let future = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": "future", "namespace": "default",
            "uid": "6f1c1f5e-0000-4000-8000-000000000001",
            "creationTimestamp": "2030-01-01T00:00:00Z",
            "futureMeta": "m",
        },
        "data": {"k": "v"},
        "futureField": {"x": 1},
    });
    let rev = put(
        &cluster.client_addr(0),
        &flotilla_testkit::object_key("configmaps", "default", "future"),
        &future.to_string(),
    )
    .await
    .expect("put through the etcd API");
    let got = client
        .get("configmaps", "default", "future")
        .await
        .expect("get");
    assert_eq!(rv(&got), rev);
    assert_eq!(got["data"], json!({"k": "v"}));
    assert_eq!(
        s(&got, "/metadata/uid"),
        "6f1c1f5e-0000-4000-8000-000000000001"
    );
    let typed = Api::<ConfigMap>::namespaced(client.clone(), "default")
        .get("future")
        .await
        .expect("typed get");
    assert_eq!(typed.data.get("k").map(String::as_str), Some("v"));
    assert_eq!(typed.metadata.resource_version, rev.to_string());
    let l = client
        .list("configmaps", "default", &ListParams::default())
        .await
        .expect("list");
    assert_eq!(names(&l.items), vec!["future"]);

    // Update what was read: the future fields are dropped (with warnings),
    // the rest is kept.
    let mut up = got.clone();
    up["data"]["k"] = json!("v2");
    let (u, warnings) = client
        .update("configmaps", "default", &up)
        .await
        .expect("update");
    assert_eq!(u["data"], json!({"k": "v2"}));
    assert!(rv(&u) > rev);
    assert_eq!(
        s(&u, "/metadata/uid"),
        "6f1c1f5e-0000-4000-8000-000000000001"
    );
    assert_eq!(s(&u, "/metadata/creationTimestamp"), "2030-01-01T00:00:00Z");
    let mut warnings = warnings;
    warnings.sort();
    assert_eq!(
        warnings,
        vec![
            r#"unknown field "futureField""#.to_string(),
            r#"unknown field "metadata.futureMeta""#.to_string(),
        ]
    );
    // A patch and a typed replace work as well.
    let p = client
        .patch(
            "configmaps",
            "default",
            "future",
            &json!({"data": {"p": "1"}}),
            false,
        )
        .await
        .expect("patch");
    assert_eq!(p["data"], json!({"k": "v2", "p": "1"}));
    let api = Api::<ConfigMap>::namespaced(client.clone(), "default");
    let mut t = api.get("future").await.unwrap();
    t.data.insert("t".into(), "2".into());
    let t = api.replace(&t).await.expect("typed replace");
    assert_eq!(t.data.len(), 3);
    // A patch straight on the future form (put again) works too.
    put(
        &cluster.client_addr(1),
        &flotilla_testkit::object_key("configmaps", "default", "future"),
        &future.to_string(),
    )
    .await
    .unwrap();
    let p = client
        .patch(
            "configmaps",
            "default",
            "future",
            &json!({"data": {"k": "patched"}}),
            false,
        )
        .await
        .expect("patch of the future form");
    assert_eq!(p["data"], json!({"k": "patched"}));
    assert_eq!(p.get("futureField"), None, "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_never_pass_events_not_yet_delivered() {
    let Some((cluster, _client)) = start("bookmarks_never_pass_events_not_yet_delivered").await
    else {
        return;
    };
    let c0 = client_at(&cluster, 0);
    let (base, _) = c0
        .create("configmaps", "default", &cm_json("base", json!({})), false)
        .await
        .unwrap();
    let mut w = c0
        .watch(
            "configmaps",
            "default",
            &WatchParams {
                resource_version: rv(&base).to_string(),
                bookmarks: true,
                bookmark_interval: Duration::from_millis(100),
                ..Default::default()
            },
        )
        .await
        .expect("watch");
    // Bursts of concurrent creates through every master, large enough (about
    // 10 MB) that they cannot all wait in the stream's buffers.
    let pad = Arc::new("x".repeat(16 * 1024));
    const WRITERS: usize = 4;
    const EACH: usize = 150;
    let mut tasks = Vec::new();
    for t in 0..WRITERS {
        let c = client_at(&cluster, t % 3);
        let pad = pad.clone();
        tasks.push(tokio::spawn(async move {
            let pad = pad.as_str();
            for i in 0..EACH {
                c.create(
                    "configmaps",
                    "default",
                    &cm_json(&format!("b{t}-{i:03}"), json!({"pad": pad})),
                    false,
                )
                .await
                .expect("create");
            }
        }));
    }
    // The watcher reads nothing until the burst is over, then reads slowly:
    // events queue up behind the stream meanwhile.
    for t in tasks {
        t.await.unwrap();
    }
    let mut last_bookmark = 0;
    let mut last_event = rv(&base);
    let mut seen = 0;
    let mut bookmarks = 0;
    let mut violations = Vec::new();
    while seen < WRITERS * EACH {
        let ev = next_event(&mut w).await;
        let r = rv(&ev.object);
        if ev.kind == EventType::Bookmark {
            bookmarks += 1;
            last_bookmark = last_bookmark.max(r);
            continue;
        }
        seen += 1;
        assert_eq!(ev.kind, EventType::Added);
        assert!(r > last_event, "event {r} after {last_event}");
        last_event = r;
        if r <= last_bookmark {
            violations.push((name(&ev.object), r, last_bookmark));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!("{seen} events, {bookmarks} bookmarks");
    assert!(bookmarks > 0, "no bookmark during the burst");
    assert!(
        violations.is_empty(),
        "{} events arrived after a bookmark that claimed their revision (name, event rv, bookmark rv); first: {:?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_holds_nothing_newer_than_its_resource_version() {
    let Some((cluster, _client)) =
        start("a_list_holds_nothing_newer_than_its_resource_version").await
    else {
        return;
    };
    let c0 = client_at(&cluster, 0);
    for i in 0..4 {
        c0.create(
            "configmaps",
            "default",
            &cm_json(&format!("hot{i}"), json!({"n": "0"})),
            false,
        )
        .await
        .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for i in 0..4 {
        let c = client_at(&cluster, i % 3);
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 3000 {
                n += 1;
                c.patch(
                    "configmaps",
                    "default",
                    &format!("hot{i}"),
                    &json!({"data": {"n": n.to_string()}}),
                    false,
                )
                .await
                .expect("patch");
            }
        }));
    }
    let mut bad = Vec::new();
    let t0 = Instant::now();
    let mut lists = 0;
    while t0.elapsed() < Duration::from_secs(4) && bad.is_empty() {
        for serializable in [false, true] {
            let p = ListParams {
                serializable,
                ..Default::default()
            };
            let l = c0.list("configmaps", "default", &p).await.expect("list");
            lists += 1;
            let at: i64 = l.resource_version.parse().unwrap();
            for item in &l.items {
                if rv(item) > at {
                    bad.push((serializable, name(item), rv(item), at));
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    println!("{lists} lists");
    assert!(
        bad.is_empty(),
        "lists returned items newer than their resource_version (serializable, name, item rv, list rv): {bad:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_right_after_a_namespace_deletion_are_forbidden_on_every_master() {
    let Some((cluster, client)) =
        start("creates_right_after_a_namespace_deletion_are_forbidden_on_every_master").await
    else {
        return;
    };
    let leader = cluster.leader().await;
    let lc = client_at(&cluster, leader);
    let followers: Vec<Client> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| client_at(&cluster, i))
        .collect();
    let mut accepted = Vec::new();
    for i in 0..20 {
        let ns = format!("race{i}");
        let nsj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        lc.create("namespaces", "", &nsj, false).await.unwrap();
        // Every master has seen the namespace before it is deleted.
        for f in &followers {
            f.get("namespaces", "", &ns).await.unwrap();
        }
        let (_, gone) = lc
            .delete("namespaces", "", &ns, &DeleteParams::default())
            .await
            .unwrap();
        assert!(!gone);
        // The deletion is acknowledged: no master may now take new content.
        let (late, late2) = (cm_json("late", json!({})), cm_json("late2", json!({})));
        let (a, b) = tokio::join!(
            followers[0].create("configmaps", &ns, &late, false),
            followers[1].create("configmaps", &ns, &late2, false),
        );
        for r in [a, b] {
            match r {
                // Forbidden while it terminates; NotFound once the garbage
                // collector (which reacts to the deletion at once) removed it.
                Err(e) if e.is(Reason::Forbidden) || e.is(Reason::NotFound) => {}
                Ok((v, _)) => accepted.push(format!("{}/{}", ns, name(&v))),
                Err(e) => panic!("unexpected error: {} ({})", e.message, e.reason),
            }
        }
    }
    assert!(
        accepted.is_empty(),
        "followers accepted creates in namespaces whose deletion was already acknowledged: {accepted:?}"
    );
    // And the namespaces still go away.
    wait_until(
        Duration::from_secs(15),
        "every race namespace is gone",
        async || {
            list_names(&client, "namespaces", "", "").await
                == SYSTEM_NAMESPACES
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<BTreeSet<String>>()
        },
    )
    .await;
}

/// One raw Create/Delete call to master `i` with a request id, as a client
/// retry sends it (the id is the same on every attempt of one call).
async fn call_with_id(
    cluster: &Cluster,
    i: usize,
    id: &str,
    req: impl FnOnce() -> RawCall,
) -> Result<Value, tonic::Status> {
    use flotilla_proto::objects::objects_client::ObjectsClient;
    let mut c = ObjectsClient::connect(format!("http://{}", cluster.client_addr(i)))
        .await
        .expect("connect");
    fn with_id<M>(msg: M, id: &str) -> tonic::Request<M> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut()
            .insert("flotilla-request-id", id.parse().expect("ascii id"));
        r
    }
    let bytes = match req() {
        RawCall::Create(m) => c.create(with_id(m, id)).await?.into_inner().object,
        RawCall::Delete(m) => c.delete(with_id(m, id)).await?.into_inner().object,
    };
    Ok(serde_json::from_slice(&bytes).expect("json"))
}

enum RawCall {
    Create(flotilla_proto::objects::CreateRequest),
    Delete(flotilla_proto::objects::DeleteRequest),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_retried_under_its_request_id_applies_once_on_any_master() {
    let Some((cluster, client)) =
        start("a_write_retried_under_its_request_id_applies_once_on_any_master").await
    else {
        return;
    };
    let create = || {
        RawCall::Create(flotilla_proto::objects::CreateRequest {
            resource: "configmaps".into(),
            namespace: "default".into(),
            object: serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"generateName": "retried-"}}))
            .expect("json"),
            dry_run: false,
        })
    };
    // The first attempt's answer is "lost"; the retry goes to another
    // master with the same id: it gets the first attempt's object, and
    // there is only one.
    let id = "00000000000000000000000000c0ffee";
    let first = call_with_id(&cluster, 0, id, create).await.expect("first");
    let again = call_with_id(&cluster, 1, id, create).await.expect("retry");
    assert_eq!(first["metadata"]["uid"], again["metadata"]["uid"]);
    assert_eq!(first["metadata"]["name"], again["metadata"]["name"]);
    let made = list_names(&client, "configmaps", "default", "").await;
    assert_eq!(made.len(), 1, "{made:?}");
    // A retried delete finds the object deleted by its first attempt: it
    // reports the deletion, not NotFound.
    let del = || {
        RawCall::Delete(flotilla_proto::objects::DeleteRequest {
            resource: "configmaps".into(),
            namespace: "default".into(),
            name: made.iter().next().cloned().unwrap_or_default(),
            ..Default::default()
        })
    };
    let id = "00000000000000000000000000dead00";
    call_with_id(&cluster, 2, id, del).await.expect("delete");
    call_with_id(&cluster, 0, id, del)
        .await
        .expect("delete retried");
    // A different id is a different request: NotFound now.
    let other = call_with_id(&cluster, 0, "00000000000000000000000000dead01", del).await;
    assert_eq!(other.expect_err("gone").code(), tonic::Code::NotFound);
    // An id that is not 32 hex digits is refused, and changes nothing.
    let bad = call_with_id(&cluster, 0, "not-an-id", create).await;
    assert_eq!(
        bad.expect_err("bad id").code(),
        tonic::Code::InvalidArgument
    );
    assert!(list_names(&client, "configmaps", "default", "")
        .await
        .is_empty());
}
