//! `flt auth can-i` and `flt auth whoami`, as kubectl's: what the masters
//! take this caller for, and whether it may do something.

use anyhow::{anyhow, bail, Result};
use clap::Subcommand;
use flotilla_proto::objects::AccessReviewRequest;

use crate::commands::Ctx;

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Whether an action is allowed: `flt auth can-i list pods`,
    /// `flt auth can-i delete deployments/web -n prod --as alice`.
    /// Prints yes or no; exits 0 for yes, 1 for no.
    CanI {
        /// get, list, watch, create, update, patch, delete, ... or *.
        verb: String,
        /// KIND, KIND/NAME, or * (KIND in any name form: pods, po, deploy...).
        resource: String,
        /// Ask about one object by name.
        name: Option<String>,
        /// A subresource (log, exec, status, binding).
        #[arg(long)]
        subresource: Option<String>,
        /// In every namespace (a cluster-wide permission).
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Print nothing; only the exit status answers.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Who the masters take you for: user, uid and groups.
    Whoami,
}

/// `flt auth can-i`'s answer when it is no (exit status 1, nothing more).
#[derive(Debug)]
pub struct No;

impl std::fmt::Display for No {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no")
    }
}

impl std::error::Error for No {}

pub async fn run(ctx: &Ctx, cmd: AuthCommand) -> Result<()> {
    match cmd {
        AuthCommand::Whoami => {
            let w = ctx
                .client
                .who_am_i()
                .await
                .map_err(|e| anyhow!(e.message))?;
            println!("ATTRIBUTE   VALUE");
            println!("Username    {}", w.user);
            if !w.uid.is_empty() {
                println!("UID         {}", w.uid);
            }
            println!("Groups      [{}]", w.groups.join(" "));
            Ok(())
        }
        AuthCommand::CanI {
            verb,
            resource,
            name,
            subresource,
            all_namespaces,
            quiet,
        } => {
            let (resource, sub_from_path, name_from_path) = split(&resource);
            if name.is_some() && name_from_path.is_some() {
                bail!("name given twice: as KIND/NAME and as an argument");
            }
            let req = AccessReviewRequest {
                verb,
                resource,
                subresource: subresource.or(sub_from_path).unwrap_or_default(),
                namespace: if all_namespaces {
                    String::new()
                } else {
                    ctx.namespace.clone()
                },
                name: name.or(name_from_path).unwrap_or_default(),
            };
            let r = ctx
                .client
                .access_review(req)
                .await
                .map_err(|e| anyhow!(e.message))?;
            if r.allowed {
                if !quiet {
                    println!("yes");
                }
                Ok(())
            } else {
                if !quiet {
                    println!("no");
                }
                Err(No.into())
            }
        }
    }
}

/// `pods`, `pods/web`, `pods/log` (a known subresource) or `pods/web/log`.
fn split(s: &str) -> (String, Option<String>, Option<String>) {
    const SUBS: &[&str] = &[
        "log",
        "exec",
        "attach",
        "portforward",
        "metrics",
        "stats",
        "status",
        "binding",
        "scale",
        "eviction",
    ];
    let mut parts = s.splitn(3, '/');
    let kind = parts.next().unwrap_or("").to_string();
    match (parts.next(), parts.next()) {
        (None, _) => (kind, None, None),
        (Some(x), None) if SUBS.contains(&x) => (kind, Some(x.to_string()), None),
        (Some(x), None) => (kind, None, Some(x.to_string())),
        (Some(n), Some(sub)) => (kind, Some(sub.to_string()), Some(n.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn resources_split_into_kind_name_and_subresource() {
        assert_eq!(split("pods"), ("pods".into(), None, None));
        assert_eq!(split("pods/log"), ("pods".into(), Some("log".into()), None));
        assert_eq!(
            split("deploy/web"),
            ("deploy".into(), None, Some("web".into()))
        );
        assert_eq!(
            split("pods/web/exec"),
            ("pods".into(), Some("exec".into()), Some("web".into()))
        );
    }
}
