//! What users ask about the configuration without running anything: `--list` (languages,
//! variants, modes and their descriptions) and `--validate FILE…` (is my mode file right?).

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use indexmap::IndexMap;
use minijinja::Environment;

use crate::config::Layers;
use crate::error::{did_you_mean, Error, Kind};
use crate::mode::{self, ModeFile};
use crate::plan::BUILTINS;
use crate::template::FUNCTIONS;
use crate::yaml::Document;

pub fn list(layers: &Layers) -> String {
    let mut out = String::from("layers (lowest first):\n");
    for layer in layers.layers() {
        let _ = writeln!(out, "  {:<12} {}", layer.name, layer.root.display());
    }
    for language in layers.languages() {
        let _ = writeln!(out, "\n{language}");
        for variant in layers.variants(&language) {
            let _ = writeln!(out, "  {variant}");
            for mode in layers.modes(&language, &variant) {
                let Some(found) = layers.mode_file(&language, &variant, &mode) else {
                    continue;
                };
                let description = match fs::read(&found.path)
                    .map_err(anyhow::Error::from)
                    .and_then(|bytes| mode::load(&found.path, &bytes))
                {
                    Ok(document) => document.value.description.trim().to_owned(),
                    Err(_) => format!("(invalid: run --validate {})", found.path.display()),
                };
                let _ = writeln!(out, "    {mode:<10} {description}  [{}]", found.layer);
            }
        }
    }
    out
}

/// Checks each file: YAML, types, keys, `needs`, template syntax, and that every variable a
/// template uses exists (a built-in, a `vars` entry, or a `--set`).
pub fn validate_files(
    files: &[PathBuf],
    sets: &IndexMap<String, String>,
) -> anyhow::Result<String> {
    let mut out = String::new();
    for file in files {
        let bytes = fs::read(file)
            .map_err(|e| Error::new(Kind::Config, format!("{}: {e}", file.display())))?;
        let document = mode::load(file, &bytes)?;
        check_templates(file, &document, sets)?;
        let _ = writeln!(
            out,
            "{}: ok ({} steps)",
            file.display(),
            document.value.steps.len()
        );
    }
    Ok(out)
}

fn check_templates(
    file: &std::path::Path,
    document: &Document<ModeFile>,
    sets: &IndexMap<String, String>,
) -> anyhow::Result<()> {
    let env = Environment::new();
    let mode = &document.value;
    let known = |name: &str| {
        BUILTINS.contains(&name)
            || name == "base_image"
            || FUNCTIONS.contains(&name)
            || mode.vars.contains_key(name)
            || sets.contains_key(name)
    };
    let mut checks: Vec<(Vec<String>, &str, bool)> = Vec::new();
    let path = |parts: &[&str]| parts.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
    if let Some(when) = &mode.when {
        checks.push((path(&["when"]), when, true));
    }
    for (key, value) in &mode.vars {
        checks.push((path(&["vars", key]), value, false));
    }
    for (id, step) in &mode.steps {
        for field in step.templates() {
            let mut at = path(&["steps", id]);
            at.extend(field.path);
            checks.push((at, field.source, field.is_expression));
        }
    }
    for (at, source, is_expression) in checks {
        let at_refs: Vec<&str> = at.iter().map(String::as_str).collect();
        let (line, col) = document.positions().value(&at_refs);
        let located =
            |message: String| Error::new(Kind::Config, message).at(file, &document.text, line, col);
        let undeclared = if is_expression {
            crate::template::compile_expression(&env, source).map(|e| e.undeclared_variables(false))
        } else {
            env.template_from_str(source)
                .map(|t| t.undeclared_variables(false))
        }
        .map_err(|e| located(crate::template::describe(&e)))?;
        let mut undeclared: Vec<String> = undeclared.into_iter().collect();
        undeclared.sort();
        if let Some(name) = undeclared.iter().find(|name| !known(name)) {
            let mut error = located(format!("undefined template variable `{name}`"));
            let candidates = BUILTINS
                .iter()
                .copied()
                .chain(mode.vars.keys().map(String::as_str))
                .chain(["base_image"]);
            if let Some(s) = did_you_mean(name, candidates) {
                error = error.note(format!("did you mean `{s}`?"));
            }
            return Err(error
                .note("define it under `vars:` or pass `--set NAME=VALUE`")
                .into());
        }
    }
    Ok(())
}
