//! kube-scheduler's series: `scheduler_schedule_attempts_total{result}`
//! (scheduled, unschedulable, error) and
//! `scheduler_scheduling_attempt_duration_seconds{result}` (the decision,
//! without the binding write).
//!
//! The scheduler runs on whichever master leads, and is rebuilt each term:
//! its series live for the process and [`register`] adds them to a
//! master's registry (in `flotilla up`, which runs three masters in one
//! process, each master's `/metrics` shows the process's scheduler).

use std::sync::LazyLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

pub(crate) static ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "scheduler_schedule_attempts_total",
            "Number of attempts to schedule pods, by the result.",
        ),
        &["result"],
    )
    .expect("valid metric")
});

pub(crate) static DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    HistogramVec::new(
        HistogramOpts::new(
            "scheduler_scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (the decision, before binding).",
        )
        .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16).unwrap_or_default()),
        &["result"],
    )
    .expect("valid metric")
});

/// Add the scheduler's series to `r`.
pub fn register(r: &Registry) {
    for c in [
        Box::new(ATTEMPTS.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(DURATION.clone()),
    ] {
        if let Err(e) = r.register(c) {
            tracing::warn!(error = %e, "scheduler metric not registered");
        }
    }
}

pub(crate) fn attempt(result: &str, took: std::time::Duration) {
    ATTEMPTS.with_label_values(&[result]).inc();
    DURATION
        .with_label_values(&[result])
        .observe(took.as_secs_f64());
}
