//! The Kubernetes operator. What it writes is decided by pure functions over the custom
//! resources ([`runner_children`], [`core_children`]); the controllers only read the cluster,
//! apply those objects and report status. `render` prints the same objects offline.

pub mod builders;
pub mod children;
pub mod controller;
pub mod core_children;
pub mod credentials;
pub mod install;
pub mod keda;
pub mod render;
pub mod runner_children;

pub use children::{Child, SpecError};

// The images' defaults are the flags' defaults, written once in config.
pub use crate::config::{DEFAULT_IMAGE, DEFAULT_MEMCACHED_IMAGE, DEFAULT_RUNNER_IMAGE};
/// The one field manager every object is applied with.
pub const FIELD_MANAGER: &str = "github-action-autoscaler";
/// Label every object the operator writes carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "github-action-autoscaler");

/// Ports of the API server's container and Service.
pub mod ports {
    /// Webhooks, read API, health (plain HTTP inside the cluster).
    pub const HTTP: i32 = 8080;
    /// Read API (KEDA metrics-api) and custom.metrics.k8s.io, over mutual TLS.
    pub const TLS: i32 = 8443;
    /// KEDA external-push gRPC, over mutual TLS.
    pub const GRPC: i32 = 9090;
    /// memcached.
    pub const MEMCACHED: i32 = 11211;
}

/// Images the objects are built from when the custom resources name none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub runner_image: String,
    pub image: String,
    pub memcached_image: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            runner_image: DEFAULT_RUNNER_IMAGE.into(),
            image: DEFAULT_IMAGE.into(),
            memcached_image: DEFAULT_MEMCACHED_IMAGE.into(),
        }
    }
}

impl From<&crate::config::OperatorSettingsArgs> for Settings {
    fn from(args: &crate::config::OperatorSettingsArgs) -> Self {
        Self {
            runner_image: args.runner_image.clone(),
            image: args.image.clone(),
            memcached_image: args.memcached_image.clone(),
        }
    }
}

/// Where the API server a runner's ScaledObject talks to lives, and whom to grant Secret
/// reads to: derived from the `ScaledActionRunnerCore` named `core`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiServer {
    /// Namespace of the API server's Deployment, Service and ServiceAccount.
    pub namespace: String,
    /// Name of its Deployment, Service and ServiceAccount.
    pub name: String,
    /// Namespace of every runner's GitHub token Secret, when the core names one.
    pub token_namespace: Option<String>,
    /// Name of the ClusterTriggerAuthentication carrying KEDA's TLS client credentials: the
    /// API server's name, whether the core creates it or (`createAuthentication: false`) the
    /// user does, since the API server takes no client without a certificate.
    pub cluster_trigger_authentication: Option<String>,
}

impl ApiServer {
    /// The API server a core describes.
    pub fn from_core(spec: &crate::crd::ScaledActionRunnerCoreSpec) -> Self {
        Self {
            namespace: spec.api_server_namespace.clone(),
            name: spec.api_server_name.clone(),
            token_namespace: spec.api_server_pat_token_namespace.clone().filter(|namespace| !namespace.is_empty()),
            cluster_trigger_authentication: Some(spec.api_server_name.clone()),
        }
    }

    /// The Service's DNS name inside the cluster.
    pub fn host(&self) -> String {
        format!("{}.{}.svc", self.name, self.namespace)
    }
}

/// Why the operator could not start.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("connecting to the Kubernetes API (in-cluster config or KUBECONFIG): {0}")]
    Client(#[source] kube::Error),
    #[error("listening on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// `operator`: the controllers, plus `/healthz` (the kubelet's probes) and `/metrics` on `--listen`.
pub async fn run(
    args: crate::config::OperatorArgs,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), OperatorError> {
    let client = kube::Client::try_default().await.map_err(OperatorError::Client)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| OperatorError::Listen { address: args.listen, source })?;
    let demand = controller::DemandReader::new(None);
    let ctx = std::sync::Arc::new(controller::Context::new(client, Settings::from(&args.settings), Some(demand)));
    let metrics_ctx = ctx.clone();
    let health = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" })).route(
        "/metrics",
        axum::routing::get(move || {
            let ctx = metrics_ctx.clone();
            async move {
                let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
                ([(axum::http::header::CONTENT_TYPE, content_type)], ctx.metrics.encode())
            }
        }),
    );
    // The probes answer until the controllers have stopped.
    let controllers_stopped = tokio_util::sync::CancellationToken::new();
    let stopped = controllers_stopped.clone().cancelled_owned();
    let server = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, health).with_graceful_shutdown(stopped).await {
            tracing::warn!(%error, "health endpoint stopped");
        }
    });
    tracing::info!(listen = %args.listen, "operator started");
    controller::run(ctx, shutdown).await;
    controllers_stopped.cancel();
    let _ = server.await;
    tracing::info!("operator stopped");
    Ok(())
}
