//! `runner-credentials`: the init container of a runner pod. It copies the registration files of
//! the pod's own ordinal (`runnerSecrets[i]` for pod `<name>-i`) into a memory volume, so the
//! runner container (which runs job code) never holds another runner's credentials.

use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

/// Why the credentials could not be copied. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("pod name {0:?} does not end in a StatefulSet ordinal (`<name>-<n>`)")]
    NoOrdinal(String),
    #[error("pod ordinal {ordinal} has no runner Secret: runnerSecrets names {count}; add Secrets or lower maxRunners")]
    NoSecretForOrdinal { ordinal: usize, count: usize },
    #[error("connecting to the Kubernetes API: {0}")]
    Client(#[source] kube::Error),
    #[error("reading Secret {name}: {source}")]
    Read {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {0} holds no data")]
    Empty(String),
    #[error("Secret {secret} key {key:?} is not a plain file name")]
    BadKey { secret: String, key: String },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The Secret of the pod named `pod` among `secrets`, by the pod's StatefulSet ordinal.
pub fn secret_for_pod<'a>(pod: &str, secrets: &'a [String]) -> Result<&'a str, CredentialsError> {
    let ordinal: usize = pod
        .rsplit_once('-')
        .and_then(|(_, ordinal)| ordinal.parse().ok())
        .ok_or_else(|| CredentialsError::NoOrdinal(pod.to_owned()))?;
    secrets
        .get(ordinal)
        .map(String::as_str)
        .ok_or(CredentialsError::NoSecretForOrdinal { ordinal, count: secrets.len() })
}

/// Writes every key of `secret` as a file in `dir`, readable by its owner only.
pub fn write_files(secret: &Secret, dir: &Path) -> Result<usize, CredentialsError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let data =
        secret.data.as_ref().filter(|data| !data.is_empty()).ok_or_else(|| CredentialsError::Empty(name.clone()))?;
    for (key, value) in data {
        let plain = !key.is_empty() && key != "." && key != ".." && !key.contains('/');
        if !plain {
            return Err(CredentialsError::BadKey { secret: name.clone(), key: key.clone() });
        }
        let path = dir.join(key);
        write_private(&path, &value.0)
            .map_err(|source| CredentialsError::Write { path: path.display().to_string(), source })?;
    }
    Ok(data.len())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(bytes)
}

/// Reads the pod's own Secret through the API and writes its files.
pub async fn run(pod: &str, secrets: &[String], dir: &Path) -> Result<(), CredentialsError> {
    let name = secret_for_pod(pod, secrets)?;
    let client = kube::Client::try_default().await.map_err(CredentialsError::Client)?;
    let api: Api<Secret> = Api::default_namespaced(client);
    let secret = api.get(name).await.map_err(|source| CredentialsError::Read { name: name.to_owned(), source })?;
    let files = write_files(&secret, dir)?;
    tracing::info!(secret = name, files, "runner credentials in place");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn each_pod_gets_the_secret_of_its_own_ordinal() {
        let secrets = names(&["web-0", "web-1", "web-2"]);
        assert_eq!(secret_for_pod("web-runner-0", &secrets).unwrap(), "web-0");
        assert_eq!(secret_for_pod("web-runner-2", &secrets).unwrap(), "web-2");
    }

    #[test]
    fn a_pod_beyond_the_registered_runners_is_told_what_to_fix() {
        let error = secret_for_pod("web-3", &names(&["web-0"])).unwrap_err();
        assert!(error.to_string().contains("ordinal 3 has no runner Secret"), "{error}");
        assert!(matches!(secret_for_pod("web", &names(&["web-0"])), Err(CredentialsError::NoOrdinal(_))));
    }

    #[test]
    fn files_are_written_private_and_path_tricks_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secret = |pairs: &[(&str, &str)]| Secret {
            metadata: ObjectMeta { name: Some("web-0".into()), ..ObjectMeta::default() },
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Secret::default()
        };
        let written = write_files(&secret(&[(".runner", "{}"), (".credentials", "c")]), dir.path()).unwrap();
        assert_eq!(written, 2);
        let mode = std::fs::metadata(dir.path().join(".credentials")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(dir.path().join(".runner")).unwrap(), "{}");
        assert!(matches!(write_files(&secret(&[("..", "x")]), dir.path()), Err(CredentialsError::BadKey { .. })));
        assert!(matches!(write_files(&secret(&[]), dir.path()), Err(CredentialsError::Empty(_))));
    }
}
