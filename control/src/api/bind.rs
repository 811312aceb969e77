//! The pods/binding subresource: the scheduler's only way to put a pod on a
//! node. One conditional write sets `spec.nodeName` and the PodScheduled
//! condition of a pod that no node has yet; a pod already bound, or being
//! deleted, is a Conflict, so that no pod is ever bound twice.

use flotilla_objects::api::{ApiError, Reason};
use flotilla_objects::registry;
use serde_json::{json, Value};

use super::cas::{Outcome, Step};
use super::json::{is_terminating, str_at, strip_rv, with_rv};
use super::{check_name_param, object_key, ApiServer};
use crate::store::{Op, Txn};

fn conflict(pod: &str, why: String) -> ApiError {
    ApiError::new(
        Reason::Conflict,
        format!("Operation cannot be fulfilled on pods/binding \"{pod}\": {why}"),
    )
}

/// Set (or add) a pod condition of `type_` to `status`.
pub(crate) fn set_pod_condition(pod: &mut Value, cond: Value) {
    let Some(o) = pod.as_object_mut() else { return };
    let status = o.entry("status").or_insert_with(|| json!({}));
    if !status.is_object() {
        *status = json!({});
    }
    let conds = status
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
    let Some(conds) = conds.and_then(Value::as_array_mut) else {
        return;
    };
    let ty = cond.get("type").cloned();
    match conds.iter_mut().find(|c| c.get("type") == ty.as_ref()) {
        Some(c) => *c = cond,
        None => conds.push(cond),
    }
}

impl ApiServer {
    /// Bind pod `ns/pod` to `node`.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn bind(&self, ns: &str, pod: &str, node: &str) -> Result<Value, ApiError> {
        let info = &registry::POD;
        let ns = self.object_ns(info, ns)?;
        check_name_param("name", pod)?;
        if node.is_empty() {
            return Err(ApiError::new(
                Reason::Invalid,
                format!("Binding \"{pod}\" is invalid: target.name: Required value"),
            ));
        }
        check_name_param("node name", node)?;
        let key = object_key(info, &ns, pod);
        let now = self.now_str();
        let outcome = self
            .cas(
                &key,
                || ApiError::not_found("pods", pod),
                || conflict(pod, "the pod kept changing".into()),
                |_kv, cur| {
                    if is_terminating(&cur) {
                        return Ok(Step::Refuse(conflict(
                            pod,
                            format!("pod {pod} is being deleted, cannot be assigned to a host"),
                        )));
                    }
                    let bound = str_at(&cur, "/spec/nodeName");
                    if !bound.is_empty() {
                        return Ok(Step::Refuse(conflict(
                            pod,
                            format!("pod {pod} is already assigned to node \"{bound}\""),
                        )));
                    }
                    let mut new = cur.clone();
                    strip_rv(&mut new);
                    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.insert("nodeName".into(), Value::String(node.to_string()));
                    }
                    set_pod_condition(
                        &mut new,
                        json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": now}),
                    );
                    // A preemptor's nomination is over once it is bound.
                    if let Some(s) = new.get_mut("status").and_then(Value::as_object_mut) {
                        s.remove("nominatedNodeName");
                    }
                    let bytes = self.encode_for_store(&new)?;
                    Ok(Step::Write(
                        Txn::new(vec![], vec![Op::Put(key.clone(), bytes)]),
                        new,
                    ))
                },
            )
            .await?;
        match outcome {
            Outcome::Written { revision, object } => Ok(with_rv(object, revision)),
            Outcome::Replayed { now, .. } => now.ok_or_else(|| ApiError::not_found("pods", pod)),
            Outcome::Unchanged(v) | Outcome::DryRun(v) => Ok(v),
        }
    }
}
