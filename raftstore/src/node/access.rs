//! What an embedder reads of a running master besides proposals and read
//! barriers: who it is, how it was configured, when it stops, and this
//! replica's state (reads without a barrier).

use super::*;
use crate::error::{RangeError, StoreError};
use crate::kv::{RangeRequest, RangeResponse};

impl Master {
    /// This master's member id (derived from its name: see
    /// [`MasterConfig::name`]), as response headers and the member list
    /// give it.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The configuration this master was started with.
    pub fn config(&self) -> &MasterConfig {
        &self.cfg
    }

    /// A token cancelled when this master stops, for work that must end
    /// with it. Cancelling it stops nothing: [`crate::RunningMaster::shutdown`]
    /// stops the master.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.child_token()
    }

    /// Hold this master's applies until the returned guard is dropped: a
    /// fault for tests (a state machine that lags behind its log, as
    /// behind a slow disk), not an operation. Meanwhile entries are still
    /// appended, acknowledged and committed, and this master may still be
    /// elected.
    #[doc(hidden)]
    pub fn hold_applies(&self) -> AppliesHeld {
        self.applies_held.send_replace(true);
        AppliesHeld(self.applies_held.clone())
    }

    /// The last revision this master's replica has applied. Without a read
    /// barrier first ([`Master::linearize`]) it may be behind the leader's.
    pub fn revision(&self) -> i64 {
        self.store.revision()
    }

    /// The revision this replica's history is compacted to: reads and
    /// watches below it are refused.
    pub fn compact_revision(&self) -> i64 {
        self.store.compact_revision()
    }

    /// Read a range from this master's replica as it is now (a
    /// serializable read; [`Master::linearize`] first for a linearizable
    /// one). Blocking: it reads RocksDB, so call it off the async runtime's
    /// threads (`spawn_blocking`).
    pub fn range(&self, r: &RangeRequest) -> std::result::Result<RangeResponse, RangeError> {
        self.store.range(r)
    }

    /// Read a range from this replica as [`Master::range`] does, from async
    /// code, at the revision the replica has reached when it starts (or at
    /// `r.revision` if that is set). Returns the answer and that current
    /// revision. A read of one key runs in place: a seek in RocksDB costs
    /// less than waking a blocking thread for it, which was a fifth of a
    /// get's CPU at 256 clients; any other read runs on a blocking thread.
    pub async fn range_now(
        &self,
        mut r: RangeRequest,
    ) -> std::result::Result<(RangeResponse, i64), RangeError> {
        // Read at a revision fixed before the read, so that a write applied
        // meanwhile cannot make the data newer than the revision reported
        // (a client that lists, then watches from it + 1, would see that
        // write twice).
        let rev = self.store.revision();
        if r.revision <= 0 {
            r.revision = rev;
        }
        if let Some(answer) = self.store.range_if_point(&r) {
            return answer.map(|a| (a, rev));
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.range(&r).map(|a| (a, rev)))
            .await
            .map_err(|e| RangeError::Store(StoreError::ReadThread(e.to_string())))?
    }
}

/// Applies held on a master until dropped ([`Master::hold_applies`]).
#[doc(hidden)]
pub struct AppliesHeld(Arc<tokio::sync::watch::Sender<bool>>);

impl Drop for AppliesHeld {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}
