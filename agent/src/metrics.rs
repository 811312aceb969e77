//! The agent's series, under kubelet's names:
//! `kubelet_pod_start_duration_seconds` (from a pod's creation to this
//! agent reporting it Running), `kubelet_running_pods`, and
//! `kubelet_node_name`; the container runtime's calls,
//! `kubelet_runtime_operations_total`, `_errors_total` and
//! `_duration_seconds` by `operation_type` (the CRI method in kubelet's
//! snake case: `run_podsandbox`, `create_container`, `pull_image`...); and
//! its readiness: registered with the masters and holding the list of its
//! pods.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use flotilla_telemetry::register;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct AgentMetrics {
    pod_start: Histogram,
    pub(crate) running_pods: IntGauge,
    pub(crate) runtime_ops: RuntimeOps,
    ready: Arc<AtomicBool>,
}

/// The container runtime's calls, by operation.
#[derive(Clone)]
pub struct RuntimeOps {
    total: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
}

impl RuntimeOps {
    fn new(r: &Registry) -> Self {
        let l = &["operation_type"];
        RuntimeOps {
            total: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "kubelet_runtime_operations_total",
                        "Cumulative number of runtime operations by operation type.",
                    ),
                    l,
                )
                .expect("valid metric"),
            ),
            errors: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "kubelet_runtime_operations_errors_total",
                        "Cumulative number of runtime operation errors by operation type.",
                    ),
                    l,
                )
                .expect("valid metric"),
            ),
            duration: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "kubelet_runtime_operations_duration_seconds",
                        "Duration in seconds of runtime operations. Broken down by operation type.",
                    )
                    .buckets(
                        prometheus::exponential_buckets(0.005, 2.5, 14).expect("valid buckets"),
                    ),
                    l,
                )
                .expect("valid metric"),
            ),
        }
    }

    fn record(&self, method: &str, seconds: f64, ok: bool) {
        let op = operation_type(method);
        let l = [op.as_str()];
        self.total.with_label_values(&l).inc();
        self.duration.with_label_values(&l).observe(seconds);
        if !ok {
            self.errors.with_label_values(&l).inc();
        }
    }
}

/// kubelet's name of a CRI method: "RunPodSandbox" -> "run_podsandbox".
fn operation_type(method: &str) -> String {
    let mut out = String::new();
    for (i, c) in method
        .replace("PodSandbox", "Podsandbox")
        .chars()
        .enumerate()
    {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Times a runtime call into [`RuntimeOps`], when there are any.
pub(crate) trait Timed<T>: Future<Output = Result<T, tonic::Status>> + Sized {
    async fn timed(self, ops: &Option<RuntimeOps>, method: &str) -> Result<T, tonic::Status> {
        let start = Instant::now();
        let r = self.await;
        if let Some(ops) = ops {
            ops.record(method, start.elapsed().as_secs_f64(), r.is_ok());
        }
        r
    }
}

impl<T, F: Future<Output = Result<T, tonic::Status>>> Timed<T> for F {}

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
            runtime_ops: RuntimeOps::new(r),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_types_are_kubelets() {
        assert_eq!(operation_type("RunPodSandbox"), "run_podsandbox");
        assert_eq!(operation_type("ListPodSandbox"), "list_podsandbox");
        assert_eq!(operation_type("CreateContainer"), "create_container");
        assert_eq!(operation_type("PullImage"), "pull_image");
        assert_eq!(operation_type("Version"), "version");
    }

    #[tokio::test]
    async fn a_timed_call_counts_its_operation_and_its_error() {
        let r = Registry::new();
        let ops = RuntimeOps::new(&r);
        let timed = Some(ops.clone());
        let ok: Result<(), tonic::Status> = async { Ok(()) }.timed(&timed, "StartContainer").await;
        assert!(ok.is_ok());
        let err: Result<(), tonic::Status> = async { Err(tonic::Status::not_found("x")) }
            .timed(&timed, "StartContainer")
            .await;
        assert!(err.is_err());
        assert_eq!(ops.total.with_label_values(&["start_container"]).get(), 2);
        assert_eq!(ops.errors.with_label_values(&["start_container"]).get(), 1);
        assert_eq!(
            ops.duration
                .with_label_values(&["start_container"])
                .get_sample_count(),
            2
        );
    }
}
