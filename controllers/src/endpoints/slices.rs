//! From the endpoints a service should have to the EndpointSlices that
//! hold them: a pure plan of what to create, update and delete, which
//! moves as few endpoints as it can (an endpoint stays in the slice it is
//! in; new ones fill slices with room before new slices are made), so
//! that a change to one pod rewrites one slice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use flotilla_objects::discovery::{
    Endpoint, EndpointSlice, EndpointSlicePort, LABEL_MANAGED_BY, LABEL_SERVICE_NAME,
    MAX_ENDPOINTS_PER_SLICE,
};
use flotilla_objects::{ObjectMeta, OwnerReference};

/// Endpoints that share an address type and ports: the content of one or
/// more slices.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// IPv4 or IPv6.
    pub address_type: String,
    pub ports: Vec<EndpointSlicePort>,
    pub endpoints: Vec<Endpoint>,
}

/// What the slices of one service need.
#[derive(Debug, Default)]
pub struct Plan {
    pub create: Vec<EndpointSlice>,
    /// Existing slices with new content (their resourceVersion kept, as a
    /// precondition).
    pub update: Vec<EndpointSlice>,
    /// Names of slices to delete.
    pub delete: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Who the slices belong to and the labels they carry.
pub struct Owner<'a> {
    pub namespace: &'a str,
    pub service: &'a str,
    pub managed_by: &'a str,
    /// The service's labels plus the controller's own.
    pub labels: BTreeMap<String, String>,
    pub owner: OwnerReference,
}

fn address(e: &Endpoint) -> &str {
    e.addresses.first().map(String::as_str).unwrap_or("")
}

/// What slices of one group share: address type and ports, as a key.
fn shape(address_type: &str, ports: &[EndpointSlicePort]) -> String {
    let ports: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{}/{}/{}/{}",
                p.name.as_deref().unwrap_or(""),
                p.protocol.as_deref().unwrap_or("TCP"),
                p.port.unwrap_or(0),
                p.app_protocol.as_deref().unwrap_or("")
            )
        })
        .collect();
    format!("{address_type} {}", ports.join(","))
}

fn sort_endpoints(v: &mut [Endpoint]) {
    v.sort_by(|a, b| address(a).cmp(address(b)));
}

impl Owner<'_> {
    fn labels(&self) -> BTreeMap<String, String> {
        let mut l = self.labels.clone();
        l.insert(LABEL_SERVICE_NAME.into(), self.service.into());
        l.insert(LABEL_MANAGED_BY.into(), self.managed_by.into());
        l
    }

    fn new_slice(&self, g: &Group, endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            api_version: "discovery.k8s.io/v1".into(),
            kind: "EndpointSlice".into(),
            metadata: ObjectMeta {
                generate_name: format!("{}-", self.service),
                namespace: self.namespace.into(),
                labels: self.labels(),
                owner_references: vec![self.owner.clone()],
                ..Default::default()
            },
            address_type: g.address_type.clone(),
            endpoints,
            ports: g.ports.clone(),
        }
    }
}

/// The plan that turns `existing` (this manager's slices of the service)
/// into slices holding `groups`. With no endpoints at all, one empty
/// slice stays (Kubernetes' placeholder), so that readers can tell a
/// service without endpoints from one not yet seen.
pub fn plan(owner: &Owner<'_>, mut groups: Vec<Group>, existing: &[Arc<EndpointSlice>]) -> Plan {
    if groups.iter().all(|g| g.endpoints.is_empty()) {
        groups = vec![Group {
            address_type: "IPv4".into(),
            ports: Vec::new(),
            endpoints: Vec::new(),
        }];
    }
    let labels = owner.labels();
    let mut out = Plan::default();
    let mut by_shape: HashMap<String, Vec<&Arc<EndpointSlice>>> = HashMap::new();
    for s in existing {
        by_shape
            .entry(shape(&s.address_type, &s.ports))
            .or_default()
            .push(s);
    }
    for g in &groups {
        let mut slices = by_shape
            .remove(&shape(&g.address_type, &g.ports))
            .unwrap_or_default();
        slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let mut wanted: BTreeMap<&str, &Endpoint> =
            g.endpoints.iter().map(|e| (address(e), e)).collect();
        // Each existing slice keeps the endpoints it has that are still wanted.
        let mut kept: Vec<Vec<Endpoint>> = slices
            .iter()
            .map(|s| {
                s.endpoints
                    .iter()
                    .filter_map(|e| wanted.remove(address(e)).cloned())
                    .collect()
            })
            .collect();
        // The rest fill slices with room, then new slices.
        let mut rest: Vec<Endpoint> = wanted.into_values().cloned().collect();
        for k in kept.iter_mut() {
            let room = MAX_ENDPOINTS_PER_SLICE.saturating_sub(k.len());
            let n = room.min(rest.len());
            k.extend(rest.drain(..n));
        }
        let placeholder = g.endpoints.is_empty();
        for (i, (s, mut eps)) in slices.iter().zip(kept).enumerate() {
            let keep = !eps.is_empty() || (placeholder && i == 0);
            if !keep {
                out.delete.push(s.metadata.name.clone());
                continue;
            }
            sort_endpoints(&mut eps);
            let owned = s.metadata.owner_references.contains(&owner.owner);
            if eps != s.endpoints || s.metadata.labels != labels || !owned {
                let mut n = EndpointSlice::clone(s);
                n.endpoints = eps;
                n.metadata.labels = labels.clone();
                if !owned {
                    n.metadata
                        .owner_references
                        .retain(|o| o.uid != owner.owner.uid);
                    n.metadata.owner_references.push(owner.owner.clone());
                }
                out.update.push(n);
            }
        }
        if placeholder && slices.is_empty() {
            out.create.push(owner.new_slice(g, Vec::new()));
        }
        for chunk in rest.chunks(MAX_ENDPOINTS_PER_SLICE) {
            let mut eps = chunk.to_vec();
            sort_endpoints(&mut eps);
            out.create.push(owner.new_slice(g, eps));
        }
    }
    // Slices of a shape no longer wanted.
    let mut gone: Vec<String> = by_shape
        .into_values()
        .flatten()
        .map(|s| s.metadata.name.clone())
        .collect();
    gone.sort();
    out.delete.extend(gone);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_objects::discovery::EndpointConditions;

    fn ep(ip: &str, ready: bool) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: EndpointConditions {
                ready: Some(ready),
                serving: Some(ready),
                terminating: Some(false),
            },
            ..Default::default()
        }
    }

    fn port(p: i32) -> Vec<EndpointSlicePort> {
        vec![EndpointSlicePort {
            name: Some(String::new()),
            protocol: Some("TCP".into()),
            port: Some(p),
            app_protocol: None,
        }]
    }

    fn owner() -> Owner<'static> {
        Owner {
            namespace: "default",
            service: "web",
            managed_by: "m",
            labels: BTreeMap::new(),
            owner: OwnerReference {
                uid: "u1".into(),
                name: "web".into(),
                kind: "Service".into(),
                ..Default::default()
            },
        }
    }

    /// Apply a plan the way the API would (names for created slices).
    fn applied(
        p: &Plan,
        existing: &[Arc<EndpointSlice>],
        next: &mut u32,
    ) -> Vec<Arc<EndpointSlice>> {
        let mut out: Vec<Arc<EndpointSlice>> = existing
            .iter()
            .filter(|s| !p.delete.contains(&s.metadata.name))
            .map(|s| {
                p.update
                    .iter()
                    .find(|u| u.metadata.name == s.metadata.name)
                    .map(|u| Arc::new(u.clone()))
                    .unwrap_or_else(|| s.clone())
            })
            .collect();
        for c in &p.create {
            let mut c = c.clone();
            *next += 1;
            c.metadata.name = format!("web-{next:03}");
            out.push(Arc::new(c));
        }
        out
    }

    fn group(ips: impl Iterator<Item = String>, p: i32) -> Group {
        Group {
            address_type: "IPv4".into(),
            ports: port(p),
            endpoints: ips.map(|ip| ep(&ip, true)).collect(),
        }
    }

    #[test]
    fn slices_hold_at_most_100_and_a_change_rewrites_one_slice() {
        let o = owner();
        let ips = |n: u32| (0..n).map(|i| format!("10.0.{}.{}", i / 200, i % 200 + 1));
        let mut next = 0;
        let p = plan(&o, vec![group(ips(250), 80)], &[]);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (3, 0, 0));
        assert!(p
            .create
            .iter()
            .all(|s| s.endpoints.len() <= MAX_ENDPOINTS_PER_SLICE));
        let s1 = applied(&p, &[], &mut next);
        assert_eq!(s1.iter().map(|s| s.endpoints.len()).sum::<usize>(), 250);
        let l = &s1[0].metadata.labels;
        assert_eq!(l[LABEL_SERVICE_NAME], "web");
        assert_eq!(l[LABEL_MANAGED_BY], "m");

        // Nothing changed: nothing to do.
        assert!(plan(&o, vec![group(ips(250), 80)], &s1).is_empty());

        // One endpoint goes unready: one slice is rewritten.
        let mut g = group(ips(250), 80);
        g.endpoints[130].conditions.ready = Some(false);
        let p = plan(&o, vec![g], &s1);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));

        // One removed and one added: the new one takes the free place, so
        // only that slice is rewritten.
        let mut g = group(ips(250), 80);
        g.endpoints.remove(5);
        g.endpoints.push(ep("10.9.9.9", true));
        let p = plan(&o, vec![g], &s1);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        assert!(p.update[0]
            .endpoints
            .iter()
            .any(|e| e.addresses[0] == "10.9.9.9"));
        assert_eq!(p.update[0].endpoints.len(), MAX_ENDPOINTS_PER_SLICE);

        // The port changes: new slices, the old ones go.
        let p = plan(&o, vec![group(ips(250), 8080)], &s1);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (3, 0, 3));
    }

    #[test]
    fn no_endpoints_leaves_one_placeholder() {
        let o = owner();
        let mut next = 0;
        let s1 = applied(
            &plan(
                &o,
                vec![group((0..3).map(|i| format!("10.0.0.{i}")), 80)],
                &[],
            ),
            &[],
            &mut next,
        );
        let p = plan(&o, vec![], &s1);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (1, 0, 1));
        let s2 = applied(&p, &s1, &mut next);
        assert_eq!(s2.len(), 1);
        assert!(s2[0].endpoints.is_empty() && s2[0].ports.is_empty());
        assert!(
            plan(&o, vec![], &s2).is_empty(),
            "the placeholder is stable"
        );
    }
}
