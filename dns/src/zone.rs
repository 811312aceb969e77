//! The cluster zone as a table of names, kept up to date one service at a
//! time: a Service or EndpointSlice change recomputes that service's
//! records ([`crate::records`]) and rewrites only the names whose records
//! changed, so a change costs the same with ten services or ten thousand.
//!
//! Several sources may put records at one name (the namespace's
//! `<ns>.svc.<domain>` is an ancestor of all its services; two services
//! may share an endpoint address and so its PTR name): the zone keeps each
//! source's share of each name, and a name's published records are the
//! union of the shares; a name goes once no source holds it.
//!
//! Queries read the [`Table`] under a read lock held for one lookup; the
//! writer holds the write lock only to swap in the names it recomputed.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use flotilla_objects::core::Service;
use flotilla_objects::discovery::EndpointSlice;

pub use crate::records::{
    ip_label, key_of, parse_ip_label, reverse_key, Node, Records, Srv, SCHEMA_VERSION,
};
use crate::records::{service_records, zone_records};

/// Where a name's records come from: a service (namespace, name), or the
/// zone itself (two empty strings).
pub type Source = (String, String);

/// The names queries are answered from.
#[derive(Debug, Default)]
pub struct Table {
    /// Lower-case names, without the trailing dot.
    nodes: RwLock<HashMap<String, Arc<Node>>>,
    /// Bumped on every change (the SOA serial).
    serial: AtomicU32,
}

impl Table {
    /// The records at `key` (lower case, no final dot).
    pub fn get(&self, key: &str) -> Option<Arc<Node>> {
        self.read().get(key).cloned()
    }

    /// Whether the name exists.
    pub fn contains(&self, key: &str) -> bool {
        self.read().contains_key(key)
    }

    /// How many names there are.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The SOA serial.
    pub fn serial(&self) -> u32 {
        self.serial.load(Ordering::Relaxed)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Node>>> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every source's share of one name.
#[derive(Debug, Default)]
struct Shares {
    /// How many sources hold the name (with records or as an ancestor).
    holders: usize,
    /// The non-empty shares, by source (ordered, so answers are stable).
    records: BTreeMap<Source, Node>,
}

impl Shares {
    fn union(&self) -> Node {
        let mut n = Node::default();
        for r in self.records.values() {
            n.merge(r);
        }
        n
    }
}

/// The zone's writer: the shares behind the [`Table`] it publishes to.
pub struct Zone {
    domain: String,
    table: Arc<Table>,
    names: HashMap<String, Shares>,
    sources: HashMap<Source, Records>,
}

impl Zone {
    /// A zone `domain` (lower case, no final dot) holding its own records;
    /// `dns_ip` is its name server's address.
    pub fn new(domain: &str, dns_ip: IpAddr) -> Zone {
        let mut z = Zone {
            domain: domain.to_string(),
            table: Arc::new(Table::default()),
            names: HashMap::new(),
            sources: HashMap::new(),
        };
        z.set((String::new(), String::new()), zone_records(domain, dns_ip));
        z.table.serial.store(1, Ordering::Relaxed);
        z
    }

    /// The table queries read (the same one for the zone's lifetime).
    pub fn table(&self) -> Arc<Table> {
        self.table.clone()
    }

    /// The services that have records in the zone.
    pub fn services(&self) -> Vec<Source> {
        self.sources
            .keys()
            .filter(|s| !s.0.is_empty() || !s.1.is_empty())
            .cloned()
            .collect()
    }

    /// Put the records of service `(namespace, name)` as `svc` (None: it
    /// is gone) with its endpoint `slices`; true when any name changed.
    pub fn set_service(
        &mut self,
        namespace: &str,
        name: &str,
        svc: Option<&Service>,
        slices: &[&EndpointSlice],
    ) -> bool {
        let records = match svc {
            Some(s) => service_records(&self.domain, s, slices),
            None => Records::new(),
        };
        self.set((namespace.to_string(), name.to_string()), records)
    }

    /// Replace what `source` holds by `records`; true when any name changed.
    fn set(&mut self, source: Source, records: Records) -> bool {
        let old = self.sources.remove(&source).unwrap_or_default();
        let mut touched = Vec::new();
        for (key, node) in &old {
            if records.get(key) == Some(node) {
                continue;
            }
            if let Some(s) = self.names.get_mut(key) {
                s.holders -= 1;
                s.records.remove(&source);
            }
            touched.push(key.clone());
        }
        for (key, node) in &records {
            if old.get(key) == Some(node) {
                continue;
            }
            let s = self.names.entry(key.clone()).or_default();
            s.holders += 1;
            if !node.is_empty() {
                s.records.insert(source.clone(), node.clone());
            }
            if !old.contains_key(key) {
                touched.push(key.clone());
            }
        }
        if !records.is_empty() {
            self.sources.insert(source, records);
        }
        if touched.is_empty() {
            return false;
        }
        let mut publish = Vec::with_capacity(touched.len());
        for key in touched {
            match self.names.get(&key) {
                Some(s) if s.holders > 0 => {
                    let n = Arc::new(s.union());
                    publish.push((key, Some(n)));
                }
                _ => {
                    self.names.remove(&key);
                    publish.push((key, None));
                }
            }
        }
        let mut nodes = self.table.nodes.write().unwrap_or_else(|e| e.into_inner());
        for (key, node) in publish {
            match node {
                Some(n) => nodes.insert(key, n),
                None => nodes.remove(&key),
            };
        }
        drop(nodes);
        self.table.serial.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// The table of the zone `domain` (lower case, no final dot) holding
/// `services` with their endpoint `slices`, at SOA serial `serial`: the
/// zone [`Zone`] keeps up to date, made at once (for tests and tools).
pub fn build(
    domain: &str,
    dns_ip: IpAddr,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    serial: u32,
) -> Arc<Table> {
    let mut z = Zone::new(domain, dns_ip);
    for svc in services {
        let (ns, name) = (&svc.metadata.namespace, &svc.metadata.name);
        let ss: Vec<&EndpointSlice> = slices
            .iter()
            .filter(|s| s.metadata.namespace == *ns && s.service_name() == Some(name.as_str()))
            .map(|s| s.as_ref())
            .collect();
        z.set_service(ns, name, Some(svc), &ss);
    }
    z.table.serial.store(serial, Ordering::Relaxed);
    z.table()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_objects::discovery::Endpoint;

    fn svc(ns: &str, name: &str, ip: &str) -> Service {
        let mut s = Service::default();
        s.metadata.namespace = ns.into();
        s.metadata.name = name.into();
        s.spec.cluster_ip = ip.into();
        s
    }

    fn headless(ns: &str, name: &str) -> Service {
        svc(ns, name, "None")
    }

    fn slice(ns: &str, svc: &str, ips: &[&str]) -> EndpointSlice {
        let mut s = EndpointSlice::default();
        s.metadata.namespace = ns.into();
        s.metadata.name = format!("{svc}-x");
        s.metadata.labels.insert(
            flotilla_objects::discovery::LABEL_SERVICE_NAME.into(),
            svc.into(),
        );
        for ip in ips {
            s.endpoints.push(Endpoint {
                addresses: vec![ip.to_string()],
                ..Default::default()
            });
        }
        s
    }

    /// The table as sorted (name, records) pairs, to compare two tables.
    fn dump(t: &Table) -> Vec<(String, Node)> {
        let mut v: Vec<(String, Node)> = t
            .read()
            .iter()
            .map(|(k, n)| (k.clone(), (**n).clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn ip() -> IpAddr {
        "10.96.0.10".parse().unwrap()
    }

    #[test]
    fn changes_one_by_one_give_the_table_a_rebuild_gives() {
        let mut z = Zone::new("cluster.local", ip());
        let a = svc("shop", "a", "10.96.0.1");
        let b = svc("shop", "b", "10.96.0.2");
        let h = headless("shop", "h");
        let h2 = headless("other", "h2");
        assert!(z.set_service("shop", "a", Some(&a), &[]));
        assert!(z.set_service("shop", "b", Some(&b), &[]));
        // Two headless services sharing an endpoint address: one PTR name,
        // two targets.
        let sl = slice("shop", "h", &["10.244.0.5", "10.244.0.6"]);
        let sl2 = slice("other", "h2", &["10.244.0.5"]);
        assert!(z.set_service("shop", "h", Some(&h), &[&sl]));
        assert!(z.set_service("other", "h2", Some(&h2), &[&sl2]));
        // The same again changes nothing.
        let serial = z.table.serial();
        assert!(!z.set_service("shop", "a", Some(&a), &[]));
        assert_eq!(z.table.serial(), serial);
        let ptr = z.table.get("5.0.244.10.in-addr.arpa").unwrap();
        assert_eq!(ptr.ptr.len(), 2, "{ptr:?}");
        // An endpoint goes, a service goes.
        let sl = slice("shop", "h", &["10.244.0.6"]);
        assert!(z.set_service("shop", "h", Some(&h), &[&sl]));
        assert!(z.set_service("shop", "b", None, &[]));
        let want = build(
            "cluster.local",
            ip(),
            &[Arc::new(a), Arc::new(h), Arc::new(h2)],
            &[Arc::new(sl), Arc::new(sl2)],
            0,
        );
        assert_eq!(dump(&z.table), dump(&want));
        assert!(z.table.contains("shop.svc.cluster.local"));
        assert!(!z.table.contains("b.shop.svc.cluster.local"));
        assert_eq!(z.table.get("5.0.244.10.in-addr.arpa").unwrap().ptr.len(), 1);
        // The namespace's last service gone, its name goes too.
        z.set_service("other", "h2", None, &[]);
        assert!(!z.table.contains("other.svc.cluster.local"));
        assert!(!z.table.contains("5.0.244.10.in-addr.arpa"));
        assert!(z.table.contains("svc.cluster.local"));
        assert!(z.table.contains("cluster.local"));
        assert_eq!(z.services().len(), 2);
    }
}
