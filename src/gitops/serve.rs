//! The `kudo serve` daemon's public paths, kept for the CLI, the benchmarks and the tests;
//! the daemon itself lives in [`super::daemon`].

pub use super::daemon::reload::{Overrides, ReloadError, ReloadStatus, reload_on_change};
pub use super::daemon::{
    Caller, ClusterProgressView, ClusterStatus, CommitInfo, Daemon, FIELD_MANAGER,
    InstanceStatusView, MANAGED_LABEL, Options, PlanSummary, REVISION_ANNOTATION, RepoStatus,
    ServeError, Shared, StatusDoc, apply_instance, apply_instance_as, default_config, router,
    serve_http,
};
