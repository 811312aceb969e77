//! Property test of the request handler: random packets (garbage, and
//! queries with random names, types, classes, flags and EDNS sizes) never
//! make it panic, and every reply parses, answers the packet's id, is a
//! response, and fits the transport's limit.

use std::net::IpAddr;
use std::sync::Arc;

use flotilla_dns::answer::{handle, Outcome, Transport, ZoneConfig};
use flotilla_dns::zone::{build, Table};
use flotilla_objects::core::{Service, ServicePort};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use proptest::prelude::*;

fn table() -> Table {
    let mut svcs = Vec::new();
    for i in 0..50 {
        let mut s = Service::default();
        s.metadata.namespace = "default".into();
        s.metadata.name = format!("svc{i}");
        s.spec.cluster_ip = format!("10.96.1.{i}");
        s.spec.ports.push(ServicePort {
            name: "http".into(),
            protocol: "TCP".into(),
            port: 80,
            ..Default::default()
        });
        svcs.push(Arc::new(s));
    }
    build(
        "cluster.local",
        IpAddr::from([10, 96, 0, 10]),
        &svcs,
        &[],
        1,
    )
}

fn cfg() -> ZoneConfig {
    ZoneConfig {
        domain: "cluster.local".into(),
        ttl: 5,
        negative_ttl: 30,
    }
}

fn check(packet: &[u8], t: &Table, transport: Transport) -> Result<(), TestCaseError> {
    match handle(packet, t, &cfg(), transport) {
        Outcome::Reply(b) => {
            let limit = match transport {
                Transport::Udp => 4096,
                Transport::Tcp => 65535,
            };
            prop_assert!(b.len() <= limit);
            let m = Message::from_vec(&b).map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(m.message_type(), MessageType::Response);
            prop_assert!(packet.len() >= 2);
            prop_assert_eq!(m.id(), u16::from_be_bytes([packet[0], packet[1]]));
        }
        Outcome::Forward(req) => {
            prop_assert_eq!(req.queries().len(), 1);
        }
        Outcome::Drop => {}
    }
    Ok(())
}

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("svc1".to_string()),
        Just("default".to_string()),
        Just("svc".to_string()),
        Just("cluster".to_string()),
        Just("local".to_string()),
        Just("pod".to_string()),
        Just("_http".to_string()),
        Just("_tcp".to_string()),
        Just("10-1-2-3".to_string()),
        "[a-zA-Z0-9-]{1,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let t = table();
        check(&bytes, &t, Transport::Udp)?;
        check(&bytes, &t, Transport::Tcp)?;
    }

    #[test]
    fn queries_get_well_formed_answers(
        labels in proptest::collection::vec(label(), 0..8),
        rtype in any::<u16>(),
        class in prop_oneof![Just(1u16), Just(255u16), any::<u16>()],
        id in any::<u16>(),
        op in 0u8..16,
        edns in proptest::option::of(0u16..10_000),
        version in prop_oneof![Just(0u8), any::<u8>()],
        flip in proptest::option::of((12usize..100, any::<u8>())),
    ) {
        let mut s = labels.join(".");
        s.push('.');
        let name = Name::from_ascii(&s).unwrap_or_else(|_| Name::root());
        let mut q = Query::query(name, RecordType::from(rtype));
        q.set_query_class(DNSClass::from(class));
        let mut m = Message::new();
        m.set_id(id).set_op_code(OpCode::from_u8(op)).add_query(q);
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            e.set_version(version);
            m.set_edns(e);
        }
        let Ok(mut bytes) = m.to_vec() else { return Ok(()) };
        if let Some((at, b)) = flip {
            if at < bytes.len() {
                bytes[at] = b;
            }
        }
        let t = table();
        check(&bytes, &t, Transport::Udp)?;
        check(&bytes, &t, Transport::Tcp)?;
    }
}
