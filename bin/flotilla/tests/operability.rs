//! Operability of real masters, as an operator's tools see it: Prometheus
//! scrapes of `/metrics` (etcd's series moving under writes and a leader
//! kill, the API server's by verb and code), etcd's `/health` and the
//! `/livez` / `/readyz` endpoints checked with curl, `etcdctl check
//! datascale`, and a backup taken with `etcdctl snapshot save` under load,
//! read with `flotilla snapshot status`, and restored with `flotilla
//! restore` into a new cluster after every master was destroyed.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// `curl URL`: (HTTP status, body).
async fn curl(url: &str) -> (u16, String) {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-s", "-m", "10", "-w", "\n%{http_code}", url]);
    let out = run_command(&mut cmd, format!("curl {url}"), None, WAIT).await;
    let (body, code) = out
        .stdout
        .rsplit_once('\n')
        .unwrap_or((out.stdout.as_str(), "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The sum of the samples of `name` whose labels include every one of
/// `labels`, in a Prometheus text exposition.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labelset, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        if labels
            .iter()
            .all(|(k, v)| labelset.contains(&format!("{k}=\"{v}\"")))
        {
            let v: f64 = value.trim().parse().unwrap_or(f64::NAN);
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

async fn metrics(addr: &str) -> String {
    let (code, body) = curl(&format!("http://{addr}/metrics")).await;
    assert_eq!(code, 200, "GET http://{addr}/metrics: {body}");
    body
}

async fn value(addr: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(&metrics(addr).await, name, labels).unwrap_or(0.0)
}

/// The address a master printed for its `--metrics-addr 127.0.0.1:0`.
fn metrics_addr(log: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains("serving /metrics"))?;
    let at = line.find("addr=")? + 5;
    Some(line[at..].split_whitespace().next()?.to_string())
}

/// Writes that queue at a follower reach the leader together, in one
/// message on the follower's stream to the leader: with the leader paused,
/// 100 writes wait at a follower, more than it sends at once; once the
/// leader runs again every one is acknowledged and applied once, in fewer
/// messages than writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_queued_at_a_follower_reach_the_leader_together() {
    if skip_on_etcd(
        "writes_queued_at_a_follower_reach_the_leader_together",
        false,
    ) {
        return;
    }
    let mut c = Cluster::start(3, Opts::default()).await;
    let leader = c.leader().await;
    let fa = c.client_addr((leader + 1) % 3);
    c.pause(leader);
    let puts: Vec<_> = (0..100)
        .map(|i| {
            let fa = fa.clone();
            tokio::spawn(
                async move { put(&fa, &format!("forwarded/{i:03}"), &format!("v{i}")).await },
            )
        })
        .collect();
    wait_until(WAIT, "the follower holds the 100 writes", async || {
        value(&fa, "etcd_server_proposals_pending", &[]).await >= 100.0
    })
    .await;
    c.resume(leader);
    for p in futures::future::join_all(puts).await {
        p.expect("join").expect("a put through a follower");
    }
    let kvs = range_prefix(&fa, "forwarded/", false)
        .await
        .expect("range of the forwarded writes");
    assert_eq!(kvs.len(), 100, "every forwarded write is applied");
    for (i, (key, (value, _))) in kvs.iter().enumerate() {
        assert_eq!(
            (key.as_str(), value.as_str()),
            (
                format!("forwarded/{i:03}").as_str(),
                format!("v{i}").as_str()
            )
        );
    }
    let fm = metrics(&fa).await;
    let calls = sample(&fm, "flotilla_raft_forward_commands_count", &[]).unwrap_or(0.0);
    let writes = sample(&fm, "flotilla_raft_forward_commands_sum", &[]).unwrap_or(0.0);
    assert!(
        writes >= 100.0 && calls < writes,
        "the follower forwarded {writes} writes in {calls} messages"
    );
}

/// `--snapshot-log-mib`: a log that grows past its size takes a snapshot
/// even when it is far from `--snapshot-logs` entries (large batches carry
/// many writes per entry, and the log was never purged).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_past_its_size_threshold_takes_a_snapshot() {
    if skip_on_etcd("a_log_past_its_size_threshold_takes_a_snapshot", false) {
        return;
    }
    let c = Cluster::start(
        3,
        Opts {
            // A tenth of it (100 entries) is kept behind a snapshot.
            snapshot_logs: Some(1_000),
            extra_args: vec!["--snapshot-log-mib".into(), "1".into()],
            ..Opts::default()
        },
    )
    .await;
    let leader = c.leader().await;
    let la = c.client_addr(leader);
    let snapshot_index = async || value(&la, "flotilla_raft_snapshot_index", &[]).await;
    assert_eq!(snapshot_index().await, 0.0, "a snapshot before any write");
    // 150 small writes (an entry each, far from 1,000 entries and 1 MiB),
    // then 1.5 MiB in three writes.
    for i in 0..150 {
        put(&la, &format!("small/{i}"), "v").await.expect("put");
    }
    assert_eq!(
        snapshot_index().await,
        0.0,
        "a snapshot before 1 MiB of log"
    );
    let big = "x".repeat(512 << 10);
    for i in 0..3 {
        put(&la, &format!("big/{i}"), &big).await.expect("put");
    }
    wait_until(WAIT, "the leader takes a snapshot", async || {
        snapshot_index().await > 0.0
    })
    .await;
    // The log is purged behind it, but for the 100 entries kept.
    let purged_index = async || value(&la, "flotilla_raft_log_purged_index", &[]).await;
    wait_until(WAIT, "the leader purges its log", async || {
        purged_index().await > 0.0
    })
    .await;
    let (snap, purged) = (snapshot_index().await, purged_index().await);
    assert!(
        purged + 100.0 <= snap,
        "purged to {purged} behind a snapshot at {snap}"
    );
    // A snapshot is a pinned view: no file until a follower needs one.
    let snaps = c
        .dir()
        .join(format!("{}.data", c.masters[leader].name))
        .join("snapshots");
    let files: Vec<_> = std::fs::read_dir(&snaps)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        files.is_empty(),
        "snapshot files {files:?} in {}",
        snaps.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_health_and_etcd_tooling_on_real_masters() {
    if skip_on_etcd("metrics_health_and_etcd_tooling_on_real_masters", false) {
        return;
    }
    let mut c = Cluster::start(
        3,
        Opts {
            extra_args: vec!["--metrics-addr".into(), "127.0.0.1:0".into()],
            ..Opts::default()
        },
    )
    .await;
    let leader = c.leader().await;
    let addrs: Vec<String> = (0..3).map(|i| c.client_addr(i)).collect();

    // etcd's /health and the leader gauges, on every client port.
    let mut leaders = 0.0;
    for a in &addrs {
        let (code, body) = curl(&format!("http://{a}/health")).await;
        assert_eq!(
            (code, body.as_str()),
            (200, r#"{"health":"true","reason":""}"#),
            "/health of {a}"
        );
        wait_until(WAIT, "every master sees a leader", async || {
            value(a, "etcd_server_has_leader", &[]).await == 1.0
        })
        .await;
        leaders += value(a, "etcd_server_is_leader", &[]).await;
    }
    assert_eq!(leaders, 1.0, "exactly one master says it leads");

    // Writes move the WAL fsync histogram, the applied index and the gRPC
    // counters.
    let la = &addrs[leader];
    let before = metrics(la).await;
    let fsyncs0 = sample(&before, "etcd_disk_wal_fsync_duration_seconds_count", &[]).unwrap_or(0.0);
    let applied0 = sample(&before, "etcd_server_proposals_applied_total", &[]).unwrap_or(0.0);
    let puts0 = sample(
        &before,
        "grpc_server_handled_total",
        &[("grpc_method", "Put"), ("grpc_code", "OK")],
    )
    .unwrap_or(0.0);
    for i in 0..30 {
        put(la, &format!("metrics/{i}"), "v").await.expect("put");
    }
    wait_until(WAIT, "the writes show in the leader's series", async || {
        let m = metrics(la).await;
        let f = sample(&m, "etcd_disk_wal_fsync_duration_seconds_count", &[]).unwrap_or(0.0);
        let a = sample(&m, "etcd_server_proposals_applied_total", &[]).unwrap_or(0.0);
        let p = sample(
            &m,
            "grpc_server_handled_total",
            &[("grpc_method", "Put"), ("grpc_code", "OK")],
        )
        .unwrap_or(0.0);
        f > fsyncs0 && a >= applied0 + 30.0 && p >= puts0 + 30.0
    })
    .await;
    let m = metrics(la).await;
    for series in [
        "etcd_disk_backend_commit_duration_seconds_count",
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_server_proposals_committed_total",
        "etcd_network_peer_round_trip_time_seconds_count",
        "flotilla_raft_term",
        "flotilla_raft_batch_commands_count",
        "process_resident_memory_bytes",
    ] {
        assert!(
            sample(&m, series, &[]).is_some_and(|v| v > 0.0),
            "{series} missing or zero on the leader"
        );
    }
    // The live keys (the key index's size, read every 5 s) count the 30
    // written above.
    wait_until(
        WAIT,
        "etcd_debugging_mvcc_keys_total counts the writes",
        async || value(la, "etcd_debugging_mvcc_keys_total", &[]).await >= 30.0,
    )
    .await;

    // The object API's series, by verb, resource and HTTP code.
    let flt = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(flt_bin());
        cmd.args(args)
            .env("FLT_SERVER", la)
            .env_remove("FLT_CONFIG")
            .env("HOME", c.dir());
        cmd
    };
    let out = run_command(
        &mut flt(&["create", "configmap", "metrics", "--from-literal=a=b"]),
        "flt create configmap".into(),
        None,
        WAIT,
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = run_command(
        &mut flt(&["get", "configmap", "nope"]),
        "flt get configmap nope".into(),
        None,
        WAIT,
    )
    .await;
    assert_eq!(out.code, Some(1), "{out:?}");
    let m = metrics(la).await;
    let created = [
        ("verb", "CREATE"),
        ("resource", "configmaps"),
        ("code", "201"),
    ];
    let missing = [("verb", "GET"), ("resource", "configmaps"), ("code", "404")];
    assert!(
        sample(&m, "apiserver_request_total", &created).is_some_and(|v| v >= 1.0),
        "no CREATE configmaps 201 in apiserver_request_total"
    );
    assert!(
        sample(&m, "apiserver_request_total", &missing).is_some_and(|v| v >= 1.0),
        "no GET configmaps 404 in apiserver_request_total"
    );
    // The leader's controllers watch pods through the watch cache, which
    // reports its size and lag.
    wait_until(WAIT, "the pods watch cache's series", async || {
        let m = metrics(la).await;
        let pods = [("resource", "pods")];
        sample(&m, "apiserver_watch_cache_capacity", &pods).is_some_and(|v| v > 0.0)
            && sample(&m, "flotilla_watch_cache_lag_revisions", &pods).is_some()
            && sample(&m, "flotilla_watch_cache_events", &pods).is_some()
    })
    .await;
    assert!(
        sample(
            &m,
            "apiserver_request_duration_seconds_count",
            &[("verb", "CREATE"), ("resource", "configmaps")]
        )
        .is_some_and(|v| v >= 1.0),
        "no CREATE configmaps in apiserver_request_duration_seconds"
    );

    // --metrics-addr: /metrics, /livez, /readyz and /healthz over plain HTTP.
    let maddr: Vec<String> = (0..3)
        .map(|i| metrics_addr(&c.masters[i].log_path).expect("a metrics address in the log"))
        .collect();
    for a in &maddr {
        for path in ["livez", "readyz", "healthz"] {
            let (code, body) = curl(&format!("http://{a}/{path}")).await;
            assert_eq!((code, body.as_str()), (200, "ok"), "/{path} of {a}");
        }
        assert!(metrics(a).await.contains("etcd_server_has_leader 1"));
    }

    // etcd's own tooling reads process_resident_memory_bytes from /metrics.
    let out = c.etcdctl(&["check", "datascale"]).await;
    assert!(
        out.stdout.contains("PASS"),
        "etcdctl check datascale: {out:?}"
    );

    // A leader kill is a leader change on the survivors.
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let changes0 = value(
        &addrs[survivors[0]],
        "etcd_server_leader_changes_seen_total",
        &[],
    )
    .await;
    c.kill(leader);
    wait_until(WAIT, "a survivor counts a new leader", async || {
        let m = metrics(&addrs[survivors[0]]).await;
        sample(&m, "etcd_server_leader_changes_seen_total", &[]).unwrap_or(0.0) > changes0
            && sample(&m, "etcd_server_has_leader", &[]) == Some(1.0)
    })
    .await;

    // Alone, a master is alive but neither healthy nor ready.
    c.kill(survivors[1]);
    let (alone, alone_m) = (&addrs[survivors[0]], &maddr[survivors[0]]);
    wait_until(WAIT, "the last master reports no quorum", async || {
        let (code, body) = curl(&format!("http://{alone}/health")).await;
        code == 503 && body.contains(r#""health":"false""#)
    })
    .await;
    let (code, body) = curl(&format!("http://{alone_m}/readyz")).await;
    assert_eq!(code, 503, "/readyz without quorum: {body}");
    assert!(body.contains("[-]ready failed"), "{body}");
    let (code, _) = curl(&format!("http://{alone_m}/livez")).await;
    assert_eq!(code, 200, "/livez without quorum");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_restores_every_acknowledged_write_into_a_new_cluster() {
    if skip_on_etcd(
        "a_backup_under_load_restores_every_acknowledged_write_into_a_new_cluster",
        false,
    ) {
        return;
    }
    let mut c = Cluster::start(3, Opts::default()).await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let old_cluster = maintenance_status(&c.client_addr(0))
        .await
        .expect("status")
        .header
        .expect("header")
        .cluster_id;

    // A writer acknowledging keys one after the other.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, addr) = (acked.clone(), stop.clone(), c.client_addr(leader));
        tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("load/{i:06}");
                if put(&addr, &key, &format!("v{i}")).await.is_ok() {
                    acked.lock().unwrap().push(key);
                }
                i += 1;
            }
        })
    };
    wait_until(WAIT, "300 writes are acknowledged", async || {
        acked.lock().unwrap().len() >= 300
    })
    .await;
    let before: Vec<String> = acked.lock().unwrap().clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("backup.db");
    let file_s = file.to_str().expect("utf-8 path").to_string();
    let out = etcdctl_at(
        &c.client_addr(follower),
        &["snapshot", "save", &file_s],
        None,
        WAIT,
    )
    .await;
    assert!(
        out.code == Some(0) && out.stdout.contains("Snapshot saved at"),
        "etcdctl snapshot save: {out:?}"
    );
    let n = acked.lock().unwrap().len();
    wait_until(WAIT, "writes go on after the backup", async || {
        acked.lock().unwrap().len() >= n + 100
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");

    let status = run_command(
        tokio::process::Command::new(flotilla_bin())
            .args(["snapshot", "status", &file_s, "-w", "json"]),
        "flotilla snapshot status".into(),
        None,
        WAIT,
    )
    .await;
    assert_eq!(status.code, Some(0), "{status:?}");
    let st: Value = serde_json::from_str(status.stdout.trim()).expect("status JSON");
    assert!(
        st["totalKey"].as_u64().unwrap_or(0) >= before.len() as u64,
        "status counts fewer keys than were acknowledged before the backup: {st}"
    );
    let backup_rev = st["revision"].as_i64().unwrap_or(0);
    assert!(backup_rev > 0, "{st}");

    // A damaged copy is refused, and nothing is restored from it.
    let bad = dir.path().join("bad.db");
    let mut bytes = std::fs::read(&file).expect("read backup");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&bad, bytes).expect("write bad copy");
    let bad_dir = dir.path().join("bad-restore");
    let out = run_command(
        tokio::process::Command::new(flotilla_bin()).args([
            "restore",
            "--snapshot",
            bad.to_str().expect("utf-8"),
            "--name",
            "n1",
            "--initial-cluster",
            "n1=127.0.0.1:1",
            "--data-dir",
            bad_dir.to_str().expect("utf-8"),
        ]),
        "flotilla restore (damaged)".into(),
        None,
        WAIT,
    )
    .await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("SHA-256 mismatch"), "{out:?}");
    assert!(
        !bad_dir.join("db").exists(),
        "a damaged backup left a database"
    );

    // Every master is lost; the new cluster comes from the backup.
    let initial: Vec<String> = c
        .masters
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_addr))
        .collect();
    let initial = initial.join(",");
    for i in 0..3 {
        c.kill(i);
    }
    for i in 0..3 {
        let m = &c.masters[i];
        std::fs::remove_dir_all(&m.data_dir).expect("destroy the data");
        let out = run_command(
            tokio::process::Command::new(flotilla_bin()).args([
                "restore",
                "--snapshot",
                &file_s,
                "--name",
                &m.name,
                "--initial-cluster",
                &initial,
                "--data-dir",
                m.data_dir.to_str().expect("utf-8"),
            ]),
            format!("flotilla restore {}", m.name),
            None,
            WAIT,
        )
        .await;
        assert_eq!(out.code, Some(0), "{out:?}");
    }
    for i in 0..3 {
        c.restart(i);
    }
    c.wait_ready(WAIT).await;
    let addr = c.client_addr(0);
    let kvs = wait_for(WAIT, "the restored cluster answers", async || {
        range_prefix(&addr, "load/", false).await
    })
    .await;
    let lost: Vec<&String> = before.iter().filter(|k| !kvs.contains_key(*k)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} writes acknowledged before the backup are missing, e.g. {:?}",
        lost.len(),
        before.len(),
        &lost[..lost.len().min(5)]
    );
    for k in &before {
        let i: u32 = k["load/".len()..].parse().expect("index");
        assert_eq!(kvs[k].0, format!("v{i}"), "value of {k}");
    }
    let new_cluster = wait_for(WAIT, "the new cluster has an id", async || {
        let h = maintenance_status(&addr).await?.header.unwrap_or_default();
        if h.cluster_id == 0 {
            anyhow::bail!("no cluster id yet");
        }
        Ok(h.cluster_id)
    })
    .await;
    assert_ne!(
        new_cluster, old_cluster,
        "a restored cluster is a new cluster"
    );
    let rev = put(&addr, "after-restore", "x")
        .await
        .expect("write after restore");
    assert!(
        rev > backup_rev,
        "revision {rev} after restore, backup at {backup_rev}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn move_leader_hands_over_under_writes_without_failing_one() {
    if skip_on_etcd(
        "move_leader_hands_over_under_writes_without_failing_one",
        false,
    ) {
        return;
    }
    let c = Cluster::start(3, Opts::default()).await;
    let leader = c.leader().await;
    let target = (leader + 1) % 3;
    let target_id = c.member_id(target).await.expect("member id");

    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(Mutex::new(0u32));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (failures, done, stop, addr) = (
            failures.clone(),
            done.clone(),
            stop.clone(),
            c.client_addr((leader + 2) % 3),
        );
        tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                match put(&addr, &format!("move/{i}"), "v").await {
                    Ok(_) => *done.lock().unwrap() += 1,
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
                i += 1;
            }
        })
    };
    wait_until(WAIT, "writes flow", async || *done.lock().unwrap() >= 50).await;

    // Refused: a transferee that is not a member.
    let out = c.etcdctl(&["move-leader", "1234"]).await;
    assert!(
        out.stderr.contains("bad leader transferee"),
        "move-leader to a stranger: {out:?}"
    );

    let hex = format!("{target_id:x}");
    let out = c.etcdctl(&["move-leader", &hex]).await;
    assert!(
        out.code == Some(0) && out.stdout.contains("Leadership transferred from"),
        "etcdctl move-leader {hex}: {out:?}"
    );
    let status = maintenance_status(&c.client_addr(target))
        .await
        .expect("status");
    assert_eq!(status.leader, target_id, "the transferee leads");
    let n = *done.lock().unwrap();
    wait_until(WAIT, "writes go on under the new leader", async || {
        *done.lock().unwrap() >= n + 50
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "writes failed during the transfer: {failures:?}"
    );
    // To the leader itself: nothing to do, and said so as etcd does.
    let out = c.etcdctl(&["move-leader", &hex]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
}

/// Every series name the Grafana dashboard's queries use.
fn dashboard_series() -> std::collections::BTreeSet<String> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/flotilla.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("the dashboard"))
        .expect("JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    const PREFIXES: [&str; 8] = [
        "etcd_",
        "flotilla_",
        "grpc_server_",
        "apiserver_",
        "coredns_",
        "kubelet_",
        "kubeproxy_",
        "process_",
    ];
    let mut names = std::collections::BTreeSet::new();
    for e in &exprs {
        for tok in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if PREFIXES.iter().any(|p| tok.starts_with(p)) {
                names.insert(tok.to_string());
            }
        }
    }
    assert!(
        names.len() > 20,
        "too few series found in the dashboard: {names:?}"
    );
    names
}

/// Sample names (with _bucket, _sum, _count) in a text exposition.
fn exported(text: &str, into: &mut std::collections::BTreeSet<String>) {
    for l in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = l.find(['{', ' ']).unwrap_or(l.len());
        into.insert(l[..end].to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_names_only_series_that_are_exported() {
    if skip_on_etcd("the_dashboard_names_only_series_that_are_exported", false) {
        return;
    }
    let want = dashboard_series();
    let c = Cluster::start(
        3,
        Opts {
            extra_args: vec!["--dns-addr".into(), "127.0.0.1:0".into()],
            ..Opts::default()
        },
    )
    .await;
    // A node (fake runtime) serving its own /metrics, and a pod that the
    // scheduler places there.
    let log_path = c.dir().join("fake-agent.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut agent = std::process::Command::new(flotilla_bin())
        .args(["agent", "--runtime", "fake", "--name", "dash-1"])
        .args(["--node-ip", "10.0.0.9", "--metrics-addr", "127.0.0.1:0"])
        .arg("--server")
        .arg(c.endpoints())
        .arg("--data-dir")
        .arg(c.dir().join("fake"))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("agent");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Kill(&mut agent);
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"default"},
        "spec":{"containers":[{"name":"c","image":"nosuch"}]}}"#;
    let mut flt = tokio::process::Command::new(flt_bin());
    flt.args(["apply", "-f", "-"])
        .env("FLT_SERVER", c.endpoints())
        .env_remove("FLT_CONFIG")
        .env("HOME", c.dir());
    let out = run_command(&mut flt, "flt apply".into(), Some(pod.into()), WAIT).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let agent_addr = wait_for(WAIT, "the agent serves its metrics", async || {
        metrics_addr(&log_path).ok_or("no address logged yet")
    })
    .await;
    wait_until(WAIT, "the agent counts the pod's start", async || {
        value(&agent_addr, "kubelet_pod_start_duration_seconds_count", &[]).await >= 1.0
    })
    .await;

    let mut have = std::collections::BTreeSet::new();
    wait_until(
        WAIT,
        "the leader has replicated to both peers",
        async || {
            let l = c.leader().await;
            sample(
                &metrics(&c.client_addr(l)).await,
                "etcd_network_peer_round_trip_time_seconds_count",
                &[],
            )
            .is_some()
        },
    )
    .await;
    for i in 0..3 {
        exported(&metrics(&c.client_addr(i)).await, &mut have);
    }
    exported(&metrics(&agent_addr).await, &mut have);
    // The node proxy's series, from its own registration code (running a
    // proxy here would need a network namespace of its own).
    let reg = flotilla_telemetry::registry();
    let _proxy = flotilla_proxy::metrics::ProxyMetrics::new(&reg);
    let mut text = Vec::new();
    flotilla_telemetry::prometheus::Encoder::encode(
        &flotilla_telemetry::prometheus::TextEncoder::new(),
        &reg.gather(),
        &mut text,
    )
    .expect("encode");
    exported(&String::from_utf8_lossy(&text), &mut have);

    let missing: Vec<&String> = want.iter().filter(|n| !have.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard names series nothing exports: {missing:?}"
    );
}

#[tokio::test]
async fn log_format_json_writes_one_json_object_per_line() {
    if skip_on_etcd("log_format_json_writes_one_json_object_per_line", false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, peer) = (free_port(), free_port());
    let log_path = dir.path().join("master.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut master = std::process::Command::new(flotilla_bin())
        .args(["master", "--log-format", "json", "--name", "j1"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--client-addr", &format!("127.0.0.1:{client}")])
        .args(["--peer-addr", &format!("127.0.0.1:{peer}")])
        .args(["--initial-cluster", &format!("j1=127.0.0.1:{peer}")])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("master");
    let text = wait_for(WAIT, "the master logs that it serves", async || {
        let t = std::fs::read_to_string(&log_path).map_err(|e| e.to_string())?;
        if t.contains("master serving") {
            Ok(t)
        } else {
            Err(t)
        }
    })
    .await;
    let _ = master.kill();
    let _ = master.wait();
    let mut serving = None;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        if v["fields"]["message"] == "master serving" {
            serving = Some(v);
        }
    }
    let serving = serving.expect("the serving line");
    assert_eq!(serving["fields"]["name"], "j1", "{serving}");
}

/// The 32 hex digits after `id=` in a log line.
fn request_id(line: &str) -> Option<String> {
    let at = line.find("request{id=")? + "request{id=".len();
    let id: String = line[at..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    (id.len() == 32).then_some(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_requests_id_names_its_log_lines_on_the_master_it_reached_and_the_leader() {
    if skip_on_etcd(
        "a_requests_id_names_its_log_lines_on_the_master_it_reached_and_the_leader",
        false,
    ) {
        return;
    }
    let c = Cluster::start(
        3,
        Opts {
            rust_log: Some(
                "info,openraft=warn,flotilla_control::metrics=debug,flotilla_raftstore::service::peer=debug"
                    .into(),
            ),
            ..Opts::default()
        },
    )
    .await;
    let leader = c.leader().await;
    let follower = (leader + 1) % 3;
    let mut flt = tokio::process::Command::new(flt_bin());
    flt.args(["create", "namespace", "traced"])
        .env("FLT_SERVER", c.client_addr(follower))
        .env_remove("FLT_CONFIG")
        .env("HOME", c.dir());
    let out = run_command(&mut flt, "flt create namespace".into(), None, WAIT).await;
    assert_eq!(out.code, Some(0), "{out:?}");

    // The master flt reached logs the create inside the request's span...
    let id = wait_for(WAIT, "the follower's line about the create", async || {
        let log =
            std::fs::read_to_string(&c.masters[follower].log_path).map_err(|e| e.to_string())?;
        log.lines()
            .find(|l| {
                l.contains("handled") && l.contains("verb=\"CREATE\"") && l.contains("namespaces")
            })
            .and_then(request_id)
            .ok_or_else(|| "no created line with a request id yet".to_string())
    })
    .await;
    // ...and the leader, which the follower forwarded the write to, names
    // the same request.
    wait_until(
        WAIT,
        "the leader's line about the forwarded write",
        async || {
            std::fs::read_to_string(&c.masters[leader].log_path).is_ok_and(|log| {
                log.lines()
                    .any(|l| l.contains("forwarded") && request_id(l).as_deref() == Some(&id))
            })
        },
    )
    .await;
}
