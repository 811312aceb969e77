//! The decisions as pure functions: which pool grows and by how much, which
//! node is unneeded and what keeps the others.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use flotilla_objects::core::{Node, Pod};
use flotilla_objects::nodepool::NodePool;
use rand::SeedableRng;
use serde_json::{json, Value};

use crate::scaledown::{find_unneeded, pod_blocker, Blocker, Candidate, Verdict};
use crate::scaleup::{plan, Expander, PoolCandidate, ScaleUpPlan};
use crate::simulate::Snapshot;
use crate::template::{template, NoTemplate};

fn node(name: &str, pool: &str, cpu: &str, mem: &str) -> Arc<Node> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"flotilla.dev/nodepool": pool}},
            "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("node"),
    )
}

fn pod_with(name: &str, cpu: &str, node: &str, extra: Value) -> Arc<Pod> {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "default",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                "uid": "rs-uid", "controller": true}]},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]},
    });
    merge(&mut v, extra);
    Arc::new(serde_json::from_value(v).expect("pod"))
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn pod(name: &str, cpu: &str, node: &str) -> Arc<Pod> {
    pod_with(name, cpu, node, json!({}))
}

fn pending(name: &str, cpu: &str) -> Arc<Pod> {
    pod_with(
        name,
        cpu,
        "",
        json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}}),
    )
}

fn pool(name: &str, cpu: &str, mem: &str, max: i32, extra: Value) -> NodePool {
    let mut v = json!({"metadata": {"name": name},
        "spec": {"machine": {"cpu": cpu, "memory": mem}, "minSize": 0, "maxSize": max}});
    merge(&mut v, extra);
    serde_json::from_value(v).expect("pool")
}

fn candidate(p: &NodePool, size: i32) -> PoolCandidate {
    PoolCandidate {
        name: p.metadata.name.clone(),
        template: template(p, &format!("template-{}", p.metadata.name), &[]),
        size,
        max_size: p.spec.max_size,
        priority: p.spec.priority,
    }
}

fn up(pods: &[Arc<Pod>], nodes: &[Arc<Node>], pools: &[PoolCandidate], e: Expander) -> ScaleUpPlan {
    let all: Vec<Arc<Pod>> = pods.to_vec();
    let pend: Vec<Arc<Pod>> = all
        .iter()
        .filter(|p| crate::simulate::is_unschedulable(p))
        .cloned()
        .collect();
    let snap = Snapshot::new(nodes, &all);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    plan(&pend, &snap, Vec::new(), pools, None, e, &mut rng)
}

#[test]
fn pending_pods_are_bin_packed_on_the_fewest_new_nodes() {
    // 2-CPU machines, 5 pods of 700m: 2 per node, so 3 nodes.
    let p = pool("default", "2", "4Gi", 10, json!({}));
    let pods: Vec<_> = (0..5).map(|i| pending(&format!("p{i}"), "700m")).collect();
    let plan = up(&pods, &[], &[candidate(&p, 1)], Expander::LeastWaste);
    let c = plan.chosen.expect("a scale-up");
    assert_eq!((c.pool.as_str(), c.nodes, c.pods.len()), ("default", 3, 5));
    assert!(plan.not_helped.is_empty());
}

#[test]
fn pods_that_fit_an_existing_node_need_no_new_one() {
    let p = pool("default", "2", "4Gi", 10, json!({}));
    let nodes = [node("n1", "default", "2", "4Gi")];
    let pods = [pod("a", "500m", "n1"), pending("b", "500m")];
    let plan = up(&pods, &nodes, &[candidate(&p, 1)], Expander::LeastWaste);
    assert_eq!(plan.fits_now, vec!["default/b".to_string()]);
    assert!(plan.chosen.is_none());
}

#[test]
fn nodes_on_their_way_take_pods_before_new_ones_are_asked_for() {
    let p = pool("default", "2", "4Gi", 10, json!({}));
    let coming = template(&p, "default-abcde", &[]).expect("template");
    let pods = vec![pending("a", "700m"), pending("b", "700m")];
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let snap = Snapshot::new(&[], &pods);
    let plan = plan(
        &pods,
        &snap,
        vec![coming],
        &[candidate(&p, 1)],
        None,
        Expander::LeastWaste,
        &mut rng,
    );
    assert_eq!(plan.fits_now.len(), 2);
    assert!(plan.chosen.is_none());
}

#[test]
fn max_size_caps_the_scale_up_and_the_rest_are_told_why() {
    let p = pool("default", "1", "4Gi", 3, json!({}));
    let pods: Vec<_> = (0..4).map(|i| pending(&format!("p{i}"), "800m")).collect();
    // The pool has 2 of its 3 nodes: room for one.
    let plan = up(&pods, &[], &[candidate(&p, 2)], Expander::LeastWaste);
    let c = plan.chosen.expect("a scale-up");
    assert_eq!((c.nodes, c.pods.len()), (1, 1));
    assert_eq!(plan.not_helped.len(), 3);
    assert!(
        plan.not_helped.values().all(|w| w.contains("max size")),
        "{:?}",
        plan.not_helped
    );
    // At max size: no option at all.
    let plan = up(&pods, &[], &[candidate(&p, 3)], Expander::LeastWaste);
    assert!(plan.chosen.is_none());
    assert_eq!(plan.not_helped.len(), 4);
}

#[test]
fn the_cluster_max_total_caps_every_pool() {
    let p = pool("default", "1", "4Gi", 10, json!({}));
    let pods: Vec<_> = (0..3).map(|i| pending(&format!("p{i}"), "800m")).collect();
    let snap = Snapshot::new(&[], &pods);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let plan = plan(
        &pods,
        &snap,
        Vec::new(),
        &[candidate(&p, 0)],
        Some(2),
        Expander::LeastWaste,
        &mut rng,
    );
    assert_eq!(plan.chosen.expect("scale-up").nodes, 2);
    assert!(plan
        .not_helped
        .values()
        .all(|w| w.contains("max nodes total")));
}

#[test]
fn a_pool_whose_taint_the_pod_does_not_tolerate_does_not_help_and_says_so() {
    let gpu = pool(
        "gpu",
        "8",
        "32Gi",
        5,
        json!({"spec": {"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]}}),
    );
    let plan = up(
        &[pending("a", "1")],
        &[],
        &[candidate(&gpu, 0)],
        Expander::LeastWaste,
    );
    assert!(plan.chosen.is_none());
    let why = &plan.not_helped["default/a"];
    assert!(
        why.contains("pool gpu") && why.contains("untolerated taint"),
        "{why}"
    );
}

#[test]
fn a_pod_too_big_for_every_machine_triggers_nothing() {
    let p = pool("default", "2", "4Gi", 10, json!({}));
    let plan = up(
        &[pending("a", "3")],
        &[],
        &[candidate(&p, 0)],
        Expander::LeastWaste,
    );
    assert!(plan.chosen.is_none());
    assert!(plan.not_helped["default/a"].contains("Insufficient cpu"));
}

#[test]
fn expanders_choose_least_waste_most_pods_or_priority() {
    let small = pool("small", "1", "2Gi", 10, json!({}));
    let big = pool("big", "16", "64Gi", 10, json!({"spec": {"priority": 10}}));
    // Max 1 small node: it takes 1 pod of 2 with little waste; a big node
    // takes both with much waste.
    let mut small_c = candidate(&small, 9);
    small_c.max_size = 10;
    let pods = [pending("a", "900m"), pending("b", "900m")];
    let pools = [small_c, candidate(&big, 0)];
    let lw = up(&pods, &[], &pools, Expander::LeastWaste)
        .chosen
        .expect("lw");
    assert_eq!(lw.pool, "small");
    let mp = up(&pods, &[], &pools, Expander::MostPods)
        .chosen
        .expect("mp");
    assert_eq!(mp.pool, "big");
    let pr = up(&pods, &[], &pools, Expander::Priority)
        .chosen
        .expect("pr");
    assert_eq!(pr.pool, "big");
    let r = up(&pods, &[], &pools, Expander::Random)
        .chosen
        .expect("random");
    assert!(r.pool == "big" || r.pool == "small");
}

#[test]
fn a_pool_without_a_shape_copies_a_node_of_its_own_or_has_no_template() {
    let p = pool("default", "", "", 3, json!({}));
    assert_eq!(
        template(&p, "t", &[]).unwrap_err(),
        NoTemplate("default".into())
    );
    let t = template(&p, "t", &[node("n1", "default", "3", "5Gi")]).expect("template");
    let a = &t.status.as_ref().expect("status").allocatable;
    assert_eq!((a["cpu"].as_str(), a["memory"].as_str()), ("3", "5Gi"));
    assert_eq!(t.metadata.labels["flotilla.dev/nodepool"], "default");
}

fn down(nodes: &[Arc<Node>], pods: &[Arc<Pod>], min_room: i32) -> BTreeMap<String, Verdict> {
    let snap = Snapshot::new(nodes, pods);
    let cands: Vec<Candidate> = nodes
        .iter()
        .map(|n| Candidate {
            node: n.metadata.name.clone(),
            pool: "default".into(),
        })
        .collect();
    let mut room = BTreeMap::from([("default".to_string(), min_room)]);
    find_unneeded(&snap, &cands, &BTreeSet::new(), &mut room, 0.5)
}

fn kept(v: &BTreeMap<String, Verdict>, node: &str) -> String {
    match &v[node] {
        Verdict::Kept(w) => w.clone(),
        other => panic!("{node}: {other:?}"),
    }
}

#[test]
fn an_idle_node_whose_pods_fit_elsewhere_is_unneeded_and_a_busy_one_is_not() {
    let nodes = [
        node("n1", "default", "2", "4Gi"),
        node("n2", "default", "2", "4Gi"),
    ];
    let pods = [pod("a", "1200m", "n1"), pod("b", "300m", "n2")];
    let v = down(&nodes, &pods, 5);
    assert_eq!(v["n2"], Verdict::Unneeded);
    assert!(matches!(v["n1"], Verdict::Busy { cpu, .. } if (cpu - 0.6).abs() < 1e-9));
}

#[test]
fn memory_alone_above_the_threshold_keeps_a_node() {
    let nodes = [
        node("n1", "default", "2", "4Gi"),
        node("n2", "default", "2", "4Gi"),
    ];
    // 10% of n1's CPU but 75% of its memory: busy. n2 is idle on both.
    let big = pod_with(
        "a",
        "200m",
        "n1",
        json!({"spec": {"containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"cpu": "200m", "memory": "3Gi"}}}]}}),
    );
    let v = down(&nodes, &[big, pod("b", "200m", "n2")], 5);
    assert!(
        matches!(v["n1"], Verdict::Busy { cpu, memory } if (cpu - 0.1).abs() < 1e-9 && (memory - 0.75).abs() < 1e-9),
        "{:?}",
        v["n1"]
    );
    assert_eq!(v["n2"], Verdict::Unneeded);
}

#[test]
fn of_two_idle_nodes_only_one_goes_when_their_pods_fit_only_once() {
    let nodes = [
        node("n1", "default", "2", "4Gi"),
        node("n2", "default", "2", "4Gi"),
    ];
    let pods = [pod("a", "900m", "n1"), pod("b", "800m", "n2")];
    let v = down(&nodes, &pods, 5);
    // n2 (emptier) goes; its pod moves to n1, which then has no room to move.
    assert_eq!(v["n2"], Verdict::Unneeded);
    assert!(kept(&v, "n1").contains("fits no other node"), "{:?}", v);
}

#[test]
fn the_min_size_keeps_a_node() {
    let nodes = [
        node("n1", "default", "2", "4Gi"),
        node("n2", "default", "2", "4Gi"),
    ];
    let v = down(&nodes, &[], 1);
    let unneeded = v.values().filter(|x| **x == Verdict::Unneeded).count();
    assert_eq!(unneeded, 1);
    assert!(v
        .values()
        .any(|x| matches!(x, Verdict::Kept(w) if w.contains("min size"))));
}

#[test]
fn each_blocker_keeps_its_node() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "bare",
            json!({"metadata": {"ownerReferences": []}}),
            "not replicated",
        ),
        (
            "disk",
            json!({"spec": {"volumes": [{"name": "scratch", "emptyDir": {}}]}}),
            "local storage",
        ),
        (
            "host",
            json!({"spec": {"volumes": [{"name": "h", "hostPath": {"path": "/var"}}]}}),
            "local storage",
        ),
        (
            "static",
            json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}}}),
            "static pod",
        ),
        (
            "pinned",
            json!({"metadata": {"annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}}}),
            "safe-to-evict=false",
        ),
    ];
    for (name, extra, want) in cases {
        let nodes = [
            node("n1", "default", "2", "4Gi"),
            node("n2", "default", "2", "4Gi"),
        ];
        let pods = [
            pod("big", "900m", "n1"),
            pod_with(name, "100m", "n2", extra),
        ];
        let v = down(&nodes, &pods, 5);
        let why = kept(&v, "n2");
        assert!(why.contains(want) && why.contains(name), "{name}: {why}");
    }
}

#[test]
fn safe_to_evict_true_memory_volumes_and_daemon_pods_do_not_block() {
    let free = json!({"metadata": {"ownerReferences": [],
        "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}}});
    assert_eq!(pod_blocker(&pod_with("a", "1m", "n", free)), None);
    let mem = json!({"spec": {"volumes": [{"name": "m", "emptyDir": {"medium": "Memory"}}]}});
    assert_eq!(pod_blocker(&pod_with("b", "1m", "n", mem)), None);
    let ds = json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1",
        "kind": "DaemonSet", "name": "d", "uid": "d", "controller": true}]}});
    let ds_pod = pod_with("c", "1500m", "n2", ds);
    assert_eq!(pod_blocker(&ds_pod), None);
    // A DaemonSet pod neither counts toward utilization nor needs a place.
    let nodes = [
        node("n1", "default", "2", "4Gi"),
        node("n2", "default", "2", "4Gi"),
    ];
    let v = down(&nodes, &[pod("big", "1500m", "n1"), ds_pod], 5);
    assert_eq!(v["n2"], Verdict::Unneeded);
    let owned_by_deployment_only = json!({"metadata": {"ownerReferences": [{"apiVersion": "v1",
        "kind": "ConfigMap", "name": "x", "uid": "x", "controller": true}]}});
    assert_eq!(
        pod_blocker(&pod_with("d", "1m", "n", owned_by_deployment_only)),
        Some(Blocker::NotReplicated)
    );
}

#[test]
fn a_pod_that_fits_no_other_node_keeps_its_node() {
    let nodes = [
        node("n1", "default", "2", "4Gi"),
        node("n2", "default", "2", "4Gi"),
    ];
    let pods = [pod("a", "1800m", "n1"), pod("b", "900m", "n2")];
    let v = down(&nodes, &pods, 5);
    let why = kept(&v, "n2");
    assert!(
        why.contains("default/b") && why.contains("Insufficient cpu"),
        "{why}"
    );
}
