//! `workqueue_*` series of the controllers' work queues, by queue name, as
//! client-go names them: `workqueue_depth`, `workqueue_adds_total`,
//! `workqueue_retries_total`; and `workqueue_processed_total`,
//! `workqueue_queue_wait_seconds_total` (their ratio is the mean wait) and
//! `workqueue_longest_queue_wait_seconds`; the histograms
//! `workqueue_queue_duration_seconds` (added to taken) and
//! `workqueue_work_duration_seconds` (taken to done), with client-go's
//! buckets; and `workqueue_unfinished_work_seconds` and
//! `workqueue_longest_running_processor_seconds` of the work in progress.
//!
//! Controllers live on whichever master leads and are rebuilt each term:
//! the collector reads the queues of this process ([`crate::queue::named_queues`]).

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};

/// client-go's workqueue buckets: 10 ns to 10 s, by tens.
fn buckets() -> Vec<f64> {
    (0..10).map(|i| 1e-8 * 10f64.powi(i)).collect()
}

fn histogram(name: &str, help: &str) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets()), &["name"])
        .expect("valid metric")
}

/// The latency histograms live as long as the process (a queue is rebuilt
/// each term; its name's history carries on, as client-go's does).
static QUEUE_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "workqueue_queue_duration_seconds",
        "How long in seconds an item stays in workqueue before being requested",
    )
});
static WORK_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "workqueue_work_duration_seconds",
        "How long in seconds processing an item from workqueue takes",
    )
});

/// One named queue's latency histograms, looked up once.
#[derive(Clone)]
pub(crate) struct Timers {
    queued: prometheus::Histogram,
    worked: prometheus::Histogram,
}

impl Timers {
    pub(crate) fn new(name: &str) -> Self {
        Timers {
            queued: QUEUE_DURATION.with_label_values(&[name]),
            worked: WORK_DURATION.with_label_values(&[name]),
        }
    }

    pub(crate) fn queued(&self, d: Duration) {
        self.queued.observe(d.as_secs_f64());
    }

    pub(crate) fn worked(&self, d: Duration) {
        self.worked.observe(d.as_secs_f64());
    }
}

/// Add it to a master's registry.
#[derive(Clone, Default)]
pub struct WorkqueueCollector;

type Families = (
    IntGaugeVec,
    IntCounterVec,
    IntCounterVec,
    IntCounterVec,
    GaugeVec,
    GaugeVec,
    GaugeVec,
    GaugeVec,
);

fn gauge(name: &str, help: &str) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), &["name"]).expect("valid metric")
}

fn fresh() -> Families {
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
        gauge(
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has done that is in progress and hasn't been observed by work_duration",
        ),
        gauge(
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running",
        ),
    )
}

/// The families' descriptions: a registry tells collectors apart by them
/// (the families themselves are built on each scrape).
static DESCS: LazyLock<Vec<Desc>> = LazyLock::new(|| {
    let (a, b, c, d, e, f, g, h) = fresh();
    let mut out: Vec<Desc> = Vec::new();
    for descs in [
        a.desc(),
        b.desc(),
        c.desc(),
        d.desc(),
        e.desc(),
        f.desc(),
        g.desc(),
        h.desc(),
        QUEUE_DURATION.desc(),
        WORK_DURATION.desc(),
    ] {
        out.extend(descs.into_iter().cloned());
    }
    out
});

impl Collector for WorkqueueCollector {
    fn desc(&self) -> Vec<&Desc> {
        DESCS.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (depth, adds, retries, processed, wait, longest, unfinished, running) = fresh();
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
            unfinished
                .with_label_values(&n)
                .add(m.unfinished_work.as_secs_f64());
            let r = running.with_label_values(&n);
            r.set(r.get().max(m.longest_running.as_secs_f64()));
        }
        let mut out = Vec::new();
        out.extend(depth.collect());
        out.extend(adds.collect());
        out.extend(retries.collect());
        out.extend(processed.collect());
        out.extend(wait.collect());
        out.extend(longest.collect());
        out.extend(unfinished.collect());
        out.extend(running.collect());
        out.extend(QUEUE_DURATION.collect());
        out.extend(WORK_DURATION.collect());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{QueueConfig, WorkQueue};

    fn family<'a>(
        all: &'a [MetricFamily],
        name: &str,
        queue: &str,
    ) -> &'a prometheus::proto::Metric {
        all.iter()
            .find(|f| f.name() == name)
            .and_then(|f| {
                f.get_metric()
                    .iter()
                    .find(|m| m.get_label().iter().any(|l| l.value() == queue))
            })
            .unwrap_or_else(|| panic!("{name}{{name={queue}}} not collected"))
    }

    #[tokio::test]
    async fn latencies_and_work_in_progress_are_collected_by_queue_name() {
        let q: WorkQueue<&str> = WorkQueue::new(QueueConfig::default()).named("latency-test");
        q.add("a");
        q.add("b");
        let a = q.get().await.expect("a");
        let b = q.get().await.expect("b");
        q.done(&a);
        let all = WorkqueueCollector.collect();
        let queued = family(&all, "workqueue_queue_duration_seconds", "latency-test");
        assert_eq!(queued.get_histogram().get_sample_count(), 2);
        let work = family(&all, "workqueue_work_duration_seconds", "latency-test");
        assert_eq!(work.get_histogram().get_sample_count(), 1, "only a is done");
        // b is still being worked on: it is unfinished work.
        let running = family(
            &all,
            "workqueue_longest_running_processor_seconds",
            "latency-test",
        );
        assert!(running.get_gauge().get_value() >= 0.0);
        let unfinished = family(&all, "workqueue_unfinished_work_seconds", "latency-test");
        assert!(unfinished.get_gauge().get_value() >= 0.0);
        q.done(&b);
        let all = WorkqueueCollector.collect();
        let work = family(&all, "workqueue_work_duration_seconds", "latency-test");
        assert_eq!(work.get_histogram().get_sample_count(), 2);
    }
}
