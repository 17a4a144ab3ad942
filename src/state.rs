//! Make-like state: which steps are done, which are stale, and why.
//!
//! The state lives in the Docker engine (fingerprint labels on images and containers, stamp
//! volumes, named volumes), so it is right for remote engines and fresh CI checkouts. It is
//! probed with one `docker inspect` of every object the plan names (split only where a huge plan
//! would exceed the argument-length limit).

use std::fs;

use crate::cli::Invocation;
use crate::docker::{docker_head, docker_head_len};
use crate::error::{Error, Kind};
use crate::inspect::{self, Object, ObjectKind};
use crate::mode::DoneKind;
use crate::names::{instance_labels, Names, LABEL_PREFIX, UNFINISHED_LABEL};
use crate::plan::{DoneObject, Plan, Status, Step};
use crate::process;
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
        .filter_map(|s| s.done.as_ref().filter(|d| d.kind == DoneKind::Volume))
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
        .find_map(|s| s.done.as_ref().filter(|d| d.kind == DoneKind::Image))
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
                    .is_none_or(|d| d.kind != DoneKind::Container && d.kind != DoneKind::Service)
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
    let listed = process::query(&ps)?;
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
        let removed = process::capture(&remove)?;
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
        step.invalidates = invalidates && step.propagates;
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

/// A done object's status, why, and the commands to run before the step.
type Verdict = (Status, String, Vec<Vec<String>>);

/// The kind of object the engine holds for a done object of `kind`.
fn probed_as(kind: DoneKind) -> ObjectKind {
    match kind {
        DoneKind::Image => ObjectKind::Image,
        DoneKind::Volume | DoneKind::Stamp => ObjectKind::Volume,
        DoneKind::Container => ObjectKind::Container,
        DoneKind::Service => ObjectKind::Service,
    }
}

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
    let any = observed.get(&done.name);
    let found = any.filter(|o| o.kind == probed_as(done.kind));
    let (status, reason, before) = match done.kind {
        DoneKind::Image => crate::moved::decide(step, found, observed)
            .unwrap_or_else(|| decide_image(step, done, found)),
        DoneKind::Volume => decide_volume(done, found),
        DoneKind::Stamp => decide_stamp(step, done, found),
        DoneKind::Service => decide_service(step, found, conflicts),
        DoneKind::Container => decide_container(plan, step, done, found, conflicts),
    };
    // A step that runs only because its object is missing makes it again from unchanged
    // inputs. A new volume is empty, though, so what fills it runs again, unless the step
    // itself fills it from its inputs.
    let remade = done.kind != DoneKind::Volume || !step.inputs.is_empty();
    let missing = any.is_none() && remade;
    let invalidates = status == Status::Run && !missing;
    if status == Status::Skip {
        if let Some(verdict) = rerun_for_needs(plan, step, done) {
            let (status, reason, before) = verdict;
            return (status, reason, before, true);
        }
    }
    (status, reason, before, invalidates)
}

/// A done step runs again when a step it needs runs and invalidates what it made.
fn rerun_for_needs(plan: &Plan, step: &Step, done: &DoneObject) -> Option<Verdict> {
    let &need = step
        .need_indexes
        .iter()
        .find(|&&n| plan.steps[n].status == Status::Run && plan.steps[n].invalidates)?;
    let before = if done.kind == DoneKind::Container {
        vec![remove_container(head_of(step), &done.name)]
    } else {
        Vec::new()
    };
    Some((
        Status::Run,
        format!("needs `{}`, which runs", plan.steps[need].id),
        before,
    ))
}

fn head_of(step: &Step) -> &[String] {
    &step.argv[..docker_head_len(&step.argv)]
}

/// The same fingerprint means the same inputs; a stale object says what changed.
fn up_to_date(step: &Step, object: &Object) -> Result<(), String> {
    if object.fingerprint() == Some(step.fingerprint.as_str()) {
        Ok(())
    } else {
        Err(what_changed(step, object))
    }
}

fn decide_image(step: &Step, done: &DoneObject, found: Option<&Object>) -> Verdict {
    match found.map(|o| up_to_date(step, o)) {
        None => (
            Status::Run,
            format!("image `{}` does not exist", done.name),
            vec![],
        ),
        Some(Err(changed)) => (Status::Run, changed, vec![]),
        Some(Ok(())) => (
            Status::Skip,
            format!("image `{}` is up to date", done.name),
            vec![],
        ),
    }
}

/// Volumes hold data: one that exists is done, whatever its labels say.
fn decide_volume(done: &DoneObject, found: Option<&Object>) -> Verdict {
    match found {
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
    }
}

fn decide_stamp(step: &Step, done: &DoneObject, found: Option<&Object>) -> Verdict {
    let Some(stamp) = found else {
        return (
            Status::Run,
            format!("not done yet: no stamp `{}`", done.name),
            vec![],
        );
    };
    if stamp.labels.contains_key(UNFINISHED_LABEL) {
        return (Status::Run, "the last run did not finish".into(), vec![]);
    }
    match up_to_date(step, stamp) {
        Err(changed) => (Status::Run, changed, vec![]),
        Ok(()) => (
            Status::Skip,
            format!("done and up to date: stamp `{}`", done.name),
            vec![],
        ),
    }
}

/// A container runs with the step's configuration, or is removed and created again. One of
/// another instance (or of nobody) with this name is a conflict, never removed.
fn decide_container(
    plan: &Plan,
    step: &Step,
    done: &DoneObject,
    found: Option<&Object>,
    conflicts: &mut Vec<Error>,
) -> Verdict {
    let Some(container) = found else {
        return (
            Status::Run,
            format!("container `{}` does not exist", done.name),
            vec![],
        );
    };
    if !belongs_to(container, plan) {
        conflicts.push(
            Error::new(
                Kind::Conflict,
                format!(
                    "container name `{}` is taken by {}",
                    done.name,
                    owner(container)
                ),
            )
            .note("remove or rename that container, or pick another --instance"),
        );
        return (
            Status::Run,
            format!("CONFLICT: `{}` belongs to {}", done.name, owner(container)),
            vec![],
        );
    }
    let recreated = |reason: String| {
        let remove = remove_container(head_of(step), &done.name);
        (Status::Run, reason, vec![remove])
    };
    if let Err(changed) = up_to_date(step, container) {
        recreated(format!(
            "{changed}: container `{}` is re-created",
            done.name
        ))
    } else if container.paused {
        recreated(format!(
            "container `{}` is paused, as an interrupted backup leaves it: re-created",
            done.name
        ))
    } else if !container.running {
        recreated(format!(
            "container `{}` exists but is not running: re-created",
            done.name
        ))
    } else {
        (
            Status::Skip,
            format!(
                "container `{}` is already running with the same configuration, since {}",
                done.name, container.started_at
            ),
            vec![],
        )
    }
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
    let done = step.done.as_ref().filter(|d| d.kind == DoneKind::Service)?;
    if step.create_argv.is_empty() {
        return None;
    }
    let spec = observed
        .get(&done.name)
        .filter(|o| o.kind == ObjectKind::Service && o.is_ours())
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
    if let Ok(listed) = crate::process::query(&argv) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mode::Output;
    use crate::plan::{Source, Summary};

    fn step(kind: DoneKind) -> Step {
        Step {
            id: "s".into(),
            mode: "m".into(),
            description: String::new(),
            needs: Vec::new(),
            argv: vec!["docker".into(), "run".into()],
            status: Status::Run,
            reason: String::new(),
            source: Source {
                file: "f".into(),
                layer: "builtin".into(),
                line: 1,
            },
            done: Some(DoneObject {
                kind,
                name: "obj".into(),
                fingerprint: "f1".into(),
            }),
            fingerprint: "f1".into(),
            before: Vec::new(),
            after: Vec::new(),
            interactive: false,
            output: Output::Prefixed,
            uses_images: Vec::new(),
            ready: None,
            archive: None,
            planned_before: Vec::new(),
            create_argv: Vec::new(),
            job_service: None,
            confirm: None,
            inputs: Vec::new(),
            stdin: None,
            dockerfile: None,
            writes_lock: None,
            forced: false,
            need_indexes: Vec::new(),
            raw_args: Vec::new(),
            record: record::Record::default(),
            record_masks: Vec::new(),
            invalidates: false,
            propagates: true,
        }
    }

    fn plan_of(steps: Vec<Step>) -> Plan {
        Plan {
            version: 1,
            language: "python".into(),
            variant: "minimal".into(),
            mode: "m".into(),
            instance: "default".into(),
            state: String::new(),
            modes: Vec::new(),
            steps,
            excluded_steps: Vec::new(),
            project: None,
            engine: crate::engine_kind::EngineKind::assumed("docker"),
            summary: Summary::default(),
        }
    }

    /// An object in the engine: its kind, fingerprint label, and whether it is ours, running,
    /// paused or an unfinished stamp.
    struct Seen {
        kind: ObjectKind,
        fingerprint: &'static str,
        ours: bool,
        running: bool,
        paused: bool,
        unfinished: bool,
    }

    const FRESH: Seen = Seen {
        kind: ObjectKind::Image,
        fingerprint: "f1",
        ours: true,
        running: true,
        paused: false,
        unfinished: false,
    };

    fn object(seen: &Seen) -> Object {
        let mut object = Object::of(seen.kind);
        let label = |key: &str| format!("{LABEL_PREFIX}.{key}");
        object
            .labels
            .insert(label("fingerprint"), seen.fingerprint.into());
        if seen.ours {
            for (key, value) in [("language", "python"), ("variant", "minimal")] {
                object.labels.insert(label(key), value.into());
            }
            object.labels.insert(label("instance"), "default".into());
        }
        if seen.unfinished {
            object.labels.insert(UNFINISHED_LABEL.into(), "f1".into());
        }
        object.running = seen.running;
        object.paused = seen.paused;
        object
    }

    /// (done kind, what the engine holds under its name, status, the reason contains, how many
    /// commands run before the step)
    type Row = (DoneKind, Option<Seen>, Status, &'static str, usize);

    fn check_rules(table: Vec<Row>) {
        for (kind, seen, status, reason, before) in table {
            let plan = plan_of(vec![step(kind)]);
            let mut observed = Observed::new();
            if let Some(seen) = &seen {
                observed.insert("obj".into(), object(seen));
            }
            let mut conflicts = Vec::new();
            let decision = decide(&plan, 0, &observed, &mut conflicts);
            let row = format!("{kind} with {:?}", seen.as_ref().map(|s| s.kind));
            assert_eq!(decision.0, status, "{row}: {}", decision.1);
            assert!(decision.1.contains(reason), "{row}: {}", decision.1);
            assert_eq!(decision.2.len(), before, "{row}");
            assert_eq!(conflicts.len(), usize::from(reason == "CONFLICT"), "{row}");
        }
    }

    #[test]
    fn images_volumes_and_stamps_have_their_rules() {
        use DoneKind as D;
        use ObjectKind as O;
        check_rules(vec![
            (D::Image, None, Status::Run, "image `obj` does not exist", 0),
            (D::Image, Some(FRESH), Status::Skip, "is up to date", 0),
            (
                D::Image,
                Some(Seen {
                    fingerprint: "f0",
                    ..FRESH
                }),
                Status::Run,
                "differs from the recorded f0",
                0,
            ),
            (
                D::Image,
                Some(Seen {
                    kind: O::Volume,
                    ..FRESH
                }),
                Status::Run,
                "does not exist",
                0,
            ),
            (
                D::Volume,
                None,
                Status::Run,
                "volume `obj` does not exist",
                0,
            ),
            (
                D::Volume,
                Some(Seen {
                    kind: O::Volume,
                    fingerprint: "other",
                    ..FRESH
                }),
                Status::Skip,
                "volume `obj` exists",
                0,
            ),
            (D::Stamp, None, Status::Run, "no stamp `obj`", 0),
            (
                D::Stamp,
                Some(Seen {
                    kind: O::Volume,
                    ..FRESH
                }),
                Status::Skip,
                "done and up to date",
                0,
            ),
            (
                D::Stamp,
                Some(Seen {
                    kind: O::Volume,
                    unfinished: true,
                    ..FRESH
                }),
                Status::Run,
                "the last run did not finish",
                0,
            ),
            (
                D::Stamp,
                Some(Seen {
                    kind: O::Volume,
                    fingerprint: "f0",
                    ..FRESH
                }),
                Status::Run,
                "differs",
                0,
            ),
        ]);
    }

    #[test]
    fn containers_and_services_have_their_rules() {
        use DoneKind as D;
        use ObjectKind as O;
        check_rules(vec![
            (D::Container, None, Status::Run, "does not exist", 0),
            (
                D::Container,
                Some(Seen {
                    kind: O::Container,
                    ..FRESH
                }),
                Status::Skip,
                "already running with the same configuration",
                0,
            ),
            (
                D::Container,
                Some(Seen {
                    kind: O::Container,
                    running: false,
                    ..FRESH
                }),
                Status::Run,
                "not running: re-created",
                1,
            ),
            (
                D::Container,
                Some(Seen {
                    kind: O::Container,
                    paused: true,
                    ..FRESH
                }),
                Status::Run,
                "paused",
                1,
            ),
            (
                D::Container,
                Some(Seen {
                    kind: O::Container,
                    fingerprint: "f0",
                    ..FRESH
                }),
                Status::Run,
                "is re-created",
                1,
            ),
            (
                D::Container,
                Some(Seen {
                    kind: O::Container,
                    ours: false,
                    ..FRESH
                }),
                Status::Run,
                "CONFLICT",
                0,
            ),
            (
                D::Service,
                None,
                Status::Run,
                "service `obj` does not exist",
                0,
            ),
        ]);
    }

    #[test]
    fn a_done_step_runs_again_when_a_need_invalidates_it() {
        let mut image = step(DoneKind::Image);
        image.status = Status::Run;
        image.invalidates = true;
        let mut container = step(DoneKind::Container);
        container.need_indexes = vec![0];
        let plan = plan_of(vec![image, container]);
        let mut observed = Observed::new();
        observed.insert(
            "obj".into(),
            object(&Seen {
                kind: ObjectKind::Container,
                ..FRESH
            }),
        );
        let (status, reason, before, invalidates) = decide(&plan, 1, &observed, &mut Vec::new());
        assert_eq!(status, Status::Run);
        assert_eq!(reason, "needs `s`, which runs");
        assert_eq!(before.len(), 1, "the running container is removed first");
        assert!(invalidates);
    }

    #[test]
    fn forced_and_undone_steps_always_run() {
        let mut forced = step(DoneKind::Image);
        forced.forced = true;
        let mut always = step(DoneKind::Image);
        always.done = None;
        let plan = plan_of(vec![forced, always]);
        let observed = Observed::new();
        assert!(decide(&plan, 0, &observed, &mut Vec::new())
            .1
            .contains("was requested"));
        assert!(decide(&plan, 1, &observed, &mut Vec::new())
            .1
            .contains("always runs"));
    }
}
