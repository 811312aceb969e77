//! The object API's Prometheus series, under kube-apiserver's names:
//! `apiserver_request_total` and `apiserver_request_duration_seconds` by
//! verb (GET, LIST, WATCH, CREATE, UPDATE, PATCH, DELETE, APPLY), resource
//! and HTTP code (Kubernetes' code for each failure reason), and
//! `apiserver_registered_watchers`, the watches open now, by resource.

use std::time::Instant;

use flotilla_objects::api::{Reason, REASON_HEADER};
use flotilla_telemetry::register;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use tonic::{Code, Status};

/// The series of one API server.
#[derive(Clone)]
pub struct ApiMetrics {
    requests: IntCounterVec,
    seconds: HistogramVec,
    watchers: IntGaugeVec,
}

impl ApiMetrics {
    pub fn new(r: &Registry) -> Self {
        ApiMetrics {
            requests: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "apiserver_request_total",
                        "Counter of apiserver requests broken out for each verb, group, resource and HTTP response code.",
                    ),
                    &["verb", "group", "resource", "code"],
                )
                .expect("valid metric"),
            ),
            seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "apiserver_request_duration_seconds",
                        "Response latency distribution in seconds for each verb, group and resource.",
                    )
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0,
                        3.0, 4.0, 5.0, 10.0, 30.0, 60.0,
                    ]),
                    &["verb", "group", "resource"],
                )
                .expect("valid metric"),
            ),
            watchers: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "apiserver_registered_watchers",
                        "Number of currently registered watchers for a given resource.",
                    ),
                    &["group", "resource"],
                )
                .expect("valid metric"),
            ),
        }
    }

    /// Start timing a call of `verb` on `resource` (as the caller named it).
    pub(crate) fn start(&self, verb: &'static str, resource: &str) -> Timer {
        let (group, resource) = match crate::api::resolve(resource) {
            Ok(i) => (i.group, i.plural),
            Err(_) => ("", "unknown"),
        };
        Timer {
            m: self.clone(),
            verb,
            group,
            resource,
            start: Instant::now(),
        }
    }

    /// One more open watch on `resource`, until the guard drops.
    pub(crate) fn watching(&self, t: &Timer) -> WatchGuard {
        let g = self.watchers.with_label_values(&[t.group, t.resource]);
        g.inc();
        WatchGuard(g)
    }
}

pub(crate) struct Timer {
    m: ApiMetrics,
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    start: Instant,
}

impl Timer {
    /// Count the call's outcome and pass it on.
    pub(crate) fn done<T>(self, r: Result<T, Status>) -> Result<T, Status> {
        let code = match &r {
            Ok(_) if self.verb == "CREATE" => 201,
            Ok(_) => 200,
            Err(s) => http_code(s),
        };
        self.m
            .requests
            .with_label_values(&[self.verb, self.group, self.resource, &code.to_string()])
            .inc();
        self.m
            .seconds
            .with_label_values(&[self.verb, self.group, self.resource])
            .observe(self.start.elapsed().as_secs_f64());
        r
    }
}

/// Decrements the watch gauge when the watch ends.
pub(crate) struct WatchGuard(prometheus::IntGauge);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The HTTP code kube-apiserver answers a failure with.
fn http_code(s: &Status) -> u16 {
    let reason = s
        .metadata()
        .get(REASON_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(Reason::parse);
    match reason {
        Some(Reason::NotFound) => 404,
        Some(Reason::AlreadyExists) | Some(Reason::Conflict) => 409,
        Some(Reason::Invalid) => 422,
        Some(Reason::Gone) => 410,
        Some(Reason::BadRequest) => 400,
        Some(Reason::Unauthorized) => 401,
        Some(Reason::Forbidden) => 403,
        Some(Reason::MethodNotAllowed) => 405,
        Some(Reason::Unavailable) => 503,
        Some(Reason::Internal) => 500,
        None => match s.code() {
            Code::DeadlineExceeded => 504,
            Code::Cancelled => 499,
            Code::ResourceExhausted => 429,
            Code::Unavailable => 503,
            _ => 500,
        },
    }
}
