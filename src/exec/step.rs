//! Running one step: its `before` commands, its argv (or an archive, or a swarm job), its
//! readiness check and its `after` commands; and turning a non-zero exit into the failure a
//! user reads (engine gone, base image missing, nothing running, or the job's own code).

use std::time::Duration;

use super::output::{failure, last_lines, run_captured, run_main, Ended};
use super::ready;
use crate::archive::ArchivePlan;
use crate::docker;
use crate::error::{Error, Kind};
use crate::mode::Output;
use crate::outcome::{parse_cases, Failure, Reported};
use crate::plan::{Plan, Step, StepState};
use crate::process::{self, Pids};

/// Runs one step: its `before` commands, its argv, its readiness check, then its `after`
/// commands (which record it as done, so they run only after everything else succeeded).
pub(super) fn run_step(
    plan: &Plan,
    (step, state): (&Step, &StepState),
    pids: &Pids,
    collect: bool,
) -> Result<Reported, Failure> {
    let head = plan.docker_head.as_slice();
    if let Some(archive) = &step.archive {
        let names = (&*plan.language, &*plan.variant, &*plan.instance);
        return run_archive(head, step, archive, names);
    }
    for before in step.before_in(state) {
        run_captured(step, before, pids)?;
    }
    if let Some(job) = &step.facts.job_service {
        return run_job(head, step, job, pids, collect);
    }
    let ended = run_main(step, step.os_argv(state), pids, collect)?;
    if ended.code != Some(0) {
        return exited(head, (step, state), ended);
    }
    if let Some(target) = &step.writes_lock {
        crate::lock::write(target, head, &String::from_utf8_lossy(&ended.captured))
            .map_err(|e| own_failure(step, &e))?;
        crate::console::announce(&step.id, &format!("wrote {}", target.file.display()));
    }
    let reported = Reported {
        cases: parse_cases(&ended.stdout),
        documents: ended.documents,
    };
    services_gone(head, step, &step.facts.removed_services)?;
    if let Some(ready) = &step.ready {
        ready::wait(head, step, ready)?;
    }
    if let Some(done) = step
        .done
        .as_ref()
        .filter(|d| d.kind == crate::mode::DoneKind::Container)
    {
        let ports = published(head, &done.name);
        crate::console::announce(&step.id, &format!("started {}{ports}", done.name));
    }
    for (index, after) in step.after.iter().enumerate() {
        match ended.tree.as_deref() {
            Some(tree) if step.facts.stamp_record == Some(index) => {
                run_captured(step, &with_tree(after, tree), pids)?
            }
            _ => run_captured(step, after, pids)?,
        }
    }
    Ok(reported)
}

/// The stamp's `volume create` with the installed tree's digest as one more label.
fn with_tree(create: &[String], tree: &str) -> Vec<String> {
    let mut argv = create.to_vec();
    let name = argv.len().saturating_sub(1);
    argv.insert(name, format!("--label={}={tree}", crate::names::TREE_LABEL));
    argv
}

/// A failure of host_container's own work inside a step, with its kind kept.
fn own_failure(step: &Step, e: &anyhow::Error) -> Failure {
    let kind = (e.chain())
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
}

/// A backup or restore, run in-process; its own error kind (a refused restore, say) is kept.
fn run_archive(
    head: &[String],
    step: &Step,
    archive: &ArchivePlan,
    plan_names: (&str, &str, &str),
) -> Result<Reported, Failure> {
    crate::backup::run(head, step, archive, plan_names)
        .map(|()| Reported::default())
        .map_err(|e| own_failure(step, &e))
}

/// What a step's argv that did not exit with 0 means: mostly a failure, but a service removed
/// already is success, and a missing service or container is "not running".
fn exited(
    head: &[String],
    (step, state): (&Step, &StepState),
    ended: Ended,
) -> Result<Reported, Failure> {
    let Ended {
        code,
        tail,
        stdout,
        documents,
        tls_rejected,
        ..
    } = ended;
    let reported = Reported {
        cases: parse_cases(&stdout),
        documents,
    };
    let tail_text = tail.join("\n");
    // A job's own stderr may say anything; only docker's own messages are classified.
    let is_job = step.output == Output::Raw || step.interactive;
    let (kind, message) = classify_exit((head, step, state), code, &tail_text, is_job);
    if let Some(name) = docker::no_such_service(&tail_text).filter(|_| !is_job) {
        return Err(failure(
            Kind::NotRunning,
            code,
            format!("no service `{name}`: it was never started, or it was stopped"),
            Vec::new(),
        ));
    }
    if !step.facts.removed_services.is_empty() && crate::swarm::only_not_found(&tail_text) {
        // Like `rm --force`: a service that is not there is removed already.
        return Ok(reported);
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
    Err(Failure {
        reported,
        code,
        message,
        tail,
        seconds: 0.0,
        kind,
        tls_rejected: tls_rejected || super::watch::shows_tls_failure(&tail_text),
    })
}

/// The kind and message of a failed argv, from its exit code and the tail of its output.
fn classify_exit(
    (head, step, state): (&[String], &Step, &StepState),
    code: Option<i32>,
    tail_text: &str,
    is_job: bool,
) -> (Kind, String) {
    let mut kind = docker::classify(tail_text).unwrap_or(Kind::StepFailed);
    if is_job && kind != Kind::StepFailed {
        // The job may print anything; only an engine that really does not answer counts.
        if kind != Kind::EngineUnreachable || crate::engine::answers(head) {
            kind = Kind::StepFailed;
        }
    }
    let message = match code {
        _ if kind == Kind::EngineUnreachable => {
            format!("step `{}`: the Docker engine did not answer", step.id)
        }
        Some(code) => format!("step `{}` failed with exit code {code}", step.id),
        None => format!("step `{}` was killed by a signal", step.id),
    };
    if kind == Kind::StepFailed && !state.missing_images.is_empty() {
        let message = format!(
            "step `{}` failed, and {} is not present in the engine and could not be pulled",
            step.id,
            step.uses_images.join(", ")
        );
        return (Kind::BaseImageMissing, message);
    }
    (kind, message)
}

/// After a `service rm`, waits until swarm removed the tasks' containers: a stopped daemon is
/// gone, and its volumes can be removed by the next step.
fn services_gone(head: &[String], step: &Step, removed: &[String]) -> Result<(), Failure> {
    if removed.is_empty() {
        return Ok(());
    }
    crate::swarm::clear_removed(head, removed, ready::POLL, Duration::from_secs(60)).map_err(|e| {
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
fn run_job(
    head: &[String],
    step: &Step,
    name: &str,
    pids: &Pids,
    collect: bool,
) -> Result<Reported, Failure> {
    run_captured(step, &step.argv, pids)?;
    let ended = crate::swarm::wait_for_job(head, name, ready::POLL);
    let shown = match (&ended, step.after.first()) {
        (Ok(_), Some(logs)) => {
            let logs = logs.iter().map(std::ffi::OsString::from).collect();
            run_main(step, logs, pids, collect)
        }
        _ => Ok(Ended::default()),
    };
    let removed: Result<Vec<()>, Failure> = (step.after.iter().skip(1))
        .map(|argv| run_captured(step, argv, pids))
        .collect();
    // The last of them removed the job's service: its tasks' containers go next.
    let removed = removed.and_then(|_| services_gone(head, step, &[name.to_owned()]));
    let end = ended.map_err(|e| {
        failure(
            Kind::StepFailed,
            None,
            format!("step `{}`: {e:#}", step.id),
            vec![],
        )
    })?;
    let shown = shown?;
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
    let reported = Reported {
        cases: parse_cases(&shown.stdout),
        documents: shown.documents,
    };
    if end.code == 0 {
        return Ok(reported);
    }
    Err(Failure {
        reported,
        code: Some(end.code),
        message: format!("step `{}` failed with exit code {}", step.id, end.code),
        tail: last_lines(&shown.stdout.join("\n")),
        seconds: 0.0,
        kind: Kind::StepFailed,
        tls_rejected: shown.tls_rejected,
    })
}

/// `, publishing …` with the addresses docker published the container's ports on, if any.
fn published(head: &[String], container: &str) -> String {
    let mut argv = head.to_vec();
    argv.extend(["port".to_owned(), container.to_owned()]);
    let ports: Vec<String> = process::query(&argv)
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
