//! A test of the crate's shape: the modules form a layered graph, no import cycles. Cycles
//! creep in one convenient `crate::x::y` or `super::y` at a time and make every later change
//! touch more modules, so the rule is checked with the tests rather than remembered.
//!
//! Two levels are checked. Top-level modules (a file in src/, or a directory with its files)
//! and the modules their code names as `crate::<module>`; and, inside a directory module, its
//! files (`exec::dispatch`) and the siblings they name as `super::<file>` or
//! `crate::<dir>::<file>`. A file naming an item of its own parent (`super::Options`, declared
//! in mod.rs) is not an edge: the parent declares its children and their shared items, so
//! that is how a directory module is built, not a circle between its parts.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use petgraph::graph::DiGraph;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The names a path names right after `prefix`: the `y` of `prefix y::…`, or the first name of
/// each item of a group `prefix{y::Y, z}`. Only lower-case names: modules, not types.
fn names_after(text: &str, prefix: &str) -> Vec<String> {
    let first_name = |item: &str| -> String {
        item.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
            .collect()
    };
    let mut names = Vec::new();
    for (at, _) in text.match_indices(prefix) {
        let rest = &text[at + prefix.len()..];
        let Some(group) = rest.strip_prefix('{') else {
            names.push(first_name(rest));
            continue;
        };
        let (mut depth, mut item) = (0, 0);
        for (index, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    names.push(first_name(&group[item..index]));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    names.push(first_name(&group[item..index]));
                    item = index + 1;
                }
                _ => {}
            }
        }
    }
    names.retain(|name| !name.is_empty());
    names
}

/// The `.rs` files directly in `dir`, by stem.
fn rust_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut files: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .expect("source dir is readable")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .map(|path| {
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            (stem.into_owned(), path)
        })
        .collect();
    files.sort();
    files
}

/// Both levels of the graph of the crate at `src`: top-level modules by name, the files of a
/// directory module as `dir::file`.
fn dependencies(src: &Path) -> Graph {
    let mut graph = Graph::new();
    let mut top: Vec<(String, PathBuf)> = rust_files(src)
        .into_iter()
        .filter(|(name, _)| name != "lib" && name != "main")
        .collect();
    let mut dirs: Vec<(String, PathBuf)> = fs::read_dir(src)
        .expect("src/ is readable")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .map(|path| {
            (
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                path,
            )
        })
        .collect();
    dirs.sort();
    for (dir, path) in &dirs {
        let files = rust_files(path);
        let siblings: BTreeSet<&str> = files.iter().map(|(stem, _)| stem.as_str()).collect();
        for (stem, file) in &files {
            top.push((dir.clone(), file.clone()));
            if stem == "mod" {
                continue;
            }
            let text = fs::read_to_string(file).expect("source is readable");
            let used = graph.entry(format!("{dir}::{stem}")).or_default();
            let named = names_after(&text, "super::")
                .into_iter()
                .chain(names_after(&text, &format!("crate::{dir}::")));
            for name in named {
                if siblings.contains(name.as_str()) && name != "mod" && &name != stem {
                    used.insert(format!("{dir}::{name}"));
                }
            }
        }
    }
    for (module, path) in top {
        let text = fs::read_to_string(&path).expect("source is readable");
        let used = graph.entry(module.clone()).or_default();
        for name in names_after(&text, "crate::") {
            if name != module {
                used.insert(name);
            }
        }
    }
    graph
}

/// The groups of modules that import each other, each sorted.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut dag = DiGraph::<&str, ()>::new();
    let nodes: BTreeMap<&str, _> = graph
        .keys()
        .map(|m| (m.as_str(), dag.add_node(m)))
        .collect();
    for (module, used) in graph {
        for other in used {
            if let Some(&to) = nodes.get(other.as_str()) {
                dag.add_edge(nodes[module.as_str()], to, ());
            }
        }
    }
    let mut found: Vec<Vec<String>> = petgraph::algo::tarjan_scc(&dag)
        .into_iter()
        .filter(|component| component.len() > 1)
        .map(|component| {
            let mut names: Vec<String> = component.into_iter().map(|n| dag[n].to_owned()).collect();
            names.sort();
            names
        })
        .collect();
    found.sort();
    found
}

#[test]
fn modules_import_each_other_without_cycles() {
    let graph = dependencies(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.len() > 20, "found only {:?}", graph.keys());
    assert!(
        graph.contains_key("exec::dispatch") && graph["exec::step"].contains("exec::output"),
        "the files of a directory module are followed: {graph:?}"
    );
    let cycles = cycles(&graph);
    assert!(
        cycles.is_empty(),
        "modules that import each other: {cycles:?}"
    );
}

#[test]
fn a_cycle_through_super_is_found() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let src = root.path();
    let write = |path: &str, text: &str| {
        let path = src.join(path);
        fs::create_dir_all(path.parent().expect("a parent")).expect("a directory");
        fs::write(path, text).expect("a file");
    };
    write("lib.rs", "mod a;\nmod d;\n");
    write("a.rs", "use crate::d::Shared;\n");
    write("d/mod.rs", "mod x;\nmod y;\nmod z;\npub struct Shared;\n");
    write("d/x.rs", "use super::y::Y;\npub struct X;\n");
    write("d/y.rs", "use super::{x::X, Shared};\npub struct Y;\n");
    write("d/z.rs", "use super::Shared;\nuse crate::d::x::X;\n");
    let graph = dependencies(src);
    // `super::Shared` is the parent's item: no edge; `crate::d::x` is a sibling.
    assert_eq!(graph["d::z"], BTreeSet::from(["d::x".to_owned()]));
    assert_eq!(cycles(&graph), [["d::x", "d::y"]]);
}

#[test]
fn grouped_paths_name_each_first_name() {
    assert_eq!(
        names_after(
            "use super::{dispatch::{Event, Stop}, output::failure, Options};",
            "super::"
        ),
        ["dispatch", "output"]
    );
    assert_eq!(names_after("super::walk::Lane", "super::"), ["walk"]);
}
