//! The `discovery.k8s.io/v1` group: EndpointSlice, the addresses behind a
//! service in slices of at most [`MAX_ENDPOINTS_PER_SLICE`], with each
//! endpoint's ready, serving and terminating conditions. The endpoints
//! controller writes them for services with a selector; node proxies and
//! the cluster DNS read them.

use std::collections::BTreeSet;

use crate::admit::FieldError;
use crate::core::ObjectReference;
use crate::meta::{object, resource, ObjectMeta};
use crate::names;
use crate::registry;

/// The label naming the service a slice belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// The manager value of slices the endpoints controller writes (the same
/// as Kubernetes', so that tools that look for it find it).
pub const MANAGED_BY_CONTROLLER: &str = "endpointslice-controller.k8s.io";
/// At most this many endpoints in one slice (Kubernetes' default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The most endpoints a slice may hold at all (Kubernetes' validation).
const MAX_ENDPOINTS_VALID: usize = 1000;

object! {
    /// A slice of the endpoints of a service.
    pub struct EndpointSlice {
        /// "discovery.k8s.io/v1"
        pub api_version: String,
        /// "EndpointSlice"
        pub kind: String,
        /// Metadata (the `kubernetes.io/service-name` label names the service).
        pub metadata: ObjectMeta,
        /// IPv4, IPv6 or FQDN.
        pub address_type: String,
        /// The endpoints.
        pub endpoints: Vec<Endpoint>,
        /// The ports every endpoint of the slice serves.
        pub ports: Vec<EndpointSlicePort>,
    }
}
resource!(EndpointSlice, registry::ENDPOINT_SLICE);

object! {
    /// One endpoint: a pod (or whatever the addresses belong to).
    pub struct Endpoint {
        /// Its addresses (one, for a pod).
        pub addresses: Vec<String>,
        /// Whether it takes traffic.
        pub conditions: EndpointConditions,
        /// Its hostname (a pod's `hostname` when it has a `subdomain`).
        pub hostname: Option<String>,
        /// The object behind it.
        pub target_ref: Option<ObjectReference>,
        /// The node hosting it.
        pub node_name: Option<String>,
        /// The zone of that node.
        pub zone: Option<String>,
    }
}

object! {
    /// The conditions of an endpoint.
    pub struct EndpointConditions {
        /// Ready for new traffic: serving and not terminating (or, with
        /// `publishNotReadyAddresses`, always).
        pub ready: Option<bool>,
        /// Passing its readiness checks, terminating or not.
        pub serving: Option<bool>,
        /// Being deleted.
        pub terminating: Option<bool>,
    }
}

impl EndpointConditions {
    /// Kubernetes reads an absent `ready` as ready.
    pub fn is_ready(&self) -> bool {
        self.ready.unwrap_or(true)
    }
    /// An absent `serving` reads as `ready`.
    pub fn is_serving(&self) -> bool {
        self.serving.unwrap_or_else(|| self.is_ready())
    }
    pub fn is_terminating(&self) -> bool {
        self.terminating.unwrap_or(false)
    }
}

object! {
    /// A port of the endpoints of a slice.
    pub struct EndpointSlicePort {
        /// The service port's name ("" for an unnamed port).
        pub name: Option<String>,
        /// TCP, UDP or SCTP.
        pub protocol: Option<String>,
        /// The port number on the endpoints.
        pub port: Option<i32>,
        /// The application protocol.
        pub app_protocol: Option<String>,
    }
}

impl EndpointSlice {
    /// The service this slice belongs to, from its label.
    pub fn service_name(&self) -> Option<&str> {
        self.metadata
            .labels
            .get(LABEL_SERVICE_NAME)
            .map(String::as_str)
    }
}

pub(crate) fn endpoint_slice_defaults(s: &mut EndpointSlice) {
    for p in &mut s.ports {
        p.protocol.get_or_insert_with(|| "TCP".to_string());
        p.name.get_or_insert_with(String::new);
    }
}

pub(crate) fn validate_endpoint_slice(s: &EndpointSlice) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ip_check: fn(&str) -> bool = match s.address_type.as_str() {
        "IPv4" => names::is_ipv4,
        "IPv6" => |a| names::is_ip(a) && !names::is_ipv4(a),
        "FQDN" => |a| names::dns1123_subdomain(a).is_empty(),
        "" => {
            errs.push(FieldError::required("addressType", ""));
            |_| true
        }
        other => {
            errs.push(FieldError::not_supported(
                "addressType",
                other,
                &["FQDN", "IPv4", "IPv6"],
            ));
            |_| true
        }
    };
    if s.endpoints.len() > MAX_ENDPOINTS_VALID {
        errs.push(FieldError::invalid(
            "endpoints",
            s.endpoints.len().to_string(),
            format!("must have at most {MAX_ENDPOINTS_VALID} items"),
        ));
    }
    for (i, e) in s.endpoints.iter().enumerate() {
        let ep = format!("endpoints[{i}]");
        if e.addresses.is_empty() {
            errs.push(FieldError::required(
                format!("{ep}.addresses"),
                "must contain at least 1 address",
            ));
        }
        for (j, a) in e.addresses.iter().enumerate() {
            if !ip_check(a) {
                errs.push(FieldError::invalid_str(
                    format!("{ep}.addresses[{j}]"),
                    a,
                    format!("must be a valid {} address", s.address_type),
                ));
            }
        }
        if let Some(h) = &e.hostname {
            for m in names::dns1123_label(h) {
                errs.push(FieldError::invalid_str(format!("{ep}.hostname"), h, m));
            }
        }
        if let Some(n) = &e.node_name {
            for m in names::dns1123_subdomain(n) {
                errs.push(FieldError::invalid_str(format!("{ep}.nodeName"), n, m));
            }
        }
    }
    let mut seen = BTreeSet::new();
    for (i, p) in s.ports.iter().enumerate() {
        let pp = format!("ports[{i}]");
        let name = p.name.as_deref().unwrap_or("");
        if !name.is_empty() {
            for m in names::dns1123_label(name) {
                errs.push(FieldError::invalid_str(format!("{pp}.name"), name, m));
            }
        }
        if !seen.insert(name) {
            errs.push(FieldError::duplicate(
                format!("{pp}.name"),
                format!("\"{name}\""),
            ));
        }
        if let Some(port) = p.port {
            if !(1..=65535).contains(&port) {
                errs.push(FieldError::invalid(
                    format!("{pp}.port"),
                    port.to_string(),
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
        if let Some(proto) = &p.protocol {
            if !["SCTP", "TCP", "UDP"].contains(&proto.as_str()) {
                errs.push(FieldError::not_supported(
                    format!("{pp}.protocol"),
                    proto,
                    &["SCTP", "TCP", "UDP"],
                ));
            }
        }
    }
    errs
}

pub(crate) fn endpoint_slice_update(old: &EndpointSlice, new: &EndpointSlice) -> Vec<FieldError> {
    if old.address_type != new.address_type {
        return vec![FieldError::invalid_str(
            "addressType",
            &new.address_type,
            "field is immutable",
        )];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn slices_round_trip_with_kubernetes_names_and_are_validated() {
        let mut s: EndpointSlice = serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {LABEL_SERVICE_NAME: "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.1.5"], "nodeName": "n1",
                           "conditions": {"ready": false, "serving": true, "terminating": true},
                           "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-1"}}],
            "ports": [{"name": "http", "port": 8080}]
        }))
        .unwrap();
        endpoint_slice_defaults(&mut s);
        assert_eq!(s.service_name(), Some("web"));
        assert_eq!(s.ports[0].protocol.as_deref(), Some("TCP"));
        let c = &s.endpoints[0].conditions;
        assert!(!c.is_ready() && c.is_serving() && c.is_terminating());
        assert!(validate_endpoint_slice(&s).is_empty());
        // Absent conditions read as ready.
        assert!(EndpointConditions::default().is_ready());

        let mut bad = s.clone();
        bad.address_type = "IPv5".into();
        bad.endpoints[0].addresses.push("fe80::1".into());
        bad.ports.push(EndpointSlicePort {
            name: Some("http".into()),
            port: Some(70000),
            ..Default::default()
        });
        let msgs: Vec<String> = validate_endpoint_slice(&bad)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("addressType: Unsupported value: \"IPv5\"")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("ports[1].name: Duplicate value")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("ports[1].port: Invalid value: 70000")),
            "{msgs:?}"
        );

        let mut v4 = s.clone();
        v4.endpoints[0].addresses = vec!["fe80::1".into()];
        assert_eq!(validate_endpoint_slice(&v4).len(), 1);
        let mut changed = s.clone();
        changed.address_type = "IPv6".into();
        assert_eq!(endpoint_slice_update(&s, &changed).len(), 1);
    }
}
