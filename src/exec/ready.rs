//! Waiting for a started daemon to become ready: a command in its container, a TCP port,
//! and all the while checking that the container still runs.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::output::{failure, last_lines};
use crate::error::Kind;
use crate::mode::Ready;
use crate::outcome::Failure;
use crate::plan::Step;
use crate::process;

/// The pause between two readiness checks: short enough to return soon after the daemon
/// is up, long enough not to load the engine.
pub(super) const POLL: Duration = Duration::from_millis(200);

/// Waits until the service or container `step` started is ready (`head`: the plan's docker
/// head).
pub fn wait(head: &[String], step: &Step, ready: &Ready) -> Result<(), Failure> {
    if let Some(service) = &step.facts.service {
        return service_ready(head, step, ready, service);
    }
    let Some(name) = step.facts.container.clone() else {
        return Ok(());
    };
    // Mode files bound the timeout to a day; a plan built otherwise must not overflow.
    let timeout = Duration::from_secs(ready.timeout.min(crate::mode::MAX_READY_TIMEOUT));
    let deadline = Instant::now() + timeout;
    let mut exec_works = true;
    loop {
        let mut inspect = head.to_vec();
        inspect.extend([
            "inspect".into(),
            "--format".into(),
            "{{.State.Status}} {{.RestartCount}}|{{.Image}}".into(),
            name.clone(),
        ]);
        let answer = match process::query(&inspect) {
            Ok(answered) => answered.stdout.trim().to_owned(),
            Err(e) => return Err(unanswered(step, &e)),
        };
        let (state, image) = answer.split_once('|').unwrap_or((&answer, ""));
        // A restart policy hides a crash behind "restarting"; any restart means it exited.
        if state != "running 0" {
            return Err(not_ready(
                step,
                head,
                &name,
                &format!("the daemon exited ({state})"),
            ));
        }
        let command_ok = ready.command.is_empty()
            || command_answers(step, head, (&name, image), &ready.command, &mut exec_works);
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
                head,
                &name,
                &format!("it did not become ready within {} s", ready.timeout),
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// The failure of a readiness check that could not ask the engine: not "the daemon exited",
/// which would have it removed and read as a crash of the daemon.
fn unanswered(step: &Step, error: &anyhow::Error) -> Failure {
    let kind = match crate::error::exit_code_of(error) {
        code if code == Kind::DockerMissing.exit_code() => Kind::DockerMissing,
        _ => Kind::EngineUnreachable,
    };
    let message = match error.downcast_ref::<crate::error::Error>() {
        Some(own) => own.to_string(),
        None => format!("{error:#}"),
    };
    failure(
        kind,
        None,
        format!(
            "step `{}`: its readiness could not be checked: {message}",
            step.id
        ),
        Vec::new(),
    )
}

/// A service is ready once it runs all its replicas and no rolling update is under way
/// (and `tcp`, when given, answers). `command` is not run: a task may be on any node.
fn service_ready(head: &[String], step: &Step, ready: &Ready, name: &str) -> Result<(), Failure> {
    let timeout = Duration::from_secs(ready.timeout.min(crate::mode::MAX_READY_TIMEOUT));
    let deadline = Instant::now() + timeout;
    loop {
        let state = crate::swarm::service_ready(head, name);
        if let Some(e) = process::no_answer() {
            return Err(unanswered(step, &e));
        }
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
            let mut ps = head.to_vec();
            ps.extend(
                ["service", "ps", "--no-trunc", name]
                    .iter()
                    .map(|a| (*a).to_owned()),
            );
            let tail = process::query(&ps)
                .map(|c| last_lines(&c.stdout))
                .unwrap_or_default();
            return Err(failure(
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
        match process::capture(&exec) {
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
    run.extend(step.facts.labels.iter().cloned());
    run.extend([
        format!("--network=container:{name}"),
        format!("--volumes-from={name}"),
        format!("--entrypoint={program}"),
        image.to_owned(),
    ]);
    run.extend(args.iter().cloned());
    process::capture(&run).is_ok_and(|c| c.success())
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
    let tail = process::query(&logs)
        .map(|c| last_lines(&format!("{}{}", c.stdout, c.stderr)))
        .unwrap_or_default();
    // A daemon left running after a failed check would be "already running with the same
    // configuration" next time, so it goes; its logs are in the error.
    let mut remove = head.to_vec();
    remove.extend(["rm".into(), "--force".into(), name.to_owned()]);
    let removed = process::capture(&remove).is_ok_and(|c| c.success());
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
