//! The `networking.k8s.io/v1` group: Ingress and IngressClass.

use crate::admit::FieldError;
use crate::core::LoadBalancerStatus;
use crate::meta::{object, resource, ObjectMeta};
use crate::names;
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

/// The annotation that makes an IngressClass the default: Ingresses that
/// name no class are served by the controller of the default class.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

object! {
    /// A kind of ingress controller, named by `spec.ingressClassName`.
    pub struct IngressClass {
        /// "networking.k8s.io/v1"
        pub api_version: String,
        /// "IngressClass"
        pub kind: String,
        /// Metadata (the annotation [`DEFAULT_CLASS_ANNOTATION`] = "true"
        /// makes it the default class).
        pub metadata: ObjectMeta,
        /// Which controller implements it.
        pub spec: IngressClassSpec,
    }
}
resource!(IngressClass, registry::INGRESS_CLASS);

object! {
    /// The controller of an ingress class and its parameters.
    pub struct IngressClassSpec {
        /// The controller's name, a domain-prefixed path
        /// ("flotilla.dev/ingress"); immutable.
        pub controller: String,
        /// A resource with the controller's settings.
        pub parameters: Option<IngressClassParametersReference>,
    }
}

object! {
    /// A reference to the parameters of an ingress class.
    pub struct IngressClassParametersReference {
        /// The group of the resource ("" for the core group).
        pub api_group: Option<String>,
        /// Its kind.
        pub kind: String,
        /// Its name.
        pub name: String,
        /// "Cluster" or "Namespace".
        pub scope: Option<String>,
        /// Its namespace, when the scope is Namespace.
        pub namespace: Option<String>,
    }
}

impl IngressClass {
    /// Whether the default-class annotation is set to "true".
    pub fn is_default(&self) -> bool {
        self.metadata
            .annotations
            .get(DEFAULT_CLASS_ANNOTATION)
            .is_some_and(|v| v == "true")
    }
}

impl Ingress {
    /// The class the ingress names: `spec.ingressClassName`, else the
    /// older `kubernetes.io/ingress.class` annotation, else "".
    pub fn class_name(&self) -> &str {
        if !self.spec.ingress_class_name.is_empty() {
            return &self.spec.ingress_class_name;
        }
        self.metadata
            .annotations
            .get("kubernetes.io/ingress.class")
            .map(String::as_str)
            .unwrap_or("")
    }
}

const MAX_CONTROLLER_LEN: usize = 250;

/// Kubernetes' `ValidateIngressClass`.
pub(crate) fn validate_ingress_class(c: &IngressClass) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ctl = &c.spec.controller;
    if ctl.is_empty() {
        errs.push(FieldError::required("spec.controller", ""));
    } else if ctl.len() > MAX_CONTROLLER_LEN {
        errs.push(FieldError::too_long("spec.controller", MAX_CONTROLLER_LEN));
    } else {
        // A domain-prefixed path: "example.com/name".
        match ctl.split_once('/') {
            Some((domain, path)) if !path.is_empty() => {
                for m in names::dns1123_subdomain(domain) {
                    errs.push(FieldError::invalid_str("spec.controller", ctl, m));
                }
            }
            _ => errs.push(FieldError::invalid_str(
                "spec.controller",
                ctl,
                "must be a domain-prefixed path (such as \"acme.io/foo\")",
            )),
        }
    }
    if let Some(p) = &c.spec.parameters {
        let pp = "spec.parameters";
        if p.kind.is_empty() {
            errs.push(FieldError::required(format!("{pp}.kind"), ""));
        }
        if p.name.is_empty() {
            errs.push(FieldError::required(format!("{pp}.name"), ""));
        }
        match (p.scope.as_deref(), p.namespace.as_deref()) {
            (Some("Namespace"), None | Some("")) => errs.push(FieldError::required(
                format!("{pp}.namespace"),
                "`parameters.scope` is set to 'Namespace'",
            )),
            (Some("Cluster"), Some(ns)) if !ns.is_empty() => errs.push(FieldError::forbidden(
                format!("{pp}.namespace"),
                "`parameters.scope` is set to 'Cluster'",
            )),
            (Some(s), _) if s != "Namespace" && s != "Cluster" => errs.push(
                FieldError::not_supported(format!("{pp}.scope"), s, &["Cluster", "Namespace"]),
            ),
            _ => {}
        }
    }
    errs
}

/// `spec.controller` may not change.
pub(crate) fn ingress_class_update(old: &IngressClass, new: &IngressClass) -> Vec<FieldError> {
    if old.spec.controller != new.spec.controller {
        vec![FieldError::invalid_str(
            "spec.controller",
            &new.spec.controller,
            "field is immutable",
        )]
    } else {
        Vec::new()
    }
}
