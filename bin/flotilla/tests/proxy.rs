//! `flotilla proxy` end to end: one cluster, three hosts with real agents
//! (h1 runs the proxy in iptables mode, h2 in userspace mode, h3 in
//! nftables mode) and a fourth host outside the cluster; pods run busybox httpd, clients are
//! pods (`flt exec ... nc`) or the outside host. One test walks through
//! the scenarios in order, so the cluster starts once. UDP services point
//! at UDP servers of the test on the outside host (busybox has none).

mod agent_support;
mod common;
mod proxy_policies;

use std::process::Command;
use std::time::{Duration, Instant};

use agent_support::lan::Lan;
use agent_support::proxy::{Cleanup, ProxyProc};
use agent_support::{flt, http_get_in, in_netns, running_ip, AgentProc, Registry};
use common::{wait_for, Cluster, Opts};
use flotilla_client::{Api, Client};
use flotilla_objects::core::{Endpoints, Pod, Service};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);

/// GET / from pod `pod` to `ip:port` with busybox nc; the body or the error.
async fn get_from_pod(servers: &str, pod: &str, ip: &str, port: u16) -> Result<String, String> {
    let cmd = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port}");
    let out = flt(servers, &["exec", pod, "--", "sh", "-c", &cmd]).await;
    if !out.success() {
        return Err(out.to_string());
    }
    out.stdout
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .ok_or_else(|| format!("no HTTP answer: {:?} {:?}", out.stdout, out.stderr))
}

/// Wait until GETs from `pod` have been answered by every one of `names`.
async fn reaches_all(servers: &str, pod: &str, ip: &str, port: u16, names: &[&str]) {
    let mut seen = std::collections::BTreeSet::new();
    wait_for(
        TIMEOUT,
        &format!("{pod} reaches {names:?} at {ip}:{port}"),
        async || {
            let body = get_from_pod(servers, pod, ip, port).await?;
            seen.insert(body);
            if names.iter().all(|n| seen.contains(*n)) {
                Ok(())
            } else {
                Err(format!("seen {seen:?}"))
            }
        },
    )
    .await;
}

/// Wait until GETs from the outside host to `addr` were answered by all
/// three servers.
async fn outside_reaches_all(netns: &str, addr: std::net::SocketAddr, what: &str) {
    let mut seen = std::collections::BTreeSet::new();
    wait_for(TIMEOUT, what, async || {
        let body = http_get_in(netns, addr, "/").await?;
        seen.insert(body.trim().to_string());
        if seen.len() == 3 {
            Ok(())
        } else {
            Err(format!("seen {seen:?}"))
        }
    })
    .await;
}

fn server_pod(name: &str, node: &str) -> Pod {
    let cmd = format!(
        "mkdir /www && echo {name} > /www/index.html && touch /tmp/ready && exec httpd -f -p 8080 -h /www"
    );
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web", "name": name}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", cmd],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1}}]}
    }))
    .expect("pod")
}

fn service(name: &str, extra: serde_json::Value) -> Service {
    let mut v = json!({
        "metadata": {"name": name},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    });
    if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
        for (k, val) in extra {
            spec.insert(k.clone(), val.clone());
        }
    }
    serde_json::from_value(v).expect("service")
}

/// Both iptables backends' tables (the proxy picks one; `--cleanup` must
/// leave both as they were), without counters and without tables that hold
/// nothing but empty built-in chains (the kernel keeps a table once a
/// program has used it).
fn iptables_save(netns: &str) -> String {
    let mut tables = Vec::new();
    for save in ["iptables-legacy-save", "iptables-nft-save"] {
        let out = in_netns(netns, &[save]);
        assert!(out.status.success(), "{save}: {out:?}");
        let mut table: Vec<String> = Vec::new();
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if l.starts_with('#') {
                continue;
            }
            // Counters ([packets:bytes]) change with traffic.
            let l = match l.find(" [") {
                Some(i) if l.starts_with(':') => l[..i].to_string(),
                _ => l.to_string(),
            };
            let end = l == "COMMIT";
            table.push(l);
            if end {
                let used = table
                    .iter()
                    .any(|l| l.starts_with("-A ") || (l.starts_with(':') && l.ends_with(" -")));
                if used {
                    tables.push(table.join("\n"));
                }
                table.clear();
            }
        }
    }
    tables.join("\n")
}

/// The proxy's nftables table in `netns` ("" when there is none; any
/// other failure of `nft` fails the test).
fn nft_table(netns: &str) -> String {
    let out = in_netns(netns, &["nft", "list", "table", "ip", "flotilla"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || stderr.contains("No such file or directory"),
        "nft list table in {netns}: {out:?}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn routes(netns: &str) -> String {
    String::from_utf8_lossy(&in_netns(netns, &["ip", "-4", "route", "show", "table", "all"]).stdout)
        .into_owned()
}

#[tokio::test]
async fn services_reach_pods_through_each_proxy_mode() {
    let mut lan = Lan::new();
    for _ in 0..4 {
        lan.add_host();
    }
    // The masters' load balancer pool: addresses on the hosts' LAN.
    let lb_pool = {
        let o = lan.gateway.octets();
        format!("{}.{}.{}.200/30", o[0], o[1], o[2])
    };
    let opts = Opts {
        extra_args: vec!["--lb-pool".into(), lb_pool],
        ..Opts::default()
    };
    let cluster = Cluster::start(1, opts).await;
    let registry = Registry::start(cluster.dir(), lan.gateway);
    let servers = cluster.endpoints();
    let names: Vec<String> = (1..=3).map(|i| format!("h{i}-{}", lan.id)).collect();
    let mut agents: Vec<AgentProc> = (0..3)
        .map(|i| AgentProc::start(&servers, &names[i], &lan.hosts[i], cluster.dir(), &registry))
        .collect();
    let outside = lan.hosts[3].netns.clone();
    // Rules of someone else's, which the proxy must leave alone.
    for rule in [
        &[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            "192.0.2.0/24",
            "-j",
            "RETURN",
        ][..],
        &[
            "-t",
            "filter",
            "-A",
            "INPUT",
            "-s",
            "192.0.2.0/24",
            "-j",
            "ACCEPT",
        ][..],
    ] {
        let mut args = vec!["iptables", "-w"];
        args.extend(rule);
        assert!(in_netns(&outside, &args).status.success(), "{args:?}");
    }
    let before_outside = (iptables_save(&outside), routes(&outside));
    let _cleanup = Cleanup(lan.hosts.iter().map(|h| h.netns_path()).collect());
    let modes = ["iptables", "userspace", "nftables"];
    let mut proxies: Vec<ProxyProc> = (0..3)
        .map(|i| ProxyProc::start(&servers, &names[i], &lan.hosts[i], modes[i], cluster.dir()))
        .collect();

    let client = Client::connect(&[cluster.client_addr(0)]).expect("client");
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let svcs = Api::<Service>::namespaced(client.clone(), "default");
    for (i, n) in names.iter().enumerate() {
        pods.create(&server_pod(&format!("s{}", i + 1), n))
            .await
            .expect("server");
        let c: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("c{}", i + 1)},
            "spec": {"nodeName": n, "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}
        }))
        .expect("client pod");
        pods.create(&c).await.expect("client");
    }
    let web = svcs
        .create(&service("web", json!({"type": "NodePort"})))
        .await
        .expect("web");
    let cip = web.spec.cluster_ip.clone();
    let node_port = web.spec.ports[0].node_port as u16;
    for i in 1..=3 {
        running_ip(&pods, &format!("s{i}")).await;
        running_ip(&pods, &format!("c{i}")).await;
    }

    // ClusterIP: balanced over the pods of all three hosts, from a client
    // on the node of each mode.
    for c in ["c1", "c2", "c3"] {
        reaches_all(&servers, c, &cip, 80, &["s1", "s2", "s3"]).await;
    }
    // Each proxy is ready and has timed its syncs (kube-proxy's series).
    for p in &proxies {
        let addr = p
            .metrics_addr()
            .expect("the proxy logs its metrics address");
        let curl = |path: &str| {
            let url = format!("http://{addr}/{path}");
            let out = std::process::Command::new("curl")
                .args(["-s", "-m", "10", &url])
                .output()
                .expect("curl");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_eq!(curl("readyz"), "ok", "{addr}");
        let m = curl("metrics");
        let syncs = m
            .lines()
            .find_map(|l| l.strip_prefix("kubeproxy_sync_proxy_rules_duration_seconds_count "))
            .and_then(|v| v.trim().parse::<u64>().ok());
        assert!(
            syncs.is_some_and(|n| n >= 1),
            "no sync counted on {addr}:\n{m}"
        );
    }

    // NodePort from a host outside the cluster, through each mode's node.
    for (i, mode) in modes.iter().enumerate() {
        let addr = std::net::SocketAddr::from((lan.hosts[i].ip, node_port));
        outside_reaches_all(
            &outside,
            addr,
            &format!("the node port answers on the {mode} node"),
        )
        .await;
    }

    // No endpoints: refused at once, in every mode.
    let empty = svcs
        .create(&service("empty", json!({"selector": {"app": "nobody"}})))
        .await
        .expect("empty");
    for pod in ["c1", "c2", "c3"] {
        let out = wait_for(
            TIMEOUT,
            "a service without endpoints is refused",
            async || {
                let started = Instant::now();
                match get_from_pod(&servers, pod, &empty.spec.cluster_ip, 80).await {
                    Ok(b) => Err(format!("answered {b}")),
                    Err(e) if e.contains("refused") => Ok(started.elapsed()),
                    Err(e) => Err(e),
                }
            },
        )
        .await;
        // nc -w 3 would give up after 3 s on a dropped SYN.
        assert!(out < Duration::from_secs(3), "{pod}: refusal took {out:?}");
    }

    // A service without a selector, whose Endpoints list s1 twice: on its
    // port and on a closed one. The userspace proxy retries the refused
    // connect on the live endpoint: every request succeeds.
    let s1_ip = running_ip(&pods, "s1").await;
    let manual: Service = serde_json::from_value(json!({
        "metadata": {"name": "manual"},
        "spec": {"ports": [{"name": "http", "port": 80}]}
    }))
    .expect("manual");
    let manual = svcs.create(&manual).await.expect("manual");
    let eps: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "manual"},
        "subsets": [
            {"addresses": [{"ip": s1_ip}], "ports": [{"name": "http", "port": 8080}]},
            {"addresses": [{"ip": s1_ip}], "ports": [{"name": "http", "port": 8081}]}
        ]
    }))
    .expect("endpoints");
    Api::<Endpoints>::namespaced(client.clone(), "default")
        .create(&eps)
        .await
        .expect("endpoints");
    reaches_all(&servers, "c2", &manual.spec.cluster_ip, 80, &["s1"]).await;
    for _ in 0..8 {
        let r = get_from_pod(&servers, "c2", &manual.spec.cluster_ip, 80).await;
        assert_eq!(r.as_deref(), Ok("s1"), "the userspace proxy did not retry");
    }

    // ClientIP affinity: one client keeps its endpoint.
    let sticky = svcs
        .create(&service("sticky", json!({"sessionAffinity": "ClientIP"})))
        .await
        .expect("sticky");
    for pod in ["c1", "c2", "c3"] {
        let first = wait_for(TIMEOUT, "the sticky service answers", async || {
            get_from_pod(&servers, pod, &sticky.spec.cluster_ip, 80).await
        })
        .await;
        for _ in 0..6 {
            let b = get_from_pod(&servers, pod, &sticky.spec.cluster_ip, 80).await;
            assert_eq!(b.as_deref(), Ok(first.as_str()), "{pod} left its endpoint");
        }
    }

    // A headless service gets no rules.
    svcs.create(&service("headless", json!({"clusterIP": "None"})))
        .await
        .expect("headless");
    // A LoadBalancer service gets an address from the masters' pool, which
    // answers from outside the nodes, through the elected node.
    svcs.create(&service("lb", json!({"type": "LoadBalancer"})))
        .await
        .expect("lb");
    let lb_ip: std::net::Ipv4Addr =
        wait_for(TIMEOUT, "the masters give lb an address", async || {
            let lb = svcs.get("lb").await.map_err(|e| e.to_string())?;
            lb.status
                .as_ref()
                .and_then(|s| s.load_balancer.ingress.first())
                .and_then(|i| i.ip.parse().ok())
                .ok_or_else(|| format!("status {:?}", lb.status))
        })
        .await;
    outside_reaches_all(
        &outside,
        std::net::SocketAddr::from((lb_ip, 80)),
        "the load balancer address answers from outside",
    )
    .await;
    for h in &lan.hosts[..3] {
        assert!(
            !iptables_save(&h.netns).contains("default/headless")
                && !nft_table(&h.netns).contains("default/headless"),
            "rules for a headless service"
        );
    }
    // web (three endpoints, no affinity) balances through the shared
    // chain for three; sticky has chains of its own.
    let h3 = nft_table(&lan.hosts[2].netns);
    assert!(
        h3.contains(&format!("{cip} . tcp . 80 : goto lb-3"))
            && h3.contains("svc-")
            && h3.contains("-default/sticky/http/tcp"),
        "h3's table:\n{h3}"
    );

    // An established connection survives a restart of the iptables proxy.
    let echo: Pod = serde_json::from_value(json!({
        "metadata": {"name": "echo", "labels": {"app": "echo"}},
        "spec": {"nodeName": names[2], "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "busybox", "command": ["nc", "-ll", "-p", "9000", "-e", "cat"]}]}
    }))
    .expect("echo");
    pods.create(&echo).await.expect("echo");
    running_ip(&pods, "echo").await;
    let echo_svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "echo"},
        "spec": {"selector": {"app": "echo"}, "ports": [{"name": "e", "port": 9000}]}
    }))
    .expect("echo svc");
    let echo_ip = svcs
        .create(&echo_svc)
        .await
        .expect("echo svc")
        .spec
        .cluster_ip;
    wait_for(TIMEOUT, "the echo service answers", async || {
        let cmd = format!("echo ping | nc -w 2 {echo_ip} 9000");
        let out = flt(&servers, &["exec", "c1", "--", "sh", "-c", &cmd]).await;
        if out.stdout.trim() == "ping" {
            Ok(())
        } else {
            Err(out.to_string())
        }
    })
    .await;
    let long = {
        let servers = servers.clone();
        let cmd = format!(
            "(echo one; while [ ! -e /tmp/go ]; do sleep 0.2; done; echo two) | nc -w 10 {echo_ip} 9000"
        );
        tokio::spawn(async move { flt(&servers, &["exec", "c1", "--", "sh", "-c", &cmd]).await })
    };
    // Let the connection establish, restart the proxy, wait for its
    // full resync, then let the client send its second line.
    wait_for(TIMEOUT, "the long connection is established", async || {
        let out = in_netns(
            &lan.hosts[0].netns,
            &[
                "conntrack",
                "-L",
                "-p",
                "tcp",
                "--dport",
                "9000",
                "--state",
                "ESTABLISHED",
            ],
        );
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        if s.contains("ESTABLISHED") {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
    proxies[0].kill();
    proxies[0].spawn();
    wait_for(TIMEOUT, "the restarted proxy synced", async || {
        let log = std::fs::read_to_string(&proxies[0].log).unwrap_or_default();
        if log.matches("full=true").count() >= 2 {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .await;
    flt(&servers, &["exec", "c1", "--", "touch", "/tmp/go"])
        .await
        .ok();
    let out = long.await.expect("long connection");
    assert_eq!(out.stdout, "one\ntwo\n", "{out}");

    // Hairpin on the nftables node, while s3 is still ready.
    let svc = svcs
        .create(&service("self-s3", json!({"selector": {"name": "s3"}})))
        .await
        .expect("self service");
    let ip = svc.spec.cluster_ip;
    let body = wait_for(TIMEOUT, "s3 reaches itself (nftables)", async || {
        get_from_pod(&servers, "s3", &ip, 80).await
    })
    .await;
    assert_eq!(body, "s3");

    // A pod that becomes unready leaves the rules (of iptables mode on h1,
    // of nftables mode on h3) within a second of its endpoint turning
    // unready.
    let s3_ip = running_ip(&pods, "s3").await;
    let slices =
        Api::<flotilla_objects::discovery::EndpointSlice>::namespaced(client.clone(), "default");
    flt(&servers, &["exec", "s3", "--", "rm", "/tmp/ready"])
        .await
        .ok();
    let mut unready_at = None;
    let lag = wait_for(TIMEOUT, "s3 leaves the iptables rules", async || {
        if unready_at.is_none() {
            let l = slices
                .list(&flotilla_client::ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let not_ready = l.items.iter().any(|s| {
                s.service_name() == Some("web")
                    && s.endpoints
                        .iter()
                        .any(|e| e.addresses.contains(&s3_ip) && !e.conditions.is_ready())
            });
            if not_ready {
                unready_at = Some(Instant::now());
            }
        }
        // web's rules only (self-s3 also points at s3): its SEP chains in
        // iptables, its elements under the cluster IP in nftables.
        let in_iptables = iptables_save(&lan.hosts[0].netns).lines().any(|l| {
            l.contains("default/web:http") && l.contains(&format!("--to-destination {s3_ip}:8080"))
        });
        let in_nftables = nft_table(&lan.hosts[2].netns).lines().any(|l| {
            l.contains(&format!("{cip} . 80 . ")) && l.contains(&format!(" : {s3_ip} . 8080"))
        });
        let present = in_iptables || in_nftables;
        match (unready_at, present) {
            (Some(t), false) => Ok(t.elapsed()),
            _ => Err(format!(
                "unready seen: {}, rule present: {present}",
                unready_at.is_some()
            )),
        }
    })
    .await;
    println!("s3 left the rules {lag:?} after its endpoint turned unready");
    assert!(lag < Duration::from_secs(1), "{lag:?}");

    // Hairpin: a pod reaches a service whose only endpoint is itself, on
    // an iptables node (s1) and on the userspace node (s2).
    for (pod, mode) in [("s1", "iptables"), ("s2", "userspace")] {
        let svc = svcs
            .create(&service(
                &format!("self-{pod}"),
                json!({"selector": {"name": pod}}),
            ))
            .await
            .expect("self service");
        let ip = svc.spec.cluster_ip;
        let body = wait_for(
            TIMEOUT,
            &format!("{pod} reaches itself ({mode})"),
            async || get_from_pod(&servers, pod, &ip, 80).await,
        )
        .await;
        assert_eq!(body, pod);
    }

    proxy_policies::ports_external_ips_and_local_policy(&servers, &svcs, &lan, &outside).await;

    udp_services(&client, &lan).await;

    // LB handover: the node answering the load balancer address loses its
    // agent; once the masters mark it NotReady (the node lifecycle's 40 s
    // grace), another node takes the address and it answers again.
    let holder = |lan: &Lan| {
        (0..3).find(|&i| {
            String::from_utf8_lossy(
                &in_netns(&lan.hosts[i].netns, &["ip", "-4", "addr", "show"]).stdout,
            )
            .contains(&format!("{lb_ip}/32"))
        })
    };
    let first = holder(&lan).expect("a node holds the load balancer address");
    agents[first].stop();
    let next = wait_for(
        Duration::from_secs(120),
        "another node takes the load balancer address",
        async || match holder(&lan) {
            Some(i) if i != first => Ok(i),
            other => Err(format!("held by {other:?}")),
        },
    )
    .await;
    wait_for(
        TIMEOUT,
        "the load balancer address answers after the handover",
        async || http_get_in(&outside, std::net::SocketAddr::from((lb_ip, 80)), "/").await,
    )
    .await;
    println!(
        "load balancer address moved from h{} to h{}",
        first + 1,
        next + 1
    );
    agents[first].restart();

    // --cleanup on a host that ran a proxy in iptables mode and then in
    // nftables mode (which removes the iptables mode's chains on start)
    // leaves its tables as before.
    {
        let cip_rule = format!("-d {cip}/32");
        let cip_element = format!("{cip} . tcp . 80");
        type Listing = fn(&str) -> String;
        let written: [(&str, Listing, &str); 2] = [
            ("iptables", iptables_save, &cip_rule),
            ("nftables", nft_table, &cip_element),
        ];
        for (mode, rules, wanted) in written {
            let mut p = ProxyProc::start(&servers, "outside", &lan.hosts[3], mode, cluster.dir());
            wait_for(
                TIMEOUT,
                &format!("the outside proxy wrote its {mode} rules"),
                async || {
                    let s = rules(&outside);
                    if s.contains(wanted) {
                        Ok(())
                    } else {
                        Err(s)
                    }
                },
            )
            .await;
            if mode == "nftables" {
                // After its first sync, nftables mode removes what the
                // iptables run left.
                wait_for(
                    TIMEOUT,
                    "nftables mode removes iptables mode's chains",
                    async || {
                        let s = iptables_save(&outside);
                        if s.contains("FLOTILLA-") {
                            Err(s)
                        } else {
                            Ok(())
                        }
                    },
                )
                .await;
            }
            p.kill();
        }
        let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["proxy", "--cleanup", "--netns", &lan.hosts[3].netns_path()])
            .output()
            .expect("cleanup");
        assert!(out.status.success(), "{out:?}");
        assert_eq!((iptables_save(&outside), routes(&outside)), before_outside);
        assert_eq!(nft_table(&outside), "", "--cleanup left the nftables table");
    }
    proxies.clear();
}

/// A UDP socket made in `netns` (it stays there), bound to `port` on all
/// of the namespace's addresses.
fn udp_socket_in(netns: &str, port: u16) -> std::net::UdpSocket {
    let netns = netns.to_string();
    std::thread::spawn(move || {
        flotilla_proxy::netns::enter(std::path::Path::new(&netns)).expect("setns");
        let s = std::net::UdpSocket::bind(("0.0.0.0", port)).expect("udp bind");
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        s
    })
    .join()
    .expect("socket thread")
}

/// A UDP server in `netns` answering every datagram with `reply`, until
/// the test ends (its thread is detached; the namespace goes with the Lan).
fn udp_server(netns: &str, port: u16, reply: &'static str) {
    let s = udp_socket_in(netns, port);
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        loop {
            match s.recv_from(&mut buf) {
                Ok((_, from)) => {
                    let _ = s.send_to(reply.as_bytes(), from);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return,
            }
        }
    });
}

/// One datagram to `to` from `s`; the answer's text.
async fn ask_udp(s: &std::net::UdpSocket, to: std::net::SocketAddr) -> Result<String, String> {
    let s = s.try_clone().map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || {
        s.send_to(b"hi", to).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1500];
        let (n, _) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// A UDP service without a selector whose endpoint is a server on the
/// outside host: the userspace node serves it, and when the endpoint moves
/// to another server the iptables node flushes the conntrack entry of the
/// old one, so a client that keeps its source port (and so its conntrack
/// entry, refreshed by every datagram) reaches the new one.
async fn udp_services(client: &Client, lan: &Lan) {
    let outside = &lan.hosts[3];
    udp_server(&outside.netns_path(), 9001, "A");
    udp_server(&outside.netns_path(), 9002, "B");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "udp"},
        "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}
    }))
    .expect("udp service");
    let svc = Api::<Service>::namespaced(client.clone(), "default")
        .create(&svc)
        .await
        .expect("udp service");
    let to = std::net::SocketAddr::from((
        svc.spec
            .cluster_ip
            .parse::<std::net::Ipv4Addr>()
            .expect("cluster ip"),
        53,
    ));
    let endpoints = |port: u16| -> Endpoints {
        serde_json::from_value(json!({
            "metadata": {"name": "udp"},
            "subsets": [{"addresses": [{"ip": outside.ip.to_string()}],
                "ports": [{"name": "dns", "port": port, "protocol": "UDP"}]}]
        }))
        .expect("endpoints")
    };
    let eps = Api::<Endpoints>::namespaced(client.clone(), "default");
    eps.create(&endpoints(9001)).await.expect("endpoints");
    let iptables_node = udp_socket_in(&lan.hosts[0].netns_path(), 0);
    let userspace_node = udp_socket_in(&lan.hosts[1].netns_path(), 0);
    let nftables_node = udp_socket_in(&lan.hosts[2].netns_path(), 0);
    let nodes = [
        (&iptables_node, "iptables"),
        (&userspace_node, "userspace"),
        (&nftables_node, "nftables"),
    ];
    for (s, mode) in nodes {
        wait_for(
            TIMEOUT,
            &format!("the UDP service answers on the {mode} node"),
            async || match ask_udp(s, to).await? {
                a if a == "A" => Ok(()),
                a => Err(format!("answered {a:?}")),
            },
        )
        .await;
    }
    let mut moved = eps.get("udp").await.expect("endpoints");
    moved.subsets = endpoints(9002).subsets;
    eps.replace(&moved).await.expect("move the endpoint");
    // Every attempt refreshes the old conntrack entry: only its flush lets
    // the datagrams reach the new endpoint.
    for (s, mode) in nodes {
        wait_for(
            Duration::from_secs(15),
            &format!("the {mode} node's client reaches the moved UDP endpoint"),
            async || match ask_udp(s, to).await? {
                a if a == "B" => Ok(()),
                a => Err(format!("answered {a:?}")),
            },
        )
        .await;
    }
}
