//! Encryption at rest: the configuration, the sealed format, rotation, and
//! the API server over the in-memory store with the encrypting layer.

use std::sync::Arc;

use base64::Engine as _;
use flotilla_objects::registry;
use serde_json::json;

use super::*;
use crate::memstore::MemStore;
use crate::{ApiConfig, ApiServer};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A configuration for secrets with these (name, key byte) AES keys, in
/// order, then `tail` providers (e.g. "- identity: {}").
fn config(keys: &[(&str, u8)], tail: &str) -> EncryptionConfig {
    let keys: String = keys
        .iter()
        .map(|(n, b)| {
            format!(
                "          - name: {n}\n            secret: {}\n",
                b64(&[*b; 32])
            )
        })
        .collect();
    let text = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm:\n          keys:\n{keys}{tail}"
    );
    EncryptionConfig::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

const KEY: &[u8] = b"/registry/secrets/default/s";

#[test]
fn a_sealed_value_opens_only_under_its_key_and_shows_no_plaintext() {
    let c = config(&[("k1", 1)], "");
    let stored = c.seal(KEY, b"hunter2-password".to_vec()).expect("seal");
    assert!(stored.starts_with(b"k8s:enc:aesgcm:v1:k1:"));
    assert!(!stored.windows(7).any(|w| w == b"hunter2"));
    // A random nonce: the same value seals differently each time.
    assert_ne!(
        stored,
        c.seal(KEY, b"hunter2-password".to_vec()).expect("seal")
    );
    assert_eq!(
        c.open(KEY, stored.clone()).expect("open"),
        (b"hunter2-password".to_vec(), false)
    );
    // Copied under another key, or altered, it does not open.
    let other = b"/registry/secrets/default/other";
    assert!(c.open(other, stored.clone()).is_err());
    let mut bad = stored;
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let e = c.open(KEY, bad).expect_err("altered");
    assert!(e.contains("cannot be decrypted with key \"k1\""), "{e}");
    // Other resources are stored as they are.
    let cm = b"/registry/configmaps/default/c";
    assert_eq!(c.seal(cm, b"x".to_vec()).expect("seal"), b"x");
}

#[test]
fn after_a_rotation_old_values_open_and_are_stale_until_rewritten() {
    let old = config(&[("k1", 1)], "");
    let by_k1 = old.seal(KEY, b"v".to_vec()).expect("seal");
    // The new key first, the old one still listed.
    let rotated = config(&[("k2", 2), ("k1", 1)], "");
    assert_eq!(
        rotated.open(KEY, by_k1.clone()).expect("open"),
        (b"v".to_vec(), true)
    );
    let by_k2 = rotated.seal(KEY, b"v".to_vec()).expect("seal");
    assert!(by_k2.starts_with(b"k8s:enc:aesgcm:v1:k2:"));
    assert_eq!(
        rotated.open(KEY, by_k2.clone()).expect("open"),
        (b"v".to_vec(), false)
    );
    // The old key removed: what it sealed can no longer be read, and the
    // error names the key.
    let only_k2 = config(&[("k2", 2)], "");
    let e = only_k2.open(KEY, by_k1).expect_err("k1 is gone");
    assert!(
        e.contains("key \"k1\", which is not in the encryption configuration"),
        "{e}"
    );
    assert!(only_k2.open(KEY, by_k2).is_ok());
}

#[test]
fn plaintext_reads_only_through_the_identity_provider() {
    let with_identity = config(&[("k1", 1)], "      - identity: {}\n");
    assert_eq!(
        with_identity.open(KEY, b"{}".to_vec()).expect("open"),
        (b"{}".to_vec(), true),
        "stored before encryption was turned on: stale"
    );
    let e = config(&[("k1", 1)], "")
        .open(KEY, b"{}".to_vec())
        .expect_err("no identity");
    assert!(e.contains("identity provider is not configured"), "{e}");
    // identity first: writes stay plaintext, encrypted values still open
    // (the way back from encryption).
    let back = EncryptionConfig::parse(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - identity: {}\n  - aesgcm: {keys: [{name: k1, secret: AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=}]}\n",
    )
    .expect("parse");
    assert_eq!(back.seal(KEY, b"{}".to_vec()).expect("seal"), b"{}");
    let sealed = config(&[("k1", 1)], "")
        .seal(KEY, b"v".to_vec())
        .expect("seal");
    assert_eq!(back.open(KEY, sealed).expect("open"), (b"v".to_vec(), true));
}

#[test]
fn a_generated_configuration_encrypts_secrets_with_a_fresh_key() {
    let a = EncryptionConfig::generate("up").expect("generate");
    assert_ne!(a, EncryptionConfig::generate("up").expect("generate"));
    let c = EncryptionConfig::parse(&a).expect("parse");
    let sealed = c.seal(KEY, b"v".to_vec()).expect("seal");
    assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:up:"));
    assert_eq!(c.open(KEY, b"{}".to_vec()).expect("plaintext").0, b"{}");
}

#[test]
fn bad_configurations_are_refused_with_what_is_wrong() {
    let head = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n";
    let cases = [
        (format!("{head}  - aesgcm: {{keys: [{{name: k, secret: {}}}]}}\n", b64(&[1; 20])), "20 bytes"),
        (format!("{head}  - aesgcm: {{keys: [{{name: k, secret: '!!'}}]}}\n"), "not base64"),
        (format!("{head}  - aesgcm: {{keys: []}}\n"), "no keys"),
        (format!("{head}  - secretbox: {{keys: []}}\n"), "secretbox"),
        (format!("{head}  - aesgcm: {{keys: [{{name: k, secret: {0}}}, {{name: k, secret: {0}}}]}}\n", b64(&[1; 32])), "used twice"),
        ("apiVersion: v1\nkind: ConfigMap\n".to_string(), "expected kind EncryptionConfiguration"),
        ("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [pods]\n  providers: [{identity: {}}]\n".to_string(), "only secrets and configmaps"),
    ];
    for (text, want) in cases {
        let e = EncryptionConfig::parse(&text).expect_err(&text);
        assert!(e.contains(want), "{text}\n=> {e} (wanted {want:?})");
    }
}

#[test]
fn watch_ranges_are_matched_to_the_encrypted_prefixes() {
    let p = b"/registry/secrets/";
    assert!(overlaps(b"/registry/secrets/", b"/registry/secrets0", p));
    assert!(overlaps(b"/registry/secrets/a/b", b"", p));
    assert!(overlaps(b"/registry/", b"/registry0", p));
    assert!(overlaps(b"\0", &[0], p));
    assert!(!overlaps(b"/registry/pods/", b"/registry/pods0", p));
    assert!(!overlaps(b"/registry/pods/a", b"", p));
}

async fn api(cfg: EncryptionConfig) -> (MemStore, ApiServer) {
    let mem = MemStore::new();
    let store: Arc<dyn Store> = Arc::new(EncryptingStore::new(Arc::new(mem.clone()), cfg));
    let api = ApiServer::new(store, ApiConfig::default());
    api.ensure_namespaces().await.expect("namespaces");
    (mem, api)
}

#[tokio::test]
async fn the_api_stores_secrets_sealed_and_a_replace_reseals_them_with_the_new_key() {
    let (mem, api) = api(config(&[("k1", 1)], "")).await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "namespace": "default"},
        "stringData": {"password": "hunter2-password"}});
    api.create(&registry::SECRET, "default", secret, false)
        .await
        .expect("create");
    let raw = mem.get_raw(KEY).expect("stored");
    assert!(raw.starts_with(b"k8s:enc:aesgcm:v1:k1:"));
    let plain_b64 = b64(b"hunter2-password");
    for needle in [b"hunter2".as_slice(), plain_b64.as_bytes()] {
        assert!(!raw.windows(needle.len()).any(|w| w == needle));
    }
    let got = api
        .get(&registry::SECRET, "default", "s", false)
        .await
        .expect("get");
    assert_eq!(got["data"]["password"], json!(plain_b64));
    // ConfigMaps are not configured: stored as JSON.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "default"}, "data": {"k": "v"}});
    api.create(&registry::CONFIG_MAP, "default", cm, false)
        .await
        .expect("configmap");
    assert!(mem
        .get_raw(b"/registry/configmaps/default/c")
        .expect("stored")
        .starts_with(b"{"));

    // Rotation: k2 first, k1 still read. Replacing the Secret unchanged
    // writes it again, now sealed with k2.
    let store: Arc<dyn Store> = Arc::new(EncryptingStore::new(
        Arc::new(mem.clone()),
        config(&[("k2", 2), ("k1", 1)], ""),
    ));
    let rotated = ApiServer::new(store, ApiConfig::default());
    let mut cur = rotated
        .get(&registry::SECRET, "default", "s", false)
        .await
        .expect("read with the old key");
    cur["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("resourceVersion");
    let w = rotated
        .update(&registry::SECRET, "default", cur.clone(), false)
        .await
        .expect("replace");
    assert!(w.changed, "a stale value is written even unchanged");
    assert!(mem
        .get_raw(KEY)
        .expect("stored")
        .starts_with(b"k8s:enc:aesgcm:v1:k2:"));
    // Now current: the same replace changes nothing.
    let w = rotated
        .update(&registry::SECRET, "default", cur, false)
        .await
        .expect("replace");
    assert!(!w.changed);
}
