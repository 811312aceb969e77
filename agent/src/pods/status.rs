//! A pod's status computed from what the runtime reports and what the pod's
//! worker remembers (why a container waits, whether it is ready): container
//! states with exit codes, reasons and restart counts, the phase, and the
//! conditions. Pure functions: the worker writes the result.

use chrono::{TimeZone, Utc};
use flotilla_objects::core::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodIp, PodStatus,
};
use flotilla_objects::Time;
use k8s_cri::v1 as cri;

/// What is known of one container of the pod.
#[derive(Debug, Clone, Default)]
pub struct ContainerView {
    /// Its latest run.
    pub latest: Option<cri::ContainerStatus>,
    /// The run before (for `lastState`).
    pub previous: Option<cri::ContainerStatus>,
    /// Why it is not running, when the worker knows (ErrImagePull,
    /// CrashLoopBackOff...).
    pub waiting: Option<(String, String)>,
    /// Whether its readiness probe passes (or it has none and runs).
    pub ready: bool,
    /// Whether its latest run exited and it will run again.
    pub will_restart: bool,
}

impl ContainerView {
    pub fn running(&self) -> bool {
        self.latest
            .as_ref()
            .is_some_and(|s| s.state == cri::ContainerState::ContainerRunning as i32)
    }

    /// The exit code of the latest run, if it exited.
    pub fn exited(&self) -> Option<i32> {
        self.latest
            .as_ref()
            .filter(|s| s.state == cri::ContainerState::ContainerExited as i32)
            .map(|s| s.exit_code)
    }
}

fn time_of(nanos: i64) -> Option<Time> {
    (nanos > 0).then(|| Time::from(Utc.timestamp_nanos(nanos)))
}

fn container_id(s: &cri::ContainerStatus) -> String {
    format!("containerd://{}", s.id)
}

fn terminated(s: &cri::ContainerStatus) -> ContainerStateTerminated {
    let reason = if !s.reason.is_empty() {
        s.reason.clone()
    } else if s.exit_code == 0 {
        "Completed".to_string()
    } else {
        "Error".to_string()
    };
    ContainerStateTerminated {
        exit_code: s.exit_code,
        signal: 0,
        reason,
        message: s.message.clone(),
        started_at: time_of(s.started_at),
        finished_at: time_of(s.finished_at),
    }
}

fn state_of(s: &cri::ContainerStatus) -> ContainerState {
    match cri::ContainerState::try_from(s.state) {
        Ok(cri::ContainerState::ContainerRunning) => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time_of(s.started_at),
            }),
            ..Default::default()
        },
        Ok(cri::ContainerState::ContainerExited) => ContainerState {
            terminated: Some(terminated(s)),
            ..Default::default()
        },
        _ => waiting("ContainerCreating", ""),
    }
}

fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: reason.to_string(),
            message: message.to_string(),
        }),
        ..Default::default()
    }
}

/// One container's status.
pub fn container_status(c: &Container, v: &ContainerView) -> ContainerStatus {
    let mut st = ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        ready: v.ready && v.running(),
        ..Default::default()
    };
    match &v.latest {
        None => {
            let (r, m) = v
                .waiting
                .clone()
                .unwrap_or_else(|| ("ContainerCreating".to_string(), String::new()));
            st.state = waiting(&r, &m);
            if let Some(p) = &v.previous {
                st.last_state = state_of(p);
            }
        }
        Some(l) => {
            st.container_id = container_id(l);
            st.image_id = l.image_ref.clone();
            st.restart_count = l.metadata.as_ref().map_or(0, |m| m.attempt) as i32;
            if v.will_restart {
                // Exited, waiting to run again: kubelet shows the wait and
                // the run that ended.
                let (r, m) = v
                    .waiting
                    .clone()
                    .unwrap_or_else(|| ("CrashLoopBackOff".to_string(), String::new()));
                st.state = waiting(&r, &m);
                st.last_state = state_of(l);
            } else {
                st.state = state_of(l);
                if let Some(p) = &v.previous {
                    st.last_state = state_of(p);
                }
            }
            st.started = Some(v.running());
        }
    }
    st
}

/// How the containers of a pod stand, as kubelet computes a pod's phase.
pub fn phase(pod: &Pod, init: &[ContainerView], app: &[ContainerView]) -> &'static str {
    let never = pod.spec.restart_policy == "Never";
    for v in init {
        match v.exited() {
            Some(0) => continue,
            Some(_) if never || !v.will_restart => return "Failed",
            _ => return "Pending",
        }
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for v in app {
        if v.running() || (v.exited().is_some() && v.will_restart) {
            running += 1;
        } else if let Some(code) = v.exited() {
            stopped += 1;
            if code == 0 {
                succeeded += 1;
            }
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match pod.spec.restart_policy.as_str() {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        }
    } else {
        "Pending"
    }
}

fn condition(
    old: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: &str,
    now: &Time,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time)
        .unwrap_or(*now);
    PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        last_probe_time: None,
        last_transition_time: Some(since),
        reason: if ok {
            String::new()
        } else {
            reason.to_string()
        },
        message: String::new(),
    }
}

/// The pod's whole status; `old` is the status stored now (its conditions'
/// transition times and start time are kept).
pub fn pod_status(
    pod: &Pod,
    init: &[ContainerView],
    app: &[ContainerView],
    pod_ip: &str,
    host_ip: &str,
) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let now = Time::now();
    let phase = phase(pod, init, app);
    let initialized = init.iter().all(|v| v.exited() == Some(0));
    let containers_ready = !app.is_empty() && app.iter().all(|v| v.ready && v.running());
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let mut conditions = vec![
        condition(
            &old.conditions,
            "Initialized",
            initialized,
            "ContainersNotInitialized",
            &now,
        ),
        condition(
            &old.conditions,
            "Ready",
            containers_ready && !terminal,
            "ContainersNotReady",
            &now,
        ),
        condition(
            &old.conditions,
            "ContainersReady",
            containers_ready && !terminal,
            "ContainersNotReady",
            &now,
        ),
    ];
    // PodScheduled is the scheduler's (or Bind's): kept as it is.
    if let Some(s) = old.conditions.iter().find(|c| c.type_ == "PodScheduled") {
        conditions.insert(0, s.clone());
    } else {
        conditions.insert(0, condition(&[], "PodScheduled", true, "", &now));
    }
    PodStatus {
        phase: phase.to_string(),
        conditions,
        // The scheduler's; a bound pod has none left.
        nominated_node_name: old.nominated_node_name.clone(),
        message: String::new(),
        reason: String::new(),
        host_ip: host_ip.to_string(),
        pod_ip: pod_ip.to_string(),
        pod_ips: if pod_ip.is_empty() {
            vec![]
        } else {
            vec![PodIp {
                ip: pod_ip.to_string(),
            }]
        },
        start_time: old.start_time.or(Some(now)),
        init_container_statuses: pod
            .spec
            .init_containers
            .iter()
            .zip(init)
            .map(|(c, v)| container_status(c, v))
            .collect(),
        container_statuses: pod
            .spec
            .containers
            .iter()
            .zip(app)
            .map(|(c, v)| container_status(c, v))
            .collect(),
        qos_class: qos_class(pod).to_string(),
    }
}

/// Guaranteed, Burstable or BestEffort, from the containers' requests and limits.
pub fn qos_class(pod: &Pod) -> &'static str {
    let all: Vec<&Container> = pod
        .spec
        .init_containers
        .iter()
        .chain(&pod.spec.containers)
        .collect();
    let none = all
        .iter()
        .all(|c| c.resources.requests.is_empty() && c.resources.limits.is_empty());
    if none {
        return "BestEffort";
    }
    let guaranteed = all.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let l = c.resources.limits.get(*r);
            l.is_some() && c.resources.requests.get(*r).is_none_or(|q| Some(q) == l)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(state: cri::ContainerState, exit: i32, attempt: u32) -> cri::ContainerStatus {
        cri::ContainerStatus {
            id: format!("c{attempt}"),
            metadata: Some(cri::ContainerMetadata {
                name: "c".into(),
                attempt,
            }),
            state: state as i32,
            exit_code: exit,
            started_at: 1_700_000_000_000_000_000,
            ..Default::default()
        }
    }

    fn pod(policy: &str) -> Pod {
        let mut p = Pod::default();
        p.spec.restart_policy = policy.into();
        p.spec.containers = vec![Container {
            name: "c".into(),
            image: "busybox".into(),
            ..Default::default()
        }];
        p
    }

    #[test]
    fn phases_follow_exits_and_policy() {
        let exited = |code| ContainerView {
            latest: Some(run(cri::ContainerState::ContainerExited, code, 0)),
            ..Default::default()
        };
        assert_eq!(phase(&pod("Never"), &[], &[exited(0)]), "Succeeded");
        assert_eq!(phase(&pod("Never"), &[], &[exited(1)]), "Failed");
        assert_eq!(phase(&pod("OnFailure"), &[], &[exited(0)]), "Succeeded");
        let restarting = ContainerView {
            will_restart: true,
            ..exited(1)
        };
        assert_eq!(phase(&pod("Always"), &[], &[restarting]), "Running");
        assert_eq!(
            phase(&pod("Always"), &[], &[ContainerView::default()]),
            "Pending"
        );
        // An init container that failed under Never fails the pod.
        assert_eq!(
            phase(&pod("Never"), &[exited(2)], &[ContainerView::default()]),
            "Failed"
        );
    }

    #[test]
    fn restarting_container_waits_with_its_last_run() {
        let p = pod("Always");
        let v = ContainerView {
            latest: Some(run(cri::ContainerState::ContainerExited, 3, 2)),
            will_restart: true,
            waiting: Some(("CrashLoopBackOff".into(), "back-off 20s".into())),
            ..Default::default()
        };
        let s = container_status(&p.spec.containers[0], &v);
        assert_eq!(s.restart_count, 2);
        assert_eq!(s.state.waiting.unwrap().reason, "CrashLoopBackOff");
        assert_eq!(s.last_state.terminated.unwrap().exit_code, 3);
    }

    #[test]
    fn ready_pod_has_every_condition_true() {
        let p = pod("Always");
        let v = ContainerView {
            latest: Some(run(cri::ContainerState::ContainerRunning, 0, 0)),
            ready: true,
            ..Default::default()
        };
        let s = pod_status(&p, &[], &[v], "10.244.1.2", "10.0.0.2");
        assert_eq!(s.phase, "Running");
        assert!(
            s.conditions.iter().all(|c| c.status == "True"),
            "{:?}",
            s.conditions
        );
        assert_eq!(s.pod_ips[0].ip, "10.244.1.2");
        assert_eq!(s.qos_class, "BestEffort");
    }
}
