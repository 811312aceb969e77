//! Leader-only loops: started when this master becomes the Raft leader,
//! cancelled (all of them) the moment it stops being leader, and awaited
//! before any loop of a later term starts, so that no loop survives into
//! another master's term, or into another term of this one.
//!
//! Each term gets an object API fenced with that term (every write a loop
//! makes is refused by the store once the term is over, whatever the loop
//! still believes) and its own set of shared informers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_objects::api::ObjectApi;
use flotilla_objects::Resource;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::informer::Informer;

/// The object API as a loop of one term sees it.
pub type ApiForTerm = Arc<dyn Fn(u64) -> Arc<dyn ObjectApi> + Send + Sync>;

/// Informers shared by the loops of one term: one per kind, made on first
/// request, so that only the kinds running loops ask for are watched.
#[derive(Clone)]
pub struct Informers {
    api: Arc<dyn ObjectApi>,
    by_kind: Arc<Mutex<HashMap<&'static str, Box<dyn std::any::Any + Send + Sync>>>>,
}

impl Informers {
    pub fn new(api: Arc<dyn ObjectApi>) -> Self {
        Informers {
            api,
            by_kind: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The informer of kind `K` (started on first request).
    pub fn get<K: Resource>(&self) -> Informer<K> {
        let mut m = self.by_kind.lock().unwrap_or_else(|e| e.into_inner());
        let kind = K::info().plural;
        if let Some(i) = m.get(kind).and_then(|b| b.downcast_ref::<Informer<K>>()) {
            return i.clone();
        }
        let i = Informer::<K>::spawn(self.api.clone());
        m.insert(kind, Box::new(i.clone()));
        i
    }

    /// Use `informer` for kind `K` (one watching with other parameters,
    /// say); later requests for `K` get it.
    pub fn insert<K: Resource>(&self, informer: Informer<K>) {
        self.by_kind
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(K::info().plural, Box::new(informer));
    }

    /// The kinds watched so far.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut k: Vec<_> = self
            .by_kind
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        k.sort();
        k
    }

    pub fn api(&self) -> &Arc<dyn ObjectApi> {
        &self.api
    }
}

/// What a loop gets for its term.
#[derive(Clone)]
pub struct LeaderContext {
    pub term: u64,
    /// The object API, fenced with `term`.
    pub api: Arc<dyn ObjectApi>,
    pub informers: Informers,
    /// Cancelled when the term ends for this master.
    pub stop: CancellationToken,
}

/// A loop that runs only on the leader.
pub trait LeaderLoop: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Run until `ctx.stop` is cancelled; must return promptly then.
    fn run(&self, ctx: LeaderContext) -> BoxFuture<'static, ()>;
}

/// Runs the leader loops as leadership comes and goes.
pub struct Manager {
    master: String,
    api_for_term: ApiForTerm,
    loops: Vec<Arc<dyn LeaderLoop>>,
    /// The term whose loops are running (0: none), for tests and status.
    running: watch::Sender<u64>,
}

/// How long the loops of an ended term get to return before the next term
/// waits on them with a warning.
const STOP_WARN: Duration = Duration::from_secs(5);

impl Manager {
    /// `master` names this master in logs; `api_for_term` gives the object
    /// API fenced with a term.
    pub fn new(master: &str, api_for_term: ApiForTerm) -> Self {
        Manager {
            master: master.to_string(),
            api_for_term,
            loops: Vec::new(),
            running: watch::channel(0).0,
        }
    }

    pub fn add(&mut self, l: Arc<dyn LeaderLoop>) {
        self.loops.push(l);
    }

    /// The term whose loops run now (0: none).
    pub fn running(&self) -> watch::Receiver<u64> {
        self.running.subscribe()
    }

    /// Follow `leadership` (Some(term) while this master leads) until
    /// `shutdown`.
    pub async fn run(
        &self,
        mut leadership: watch::Receiver<Option<u64>>,
        shutdown: CancellationToken,
    ) {
        let names: Vec<&str> = self.loops.iter().map(|l| l.name()).collect();
        loop {
            let term = *leadership.borrow_and_update();
            if let Some(term) = term {
                self.run_term(term, &names, &mut leadership, &shutdown)
                    .await;
                if shutdown.is_cancelled() {
                    return;
                }
                continue;
            }
            tokio::select! {
                r = leadership.changed() => if r.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Run every loop for `term` until leadership changes or shutdown, then
    /// stop them all and wait for them.
    async fn run_term(
        &self,
        term: u64,
        names: &[&str],
        leadership: &mut watch::Receiver<Option<u64>>,
        shutdown: &CancellationToken,
    ) {
        let api = (self.api_for_term)(term);
        let stop = shutdown.child_token();
        let ctx = LeaderContext {
            term,
            api: api.clone(),
            informers: Informers::new(api),
            stop: stop.clone(),
        };
        tracing::info!(master = %self.master, term, loops = ?names, "leading: starting the leader loops");
        let tasks: Vec<_> = self
            .loops
            .iter()
            .map(|l| {
                let (l, c) = (l.clone(), ctx.clone());
                tokio::spawn(async move {
                    let name = l.name();
                    l.run(c).await;
                    tracing::debug!(loop_name = name, "leader loop returned");
                })
            })
            .collect();
        self.running.send_replace(term);
        // Until this term ends for us (or the master shuts down).
        tokio::select! {
            _ = leadership.wait_for(|t| *t != Some(term)) => {}
            _ = shutdown.cancelled() => {}
        }
        let next = *leadership.borrow();
        stop.cancel();
        tracing::info!(master = %self.master, term, next = ?next, "no longer leading in this term: stopping the leader loops");
        let all = futures::future::join_all(tasks);
        tokio::pin!(all);
        if tokio::time::timeout(STOP_WARN, &mut all).await.is_err() {
            tracing::warn!(master = %self.master, term, "leader loops are slow to stop; waiting for them");
            all.await;
        }
        self.running.send_replace(0);
        tracing::info!(master = %self.master, term, "leader loops stopped");
    }
}
