//! nftables mode against the kernel (root, `nft`): random sequences of
//! service changes are applied incrementally in one network namespace and
//! in full, afresh, in another; after every step both tables must hold the
//! same chains, rules, maps and elements. An incremental script that the
//! kernel refuses (an order it does not accept within a transaction, an
//! element added twice) fails the step; one that it takes but that leaves
//! something behind or misses something fails the comparison.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use flotilla_proxy::model::{Ep, Proto, SvcPort};
use flotilla_proxy::nftables::{self, rules::Renderer};
use serde_json::Value;

/// A network namespace of this test's, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("fnt-{}-{tag}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip netns add");
        assert!(out.status.success(), "ip netns add {name}: {out:?}");
        Netns(name)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.0))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// The table as JSON with handles dropped, rules grouped by chain (in
/// order) and set elements sorted: equal for equal contents.
fn table(ns: &Path) -> Value {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["nft", "-j", "list", "table", "ip", "flotilla"])
        .output()
        .expect("nft");
    assert!(out.status.success(), "nft list: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("nft json");
    let mut chains = serde_json::Map::new();
    let mut sets = serde_json::Map::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        if let Some(c) = item.get("chain") {
            let name = c["name"].as_str().unwrap_or_default().to_string();
            chains.entry(name).or_insert_with(|| Value::Array(vec![]));
        } else if let Some(r) = item.get("rule") {
            let name = r["chain"].as_str().unwrap_or_default().to_string();
            let rules = chains.entry(name).or_insert_with(|| Value::Array(vec![]));
            if let Value::Array(a) = rules {
                a.push(r["expr"].clone());
            }
        } else if let Some(s) = item.get("set").or_else(|| item.get("map")) {
            let mut elems: Vec<String> = s
                .get("elem")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(Value::to_string)
                .collect();
            elems.sort();
            let mut s = s.clone();
            if let Some(o) = s.as_object_mut() {
                o.remove("handle");
                o.insert("elem".into(), elems.into());
            }
            sets.insert(s["name"].as_str().unwrap_or_default().to_string(), s);
        }
    }
    serde_json::json!({"chains": chains, "sets": sets})
}

/// A small deterministic generator (no seed-dependent flakiness).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn random_ports(g: &mut Lcg) -> Vec<SvcPort> {
    let mut out = Vec::new();
    for i in 0..12u8 {
        if g.next(5) == 0 {
            continue; // this service is absent in this step
        }
        let proto = if i % 4 == 3 { Proto::Udp } else { Proto::Tcp };
        // Mostly 0-3 endpoints; sometimes more than the shared chains
        // take, so that ports cross SHARED_MAX both ways.
        let n_eps = match g.next(8) {
            0 => (nftables::rules::SHARED_MAX as u64 + g.next(3)) as u8,
            _ => g.next(4) as u8,
        };
        let endpoints = (0..n_eps)
            .map(|k| Ep {
                // Endpoint addresses overlap between services (hairpin
                // elements with two owners), never within one.
                ip: Ipv4Addr::new(10, 244, k / 16, (i + k) % 16 + 1),
                port: 8080 + g.next(2) as u16,
                local: g.next(2) == 0,
            })
            .collect();
        // Two external IPs shared by several services on one port: map
        // elements with two claimants.
        let external_ips = match g.next(4) {
            0 => vec![Ipv4Addr::new(192, 0, 2, 1)],
            1 => vec![Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)],
            _ => vec![],
        };
        out.push(SvcPort {
            key: format!("ns/svc{i}:p"),
            proto,
            cluster_ip: Ipv4Addr::new(10, 96, 0, i + 1),
            port: 80,
            node_port: (g.next(2) == 0).then_some(30000 + u16::from(i)),
            external_ips,
            lb_ips: vec![],
            affinity: match g.next(4) {
                0 => Some(30),
                1 => Some(60),
                _ => None,
            },
            external_local: g.next(3) == 0,
            internal_local: g.next(5) == 0,
            endpoints,
        });
    }
    out
}

/// The table a fresh writer makes of `ports` in `ns` (emptied first).
async fn written_in_full(ns: &Netns, ports: &[SvcPort], cidr: Option<&str>) -> Value {
    nftables::cleanup(Some(&ns.path())).await.expect("cleanup");
    nftables::Writer::new(Some(ns.path()))
        .sync(Renderer::default().render(ports, cidr))
        .await
        .unwrap_or_else(|e| panic!("full sync refused: {e}"));
    table(&ns.path())
}

#[tokio::test(flavor = "current_thread")]
async fn incremental_syncs_leave_the_table_a_full_sync_would() {
    let (inc, fresh) = (Netns::new("inc"), Netns::new("full"));
    let mut writer = nftables::Writer::new(Some(inc.path()));
    let mut renderer = Renderer::default();
    let mut g = Lcg(20261204);
    let mut incremental_steps = 0;
    for step in 0..40 {
        let ports = random_ports(&mut g);
        let cidr = (step % 7 != 6).then_some("10.244.0.0/16");
        let stats = writer
            .sync(renderer.render(&ports, cidr))
            .await
            .unwrap_or_else(|e| panic!("step {step}: incremental sync refused: {e}"));
        if !stats.full {
            incremental_steps += 1;
        }
        // The same ports written in full into a fresh writer's table.
        let b = written_in_full(&fresh, &ports, cidr).await;
        let a = table(&inc.path());
        assert!(
            a == b,
            "step {step}: the incremental table differs from a full sync's\nincremental: {a:#}\nfull: {b:#}"
        );
    }
    assert_eq!(
        incremental_steps, 39,
        "every step after the first is incremental"
    );
    // A full resync over what is there keeps the same table.
    writer.force_full();
    let ports = random_ports(&mut g);
    let stats = writer
        .sync(renderer.render(&ports, None))
        .await
        .expect("resync");
    assert!(stats.full);
    assert_eq!(
        table(&inc.path()),
        written_in_full(&fresh, &ports, None).await
    );
    // The table deleted behind the writer's back: the next incremental
    // script is refused, and the sync after it is a full one that puts
    // everything back.
    assert_eq!(
        nftables::cleanup(Some(&inc.path())).await.expect("cleanup"),
        1
    );
    let ports = random_ports(&mut g);
    assert!(writer.sync(renderer.render(&ports, None)).await.is_err());
    let stats = writer
        .sync(renderer.render(&ports, None))
        .await
        .expect("recovery");
    assert!(stats.full, "the sync after a refused one is full");
    assert_eq!(
        table(&inc.path()),
        written_in_full(&fresh, &ports, None).await
    );
    assert_eq!(
        nftables::cleanup(Some(&inc.path())).await.expect("cleanup"),
        1
    );
    assert_eq!(
        nftables::cleanup(Some(&inc.path())).await.expect("cleanup"),
        0
    );
}
