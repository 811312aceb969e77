//! nftables mode: the kernel DNATs as in iptables mode, but the rules live
//! in a table of Flotilla's own (`ip flotilla`, [`rules`]) written with
//! `nft -f`, one atomic transaction per sync.
//!
//! Why a mode of its own: with iptables, a change is never small. The
//! legacy ip_tables interface replaces a whole table per restore, and
//! `iptables-nft` reads the table back first, so that at 10,000 services
//! one endpoint's change took 0.3-0.7 s to go live (bench/RESULTS.md);
//! kube-proxy grew its nftables mode for the same reason. Here a service
//! address is an element of a verdict map, and a service port a few
//! elements (or, with affinity or a Local policy, a small chain), so after
//! the first sync a change writes only the chains and elements that differ
//! from the last sync ([`Writer::sync`]).
//!
//! Nothing outside the table is touched: other programs' tables and
//! iptables rules stay as they are, and `--cleanup` deletes the table.

pub mod rules;

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::iptables::{run, SyncStats};
use crate::Error;
use rules::{is_generated, Part, Ruleset, BASE_CHAINS, ELEMENT_SETS, TABLE};

/// Keeps the kernel's `ip flotilla` table equal to the last [`Ruleset`]
/// given.
pub struct Writer {
    netns: Option<PathBuf>,
    last: Option<Written>,
}

/// An element: its map or set and its key.
type ElementKey = (&'static str, String);

/// What the kernel holds after the last sync.
struct Written {
    rules: Ruleset,
    /// Each element's claimants: port -> value. The first port has it
    /// (as in [`Ruleset::flat`]).
    owners: BTreeMap<ElementKey, BTreeMap<String, String>>,
}

impl Written {
    fn new(rules: Ruleset) -> Written {
        let mut w = Written {
            rules: Ruleset::default(),
            owners: BTreeMap::new(),
        };
        for (port, part) in &rules.ports {
            w.claim(port, part);
        }
        w.rules = rules;
        w
    }

    /// `port` claims each element of `part`.
    fn claim(&mut self, port: &str, part: &Part) {
        for (set, items) in &part.elements {
            for (k, v) in items {
                self.owners
                    .entry((*set, k.clone()))
                    .or_default()
                    .insert(port.to_string(), v.clone());
            }
        }
    }

    /// `port` gives up each element of `part`.
    fn release(&mut self, port: &str, part: &Part) {
        for (set, items) in &part.elements {
            for k in items.keys() {
                let key = (*set, k.clone());
                if let Some(m) = self.owners.get_mut(&key) {
                    m.remove(port);
                    if m.is_empty() {
                        self.owners.remove(&key);
                    }
                }
            }
        }
    }

    fn holder(&self, key: &ElementKey) -> Option<String> {
        self.owners
            .get(key)
            .and_then(|m| m.values().next())
            .cloned()
    }

    /// The script from what is written to `want`, and what it rewrites and
    /// removes; `self` becomes `want`. Ports whose part is the same
    /// [`Arc`] as last time are skipped without a look inside: the work is
    /// in proportion to the ports that changed.
    fn change_to(&mut self, want: Ruleset) -> (String, usize, usize) {
        let changed = changed_ports(&self.rules, &want);
        let (mut old, mut new) = (Part::default(), Part::default());
        // The fixed part changes with the pod range (the shared chains'
        // masquerade rule); it has chains, and maps without elements.
        if !std::sync::Arc::ptr_eq(&self.rules.fixed, &want.fixed) && self.rules.fixed != want.fixed
        {
            old.merge_chains(&self.rules.fixed);
            new.merge_chains(&want.fixed);
        }
        let mut touched: BTreeMap<ElementKey, Option<String>> = BTreeMap::new();
        for port in &changed {
            for part in [self.rules.ports.get(port), want.ports.get(port)]
                .into_iter()
                .flatten()
            {
                for (set, items) in &part.elements {
                    for k in items.keys() {
                        let key = (*set, k.clone());
                        if let Entry::Vacant(e) = touched.entry(key) {
                            let before = self.holder(e.key());
                            e.insert(before);
                        }
                    }
                }
            }
        }
        for port in &changed {
            if let Some(part) = self.rules.ports.get(port).cloned() {
                old.merge_chains(&part);
                self.release(port, &part);
            }
            if let Some(part) = want.ports.get(port) {
                new.merge_chains(part);
                self.claim(port, part);
            }
        }
        for (key, before) in touched {
            let after = self.holder(&key);
            if before == after {
                continue;
            }
            let (set, k) = key;
            if let Some(v) = before {
                old.elements.entry(set).or_default().insert(k.clone(), v);
            }
            if let Some(v) = after {
                new.elements.entry(set).or_default().insert(k, v);
            }
        }
        self.rules = want;
        incremental_script(&old, &new)
    }
}

/// Keys of the ports added, removed or changed from `a` to `b`.
fn changed_ports(a: &Ruleset, b: &Ruleset) -> Vec<String> {
    let mut out = Vec::new();
    let (mut x, mut y) = (a.ports.iter().peekable(), b.ports.iter().peekable());
    loop {
        match (x.peek(), y.peek()) {
            (None, None) => return out,
            (Some((k, _)), None) => {
                out.push((*k).clone());
                x.next();
            }
            (None, Some((k, _))) => {
                out.push((*k).clone());
                y.next();
            }
            (Some((ka, pa)), Some((kb, pb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    out.push((*ka).clone());
                    x.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push((*kb).clone());
                    y.next();
                }
                std::cmp::Ordering::Equal => {
                    if !std::sync::Arc::ptr_eq(pa, pb) && pa != pb {
                        out.push((*ka).clone());
                    }
                    x.next();
                    y.next();
                }
            },
        }
    }
}

/// Whether `e` says that the table (or `nft` itself) is not there.
fn is_absent(e: &Error) -> bool {
    e.to_string().contains("No such file or directory")
}

/// The table's chains and sets, per `nft -t list table` (empty when there
/// is no table; an error when it cannot be read).
async fn existing(netns: Option<&Path>) -> Result<(BTreeSet<String>, BTreeSet<String>), Error> {
    let (mut chains, mut sets) = (BTreeSet::new(), BTreeSet::new());
    let args = ["-t", "list", "table", "ip", "flotilla"];
    let text = match run(netns, "nft", &args, None).await {
        Ok(text) => text,
        Err(e) if is_absent(&e) => return Ok((chains, sets)),
        Err(e) => return Err(e),
    };
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("chain"), Some(n), Some("{")) => {
                chains.insert(n.to_string());
            }
            (Some("set" | "map"), Some(n), Some("{")) => {
                sets.insert(n.to_string());
            }
            _ => {}
        }
    }
    Ok((chains, sets))
}

fn affinity_set(out: &mut String, name: &str, secs: u32) {
    let _ = writeln!(
        out,
        "add set {TABLE} {name} {{ type ipv4_addr; flags dynamic,timeout; timeout {secs}s; }}"
    );
}

/// `chain { rules }` blocks inside one `table` block: adds the chains that
/// are missing, then the rules (after a flush, the chain's only ones).
fn chain_blocks<'a>(out: &mut String, chains: impl Iterator<Item = (&'a String, &'a Vec<String>)>) {
    let mut any = false;
    for (name, rules) in chains {
        if !any {
            let _ = writeln!(out, "table {TABLE} {{");
            any = true;
        }
        let _ = writeln!(out, "\tchain {name} {{");
        for r in rules {
            let _ = writeln!(out, "\t\t{r}");
        }
        out.push_str("\t}\n");
    }
    if any {
        out.push_str("}\n");
    }
}

/// `add element` (or `delete element`) of `items` into `set`, in one command.
fn elements<'a>(
    out: &mut String,
    verb: &str,
    set: &str,
    items: impl Iterator<Item = (&'a String, &'a String)>,
) {
    let mut first = true;
    for (k, v) in items {
        if first {
            let _ = write!(out, "{verb} element {TABLE} {set} {{ ");
            first = false;
        } else {
            out.push_str(", ");
        }
        out.push_str(k);
        if !v.is_empty() && verb == "add" {
            let _ = write!(out, " : {v}");
        }
    }
    if !first {
        out.push_str(" }\n");
    }
}

/// `verb` (add or delete) each element of `from` that `other` lacks or
/// holds with another value: deletes are `element_changes(last, want)`,
/// adds `element_changes(want, last)`.
fn element_changes(out: &mut String, verb: &str, from: &Part, other: &Part) {
    let empty = BTreeMap::new();
    for (set, _) in ELEMENT_SETS {
        let (a, b) = (
            from.elements.get(set).unwrap_or(&empty),
            other.elements.get(set).unwrap_or(&empty),
        );
        let differing = a.iter().filter(|(k, v)| b.get(*k) != Some(*v));
        elements(out, verb, set, differing);
    }
}

/// The whole table: declarations, a flush of every rule and element
/// (affinity sets keep their clients), every chain and element, and the
/// deletion of per-service chains and sets that are not wanted.
fn full_script(want: &Part, chains: &BTreeSet<String>, sets: &BTreeSet<String>) -> (String, usize) {
    let mut out = format!("add table {TABLE}\ntable {TABLE} {{\n");
    for (_, decl) in ELEMENT_SETS {
        let _ = writeln!(out, "\t{decl}");
    }
    for (name, decl, _) in BASE_CHAINS {
        let _ = writeln!(out, "\tchain {name} {{ {decl} }}");
    }
    out.push_str("}\n");
    let _ = writeln!(out, "flush table {TABLE}");
    for (name, decl) in ELEMENT_SETS {
        let kind = if decl.starts_with("map") {
            "map"
        } else {
            "set"
        };
        let _ = writeln!(out, "flush {kind} {TABLE} {name}");
    }
    for (name, secs) in &want.affinity_sets {
        affinity_set(&mut out, name, *secs);
    }
    chain_blocks(&mut out, want.chains.iter());
    // The hooks last: they jump to chains made just above.
    let _ = writeln!(out, "table {TABLE} {{");
    for (name, _, rule) in BASE_CHAINS {
        let _ = writeln!(out, "\tchain {name} {{\n\t\t{rule}\n\t}}");
    }
    out.push_str("}\n");
    for (set, items) in &want.elements {
        elements(&mut out, "add", set, items.iter());
    }
    let stale_chains: Vec<&String> = chains
        .iter()
        .filter(|c| is_generated(c) && !want.chains.contains_key(*c))
        .collect();
    for c in &stale_chains {
        let _ = writeln!(out, "delete chain {TABLE} {c}");
    }
    for s in sets
        .iter()
        .filter(|s| is_generated(s) && !want.affinity_sets.contains_key(*s))
    {
        let _ = writeln!(out, "delete set {TABLE} {s}");
    }
    (out, stale_chains.len())
}

/// What changed from `last` to `want`, in an order the kernel accepts
/// within one transaction: elements that go (or change) are deleted, new
/// chains and sets added, changed chains flushed and refilled, new
/// elements added, and chains that go flushed (so that none still jumps
/// to another) and then deleted with their sets.
fn incremental_script(last: &Part, want: &Part) -> (String, usize, usize) {
    let mut out = String::new();
    element_changes(&mut out, "delete", last, want);
    for (name, secs) in &want.affinity_sets {
        if last.affinity_sets.get(name) != Some(secs) {
            affinity_set(&mut out, name, *secs);
        }
    }
    let changed: Vec<(&String, &Vec<String>)> = want
        .chains
        .iter()
        .filter(|(n, r)| last.chains.get(*n) != Some(*r))
        .collect();
    for (name, _) in &changed {
        if last.chains.contains_key(*name) {
            let _ = writeln!(out, "flush chain {TABLE} {name}");
        }
    }
    chain_blocks(&mut out, changed.iter().copied());
    element_changes(&mut out, "add", want, last);
    let gone: Vec<&String> = last
        .chains
        .keys()
        .filter(|n| !want.chains.contains_key(*n))
        .collect();
    for name in &gone {
        let _ = writeln!(out, "flush chain {TABLE} {name}");
    }
    for name in &gone {
        let _ = writeln!(out, "delete chain {TABLE} {name}");
    }
    for name in last.affinity_sets.keys() {
        if !want.affinity_sets.contains_key(name) {
            let _ = writeln!(out, "delete set {TABLE} {name}");
        }
    }
    (out, changed.len(), gone.len())
}

impl Writer {
    pub fn new(netns: Option<PathBuf>) -> Writer {
        Writer { netns, last: None }
    }

    /// Forget what was written: the next sync is a full one.
    pub fn force_full(&mut self) {
        self.last = None;
    }

    /// Make the kernel's table `want`.
    pub async fn sync(&mut self, want: Ruleset) -> Result<SyncStats, Error> {
        let ns = self.netns.as_deref();
        let full = self.last.is_none();
        let (script, written, removed) = match &mut self.last {
            Some(last) => last.change_to(want),
            None => {
                let (chains, sets) = existing(ns).await?;
                let flat = want.flat();
                let (s, removed) = full_script(&flat, &chains, &sets);
                self.last = Some(Written::new(want));
                (s, flat.chains.len(), removed)
            }
        };
        let mut stats = SyncStats {
            full,
            chains_written: written,
            chains_removed: removed,
            payload_bytes: script.len(),
            kernel: std::time::Duration::ZERO,
        };
        if !script.is_empty() {
            let started = std::time::Instant::now();
            let r = run(ns, "nft", &["-f", "-"], Some(&script)).await;
            stats.kernel = started.elapsed();
            if let Err(e) = r {
                // The transaction did not apply, but what was written
                // before may not be what `last` says: write all next time.
                self.last = None;
                return Err(e);
            }
        }
        Ok(stats)
    }
}

/// Delete the table (1 when there was one; 0 without a table or `nft`).
pub async fn cleanup(netns: Option<&Path>) -> Result<usize, Error> {
    match run(netns, "nft", &["delete", "table", "ip", "flotilla"], None).await {
        Ok(_) => Ok(1),
        Err(e) if is_absent(&e) => Ok(0),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::rules::{nftables_mode, Renderer, HAIRPIN, SERVICE_IPS};
    use super::*;
    use crate::model::{Ep, Proto, SvcPort};
    use std::net::Ipv4Addr;

    fn svc(i: u8, eps: &[u8], affinity: bool) -> SvcPort {
        SvcPort {
            key: format!("default/s{i}:http"),
            proto: Proto::Tcp,
            cluster_ip: Ipv4Addr::new(10, 96, 0, i),
            port: 80,
            node_port: None,
            external_ips: vec![],
            lb_ips: vec![],
            affinity: affinity.then_some(30),
            external_local: false,
            internal_local: false,
            endpoints: eps
                .iter()
                .map(|e| Ep {
                    ip: Ipv4Addr::new(10, 244, 0, *e),
                    port: 8080,
                    local: false,
                })
                .collect(),
        }
    }

    /// The script from `before` to `after`, through one renderer.
    fn change(before: &[SvcPort], after: &[SvcPort]) -> (String, usize, usize) {
        let mut r = Renderer::default();
        let mut w = Written::new(r.render(before, None));
        w.change_to(r.render(after, None))
    }

    #[test]
    fn one_endpoints_change_is_a_change_of_its_elements_only() {
        let before: Vec<SvcPort> = (1..=50).map(|i| svc(i, &[i, i + 100], false)).collect();
        let mut after = before.clone();
        after[7].endpoints[1].ip = Ipv4Addr::new(10, 244, 1, 1);
        let (script, written, removed) = change(&before, &after);
        assert_eq!((written, removed), (0, 0), "{script}");
        assert_eq!(
            script,
            "delete element ip flotilla hairpin { 10.244.0.108 . 10.244.0.108 }\n\
             delete element ip flotilla endpoints-tcp { 10.96.0.8 . 80 . 1 }\n\
             add element ip flotilla hairpin { 10.244.1.1 . 10.244.1.1 }\n\
             add element ip flotilla endpoints-tcp { 10.96.0.8 . 80 . 1 : 10.244.1.1 . 8080 }\n"
        );
        assert_eq!(change(&after, &after).0, "", "no change, no script");
        // A third endpoint: the address moves to the shared chain for 3.
        after[7].endpoints.push(Ep {
            ip: Ipv4Addr::new(10, 244, 1, 2),
            port: 8080,
            local: false,
        });
        let (script, _, _) = change(&before, &after);
        assert!(
            script.contains("delete element ip flotilla service-ips { 10.96.0.8 . tcp . 80 }"),
            "{script}"
        );
        assert!(
            script.contains(
                "add element ip flotilla service-ips { 10.96.0.8 . tcp . 80 : goto lb-3 }"
            ),
            "{script}"
        );
    }

    #[test]
    fn a_service_losing_its_endpoints_moves_to_the_reject_map_and_drops_its_chain() {
        let (script, written, removed) = change(&[svc(1, &[5], true)], &[svc(1, &[], true)]);
        assert_eq!((written, removed), (0, 2), "{script}");
        let lines: Vec<&str> = script.lines().collect();
        let pos = |p: &str| {
            lines
                .iter()
                .position(|l| l.starts_with(p))
                .unwrap_or_else(|| panic!("no {p} in {script}"))
        };
        // The element that leads to the chain goes before the chain does,
        // and every chain is flushed before any is deleted.
        assert!(pos("delete element ip flotilla service-ips") < pos("flush chain"));
        assert!(pos("add element ip flotilla no-endpoint-services") < pos("delete chain"));
        assert!(script.rfind("flush chain") < script.find("delete chain"));
        assert!(pos("delete set ip flotilla aff-") > pos("delete chain"));
        assert!(script.contains("delete element ip flotilla hairpin { 10.244.0.5 . 10.244.0.5 }"));
    }

    #[test]
    fn an_element_two_ports_claim_passes_to_the_other_when_the_first_goes() {
        // Two services on one external IP and port, and one endpoint
        // address (the hairpin element) in both.
        let mut a = svc(1, &[5], false);
        let mut b = svc(2, &[5, 6], false);
        let ext = Ipv4Addr::new(192, 0, 2, 1);
        a.external_ips = vec![ext];
        b.external_ips = vec![ext];
        let both = [a.clone(), b.clone()];
        let flat = nftables_mode(&both, None).flat();
        let holder = flat.elements[SERVICE_IPS]["192.0.2.1 . tcp . 80"].clone();
        assert_eq!(holder, "goto lbx-1", "the first by key has it");
        let (script, _, _) = change(&both, &[b.clone()]);
        let del = script
            .lines()
            .find(|l| l.starts_with("delete element ip flotilla service-ips"))
            .unwrap_or_default();
        assert!(del.contains("192.0.2.1 . tcp . 80"), "{script}");
        let add = script
            .lines()
            .find(|l| l.starts_with("add element ip flotilla service-ips"))
            .unwrap_or_default();
        assert!(
            add.contains("192.0.2.1 . tcp . 80 : goto lbx-2"),
            "{script}"
        );
        // 10.244.0.5 is still b's endpoint: its hairpin element stays.
        assert!(!script.contains("hairpin"), "{script}");
        // And back: the first port takes the element again.
        let (script, _, _) = change(&[b.clone()], &both);
        assert!(
            script.contains("delete element ip flotilla service-ips { 192.0.2.1 . tcp . 80"),
            "{script}"
        );
        assert!(!script.contains(HAIRPIN), "{script}");
    }

    #[test]
    fn a_full_sync_deletes_only_stale_per_service_chains_and_sets() {
        let want = nftables_mode(&[svc(1, &[5, 6], true)], None).flat();
        let keep_aff = want
            .affinity_sets
            .keys()
            .next()
            .cloned()
            .unwrap_or_default();
        let chains: BTreeSet<String> = ["services", "nat-prerouting", "svc-DEAD-old", "somebody"]
            .map(String::from)
            .into();
        let sets: BTreeSet<String> = [keep_aff.clone(), "aff-OLD".into(), "hairpin".into()].into();
        let (script, removed) = full_script(&want, &chains, &sets);
        assert_eq!(removed, 1);
        assert!(script.contains("delete chain ip flotilla svc-DEAD-old\n"));
        assert!(script.contains("delete set ip flotilla aff-OLD\n"));
        assert!(!script.contains(&format!("delete set ip flotilla {keep_aff}")));
        assert!(!script.contains("delete chain ip flotilla somebody"));
        assert!(script.contains("flush table ip flotilla\n"));
    }
}
