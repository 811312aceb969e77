//! Watch: the changes of a kind (in a namespace, through selectors) from a
//! revision on, served from the kind's watch cache while it reaches back far
//! enough and from the store's history otherwise. Every event is delivered
//! once and in order, or the stream ends with Gone: never a silent gap.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flotilla_objects::api::{ApiError, EventType, ListParams, Reason, WatchParams};
use flotilla_objects::registry::ResourceInfo;
use flotilla_objects::selector::{FieldSelector, Selector};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::json::{to_bytes, with_rv};
use super::read::{collection, matches, selected};
use super::ApiServer;
use crate::store::{prefix_end, Change, Kv, Store, WatchMsg};
use crate::watch_cache::{CachedEvent, Msg, WatchCaches};

pub type WatchReceiver = mpsc::Receiver<Result<(EventType, Bytes), ApiError>>;

impl ApiServer {
    /// Watch a kind. "" or "0": the current objects first, as ADDED; a
    /// revision: the changes after it. A compacted start ends with Gone.
    pub async fn watch(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        o: &WatchParams,
    ) -> Result<WatchReceiver, ApiError> {
        let (ls, fs, prefix) = collection(info, ns, &o.label_selector, &o.field_selector)?;
        let (tx, rx) = mpsc::channel(256);
        let mut initial = Vec::new();
        let from = if o.resource_version.is_empty() || o.resource_version == "0" {
            // "": the current objects, read consistently; "0": any recent
            // state (the cache's), as Kubernetes has it.
            let l = self
                .list_raw(
                    info,
                    ns,
                    &ListParams {
                        label_selector: o.label_selector.clone(),
                        field_selector: o.field_selector.clone(),
                        resource_version: o.resource_version.clone(),
                        ..Default::default()
                    },
                )
                .await?;
            initial = l.items;
            l.resource_version + 1
        } else {
            let rv: i64 = o.resource_version.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {:?}", o.resource_version))
            })?;
            if rv < 0 {
                return Err(ApiError::bad_request(format!(
                    "invalid resourceVersion {rv}"
                )));
            }
            rv + 1
        };
        let interval = if o.bookmark_interval.is_zero() {
            Duration::from_secs(10)
        } else {
            o.bookmark_interval.max(Duration::from_millis(100))
        };
        let w = Watcher {
            info,
            ls,
            fs,
            prefix,
            tx,
            bookmarks: o.bookmarks,
            interval,
            requested: o.resource_version.clone(),
            cursor: Cursor::starting_at(from),
            last_bookmark: from - 1,
        };
        let (caches, store) = (self.caches.clone(), self.store.clone());
        tokio::spawn(async move {
            for v in initial {
                if w.tx
                    .send(Ok((EventType::Added, v.bytes.clone())))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            w.run(caches, store).await;
        });
        Ok(rx)
    }
}

/// Where a watcher is: every event before revision `rev` was forwarded, and
/// of `rev` itself all of them (`done`) or the first `count`.
#[derive(Clone, Copy)]
pub(crate) struct Cursor {
    rev: i64,
    count: usize,
    done: bool,
}

impl Cursor {
    /// A watcher that wants the events from revision `from` on.
    pub(crate) fn starting_at(from: i64) -> Cursor {
        Cursor {
            rev: from - 1,
            count: 0,
            done: true,
        }
    }

    /// Whether an event of `revision` is new; notes it if so.
    /// `seen_in_revision` counts the events of each revision met on this
    /// pass, to skip the ones forwarded before a resume.
    pub(crate) fn accept(&mut self, revision: i64, seen_in_revision: &mut (i64, usize)) -> bool {
        if seen_in_revision.0 != revision {
            *seen_in_revision = (revision, 0);
        }
        seen_in_revision.1 += 1;
        if revision < self.rev {
            return false;
        }
        if revision == self.rev {
            if self.done || seen_in_revision.1 <= self.count {
                return false;
            }
            self.count += 1;
            return true;
        }
        self.rev = revision;
        self.count = 1;
        self.done = false;
        true
    }

    /// The revision to resume from (the current one when more of its
    /// events may follow).
    pub(crate) fn resume_from(&self) -> i64 {
        if self.done {
            self.rev + 1
        } else {
            self.rev
        }
    }
}

/// One watch's forwarding task.
struct Watcher {
    info: &'static ResourceInfo,
    ls: Selector,
    fs: FieldSelector,
    /// Keys of the watched namespace (or kind).
    prefix: Vec<u8>,
    tx: mpsc::Sender<Result<(EventType, Bytes), ApiError>>,
    bookmarks: bool,
    interval: Duration,
    requested: String,
    cursor: Cursor,
    last_bookmark: i64,
}

impl Watcher {
    /// Serve from the kind's watch cache while it reaches back far enough;
    /// otherwise follow the store from where the watcher is.
    async fn run(mut self, caches: Arc<WatchCaches>, store: Arc<dyn Store>) {
        loop {
            let cache = caches.get(self.info);
            let Some(joined) = cache.join(self.cursor.resume_from(), store.compact_revision())
            else {
                return self.follow_store(store).await;
            };
            let mut seen = (0, 0);
            for ev in &joined.backlog {
                if !self.forward_cached(ev, &mut seen).await {
                    return;
                }
            }
            let mut rx = joined.rx;
            let mut tick = tokio::time::interval(self.interval);
            tick.tick().await;
            loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Ok(Msg::Event(ev)) => {
                            if !self.forward_cached(&ev, &mut seen).await {
                                return;
                            }
                        }
                        // The cache stopped, or this watcher fell too far
                        // behind it: resume from the cursor.
                        Ok(Msg::Closed) | Err(_) => break,
                    },
                    _ = tick.tick(), if self.bookmarks => {
                        if let Some(p) = cache.progress(&rx) {
                            if !self.bookmark(p).await {
                                return;
                            }
                        }
                    }
                    _ = self.tx.closed() => return,
                }
            }
        }
    }

    async fn forward_cached(&mut self, ev: &CachedEvent, seen: &mut (i64, usize)) -> bool {
        if !self.cursor.accept(ev.revision, seen) || !ev.obj.key.starts_with(&self.prefix) {
            return true;
        }
        let was = ev
            .prev
            .as_ref()
            .is_some_and(|p| selected(&self.ls, &self.fs, p));
        let kind = if ev.deleted {
            was.then_some(EventType::Deleted)
        } else {
            match (was, selected(&self.ls, &self.fs, &ev.obj)) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            }
        };
        match kind {
            Some(k) => self.tx.send(Ok((k, ev.obj.bytes.clone()))).await.is_ok(),
            None => true,
        }
    }

    async fn bookmark(&mut self, rev: i64) -> bool {
        let rev = rev
            .max(self.last_bookmark)
            .max(self.cursor.resume_from() - 1);
        self.last_bookmark = rev;
        let bm = json!({
            "apiVersion": self.info.api_version(),
            "kind": self.info.kind,
            "metadata": {"resourceVersion": rev.to_string()},
        });
        self.tx
            .send(Ok((EventType::Bookmark, to_bytes(&bm))))
            .await
            .is_ok()
    }

    /// A follower of its own, reading the store's history (a start before
    /// the cache's window, or a cache that failed).
    async fn follow_store(mut self, store: Arc<dyn Store>) {
        let stream = store.watch(
            &self.prefix,
            &prefix_end(&self.prefix),
            self.cursor.resume_from(),
        );
        let mut rx = stream.rx;
        let mut tick = tokio::time::interval(self.interval);
        tick.tick().await;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(WatchMsg::Changes { revision, changes }) => {
                        let mut seen = (0, 0);
                        for c in changes {
                            if !self.cursor.accept(revision, &mut seen) {
                                continue;
                            }
                            match translate(&self.ls, &self.fs, revision, c) {
                                Ok(Some((k, v))) => {
                                    if self.tx.send(Ok((k, to_bytes(&v)))).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(None) => {}
                                Err(why) => {
                                    // Without the object, the event cannot be
                                    // filtered or reported: the watcher must
                                    // relist rather than miss it.
                                    tracing::warn!(kind = self.info.kind, revision, why, "ending a watch with Gone");
                                    let _ = self
                                        .tx
                                        .send(Err(ApiError::new(
                                            Reason::Gone,
                                            format!("too old resource version: {} (an event of revision {revision} can no longer be read: {why})", self.requested),
                                        )))
                                        .await;
                                    return;
                                }
                            }
                        }
                    }
                    Some(WatchMsg::Compacted { compact_revision }) => {
                        let _ = self
                            .tx
                            .send(Err(ApiError::new(
                                Reason::Gone,
                                format!("too old resource version: {} ({compact_revision})", self.requested),
                            )))
                            .await;
                        return;
                    }
                    Some(WatchMsg::Failed(m)) => {
                        let _ = self.tx.send(Err(ApiError::internal(m))).await;
                        return;
                    }
                    None => return,
                },
                _ = tick.tick(), if self.bookmarks => {
                    // Load the follower's progress first: if the channel is
                    // then empty, every event below it has been forwarded
                    // (it publishes progress only after queueing the
                    // events). Otherwise bookmark only what was forwarded.
                    let done = stream.progress.load(Ordering::Acquire) - 1;
                    let rev = if rx.is_empty() { done } else { self.cursor.resume_from() - 1 };
                    if !self.bookmark(rev).await {
                        return;
                    }
                }
                _ = self.tx.closed() => return,
            }
        }
    }
}

/// One stored change as a watch event, through the selectors: an object that
/// stops matching is reported DELETED, one that starts matching ADDED.
/// Err when the change cannot be read (a delete whose previous version is
/// gone, an object that is not JSON).
fn translate(
    ls: &Selector,
    fs: &FieldSelector,
    revision: i64,
    c: Change,
) -> Result<Option<(EventType, Value)>, &'static str> {
    let parse = |kv: &Kv| serde_json::from_slice::<Value>(&kv.value).ok();
    match c {
        Change::Put { kv, prev } => {
            let cur = parse(&kv).ok_or("the object is not valid JSON")?;
            let was = prev
                .as_ref()
                .and_then(parse)
                .is_some_and(|p| matches(ls, fs, &p));
            let is = matches(ls, fs, &cur);
            let obj = with_rv(cur, revision);
            Ok(match (was, is) {
                (true, true) => Some((EventType::Modified, obj)),
                (false, true) => Some((EventType::Added, obj)),
                (true, false) => Some((EventType::Deleted, obj)),
                (false, false) => None,
            })
        }
        Change::Delete { prev, .. } => {
            let prev = prev.ok_or("a delete without the object's last version")?;
            let p = parse(&prev).ok_or("the object is not valid JSON")?;
            Ok(matches(ls, fs, &p).then(|| (EventType::Deleted, with_rv(p, revision))))
        }
    }
}
