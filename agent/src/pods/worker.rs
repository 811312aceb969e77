//! One worker per pod, as kubelet's pod workers: each sync looks at what the
//! runtime runs for the pod, works out what the pod's spec asks beyond that
//! (a sandbox, the next init container, app containers to start or restart
//! as the restart policy and the back-off allow, everything to stop when the
//! pod is deleted), does it, and writes the pod's status when it changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_client::{Api, DeleteParams, Reason};
use flotilla_objects::core::{Container, Pod, PodStatus};
use k8s_cri::v1 as cri;
use tokio::sync::watch;
use tokio::time::Instant;

use super::probe::{self, Kind};
use super::runtime::{self, Observed, Waiting, BUSY_RESYNC};
use super::spec::PodDirs;
use super::status::{self, ContainerView};
use super::Ctx;
use crate::error::Result;

/// Kubelet's container restart back-off: 10 s, doubling, at most 5 min.
const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Backoff {
    delay: Duration,
    until: Instant,
}

impl Backoff {
    /// The back-off after one more failure.
    fn next(prev: Option<Backoff>) -> Backoff {
        let delay = prev.map_or(BACKOFF_START, |b| (b.delay * 2).min(BACKOFF_MAX));
        Backoff {
            delay,
            until: Instant::now() + delay,
        }
    }
}

/// What a worker keeps between syncs.
#[derive(Default)]
struct Memory {
    /// Restart back-off per container.
    restarts: HashMap<String, Backoff>,
    /// Pull back-off per image.
    pulls: HashMap<String, Backoff>,
    /// Why a container is not running, per container.
    waiting: HashMap<String, Waiting>,
    /// Probe results per container and probe.
    probes: HashMap<(String, Kind), probe::State>,
}

/// What the worker does next.
enum Next {
    /// Sync again after this long (or on a change of the pod).
    After(Duration),
    /// The pod is gone: the worker ends.
    Done,
}

/// Whether a container that exited with `code` runs again.
pub fn restarts(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

/// Run a pod's worker until the pod is gone. `rx` carries the pod as the
/// cache has it; None once it left the cache.
pub async fn run(ctx: Arc<Ctx>, mut rx: watch::Receiver<Option<Arc<Pod>>>) {
    let mut mem = Memory::default();
    let mut last: Option<Arc<Pod>> = None;
    loop {
        let current = rx.borrow_and_update().clone();
        let next = match current {
            Some(pod) => {
                last = Some(pod.clone());
                sync(&ctx, &mut mem, &pod).await
            }
            None => {
                // Deleted without us (forced, or by the garbage collector).
                match &last {
                    Some(pod) => gone(&ctx, pod).await.map(|_| Next::Done),
                    None => Ok(Next::Done),
                }
            }
        };
        let delay = match next {
            Ok(Next::Done) => return,
            Ok(Next::After(d)) => d,
            Err(e) => {
                let name = last
                    .as_ref()
                    .map(|p| p.metadata.name.clone())
                    .unwrap_or_default();
                tracing::warn!(pod = %name, "sync failed: {e}");
                Duration::from_secs(2)
            }
        };
        // Wake for a change of the pod other than its status (our own
        // writes come back through the watch), or when the delay is over.
        let deadline = Instant::now() + delay;
        loop {
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() {
                        return;
                    }
                    if material_change(last.as_deref(), rx.borrow().as_deref()) {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
    }
}

/// Whether a pod changed in more than its status and resourceVersion.
fn material_change(old: Option<&Pod>, new: Option<&Pod>) -> bool {
    match (old, new) {
        (Some(a), Some(b)) => {
            let mut am = a.metadata.clone();
            let mut bm = b.metadata.clone();
            am.resource_version.clear();
            bm.resource_version.clear();
            am != bm || a.spec != b.spec
        }
        _ => true,
    }
}

fn grace_of(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or(pod.spec.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(0)
}

async fn gone(ctx: &Ctx, pod: &Pod) -> Result<()> {
    let dirs = PodDirs::new(&ctx.cfg.pods_dir(), pod);
    runtime::kill_pod(ctx, &pod.metadata.uid, grace_of(pod), Some(&dirs)).await
}

async fn sync(ctx: &Ctx, mem: &mut Memory, pod: &Pod) -> Result<Next> {
    let uid = &pod.metadata.uid;
    if pod.metadata.deletion_timestamp.is_some() {
        gone(ctx, pod).await?;
        let api = Api::<Pod>::namespaced(ctx.client.clone(), &pod.metadata.namespace);
        let p = DeleteParams {
            grace_period_seconds: Some(0),
            precondition_uid: uid.clone(),
            ..Default::default()
        };
        match api.delete(&pod.metadata.name, &p).await {
            Ok(_) => tracing::info!(pod = %pod.metadata.name, "stopped and deleted"),
            Err(e) if e.is(Reason::NotFound) || e.is(Reason::Conflict) => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(Next::Done);
    }
    let phase = pod.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
    let mut obs = runtime::observe(ctx, uid).await?;
    if matches!(phase, "Succeeded" | "Failed") {
        // Nothing runs again; the sandbox (and its IP) is released, once
        // the runtime's last word on why each container ended is written.
        if let Some(sb) = &obs.sandbox {
            refresh_reasons(ctx, pod, &obs).await?;
            ctx.cri.clone().stop_pod_sandbox(&sb.id).await?;
        }
        return Ok(Next::After(ctx.cfg.resync_interval));
    }
    let next_attempt = if obs.stale.is_empty() && obs.sandbox.is_none() {
        0
    } else {
        obs.sandbox_attempt() + 1
    };
    for s in std::mem::take(&mut obs.stale) {
        runtime::kill_sandbox(ctx, &s.id, 0).await?;
    }
    if obs.sandbox.is_none() {
        let attempt = next_attempt;
        if let Err(e) = runtime::start_sandbox(ctx, pod, attempt).await {
            let w = ("ContainerCreating".to_string(), e.runtime_message());
            for c in pod.spec.init_containers.iter().chain(&pod.spec.containers) {
                mem.waiting.insert(c.name.clone(), w.clone());
            }
            tracing::warn!(pod = %pod.metadata.name, "starting the sandbox: {e}");
            write_status(ctx, mem, pod, &obs).await?;
            return Ok(Next::After(Duration::from_secs(2)));
        }
        obs = runtime::observe(ctx, uid).await?;
    }
    super::satoken::renew(
        ctx,
        pod,
        &super::spec::PodDirs::new(&ctx.cfg.pods_dir(), pod),
    )
    .await;
    let mut busy = act(ctx, mem, pod, &obs).await;
    let (killed, probe_due) = run_probes(ctx, mem, pod, &obs).await;
    busy |= killed;
    if busy {
        obs = runtime::observe(ctx, uid).await?;
    }
    write_status(ctx, mem, pod, &obs).await?;
    let pending = pod
        .spec
        .init_containers
        .iter()
        .chain(&pod.spec.containers)
        .any(|c| !obs.latest(&c.name).0.is_some_and(is_running))
        || !mem.waiting.is_empty();
    let mut delay = if busy || pending {
        BUSY_RESYNC
    } else {
        ctx.cfg.resync_interval
    };
    if let Some(due) = probe_due {
        delay = delay.min(due.saturating_duration_since(Instant::now()));
    }
    Ok(Next::After(delay))
}

/// When a container run started, on the agent's monotonic clock.
fn started_instant(s: &cri::ContainerStatus) -> Instant {
    let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let ago = Duration::from_nanos(now_ns.saturating_sub(s.started_at).max(0) as u64);
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

/// Run the probes that are due; kill containers whose liveness (or
/// startup) probe failed. Returns whether one was killed, and when the next
/// probe is due.
async fn run_probes(
    ctx: &Ctx,
    mem: &mut Memory,
    pod: &Pod,
    obs: &Observed,
) -> (bool, Option<Instant>) {
    let mut killed = false;
    let mut next: Option<Instant> = None;
    for c in &pod.spec.containers {
        let Some(latest) = obs.latest(&c.name).0.filter(|s| is_running(s)) else {
            mem.probes.retain(|(n, _), _| n != &c.name);
            continue;
        };
        let started = started_instant(latest);
        let probes = [
            (Kind::Startup, c.startup_probe.as_ref()),
            (Kind::Liveness, c.liveness_probe.as_ref()),
            (Kind::Readiness, c.readiness_probe.as_ref()),
        ];
        let mut startup_ok = true;
        for (kind, p) in probes {
            let Some(p) = p else { continue };
            if kind != Kind::Startup && !startup_ok {
                continue;
            }
            let key = (c.name.clone(), kind);
            let st = mem
                .probes
                .entry(key)
                .or_insert_with(|| probe::State::new(&latest.id, p, started, kind));
            if st.container_id != latest.id {
                *st = probe::State::new(&latest.id, p, started, kind);
            }
            if kind == Kind::Startup && st.ok {
                continue;
            }
            if Instant::now() >= st.next {
                let r = probe::run(ctx, c, &latest.id, &obs.ip, p).await;
                if let Err(m) = &r {
                    tracing::debug!(pod = %pod.metadata.name, container = %c.name, ?kind, "probe failed: {m}");
                }
                st.record(p, r);
            }
            next = Some(next.map_or(st.next, |n| n.min(st.next)));
            let failed = st.failures >= p.failure_threshold.max(1);
            match kind {
                Kind::Startup if !st.ok => {
                    startup_ok = false;
                    if failed {
                        killed |= kill_for_probe(ctx, pod, c, &latest.id, "startup").await;
                    }
                }
                Kind::Liveness if failed => {
                    killed |= kill_for_probe(ctx, pod, c, &latest.id, "liveness").await;
                }
                _ => {}
            }
        }
    }
    (killed, next)
}

async fn kill_for_probe(ctx: &Ctx, pod: &Pod, c: &Container, id: &str, what: &str) -> bool {
    tracing::info!(pod = %pod.metadata.name, container = %c.name, "container failed its {what} probe; restarting it");
    let grace = pod.spec.termination_grace_period_seconds.unwrap_or(30);
    match ctx.cri.clone().stop_container(id, grace).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("stopping container {id}: {e}");
            false
        }
    }
}

/// Whether a running container's probes say it is ready.
fn probes_ready(mem: &Memory, c: &Container) -> bool {
    let ok = |k: Kind| mem.probes.get(&(c.name.clone(), k)).is_some_and(|s| s.ok);
    (c.startup_probe.is_none() || ok(Kind::Startup))
        && (c.readiness_probe.is_none() || ok(Kind::Readiness))
}

fn is_running(s: &cri::ContainerStatus) -> bool {
    s.state == cri::ContainerState::ContainerRunning as i32
}

/// containerd can report a container's exit before the cgroup's OOM event
/// that caused it: the status written then says "Error", and the runtime
/// says OOMKilled a moment later. A terminal pod keeps its phase; only the
/// reasons of its ended containers are brought up to the runtime's.
async fn refresh_reasons(ctx: &Ctx, pod: &Pod, obs: &Observed) -> Result<()> {
    let Some(mut st) = pod.status.clone() else {
        return Ok(());
    };
    let mut changed = false;
    for cs in st
        .init_container_statuses
        .iter_mut()
        .chain(st.container_statuses.iter_mut())
    {
        let (Some(latest), _) = obs.latest(&cs.name) else {
            continue;
        };
        if let Some(t) = cs.state.terminated.as_mut() {
            if is_exited(latest) && !latest.reason.is_empty() && t.reason != latest.reason {
                t.reason = latest.reason.clone();
                changed = true;
            }
        }
    }
    if changed {
        put_status(ctx, pod, st).await?;
    }
    Ok(())
}

/// Replace the pod's status with `st`; false when the pod is gone.
async fn put_status(ctx: &Ctx, pod: &Pod, st: PodStatus) -> Result<bool> {
    let mut p = pod.clone();
    p.metadata.resource_version.clear();
    p.status = Some(st);
    match Api::<Pod>::namespaced(ctx.client.clone(), &pod.metadata.namespace)
        .replace_status(&p)
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.is(Reason::NotFound) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn is_exited(s: &cri::ContainerStatus) -> bool {
    s.state == cri::ContainerState::ContainerExited as i32
}

/// Start what should run and does not; true if anything was started.
/// What starting a container needs to know of its pod.
struct Scope<'a> {
    ctx: &'a Ctx,
    pod: &'a Pod,
    obs: &'a Observed,
    sandbox: &'a cri::PodSandbox,
}

async fn act(ctx: &Ctx, mem: &mut Memory, pod: &Pod, obs: &Observed) -> bool {
    let Some(sandbox) = &obs.sandbox else {
        return false;
    };
    let sc = Scope {
        ctx,
        pod,
        obs,
        sandbox,
    };
    let policy = pod.spec.restart_policy.as_str();
    for c in &pod.spec.init_containers {
        let (latest, _) = obs.latest(&c.name);
        match latest {
            Some(s) if is_exited(s) && s.exit_code == 0 => continue,
            Some(s) if is_exited(s) => {
                if policy != "Never" {
                    return restart(&sc, mem, c, s).await;
                }
                return false;
            }
            // Running (or created): the next one waits for it.
            Some(_) => return false,
            None => return start(&sc, mem, c, 0).await,
        }
    }
    let mut started = false;
    for c in &pod.spec.containers {
        let (latest, _) = obs.latest(&c.name);
        started |= match latest {
            None => start(&sc, mem, c, 0).await,
            Some(s) if is_exited(s) && restarts(policy, s.exit_code) => {
                restart(&sc, mem, c, s).await
            }
            Some(_) => false,
        };
    }
    started
}

async fn start(sc: &Scope<'_>, mem: &mut Memory, c: &Container, attempt: u32) -> bool {
    let (ctx, pod, obs) = (sc.ctx, sc.pod, sc.obs);
    if let Some(b) = mem.pulls.get(&c.image) {
        if Instant::now() < b.until && c.image_pull_policy != "Never" {
            let reason = "ImagePullBackOff".to_string();
            let msg = format!("Back-off pulling image \"{}\"", c.image);
            mem.waiting.insert(c.name.clone(), (reason, msg));
            return false;
        }
    }
    match runtime::start_container(ctx, pod, sc.sandbox, &obs.ip, c, attempt).await {
        Ok(_) => {
            mem.waiting.remove(&c.name);
            mem.pulls.remove(&c.image);
            if let Some(runs) = obs.runs.get(&c.name) {
                runtime::prune_runs(ctx, runs).await;
            }
            true
        }
        Err(w) => {
            tracing::warn!(pod = %pod.metadata.name, container = %c.name, reason = %w.0, "{}", w.1);
            if w.0 == "ErrImagePull" {
                let prev = mem.pulls.get(&c.image).copied();
                mem.pulls.insert(c.image.clone(), Backoff::next(prev));
            }
            mem.waiting.insert(c.name.clone(), w);
            false
        }
    }
}

async fn restart(
    sc: &Scope<'_>,
    mem: &mut Memory,
    c: &Container,
    last: &cri::ContainerStatus,
) -> bool {
    let pod = sc.pod;
    let prev = mem.restarts.get(&c.name).copied();
    if let Some(b) = prev {
        if Instant::now() < b.until {
            let msg = format!(
                "back-off {}s restarting failed container={} pod={}",
                b.delay.as_secs(),
                c.name,
                pod.metadata.name
            );
            mem.waiting
                .insert(c.name.clone(), ("CrashLoopBackOff".to_string(), msg));
            return false;
        }
    }
    let attempt = last.metadata.as_ref().map_or(0, |m| m.attempt) + 1;
    let started = start(sc, mem, c, attempt).await;
    if started {
        mem.restarts.insert(c.name.clone(), Backoff::next(prev));
    }
    started
}

fn view(
    obs: &Observed,
    mem: &Memory,
    c: &Container,
    will_restart: impl Fn(i32) -> bool,
) -> ContainerView {
    let (latest, previous) = obs.latest(&c.name);
    let exited = latest.filter(|s| is_exited(s)).map(|s| s.exit_code);
    ContainerView {
        latest: latest.cloned(),
        previous: previous.cloned(),
        waiting: mem.waiting.get(&c.name).cloned(),
        ready: latest.is_some_and(is_running) && probes_ready(mem, c),
        will_restart: exited.is_some_and(will_restart),
    }
}

async fn write_status(ctx: &Ctx, mem: &Memory, pod: &Pod, obs: &Observed) -> Result<()> {
    let policy = pod.spec.restart_policy.clone();
    let init: Vec<ContainerView> = pod
        .spec
        .init_containers
        .iter()
        .map(|c| view(obs, mem, c, |code| code != 0 && policy != "Never"))
        .collect();
    let app: Vec<ContainerView> = pod
        .spec
        .containers
        .iter()
        .map(|c| view(obs, mem, c, |code| restarts(&policy, code)))
        .collect();
    let host_ip = ctx.cfg.node_ip.to_string();
    // A pod on the node's network has the node's address.
    let pod_ip = if pod.spec.host_network && obs.sandbox.is_some() {
        host_ip.clone()
    } else {
        obs.ip.clone()
    };
    let st = status::pod_status(pod, &init, &app, &pod_ip, &host_ip);
    if pod.status.as_ref() == Some(&st) {
        return Ok(());
    }
    let now_running =
        st.phase == "Running" && pod.status.as_ref().is_none_or(|old| old.phase != "Running");
    if put_status(ctx, pod, st).await? {
        if let (true, Some(m)) = (now_running, &ctx.cfg.metrics) {
            m.pod_started(pod);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policy_decides_by_exit_code() {
        assert!(restarts("Always", 0));
        assert!(restarts("OnFailure", 1));
        assert!(!restarts("OnFailure", 0));
        assert!(!restarts("Never", 1));
    }

    #[test]
    fn backoff_doubles_to_five_minutes() {
        let mut b = Backoff::next(None);
        assert_eq!(b.delay, Duration::from_secs(10));
        for _ in 0..10 {
            b = Backoff::next(Some(b));
        }
        assert_eq!(b.delay, Duration::from_secs(300));
    }
}
