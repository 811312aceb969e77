//! List-then-watch, as one loop every cache builds on (the client's
//! [`crate::Reflector`], the controller runtime's informers): list a kind,
//! watch from the list's revision, resume a broken watch from the last
//! revision seen, and list again when told that revision is compacted
//! (Gone).

use std::time::Duration;

use flotilla_objects::api::{ListParams, Reason, WatchParams};
use flotilla_objects::Resource;
use futures::StreamExt;

use crate::api::{Api, Event};

/// What the loop hands its sink.
pub enum Step<K> {
    /// A complete list: the cache becomes exactly these objects.
    Listed {
        items: Vec<K>,
        resource_version: String,
    },
    /// One change (or bookmark) after the list.
    Event(Event<K>),
}

/// Objects per list page.
const LIST_PAGE: i64 = 500;

/// Run list-then-watch over `api` for the objects matching `params`'
/// selectors, handing each step to `sink`, until `sink` returns false.
/// Errors are retried with back-off (up to 5 s between attempts).
pub async fn watch_loop<K: Resource>(
    api: &Api<K>,
    params: &ListParams,
    bookmark_interval: Duration,
    mut sink: impl FnMut(Step<K>) -> bool,
) {
    let kind = K::info().kind;
    let mut backoff = Duration::from_millis(100);
    'relist: loop {
        let lp = ListParams {
            limit: LIST_PAGE,
            continue_token: String::new(),
            ..params.clone()
        };
        let list = match api.list_all(&lp).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(kind, error = %e, "list failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let mut rv = list.resource_version.clone();
        tracing::debug!(kind, rv = %rv, "listed");
        if !sink(Step::Listed {
            items: list.items,
            resource_version: list.resource_version,
        }) {
            return;
        }
        loop {
            let wp = WatchParams {
                label_selector: params.label_selector.clone(),
                field_selector: params.field_selector.clone(),
                resource_version: rv.clone(),
                bookmarks: true,
                bookmark_interval,
            };
            let mut stream = match api.watch(&wp).await {
                Ok(s) => Box::pin(s),
                Err(e) if e.is(Reason::Gone) => continue 'relist,
                Err(e) => {
                    tracing::warn!(kind, error = %e, "watch failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(ev) => {
                        let seen = match &ev {
                            Event::Added(k) | Event::Modified(k) | Event::Deleted(k) => {
                                k.meta().resource_version.clone()
                            }
                            Event::Bookmark(r) => r.clone(),
                        };
                        if !seen.is_empty() {
                            rv = seen;
                        }
                        if !sink(Step::Event(ev)) {
                            return;
                        }
                    }
                    Err(e) if e.is(Reason::Gone) => {
                        tracing::info!(kind, "watch start compacted; relisting");
                        continue 'relist;
                    }
                    Err(e) => {
                        tracing::debug!(kind, error = %e, "watch ended; resuming");
                        break;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
        }
    }
}
