//! The API server's least-privilege RBAC.

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject};

use super::stack::Stack;
use super::{API_SERVER, HPA_CONTROLLER, RESYNC_LEASE, token_namespace};
use crate::operator::Child;
use crate::operator::builders::{role_ref, rule, service_account_subject};

impl Stack<'_> {
    /// Least privilege: read ScaledActionRunners (cluster-wide or in the listed namespaces), one
    /// Lease, the token namespace's Secrets when there is one, token reviews (for just-in-time
    /// runners' pods), and custom metrics for the HPA.
    /// Runners' own Secrets are granted by name by each ScaledActionRunner's children.
    pub(super) fn rbac(&self) -> Vec<Child> {
        let runners = rule(&["runner.devjoes.com"], &["scaledactionrunners"], &["get", "list", "watch"]);
        let runners_name = self.rbac_name("runners");
        let mut children = Vec::new();
        if self.spec.namespaces.is_empty() {
            children.push(self.cluster_role(&runners_name, vec![runners]));
            children.push(self.cluster_role_binding(&runners_name, &runners_name, vec![self.subject()]));
        } else {
            for namespace in &self.spec.namespaces {
                children.extend(self.role_and_binding(&runners_name, namespace, vec![runners.clone()]));
            }
        }

        let mut lease = rule(&["coordination.k8s.io"], &["leases"], &["get", "update"]);
        lease.resource_names = Some(vec![RESYNC_LEASE.to_owned()]);
        let lease_rules = vec![rule(&["coordination.k8s.io"], &["leases"], &["create"]), lease];
        children.extend(self.role_and_binding(&self.rbac_name("resync-lease"), self.namespace(), lease_rules));

        if let Some(namespace) = token_namespace(self.spec) {
            // That namespace holds nothing but GitHub tokens, so reading all of it is the intent.
            let tokens = vec![rule(&[""], &["secrets"], &["get", "list", "watch"])];
            children.extend(self.role_and_binding(&self.rbac_name("tokens"), namespace, tokens));
        }

        // Just-in-time runners' pods prove who they are with their own tokens, which the API
        // server has the cluster review (it reads the pods themselves by each runner's Role).
        let reviews_name = self.rbac_name("token-reviews");
        let reviews = vec![rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"])];
        children.push(self.cluster_role(&reviews_name, reviews));
        children.push(self.cluster_role_binding(&reviews_name, &reviews_name, vec![self.subject()]));

        // As prometheus-adapter does: let the HPA controller read what this server serves.
        let metrics_name = self.rbac_name("custom-metrics-reader");
        let metrics = vec![rule(&["custom.metrics.k8s.io"], &["*"], &["get", "list"])];
        children.push(self.cluster_role(&metrics_name, metrics));
        let hpa = service_account_subject(HPA_CONTROLLER.0, HPA_CONTROLLER.1);
        children.push(self.cluster_role_binding(&metrics_name, &metrics_name, vec![hpa]));
        children
    }

    pub(super) fn cluster_role(&self, name: &str, rules: Vec<PolicyRule>) -> Child {
        Child::typed(&ClusterRole {
            metadata: self.metadata(name, None, API_SERVER),
            rules: Some(rules),
            ..ClusterRole::default()
        })
    }

    pub(super) fn cluster_role_binding(&self, name: &str, role: &str, subjects: Vec<Subject>) -> Child {
        Child::typed(&ClusterRoleBinding {
            metadata: self.metadata(name, None, API_SERVER),
            role_ref: role_ref("ClusterRole", role),
            subjects: Some(subjects),
        })
    }

    pub(super) fn role_and_binding(&self, name: &str, namespace: &str, rules: Vec<PolicyRule>) -> [Child; 2] {
        [
            Child::typed(&Role { metadata: self.metadata(name, Some(namespace), API_SERVER), rules: Some(rules) }),
            Child::typed(&RoleBinding {
                metadata: self.metadata(name, Some(namespace), API_SERVER),
                role_ref: role_ref("Role", name),
                subjects: Some(vec![self.subject()]),
            }),
        ]
    }
}
