//! Events the scheduler records (Scheduled, FailedScheduling, Preempted),
//! written by a few background writers from a bounded queue: recording an
//! event never holds up scheduling, and when the queue is full the event is
//! dropped (as Kubernetes' event broadcaster drops them under load).

use std::sync::Arc;

use flotilla_objects::api::ObjectApi;
use flotilla_objects::core::Pod;
use flotilla_objects::registry;
use flotilla_objects::Time;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The component named in events and conditions.
pub const COMPONENT: &str = "default-scheduler";
/// Events waiting to be written before new ones are dropped.
const BUFFER: usize = 4096;
const WRITERS: usize = 2;

struct Record {
    pod: Arc<Pod>,
    type_: &'static str,
    reason: &'static str,
    message: String,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Record>,
}

impl Recorder {
    /// Start the writers; they stop with `stop`.
    pub fn start(api: Arc<dyn ObjectApi>, stop: CancellationToken) -> Recorder {
        let (tx, rx) = mpsc::channel::<Record>(BUFFER);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..WRITERS {
            let (api, rx, stop) = (api.clone(), rx.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let r = tokio::select! {
                        r = async { rx.lock().await.recv().await } => match r { Some(r) => r, None => return },
                        _ = stop.cancelled() => return,
                    };
                    write(&*api, r).await;
                }
            });
        }
        Recorder { tx }
    }

    pub fn normal(&self, pod: &Arc<Pod>, reason: &'static str, message: String) {
        self.record(pod, "Normal", reason, message);
    }

    pub fn warning(&self, pod: &Arc<Pod>, reason: &'static str, message: String) {
        self.record(pod, "Warning", reason, message);
    }

    fn record(&self, pod: &Arc<Pod>, type_: &'static str, reason: &'static str, message: String) {
        let r = Record {
            pod: pod.clone(),
            type_,
            reason,
            message,
        };
        if self.tx.try_send(r).is_err() {
            tracing::debug!(reason, "event queue full; dropping an event");
        }
    }
}

async fn write(api: &dyn ObjectApi, r: Record) {
    let m = &r.pod.metadata;
    let now = Time::now().to_string();
    // Kubernetes' event names: the object's name, a dot, a unique hex part.
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let name = format!(
        "{}.{:x}{}",
        m.name,
        nanos,
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": m.namespace},
        "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": m.namespace,
            "name": m.name, "uid": m.uid, "resourceVersion": m.resource_version},
        "reason": r.reason, "message": r.message, "type": r.type_, "count": 1,
        "firstTimestamp": now, "lastTimestamp": now,
        "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
    });
    if let Err(e) = api
        .create(registry::EVENT.plural, &m.namespace, ev, false)
        .await
    {
        tracing::debug!(pod = %m.name, reason = r.reason, error = %e, "could not record an event");
    }
}
