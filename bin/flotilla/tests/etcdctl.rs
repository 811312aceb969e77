//! etcd compatibility: Debian's etcdctl 3.4 (`ETCDCTL_API=3`) driven against
//! a three-master cluster, expecting exactly what etcd itself answers.
//!
//! Every expectation here was checked against a real three-member etcd 3.4
//! with `FLOTILLA_TEST_TARGET=etcd cargo nextest run --release -p flotilla
//! --test etcdctl`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

/// Revision in the header of an etcdctl `-w json` answer (left out of the
/// JSON when it is 0).
fn header_rev(v: &Value) -> i64 {
    assert!(v.get("header").is_some(), "no header in {v}");
    ji64_or0(&v["header"], "revision")
}

/// The kvs of a `get -w json` answer (etcdctl leaves the field out when
/// there are none).
fn kvs(v: &Value) -> Vec<Value> {
    v.get("kvs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The current revision, by a linearizable `get` of an unused key.
async fn current_rev(c: &Cluster) -> i64 {
    header_rev(
        &c.etcdctl(&["get", "\x01none", "-w", "json"])
            .await
            .ok()
            .json(),
    )
}

/// Parses `lease 694d77aa9e38260f granted with TTL(60s)` into the lease id.
fn granted_lease(out: &CmdOut, ttl: u64) -> String {
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert!(
        words.len() == 5
            && words[0] == "lease"
            && words[2..] == ["granted", "with", &format!("TTL({ttl}s)")],
        "unexpected grant output: {out}"
    );
    u64::from_str_radix(words[1], 16).unwrap_or_else(|_| panic!("lease id is not hex: {out}"));
    words[1].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_revisions_and_versions() {
    let c = Cluster::start(3, Opts::default()).await;

    let empty = c.etcdctl(&["get", "foo", "-w", "json"]).await.ok().json();
    let base = header_rev(&empty);
    assert!(kvs(&empty).is_empty(), "{empty}");
    assert_eq!(ji64_or0(&empty, "count"), 0);

    assert_eq!(c.etcdctl(&["put", "foo", "bar"]).await.ok().stdout, "OK\n");
    let g = c.etcdctl(&["get", "foo", "-w", "json"]).await.ok().json();
    assert_eq!(header_rev(&g), base + 1);
    let kv = &kvs(&g)[0];
    assert_eq!(b64(kv["key"].as_str().unwrap()), "foo");
    assert_eq!(b64(kv["value"].as_str().unwrap()), "bar");
    assert_eq!(ji64(kv, "create_revision"), base + 1);
    assert_eq!(ji64(kv, "mod_revision"), base + 1);
    assert_eq!(ji64(kv, "version"), 1);
    assert_eq!(ji64(&g, "count"), 1);
    assert_eq!(c.etcdctl(&["get", "foo"]).await.ok().stdout, "foo\nbar\n");
    assert_eq!(
        c.etcdctl(&["get", "foo", "--print-value-only"])
            .await
            .ok()
            .stdout,
        "bar\n"
    );

    // A second put: same create revision, next mod revision, version 2.
    let p = c
        .etcdctl(&["put", "foo", "baz", "-w", "json"])
        .await
        .ok()
        .json();
    assert_eq!(header_rev(&p), base + 2);
    let g = c.etcdctl(&["get", "foo", "-w", "json"]).await.ok().json();
    let kv = &kvs(&g)[0];
    assert_eq!(b64(kv["value"].as_str().unwrap()), "baz");
    assert_eq!(ji64(kv, "create_revision"), base + 1);
    assert_eq!(ji64(kv, "mod_revision"), base + 2);
    assert_eq!(ji64(kv, "version"), 2);

    // put --prev-kv shows the value it replaced.
    assert_eq!(
        c.etcdctl(&["put", "foo", "qux", "--prev-kv"])
            .await
            .ok()
            .stdout,
        "OK\nfoo\nbaz\n"
    );

    // A delete is a revision too; a key created again starts over at version 1.
    assert_eq!(c.etcdctl(&["del", "foo"]).await.ok().stdout, "1\n");
    let g = c.etcdctl(&["get", "foo", "-w", "json"]).await.ok().json();
    assert_eq!(header_rev(&g), base + 4);
    assert!(kvs(&g).is_empty(), "{g}");
    assert_eq!(c.etcdctl(&["get", "foo"]).await.ok().stdout, "");
    c.etcdctl(&["put", "foo", "again"]).await.ok();
    let g = c.etcdctl(&["get", "foo", "-w", "json"]).await.ok().json();
    let kv = &kvs(&g)[0];
    assert_eq!(ji64(kv, "create_revision"), base + 5);
    assert_eq!(ji64(kv, "mod_revision"), base + 5);
    assert_eq!(ji64(kv, "version"), 1);

    // History: the key as it was at each revision.
    let old = c
        .etcdctl(&["get", "foo", "--rev", &(base + 2).to_string(), "-w", "json"])
        .await
        .ok()
        .json();
    let kv = &kvs(&old)[0];
    assert_eq!(b64(kv["value"].as_str().unwrap()), "baz");
    assert_eq!(ji64(kv, "version"), 2);
    assert_eq!(ji64(kv, "mod_revision"), base + 2);
    assert_eq!(
        c.etcdctl(&["get", "foo", "--rev", &(base + 4).to_string()])
            .await
            .ok()
            .stdout,
        "",
        "deleted at that revision"
    );

    // Binary-safe keys and values, and an empty value.
    c.etcdctl(&["put", "empty", ""]).await.ok();
    let g = c.etcdctl(&["get", "empty", "-w", "json"]).await.ok().json();
    assert_eq!(kvs(&g).len(), 1, "{g}");
    assert!(
        kvs(&g)[0].get("value").is_none(),
        "empty value is left out of JSON: {g}"
    );

    assert_eq!(
        base,
        fresh_revision(),
        "a fresh cluster is at revision 1 (Flotilla: after its namespaces and default roles)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_prefix_range_limit_sort() {
    let c = Cluster::start(3, Opts::default()).await;
    for k in ["a1", "a2", "a3", "a4", "a5", "b1", "a"] {
        c.etcdctl(&["put", k, &format!("v{k}")]).await.ok();
    }
    assert_eq!(
        c.etcdctl(&["get", "--prefix", "a"]).await.ok().stdout,
        "a\nva\na1\nva1\na2\nva2\na3\nva3\na4\nva4\na5\nva5\n"
    );
    // [key, range_end)
    assert_eq!(
        c.etcdctl(&["get", "a2", "a4"]).await.ok().stdout,
        "a2\nva2\na3\nva3\n"
    );
    // --from-key: every key >= a4
    assert_eq!(
        c.etcdctl(&["get", "--from-key", "a4", "--keys-only"])
            .await
            .ok()
            .stdout,
        "a4\n\na5\n\nb1\n\n"
    );
    // --limit: the first keys, `more` set, `count` is the whole range.
    let l = c
        .etcdctl(&["get", "--prefix", "a", "--limit", "2", "-w", "json"])
        .await
        .ok()
        .json();
    let ks: Vec<String> = kvs(&l)
        .iter()
        .map(|kv| b64(kv["key"].as_str().unwrap()))
        .collect();
    assert_eq!(ks, ["a", "a1"]);
    assert_eq!(l["more"], Value::Bool(true), "{l}");
    assert_eq!(ji64(&l, "count"), 6);
    let all = c
        .etcdctl(&["get", "--prefix", "a", "--limit", "6", "-w", "json"])
        .await
        .ok()
        .json();
    assert!(all.get("more").is_none(), "more is false: {all}");
    // --keys-only: keys, no values
    assert_eq!(
        c.etcdctl(&["get", "--prefix", "a", "--keys-only"])
            .await
            .ok()
            .stdout,
        "a\n\na1\n\na2\n\na3\n\na4\n\na5\n\n"
    );
    let ko = c
        .etcdctl(&["get", "--prefix", "a", "--keys-only", "-w", "json"])
        .await
        .ok()
        .json();
    assert_eq!(kvs(&ko).len(), 6);
    for kv in kvs(&ko) {
        assert!(
            kv.get("value").is_none(),
            "keys-only returned a value: {ko}"
        );
        assert!(ji64(&kv, "mod_revision") > 0);
    }
    // Sorting, and a limit applied after the sort.
    assert_eq!(
        c.etcdctl(&["get", "--prefix", "a", "--order=DESCEND", "--limit", "2"])
            .await
            .ok()
            .stdout,
        "a5\nva5\na4\nva4\n"
    );
    assert_eq!(
        c.etcdctl(&[
            "get",
            "a1",
            "a4",
            "--sort-by=MODIFY",
            "--order=DESCEND",
            "--print-value-only"
        ])
        .await
        .ok()
        .stdout,
        "va3\nva2\nva1\n"
    );
    // A key that is exactly the prefix's next sibling is outside the range.
    assert_eq!(
        c.etcdctl(&["get", "a5", "b1"]).await.ok().stdout,
        "a5\nva5\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_every_master_and_serializable_reads() {
    let c = Cluster::start(3, Opts::default()).await;
    // Every master accepts writes (followers hand them to the leader).
    let mut revs = Vec::new();
    for (n, i) in c.started().into_iter().enumerate() {
        let out = etcdctl_at(
            &c.client_addr(i),
            &["put", "k", &format!("v{}", n + 1), "-w", "json"],
            None,
            Duration::from_secs(30),
        )
        .await
        .ok();
        revs.push(header_rev(&out.json()));
    }
    assert!(
        revs.windows(2).all(|w| w[1] == w[0] + 1),
        "one revision per put: {revs:?}"
    );
    for (n, rev) in revs.iter().enumerate() {
        let g = c
            .etcdctl(&["get", "k", "--rev", &rev.to_string(), "-w", "json"])
            .await
            .ok()
            .json();
        let kv = &kvs(&g)[0];
        assert_eq!(b64(kv["value"].as_str().unwrap()), format!("v{}", n + 1));
        assert_eq!(ji64(kv, "version"), n as i64 + 1);
        assert_eq!(ji64(kv, "create_revision"), revs[0]);
    }
    // A revision that does not exist yet.
    c.etcdctl(&["get", "k", "--rev", &(revs[2] + 1000).to_string()])
        .await
        .fails_with("etcdserver: mvcc: required revision is a future revision");

    // Serializable reads are answered by the master asked, from its own
    // state: each one soon sees the last write.
    for i in c.started() {
        let id = c.member_id(i).await.unwrap();
        let addr = c.client_addr(i);
        wait_for(
            Duration::from_secs(15),
            "a serializable read sees the last write",
            async || {
                let out = etcdctl_at(
                    &addr,
                    &["get", "k", "--consistency=s", "-w", "json"],
                    None,
                    Duration::from_secs(10),
                )
                .await;
                if !out.success() {
                    return Err(out.to_string());
                }
                let v = out.json();
                let value = kvs(&v)
                    .first()
                    .map(|kv| b64(kv["value"].as_str().unwrap_or("")));
                if value.as_deref() != Some("v3") {
                    return Err(format!("{v}"));
                }
                assert_eq!(ju64(&v["header"], "member_id"), id, "answered by {addr}");
                Ok(())
            },
        )
        .await;
        assert_eq!(
            etcdctl_at(
                &addr,
                &["get", "k", "--consistency=s", "--print-value-only"],
                None,
                Duration::from_secs(10)
            )
            .await
            .ok()
            .stdout,
            "v3\n"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_count_and_prev_kv() {
    let c = Cluster::start(3, Opts::default()).await;
    for k in ["p1", "p2", "p3", "q1", "s1", "s2", "s3"] {
        c.etcdctl(&["put", k, &format!("v{k}")]).await.ok();
    }
    assert_eq!(c.etcdctl(&["del", "p1"]).await.ok().stdout, "1\n");
    assert_eq!(c.etcdctl(&["del", "nothing"]).await.ok().stdout, "0\n");
    assert_eq!(
        c.etcdctl(&["del", "--prefix", "p"]).await.ok().stdout,
        "2\n"
    );
    assert_eq!(c.etcdctl(&["get", "--prefix", "p"]).await.ok().stdout, "");
    assert_eq!(
        c.etcdctl(&["del", "--prev-kv", "q1"]).await.ok().stdout,
        "1\nq1\nvq1\n"
    );
    let before = current_rev(&c).await;
    let d = c
        .etcdctl(&["del", "--prev-kv", "-w", "json", "s1", "s3"])
        .await
        .ok()
        .json();
    assert_eq!(ji64(&d, "deleted"), 2);
    assert_eq!(
        header_rev(&d),
        before + 1,
        "deleting several keys is one revision"
    );
    let prev: Vec<(String, String)> = d["prev_kvs"]
        .as_array()
        .unwrap_or_else(|| panic!("no prev_kvs: {d}"))
        .iter()
        .map(|kv| {
            (
                b64(kv["key"].as_str().unwrap()),
                b64(kv["value"].as_str().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        prev,
        [("s1".into(), "vs1".into()), ("s2".into(), "vs2".into())]
    );
    assert_eq!(
        c.etcdctl(&["get", "--prefix", "s"]).await.ok().stdout,
        "s3\nvs3\n"
    );
    // Deleting nothing does not make a revision.
    let before = current_rev(&c).await;
    let d = c
        .etcdctl(&["del", "nothing", "-w", "json"])
        .await
        .ok()
        .json();
    assert_eq!(ji64_or0(&d, "deleted"), 0);
    assert_eq!(header_rev(&d), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compares_and_branches() {
    let c = Cluster::start(3, Opts::default()).await;
    c.etcdctl(&["put", "tk", "v1"]).await.ok();

    let txn = "value(\"tk\") = \"v1\"\n\nput tk v2\nput tother yes\n\nput tk failed\n\n";
    let out = c
        .etcdctl_stdin(&["txn", "--interactive=false"], txn.as_bytes())
        .await
        .ok();
    assert_eq!(out.stdout, "SUCCESS\n\nOK\n\nOK\n");
    assert_eq!(
        c.etcdctl(&["get", "tother", "--print-value-only"])
            .await
            .ok()
            .stdout,
        "yes\n"
    );

    // Same transaction again: the compare fails, the failure branch runs.
    let out = c
        .etcdctl_stdin(&["txn", "--interactive=false"], txn.as_bytes())
        .await
        .ok();
    assert_eq!(out.stdout, "FAILURE\n\nOK\n");
    let g = c.etcdctl(&["get", "tk", "-w", "json"]).await.ok().json();
    let kv = &kvs(&g)[0];
    assert_eq!(b64(kv["value"].as_str().unwrap()), "failed");
    assert_eq!(ji64(kv, "version"), 3);
    let m = ji64(kv, "mod_revision");

    // Compare on the mod revision; a get in the success branch.
    let txn = format!("mod(\"tk\") = \"{m}\"\n\nget tk\n\nput x y\n\n");
    let t = c
        .etcdctl_stdin(
            &["txn", "--interactive=false", "-w", "json"],
            txn.as_bytes(),
        )
        .await
        .ok()
        .json();
    assert_eq!(t["succeeded"], Value::Bool(true), "{t}");
    assert_eq!(header_rev(&t), m, "a read-only txn makes no revision");
    let range = &t["responses"][0]["Response"]["ResponseRange"];
    let rkv = &range["kvs"][0];
    assert_eq!(b64(rkv["value"].as_str().unwrap()), "failed", "{t}");
    assert_eq!(ji64(rkv, "mod_revision"), m);

    let txn = format!("mod(\"tk\") < \"{m}\"\n\nput x never\n\nput x y\n\n");
    let t = c
        .etcdctl_stdin(
            &["txn", "--interactive=false", "-w", "json"],
            txn.as_bytes(),
        )
        .await
        .ok()
        .json();
    assert!(t.get("succeeded").is_none(), "false is left out: {t}");
    assert_eq!(header_rev(&t), m + 1);
    assert!(
        t["responses"][0]["Response"].get("ResponsePut").is_some(),
        "{t}"
    );
    assert_eq!(
        c.etcdctl(&["get", "x", "--print-value-only"])
            .await
            .ok()
            .stdout,
        "y\n"
    );

    // Several compares (all must hold), version and create revision.
    let txn = "version(\"tk\") = \"3\"\ncreate(\"fresh\") = \"0\"\n\nput fresh 1\ndel tother\n\n\n";
    let out = c
        .etcdctl_stdin(&["txn", "--interactive=false"], txn.as_bytes())
        .await
        .ok();
    assert_eq!(out.stdout, "SUCCESS\n\nOK\n\n1\n");
    let txn = "version(\"tk\") = \"3\"\ncreate(\"fresh\") = \"0\"\n\nput fresh 2\n\n\n";
    let out = c
        .etcdctl_stdin(&["txn", "--interactive=false"], txn.as_bytes())
        .await
        .ok();
    assert_eq!(out.stdout, "FAILURE\n");
    assert_eq!(
        c.etcdctl(&["get", "fresh", "--print-value-only"])
            .await
            .ok()
            .stdout,
        "1\n"
    );

    // All the puts of one transaction share one revision.
    let before = current_rev(&c).await;
    let txn = "\nput m1 a\nput m2 b\nput m3 c\n\n\n";
    c.etcdctl_stdin(&["txn", "--interactive=false"], txn.as_bytes())
        .await
        .ok();
    let g = c
        .etcdctl(&["get", "--prefix", "m", "-w", "json"])
        .await
        .ok()
        .json();
    for kv in kvs(&g) {
        assert_eq!(ji64(&kv, "mod_revision"), before + 1, "{g}");
    }
}

/// Splits `etcdctl watch` simple output (without --prev-kv: three lines per
/// event) into (type, key, value) events.
fn events3(lines: &[String]) -> Vec<(String, String, String)> {
    lines
        .chunks(3)
        .filter(|c| c.len() == 3)
        .map(|c| (c[0].clone(), c[1].clone(), c[2].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prefix_sees_live_events() {
    let c = Cluster::start(3, Opts::default()).await;
    let mut w = Watcher::etcdctl(&c.endpoints(), &["watch", "--prefix", "w/"]);

    // The watch is in place once it reports a put made after it started.
    let mut got: Vec<String> = Vec::new();
    let mut n = 0;
    wait_until(
        Duration::from_secs(20),
        "the watch reports w/ready",
        async || {
            n += 1;
            c.etcdctl(&["put", "w/ready", &n.to_string()]).await.ok();
            while let Some(line) = w.next_line(Duration::from_millis(300)).await {
                got.push(line);
            }
            got.iter().any(|l| l == "w/ready")
        },
    )
    .await;

    c.etcdctl(&["put", "w/a", "1"]).await.ok();
    c.etcdctl(&["put", "w/a", "2"]).await.ok();
    c.etcdctl(&["del", "w/a"]).await.ok();
    c.etcdctl(&["put", "x/a", "not watched"]).await.ok();
    c.etcdctl(&["put", "w/b", "4"]).await.ok();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !got.windows(2).any(|p| p[0] == "w/b" && p[1] == "4") {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match w.next_line(left).await {
            Some(line) => got.push(line),
            None => panic!("no event for w/b: got {got:?}; stderr {}", w.stderr()),
        }
    }
    let events: Vec<(String, String, String)> = events3(&got)
        .into_iter()
        .filter(|e| e.1 != "w/ready")
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("PUT", "w/a", "1"),
        ("PUT", "w/a", "2"),
        ("DELETE", "w/a", ""),
        ("PUT", "w/b", "4"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(events, expected, "all lines: {got:?}");
    w.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_history_with_prev_kv() {
    let c = Cluster::start(3, Opts::default()).await;
    let r1 = header_rev(
        &c.etcdctl(&["put", "h/a", "1", "-w", "json"])
            .await
            .ok()
            .json(),
    );
    c.etcdctl(&["put", "h/a", "2"]).await.ok();
    c.etcdctl(&["del", "h/a"]).await.ok();
    c.etcdctl(&["put", "h/b", "3"]).await.ok();
    c.etcdctl(&["put", "i/x", "9"]).await.ok();

    let t = Duration::from_secs(15);
    let mut a = Watcher::etcdctl(
        &c.endpoints(),
        &[
            "watch",
            "--prefix",
            "h/",
            "--rev",
            &r1.to_string(),
            "--prev-kv",
        ],
    );
    assert_eq!(
        a.lines(16, t).await,
        [
            "PUT", "h/a", "1", //
            "PUT", "h/a", "1", "h/a", "2", //
            "DELETE", "h/a", "2", "h/a", "", //
            "PUT", "h/b", "3",
        ]
    );

    let mut b = Watcher::etcdctl(
        &c.endpoints(),
        &["watch", "h/a", "--rev", &(r1 + 1).to_string()],
    );
    assert_eq!(
        b.lines(6, t).await,
        ["PUT", "h/a", "2", "DELETE", "h/a", ""]
    );

    // The same history as JSON: revisions and versions of each event.
    let mut j = Watcher::etcdctl(
        &c.endpoints(),
        &[
            "watch",
            "--prefix",
            "h/",
            "--rev",
            &r1.to_string(),
            "-w",
            "json",
        ],
    );
    let mut events: Vec<Value> = Vec::new();
    while events.len() < 4 {
        let line = j
            .next_line(t)
            .await
            .unwrap_or_else(|| panic!("watch -w json: only {events:?}; stderr {}", j.stderr()));
        let resp: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        events.extend(resp["Events"].as_array().cloned().unwrap_or_default());
    }
    assert_eq!(events.len(), 4, "{events:?}");
    let kv0 = &events[0]["kv"];
    assert!(events[0].get("type").is_none(), "PUT is type 0: {events:?}");
    assert_eq!(ji64(kv0, "create_revision"), r1);
    assert_eq!(ji64(kv0, "mod_revision"), r1);
    assert_eq!(ji64(kv0, "version"), 1);
    let kv1 = &events[1]["kv"];
    assert_eq!(ji64(kv1, "create_revision"), r1);
    assert_eq!(ji64(kv1, "mod_revision"), r1 + 1);
    assert_eq!(ji64(kv1, "version"), 2);
    assert_eq!(events[2]["type"], Value::from(1), "DELETE: {events:?}");
    assert_eq!(ji64(&events[2]["kv"], "mod_revision"), r1 + 2);
    assert_eq!(b64(events[2]["kv"]["key"].as_str().unwrap()), "h/a");
    assert_eq!(b64(events[3]["kv"]["key"].as_str().unwrap()), "h/b");
    assert_eq!(ji64(&events[3]["kv"], "mod_revision"), r1 + 3);

    // After the history, the watch goes on with live events.
    c.etcdctl(&["put", "h/c", "5"]).await.ok();
    assert_eq!(a.lines(3, t).await, ["PUT", "h/c", "5"]);
    a.kill().await;
    b.kill().await;
    j.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_grant_keepalive_timetolive_revoke() {
    let c = Cluster::start(3, Opts::default()).await;
    let grant = c.etcdctl(&["lease", "grant", "60"]).await.ok();
    let id = granted_lease(&grant, 60);
    let id_dec = u64::from_str_radix(&id, 16).unwrap();
    let lease_flag = format!("--lease={id}");
    c.etcdctl(&["put", &lease_flag, "lk", "lv"]).await.ok();
    c.etcdctl(&["put", &lease_flag, "lk2", "lv2"]).await.ok();
    let g = c.etcdctl(&["get", "lk", "-w", "json"]).await.ok().json();
    assert_eq!(ju64(&kvs(&g)[0], "lease"), id_dec, "{g}");

    let ttl = c
        .etcdctl(&["lease", "timetolive", &id, "--keys"])
        .await
        .ok();
    let prefix = format!("lease {id} granted with TTL(60s), remaining(");
    let rest = ttl
        .stdout
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("unexpected timetolive: {ttl}"));
    let (remaining, keys) = rest.split_once("s), ").unwrap();
    let remaining: i64 = remaining.parse().unwrap();
    assert!((50..=60).contains(&remaining), "{ttl}");
    assert_eq!(keys, "attached keys([lk lk2])\n");
    let tj = c
        .etcdctl(&["lease", "timetolive", &id, "--keys", "-w", "json"])
        .await
        .ok()
        .json();
    assert_eq!(ju64(&tj, "id"), id_dec);
    assert_eq!(ji64(&tj, "granted-ttl"), 60);
    assert!((50..=60).contains(&ji64(&tj, "ttl")), "{tj}");
    let keys: BTreeSet<String> = tj["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| b64(k.as_str().unwrap()))
        .collect();
    assert_eq!(keys, BTreeSet::from(["lk".to_string(), "lk2".to_string()]));

    assert_eq!(
        c.etcdctl(&["lease", "keep-alive", "--once", &id])
            .await
            .ok()
            .stdout,
        format!("lease {id} keepalived with TTL(60)\n")
    );
    assert_eq!(
        c.etcdctl(&["lease", "list"]).await.ok().stdout,
        format!("found 1 leases\n{id}\n")
    );

    assert_eq!(
        c.etcdctl(&["lease", "revoke", &id]).await.ok().stdout,
        format!("lease {id} revoked\n")
    );
    assert_eq!(c.etcdctl(&["get", "--prefix", "lk"]).await.ok().stdout, "");
    assert_eq!(
        c.etcdctl(&["lease", "timetolive", &id]).await.ok().stdout,
        format!("lease {id} already expired\n")
    );
    c.etcdctl(&["lease", "revoke", &id])
        .await
        .fails_with("etcdserver: requested lease not found");
    c.etcdctl(&["put", &lease_flag, "x", "y"])
        .await
        .fails_with("etcdserver: requested lease not found");
    c.etcdctl(&["lease", "keep-alive", "--once", &id])
        .await
        .fails_with("requested lease not found");
    assert_eq!(c.etcdctl(&["get", "x"]).await.ok().stdout, "");
    assert_eq!(
        c.etcdctl(&["lease", "list"]).await.ok().stdout,
        "found 0 leases\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_of_expired_lease_vanishes() {
    let c = Cluster::start(3, Opts::default()).await;
    let granted = std::time::Instant::now();
    let id = granted_lease(&c.etcdctl(&["lease", "grant", "3"]).await.ok(), 3);
    c.etcdctl(&["put", &format!("--lease={id}"), "ek", "ev"])
        .await
        .ok();
    let got = c.etcdctl(&["get", "ek", "--print-value-only"]).await.ok();
    if granted.elapsed() < Duration::from_millis(2500) {
        assert_eq!(
            got.stdout, "ev\n",
            "the key is there before the lease expires"
        );
    }
    c.etcdctl(&["put", "keep", "me"]).await.ok();
    let start = std::time::Instant::now();
    wait_until(
        Duration::from_secs(30),
        "the key of the expired lease is gone",
        async || c.etcdctl(&["get", "ek"]).await.ok().stdout.is_empty(),
    )
    .await;
    println!("lease of 3 s expired after {:?}", start.elapsed());
    assert_eq!(
        c.etcdctl(&["lease", "timetolive", &id]).await.ok().stdout,
        format!("lease {id} already expired\n")
    );
    assert_eq!(
        c.etcdctl(&["get", "keep", "--print-value-only"])
            .await
            .ok()
            .stdout,
        "me\n"
    );
    // Every master has dropped it (serializable reads).
    for i in c.started() {
        let addr = c.client_addr(i);
        wait_until(
            Duration::from_secs(15),
            "the expired key is gone everywhere",
            async || {
                etcdctl_at(
                    &addr,
                    &["get", "ek", "--consistency=s"],
                    None,
                    Duration::from_secs(10),
                )
                .await
                .ok()
                .stdout
                .is_empty()
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_then_old_revisions_are_gone() {
    let c = Cluster::start(3, Opts::default()).await;
    let r1 = header_rev(
        &c.etcdctl(&["put", "ck", "1", "-w", "json"])
            .await
            .ok()
            .json(),
    );
    let r2 = header_rev(
        &c.etcdctl(&["put", "ck", "2", "-w", "json"])
            .await
            .ok()
            .json(),
    );
    let r3 = header_rev(
        &c.etcdctl(&["put", "ck", "3", "-w", "json"])
            .await
            .ok()
            .json(),
    );
    assert_eq!(
        c.etcdctl(&["get", "ck", "--rev", &r2.to_string(), "--print-value-only"])
            .await
            .ok()
            .stdout,
        "2\n"
    );

    assert_eq!(
        c.etcdctl(&["compaction", &r3.to_string()])
            .await
            .ok()
            .stdout,
        format!("compacted revision {r3}\n")
    );
    c.etcdctl(&["get", "ck", "--rev", &r2.to_string()])
        .await
        .fails_with("etcdserver: mvcc: required revision has been compacted");
    assert_eq!(
        c.etcdctl(&["get", "ck", "--rev", &r3.to_string()])
            .await
            .ok()
            .stdout,
        "ck\n3\n"
    );
    assert_eq!(c.etcdctl(&["get", "ck"]).await.ok().stdout, "ck\n3\n");
    let g = c.etcdctl(&["get", "ck", "-w", "json"]).await.ok().json();
    assert_eq!(
        ji64(&kvs(&g)[0], "version"),
        3,
        "compaction keeps the version"
    );
    assert_eq!(ji64(&kvs(&g)[0], "create_revision"), r1);
    c.etcdctl(&["compaction", &r2.to_string()])
        .await
        .fails_with("etcdserver: mvcc: required revision has been compacted");
    c.etcdctl(&["compaction", &(r3 + 1000).to_string()])
        .await
        .fails_with("etcdserver: mvcc: required revision is a future revision");

    // Every master has compacted (serializable reads below it fail).
    for i in c.started() {
        let addr = c.client_addr(i);
        wait_until(
            Duration::from_secs(15),
            "every master has compacted",
            async || {
                let out = etcdctl_at(
                    &addr,
                    &["get", "ck", "--consistency=s", "--rev", &r2.to_string()],
                    None,
                    Duration::from_secs(10),
                )
                .await;
                !out.success() && out.stderr.contains("required revision has been compacted")
            },
        )
        .await;
    }

    // A watch from a compacted revision is cancelled with the compaction.
    let out = c.etcdctl(&["watch", "ck", "--rev", &r1.to_string()]).await;
    assert!(out.code.is_some(), "watch did not end by itself: {out}");
    let out = out.fails_with("required revision has been compacted");
    assert!(out.stderr.contains("watch was canceled"), "{out}");
    let out = c
        .etcdctl(&["watch", "ck", "--rev", &r1.to_string(), "-w", "json"])
        .await;
    assert!(out.code.is_some() && !out.success(), "{out}");
    let first = out.stdout.lines().next().unwrap_or_default();
    let resp: Value = serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(ji64(&resp, "CompactRevision"), r3, "{resp}");
    assert_eq!(resp["Canceled"], Value::Bool(true), "{resp}");
    // From the compaction revision on, history is still there.
    let mut w = Watcher::etcdctl(&c.endpoints(), &["watch", "ck", "--rev", &r3.to_string()]);
    assert_eq!(
        w.lines(3, Duration::from_secs(15)).await,
        ["PUT", "ck", "3"]
    );
    w.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_list_endpoint_status_and_health() {
    let c = Cluster::start(3, Opts::default()).await;
    let ml = c
        .etcdctl(&["member", "list", "-w", "json"])
        .await
        .ok()
        .json();
    assert!(
        ml["header"]["cluster_id"].as_u64().unwrap_or(0) != 0,
        "member list: the header has no cluster_id: {ml}"
    );
    let members = ml["members"].as_array().unwrap_or_else(|| panic!("{ml}"));
    assert_eq!(members.len(), 3, "{ml}");
    let mut ids = BTreeSet::new();
    for m in &c.masters {
        let entry = members
            .iter()
            .find(|e| e["name"].as_str() == Some(m.name.as_str()))
            .unwrap_or_else(|| panic!("{} missing from {ml}", m.name));
        let id = ju64(entry, "ID");
        assert!(id != 0);
        ids.insert(id);
        let peer = entry["peerURLs"][0].as_str().unwrap_or_default();
        let client = entry["clientURLs"][0].as_str().unwrap_or_default();
        assert!(peer.ends_with(&m.peer_addr), "{peer} vs {}", m.peer_addr);
        assert!(
            client.ends_with(&m.client_addr),
            "{client} vs {}",
            m.client_addr
        );
        assert!(entry.get("isLearner").is_none(), "voters: {entry}");
    }
    assert_eq!(ids.len(), 3, "distinct ids: {ml}");

    let simple = c.etcdctl(&["member", "list"]).await.ok();
    assert_eq!(lines(&simple.stdout).len(), 3, "{simple}");
    for m in &c.masters {
        let line = lines(&simple.stdout)
            .into_iter()
            .find(|l| l.contains(&format!(", {}, ", m.name)))
            .unwrap_or_else(|| panic!("{} missing: {simple}", m.name));
        let fields: Vec<&str> = line.split(", ").collect();
        assert_eq!(fields.len(), 6, "{line}");
        assert!(
            ids.contains(&u64::from_str_radix(fields[0], 16).unwrap()),
            "{line}"
        );
        assert_eq!(fields[1], "started");
        assert_eq!(fields[5], "false");
    }

    let st = c
        .etcdctl(&["endpoint", "status", "-w", "json"])
        .await
        .ok()
        .json();
    let st = st.as_array().unwrap_or_else(|| panic!("{st}")).clone();
    assert_eq!(st.len(), 3);
    let leader = ju64(&st[0]["Status"], "leader");
    assert!(leader != 0, "{st:?}");
    let mut seen = BTreeSet::new();
    let mut leaders = 0;
    for e in &st {
        let s = &e["Status"];
        assert_eq!(ju64(s, "leader"), leader, "one leader: {st:?}");
        let id = ju64(&s["header"], "member_id");
        seen.insert(id);
        if id == leader {
            leaders += 1;
        }
        assert!(ju64(s, "raftTerm") >= 1, "{e}");
        assert!(ju64(s, "raftIndex") >= 1, "{e}");
        assert!(!s["version"].as_str().unwrap_or_default().is_empty(), "{e}");
        let ep = e["Endpoint"].as_str().unwrap();
        assert!(c.endpoints().split(',').any(|a| a == ep), "{ep}");
    }
    assert_eq!(leaders, 1);
    assert_eq!(seen, ids, "status ids are the member ids");

    let table = c.etcdctl(&["endpoint", "status"]).await.ok();
    assert_eq!(
        table
            .stdout
            .lines()
            .filter(|l| l.contains(", true, false, "))
            .count(),
        1,
        "exactly one `is leader`: {table}"
    );

    let health = c.etcdctl(&["endpoint", "health"]).await.ok();
    assert_eq!(
        health
            .combined()
            .matches("is healthy: successfully committed proposal")
            .count(),
        3,
        "{health}"
    );
    let hj = c
        .etcdctl(&["endpoint", "health", "-w", "json"])
        .await
        .ok()
        .json();
    let hj = hj.as_array().unwrap_or_else(|| panic!("{hj}")).clone();
    assert_eq!(hj.len(), 3);
    assert!(
        hj.iter().all(|h| h["health"] == Value::Bool(true)),
        "{hj:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected() {
    let c = Cluster::start(3, Opts::default()).await;
    let before = current_rev(&c).await;

    // Over --max-request-bytes (1.5 MiB): rejected, nothing written.
    let big = vec![b'x'; 1572864 + 1024];
    c.etcdctl_stdin(&["put", "big"], &big)
        .await
        .fails_with("etcdserver: request is too large");
    assert_eq!(c.etcdctl(&["get", "big"]).await.ok().stdout, "");
    assert_eq!(current_rev(&c).await, before, "nothing was written");

    // 1 MiB is fine.
    let mib = vec![b'y'; 1 << 20];
    c.etcdctl_stdin(&["put", "mib"], &mib).await.ok();
    let g = c.etcdctl(&["get", "mib", "--print-value-only"]).await.ok();
    assert_eq!(g.stdout.len(), (1 << 20) + 1);

    // More than --max-txn-ops (128) operations in a transaction.
    let mut txn = String::from("\n");
    for i in 0..129 {
        txn.push_str(&format!("put t/{i:03} v\n"));
    }
    txn.push_str("\n\n");
    let before = current_rev(&c).await;
    c.etcdctl_stdin(&["txn", "--interactive=false"], txn.as_bytes())
        .await
        .fails_with("etcdserver: too many operations in txn request");
    assert_eq!(c.etcdctl(&["get", "--prefix", "t/"]).await.ok().stdout, "");
    assert_eq!(current_rev(&c).await, before, "nothing was written");
    // Exactly 128 is allowed.
    let mut txn = String::from("\n");
    for i in 0..128 {
        txn.push_str(&format!("put t/{i:03} v\n"));
    }
    txn.push_str("\n\n");
    c.etcdctl_stdin(&["txn", "--interactive=false"], txn.as_bytes())
        .await
        .ok();
    let g = c
        .etcdctl(&["get", "--prefix", "t/", "--limit", "1", "-w", "json"])
        .await
        .ok()
        .json();
    assert_eq!(ji64(&g, "count"), 128);

    // Removing a member that does not exist.
    c.etcdctl(&["member", "remove", "deadbeef"])
        .await
        .fails_with("etcdserver: member not found");
    let ml = c
        .etcdctl(&["member", "list", "-w", "json"])
        .await
        .ok()
        .json();
    assert_eq!(ml["members"].as_array().map(Vec::len), Some(3));

    // Keys must not be empty.
    c.etcdctl(&["put", "", "v"])
        .await
        .fails_with("etcdserver: key is not provided");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_perf_smoke() {
    let c = Cluster::start(3, Opts::default()).await;
    // A smoke test only: the load runs for 60 s; its verdict on speed is
    // printed, not asserted.
    let out = etcdctl_at(
        &c.endpoints(),
        &["check", "perf", "--load=s"],
        None,
        Duration::from_secs(150),
    )
    .await;
    let verdict: Vec<&str> = out
        .stdout
        .split(['\r', '\n'])
        .filter(|l| l.starts_with("PASS") || l.starts_with("FAIL"))
        .collect();
    println!("check perf (exit {:?}): {verdict:?}", out.code);
    assert!(out.code.is_some(), "check perf did not finish: {out}");
    assert!(out.stdout.contains("Throughput"), "{out}");
    assert!(
        !out.stderr.lines().any(|l| l.starts_with("Error:")),
        "check perf hit errors: {out}"
    );
    // It cleans up after itself.
    assert_eq!(
        c.etcdctl(&["get", "--prefix", "/etcdctl-check-perf/", "--keys-only"])
            .await
            .ok()
            .stdout,
        ""
    );
}
