//! The manifest loader (`serve --manifests`, `render -f`): YAML streams of ScaledActionRunner,
//! ScaledActionRunnerCore, Secret and ConfigMap documents, then what `serve` and `render` make of
//! them. A loaded resource, as the Kubernetes API prints it, loads back unchanged, and what
//! `render` prints reads back as the objects it rendered.
#![no_main]

use std::path::Path;

use gaa::catalog::Catalog;
use gaa::manifests::Manifests;
use gaa::operator::render::{render, to_yaml};
use gaa::operator::{Child, Settings};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde_json::Value;

/// `object` as the Kubernetes API writes it (`kubectl get -o json`), loaded again, alone.
fn reload<T: Serialize>(object: &T) -> Manifests {
    let json = serde_json::to_string_pretty(object).expect("a loaded object prints as JSON");
    let mut again = Manifests::default();
    again.add_file(Path::new("again.json"), &json);
    assert!(again.problems.is_empty(), "{:?} in\n{json}", again.problems);
    again
}

fuzz_target!(|bytes: &[u8]| {
    // Files are read as UTF-8 text: anything else is refused before the loader sees it.
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let mut manifests = Manifests::default();
    manifests.add_file(Path::new("fuzz.yaml"), text);
    assert!(manifests.problems.iter().all(|problem| problem.source.document >= 1));

    for runner in &manifests.runners {
        let again = reload(&runner.object);
        assert_eq!(again.runners.len(), 1);
        assert_eq!(again.runners[0].object, runner.object);
    }
    for core in &manifests.cores {
        let again = reload(&core.object);
        assert_eq!(again.cores.len(), 1);
        assert_eq!(again.cores[0].object, core.object);
    }

    // What `serve` builds from them.
    let (catalog, problems) = Catalog::build(
        manifests.runners.iter().map(|loaded| &loaded.object),
        manifests.secrets.iter().map(|loaded| &loaded.object),
        None,
    );
    assert!(problems.iter().all(|(position, _)| *position < manifests.runners.len()));
    assert!(catalog.runners.len() <= manifests.runners.len());

    // What `render` prints.
    let rendered = render(&manifests, &Settings::default());
    let yaml = to_yaml(&rendered.children).expect("rendered objects print as YAML");
    let reread: Vec<Value> = serde_saphyr::from_multiple(&yaml).expect("rendered YAML reads back");
    let children: Vec<Value> = rendered.children.iter().map(Child::to_value).collect();
    assert_eq!(reread, children, "{yaml}");
});
