//! Providers: what creates and deletes the machines of a pool. The
//! autoscaler calls them with the node's name, which it chose and wrote
//! down first, so every call must be idempotent: creating a node that
//! exists (or is coming) and deleting one that is gone both succeed.
//!
//! A provider may instead name its machines itself (a node-group service
//! such as cluster-autoscaler's externalgrpc, which grows a group by a
//! delta): it says so with [`NodeProvider::names_nodes`], and is then asked
//! for a pool size ([`NodeProvider::resize`], given the absolute target so
//! that asking twice is harmless) rather than for named nodes; the names
//! the autoscaler wrote for the nodes asked for are placeholders, and any
//! new node of the pool fulfils the oldest.

/// Why a provider call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider does not manage this pool.
    #[error("pool {0:?} is not managed by this provider")]
    UnknownPool(String),
    /// The machine could not be created or deleted (worth retrying).
    #[error("{0}")]
    Failed(String),
}

/// A source of machines for node pools.
#[async_trait::async_trait]
pub trait NodeProvider: Send + Sync + 'static {
    /// The provider's name (for logs and events).
    fn name(&self) -> &str;

    /// Whether the autoscaler may grow and shrink `pool` through this provider.
    fn manages(&self, pool: &str) -> bool;

    /// Make a machine that registers as node `node` in `pool`. Idempotent:
    /// a node that already runs, or is on its way, is a success.
    async fn create(&self, pool: &str, node: &str) -> Result<(), ProviderError>;

    /// Remove machine `node` of `pool`. Idempotent: a node that is gone is a success.
    async fn delete(&self, pool: &str, node: &str) -> Result<(), ProviderError>;

    /// Whether the provider names the machines it makes (see the module
    /// doc). Default: false, the autoscaler names them.
    fn names_nodes(&self) -> bool {
        false
    }

    /// Only for providers that name their machines: make the pool at least
    /// `target` machines, counting those on their way. Idempotent: it is
    /// asked again, with the same target, until the nodes register.
    async fn resize(&self, _pool: &str, _target: i32) -> Result<(), ProviderError> {
        Ok(())
    }

    /// The pool's nodes as the store knows them, once per term: a provider
    /// that runs machines itself may start the ones it does not run (after
    /// its own restart, say). Default: nothing.
    async fn refresh(&self, _pool: &str, _nodes: &[String]) -> Result<(), ProviderError> {
        Ok(())
    }
}
