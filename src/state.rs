//! Make-like state: which steps are done, which are stale, and why.
//!
//! The state lives in the Docker engine (fingerprint labels on images and containers, stamp
//! volumes, named volumes), so it is right for remote engines and fresh CI checkouts. It is
//! probed with one `docker inspect` of every object the plan names (split only where a huge plan
//! would exceed the argument-length limit).

use crate::docker::{self, Object};
use crate::error::{Error, Kind};
use crate::plan::{docker_head_len, Plan, Status};

pub use crate::docker::Observed;

/// The names the plan's state depends on, each once, in plan order.
pub fn probe_names(plan: &Plan) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut names: Vec<String> = Vec::new();
    for step in &plan.steps {
        let candidates = step
            .done
            .iter()
            .map(|d| &d.name)
            .chain(step.uses_images.iter());
        for name in candidates {
            if seen.insert(name.as_str()) {
                names.push(name.clone());
            }
        }
    }
    names
}

/// Probes the engine for the plan's objects (one docker call for any ordinary plan).
pub fn probe(plan: &Plan) -> anyhow::Result<Observed> {
    let head = plan
        .steps
        .first()
        .map(|s| s.argv[..docker_head_len(&s.argv)].to_vec())
        .unwrap_or_else(|| vec!["docker".into()]);
    docker::inspect(&head, &probe_names(plan))
}

/// Decides every step's status from what was observed. A container name held by something
/// host_container did not create is a conflict: the plan says so, and executing it fails.
pub fn apply(plan: &mut Plan, observed: &Observed) -> Vec<Error> {
    plan.state = "probed".into();
    let mut conflicts = Vec::new();
    for index in 0..plan.steps.len() {
        let (status, reason, before) = decide(plan, index, observed, &mut conflicts);
        let step = &mut plan.steps[index];
        step.status = status;
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
    }
    plan.summary = crate::plan::Summary::of(&plan.steps);
    conflicts
}

fn decide(
    plan: &Plan,
    index: usize,
    observed: &Observed,
    conflicts: &mut Vec<Error>,
) -> (Status, String, Vec<Vec<String>>) {
    let step = &plan.steps[index];
    if step.forced {
        return (
            Status::Run,
            format!("mode `{}` was requested: runs even when done", step.mode),
            Vec::new(),
        );
    }
    let Some(done) = &step.done else {
        return (
            Status::Run,
            "no `done` condition: always runs".into(),
            Vec::new(),
        );
    };
    let found = observed.get(&done.name);
    let kind_matches = |kind: &str| found.filter(|o| o.kind == kind);
    let fingerprint_note = |object: &Object| {
        format!(
            "fingerprint {} differs from the recorded {}",
            step.fingerprint,
            object.fingerprint().unwrap_or("(none)")
        )
    };
    let head = step.argv[..docker_head_len(&step.argv)].to_vec();
    let (mut status, mut reason, mut before) = match done.kind.as_str() {
        "image" => match kind_matches("image") {
            None => (
                Status::Run,
                format!("image `{}` does not exist", done.name),
                vec![],
            ),
            Some(o) if o.fingerprint() != Some(step.fingerprint.as_str()) => (
                Status::Run,
                format!("image `{}` is stale: {}", done.name, fingerprint_note(o)),
                vec![],
            ),
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
                format!("not done yet (no stamp `{}`)", done.name),
                vec![],
            ),
            Some(o) if o.fingerprint() != Some(step.fingerprint.as_str()) => (
                Status::Run,
                format!(
                    "inputs or a needed step changed since it was done: {}",
                    fingerprint_note(o)
                ),
                vec![],
            ),
            Some(_) => (
                Status::Skip,
                format!("done and up to date (stamp `{}`)", done.name),
                vec![],
            ),
        },
        _ => match kind_matches("container") {
            None => (
                Status::Run,
                format!("container `{}` does not exist", done.name),
                vec![],
            ),
            Some(o) if !o.is_ours() => {
                conflicts.push(
                    Error::new(
                        Kind::Conflict,
                        format!(
                            "container name `{}` is taken by a container host_container did not create",
                            done.name
                        ),
                    )
                    .note("remove or rename that container, or pick another --instance"),
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
            Some(o) => {
                let remove = remove_container(&head, &done.name);
                if o.fingerprint() != Some(step.fingerprint.as_str()) {
                    (
                        Status::Run,
                        format!(
                            "container `{}` runs an older configuration ({}): re-created",
                            done.name,
                            fingerprint_note(o)
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
                            "container `{}` is already running with the same configuration (since {})",
                            done.name, o.started_at
                        ),
                        vec![],
                    )
                }
            }
        },
    };
    if status == Status::Skip {
        if let Some(&need) = step
            .need_indexes
            .iter()
            .find(|&&n| plan.steps[n].status == Status::Run)
        {
            status = Status::Run;
            reason = format!("runs because `{}` runs", plan.steps[need].id);
            if done.kind == "container" {
                before = vec![remove_container(&head, &done.name)];
            }
        }
    }
    (status, reason, before)
}

/// `docker rm --force NAME`: how a stale or stopped container makes way for its replacement.
fn remove_container(head: &[String], name: &str) -> Vec<String> {
    let mut argv = head.to_vec();
    argv.extend(["rm", "--force", name].map(String::from));
    argv
}
