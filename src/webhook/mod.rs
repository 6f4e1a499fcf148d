//! The webhook receiver: signature, payload, and the handler that journals `workflow_job`s.

pub mod handler;
pub mod payload;
pub mod secrets;
pub mod signature;

pub use handler::{MAX_BODY_BYTES, webhook};
pub use secrets::{SecretBytes, WebhookSecrets};
