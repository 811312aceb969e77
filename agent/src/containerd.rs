//! The agent's own containerd: its configuration (root, state and socket
//! under the agent's data folder, the CRI plugin with the CNI folders, the
//! sandbox image, registry mirrors and the cgroupfs driver, which runc
//! drives on cgroup v1 and v2 alike), and a supervisor that starts it,
//! waits until it answers, restarts it when it dies and stops it on
//! shutdown. Used when the agent is given no `--containerd-socket`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::AgentConfig;
use crate::cri::Cri;
use crate::error::{Error, Result};

/// How long a fresh containerd may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long containerd gets to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn toml_str(s: &str) -> String {
    // A JSON string is a valid TOML basic string.
    serde_json::Value::String(s.to_string()).to_string()
}

fn toml_path(p: &Path) -> String {
    toml_str(&p.to_string_lossy())
}

/// Whether the host runs the unified cgroup hierarchy (v2).
pub fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// containerd's configuration for this agent.
pub fn config_toml(cfg: &AgentConfig) -> String {
    let dir = cfg.containerd_dir();
    let cri = "[plugins.\"io.containerd.grpc.v1.cri\"";
    let mut s = String::new();
    s.push_str("# Written by flotilla agent; rewritten at every start.\nversion = 2\n");
    s.push_str(&format!("root = {}\n", toml_path(&dir.join("root"))));
    s.push_str(&format!("state = {}\n", toml_path(&dir.join("state"))));
    // Snapshotters and exporters this machine does not have only log errors.
    s.push_str(
        "disabled_plugins = [\"io.containerd.snapshotter.v1.aufs\", \"io.containerd.snapshotter.v1.btrfs\", \
         \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.snapshotter.v1.zfs\", \
         \"io.containerd.tracing.processor.v1.otlp\", \"io.containerd.internal.v1.tracing\"]\n",
    );
    s.push_str(&format!(
        "[grpc]\n  address = {}\n",
        toml_path(&cfg.socket())
    ));
    s.push_str(&format!(
        "[ttrpc]\n  address = {}\n",
        toml_path(&dir.join("containerd.sock.ttrpc"))
    ));
    s.push_str("[debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n");
    s.push_str(&format!(
        "[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {}\n",
        toml_path(&dir.join("opt"))
    ));
    s.push_str(&format!("{cri}]\n"));
    s.push_str(&format!(
        "  sandbox_image = {}\n",
        toml_str(&cfg.sandbox_image)
    ));
    s.push_str("  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n");
    // Pod network namespaces live under our state folder, not /run/netns.
    s.push_str("  netns_mounts_under_state_dir = true\n");
    // No OOM score below containerd's own: where a process may not lower
    // its score (containers, sandboxed VMs), runc would fail every sandbox.
    s.push_str("  restrict_oom_score_adj = true\n");
    s.push_str(&format!("{cri}.containerd]\n"));
    s.push_str("  snapshotter = \"overlayfs\"\n  default_runtime_name = \"runc\"\n");
    s.push_str(&format!("{cri}.containerd.runtimes.runc]\n"));
    s.push_str("  runtime_type = \"io.containerd.runc.v2\"\n");
    s.push_str(&format!("{cri}.containerd.runtimes.runc.options]\n"));
    s.push_str("  SystemdCgroup = false\n");
    s.push_str(&format!("{cri}.cni]\n"));
    s.push_str(&format!("  bin_dir = {}\n", toml_path(&cfg.cni_bin_dir)));
    s.push_str(&format!(
        "  conf_dir = {}\n",
        toml_path(&cfg.cni_conf_dir())
    ));
    for m in &cfg.registry_mirrors {
        s.push_str(&format!(
            "{cri}.registry.mirrors.{}]\n  endpoint = [{}]\n",
            toml_str(&m.registry),
            toml_str(&m.endpoint)
        ));
    }
    s
}

/// A supervised containerd; stopped when [`Supervisor::stop`] is called
/// (or killed when dropped).
pub struct Supervisor {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// Write the configuration, start containerd and wait until it answers.
    pub async fn start(cfg: &AgentConfig) -> Result<Supervisor> {
        let dir = cfg.containerd_dir();
        for d in [dir.clone(), cfg.cni_conf_dir()] {
            std::fs::create_dir_all(&d).map_err(Error::io(format!("creating {}", d.display())))?;
        }
        let conf = dir.join("config.toml");
        std::fs::write(&conf, config_toml(cfg))
            .map_err(Error::io(format!("writing {}", conf.display())))?;
        let log = dir.join("containerd.log");
        let how = How {
            bin: cfg.containerd_bin.clone(),
            conf,
            log,
            netns: cfg.netns.clone(),
        };
        let child = spawn(&how)?;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(supervise(child, how, stop_rx));
        let sup = Supervisor {
            stop,
            task: Some(task),
        };
        let socket = cfg.socket();
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if socket.exists() {
                if let Ok(mut cri) = Cri::connect(&socket).await {
                    if cri.version().await.is_ok() {
                        return Ok(sup);
                    }
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Containerd(format!(
                    "no answer on {} after {START_TIMEOUT:?} (see {})",
                    socket.display(),
                    dir.join("containerd.log").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stop containerd (SIGTERM, then SIGKILL after a while). Containers
    /// keep running under their shims, as with any containerd restart.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// How containerd is started.
struct How {
    bin: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    netns: Option<PathBuf>,
}

fn spawn(how: &How) -> Result<Child> {
    let log = &how.log;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(Error::io(format!("opening {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(Error::io(format!("opening {}", log.display())))?;
    let mut cmd = crate::netns::command_in(how.netns.as_deref(), &how.bin)
        .map_err(Error::io("opening the node's network namespace"))?;
    cmd.arg("--config")
        .arg(&how.conf)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    cmd.spawn()
        .map_err(|e| Error::Containerd(format!("starting {}: {e}", how.bin.display())))
}

async fn supervise(mut child: Child, how: How, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let status = tokio::select! {
            s = child.wait() => Some(s),
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(status) = status else {
            terminate(&mut child).await;
            return;
        };
        tracing::warn!(?status, log = %how.log.display(), "containerd exited; restarting it in {backoff:?}");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if *stop.borrow() {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
        match spawn(&how) {
            Ok(c) => child = c,
            Err(e) => tracing::error!("{e}"),
        }
    }
}

async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if tokio::time::timeout(STOP_TIMEOUT, child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_our_folders_and_mirrors() {
        let mut cfg = AgentConfig::new("n1", "10.0.0.2".parse().unwrap(), "/d".into());
        cfg.registry_mirrors
            .push("docker.io=http://127.0.0.1:5000".parse().unwrap());
        let t = config_toml(&cfg);
        assert!(t.contains("root = \"/d/containerd/root\""), "{t}");
        assert!(
            t.contains("address = \"/d/containerd/containerd.sock\""),
            "{t}"
        );
        assert!(t.contains("conf_dir = \"/d/cni/net.d\""), "{t}");
        assert!(
            t.contains("registry.mirrors.\"docker.io\"]\n  endpoint = [\"http://127.0.0.1:5000\"]"),
            "{t}"
        );
        assert!(t.contains("SystemdCgroup = false"));
    }
}
