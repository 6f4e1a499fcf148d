//! KEDA's `external-push` scaler over gRPC: KEDA holds a `StreamIsActive` stream per
//! ScaledObject and scales a runner's StatefulSet up from zero the moment a webhook gives it
//! demand, instead of waiting for its next poll.
//!
//! Which runner a call is about: the trigger metadata keys `runnerNamespace` and `runnerName`
//! (KEDA passes every trigger metadata key as `scalerMetadata`), each falling back to the
//! ScaledObject's own namespace and name.
//!
//! - `IsActive`: the runner has demand (queued plus in-progress jobs > 0).
//! - `GetMetricSpec`: one metric, `scaledactionrunner-<namespace>-<name>`, target 1.
//! - `GetMetrics`: the runner's `value` (its desired runners, as the HTTP read API reports it),
//!   so with target 1 the HPA asks for exactly that many replicas.
//! - `StreamIsActive`: the current activity at once, then every time it flips. Nothing is resent
//!   while it holds: KEDA turns every streamed message into a scale request and keeps polling
//!   `IsActive` on its own interval anyway, so a quiet stream is kept alive by HTTP/2 pings, not
//!   by repeated answers.
//!
//! Streams are plain [`Stream`]s over their own runner's change signal on the board, with no task
//! of their own: a delivery for one runner wakes only that runner's streams (with 5,000 streams
//! open, waking all of them on every change cost more CPU than the delivery itself). When KEDA
//! goes away the connection drops the stream, and nothing is left behind. A server shutting down
//! ends every open stream so its graceful shutdown can finish.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use tokio::sync::watch;
use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use crate::demand::RunnerDemand;
use crate::demand::RunnerKey;
use crate::store::Board;

/// Code generated from `proto/externalscaler.proto` (KEDA's interface), server and client.
#[allow(clippy::all)]
pub mod proto {
    tonic::include_proto!("externalscaler");
}

pub use proto::external_scaler_client::ExternalScalerClient;
pub use proto::external_scaler_server::ExternalScalerServer;
use proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec, MetricValue,
    ScaledObjectRef,
};

/// Trigger metadata key naming the runner's namespace (default: the ScaledObject's).
pub const RUNNER_NAMESPACE_KEY: &str = "runnerNamespace";
/// Trigger metadata key naming the runner (default: the ScaledObject's name).
pub const RUNNER_NAME_KEY: &str = "runnerName";
/// Prefix of the metric name; KEDA adds its own `s<trigger index>-` in front.
pub const METRIC_PREFIX: &str = "scaledactionrunner";

/// The gRPC service over the board. Clones share the same open-stream count and shutdown switch.
#[derive(Debug, Clone)]
pub struct PushScaler {
    board: Arc<Board>,
    streams: Arc<Streams>,
}

#[derive(Debug)]
struct Streams {
    open: AtomicUsize,
    /// Flips to true once: every open and future stream ends.
    closing: watch::Sender<bool>,
}

impl PushScaler {
    pub fn new(board: Arc<Board>) -> Self {
        let streams = Streams { open: AtomicUsize::new(0), closing: watch::channel(false).0 };
        Self { board, streams: Arc::new(streams) }
    }

    /// `StreamIsActive` streams currently open (for metrics and tests).
    pub fn open_streams(&self) -> usize {
        self.streams.open.load(Ordering::SeqCst)
    }

    /// Ends every open stream (cleanly, status OK) and every stream opened from now on. KEDA
    /// reconnects, with backoff, to whichever replica is still serving.
    pub fn close_streams(&self) {
        self.streams.closing.send_replace(true);
    }

    fn runner(&self, object: &ScaledObjectRef) -> Result<(RunnerKey, RunnerDemand), Status> {
        let key = runner_key(object)?;
        match self.board.get(&key) {
            Some(view) => Ok((key, view)),
            None => Err(Status::not_found(format!(
                "no ScaledActionRunner {}/{} is served here (asked for by ScaledObject {}/{}; the trigger metadata \
                 keys `{RUNNER_NAMESPACE_KEY}` and `{RUNNER_NAME_KEY}` name the runner when the ScaledObject's \
                 own namespace and name do not)",
                key.namespace, key.name, object.namespace, object.name
            ))),
        }
    }
}

impl From<Arc<Board>> for PushScaler {
    fn from(board: Arc<Board>) -> Self {
        Self::new(board)
    }
}

/// The runner a request is about: trigger metadata first, then the ScaledObject itself.
pub fn runner_key(object: &ScaledObjectRef) -> Result<RunnerKey, Status> {
    let pick = |key: &str, fallback: &str| {
        let given = object.scaler_metadata.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
        given.unwrap_or(fallback).to_string()
    };
    let namespace = pick(RUNNER_NAMESPACE_KEY, &object.namespace);
    let name = pick(RUNNER_NAME_KEY, &object.name);
    if namespace.is_empty() || name.is_empty() {
        return Err(Status::invalid_argument(format!(
            "no runner named: the ScaledObject reference has no namespace or name, and trigger metadata has no \
             `{RUNNER_NAMESPACE_KEY}`/`{RUNNER_NAME_KEY}`"
        )));
    }
    Ok(RunnerKey::new(namespace, name))
}

/// The metric name of a runner: `scaledactionrunner-<namespace>-<name>`.
pub fn metric_name(key: &RunnerKey) -> String {
    format!("{METRIC_PREFIX}-{}-{}", key.namespace, key.name)
}

fn is_active(view: &RunnerDemand) -> bool {
    view.demand > 0 || view.forced_scale_up
}

#[tonic::async_trait]
impl proto::external_scaler_server::ExternalScaler for PushScaler {
    async fn is_active(&self, request: Request<ScaledObjectRef>) -> Result<Response<IsActiveResponse>, Status> {
        let (_, view) = self.runner(request.get_ref())?;
        Ok(Response::new(IsActiveResponse { result: is_active(&view) }))
    }

    type StreamIsActiveStream = ActivityStream;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let (key, _) = self.runner(request.get_ref())?;
        // Removed between the two reads: as if it had not been there.
        let changes = self.board.subscribe_runner(&key).ok_or_else(|| {
            Status::not_found(format!("ScaledActionRunner {}/{} is not served here", key.namespace, key.name))
        })?;
        tracing::debug!(runner = %key, "KEDA opened an activity stream");
        Ok(Response::new(ActivityStream::new(self, key, changes)))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let (key, _) = self.runner(request.get_ref())?;
        let spec = MetricSpec { metric_name: metric_name(&key), target_size: 1, target_size_float: 1.0 };
        Ok(Response::new(GetMetricSpecResponse { metric_specs: vec![spec] }))
    }

    /// The metric name KEDA sends back is not checked: the ScaledObject reference alone names
    /// the runner, and there is only one metric per runner.
    async fn get_metrics(&self, request: Request<GetMetricsRequest>) -> Result<Response<GetMetricsResponse>, Status> {
        let object = request
            .get_ref()
            .scaled_object_ref
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("GetMetrics without a scaledObjectRef"))?;
        let (key, view) = self.runner(object)?;
        let value = MetricValue {
            metric_name: metric_name(&key),
            metric_value: i64::from(view.value),
            metric_value_float: f64::from(view.value),
        };
        Ok(Response::new(GetMetricsResponse { metric_values: vec![value] }))
    }
}

/// One `StreamIsActive` answer: the runner's activity now, then each time it flips.
///
/// It wakes only when its own runner's view changes, rereads that runner's activity (without
/// copying its view) and yields only when it differs from what it last sent. It ends when the
/// server closes its streams, and with `NotFound` when its runner is removed.
pub struct ActivityStream {
    board: Arc<Board>,
    key: RunnerKey,
    changes: WatchStream<u64>,
    closing: WatchStream<bool>,
    sent: Option<bool>,
    finished: bool,
    _open: OpenStream,
}

impl std::fmt::Debug for ActivityStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivityStream").field("runner", &self.key).field("sent", &self.sent).finish_non_exhaustive()
    }
}

/// Counts a stream as open for as long as it exists.
struct OpenStream(Arc<Streams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ActivityStream {
    fn new(scaler: &PushScaler, key: RunnerKey, changes: watch::Receiver<u64>) -> Self {
        scaler.streams.open.fetch_add(1, Ordering::SeqCst);
        Self {
            board: scaler.board.clone(),
            key,
            // Both yield their current value first: the first poll sends the state at once, and
            // a stream opened after shutdown began ends at once.
            changes: WatchStream::new(changes),
            closing: WatchStream::new(scaler.streams.closing.subscribe()),
            sent: None,
            finished: false,
            _open: OpenStream(scaler.streams.clone()),
        }
    }

    fn finish(
        &mut self,
        last: Option<Result<IsActiveResponse, Status>>,
    ) -> Poll<Option<Result<IsActiveResponse, Status>>> {
        self.finished = true;
        tracing::debug!(runner = %self.key, "activity stream ended");
        Poll::Ready(last)
    }
}

impl Stream for ActivityStream {
    type Item = Result<IsActiveResponse, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        // Shutdown wins over pending changes.
        loop {
            match Pin::new(&mut this.closing).poll_next(cx) {
                Poll::Ready(Some(false)) => continue,
                Poll::Ready(Some(true) | None) => return this.finish(None),
                Poll::Pending => break,
            }
        }
        loop {
            // The runner's signal closes only after its last tick, when it is removed: the
            // lookup below then finds it gone.
            let closed = ready!(Pin::new(&mut this.changes).poll_next(cx)).is_none();
            let Some(active) = this.board.activity(&this.key) else {
                let gone = Status::not_found(format!("ScaledActionRunner {} was removed", this.key));
                return this.finish(Some(Err(gone)));
            };
            if closed {
                return this.finish(None);
            }
            if this.sent != Some(active) {
                this.sent = Some(active);
                return Poll::Ready(Some(Ok(IsActiveResponse { result: active })));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn object(namespace: &str, name: &str, metadata: &[(&str, &str)]) -> ScaledObjectRef {
        ScaledObjectRef {
            name: name.into(),
            namespace: namespace.into(),
            scaler_metadata: metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>(),
        }
    }

    #[test]
    fn the_scaled_object_names_the_runner_unless_trigger_metadata_does() {
        assert_eq!(runner_key(&object("ci", "api", &[])).unwrap(), RunnerKey::new("ci", "api"));
        let both = object("ci", "so", &[(RUNNER_NAMESPACE_KEY, "runners"), (RUNNER_NAME_KEY, "api-linux")]);
        assert_eq!(runner_key(&both).unwrap(), RunnerKey::new("runners", "api-linux"));
        let name_only = object("ci", "so", &[(RUNNER_NAME_KEY, "api-linux"), ("scalerAddress", "gaa:9090")]);
        assert_eq!(runner_key(&name_only).unwrap(), RunnerKey::new("ci", "api-linux"));
        let blank = object("ci", "so", &[(RUNNER_NAME_KEY, "  ")]);
        assert_eq!(runner_key(&blank).unwrap(), RunnerKey::new("ci", "so"));
    }

    #[test]
    fn a_reference_naming_nothing_is_an_invalid_argument() {
        let error = runner_key(&object("", "", &[])).unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn metric_name_carries_namespace_and_name() {
        assert_eq!(metric_name(&RunnerKey::new("ci", "api-linux")), "scaledactionrunner-ci-api-linux");
    }

    /// Counts how often a stream's task is woken.
    struct Wakes(AtomicUsize);

    impl futures::task::ArcWake for Wakes {
        fn wake_by_ref(wakes: &Arc<Self>) {
            wakes.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_change_to_one_runner_wakes_only_that_runners_streams() {
        use crate::demand::{Counts, Runner, RunnerIndex, ScaleFactor};
        use proto::external_scaler_server::ExternalScaler as _;

        let runner =
            |name: &str| Runner::new(RunnerKey::new("ci", name), "acme", name, ["linux"], 0, 4, ScaleFactor::Linear);
        let index = RunnerIndex::new([runner("api"), runner("web")]);
        let board = Arc::new(Board::default());
        board.publish_all(&index, |_| None);
        let scaler = PushScaler::new(board.clone());
        let open = |name: &str| {
            let request = Request::new(object("ci", name, &[]));
            futures::executor::block_on(scaler.stream_is_active(request)).unwrap().into_inner()
        };
        let (mut api, mut web) = (open("api"), open("web"));
        let (api_wakes, web_wakes) = (Arc::new(Wakes(AtomicUsize::new(0))), Arc::new(Wakes(AtomicUsize::new(0))));
        let (api_waker, web_waker) = (futures::task::waker(api_wakes.clone()), futures::task::waker(web_wakes.clone()));
        let mut api_cx = Context::from_waker(&api_waker);
        let mut web_cx = Context::from_waker(&web_waker);
        let poll = |stream: &mut ActivityStream, cx: &mut Context<'_>| match Pin::new(stream).poll_next(cx) {
            Poll::Ready(Some(Ok(answer))) => Some(answer.result),
            Poll::Pending => None,
            other => panic!("the stream ended: {other:?}"),
        };
        assert_eq!((poll(&mut api, &mut api_cx), poll(&mut web, &mut web_cx)), (Some(false), Some(false)));
        assert_eq!((poll(&mut api, &mut api_cx), poll(&mut web, &mut web_cx)), (None, None), "nothing more to say");

        board.publish([(&RunnerKey::new("ci", "api"), Counts { queued: 1, in_progress: 0 })]);

        assert!(api_wakes.0.load(Ordering::SeqCst) > 0, "the changed runner's stream is woken");
        assert_eq!(web_wakes.0.load(Ordering::SeqCst), 0, "the other runner's stream sleeps on");
        assert_eq!((poll(&mut api, &mut api_cx), poll(&mut web, &mut web_cx)), (Some(true), None));
    }
}
