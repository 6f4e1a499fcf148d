//! Forced scale-up windows opened and closed on time, with the desired-runners gauge.

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::Board;

/// Keeps the windows of `board` until `stop` is cancelled.
pub(super) fn spawn(board: Arc<Board>, metrics: Arc<Metrics>, stop: CancellationToken) {
    let clock = crate::clock::system_clock();
    tokio::spawn(keep_forced_windows(board, metrics, clock, stop.cancelled_owned()));
}

/// Opens and closes forced scale-up windows on time, looking at least once a minute so runners
/// added since are covered; the desired-runners gauge follows.
async fn keep_forced_windows(board: Arc<Board>, metrics: Arc<Metrics>, clock: Clock, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        let now = clock();
        let refreshed = board.refresh_forced(now);
        for view in &refreshed.changed {
            metrics.runner(view);
        }
        let wait = refreshed.next.map_or(60, |at| (at - now).clamp(1, 60));
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(wait.unsigned_abs())) => {}
            () = &mut stop => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::demand::{ForcedScaleUp, Runner, RunnerIndex, RunnerKey, ScaleFactor};

    #[tokio::test]
    async fn the_desired_runners_gauge_follows_a_forced_window_as_it_opens_and_closes() {
        let mut runner = Runner::new(RunnerKey::new("ci", "web"), "acme", "web", ["linux"], 0, 4, ScaleFactor::Linear);
        // A 100 s window every 1,000 s, from 0.
        runner.forced = ForcedScaleUp::new(Duration::from_secs(1000), Duration::from_secs(100), 0);
        let index = RunnerIndex::new(vec![runner]);
        let board = Arc::new(Board::default());
        board.publish_all(&index, |_| None);
        let metrics = Arc::new(Metrics::new());
        for view in board.list() {
            metrics.runner(&view);
        }
        let gauge = r#"gaa_runner_desired{namespace="ci",name="web"}"#;
        let at = |now: i64| -> Clock { Arc::new(move || now) };

        keep_forced_windows(board.clone(), metrics.clone(), at(50), std::future::ready(())).await;
        assert!(metrics.encode().contains(&format!("{gauge} 4")), "{}", metrics.encode());

        keep_forced_windows(board.clone(), metrics.clone(), at(100), std::future::ready(())).await;
        assert!(metrics.encode().contains(&format!("{gauge} 0")), "{}", metrics.encode());
    }
}
