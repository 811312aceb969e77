//! Encryption at rest, as Kubernetes' API server does it: an
//! `EncryptionConfiguration` (apiserver.config.k8s.io/v1) names, per
//! resource, a list of providers; the first one encrypts what is written,
//! and each of them can read what it wrote. Providers: `aesgcm` (AES-256,
//! or AES-128 with a 16-byte key: GCM with a random nonce, the object's key
//! in the store as associated data, so a value copied under another key
//! does not decrypt) and `identity` (stored as is). Values are stored as
//! Kubernetes stores them: `k8s:enc:aesgcm:v1:KEYNAME:` then the nonce and
//! the sealed bytes.
//!
//! [`EncryptingStore`] wraps the store the API server uses: writes of the
//! configured resources are sealed on their way in, reads and watch events
//! opened on their way out, so that the RocksDB files, a snapshot, a backup
//! or the raw etcd API show only ciphertext. A value read with a key that
//! is not the first (after a rotation) or stored in plaintext while the
//! first provider encrypts is marked stale ([`Kv::stale`]): an update that
//! changes nothing still writes it, so `flt get secrets -A -o yaml | flt
//! replace -f -` re-encrypts everything with the new key, as
//! `kubectl replace` does in Kubernetes' rotation procedure.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::store::{
    Change, Kv, Op, Page, Store, StoreError, Txn, TxnResult, WatchMsg, WatchStream,
};

/// What is wrong with an encryption configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    api_version: String,
    kind: String,
    #[serde(default)]
    resources: Vec<FileResources>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileResources {
    resources: Vec<String>,
    providers: Vec<FileProvider>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProvider {
    aesgcm: Option<FileKeys>,
    identity: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeys {
    keys: Vec<FileKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    name: String,
    secret: String,
}

const PREFIX: &[u8] = b"k8s:enc:aesgcm:v1:";

/// One provider of a resource's list.
enum Provider {
    /// AES-GCM with these keys, the first one writing.
    AesGcm(Vec<(String, LessSafeKey)>),
    Identity,
}

/// The providers of one resource, in order.
struct Transformer {
    providers: Vec<Provider>,
}

/// A parsed encryption configuration: for each resource (its plural, as
/// `secrets`), how its values are stored.
pub struct EncryptionConfig {
    /// By store key prefix (`/registry/secrets/`).
    by_prefix: Vec<(Vec<u8>, Arc<Transformer>)>,
    rng: SystemRandom,
}

/// What is encrypted and how it is written, never the keys.
impl std::fmt::Debug for EncryptionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (p, t) in &self.by_prefix {
            let first = match &t.providers[0] {
                Provider::Identity => "identity".to_string(),
                Provider::AesGcm(k) => format!("aesgcm key {}", k[0].0),
            };
            m.entry(&String::from_utf8_lossy(p), &first);
        }
        m.finish()
    }
}

impl EncryptionConfig {
    /// Read Kubernetes' EncryptionConfiguration from `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))
    }

    /// The text of a new configuration that encrypts Secrets with a fresh
    /// random AES-256 key named `key_name` (and still reads plaintext,
    /// for Secrets written before it was turned on).
    pub fn generate(key_name: &str) -> Result<String, String> {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| "no randomness for a key".to_string())?;
        let secret = base64::engine::general_purpose::STANDARD.encode(key);
        Ok(format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm:\n          keys:\n            - name: {key_name}\n              secret: {secret}\n      - identity: {{}}\n"
        ))
    }

    /// Parse an EncryptionConfiguration (YAML or JSON).
    pub fn parse(text: &str) -> Result<Self, String> {
        let f: FileConfig = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        if f.kind != "EncryptionConfiguration"
            || !matches!(
                f.api_version.as_str(),
                "apiserver.config.k8s.io/v1" | "apiserver.config.k8s.io/v1beta1"
            )
        {
            return Err(format!(
                "expected kind EncryptionConfiguration of apiserver.config.k8s.io/v1, got {} of {}",
                f.kind, f.api_version
            ));
        }
        let mut by_prefix = Vec::new();
        for (i, r) in f.resources.iter().enumerate() {
            if r.providers.is_empty() {
                return Err(format!("resources[{i}]: no providers"));
            }
            let mut providers = Vec::new();
            for (j, p) in r.providers.iter().enumerate() {
                let at = format!("resources[{i}].providers[{j}]");
                providers.push(match (&p.aesgcm, &p.identity) {
                    (Some(k), None) => Provider::AesGcm(keys(&at, k)?),
                    (None, Some(_)) => Provider::Identity,
                    _ => {
                        return Err(format!(
                            "{at}: exactly one of aesgcm or identity (the providers Flotilla has)"
                        ))
                    }
                });
            }
            let t = Arc::new(Transformer { providers });
            for res in &r.resources {
                // "secrets" or "secrets." (the core group spelled out).
                let plural = res.trim_end_matches('.');
                if plural != "secrets" && plural != "configmaps" {
                    return Err(format!(
                        "resources[{i}]: {res:?}: only secrets and configmaps can be encrypted"
                    ));
                }
                let prefix = format!("/registry/{plural}/").into_bytes();
                if by_prefix.iter().any(|(p, _)| p == &prefix) {
                    return Err(format!("resources[{i}]: {res:?} is configured twice"));
                }
                by_prefix.push((prefix, t.clone()));
            }
        }
        Ok(EncryptionConfig {
            by_prefix,
            rng: SystemRandom::new(),
        })
    }

    fn transformer(&self, key: &[u8]) -> Option<&Transformer> {
        self.by_prefix
            .iter()
            .find(|(p, _)| key.starts_with(p))
            .map(|(_, t)| t.as_ref())
    }

    /// The bytes to store for `value` under `key`.
    pub fn seal(&self, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>, String> {
        let Some(t) = self.transformer(key) else {
            return Ok(value);
        };
        match &t.providers[0] {
            Provider::Identity => Ok(value),
            Provider::AesGcm(keys) => {
                let (name, k) = &keys[0];
                let mut nonce = [0u8; NONCE_LEN];
                self.rng
                    .fill(&mut nonce)
                    .map_err(|_| "no randomness for a nonce".to_string())?;
                let mut buf = value;
                k.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(key),
                    &mut buf,
                )
                .map_err(|_| "sealing failed".to_string())?;
                let mut out =
                    Vec::with_capacity(PREFIX.len() + name.len() + 1 + NONCE_LEN + buf.len());
                out.extend_from_slice(PREFIX);
                out.extend_from_slice(name.as_bytes());
                out.push(b':');
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&buf);
                Ok(out)
            }
        }
    }

    /// The value stored under `key`, and whether it is stale (not as the
    /// first provider would write it).
    pub fn open(&self, key: &[u8], stored: Vec<u8>) -> Result<(Vec<u8>, bool), String> {
        let Some(t) = self.transformer(key) else {
            return Ok((stored, false));
        };
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            // Not encrypted: readable only if identity is a provider.
            return match t
                .providers
                .iter()
                .position(|p| matches!(p, Provider::Identity))
            {
                Some(i) => Ok((stored, i != 0)),
                None => Err(format!(
                    "{} is stored unencrypted and the identity provider is not configured for it",
                    String::from_utf8_lossy(key)
                )),
            };
        };
        let colon = rest
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| format!("{}: no key name", String::from_utf8_lossy(key)))?;
        let name = std::str::from_utf8(&rest[..colon]).unwrap_or("?");
        let sealed = &rest[colon + 1..];
        let mut first = true;
        for p in &t.providers {
            if let Provider::AesGcm(keys) = p {
                for (i, (n, k)) in keys.iter().enumerate() {
                    if n != name {
                        continue;
                    }
                    if sealed.len() < NONCE_LEN {
                        return Err(format!("{}: truncated", String::from_utf8_lossy(key)));
                    }
                    let (nonce, body) = sealed.split_at(NONCE_LEN);
                    let nonce = Nonce::try_assume_unique_for_key(nonce)
                        .map_err(|_| "bad nonce".to_string())?;
                    let mut buf = body.to_vec();
                    let plain = k.open_in_place(nonce, Aad::from(key), &mut buf).map_err(|_| {
                        format!(
                            "{}: cannot be decrypted with key {name:?} (wrong key, or the value was altered)",
                            String::from_utf8_lossy(key)
                        )
                    })?;
                    let n = plain.len();
                    buf.truncate(n);
                    return Ok((buf, !(first && i == 0)));
                }
            }
            first = false;
        }
        Err(format!(
            "{} is encrypted with key {name:?}, which is not in the encryption configuration",
            String::from_utf8_lossy(key)
        ))
    }
}

fn keys(at: &str, k: &FileKeys) -> Result<Vec<(String, LessSafeKey)>, String> {
    if k.keys.is_empty() {
        return Err(format!("{at}.aesgcm: no keys"));
    }
    let mut out: Vec<(String, LessSafeKey)> = Vec::new();
    for (i, key) in k.keys.iter().enumerate() {
        let at = format!("{at}.aesgcm.keys[{i}]");
        if key.name.is_empty() || key.name.contains(':') {
            return Err(format!("{at}: a name, without ':', is required"));
        }
        if out.iter().any(|(n, _)| n == &key.name) {
            return Err(format!("{at}: key name {:?} is used twice", key.name));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(key.secret.trim())
            .map_err(|e| format!("{at}: secret is not base64: {e}"))?;
        let alg = match raw.len() {
            16 => &AES_128_GCM,
            32 => &AES_256_GCM,
            n => {
                return Err(format!(
                    "{at}: the secret is {n} bytes; AES-GCM takes 16 or 32 (head -c 32 /dev/urandom | base64)"
                ))
            }
        };
        let unbound = UnboundKey::new(alg, &raw).map_err(|_| format!("{at}: unusable key"))?;
        out.push((key.name.clone(), LessSafeKey::new(unbound)));
    }
    Ok(out)
}

/// The API server's store with the configured resources encrypted.
pub struct EncryptingStore {
    inner: Arc<dyn Store>,
    cfg: Arc<EncryptionConfig>,
}

impl EncryptingStore {
    pub fn new(inner: Arc<dyn Store>, cfg: EncryptionConfig) -> Self {
        EncryptingStore {
            inner,
            cfg: Arc::new(cfg),
        }
    }
}

fn open_kv(cfg: &EncryptionConfig, mut kv: Kv) -> Result<Kv, String> {
    let (v, stale) = cfg.open(&kv.key, std::mem::take(&mut kv.value))?;
    kv.value = v;
    kv.stale = stale;
    Ok(kv)
}

fn open_change(cfg: &EncryptionConfig, c: Change) -> Result<Change, String> {
    Ok(match c {
        Change::Put { kv, prev } => Change::Put {
            kv: open_kv(cfg, kv)?,
            prev: prev.map(|p| open_kv(cfg, p)).transpose()?,
        },
        Change::Delete { key, prev } => Change::Delete {
            key,
            prev: prev.map(|p| open_kv(cfg, p)).transpose()?,
        },
    })
}

#[async_trait::async_trait]
impl Store for EncryptingStore {
    async fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        revision: i64,
        linearizable: bool,
    ) -> Result<Page, StoreError> {
        let mut page = self
            .inner
            .range(start, end, limit, revision, linearizable)
            .await?;
        page.kvs = std::mem::take(&mut page.kvs)
            .into_iter()
            .map(|kv| open_kv(&self.cfg, kv))
            .collect::<Result<_, _>>()
            .map_err(StoreError::Other)?;
        Ok(page)
    }

    async fn txn(&self, mut txn: Txn) -> Result<TxnResult, StoreError> {
        for op in &mut txn.ops {
            if let Op::Put(k, v) = op {
                *v = self
                    .cfg
                    .seal(k, std::mem::take(v))
                    .map_err(StoreError::Other)?;
            }
        }
        self.inner.txn(txn).await
    }

    fn watch(&self, start: &[u8], end: &[u8], from: i64) -> WatchStream {
        let mut w = self.inner.watch(start, end, from);
        // Only ranges that can hold encrypted keys need the detour.
        if !self
            .cfg
            .by_prefix
            .iter()
            .any(|(p, _)| overlaps(start, end, p))
        {
            return w;
        }
        let (tx, rx) = mpsc::channel(64);
        let mut inner = std::mem::replace(&mut w.rx, rx);
        let cfg = self.cfg.clone();
        tokio::spawn(async move {
            while let Some(msg) = inner.recv().await {
                let msg = match msg {
                    WatchMsg::Changes { revision, changes } => {
                        match changes
                            .into_iter()
                            .map(|c| open_change(&cfg, c))
                            .collect::<Result<Vec<_>, _>>()
                        {
                            Ok(changes) => WatchMsg::Changes { revision, changes },
                            Err(e) => WatchMsg::Failed(e),
                        }
                    }
                    other => other,
                };
                let end = matches!(msg, WatchMsg::Failed(_) | WatchMsg::Compacted { .. });
                if tx.send(msg).await.is_err() || end {
                    return;
                }
            }
        });
        w
    }

    fn revision(&self) -> i64 {
        self.inner.revision()
    }

    async fn current_revision(&self) -> Result<i64, StoreError> {
        self.inner.current_revision().await
    }

    fn compact_revision(&self) -> i64 {
        self.inner.compact_revision()
    }

    fn max_value_bytes(&self) -> usize {
        // Room for the prefix, the key name, the nonce and the tag.
        self.inner.max_value_bytes().saturating_sub(128)
    }
}

/// Whether the range `[start, end)` (etcd's conventions: an empty end is
/// the key alone, `[0]` every key from `start`) holds keys under `prefix`.
fn overlaps(start: &[u8], end: &[u8], prefix: &[u8]) -> bool {
    if end.is_empty() {
        return start.starts_with(prefix);
    }
    let p_end = crate::store::prefix_end(prefix);
    start < p_end.as_slice() && (end == [0] || prefix < end)
}

#[cfg(test)]
mod tests;
