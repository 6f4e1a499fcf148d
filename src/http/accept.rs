//! The one accept loop behind every listener: plain HTTP, HTTP over TLS (mutual TLS too) and
//! the KEDA gRPC scaler, plain or over TLS.
//!
//! - After a failed `accept` (out of file descriptors) it pauses instead of spinning.
//! - A listener holds at most [`Limits::max_connections`] connections. When it is full, the
//!   connection stalled longest (see [`limits`](super::limits)) is closed to make room, so idle
//!   and trickling clients cannot keep a client with a complete request out; only when every
//!   connection is busy answering a request is the newcomer turned away.
//! - Each connection is timed: the TLS handshake, the first request head, idle keep-alive, and
//!   each request body from its head to its end. A sweeper closes stalled connections.
//! - On shutdown ([`Shutdown::stop`]) the listener closes, connections without a request in
//!   flight close at once and the others finish their requests, until [`Shutdown::abort`] drops
//!   whatever is left.
//!
//! Requests carry [`ConnectInfo<SocketAddr>`] and, over mutual TLS, [`ClientCertChain`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::limits::{Limits, Progress, victim};
use super::tls::{ClientCertChain, ReloadingTls};

/// After a failed `accept` (e.g. out of file descriptors), pause instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How often stalled connections are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// HTTP/2 pings on idle connections: a peer that vanished without closing (node loss, a dropped
/// NAT entry) is noticed and its streams dropped; the pings also keep middleboxes from cutting a
/// quiet KEDA stream.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection speaks once accepted.
#[derive(Debug, Clone)]
pub enum Transport {
    Plain,
    /// TLS with the certificates in force at accept time; ALPN offers `h2` and `http/1.1`.
    Tls(ReloadingTls),
}

/// The HTTP protocols a listener expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 and HTTP/2 (the read API, webhooks, custom metrics).
    Http,
    /// gRPC: HTTP/2 without a per-connection stream cap (KEDA multiplexes every ScaledObject's
    /// stream over one connection).
    Grpc,
}

/// The shutdown of every listener: `stop` closes them and lets requests in flight finish,
/// `abort` (some grace later) drops every connection left.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    pub stop: CancellationToken,
    pub abort: CancellationToken,
}

impl Shutdown {
    /// Stops when `stop` is cancelled and aborts `grace` later.
    pub fn after(stop: CancellationToken, grace: Duration) -> Self {
        let abort = CancellationToken::new();
        let (stopped, aborting) = (stop.clone(), abort.clone());
        tokio::spawn(async move {
            stopped.cancelled().await;
            tokio::time::sleep(grace).await;
            aborting.cancel();
        });
        Self { stop, abort }
    }
}

/// One listener to serve.
#[derive(Debug)]
pub struct Listener {
    /// Names the listener in logs: `http`, `tls`, `grpc`.
    pub name: &'static str,
    pub tcp: TcpListener,
    pub transport: Transport,
    pub protocol: Protocol,
    pub limits: Limits,
}

/// Serves `router` on `listener` until `shutdown` has stopped it and its connections are gone.
pub async fn serve(listener: Listener, router: Router, shutdown: Shutdown) {
    let Listener { name, tcp, transport, protocol, limits } = listener;
    let table = Arc::new(Table::default());
    let sweeping = shutdown.abort.child_token();
    let sweeper = tokio::spawn(sweep(table.clone(), limits, name, sweeping.clone()));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.stop.cancelled() => break,
            Some(finished) = connections.join_next(), if !connections.is_empty() => log_task_end(name, finished),
            accepted = tcp.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let Some(connection) = table.admit(limits.max_connections, &shutdown.abort) else {
                        tracing::warn!(listener = name, %peer, "every connection is busy: refused a new one");
                        continue;
                    };
                    let context = ConnectionContext {
                        connection,
                        table: table.clone(),
                        peer,
                        router: router.clone(),
                        limits,
                        protocol,
                        stop: shutdown.stop.clone(),
                    };
                    connections.spawn(serve_connection(context, stream, transport.clone()));
                }
                Err(error) => {
                    tracing::warn!(listener = name, %error, "accepting a connection failed; pausing");
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                        () = shutdown.stop.cancelled() => break,
                    }
                }
            },
        }
    }
    drop(tcp);
    tracing::debug!(listener = name, connections = connections.len(), "listener closed; draining");
    while let Some(finished) = connections.join_next().await {
        log_task_end(name, finished);
    }
    sweeping.cancel();
    let _ = sweeper.await;
}

/// Serves `router` until `signal` resolves, then allows requests in flight `grace` to finish.
pub async fn serve_until(listener: Listener, router: Router, signal: impl Future<Output = ()>, grace: Duration) {
    let shutdown = Shutdown::default();
    let mut serving = pin!(serve(listener, router, shutdown.clone()));
    tokio::select! {
        () = serving.as_mut() => return,
        () = signal => shutdown.stop.cancel(),
    }
    tokio::select! {
        () = serving.as_mut() => {}
        () = tokio::time::sleep(grace) => {
            shutdown.abort.cancel();
            serving.await;
        }
    }
}

fn log_task_end(listener: &str, finished: Result<(), tokio::task::JoinError>) {
    if let Err(error) = finished {
        tracing::error!(listener, %error, "a connection task failed");
    }
}

/// The connections of one listener.
#[derive(Debug, Default)]
struct Table {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Connection>>>,
}

impl Table {
    /// A slot for a new connection: a free one, else the one of the connection stalled longest
    /// (which is closed); `None` when every connection is busy.
    fn admit(&self, cap: usize, abort: &CancellationToken) -> Option<Arc<Connection>> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= cap {
            let progress = open.iter().map(|(id, connection)| (*id, connection.progress()));
            let evicted = victim(progress).and_then(|id| open.remove(&id))?;
            tracing::debug!(connection = evicted.id, "listener full: closed the connection stalled longest");
            evicted.close.cancel();
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection {
            id,
            progress: Mutex::new(Progress::new(Instant::now())),
            close: abort.child_token(),
        });
        open.insert(id, connection.clone());
        Some(connection)
    }

    fn remove(&self, id: u64) {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }
}

/// Closes the connections that stalled past their timeout, until `done`.
async fn sweep(table: Arc<Table>, limits: Limits, listener: &'static str, done: CancellationToken) {
    let mut ticks = tokio::time::interval(SWEEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = done.cancelled() => return,
        }
        let now = Instant::now();
        let mut open = table.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|_, connection| match connection.progress().expired(now, &limits) {
            None => true,
            Some(expiry) => {
                tracing::debug!(listener, connection = connection.id, reason = expiry.as_str(), "closed a connection");
                connection.close.cancel();
                false
            }
        });
    }
}

/// One connection's progress and its switch.
#[derive(Debug)]
struct Connection {
    id: u64,
    progress: Mutex<Progress>,
    /// Cancelled to drop the connection now (evicted, timed out, or shutdown's abort).
    close: CancellationToken,
}

impl Connection {
    fn progress(&self) -> Progress {
        *self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut Progress)) {
        change(&mut self.progress.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// A request head arrived; the guards end the request when its answer is sent and its body
    /// when it has arrived (or was dropped unread).
    fn begin_request(self: &Arc<Self>, body_complete: bool) -> (Answering, Option<Reading>) {
        let now = Instant::now();
        self.update(|p| {
            p.active += 1;
            if !body_complete {
                if p.reading == 0 {
                    p.reading_since = Some(now);
                }
                p.reading += 1;
            }
        });
        (Answering(self.clone()), (!body_complete).then(|| Reading(self.clone())))
    }
}

/// Held until a request's answer has been sent in full.
#[derive(Debug)]
struct Answering(Arc<Connection>);

impl Drop for Answering {
    fn drop(&mut self) {
        let now = Instant::now();
        self.0.update(|p| {
            p.active = p.active.saturating_sub(1);
            p.served += 1;
            if p.active == 0 {
                p.idle_since = now;
            }
        });
    }
}

/// Held until a request's body has arrived in full.
#[derive(Debug)]
struct Reading(Arc<Connection>);

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.update(|p| {
            p.reading = p.reading.saturating_sub(1);
            if p.reading == 0 {
                p.reading_since = None;
            }
        });
    }
}

/// A request body that tells its connection when it has arrived.
struct RequestBody {
    inner: Incoming,
    reading: Option<Reading>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) || self.inner.is_end_stream() {
            self.reading = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that tells its connection when it has been sent.
struct ResponseBody {
    inner: axum::body::Body,
    _answering: Answering,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

struct ConnectionContext {
    connection: Arc<Connection>,
    table: Arc<Table>,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    protocol: Protocol,
    stop: CancellationToken,
}

/// Leaves the table when the connection task ends, however it ends.
struct Slot(Arc<Table>, u64);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

async fn serve_connection(context: ConnectionContext, tcp: TcpStream, transport: Transport) {
    let _slot = Slot(context.table.clone(), context.connection.id);
    match transport {
        Transport::Plain => serve_http(context, TokioIo::new(tcp), None).await,
        Transport::Tls(tls) => {
            let handshake = tokio::time::timeout(context.limits.handshake_timeout, tls.acceptor().accept(tcp));
            let stream = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(peer = %context.peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %context.peer, "TLS handshake timed out");
                        return;
                    }
                },
                () = context.connection.close.cancelled() => return,
                () = context.stop.cancelled() => return,
            };
            let chain =
                stream.get_ref().1.peer_certificates().map(|certs| ClientCertChain(certs.iter().cloned().collect()));
            serve_http(context, TokioIo::new(stream), chain).await;
        }
    }
}

async fn serve_http<IO>(context: ConnectionContext, io: TokioIo<IO>, chain: Option<ClientCertChain>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ConnectionContext { connection, peer, router, protocol, stop, .. } = context;
    let tracked = connection.clone();
    let router = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let (answering, reading) = tracked.begin_request(request.body().is_end_stream());
        let (mut parts, inner) = request.into_parts();
        parts.extensions.insert(ConnectInfo(peer));
        if let Some(chain) = &chain {
            parts.extensions.insert(chain.clone());
        }
        let call = router.call(hyper::Request::from_parts(parts, RequestBody { inner, reading }));
        async move {
            let response = call.await?;
            Ok::<_, Infallible>(response.map(|inner| ResponseBody { inner, _answering: answering }))
        }
    });
    // No HTTP/1 timer: hyper's header-read timeout would also close kept-alive connections
    // after the header timeout; the sweeper applies both timeouts instead.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT);
    if protocol == Protocol::Grpc {
        builder.http2().max_concurrent_streams(None);
    }
    let mut served = pin!(builder.serve_connection(io, service));
    let close = connection.close.clone();
    let finished = tokio::select! {
        finished = served.as_mut() => finished,
        () = close.cancelled() => return,
        () = stop.cancelled() => {
            // Never sent a whole request: nothing to answer or flush (a partial head is no request).
            let progress = connection.progress();
            if progress.active == 0 && progress.served == 0 {
                return;
            }
            served.as_mut().graceful_shutdown();
            tokio::select! {
                finished = served.as_mut() => finished,
                () = close.cancelled() => return,
            }
        }
    };
    if let Err(error) = finished {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}
