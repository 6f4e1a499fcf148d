//! The shape of the house, checked: no two top-level modules of the product import each other,
//! directly or around a loop, and the leaves (`config`, `clock`, `demand`) import nothing of ours.
//! Reads the `crate::` paths of every file under `src/` (test modules left out), so it needs no
//! tool beyond `cargo test`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules that must import nothing else of the product.
const LEAVES: [&str; 3] = ["config", "clock", "demand"];

/// One `crate::` reference: which top-level module it names, and where.
struct Edge {
    to: String,
    at: String,
}

/// The top-level module a file under `src/` belongs to; `None` for the crate roots.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).expect("a file under src/");
    let first = relative.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (name != "main" && name != "lib").then_some(name)
}

/// The source with every `#[cfg(test)]` item (a test module or function) cut out.
fn without_tests(source: &str) -> String {
    let mut kept = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(at) = rest.find("#[cfg(test)]") {
        kept.push_str(&rest[..at]);
        let after = &rest[at..];
        // The item ends at the brace closing its first block, or at the first `;` before any brace.
        let (Some(open), semicolon) = (after.find('{'), after.find(';')) else {
            rest = "";
            break;
        };
        if semicolon.is_some_and(|s| s < open) {
            rest = &after[semicolon.unwrap_or(open) + 1..];
            continue;
        }
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    kept.push_str(rest);
    kept
}

/// Every top-level module a `crate::` path in the source names, with its line; a group
/// (`crate::{a::X, b}`, over several lines too) names each of its first segments.
fn references(source: &str) -> Vec<(usize, String)> {
    paths_after(source, "crate::")
}

/// Every first segment of a path that starts with `prefix` (`crate::`, `super::`), with its line.
fn paths_after(source: &str, prefix: &str) -> Vec<(usize, String)> {
    let code: String = source.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let ident = |text: &str| -> String { text.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = code[from..].find(prefix) {
        let at = from + offset;
        from = at + prefix.len();
        if code[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let tail = &code[from..];
        if let Some(group) = tail.strip_prefix('{') {
            // First segments of the group's members: names at depth 0, after `{` or `,`.
            let (mut depth, mut expecting) = (0usize, true);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expecting = true,
                    c if expecting && (c.is_alphanumeric() || c == '_') => {
                        found.push((line_of(from + 1 + i), ident(&group[i..])));
                        expecting = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(tail);
            if !name.is_empty() {
                found.push((line_of(at), name));
            }
        }
    }
    found
}

fn import_graph() -> BTreeMap<String, Vec<Edge>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = crate::common::rust_sources(&src);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    let mut graph: BTreeMap<String, Vec<Edge>> = modules.iter().map(|m| (m.clone(), Vec::new())).collect();
    for file in &files {
        let Some(from) = module_of(&src, file) else { continue };
        let source = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        for (line, to) in references(&without_tests(&source)) {
            if to != from && modules.contains(&to) {
                let at = format!("{}:{line}", file.strip_prefix(&src).unwrap_or(file).display());
                graph.get_mut(&from).expect("every module is a node").push(Edge { to, at });
            }
        }
    }
    graph
}

/// Within each top-level module, which of its submodules (`store::shared`, `store::writer`)
/// name which siblings, through `super::` or `crate::<module>::`. `mod.rs` is left out: it
/// declares and re-exports its children, and they may use what it re-exports.
fn submodule_graph() -> BTreeMap<String, Vec<Edge>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = crate::common::rust_sources(&src);
    let submodule = |file: &Path| -> Option<(String, String, bool)> {
        let parts: Vec<String> = file
            .strip_prefix(&src)
            .ok()?
            .components()
            .map(|c| c.as_os_str().to_string_lossy().trim_end_matches(".rs").to_owned())
            .collect();
        match parts.as_slice() {
            [top, sub] if sub != "mod" => Some((top.clone(), sub.clone(), true)),
            [top, sub, ..] => Some((top.clone(), sub.clone(), false)),
            _ => None,
        }
    };
    let nodes: BTreeSet<(String, String)> = files.iter().filter_map(|f| submodule(f)).map(|(t, s, _)| (t, s)).collect();
    let mut graph: BTreeMap<String, Vec<Edge>> = nodes.iter().map(|(t, s)| (format!("{t}::{s}"), Vec::new())).collect();
    for file in &files {
        let Some((top, sub, direct)) = submodule(file) else { continue };
        let source =
            without_tests(&std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display())));
        let mut named = paths_after(&source, &format!("crate::{top}::"));
        if direct {
            named.extend(paths_after(&source, "super::"));
        }
        for (line, sibling) in named {
            if sibling != sub && nodes.contains(&(top.clone(), sibling.clone())) {
                let at = format!("{}:{line}", file.strip_prefix(&src).unwrap_or(file).display());
                graph
                    .get_mut(&format!("{top}::{sub}"))
                    .expect("a node")
                    .push(Edge { to: format!("{top}::{sibling}"), at });
            }
        }
    }
    graph
}

/// The strongly connected components of more than one module (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, Vec<Edge>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, Vec<Edge>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, node: &'a str) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            self.on_stack.insert(node);
            for edge in &self.graph[node] {
                let next = edge.to.as_str();
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(member) = self.stack.pop() {
                    self.on_stack.remove(member);
                    component.push(member.to_owned());
                    if member == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !walk.index.contains_key(node.as_str()) {
            walk.visit(node);
        }
    }
    walk.found
}

/// Each cycle, with the lines that close it.
fn explain(graph: &BTreeMap<String, Vec<Edge>>) -> Vec<String> {
    cycles(graph)
        .iter()
        .map(|component| {
            let edges: Vec<String> = component
                .iter()
                .flat_map(|from| {
                    graph[from]
                        .iter()
                        .filter(|e| component.contains(&e.to))
                        .map(move |e| format!("    {from} -> {} ({})", e.to, e.at))
                })
                .collect();
            format!("  {}:\n{}", component.join(", "), edges.join("\n"))
        })
        .collect()
}

#[test]
fn no_two_product_modules_import_each_other_around_a_loop() {
    let found = explain(&import_graph());
    assert!(found.is_empty(), "import cycles between top-level modules:\n{}", found.join("\n"));
}

#[test]
fn no_two_submodules_of_a_module_import_each_other_around_a_loop() {
    let found = explain(&submodule_graph());
    assert!(found.is_empty(), "import cycles inside a module:\n{}", found.join("\n"));
}

#[test]
fn the_leaf_modules_import_nothing_of_the_product() {
    let graph = import_graph();
    for leaf in LEAVES {
        let Some(edges) = graph.get(leaf) else { continue };
        let named: Vec<String> = edges.iter().map(|e| format!("{} ({})", e.to, e.at)).collect();
        assert!(named.is_empty(), "{leaf} must be a leaf but imports {}", named.join(", "));
    }
}

#[test]
fn the_checker_sees_a_planted_cycle_and_skips_test_code() {
    let source = "use crate::store::Board;\nfn f() { crate::webhook::go(); }\n\
                  #[cfg(test)]\nmod tests { use crate::serve::AppState; }\n";
    let names: Vec<String> = references(&without_tests(source)).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, ["store", "webhook"]);
    let grouped = references("use crate::{\n    demand::{job, Job},\n    store, // a comment: crate::serve\n};");
    assert_eq!(grouped, [(2, "demand".to_owned()), (3, "store".to_owned())]);
    let edge = |to: &str| Edge { to: to.into(), at: String::new() };
    let graph: BTreeMap<String, Vec<Edge>> = [
        ("a".to_owned(), vec![edge("b")]),
        ("b".to_owned(), vec![edge("c")]),
        ("c".to_owned(), vec![edge("a")]),
        ("d".to_owned(), vec![edge("a")]),
    ]
    .into_iter()
    .collect();
    assert_eq!(cycles(&graph), [["a", "b", "c"]]);
}
