//! The one place that knows how the docker CLI behaves: running it for an answer, the batched
//! state probe (`docker inspect` of many objects in one call, or a few for huge plans), and
//! reading its error messages.

use std::collections::HashMap;
use std::io::ErrorKind as IoErrorKind;

use serde_json::Value as Json;

use crate::error::{Error, Kind};
use crate::plan::LABEL_PREFIX;

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
/// deprecation banner, and the LABEL steps that the `--label` options of our builds add (one
/// step of four lines per label).
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

/// An object found by the probe.
#[derive(Debug, Clone, Default)]
pub struct Object {
    /// image, volume, container or service.
    pub kind: &'static str,
    /// The engine's id (images and containers; empty for volumes).
    pub id: String,
    pub labels: HashMap<String, String>,
    pub running: bool,
    /// Paused containers also say `running`; an interrupted backup can leave a daemon so.
    pub paused: bool,
    pub started_at: String,
    /// A swarm service's current spec, as far as an update in place needs it.
    pub service: Option<crate::swarm::ServiceSpec>,
}

impl Object {
    pub fn fingerprint(&self) -> Option<&str> {
        self.labels
            .get(&format!("{LABEL_PREFIX}.fingerprint"))
            .map(String::as_str)
    }

    /// Whether host_container created it (it carries the instance label).
    pub fn is_ours(&self) -> bool {
        self.labels
            .contains_key(&format!("{LABEL_PREFIX}.instance"))
    }
}

/// Objects found by a probe, by the name asked for.
pub type Observed = HashMap<String, Object>;

/// `name` as docker lists it among an image's RepoTags.
fn normalize_image(name: &str) -> String {
    let name = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name);
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || name.contains('@') {
        name.to_owned()
    } else {
        format!("{name}:latest")
    }
}

fn labels(value: Option<&Json>) -> HashMap<String, String> {
    value
        .and_then(Json::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// How many bytes of names one `docker inspect` may carry. Linux allows 2 MiB for a command
/// line and its environment together (less with a small stack limit); a quarter of that keeps
/// ordinary plans, even of thousands of steps, to one call.
const MAX_INSPECT_BYTES: usize = 512 * 1024;

/// Inspects all `names` (images, volumes, containers), in as few docker calls as the
/// argument-length limit allows (one for any ordinary plan). Returns the objects found, by the
/// name asked for; missing names are simply absent.
pub fn inspect(head: &[String], names: &[String]) -> anyhow::Result<HashMap<String, Object>> {
    let mut found = HashMap::new();
    let mut start = 0;
    while start < names.len() {
        let mut bytes = 0;
        let mut end = start;
        // Each argument also costs its terminating NUL and a pointer in argv.
        while end < names.len()
            && (end == start || bytes + names[end].len() + 9 <= MAX_INSPECT_BYTES)
        {
            bytes += names[end].len() + 9;
            end += 1;
        }
        found.extend(inspect_batch(head, &names[start..end])?);
        start = end;
    }
    Ok(found)
}

fn inspect_batch(head: &[String], names: &[String]) -> anyhow::Result<HashMap<String, Object>> {
    let mut found = HashMap::new();
    let mut argv = head.to_vec();
    argv.push("inspect".into());
    argv.extend(names.iter().cloned());
    let captured = capture(&argv)?;
    if !captured.success() {
        if classify(&captured.stderr) == Some(Kind::EngineUnreachable) {
            return Err(
                Error::new(Kind::EngineUnreachable, "the Docker engine did not answer")
                    .note(captured.stderr.trim().to_owned())
                    .into(),
            );
        }
        // Missing objects make inspect fail; anything else it says is a real problem.
        let unexpected: Vec<&str> = captured
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.contains("No such object"))
            .collect();
        if !unexpected.is_empty() {
            return Err(Error::new(
                Kind::EngineUnreachable,
                format!("docker inspect failed: {}", unexpected.join("; ")),
            )
            .into());
        }
    }
    let objects: Vec<Json> = serde_json::from_str(captured.stdout.trim()).unwrap_or_default();
    let wanted_images: HashMap<String, &String> =
        names.iter().map(|n| (normalize_image(n), n)).collect();
    for object in &objects {
        if let Some(tags) = object.get("RepoTags").and_then(Json::as_array) {
            let labels = labels(object.pointer("/Config/Labels"));
            let id = object.get("Id").and_then(Json::as_str).unwrap_or_default();
            let mut keys: Vec<String> = tags
                .iter()
                .filter_map(Json::as_str)
                .map(str::to_owned)
                .collect();
            keys.push(id.to_owned());
            for key in keys {
                let asked = wanted_images
                    .get(&key)
                    .map(|s| (*s).clone())
                    .unwrap_or(key.clone());
                if names.contains(&asked) {
                    found.insert(
                        asked,
                        Object {
                            kind: "image",
                            id: id.to_owned(),
                            labels: labels.clone(),
                            ..Object::default()
                        },
                    );
                }
            }
        } else if object.get("Mountpoint").is_some() {
            let name = object
                .get("Name")
                .and_then(Json::as_str)
                .unwrap_or_default();
            found.insert(
                name.to_owned(),
                Object {
                    kind: "volume",
                    labels: labels(object.get("Labels")),
                    ..Object::default()
                },
            );
        } else if let Some(state) = object.get("State") {
            let name = object
                .get("Name")
                .and_then(Json::as_str)
                .unwrap_or_default();
            found.insert(
                name.trim_start_matches('/').to_owned(),
                Object {
                    kind: "container",
                    id: object
                        .get("Id")
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    labels: labels(object.pointer("/Config/Labels")),
                    running: state
                        .get("Running")
                        .and_then(Json::as_bool)
                        .unwrap_or(false),
                    paused: state.get("Paused").and_then(Json::as_bool).unwrap_or(false),
                    started_at: state
                        .get("StartedAt")
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    ..Object::default()
                },
            );
        } else if let Some((name, spec)) = crate::swarm::parse_service(object) {
            found.insert(
                name,
                Object {
                    kind: "service",
                    id: object
                        .get("ID")
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    labels: labels(crate::swarm::service_labels(object)),
                    service: Some(spec),
                    ..Object::default()
                },
            );
        }
    }
    Ok(found)
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
    fn image_names_normalize_like_repo_tags() {
        assert_eq!(normalize_image("python:3.12-slim"), "python:3.12-slim");
        assert_eq!(normalize_image("docker.io/library/python"), "python:latest");
        assert_eq!(normalize_image("host:5000/a/b"), "host:5000/a/b:latest");
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
