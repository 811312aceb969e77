//! Every filter and score on in-memory nodes and pods.

use serde_json::json;

use super::*;
use crate::algorithm::{find_preemption, schedule_one};
use crate::cache::Cache;
use crate::filters::*;
use crate::score;

fn empty() -> serde_json::Value {
    json!({})
}

/// A pod controlled by ReplicaSet rs-1.
fn owned(name: &str) -> PodInfo {
    pod(
        name,
        "",
        "",
        json!({"metadata": {"ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-1", "controller": true}]}}),
    )
}

#[test]
fn resources_count_requests_of_the_pods_already_there() {
    let n = node("n", "2", "4Gi", empty());
    let a = pod("a", "1500m", "1Gi", empty());
    let b = pod("b", "600m", "", empty());
    let c = pod("c", "500m", "3Gi", empty());
    assert_eq!(filter(&b, &info(n.clone(), &[])), Ok(()));
    assert_eq!(
        filter(&b, &info(n.clone(), &[&a])),
        Err(vec![Unfit::InsufficientCpu])
    );
    assert_eq!(filter(&c, &info(n.clone(), &[&a])), Ok(()));
    let big = pod("big", "3", "5Gi", empty());
    assert_eq!(
        filter(&big, &info(n, &[])),
        Err(vec![Unfit::InsufficientCpu, Unfit::InsufficientMemory])
    );
}

#[test]
fn init_containers_count_at_their_peak_not_summed() {
    let n = node("n", "1", "1Gi", empty());
    // Containers 300m + init 800m: needs 800m, not 1100m.
    let p = pod(
        "p",
        "300m",
        "",
        json!({"spec": {"initContainers": [{"name": "i", "image": "busybox",
            "resources": {"requests": {"cpu": "800m"}}}]}}),
    );
    assert_eq!(filter(&p, &info(n.clone(), &[])), Ok(()));
    let other = pod("o", "300m", "", empty());
    assert_eq!(
        filter(&p, &info(n, &[&other])),
        Err(vec![Unfit::InsufficientCpu])
    );
}

#[test]
fn the_pod_count_is_a_resource() {
    let n = node(
        "n",
        "8",
        "8Gi",
        json!({"status": {"allocatable": {"pods": "1"}}}),
    );
    let a = pod("a", "", "", empty());
    let b = pod("b", "", "", empty());
    assert_eq!(filter(&b, &info(n, &[&a])), Err(vec![Unfit::TooManyPods]));
}

#[test]
fn cordoned_and_not_ready_nodes_are_refused() {
    let p = pod("p", "", "", empty());
    let cordoned = node("c", "1", "1Gi", json!({"spec": {"unschedulable": true}}));
    assert_eq!(
        filter(&p, &info(cordoned.clone(), &[])),
        Err(vec![Unfit::Unschedulable])
    );
    let tolerant = pod(
        "t",
        "",
        "",
        json!({"spec": {"tolerations": [{"key": UNSCHEDULABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]}}),
    );
    assert_eq!(filter(&tolerant, &info(cordoned, &[])), Ok(()));
    let not_ready = node(
        "n",
        "1",
        "1Gi",
        json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
    );
    assert_eq!(
        filter(&p, &info(not_ready, &[])),
        Err(vec![Unfit::NotReady])
    );
}

#[test]
fn taints_need_tolerations_by_effect_and_operator() {
    let n = node(
        "n",
        "1",
        "1Gi",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
    );
    let untolerated = Unfit::UntoleratedTaint {
        key: "dedicated".into(),
        value: "gpu".into(),
    };
    let cases = [
        (json!([]), false),
        (
            json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
            true,
        ),
        (
            json!([{"key": "dedicated", "operator": "Equal", "value": "gpu"}]),
            true,
        ),
        (
            json!([{"key": "dedicated", "value": "cpu", "effect": "NoSchedule"}]),
            false,
        ),
        (json!([{"key": "dedicated", "operator": "Exists"}]), true),
        (json!([{"operator": "Exists"}]), true),
        (
            json!([{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}]),
            false,
        ),
    ];
    for (tolerations, ok) in cases {
        let p = pod(
            "p",
            "",
            "",
            json!({"spec": {"tolerations": tolerations.clone()}}),
        );
        let want = if ok {
            Ok(())
        } else {
            Err(vec![untolerated.clone()])
        };
        assert_eq!(filter(&p, &info(n.clone(), &[])), want, "{tolerations}");
    }
    // PreferNoSchedule never refuses.
    let soft = node(
        "s",
        "1",
        "1Gi",
        json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}),
    );
    assert_eq!(filter(&pod("p", "", "", empty()), &info(soft, &[])), Ok(()));
    // NoExecute refuses too; tolerationSeconds does not matter for scheduling.
    let exec = node(
        "e",
        "1",
        "1Gi",
        json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "NoExecute"}]}}),
    );
    let p = pod(
        "p",
        "",
        "",
        json!({"spec": {"tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]}}),
    );
    assert_eq!(filter(&p, &info(exec, &[])), Ok(()));
}

#[test]
fn node_selector_affinity_operators_fields_and_pools() {
    let n = node(
        "n1",
        "1",
        "1Gi",
        json!({"metadata": {"labels": {"zone": "a", "gen": "5", "flotilla.dev/nodepool": "gpu"}}}),
    );
    let plain = node("n2", "1", "1Gi", empty());
    let aff = |exprs: serde_json::Value, fields: serde_json::Value| {
        pod(
            "p",
            "",
            "",
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": exprs, "matchFields": fields}]}}}}}),
        )
    };
    let e =
        |k: &str, op: &str, v: serde_json::Value| json!([{"key": k, "operator": op, "values": v}]);
    let cases = [
        (e("zone", "In", json!(["a", "b"])), json!([]), true, false),
        (e("zone", "NotIn", json!(["a"])), json!([]), false, true),
        (e("zone", "Exists", json!([])), json!([]), true, false),
        (e("zone", "DoesNotExist", json!([])), json!([]), false, true),
        (e("gen", "Gt", json!(["4"])), json!([]), true, false),
        (e("gen", "Lt", json!(["4"])), json!([]), false, false),
        (
            json!([]),
            e("metadata.name", "In", json!(["n2"])),
            false,
            true,
        ),
        (
            e("flotilla.dev/nodepool", "In", json!(["default"])),
            json!([]),
            false,
            true,
        ),
    ];
    for (exprs, fields, on_n1, on_n2) in cases {
        let p = aff(exprs.clone(), fields.clone());
        let want = |ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(vec![Unfit::NodeAffinity])
            }
        };
        assert_eq!(
            filter(&p, &info(n.clone(), &[])),
            want(on_n1),
            "n1 {exprs} {fields}"
        );
        assert_eq!(
            filter(&p, &info(plain.clone(), &[])),
            want(on_n2),
            "n2 {exprs} {fields}"
        );
    }
    // nodeSelector, and the pool as a selector (the default pool included).
    let sel = |s: serde_json::Value| pod("p", "", "", json!({"spec": {"nodeSelector": s}}));
    let gpu = sel(json!({"flotilla.dev/nodepool": "gpu"}));
    assert_eq!(filter(&gpu, &info(n.clone(), &[])), Ok(()));
    assert_eq!(
        filter(&gpu, &info(plain.clone(), &[])),
        Err(vec![Unfit::NodeAffinity])
    );
    let default_pool = sel(json!({"flotilla.dev/nodepool": "default"}));
    assert_eq!(filter(&default_pool, &info(plain.clone(), &[])), Ok(()));
    let host = sel(json!({"kubernetes.io/hostname": "n2"}));
    assert_eq!(filter(&host, &info(plain, &[])), Ok(()));
    assert_eq!(filter(&host, &info(n, &[])), Err(vec![Unfit::NodeAffinity]));
}

#[test]
fn host_ports_conflict_by_protocol_and_port() {
    let n = node("n", "1", "1Gi", empty());
    let port = |name: &str, p: i32, proto: &str| {
        pod(
            name,
            "",
            "",
            json!({"spec": {"containers": [{"name": "c", "image": "x",
                "ports": [{"containerPort": 80, "hostPort": p, "protocol": proto}]}]}}),
        )
    };
    let a = port("a", 8080, "TCP");
    assert_eq!(
        filter(&port("b", 8080, "TCP"), &info(n.clone(), &[&a])),
        Err(vec![Unfit::HostPorts])
    );
    assert_eq!(
        filter(&port("c", 8080, "UDP"), &info(n.clone(), &[&a])),
        Ok(())
    );
    assert_eq!(filter(&port("d", 8081, "TCP"), &info(n, &[&a])), Ok(()));
}

fn anti(name: &str, app: &str) -> PodInfo {
    pod(
        name,
        "",
        "",
        json!({"metadata": {"labels": {"app": app}}, "spec": {"affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"app": app}},
                "topologyKey": "kubernetes.io/hostname"}]}}}}),
    )
}

#[test]
fn required_anti_affinity_on_the_hostname_works_both_ways() {
    let n = node("n", "4", "4Gi", empty());
    let web1 = anti("web1", "web");
    let web2 = anti("web2", "web");
    assert_eq!(
        filter(&web2, &info(n.clone(), &[&web1])),
        Err(vec![Unfit::PodAntiAffinity])
    );
    // A pod without rules, matching an existing pod's rule.
    let plain_web = pod(
        "plain",
        "",
        "",
        json!({"metadata": {"labels": {"app": "web"}}}),
    );
    assert_eq!(
        filter(&plain_web, &info(n.clone(), &[&web1])),
        Err(vec![Unfit::ExistingPodsAntiAffinity])
    );
    // Other labels, or another namespace, do not match.
    let db = anti("db", "db");
    assert_eq!(filter(&db, &info(n.clone(), &[&web1])), Ok(()));
    let other_ns = pod(
        "o",
        "",
        "",
        json!({"metadata": {"namespace": "other", "labels": {"app": "web"}}}),
    );
    assert_eq!(filter(&other_ns, &info(n, &[&web1])), Ok(()));
}

#[test]
fn scores_prefer_free_balanced_preferred_untainted_and_spread_nodes() {
    let empty_node = info(node("a", "4", "8Gi", empty()), &[]);
    let busy = pod("busy", "3", "6Gi", empty());
    let busy_node = info(node("b", "4", "8Gi", empty()), &[&busy]);
    let p = pod("p", "500m", "1Gi", empty());
    assert!(score::least_allocated(&p, &empty_node) > score::least_allocated(&p, &busy_node));
    // Balanced: a cpu-heavy node is worse for a cpu-heavy pod.
    let cpu_heavy = pod("h", "3", "100Mi", empty());
    let lopsided = info(node("c", "4", "8Gi", empty()), &[&cpu_heavy]);
    assert!(
        score::balanced_allocation(&p, &empty_node) > score::balanced_allocation(&p, &lopsided)
    );
    // Preferred affinity and PreferNoSchedule.
    let pref = pod(
        "pref",
        "",
        "",
        json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "preference": {"matchExpressions": [{"key": "ssd", "operator": "Exists"}]}}]}}}}),
    );
    let ssd = info(
        node(
            "ssd",
            "4",
            "8Gi",
            json!({"metadata": {"labels": {"ssd": "1"}}}),
        ),
        &[],
    );
    let tainted = info(
        node(
            "t",
            "4",
            "8Gi",
            json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}),
        ),
        &[],
    );
    let s = score::score(&pref, &[&empty_node, &ssd, &tainted]);
    assert!(s[1] > s[0] && s[0] > s[2], "{s:?}");
    // Replicas of one owner spread.
    let r1 = owned("r1");
    let with_replica = info(node("r", "4", "8Gi", empty()), &[&r1]);
    let s = score::score(&owned("r2"), &[&with_replica, &empty_node]);
    assert!(s[1] > s[0], "{s:?}");
}

#[test]
fn a_cache_decision_never_overcommits_and_explains_a_miss() {
    let mut c = Cache::new();
    for n in ["a", "b", "c"] {
        c.set_node(node(n, "1", "1Gi", empty()));
    }
    for i in 0..3 {
        let p = pod(&format!("p{i}"), "1", "", empty());
        let n = schedule_one(&mut c, &p).expect("fits");
        c.assume(p, &n);
    }
    let extra = pod("p3", "1", "", empty());
    let d = schedule_one(&mut c, &extra).expect_err("full");
    assert_eq!(d.message(), "0/3 nodes are available: 3 Insufficient cpu.");
    let nodes: std::collections::BTreeSet<_> = c.nodes().map(|n| n.pods.len()).collect();
    assert_eq!(nodes, [1].into(), "one pod per node");
}

#[test]
fn preemption_picks_the_fewest_lowest_priority_victims() {
    let mut c = Cache::new();
    c.set_node(node("a", "2", "4Gi", empty()));
    c.set_node(node("b", "2", "4Gi", empty()));
    let prio = |name: &str, cpu: &str, p: i32| pod(name, cpu, "", json!({"spec": {"priority": p}}));
    // a: two small low pods; b: one big low pod.
    for (n, p) in [
        ("a", prio("a1", "1", 1)),
        ("a", prio("a2", "1", 1)),
        ("b", prio("b1", "2", 1)),
    ] {
        c.assume(p, n);
    }
    let high = prio("high", "2", 100);
    let pre = find_preemption(&c, &high).expect("a node");
    assert_eq!(pre.node, "b");
    assert_eq!(pre.victims.len(), 1);
    // Nothing of lower priority: nothing to preempt.
    let low = prio("low", "2", 1);
    assert!(find_preemption(&c, &low).is_none());
}

#[test]
fn topology_spread_keeps_the_skew_and_scores_the_soft_kind() {
    use crate::spread::SpreadState;
    let zone = |n: &str, z: &str| node(n, "8", "8Gi", json!({"metadata": {"labels": {"zone": z}}}));
    let web = |n: &str| pod(n, "", "", json!({"metadata": {"labels": {"app": "web"}}}));
    let (w1, w2) = (web("w1"), web("w2"));
    let a = info(zone("a", "z1"), &[&w1, &w2]);
    let b = info(zone("b", "z2"), &[]);
    let unlabelled = info(node("c", "8", "8Gi", empty()), &[]);
    let spread = |when: &str| {
        pod(
            "new",
            "",
            "",
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"topologySpreadConstraints": [{
                "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": when,
                "labelSelector": {"matchLabels": {"app": "web"}}}]}}),
        )
    };
    let hard = spread("DoNotSchedule");
    let st = SpreadState::new(&hard.pod, [&a, &b, &unlabelled].into_iter()).expect("state");
    // z1 has 2, z2 has 0: z1 would reach a skew of 3.
    assert_eq!(st.check(&a), Err(Unfit::TopologySpread));
    assert_eq!(st.check(&b), Ok(()));
    assert_eq!(st.check(&unlabelled), Err(Unfit::TopologySpread));
    let soft = spread("ScheduleAnyway");
    let st = SpreadState::new(&soft.pod, [&a, &b].into_iter()).expect("state");
    assert_eq!(st.check(&a), Ok(()));
    assert!(st.raw_score(&a) > st.raw_score(&b));
}

#[test]
fn one_owners_replicas_spread_across_zones_too() {
    use crate::score::{owner_zone_counts, score_with_zones};
    let zoned = |n: &str, z: &str| {
        node(
            n,
            "4",
            "8Gi",
            json!({"metadata": {"labels": {"topology.kubernetes.io/zone": z}}}),
        )
    };
    let (r1, r2) = (owned("r1"), owned("r2"));
    // Zone a holds two replicas (on a1); a2 and b1 hold none.
    let a1 = info(zoned("a1", "a"), &[&r1, &r2]);
    let a2 = info(zoned("a2", "a"), &[]);
    let b1 = info(zoned("b1", "b"), &[]);
    let new = owned("r3");
    let zones = owner_zone_counts(&new.pod, [&a1, &a2, &b1].into_iter()).expect("zones");
    let s = score_with_zones(&new, &[&a2, &b1], Some(&zones));
    assert!(s[1] > s[0], "the empty zone wins: {s:?}");
    // Without zones, the two empty nodes are equal.
    let s = score_with_zones(&new, &[&a2, &b1], None);
    assert_eq!(s[0], s[1]);
}

fn with_affinity(name: &str, app: &str, kind: &str, key: &str, wants: &str) -> PodInfo {
    pod(
        name,
        "",
        "",
        json!({"metadata": {"labels": {"app": app}}, "spec": {"affinity": {kind: {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"app": wants}},
                "topologyKey": key}]}}}}),
    )
}

#[test]
fn required_pod_affinity_and_zone_anti_affinity_need_the_whole_cluster() {
    use crate::interpod::InterPodState;
    const ZONE: &str = "topology.kubernetes.io/zone";
    let zoned = |n: &str, z: &str| node(n, "8", "8Gi", json!({"metadata": {"labels": {ZONE: z}}}));
    let db = pod("db", "", "", json!({"metadata": {"labels": {"app": "db"}}}));
    let a1 = info(zoned("a1", "a"), &[&db]);
    let a2 = info(zoned("a2", "a"), &[]);
    let b1 = info(zoned("b1", "b"), &[]);
    let all = || [&a1, &a2, &b1].into_iter();
    // Affinity to db's zone: both nodes of zone a, not b.
    let web = with_affinity("web", "web", "podAffinity", ZONE, "db");
    let st = InterPodState::new(&web, all(), false).expect("state");
    assert_eq!(st.check(&a2), Ok(()));
    assert_eq!(st.check(&b1), Err(Unfit::PodAffinity));
    // Affinity to the hostname: only db's node.
    let near = with_affinity(
        "near",
        "near",
        "podAffinity",
        "kubernetes.io/hostname",
        "db",
    );
    let st = InterPodState::new(&near, all(), false).expect("state");
    assert_eq!(st.check(&a1), Ok(()));
    assert_eq!(st.check(&a2), Err(Unfit::PodAffinity));
    // The first pod of a group that wants its own kind goes anywhere.
    let first = with_affinity("c1", "cache", "podAffinity", ZONE, "cache");
    let st = InterPodState::new(&first, all(), false).expect("state");
    assert_eq!(st.check(&b1), Ok(()));
    // Anti-affinity on the zone: not in db's zone, either way round.
    let away = with_affinity("away", "away", "podAntiAffinity", ZONE, "db");
    let st = InterPodState::new(&away, all(), false).expect("state");
    assert_eq!(st.check(&a2), Err(Unfit::PodAntiAffinity));
    assert_eq!(st.check(&b1), Ok(()));
    let loner = with_affinity("loner", "loner", "podAntiAffinity", ZONE, "web");
    let b1_loner = info(zoned("b1", "b"), &[&loner]);
    let plain_web = pod("w", "", "", json!({"metadata": {"labels": {"app": "web"}}}));
    let st =
        InterPodState::new(&plain_web, [&a1, &a2, &b1_loner].into_iter(), true).expect("state");
    assert_eq!(st.check(&b1_loner), Err(Unfit::ExistingPodsAntiAffinity));
    assert_eq!(st.check(&a2), Ok(()));
    // Nothing to look at: no state.
    assert!(InterPodState::new(&plain_web, all(), false).is_none());
}

#[test]
fn a_cache_decision_follows_pod_affinity_and_zone_anti_affinity() {
    const ZONE: &str = "topology.kubernetes.io/zone";
    let mut c = Cache::new();
    for (n, z) in [("a1", "a"), ("b1", "b"), ("b2", "b")] {
        c.set_node(node(
            n,
            "8",
            "8Gi",
            json!({"metadata": {"labels": {ZONE: z}}}),
        ));
    }
    c.assume(
        pod("db", "", "", json!({"metadata": {"labels": {"app": "db"}}})),
        "a1",
    );
    let web = with_affinity("web", "web", "podAffinity", ZONE, "db");
    assert_eq!(schedule_one(&mut c, &web).expect("fits"), "a1");
    // A pod that must keep away from db's zone goes to zone b; once there,
    // a db replica may no longer join it.
    let away = with_affinity("away", "away", "podAntiAffinity", ZONE, "db");
    let n = schedule_one(&mut c, &away).expect("fits");
    assert!(n.starts_with('b'), "{n}");
    c.assume(away, &n);
    let db2 = pod(
        "db2",
        "",
        "",
        json!({"metadata": {"labels": {"app": "db"}}}),
    );
    assert_eq!(schedule_one(&mut c, &db2).expect("fits"), "a1");
    let d = schedule_one(
        &mut c,
        &with_affinity("x", "x", "podAffinity", ZONE, "nothing"),
    )
    .expect_err("no db-less group to join");
    assert_eq!(
        d.message(),
        "0/3 nodes are available: 3 node(s) didn't match pod affinity rules."
    );
}

#[test]
fn preferred_pod_affinity_scores_near_and_anti_affinity_far() {
    const ZONE: &str = "topology.kubernetes.io/zone";
    let mut c = Cache::new();
    for (n, z) in [("a1", "a"), ("b1", "b")] {
        c.set_node(node(
            n,
            "8",
            "8Gi",
            json!({"metadata": {"labels": {ZONE: z}}}),
        ));
    }
    // The db pod makes a1 the busier node: least allocated alone picks b1.
    c.assume(
        pod(
            "db",
            "2",
            "2Gi",
            json!({"metadata": {"labels": {"app": "db"}}}),
        ),
        "a1",
    );
    let prefer = |kind: &str| {
        pod(
            "web",
            "",
            "",
            json!({"spec": {"affinity": {kind: {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}},
                    "topologyKey": ZONE}}]}}}}),
        )
    };
    for _ in 0..5 {
        assert_eq!(
            schedule_one(&mut c, &prefer("podAffinity")).expect("fits"),
            "a1"
        );
        assert_eq!(
            schedule_one(&mut c, &prefer("podAntiAffinity")).expect("fits"),
            "b1"
        );
    }
}
