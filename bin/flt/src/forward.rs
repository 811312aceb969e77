//! `flt port-forward pod/NAME|svc/NAME|deploy/NAME [LOCAL:]REMOTE...`, as
//! kubectl does: flt listens locally; each connection it accepts is one
//! PortForward call through a master, relayed to the agent of the pod's
//! node, which connects to the port on the pod's own localhost. A service
//! or deployment picks one ready pod once, at the start (as kubectl).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Args;
use flotilla_client::{Client, ListParams};
use flotilla_proto::node::pod_streams_client::PodStreamsClient;
use flotilla_proto::node::PortForwardFrame;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::cluster::Authed;
use crate::streams::masters;

#[derive(Args, Debug)]
pub struct PortForwardArgs {
    /// pod/NAME, NAME, svc/NAME or deploy/NAME.
    pub target: String,
    /// [LOCAL:]REMOTE ports: LOCAL omitted, same as REMOTE; empty (`:REMOTE`)
    /// or 0, a free port.
    #[arg(required = true)]
    pub ports: Vec<String>,
    /// Addresses to listen on, comma-separated (`localhost` or IPs).
    #[arg(long, default_value = "127.0.0.1", value_delimiter = ',')]
    pub address: Vec<String>,
}

/// One `[LOCAL:]REMOTE`; REMOTE may be a port's name.
#[derive(Debug, PartialEq)]
struct PortSpec {
    local: Option<u16>,
    remote: String,
}

fn port_spec(s: &str) -> Result<PortSpec> {
    let (local, remote) = match s.split_once(':') {
        Some((l, r)) => (Some(l), r),
        None => (None, s),
    };
    if remote.is_empty() {
        bail!("invalid port {s:?}: the remote port is missing");
    }
    let local = match local {
        None => None,
        Some("") => Some(0),
        Some(l) => Some(
            l.parse::<u16>()
                .map_err(|_| anyhow!("invalid local port {l:?} in {s:?}"))?,
        ),
    };
    Ok(PortSpec {
        local,
        remote: remote.to_string(),
    })
}

fn ready(pod: &Value) -> bool {
    pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.get("type").and_then(Value::as_str) == Some("Ready")
                        && c.get("status").and_then(Value::as_str) == Some("True")
                })
            })
}

fn selector(labels: &Value) -> String {
    labels
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

async fn a_ready_pod(client: &Client, ns: &str, what: &str, labels: &Value) -> Result<Value> {
    let sel = selector(labels);
    if sel.is_empty() {
        bail!("{what} has no selector");
    }
    let pods = client
        .list(
            "pods",
            ns,
            &ListParams {
                label_selector: sel,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow!(e.message))?;
    pods.items
        .into_iter()
        .find(ready)
        .ok_or_else(|| anyhow!("no ready pod of {what} to forward to"))
}

/// A container port of `pod` by number or name.
fn container_port(pod: &Value, port: &str) -> Result<u16> {
    if let Ok(n) = port.parse::<u16>() {
        return Ok(n);
    }
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| {
            c.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find(|p| p.get("name").and_then(Value::as_str) == Some(port))
        .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| anyhow!("pod {name} does not have a named port '{port}'"))
}

/// A service's port (by number or name) to the pod's port it targets.
fn service_target(svc: &Value, pod: &Value, port: &str) -> Result<u16> {
    let name = svc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let p = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| {
            p.get("port")
                .and_then(Value::as_u64)
                .map(|n| n.to_string())
                .as_deref()
                == Some(port)
                || p.get("name").and_then(Value::as_str) == Some(port)
        })
        .ok_or_else(|| anyhow!("Service {name} does not have a service port {port}"))?;
    match p.get("targetPort") {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| anyhow!("Service {name}: invalid targetPort {n}")),
        Some(Value::String(s)) => container_port(pod, s),
        _ => Ok(p
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(0)),
    }
}

/// The pod, and each requested port as (local, remote number).
async fn resolve(
    client: &Client,
    ns: &str,
    target: &str,
    ports: &[PortSpec],
) -> Result<(String, Vec<(u16, u16)>)> {
    let (kind, name) = target.split_once('/').unwrap_or(("pod", target));
    let get = |resource: &'static str| async move {
        client
            .get(resource, ns, name)
            .await
            .map_err(|e| anyhow!(e.message))
    };
    let (pod, svc) = match kind {
        "pod" | "pods" | "po" => (get("pods").await?, None),
        "svc" | "service" | "services" => {
            let svc = get("services").await?;
            let labels = svc
                .pointer("/spec/selector")
                .cloned()
                .unwrap_or(Value::Null);
            let pod = a_ready_pod(client, ns, &format!("service {name}"), &labels).await?;
            (pod, Some(svc))
        }
        "deploy" | "deployment" | "deployments" => {
            let d = get("deployments").await?;
            let labels = d
                .pointer("/spec/selector/matchLabels")
                .cloned()
                .unwrap_or(Value::Null);
            (
                a_ready_pod(client, ns, &format!("deployment {name}"), &labels).await?,
                None,
            )
        }
        other => bail!("port-forward works with pods, services and deployments, not {other:?}"),
    };
    if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
        bail!("unable to forward port because pod is not running");
    }
    let mut out = Vec::new();
    for p in ports {
        let remote = match &svc {
            Some(svc) => service_target(svc, &pod, &p.remote)?,
            None => container_port(&pod, &p.remote)?,
        };
        if remote == 0 {
            bail!("invalid remote port {}", p.remote);
        }
        // Omitted: the same number as the remote port named.
        let local = match p.local {
            Some(l) => l,
            None => p.remote.parse::<u16>().unwrap_or(remote),
        };
        out.push((local, remote));
    }
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or(name)
        .to_string();
    Ok((pod_name, out))
}

/// Refuse at once, as kubectl does, when the caller may not `create`
/// pods/portforward (each connection would be refused later otherwise);
/// `pod` empty: any pod of the namespace (svc/ and deploy/ targets).
/// A master that cannot answer the review leaves it to the relay.
async fn may_forward(client: &Client, ns: &str, pod: &str) -> Result<()> {
    let req = flotilla_proto::objects::AccessReviewRequest {
        verb: "create".into(),
        resource: "pods".into(),
        subresource: "portforward".into(),
        namespace: ns.into(),
        name: pod.into(),
    };
    match client.access_review(req).await {
        Ok(r) if !r.allowed => {
            let user = client
                .who_am_i()
                .await
                .map(|w| w.user)
                .unwrap_or_else(|_| "?".into());
            let what = if pod.is_empty() {
                "pods".to_string()
            } else {
                format!("pods \"{pod}\"")
            };
            bail!(
                "{what} is forbidden: User \"{user}\" cannot create resource \"pods/portforward\" in API group \"\" in the namespace \"{ns}\""
            )
        }
        _ => Ok(()),
    }
}

pub async fn port_forward(
    servers: &[String],
    dial: Duration,
    client: &Client,
    ns: &str,
    a: PortForwardArgs,
) -> Result<()> {
    let specs = a
        .ports
        .iter()
        .map(|p| port_spec(p))
        .collect::<Result<Vec<_>>>()?;
    let named = match a.target.split_once('/') {
        None => a.target.as_str(),
        Some(("pod" | "pods" | "po", n)) => n,
        Some(_) => "",
    };
    may_forward(client, ns, named).await?;
    let (pod, ports) = resolve(client, ns, &a.target, &specs).await?;
    let streams = masters(servers, dial).await?;
    let mut addrs: Vec<IpAddr> = Vec::new();
    for s in &a.address {
        match s.as_str() {
            "localhost" => addrs.extend([
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ]),
            s => addrs.push(s.parse().map_err(|_| anyhow!("invalid address {s:?}"))?),
        }
    }
    for (local, remote) in ports {
        let mut local = local;
        for ip in &addrs {
            let l = match TcpListener::bind(SocketAddr::new(*ip, local)).await {
                Ok(l) => l,
                // localhost's IPv6 may be missing; the IPv4 one is enough.
                Err(_) if ip.is_ipv6() && a.address.iter().any(|s| s == "localhost") => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("unable to listen on {ip}:{local}"))
                }
            };
            let bound = l.local_addr()?;
            // Every address listens on the port the first one got.
            local = bound.port();
            println!("Forwarding from {bound} -> {remote}");
            let (c, ns, pod) = (streams.clone(), ns.to_string(), pod.clone());
            tokio::spawn(accept(l, c, ns, pod, remote));
        }
    }
    use std::io::Write as _;
    std::io::stdout().flush()?;
    tokio::signal::ctrl_c().await?;
    Ok(())
}

async fn accept(l: TcpListener, c: PodStreamsClient<Authed>, ns: String, pod: String, port: u16) {
    loop {
        let Ok((conn, _)) = l.accept().await else {
            continue;
        };
        println!(
            "Handling connection for {}",
            l.local_addr().map(|a| a.port()).unwrap_or(port)
        );
        let (c, ns, pod) = (c.clone(), ns.clone(), pod.clone());
        tokio::spawn(async move {
            let name = pod.clone();
            if let Err(e) = one(conn, c, ns, pod, port).await {
                eprintln!("E: error forwarding port {port} to pod {name}: {e:#}");
            }
        });
    }
}

/// One connection, copied both ways through a PortForward call.
async fn one(
    conn: TcpStream,
    mut c: PodStreamsClient<Authed>,
    namespace: String,
    pod: String,
    port: u16,
) -> Result<()> {
    let (mut rd, mut wr) = conn.into_split();
    let (tx, rx) = tokio::sync::mpsc::channel::<PortForwardFrame>(8);
    let first = PortForwardFrame {
        namespace,
        pod,
        port: i32::from(port),
        ..Default::default()
    };
    tx.send(first)
        .await
        .map_err(|_| anyhow!("the call ended"))?;
    let upload = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let f = PortForwardFrame {
                        data: buf[..n].to_vec(),
                        ..Default::default()
                    };
                    if tx.send(f).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping tx ends the call's request stream: a half-close.
    });
    let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut inbound = c
        .port_forward(outbound)
        .await
        .map_err(crate::streams::status_error)?
        .into_inner();
    let r = async {
        while let Some(f) = inbound
            .message()
            .await
            .map_err(crate::streams::status_error)?
        {
            if !f.data.is_empty() {
                wr.write_all(&f.data).await?;
            }
            if f.close_write {
                wr.shutdown().await?;
            }
        }
        anyhow::Ok(())
    }
    .await;
    upload.abort();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ports_as_kubectl() {
        let p = |s: &str| port_spec(s).expect(s);
        assert_eq!(
            p("8080"),
            PortSpec {
                local: None,
                remote: "8080".into()
            }
        );
        assert_eq!(
            p(":80"),
            PortSpec {
                local: Some(0),
                remote: "80".into()
            }
        );
        assert_eq!(
            p("9000:http"),
            PortSpec {
                local: Some(9000),
                remote: "http".into()
            }
        );
        assert!(port_spec("80:").is_err());
        assert!(port_spec("x:80").is_err());
    }

    #[test]
    fn a_service_port_targets_the_pods_port_by_number_or_name() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "ports": [{"name": "web", "containerPort": 8080}]}]}});
        let svc = json!({"metadata": {"name": "s"}, "spec": {"ports": [
            {"name": "http", "port": 80, "targetPort": "web"},
            {"port": 81, "targetPort": 9090},
            {"port": 82}]}});
        assert_eq!(service_target(&svc, &pod, "80").expect("80"), 8080);
        assert_eq!(service_target(&svc, &pod, "http").expect("http"), 8080);
        assert_eq!(service_target(&svc, &pod, "81").expect("81"), 9090);
        assert_eq!(service_target(&svc, &pod, "82").expect("82"), 82);
        let e = service_target(&svc, &pod, "99").expect_err("99");
        assert!(
            e.to_string().contains("does not have a service port 99"),
            "{e}"
        );
        assert!(container_port(&pod, "nope").is_err());
    }
}
