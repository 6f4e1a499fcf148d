//! `serve` in a cluster: runners and the Secrets they name, watched through the Kubernetes API.

pub mod index;
