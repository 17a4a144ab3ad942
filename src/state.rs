//! Make-like state: which steps are done, which are stale, and why.
//!
//! The state lives in the Docker engine (fingerprint labels on images and containers, stamp
//! volumes, named volumes), so it is right for remote engines and fresh CI checkouts. It is
//! probed with one `docker inspect` of every object the plan names (split only where a huge plan
//! would exceed the argument-length limit).

use crate::error::{Error, Kind};
use crate::inspect::{self, Object, ObjectKind};
use crate::mode::DoneKind;
use crate::names::{LABEL_PREFIX, UNFINISHED_LABEL};
use crate::plan::{Assessment, DoneObject, Plan, StateSource, Status, Step, StepState, Summary};
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
    let mut targets: Vec<&String> = step.facts.removes.iter().collect();
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
    let docker = plan.docker_head.join(" ");
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

/// Probes the engine for the plan's objects (one docker call for any ordinary plan).
pub fn probe(plan: &Plan) -> anyhow::Result<Observed> {
    inspect::inspect(&plan.docker_head, &probe_names(plan))
}

/// Whether steps of a `force` mode run even when done. A run honours it; `--check init` asks
/// whether init is up to date, not whether a requested init would run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Force {
    Honoured,
    Ignored,
}

/// Decides every step's state from what was observed. A container name held by something
/// host_container did not create is a conflict: the plan says so, and executing it fails.
pub fn assess(plan: &Plan, observed: &Observed, force: Force) -> (Assessment, Vec<Error>) {
    let mut conflicts = interrupted_restores(plan, observed);
    let mut states: Vec<StepState> = Vec::with_capacity(plan.steps.len());
    for (index, step) in plan.steps.iter().enumerate() {
        let forced = step.forced && force == Force::Honoured;
        let decision = decide(plan, (index, forced), (observed, &states), &mut conflicts);
        let foreign: Vec<Error> = removal_targets(step)
            .into_iter()
            .filter_map(|name| Some((name, observed.get(name)?)))
            .filter(|(_, object)| !belongs_to(object, plan))
            .map(|(name, object)| foreign_removal(plan, step, name, object))
            .collect();
        let missing_images: Vec<String> = (step.uses_images.iter())
            .filter(|image| !observed.contains_key(*image))
            .cloned()
            .collect();
        let mut reason = decision.reason;
        if decision.status == Status::Run && !missing_images.is_empty() {
            reason.push_str(&format!(
                "; {} not present locally: docker will try to pull it",
                missing_images.join(", ")
            ));
        }
        if let Some(first) = foreign.first() {
            reason = format!("CONFLICT: {}", first.message);
        }
        conflicts.extend(foreign);
        states.push(StepState {
            update: service_update(plan, step, observed, decision.status),
            status: decision.status,
            reason,
            missing_images: if decision.status == Status::Run {
                missing_images
            } else {
                Vec::new()
            },
            removals: decision.removals,
            invalidates: decision.invalidates && step.propagates,
            forced,
        });
    }
    let summary = Summary::of(&plan.steps, &states);
    let source = StateSource::Probed;
    (
        Assessment {
            source,
            steps: states,
            summary,
        },
        conflicts,
    )
}

/// Each step's state from what is known without the engine: `source` says why it was not
/// asked (`--offline`) or did not answer.
pub fn unprobed(plan: &Plan, source: StateSource, force: Force) -> Assessment {
    let why = match source {
        StateSource::Unknown(_) => "engine not reachable",
        _ => "offline",
    };
    let states: Vec<StepState> = (plan.steps.iter())
        .map(|step| {
            let forced = step.forced && force == Force::Honoured;
            let (status, reason) = if forced {
                (Status::Run, requested(step))
            } else if let Some(done) = &step.done {
                (
                    Status::Unknown,
                    format!(
                        "{why}: whether {} `{}` is up to date is not known",
                        done.kind, done.name
                    ),
                )
            } else {
                (Status::Run, ALWAYS_RUNS.to_owned())
            };
            StepState {
                status,
                reason,
                missing_images: Vec::new(),
                removals: Vec::new(),
                update: None,
                invalidates: step.propagates,
                forced,
            }
        })
        .collect();
    let summary = Summary::of(&plan.steps, &states);
    Assessment {
        source,
        steps: states,
        summary,
    }
}

const ALWAYS_RUNS: &str = "no `done` condition: always runs";

fn requested(step: &Step) -> String {
    format!("mode `{}` was requested: runs even when done", step.mode)
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

/// What the rules decide for one step.
#[derive(Debug)]
struct Decision {
    status: Status,
    reason: String,
    /// Commands to run before the step's own: removing what it replaces.
    removals: Vec<Vec<String>>,
    /// When it runs, whether the steps that need it must run too.
    invalidates: bool,
}

/// What the rules decide for a done object: run or skip, why, and what to remove first.
#[derive(Debug)]
struct Verdict {
    status: Status,
    reason: String,
    removals: Vec<Vec<String>>,
}

impl Verdict {
    fn run(reason: String) -> Verdict {
        Verdict {
            status: Status::Run,
            reason,
            removals: Vec::new(),
        }
    }

    fn skip(reason: String) -> Verdict {
        Verdict {
            status: Status::Skip,
            reason,
            removals: Vec::new(),
        }
    }

    fn replacing(reason: String, removal: Vec<String>) -> Verdict {
        Verdict {
            status: Status::Run,
            reason,
            removals: vec![removal],
        }
    }

    fn decided(self, invalidates: bool) -> Decision {
        Decision {
            status: self.status,
            reason: self.reason,
            removals: self.removals,
            invalidates,
        }
    }
}

/// The kind of object the engine holds for a done object of `kind`.
fn probed_as(kind: DoneKind) -> ObjectKind {
    match kind {
        DoneKind::Image => ObjectKind::Image,
        DoneKind::Volume | DoneKind::Stamp => ObjectKind::Volume,
        DoneKind::Container => ObjectKind::Container,
        DoneKind::Service => ObjectKind::Service,
    }
}

/// The decision for the step at `index` (`forced`: whether it runs even when done), from what
/// the engine holds and the states of the steps before it.
fn decide(
    plan: &Plan,
    (index, forced): (usize, bool),
    (observed, earlier): (&Observed, &[StepState]),
    conflicts: &mut Vec<Error>,
) -> Decision {
    let step = &plan.steps[index];
    if forced {
        return Verdict::run(requested(step)).decided(true);
    }
    let Some(done) = &step.done else {
        return Verdict::run(ALWAYS_RUNS.into()).decided(true);
    };
    let any = observed.get(&done.name);
    let found = any.filter(|o| o.kind == probed_as(done.kind));
    let head = &plan.docker_head;
    let verdict = match done.kind {
        DoneKind::Image => crate::moved::decide(head, step, (found, observed))
            .map_or_else(|| decide_image(step, done, found), Verdict::run),
        DoneKind::Volume => decide_volume(done, found),
        DoneKind::Stamp => decide_stamp(step, done, found),
        DoneKind::Service => decide_service(step, done, found, conflicts),
        DoneKind::Container => decide_container(plan, step, done, found, conflicts),
    };
    // A step that runs only because its object is missing makes it again from unchanged
    // inputs. A new volume is empty, though, so what fills it runs again, unless the step
    // itself fills it from its inputs.
    let remade = done.kind != DoneKind::Volume || !step.inputs.is_empty();
    let missing = any.is_none() && remade;
    let invalidates = verdict.status == Status::Run && !missing;
    if verdict.status == Status::Skip {
        if let Some(verdict) = rerun_for_needs(plan, step, done, earlier) {
            return verdict.decided(true);
        }
    }
    verdict.decided(invalidates)
}

/// A done step runs again when a step it needs runs and invalidates what it made.
fn rerun_for_needs(
    plan: &Plan,
    step: &Step,
    done: &DoneObject,
    earlier: &[StepState],
) -> Option<Verdict> {
    let &need = (step.need_indexes.iter())
        .find(|&&n| earlier[n].status == Status::Run && earlier[n].invalidates)?;
    let reason = format!("needs `{}`, which runs", plan.steps[need].id);
    Some(if done.kind == DoneKind::Container {
        Verdict::replacing(reason, remove_container(plan, &done.name))
    } else {
        Verdict::run(reason)
    })
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
        None => Verdict::run(format!("image `{}` does not exist", done.name)),
        Some(Err(changed)) => Verdict::run(changed),
        Some(Ok(())) => Verdict::skip(format!("image `{}` is up to date", done.name)),
    }
}

/// Volumes hold data: one that exists is done, whatever its labels say.
fn decide_volume(done: &DoneObject, found: Option<&Object>) -> Verdict {
    match found {
        None => Verdict::run(format!("volume `{}` does not exist", done.name)),
        Some(_) => Verdict::skip(format!("volume `{}` exists", done.name)),
    }
}

fn decide_stamp(step: &Step, done: &DoneObject, found: Option<&Object>) -> Verdict {
    let Some(stamp) = found else {
        return Verdict::run(format!("not done yet: no stamp `{}`", done.name));
    };
    if stamp.labels.contains_key(UNFINISHED_LABEL) {
        return Verdict::run("the last run did not finish".into());
    }
    match up_to_date(step, stamp) {
        Err(changed) => Verdict::run(changed),
        Ok(()) => Verdict::skip(format!("done and up to date: stamp `{}`", done.name)),
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
        return Verdict::run(format!("container `{}` does not exist", done.name));
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
        return Verdict::run(format!(
            "CONFLICT: `{}` belongs to {}",
            done.name,
            owner(container)
        ));
    }
    let recreated = |reason: String| Verdict::replacing(reason, remove_container(plan, &done.name));
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
        Verdict::skip(format!(
            "container `{}` is already running with the same configuration, since {}",
            done.name, container.started_at
        ))
    }
}

/// A service step: created when missing, left alone when it runs this configuration, and
/// otherwise updated in place (it then runs a `service update`, see `service_update`).
fn decide_service(
    step: &Step,
    done: &DoneObject,
    found: Option<&Object>,
    conflicts: &mut Vec<Error>,
) -> Verdict {
    let version = |o: &Object| o.service.as_ref().map_or(0, |s| s.version);
    match found {
        None => Verdict::run(format!("service `{}` does not exist", done.name)),
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
            Verdict::run(format!(
                "CONFLICT: `{}` exists and was not created by host_container",
                done.name
            ))
        }
        Some(o) if o.fingerprint() != Some(step.fingerprint.as_str()) => Verdict::run(format!(
            "service `{}` (version {}) runs an older configuration (fingerprint {} differs \
             from the recorded {}): updated in place",
            done.name,
            version(o),
            step.fingerprint,
            o.fingerprint().unwrap_or("(none)")
        )),
        Some(o) => Verdict::skip(format!(
            "service `{}` already runs the same configuration (version {})",
            done.name,
            version(o)
        )),
    }
}

/// The `service update` a service step runs instead of its `service create` when the service
/// exists (forced when only a needed step runs, so that its tasks restart on what that step
/// rebuilt). None for other steps, and when the service is missing.
fn service_update(
    plan: &Plan,
    step: &Step,
    observed: &Observed,
    status: Status,
) -> Option<Vec<String>> {
    let done = step.done.as_ref().filter(|d| d.kind == DoneKind::Service)?;
    step.facts.service.as_ref()?;
    let object = observed
        .get(&done.name)
        .filter(|o| o.kind == ObjectKind::Service && o.is_ours())
        .filter(|_| status == Status::Run)?;
    let spec = object.service.as_ref()?;
    let same = object.fingerprint() == Some(step.fingerprint.as_str());
    let update = crate::swarm::update_args(plan.args_of(&step.argv), spec, same)?;
    let mut argv = plan.docker_head.clone();
    argv.extend(update);
    Some(argv)
}

/// `docker rm --force NAME`: how a stale or stopped container makes way for its replacement.
fn remove_container(plan: &Plan, name: &str) -> Vec<String> {
    plan.command(&["rm", "--force", name])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mode::Output;
    use crate::plan::Source;

    fn step(kind: DoneKind) -> Step {
        Step {
            id: "s".into(),
            mode: "m".into(),
            description: String::new(),
            needs: Vec::new(),
            argv: vec!["docker".into(), "run".into()],
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
            facts: Default::default(),
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
            modes: Vec::new(),
            steps,
            excluded_steps: Vec::new(),
            project: None,
            docker_head: vec!["docker".into()],
            engine: crate::engine_kind::EngineKind::assumed("docker"),
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
            let decision = decide(&plan, (0, false), (&observed, &[]), &mut conflicts);
            let row = format!("{kind} with {:?}", seen.as_ref().map(|s| s.kind));
            assert_eq!(decision.status, status, "{row}: {}", decision.reason);
            assert!(
                decision.reason.contains(reason),
                "{row}: {}",
                decision.reason
            );
            assert_eq!(decision.removals.len(), before, "{row}");
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
        let image = step(DoneKind::Image);
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
        let image_runs = unprobed(&plan, StateSource::Offline, Force::Honoured).steps[0].clone();
        let image_runs = StepState {
            status: Status::Run,
            ..image_runs
        };
        let decision = decide(
            &plan,
            (1, false),
            (&observed, &[image_runs]),
            &mut Vec::new(),
        );
        assert_eq!(decision.status, Status::Run);
        assert_eq!(decision.reason, "needs `s`, which runs");
        assert_eq!(
            decision.removals,
            [["docker", "rm", "--force", "obj"]],
            "the running container is removed first"
        );
        assert!(decision.invalidates);
    }

    #[test]
    fn forced_and_undone_steps_always_run() {
        let mut forced = step(DoneKind::Image);
        forced.forced = true;
        let mut always = step(DoneKind::Image);
        always.done = None;
        let plan = plan_of(vec![forced, always]);
        let observed = Observed::new();
        let (assessment, _) = assess(&plan, &observed, Force::Honoured);
        assert_eq!(
            assessment.steps[0].reason,
            "mode `m` was requested: runs even when done"
        );
        assert!(assessment.steps[0].forced);
        assert_eq!(assessment.steps[1].reason, ALWAYS_RUNS);
        assert_eq!(assessment.summary.to_run, 1);
        // `--check` asks whether it is up to date instead.
        let (checked, _) = assess(&plan, &observed, Force::Ignored);
        assert_eq!(checked.steps[0].reason, "image `obj` does not exist");
        assert!(!checked.steps[0].forced);
    }
}
