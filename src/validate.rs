//! What users ask about the configuration without running anything: `--list` (languages,
//! variants, modes and their descriptions) and `--validate FILE…` (is my mode file right?).

use std::fmt::Write as _;

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use minijinja::Environment;

use crate::config::Layers;
use crate::error::{did_you_mean, Error, Kind};
use crate::mode::{self, ModeFile};
use crate::template::BUILTINS;
use crate::template::FUNCTIONS;
use crate::text::visible;
use crate::yaml::Document;

/// The layers, then a tree of languages and their variants, then every mode once with the layer
/// it comes from (and the variants it is limited to, when a file is not the one for all).
pub fn list(layers: &Layers) -> String {
    let mut out = String::from("layers (lowest first):\n");
    for layer in layers.layers() {
        let _ = writeln!(out, "  {:<12} {}", layer.name, layer.root.display());
    }
    // Each mode file with the variants it serves, in name order then layer order.
    let mut files: IndexMap<(String, PathBuf), (crate::config::Found, Vec<String>)> =
        IndexMap::new();
    let mut all_variants = Vec::new();
    out.push_str("\nlanguages and variants:\n");
    for language in layers.languages() {
        let settings = crate::language::load(layers, &language, None).unwrap_or_default();
        match settings.description.is_empty() {
            true => {
                let _ = writeln!(out, "  {language}");
            }
            false => {
                let _ = writeln!(out, "  {language}  {}", settings.description);
            }
        }
        let variants = layers.variants(&language);
        let width = variants.iter().map(String::len).max().unwrap_or(0);
        for variant in variants {
            let description = variant_description(layers, &language, &variant);
            let _ = writeln!(out, "    {variant:<width$}  {description}");
            for mode in layers.modes(&language, &variant) {
                if let Some(found) = layers.mode_file(&language, &variant, &mode) {
                    let key = (mode, found.path.clone());
                    let entry = files.entry(key).or_insert((found, Vec::new()));
                    entry.1.push(format!("{language} {variant}"));
                }
            }
            all_variants.push(format!("{language} {variant}"));
        }
    }
    files.sort_keys();
    out.push_str("\nmodes:\n");
    let width = files.keys().map(|(mode, _)| mode.len()).max().unwrap_or(0);
    for ((mode, _), (found, serves)) in &files {
        let _ = write!(
            out,
            "  {mode:<width$}  {}  [{}",
            mode_description(&found.path),
            found.layer
        );
        if serves.len() < all_variants.len() {
            let _ = write!(out, "; {}", serves.join(", "));
        }
        out.push_str("]\n");
    }
    out
}

/// A mode file's `description`, or how to learn why it cannot be read.
pub fn mode_description(path: &Path) -> String {
    match read_mode_file(path).and_then(|bytes| mode::load(path, &bytes)) {
        // Shown in a terminal: escape sequences in a description are written out, not obeyed.
        Ok(document) => visible(document.value.description.trim()).into_owned(),
        Err(_) => format!(
            "(invalid: run --validate {})",
            visible(&path.display().to_string())
        ),
    }
}

/// The label `org.opencontainers.image.description` (or `description`) of the variant's
/// Dockerfile, which `docker inspect` shows on the image too.
pub fn variant_description(layers: &Layers, language: &str, variant: &str) -> String {
    let dockerfile = Path::new(language)
        .join("services")
        .join(variant)
        .join("Dockerfile");
    let Some(found) = layers.find(&dockerfile) else {
        return "(no Dockerfile)".into();
    };
    let bytes = read_mode_file(&found.path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    // A LABEL instruction may continue over lines ending in a backslash.
    text.replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("LABEL "))
        .find_map(|line| label_value(line.split_once("description=")?.1))
        .map(|value| visible(&value).into_owned())
        .unwrap_or_default()
}

/// The value at the start of `rest`: a double-quoted string or a bare word.
fn label_value(rest: &str) -> Option<String> {
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split_once('"').map(|(value, _)| value.to_owned()),
        None => rest.split_whitespace().next().map(str::to_owned),
    }
}

/// A mode file's bytes: a regular file, read no further than a mode file may be long.
fn read_mode_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    crate::safe_fs::read_limited(path, crate::yaml::MAX_FILE_BYTES)
}

/// Compiles the mode a file defines in the layers in effect (see `lib::validate_in_layers`).
pub type CompileInLayers<'a> = dyn Fn(&Path) -> anyhow::Result<()> + 'a;

/// Checks each file: YAML, types, keys, `needs`, template syntax, and that every variable a
/// template uses exists (a built-in, a language's variable, a `vars` entry, or a `--set`). Every
/// error of every file is reported, not only the first; with `in_layers`, each file is also
/// compiled into the plan its mode makes for a language and variant, which resolves `requires`
/// and `needs` across layers. A `language.yaml` is checked as a language's settings.
pub fn validate_files(
    files: &[PathBuf],
    sets: &IndexMap<String, String>,
    language_vars: &[String],
    in_layers: Option<&CompileInLayers<'_>>,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut errors: Vec<String> = Vec::new();
    for file in files {
        let before = errors.len();
        if file
            .file_name()
            .is_some_and(|n| n == crate::language::FILE_NAME)
        {
            match crate::language::load_file(file) {
                Err(e) => errors.push(error_text(&e)),
                Ok(document) => {
                    let count = document.value.vars.len();
                    let _ = writeln!(out, "{}: ok ({count} language variables)", file.display());
                }
            }
            continue;
        }
        let loaded = read_mode_file(file).and_then(|bytes| mode::load(file, &bytes));
        match loaded {
            Err(e) => errors.push(error_text(&e)),
            Ok(document) => {
                errors.extend(
                    check_templates(file, &document, sets, language_vars)
                        .iter()
                        .map(|e| e.to_string()),
                );
                if errors.len() == before {
                    if let Some(compile) = in_layers {
                        if let Err(e) = compile(file) {
                            errors.push(error_text(&e));
                        }
                    }
                }
                if errors.len() == before {
                    let steps = document.value.steps.len();
                    let _ = writeln!(out, "{}: ok ({steps} steps)", file.display());
                }
            }
        }
    }
    if errors.is_empty() {
        return Ok(out);
    }
    let count = errors.len();
    let mut message = errors.join("\n\nerror: ");
    message.push_str(&format!(
        "\n\n{count} error{} in {} file{}",
        if count == 1 { "" } else { "s" },
        files.len(),
        if files.len() == 1 { "" } else { "s" }
    ));
    // What was fine is said too, on stdout as for a clean run.
    print!("{out}");
    Err(Error::new(Kind::Config, message).into())
}

/// An error as `report` would print it, without its `error: ` head.
fn error_text(error: &anyhow::Error) -> String {
    match error.downcast_ref::<Error>() {
        Some(own) => own.to_string(),
        None => format!("{error:#}"),
    }
}

fn check_templates(
    file: &std::path::Path,
    document: &Document<ModeFile>,
    sets: &IndexMap<String, String>,
    language_vars: &[String],
) -> Vec<Error> {
    let mut errors = Vec::new();
    let env = Environment::new();
    let mode = &document.value;
    let known = |name: &str| {
        BUILTINS.contains(&name)
            || language_vars.iter().any(|v| v == name)
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
            at.extend(field.path.parts());
            checks.push((at, field.source, field.is_expression));
        }
    }
    for (at, source, is_expression) in checks {
        let at_refs: Vec<&str> = at.iter().map(String::as_str).collect();
        let (line, col) = document.positions().value(&at_refs);
        let located =
            |message: String| Error::new(Kind::Config, message).at(file, &document.text, line, col);
        // The chain bound first: minijinja's parser would overflow the stack on a long one.
        let checked = crate::template::check_chains(source, is_expression);
        let undeclared = checked.and_then(|()| match is_expression {
            true => crate::template::compile_expression(&env, source)
                .map(|e| e.undeclared_variables(false)),
            false => env
                .template_from_str(source)
                .map(|t| t.undeclared_variables(false)),
        });
        let undeclared = match undeclared {
            Ok(undeclared) => undeclared,
            Err(e) => {
                errors.push(located(crate::template::describe(&e)));
                continue;
            }
        };
        let mut undeclared: Vec<String> = undeclared.into_iter().collect();
        undeclared.sort();
        for name in undeclared.iter().filter(|name| !known(name)) {
            let col = crate::error::column_within(&document.text, line, col, source, name);
            let mut error = Error::new(
                Kind::Config,
                format!("undefined template variable `{name}`"),
            )
            .at(file, &document.text, line, col);
            let candidates = BUILTINS
                .iter()
                .copied()
                .chain(mode.vars.keys().map(String::as_str))
                .chain(language_vars.iter().map(String::as_str));
            if let Some(s) = did_you_mean(name, candidates) {
                error = error.note(format!("did you mean `{s}`?"));
            }
            errors.push(error.note(
                "define it under `vars:`, in a language's config/language.yaml, or pass \
                 `--set NAME=VALUE`",
            ));
        }
    }
    errors
}
