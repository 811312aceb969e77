//! `flotilla up`: a local three-master cluster in one process that stops
//! cleanly on Ctrl-C and finds its data again when started once more, and
//! whose healthy start and stop log no WARN or ERROR line.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use common::*;
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::RangeRequest;

/// The cluster-admin's TLS settings that `flotilla up` wrote under `dir`.
fn admin_tls(dir: &std::path::Path) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
    let pki = dir.join("pki");
    Ok(flotilla_security::tls::ClientTlsFiles {
        ca: Some(pki.join("ca.crt")),
        cert: Some(pki.join("admin.crt")),
        key: Some(pki.join("admin.key")),
    }
    .tonic_config()?)
}

struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `flotilla up` on `dir`, its log (stderr, default filter) to `log`.
fn start_up(dir: &std::path::Path, base: u16, log: &std::path::Path) -> Up {
    let out = std::fs::File::create(log.with_extension("out")).expect("stdout file");
    let log = std::fs::File::create(log).expect("log file");
    Up(Command::new(flotilla_bin())
        .args(["up", "--data-dir"])
        .arg(dir)
        .args(["--base-port", &base.to_string(), "--agents", "0"])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdout(out)
        .stderr(log)
        .spawn()
        .expect("spawn flotilla up"))
}

fn interrupt_and_wait(up: &mut Up) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = up.0.try_wait().expect("wait") {
            assert!(
                status.success(),
                "flotilla up exited with {status} on Ctrl-C"
            );
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "flotilla up did not stop within 20 s of Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_stops_on_ctrl_c_and_keeps_its_data() {
    if skip_on_etcd("up_stops_on_ctrl_c_and_keeps_its_data", false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_up_base();
    let first = format!("127.0.0.1:{base}");
    let third = format!("127.0.0.1:{}", base + 20_000);

    let logs = tempfile::tempdir().expect("log dir");
    let first_log = logs.path().join("first.log");
    let mut up = start_up(dir.path(), base, &first_log);
    // up serves TLS only, with the certificates it writes under pki/.
    let tls = || admin_tls(dir.path());
    let rev = wait_for(
        Duration::from_secs(30),
        "flotilla up serves writes",
        async || put_with(&first, Some(tls()?), "up/key", "kept").await,
    )
    .await;
    // Each master's DNS address is printed on a line with the word `dns`,
    // and answers (the README's promise).
    let printed = wait_for(
        Duration::from_secs(10),
        "up prints its dns lines",
        async || {
            let out = std::fs::read_to_string(first_log.with_extension("out"))?;
            let addrs: Vec<String> = out
                .lines()
                .filter_map(|l| {
                    let mut w = l.split_whitespace();
                    w.find(|x| *x == "dns")
                        .and_then(|_| w.next())
                        .map(str::to_string)
                })
                .collect();
            if addrs.len() == 3 {
                Ok(addrs)
            } else {
                Err(anyhow::anyhow!("dns lines so far: {addrs:?} in {out}"))
            }
        },
    )
    .await;
    let (host, port) = printed[0].rsplit_once(':').expect("ADDR:PORT");
    wait_for(
        Duration::from_secs(10),
        "kube-dns answers through up's printed address",
        async || {
            let dig = Command::new("dig")
                .args([
                    &format!("@{host}"),
                    "-p",
                    port,
                    "+short",
                    "kube-dns.kube-system.svc.cluster.local",
                ])
                .output()?;
            let got = String::from_utf8_lossy(&dig.stdout).trim().to_string();
            if got == "10.96.0.10" {
                Ok(())
            } else {
                Err(anyhow::anyhow!("dig @{} said {got:?}", printed[0]))
            }
        },
    )
    .await;
    // The ingress router's printed HTTP address answers (no rule yet: 404).
    let out = std::fs::read_to_string(first_log.with_extension("out")).expect("up output");
    let ingress = out
        .lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("ingress:") && w.next() == Some("http"))
                .then(|| w.next().map(str::to_string))
                .flatten()
        })
        .unwrap_or_else(|| panic!("no ingress line in {out}"));
    wait_for(
        Duration::from_secs(10),
        "the ingress answers at up's printed address",
        async || {
            let o = tokio::process::Command::new("curl")
                .args(["-s", "--max-time", "3", "-w", " %{http_code}"])
                .arg(format!("http://{ingress}/"))
                .output()
                .await?;
            let got = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if got.contains("no ingress rule") && got.ends_with(" 404") {
                Ok(())
            } else {
                Err(anyhow::anyhow!("curl said {got:?}"))
            }
        },
    )
    .await;
    interrupt_and_wait(&mut up);
    // A healthy start and stop: nothing an operator would have to look at.
    let log = std::fs::read_to_string(&first_log).expect("log");
    let alarming: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        alarming.is_empty(),
        "a healthy start and stop logged:\n{}",
        alarming.join("\n")
    );
    assert!(
        log.contains("master serving"),
        "the log is the master's: {log}"
    );

    let _up = start_up(dir.path(), base, &logs.path().join("second.log"));
    let (value, mod_rev) = wait_for(
        Duration::from_secs(30),
        "flotilla up serves again",
        async || {
            let mut kv = KvClient::new(channel_with(&third, Some(tls()?)).await?);
            let r = kv
                .range(RangeRequest {
                    key: b"up/key".to_vec(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let kv = r
                .kvs
                .first()
                .ok_or_else(|| anyhow::anyhow!("up/key is missing"))?;
            Ok::<_, anyhow::Error>((kv.value.clone(), kv.mod_revision))
        },
    )
    .await;
    assert_eq!(value, b"kept");
    assert_eq!(mod_rev, rev);
}
