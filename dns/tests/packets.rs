//! Property test of the request handler: random packets (garbage, and
//! queries with random names, types, classes, flags and EDNS sizes) never
//! make it panic, and every reply parses, answers the packet's id, is a
//! response, and fits the transport's limit; and the fast path gives the
//! same answers as the full one.

use std::net::IpAddr;
use std::sync::Arc;

use flotilla_dns::answer::{handle, handle_full, Outcome, Transport, ZoneConfig};
use flotilla_dns::zone::{build, Table};
use flotilla_objects::core::{Service, ServicePort};
use flotilla_objects::discovery::{Endpoint, EndpointSlice, LABEL_SERVICE_NAME};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{DNSClass, Name, RecordType};
use proptest::prelude::*;

fn table() -> Arc<Table> {
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
    // Dual stack, and a headless service whose 40 endpoints do not fit
    // 512 bytes.
    let mut dual = Service::default();
    dual.metadata.namespace = "default".into();
    dual.metadata.name = "dual".into();
    dual.spec.cluster_ip = "10.96.2.1".into();
    dual.spec.cluster_ips = vec!["10.96.2.1".into(), "fd00::2:1".into()];
    svcs.push(Arc::new(dual));
    let mut many = Service::default();
    many.metadata.namespace = "default".into();
    many.metadata.name = "many".into();
    many.spec.cluster_ip = "None".into();
    svcs.push(Arc::new(many));
    let mut slice = EndpointSlice::default();
    slice.metadata.namespace = "default".into();
    slice.metadata.name = "many-1".into();
    slice
        .metadata
        .labels
        .insert(LABEL_SERVICE_NAME.into(), "many".into());
    for i in 0..40 {
        slice.endpoints.push(Endpoint {
            addresses: vec![format!("10.244.3.{i}")],
            ..Default::default()
        });
    }
    build(
        "cluster.local",
        IpAddr::from([10, 96, 0, 10]),
        &svcs,
        &[Arc::new(slice)],
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

/// A name of the test zone (or near it) in random case.
fn zone_name() -> impl Strategy<Value = String> {
    let names = prop_oneof![
        Just("svc7.default.svc.cluster.local".to_string()),
        Just("svc49.default.svc.cluster.local".to_string()),
        Just("dual.default.svc.cluster.local".to_string()),
        Just("many.default.svc.cluster.local".to_string()),
        Just("10-244-3-7.many.default.svc.cluster.local".to_string()),
        Just("ns.dns.cluster.local".to_string()),
        Just("default.svc.cluster.local".to_string()),
        Just("cluster.local".to_string()),
        Just("nope.default.svc.cluster.local".to_string()),
        Just("svc7.default.svc.cluster.locals".to_string()),
        Just("xcluster.local".to_string()),
        Just("svc7.default.svc.cluster.local.cluster.local".to_string()),
        Just("svc7.default".to_string()),
        Just("10-1-2-3.default.pod.cluster.local".to_string()),
        Just("default.pod.cluster.local".to_string()),
        Just("x.10-1-2-3.default.pod.cluster.local".to_string()),
        Just("_http._tcp.svc7.default.svc.cluster.local".to_string()),
    ];
    (names, any::<u64>()).prop_map(|(n, bits)| {
        n.chars()
            .enumerate()
            .map(|(i, c)| {
                if bits >> (i % 64) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    })
}

/// A message's sections as comparable rows: hickory-proto's `Record`
/// equality leaves out the TTL and `Name`'s ignores case, so compare the
/// owner name as written, TTL, class, type and data.
fn rows(m: &Message) -> Vec<String> {
    let mut out = vec![format!("{:?}", m.header())];
    for q in m.queries() {
        out.push(format!(
            "Q {} {} {}",
            q.name().to_ascii(),
            q.query_class(),
            q.query_type()
        ));
    }
    for (sec, rs) in [
        ("AN", m.answers()),
        ("NS", m.name_servers()),
        ("AR", m.additionals()),
    ] {
        for r in rs {
            out.push(format!(
                "{sec} {} {} {} {} {}",
                r.name().to_ascii(),
                r.ttl(),
                r.dns_class(),
                r.record_type(),
                r.data()
            ));
        }
    }
    out.push(format!("{:?}", m.extensions()));
    out
}

/// Two answers mean the same: the same header, question (in its case),
/// records (TTLs included) and EDNS.
fn same(a: &[u8], b: &[u8]) -> Result<(), TestCaseError> {
    let ma = Message::from_vec(a).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    let mb = Message::from_vec(b).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(rows(&ma), rows(&mb));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn fast_path_agrees_with_the_full_path(
        name in zone_name(),
        rtype in prop_oneof![Just(1u16), Just(28u16), Just(33u16), Just(5u16)],
        id in any::<u16>(),
        rd in any::<bool>(),
        cd in any::<bool>(),
        ad in any::<bool>(),
        edns in proptest::option::of(0u16..5_000),
        cookie in any::<bool>(),
        tcp in any::<bool>(),
    ) {
        let n = Name::from_ascii(format!("{name}.")).unwrap_or_else(|_| Name::root());
        let mut m = Message::new();
        m.set_id(id)
            .set_recursion_desired(rd)
            .set_checking_disabled(cd)
            .set_authentic_data(ad)
            .add_query(Query::query(n, RecordType::from(rtype)));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            if cookie {
                e.options_mut().insert(EdnsOption::Unknown(10, vec![7; 8]));
            }
            m.set_edns(e);
        }
        let bytes = m.to_vec().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        let t = table();
        let fast = flotilla_dns::fast::answer(&bytes, &t, &cfg(), transport);
        if let Some(fast) = fast {
            let Outcome::Reply(full) = handle_full(&bytes, &t, &cfg(), transport) else {
                return Err(TestCaseError::fail("the full path does not answer"));
            };
            same(&fast, &full)?;
            // The name comes back as asked.
            let m = Message::from_vec(&fast).map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(m.queries()[0].name().to_ascii(), format!("{name}."));
        }
    }
}

/// The fast path does take the common queries (so the property above is
/// not vacuous), and declines what it must leave to the full path.
#[test]
fn fast_path_takes_the_common_queries() {
    let t = table();
    let ask = |name: &str, rtype: RecordType, edns: bool| {
        let mut m = Message::new();
        m.set_id(7)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            e.options_mut().insert(EdnsOption::Unknown(10, vec![1; 8]));
            m.set_edns(e);
        }
        let b = m.to_vec().unwrap();
        flotilla_dns::fast::answer(&b, &t, &cfg(), Transport::Udp)
    };
    for edns in [false, true] {
        let a = ask("SVC7.default.svc.cluster.local.", RecordType::A, edns).expect("fast A");
        let m = Message::from_vec(&a).unwrap();
        assert_eq!(m.answers().len(), 1);
        assert_eq!(
            m.answers()[0].name().to_ascii(),
            "SVC7.default.svc.cluster.local."
        );
        assert_eq!(m.extensions().is_some(), edns);
        assert!(m.authoritative() && m.recursion_desired() && m.recursion_available());
        assert!(ask("dual.default.svc.cluster.local.", RecordType::AAAA, edns).is_some());
    }
    // NODATA and NXDOMAIN (with the SOA) too.
    let m = Message::from_vec(
        &ask("svc7.default.svc.cluster.local.", RecordType::AAAA, false).expect("NODATA"),
    )
    .unwrap();
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());
    assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
    let m = Message::from_vec(
        &ask("nope.default.svc.cluster.local.", RecordType::A, true).expect("NXDOMAIN"),
    )
    .unwrap();
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
    // Pod names, other types, too big for 512 bytes: the full path.
    assert!(ask("10-1-2-3.default.pod.cluster.local.", RecordType::A, false).is_none());
    assert!(ask(
        "_http._tcp.svc7.default.svc.cluster.local.",
        RecordType::SRV,
        false
    )
    .is_none());
    assert!(ask("many.default.svc.cluster.local.", RecordType::A, false).is_none());
    assert!(ask("many.default.svc.cluster.local.", RecordType::A, true).is_some());
    assert!(ask("example.com.", RecordType::A, false).is_none());
}
