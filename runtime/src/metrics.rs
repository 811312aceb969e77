//! `workqueue_*` series of the controllers' work queues, by queue name, as
//! client-go names them: `workqueue_depth`, `workqueue_adds_total`,
//! `workqueue_retries_total`; and `workqueue_processed_total`,
//! `workqueue_queue_wait_seconds_total` (their ratio is the mean wait) and
//! `workqueue_longest_queue_wait_seconds`.
//!
//! Controllers live on whichever master leads and are rebuilt each term:
//! the collector reads the queues of this process ([`crate::queue::named_queues`]).

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts};

/// Add it to a master's registry.
#[derive(Clone, Default)]
pub struct WorkqueueCollector;

fn fresh() -> (
    IntGaugeVec,
    IntCounterVec,
    IntCounterVec,
    IntCounterVec,
    GaugeVec,
    GaugeVec,
) {
    let l = &["name"];
    (
        IntGaugeVec::new(
            Opts::new("workqueue_depth", "Current depth of workqueue"),
            l,
        )
        .expect("valid metric"),
        IntCounterVec::new(
            Opts::new(
                "workqueue_adds_total",
                "Total number of adds handled by workqueue",
            ),
            l,
        )
        .expect("valid metric"),
        IntCounterVec::new(
            Opts::new(
                "workqueue_retries_total",
                "Total number of retries handled by workqueue",
            ),
            l,
        )
        .expect("valid metric"),
        IntCounterVec::new(
            Opts::new("workqueue_processed_total", "Keys handed to workers"),
            l,
        )
        .expect("valid metric"),
        GaugeVec::new(
            Opts::new(
                "workqueue_queue_wait_seconds_total",
                "Total seconds keys waited in the queue before a worker took them",
            ),
            l,
        )
        .expect("valid metric"),
        GaugeVec::new(
            Opts::new(
                "workqueue_longest_queue_wait_seconds",
                "Longest time a key waited in the queue",
            ),
            l,
        )
        .expect("valid metric"),
    )
}

impl Collector for WorkqueueCollector {
    fn desc(&self) -> Vec<&Desc> {
        // Unchecked collector: its families are built on each scrape.
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (depth, adds, retries, processed, wait, longest) = fresh();
        for (name, m) in crate::queue::named_queues() {
            let n = [name.as_str()];
            depth.with_label_values(&n).add(m.depth as i64);
            adds.with_label_values(&n).inc_by(m.adds);
            retries.with_label_values(&n).inc_by(m.retries);
            processed.with_label_values(&n).inc_by(m.processed);
            wait.with_label_values(&n)
                .add(m.queue_wait_total.as_secs_f64());
            let l = longest.with_label_values(&n);
            l.set(l.get().max(m.queue_wait_max.as_secs_f64()));
        }
        let mut out = Vec::new();
        out.extend(depth.collect());
        out.extend(adds.collect());
        out.extend(retries.collect());
        out.extend(processed.collect());
        out.extend(wait.collect());
        out.extend(longest.collect());
        out
    }
}
