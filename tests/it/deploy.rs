//! The install manifests in `deploy/`: the checked-in files are what the code generates, and
//! `install.yaml` parses into typed Kubernetes objects without losing a field. That the Helm
//! chart rendered with its default values is exactly `install.yaml` is shown by real Helm
//! (`helm lint` and `helm template`) in the end-to-end suite (`tests/e2e`).
//!
//! `GAA_BLESS=1 cargo test --test deploy` rewrites the checked-in files.

use std::error::Error;
use std::path::{Path, PathBuf};

use gaa::operator::Settings;
use gaa::operator::install::{chart_files, install_yaml};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

type TestResult = Result<(), Box<dyn Error>>;

const INSTALL_YAML: &str = "deploy/install.yaml";
const CHART_DIR: &str = "deploy/chart";
const BLESS: &str = "GAA_BLESS";

fn crate_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Every generated file, as (path relative to the crate, contents).
fn generated_files() -> Result<Vec<(String, String)>, Box<dyn Error>> {
    let settings = Settings::default();
    let mut files = vec![(INSTALL_YAML.to_owned(), install_yaml(&settings)?)];
    for file in chart_files(&settings)? {
        files.push((format!("{CHART_DIR}/{}", file.path), file.contents));
    }
    Ok(files)
}

/// Files under `dir`, relative to the crate, recursively.
fn files_under(dir: &Path, found: &mut Vec<String>) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files_under(&path, found)?;
        } else if let Ok(relative) = path.strip_prefix(env!("CARGO_MANIFEST_DIR")) {
            found.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

#[test]
fn checked_in_deploy_files_are_what_the_code_generates() -> TestResult {
    let generated = generated_files()?;
    let mut on_disk = Vec::new();
    files_under(&crate_path(CHART_DIR), &mut on_disk)?;
    let strays: Vec<&String> = on_disk.iter().filter(|path| !generated.iter().any(|(p, _)| p == *path)).collect();

    if std::env::var(BLESS).is_ok_and(|value| value == "1") {
        for stray in strays {
            std::fs::remove_file(crate_path(stray))?;
        }
        for (path, contents) in &generated {
            let path = crate_path(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, contents)?;
        }
        return Ok(());
    }

    let mut stale: Vec<String> = strays.iter().map(|path| format!("{path} (not generated)")).collect();
    for (path, contents) in &generated {
        match std::fs::read_to_string(crate_path(path)) {
            Ok(checked_in) if checked_in == *contents => {}
            Ok(checked_in) => {
                let line = checked_in.lines().zip(contents.lines()).position(|(old, new)| old != new);
                stale.push(match line {
                    Some(line) => format!("{path} (first difference at line {})", line + 1),
                    None => format!("{path} (differs in length)"),
                });
            }
            Err(_) => stale.push(format!("{path} (missing)")),
        }
    }
    assert!(
        stale.is_empty(),
        "the deploy files are stale: {stale:#?}\nregenerate them with `{BLESS}=1 cargo test --test deploy`"
    );
    Ok(())
}

/// Parses `document` as `K` and checks serializing it back gives the same document, so no
/// field is unknown to the Kubernetes type (a typo would be dropped by the API server).
fn typed<K: DeserializeOwned + Serialize>(document: &Value) -> Result<(), Box<dyn Error>> {
    let object: K = serde_json::from_value(document.clone())?;
    assert_eq!(&serde_json::to_value(&object)?, document, "{} does not round-trip", document["kind"]);
    Ok(())
}

#[test]
fn install_yaml_is_the_crds_then_the_operator_as_typed_kubernetes_objects() -> TestResult {
    // The generated text, which the first test holds equal to the file (reading the file would
    // race with that test's rewrite under GAA_BLESS).
    let documents: Vec<Value> = serde_saphyr::from_multiple(&install_yaml(&Settings::default())?)?;
    let mut kinds = Vec::new();
    for document in &documents {
        let kind = document["kind"].as_str().unwrap_or_default();
        match kind {
            "CustomResourceDefinition" => typed::<CustomResourceDefinition>(document)?,
            "Namespace" => typed::<Namespace>(document)?,
            "ServiceAccount" => typed::<ServiceAccount>(document)?,
            "ClusterRole" => typed::<ClusterRole>(document)?,
            "ClusterRoleBinding" => typed::<ClusterRoleBinding>(document)?,
            "Deployment" => typed::<Deployment>(document)?,
            other => return Err(format!("unexpected kind {other:?} in {INSTALL_YAML}").into()),
        }
        kinds.push(kind);
    }
    assert_eq!(
        kinds,
        [
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
        ]
    );
    Ok(())
}
