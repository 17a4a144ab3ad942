//! Running one step: its `before` commands, its argv (or an archive, or a swarm job), its
//! readiness check and its `after` commands; and turning a non-zero exit into the failure a
//! user reads (engine gone, base image missing, nothing running, or the job's own code).

use std::time::Duration;

use super::output::{failure, last_lines, run_captured, run_main, Ended};
use super::ready;
use crate::archive::ArchivePlan;
use crate::docker;
use crate::docker::docker_head_len;
use crate::error::{Error, Kind};
use crate::mode::Output;
use crate::outcome::{parse_cases, Failure, Reported};
use crate::plan::Step;
use crate::process::{self, Pids};

/// Runs one step: its `before` commands, its argv, its readiness check, then its `after`
/// commands (which record it as done, so they run only after everything else succeeded).
pub(super) fn run_step(
    step: &Step,
    pids: &Pids,
    plan_names: (&str, &str, &str),
    collect: bool,
) -> Result<Reported, Failure> {
    if let Some(archive) = &step.archive {
        return run_archive(step, archive, plan_names);
    }
    for before in &step.before {
        run_captured(step, before, pids)?;
    }
    if let Some(job) = &step.job_service {
        return run_job(step, job, pids, collect);
    }
    let ended = run_main(step, pids, collect)?;
    if ended.code != Some(0) {
        return exited(step, ended);
    }
    if let Some(target) = &step.writes_lock {
        let head = &step.argv[..docker_head_len(&step.argv)];
        crate::lock::write(target, head, &String::from_utf8_lossy(&ended.captured))
            .map_err(|e| own_failure(step, &e))?;
        crate::console::announce(&step.id, &format!("wrote {}", target.file.display()));
    }
    let reported = Reported {
        cases: parse_cases(&ended.stdout),
        documents: ended.documents,
    };
    services_gone(step)?;
    if let Some(ready) = &step.ready {
        ready::wait(step, ready)?;
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
        run_captured(step, &with_tree(after, ended.tree.as_deref()), pids)?;
    }
    Ok(reported)
}

/// The stamp's `volume create` with the installed tree's digest as one more label, when the
/// step reported one; every other command as it is.
fn with_tree(argv: &[String], tree: Option<&str>) -> Vec<String> {
    let stamp = format!("--label={}.stamp=1", crate::names::LABEL_PREFIX);
    let head = docker_head_len(argv);
    let creates_stamp = argv[head..].starts_with(&["volume".to_owned(), "create".to_owned()])
        && argv.contains(&stamp);
    let mut argv = argv.to_vec();
    if let (Some(tree), true) = (tree, creates_stamp) {
        let name = argv.len() - 1;
        argv.insert(name, format!("--label={}={tree}", crate::names::TREE_LABEL));
    }
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
    step: &Step,
    archive: &ArchivePlan,
    plan_names: (&str, &str, &str),
) -> Result<Reported, Failure> {
    crate::backup::run(step, archive, plan_names)
        .map(|()| Reported::default())
        .map_err(|e| own_failure(step, &e))
}

/// What a step's argv that did not exit with 0 means: mostly a failure, but a service removed
/// already is success, and a missing service or container is "not running".
fn exited(step: &Step, ended: Ended) -> Result<Reported, Failure> {
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
    let (kind, message) = classify_exit(step, code, &tail_text, is_job);
    if let Some(name) = docker::no_such_service(&tail_text).filter(|_| !is_job) {
        return Err(failure(
            Kind::NotRunning,
            code,
            format!("no service `{name}`: it was never started, or it was stopped"),
            Vec::new(),
        ));
    }
    let head = docker_head_len(&step.argv);
    let removed = crate::swarm::removed_services(&step.argv[head..]);
    if !removed.is_empty() && crate::swarm::only_not_found(&tail_text) {
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
fn classify_exit(step: &Step, code: Option<i32>, tail_text: &str, is_job: bool) -> (Kind, String) {
    let mut kind = docker::classify(tail_text).unwrap_or(Kind::StepFailed);
    if is_job && kind != Kind::StepFailed {
        // The job may print anything; only an engine that really does not answer counts.
        let head = &step.argv[..docker_head_len(&step.argv)];
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
    if kind == Kind::StepFailed
        && !step.uses_images.is_empty()
        && step.reason.contains("not present locally")
    {
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
fn run_job(step: &Step, name: &str, pids: &Pids, collect: bool) -> Result<Reported, Failure> {
    run_captured(step, &step.argv, pids)?;
    let head = &step.argv[..docker_head_len(&step.argv)];
    let ended = crate::swarm::wait_for_job(head, name, ready::POLL);
    let shown = match (&ended, step.after.first()) {
        (Ok(_), Some(logs)) => {
            let mut show = step.clone();
            show.argv = logs.clone();
            show.raw_args.clear();
            run_main(&show, pids, collect)
        }
        _ => Ok(Ended::default()),
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
fn published(step: &Step, container: &str) -> String {
    let mut argv = step.argv[..docker_head_len(&step.argv)].to_vec();
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
