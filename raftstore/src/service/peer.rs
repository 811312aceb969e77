//! The master-to-master service: Raft RPCs, forwarded proposals, read index
//! and lease queries answered by the leader.

use flotilla_proto::raft as pb;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::network::{decode, encode};
use crate::node::Master;
use crate::types::{Command, CommandResult, NodeId, TypeConfig};
use tracing::Instrument;

pub struct PeerService {
    pub master: Master,
    /// Whether AppendEntries and leader streams are served (see
    /// `MasterConfig::serve_peer_streams`).
    pub streams: bool,
}

fn bad(e: String) -> Status {
    Status::invalid_argument(format!("undecodable peer message: {e}"))
}

/// One AppendEntries from the leader, answered by this master's Raft.
async fn append(master: &Master, req: &pb::Payload) -> Result<pb::Payload, Status> {
    let rpc: AppendEntriesRequest<TypeConfig> = decode(req).map_err(bad)?;
    let res = master.raft.append_entries(rpc).await;
    if matches!(&res, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
        master.heard.touch();
    }
    encode(&res).map_err(Status::internal)
}

/// Hand forwarded writes to this (leader) master's batcher, in order, so
/// that they join its next entry together; a result for each.
async fn propose_all(
    master: &Master,
    writes: Vec<(Option<String>, Command)>,
) -> Vec<Result<CommandResult, String>> {
    futures::future::join_all(writes.into_iter().map(|(id, cmd)| {
        // The client's request id names the leader's lines about it.
        let span = match id {
            Some(id) => tracing::info_span!("request", id = %id),
            None => tracing::Span::none(),
        };
        let master = master.clone();
        async move {
            tracing::debug!("proposing a write forwarded by a follower");
            master.submit(cmd).await.map_err(|e| e.to_string())
        }
        .instrument(span)
    }))
    .await
}

/// The answer to one question on a follower's `LeaderStream`.
async fn leader_answer(
    master: &Master,
    ask: Option<pb::to_leader::Ask>,
) -> pb::from_leader::Answer {
    use pb::from_leader::Answer;
    if !master.is_leader() {
        return Answer::Failed("not the leader".into());
    }
    match ask {
        Some(pb::to_leader::Ask::Propose(data)) => {
            let writes: Vec<(Option<String>, Command)> = match bincode::deserialize(&data) {
                Ok(w) => w,
                Err(e) => return Answer::Failed(format!("undecodable writes: {e}")),
            };
            match encode(&propose_all(master, writes).await) {
                Ok(p) => Answer::Proposed(p.data),
                Err(e) => Answer::Failed(e),
            }
        }
        Some(pb::to_leader::Ask::ReadIndex(_)) => match master.local_read_index().await {
            Ok(i) => Answer::ReadIndex(i),
            Err(e) => Answer::Failed(e.to_string()),
        },
        None => Answer::Failed("a question with nothing asked".into()),
    }
}

#[tonic::async_trait]
impl pb::raft_peer_server::RaftPeer for PeerService {
    async fn append_entries(
        &self,
        req: Request<pb::Payload>,
    ) -> Result<Response<pb::Payload>, Status> {
        Ok(Response::new(append(&self.master, req.get_ref()).await?))
    }

    type AppendStreamStream = Pin<Box<dyn Stream<Item = Result<pb::Numbered, Status>> + Send>>;

    /// Requests are taken one at a time, in order, each answered before
    /// the next is read (the leader has one in flight per follower). The
    /// stream ends when this master stops, so that its server drains
    /// instead of waiting on a leader that keeps the stream open.
    async fn append_stream(
        &self,
        req: Request<Streaming<pb::Numbered>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        if !self.streams {
            return Err(Status::unimplemented("AppendStream is not served here"));
        }
        let master = self.master.clone();
        let answers = req.into_inner().then(move |m| {
            let master = master.clone();
            async move {
                let m = m?;
                let data = append(&master, &pb::Payload { data: m.data }).await?.data;
                Ok(pb::Numbered { seq: m.seq, data })
            }
        });
        let stop = self.master.shutdown.clone();
        let answers = answers.take_until(async move { stop.cancelled().await });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn vote(&self, req: Request<pb::Payload>) -> Result<Response<pb::Payload>, Status> {
        let rpc: VoteRequest<NodeId> = decode(req.get_ref()).map_err(bad)?;
        let res = self.master.raft.vote(rpc).await;
        if matches!(&res, Ok(r) if r.vote_granted) {
            self.master.heard.touch();
        }
        Ok(Response::new(encode(&res).map_err(Status::internal)?))
    }

    async fn install_snapshot(
        &self,
        req: Request<pb::Payload>,
    ) -> Result<Response<pb::Payload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req.get_ref()).map_err(bad)?;
        let res = self.master.raft.install_snapshot(rpc).await;
        if res.is_ok() {
            self.master.heard.touch();
        }
        Ok(Response::new(encode(&res).map_err(Status::internal)?))
    }

    async fn propose(&self, req: Request<pb::Payload>) -> Result<Response<pb::Payload>, Status> {
        let cmd: Command = decode(req.get_ref()).map_err(bad)?;
        if !self.master.is_leader() {
            return Err(Status::unavailable("not the leader"));
        }
        tracing::debug!("proposing a write forwarded by a follower");
        match self.master.submit(cmd).await {
            Ok(r) => Ok(Response::new(encode(&r).map_err(Status::internal)?)),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn propose_many(
        &self,
        req: Request<pb::Payload>,
    ) -> Result<Response<pb::Payload>, Status> {
        let writes: Vec<(Option<String>, Command)> = decode(req.get_ref()).map_err(bad)?;
        if !self.master.is_leader() {
            return Err(Status::unavailable("not the leader"));
        }
        let results = propose_all(&self.master, writes).await;
        Ok(Response::new(encode(&results).map_err(Status::internal)?))
    }

    async fn read_index(
        &self,
        _req: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        if !self.master.is_leader() {
            return Err(Status::unavailable("not the leader"));
        }
        let index = self.master.local_read_index().await?;
        Ok(Response::new(pb::ReadIndexResponse { index }))
    }

    type LeaderStreamStream = Pin<Box<dyn Stream<Item = Result<pb::FromLeader, Status>> + Send>>;

    /// A follower's questions, several at once: each is answered when it
    /// is done, with its number, so that a read index need not wait behind
    /// a batch of writes. The stream ends when this master stops.
    async fn leader_stream(
        &self,
        req: Request<Streaming<pb::ToLeader>>,
    ) -> Result<Response<Self::LeaderStreamStream>, Status> {
        if !self.streams {
            return Err(Status::unimplemented("LeaderStream is not served here"));
        }
        let master = self.master.clone();
        let mut asks = req.into_inner();
        // Answers wait here for the stream: as many as the follower has
        // questions in flight (its forwards, one read-index call).
        let (tx, rx) = tokio::sync::mpsc::channel(128);
        tokio::spawn(async move {
            loop {
                let m = tokio::select! {
                    m = asks.next() => m,
                    _ = master.shutdown.cancelled() => return,
                };
                // The follower is gone or its stream broke.
                let Some(Ok(m)) = m else { return };
                let (master, tx) = (master.clone(), tx.clone());
                tokio::spawn(async move {
                    let answer = leader_answer(&master, m.ask).await;
                    let _ = tx
                        .send(Ok(pb::FromLeader {
                            seq: m.seq,
                            answer: Some(answer),
                        }))
                        .await;
                });
            }
        });
        let stop = self.master.shutdown.clone();
        let answers = tokio_stream::wrappers::ReceiverStream::new(rx)
            .take_until(async move { stop.cancelled().await });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn lease_keep_alive(
        &self,
        req: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseReply>, Status> {
        if !self.master.is_leader() {
            return Err(Status::unavailable("not the leader"));
        }
        let ttl = self
            .master
            .lease_keep_alive_local(req.into_inner().id)
            .await?;
        Ok(Response::new(pb::LeaseReply {
            found: ttl.is_some(),
            ttl: ttl.unwrap_or(0),
            granted_ttl: ttl.unwrap_or(0),
        }))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseReply>, Status> {
        if !self.master.is_leader() {
            return Err(Status::unavailable("not the leader"));
        }
        let r = self.master.lessor.remaining(req.into_inner().id);
        Ok(Response::new(pb::LeaseReply {
            found: r.is_some(),
            ttl: r.map(|x| x.0).unwrap_or(-1),
            granted_ttl: r.map(|x| x.1).unwrap_or(0),
        }))
    }

    async fn pre_vote(
        &self,
        req: Request<pb::PreVoteRequest>,
    ) -> Result<Response<pb::PreVoteReply>, Status> {
        let candidate_log: Option<crate::types::LogId> =
            bincode::deserialize(&req.get_ref().last_log_id).map_err(|e| bad(e.to_string()))?;
        let granted = crate::election::grants_prevote(&self.master, candidate_log);
        tracing::debug!(candidate = req.get_ref().candidate, granted, "pre-vote");
        Ok(Response::new(pb::PreVoteReply { granted }))
    }

    async fn timeout_now(
        &self,
        req: Request<pb::TimeoutNowRequest>,
    ) -> Result<Response<pb::TimeoutNowReply>, Status> {
        let r = req.into_inner();
        let reply = match self.master.stand_now(r.leader, r.term).await {
            Ok(()) => pb::TimeoutNowReply {
                started: true,
                error: String::new(),
            },
            Err(error) => pb::TimeoutNowReply {
                started: false,
                error,
            },
        };
        Ok(Response::new(reply))
    }

    async fn ping(
        &self,
        _req: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingReply>, Status> {
        Ok(Response::new(pb::PingReply {
            member_id: self.master.id,
        }))
    }
}
