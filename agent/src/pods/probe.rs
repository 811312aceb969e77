//! Probes, as kubelet runs them: exec (through the runtime), tcpSocket and
//! httpGet (from the node's network namespace, to the pod's IP unless the
//! probe names a host), with their timing fields, thresholds and the state
//! that turns results into "ready", "restart it" or "started".

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use flotilla_objects::core::{Container, Probe};
use flotilla_objects::meta::IntOrString;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::Ctx;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

/// Consecutive results of one probe of one container run.
#[derive(Debug, Clone)]
pub struct State {
    /// The container run it probes.
    pub container_id: String,
    pub successes: i32,
    pub failures: i32,
    /// The current verdict (after thresholds).
    pub ok: bool,
    /// When it runs next.
    pub next: Instant,
    /// The last failure's message.
    pub message: String,
}

impl State {
    pub fn new(container_id: &str, p: &Probe, started: Instant, kind: Kind) -> State {
        State {
            container_id: container_id.to_string(),
            successes: 0,
            failures: 0,
            // Liveness holds until proven otherwise; readiness and startup
            // must be proven.
            ok: kind == Kind::Liveness,
            next: started + Duration::from_secs(p.initial_delay_seconds.max(0) as u64),
            message: String::new(),
        }
    }

    /// Record one result.
    pub fn record(&mut self, p: &Probe, result: Result<(), String>) {
        let period = Duration::from_secs(p.period_seconds.max(1) as u64);
        self.next = Instant::now() + period;
        match result {
            Ok(()) => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= p.success_threshold.max(1) {
                    self.ok = true;
                }
            }
            Err(m) => {
                self.successes = 0;
                self.failures += 1;
                self.message = m;
                if self.failures >= p.failure_threshold.max(1) {
                    self.ok = false;
                }
            }
        }
    }
}

fn port_of(c: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .find(|p| &p.name == name)
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("port {name:?} is not a port of container {}", c.name)),
    }
}

fn addr_of(host: &str, pod_ip: &str, port: u16) -> Result<SocketAddr, String> {
    let h = if host.is_empty() { pod_ip } else { host };
    let ip: IpAddr = h
        .parse()
        .map_err(|_| format!("probe host {h:?} is not an IP address"))?;
    Ok(SocketAddr::new(ip, port))
}

/// Run a probe once.
pub async fn run(
    ctx: &Ctx,
    c: &Container,
    container_id: &str,
    pod_ip: &str,
    p: &Probe,
) -> Result<(), String> {
    let timeout = Duration::from_secs(p.timeout_seconds.max(1) as u64);
    let netns = ctx.cfg.netns.as_deref();
    if let Some(e) = &p.exec {
        let r = ctx
            .cri
            .clone()
            .exec_sync(container_id, e.command.clone(), timeout)
            .await
            .map_err(|e| e.runtime_message())?;
        return if r.exit_code == 0 {
            Ok(())
        } else {
            Err(format!(
                "command {:?} exited with {}: {}",
                e.command,
                r.exit_code,
                String::from_utf8_lossy(&r.stdout).trim()
            ))
        };
    }
    if let Some(t) = &p.tcp_socket {
        let addr = addr_of(&t.host, pod_ip, port_of(c, &t.port)?)?;
        return crate::netns::connect(netns, addr, timeout)
            .await
            .map(|_| ())
            .map_err(|e| format!("dial tcp {addr}: {e}"));
    }
    if let Some(h) = &p.http_get {
        let addr = addr_of(&h.host, pod_ip, port_of(c, &h.port)?)?;
        let path = if h.path.is_empty() {
            "/"
        } else {
            h.path.as_str()
        };
        let fut = async {
            let stream = crate::netns::connect(netns, addr, timeout)
                .await
                .map_err(|e| format!("dial tcp {addr}: {e}"))?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = hyper::Request::get(path)
                .header(hyper::header::HOST, addr.to_string())
                .header(hyper::header::USER_AGENT, "flotilla-probe")
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
            let code = resp.status().as_u16();
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            }
        };
        return match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "Get \"http://{addr}{path}\": context deadline exceeded"
            )),
        };
    }
    Err("the probe has no handler".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(success: i32, failure: i32) -> Probe {
        Probe {
            period_seconds: 1,
            success_threshold: success,
            failure_threshold: failure,
            ..Default::default()
        }
    }

    #[test]
    fn thresholds_turn_results_into_verdicts() {
        let p = probe(1, 3);
        let mut s = State::new("c", &p, Instant::now(), Kind::Liveness);
        assert!(s.ok);
        s.record(&p, Err("x".into()));
        s.record(&p, Err("x".into()));
        assert!(s.ok, "two failures of three");
        s.record(&p, Err("x".into()));
        assert!(!s.ok);
        s.record(&p, Ok(()));
        assert!(s.ok);
        let mut r = State::new("c", &p, Instant::now(), Kind::Readiness);
        assert!(!r.ok, "readiness must be proven");
        r.record(&p, Ok(()));
        assert!(r.ok);
    }
}
