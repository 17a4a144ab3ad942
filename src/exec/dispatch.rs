//! Carrying out the schedule: each started step runs on its own thread, and one loop takes
//! their ends and the signals from a channel, so the schedule itself never waits or blocks.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use super::events::Event;
use super::interrupts::stop_running;
use super::output::failure;
use super::schedule::{lane_of, Action, Schedule};
use super::step::run_step;
use super::Options;
use crate::error::Kind;
use crate::mode::Output;
use crate::outcome::{Failure, Outcome, Reported};
use crate::plan::{Assessment, Plan, Step};
use crate::process::Pids;

/// Why a run of steps ended early.
pub(super) enum Stop {
    Signal(i32),
    Failed,
}

/// Runs the `selected` steps of the plan, carrying out the schedule's decisions as they come
/// and answering the steps' ends and signals.
pub(super) fn run_steps(
    (plan, assessment): (&Arc<Plan>, &Arc<Assessment>),
    selected: &[bool],
    outcomes: &mut [Option<Outcome>],
    options: &Options,
    (sender, events): (&Sender<Event>, &Receiver<Event>),
) -> Result<(), Stop> {
    // A signal forwarded before any step started (while the engine lock was taken, say) stops
    // the run before it begins.
    if let Ok(Event::Signal(signal)) = events.try_recv() {
        return Err(Stop::Signal(signal));
    }
    let settled: Vec<Option<bool>> = outcomes
        .iter()
        .map(|o| {
            o.as_ref()
                .map(|o| !matches!(o, Outcome::Failed(_) | Outcome::Blocked(_)))
        })
        .collect();
    let mut schedule = Schedule::new(
        plan.steps
            .iter()
            .map(|s| s.need_indexes.as_slice())
            .collect(),
        (plan.steps.iter().zip(&assessment.steps))
            .map(|(step, state)| lane_of(step, state))
            .collect(),
        (selected, &settled),
        options.jobs,
        options.keep_going,
    );
    let mut running: Vec<(usize, Pids)> = Vec::new();
    loop {
        while let Some(action) = schedule.next() {
            let steps = (plan, assessment);
            if let Some(started) = carry_out(steps, action, outcomes, options, sender) {
                running.push(started);
            }
        }
        if running.is_empty() {
            break;
        }
        match events.recv() {
            Ok(Event::Finished(index, result)) => {
                running.retain(|(i, _)| *i != index);
                schedule.finished(index, result.is_ok());
                outcomes[index] = Some(match result {
                    Ok((seconds, reported)) => Outcome::Succeeded { seconds, reported },
                    Err(failure) => Outcome::Failed(failure),
                });
            }
            // At a terminal, Ctrl-C belongs to the interactive program.
            Ok(Event::Signal(libc::SIGINT)) if schedule.alone_running() => {}
            Ok(Event::Signal(signal)) => {
                stop_running(plan, &running, events);
                for (index, _) in &running {
                    outcomes[*index] = Some(Outcome::Blocked("interrupted".into()));
                }
                return Err(Stop::Signal(signal));
            }
            Err(_) => break,
        }
    }
    if schedule.failed() {
        Err(Stop::Failed)
    } else {
        Ok(())
    }
}

/// Does what the schedule decided; a started step is returned with its process ids.
fn carry_out(
    (plan, assessment): (&Arc<Plan>, &Arc<Assessment>),
    action: Action,
    outcomes: &mut [Option<Outcome>],
    options: &Options,
    sender: &Sender<Event>,
) -> Option<(usize, Pids)> {
    match action {
        Action::Start(index) => {
            let pids = Pids::default();
            spawn_step(
                (plan, assessment),
                index,
                pids.clone(),
                sender.clone(),
                options.collect_cases,
            );
            return Some((index, pids));
        }
        Action::Skip(index) => {
            let step = &plan.steps[index];
            // The requested mode's own skipped steps are news ("already running"); skipped
            // prerequisites are not, or every `single` would start with noise.
            if step.mode == plan.mode {
                let reason = &assessment.steps[index].reason;
                crate::console::announce(&step.id, &format!("{reason}: nothing to do"));
            }
            outcomes[index] = Some(Outcome::Skipped);
        }
        Action::Block { step, by } => {
            let need = &plan.steps[by].id;
            outcomes[step] = Some(Outcome::Blocked(format!("`{need}` did not succeed")));
        }
    }
    None
}

/// Starts a step on its own thread; `collect` keeps a raw step's stdout for its test cases.
fn spawn_step(
    (plan, assessment): (&Arc<Plan>, &Arc<Assessment>),
    index: usize,
    pids: Pids,
    sender: Sender<Event>,
    collect: bool,
) {
    let step = &plan.steps[index];
    let state = &assessment.steps[index];
    let raw = step.output == Output::Raw || step.interactive;
    if !raw {
        crate::console::announce(&step.id, &announcement(plan, step, &state.reason));
    }
    crate::console::started(&step.id, raw);
    let (plan, assessment) = (Arc::clone(plan), Arc::clone(assessment));
    std::thread::spawn(move || {
        let step = &plan.steps[index];
        let started = Instant::now();
        let result = guarded(&step.id, || {
            run_step(&plan, (step, &assessment.steps[index]), &pids, collect)
        })
        .map(|reported| (started.elapsed().as_secs_f64(), reported));
        let result = result.map_err(|mut failure| {
            failure.seconds = started.elapsed().as_secs_f64();
            failure
        });
        crate::console::finished(&step.id, raw);
        let _ = sender.send(Event::Finished(index, result));
    });
}

/// Runs a step's body so that a panic in it becomes the step's failure: the run loop waits for
/// every started step to report, and a thread that died silently would make it wait forever.
fn guarded(
    id: &str,
    body: impl FnOnce() -> Result<Reported, Failure>,
) -> Result<Reported, Failure> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        Err(failure(
            Kind::Io,
            None,
            format!("step `{id}`: internal error (a bug in host_container): {what}"),
            Vec::new(),
        ))
    })
}

/// What the console says as a step starts: why it runs, when that is about its state; otherwise
/// (a step without `done` always runs, and saying so tells nobody anything) what it does, and
/// the condition that brought its mode in.
fn announcement(plan: &Plan, step: &Step, reason: &str) -> String {
    if step.done.is_some() {
        return reason.to_owned();
    }
    // The first clause is enough for a console line; the rest is in `--plan`.
    let description = step
        .description
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let first = description
        .split([';', '('])
        .next()
        .unwrap_or_default()
        .trim()
        .trim_end_matches(['.', ',']);
    let mut text = first.to_owned();
    if text.is_empty() {
        text = format!("{} step of `{}`", step.id, step.mode);
    }
    let condition = plan
        .modes
        .iter()
        .find(|m| m.name == step.mode)
        .and_then(|m| m.condition.as_deref());
    if let Some(condition) = condition {
        text = format!("{text}: {condition}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_step_fails_instead_of_vanishing() {
        let result = guarded("m.s", || panic!("boom"));
        let failure = result.expect_err("a panic is a failure");
        assert_eq!(failure.kind, Kind::Io);
        assert!(failure.message.contains("m.s"), "{}", failure.message);
        assert!(failure.message.contains("boom"), "{}", failure.message);
        assert!(guarded("m.s", || Ok(Reported::default())).is_ok());
    }
}
