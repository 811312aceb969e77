//! The `local` node provider of `flotilla up --autoscale`: a node of the
//! pool is an agent run in this process, as `flotilla up`'s own agents are
//! (each in a host network namespace of its own on flotilla-up0, or, with
//! the fake runtime, a node without containers and without a namespace).
//! Nodes are known by name: creating one that runs, or deleting one that
//! does not, does nothing, as the autoscaler needs.

use std::collections::HashMap;
use std::sync::Mutex;

use flotilla_autoscaler::{NodeProvider, ProviderError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::up_agents::AgentEnv;

/// Slots (namespace and address numbers) of autoscaled agents: after
/// `flotilla up`'s own agents (1..).
const FIRST_SLOT: usize = 100;
const LAST_SLOT: usize = 240;

struct Running {
    slot: usize,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// Agents on this machine for one pool.
pub struct LocalProvider {
    pool: String,
    fake: bool,
    env: AgentEnv,
    running: Mutex<HashMap<String, Running>>,
}

impl LocalProvider {
    pub fn new(pool: &str, fake: bool, env: AgentEnv) -> Self {
        LocalProvider {
            pool: pool.to_string(),
            fake,
            env,
            running: Mutex::new(HashMap::new()),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start(&self, node: &str) -> Result<(), ProviderError> {
        let mut running = self.running();
        if running.contains_key(node) {
            return Ok(());
        }
        let slot = (FIRST_SLOT..=LAST_SLOT)
            .find(|s| running.values().all(|r| r.slot != *s))
            .ok_or_else(|| ProviderError::Failed("no free agent slot on this machine".into()))?;
        let stop = CancellationToken::new();
        let tasks = self
            .env
            .spawn(slot, node, &self.pool, self.fake, &stop)
            .map_err(|e| ProviderError::Failed(format!("{e:#}")))?;
        tracing::info!(
            node,
            slot,
            fake = self.fake,
            "local provider: agent started"
        );
        running.insert(node.to_string(), Running { slot, stop, tasks });
        Ok(())
    }

    /// Stop every agent this provider runs (their nodes stay in the store;
    /// the next `flotilla up` starts them again).
    pub async fn shutdown(&self) {
        let all: Vec<Running> = self.running().drain().map(|(_, r)| r).collect();
        for r in all {
            r.stop.cancel();
            for t in r.tasks {
                let _ = t.await;
            }
        }
    }
}

#[async_trait::async_trait]
impl NodeProvider for LocalProvider {
    fn name(&self) -> &str {
        "local"
    }

    fn manages(&self, pool: &str) -> bool {
        pool == self.pool
    }

    async fn create(&self, pool: &str, node: &str) -> Result<(), ProviderError> {
        if pool != self.pool {
            return Err(ProviderError::UnknownPool(pool.to_string()));
        }
        self.start(node)
    }

    async fn delete(&self, pool: &str, node: &str) -> Result<(), ProviderError> {
        if pool != self.pool {
            return Err(ProviderError::UnknownPool(pool.to_string()));
        }
        let Some(r) = self.running().remove(node) else {
            return Ok(());
        };
        r.stop.cancel();
        for t in r.tasks {
            let _ = t.await;
        }
        if self.fake {
            // Nothing of a node without containers is worth keeping.
            let _ = std::fs::remove_dir_all(self.env.agent_dir(node));
        }
        tracing::info!(node, "local provider: agent stopped");
        Ok(())
    }

    async fn refresh(&self, pool: &str, nodes: &[String]) -> Result<(), ProviderError> {
        if pool != self.pool {
            return Ok(());
        }
        for n in nodes {
            self.start(n)?;
        }
        Ok(())
    }
}
