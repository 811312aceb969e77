//! Which nodes a daemon pod belongs on: nodeSelector and taints, with the
//! tolerations Kubernetes gives every daemon pod.

use flotilla_objects::core::{Node, PodSpec, Taint, Toleration};

/// The tolerations a daemon pod gets besides its own: it keeps running on
/// nodes that are not ready, unreachable, under pressure, cordoned, or
/// (host-network pods) without a pod network yet.
pub fn daemon_tolerations(spec: &PodSpec) -> Vec<Toleration> {
    let exists = |key: &str, effect: &str| Toleration {
        key: key.into(),
        operator: "Exists".into(),
        value: String::new(),
        effect: effect.into(),
        toleration_seconds: None,
    };
    let mut out = vec![
        exists("node.kubernetes.io/not-ready", "NoExecute"),
        exists("node.kubernetes.io/unreachable", "NoExecute"),
        exists("node.kubernetes.io/disk-pressure", "NoSchedule"),
        exists("node.kubernetes.io/memory-pressure", "NoSchedule"),
        exists("node.kubernetes.io/pid-pressure", "NoSchedule"),
        exists("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network {
        out.push(exists(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    out.retain(|t| {
        !spec
            .tolerations
            .iter()
            .any(|o| o.key == t.key && o.effect == t.effect)
    });
    out
}

/// Whether `t` tolerates `taint` (Kubernetes' ToleratesTaint).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if !t.effect.is_empty() && t.effect != taint.effect {
        return false;
    }
    if !t.key.is_empty() && t.key != taint.key {
        return false;
    }
    match t.operator.as_str() {
        "Exists" => true,
        "" | "Equal" => t.value == taint.value,
        _ => false,
    }
}

/// Whether a daemon pod with `spec` belongs on `node`.
pub fn eligible(node: &Node, spec: &PodSpec) -> bool {
    let labels = &node.metadata.labels;
    if !spec
        .node_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let extra = daemon_tolerations(spec);
    let all: Vec<&Toleration> = spec.tolerations.iter().chain(&extra).collect();
    node.spec
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|taint| all.iter().any(|t| tolerates(t, taint)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        Toleration {
            key: key.into(),
            operator: op.into(),
            value: value.into(),
            effect: effect.into(),
            toleration_seconds: None,
        }
    }

    #[test]
    fn tolerations_match_as_kubernetes_matches_them() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        assert!(tolerates(
            &toleration("dedicated", "Equal", "gpu", "NoSchedule"),
            &t
        ));
        assert!(
            tolerates(&toleration("dedicated", "", "gpu", ""), &t),
            "empty effect: any effect"
        );
        assert!(!tolerates(
            &toleration("dedicated", "Equal", "cpu", "NoSchedule"),
            &t
        ));
        assert!(tolerates(
            &toleration("dedicated", "Exists", "", "NoSchedule"),
            &t
        ));
        assert!(
            tolerates(&toleration("", "Exists", "", ""), &t),
            "empty key with Exists: everything"
        );
        assert!(!tolerates(&toleration("other", "Exists", "", ""), &t));
        assert!(!tolerates(
            &toleration("dedicated", "Exists", "", "NoExecute"),
            &t
        ));
    }

    #[test]
    fn daemons_run_on_cordoned_and_unready_nodes_but_respect_other_taints() {
        let mut n = Node::default();
        n.metadata.labels.insert("disk".into(), "ssd".into());
        n.spec.taints = vec![
            taint("node.kubernetes.io/unschedulable", "", "NoSchedule"),
            taint("node.kubernetes.io/not-ready", "", "NoExecute"),
            taint("soft", "", "PreferNoSchedule"),
        ];
        let mut spec = PodSpec::default();
        assert!(eligible(&n, &spec));
        spec.node_selector.insert("disk".into(), "hdd".into());
        assert!(!eligible(&n, &spec), "nodeSelector");
        spec.node_selector.clear();
        n.spec.taints.push(taint("dedicated", "db", "NoSchedule"));
        assert!(!eligible(&n, &spec), "a taint it does not tolerate");
        spec.tolerations
            .push(toleration("dedicated", "Equal", "db", "NoSchedule"));
        assert!(eligible(&n, &spec));
    }
}
