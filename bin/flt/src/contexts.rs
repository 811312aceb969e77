//! Contexts, kubeconfig-like, in flt's config file: named clusters
//! (masters and CA), users (credentials) and contexts (a cluster, a user and
//! a default namespace), the current one named by `current-context:`.
//!
//! ```yaml
//! current-context: prod
//! clusters:
//! - name: prod
//!   cluster: {server: "10.0.0.1:2379,10.0.0.2:2379", certificate-authority: /etc/flotilla/pki/ca.crt}
//! users:
//! - name: alice
//!   user: {client-certificate: /home/alice/.flt/alice.crt, client-key: /home/alice/.flt/alice.key}
//! contexts:
//! - name: prod
//!   context: {cluster: prod, user: alice, namespace: web}
//! ```
//!
//! `flt config get-contexts|current-context|use-context|set-context|
//! set-cluster|set-credentials|delete-context|view` read and write it.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use crate::config::{self, Config, Servers};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NamedCluster {
    pub name: String,
    #[serde(default)]
    pub cluster: ClusterEntry,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<Servers>,
    #[serde(
        default,
        rename = "certificate-authority",
        skip_serializing_if = "Option::is_none"
    )]
    pub certificate_authority: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NamedUser {
    pub name: String,
    #[serde(default)]
    pub user: UserEntry,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    #[serde(
        default,
        rename = "client-certificate",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_certificate: Option<PathBuf>,
    #[serde(
        default,
        rename = "client-key",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_key: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NamedContext {
    pub name: String,
    #[serde(default)]
    pub context: ContextEntry,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContextEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The settings in force: the file's top-level ones, or, when a context is
/// chosen (`--context`, else `current-context:`), its cluster's masters and
/// CA, its user's credentials and its namespace.
pub fn effective(cfg: &Config, flag: Option<&str>) -> Result<Config> {
    let Some(name) = flag.or(cfg.current_context.as_deref()) else {
        return Ok(cfg.clone());
    };
    let where_ = config::path()
        .map(|p| format!(" in {}", p.display()))
        .unwrap_or_default();
    let ctx = cfg
        .contexts
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| anyhow!("context \"{name}\" does not exist{where_}"))?;
    let mut out = cfg.clone();
    if let Some(cn) = &ctx.context.cluster {
        let c = cfg.clusters.iter().find(|c| &c.name == cn).ok_or_else(|| {
            anyhow!("cluster \"{cn}\" of context \"{name}\" does not exist{where_}")
        })?;
        out.server = c.cluster.server.clone();
        out.certificate_authority = c.cluster.certificate_authority.clone();
    }
    if let Some(un) = &ctx.context.user {
        let u =
            cfg.users.iter().find(|u| &u.name == un).ok_or_else(|| {
                anyhow!("user \"{un}\" of context \"{name}\" does not exist{where_}")
            })?;
        out.client_certificate = u.user.client_certificate.clone();
        out.client_key = u.user.client_key.clone();
        out.token = u.user.token.clone();
    }
    if ctx.context.namespace.is_some() {
        out.namespace = ctx.context.namespace.clone();
    }
    Ok(out)
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// List the contexts (the current one marked with *).
    GetContexts {
        /// Only this context.
        name: Option<String>,
        /// `name`: only the names.
        #[arg(short = 'o', long)]
        output: Option<String>,
        #[arg(long)]
        no_headers: bool,
    },
    /// List the clusters.
    GetClusters,
    /// List the users.
    GetUsers,
    /// Print the current context's name.
    CurrentContext,
    /// Make a context the current one.
    UseContext { name: String },
    /// Create or change a context.
    SetContext(SetContextArgs),
    /// Create or change a cluster: its masters and CA.
    SetCluster {
        name: String,
        /// The masters: ADDR[,ADDR...].
        #[arg(long)]
        server: Option<String>,
        #[arg(long, value_name = "FILE")]
        certificate_authority: Option<PathBuf>,
    },
    /// Create or change a user: a client certificate and key, or a token.
    SetCredentials {
        name: String,
        #[arg(long, value_name = "FILE")]
        client_certificate: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        client_key: Option<PathBuf>,
        #[arg(long)]
        token: Option<String>,
    },
    /// Remove a context.
    DeleteContext { name: String },
    /// Print the config file (tokens redacted unless --raw).
    View {
        /// Show tokens.
        #[arg(long)]
        raw: bool,
        /// Only what the current context uses.
        #[arg(long)]
        minify: bool,
    },
}

#[derive(Args, Debug)]
pub struct SetContextArgs {
    /// The context (omit with --current).
    pub name: Option<String>,
    /// Change the current context.
    #[arg(long)]
    pub current: bool,
    #[arg(long)]
    pub cluster: Option<String>,
    #[arg(long)]
    pub user: Option<String>,
    /// The context's default namespace.
    #[arg(long)]
    pub namespace: Option<String>,
}

/// The named entries of the file: clusters, users, contexts.
trait Named: Default {
    fn name(&self) -> &str;
    fn named(name: &str) -> Self;
}

macro_rules! named {
    ($t:ty) => {
        impl Named for $t {
            fn name(&self) -> &str {
                &self.name
            }
            fn named(name: &str) -> Self {
                Self {
                    name: name.to_string(),
                    ..Default::default()
                }
            }
        }
    };
}
named!(NamedCluster);
named!(NamedUser);
named!(NamedContext);

/// The entry of that name, added when there is none (then true).
fn upsert<'a, T: Named>(list: &'a mut Vec<T>, name: &str) -> (&'a mut T, bool) {
    let at = list.iter().position(|e| e.name() == name);
    let created = at.is_none();
    let i = at.unwrap_or_else(|| {
        list.push(T::named(name));
        list.len() - 1
    });
    (&mut list[i], created)
}

/// Change a setting when a new value is given.
fn set<T>(field: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *field = value;
    }
}

fn save(cfg: &Config) -> Result<PathBuf> {
    let p = config::path().ok_or_else(|| anyhow!("no config file: set HOME or FLT_CONFIG"))?;
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_yaml::to_string(cfg).context("writing the config")?;
    // It may hold tokens: readable by its owner only, as kubectl keeps a kubeconfig.
    let mut f = std::fs::OpenOptions::new();
    f.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut f, 0o600);
    std::io::Write::write_all(
        &mut f
            .open(&p)
            .with_context(|| format!("writing {}", p.display()))?,
        text.as_bytes(),
    )
    .with_context(|| format!("writing {}", p.display()))?;
    Ok(p)
}

/// Run a `flt config` command on the file's contents (`cfg`, as read).
pub fn run(mut cfg: Config, cmd: ConfigCommand, context_flag: Option<&str>) -> Result<()> {
    match cmd {
        ConfigCommand::GetContexts {
            name,
            output,
            no_headers,
        } => {
            if let Some(n) = &name {
                if !cfg.contexts.iter().any(|c| &c.name == n) {
                    bail!("context {n} not found");
                }
            }
            let shown = cfg
                .contexts
                .iter()
                .filter(|c| name.as_ref().is_none_or(|n| &c.name == n));
            match output.as_deref() {
                Some("name") => shown.for_each(|c| println!("{}", c.name)),
                Some(o) => bail!("output must be one of '' or 'name', not {o:?}"),
                None => {
                    let current = context_flag.or(cfg.current_context.as_deref());
                    let mut rows = Vec::new();
                    if !no_headers {
                        rows.push(
                            ["CURRENT", "NAME", "CLUSTER", "AUTHINFO", "NAMESPACE"]
                                .map(String::from)
                                .to_vec(),
                        );
                    }
                    for c in shown {
                        let mark = if current == Some(c.name.as_str()) {
                            "*"
                        } else {
                            ""
                        };
                        let e = &c.context;
                        rows.push(vec![
                            mark.to_string(),
                            c.name.clone(),
                            e.cluster.clone().unwrap_or_default(),
                            e.user.clone().unwrap_or_default(),
                            e.namespace.clone().unwrap_or_default(),
                        ]);
                    }
                    print!("{}", crate::print::align(&rows));
                }
            }
        }
        ConfigCommand::GetClusters => {
            println!("NAME");
            cfg.clusters.iter().for_each(|c| println!("{}", c.name));
        }
        ConfigCommand::GetUsers => {
            println!("NAME");
            cfg.users.iter().for_each(|u| println!("{}", u.name));
        }
        ConfigCommand::CurrentContext => match &cfg.current_context {
            Some(c) => println!("{c}"),
            None => bail!("current-context is not set"),
        },
        ConfigCommand::UseContext { name } => {
            if !cfg.contexts.iter().any(|c| c.name == name) {
                bail!("no context exists with the name: \"{name}\"");
            }
            cfg.current_context = Some(name.clone());
            save(&cfg)?;
            println!("Switched to context \"{name}\".");
        }
        ConfigCommand::SetContext(a) => {
            let name = match (a.name, a.current) {
                (Some(n), false) => n,
                (None, true) => cfg
                    .current_context
                    .clone()
                    .ok_or_else(|| anyhow!("no current context is set"))?,
                (Some(_), true) => bail!("you cannot specify a context name and --current"),
                (None, false) => bail!("you must specify a context name or --current"),
            };
            let (c, created) = upsert(&mut cfg.contexts, &name);
            let e = &mut c.context;
            set(&mut e.cluster, a.cluster);
            set(&mut e.user, a.user);
            if let Some(ns) = a.namespace {
                e.namespace = (!ns.is_empty()).then_some(ns);
            }
            save(&cfg)?;
            let how = if created { "created" } else { "modified" };
            println!("Context \"{name}\" {how}.");
        }
        ConfigCommand::SetCluster {
            name,
            server,
            certificate_authority,
        } => {
            let c = &mut upsert(&mut cfg.clusters, &name).0.cluster;
            set(&mut c.server, server.map(Servers::One));
            set(&mut c.certificate_authority, certificate_authority);
            save(&cfg)?;
            println!("Cluster \"{name}\" set.");
        }
        ConfigCommand::SetCredentials {
            name,
            client_certificate,
            client_key,
            token,
        } => {
            let u = &mut upsert(&mut cfg.users, &name).0.user;
            set(&mut u.client_certificate, client_certificate);
            set(&mut u.client_key, client_key);
            set(&mut u.token, token);
            save(&cfg)?;
            println!("User \"{name}\" set.");
        }
        ConfigCommand::DeleteContext { name } => {
            let before = cfg.contexts.len();
            cfg.contexts.retain(|c| c.name != name);
            if cfg.contexts.len() == before {
                bail!("cannot delete context {name}, not in the config file");
            }
            if cfg.current_context.as_deref() == Some(name.as_str()) {
                eprintln!("warning: this removed your active context, use \"flt config use-context\" to select a different one");
            }
            let p = save(&cfg)?;
            println!("deleted context {name} from {}", p.display());
        }
        ConfigCommand::View { raw, minify } => {
            if minify {
                let Some(cur) = context_flag
                    .map(str::to_string)
                    .or(cfg.current_context.clone())
                else {
                    bail!("current-context must exist in order to minify");
                };
                // The context, its cluster and its user must exist.
                effective(&cfg, Some(&cur))?;
                let ctx = cfg.contexts.iter().find(|c| c.name == cur).cloned();
                let keep = |n: &Option<String>, name: &str| n.as_deref() == Some(name);
                let (cl, us) = ctx
                    .as_ref()
                    .map(|c| (c.context.cluster.clone(), c.context.user.clone()))
                    .unwrap_or_default();
                cfg.clusters.retain(|c| keep(&cl, &c.name));
                cfg.users.retain(|u| keep(&us, &u.name));
                cfg.contexts = ctx.into_iter().collect();
                cfg.current_context = Some(cur);
            }
            if !raw {
                if cfg.token.is_some() {
                    cfg.token = Some("REDACTED".to_string());
                }
                for u in &mut cfg.users {
                    if u.user.token.is_some() {
                        u.user.token = Some("REDACTED".to_string());
                    }
                }
            }
            print!(
                "{}",
                serde_yaml::to_string(&cfg).context("printing the config")?
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        serde_yaml::from_str(
            "namespace: flat\nserver: 1.1.1.1:1\ntoken: t0\ncurrent-context: a\n\
             clusters:\n- name: c1\n  cluster: {server: '2.2.2.2:2,3.3.3.3:3', certificate-authority: /ca}\n\
             users:\n- name: u1\n  user: {token: t1}\n\
             contexts:\n- name: a\n  context: {cluster: c1, user: u1, namespace: web}\n\
             - name: b\n  context: {namespace: other}\n- name: bad\n  context: {cluster: nope}\n",
        )
        .unwrap()
    }

    #[test]
    fn a_context_chooses_cluster_user_and_namespace() {
        let e = effective(&cfg(), None).unwrap();
        assert_eq!(config::servers(None, &e), ["2.2.2.2:2", "3.3.3.3:3"]);
        assert_eq!(e.token.as_deref(), Some("t1"));
        assert_eq!(e.namespace.as_deref(), Some("web"));
        assert_eq!(e.certificate_authority, Some(PathBuf::from("/ca")));
        // A context naming no cluster keeps the top-level settings.
        let e = effective(&cfg(), Some("b")).unwrap();
        assert_eq!(config::servers(None, &e), ["1.1.1.1:1"]);
        assert_eq!(e.token.as_deref(), Some("t0"));
        assert_eq!(e.namespace.as_deref(), Some("other"));
    }

    #[test]
    fn unknown_names_are_errors_and_the_flat_format_still_reads() {
        let e = effective(&cfg(), Some("zz")).unwrap_err().to_string();
        assert!(e.starts_with("context \"zz\" does not exist"), "{e}");
        let e = effective(&cfg(), Some("bad")).unwrap_err().to_string();
        assert!(
            e.starts_with("cluster \"nope\" of context \"bad\" does not exist"),
            "{e}"
        );
        let flat: Config = serde_yaml::from_str("server: [a:1, b:2]\nnamespace: x\n").unwrap();
        let e = effective(&flat, None).unwrap();
        assert_eq!(config::servers(None, &e), ["a:1", "b:2"]);
        assert!(
            serde_yaml::from_str::<Config>("contexts:\n- name: a\n  context: {bogus: 1}\n")
                .is_err()
        );
    }
}
