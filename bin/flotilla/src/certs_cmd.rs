//! `flotilla certs`: a cluster CA and the certificates it signs, for
//! operators who do not bring their own (`flotilla up` and the Ansible
//! roles make theirs the same way).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use flotilla_security::certs::{Ca, LeafRequest, Usage, DEFAULT_LEAF_DAYS};

#[derive(Subcommand)]
pub enum CertsCmd {
    /// Make a CA (DIR/NAME.crt and DIR/NAME.key), or keep the one there.
    Ca {
        /// Folder of the certificates.
        #[arg(long)]
        dir: PathBuf,
        /// File name stem of the CA.
        #[arg(long, default_value = "ca")]
        name: String,
        /// The CA's common name.
        #[arg(long, default_value = "flotilla-ca")]
        common_name: String,
    },
    /// Issue a certificate signed by a CA of DIR, as DIR/NAME.crt and .key.
    Issue(IssueArgs),
}

#[derive(Args)]
pub struct IssueArgs {
    /// Folder of the CA and of the new certificate.
    #[arg(long)]
    dir: PathBuf,
    /// File name stem of the signing CA.
    #[arg(long, default_value = "ca")]
    ca: String,
    /// File name stem of the new certificate.
    #[arg(long)]
    name: String,
    /// Common name: the user, for a client certificate (e.g. alice,
    /// system:node:n1).
    #[arg(long)]
    common_name: String,
    /// Organization: the user's group (one per certificate; system:masters
    /// is cluster-admin, system:nodes the agents). Bind further roles to
    /// the user itself.
    #[arg(long)]
    org: Option<String>,
    /// An IP address or DNS name served (repeatable).
    #[arg(long = "san")]
    sans: Vec<String>,
    /// What the certificate is for.
    #[arg(long, value_enum, default_value = "client")]
    usage: UsageArg,
    /// Validity in days.
    #[arg(long, default_value_t = DEFAULT_LEAF_DAYS)]
    days: u32,
}

#[derive(Clone, Copy, ValueEnum)]
enum UsageArg {
    Server,
    Client,
    Both,
}

pub fn run(cmd: CertsCmd) -> Result<()> {
    match cmd {
        CertsCmd::Ca {
            dir,
            name,
            common_name,
        } => {
            Ca::load_or_create(&dir, &name, &common_name)?;
            println!("{}", dir.join(format!("{name}.crt")).display());
        }
        CertsCmd::Issue(a) => {
            let ca = Ca::from_pem(
                flotilla_security::certs::Pem::read(
                    &a.dir.join(format!("{}.crt", a.ca)),
                    &a.dir.join(format!("{}.key", a.ca)),
                )
                .context("reading the CA (make one with `flotilla certs ca`)")?,
            )?;
            let pem = ca.issue(&LeafRequest {
                common_name: a.common_name,
                organizations: a.org.into_iter().collect(),
                sans: a.sans,
                usage: match a.usage {
                    UsageArg::Server => Usage::Server,
                    UsageArg::Client => Usage::Client,
                    UsageArg::Both => Usage::ServerAndClient,
                },
                days: a.days,
            })?;
            let (crt, key) = pem.write(&a.dir, &a.name)?;
            println!("{}\n{}", crt.display(), key.display());
        }
    }
    Ok(())
}
