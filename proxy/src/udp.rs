//! Userspace mode for UDP service ports: one socket per service port (and
//! one on its node port) receives the clients' datagrams; each client
//! address gets a session, a connected socket to an endpoint chosen like a
//! TCP connection's (round-robin, or the client's sticky endpoint), whose
//! replies go back to the client from the service socket (conntrack turns
//! their source back into the service address). A session idle for
//! [`SESSION_IDLE`] ends; one whose endpoint refuses (ICMP port
//! unreachable) or left the service's endpoints ends at once, so that the
//! client's next datagram goes to another endpoint (what the conntrack
//! flush does in iptables mode).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::userspace::Balancer;

/// A client's session ends after this long without a datagram either way.
pub const SESSION_IDLE: Duration = Duration::from_secs(30);

/// A client's session: the socket connected to its endpoint.
#[derive(Clone)]
struct Session {
    up: Arc<UdpSocket>,
    ep: SocketAddr,
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Session>>>;

/// Open a session for `client`: a socket connected to the first endpoint
/// that accepts a connect (UDP connect only sets the peer, so this fails
/// only on a local error).
async fn open(b: &Balancer, client: SocketAddr, external: bool) -> Option<Session> {
    for ep in b.order(client.ip(), external) {
        let sock = match UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(service = %b.key, error = %e, "udp session socket");
                return None;
            }
        };
        match sock.connect(ep).await {
            Ok(()) => {
                b.chose(client.ip(), ep);
                return Some(Session {
                    up: Arc::new(sock),
                    ep,
                });
            }
            Err(e) => {
                tracing::info!(service = %b.key, %ep, error = %e, "udp endpoint; trying the next")
            }
        }
    }
    None
}

/// Copy the endpoint's replies to the client until the session idles out
/// or the endpoint refuses; then forget the session.
async fn replies(
    b: Arc<Balancer>,
    front: Arc<UdpSocket>,
    up: Arc<UdpSocket>,
    client: SocketAddr,
    sessions: Sessions,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        match tokio::time::timeout(SESSION_IDLE, up.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                if let Err(e) = front.send_to(&buf[..n], client).await {
                    tracing::debug!(service = %b.key, %client, error = %e, "udp reply");
                }
            }
            Ok(Err(e)) => {
                tracing::info!(service = %b.key, %client, error = %e, "udp endpoint failed; session ends");
                break;
            }
            Err(_) => break, // idle
        }
    }
    if let Ok(mut m) = sessions.lock() {
        // Only this session's entry: a newer one may have replaced it.
        if m.get(&client).is_some_and(|s| Arc::ptr_eq(&s.up, &up)) {
            m.remove(&client);
        }
    }
}

/// Serve one UDP service socket until the task is aborted.
pub(crate) async fn serve(front: UdpSocket, b: Arc<Balancer>, external: bool) {
    let front = Arc::new(front);
    let sessions: Sessions = Arc::new(Mutex::new(HashMap::new()));
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, client) = match front.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors of earlier replies surface here; keep going.
                tracing::debug!(service = %b.key, error = %e, "udp receive");
                continue;
            }
        };
        let existing = sessions
            .lock()
            .ok()
            .and_then(|m| m.get(&client).cloned())
            .filter(|s| b.has(s.ep, external));
        let up = match existing {
            Some(s) => s.up,
            None => {
                let Some(s) = open(&b, client, external).await else {
                    continue; // no endpoint: the datagram is dropped
                };
                if let Ok(mut m) = sessions.lock() {
                    // Replaces a session whose endpoint left; its task
                    // ends when it idles out.
                    m.insert(client, s.clone());
                }
                tokio::spawn(replies(
                    b.clone(),
                    front.clone(),
                    s.up.clone(),
                    client,
                    sessions.clone(),
                ));
                s.up
            }
        };
        if let Err(e) = up.send(&buf[..n]).await {
            tracing::debug!(service = %b.key, %client, error = %e, "udp forward");
        }
    }
}
