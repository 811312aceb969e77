//! The data path over real sockets: the ingress's own `serve_http` on
//! 127.0.0.1 with a routing table compiled from objects and stored
//! directly, in front of hand-made backends (a hyper server that echoes
//! what it got, one that never answers, one that resets after reading the
//! request, a closed port).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla_ingress::serve::{serve_http, Shared};
use flotilla_ingress::table::{compile, Inputs, Table};
use flotilla_ingress::Timeouts;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const LONG: Duration = Duration::from_secs(10);

/// Poll `cond` every 10 ms until it holds; panic after `LONG`.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A table with one Ingress: host `shop.test`, prefix `/`, to service
/// `web` whose ready endpoints are `endpoints` (one EndpointSlice each, so
/// that each may have its own port).
fn table(endpoints: &[SocketAddr]) -> Table {
    let ing = serde_json::from_value(json!({
        "metadata": {"name": "shop", "namespace": "default",
            "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"rules": [{"host": "shop.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "web", "port": {"number": 80}}}}
        ]}}]},
    }))
    .expect("ingress");
    let svc = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }))
    .expect("service");
    let slices: Vec<_> = endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": format!("web-{i}"), "namespace": "default",
                        "labels": {"kubernetes.io/service-name": "web"}},
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [ep.ip().to_string()],
                        "conditions": {"ready": true}}],
                    "ports": [{"name": "http", "port": ep.port(), "protocol": "TCP"}],
                }))
                .expect("slice"),
            )
        })
        .collect();
    compile(&Inputs {
        ingresses: &[Arc::new(ing)],
        services: &[Arc::new(svc)],
        slices: &slices,
    })
}

fn timeouts(request: Duration, idle: Duration) -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        request,
        idle,
    }
}

/// The ingress serving `endpoints` on a fresh port; stops with the guard.
struct Ingress {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: tokio_util::sync::DropGuard,
}

async fn ingress(endpoints: &[SocketAddr], t: Timeouts) -> Ingress {
    let shared = Arc::new(Shared::new(t));
    shared.table.store(Arc::new(table(endpoints)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    tokio::spawn(serve_http(listener, shared.clone(), token.clone()));
    Ingress {
        addr,
        shared,
        _stop: token.drop_guard(),
    }
}

impl Ingress {
    fn retries(&self) -> u64 {
        let text = self.shared.metrics.encode();
        text.lines()
            .find(|l| l.starts_with("flotilla_ingress_retries_total{"))
            .and_then(|l| l.rsplit(' ').next())
            .map(|n| n.parse().unwrap())
            .unwrap_or(0)
    }
}

/// A backend on a fresh port that runs `conn` on each connection it
/// accepts, with a counter it shares.
async fn backend<F, Fut>(conn: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream, Arc<AtomicUsize>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let n = count.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(conn(tcp, n.clone()));
        }
    });
    (addr, count)
}

/// A backend that answers every request with its method, target, version
/// and headers, one `name: value` a line, and counts the requests.
async fn echo_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    backend(|tcp, n| async move {
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            n.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut out = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
                for (k, v) in req.headers() {
                    out.push_str(&format!("{k}: {}\n", v.to_str().unwrap()));
                }
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(out))))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), svc)
            .await;
    })
    .await
}

/// A backend that reads one request's headers, counts it and then resets
/// the connection without answering (so the request has reached it).
async fn resetting_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    backend(|mut tcp, n| async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(k) => got.extend_from_slice(&buf[..k]),
            }
        }
        n.fetch_add(1, Ordering::SeqCst);
        // SO_LINGER 0: closing sends RST.
        tcp.set_zero_linger().unwrap();
    })
    .await
}

/// A backend that counts connections, reads and never answers.
async fn silent_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    backend(|mut tcp, n| async move {
        n.fetch_add(1, Ordering::SeqCst);
        let mut buf = [0u8; 4096];
        while let Ok(k) = tcp.read(&mut buf).await {
            if k == 0 {
                break;
            }
        }
    })
    .await
}

/// An address where nothing listens (connections are refused).
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// One HTTP/1.1 request on a new connection: status and body (a panic
/// after `LONG`).
async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> (StatusCode, String) {
    tokio::time::timeout(LONG, send_now(addr, req))
        .await
        .expect("no answer in time")
}

async fn send_now(addr: SocketAddr, req: Request<Full<Bytes>>) -> (StatusCode, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn get(path: &str) -> http::request::Builder {
    Request::get(path).header("host", "shop.test")
}

fn header<'a>(echo: &'a str, name: &str) -> Vec<&'a str> {
    echo.lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .collect()
}

#[tokio::test]
async fn forwarded_headers_are_set_and_hop_by_hop_ones_dropped() {
    let (be, _) = echo_backend().await;
    let ing = ingress(&[be], timeouts(LONG, LONG)).await;

    // A client that says nothing of forwarding.
    let (status, echo) = send(
        ing.addr,
        Request::get("/a?b=c")
            .header("host", "Shop.test:8080")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert!(echo.starts_with("GET /a?b=c HTTP/1.1\n"), "{echo}");
    assert_eq!(header(&echo, "host"), ["Shop.test:8080"], "{echo}");
    assert_eq!(header(&echo, "x-forwarded-for"), ["127.0.0.1"], "{echo}");
    assert_eq!(header(&echo, "x-real-ip"), ["127.0.0.1"], "{echo}");
    assert_eq!(header(&echo, "x-forwarded-proto"), ["http"], "{echo}");
    assert_eq!(
        header(&echo, "x-forwarded-host"),
        ["Shop.test:8080"],
        "{echo}"
    );

    // One behind other proxies, who also claims a scheme and a host, and
    // sends hop-by-hop headers (one named by Connection).
    let (status, echo) = send(
        ing.addr,
        get("/")
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-for", "198.51.100.2, 10.0.0.1")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "evil.test")
            .header("x-real-ip", "192.0.2.1")
            .header("connection", "keep-alive, x-private")
            .header("x-private", "secret")
            .header("keep-alive", "timeout=5")
            .header("proxy-connection", "keep-alive")
            .header("x-kept", "yes")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(
        header(&echo, "x-forwarded-for"),
        ["203.0.113.7, 198.51.100.2, 10.0.0.1, 127.0.0.1"],
        "{echo}"
    );
    assert_eq!(header(&echo, "x-real-ip"), ["127.0.0.1"], "{echo}");
    assert_eq!(header(&echo, "x-forwarded-proto"), ["http"], "{echo}");
    assert_eq!(header(&echo, "x-forwarded-host"), ["shop.test"], "{echo}");
    for hop in ["x-private", "keep-alive", "proxy-connection"] {
        assert!(header(&echo, hop).is_empty(), "{hop} passed on: {echo}");
    }
    assert_eq!(header(&echo, "x-kept"), ["yes"], "{echo}");
}

/// HTTP/2 with prior knowledge on the plain listener (h2c): routed by
/// :authority, sent on to the pod as HTTP/1.1 with Host and X-Forwarded-Host.
#[tokio::test]
async fn h2c_clients_are_served() {
    let (be, count) = echo_backend().await;
    let ing = ingress(&[be], timeouts(LONG, LONG)).await;
    let tcp = TcpStream::connect(ing.addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    for i in 0..2 {
        let req = Request::get(format!("http://shop.test/h2/{i}"))
            .body(Full::<Bytes>::default())
            .unwrap();
        let resp = tokio::time::timeout(LONG, tx.send_request(req))
            .await
            .expect("no answer in time")
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let echo = String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        assert!(
            echo.starts_with(&format!("GET /h2/{i} HTTP/1.1\n")),
            "{echo}"
        );
        assert_eq!(header(&echo, "host"), ["shop.test"], "{echo}");
        assert_eq!(header(&echo, "x-forwarded-host"), ["shop.test"], "{echo}");
        assert_eq!(header(&echo, "x-forwarded-proto"), ["http"], "{echo}");
    }
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

/// The request timeout: a pod that takes longer than it to answer gets a
/// 504, and the request is not sent to another pod.
#[tokio::test]
async fn a_slow_pod_gives_504_after_the_request_timeout() {
    let (a, na) = silent_backend().await;
    let (b, nb) = silent_backend().await;
    let timeout = Duration::from_millis(300);
    let ing = ingress(&[a, b], timeouts(timeout, LONG)).await;
    let started = Instant::now();
    let (status, body) = send(ing.addr, get("/slow").body(Full::default()).unwrap()).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(took >= timeout, "answered after {took:?}");
    assert!(took < LONG, "answered after {took:?}");
    assert_eq!(na.load(Ordering::SeqCst) + nb.load(Ordering::SeqCst), 1);
    assert_eq!(ing.retries(), 0);
}

/// Reads from `tcp` until the peer closes (Ok) or `LONG` passes (Err).
async fn closed_by_peer(tcp: &mut TcpStream) -> Result<Duration, String> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(LONG, tcp.read(&mut buf)).await {
            Err(_) => return Err("still open".into()),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// The idle timeout closes a client connection that sends nothing, one
/// that sends half a request, and a keep-alive one after its request.
#[tokio::test]
async fn idle_client_connections_are_closed() {
    let (be, _) = echo_backend().await;
    let idle = Duration::from_millis(300);
    let ing = ingress(&[be], timeouts(LONG, idle)).await;

    let mut silent = TcpStream::connect(ing.addr).await.unwrap();
    let took = closed_by_peer(&mut silent)
        .await
        .expect("silent connection");
    assert!(
        took >= idle - Duration::from_millis(50),
        "closed after {took:?}"
    );

    let mut half = TcpStream::connect(ing.addr).await.unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n")
        .await
        .unwrap();
    closed_by_peer(&mut half).await.expect("half a request");

    let mut kept = TcpStream::connect(ing.addr).await.unwrap();
    kept.write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("x-forwarded-proto: http\n") {
        let k = tokio::time::timeout(LONG, kept.read(&mut buf))
            .await
            .expect("response")
            .unwrap();
        assert_ne!(k, 0, "closed before the response: {got:?}");
        got.extend_from_slice(&buf[..k]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    closed_by_peer(&mut kept)
        .await
        .expect("idle keep-alive connection");
}

/// A connect that fails moves on to the next endpoint, for any method of a
/// request without a body; a request with a body is not retried.
#[tokio::test]
async fn a_failed_connect_is_retried_on_the_next_endpoint() {
    let dead = closed_port().await;
    let (live, n) = echo_backend().await;
    let ing = ingress(&[dead, live], timeouts(LONG, LONG)).await;
    // Round robin: two of these four start on the closed port.
    for method in ["GET", "POST", "PATCH", "DELETE"] {
        let req = Request::builder()
            .method(method)
            .uri("/r")
            .header("host", "shop.test")
            .body(Full::default())
            .unwrap();
        let (status, echo) = send(ing.addr, req).await;
        assert_eq!(status, StatusCode::OK, "{method}: {echo}");
        assert!(echo.starts_with(&format!("{method} /r ")), "{echo}");
    }
    assert_eq!(n.load(Ordering::SeqCst), 4);
    assert_eq!(ing.retries(), 2);

    // The body is streamed, not kept: the one that starts on the closed
    // port fails.
    let mut codes = Vec::new();
    for _ in 0..2 {
        let req = Request::post("/r")
            .header("host", "shop.test")
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        codes.push(send(ing.addr, req).await.0);
    }
    codes.sort();
    assert_eq!(codes, [StatusCode::OK, StatusCode::BAD_GATEWAY]);
    assert_eq!(n.load(Ordering::SeqCst), 5);
    assert_eq!(ing.retries(), 2);
}

/// A request that reached a pod (which then reset the connection) is not
/// sent again unless its method is idempotent; an idempotent one is tried
/// on up to three endpoints.
#[tokio::test]
async fn a_request_that_reached_a_pod_is_retried_only_if_idempotent() {
    let (a, na) = resetting_backend().await;
    let (b, nb) = resetting_backend().await;
    let (c, nc) = resetting_backend().await;
    let ing = ingress(&[a, b, c], timeouts(LONG, LONG)).await;
    let reached =
        || na.load(Ordering::SeqCst) + nb.load(Ordering::SeqCst) + nc.load(Ordering::SeqCst);

    for method in ["POST", "PATCH"] {
        let before = reached();
        let req = Request::builder()
            .method(method)
            .uri("/order")
            .header("host", "shop.test")
            .body(Full::default())
            .unwrap();
        let (status, _) = send(ing.addr, req).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{method}");
        assert_eq!(reached() - before, 1, "{method} sent more than once");
        assert_eq!(ing.retries(), 0, "{method}");
    }

    let before = reached();
    let (status, _) = send(ing.addr, get("/page").body(Full::default()).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(reached() - before, 3, "GET tried on every endpoint");
    assert_eq!(ing.retries(), 2);
}

/// A writer that keeps what the access log writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }
}

/// One line per request under the target `flotilla_ingress::access`:
/// common log format, then host, route, upstream and duration. (A current
/// thread runtime: the subscriber is this thread's default.)
#[tokio::test(flavor = "current_thread")]
async fn every_request_writes_an_access_log_line() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("off,flotilla_ingress::access=info")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .with_level(false)
        .with_target(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (be, _) = echo_backend().await;
    let ing = ingress(&[be], timeouts(LONG, LONG)).await;
    let (status, echo) = send(ing.addr, get("/x?y=1").body(Full::default()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(
        ing.addr,
        Request::post("/nothing")
            .header("host", "other.test")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    eventually("two access log lines", || log.lines().len() >= 2).await;

    let lines = log.lines();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    // 127.0.0.1 - - [02/Jan/2026:15:04:05 +0000] "GET /x?y=1 HTTP/1.1" 200 N host=…
    let ok = &lines[0];
    let (head, rest) = ok.split_once(" [").expect(ok);
    assert_eq!(head, "127.0.0.1 - -", "{ok}");
    let (stamp, rest) = rest.split_once("] ").expect(ok);
    chrono::DateTime::parse_from_str(stamp, "%d/%b/%Y:%H:%M:%S %z").expect(stamp);
    let want = format!(
        "\"GET /x?y=1 HTTP/1.1\" 200 {} host=shop.test route=\"default/shop shop.test /\" upstream={be} ",
        echo.len()
    );
    assert!(rest.starts_with(&want), "{rest}\nwanted {want}");
    assert!(rest.ends_with("ms"), "{rest}");

    let missing = &lines[1];
    let (_, rest) = missing.split_once("] ").expect(missing);
    assert!(
        rest.starts_with("\"POST /nothing HTTP/1.1\" 404 ")
            && rest.contains(" host=other.test route=\"none\" upstream=- "),
        "{missing}"
    );
}
