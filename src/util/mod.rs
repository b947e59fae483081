//! Leaf helpers shared across domains: one duration syntax, one DNS-name validator, one safe
//! path segment check, one partial-object (subset) matcher. Nothing here imports anything
//! else of the crate, so every folder can use it without forming an import cycle (see
//! `tests/module_graph.rs`).

pub mod clock;
pub mod dns;
pub mod duration;
pub mod subset;

/// Whether remote or user text is safe as one path segment (a cache folder, a framework
/// name or version below `frameworks/`): non-empty, at most 253 bytes, no separator, no
/// control character, not `.` or `..`.
pub fn is_safe_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == '\\' || c.is_control())
}
