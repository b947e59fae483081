//! kudo: KUDO's universal operator as a multi-cluster GitOps control plane.
pub mod template;
