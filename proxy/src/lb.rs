//! Which node answers a load balancer address: among the Ready nodes
//! labelled [`LB_LABEL`]`=true` (all Ready nodes when none is labelled, as
//! k3s's ServiceLB does), the one with the highest rendezvous hash of
//! (address, node name). Every proxy computes the same answer from the same
//! Node objects, and when the answering node goes NotReady the next one
//! takes over.

use std::net::Ipv4Addr;
use std::sync::Arc;

use flotilla_objects::core::Node;

/// The label that makes a node a load balancer node.
pub const LB_LABEL: &str = "node.flotilla.dev/load-balancer";

/// Whether a node's Ready condition is True.
pub fn node_ready(n: &Node) -> bool {
    n.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// FNV-1a, 64 bits: stable across builds and machines (chain names and
/// the election depend on it).
pub fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(std::iter::once(&0u8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The name of the node that answers `ip`, if any node may.
pub fn answerer(ip: Ipv4Addr, nodes: &[Arc<Node>]) -> Option<String> {
    let labelled: Vec<&Node> = nodes
        .iter()
        .map(|n| n.as_ref())
        .filter(|n| n.metadata.labels.get(LB_LABEL).map(String::as_str) == Some("true"))
        .collect();
    let pool: Vec<&Node> = if labelled.is_empty() {
        nodes.iter().map(|n| n.as_ref()).collect()
    } else {
        labelled
    };
    let ip = ip.octets();
    pool.into_iter()
        .filter(|n| node_ready(n))
        .max_by_key(|n| {
            (
                fnv64(&[&ip, n.metadata.name.as_bytes()]),
                n.metadata.name.clone(),
            )
        })
        .map(|n| n.metadata.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ready: bool, lb: bool) -> Arc<Node> {
        let labels = if lb {
            json!({ LB_LABEL: "true" })
        } else {
            json!({})
        };
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
            }))
            .expect("node"),
        )
    }

    #[test]
    fn labelled_ready_nodes_answer_and_a_not_ready_one_hands_over() {
        let ip = Ipv4Addr::new(172, 31, 9, 200);
        let all = vec![
            node("a", true, true),
            node("b", true, true),
            node("c", true, false),
        ];
        let first = answerer(ip, &all).expect("someone");
        assert_ne!(first, "c", "an unlabelled node answered");
        let down: Vec<_> = all
            .iter()
            .map(|n| {
                if n.metadata.name == first {
                    node(&first, false, true)
                } else {
                    n.clone()
                }
            })
            .collect();
        let second = answerer(ip, &down).expect("someone");
        assert_ne!(second, first);
        assert_ne!(second, "c");
        // No labels at all: every Ready node is a candidate.
        let plain = vec![node("x", false, false), node("y", true, false)];
        assert_eq!(answerer(ip, &plain).as_deref(), Some("y"));
    }
}
