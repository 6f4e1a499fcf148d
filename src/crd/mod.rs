//! Custom resources of `runner.devjoes.com/v1alpha1`: [`ScaledActionRunnerCore`] (cluster-wide
//! configuration) and [`ScaledActionRunner`] (one repository's runners).
//!
//! Manifests written for the original operator keep working: every field of the original CRDs
//! is here, and so is every spelling the original READMEs used where it differed, as its own
//! schema property (the API server would otherwise prune it) merged by an accessor.

mod core;
mod duration;
mod runner;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResourceExt;
use schemars::{Schema, SchemaGenerator};
use serde_json::Value;

pub use self::core::{
    CORE_NAME, DEFAULT_CACHE_WINDOW, DEFAULT_CACHE_WINDOW_WHEN_EMPTY, DEFAULT_KEDA_NAMESPACE, DEFAULT_REPLICAS,
    DEFAULT_RESYNC_INTERVAL, ScaledActionRunnerCore, ScaledActionRunnerCoreSpec, ScaledActionRunnerCoreStatus,
};
pub use self::duration::{DurationError, GoDuration, parse_duration};
pub use self::runner::{
    DEFAULT_FORCE_SCALE_UP_FREQUENCY, DEFAULT_FORCE_SCALE_UP_WINDOW, DEFAULT_RUNNER_GROUP, DEFAULT_SCALE_FACTOR,
    DEFAULT_TERMINATION_GRACE_PERIOD, GITHUB_TOKEN_KEY_PREFIX, LooseNodeSelectors, RunnerTemplate, ScaledActionRunner,
    ScaledActionRunnerSpec, ScaledActionRunnerStatus, Scaling, Scope, TriggerKind, WEBHOOK_SECRET_KEY,
};

/// Why the CustomResourceDefinitions could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// A CRD could not be serialized as YAML.
    #[error("could not render the {crd} CustomResourceDefinition as YAML")]
    Render {
        /// Name of the CRD that failed.
        crd: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_saphyr::ser::Error,
    },
}

/// Both CustomResourceDefinitions as one multi-document YAML stream, core first; the same
/// types always give the same text, so it can be checked in and compared.
pub fn crds_yaml() -> Result<String, CrdError> {
    let documents = [
        (ScaledActionRunnerCore::crd_name(), serde_saphyr::to_string(&ScaledActionRunnerCore::crd())),
        (ScaledActionRunner::crd_name(), serde_saphyr::to_string(&ScaledActionRunner::crd())),
    ];
    let mut yaml = String::new();
    for (crd, rendered) in documents {
        let document = rendered.map_err(|source| CrdError::Render { crd, source })?;
        yaml.push_str("---\n");
        yaml.push_str(&document);
        if !document.ends_with('\n') {
            yaml.push('\n');
        }
    }
    Ok(yaml)
}

/// Joins the hard-wrapped lines of our doc comments, which schemars keeps, so that `kubectl
/// explain` can reflow them; blank lines still separate paragraphs. Applied per struct, so the
/// descriptions of embedded Kubernetes types are left as they are.
fn reflow_descriptions(schema: &mut Schema) {
    reflow(schema.get_mut("description"));
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        for property in properties.values_mut() {
            reflow(property.get_mut("description"));
        }
    }
}

fn reflow(description: Option<&mut Value>) {
    if let Some(Value::String(text)) = description {
        let paragraphs: Vec<String> = text
            .split("\n\n")
            .map(|paragraph| paragraph.lines().map(str::trim).collect::<Vec<_>>().join(" "))
            .collect();
        *text = paragraphs.join("\n\n");
    }
}

/// Schema of a `conditions` list: Kubernetes `Condition`s merged by their `type`, so server-side
/// apply and strategic merges update one condition without replacing the others.
fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), Value::from("map"));
    schema.insert("x-kubernetes-list-map-keys".into(), Value::Array(vec![Value::from("type")]));
    schema
}
