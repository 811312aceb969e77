//! `flotilla up --autoscale MIN:MAX`: the local provider for the pool
//! `default`, the autoscaler loop every master runs over it, and the pool
//! itself, made (or given the new bounds) once the masters are up.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use flotilla_client::{Api, Client, Reason};
use flotilla_objects::nodepool::{NodePool, DEFAULT_NODE_POOL};
use flotilla_runtime::LeaderLoop;
use serde_json::json;

use crate::autoscale_args::{AgentRuntime, UpAutoscaleArgs};
use crate::provider_local::LocalProvider;
use crate::up_agents::AgentEnv;

/// The local provider and the loop over it, when --autoscale is given.
pub struct UpAutoscale {
    pub provider: Arc<LocalProvider>,
    pub leader_loop: Arc<dyn LeaderLoop>,
    pub min: i32,
    pub max: i32,
}

impl UpAutoscale {
    pub fn new(a: &UpAutoscaleArgs, env: AgentEnv) -> Result<Option<UpAutoscale>> {
        let Some((min, max)) = a.autoscale else {
            return Ok(None);
        };
        let fake = a.autoscale_runtime == AgentRuntime::Fake;
        if !fake && !nix::unistd::geteuid().is_root() {
            bail!("--autoscale starts agents with containers, which needs root: run as root, or with --autoscale-runtime fake");
        }
        let provider = Arc::new(LocalProvider::new(DEFAULT_NODE_POOL, fake, env));
        let leader_loop = a.scale.leader_loop(provider.clone())?;
        Ok(Some(UpAutoscale {
            provider,
            leader_loop,
            min,
            max,
        }))
    }

    /// Make the pool `default` with MIN and MAX, or give it them.
    pub async fn ensure_pool(&self, client: Client) -> Result<()> {
        let pools = Api::<NodePool>::all(client);
        let bounds = json!({"spec": {"minSize": self.min, "maxSize": self.max}});
        match pools.patch(DEFAULT_NODE_POOL, &bounds).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is(Reason::NotFound) => {}
            Err(e) => return Err(e).context("setting the bounds of node pool default"),
        }
        let pool: NodePool = serde_json::from_value(json!({
            "apiVersion": "flotilla.dev/v1", "kind": "NodePool",
            "metadata": {"name": DEFAULT_NODE_POOL},
            "spec": {"minSize": self.min, "maxSize": self.max},
        }))?;
        pools
            .create(&pool)
            .await
            .context("creating node pool default")?;
        Ok(())
    }
}
