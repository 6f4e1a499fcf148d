//! The wall clock, in unix seconds, passed in rather than read from a global so tests control
//! time. The journal writer, the shared-store sync, the GitHub client, the resync and the lease
//! all take one.

use std::sync::Arc;

/// The clock, in unix seconds.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system's wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_reads_unix_seconds() {
        let now = system_clock()();
        assert!(now > 1_704_067_200, "after 2024: {now}");
        assert!((now - jiff::Timestamp::now().as_second()).abs() <= 1);
    }
}
