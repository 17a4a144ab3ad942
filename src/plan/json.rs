//! The JSON form of a plan (`--plan --format json`, `schemas/plan.schema.json`): the compiled
//! plan and its assessment side by side, as one document. It borrows both, so a plan of 10,000
//! steps is not copied to be printed, and its field order and names are the versioned contract
//! (`PLAN_VERSION`), kept apart from how the types are laid out inside.

use schemars::JsonSchema;
use serde::Serialize;

use super::{
    Assessment, DoneObject, ExcludedStep, GeneratedDockerfile, ModeDecision, ProjectNote, Source,
    Status, Summary,
};
use crate::archive::ArchivePlan;
use crate::mode::{Output, Ready, StdinSpec};

/// The compiled plan: what `--plan` prints and what the executor runs.
#[derive(Serialize, JsonSchema)]
pub struct Plan<'a> {
    /// The version of this JSON form.
    pub version: u32,
    pub language: &'a str,
    pub variant: &'a str,
    pub mode: &'a str,
    pub instance: &'a str,
    /// How the steps' state was learned: `offline`, `probed`, or `unknown: <why>`.
    pub state: String,
    pub modes: &'a [ModeDecision],
    /// In execution order.
    pub steps: Vec<Step<'a>>,
    pub excluded_steps: &'a [ExcludedStep],
    /// Inside a project: where it is and how it reaches the containers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<&'a ProjectNote>,
    /// Docker or Podman, rootful or rootless, as probed (or assumed with `--offline`).
    pub engine: &'a crate::engine_kind::EngineKind,
    /// How many steps run, are up to date, or are unknown.
    pub summary: Summary,
}

/// One docker invocation of the plan.
#[derive(Serialize, JsonSchema)]
pub struct Step<'a> {
    /// `mode.step`, unique in the plan.
    pub id: &'a str,
    pub mode: &'a str,
    pub description: &'a str,
    /// Ids of the steps that finish before this one starts.
    pub needs: Vec<&'a str>,
    /// The full command line; the first element is the docker program.
    pub argv: &'a [String],
    pub status: Status,
    /// Why the step runs, is skipped, or is unknown.
    pub reason: &'a str,
    pub source: &'a Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done: Option<&'a DoneObject>,
    /// Commands run before `argv` (removing a stale container it replaces).
    pub before: Vec<&'a [String]>,
    /// Commands run after `argv` succeeded (recording a stamp).
    pub after: &'a [Vec<String>],
    pub interactive: bool,
    pub output: Output,
    pub uses_images: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<&'a Ready>,
    /// A built-in backup or restore of one volume, run through the commands shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<&'a ArchivePlan>,
    /// A question asked before the step runs (answered by `--yes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm: Option<&'a str>,
    /// Input files and directories that fed the fingerprint.
    pub inputs: &'a [String],
    /// What the command reads on stdin, streamed from this machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin: Option<&'a StdinSpec>,
    /// The Dockerfile a build reads on stdin (`--file=-`): its own with the labels in one
    /// instruction, so that they add no build steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<&'a GeneratedDockerfile>,
    /// The lock file the step's output becomes (`writes_lock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writes_lock: Option<&'a crate::lock::Target>,
}

impl<'a> Plan<'a> {
    /// The document of `plan` in the state `assessment` found.
    pub fn of(plan: &'a super::Plan, assessment: &'a Assessment) -> Plan<'a> {
        let steps = (plan.steps.iter().zip(&assessment.steps))
            .map(|(step, state)| Step {
                id: &step.id,
                mode: &step.mode,
                description: &step.description,
                needs: step.needs.iter().map(|need| &**need).collect(),
                argv: step.run_argv(state),
                status: state.status,
                reason: &state.reason,
                source: &step.source,
                done: step.done.as_ref(),
                before: step.before_in(state).map(Vec::as_slice).collect(),
                after: &step.after,
                interactive: step.interactive,
                output: step.output,
                uses_images: &step.uses_images,
                ready: step.ready.as_deref(),
                archive: step.archive.as_deref(),
                confirm: step.confirm.as_deref(),
                inputs: &step.inputs,
                stdin: step.stdin.as_ref(),
                dockerfile: step.dockerfile.as_deref(),
                writes_lock: step.writes_lock.as_deref(),
            })
            .collect();
        Plan {
            version: plan.version,
            language: &plan.language,
            variant: &plan.variant,
            mode: &plan.mode,
            instance: &plan.instance,
            state: assessment.source.to_string(),
            modes: &plan.modes,
            steps,
            excluded_steps: &plan.excluded_steps,
            project: plan.project.as_ref(),
            engine: &plan.engine,
            summary: assessment.summary,
        }
    }
}
