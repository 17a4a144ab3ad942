//! End to end `--watch`, on the real engine (the project bind-mounted) and on the isolated
//! remote engine (the project copied through the engine): a watched `single` runs again once for
//! a burst of edits and not for ignored files, a dependency file's edit runs init first, a
//! broken mode file is shown with its position and the watch goes on, `daemon --watch` restarts
//! the daemon and waits until it is ready, and Ctrl-C (SIGINT) leaves no container.
//!
//! Everything waits for lines the watcher prints ("watching …" before each edit), never for a
//! time. Without an engine these tests say loudly that they were skipped; with `CI` set they fail.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::support::engine::{self, Docker, BASE_IMAGE, INSTANCE_LABEL};
use crate::support::isolated_engine::IsolatedEngine;
use crate::support::Sandbox;

/// How long one step of a scenario may take: init builds an image the first time.
const PATIENCE: Duration = Duration::from_secs(240);

/// A running `host_container --watch` and every line it printed so far (stdout and stderr).
struct Watcher {
    child: Child,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Watcher {
    fn start(mut command: Command) -> Watcher {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("host_container starts");
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        collect(Box::new(stdout), lines.clone());
        collect(Box::new(stderr), lines.clone());
        Watcher { child, lines }
    }

    /// Waits until `count` lines contain `text`; returns every line so far.
    fn wait_for(&self, text: &str, count: usize) -> Vec<String> {
        let (lines, changed) = &*self.lines;
        let deadline = Instant::now() + PATIENCE;
        let mut held = lines.lock().expect("lines");
        loop {
            if held.iter().filter(|l| l.contains(text)).count() >= count {
                return held.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "no {count}× {text:?} within {PATIENCE:?}:\n{}",
                held.join("\n")
            );
            held = changed.wait_timeout(held, deadline - now).expect("lines").0;
        }
    }

    /// SIGINT, as Ctrl-C sends it; returns the exit code and every line.
    fn interrupt(mut self) -> (Option<i32>, Vec<String>) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let status = wait_with_deadline(&mut self.child);
        let lines = self.lines.0.lock().expect("lines").clone();
        (status, lines)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(stream: Box<dyn Read + Send>, lines: Arc<(Mutex<Vec<String>>, Condvar)>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let (held, changed) = &*lines;
            held.lock().expect("lines").push(line);
            changed.notify_all();
        }
    });
}

fn wait_with_deadline(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        assert!(
            Instant::now() < deadline,
            "still running a minute after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines after the `nth` (1-based) line containing `text`.
fn after<'a>(lines: &'a [String], text: &str, nth: usize) -> &'a [String] {
    let at = (lines.iter().enumerate())
        .filter(|(_, l)| l.contains(text))
        .nth(nth - 1)
        .map_or(lines.len(), |(i, _)| i + 1);
    &lines[at..]
}

/// Whether `line` opens a re-run (`==> watch: app.py changed`).
fn opens_a_run(line: &str) -> bool {
    line.starts_with("==> watch: ") && line.contains(" changed")
}

/// The line that opens a re-run.
fn first_change(lines: &[String]) -> &str {
    (lines.iter())
        .find(|l| opens_a_run(l))
        .map_or("", String::as_str)
}

fn count(lines: &[String], text: &str) -> usize {
    lines.iter().filter(|l| l.contains(text)).count()
}

/// A project of the smallest kind: a layer directory, a script, a file it reads and a
/// requirements file (a comment: nothing to install, so no index is needed).
fn project(sandbox: &Sandbox) -> PathBuf {
    let root = sandbox.path("project/app");
    let write = |relative: &str, text: &str| {
        let path = root.join(relative);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    };
    write(".host_container/ignore", "scratch/\n");
    write(
        "app.py",
        "print('says', open('message.txt').read().strip())\n",
    );
    write("message.txt", "one\n");
    write("requirements.txt", "# nothing yet\n");
    root
}

fn write(root: &Path, relative: &str, text: &str) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, text).expect("write");
}

/// The containers of `instance` in `docker`'s engine.
fn containers(docker: &Docker, instance: &str) -> Vec<String> {
    let filter = format!("label={INSTANCE_LABEL}={instance}");
    docker.listed(&["ps", "--all", "--format", "{{.Names}}", "--filter", &filter])
}

/// The watched `single`: every scenario but the daemon's, in one session.
fn watched_single(root: &Path, command: Command, docker: &Docker, instance: &str) {
    let watcher = Watcher::start(command);
    let lines = watcher.wait_for("==> watch: watching", 1);
    assert_eq!(count(&lines, "says one"), 1, "{}", lines.join("\n"));
    assert!(
        count(&lines, "==> watch: ok in") == 1,
        "{}",
        lines.join("\n")
    );

    // A burst of saves is one run.
    write(root, "message.txt", "two\n");
    write(
        root,
        "app.py",
        "print('now says', open('message.txt').read().strip())\n",
    );
    write(root, "src/extra.py", "\n");
    let lines = watcher.wait_for("==> watch: watching", 2);
    let run = after(&lines, "==> watch: watching", 1);
    let changed: Vec<&String> = run.iter().filter(|l| opens_a_run(l)).collect();
    assert_eq!(changed.len(), 1, "{}", run.join("\n"));
    for name in ["app.py", "message.txt", "src/extra.py"] {
        assert!(changed[0].contains(name), "{}", changed[0]);
    }
    assert_eq!(count(run, "now says two"), 1, "{}", run.join("\n"));

    // Ignored files do not run it (they would be named first); the edit after them does.
    write(root, ".git/HEAD", "ref: refs/heads/main\n");
    write(
        root,
        "scratch/notes.txt",
        "left out by .host_container/ignore\n",
    );
    write(root, ".app.py.swp", "vim\n");
    write(root, "app.py~", "a backup\n");
    write(root, "message.txt", "three\n");
    let lines = watcher.wait_for("==> watch: watching", 3);
    let run = after(&lines, "==> watch: watching", 2);
    assert!(
        first_change(run).contains("==> watch: message.txt changed"),
        "{}",
        run.join("\n")
    );
    let opened = lines.iter().filter(|l| opens_a_run(l)).count();
    assert_eq!(opened, 2, "{}", lines.join("\n"));
    assert_eq!(count(run, "now says three"), 1, "{}", run.join("\n"));

    // A dependency file: init runs again, before the job.
    write(root, "requirements.txt", "# still nothing\n");
    let lines = watcher.wait_for("==> watch: watching", 4);
    let run = after(&lines, "==> watch: watching", 3);
    assert!(
        first_change(run).contains("requirements.txt changed: init runs again"),
        "{}",
        run.join("\n")
    );
    let init = run.iter().position(|l| l.starts_with("[init."));
    let job = run.iter().position(|l| l.contains("now says three"));
    assert!(
        matches!((init, job), (Some(i), Some(j)) if i < j),
        "{}",
        run.join("\n")
    );

    broken_mode_file(root, &watcher);
    interrupted_job(root, watcher, docker, instance);
}

/// A mode file that does not compile: its position, and the watch goes on.
fn broken_mode_file(root: &Path, watcher: &Watcher) {
    let mode = ".host_container/config/host_base_single.yaml";
    write(
        root,
        mode,
        "description: broken\nsteps:\n  job:\n    docker: [run, \"{{ nope }}\"]\n",
    );
    let lines = watcher.wait_for("still watching", 1);
    let run = after(&lines, "==> watch: watching", 4);
    assert!(
        run.iter().any(|l| l.contains("host_base_single.yaml:4:")),
        "{}",
        lines.join("\n")
    );
    fs::remove_file(root.join(mode)).expect("rm");
    let lines = watcher.wait_for("==> watch: watching", 6);
    let run = after(&lines, "still watching", 1);
    assert!(
        first_change(run).contains("re-planned"),
        "{}",
        run.join("\n")
    );
    assert_eq!(count(run, "now says three"), 1, "{}", run.join("\n"));
}

/// Ctrl-C while the job runs: 130, and no container left.
fn interrupted_job(root: &Path, watcher: Watcher, docker: &Docker, instance: &str) {
    write(
        root,
        "app.py",
        "import time\nprint('sleeping', flush=True)\ntime.sleep(300)\n",
    );
    watcher.wait_for("sleeping", 1);
    let (code, lines) = watcher.interrupt();
    assert_eq!(code, Some(130), "{}", lines.join("\n"));
    assert_eq!(containers(docker, instance), Vec::<String>::new());
    write(
        root,
        "app.py",
        "print('says', open('message.txt').read().strip())\n",
    );
}

/// `daemon --watch`: started, then restarted on an edit and ready again; Ctrl-C stops watching.
fn watched_daemon(root: &Path, command: Command, docker: &Docker, instance: &str) {
    let watcher = Watcher::start(command);
    watcher.wait_for("==> watch: watching", 1);
    let names = containers(docker, instance);
    let name = (names.iter().find(|n| n.ends_with("-daemon")))
        .unwrap_or_else(|| panic!("no daemon among {names:?}"))
        .clone();
    let started =
        |docker: &Docker| docker.listed(&["inspect", "--format", "{{.State.StartedAt}}", &name]);
    let before = started(docker);
    write(root, "message.txt", "for the daemon\n");
    let lines = watcher.wait_for("==> watch: watching", 2);
    let run = after(&lines, "==> watch: watching", 1);
    assert!(
        first_change(run).starts_with("==> watch: message.txt changed: ")
            && first_change(run).ends_with("the daemon restarts"),
        "{}",
        run.join("\n")
    );
    assert!(
        count(run, "restarting, then waiting") == 1,
        "{}",
        run.join("\n")
    );
    assert!(count(run, "==> watch: ok in") == 1, "{}", run.join("\n"));
    assert_ne!(started(docker), before, "the daemon was not restarted");

    // A changed configuration (a mode file of the project's own, restart policy `no`):
    // re-created by the plan, not restarted.
    let shipped = crate::support::repo_root()
        .join("etc/docker_meta/host_container/config/host_base_daemon.yaml");
    let text = fs::read_to_string(shipped).expect("shipped daemon mode");
    assert!(text.contains("restart: unless-stopped"));
    write(
        root,
        ".host_container/config/host_base_daemon.yaml",
        &text.replace("restart: unless-stopped", "restart: \"no\""),
    );
    let lines = watcher.wait_for("==> watch: watching", 3);
    let run = after(&lines, "==> watch: watching", 2);
    // On the remote engine the project's copy (which holds .host_container/) runs again too.
    let opening = first_change(run);
    assert!(
        opening.contains("host_base_daemon.yaml changed: re-planned; ")
            && opening.contains("daemon.container")
            && opening.ends_with(" again; the daemon is re-created"),
        "{}",
        run.join("\n")
    );
    assert_eq!(
        count(run, "restarting, then waiting"),
        0,
        "{}",
        run.join("\n")
    );
    let policy = docker.listed(&[
        "inspect",
        "--format",
        "{{.HostConfig.RestartPolicy.Name}}",
        &name,
    ]);
    assert_eq!(policy, ["no"], "{}", run.join("\n"));
    let (code, lines) = watcher.interrupt();
    assert_eq!(code, Some(130), "{}", lines.join("\n"));
    assert!(
        count(&lines, "the daemon was stopped") == 1,
        "{}",
        lines.join("\n")
    );
    // Ctrl-C leaves nothing running: the daemon's container is gone.
    let left = docker.listed(&[
        "ps",
        "--all",
        "--quiet",
        "--filter",
        &format!("name=^{name}$"),
    ]);
    assert!(left.is_empty(), "{left:?}: {}", lines.join("\n"));
}

fn scenarios(root: &Path, client: &impl Fn() -> Command, docker: &Docker, instance: &str) {
    let mut single = client();
    single.args(["--watch", "python", "minimal", "single", "python", "app.py"]);
    watched_single(root, single, docker, instance);
    let mut daemon = client();
    daemon.args(["--watch", "python", "minimal", "daemon"]);
    watched_daemon(root, daemon, docker, instance);
}

/// Removes an instance's objects (and the sandbox's processes) when dropped: a failed
/// assertion must not leave them behind.
struct Cleanup<'a>(&'a Docker, String, &'a Sandbox);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        self.2.stop_processes();
        self.0.remove(&self.1);
    }
}

#[test]
fn watching_runs_again_on_the_local_engine() {
    if !engine::available() {
        return;
    }
    engine::ensure_base_image();
    let sandbox = Sandbox::new();
    let root = project(&sandbox);
    let instance = format!("e2e-watch-{}", std::process::id());
    let local = Docker::local();
    local.remove(&instance);
    let _cleanup = Cleanup(&local, instance.clone(), &sandbox);
    let client = || {
        let mut command = sandbox.command();
        command
            .current_dir(&root)
            .env("HOST_CONTAINER_BASE_IMAGE", BASE_IMAGE)
            .args(["-x", &instance]);
        command
    };
    scenarios(&root, &client, &local, &instance);
    polled(&root, client);
    refused(client);
    exec_writing_its_own_files(&root, client);
}

/// `exec --watch` of a command that writes into the watched directory: once it is seen to
/// write the same file again, that file no longer runs it again, and a real save runs it once.
fn exec_writing_its_own_files(root: &Path, client: impl Fn() -> Command) {
    write(
        root,
        "writer.py",
        "print('sees', open('message.txt').read().strip())\nopen('out.txt', 'w').write('x')\n",
    );
    let mut command = client();
    command.args([
        "--watch",
        "python",
        "minimal",
        "exec",
        "python",
        "writer.py",
    ]);
    let watcher = Watcher::start(command);
    watcher.wait_for("changed again while it ran: the job writes it", 1);
    watcher.wait_for("==> watch: watching", 1);
    write(root, "message.txt", "exec\n");
    let lines = watcher.wait_for("==> watch: watching", 2);
    let run = after(&lines, "==> watch: watching", 1);
    let opened: Vec<&String> = run.iter().filter(|l| opens_a_run(l)).collect();
    assert_eq!(opened.len(), 1, "{}", lines.join("\n"));
    assert!(
        opened[0].contains("message.txt changed"),
        "{}",
        lines.join("\n")
    );
    assert_eq!(count(run, "sees exec"), 1, "{}", lines.join("\n"));
    let (code, _) = watcher.interrupt();
    assert_eq!(code, Some(130));
}

/// Where the file system gives no events: polling, as HOST_CONTAINER_WATCH_POLL asks.
fn polled(root: &Path, client: impl Fn() -> Command) {
    let mut command = client();
    command
        .env("HOST_CONTAINER_WATCH_POLL", "0.2")
        .args(["--watch", "python", "minimal", "single", "python", "app.py"]);
    let watcher = Watcher::start(command);
    let lines = watcher.wait_for("==> watch: watching", 1);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("watching") && l.contains("(polling;")),
        "{}",
        lines.join("\n")
    );
    write(root, "message.txt", "polled\n");
    let lines = watcher.wait_for("says polled", 1);
    assert!(
        first_change(&lines).contains("message.txt changed"),
        "{}",
        lines.join("\n")
    );
    let (code, _) = watcher.interrupt();
    assert_eq!(code, Some(130));
}

/// Modes that are not repeated, and a poll interval that is no number, are usage errors.
fn refused(client: impl Fn() -> Command) {
    let bash = client()
        .args(["--watch", "python", "minimal", "bash"])
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(bash.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bash.stderr).contains("`bash` is not one to repeat"));
    let poll = client()
        .env("HOST_CONTAINER_WATCH_POLL", "soon")
        .args(["--watch", "python", "minimal", "single"])
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(poll.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&poll.stderr).contains("HOST_CONTAINER_WATCH_POLL=soon"));
}

#[test]
fn watching_runs_again_on_an_engine_that_cannot_see_our_files() {
    let Some(engine) = IsolatedEngine::start("remote-engine", None) else {
        return;
    };
    let sandbox = Sandbox::new();
    let root = project(&sandbox);
    let instance = format!("e2e-watch-remote-{}", std::process::id());
    engine.docker.remove(&instance);
    let _cleanup = Cleanup(&engine.docker, instance.clone(), &sandbox);
    let client = || {
        let mut command = engine.client(&sandbox, &instance);
        command.current_dir(&root);
        command
    };
    scenarios(&root, &client, &engine.docker, &instance);
}
