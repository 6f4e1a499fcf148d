//! `render`: the objects the operator would apply for custom resources read from files, through
//! the same pure functions as the controllers, offline.

use std::path::Path;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;

use super::core_children::{CoreInputs, core_children, core_warnings};
use super::runner_children::{runner_children, runner_warnings};
use super::{ApiServer, Child, Settings};
use crate::crd::{CORE_NAME, ScaledActionRunnerCore};
use crate::manifests::{Loaded, Manifests};

/// Namespace and name of the ConfigMap holding the API aggregator's front-proxy client CA.
pub const FRONT_PROXY_CA_CONFIG_MAP: (&str, &str) = ("kube-system", "extension-apiserver-authentication");
/// Its key holding that CA.
pub const FRONT_PROXY_CA_KEY: &str = "requestheader-client-ca-file";
/// Key of the core's `sslCertSecret` holding the CA the APIService trusts.
pub const CA_KEY: &str = "ca.crt";

/// What `render` produced: the objects, and what the reader should know about them.
#[derive(Debug, Default)]
pub struct Rendered {
    pub children: Vec<Child>,
    /// Things left out or assumed, one sentence each (printed to standard error).
    pub notes: Vec<String>,
    /// Custom resources that could not be rendered, with the reason.
    pub errors: Vec<String>,
}

/// Reads the files (`-` is standard input) into one set of manifests.
pub fn read_files(files: &[impl AsRef<Path>]) -> Result<Manifests, std::io::Error> {
    let mut manifests = Manifests::default();
    for file in files {
        let file = file.as_ref();
        let text = if file == Path::new("-") {
            std::io::read_to_string(std::io::stdin())?
        } else {
            std::fs::read_to_string(file)
                .map_err(|error| std::io::Error::new(error.kind(), format!("{}: {error}", file.display())))?
        };
        manifests.add_file(file, &text);
    }
    Ok(manifests)
}

/// Every object for the cores and runners in `manifests`, cores first.
pub fn render(manifests: &Manifests, settings: &Settings) -> Rendered {
    let mut rendered = Rendered::default();
    rendered.errors.extend(manifests.problems.iter().map(ToString::to_string));
    let core = manifests.cores.iter().find(|core| core.object.name_any() == CORE_NAME);
    for ignored in manifests.cores.iter().filter(|core| core.object.name_any() != CORE_NAME) {
        rendered.notes.push(format!(
            "{}: ScaledActionRunnerCore {:?} is ignored: only the one named {CORE_NAME:?} is used",
            ignored.source,
            ignored.object.name_any()
        ));
    }
    let api_server = core.map(|core| ApiServer::from_core(&core.object.spec));
    if let Some(core) = core {
        render_core(core, manifests, settings, &mut rendered);
    } else if !manifests.runners.is_empty() {
        rendered.notes.push(format!(
            "no ScaledActionRunnerCore named {CORE_NAME:?} in the input: ScaledObjects and API server access are \
             left out, since they point at the API server it describes"
        ));
    }
    for runner in &manifests.runners {
        let name = runner.object.name_any();
        rendered.notes.extend(
            runner_warnings(&runner.object).into_iter().map(|warning| format!("ScaledActionRunner {name}: {warning}")),
        );
        match runner_children(&runner.object, settings, api_server.as_ref()) {
            Ok(children) => rendered.children.extend(children),
            Err(error) => rendered.errors.push(format!(
                "{}: ScaledActionRunner {}: {error}",
                runner.source,
                runner.object.name_any()
            )),
        }
    }
    rendered
}

fn render_core(core: &Loaded<ScaledActionRunnerCore>, manifests: &Manifests, settings: &Settings, out: &mut Rendered) {
    let spec = &core.object.spec;
    let ca = find_secret(manifests, &spec.api_server_namespace, &spec.ssl_cert_secret).and_then(|secret| {
        let data = secret.data.as_ref().and_then(|data| data.get(CA_KEY)).map(|bytes| bytes.0.clone());
        data.or_else(|| secret.string_data.as_ref()?.get(CA_KEY).map(|text| text.clone().into_bytes()))
    });
    if ca.is_none() {
        out.notes.push(format!(
            "Secret {}/{} (key {CA_KEY}) is not in the input: the APIService is rendered without its caBundle, \
             which the operator fills in from the cluster",
            spec.api_server_namespace, spec.ssl_cert_secret
        ));
    }
    let front_proxy = find_config_map(manifests, FRONT_PROXY_CA_CONFIG_MAP.0, FRONT_PROXY_CA_CONFIG_MAP.1)
        .and_then(|map| map.data.as_ref()?.get(FRONT_PROXY_CA_KEY).cloned());
    if front_proxy.is_none() {
        out.notes.push(format!(
            "ConfigMap {}/{} is not in the input: the front-proxy CA ConfigMap is left out, which the operator \
             mirrors from the cluster",
            FRONT_PROXY_CA_CONFIG_MAP.0, FRONT_PROXY_CA_CONFIG_MAP.1
        ));
    }
    out.notes.extend(
        core_warnings(&core.object).into_iter().map(|warning| format!("ScaledActionRunnerCore {CORE_NAME}: {warning}")),
    );
    let inputs = CoreInputs { ca_bundle: ca.as_deref(), front_proxy_ca: front_proxy.as_deref() };
    match core_children(&core.object, settings, &inputs) {
        Ok(children) => out.children.extend(children),
        Err(error) => out.errors.push(format!("{}: ScaledActionRunnerCore {CORE_NAME}: {error}", core.source)),
    }
}

fn find_secret<'a>(manifests: &'a Manifests, namespace: &str, name: &str) -> Option<&'a Secret> {
    manifests
        .secrets
        .iter()
        .map(|loaded| &loaded.object)
        .find(|secret| secret.name_any() == name && secret.namespace().as_deref() == Some(namespace))
}

fn find_config_map<'a>(manifests: &'a Manifests, namespace: &str, name: &str) -> Option<&'a ConfigMap> {
    manifests
        .config_maps
        .iter()
        .map(|loaded| &loaded.object)
        .find(|map| map.name_any() == name && map.namespace().as_deref() == Some(namespace))
}

/// Why the objects could not be printed.
#[derive(Debug, thiserror::Error)]
#[error("could not render {object} as YAML: {source}")]
pub struct YamlError {
    object: String,
    #[source]
    source: serde_saphyr::ser::Error,
}

/// The objects as one YAML stream, each document starting with `---`. A document the YAML writer
/// would print so that it reads back different (it leaves a trailing space or a leading
/// byte-order mark unquoted, and readers drop them) is printed as JSON, which YAML reads exactly.
pub fn to_yaml(children: &[Child]) -> Result<String, YamlError> {
    let mut yaml = String::new();
    for child in children {
        let value = child.to_value();
        let mut document =
            serde_saphyr::to_string(&value).map_err(|source| YamlError { object: child.describe(), source })?;
        if serde_saphyr::from_str::<serde_json::Value>(&document).ok().as_ref() != Some(&value) {
            document = serde_json::to_string_pretty(&value).expect("a JSON value always prints");
        }
        yaml.push_str("---\n");
        yaml.push_str(&document);
        if !document.ends_with('\n') {
            yaml.push('\n');
        }
    }
    Ok(yaml)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::Value;

    use super::*;

    /// A runner whose image is `image`, a double-quoted YAML scalar.
    fn runner_with_image(image: &str) -> Manifests {
        let mut manifests = Manifests::default();
        manifests.add_file(
            Path::new("runner.yaml"),
            &format!(
                "apiVersion: runner.devjoes.com/v1alpha1\nkind: ScaledActionRunner\nmetadata: {{name: web, namespace: ci}}\n\
                 spec: {{owner: acme, repo: web, maxRunners: 2, runner: {{image: {image}}}}}\n"
            ),
        );
        manifests
    }

    /// What `render` prints for a runner of `image` (quoted YAML), and whether it reads back as
    /// the objects.
    fn printed(image: &str) -> (String, bool) {
        let rendered = render(&runner_with_image(image), &Settings::default());
        assert!(rendered.errors.is_empty(), "{:?}", rendered.errors);
        let yaml = to_yaml(&rendered.children).unwrap();
        let read: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
        let children: Vec<Value> = rendered.children.iter().map(Child::to_value).collect();
        let same = read == children;
        (yaml, same)
    }

    #[test]
    fn what_render_prints_reads_back_as_the_objects_it_rendered() {
        // The YAML writer leaves a trailing space and a leading byte-order mark unquoted, and
        // YAML readers drop both.
        for image in [r#""ghcr.io/acme/runner:2 ""#, r#""\uFEFFghcr.io/acme/runner:2""#] {
            let (yaml, same) = printed(image);
            assert!(same, "{image} printed as\n{yaml}");
        }
        let (yaml, same) = printed(r#""ghcr.io/acme/runner:2""#);
        assert!(same && yaml.contains("\n          image: ghcr.io/acme/runner:2\n"), "plain YAML otherwise:\n{yaml}");
    }
}
