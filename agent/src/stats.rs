//! CPU and memory of the node's pods, as `flt top` shows them (kubelet's
//! summary API measured through cAdvisor does the same): the agent reads
//! each running container's cgroup every [`WINDOW`] and keeps the last two
//! readings, so that CPU is a *rate* over that window.
//!
//! - CPU: cumulative nanoseconds (`cpuacct.usage` on cgroup v1,
//!   `usage_usec` of `cpu.stat` on v2); the rate in nanocores is the
//!   difference of two readings over the time between them.
//! - Memory: the working set, `memory.usage_in_bytes` minus
//!   `total_inactive_file` of `memory.stat` (v2: `memory.current` minus
//!   `inactive_file`), as kubelet and cAdvisor compute it; never below 0.
//! - The node's figures are those of the cgroup parent holding all of this
//!   agent's pods (`/flotilla-NODE`), not the whole host's: several agents
//!   may share a machine, and the pods are what a node's user runs.
//!
//! A container appears once it was read twice; until the agent has two
//! readings of its pods' parent, it has no figures and says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use flotilla_proto::node::{ContainerStats, NodeStats, PodStats};
use tokio_util::sync::CancellationToken;

use crate::containerd::cgroup_v2;
use crate::pods::spec::{
    pod_cgroup, LABEL_CONTAINER_NAME, LABEL_NODE, LABEL_POD_NAME, LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
};
use crate::pods::Ctx;

/// The sampling window: how often cgroups are read, and so the span a CPU
/// rate is measured over.
pub const WINDOW: Duration = Duration::from_secs(5);

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// One reading of a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// CPU used since the cgroup was made, in nanoseconds.
    pub cpu_ns: u64,
    /// Working set in bytes.
    pub working_set: u64,
}

/// Read a cgroup (relative to the hierarchies' root); None when it is gone
/// or unreadable.
pub fn read_cgroup(rel: &str) -> Option<Reading> {
    read_cgroup_at(Path::new(CGROUP_ROOT), rel, cgroup_v2())
}

fn read_cgroup_at(root: &Path, rel: &str, v2: bool) -> Option<Reading> {
    let rel = rel.trim_start_matches('/');
    let num = |p: PathBuf| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let stat = |p: PathBuf, key: &str| -> Option<u64> {
        let text = std::fs::read_to_string(p).ok()?;
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
    };
    if v2 {
        let dir = root.join(rel);
        let cpu_ns = stat(dir.join("cpu.stat"), "usage_usec")? * 1000;
        let usage = num(dir.join("memory.current"))?;
        let inactive = stat(dir.join("memory.stat"), "inactive_file").unwrap_or(0);
        return Some(Reading {
            cpu_ns,
            working_set: usage.saturating_sub(inactive),
        });
    }
    let cpu_ns = ["cpuacct", "cpu,cpuacct"]
        .iter()
        .find_map(|h| num(root.join(h).join(rel).join("cpuacct.usage")))?;
    let mem = root.join("memory").join(rel);
    let usage = num(mem.join("memory.usage_in_bytes"))?;
    let inactive = stat(mem.join("memory.stat"), "total_inactive_file").unwrap_or(0);
    Some(Reading {
        cpu_ns,
        working_set: usage.saturating_sub(inactive),
    })
}

/// Nanocores used between two readings `dt` apart.
pub fn rate(before: u64, after: u64, dt: Duration) -> u64 {
    let ns = dt.as_nanos();
    if ns == 0 {
        return 0;
    }
    (u128::from(after.saturating_sub(before)) * 1_000_000_000 / ns) as u64
}

/// Who a container's cgroup belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Owner {
    namespace: String,
    pod: String,
    container: String,
}

/// One pass over the node's cgroups.
#[derive(Debug, Default)]
struct Pass {
    at: Option<Instant>,
    node: Option<Reading>,
    /// By container id.
    containers: HashMap<String, (Owner, Reading)>,
}

/// The last two passes, and what they give.
pub struct Sampler {
    passes: Mutex<(Pass, Pass)>,
    node: String,
}

impl Sampler {
    pub fn new(node: &str) -> Arc<Sampler> {
        Arc::new(Sampler {
            passes: Mutex::default(),
            node: node.to_string(),
        })
    }

    /// Read every running container's cgroup every [`WINDOW`] until `stop`.
    pub async fn run(self: Arc<Self>, ctx: Arc<Ctx>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(WINDOW);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.pass(&ctx).await {
                Ok(p) => {
                    if let Ok(mut g) = self.passes.lock() {
                        g.0 = std::mem::replace(&mut g.1, p);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "reading the pods' cgroups"),
            }
        }
    }

    async fn pass(&self, ctx: &Ctx) -> crate::Result<Pass> {
        let mut pass = Pass {
            at: Some(Instant::now()),
            node: read_cgroup(&format!("/flotilla-{}", ctx.cfg.name)),
            containers: HashMap::new(),
        };
        let running = k8s_cri::v1::ContainerState::ContainerRunning as i32;
        for c in ctx.cri.clone().list_containers("").await? {
            let label = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
            if c.state != running || label(LABEL_NODE) != ctx.cfg.name {
                continue;
            }
            let rel = format!(
                "{}/{}",
                pod_cgroup(&ctx.cfg.name, &label(LABEL_POD_UID)),
                c.id
            );
            if let Some(r) = read_cgroup(&rel) {
                let owner = Owner {
                    namespace: label(LABEL_POD_NAMESPACE),
                    pod: label(LABEL_POD_NAME),
                    container: label(LABEL_CONTAINER_NAME),
                };
                pass.containers.insert(c.id.clone(), (owner, r));
            }
        }
        Ok(pass)
    }

    /// The figures of the last window, the pods of `namespace` only (all:
    /// empty); None before the second pass.
    pub fn figures(&self, namespace: &str) -> Option<NodeStats> {
        let g = self.passes.lock().ok()?;
        let (old, new) = (&g.0, &g.1);
        let (t0, t1) = (old.at?, new.at?);
        let (n0, n1) = (old.node?, new.node?);
        let dt = t1.duration_since(t0);
        let age = t1.elapsed();
        let mut pods: HashMap<(String, String), Vec<ContainerStats>> = HashMap::new();
        for (id, (owner, now)) in &new.containers {
            let Some((_, before)) = old.containers.get(id) else {
                continue;
            };
            if !namespace.is_empty() && owner.namespace != namespace {
                continue;
            }
            pods.entry((owner.namespace.clone(), owner.pod.clone()))
                .or_default()
                .push(ContainerStats {
                    name: owner.container.clone(),
                    cpu_nano_cores: rate(before.cpu_ns, now.cpu_ns, dt),
                    memory_working_set_bytes: now.working_set,
                });
        }
        let mut pods: Vec<PodStats> = pods
            .into_iter()
            .map(|((namespace, name), mut containers)| {
                containers.sort_by(|a, b| a.name.cmp(&b.name));
                PodStats {
                    namespace,
                    name,
                    containers,
                }
            })
            .collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let end = SystemTime::now()
            .checked_sub(age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Some(NodeStats {
            node: self.node.clone(),
            time_unix_ms: end
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            window_ms: dt.as_millis() as i64,
            cpu_nano_cores: rate(n0.cpu_ns, n1.cpu_ns, dt),
            memory_working_set_bytes: n1.working_set,
            pods,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v1_working_set_leaves_out_inactive_files() {
        let d = tempfile::tempdir().expect("tmp");
        let cpu = d.path().join("cpuacct/flotilla-n/pod-u/c1");
        let mem = d.path().join("memory/flotilla-n/pod-u/c1");
        std::fs::create_dir_all(&cpu).expect("mkdir");
        std::fs::create_dir_all(&mem).expect("mkdir");
        std::fs::write(cpu.join("cpuacct.usage"), "123456789\n").expect("w");
        std::fs::write(mem.join("memory.usage_in_bytes"), "10000\n").expect("w");
        std::fs::write(
            mem.join("memory.stat"),
            "cache 9\ninactive_file 1\ntotal_inactive_file 4000\n",
        )
        .expect("w");
        let r = read_cgroup_at(d.path(), "/flotilla-n/pod-u/c1", false).expect("read");
        assert_eq!(
            r,
            Reading {
                cpu_ns: 123_456_789,
                working_set: 6000
            }
        );
        assert_eq!(read_cgroup_at(d.path(), "/gone", false), None);
    }

    #[test]
    fn cgroup_v2_reads_usage_usec_and_memory_current() {
        let d = tempfile::tempdir().expect("tmp");
        let c = d.path().join("p/c");
        std::fs::create_dir_all(&c).expect("mkdir");
        std::fs::write(c.join("cpu.stat"), "usage_usec 2500\nuser_usec 2000\n").expect("w");
        std::fs::write(c.join("memory.current"), "100\n").expect("w");
        std::fs::write(c.join("memory.stat"), "inactive_file 300\n").expect("w");
        let r = read_cgroup_at(d.path(), "p/c", true).expect("read");
        assert_eq!(
            r,
            Reading {
                cpu_ns: 2_500_000,
                working_set: 0
            }
        );
    }

    #[test]
    fn a_rate_is_nanocores_over_the_window() {
        // Half a core: 2.5 s of CPU in 5 s.
        assert_eq!(
            rate(1_000, 2_500_001_000, Duration::from_secs(5)),
            500_000_000
        );
        // A counter that went back (a new cgroup) is no use, not negative.
        assert_eq!(rate(10, 5, Duration::from_secs(1)), 0);
        assert_eq!(rate(0, 5, Duration::ZERO), 0);
    }
}
