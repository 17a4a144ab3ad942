//! Per-language settings: the variables a language gives every mode (its default base image,
//! where the data volume is mounted, which hosts files `init` depends on, …), so that the modes
//! shared by all languages in `config/` name no language's tools or paths.
//!
//! They live in `<language>/config/language.yaml` and, for one variant,
//! `<language>/config/<variant>/language.yaml`, in any layer. Unlike mode files they merge per
//! variable: a layer that sets only `base_image` keeps every other variable of the layers below.
//! The order is the mode files' one (layer priority first; inside one layer the variant's file
//! after the language's). Above the files, `$HOST_CONTAINER_<LANGUAGE>_<KEY>` sets a variable
//! from the environment (`base_image` also falls back to `$HOST_CONTAINER_BASE_IMAGE`, the one
//! setting for every language), and `--set KEY=VALUE` wins over everything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::Layers;
use crate::error::{Error, LoadErrorKind};
use crate::yaml::{self, Document};

/// The file name of a language's (or a variant's) settings inside `<language>/config/`.
pub const FILE_NAME: &str = "language.yaml";

/// The variable every language should define: the image its Dockerfiles build on.
pub const BASE_IMAGE: &str = "base_image";
/// A PEM bundle on this machine that containers fetching packages trust (company proxies).
pub const CA_BUNDLE: &str = "ca_bundle";

/// One `language.yaml`: a description and the variables it sets.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LanguageFile {
    /// One line shown by `--list` next to the language (in a variant's file it is not shown: a
    /// variant's description is its Dockerfile's `org.opencontainers.image.description` label).
    #[serde(default)]
    pub description: String,
    /// Template variables every mode of this language sees, e.g. `base_image`, `data_mount`.
    /// Plain text, not templates. `--set KEY=VALUE` and
    /// `$HOST_CONTAINER_<LANGUAGE>_<KEY>` override them; a mode's `vars` may not.
    #[serde(default)]
    pub vars: IndexMap<String, String>,
}

/// A variable's value and where it came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    pub value: String,
    /// `python/config/language.yaml (builtin)`, `$HOST_CONTAINER_NODE_BASE_IMAGE`, …
    pub origin: String,
}

/// The merged settings of one language (and variant).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub description: String,
    pub vars: IndexMap<String, Var>,
}

/// The environment variable that sets `key` for `language`: `HOST_CONTAINER_NODE_BASE_IMAGE`.
pub fn env_name(language: &str, key: &str) -> String {
    let upper = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    format!("HOST_CONTAINER_{}_{}", upper(language), upper(key))
}

/// The settings files of a language (and variant) in every layer, lowest priority first.
fn files(layers: &Layers, language: &str, variant: Option<&str>) -> Vec<(PathBuf, String, bool)> {
    let mut found = Vec::new();
    for layer in layers.layers() {
        let config = layer.root.join(language).join("config");
        let mut candidates = vec![(config.join(FILE_NAME), false)];
        if let Some(variant) = variant {
            candidates.push((config.join(variant).join(FILE_NAME), true));
        }
        for (path, is_variant) in candidates {
            if path.is_file() {
                found.push((path, layer.name.clone(), is_variant));
            }
        }
    }
    found
}

/// Reads and checks one settings file.
pub fn load_file(path: &Path) -> anyhow::Result<Document<LanguageFile>> {
    let bytes = crate::safe_fs::read_limited(path, yaml::MAX_FILE_BYTES)?;
    let document = yaml::load::<LanguageFile>(path, &bytes)?;
    for key in document.value.vars.keys() {
        let identifier = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let problem = if !identifier {
            LoadErrorKind::VarNotIdentifier { key: key.clone() }
        } else if crate::template::BUILTINS.contains(&key.as_str()) {
            LoadErrorKind::VarIsBuiltin { key: key.clone() }
        } else if crate::template::FUNCTIONS.contains(&key.as_str()) {
            LoadErrorKind::VarIsFunction { key: key.clone() }
        } else {
            continue;
        };
        let (line, col) = document.positions().key(&["vars", key]);
        return Err(Error::of(problem)
            .at(path, &document.text, line, col)
            .into());
    }
    Ok(document)
}

/// The layer-merged settings of `language` (and `variant`), before the environment and `--set`.
pub fn load(layers: &Layers, language: &str, variant: Option<&str>) -> anyhow::Result<Settings> {
    let mut settings = Settings::default();
    for (path, layer, is_variant) in files(layers, language, variant) {
        let document = load_file(&path)?;
        let file = document.value;
        let relative = path
            .strip_prefix(layers_root(layers, &layer).unwrap_or(Path::new("")))
            .unwrap_or(&path)
            .display()
            .to_string();
        if !is_variant && !file.description.trim().is_empty() {
            settings.description = file.description.trim().to_owned();
        }
        for (key, value) in file.vars {
            let origin = format!("{relative} ({layer})");
            settings.vars.insert(key, Var { value, origin });
        }
    }
    Ok(settings)
}

fn layers_root<'a>(layers: &'a Layers, name: &str) -> Option<&'a Path> {
    layers
        .layers()
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.root.as_path())
}

impl Settings {
    /// Applies the environment: `$HOST_CONTAINER_<LANGUAGE>_<KEY>` for each variable, and for
    /// `base_image` `$HOST_CONTAINER_BASE_IMAGE` below that. Empty values count as unset.
    /// `--set` is applied by the caller, with every other `--set`.
    pub fn with_env(mut self, language: &str, env: &BTreeMap<String, String>) -> Settings {
        let non_empty = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
        // Variables every language shares, settable once for all of them.
        for (key, name) in [
            (BASE_IMAGE, "HOST_CONTAINER_BASE_IMAGE"),
            (CA_BUNDLE, "HOST_CONTAINER_CA_BUNDLE"),
        ] {
            if let Some(value) = non_empty(name) {
                let origin = format!("${name}");
                self.vars.insert(key.into(), Var { value, origin });
            }
        }
        let keys: Vec<String> = self
            .vars
            .keys()
            .cloned()
            .chain([BASE_IMAGE.to_owned(), CA_BUNDLE.to_owned()])
            .collect();
        for key in keys {
            let name = env_name(language, &key);
            if let Some(value) = non_empty(&name) {
                let origin = format!("${name}");
                self.vars.insert(key, Var { value, origin });
            }
        }
        self
    }
}

/// The names of every variable any language defines in any layer: what `--validate` accepts
/// besides built-ins, since a mode file alone does not say which language it will serve.
pub fn all_names(layers: &Layers) -> anyhow::Result<Vec<String>> {
    let mut names = vec![BASE_IMAGE.to_owned()];
    for language in layers.languages() {
        for variant in std::iter::once(None).chain(layers.variants(&language).iter().map(Some)) {
            let settings = load(layers, &language, variant.map(String::as_str))?;
            names.extend(settings.vars.into_keys());
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The JSON Schema of `language.yaml`, as committed in `schemas/language.schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(LanguageFile);
    serde_json::to_string_pretty(&schema).expect("a schema always serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_names_are_upper_case_identifiers() {
        assert_eq!(
            env_name("node", "base_image"),
            "HOST_CONTAINER_NODE_BASE_IMAGE"
        );
        assert_eq!(env_name("c-lang.x", "k"), "HOST_CONTAINER_C_LANG_X_K");
    }

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let mut settings = Settings::default();
        for (key, value) in pairs {
            let var = Var {
                value: (*value).into(),
                origin: "file".into(),
            };
            settings.vars.insert((*key).into(), var);
        }
        settings
    }

    #[test]
    fn the_language_variable_beats_the_shared_one_which_beats_the_file() {
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        let file = settings(&[("base_image", "node:22"), ("data_mount", "/node")]);
        let value = |s: &Settings, key: &str| s.vars.get(key).map(|v| v.value.clone());

        let shared = file
            .clone()
            .with_env("node", &env(&[("HOST_CONTAINER_BASE_IMAGE", "deb")]));
        assert_eq!(value(&shared, "base_image").as_deref(), Some("deb"));

        let both = file.clone().with_env(
            "node",
            &env(&[
                ("HOST_CONTAINER_BASE_IMAGE", "deb"),
                ("HOST_CONTAINER_NODE_BASE_IMAGE", "deb-node"),
                ("HOST_CONTAINER_PYTHON_BASE_IMAGE", "deb-python"),
                ("HOST_CONTAINER_NODE_DATA_MOUNT", "/n"),
            ]),
        );
        assert_eq!(value(&both, "base_image").as_deref(), Some("deb-node"));
        assert_eq!(value(&both, "data_mount").as_deref(), Some("/n"));
        assert_eq!(
            both.vars["base_image"].origin,
            "$HOST_CONTAINER_NODE_BASE_IMAGE"
        );

        let empty = file
            .clone()
            .with_env("node", &env(&[("HOST_CONTAINER_NODE_BASE_IMAGE", "")]));
        assert_eq!(value(&empty, "base_image").as_deref(), Some("node:22"));

        // A language without a default still takes the base image from the environment.
        let none =
            Settings::default().with_env("ruby", &env(&[("HOST_CONTAINER_RUBY_BASE_IMAGE", "r")]));
        assert_eq!(value(&none, "base_image").as_deref(), Some("r"));
    }
}
