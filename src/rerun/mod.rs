//! `--watch`: run, then run again whenever a file the plan depends on changes. Watching is make,
//! continuously: a change re-discovers the layers and compiles the plan again, and the executor
//! runs what `--check` would say is stale (init when a dependency file changed, the project's
//! copy when a project file did), then the job. A daemon that is up to date is restarted and
//! waited for; one whose configuration changed is re-created by the plan itself.
//!
//! Not to be confused with `exec::watch`, which watches a step's *output* (JUnit markers, TLS
//! signs): this module watches the client's *files*. `files` says which files and what changed,
//! `events` when to look (and Ctrl-C); this file is the loop and what it says.

mod events;
mod files;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::{Arguments, Invocation};
use crate::config::Layers;
use crate::console::announce;
use crate::error::{exit_code_of, fail, Error, Kind};
use crate::exec::{self, Options};
use crate::mode::DoneKind;
use crate::outcome::Run;
use crate::plan::{Plan, Status, Step};
use events::Events;
use files::Watched;

/// Shipped modes that make no sense again and again: interactive, one-off or destructive.
const NOT_WATCHED: &[&str] = &[
    "bash", "init", "upgrade", "backup", "restore", "purge", "stop", "status", "logs",
];

/// What a watched session keeps between runs.
struct Session<'a> {
    args: &'a Arguments,
    invocation: &'a Invocation,
    options: &'a Options,
    events: Events,
    layers: Layers,
    watched: Watched,
    /// The fingerprints of the last plan's steps with a `done`, by step id.
    fingerprints: BTreeMap<String, String>,
    /// The files that changed while the previous run ran and so started this one.
    triggered_by: Vec<PathBuf>,
    /// Files the job was seen to write itself: changes of them during a run are its own.
    job_writes: Vec<PathBuf>,
    /// The plan starts a daemon: the command that removes it when the session ends, so that
    /// Ctrl-C leaves nothing running, as `compose up --watch` does.
    daemon: Option<Vec<String>>,
    /// The files as the last plan saw them.
    baseline: files::Snapshot,
}

/// Runs `plan`, then again after every change, until Ctrl-C or SIGTERM (exit 130).
pub fn watch(
    args: &Arguments,
    layers: &Layers,
    invocation: &Invocation,
    plan: Plan,
    options: &Options,
) -> anyhow::Result<u8> {
    if NOT_WATCHED.contains(&invocation.mode.as_str()) {
        return fail(
            Kind::Usage,
            format!(
                "--watch runs a mode again and again; `{}` is not one to repeat (watch single, \
                 test, exec, daemon or a mode of your own)",
                invocation.mode
            ),
        );
    }
    let events = Events::start(poll_interval(invocation)?)?;
    let mut session = Session {
        args,
        invocation,
        options,
        events,
        layers: layers.clone(),
        watched: Watched::of(&plan, layers, own_paths(args, invocation)),
        fingerprints: fingerprints(&plan),
        triggered_by: Vec::new(),
        job_writes: Vec::new(),
        daemon: daemon_step(&plan).and_then(|step| removal(&plan.docker_head, step)),
        baseline: files::Snapshot::new(),
    };
    session.baseline = session.watched.snapshot();
    let mut next = Some((plan, false));
    loop {
        let mut during = Vec::new();
        if let Some((plan, restart)) = next.take() {
            during = session.run(plan, restart)?;
        }
        next = session.next_plan(during)?;
    }
}

impl Session<'_> {
    /// Runs one plan and says how it ended; returns what changed while it ran (unless the job
    /// itself keeps changing it). An interruption ends the session (its error is the 130).
    fn run(&mut self, plan: Plan, restart: bool) -> anyhow::Result<Vec<PathBuf>> {
        // What the plan was compiled from: a save since then is a change during the run.
        let before = std::mem::take(&mut self.baseline);
        let started = Instant::now();
        let (result, ran) = match exec::execute(plan, self.invocation, self.options) {
            Ok(run) if run.interrupted_by.is_some() => {
                self.stop_daemon();
                return exec::conclude(&run).map(|_| vec![]);
            }
            Ok(run) => (exec::conclude(&run), Some(run)),
            // The engine refused or could not be asked: said, and the watch goes on.
            Err(e) => (Err(e), None),
        };
        let mut result = result;
        if let (Some(path), Some(run)) = (&self.args.junit, &ran) {
            if let Err(e) = crate::junit::write(path, run) {
                crate::error::report(&e);
            }
        }
        let daemon = ran.as_ref().and_then(|run| {
            let step = daemon_step(&run.plan)?;
            let index = run.plan.steps.iter().position(|s| s.id == step.id)?;
            let skipped = run.assessment.steps[index].status == Status::Skip;
            skipped.then_some((run.plan.docker_head.as_slice(), step))
        });
        if restart && matches!(result, Ok(0)) {
            if let Some((head, step)) = daemon {
                result = self.restart(head, step).map(|()| 0);
            }
        }
        let took = started.elapsed();
        let ended = match result {
            Err(e) if exit_code_of(&e) == Kind::Interrupted.exit_code() => {
                self.stop_daemon();
                return Err(e);
            }
            Ok(0) => "ok".to_owned(),
            Ok(code) => format!("exit {code}"),
            Err(e) => {
                crate::error::report(&e);
                format!("failed (exit {})", exit_code_of(&e))
            }
        };
        announce("watch", &format!("{ended} in {}", seconds(took)));
        Ok(self.changed_during(&before, ran.as_ref()))
    }

    /// What changed while a run ran (from `before`), and is not the job's own doing.
    fn changed_during(&mut self, before: &files::Snapshot, ran: Option<&Run>) -> Vec<PathBuf> {
        self.baseline = self.watched.snapshot();
        let mut during = files::changed(before, &self.baseline);
        during.retain(|p| !self.job_writes.contains(p));
        let writes = ran.is_none_or(|run| writes_watched_files(&run.plan, &self.watched));
        let again = std::mem::take(&mut self.triggered_by);
        let repeated: Vec<PathBuf> = (during.iter())
            .filter(|p| again.contains(p))
            .cloned()
            .collect();
        if during.is_empty() || !writes || repeated.is_empty() {
            // A save while it ran runs it again (the job may have written the files itself
            // where it sees them: the run they start tells, see below).
            self.triggered_by.clone_from(&during);
            return during;
        }
        // The same files changed again during a run they started, in a tree a step mounts: the
        // job writes them itself, and running again would run for ever. From now on they are
        // no reason to run again when they change during a run.
        announce(
            "watch",
            &format!(
                "{} changed again while it ran: the job writes it, so from now on that is no \
                 reason to run again (in a project, .host_container/ignore leaves it out)",
                self.names(&repeated)
            ),
        );
        self.job_writes.extend(repeated);
        Vec::new()
    }

    /// Waits for a change (or takes the one `during` a run) and compiles the plan again; a
    /// plan that does not compile is shown and the wait goes on.
    fn next_plan(&mut self, during: Vec<PathBuf>) -> anyhow::Result<Option<(Plan, bool)>> {
        let changed = if during.is_empty() {
            self.wait()?
        } else {
            during
        };
        let compiled = crate::config::layers_of(&self.args.config_dirs, !self.args.no_project)
            .and_then(|layers| {
                let plan = crate::compile::compile(
                    self.invocation,
                    &layers,
                    self.args.context.as_deref(),
                )?;
                Ok((layers, plan))
            });
        let (layers, plan) = match compiled {
            Ok(compiled) => compiled,
            Err(e) => {
                announce("watch", &format!("{} changed", self.names(&changed)));
                crate::error::report(&e);
                announce(
                    "watch",
                    "the plan does not compile (above); fix it and save, still watching",
                );
                return Ok(None);
            }
        };
        let (line, restart) = self.what_runs(&changed, &plan);
        announce("watch", &line);
        self.layers = layers;
        self.fingerprints = fingerprints(&plan);
        let watched = Watched::of(&plan, &self.layers, own_paths(self.args, self.invocation));
        let paths = |w: &Watched| w.roots.iter().map(|r| r.path.clone()).collect::<Vec<_>>();
        if paths(&watched) != paths(&self.watched) {
            // Other places now: their files are not changes of this run.
            self.baseline = watched.snapshot();
        }
        self.watched = watched;
        Ok(Some((plan, restart)))
    }

    /// Waits until a file that counts differs from the baseline (what the last plan was
    /// compiled from, or the last run left), which becomes the new one; Ctrl-C ends the session
    /// with 130. Looked at first, so that a save while the plan compiled is not lost.
    fn wait(&mut self) -> anyhow::Result<Vec<PathBuf>> {
        self.events.follow(&self.watched)?;
        let mut now = self.watched.snapshot();
        announce(
            "watch",
            &format!(
                "watching {} for changes ({}; Ctrl-C stops)",
                self.watched.describe(&now),
                self.events.how()
            ),
        );
        if let Some(signal) = self.events.drain() {
            return self.stopped(signal);
        }
        loop {
            let changed = files::changed(&self.baseline, &now);
            if !changed.is_empty() {
                self.baseline = now;
                return Ok(changed);
            }
            if let Err(signal) = self.events.wait(&self.watched) {
                return self.stopped(signal);
            }
            now = self.watched.snapshot();
        }
    }

    /// The line that opens a re-run (`src/app.py changed: init runs again`), and whether the
    /// daemon, up to date, is to be restarted.
    fn what_runs(&self, changed: &[PathBuf], plan: &Plan) -> (String, bool) {
        let mut line = format!("{} changed", self.names(changed));
        let mut again: Vec<String> = Vec::new();
        let mut re_created = false;
        let stale: Vec<&Step> = (plan.steps.iter())
            .filter(|s| s.done.is_some())
            .filter(|s| self.fingerprints.get(&s.id) != Some(&s.fingerprint))
            .collect();
        for step in &stale {
            // A prerequisite mode runs again as a whole when a step that makes others stale
            // does; a copy alone (`propagates: false`) is named by itself.
            let whole = step.mode != plan.mode
                && (stale.iter()).any(|s| s.mode == step.mode && s.propagates);
            let what = if whole {
                step.mode.clone()
            } else {
                step.id.clone()
            };
            re_created |= daemon_step(plan).is_some_and(|d| d.id == step.id);
            if !again.contains(&what) {
                again.push(what);
            }
        }
        let replanned = changed.iter().any(|p| is_mode_file(p));
        let daemon = daemon_step(plan).is_some();
        let mut parts = Vec::new();
        if replanned {
            parts.push("re-planned".to_owned());
        }
        if !again.is_empty() {
            parts.push(format!("{} {} again", again.join(", "), verb(again.len())));
        }
        if daemon {
            parts.push(if re_created {
                "the daemon is re-created".to_owned()
            } else {
                "the daemon restarts".to_owned()
            });
        }
        if !parts.is_empty() {
            line = format!("{line}: {}", parts.join("; "));
        }
        (line, daemon && !re_created)
    }

    /// `docker restart` (a service: `service update --force`) of a daemon that is up to date,
    /// then its readiness check; Ctrl-C meanwhile ends the session at once.
    fn restart(&self, head: &[String], step: &Step) -> anyhow::Result<()> {
        let Some(done) = &step.done else {
            return Ok(());
        };
        let mut argv = head.to_vec();
        if done.kind == DoneKind::Service {
            argv.extend(["service", "update", "--force", "--detach"].map(String::from));
        } else {
            argv.push("restart".to_owned());
        }
        argv.push(done.name.clone());
        announce(&step.id, "restarting, then waiting until it is ready");
        let (send, answer) = std::sync::mpsc::channel();
        let step = step.clone();
        let head = head.to_vec();
        std::thread::spawn(move || {
            let result = crate::process::capture(&argv).map(|_| ()).and_then(|()| {
                let Some(ready) = &step.ready else {
                    return Ok(());
                };
                exec::ready::wait(&head, &step, ready).map_err(|failure| {
                    anyhow::Error::from(Error::new(failure.kind, failure.message))
                })
            });
            let _ = send.send(result);
        });
        loop {
            if let Ok(result) = answer.recv_timeout(Duration::from_millis(50)) {
                return result;
            }
            if let Some(signal) = self.events.drain() {
                return self.stopped(signal);
            }
        }
    }

    /// Ctrl-C or SIGTERM while waiting: the end of the session (130). Nothing runs then but a
    /// daemon, which is removed.
    fn stopped<T>(&self, signal: i32) -> anyhow::Result<T> {
        let name = if signal == libc::SIGTERM {
            "SIGTERM"
        } else {
            "SIGINT"
        };
        let mut error = Error::new(
            Kind::Interrupted,
            format!("interrupted by {name}: stopped watching"),
        );
        if self.stop_daemon() {
            error = error.note("the daemon was stopped: --watch leaves nothing running");
        }
        Err(error.into())
    }

    /// Removes the daemon the session started, if any; whether there was one to remove.
    fn stop_daemon(&self) -> bool {
        let Some(remove) = &self.daemon else {
            return false;
        };
        if let Err(e) = crate::process::capture(remove) {
            crate::error::report(&e);
        }
        true
    }

    /// Up to three changed paths, shown relative to the current directory where they are in it.
    fn names(&self, changed: &[PathBuf]) -> String {
        let cwd = Path::new(&self.invocation.cwd);
        // A new directory is named only when nothing in it is (an empty one).
        let files: Vec<&PathBuf> = (changed.iter())
            .filter(|p| {
                !changed
                    .iter()
                    .any(|other| other != *p && other.starts_with(p))
            })
            .collect();
        let shown: Vec<String> = (files.iter().take(3))
            .map(|p| {
                let p = p.strip_prefix(cwd).unwrap_or(p);
                crate::text::visible_lines(&p.display().to_string()).into_owned()
            })
            .collect();
        match files.len() {
            0..=3 => shown.join(", "),
            n => format!("{} and {} more", shown.join(", "), n - 3),
        }
    }
}

/// The command that removes the daemon `step` starts: `rm --force` of its container, or
/// `service rm` of its service.
fn removal(head: &[String], step: &Step) -> Option<Vec<String>> {
    let done = step.done.as_ref()?;
    let mut argv = head.to_vec();
    match done.kind {
        DoneKind::Service => argv.extend(["service", "rm"].map(String::from)),
        _ => argv.extend(["rm", "--force"].map(String::from)),
    }
    argv.push(done.name.clone());
    Some(argv)
}

/// The requested mode's step that starts a daemon: a `done` container or service with a
/// readiness check.
fn daemon_step(plan: &Plan) -> Option<&Step> {
    plan.steps.iter().find(|s| {
        s.mode == plan.mode
            && s.ready.is_some()
            && s.done
                .as_ref()
                .is_some_and(|d| matches!(d.kind, DoneKind::Container | DoneKind::Service))
    })
}

fn verb(count: usize) -> &'static str {
    if count == 1 {
        "runs"
    } else {
        "run"
    }
}

fn is_mode_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    (name.starts_with("host_base_") && name.ends_with(".yaml")) || name == "language.yaml"
}

/// Whether a step bind-mounts a watched client path: then the job may write the files itself.
fn writes_watched_files(plan: &Plan, watched: &Watched) -> bool {
    plan.steps.iter().any(|step| {
        (step.facts.client_paths.iter()).any(|source| {
            let source = Path::new(source);
            (watched.roots.iter())
                .any(|root| source.starts_with(&root.path) || root.path.starts_with(source))
        })
    })
}

fn fingerprints(plan: &Plan) -> BTreeMap<String, String> {
    (plan.steps.iter())
        .filter(|s| s.done.is_some())
        .map(|s| (s.id.clone(), s.fingerprint.clone()))
        .collect()
}

/// What host_container writes during a run: never a change.
fn own_paths(args: &Arguments, invocation: &Invocation) -> Vec<PathBuf> {
    let cwd = Path::new(&invocation.cwd);
    let mut own = vec![cwd.join(&invocation.backup_dir)];
    own.extend(args.junit.as_ref().map(|path| cwd.join(path)));
    own
}

/// `HOST_CONTAINER_WATCH_POLL=SECONDS`: poll instead of file events.
fn poll_interval(invocation: &Invocation) -> anyhow::Result<Option<Duration>> {
    let Some(text) = invocation.env.get("HOST_CONTAINER_WATCH_POLL") else {
        return Ok(None);
    };
    match text.trim().parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= 3600.0 => {
            Ok(Some(Duration::from_secs_f64(seconds)))
        }
        _ => fail(
            Kind::Usage,
            format!(
                "HOST_CONTAINER_WATCH_POLL={text}: expected the seconds between two polls \
                 (more than 0, at most 3600)"
            ),
        ),
    }
}

fn seconds(took: Duration) -> String {
    format!("{:.1} s", took.as_secs_f64())
}
