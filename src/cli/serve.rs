//! `kudo serve`: the multi-cluster GitOps control plane.

use std::path::PathBuf;

use tracing::info;

use super::CliResult;
use crate::gitops::config::{Config, EMBEDDED_NAME};
use crate::gitops::leader::Elector;
use crate::gitops::serve::{Daemon, Options, serve_http};

/// Syncs framework packages and instances from Git (or a local directory) and runs every
/// instance's plans on the clusters it is placed on, rolling changes out wave by wave.
///
/// Without --config, runs the embedded default: ./repos-example watched as a local directory
/// and three simulated clusters labelled env=dev, env=staging and env=prod.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The control plane's configuration (see README: "kudo.yaml"). Reloaded when the file
    /// changes and on SIGHUP; a file with errors is refused and the running config stays.
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
    crate::package::redact::install_panic_hook();
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
    let (elect_stop, elect_stop_rx) = tokio::sync::watch::channel(false);
    let (daemon, election) = match &config.leader_election {
        // A dry run writes nothing, so it needs no lease.
        _ if args.dry_run => (
            Daemon::start_dry_run(config, Options::default()).await?,
            None,
        ),
        None => (Daemon::start(config, Options::default()).await?, None),
        Some(le) => {
            let elector = Elector::new(le).await?;
            info!(identity = elector.identity(), namespace = %le.namespace, lease = %le.name, "leader election on");
            let (tx, rx) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(elector.run(tx, elect_stop_rx));
            let daemon = Daemon::start_gated(config, Options::default(), Some(rx)).await?;
            (daemon, Some(task))
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (bound, http) = serve_http(daemon.shared.clone(), listen, async move {
        let _ = stop_rx.await;
    })
    .await?;
    info!(address = %bound, "console: http://{bound}/; HTTP API: /healthz /readyz /api/v1/status, POST /api/v1/hooks/git");
    // kudo.yaml reloads on change and on SIGHUP (the embedded default has no file).
    let (reload_stop, reload_stop_rx) = tokio::sync::watch::channel(false);
    if let Some(path) = &args.config {
        tokio::spawn(crate::gitops::serve::reload_on_change(
            daemon.shared.clone(),
            path.clone(),
            args.listen,
            reload_stop_rx,
        ));
    }
    let lost = match election {
        None => {
            super::manager::shutdown_signal().await;
            None
        }
        Some(mut task) => tokio::select! {
            _ = super::manager::shutdown_signal() => Some(task),
            ended = &mut task => match ended {
                Ok(Err(e)) => return stop_after_loss(daemon, stop_tx, http, e.into()).await,
                Ok(Ok(())) => None,
                Err(e) => return stop_after_loss(daemon, stop_tx, http, e.into()).await,
            },
        },
    };
    info!("shutting down");
    let _ = reload_stop.send(true);
    let _ = stop_tx.send(());
    daemon.shutdown().await;
    // Released only after the workers stopped, so the next leader never overlaps with us.
    let _ = elect_stop.send(true);
    if let Some(task) = lost {
        let _ = task.await;
    }
    let _ = http.await;
    Ok(())
}

/// Leadership lost: stop writing at once and exit with the reason.
async fn stop_after_loss(
    daemon: Daemon,
    stop_http: tokio::sync::oneshot::Sender<()>,
    http: tokio::task::JoinHandle<()>,
    reason: super::CliError,
) -> CliResult {
    let _ = stop_http.send(());
    daemon.shutdown().await;
    let _ = http.await;
    Err(reason)
}
