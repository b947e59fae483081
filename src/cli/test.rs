//! `kudo test`: runs kuttl test suites (kuttl.dev/v1beta1 `TestSuite`, test folders of
//! `NN-*.yaml` steps) against a cluster, with `kubectl kudo` resolving to this binary.

use std::path::{Path, PathBuf};

use super::{CliError, CliResult};
use crate::kuttl::case::{TestSuite, read_suite};
use crate::kuttl::runner::{self, Options};

/// Default suite file looked for in the current folder (kuttl's).
const DEFAULT_CONFIG: &str = "kuttl-test.yaml";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Test dirs (each subfolder is a test case), added to the suite's testDirs.
    pub dirs: Vec<PathBuf>,
    /// TestSuite file (kuttl.dev/v1beta1). Default: ./kuttl-test.yaml when present.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run against this cluster instead of starting the control plane.
    #[arg(long, env = "KUDO_TEST_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Only run this test case (repeatable).
    #[arg(long = "test", value_name = "NAME")]
    pub tests: Vec<String>,
    /// Seconds each step's asserts may take (default: the suite's, else 30).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// How many test cases run at once (default: the suite's, else 8).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Folder for the JUnit report (kuttl-report.xml) and the logs of background commands.
    #[arg(long)]
    pub artifacts_dir: Option<PathBuf>,
    /// Keep each test's namespace after the test.
    #[arg(long)]
    pub skip_delete: bool,
    /// Start the control plane (scripts/envtest) even when the suite does not ask for it.
    #[arg(long)]
    pub start_control_plane: bool,
    /// Start `kudo manager` even when the suite does not ask for it.
    #[arg(long = "start-kudo")]
    pub start_kudo: bool,
    /// The envtest script used for `startControlPlane`; by default `scripts/envtest` found
    /// above the suite file or this binary.
    #[arg(long, env = runner::ENVTEST_SCRIPT_ENV)]
    pub envtest_script: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} test case(s) failed")]
pub struct TestsFailed {
    pub failed: usize,
    pub total: usize,
}

/// Merges the suite file and the flags (flags win); relative paths of the suite resolve
/// against the suite file's folder, those of the flags against the current folder.
pub fn options(args: Args, cwd: &Path, binary: PathBuf) -> Result<Options, CliError> {
    let config = args.config.clone().or_else(|| {
        let p = cwd.join(DEFAULT_CONFIG);
        p.exists().then_some(p)
    });
    let (mut suite, base_dir, suite_name) = match &config {
        Some(path) => {
            let path = cwd.join(path);
            let suite = read_suite(&path)?;
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| "kudo-test".into());
            (suite, base, name)
        }
        None => (TestSuite::default(), cwd.to_path_buf(), "kudo-test".into()),
    };
    for d in &args.dirs {
        suite.test_dirs.push(cwd.join(d).display().to_string());
    }
    if suite.test_dirs.is_empty() {
        return Err(format!(
            "no test dirs: give folders (kudo test DIR...) or a suite file (--config, or ./{DEFAULT_CONFIG}) with testDirs"
        )
        .into());
    }
    suite.only = args.tests;
    if let Some(t) = args.timeout {
        suite.timeout = t;
    }
    if let Some(p) = args.parallel {
        suite.parallel = p;
    }
    if let Some(d) = args.artifacts_dir {
        suite.artifacts_dir = Some(cwd.join(d).display().to_string());
    }
    suite.skip_delete |= args.skip_delete;
    suite.start_control_plane |= args.start_control_plane;
    suite.start_kudo |= args.start_kudo;
    Ok(Options {
        suite,
        base_dir,
        suite_name,
        kubeconfig: args.kubeconfig.map(|k| cwd.join(k)),
        context: args.context,
        envtest_script: args.envtest_script,
        kudo_binary: binary,
    })
}

pub async fn run(args: Args) -> CliResult {
    let cwd = std::env::current_dir()?;
    let binary = std::env::current_exe()?;
    let opts = options(args, &cwd, binary)?;
    let summary = runner::run(opts).await?;
    if summary.passed() {
        Ok(())
    } else {
        Err(Box::new(TestsFailed {
            failed: summary.cases.iter().filter(|c| !c.passed()).count(),
            total: summary.cases.len(),
        }))
    }
}
