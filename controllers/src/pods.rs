//! What the workload controllers share about pods: readiness and
//! availability, controller references, pods from templates, which pods to
//! delete first, creating and deleting pods in slow-start batches, and
//! waiting for the cache to show a controller's own writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use flotilla_client::api::encode;
use flotilla_client::events::{EventType, Recorder};
use flotilla_objects::api::{ApiError, DeleteParams, ObjectApi};
use flotilla_objects::core::{Pod, PodTemplateSpec};
use flotilla_objects::{ObjectMeta, OwnerReference, Resource};
use flotilla_runtime::{Informer, ObjectRef};

/// A controller's selector, if it has a usable one: admission requires
/// one, and an object without it (or with an empty one) is left alone.
pub fn usable_selector(
    s: Option<&flotilla_objects::meta::LabelSelector>,
) -> Option<flotilla_objects::selector::Selector> {
    let s = flotilla_objects::selector::Selector::from_label_selector(s?).ok()?;
    (!s.is_empty()).then_some(s)
}

/// Index of the pod informer: by `spec.nodeName`.
pub const BY_NODE: &str = "node";

/// Add the [`BY_NODE`] index to a pod informer (idempotent).
pub fn index_by_node(pods: &Informer<Pod>) {
    pods.add_index(BY_NODE, Arc::new(|p: &Pod| vec![p.spec.node_name.clone()]));
}

/// Whether a pod counts toward its controller: not finished, not being deleted.
pub fn is_active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && !is_finished(p)
}

/// Succeeded or Failed.
pub fn is_finished(p: &Pod) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

pub fn phase(p: &Pod) -> &str {
    p.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("")
}

/// The time the pod became Ready, if it is.
pub fn ready_since(p: &Pod) -> Option<DateTime<Utc>> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        c.last_transition_time
            .map(|t| t.0)
            .unwrap_or(DateTime::<Utc>::MIN_UTC),
    )
}

pub fn is_ready(p: &Pod) -> bool {
    ready_since(p).is_some()
}

/// Ready for at least `min_ready_seconds` at `now`.
pub fn is_available(p: &Pod, min_ready_seconds: i32, now: DateTime<Utc>) -> bool {
    match ready_since(p) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(t) => now - t >= chrono::Duration::seconds(i64::from(min_ready_seconds)),
    }
}

/// How long until a ready pod becomes available (None: it is, or is not ready).
pub fn until_available(p: &Pod, min_ready_seconds: i32, now: DateTime<Utc>) -> Option<Duration> {
    let t = ready_since(p)?;
    let at = t + chrono::Duration::seconds(i64::from(min_ready_seconds));
    (at > now).then(|| (at - now).to_std().unwrap_or_default())
}

/// The controlling owner reference.
pub fn controller_of(m: &ObjectMeta) -> Option<&OwnerReference> {
    m.owner_references
        .iter()
        .find(|o| o.controller == Some(true))
}

/// Whether `m` is controlled by the object with uid `uid`.
pub fn controlled_by(m: &ObjectMeta, uid: &str) -> bool {
    controller_of(m).is_some_and(|o| o.uid == uid)
}

/// A controller reference to `owner`.
pub fn owner_ref<K: Resource>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::info().api_version(),
        kind: K::info().kind.to_string(),
        name: owner.meta().name.clone(),
        uid: owner.meta().uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Take a matching orphan (true), or let go of a pod that stopped
/// matching; both conditional on the pod's resourceVersion. The revision
/// written.
async fn set_owner(
    api: &Arc<dyn ObjectApi>,
    owner: &impl Resource,
    p: &Pod,
    take: bool,
) -> Result<i64, ApiError> {
    let refs = if take {
        let mut r = p.metadata.owner_references.clone();
        r.push(owner_ref(owner));
        r
    } else {
        p.metadata
            .owner_references
            .iter()
            .filter(|o| o.uid != owner.meta().uid)
            .cloned()
            .collect()
    };
    let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "resourceVersion": p.metadata.resource_version}});
    let w = api
        .patch(
            "pods",
            &p.metadata.namespace,
            &p.metadata.name,
            patch,
            false,
            false,
        )
        .await?;
    Ok(written_revision(&w.object))
}

/// The pods `owner` controls among `candidates` (its namespace's pods),
/// after adopting orphans that match its selector and releasing owned pods
/// that no longer do, as Kubernetes' controller reference manager does. An
/// owner being deleted adopts nothing. Also the highest revision written.
pub async fn claim_pods(
    api: &Arc<dyn ObjectApi>,
    owner: &impl Resource,
    selector: &flotilla_objects::selector::Selector,
    candidates: Vec<Arc<Pod>>,
) -> Result<(Vec<Arc<Pod>>, i64), ApiError> {
    let uid = owner.meta().uid.clone();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let mut owned = Vec::new();
    let mut wrote = 0i64;
    for p in candidates {
        let matches = selector.matches(&p.metadata.labels);
        if controlled_by(&p.metadata, &uid) {
            if matches {
                owned.push(p);
            } else if p.metadata.deletion_timestamp.is_none() {
                wrote = wrote.max(set_owner(api, owner, &p, false).await?);
            }
        } else if matches
            && !deleting
            && controller_of(&p.metadata).is_none()
            && p.metadata.deletion_timestamp.is_none()
        {
            wrote = wrote.max(set_owner(api, owner, &p, true).await?);
            let mut adopted = (*p).clone();
            adopted.metadata.owner_references.push(owner_ref(owner));
            owned.push(Arc::new(adopted));
        }
    }
    Ok((owned, wrote))
}

/// A new pod from a template, controlled by `owner`, named `<prefix>-<random>`.
pub fn pod_from_template(
    t: &PodTemplateSpec,
    namespace: &str,
    prefix: &str,
    owner: OwnerReference,
) -> Pod {
    Pod {
        metadata: ObjectMeta {
            generate_name: format!("{prefix}-"),
            namespace: namespace.to_string(),
            labels: t.metadata.labels.clone(),
            annotations: t.metadata.annotations.clone(),
            owner_references: vec![owner],
            ..Default::default()
        },
        spec: t.spec.clone(),
        ..Default::default()
    }
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .map(|s| s.container_statuses.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// Pods in the order they should go when there are too many (Kubernetes'
/// ActivePods order): unscheduled before scheduled, pending before running,
/// not ready before ready, ready for less time before longer, more restarts
/// before fewer, newer before older.
pub fn sort_for_deletion(pods: &mut [Arc<Pod>]) {
    let phase_rank = |p: &Pod| match phase(p) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    pods.sort_by(|a, b| {
        let key = |p: &Pod| {
            (
                !p.spec.node_name.is_empty(),
                phase_rank(p),
                is_ready(p),
                std::cmp::Reverse(ready_since(p)),
                std::cmp::Reverse(restarts(p)),
                std::cmp::Reverse(p.metadata.creation_timestamp),
            )
        };
        key(a).cmp(&key(b))
    });
}

/// What a batch of writes did.
#[derive(Debug, Default)]
pub struct Written {
    pub done: usize,
    /// The highest revision written (the cache must reach it before the
    /// next look, or it would redo the work).
    pub revision: i64,
    pub error: Option<ApiError>,
}

/// The resourceVersion of an object as written (0 when absent).
pub fn written_revision(v: &serde_json::Value) -> i64 {
    v.pointer("/metadata/resourceVersion")
        .and_then(|r| r.as_str())
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Create pods in slow-start batches (1, 2, 4, ...), stopping at the first
/// batch with a failure, as Kubernetes' controllers do: a template that
/// cannot be created fails once, not `replicas` times.
pub async fn create_pods(
    api: &Arc<dyn ObjectApi>,
    recorder: &Recorder,
    owner: &impl Resource,
    pods: Vec<Pod>,
) -> Written {
    let mut out = Written::default();
    let mut batch = 1usize;
    let mut rest = pods.into_iter();
    loop {
        let chunk: Vec<Pod> = rest.by_ref().take(batch).collect();
        if chunk.is_empty() {
            return out;
        }
        let results = futures::future::join_all(chunk.into_iter().map(|p| {
            let api = api.clone();
            async move {
                let v = encode(&p)?;
                api.create("pods", &p.metadata.namespace, v, false).await
            }
        }))
        .await;
        for r in results {
            match r {
                Ok(w) => {
                    out.done += 1;
                    out.revision = out.revision.max(written_revision(&w.object));
                    let name = w
                        .object
                        .pointer("/metadata/name")
                        .and_then(|n| n.as_str())
                        .unwrap_or("");
                    recorder
                        .record(
                            owner,
                            EventType::Normal,
                            "SuccessfulCreate",
                            &format!("Created pod: {name}"),
                        )
                        .await;
                }
                Err(e) => {
                    recorder
                        .record(
                            owner,
                            EventType::Warning,
                            "FailedCreate",
                            &format!("Error creating: {e}"),
                        )
                        .await;
                    out.error.get_or_insert(e);
                }
            }
        }
        if out.error.is_some() {
            return out;
        }
        batch *= 2;
    }
}

/// Delete pods (each with a uid precondition), all at once.
pub async fn delete_pods(
    api: &Arc<dyn ObjectApi>,
    recorder: &Recorder,
    owner: &impl Resource,
    pods: &[Arc<Pod>],
) -> Written {
    let mut out = Written::default();
    let results = futures::future::join_all(pods.iter().map(|p| {
        let api = api.clone();
        let dp = DeleteParams {
            precondition_uid: p.metadata.uid.clone(),
            ..Default::default()
        };
        let (ns, name) = (p.metadata.namespace.clone(), p.metadata.name.clone());
        async move {
            let r = api.delete("pods", &ns, &name, &dp).await;
            (name, r)
        }
    }))
    .await;
    for (name, r) in results {
        match r {
            Ok((v, _)) => {
                out.done += 1;
                out.revision = out.revision.max(written_revision(&v));
                recorder
                    .record(
                        owner,
                        EventType::Normal,
                        "SuccessfulDelete",
                        &format!("Deleted pod: {name}"),
                    )
                    .await;
            }
            Err(e) if e.is(flotilla_objects::api::Reason::NotFound) => out.done += 1,
            Err(e) => {
                recorder
                    .record(
                        owner,
                        EventType::Warning,
                        "FailedDelete",
                        &format!("Error deleting: {e}"),
                    )
                    .await;
                out.error.get_or_insert(e);
            }
        }
    }
    out
}

/// The revision each key's last writes reached: before acting on that key
/// again, a controller waits until its caches show them (client-go keeps
/// "expectations" for the same reason: a cache that has not seen the pods
/// just created would make it create them again).
#[derive(Default, Clone)]
pub struct Freshness {
    wrote: Arc<Mutex<HashMap<ObjectRef, i64>>>,
}

impl Freshness {
    pub fn note(&self, key: &ObjectRef, revision: i64) {
        if revision <= 0 {
            return;
        }
        let mut m = self.wrote.lock().unwrap_or_else(|e| e.into_inner());
        let r = m.entry(key.clone()).or_default();
        *r = (*r).max(revision);
    }

    /// Wait (up to `limit`) until `informer` shows this key's writes.
    /// False when it does not yet: the caller should look again later.
    pub async fn wait<K: Resource>(
        &self,
        key: &ObjectRef,
        informer: &Informer<K>,
        limit: Duration,
    ) -> bool {
        let need = {
            let m = self.wrote.lock().unwrap_or_else(|e| e.into_inner());
            m.get(key).copied().unwrap_or(0)
        };
        if need == 0 {
            return true;
        }
        let ok = informer.wait_for_revision(need, limit).await;
        if ok {
            let mut m = self.wrote.lock().unwrap_or_else(|e| e.into_inner());
            if m.get(key).copied() == Some(need) {
                m.remove(key);
            }
        }
        ok
    }
}

/// The prologue of a controller's pass over `key`: wait (up to two
/// seconds) until `written` shows the key's own last writes, then the
/// object as cached now. `Err` is what to return instead: look again soon
/// (the cache is behind) or wait (the object is gone).
pub async fn latest<K: Resource, W: Resource>(
    fresh: &Freshness,
    key: &ObjectRef,
    written: &Informer<W>,
    objects: &Informer<K>,
) -> Result<Arc<K>, flotilla_runtime::Action> {
    if !fresh.wait(key, written, Duration::from_secs(2)).await {
        return Err(flotilla_runtime::Action::RequeueAfter(
            Duration::from_millis(100),
        ));
    }
    objects.get_ref(key).ok_or(flotilla_runtime::Action::Await)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use flotilla_objects::api::{
        Applied, DeleteParams, ListParams, ObjectList, RawWatch, Reason, WatchParams,
    };
    use serde_json::Value;

    use super::*;

    /// An API whose creates succeed `ok` times, then fail; it counts them.
    struct Creates {
        ok: usize,
        tried: AtomicUsize,
    }

    fn unused<T>() -> Result<T, ApiError> {
        Err(ApiError::internal("not used by this test"))
    }

    #[async_trait::async_trait]
    impl ObjectApi for Creates {
        async fn create(
            &self,
            _: &str,
            _: &str,
            object: Value,
            _: bool,
        ) -> Result<flotilla_objects::api::Written, ApiError> {
            let n = self.tried.fetch_add(1, Ordering::SeqCst);
            if n >= self.ok {
                return Err(ApiError::new(Reason::Forbidden, "refused"));
            }
            Ok(flotilla_objects::api::Written {
                object,
                warnings: vec![],
                changed: true,
            })
        }
        async fn get(&self, _: &str, _: &str, _: &str, _: bool) -> Result<Value, ApiError> {
            unused()
        }
        async fn list(&self, _: &str, _: &str, _: &ListParams) -> Result<ObjectList, ApiError> {
            unused()
        }
        async fn update(
            &self,
            _: &str,
            _: &str,
            _: Value,
            _: bool,
            _: bool,
        ) -> Result<flotilla_objects::api::Written, ApiError> {
            unused()
        }
        async fn patch(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: Value,
            _: bool,
            _: bool,
        ) -> Result<flotilla_objects::api::Written, ApiError> {
            unused()
        }
        async fn delete(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: &DeleteParams,
        ) -> Result<(Value, bool), ApiError> {
            unused()
        }
        async fn apply(&self, _: &str, _: Value, _: bool) -> Result<Applied, ApiError> {
            unused()
        }
        async fn bind(&self, _: &str, _: &str, _: &str) -> Result<Value, ApiError> {
            unused()
        }
        async fn watch(&self, _: &str, _: &str, _: &WatchParams) -> Result<RawWatch, ApiError> {
            unused()
        }
    }

    #[tokio::test]
    async fn a_template_that_cannot_be_created_fails_once_not_fifty_times() {
        let api = Arc::new(Creates {
            ok: 0,
            tried: AtomicUsize::new(0),
        });
        let dyn_api: Arc<dyn ObjectApi> = api.clone();
        // Events go elsewhere (an API that accepts them), so that only pod
        // creates are counted.
        let events: Arc<dyn ObjectApi> = Arc::new(Creates {
            ok: usize::MAX,
            tried: AtomicUsize::new(0),
        });
        let recorder = Recorder::new(events, "test");
        let w = create_pods(
            &dyn_api,
            &recorder,
            &Pod::default(),
            vec![Pod::default(); 50],
        )
        .await;
        assert_eq!(w.done, 0);
        assert!(w.error.is_some());
        assert_eq!(api.tried.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn batches_double_until_one_fails() {
        // 5 creates succeed: batches of 1, 2, then 4 (of which 2 succeed):
        // 7 tried, none after the failing batch.
        let api = Arc::new(Creates {
            ok: 5,
            tried: AtomicUsize::new(0),
        });
        let dyn_api: Arc<dyn ObjectApi> = api.clone();
        let events: Arc<dyn ObjectApi> = Arc::new(Creates {
            ok: usize::MAX,
            tried: AtomicUsize::new(0),
        });
        let recorder = Recorder::new(events, "test");
        let w = create_pods(
            &dyn_api,
            &recorder,
            &Pod::default(),
            vec![Pod::default(); 50],
        )
        .await;
        assert_eq!(w.done, 5);
        assert_eq!(api.tried.load(Ordering::SeqCst), 7);
    }
}
