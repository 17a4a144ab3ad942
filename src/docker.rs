//! The one place that knows how the docker CLI behaves: its argv head (program and global
//! options), running it for an answer (the read-only questions within a deadline, since a hung
//! engine would otherwise hang us silently), and reading its error messages. Reading what the
//! engine holds is `inspect`.

use std::io::ErrorKind as IoErrorKind;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Kind};
use crate::names::LABEL_PREFIX;

/// A finished docker call whose output was captured.
#[derive(Debug)]
pub struct Captured {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Captured {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// Runs `argv` (docker and its arguments) with no stdin and captured output, as long as it
/// takes (it changes something, and a client killed half-way leaves the engine doing it or not).
/// Once a question got no answer, fails at once: waiting on a hung engine would never end.
pub fn capture(argv: &[String]) -> anyhow::Result<Captured> {
    if let Some(error) = no_answer() {
        return Err(error);
    }
    let output = duct::cmd(&argv[0], &argv[1..])
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .map_err(|e| spawn_error(&argv[0], e))?;
    Ok(Captured {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// How long a read-only docker call of our own may take unless `HOST_CONTAINER_ENGINE_TIMEOUT`
/// says otherwise: an engine that answers at all answers an inspect within a second or two, even
/// of thousands of objects or over ssh, and a CI job should learn of a hung one well before its
/// own timeout ends it without a word.
pub const DEFAULT_ENGINE_TIMEOUT: Duration = Duration::from_secs(30);

/// The variable that sets the deadline, in whole seconds.
pub const ENGINE_TIMEOUT_VARIABLE: &str = "HOST_CONTAINER_ENGINE_TIMEOUT";

/// The deadline `query` gives each call; set once from the checked invocation.
static ENGINE_TIMEOUT: OnceLock<Duration> = OnceLock::new();

/// The first call that did not answer in time. The engine that hung once is taken to hang: every
/// later question fails at once with the same error instead of waiting out its own deadline (the
/// callers that treat a failed question as "unknown" would otherwise wait again, one deadline
/// each).
static NO_ANSWER: Mutex<Option<NoAnswer>> = Mutex::new(None);

#[derive(Debug, Clone)]
struct NoAnswer {
    call: String,
    waited: Duration,
}

/// The deadline `value` (of `HOST_CONTAINER_ENGINE_TIMEOUT`) asks for: whole seconds, at least 1;
/// unset or empty is the default.
pub fn engine_timeout_of(value: Option<&str>) -> anyhow::Result<Duration> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_ENGINE_TIMEOUT);
    };
    match value.parse::<u64>() {
        Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err(Error::new(
            Kind::Usage,
            format!(
                "{ENGINE_TIMEOUT_VARIABLE}={}: expected a whole number of seconds, at least 1",
                crate::error::excerpt(value)
            ),
        )
        .note(format!(
            "it bounds the read-only docker calls host_container makes by itself (default {} s)",
            DEFAULT_ENGINE_TIMEOUT.as_secs()
        ))
        .into()),
    }
}

/// The deadline `HOST_CONTAINER_ENGINE_TIMEOUT` of this process asks for.
pub fn engine_timeout_from_env() -> anyhow::Result<Duration> {
    match std::env::var(ENGINE_TIMEOUT_VARIABLE) {
        Ok(value) => engine_timeout_of(Some(&value)),
        Err(std::env::VarError::NotPresent) => engine_timeout_of(None),
        Err(std::env::VarError::NotUnicode(_)) => engine_timeout_of(Some("(not UTF-8)")),
    }
}

/// Sets the deadline of every later `query`; the first call wins (one invocation per process).
pub fn set_engine_timeout(timeout: Duration) {
    let _ = ENGINE_TIMEOUT.set(timeout);
}

fn engine_timeout() -> Duration {
    ENGINE_TIMEOUT
        .get()
        .copied()
        .unwrap_or(DEFAULT_ENGINE_TIMEOUT)
}

/// The error of the call that did not answer in time, if one did not.
pub fn no_answer() -> Option<anyhow::Error> {
    let first = NO_ANSWER.lock().ok()?.clone()?;
    Some(no_answer_error(&first))
}

fn no_answer_error(first: &NoAnswer) -> anyhow::Error {
    let mut error = Error::new(
        Kind::EngineUnreachable,
        format!(
            "the {} engine did not answer `{}` within {} s",
            engine_name(),
            first.call,
            first.waited.as_secs()
        ),
    );
    error = match std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()) {
        Some(host) => error.note(format!(
            "check the engine at DOCKER_HOST={host}: does `docker info` answer?"
        )),
        None => error.note(
            "check the engine (DOCKER_HOST, DOCKER_CONTEXT or --context): does `docker info` \
             answer?",
        ),
    };
    error
        .note(format!(
            "a slow engine may get more time: {ENGINE_TIMEOUT_VARIABLE}=SECONDS (now {} s)",
            first.waited.as_secs()
        ))
        .into()
}

/// The call a message names: the subcommand and its first arguments, not thousands of names.
fn call_name(argv: &[String]) -> String {
    const SHOWN: usize = 4;
    let rest = &argv[docker_head_len(argv)..];
    let mut shown: Vec<String> = argv[..1].to_vec();
    shown.extend(rest.iter().take(SHOWN).cloned());
    let mut name = crate::text::command_line(&shown);
    if rest.len() > SHOWN {
        name.push_str(" …");
    }
    name
}

/// Runs `argv`, a read-only question host_container asks by itself (inspect, info, version, ls,
/// a probe), like `capture` but within the engine deadline: a call that does not end in time is
/// killed and is an error (68) naming it. Never for a user's step: a build or a job takes as long
/// as it takes.
pub fn query(argv: &[String]) -> anyhow::Result<Captured> {
    if let Some(error) = no_answer() {
        return Err(error);
    }
    let handle = duct::cmd(&argv[0], &argv[1..])
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .start()
        .map_err(|e| spawn_error(&argv[0], e))?;
    let timeout = engine_timeout();
    // A deadline past what `Instant` can hold is no deadline.
    let answered = match Instant::now().checked_add(timeout) {
        Some(deadline) => handle.wait_deadline(deadline),
        None => handle.wait().map(Some),
    };
    let output = match answered {
        Ok(Some(output)) => output,
        Ok(None) => {
            // Killed, not waited for: the CLI's own children could keep its pipes open. The
            // handle reaps it later.
            let _ = handle.kill();
            let first = NoAnswer {
                call: call_name(argv),
                waited: timeout,
            };
            if let Ok(mut slot) = NO_ANSWER.lock() {
                slot.get_or_insert_with(|| first.clone());
            }
            return Err(no_answer_error(&first));
        }
        Err(e) => return Err(Error::new(Kind::Io, format!("running `{}`: {e}", argv[0])).into()),
    };
    Ok(Captured {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// The error for an answer of the engine that cannot be read.
pub fn unreadable(argv: &[String], stdout: &str, why: &str) -> anyhow::Error {
    let head = docker_head_len(argv);
    let call = crate::text::command_line(&argv[..(head + 1).min(argv.len())]);
    let shown = stdout.trim();
    let shown = if shown.is_empty() {
        "(nothing)".into()
    } else {
        crate::error::excerpt(shown)
    };
    Error::new(
        Kind::EngineUnreachable,
        format!(
            "`{call}` answered with output that cannot be read ({why}), so the engine's state \
             is unknown"
        ),
    )
    .note(format!("it printed: {shown}"))
    .note(
        "check the engine and what is between (DOCKER_HOST, a proxy): does `docker info` \
         answer?",
    )
    .into()
}

/// The error for a docker program that could not be started.
pub fn spawn_error(program: &str, error: std::io::Error) -> anyhow::Error {
    if error.kind() == IoErrorKind::NotFound {
        Error::new(
            Kind::DockerMissing,
            format!("`{program}` is not installed (or not on PATH)"),
        )
        .note(format!(
            "install Docker (https://docs.docker.com/engine/install/) or Podman, or name the \
             client program with --docker-path PATH or {PROGRAM_VARIABLE}"
        ))
        .into()
    } else {
        Error::new(Kind::Io, format!("starting `{program}`: {error}")).into()
    }
}

/// What docker's stderr says about why it failed, when it is one of the failures users meet.
pub fn classify(stderr: &str) -> Option<Kind> {
    let text = stderr.to_ascii_lowercase();
    if text.contains("cannot connect to the docker daemon")
        || text.contains("error during connect")
        || text.contains("is the docker daemon running")
        || text.contains("unable to connect to podman")
        || text.contains("cannot connect to podman")
    {
        Some(Kind::EngineUnreachable)
    } else if text.contains("is already in use by container")
        || text.contains("volume is in use")
        || text.contains("error response from daemon: conflict")
    {
        Some(Kind::Conflict)
    } else {
        None
    }
}

/// The container docker's output says does not exist (Podman: "no such container NAME").
pub fn no_such_container(output: &str) -> Option<&str> {
    let (_, rest) = output
        .split_once("No such container: ")
        .or_else(|| output.split_once("no such container "))?;
    rest.split_whitespace().next()
}

/// Whether a failed `volume create` only found the volume there: docker's succeeds then, and
/// Podman's (without `--ignore`, which Podman 4.3 lacks) says "volume already exists".
pub fn volume_existed(argv: &[String], stderr: &str) -> bool {
    let rest = &argv[docker_head_len(argv)..];
    rest.starts_with(&["volume".to_owned(), "create".to_owned()])
        && stderr.contains("volume already exists")
}

/// The swarm service docker's output says does not exist (`service inspect`, `service logs`).
pub fn no_such_service(output: &str) -> Option<&str> {
    let (_, rest) = output
        .split_once("no such service: ")
        .or_else(|| output.split_once("no such task or service: "))?;
    rest.split_whitespace().next()
}

/// Lines of docker's output that say nothing about the user's build: the legacy builder's
/// deprecation banner, and the LABEL step that carries our labels (the instruction added to or
/// merged into a build's Dockerfile, or one step per `--label` option where labels stay
/// options; four lines each).
#[derive(Debug, Default)]
pub struct Noise {
    skipping: Option<Skipping>,
}

#[derive(Debug, Clone, Copy)]
enum Skipping {
    Banner,
    LabelStep,
}

impl Noise {
    pub fn is_noise(&mut self, line: &[u8]) -> bool {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end();
        match self.skipping {
            Some(Skipping::Banner) if line.starts_with(char::is_whitespace) => return true,
            Some(Skipping::Banner) if line.is_empty() => {
                self.skipping = None;
                return true;
            }
            Some(Skipping::LabelStep)
                if line.starts_with(" ---> ")
                    || line.starts_with("Removing intermediate container ") =>
            {
                return true
            }
            _ => self.skipping = None,
        }
        if line.starts_with("DEPRECATED: The legacy builder is deprecated") {
            self.skipping = Some(Skipping::Banner);
        } else if line.starts_with("Step ") && line.contains(&format!(" : LABEL {LABEL_PREFIX}.")) {
            self.skipping = Some(Skipping::LabelStep);
        }
        self.skipping.is_some()
    }
}

/// Whether the engine behind `head` (docker and its global options) answers at all.
pub fn engine_answers(head: &[String]) -> bool {
    let mut argv = head.to_vec();
    argv.extend([
        "version".into(),
        "--format".into(),
        "{{.Server.Version}}".into(),
    ]);
    query(&argv).is_ok_and(|c| c.success())
}

/// The error for a docker call that failed because the engine did not answer, if that is why.
pub fn unreachable(captured: &Captured) -> Option<anyhow::Error> {
    (!captured.success() && classify(&captured.stderr) == Some(Kind::EngineUnreachable)).then(
        || {
            Error::new(
                Kind::EngineUnreachable,
                format!("the {} engine did not answer", engine_name()),
            )
            .note(captured.stderr.trim().to_owned())
            .into()
        },
    )
}

/// The variable that names the client program (`--docker-path` wins over it).
pub const PROGRAM_VARIABLE: &str = "HOST_CONTAINER_DOCKER_PATH";

/// The client program every argv starts with; set once from the checked invocation.
static PROGRAM: OnceLock<String> = OnceLock::new();

/// Sets the client program (`docker`, `podman`, a path); the first call wins (one invocation per
/// process).
pub fn set_program(program: &str) {
    let _ = PROGRAM.set(program.to_owned());
}

/// The engine as messages name it: Podman when the client program is the podman CLI, else
/// Docker (the kind probed shows on the plan and in a failed step's error).
pub fn engine_name() -> &'static str {
    if crate::engine_kind::is_podman_cli(program()) {
        "Podman"
    } else {
        "Docker"
    }
}

/// The client program: `docker` unless `--docker-path` or `HOST_CONTAINER_DOCKER_PATH` said
/// otherwise.
pub fn program() -> &'static str {
    PROGRAM.get().map_or("docker", String::as_str)
}

/// `--label=KEY=VALUE` as the client program reads it. The podman CLI reads `--label` values as
/// CSV records, so one holding `,` or `"` (a step's record, JSON) is quoted as one field; the
/// docker CLI takes the value as it is.
pub fn label_arg(key: &str, value: &str) -> String {
    let pair = format!("{key}={value}");
    if crate::engine_kind::is_podman_cli(program()) && pair.contains([',', '"']) {
        format!("--label=\"{}\"", pair.replace('"', "\"\""))
    } else {
        format!("--label={pair}")
    }
}

/// The docker program and its global options, the head of every argv.
pub fn docker_head(context: Option<&str>) -> Vec<String> {
    let mut head = vec![program().to_owned()];
    if let Some(context) = context {
        head.push("--context".into());
        head.push(context.into());
    }
    head
}

/// How many leading elements of an argv are the docker program and its global options.
fn docker_head_len(argv: &[String]) -> usize {
    if argv.get(1).is_some_and(|a| a == "--context") {
        argv.len().min(3)
    } else {
        argv.len().min(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_noise_is_recognised() {
        let output = "\
DEPRECATED: The legacy builder is deprecated and will be removed in a future release.
            Install the buildx component to build images with BuildKit:
            https://docs.docker.com/go/buildx/

Sending build context to Docker daemon  2.048kB
Step 1/3 : FROM base
 ---> 19c0788f6865
Step 2/3 : LABEL org.docker-meta.host_container.language=python
 ---> Running in 87a75891fbc9
Removing intermediate container 87a75891fbc9
 ---> 5ef566f935eb
Step 3/3 : LABEL org.docker-meta.host_container.step=init.image
 ---> Running in cb529277218a
Removing intermediate container cb529277218a
 ---> 295dc1dcd953
Successfully built 295dc1dcd953
";
        let mut noise = Noise::default();
        let kept: Vec<&str> = output
            .lines()
            .filter(|line| !noise.is_noise(line.as_bytes()))
            .collect();
        assert_eq!(
            kept,
            [
                "Sending build context to Docker daemon  2.048kB",
                "Step 1/3 : FROM base",
                " ---> 19c0788f6865",
                "Successfully built 295dc1dcd953"
            ]
        );
    }

    #[test]
    fn engine_timeout_is_whole_seconds_from_one() {
        assert_eq!(engine_timeout_of(None).unwrap(), DEFAULT_ENGINE_TIMEOUT);
        assert_eq!(
            engine_timeout_of(Some(" ")).unwrap(),
            DEFAULT_ENGINE_TIMEOUT
        );
        assert_eq!(
            engine_timeout_of(Some("5")).unwrap(),
            Duration::from_secs(5)
        );
        for bad in ["0", "-1", "1.5", "5s", "99999999999999999999999"] {
            let error = engine_timeout_of(Some(bad)).unwrap_err();
            assert_eq!(crate::error::exit_code_of(&error), 64, "{bad}");
            assert!(error.to_string().contains(ENGINE_TIMEOUT_VARIABLE), "{bad}");
        }
    }

    #[test]
    fn a_call_is_named_by_its_first_arguments() {
        let argv: Vec<String> = [
            "docker",
            "--context",
            "c",
            "inspect",
            "a",
            "b",
            "c",
            "d",
            "e",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(call_name(&argv), "docker inspect a b c …");
    }

    #[test]
    fn classifies_engine_and_conflict_errors() {
        assert_eq!(
            classify("Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?"),
            Some(Kind::EngineUnreachable)
        );
        assert_eq!(
            classify("Error response from daemon: remove v: volume is in use - [abc]"),
            Some(Kind::Conflict)
        );
        assert_eq!(classify("exit status 3"), None);
    }
}
