//! A test network: a bridge on the machine with a /24 of 172.31.0.0/16 that
//! no other interface uses, and hosts, each a network namespace joined to
//! the bridge by a veth pair. Names carry a per-test id; everything is
//! removed on drop. No route leads anywhere but the bridge's own /24 (and
//! the pod CIDRs the test routes to its hosts).

use std::net::Ipv4Addr;
use std::process::Command;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    ip(args).unwrap_or_else(|e| panic!("{e}"));
}

/// One host of the test network.
pub struct Host {
    /// The namespace's name (under /run/netns).
    pub netns: String,
    pub ip: Ipv4Addr,
}

impl Host {
    pub fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.netns)
    }
}

pub struct Lan {
    pub id: String,
    pub bridge: String,
    /// The bridge's address: the machine, as the hosts see it.
    pub gateway: Ipv4Addr,
    pub hosts: Vec<Host>,
    routes: Vec<String>,
}

impl Lan {
    pub fn new() -> Lan {
        let id = format!("{:05x}", std::process::id() & 0xfffff);
        let bridge = format!("fltb{id}");
        // Serialise the choice of a subnet among concurrent tests.
        let lock = std::fs::File::create("/run/flotilla-test-lan.lock").expect("lock file");
        nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map(|guard| {
                let used = String::from_utf8_lossy(
                    &Command::new("ip")
                        .args(["-4", "addr"])
                        .output()
                        .expect("ip addr")
                        .stdout,
                )
                .into_owned();
                let k = (1..255u8)
                    .find(|k| !used.contains(&format!("172.31.{k}.")))
                    .expect("a free 172.31.k.0/24");
                let gateway = Ipv4Addr::new(172, 31, k, 1);
                must(&["link", "add", &bridge, "type", "bridge"]);
                let lan = Lan {
                    id,
                    bridge: bridge.clone(),
                    gateway,
                    hosts: Vec::new(),
                    routes: Vec::new(),
                };
                must(&["addr", "add", &format!("{gateway}/24"), "dev", &bridge]);
                must(&["link", "set", &bridge, "up"]);
                drop(guard);
                lan
            })
            .unwrap_or_else(|(_, e)| panic!("locking the lan lock: {e}"))
    }

    /// Add a host: a namespace with `eth0` on the bridge.
    pub fn add_host(&mut self) -> &Host {
        let i = self.hosts.len() + 1;
        let netns = format!("flt-{}-h{i}", self.id);
        let outside = format!("fv{}{i}", self.id);
        let o = self.gateway.octets();
        let addr = Ipv4Addr::new(o[0], o[1], o[2], 10 + i as u8);
        must(&["netns", "add", &netns]);
        self.hosts.push(Host {
            netns: netns.clone(),
            ip: addr,
        });
        must(&[
            "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        must(&["link", "set", &outside, "master", &self.bridge, "up"]);
        must(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        must(&["-n", &netns, "link", "set", "eth0", "up"]);
        must(&["-n", &netns, "link", "set", "lo", "up"]);
        self.hosts.last().expect("host")
    }

    /// Route `cidr` from the machine to host `i` (its pods' CIDR).
    pub fn route_to(&mut self, cidr: &str, i: usize) {
        let via = self.hosts[i].ip.to_string();
        must(&["route", "replace", cidr, "via", &via, "dev", &self.bridge]);
        self.routes.push(cidr.to_string());
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for r in &self.routes {
            let _ = ip(&["route", "del", r]);
        }
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.netns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
