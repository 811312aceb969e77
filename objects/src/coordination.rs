//! The coordination group (`coordination.k8s.io/v1`): Lease, which node
//! agents renew as their heartbeat (in `kube-node-lease`, one per node,
//! named after it), as kubelet does.

use crate::admit::FieldError;
use crate::meta::{object, resource, ObjectMeta, Time};
use crate::registry;

/// The namespace of the nodes' heartbeat leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

object! {
    /// A lease: who holds it and until when.
    pub struct Lease {
        /// "coordination.k8s.io/v1"
        pub api_version: String,
        /// "Lease"
        pub kind: String,
        /// Metadata.
        pub metadata: ObjectMeta,
        /// The lease.
        pub spec: LeaseSpec,
    }
}
resource!(Lease, registry::LEASE);

object! {
    /// The holder and timing of a lease.
    pub struct LeaseSpec {
        /// Who holds the lease.
        pub holder_identity: Option<String>,
        /// Seconds the holder has to renew it.
        pub lease_duration_seconds: Option<i32>,
        /// When the current holder acquired it.
        pub acquire_time: Option<Time>,
        /// When the holder last renewed it.
        pub renew_time: Option<Time>,
        /// How many times the holder changed.
        pub lease_transitions: Option<i32>,
    }
}

pub(crate) fn validate_lease(l: &Lease) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(d) = l.spec.lease_duration_seconds {
        if d <= 0 {
            errs.push(FieldError::invalid(
                "spec.leaseDurationSeconds",
                d.to_string(),
                "must be greater than 0",
            ));
        }
    }
    if let Some(t) = l.spec.lease_transitions {
        if t < 0 {
            errs.push(FieldError::invalid(
                "spec.leaseTransitions",
                t.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lease_round_trips_with_kubernetes_names() {
        let l: Lease = serde_json::from_value(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "n1", "namespace": NODE_LEASE_NAMESPACE},
            "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40,
                     "renewTime": "2026-01-02T03:04:05Z"}
        }))
        .unwrap();
        assert_eq!(l.spec.holder_identity.as_deref(), Some("n1"));
        assert!(validate_lease(&l).is_empty());
        let mut bad = l.clone();
        bad.spec.lease_duration_seconds = Some(0);
        assert_eq!(validate_lease(&bad).len(), 1);
    }
}
