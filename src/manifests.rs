//! Standalone mode: runners and their Secrets from a directory of the YAML a user would
//! `kubectl apply`. Every bad document is reported with its file and reason; the rest load.

use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde_json::Value;

use crate::crd::{ScaledActionRunner, ScaledActionRunnerCore};

const RUNNER_API_VERSION: &str = "runner.devjoes.com/v1alpha1";

/// Where an object came from: a file and the 1-based document within it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: PathBuf,
    pub document: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.file.display(), self.document)
    }
}

/// A document that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub source: Source,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.reason)
    }
}

#[derive(Clone)]
pub struct Loaded<T> {
    pub object: T,
    pub source: Source,
}

/// Only where the object came from: it may be a Secret.
impl<T> fmt::Debug for Loaded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded").field("source", &self.source).finish_non_exhaustive()
    }
}

/// Everything found in a manifests directory.
#[derive(Default)]
pub struct Manifests {
    pub runners: Vec<Loaded<ScaledActionRunner>>,
    pub secrets: Vec<Loaded<Secret>>,
    /// Only `render` uses these: the core and the ConfigMaps it reads (`serve` ignores them).
    pub cores: Vec<Loaded<ScaledActionRunnerCore>>,
    pub config_maps: Vec<Loaded<ConfigMap>>,
    pub problems: Vec<Problem>,
}

/// Secrets are shown by name only: their data must never reach a log.
impl fmt::Debug for Manifests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret_names: Vec<String> = self
            .secrets
            .iter()
            .map(|s| {
                let meta = &s.object.metadata;
                format!("{}/{}", meta.namespace.as_deref().unwrap_or("default"), meta.name.as_deref().unwrap_or(""))
            })
            .collect();
        f.debug_struct("Manifests")
            .field("runners", &self.runners.len())
            .field("secrets", &secret_names)
            .field("problems", &self.problems)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestsError {
    #[error("reading manifests directory {path}: {source}")]
    ReadDir { path: String, source: std::io::Error },
}

/// Loads every `*.yaml`/`*.yml` file directly in `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<Manifests, ManifestsError> {
    let read_dir_error = |source| ManifestsError::ReadDir { path: dir.display().to_string(), source };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_dir_error)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"))
        .collect();
    files.sort();
    let mut manifests = Manifests::default();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => manifests.add_file(&file, &text),
            Err(e) => manifests.problems.push(Problem {
                source: Source { file: file.clone(), document: 0 },
                reason: format!("cannot read file: {e}"),
            }),
        }
    }
    Ok(manifests)
}

/// Splits a YAML stream at `---` lines, so one broken document cannot hide the others.
fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") || trimmed.starts_with("---\t") {
            docs.push(String::new());
            continue;
        }
        if trimmed == "..." {
            continue;
        }
        if let Some(doc) = docs.last_mut() {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs
}

impl Manifests {
    /// Parses one file's documents into this set.
    pub fn add_file(&mut self, file: &Path, text: &str) {
        for (index, doc) in documents(text).into_iter().enumerate() {
            let source = Source { file: file.to_path_buf(), document: index + 1 };
            if doc.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
                continue;
            }
            if let Err(reason) = self.add_document(&doc, &source) {
                self.problems.push(Problem { source, reason });
            }
        }
    }

    fn add_document(&mut self, doc: &str, source: &Source) -> Result<(), String> {
        let value: Value = serde_saphyr::from_str(doc).map_err(|e| format!("not valid YAML: {e}"))?;
        if value.is_null() {
            return Ok(());
        }
        let kind = value.get("kind").and_then(Value::as_str).ok_or("document has no kind")?;
        let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        match (api_version, kind) {
            (RUNNER_API_VERSION, "ScaledActionRunner") => {
                let runner: ScaledActionRunner =
                    serde_json::from_value(value).map_err(|e| format!("invalid ScaledActionRunner: {e}"))?;
                self.runners.push(Loaded { object: runner, source: source.clone() });
            }
            (RUNNER_API_VERSION, "ScaledActionRunnerCore") => {
                let core: ScaledActionRunnerCore =
                    serde_json::from_value(value).map_err(|e| format!("invalid ScaledActionRunnerCore: {e}"))?;
                self.cores.push(Loaded { object: core, source: source.clone() });
            }
            ("v1", "ConfigMap") => {
                let map: ConfigMap = serde_json::from_value(value).map_err(|e| format!("invalid ConfigMap: {e}"))?;
                self.config_maps.push(Loaded { object: map, source: source.clone() });
            }
            ("v1", "Secret") => {
                let secret: Secret = serde_json::from_value(value).map_err(|e| format!("invalid Secret: {e}"))?;
                self.secrets.push(Loaded { object: secret, source: source.clone() });
            }
            (_, "ScaledActionRunner" | "ScaledActionRunnerCore") => {
                return Err(format!("{kind} must have apiVersion {RUNNER_API_VERSION}, not {api_version:?}"));
            }
            _ => tracing::debug!(%source, kind, "document ignored: not a runner or secret"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_document_is_reported_and_its_neighbours_still_load() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: a, namespace: ci}\nstringData: {webhook-secret: x}\n---\nkind: [unclosed\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: b}\ndata: {webhook-secret: eA==}\n";
        let mut m = Manifests::default();
        m.add_file(Path::new("s.yaml"), text);
        assert_eq!(m.secrets.len(), 2);
        assert_eq!(m.problems.len(), 1);
        assert_eq!(m.problems[0].source.document, 2);
        assert!(m.problems[0].to_string().starts_with("s.yaml (document 2): not valid YAML"), "{}", m.problems[0]);
    }

    #[test]
    fn debug_output_names_secrets_but_never_shows_their_data() {
        let mut m = Manifests::default();
        m.add_file(
            Path::new("s.yaml"),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: hook, namespace: ci}\nstringData: {webhook-secret: hunter2}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: b64}\ndata: {webhook-secret: aHVudGVyMw==}\n",
        );
        let shown = format!("{m:?}");
        assert!(shown.contains("ci/hook") && shown.contains("default/b64"), "{shown}");
        assert!(!shown.contains("hunter2") && !shown.contains("hunter3") && !shown.contains("aHVudGVyMw"), "{shown}");
    }

    #[test]
    fn documents_of_other_kinds_are_skipped_quietly_and_kindless_ones_reported() {
        let mut m = Manifests::default();
        m.add_file(
            Path::new("x.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: ci}\n---\nfoo: bar\n---\n# only a comment\n",
        );
        assert!(m.runners.is_empty() && m.secrets.is_empty());
        assert_eq!(m.problems.len(), 1);
        assert_eq!(m.problems[0].reason, "document has no kind");
    }
}
