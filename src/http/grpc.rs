//! KEDA's external-push scaler on the shared accept loop, behind the listener's read access.

use std::future::Future;

use tonic::{Request, Status};

use super::accept::{Listener, Protocol, Transport, serve_until};
use super::access::ReadAccess;
use super::bearer::bearer_in;
use super::limits::Limits;
use crate::config::DEFAULT_SHUTDOWN_GRACE;
use crate::metrics_api::external_scaler::{ExternalScalerServer, PushScaler};

/// The scaler as a router for the shared accept loop ([`super::accept`]), with `access`
/// deciding who may call it: with a token, every call carries the `authorization: Bearer
/// <token>` metadata (KEDA's `authMode: bearer`); on a listener that authenticates nobody, every
/// call is refused. Client certificates are checked by the TLS handshake before any call.
pub fn router(scaler: PushScaler, access: ReadAccess) -> axum::Router {
    let service = ExternalScalerServer::with_interceptor(scaler, move |request: Request<()>| {
        authorize(&access, request.metadata())?;
        Ok(request)
    });
    tonic::service::Routes::new(service).prepare().into_axum_router()
}

/// Whether a call with `metadata` may read on a listener with `access`.
pub fn authorize(access: &ReadAccess, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
    match access {
        ReadAccess::Open => Ok(()),
        ReadAccess::Closed => Err(Status::unauthenticated(
            "this listener authenticates nobody, so it serves no demand: give the server --metrics-token-file or \
             TLS with --client-ca (or --unauthenticated-reads)",
        )),
        ReadAccess::Token(token) => {
            let presented = metadata.get("authorization").and_then(|value| bearer_in(value.as_bytes()));
            match presented {
                Some(presented) if token.matches(presented) => Ok(()),
                Some(_) => Err(Status::unauthenticated("wrong bearer token")),
                None => Err(Status::unauthenticated("no bearer token (authorization: Bearer <token>)")),
            }
        }
    }
}

/// The scaler on `tcp` through the shared accept loop (default [`Limits`]), over `transport`
/// (TLS must offer ALPN `h2`, as [`super::tls`] does), open to every caller, until `shutdown`
/// completes: then every open stream ends and the requests in flight get
/// [`DEFAULT_SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    tcp: tokio::net::TcpListener,
    transport: Transport,
    scaler: impl Into<PushScaler>,
    shutdown: impl Future<Output = ()>,
) {
    let scaler = scaler.into();
    let closer = scaler.clone();
    let shutdown = async move {
        shutdown.await;
        // Open streams never end by themselves: without this the grace would always run out.
        closer.close_streams();
    };
    let listener = Listener { name: "grpc", tcp, transport, protocol: Protocol::Grpc, limits: Limits::default() };
    serve_until(listener, router(scaler, ReadAccess::Open), shutdown, DEFAULT_SHUTDOWN_GRACE).await;
}

/// [`serve`] on plain TCP.
pub async fn serve_tcp(
    tcp: tokio::net::TcpListener,
    scaler: impl Into<PushScaler>,
    shutdown: impl Future<Output = ()>,
) {
    serve(tcp, Transport::Plain, scaler, shutdown).await;
}
