//! `flt`: the command-line client for a Flotilla cluster, with kubectl's
//! habits: `flt apply -f`, `flt get pods`, `flt describe`, `flt delete`...
//!
//! It speaks the masters' object API and ClusterAdmin service over gRPC
//! through `flotilla-client`. It deliberately links no storage and no Raft.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod access;
mod attach;
mod auth;
mod cluster;
mod commands;
mod complete;
mod config;
mod contexts;
mod cp;
mod credentials;
mod diff;
mod explain;
mod forward;
mod generate;
mod get;
mod jsonpath;
mod manifest;
mod nodes;
mod patch;
#[allow(dead_code)]
mod print;
mod rollout;
mod set;
mod strategic;
mod streams;
mod top;
mod wait;

#[derive(Parser, Debug)]
#[command(
    name = "flt",
    about = "Command-line client for a Flotilla cluster",
    long_about = "Command-line client for a Flotilla cluster.\n\n\
        flt talks to the masters' client addresses (the same addresses that serve \
        the etcd v3 API). Masters are taken from --server, else FLT_SERVER, else \
        ~/.flt/config (the current context's cluster, or its `server:` line), \
        else 127.0.0.1:2379.",
    version,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Client address(es) of one or more masters, HOST:PORT or http://HOST:PORT,
    /// comma-separated; calls move on to the next one when a master is down.
    #[arg(
        long,
        global = true,
        env = "FLT_SERVER",
        value_delimiter = ',',
        value_name = "ADDR[,ADDR...]"
    )]
    server: Option<Vec<String>>,

    /// The namespace to work in (default: the config file's, else "default").
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    namespace: Option<String>,

    /// The context of the config file to use (default: its current-context).
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,

    /// How long to wait for a master to accept a connection, in milliseconds.
    #[arg(long, global = true, default_value_t = 1000, value_name = "MS")]
    dial_timeout_ms: u64,

    /// How long a command may wait (membership changes, retries while no
    /// master answers), in seconds.
    #[arg(long, global = true, default_value_t = 60, value_name = "SECS")]
    command_timeout_secs: u64,

    #[command(flatten)]
    access: access::AccessArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create or update objects from manifests (kubectl apply semantics).
    Apply(FileArgs),
    /// Create objects from manifests (`-f`), or one from flags:
    /// `flt create deployment web --image=nginx`; existing ones are an error.
    Create(CreateArgs),
    /// Run a pod: `flt run web --image=nginx --port=80`; with `-i --rm`,
    /// attach to it and delete it afterwards:
    /// `flt run t --rm -i --image=busybox --restart=Never -- sh`.
    Run(generate::RunArgs),
    /// Make a service for a deployment, replica set, replication
    /// controller, pod or service: `flt expose deploy/web --port=80`.
    Expose(generate::ExposeArgs),
    /// Wait until objects meet a condition:
    /// `flt wait pod/web --for=condition=Ready --timeout=60s`.
    Wait(wait::WaitArgs),
    /// Show what `apply -f` would change, as a unified diff (exit 0: no
    /// differences, 1: differences, 2: an error).
    Diff(Manifests),
    /// Replace objects from manifests; a resourceVersion in a manifest must
    /// be current (a stale one is a Conflict).
    Replace(FileArgs),
    /// List objects, or show some by name.
    Get(GetArgs),
    /// Show an object in detail, with its recent events.
    Describe {
        /// Kind (pods, po, deployment, ...).
        kind: String,
        /// Object names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Delete objects by name, by selector, or from manifests.
    Delete(DeleteArgs),
    /// Edit an object in $EDITOR and save it back (conflicts are retried on
    /// the latest version).
    Edit {
        kind: String,
        name: String,
        /// Format to edit in.
        #[arg(short = 'o', long, value_enum, default_value_t = EditFormat::Yaml)]
        output: EditFormat,
    },
    /// Change fields of an object with a patch:
    /// `flt patch deploy web -p '{"spec":{"replicas":3}}'` (strategic merge
    /// by default; `--type merge|json`).
    Patch(patch::PatchArgs),
    /// Change a workload's containers: `flt set image|env|resources`.
    #[command(subcommand)]
    Set(set::SetCommand),
    /// Set or remove labels: `flt label pod web tier=front old-`.
    Label(MetaArgs),
    /// Set or remove annotations: `flt annotate pod web note='hello'`.
    Annotate(MetaArgs),
    /// Set the replica count of a Deployment, ReplicaSet or
    /// ReplicationController, or the parallelism of a Job:
    /// `flt scale deploy/web --replicas 3`.
    Scale {
        /// KIND/NAME, or KIND followed by NAME.
        kind: String,
        name: Option<String>,
        #[arg(long)]
        replicas: i64,
        /// Only scale when the current count is this (a precondition).
        #[arg(long)]
        current_replicas: Option<i64>,
    },
    /// Describe a kind's fields: `flt explain deploy.spec.replicas`.
    Explain(explain::ExplainArgs),
    /// List the kinds the API serves.
    ApiResources,
    /// Print flt's version and the server's.
    Version,
    /// Print a shell completion script: `source <(flt completion bash)`.
    Completion {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Clusters, users and contexts in ~/.flt/config: get-contexts,
    /// current-context, use-context, set-context, set-cluster,
    /// set-credentials, delete-context, view.
    #[command(subcommand)]
    Config(contexts::ConfigCommand),
    /// For the completion script: the kinds, or the names of a kind's objects.
    #[command(name = "__complete", hide = true)]
    Complete(complete::CompleteArgs),
    /// Inspect and change the set of masters.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Manage rollouts: status, history, undo, restart, pause, resume.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Print a container's log (through the masters and the pod's node).
    Logs(streams::LogsArgs),
    /// Run a command in a container: `flt exec web -- ls /`; its exit code
    /// becomes flt's.
    Exec(streams::ExecArgs),
    /// Copy files and folders to and from a container (with `tar` in it):
    /// `flt cp web:/etc/motd motd`, `flt cp ./site web:/www`.
    Cp(cp::CpArgs),
    /// Forward local ports to a pod's (or a service's or deployment's
    /// pod's): `flt port-forward svc/web 8080:80`, until Ctrl-C.
    PortForward(forward::PortForwardArgs),
    /// CPU and memory of nodes and pods, as the nodes' agents measure them:
    /// `flt top nodes`, `flt top pods --containers`.
    #[command(subcommand)]
    Top(top::TopCommand),
    /// Attach to a running container's main process: its output from now
    /// on, and with -i flt's standard input (the container needs
    /// `stdin: true`).
    Attach(attach::AttachArgs),
    /// Ask the masters about access: `flt auth can-i VERB RESOURCE`,
    /// `flt auth whoami`.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Approve or deny CertificateSigningRequests: `flt certificate
    /// approve node-csr-n7-x2k9q` (see `flt get csr`).
    #[command(subcommand)]
    Certificate(credentials::CertificateCommand),
    /// Mark a node unschedulable.
    Cordon {
        /// The node.
        node: String,
    },
    /// Mark a node schedulable again.
    Uncordon {
        /// The node.
        node: String,
    },
    /// Cordon a node and evict its pods (those a controller recreates;
    /// --force for the others), honouring their grace periods.
    Drain(nodes::DrainArgs),
}

/// Where manifests come from: `-f FILE|DIR|-`, `-R`.
#[derive(Args, Debug)]
pub struct Manifests {
    /// A manifest file, a directory of them (*.yaml, *.yml, *.json), or `-`
    /// for standard input. YAML may hold several documents.
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR|-"
    )]
    pub files: Vec<PathBuf>,
    /// Descend into subdirectories.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

#[derive(Args, Debug)]
pub struct FileArgs {
    #[command(flatten)]
    pub src: Manifests,
    /// Check the objects with the server without saving them.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct CreateArgs {
    #[command(subcommand)]
    pub what: Option<generate::CreateCmd>,
    #[command(flatten)]
    pub files: FileArgs,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Kind, or kinds separated by commas (pods, po, deploy,svc, ...);
    /// KIND/NAME also works.
    pub kind: String,
    /// Object names (all when none).
    pub names: Vec<String>,
    /// Label selector: `app=web,tier!=db`, `env in (a,b)`, `!legacy`.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector: `spec.nodeName=n1`, `status.phase=Running`.
    #[arg(long)]
    pub field_selector: Option<String>,
    /// List across every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format: wide, yaml, json, name, jsonpath=TEMPLATE
    /// (`{.items[*].metadata.name}`), custom-columns=HEADER:PATH,...
    #[arg(short = 'o', long, value_parser = get::parse_output, value_name = "FORMAT")]
    pub output: Option<get::Output>,
    /// Sort by the value at this JSONPath (`.metadata.name`, `{.spec.replicas}`).
    #[arg(long, value_name = "JSONPATH")]
    pub sort_by: Option<String>,
    /// Show these labels' values as columns: `-L app,tier`.
    #[arg(
        short = 'L',
        long = "label-columns",
        value_delimiter = ',',
        value_name = "LABEL"
    )]
    pub label_columns: Vec<String>,
    /// After listing, watch for changes.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Watch for changes without listing first.
    #[arg(long)]
    pub watch_only: bool,
    /// With -w or --watch-only: show each change's type (ADDED, MODIFIED, DELETED).
    #[arg(long)]
    pub output_watch_events: bool,
    /// Show labels as the last column.
    #[arg(long)]
    pub show_labels: bool,
    /// Do not print the header.
    #[arg(long)]
    pub no_headers: bool,
    /// Fetch at most this many objects per request (0: all at once).
    #[arg(long, default_value_t = 500)]
    pub chunk_size: i64,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Kind (omit with -f).
    pub kind: Option<String>,
    /// Object names.
    pub names: Vec<String>,
    /// Delete the objects in these manifests.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub files: Vec<PathBuf>,
    /// Delete every object of the kind that matches this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Delete every object of the kind in the namespace.
    #[arg(long)]
    pub all: bool,
    /// What happens to dependents: background (after), foreground (first), orphan (kept).
    #[arg(long, value_enum, default_value_t = Cascade::Background)]
    pub cascade: Cascade,
    /// Seconds a pod gets to stop (default: its own terminationGracePeriodSeconds).
    #[arg(long)]
    pub grace_period: Option<i64>,
    /// Delete at once, without a grace period (--grace-period=0).
    #[arg(long)]
    pub now: bool,
    /// Wait until the objects are gone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub wait: bool,
    /// Do not fail when an object does not exist.
    #[arg(long)]
    pub ignore_not_found: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

#[derive(Args, Debug)]
pub struct MetaArgs {
    pub kind: String,
    pub name: String,
    /// KEY=VALUE to set, KEY- to remove.
    #[arg(required = true)]
    pub changes: Vec<String>,
    /// Allow changing a key that already has a value.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum EditFormat {
    Yaml,
    Json,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Cascade {
    Background,
    Foreground,
    Orphan,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// How `flt cluster status` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusOutput {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Show every master: its role, Raft term and log positions
    /// (a master that does not answer is shown as "unreachable").
    Status {
        /// Output format: a table, or JSON (`{"members": [{"name", "id",
        /// "peer", "client", "role", "term", "last_log", "applied"}]}`,
        /// the numbers null for a master that did not answer) for scripts
        /// and playbooks.
        #[arg(short = 'o', long, value_enum, default_value_t = StatusOutput::Table)]
        output: StatusOutput,
    },
    /// Add a master to the cluster. Start the new master with
    /// `flotilla master --join ...` instead to have it add itself.
    AddMaster {
        /// Name of the new master (unique in the cluster).
        name: String,
        /// Address the new master listens on for other masters (HOST:PORT).
        #[arg(long, value_name = "HOST:PORT")]
        peer_addr: String,
        /// Address the new master serves clients on (HOST:PORT).
        #[arg(long, value_name = "HOST:PORT")]
        client_addr: String,
    },
    /// Remove a master from the cluster by name.
    RemoveMaster {
        /// Name of the master to remove.
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    // Help and --version go to stdout; the latter is success, a
                    // bare `flt` (help because of a missing subcommand) is not.
                    let _ = e.print();
                    return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    };
                }
                _ => {
                    let text = e.to_string();
                    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
                    let first = lines.next().unwrap_or("invalid arguments");
                    let first = first.strip_prefix("error: ").unwrap_or(first);
                    // "the following required arguments were not provided:"
                    // names them on the next line.
                    let detail = match lines.next() {
                        Some(next) if first.ends_with(':') => format!("{first} {next}"),
                        _ => first.to_string(),
                    };
                    eprintln!("Error: {detail} (see `flt --help`)");
                    return ExitCode::from(1);
                }
            }
        }
    };

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<auth::No>().is_some() {
                // `flt auth can-i` said no (and printed it).
                return ExitCode::from(1);
            }
            if let Some(d) = e.downcast_ref::<diff::DiffError>() {
                // `flt diff`: 1 means differences, so its errors are 2.
                eprintln!("Error: {d}");
                return ExitCode::from(2);
            }
            if let Some(streams::ExitStatus(code)) = e.downcast_ref::<streams::ExitStatus>() {
                // `flt exec`: the command's own exit code, as kubectl does.
                return ExitCode::from(u8::try_from(*code).unwrap_or(1));
            }
            // One line: the error and its causes joined by ": ".
            eprintln!("Error: {}", cluster::one_line(&e));
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let file = config::load()?;
    if let Command::Config(c) = cli.command {
        return contexts::run(file, c, cli.context.as_deref());
    }
    let cfg = contexts::effective(&file, cli.context.as_deref())?;
    access::init(&cli.access, &cfg)?;
    let servers = config::servers(cli.server.clone(), &cfg);
    let namespace = cli
        .namespace
        .clone()
        .or_else(|| cfg.namespace.clone())
        .unwrap_or_else(|| "default".to_string());
    let dial = Duration::from_millis(cli.dial_timeout_ms.max(1));
    let command_timeout = Duration::from_secs(cli.command_timeout_secs.max(1));
    match cli.command {
        Command::Cluster(c) => {
            let ctx = cluster::Ctx {
                servers,
                dial_timeout: dial,
                command_timeout,
            };
            cluster::run(&ctx, c).await
        }
        Command::Completion { shell } => {
            complete::completion(shell);
            Ok(())
        }
        Command::Complete(a) => {
            // Quick or nothing: a shell waits on it.
            let quick = Duration::from_secs(3);
            let ctx = commands::Ctx::new(&servers, namespace, true, dial.min(quick), quick)?;
            complete::names(&ctx, &a).await
        }
        Command::ApiResources => {
            commands::api_resources();
            Ok(())
        }
        Command::Explain(a) => explain::explain(&a),
        Command::Logs(a) => streams::logs(&servers, dial, &namespace, a).await,
        Command::Exec(a) => streams::exec(&servers, dial, &namespace, a).await,
        Command::Cp(a) => cp::cp(&servers, dial, &namespace, a).await,
        Command::Attach(a) => attach::attach(&servers, dial, &namespace, a).await,
        Command::Top(c) => {
            let ctx = commands::Ctx::new(&servers, namespace, true, dial, command_timeout)?;
            top::top(&servers, dial, &ctx, c).await
        }
        Command::Run(a) if a.stdin && a.flags.dry_run == generate::DryRun::None => {
            let ctx = commands::Ctx::new(&servers, namespace, true, dial, command_timeout)?;
            let (name, rm) = (a.name.clone(), a.rm);
            let obj = generate::run_manifest(&ctx.namespace, &a)?;
            attach::create(&ctx, &obj).await?;
            attach::run_attached(&servers, dial, &ctx, &name, true, rm).await
        }
        Command::PortForward(a) => {
            let ctx = commands::Ctx::new(&servers, namespace, true, dial, command_timeout)?;
            forward::port_forward(&servers, dial, &ctx.client, &ctx.namespace, a).await
        }
        other => {
            let ctx = commands::Ctx::new(
                &servers,
                namespace,
                cli.namespace.is_some(),
                dial,
                command_timeout,
            )?;
            commands::run(&ctx, other).await
        }
    }
}
