//! The message of a pod that fits no node, in kube-scheduler's form:
//! `0/5 nodes are available: 3 Insufficient cpu, 2 node(s) had untolerated
//! taint {dedicated: gpu}.` Each reason is counted over the nodes it
//! refused, the "COUNT REASON" strings sorted as text and joined.

use std::collections::BTreeMap;

use crate::filters::Unfit;

/// Why a pod fit none of the nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnosis {
    /// Nodes looked at.
    pub nodes: usize,
    /// How many nodes gave each reason.
    pub reasons: BTreeMap<Unfit, usize>,
}

impl Diagnosis {
    pub fn add(&mut self, reasons: &[Unfit]) {
        for r in reasons {
            *self.reasons.entry(r.clone()).or_insert(0) += 1;
        }
    }

    /// Whether removing pods could help on some node.
    pub fn preemption_may_help(&self) -> bool {
        self.reasons.keys().any(Unfit::resolvable_by_preemption)
    }

    /// The message (see the module's documentation).
    pub fn message(&self) -> String {
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        parts.sort();
        if self.nodes == 0 {
            // kube-scheduler's ErrNoNodesAvailable.
            return "no nodes available to schedule pods".to_string();
        }
        if parts.is_empty() {
            format!("0/{} nodes are available.", self.nodes)
        } else {
            format!(
                "0/{} nodes are available: {}.",
                self.nodes,
                parts.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(nodes: usize, reasons: &[(Unfit, usize)]) -> Diagnosis {
        Diagnosis {
            nodes,
            reasons: reasons.iter().cloned().collect(),
        }
    }

    #[test]
    fn unschedulable_messages_read_as_kube_schedulers() {
        let gpu = Unfit::UntoleratedTaint {
            key: "dedicated".into(),
            value: "gpu".into(),
        };
        let table = [
            (diag(0, &[]), "no nodes available to schedule pods"),
            (
                diag(3, &[(Unfit::InsufficientCpu, 1), (Unfit::NodeAffinity, 2)]),
                "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector.",
            ),
            (
                diag(5, &[(Unfit::InsufficientCpu, 3), (gpu, 2)]),
                "0/5 nodes are available: 2 node(s) had untolerated taint {dedicated: gpu}, 3 Insufficient cpu.",
            ),
            (
                diag(
                    4,
                    &[
                        (Unfit::InsufficientCpu, 2),
                        (Unfit::InsufficientMemory, 2),
                        (Unfit::Unschedulable, 1),
                        (Unfit::NotReady, 1),
                    ],
                ),
                "0/4 nodes are available: 1 node(s) were not ready, 1 node(s) were unschedulable, 2 Insufficient cpu, 2 Insufficient memory.",
            ),
            (
                diag(2, &[(Unfit::PodAntiAffinity, 1), (Unfit::HostPorts, 1)]),
                "0/2 nodes are available: 1 node(s) didn't have free ports for the requested pod ports, 1 node(s) didn't match pod anti-affinity rules.",
            ),
            (
                diag(1, &[(Unfit::TooManyPods, 1)]),
                "0/1 nodes are available: 1 Too many pods.",
            ),
        ];
        for (d, want) in table {
            assert_eq!(d.message(), want);
        }
    }
}
