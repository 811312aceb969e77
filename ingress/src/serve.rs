//! The data path: HTTP/1.1 and HTTP/2 from clients (hyper-util's auto
//! server, TLS through tokio-rustls), matched against the current table and
//! sent to a ready endpoint through hyper-util's pooled client (keep-alive
//! connections per pod). WebSocket (HTTP/1.1 Upgrade) is relayed both ways.
//!
//! Retries: an attempt that could not connect moves on to the next
//! endpoint; an attempt that may have reached a pod is retried only for an
//! idempotent method. Either way only requests without a body are retried
//! (the body is streamed, not kept).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, RequestLabels, RouteLabels};
use crate::table::{Lookup, Route, Table};

pub type Body = BoxBody<Bytes, hyper::Error>;
type Upstream = hyper_util::client::legacy::Client<HttpConnector, Body>;

/// Timeouts of the data path.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Connecting to a pod.
    pub connect: Duration,
    /// From sending a request to a pod to its response headers.
    pub request: Duration,
    /// An HTTP/1.1 client connection with no request (and reading a
    /// request's headers), and a new connection's first bytes. HTTP/2
    /// connections are not closed for idleness: they are pinged every 30 s
    /// and closed when a ping goes unanswered this long.
    pub idle: Duration,
}

/// What every request handler shares.
pub struct Shared {
    pub table: ArcSwap<Table>,
    pub metrics: Metrics,
    upstream: Upstream,
    timeouts: Timeouts,
}

impl Shared {
    pub fn new(timeouts: Timeouts) -> Shared {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(timeouts.connect));
        let upstream = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .build(conn);
        Shared {
            table: ArcSwap::from_pointee(Table::default()),
            metrics: Metrics::default(),
            upstream,
            timeouts,
        }
    }
}

fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|e| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Headers that belong to one connection, not to the request (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        h.remove(n);
    }
}

fn is_upgrade(req: &Request<Incoming>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let conn_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if conn_upgrade {
        req.headers().get(header::UPGRADE).cloned()
    } else {
        None
    }
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The request's host without port, from the URI (HTTP/2's :authority) or
/// the Host header.
fn host_of(req: &Request<Incoming>) -> String {
    if let Some(h) = req.uri().host() {
        return h.to_string();
    }
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match raw.parse::<http::uri::Authority>() {
        Ok(a) => a.host().to_string(),
        Err(_) => raw.to_string(),
    }
}

/// What the access log and the metrics record of one request.
struct Done<'a> {
    peer: SocketAddr,
    method: &'a Method,
    host: &'a str,
    target: &'a str,
    version: Version,
    route: Option<&'a Route>,
    upstream: Option<SocketAddr>,
    started: Instant,
}

impl Done<'_> {
    fn record(&self, shared: &Shared, resp: &Response<Body>) {
        let status = resp.status().as_u16();
        let elapsed = self.started.elapsed();
        let route = self.route.map(|r| r.name.as_str()).unwrap_or("none");
        match self.route {
            Some(r) => {
                let m = r.metrics.get_or_init(|| shared.metrics.route(&r.name));
                m.duration.observe(elapsed.as_secs_f64());
                if status == 200 {
                    m.ok.inc();
                } else {
                    shared
                        .metrics
                        .requests
                        .get_or_create(&RequestLabels {
                            route: r.name.clone(),
                            code: status,
                        })
                        .inc();
                }
            }
            None => {
                shared
                    .metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        route: route.to_string(),
                        code: status,
                    })
                    .inc();
            }
        }
        if tracing::enabled!(target: "flotilla_ingress::access", tracing::Level::INFO) {
            let bytes = resp
                .body()
                .size_hint()
                .exact()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into());
            let upstream = self
                .upstream
                .map(|u| u.to_string())
                .unwrap_or_else(|| "-".into());
            // Common log format, then host, route, upstream and duration.
            tracing::info!(
                target: "flotilla_ingress::access",
                "{} - - [{}] \"{} {} {:?}\" {} {} host={} route=\"{}\" upstream={} {:.3}ms",
                self.peer.ip(),
                chrono::Utc::now().format("%d/%b/%Y:%H:%M:%S %z"),
                self.method,
                self.target,
                self.version,
                status,
                bytes,
                self.host,
                route,
                upstream,
                elapsed.as_secs_f64() * 1000.0,
            );
        }
    }
}

/// Answer one request.
pub async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    scheme: &'static str,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let host = host_of(&req);
    let method = req.method().clone();
    let version = req.version();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let route = match shared.table.load().lookup(&host, req.uri().path()) {
        Lookup::Route(r) => Some(r.clone()),
        Lookup::NoRule => None,
    };
    let mut done = Done {
        peer,
        method: &method,
        host: &host,
        target: &target,
        version,
        route: route.as_deref(),
        upstream: None,
        started,
    };
    let Some(route) = route.as_deref() else {
        let r = text(
            StatusCode::NOT_FOUND,
            "404 page not found: no ingress rule\n",
        );
        done.record(&shared, &r);
        return Ok(r);
    };
    let backend = &route.backend;
    if backend.endpoints.is_empty() {
        let r = text(
            StatusCode::SERVICE_UNAVAILABLE,
            "503 service unavailable: no ready endpoint\n",
        );
        done.record(&shared, &r);
        return Ok(r);
    }

    // The request as the pods get it.
    let upgrade = is_upgrade(&req);
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let mut headers = std::mem::take(req.headers_mut());
    let original_host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut headers);
    if let Some(u) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u.clone());
    }
    let host_value = original_host.or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    if let Some(h) = &host_value {
        headers.insert(header::HOST, h.clone());
        headers.insert(HeaderName::from_static("x-forwarded-host"), h.clone());
    }
    let xff = HeaderName::from_static("x-forwarded-for");
    let peer_ip = peer.ip().to_string();
    // Every X-Forwarded-For line the client sent, in order, then the peer
    // (a list split over several lines is one list, RFC 9110 5.3).
    let mut forwarded_for = String::new();
    for prev in headers.get_all(&xff).iter().filter_map(|v| v.to_str().ok()) {
        forwarded_for.push_str(prev);
        forwarded_for.push_str(", ");
    }
    forwarded_for.push_str(&peer_ip);
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(xff, v);
    }
    if let Ok(v) = HeaderValue::from_str(&peer_ip) {
        headers.insert(HeaderName::from_static("x-real-ip"), v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(scheme),
    );

    let replayable = req.body().is_end_stream();
    let mut body = Some(req.into_body().boxed());
    let n = backend.endpoints.len();
    let attempts = if replayable { n.min(3) } else { 1 };
    let first = backend.start();
    let mut last_error = String::new();
    for i in 0..attempts {
        let ep = backend.endpoints[(first + i) % n];
        done.upstream = Some(ep);
        let uri: Uri = match format!("http://{ep}{target}").parse() {
            Ok(u) => u,
            Err(_) => {
                let r = text(StatusCode::BAD_REQUEST, "400 bad request target\n");
                done.record(&shared, &r);
                return Ok(r);
            }
        };
        let mut up = Request::new(body.take().unwrap_or_else(empty));
        *up.method_mut() = method.clone();
        *up.uri_mut() = uri;
        *up.version_mut() = Version::HTTP_11;
        let more = i + 1 < attempts;
        *up.headers_mut() = if more {
            headers.clone()
        } else {
            std::mem::take(&mut headers)
        };
        match tokio::time::timeout(shared.timeouts.request, shared.upstream.request(up)).await {
            Ok(Ok(mut resp)) => {
                let status = resp.status();
                let server_upgrade = (status == StatusCode::SWITCHING_PROTOCOLS)
                    .then(|| hyper::upgrade::on(&mut resp));
                let (mut parts, rbody) = resp.into_parts();
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    if let (Some(c), Some(s)) = (client_upgrade, server_upgrade) {
                        tokio::spawn(relay(c, s, ep));
                    }
                } else {
                    strip_hop_by_hop(&mut parts.headers);
                }
                let r = Response::from_parts(parts, rbody.boxed());
                done.record(&shared, &r);
                return Ok(r);
            }
            Ok(Err(e)) => {
                let connect = e.is_connect();
                last_error = format!("{e:?}");
                let retry = more && (connect || idempotent(&method));
                tracing::debug!(upstream = %ep, connect, retry, error = %last_error, "attempt failed");
                if retry {
                    shared
                        .metrics
                        .retries
                        .get_or_create(&RouteLabels {
                            route: route.name.clone(),
                        })
                        .inc();
                    continue;
                }
                break;
            }
            Err(_) => {
                let r = text(StatusCode::GATEWAY_TIMEOUT, "504 gateway timeout\n");
                done.record(&shared, &r);
                return Ok(r);
            }
        }
    }
    tracing::warn!(route = %route.name, upstream = ?done.upstream, error = %last_error, "upstream failed");
    let r = text(StatusCode::BAD_GATEWAY, "502 bad gateway\n");
    done.record(&shared, &r);
    Ok(r)
}

async fn relay(
    client: hyper::upgrade::OnUpgrade,
    server: hyper::upgrade::OnUpgrade,
    ep: SocketAddr,
) {
    let (c, s) = tokio::join!(client, server);
    match (c, s) {
        (Ok(c), Ok(s)) => {
            let (mut c, mut s) = (TokioIo::new(c), TokioIo::new(s));
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut s).await {
                tracing::debug!(upstream = %ep, error = %e, "upgraded connection ended");
            }
        }
        (c, s) => {
            tracing::debug!(upstream = %ep, client = ?c.err(), server = ?s.err(), "upgrade failed")
        }
    }
}

fn server_builder(idle: Duration) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(idle);
    b
}

/// Serve plain HTTP on `listener` until `token` is cancelled; connections
/// in flight finish their current request.
pub async fn serve_http(listener: TcpListener, shared: Arc<Shared>, token: CancellationToken) {
    serve(listener, shared, token, None).await
}

/// Serve HTTPS on `listener`.
pub async fn serve_https(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: tokio_rustls::TlsAcceptor,
    token: CancellationToken,
) {
    serve(listener, shared, token, Some(tls)).await
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    token: CancellationToken,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let builder = Arc::new(server_builder(shared.timeouts.idle));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let scheme = if tls.is_some() { "https" } else { "http" };
    loop {
        let (tcp, peer) = tokio::select! {
            _ = token.cancelled() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let shared2 = shared.clone();
        let svc = hyper::service::service_fn(move |req| handle(shared2.clone(), peer, scheme, req));
        let builder = builder.clone();
        match &tls {
            None => {
                let idle = shared.timeouts.idle;
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    // The server reads nothing under a timer until it has
                    // told HTTP/1 from HTTP/2 by the first bytes: a client
                    // that sends none gets the idle timeout here.
                    match tokio::time::timeout(idle, tcp.peek(&mut [0u8; 1])).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return,
                    }
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let idle = shared.timeouts.idle;
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(idle, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("connections still open after 10 s; closing them");
    }
}

/// The admin server: `/metrics` (Prometheus text) and `/healthz`.
pub async fn serve_admin(listener: TcpListener, shared: Arc<Shared>, token: CancellationToken) {
    let builder = hyper::server::conn::http1::Builder::new();
    loop {
        let (tcp, _) = tokio::select! {
            _ = token.cancelled() => break,
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
        };
        let shared = shared.clone();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let shared = shared.clone();
            async move {
                let r: Response<Body> = match req.uri().path() {
                    "/metrics" => {
                        let mut r = Response::new(
                            Full::new(Bytes::from(shared.metrics.encode()))
                                .map_err(|e| match e {})
                                .boxed(),
                        );
                        r.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static(
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ),
                        );
                        r
                    }
                    "/healthz" => text(StatusCode::OK, "ok\n"),
                    _ => text(StatusCode::NOT_FOUND, "not found\n"),
                };
                Ok::<_, Infallible>(r)
            }
        });
        let conn = builder.serve_connection(TokioIo::new(tcp), svc);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
