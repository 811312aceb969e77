//! The untyped client: every call of the object API on JSON objects, with
//! failover across masters.
//!
//! A call that finds a master unreachable, without a quorum, or that times
//! out is tried again on the next master. Writes are safe to try again: each
//! call carries one request id (the `flotilla-request-id` metadata entry) on
//! every attempt, and the masters apply a request id at most once, answering
//! a retry of a write that did commit with that write's outcome. Reads carry
//! one too: the masters' log lines about a call name its id.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_objects::api::{
    Applied, DeleteParams, EventType, ListParams, ObjectApi, ObjectList, RawEvent, RawWatch,
    WatchParams, Written, REQUEST_ID_HEADER,
};
use flotilla_proto::objects as pb;
use flotilla_proto::objects::objects_client::ObjectsClient;
use futures::{Stream, StreamExt};
use serde_json::Value;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::error::{from_status, ApiError, Reason};

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
    /// Credentials' metadata entries, sent with every call.
    headers: Vec<(&'static str, MetadataValue<tonic::metadata::Ascii>)>,
}

/// Options for [`Client::connect_with`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long to wait for a master to accept a connection.
    pub connect_timeout: Duration,
    /// How long one call may take.
    pub request_timeout: Duration,
    /// How long a call keeps trying other masters while none answers
    /// (zero: one attempt).
    pub retry_for: Duration,
    /// TLS to the masters (their CA, and a client certificate to present);
    /// addresses without a scheme then mean https.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// Credentials sent with every call.
    pub credentials: Credentials,
}

/// What a client says about who it is, beyond its certificate.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// A bearer token (`authorization: Bearer ...`).
    pub token: Option<String>,
    /// Act as this user (kubectl's --as), and in these groups (--as-group).
    pub impersonate_user: Option<String>,
    pub impersonate_groups: Vec<String>,
}

impl Credentials {
    /// The metadata entries these credentials add to a call.
    fn headers(
        &self,
    ) -> Result<Vec<(&'static str, MetadataValue<tonic::metadata::Ascii>)>, ApiError> {
        let bad = |what: &str| ApiError::bad_request(format!("the {what} is not printable ASCII"));
        let mut h = Vec::new();
        if let Some(t) = &self.token {
            h.push((
                "authorization",
                MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| bad("token"))?,
            ));
        }
        if let Some(u) = &self.impersonate_user {
            h.push((
                "impersonate-user",
                MetadataValue::try_from(u.as_str()).map_err(|_| bad("user to act as"))?,
            ));
        }
        for g in &self.impersonate_groups {
            h.push((
                "impersonate-group",
                MetadataValue::try_from(g.as_str()).map_err(|_| bad("group to act as"))?,
            ));
        }
        Ok(h)
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            retry_for: Duration::from_secs(15),
            tls: None,
            credentials: Credentials::default(),
        }
    }
}

/// A watch event with its object decoded.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub kind: EventType,
    pub object: Value,
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

fn normalize(addr: &str, tls: bool) -> String {
    let a = addr.trim();
    if a.starts_with("http://") || a.starts_with("https://") {
        a.to_string()
    } else if tls {
        format!("https://{a}")
    } else {
        format!("http://{a}")
    }
}

/// A fresh request id: 128 random bits, as 32 hex digits.
fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
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
            let mut ep = Endpoint::from_shared(normalize(a, opts.tls.is_some()))
                .map_err(|e| ApiError::bad_request(format!("bad master address {a:?}: {e}")))?;
            if let Some(tls) = &opts.tls {
                ep = ep
                    .tls_config(tls.clone())
                    .map_err(|e| ApiError::bad_request(format!("TLS for {a}: {e}")))?;
            }
            let ep = ep
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
                headers: opts.credentials.headers()?,
            }),
        })
    }

    /// The masters this client knows.
    pub fn addrs(&self) -> &[String] {
        &self.inner.addrs
    }

    /// Run one call, moving on to the next master while the one asked is
    /// unreachable, cannot serve (no quorum) or does not answer in time, for
    /// up to `retry_for`. Every attempt carries the same request id, so a
    /// write that committed on an attempt whose answer was lost is not
    /// applied again.
    async fn call<M, T, F, Fut>(&self, msg: M, f: F) -> Result<T, ApiError>
    where
        M: Clone,
        F: Fn(ObjectsClient<Channel>, Request<M>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        let n = self.inner.channels.len();
        let deadline = tokio::time::Instant::now() + self.inner.retry_for;
        // Every call carries an id, which the masters' log lines about it
        // name; a write's is also what makes its retries apply once.
        let request_id = new_request_id();
        let mut backoff = Duration::from_millis(50);
        let mut tried = 0usize;
        loop {
            let idx = self.inner.current.load(Ordering::Relaxed) % n;
            let c = ObjectsClient::new(self.inner.channels[idx].clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            let mut req = Request::new(msg.clone());
            for (k, v) in &self.inner.headers {
                req.metadata_mut().append(*k, v.clone());
            }
            if let Ok(v) = MetadataValue::try_from(request_id.as_str()) {
                req.metadata_mut().insert(REQUEST_ID_HEADER, v);
            }
            match f(c, req).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) => {
                    let e = from_status(s);
                    if e.reason != Reason::Unavailable {
                        return Err(e);
                    }
                    tracing::debug!(master = %self.inner.addrs[idx], %request_id, error = %e, "master unavailable; trying the next");
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
        let w = ObjectApi::create(self, resource, namespace, object.clone(), dry_run).await?;
        Ok((w.object, w.warnings))
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
        ObjectApi::get(self, resource, namespace, name, serializable).await
    }

    /// One page of objects (all of them when `p.limit` is 0).
    pub async fn list(
        &self,
        resource: &str,
        namespace: &str,
        p: &ListParams,
    ) -> Result<ObjectList, ApiError> {
        ObjectApi::list(self, resource, namespace, p).await
    }

    /// Every page of a list, read at one revision.
    pub async fn list_all(
        &self,
        resource: &str,
        namespace: &str,
        p: &ListParams,
    ) -> Result<ObjectList, ApiError> {
        list_all(self, resource, namespace, p).await
    }

    /// Replace metadata and spec; a non-empty metadata.resourceVersion is a
    /// precondition.
    pub async fn update(
        &self,
        resource: &str,
        namespace: &str,
        object: &Value,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let w = ObjectApi::update(self, resource, namespace, object.clone(), false, false).await?;
        Ok((w.object, w.warnings))
    }

    /// Replace only the status.
    pub async fn update_status(
        &self,
        resource: &str,
        namespace: &str,
        object: &Value,
    ) -> Result<Value, ApiError> {
        let w = ObjectApi::update(self, resource, namespace, object.clone(), true, false).await?;
        Ok(w.object)
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
        let w = ObjectApi::patch(
            self,
            resource,
            namespace,
            name,
            patch.clone(),
            status,
            false,
        )
        .await?;
        Ok(w.object)
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
        ObjectApi::delete(self, resource, namespace, name, p).await
    }

    /// Create or update from a manifest (kubectl apply semantics).
    pub async fn apply(
        &self,
        namespace: &str,
        object: &Value,
        dry_run: bool,
    ) -> Result<Applied, ApiError> {
        ObjectApi::apply(self, namespace, object.clone(), dry_run).await
    }

    /// Who the masters take this client for (`flt auth whoami`).
    pub async fn who_am_i(&self) -> Result<pb::WhoAmIResponse, ApiError> {
        self.call(pb::WhoAmIRequest {}, |mut c, r| async move {
            c.who_am_i(r).await
        })
        .await
    }

    /// A ServiceAccount token (`flt create token`; the agent's tokens for
    /// pods, bound to the pod).
    pub async fn create_token(
        &self,
        req: pb::CreateTokenRequest,
    ) -> Result<pb::CreateTokenResponse, ApiError> {
        self.call(req, |mut c, r| async move { c.create_token(r).await })
            .await
    }

    /// Whether this client may do what `req` asks (`flt auth can-i`).
    pub async fn access_review(
        &self,
        req: pb::AccessReviewRequest,
    ) -> Result<pb::AccessReviewResponse, ApiError> {
        self.call(req, |mut c, r| async move { c.access_review(r).await })
            .await
    }

    /// Watch changes. The stream ends with a [`Reason::Gone`] error when the
    /// start revision is compacted: relist then.
    pub async fn watch(
        &self,
        resource: &str,
        namespace: &str,
        p: &WatchParams,
    ) -> Result<WatchStream, ApiError> {
        let raw = ObjectApi::watch(self, resource, namespace, p).await?;
        Ok(Box::pin(raw.map(|item| {
            let ev = item?;
            Ok(WatchEvent {
                kind: ev.kind,
                object: from_json(&ev.object)?,
            })
        })))
    }
}

/// Every page of a list, read at one revision.
pub async fn list_all(
    api: &(impl ObjectApi + ?Sized),
    resource: &str,
    namespace: &str,
    p: &ListParams,
) -> Result<ObjectList, ApiError> {
    let mut p = p.clone();
    let mut out = api.list(resource, namespace, &p).await?;
    while !out.continue_token.is_empty() {
        p.continue_token = std::mem::take(&mut out.continue_token);
        let next = api.list(resource, namespace, &p).await?;
        out.items.extend(next.items);
        out.continue_token = next.continue_token;
    }
    Ok(out)
}

fn written(r: pb::ObjectResponse) -> Result<Written, ApiError> {
    Ok(Written {
        object: from_json(&r.object)?,
        warnings: r.warnings,
        // The wire does not say; a caller that needs it compares versions.
        changed: true,
    })
}

#[async_trait::async_trait]
impl ObjectApi for Client {
    async fn create(
        &self,
        resource: &str,
        namespace: &str,
        object: Value,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        let req = pb::CreateRequest {
            resource: resource.into(),
            namespace: namespace.into(),
            object: to_json(&object),
            dry_run,
        };
        let r = self
            .call(req, |mut c, r| async move { c.create(r).await })
            .await?;
        written(r)
    }

    async fn get(
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
            .call(req, |mut c, r| async move { c.get(r).await })
            .await?;
        from_json(&r.object)
    }

    async fn list(
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
            resource_version: p.resource_version.clone(),
            resource_version_match: p.resource_version_match.clone(),
        };
        let r = self
            .call(req, |mut c, r| async move { c.list(r).await })
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

    async fn update(
        &self,
        resource: &str,
        namespace: &str,
        object: Value,
        status: bool,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        let req = pb::UpdateRequest {
            resource: resource.into(),
            namespace: namespace.into(),
            object: to_json(&object),
            dry_run,
        };
        let r = if status {
            self.call(req, |mut c, r| async move { c.update_status(r).await })
                .await?
        } else {
            self.call(req, |mut c, r| async move { c.update(r).await })
                .await?
        };
        written(r)
    }

    async fn patch(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        patch: Value,
        status: bool,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        let req = pb::PatchRequest {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
            patch: to_json(&patch),
            status,
            dry_run,
        };
        let r = self
            .call(req, |mut c, r| async move { c.patch(r).await })
            .await?;
        written(r)
    }

    async fn delete(
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
            .call(req, |mut c, r| async move { c.delete(r).await })
            .await?;
        Ok((from_json(&r.object)?, r.deleted))
    }

    async fn apply(
        &self,
        namespace: &str,
        object: Value,
        dry_run: bool,
    ) -> Result<Applied, ApiError> {
        let req = pb::ApplyRequest {
            namespace: namespace.into(),
            object: to_json(&object),
            dry_run,
        };
        let r = self
            .call(req, |mut c, r| async move { c.apply(r).await })
            .await?;
        Ok(Applied {
            object: from_json(&r.object)?,
            action: r.action,
            warnings: r.warnings,
        })
    }

    async fn bind(&self, namespace: &str, pod: &str, node: &str) -> Result<Value, ApiError> {
        let req = pb::BindRequest {
            namespace: namespace.into(),
            name: pod.into(),
            node: node.into(),
        };
        let r = self
            .call(req, |mut c, r| async move { c.bind(r).await })
            .await?;
        from_json(&r.object)
    }

    async fn watch(
        &self,
        resource: &str,
        namespace: &str,
        p: &WatchParams,
    ) -> Result<RawWatch, ApiError> {
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
            .call(req, |mut c, r| async move { c.watch(r).await })
            .await?;
        Ok(Box::pin(stream.map(|item| match item {
            Ok(ev) => {
                let kind = EventType::parse(&ev.r#type).ok_or_else(|| {
                    ApiError::internal(format!("unknown watch event type {:?}", ev.r#type))
                })?;
                Ok(RawEvent {
                    kind,
                    object: ev.object,
                })
            }
            Err(s) => Err(from_status(s)),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::REASON_HEADER;
    use std::sync::atomic::AtomicU32;
    use tokio::net::TcpListener;

    /// A bare HTTP/2 peer on loopback. `drop_calls` of them lose their
    /// connection under the call, the way a master killed mid-request does;
    /// the others answer every call NotFound.
    async fn peer(drop_calls: bool, calls: Arc<AtomicU32>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((sock, _)) = l.accept().await {
                let calls = calls.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(sock).await else {
                        return;
                    };
                    while let Some(Ok((_req, mut respond))) = conn.accept().await {
                        calls.fetch_add(1, Ordering::SeqCst);
                        if drop_calls {
                            // The connection goes, with the call unanswered.
                            return;
                        }
                        let resp = http::Response::builder()
                            .header("content-type", "application/grpc")
                            .header("grpc-status", "5")
                            .header("grpc-message", "from the live master")
                            .header(REASON_HEADER, "NotFound")
                            .body(())
                            .unwrap();
                        let _ = respond.send_response(resp, true);
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_connection_broken_under_a_call_moves_it_to_the_next_master() {
        let (dead, live) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let addrs = vec![
            peer(true, dead.clone()).await,
            peer(false, live.clone()).await,
        ];
        let c = Client::connect(&addrs).unwrap();
        let e = c.get("configmaps", "default", "x").await.unwrap_err();
        assert_eq!(e.reason, Reason::NotFound, "{e:?}");
        assert_eq!(e.message, "from the live master");
        assert_eq!(dead.load(Ordering::SeqCst), 1);
        assert_eq!(live.load(Ordering::SeqCst), 1);
        // A write too: it carries its request id to the next master.
        let e = c
            .delete("configmaps", "default", "x", &DeleteParams::default())
            .await
            .unwrap_err();
        assert_eq!(e.reason, Reason::NotFound, "{e:?}");
    }

    #[tokio::test]
    async fn masters_that_all_break_calls_give_unavailable_after_retrying() {
        let calls = Arc::new(AtomicU32::new(0));
        let addrs = vec![
            peer(true, calls.clone()).await,
            peer(true, calls.clone()).await,
        ];
        let opts = ClientOptions {
            retry_for: Duration::from_millis(500),
            ..ClientOptions::default()
        };
        let c = Client::connect_with(&addrs, opts).unwrap();
        let e = c.get("configmaps", "default", "x").await.unwrap_err();
        assert_eq!(e.reason, Reason::Unavailable, "{e:?}");
        assert!(e.message.starts_with("no master of"), "{}", e.message);
        assert!(calls.load(Ordering::SeqCst) >= 3, "the call was retried");
    }
}
