//! `flotilla ingress`: the HTTP router for Ingress objects. It watches
//! Ingresses, IngressClasses, Services, EndpointSlices and Secrets through
//! `flotilla-client` caches, compiles them into a routing table
//! ([`table`]) and swaps it in whole on every change (within
//! [`Config::min_sync_interval`] of the change reaching the cache), and
//! sends each request straight to a ready pod of the matched backend
//! ([`serve`]): no cluster IP, no node proxy in between, so a pod that stops
//! being ready stops getting requests as soon as the masters know.
//!
//! Serves HTTP/1.1 and HTTP/2 on `--http-addr`, and on `--https-addr` with
//! certificates from `kubernetes.io/tls` Secrets chosen by SNI ([`tls`]);
//! writes its address into `status.loadBalancer.ingress` of every Ingress
//! it serves ([`status`]); counts requests per route ([`metrics`]) on the
//! admin address's `/metrics`; logs every request under the tracing target
//! `flotilla_ingress::access`.
//!
//! Which Ingresses ([`serves`]): those whose `spec.ingressClassName` is
//! [`Config::class`] when that IngressClass names [`CONTROLLER`] as its
//! `spec.controller`; those whose older `kubernetes.io/ingress.class`
//! annotation is [`Config::class`]; and those that name no class when that
//! IngressClass, with our controller, is the default one (annotation
//! `ingressclass.kubernetes.io/is-default-class: "true"`) or when no class
//! at all is marked default.
//!
//! Owns: the router, its listeners and its status writes. Must not depend
//! on the other role crates, the masters' crates or the store: it reads the
//! cluster only through the API (`flotilla-client`).

pub mod metrics;
pub mod serve;
pub mod status;
pub mod table;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use flotilla_client::{Api, Client, ListParams, Reflector};
use flotilla_objects::core::{Secret, Service};
use flotilla_objects::discovery::EndpointSlice;
use flotilla_objects::networking::{Ingress, IngressClass};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use serve::Timeouts;

/// The controller name an IngressClass gives for this router.
pub const CONTROLLER: &str = "flotilla.dev/ingress";

/// Errors of the ingress.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the caches did not fill within {0:?} (are the masters reachable?)")]
    NotReady(Duration),
}

/// The ingress's settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    /// Plain HTTP listener (None: none).
    pub http_addr: Option<SocketAddr>,
    /// HTTPS listener (None: none).
    pub https_addr: Option<SocketAddr>,
    /// `/metrics` and `/healthz` (None: none).
    pub admin_addr: Option<SocketAddr>,
    /// The IngressClass this router serves.
    pub class: String,
    /// The address written into the Ingresses' status (None: the HTTP
    /// listener's IP, else the HTTPS one's; nothing for an unspecified IP).
    pub status_address: Option<String>,
    pub timeouts: Timeouts,
    /// Least time between two table builds (changes coalesce within it).
    pub min_sync_interval: Duration,
}

impl Config {
    pub fn new(node_name: &str) -> Config {
        Config {
            node_name: node_name.to_string(),
            http_addr: None,
            https_addr: None,
            admin_addr: None,
            class: "flotilla".into(),
            status_address: None,
            timeouts: Timeouts {
                connect: Duration::from_secs(3),
                request: Duration::from_secs(60),
                idle: Duration::from_secs(75),
            },
            min_sync_interval: Duration::from_millis(20),
        }
    }
}

/// The ingress with its listeners bound (so that their addresses are
/// known before it runs, even for port 0).
pub struct Bound {
    cfg: Config,
    http: Option<TcpListener>,
    https: Option<TcpListener>,
    admin: Option<TcpListener>,
}

async fn listen(addr: Option<SocketAddr>) -> Result<Option<TcpListener>, Error> {
    match addr {
        None => Ok(None),
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|source| Error::Bind { addr, source }),
    }
}

impl Bound {
    pub async fn bind(cfg: Config) -> Result<Bound, Error> {
        Ok(Bound {
            http: listen(cfg.http_addr).await?,
            https: listen(cfg.https_addr).await?,
            admin: listen(cfg.admin_addr).await?,
            cfg,
        })
    }

    fn local(l: &Option<TcpListener>) -> Option<SocketAddr> {
        l.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        Self::local(&self.http)
    }

    pub fn https_addr(&self) -> Option<SocketAddr> {
        Self::local(&self.https)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        Self::local(&self.admin)
    }

    /// Serve until `token` is cancelled.
    pub async fn run(self, client: Client, token: CancellationToken) -> Result<(), Error> {
        let span =
            tracing::info_span!("ingress", node = %self.cfg.node_name, class = %self.cfg.class);
        self.run_inner(client, token).instrument(span).await
    }

    async fn run_inner(self, client: Client, token: CancellationToken) -> Result<(), Error> {
        let cfg = self.cfg.clone();
        let status_address = cfg.status_address.clone().or_else(|| {
            [self.http_addr(), self.https_addr()]
                .into_iter()
                .flatten()
                .map(|a| a.ip())
                .find(|ip| !ip.is_unspecified())
                .map(|ip| ip.to_string())
        });
        let all = ListParams::default();
        let ingresses = Reflector::spawn(Api::<Ingress>::all(client.clone()), all.clone());
        let classes = Reflector::spawn(Api::<IngressClass>::all(client.clone()), all.clone());
        let services = Reflector::spawn(Api::<Service>::all(client.clone()), all.clone());
        let slices = Reflector::spawn(Api::<EndpointSlice>::all(client.clone()), all.clone());
        let secrets = Reflector::spawn(
            Api::<Secret>::all(client.clone()),
            all.clone().fields("type=kubernetes.io/tls"),
        );
        let wait = Duration::from_secs(60);
        for ok in [
            ingresses.wait_until_ready(wait).await,
            classes.wait_until_ready(wait).await,
            services.wait_until_ready(wait).await,
            slices.wait_until_ready(wait).await,
            secrets.wait_until_ready(wait).await,
        ] {
            if !ok {
                return Err(Error::NotReady(wait));
            }
        }
        let shared = Arc::new(serve::Shared::new(cfg.timeouts));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = Arc::new(ArcSwap::from_pointee(tls::Certs::default()));
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(l) = self.http {
            tracing::info!(addr = ?l.local_addr().ok(), "serving HTTP");
            tasks.spawn(serve::serve_http(l, shared.clone(), token.clone()));
        }
        if let Some(l) = self.https {
            tracing::info!(addr = ?l.local_addr().ok(), "serving HTTPS");
            let config = tls::server_config(provider.clone(), certs.clone())?;
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            tasks.spawn(serve::serve_https(
                l,
                shared.clone(),
                acceptor,
                token.clone(),
            ));
        }
        if let Some(l) = self.admin {
            tracing::info!(addr = ?l.local_addr().ok(), "serving /metrics");
            tasks.spawn(serve::serve_admin(l, shared.clone(), token.clone()));
        }
        let status = status::Writer::new(client, status_address);
        let (ing_c, class_c, svc_c, slice_c, secret_c) = (
            ingresses.cache(),
            classes.cache(),
            services.cache(),
            slices.cache(),
            secrets.cache(),
        );
        let mut changes = [
            ing_c.changes(),
            class_c.changes(),
            svc_c.changes(),
            slice_c.changes(),
            secret_c.changes(),
        ];
        loop {
            for c in changes.iter_mut() {
                c.borrow_and_update();
            }
            let started = std::time::Instant::now();
            let classes = class_c.list();
            let served: Vec<Arc<Ingress>> = ing_c
                .list()
                .into_iter()
                .filter(|i| serves(i, &cfg.class, &classes))
                .collect();
            let table = table::compile(&table::Inputs {
                ingresses: &served,
                services: &svc_c.list(),
                slices: &slice_c.list(),
            });
            let new_certs = tls::build(&provider, &table.tls, |ns, name| secret_c.get(ns, name));
            let (routes, n_certs) = (table.routes, new_certs.len());
            shared.table.store(Arc::new(table));
            certs.store(Arc::new(new_certs));
            shared.metrics.routes.set(routes as i64);
            shared.metrics.table_builds.inc();
            tracing::debug!(
                ingresses = served.len(),
                routes,
                certificates = n_certs,
                took_us = started.elapsed().as_micros() as u64,
                "routing table swapped"
            );
            let status_retry = !status.sync(&served).await;
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(2)), if status_retry => {}
                _ = async {
                    let [a, b, c, d, e] = &mut changes;
                    tokio::select! {
                        _ = a.changed() => {}
                        _ = b.changed() => {}
                        _ = c.changed() => {}
                        _ = d.changed() => {}
                        _ = e.changed() => {}
                    }
                } => {
                    tokio::time::sleep(cfg.min_sync_interval).await;
                }
            }
        }
        tracing::info!("stopping: finishing requests in flight");
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// Whether this router serves `ing`, as Kubernetes' ingress controllers
/// decide: an Ingress whose `spec.ingressClassName` is `class`, when the
/// IngressClass of that name exists and names [`CONTROLLER`] in
/// `spec.controller`; one whose older `kubernetes.io/ingress.class`
/// annotation is `class` (the annotation names no IngressClass object); one
/// that names no class when the default IngressClass is `class` with our
/// controller, or when no class is marked default.
pub fn serves(ing: &Ingress, class: &str, classes: &[Arc<IngressClass>]) -> bool {
    let ours = |c: &IngressClass| c.metadata.name == class && c.spec.controller == CONTROLLER;
    if !ing.spec.ingress_class_name.is_empty() {
        return ing.spec.ingress_class_name == class && classes.iter().any(|c| ours(c));
    }
    match ing.class_name() {
        "" => {
            let mut defaults = classes.iter().filter(|c| c.is_default()).peekable();
            defaults.peek().is_none() || defaults.any(|c| ours(c))
        }
        annotated => annotated == class,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn ingress(class_name: &str, annotation: Option<&str>) -> Ingress {
        let mut meta = json!({"name": "i", "namespace": "default"});
        if let Some(a) = annotation {
            meta["annotations"] = json!({"kubernetes.io/ingress.class": a});
        }
        let mut spec = json!({});
        if !class_name.is_empty() {
            spec["ingressClassName"] = Value::from(class_name);
        }
        serde_json::from_value(json!({"metadata": meta, "spec": spec})).unwrap()
    }

    fn class(name: &str, controller: &str, default: bool) -> Arc<IngressClass> {
        let mut meta = json!({"name": name});
        if default {
            meta["annotations"] = json!({"ingressclass.kubernetes.io/is-default-class": "true"});
        }
        Arc::new(
            serde_json::from_value(json!({"metadata": meta, "spec": {"controller": controller}}))
                .unwrap(),
        )
    }

    const NGINX: &str = "k8s.io/ingress-nginx";

    #[test]
    fn a_named_class_is_served_when_it_is_ours_and_names_our_controller() {
        let ours = class("flotilla", CONTROLLER, false);
        let nginx = class("nginx", NGINX, false);
        let both = [ours.clone(), nginx.clone()];
        assert!(serves(&ingress("flotilla", None), "flotilla", &both));
        assert!(!serves(&ingress("nginx", None), "flotilla", &both));
        // Our name, another controller's class.
        let taken = [class("flotilla", NGINX, false)];
        assert!(!serves(&ingress("flotilla", None), "flotilla", &taken));
        // Our name, no such IngressClass.
        assert!(!serves(&ingress("flotilla", None), "flotilla", &[nginx]));
        // Another class of our controller belongs to another router.
        let other = [class("internal", CONTROLLER, false)];
        assert!(!serves(&ingress("internal", None), "flotilla", &other));
        // ingressClassName wins over the annotation.
        assert!(!serves(
            &ingress("nginx", Some("flotilla")),
            "flotilla",
            &both
        ));
    }

    #[test]
    fn the_old_annotation_is_matched_by_name() {
        assert!(serves(&ingress("", Some("flotilla")), "flotilla", &[]));
        let nginx_default = [class("nginx", NGINX, true)];
        assert!(serves(
            &ingress("", Some("flotilla")),
            "flotilla",
            &nginx_default
        ));
        assert!(!serves(&ingress("", Some("nginx")), "flotilla", &[]));
    }

    #[test]
    fn a_classless_ingress_goes_to_the_default_class() {
        let classless = ingress("", None);
        // No class marked default: served.
        assert!(serves(&classless, "flotilla", &[]));
        let plain = [
            class("flotilla", CONTROLLER, false),
            class("nginx", NGINX, false),
        ];
        assert!(serves(&classless, "flotilla", &plain));
        // Ours is the default.
        let ours = [
            class("flotilla", CONTROLLER, true),
            class("nginx", NGINX, false),
        ];
        assert!(serves(&classless, "flotilla", &ours));
        // Another controller's class is the default.
        let theirs = [
            class("flotilla", CONTROLLER, false),
            class("nginx", NGINX, true),
        ];
        assert!(!serves(&classless, "flotilla", &theirs));
        // The default has our name but another controller.
        let impostor = [class("flotilla", NGINX, true)];
        assert!(!serves(&classless, "flotilla", &impostor));
        // The default is another router's class of our controller.
        let sibling = [class("internal", CONTROLLER, true)];
        assert!(!serves(&classless, "flotilla", &sibling));
    }
}
