//! The `apps/v1` group: ReplicaSet, Deployment and DaemonSet.

use crate::core::PodTemplateSpec;
use crate::meta::{object, resource, Condition, IntOrString, LabelSelector, ObjectMeta, Time};
use crate::registry;

object! {
    /// Keeps a number of pods matching a selector running.
    pub struct ReplicaSet {
        /// "apps/v1"
        pub api_version: String,
        /// "ReplicaSet"
        pub kind: String,
        /// Metadata.
        pub metadata: ObjectMeta,
        /// Desired state.
        pub spec: ReplicaSetSpec,
        /// Observed state.
        pub status: Option<ReplicaSetStatus>,
    }
}
resource!(ReplicaSet, registry::REPLICA_SET);

object! {
    /// Desired state of a replica set.
    pub struct ReplicaSetSpec {
        /// Desired number of pods (default 1).
        pub replicas: Option<i32>,
        /// Pods it owns (required; must match the template's labels).
        pub selector: Option<LabelSelector>,
        /// Template of the pods.
        pub template: PodTemplateSpec,
        /// Seconds a pod must be ready to count as available.
        pub min_ready_seconds: i32,
    }
}

object! {
    /// Observed state of a replica set.
    pub struct ReplicaSetStatus {
        /// Pods matching the selector.
        pub replicas: i32,
        /// Pods with all the template's labels.
        pub fully_labeled_replicas: i32,
        /// Ready pods.
        pub ready_replicas: i32,
        /// Available pods.
        pub available_replicas: i32,
        /// Generation last acted on.
        pub observed_generation: i64,
        /// Conditions.
        pub conditions: Vec<Condition>,
    }
}

object! {
    /// Declarative updates of pods through replica sets.
    pub struct Deployment {
        /// "apps/v1"
        pub api_version: String,
        /// "Deployment"
        pub kind: String,
        /// Metadata.
        pub metadata: ObjectMeta,
        /// Desired state.
        pub spec: DeploymentSpec,
        /// Observed state.
        pub status: Option<DeploymentStatus>,
    }
}
resource!(Deployment, registry::DEPLOYMENT);

object! {
    /// Desired state of a deployment.
    pub struct DeploymentSpec {
        /// Desired number of pods (default 1).
        pub replicas: Option<i32>,
        /// Pods it owns (required; must match the template's labels).
        pub selector: Option<LabelSelector>,
        /// Template of the pods.
        pub template: PodTemplateSpec,
        /// How old pods are replaced.
        pub strategy: DeploymentStrategy,
        /// Seconds a pod must be ready to count as available.
        pub min_ready_seconds: i32,
        /// Old replica sets kept for rollback (default 10).
        pub revision_history_limit: Option<i32>,
        /// Seconds without progress before the rollout is failed (default 600).
        pub progress_deadline_seconds: Option<i32>,
        /// Whether the rollout is paused.
        pub paused: bool,
    }
}

object! {
    /// How a deployment replaces old pods.
    pub struct DeploymentStrategy {
        /// RollingUpdate (default) or Recreate.
        #[serde(rename = "type")]
        pub type_: String,
        /// Parameters of RollingUpdate.
        pub rolling_update: Option<RollingUpdateDeployment>,
    }
}

object! {
    /// Parameters of a rolling update.
    pub struct RollingUpdateDeployment {
        /// Pods that may be unavailable during the update (count or percentage).
        pub max_unavailable: Option<IntOrString>,
        /// Pods that may be created above the desired number (count or percentage).
        pub max_surge: Option<IntOrString>,
    }
}

object! {
    /// Observed state of a deployment.
    pub struct DeploymentStatus {
        /// Generation last acted on.
        pub observed_generation: i64,
        /// Pods of all its replica sets.
        pub replicas: i32,
        /// Pods of the current template.
        pub updated_replicas: i32,
        /// Ready pods.
        pub ready_replicas: i32,
        /// Available pods.
        pub available_replicas: i32,
        /// Pods still needed for full availability.
        pub unavailable_replicas: i32,
        /// Available and Progressing conditions.
        pub conditions: Vec<DeploymentCondition>,
        /// Hash collisions met naming the new ReplicaSet (part of the hash).
        pub collision_count: Option<i32>,
    }
}

object! {
    /// A deployment condition.
    pub struct DeploymentCondition {
        /// Available, Progressing or ReplicaFailure.
        #[serde(rename = "type")]
        pub type_: String,
        /// "True", "False" or "Unknown".
        pub status: String,
        /// Last time it was updated.
        pub last_update_time: Option<Time>,
        /// Last time the status changed.
        pub last_transition_time: Option<Time>,
        /// Machine-readable reason.
        pub reason: String,
        /// Human-readable message.
        pub message: String,
    }
}

object! {
    /// Runs one pod on every eligible node.
    pub struct DaemonSet {
        /// "apps/v1"
        pub api_version: String,
        /// "DaemonSet"
        pub kind: String,
        /// Metadata.
        pub metadata: ObjectMeta,
        /// Desired state.
        pub spec: DaemonSetSpec,
        /// Observed state.
        pub status: Option<DaemonSetStatus>,
    }
}
resource!(DaemonSet, registry::DAEMON_SET);

object! {
    /// Desired state of a daemon set.
    pub struct DaemonSetSpec {
        /// Pods it owns (required; must match the template's labels).
        pub selector: Option<LabelSelector>,
        /// Template of the pods (restartPolicy Always).
        pub template: PodTemplateSpec,
        /// How pods are replaced when the template changes.
        pub update_strategy: DaemonSetUpdateStrategy,
        /// Seconds a pod must be ready to count as available.
        pub min_ready_seconds: i32,
        /// Old revisions kept (default 10).
        pub revision_history_limit: Option<i32>,
    }
}

object! {
    /// How a daemon set replaces its pods.
    pub struct DaemonSetUpdateStrategy {
        /// RollingUpdate (default) or OnDelete.
        #[serde(rename = "type")]
        pub type_: String,
        /// Parameters of RollingUpdate.
        pub rolling_update: Option<RollingUpdateDaemonSet>,
    }
}

object! {
    /// Parameters of a daemon set's rolling update.
    pub struct RollingUpdateDaemonSet {
        /// Nodes whose pod may be unavailable at once (default 1).
        pub max_unavailable: Option<IntOrString>,
        /// Nodes that may run an old and a new pod at once (default 0).
        pub max_surge: Option<IntOrString>,
    }
}

object! {
    /// Observed state of a daemon set.
    pub struct DaemonSetStatus {
        /// Nodes running a pod that should.
        pub current_number_scheduled: i32,
        /// Nodes running a pod that should not.
        pub number_misscheduled: i32,
        /// Nodes that should run a pod.
        pub desired_number_scheduled: i32,
        /// Nodes whose pod is ready.
        pub number_ready: i32,
        /// Generation last acted on.
        pub observed_generation: i64,
        /// Nodes running a pod of the current template.
        pub updated_number_scheduled: i32,
        /// Nodes whose pod is available.
        pub number_available: i32,
        /// Nodes that should run an available pod and do not.
        pub number_unavailable: i32,
        /// Hash collisions met.
        pub collision_count: Option<i32>,
        /// Conditions.
        pub conditions: Vec<Condition>,
    }
}
