//! What a step's docker command creates, removes and mounts, read once from the argv the
//! compiler made: the executor, the probe and the swarm checks use these typed facts instead of
//! searching argv again.

use crate::plan::Facts;

/// The facts of `args`, a command's words after the docker head.
pub(super) fn of(args: &[String]) -> Facts {
    Facts {
        container: container_name(args),
        service: crate::swarm::service_name(args).or_else(|| update_target(args)),
        job_service: None,
        removed_services: crate::swarm::removed_services(args),
        removes: removed_objects(args),
        service_volumes: crate::swarm::mounted_volumes(args),
        client_paths: crate::engine::client_paths(args),
        stamp_record: None,
        labels: (args.iter())
            .filter(|a| a.starts_with("--label=") && !a.contains(".fingerprint="))
            .cloned()
            .collect(),
    }
}

/// The container a `run`/`create` (or `container run|create`) names with `--name`, if any.
fn container_name(args: &[String]) -> Option<String> {
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

/// The service a `service update` updates: its last argument.
fn update_target(args: &[String]) -> Option<String> {
    (args.first()? == "service" && args.get(1)? == "update")
        .then(|| args.last().cloned())
        .flatten()
}

/// The operands of `rm`, `container rm`, `volume rm`, `image rm`, `service rm` and `rmi`.
fn removed_objects(args: &[String]) -> Vec<String> {
    let words: Vec<&str> = args.iter().take(2).map(String::as_str).collect();
    let skip = match words.as_slice() {
        ["rm" | "rmi", ..] => 1,
        ["container" | "volume" | "image" | "service", "rm"] => 2,
        _ => args.len(),
    };
    (args.iter().skip(skip))
        .filter(|a| !a.starts_with('-'))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_container_names() {
        assert_eq!(
            of(&words(&["run", "--rm", "--name", "x", "img"])).container,
            Some("x".into())
        );
        assert_eq!(
            of(&words(&["container", "create", "--name=y", "img"])).container,
            Some("y".into())
        );
        assert_eq!(of(&words(&["build", "--name=y"])).container, None);
    }

    #[test]
    fn finds_what_a_step_removes() {
        assert_eq!(
            of(&words(&["volume", "rm", "--force", "a", "b"])).removes,
            ["a", "b"]
        );
        assert_eq!(of(&words(&["rmi", "i"])).removes, ["i"]);
        assert!(of(&words(&["run", "rm", "x"])).removes.is_empty());
        assert_eq!(of(&words(&["service", "rm", "s"])).removed_services, ["s"]);
    }
}
