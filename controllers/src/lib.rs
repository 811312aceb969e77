//! The controllers that run on the Raft leader, each a loop on the
//! controller runtime (`flotilla-runtime`): the garbage collector ([`gc`]),
//! ReplicaSets and ReplicationControllers ([`replicaset`]), Deployments
//! ([`deployment`]), Jobs ([`job`]), CronJobs ([`cronjob`]), DaemonSets
//! ([`daemonset`]), node lifecycle ([`nodelifecycle`]), event expiry
//! ([`events`]), Endpoints and EndpointSlices ([`endpoints`]); the scheduler, workload controllers, endpoints and node
//! lifecycle are added the same way, as [`flotilla_runtime::LeaderLoop`]s,
//! without touching the runtime.
//!
//! Must not depend on: the store or the API server's implementation (they
//! reach objects through `flotilla_objects::api::ObjectApi`), or any
//! node-side role crate.

pub mod cronjob;
pub mod csr;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod job;
pub mod nodelifecycle;
pub mod pods;
pub mod replicaset;
pub mod serviceaccounts;
#[cfg(test)]
mod testenv;

use std::sync::Arc;
use std::time::Duration;

use flotilla_objects::apps::ReplicaSet;
use flotilla_objects::core::ReplicationController;
use flotilla_runtime::LeaderLoop;

/// Every leader loop a master runs, in the order they start; events
/// are kept `event_ttl` after they last happened.
pub fn leader_loops(event_ttl: Duration) -> Vec<Arc<dyn LeaderLoop>> {
    vec![
        Arc::new(gc::GarbageCollector::default()),
        Arc::new(replicaset::ReplicasLoop::<ReplicaSet>::default()),
        Arc::new(replicaset::ReplicasLoop::<ReplicationController>::default()),
        Arc::new(deployment::DeploymentLoop),
        Arc::new(job::JobLoop::default()),
        Arc::new(cronjob::CronJobLoop::default()),
        Arc::new(daemonset::DaemonSetLoop),
        Arc::new(events::EventExpiry { ttl: event_ttl }),
        Arc::new(nodelifecycle::NodeLifecycle::default()),
        Arc::new(endpoints::EndpointsLoop),
        Arc::new(serviceaccounts::ServiceAccountLoop),
    ]
}

/// The loops `spec` enables, as kube-controller-manager's `--controllers`
/// reads it: `*` is every loop, `NAME` adds one, `-NAME` leaves one out.
/// An unknown name is an error that lists the known ones.
pub fn select(
    loops: Vec<Arc<dyn LeaderLoop>>,
    spec: &[String],
) -> Result<Vec<Arc<dyn LeaderLoop>>, String> {
    let known: Vec<&str> = loops.iter().map(|l| l.name()).collect();
    let spec: Vec<&str> = spec
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    for s in &spec {
        let name = s.trim_start_matches('-');
        if *s != "*" && !known.contains(&name) {
            return Err(format!(
                "unknown controller {name:?}; known: {}",
                known.join(", ")
            ));
        }
    }
    let all = spec.contains(&"*");
    Ok(loops
        .into_iter()
        .filter(|l| {
            let n = l.name();
            !spec.iter().any(|s| s.strip_prefix('-') == Some(n)) && (all || spec.contains(&n))
        })
        .collect())
}

#[cfg(test)]
mod select_tests {
    use super::*;

    fn names(spec: &[&str]) -> Result<Vec<&'static str>, String> {
        let spec: Vec<String> = spec.iter().map(|s| s.to_string()).collect();
        select(leader_loops(events::DEFAULT_TTL), &spec)
            .map(|l| l.iter().map(|l| l.name()).collect())
    }

    #[test]
    fn controllers_are_chosen_as_kube_controller_manager_chooses_them() {
        assert_eq!(
            names(&["*"]).map(|n| n.len()),
            Ok(leader_loops(events::DEFAULT_TTL).len())
        );
        assert_eq!(names(&["garbage-collector"]), Ok(vec!["garbage-collector"]));
        let without = names(&["*", "-job-controller"]).expect("ok");
        assert!(!without.contains(&"job-controller") && without.contains(&"garbage-collector"));
        assert!(names(&["frob"])
            .expect_err("unknown")
            .contains("unknown controller \"frob\""));
        assert_eq!(names(&[]), Ok(vec![]));
    }
}
