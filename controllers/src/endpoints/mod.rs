//! Endpoints: for each service, the addresses and ports of the pods behind
//! it, as Kubernetes' endpoints, EndpointSlice and EndpointSlice mirroring
//! controllers keep them, in one loop keyed by service.
//!
//! - A service with a selector gets an Endpoints object of its name (ready
//!   pods in `addresses`, the others in `notReadyAddresses`; terminating
//!   pods left out; `publishNotReadyAddresses` publishes every pod as
//!   ready) and EndpointSlices (`discovery.k8s.io/v1`, at most 100
//!   endpoints each) with each endpoint's ready, serving and terminating
//!   conditions. A target port by name is looked up in each pod's
//!   containers, so pods of one service may serve it on different numbers
//!   (one subset, or one slice, per set of ports).
//! - A service without a selector keeps the Endpoints its user writes;
//!   they are mirrored into slices, so that node proxies and the DNS read
//!   one kind.
//! - An ExternalName service has none (DNS answers it with a CNAME).
//!
//! Nothing is written when nothing changed: each pass compares with the
//! cache, and the slice plan ([`slices::plan`]) rewrites only the slices
//! whose endpoints moved.

pub mod slices;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_objects::api::{ApiError, DeleteParams, ObjectApi, Reason};
use flotilla_objects::core::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use flotilla_objects::discovery::{
    Endpoint, EndpointConditions, EndpointSlice, EndpointSlicePort, LABEL_MANAGED_BY,
    LABEL_SERVICE_NAME, MANAGED_BY_CONTROLLER,
};
use flotilla_objects::meta::IntOrString;
use flotilla_objects::selector::Selector;
use flotilla_objects::ObjectMeta;
use flotilla_runtime::informer::BY_NAMESPACE;
use flotilla_runtime::{
    Action, Controller, Informer, LeaderContext, LeaderLoop, ObjectRef, Reconciler,
};
use futures::future::BoxFuture;

use crate::pods::{is_ready, owner_ref, phase, written_revision, Freshness};
use slices::{Group, Owner};

pub const COMPONENT: &str = "endpoints-controller";
/// The manager of slices mirrored from user-written Endpoints.
pub const MANAGED_BY_MIRRORING: &str = "endpointslicemirroring-controller.k8s.io";
/// The label a headless service's endpoints carry.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Endpoints with this label set to "true" are not mirrored.
pub const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Index of the slice informer: by namespace and service name.
const BY_SERVICE: &str = "service";

/// The leader loop.
#[derive(Default)]
pub struct EndpointsLoop;

fn service_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

impl LeaderLoop for EndpointsLoop {
    fn name(&self) -> &'static str {
        COMPONENT
    }

    fn run(&self, ctx: LeaderContext) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let services = ctx.informers.get::<Service>();
            let pods = ctx.informers.get::<Pod>();
            let endpoints = ctx.informers.get::<Endpoints>();
            let slices = ctx.informers.get::<EndpointSlice>();
            slices.add_index(
                BY_SERVICE,
                Arc::new(|s: &EndpointSlice| {
                    s.service_name()
                        .map(|n| vec![service_key(&s.metadata.namespace, n)])
                        .unwrap_or_default()
                }),
            );
            let r = Arc::new(EndpointsController {
                api: ctx.api.clone(),
                services: services.clone(),
                pods: pods.clone(),
                endpoints: endpoints.clone(),
                slices: slices.clone(),
                fresh: Freshness::default(),
                fresh_endpoints: Freshness::default(),
            });
            // A pod maps to every service of its namespace that selects it.
            let svcs = services.clone();
            let of_pod = move |p: &Pod| -> Vec<ObjectRef> {
                svcs.by_index(BY_NAMESPACE, &p.metadata.namespace)
                    .iter()
                    .filter(|s| {
                        !s.spec.selector.is_empty()
                            && Selector::from_map(&s.spec.selector).matches(&p.metadata.labels)
                    })
                    .map(|s| ObjectRef::of(s.as_ref()))
                    .collect()
            };
            Controller::new(COMPONENT, services)
                .watches(pods, of_pod)
                .watches(endpoints, |e: &Endpoints| vec![ObjectRef::of(e)])
                .watches(slices, |s: &EndpointSlice| {
                    s.service_name()
                        .map(|n| vec![ObjectRef::new(&s.metadata.namespace, n)])
                        .unwrap_or_default()
                })
                .run(r, ctx.stop)
                .await
        })
    }
}

struct EndpointsController {
    api: Arc<dyn ObjectApi>,
    services: Informer<Service>,
    pods: Informer<Pod>,
    endpoints: Informer<Endpoints>,
    slices: Informer<EndpointSlice>,
    /// This loop's writes of slices, and of Endpoints: each waited for in
    /// its own cache before the service is looked at again.
    fresh: Freshness,
    fresh_endpoints: Freshness,
}

/// One pod's place behind a service.
struct Member<'a> {
    pod: &'a Pod,
    ready: bool,
    serving: bool,
    terminating: bool,
    /// The service's ports as this pod serves them.
    ports: Vec<EndpointPort>,
}

/// A service port's target on one pod: the number, or the container port
/// of that name and protocol (None when the pod has no such port).
fn target_port(sp: &ServicePort, pod: &Pod) -> Option<i32> {
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod
            .spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter())
            .find(|p| p.name == *name && (p.protocol.is_empty() || p.protocol == sp.protocol))
            .map(|p| p.container_port),
    }
}

fn members<'a>(svc: &Service, pods: &'a [Arc<Pod>]) -> Vec<Member<'a>> {
    let selector = Selector::from_map(&svc.spec.selector);
    let publish = svc.spec.publish_not_ready_addresses;
    let mut out = Vec::new();
    for pod in pods {
        if !selector.matches(&pod.metadata.labels)
            || pod.status.as_ref().is_none_or(|s| s.pod_ip.is_empty())
            || matches!(phase(pod), "Succeeded" | "Failed")
        {
            continue;
        }
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let serving = is_ready(pod);
        let ports = svc
            .spec
            .ports
            .iter()
            .filter_map(|sp| {
                target_port(sp, pod).map(|port| EndpointPort {
                    name: sp.name.clone(),
                    port,
                    protocol: sp.protocol.clone(),
                })
            })
            .collect();
        out.push(Member {
            pod,
            ready: publish || (serving && !terminating),
            serving: publish || serving,
            terminating,
            ports,
        });
    }
    out
}

/// A set of ports, comparable: (name, number, protocol) of each.
type PortsKey = Vec<(String, i32, String)>;
/// Slices are grouped by address type and ports.
type GroupKey = (String, PortsKey);

fn ports_key(ports: &[EndpointPort]) -> PortsKey {
    ports
        .iter()
        .map(|p| (p.name.clone(), p.port, p.protocol.clone()))
        .collect()
}

fn pod_ip(p: &Pod) -> &str {
    p.status.as_ref().map(|s| s.pod_ip.as_str()).unwrap_or("")
}

/// A pod's hostname under the service: set when the pod names the service
/// as its subdomain (what the cluster DNS publishes as
/// `<hostname>.<service>.<namespace>.svc`).
fn hostname(svc: &Service, p: &Pod) -> String {
    if !p.spec.hostname.is_empty() && p.spec.subdomain == svc.metadata.name {
        p.spec.hostname.clone()
    } else {
        String::new()
    }
}

fn pod_ref(p: &Pod) -> ObjectReference {
    ObjectReference {
        kind: "Pod".into(),
        namespace: p.metadata.namespace.clone(),
        name: p.metadata.name.clone(),
        uid: p.metadata.uid.clone(),
    }
}

/// The Endpoints subsets of a service: one per set of ports, addresses
/// sorted by IP. Terminating pods are left out unless not-ready addresses
/// are published.
fn subsets(svc: &Service, members: &[Member<'_>]) -> Vec<EndpointSubset> {
    let mut by_ports: BTreeMap<PortsKey, EndpointSubset> = BTreeMap::new();
    for m in members {
        if m.terminating && !svc.spec.publish_not_ready_addresses {
            continue;
        }
        if m.ports.is_empty() && !svc.spec.ports.is_empty() {
            continue;
        }
        let key = ports_key(&m.ports);
        let s = by_ports.entry(key).or_insert_with(|| EndpointSubset {
            ports: m.ports.clone(),
            ..Default::default()
        });
        let a = EndpointAddress {
            ip: pod_ip(m.pod).into(),
            hostname: hostname(svc, m.pod),
            node_name: m.pod.spec.node_name.clone(),
            target_ref: Some(pod_ref(m.pod)),
        };
        if m.ready {
            s.addresses.push(a);
        } else {
            s.not_ready_addresses.push(a);
        }
    }
    let mut out: Vec<EndpointSubset> = by_ports.into_values().collect();
    for s in &mut out {
        s.addresses.sort_by(|a, b| a.ip.cmp(&b.ip));
        s.not_ready_addresses.sort_by(|a, b| a.ip.cmp(&b.ip));
        s.ports.sort_by(|a, b| a.name.cmp(&b.name));
    }
    out
}

fn address_type(ip: &str) -> &'static str {
    if ip.contains(':') {
        "IPv6"
    } else {
        "IPv4"
    }
}

fn slice_ports(ports: &[EndpointPort]) -> Vec<EndpointSlicePort> {
    let mut v: Vec<EndpointSlicePort> = ports
        .iter()
        .map(|p| EndpointSlicePort {
            name: Some(p.name.clone()),
            protocol: Some(p.protocol.clone()),
            port: Some(p.port),
            app_protocol: None,
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Slice groups of a service with a selector: every member, terminating
/// ones too (with their conditions), by address type and ports.
fn pod_groups(svc: &Service, members: &[Member<'_>]) -> Vec<Group> {
    let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
    for m in members {
        if m.ports.is_empty() && !svc.spec.ports.is_empty() {
            continue;
        }
        let ip = pod_ip(m.pod);
        let at = address_type(ip);
        let key = (at.to_string(), ports_key(&m.ports));
        let g = groups.entry(key).or_insert_with(|| Group {
            address_type: at.into(),
            ports: slice_ports(&m.ports),
            endpoints: Vec::new(),
        });
        let host = hostname(svc, m.pod);
        g.endpoints.push(Endpoint {
            addresses: vec![ip.into()],
            conditions: EndpointConditions {
                ready: Some(m.ready),
                serving: Some(m.serving),
                terminating: Some(m.terminating),
            },
            hostname: (!host.is_empty()).then_some(host),
            target_ref: Some(pod_ref(m.pod)),
            node_name: (!m.pod.spec.node_name.is_empty()).then(|| m.pod.spec.node_name.clone()),
            zone: None,
        });
    }
    groups.into_values().collect()
}

/// Slice groups mirrored from user-written Endpoints.
fn mirrored_groups(e: &Endpoints) -> Vec<Group> {
    let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
    for s in &e.subsets {
        for (list, ready) in [(&s.addresses, true), (&s.not_ready_addresses, false)] {
            for a in list {
                let at = address_type(&a.ip);
                let key = (at.to_string(), ports_key(&s.ports));
                let g = groups.entry(key).or_insert_with(|| Group {
                    address_type: at.into(),
                    ports: slice_ports(&s.ports),
                    endpoints: Vec::new(),
                });
                if g.endpoints.iter().any(|x| x.addresses[0] == a.ip) {
                    continue;
                }
                g.endpoints.push(Endpoint {
                    addresses: vec![a.ip.clone()],
                    conditions: EndpointConditions {
                        ready: Some(ready),
                        serving: Some(ready),
                        terminating: Some(false),
                    },
                    hostname: (!a.hostname.is_empty()).then(|| a.hostname.clone()),
                    target_ref: a.target_ref.clone(),
                    node_name: (!a.node_name.is_empty()).then(|| a.node_name.clone()),
                    zone: None,
                });
            }
        }
    }
    groups.into_values().collect()
}

fn headless(svc: &Service) -> bool {
    svc.spec.cluster_ip == "None"
}

/// The labels a service's endpoints and slices carry: the service's own,
/// and the headless marker.
fn labels_of(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.metadata.labels.clone();
    l.remove(LABEL_SERVICE_NAME);
    l.remove(LABEL_MANAGED_BY);
    if headless(svc) {
        l.insert(LABEL_HEADLESS.into(), String::new());
    } else {
        l.remove(LABEL_HEADLESS);
    }
    l
}

impl EndpointsController {
    /// This service's slices, by manager.
    fn slices_of(&self, key: &ObjectRef, manager: &str) -> Vec<Arc<EndpointSlice>> {
        self.slices
            .by_index(BY_SERVICE, &service_key(&key.namespace, &key.name))
            .into_iter()
            .filter(|s| {
                s.metadata.labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(manager)
            })
            .collect()
    }

    async fn delete_slices(&self, key: &ObjectRef, names: &[String]) -> Result<(), ApiError> {
        for n in names {
            match self
                .api
                .delete(
                    "endpointslices",
                    &key.namespace,
                    n,
                    &DeleteParams::default(),
                )
                .await
            {
                Ok((v, _)) => self.fresh.note(key, written_revision(&v)),
                Err(e) if e.is(Reason::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn apply_plan(&self, key: &ObjectRef, plan: slices::Plan) -> Result<(), ApiError> {
        // Deletes first, so that a slice's endpoints are never counted twice.
        self.delete_slices(key, &plan.delete).await?;
        for s in plan.update {
            let v = serde_json::to_value(&s).map_err(|e| ApiError::internal(e.to_string()))?;
            let w = self
                .api
                .update("endpointslices", &key.namespace, v, false, false)
                .await?;
            self.fresh.note(key, written_revision(&w.object));
        }
        for s in plan.create {
            let v = serde_json::to_value(&s).map_err(|e| ApiError::internal(e.to_string()))?;
            let w = self
                .api
                .create("endpointslices", &key.namespace, v, false)
                .await?;
            self.fresh.note(key, written_revision(&w.object));
        }
        Ok(())
    }

    /// The slices of `manager` hold `groups`; the other manager's go.
    async fn sync_slices(
        &self,
        key: &ObjectRef,
        svc: &Service,
        manager: &str,
        groups: Vec<Group>,
    ) -> Result<(), ApiError> {
        let other = if manager == MANAGED_BY_CONTROLLER {
            MANAGED_BY_MIRRORING
        } else {
            MANAGED_BY_CONTROLLER
        };
        let stale: Vec<String> = self
            .slices_of(key, other)
            .iter()
            .map(|s| s.metadata.name.clone())
            .collect();
        self.delete_slices(key, &stale).await?;
        let owner = Owner {
            namespace: &key.namespace,
            service: &key.name,
            managed_by: manager,
            labels: labels_of(svc),
            owner: owner_ref(svc),
        };
        let plan = slices::plan(&owner, groups, &self.slices_of(key, manager));
        if !plan.is_empty() {
            tracing::debug!(service = %key, create = plan.create.len(), update = plan.update.len(), delete = plan.delete.len(), "endpoint slices");
        }
        self.apply_plan(key, plan).await
    }

    /// Write the service's Endpoints if they differ from the cache's.
    async fn sync_endpoints(
        &self,
        key: &ObjectRef,
        svc: &Service,
        subsets: Vec<EndpointSubset>,
    ) -> Result<(), ApiError> {
        let labels = labels_of(svc);
        let existing = self.endpoints.get_ref(key);
        if let Some(e) = &existing {
            if e.subsets == subsets && e.metadata.labels == labels {
                return Ok(());
            }
        }
        let want = Endpoints {
            api_version: "v1".into(),
            kind: "Endpoints".into(),
            metadata: ObjectMeta {
                name: key.name.clone(),
                namespace: key.namespace.clone(),
                labels,
                resource_version: existing
                    .as_ref()
                    .map(|e| e.metadata.resource_version.clone())
                    .unwrap_or_default(),
                annotations: existing
                    .as_ref()
                    .map(|e| e.metadata.annotations.clone())
                    .unwrap_or_default(),
                ..Default::default()
            },
            subsets,
        };
        let v = serde_json::to_value(&want).map_err(|e| ApiError::internal(e.to_string()))?;
        let w = if existing.is_some() {
            self.api
                .update("endpoints", &key.namespace, v, false, false)
                .await?
        } else {
            self.api
                .create("endpoints", &key.namespace, v, false)
                .await?
        };
        self.fresh_endpoints.note(key, written_revision(&w.object));
        Ok(())
    }

    async fn gone(&self, key: &ObjectRef) -> Result<Action, ApiError> {
        // The slices carry the service as owner (the garbage collector
        // would take them too); the Endpoints object goes with its service.
        let mut names: Vec<String> = self
            .slices_of(key, MANAGED_BY_CONTROLLER)
            .iter()
            .map(|s| s.metadata.name.clone())
            .collect();
        names.extend(
            self.slices_of(key, MANAGED_BY_MIRRORING)
                .iter()
                .map(|s| s.metadata.name.clone()),
        );
        self.delete_slices(key, &names).await?;
        if self.endpoints.get_ref(key).is_some() {
            match self
                .api
                .delete(
                    "endpoints",
                    &key.namespace,
                    &key.name,
                    &DeleteParams::default(),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.is(Reason::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Action::Await)
    }

    async fn sync(&self, key: &ObjectRef, svc: &Service) -> Result<Action, ApiError> {
        if svc.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Await);
        }
        if svc.spec.type_ == "ExternalName" {
            let names: Vec<String> = self
                .slices_of(key, MANAGED_BY_CONTROLLER)
                .iter()
                .map(|s| s.metadata.name.clone())
                .collect();
            self.delete_slices(key, &names).await?;
            return Ok(Action::Await);
        }
        if svc.spec.selector.is_empty() {
            let groups = match self.endpoints.get_ref(key) {
                Some(e)
                    if e.metadata.labels.get(LABEL_SKIP_MIRROR).map(String::as_str)
                        == Some("true") =>
                {
                    return Ok(Action::Await)
                }
                Some(e) => mirrored_groups(&e),
                None => Vec::new(),
            };
            self.sync_slices(key, svc, MANAGED_BY_MIRRORING, groups)
                .await?;
            return Ok(Action::Await);
        }
        let pods = self.pods.by_index(BY_NAMESPACE, &key.namespace);
        let members = members(svc, &pods);
        self.sync_endpoints(key, svc, subsets(svc, &members))
            .await?;
        self.sync_slices(key, svc, MANAGED_BY_CONTROLLER, pod_groups(svc, &members))
            .await?;
        Ok(Action::Await)
    }
}

#[async_trait::async_trait]
impl Reconciler<Service> for EndpointsController {
    type Error = ApiError;

    async fn reconcile(
        &self,
        key: &ObjectRef,
        obj: Option<Arc<Service>>,
    ) -> Result<Action, ApiError> {
        if !self
            .fresh
            .wait(key, &self.slices, Duration::from_secs(2))
            .await
            || !self
                .fresh_endpoints
                .wait(key, &self.endpoints, Duration::from_secs(2))
                .await
        {
            return Ok(Action::RequeueAfter(Duration::from_millis(100)));
        }
        // The service as cached now, after the wait.
        match obj.and_then(|_| self.services.get_ref(key)) {
            None => self.gone(key).await,
            Some(svc) => self.sync(key, &svc).await,
        }
    }
}

#[cfg(test)]
mod tests;
