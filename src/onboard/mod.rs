//! `onboard`: creates a repository's webhook and prints the Secrets and ScaledActionRunner to
//! apply.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct OnboardArgs {
    /// Name of the ScaledActionRunner (and prefix of its Secrets).
    #[arg(short = 'n', long)]
    pub name: String,
    /// Repository owner (user or organisation).
    #[arg(short = 'o', long)]
    pub owner: String,
    /// Repository name.
    #[arg(short = 'r', long)]
    pub repo: String,
    /// Most runners.
    #[arg(short = 'm', long)]
    pub max_runners: i32,
}

/// Why onboarding failed.
#[derive(Debug, thiserror::Error)]
pub enum OnboardError {}

/// Runs the onboarding.
pub async fn run(_args: OnboardArgs) -> Result<(), OnboardError> {
    Ok(())
}
