//! The request handler: one DNS packet in, one decision out. Names in the
//! cluster zone are answered from a [`Table`]; other names are handed to
//! the forwarder. No sockets here, so tests (and the property test) feed
//! it bytes.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::zone::{key_of, parse_ip_label, Node, Table};

/// The UDP payload size this server offers in its EDNS answers.
pub const EDNS_PAYLOAD: u16 = 1232;
/// The largest UDP answer sent, whatever a client offers.
const MAX_UDP: usize = 4096;
/// A DNS message over TCP is at most this long.
const MAX_TCP: usize = 65_535;

/// The settings answers depend on.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    /// The cluster domain, lower case, no final dot (`cluster.local`).
    pub domain: String,
    /// TTL of positive answers.
    pub ttl: u32,
    /// TTL of the SOA record and its minimum (negative caching).
    pub negative_ttl: u32,
}

/// How a query arrived: the size an answer may take depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to do with a packet.
#[derive(Debug)]
pub enum Outcome {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Out of the zone: the forwarder answers (the parsed request).
    Forward(Message),
    /// Not worth an answer (too short to carry an id, or a response).
    Drop,
}

/// Handle one packet.
pub fn handle(packet: &[u8], table: &Table, cfg: &ZoneConfig, transport: Transport) -> Outcome {
    if let Some(b) = crate::fast::answer(packet, table, cfg, transport) {
        return Outcome::Reply(b);
    }
    handle_full(packet, table, cfg, transport)
}

/// Handle one packet through hickory-proto's messages, whatever it is
/// (what [`handle`] does when the fast path declines).
pub fn handle_full(
    packet: &[u8],
    table: &Table,
    cfg: &ZoneConfig,
    transport: Transport,
) -> Outcome {
    let req = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => return format_error(packet),
    };
    if req.message_type() != MessageType::Query {
        return Outcome::Drop;
    }
    let mut resp = response_to(&req);
    if req.op_code() != OpCode::Query {
        resp.set_response_code(ResponseCode::NotImp);
        return finish(resp, &req, transport);
    }
    if req.queries().len() != 1 {
        resp.set_response_code(ResponseCode::FormErr);
        return finish(resp, &req, transport);
    }
    if let Some(e) = req.extensions() {
        if e.version() > 0 {
            resp.set_response_code(ResponseCode::BADVERS);
            return finish(resp, &req, transport);
        }
    }
    let q = &req.queries()[0];
    let qname = q.name().clone();
    let key = key_of(&qname);
    let in_zone = key == cfg.domain || key.ends_with(&format!(".{}", cfg.domain));
    if !in_zone {
        if table.contains(&key) {
            // A reverse name of a service or endpoint address.
            resp.set_authoritative(true);
            answer_node(&mut resp, table, cfg, &qname, q.query_type(), &key);
            return finish(resp, &req, transport);
        }
        return Outcome::Forward(req);
    }
    resp.set_authoritative(true);
    if q.query_class() != DNSClass::IN && q.query_class() != DNSClass::ANY {
        resp.set_response_code(ResponseCode::Refused);
        return finish(resp, &req, transport);
    }
    if table.contains(&key) {
        answer_node(&mut resp, table, cfg, &qname, q.query_type(), &key);
    } else if let Some(exists) = pod_name(&key, &cfg.domain) {
        if let Some(ip) = exists {
            let rt = q.query_type();
            if let Some(rd) = ip_rdata(ip, rt) {
                resp.add_answer(Record::from_rdata(qname.clone(), cfg.ttl, rd));
            }
        }
    } else {
        resp.set_response_code(ResponseCode::NXDomain);
    }
    if resp.answers().is_empty() {
        resp.add_name_server(soa(cfg, table));
    }
    finish(resp, &req, transport)
}

/// `Some(Some(ip))` for `a-b-c-d.<ns>.pod.<domain>`, `Some(None)` for a
/// name that exists without an address (`<ns>.pod.<domain>`), else `None`.
fn pod_name(key: &str, domain: &str) -> Option<Option<IpAddr>> {
    let rest = key.strip_suffix(domain)?.strip_suffix(".pod.")?;
    let labels: Vec<&str> = rest.split('.').collect();
    match labels.as_slice() {
        [_ns] => Some(None),
        [ip, _ns] => parse_ip_label(ip).map(Some),
        _ => None,
    }
}

fn ip_rdata(ip: IpAddr, rt: RecordType) -> Option<RData> {
    match (ip, rt) {
        (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(v4))),
        (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(v6))),
        _ => None,
    }
}

fn node_rdata(node: &Node, rt: RecordType) -> Vec<RData> {
    let mut out = Vec::new();
    let any = rt == RecordType::ANY;
    if any || rt == RecordType::A {
        out.extend(node.a.iter().map(|ip| RData::A(A(*ip))));
    }
    if any || rt == RecordType::AAAA {
        out.extend(node.aaaa.iter().map(|ip| RData::AAAA(AAAA(*ip))));
    }
    if any || rt == RecordType::SRV {
        let n = node.srv.len().max(1) as u16;
        out.extend(
            node.srv
                .iter()
                .map(|s| RData::SRV(SRV::new(0, s.weight / n, s.port, s.target.clone()))),
        );
    }
    if any || rt == RecordType::PTR {
        out.extend(node.ptr.iter().map(|p| RData::PTR(PTR(p.clone()))));
    }
    if any || rt == RecordType::TXT {
        out.extend(
            node.txt
                .iter()
                .map(|t| RData::TXT(TXT::new(vec![t.clone()]))),
        );
    }
    out
}

fn answer_node(
    resp: &mut Message,
    table: &Table,
    cfg: &ZoneConfig,
    qname: &Name,
    rt: RecordType,
    key: &str,
) {
    let Some(node) = table.get(key) else {
        return;
    };
    if key == cfg.domain {
        if matches!(rt, RecordType::SOA | RecordType::ANY) {
            let mut s = soa(cfg, table);
            s.set_name(qname.clone());
            resp.add_answer(s);
        }
        if matches!(rt, RecordType::NS | RecordType::ANY) {
            resp.add_answer(Record::from_rdata(
                qname.clone(),
                cfg.ttl,
                RData::NS(NS(ns_name(cfg))),
            ));
            add_address_of(resp, table, cfg, &ns_name(cfg));
        }
    }
    if let Some(target) = &node.cname {
        resp.add_answer(Record::from_rdata(
            qname.clone(),
            cfg.ttl,
            RData::CNAME(CNAME(target.clone())),
        ));
        if rt != RecordType::CNAME {
            // Follow it inside the zone; outside, the client's resolver does.
            let tkey = key_of(target);
            if let Some(t) = table.get(&tkey) {
                for rd in node_rdata(&t, rt) {
                    resp.add_answer(Record::from_rdata(target.clone(), cfg.ttl, rd));
                }
            }
        }
        return;
    }
    for rd in node_rdata(&node, rt) {
        if let RData::SRV(srv) = &rd {
            add_address_of(resp, table, cfg, srv.target());
        }
        resp.add_answer(Record::from_rdata(qname.clone(), cfg.ttl, rd));
    }
}

/// The target's A/AAAA records in the additional section.
fn add_address_of(resp: &mut Message, table: &Table, cfg: &ZoneConfig, target: &Name) {
    if let Some(t) = table.get(&key_of(target)) {
        for rd in node_rdata(&t, RecordType::A)
            .into_iter()
            .chain(node_rdata(&t, RecordType::AAAA))
        {
            let r = Record::from_rdata(target.clone(), cfg.ttl, rd);
            if !resp.additionals().contains(&r) {
                resp.add_additional(r);
            }
        }
    }
}

fn ns_name(cfg: &ZoneConfig) -> Name {
    Name::from_ascii(format!("ns.dns.{}.", cfg.domain)).unwrap_or_else(|_| Name::root())
}

/// The zone's SOA record (in the authority section of negative answers).
fn soa(cfg: &ZoneConfig, table: &Table) -> Record {
    let apex = Name::from_ascii(format!("{}.", cfg.domain)).unwrap_or_else(|_| Name::root());
    let rname =
        Name::from_ascii(format!("hostmaster.{}.", cfg.domain)).unwrap_or_else(|_| Name::root());
    Record::from_rdata(
        apex,
        cfg.negative_ttl,
        RData::SOA(SOA::new(
            ns_name(cfg),
            rname,
            table.serial(),
            7200,
            1800,
            86400,
            cfg.negative_ttl,
        )),
    )
}

/// A response skeleton for `req`: its id, question (with the query's
/// case), RD echoed, RA set (this server forwards).
pub fn response_to(req: &Message) -> Message {
    let mut resp = Message::new();
    resp.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(req.op_code())
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(true)
        .set_checking_disabled(req.checking_disabled());
    if req.op_code() == OpCode::Query {
        resp.add_queries(req.queries().iter().cloned());
    }
    if req.extensions().is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        e.set_version(0);
        resp.set_edns(e);
    }
    resp
}

/// The most bytes an answer to `req` may take over `transport`.
pub fn size_limit(req: &Message, transport: Transport) -> usize {
    size_limit_of(
        req.extensions().as_ref().map(|e| e.max_payload()),
        transport,
    )
}

/// The most bytes an answer may take over `transport` to a client that
/// offered `edns` as its EDNS0 payload size (None: no EDNS0).
pub fn size_limit_of(edns: Option<u16>, transport: Transport) -> usize {
    match transport {
        Transport::Tcp => MAX_TCP,
        Transport::Udp => match edns {
            Some(size) => (size as usize).clamp(512, MAX_UDP),
            None => 512,
        },
    }
}

/// Encode `resp`, truncating it (TC, sections emptied) when it does not
/// fit the transport.
pub fn finish(mut resp: Message, req: &Message, transport: Transport) -> Outcome {
    let limit = size_limit(req, transport);
    match resp.to_vec() {
        Ok(b) if b.len() <= limit => Outcome::Reply(b),
        _ => {
            resp.take_answers();
            resp.take_name_servers();
            resp.take_additionals();
            resp.set_truncated(true);
            match resp.to_vec() {
                Ok(b) => Outcome::Reply(b),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot encode a truncated answer");
                    Outcome::Drop
                }
            }
        }
    }
}

/// FORMERR for a packet that does not parse but carries a query's header.
fn format_error(packet: &[u8]) -> Outcome {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return Outcome::Drop;
    }
    let mut resp = Message::new();
    resp.set_id(u16::from_be_bytes([packet[0], packet[1]]))
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::from_u8((packet[2] >> 3) & 0xf))
        .set_response_code(ResponseCode::FormErr);
    match resp.to_vec() {
        Ok(b) => Outcome::Reply(b),
        Err(_) => Outcome::Drop,
    }
}

/// SERVFAIL (or another code) for `req`, e.g. when no upstream answers.
pub fn error_reply(req: &Message, code: ResponseCode, transport: Transport) -> Outcome {
    let mut resp = response_to(req);
    resp.set_response_code(code);
    finish(resp, req, transport)
}
