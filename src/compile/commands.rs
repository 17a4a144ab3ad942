//! What a finished step runs besides its own docker command: labels inserted into what it
//! creates (so the instance's objects are found and their fingerprints read; a build's in its
//! Dockerfile, see `dockerfile`), the stamp volume
//! replaced around it, a job service's logs and removal, and the prune after an image rebuild.
//! All of it is in the plan, so the printed plan stays the executed one.

use super::dockerfile::{self, FileArgEdit};
use crate::cli::Invocation;
use crate::mode::{DoneKind, Output};
use crate::names::{instance_labels, LABEL_PREFIX, UNFINISHED_LABEL};
use crate::plan::Step;

/// How many of a step's labels are the instance's and its mode's. (The step's label marks the
/// commands of the step itself; the stamp's name says which step it belongs to.)
const INSTANCE_AND_MODE_LABELS: usize = 4;

/// The instance's labels, as pairs and as `--label=KEY=VALUE` arguments, made once per plan:
/// formatting them again for each of 10,000 steps showed in profiles.
pub(super) struct InstanceLabels {
    pairs: Vec<(String, String)>,
    args: Vec<String>,
}

impl InstanceLabels {
    pub fn of(invocation: &Invocation) -> InstanceLabels {
        let pairs = instance_labels(invocation);
        let args = label_args(&pairs);
        InstanceLabels { pairs, args }
    }
}

/// Labels what the fingerprinted step creates, adds the commands around it, and records what
/// its command names (`head`: how many words of each argv are the docker head).
pub(super) fn add(step: &mut Step, instance: &InstanceLabels, head: usize) {
    let kind = step.done.as_ref().map(|d| d.kind);
    // The step's own labels; the instance's come first wherever labels are written.
    let mut labels = vec![
        (format!("{LABEL_PREFIX}.mode"), step.mode.clone()),
        (format!("{LABEL_PREFIX}.step"), step.id.clone()),
    ];
    if kind.is_some() {
        labels.push((
            format!("{LABEL_PREFIX}.fingerprint"),
            step.fingerprint.clone(),
        ));
    }
    if kind.is_some_and(|kind| kind != DoneKind::Volume) {
        labels.push((format!("{LABEL_PREFIX}.record"), step.record.to_label()));
    }
    let service = crate::swarm::is_service_create(&step.argv[head..]);
    insert_labels(step, instance, &labels, (head, service));
    label_commits(step, instance, &labels, head);
    let stamp_record = (kind == Some(DoneKind::Stamp))
        .then(|| add_stamp(step, [instance.pairs.clone(), labels].concat(), head))
        .flatten();
    let job = crate::swarm::job_name(&step.argv[head..]).or_else(|| {
        kind.is_none()
            .then(|| crate::swarm::run_once_name(&step.argv[head..]))
            .flatten()
    });
    step.facts = super::facts::of(&step.argv[head..]);
    step.facts.job_service = job.clone();
    step.facts.stamp_record = stamp_record;
    if let Some(job) = job {
        // A finished job service is shown, then removed; the executor waits for it in between.
        let docker: Vec<String> = step.argv[..head].to_vec();
        let mut logs = docker.clone();
        logs.extend(["service", "logs", "--raw"].map(String::from));
        logs.push(job.clone());
        let mut remove = docker;
        remove.extend(["service", "rm"].map(String::from));
        remove.push(job);
        step.after.extend([logs, remove]);
    }
    if kind == Some(DoneKind::Image) {
        // A rebuild leaves the image it replaced untagged; prune removes it unless a container
        // still uses it (then `purge` does, later).
        let mut prune: Vec<String> = step.argv[..head].to_vec();
        prune.extend(["image", "prune", "--force"].map(String::from));
        prune.extend(
            (instance.pairs.iter()).map(|(key, value)| format!("--filter=label={key}={value}")),
        );
        step.after.push(prune);
    }
}

/// Inserts the instance's labels and then the step's own right after the subcommand, when the
/// argv creates an object; a service's tasks' containers carry them too, so they are found like
/// any other.
fn insert_labels(
    step: &mut Step,
    instance: &InstanceLabels,
    own: &[(String, String)],
    (head, service): (usize, bool),
) {
    let Some(len) = creating_subcommand(&step.argv[head..]) else {
        return;
    };
    let at = head + len;
    let mut inserted = instance.args.clone();
    inserted.extend(label_args(own));
    if service {
        inserted.extend(
            (instance.pairs.iter().chain(own))
                .map(|(key, value)| format!("--container-label={key}={value}")),
        );
    }
    let is_build = matches!(
        &step.argv[head..at],
        [build] | [_, build] if build == "build"
    );
    // A build's labels go into its Dockerfile when they can: as options, the legacy builder
    // makes each a build step (see `dockerfile`). Its stdin must be free for the Dockerfile.
    if is_build && step.stdin.is_none() && !step.interactive && step.output != Output::Raw {
        let labels: Vec<(String, String)> = (instance.pairs.iter().chain(own)).cloned().collect();
        if let Some((file, edit)) = dockerfile::generate(&step.argv[at..], &labels) {
            step.dockerfile = Some(Box::new(file));
            match edit {
                FileArgEdit::Replace(index, arg) => step.argv[at + index] = arg,
                FileArgEdit::Insert(arg) => splice(step, at, vec![arg]),
            }
            return;
        }
    }
    splice(step, at, inserted);
}

/// A `then` command that commits a container makes an image: it gets the labels as a
/// `--change=LABEL …`, so that its fingerprint is read like a build's and `purge` finds it.
fn label_commits(
    step: &mut Step,
    instance: &InstanceLabels,
    own: &[(String, String)],
    head: usize,
) {
    let labels: Vec<(String, String)> = (instance.pairs.iter().chain(own)).cloned().collect();
    let Some(change) = dockerfile::label_instruction(&labels) else {
        return;
    };
    for command in &mut step.after {
        let len = match (command.get(head).map(String::as_str), command.get(head + 1)) {
            (Some("commit"), _) => 1,
            (Some("container"), Some(second)) if second == "commit" => 2,
            _ => continue,
        };
        command.insert(head + len, format!("--change={change}"));
    }
}

/// Inserts `inserted` into the argv at `at`, keeping the positions of raw arguments.
fn splice(step: &mut Step, at: usize, inserted: Vec<String>) {
    for (index, _) in &mut step.raw_args {
        if *index >= at {
            *index += inserted.len();
        }
    }
    // The argv is final now: no room for more.
    step.argv.reserve_exact(inserted.len());
    step.argv.splice(at..at, inserted);
}

/// A stamp that says "done" must never outlive a re-run that fails or is killed: before the
/// step runs, its stamp is replaced by one that says the run has not finished; after it, by one
/// with the step's labels. Returns where in `after` that last `volume create` is.
fn add_stamp(step: &mut Step, mut labels: Vec<(String, String)>, head: usize) -> Option<usize> {
    let name = step.done.as_ref().map(|d| d.name.clone())?;
    let docker: Vec<String> = step.argv[..head].to_vec();
    let mut remove = docker.clone();
    remove.extend(["volume", "rm", "--force"].map(String::from));
    remove.push(name.clone());
    let create = |labels: &[(String, String)]| {
        let mut create = docker.clone();
        create.extend(["volume", "create"].map(String::from));
        create.extend(label_args(labels));
        create.push(name.clone());
        create
    };
    let mut unfinished = labels[..INSTANCE_AND_MODE_LABELS].to_vec();
    unfinished.push((format!("{LABEL_PREFIX}.stamp"), "1".into()));
    unfinished.push((UNFINISHED_LABEL.to_owned(), step.fingerprint.clone()));
    step.before.extend([remove.clone(), create(&unfinished)]);
    labels.push((format!("{LABEL_PREFIX}.stamp"), "1".into()));
    step.after.extend([remove, create(&labels)]);
    Some(step.after.len() - 1)
}

/// How many leading elements of an argv (after the docker head) name a subcommand that creates
/// an object, so labels can be inserted right after it.
fn creating_subcommand(args: &[String]) -> Option<usize> {
    let first = args.first().map(String::as_str);
    let second = args.get(1).map(String::as_str);
    match (first, second) {
        (Some("build" | "run" | "create"), _) => Some(1),
        (Some("image"), Some("build"))
        | (Some("container"), Some("run" | "create"))
        | (Some("volume" | "network" | "service"), Some("create")) => Some(2),
        _ => None,
    }
}

fn label_args(labels: &[(String, String)]) -> Vec<String> {
    labels
        .iter()
        .map(|(key, value)| crate::docker::label_arg(key, value))
        .collect()
}
