//! Deployments: declarative updates of pods through ReplicaSets, as
//! Kubernetes' deployment controller does them.
//!
//! A Deployment owns one ReplicaSet per pod template it has had, named
//! `<deployment>-<pod-template-hash>` and labelled with that hash, each
//! carrying its revision (`deployment.kubernetes.io/revision`). The one
//! whose template is the Deployment's is the new one; a rollout moves
//! replicas from the old ones to it:
//!
//! - RollingUpdate: the new set grows while the total stays within
//!   `replicas + maxSurge`, the old ones shrink while at least
//!   `replicas - maxUnavailable` pods stay available (unavailable old pods
//!   go first) — [`plan`];
//! - Recreate: the old sets go to zero, and once their pods are gone the
//!   new one grows.
//!
//! A change of `replicas` during a rollout is spread over the active sets
//! in proportion; a paused Deployment is scaled but not rolled out; old
//! sets beyond `revisionHistoryLimit` are deleted; the Progressing
//! condition turns False (ProgressDeadlineExceeded) when the rollout makes
//! no progress for `progressDeadlineSeconds`.

pub mod plan;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_client::api::encode;
use flotilla_client::events::{EventType, Recorder};
use flotilla_objects::api::{ApiError, DeleteParams, ObjectApi, Reason};
use flotilla_objects::apps::{Deployment, ReplicaSet};
use flotilla_objects::core::{Pod, PodTemplateSpec};
use flotilla_objects::meta::LabelSelector;
use flotilla_objects::selector::Selector;
use flotilla_objects::ObjectMeta;
use flotilla_runtime::informer::BY_NAMESPACE;
use flotilla_runtime::{
    Action, Controller, Informer, LeaderContext, LeaderLoop, ObjectRef, Reconciler,
};
use futures::future::BoxFuture;
use serde_json::json;

use crate::pods::{
    controlled_by, controller_of, latest, owner_ref, usable_selector, written_revision, Freshness,
};
use plan::Rs;

pub const COMPONENT: &str = "deployment-controller";
/// The label a ReplicaSet's pods carry to tell templates apart.
pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The annotation `flt rollout undo` reads the previous template from: the
/// change cause kubectl records (`kubernetes.io/change-cause`) is copied too.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

/// FNV-1a (32 bit) of the template's JSON, plus the collision count,
/// written with Kubernetes' safe alphabet: the pod-template-hash.
pub fn template_hash(t: &PodTemplateSpec, collisions: i32) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |b: u8| {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    };
    for b in serde_json::to_vec(t).unwrap_or_default() {
        feed(b);
    }
    if collisions > 0 {
        for b in collisions.to_string().bytes() {
            feed(b);
        }
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = h;
    let mut s = String::new();
    loop {
        s.push(ALPHABET[(n % ALPHABET.len() as u32) as usize] as char);
        n /= ALPHABET.len() as u32;
        if n == 0 {
            break;
        }
    }
    s
}

/// A template without the hash label (to compare a ReplicaSet's with the
/// Deployment's).
fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    t.metadata.labels.remove(HASH_LABEL);
    t
}

pub fn revision_of(m: &ObjectMeta) -> i64 {
    m.annotations
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.available_replicas)
}

/// The leader loop.
#[derive(Default)]
pub struct DeploymentLoop;

impl LeaderLoop for DeploymentLoop {
    fn name(&self) -> &'static str {
        COMPONENT
    }

    fn run(&self, ctx: LeaderContext) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let deployments = ctx.informers.get::<Deployment>();
            let sets = ctx.informers.get::<ReplicaSet>();
            let pods = ctx.informers.get::<Pod>();
            let r = Arc::new(Deployments::new(
                ctx.api.clone(),
                deployments.clone(),
                sets.clone(),
                pods.clone(),
            ));
            let rs_owner = sets.clone();
            Controller::new(COMPONENT, deployments)
                .owns(sets)
                // A pod's changes reach its ReplicaSet's Deployment
                // (Recreate waits for the old pods to be gone).
                .watches(pods, move |p: &Pod| {
                    let Some(rs_ref) = controller_of(&p.metadata) else {
                        return Vec::new();
                    };
                    if rs_ref.kind != "ReplicaSet" {
                        return Vec::new();
                    }
                    rs_owner
                        .get(&p.metadata.namespace, &rs_ref.name)
                        .and_then(|rs| {
                            controller_of(&rs.metadata)
                                .filter(|d| d.kind == "Deployment")
                                .map(|d| ObjectRef::new(&p.metadata.namespace, &d.name))
                        })
                        .into_iter()
                        .collect()
                })
                .run(r, ctx.stop)
                .await
        })
    }
}

/// The Deployment controller's state.
pub struct Deployments {
    api: Arc<dyn ObjectApi>,
    deployments: Informer<Deployment>,
    sets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    recorder: Recorder,
    fresh: Freshness,
}

impl Deployments {
    pub fn new(
        api: Arc<dyn ObjectApi>,
        deployments: Informer<Deployment>,
        sets: Informer<ReplicaSet>,
        pods: Informer<Pod>,
    ) -> Self {
        Deployments {
            recorder: Recorder::new(api.clone(), COMPONENT),
            api,
            deployments,
            sets,
            pods,
            fresh: Freshness::default(),
        }
    }

    /// The ReplicaSets this Deployment controls, after adopting matching
    /// orphans and releasing ones that stopped matching.
    async fn claim(
        &self,
        key: &ObjectRef,
        d: &Deployment,
        sel: &Selector,
    ) -> Result<Vec<Arc<ReplicaSet>>, ApiError> {
        let uid = &d.metadata.uid;
        let mut out = Vec::new();
        for rs in self.sets.by_index(BY_NAMESPACE, &key.namespace) {
            let matches = sel.matches(&rs.metadata.labels);
            let m = &rs.metadata;
            if controlled_by(m, uid) {
                if matches {
                    out.push(rs);
                } else {
                    let refs: Vec<_> = m
                        .owner_references
                        .iter()
                        .filter(|o| &o.uid != uid)
                        .collect();
                    let p = json!({"metadata": {"ownerReferences": refs, "resourceVersion": m.resource_version}});
                    let w = self
                        .api
                        .patch("replicasets", &m.namespace, &m.name, p, false, false)
                        .await?;
                    self.fresh.note(key, written_revision(&w.object));
                }
            } else if matches
                && controller_of(m).is_none()
                && m.deletion_timestamp.is_none()
                && d.metadata.deletion_timestamp.is_none()
            {
                let mut refs = m.owner_references.clone();
                refs.push(owner_ref(d));
                let p = json!({"metadata": {"ownerReferences": refs, "resourceVersion": m.resource_version}});
                let w = self
                    .api
                    .patch("replicasets", &m.namespace, &m.name, p, false, false)
                    .await?;
                self.fresh.note(key, written_revision(&w.object));
                let mut adopted = (*rs).clone();
                adopted.metadata.owner_references.push(owner_ref(d));
                out.push(Arc::new(adopted));
            }
        }
        out.sort_by(|a, b| {
            (a.metadata.creation_timestamp, &a.metadata.name)
                .cmp(&(b.metadata.creation_timestamp, &b.metadata.name))
        });
        Ok(out)
    }

    /// Set a ReplicaSet's size (and the annotations that record what the
    /// Deployment asked of it).
    async fn scale(
        &self,
        key: &ObjectRef,
        d: &Deployment,
        rs: &ReplicaSet,
        to: i32,
        surge: i32,
    ) -> Result<(), ApiError> {
        let replicas = d.spec.replicas.unwrap_or(1);
        let desired = replicas.to_string();
        let max = (replicas + surge).to_string();
        let same_annotations = rs.metadata.annotations.get(DESIRED_REPLICAS) == Some(&desired)
            && rs.metadata.annotations.get(MAX_REPLICAS) == Some(&max);
        if rs_replicas(rs) == to && same_annotations {
            return Ok(());
        }
        let p = json!({"metadata": {"resourceVersion": rs.metadata.resource_version,
            "annotations": {DESIRED_REPLICAS: desired, MAX_REPLICAS: max}},
            "spec": {"replicas": to}});
        let w = self
            .api
            .patch(
                "replicasets",
                &rs.metadata.namespace,
                &rs.metadata.name,
                p,
                false,
                false,
            )
            .await?;
        self.fresh.note(key, written_revision(&w.object));
        if rs_replicas(rs) != to {
            let verb = if to > rs_replicas(rs) { "up" } else { "down" };
            self.recorder
                .record(
                    d,
                    EventType::Normal,
                    "ScalingReplicaSet",
                    &format!(
                        "Scaled {verb} replica set {} to {to} from {}",
                        rs.metadata.name,
                        rs_replicas(rs)
                    ),
                )
                .await;
        }
        Ok(())
    }

    /// The ReplicaSet of the Deployment's current template: found (its
    /// revision brought to the newest if it is an old one coming back), or
    /// created (at the size the rollout allows now).
    async fn new_rs(
        &self,
        key: &ObjectRef,
        d: &Deployment,
        sets: &[Arc<ReplicaSet>],
        surge: i32,
        create: bool,
    ) -> Result<Option<Arc<ReplicaSet>>, ApiError> {
        let want = without_hash(&d.spec.template);
        let max_rev = sets
            .iter()
            .map(|r| revision_of(&r.metadata))
            .max()
            .unwrap_or(0);
        if let Some(rs) = sets.iter().find(|r| without_hash(&r.spec.template) == want) {
            let rev = revision_of(&rs.metadata);
            let is_newest = sets
                .iter()
                .all(|r| Arc::ptr_eq(r, rs) || revision_of(&r.metadata) < rev);
            if !is_newest {
                let p = json!({"metadata": {"resourceVersion": rs.metadata.resource_version,
                    "annotations": {REVISION: (max_rev + 1).to_string()}}});
                let w = self
                    .api
                    .patch(
                        "replicasets",
                        &key.namespace,
                        &rs.metadata.name,
                        p,
                        false,
                        false,
                    )
                    .await?;
                self.fresh.note(key, written_revision(&w.object));
                let mut rs2 = (**rs).clone();
                rs2.metadata
                    .annotations
                    .insert(REVISION.into(), (max_rev + 1).to_string());
                return Ok(Some(Arc::new(rs2)));
            }
            return Ok(Some(rs.clone()));
        }
        if !create {
            return Ok(None);
        }
        let collisions = d
            .status
            .as_ref()
            .map_or(0, |s| s.collision_count.unwrap_or(0));
        let hash = template_hash(&want, collisions);
        let mut template = want.clone();
        template
            .metadata
            .labels
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector = d.spec.selector.clone().unwrap_or_default();
        selector
            .match_labels
            .insert(HASH_LABEL.into(), hash.clone());
        let replicas = d.spec.replicas.unwrap_or(1);
        let total: i32 = sets.iter().map(|r| rs_replicas(r)).sum();
        let size = match d.spec.strategy.type_.as_str() {
            "Recreate" => 0,
            _ => plan::new_rs_size(replicas, surge, 0, total),
        };
        let mut annotations: BTreeMap<String, String> = d
            .metadata
            .annotations
            .iter()
            .filter(|(k, _)| !k.starts_with("kubectl.kubernetes.io/") && k.as_str() != REVISION)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        annotations.insert(REVISION.into(), (max_rev + 1).to_string());
        annotations.insert(DESIRED_REPLICAS.into(), replicas.to_string());
        annotations.insert(MAX_REPLICAS.into(), (replicas + surge).to_string());
        let mut labels = d.spec.template.metadata.labels.clone();
        labels.insert(HASH_LABEL.into(), hash.clone());
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: format!("{}-{hash}", d.metadata.name),
                namespace: key.namespace.clone(),
                labels,
                annotations,
                owner_references: vec![owner_ref(d)],
                ..Default::default()
            },
            spec: flotilla_objects::apps::ReplicaSetSpec {
                replicas: Some(size),
                selector: Some(LabelSelector {
                    match_labels: selector.match_labels,
                    match_expressions: selector.match_expressions,
                }),
                template,
                min_ready_seconds: d.spec.min_ready_seconds,
            },
            ..Default::default()
        };
        match self
            .api
            .create("replicasets", &key.namespace, encode(&rs)?, false)
            .await
        {
            Ok(w) => {
                self.fresh.note(key, written_revision(&w.object));
                self.recorder
                    .record(
                        d,
                        EventType::Normal,
                        "ScalingReplicaSet",
                        &format!("Scaled up replica set {} to {size}", rs.metadata.name),
                    )
                    .await;
                status::note_new_rs(self, key, d, &rs.metadata.name).await?;
                let created: ReplicaSet = serde_json::from_value(w.object)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                Ok(Some(Arc::new(created)))
            }
            Err(e) if e.is(Reason::AlreadyExists) => {
                // A ReplicaSet of that name with another template: a hash
                // collision. Count it, and the next pass picks another name.
                let n = collisions + 1;
                let p = json!({"status": {"collisionCount": n}});
                self.api
                    .patch("deployments", &key.namespace, &key.name, p, true, false)
                    .await?;
                Err(ApiError::new(
                    Reason::Conflict,
                    format!(
                        "replica set {} exists with another template; collision count now {n}",
                        rs.metadata.name
                    ),
                ))
            }
            Err(e) => Err(e),
        }
    }

    async fn rolling(
        &self,
        key: &ObjectRef,
        d: &Deployment,
        sets: &[Arc<ReplicaSet>],
        new: Option<&Arc<ReplicaSet>>,
        (surge, unavailable): (i32, i32),
    ) -> Result<(), ApiError> {
        let Some(new) = new else {
            return Ok(());
        };
        let replicas = d.spec.replicas.unwrap_or(1);
        let old: Vec<&Arc<ReplicaSet>> = sets
            .iter()
            .filter(|r| r.metadata.name != new.metadata.name)
            .collect();
        let total: i32 = rs_replicas(new) + old.iter().map(|r| rs_replicas(r)).sum::<i32>();
        let new_size = plan::new_rs_size(replicas, surge, rs_replicas(new), total);
        self.scale(key, d, new, new_size, surge).await?;
        let olds: Vec<Rs> = old
            .iter()
            .map(|r| Rs {
                replicas: rs_replicas(r),
                available: rs_available(r),
            })
            .collect();
        let sizes = plan::scale_down_old(
            replicas,
            unavailable,
            Rs {
                replicas: rs_replicas(new),
                available: rs_available(new),
            },
            &olds,
        );
        for (rs, size) in old.iter().zip(sizes) {
            if size != rs_replicas(rs) {
                self.scale(key, d, rs, size, surge).await?;
            }
        }
        Ok(())
    }

    async fn recreate(
        &self,
        key: &ObjectRef,
        d: &Deployment,
        sets: &[Arc<ReplicaSet>],
        new: Option<&Arc<ReplicaSet>>,
    ) -> Result<(), ApiError> {
        let new_name = new.map(|r| r.metadata.name.clone()).unwrap_or_default();
        let mut old_running = false;
        for rs in sets.iter().filter(|r| r.metadata.name != new_name) {
            if rs_replicas(rs) > 0 {
                self.scale(key, d, rs, 0, 0).await?;
                old_running = true;
            }
            let uid = &rs.metadata.uid;
            if self
                .pods
                .by_index(flotilla_runtime::informer::BY_OWNER, uid)
                .iter()
                .any(|_| true)
            {
                old_running = true;
            }
        }
        if old_running {
            return Ok(());
        }
        if let Some(new) = new {
            self.scale(key, d, new, d.spec.replicas.unwrap_or(1), 0)
                .await?;
        }
        Ok(())
    }

    /// Scale for a change of `replicas` (and for a paused Deployment):
    /// proportionally over the active sets, or all to the one active set.
    async fn scale_only(
        &self,
        key: &ObjectRef,
        d: &Deployment,
        sets: &[Arc<ReplicaSet>],
        new: Option<&Arc<ReplicaSet>>,
        surge: i32,
    ) -> Result<(), ApiError> {
        let replicas = d.spec.replicas.unwrap_or(1);
        let active: Vec<&Arc<ReplicaSet>> = sets.iter().filter(|r| rs_replicas(r) > 0).collect();
        match (active.len(), new) {
            (0, Some(n)) => self.scale(key, d, n, replicas, surge).await,
            (0, None) => Ok(()),
            (1, _) => self.scale(key, d, active[0], replicas, surge).await,
            _ => {
                // Newest first, so that rounding favours the newer sets.
                let mut ordered = active.clone();
                ordered.sort_by_key(|r| std::cmp::Reverse(revision_of(&r.metadata)));
                let sizes: Vec<(i32, i32)> = ordered
                    .iter()
                    .map(|r| {
                        let annotated = r
                            .metadata
                            .annotations
                            .get(DESIRED_REPLICAS)
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(replicas);
                        (rs_replicas(r), annotated)
                    })
                    .collect();
                let surge = if d.spec.strategy.type_ == "Recreate" {
                    0
                } else {
                    surge
                };
                let out = plan::proportional(replicas, surge, &sizes);
                for (rs, size) in ordered.iter().zip(out) {
                    self.scale(key, d, rs, size, surge).await?;
                }
                Ok(())
            }
        }
    }

    /// Whether the active sets were last scaled for another `replicas`.
    fn is_scaling_event(d: &Deployment, sets: &[Arc<ReplicaSet>]) -> bool {
        let want = d.spec.replicas.unwrap_or(1).to_string();
        sets.iter().filter(|r| rs_replicas(r) > 0).any(|r| {
            r.metadata
                .annotations
                .get(DESIRED_REPLICAS)
                .is_some_and(|v| *v != want)
        })
    }

    /// Delete old sets beyond revisionHistoryLimit (only empty ones).
    async fn cleanup(
        &self,
        d: &Deployment,
        sets: &[Arc<ReplicaSet>],
        new_name: &str,
    ) -> Result<(), ApiError> {
        let limit = d.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let mut old: Vec<&Arc<ReplicaSet>> = sets
            .iter()
            .filter(|r| r.metadata.name != new_name && rs_replicas(r) == 0)
            .filter(|r| r.status.as_ref().is_none_or(|s| s.replicas == 0))
            .collect();
        if old.len() <= limit {
            return Ok(());
        }
        old.sort_by_key(|r| revision_of(&r.metadata));
        let extra = old.len() - limit;
        for rs in old.into_iter().take(extra) {
            let dp = DeleteParams {
                precondition_uid: rs.metadata.uid.clone(),
                ..Default::default()
            };
            match self
                .api
                .delete(
                    "replicasets",
                    &rs.metadata.namespace,
                    &rs.metadata.name,
                    &dp,
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.is(Reason::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn sync(&self, key: &ObjectRef, d: &Deployment) -> Result<Action, ApiError> {
        let Some(sel) = usable_selector(d.spec.selector.as_ref()) else {
            return Ok(Action::Await);
        };
        let mut sets = self.claim(key, d, &sel).await?;
        if d.metadata.deletion_timestamp.is_some() {
            return status::sync(self, key, d, &sets, None).await;
        }
        let replicas = d.spec.replicas.unwrap_or(1);
        let ru = d.spec.strategy.rolling_update.clone().unwrap_or_default();
        let (surge, unavailable) = if d.spec.strategy.type_ == "Recreate" {
            (0, replicas)
        } else {
            plan::fenceposts(ru.max_surge.as_ref(), ru.max_unavailable.as_ref(), replicas)
        };
        // The new set is found (its revision made the newest) or created
        // once per pass, and every step below sees the same one.
        let scaling = d.spec.paused || Self::is_scaling_event(d, &sets);
        let new = self.new_rs(key, d, &sets, surge, !scaling).await?;
        if let Some(n) = &new {
            match sets.iter_mut().find(|r| r.metadata.name == n.metadata.name) {
                Some(slot) => *slot = n.clone(),
                None => sets.push(n.clone()),
            }
        }
        if scaling {
            self.scale_only(key, d, &sets, new.as_ref(), surge).await?;
        } else if d.spec.strategy.type_ == "Recreate" {
            self.recreate(key, d, &sets, new.as_ref()).await?;
        } else {
            self.rolling(key, d, &sets, new.as_ref(), (surge, unavailable))
                .await?;
        }
        let new_name = new
            .as_ref()
            .map(|r| r.metadata.name.clone())
            .unwrap_or_default();
        if !d.spec.paused {
            self.cleanup(d, &sets, &new_name).await?;
        }
        status::sync(self, key, d, &sets, new.as_deref()).await
    }
}

#[async_trait::async_trait]
impl Reconciler<Deployment> for Deployments {
    type Error = ApiError;

    async fn reconcile(
        &self,
        key: &ObjectRef,
        obj: Option<Arc<Deployment>>,
    ) -> Result<Action, ApiError> {
        if obj.is_none() {
            return Ok(Action::Await);
        }
        match latest(&self.fresh, key, &self.sets, &self.deployments).await {
            Ok(d) => self.sync(key, &d).await,
            Err(action) => Ok(action),
        }
    }
}

#[cfg(test)]
mod tests;
