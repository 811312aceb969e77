//! Forwarding of names outside the cluster zone to upstream resolvers,
//! with a small answer cache and a guard against forwarding to itself.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::zone::key_of;
use crate::Error;

/// How long one upstream gets to answer before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Answers kept at most (the cache is emptied of expired ones when full).
const CACHE_ENTRIES: usize = 10_000;
/// The longest an upstream answer is kept, whatever its TTL.
const CACHE_MAX_TTL: u32 = 300;

type CacheKey = (String, u16, u16);

struct Cached {
    at: Instant,
    ttl: u32,
    msg: Message,
}

/// Upstream resolvers and the cache of their answers.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    cache: Mutex<HashMap<CacheKey, Cached>>,
}

/// The name servers of a resolv.conf text, on port 53.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            let ip = w.next()?.split('%').next()?;
            ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

/// Whether sending to `upstream` would reach one of `own` (this server).
fn is_self(upstream: &SocketAddr, own: &[SocketAddr]) -> bool {
    own.iter().any(|o| {
        o.port() == upstream.port()
            && (o.ip() == upstream.ip()
                || (o.ip().is_unspecified() && (upstream.ip().is_loopback())))
    })
}

impl Forwarder {
    /// Forward to `upstreams`, leaving out those that are this server
    /// (`own`: its listening addresses, and the cluster DNS address).
    pub fn new(upstreams: Vec<SocketAddr>, own: &[SocketAddr]) -> Self {
        let (kept, dropped): (Vec<_>, Vec<_>) =
            upstreams.into_iter().partition(|u| !is_self(u, own));
        for d in &dropped {
            tracing::warn!(upstream = %d, "not forwarding to an upstream that is this DNS server");
        }
        if kept.is_empty() {
            tracing::warn!("no upstream resolvers: names outside the cluster zone get SERVFAIL");
        }
        Forwarder {
            upstreams: kept,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Answer `req` from the cache or an upstream; the answer carries
    /// `req`'s id and question.
    pub async fn resolve(&self, req: &Message) -> Result<Message, Error> {
        let q = req.queries().first().ok_or(Error::NoQuestion)?.clone();
        let key = (
            key_of(q.name()),
            u16::from(q.query_type()),
            u16::from(q.query_class()),
        );
        if let Some(mut hit) = self.cached(&key) {
            as_answer_to(&mut hit, req);
            return Ok(hit);
        }
        let mut last = Error::NoUpstream;
        for up in &self.upstreams {
            match ask(*up, &q).await {
                Ok(mut m) => {
                    self.store(key, &m);
                    as_answer_to(&mut m, req);
                    return Ok(m);
                }
                Err(e) => {
                    tracing::debug!(upstream = %up, error = %e, "upstream did not answer");
                    last = e;
                }
            }
        }
        Err(last)
    }

    fn cached(&self, key: &CacheKey) -> Option<Message> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let c = cache.get(key)?;
        let age = c.at.elapsed().as_secs() as u32;
        if age >= c.ttl {
            return None;
        }
        let mut m = c.msg.clone();
        for r in m.answers_mut().iter_mut() {
            let t = r.ttl().saturating_sub(age);
            r.set_ttl(t);
        }
        for r in m.name_servers_mut().iter_mut() {
            let t = r.ttl().saturating_sub(age);
            r.set_ttl(t);
        }
        Some(m)
    }

    fn store(&self, key: CacheKey, m: &Message) {
        if m.truncated()
            || !matches!(
                m.response_code(),
                ResponseCode::NoError | ResponseCode::NXDomain
            )
        {
            return;
        }
        let ttl = m
            .answers()
            .iter()
            .chain(m.name_servers())
            .map(|r| r.ttl())
            .min()
            .unwrap_or(0)
            .min(CACHE_MAX_TTL);
        if ttl == 0 {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, c| c.at.elapsed().as_secs() < u64::from(c.ttl));
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(
            key,
            Cached {
                at: Instant::now(),
                ttl,
                msg: m.clone(),
            },
        );
    }
}

/// Make an upstream's answer this server's answer to `req`: its id and
/// question (in the query's case), not authoritative, recursion
/// available, EDNS only when `req` used it.
fn as_answer_to(m: &mut Message, req: &Message) {
    m.set_id(req.id())
        .set_authoritative(false)
        .set_recursion_available(true)
        .set_recursion_desired(req.recursion_desired());
    *m.queries_mut() = req.queries().to_vec();
    *m.extensions_mut() = req.extensions().as_ref().map(|_| {
        let mut e = Edns::new();
        e.set_max_payload(crate::answer::EDNS_PAYLOAD);
        e
    });
}

fn random_id() -> u16 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u16
}

/// Ask one upstream over UDP, then over TCP when the answer is truncated.
async fn ask(up: SocketAddr, q: &Query) -> Result<Message, Error> {
    let id = random_id();
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_recursion_desired(true)
        .add_query(q.clone());
    let mut e = Edns::new();
    e.set_max_payload(crate::answer::EDNS_PAYLOAD);
    m.set_edns(e);
    let out = m.to_vec()?;
    let bind: SocketAddr = if up.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(up).await?;
    sock.send(&out).await?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| Error::Timeout(up))??;
        let Ok(resp) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if resp.id() != id || resp.queries() != m.queries() {
            continue;
        }
        if resp.truncated() {
            return ask_tcp(up, &out, id).await;
        }
        return Ok(resp);
    }
}

async fn ask_tcp(up: SocketAddr, out: &[u8], id: u16) -> Result<Message, Error> {
    let work = async {
        let mut s = TcpStream::connect(up).await?;
        let len = u16::try_from(out.len()).map_err(|_| Error::TooLong)?;
        s.write_all(&len.to_be_bytes()).await?;
        s.write_all(out).await?;
        let n = s.read_u16().await? as usize;
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf).await?;
        let m = Message::from_vec(&buf)?;
        if m.id() != id {
            return Err(Error::Mismatch);
        }
        Ok(m)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, work)
        .await
        .map_err(|_| Error::Timeout(up))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_name_servers() {
        let t = "# c\nsearch x\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\noptions ndots:5\n";
        let got = parse_resolv_conf(t);
        assert_eq!(
            got,
            vec![
                "10.0.0.2:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn self_is_left_out() {
        let own: Vec<SocketAddr> = vec![
            "0.0.0.0:53".parse().unwrap(),
            "10.96.0.10:53".parse().unwrap(),
        ];
        let f = Forwarder::new(
            vec![
                "127.0.0.1:53".parse().unwrap(),
                "10.96.0.10:53".parse().unwrap(),
                "192.0.2.1:53".parse().unwrap(),
            ],
            &own,
        );
        assert_eq!(
            f.upstreams(),
            &["192.0.2.1:53".parse::<SocketAddr>().unwrap()]
        );
    }
}
