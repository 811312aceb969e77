//! The untyped client: every call of the object API on JSON objects, with
//! failover across masters.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::objects as pb;
use flotilla_proto::objects::objects_client::ObjectsClient;
use futures::{Stream, StreamExt};
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};
use tonic::{Response, Status};

use crate::error::{ApiError, Reason};

/// Largest message the client accepts (a list of many objects).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// A connection to the masters of one cluster. Cheap to clone; calls that
/// find a master unreachable (or without a quorum) move on to the next one.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    addrs: Vec<String>,
    channels: Vec<Channel>,
    current: AtomicUsize,
    retry_for: Duration,
}

/// Options for [`Client::connect_with`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long to wait for a master to accept a connection.
    pub connect_timeout: Duration,
    /// How long one call may take.
    pub request_timeout: Duration,
    /// How long a call keeps trying other masters while none answers.
    pub retry_for: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            retry_for: Duration::from_secs(15),
        }
    }
}

/// `flt`'s and the components' parameters of a list.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub label_selector: String,
    pub field_selector: String,
    /// Page size (0: everything in one answer).
    pub limit: i64,
    pub continue_token: String,
    /// Allow a possibly stale answer from the master asked.
    pub serializable: bool,
}

impl ListParams {
    pub fn labels(mut self, s: &str) -> Self {
        self.label_selector = s.to_string();
        self
    }
    pub fn fields(mut self, s: &str) -> Self {
        self.field_selector = s.to_string();
        self
    }
    pub fn limit(mut self, n: i64) -> Self {
        self.limit = n;
        self
    }
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ObjectList {
    pub items: Vec<Value>,
    pub resource_version: String,
    /// Pass back in [`ListParams::continue_token`] for the next page; empty
    /// on the last page.
    pub continue_token: String,
}

/// What happens to the objects an object owns when it is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete the owner now; its dependents are deleted after it.
    Background,
    /// Delete the dependents first; the owner waits (finalizer foregroundDeletion).
    Foreground,
    /// Keep the dependents, without their reference to the owner.
    Orphan,
}

impl Propagation {
    pub fn as_str(self) -> &'static str {
        match self {
            Propagation::Background => "Background",
            Propagation::Foreground => "Foreground",
            Propagation::Orphan => "Orphan",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DeleteParams {
    pub grace_period_seconds: Option<i64>,
    pub propagation: Option<Propagation>,
    pub precondition_uid: String,
    pub precondition_resource_version: String,
    pub dry_run: bool,
}

/// What a watch reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    /// No change: the stream has seen everything up to the object's
    /// resourceVersion.
    Bookmark,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
        }
    }
    pub fn parse(s: &str) -> Option<EventType> {
        Some(match s {
            "ADDED" => EventType::Added,
            "MODIFIED" => EventType::Modified,
            "DELETED" => EventType::Deleted,
            "BOOKMARK" => EventType::Bookmark,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub kind: EventType,
    pub object: Value,
}

#[derive(Debug, Clone, Default)]
pub struct WatchParams {
    pub label_selector: String,
    pub field_selector: String,
    /// Start after this revision; empty: the current objects first (ADDED).
    pub resource_version: String,
    pub bookmarks: bool,
    /// Zero: the server's default (10 s).
    pub bookmark_interval: Duration,
}

/// The result of [`Client::apply`].
#[derive(Debug, Clone)]
pub struct Applied {
    pub object: Value,
    /// "created", "configured" or "unchanged".
    pub action: String,
    pub warnings: Vec<String>,
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, ApiError>> + Send>>;

fn to_json(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn from_json(b: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(b).map_err(|e| ApiError::internal(format!("decoding an object: {e}")))
}

/// Object names of a request, read from the object itself.
pub fn name_of(v: &Value) -> &str {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn normalize(addr: &str) -> String {
    let a = addr.trim();
    if a.starts_with("http://") || a.starts_with("https://") {
        a.to_string()
    } else {
        format!("http://{a}")
    }
}

impl Client {
    /// A client of the masters at `addrs` (HOST:PORT or http://HOST:PORT).
    /// Connections are made on first use.
    pub fn connect(addrs: &[String]) -> Result<Client, ApiError> {
        Self::connect_with(addrs, ClientOptions::default())
    }

    pub fn connect_with(addrs: &[String], opts: ClientOptions) -> Result<Client, ApiError> {
        let addrs: Vec<String> = addrs
            .iter()
            .map(|a| a.trim())
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        if addrs.is_empty() {
            return Err(ApiError::bad_request("no master address given"));
        }
        let mut channels = Vec::with_capacity(addrs.len());
        for a in &addrs {
            let ep = Endpoint::from_shared(normalize(a))
                .map_err(|e| ApiError::bad_request(format!("bad master address {a:?}: {e}")))?
                .connect_timeout(opts.connect_timeout)
                .timeout(opts.request_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_while_idle(true);
            channels.push(ep.connect_lazy());
        }
        Ok(Client {
            inner: Arc::new(Inner {
                addrs,
                channels,
                current: AtomicUsize::new(0),
                retry_for: opts.retry_for,
            }),
        })
    }

    /// The masters this client knows.
    pub fn addrs(&self) -> &[String] {
        &self.inner.addrs
    }

    /// Run one call, moving on to the next master while the one asked is
    /// unreachable or cannot serve (no quorum), for up to `retry_for`.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, ApiError>
    where
        F: Fn(ObjectsClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        let n = self.inner.channels.len();
        let deadline = tokio::time::Instant::now() + self.inner.retry_for;
        let mut backoff = Duration::from_millis(50);
        let mut tried = 0usize;
        loop {
            let idx = self.inner.current.load(Ordering::Relaxed) % n;
            let c = ObjectsClient::new(self.inner.channels[idx].clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            match f(c).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) => {
                    let e = ApiError::from(s);
                    if e.reason != Reason::Unavailable {
                        return Err(e);
                    }
                    tracing::debug!(master = %self.inner.addrs[idx], error = %e, "master unavailable; trying the next");
                    let _ = self.inner.current.compare_exchange(
                        idx,
                        (idx + 1) % n,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    tried += 1;
                    if tokio::time::Instant::now() >= deadline {
                        let msg = if n == 1 {
                            format!(
                                "master {} unavailable: {}",
                                self.inner.addrs[idx], e.message
                            )
                        } else {
                            format!(
                                "no master of {} could serve the call: {}",
                                self.inner.addrs.join(","),
                                e.message
                            )
                        };
                        return Err(ApiError::new(Reason::Unavailable, msg));
                    }
                    if tried.is_multiple_of(n) {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                }
            }
        }
    }

    pub async fn create(
        &self,
        resource: &str,
        namespace: &str,
        object: &Value,
        dry_run: bool,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let req = pb::CreateRequest {
            resource: resource.into(),
            namespace: namespace.into(),
            object: to_json(object),
            dry_run,
        };
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.create(req).await }
            })
            .await?;
        Ok((from_json(&r.object)?, r.warnings))
    }

    /// Read one object (linearizable).
    pub async fn get(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.get_with(resource, namespace, name, false).await
    }

    pub async fn get_with(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        serializable: bool,
    ) -> Result<Value, ApiError> {
        let req = pb::GetRequest {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
            serializable,
        };
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.get(req).await }
            })
            .await?;
        from_json(&r.object)
    }

    /// One page of objects (all of them when `p.limit` is 0).
    pub async fn list(
        &self,
        resource: &str,
        namespace: &str,
        p: &ListParams,
    ) -> Result<ObjectList, ApiError> {
        let req = pb::ListRequest {
            resource: resource.into(),
            namespace: namespace.into(),
            label_selector: p.label_selector.clone(),
            field_selector: p.field_selector.clone(),
            limit: p.limit,
            continue_token: p.continue_token.clone(),
            serializable: p.serializable,
        };
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.list(req).await }
            })
            .await?;
        let items = r
            .items
            .iter()
            .map(|b| from_json(b))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ObjectList {
            items,
            resource_version: r.resource_version,
            continue_token: r.continue_token,
        })
    }

    /// Every page of a list, read at one revision.
    pub async fn list_all(
        &self,
        resource: &str,
        namespace: &str,
        p: &ListParams,
    ) -> Result<ObjectList, ApiError> {
        let mut p = p.clone();
        let mut out = self.list(resource, namespace, &p).await?;
        while !out.continue_token.is_empty() {
            p.continue_token = std::mem::take(&mut out.continue_token);
            let next = self.list(resource, namespace, &p).await?;
            out.items.extend(next.items);
            out.continue_token = next.continue_token;
        }
        Ok(out)
    }

    /// Replace metadata and spec; a non-empty metadata.resourceVersion is a
    /// precondition.
    pub async fn update(
        &self,
        resource: &str,
        namespace: &str,
        object: &Value,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let req = pb::UpdateRequest {
            resource: resource.into(),
            namespace: namespace.into(),
            object: to_json(object),
            dry_run: false,
        };
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.update(req).await }
            })
            .await?;
        Ok((from_json(&r.object)?, r.warnings))
    }

    /// Replace only the status.
    pub async fn update_status(
        &self,
        resource: &str,
        namespace: &str,
        object: &Value,
    ) -> Result<Value, ApiError> {
        let req = pb::UpdateRequest {
            resource: resource.into(),
            namespace: namespace.into(),
            object: to_json(object),
            dry_run: false,
        };
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.update_status(req).await }
            })
            .await?;
        from_json(&r.object)
    }

    /// Apply a JSON merge patch to the object (or, with `status`, to its status).
    pub async fn patch(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        patch: &Value,
        status: bool,
    ) -> Result<Value, ApiError> {
        let req = pb::PatchRequest {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
            patch: to_json(patch),
            status,
            dry_run: false,
        };
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.patch(req).await }
            })
            .await?;
        from_json(&r.object)
    }

    /// Delete; returns the object as deleted (or as it now waits) and
    /// whether it is gone.
    pub async fn delete(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        p: &DeleteParams,
    ) -> Result<(Value, bool), ApiError> {
        let req = pb::DeleteRequest {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
            precondition_uid: p.precondition_uid.clone(),
            precondition_resource_version: p.precondition_resource_version.clone(),
            grace_period_seconds: p.grace_period_seconds,
            propagation_policy: p
                .propagation
                .map(|x| x.as_str().to_string())
                .unwrap_or_default(),
            dry_run: p.dry_run,
        };
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.delete(req).await }
            })
            .await?;
        Ok((from_json(&r.object)?, r.deleted))
    }

    /// Create or update from a manifest (kubectl apply semantics).
    pub async fn apply(
        &self,
        namespace: &str,
        object: &Value,
        dry_run: bool,
    ) -> Result<Applied, ApiError> {
        let req = pb::ApplyRequest {
            namespace: namespace.into(),
            object: to_json(object),
            dry_run,
        };
        let r = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.apply(req).await }
            })
            .await?;
        Ok(Applied {
            object: from_json(&r.object)?,
            action: r.action,
            warnings: r.warnings,
        })
    }

    /// Watch changes. The stream ends with a [`Reason::Gone`] error when the
    /// start revision is compacted: relist then.
    pub async fn watch(
        &self,
        resource: &str,
        namespace: &str,
        p: &WatchParams,
    ) -> Result<WatchStream, ApiError> {
        let req = pb::WatchRequest {
            resource: resource.into(),
            namespace: namespace.into(),
            label_selector: p.label_selector.clone(),
            field_selector: p.field_selector.clone(),
            resource_version: p.resource_version.clone(),
            allow_bookmarks: p.bookmarks,
            bookmark_interval_ms: p.bookmark_interval.as_millis() as i64,
        };
        let stream = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.watch(req).await }
            })
            .await?;
        Ok(Box::pin(stream.map(|item| match item {
            Ok(ev) => {
                let kind = EventType::parse(&ev.r#type).ok_or_else(|| {
                    ApiError::internal(format!("unknown watch event type {:?}", ev.r#type))
                })?;
                Ok(WatchEvent {
                    kind,
                    object: from_json(&ev.object)?,
                })
            }
            Err(s) => Err(ApiError::from(s)),
        })))
    }
}
