//! The `exec` node provider: an operator's command makes and removes
//! machines, run as `COMMAND create POOL NODE` and `COMMAND delete POOL
//! NODE` (also in the environment as FLOTILLA_NODEPOOL and FLOTILLA_NODE).
//! It must be idempotent, as the autoscaler may ask again for the same
//! node after a change of leader: creating a node that exists and deleting
//! one that is gone must succeed. The machine it makes must run an agent
//! registering as NODE with the label flotilla.dev/nodepool=POOL (for
//! instance the playbook in deploy/ansible).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use flotilla_autoscaler::{NodeProvider, ProviderError};
use tokio::process::Command;

/// Runs the operator's command.
pub struct ExecProvider {
    command: PathBuf,
    /// Pools it manages (empty: every pool with a max size).
    pools: Vec<String>,
    timeout: Duration,
}

impl ExecProvider {
    pub fn new(command: PathBuf, pools: Vec<String>, timeout: Duration) -> Self {
        ExecProvider {
            command,
            pools,
            timeout,
        }
    }

    async fn run(&self, verb: &str, pool: &str, node: &str) -> Result<(), ProviderError> {
        let child = Command::new(&self.command)
            .args([verb, pool, node])
            .env("FLOTILLA_NODEPOOL", pool)
            .env("FLOTILLA_NODE", node)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                ProviderError::Failed(format!("running {}: {e}", self.command.display()))
            })?;
        let out = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| {
                ProviderError::Failed(format!(
                    "{} {verb} {pool} {node}: no answer within {:?}",
                    self.command.display(),
                    self.timeout
                ))
            })?
            .map_err(|e| ProviderError::Failed(format!("{}: {e}", self.command.display())))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(ProviderError::Failed(format!(
            "{} {verb} {pool} {node}: {}: {}",
            self.command.display(),
            out.status,
            tail.join(" | ")
        )))
    }
}

#[async_trait::async_trait]
impl NodeProvider for ExecProvider {
    fn name(&self) -> &str {
        "exec"
    }

    fn manages(&self, pool: &str) -> bool {
        self.pools.is_empty() || self.pools.iter().any(|p| p == pool)
    }

    async fn create(&self, pool: &str, node: &str) -> Result<(), ProviderError> {
        self.run("create", pool, node).await
    }

    async fn delete(&self, pool: &str, node: &str) -> Result<(), ProviderError> {
        self.run("delete", pool, node).await
    }
}
