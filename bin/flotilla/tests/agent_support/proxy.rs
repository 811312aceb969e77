//! A `flotilla proxy` per test host, and the removal of its rules.

use std::process::{Child, Command, Stdio};

/// A `flotilla proxy` for one host; killed on drop.
pub struct ProxyProc {
    args: Vec<String>,
    pub log: std::path::PathBuf,
    child: Option<Child>,
}

impl ProxyProc {
    pub fn start(
        servers: &str,
        node: &str,
        host: &super::lan::Host,
        mode: &str,
        dir: &std::path::Path,
    ) -> ProxyProc {
        let args: Vec<String> = [
            "proxy",
            "--server",
            servers,
            "--node-name",
            node,
            "--mode",
            mode,
            "--node-ip",
            &host.ip.to_string(),
            "--netns",
            &host.netns_path(),
            "--metrics-addr",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut p = ProxyProc {
            args,
            log: dir.join(format!("proxy-{node}.log")),
            child: None,
        };
        p.spawn();
        p
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("proxy log");
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_flotilla"))
                .args(&self.args)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("flotilla proxy"),
        );
    }

    /// The address it serves /metrics and /readyz on (from its log).
    pub fn metrics_addr(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        let line = text
            .lines()
            .rev()
            .find(|l| l.contains("serving /metrics"))?;
        let at = line.find("addr=")? + 5;
        Some(line[at..].split_whitespace().next()?.to_string())
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let s = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = s.lines().collect();
            println!(
                "--- {} (tail) ---\n{}",
                self.log.display(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
        self.kill();
    }
}

/// Removes the proxy's rules from the hosts even when the test fails (the
/// namespaces go with the Lan anyway; this keeps the order tidy).
pub struct Cleanup(pub Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new(env!("CARGO_BIN_EXE_flotilla"))
                .args(["proxy", "--cleanup", "--netns", ns])
                .output();
        }
    }
}
