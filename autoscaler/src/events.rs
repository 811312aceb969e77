//! Events the autoscaler records on pods (TriggeredScaleUp,
//! NotTriggerScaleUp), nodes (ScaleDown, ScaleDownBlocked, ...) and pools
//! (ScaledUpGroup, ScaleDown, ...). Each is written by a task of its own,
//! so that recording never holds up a scan; the loop records an event only
//! when what it says changes (see `run`).

use std::sync::Arc;

use flotilla_objects::api::ObjectApi;
use flotilla_objects::{registry, Resource, Time};
use serde_json::json;

use crate::COMPONENT;

/// The object an event is about.
#[derive(Debug, Clone)]
pub struct Involved {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Involved {
    pub fn of<K: Resource>(k: &K) -> Self {
        let info = K::info();
        let m = k.meta();
        Involved {
            kind: info.kind,
            api_version: if info.group.is_empty() {
                "v1"
            } else {
                api_version(info.group)
            },
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            uid: m.uid.clone(),
        }
    }
}

fn api_version(group: &str) -> &'static str {
    match group {
        "flotilla.dev" => "flotilla.dev/v1",
        "apps" => "apps/v1",
        "batch" => "batch/v1",
        _ => "v1",
    }
}

/// Record an event (in the background).
pub fn record(
    api: &Arc<dyn ObjectApi>,
    about: Involved,
    type_: &'static str,
    reason: &'static str,
    message: String,
) {
    let api = api.clone();
    tokio::spawn(async move {
        let now = Time::now().to_string();
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let name = format!(
            "{}.{:x}{}",
            about.name,
            nanos,
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        // Cluster-scoped objects' events live in "default", as Kubernetes'.
        let ns = if about.namespace.is_empty() {
            "default".to_string()
        } else {
            about.namespace.clone()
        };
        let ev = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {"kind": about.kind, "apiVersion": about.api_version,
                "namespace": about.namespace, "name": about.name, "uid": about.uid},
            "reason": reason, "message": message, "type": type_, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
        });
        if let Err(e) = api.create(registry::EVENT.plural, &ns, ev, false).await {
            tracing::debug!(object = %about.name, reason, error = %e, "could not record an event");
        }
    });
}
