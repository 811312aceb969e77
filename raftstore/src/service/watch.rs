//! etcd's Watch service: ordered, gap-free event streams, resumable from any
//! revision that is not compacted.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use flotilla_proto::etcdserverpb as pb;
use futures::Stream;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::convert;
use crate::kv::{in_range, Event, EventType, KvError};
use crate::node::Master;
use crate::watch::{follow, Follower, WatchItem};

pub struct WatchService {
    pub master: Master,
}

type Tx = mpsc::Sender<Result<pb::WatchResponse, Status>>;

/// How often a watcher that asked for progress notifications gets one.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

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
                        // Answered here, in the order of the requests and
                        // before any later cancel, as etcd does (a watcher
                        // task could be aborted before it ran, or answer
                        // after a later one).
                        let follower =
                            follow(&m, c.key.clone(), c.range_end.clone(), c.start_revision, 64);
                        let created = pb::WatchResponse {
                            header: Some(m.header(follower.start_revision)),
                            watch_id: id,
                            created: true,
                            ..Default::default()
                        };
                        if tx.send(Ok(created)).await.is_err() {
                            break;
                        }
                        let h = tokio::spawn(run_watcher(m.clone(), c, id, follower, tx.clone()));
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

fn events_response(
    m: &Master,
    spec: &Spec,
    rev: i64,
    events: &[Event],
) -> Option<pb::WatchResponse> {
    let evs: Vec<_> = events
        .iter()
        .filter(|e| spec.wants(e))
        .map(|e| convert::event_to_pb(e, spec.prev_kv))
        .collect();
    if evs.is_empty() {
        return None;
    }
    Some(pb::WatchResponse {
        header: Some(m.header(rev)),
        watch_id: spec.id,
        events: evs,
        ..Default::default()
    })
}

fn compacted_response(m: &Master, id: i64, compact_revision: i64) -> pb::WatchResponse {
    pb::WatchResponse {
        header: Some(m.header(m.store.revision())),
        watch_id: id,
        canceled: true,
        compact_revision,
        cancel_reason: KvError::Compacted { compact_revision }.to_string(),
        ..Default::default()
    }
}

#[tracing::instrument(level = "debug", skip(m, c, follower, tx))]
async fn run_watcher(
    m: Master,
    c: pb::WatchCreateRequest,
    id: i64,
    mut follower: Follower,
    tx: Tx,
) {
    use pb::watch_create_request::FilterType;
    let spec = Spec {
        id,
        no_put: c.filters.contains(&(FilterType::Noput as i32)),
        no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
        key: c.key,
        end: c.range_end,
        prev_kv: c.prev_kv,
    };
    let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
    progress.tick().await;
    loop {
        tokio::select! {
            item = follower.rx.recv() => match item {
                Some(WatchItem::Events { revision, events }) => {
                    if let Some(resp) = events_response(&m, &spec, revision, &events) {
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                }
                Some(WatchItem::Compacted { compact_revision }) => {
                    let _ = tx.send(Ok(compacted_response(&m, id, compact_revision))).await;
                    return;
                }
                Some(WatchItem::Failed(e)) => {
                    let _ = tx.send(Err(Status::internal(e))).await;
                    return;
                }
                None => return,
            },
            _ = progress.tick(), if c.progress_notify => {
                let done = follower.next.load(Ordering::Acquire) - 1;
                let resp = pb::WatchResponse { header: Some(m.header(done)), watch_id: id, ..Default::default() };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
    }
}
