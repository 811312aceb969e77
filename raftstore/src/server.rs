//! Binding the addresses and serving a master until it is told to stop.

use std::time::Duration;

use flotilla_proto::cluster::cluster_admin_server::ClusterAdminServer;
use flotilla_proto::etcdserverpb::cluster_server::ClusterServer;
use flotilla_proto::etcdserverpb::kv_server::KvServer;
use flotilla_proto::etcdserverpb::lease_server::LeaseServer;
use flotilla_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use flotilla_proto::etcdserverpb::watch_server::WatchServer;
use flotilla_proto::raft::raft_peer_server::RaftPeerServer;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use flotilla_security::tls::ServerTls;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Routes;
use tonic::transport::server::Router;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::transport::GateInterceptor;
use flotilla_telemetry::grpc::{GrpcMetrics, GrpcMetricsLayer};
use flotilla_telemetry::request::{RequestIdLayer, HEADER as REQUEST_ID};
use tower_layer::{Identity, Stack};

use crate::node::{Master, MasterConfig, StartError};
use crate::service::{
    admin::AdminService, cluster::ClusterService, kv::KvService, lease::LeaseService,
};
use crate::service::{maintenance::MaintenanceService, peer::PeerService, watch::WatchService};

/// Accepted connections with Nagle's algorithm off: small gRPC replies must
/// not wait for delayed ACKs (that costs 40 ms a round trip).
fn incoming(l: TcpListener) -> TcpIncoming {
    TcpIncoming::from(l).with_nodelay(Some(true))
}

type Serving = Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// Serve `router` on `l` until the master stops: through TLS when `tls` is
/// given, plaintext otherwise.
fn serve(
    router: Router<Stack<RequestIdLayer, Stack<GrpcMetricsLayer, Identity>>>,
    l: TcpListener,
    tls: Option<&Arc<ServerTls>>,
    m: &Master,
) -> Serving {
    let stop = m.shutdown.clone();
    let until = async move { stop.cancelled().await };
    close_on_shutdown(&l, m);
    match tls {
        Some(t) => Box::pin(router.serve_with_incoming_shutdown(t.incoming(l), until)),
        None => Box::pin(router.serve_with_incoming_shutdown(incoming(l), until)),
    }
}

/// When the master stops, stop listening on `l` at once: tonic keeps its
/// listener open until every connection has drained (watch streams hold
/// them for seconds), and connections the kernel accepted meanwhile would
/// hang unanswered. A listening socket shut down refuses new connections
/// (and resets those not yet accepted), so clients move to another master
/// immediately.
fn close_on_shutdown(l: &TcpListener, m: &Master) {
    use std::os::fd::AsFd;
    // A second descriptor of the same socket: shutting it down acts on the
    // socket whatever tonic has done with its own descriptor by then.
    let Ok(fd) = l.as_fd().try_clone_to_owned() else {
        return;
    };
    let stop = m.shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        if let Err(e) = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Read) {
            tracing::debug!(error = %e, "closing the listener");
        }
    });
}

/// A socket bound to `addr` but not listening yet: the address is taken
/// (a clash is reported at once), while connections are refused until
/// [`TcpSocket::listen`].
fn bind_only(addr: std::net::SocketAddr) -> std::io::Result<TcpSocket> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    Ok(s)
}

/// The client port's streaming methods, for `grpc_server_*{grpc_type}`.
const STREAMING: &[(&str, &str)] = &[
    ("/etcdserverpb.Watch/Watch", "bidi_stream"),
    ("/etcdserverpb.Lease/LeaseKeepAlive", "bidi_stream"),
    ("/etcdserverpb.Maintenance/Snapshot", "server_stream"),
    ("/flotilla.objects.v1.Objects/Watch", "server_stream"),
    ("/flotilla.raft.v1.RaftPeer/AppendStream", "bidi_stream"),
];

/// How long a starting master waits to publish itself before serving clients.
const READY_WAIT: Duration = Duration::from_secs(5);

/// A master serving its peer and client addresses.
/// Why a server ended: its listener, or the gRPC transport.
type ServeError = Box<dyn std::error::Error + Send + Sync>;

pub struct RunningMaster {
    pub master: Master,
    servers: Vec<JoinHandle<Result<(), ServeError>>>,
}

/// Open the data dir, bind both addresses, start Raft and serve.
pub async fn start(cfg: MasterConfig) -> Result<RunningMaster, StartError> {
    start_with(cfg, |_| Routes::default()).await
}

/// [`start`], also serving on the client address the gRPC services that
/// `extra` builds for the opened master (the object API, for one).
pub async fn start_with(
    cfg: MasterConfig,
    extra: impl FnOnce(&Master) -> Routes,
) -> Result<RunningMaster, StartError> {
    let peer_l = TcpListener::bind(cfg.peer_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: cfg.peer_addr,
            source,
        })?;
    // Clients are refused (and go to another master) until this one is
    // ready to answer them; see below.
    let client_sock = bind_only(cfg.client_addr).map_err(|source| StartError::Bind {
        addr: cfg.client_addr,
        source,
    })?;
    let master = Master::open(cfg).await?;
    let limit = master.cfg.limits.max_request_bytes + 512 * 1024;

    let sec = master.cfg.security.clone();
    let grpc_metrics = GrpcMetrics::new(&master.cfg.metrics, STREAMING);
    let peer = Server::builder()
        .tcp_nodelay(true)
        .layer(GrpcMetricsLayer(grpc_metrics.clone()))
        .layer(RequestIdLayer(REQUEST_ID))
        .add_service(
            RaftPeerServer::new(PeerService {
                master: master.clone(),
                streams: master.cfg.serve_peer_streams,
            })
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX),
        );
    let peer = serve(peer, peer_l, sec.peer_tls.as_ref(), &master);

    let m = || master.clone();
    let gate = GateInterceptor(sec.gate.clone());
    // gRPC, and beside it etcd's /health and /metrics over HTTP/1.1 or h2.
    let routes = Routes::from(
        extra(&master)
            .into_axum_router()
            .merge(crate::health::client_port_router(master.clone())),
    );
    let client = Server::builder()
        .tcp_nodelay(true)
        .accept_http1(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(GrpcMetricsLayer(grpc_metrics))
        .layer(RequestIdLayer(REQUEST_ID))
        .add_routes(routes)
        .add_service(InterceptedService::new(
            KvServer::new(KvService { master: m() }).max_decoding_message_size(limit),
            gate.clone(),
        ))
        .add_service(InterceptedService::new(
            WatchServer::new(WatchService { master: m() }).max_decoding_message_size(limit),
            gate.clone(),
        ))
        .add_service(InterceptedService::new(
            LeaseServer::new(LeaseService { master: m() }),
            gate.clone(),
        ))
        .add_service(InterceptedService::new(
            ClusterServer::new(ClusterService { master: m() }),
            gate.clone(),
        ))
        .add_service(InterceptedService::new(
            MaintenanceServer::new(MaintenanceService { master: m() }),
            gate.clone(),
        ))
        .add_service(InterceptedService::new(
            ClusterAdminServer::new(AdminService { master: m() }),
            gate,
        ));

    master.bootstrap().await?;
    master.spawn_duties();
    let peer = tokio::spawn(async move { peer.await.map_err(ServeError::from) });
    // Serve clients once this master has published its client address (as
    // etcd does), or after READY_WAIT anyway, so that a master that cannot
    // reach a quorum still answers status queries.
    // Until then the port is bound but not listening: connecting clients
    // are refused and try another master, instead of waiting on one that
    // accepted their connection and cannot answer yet.
    let m2 = master.clone();
    let client = tokio::spawn(async move {
        // A master stopped meanwhile never listens (its stop does not wait
        // out READY_WAIT).
        tokio::select! {
            ready = m2.wait_ready(READY_WAIT) => if !ready {
                tracing::warn!(
                    "not yet published in the member directory (no quorum?); serving clients anyway"
                );
            },
            _ = m2.shutdown.cancelled() => return Ok(()),
        }
        let l = client_sock.listen(1024).map_err(|e| {
            tracing::error!(error = %e, "cannot listen on the client address");
            e
        })?;
        serve(client, l, m2.cfg.security.client_tls.as_ref(), &m2)
            .await
            .map_err(ServeError::from)
    });
    let servers = vec![peer, client];
    tracing::info!(
        name = %master.cfg.name,
        id = master.id,
        client = %master.cfg.client_addr,
        peer = %master.cfg.peer_addr,
        "master serving"
    );
    Ok(RunningMaster { master, servers })
}

impl RunningMaster {
    /// Stop listening, stop Raft, let the servers drain, and close the store.
    pub async fn shutdown(self) {
        let started = std::time::Instant::now();
        self.master.shutdown.cancel();
        // Raft first: a leader that went on heartbeating while its servers
        // drained (seconds, with watch streams open) kept the others from
        // electing a new one, and writes forwarded to it failed meanwhile.
        // Stopped, it falls silent and the others elect within an election
        // timeout; what was not committed is not acknowledged.
        if let Err(e) = self.master.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        let raft_stopped = started.elapsed();
        for s in self.servers {
            match tokio::time::timeout(Duration::from_secs(5), s).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server ended with an error"),
                Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
                Err(_) => tracing::warn!("server did not stop within 5 s"),
            }
        }
        // Make the WAL durable and stop RocksDB's background threads, so
        // that the process can exit while the database object still lives.
        let drained = started.elapsed();
        let db = self.master.store.db().clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = db.flush_wal(true) {
                tracing::warn!(error = %e, "final WAL sync");
            }
            db.cancel_all_background_work(true);
        })
        .await;
        // Where a slow stop spent its time.
        tracing::info!(
            name = %self.master.cfg.name,
            raft_ms = raft_stopped.as_millis() as u64,
            drained_ms = drained.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "master stopped"
        );
    }
}
