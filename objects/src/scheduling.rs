//! Scheduling: the `scheduling.k8s.io/v1` group (PriorityClass) and the
//! parts of a pod spec that steer the scheduler (affinity, anti-affinity,
//! topology spread constraints), with Kubernetes' field names.

use std::collections::BTreeMap;

use crate::admit::FieldError;
use crate::meta::{object, resource, LabelSelector, ObjectMeta};
use crate::registry;

/// The priority of a pod that names no class when no class is the global
/// default.
pub const DEFAULT_PRIORITY: i32 = 0;
/// The highest value a user-defined class may have (higher ones are the
/// system's, with names starting `system-`).
pub const HIGHEST_USER_DEFINABLE_PRIORITY: i32 = 1_000_000_000;
/// The priority of `system-cluster-critical`, which always exists.
pub const SYSTEM_CLUSTER_CRITICAL: i32 = 2_000_000_000;
/// The priority of `system-node-critical`, which always exists.
pub const SYSTEM_NODE_CRITICAL: i32 = 2_000_001_000;

/// The built-in classes: name and value.
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i32)] = &[
    ("system-cluster-critical", SYSTEM_CLUSTER_CRITICAL),
    ("system-node-critical", SYSTEM_NODE_CRITICAL),
];

object! {
    /// A named pod priority (cluster-scoped).
    pub struct PriorityClass {
        /// "scheduling.k8s.io/v1"
        pub api_version: String,
        /// "PriorityClass"
        pub kind: String,
        /// Metadata.
        pub metadata: ObjectMeta,
        /// The priority of pods naming this class; higher is more important.
        pub value: i32,
        /// Whether pods naming no class get this one (at most one class).
        pub global_default: bool,
        /// When to use this class.
        pub description: String,
        /// PreemptLowerPriority (default) or Never.
        pub preemption_policy: String,
    }
}
resource!(PriorityClass, registry::PRIORITY_CLASS);

object! {
    /// A pod's scheduling constraints.
    pub struct Affinity {
        /// Rules on the labels of nodes.
        pub node_affinity: Option<NodeAffinity>,
        /// Rules on the pods already running nearby.
        pub pod_affinity: Option<PodAffinity>,
        /// Rules on the pods that must (or should) not run nearby.
        pub pod_anti_affinity: Option<PodAntiAffinity>,
    }
}

object! {
    /// Node affinity: required terms and weighted preferences.
    pub struct NodeAffinity {
        /// The pod fits only nodes matching one of these terms.
        pub required_during_scheduling_ignored_during_execution: Option<NodeSelector>,
        /// Nodes matching these get the weight added to their score.
        pub preferred_during_scheduling_ignored_during_execution: Vec<PreferredSchedulingTerm>,
    }
}

object! {
    /// Terms ORed together.
    pub struct NodeSelector {
        /// At least one term.
        pub node_selector_terms: Vec<NodeSelectorTerm>,
    }
}

object! {
    /// Requirements ANDed together.
    pub struct NodeSelectorTerm {
        /// On node labels.
        pub match_expressions: Vec<NodeSelectorRequirement>,
        /// On node fields (only `metadata.name`).
        pub match_fields: Vec<NodeSelectorRequirement>,
    }
}

object! {
    /// One requirement on a node label or field.
    pub struct NodeSelectorRequirement {
        /// Label key (or field path).
        pub key: String,
        /// In, NotIn, Exists, DoesNotExist, Gt or Lt.
        pub operator: String,
        /// Values (one integer for Gt and Lt; none for Exists and DoesNotExist).
        pub values: Vec<String>,
    }
}

object! {
    /// A weighted node preference.
    pub struct PreferredSchedulingTerm {
        /// 1-100.
        pub weight: i32,
        /// The term.
        pub preference: NodeSelectorTerm,
    }
}

object! {
    /// Pods this pod wants to be near.
    pub struct PodAffinity {
        /// Hard requirements.
        pub required_during_scheduling_ignored_during_execution: Vec<PodAffinityTerm>,
        /// Preferences.
        pub preferred_during_scheduling_ignored_during_execution: Vec<WeightedPodAffinityTerm>,
    }
}

object! {
    /// Pods this pod wants to be away from.
    pub struct PodAntiAffinity {
        /// Hard requirements.
        pub required_during_scheduling_ignored_during_execution: Vec<PodAffinityTerm>,
        /// Preferences.
        pub preferred_during_scheduling_ignored_during_execution: Vec<WeightedPodAffinityTerm>,
    }
}

object! {
    /// A set of pods and the topology domain "near" means.
    pub struct PodAffinityTerm {
        /// Which pods.
        pub label_selector: Option<LabelSelector>,
        /// In which namespaces (empty: the pod's own).
        pub namespaces: Vec<String>,
        /// Node label whose value is the domain, e.g. `kubernetes.io/hostname`.
        pub topology_key: String,
    }
}

object! {
    /// A weighted pod (anti-)affinity preference.
    pub struct WeightedPodAffinityTerm {
        /// 1-100.
        pub weight: i32,
        /// The term.
        pub pod_affinity_term: PodAffinityTerm,
    }
}

object! {
    /// How evenly matching pods must spread across a topology.
    pub struct TopologySpreadConstraint {
        /// Largest allowed difference between domains.
        pub max_skew: i32,
        /// Node label whose value is the domain.
        pub topology_key: String,
        /// DoNotSchedule or ScheduleAnyway.
        pub when_unsatisfiable: String,
        /// Which pods count.
        pub label_selector: Option<LabelSelector>,
    }
}

/// The node label carrying the node's name (the hostname topology).
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

const NODE_SELECTOR_OPERATORS: &[&str] = &["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"];

/// Rules of a node selector requirement at `path`.
fn node_requirement(
    errs: &mut Vec<FieldError>,
    path: &str,
    r: &NodeSelectorRequirement,
    field: bool,
) {
    if r.key.is_empty() {
        errs.push(FieldError::required(format!("{path}.key"), ""));
    }
    if field && !r.key.is_empty() && r.key != "metadata.name" {
        errs.push(FieldError::invalid_str(
            format!("{path}.key"),
            &r.key,
            "not a valid field selector key",
        ));
    }
    if !NODE_SELECTOR_OPERATORS.contains(&r.operator.as_str()) {
        errs.push(FieldError::not_supported(
            format!("{path}.operator"),
            &r.operator,
            NODE_SELECTOR_OPERATORS,
        ));
        return;
    }
    let n = r.values.len();
    match r.operator.as_str() {
        "In" | "NotIn" if n == 0 => errs.push(FieldError::required(
            format!("{path}.values"),
            "must be specified when `operator` is 'In' or 'NotIn'",
        )),
        "Exists" | "DoesNotExist" if n > 0 => errs.push(FieldError::forbidden(
            format!("{path}.values"),
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        )),
        "Gt" | "Lt" if n != 1 || r.values[0].parse::<i64>().is_err() => {
            errs.push(FieldError::required(
                format!("{path}.values"),
                "must be specified single value when `operator` is 'Lt' or 'Gt'",
            ))
        }
        _ => {}
    }
}

fn node_term(errs: &mut Vec<FieldError>, path: &str, t: &NodeSelectorTerm) {
    for (i, r) in t.match_expressions.iter().enumerate() {
        node_requirement(errs, &format!("{path}.matchExpressions[{i}]"), r, false);
    }
    for (i, r) in t.match_fields.iter().enumerate() {
        node_requirement(errs, &format!("{path}.matchFields[{i}]"), r, true);
    }
}

fn weight(errs: &mut Vec<FieldError>, path: &str, w: i32) {
    if !(1..=100).contains(&w) {
        errs.push(FieldError::invalid(
            path,
            w.to_string(),
            "must be in the range 1-100",
        ));
    }
}

fn pod_term(errs: &mut Vec<FieldError>, path: &str, t: &PodAffinityTerm) {
    if t.topology_key.is_empty() {
        errs.push(FieldError::required(
            format!("{path}.topologyKey"),
            "can not be empty",
        ));
    }
}

/// The rules of a pod spec's affinity and topology spread constraints
/// (`path` is the spec's path).
pub(crate) fn validate_pod_scheduling(
    errs: &mut Vec<FieldError>,
    path: &str,
    affinity: Option<&Affinity>,
    spread: &[TopologySpreadConstraint],
) {
    if let Some(a) = affinity {
        let ap = format!("{path}.affinity");
        if let Some(na) = &a.node_affinity {
            let np = format!("{ap}.nodeAffinity");
            if let Some(req) = &na.required_during_scheduling_ignored_during_execution {
                let rp = format!("{np}.requiredDuringSchedulingIgnoredDuringExecution");
                if req.node_selector_terms.is_empty() {
                    errs.push(FieldError::required(
                        format!("{rp}.nodeSelectorTerms"),
                        "must have at least one node selector term",
                    ));
                }
                for (i, t) in req.node_selector_terms.iter().enumerate() {
                    node_term(errs, &format!("{rp}.nodeSelectorTerms[{i}]"), t);
                }
            }
            for (i, p) in na
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .enumerate()
            {
                let pp = format!("{np}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
                weight(errs, &format!("{pp}.weight"), p.weight);
                node_term(errs, &format!("{pp}.preference"), &p.preference);
            }
        }
        let pod_rules = [
            (
                "podAffinity",
                a.pod_affinity.as_ref().map(|p| {
                    (
                        &p.required_during_scheduling_ignored_during_execution,
                        &p.preferred_during_scheduling_ignored_during_execution,
                    )
                }),
            ),
            (
                "podAntiAffinity",
                a.pod_anti_affinity.as_ref().map(|p| {
                    (
                        &p.required_during_scheduling_ignored_during_execution,
                        &p.preferred_during_scheduling_ignored_during_execution,
                    )
                }),
            ),
        ];
        for (name, rules) in pod_rules {
            let Some((req, pref)) = rules else { continue };
            let pp = format!("{ap}.{name}");
            for (i, t) in req.iter().enumerate() {
                pod_term(
                    errs,
                    &format!("{pp}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"),
                    t,
                );
            }
            for (i, w) in pref.iter().enumerate() {
                let wp = format!("{pp}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
                weight(errs, &format!("{wp}.weight"), w.weight);
                pod_term(errs, &format!("{wp}.podAffinityTerm"), &w.pod_affinity_term);
            }
        }
    }
    for (i, c) in spread.iter().enumerate() {
        let cp = format!("{path}.topologySpreadConstraints[{i}]");
        if c.max_skew <= 0 {
            errs.push(FieldError::invalid(
                format!("{cp}.maxSkew"),
                c.max_skew.to_string(),
                "must be greater than zero",
            ));
        }
        if c.topology_key.is_empty() {
            errs.push(FieldError::required(
                format!("{cp}.topologyKey"),
                "can not be empty",
            ));
        }
        let w = ["DoNotSchedule", "ScheduleAnyway"];
        if !w.contains(&c.when_unsatisfiable.as_str()) {
            errs.push(FieldError::not_supported(
                format!("{cp}.whenUnsatisfiable"),
                &c.when_unsatisfiable,
                &w,
            ));
        }
    }
}

pub(crate) fn validate_priority_class(p: &PriorityClass) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let system = p.metadata.name.starts_with("system-");
    if !system && p.value > HIGHEST_USER_DEFINABLE_PRIORITY {
        errs.push(FieldError::forbidden(
            "value",
            format!("maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"),
        ));
    }
    if system
        && !SYSTEM_PRIORITY_CLASSES
            .iter()
            .any(|(n, _)| *n == p.metadata.name)
    {
        errs.push(FieldError::forbidden(
            "metadata.name",
            "priority class names with 'system-' prefix are reserved",
        ));
    }
    let pp = ["Never", "PreemptLowerPriority"];
    if !pp.contains(&p.preemption_policy.as_str()) {
        errs.push(FieldError::not_supported(
            "preemptionPolicy",
            &p.preemption_policy,
            &pp,
        ));
    }
    errs
}

pub(crate) fn priority_class_update(old: &PriorityClass, new: &PriorityClass) -> Vec<FieldError> {
    if old.value != new.value {
        return vec![FieldError::forbidden(
            "value",
            "may not be changed in an update.",
        )];
    }
    Vec::new()
}

pub(crate) fn priority_class_defaults(p: &mut PriorityClass) {
    if p.preemption_policy.is_empty() {
        p.preemption_policy = "PreemptLowerPriority".into();
    }
}

/// The priority a pod gets at admission: its class's value (a class that
/// does not exist is an error), else the global default class's, else 0.
/// `classes` maps class names to their objects.
pub fn resolve_priority<'a>(
    class_name: &str,
    classes: &'a BTreeMap<String, PriorityClass>,
) -> Result<Resolved, String> {
    let of = |c: &'a PriorityClass| Resolved {
        class: c.metadata.name.clone(),
        value: c.value,
        preemption_policy: c.preemption_policy.clone(),
    };
    if class_name.is_empty() {
        return Ok(classes
            .values()
            .find(|c| c.global_default)
            .map(of)
            .unwrap_or(Resolved {
                class: String::new(),
                value: DEFAULT_PRIORITY,
                preemption_policy: String::new(),
            }));
    }
    if let Some((_, v)) = SYSTEM_PRIORITY_CLASSES
        .iter()
        .find(|(n, _)| *n == class_name)
    {
        return Ok(Resolved {
            class: class_name.to_string(),
            value: *v,
            preemption_policy: String::new(),
        });
    }
    classes
        .get(class_name)
        .map(of)
        .ok_or_else(|| format!("no PriorityClass with name {class_name} was found"))
}

/// What admission sets on a pod from its priority class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The class ("" when none applies).
    pub class: String,
    pub value: i32,
    /// The class's preemption policy ("" when none applies).
    pub preemption_policy: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, value: i32, global: bool) -> PriorityClass {
        let mut c = PriorityClass {
            value,
            global_default: global,
            preemption_policy: "PreemptLowerPriority".into(),
            ..Default::default()
        };
        c.metadata.name = name.into();
        c
    }

    fn admit_errors(info: &'static crate::ResourceInfo, v: serde_json::Value) -> Vec<String> {
        match crate::admit(info, v) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn priority_classes_and_affinity_are_validated() {
        let pc = |name: &str, value: i64| serde_json::json!({"metadata": {"name": name}, "value": value});
        let info = &registry::PRIORITY_CLASS;
        assert!(admit_errors(info, pc("ok", 1000)).is_empty());
        assert_eq!(
            admit_errors(info, pc("huge", 2_000_000_000)),
            ["value: Forbidden: maximum allowed value of a user defined priority is 1000000000"]
        );
        assert_eq!(
            admit_errors(info, pc("system-mine", 1)),
            ["metadata.name: Forbidden: priority class names with 'system-' prefix are reserved"]
        );
        let pod = |affinity: serde_json::Value| {
            serde_json::json!({"metadata": {"name": "p"}, "spec": {
                "containers": [{"name": "c", "image": "busybox"}], "affinity": affinity}})
        };
        let req = |expr: serde_json::Value| {
            pod(
                serde_json::json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [expr]}]}}}),
            )
        };
        let path = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0]";
        assert_eq!(
            admit_errors(&registry::POD, req(serde_json::json!({"key": "k", "operator": "Near"}))),
            [format!("{path}.operator: Unsupported value: \"Near\": supported values: \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\", \"Gt\", \"Lt\"")]
        );
        assert_eq!(
            admit_errors(&registry::POD, req(serde_json::json!({"key": "k", "operator": "Gt", "values": ["x"]}))),
            [format!("{path}.values: Required value: must be specified single value when `operator` is 'Lt' or 'Gt'")]
        );
        let anti = pod(
            serde_json::json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"a": "b"}}}]}}),
        );
        assert_eq!(
            admit_errors(&registry::POD, anti),
            ["spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: Required value: can not be empty"]
        );
    }

    #[test]
    fn priority_resolution_uses_the_class_then_the_global_default() {
        let mut classes = BTreeMap::new();
        let got = |n: &str, c: &BTreeMap<String, PriorityClass>| {
            resolve_priority(n, c).map(|r| (r.class, r.value))
        };
        assert_eq!(got("", &classes), Ok((String::new(), 0)));
        classes.insert("high".to_string(), class("high", 1000, false));
        classes.insert("low".to_string(), class("low", 10, true));
        assert_eq!(got("high", &classes), Ok(("high".into(), 1000)));
        assert_eq!(got("", &classes), Ok(("low".into(), 10)));
        assert_eq!(
            got("system-node-critical", &classes),
            Ok(("system-node-critical".into(), SYSTEM_NODE_CRITICAL))
        );
        assert!(got("nope", &classes).is_err());
    }
}
