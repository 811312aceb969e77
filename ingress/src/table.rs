//! The routing table: Ingresses, Services and EndpointSlices compiled into
//! host → paths → backend, with the endpoints of each backend resolved to
//! pod addresses. Built whole on every change and swapped in atomically
//! ([`crate::run`]); a request reads one table from start to end.
//!
//! Matching, as Kubernetes specifies it:
//! - a host rule that names the host exactly wins over a wildcard
//!   (`*.example.com` matches exactly one label: `a.example.com`, not
//!   `example.com` nor `a.b.example.com`), which wins over rules without a
//!   host; the first of these that has a matching path serves;
//! - within a host, an Exact path wins over any Prefix, then the longest
//!   Prefix (in whole segments: `/foo` matches `/foo` and `/foo/bar`, not
//!   `/foobar`; a trailing `/` is ignored); ImplementationSpecific is
//!   matched as Prefix;
//! - no rule: the defaultBackend of the oldest Ingress that has one, else 404.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use flotilla_objects::core::Service;
use flotilla_objects::discovery::EndpointSlice;
use flotilla_objects::networking::{Ingress, IngressBackend};

/// How a path matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathKind {
    Exact,
    Prefix,
}

/// The service port a backend names, resolved to the pods behind it.
#[derive(Debug)]
pub struct Backend {
    /// "namespace/service:port", for logs.
    pub service: String,
    /// Ready endpoints (pod address and target port); empty: 503.
    pub endpoints: Vec<SocketAddr>,
    /// Why there are no endpoints, when there are none.
    pub missing: Option<String>,
    next: AtomicUsize,
}

impl Backend {
    pub fn new(service: String, endpoints: Vec<SocketAddr>, missing: Option<String>) -> Backend {
        Backend {
            service,
            endpoints,
            missing,
            next: AtomicUsize::new(0),
        }
    }

    /// Round robin: the index to start from; a retry takes the next ones.
    pub fn start(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

/// A matched rule.
#[derive(Debug)]
pub struct Route {
    /// The metrics label: "namespace/ingress host path" (or "… default").
    pub name: String,
    pub backend: Arc<Backend>,
    /// This route's metric handles, looked up on its first request.
    pub metrics: std::sync::OnceLock<crate::metrics::RouteMetrics>,
}

impl Route {
    pub fn new(name: String, backend: Arc<Backend>) -> Route {
        Route {
            name,
            backend,
            metrics: std::sync::OnceLock::new(),
        }
    }
}

#[derive(Debug)]
struct PathRule {
    kind: PathKind,
    path: String,
    /// Path segments (Prefix only).
    segments: Vec<String>,
    route: Arc<Route>,
}

/// The paths of one host, in match order.
#[derive(Debug, Default)]
struct HostRules {
    paths: Vec<PathRule>,
}

impl HostRules {
    fn sort(&mut self) {
        // Exact first (in any order: they cannot overlap), then the longest
        // prefix; the first one defined wins among equals (stable sort).
        self.paths.sort_by(|a, b| {
            a.kind.cmp(&b.kind).then_with(|| {
                b.segments
                    .len()
                    .cmp(&a.segments.len())
                    .then_with(|| b.path.len().cmp(&a.path.len()))
            })
        });
    }

    fn lookup(&self, path: &str) -> Option<&Arc<Route>> {
        let mut segs: Option<Vec<&str>> = None;
        for p in &self.paths {
            match p.kind {
                PathKind::Exact => {
                    if p.path == path {
                        return Some(&p.route);
                    }
                }
                PathKind::Prefix => {
                    let s = segs.get_or_insert_with(|| segments(path));
                    if s.len() >= p.segments.len()
                        && p.segments.iter().zip(s.iter()).all(|(a, b)| a == b)
                    {
                        return Some(&p.route);
                    }
                }
            }
        }
        None
    }
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// What a request resolves to.
#[derive(Debug)]
pub enum Lookup<'a> {
    Route(&'a Arc<Route>),
    /// No rule and no default backend: 404.
    NoRule,
}

/// One TLS entry of a served Ingress: the hosts and the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsEntry {
    pub namespace: String,
    pub secret: String,
    /// Empty: the certificate for clients that name no known host.
    pub hosts: Vec<String>,
}

/// The compiled routing table.
#[derive(Debug, Default)]
pub struct Table {
    exact: HashMap<String, HostRules>,
    /// Keyed by the suffix after "*." ("example.com").
    wildcard: HashMap<String, HostRules>,
    any: HostRules,
    default: Option<Arc<Route>>,
    /// TLS entries of the served Ingresses, in order.
    pub tls: Vec<TlsEntry>,
    /// Routes, for their count in logs.
    pub routes: usize,
}

impl Table {
    /// The route for `host` (without port, any case) and `path` (without
    /// query).
    pub fn lookup(&self, host: &str, path: &str) -> Lookup<'_> {
        let host = host.trim_end_matches('.');
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        let exact = self.exact.get(host);
        let wild = host
            .split_once('.')
            .and_then(|(first, rest)| (!first.is_empty()).then_some(rest))
            .and_then(|rest| self.wildcard.get(rest));
        for rules in [exact, wild, Some(&self.any)].into_iter().flatten() {
            if let Some(r) = rules.lookup(path) {
                return Lookup::Route(r);
            }
        }
        match &self.default {
            Some(r) => Lookup::Route(r),
            None => Lookup::NoRule,
        }
    }
}

/// What the table is compiled from.
pub struct Inputs<'a> {
    /// The Ingresses this controller serves (already filtered by class).
    pub ingresses: &'a [Arc<Ingress>],
    pub services: &'a [Arc<Service>],
    pub slices: &'a [Arc<EndpointSlice>],
}

/// Resolves backends to endpoints, once per service port.
struct Resolver<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    done: HashMap<String, Arc<Backend>>,
}

impl<'a> Resolver<'a> {
    fn new(inp: &'a Inputs<'a>) -> Self {
        let services = inp
            .services
            .iter()
            .map(|s| {
                (
                    (s.metadata.namespace.as_str(), s.metadata.name.as_str()),
                    s.as_ref(),
                )
            })
            .collect();
        let mut slices: HashMap<_, Vec<_>> = HashMap::new();
        for s in inp.slices {
            if let Some(svc) = s.service_name() {
                slices
                    .entry((s.metadata.namespace.as_str(), svc))
                    .or_default()
                    .push(s.as_ref());
            }
        }
        Resolver {
            services,
            slices,
            done: HashMap::new(),
        }
    }

    fn backend(&mut self, ns: &str, b: &IngressBackend) -> Arc<Backend> {
        let Some(sb) = &b.service else {
            return Arc::new(Backend::new(
                format!("{ns}/?"),
                Vec::new(),
                Some("the backend names no service".into()),
            ));
        };
        let port_text = if sb.port.name.is_empty() {
            sb.port.number.to_string()
        } else {
            sb.port.name.clone()
        };
        let key = format!("{ns}/{}:{port_text}", sb.name);
        if let Some(b) = self.done.get(&key) {
            return b.clone();
        }
        let (endpoints, missing) = match self.resolve(ns, &sb.name, &sb.port.name, sb.port.number) {
            Ok(e) if e.is_empty() => (e, Some("no ready endpoint".to_string())),
            Ok(e) => (e, None),
            Err(why) => (Vec::new(), Some(why)),
        };
        let b = Arc::new(Backend::new(key.clone(), endpoints, missing));
        self.done.insert(key, b.clone());
        b
    }

    fn resolve(
        &self,
        ns: &str,
        name: &str,
        port_name: &str,
        port_number: i32,
    ) -> Result<Vec<SocketAddr>, String> {
        let svc = self
            .services
            .get(&(ns, name))
            .ok_or_else(|| format!("service {ns}/{name} not found"))?;
        let sp = svc
            .spec
            .ports
            .iter()
            .find(|p| {
                if port_name.is_empty() {
                    p.port == port_number
                } else {
                    p.name == port_name
                }
            })
            .ok_or_else(|| format!("service {ns}/{name} has no port {port_name}{port_number}"))?;
        if sp.protocol != "TCP" && !sp.protocol.is_empty() {
            return Err(format!("service {ns}/{name} port is {}", sp.protocol));
        }
        let mut out = Vec::new();
        for sl in self.slices.get(&(ns, name)).into_iter().flatten() {
            if sl.address_type != "IPv4" && sl.address_type != "IPv6" {
                continue;
            }
            let Some(port) = sl
                .ports
                .iter()
                .find(|p| p.name.as_deref().unwrap_or("") == sp.name)
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for ep in &sl.endpoints {
                if !ep.conditions.is_ready() {
                    continue;
                }
                for a in &ep.addresses {
                    if let Ok(ip) = a.parse::<std::net::IpAddr>() {
                        out.push(SocketAddr::new(ip, port));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// Compile the table. Ingresses are taken oldest first (then by namespace
/// and name), so that the older rule wins a tie, as in ingress-nginx.
pub fn compile(inp: &Inputs<'_>) -> Table {
    let mut res = Resolver::new(inp);
    let mut ings: Vec<&Arc<Ingress>> = inp.ingresses.iter().collect();
    ings.sort_by(|a, b| {
        let key = |i: &Ingress| {
            (
                i.metadata.creation_timestamp,
                i.metadata.namespace.clone(),
                i.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    let mut t = Table::default();
    // (host, kind, path) already defined: the first wins.
    let mut seen: BTreeMap<(String, PathKind, String), ()> = BTreeMap::new();
    for ing in ings {
        let ns = ing.metadata.namespace.as_str();
        let id = format!("{ns}/{}", ing.metadata.name);
        if let (None, Some(b)) = (&t.default, &ing.spec.default_backend) {
            t.default = Some(Arc::new(Route::new(
                format!("{id} default"),
                res.backend(ns, b),
            )));
            t.routes += 1;
        }
        for tls in &ing.spec.tls {
            if !tls.secret_name.is_empty() {
                t.tls.push(TlsEntry {
                    namespace: ns.to_string(),
                    secret: tls.secret_name.clone(),
                    hosts: tls.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                });
            }
        }
        for rule in &ing.spec.rules {
            let Some(http) = &rule.http else { continue };
            let host = rule.host.to_ascii_lowercase();
            for p in &http.paths {
                let kind = if p.path_type == "Exact" {
                    PathKind::Exact
                } else {
                    PathKind::Prefix
                };
                let path = if p.path.is_empty() {
                    "/".to_string()
                } else {
                    p.path.clone()
                };
                if seen
                    .insert((host.clone(), kind, path.clone()), ())
                    .is_some()
                {
                    continue;
                }
                let route = Arc::new(Route::new(
                    format!("{id} {} {path}", if host.is_empty() { "*" } else { &host }),
                    res.backend(ns, &p.backend),
                ));
                let rules = if host.is_empty() {
                    &mut t.any
                } else if let Some(suffix) = host.strip_prefix("*.") {
                    t.wildcard.entry(suffix.to_string()).or_default()
                } else {
                    t.exact.entry(host.clone()).or_default()
                };
                rules.paths.push(PathRule {
                    kind,
                    segments: segments(&path).into_iter().map(String::from).collect(),
                    path,
                    route,
                });
                t.routes += 1;
            }
        }
    }
    t.any.sort();
    for r in t.exact.values_mut().chain(t.wildcard.values_mut()) {
        r.sort();
    }
    t
}

#[cfg(test)]
mod tests;
