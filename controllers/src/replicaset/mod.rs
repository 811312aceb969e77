//! ReplicaSet and ReplicationController: keep `replicas` pods that match the
//! selector, owned through a controller reference.
//!
//! Each pass: adopt orphans that match (and release owned pods that no
//! longer do), create the missing pods in slow-start batches or delete the
//! extra ones (unscheduled, pending, not ready and newest first), then
//! write the status (replicas, fullyLabeledReplicas, readyReplicas,
//! availableReplicas, observedGeneration) if it changed. Before acting on
//! a key again it waits for the pod cache to show its own last writes.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use flotilla_client::events::Recorder;
use flotilla_objects::api::{ApiError, ObjectApi};
use flotilla_objects::apps::ReplicaSet;
use flotilla_objects::core::{Pod, PodTemplateSpec, ReplicationController};
use flotilla_objects::selector::Selector;
use flotilla_objects::Resource;
use flotilla_runtime::informer::BY_NAMESPACE;
use flotilla_runtime::{
    Action, Controller, Informer, LeaderContext, LeaderLoop, ObjectRef, Reconciler,
};
use futures::future::BoxFuture;
use serde_json::json;

use crate::pods::{
    claim_pods, controller_of, create_pods, delete_pods, is_active, is_available, is_ready, latest,
    owner_ref, pod_from_template, sort_for_deletion, until_available, Freshness,
};

/// Most pods created or deleted in one pass (Kubernetes' burstReplicas).
pub const BURST: usize = 500;

/// What the controller needs of a ReplicaSet or a ReplicationController.
pub trait ReplicaOwner: Resource {
    const COMPONENT: &'static str;
    fn replicas(&self) -> i32;
    /// None when the object has no usable selector.
    fn selector(&self) -> Option<Selector>;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn min_ready_seconds(&self) -> i32;
    fn status_counts(&self) -> Counts;
}

/// The status a pass computes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub replicas: i32,
    pub fully_labeled_replicas: i32,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    pub observed_generation: i64,
}

impl ReplicaOwner for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";
    fn replicas(&self) -> i32 {
        self.spec.replicas.unwrap_or(1)
    }
    fn selector(&self) -> Option<Selector> {
        crate::pods::usable_selector(self.spec.selector.as_ref())
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        Some(&self.spec.template)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec.min_ready_seconds
    }
    fn status_counts(&self) -> Counts {
        let s = self.status.clone().unwrap_or_default();
        Counts {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas,
            ready_replicas: s.ready_replicas,
            available_replicas: s.available_replicas,
            observed_generation: s.observed_generation,
        }
    }
}

impl ReplicaOwner for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";
    fn replicas(&self) -> i32 {
        self.spec.replicas.unwrap_or(1)
    }
    fn selector(&self) -> Option<Selector> {
        let m = if self.spec.selector.is_empty() {
            &self.spec.template.as_ref()?.metadata.labels
        } else {
            &self.spec.selector
        };
        (!m.is_empty()).then(|| Selector::from_map(m))
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.template.as_ref()
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec.min_ready_seconds
    }
    fn status_counts(&self) -> Counts {
        let s = self.status.clone().unwrap_or_default();
        Counts {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas,
            ready_replicas: s.ready_replicas,
            available_replicas: s.available_replicas,
            observed_generation: s.observed_generation,
        }
    }
}

/// The controller of one of the two kinds.
pub struct Replicas<K: ReplicaOwner> {
    api: Arc<dyn ObjectApi>,
    owners: Informer<K>,
    pods: Informer<Pod>,
    recorder: Recorder,
    fresh: Freshness,
}

/// The leader loop running [`Replicas`] for `K`.
pub struct ReplicasLoop<K>(std::marker::PhantomData<fn() -> K>);

impl<K> Default for ReplicasLoop<K> {
    fn default() -> Self {
        ReplicasLoop(std::marker::PhantomData)
    }
}

impl<K: ReplicaOwner> LeaderLoop for ReplicasLoop<K> {
    fn name(&self) -> &'static str {
        K::COMPONENT
    }

    fn run(&self, ctx: LeaderContext) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let owners = ctx.informers.get::<K>();
            let pods = ctx.informers.get::<Pod>();
            let r = Arc::new(Replicas {
                api: ctx.api.clone(),
                owners: owners.clone(),
                pods: pods.clone(),
                recorder: Recorder::new(ctx.api.clone(), K::COMPONENT),
                fresh: Freshness::default(),
            });
            let by_selector = owners.clone();
            Controller::new(K::COMPONENT, owners)
                .owns(pods.clone())
                // An orphan that matches: its would-be owners look at it.
                .watches(pods, move |p: &Pod| {
                    if controller_of(&p.metadata).is_some() {
                        return Vec::new();
                    }
                    by_selector
                        .by_index(BY_NAMESPACE, &p.metadata.namespace)
                        .iter()
                        .filter(|o| o.selector().is_some_and(|s| s.matches(&p.metadata.labels)))
                        .map(|o| ObjectRef::of(o.as_ref()))
                        .collect()
                })
                .run(r, ctx.stop)
                .await
        })
    }
}

impl<K: ReplicaOwner> Replicas<K> {
    pub fn new(api: Arc<dyn ObjectApi>, owners: Informer<K>, pods: Informer<Pod>) -> Self {
        Replicas {
            recorder: Recorder::new(api.clone(), K::COMPONENT),
            api,
            owners,
            pods,
            fresh: Freshness::default(),
        }
    }

    async fn sync(&self, key: &ObjectRef, owner: &K) -> Result<Action, ApiError> {
        let Some(selector) = owner.selector() else {
            // Admission requires a selector; an object without one is left alone.
            return Ok(Action::Await);
        };
        let deleting = owner.meta().deletion_timestamp.is_some();
        let candidates = self.pods.by_index(BY_NAMESPACE, &key.namespace);
        let (owned, wrote) = claim_pods(&self.api, owner, &selector, candidates).await?;
        self.fresh.note(key, wrote);
        let mut active: Vec<Arc<Pod>> = owned.iter().filter(|p| is_active(p)).cloned().collect();
        let want = owner.replicas().max(0) as usize;
        let mut error = None;
        if !deleting {
            if active.len() < want {
                let n = (want - active.len()).min(BURST);
                tracing::debug!(owner = %key, active = active.len(), want, creating = n, cache = %self.pods.resource_version(), "too few pods");
                if let Some(t) = owner.template() {
                    let pods: Vec<Pod> = (0..n)
                        .map(|_| pod_from_template(t, &key.namespace, &key.name, owner_ref(owner)))
                        .collect();
                    let w = create_pods(&self.api, &self.recorder, owner, pods).await;
                    self.fresh.note(key, w.revision);
                    error = w.error;
                }
            } else if active.len() > want {
                sort_for_deletion(&mut active);
                tracing::debug!(owner = %key, active = active.len(), want, cache = %self.pods.resource_version(), "too many pods");
                let extra: Vec<Arc<Pod>> = active
                    .iter()
                    .take((active.len() - want).min(BURST))
                    .cloned()
                    .collect();
                let w = delete_pods(&self.api, &self.recorder, owner, &extra).await;
                self.fresh.note(key, w.revision);
                error = w.error;
            }
        }
        // Status from what the cache shows (the pods just created or deleted
        // show on the next pass).
        let now = Utc::now();
        let mrs = owner.min_ready_seconds();
        let template_labels = owner
            .template()
            .map(|t| t.metadata.labels.clone())
            .unwrap_or_default();
        let counts = Counts {
            replicas: active.len() as i32,
            fully_labeled_replicas: active
                .iter()
                .filter(|p| {
                    template_labels
                        .iter()
                        .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
                })
                .count() as i32,
            ready_replicas: active.iter().filter(|p| is_ready(p)).count() as i32,
            available_replicas: active.iter().filter(|p| is_available(p, mrs, now)).count() as i32,
            observed_generation: owner.meta().generation,
        };
        if counts != owner.status_counts() {
            let patch = json!({"status": {
                "replicas": counts.replicas,
                "fullyLabeledReplicas": counts.fully_labeled_replicas,
                "readyReplicas": counts.ready_replicas,
                "availableReplicas": counts.available_replicas,
                "observedGeneration": counts.observed_generation,
            }});
            let plural = K::info().plural;
            match self
                .api
                .patch(plural, &key.namespace, &key.name, patch, true, false)
                .await
            {
                Ok(_) => {}
                Err(e) if e.is(flotilla_objects::api::Reason::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        // A ready pod becomes available after minReadySeconds: look again then.
        let next = active
            .iter()
            .filter_map(|p| until_available(p, mrs, now))
            .min();
        Ok(match next {
            Some(d) => Action::RequeueAfter(d + Duration::from_millis(50)),
            None => Action::Await,
        })
    }
}

#[async_trait::async_trait]
impl<K: ReplicaOwner> Reconciler<K> for Replicas<K> {
    type Error = ApiError;

    async fn reconcile(&self, key: &ObjectRef, obj: Option<Arc<K>>) -> Result<Action, ApiError> {
        if obj.is_none() {
            // Gone: its pods go with it (garbage collector).
            return Ok(Action::Await);
        }
        // The owner as of now (the cache may have moved on while we waited).
        match latest(&self.fresh, key, &self.pods, &self.owners).await {
            Ok(owner) => self.sync(key, &owner).await,
            Err(action) => Ok(action),
        }
    }
}

#[cfg(test)]
mod tests;
