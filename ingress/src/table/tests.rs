use std::sync::Arc;

use flotilla_objects::core::Service;
use flotilla_objects::discovery::EndpointSlice;
use flotilla_objects::networking::Ingress;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

fn ingress(name: &str, created: &str, spec: Value) -> Arc<Ingress> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "spec": spec,
        }))
        .expect("ingress"),
    )
}

fn backend(svc: &str) -> Value {
    json!({"service": {"name": svc, "port": {"number": 80}}})
}

fn path(p: &str, kind: &str, svc: &str) -> Value {
    json!({"path": p, "pathType": kind, "backend": backend(svc)})
}

/// A service `name` (port 80 "http") whose slice lists `ips` on 8080;
/// `ready` false makes them not ready.
fn service(name: &str, ips: &[&str], ready: bool) -> (Arc<Service>, Arc<EndpointSlice>) {
    let svc = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }))
    .expect("service");
    let eps: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": ready}}))
        .collect();
    let slice = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-x"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .expect("slice");
    (Arc::new(svc), Arc::new(slice))
}

fn compile_with(ings: &[Arc<Ingress>], svcs: &[(Arc<Service>, Arc<EndpointSlice>)]) -> Table {
    let services: Vec<_> = svcs.iter().map(|s| s.0.clone()).collect();
    let slices: Vec<_> = svcs.iter().map(|s| s.1.clone()).collect();
    compile(&Inputs {
        ingresses: ings,
        services: &services,
        slices: &slices,
    })
}

/// The service a request reaches ("404" when none).
fn service_for(t: &Table, host: &str, path: &str) -> String {
    match t.lookup(host, path) {
        Lookup::Route(r) => r
            .backend
            .service
            .trim_start_matches("default/")
            .trim_end_matches(":80")
            .to_string(),
        Lookup::NoRule => "404".into(),
    }
}

#[test]
fn precedence_table() {
    let ings = vec![
        ingress(
            "a",
            "2026-01-01T00:00:00Z",
            json!({"rules": [
                {"host": "shop.example.com", "http": {"paths": [
                    path("/", "Prefix", "root"),
                    path("/api", "Prefix", "api"),
                    path("/api/v2", "Prefix", "v2"),
                    path("/api", "Exact", "api-exact"),
                    path("/static/", "Prefix", "static"),
                    path("/legacy", "ImplementationSpecific", "legacy"),
                ]}},
                {"host": "*.example.com", "http": {"paths": [path("/", "Prefix", "wild")]}},
                {"http": {"paths": [path("/any", "Prefix", "any")]}},
            ]}),
        ),
        // Younger: its duplicate of shop.example.com / loses; its own
        // paths are merged in.
        ingress(
            "b",
            "2026-01-02T00:00:00Z",
            json!({"defaultBackend": backend("fallback"), "rules": [
                {"host": "shop.example.com", "http": {"paths": [
                    path("/", "Prefix", "younger"),
                    path("/cart", "Exact", "cart"),
                ]}},
            ]}),
        ),
    ];
    let t = compile_with(&ings, &[]);
    let cases = [
        ("shop.example.com", "/", "root"),
        ("shop.example.com", "/index.html", "root"),
        ("SHOP.example.com", "/", "root"),
        ("shop.example.com.", "/", "root"),
        ("shop.example.com", "/api", "api-exact"),
        ("shop.example.com", "/api/", "api"),
        ("shop.example.com", "/api/users", "api"),
        ("shop.example.com", "/apiary", "root"),
        ("shop.example.com", "/api/v2", "v2"),
        ("shop.example.com", "/api/v2/x", "v2"),
        ("shop.example.com", "/api/v20", "api"),
        ("shop.example.com", "/static", "static"),
        ("shop.example.com", "/static/a.css", "static"),
        ("shop.example.com", "/legacy/x", "legacy"),
        ("shop.example.com", "/cart", "cart"),
        ("shop.example.com", "/cart/x", "root"),
        ("a.example.com", "/x", "wild"),
        ("a.b.example.com", "/x", "fallback"),
        ("example.com", "/x", "fallback"),
        ("a.b.example.com", "/any/thing", "any"),
        ("other.test", "/any", "any"),
        ("other.test", "/anything", "fallback"),
        ("a.example.com", "/any", "wild"),
    ];
    for (host, p, want) in cases {
        assert_eq!(service_for(&t, host, p), want, "{host}{p}");
    }
}

#[test]
fn no_rule_is_404_without_default_backend() {
    let t = compile_with(
        &[ingress(
            "a",
            "2026-01-01T00:00:00Z",
            json!({"rules": [{"host": "a.test", "http": {"paths": [path("/x", "Exact", "s")]}}]}),
        )],
        &[],
    );
    assert_eq!(service_for(&t, "a.test", "/x"), "s");
    assert_eq!(service_for(&t, "a.test", "/x/"), "404");
    assert_eq!(service_for(&t, "b.test", "/x"), "404");
}

#[test]
fn backends_resolve_ready_endpoints_on_the_target_port() {
    let ings = vec![ingress(
        "a",
        "2026-01-01T00:00:00Z",
        json!({"rules": [{"http": {"paths": [
            path("/web", "Prefix", "web"),
            path("/down", "Prefix", "down"),
            path("/gone", "Prefix", "gone"),
            {"path": "/named", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"name": "http"}}}},
        ]}}]}),
    )];
    let t = compile_with(
        &ings,
        &[
            service("web", &["10.244.1.5", "10.244.2.7"], true),
            service("down", &["10.244.1.6"], false),
        ],
    );
    let Lookup::Route(r) = t.lookup("x", "/web") else {
        panic!("no route")
    };
    let eps: Vec<String> = r.backend.endpoints.iter().map(|e| e.to_string()).collect();
    assert_eq!(eps, ["10.244.1.5:8080", "10.244.2.7:8080"]);
    let Lookup::Route(r) = t.lookup("x", "/named") else {
        panic!("no route")
    };
    assert_eq!(r.backend.endpoints.len(), 2);
    for p in ["/down", "/gone"] {
        let Lookup::Route(r) = t.lookup("x", p) else {
            panic!("no route")
        };
        assert!(r.backend.endpoints.is_empty(), "{p}");
        assert!(r.backend.missing.is_some(), "{p}");
    }
}

/// The reference matcher: the rules of the spec, applied one by one.
fn reference(rules: &[(u8, String)], path: &str) -> Option<usize> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // Exact first.
    if let Some(i) = rules.iter().position(|(k, p)| *k == 0 && p == path) {
        return Some(i);
    }
    let mut best: Option<(usize, usize, usize)> = None; // (segments, len, index)
    for (i, (k, p)) in rules.iter().enumerate() {
        if *k == 0 {
            continue;
        }
        let ps: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
        if ps.len() <= segs.len() && ps.iter().zip(&segs).all(|(a, b)| a == b) {
            let better = match best {
                None => true,
                Some((n, l, _)) => (ps.len(), p.len()) > (n, l),
            };
            if better {
                best = Some((ps.len(), p.len(), i));
            }
        }
    }
    best.map(|(_, _, i)| i)
}

fn arb_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "ab", ""]), 0..4).prop_map(|segs| {
        let mut p = String::from("/");
        p.push_str(&segs.join("/"));
        p
    })
}

proptest! {
    /// Any set of rules: the table picks what the reference picks (rules
    /// with the same type and path collapse to the first one, as in the
    /// table).
    #[test]
    fn matcher_agrees_with_the_reference(
        raw in prop::collection::vec((0u8..2, arb_path()), 1..8),
        request in arb_path(),
    ) {
        let mut rules: Vec<(u8, String)> = Vec::new();
        for r in raw {
            if !rules.contains(&r) {
                rules.push(r);
            }
        }
        let paths: Vec<Value> = rules
            .iter()
            .enumerate()
            .map(|(i, (k, p))| path(p, if *k == 0 { "Exact" } else { "Prefix" }, &format!("s{i}")))
            .collect();
        let t = compile_with(
            &[ingress("a", "2026-01-01T00:00:00Z", json!({"rules": [{"host": "h.test", "http": {"paths": paths}}]}))],
            &[],
        );
        let got = service_for(&t, "h.test", &request);
        let want = reference(&rules, &request).map(|i| format!("s{i}")).unwrap_or_else(|| "404".into());
        prop_assert_eq!(got, want);
    }

    /// Wildcards match one label only, and exact hosts win.
    #[test]
    fn wildcards_match_one_label(labels in prop::collection::vec("[a-c]{1,2}", 0..4)) {
        let t = compile_with(
            &[ingress("a", "2026-01-01T00:00:00Z", json!({"rules": [
                {"host": "*.x.test", "http": {"paths": [path("/", "Prefix", "wild")]}},
                {"host": "a.x.test", "http": {"paths": [path("/", "Prefix", "exact")]}},
            ]}))],
            &[],
        );
        let mut host = labels.join(".");
        if !host.is_empty() { host.push('.'); }
        host.push_str("x.test");
        let want = match labels.len() {
            1 if labels[0] == "a" => "exact",
            1 => "wild",
            _ => "404",
        };
        prop_assert_eq!(service_for(&t, &host, "/"), want);
    }
}
