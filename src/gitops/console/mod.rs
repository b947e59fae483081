//! The web console `kudo serve` serves at `/`: the fleet matrix, an instance's rollout and
//! plans, the revisions and the clusters, kept live by server-sent events.
//!
//! Guarantees:
//! - nothing is fetched at run time and nothing is built outside cargo: pages are rendered on
//!   the server (maud, which escapes every value) and the one script and stylesheet are
//!   embedded in the binary;
//! - the pages read the same views as `/api/v1/status`, and every action is an API call under
//!   the API's write rule (see [`session`] for how a browser signs in);
//! - a page never polls: it changes when its event stream says something it shows changed.
//!
//! Files: `model` (the fleet matrix, filters and the difference two fleets make), `pages`
//! (HTML), `session` (sign-in); the daemon's `console` module serves them. It lives under
//! `gitops` because it renders the daemon's status views.

pub mod model;
pub mod pages;
pub mod session;

/// The console's script.
pub const SCRIPT: &str = include_str!("assets/console.js");
/// The console's stylesheet.
pub const STYLE: &str = include_str!("assets/console.css");
