//! What templates see: the built-in variables of the invocation (`base_context`), the language's
//! variables and `--set`, and per mode its own `vars`, each a template over what comes before
//! it. Kept apart so every name a template can use is defined in one place.

use std::collections::BTreeMap;
use std::path::Path;

use indexmap::IndexMap;
use serde_json::{json, Map, Value};

use super::carried;
use super::modes::LoadedMode;
use super::Compiler;
use crate::cli::Invocation;
use crate::config::Layers;
use crate::error::{fail, CompileErrorKind, Kind, TemplateProblem};
use crate::lock::Lock;
use crate::names::Names;
use crate::template::{self, Renderer, BUILTINS};

/// The context every mode starts from: the built-ins, then the language's variables, then
/// `--set`, which may replace a language variable but no built-in.
pub(super) fn base_context(
    invocation: &Invocation,
    layers: &Layers,
    language_vars: &IndexMap<String, crate::language::Var>,
) -> anyhow::Result<Map<String, Value>> {
    let setting = |key: &str| {
        (invocation.sets.get(key).cloned())
            .or_else(|| language_vars.get(key).map(|var| var.value.clone()))
    };
    let ca = carried::ca_bundle(invocation, layers, language_vars)?;
    let mut context = builtins(invocation, layers, ca.as_deref())?;
    for (key, var) in language_vars {
        context.insert(key.clone(), json!(var.value));
    }
    let project_dir = setting("project_dir").unwrap_or_else(|| "/project".to_owned());
    context.insert(
        "workspace".into(),
        carried::project(
            invocation,
            layers,
            &project_dir,
            &setting("dependency_groups").unwrap_or_default(),
        ),
    );
    context.insert(
        "dependency_env".into(),
        json!(carried::dependency_env(&invocation.env, ca.is_some())),
    );
    if !language_vars.contains_key("project_dir") {
        context.insert("project_dir".into(), json!(project_dir));
    }
    for (key, value) in &invocation.sets {
        if BUILTINS.contains(&key.as_str()) {
            return fail(
                Kind::Usage,
                format!("--set {key}=…: `{key}` is a built-in variable and cannot be replaced"),
            );
        }
        context.insert(key.clone(), json!(value));
    }
    Ok(context)
}

/// The variant's lock, when its language has locks. A fresh one pins `base_image` to the digest
/// it records and tells init to install it (`HC_LOCK` in `dependency_env`), except in `lock`
/// itself, which resolves anew on the base image as named.
pub(super) fn apply_lock(
    invocation: &Invocation,
    layers: &Layers,
    context: &mut Map<String, Value>,
) -> anyhow::Result<Option<Lock>> {
    let hosts = (context.get("paths"))
        .and_then(|paths| paths.get("hosts"))
        .and_then(Value::as_str)
        .map(std::path::PathBuf::from);
    let setting = |key: &str| context.get(key).and_then(Value::as_str).map(str::to_owned);
    let (language, variant) = (&invocation.language, &invocation.variant);
    let Some(lock) = Lock::of(layers, language, variant, hosts.as_deref(), &setting)? else {
        return Ok(None);
    };
    if invocation.mode != crate::lock::LOCK_MODE {
        if let (Some(base), Some(env)) = (lock.pinned_base(), lock.install_env()) {
            context.insert(crate::language::BASE_IMAGE.into(), json!(base));
            if let Some(Value::Array(list)) = context.get_mut("dependency_env") {
                list.push(json!(env));
            }
        }
    }
    Ok(Some(lock))
}

/// The built-in variables, named in `template::BUILTINS`.
fn builtins(
    invocation: &Invocation,
    layers: &Layers,
    ca: Option<&Path>,
) -> anyhow::Result<Map<String, Value>> {
    let names = Names::of(invocation);
    let layer_list: Vec<_> = layers
        .layers()
        .iter()
        .map(|l| json!({"name": l.name, "path": l.root.display().to_string()}))
        .collect();
    let mut context = Map::new();
    let mut put = |key: &str, value: Value| {
        context.insert(key.to_owned(), value);
    };
    put("language", json!(invocation.language));
    put("variant", json!(invocation.variant));
    put("instance", json!(invocation.instance));
    put("requested_mode", json!(invocation.mode));
    let command: Vec<String> = invocation
        .command
        .iter()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    put("command", json!(command));
    put("uid", json!(invocation.uid));
    put("gid", json!(invocation.gid));
    put("user", json!(invocation.user));
    put("home", json!(invocation.home));
    put("cwd", json!(invocation.cwd));
    put("env", json!(invocation.env));
    put("tty", json!(invocation.tty));
    put("junit", json!(invocation.junit));
    put("run_id", json!(invocation.run_id));
    put("orchestrator", json!(invocation.orchestrator.name()));
    let mut engine = (invocation.engine).template_value(invocation.uid, invocation.gid);
    // Which client formats `--format` templates: the podman CLI's objects differ from the
    // docker CLI's, also when the docker CLI talks to Podman.
    let podman_cli = crate::engine_kind::is_podman_cli(crate::docker::program());
    engine["cli"] = json!(if podman_cli { "podman" } else { "docker" });
    put("engine", engine);
    put("image", json!(names.image));
    put("names", json!({"prefix": names.prefix}));
    put(
        "volumes",
        json!({
            "data": names.data_volume(),
            "hosts": names.hosts_volume(),
            "project": names.project_volume(),
        }),
    );
    put(
        "containers",
        json!({
            "daemon": format!("{}-daemon", names.prefix),
            "run": format!("{}-run-{}", names.prefix, invocation.run_id),
        }),
    );
    put("paths", Value::Object(paths(invocation, layers, ca)?));
    put("layers", json!(layer_list));
    put("set", json!(invocation.sets));
    Ok(context)
}

/// `paths`: the variant's merged hosts and services directories (with the CA bundle carried
/// in, when one is set), the backup directory and the project's directory here.
fn paths(
    invocation: &Invocation,
    layers: &Layers,
    ca: Option<&Path>,
) -> anyhow::Result<Map<String, Value>> {
    let mut paths = Map::new();
    for (key, kind) in [("hosts", "hosts"), ("services", "services")] {
        let relative = Path::new(&invocation.language)
            .join(kind)
            .join(&invocation.variant);
        let dir = layers.merged_dir(&relative)?;
        let dir = match (dir, ca) {
            (Some(dir), Some(ca)) => Some(carried::with_ca(layers, &dir, ca)?),
            (dir, _) => dir,
        };
        // An absent part still has a path, so the plan compiles and `variant::check` names it.
        if let Some(dir) = dir.or_else(|| crate::variant::absent_dir(layers, &relative)) {
            paths.insert(key.into(), json!(dir.display().to_string()));
        }
    }
    paths.insert(
        "backup_dir".into(),
        json!(invocation.backup_dir.display().to_string()),
    );
    if let Some(project) = layers.project() {
        paths.insert("project".into(), json!(project.display().to_string()));
    }
    Ok(paths)
}

impl Compiler<'_> {
    /// The renderer of one mode: the base context, `mode`, and the mode's `vars`.
    pub(super) fn renderer_for(&self, mode: &LoadedMode) -> anyhow::Result<Renderer> {
        let mut context = self.base_context.clone();
        context.insert("mode".into(), json!(mode.name));
        for (key, value) in &mode.document.value.vars {
            self.check_var_name(mode, key)?;
            // A var is a template over the built-ins and the vars before it; `--set` wins.
            let value = match self.invocation.sets.get(key) {
                Some(set) => set.clone(),
                None => Renderer::new(template::context_value(&context, &self.invocation.command))
                    .render(value)
                    .map_err(|e| {
                        let problem = CompileErrorKind::VarTemplate {
                            key: key.clone(),
                            problem: TemplateProblem::Other(template::describe(&e)),
                        };
                        mode.problem_at(problem, mode.document.positions().value(&["vars", key]))
                    })?,
            };
            context.insert(key.clone(), json!(value));
        }
        Ok(Renderer::new(template::context_value(
            &context,
            &self.invocation.command,
        )))
    }

    /// A mode's var may replace neither a built-in name nor a variable of the language.
    fn check_var_name(&self, mode: &LoadedMode, key: &str) -> anyhow::Result<()> {
        if BUILTINS.contains(&key)
            || key == crate::language::BASE_IMAGE
            || template::FUNCTIONS.contains(&key)
        {
            let at = mode.document.positions().key(&["vars", key]);
            let key = key.to_owned();
            return Err(mode
                .problem_at(CompileErrorKind::VarIsBuiltinName { key }, at)
                .into());
        }
        let Some(var) = self.language_vars.get(key) else {
            return Ok(());
        };
        let at = mode.document.positions().key(&["vars", key]);
        let language = &self.invocation.language;
        let problem = CompileErrorKind::VarOfLanguage {
            key: key.to_owned(),
            language: language.clone(),
            origin: var.origin.to_string(),
        };
        Err(mode
            .problem_at(problem, at)
            .note(format!(
                "change it in {language}/config/language.yaml, with --set {key}=… or ${}",
                crate::language::env_name(language, key)
            ))
            .into())
    }
}

/// The mode's `vars` as rendered for it (after `--set`), recorded by its steps with `done`.
pub(super) fn rendered_vars(mode: &LoadedMode, renderer: &Renderer) -> BTreeMap<String, String> {
    mode.document
        .value
        .vars
        .keys()
        .filter_map(|key| {
            let value = renderer.render(&format!("{{{{ {key} }}}}")).ok()?;
            Some((key.clone(), value))
        })
        .collect()
}
