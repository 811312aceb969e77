//! Secrets encrypted at rest on a real master (`--encryption-provider-
//! config`, Kubernetes' EncryptionConfiguration): the etcd API and every
//! file of the data folder show only ciphertext; after a key rotation
//! (new key first, old key kept) the Secret still reads, a replace seals
//! it with the new key, and the old key can then go; a master without the
//! Secret's key refuses to read it and names the key.

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use flotilla_client::{Api, Client};
use flotilla_objects::core::Secret;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(30);
const SENTINEL: &str = "flotilla-at-rest-sentinel-7781";

fn write_config(path: &Path, keys: &[(&str, u8)]) {
    let b64 = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
    let keys: String = keys
        .iter()
        .map(|(n, b)| {
            format!(
                "            - name: {n}\n              secret: {}\n",
                b64(*b)
            )
        })
        .collect();
    let text = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm:\n          keys:\n{keys}"
    );
    std::fs::write(path, text).expect("encryption config");
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

/// Where the Secret `default/s` of these tests is stored.
fn secret_key() -> String {
    flotilla_testkit::object_key("secrets", "default", "s")
}

async fn stored(addr: &str) -> String {
    let key = secret_key();
    let kvs = range_prefix(addr, &key, false).await.expect("etcd range");
    kvs.get(&key)
        .map(|(v, _)| v.clone())
        .expect("the secret's key")
}

async fn read_secret(secrets: &Api<Secret>) -> Secret {
    wait_for(TIMEOUT, "the Secret reads", async || {
        secrets.get("s").await.map_err(|e| e.to_string())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_on_disk_and_survive_a_key_rotation() {
    if skip_on_etcd(
        "secrets_are_sealed_on_disk_and_survive_a_key_rotation",
        false,
    ) {
        return;
    }
    let keys = tempfile::tempdir().expect("tempdir");
    let cfg = keys.path().join("encryption.yaml");
    write_config(&cfg, &[("k1", 1)]);
    let opts = Opts {
        extra_args: vec![
            "--encryption-provider-config".into(),
            cfg.display().to_string(),
        ],
        ..Default::default()
    };
    let mut cluster = Cluster::start(1, opts).await;
    let addr = cluster.client_addr(0);
    let client = Client::connect(std::slice::from_ref(&addr)).expect("client");
    let secrets = Api::<Secret>::namespaced(client.clone(), "default");
    let s: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "namespace": "default"},
        "stringData": {"password": SENTINEL}
    }))
    .expect("secret");
    secrets.create(&s).await.expect("create");
    let got = read_secret(&secrets).await;
    let want = base64::engine::general_purpose::STANDARD.encode(SENTINEL);
    assert_eq!(
        serde_json::to_value(&got).expect("json")["data"]["password"],
        json!(want)
    );
    assert!(stored(&addr).await.starts_with("k8s:enc:aesgcm:v1:k1:"));
    // Neither the value nor its base64 is anywhere in the data folder
    // (RocksDB's log, tables and Raft log alike); the name of the Secret,
    // which is not secret, is: the search does see the files.
    cluster.stop(0);
    let data = cluster.dir().to_path_buf();
    assert!(
        !files_containing(&data, secret_key().as_bytes()).is_empty(),
        "the search found no file with the Secret's key at all"
    );
    for needle in [SENTINEL.as_bytes(), want.as_bytes()] {
        let hits = files_containing(&data, needle);
        assert!(
            hits.is_empty(),
            "{} in {hits:?}",
            String::from_utf8_lossy(needle)
        );
    }

    // Rotation, as Kubernetes documents it: the new key first, the old
    // one still there; replace every Secret; then drop the old key.
    write_config(&cfg, &[("k2", 2), ("k1", 1)]);
    cluster.restart(0);
    read_secret(&secrets).await;
    // Kubernetes' procedure, with flt: every Secret read and replaced as is.
    let flt = flt_bin().display().to_string();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{flt} --server {addr} get secrets -A -o yaml | {flt} --server {addr} replace -f -"
        ))
        .output()
        .expect("flt");
    assert!(
        out.status.success(),
        "flt get | flt replace: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stored(&addr).await.starts_with("k8s:enc:aesgcm:v1:k2:"));
    write_config(&cfg, &[("k2", 2)]);
    cluster.restart(0);
    let got = read_secret(&secrets).await;
    assert_eq!(
        serde_json::to_value(&got).expect("json")["data"]["password"],
        json!(want)
    );

    // A master without the key cannot read the Secret, and says which key.
    write_config(&cfg, &[("k3", 3)]);
    cluster.restart(0);
    let e = wait_for(TIMEOUT, "the read refused", async || {
        match secrets.get("s").await {
            Ok(_) => Err("read without its key".to_string()),
            Err(e) if e.to_string().contains("k2") => Ok(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    assert!(e.contains("not in the encryption configuration"), "{e}");
}
