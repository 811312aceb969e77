//! ServiceAccount tokens: JWTs signed by the masters' key, as Kubernetes'
//! bound tokens are (`--service-account-signing-key-file`,
//! `--service-account-issuer`).
//!
//! A token says who it stands for (`sub`:
//! `system:serviceaccount:NAMESPACE:NAME`), for whom it is meant (`aud`),
//! until when (`exp`), and in the private claim `kubernetes.io` the uids
//! of the ServiceAccount and of the pod it is bound to. This module signs
//! and checks the signature, time and audience; whether the ServiceAccount
//! and the pod still exist is the API server's question.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The prefix of a ServiceAccount's user name.
pub const SA_USER_PREFIX: &str = "system:serviceaccount:";
/// The group of every ServiceAccount.
pub const SA_GROUP: &str = "system:serviceaccounts";
/// The issuer when none is configured (Kubernetes' usual one).
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Where a pod finds its token, CA and namespace.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// A token's lifetime when the request names none (kubelet asks for 1 h).
pub const DEFAULT_EXPIRATION: Duration = Duration::from_secs(3600);
/// The shortest lifetime a request may ask for (Kubernetes' 10 minutes).
pub const MIN_EXPIRATION: Duration = Duration::from_secs(600);

/// Why a token could not be made or checked.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("invalid service account token: {0}")]
    Invalid(String),
    #[error("signing the token: {0}")]
    Sign(String),
}

/// An object a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Ref {
    pub name: String,
    pub uid: String,
}

/// The private claim `kubernetes.io`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Binding {
    pub namespace: String,
    pub serviceaccount: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Ref>,
}

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: u64,
    pub iat: u64,
    pub nbf: u64,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: Binding,
}

impl Claims {
    /// The user a token stands for.
    pub fn user(&self) -> String {
        sa_user(
            &self.kubernetes.namespace,
            &self.kubernetes.serviceaccount.name,
        )
    }
}

/// `system:serviceaccount:NS:NAME`.
pub fn sa_user(namespace: &str, name: &str) -> String {
    format!("{SA_USER_PREFIX}{namespace}:{name}")
}

/// The groups of a ServiceAccount of `namespace`.
pub fn sa_groups(namespace: &str) -> Vec<String> {
    vec![SA_GROUP.into(), format!("{SA_GROUP}:{namespace}")]
}

/// Whether a bearer token has a JWT's shape (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The algorithm of a PEM private key: ES256 for a P-256 key, RS256 for RSA.
fn key_algorithm(pem: &str) -> Algorithm {
    if pem.contains("RSA") {
        Algorithm::RS256
    } else {
        Algorithm::ES256
    }
}

fn key_error(path: &Path, message: impl ToString) -> TokenError {
    TokenError::Key {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// The masters' token signer and checker: one key, one issuer.
pub struct TokenKeys {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    key_id: String,
    issuer: String,
    /// Audiences the API server accepts (a token must name one).
    audiences: Vec<String>,
    max_expiration: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Read a PEM private key (PKCS#8 P-256, or RSA) from `path`.
    /// `audiences` empty means the issuer alone.
    pub fn load(
        path: &Path,
        issuer: &str,
        audiences: &[String],
        max_expiration: Duration,
    ) -> Result<TokenKeys, TokenError> {
        let pem = std::fs::read_to_string(path).map_err(|e| key_error(path, e))?;
        Self::from_pem(&pem, issuer, audiences, max_expiration).map_err(|e| key_error(path, e))
    }

    /// The keys of a PEM private key.
    pub fn from_pem(
        pem: &str,
        issuer: &str,
        audiences: &[String],
        max_expiration: Duration,
    ) -> Result<TokenKeys, String> {
        let algorithm = key_algorithm(pem);
        let kp = rcgen::KeyPair::from_pem(pem).map_err(|e| e.to_string())?;
        let public_pem = kp.public_key_pem();
        let (encoding, decoding) = if algorithm == Algorithm::RS256 {
            (
                EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| e.to_string())?,
                DecodingKey::from_rsa_pem(public_pem.as_bytes()).map_err(|e| e.to_string())?,
            )
        } else {
            (
                EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| e.to_string())?,
                DecodingKey::from_ec_pem(public_pem.as_bytes()).map_err(|e| e.to_string())?,
            )
        };
        if issuer.is_empty() {
            return Err("the service account issuer must not be empty".into());
        }
        // The key id is derived from the public key, as Kubernetes does, so
        // that every master signing with the same key names it the same.
        use base64::Engine;
        let digest = ring::digest::digest(&ring::digest::SHA256, public_pem.as_bytes());
        let key_id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
        let audiences = if audiences.is_empty() {
            vec![issuer.to_string()]
        } else {
            audiences.to_vec()
        };
        Ok(TokenKeys {
            algorithm,
            encoding,
            decoding,
            key_id,
            issuer: issuer.into(),
            audiences,
            max_expiration,
        })
    }

    /// The audiences the API server accepts; the default of a token request.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A token for `binding`, meant for `audiences` (the API server's when
    /// empty), valid for `expiration` (clamped to the maximum; at least
    /// [`MIN_EXPIRATION`] is asked of the caller).
    pub fn sign(
        &self,
        binding: Binding,
        audiences: &[String],
        expiration: Duration,
    ) -> Result<(String, Claims), TokenError> {
        let iat = now();
        let lifetime = expiration.min(self.max_expiration).as_secs();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: sa_user(&binding.namespace, &binding.serviceaccount.name),
            aud: if audiences.is_empty() {
                self.audiences.clone()
            } else {
                audiences.to_vec()
            },
            exp: iat + lifetime,
            iat,
            nbf: iat,
            kubernetes: binding,
        };
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.key_id.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        Ok((token, claims))
    }

    /// The claims of a token this key signed, for this issuer and one of
    /// the accepted audiences, not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut v = Validation::new(self.algorithm);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&self.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = 0;
        v.validate_nbf = true;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let c = data.claims;
        if c.sub != c.user() {
            return Err(TokenError::Invalid(
                "the subject does not match the service account".into(),
            ));
        }
        Ok(c)
    }
}

/// A new P-256 private key in PKCS#8 PEM, for `--service-account-signing-key-file`.
pub fn generate_key_pem() -> Result<String, TokenError> {
    let kp = rcgen::KeyPair::generate().map_err(|e| TokenError::Sign(e.to_string()))?;
    Ok(kp.serialize_pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(issuer: &str) -> TokenKeys {
        let pem = generate_key_pem().expect("key");
        TokenKeys::from_pem(&pem, issuer, &[], Duration::from_secs(48 * 3600)).expect("keys")
    }

    fn binding() -> Binding {
        Binding {
            namespace: "web".into(),
            serviceaccount: Ref {
                name: "reader".into(),
                uid: "u1".into(),
            },
            pod: Some(Ref {
                name: "p".into(),
                uid: "u2".into(),
            }),
            node: None,
        }
    }

    #[test]
    fn a_signed_token_verifies_and_names_its_service_account() {
        let k = keys(DEFAULT_ISSUER);
        let (t, c) = k
            .sign(binding(), &[], Duration::from_secs(3600))
            .expect("sign");
        assert!(looks_like_jwt(&t));
        let back = k.verify(&t).expect("verify");
        assert_eq!(back, c);
        assert_eq!(back.user(), "system:serviceaccount:web:reader");
        assert_eq!(back.aud, [DEFAULT_ISSUER]);
        assert_eq!(back.exp - back.iat, 3600);
    }

    #[test]
    fn another_key_issuer_audience_or_a_changed_claim_is_refused() {
        let k = keys("a");
        let (t, _) = k.sign(binding(), &[], DEFAULT_EXPIRATION).expect("sign");
        assert!(keys("a").verify(&t).is_err(), "another key");
        let (other_aud, _) = k
            .sign(binding(), &["vault".into()], DEFAULT_EXPIRATION)
            .expect("sign");
        let e = k.verify(&other_aud).expect_err("audience");
        assert!(
            e.to_string().contains("invalid service account token"),
            "{e}"
        );
        // Swap the claims for others: the signature no longer matches.
        let mut parts: Vec<&str> = t.split('.').collect();
        let (t2, _) = k
            .sign(
                Binding {
                    namespace: "kube-system".into(),
                    ..binding()
                },
                &[],
                DEFAULT_EXPIRATION,
            )
            .expect("sign");
        let body = t2.split('.').nth(1).expect("body").to_string();
        parts[1] = &body;
        assert!(k.verify(&parts.join(".")).is_err(), "spliced claims");
        assert!(k.verify("a.b.c").is_err());
    }

    #[test]
    fn expiry_is_clamped_to_the_maximum_and_expired_tokens_are_refused() {
        let pem = generate_key_pem().expect("key");
        let k = TokenKeys::from_pem(&pem, "i", &[], Duration::from_secs(600)).expect("keys");
        let (_, c) = k
            .sign(binding(), &[], Duration::from_secs(99_999))
            .expect("sign");
        assert_eq!(c.exp - c.iat, 600);
        let k0 = TokenKeys::from_pem(&pem, "i", &[], Duration::ZERO).expect("keys");
        let (t, _) = k0.sign(binding(), &[], DEFAULT_EXPIRATION).expect("sign");
        // exp == iat: expired as soon as the second turns (leeway is 0).
        let expired = (0..300).any(|_| {
            if k.verify(&t).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
            false
        });
        assert!(expired, "a token past its exp must be refused");
    }

    #[test]
    fn every_master_with_the_same_key_gives_it_the_same_id() {
        let pem = generate_key_pem().expect("key");
        let a = TokenKeys::from_pem(&pem, "i", &[], DEFAULT_EXPIRATION).expect("a");
        let b = TokenKeys::from_pem(&pem, "i", &[], DEFAULT_EXPIRATION).expect("b");
        assert_eq!(a.key_id, b.key_id);
        let (t, _) = a.sign(binding(), &[], DEFAULT_EXPIRATION).expect("sign");
        b.verify(&t).expect("verified by the other master");
    }
}
