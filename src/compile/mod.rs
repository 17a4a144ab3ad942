//! Compiling the requested mode and its prerequisite modes into one `Plan`: a petgraph DAG of
//! docker steps, every string rendered, every argv final, in a stable topological order.
//!
//! Nothing downstream renders or reorders anything, which is what makes the printed plan the
//! executed one.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use petgraph::graph::{DiGraph, NodeIndex};
use sha2::{Digest, Sha256};

use crate::cli::Invocation;
use crate::config::{self, Found, Layers};
use crate::docker::{docker_head, docker_head_len};
use crate::error::{did_you_mean, fail, Error, Kind};
use crate::mode::{self, Arg, DoneKind, ModeFile, Output};
use crate::names::{instance_labels, Names, LABEL_PREFIX, UNFINISHED_LABEL};
use crate::plan::{
    DoneObject, ExcludedStep, ModeDecision, Plan, Source, Status, Step, Summary, PLAN_VERSION,
};
use crate::template::BUILTINS;
use crate::template::{self, Renderer};
use crate::yaml::Document;

struct LoadedMode {
    name: String,
    found: Found,
    document: Document<ModeFile>,
    /// The line of each step's key, when a quick read of the lines could tell.
    step_lines: std::sync::OnceLock<Option<HashMap<String, usize>>>,
}

impl LoadedMode {
    fn error_at(&self, kind: Kind, message: String, (line, col): (usize, usize)) -> Error {
        Error::new(kind, message).at(&self.found.path, &self.document.text, line, col)
    }

    fn source(&self, step: Option<&str>) -> Source {
        let line = match step {
            Some(step) => self
                .step_lines
                .get_or_init(|| {
                    crate::yaml::block_key_lines(&self.document.text, "steps")
                        .filter(|lines| lines.len() == self.document.value.steps.len())
                })
                .as_ref()
                .and_then(|lines| lines.get(step).copied())
                .unwrap_or_else(|| self.document.positions().key(&["steps", step]).0),
            None => 1,
        };
        Source {
            file: self.found.path.display().to_string(),
            layer: self.found.layer.clone(),
            line,
        }
    }
}

/// Everything the compiler needs besides the invocation.
pub struct Compiler<'a> {
    invocation: &'a Invocation,
    layers: &'a Layers,
    docker_context: Option<&'a str>,
    base_context: serde_json::Map<String, serde_json::Value>,
    /// The language's variables (after the environment), which a mode's `vars` may not replace.
    language_vars: IndexMap<String, crate::language::Var>,
    loaded: IndexMap<String, LoadedMode>,
    decisions: Vec<ModeDecision>,
}

pub fn compile(
    invocation: &Invocation,
    layers: &Layers,
    docker_context: Option<&str>,
) -> anyhow::Result<Plan> {
    check_language_variant(layers, &invocation.language, &invocation.variant)?;
    let settings = crate::language::load(layers, &invocation.language, Some(&invocation.variant))?
        .with_env(&invocation.language, &invocation.env);
    let mut compiler = Compiler {
        invocation,
        layers,
        docker_context,
        base_context: base_context(invocation, layers, &settings.vars)?,
        language_vars: settings.vars,
        loaded: IndexMap::new(),
        decisions: Vec::new(),
    };
    compiler.resolve_modes()?;
    compiler.build()
}

/// Checks that language and variant exist, listing what does when they do not.
pub fn check_language_variant(
    layers: &Layers,
    language: &str,
    variant: &str,
) -> anyhow::Result<()> {
    let languages = layers.languages();
    if !languages.iter().any(|l| l == language) {
        let mut error = Error::new(Kind::NotFound, format!("unknown language `{language}`"));
        if let Some(s) = did_you_mean(language, languages.iter().map(String::as_str)) {
            error = error.note(format!("did you mean `{s}`?"));
        }
        return Err(error
            .note(format!("languages: {}", languages.join(", ")))
            .into());
    }
    let variants = layers.variants(language);
    if !variants.iter().any(|v| v == variant) {
        let mut error = Error::new(
            Kind::NotFound,
            format!("unknown variant `{variant}` of {language}"),
        );
        if let Some(s) = did_you_mean(variant, variants.iter().map(String::as_str)) {
            error = error.note(format!("did you mean `{s}`?"));
        }
        return Err(error
            .note(format!("variants of {language}: {}", variants.join(", ")))
            .into());
    }
    Ok(())
}

fn base_context(
    invocation: &Invocation,
    layers: &Layers,
    language_vars: &IndexMap<String, crate::language::Var>,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    use serde_json::json;
    let names = Names::of(invocation);
    let mut paths = serde_json::Map::new();
    for (key, kind) in [("hosts", "hosts"), ("services", "services")] {
        let relative = Path::new(&invocation.language)
            .join(kind)
            .join(&invocation.variant);
        let dir = layers.merged_dir(&relative)?;
        // An absent part still has a path, so the plan compiles and `variant::check` names it.
        if let Some(dir) = dir.or_else(|| crate::variant::absent_dir(layers, &relative)) {
            paths.insert(key.into(), json!(dir.display().to_string()));
        }
    }
    paths.insert(
        "backup_dir".into(),
        json!(invocation.backup_dir.display().to_string()),
    );
    let layer_list: Vec<_> = layers
        .layers()
        .iter()
        .map(|l| json!({"name": l.name, "path": l.root.display().to_string()}))
        .collect();
    let mut context = serde_json::Map::new();
    let mut put = |key: &str, value: serde_json::Value| {
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
    put("run_id", json!(invocation.run_id));
    put("orchestrator", json!(invocation.orchestrator.name()));
    put("image", json!(names.image));
    put("names", json!({"prefix": names.prefix}));
    put(
        "volumes",
        json!({
            "data": format!("{}-data", names.prefix),
            "hosts": format!("{}-hosts", names.prefix),
        }),
    );
    put(
        "containers",
        json!({
            "daemon": format!("{}-daemon", names.prefix),
            "run": format!("{}-run-{}", names.prefix, invocation.run_id),
        }),
    );
    put("paths", serde_json::Value::Object(paths));
    put("layers", json!(layer_list));
    put("set", json!(invocation.sets));
    for (key, var) in language_vars {
        context.insert(key.clone(), json!(var.value));
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

impl Compiler<'_> {
    fn load_mode(&mut self, name: &str) -> anyhow::Result<Option<&LoadedMode>> {
        if !self.loaded.contains_key(name) {
            let Some(found) =
                self.layers
                    .mode_file(&self.invocation.language, &self.invocation.variant, name)
            else {
                return Ok(None);
            };
            let bytes = crate::safe_fs::read_limited(&found.path, crate::yaml::MAX_FILE_BYTES)?;
            let document = mode::load(&found.path, &bytes)?;
            self.loaded.insert(
                name.to_owned(),
                LoadedMode {
                    name: name.to_owned(),
                    found,
                    document,
                    step_lines: std::sync::OnceLock::new(),
                },
            );
        }
        Ok(self.loaded.get(name))
    }

    fn renderer_for(&self, mode: &LoadedMode) -> anyhow::Result<Renderer> {
        let mut context = self.base_context.clone();
        context.insert("mode".into(), serde_json::json!(mode.name));
        for (key, value) in &mode.document.value.vars {
            if BUILTINS.contains(&key.as_str())
                || key == crate::language::BASE_IMAGE
                || template::FUNCTIONS.contains(&key.as_str())
            {
                let at = mode.document.positions().key(&["vars", key]);
                return Err(mode
                    .error_at(
                        Kind::Config,
                        format!("vars: `{key}` is a built-in name and cannot be replaced"),
                        at,
                    )
                    .into());
            }
            if let Some(var) = self.language_vars.get(key) {
                let at = mode.document.positions().key(&["vars", key]);
                let language = &self.invocation.language;
                return Err(mode
                    .error_at(
                        Kind::Config,
                        format!(
                            "vars: `{key}` is a variable of the language {language} (from {}); \
                             every mode must see the same value",
                            var.origin
                        ),
                        at,
                    )
                    .note(format!(
                        "change it in {language}/config/language.yaml, with --set {key}=… or \
                         ${}",
                        crate::language::env_name(language, key)
                    ))
                    .into());
            }
            // A var is a template over the built-ins and the vars before it; `--set` wins.
            let value = match self.invocation.sets.get(key) {
                Some(set) => set.clone(),
                None => Renderer::new(template::context_value(&context, &self.invocation.command))
                    .render(value)
                    .map_err(|e| {
                        mode.error_at(
                            Kind::Config,
                            format!("in vars.{key}: {}", template::describe(&e)),
                            mode.document.positions().value(&["vars", key]),
                        )
                    })?,
            };
            context.insert(key.clone(), serde_json::json!(value));
        }
        Ok(Renderer::new(template::context_value(
            &context,
            &self.invocation.command,
        )))
    }

    /// Walks `requires` from the requested mode, depth first, so prerequisite modes come first.
    fn resolve_modes(&mut self) -> anyhow::Result<()> {
        let requested = self.invocation.mode.clone();
        if self.load_mode(&requested)?.is_none() {
            let modes = self
                .layers
                .modes(&self.invocation.language, &self.invocation.variant);
            let mut error = Error::new(
                Kind::NotFound,
                format!(
                    "unknown mode `{requested}` for {} {}",
                    self.invocation.language, self.invocation.variant
                ),
            );
            if let Some(s) = did_you_mean(&requested, modes.iter().map(String::as_str)) {
                error = error.note(format!("did you mean `{s}`?"));
            }
            return Err(error.note(format!("modes: {}", modes.join(", "))).into());
        }
        let mut order = Vec::new();
        let mut stack = Vec::new();
        self.visit(&requested, None, &mut stack, &mut order)?;
        self.check_qualified_needs()?;
        // Keep `loaded` in dependency order; modes left out by `when` stay out of it.
        let mut reordered = IndexMap::new();
        for name in order {
            if let Some(mode) = self.loaded.shift_remove(&name) {
                reordered.insert(name, mode);
            }
        }
        self.loaded = reordered;
        Ok(())
    }

    /// Every `mode.step` need of every loaded mode names a step that exists, even in a mode or a
    /// step that `when` leaves out: a typo must not wait for the day the condition holds.
    fn check_qualified_needs(&mut self) -> anyhow::Result<()> {
        let mut qualified = Vec::new();
        for (mode_name, mode) in &self.loaded {
            for (step, spec) in &mode.document.value.steps {
                for (index, need) in spec.needs.iter().enumerate() {
                    // Step ids hold no `.`, so the mode is everything before the last one.
                    if let Some((other, other_step)) = need.rsplit_once('.') {
                        qualified.push((
                            mode_name.clone(),
                            step.clone(),
                            index,
                            other.to_owned(),
                            other_step.to_owned(),
                        ));
                    }
                }
            }
        }
        for (mode_name, step, index, other, other_step) in qualified {
            let is_name = crate::mode::check_name(&other).is_ok();
            let loaded = if is_name {
                self.load_mode(&other)?
            } else {
                None
            };
            let steps: Option<Vec<String>> =
                loaded.map(|m| m.document.value.steps.keys().cloned().collect());
            if steps.as_ref().is_some_and(|s| s.contains(&other_step)) {
                continue;
            }
            let mode = &self.loaded[&mode_name];
            let index = index.to_string();
            let need = format!("{other}.{other_step}");
            let at = mode
                .document
                .positions()
                .value(&["steps", &step, "needs", &index]);
            let error = match steps {
                None => {
                    let modes = self
                        .layers
                        .modes(&self.invocation.language, &self.invocation.variant);
                    let mut error = mode.error_at(
                        Kind::Config,
                        format!("step `{step}` needs `{need}`, but there is no mode `{other}`"),
                        at,
                    );
                    if let Some(s) = did_you_mean(&other, modes.iter().map(String::as_str)) {
                        error = error.note(format!("did you mean `{s}.{other_step}`?"));
                    }
                    error.note(format!("modes: {}", modes.join(", ")))
                }
                Some(steps) => {
                    let mut error = mode.error_at(
                        Kind::Config,
                        format!(
                            "step `{step}` needs `{need}`, which is not a step of mode `{other}`"
                        ),
                        at,
                    );
                    if let Some(s) = did_you_mean(&other_step, steps.iter().map(String::as_str)) {
                        error = error.note(format!("did you mean `{other}.{s}`?"));
                    }
                    let shown: Vec<&str> = steps.iter().take(20).map(String::as_str).collect();
                    let more = if steps.len() > shown.len() {
                        ", …"
                    } else {
                        ""
                    };
                    error.note(format!("steps of {other}: {}{more}", shown.join(", ")))
                }
            };
            return Err(error.into());
        }
        Ok(())
    }

    fn visit(
        &mut self,
        name: &str,
        required_by: Option<&str>,
        stack: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        if order.iter().any(|m| m == name)
            || self.decisions.iter().any(|d| d.name == name && !d.included)
        {
            return Ok(());
        }
        let requires = {
            let mode = self
                .loaded
                .get(name)
                .expect("visit is called on loaded modes");
            mode.document.value.requires.clone()
        };
        let mut reason = match required_by {
            None => "requested".to_owned(),
            Some(by) => format!("required by {by}"),
        };
        if let Some(when) = self.loaded[name].document.value.when.clone() {
            if required_by.is_some() {
                let mode = &self.loaded[name];
                let renderer = self.renderer_for(mode)?;
                let keep = renderer.truth(&when).map_err(|e| {
                    mode.error_at(
                        Kind::Config,
                        format!("in `when`: {}", renderer.explain(&when, true, &e)),
                        mode.document.positions().value(&["when"]),
                    )
                })?;
                if !keep {
                    let source = Some(mode.source(None));
                    self.decisions.push(ModeDecision {
                        name: name.to_owned(),
                        included: false,
                        reason: format!(
                            "{reason}, but left out: {}",
                            template::condition(&when, false)
                        ),
                        source,
                    });
                    return Ok(());
                }
                reason = format!("{reason}, and {}", template::condition(&when, true));
            }
        }
        stack.push(name.to_owned());
        for (index, required) in requires.iter().enumerate() {
            if let Some(at) = stack.iter().position(|m| m == required) {
                let mut cycle: Vec<&str> = stack[at..].iter().map(String::as_str).collect();
                cycle.push(required);
                let mode = &self.loaded[name];
                let index = index.to_string();
                return Err(mode
                    .error_at(
                        Kind::Config,
                        format!("modes require each other in a cycle: {}", cycle.join(" → ")),
                        mode.document.positions().value(&["requires", &index]),
                    )
                    .into());
            }
            if self.load_mode(required)?.is_none() {
                let mode = &self.loaded[name];
                let modes = self
                    .layers
                    .modes(&self.invocation.language, &self.invocation.variant);
                let index = index.to_string();
                let mut error = mode.error_at(
                    Kind::Config,
                    format!("mode `{name}` requires `{required}`, which is not defined"),
                    mode.document.positions().value(&["requires", &index]),
                );
                if let Some(s) = did_you_mean(required, modes.iter().map(String::as_str)) {
                    error = error.note(format!("did you mean `{s}`?"));
                }
                return Err(error.note(format!("modes: {}", modes.join(", "))).into());
            }
            self.visit(required, Some(name), stack, order)?;
        }
        stack.pop();
        order.push(name.to_owned());
        let source = Some(self.loaded[name].source(None));
        self.decisions.push(ModeDecision {
            name: name.to_owned(),
            included: true,
            reason,
            source,
        });
        Ok(())
    }

    fn build(self) -> anyhow::Result<Plan> {
        let invocation = self.invocation;
        let mut steps: Vec<Step> = Vec::new();
        let mut excluded = Vec::new();
        // Per step: the mode it came from and each need's position in its file.
        let mut origins: Vec<(usize, String)> = Vec::new();
        let mut input_origins: Vec<Vec<usize>> = Vec::new();
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut excluded_ids: HashSet<String> = HashSet::new();
        let included_modes: HashSet<&str> = self.loaded.keys().map(String::as_str).collect();

        for (mode_index, mode) in self.loaded.values().enumerate() {
            let renderer = self.renderer_for(mode)?;
            let forced = mode.name == invocation.mode && mode.document.value.force;
            let vars = rendered_vars(mode, &renderer);
            for (name, spec) in &mode.document.value.steps {
                let id = format!("{}.{name}", mode.name);
                let render_error = |path: &[&str], e: minijinja::Error| -> anyhow::Error {
                    let (line, mut col) = mode.document.positions().value(path);
                    let message = match source_at(spec, path) {
                        Some((source, is_expression)) => {
                            let message = renderer.explain(source, is_expression, &e);
                            if let Some(name) = undefined_name(&message) {
                                let text = &mode.document.text;
                                col = crate::error::column_within(text, line, col, source, name);
                            }
                            message
                        }
                        None => template::describe(&e),
                    };
                    mode.error_at(Kind::Config, message, (line, col)).into()
                };
                if let Some(when) = &spec.when {
                    let keep = renderer
                        .truth(when)
                        .map_err(|e| render_error(&["steps", name, "when"], e))?;
                    if !keep {
                        excluded.push(ExcludedStep {
                            id: id.clone(),
                            reason: format!("`{when}` is false"),
                        });
                        excluded_ids.insert(id);
                        continue;
                    }
                }
                let mut argv = docker_head(self.docker_context);
                let head_len = argv.len();
                let mut raw_args = Vec::new();
                for (index, arg) in spec.docker.iter().enumerate() {
                    let index = index.to_string();
                    let path = ["steps", name.as_str(), "docker", index.as_str()];
                    match arg {
                        Arg::Text(text) => {
                            argv.push(renderer.render(text).map_err(|e| render_error(&path, e))?)
                        }
                        Arg::Splat { splat } => {
                            let items = renderer
                                .list_args(splat)
                                .map_err(|e| render_error(&path, e))?;
                            for (text, raw) in items {
                                if let Some(raw) = raw {
                                    raw_args.push((argv.len(), raw));
                                }
                                argv.push(text);
                            }
                        }
                    }
                }
                if let Some(first) = argv
                    .get(head_len)
                    .filter(|a| a.is_empty() || a.starts_with('-'))
                {
                    return Err(mode
                        .error_at(
                            Kind::Config,
                            format!(
                                "step `{name}`: the docker argv starts with {first:?}, not a \
                                 subcommand such as `run` (global options come from --context \
                                 and DOCKER_HOST)"
                            ),
                            mode.document
                                .positions()
                                .value(&["steps", name, "docker", "0"]),
                        )
                        .into());
                }
                let mut planned_before = Vec::new();
                let mut after = Vec::new();
                let mut archive = None;
                if let Some(spec_archive) = &spec.archive {
                    let field = |key: &str, text: &str| {
                        renderer
                            .render(text)
                            .map_err(|e| render_error(&["steps", name, "archive", key], e))
                    };
                    let mut stamps = Vec::new();
                    for (index, stamp) in spec_archive.stamps.iter().enumerate() {
                        let index = index.to_string();
                        stamps.push(renderer.render(stamp).map_err(|e| {
                            render_error(&["steps", name, "archive", "stamps", &index], e)
                        })?);
                    }
                    let plan = crate::archive::ArchivePlan::new(
                        spec_archive.action,
                        field("volume", &spec_archive.volume)?,
                        Path::new(&field("dir", &spec_archive.dir)?),
                        field("image", &spec_archive.image)?,
                        stamps,
                        invocation.force,
                    );
                    let mut labels = instance_labels(invocation);
                    labels.push((format!("{LABEL_PREFIX}.mode"), mode.name.clone()));
                    // Helpers left running by a killed run are found by their step.
                    labels.push((format!("{LABEL_PREFIX}.step"), id.clone()));
                    let container = format!(
                        "{}-run-{}-{name}",
                        Names::of(invocation).prefix,
                        invocation.run_id
                    );
                    let (before, main, rest) =
                        crate::archive::commands(&plan, &argv, &container, &labels);
                    planned_before = before;
                    argv = main;
                    after = rest;
                    archive = Some(plan);
                }
                if argv.len() == docker_head(self.docker_context).len() {
                    return Err(mode
                        .error_at(
                            Kind::Config,
                            format!("step `{name}` has an empty `docker` argv"),
                            mode.document.positions().key(&["steps", name, "docker"]),
                        )
                        .into());
                }
                let done = match &spec.done() {
                    Some(done) => {
                        let kind = done.kind().as_str();
                        let name_rendered = renderer
                            .render(done.name())
                            .map_err(|e| render_error(&["steps", name, "done", kind], e))?;
                        // An empty name would make the probe ask about nothing in particular.
                        if name_rendered.is_empty()
                            || name_rendered.contains(|c: char| c.is_whitespace() || c.is_control())
                        {
                            return Err(mode
                                .error_at(
                                    Kind::Config,
                                    format!(
                                        "step `{name}`: done.{kind} renders to {name_rendered:?}, \
                                         which is not a docker object name"
                                    ),
                                    mode.document
                                        .positions()
                                        .value(&["steps", name, "done", kind]),
                                )
                                .into());
                        }
                        Some(done.with_name(name_rendered))
                    }
                    None => None,
                };
                let mut inputs = Vec::new();
                // Which entry of `inputs` each rendered input comes from, for errors.
                let mut input_entries = Vec::new();
                for (index, input) in spec.inputs.iter().enumerate() {
                    let at = index.to_string();
                    let path = ["steps", name.as_str(), "inputs", at.as_str()];
                    match input {
                        Arg::Text(text) => {
                            inputs.push(renderer.render(text).map_err(|e| render_error(&path, e))?)
                        }
                        Arg::Splat { splat } => {
                            inputs.extend(renderer.list(splat).map_err(|e| render_error(&path, e))?)
                        }
                    }
                    input_entries.resize(inputs.len(), index);
                }
                let mut uses_images = Vec::new();
                for (index, image) in spec.uses_images.iter().enumerate() {
                    let index = index.to_string();
                    let path = ["steps", name.as_str(), "uses_images", index.as_str()];
                    uses_images.push(renderer.render(image).map_err(|e| render_error(&path, e))?);
                }
                let ready = match &spec.ready {
                    Some(ready) => {
                        let mut rendered = ready.clone();
                        for (index, arg) in ready.command.iter().enumerate() {
                            let index = index.to_string();
                            let path = ["steps", name.as_str(), "ready", "command", index.as_str()];
                            rendered.command[index.parse::<usize>().unwrap_or(0)] =
                                renderer.render(arg).map_err(|e| render_error(&path, e))?;
                        }
                        if let Some(tcp) = &ready.tcp {
                            let at = ["steps", name.as_str(), "ready", "tcp"];
                            let address = renderer.render(tcp).map_err(|e| render_error(&at, e))?;
                            if !is_tcp_address(&address) {
                                return Err(mode
                                    .error_at(
                                        Kind::Config,
                                        format!(
                                            "step `{name}`: ready.tcp {address:?} is not \
                                             `host:port` or a port (1-65535)"
                                        ),
                                        mode.document.positions().value(&at),
                                    )
                                    .into());
                            }
                            rendered.tcp = Some(address);
                        }
                        Some(rendered)
                    }
                    None => None,
                };
                if spec.stdin.is_some() && (spec.interactive || spec.output == Output::Raw) {
                    return Err(mode
                        .error_at(
                            Kind::Config,
                            format!(
                                "step `{name}` reads `stdin` from a directory, so it cannot also \
                                 be interactive or have raw output (which give it the user's stdin)"
                            ),
                            mode.document.positions().key(&["steps", name, "stdin"]),
                        )
                        .into());
                }
                let stdin = match &spec.stdin {
                    Some(stdin) => Some(mode::StdinSpec {
                        tar: renderer
                            .render(&stdin.tar)
                            .map_err(|e| render_error(&["steps", name, "stdin", "tar"], e))?,
                    }),
                    None => None,
                };
                let confirm = match &spec.confirm {
                    Some(question) => Some(
                        renderer
                            .render(question)
                            .map_err(|e| render_error(&["steps", name, "confirm"], e))?,
                    ),
                    None => None,
                };
                ids.insert(id.clone(), steps.len());
                origins.push((mode_index, name.clone()));
                input_origins.push(input_entries);
                steps.push(Step {
                    id,
                    mode: mode.name.clone(),
                    description: spec.description.clone(),
                    needs: Vec::new(),
                    argv,
                    status: Status::Run,
                    reason: String::new(),
                    source: mode.source(Some(name)),
                    done: done.map(|d| DoneObject {
                        kind: d.kind(),
                        name: d.name().into(),
                        fingerprint: String::new(),
                    }),
                    fingerprint: String::new(),
                    before: planned_before.clone(),
                    after,
                    archive,
                    planned_before,
                    create_argv: Vec::new(),
                    interactive: spec.interactive,
                    output: spec.output,
                    uses_images,
                    ready,
                    confirm,
                    inputs,
                    stdin,
                    forced,
                    need_indexes: Vec::new(),
                    raw_args,
                    record: crate::record::Record {
                        vars: vars.clone(),
                        ..Default::default()
                    },
                    record_masks: Vec::new(),
                    invalidates: true,
                });
            }
        }

        if let Some(serde_json::Value::Object(paths)) = self.base_context.get("paths") {
            let (language, variant) = (&invocation.language, &invocation.variant);
            let command: Vec<String> = (invocation.command.iter())
                .map(|arg| arg.to_string_lossy().into_owned())
                .collect();
            crate::variant::check(&steps, paths, self.layers, language, variant, &command)?;
        }
        // Edges point from a need to the step that needs it.
        let mut graph: DiGraph<usize, Option<(usize, usize)>> = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..steps.len()).map(|i| graph.add_node(i)).collect();
        let modes: Vec<&LoadedMode> = self.loaded.values().collect();
        for (index, (mode_index, name)) in origins.iter().enumerate() {
            let mode = modes[*mode_index];
            let spec = &mode.document.value.steps[name];
            for (need_index, need) in spec.needs.iter().enumerate() {
                let qualified = if need.contains('.') {
                    need.clone()
                } else {
                    format!("{}.{need}", mode.name)
                };
                if let Some(&target) = ids.get(&qualified) {
                    graph.add_edge(nodes[target], nodes[index], Some((index, need_index)));
                    continue;
                }
                let (need_mode, _) = qualified.split_once('.').unwrap_or(("", ""));
                if excluded_ids.contains(&qualified)
                    || (!included_modes.contains(need_mode)
                        && self
                            .decisions
                            .iter()
                            .any(|d| d.name == need_mode && !d.included))
                {
                    // Needs on what `when` left out are satisfied by its absence.
                    continue;
                }
                let need_index = need_index.to_string();
                let mut error = mode.error_at(
                    Kind::Config,
                    format!("step `{name}` needs `{need}`, which is not a step of this plan"),
                    mode.document
                        .positions()
                        .value(&["steps", name, "needs", &need_index]),
                );
                if let Some(s) = did_you_mean(&qualified, ids.keys().map(String::as_str)) {
                    error = error.note(format!("did you mean `{s}`?"));
                }
                if !included_modes.contains(need_mode) {
                    error = error.note(format!(
                        "a step of another mode can be needed only when this mode requires it: \
                         add `{need_mode}` to `requires`"
                    ));
                }
                return Err(error.into());
            }
        }
        // A mode's first steps wait for every last step of the modes it requires.
        let mut sinks_by_mode: HashMap<usize, Vec<usize>> = HashMap::new();
        for (index, (mode_index, _)) in origins.iter().enumerate() {
            let is_sink = graph
                .neighbors(nodes[index])
                .all(|n| origins[graph[n]].0 != *mode_index);
            if is_sink {
                sinks_by_mode.entry(*mode_index).or_default().push(index);
            }
        }
        let mut closures: HashMap<usize, Vec<usize>> = HashMap::new();
        for (index, (mode_index, _)) in origins.iter().enumerate() {
            let mode = modes[*mode_index];
            let has_local_need = graph
                .neighbors_directed(nodes[index], petgraph::Incoming)
                .any(|n| origins[graph[n]].0 == *mode_index);
            if has_local_need {
                continue;
            }
            let required = closures.entry(*mode_index).or_insert_with(|| {
                required_closure(&self.loaded, &mode.name)
                    .iter()
                    .filter_map(|name| self.loaded.get_index_of(name))
                    .collect()
            });
            for required_mode in required.iter() {
                for &sink in sinks_by_mode.get(required_mode).into_iter().flatten() {
                    graph.update_edge(nodes[sink], nodes[index], None);
                }
            }
        }

        let order = stable_topological_order(&graph, &nodes).map_err(|cycle| {
            let names: Vec<&str> = cycle.iter().map(|&i| steps[i].id.as_str()).collect();
            let first = cycle[0];
            let (mode_index, name) = &origins[first];
            let mode = modes[*mode_index];
            let edge_into_first = graph
                .edges_connecting(nodes[cycle[1]], nodes[first])
                .find_map(|e| *e.weight());
            let at = match edge_into_first {
                Some((_, need_index)) => {
                    let need_index = need_index.to_string();
                    mode.document
                        .positions()
                        .value(&["steps", name, "needs", &need_index])
                }
                None => mode.document.positions().key(&["steps", name]),
            };
            anyhow::Error::from(mode.error_at(
                Kind::Config,
                format!("steps need each other in a cycle: {}", names.join(" → ")),
                at,
            ))
        })?;

        let mut position_of = vec![0; steps.len()];
        for (position, &index) in order.iter().enumerate() {
            position_of[index] = position;
        }
        let mut needs_of: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
        for edge in graph.raw_edges() {
            let (from, to) = (graph[edge.source()], graph[edge.target()]);
            needs_of[to].push(from);
        }
        // Fingerprints must not change with what varies by design: `containers.run` names
        // throw-away containers after the run id, and the cache directory of materialized layers depends on $HOME. Their
        // content is what counts, and it is hashed through `inputs`.
        let masks = [
            (
                format!("{}-run-{}", Names::of(invocation).prefix, invocation.run_id),
                "{{containers.run}}",
            ),
            (self.layers.cache_dir().display().to_string(), "{{cache}}"),
        ];
        let mut ordered: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
        let mut plan_steps: Vec<Step> = Vec::with_capacity(order.len());
        for &index in &order {
            let mut step = ordered[index].take().expect("each step is placed once");
            let mut needs: Vec<usize> = needs_of[index].iter().map(|&n| position_of[n]).collect();
            needs.sort_unstable();
            needs.dedup();
            step.needs = needs.iter().map(|&n| plan_steps[n].id.clone()).collect();
            step.need_indexes = needs;
            finish_step(
                &mut step,
                &plan_steps,
                invocation,
                &masks,
                modes_input_error(&modes, &origins[index], &input_origins[index]),
            )?;
            plan_steps.push(step);
        }

        let summary = Summary::of(&plan_steps);
        Ok(Plan {
            summary,
            version: PLAN_VERSION,
            language: invocation.language.clone(),
            variant: invocation.variant.clone(),
            mode: invocation.mode.clone(),
            instance: invocation.instance.clone(),
            state: "offline".into(),
            modes: self.decisions,
            steps: plan_steps,
            excluded_steps: excluded,
        })
    }
}

/// The variable an "undefined variable `NAME`" message names.
fn undefined_name(message: &str) -> Option<&str> {
    message
        .strip_prefix("undefined variable `")?
        .split('`')
        .next()
}

/// The mode's `vars` as rendered for it (after `--set`), recorded by its steps with `done`.
fn rendered_vars(
    mode: &LoadedMode,
    renderer: &Renderer,
) -> std::collections::BTreeMap<String, String> {
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

/// The template text at `path` of a step (`["steps", id, key, index…]`), and whether it is an
/// expression rather than a template.
fn source_at<'a>(spec: &'a mode::StepSpec, path: &[&str]) -> Option<(&'a str, bool)> {
    let below = path.get(2..)?;
    spec.templates()
        .into_iter()
        .find(|field| field.path == below)
        .map(|field| (field.source, field.is_expression))
}

/// How to report a missing input of a step: a closure pointing at the input's position.
fn modes_input_error<'a>(
    modes: &'a [&'a LoadedMode],
    (mode_index, name): &'a (usize, String),
    entries: &'a [usize],
) -> impl Fn(usize, String) -> anyhow::Error + 'a {
    move |index, message| {
        let mode = modes[*mode_index];
        let index = entries.get(index).copied().unwrap_or(index).to_string();
        mode.error_at(
            Kind::Config,
            message,
            mode.document
                .positions()
                .value(&["steps", name, "inputs", &index]),
        )
        .into()
    }
}

/// Every mode `name` requires, directly or not, that made it into the plan.
fn required_closure(loaded: &IndexMap<String, LoadedMode>, name: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut pending = vec![name.to_owned()];
    while let Some(current) = pending.pop() {
        if let Some(mode) = loaded.get(&current) {
            for required in &mode.document.value.requires {
                if loaded.contains_key(required) && !seen.contains(required) {
                    seen.push(required.clone());
                    pending.push(required.clone());
                }
            }
        }
    }
    seen
}

/// Kahn's algorithm taking the lowest declaration index among ready nodes, so ties always break
/// the same way. On a cycle, returns one cycle's node indexes, closed (first == last).
fn stable_topological_order<E>(
    graph: &DiGraph<usize, E>,
    nodes: &[NodeIndex],
) -> Result<Vec<usize>, Vec<usize>> {
    let mut in_degree: Vec<usize> = nodes
        .iter()
        .map(|&n| graph.neighbors_directed(n, petgraph::Incoming).count())
        .collect();
    let mut ready: BinaryHeap<Reverse<usize>> = in_degree
        .iter()
        .enumerate()
        .filter(|(_, d)| **d == 0)
        .map(|(i, _)| Reverse(i))
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(Reverse(index)) = ready.pop() {
        order.push(index);
        for next in graph.neighbors(nodes[index]) {
            let next = graph[next];
            in_degree[next] -= 1;
            if in_degree[next] == 0 {
                ready.push(Reverse(next));
            }
        }
    }
    if order.len() == nodes.len() {
        return Ok(order);
    }
    // Every node left has an incoming edge from another node left: walk backwards until a node
    // repeats, which closes a cycle.
    let remaining: HashSet<usize> = (0..nodes.len()).filter(|i| in_degree[*i] > 0).collect();
    let start = *remaining.iter().min().expect("a cycle leaves nodes");
    let mut walk = vec![start];
    let mut current = start;
    loop {
        let previous = graph
            .neighbors_directed(nodes[current], petgraph::Incoming)
            .map(|n| graph[n])
            .filter(|n| remaining.contains(n))
            .min()
            .expect("a remaining node has a remaining predecessor");
        if let Some(at) = walk.iter().position(|&n| n == previous) {
            // The walk went from each step to one it needs, which is how the file reads.
            let mut cycle: Vec<usize> = walk[at..].to_vec();
            cycle.push(cycle[0]);
            return Err(cycle);
        }
        walk.push(previous);
        current = previous;
    }
}

/// How many leading elements of an argv (after the docker head) name a subcommand that creates
/// an object, so labels can be inserted right after it.
fn creating_subcommand(args: &[String]) -> Option<usize> {
    let first = args.first().map(String::as_str);
    let second = args.get(1).map(String::as_str);
    match (first, second) {
        (Some("build" | "run" | "create"), _) => Some(1),
        (Some("image"), Some("build"))
        | (Some("container"), Some("run" | "create"))
        | (Some("volume" | "network" | "service"), Some("create")) => Some(2),
        _ => None,
    }
}

/// `host:port` (a host name, an IPv4 address or a bracketed IPv6 address) or a bare port.
fn is_tcp_address(address: &str) -> bool {
    let port = |text: &str| !text.starts_with('+') && text.parse::<u16>().is_ok_and(|p| p > 0);
    match address.rsplit_once(':') {
        None => port(address),
        Some((host, number)) => {
            let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                Some(ipv6) => ipv6.parse::<std::net::Ipv6Addr>().is_ok(),
                None => {
                    !host.is_empty()
                        && host
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
                }
            };
            port(number) && host_ok
        }
    }
}

fn label_args(labels: &[(String, String)]) -> Vec<String> {
    labels
        .iter()
        .map(|(key, value)| format!("--label={key}={value}"))
        .collect()
}

/// Fingerprints the step, labels what it creates, and adds the stamp it records.
fn finish_step(
    step: &mut Step,
    earlier: &[Step],
    invocation: &Invocation,
    masks: &[(String, &str)],
    input_error: impl Fn(usize, String) -> anyhow::Error,
) -> anyhow::Result<()> {
    let masked = |text: &str| -> String {
        let mut text = text.to_owned();
        for (from, to) in masks.iter().filter(|(from, _)| !from.is_empty()) {
            if contains(&text, from) {
                text = text.replace(from.as_str(), to);
            }
        }
        text
    };
    // Input paths vary with the layers (content-addressed merged directories) while their
    // content is hashed below, so a step with `done` masks them, and its needs' objects.
    if step.done.is_some() {
        step.record_masks = record_masks(step, earlier);
    }
    let step_masks = step.record_masks.clone();
    let masked = |text: &str| -> String {
        let mut text = text.to_owned();
        for (from, to) in &step_masks {
            if contains(&text, from) {
                text = text.replace(from.as_str(), to);
            }
        }
        masked(&text)
    };
    let mut hasher = Sha256::new();
    let mut feed = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    feed(step.id.as_bytes());
    for arg in &step.argv {
        feed(masked(arg).as_bytes());
    }
    if let Some(done) = &step.done {
        feed(done.kind.as_str().as_bytes());
        feed(done.name.as_bytes());
    }
    let mut files = std::collections::BTreeMap::new();
    for (index, input) in step.inputs.iter().enumerate() {
        feed(masked(input).as_bytes());
        let (digest, per_file) = hash_input(Path::new(input))
            .map_err(|e| input_error(index, format!("input `{input}`: {e}")))?;
        feed(&digest);
        for (key, file_digest) in per_file {
            files.entry(key).or_insert(file_digest);
        }
    }
    // Only needs that leave state behind feed the fingerprint: whether an always-running step
    // (such as an upgrade joined by UPGRADE) is in the plan must not make its dependents stale.
    for &need in &step.need_indexes {
        if earlier[need].done.is_some() {
            feed(earlier[need].fingerprint.as_bytes());
        }
    }
    step.fingerprint = config::hex(&hasher.finalize())[..20].to_owned();
    if let Some(done) = &mut step.done {
        done.fingerprint = step.fingerprint.clone();
    }
    if step.done.is_some() {
        record_state(step, earlier, &files, &masked);
    }

    let mut labels = instance_labels(invocation);
    labels.push((format!("{LABEL_PREFIX}.mode"), step.mode.clone()));
    labels.push((format!("{LABEL_PREFIX}.step"), step.id.clone()));
    if step.done.is_some() {
        labels.push((
            format!("{LABEL_PREFIX}.fingerprint"),
            step.fingerprint.clone(),
        ));
    }
    if step
        .done
        .as_ref()
        .is_some_and(|d| d.kind != DoneKind::Volume)
    {
        labels.push((format!("{LABEL_PREFIX}.record"), step.record.to_label()));
    }
    let head = docker_head_len(&step.argv);
    let service = crate::swarm::is_service_create(&step.argv[head..]);
    if let Some(len) = creating_subcommand(&step.argv[head..]) {
        let at = head + len;
        let mut inserted = label_args(&labels);
        if service {
            // The tasks' containers carry them too, so they are found like any other.
            inserted.extend(
                labels
                    .iter()
                    .map(|(key, value)| format!("--container-label={key}={value}")),
            );
        }
        for (index, _) in &mut step.raw_args {
            if *index >= at {
                *index += inserted.len();
            }
        }
        step.argv.splice(at..at, inserted);
    }
    if let Some(done) = step.done.as_ref().filter(|d| d.kind == DoneKind::Stamp) {
        let docker: Vec<String> = step.argv[..head].to_vec();
        let mut remove = docker.clone();
        remove.extend(["volume", "rm", "--force"].map(String::from));
        remove.push(done.name.clone());
        let create = |labels: &[(String, String)]| {
            let mut create = docker.clone();
            create.extend(["volume", "create"].map(String::from));
            create.extend(label_args(labels));
            create.push(done.name.clone());
            create
        };
        // A stamp that says "done" must never outlive a re-run that fails or is killed: before
        // the step runs, its stamp is replaced by one that says the run has not finished.
        let mut unfinished = labels[..INSTANCE_AND_MODE_LABELS].to_vec();
        unfinished.push((format!("{LABEL_PREFIX}.stamp"), "1".into()));
        unfinished.push((UNFINISHED_LABEL.to_owned(), step.fingerprint.clone()));
        let mark = [remove.clone(), create(&unfinished)];
        step.planned_before.extend(mark.iter().cloned());
        step.before.extend(mark);
        labels.push((format!("{LABEL_PREFIX}.stamp"), "1".into()));
        step.after.extend([remove, create(&labels)]);
    }
    if service
        && step
            .done
            .as_ref()
            .is_some_and(|d| d.kind == DoneKind::Service)
    {
        step.create_argv = step.argv.clone();
    }
    if let Some(job) = crate::swarm::job_name(&step.argv[head..]) {
        // A finished job service is shown, then removed; the executor waits for it in between.
        let docker: Vec<String> = step.argv[..head].to_vec();
        let mut logs = docker.clone();
        logs.extend(["service", "logs", "--raw"].map(String::from));
        logs.push(job.clone());
        let mut remove = docker;
        remove.extend(["service", "rm"].map(String::from));
        remove.push(job);
        step.after.extend([logs, remove]);
    }
    if step
        .done
        .as_ref()
        .is_some_and(|d| d.kind == DoneKind::Image)
    {
        // A rebuild leaves the image it replaced untagged; prune removes it unless a container
        // still uses it (then `purge` does, later).
        let mut prune: Vec<String> = step.argv[..head].to_vec();
        prune.extend(["image", "prune", "--force"].map(String::from));
        prune.extend(
            instance_labels(invocation)
                .into_iter()
                .map(|(key, value)| format!("--filter=label={key}={value}")),
        );
        step.after.push(prune);
    }
    Ok(())
}

/// How many of a step's labels are the instance's and its mode's. (The step's label marks the
/// commands of the step itself; the stamp's name says which step it belongs to.)
const INSTANCE_AND_MODE_LABELS: usize = 4;

/// At most this many texts are masked per step and input files recorded from its needs, so a
/// long chain of steps with inputs stays linear.
const MAX_MASKS: usize = 64;
const MAX_INHERITED_FILES: usize = 256;

/// What the argv of a step with `done` masks: its inputs' paths, its needs' masks, and the
/// objects of its direct needs; longest first, so a path masks before its parent.
fn record_masks(step: &Step, earlier: &[Step]) -> Vec<(String, String)> {
    let mut masks: Vec<(String, String)> = step
        .inputs
        .iter()
        .map(|input| (input.clone(), "{{input}}".to_owned()))
        .collect();
    for &need in &step.need_indexes {
        let need = &earlier[need];
        if let Some(done) = &need.done {
            masks.extend(need.record_masks.iter().cloned());
            masks.push((done.name.clone(), format!("{{{{{}}}}}", need.id)));
        }
    }
    masks.retain(|(text, _)| !text.is_empty());
    masks.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.cmp(b)));
    masks.dedup();
    masks.truncate(MAX_MASKS);
    masks
}

/// Fills the step's record: its input files and those of the steps it needs, its masked argv
/// (without the docker program), and its needs' fingerprints.
fn record_state(
    step: &mut Step,
    earlier: &[Step],
    files: &std::collections::BTreeMap<String, String>,
    masked: &dyn Fn(&str) -> String,
) {
    step.record.add_inputs(&step.id, files);
    for &need in &step.need_indexes {
        let need = &earlier[need];
        if need.done.is_none() {
            continue;
        }
        if step.record.inputs.len() + need.record.inputs.len() <= MAX_INHERITED_FILES {
            step.record.add_inputs(&need.id, &need.record.inputs);
        }
        step.record
            .needs
            .insert(need.id.clone(), need.fingerprint.clone());
    }
    let head = docker_head_len(&step.argv);
    step.record.argv = step.argv[head..].iter().map(|arg| masked(arg)).collect();
}

/// `haystack.contains(needle)` for the short strings of an argv: std's searcher prepares the
/// needle on every call, which showed up in profiles of 10,000-step plans.
fn contains(haystack: &str, needle: &str) -> bool {
    let Some(first) = needle.bytes().next() else {
        return true;
    };
    let bytes = haystack.as_bytes();
    let mut from = 0;
    while let Some(offset) = bytes[from..].iter().position(|b| *b == first) {
        let at = from + offset;
        if bytes[at..].starts_with(needle.as_bytes()) {
            return true;
        }
        from = at + 1;
    }
    false
}

/// Short digests of an input's files, by their names in the input.
type FileDigests = Vec<(String, String)>;

/// The content digest of an input: a file's bytes and executable bit, or every file below a
/// directory with its relative path; symlinks inside a directory count by where they point and
/// are not followed. Files are hashed as they are read, and only regular files are read. Also a
/// short digest per file, by its name in the input (the file name of a file input, the relative
/// path of a file below a directory), for reasons that name what changed.
fn hash_input(path: &Path) -> anyhow::Result<(Vec<u8>, FileDigests)> {
    let metadata = fs::metadata(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let files: Vec<(PathBuf, config::Node)> = if metadata.is_dir() {
        config::walk(path)?
    } else if metadata.is_file() {
        vec![(path.to_owned(), config::Node::File(0))]
    } else {
        return Err(crate::safe_fs::not_regular(path, &metadata).into());
    };
    let mut hasher = Sha256::new();
    let mut per_file = Vec::with_capacity(files.len());
    for (file, node) in files {
        let relative = file.strip_prefix(path).unwrap_or(Path::new(""));
        hasher.update(relative.to_string_lossy().as_bytes());
        let mut one = Sha256::new();
        match node {
            config::Node::File(_) => {
                one.update([0, u8::from(config::is_executable(&file))]);
                config::hash_file(&mut one, &file)?;
            }
            config::Node::Link(target) => {
                one.update([0, 2]);
                one.update(target.as_os_str().as_encoded_bytes());
            }
        }
        let digest = one.finalize();
        hasher.update(digest);
        let name = if relative.as_os_str().is_empty() {
            file.file_name().unwrap_or_default().to_string_lossy()
        } else {
            relative.to_string_lossy()
        };
        per_file.push((name.into_owned(), crate::record::short_digest(&digest)));
    }
    Ok((hasher.finalize().to_vec(), per_file))
}
