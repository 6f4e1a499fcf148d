//! What the handlers share. Each handler takes only its part, through axum's `FromRef`: the
//! webhook handler the secrets, the intake budget, the store and the metrics; the read API the
//! board; the probes the store and the catalog's status.

use std::sync::Arc;

use axum::extract::FromRef;

use crate::api::CatalogStatus;
use crate::jit::JitService;
use crate::metrics::Metrics;
use crate::store::{Board, StoreHandle};
use crate::webhook::{Intake, LiveSecrets, WebhookSecrets};

/// Cheap to clone: every part is shared.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: StoreHandle,
    pub metrics: Arc<Metrics>,
    /// The budget of body bytes that requests not yet verified may hold.
    pub intake: Arc<Intake>,
    pub secrets: LiveSecrets,
    pub catalog: Arc<CatalogStatus>,
    /// Mints just-in-time runner configurations (in a cluster only: it checks pods' tokens).
    pub jit: Option<Arc<JitService>>,
}

impl AppState {
    /// A state whose catalog is complete (standalone: loaded from the manifests).
    pub fn new(store: StoreHandle, metrics: Arc<Metrics>, secrets: WebhookSecrets, manifest_problems: usize) -> Self {
        Self::with_catalog(store, metrics, secrets, CatalogStatus::loaded(manifest_problems))
    }

    /// A state that is not ready until [`set_catalog`](Self::set_catalog) is called.
    pub fn waiting_for_catalog(store: StoreHandle, metrics: Arc<Metrics>, secrets: WebhookSecrets) -> Self {
        Self::with_catalog(store, metrics, secrets, CatalogStatus::waiting())
    }

    fn with_catalog(
        store: StoreHandle,
        metrics: Arc<Metrics>,
        secrets: WebhookSecrets,
        catalog: CatalogStatus,
    ) -> Self {
        Self {
            store,
            metrics,
            intake: Arc::new(Intake::default()),
            secrets: LiveSecrets::new(secrets),
            catalog: Arc::new(catalog),
            jit: None,
        }
    }

    /// With just-in-time runner configurations minted by `jit`.
    pub fn with_jit(mut self, jit: Arc<JitService>) -> Self {
        self.jit = Some(jit);
        self
    }

    /// Replaces the webhook secrets and the problem count, and marks the catalog loaded.
    pub fn set_catalog(&self, secrets: WebhookSecrets, manifest_problems: usize) {
        self.secrets.replace(secrets);
        self.catalog.set(manifest_problems);
    }
}

impl FromRef<AppState> for StoreHandle {
    fn from_ref(state: &AppState) -> Self {
        state.store.clone()
    }
}

impl FromRef<AppState> for Arc<Board> {
    fn from_ref(state: &AppState) -> Self {
        state.store.board().clone()
    }
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

impl FromRef<AppState> for Arc<Intake> {
    fn from_ref(state: &AppState) -> Self {
        state.intake.clone()
    }
}

impl FromRef<AppState> for LiveSecrets {
    fn from_ref(state: &AppState) -> Self {
        state.secrets.clone()
    }
}

impl FromRef<AppState> for Arc<CatalogStatus> {
    fn from_ref(state: &AppState) -> Self {
        state.catalog.clone()
    }
}

impl FromRef<AppState> for Option<Arc<JitService>> {
    fn from_ref(state: &AppState) -> Self {
        state.jit.clone()
    }
}
