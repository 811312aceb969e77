//! The `externalgrpc` node provider: a service that implements Kubernetes
//! cluster-autoscaler's externalgrpc CloudProvider API, so that providers
//! written for that autoscaler grow and shrink Flotilla's node pools.
//!
//! A node group of the service is the NodePool of the same name (the pool
//! keeps its own shape, min and max size; the group's are not read). Such
//! a service names its machines and grows a group by a delta, so this
//! provider [names nodes](NodeProvider::names_nodes): it is asked for a
//! size, and asks the service for the difference between that size and
//! the group's target size (NodeGroupTargetSize, then
//! NodeGroupIncreaseSize), which makes asking twice harmless. A node is
//! removed with NodeGroupDeleteNodes, once found among the group's
//! instances (NodeGroupNodes) by its name or a provider ID ending with it;
//! a node asked for that never registered is given up with
//! NodeGroupDecreaseTargetSize, only while the group's target is above its
//! instances (the service must not remove a running machine for it).
//! The group list (NodeGroups) is read at start and every 30 s, and
//! Refresh is called when a new leader first looks at a pool.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_autoscaler::{NodeProvider, ProviderError};
use flotilla_proto::externalgrpc as pb;
use pb::cloud_provider_client::CloudProviderClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// How often the list of node groups is read again.
const GROUPS_EVERY: Duration = Duration::from_secs(30);

/// The client of an externalgrpc CloudProvider service.
pub struct GrpcProvider {
    client: CloudProviderClient<Channel>,
    /// Pools it manages (empty: the service's node groups).
    pools: Vec<String>,
    /// The service's node groups, as last read.
    groups: Arc<Mutex<BTreeSet<String>>>,
}

fn failed(what: &str, pool: &str, e: tonic::Status) -> ProviderError {
    ProviderError::Failed(format!(
        "externalgrpc {what} for {pool}: {}: {}",
        e.code(),
        e.message()
    ))
}

impl GrpcProvider {
    /// A provider at `address` (http:// or https://); the group list is
    /// read in a task of the current runtime.
    pub fn new(
        address: &str,
        tls: Option<ClientTlsConfig>,
        pools: Vec<String>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut ep = Endpoint::from_shared(address.to_string())
            .map_err(|e| format!("--externalgrpc-address {address:?}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout);
        if let Some(tls) = tls {
            ep = ep
                .tls_config(tls)
                .map_err(|e| format!("--externalgrpc-address {address:?}: {e}"))?;
        }
        let client = CloudProviderClient::new(ep.connect_lazy());
        let groups: Arc<Mutex<BTreeSet<String>>> = Default::default();
        tokio::spawn(read_groups(client.clone(), Arc::downgrade(&groups)));
        Ok(GrpcProvider {
            client,
            pools,
            groups,
        })
    }

    async fn target_size(&self, pool: &str) -> Result<i32, ProviderError> {
        let r = self
            .client
            .clone()
            .node_group_target_size(pb::NodeGroupTargetSizeRequest { id: pool.into() })
            .await
            .map_err(|e| failed("NodeGroupTargetSize", pool, e))?;
        Ok(r.into_inner().target_size)
    }
}

/// Keep `groups` equal to the service's node groups while the provider lives.
async fn read_groups(
    mut client: CloudProviderClient<Channel>,
    groups: std::sync::Weak<Mutex<BTreeSet<String>>>,
) {
    let mut first = true;
    loop {
        let wait = match client.node_groups(pb::NodeGroupsRequest {}).await {
            Ok(r) => {
                let ids: BTreeSet<String> = r
                    .into_inner()
                    .node_groups
                    .into_iter()
                    .map(|g| g.id)
                    .collect();
                let Some(g) = groups.upgrade() else { return };
                let mut g = g.lock().unwrap_or_else(|e| e.into_inner());
                if *g != ids {
                    tracing::info!(groups = ?ids, "externalgrpc node groups");
                    *g = ids;
                }
                first = false;
                GROUPS_EVERY
            }
            Err(e) => {
                tracing::warn!(code = %e.code(), error = %e.message(), "externalgrpc NodeGroups failed");
                // Until the first answer no pool is managed: ask again soon.
                if first {
                    Duration::from_secs(1)
                } else {
                    GROUPS_EVERY
                }
            }
        };
        tokio::time::sleep(wait).await;
        if groups.strong_count() == 0 {
            return;
        }
    }
}

/// Whether instance `id` (a provider ID, `scheme://…/NAME`, or a name) is node `node`.
fn is_node(id: &str, node: &str) -> bool {
    id == node || id.rsplit('/').next() == Some(node)
}

#[async_trait::async_trait]
impl NodeProvider for GrpcProvider {
    fn name(&self) -> &str {
        "externalgrpc"
    }

    fn manages(&self, pool: &str) -> bool {
        let in_service = self
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(pool);
        in_service && (self.pools.is_empty() || self.pools.iter().any(|p| p == pool))
    }

    fn names_nodes(&self) -> bool {
        true
    }

    async fn resize(&self, pool: &str, target: i32) -> Result<(), ProviderError> {
        let now = self.target_size(pool).await?;
        if now >= target {
            return Ok(());
        }
        tracing::info!(
            pool,
            from = now,
            to = target,
            "externalgrpc NodeGroupIncreaseSize"
        );
        self.client
            .clone()
            .node_group_increase_size(pb::NodeGroupIncreaseSizeRequest {
                delta: target - now,
                id: pool.into(),
            })
            .await
            .map_err(|e| failed("NodeGroupIncreaseSize", pool, e))?;
        Ok(())
    }

    async fn create(&self, _pool: &str, _node: &str) -> Result<(), ProviderError> {
        // Never asked: a provider that names nodes is resized instead.
        Ok(())
    }

    async fn delete(&self, pool: &str, node: &str) -> Result<(), ProviderError> {
        let instances = self
            .client
            .clone()
            .node_group_nodes(pb::NodeGroupNodesRequest { id: pool.into() })
            .await
            .map_err(|e| failed("NodeGroupNodes", pool, e))?
            .into_inner()
            .instances;
        if let Some(i) = instances.iter().find(|i| is_node(&i.id, node)) {
            tracing::info!(pool, node, instance = %i.id, "externalgrpc NodeGroupDeleteNodes");
            let n = pb::ExternalGrpcNode {
                provider_id: i.id.clone(),
                name: node.into(),
                labels: HashMap::from([(
                    flotilla_objects::nodepool::NODE_POOL_LABEL.to_string(),
                    pool.to_string(),
                )]),
                annotations: HashMap::new(),
            };
            self.client
                .clone()
                .node_group_delete_nodes(pb::NodeGroupDeleteNodesRequest {
                    nodes: vec![n],
                    id: pool.into(),
                })
                .await
                .map_err(|e| failed("NodeGroupDeleteNodes", pool, e))?;
            return Ok(());
        }
        // Not a machine of the group: gone already, or asked for and never
        // registered; give up one pending request, if there is one.
        let target = self.target_size(pool).await?;
        if target > instances.len() as i32 {
            tracing::info!(
                pool,
                node,
                target,
                instances = instances.len(),
                "externalgrpc NodeGroupDecreaseTargetSize"
            );
            self.client
                .clone()
                .node_group_decrease_target_size(pb::NodeGroupDecreaseTargetSizeRequest {
                    delta: -1,
                    id: pool.into(),
                })
                .await
                .map_err(|e| failed("NodeGroupDecreaseTargetSize", pool, e))?;
        }
        Ok(())
    }

    async fn refresh(&self, pool: &str, _nodes: &[String]) -> Result<(), ProviderError> {
        self.client
            .clone()
            .refresh(pb::RefreshRequest {})
            .await
            .map_err(|e| failed("Refresh", pool, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_node;

    #[test]
    fn instances_are_matched_by_name_or_provider_id() {
        assert!(is_node("n1", "n1"));
        assert!(is_node("aws:///eu-west-1a/n1", "n1"));
        assert!(is_node("test://n1", "n1"));
        assert!(!is_node("test://n10", "n1"));
        assert!(!is_node("n10", "n1"));
    }
}
