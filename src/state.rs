//! Make-like state: which steps are done, which are stale, and why.
//!
//! The state lives in the Docker engine (fingerprint labels on images and containers, stamp
//! volumes, named volumes), so it is right for remote engines and fresh CI checkouts. It is
//! probed with one `docker inspect` of every object the plan names (split only where a huge plan
//! would exceed the argument-length limit).

use std::fs;

use crate::cli::Invocation;
use crate::docker::{self, docker_head, docker_head_len};
use crate::error::{Error, Kind};
use crate::inspect::{self, Object};
use crate::names::{instance_labels, Names, LABEL_PREFIX, UNFINISHED_LABEL};
use crate::plan::{Plan, Status, Step};
use crate::record;

pub use crate::inspect::Observed;

/// The names the plan's state depends on, each once, in plan order.
pub fn probe_names(plan: &Plan) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut names: Vec<String> = Vec::new();
    for step in &plan.steps {
        let candidates = step
            .done
            .iter()
            .map(|d| &d.name)
            .chain(step.uses_images.iter())
            .chain(removal_targets(step));
        for name in candidates {
            if seen.insert(name.as_str()) {
                names.push(name.clone());
            }
        }
    }
    // A data volume in the middle of an interrupted restore must not be used: asking for the
    // swap marker too costs no docker call.
    let markers: Vec<String> = volumes(plan).map(crate::archive::swap_marker).collect();
    names.extend(markers);
    names
}

/// The names a step removes: the operands of `rm`, `container rm`, `volume rm`, `image rm` and
/// `rmi`, and the volume a restore replaces. They are probed with everything else, so that a
/// destructive step never removes an object of another instance that happens to have the name.
pub fn removal_targets(step: &Step) -> Vec<&String> {
    let args = &step.argv[docker_head_len(&step.argv)..];
    let words: Vec<&str> = args.iter().take(2).map(String::as_str).collect();
    let skip = match words.as_slice() {
        ["rm" | "rmi", ..] => 1,
        ["container" | "volume" | "image" | "service", "rm"] => 2,
        _ => args.len(),
    };
    let mut targets: Vec<&String> = args
        .iter()
        .skip(skip)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if let Some(archive) = step
        .archive
        .as_ref()
        .filter(|a| a.action == crate::mode::ArchiveAction::Restore)
    {
        targets.push(&archive.volume);
    }
    targets
}

/// Whether an object carries all three labels of this plan's instance.
fn belongs_to(object: &Object, plan: &Plan) -> bool {
    let label = |key: &str| {
        object
            .labels
            .get(&format!("{LABEL_PREFIX}.{key}"))
            .map(String::as_str)
    };
    label("language") == Some(plan.language.as_str())
        && label("variant") == Some(plan.variant.as_str())
        && label("instance") == Some(plan.instance.as_str())
}

/// Who an object's labels say it belongs to, for messages.
fn owner(object: &Object) -> String {
    let label = |key: &str| {
        object
            .labels
            .get(&format!("{LABEL_PREFIX}.{key}"))
            .cloned()
            .unwrap_or_else(|| "?".into())
    };
    if object.is_ours() {
        format!(
            "{} {} instance {}",
            label("language"),
            label("variant"),
            label("instance")
        )
    } else {
        "something host_container did not create".into()
    }
}

/// The error for a step that would remove an object of someone else.
fn foreign_removal(plan: &Plan, step: &Step, name: &str, object: &Object) -> Error {
    Error::new(
        Kind::Conflict,
        format!(
            "step `{}` would remove {} `{name}`, which belongs to {}, not to {} {} instance {}; \
             nothing was removed",
            step.id,
            object.kind,
            owner(object),
            plan.language,
            plan.variant,
            plan.instance
        ),
    )
    .note("remove or rename that object yourself if it is really unused")
}

/// The volumes the plan's steps make (`done: {volume}`).
fn volumes(plan: &Plan) -> impl Iterator<Item = &str> {
    plan.steps
        .iter()
        .filter_map(|s| s.done.as_ref().filter(|d| d.kind == "volume"))
        .map(|d| d.name.as_str())
}

/// An interrupted restore's swap: the volume may be incomplete, so nothing may use it until it
/// is finished (by `restore`, which is therefore exempt) or rolled back.
fn interrupted_restores(plan: &Plan, observed: &Observed) -> Vec<Error> {
    let restoring = |volume: &str| {
        plan.steps.iter().any(|s| {
            s.archive.as_ref().is_some_and(|a| {
                a.action == crate::mode::ArchiveAction::Restore && a.volume == volume
            })
        })
    };
    let image = plan
        .steps
        .iter()
        .find_map(|s| s.done.as_ref().filter(|d| d.kind == "image"))
        .map_or("IMAGE", |d| d.name.as_str());
    let docker = plan
        .steps
        .first()
        .map(|s| s.argv[..docker_head_len(&s.argv)].join(" "))
        .unwrap_or_else(|| "docker".into());
    volumes(plan)
        .filter(|v| observed.contains_key(&crate::archive::swap_marker(v)) && !restoring(v))
        .map(|volume| {
            let marker = crate::archive::swap_marker(volume);
            Error::new(
                Kind::Conflict,
                format!(
                    "a restore of volume `{volume}` was interrupted while it swapped the content (marker volume `{marker}`): `{volume}` may be incomplete and is not used until that is settled"
                ),
            )
            .note(format!(
                "its content from before is in volume `{volume}-restore-undo`, the restored content in `{volume}-restore-staging`"
            ))
            .note(format!(
                "to finish the restore, run the `restore` mode of this instance again (it fills `{volume}` from the staging copy)"
            ))
            .note(format!(
                "to roll back instead: {docker} run --rm --network=none --volume={volume}-restore-undo:/from:ro --volume={volume}:/to {image} sh -c 'find /to -mindepth 1 -delete && cp -a /from/. /to/' && {docker} volume rm {marker} {volume}-restore-staging"
            ))
        })
        .collect()
}

/// Removes containers that a killed run of one of the `selected` steps left running (a
/// `docker run` outlives its killed client): under the instance lock no live invocation runs
/// those steps, and a second copy must not work on the same volume at the same time.
pub fn stop_orphans(plan: &Plan, selected: &[bool]) -> anyhow::Result<()> {
    let steps: Vec<&str> = plan
        .steps
        .iter()
        .zip(selected)
        .filter(|(s, selected)| {
            **selected
                && s.status == Status::Run
                // A service's task containers are swarm's: an update replaces them in turn.
                && s.done
                    .as_ref()
                    .is_none_or(|d| d.kind != "container" && d.kind != "service")
        })
        .map(|(s, _)| s.id.as_str())
        .collect();
    let Some(first) = plan.steps.first().filter(|_| !steps.is_empty()) else {
        return Ok(());
    };
    let head = first.argv[..docker_head_len(&first.argv)].to_vec();
    let mut ps = head.clone();
    ps.push("ps".into());
    for (key, value) in [
        ("language", &plan.language),
        ("variant", &plan.variant),
        ("instance", &plan.instance),
    ] {
        ps.push(format!("--filter=label={LABEL_PREFIX}.{key}={value}"));
    }
    ps.push(format!(
        "--format={{{{.ID}}}} {{{{.Label \"{LABEL_PREFIX}.step\"}}}} {{{{.Names}}}}"
    ));
    let listed = docker::capture(&ps)?;
    if !listed.success() {
        // Not knowing is no reason to stop: the steps run as before.
        return Ok(());
    }
    for line in listed.stdout.lines() {
        let mut fields = line.splitn(3, ' ');
        let (Some(id), Some(step), name) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if !steps.contains(&step) {
            continue;
        }
        eprintln!(
            "host_container: removing container {} left running by an interrupted run of `{step}`",
            name.unwrap_or(id)
        );
        let mut remove = head.clone();
        remove.extend(["rm".into(), "--force".into(), id.to_owned()]);
        let removed = docker::capture(&remove)?;
        if !removed.success() {
            return Err(Error::new(
                Kind::Conflict,
                format!(
                    "container {} of an interrupted run of `{step}` could not be removed",
                    name.unwrap_or(id)
                ),
            )
            .note(removed.stderr.trim().to_owned())
            .into());
        }
    }
    Ok(())
}

/// Probes the engine for the plan's objects (one docker call for any ordinary plan).
pub fn probe(plan: &Plan) -> anyhow::Result<Observed> {
    let head = plan
        .steps
        .first()
        .map(|s| s.argv[..docker_head_len(&s.argv)].to_vec())
        .unwrap_or_else(|| vec!["docker".into()]);
    inspect::inspect(&head, &probe_names(plan))
}

/// Decides every step's status from what was observed. A container name held by something
/// host_container did not create is a conflict: the plan says so, and executing it fails.
pub fn apply(plan: &mut Plan, observed: &Observed) -> Vec<Error> {
    plan.state = "probed".into();
    let mut conflicts = interrupted_restores(plan, observed);
    for index in 0..plan.steps.len() {
        let (status, reason, before, invalidates) = decide(plan, index, observed, &mut conflicts);
        let foreign: Vec<Error> = removal_targets(&plan.steps[index])
            .into_iter()
            .filter_map(|name| Some((name, observed.get(name)?)))
            .filter(|(_, object)| !belongs_to(object, plan))
            .map(|(name, object)| foreign_removal(plan, &plan.steps[index], name, object))
            .collect();
        let argv = service_argv(plan, index, observed, status);
        let step = &mut plan.steps[index];
        if let Some(argv) = argv {
            // Non-UTF-8 COMMAND bytes sit at positions of the create argv only.
            step.raw_args.clear();
            step.argv = argv;
        }
        step.status = status;
        step.invalidates = invalidates;
        step.reason = reason;
        step.before = step.planned_before.clone();
        step.before.extend(before);
        let missing: Vec<&String> = step
            .uses_images
            .iter()
            .filter(|image| !observed.contains_key(*image))
            .collect();
        if step.status == Status::Run && !missing.is_empty() {
            let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            step.reason.push_str(&format!(
                "; {} not present locally: docker will try to pull it",
                list.join(", ")
            ));
        }
        if let Some(first) = foreign.first() {
            step.reason = format!("CONFLICT: {}", first.message);
        }
        conflicts.extend(foreign);
    }
    plan.summary = crate::plan::Summary::of(&plan.steps);
    conflicts
}

/// What changed since `object` was made, in words: from the record it carries, or else the
/// two fingerprints.
fn what_changed(step: &Step, object: &Object) -> String {
    let changes = object
        .labels
        .get(&format!("{LABEL_PREFIX}.record"))
        .and_then(|text| record::Record::from_label(text))
        .map(|old| record::changes(&old, &step.record))
        .unwrap_or_default();
    if changes.is_empty() {
        match object.fingerprint() {
            Some(recorded) => format!(
                "fingerprint {} differs from the recorded {recorded}",
                step.fingerprint
            ),
            None => format!("fingerprint {}, none recorded", step.fingerprint),
        }
    } else {
        record::describe(&changes)
    }
}

/// A step's status, why, the commands to run before it, and whether the steps that need it
/// must run too when it runs.
type Decision = (Status, String, Vec<Vec<String>>, bool);

fn decide(plan: &Plan, index: usize, observed: &Observed, conflicts: &mut Vec<Error>) -> Decision {
    let step = &plan.steps[index];
    if step.forced {
        return (
            Status::Run,
            format!("mode `{}` was requested: runs even when done", step.mode),
            Vec::new(),
            true,
        );
    }
    let Some(done) = &step.done else {
        return (
            Status::Run,
            "no `done` condition: always runs".into(),
            Vec::new(),
            true,
        );
    };
    let found = observed.get(&done.name);
    let kind_matches = |kind: &str| found.filter(|o| o.kind == kind);
    let fingerprint_note = |object: &Object| what_changed(step, object);
    let head = step.argv[..docker_head_len(&step.argv)].to_vec();
    let (mut status, mut reason, mut before) = match done.kind.as_str() {
        "image" => match kind_matches("image") {
            None => (
                Status::Run,
                format!("image `{}` does not exist", done.name),
                vec![],
            ),
            Some(o) if o.fingerprint() != Some(step.fingerprint.as_str()) => {
                (Status::Run, fingerprint_note(o), vec![])
            }
            Some(_) => (
                Status::Skip,
                format!("image `{}` is up to date", done.name),
                vec![],
            ),
        },
        "volume" => match kind_matches("volume") {
            None => (
                Status::Run,
                format!("volume `{}` does not exist", done.name),
                vec![],
            ),
            Some(_) => (
                Status::Skip,
                format!("volume `{}` exists", done.name),
                vec![],
            ),
        },
        "stamp" => match kind_matches("volume") {
            None => (
                Status::Run,
                format!("not done yet: no stamp `{}`", done.name),
                vec![],
            ),
            Some(o) if o.labels.contains_key(UNFINISHED_LABEL) => {
                (Status::Run, "the last run did not finish".into(), vec![])
            }
            Some(o) if o.fingerprint() != Some(step.fingerprint.as_str()) => {
                (Status::Run, fingerprint_note(o), vec![])
            }
            Some(_) => (
                Status::Skip,
                format!("done and up to date: stamp `{}`", done.name),
                vec![],
            ),
        },
        "service" => decide_service(step, kind_matches("service"), conflicts),
        _ => match kind_matches("container") {
            None => (
                Status::Run,
                format!("container `{}` does not exist", done.name),
                vec![],
            ),
            Some(o) if !belongs_to(o, plan) => {
                conflicts.push(
                    Error::new(
                        Kind::Conflict,
                        format!("container name `{}` is taken by {}", done.name, owner(o)),
                    )
                    .note("remove or rename that container, or pick another --instance"),
                );
                (
                    Status::Run,
                    format!("CONFLICT: `{}` belongs to {}", done.name, owner(o)),
                    vec![],
                )
            }
            Some(o) => {
                let remove = remove_container(&head, &done.name);
                if o.fingerprint() != Some(step.fingerprint.as_str()) {
                    (
                        Status::Run,
                        format!(
                            "{}: container `{}` is re-created",
                            fingerprint_note(o),
                            done.name
                        ),
                        vec![remove],
                    )
                } else if o.paused {
                    (
                        Status::Run,
                        format!(
                            "container `{}` is paused, as an interrupted backup leaves it: re-created",
                            done.name
                        ),
                        vec![remove],
                    )
                } else if !o.running {
                    (
                        Status::Run,
                        format!(
                            "container `{}` exists but is not running: re-created",
                            done.name
                        ),
                        vec![remove],
                    )
                } else {
                    (
                        Status::Skip,
                        format!(
                            "container `{}` is already running with the same configuration, since {}",
                            done.name, o.started_at
                        ),
                        vec![],
                    )
                }
            }
        },
    };
    // A step that runs only because its object is missing makes it again from unchanged
    // inputs. A new volume is empty, though, so what fills it runs again, unless the step
    // itself fills it from its inputs.
    let remade = done.kind != "volume" || !step.inputs.is_empty();
    let missing = found.is_none() && remade;
    let mut invalidates = status == Status::Run && !missing;
    if status == Status::Skip {
        if let Some(&need) = step
            .need_indexes
            .iter()
            .find(|&&n| plan.steps[n].status == Status::Run && plan.steps[n].invalidates)
        {
            status = Status::Run;
            invalidates = true;
            reason = format!("needs `{}`, which runs", plan.steps[need].id);
            if done.kind == "container" {
                before = vec![remove_container(&head, &done.name)];
            }
        }
    }
    (status, reason, before, invalidates)
}

/// A service step: created when missing, left alone when it runs this configuration, and
/// otherwise updated in place (its argv then becomes a `service update`, see `service_argv`).
fn decide_service(
    step: &crate::plan::Step,
    found: Option<&Object>,
    conflicts: &mut Vec<Error>,
) -> (Status, String, Vec<Vec<String>>) {
    let Some(done) = &step.done else {
        return (Status::Run, String::new(), vec![]);
    };
    let version = |o: &Object| o.service.as_ref().map_or(0, |s| s.version);
    match found {
        None => (
            Status::Run,
            format!("service `{}` does not exist", done.name),
            vec![],
        ),
        Some(o) if !o.is_ours() => {
            conflicts.push(
                Error::new(
                    Kind::Conflict,
                    format!(
                        "service name `{}` is taken by a service host_container did not create",
                        done.name
                    ),
                )
                .note("remove or rename that service, or pick another --instance"),
            );
            (
                Status::Run,
                format!(
                    "CONFLICT: `{}` exists and was not created by host_container",
                    done.name
                ),
                vec![],
            )
        }
        Some(o) if o.fingerprint() != Some(step.fingerprint.as_str()) => (
            Status::Run,
            format!(
                "service `{}` (version {}) runs an older configuration (fingerprint {} differs \
                 from the recorded {}): updated in place",
                done.name,
                version(o),
                step.fingerprint,
                o.fingerprint().unwrap_or("(none)")
            ),
            vec![],
        ),
        Some(o) => (
            Status::Skip,
            format!(
                "service `{}` already runs the same configuration (version {})",
                done.name,
                version(o)
            ),
            vec![],
        ),
    }
}

/// The argv a service step runs: its `service create` when the service is missing, else the
/// `service update` that brings the existing one to this configuration (forced when only a
/// needed step runs, so that its tasks restart on what that step rebuilt). None for other steps.
fn service_argv(
    plan: &Plan,
    index: usize,
    observed: &Observed,
    status: Status,
) -> Option<Vec<String>> {
    let step = &plan.steps[index];
    let done = step.done.as_ref().filter(|d| d.kind == "service")?;
    if step.create_argv.is_empty() {
        return None;
    }
    let spec = observed
        .get(&done.name)
        .filter(|o| o.kind == "service" && o.is_ours())
        .and_then(|o| o.service.as_ref());
    let Some(spec) = spec.filter(|_| status == Status::Run) else {
        return Some(step.create_argv.clone());
    };
    let head = docker_head_len(&step.create_argv);
    let same = observed
        .get(&done.name)
        .and_then(Object::fingerprint)
        .is_some_and(|f| f == step.fingerprint);
    let update = crate::swarm::update_args(&step.create_argv[head..], spec, same)?;
    let mut argv = step.create_argv[..head].to_vec();
    argv.extend(update);
    Some(argv)
}

/// `docker rm --force NAME`: how a stale or stopped container makes way for its replacement.
fn remove_container(head: &[String], name: &str) -> Vec<String> {
    let mut argv = head.to_vec();
    argv.extend(["rm", "--force", name].map(String::from));
    argv
}

/// Whether this instance was made under the legacy names and must keep them: the engine holds a
/// volume with a legacy name and all three labels of this instance, or the backup directory a
/// manifest of this instance under a legacy name. Names of other instances that merely look the
/// same (the collision the new names prevent) do not count, their labels differ; an old backup
/// counts only while the engine holds nothing of the instance under the new names. Asks nothing
/// when both schemes give the same names, which is the case for names without `-`.
pub fn legacy_names_in_use(invocation: &Invocation, context: Option<&str>) -> bool {
    let legacy = Names::legacy(invocation).prefix;
    let mut current = invocation.clone();
    current.legacy_names = false;
    if Names::of(&current).prefix == legacy {
        return false;
    }
    let current = Names::of(&current).prefix;
    let starts = |name: &str, prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('-'))
    };
    let starts_legacy = |name: &str| starts(name, &legacy);
    let mut argv = docker_head(context);
    argv.extend(["volume", "ls", "--quiet"].map(String::from));
    for (key, value) in instance_labels(invocation) {
        argv.push(format!("--filter=label={key}={value}"));
    }
    if let Ok(listed) = crate::docker::capture(&argv) {
        let names: Vec<&str> = listed.stdout.lines().map(str::trim).collect();
        if listed.success() && names.iter().any(|n| starts_legacy(n)) {
            return true;
        }
        // Already living under the new names: an old backup must not pull it back.
        if names.iter().any(|n| starts(n, &current)) {
            return false;
        }
    }
    let Ok(entries) = fs::read_dir(&invocation.backup_dir) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        name.ends_with(".manifest.json")
            && starts_legacy(&name)
            && crate::safe_fs::read_limited(&entry.path(), 1 << 20)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                .is_some_and(|m| {
                    m["language"] == invocation.language.as_str()
                        && m["variant"] == invocation.variant.as_str()
                        && m["instance"] == invocation.instance.as_str()
                })
    })
}
