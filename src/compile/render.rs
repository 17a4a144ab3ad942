//! Rendering the steps of every mode in the plan. Each step's templates, as
//! `StepSpec::templates` lists them, are rendered by one loop that puts each result in its slot
//! and locates each error at its field; then the rendered step is checked and, for an `archive`
//! step, its generated commands are made.

use std::ffi::OsString;
use std::path::Path;

use indexmap::IndexMap;

use super::context::rendered_vars;
use super::modes::LoadedMode;
use super::Compiler;
use crate::archive::ArchivePlan;
use crate::docker::docker_head;
use crate::error::{CompileErrorKind, TemplateProblem};
use crate::mode::{ArchiveSpec, Output, Ready, Slot, StdinSpec, StepSpec, TemplateField};
use crate::names::{instance_labels, Names, LABEL_PREFIX};
use crate::plan::{DoneObject, ExcludedStep, Step};
use crate::template::Renderer;

/// Where a rendered step comes from: its mode (an index into the loaded modes), its name, its
/// `needs` as written (for linking; the spec itself is gone by then), and which entry of its
/// `inputs` each rendered input comes from, so errors found later point at the file.
pub(super) struct Origin {
    pub mode: usize,
    pub name: String,
    pub needs: Vec<String>,
    pub input_entries: Vec<usize>,
}

/// The steps `when` kept, in declaration order (mode by mode), and those it left out.
#[derive(Default)]
pub(super) struct RenderedSteps {
    pub steps: Vec<Step>,
    /// Per step, by the same index.
    pub origins: Vec<Origin>,
    pub excluded: Vec<ExcludedStep>,
}

/// A rendered field: a condition's truth, or arguments (one for a template, any number for a
/// splat), each with the exact bytes of an argument that is non-UTF-8 COMMAND text.
enum Rendered {
    Condition(bool),
    Args(Vec<(String, Option<OsString>)>),
}

/// What one step's templates rendered to, slot by slot.
#[derive(Default)]
struct Fields {
    /// The docker head, then the `docker` arguments.
    argv: Vec<String>,
    raw_args: Vec<(usize, OsString)>,
    inputs: Vec<String>,
    /// Which entry of `inputs` each rendered input comes from.
    input_entries: Vec<usize>,
    done: Option<String>,
    uses_images: Vec<String>,
    ready_command: Vec<String>,
    ready_tcp: Option<String>,
    archive_volume: String,
    archive_dir: String,
    archive_image: String,
    archive_stamps: Vec<String>,
    confirm: Option<String>,
    stdin_tar: Option<String>,
    stdin_ignore: Vec<String>,
    /// The commands of `then`, each without the docker head.
    then: Vec<Vec<String>>,
}

impl Fields {
    fn place(&mut self, slot: Slot, args: Vec<(String, Option<OsString>)>) {
        if slot == Slot::Docker {
            for (text, raw) in args {
                if let Some(raw) = raw {
                    self.raw_args.push((self.argv.len(), raw));
                }
                self.argv.push(text);
            }
            return;
        }
        let mut texts = args.into_iter().map(|(text, _)| text);
        // The slots of a single value are those of templates, which render to exactly one.
        match slot {
            Slot::When | Slot::Docker => {}
            Slot::Then(command) => {
                if self.then.len() <= command {
                    self.then.resize(command + 1, Vec::new());
                }
                self.then[command].extend(texts);
            }
            Slot::Input(entry) => {
                self.inputs.extend(texts);
                self.input_entries.resize(self.inputs.len(), entry);
            }
            Slot::UsesImage => self.uses_images.extend(texts),
            Slot::ReadyCommand => self.ready_command.extend(texts),
            Slot::ArchiveStamp => self.archive_stamps.extend(texts),
            Slot::Done => self.done = texts.next(),
            Slot::ReadyTcp => self.ready_tcp = texts.next(),
            Slot::ArchiveVolume => self.archive_volume = texts.next().unwrap_or_default(),
            Slot::ArchiveDir => self.archive_dir = texts.next().unwrap_or_default(),
            Slot::ArchiveImage => self.archive_image = texts.next().unwrap_or_default(),
            Slot::Confirm => self.confirm = texts.next(),
            Slot::StdinTar => self.stdin_tar = texts.next(),
            Slot::StdinIgnore => self
                .stdin_ignore
                .extend(texts.filter(|pattern| !pattern.trim().is_empty())),
        }
    }
}

fn render(renderer: &Renderer, field: &TemplateField) -> Result<Rendered, minijinja::Error> {
    match (field.slot, field.is_expression) {
        (Slot::When, _) => renderer.truth(field.source).map(Rendered::Condition),
        (_, true) => renderer.list_args(field.source).map(Rendered::Args),
        (_, false) => {
            (renderer.render(field.source)).map(|text| Rendered::Args(vec![(text, None)]))
        }
    }
}

/// One step of a mode file while it is rendered.
struct StepAt<'a> {
    mode: &'a LoadedMode,
    name: &'a str,
    spec: &'a StepSpec,
    renderer: &'a Renderer,
}

impl StepAt<'_> {
    fn error(&self, problem: CompileErrorKind, at: (usize, usize)) -> anyhow::Error {
        self.mode.problem_at(problem, at).into()
    }

    /// The position of the value at `below` (a path below the step).
    fn value_at(&self, below: &[&str]) -> (usize, usize) {
        let path: Vec<&str> = ["steps", self.name].iter().chain(below).copied().collect();
        self.mode.document.positions().value(&path)
    }

    fn key_at(&self, below: &[&str]) -> (usize, usize) {
        let path: Vec<&str> = ["steps", self.name].iter().chain(below).copied().collect();
        self.mode.document.positions().key(&path)
    }

    /// Renders every template of the step, or None when its `when` is false (then nothing else
    /// is rendered: a left-out step may use what only exists when it is in).
    fn render_fields(&self, docker_head: Vec<String>) -> anyhow::Result<Option<Fields>> {
        let mut fields = Fields {
            argv: docker_head,
            // One entry per command, also for one whose arguments render to none.
            then: vec![Vec::new(); self.spec.then.len()],
            ..Fields::default()
        };
        for field in self.spec.templates() {
            match render(self.renderer, &field).map_err(|e| self.render_error(&field, e))? {
                Rendered::Condition(false) => return Ok(None),
                Rendered::Condition(true) => {}
                Rendered::Args(args) => fields.place(field.slot, args),
            }
        }
        Ok(Some(fields))
    }

    /// A template's error, at the field, and for an undefined variable at its name in the field.
    fn render_error(&self, field: &TemplateField, e: minijinja::Error) -> anyhow::Error {
        let parts = field.path.parts();
        let below: Vec<&str> = parts.iter().map(String::as_str).collect();
        let (line, mut col) = self.value_at(&below);
        let problem = self.renderer.explain(field.source, field.is_expression, &e);
        if let TemplateProblem::Undefined { name, .. } = &problem {
            let text = &self.mode.document.text;
            col = crate::error::column_within(text, line, col, field.source, name);
        }
        self.error(CompileErrorKind::Template(problem), (line, col))
    }

    /// The docker argv after the head starts with a subcommand, not an option.
    fn check_subcommand(&self, head_len: usize, argv: &[String]) -> anyhow::Result<()> {
        let Some(first) = argv
            .get(head_len)
            .filter(|a| a.is_empty() || a.starts_with('-'))
        else {
            return Ok(());
        };
        let problem = CompileErrorKind::ArgvStartsWithOption {
            step: self.name.to_owned(),
            first: first.clone(),
        };
        Err(self.error(problem, self.value_at(&["docker", "0"])))
    }

    /// The `done` object with its rendered name, which must name a docker object.
    fn done(&self, rendered: Option<String>) -> anyhow::Result<Option<DoneObject>> {
        let Some(done) = self.spec.done() else {
            return Ok(None);
        };
        let kind = done.kind().as_str();
        let name = rendered.unwrap_or_default();
        // An empty name would make the probe ask about nothing in particular.
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()) {
            let problem = CompileErrorKind::DoneName {
                step: self.name.to_owned(),
                kind: kind.to_owned(),
                name,
            };
            return Err(self.error(problem, self.value_at(&["done", kind])));
        }
        Ok(Some(DoneObject {
            kind: done.kind(),
            name,
            fingerprint: String::new(),
        }))
    }

    fn ready(
        &self,
        command: Vec<String>,
        tcp: Option<String>,
    ) -> anyhow::Result<Option<Box<Ready>>> {
        let Some(ready) = &self.spec.ready else {
            return Ok(None);
        };
        if let Some(address) = tcp.as_ref().filter(|a| !is_tcp_address(a)) {
            let problem = CompileErrorKind::ReadyTcp {
                step: self.name.to_owned(),
                address: address.clone(),
            };
            return Err(self.error(problem, self.value_at(&["ready", "tcp"])));
        }
        Ok(Some(Box::new(Ready {
            command,
            tcp,
            timeout: ready.timeout,
        })))
    }

    /// A step fed from a directory cannot also be given the user's stdin.
    fn check_stdin(&self) -> anyhow::Result<()> {
        let spec = self.spec;
        if spec.stdin.is_some() && (spec.interactive || spec.output == Output::Raw) {
            let problem = CompileErrorKind::StdinAndTerminal {
                step: self.name.to_owned(),
            };
            return Err(self.error(problem, self.key_at(&["stdin"])));
        }
        Ok(())
    }
}

/// The commands of an `archive` step: what runs before, the step's own argv, what runs after.
struct ArchiveCommands {
    before: Vec<Vec<String>>,
    argv: Vec<String>,
    after: Vec<Vec<String>>,
    plan: ArchivePlan,
}

impl Compiler<'_> {
    /// Renders the steps of every mode in the plan, in declaration order.
    pub(super) fn render_steps(&mut self) -> anyhow::Result<RenderedSteps> {
        let mut rendered = RenderedSteps::default();
        // Exactly as many as there can be: a vector of steps that doubled past 10,000 would
        // hold room for 6,000 more.
        let declared = self.loaded.values().map(|m| m.document.value.steps.len());
        let declared: usize = declared.sum();
        rendered.steps.reserve_exact(declared);
        rendered.origins.reserve_exact(declared);
        for mode_index in 0..self.loaded.len() {
            let specs = self.loaded[mode_index].take_steps();
            self.render_mode(mode_index, specs, &mut rendered)?;
            self.loaded[mode_index].rendered();
        }
        Ok(rendered)
    }

    /// Renders the steps of one mode. Each spec is dropped once its step is made (only its
    /// `needs` are kept, for linking): a large mode's specs would otherwise be held next to
    /// every rendered step.
    fn render_mode(
        &self,
        mode_index: usize,
        specs: IndexMap<String, StepSpec>,
        rendered: &mut RenderedSteps,
    ) -> anyhow::Result<()> {
        let mode = &self.loaded[mode_index];
        let renderer = self.renderer_for(mode)?;
        let forced = mode.name == self.invocation.mode && mode.document.value.force;
        let vars = rendered_vars(mode, &renderer);
        for (name, spec) in specs {
            let at = StepAt {
                mode,
                name: &name,
                spec: &spec,
                renderer: &renderer,
            };
            let id = format!("{}.{name}", mode.name);
            let Some(mut fields) = at.render_fields(docker_head(self.docker_context))? else {
                let when = spec.when.as_deref().unwrap_or_default();
                let reason = format!("`{when}` is false");
                rendered.excluded.push(ExcludedStep { id, reason });
                continue;
            };
            let input_entries = std::mem::take(&mut fields.input_entries);
            let mut step = self.step(&at, id, fields)?;
            step.forced = forced;
            step.record.vars = vars.clone();
            rendered.steps.push(step);
            rendered.origins.push(Origin {
                mode: mode_index,
                name,
                needs: spec.needs,
                input_entries,
            });
        }
        Ok(())
    }

    /// The step its rendered fields make, once they pass the checks.
    fn step(&self, at: &StepAt, id: String, mut fields: Fields) -> anyhow::Result<Step> {
        let head_len = docker_head(self.docker_context).len();
        at.check_subcommand(head_len, &fields.argv)?;
        let (before, after, archive) = match &at.spec.archive {
            Some(spec) => {
                let commands = self.archive_commands(at, &id, spec, &mut fields);
                fields.argv = commands.argv;
                (
                    commands.before,
                    commands.after,
                    Some(Box::new(commands.plan)),
                )
            }
            None => (
                Vec::new(),
                self.then_commands(at, head_len, &mut fields)?,
                None,
            ),
        };
        if fields.argv.len() == head_len {
            let problem = CompileErrorKind::EmptyArgv {
                step: at.name.to_owned(),
            };
            return Err(at.error(problem, at.key_at(&["docker"])));
        }
        let done = at.done(fields.done)?;
        let ready = at.ready(fields.ready_command, fields.ready_tcp)?;
        at.check_stdin()?;
        let writes_lock = self.lock_target(at)?;
        let spec = at.spec;
        Ok(Step {
            id,
            mode: at.mode.name.clone(),
            description: spec.description.clone(),
            needs: Vec::new(),
            argv: fields.argv,
            source: at.mode.source(Some(at.name)),
            done,
            fingerprint: String::new(),
            before,
            after,
            archive,
            facts: Default::default(),
            interactive: spec.interactive,
            output: spec.output,
            uses_images: fields.uses_images,
            ready,
            confirm: fields.confirm,
            inputs: fields.inputs,
            stdin: (fields.stdin_tar.zip(spec.stdin.as_ref())).map(|(tar, written)| StdinSpec {
                tar,
                ignore: fields.stdin_ignore,
                ..written.clone()
            }),
            dockerfile: None,
            writes_lock,
            forced: false,
            need_indexes: Vec::new(),
            raw_args: fields.raw_args,
            record: crate::record::Record::default(),
            record_masks: Vec::new(),
            propagates: spec.propagates,
        })
    }

    /// Where a `writes_lock` step's lock goes: the variant's lock, which its language must have.
    fn lock_target(&self, at: &StepAt) -> anyhow::Result<Option<Box<crate::lock::Target>>> {
        if !at.spec.writes_lock {
            return Ok(None);
        }
        match &self.lock {
            Some(lock) if !lock.name.ends_with(".json") => Ok(Some(Box::new(lock.target.clone()))),
            _ => Err(at.error(
                CompileErrorKind::WritesLockWithoutLock {
                    step: at.name.to_owned(),
                    language: self.invocation.language.clone(),
                    setting: crate::lock::LOCK_FILE.to_owned(),
                },
                at.key_at(&["writes_lock"]),
            )),
        }
    }

    /// The step's `then` commands, each with the docker head; every one names a subcommand.
    fn then_commands(
        &self,
        at: &StepAt,
        head_len: usize,
        fields: &mut Fields,
    ) -> anyhow::Result<Vec<Vec<String>>> {
        let head = &fields.argv[..head_len];
        let mut commands = Vec::new();
        for (index, args) in std::mem::take(&mut fields.then).into_iter().enumerate() {
            let at_command = || at.value_at(&["then", &index.to_string()]);
            match args.first() {
                None => {
                    let step = at.name.to_owned();
                    return Err(at.error(CompileErrorKind::ThenEmpty { step, index }, at_command()));
                }
                Some(first) if first.is_empty() || first.starts_with('-') => {
                    let problem = CompileErrorKind::ThenStartsWithOption {
                        step: at.name.to_owned(),
                        index,
                        first: first.clone(),
                    };
                    return Err(at.error(problem, at_command()));
                }
                Some(_) => {}
            }
            commands.push([head, &args].concat());
        }
        Ok(commands)
    }

    fn archive_commands(
        &self,
        at: &StepAt,
        id: &str,
        spec: &ArchiveSpec,
        fields: &mut Fields,
    ) -> ArchiveCommands {
        let invocation = self.invocation;
        let mut plan = ArchivePlan::new(
            spec.action,
            std::mem::take(&mut fields.archive_volume),
            Path::new(&fields.archive_dir),
            std::mem::take(&mut fields.archive_image),
            std::mem::take(&mut fields.archive_stamps),
            invocation.force,
        );
        let mut labels = instance_labels(invocation);
        labels.push((format!("{LABEL_PREFIX}.mode"), at.mode.name.clone()));
        // Helpers left running by a killed run are found by their step.
        labels.push((format!("{LABEL_PREFIX}.step"), id.to_owned()));
        let container = format!(
            "{}-run-{}-{}",
            Names::of(invocation).prefix,
            invocation.run_id,
            at.name
        );
        let (before, argv, after) =
            crate::archive::commands(&mut plan, &fields.argv, &container, &labels);
        ArchiveCommands {
            before,
            argv,
            after,
            plan,
        }
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
