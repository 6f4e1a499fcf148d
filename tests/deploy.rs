//! The install manifests in `deploy/`: the checked-in files are what the code generates, the
//! Helm chart rendered with its default values is exactly `install.yaml`, and `install.yaml`
//! parses into typed Kubernetes objects without losing a field.
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

/// Looks up a dotted path (`resources.requests.cpu`) in the chart's values.
fn value_at<'a>(values: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(values, |value, key| value.get(key))
}

/// What `helm template` does with the chart's templates, for the one kind of placeholder the
/// chart uses: `{{ .Values.path }}` becomes the value's text. Anything else is an error.
fn render(template: &str, values: &Value) -> Result<String, String> {
    let mut rendered = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        rendered.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| format!("unclosed placeholder at {:?}", &rest[start..]))?;
        let expression = after[..end].trim();
        let path = expression.strip_prefix(".Values.").ok_or_else(|| format!("unsupported template {expression:?}"))?;
        match value_at(values, path) {
            Some(Value::String(text)) => rendered.push_str(text),
            Some(value @ (Value::Number(_) | Value::Bool(_))) => rendered.push_str(&value.to_string()),
            other => return Err(format!("{expression}: values.yaml has {other:?}, not a scalar")),
        }
        rest = &after[end + 2..];
    }
    rendered.push_str(rest);
    if rendered.contains("{{") {
        return Err("a placeholder is left after rendering".into());
    }
    Ok(rendered)
}

#[test]
fn the_chart_rendered_with_its_default_values_is_install_yaml() -> TestResult {
    let files = chart_files(&Settings::default())?;
    let file = |path: &str| {
        files.iter().find(|file| file.path == path).map(|file| file.contents.clone()).ok_or(format!("no {path}"))
    };
    let values: Value = serde_saphyr::from_str(&file("values.yaml")?)?;
    let mut chart = file("crds/runner.devjoes.com.yaml")?;
    for template in files.iter().filter(|file| file.path.starts_with("templates/")) {
        chart.push_str(&render(&template.contents, &values).map_err(|e| format!("{}: {e}", template.path))?);
    }
    let rendered_dir = crate_path("target/chart-rendered");
    std::fs::create_dir_all(&rendered_dir)?;
    std::fs::write(rendered_dir.join("chart.yaml"), &chart)?;

    let from_chart: Vec<Value> = serde_saphyr::from_multiple(&chart)?;
    let install: Vec<Value> = serde_saphyr::from_multiple(&install_yaml(&Settings::default())?)?;
    assert_eq!(from_chart.len(), install.len());
    for (chart_object, install_object) in from_chart.iter().zip(&install) {
        assert_eq!(chart_object, install_object, "the chart and install.yaml differ");
    }
    Ok(())
}

#[test]
fn rendering_refuses_anything_but_a_values_placeholder() -> TestResult {
    let values: Value = serde_saphyr::from_str("image: a\nresources:\n  cpu: 1m\n")?;
    assert_eq!(render("x: \"{{ .Values.resources.cpu }}\"", &values)?, "x: \"1m\"");
    assert!(render("x: {{ .Release.Name }}", &values).is_err());
    assert!(render("x: {{ .Values.missing }}", &values).is_err());
    assert!(render("x: {{ .Values.resources }}", &values).is_err());
    assert!(render("x: {{ .Values.image", &values).is_err());
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
