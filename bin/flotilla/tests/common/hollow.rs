//! Hollow nodes for the tests: `flotilla agent --runtime fake` processes
//! (no containers; pods are reported Running at once), and the NodePool
//! shape that gives each pod a node of its own.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use flotilla_objects::nodepool::NodePool;
use serde_json::json;

use super::flotilla_bin;

/// A child process killed (and reaped) when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start a hollow agent registering as `name` (in `pool`, if given) with
/// the masters at `servers`; its data folder and log (`NAME.log`) are in `dir`.
pub fn hollow_agent(
    name: &str,
    pool: Option<&str>,
    servers: &str,
    dir: &Path,
) -> std::io::Result<Child> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let mut cmd = Command::new(flotilla_bin());
    cmd.args(["agent", "--runtime", "fake", "--name", name])
        .args(["--node-ip", "10.0.0.9", "--metrics-addr", "127.0.0.1:0"])
        .args(["--server", servers, "--data-dir"])
        .arg(dir.join(name));
    if let Some(p) = pool {
        cmd.args(["--pool", p]);
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
}

/// A pool of machines as big as this one (hollow agents report its CPUs)
/// from 0 to 3 nodes, and a CPU request (60% of a machine) that gives each
/// pod a node of its own.
pub fn node_per_pod_pool(name: &str) -> (NodePool, String) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    let pool = serde_json::from_value(json!({
        "apiVersion": "flotilla.dev/v1", "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {"minSize": 0, "maxSize": 3, "machine": {"cpu": cpus.to_string(), "memory": "1Gi"}}
    }))
    .expect("pool");
    (pool, format!("{}m", cpus * 600))
}
