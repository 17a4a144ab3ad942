//! The plan: the steps one invocation runs, every string rendered and every argv final, in a
//! stable topological order. `compile` makes it and nothing changes it afterwards; `state` makes
//! the `Assessment` beside it (what is done, and why). `print` and `exec` read the same two
//! values, which is what makes the printed plan the executed one.

use std::ffi::OsString;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Serialize;

pub mod json;

use crate::archive::ArchivePlan;
use crate::mode::{self, DoneKind, Output, Ready};

/// Bumped whenever the JSON form of a plan changes incompatibly.
pub const PLAN_VERSION: u32 = 1;

/// What the executor will do with a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The step runs.
    Run,
    /// The step is done and up to date; it is skipped.
    Skip,
    /// Whether the step is done is not known (offline, or no engine answered).
    Unknown,
}

// The file and layer are shared by the steps of one mode.
/// Where a step was declared.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Source {
    /// The mode file, as found on disk.
    #[serde(serialize_with = "shared_str")]
    pub file: Arc<str>,
    /// The configuration layer: builtin, installdir, home, or `config-dir N`.
    #[serde(serialize_with = "shared_str")]
    pub layer: Arc<str>,
    /// The line of the step's key in the file.
    pub line: usize,
}

/// Serde's `Arc` support is behind its `rc` feature; this is all the plan needs of it.
fn shared_str<S: serde::Serializer>(text: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(text)
}

/// The object that makes a step done, rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct DoneObject {
    pub kind: DoneKind,
    pub name: String,
    /// The step's fingerprint, recorded as a label on the object (or the stamp).
    pub fingerprint: String,
}

/// One docker invocation of the plan, as the compiler made it: nothing changes it afterwards
/// (what the engine holds is the step's `StepState`). Rarely used parts (`ready`, `archive`) are
/// boxed: a plan of 10,000 steps holds this struct 10,000 times. Its JSON form is `json::Step`.
#[derive(Debug, Clone)]
pub struct Step {
    /// `mode.step`, unique in the plan.
    pub id: String,
    pub mode: String,
    pub description: String,
    /// Ids of the steps that finish before this one starts. Shared: in 4 chained modes of 1,500
    /// steps each step lists the 1,500 of the mode before, and a `String` each was 270 MB.
    pub needs: Vec<Arc<str>>,
    /// The full command line; the first element is the docker program. For a `done: {service}`
    /// step, its `service create` (the probe may run a `service update` instead).
    pub argv: Vec<String>,
    pub source: Source,
    pub done: Option<DoneObject>,
    /// A digest of the rendered argv, the inputs' content and the needed steps' fingerprints;
    /// with `done`, it decides whether the step is stale, and the JSON shows it as
    /// `done.fingerprint` (a CI cache can be keyed on it).
    pub fingerprint: String,
    /// Commands run before `argv` (a stamp's "not finished" mark); the probe may add its own
    /// (`StepState::removals`).
    pub before: Vec<Vec<String>>,
    /// Commands run after `argv` succeeded (recording a stamp).
    pub after: Vec<Vec<String>>,
    pub interactive: bool,
    pub output: Output,
    pub uses_images: Vec<String>,
    pub ready: Option<Box<Ready>>,
    /// A built-in backup or restore of one volume, run through the commands shown.
    pub archive: Option<Box<ArchivePlan>>,
    /// What the step's docker command names, read once by the compiler from the argv it made.
    pub facts: Facts,
    /// A question asked before the step runs (answered by `--yes`).
    pub confirm: Option<String>,
    /// Input files and directories that fed the fingerprint.
    pub inputs: Vec<String>,
    /// What the command reads on stdin, streamed from this machine.
    pub stdin: Option<mode::StdinSpec>,
    /// The Dockerfile a build reads on stdin (`--file=-`): its own with the labels in one
    /// instruction, so that they add no build steps.
    pub dockerfile: Option<Box<GeneratedDockerfile>>,
    /// The lock file the step's output becomes (`writes_lock`).
    pub writes_lock: Option<Box<crate::lock::Target>>,
    /// Runs even when done (its mode was requested and is declared `force`).
    pub forced: bool,
    /// Positions in `Plan::steps` of `needs`.
    pub need_indexes: Vec<usize>,
    /// Arguments of `argv` (by position) that are COMMAND arguments which are not UTF-8: `argv`
    /// shows them as text, these are the exact bytes that run.
    pub raw_args: Vec<(usize, OsString)>,
    /// What a step with `done` records with its state, to say later what changed.
    pub record: crate::record::Record,
    /// Text in the argv that is masked in the record: input paths (content-addressed merged
    /// layers) and the objects of needed steps, whose changes the record names otherwise.
    pub record_masks: Vec<(String, String)>,
    /// From the mode file: whether this step running again can make the steps that need it
    /// stale (see `mode::StepSpec::propagates`).
    pub propagates: bool,
}

/// What a step's docker command creates, removes and mounts: set once at compile time, so that
/// no module after the compiler reads it back out of the argv.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The container a `run`/`create` names with `--name` (removed when the run is stopped; a
    /// `ready` command runs in it).
    pub container: Option<String>,
    /// The swarm service a `service create` makes (or, after the probe, updates).
    pub service: Option<String>,
    /// The swarm service the step runs as a job (created, waited for, its logs shown, its
    /// exit code passed on, removed).
    pub job_service: Option<String>,
    /// The services a `service rm` removes (waited for until they are gone).
    pub removed_services: Vec<String>,
    /// The operands of `rm`, `container rm`, `volume rm`, `image rm`, `service rm` and `rmi`:
    /// probed, so that a step never removes another instance's object.
    pub removes: Vec<String>,
    /// The named volumes a service's tasks mount, unless they are pinned to the manager.
    pub service_volumes: Vec<String>,
    /// The paths of this machine the command bind-mounts.
    pub client_paths: Vec<String>,
    /// Where in `after` a stamp step's record is made (its `volume create` with the step's
    /// labels), which gets the installed tree's digest as one more label.
    pub stamp_record: Option<usize>,
    /// The `--label=` arguments the command gives what it creates, but its fingerprint: a
    /// readiness check's throw-away container carries them, so an interrupted one is found.
    pub labels: Vec<String>,
}

/// A build's Dockerfile with the instance's and the step's labels in one `LABEL` instruction:
/// merged into the last instruction when that is a `LABEL`, else one line appended.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GeneratedDockerfile {
    /// The Dockerfile it was made from.
    pub source: String,
    /// The labels the text adds, in its order.
    pub labels: indexmap::IndexMap<String, String>,
    /// What the build reads on stdin.
    pub text: String,
}

impl Plan {
    /// The part of a command of this plan after the docker head: its subcommand and arguments.
    pub fn args_of<'a>(&self, argv: &'a [String]) -> &'a [String] {
        argv.get(self.docker_head.len()..).unwrap_or_default()
    }

    /// A docker command of this plan: the head, then `rest`.
    pub fn command(&self, rest: &[&str]) -> Vec<String> {
        let mut argv = self.docker_head.clone();
        argv.extend(rest.iter().map(|word| (*word).to_owned()));
        argv
    }
}

impl Step {
    /// The argv that runs in `state`: the step's own, or the probe's `service update`.
    pub fn run_argv<'a>(&'a self, state: &'a StepState) -> &'a [String] {
        state.update.as_deref().unwrap_or(&self.argv)
    }

    /// The commands that run before the argv in `state`: the step's own, then the probe's.
    pub fn before_in<'a>(&'a self, state: &'a StepState) -> impl Iterator<Item = &'a Vec<String>> {
        self.before.iter().chain(&state.removals)
    }

    /// The argv exactly as it runs in `state`.
    pub fn os_argv(&self, state: &StepState) -> Vec<OsString> {
        if let Some(update) = &state.update {
            // Non-UTF-8 COMMAND bytes sit at positions of the create argv only.
            return update.iter().map(OsString::from).collect();
        }
        let mut argv: Vec<OsString> = self.argv.iter().map(OsString::from).collect();
        for (index, raw) in &self.raw_args {
            if let Some(arg) = argv.get_mut(*index) {
                *arg = raw.clone();
            }
        }
        argv
    }
}

/// Why a mode is or is not part of the plan.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ModeDecision {
    pub name: String,
    pub included: bool,
    pub reason: String,
    /// The `when` that brought the mode in, in words: the console says it as the mode's steps
    /// start.
    #[serde(skip)]
    pub condition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// A step left out by its `when`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExcludedStep {
    pub id: String,
    pub reason: String,
}

/// The compiled plan: what `--plan` prints and what the executor runs. Nothing changes it after
/// the compiler: what the engine holds is its `Assessment`, and `json::Plan` is the two together.
#[derive(Debug, Clone)]
pub struct Plan {
    pub version: u32,
    pub language: String,
    pub variant: String,
    pub mode: String,
    pub instance: String,
    pub modes: Vec<ModeDecision>,
    /// In execution order.
    pub steps: Vec<Step>,
    pub excluded_steps: Vec<ExcludedStep>,
    /// Inside a project: where it is and how it reaches the containers.
    pub project: Option<ProjectNote>,
    /// The docker program and its global options: the head of every argv of the plan.
    pub docker_head: Vec<String>,
    /// Docker or Podman, rootful or rootless, as probed (or assumed with `--offline`).
    pub engine: crate::engine_kind::EngineKind,
}

/// What is known of one step: decided by `state` from what the engine holds (or, without it,
/// from the plan alone), beside the compiled step it describes. Print and exec read the two
/// together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepState {
    pub status: Status,
    /// Why the step runs, is skipped, or is unknown.
    pub reason: String,
    /// The images the step uses that the engine does not hold: docker will try to pull them.
    pub missing_images: Vec<String>,
    /// Commands the probe adds after the step's own `before`: removing a stale container.
    pub removals: Vec<Vec<String>>,
    /// Runs even when done: its mode was requested and is declared `force` (not under
    /// `--check`, which asks whether it is up to date).
    pub forced: bool,
    /// The `service update` that brings an existing service to the step's configuration, run
    /// instead of the step's `service create`.
    pub update: Option<Vec<String>>,
    /// When it runs: whether the steps that need it must run too. A step that runs only
    /// because its object is missing, with an unchanged fingerprint, makes an equivalent object
    /// and does not (the CI cache cut-off).
    pub invalidates: bool,
}

/// How the steps' state was learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSource {
    /// Not asked (`--offline`).
    Offline,
    /// The engine answered.
    Probed,
    /// The engine was asked and did not answer: why.
    Unknown(String),
}

impl std::fmt::Display for StateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateSource::Offline => f.write_str("offline"),
            StateSource::Probed => f.write_str("probed"),
            StateSource::Unknown(why) => write!(f, "unknown: {why}"),
        }
    }
}

/// The state of every step of a plan, in the plan's order.
#[derive(Debug, Clone)]
pub struct Assessment {
    pub source: StateSource,
    /// One per step of the plan, by position.
    pub steps: Vec<StepState>,
    pub summary: Summary,
}

/// The project a plan runs in (the directory holding the project layer `.host_container/`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProjectNote {
    /// The project's directory on this machine.
    pub root: String,
    /// Where containers see it (`project_dir`).
    pub dir: String,
    /// Copied into a volume (the engine cannot see this machine's files), else bind-mounted.
    pub copied: bool,
    /// Whether the engine was not asked (`--offline`) and the visibility is assumed.
    pub assumed: bool,
}

impl std::fmt::Display for ProjectNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.copied {
            "copied into a volume: the engine cannot see this machine's files"
        } else {
            "bind-mounted: the engine sees this machine's files"
        };
        write!(f, "{} at {}, {how}", self.root, self.dir)?;
        if self.assumed {
            let guess = if self.copied {
                "an engine at another address"
            } else {
                "a local engine"
            };
            write!(f, " (assumed, not asked: {guess})")?;
        }
        Ok(())
    }
}

/// The counts of a plan's steps by what will happen to them. `to_run` counts the steps with a
/// `done` condition (or forced) that run: those are what `--check` asks about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Summary {
    pub to_run: usize,
    pub up_to_date: usize,
    pub unknown: usize,
    /// Steps without a `done` condition: they run every time (a job, a shell).
    pub always_run: usize,
}

impl Summary {
    pub fn of(steps: &[Step], states: &[StepState]) -> Summary {
        let mut summary = Summary::default();
        for (step, state) in steps.iter().zip(states) {
            match state.status {
                Status::Skip => summary.up_to_date += 1,
                Status::Unknown => summary.unknown += 1,
                Status::Run if step.done.is_some() || state.forced => summary.to_run += 1,
                Status::Run => summary.always_run += 1,
            }
        }
        summary
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} to run, {} up to date, {} unknown, {} always run",
            self.to_run, self.up_to_date, self.unknown, self.always_run
        )
    }
}

/// The JSON Schema of `--plan --format json`, as committed in `schemas/plan.schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(json::Plan);
    serde_json::to_string_pretty(&schema).expect("a schema always serializes") + "\n"
}
