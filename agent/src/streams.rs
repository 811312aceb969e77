//! The agent's pod streams (served on the node's IP, the port in the
//! Node's `status.daemonEndpoints`; the masters relay `flt logs` and
//! `flt exec` here): a container's log from its CRI log files, a command
//! run in a container to completion (with standard input: [`crate::tasks`]),
//! connections to the pods' ports ([`crate::forward`]), a container's main
//! process attached to (`crate::attach`), and the pods' CPU and memory
//! ([`crate::stats`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flotilla_client::Cache;
use flotilla_objects::core::Pod;
use flotilla_proto::node::pod_streams_server::{PodStreams, PodStreamsServer};
use flotilla_proto::node::{
    AttachFrame, ExecRequest, ExecResponse, LogsChunk, LogsRequest, PortForwardFrame, StatsRequest,
    StatsResponse,
};
use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{Error, Result};
use crate::logs::{self, Line, FOLLOW_POLL};
use crate::pods::runtime;
use crate::pods::spec::PodDirs;
use crate::pods::Ctx;

/// Longest a command runs when the caller sets no limit.
const EXEC_DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

struct Streams {
    ctx: Arc<Ctx>,
    pods: Cache<Pod>,
    stats: Arc<crate::stats::Sampler>,
}

/// Serve the pod streams on the node's IP until `stop`.
pub async fn serve(ctx: Arc<Ctx>, pods: Cache<Pod>, stop: CancellationToken) -> Result<()> {
    let addr = std::net::SocketAddr::from((ctx.cfg.node_ip, ctx.cfg.stream_port));
    let listener = crate::netns::listen(ctx.cfg.netns.as_deref(), addr)
        .await
        .map_err(Error::io(format!("listening on {addr}")))?;
    tracing::info!(%addr, tls = ctx.cfg.stream_tls.is_some(), "serving pod logs and exec");
    let tls = ctx.cfg.stream_tls.clone();
    let stats = crate::stats::Sampler::new(&ctx.cfg.name);
    tokio::spawn(stats.clone().run(ctx.clone(), stop.clone()));
    let router = tonic::transport::Server::builder().add_service(
        PodStreamsServer::new(Streams { ctx, pods, stats })
            .max_decoding_message_size(flotilla_proto::node::MESSAGE_LIMIT)
            .max_encoding_message_size(flotilla_proto::node::MESSAGE_LIMIT),
    );
    let served = match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls.incoming(listener), stop.cancelled_owned())
                .await
        }
        None => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            router
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
        }
    };
    served.map_err(|e| Error::Config(format!("serving pod streams on {addr}: {e}")))
}

/// With TLS, only the masters (a client certificate in system:masters,
/// verified by the TLS layer against the cluster CA) may read logs or run
/// commands; without TLS the agent trusts its network.
fn check_caller<T>(tls: bool, req: &Request<T>) -> Result<(), Status> {
    if !tls {
        return Ok(());
    }
    let certs = req.peer_certs();
    let leaf = certs
        .as_ref()
        .and_then(|c| c.first())
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let who = flotilla_security::authn::identity_of_certificate(leaf.as_ref())
        .map_err(|e| Status::unauthenticated(e.to_string()))?;
    if who.in_group(flotilla_security::authn::MASTERS_GROUP) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "User \"{}\" may not use this node's pod streams (only the masters may)",
            who.user
        )))
    }
}

fn not_found(ns: &str, name: &str) -> Status {
    Status::not_found(format!(
        "pods \"{name}\" not found in namespace {ns} on this node"
    ))
}

impl Streams {
    fn pod(&self, ns: &str, name: &str) -> Result<Arc<Pod>, Status> {
        self.pods.get(ns, name).ok_or_else(|| not_found(ns, name))
    }
}

/// The container a request names: its own, or the pod's only one.
fn container_name(pod: &Pod, asked: &str) -> Result<String, Status> {
    let all: Vec<&str> = pod
        .spec
        .init_containers
        .iter()
        .chain(&pod.spec.containers)
        .map(|c| c.name.as_str())
        .collect();
    if asked.is_empty() {
        return match pod.spec.containers.as_slice() {
            [only] => Ok(only.name.clone()),
            _ => Err(Status::invalid_argument(format!(
                "a container name must be specified for pod {}, choose one of: [{}]",
                pod.metadata.name,
                all.join(" ")
            ))),
        };
    }
    if all.contains(&asked) {
        Ok(asked.to_string())
    } else {
        Err(Status::invalid_argument(format!(
            "container {asked} is not valid for pod {}",
            pod.metadata.name
        )))
    }
}

fn render(lines: &[Line], timestamps: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        if timestamps {
            out.extend_from_slice(l.timestamp.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(l.text.as_bytes());
        out.push(b'\n');
    }
    out
}

type LogStream = Pin<Box<dyn Stream<Item = Result<LogsChunk, Status>> + Send>>;

#[tonic::async_trait]
impl PodStreams for Streams {
    type LogsStream = LogStream;
    type PortForwardStream = crate::forward::FrameStream;
    type AttachStream = crate::attach::FrameStream;

    async fn attach(
        &self,
        req: Request<Streaming<AttachFrame>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        check_caller(self.ctx.cfg.stream_tls.is_some(), &req)?;
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no pod given"))?;
        let pod = self.pod(&first.namespace, &first.pod)?;
        let container = container_name(&pod, &first.container)?;
        let s = crate::attach::attach(self.ctx.clone(), pod, container, first, inbound).await?;
        Ok(Response::new(s))
    }

    async fn stats(&self, req: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        check_caller(self.ctx.cfg.stream_tls.is_some(), &req)?;
        let figures = self
            .stats
            .figures(&req.get_ref().namespace)
            .ok_or_else(|| {
                Status::unavailable(format!(
                    "the agent of node {} has no figures yet (it reads its pods' cgroups every {}s and needs two readings)",
                    self.ctx.cfg.name,
                    crate::stats::WINDOW.as_secs()
                ))
            })?;
        Ok(Response::new(StatsResponse {
            nodes: vec![figures],
        }))
    }

    async fn port_forward(
        &self,
        req: Request<Streaming<PortForwardFrame>>,
    ) -> Result<Response<Self::PortForwardStream>, Status> {
        check_caller(self.ctx.cfg.stream_tls.is_some(), &req)?;
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no pod and port given"))?;
        let pod = self.pod(&first.namespace, &first.pod)?;
        let s = crate::forward::forward(self.ctx.clone(), pod, first, inbound).await?;
        Ok(Response::new(s))
    }

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<LogStream>, Status> {
        check_caller(self.ctx.cfg.stream_tls.is_some(), &req)?;
        let r = req.into_inner();
        let pod = self.pod(&r.namespace, &r.pod)?;
        let container = container_name(&pod, &r.container)?;
        let dirs = PodDirs::new(&self.ctx.cfg.pods_dir(), &pod);
        let runs = logs::runs(&dirs.logs.join(&container));
        let pick = if r.previous {
            runs.len().checked_sub(2)
        } else {
            runs.len().checked_sub(1)
        };
        let Some((attempt, path)) = pick.map(|i| runs[i].clone()) else {
            return Err(Status::invalid_argument(if r.previous {
                format!(
                    "previous terminated container \"{container}\" in pod \"{}\" not found",
                    r.pod
                )
            } else {
                format!(
                    "container \"{container}\" in pod \"{}\" is waiting to start",
                    r.pod
                )
            }));
        };
        let tail = usize::try_from(r.tail_lines).ok();
        let (lines, mut offset) = logs::read_tail(&path, tail)
            .await
            .map_err(|e| Status::internal(format!("reading {}: {e}", path.display())))?;
        let first = LogsChunk {
            data: render(&lines, r.timestamps),
        };
        let follow = r.follow && !r.previous;
        let (ctx, uid, timestamps) = (self.ctx.clone(), pod.metadata.uid.clone(), r.timestamps);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<LogsChunk, Status>>(16);
        tokio::spawn(async move {
            if !first.data.is_empty() && tx.send(Ok(first)).await.is_err() {
                return;
            }
            while follow && !tx.is_closed() {
                tokio::time::sleep(FOLLOW_POLL).await;
                // Whether the run goes on, asked before reading, so that
                // what it wrote before it stopped is read.
                let running = runtime::observe(&ctx, &uid)
                    .await
                    .ok()
                    .and_then(|o| {
                        o.latest(&container).0.map(|s| {
                            s.metadata.as_ref().map(|m| m.attempt) == Some(attempt)
                                && s.state == k8s_cri::v1::ContainerState::ContainerRunning as i32
                        })
                    })
                    .unwrap_or(false);
                let Ok((more, next)) = logs::read_more(&path, offset).await else {
                    return;
                };
                offset = next;
                if !more.is_empty() {
                    let chunk = LogsChunk {
                        data: render(&more, timestamps),
                    };
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
                if !running {
                    return;
                }
            }
        });
        let stream: LogStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
        Ok(Response::new(stream))
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        check_caller(self.ctx.cfg.stream_tls.is_some(), &req)?;
        let r = req.into_inner();
        let pod = self.pod(&r.namespace, &r.pod)?;
        let container = container_name(&pod, &r.container)?;
        let obs = runtime::observe(&self.ctx, &pod.metadata.uid)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let Some(id) = obs
            .latest(&container)
            .0
            .filter(|s| s.state == k8s_cri::v1::ContainerState::ContainerRunning as i32)
            .map(|s| s.id.clone())
        else {
            return Err(Status::failed_precondition(format!(
                "container {container} is not running"
            )));
        };
        if r.command.is_empty() {
            return Err(Status::invalid_argument("no command given"));
        }
        let timeout = match r.timeout_seconds {
            t if t > 0 => Duration::from_secs(t as u64),
            _ => EXEC_DEFAULT_TIMEOUT,
        };
        let out = if r.attach_stdin {
            let work = self.ctx.cfg.data_dir.join("exec");
            crate::tasks::exec_with_stdin(
                self.ctx.cri.channel(),
                &work,
                &id,
                r.command,
                r.stdin,
                timeout,
            )
            .await
        } else {
            self.ctx
                .cri
                .clone()
                .exec_sync(&id, r.command, timeout)
                .await
        }
        .map_err(|e| Status::unknown(e.runtime_message()))?;
        Ok(Response::new(ExecResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        }))
    }
}
