//! pods/log, pods/exec, pods/portforward and pods/attach through any master, as the
//! Kubernetes API server relays them: the master finds the pod's node and
//! that node's agent (its InternalIP and the port in
//! `status.daemonEndpoints`), calls the agent's pod streams with the same
//! request, and passes the answer back. Clients reach every pod through
//! the masters alone.
//!
//! CPU and memory figures (`flt top`) come the same way: from one node's
//! agent (RBAC: `get` on `nodes/stats`, the name kubelet's own stats
//! endpoint is authorized by), or from the agents of every node running a
//! namespace's pods (RBAC: `list` on `pods/metrics` in that namespace, or
//! in every namespace when none is given).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flotilla_objects::api::ApiError;
use flotilla_objects::api::ListParams;
use flotilla_objects::rbac::Attributes;
use flotilla_objects::registry;
use flotilla_proto::node::pod_streams_client::PodStreamsClient;
use flotilla_proto::node::pod_streams_server::{PodStreams, PodStreamsServer};
use flotilla_proto::node::{
    AttachFrame, ExecRequest, ExecResponse, LogsChunk, LogsRequest, PortForwardFrame, StatsRequest,
    StatsResponse, MESSAGE_LIMIT,
};
use futures::{Stream, StreamExt as _};
use serde_json::Value;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::api::json::str_at;
use crate::audit::{audited, AuditLog};
use crate::auth::Auth;
use crate::grpc::to_status;
use crate::ApiServer;

/// How long a master waits to reach an agent.
const AGENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The relay served on every master's client port.
pub struct Relay {
    api: ApiServer,
    auth: Arc<Auth>,
    /// How the master calls agents: TLS with its own certificate, when the
    /// agents serve TLS.
    agent_tls: Option<ClientTlsConfig>,
    /// Where exec, attach and port-forward are recorded.
    audit: Option<Arc<AuditLog>>,
}

impl Relay {
    pub fn server(
        api: ApiServer,
        auth: Arc<Auth>,
        agent_tls: Option<ClientTlsConfig>,
        audit: Option<Arc<AuditLog>>,
    ) -> PodStreamsServer<Relay> {
        PodStreamsServer::new(Relay {
            api,
            auth,
            agent_tls,
            audit,
        })
        .max_decoding_message_size(MESSAGE_LIMIT)
        .max_encoding_message_size(MESSAGE_LIMIT)
    }

    /// A client of the agent running pod `ns/name`.
    async fn agent_for(&self, ns: &str, name: &str) -> Result<PodStreamsClient<Channel>, Status> {
        let pod = self
            .api
            .get(&registry::POD, ns, name, false)
            .await
            .map_err(to_status)?;
        let node_name = str_at(&pod, "/spec/nodeName").to_string();
        if node_name.is_empty() {
            return Err(Status::failed_precondition(format!(
                "pod {name} does not have a host assigned"
            )));
        }
        self.agent_of_node(&node_name).await
    }

    /// A client of node `node_name`'s agent.
    async fn agent_of_node(&self, node_name: &str) -> Result<PodStreamsClient<Channel>, Status> {
        let node = self
            .api
            .get(&registry::NODE, "", node_name, false)
            .await
            .map_err(to_status)?;
        let addr = agent_address(&node).ok_or_else(|| {
            to_status(ApiError::unavailable(format!(
                "node {node_name} has no agent address (InternalIP and daemonEndpoints.kubeletEndpoint.Port)"
            )))
        })?;
        let scheme = if self.agent_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| Status::internal(e.to_string()))?;
        if let Some(tls) = &self.agent_tls {
            ep = ep
                .tls_config(tls.clone())
                .map_err(|e| Status::internal(format!("TLS to agents: {e}")))?;
        }
        let channel = ep
            .connect_timeout(AGENT_CONNECT_TIMEOUT)
            .connect()
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "the agent of node {node_name} at {addr} is unreachable: {e}"
                ))
            })?;
        Ok(PodStreamsClient::new(channel)
            .max_decoding_message_size(MESSAGE_LIMIT)
            .max_encoding_message_size(MESSAGE_LIMIT))
    }
}

/// `IP:PORT` of a node's agent.
pub fn agent_address(node: &Value) -> Option<String> {
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .filter(|p| *p > 0)?;
    let ip = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)?
        .iter()
        .find(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))?
        .get("address")
        .and_then(Value::as_str)?
        .to_string();
    Some(format!("{ip}:{port}"))
}

/// The caller's next frame; its end (or its failure) is a half-close.
async fn next_frame<T>(mut s: Streaming<T>) -> Option<(T, Streaming<T>)> {
    match s.message().await {
        Ok(Some(f)) => Some((f, s)),
        Ok(None) | Err(_) => None,
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<LogsChunk, Status>> + Send>>;
type FrameStream = Pin<Box<dyn Stream<Item = Result<PortForwardFrame, Status>> + Send>>;
type AttachStream = Pin<Box<dyn Stream<Item = Result<AttachFrame, Status>> + Send>>;

/// The error of node `node`'s agent, naming the node.
fn node_error(node: &str, s: Status) -> Status {
    Status::new(s.code(), format!("node {node}: {}", s.message()))
}

#[tonic::async_trait]
impl PodStreams for Relay {
    type LogsStream = LogStream;
    type PortForwardStream = FrameStream;
    type AttachStream = AttachStream;

    /// The first frame names the container; the caller needs `create` on
    /// pods/attach, as in Kubernetes.
    async fn attach(
        &self,
        mut req: Request<Streaming<AttachFrame>>,
    ) -> Result<Response<AttachStream>, Status> {
        let first = req
            .get_mut()
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no pod given"))?;
        let a = Attributes::new("create", &registry::POD, &first.namespace, &first.pod)
            .subresource("attach");
        let what = |_: &Streaming<_>| (a.clone(), "v1".to_string());
        audited(
            self.audit.as_ref(),
            &self.auth,
            req,
            what,
            false,
            |req| async {
                self.auth.check(&req, &a).await.map_err(to_status)?;
                let mut agent = self.agent_for(&first.namespace, &first.pod).await?;
                let rest = futures::stream::unfold(req.into_inner(), next_frame);
                let outbound = futures::stream::once(std::future::ready(first)).chain(rest);
                let s = agent.attach(outbound).await?.into_inner();
                Ok(Response::new(Box::pin(s) as AttachStream))
            },
        )
        .await
    }

    async fn stats(&self, req: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        let r = req.get_ref().clone();
        if !r.node.is_empty() {
            let a = Attributes::new("get", &registry::NODE, "", &r.node).subresource("stats");
            self.auth.check(&req, &a).await.map_err(to_status)?;
            let mut agent = self
                .agent_of_node(&r.node)
                .await
                .map_err(|s| node_error(&r.node, s))?;
            return agent
                .stats(r.clone())
                .await
                .map_err(|s| node_error(&r.node, s));
        }
        let a = Attributes::new("list", &registry::POD, &r.namespace, "").subresource("metrics");
        self.auth.check(&req, &a).await.map_err(to_status)?;
        let pods = self
            .api
            .list(&registry::POD, &r.namespace, &ListParams::default())
            .await
            .map_err(to_status)?;
        let mut nodes: Vec<String> = pods
            .items
            .iter()
            .map(|p| str_at(p, "/spec/nodeName").to_string())
            .filter(|n| !n.is_empty())
            .collect();
        nodes.sort();
        nodes.dedup();
        let mut out = StatsResponse::default();
        for node in nodes {
            let mut agent = self
                .agent_of_node(&node)
                .await
                .map_err(|s| node_error(&node, s))?;
            let one = StatsRequest {
                node: node.clone(),
                namespace: r.namespace.clone(),
            };
            let answer = agent
                .stats(one)
                .await
                .map_err(|s| node_error(&node, s))?
                .into_inner();
            out.nodes.extend(answer.nodes);
        }
        Ok(Response::new(out))
    }

    /// The first frame names the pod; the caller needs `create` on
    /// pods/portforward, as in Kubernetes.
    async fn port_forward(
        &self,
        mut req: Request<Streaming<PortForwardFrame>>,
    ) -> Result<Response<FrameStream>, Status> {
        let first = req
            .get_mut()
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no pod and port given"))?;
        let a = Attributes::new("create", &registry::POD, &first.namespace, &first.pod)
            .subresource("portforward");
        let what = |_: &Streaming<_>| (a.clone(), "v1".to_string());
        audited(
            self.audit.as_ref(),
            &self.auth,
            req,
            what,
            false,
            |req| async {
                self.auth.check(&req, &a).await.map_err(to_status)?;
                let mut agent = self.agent_for(&first.namespace, &first.pod).await?;
                let rest = futures::stream::unfold(req.into_inner(), next_frame);
                let outbound = futures::stream::once(std::future::ready(first)).chain(rest);
                let s = agent.port_forward(outbound).await?.into_inner();
                Ok(Response::new(Box::pin(s) as FrameStream))
            },
        )
        .await
    }

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<LogStream>, Status> {
        let a = Attributes::new(
            "get",
            &registry::POD,
            &req.get_ref().namespace,
            &req.get_ref().pod,
        )
        .subresource("log");
        self.auth.check(&req, &a).await.map_err(to_status)?;
        let r = req.into_inner();
        let mut agent = self.agent_for(&r.namespace, &r.pod).await?;
        let s = agent.logs(r).await?.into_inner();
        Ok(Response::new(Box::pin(s)))
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let a = Attributes::new(
            "create",
            &registry::POD,
            &req.get_ref().namespace,
            &req.get_ref().pod,
        )
        .subresource("exec");
        let what = |_: &ExecRequest| (a.clone(), "v1".to_string());
        audited(
            self.audit.as_ref(),
            &self.auth,
            req,
            what,
            false,
            |req| async {
                self.auth.check(&req, &a).await.map_err(to_status)?;
                let r = req.into_inner();
                let mut agent = self.agent_for(&r.namespace, &r.pod).await?;
                agent.exec(r).await
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_agent_is_at_the_internal_ip_and_daemon_port() {
        let n = json!({"status": {"addresses": [{"type": "Hostname", "address": "h"},
            {"type": "InternalIP", "address": "10.0.0.2"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}});
        assert_eq!(agent_address(&n).as_deref(), Some("10.0.0.2:10250"));
        assert_eq!(agent_address(&json!({"status": {}})), None);
    }
}
