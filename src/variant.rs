//! The parts of a variant that its plan uses: the Dockerfile below `services/<variant>/` and the
//! files below `hosts/<variant>/` (the scripts steps run as `/data/NAME`, the inputs they hash).
//!
//! Checked on the rendered steps, before fingerprints and before anything runs, so a half-made
//! variant is named at once and whole, with the same message for `--plan`, `--plan --offline`
//! and a run, instead of one missing file per try or an `exec /data/single failed` at run time.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use crate::config::Layers;
use crate::error::{Error, Kind};
use crate::plan::Step;

/// Where the variant's part directories live inside containers, by convention of the modes.
const DATA: &str = "/data/";

/// The directory `paths.<kind>` stands for when no layer has it: where the highest layer would
/// hold it, so that plans still compile and `check` can name what is missing.
pub fn absent_dir(layers: &Layers, relative: &Path) -> Option<PathBuf> {
    layers
        .layers()
        .last()
        .map(|layer| layer.root.join(relative))
}

/// Fails when a step of the plan uses a part of the variant that no layer has, listing every
/// such file once with the modes that use it.
pub fn check(
    steps: &[Step],
    paths: &serde_json::Map<String, serde_json::Value>,
    layers: &Layers,
    language: &str,
    variant: &str,
    command: &[String],
) -> anyhow::Result<()> {
    let dir = |kind: &str| paths.get(kind).and_then(|v| v.as_str());
    let (hosts, services) = (dir("hosts").map(PathBuf::from), dir("services"));
    // Relative to the language directory, e.g. `hosts/minimal/single`, with the modes using it.
    let mut missing: IndexMap<String, (Problem, Vec<String>)> = IndexMap::new();
    let mut note = |file: String, problem: Problem, mode: &str| {
        let modes = &mut missing.entry(file).or_insert((problem, Vec::new())).1;
        if !modes.iter().any(|m| m == mode) {
            modes.push(mode.to_owned());
        }
    };
    for step in steps {
        if let Some(services) = services {
            let uses = step
                .argv
                .iter()
                .chain(&step.inputs)
                .any(|arg| is_within(arg, services));
            if uses && !Path::new(services).join("Dockerfile").is_file() {
                note(
                    format!("services/{variant}/Dockerfile"),
                    Problem::Missing,
                    &step.mode,
                );
            }
        }
        let Some(hosts) = &hosts else { continue };
        let ready = step.ready.iter().flat_map(|r| r.command.iter());
        // The user's COMMAND may name any path (`single cat /data/notes`); only the modes' own
        // arguments promise a script of the variant.
        let own = step.argv.iter().filter(|a| !command.contains(a));
        for script in own.chain(ready).filter_map(|a| script_name(a)) {
            let path = hosts.join(script);
            let problem = if !path.is_file() {
                Problem::Missing
            } else if !crate::tree::is_executable(&path) {
                Problem::NotExecutable
            } else {
                continue;
            };
            note(format!("hosts/{variant}/{script}"), problem, &step.mode);
        }
        for input in &step.inputs {
            let path = Path::new(input);
            if let Ok(inner) = path.strip_prefix(hosts) {
                if !path.exists() {
                    let file = format!("hosts/{variant}/{}", inner.display());
                    note(file, Problem::Missing, &step.mode);
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let mut message = format!("{language} variant `{variant}` lacks files its modes use:");
    for (file, (problem, modes)) in &missing {
        let what = match problem {
            Problem::Missing => "missing",
            Problem::NotExecutable => "not executable",
        };
        message.push_str(&format!(
            "\n    {language}/{file}  ({what}; used by {})",
            modes.join(", ")
        ));
    }
    let looked: Vec<String> = layers
        .layers()
        .iter()
        .map(|l| format!("{} ({})", l.name, l.root.display()))
        .collect();
    Err(Error::new(Kind::Config, message)
        .note(format!("looked in every layer: {}", looked.join(", ")))
        .note("docs/MODES.md, \"A new variant\", lists the files a variant has")
        .into())
}

enum Problem {
    Missing,
    NotExecutable,
}

/// Whether `arg` names `dir` or something below it (`--volume=DIR:/data:ro` included). Most
/// arguments do not contain `dir` at all, and the byte scan says so without preparing a
/// searcher per argument (10,000 steps made that a tenth of planning).
fn is_within(arg: &str, dir: &str) -> bool {
    if !crate::text::contains(arg, dir) {
        return false;
    }
    arg.match_indices(dir).any(|(at, _)| {
        let before = &arg[..at];
        let after = &arg[at + dir.len()..];
        (before.is_empty() || before.ends_with('='))
            && (after.is_empty() || after.starts_with(['/', ':']))
    })
}

/// `NAME` of an argument that is exactly `/data/NAME`: a file of the variant's hosts directory.
fn script_name(arg: &str) -> Option<&str> {
    let name = arg.strip_prefix(DATA)?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_directories_and_scripts_in_arguments() {
        let dir = "/l/python/services/web";
        assert!(is_within("/l/python/services/web", dir));
        assert!(is_within("--volume=/l/python/services/web:/data:ro", dir));
        assert!(is_within("/l/python/services/web/Dockerfile", dir));
        assert!(!is_within("/l/python/services/webby", dir));
        assert_eq!(script_name("/data/single"), Some("single"));
        assert_eq!(script_name("/data/"), None);
        assert_eq!(script_name("/data/a/b"), None);
        assert_eq!(script_name("/database"), None);
    }
}
