//! The `kudo` command line. Each command is one file exposing an `Args` struct (clap derive)
//! and an async `run(args)`; adding a command means adding a file and one enum variant here.

use clap::{Parser, Subcommand, ValueEnum};

pub mod bench;
pub mod completion;
pub mod crds;
pub mod deletions;
pub mod diff;
pub mod get;
pub mod init;
pub mod install;
pub mod kube;
pub mod manager;
pub mod package;
pub mod plan;
pub mod render;
pub mod repo;
pub mod rollout;
pub mod serve;
pub mod sim;
pub mod status;
pub mod test;
pub mod uninstall;
pub mod update;
pub mod upgrade;
pub mod workloads;

/// Every command's error: the message is printed as is, followed by its causes.
pub type CliError = Box<dyn std::error::Error + Send + Sync + 'static>;
pub type CliResult = Result<(), CliError>;

/// kudo — KUDO's universal operator as a multi-cluster GitOps control plane.
///
/// Framework packages (plans → phases → steps → tasks) and instance specs come from Git;
/// kudo runs every instance's plans on every cluster it is placed on.
#[derive(Debug, Parser)]
#[command(name = "kudo", version, propagate_version = true)]
pub struct Cli {
    /// Log output format. Filter with RUST_LOG (e.g. RUST_LOG=kudo=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "KUDO_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The GitOps control plane: sync frameworks and instances from Git and run their plans
    /// on every matching cluster (no config: repos-example/ on three simulated clusters).
    Serve(serve::Args),
    /// Every instance × cluster of a running `kudo serve` with its plan status.
    Status(status::Args),
    /// GitOps deletions held over `maxDeletions`: `kudo deletions confirm REPO --revision R`.
    Deletions(deletions::Args),
    /// Staged rollouts of a running `kudo serve`: approve a stage, pause, resume, status.
    Rollout(rollout::Args),
    /// Scale measurements: fan-out to many simulated clusters, rollouts, restarts, Git sync,
    /// rendering (prints tables, writes JSON).
    Bench(bench::Args),
    /// Show what a revision (a folder or a Git ref) would change on the live clusters of a
    /// kudo.yaml; exit status 1 when anything would change.
    Diff(diff::Args),
    /// Print the kudo.dev/v1beta1 CustomResourceDefinitions (Operator, OperatorVersion, Instance).
    Crds(crds::Args),
    /// Run the plan engine for every Instance on the given clusters (KUDO's manager).
    Manager(manager::Args),
    /// Verify or archive an operator package.
    Package(package::Args),
    /// Render a package's manifests locally (like `helm template`).
    Render(render::Args),
    /// Package repositories: add, list, remove; `repo index` builds one from .tgz packages.
    Repo(repo::Args),
    /// Serve simulated Kubernetes clusters on loopback (kubeconfig printed) until Ctrl-C.
    Sim(sim::Args),
    /// Run kuttl test suites (TestSuite files, test folders of NN-*.yaml steps) against a
    /// cluster; `kubectl kudo` in test commands runs this binary.
    Test(test::Args),
    /// Install kudo's CRDs into the cluster (`--dry-run` prints them).
    Init(init::Args),
    /// Install a package (folder or .tgz) and create an instance of it.
    Install(install::Args),
    /// Change an instance's parameters.
    Update(update::Args),
    /// Move an instance to a package's newer OperatorVersion.
    Upgrade(upgrade::Args),
    /// Delete an instance.
    Uninstall(uninstall::Args),
    /// Show plan status, trigger, cancel or retry a plan, or list past plan runs.
    Plan(plan::Args),
    /// List instances, operators or operator versions in a namespace.
    Get(get::Args),
    /// Play the workload controllers a test cluster lacks (readiness, Job completion) until
    /// stopped; for envtest and kuttl suites.
    Workloads(workloads::Args),
    /// Print a shell completion script: bash, zsh, fish or powershell
    /// (`source <(kudo completion bash)`).
    Completion(completion::Args),
}

/// Initialises `tracing`: RUST_LOG filters (default `info`), logs go to stderr so command
/// output on stdout stays machine-readable.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A subscriber already set (tests calling run twice) is not an error worth reporting.
    let _ = result;
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> CliResult {
    init_tracing(cli.log_format);
    match cli.command {
        Command::Crds(args) => crds::run(args).await,
        Command::Manager(args) => manager::run(args).await,
        Command::Package(args) => package::run(args).await,
        Command::Render(args) => render::run(args).await,
        Command::Sim(args) => sim::run(args).await,
        Command::Test(args) => test::run(args).await,
        Command::Init(args) => init::run(args).await,
        Command::Install(args) => install::run(args).await,
        Command::Update(args) => update::run(args).await,
        Command::Upgrade(args) => upgrade::run(args).await,
        Command::Uninstall(args) => uninstall::run(args).await,
        Command::Plan(args) => plan::run(args).await,
        Command::Get(args) => get::run(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Deletions(args) => deletions::run(args).await,
        Command::Rollout(args) => rollout::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Workloads(args) => workloads::run(args).await,
        Command::Repo(args) => repo::run(args).await,
        Command::Diff(args) => diff::run(args).await,
        Command::Completion(args) => completion::run(args).await,
    }
}
