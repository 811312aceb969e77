//! The table of every kind the API serves: names, group, version, scope.

/// What the API knows about one kind of object.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    /// "Deployment"
    pub kind: &'static str,
    /// "deployments": the name in store keys and in `flt get deployments`.
    pub plural: &'static str,
    /// "deployment"
    pub singular: &'static str,
    /// kubectl's short names: ["deploy"].
    pub short_names: &'static [&'static str],
    /// API group: "" for the core group, "apps", "batch", ...
    pub group: &'static str,
    /// "v1"
    pub version: &'static str,
    /// Whether objects of this kind live in a namespace.
    pub namespaced: bool,
    /// Whether the kind has a status written through its own call.
    pub has_status: bool,
}

impl ResourceInfo {
    /// "apps/v1", or "v1" for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// "deployments.apps", or "pods" for the core group: the name kubectl
    /// uses in messages such as `deployments.apps "web" not found`.
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

macro_rules! res {
    ($kind:literal, $plural:literal, $singular:literal, [$($short:literal),*], $group:literal, $namespaced:expr, $status:expr) => {
        ResourceInfo {
            kind: $kind,
            plural: $plural,
            singular: $singular,
            short_names: &[$($short),*],
            group: $group,
            version: "v1",
            namespaced: $namespaced,
            has_status: $status,
        }
    };
}

pub static NAMESPACE: ResourceInfo = res!(
    "Namespace",
    "namespaces",
    "namespace",
    ["ns"],
    "",
    false,
    true
);
pub static NODE: ResourceInfo = res!("Node", "nodes", "node", ["no"], "", false, true);
pub static NODE_POOL: ResourceInfo = res!(
    "NodePool",
    "nodepools",
    "nodepool",
    ["np"],
    "flotilla.dev",
    false,
    true
);
pub static POD: ResourceInfo = res!("Pod", "pods", "pod", ["po"], "", true, true);
pub static REPLICATION_CONTROLLER: ResourceInfo = res!(
    "ReplicationController",
    "replicationcontrollers",
    "replicationcontroller",
    ["rc"],
    "",
    true,
    true
);
pub static REPLICA_SET: ResourceInfo = res!(
    "ReplicaSet",
    "replicasets",
    "replicaset",
    ["rs"],
    "apps",
    true,
    true
);
pub static DEPLOYMENT: ResourceInfo = res!(
    "Deployment",
    "deployments",
    "deployment",
    ["deploy"],
    "apps",
    true,
    true
);
pub static JOB: ResourceInfo = res!("Job", "jobs", "job", [], "batch", true, true);
pub static CRON_JOB: ResourceInfo = res!(
    "CronJob",
    "cronjobs",
    "cronjob",
    ["cj"],
    "batch",
    true,
    true
);
pub static DAEMON_SET: ResourceInfo = res!(
    "DaemonSet",
    "daemonsets",
    "daemonset",
    ["ds"],
    "apps",
    true,
    true
);
pub static SERVICE: ResourceInfo = res!("Service", "services", "service", ["svc"], "", true, true);
pub static ENDPOINTS: ResourceInfo = res!(
    "Endpoints",
    "endpoints",
    "endpoints",
    ["ep"],
    "",
    true,
    false
);
pub static INGRESS: ResourceInfo = res!(
    "Ingress",
    "ingresses",
    "ingress",
    ["ing"],
    "networking.k8s.io",
    true,
    true
);
pub static INGRESS_CLASS: ResourceInfo = res!(
    "IngressClass",
    "ingressclasses",
    "ingressclass",
    [],
    "networking.k8s.io",
    false,
    false
);
pub static CONFIG_MAP: ResourceInfo = res!(
    "ConfigMap",
    "configmaps",
    "configmap",
    ["cm"],
    "",
    true,
    false
);
pub static SECRET: ResourceInfo = res!("Secret", "secrets", "secret", [], "", true, false);
pub static SERVICE_ACCOUNT: ResourceInfo = res!(
    "ServiceAccount",
    "serviceaccounts",
    "serviceaccount",
    ["sa"],
    "",
    true,
    false
);
pub static CERTIFICATE_SIGNING_REQUEST: ResourceInfo = res!(
    "CertificateSigningRequest",
    "certificatesigningrequests",
    "certificatesigningrequest",
    ["csr"],
    "certificates.k8s.io",
    false,
    true
);
pub static EVENT: ResourceInfo = res!("Event", "events", "event", ["ev"], "", true, false);
pub static PRIORITY_CLASS: ResourceInfo = res!(
    "PriorityClass",
    "priorityclasses",
    "priorityclass",
    ["pc"],
    "scheduling.k8s.io",
    false,
    false
);
pub static LEASE: ResourceInfo = res!(
    "Lease",
    "leases",
    "lease",
    [],
    "coordination.k8s.io",
    true,
    false
);

pub static ROLE: ResourceInfo = res!(
    "Role",
    "roles",
    "role",
    [],
    "rbac.authorization.k8s.io",
    true,
    false
);
pub static CLUSTER_ROLE: ResourceInfo = res!(
    "ClusterRole",
    "clusterroles",
    "clusterrole",
    [],
    "rbac.authorization.k8s.io",
    false,
    false
);
pub static ROLE_BINDING: ResourceInfo = res!(
    "RoleBinding",
    "rolebindings",
    "rolebinding",
    [],
    "rbac.authorization.k8s.io",
    true,
    false
);
pub static CLUSTER_ROLE_BINDING: ResourceInfo = res!(
    "ClusterRoleBinding",
    "clusterrolebindings",
    "clusterrolebinding",
    [],
    "rbac.authorization.k8s.io",
    false,
    false
);

pub static ENDPOINT_SLICE: ResourceInfo = res!(
    "EndpointSlice",
    "endpointslices",
    "endpointslice",
    [],
    "discovery.k8s.io",
    true,
    false
);

/// Every kind, in the order `flt api-resources` lists them.
pub static RESOURCES: &[&ResourceInfo] = &[
    &CONFIG_MAP,
    &ENDPOINTS,
    &EVENT,
    &NAMESPACE,
    &NODE,
    &POD,
    &REPLICATION_CONTROLLER,
    &SECRET,
    &SERVICE,
    &SERVICE_ACCOUNT,
    &DAEMON_SET,
    &DEPLOYMENT,
    &REPLICA_SET,
    &CRON_JOB,
    &JOB,
    &ENDPOINT_SLICE,
    &NODE_POOL,
    &INGRESS,
    &INGRESS_CLASS,
    &PRIORITY_CLASS,
    &LEASE,
    &ROLE,
    &CLUSTER_ROLE,
    &ROLE_BINDING,
    &CLUSTER_ROLE_BINDING,
    &CERTIFICATE_SIGNING_REQUEST,
];

/// Find a kind by any of the names a user may type: the kind ("Pod",
/// case-insensitive), the plural, the singular, a short name, or the plural
/// qualified by its group ("deployments.apps").
pub fn lookup(name: &str) -> Option<&'static ResourceInfo> {
    let n = name.to_ascii_lowercase();
    RESOURCES.iter().copied().find(|r| {
        r.kind.eq_ignore_ascii_case(&n)
            || r.plural == n
            || r.singular == n
            || r.short_names.contains(&n.as_str())
            || r.qualified_name() == n
            || (!r.group.is_empty() && n == format!("{}.{}", r.singular, r.group))
    })
}

/// The kind named by a manifest's `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .copied()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

/// The kind stored under a plural name ("pods").
pub fn by_plural(plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().copied().find(|r| r.plural == plural)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_form_finds_the_kind() {
        for n in [
            "deploy",
            "deployment",
            "deployments",
            "Deployment",
            "deployments.apps",
        ] {
            assert_eq!(lookup(n).map(|r| r.kind), Some("Deployment"), "{n}");
        }
        assert_eq!(lookup("po").map(|r| r.kind), Some("Pod"));
        assert_eq!(lookup("ep").map(|r| r.kind), Some("Endpoints"));
        assert!(lookup("frobs").is_none());
        assert_eq!(
            by_kind("apps/v1", "ReplicaSet").map(|r| r.plural),
            Some("replicasets")
        );
        assert!(by_kind("v1", "Deployment").is_none());
    }

    #[test]
    fn names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in RESOURCES {
            for n in std::iter::once(r.plural)
                .chain(std::iter::once(r.singular))
                .chain(r.short_names.iter().copied())
            {
                if r.plural == r.singular && n == r.singular && seen.contains(n) {
                    continue;
                }
                assert!(seen.insert(n), "{n} used twice");
            }
        }
    }
}
