//! What is special about each kind, in one place (in the spirit of
//! Kubernetes' REST strategies): server-set fields on create, what an update
//! keeps, addresses held in the store beside the object, how a deletion
//! waits. The operations (create, update, delete...) are generic and ask the
//! kind's [`Strategy`]; adding a kind with rules of its own means adding one
//! implementation here and one line in [`Strategies::for_kind`].

use std::sync::Arc;

use flotilla_objects::api::{ApiError, DeleteParams};
use flotilla_objects::registry::ResourceInfo;
use serde_json::{json, Value};

use super::json::str_at;
use super::ApiConfig;
use crate::alloc::{self, ServiceRanges};
use crate::podcidr::{self, PodCidrs};

use flotilla_objects::api::NAMESPACE_FINALIZER;
/// Namespaces that always exist and may not be deleted.
pub const PROTECTED_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// A kind's rules. Every method has the default of a kind without any.
pub trait Strategy: Send + Sync {
    /// Whether a new object keeps the status it was created with (a node
    /// registers with its status, as kubelet does); otherwise status is the
    /// controllers' and agents' to write and a new object starts without.
    fn keeps_status_on_create(&self) -> bool {
        false
    }

    /// Server-set fields of a new object, after admission.
    fn prepare_create(&self, _obj: &mut Value) {}

    /// Fields an update keeps from the stored object when it does not
    /// mention them (before admission).
    fn prepare_update(&self, _cur: &Value, _new: &mut Value) {}

    /// Fill in the addresses `obj` lacks (keeping `prev`'s on an update) and
    /// check the ones it names. A strategy that does says so in
    /// [`Strategy::allocates`].
    fn allocate(&self, _obj: &mut Value, _prev: Option<&Value>) -> Result<(), ApiError> {
        Ok(())
    }

    /// Whether [`Strategy::allocate`] may change an object: a retried
    /// write then allocates again from the object as given.
    fn allocates(&self) -> bool {
        false
    }

    /// The store keys `obj` holds beside itself (each written in the same
    /// transaction as the object, on the condition that it is free).
    fn held(&self, _obj: &Value) -> Vec<Vec<u8>> {
        Vec::new()
    }

    /// The error for a held key that another object has.
    fn taken(&self, name: &str, key: &[u8]) -> ApiError {
        ApiError::internal(format!(
            "{name}: {} is held by another object",
            String::from_utf8_lossy(key)
        ))
    }

    /// Seconds a deletion waits (a pod on a node gets its grace period); 0: none.
    fn grace_seconds(&self, _cur: &Value, _o: &DeleteParams) -> i64 {
        0
    }

    /// Whether `obj`, terminating, still waits for something beyond its
    /// metadata.finalizers (a namespace's spec.finalizers).
    fn waits_beyond_finalizers(&self, _obj: &Value) -> bool {
        false
    }

    /// Changes made to an object when its deletion starts (a namespace shows
    /// phase Terminating).
    fn on_delete(&self, _obj: &mut Value) {}

    /// Why this object may not be deleted at all.
    fn forbid_delete(&self, _name: &str) -> Option<ApiError> {
        None
    }
}

struct Plain;
impl Strategy for Plain {}

struct Node {
    pod_cidrs: Arc<PodCidrs>,
}
impl Strategy for Node {
    fn keeps_status_on_create(&self) -> bool {
        true
    }

    fn allocate(&self, obj: &mut Value, prev: Option<&Value>) -> Result<(), ApiError> {
        podcidr::assign(&self.pod_cidrs, obj, prev)
    }

    fn allocates(&self) -> bool {
        true
    }

    fn held(&self, obj: &Value) -> Vec<Vec<u8>> {
        podcidr::held(obj)
    }

    fn taken(&self, name: &str, key: &[u8]) -> ApiError {
        podcidr::taken(name, key)
    }
}

struct Pod;
impl Strategy for Pod {
    fn prepare_create(&self, obj: &mut Value) {
        if let Some(o) = obj.as_object_mut() {
            o.insert("status".into(), json!({"phase": "Pending"}));
        }
    }

    fn prepare_update(&self, cur: &Value, new: &mut Value) {
        // The priority admission resolved stays when an update omits it.
        for f in ["priority", "priorityClassName", "preemptionPolicy"] {
            let (Some(v), Some(spec)) = (
                cur.pointer(&format!("/spec/{f}")),
                new.get_mut("spec").and_then(Value::as_object_mut),
            ) else {
                continue;
            };
            spec.entry(f).or_insert_with(|| v.clone());
        }
    }

    fn grace_seconds(&self, cur: &Value, o: &DeleteParams) -> i64 {
        // Only a pod bound to a node waits: its agent confirms it stopped.
        if str_at(cur, "/spec/nodeName").is_empty() {
            return 0;
        }
        o.grace_period_seconds
            .unwrap_or_else(|| {
                cur.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(30)
            })
            .max(0)
    }
}

struct Namespace;
impl Strategy for Namespace {
    fn prepare_create(&self, obj: &mut Value) {
        if let Some(o) = obj.as_object_mut() {
            o.insert("status".into(), json!({"phase": "Active"}));
            o.insert("spec".into(), json!({"finalizers": [NAMESPACE_FINALIZER]}));
        }
    }

    fn waits_beyond_finalizers(&self, obj: &Value) -> bool {
        obj.pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    }

    fn on_delete(&self, obj: &mut Value) {
        if self.waits_beyond_finalizers(obj) {
            if let Some(o) = obj.as_object_mut() {
                o.insert("status".into(), json!({"phase": "Terminating"}));
            }
        }
    }

    fn forbid_delete(&self, name: &str) -> Option<ApiError> {
        PROTECTED_NAMESPACES.contains(&name).then(|| {
            ApiError::new(
                flotilla_objects::api::Reason::Forbidden,
                format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
            )
        })
    }
}

struct Job;
impl Strategy for Job {
    fn prepare_create(&self, obj: &mut Value) {
        if let Ok(mut job) = serde_json::from_value::<flotilla_objects::batch::Job>(obj.clone()) {
            job.generate_selector();
            if let Ok(v) = serde_json::to_value(&job) {
                *obj = v;
            }
        }
    }

    fn prepare_update(&self, cur: &Value, new: &mut Value) {
        keep_job_selector(cur, new);
    }
}

struct Service {
    ranges: Arc<ServiceRanges>,
}
impl Strategy for Service {
    fn allocate(&self, obj: &mut Value, prev: Option<&Value>) -> Result<(), ApiError> {
        alloc::assign(&self.ranges, obj, prev)
    }

    fn allocates(&self) -> bool {
        true
    }

    fn held(&self, obj: &Value) -> Vec<Vec<u8>> {
        alloc::held(obj)
    }

    fn taken(&self, name: &str, key: &[u8]) -> ApiError {
        alloc::taken(name, key)
    }
}

/// Every kind's strategy, built once per API server from its configuration.
pub struct Strategies {
    plain: Plain,
    node: Node,
    pod: Pod,
    namespace: Namespace,
    job: Job,
    service: Service,
}

impl Strategies {
    pub fn new(cfg: &ApiConfig) -> Self {
        Strategies {
            plain: Plain,
            node: Node {
                pod_cidrs: Arc::new(cfg.pod_cidrs.clone()),
            },
            pod: Pod,
            namespace: Namespace,
            job: Job,
            service: Service {
                ranges: Arc::new(cfg.services.clone()),
            },
        }
    }

    pub fn for_kind(&self, info: &ResourceInfo) -> &dyn Strategy {
        match info.kind {
            "Node" => &self.node,
            "Pod" => &self.pod,
            "Namespace" => &self.namespace,
            "Job" => &self.job,
            "Service" => &self.service,
            _ => &self.plain,
        }
    }
}

/// A Job's generated selector (and the labels it selects) stay when an
/// update does not mention them, as with Kubernetes.
fn keep_job_selector(cur: &Value, desired: &mut Value) {
    let manual = desired
        .pointer("/spec/manualSelector")
        .and_then(Value::as_bool)
        == Some(true);
    if manual
        || desired
            .pointer("/spec/selector")
            .is_some_and(|s| !s.is_null())
    {
        return;
    }
    let Some(sel) = cur.pointer("/spec/selector").cloned() else {
        return;
    };
    let generated: Vec<(String, Value)> = cur
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            [
                flotilla_objects::batch::CONTROLLER_UID_LABEL,
                flotilla_objects::batch::JOB_NAME_LABEL,
            ]
            .iter()
            .filter_map(|k| l.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect()
        })
        .unwrap_or_default();
    let mut patch = json!({"spec": {"selector": sel}});
    if !generated.is_empty() {
        let labels: serde_json::Map<String, Value> = generated.into_iter().collect();
        patch["spec"]["template"] = json!({"metadata": {"labels": labels}});
    }
    flotilla_objects::patch::merge_patch(desired, &patch);
}
