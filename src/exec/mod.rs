//! Running a plan: steps in topological order through `process` (argv, no shell), up to `--jobs` at
//! once, output streamed live, failures stopping what depends on them, and Ctrl-C / SIGTERM
//! leaving no container behind.
//!
//! Steps that make state (those with a `done`) run under a per-instance lock, re-probed once the
//! lock is held, so concurrent invocations never initialize the same instance twice.
//!
//! This file is the sequence (probe, ask, lock, re-probe, run, exit code). The order of steps
//! is `walk` (which steps are ready) and `schedule` (what each ready step becomes); `dispatch`
//! carries that out on threads; `step` and `output` run one step; `ready`, `lock`, `orphans`
//! and `interrupts` are what their names say; `events` is what the run loop waits for. The files
//! share the run loop's events and the running steps' `process::Pids`, never each other's
//! internals, so they import each other in one direction only; what a step names (its
//! container, its job) is in its `plan::Facts`.

mod dispatch;
mod events;
mod interrupts;
mod lock;
mod orphans;
mod output;
pub mod ready;
mod schedule;
mod step;
mod walk;
mod watch;

use std::sync::{mpsc, Arc};
use std::time::Instant;

use crate::cli::Invocation;
use crate::error::{Error, Kind};
use crate::mode::Output;
use crate::outcome::{Outcome, Run};
use crate::plan::{Assessment, Plan, Status};
use crate::state::{self, Force};
use crate::text::command_line;
use dispatch::{run_steps, Stop};
use interrupts::Interrupts;
use lock::InstanceLock;

/// How to run a plan, from the command line.
pub struct Options {
    pub jobs: usize,
    pub keep_going: bool,
    /// Keep raw steps' `ok NAME` / `FAIL NAME` lines and test runners' JUnit documents (for a
    /// JUnit report).
    pub collect_cases: bool,
    pub yes: bool,
}

/// Runs the plan: probes, asks, locks, runs the steps, and returns how each ended.
pub fn execute(plan: Plan, invocation: &Invocation, options: &Options) -> anyhow::Result<Run> {
    let (sender, events) = mpsc::channel();
    let signals = Interrupts::listen(sender.clone())?;

    let plan = Arc::new(plan);
    let mut assessment = Arc::new(assess(&plan)?);
    check_client_mounts(&plan, &assessment, invocation)?;
    confirm(&plan, &assessment, options)?;
    let mut outcomes: Vec<Option<Outcome>> = vec![None; plan.steps.len()];
    let started = Instant::now();

    let stateful = stateful_closure(&plan, &assessment);
    let result = if stateful.iter().any(|s| *s) {
        let lock = InstanceLock::acquire(&plan, invocation, &events, &signals)?;
        // Another invocation may have done the work while we waited: ask the engine again.
        assessment = Arc::new(assess(&plan)?);
        let stateful = stateful_closure(&plan, &assessment);
        signals.forward();
        orphans::stop(&plan, &assessment, &stateful)?;
        let steps = (&plan, &assessment);
        let first = run_steps(steps, &stateful, &mut outcomes, options, (&sender, &events));
        drop(lock);
        match first {
            Ok(()) => {
                let rest: Vec<bool> = outcomes.iter().map(Option::is_none).collect();
                run_steps(steps, &rest, &mut outcomes, options, (&sender, &events))
            }
            Err(stop) => Err(stop),
        }
    } else {
        let all = vec![true; plan.steps.len()];
        signals.forward();
        run_steps(
            (&plan, &assessment),
            &all,
            &mut outcomes,
            options,
            (&sender, &events),
        )
    };
    signals.close();

    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Blocked("the run stopped before it".into())))
        .collect();
    Ok(Run {
        plan,
        assessment,
        outcomes,
        seconds: started.elapsed().as_secs_f64(),
        interrupted_by: match result {
            Err(Stop::Signal(signal)) => Some(signal),
            _ => None,
        },
    })
}

/// Turns a finished run into the exit code: an interruption is an error; otherwise the job's
/// own code passes through, or the first failure decides.
pub fn conclude(run: &Run) -> anyhow::Result<u8> {
    if let Some(signal) = run.interrupted_by {
        return Err(Error::new(
            Kind::Interrupted,
            format!(
                "interrupted by {}: running docker commands were stopped",
                if signal == libc::SIGTERM {
                    "SIGTERM"
                } else {
                    "SIGINT"
                }
            ),
        )
        .into());
    }
    finish(&run.plan, &run.assessment, &run.outcomes)
}

/// The state of the plan's steps in the engine; a name taken by someone else stops the run.
fn assess(plan: &Plan) -> anyhow::Result<Assessment> {
    let observed = state::probe(plan)?;
    let (assessment, conflicts) = state::assess(plan, &observed, Force::Honoured);
    match conflicts.into_iter().next() {
        Some(conflict) => Err(conflict.into()),
        None => Ok(assessment),
    }
}

/// Asks the questions of steps that will run and declare `confirm`, unless `--yes` answered.
/// A step that bind-mounts a path of this machine runs only on an engine that sees this
/// machine's files; elsewhere it would run on an empty directory, so the run stops first.
fn check_client_mounts(
    plan: &Plan,
    assessment: &Assessment,
    invocation: &Invocation,
) -> anyhow::Result<()> {
    let mounting = (plan.steps.iter().zip(&assessment.steps))
        .find(|(step, state)| state.status == Status::Run && !step.facts.client_paths.is_empty());
    let Some((step, _)) = mounting else {
        return Ok(());
    };
    let paths = &step.facts.client_paths;
    let head = &plan.docker_head;
    // SAFETY: getuid cannot fail and touches no memory of ours.
    let cache = crate::cache::cache_dir(&invocation.env, unsafe { libc::getuid() });
    if crate::engine::sees_client_files(head, &cache)? {
        return Ok(());
    }
    Err(crate::engine::cannot_see_files(&step.id, paths, head).into())
}

fn confirm(plan: &Plan, assessment: &Assessment, options: &Options) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let running = (plan.steps.iter().zip(&assessment.steps))
        .filter(|(_, state)| state.status == Status::Run)
        .map(|(step, _)| step);
    for step in running {
        let Some(question) = &step.confirm else {
            continue;
        };
        if options.yes {
            continue;
        }
        if !std::io::stdin().is_terminal() {
            return Err(Error::new(
                Kind::Refused,
                format!(
                    "step `{}` would {question}; refusing without confirmation",
                    step.id
                ),
            )
            .note("pass --yes to confirm")
            .into());
        }
        eprint!("host_container: {question}? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            return Err(Error::new(Kind::Refused, "not confirmed: nothing was changed").into());
        }
    }
    Ok(())
}

/// Turns the outcomes into the exit code: the job's own code passes through; otherwise the
/// first failure decides.
fn finish(plan: &Plan, assessment: &Assessment, outcomes: &[Outcome]) -> anyhow::Result<u8> {
    let failed = (plan.steps.iter().zip(&assessment.steps))
        .zip(outcomes)
        .find_map(|(step, outcome)| match outcome {
            Outcome::Failed(failure) => Some((step, failure)),
            _ => None,
        });
    let Some(((step, state), failure)) = failed else {
        return Ok(0);
    };
    if (step.output == Output::Raw || step.interactive) && failure.kind == Kind::StepFailed {
        if let Some(code) = failure.code {
            // The job's code is the answer and it said why itself; only what it cannot know
            // is added.
            if failure.tls_rejected {
                crate::console::announce(&step.id, &format!("note: {}", tls_note(plan)));
            }
            return Ok(u8::try_from(code).unwrap_or(1));
        }
    }
    if failure.kind == Kind::NotRunning {
        // A plain answer, as `systemctl is-active` gives: the command and the steps it kept
        // from running would only be noise.
        let mut error = Error::new(failure.kind, failure.message.clone());
        if plan.engine.product == crate::engine_kind::Product::Podman {
            error = error.note(crate::engine_kind::podman_restart_note(
                plan.engine,
                &plan.language,
                &plan.variant,
                &plan.instance,
            ));
        }
        return Err(error.into());
    }
    let mut error = Error::new(failure.kind, failure.message.clone())
        .note(format!("command: {}", command_line(step.run_argv(state))));
    if !failure.tail.is_empty() {
        error = error.note(format!(
            "last lines of its output:\n      {}",
            failure.tail.join("\n      ")
        ));
    }
    if failure.tls_rejected {
        error = error.note(tls_note(plan));
    }
    if plan.engine.product == crate::engine_kind::Product::Podman {
        error = error.note(format!("the engine is {}", plan.engine));
        let output = failure.tail.join("\n");
        if let Some(hint) = crate::engine_kind::podman_hint(&output) {
            error = error.note(hint);
        }
    }
    if failure.kind == Kind::BaseImageMissing {
        let language = &plan.language;
        error = error.note(format!(
            "pick a base image the engine has with `--set base_image=IMAGE`, {}=IMAGE or \
             HOST_CONTAINER_BASE_IMAGE=IMAGE; scripts/debian-base-image.sh IMAGE {language} \
             builds one from Debian packages",
            crate::language::env_name(language, crate::language::BASE_IMAGE)
        ));
    }
    let blocked: Vec<&str> = plan
        .steps
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| matches!(o, Outcome::Blocked(_)))
        .map(|(step, _)| step.id.as_str())
        .collect();
    if !blocked.is_empty() {
        error = error.note(format!("did not run: {}", blocked.join(", ")));
    }
    Err(error.into())
}

/// What to do when a step's output showed a certificate that did not verify: behind a
/// TLS-intercepting proxy the container lacks the proxy's CA, which the host's bundle has.
fn tls_note(plan: &Plan) -> String {
    format!(
        "its output shows a TLS certificate that could not be verified (a proxy that intercepts \
         TLS, say): give the container a CA bundle with `--set ca_bundle=FILE` (for example \
         `--set ca_bundle=/etc/ssl/certs/ca-certificates.crt`), HOST_CONTAINER_CA_BUNDLE=FILE, or \
         `ca_bundle: FILE` in the project's .host_container/{}/config/{}/language.yaml; the \
         system bundle is usually /etc/ssl/certs/ca-certificates.crt (Debian, Ubuntu) or \
         /etc/pki/tls/certs/ca-bundle.crt (Fedora, RHEL)",
        plan.language, plan.variant
    )
}

/// Marks the steps that make state and must therefore run under the instance lock: every step
/// with a `done` or an archive that runs, and everything those need.
fn stateful_closure(plan: &Plan, assessment: &Assessment) -> Vec<bool> {
    let mut marked: Vec<bool> = (plan.steps.iter().zip(&assessment.steps))
        .map(|(s, state)| (s.done.is_some() || s.archive.is_some()) && state.status == Status::Run)
        .collect();
    for index in (0..plan.steps.len()).rev() {
        if marked[index] {
            for &need in &plan.steps[index].need_indexes {
                marked[need] = true;
            }
        }
    }
    marked
}
