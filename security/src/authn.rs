//! Who is calling: the identity a request carries, as Kubernetes
//! authenticates it.
//!
//! - A bearer token (`authorization: Bearer T`) is looked up in the token
//!   file (`--token-auth-file`, Kubernetes' CSV: `token,user,uid,"g1,g2"`).
//!   A token that is not there is refused, never treated as anonymous.
//! - Otherwise a client certificate that the TLS layer verified names the
//!   caller: the subject's CN is the user, each O a group.
//! - Otherwise the caller is `system:anonymous` in `system:unauthenticated`.
//!
//! Every authenticated identity is also in `system:authenticated`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use x509_parser::prelude::{FromDer, X509Certificate};

/// The group every authenticated caller is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of callers without credentials.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The user of callers without credentials.
pub const ANONYMOUS: &str = "system:anonymous";
/// The group with every right (bound to cluster-admin).
pub const MASTERS_GROUP: &str = "system:masters";

/// A caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl Identity {
    pub fn anonymous() -> Identity {
        Identity {
            user: ANONYMOUS.into(),
            uid: String::new(),
            groups: vec![UNAUTHENTICATED.into()],
        }
    }

    /// An authenticated user in `groups` (and in system:authenticated).
    pub fn user(user: &str, groups: &[&str]) -> Identity {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.into());
        }
        Identity {
            user: user.into(),
            uid: String::new(),
            groups,
        }
    }

    pub fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }
}

/// Why a caller could not be authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("invalid bearer token")]
    BadToken,
    #[error("the authorization header is not 'Bearer TOKEN'")]
    BadHeader,
    #[error("client certificate: {0}")]
    BadCertificate(String),
    #[error("{path}: line {line}: {message}")]
    TokenFile {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The identity a verified client certificate names.
pub fn identity_of_certificate(der: &[u8]) -> Result<Identity, AuthnError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| AuthnError::BadCertificate(e.to_string()))?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AuthnError::BadCertificate("the subject has no common name".into()))?;
    let groups: Vec<&str> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .collect();
    Ok(Identity::user(user, &groups))
}

/// Bearer tokens and whom they stand for.
#[derive(Debug, Clone, Default)]
pub struct TokenFile {
    tokens: HashMap<String, Identity>,
}

impl TokenFile {
    /// Read a Kubernetes static token file: `token,user,uid[,"g1,g2,..."]`
    /// per line (blank lines and lines starting with # are skipped).
    pub fn load(path: &Path) -> Result<TokenFile, AuthnError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthnError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<TokenFile, AuthnError> {
        let bad = |line: usize, message: String| AuthnError::TokenFile {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .comment(Some(b'#'))
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let mut tokens = HashMap::new();
        for rec in rdr.records() {
            let rec = rec.map_err(|e| {
                let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                bad(line, e.to_string())
            })?;
            let line = rec.position().map(|p| p.line() as usize).unwrap_or(0);
            if rec.iter().all(str::is_empty) {
                continue;
            }
            if rec.len() < 3 {
                return Err(bad(
                    line,
                    format!(
                        "expected token,user,uid[,\"groups\"], found {} fields",
                        rec.len()
                    ),
                ));
            }
            let (token, user, uid) = (&rec[0], &rec[1], &rec[2]);
            if token.is_empty() || user.is_empty() {
                return Err(bad(line, "the token and the user must not be empty".into()));
            }
            let groups: Vec<&str> = rec
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            let mut id = Identity::user(user, &groups);
            id.uid = uid.to_string();
            if tokens.insert(token.to_string(), id).is_some() {
                return Err(bad(line, "this token is listed twice".into()));
            }
        }
        Ok(TokenFile { tokens })
    }

    pub fn get(&self, token: &str) -> Option<&Identity> {
        self.tokens.get(token)
    }
}

/// The token of an `authorization` header's value (`Bearer TOKEN`).
pub fn bearer_token(header: &str) -> Result<&str, AuthnError> {
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthnError::BadHeader)
}

/// Authenticates callers from their token and their verified certificate.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    pub tokens: TokenFile,
}

impl Authenticator {
    /// The caller of a request that carried `authorization` (the header's
    /// value, if any) over a connection whose client presented
    /// `peer_cert` (the leaf, already verified by TLS), if any.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        peer_cert: Option<&[u8]>,
    ) -> Result<Identity, AuthnError> {
        if let Some(h) = authorization {
            let token = bearer_token(h)?;
            return self.tokens.get(token).cloned().ok_or(AuthnError::BadToken);
        }
        match peer_cert {
            Some(der) => identity_of_certificate(der),
            None => Ok(Identity::anonymous()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_read_as_kubernetes_writes_them() {
        let f = TokenFile::parse(
            "# comment\nt1,alice,1001,\"dev,ops\"\n\nt2, bob ,1002\n",
            Path::new("tokens.csv"),
        )
        .expect("parse");
        let a = f.get("t1").expect("alice");
        assert_eq!(a.user, "alice");
        assert_eq!(a.uid, "1001");
        assert_eq!(a.groups, ["dev", "ops", AUTHENTICATED]);
        assert_eq!(f.get("t2").expect("bob").groups, [AUTHENTICATED]);
    }

    #[test]
    fn a_bad_token_file_names_its_line() {
        let e = TokenFile::parse("t1,alice,1\nt2\n", Path::new("tokens.csv")).expect_err("short");
        let s = e.to_string();
        assert!(s.starts_with("tokens.csv: line 2:"), "{s}");
        let e = TokenFile::parse("t1,a,1\nt1,b,2\n", Path::new("t")).expect_err("dup");
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn unknown_tokens_are_refused_and_no_credentials_is_anonymous() {
        let a = Authenticator {
            tokens: TokenFile::parse("t1,alice,1\n", Path::new("t")).expect("parse"),
        };
        assert_eq!(
            a.authenticate(Some("Bearer t1"), None).expect("ok").user,
            "alice"
        );
        assert!(matches!(
            a.authenticate(Some("Bearer nope"), None),
            Err(AuthnError::BadToken)
        ));
        assert!(matches!(
            a.authenticate(Some("Basic x"), None),
            Err(AuthnError::BadHeader)
        ));
        assert_eq!(
            a.authenticate(None, None).expect("anon"),
            Identity::anonymous()
        );
    }
}
