//! Cluster DNS against real master processes, asked with Debian's `dig`;
//! forwarding to a Knot DNS server the test runs on loopback.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// A `dig` answer: the status line's fields and the record lines.
struct Dig {
    out: String,
}

impl Dig {
    fn status(&self) -> &str {
        self.out
            .split("status: ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or("")
    }
    fn flags(&self) -> &str {
        self.out
            .split("flags: ")
            .nth(1)
            .and_then(|s| s.split(';').next())
            .unwrap_or("")
    }
    /// Records of one section (`ANSWER`, `AUTHORITY`, `ADDITIONAL`), as
    /// (name, type, data).
    fn section(&self, name: &str) -> Vec<(String, String, String)> {
        let head = format!(";; {name} SECTION:");
        let Some(rest) = self.out.split(&head).nth(1) else {
            return Vec::new();
        };
        rest.lines()
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 5).then(|| (f[0].to_string(), f[3].to_string(), f[4..].join(" ")))
            })
            .collect()
    }
    fn answers(&self) -> Vec<(String, String, String)> {
        self.section("ANSWER")
    }
    fn data(&self, rtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .answers()
            .into_iter()
            .filter(|(_, t, _)| t == rtype)
            .map(|(_, _, d)| d)
            .collect();
        v.sort();
        v
    }
}

/// The Prometheus text a master serves on its client port.
async fn curl_metrics(addr: &str) -> String {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-s", "-m", "10", &format!("http://{addr}/metrics")]);
    run_command(&mut cmd, format!("curl {addr}/metrics"), None, WAIT)
        .await
        .stdout
}

async fn dig(server: &str, args: &[&str]) -> Dig {
    let (ip, port) = server.rsplit_once(':').expect("HOST:PORT");
    let mut cmd = tokio::process::Command::new("dig");
    cmd.arg(format!("@{ip}"))
        .args(["-p", port, "+tries=1", "+time=2"])
        .args(args);
    let out = run_command(&mut cmd, format!("dig {args:?}"), None, WAIT).await;
    Dig {
        out: out.stdout + &out.stderr,
    }
}

async fn flt(cluster: &Cluster, args: &[&str], input: Option<&str>) -> CmdOut {
    let mut cmd = tokio::process::Command::new(flt_bin());
    cmd.args(["--server", &cluster.endpoints()])
        .args(args)
        .env("HOME", cluster.dir());
    run_command(
        &mut cmd,
        format!("flt {args:?}"),
        input.map(|s| s.as_bytes().to_vec()),
        WAIT,
    )
    .await
}

async fn apply(cluster: &Cluster, yaml: &str) {
    flt(cluster, &["apply", "-f", "-"], Some(yaml)).await.ok();
}

/// The DNS address each master logged ("serving cluster DNS").
async fn dns_addrs(cluster: &Cluster) -> Vec<String> {
    let mut out = Vec::new();
    for m in &cluster.masters {
        let path = m.log_path.clone();
        let addr = wait_for(WAIT, "a master's DNS address in its log", async || {
            let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
            text.lines()
                .find(|l| l.contains("serving cluster DNS"))
                .and_then(|l| l.split("dns{addr=").nth(1))
                .and_then(|s| s.split('}').next())
                .map(str::to_string)
                .ok_or_else(|| "not yet".to_string())
        })
        .await;
        out.push(addr);
    }
    out
}

/// A Knot DNS server on loopback serving `example.test`, killed on drop.
struct Knot {
    child: std::process::Child,
    addr: String,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_knot(dir: &Path) -> Knot {
    let port = free_port();
    let d = dir.join("knot");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("example.test.zone"),
        "$ORIGIN example.test.\n$TTL 60\n@ SOA ns hostmaster 1 60 60 600 60\n@ NS ns\nns A 127.0.0.1\nwww A 192.0.2.80\n",
    )
    .unwrap();
    let conf = format!(
        "server:\n  listen: 127.0.0.1@{port}\n  rundir: {d}\ndatabase:\n  storage: {d}\nzone:\n  - domain: example.test\n    file: {d}/example.test.zone\n",
        d = d.display()
    );
    std::fs::write(d.join("knot.conf"), conf).unwrap();
    let child = std::process::Command::new("knotd")
        .arg("-c")
        .arg(d.join("knot.conf"))
        .stdout(std::fs::File::create(d.join("log")).unwrap())
        .stderr(std::fs::File::create(d.join("err")).unwrap())
        .spawn()
        .expect("knotd (Debian's knot) must be installed: scripts/install-deps");
    Knot {
        child,
        addr: format!("127.0.0.1:{port}"),
    }
}

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, protocol: TCP}, {name: dns, port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec: {type: ExternalName, externalName: www.example.test}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec: {clusterIP: None, ports: [{name: sql, port: 5432}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: default
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports: [{name: sql, port: 5432, protocol: TCP}]
endpoints:
- addresses: [10.244.1.10]
  hostname: db-0
  conditions: {ready: true}
- addresses: [10.244.1.11]
  conditions: {ready: true}
- addresses: [10.244.1.12]
  conditions: {ready: false}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec: {clusterIP: None, selector: {app: nothing}}
"#;

fn big_slice(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: default}\nspec: {clusterIP: None}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: big-1\n  namespace: default\n  labels: {kubernetes.io/service-name: big}\naddressType: IPv4\nendpoints:\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "- addresses: [10.244.2.{}]\n  conditions: {{ready: true}}\n",
            i + 1
        ));
    }
    s
}

/// Every record type, negative answers, case, TCP fallback, EDNS0,
/// forwarding, changes on every master, and a master without quorum —
/// on one cluster of three real masters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_answers_from_every_master() {
    let dir = tempfile::tempdir().unwrap();
    let knot = start_knot(dir.path());
    let mut cluster = Cluster::start(
        3,
        Opts {
            extra_args: vec![
                "--dns-addr".into(),
                "127.0.0.1:0".into(),
                "--dns-upstream".into(),
                knot.addr.clone(),
            ],
            ..Opts::default()
        },
    )
    .await;
    let dns = dns_addrs(&cluster).await;
    apply(&cluster, SERVICES).await;
    apply(&cluster, &big_slice(100)).await;
    let ip = flt(&cluster, &["get", "svc", "web", "-o", "json"], None)
        .await
        .ok()
        .json()["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let d = &dns[0];
    wait_until(WAIT, "every master has the services", async || {
        for a in &dns {
            if dig(a, &["db.default.svc.cluster.local"])
                .await
                .data("A")
                .len()
                != 2
            {
                return false;
            }
        }
        true
    })
    .await;

    // kube-dns: the fixed ClusterIP, one slice per master with its address.
    wait_until(WAIT, "kube-dns resolves to --cluster-dns", async || {
        dig(d, &["kube-dns.kube-system.svc.cluster.local"])
            .await
            .data("A")
            == vec!["10.96.0.10"]
    })
    .await;
    wait_until(WAIT, "a kube-dns slice per master", async || {
        let out = flt(
            &cluster,
            &["get", "endpointslices", "-n", "kube-system", "-o", "json"],
            None,
        )
        .await;
        let ports: Vec<String> = out.json()["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| format!("127.0.0.1:{}", s["ports"][0]["port"]))
                    .collect()
            })
            .unwrap_or_default();
        dns.iter().all(|a| ports.contains(a))
    })
    .await;

    // A, in the query's case.
    let r = dig(d, &["WeB.Default.svc.Cluster.Local"]).await;
    assert_eq!(r.status(), "NOERROR", "{}", r.out);
    assert!(r.flags().contains("aa"), "{}", r.out);
    assert_eq!(
        r.answers()[0].0,
        "WeB.Default.svc.Cluster.Local.",
        "{}",
        r.out
    );
    assert_eq!(r.data("A"), vec![ip.clone()]);
    // NODATA: the name exists, no AAAA; SOA in authority.
    let r = dig(d, &["web.default.svc.cluster.local", "AAAA"]).await;
    assert_eq!(r.status(), "NOERROR", "{}", r.out);
    assert!(r.answers().is_empty(), "{}", r.out);
    assert_eq!(r.section("AUTHORITY")[0].1, "SOA", "{}", r.out);
    // NXDOMAIN, SOA in authority with the negative TTL.
    let r = dig(d, &["nope.default.svc.cluster.local"]).await;
    assert_eq!(r.status(), "NXDOMAIN", "{}", r.out);
    let soa = &r.section("AUTHORITY")[0];
    assert_eq!(soa.1, "SOA", "{}", r.out);
    assert!(r.out.contains("cluster.local.\t\t30\tIN\tSOA"), "{}", r.out);
    // The queries so far show in master 0's CoreDNS-named series.
    let metrics = curl_metrics(&cluster.client_addr(0)).await;
    for (series, label) in [
        ("coredns_dns_requests_total", "type=\"AAAA\""),
        ("coredns_dns_responses_total", "rcode=\"NXDOMAIN\""),
        (
            "coredns_dns_request_duration_seconds_count",
            "proto=\"udp\"",
        ),
    ] {
        let counted = metrics.lines().any(|l| {
            l.starts_with(series)
                && l.contains(label)
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) > Some(0.0)
        });
        assert!(
            counted,
            "{series}{{{label}}} not counted on master 0:\n{metrics}"
        );
    }
    // An empty non-terminal is NODATA, not NXDOMAIN.
    let r = dig(d, &["default.svc.cluster.local"]).await;
    assert_eq!(r.status(), "NOERROR", "{}", r.out);
    // SRV for named ports, targets' addresses in the additional section.
    let r = dig(d, &["_http._tcp.web.default.svc.cluster.local", "SRV"]).await;
    assert_eq!(
        r.data("SRV"),
        vec!["0 100 80 web.default.svc.cluster.local.".to_string()]
    );
    assert!(
        r.section("ADDITIONAL")
            .iter()
            .any(|(n, t, v)| n == "web.default.svc.cluster.local." && t == "A" && *v == ip),
        "{}",
        r.out
    );
    let r = dig(d, &["_dns._udp.web.default.svc.cluster.local", "SRV"]).await;
    assert_eq!(r.data("SRV").len(), 1, "{}", r.out);
    // PTR of the ClusterIP and of a headless endpoint with a hostname.
    let r = dig(d, &["-x", &ip]).await;
    assert_eq!(
        r.data("PTR"),
        vec!["web.default.svc.cluster.local.".to_string()]
    );
    let r = dig(d, &["-x", "10.244.1.10"]).await;
    assert_eq!(
        r.data("PTR"),
        vec!["db-0.db.default.svc.cluster.local.".to_string()]
    );
    // Headless: ready endpoints only; hostname records; SRV per endpoint.
    let r = dig(d, &["db.default.svc.cluster.local"]).await;
    assert_eq!(r.data("A"), vec!["10.244.1.10", "10.244.1.11"]);
    let r = dig(d, &["db-0.db.default.svc.cluster.local"]).await;
    assert_eq!(r.data("A"), vec!["10.244.1.10"]);
    let r = dig(d, &["_sql._tcp.db.default.svc.cluster.local", "SRV"]).await;
    assert_eq!(r.data("SRV").len(), 2, "{}", r.out);
    assert_eq!(
        r.section("ADDITIONAL")
            .iter()
            .filter(|x| x.1 == "A")
            .count(),
        2,
        "{}",
        r.out
    );
    // A headless service without endpoints: NODATA.
    let r = dig(d, &["empty.default.svc.cluster.local"]).await;
    assert_eq!(r.status(), "NOERROR", "{}", r.out);
    assert!(r.answers().is_empty(), "{}", r.out);
    // ExternalName: a CNAME.
    let r = dig(d, &["ext.default.svc.cluster.local", "CNAME"]).await;
    assert_eq!(r.data("CNAME"), vec!["www.example.test.".to_string()]);
    // Pod names, dns-version, SOA and NS at the apex.
    let r = dig(d, &["10-244-3-7.default.pod.cluster.local"]).await;
    assert_eq!(r.data("A"), vec!["10.244.3.7"]);
    let r = dig(d, &["dns-version.cluster.local", "TXT"]).await;
    assert_eq!(r.data("TXT"), vec!["\"1.1.0\"".to_string()]);
    assert_eq!(dig(d, &["cluster.local", "SOA"]).await.data("SOA").len(), 1);
    let r = dig(d, &["cluster.local", "NS"]).await;
    assert_eq!(r.data("NS"), vec!["ns.dns.cluster.local.".to_string()]);

    // 100 addresses do not fit 512 bytes: TC over UDP, then all over TCP.
    let r = dig(d, &["big.default.svc.cluster.local", "+noedns", "+ignore"]).await;
    assert!(r.flags().contains("tc"), "{}", r.out);
    assert!(r.answers().is_empty(), "{}", r.out);
    let r = dig(d, &["big.default.svc.cluster.local", "+noedns"]).await;
    assert_eq!(r.data("A").len(), 100, "{}", r.out);
    let r = dig(d, &["big.default.svc.cluster.local", "+tcp"]).await;
    assert_eq!(r.data("A").len(), 100, "{}", r.out);
    // EDNS0: a 4096-byte buffer takes them over UDP; 1232 does not.
    let r = dig(
        d,
        &["big.default.svc.cluster.local", "+bufsize=4096", "+ignore"],
    )
    .await;
    assert!(!r.flags().contains("tc"), "{}", r.out);
    assert_eq!(r.data("A").len(), 100, "{}", r.out);
    assert!(r.out.contains("EDNS: version: 0"), "{}", r.out);
    let r = dig(
        d,
        &["big.default.svc.cluster.local", "+bufsize=1232", "+ignore"],
    )
    .await;
    assert!(r.flags().contains("tc"), "{}", r.out);

    // Forwarding to the upstream on loopback, then from the cache.
    let r = dig(d, &["WWW.example.test"]).await;
    assert_eq!(r.data("A"), vec!["192.0.2.80"], "{}", r.out);
    assert!(!r.flags().contains("aa"), "{}", r.out);
    assert_eq!(r.answers()[0].0, "WWW.example.test.", "{}", r.out);
    let r = dig(d, &["nothing.example.test"]).await;
    assert_eq!(r.status(), "NXDOMAIN", "{}", r.out);
    drop(knot);
    let r = dig(d, &["www.example.test"]).await;
    assert_eq!(r.data("A"), vec!["192.0.2.80"], "cached: {}", r.out);
    let r = dig(d, &["uncached.example.test"]).await;
    assert_eq!(r.status(), "SERVFAIL", "{}", r.out);

    // A service created, changed and deleted: seen by every master.
    let started = Instant::now();
    apply(
        &cluster,
        "apiVersion: v1\nkind: Service\nmetadata: {name: late, namespace: default}\nspec: {type: ExternalName, externalName: one.example.test}\n",
    )
    .await;
    for (what, want) in [
        ("created", Some("one.example.test.")),
        ("changed", Some("two.example.test.")),
        ("deleted", None),
    ] {
        if what == "changed" {
            apply(
                &cluster,
                "apiVersion: v1\nkind: Service\nmetadata: {name: late, namespace: default}\nspec: {type: ExternalName, externalName: two.example.test}\n",
            )
            .await;
        } else if what == "deleted" {
            flt(&cluster, &["delete", "svc", "late"], None).await.ok();
        }
        let t = Instant::now();
        wait_until(
            WAIT,
            &format!("every master answers the {what} service"),
            async || {
                for a in &dns {
                    let r = dig(a, &["late.default.svc.cluster.local", "CNAME"]).await;
                    let ok = match want {
                        Some(w) => r.data("CNAME") == vec![w.to_string()],
                        None => r.status() == "NXDOMAIN",
                    };
                    if !ok {
                        return false;
                    }
                }
                true
            },
        )
        .await;
        println!(
            "[dns] {what}: on every master {:?} after the write",
            t.elapsed()
        );
    }
    println!("[dns] change checks took {:?}", started.elapsed());

    // A master whose two peers are gone keeps answering from its replica.
    let log = cluster.masters[0].log_path.clone();
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    cluster.kill(1);
    cluster.kill(2);
    wait_until(
        WAIT,
        "the lone master says it lost its quorum",
        async || {
            std::fs::read_to_string(&log).is_ok_and(|t| {
                t.get(before..)
                    .is_some_and(|t| t.contains("without quorum"))
            })
        },
    )
    .await;
    let r = dig(d, &["web.default.svc.cluster.local"]).await;
    assert_eq!(r.data("A"), vec![ip.clone()], "{}", r.out);
    let r = dig(d, &["db-0.db.default.svc.cluster.local", "+tcp"]).await;
    assert_eq!(r.data("A"), vec!["10.244.1.10"], "{}", r.out);
}
