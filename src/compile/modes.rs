//! The first pass: loading the requested mode and, depth first, the modes it `requires`,
//! deciding each prerequisite's `when`. It leaves the modes of the plan in dependency order and
//! says for each mode why it is in or out; a mode file is read once, however often required.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use indexmap::IndexMap;

use super::Compiler;
use crate::config::Found;
use crate::error::{did_you_mean, CompileErrorKind, Error};
use crate::mode::{self, ModeFile, StepSpec};
use crate::plan::{ModeDecision, Source};
use crate::template;
use crate::yaml::Document;

pub(super) struct LoadedMode {
    pub name: String,
    pub found: Found,
    pub document: Document<ModeFile>,
    /// The line of each step's key, when a quick read of the lines could tell.
    step_lines: OnceLock<Option<HashMap<String, usize>>>,
    /// The file as shown in plans, and its layer.
    file: Arc<str>,
    layer: Arc<str>,
}

impl LoadedMode {
    /// The step specs, taken out to be rendered one by one and dropped. The lines of the steps
    /// are read first, while their number can still be checked against the specs'.
    pub fn take_steps(&mut self) -> IndexMap<String, StepSpec> {
        self.step_lines();
        std::mem::take(&mut self.document.value.steps)
    }

    /// Frees the lines of the steps once they are rendered.
    pub fn rendered(&mut self) {
        self.step_lines = OnceLock::new();
    }

    /// `problem`, at `line:col` of this file.
    pub fn problem_at(&self, problem: CompileErrorKind, (line, col): (usize, usize)) -> Error {
        Error::of(problem).at(&self.found.path, &self.document.text, line, col)
    }

    fn step_lines(&self) -> Option<&HashMap<String, usize>> {
        self.step_lines
            .get_or_init(|| {
                crate::yaml::block_key_lines(&self.document.text, "steps")
                    .filter(|lines| lines.len() == self.document.value.steps.len())
            })
            .as_ref()
    }

    /// Where the mode (`step` None) or one of its steps is declared. The file and layer are
    /// shared by every step's `Source`.
    pub fn source(&self, step: Option<&str>) -> Source {
        let line = match step {
            Some(step) => (self.step_lines())
                .and_then(|lines| lines.get(step).copied())
                .unwrap_or_else(|| self.document.positions().key(&["steps", step]).0),
            None => 1,
        };
        Source {
            file: Arc::clone(&self.file),
            layer: Arc::clone(&self.layer),
            line,
        }
    }
}

/// How deep a chain of `requires` may go: modes are walked depth first, one frame of the stack
/// per mode, and 20,000 overflowed the 16 MiB the binary runs on in an unoptimized build.
/// 5,000 plan in about a second.
const REQUIRES_DEPTH: usize = 5_000;

/// A `mode.step` need, found before it is checked.
struct QualifiedNeed {
    mode: String,
    step: String,
    index: usize,
    other: String,
    other_step: String,
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
                    file: found.path.display().to_string().into(),
                    layer: found.layer.as_str().into(),
                    found,
                    document,
                    step_lines: OnceLock::new(),
                },
            );
        }
        Ok(self.loaded.get(name))
    }

    fn mode_names(&self) -> Vec<String> {
        self.layers
            .modes(&self.invocation.language, &self.invocation.variant)
    }

    /// Walks `requires` from the requested mode, depth first, so prerequisite modes come first.
    pub(super) fn resolve_modes(&mut self) -> anyhow::Result<()> {
        let requested = self.invocation.mode.clone();
        if self.load_mode(&requested)?.is_none() {
            let modes = self.mode_names();
            let mut error = Error::of(CompileErrorKind::UnknownMode {
                mode: requested.clone(),
                language: self.invocation.language.clone(),
                variant: self.invocation.variant.clone(),
            });
            if let Some(s) = did_you_mean(&requested, modes.iter().map(String::as_str)) {
                error = error.note(format!("did you mean `{s}`?"));
            }
            let error = error.note(format!("modes: {}", modes.join(", ")));
            return Err(error.note(self.layers.searched()).into());
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
                        qualified.push(QualifiedNeed {
                            mode: mode_name.clone(),
                            step: step.clone(),
                            index,
                            other: other.to_owned(),
                            other_step: other_step.to_owned(),
                        });
                    }
                }
            }
        }
        for need in qualified {
            let loaded = if mode::check_name(&need.other).is_ok() {
                self.load_mode(&need.other)?
            } else {
                None
            };
            let steps: Option<Vec<String>> =
                loaded.map(|m| m.document.value.steps.keys().cloned().collect());
            if !steps.as_ref().is_some_and(|s| s.contains(&need.other_step)) {
                return Err(self.qualified_need_error(&need, steps).into());
            }
        }
        Ok(())
    }

    /// A `mode.step` need whose mode is unknown (`steps` is None) or lacks the step.
    fn qualified_need_error(&self, need: &QualifiedNeed, steps: Option<Vec<String>>) -> Error {
        let QualifiedNeed {
            other, other_step, ..
        } = need;
        let mode = &self.loaded[&need.mode];
        let index = need.index.to_string();
        let at = mode
            .document
            .positions()
            .value(&["steps", &need.step, "needs", &index]);
        let Some(steps) = steps else {
            let modes = self.mode_names();
            let problem = CompileErrorKind::NeedsUnknownMode {
                step: need.step.to_owned(),
                mode: other.to_owned(),
                need: other_step.to_owned(),
            };
            let mut error = mode.problem_at(problem, at);
            if let Some(s) = did_you_mean(other, modes.iter().map(String::as_str)) {
                error = error.note(format!("did you mean `{s}.{other_step}`?"));
            }
            return error.note(format!("modes: {}", modes.join(", ")));
        };
        let problem = CompileErrorKind::NeedsUnknownStep {
            step: need.step.to_owned(),
            mode: other.to_owned(),
            need: other_step.to_owned(),
        };
        let mut error = mode.problem_at(problem, at);
        if let Some(s) = did_you_mean(other_step, steps.iter().map(String::as_str)) {
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
        let Some((reason, condition)) = self.decide_when(name, required_by)? else {
            return Ok(());
        };
        stack.push(name.to_owned());
        for (index, required) in requires.iter().enumerate() {
            self.load_required(name, index, required, stack)?;
            self.visit(required, Some(name), stack, order)?;
        }
        stack.pop();
        order.push(name.to_owned());
        let source = Some(self.loaded[name].source(None));
        self.decisions.push(ModeDecision {
            name: name.to_owned(),
            included: true,
            reason,
            condition,
            source,
        });
        Ok(())
    }

    /// Why the mode is in the plan and the `when` that holds, in words, or None (and a
    /// recorded decision) when its `when` leaves it out. The requested mode's own `when` is not
    /// asked: asking for a mode is reason enough.
    fn decide_when(
        &mut self,
        name: &str,
        required_by: Option<&str>,
    ) -> anyhow::Result<Option<(String, Option<String>)>> {
        let Some(by) = required_by else {
            return Ok(Some(("requested".to_owned(), None)));
        };
        let reason = format!("required by {by}");
        let mode = &self.loaded[name];
        let Some(when) = &mode.document.value.when else {
            return Ok(Some((reason, None)));
        };
        let renderer = self.renderer_for(mode)?;
        let keep = renderer.truth(when).map_err(|e| {
            mode.problem_at(
                CompileErrorKind::When(renderer.explain(when, true, &e)),
                mode.document.positions().value(&["when"]),
            )
        })?;
        if keep {
            let condition = template::condition(when, true);
            return Ok(Some((
                format!("{reason}, and {condition}"),
                Some(condition),
            )));
        }
        let decision = ModeDecision {
            name: name.to_owned(),
            included: false,
            reason: format!(
                "{reason}, but left out: {}",
                template::condition(when, false)
            ),
            condition: None,
            source: Some(mode.source(None)),
        };
        self.decisions.push(decision);
        Ok(None)
    }

    /// Loads the `index`th mode `name` requires, refusing a cycle, an unknown mode and a chain
    /// deeper than `REQUIRES_DEPTH`.
    fn load_required(
        &mut self,
        name: &str,
        index: usize,
        required: &str,
        stack: &[String],
    ) -> anyhow::Result<()> {
        if stack.len() >= REQUIRES_DEPTH {
            let mode = &self.loaded[name];
            let index = index.to_string();
            return Err(mode
                .problem_at(
                    CompileErrorKind::RequiresTooDeep {
                        mode: name.to_owned(),
                        depth: stack.len(),
                        limit: REQUIRES_DEPTH,
                    },
                    mode.document.positions().value(&["requires", &index]),
                )
                .into());
        }
        if let Some(at) = stack.iter().position(|m| m == required) {
            let mut cycle: Vec<String> = stack[at..].to_vec();
            cycle.push(required.to_owned());
            let mode = &self.loaded[name];
            let index = index.to_string();
            return Err(mode
                .problem_at(
                    CompileErrorKind::ModeCycle { modes: cycle },
                    mode.document.positions().value(&["requires", &index]),
                )
                .into());
        }
        if self.load_mode(required)?.is_some() {
            return Ok(());
        }
        let mode = &self.loaded[name];
        let modes = self.mode_names();
        let index = index.to_string();
        let problem = CompileErrorKind::RequiresUnknown {
            mode: name.to_owned(),
            required: required.to_owned(),
        };
        let mut error = mode.problem_at(
            problem,
            mode.document.positions().value(&["requires", &index]),
        );
        if let Some(s) = did_you_mean(required, modes.iter().map(String::as_str)) {
            error = error.note(format!("did you mean `{s}`?"));
        }
        Err(error.note(format!("modes: {}", modes.join(", "))).into())
    }
}
