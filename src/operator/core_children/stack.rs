//! The API server stack being built: the core it is built for, and what its objects share
//! (names, labels, owner, the API server's identity, disruption budgets).

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::Subject;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use super::API_SERVER;
use crate::crd::{ScaledActionRunnerCore, ScaledActionRunnerCoreSpec};
use crate::operator::Settings;
use crate::operator::builders::service_account_subject;
use crate::operator::children::{labels, selector_labels};

/// The core whose API server stack is being built, and the settings it is built with.
pub(super) struct Stack<'a> {
    pub(super) core: &'a ScaledActionRunnerCore,
    pub(super) spec: &'a ScaledActionRunnerCoreSpec,
    pub(super) settings: &'a Settings,
    pub(super) instance: &'a str,
}

impl Stack<'_> {
    pub(super) fn namespace(&self) -> &str {
        &self.spec.api_server_namespace
    }

    pub(super) fn name(&self) -> &str {
        &self.spec.api_server_name
    }

    pub(super) fn metadata(&self, name: &str, namespace: Option<&str>, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: namespace.map(str::to_owned),
            labels: Some(labels(self.instance, component)),
            owner_references: self.core.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        }
    }

    pub(super) fn namespaced(&self, name: &str, component: &str) -> ObjectMeta {
        self.metadata(name, Some(self.namespace()), component)
    }

    /// Cluster-scoped and cross-namespace RBAC names carry the API server's namespace and name,
    /// so two installs (or a rename) never fight over one object.
    pub(super) fn rbac_name(&self, purpose: &str) -> String {
        format!("github-action-autoscaler:{}:{}:{purpose}", self.namespace(), self.name())
    }

    pub(super) fn subject(&self) -> Subject {
        service_account_subject(self.namespace(), self.name())
    }

    pub(super) fn service_account(&self) -> ServiceAccount {
        ServiceAccount { metadata: self.namespaced(self.name(), API_SERVER), ..ServiceAccount::default() }
    }

    pub(super) fn budget(&self, name: &str, component: &str) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: self.namespaced(name, component),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(LabelSelector {
                    match_labels: Some(selector_labels(self.instance, component)),
                    ..LabelSelector::default()
                }),
                ..PodDisruptionBudgetSpec::default()
            }),
            ..PodDisruptionBudget::default()
        }
    }
}
