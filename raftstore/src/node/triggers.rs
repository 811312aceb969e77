//! What the store's own signals ask of Raft: a heartbeat once a commit
//! index held back for the leader's fsync is on disk, and a snapshot once
//! the log grew past its size threshold (see [`crate::log_store::LogBytes`]).

use std::future::Future;

use super::*;

/// Start both duties; they end with `shutdown` or with Raft.
pub(super) fn spawn(
    raft: &Raft,
    durable: Arc<crate::durable::Durability>,
    log_bytes: Arc<crate::log_store::LogBytes>,
    shutdown: &CancellationToken,
) {
    // Followers learn of the commit now, not one heartbeat interval later
    // (which a follower's linearizable read would wait for).
    let r = raft.clone();
    tokio::spawn(each_time(
        shutdown.clone(),
        move || {
            let d = durable.clone();
            async move { d.held_back().await }
        },
        move || {
            let r = r.clone();
            async move { r.trigger().heartbeat().await.is_ok() }
        },
    ));
    // With large batches, the 10,000 entries of `--snapshot-logs` can hold
    // a million writes: the log was never purged during a benchmark's
    // million puts.
    let r = raft.clone();
    tokio::spawn(each_time(
        shutdown.clone(),
        move || {
            let b = log_bytes.clone();
            async move {
                b.crossed().await;
                tracing::info!(
                    since_purge = b.since_purge(),
                    written = b.written(),
                    "the log grew past its size threshold: taking a snapshot"
                );
            }
        },
        move || {
            let r = r.clone();
            async move { r.trigger().snapshot().await.is_ok() }
        },
    ));
}

/// Run `act` each time `signal` resolves, until `shutdown` or until `act`
/// says Raft is gone.
async fn each_time<S, SF, A, AF>(shutdown: CancellationToken, mut signal: S, mut act: A)
where
    S: FnMut() -> SF,
    SF: Future<Output = ()>,
    A: FnMut() -> AF,
    AF: Future<Output = bool>,
{
    loop {
        tokio::select! {
            () = signal() => {}
            () = shutdown.cancelled() => return,
        }
        if !act().await {
            return;
        }
    }
}
