//! Bootstrap tokens, as kubeadm makes them: `ID.SECRET` (6 and 16
//! characters of `[a-z0-9]`), kept in the Secret
//! `kube-system/bootstrap-token-ID` of type `bootstrap.kubernetes.io/token`.
//! A node presents one to ask for its client certificate; it
//! authenticates as `system:bootstrap:ID` in `system:bootstrappers`.

/// The namespace of bootstrap token Secrets.
pub const NAMESPACE: &str = "kube-system";
/// The prefix of their names.
pub const SECRET_PREFIX: &str = "bootstrap-token-";
/// Their type.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The prefix of the user a bootstrap token authenticates as.
pub const USER_PREFIX: &str = "system:bootstrap:";
/// The group every bootstrap token's user is in.
pub const GROUP: &str = "system:bootstrappers";

/// A token split into its id and secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
}

fn lower_alnum(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl BootstrapToken {
    /// `ID.SECRET`, or None when the text is not shaped like one.
    pub fn parse(token: &str) -> Option<BootstrapToken> {
        let (id, secret) = token.split_once('.')?;
        (lower_alnum(id, 6) && lower_alnum(secret, 16)).then(|| BootstrapToken {
            id: id.into(),
            secret: secret.into(),
        })
    }

    /// A new random token.
    pub fn generate() -> BootstrapToken {
        use ring::rand::SecureRandom;
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let rng = ring::rand::SystemRandom::new();
        let pick = |n: usize| -> String {
            let mut out = String::with_capacity(n);
            while out.len() < n {
                let mut b = [0u8; 1];
                if rng.fill(&mut b).is_err() {
                    continue;
                }
                // 252 = 7 * 36: reject the rest to stay uniform.
                if b[0] < 252 {
                    out.push(ALPHABET[(b[0] % 36) as usize] as char);
                }
            }
            out
        };
        BootstrapToken {
            id: pick(6),
            secret: pick(16),
        }
    }

    /// The name of the Secret that holds it.
    pub fn secret_name(&self) -> String {
        format!("{SECRET_PREFIX}{}", self.id)
    }

    /// The user it authenticates as.
    pub fn user(&self) -> String {
        format!("{USER_PREFIX}{}", self.id)
    }
}

impl std::fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_only_in_their_shape() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").expect("ok");
        assert_eq!(t.secret_name(), "bootstrap-token-abcdef");
        assert_eq!(t.user(), "system:bootstrap:abcdef");
        for bad in [
            "abcdef0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdef.0123456789abcde",
            "abcdef.0123456789abcdef.x",
            "",
        ] {
            assert!(BootstrapToken::parse(bad).is_none(), "{bad}");
        }
        let g = BootstrapToken::generate();
        assert_eq!(BootstrapToken::parse(&g.to_string()), Some(g.clone()));
        assert_ne!(BootstrapToken::generate(), g);
    }
}
