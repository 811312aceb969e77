//! etcd's Watch service: ordered, gap-free event streams, resumable from any
//! revision that is not compacted.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use flotilla_proto::etcdserverpb as pb;
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::convert;
use crate::kv::{in_range, Event, EventType, KvError};
use crate::mvcc::RangeError;
use crate::node::Master;
use crate::watch::HubMsg;

pub struct WatchService {
    pub master: Master,
}

type Tx = mpsc::Sender<Result<pb::WatchResponse, Status>>;

/// How often a watcher that asked for progress notifications gets one.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// Events read from history per batch.
const HISTORY_BATCH: usize = 1000;

#[tonic::async_trait]
impl pb::watch_server::Watch for WatchService {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

    async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(256);
        let m = self.master.clone();
        tokio::spawn(async move {
            let mut watchers: HashMap<i64, tokio::task::JoinHandle<()>> = HashMap::new();
            let mut next_id: i64 = 0;
            while let Some(msg) = inbound.next().await {
                let Ok(msg) = msg else { break };
                use pb::watch_request::RequestUnion;
                match msg.request_union {
                    Some(RequestUnion::CreateRequest(c)) => {
                        watchers.retain(|_, h| !h.is_finished());
                        let id = if c.watch_id != 0 {
                            if watchers.contains_key(&c.watch_id) {
                                let resp = pb::WatchResponse {
                                    header: Some(m.header(m.store.revision())),
                                    watch_id: c.watch_id,
                                    created: true,
                                    canceled: true,
                                    cancel_reason: "etcdserver: duplicate watch ID".into(),
                                    ..Default::default()
                                };
                                if tx.send(Ok(resp)).await.is_err() {
                                    break;
                                }
                                continue;
                            }
                            c.watch_id
                        } else {
                            while watchers.contains_key(&next_id) {
                                next_id += 1;
                            }
                            next_id
                        };
                        let h = tokio::spawn(run_watcher(m.clone(), c, id, tx.clone()));
                        watchers.insert(id, h);
                    }
                    Some(RequestUnion::CancelRequest(c)) => {
                        if let Some(h) = watchers.remove(&c.watch_id) {
                            h.abort();
                            let resp = pb::WatchResponse {
                                header: Some(m.header(m.store.revision())),
                                watch_id: c.watch_id,
                                canceled: true,
                                ..Default::default()
                            };
                            if tx.send(Ok(resp)).await.is_err() {
                                break;
                            }
                        }
                    }
                    Some(RequestUnion::ProgressRequest(_)) => {
                        let resp = pb::WatchResponse {
                            header: Some(m.header(m.store.revision())),
                            watch_id: -1,
                            ..Default::default()
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            break;
                        }
                    }
                    None => {}
                }
            }
            for (_, h) in watchers {
                h.abort();
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

struct Spec {
    id: i64,
    key: Vec<u8>,
    end: Vec<u8>,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
}

impl Spec {
    fn wants(&self, ev: &Event) -> bool {
        in_range(&ev.kv.key, &self.key, &self.end)
            && !(self.no_put && ev.kind == EventType::Put)
            && !(self.no_delete && ev.kind == EventType::Delete)
    }
}

async fn send_events(m: &Master, tx: &Tx, spec: &Spec, rev: i64, events: &[Event]) -> bool {
    let evs: Vec<_> = events
        .iter()
        .filter(|e| spec.wants(e))
        .map(|e| convert::event_to_pb(e, spec.prev_kv))
        .collect();
    if evs.is_empty() {
        return true;
    }
    let resp = pb::WatchResponse {
        header: Some(m.header(rev)),
        watch_id: spec.id,
        events: evs,
        ..Default::default()
    };
    tx.send(Ok(resp)).await.is_ok()
}

async fn send_compacted(m: &Master, tx: &Tx, id: i64, compact_revision: i64) {
    let resp = pb::WatchResponse {
        header: Some(m.header(m.store.revision())),
        watch_id: id,
        canceled: true,
        compact_revision,
        cancel_reason: KvError::Compacted { compact_revision }.to_string(),
        ..Default::default()
    };
    let _ = tx.send(Ok(resp)).await;
}

/// Send history from `next` up to the current revision. Returns the next
/// revision to send, or None when the watcher ended.
async fn catch_up(m: &Master, tx: &Tx, spec: &Spec, mut next: i64) -> Option<i64> {
    loop {
        if next > m.store.revision() {
            return Some(next);
        }
        let store = m.store.clone();
        let (k, e) = (spec.key.clone(), spec.end.clone());
        let res =
            tokio::task::spawn_blocking(move || store.history(next, &k, &e, HISTORY_BATCH)).await;
        match res {
            Ok(Ok((batches, after))) => {
                for (rev, evs) in &batches {
                    if !send_events(m, tx, spec, *rev, evs).await {
                        return None;
                    }
                }
                if after <= next {
                    return Some(next);
                }
                next = after;
            }
            Ok(Err(RangeError::Kv(KvError::Compacted { compact_revision }))) => {
                send_compacted(m, tx, spec.id, compact_revision).await;
                return None;
            }
            Ok(Err(e)) => {
                let _ = tx
                    .send(Err(Status::internal(format!("reading watch history: {e}"))))
                    .await;
                return None;
            }
            Err(e) => {
                let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                return None;
            }
        }
    }
}

#[tracing::instrument(level = "debug", skip(m, c, tx))]
async fn run_watcher(m: Master, c: pb::WatchCreateRequest, id: i64, tx: Tx) {
    use pb::watch_create_request::FilterType;
    let spec = Spec {
        id,
        no_put: c.filters.contains(&(FilterType::Noput as i32)),
        no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
        key: c.key,
        end: c.range_end,
        prev_kv: c.prev_kv,
    };
    // Subscribe before reading the revision, so that nothing falls between.
    let mut sub = m.hub.subscribe();
    let cur = m.store.revision();
    let created = pb::WatchResponse {
        header: Some(m.header(cur)),
        watch_id: id,
        created: true,
        ..Default::default()
    };
    if tx.send(Ok(created)).await.is_err() {
        return;
    }
    let compacted = m.store.compact_revision();
    if c.start_revision > 0 && c.start_revision < compacted {
        send_compacted(&m, &tx, id, compacted).await;
        return;
    }
    let mut next = if c.start_revision > 0 {
        c.start_revision
    } else {
        cur + 1
    };
    match catch_up(&m, &tx, &spec, next).await {
        Some(n) => next = n,
        None => return,
    }
    let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
    progress.tick().await;
    loop {
        tokio::select! {
            msg = sub.recv() => match msg {
                Ok(HubMsg::Revision { revision, events }) => {
                    if revision < next {
                        continue;
                    }
                    if revision > next {
                        // Something was not seen live: fill the gap from history.
                        match catch_up(&m, &tx, &spec, next).await { Some(n) => next = n, None => return }
                        if revision < next { continue; }
                    }
                    if !send_events(&m, &tx, &spec, revision, &events).await {
                        return;
                    }
                    next = revision + 1;
                }
                Ok(HubMsg::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    sub = m.hub.subscribe();
                    match catch_up(&m, &tx, &spec, next).await { Some(n) => next = n, None => return }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = progress.tick(), if c.progress_notify => {
                let resp = pb::WatchResponse { header: Some(m.header(next - 1)), watch_id: id, ..Default::default() };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
    }
}
