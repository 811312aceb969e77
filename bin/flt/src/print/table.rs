//! `kubectl get` tables: the columns kubectl prints for each kind.

use chrono::{DateTime, Utc};
use serde_json::Value;

mod apps;

use super::tabwriter::tabwrite;
use super::util::{
    age, age_at, at, flag, format_label_selector, format_labels, human_duration, int,
    join_host_port, kind_info, list, one_line, or, parse_time, scalar, scalar_at, string_map, text,
};

/// How `flt get` prints a table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableOpts {
    /// `-o wide`: the kind's extra columns.
    pub wide: bool,
    /// `-A`: a NAMESPACE column first (for namespaced kinds).
    pub all_namespaces: bool,
    /// `--no-headers`: leave the header row out.
    pub no_headers: bool,
    /// Prefix names with "kind/" ("deployment.apps/web"), as kubectl does
    /// when one `get` prints several kinds.
    pub show_kind: bool,
    /// `--show-labels`: a LABELS column last.
    pub show_labels: bool,
}

/// The width of a load balancer address list before kubectl cuts it short.
const LOAD_BALANCER_WIDTH: usize = 16;

/// The kind's canonical name ("Pod"), or the name as given for an unknown kind.
fn canonical(kind: &str) -> &str {
    kind_info(kind).map(|k| k.kind).unwrap_or(kind)
}

/// Whether the NAMESPACE column applies: unknown kinds are taken as namespaced.
fn namespaced(kind: &str) -> bool {
    kind_info(kind).map(|k| k.namespaced).unwrap_or(true)
}

/// The kind's own columns, after NAMESPACE and before LABELS.
fn columns(kind: &str, wide: bool) -> Vec<&'static str> {
    let (base, extra): (&[&str], &[&str]) = match canonical(kind) {
        "Pod" => (
            &["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            &["IP", "NODE", "NOMINATED NODE"],
        ),
        "Deployment" => (
            &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        "ReplicaSet" | "ReplicationController" => (
            &["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        "Job" => (
            &["NAME", "COMPLETIONS", "DURATION", "AGE"],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        "CronJob" => (
            &[
                "NAME",
                "SCHEDULE",
                "TIMEZONE",
                "SUSPEND",
                "ACTIVE",
                "LAST SCHEDULE",
                "AGE",
            ],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        "DaemonSet" => (
            &[
                "NAME",
                "DESIRED",
                "CURRENT",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "NODE SELECTOR",
                "AGE",
            ],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        "Service" => (
            &[
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
            ],
            &["SELECTOR"],
        ),
        "Endpoints" => (&["NAME", "ENDPOINTS", "AGE"], &[]),
        "EndpointSlice" => (&["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"], &[]),
        "Ingress" => (&["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"], &[]),
        "IngressClass" => (&["NAME", "CONTROLLER", "PARAMETERS", "AGE"], &[]),
        "Node" => (
            &["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
            &[
                "INTERNAL-IP",
                "EXTERNAL-IP",
                "OS-IMAGE",
                "KERNEL-VERSION",
                "CONTAINER-RUNTIME",
            ],
        ),
        "NodePool" => (
            &["NAME", "NODES", "READY", "MIN", "MAX", "MACHINE", "AGE"],
            &[],
        ),
        "Namespace" => (&["NAME", "STATUS", "AGE"], &[]),
        "ConfigMap" => (&["NAME", "DATA", "AGE"], &[]),
        "Secret" => (&["NAME", "TYPE", "DATA", "AGE"], &[]),
        "Event" if wide => (
            &[
                "LAST SEEN",
                "TYPE",
                "REASON",
                "OBJECT",
                "SUBOBJECT",
                "SOURCE",
                "MESSAGE",
                "FIRST SEEN",
                "COUNT",
                "NAME",
            ],
            &[],
        ),
        "Event" => (&["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], &[]),
        _ => (&["NAME", "AGE"], &[]),
    };
    let mut cols = base.to_vec();
    if wide {
        cols.extend_from_slice(extra);
    }
    cols
}

/// The header cells of a `get` table for `kind`.
pub fn header(kind: &str, opts: &TableOpts) -> Vec<String> {
    let mut cells = Vec::new();
    if opts.all_namespaces && namespaced(kind) {
        cells.push("NAMESPACE".to_string());
    }
    cells.extend(columns(kind, opts.wide).into_iter().map(String::from));
    if opts.show_labels {
        cells.push("LABELS".to_string());
    }
    cells
}

/// The cells of one object's row, matching [`header`].
pub fn row(kind: &str, item: &Value, opts: &TableOpts, now: DateTime<Utc>) -> Vec<String> {
    let mut cells = Vec::new();
    if opts.all_namespaces && namespaced(kind) {
        cells.push(text(item, &["metadata", "namespace"]).to_string());
    }
    let mut name = text(item, &["metadata", "name"]).to_string();
    if opts.show_kind {
        name = format!("{}/{name}", qualified_kind(kind, item));
    }
    let wide = opts.wide;
    let own = match canonical(kind) {
        "Pod" => pod_row(name, item, wide, now),
        "Deployment" => deployment_row(name, item, wide, now),
        "ReplicaSet" | "ReplicationController" => replica_set_row(name, item, wide, now),
        "Job" => job_row(name, item, wide, now),
        "CronJob" => apps::cron_job_row(name, item, wide, now),
        "DaemonSet" => apps::daemon_set_row(name, item, wide, now),
        "Service" => service_row(name, item, wide, now),
        "Endpoints" => vec![name, format_endpoints(item), created(item, now)],
        "EndpointSlice" => vec![
            name,
            text(item, &["addressType"]).to_string(),
            slice_ports(item),
            slice_endpoints(item),
            created(item, now),
        ],
        "Ingress" => ingress_row(name, item, wide, now),
        "IngressClass" => {
            // kubectl: PARAMETERS is "<apiGroup>/<kind>/<name>" or <none>.
            let p = &item["spec"]["parameters"];
            let params = if p.is_object() {
                let group = or(text(p, &["apiGroup"]), "");
                let kind = text(p, &["kind"]);
                let pname = text(p, &["name"]);
                if group.is_empty() {
                    format!("{kind}/{pname}")
                } else {
                    format!("{group}/{kind}/{pname}")
                }
            } else {
                "<none>".to_string()
            };
            vec![
                name,
                text(item, &["spec", "controller"]).to_string(),
                params,
                created(item, now),
            ]
        }
        "Node" => node_row(name, item, wide, now),
        "NodePool" => node_pool_row(name, item, now),
        "Namespace" => vec![
            name,
            or(text(item, &["status", "phase"]), "Active"),
            created(item, now),
        ],
        "ConfigMap" => {
            let n = key_count(item, &["data"]) + key_count(item, &["binaryData"]);
            vec![name, n.to_string(), created(item, now)]
        }
        "Secret" => secret_row(name, item, now),
        "Event" => event_row(name, item, wide, now),
        _ => vec![name, created(item, now)],
    };
    cells.extend(own);
    if opts.show_labels {
        cells.push(format_labels(&string_map(item, &["metadata", "labels"])));
    }
    cells
}

/// A `kubectl get` table of `items` of one kind: header (unless
/// `no_headers`) and one row per item, aligned by [`align`].
pub fn table(kind: &str, items: &[Value], opts: &TableOpts, now: DateTime<Utc>) -> String {
    let mut rows = Vec::with_capacity(items.len() + 1);
    if !opts.no_headers {
        rows.push(header(kind, opts));
    }
    rows.extend(items.iter().map(|item| row(kind, item, opts, now)));
    align(&rows)
}

/// Align rows of cells the way kubectl's table printer does (Go tabwriter,
/// minimum width 6, padding 3): each column as wide as its widest cell plus
/// three spaces, the last column unpadded, each row ending in a newline.
/// Tabs and newlines inside cells are printed as spaces.
pub fn align(rows: &[Vec<String>]) -> String {
    let mut text = String::new();
    for r in rows {
        let cells: Vec<String> = r.iter().map(|c| one_line(c)).collect();
        text.push_str(&cells.join("\t"));
        text.push('\n');
    }
    tabwrite(&text, 6, 3)
}

/// The lower-case, group-qualified kind kubectl prefixes names with:
/// "pod", "deployment.apps", "nodepool.flotilla.dev". The group comes from
/// the item's apiVersion, or from the kind table.
pub(crate) fn qualified_kind(kind: &str, item: &Value) -> String {
    let info = kind_info(kind);
    let name = info.map(|k| k.kind).unwrap_or(kind).to_ascii_lowercase();
    let api_version = text(item, &["apiVersion"]);
    let group = match api_version.split_once('/') {
        Some((group, _)) => group,
        None if api_version.is_empty() => info.map(|k| k.group).unwrap_or(""),
        None => "",
    };
    if group.is_empty() {
        name
    } else {
        format!("{name}.{group}")
    }
}

/// AGE: the time since metadata.creationTimestamp.
fn created(item: &Value, now: DateTime<Utc>) -> String {
    age_at(item, &["metadata", "creationTimestamp"], now)
}

/// The number of keys of the object at `path`.
fn key_count(item: &Value, path: &[&str]) -> usize {
    at(item, path)
        .and_then(Value::as_object)
        .map(|m| m.len())
        .unwrap_or(0)
}

/// The condition of `type_` in the list at `path`.
pub(crate) fn condition<'a>(item: &'a Value, path: &[&str], type_: &str) -> Option<&'a Value> {
    list(item, path)
        .iter()
        .find(|c| text(c, &["type"]) == type_)
}

/// Whether the condition of `type_` at `path` has status "True".
fn condition_true(item: &Value, path: &[&str], type_: &str) -> bool {
    condition(item, path, type_).is_some_and(|c| text(c, &["status"]) == "True")
}

/// What a Pod row shows: ready containers, total containers, the STATUS
/// reason and the RESTARTS cell, following kubectl's `printPod`.
pub(crate) struct PodSummary {
    /// Containers that are ready and running.
    pub ready: usize,
    /// spec.containers.
    pub total: usize,
    /// The STATUS column.
    pub status: String,
    /// The RESTARTS column: "3", or "3 (5m ago)" when the last restart time
    /// is known.
    pub restarts: String,
}

/// Keep in `latest` the later of it and the container's last termination.
fn note_restart(latest: &mut Option<DateTime<Utc>>, status: &Value) {
    if let Some(t) = parse_time(text(status, &["lastState", "terminated", "finishedAt"])) {
        *latest = Some(latest.map_or(t, |l| l.max(t)));
    }
}

/// kubectl's `printPod` logic for READY, STATUS and RESTARTS.
pub(crate) fn pod_summary(pod: &Value, now: DateTime<Utc>) -> PodSummary {
    let phase = or(text(pod, &["status", "phase"]), "Pending");
    let status_reason = text(pod, &["status", "reason"]);
    let mut reason = if status_reason.is_empty() {
        phase.clone()
    } else {
        status_reason.to_string()
    };
    let conditions = ["status", "conditions"];
    if list(pod, &conditions)
        .iter()
        .any(|c| text(c, &["type"]) == "PodScheduled" && text(c, &["reason"]) == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }

    let total = list(pod, &["spec", "containers"]).len();
    let init_total = list(pod, &["spec", "initContainers"]).len();
    let mut ready = 0;
    let mut restarts: i64 = 0;
    let mut last_restart: Option<DateTime<Utc>> = None;

    let mut initializing = false;
    for (i, c) in list(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        restarts += int(c, &["restartCount"]).unwrap_or(0);
        note_restart(&mut last_restart, c);
        let terminated = at(c, &["state", "terminated"]);
        let waiting_reason = text(c, &["state", "waiting", "reason"]);
        match terminated {
            Some(t) if int(t, &["exitCode"]).unwrap_or(0) == 0 => continue,
            Some(t) => {
                let r = text(t, &["reason"]);
                reason = if !r.is_empty() {
                    format!("Init:{r}")
                } else if int(t, &["signal"]).unwrap_or(0) != 0 {
                    format!("Init:Signal:{}", int(t, &["signal"]).unwrap_or(0))
                } else {
                    format!("Init:ExitCode:{}", int(t, &["exitCode"]).unwrap_or(0))
                };
            }
            None if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" => {
                reason = format!("Init:{waiting_reason}");
            }
            None => reason = format!("Init:{i}/{init_total}"),
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(pod, &conditions, "Initialized") {
        // kubectl counts only the main containers' restarts from here on.
        restarts = 0;
        last_restart = None;
        let mut has_running = false;
        for c in list(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += int(c, &["restartCount"]).unwrap_or(0);
            note_restart(&mut last_restart, c);
            let waiting_reason = text(c, &["state", "waiting", "reason"]);
            let terminated = at(c, &["state", "terminated"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                let r = text(t, &["reason"]);
                reason = if !r.is_empty() {
                    r.to_string()
                } else if int(t, &["signal"]).unwrap_or(0) != 0 {
                    format!("Signal:{}", int(t, &["signal"]).unwrap_or(0))
                } else {
                    format!("ExitCode:{}", int(t, &["exitCode"]).unwrap_or(0))
                };
            } else if flag(c, &["ready"]) && at(c, &["state", "running"]).is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(pod, &conditions, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    let deleting = !text(pod, &["metadata", "deletionTimestamp"]).is_empty();
    if deleting && status_reason == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts = match last_restart {
        Some(t) if restarts != 0 => {
            format!(
                "{restarts} ({} ago)",
                human_duration(now.signed_duration_since(t))
            )
        }
        _ => restarts.to_string(),
    };
    PodSummary {
        ready,
        total,
        status: reason,
        restarts,
    }
}

/// NAME READY STATUS RESTARTS AGE (+ IP NODE).
fn pod_row(name: String, pod: &Value, wide: bool, now: DateTime<Utc>) -> Vec<String> {
    let s = pod_summary(pod, now);
    let mut cells = vec![
        name,
        format!("{}/{}", s.ready, s.total),
        s.status,
        s.restarts,
        created(pod, now),
    ];
    if wide {
        cells.push(or(text(pod, &["status", "podIP"]), "<none>"));
        cells.push(or(text(pod, &["spec", "nodeName"]), "<none>"));
        cells.push(or(text(pod, &["status", "nominatedNodeName"]), "<none>"));
    }
    cells
}

/// CONTAINERS and IMAGES of a pod template: names and images joined by ",".
fn containers_and_images(item: &Value) -> (String, String) {
    let containers = list(item, &["spec", "template", "spec", "containers"]);
    let names: Vec<&str> = containers.iter().map(|c| text(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

/// spec.replicas, defaulted to 1 as the API server does.
fn desired_replicas(item: &Value) -> i64 {
    int(item, &["spec", "replicas"]).unwrap_or(1)
}

/// A status counter, 0 when absent.
fn status_count(item: &Value, field: &str) -> i64 {
    int(item, &["status", field]).unwrap_or(0)
}

/// NAME READY UP-TO-DATE AVAILABLE AGE (+ CONTAINERS IMAGES SELECTOR).
fn deployment_row(name: String, d: &Value, wide: bool, now: DateTime<Utc>) -> Vec<String> {
    let mut cells = vec![
        name,
        format!(
            "{}/{}",
            status_count(d, "readyReplicas"),
            desired_replicas(d)
        ),
        status_count(d, "updatedReplicas").to_string(),
        status_count(d, "availableReplicas").to_string(),
        created(d, now),
    ];
    if wide {
        let (containers, images) = containers_and_images(d);
        cells.extend([
            containers,
            images,
            format_label_selector(at(d, &["spec", "selector"])),
        ]);
    }
    cells
}

/// NAME DESIRED CURRENT READY AGE (+ CONTAINERS IMAGES SELECTOR), for
/// ReplicaSets (a LabelSelector) and ReplicationControllers (a plain map).
fn replica_set_row(name: String, rs: &Value, wide: bool, now: DateTime<Utc>) -> Vec<String> {
    let mut cells = vec![
        name,
        desired_replicas(rs).to_string(),
        status_count(rs, "replicas").to_string(),
        status_count(rs, "readyReplicas").to_string(),
        created(rs, now),
    ];
    if wide {
        let (containers, images) = containers_and_images(rs);
        cells.extend([containers, images, selector_of(rs)]);
    }
    cells
}

/// spec.selector formatted: a LabelSelector (matchLabels/matchExpressions)
/// or, for ReplicationControllers and Services, a plain label map.
fn selector_of(item: &Value) -> String {
    let sel = at(item, &["spec", "selector"]);
    let is_label_selector = sel
        .and_then(Value::as_object)
        .is_some_and(|m| m.contains_key("matchLabels") || m.contains_key("matchExpressions"));
    if is_label_selector {
        format_label_selector(sel)
    } else {
        format_labels(&string_map(item, &["spec", "selector"]))
    }
}

/// NAME COMPLETIONS DURATION AGE (+ CONTAINERS IMAGES SELECTOR).
fn job_row(name: String, job: &Value, wide: bool, now: DateTime<Utc>) -> Vec<String> {
    let succeeded = status_count(job, "succeeded");
    let completions = match (
        int(job, &["spec", "completions"]),
        int(job, &["spec", "parallelism"]),
    ) {
        (Some(c), _) => format!("{succeeded}/{c}"),
        (None, Some(p)) if p > 1 => format!("{succeeded}/1 of {p}"),
        _ => format!("{succeeded}/1"),
    };
    let start = parse_time(text(job, &["status", "startTime"]));
    let end = parse_time(text(job, &["status", "completionTime"]));
    let duration = match (start, end) {
        (None, _) => String::new(),
        (Some(s), None) => human_duration(now.signed_duration_since(s)),
        (Some(s), Some(e)) => human_duration(e.signed_duration_since(s)),
    };
    let mut cells = vec![name, completions, duration, created(job, now)];
    if wide {
        let (containers, images) = containers_and_images(job);
        cells.extend([
            containers,
            images,
            format_label_selector(at(job, &["spec", "selector"])),
        ]);
    }
    cells
}

/// Load balancer ingress points (IP, else hostname), sorted and joined by
/// ","; cut to 13 characters and "..." when not wide and longer than 16.
fn load_balancer_status(item: &Value, wide: bool) -> String {
    let mut points: Vec<String> = list(item, &["status", "loadBalancer", "ingress"])
        .iter()
        .map(|i| or(text(i, &["ip"]), text(i, &["hostname"])))
        .filter(|p| !p.is_empty())
        .collect();
    points.sort();
    points.dedup();
    let joined = points.join(",");
    if !wide && joined.chars().count() > LOAD_BALANCER_WIDTH {
        let cut: String = joined.chars().take(LOAD_BALANCER_WIDTH - 3).collect();
        return format!("{cut}...");
    }
    joined
}

/// spec.type, defaulted to ClusterIP.
pub(crate) fn service_type(svc: &Value) -> String {
    or(text(svc, &["spec", "type"]), "ClusterIP")
}

/// EXTERNAL-IP, following kubectl's `getServiceExternalIP`.
fn service_external_ip(svc: &Value, wide: bool) -> String {
    let external: Vec<String> = list(svc, &["spec", "externalIPs"])
        .iter()
        .map(scalar)
        .collect();
    match service_type(svc).as_str() {
        "ClusterIP" | "NodePort" => or(external.join(","), "<none>"),
        "LoadBalancer" => {
            let lb = load_balancer_status(svc, wide);
            if !external.is_empty() {
                let mut all: Vec<String> = if lb.is_empty() {
                    Vec::new()
                } else {
                    lb.split(',').map(String::from).collect()
                };
                all.extend(external);
                return all.join(",");
            }
            or(lb, "<pending>")
        }
        "ExternalName" => text(svc, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// PORT(S): "80/TCP", "80:30080/TCP", joined by ","; "<none>" without ports.
fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = list(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = scalar_at(p, &["port"]);
            let protocol = or(text(p, &["protocol"]), "TCP");
            match int(p, &["nodePort"]).filter(|n| *n != 0) {
                Some(node_port) => format!("{port}:{node_port}/{protocol}"),
                None => format!("{port}/{protocol}"),
            }
        })
        .collect();
    or(ports.join(","), "<none>")
}

/// NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE (+ SELECTOR).
fn service_row(name: String, svc: &Value, wide: bool, now: DateTime<Utc>) -> Vec<String> {
    let cluster_ip = list(svc, &["spec", "clusterIPs"])
        .first()
        .map(scalar)
        .unwrap_or_else(|| text(svc, &["spec", "clusterIP"]).to_string());
    let mut cells = vec![
        name,
        service_type(svc),
        or(cluster_ip, "<none>"),
        service_external_ip(svc, wide),
        service_ports(svc),
        created(svc, now),
    ];
    if wide {
        cells.push(format_labels(&string_map(svc, &["spec", "selector"])));
    }
    cells
}

/// ENDPOINTS, following kubectl's `formatEndpoints`: "ip:port" for every
/// address and port (bare IPs for a subset without ports), at most three,
/// then " + N more..."; "<none>" without subsets.
/// An EndpointSlice's port numbers, as kubectl prints them.
fn slice_ports(s: &Value) -> String {
    let ports = list(s, &["ports"]);
    if ports.is_empty() {
        return "<unset>".to_string();
    }
    ports
        .iter()
        .map(|p| match p.get("port") {
            Some(Value::Number(n)) => n.to_string(),
            _ => "<unset>".to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// An EndpointSlice's first three addresses, then how many more.
fn slice_endpoints(s: &Value) -> String {
    const MAX: usize = 3;
    let all: Vec<&str> = list(s, &["endpoints"])
        .iter()
        .flat_map(|e| {
            list(e, &["addresses"])
                .iter()
                .map(|a| a.as_str().unwrap_or(""))
        })
        .collect();
    if all.is_empty() {
        return "<unset>".to_string();
    }
    let shown = all[..all.len().min(MAX)].join(",");
    if all.len() > MAX {
        format!("{shown} + {} more...", all.len() - MAX)
    } else {
        shown
    }
}

fn format_endpoints(ep: &Value) -> String {
    let subsets = list(ep, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut shown: Vec<String> = Vec::new();
    let mut count = 0;
    let mut more = false;
    for ss in subsets {
        let addresses = list(ss, &["addresses"]);
        let ports = list(ss, &["ports"]);
        let port_numbers: Vec<Option<String>> = if ports.is_empty() {
            vec![None]
        } else {
            ports
                .iter()
                .map(|p| Some(scalar_at(p, &["port"])))
                .collect()
        };
        for port in port_numbers {
            count += addresses.len();
            for a in addresses {
                if shown.len() == MAX {
                    more = true;
                    break;
                }
                let ip = text(a, &["ip"]);
                shown.push(match &port {
                    Some(p) => join_host_port(ip, p),
                    None => ip.to_string(),
                });
            }
        }
    }
    let joined = shown.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

/// NAME CLASS HOSTS ADDRESS PORTS AGE, following kubectl's `printIngress`.
fn ingress_row(name: String, ing: &Value, wide: bool, now: DateTime<Utc>) -> Vec<String> {
    let rules = list(ing, &["spec", "rules"]);
    const MAX: usize = 3;
    let hosts: Vec<&str> = rules
        .iter()
        .take(MAX)
        .map(|r| text(r, &["host"]))
        .filter(|h| !h.is_empty())
        .collect();
    let hosts = if hosts.is_empty() {
        "*".to_string()
    } else if rules.len() > MAX {
        format!("{} + {} more...", hosts.join(","), rules.len() - MAX)
    } else {
        hosts.join(",")
    };
    let ports = if list(ing, &["spec", "tls"]).is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name,
        or(text(ing, &["spec", "ingressClassName"]), "<none>"),
        hosts,
        load_balancer_status(ing, wide),
        ports.to_string(),
        created(ing, now),
    ]
}

/// The node's roles from `node-role.kubernetes.io/ROLE` labels and the
/// `kubernetes.io/role` label, sorted and deduplicated.
pub(crate) fn node_roles(node: &Value) -> Vec<String> {
    let mut roles: Vec<String> = string_map(node, &["metadata", "labels"])
        .into_iter()
        .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
            Some(role) if !role.is_empty() => Some(role.to_string()),
            Some(_) => None,
            None if k == "kubernetes.io/role" && !v.is_empty() => Some(v),
            None => None,
        })
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

/// The first address of `type_` in status.addresses, "<none>" when absent.
fn node_address(node: &Value, type_: &str) -> String {
    list(node, &["status", "addresses"])
        .iter()
        .find(|a| text(a, &["type"]) == type_)
        .map(|a| text(a, &["address"]).to_string())
        .unwrap_or_else(|| "<none>".to_string())
}

/// NAME STATUS ROLES AGE VERSION (+ INTERNAL-IP EXTERNAL-IP OS-IMAGE
/// KERNEL-VERSION CONTAINER-RUNTIME), following kubectl's `printNode`.
fn node_row(name: String, node: &Value, wide: bool, now: DateTime<Utc>) -> Vec<String> {
    let mut status = match condition(node, &["status", "conditions"], "Ready") {
        Some(c) if text(c, &["status"]) == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if flag(node, &["spec", "unschedulable"]) {
        status.push_str(",SchedulingDisabled");
    }
    let info = |field: &str| text(node, &["status", "nodeInfo", field]).to_string();
    let mut cells = vec![
        name,
        status,
        or(node_roles(node).join(","), "<none>"),
        created(node, now),
        info("kubeletVersion"),
    ];
    if wide {
        cells.extend([
            node_address(node, "InternalIP"),
            node_address(node, "ExternalIP"),
            or(info("osImage"), "<unknown>"),
            or(info("kernelVersion"), "<unknown>"),
            or(info("containerRuntimeVersion"), "<unknown>"),
        ]);
    }
    cells
}

/// MACHINE of a NodePool: "4cpu/8Gi", one part alone when the other is
/// unset, "<none>" without a machine.
pub(crate) fn machine(pool: &Value) -> String {
    let cpu = scalar_at(pool, &["spec", "machine", "cpu"]);
    let memory = scalar_at(pool, &["spec", "machine", "memory"]);
    match (cpu.is_empty(), memory.is_empty()) {
        (false, false) => format!("{cpu}cpu/{memory}"),
        (false, true) => format!("{cpu}cpu"),
        (true, false) => memory,
        (true, true) => "<none>".to_string(),
    }
}

/// NAME NODES READY MIN MAX MACHINE AGE.
fn node_pool_row(name: String, pool: &Value, now: DateTime<Utc>) -> Vec<String> {
    vec![
        name,
        status_count(pool, "nodes").to_string(),
        status_count(pool, "readyNodes").to_string(),
        int(pool, &["spec", "minSize"]).unwrap_or(0).to_string(),
        int(pool, &["spec", "maxSize"])
            .map(|n| n.to_string())
            .unwrap_or_else(|| "<none>".to_string()),
        machine(pool),
        created(pool, now),
    ]
}

/// NAME TYPE DATA AGE; DATA counts the keys of data and stringData.
fn secret_row(name: String, secret: &Value, now: DateTime<Utc>) -> Vec<String> {
    let mut keys: Vec<String> = ["data", "stringData"]
        .iter()
        .flat_map(|f| string_map(secret, &[f]).into_iter().map(|(k, _)| k))
        .collect();
    keys.sort();
    keys.dedup();
    vec![
        name,
        or(text(secret, &["type"]), "Opaque"),
        keys.len().to_string(),
        created(secret, now),
    ]
}

/// An event's source: component (or reportingController), then ", host"
/// (or reportingInstance) when known.
pub(crate) fn event_source(ev: &Value) -> String {
    let component = or(
        text(ev, &["source", "component"]),
        text(ev, &["reportingController"]),
    );
    let instance = or(
        text(ev, &["source", "host"]),
        text(ev, &["reportingInstance"]),
    );
    if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    }
}

/// The timestamp an event was first seen: firstTimestamp, else eventTime.
pub(crate) fn event_first_seen(ev: &Value) -> Option<&str> {
    [&["firstTimestamp"][..], &["eventTime"]]
        .into_iter()
        .map(|p| text(ev, p))
        .find(|s| !s.is_empty())
}

/// LAST SEEN TYPE REASON OBJECT MESSAGE; wide: LAST SEEN TYPE REASON OBJECT
/// SUBOBJECT SOURCE MESSAGE FIRST SEEN COUNT NAME, following kubectl's
/// `printEvent`.
fn event_row(name: String, ev: &Value, wide: bool, now: DateTime<Utc>) -> Vec<String> {
    let first = age(event_first_seen(ev), now);
    let series_last = text(ev, &["series", "lastObservedTime"]);
    let (last, count) = if at(ev, &["series"]).is_some_and(Value::is_object) {
        (
            age(Some(series_last), now),
            int(ev, &["series", "count"]).unwrap_or(0),
        )
    } else {
        let last = text(ev, &["lastTimestamp"]);
        let last = if last.is_empty() {
            first.clone()
        } else {
            age(Some(last), now)
        };
        (last, int(ev, &["count"]).filter(|c| *c != 0).unwrap_or(1))
    };
    let kind = text(ev, &["involvedObject", "kind"]).to_ascii_lowercase();
    let object_name = text(ev, &["involvedObject", "name"]);
    let object = if object_name.is_empty() {
        kind
    } else {
        format!("{kind}/{object_name}")
    };
    let message = text(ev, &["message"]).trim().to_string();
    let type_ = text(ev, &["type"]).to_string();
    let reason = text(ev, &["reason"]).to_string();
    if wide {
        vec![
            last,
            type_,
            reason,
            object,
            text(ev, &["involvedObject", "fieldPath"]).to_string(),
            event_source(ev),
            message,
            first,
            count.to_string(),
            name,
        ]
    } else {
        vec![last, type_, reason, object, message]
    }
}
