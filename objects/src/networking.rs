//! The `networking.k8s.io/v1` group: Ingress.

use crate::core::LoadBalancerStatus;
use crate::meta::{object, resource, ObjectMeta};
use crate::registry;

object! {
    /// HTTP routing from outside the cluster to services.
    pub struct Ingress {
        /// "networking.k8s.io/v1"
        pub api_version: String,
        /// "Ingress"
        pub kind: String,
        /// Metadata.
        pub metadata: ObjectMeta,
        /// Desired state.
        pub spec: IngressSpec,
        /// Observed state.
        pub status: Option<IngressStatus>,
    }
}
resource!(Ingress, registry::INGRESS);

object! {
    /// Desired state of an ingress.
    pub struct IngressSpec {
        /// Ingress class (controller) responsible.
        pub ingress_class_name: String,
        /// Backend for requests no rule matches.
        pub default_backend: Option<IngressBackend>,
        /// TLS termination.
        pub tls: Vec<IngressTls>,
        /// Host and path rules.
        pub rules: Vec<IngressRule>,
    }
}

object! {
    /// TLS for some hosts.
    pub struct IngressTls {
        /// Hosts covered by the certificate.
        pub hosts: Vec<String>,
        /// Secret with the certificate and key.
        pub secret_name: String,
    }
}

object! {
    /// Routing for one host (or every host when empty).
    pub struct IngressRule {
        /// Host name (may start with "*.").
        pub host: String,
        /// HTTP paths.
        pub http: Option<HttpIngressRuleValue>,
    }
}

object! {
    /// HTTP paths of a rule.
    pub struct HttpIngressRuleValue {
        /// The paths (at least one).
        pub paths: Vec<HttpIngressPath>,
    }
}

object! {
    /// A path and its backend.
    pub struct HttpIngressPath {
        /// Path (must start with "/" for Exact and Prefix).
        pub path: String,
        /// Exact, Prefix or ImplementationSpecific (required).
        pub path_type: String,
        /// Where matching requests go.
        pub backend: IngressBackend,
    }
}

object! {
    /// Where requests go.
    pub struct IngressBackend {
        /// A service port.
        pub service: Option<IngressServiceBackend>,
    }
}

object! {
    /// A service port as a backend.
    pub struct IngressServiceBackend {
        /// Service name.
        pub name: String,
        /// Service port (exactly one of number and name).
        pub port: ServiceBackendPort,
    }
}

object! {
    /// A service port by number or name.
    pub struct ServiceBackendPort {
        /// Port name.
        pub name: String,
        /// Port number.
        pub number: i32,
    }
}

object! {
    /// Observed state of an ingress.
    pub struct IngressStatus {
        /// The load balancer, if any.
        pub load_balancer: LoadBalancerStatus,
    }
}
