//! Cluster DNS, served by every master from its own replica.
//!
//! Owns: the cluster zone (`<svc>.<ns>.svc.<domain>` and the rest of the
//! Kubernetes DNS-based service discovery specification): what each
//! service puts in it ([`records`]) and the table kept up to date one
//! service at a time from the Service and EndpointSlice informers
//! ([`zone`]); the
//! request handler that answers a packet from that table or hands it to
//! the forwarder ([`answer`]); forwarding of out-of-zone names to upstream
//! resolvers with a small cache and a self-forwarding guard ([`forward`]);
//! the UDP and TCP listeners ([`server`]); and the `kube-dns` Service and
//! Endpoints that point pods at the masters' DNS addresses ([`kube_dns`]).
//!
//! The informers list with serializable (local) reads, so a master that
//! has lost its quorum keeps answering from its replica (stale, as Consul
//! does), and says so ([`server::Running::set_stale`]).
//!
//! Messages are parsed and written by hickory-proto, except for the one
//! common case the fast path ([`fast`]) answers in place: an A or AAAA
//! question for a zone name that has such records; the property tests hold
//! it to the same answers as the full path.
//!
//! Must not depend on: the store (raftstore), the API server's
//! implementation (control, except in tests), the controllers, or any
//! other role crate (agent, proxy, scheduler).

pub mod answer;
pub mod fast;
pub mod forward;
pub mod kube_dns;
pub mod metrics;
pub mod records;
pub mod server;
pub mod zone;

pub use answer::{handle, Outcome, Transport, ZoneConfig};
pub use server::{start, DnsConfig, Running};

/// What can go wrong serving DNS.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("dns message: {0}")]
    Proto(#[from] hickory_proto::ProtoError),
    #[error("the request has no question")]
    NoQuestion,
    #[error("no upstream resolver")]
    NoUpstream,
    #[error("upstream {0} did not answer in time")]
    Timeout(std::net::SocketAddr),
    #[error("the upstream's answer does not match the question")]
    Mismatch,
    #[error("message too long for TCP")]
    TooLong,
    #[error("invalid setting: {0}")]
    Invalid(String),
}
