//! The audit log of a real master (`--audit-log-path`): writes are
//! recorded as Kubernetes audit events with who, what and the result code
//! (a failed write too); reads are not.

mod common;

use std::time::Duration;

use common::*;
use flotilla_client::{Api, Client, DeleteParams};
use flotilla_objects::core::ConfigMap;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_recorded_with_who_what_and_the_result() {
    if skip_on_etcd("writes_are_recorded_with_who_what_and_the_result", false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit").join("audit.log");
    let opts = Opts {
        extra_args: vec!["--audit-log-path".into(), path.display().to_string()],
        ..Default::default()
    };
    let cluster = Cluster::start(1, opts).await;
    let client = Client::connect(&[cluster.client_addr(0)]).expect("client");
    let cms = Api::<ConfigMap>::namespaced(client, "default");
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "audited", "namespace": "default"},
        "data": {"secret-looking": "do-not-log-me"}
    }))
    .expect("configmap");
    cms.create(&cm).await.expect("create");
    cms.get("audited").await.expect("get");
    cms.delete("audited", &DeleteParams::default())
        .await
        .expect("delete");
    let gone = cms.delete("audited", &DeleteParams::default()).await;
    assert!(gone.is_err(), "deleted twice");

    let events: Vec<Value> = wait_for(
        Duration::from_secs(30),
        "the three writes in the audit log",
        async || {
            let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
            let evs: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["objectRef"]["name"] == "audited")
                .collect();
            if evs.len() >= 3 {
                Ok(evs)
            } else {
                Err(format!("{} events so far:\n{text}", evs.len()))
            }
        },
    )
    .await;
    let got: Vec<(String, i64)> = events
        .iter()
        .map(|v| {
            (
                v["verb"].as_str().unwrap_or("").to_string(),
                v["responseStatus"]["code"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("create".to_string(), 201),
            ("delete".to_string(), 200),
            ("delete".to_string(), 404)
        ],
        "a get is not recorded; {events:#?}"
    );
    for v in &events {
        assert_eq!(v["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(v["kind"], "Event");
        assert_eq!(v["user"]["username"], "system:anonymous");
        assert_eq!(v["sourceIPs"][0], "127.0.0.1");
        assert_eq!(
            v["requestURI"],
            "/api/v1/namespaces/default/configmaps/audited"
        );
    }
    assert!(events[2]["responseStatus"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("not found")));
    let text = std::fs::read_to_string(&path).expect("log");
    assert!(!text.contains("do-not-log-me"), "bodies are never written");

    // A call made as another user (kubectl's --as) names both.
    let opts = flotilla_client::ClientOptions {
        credentials: flotilla_client::Credentials {
            impersonate_user: Some("alice".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let alice = Client::connect_with(&[cluster.client_addr(0)], opts).expect("client");
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "as-alice", "namespace": "default"}
    }))
    .expect("configmap");
    Api::<ConfigMap>::namespaced(alice, "default")
        .create(&cm)
        .await
        .expect("create as alice");
    let ev = wait_for(
        Duration::from_secs(30),
        "the impersonated write in the audit log",
        async || {
            let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["objectRef"]["name"] == "as-alice")
                .ok_or_else(|| format!("not yet:\n{text}"))
        },
    )
    .await;
    assert_eq!(ev["user"]["username"], "system:anonymous", "{ev}");
    assert_eq!(ev["impersonatedUser"]["username"], "alice", "{ev}");
}
