//! The object API's gRPC service: protobuf in, [`ApiServer`] calls, protobuf out.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flotilla_objects::api::{
    ApiError, DeleteParams, ListParams, Propagation, WatchParams, Written, REASON_HEADER,
    REQUEST_ID_HEADER,
};
use flotilla_objects::rbac::Attributes;
use flotilla_objects::registry;
use flotilla_proto::objects as pb;
use flotilla_proto::objects::objects_server::{Objects, ObjectsServer};
use futures::Stream;
use serde_json::Value;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Code, Request, Response, Status};

use crate::api::{resolve, ApiServer};
use crate::audit::{attributes, audited, name_in, AuditLog};
use crate::auth::Auth;
use crate::metrics::ApiMetrics;
use crate::store::RequestId;
use flotilla_security::authn::Identity;

/// The gRPC service over an [`ApiServer`]: every call authenticated and
/// authorized by `auth` first.
pub struct ObjectService {
    pub api: ApiServer,
    pub auth: Arc<Auth>,
    pub metrics: ApiMetrics,
    /// Where writes are recorded (None: no audit log).
    pub audit: Option<Arc<AuditLog>>,
}

impl ObjectService {
    /// The tonic server for this service, taking messages up to `max_bytes`.
    pub fn server(
        api: ApiServer,
        auth: Arc<Auth>,
        max_bytes: usize,
        metrics: ApiMetrics,
        audit: Option<Arc<AuditLog>>,
    ) -> ObjectsServer<ObjectService> {
        ObjectsServer::new(ObjectService {
            api,
            auth,
            metrics,
            audit,
        })
        .max_decoding_message_size(max_bytes)
        .max_encoding_message_size(usize::MAX)
    }

    /// The server for one call: with the call's request id, when it carries one.
    fn server_for<T>(&self, req: &Request<T>) -> Result<ApiServer, ApiError> {
        match req.metadata().get(REQUEST_ID_HEADER) {
            None => Ok(self.api.clone()),
            Some(v) => {
                let id = v.to_str().ok().and_then(RequestId::parse).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{REQUEST_ID_HEADER} must be 32 hexadecimal digits"
                    ))
                })?;
                Ok(self.api.with_request(id))
            }
        }
    }
}

/// The attributes of a write of `obj` (its name and, unless the request
/// names one, its namespace).
fn write_attrs(
    verb: &str,
    info: &'static registry::ResourceInfo,
    ns: &str,
    obj: &Value,
) -> Attributes {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let ns = if ns.is_empty() {
        obj.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
    } else {
        ns
    };
    Attributes::new(verb, info, ns, name)
}

/// A CertificateSigningRequest names who asked for it: the API server
/// sets `spec.username`, `spec.uid` and `spec.groups` from the caller,
/// whatever the client wrote there.
fn requester(obj: &mut Value, who: &Identity) {
    let Some(o) = obj.as_object_mut() else { return };
    let spec = o
        .entry("spec")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(spec) = spec.as_object_mut() {
        spec.insert("username".into(), Value::from(who.user.clone()));
        spec.insert("uid".into(), Value::from(who.uid.clone()));
        spec.insert("groups".into(), Value::from(who.groups.clone()));
    }
}

/// The API server for a write by `who`: a node agent's writes are
/// restricted (NodeRestriction).
fn as_caller(api: ApiServer, who: &Identity) -> ApiServer {
    match crate::auth::node::node_of(who) {
        Some(node) => api.as_node(node),
        None => api,
    }
}

impl ObjectService {
    /// Apply is a patch of an object that exists and a create of one that
    /// does not (as Kubernetes authorizes server-side apply).
    async fn authorize_apply(
        &self,
        req: &Request<pb::ApplyRequest>,
        obj: &Value,
    ) -> Result<Identity, ApiError> {
        let who = self.auth.caller(req).await?;
        let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let Some(info) = registry::by_kind(av, kind) else {
            // The API server names what is wrong with the manifest.
            return Ok(who);
        };
        let ns = req.get_ref().namespace.as_str();
        let patch = write_attrs("patch", info, ns, obj);
        if self.auth.allowed(&who, &patch).await? {
            return Ok(who);
        }
        let mut create = patch.clone();
        create.verb = "create".into();
        create.name.clear();
        if self.auth.allowed(&who, &create).await? {
            let exists = match self
                .api
                .get(info, &patch.namespace, &patch.name, true)
                .await
            {
                Ok(_) => true,
                Err(e) if e.is(flotilla_objects::api::Reason::NotFound) => false,
                Err(e) => return Err(e),
            };
            if !exists {
                return Ok(who);
            }
        }
        self.auth.authorize(&who, &patch).await?;
        Ok(who)
    }
}

/// What an access review asks about: a kind by any of its names, or `*`.
fn review_attrs(r: &pb::AccessReviewRequest) -> Result<Attributes, ApiError> {
    if r.verb.is_empty() {
        return Err(ApiError::bad_request("an access review needs a verb"));
    }
    let (api_group, resource, namespaced) = match r.resource.as_str() {
        "*" => ("*".to_string(), "*".to_string(), true),
        // Impersonation's resources are not kinds.
        "users" | "groups" | "serviceaccounts" => (String::new(), r.resource.clone(), false),
        name => {
            let info = registry::lookup(name).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "the server doesn't have a resource type \"{name}\""
                ))
            })?;
            (
                info.group.to_string(),
                info.plural.to_string(),
                info.namespaced,
            )
        }
    };
    Ok(Attributes {
        verb: r.verb.clone(),
        api_group,
        resource,
        subresource: r.subresource.clone(),
        namespace: if namespaced {
            r.namespace.clone()
        } else {
            String::new()
        },
        name: r.name.clone(),
    })
}

/// The gRPC status an [`ApiError`] travels as (the reason in the
/// `flotilla-reason` metadata entry).
pub fn to_status(e: ApiError) -> Status {
    let mut s = Status::new(Code::from_i32(e.reason.grpc_code()), e.message);
    if let Ok(v) = e.reason.as_str().parse() {
        s.metadata_mut().insert(REASON_HEADER, v);
    }
    s
}

/// The audit attributes of a write of the manifest `object`: its name,
/// and the namespace the request names, else the object's.
fn object_attrs(verb: &str, resource: &str, req_ns: &str, object: &[u8]) -> (Attributes, String) {
    let (name, ns) = name_in(object);
    let ns = if req_ns.is_empty() { &ns } else { req_ns };
    attributes(verb, resource, ns, &name)
}

/// The resource an applied manifest names by its kind (for metrics).
fn kind_of(b: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Kind {
        #[serde(default)]
        kind: String,
    }
    serde_json::from_slice::<Kind>(b)
        .map(|k| k.kind.to_ascii_lowercase())
        .unwrap_or_default()
}

fn parse(b: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(b)
        .map_err(|e| ApiError::bad_request(format!("the object is not valid JSON: {e}")))
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// The answer to a call that wrote (or would write) an object.
fn written(w: Result<Written, ApiError>) -> Result<Response<pb::ObjectResponse>, Status> {
    written_served(w.map(|w| (w, None)))
}

/// [`written`], with the object's JSON when it came along (not serialized
/// again).
fn written_served(
    w: Result<(Written, Option<Vec<u8>>), ApiError>,
) -> Result<Response<pb::ObjectResponse>, Status> {
    let (w, served) = w.map_err(to_status)?;
    Ok(Response::new(pb::ObjectResponse {
        object: served.unwrap_or_else(|| bytes(&w.object)),
        warnings: w.warnings,
    }))
}

/// The answer to a call that reads (or binds) one object: its JSON.
fn object(json: Result<Vec<u8>, ApiError>) -> Result<Response<pb::ObjectResponse>, Status> {
    Ok(Response::new(pb::ObjectResponse {
        object: json.map_err(to_status)?,
        warnings: vec![],
    }))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

/// The calls themselves; [`Objects`] below times and counts each.
impl ObjectService {
    #[tracing::instrument(level = "debug", skip_all, fields(resource = %req.get_ref().resource))]
    async fn create_inner(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        written_served(
            async {
                let api = self.server_for(&req)?;
                let info = resolve(&req.get_ref().resource)?;
                let ns = &req.get_ref().namespace;
                let who = self
                    .auth
                    .check(&req, &Attributes::new("create", info, ns, ""))
                    .await?;
                let api = as_caller(api, &who);
                let r = req.into_inner();
                let mut obj = parse(&r.object)?;
                if std::ptr::eq(info, &registry::CERTIFICATE_SIGNING_REQUEST) {
                    requester(&mut obj, &who);
                }
                api.create_served(info, &r.namespace, obj, r.dry_run).await
            }
            .await,
        )
    }

    async fn get_inner(
        &self,
        req: Request<pb::GetRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        object(
            async {
                let info = resolve(&req.get_ref().resource)?;
                let r = req.get_ref();
                self.auth
                    .check(&req, &Attributes::new("get", info, &r.namespace, &r.name))
                    .await?;
                self.api
                    .get_served(info, &r.namespace, &r.name, r.serializable)
                    .await
            }
            .await,
        )
    }

    async fn list_inner(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let l = async {
            let info = resolve(&req.get_ref().resource)?;
            let r = req.get_ref();
            self.auth
                .check(&req, &Attributes::new("list", info, &r.namespace, ""))
                .await?;
            let r = req.into_inner();
            self.api
                .list_raw(
                    info,
                    &r.namespace,
                    &ListParams {
                        label_selector: r.label_selector,
                        field_selector: r.field_selector,
                        limit: r.limit,
                        continue_token: r.continue_token,
                        serializable: r.serializable,
                        resource_version: r.resource_version,
                        resource_version_match: r.resource_version_match,
                    },
                )
                .await
        }
        .await
        .map_err(to_status)?;
        // The cache's serialized objects, shared (not copied) into the answer.
        Ok(Response::new(pb::ListResponse {
            items: l.items.iter().map(|i| i.bytes.clone()).collect(),
            resource_version: l.resource_version.to_string(),
            continue_token: l.continue_token,
        }))
    }

    async fn update_inner(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        written(
            async {
                let api = self.server_for(&req)?;
                let info = resolve(&req.get_ref().resource)?;
                let obj = parse(&req.get_ref().object)?;
                let a = write_attrs("update", info, &req.get_ref().namespace, &obj);
                let api = as_caller(api, &self.auth.check(&req, &a).await?);
                let r = req.into_inner();
                api.update(info, &r.namespace, obj, r.dry_run).await
            }
            .await,
        )
    }

    async fn update_status_inner(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        written(
            async {
                let api = self.server_for(&req)?;
                let info = resolve(&req.get_ref().resource)?;
                let obj = parse(&req.get_ref().object)?;
                let a = write_attrs("update", info, &req.get_ref().namespace, &obj)
                    .subresource("status");
                let api = as_caller(api, &self.auth.check(&req, &a).await?);
                let r = req.into_inner();
                api.update_status(info, &r.namespace, obj, r.dry_run).await
            }
            .await,
        )
    }

    async fn patch_inner(
        &self,
        req: Request<pb::PatchRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        written(
            async {
                let api = self.server_for(&req)?;
                let info = resolve(&req.get_ref().resource)?;
                let r = req.get_ref();
                let mut a = Attributes::new("patch", info, &r.namespace, &r.name);
                if r.status {
                    a = a.subresource("status");
                }
                let api = as_caller(api, &self.auth.check(&req, &a).await?);
                let r = req.into_inner();
                let patch = serde_json::from_slice(&r.patch).map_err(|e| {
                    ApiError::bad_request(format!("the patch is not valid JSON: {e}"))
                })?;
                api.patch(info, &r.namespace, &r.name, patch, r.status, r.dry_run)
                    .await
            }
            .await,
        )
    }

    async fn delete_inner(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let (v, deleted) = async {
            let api = self.server_for(&req)?;
            let info = resolve(&req.get_ref().resource)?;
            let r = req.get_ref();
            let who = self
                .auth
                .check(
                    &req,
                    &Attributes::new("delete", info, &r.namespace, &r.name),
                )
                .await?;
            let api = as_caller(api, &who);
            let r = req.into_inner();
            let o = DeleteParams {
                precondition_uid: r.precondition_uid,
                precondition_resource_version: r.precondition_resource_version,
                grace_period_seconds: r.grace_period_seconds,
                propagation: Propagation::parse(&r.propagation_policy)?,
                dry_run: r.dry_run,
            };
            api.delete(info, &r.namespace, &r.name, &o).await
        }
        .await
        .map_err(to_status)?;
        Ok(Response::new(pb::DeleteResponse {
            object: bytes(&v),
            deleted,
        }))
    }

    async fn apply_inner(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let (w, action) = async {
            let api = self.server_for(&req)?;
            let mut obj = parse(&req.get_ref().object)?;
            let who = self.authorize_apply(&req, &obj).await?;
            if obj.get("kind").and_then(Value::as_str)
                == Some(registry::CERTIFICATE_SIGNING_REQUEST.kind)
            {
                requester(&mut obj, &who);
            }
            let api = as_caller(api, &who);
            let r = req.into_inner();
            api.apply(&r.namespace, obj, r.dry_run).await
        }
        .await
        .map_err(to_status)?;
        Ok(Response::new(pb::ApplyResponse {
            object: bytes(&w.object),
            action: action.into(),
            warnings: w.warnings,
        }))
    }

    async fn bind_inner(
        &self,
        req: Request<pb::BindRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        object(
            async {
                let api = self.server_for(&req)?;
                let r = req.get_ref();
                let a = Attributes::new("create", &registry::POD, &r.namespace, &r.name)
                    .subresource("binding");
                self.auth.check(&req, &a).await?;
                let r = req.into_inner();
                api.bind(&r.namespace, &r.name, &r.node)
                    .await
                    .map(|v| bytes(&v))
            }
            .await,
        )
    }

    async fn access_review_inner(
        &self,
        req: Request<pb::AccessReviewRequest>,
    ) -> Result<Response<pb::AccessReviewResponse>, Status> {
        let who = self.auth.caller(&req).await.map_err(to_status)?;
        let r = req.into_inner();
        let a = review_attrs(&r).map_err(to_status)?;
        let allowed = self.auth.allowed(&who, &a).await.map_err(to_status)?;
        Ok(Response::new(pb::AccessReviewResponse {
            allowed,
            reason: if allowed {
                String::new()
            } else {
                crate::auth::forbidden(&who, &a)
            },
        }))
    }

    async fn create_token_inner(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let r = req.get_ref();
        let a = Attributes::new("create", &registry::SERVICE_ACCOUNT, &r.namespace, &r.name)
            .subresource("token");
        let who = self.auth.check(&req, &a).await.map_err(to_status)?;
        let r = req.into_inner();
        let Some(tokens) = self.auth.tokens() else {
            return Err(to_status(ApiError::new(
                flotilla_objects::api::Reason::MethodNotAllowed,
                "service account tokens need a master with authorization on (RBAC) and --service-account-signing-key-file",
            )));
        };
        if r.expiration_seconds < 0 {
            return Err(to_status(ApiError::bad_request(
                "expirationSeconds must not be negative",
            )));
        }
        let pod = (!r.bound_pod_name.is_empty()).then_some((r.bound_pod_name, r.bound_pod_uid));
        // NodeRestriction: a node's tokens are bound to its own pods.
        if let Some(node) = crate::auth::node::node_of(&who) {
            let bound_here = match &pod {
                None => false,
                Some((name, _)) => self
                    .api
                    .get(&registry::POD, &r.namespace, name, true)
                    .await
                    .ok()
                    .and_then(|p| {
                        p.pointer("/spec/nodeName")
                            .and_then(Value::as_str)
                            .map(|n| n == node)
                    })
                    .unwrap_or(false),
            };
            if !bound_here {
                return Err(to_status(ApiError::new(
                    flotilla_objects::api::Reason::Forbidden,
                    format!("node '{node}' may only request tokens bound to pods bound to it"),
                )));
            }
        }
        let request = crate::auth::tokens::TokenRequest {
            namespace: r.namespace,
            service_account: r.name,
            audiences: r.audiences,
            expiration: (r.expiration_seconds > 0)
                .then(|| Duration::from_secs(r.expiration_seconds as u64)),
            pod,
        };
        let (token, claims) = tokens.issue(&request).await.map_err(to_status)?;
        Ok(Response::new(pb::CreateTokenResponse {
            token,
            expiration_timestamp: claims.exp as i64,
            audiences: claims.aud,
        }))
    }

    async fn who_am_i_inner(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let who = self.auth.caller(&req).await.map_err(to_status)?;
        Ok(Response::new(pb::WhoAmIResponse {
            user: who.user,
            uid: who.uid,
            groups: who.groups,
        }))
    }

    async fn watch_inner(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let rx = async {
            let info = resolve(&req.get_ref().resource)?;
            self.auth
                .check(
                    &req,
                    &Attributes::new("watch", info, &req.get_ref().namespace, ""),
                )
                .await?;
            let r = req.into_inner();
            self.api
                .watch(
                    info,
                    &r.namespace,
                    &WatchParams {
                        label_selector: r.label_selector,
                        field_selector: r.field_selector,
                        resource_version: r.resource_version,
                        bookmarks: r.allow_bookmarks,
                        bookmark_interval: Duration::from_millis(
                            r.bookmark_interval_ms.max(0) as u64
                        ),
                    },
                )
                .await
        }
        .await
        .map_err(to_status)?;
        let s = ReceiverStream::new(rx).map(|item| match item {
            Ok((t, b)) => Ok(pb::WatchEvent {
                r#type: t.as_str().into(),
                object: b,
            }),
            Err(e) => Err(to_status(e)),
        });
        Ok(Response::new(Box::pin(s)))
    }
}

#[tonic::async_trait]
impl Objects for ObjectService {
    type WatchStream = WatchStream;

    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let t = self
            .metrics
            .start("CREATE", req.get_ref().resource.as_str());
        let res = audited(
            self.audit.as_ref(),
            &self.auth,
            req,
            |r| object_attrs("create", &r.resource, &r.namespace, &r.object),
            true,
            |req| self.create_inner(req),
        )
        .await;
        t.done(res)
    }

    async fn get(
        &self,
        req: Request<pb::GetRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let t = self.metrics.start("GET", req.get_ref().resource.as_str());
        t.done(self.get_inner(req).await)
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let t = self.metrics.start("LIST", req.get_ref().resource.as_str());
        t.done(self.list_inner(req).await)
    }

    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let t = self
            .metrics
            .start("UPDATE", req.get_ref().resource.as_str());
        let res = audited(
            self.audit.as_ref(),
            &self.auth,
            req,
            |r| object_attrs("update", &r.resource, &r.namespace, &r.object),
            false,
            |req| self.update_inner(req),
        )
        .await;
        t.done(res)
    }

    async fn update_status(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let t = self
            .metrics
            .start("UPDATE", req.get_ref().resource.as_str());
        let res = audited(
            self.audit.as_ref(),
            &self.auth,
            req,
            |r| {
                let (a, v) = object_attrs("update", &r.resource, &r.namespace, &r.object);
                (a.subresource("status"), v)
            },
            false,
            |req| self.update_status_inner(req),
        )
        .await;
        t.done(res)
    }

    async fn patch(
        &self,
        req: Request<pb::PatchRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let t = self.metrics.start("PATCH", req.get_ref().resource.as_str());
        let res = audited(
            self.audit.as_ref(),
            &self.auth,
            req,
            |r| {
                let (a, v) = attributes("patch", &r.resource, &r.namespace, &r.name);
                (if r.status { a.subresource("status") } else { a }, v)
            },
            false,
            |req| self.patch_inner(req),
        )
        .await;
        t.done(res)
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let t = self
            .metrics
            .start("DELETE", req.get_ref().resource.as_str());
        let res = audited(
            self.audit.as_ref(),
            &self.auth,
            req,
            |r| attributes("delete", &r.resource, &r.namespace, &r.name),
            false,
            |req| self.delete_inner(req),
        )
        .await;
        t.done(res)
    }

    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let t = self.metrics.start("APPLY", &kind_of(&req.get_ref().object));
        let res = audited(
            self.audit.as_ref(),
            &self.auth,
            req,
            |r| object_attrs("patch", &kind_of(&r.object), &r.namespace, &r.object),
            false,
            |req| self.apply_inner(req),
        )
        .await;
        t.done(res)
    }

    async fn bind(
        &self,
        req: Request<pb::BindRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let t = self.metrics.start("CREATE", "pods");
        let res = audited(
            self.audit.as_ref(),
            &self.auth,
            req,
            |r| {
                let (a, v) = attributes("create", "pods", &r.namespace, &r.name);
                (a.subresource("binding"), v)
            },
            true,
            |req| self.bind_inner(req),
        )
        .await;
        t.done(res)
    }

    async fn access_review(
        &self,
        req: Request<pb::AccessReviewRequest>,
    ) -> Result<Response<pb::AccessReviewResponse>, Status> {
        self.access_review_inner(req).await
    }

    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        self.who_am_i_inner(req).await
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let t = self.metrics.start("CREATE", "serviceaccounts/token");
        t.done(self.create_token_inner(req).await)
    }

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let t = self.metrics.start("WATCH", req.get_ref().resource.as_str());
        let guard = self.metrics.watching(&t);
        let stream = t.done(self.watch_inner(req).await)?.into_inner();
        let s = stream.map(move |item| {
            let _open = &guard;
            item
        });
        Ok(Response::new(Box::pin(s)))
    }
}
