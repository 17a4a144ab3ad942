//! End to end against an engine that cannot see any file of this machine: the project's
//! `shared/tools/remote-engine` starts a second dockerd in its own mount and network namespaces,
//! chrooted into a Debian root file system, and prints the `DOCKER_HOST` to reach it. Every mode
//! but `exec` must work there unchanged; `exec` must refuse before running anything; four
//! clients with their own HOME, TMPDIR and cache must initialize a fresh instance once.
//!
//! One test runs every scenario in turn, so the engine is started once and stopped at the end.
//! Without the tool or the host engine it says loudly that it was skipped; with `CI` set it fails.

use std::process::Command;

use crate::support::engine::INSTANCE_LABEL;
use crate::support::isolated_engine::IsolatedEngine;
use crate::support::{
    self, expect_code, ran, run_at_once, run_with_stdin, stderr, stdout, Run, Sandbox,
};

/// The isolated engine and the instances a test makes in it, removed when it starts (what a
/// crashed run left) and again before the engine stops.
struct RemoteEngine {
    engine: IsolatedEngine,
    instances: Vec<String>,
}

impl RemoteEngine {
    fn start(instances: Vec<String>) -> Option<RemoteEngine> {
        // The tool's default state directory: no other test turns this engine into a swarm.
        let engine = IsolatedEngine::start("remote-engine", None)?;
        for instance in &instances {
            engine.docker.remove(instance);
        }
        Some(RemoteEngine { engine, instances })
    }
}

impl Drop for RemoteEngine {
    fn drop(&mut self) {
        for instance in &self.instances {
            self.engine.docker.remove(instance);
        }
    }
}

/// Runs `command` with `args` to its end, recording its docker calls (see `support::ran`).
fn run(command: &mut Command, args: &[&str]) -> Run {
    support::run_recorded(command.args(args))
}

#[test]
fn every_mode_but_exec_works_on_an_engine_that_cannot_see_our_files() {
    let instance = format!("e2e-remote-{}", std::process::id());
    let shared = format!("e2e-remote4-{}", std::process::id());
    let Some(remote) = RemoteEngine::start(vec![instance.clone(), shared.clone()]) else {
        return;
    };
    let engine = &remote.engine;
    let sandbox = Sandbox::new();
    let client = || engine.client(&sandbox, &instance);

    modes_that_send_their_files(engine, &instance, client);
    exec_and_client_mounts_are_refused(client);
    changed_hosts_files_reach_the_engine(&sandbox, client);
    backup_and_restore_stream_through_the_client(&sandbox, client);
    daemon_status_logs_stop(client);
    four_clients_initialize_once(engine, &shared);

    let purged = run(&mut client(), &["--yes", "python", "minimal", "purge"]);
    expect_code(&purged, 0);
    let left = engine.docker.objects(&instance);
    assert!(left.is_empty(), "purge left {left:?}");
}

fn modes_that_send_their_files(
    engine: &IsolatedEngine,
    instance: &str,
    client: impl Fn() -> Command,
) {
    let first = run(&mut client(), &["python", "minimal", "single"]);
    expect_code(&first, 0);
    assert!(ran(&first, "init.hosts") && ran(&first, "init.virtualenv"));
    assert!(
        stdout(&first).contains("in /virtualenv"),
        "{}",
        stdout(&first)
    );
    // The hosts volume holds the variant's scripts, executable.
    let listed = run(
        &mut client(),
        &[
            "python",
            "minimal",
            "single",
            "sh",
            "-c",
            "test -x /data/single && ls /data",
        ],
    );
    expect_code(&listed, 0);
    assert!(
        stdout(&listed).contains("initialize"),
        "{}",
        stdout(&listed)
    );
    assert!(!ran(&listed, "init.hosts"), "{}", stderr(&listed));

    let code = run(
        &mut client(),
        &[
            "python",
            "minimal",
            "single",
            "python",
            "-c",
            "raise SystemExit(3)",
        ],
    );
    expect_code(&code, 3);

    let tested = run(&mut client(), &["python", "minimal", "test"]);
    expect_code(&tested, 0);
    assert!(stdout(&tested).contains("all checks passed"));

    let bash = run_with_stdin(
        client().args(["python", "minimal", "bash"]),
        "python -c 'import sys; print(sys.prefix)'\n",
    );
    expect_code(&bash, 0);
    assert_eq!(stdout(&bash).trim(), "/virtualenv");

    let upgraded = run(&mut client(), &["python", "minimal", "upgrade"]);
    expect_code(&upgraded, 0);
    assert!(ran(&upgraded, "upgrade.packages"), "{}", stderr(&upgraded));

    // Nothing of this instance is left running once the runs ended (the lock container is
    // only ever created, never started; it is gone too).
    let filter = format!("label={INSTANCE_LABEL}={instance}");
    let left = stdout(&engine.docker.run(&[
        "ps",
        "--all",
        "--filter",
        &filter,
        "--format",
        "{{.Names}} {{.State}}",
    ]));
    assert!(
        left.lines()
            .all(|l| !l.ends_with(" running") && !l.contains("-lock ")),
        "left behind: {left}"
    );
}

fn exec_and_client_mounts_are_refused(client: impl Fn() -> Command) {
    let exec = run(&mut client(), &["python", "minimal", "exec", "ls"]);
    expect_code(&exec, 75);
    assert!(
        stderr(&exec).contains("cannot see this machine's files"),
        "{}",
        stderr(&exec)
    );
    assert!(
        !stderr(&exec).contains("==> exec.command"),
        "ran: {}",
        stderr(&exec)
    );
    // A user's mode that bind-mounts the current directory is refused the same way.
    let lint = support::repo_root().join("examples/lint");
    let mut command = client();
    command.arg("--config-dir").arg(lint);
    let refused = run(&mut command, &["python", "minimal", "lint"]);
    expect_code(&refused, 75);
}

fn changed_hosts_files_reach_the_engine(sandbox: &Sandbox, client: impl Fn() -> Command) {
    sandbox.write(
        "layer/python/hosts/minimal/wheels/marker.txt",
        "from the client\n",
    );
    let layered = || {
        let mut command = client();
        command.arg("--config-dir").arg(sandbox.path("layer"));
        command
    };
    let shown = run(
        &mut layered(),
        &[
            "python",
            "minimal",
            "single",
            "cat",
            "/data/wheels/marker.txt",
        ],
    );
    expect_code(&shown, 0);
    assert_eq!(stdout(&shown), "from the client\n");
    assert!(ran(&shown, "init.hosts"), "{}", stderr(&shown));
    // Without the layer the file is gone again: the volume is refilled, not merged into.
    let gone = run(
        &mut client(),
        &[
            "python",
            "minimal",
            "single",
            "test",
            "!",
            "-e",
            "/data/wheels",
        ],
    );
    expect_code(&gone, 0);
}

fn backup_and_restore_stream_through_the_client(sandbox: &Sandbox, client: impl Fn() -> Command) {
    let dir = sandbox.path("backups");
    let dir = dir.to_str().expect("utf-8 path");
    let backup = run(
        &mut client(),
        &["--backup-dir", dir, "python", "minimal", "backup"],
    );
    expect_code(&backup, 0);
    let archives: Vec<_> = std::fs::read_dir(dir)
        .expect("backup dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar"))
        .collect();
    assert_eq!(archives.len(), 1, "one archive written here");
    let restore = run(
        &mut client(),
        &["--backup-dir", dir, "python", "minimal", "restore"],
    );
    expect_code(&restore, 0);
    let after = run(&mut client(), &["python", "minimal", "single"]);
    expect_code(&after, 0);
    assert!(stdout(&after).contains("in /virtualenv"));
}

fn daemon_status_logs_stop(client: impl Fn() -> Command) {
    let started = run(&mut client(), &["python", "minimal", "daemon"]);
    expect_code(&started, 0);
    let status = run(&mut client(), &["python", "minimal", "status"]);
    expect_code(&status, 0);
    assert!(stdout(&status).contains("running"), "{}", stdout(&status));
    let logs = run(&mut client(), &["python", "minimal", "logs"]);
    expect_code(&logs, 0);
    assert!(
        format!("{}{}", stdout(&logs), stderr(&logs)).contains("serving on port 8000"),
        "{}",
        stdout(&logs)
    );
    let stopped = run(&mut client(), &["python", "minimal", "stop"]);
    expect_code(&stopped, 0);
    let status = run(&mut client(), &["python", "minimal", "status"]);
    assert!(!stdout(&status).contains("running"), "{}", stdout(&status));
}

/// Four clients that share nothing but the engine (own HOME, TMPDIR, cache: no host lock in
/// common) start on a fresh instance at once: all succeed and the virtualenv is made once. The
/// engine lacks the helper image too, so all four load it at once: one image stays, tagged.
fn four_clients_initialize_once(engine: &IsolatedEngine, instance: &str) {
    let helper_images = || {
        let filter = "label=org.docker-meta.host_container.role=helper";
        let format = "{{.Repository}}:{{.Tag}} {{.ID}}";
        let listed = engine
            .docker
            .listed(&["image", "ls", "--filter", filter, "--format", format]);
        listed
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
    };
    for image in helper_images() {
        let id = image.split(' ').next_back().unwrap_or_default();
        engine.docker.run(&["image", "rm", "--force", id]);
    }
    assert!(helper_images().is_empty(), "{:?}", helper_images());
    let sandboxes: Vec<Sandbox> = (0..4).map(|_| Sandbox::new()).collect();
    let outputs = run_at_once(sandboxes.iter().map(|sandbox| {
        let mut command = engine.client(sandbox, instance);
        command.args(["python", "minimal", "single"]);
        command
    }));
    for output in &outputs {
        expect_code(output, 0);
        assert!(stdout(output).contains("in /virtualenv"));
    }
    let initialized = outputs.iter().filter(|o| ran(o, "init.virtualenv")).count();
    assert_eq!(
        initialized, 1,
        "the virtualenv was made {initialized} times"
    );
    let built = outputs.iter().filter(|o| ran(o, "init.image")).count();
    assert_eq!(built, 1, "the image was built {built} times");
    let helpers = helper_images();
    assert!(
        helpers.len() == 1
            && helpers
                .iter()
                .all(|h| h.starts_with("host_container/helper:1 ")),
        "helper images after four loads at once: {helpers:?}"
    );
}
