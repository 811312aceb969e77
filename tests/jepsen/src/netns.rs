//! The sealed test network of one run.
//!
//! ```text
//!   fj<id>sw:  br0 ── pn1 ─┐  pn2 ─┐  pn3 ─┐  pcl ─┐
//!   fj<id>n1:       eth0 ──┘       │       │       │   10.77.<b>.11
//!   fj<id>n2:               eth0 ──┘       │       │   10.77.<b>.12
//!   fj<id>n3:                       eth0 ──┘       │   10.77.<b>.13
//!   fj<id>cl:                               eth0 ──┘   10.77.<b>.100
//! ```
//!
//! A bridge lives in a dedicated switch namespace; each master's namespace
//! and the clients' namespace hang off it by a veth pair created directly
//! between the two namespaces (nothing is ever created in the root
//! namespace). Addresses exist only inside these namespaces; there are no
//! routes, no NAT, nothing that reaches a real interface. Deleting the
//! namespaces removes the veths, the bridge and every iptables rule with
//! them: [`Topology`]'s `Drop` does that (after SIGKILLing any process still
//! inside), and [`cleanup_prefix`] removes leftovers of a run by name.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// Every namespace of this harness starts with this.
pub const NS_PREFIX: &str = "fj";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Host {
    /// `n1`, `n2`, ...
    pub name: String,
    /// Network namespace, e.g. `fjk3x9n1`.
    pub ns: String,
    pub ip: String,
}

/// What the processes of a run need to know about the network.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetSpec {
    /// `fj<id>`: every namespace of the run starts with it.
    pub prefix: String,
    pub switch_ns: String,
    pub client_ns: String,
    pub client_ip: String,
    pub hosts: Vec<Host>,
}

/// A created network; removed on drop.
pub struct Topology {
    pub spec: NetSpec,
    alive: bool,
}

/// Why an `ip` command failed.
#[derive(Debug, thiserror::Error)]
pub enum IpError {
    #[error("cannot run `ip` (is iproute2 installed?): {0}")]
    Spawn(#[from] std::io::Error),
    #[error("`ip {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
}

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<(), IpError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(IpError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// A short id unique to this run: 4 characters of [a-z0-9].
pub fn new_run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0) as u64;
    let mut x = nanos ^ ((std::process::id() as u64) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..4)
        .map(|i| ALPHABET[((x >> (i * 8)) % 36) as usize] as char)
        .collect()
}

/// Names of the existing network namespaces.
pub fn list_namespaces() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn pids_in(ns: &str) -> Vec<i32> {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// SIGKILLs every process inside the namespaces whose names start with
/// `prefix`, then deletes those namespaces. Returns the namespaces removed.
pub fn cleanup_prefix(prefix: &str) -> Vec<String> {
    let victims: Vec<String> = list_namespaces()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    for ns in &victims {
        for pid in pids_in(ns) {
            if pid as u32 == std::process::id() {
                continue;
            }
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    // Give the killed processes a moment to leave (not required for the
    // deletion, but then nothing outlives it).
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && victims.iter().any(|ns| !pids_in(ns).is_empty()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for ns in &victims {
        if let Err(e) = ip(&["netns", "del", ns]) {
            tracing::warn!("{e:#}");
        }
    }
    victims
}

/// Where each run notes the pid of the process that owns its namespaces.
pub const OWNER_DIR: &str = "/run/flotilla-jepsen";

fn owner_file(prefix: &str) -> String {
    format!("{OWNER_DIR}/{prefix}")
}

/// Removes the namespaces (and processes) of earlier runs whose owner
/// process is gone (e.g. the harness was SIGKILLed). Runs of a live
/// harness are left alone. Returns the namespaces removed.
pub fn cleanup_stale() -> Vec<String> {
    let mut prefixes: Vec<String> = list_namespaces()
        .into_iter()
        .filter(|n| is_harness_namespace(n))
        .map(|n| n[..NS_PREFIX.len() + 4].to_string())
        .collect();
    prefixes.sort();
    prefixes.dedup();
    let mut removed = Vec::new();
    for p in prefixes {
        let owner_alive = std::fs::read_to_string(owner_file(&p))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .is_some_and(|pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            });
        if !owner_alive {
            removed.extend(cleanup_prefix(&p));
            let _ = std::fs::remove_file(owner_file(&p));
        }
    }
    removed
}

/// Whether a namespace name looks like one of this harness's:
/// `fj` + 4 characters of [a-z0-9] + `sw`, `cl` or `n<digit(s)>`.
pub fn is_harness_namespace(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(NS_PREFIX) else {
        return false;
    };
    if rest.len() < 6 || !rest.is_char_boundary(4) {
        return false;
    }
    let (id, role) = rest.split_at(4);
    id.chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && (role == "sw"
            || role == "cl"
            || (role.len() >= 2
                && role.starts_with('n')
                && role[1..].chars().all(|c| c.is_ascii_digit())))
}

impl Topology {
    /// Creates the network of a run with `n` master hosts.
    pub fn create(run_id: &str, n: usize) -> Result<Topology> {
        assert!((1..=9).contains(&n), "1 to 9 hosts");
        let prefix = format!("{NS_PREFIX}{run_id}");
        // One /24 per run, from the id (any value works: the namespaces of
        // different runs never share a link).
        let b = 1 + run_id.bytes().fold(0u32, |a, c| a * 31 + c as u32) % 250;
        let hosts: Vec<Host> = (1..=n)
            .map(|i| Host {
                name: format!("n{i}"),
                ns: format!("{prefix}n{i}"),
                ip: format!("10.77.{b}.{}", 10 + i),
            })
            .collect();
        let spec = NetSpec {
            switch_ns: format!("{prefix}sw"),
            client_ns: format!("{prefix}cl"),
            client_ip: format!("10.77.{b}.100"),
            prefix,
            hosts,
        };
        // Mark the run as ours (before any namespace exists), so that a
        // later invocation can tell its leftovers from a live run's.
        let _ = std::fs::create_dir_all(OWNER_DIR);
        let _ = std::fs::write(owner_file(&spec.prefix), std::process::id().to_string());
        let mut topo = Topology { spec, alive: true };
        topo.build().inspect_err(|_| topo.destroy())?;
        Ok(topo)
    }

    fn build(&mut self) -> Result<()> {
        let s = &self.spec;
        let sw = s.switch_ns.as_str();
        ip(&["netns", "add", sw])?;
        ip(&["-n", sw, "link", "set", "lo", "up"])?;
        ip(&["-n", sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", sw, "link", "set", "br0", "up"])?;
        let mut ends: Vec<(&str, &str, &str)> = s
            .hosts
            .iter()
            .map(|h| (h.name.as_str(), h.ns.as_str(), h.ip.as_str()))
            .collect();
        ends.push(("cl", s.client_ns.as_str(), s.client_ip.as_str()));
        for (name, ns, addr) in ends {
            let port = format!("p{name}");
            let cidr = format!("{addr}/24");
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            // Both ends are created inside the run's namespaces.
            ip(&[
                "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", sw,
            ])?;
            ip(&["-n", sw, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", sw, "link", "set", &port, "up"])?;
            ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// Removes everything of this run (idempotent).
    pub fn destroy(&mut self) {
        if !self.alive {
            return;
        }
        self.alive = false;
        let removed = cleanup_prefix(&self.spec.prefix);
        let _ = std::fs::remove_file(owner_file(&self.spec.prefix));
        tracing::debug!("removed namespaces {removed:?}");
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.destroy();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_short_and_namespace_names_recognised() {
        let id = new_run_id();
        assert_eq!(id.len(), 4);
        for role in ["sw", "cl", "n1", "n5"] {
            let name = format!("{NS_PREFIX}{id}{role}");
            assert!(name.len() <= 15);
            assert!(is_harness_namespace(&name), "{name}");
        }
        assert!(!is_harness_namespace("fjabcdx1"));
        assert!(!is_harness_namespace("other"));
        assert!(!is_harness_namespace("fjAB12sw"));
    }
}
