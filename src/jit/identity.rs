//! Who a token is: the cluster's TokenReview for the token and our audience, then the pod it
//! is bound to, read back to check it is still that pod and who controls it.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};

use super::{AUDIENCE, BoundPod, IdentityError, PodIdentity, RunnerPods};
use crate::demand::RunnerKey;

/// The keys the API server puts in a pod-bound token's review.
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const POD_UID: &str = "authentication.kubernetes.io/pod-uid";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// Checks tokens with the cluster `serve` runs in (it needs `create` on `tokenreviews` and
/// `get` on the runners' pods).
#[derive(Clone)]
pub struct KubeIdentity {
    client: Client,
}

impl KubeIdentity {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    async fn review(&self, token: &str) -> Result<BoundPod, IdentityError> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_string()), audiences: Some(vec![AUDIENCE.to_string()]) },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| IdentityError::Unavailable(e.to_string()))?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            // The API server's reason names no part of the token.
            let reason = status.error.unwrap_or_else(|| "not authenticated".into());
            return Err(IdentityError::Refused(format!("the token was refused: {reason}")));
        }
        if !status.audiences.iter().flatten().any(|a| a == AUDIENCE) {
            return Err(IdentityError::Refused(format!("the token is not for the audience {AUDIENCE}")));
        }
        let user = status.user.unwrap_or_default();
        let namespace = user
            .username
            .as_deref()
            .and_then(|u| u.strip_prefix(SERVICE_ACCOUNT_PREFIX))
            .and_then(|rest| rest.split_once(':'))
            .map(|(namespace, _)| namespace.to_string())
            .ok_or_else(|| IdentityError::Refused("the token is not a ServiceAccount's".into()))?;
        let extra: BTreeMap<String, Vec<String>> = user.extra.unwrap_or_default();
        let first = |key: &str| extra.get(key).and_then(|values| values.first()).cloned();
        let (Some(name), Some(uid)) = (first(POD_NAME), first(POD_UID)) else {
            return Err(IdentityError::Refused("the token is not bound to a pod".into()));
        };
        let pod = Api::<Pod>::namespaced(self.client.clone(), &namespace)
            .get_opt(&name)
            .await
            .map_err(|e| IdentityError::Unavailable(e.to_string()))?
            .filter(|pod| pod.metadata.uid.as_deref() == Some(uid.as_str()))
            .ok_or_else(|| IdentityError::Refused(format!("the token's pod {namespace}/{name} no longer exists")))?;
        let stateful_set = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|owner| owner.controller == Some(true) && owner.kind == "StatefulSet")
            .map(|owner| owner.name.clone());
        Ok(BoundPod { namespace, name, uid, stateful_set })
    }
}

impl PodIdentity for KubeIdentity {
    fn identify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<BoundPod, IdentityError>> {
        Box::pin(self.review(token))
    }
}

impl RunnerPods for KubeIdentity {
    fn pods<'a>(&'a self, runner: &'a RunnerKey) -> BoxFuture<'a, Result<Vec<BoundPod>, String>> {
        Box::pin(async move {
            // The labels the operator gives a runner's pods.
            let selector = format!(
                "app.kubernetes.io/name=github-action-autoscaler,app.kubernetes.io/instance={},app.kubernetes.io/component=runner",
                runner.name
            );
            let pods = Api::<Pod>::namespaced(self.client.clone(), &runner.namespace)
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| e.to_string())?;
            Ok(pods
                .items
                .into_iter()
                .filter_map(|pod| {
                    Some(BoundPod {
                        namespace: runner.namespace.clone(),
                        name: pod.metadata.name?,
                        uid: pod.metadata.uid?,
                        stateful_set: Some(runner.name.clone()),
                    })
                })
                .collect())
        })
    }
}
