//! The plan: the steps one invocation runs, every string rendered and every argv final, in a
//! stable topological order. `compile` makes it, `state` marks what is done, and both `print` and
//! `exec` read this same value, which is what makes the printed plan the executed one.

use std::ffi::OsString;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Serialize;

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

fn shared_strs<S: serde::Serializer>(texts: &[Arc<str>], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(texts.iter().map(|text| &**text))
}

/// The object that makes a step done, rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct DoneObject {
    pub kind: DoneKind,
    pub name: String,
    /// The step's fingerprint, recorded as a label on the object (or the stamp).
    pub fingerprint: String,
}

// Rarely used parts (`ready`, `archive`) are boxed: a plan of 10,000 steps holds this struct
// 10,000 times. (Not a doc comment: those become the schema's descriptions.)
/// One docker invocation of the plan.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Step {
    /// `mode.step`, unique in the plan.
    pub id: String,
    pub mode: String,
    pub description: String,
    // Shared: in 4 chained modes of 1,500 steps each step lists the 1,500 of the mode before,
    // and a `String` each was 270 MB. (Not a doc comment: those become the schema's words.)
    /// Ids of the steps that finish before this one starts.
    #[serde(serialize_with = "shared_strs")]
    #[schemars(with = "Vec<String>")]
    pub needs: Vec<Arc<str>>,
    /// The full command line; the first element is the docker program.
    pub argv: Vec<String>,
    pub status: Status,
    /// Why the step runs, is skipped, or is unknown.
    pub reason: String,
    pub source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done: Option<DoneObject>,
    /// A digest of the rendered argv, the inputs' content and the needed steps' fingerprints;
    /// with `done`, it decides whether the step is stale, and the JSON shows it as
    /// `done.fingerprint` (a CI cache can be keyed on it).
    #[serde(skip)]
    pub fingerprint: String,
    /// Commands run before `argv` (removing a stale container it replaces).
    pub before: Vec<Vec<String>>,
    /// Commands run after `argv` succeeded (recording a stamp).
    pub after: Vec<Vec<String>>,
    pub interactive: bool,
    pub output: Output,
    pub uses_images: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<Box<Ready>>,
    /// A built-in backup or restore of one volume, run through the commands shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<Box<ArchivePlan>>,
    /// `before` commands that come from the mode file rather than from the probe.
    #[serde(skip)]
    pub planned_before: Vec<Vec<String>>,
    /// A `done: {service}` step's `service create` argv as planned: the probe may turn `argv`
    /// into the `service update` of an existing service, and a later probe starts from this.
    #[serde(skip)]
    pub create_argv: Vec<String>,
    /// The swarm service the step runs as a job (created, waited for, its logs shown, its
    /// exit code passed on, removed), set by the compiler.
    #[serde(skip)]
    pub job_service: Option<String>,
    /// A question asked before the step runs (answered by `--yes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm: Option<String>,
    /// Input files and directories that fed the fingerprint.
    pub inputs: Vec<String>,
    /// What the command reads on stdin, streamed from this machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin: Option<mode::StdinSpec>,
    /// The Dockerfile a build reads on stdin (`--file=-`): its own with the labels in one
    /// instruction, so that they add no build steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<Box<GeneratedDockerfile>>,
    /// The lock file the step's output becomes (`writes_lock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writes_lock: Option<Box<crate::lock::Target>>,
    /// Runs even when done (its mode was requested and is declared `force`).
    #[serde(skip)]
    pub forced: bool,
    /// Positions in `Plan::steps` of `needs`.
    #[serde(skip)]
    pub need_indexes: Vec<usize>,
    /// Arguments of `argv` (by position) that are COMMAND arguments which are not UTF-8: `argv`
    /// shows them as text, these are the exact bytes that run.
    #[serde(skip)]
    pub raw_args: Vec<(usize, OsString)>,
    /// What a step with `done` records with its state, to say later what changed.
    #[serde(skip)]
    pub record: crate::record::Record,
    /// Text in the argv that is masked in the record: input paths (content-addressed merged
    /// layers) and the objects of needed steps, whose changes the record names otherwise.
    #[serde(skip)]
    pub record_masks: Vec<(String, String)>,
    /// When it runs: whether the steps that need it must run too. A step that runs only
    /// because its object is missing, with an unchanged fingerprint, makes an equivalent object
    /// and does not (the CI cache cut-off).
    #[serde(skip)]
    pub invalidates: bool,
    /// From the mode file: whether this step running again can make the steps that need it
    /// stale (see `mode::StepSpec::propagates`).
    #[serde(skip)]
    pub propagates: bool,
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

impl Step {
    /// The argv exactly as it runs.
    pub fn os_argv(&self) -> Vec<OsString> {
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// A step left out by its `when`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExcludedStep {
    pub id: String,
    pub reason: String,
}

/// The compiled plan: what `--plan` prints and what the executor runs.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Plan {
    /// The version of this JSON form.
    pub version: u32,
    pub language: String,
    pub variant: String,
    pub mode: String,
    pub instance: String,
    /// How the steps' state was learned: `offline`, `probed`, or `unknown: <why>`.
    pub state: String,
    pub modes: Vec<ModeDecision>,
    /// In execution order.
    pub steps: Vec<Step>,
    pub excluded_steps: Vec<ExcludedStep>,
    /// Inside a project: where it is and how it reaches the containers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<ProjectNote>,
    /// Docker or Podman, rootful or rootless, as probed (or assumed with `--offline`).
    pub engine: crate::engine_kind::EngineKind,
    /// How many steps run, are up to date, or are unknown.
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
    pub fn of(steps: &[Step]) -> Summary {
        let mut summary = Summary::default();
        for step in steps {
            match step.status {
                Status::Skip => summary.up_to_date += 1,
                Status::Unknown => summary.unknown += 1,
                Status::Run if step.done.is_some() || step.forced => summary.to_run += 1,
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
    let schema = schemars::schema_for!(Plan);
    serde_json::to_string_pretty(&schema).expect("a schema always serializes") + "\n"
}

/// Sets each step's status and reason from what is known without the engine.
pub fn mark_offline(plan: &mut Plan, why: &str) {
    for step in &mut plan.steps {
        let (status, reason) = if step.forced {
            (
                Status::Run,
                format!("mode `{}` was requested: runs even when done", step.mode),
            )
        } else if let Some(done) = &step.done {
            (
                Status::Unknown,
                format!(
                    "{why}: whether {} `{}` is up to date is not known",
                    done.kind, done.name
                ),
            )
        } else {
            (Status::Run, "no `done` condition: always runs".to_owned())
        };
        step.status = status;
        step.reason = reason;
    }
    plan.summary = Summary::of(&plan.steps);
}

/// Treats every step as not forced: `--check init` asks whether init is up to date, not
/// whether a requested init would run again.
pub fn unforce(plan: &mut Plan) {
    for step in &mut plan.steps {
        step.forced = false;
    }
}
