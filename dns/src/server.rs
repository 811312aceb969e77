//! The listeners (UDP and TCP on one address) and the loop that rebuilds
//! the zone's table from the informers whenever a service or an endpoint
//! slice changes.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use flotilla_objects::api::{ListParams, ObjectApi};
use flotilla_objects::core::Service;
use flotilla_objects::discovery::EndpointSlice;
use flotilla_runtime::Informer;
use hickory_proto::op::ResponseCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::answer::{error_reply, handle, Outcome, Transport, ZoneConfig};
use crate::forward::Forwarder;
use crate::zone::{build, Table};
use crate::Error;

/// A TCP connection idle this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Settings of a master's DNS server.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// UDP and TCP address to serve on.
    pub addr: SocketAddr,
    /// Cluster domain (`cluster.local`).
    pub domain: String,
    /// TTL of answers, seconds.
    pub ttl: u32,
    /// TTL of the SOA and of negative answers, seconds.
    pub negative_ttl: u32,
    /// The kube-dns Service's ClusterIP (the zone's name server address).
    pub cluster_dns: IpAddr,
    /// Upstream resolvers for names outside the zone.
    pub upstreams: Vec<SocketAddr>,
}

/// The zone's current table and what answering needs.
pub struct Shared {
    table: RwLock<Arc<Table>>,
    zone: ZoneConfig,
    forwarder: Forwarder,
    stale: AtomicBool,
}

impl Shared {
    fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A running DNS server; it stops when the token given to [`start`] is
/// cancelled.
pub struct Running {
    /// The UDP (and TCP) address actually bound.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Running {
    /// Say whether this master's replica may be stale (no quorum); logged
    /// when it changes, readable by metrics.
    pub fn set_stale(&self, stale: bool) {
        if self.shared.stale.swap(stale, Ordering::Relaxed) != stale {
            if stale {
                tracing::warn!("DNS answers come from a replica without quorum: they may be stale");
            } else {
                tracing::info!("DNS replica has its quorum again");
            }
        }
    }

    /// Whether answers may be stale (see [`Running::set_stale`]).
    pub fn is_stale(&self) -> bool {
        self.shared.stale.load(Ordering::Relaxed)
    }

    /// Names in the current table (for metrics and tests).
    pub fn names(&self) -> usize {
        self.shared.table().nodes.len()
    }
}

/// Bind `cfg.addr` (UDP and TCP) and serve the zone from informers over
/// `api`, until `stop`.
/// UDP and TCP sockets on one address. With port 0 the UDP socket picks
/// the port, and TCP takes the same one; when that port is taken for TCP
/// (by any other program), another is picked, up to 20 times.
async fn bind(want: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr), Error> {
    let mut tries = 0;
    loop {
        let udp = UdpSocket::bind(want)
            .await
            .map_err(|source| Error::Bind { addr: want, source })?;
        let addr = udp.local_addr()?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp, addr)),
            Err(e) if want.port() == 0 && tries < 20 => {
                tracing::debug!(%addr, error = %e, "TCP port taken; picking another");
                tries += 1;
            }
            Err(source) => return Err(Error::Bind { addr, source }),
        }
    }
}

pub async fn start(
    cfg: DnsConfig,
    api: Arc<dyn ObjectApi>,
    stop: CancellationToken,
) -> Result<Running, Error> {
    let domain = cfg.domain.trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() || hickory_proto::rr::Name::from_ascii(&domain).is_err() {
        return Err(Error::Invalid(format!("cluster domain {:?}", cfg.domain)));
    }
    let (udp, tcp, addr) = bind(cfg.addr).await?;
    let own = [addr, SocketAddr::new(cfg.cluster_dns, 53)];
    let shared = Arc::new(Shared {
        table: RwLock::new(Arc::new(build(&domain, cfg.cluster_dns, &[], &[], 0))),
        zone: ZoneConfig {
            domain: domain.clone(),
            ttl: cfg.ttl,
            negative_ttl: cfg.negative_ttl,
        },
        forwarder: Forwarder::new(cfg.upstreams.clone(), &own),
        stale: AtomicBool::new(false),
    });
    let span = tracing::info_span!("dns", %addr);
    // Local (serializable) lists: answers keep coming without quorum.
    let local = ListParams {
        serializable: true,
        ..ListParams::default()
    };
    let services = Informer::<Service>::spawn_with(api.clone(), local.clone());
    let slices = Informer::<EndpointSlice>::spawn_with(api, local);
    tokio::spawn(
        rebuild_loop(
            shared.clone(),
            services,
            slices,
            cfg.cluster_dns,
            stop.clone(),
        )
        .instrument(span.clone()),
    );
    let udp = Arc::new(udp);
    for _ in 0..2 {
        tokio::spawn(serve_udp(udp.clone(), shared.clone(), stop.clone()).instrument(span.clone()));
    }
    tokio::spawn(serve_tcp(tcp, shared.clone(), stop).instrument(span.clone()));
    span.in_scope(|| {
        tracing::info!(domain = %domain, upstreams = ?shared.forwarder.upstreams(), "serving cluster DNS")
    });
    Ok(Running { addr, shared })
}

async fn rebuild_loop(
    shared: Arc<Shared>,
    services: Informer<Service>,
    slices: Informer<EndpointSlice>,
    dns_ip: IpAddr,
    stop: CancellationToken,
) {
    let changed = Arc::new(Notify::new());
    let mut sub_s = services.subscribe();
    let mut sub_e = slices.subscribe();
    let notify = changed.clone();
    let watch_changes = async move {
        loop {
            tokio::select! {
                c = sub_s.next() => if c.is_none() { return },
                c = sub_e.next() => if c.is_none() { return },
            }
            notify.notify_one();
        }
    };
    let serial = AtomicU32::new(1);
    let rebuild = async {
        loop {
            while !(services.is_synced() && slices.is_synced()) {
                services.wait_synced(Duration::from_secs(1)).await;
                slices.wait_synced(Duration::from_secs(1)).await;
            }
            let t = build(
                &shared.zone.domain,
                dns_ip,
                &services.list(),
                &slices.list(),
                serial.fetch_add(1, Ordering::Relaxed),
            );
            tracing::debug!(names = t.nodes.len(), "zone rebuilt");
            *shared.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(t);
            changed.notified().await;
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = watch_changes => {}
        _ = rebuild => {}
    }
}

async fn serve_udp(sock: Arc<UdpSocket>, shared: Arc<Shared>, stop: CancellationToken) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive");
                    continue;
                }
            },
        };
        let table = shared.table();
        match handle(&buf[..n], &table, &shared.zone, Transport::Udp) {
            Outcome::Reply(b) => {
                if let Err(e) = sock.send_to(&b, peer).await {
                    tracing::debug!(error = %e, %peer, "udp send");
                }
            }
            Outcome::Forward(req) => {
                let (sock, shared) = (sock.clone(), shared.clone());
                tokio::spawn(async move {
                    if let Some(b) = forward(&shared, req, Transport::Udp).await {
                        let _ = sock.send_to(&b, peer).await;
                    }
                });
            }
            Outcome::Drop => {}
        }
    }
}

async fn forward(
    shared: &Shared,
    req: hickory_proto::op::Message,
    transport: Transport,
) -> Option<Vec<u8>> {
    let out = match shared.forwarder.resolve(&req).await {
        Ok(resp) => crate::answer::finish(resp, &req, transport),
        Err(e) => {
            tracing::debug!(error = %e, "forwarding failed");
            error_reply(&req, ResponseCode::ServFail, transport)
        }
    };
    match out {
        Outcome::Reply(b) => Some(b),
        _ => None,
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let (conn, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "tcp accept");
                    continue;
                }
            },
        };
        let (shared, stop) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                r = serve_conn(conn, &shared) => if let Err(e) = r {
                    tracing::debug!(error = %e, %peer, "tcp connection");
                },
            }
        });
    }
}

async fn serve_conn(mut conn: TcpStream, shared: &Shared) -> Result<(), Error> {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, conn.read_u16()).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r? as usize,
        };
        let mut buf = vec![0u8; len];
        tokio::time::timeout(TCP_IDLE, conn.read_exact(&mut buf))
            .await
            .map_err(|_| Error::Io(std::io::ErrorKind::TimedOut.into()))??;
        let table = shared.table();
        let reply = match handle(&buf, &table, &shared.zone, Transport::Tcp) {
            Outcome::Reply(b) => Some(b),
            Outcome::Forward(req) => forward(shared, req, Transport::Tcp).await,
            Outcome::Drop => None,
        };
        if let Some(b) = reply {
            let n = u16::try_from(b.len()).map_err(|_| Error::TooLong)?;
            conn.write_all(&n.to_be_bytes()).await?;
            conn.write_all(&b).await?;
        }
    }
}
