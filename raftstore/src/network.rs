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
use tonic::transport::{Channel, Endpoint};

use crate::types::{MasterNode, NodeId, TypeConfig};

/// gRPC channels to peers by address, shared by Raft and request forwarding.
#[derive(Clone, Default)]
pub struct PeerChannels {
    inner: Arc<Mutex<HashMap<String, Channel>>>,
}

impl PeerChannels {
    pub fn client(&self, addr: &str) -> Result<RaftPeerClient<Channel>, String> {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = m.get(addr) {
            return Ok(RaftPeerClient::new(c.clone())
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX));
        }
        let ep = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad peer address {addr}: {e}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let ch = ep.connect_lazy();
        m.insert(addr.to_string(), ch.clone());
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
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &MasterNode) -> Self::Network {
        PeerConnection {
            target,
            addr: node.peer_addr.clone(),
            channels: self.channels.clone(),
        }
    }
}

pub struct PeerConnection {
    target: NodeId,
    addr: String,
    channels: PeerChannels,
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
            Err(_) => {
                return Err(RPCError::Unreachable(Unreachable::new(
                    &std::io::Error::other(format!("{which} to {} timed out", self.addr)),
                )))
            }
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
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
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
