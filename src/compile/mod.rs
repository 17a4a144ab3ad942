//! Compiling the requested mode and its prerequisite modes into one `Plan`: a petgraph DAG of
//! docker steps, every string rendered, every argv final, in a stable topological order.
//!
//! Nothing downstream renders or reorders anything, which is what makes the printed plan the
//! executed one. The compiler runs in passes, one file each: `modes` loads the requested mode and
//! walks `requires` (deciding each mode's `when`), `context` makes what templates see, `render`
//! renders every step, `link` joins needs and modes into a DAG and seals it into one order, and
//! `finish` fingerprints each step in that order, `commands` adding what surrounds its argv
//! (and `dockerfile` a build's labels into its Dockerfile).

mod carried;
mod commands;
mod context;
mod dockerfile;
mod facts;
mod finish;
mod link;
mod modes;
mod render;

use indexmap::IndexMap;

use crate::cli::Invocation;
use crate::config::Layers;
use crate::error::{did_you_mean, CompileErrorKind, Error};
use crate::plan::{ExcludedStep, ModeDecision, Plan, Step, PLAN_VERSION};

use modes::LoadedMode;

/// Everything the compiler needs besides the invocation, and what its passes leave for the next.
pub struct Compiler<'a> {
    invocation: &'a Invocation,
    layers: &'a Layers,
    docker_context: Option<&'a str>,
    base_context: serde_json::Map<String, serde_json::Value>,
    /// The language's variables (after the environment), which a mode's `vars` may not replace.
    language_vars: IndexMap<String, crate::language::Var>,
    /// After `resolve_modes`: the modes in the plan, prerequisites first.
    loaded: IndexMap<String, LoadedMode>,
    decisions: Vec<ModeDecision>,
    /// The variant's lock, when its language has locks (`lock_file`).
    lock: Option<crate::lock::Lock>,
}

pub fn compile(
    invocation: &Invocation,
    layers: &Layers,
    docker_context: Option<&str>,
) -> anyhow::Result<Plan> {
    check_language_variant(layers, &invocation.language, &invocation.variant)?;
    // Every mode's renderer counts its output against one budget for the whole plan.
    let _budget = crate::template::PlanBudget::start();
    let settings = crate::language::load(layers, &invocation.language, Some(&invocation.variant))?
        .with_env(&invocation.language, &invocation.env);
    let mut base_context = context::base_context(invocation, layers, &settings.vars)?;
    let lock = context::apply_lock(invocation, layers, &mut base_context)?;
    if invocation.mode == crate::lock::LOCK_MODE {
        lock.as_ref().map_or(Ok(()), |l| l.check_writable())?;
    } else if invocation.locked {
        require_lock(invocation, lock.as_ref())?;
    }
    let mut compiler = Compiler {
        invocation,
        layers,
        docker_context,
        base_context,
        language_vars: settings.vars,
        loaded: IndexMap::new(),
        decisions: Vec::new(),
        lock,
    };
    compiler.resolve_modes()?;
    let mut rendered = compiler.render_steps()?;
    compiler.check_variant(&rendered.steps)?;
    compiler.refuse_locked_upgrade(&rendered.steps)?;
    let sealed = compiler.link(&mut rendered)?;
    let excluded = rendered.excluded;
    let steps = compiler.finish_steps(rendered.steps, &rendered.origins, &sealed)?;
    Ok(compiler.into_plan(steps, excluded))
}

/// `--locked`: the lock must be there and fresh before anything runs.
fn require_lock(invocation: &Invocation, lock: Option<&crate::lock::Lock>) -> anyhow::Result<()> {
    match lock {
        Some(lock) => lock.require(),
        None => Err(Error::of(CompileErrorKind::NoLockFile {
            language: invocation.language.clone(),
            setting: crate::lock::LOCK_FILE.to_owned(),
        })
        .into()),
    }
}

/// The plan's note of the `workspace` built-in, when there is a project.
fn project_note(workspace: Option<&serde_json::Value>) -> Option<crate::plan::ProjectNote> {
    let workspace = workspace?.as_object()?;
    let text = |key: &str| {
        workspace
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned()
    };
    let flag = |key: &str| {
        workspace
            .get(key)
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    };
    Some(crate::plan::ProjectNote {
        root: text("root"),
        dir: text("dir"),
        copied: flag("copied"),
        assumed: flag("assumed"),
    })
}

/// Checks that language and variant exist, listing what does when they do not.
pub fn check_language_variant(
    layers: &Layers,
    language: &str,
    variant: &str,
) -> anyhow::Result<()> {
    let languages = layers.languages();
    if !languages.iter().any(|l| l == language) {
        let mut error = Error::of(CompileErrorKind::UnknownLanguage {
            language: language.to_owned(),
        });
        if let Some(s) = did_you_mean(language, languages.iter().map(String::as_str)) {
            error = error.note(format!("did you mean `{s}`?"));
        }
        return Err(error
            .note(format!("languages: {}", languages.join(", ")))
            .note(layers.searched())
            .into());
    }
    let variants = layers.variants(language);
    if !variants.iter().any(|v| v == variant) {
        let mut error = Error::of(CompileErrorKind::UnknownVariant {
            language: language.to_owned(),
            variant: variant.to_owned(),
        });
        if let Some(s) = did_you_mean(variant, variants.iter().map(String::as_str)) {
            error = error.note(format!("did you mean `{s}`?"));
        }
        return Err(error
            .note(format!("variants of {language}: {}", variants.join(", ")))
            .note(layers.searched())
            .into());
    }
    Ok(())
}

impl Compiler<'_> {
    /// The variant's hosts and services directories hold what the rendered steps use.
    fn check_variant(&self, steps: &[Step]) -> anyhow::Result<()> {
        let Some(serde_json::Value::Object(paths)) = self.base_context.get("paths") else {
            return Ok(());
        };
        let invocation = self.invocation;
        let (language, variant) = (&invocation.language, &invocation.variant);
        let command: Vec<String> = (invocation.command.iter())
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        crate::variant::check(steps, paths, self.layers, language, variant, &command)
    }

    /// A locked variant installs its lock; `upgrade` would move what it pins.
    fn refuse_locked_upgrade(&self, steps: &[Step]) -> anyhow::Result<()> {
        let Some(lock) = self.lock.as_ref().filter(|l| l.is_ours()) else {
            return Ok(());
        };
        if !steps.iter().any(|s| s.mode == "upgrade") {
            return Ok(());
        }
        let file = lock.found.as_deref().unwrap_or(&lock.target.file);
        Err(Error::of(CompileErrorKind::LockedUpgrade {
            language: lock.language.clone(),
            variant: lock.variant.clone(),
            lock: file.display().to_string(),
        })
        .note(format!(
            "to move the pins, run `{}` again, then init",
            lock.command()
        ))
        .into())
    }

    fn into_plan(self, steps: Vec<Step>, excluded: Vec<ExcludedStep>) -> Plan {
        let invocation = self.invocation;
        Plan {
            version: PLAN_VERSION,
            language: invocation.language.clone(),
            variant: invocation.variant.clone(),
            mode: invocation.mode.clone(),
            instance: invocation.instance.clone(),
            modes: self.decisions,
            steps,
            excluded_steps: excluded,
            project: project_note(self.base_context.get("workspace")),
            docker_head: crate::docker::docker_head(self.docker_context),
            engine: invocation.engine,
        }
    }
}
