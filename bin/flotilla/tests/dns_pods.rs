//! Cluster DNS from inside pods, end to end: a master serving DNS on the
//! test bridge, two hosts with real agents (containerd, busybox from the
//! test registry) started with `--cluster-dns 10.96.0.10`, and iptables
//! proxies that take pods' queries to the kube-dns ClusterIP on to the
//! master. Pods resolve services by their short name (through the search
//! path of the resolv.conf the agent gave them) and by `<svc>.<ns>`, and
//! connect through the proxy; the guestbook's frontend reaches
//! `redis-master` by name; the agent's /etc/hosts carries the pod's own
//! name and its hostAliases. One test, one cluster.
//!
//! Debian's busybox is static glibc, whose `getaddrinfo` cannot load NSS
//! modules in an image without the shared glibc (it crashes), so names are
//! resolved with busybox `nslookup` (its own resolver, which reads the
//! pod's resolv.conf: name server and search path) and busybox `nc`
//! connects to the address it printed.

mod agent_support;
mod common;

use std::time::Duration;

use agent_support::lan::Lan;
use agent_support::proxy::{Cleanup, ProxyProc};
use agent_support::{flt, running_ip, AgentProc, Registry};
use common::{wait_for, Cluster, Opts};
use flotilla_client::{Api, Client};
use flotilla_objects::core::{Namespace, Node, Pod, Service};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);
const CLUSTER_DNS: &str = "10.96.0.10";

/// A busybox httpd on `port` answering `body`, labelled `app`.
fn server(name: &str, node: &str, app: &str, port: u16, body: &str) -> Pod {
    let cmd =
        format!("mkdir /www && echo {body} > /www/index.html && exec httpd -f -p {port} -h /www");
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", cmd]}]}
    }))
    .expect("pod")
}

fn service(name: &str, app: &str, port: u16, target: u16) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"app": app}, "ports": [{"port": port, "targetPort": target}]}
    }))
    .expect("service")
}

/// Run `script` with sh in pod `pod` of `ns`; stdout, or the failure.
async fn sh(servers: &str, ns: &str, pod: &str, script: &str) -> Result<String, String> {
    let out = flt(servers, &["-n", ns, "exec", pod, "--", "sh", "-c", script]).await;
    if out.success() {
        Ok(out.stdout)
    } else {
        Err(out.to_string())
    }
}

/// The address busybox nslookup in `pod` gives for `name`.
async fn resolve(servers: &str, pod: &str, name: &str) -> Result<String, String> {
    // busybox nslookup walks the search path for names without a dot only
    // (and exits 1 when any search domain has no answer, even though one
    // had); for a dotted name the script walks the pod's search path in
    // order, as glibc does under ndots:5.
    let script = if name.contains('.') {
        format!(
            "for d in $(sed -n 's/^search //p' /etc/resolv.conf); do \
               out=$(nslookup {name}.$d); \
               case \"$out\" in *Name:*) echo \"$out\"; break;; esac; \
             done; true"
        )
    } else {
        format!("nslookup {name}; true")
    };
    let out = sh(servers, "default", pod, &script).await?;
    // "Name:\tweb.default.svc.cluster.local\nAddress: 10.96.12.7"
    out.split("Name:")
        .nth(1)
        .and_then(|rest| rest.lines().find_map(|l| l.strip_prefix("Address:")))
        .map(|a| a.trim().to_string())
        .ok_or_else(|| format!("no answer: {out}"))
}

/// Resolve `name` in `pod`, then GET / from the address it gave (with
/// busybox nc: its wget goes through glibc's resolver even for an
/// address); the body.
async fn get_by_name(servers: &str, pod: &str, name: &str, port: u16) -> Result<String, String> {
    let ip = resolve(servers, pod, name).await?;
    let out = sh(
        servers,
        "default",
        pod,
        &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port}"),
    )
    .await?;
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .ok_or_else(|| format!("no HTTP answer from {ip}: {out:?}"))
}

#[tokio::test]
async fn pods_find_services_by_name() {
    let mut lan = Lan::new();
    for _ in 0..2 {
        lan.add_host();
    }
    // The master answers DNS on the bridge, where pods' queries arrive
    // through the proxies' DNAT of the kube-dns ClusterIP.
    let cluster = Cluster::start(
        1,
        Opts {
            // Names outside the zone would go to a dead loopback port,
            // never to the machine's resolvers.
            extra_args: vec![
                "--dns-addr".into(),
                format!("{}:0", lan.gateway),
                "--dns-upstream".into(),
                "127.0.0.1:9".into(),
            ],
            ..Opts::default()
        },
    )
    .await;
    let registry = Registry::start(cluster.dir(), lan.gateway);
    let servers = cluster.endpoints();
    let names: Vec<String> = (1..=2).map(|i| format!("d{i}-{}", lan.id)).collect();
    let _agents: Vec<AgentProc> = (0..2)
        .map(|i| {
            AgentProc::start_with(
                &servers,
                &names[i],
                &lan.hosts[i],
                cluster.dir(),
                &registry,
                &["--cluster-dns", CLUSTER_DNS],
            )
        })
        .collect();
    let _cleanup = Cleanup(lan.hosts.iter().map(|h| h.netns_path()).collect());
    let _proxies: Vec<ProxyProc> = (0..2)
        .map(|i| {
            ProxyProc::start(
                &servers,
                &names[i],
                &lan.hosts[i],
                "iptables",
                cluster.dir(),
            )
        })
        .collect();

    let client = Client::connect(&[cluster.client_addr(0)]).expect("client");
    // Answers from the master on the bridge go back to the pods' CIDRs.
    let nodes = Api::<Node>::all(client.clone());
    for (i, n) in names.iter().enumerate() {
        let cidr = wait_for(TIMEOUT, &format!("{n} has a pod CIDR"), async || {
            let node = nodes.get(n).await.map_err(|e| e.to_string())?;
            let c = node.spec.pod_cidr.clone();
            if c.is_empty() {
                Err("none yet".to_string())
            } else {
                Ok(c)
            }
        })
        .await;
        lan.route_to(&cidr, i);
    }

    let other: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "other-ns"}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&other)
        .await
        .expect("namespace");
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let other_pods = Api::<Pod>::namespaced(client.clone(), "other-ns");
    let svcs = Api::<Service>::namespaced(client.clone(), "default");
    let other_svcs = Api::<Service>::namespaced(client.clone(), "other-ns");
    pods.create(&server("web", &names[0], "web", 8080, "web-in-default"))
        .await
        .expect("web");
    other_pods
        .create(&server("web", &names[1], "web", 8080, "web-in-other-ns"))
        .await
        .expect("other web");
    // The guestbook's redis: any TCP server does.
    pods.create(&server("redis", &names[1], "redis", 6379, "redis-master"))
        .await
        .expect("redis");
    let frontend: Pod = serde_json::from_value(json!({
        "metadata": {"name": "frontend"},
        "spec": {"nodeName": names[0], "terminationGracePeriodSeconds": 0,
            "hostAliases": [{"ip": "127.0.0.2", "hostnames": ["foo.alias", "bar.alias"]}],
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}
    }))
    .expect("frontend");
    pods.create(&frontend).await.expect("frontend");
    let web_ip = svcs
        .create(&service("web", "web", 80, 8080))
        .await
        .expect("web svc")
        .spec
        .cluster_ip;
    let other_ip = other_svcs
        .create(&service("web", "web", 80, 8080))
        .await
        .expect("other web svc")
        .spec
        .cluster_ip;
    svcs.create(&service("redis-master", "redis", 6379, 6379))
        .await
        .expect("redis svc");
    for (api, name) in [
        (&pods, "web"),
        (&other_pods, "web"),
        (&pods, "redis"),
        (&pods, "frontend"),
    ] {
        running_ip(api, name).await;
    }
    let frontend_ip = running_ip(&pods, "frontend").await;

    // The resolv.conf the agent gave the pod.
    let conf = sh(&servers, "default", "frontend", "cat /etc/resolv.conf")
        .await
        .expect("resolv.conf");
    assert!(
        conf.contains(&format!("nameserver {CLUSTER_DNS}")),
        "{conf}"
    );
    assert!(
        conf.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{conf}"
    );
    assert!(conf.contains("ndots:5"), "{conf}");

    // Short name through the search path, and <svc>.<ns>: each its own
    // service's address, then its own pod through the proxy.
    let got = wait_for(TIMEOUT, "web resolves in the pod", async || {
        resolve(&servers, "frontend", "web").await
    })
    .await;
    assert_eq!(got, web_ip);
    let got = wait_for(TIMEOUT, "web.other-ns resolves in the pod", async || {
        resolve(&servers, "frontend", "web.other-ns").await
    })
    .await;
    assert_eq!(got, other_ip);
    wait_for(
        TIMEOUT,
        "the frontend reaches web by name",
        async || match get_by_name(&servers, "frontend", "web", 80).await? {
            b if b == "web-in-default" => Ok(()),
            b => Err(format!("answered {b}")),
        },
    )
    .await;
    wait_for(
        TIMEOUT,
        "the frontend reaches web.other-ns by name",
        async || match get_by_name(&servers, "frontend", "web.other-ns", 80).await? {
            b if b == "web-in-other-ns" => Ok(()),
            b => Err(format!("answered {b}")),
        },
    )
    .await;
    // The guestbook: the frontend talks to redis-master by name.
    wait_for(
        TIMEOUT,
        "the frontend reaches redis-master by name",
        async || match get_by_name(&servers, "frontend", "redis-master", 6379).await? {
            b if b == "redis-master" => Ok(()),
            b => Err(format!("answered {b}")),
        },
    )
    .await;
    // /etc/hosts: the pod's own name at its address, then hostAliases.
    let hosts = sh(&servers, "default", "frontend", "cat /etc/hosts")
        .await
        .expect("hosts");
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file.\n"),
        "{hosts}"
    );
    assert!(
        hosts.contains(&format!("\n{frontend_ip}\tfrontend\n")),
        "{hosts}"
    );
    assert!(
        hosts.ends_with("\n# Entries added by HostAliases.\n127.0.0.2\tfoo.alias\tbar.alias\n"),
        "{hosts}"
    );
    let hostname = sh(&servers, "default", "frontend", "hostname")
        .await
        .expect("hostname");
    assert_eq!(hostname.trim(), "frontend");
}
