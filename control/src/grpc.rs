//! The object API's gRPC service: protobuf in, [`ApiServer`] calls, protobuf out.

use std::pin::Pin;
use std::time::Duration;

use flotilla_client::{ApiError, DeleteParams, ListParams, Propagation, WatchParams};
use flotilla_proto::objects as pb;
use flotilla_proto::objects::objects_server::{Objects, ObjectsServer};
use futures::Stream;
use serde_json::Value;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::api::{resolve, ApiServer, Written};

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
}

fn parse(b: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(b)
        .map_err(|e| ApiError::bad_request(format!("the object is not valid JSON: {e}")))
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn propagation(s: &str) -> Result<Option<Propagation>, ApiError> {
    Ok(match s {
        "" => None,
        "Background" => Some(Propagation::Background),
        "Foreground" => Some(Propagation::Foreground),
        "Orphan" => Some(Propagation::Orphan),
        other => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Background\", \"Foreground\", \"Orphan\""
            )))
        }
    })
}

/// The answer to a call that wrote (or would write) an object.
fn written(w: Written) -> Response<pb::ObjectResponse> {
    Response::new(pb::ObjectResponse {
        object: bytes(&w.object),
        warnings: w.warnings,
    })
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Objects for ObjectService {
    #[tracing::instrument(level = "debug", skip_all, fields(resource = %req.get_ref().resource))]
    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let r = req.into_inner();
        let info = resolve(&r.resource)?;
        let w = self
            .api
            .create(info, &r.namespace, parse(&r.object)?, r.dry_run)
            .await?;
        Ok(written(w))
    }

    async fn get(
        &self,
        req: Request<pb::GetRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let r = req.into_inner();
        let info = resolve(&r.resource)?;
        let v = self
            .api
            .get(info, &r.namespace, &r.name, r.serializable)
            .await?;
        Ok(Response::new(pb::ObjectResponse {
            object: bytes(&v),
            warnings: vec![],
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let r = req.into_inner();
        let info = resolve(&r.resource)?;
        let l = self
            .api
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
            .await?;
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
        let r = req.into_inner();
        let info = resolve(&r.resource)?;
        let w = self
            .api
            .update(info, &r.namespace, parse(&r.object)?, r.dry_run)
            .await?;
        Ok(written(w))
    }

    async fn update_status(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let r = req.into_inner();
        let info = resolve(&r.resource)?;
        let w = self
            .api
            .update_status(info, &r.namespace, parse(&r.object)?, r.dry_run)
            .await?;
        Ok(written(w))
    }

    async fn patch(
        &self,
        req: Request<pb::PatchRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let r = req.into_inner();
        let info = resolve(&r.resource)?;
        let patch = serde_json::from_slice(&r.patch)
            .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
        let w = self
            .api
            .patch(info, &r.namespace, &r.name, patch, r.status, r.dry_run)
            .await?;
        Ok(written(w))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = req.into_inner();
        let info = resolve(&r.resource)?;
        let o = DeleteParams {
            precondition_uid: r.precondition_uid,
            precondition_resource_version: r.precondition_resource_version,
            grace_period_seconds: r.grace_period_seconds,
            propagation: propagation(&r.propagation_policy)?,
            dry_run: r.dry_run,
        };
        let (v, deleted) = self.api.delete(info, &r.namespace, &r.name, &o).await?;
        Ok(Response::new(pb::DeleteResponse {
            object: bytes(&v),
            deleted,
        }))
    }

    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let r = req.into_inner();
        let (w, action) = self
            .api
            .apply(&r.namespace, parse(&r.object)?, r.dry_run)
            .await?;
        Ok(Response::new(pb::ApplyResponse {
            object: bytes(&w.object),
            action: action.into(),
            warnings: w.warnings,
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = req.into_inner();
        let info = resolve(&r.resource)?;
        let rx = self
            .api
            .watch(
                info,
                &r.namespace,
                &WatchParams {
                    label_selector: r.label_selector,
                    field_selector: r.field_selector,
                    resource_version: r.resource_version,
                    bookmarks: r.allow_bookmarks,
                    bookmark_interval: Duration::from_millis(r.bookmark_interval_ms.max(0) as u64),
                },
            )
            .await?;
        let s = ReceiverStream::new(rx).map(|item| match item {
            Ok((t, b)) => Ok(pb::WatchEvent {
                r#type: t.as_str().into(),
                object: b,
            }),
            Err(e) => Err(Status::from(e)),
        });
        Ok(Response::new(Box::pin(s)))
    }
}
