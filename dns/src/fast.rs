//! The fast path for the queries a cluster asks most: one A or AAAA
//! question, class IN, for a name of the zone (its records, or NODATA or
//! NXDOMAIN with the zone's SOA, as pods' search paths and AAAA lookups
//! bring), with or without an EDNS0 OPT record. It reads the question in place and writes the
//! answer straight into a buffer (the question copied as asked, so in the
//! query's case, and each record's owner a pointer to it), instead of
//! building hickory-proto messages. Anything else, or anything unusual
//! about the packet (compression in the question, labels with other than
//! letters, digits, `-` and `_`, an answer that would not fit, EDNS version
//! or options hickory-proto interprets), returns `None` and goes the full
//! path ([`crate::answer::handle`]), which gives the same answer; the
//! property test `fast_path_agrees_with_the_full_path` holds them to that.

use crate::answer::{size_limit_of, Transport, ZoneConfig, EDNS_PAYLOAD};
use crate::zone::Table;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// The EDNS option hickory-proto parses (client subnet): left to it.
const OPT_SUBNET: u16 = 8;
/// The longest name, in wire form.
const MAX_NAME: usize = 255;
const TYPE_SOA: u16 = 6;
const NXDOMAIN: u8 = 3;

/// `name` (dotted, no final dot) in wire form, uncompressed.
fn put_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// The zone's SOA record as the full path writes it
/// ([`crate::answer`]'s `soa`), names uncompressed.
fn soa(cfg: &ZoneConfig, serial: u32) -> Vec<u8> {
    let d = &cfg.domain;
    let mut rdata = Vec::with_capacity(2 * d.len() + 40);
    put_name(&mut rdata, &format!("ns.dns.{d}"));
    put_name(&mut rdata, &format!("hostmaster.{d}"));
    for n in [serial, 7200, 1800, 86400, cfg.negative_ttl] {
        rdata.extend_from_slice(&n.to_be_bytes());
    }
    let mut out = Vec::with_capacity(d.len() + 12 + rdata.len());
    put_name(&mut out, d);
    out.extend_from_slice(&TYPE_SOA.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&cfg.negative_ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(&rdata);
    out
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// What the fast path reads from a query.
struct Query<'a> {
    /// The question as asked (name, type, class), to copy.
    question: &'a [u8],
    qtype: u16,
    /// The client's EDNS payload size, when it sent an OPT record.
    edns: Option<u16>,
}

/// The question's name as a key (lower case, dots, no final dot) in `key`;
/// the offset just past the name.
fn read_name(p: &[u8], key: &mut [u8; MAX_NAME], len: &mut usize) -> Option<usize> {
    let mut at = 12;
    *len = 0;
    loop {
        let l = *p.get(at)? as usize;
        at += 1;
        if l == 0 {
            return (*len > 0).then_some(at);
        }
        // Pointers and extended label types: not in a plain question.
        if l > 63 || at + l > p.len() || *len + l + 1 > MAX_NAME {
            return None;
        }
        if *len > 0 {
            key[*len] = b'.';
            *len += 1;
        }
        for &c in &p[at..at + l] {
            if !(c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
                return None;
            }
            key[*len] = c.to_ascii_lowercase();
            *len += 1;
        }
        at += l;
    }
}

/// The OPT record at `at`, which must end the packet: its payload size.
fn read_opt(p: &[u8], at: usize) -> Option<u16> {
    // Root name, type OPT, payload size, extended rcode, version, flags.
    if *p.get(at)? != 0 || u16_at(p, at + 1)? != TYPE_OPT {
        return None;
    }
    let payload = u16_at(p, at + 3)?;
    if *p.get(at + 6)? != 0 {
        return None; // a version this server does not speak: BADVERS
    }
    let rdlen = u16_at(p, at + 9)? as usize;
    let mut o = at + 11;
    if o + rdlen != p.len() {
        return None;
    }
    while o < p.len() {
        let (code, len) = (u16_at(p, o)?, u16_at(p, o + 2)? as usize);
        if code == OPT_SUBNET || len == 0 {
            return None;
        }
        o += 4 + len;
    }
    (o == p.len()).then_some(payload)
}

fn parse<'a>(p: &'a [u8], key: &mut [u8; MAX_NAME], len: &mut usize) -> Option<Query<'a>> {
    // A standard query (QR 0, opcode 0), not truncated, one question.
    if p.len() < 17 || p[2] & 0xfa != 0 {
        return None;
    }
    let (qd, an, ns, ar) = (u16_at(p, 4)?, u16_at(p, 6)?, u16_at(p, 8)?, u16_at(p, 10)?);
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    let end = read_name(p, key, len)?;
    let (qtype, qclass) = (u16_at(p, end)?, u16_at(p, end + 2)?);
    if qclass != CLASS_IN || !(qtype == TYPE_A || qtype == TYPE_AAAA) {
        return None;
    }
    let qend = end + 4;
    let edns = if ar == 1 {
        Some(read_opt(p, qend)?)
    } else if qend == p.len() {
        None
    } else {
        return None;
    };
    Some(Query {
        question: &p[12..qend],
        qtype,
        edns,
    })
}

/// The answer to `packet` when it is the common case, else `None`.
pub fn answer(
    packet: &[u8],
    table: &Table,
    cfg: &ZoneConfig,
    transport: Transport,
) -> Option<Vec<u8>> {
    let mut key = [0u8; MAX_NAME];
    let mut len = 0;
    let q = parse(packet, &mut key, &mut len)?;
    let key = std::str::from_utf8(&key[..len]).ok()?;
    let d = cfg.domain.as_str();
    let in_zone = key == d
        || (key.len() > d.len()
            && key.ends_with(d)
            && key.as_bytes()[key.len() - d.len() - 1] == b'.');
    if !in_zone {
        return None;
    }
    let node = table.get(key);
    let (rcode, count) = match &node {
        Some(n) if n.cname.is_some() => return None,
        Some(n) if q.qtype == TYPE_A => (0, n.a.len()),
        Some(n) => (0, n.aaaa.len()),
        // Pod names (`a-b-c-d.<ns>.pod.<domain>`) are computed by the
        // full path.
        None if key.strip_suffix(d).is_some_and(|r| r.ends_with(".pod.")) => return None,
        None => (NXDOMAIN, 0),
    };
    // A negative answer (NODATA or NXDOMAIN) carries the zone's SOA.
    let soa = (count == 0).then(|| soa(cfg, table.serial()));
    let rdlen = if q.qtype == TYPE_A { 4 } else { 16 };
    let size = 12
        + q.question.len()
        + count * (12 + rdlen)
        + soa.as_ref().map_or(0, Vec::len)
        + if q.edns.is_some() { 11 } else { 0 };
    if size > size_limit_of(q.edns, transport) {
        return None;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&packet[..2]);
    // QR, AA and the query's RD; RA and the query's CD; the rcode.
    out.push(0x84 | (packet[2] & 0x01));
    out.push(0x80 | (packet[3] & 0x10) | rcode);
    let ns = u16::from(soa.is_some());
    let ar = u16::from(q.edns.is_some());
    for n in [1, count as u16, ns, ar] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(q.question);
    let mut rr = |rdata: &[u8]| {
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&q.qtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&cfg.ttl.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
    };
    match &node {
        Some(n) if q.qtype == TYPE_A => n.a.iter().for_each(|ip| rr(&ip.octets())),
        Some(n) => n.aaaa.iter().for_each(|ip| rr(&ip.octets())),
        None => {}
    }
    if let Some(soa) = soa {
        out.extend_from_slice(&soa);
    }
    if q.edns.is_some() {
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    Some(out)
}
