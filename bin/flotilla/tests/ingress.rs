//! `flotilla ingress` end to end: one master, two hosts with real agents
//! whose pods run busybox httpd, and the ingress in the machine's own
//! namespace on loopback (the pod CIDRs routed to their hosts over the
//! test's bridge). Clients are curl, a keep-alive hyper client and a
//! WebSocket client; one test walks through the scenarios in order, so
//! the cluster starts once.

mod agent_support;
mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_support::{flt, running_ip, AgentProc, Site};
use common::{free_port, wait_for};
use flotilla_client::{Api, Client, ListParams};
use flotilla_objects::core::{Endpoints, Node, Pod, Secret, Service};
use flotilla_objects::discovery::EndpointSlice;
use flotilla_objects::networking::{Ingress, IngressClass};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(90);

/// A `flotilla ingress` process; killed on drop (its log shown on failure).
struct IngressProc {
    log: std::path::PathBuf,
    child: Child,
}

impl IngressProc {
    fn start(servers: &str, http: u16, https: u16, admin: u16, dir: &std::path::Path) -> Self {
        let log = dir.join("ingress.log");
        let f = std::fs::File::create(&log).expect("ingress log");
        let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["ingress", "--server", servers, "--node-name", "ingress-1"])
            .arg(format!("--http-addr=127.0.0.1:{http}"))
            .arg(format!("--https-addr=127.0.0.1:{https}"))
            .arg(format!("--admin-addr=127.0.0.1:{admin}"))
            .env("RUST_LOG", "info,flotilla_ingress=debug")
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("log"))
            .stderr(f)
            .spawn()
            .expect("flotilla ingress");
        IngressProc { log, child }
    }
}

impl Drop for IngressProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let s = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = s.lines().collect();
            println!(
                "--- ingress log (tail) ---\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// curl with `args`; (status, body, http version) or the error.
async fn curl(args: &[&str]) -> Result<(u16, String, String), String> {
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("curl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = text.rsplit_once('\n').ok_or("no status line")?;
    let (code, version) = last.split_once(' ').ok_or("no version")?;
    Ok((
        code.parse().map_err(|_| format!("status {code:?}"))?,
        body.trim().to_string(),
        version.to_string(),
    ))
}

/// GET http://HOST/PATH through the ingress: (status, body).
async fn get(port: u16, host: &str, path: &str) -> Result<(u16, String), String> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let h = format!("Host: {host}");
    curl(&["-H", &h, &url]).await.map(|(c, b, _)| (c, b))
}

/// A pod answering every path the test asks for with `body`.
fn server_pod(name: &str, app: &str, node: &str) -> Pod {
    let cmd = format!(
        "mkdir -p /www/api && for f in index.html apiary api/users api/exact; do echo {name} > /www/$f; done \
         && touch /tmp/ready && exec httpd -f -p 8080 -h /www"
    );
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", cmd],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1}}]}
    }))
    .expect("pod")
}

fn service(name: &str, selector: Option<&str>) -> Service {
    let mut v = json!({
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    });
    if let Some(app) = selector {
        v["spec"]["selector"] = json!({ "app": app });
    }
    serde_json::from_value(v).expect("service")
}

fn backend(svc: &str) -> Value {
    json!({"service": {"name": svc, "port": {"number": 80}}})
}

fn prefix(path: &str, svc: &str) -> Value {
    json!({"path": path, "pathType": "Prefix", "backend": backend(svc)})
}

fn ingress(name: &str, spec: Value) -> Ingress {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("ingress")
}

/// A Service `name` without a selector, its Endpoints (`subsets`) written
/// by the test, and an Ingress sending every path of `host` to it.
async fn manual_service(client: &Client, name: &str, host: &str, subsets: Value) {
    let ns = "default";
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&service(name, None))
        .await
        .unwrap_or_else(|e| panic!("service {name}: {e}"));
    let eps: Endpoints =
        serde_json::from_value(json!({"metadata": {"name": name}, "subsets": subsets}))
            .expect("endpoints");
    Api::<Endpoints>::namespaced(client.clone(), ns)
        .create(&eps)
        .await
        .unwrap_or_else(|e| panic!("endpoints {name}: {e}"));
    route_host(&Api::namespaced(client.clone(), ns), name, host).await;
}

/// Create an Ingress `name` sending every path of `host` to service `name`.
async fn route_host(ings: &Api<Ingress>, name: &str, host: &str) {
    let rules = json!({"rules": [{"host": host, "http": {"paths": [prefix("/", name)]}}]});
    ings.create(&ingress(name, rules))
        .await
        .unwrap_or_else(|e| panic!("ingress {name}: {e}"));
}

/// A WebSocket echo server on `addr` (the test's side of the bridge).
async fn echo_server(addr: std::net::SocketAddr) -> tokio::task::JoinHandle<()> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .expect("echo bind");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}

/// Send requests through the ingress until `stop`, counting answers from
/// a backend (200) and failures (anything else), with a keep-alive client.
async fn load(
    port: u16,
    host: &'static str,
    stop: tokio_util::sync::CancellationToken,
    ok: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
) {
    use http_body_util::{BodyExt, Empty};
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    while !stop.is_cancelled() {
        let req = http::Request::get(format!("http://127.0.0.1:{port}/"))
            .header("host", host)
            .body(Empty::new())
            .expect("request");
        let res = tokio::time::timeout(Duration::from_secs(10), client.request(req)).await;
        match res {
            Ok(Ok(r)) if r.status() == 200 => match r.into_body().collect().await {
                Ok(_) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => failures.lock().unwrap().push(format!("body: {e}")),
            },
            Ok(Ok(r)) => failures
                .lock()
                .unwrap()
                .push(format!("status {}", r.status())),
            Ok(Err(e)) => failures.lock().unwrap().push(format!("{e:?}")),
            Err(_) => failures.lock().unwrap().push("timed out".into()),
        }
    }
}

#[tokio::test]
async fn ingress_routes_http_and_tls_to_pods() {
    let mut site = Site::start(2).await;
    let servers = site.servers.clone();
    let names: Vec<String> = (1..=2).map(|i| format!("i{i}-{}", site.lan.id)).collect();
    let _agents: Vec<AgentProc> = (0..2).map(|i| site.agent(&names[i], i)).collect();
    let cluster = &site.cluster;
    let client = Client::connect(&[cluster.client_addr(0)]).expect("client");
    let nodes = Api::<Node>::all(client.clone());
    for (i, n) in names.iter().enumerate() {
        let cidr = wait_for(TIMEOUT, &format!("{n} has a pod CIDR"), async || {
            let node = nodes.get(n).await.map_err(|e| e.to_string())?;
            if node.spec.pod_cidr.is_empty() {
                Err("none yet".to_string())
            } else {
                Ok(node.spec.pod_cidr)
            }
        })
        .await;
        site.lan.route_to(&cidr, i);
    }
    let (http, https, admin) = (free_port(), free_port(), free_port());
    let _ingress = IngressProc::start(&servers, http, https, admin, cluster.dir());

    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let svcs = Api::<Service>::namespaced(client.clone(), "default");
    let ings = Api::<Ingress>::namespaced(client.clone(), "default");
    let classes = Api::<IngressClass>::all(client.clone());
    classes
        .create(
            &serde_json::from_value(json!({
                "metadata": {"name": "flotilla",
                    "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
                "spec": {"controller": "flotilla.dev/ingress"}
            }))
            .expect("class"),
        )
        .await
        .expect("ingress class");
    for (i, app) in ["a", "b", "c"].iter().enumerate() {
        pods.create(&server_pod(app, app, &names[i % 2]))
            .await
            .expect("server pod");
        svcs.create(&service(app, Some(app)))
            .await
            .expect("service");
    }
    svcs.create(&service("nobody", Some("nobody")))
        .await
        .expect("service without pods");
    for app in ["a", "b", "c"] {
        running_ip(&pods, app).await;
    }

    // Host and path routing with Kubernetes' precedence.
    ings.create(&ingress(
        "shop",
        json!({"rules": [
            {"host": "shop.test", "http": {"paths": [
                prefix("/", "a"),
                prefix("/api", "b"),
                {"path": "/api/exact", "pathType": "Exact", "backend": backend("c")},
            ]}},
            {"host": "*.wild.test", "http": {"paths": [prefix("/", "c")]}},
            {"host": "empty.test", "http": {"paths": [prefix("/", "nobody")]}},
        ]}),
    ))
    .await
    .expect("ingress shop");
    let cases = [
        ("shop.test", "/", 200, "a"),
        ("shop.test", "/apiary", 200, "a"),
        ("shop.test", "/api/users", 200, "b"),
        ("shop.test", "/api/exact", 200, "c"),
        ("x.wild.test", "/", 200, "c"),
        (
            "x.y.wild.test",
            "/",
            404,
            "404 page not found: no ingress rule",
        ),
        (
            "other.test",
            "/",
            404,
            "404 page not found: no ingress rule",
        ),
        (
            "empty.test",
            "/",
            503,
            "503 service unavailable: no ready endpoint",
        ),
    ];
    for (host, path, code, body) in cases {
        wait_for(
            TIMEOUT,
            &format!("{host}{path} answers {code} {body}"),
            async || {
                let got = get(http, host, path).await?;
                if got == (code, body.to_string()) {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            },
        )
        .await;
    }

    // Its address in the Ingress's status.
    wait_for(
        TIMEOUT,
        "the status shows the ingress's address",
        async || {
            let i = ings.get("shop").await.map_err(|e| e.to_string())?;
            let ip = i
                .status
                .and_then(|s| s.load_balancer.ingress.first().map(|p| p.ip.clone()));
            if ip.as_deref() == Some("127.0.0.1") {
                Ok(())
            } else {
                Err(format!("{ip:?}"))
            }
        },
    )
    .await;
    let table = flt(&servers, &["get", "ingress", "shop"]).await;
    assert!(
        table.stdout.contains("127.0.0.1"),
        "flt get ingress: {table:?}"
    );

    // TLS: two certificates, chosen by SNI; HTTP/2 by ALPN.
    let secrets = Api::<Secret>::namespaced(client.clone(), "default");
    let certs_dir = cluster.dir().join("certs");
    std::fs::create_dir_all(&certs_dir).expect("certs dir");
    for name in ["a", "b"] {
        let host = format!("{name}.tls.test");
        let ck = rcgen::generate_simple_self_signed(vec![host.clone()]).expect("cert");
        let pem = ck.cert.pem();
        std::fs::write(certs_dir.join(format!("{name}.pem")), &pem).expect("write pem");
        secrets
            .create(
                &serde_json::from_value(json!({
                    "metadata": {"name": format!("tls-{name}")},
                    "type": "kubernetes.io/tls",
                    "stringData": {"tls.crt": pem, "tls.key": ck.key_pair.serialize_pem()}
                }))
                .expect("secret"),
            )
            .await
            .expect("tls secret");
    }
    ings.create(&ingress(
        "tls",
        json!({
            "tls": [{"hosts": ["a.tls.test"], "secretName": "tls-a"},
                    {"hosts": ["b.tls.test"], "secretName": "tls-b"}],
            "rules": [
                {"host": "a.tls.test", "http": {"paths": [prefix("/", "a")]}},
                {"host": "b.tls.test", "http": {"paths": [prefix("/", "b")]}},
            ]
        }),
    ))
    .await
    .expect("ingress tls");
    for name in ["a", "b"] {
        let host = format!("{name}.tls.test");
        let resolve = format!("{host}:{https}:127.0.0.1");
        let url = format!("https://{host}:{https}/");
        let ca = certs_dir.join(format!("{name}.pem"));
        let ca = ca.to_string_lossy();
        let got = wait_for(TIMEOUT, &format!("{host} over TLS"), async || {
            curl(&["--resolve", &resolve, "--cacert", &ca, &url]).await
        })
        .await;
        assert_eq!((got.0, got.1.as_str(), got.2.as_str()), (200, name, "2"));
        let h1 = curl(&["--http1.1", "--resolve", &resolve, "--cacert", &ca, &url])
            .await
            .expect("HTTP/1.1 over TLS");
        assert_eq!((h1.0, h1.1.as_str(), h1.2.as_str()), (200, name, "1.1"));
        // The other host's certificate does not verify for this name.
        let other = certs_dir.join(if name == "a" { "b.pem" } else { "a.pem" });
        let wrong = curl(&[
            "--resolve",
            &resolve,
            "--cacert",
            &other.to_string_lossy(),
            &url,
        ])
        .await;
        assert!(
            wrong.is_err(),
            "{host} verified with the other CA: {wrong:?}"
        );
    }

    // WebSocket: an echo server on the test's side of the bridge, as the
    // endpoint of a service without a selector.
    let echo_port = free_port();
    let echo_addr = std::net::SocketAddr::from((site.lan.gateway, echo_port));
    let _echo = echo_server(echo_addr).await;
    manual_service(
        &client,
        "echo",
        "ws.test",
        json!([{"addresses": [{"ip": site.lan.gateway.to_string()}],
            "ports": [{"name": "http", "port": echo_port}]}]),
    )
    .await;
    wait_for(
        TIMEOUT,
        "a WebSocket echo through the ingress",
        async || {
            let s = tokio::net::TcpStream::connect(("127.0.0.1", http))
                .await
                .map_err(|e| e.to_string())?;
            let (mut ws, _) = tokio_tungstenite::client_async("ws://ws.test/chat", s)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            for text in ["hello", "world"] {
                ws.send(tokio_tungstenite::tungstenite::Message::text(text))
                    .await
                    .map_err(|e| e.to_string())?;
                match ws.next().await {
                    Some(Ok(m)) if m.to_text().ok() == Some(text) => {}
                    other => return Err(format!("echo of {text}: {other:?}")),
                }
            }
            Ok(())
        },
    )
    .await;

    // An endpoint that stops being ready gets no request one second after
    // the masters know.
    for (i, n) in ["r1", "r2"].iter().enumerate() {
        pods.create(&server_pod(n, "r", &names[i]))
            .await
            .expect("r pod");
    }
    svcs.create(&service("r", Some("r"))).await.expect("svc r");
    route_host(&ings, "r", "r.test").await;
    let mut seen = std::collections::BTreeSet::new();
    wait_for(TIMEOUT, "r.test reaches r1 and r2", async || {
        let (_, body) = get(http, "r.test", "/").await?;
        seen.insert(body);
        if seen.contains("r1") && seen.contains("r2") {
            Ok(())
        } else {
            Err(format!("seen {seen:?}"))
        }
    })
    .await;
    let r2_ip = running_ip(&pods, "r2").await;
    let out = flt(&servers, &["exec", "r2", "--", "rm", "/tmp/ready"]).await;
    assert!(out.success(), "{out:?}");
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), "default");
    wait_for(TIMEOUT, "the masters mark r2 not ready", async || {
        let l = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=r"))
            .await
            .map_err(|e| e.to_string())?;
        let ready = l
            .items
            .iter()
            .flat_map(|s| &s.endpoints)
            .any(|e| e.addresses.contains(&r2_ip) && e.conditions.is_ready());
        if ready {
            Err("still ready".to_string())
        } else {
            Ok(())
        }
    })
    .await;
    // The issue's bound: one second from the masters knowing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..30 {
        let (code, body) = get(http, "r.test", "/").await.expect("r.test");
        assert_eq!((code, body.as_str()), (200, "r1"));
    }

    // A connect that fails is retried on another endpoint: r1 listed on its
    // port and on a closed one (two subsets, so two slices); every GET is
    // answered by r1, and the retries are counted.
    let r1_ip = running_ip(&pods, "r1").await;
    manual_service(
        &client,
        "mixed",
        "mixed.test",
        json!([
            {"addresses": [{"ip": r1_ip}], "ports": [{"name": "http", "port": 8080}]},
            {"addresses": [{"ip": r1_ip}], "ports": [{"name": "http", "port": 8081}]},
        ]),
    )
    .await;
    wait_for(
        TIMEOUT,
        "both mixed endpoints are in the table",
        async || {
            let l = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=mixed"))
                .await
                .map_err(|e| e.to_string())?;
            if l.items.len() != 2 {
                return Err(format!("{} slices", l.items.len()));
            }
            // The ingress has the route once it answers (a 404 "no ingress
            // rule" before).
            match get(http, "mixed.test", "/").await? {
                (200, body) if body == "r1" => Ok(()),
                other => Err(format!("mixed.test answered {other:?}")),
            }
        },
    )
    .await;
    for _ in 0..20 {
        let (code, body) = get(http, "mixed.test", "/").await.expect("mixed.test");
        assert_eq!((code, body.as_str()), (200, "r1"));
    }
    // The ingress may have had one slice only for the GETs above; more
    // GETs until one of them is retried, every one answered by r1.
    wait_for(
        TIMEOUT,
        "a failed connect retried and counted",
        async || {
            let (code, body) = get(http, "mixed.test", "/").await?;
            assert_eq!((code, body.as_str()), (200, "r1"));
            let (_, metrics, _) = curl(&[&format!("http://127.0.0.1:{admin}/metrics")]).await?;
            if metrics
                .contains(r#"flotilla_ingress_retries_total{route="default/mixed mixed.test /"}"#)
            {
                Ok(())
            } else {
                Err(format!("no retries counted: {metrics}"))
            }
        },
    )
    .await;

    // A rolling update under constant load: no request fails.
    let deploy: flotilla_objects::apps::Deployment = serde_json::from_value(json!({
        "metadata": {"name": "roll"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "roll"}},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": {"app": "roll"}}, "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c",
                    "mkdir /www && hostname > /www/index.html && touch /tmp/ready && exec httpd -f -p 8080 -h /www"],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1}}]}}}
    }))
    .expect("deployment");
    Api::<flotilla_objects::apps::Deployment>::namespaced(client.clone(), "default")
        .create(&deploy)
        .await
        .expect("deployment roll");
    svcs.create(&service("roll", Some("roll")))
        .await
        .expect("svc roll");
    route_host(&ings, "roll", "roll.test").await;
    let out = flt(
        &servers,
        &["rollout", "status", "deploy/roll", "--timeout=90s"],
    )
    .await;
    assert!(out.success(), "{out:?}");
    wait_for(TIMEOUT, "roll.test answers", async || {
        get(http, "roll.test", "/").await.and_then(|(c, b)| {
            if c == 200 {
                Ok(b)
            } else {
                Err(format!("{c} {b}"))
            }
        })
    })
    .await;
    let stop = tokio_util::sync::CancellationToken::new();
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let loaders: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(load(
                http,
                "roll.test",
                stop.clone(),
                ok.clone(),
                failures.clone(),
            ))
        })
        .collect();
    let before = pods
        .list(&ListParams::default().labels("app=roll"))
        .await
        .expect("roll pods")
        .items
        .into_iter()
        .map(|p| p.metadata.name)
        .collect::<Vec<_>>();
    let out = flt(&servers, &["rollout", "restart", "deploy/roll"]).await;
    assert!(out.success(), "{out:?}");
    let out = flt(
        &servers,
        &["rollout", "status", "deploy/roll", "--timeout=120s"],
    )
    .await;
    assert!(out.success(), "{out:?}");
    wait_for(TIMEOUT, "the old pods are gone", async || {
        let now = pods
            .list(&ListParams::default().labels("app=roll"))
            .await
            .map_err(|e| e.to_string())?
            .items;
        if now.iter().any(|p| before.contains(&p.metadata.name)) {
            Err(format!("{} pods", now.len()))
        } else {
            Ok(())
        }
    })
    .await;
    let mark = ok.load(Ordering::Relaxed);
    wait_for(TIMEOUT, "requests go on after the rollout", async || {
        if ok.load(Ordering::Relaxed) > mark + 20 {
            Ok(())
        } else {
            Err("waiting")
        }
    })
    .await;
    stop.cancel();
    for l in loaders {
        l.await.expect("loader");
    }
    let failures = failures.lock().unwrap().clone();
    let answered = ok.load(Ordering::Relaxed);
    println!(
        "rolling update: {answered} requests answered, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(answered > 100, "only {answered} requests");

    // Metrics per route.
    let (code, metrics, _) = curl(&[&format!("http://127.0.0.1:{admin}/metrics")])
        .await
        .expect("metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains(
            r#"flotilla_ingress_requests_total{route="default/roll roll.test /",code="200"}"#
        ),
        "{metrics}"
    );
}
