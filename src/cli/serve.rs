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
    /// Override the config's cacheDir: replicas sharing one kudo.yaml (and so one config hash)
    /// on one machine each need their own Git mirrors.
    #[arg(long, env = "KUDO_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Only validate the configuration and exit.
    #[arg(long)]
    pub check: bool,
    /// Sync and report what would change (log and the status API's `pendingChanges`)
    /// without writing to any cluster: no CRDs, no Instances, no plans.
    #[arg(long)]
    pub dry_run: bool,
    /// With `sharding: {enabled: true}`: this replica's stable member name (default: the
    /// POD_NAME variable, else the host name). A restarted pod keeps its name and so its
    /// clusters; a second live process with the same name is refused.
    #[arg(long, env = "KUDO_MEMBER_NAME")]
    pub member_name: Option<String>,
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
    let overrides = crate::gitops::serve::Overrides {
        listen: args.listen,
        cache_dir: args.cache_dir.clone(),
    };
    overrides.apply(&mut config);
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
    let (member_stop, member_stop_rx) = tokio::sync::watch::channel(false);
    let mut member_task = None;
    let member = match (&config.sharding, &config.leader_election) {
        (Some(sharding), Some(le)) if !args.dry_run => {
            let name = args
                .member_name
                .clone()
                .or_else(|| std::env::var("POD_NAME").ok())
                .or_else(|| std::env::var("HOSTNAME").ok())
                .filter(|n| crate::util::dns::is_dns_label(n))
                .ok_or("sharding: no usable member name: pass --member-name (a DNS label), or set POD_NAME (a StatefulSet pod's name)")?;
            let bytes = match &args.config {
                Some(path) => std::fs::read(path)?,
                None => Vec::new(),
            };
            let client = crate::gitops::leader::election_client(le).await?;
            crate::gitops::shard::member::check_access(&client, &le.namespace).await?;
            let member = crate::gitops::shard::member::Member::new(
                &name,
                sharding,
                &le.namespace,
                &config.control_plane,
                &crate::gitops::shard::member::config_hash(&bytes),
            );
            info!(member = %name, namespace = %le.namespace, "sharding on: this replica is a member");
            Some((member, client))
        }
        _ => None,
    };
    let options = Options {
        member: member.as_ref().map(|(m, _)| m.clone()),
        ..Options::default()
    };
    let (daemon, election) = match &config.leader_election {
        // A dry run writes nothing, so it needs no lease.
        _ if args.dry_run => (Daemon::start_dry_run(config, options).await?, None),
        None => (Daemon::start(config, options).await?, None),
        Some(le) => {
            let elector = Elector::new(le).await?;
            info!(identity = elector.identity(), namespace = %le.namespace, lease = %le.name, "leader election on");
            let (tx, rx) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(elector.run(tx, elect_stop_rx));
            let daemon = Daemon::start_gated(config, options, Some(rx.clone())).await?;
            if let Some((member, client)) = &member {
                let shared = daemon.shared.clone();
                member_task = Some(tokio::spawn(crate::gitops::shard::member::run(
                    member.clone(),
                    client.clone(),
                    // Agent clusters run their own engine: nothing to shard.
                    move || {
                        shared
                            .config()
                            .clusters
                            .iter()
                            .filter(|c| c.access != crate::gitops::config::ClusterAccess::Agent)
                            .map(|c| c.name.clone())
                            .collect()
                    },
                    Some(rx),
                    member_stop_rx.clone(),
                )));
            }
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
            overrides,
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
            // Only a member whose name another process took ends by itself.
            ended = async { match member_task.as_mut() {
                Some(t) => t.await,
                None => std::future::pending().await,
            } } => {
                let reason: super::CliError = match ended {
                    Ok(Err(e)) => e.into(),
                    Ok(Ok(())) => "sharding: the member task ended".into(),
                    Err(e) => e.into(),
                };
                return stop_after_loss(daemon, stop_tx, http, reason).await;
            },
        },
    };
    info!("shutting down");
    let _ = reload_stop.send(true);
    let _ = stop_tx.send(());
    daemon.shutdown().await;
    // Claims are released only after the engines stopped.
    let _ = member_stop.send(true);
    if let Some(task) = member_task {
        let _ = task.await;
    }
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
