//! The webhook receiver: signature, payload, and the handler that journals `workflow_job`s.

pub mod handler;
pub mod intake;
pub mod payload;
pub mod secrets;
pub mod signature;

pub use handler::webhook;
pub use intake::{Intake, MAX_BODY_BYTES};
pub use secrets::{LiveSecrets, SecretBytes, WebhookSecrets, secret_bytes};
