//! The original project's `scaleFactor`: how many runners a number of jobs asks for.

use std::fmt;
use std::str::FromStr;

/// The default of the original project.
pub const DEFAULT_SCALE_FACTOR: &str = "0.8";

/// `"0"` is linear; any other positive `k` selects the logistic curve `max / (1 + max·e^(−k·q))`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScaleFactor {
    Linear,
    Logistic(f64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scaleFactor {0:?} is not a non-negative number")]
pub struct ScaleFactorError(pub String);

impl FromStr for ScaleFactor {
    type Err = ScaleFactorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let k: f64 = text.trim().parse().map_err(|_| ScaleFactorError(text.to_string()))?;
        if !k.is_finite() || k < 0.0 {
            return Err(ScaleFactorError(text.to_string()));
        }
        Ok(if k == 0.0 { Self::Linear } else { Self::Logistic(k) })
    }
}

impl Default for ScaleFactor {
    fn default() -> Self {
        Self::Logistic(0.8)
    }
}

impl fmt::Display for ScaleFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Linear => f.write_str("0"),
            Self::Logistic(k) => write!(f, "{k}"),
        }
    }
}

/// The original's forced scale-ups, for pre-registered runners: GitHub forgets a self-hosted
/// runner that has not connected for 14 days, so every `frequency` (plus a fixed offset of up to a
/// day per runner, so runners do not all scale up at once) all `max` runners start for `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForcedScaleUp {
    frequency: i64,
    window: i64,
    offset: i64,
}

impl ForcedScaleUp {
    /// None when either duration is zero (forced scale-ups off). `seed` spreads runners apart.
    pub fn new(frequency: std::time::Duration, window: std::time::Duration, seed: u64) -> Option<Self> {
        let frequency = i64::try_from(frequency.as_secs()).ok().filter(|secs| *secs > 0)?;
        let window = i64::try_from(window.as_secs()).ok().filter(|secs| *secs > 0)?.min(frequency);
        let offset = i64::try_from(seed % 86_400).unwrap_or(0);
        Some(Self { frequency, window, offset })
    }

    /// Whether unix time `now` is inside a forced window.
    pub fn active(&self, now: i64) -> bool {
        (now - self.offset).rem_euclid(self.frequency) < self.window
    }

    /// The next unix time after `now` at which [`Self::active`] changes.
    pub fn next_change(&self, now: i64) -> i64 {
        let phase = (now - self.offset).rem_euclid(self.frequency);
        let start = now - phase;
        if phase < self.window { start + self.window } else { start + self.frequency }
    }
}

/// Desired runner count for `demand` jobs, clamped to `[min, max]`; at least one while there is
/// demand (unless `max` is zero, which disables the runner).
pub fn desired_runners(demand: u64, min: u32, max: u32, factor: ScaleFactor) -> u32 {
    let min = min.min(max);
    if demand == 0 {
        return min;
    }
    let q = demand as f64;
    let raw = match factor {
        ScaleFactor::Linear => q,
        ScaleFactor::Logistic(k) => {
            let m = f64::from(max);
            m / (1.0 + m * (-k * q).exp())
        }
    };
    let rounded = raw.round().clamp(0.0, f64::from(u32::MAX)) as u32;
    rounded.max(1).clamp(min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_window_opens_every_frequency_for_its_length_and_says_when_it_changes() {
        use std::time::Duration;
        let forced = ForcedScaleUp::new(Duration::from_secs(1000), Duration::from_secs(100), 86_400 + 50).unwrap();
        assert!(!forced.active(49) && forced.active(50) && forced.active(149) && !forced.active(150));
        assert!(forced.active(1050) && !forced.active(1150));
        assert_eq!(forced.next_change(0), 50);
        assert_eq!(forced.next_change(60), 150);
        assert_eq!(forced.next_change(150), 1050);
        assert_eq!(ForcedScaleUp::new(Duration::ZERO, Duration::from_secs(1), 0), None);
        assert_eq!(ForcedScaleUp::new(Duration::from_secs(1), Duration::ZERO, 0), None);
    }

    #[test]
    fn no_demand_gives_the_minimum() {
        assert_eq!(desired_runners(0, 2, 5, ScaleFactor::Linear), 2);
        assert_eq!(desired_runners(0, 0, 5, ScaleFactor::default()), 0);
    }

    #[test]
    fn linear_follows_demand_up_to_the_maximum() {
        assert_eq!(desired_runners(3, 0, 5, ScaleFactor::Linear), 3);
        assert_eq!(desired_runners(9, 0, 5, ScaleFactor::Linear), 5);
        assert_eq!(desired_runners(1, 2, 5, ScaleFactor::Linear), 2);
    }

    #[test]
    fn logistic_matches_the_original_curve() {
        // max 4, k 0.8: 4/(1+4e^-0.8)=1.43, 4/(1+4e^-1.6)=2.21, 4/(1+4e^-2.4)=2.93
        let k = ScaleFactor::default();
        assert_eq!(desired_runners(1, 0, 4, k), 1);
        assert_eq!(desired_runners(2, 0, 4, k), 2);
        assert_eq!(desired_runners(3, 0, 4, k), 3);
        assert_eq!(desired_runners(50, 0, 4, k), 4);
    }

    #[test]
    fn any_demand_asks_for_at_least_one_runner() {
        // 10/(1+10e^-0.1) = 0.99 would round to 1; with k = 0.01 it is 0.91.
        assert_eq!(desired_runners(1, 0, 10, ScaleFactor::Logistic(0.01)), 1);
        assert_eq!(desired_runners(1, 0, 100, ScaleFactor::Logistic(0.001)), 1);
    }

    #[test]
    fn a_zero_maximum_disables_the_runner() {
        assert_eq!(desired_runners(5, 0, 0, ScaleFactor::Linear), 0);
        assert_eq!(desired_runners(5, 3, 0, ScaleFactor::Linear), 0);
    }

    #[test]
    fn scale_factors_parse_like_the_original() {
        assert_eq!("0".parse::<ScaleFactor>(), Ok(ScaleFactor::Linear));
        assert_eq!("0.0".parse::<ScaleFactor>(), Ok(ScaleFactor::Linear));
        assert_eq!(" 1.5 ".parse::<ScaleFactor>(), Ok(ScaleFactor::Logistic(1.5)));
        assert!("fast".parse::<ScaleFactor>().is_err());
        assert!("-1".parse::<ScaleFactor>().is_err());
        assert!("NaN".parse::<ScaleFactor>().is_err());
    }
}
