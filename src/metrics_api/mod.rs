//! What KEDA and the HPA read.

pub mod custom_metrics;
pub mod external_scaler;
