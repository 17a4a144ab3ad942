//! The one place that knows how the docker CLI behaves: its argv head (program and global
//! options), what its error messages say, and the errors we give when it cannot be started or
//! answers nonsense. Running it (within the engine deadline, for our own questions) is
//! `process`; reading what the engine holds is `inspect`.

use std::io::ErrorKind as IoErrorKind;
use std::sync::OnceLock;

use crate::error::{Error, Kind};
use crate::names::LABEL_PREFIX;

/// The call a message names: the subcommand and its first arguments, not thousands of names.
pub fn call_name(argv: &[String]) -> String {
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

/// The error for a docker call that failed because the engine did not answer, if its stderr
/// says that is why.
pub fn unreachable(stderr: &str) -> Option<anyhow::Error> {
    (classify(stderr) == Some(Kind::EngineUnreachable)).then(|| {
        Error::new(
            Kind::EngineUnreachable,
            format!("the {} engine did not answer", engine_name()),
        )
        .note(stderr.trim().to_owned())
        .into()
    })
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
