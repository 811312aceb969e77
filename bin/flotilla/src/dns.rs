//! The master's cluster DNS flags, and the watch that tells the DNS
//! server when this master's replica may be stale.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use flotilla_raftstore::Master;
use tokio_util::sync::CancellationToken;

#[derive(Args, Clone)]
pub struct DnsArgs {
    /// The cluster domain: services are <svc>.<ns>.svc.DOMAIN.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Upstream resolvers for names outside the cluster domain, ADDR[:PORT]
    /// (port 53 when left out), comma-separated; default: the nameservers
    /// of this host's /etc/resolv.conf.
    #[arg(long, value_delimiter = ',')]
    pub dns_upstream: Vec<String>,
    /// The kube-dns Service's ClusterIP, the address pods use as their
    /// name server (never forwarded to).
    #[arg(long, default_value = "10.96.0.10")]
    pub cluster_dns: IpAddr,
    /// TTL of DNS answers, in seconds.
    #[arg(long, default_value_t = 5)]
    pub dns_ttl: u32,
    /// TTL of the zone's SOA record, the negative-caching TTL, in seconds.
    #[arg(long, default_value_t = 30)]
    pub dns_negative_ttl: u32,
    /// Threads answering DNS over UDP (default: one per core).
    #[arg(long)]
    pub dns_udp_workers: Option<usize>,
}

fn parse_upstream(s: &str) -> Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip: IpAddr = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .with_context(|| format!("--dns-upstream {s:?} is not ADDR[:PORT]"))?;
    Ok(SocketAddr::new(ip, 53))
}

impl DnsArgs {
    /// The DNS server's settings for a server on `addr`.
    pub fn config(&self, addr: SocketAddr) -> Result<flotilla_dns::DnsConfig> {
        let upstreams = if self.dns_upstream.is_empty() {
            let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            flotilla_dns::forward::parse_resolv_conf(&text)
        } else {
            self.dns_upstream
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| parse_upstream(s))
                .collect::<Result<_>>()?
        };
        Ok(flotilla_dns::DnsConfig {
            addr,
            domain: self.cluster_domain.clone(),
            ttl: self.dns_ttl,
            negative_ttl: self.dns_negative_ttl,
            cluster_dns: self.cluster_dns,
            upstreams,
            udp_workers: self
                .dns_udp_workers
                .unwrap_or_else(flotilla_dns::server::default_udp_workers),
            // The master's registry, set when the master is up.
            metrics: None,
        })
    }
}

/// How often the quorum is checked.
const QUORUM_POLL: Duration = Duration::from_millis(500);

/// Mark the DNS server stale while this master cannot confirm a read
/// with a quorum (a read index through the leader, as linearizable reads
/// do), within twice the election timeout.
pub async fn watch_quorum(master: Master, dns: flotilla_dns::Running, stop: CancellationToken) {
    let limit = Duration::from_millis(master.config().election_timeout_ms.saturating_mul(2));
    loop {
        let ok = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(limit, master.linearize()) => matches!(r, Ok(Ok(()))),
        };
        dns.set_stale(!ok);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(QUORUM_POLL) => {}
        }
    }
}
