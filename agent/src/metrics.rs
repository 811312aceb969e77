//! The agent's series, under kubelet's names:
//! `kubelet_pod_start_duration_seconds` (from a pod's creation to this
//! agent reporting it Running), `kubelet_running_pods`, and
//! `kubelet_node_name`; and its readiness: registered with the masters and
//! holding the list of its pods.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use flotilla_telemetry::register;
use prometheus::{Histogram, HistogramOpts, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct AgentMetrics {
    pod_start: Histogram,
    pub(crate) running_pods: IntGauge,
    ready: Arc<AtomicBool>,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentMetrics")
    }
}

impl AgentMetrics {
    pub fn new(r: &Registry, node: &str) -> Self {
        let name = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "kubelet_node_name",
                    "The node's name. The count is always 1.",
                ),
                &["node"],
            )
            .expect("valid metric"),
        );
        name.with_label_values(&[node]).set(1);
        AgentMetrics {
            pod_start: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "kubelet_pod_start_duration_seconds",
                        "Duration in seconds from a pod's creation to its being reported Running by this agent.",
                    )
                    .buckets(vec![
                        0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0,
                        120.0, 180.0, 240.0, 300.0, 600.0,
                    ]),
                )
                .expect("valid metric"),
            ),
            running_pods: register(
                r,
                IntGauge::new(
                    "kubelet_running_pods",
                    "Pods this agent runs (bound to this node and not yet gone).",
                )
                .expect("valid metric"),
            ),
            ready: Arc::default(),
        }
    }

    /// `pod` was just reported Running for the first time.
    pub(crate) fn pod_started(&self, pod: &flotilla_objects::core::Pod) {
        if let Some(created) = &pod.metadata.creation_timestamp {
            let age = chrono::Utc::now().signed_duration_since(created.0);
            self.pod_start
                .observe((age.num_milliseconds() as f64 / 1000.0).max(0.0));
        }
    }

    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Ready: registered, and the pods bound to this node are known.
    pub fn ready(&self) -> Result<(), String> {
        if self.ready.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("not registered with the masters, or the node's pods are not listed yet".into())
        }
    }
}
