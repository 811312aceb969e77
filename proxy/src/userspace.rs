//! Userspace mode's data path: a listener per service port (plus one on
//! its node port); for TCP, each accepted connection sent to the next endpoint
//! round-robin (or the client's sticky one under ClientIP affinity); a
//! connect that fails is retried on the other endpoints before the client
//! sees anything, and when none answers the client gets a reset. Bytes are
//! copied both ways with half-close kept (`copy_bidirectional`). All
//! sockets live on data threads in the node's namespace
//! ([`crate::netns::DataThread`], one current-thread runtime each): every
//! thread has its own listener for each TCP port, bound to the same port
//! with `SO_REUSEPORT`, so that the kernel spreads connections over the
//! threads and each connection stays on the thread that accepted it, with
//! no wake-ups across threads. UDP service ports are served by
//! [`crate::udp`] on the first thread, with the same balancer.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use crate::model::{Proto, SvcPort};
use crate::netns::DataThread;
use crate::Error;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The endpoints of one service port and how to choose among them.
pub(crate) struct Balancer {
    pub(crate) key: String,
    internal: RwLock<Vec<SocketAddr>>,
    external: RwLock<Vec<SocketAddr>>,
    next: AtomicUsize,
    affinity: RwLock<Option<Duration>>,
    sticky: Mutex<HashMap<IpAddr, (SocketAddr, Instant)>>,
}

impl Balancer {
    /// Endpoints to try, in order, for a client.
    pub(crate) fn order(&self, client: IpAddr, external: bool) -> Vec<SocketAddr> {
        let eps = if external {
            self.external.read()
        } else {
            self.internal.read()
        }
        .map(|g| g.clone())
        .unwrap_or_default();
        if eps.is_empty() {
            return eps;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % eps.len();
        let mut order: Vec<SocketAddr> =
            eps[start..].iter().chain(&eps[..start]).copied().collect();
        let affinity = self.affinity.read().map(|a| *a).unwrap_or(None);
        if let Some(ttl) = affinity {
            if let Ok(m) = self.sticky.lock() {
                if let Some((ep, at)) = m.get(&client) {
                    if at.elapsed() < ttl {
                        if let Some(i) = order.iter().position(|e| e == ep) {
                            let ep = order.remove(i);
                            order.insert(0, ep);
                        }
                    }
                }
            }
        }
        order
    }

    /// Whether `ep` is still one of the endpoints.
    pub(crate) fn has(&self, ep: SocketAddr, external: bool) -> bool {
        let eps = if external {
            &self.external
        } else {
            &self.internal
        };
        eps.read().map(|g| g.contains(&ep)).unwrap_or(false)
    }

    pub(crate) fn chose(&self, client: IpAddr, ep: SocketAddr) {
        if self.affinity.read().map(|a| a.is_some()).unwrap_or(false) {
            if let Ok(mut m) = self.sticky.lock() {
                m.insert(client, (ep, Instant::now()));
            }
        }
    }
}

async fn serve_conn(b: Arc<Balancer>, client: TcpStream, peer: SocketAddr, external: bool) {
    let order = b.order(peer.ip(), external);
    for ep in order {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(ep)).await {
            Ok(Ok(mut up)) => {
                b.chose(peer.ip(), ep);
                let _ = up.set_nodelay(true);
                let _ = client.set_nodelay(true);
                let mut client = client;
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut up).await {
                    tracing::debug!(service = %b.key, %ep, error = %e, "connection ended");
                }
                return;
            }
            Ok(Err(e)) => {
                tracing::info!(service = %b.key, %ep, error = %e, "endpoint refused; trying the next");
            }
            Err(_) => {
                tracing::info!(service = %b.key, %ep, "endpoint connect timed out; trying the next");
            }
        }
    }
    // Nothing answered: reset, so the client fails at once.
    let _ = client.set_zero_linger();
}

async fn accept_loop(l: TcpListener, b: Arc<Balancer>, external: bool) {
    loop {
        match l.accept().await {
            Ok((s, peer)) => {
                tokio::spawn(serve_conn(b.clone(), s, peer, external));
            }
            Err(e) => {
                tracing::warn!(service = %b.key, error = %e, "accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

struct Served {
    balancer: Arc<Balancer>,
    proto: Proto,
    port: u16,
    node_port: Option<u16>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// The listeners of userspace mode.
pub struct Userspace {
    threads: Vec<DataThread>,
    served: HashMap<String, Served>,
}

impl Drop for Userspace {
    fn drop(&mut self) {
        // The tasks first, then the threads that run them.
        self.served.clear();
        self.threads.clear();
    }
}

/// A TCP listener on `addr` in a `SO_REUSEPORT` group.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.set_reuseport(true)?;
    s.bind(addr)?;
    s.listen(1024)
}

fn addrs(eps: &[&crate::model::Ep]) -> Vec<SocketAddr> {
    eps.iter()
        .map(|e| SocketAddr::from((e.ip, e.port)))
        .collect()
}

impl Userspace {
    /// A data path of `threads` threads (at least one) in `ns`.
    pub fn new(ns: Option<&std::path::Path>, threads: usize) -> std::io::Result<Userspace> {
        let threads = (0..threads.max(1))
            .map(|i| DataThread::spawn(ns, &format!("proxy-data-{i}")))
            .collect::<Result<_, _>>()?;
        Ok(Userspace {
            threads,
            served: HashMap::new(),
        })
    }

    /// Listen on `port` (0: any) and serve it with `b`: a TCP listener on
    /// every data thread (the first picks the port, the others join its
    /// `SO_REUSEPORT` group), or one UDP socket on the first. The port and
    /// the tasks.
    async fn listen(
        &self,
        proto: Proto,
        port: u16,
        b: Arc<Balancer>,
        external: bool,
    ) -> Result<(u16, Vec<JoinHandle<()>>), Error> {
        let failed =
            |e: std::io::Error| Error::Io(format!("listening on {proto:?} port {port}: {e}"));
        let joined = |e: tokio::task::JoinError| Error::Io(e.to_string());
        let Some(first) = self.threads.first() else {
            return Err(Error::Io("no data thread".into()));
        };
        // Sockets are made on the data threads: they are in the node's
        // namespace.
        if proto == Proto::Udp {
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            let s = first
                .handle()
                .spawn(async move { UdpSocket::bind(addr).await })
                .await
                .map_err(joined)?
                .map_err(failed)?;
            let port = s.local_addr().map_err(failed)?.port();
            let task = first.handle().spawn(crate::udp::serve(s, b, external));
            return Ok((port, vec![task]));
        }
        let mut bound = port;
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        for t in &self.threads {
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, bound));
            let listener = t
                .handle()
                .spawn(async move { reuseport_listener(addr) })
                .await
                .map_err(joined)
                .and_then(|r| r.map_err(failed));
            let l = match listener {
                Ok(l) => l,
                Err(e) => {
                    tasks.iter().for_each(JoinHandle::abort);
                    return Err(e);
                }
            };
            bound = match l.local_addr() {
                Ok(a) => a.port(),
                Err(e) => {
                    tasks.iter().for_each(JoinHandle::abort);
                    return Err(failed(e));
                }
            };
            tasks.push(t.handle().spawn(accept_loop(l, b.clone(), external)));
        }
        Ok((bound, tasks))
    }

    /// Serve `ports`; the listener port of each served key.
    pub async fn apply(&mut self, ports: &[SvcPort]) -> HashMap<String, u16> {
        let want: HashMap<&str, &SvcPort> = ports.iter().map(|p| (p.key.as_str(), p)).collect();
        self.served.retain(|k, s| {
            want.get(k.as_str())
                .is_some_and(|p| p.node_port == s.node_port && p.proto == s.proto)
        });
        for (key, p) in &want {
            if !self.served.contains_key(*key) {
                let balancer = Arc::new(Balancer {
                    key: key.to_string(),
                    internal: RwLock::new(Vec::new()),
                    external: RwLock::new(Vec::new()),
                    next: AtomicUsize::new(0),
                    affinity: RwLock::new(None),
                    sticky: Mutex::new(HashMap::new()),
                });
                let (port, mut tasks) = match self.listen(p.proto, 0, balancer.clone(), false).await
                {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::error!(service = %key, error = %e, "no listener");
                        continue;
                    }
                };
                if let Some(np) = p.node_port {
                    match self.listen(p.proto, np, balancer.clone(), true).await {
                        Ok((_, t)) => tasks.extend(t),
                        Err(e) => tracing::error!(service = %key, error = %e, "node port"),
                    }
                }
                tracing::info!(service = %key, port, node_port = ?p.node_port, "listening");
                self.served.insert(
                    key.to_string(),
                    Served {
                        balancer,
                        proto: p.proto,
                        port,
                        node_port: p.node_port,
                        tasks,
                    },
                );
            }
            if let Some(s) = self.served.get(*key) {
                let b = &s.balancer;
                if let Ok(mut g) = b.internal.write() {
                    *g = addrs(&p.internal_endpoints());
                }
                if let Ok(mut g) = b.external.write() {
                    *g = addrs(&p.external_endpoints());
                }
                if let Ok(mut g) = b.affinity.write() {
                    *g = p.affinity.map(|s| Duration::from_secs(u64::from(s)));
                }
            }
        }
        self.served
            .iter()
            .map(|(k, s)| (k.clone(), s.port))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_port;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on loopback that answers each connection with `name`.
    async fn server(name: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(name.as_bytes()).await;
            }
        });
        addr
    }

    async fn ask(port: u16) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn every_data_thread_listens_on_the_one_port_and_connects_round_robin() {
        let (a, b) = (server("a").await, server("b").await);
        let mut p = test_port(0, false);
        p.node_port = None;
        for addr in [a, b] {
            let SocketAddr::V4(v4) = addr else {
                panic!("{addr}")
            };
            p.endpoints.push(crate::model::Ep {
                ip: *v4.ip(),
                port: v4.port(),
                local: false,
            });
        }
        let mut u = Userspace::new(None, 3).expect("data threads");
        let ports = u.apply(std::slice::from_ref(&p)).await;
        let port = ports[&p.key];
        let served = &u.served[&p.key];
        assert_eq!(served.tasks.len(), 3, "one listener per thread");
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..40 {
            let answer = ask(port).await.expect("through the proxy");
            *seen.entry(answer).or_insert(0) += 1;
        }
        // Round robin over both endpoints, whichever thread accepted.
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen.values().all(|n| *n >= 10), "{seen:?}");
        drop(u);
        assert!(
            ask(port).await.is_err(),
            "the listeners close with the data path"
        );
    }
}
