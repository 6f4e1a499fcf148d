//! The webhook benchmark's ceiling: a receiver that only checks `X-Hub-Signature-256` and answers.
//!
//! `scripts/bench-webhooks.sh` drives this and the real `serve` with the same signed deliveries;
//! whatever the real receiver does beyond this (parsing, journal, demand) is the gap between them.
//!
//! ```sh
//! cargo run --release --example hmac_ceiling -- --listen 127.0.0.1:8090
//! ```

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clap::Parser;
use gaa::webhook::signature;

/// The demo manifests' webhook secret (`fixtures/manifests/demo/secrets.yaml`).
const SECRET: &[u8] = b"demo-webhook-secret";
/// GitHub caps payloads at 25 MB; so does the real receiver.
const MAX_BODY: usize = 25 * 1024 * 1024;

#[derive(Debug, Parser)]
#[command(about = "Upper bound for the webhook receiver: HMAC check and 200, nothing else")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
}

async fn webhook(headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = headers.get("x-hub-signature-256").and_then(|value| value.to_str().ok());
    match signature::verify(header, &body, [SECRET]) {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::UNAUTHORIZED,
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let app = Router::new().route("/webhook", post(webhook)).layer(DefaultBodyLimit::max(MAX_BODY));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("hmac_ceiling listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await
}
