//! Pod priority admission (Kubernetes' Priority admission plugin): a new
//! pod's `priorityClassName` (or, when it names none, the class marked
//! `globalDefault`) is resolved into `spec.priority`; a class that does not
//! exist, or a `priority` that disagrees with the class, is refused.

use std::collections::BTreeMap;

use flotilla_objects::api::{ApiError, ListParams, Reason};
use flotilla_objects::registry;
use flotilla_objects::scheduling::{resolve_priority, PriorityClass};
use serde_json::Value;

use super::json::str_at;
use super::ApiServer;

impl ApiServer {
    /// Set `spec.priority` (and `spec.priorityClassName` from a global
    /// default) of an admitted pod.
    pub(crate) async fn resolve_pod_priority(&self, pod: &mut Value) -> Result<(), ApiError> {
        let name = str_at(pod, "/metadata/name").to_string();
        let wanted = str_at(pod, "/spec/priorityClassName").to_string();
        // Local (serializable) read: classes change rarely, and a class
        // created a moment ago on another master is found on a retry.
        let params = ListParams {
            serializable: true,
            ..Default::default()
        };
        let list = self.list(&registry::PRIORITY_CLASS, "", &params).await?;
        let classes: BTreeMap<String, PriorityClass> = list
            .items
            .into_iter()
            .filter_map(|c| serde_json::from_value::<PriorityClass>(c).ok())
            .map(|c| (c.metadata.name.clone(), c))
            .collect();
        let forbidden = |m: String| {
            ApiError::new(
                Reason::Forbidden,
                format!("pods \"{name}\" is forbidden: {m}"),
            )
        };
        let r = resolve_priority(&wanted, &classes).map_err(forbidden)?;
        let value = r.value;
        if let Some(given) = pod.pointer("/spec/priority").and_then(Value::as_i64) {
            if given != i64::from(value) {
                return Err(forbidden(format!(
                    "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
                )));
            }
        }
        if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("priority".into(), Value::from(value));
            if !r.class.is_empty() {
                spec.insert("priorityClassName".into(), Value::String(r.class));
            }
            if !r.preemption_policy.is_empty() {
                spec.entry("preemptionPolicy")
                    .or_insert(Value::String(r.preemption_policy));
            }
        }
        Ok(())
    }
}
