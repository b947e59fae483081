//! `kudo serve`: the multi-cluster GitOps control plane.

use std::path::PathBuf;

use tracing::info;

use super::CliResult;
use crate::gitops::config::{Config, EMBEDDED_NAME};
use crate::gitops::serve::{Daemon, Options, serve_http};

/// Syncs framework packages and instances from Git (or a local directory) and runs every
/// instance's plans on the clusters it is placed on, rolling changes out wave by wave.
///
/// Without --config, runs the embedded default: ./repos-example watched as a local directory
/// and three simulated clusters labelled env=dev, env=staging and env=prod.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The control plane's configuration (see README: "kudo.yaml").
    #[arg(long, short = 'c', env = "KUDO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override the config's listen address (e.g. 127.0.0.1:0).
    #[arg(long, env = "KUDO_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Only validate the configuration and exit.
    #[arg(long)]
    pub check: bool,
    /// Sync and report what would change (log and the status API's `pendingChanges`)
    /// without writing to any cluster: no CRDs, no Instances, no plans.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(args: Args) -> CliResult {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => {
            let cwd = std::env::current_dir()?;
            info!(config = EMBEDDED_NAME, dir = %cwd.display(), "no --config: running the embedded default");
            Config::embedded(&cwd)?
        }
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.check {
        println!(
            "configuration is valid: {} repositories, {} clusters",
            config.repositories.len(),
            config.clusters.len()
        );
        return Ok(());
    }
    let listen = config.listen;
    let daemon = if args.dry_run {
        Daemon::start_dry_run(config, Options::default()).await?
    } else {
        Daemon::start(config, Options::default()).await?
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (bound, http) = serve_http(daemon.shared.clone(), listen, async move {
        let _ = stop_rx.await;
    })
    .await?;
    info!(address = %bound, "HTTP API: /healthz /readyz /api/v1/status, POST /api/v1/hooks/git");
    super::manager::shutdown_signal().await;
    info!("shutting down");
    let _ = stop_tx.send(());
    daemon.shutdown().await;
    let _ = http.await;
    Ok(())
}
