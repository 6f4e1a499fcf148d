//! The pure heart: job states, runner matching, per-runner demand and the scaling curve.
//! Nothing here performs I/O; the edges feed it events and read its answers.

pub mod job;
pub mod repo_jobs;
pub mod runner_demand;
pub mod runners;
pub mod scaling;
pub mod state;

pub use job::{Job, JobEvent, JobKey, JobStatus, JobView, RepoRef};
pub use runner_demand::RunnerDemand;
pub use runners::{GroupAccess, Runner, RunnerGroups, RunnerIndex, RunnerKey, Scope};
pub use scaling::{ForcedScaleUp, ScaleFactor};
pub use state::{Counts, DemandState};
