//! The endpoints loop against the in-memory cluster: pods are written
//! with their status (IP, readiness) as an agent would report them.

use flotilla_objects::core::Endpoints;
use flotilla_objects::discovery::EndpointSlice;
use serde_json::{json, Value};

use super::*;
use crate::testenv::{until, Env};

async fn env() -> Env {
    let env = Env::new().await;
    env.run(EndpointsLoop);
    env
}

/// A pod on `node` with `ip`, Ready or not, whose container serves
/// `http` on `port`.
async fn pod(env: &Env, name: &str, labels: Value, ip: &str, ready: bool, port: i32) {
    let p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox",
            "ports": [{"name": "http", "containerPort": port}]}]}});
    env.apply(p).await;
    set_ready(env, name, ip, ready).await;
}

async fn set_ready(env: &Env, name: &str, ip: &str, ready: bool) {
    let status = json!({"status": {"phase": "Running", "podIP": ip, "conditions": [
        {"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    ObjectApi::patch(&env.api, "pods", "default", name, status, true, false)
        .await
        .expect("status");
}

async fn endpoints(env: &Env, name: &str) -> Option<Endpoints> {
    env.typed::<Endpoints>("default").get(name).await.ok()
}

async fn slices(env: &Env, svc: &str) -> Vec<EndpointSlice> {
    let mut v: Vec<EndpointSlice> = env
        .typed::<EndpointSlice>("default")
        .list(&Default::default())
        .await
        .expect("slices")
        .items
        .into_iter()
        .filter(|s| s.service_name() == Some(svc))
        .collect();
    v.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    v
}

/// (ready IPs, not-ready IPs) of a service's Endpoints.
async fn ips(env: &Env, name: &str) -> (Vec<String>, Vec<String>) {
    let Some(e) = endpoints(env, name).await else {
        return (vec!["<none>".into()], vec![]);
    };
    let (mut r, mut n) = (Vec::new(), Vec::new());
    for s in &e.subsets {
        r.extend(s.addresses.iter().map(|a| a.ip.clone()));
        n.extend(s.not_ready_addresses.iter().map(|a| a.ip.clone()));
    }
    r.sort();
    n.sort();
    (r, n)
}

/// Each endpoint of a service's slices: (ip, ready, serving, terminating).
async fn slice_view(env: &Env, svc: &str) -> Vec<(String, bool, bool, bool)> {
    let mut v: Vec<_> = slices(env, svc)
        .await
        .iter()
        .flat_map(|s| s.endpoints.clone())
        .map(|e| {
            let c = &e.conditions;
            (
                e.addresses[0].clone(),
                c.is_ready(),
                c.is_serving(),
                c.is_terminating(),
            )
        })
        .collect();
    v.sort();
    v
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn endpoints_and_slices_follow_pods_and_their_readiness() {
    let env = env().await;
    env.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"tier": "front"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}}))
        .await;
    pod(&env, "a", json!({"app": "web"}), "10.244.1.2", true, 8080).await;
    pod(&env, "b", json!({"app": "web"}), "10.244.2.2", false, 8080).await;
    pod(
        &env,
        "other",
        json!({"app": "db"}),
        "10.244.1.3",
        true,
        5432,
    )
    .await;
    until("a ready, b not ready", async || {
        ips(&env, "web").await == (strs(&["10.244.1.2"]), strs(&["10.244.2.2"]))
    })
    .await;
    let e = endpoints(&env, "web").await.expect("endpoints");
    assert_eq!(e.subsets.len(), 1);
    assert_eq!(e.subsets[0].ports[0].port, 8080, "the named target port");
    assert_eq!(
        e.metadata.labels.get("tier").map(String::as_str),
        Some("front")
    );
    let a = &e.subsets[0].addresses[0];
    assert_eq!(a.node_name, "n1");
    assert_eq!(a.target_ref.as_ref().map(|r| r.name.as_str()), Some("a"));
    until("the slice has both", async || {
        slice_view(&env, "web").await
            == vec![
                ("10.244.1.2".into(), true, true, false),
                ("10.244.2.2".into(), false, false, false),
            ]
    })
    .await;
    let s = &slices(&env, "web").await[0];
    assert_eq!(s.address_type, "IPv4");
    assert_eq!(s.ports[0].port, Some(8080));
    assert_eq!(s.metadata.labels[LABEL_MANAGED_BY], MANAGED_BY_CONTROLLER);
    assert_eq!(s.metadata.owner_references[0].kind, "Service");

    // b becomes ready.
    set_ready(&env, "b", "10.244.2.2", true).await;
    until("both ready", async || {
        ips(&env, "web").await == (strs(&["10.244.1.2", "10.244.2.2"]), vec![])
    })
    .await;

    // a is deleted with a grace period: out of Endpoints at once, in the
    // slice as terminating (still serving) until it is gone.
    let dp = DeleteParams {
        grace_period_seconds: Some(30),
        ..Default::default()
    };
    env.api
        .delete(&flotilla_objects::registry::POD, "default", "a", &dp)
        .await
        .expect("delete");
    until("a terminating", async || {
        ips(&env, "web").await == (strs(&["10.244.2.2"]), vec![])
            && slice_view(&env, "web").await
                == vec![
                    ("10.244.1.2".into(), false, true, true),
                    ("10.244.2.2".into(), true, true, false),
                ]
    })
    .await;

    // A change that does not matter to the endpoints writes nothing: a
    // pod's annotation, then a change to another service that must be
    // written (so the loop has looked at both).
    let before = endpoints(&env, "web")
        .await
        .expect("ep")
        .metadata
        .resource_version;
    let slice_before: Vec<String> = slices(&env, "web")
        .await
        .iter()
        .map(|s| s.metadata.resource_version.clone())
        .collect();
    env.patch(
        "pods",
        "b",
        json!({"metadata": {"annotations": {"x": "y"}}}),
    )
    .await;
    env.apply(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
        "spec": {"selector": {"app": "db"}, "ports": [{"port": 5432}]}}),
    )
    .await;
    until("db has its endpoints", async || {
        ips(&env, "db").await == (strs(&["10.244.1.3"]), vec![])
    })
    .await;
    env.patch(
        "pods",
        "other",
        json!({"metadata": {"annotations": {"x": "y"}}}),
    )
    .await;
    set_ready(&env, "other", "10.244.1.3", false).await;
    until("db's pod unready", async || {
        ips(&env, "db").await == (vec![], strs(&["10.244.1.3"]))
    })
    .await;
    assert_eq!(
        endpoints(&env, "web")
            .await
            .expect("ep")
            .metadata
            .resource_version,
        before
    );
    let slice_after: Vec<String> = slices(&env, "web")
        .await
        .iter()
        .map(|s| s.metadata.resource_version.clone())
        .collect();
    assert_eq!(slice_after, slice_before);

    // The service goes: its endpoints and slices go with it.
    env.api
        .delete(
            &flotilla_objects::registry::SERVICE,
            "default",
            "web",
            &DeleteParams::default(),
        )
        .await
        .expect("delete svc");
    until("web's endpoints gone", async || {
        endpoints(&env, "web").await.is_none() && slices(&env, "web").await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn named_ports_headless_hostnames_and_publish_not_ready() {
    let env = env().await;
    env.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": true, "selector": {"app": "db"},
            "ports": [{"name": "sql", "port": 5432, "targetPort": "http"}, {"name": "metrics", "port": 9100, "targetPort": 9100}]}}))
        .await;
    // Two pods serve "http" on different numbers; one names the service as
    // its subdomain.
    env.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db-0", "labels": {"app": "db"}},
        "spec": {"nodeName": "n1", "hostname": "db-0", "subdomain": "db",
            "containers": [{"name": "c", "image": "busybox", "ports": [{"name": "http", "containerPort": 7000}]}]}}))
        .await;
    set_ready(&env, "db-0", "10.244.1.10", false).await;
    pod(
        &env,
        "db-1",
        json!({"app": "db"}),
        "10.244.2.10",
        true,
        7001,
    )
    .await;
    until("two subsets, both published", async || {
        endpoints(&env, "db").await.is_some_and(|e| {
            e.subsets.len() == 2
                && e.subsets
                    .iter()
                    .all(|s| s.addresses.len() == 1 && s.not_ready_addresses.is_empty())
        })
    })
    .await;
    let e = endpoints(&env, "db").await.expect("ep");
    assert!(e.metadata.labels.contains_key(LABEL_HEADLESS));
    type Seen = (String, String, Vec<(String, i32)>);
    let mut seen: Vec<Seen> = e
        .subsets
        .iter()
        .map(|s| {
            (
                s.addresses[0].ip.clone(),
                s.addresses[0].hostname.clone(),
                s.ports.iter().map(|p| (p.name.clone(), p.port)).collect(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                "10.244.1.10".into(),
                "db-0".into(),
                vec![("metrics".into(), 9100), ("sql".into(), 7000)]
            ),
            (
                "10.244.2.10".into(),
                "".into(),
                vec![("metrics".into(), 9100), ("sql".into(), 7001)]
            ),
        ]
    );
    until("two slices", async || slices(&env, "db").await.len() == 2).await;
    let s = slices(&env, "db").await;
    let host: Vec<Option<String>> = s
        .iter()
        .flat_map(|s| s.endpoints.iter().map(|e| e.hostname.clone()))
        .collect();
    assert!(host.contains(&Some("db-0".into())));
    assert!(
        s.iter().all(|s| s.endpoints[0].conditions.is_ready()),
        "published as ready"
    );
}

#[tokio::test]
async fn a_service_without_selector_keeps_its_users_endpoints_mirrored_into_slices() {
    let env = env().await;
    env.apply(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}]}}),
    )
    .await;
    until("a placeholder slice", async || {
        slices(&env, "ext").await.len() == 1
    })
    .await;
    assert!(
        endpoints(&env, "ext").await.is_none(),
        "not written by the controller"
    );
    env.apply(json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ext"},
        "subsets": [{"addresses": [{"ip": "192.0.2.10"}, {"ip": "192.0.2.11"}], "notReadyAddresses": [{"ip": "192.0.2.12"}],
            "ports": [{"port": 8080}]}]}))
        .await;
    until("mirrored", async || {
        slice_view(&env, "ext").await
            == vec![
                ("192.0.2.10".into(), true, true, false),
                ("192.0.2.11".into(), true, true, false),
                ("192.0.2.12".into(), false, false, false),
            ]
    })
    .await;
    let s = &slices(&env, "ext").await[0];
    assert_eq!(s.metadata.labels[LABEL_MANAGED_BY], MANAGED_BY_MIRRORING);
    assert_eq!(s.ports[0].port, Some(8080));
    // The user's endpoints are theirs: the controller leaves them.
    assert_eq!(
        ips(&env, "ext").await.0,
        strs(&["192.0.2.10", "192.0.2.11"])
    );

    // Given a selector, the service's endpoints come from pods instead.
    pod(&env, "p", json!({"app": "x"}), "10.244.1.7", true, 8080).await;
    env.patch(
        "services",
        "ext",
        json!({"spec": {"selector": {"app": "x"}}}),
    )
    .await;
    until("from the pod", async || {
        slice_view(&env, "ext").await == vec![("10.244.1.7".into(), true, true, false)]
    })
    .await;
    assert!(slices(&env, "ext")
        .await
        .iter()
        .all(|s| s.metadata.labels[LABEL_MANAGED_BY] == MANAGED_BY_CONTROLLER));
}

#[tokio::test]
async fn a_large_service_is_split_into_slices_of_at_most_100() {
    let env = env().await;
    env.apply(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "big"},
        "spec": {"selector": {"app": "big"}, "ports": [{"port": 80}]}}),
    )
    .await;
    for i in 0..150 {
        pod(
            &env,
            &format!("p{i}"),
            json!({"app": "big"}),
            &format!("10.244.{}.{}", i / 100, i % 100 + 1),
            true,
            80,
        )
        .await;
    }
    until("150 endpoints in 2 slices", async || {
        let s = slices(&env, "big").await;
        s.len() == 2 && s.iter().map(|s| s.endpoints.len()).sum::<usize>() == 150
    })
    .await;
    assert!(slices(&env, "big")
        .await
        .iter()
        .all(|s| s.endpoints.len() <= 100));
    assert_eq!(ips(&env, "big").await.0.len(), 150);
}
