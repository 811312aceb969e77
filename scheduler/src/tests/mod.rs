//! Unit tests: the filters and scores on in-memory nodes and pods, and the
//! scheduling loop against the API server over the in-memory store.

mod filters;
mod scheduling;

use std::sync::Arc;

use flotilla_objects::core::{Node, Pod};
use serde_json::{json, Value};

use crate::nodeinfo::{NodeInfo, PodInfo};

/// A Ready node with `cpu` cores, `mem_gi` GiB and `extra` merged in.
pub(crate) fn node_json(name: &str, cpu: &str, mem: &str, extra: Value) -> Value {
    let mut n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}});
    flotilla_objects::merge_patch(&mut n, &extra);
    n
}

pub(crate) fn node(name: &str, cpu: &str, mem: &str, extra: Value) -> Arc<Node> {
    Arc::new(serde_json::from_value(node_json(name, cpu, mem, extra)).expect("node"))
}

/// A pod requesting `cpu` and `mem` (empty: nothing), with `extra` merged in.
pub(crate) fn pod_json(name: &str, cpu: &str, mem: &str, extra: Value) -> Value {
    let mut req = serde_json::Map::new();
    if !cpu.is_empty() {
        req.insert("cpu".into(), json!(cpu));
    }
    if !mem.is_empty() {
        req.insert("memory".into(), json!(mem));
    }
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": req}}]}});
    flotilla_objects::merge_patch(&mut p, &extra);
    p
}

pub(crate) fn pod(name: &str, cpu: &str, mem: &str, extra: Value) -> PodInfo {
    let p: Pod = serde_json::from_value(pod_json(name, cpu, mem, extra)).expect("pod");
    PodInfo::new(Arc::new(p))
}

pub(crate) fn info(n: Arc<Node>, pods: &[&PodInfo]) -> NodeInfo {
    NodeInfo::with_pods(n, pods.iter().map(|p| p.pod.clone()))
}
