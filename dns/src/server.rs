//! The listeners (UDP and TCP on one address) and the loop that keeps
//! the zone up to date from the informers: each Service or EndpointSlice
//! change recomputes the one service it concerns.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_objects::api::{ListParams, ObjectApi};
use flotilla_objects::core::Service;
use flotilla_objects::discovery::EndpointSlice;
use flotilla_runtime::informer::{Change, ObjectRef};
use flotilla_runtime::Informer;
use hickory_proto::op::ResponseCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::answer::{error_reply, handle, Outcome, Transport, ZoneConfig};
use crate::forward::Forwarder;
use crate::metrics::DnsMetrics;
use crate::zone::{Table, Zone};
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
    /// Threads answering UDP queries (see [`default_udp_workers`]).
    pub udp_workers: usize,
    /// Where the server's series go ([`crate::metrics`]); none without it.
    pub metrics: Option<prometheus::Registry>,
}

/// One UDP worker per core.
pub fn default_udp_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The zone's current table and what answering needs.
pub struct Shared {
    table: Arc<Table>,
    zone: ZoneConfig,
    forwarder: Forwarder,
    stale: AtomicBool,
    metrics: Option<DnsMetrics>,
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
        self.shared.table.len()
    }
}

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

/// Bind `cfg.addr` (UDP and TCP) and serve the zone from informers over
/// `api`, until `stop`.
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
    let zone = Zone::new(&domain, cfg.cluster_dns);
    let shared = Arc::new(Shared {
        table: zone.table(),
        zone: ZoneConfig {
            domain: domain.clone(),
            ttl: cfg.ttl,
            negative_ttl: cfg.negative_ttl,
        },
        forwarder: Forwarder::new(cfg.upstreams.clone(), &own),
        stale: AtomicBool::new(false),
        metrics: cfg.metrics.as_ref().map(DnsMetrics::new),
    });
    let span = tracing::info_span!("dns", %addr);
    // Local (serializable) lists: answers keep coming without quorum.
    let local = ListParams {
        serializable: true,
        ..ListParams::default()
    };
    let services = Informer::<Service>::spawn_with(api.clone(), local.clone());
    let slices = Informer::<EndpointSlice>::spawn_with(api, local);
    slices.add_index(
        BY_SERVICE,
        Arc::new(|s: &EndpointSlice| {
            slice_service(s)
                .map(|r| format!("{}/{}", r.namespace, r.name))
                .into_iter()
                .collect()
        }),
    );
    tokio::spawn(sync_loop(zone, services, slices, stop.clone()).instrument(span.clone()));
    let udp = Arc::new(udp.into_std()?);
    udp.set_nonblocking(false)?;
    udp.set_read_timeout(Some(UDP_WAKE))?;
    let workers = cfg.udp_workers.max(1);
    for i in 0..workers {
        let (udp, shared, stop) = (udp.clone(), shared.clone(), stop.clone());
        let (rt, span) = (tokio::runtime::Handle::current(), span.clone());
        std::thread::Builder::new()
            .name(format!("dns-udp-{i}"))
            .spawn(move || span.in_scope(|| serve_udp(udp, shared, stop, rt)))?;
    }
    tokio::spawn(serve_tcp(tcp, shared.clone(), stop).instrument(span.clone()));
    span.in_scope(|| {
        tracing::info!(domain = %domain, upstreams = ?shared.forwarder.upstreams(), "serving cluster DNS")
    });
    Ok(Running { addr, shared })
}

/// The slices' index by the service they belong to (`<ns>/<name>`).
const BY_SERVICE: &str = "dns-service";

fn slice_service(s: &EndpointSlice) -> Option<ObjectRef> {
    s.service_name()
        .map(|svc| ObjectRef::new(&s.metadata.namespace, svc))
}

/// Recompute the records of one service from the caches.
fn update(
    zone: &mut Zone,
    services: &Informer<Service>,
    slices: &Informer<EndpointSlice>,
    key: &ObjectRef,
) -> bool {
    let svc = services.get_ref(key);
    let ss = slices.by_index(BY_SERVICE, &format!("{}/{}", key.namespace, key.name));
    let ss: Vec<&EndpointSlice> = ss.iter().map(|s| s.as_ref()).collect();
    zone.set_service(&key.namespace, &key.name, svc.as_deref(), &ss)
}

/// Recompute every service (at the start, and after missed changes).
fn resync(zone: &mut Zone, services: &Informer<Service>, slices: &Informer<EndpointSlice>) {
    let mut keys: BTreeSet<ObjectRef> = services.keys().into_iter().collect();
    keys.extend(
        zone.services()
            .into_iter()
            .map(|(ns, n)| ObjectRef::new(&ns, &n)),
    );
    let mut changed = 0;
    for key in &keys {
        changed += usize::from(update(zone, services, slices, key));
    }
    tracing::debug!(services = keys.len(), changed, "zone resynced");
}

/// Keep the zone up to date: each Service or EndpointSlice change
/// recomputes the one service it concerns.
async fn sync_loop(
    mut zone: Zone,
    services: Informer<Service>,
    slices: Informer<EndpointSlice>,
    stop: CancellationToken,
) {
    let mut sub_s = services.subscribe();
    let mut sub_e = slices.subscribe();
    let synced = async {
        while !(services.is_synced() && slices.is_synced()) {
            services.wait_synced(Duration::from_secs(1)).await;
            slices.wait_synced(Duration::from_secs(1)).await;
        }
    };
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = synced => {}
    }
    resync(&mut zone, &services, &slices);
    tracing::debug!(names = zone.table().len(), "zone ready");
    loop {
        let keys: Vec<ObjectRef> = tokio::select! {
            _ = stop.cancelled() => return,
            c = sub_s.next() => match c {
                None => return,
                Some(Change::Lagged) => {
                    resync(&mut zone, &services, &slices);
                    continue;
                }
                Some(Change::Added(s) | Change::Updated { new: s, .. } | Change::Deleted(s)) => {
                    vec![ObjectRef::of(s.as_ref())]
                }
            },
            c = sub_e.next() => match c {
                None => return,
                Some(Change::Lagged) => {
                    resync(&mut zone, &services, &slices);
                    continue;
                }
                Some(Change::Added(s) | Change::Deleted(s)) => slice_service(&s).into_iter().collect(),
                Some(Change::Updated { old, new }) => {
                    let mut v: Vec<ObjectRef> = slice_service(&old).into_iter().collect();
                    v.extend(slice_service(&new).filter(|n| !v.contains(n)));
                    v
                }
            },
        };
        for key in &keys {
            if update(&mut zone, &services, &slices, key) {
                tracing::trace!(service = %key, "zone updated");
            }
        }
    }
}

/// How often a UDP worker blocked in `recv_from` looks at the stop token.
const UDP_WAKE: Duration = Duration::from_millis(200);

/// One UDP worker: a thread blocked in `recv_from` on the shared socket
/// (the kernel hands each datagram to one of them), answering in place;
/// names to forward go to a task on the runtime, which sends the answer
/// from the same socket.
fn serve_udp(
    sock: Arc<std::net::UdpSocket>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    rt: tokio::runtime::Handle,
) {
    let mut buf = vec![0u8; 4096];
    while !stop.is_cancelled() {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) {
                    tracing::debug!(error = %e, "udp receive");
                }
                continue;
            }
        };
        let started = Instant::now();
        match handle(&buf[..n], &shared.table, &shared.zone, Transport::Udp) {
            Outcome::Reply(b) => {
                if let Err(e) = sock.send_to(&b, peer) {
                    tracing::debug!(error = %e, %peer, "udp send");
                }
                if let Some(m) = &shared.metrics {
                    m.observe(Transport::Udp, &buf[..n], Some(&b), started);
                }
            }
            Outcome::Forward(req) => {
                let (sock, shared) = (sock.clone(), shared.clone());
                let query = shared.metrics.as_ref().map(|_| buf[..n].to_vec());
                rt.spawn(
                    async move {
                        let b = forward(&shared, req, Transport::Udp).await;
                        if let Some(b) = &b {
                            // A UDP send does not wait (a full buffer drops).
                            let _ = sock.send_to(b, peer);
                        }
                        if let (Some(m), Some(q)) = (&shared.metrics, query) {
                            m.forwarded();
                            m.observe(Transport::Udp, &q, b.as_deref(), started);
                        }
                    }
                    .in_current_span(),
                );
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
        let started = Instant::now();
        let reply = match handle(&buf, &shared.table, &shared.zone, Transport::Tcp) {
            Outcome::Reply(b) => Some(b),
            Outcome::Forward(req) => {
                if let Some(m) = &shared.metrics {
                    m.forwarded();
                }
                forward(shared, req, Transport::Tcp).await
            }
            Outcome::Drop => None,
        };
        if let (Some(m), Some(b)) = (&shared.metrics, &reply) {
            m.observe(Transport::Tcp, &buf, Some(b), started);
        }
        if let Some(b) = reply {
            let n = u16::try_from(b.len()).map_err(|_| Error::TooLong)?;
            conn.write_all(&n.to_be_bytes()).await?;
            conn.write_all(&b).await?;
        }
    }
}
