//! The one place that knows how the docker CLI behaves: its argv head (program and global
//! options), running it for an answer, and reading its error messages. Reading what the engine
//! holds is `inspect`.

use std::io::ErrorKind as IoErrorKind;

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

/// Runs `argv` (docker and its arguments) with no stdin and captured output.
pub fn capture(argv: &[String]) -> anyhow::Result<Captured> {
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

/// The error for a docker program that could not be started.
pub fn spawn_error(program: &str, error: std::io::Error) -> anyhow::Error {
    if error.kind() == IoErrorKind::NotFound {
        Error::new(
            Kind::DockerMissing,
            format!("`{program}` is not installed (or not on PATH)"),
        )
        .note("install Docker: https://docs.docker.com/engine/install/")
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

/// The container docker's output says does not exist.
pub fn no_such_container(output: &str) -> Option<&str> {
    let (_, rest) = output.split_once("No such container: ")?;
    rest.split_whitespace().next()
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
    capture(&argv).is_ok_and(|c| c.success())
}

/// The error for a docker call that failed because the engine did not answer, if that is why.
pub fn unreachable(captured: &Captured) -> Option<anyhow::Error> {
    (!captured.success() && classify(&captured.stderr) == Some(Kind::EngineUnreachable)).then(
        || {
            Error::new(Kind::EngineUnreachable, "the Docker engine did not answer")
                .note(captured.stderr.trim().to_owned())
                .into()
        },
    )
}

/// The docker program and its global options, the head of every argv.
pub fn docker_head(context: Option<&str>) -> Vec<String> {
    let mut head = vec!["docker".to_owned()];
    if let Some(context) = context {
        head.push("--context".into());
        head.push(context.into());
    }
    head
}

/// How many leading elements of an argv are the docker program and its global options.
pub fn docker_head_len(argv: &[String]) -> usize {
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
