//! Master-to-master transport: openraft's RPCs over gRPC, payloads in bincode.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_proto::raft::raft_peer_client::RaftPeerClient;
use flotilla_proto::raft::Payload;
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

struct Pool {
    channels: Vec<Channel>,
    next: usize,
}

impl PeerChannels {
    pub fn new(tls: Option<tonic::transport::ClientTlsConfig>) -> Self {
        PeerChannels {
            inner: Default::default(),
            tls,
        }
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
                m.insert(addr.to_string(), Pool { channels, next: 0 });
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
}

type RpcErr<E> = RPCError<NodeId, MasterNode, RaftError<NodeId, E>>;

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
        let net = |e: String| RPCError::Network(NetworkError::new(&std::io::Error::other(e)));
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
                return Err(RPCError::Unreachable(Unreachable::new(
                    &std::io::Error::other(format!(
                        "{which} to {}: {}",
                        self.addr,
                        status.message()
                    )),
                )))
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        let res: Result<Resp, RaftError<NodeId, E>> = decode(&reply).map_err(net)?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
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
        let res = self.call("append", &rpc, &option).await;
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
