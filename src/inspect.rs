//! What the engine holds, read with `docker inspect`: the objects a plan's `done` names (images,
//! volumes, containers, services), their labels and fingerprints, in as few calls as possible.
//! Its own module because reading a service needs `swarm`, which itself runs docker.

use std::collections::HashMap;

use serde_json::Value as Json;

use crate::docker::classify;
use crate::error::{Error, Kind};
use crate::names::LABEL_PREFIX;
use crate::process::query;

/// The kinds of object the probe reads. (A stamp is a volume.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Image,
    Volume,
    Container,
    Service,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ObjectKind::Image => "image",
            ObjectKind::Volume => "volume",
            ObjectKind::Container => "container",
            ObjectKind::Service => "service",
        })
    }
}

/// An object found by the probe.
#[derive(Debug, Clone)]
pub struct Object {
    pub kind: ObjectKind,
    /// The engine's id (images and containers; empty for volumes).
    pub id: String,
    pub labels: HashMap<String, String>,
    pub running: bool,
    /// Paused containers also say `running`; an interrupted backup can leave a daemon so.
    pub paused: bool,
    pub started_at: String,
    /// A swarm service's current spec, as far as an update in place needs it.
    pub service: Option<crate::swarm::ServiceSpec>,
    /// An image's layers (`RootFS.Layers`), oldest first: an image built on a base image
    /// starts with the base's layers (see `moved`).
    pub layers: Vec<String>,
}

impl Object {
    /// An object of `kind` with nothing else known yet.
    pub fn of(kind: ObjectKind) -> Object {
        Object {
            kind,
            id: String::new(),
            labels: HashMap::new(),
            running: false,
            paused: false,
            started_at: String::new(),
            service: None,
            layers: Vec::new(),
        }
    }

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

/// `name` as docker lists it among an image's RepoTags. Podman lists the images it built or
/// loaded as `localhost/NAME`, and pulled ones with their registry in front.
fn normalize_image(name: &str) -> String {
    let name = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .or_else(|| name.strip_prefix("localhost/"))
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
    let mut argv = head.to_vec();
    argv.push("inspect".into());
    argv.extend(names.iter().cloned());
    let captured = query(&argv)?;
    if !captured.success() {
        only_missing_objects(&captured.stderr)?;
    }
    let objects = objects_of(&argv, &captured.stdout)?;
    let wanted_images: HashMap<String, &String> =
        names.iter().map(|n| (normalize_image(n), n)).collect();
    let mut found = HashMap::new();
    for object in &objects {
        if let Some(tags) = object.get("RepoTags").and_then(Json::as_array) {
            for (asked, image) in read_image(object, tags, &wanted_images) {
                if names.contains(&asked) {
                    found.insert(asked, image);
                }
            }
        } else if let Some((name, read)) = read_other(object) {
            found.insert(name, read);
        }
    }
    Ok(found)
}

/// The objects of inspect's answer, a JSON array of objects. Anything else (cut short, garbled
/// by a proxy, a CLI that printed something else) is an error: read as "nothing found", it
/// would make a run redo what exists.
fn objects_of(argv: &[String], stdout: &str) -> anyhow::Result<Vec<Json>> {
    let parsed = serde_json::from_str::<Vec<Json>>(stdout.trim())
        .map_err(|e| e.to_string())
        .and_then(|objects| match objects.iter().all(Json::is_object) {
            true => Ok(objects),
            false => Err("an element of the array is not an object".to_owned()),
        });
    parsed.map_err(|why| crate::docker::unreadable(argv, stdout, &why))
}

/// Missing objects make inspect fail; anything else it says is a real problem.
fn only_missing_objects(stderr: &str) -> anyhow::Result<()> {
    if classify(stderr) == Some(Kind::EngineUnreachable) {
        return Err(Error::new(
            Kind::EngineUnreachable,
            format!("the {} engine did not answer", crate::docker::engine_name()),
        )
        .note(stderr.trim().to_owned())
        .into());
    }
    let unexpected: Vec<&str> = stderr
        .lines()
        // Podman says it in lower case, and once more on a last `Error:` line.
        .filter(|l| !l.trim().is_empty() && !l.to_ascii_lowercase().contains("no such object"))
        .collect();
    if unexpected.is_empty() {
        Ok(())
    } else {
        Err(Error::new(
            Kind::EngineUnreachable,
            format!(
                "{} inspect failed: {}",
                crate::docker::program(),
                unexpected.join("; ")
            ),
        )
        .into())
    }
}

fn text<'a>(object: &'a Json, key: &str) -> &'a str {
    object.get(key).and_then(Json::as_str).unwrap_or_default()
}

/// An image, under every name it answers to that was asked for (a tag as asked, or its id).
fn read_image(
    object: &Json,
    tags: &[Json],
    wanted_images: &HashMap<String, &String>,
) -> Vec<(String, Object)> {
    let labels = labels(object.pointer("/Config/Labels"));
    let id = text(object, "Id");
    let layers: Vec<String> = (object.pointer("/RootFS/Layers").and_then(Json::as_array))
        .map(|all| {
            all.iter()
                .filter_map(|l| Some(l.as_str()?.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let keys = tags
        .iter()
        .filter_map(Json::as_str)
        .chain(std::iter::once(id));
    keys.map(|key| {
        let asked = wanted_images
            .get(key)
            .or_else(|| wanted_images.get(&normalize_image(key)))
            .map_or_else(|| key.to_owned(), |s| (*s).clone());
        let image = Object {
            id: id.to_owned(),
            labels: labels.clone(),
            layers: layers.clone(),
            ..Object::of(ObjectKind::Image)
        };
        (asked, image)
    })
    .collect()
}

/// A volume, a container or a service, by its name.
fn read_other(object: &Json) -> Option<(String, Object)> {
    if object.get("Mountpoint").is_some() {
        let volume = Object {
            labels: labels(object.get("Labels")),
            ..Object::of(ObjectKind::Volume)
        };
        return Some((text(object, "Name").to_owned(), volume));
    }
    if let Some(state) = object.get("State") {
        let container = Object {
            id: text(object, "Id").to_owned(),
            labels: labels(object.pointer("/Config/Labels")),
            running: state
                .get("Running")
                .and_then(Json::as_bool)
                .unwrap_or(false),
            paused: state.get("Paused").and_then(Json::as_bool).unwrap_or(false),
            started_at: text(state, "StartedAt").to_owned(),
            ..Object::of(ObjectKind::Container)
        };
        let name = text(object, "Name").trim_start_matches('/').to_owned();
        return Some((name, container));
    }
    let (name, spec) = crate::swarm::parse_service(object)?;
    let service = Object {
        id: text(object, "ID").to_owned(),
        labels: labels(crate::swarm::service_labels(object)),
        service: Some(spec),
        ..Object::of(ObjectKind::Service)
    };
    Some((name, service))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_array_of_objects_is_an_answer() {
        let argv: Vec<String> = ["docker", "inspect", "a"].map(String::from).to_vec();
        assert!(objects_of(&argv, "[]\n").unwrap().is_empty());
        assert_eq!(objects_of(&argv, r#"[{"Id":"x"}]"#).unwrap().len(), 1);
        for garbled in ["", "[{\"Id\":", "{}", "[1]", "null", "[] trailing"] {
            let error = objects_of(&argv, garbled).unwrap_err();
            assert_eq!(crate::error::exit_code_of(&error), 68, "{garbled:?}");
            assert!(
                error.to_string().contains("`docker inspect`"),
                "{garbled:?}"
            );
        }
    }

    #[test]
    fn image_names_normalize_like_repo_tags() {
        assert_eq!(normalize_image("python:3.12-slim"), "python:3.12-slim");
        assert_eq!(normalize_image("docker.io/library/python"), "python:latest");
        assert_eq!(normalize_image("host:5000/a/b"), "host:5000/a/b:latest");
        assert_eq!(
            normalize_image("localhost/host_container/python-minimal:default"),
            "host_container/python-minimal:default"
        );
    }
}
