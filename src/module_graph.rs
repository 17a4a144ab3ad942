//! A test of the crate's shape: the modules form a layered graph, no import cycles. Cycles
//! creep in one convenient `crate::x::y` at a time and make every later change touch more
//! modules, so the rule is checked with the tests rather than remembered.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use petgraph::graph::DiGraph;

/// Each top-level module (a file in src/, or a directory with its files) and the modules its
/// code names as `crate::<module>`.
fn dependencies(src: &Path) -> BTreeMap<String, Vec<String>> {
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut files = Vec::new();
    for entry in fs::read_dir(src).expect("src/ is readable").flatten() {
        let path = entry.path();
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if path.is_dir() {
            for inner in fs::read_dir(&path)
                .expect("module dir is readable")
                .flatten()
            {
                files.push((name.clone(), inner.path()));
            }
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            files.push((name, path));
        }
    }
    for (module, path) in files {
        let text = fs::read_to_string(&path).expect("source is readable");
        let used = graph.entry(module.clone()).or_default();
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            if !name.is_empty() && name != module && !used.contains(&name) {
                used.push(name);
            }
        }
    }
    graph
}

#[test]
fn modules_import_each_other_without_cycles() {
    let graph = dependencies(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.len() > 20, "found only {:?}", graph.keys());
    let mut dag = DiGraph::<&str, ()>::new();
    let nodes: BTreeMap<&str, _> = graph
        .keys()
        .map(|m| (m.as_str(), dag.add_node(m)))
        .collect();
    for (module, used) in &graph {
        for other in used {
            if let Some(&to) = nodes.get(other.as_str()) {
                dag.add_edge(nodes[module.as_str()], to, ());
            }
        }
    }
    let cycles: Vec<Vec<&str>> = petgraph::algo::tarjan_scc(&dag)
        .into_iter()
        .filter(|component| component.len() > 1)
        .map(|component| component.into_iter().map(|n| dag[n]).collect())
        .collect();
    assert!(
        cycles.is_empty(),
        "modules that import each other: {cycles:?}"
    );
}
