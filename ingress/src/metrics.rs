//! Prometheus metrics per route (prometheus-client), served as text on the
//! admin address's `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// "namespace/ingress host path", or "none" when no rule matched.
    pub route: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The ingress's metrics.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: HistogramFamily,
    /// Attempts moved to another endpoint after a failed connect (or a
    /// failed idempotent request).
    pub retries: Family<RouteLabels, Counter>,
    pub routes: Gauge,
    pub table_builds: Counter,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flotilla_ingress");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let retries = Family::<RouteLabels, Counter>::default();
        let routes = Gauge::default();
        let table_builds = Counter::default();
        registry.register(
            "requests",
            "Requests answered, by route and status code",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers, by route",
            duration.clone(),
        );
        registry.register(
            "retries",
            "Requests sent to another endpoint after a failed attempt, by route",
            retries.clone(),
        );
        registry.register("routes", "Routes in the table", routes.clone());
        registry.register(
            "table_builds",
            "Routing tables compiled and swapped in",
            table_builds.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            retries,
            routes,
            table_builds,
        }
    }
}

/// One route's handles: its latency histogram and its count of 200s
/// (the common case, without a label lookup per request).
#[derive(Debug)]
pub struct RouteMetrics {
    pub duration: Histogram,
    pub ok: Counter,
}

impl Metrics {
    /// The handles of route `name`.
    pub fn route(&self, name: &str) -> RouteMetrics {
        RouteMetrics {
            duration: self
                .duration
                .get_or_create(&RouteLabels {
                    route: name.to_string(),
                })
                .clone(),
            ok: self
                .requests
                .get_or_create(&RequestLabels {
                    route: name.to_string(),
                    code: 200,
                })
                .clone(),
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut s, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        s
    }
}
