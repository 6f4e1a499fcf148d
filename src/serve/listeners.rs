//! The listeners: plain HTTP always, TLS and KEDA's gRPC scaler when asked for; each on the one
//! accept loop, with the same limits and the read access its authentication allows.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::ServeError;
use crate::config::ServeArgs;
use crate::http::accept::{self, Listener, Protocol, Shutdown, Transport};
use crate::http::bearer::BearerToken;
use crate::http::limits::{self, Limits};
use crate::http::tls::{DEFAULT_POLL_INTERVAL, ReloadingTls, TlsFiles};
use crate::http::{AppState, ReadAccess, grpc, router_for};
use crate::metrics_api::external_scaler::PushScaler;
use crate::store::Board;

/// The plain listener, bound, with the TLS and gRPC ones already serving.
pub(super) struct Listeners {
    plain: Listener,
    local: SocketAddr,
    access: ReadAccess,
    others: Vec<JoinHandle<()>>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr: addr.to_string(), source })
}

/// Binds every listener and starts serving all but the plain one, until `shutdown`.
pub(super) async fn start(
    args: &ServeArgs,
    state: &AppState,
    board: Arc<Board>,
    shutdown: &Shutdown,
) -> Result<Listeners, ServeError> {
    let tcp = bind(args.http.listen).await?;
    let local = tcp.local_addr().map_err(ServeError::Http)?;
    tracing::info!(listen = %local, data_dir = %args.store.data_dir.display(), "serving");
    let token = match &args.http.metrics_token_file {
        None => None,
        Some(path) => Some(BearerToken::from_file(path).map_err(|e| ServeError::Tls(e.to_string()))?),
    };
    let limits = fitted_limits(args);
    let reads = |client_certificates: bool| {
        ReadAccess::of_listener(client_certificates, token.as_ref(), args.http.unauthenticated_reads)
    };
    let mut others = Vec::new();
    let mut grpc_tls: Option<ReloadingTls> = None;
    if let Some(addr) = args.tls.tls_listen {
        let Some(files) = TlsFiles::from_args(&args.tls) else {
            return Err(ServeError::Tls("--tls-listen needs --tls-cert and --tls-key".into()));
        };
        let tls = ReloadingTls::start(files, DEFAULT_POLL_INTERVAL).map_err(|e| ServeError::Tls(e.to_string()))?;
        let tcp = bind(addr).await?;
        let client_certificates = !args.tls.client_ca.is_empty();
        let access = reads(client_certificates);
        tracing::info!(tls_listen = %addr, client_certificates, reads = access.describe(), "serving TLS");
        grpc_tls = Some(tls.clone());
        let listener = Listener { name: "tls", tcp, transport: Transport::Tls(tls), protocol: Protocol::Http, limits };
        others.push(tokio::spawn(accept::serve(listener, router_for(state.clone(), &access), shutdown.clone())));
    }
    if let Some(addr) = args.http.grpc_listen {
        let tcp = bind(addr).await?;
        let access = reads(grpc_tls.is_some() && !args.tls.client_ca.is_empty());
        if matches!(access, ReadAccess::Closed) {
            tracing::warn!(grpc_listen = %addr, "the gRPC listener authenticates nobody: every call is refused");
        }
        tracing::info!(grpc_listen = %addr, tls = grpc_tls.is_some(), reads = access.describe(), "serving KEDA external-push gRPC");
        let scaler = PushScaler::new(board);
        // Open streams never end by themselves: end them when shutdown starts.
        let (closer, stop) = (scaler.clone(), shutdown.stop.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            closer.close_streams();
        });
        let transport = grpc_tls.map_or(Transport::Plain, Transport::Tls);
        let listener = Listener { name: "grpc", tcp, transport, protocol: Protocol::Grpc, limits };
        others.push(tokio::spawn(accept::serve(listener, grpc::router(scaler, access), shutdown.clone())));
    }
    let plain = Listener { name: "http", tcp, transport: Transport::Plain, protocol: Protocol::Http, limits };
    Ok(Listeners { plain, local, access: reads(false), others })
}

/// The limits of `--max-connections` and the timeouts, the cap lowered to fit every listener
/// under the open-files limit.
fn fitted_limits(args: &ServeArgs) -> Limits {
    let wanted = args.limits.max_connections;
    let listeners = 1 + usize::from(args.tls.tls_listen.is_some()) + usize::from(args.http.grpc_listen.is_some());
    let open_files = limits::open_files_limit();
    let limits =
        Limits { max_connections: limits::connection_cap(wanted, listeners, open_files), ..(&args.limits).into() };
    if limits.max_connections < wanted {
        tracing::warn!(
            wanted,
            max_connections = limits.max_connections,
            open_files = open_files.unwrap_or_default(),
            listeners,
            "--max-connections lowered to fit the open-files limit"
        );
    }
    tracing::info!(
        max_connections = limits.max_connections,
        tls_handshake_timeout = ?limits.handshake_timeout,
        header_read_timeout = ?limits.header_timeout,
        idle_timeout = ?limits.idle_timeout,
        body_read_timeout = ?limits.body_timeout,
        shutdown_grace = ?args.http.shutdown_grace,
        "connection limits of every listener"
    );
    limits
}

impl Listeners {
    /// Serves the plain listener until `shutdown` has stopped every listener and drained it.
    pub(super) async fn serve(self, state: AppState, shutdown: Shutdown) {
        let Self { plain, local, access, others } = self;
        tracing::info!(listen = %local, reads = access.describe(), "serving HTTP");
        accept::serve(plain, router_for(state, &access), shutdown).await;
        for server in others {
            let _ = server.await;
        }
    }
}
