//! Nodes' pod CIDRs through the API server, against the in-memory store.

use std::sync::Arc;

use flotilla_objects::api::{DeleteParams, Reason};
use flotilla_objects::registry;
use serde_json::{json, Value};

use super::*;
use crate::memstore::MemStore;
use crate::podcidr::PodCidrs;

const NODE: &ResourceInfo = &registry::NODE;

fn node(name: &str, cidr: Option<&str>) -> Value {
    let mut n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
    if let Some(c) = cidr {
        n["spec"] = json!({"podCIDR": c});
    }
    n
}

async fn server(cidrs: PodCidrs) -> ApiServer {
    let cfg = ApiConfig {
        pod_cidrs: cidrs,
        ..Default::default()
    };
    let api = ApiServer::new(Arc::new(MemStore::new()), cfg);
    api.ensure_namespaces().await.expect("namespaces");
    api
}

fn cidr_of(v: &Value) -> String {
    v["spec"]["podCIDR"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn every_node_gets_its_own_pod_cidr_and_a_taken_one_is_refused() {
    // Eight blocks only: random picks collide often, and must be picked again.
    let api = server(PodCidrs::parse("10.244.0.0/21", 24).expect("range")).await;
    let mut seen = std::collections::HashSet::new();
    for i in 0..4 {
        let w = api
            .create(NODE, "", node(&format!("n{i}"), None), false)
            .await
            .expect("create");
        let c = cidr_of(&w.object);
        assert!(c.starts_with("10.244.") && c.ends_with(".0/24"), "{c}");
        assert!(seen.insert(c.clone()), "{c} given twice");
    }
    // A node naming a taken block is refused with the field's path.
    let taken = seen.iter().next().expect("a block").clone();
    let e = api
        .create(NODE, "", node("n5", Some(&taken)), false)
        .await
        .expect_err("taken");
    assert_eq!(e.reason, Reason::Invalid, "{}", e.message);
    assert!(e.message.contains("spec.podCIDR"), "{}", e.message);
    // An update that does not mention it keeps it; deleting frees it.
    let w = api
        .patch(
            NODE,
            "",
            "n0",
            json!({"spec": {"unschedulable": true}}),
            false,
            false,
        )
        .await
        .expect("patch");
    let n0 = cidr_of(&w.object);
    assert!(seen.contains(&n0));
    api.delete(NODE, "", "n0", &DeleteParams::default())
        .await
        .expect("delete");
    let w = api
        .create(NODE, "", node("n6", Some(&n0)), false)
        .await
        .expect("the freed block");
    assert_eq!(cidr_of(&w.object), n0);
}
