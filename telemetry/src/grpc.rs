//! gRPC server metrics under go-grpc-prometheus's names, as etcd exports
//! them: `grpc_server_started_total`, `grpc_server_handled_total` (by
//! `grpc_type`, `grpc_service`, `grpc_method`, `grpc_code`),
//! `grpc_server_msg_received_total`-free, and `grpc_server_handling_seconds`.
//!
//! A tower layer in front of a tonic server: a call is counted when it
//! starts, and handled when its status is known, from the response headers
//! (a trailers-only answer, most errors) or from the trailers at the end of
//! the body (every success, and every stream). A body dropped before its
//! trailers (the client went away) counts as `Canceled`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// The series, registered once per server.
#[derive(Clone)]
pub struct GrpcMetrics {
    started: IntCounterVec,
    handled: IntCounterVec,
    seconds: HistogramVec,
    /// Full method path (`/etcdserverpb.Watch/Watch`) to its grpc_type, for
    /// the streaming ones; every other method is `unary`.
    streaming: Arc<[(&'static str, &'static str)]>,
}

const LABELS: [&str; 4] = ["grpc_type", "grpc_service", "grpc_method", "grpc_code"];

impl GrpcMetrics {
    /// Register the series in `r`. `streaming` names the methods that are
    /// not unary, with their type (`server_stream`, `client_stream`,
    /// `bidi_stream`).
    pub fn new(r: &Registry, streaming: &[(&'static str, &'static str)]) -> Self {
        let started = IntCounterVec::new(
            Opts::new(
                "grpc_server_started_total",
                "Total number of RPCs started on the server.",
            ),
            &LABELS[..3],
        )
        .expect("valid metric");
        let handled = IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
            ),
            &LABELS,
        )
        .expect("valid metric");
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &LABELS[..3],
        )
        .expect("valid metric");
        GrpcMetrics {
            started: crate::register(r, started),
            handled: crate::register(r, handled),
            seconds: crate::register(r, seconds),
            streaming: streaming.to_vec().into(),
        }
    }

    fn labels(&self, path: &str) -> Option<Call> {
        let rest = path.strip_prefix('/')?;
        let (service, method) = rest.split_once('/')?;
        let kind = self
            .streaming
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, t)| *t)
            .unwrap_or("unary");
        Some(Call {
            metrics: self.clone(),
            kind,
            service: service.to_string(),
            method: method.to_string(),
            start: Instant::now(),
        })
    }
}

/// One call being served: counted as handled exactly once.
struct Call {
    metrics: GrpcMetrics,
    kind: &'static str,
    service: String,
    method: String,
    start: Instant,
}

impl Call {
    fn started(&self) {
        self.metrics
            .started
            .with_label_values(&[self.kind, &self.service, &self.method])
            .inc();
    }

    fn handled(self, code: &str) {
        self.metrics
            .handled
            .with_label_values(&[self.kind, &self.service, &self.method, code])
            .inc();
        self.metrics
            .seconds
            .with_label_values(&[self.kind, &self.service, &self.method])
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// gRPC's status code names, by number, as go-grpc-prometheus writes them.
pub fn code_name(code: &str) -> &'static str {
    match code.trim() {
        "0" => "OK",
        "1" => "Canceled",
        "2" => "Unknown",
        "3" => "InvalidArgument",
        "4" => "DeadlineExceeded",
        "5" => "NotFound",
        "6" => "AlreadyExists",
        "7" => "PermissionDenied",
        "8" => "ResourceExhausted",
        "9" => "FailedPrecondition",
        "10" => "Aborted",
        "11" => "OutOfRange",
        "12" => "Unimplemented",
        "13" => "Internal",
        "14" => "Unavailable",
        "15" => "DataLoss",
        "16" => "Unauthenticated",
        _ => "Unknown",
    }
}

fn status_of(h: &HeaderMap) -> Option<&'static str> {
    h.get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(code_name)
}

/// The tower layer: `Server::builder().layer(GrpcMetricsLayer(metrics))`.
#[derive(Clone)]
pub struct GrpcMetricsLayer(pub GrpcMetrics);

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: GrpcMetrics,
}

impl<S, B, RB> tower_service::Service<Request<B>> for GrpcMetricsService<S>
where
    S: tower_service::Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<CountedBody<RB>>;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let is_grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        let call = if is_grpc {
            self.metrics.labels(req.uri().path())
        } else {
            None
        };
        if let Some(c) = &call {
            c.started();
        }
        CountedFuture {
            inner: self.inner.call(req),
            call,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct CountedFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, RB, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<CountedBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx));
        let mut call = this.call.take();
        Poll::Ready(match res {
            Ok(resp) => {
                if let Some(code) = status_of(resp.headers()) {
                    if let Some(c) = call.take() {
                        c.handled(code);
                    }
                }
                Ok(resp.map(|inner| CountedBody { inner, call }))
            }
            Err(e) => {
                if let Some(c) = call {
                    c.handled("Unknown");
                }
                Err(e)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its call as handled at its trailers.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }

    impl<B> PinnedDrop for CountedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(c) = this.project().call.take() {
                c.handled("Canceled");
            }
        }
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(t) = f.trailers_ref() {
                    if let Some(c) = this.call.take() {
                        c.handled(status_of(t).unwrap_or("OK"));
                    }
                }
            }
            Some(Err(_)) => {
                if let Some(c) = this.call.take() {
                    c.handled("Unknown");
                }
            }
            None => {
                if let Some(c) = this.call.take() {
                    c.handled("OK");
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_go_grpc_prometheus_names() {
        assert_eq!(code_name("0"), "OK");
        assert_eq!(code_name("14"), "Unavailable");
        assert_eq!(code_name("99"), "Unknown");
    }

    #[test]
    fn paths_split_into_service_and_method_and_type() {
        let r = Registry::new();
        let m = GrpcMetrics::new(&r, &[("/etcdserverpb.Watch/Watch", "bidi_stream")]);
        let c = m.labels("/etcdserverpb.KV/Range").expect("a gRPC path");
        assert_eq!(
            (c.kind, c.service.as_str(), c.method.as_str()),
            ("unary", "etcdserverpb.KV", "Range")
        );
        let w = m.labels("/etcdserverpb.Watch/Watch").expect("a gRPC path");
        assert_eq!(w.kind, "bidi_stream");
        assert!(m.labels("metrics").is_none());
    }
}
