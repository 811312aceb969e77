//! The object API's gRPC service: protobuf in, [`ApiServer`] calls, protobuf out.

use std::pin::Pin;
use std::time::Duration;

use flotilla_objects::api::{
    ApiError, DeleteParams, ListParams, Propagation, WatchParams, Written, REASON_HEADER,
    REQUEST_ID_HEADER,
};
use flotilla_proto::objects as pb;
use flotilla_proto::objects::objects_server::{Objects, ObjectsServer};
use futures::Stream;
use serde_json::Value;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Code, Request, Response, Status};

use crate::api::{resolve, ApiServer};
use crate::store::RequestId;

/// The gRPC service over an [`ApiServer`].
pub struct ObjectService {
    pub api: ApiServer,
}

impl ObjectService {
    /// The tonic server for this service, taking messages up to `max_bytes`.
    pub fn server(api: ApiServer, max_bytes: usize) -> ObjectsServer<ObjectService> {
        ObjectsServer::new(ObjectService { api })
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

/// The gRPC status an [`ApiError`] travels as (the reason in the
/// `flotilla-reason` metadata entry).
pub fn to_status(e: ApiError) -> Status {
    let mut s = Status::new(Code::from_i32(e.reason.grpc_code()), e.message);
    if let Ok(v) = e.reason.as_str().parse() {
        s.metadata_mut().insert(REASON_HEADER, v);
    }
    s
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
    let w = w.map_err(to_status)?;
    Ok(Response::new(pb::ObjectResponse {
        object: bytes(&w.object),
        warnings: w.warnings,
    }))
}

fn object(v: Result<Value, ApiError>) -> Result<Response<pb::ObjectResponse>, Status> {
    let v = v.map_err(to_status)?;
    Ok(Response::new(pb::ObjectResponse {
        object: bytes(&v),
        warnings: vec![],
    }))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Objects for ObjectService {
    #[tracing::instrument(level = "debug", skip_all, fields(resource = %req.get_ref().resource))]
    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        written(
            async {
                let api = self.server_for(&req)?;
                let r = req.into_inner();
                api.create(
                    resolve(&r.resource)?,
                    &r.namespace,
                    parse(&r.object)?,
                    r.dry_run,
                )
                .await
            }
            .await,
        )
    }

    async fn get(
        &self,
        req: Request<pb::GetRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let r = req.into_inner();
        object(
            async {
                self.api
                    .get(resolve(&r.resource)?, &r.namespace, &r.name, r.serializable)
                    .await
            }
            .await,
        )
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let r = req.into_inner();
        let l = async {
            let info = resolve(&r.resource)?;
            self.api
                .list(
                    info,
                    &r.namespace,
                    &ListParams {
                        label_selector: r.label_selector,
                        field_selector: r.field_selector,
                        limit: r.limit,
                        continue_token: r.continue_token,
                        serializable: r.serializable,
                    },
                )
                .await
        }
        .await
        .map_err(to_status)?;
        Ok(Response::new(pb::ListResponse {
            items: l.items.iter().map(bytes).collect(),
            resource_version: l.resource_version.to_string(),
            continue_token: l.continue_token,
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        written(
            async {
                let api = self.server_for(&req)?;
                let r = req.into_inner();
                api.update(
                    resolve(&r.resource)?,
                    &r.namespace,
                    parse(&r.object)?,
                    r.dry_run,
                )
                .await
            }
            .await,
        )
    }

    async fn update_status(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        written(
            async {
                let api = self.server_for(&req)?;
                let r = req.into_inner();
                api.update_status(
                    resolve(&r.resource)?,
                    &r.namespace,
                    parse(&r.object)?,
                    r.dry_run,
                )
                .await
            }
            .await,
        )
    }

    async fn patch(
        &self,
        req: Request<pb::PatchRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        written(
            async {
                let api = self.server_for(&req)?;
                let r = req.into_inner();
                let patch = serde_json::from_slice(&r.patch).map_err(|e| {
                    ApiError::bad_request(format!("the patch is not valid JSON: {e}"))
                })?;
                api.patch(
                    resolve(&r.resource)?,
                    &r.namespace,
                    &r.name,
                    patch,
                    r.status,
                    r.dry_run,
                )
                .await
            }
            .await,
        )
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let (v, deleted) = async {
            let api = self.server_for(&req)?;
            let r = req.into_inner();
            let o = DeleteParams {
                precondition_uid: r.precondition_uid,
                precondition_resource_version: r.precondition_resource_version,
                grace_period_seconds: r.grace_period_seconds,
                propagation: Propagation::parse(&r.propagation_policy)?,
                dry_run: r.dry_run,
            };
            api.delete(resolve(&r.resource)?, &r.namespace, &r.name, &o)
                .await
        }
        .await
        .map_err(to_status)?;
        Ok(Response::new(pb::DeleteResponse {
            object: bytes(&v),
            deleted,
        }))
    }

    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let (w, action) = async {
            let api = self.server_for(&req)?;
            let r = req.into_inner();
            api.apply(&r.namespace, parse(&r.object)?, r.dry_run).await
        }
        .await
        .map_err(to_status)?;
        Ok(Response::new(pb::ApplyResponse {
            object: bytes(&w.object),
            action: action.into(),
            warnings: w.warnings,
        }))
    }

    async fn bind(
        &self,
        req: Request<pb::BindRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        object(
            async {
                let api = self.server_for(&req)?;
                let r = req.into_inner();
                api.bind(&r.namespace, &r.name, &r.node).await
            }
            .await,
        )
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = req.into_inner();
        let rx = async {
            let info = resolve(&r.resource)?;
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
