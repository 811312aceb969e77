//! Resource amounts as the scheduler counts them: CPU in millicores,
//! memory in bytes, and pods, with Kubernetes' rule for init containers
//! (a pod needs the larger of the sum of its containers and its largest
//! init container, for each resource).

use std::collections::BTreeMap;

use flotilla_objects::core::{Container, Node, Pod};
use flotilla_objects::parse_quantity;

/// What a pod requests, or what a node offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub pods: i64,
}

impl Resources {
    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.pods += o.pods;
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.pods -= o.pods;
    }

    fn max(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
    }
}

/// The value of quantity `q` scaled by `scale` and rounded up (0 when it
/// does not parse: admission has already refused such quantities).
fn quantity(q: Option<&String>, scale: f64) -> i64 {
    q.and_then(|s| parse_quantity(s))
        .map(|v| (v * scale).ceil() as i64)
        .unwrap_or(0)
}

fn container_requests(c: &Container) -> Resources {
    let r = &c.resources.requests;
    Resources {
        milli_cpu: quantity(r.get("cpu"), 1000.0),
        memory: quantity(r.get("memory"), 1.0),
        pods: 0,
    }
}

/// What `pod` requests: the sum over its containers, raised to its largest
/// init container (init containers run one at a time, before the others),
/// and one pod.
pub fn pod_requests(pod: &Pod) -> Resources {
    let mut sum = Resources::default();
    for c in &pod.spec.containers {
        sum.add(&container_requests(c));
    }
    for c in &pod.spec.init_containers {
        sum.max(&container_requests(c));
    }
    sum.pods = 1;
    sum
}

/// A node's allocatable resources (capacity when allocatable is not
/// reported). A node that reports no pod count takes 110, kubelet's
/// default.
pub fn node_allocatable(node: &Node) -> Resources {
    let empty = BTreeMap::new();
    let status = node.status.as_ref();
    let alloc = status.map(|s| &s.allocatable).unwrap_or(&empty);
    let cap = status.map(|s| &s.capacity).unwrap_or(&empty);
    let get = |k: &str| alloc.get(k).or_else(|| cap.get(k));
    let pods = quantity(get("pods"), 1.0);
    Resources {
        milli_cpu: quantity(get("cpu"), 1000.0),
        memory: quantity(get("memory"), 1.0),
        pods: if get("pods").is_some() { pods } else { 110 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    #[test]
    fn init_containers_count_as_kubernetes_counts_them() {
        let p = pod(json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m", "memory": "50Mi"}}}],
            "initContainers": [
                {"name": "i1", "resources": {"requests": {"cpu": "500m"}}},
                {"name": "i2", "resources": {"requests": {"memory": "120Mi"}}}]}}));
        let r = pod_requests(&p);
        // cpu: max(100m + 200m, 500m); memory: max(150Mi, 120Mi).
        assert_eq!(r.milli_cpu, 500);
        assert_eq!(r.memory, 150 * 1024 * 1024);
        assert_eq!(r.pods, 1);
    }

    #[test]
    fn allocatable_falls_back_to_capacity_and_default_pod_count() {
        let n: Node = serde_json::from_value(json!({"status": {
            "capacity": {"cpu": "4", "memory": "8Gi"}, "allocatable": {"cpu": "3500m"}}}))
        .expect("node");
        let a = node_allocatable(&n);
        assert_eq!(a.milli_cpu, 3500);
        assert_eq!(a.memory, 8 << 30);
        assert_eq!(a.pods, 110);
    }
}
