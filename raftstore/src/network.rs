//! Master-to-master transport: openraft's RPCs over gRPC, payloads in bincode.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_proto::raft::raft_peer_client::RaftPeerClient;
use flotilla_proto::raft::{Numbered, Payload};
use futures::{Stream, StreamExt};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::types::{MasterNode, NodeId, TypeConfig};

/// Connections kept to each peer. Calls rotate over them: when a packet
/// is lost, TCP holds everything behind it on that connection until its
/// retransmission (200 ms at least, doubling while losses go on), longer
/// than an AppendEntries may take (one heartbeat); the calls on the other
/// connections go on meanwhile. One connection stalled Raft for seconds
/// at 20-30% packet loss (the jepsen `lossy` nemesis).
const CONNECTIONS_PER_PEER: usize = 4;

/// gRPC channels to peers by address, shared by Raft and request forwarding.
#[derive(Clone, Default)]
pub struct PeerChannels {
    inner: Arc<Mutex<HashMap<String, Pool>>>,
    /// TLS to present to peers, when the peer port is secured.
    tls: Option<tonic::transport::ClientTlsConfig>,
}

/// What is kept for one peer.
struct Pool {
    channels: Vec<Channel>,
    next: usize,
    /// Idle AppendEntries streams, left by clients openraft dropped.
    spare: Vec<AppendStream>,
    /// The peer refused an AppendEntries stream: calls until then.
    calls_until: Option<std::time::Instant>,
}

/// Idle AppendEntries streams kept per peer for the next client (see
/// `PeerConnection::started`).
const SPARE_STREAMS: usize = 4;

/// How long a peer that refused an AppendEntries stream gets one call per
/// AppendEntries before a stream is tried again (it may have been upgraded).
const CALLS_AFTER_REFUSAL: Duration = Duration::from_secs(60);

impl PeerChannels {
    pub fn new(tls: Option<tonic::transport::ClientTlsConfig>) -> Self {
        PeerChannels {
            inner: Default::default(),
            tls,
        }
    }

    /// `f` on the pool of `addr`, if it has one (made by [`Self::client`]).
    fn with_pool<T>(&self, addr: &str, f: impl FnOnce(&mut Pool) -> Option<T>) -> Option<T> {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.get_mut(addr).and_then(f)
    }

    /// Until when `addr` gets calls rather than a stream (it refused one).
    fn calls_until(&self, addr: &str) -> Option<std::time::Instant> {
        self.with_pool(addr, |p| p.calls_until)
    }

    /// `addr` refused a stream: calls until the returned instant.
    fn streams_refused(&self, addr: &str) -> std::time::Instant {
        let until = std::time::Instant::now() + CALLS_AFTER_REFUSAL;
        self.with_pool(addr, |p| p.calls_until.replace(until));
        until
    }

    /// An idle stream to `addr` whose peer has not closed it, if any.
    fn take_spare(&self, addr: &str) -> Option<AppendStream> {
        self.with_pool(addr, |p| {
            std::iter::from_fn(|| p.spare.pop()).find(|s| !s.tx.is_closed())
        })
    }

    /// Keep an idle stream to `addr` for the next client (up to a few).
    fn keep_spare(&self, addr: &str, s: AppendStream) {
        self.with_pool(addr, |p| {
            (p.spare.len() < SPARE_STREAMS && !s.tx.is_closed()).then(|| p.spare.push(s))
        });
    }

    pub fn client(&self, addr: &str) -> Result<RaftPeerClient<Channel>, String> {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let ch = match m.get_mut(addr) {
            Some(pool) => {
                pool.next = (pool.next + 1) % pool.channels.len();
                pool.channels[pool.next].clone()
            }
            None => {
                let ep = crate::transport::endpoint(addr, self.tls.as_ref())
                    .map_err(|e| format!("peer: {e}"))?
                    .connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5));
                // Each lazy channel opens a connection of its own.
                let channels: Vec<Channel> = (0..CONNECTIONS_PER_PEER)
                    .map(|_| ep.connect_lazy())
                    .collect();
                let first = channels[0].clone();
                m.insert(
                    addr.to_string(),
                    Pool {
                        channels,
                        next: 0,
                        spare: Vec::new(),
                        calls_until: None,
                    },
                );
                first
            }
        };
        Ok(RaftPeerClient::new(ch)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }
}

pub fn encode<T: Serialize>(v: &T) -> Result<Payload, String> {
    bincode::serialize(v)
        .map(|data| Payload { data })
        .map_err(|e| e.to_string())
}

pub fn decode<T: DeserializeOwned>(p: &Payload) -> Result<T, String> {
    bincode::deserialize(&p.data).map_err(|e| e.to_string())
}

pub struct NetworkFactory {
    pub channels: PeerChannels,
    /// First wait before retrying a peer that refused a connection (the
    /// heartbeat interval); doubled on each refusal, up to a second.
    pub first_retry: Duration,
    pub metrics: std::sync::Arc<crate::metrics::StoreMetrics>,
    /// How far the log is fsynced here: no follower learns of a commit past it.
    pub durable: Arc<crate::durable::Durability>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &MasterNode) -> Self::Network {
        PeerConnection {
            target,
            addr: node.peer_addr.clone(),
            channels: self.channels.clone(),
            first_retry: self.first_retry,
            metrics: self.metrics.clone(),
            durable: self.durable.clone(),
            stream: None,
            in_flight: false,
            calls_until: self.channels.calls_until(&node.peer_addr),
            started: false,
        }
    }
}

pub struct PeerConnection {
    target: NodeId,
    addr: String,
    channels: PeerChannels,
    first_retry: Duration,
    metrics: std::sync::Arc<crate::metrics::StoreMetrics>,
    durable: Arc<crate::durable::Durability>,
    /// The AppendEntries stream to this peer, once opened.
    stream: Option<AppendStream>,
    /// An AppendEntries was sent on `stream` and its answer not read: the
    /// call was given up (openraft drops it at its timeout). The next call
    /// opens a new stream, on the next of the peer's connections, as a
    /// late answer may mean that connection waits on a lost packet.
    in_flight: bool,
    /// The peer serves no AppendEntries stream (an older master): one call
    /// per AppendEntries until then.
    calls_until: Option<std::time::Instant>,
    /// An AppendEntries was sent through this client. openraft makes a
    /// client for each leadership check of a linearizable read and sends
    /// it one heartbeat: a client's first AppendEntries goes on an idle
    /// stream that an earlier client left (see `Drop`), if there is one.
    started: bool,
}

impl Drop for PeerConnection {
    /// An idle stream (no AppendEntries awaiting its answer) is left for
    /// the next client.
    fn drop(&mut self) {
        if let Some(s) = self.stream.take() {
            if !self.in_flight {
                self.channels.keep_spare(&self.addr, s);
            }
        }
    }
}

/// AppendEntries requests in, answers out in the same order, numbered.
struct AppendStream {
    tx: mpsc::Sender<Numbered>,
    rx: tonic::Streaming<Numbered>,
    next: u64,
}

/// Why an answer could not be read from an AppendEntries stream.
#[derive(Debug, PartialEq)]
enum StreamFault {
    /// The peer ended the stream, or answered with an error.
    Ended(String),
    /// An answer to a request not sent yet: the stream is unusable.
    Disordered { want: u64, got: u64 },
}

/// Read answers until the one to request `seq`, skipping answers to
/// earlier requests. A client leaves a stream whose answer it gave up
/// waiting for (`PeerConnection::in_flight`), so none should come; the
/// numbers make sure that one that did is never taken for this one's.
async fn answer<S>(rx: &mut S, seq: u64) -> Result<Vec<u8>, StreamFault>
where
    S: Stream<Item = Result<Numbered, tonic::Status>> + Unpin,
{
    loop {
        match rx.next().await {
            Some(Ok(m)) if m.seq == seq => return Ok(m.data),
            Some(Ok(m)) if m.seq < seq => continue,
            Some(Ok(m)) => {
                return Err(StreamFault::Disordered {
                    want: seq,
                    got: m.seq,
                })
            }
            Some(Err(status)) => return Err(StreamFault::Ended(status.message().to_string())),
            None => return Err(StreamFault::Ended("the peer closed the stream".into())),
        }
    }
}

type RpcErr<E> = RPCError<NodeId, MasterNode, RaftError<NodeId, E>>;

fn net_err<E: std::error::Error>(e: String) -> RpcErr<E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(e)))
}

fn unreachable<E: std::error::Error>(e: String) -> RpcErr<E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e)))
}

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &self,
        which: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let net = net_err::<E>;
        let mut client = self.channels.client(&self.addr).map_err(net)?;
        let payload = encode(req).map_err(net)?;
        let ttl = option.hard_ttl();
        let fut = async {
            match which {
                "append" => client.append_entries(payload).await,
                "vote" => client.vote(payload).await,
                _ => client.install_snapshot(payload).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, fut).await {
            // A late answer (a lost packet waits for TCP's retransmission,
            // 200 ms at least) is not an unreachable peer: openraft backs off
            // from an Unreachable one, and under packet loss that stopped
            // replication for half a second at a time. Try again at the
            // next heartbeat instead.
            Err(_) => return Err(net(format!("{which} to {} timed out", self.addr))),
            Ok(Err(status)) => {
                return Err(unreachable(format!(
                    "{which} to {}: {}",
                    self.addr,
                    status.message()
                )))
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        self.answered(&reply)
    }

    fn answered<Resp, E>(&self, reply: &Payload) -> Result<Resp, RpcErr<E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let res: Result<Resp, RaftError<NodeId, E>> = decode(reply).map_err(net_err::<E>)?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Open an AppendEntries stream on the next of the peer's connections.
    async fn open_stream(&self) -> Result<AppendStream, tonic::Status> {
        let mut client = self
            .channels
            .client(&self.addr)
            .map_err(tonic::Status::unavailable)?;
        self.metrics.append_stream_opens.inc();
        let (tx, rx) = mpsc::channel(1);
        let answers = client
            .append_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(AppendStream {
            tx,
            rx: answers,
            next: 0,
        })
    }

    /// One AppendEntries on the stream (opened first when there is none).
    async fn append_streamed(
        &mut self,
        payload: Payload,
        ttl: Duration,
    ) -> Result<Payload, RpcErr<openraft::error::Infallible>> {
        if std::mem::take(&mut self.in_flight) {
            self.stream = None;
        }
        let addr = self.addr.clone();
        let exchange = async {
            let s = match self.stream.take() {
                Some(s) => s,
                None => self.open_stream().await.map_err(Fault::Status)?,
            };
            let s = self.stream.insert(s);
            let seq = s.next;
            s.next += 1;
            self.in_flight = true;
            s.tx.send(Numbered {
                seq,
                data: payload.data,
            })
            .await
            .map_err(|_| Fault::Stream(StreamFault::Ended("the stream is closed".into())))?;
            let data = answer(&mut s.rx, seq).await.map_err(Fault::Stream)?;
            self.in_flight = false;
            Ok(Payload { data })
        };
        match tokio::time::timeout(ttl, exchange).await {
            Ok(Ok(p)) => Ok(p),
            // As for a call: a late answer is not an unreachable peer.
            Err(_) => {
                self.stream = None;
                self.in_flight = false;
                Err(net_err(format!("append to {addr} timed out")))
            }
            Ok(Err(Fault::Status(st))) if st.code() == tonic::Code::Unimplemented => {
                tracing::info!(peer = %addr, "the peer serves no AppendEntries stream; one call each");
                self.calls_until = Some(self.channels.streams_refused(&addr));
                Err(net_err(format!("append to {addr}: no stream")))
            }
            Ok(Err(f)) => {
                self.stream = None;
                self.in_flight = false;
                Err(unreachable(format!("append to {addr}: {f}")))
            }
        }
    }
}

/// Why a streamed AppendEntries failed.
#[derive(Debug)]
enum Fault {
    Status(tonic::Status),
    Stream(StreamFault),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Status(s) => f.write_str(s.message()),
            Fault::Stream(StreamFault::Ended(why)) => f.write_str(why),
            Fault::Stream(StreamFault::Disordered { want, got }) => {
                write!(f, "answer {got} came while waiting for {want}")
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    /// A peer that refuses connections (stopped, restarting) is retried
    /// after one heartbeat, then after twice as long each time, up to a
    /// second (openraft's default waits 500 ms each time, longer than an
    /// election).
    fn backoff(&self) -> openraft::network::Backoff {
        let first = self.first_retry.max(Duration::from_millis(10));
        openraft::network::Backoff::new(
            (0u32..)
                .map(move |i| (first * 2u32.saturating_pow(i.min(10))).min(Duration::from_secs(1))),
        )
    }

    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        // openraft may count this (leader) master's entries before its
        // fsync: followers learn of a commit only once the leader has it on
        // disk too (see `crate::durable`).
        rpc.leader_commit = self.durable.clamp_commit(rpc.leader_commit);
        let heartbeat = rpc.entries.is_empty().then(std::time::Instant::now);
        let unary = self
            .calls_until
            .is_some_and(|t| std::time::Instant::now() < t);
        if !std::mem::replace(&mut self.started, true) && !unary {
            self.stream = self.channels.take_spare(&self.addr);
        }
        let res = if unary {
            self.metrics.appends_called.inc();
            self.call("append", &rpc, &option).await
        } else {
            self.metrics.appends_streamed.inc();
            let payload = encode(&rpc).map_err(net_err)?;
            self.append_streamed(payload, option.hard_ttl())
                .await
                .and_then(|reply| self.answered(&reply))
        };
        if let (Some(t), Ok(_)) = (heartbeat, &res) {
            self.metrics
                .peer_rtt
                .with_label_values(&[&format!("{:x}", self.target)])
                .observe(t.elapsed().as_secs_f64());
        }
        res
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        if rpc.offset == 0 {
            self.metrics.snapshot_sends.inc();
        }
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        self.call("vote", &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(seq: u64, data: &[u8]) -> Result<Numbered, tonic::Status> {
        Ok(Numbered {
            seq,
            data: data.to_vec(),
        })
    }

    #[tokio::test]
    async fn an_answer_is_the_one_to_its_request_never_an_earlier_ones() {
        // Requests 3 and 4 were given up before their answers came.
        let mut rx = futures::stream::iter(vec![
            numbered(3, b"late"),
            numbered(4, b"later"),
            numbered(5, b"mine"),
            numbered(6, b"next"),
        ]);
        assert_eq!(answer(&mut rx, 5).await, Ok(b"mine".to_vec()));
        assert_eq!(answer(&mut rx, 6).await, Ok(b"next".to_vec()));
        assert_eq!(
            answer(&mut rx, 7).await,
            Err(StreamFault::Ended("the peer closed the stream".into()))
        );
    }

    #[tokio::test]
    async fn an_answer_ahead_of_its_request_or_an_error_ends_the_stream() {
        let mut rx = futures::stream::iter(vec![numbered(9, b"?")]);
        assert_eq!(
            answer(&mut rx, 2).await,
            Err(StreamFault::Disordered { want: 2, got: 9 })
        );
        let mut rx = futures::stream::iter(vec![
            numbered(1, b"late"),
            Err(tonic::Status::invalid_argument("undecodable")),
        ]);
        assert_eq!(
            answer(&mut rx, 2).await,
            Err(StreamFault::Ended("undecodable".into()))
        );
    }
}
