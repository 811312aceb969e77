//! Role-based access control (`rbac.authorization.k8s.io/v1`) with
//! Kubernetes' objects and meaning: Roles and ClusterRoles hold rules, and
//! RoleBindings and ClusterRoleBindings grant them to users, groups and
//! service accounts. Access is only ever granted, never denied by a rule:
//! a request is allowed when some binding that applies to the caller
//! grants a rule that matches it.
//!
//! This module holds the kinds, their validation, the matching of one
//! request against rules and subjects ([`Attributes`], [`rule_allows`],
//! [`subject_matches`]) and the default policy every cluster starts with
//! ([`bootstrap_policy`]). The API server keeps the index of bindings and
//! asks these functions.

use crate::admit::FieldError;
use crate::meta::{object, resource, ObjectMeta};
use crate::registry;

/// The API group of these kinds.
pub const GROUP: &str = "rbac.authorization.k8s.io";

object! {
    /// Rules that grant access within one namespace.
    pub struct Role {
        pub api_version: String,
        pub kind: String,
        pub metadata: ObjectMeta,
        pub rules: Vec<PolicyRule>,
    }
}
resource!(Role, registry::ROLE);

object! {
    /// Rules that grant access cluster-wide (through a ClusterRoleBinding)
    /// or in one namespace (through a RoleBinding).
    pub struct ClusterRole {
        pub api_version: String,
        pub kind: String,
        pub metadata: ObjectMeta,
        pub rules: Vec<PolicyRule>,
    }
}
resource!(ClusterRole, registry::CLUSTER_ROLE);

object! {
    /// Grants a Role or ClusterRole's rules in the binding's namespace.
    pub struct RoleBinding {
        pub api_version: String,
        pub kind: String,
        pub metadata: ObjectMeta,
        pub subjects: Vec<Subject>,
        pub role_ref: RoleRef,
    }
}
resource!(RoleBinding, registry::ROLE_BINDING);

object! {
    /// Grants a ClusterRole's rules in every namespace and on cluster-scoped kinds.
    pub struct ClusterRoleBinding {
        pub api_version: String,
        pub kind: String,
        pub metadata: ObjectMeta,
        pub subjects: Vec<Subject>,
        pub role_ref: RoleRef,
    }
}
resource!(ClusterRoleBinding, registry::CLUSTER_ROLE_BINDING);

object! {
    /// One grant: verbs on resources of API groups (optionally only the
    /// named objects).
    pub struct PolicyRule {
        pub verbs: Vec<String>,
        pub api_groups: Vec<String>,
        pub resources: Vec<String>,
        pub resource_names: Vec<String>,
        #[serde(rename = "nonResourceURLs")]
        pub non_resource_urls: Vec<String>,
    }
}

object! {
    /// Who a binding grants to: a User, a Group or a ServiceAccount.
    pub struct Subject {
        pub kind: String,
        pub api_group: String,
        pub name: String,
        pub namespace: String,
    }
}

object! {
    /// The role a binding grants.
    pub struct RoleRef {
        pub api_group: String,
        pub kind: String,
        pub name: String,
    }
}

/// The verbs a rule may name.
pub const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "impersonate",
    "bind",
    "escalate",
    "*",
];

fn validate_rules(errs: &mut Vec<FieldError>, rules: &[PolicyRule], cluster: bool) {
    for (i, r) in rules.iter().enumerate() {
        let p = format!("rules[{i}]");
        if r.verbs.is_empty() {
            errs.push(FieldError::required(
                format!("{p}.verbs"),
                "verbs must contain at least one value",
            ));
        }
        for (j, v) in r.verbs.iter().enumerate() {
            if !VERBS.contains(&v.as_str()) && !v.chars().all(|c| c.is_ascii_lowercase()) {
                errs.push(FieldError::invalid_str(
                    format!("{p}.verbs[{j}]"),
                    v,
                    "not a verb",
                ));
            }
        }
        if r.non_resource_urls.is_empty() {
            if r.api_groups.is_empty() {
                errs.push(FieldError::required(
                    format!("{p}.apiGroups"),
                    "resource rules must supply at least one api group",
                ));
            }
            if r.resources.is_empty() {
                errs.push(FieldError::required(
                    format!("{p}.resources"),
                    "resource rules must supply at least one resource",
                ));
            }
        } else {
            if !cluster {
                errs.push(FieldError::invalid_str(
                    format!("{p}.nonResourceURLs"),
                    &r.non_resource_urls.join(","),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !r.resources.is_empty() || !r.api_groups.is_empty() {
                errs.push(FieldError::invalid_str(
                    format!("{p}.nonResourceURLs"),
                    &r.non_resource_urls.join(","),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
        }
    }
}

fn validate_binding(errs: &mut Vec<FieldError>, subjects: &[Subject], r: &RoleRef, cluster: bool) {
    if r.api_group != GROUP {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            &r.api_group,
            &[GROUP],
        ));
    }
    let kinds: &[&str] = if cluster {
        &["ClusterRole"]
    } else {
        &["Role", "ClusterRole"]
    };
    if !kinds.contains(&r.kind.as_str()) {
        errs.push(FieldError::not_supported("roleRef.kind", &r.kind, kinds));
    }
    if r.name.is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    }
    for (i, s) in subjects.iter().enumerate() {
        let p = format!("subjects[{i}]");
        if s.name.is_empty() {
            errs.push(FieldError::required(format!("{p}.name"), ""));
        }
        match s.kind.as_str() {
            "User" | "Group" => {
                if s.api_group != GROUP {
                    errs.push(FieldError::not_supported(
                        format!("{p}.apiGroup"),
                        &s.api_group,
                        &[GROUP],
                    ));
                }
            }
            "ServiceAccount" => {
                if !s.api_group.is_empty() {
                    errs.push(FieldError::not_supported(
                        format!("{p}.apiGroup"),
                        &s.api_group,
                        &[""],
                    ));
                }
                if cluster && s.namespace.is_empty() {
                    errs.push(FieldError::required(format!("{p}.namespace"), ""));
                }
            }
            other => errs.push(FieldError::not_supported(
                format!("{p}.kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
}

pub(crate) fn validate_role(r: &Role) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_rules(&mut errs, &r.rules, false);
    errs
}

pub(crate) fn validate_cluster_role(r: &ClusterRole) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_rules(&mut errs, &r.rules, true);
    errs
}

pub(crate) fn validate_role_binding(b: &RoleBinding) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_binding(&mut errs, &b.subjects, &b.role_ref, false);
    errs
}

pub(crate) fn validate_cluster_role_binding(b: &ClusterRoleBinding) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_binding(&mut errs, &b.subjects, &b.role_ref, true);
    errs
}

fn role_ref_unchanged(old: &RoleRef, new: &RoleRef) -> Vec<FieldError> {
    if old == new {
        vec![]
    } else {
        vec![FieldError::invalid_str(
            "roleRef",
            &format!("{}/{}", new.kind, new.name),
            "cannot change roleRef",
        )]
    }
}

pub(crate) fn role_binding_update(old: &RoleBinding, new: &RoleBinding) -> Vec<FieldError> {
    role_ref_unchanged(&old.role_ref, &new.role_ref)
}

pub(crate) fn cluster_role_binding_update(
    old: &ClusterRoleBinding,
    new: &ClusterRoleBinding,
) -> Vec<FieldError> {
    role_ref_unchanged(&old.role_ref, &new.role_ref)
}

/// What a request asks to do, for authorization.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    /// The resource's API group ("" for the core group).
    pub api_group: String,
    /// The plural ("pods").
    pub resource: String,
    /// "log", "exec", "status", "binding" or "".
    pub subresource: String,
    /// "" for cluster-scoped kinds and for requests across namespaces.
    pub namespace: String,
    /// The object's name, when the request names one.
    pub name: String,
}

impl Attributes {
    pub fn new(verb: &str, info: &registry::ResourceInfo, namespace: &str, name: &str) -> Self {
        Attributes {
            verb: verb.into(),
            api_group: info.group.into(),
            resource: info.plural.into(),
            subresource: String::new(),
            namespace: if info.namespaced {
                namespace.into()
            } else {
                String::new()
            },
            name: name.into(),
        }
    }

    pub fn subresource(mut self, subresource: &str) -> Self {
        self.subresource = subresource.into();
        self
    }

    /// "pods/log", or "pods".
    pub fn full_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// Kubernetes' wording of a refusal of this request to `user`:
    /// `User "alice" cannot list resource "pods" in API group "" in the namespace "default"`.
    pub fn forbidden_message(&self, user: &str) -> String {
        let mut m = format!(
            "User \"{user}\" cannot {} resource \"{}\" in API group \"{}\"",
            self.verb,
            self.full_resource(),
            self.api_group
        );
        if self.namespace.is_empty() {
            m.push_str(" at the cluster scope");
        } else {
            m.push_str(&format!(" in the namespace \"{}\"", self.namespace));
        }
        m
    }
}

fn has(list: &[String], v: &str) -> bool {
    list.iter().any(|x| x == "*" || x == v)
}

/// Whether `rule` grants the request.
pub fn rule_allows(rule: &PolicyRule, a: &Attributes) -> bool {
    if !has(&rule.verbs, &a.verb) || !has(&rule.api_groups, &a.api_group) {
        return false;
    }
    let full = a.full_resource();
    let resource_ok = rule.resources.iter().any(|r| {
        r == "*"
            || *r == full
            || (a.subresource.is_empty() && *r == a.resource)
            // "*/status": that subresource of every resource.
            || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource))
            // "pods/*": every subresource of pods (not pods itself).
            || (!a.subresource.is_empty() && *r == format!("{}/*", a.resource))
    });
    if !resource_ok {
        return false;
    }
    rule.resource_names.is_empty() || (!a.name.is_empty() && rule.resource_names.contains(&a.name))
}

/// Whether a binding's `subject` names the caller. `binding_ns` is the
/// namespace of a RoleBinding ("" for a ClusterRoleBinding), where a
/// ServiceAccount subject without a namespace lives.
pub fn subject_matches(s: &Subject, user: &str, groups: &[String], binding_ns: &str) -> bool {
    match s.kind.as_str() {
        "User" => s.name == user,
        "Group" => groups.contains(&s.name),
        "ServiceAccount" => {
            let ns = if s.namespace.is_empty() {
                binding_ns
            } else {
                &s.namespace
            };
            user == format!("system:serviceaccount:{ns}:{}", s.name)
        }
        _ => false,
    }
}

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
    PolicyRule {
        verbs: s(verbs),
        api_groups: s(groups),
        resources: s(resources),
        ..Default::default()
    }
}

const READ: &[&str] = &["get", "list", "watch"];
const ALL: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    let mut r = ClusterRole {
        api_version: format!("{GROUP}/v1"),
        kind: "ClusterRole".into(),
        rules,
        ..Default::default()
    };
    r.metadata.name = name.into();
    r.metadata
        .labels
        .insert("kubernetes.io/bootstrapping".into(), "rbac-defaults".into());
    r
}

fn cluster_binding(name: &str, role: &str, kind: &str, subject: &str) -> ClusterRoleBinding {
    let mut b = ClusterRoleBinding {
        api_version: format!("{GROUP}/v1"),
        kind: "ClusterRoleBinding".into(),
        subjects: vec![Subject {
            kind: kind.into(),
            api_group: GROUP.into(),
            name: subject.into(),
            namespace: String::new(),
        }],
        role_ref: RoleRef {
            api_group: GROUP.into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        ..Default::default()
    };
    b.metadata.name = name.into();
    b.metadata
        .labels
        .insert("kubernetes.io/bootstrapping".into(), "rbac-defaults".into());
    b
}

/// The user-facing roles' namespaced resources, by API group.
const WORKLOADS: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "pods",
            "pods/log",
            "pods/status",
            "services",
            "endpoints",
            "configmaps",
            "replicationcontrollers",
            "events",
            "serviceaccounts",
        ],
    ),
    ("apps", &["deployments", "replicasets", "daemonsets"]),
    ("batch", &["jobs", "cronjobs"]),
    ("discovery.k8s.io", &["endpointslices"]),
    ("networking.k8s.io", &["ingresses"]),
    ("coordination.k8s.io", &["leases"]),
];

/// The default ClusterRoles and ClusterRoleBindings, as Kubernetes' RBAC
/// bootstrap policy makes them (the subset Flotilla's components need):
///
/// - `cluster-admin`, everything, bound to the group `system:masters`;
/// - `admin`, `edit`, `view` for users, to bind per namespace;
/// - `system:node` (agents, group `system:nodes`),
///   `system:node-bootstrapper` (nodes joining with a bootstrap token,
///   group `system:bootstrappers`: CertificateSigningRequests),
///   `system:node-proxier`
///   (the node proxy, user `system:kube-proxy`), `system:ingress`
///   (the ingress controller, user `system:ingress`);
/// - `system:basic-user`, which lets every authenticated caller ask what
///   it may do and who it is.
pub fn bootstrap_policy() -> (Vec<ClusterRole>, Vec<ClusterRoleBinding>) {
    let mut view = Vec::new();
    let mut edit = Vec::new();
    for (g, rs) in WORKLOADS {
        view.push(rule(READ, &[g], rs));
        edit.push(rule(ALL, &[g], rs));
    }
    edit.push(rule(
        ALL,
        &[""],
        &[
            "secrets",
            "pods/exec",
            "pods/portforward",
            "serviceaccounts/token",
        ],
    ));
    edit.push(rule(READ, &[""], &["namespaces"]));
    view.push(rule(READ, &[""], &["namespaces"]));
    let mut admin = edit.clone();
    admin.push(rule(ALL, &[GROUP], &["roles", "rolebindings"]));
    let roles = vec![
        cluster_role("cluster-admin", vec![rule(&["*"], &["*"], &["*"])]),
        cluster_role("admin", admin),
        cluster_role("edit", edit),
        cluster_role("view", view),
        cluster_role(
            "system:basic-user",
            vec![rule(
                &["create"],
                &["authorization.k8s.io", "authentication.k8s.io"],
                &["selfsubjectaccessreviews", "selfsubjectreviews"],
            )],
        ),
        cluster_role(
            "system:node",
            vec![
                rule(
                    READ,
                    &[""],
                    &["pods", "services", "endpoints", "nodes", "namespaces"],
                ),
                // Secrets, ConfigMaps: only those of its pods, by the node
                // authorizer (control's auth::node).
                rule(
                    &["create", "update", "patch", "delete"],
                    &[""],
                    &["nodes", "nodes/status", "pods/status"],
                ),
                // Mirror pods of static pods, and removing finished ones.
                rule(&["create", "delete"], &[""], &["pods"]),
                rule(&["create", "update", "patch"], &[""], &["events"]),
                rule(
                    &["get", "create", "update", "patch", "delete"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                // The node's pool gives it labels and taints.
                rule(READ, &["flotilla.dev"], &["nodepools"]),
                // Its pods' ServiceAccount tokens (the node authorizer
                // limits both to the accounts of its pods).
                rule(&["get"], &[""], &["serviceaccounts"]),
                rule(&["create"], &[""], &["serviceaccounts/token"]),
                // Renewing its own client certificate.
                rule(
                    &["create", "get", "list", "watch"],
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                ),
            ],
        ),
        cluster_role(
            "system:node-bootstrapper",
            vec![rule(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        cluster_role(
            "system:node-proxier",
            vec![
                rule(
                    READ,
                    &["", "discovery.k8s.io"],
                    &["services", "endpoints", "endpointslices", "nodes"],
                ),
                rule(&["create", "update", "patch"], &[""], &["events"]),
                rule(
                    &["get", "create", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
            ],
        ),
        cluster_role(
            "system:ingress",
            vec![
                rule(
                    READ,
                    &["", "discovery.k8s.io"],
                    &["services", "endpoints", "endpointslices", "secrets"],
                ),
                rule(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingressclasses"],
                ),
                rule(
                    &["update", "patch"],
                    &["networking.k8s.io"],
                    &["ingresses/status"],
                ),
                rule(&["create", "update", "patch"], &[""], &["events"]),
            ],
        ),
    ];
    let bindings = vec![
        cluster_binding("cluster-admin", "cluster-admin", "Group", "system:masters"),
        cluster_binding(
            "system:basic-user",
            "system:basic-user",
            "Group",
            "system:authenticated",
        ),
        cluster_binding("system:node", "system:node", "Group", "system:nodes"),
        cluster_binding(
            "system:node-bootstrapper",
            "system:node-bootstrapper",
            "Group",
            "system:bootstrappers",
        ),
        cluster_binding(
            "system:node-proxier",
            "system:node-proxier",
            "User",
            "system:kube-proxy",
        ),
        cluster_binding("system:ingress", "system:ingress", "User", "system:ingress"),
    ];
    (roles, bindings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(verb: &str) -> Attributes {
        Attributes::new(verb, &registry::POD, "default", "web-1")
    }

    #[test]
    fn rules_match_verbs_groups_resources_and_names() {
        let r = rule(&["get", "list"], &[""], &["pods"]);
        assert!(rule_allows(&r, &pods("get")));
        assert!(!rule_allows(&r, &pods("delete")));
        assert!(
            !rule_allows(&r, &pods("get").subresource("log")),
            "pods does not grant pods/log"
        );
        let mut named = r.clone();
        named.resource_names = vec!["web-2".into()];
        assert!(!rule_allows(&named, &pods("get")));
        named.resource_names.push("web-1".into());
        assert!(rule_allows(&named, &pods("get")));
        let deploy = Attributes::new("get", &registry::DEPLOYMENT, "default", "");
        assert!(!rule_allows(&r, &deploy), "core group only");
        assert!(rule_allows(&rule(&["*"], &["*"], &["*"]), &deploy));
        assert!(rule_allows(
            &rule(&["get"], &[""], &["pods/*"]),
            &pods("get").subresource("log")
        ));
        assert!(rule_allows(
            &rule(&["get"], &[""], &["*/log"]),
            &pods("get").subresource("log")
        ));
    }

    #[test]
    fn subjects_match_users_groups_and_service_accounts() {
        let s = |kind: &str, name: &str, ns: &str| Subject {
            kind: kind.into(),
            name: name.into(),
            namespace: ns.into(),
            ..Default::default()
        };
        let groups = vec!["dev".to_string()];
        assert!(subject_matches(
            &s("User", "alice", ""),
            "alice",
            &groups,
            ""
        ));
        assert!(subject_matches(&s("Group", "dev", ""), "bob", &groups, ""));
        assert!(!subject_matches(&s("Group", "ops", ""), "bob", &groups, ""));
        let sa = "system:serviceaccount:web:reader";
        assert!(subject_matches(
            &s("ServiceAccount", "reader", ""),
            sa,
            &[],
            "web"
        ));
        assert!(!subject_matches(
            &s("ServiceAccount", "reader", ""),
            sa,
            &[],
            "other"
        ));
        assert!(subject_matches(
            &s("ServiceAccount", "reader", "web"),
            sa,
            &[],
            ""
        ));
    }

    #[test]
    fn refusals_are_worded_as_kubernetes_words_them() {
        assert_eq!(
            pods("list").forbidden_message("alice"),
            "User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let n = Attributes::new("delete", &registry::NODE, "default", "n1");
        assert_eq!(
            n.forbidden_message("bob"),
            "User \"bob\" cannot delete resource \"nodes\" in API group \"\" at the cluster scope"
        );
    }

    #[test]
    fn the_bootstrap_policy_is_valid() {
        let (roles, bindings) = bootstrap_policy();
        for r in &roles {
            assert!(validate_cluster_role(r).is_empty(), "{:?}", r.metadata.name);
        }
        for b in &bindings {
            assert!(
                validate_cluster_role_binding(b).is_empty(),
                "{:?}",
                b.metadata.name
            );
            assert!(roles.iter().any(|r| r.metadata.name == b.role_ref.name));
        }
    }
}
