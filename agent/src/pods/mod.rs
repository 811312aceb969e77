//! The pods bound to this node: a cache of them (a watch on
//! `spec.nodeName`), one worker per pod ([`worker`]) fed with every change
//! of its pod, and a sweep that removes what the runtime runs for pods that
//! no longer exist (deleted while the agent was down, or never ours).

pub mod dns;
pub mod hosts;
pub mod probe;
pub mod runtime;
pub mod satoken;
pub mod spec;
pub mod status;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use flotilla_client::{Cache, Client};
use flotilla_objects::core::Pod;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::cri::Cri;

/// What every pod worker shares.
pub struct Ctx {
    pub cfg: AgentConfig,
    pub cri: Cri,
    pub client: Client,
}

struct Worker {
    tx: watch::Sender<Option<Arc<Pod>>>,
    task: JoinHandle<()>,
}

/// Grace given to containers of pods that no longer exist.
const ORPHAN_GRACE: i64 = 2;

/// Run the pods of `cache` until `stop` is cancelled.
pub async fn run(ctx: Arc<Ctx>, cache: Cache<Pod>, stop: CancellationToken) {
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut changes = cache.changes();
    let mut sweep = tokio::time::interval(ctx.cfg.resync_interval);
    loop {
        let pods = cache.list();
        let live: HashSet<String> = pods.iter().map(|p| p.metadata.uid.clone()).collect();
        workers.retain(|uid, w| {
            if w.task.is_finished() {
                return false;
            }
            if !live.contains(uid) {
                // Its worker stops what runs and ends.
                w.tx.send_replace(None);
            }
            true
        });
        for p in pods {
            let uid = p.metadata.uid.clone();
            match workers.get(&uid) {
                Some(w) => {
                    w.tx.send_if_modified(|cur| {
                        if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, &p)) {
                            false
                        } else {
                            *cur = Some(p.clone());
                            true
                        }
                    });
                }
                None => {
                    let (tx, rx) = watch::channel(Some(p));
                    let task = tokio::spawn(worker::run(ctx.clone(), rx));
                    workers.insert(uid, Worker { tx, task });
                }
            }
        }
        if let Some(m) = &ctx.cfg.metrics {
            m.running_pods.set(workers.len() as i64);
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            r = changes.changed() => if r.is_err() { break },
            _ = sweep.tick() => {
                if cache.is_ready() {
                    let known: HashSet<String> = workers.keys().cloned().collect();
                    if let Err(e) = sweep_orphans(&ctx, &known).await {
                        tracing::warn!("sweeping pods that no longer exist: {e}");
                    }
                }
            }
        }
    }
    for (_, w) in workers {
        w.task.abort();
    }
}

/// Remove sandboxes of this node whose pod is not one we know.
async fn sweep_orphans(ctx: &Ctx, known: &HashSet<String>) -> crate::Result<()> {
    let boxes = ctx
        .cri
        .clone()
        .list_pod_sandboxes(HashMap::from([(
            spec::LABEL_NODE.to_string(),
            ctx.cfg.name.clone(),
        )]))
        .await?;
    let mut seen = HashSet::new();
    for b in boxes {
        let uid = b
            .labels
            .get(spec::LABEL_POD_UID)
            .cloned()
            .unwrap_or_default();
        if known.contains(&uid) || !seen.insert(uid.clone()) {
            continue;
        }
        tracing::info!(pod_uid = %uid, "removing the containers of a pod that no longer exists");
        runtime::kill_pod(ctx, &uid, ORPHAN_GRACE, None).await?;
    }
    Ok(())
}

/// How long the agent waits for its pod cache at start.
pub const CACHE_TIMEOUT: Duration = Duration::from_secs(60);
