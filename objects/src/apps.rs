//! The `apps/v1` group: ReplicaSet and Deployment.

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
