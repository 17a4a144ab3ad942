//! Running a plan: steps in topological order through duct (argv, no shell), up to `--jobs` at
//! once, output streamed live, failures stopping what depends on them, and Ctrl-C / SIGTERM
//! leaving no container behind.
//!
//! Steps that make state (those with a `done`) run under a per-instance lock, re-probed once the
//! lock is held, so concurrent invocations never initialize the same instance twice.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::cli::Invocation;
use crate::config;
use crate::docker;
use crate::docker::docker_head_len;
use crate::engine_lock::EngineLock;
use crate::error::{Error, Kind};
use crate::mode::Output;
use crate::names::Names;
use crate::outcome::{parse_cases, Case, Failure, Outcome, Run};
use crate::plan::{Plan, Status, Step};
use crate::safe_fs;
use crate::state;
use crate::text::command_line;

/// How many lines of a failed step's output the error shows.
const TAIL_LINES: usize = 20;
/// How many stdout lines of a raw step are kept for its test cases.
const MAX_CASE_LINES: usize = 10_000;
/// How long stopped docker commands get to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct Options {
    pub jobs: usize,
    pub keep_going: bool,
    /// Keep raw steps' `ok NAME` / `FAIL NAME` lines (for a JUnit report).
    pub collect_cases: bool,
    pub yes: bool,
    pub force: bool,
}

enum Event {
    Finished(usize, Result<(f64, Vec<Case>), Failure>),
    Signal(i32),
}

/// The process ids of a running step's current docker command, for stopping it.
type Running = Arc<Mutex<Vec<u32>>>;

/// Runs the plan: probes, asks, locks, runs the steps, and returns how each ended.
pub fn execute(mut plan: Plan, invocation: &Invocation, options: &Options) -> anyhow::Result<Run> {
    let (sender, events) = mpsc::channel();
    let signals = Interrupts::listen(sender.clone())?;

    let observed = state::probe(&plan)?;
    if let Some(conflict) = state::apply(&mut plan, &observed).into_iter().next() {
        return Err(conflict.into());
    }
    check_client_mounts(&plan, invocation)?;
    confirm(&plan, options)?;
    let mut outcomes: Vec<Option<Outcome>> = vec![None; plan.steps.len()];
    let started = Instant::now();

    let stateful = stateful_closure(&plan);
    let result = if stateful.iter().any(|s| *s) {
        let lock = InstanceLock::acquire(&plan, invocation, &events, &signals)?;
        // Another invocation may have done the work while we waited: ask the engine again.
        let observed = state::probe(&plan)?;
        if let Some(conflict) = state::apply(&mut plan, &observed).into_iter().next() {
            return Err(conflict.into());
        }
        let stateful = stateful_closure(&plan);
        signals.forward();
        state::stop_orphans(&plan, &stateful)?;
        let first = run_steps(&plan, &stateful, &mut outcomes, options, &sender, &events);
        drop(lock);
        match first {
            Ok(()) => {
                let rest: Vec<bool> = outcomes.iter().map(Option::is_none).collect();
                run_steps(&plan, &rest, &mut outcomes, options, &sender, &events)
            }
            Err(stop) => Err(stop),
        }
    } else {
        let all = vec![true; plan.steps.len()];
        signals.forward();
        run_steps(&plan, &all, &mut outcomes, options, &sender, &events)
    };
    signals.close();

    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Blocked("the run stopped before it".into())))
        .collect();
    Ok(Run {
        plan,
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
    finish(&run.plan, &run.outcomes)
}

/// Asks the questions of steps that will run and declare `confirm`, unless `--yes` answered.
/// A step that bind-mounts a path of this machine runs only on an engine that sees this
/// machine's files; elsewhere it would run on an empty directory, so the run stops first.
fn check_client_mounts(plan: &Plan, invocation: &Invocation) -> anyhow::Result<()> {
    let mounting = plan.steps.iter().find_map(|step| {
        let paths = crate::engine::client_paths(&step.argv);
        (step.status == Status::Run && !paths.is_empty()).then_some((step, paths))
    });
    let Some((step, paths)) = mounting else {
        return Ok(());
    };
    let head = &step.argv[..docker_head_len(&step.argv)];
    // SAFETY: getuid cannot fail and touches no memory of ours.
    let cache = crate::cache::cache_dir(&invocation.env, unsafe { libc::getuid() });
    if crate::engine::sees_client_files(head, &cache)? {
        return Ok(());
    }
    Err(crate::engine::cannot_see_files(&step.id, &paths, head).into())
}

fn confirm(plan: &Plan, options: &Options) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    for step in plan.steps.iter().filter(|s| s.status == Status::Run) {
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
fn finish(plan: &Plan, outcomes: &[Outcome]) -> anyhow::Result<u8> {
    let failed = plan
        .steps
        .iter()
        .zip(outcomes)
        .find_map(|(step, outcome)| match outcome {
            Outcome::Failed(failure) => Some((step, failure)),
            _ => None,
        });
    let Some((step, failure)) = failed else {
        return Ok(0);
    };
    if (step.output == Output::Raw || step.interactive) && failure.kind == Kind::StepFailed {
        if let Some(code) = failure.code {
            return Ok(u8::try_from(code).unwrap_or(1));
        }
    }
    if failure.kind == Kind::NotRunning {
        // A plain answer, as `systemctl is-active` gives: the command and the steps it kept
        // from running would only be noise.
        return Err(Error::new(failure.kind, failure.message.clone()).into());
    }
    let mut error = Error::new(failure.kind, failure.message.clone())
        .note(format!("command: {}", command_line(&step.argv)));
    if !failure.tail.is_empty() {
        error = error.note(format!(
            "last lines of its output:\n      {}",
            failure.tail.join("\n      ")
        ));
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

/// Marks the steps that make state and must therefore run under the instance lock: every step
/// with a `done` or an archive that runs, and everything those need.
fn stateful_closure(plan: &Plan) -> Vec<bool> {
    let mut marked: Vec<bool> = plan
        .steps
        .iter()
        .map(|s| (s.done.is_some() || s.archive.is_some()) && s.status == Status::Run)
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

enum Stop {
    Signal(i32),
    Failed,
}

/// Runs the `selected` steps of the plan (Kahn's algorithm over the already ordered steps).
fn run_steps(
    plan: &Plan,
    selected: &[bool],
    outcomes: &mut [Option<Outcome>],
    options: &Options,
    sender: &Sender<Event>,
    events: &Receiver<Event>,
) -> Result<(), Stop> {
    // A signal forwarded before any step started (while the engine lock was taken, say) stops
    // the run before it begins.
    if let Ok(Event::Signal(signal)) = events.try_recv() {
        return Err(Stop::Signal(signal));
    }
    let mut running: Vec<(usize, Running)> = Vec::new();
    let mut failed = false;
    loop {
        // Decide every selected step whose needs are settled, in plan order.
        let mut started_any = false;
        for index in 0..plan.steps.len() {
            if !selected[index]
                || outcomes[index].is_some()
                || running.iter().any(|(i, _)| *i == index)
            {
                continue;
            }
            let step = &plan.steps[index];
            let mut waiting = false;
            let mut blocked_by = None;
            for &need in &step.need_indexes {
                match &outcomes[need] {
                    None => waiting = true,
                    Some(Outcome::Failed(_) | Outcome::Blocked(_)) => {
                        blocked_by = Some(plan.steps[need].id.clone())
                    }
                    Some(_) => {}
                }
            }
            if let Some(need) = blocked_by {
                outcomes[index] = Some(Outcome::Blocked(format!("`{need}` did not succeed")));
                continue;
            }
            if waiting {
                continue;
            }
            if step.status == Status::Skip {
                // The requested mode's own skipped steps are news ("already running");
                // skipped prerequisites are not, or every `single` would start with noise.
                if step.mode == plan.mode {
                    crate::console::announce(&step.id, &format!("{}: nothing to do", step.reason));
                }
                outcomes[index] = Some(Outcome::Skipped);
                continue;
            }
            if failed && !options.keep_going {
                continue;
            }
            let exclusive =
                step.interactive || running.iter().any(|(i, _)| plan.steps[*i].interactive);
            if running.len() >= options.jobs || (exclusive && !running.is_empty()) {
                continue;
            }
            let pids: Running = Arc::default();
            spawn_step(
                plan,
                index,
                pids.clone(),
                sender.clone(),
                options.collect_cases,
            );
            running.push((index, pids));
            started_any = true;
        }
        if running.is_empty() {
            if started_any {
                continue;
            }
            break;
        }
        match events.recv() {
            Ok(Event::Finished(index, result)) => {
                running.retain(|(i, _)| *i != index);
                outcomes[index] = Some(match result {
                    Ok((seconds, cases)) => Outcome::Succeeded { seconds, cases },
                    Err(failure) => {
                        failed = true;
                        Outcome::Failed(failure)
                    }
                });
            }
            Ok(Event::Signal(signal)) => {
                let interactive = running.iter().any(|(i, _)| plan.steps[*i].interactive);
                // At a terminal, Ctrl-C belongs to the interactive program.
                if signal == libc::SIGINT && interactive {
                    continue;
                }
                stop_running(plan, &running, events);
                for (index, _) in &running {
                    outcomes[*index] = Some(Outcome::Blocked("interrupted".into()));
                }
                return Err(Stop::Signal(signal));
            }
            Err(_) => break,
        }
    }
    if failed {
        Err(Stop::Failed)
    } else {
        Ok(())
    }
}

/// The container a `docker run`/`create` argv names with `--name`, if any.
fn container_name(argv: &[String]) -> Option<String> {
    let args = &argv[docker_head_len(argv)..];
    let sub = args.first()?.as_str();
    let creates = matches!(sub, "run" | "create")
        || (sub == "container"
            && matches!(args.get(1).map(String::as_str), Some("run" | "create")));
    if !creates {
        return None;
    }
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--name" {
            return iter.next().cloned();
        }
        if let Some(name) = arg.strip_prefix("--name=") {
            return Some(name.to_owned());
        }
    }
    None
}

/// Stops every running step: removes the containers they started (which also ends `docker
/// run`), sends SIGTERM to the docker commands, and SIGKILL to any still there after a grace.
fn stop_running(plan: &Plan, running: &[(usize, Running)], events: &Receiver<Event>) {
    crate::interrupt::stop();
    for (index, pids) in running {
        let step = &plan.steps[*index];
        if let Some(name) = container_name(&step.argv) {
            let mut remove = step.argv[..docker_head_len(&step.argv)].to_vec();
            remove.extend(["rm".to_owned(), "--force".to_owned(), name]);
            let _ = docker::capture(&remove);
        }
        let head = docker_head_len(&step.argv);
        if let Some(job) = crate::swarm::job_name(&step.argv[head..]) {
            let mut remove = step.argv[..head].to_vec();
            remove.extend(["service".to_owned(), "rm".to_owned(), job]);
            let _ = docker::capture(&remove);
        }
        signal_all(pids, libc::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    let mut left: Vec<usize> = running.iter().map(|(i, _)| *i).collect();
    while !left.is_empty() {
        let now = Instant::now();
        if now >= deadline {
            for (index, pids) in running {
                if left.contains(index) {
                    signal_all(pids, libc::SIGKILL);
                }
            }
            break;
        }
        if let Ok(Event::Finished(index, _)) = events.recv_timeout(deadline - now) {
            left.retain(|i| *i != index);
        }
    }
}

fn signal_all(pids: &Running, signal: i32) {
    for pid in pids.lock().map(|p| p.clone()).unwrap_or_default() {
        // SAFETY: kill(2) with a pid we started; a stale pid at worst gets ESRCH.
        unsafe {
            libc::kill(pid as libc::pid_t, signal);
        }
    }
}

/// Where Ctrl-C and SIGTERM go (just's interrupt handler). Until the first step starts nothing
/// runs that would need stopping (a question or a wait for the lock is not a child), so the
/// process exits at once with 130; from then on a signal is an event the run loop answers by
/// stopping the running steps.
struct Interrupts {
    handle: signal_hook::iterator::Handle,
    forwarding: Arc<Mutex<bool>>,
}

impl Interrupts {
    fn listen(sender: Sender<Event>) -> anyhow::Result<Interrupts> {
        let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])?;
        let handle = signals.handle();
        let forwarding = Arc::new(Mutex::new(false));
        let shared = forwarding.clone();
        std::thread::spawn(move || {
            for signal in signals.forever() {
                // Held while deciding, so `forward` cannot slip a step in between.
                let forwarding = shared.lock().unwrap_or_else(|p| p.into_inner());
                if !*forwarding {
                    eprintln!("\nhost_container: interrupted: nothing was changed");
                    std::process::exit(i32::from(Kind::Interrupted.exit_code()));
                }
                if sender.send(Event::Signal(signal)).is_err() {
                    break;
                }
            }
        });
        Ok(Interrupts { handle, forwarding })
    }

    /// From now on signals reach the run loop instead of ending the process.
    fn forward(&self) {
        *self.forwarding.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }

    fn close(&self) {
        self.handle.close();
    }
}

/// Starts a step on its own thread; `collect` keeps a raw step's stdout for its test cases.
fn spawn_step(plan: &Plan, index: usize, pids: Running, sender: Sender<Event>, collect: bool) {
    let step = plan.steps[index].clone();
    let names = (
        plan.language.clone(),
        plan.variant.clone(),
        plan.instance.clone(),
    );
    let raw = step.output == Output::Raw || step.interactive;
    if !raw {
        crate::console::announce(&step.id, &announcement(plan, &step));
    }
    crate::console::started(&step.id, raw);
    std::thread::spawn(move || {
        let started = Instant::now();
        let result = guarded(&step.id, || {
            run_step(&step, &pids, (&names.0, &names.1, &names.2), collect)
        })
        .map(|cases| (started.elapsed().as_secs_f64(), cases));
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
    body: impl FnOnce() -> Result<Vec<Case>, Failure>,
) -> Result<Vec<Case>, Failure> {
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
fn announcement(plan: &Plan, step: &Step) -> String {
    if step.done.is_some() {
        return step.reason.clone();
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
        .and_then(|m| m.reason.split_once(", and "))
        .map(|(_, condition)| condition);
    if let Some(condition) = condition {
        text = format!("{text}: {condition}");
    }
    text
}

fn failure(kind: Kind, code: Option<i32>, message: String, tail: Vec<String>) -> Failure {
    Failure {
        cases: Vec::new(),
        code,
        message,
        tail,
        seconds: 0.0,
        kind,
    }
}

/// Runs one step: its `before` commands, its argv, its readiness check, then its `after`
/// commands (which record it as done, so they run only after everything else succeeded).
fn run_step(
    step: &Step,
    pids: &Running,
    plan_names: (&str, &str, &str),
    collect: bool,
) -> Result<Vec<Case>, Failure> {
    if let Some(archive) = &step.archive {
        return crate::backup::run(step, archive, plan_names)
            .map(|()| Vec::new())
            .map_err(|e| {
                let kind = e
                    .chain()
                    .find_map(|c| c.downcast_ref::<Error>())
                    .map_or(Kind::StepFailed, |own| own.kind);
                let text = match e.downcast_ref::<Error>() {
                    Some(own) => format!("{own}"),
                    None => format!("{e:#}"),
                };
                failure(
                    kind,
                    None,
                    format!("step `{}`: {text}", step.id),
                    Vec::new(),
                )
            });
    }
    for before in &step.before {
        run_captured(step, before, pids)?;
    }
    let head = docker_head_len(&step.argv);
    if let Some(job) = crate::swarm::job_name(&step.argv[head..]) {
        return run_job(step, &job, pids, collect);
    }
    let (code, tail, stdout) = run_main(step, pids, collect)?;
    let cases = parse_cases(&stdout);
    if code != Some(0) {
        let tail_text = tail.join("\n");
        // A job's own stderr may say anything; only docker's own messages are classified.
        let is_job = step.output == Output::Raw || step.interactive;
        let mut kind = docker::classify(&tail_text).unwrap_or(Kind::StepFailed);
        if is_job && kind != Kind::StepFailed {
            // The job may print anything; only an engine that really does not answer counts.
            let head = &step.argv[..docker_head_len(&step.argv)];
            if kind != Kind::EngineUnreachable || docker::engine_answers(head) {
                kind = Kind::StepFailed;
            }
        }
        let mut message = match code {
            _ if kind == Kind::EngineUnreachable => {
                format!("step `{}`: the Docker engine did not answer", step.id)
            }
            Some(code) => format!("step `{}` failed with exit code {code}", step.id),
            None => format!("step `{}` was killed by a signal", step.id),
        };
        if kind == Kind::StepFailed
            && !step.uses_images.is_empty()
            && step.reason.contains("not present locally")
        {
            kind = Kind::BaseImageMissing;
            message = format!(
                "step `{}` failed, and {} is not present in the engine and could not be pulled",
                step.id,
                step.uses_images.join(", ")
            );
        }
        if let Some(name) = docker::no_such_service(&tail_text).filter(|_| !is_job) {
            return Err(failure(
                Kind::NotRunning,
                code,
                format!("no service `{name}`: it was never started, or it was stopped"),
                Vec::new(),
            ));
        }
        let removed = crate::swarm::removed_services(&step.argv[head..]);
        if !removed.is_empty() && crate::swarm::only_not_found(&tail_text) {
            // Like `rm --force`: a service that is not there is removed already.
            return Ok(cases);
        }
        if let Some(name) = docker::no_such_container(&tail_text).filter(|_| !is_job) {
            return Err(failure(
                Kind::NotRunning,
                code,
                format!("no container `{name}`: it was never started, or it was stopped"),
                Vec::new(),
            ));
        }
        // The job's own stdout says more than its stderr for a report.
        let tail = if tail.is_empty() {
            last_lines(&stdout.join("\n"))
        } else {
            tail
        };
        return Err(Failure {
            cases,
            code,
            message,
            tail,
            seconds: 0.0,
            kind,
        });
    }
    services_gone(step)?;
    if let Some(ready) = &step.ready {
        crate::exec::ready::wait(step, ready, pids)?;
    }
    if let Some(done) = step
        .done
        .as_ref()
        .filter(|d| d.kind == crate::mode::DoneKind::Container)
    {
        let ports = published(step, &done.name);
        crate::console::announce(&step.id, &format!("started {}{ports}", done.name));
    }
    for after in &step.after {
        run_captured(step, after, pids)?;
    }
    Ok(cases)
}

/// After a `service rm`, waits until swarm removed the tasks' containers: a stopped daemon is
/// gone, and its volumes can be removed by the next step.
fn services_gone(step: &Step) -> Result<(), Failure> {
    let head = docker_head_len(&step.argv);
    let removed = crate::swarm::removed_services(&step.argv[head..]);
    if removed.is_empty() {
        return Ok(());
    }
    crate::swarm::clear_removed(
        &step.argv[..head],
        &removed,
        ready::POLL,
        Duration::from_secs(60),
    )
    .map_err(|e| {
        failure(
            Kind::StepFailed,
            None,
            format!("step `{}`: {e:#}", step.id),
            vec![],
        )
    })
}

/// A job service: created, waited for, its output shown (the step's first `after` command,
/// `service logs`), removed (the others), and its tasks' exit code passed on like a `docker run`
/// of `single` would.
fn run_job(step: &Step, name: &str, pids: &Running, collect: bool) -> Result<Vec<Case>, Failure> {
    run_captured(step, &step.argv, pids)?;
    let head = &step.argv[..docker_head_len(&step.argv)];
    let ended = crate::swarm::wait_for_job(head, name, ready::POLL);
    let shown = match (&ended, step.after.first()) {
        (Ok(_), Some(logs)) => {
            let mut show = step.clone();
            show.argv = logs.clone();
            show.raw_args.clear();
            run_main(&show, pids, collect).map(|(_, _, stdout)| stdout)
        }
        _ => Ok(Vec::new()),
    };
    let removed: Result<Vec<()>, Failure> = step
        .after
        .iter()
        .skip(1)
        .map(|argv| {
            run_captured(step, argv, pids)?;
            let mut shown = step.clone();
            shown.argv = argv.clone();
            services_gone(&shown)
        })
        .collect();
    let end = ended.map_err(|e| {
        failure(
            Kind::StepFailed,
            None,
            format!("step `{}`: {e:#}", step.id),
            vec![],
        )
    })?;
    let stdout = shown?;
    removed?;
    if let Some(error) = end.error {
        return Err(failure(
            Kind::StepFailed,
            None,
            format!(
                "step `{}`: the job service `{name}` did not run: {error}",
                step.id
            ),
            Vec::new(),
        ));
    }
    let cases = parse_cases(&stdout);
    if end.code == 0 {
        return Ok(cases);
    }
    Err(Failure {
        cases,
        code: Some(end.code),
        message: format!("step `{}` failed with exit code {}", step.id, end.code),
        tail: last_lines(&stdout.join("\n")),
        seconds: 0.0,
        kind: Kind::StepFailed,
    })
}

/// `, publishing …` with the addresses docker published the container's ports on, if any.
fn published(step: &Step, container: &str) -> String {
    let mut argv = step.argv[..docker_head_len(&step.argv)].to_vec();
    argv.extend(["port".to_owned(), container.to_owned()]);
    let ports: Vec<String> = docker::capture(&argv)
        .ok()
        .filter(|c| c.success())
        .map(|c| c.stdout.lines().map(|l| l.replace(" -> ", "->")).collect())
        .unwrap_or_default();
    if ports.is_empty() {
        String::new()
    } else {
        format!(", publishing {}", ports.join(", "))
    }
}

/// Runs a helper command of a step with captured output.
fn run_captured(step: &Step, argv: &[String], pids: &Running) -> Result<(), Failure> {
    let expression = duct::cmd(&argv[0], &argv[1..])
        .stdin_null()
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked();
    let handle = expression.start().map_err(|e| spawn_failure(&argv[0], e))?;
    *pids.lock().unwrap_or_else(|p| p.into_inner()) = handle.pids();
    let output = handle
        .wait()
        .map_err(|e| failure(Kind::Io, None, format!("waiting for docker: {e}"), vec![]))?;
    if output.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let tail = last_lines(&text);
    Err(failure(
        docker::classify(&text).unwrap_or(Kind::StepFailed),
        output.status.code(),
        format!("step `{}`: `{}` failed", step.id, command_line(argv)),
        tail,
    ))
}

fn spawn_failure(program: &str, error: std::io::Error) -> Failure {
    let error = docker::spawn_error(program, error);
    let kind = error.downcast_ref::<Error>().map_or(Kind::Io, |e| e.kind);
    failure(kind, None, error.to_string(), vec![])
}

fn last_lines(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

/// What a finished command left: its exit code, the tail of its stderr (or of all its output
/// when captured), and the stdout lines of a raw step when they were collected.
type MainResult = (Option<i32>, Vec<String>, Vec<String>);

/// Runs the step's argv with the output handling its `output` and `interactive` ask for.
fn run_main(step: &Step, pids: &Running, collect: bool) -> Result<MainResult, Failure> {
    let argv = &step.argv;
    let exact = step.os_argv();
    let command = duct::cmd(&exact[0], &exact[1..]).unchecked();
    let set_pids = |p: Vec<u32>| *pids.lock().unwrap_or_else(|e| e.into_inner()) = p;
    if step.interactive {
        let handle = command.start().map_err(|e| spawn_failure(&argv[0], e))?;
        set_pids(handle.pids());
        let output = handle
            .wait()
            .map_err(|e| failure(Kind::Io, None, e.to_string(), vec![]))?;
        return Ok((output.status.code(), Vec::new(), Vec::new()));
    }
    if step.output == Output::Raw {
        // stdout and stdin stay the user's; stderr is copied through while its tail is kept.
        let (reader, writer) =
            os_pipe::pipe().map_err(|e| failure(Kind::Io, None, e.to_string(), vec![]))?;
        // For a report, stdout is copied through too and its lines kept (bounded).
        let (stdout_reader, stdout_writer) = if collect {
            let (reader, writer) =
                os_pipe::pipe().map_err(|e| failure(Kind::Io, None, e.to_string(), vec![]))?;
            (Some(reader), Some(writer))
        } else {
            (None, None)
        };
        let mut expression = command.stderr_file(writer);
        if let Some(writer) = stdout_writer {
            expression = expression.stdout_file(writer);
        }
        let handle = expression.start().map_err(|e| spawn_failure(&argv[0], e))?;
        // Our copies of the pipes' write ends must close, or the readers never see EOF.
        drop(expression);
        set_pids(handle.pids());
        let stdout_lines = stdout_reader.map(|reader| {
            std::thread::spawn(move || {
                let mut kept: VecDeque<String> = VecDeque::new();
                let mut reader = BufReader::new(reader);
                let mut line = Vec::new();
                while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                    let mut stdout = std::io::stdout().lock();
                    let _ = stdout.write_all(&line);
                    let _ = stdout.flush();
                    if kept.len() == MAX_CASE_LINES {
                        kept.pop_front();
                    }
                    kept.push_back(String::from_utf8_lossy(&line).trim_end().to_owned());
                    line.clear();
                }
                Vec::from(kept)
            })
        });
        let tail = copy_lines(reader, None, |line| {
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(line);
        });
        let output = handle
            .wait()
            .map_err(|e| failure(Kind::Io, None, e.to_string(), vec![]))?;
        let stdout_lines = stdout_lines
            .map(|thread| thread.join().unwrap_or_default())
            .unwrap_or_default();
        return Ok((output.status.code(), tail, stdout_lines));
    }
    let upload = match &step.stdin {
        Some(stdin) => Some(crate::upload::tar_of(Path::new(&stdin.tar)).map_err(|e| {
            failure(
                Kind::Io,
                None,
                format!("step `{}`: sending {}: {e}", step.id, stdin.tar),
                vec![],
            )
        })?),
        None => None,
    };
    let (command, upload_writer) = match upload {
        Some(stream) => (command.stdin_file(stream.reader), Some(stream.writer)),
        None => (command.stdin_null(), None),
    };
    let reader = command
        .stderr_to_stdout()
        .reader()
        .map_err(|e| spawn_failure(&argv[0], e))?;
    // duct keeps its copy of the pipe's read end until the expression is dropped; the writer
    // learns that docker stopped reading only once no read end is left.
    drop(command);
    set_pids(reader.pids());
    let prefix = format!("[{}] ", step.id);
    let quiet = step.output == Output::Quiet;
    let tail = copy_lines(&reader, Some(docker::Noise::default()), |line| {
        if !quiet {
            crate::console::step_line(&prefix, line);
        }
    });
    let code = reader
        .try_wait()
        .ok()
        .flatten()
        .and_then(|output| output.status.code());
    if let Some(writer) = upload_writer {
        let sent = writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the archive writer panicked")));
        // When docker failed, its own message says more than a broken pipe; a command that
        // succeeded without reading everything did not need the rest.
        let sent = sent.or_else(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => Ok(()),
            _ => Err(e),
        });
        if let (Err(e), Some(0)) = (sent, code) {
            return Err(failure(
                Kind::Io,
                None,
                format!("step `{}`: sending its input: {e}", step.id),
                tail,
            ));
        }
    }
    Ok((code, tail, Vec::new()))
}

/// Copies `reader` line by line to `sink`, keeping the last lines (lossily decoded). Docker's
/// own output passes `noise`, whose lines reach neither.
fn copy_lines(
    reader: impl Read,
    mut noise: Option<docker::Noise>,
    mut sink: impl FnMut(&[u8]),
) -> Vec<String> {
    let mut reader = BufReader::new(reader);
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    let mut line = Vec::new();
    while let Ok(read) = reader.read_until(b'\n', &mut line) {
        if read == 0 {
            break;
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        if noise.as_mut().is_some_and(|n| n.is_noise(&line)) {
            line.clear();
            continue;
        }
        sink(&line);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(String::from_utf8_lossy(&line).trim_end().to_owned());
        line.clear();
    }
    tail.into()
}

/// An exclusive lock per engine and instance, held while state-making steps run. It is a host
/// file lock (released by the kernel if we die), keyed by the engine address so different
/// engines do not wait on each other.
struct InstanceLock {
    // Dropped in this order: the engine's lock first, then the host's.
    _engine: EngineLock,
    _file: File,
}

impl InstanceLock {
    fn acquire(
        plan: &Plan,
        invocation: &Invocation,
        events: &Receiver<Event>,
        signals: &Interrupts,
    ) -> anyhow::Result<InstanceLock> {
        let mut key = Sha256::new();
        for part in [
            invocation
                .env
                .get("DOCKER_HOST")
                .map(String::as_str)
                .unwrap_or(""),
            invocation
                .env
                .get("DOCKER_CONTEXT")
                .map(String::as_str)
                .unwrap_or(""),
            &plan
                .steps
                .first()
                .map(|s| s.argv[..docker_head_len(&s.argv)].join(" "))
                .unwrap_or_default(),
            &plan.language,
            &plan.variant,
            &plan.instance,
        ] {
            key.update(part.as_bytes());
            key.update([0]);
        }
        // Per user and private: a shared, world-writable lock directory let anyone plant a
        // symlink there. Users sharing an engine are kept apart by the engine-side lock.
        let path = safe_fs::lock_dir()?.join(format!(
            "{}-{}-{}-{}.lock",
            plan.language,
            plan.variant,
            plan.instance,
            &config::hex(&key.finalize())[..12]
        ));
        let file = safe_fs::open_lock_file(&path)?;
        if file.try_lock().is_err() {
            eprintln!(
                "host_container: waiting for another host_container working on {} {} ({})",
                plan.language, plan.variant, plan.instance
            );
            file.lock()
                .map_err(|e| Error::new(Kind::Io, format!("locking {}: {e}", path.display())))?;
        }
        // From here on something is taken that must be given back, so a signal no longer ends
        // the process at once: the engine-lock wait and the run loop answer it and release.
        signals.forward();
        // The host lock orders the waiters of this machine; the engine's lock orders machines.
        let head = plan
            .steps
            .first()
            .map(|s| s.argv[..docker_head_len(&s.argv)].to_vec())
            .unwrap_or_else(|| vec!["docker".to_owned()]);
        let what = format!("{} {} ({})", plan.language, plan.variant, plan.instance);
        let engine = EngineLock::acquire(
            &head,
            &format!("{}-lock", Names::of(invocation).prefix),
            &crate::names::instance_labels(invocation),
            &what,
            |wait| matches!(events.recv_timeout(wait), Ok(Event::Signal(_))),
        )?;
        Ok(InstanceLock {
            _engine: engine,
            _file: file,
        })
    }
}

pub mod ready {
    //! Waiting for a started daemon to become ready: a command in its container, a TCP port,
    //! and all the while checking that the container still runs.

    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::{Duration, Instant};

    use super::{failure, last_lines, Failure, Running};
    use crate::docker;
    use crate::docker::docker_head_len;
    use crate::error::Kind;
    use crate::mode::Ready;
    use crate::plan::Step;

    /// The pause between two readiness checks: short enough to return soon after the daemon
    /// is up, long enough not to load the engine.
    pub(super) const POLL: Duration = Duration::from_millis(200);

    pub fn wait(step: &Step, ready: &Ready, _pids: &Running) -> Result<(), Failure> {
        let head_len = docker_head_len(&step.argv);
        if let Some(service) = crate::swarm::service_name(&step.argv[head_len..])
            .or_else(|| update_target(&step.argv[head_len..]))
        {
            return service_ready(step, ready, &service);
        }
        let Some(name) = super::container_name(&step.argv) else {
            return Ok(());
        };
        let head = step.argv[..docker_head_len(&step.argv)].to_vec();
        // Mode files bound the timeout to a day; a plan built otherwise must not overflow.
        let timeout = Duration::from_secs(ready.timeout.min(crate::mode::MAX_READY_TIMEOUT));
        let deadline = Instant::now() + timeout;
        let mut exec_works = true;
        loop {
            let mut inspect = head.clone();
            inspect.extend([
                "inspect".into(),
                "--format".into(),
                "{{.State.Status}} {{.RestartCount}}|{{.Image}}".into(),
                name.clone(),
            ]);
            let answer = docker::capture(&inspect)
                .map(|c| c.stdout.trim().to_owned())
                .unwrap_or_default();
            let (state, image) = answer.split_once('|').unwrap_or((&answer, ""));
            // A restart policy hides a crash behind "restarting"; any restart means it exited.
            if state != "running 0" {
                return Err(not_ready(
                    step,
                    &head,
                    &name,
                    &format!("the daemon exited ({state})"),
                ));
            }
            let command_ok = ready.command.is_empty()
                || command_answers(step, &head, (&name, image), &ready.command, &mut exec_works);
            let tcp_ok = ready
                .tcp
                .as_ref()
                .is_none_or(|address| port_answers(address));
            if command_ok && tcp_ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(not_ready(
                    step,
                    &head,
                    &name,
                    &format!("it did not become ready within {} s", ready.timeout),
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The service a `service update` argv (after the docker head) updates: its last argument.
    fn update_target(args: &[String]) -> Option<String> {
        (args.first()? == "service" && args.get(1)? == "update")
            .then(|| args.last().cloned())
            .flatten()
    }

    /// A service is ready once it runs all its replicas and no rolling update is under way
    /// (and `tcp`, when given, answers). `command` is not run: a task may be on any node.
    fn service_ready(step: &Step, ready: &Ready, name: &str) -> Result<(), Failure> {
        let head = step.argv[..docker_head_len(&step.argv)].to_vec();
        let timeout = Duration::from_secs(ready.timeout.min(crate::mode::MAX_READY_TIMEOUT));
        let deadline = Instant::now() + timeout;
        loop {
            let state = crate::swarm::service_ready(&head, name);
            let tcp_ok = ready
                .tcp
                .as_ref()
                .is_none_or(|address| port_answers(address));
            let why = match state {
                Ok(()) if tcp_ok => return Ok(()),
                Ok(()) => "its port does not answer".to_owned(),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                let mut ps = head.clone();
                ps.extend(
                    ["service", "ps", "--no-trunc", name]
                        .iter()
                        .map(|a| (*a).to_owned()),
                );
                let tail = docker::capture(&ps)
                    .map(|c| super::last_lines(&c.stdout))
                    .unwrap_or_default();
                return Err(super::failure(
                    Kind::NotReady,
                    None,
                    format!(
                        "step `{}`: service `{name}` did not become ready within {} s: {why}",
                        step.id, ready.timeout
                    ),
                    tail,
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs the readiness command in the daemon's container with `docker exec`, or, on an
    /// engine whose `exec` cannot enter containers (seen with a chrooted dockerd), in a
    /// throw-away container sharing the daemon's network and volumes.
    fn command_answers(
        step: &Step,
        head: &[String],
        (name, image): (&str, &str),
        command: &[String],
        exec_works: &mut bool,
    ) -> bool {
        if *exec_works {
            let mut exec = head.to_vec();
            exec.extend(["exec".into(), name.to_owned()]);
            exec.extend(command.iter().cloned());
            match docker::capture(&exec) {
                Ok(answer) if answer.success() => return true,
                // docker prints this one on stdout.
                Ok(answer)
                    if format!("{}{}", answer.stdout, answer.stderr)
                        .contains("OCI runtime exec failed") =>
                {
                    *exec_works = false;
                }
                _ => return false,
            }
        }
        let Some((program, args)) = command.split_first() else {
            return true;
        };
        let mut run = head.to_vec();
        run.extend(["run".into(), "--rm".into()]);
        // The daemon's own labels, so a check interrupted half-way is found like the daemon.
        run.extend(
            step.argv
                .iter()
                .filter(|a| a.starts_with("--label=") && !a.contains(".fingerprint="))
                .cloned(),
        );
        run.extend([
            format!("--network=container:{name}"),
            format!("--volumes-from={name}"),
            format!("--entrypoint={program}"),
            image.to_owned(),
        ]);
        run.extend(args.iter().cloned());
        docker::capture(&run).is_ok_and(|c| c.success())
    }

    fn port_answers(address: &str) -> bool {
        let address = if address.contains(':') {
            address.to_owned()
        } else {
            format!("127.0.0.1:{address}")
        };
        address
            .to_socket_addrs()
            .ok()
            .into_iter()
            .flatten()
            .any(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
    }

    fn not_ready(step: &Step, head: &[String], name: &str, why: &str) -> Failure {
        let mut logs = head.to_vec();
        logs.extend(["logs".into(), "--tail".into(), "20".into(), name.to_owned()]);
        let tail = docker::capture(&logs)
            .map(|c| last_lines(&format!("{}{}", c.stdout, c.stderr)))
            .unwrap_or_default();
        // A daemon left running after a failed check would be "already running with the same
        // configuration" next time, so it goes; its logs are in the error.
        let mut remove = head.to_vec();
        remove.extend(["rm".into(), "--force".into(), name.to_owned()]);
        let removed = docker::capture(&remove).is_ok_and(|c| c.success());
        failure(
            Kind::NotReady,
            None,
            format!(
                "daemon of step `{}` is not ready: {why}{}",
                step.id,
                if removed {
                    "; its container was removed"
                } else {
                    ""
                }
            ),
            tail,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_container_names() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            container_name(&argv(&["docker", "run", "--rm", "--name", "x", "img"])),
            Some("x".into())
        );
        assert_eq!(
            container_name(&argv(&[
                "docker",
                "--context",
                "c",
                "run",
                "--name=y",
                "img"
            ])),
            Some("y".into())
        );
        assert_eq!(
            container_name(&argv(&["docker", "build", "--name=y"])),
            None
        );
    }

    #[test]
    fn a_panicking_step_fails_instead_of_vanishing() {
        let result = guarded("m.s", || panic!("boom"));
        let failure = result.expect_err("a panic is a failure");
        assert_eq!(failure.kind, Kind::Io);
        assert!(failure.message.contains("m.s"), "{}", failure.message);
        assert!(failure.message.contains("boom"), "{}", failure.message);
        assert!(guarded("m.s", || Ok(Vec::new())).is_ok());
    }

    #[test]
    fn keeps_only_the_tail() {
        let text: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let tail = copy_lines(text.as_bytes(), None, |_| {});
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.last().map(String::as_str), Some("line 49"));
    }
}
