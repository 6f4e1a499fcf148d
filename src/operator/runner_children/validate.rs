//! Whether a runner's spec can be built: the repository, runner counts and durations.

use crate::crd::ScaledActionRunner;
use crate::operator::SpecError;

pub(super) fn validate(runner: &ScaledActionRunner) -> Result<(), SpecError> {
    let spec = &runner.spec;
    let invalid = |field, reason: String| Err(SpecError::Invalid { field, reason });
    if spec.owner.trim().is_empty() {
        return invalid(
            "owner",
            "must name the repository's owner, or the organisation of an organisation runner".into(),
        );
    }
    if spec.ephemeral() && !spec.runner_secrets.is_empty() {
        return invalid(
            "runner.ephemeral",
            "ephemeral runners register for every job; runnerSecrets are for pre-registered runners: set one or the other".into(),
        );
    }
    if spec.max_runners < 0 {
        return invalid("maxRunners", format!("must not be negative (is {})", spec.max_runners));
    }
    if spec.min_runners() < 0 || spec.min_runners() > spec.max_runners {
        return invalid("minRunners", format!("must be between 0 and maxRunners ({})", spec.max_runners));
    }
    if let Err(problem) = spec.scale_factor().parse::<crate::demand::ScaleFactor>() {
        return invalid("scaleFactor", problem.to_string());
    }
    if let Err(problem) = spec.force_scale_up_window() {
        return invalid("forceScaleUpWindow", problem.to_string());
    }
    if let Err(problem) = spec.force_scale_up_frequency() {
        return invalid("forceScaleUpFrequency", problem.to_string());
    }
    if let Some(template) = &spec.runner
        && template.termination_grace_period_seconds() < 0
    {
        return invalid("runner.terminationGracePeriodSeconds", "must not be negative".into());
    }
    Ok(())
}
