//! DNS series under CoreDNS's names, so that its dashboards apply:
//! `coredns_dns_requests_total{proto,type}`,
//! `coredns_dns_responses_total{rcode}`,
//! `coredns_dns_request_duration_seconds{proto}` (answered here or
//! forwarded), and `coredns_forward_requests_total`.
//!
//! The hot path pays a few atomic adds: every label child is resolved once,
//! at start, and the type and rcode are read from the packets' bytes.

use std::time::Instant;

use flotilla_telemetry::register;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

use crate::answer::Transport;

/// Query types counted by name; the rest are `other`.
const TYPES: [(u16, &str); 9] = [
    (1, "A"),
    (28, "AAAA"),
    (33, "SRV"),
    (12, "PTR"),
    (5, "CNAME"),
    (6, "SOA"),
    (2, "NS"),
    (16, "TXT"),
    (0, "other"),
];

const RCODES: [&str; 6] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
];

/// The series of one DNS server.
pub struct DnsMetrics {
    /// [udp, tcp] x TYPES.
    requests: [[IntCounter; TYPES.len()]; 2],
    /// RCODES, then `other`.
    responses: [IntCounter; RCODES.len() + 1],
    duration: [Histogram; 2],
    forwards: IntCounter,
}

impl DnsMetrics {
    pub fn new(r: &Registry) -> Self {
        let requests = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "coredns_dns_requests_total",
                    "Counter of DNS requests made per protocol and type.",
                ),
                &["proto", "type"],
            )
            .expect("valid metric"),
        );
        let responses = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "coredns_dns_responses_total",
                    "Counter of response status codes.",
                ),
                &["rcode"],
            )
            .expect("valid metric"),
        );
        let duration = register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "coredns_dns_request_duration_seconds",
                    "Histogram of the time (in seconds) each request took.",
                )
                .buckets(vec![
                    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5,
                ]),
                &["proto"],
            )
            .expect("valid metric"),
        );
        let forwards = register(
            r,
            IntCounter::new(
                "coredns_forward_requests_total",
                "Counter of requests forwarded to the upstream resolvers.",
            )
            .expect("valid metric"),
        );
        let per =
            |proto: &str| std::array::from_fn(|i| requests.with_label_values(&[proto, TYPES[i].1]));
        DnsMetrics {
            requests: [per("udp"), per("tcp")],
            responses: std::array::from_fn(|i| {
                responses.with_label_values(&[RCODES.get(i).copied().unwrap_or("other")])
            }),
            duration: [
                duration.with_label_values(&["udp"]),
                duration.with_label_values(&["tcp"]),
            ],
            forwards,
        }
    }

    /// One query answered (or forwarded and answered): `query` and
    /// `reply` are the packets, `started` when the query arrived.
    pub fn observe(&self, t: Transport, query: &[u8], reply: Option<&[u8]>, started: Instant) {
        let p = usize::from(t == Transport::Tcp);
        let qtype = qtype(query).unwrap_or(0);
        let i = TYPES
            .iter()
            .position(|(n, _)| *n == qtype)
            .unwrap_or(TYPES.len() - 1);
        self.requests[p][i].inc();
        if let Some(r) = reply.and_then(|r| r.get(3)) {
            let rcode = usize::from(r & 0x0f);
            self.responses[rcode.min(RCODES.len())].inc();
        }
        self.duration[p].observe(started.elapsed().as_secs_f64());
    }

    pub fn forwarded(&self) {
        self.forwards.inc();
    }
}

/// The type of a query's first question, read from its bytes.
fn qtype(packet: &[u8]) -> Option<u16> {
    let mut i = 12;
    loop {
        let len = *packet.get(i)? as usize;
        if len == 0 {
            i += 1;
            break;
        }
        if len & 0xc0 != 0 {
            i += 2;
            break;
        }
        i += 1 + len;
    }
    Some(u16::from_be_bytes([*packet.get(i)?, *packet.get(i + 1)?]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_types_are_read_from_the_bytes() {
        // id, flags, 1 question, then "a.b" A IN.
        let mut q = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend([1, b'a', 1, b'b', 0, 0, 1, 0, 1]);
        assert_eq!(qtype(&q), Some(1));
        q[18] = 33;
        assert_eq!(qtype(&q), Some(33));
        assert_eq!(qtype(&q[..14]), None);
    }

    #[test]
    fn counts_land_on_their_labels() {
        let r = Registry::new();
        let m = DnsMetrics::new(&r);
        let mut q = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend([1, b'a', 0, 0, 28, 0, 1]);
        let mut reply = q.clone();
        reply[3] = 3; // NXDOMAIN
        m.observe(Transport::Udp, &q, Some(&reply), Instant::now());
        assert_eq!(m.requests[0][1].get(), 1);
        assert_eq!(m.responses[3].get(), 1);
    }
}
