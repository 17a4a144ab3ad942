//! The environment misbehaving, end to end: an engine that hangs or garbles its answers, a
//! working directory that was removed, restore input that is not a file, a layer that cannot be
//! read. Each case runs the real binary against a fake `docker` that misbehaves in one way, and
//! checks the exit code, what the message names, and that the answer comes promptly.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{self, Sandbox};

const USAGE: i32 = 64;
const ENGINE_UNREACHABLE: i32 = 68;

/// Far more than a 1 s engine deadline and the runs around it need; only a hang reaches it.
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `command` to its end, killing it when it outlives `DEADLINE` (a hang fails the test
/// instead of hanging the suite). Returns its output and how long it took.
fn run_bounded(mut command: Command) -> (Output, Duration) {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn host_container");
    let pid = child.id() as i32;
    let started = Instant::now();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(DEADLINE) {
        Ok(output) => (output.expect("wait"), started.elapsed()),
        Err(_) => {
            // SAFETY: kill(2) of our own child, not yet reaped (its waiter is still waiting).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("host_container did not finish within {DEADLINE:?}");
        }
    }
}

/// Replaces the sandbox's fake docker (installed by `fake_docker`) with `script`.
fn docker_script(sandbox: &Sandbox, script: &str) {
    let docker = sandbox.path("bin/docker");
    fs::write(&docker, script).expect("fake docker");
    fs::set_permissions(&docker, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A docker whose every call hangs, as with a daemon that accepts the connection and never
/// answers. `exec`, so that killing the client kills what holds its pipes.
const HUNG_DOCKER: &str = "#!/bin/sh\nexec sleep 3600\n";

fn hung_engine(args: &[&str]) -> (Output, Duration) {
    let sandbox = Sandbox::new();
    let mut command = sandbox.fake_docker();
    docker_script(&sandbox, HUNG_DOCKER);
    command
        .env("HOST_CONTAINER_ENGINE_TIMEOUT", "1")
        .env_remove("DOCKER_HOST")
        .args(args);
    run_bounded(command)
}

/// The message of a hung engine: which call, and what to check.
fn says_engine_hung(output: &Output, call: &str) {
    let stderr = support::stderr(output);
    assert!(
        stderr.contains(&format!("did not answer `{call}")),
        "the call is not named:\n{stderr}"
    );
    assert!(stderr.contains("docker info"), "no advice:\n{stderr}");
    assert!(stderr.contains("DOCKER_HOST"), "no advice:\n{stderr}");
    assert!(
        stderr.contains("HOST_CONTAINER_ENGINE_TIMEOUT"),
        "the deadline's variable is not named:\n{stderr}"
    );
}

#[test]
fn hung_engine_plan_exits_68_naming_the_call() {
    let (output, took) = hung_engine(&["--plan", "python", "minimal", "single"]);
    support::expect_code(&output, ENGINE_UNREACHABLE);
    says_engine_hung(&output, "docker info");
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[test]
fn hung_engine_check_exits_68_naming_the_call() {
    let (output, took) = hung_engine(&["--check", "python", "minimal", "init"]);
    support::expect_code(&output, ENGINE_UNREACHABLE);
    says_engine_hung(&output, "docker info");
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[test]
fn hung_engine_run_exits_68_naming_the_call() {
    let (output, took) = hung_engine(&["python", "minimal", "single", "true"]);
    support::expect_code(&output, ENGINE_UNREACHABLE);
    says_engine_hung(&output, "docker info");
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

/// The first question is `docker info` (who and what the engine is; in a project, also whether
/// it sees this machine's files); it times out once, and nothing after it waits again.
#[test]
fn hung_engine_in_a_project_names_docker_info_and_waits_once() {
    let sandbox = Sandbox::new();
    sandbox.write("project/.host_container/config/.keep", "");
    let mut command = sandbox.fake_docker();
    docker_script(&sandbox, HUNG_DOCKER);
    command
        .env("HOST_CONTAINER_ENGINE_TIMEOUT", "3")
        .args(["--plan", "python", "minimal", "single"]);
    let (output, took) = run_bounded(command);
    support::expect_code(&output, ENGINE_UNREACHABLE);
    says_engine_hung(&output, "docker info");
    // One deadline of 3 s, not one per question (info, then the probe's inspect).
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

/// An instance whose name has a `-` is first looked for under its old names (`volume ls`), a
/// question whose failure only means "not known": a hang there still ends the run, at once.
#[test]
fn hung_engine_at_the_old_names_look_exits_68_naming_volume_ls() {
    let (output, took) = hung_engine(&["-x", "ci-1", "--plan", "python", "minimal", "single"]);
    support::expect_code(&output, ENGINE_UNREACHABLE);
    says_engine_hung(&output, "docker volume ls");
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[test]
fn engine_timeout_that_is_not_a_number_is_a_usage_error() {
    for value in ["soon", "0", "-3", "1.5"] {
        let sandbox = Sandbox::new();
        let mut command = sandbox.fake_docker();
        command
            .env("HOST_CONTAINER_ENGINE_TIMEOUT", value)
            .args(["--plan", "python", "minimal", "single"]);
        let (output, _) = run_bounded(command);
        support::expect_code(&output, USAGE);
        let stderr = support::stderr(&output);
        assert!(
            stderr.contains(&format!("HOST_CONTAINER_ENGINE_TIMEOUT={value}")),
            "{stderr}"
        );
        assert!(
            sandbox.all_docker_calls().is_empty(),
            "docker was called with a bad deadline"
        );
    }
}

/// The deadline is for host_container's own questions: a job that takes longer than it runs to
/// its end.
#[test]
fn engine_deadline_does_not_cut_a_long_step() {
    let sandbox = std::sync::Arc::new(Sandbox::new());
    let mut command = sandbox.fake_docker();
    command
        .env("HOST_CONTAINER_ENGINE_TIMEOUT", "1")
        .env("FAKE_DOCKER_HOLD", "slow-job-marker")
        .args(["python", "minimal", "single", "echo", "slow-job-marker"]);
    // The job, held by the fake, goes on for 2 s after it started: past the deadline.
    let releaser = std::thread::spawn({
        let sandbox = sandbox.clone();
        move || {
            let held = sandbox.held(30);
            std::thread::sleep(Duration::from_secs(2));
            sandbox.release();
            held
        }
    });
    let (output, _) = run_bounded(command);
    let held = releaser.join().expect("releaser");
    support::expect_code(&output, 0);
    assert!(held, "the job never started: {}", support::stderr(&output));
}

/// An engine (or something between) that answers `docker inspect` with exit 0 and JSON cut
/// short: the state is unknown, never "nothing exists".
fn garbled_inspect(args: &[&str]) -> (Sandbox, Output) {
    let sandbox = Sandbox::new();
    let answer = sandbox.write("inspect.json", "[{\"Id\":");
    let mut command = sandbox.fake_docker();
    command.env("FAKE_DOCKER_INSPECT", answer).args(args);
    let (output, _) = run_bounded(command);
    (sandbox, output)
}

fn says_unreadable_inspect(output: &Output) {
    let stderr = support::stderr(output);
    assert!(
        stderr.contains("`docker inspect` answered with output that cannot be read"),
        "the call is not named:\n{stderr}"
    );
    assert!(
        stderr.contains("[{\"Id\":"),
        "what it printed is not shown:\n{stderr}"
    );
}

#[test]
fn garbled_inspect_check_is_68_not_steps_to_run() {
    let (_sandbox, output) = garbled_inspect(&["--check", "python", "minimal", "init"]);
    support::expect_code(&output, ENGINE_UNREACHABLE);
    says_unreadable_inspect(&output);
    let stdout = support::stdout(&output);
    assert!(
        stdout.contains("0 to run") && stdout.contains("5 unknown"),
        "{stdout}"
    );
}

#[test]
fn garbled_inspect_run_is_68_before_anything_runs() {
    let (sandbox, output) = garbled_inspect(&["python", "minimal", "single", "true"]);
    support::expect_code(&output, ENGINE_UNREACHABLE);
    says_unreadable_inspect(&output);
    let calls = sandbox.docker_calls();
    assert!(
        calls.iter().all(|call| call[1] == "inspect"),
        "something ran after the unreadable probe: {calls:?}"
    );
}

/// `host_container ARGS…` (with the sandbox's environment and fake docker) started in a
/// directory that was removed just before: a shell enters it, removes it and execs.
fn in_vanished_dir(sandbox: &Sandbox, args: &[&str]) -> Output {
    let template = sandbox.fake_docker();
    let gone = sandbox.path("project/gone");
    fs::create_dir(&gone).expect("dir to remove");
    let mut command = Command::new("sh");
    for (key, value) in template.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command
        .current_dir(sandbox.path("project"))
        .args(["-c", r#"cd "$1" && rmdir "$1" && shift && exec "$@""#, "sh"])
        .arg(&gone)
        .arg(template.get_program())
        .args(args);
    run_bounded(command).0
}

fn says_cwd_vanished(output: &Output) {
    let stderr = support::stderr(output);
    assert!(
        stderr.contains("the current directory cannot be resolved"),
        "{stderr}"
    );
}

#[test]
fn vanished_cwd_stops_exec_before_mounting_anything() {
    for args in [
        &["--plan", "python", "minimal", "exec", "ls"][..],
        &["python", "minimal", "exec", "ls"],
    ] {
        let sandbox = Sandbox::new();
        let output = in_vanished_dir(&sandbox, args);
        support::expect_code(&output, USAGE);
        says_cwd_vanished(&output);
        assert!(
            !support::stdout(&output).contains("source=/,"),
            "{}",
            support::stdout(&output)
        );
        assert!(sandbox.all_docker_calls().is_empty(), "docker was called");
    }
}

#[test]
fn vanished_cwd_stops_backup_before_it_writes() {
    let sandbox = Sandbox::new();
    let output = in_vanished_dir(&sandbox, &["python", "minimal", "backup"]);
    support::expect_code(&output, USAGE);
    says_cwd_vanished(&output);
    assert!(sandbox.all_docker_calls().is_empty(), "docker was called");
}

/// The project layer is found from the current directory; without one, `--list` would quietly
/// show the builtin modes instead of the project's.
#[test]
fn vanished_cwd_is_no_silent_loss_of_the_project_layer() {
    let sandbox = Sandbox::new();
    let output = in_vanished_dir(&sandbox, &["--list"]);
    support::expect_code(&output, USAGE);
    says_cwd_vanished(&output);
    // Without a project layer nothing needs the directory.
    let sandbox = Sandbox::new();
    let output = in_vanished_dir(&sandbox, &["--no-project", "--list"]);
    support::expect_code(&output, 0);
}

const REFUSED: i32 = 72;
const VOLUME: &str = "hc-python-minimal-default-data";

/// A manifest of this instance's data volume that a restore accepts up to its archive.
fn manifest_text() -> String {
    serde_json::json!({
        "format": 1,
        "tool": "host_container test",
        "created": "2026-01-01T00:00:00Z",
        "language": "python",
        "variant": "minimal",
        "instance": "default",
        "volume": VOLUME,
        "archive": format!("{VOLUME}.tar"),
        "bytes": 0,
        "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "image": "python:3.12-slim",
        "image_id": "sha256:0",
        "stamps": [],
    })
    .to_string()
}

fn restore_from(sandbox: &Sandbox) -> Output {
    let mut command = sandbox.fake_docker();
    command
        .arg("--backup-dir")
        .arg(sandbox.path("backups"))
        .args(["--run-id", "t1", "python", "minimal", "restore"]);
    run_bounded(command).0
}

fn says_refused(output: &Output, file: &str, what: &str) {
    support::expect_code(output, REFUSED);
    let stderr = support::stderr(output);
    assert!(
        stderr.contains(&format!("{file} is {what}, not a regular file")),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was restored"), "{stderr}");
}

fn mkfifo(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
}

#[test]
fn restore_refuses_a_manifest_that_is_a_link_to_dev_zero() {
    let sandbox = Sandbox::new();
    fs::create_dir(sandbox.path("backups")).expect("backups");
    let manifest = sandbox.path(&format!("backups/{VOLUME}.manifest.json"));
    std::os::unix::fs::symlink("/dev/zero", &manifest).expect("symlink");
    let output = restore_from(&sandbox);
    says_refused(&output, &manifest.display().to_string(), "a device");
}

#[test]
fn restore_refuses_an_archive_that_is_a_fifo_nobody_writes() {
    let sandbox = Sandbox::new();
    sandbox.write(&format!("backups/{VOLUME}.manifest.json"), &manifest_text());
    let archive = sandbox.path(&format!("backups/{VOLUME}.tar"));
    mkfifo(&archive);
    let output = restore_from(&sandbox);
    says_refused(&output, &archive.display().to_string(), "a FIFO");
}

#[test]
fn restore_refuses_an_archive_that_is_a_link_to_a_device() {
    let sandbox = Sandbox::new();
    sandbox.write(&format!("backups/{VOLUME}.manifest.json"), &manifest_text());
    let archive = sandbox.path(&format!("backups/{VOLUME}.tar"));
    std::os::unix::fs::symlink("/dev/zero", &archive).expect("symlink");
    let output = restore_from(&sandbox);
    says_refused(&output, &archive.display().to_string(), "a device");
}

/// A manifest that is a regular file, but far larger than any manifest, is refused unread.
#[test]
fn restore_reads_a_manifest_within_a_bound() {
    let sandbox = Sandbox::new();
    let mut text = manifest_text();
    text.push_str(&" ".repeat(2 << 20));
    sandbox.write(&format!("backups/{VOLUME}.manifest.json"), &text);
    let output = restore_from(&sandbox);
    support::expect_code(&output, REFUSED);
    let stderr = support::stderr(&output);
    assert!(stderr.contains("is larger than the"), "{stderr}");
}

const CONFIG: i32 = 65;
/// The user the unreadable-layer tests run as: root reads a file of mode 000, anyone else not.
const NOBODY: u32 = 65534;

/// `host_container ARGS…` as `NOBODY` (through setpriv), in a sandbox that user can use: its
/// HOME and cache belong to it, the rest is world-readable unless a test takes that away.
/// None, said loudly, where the test cannot change users.
fn as_nobody(sandbox: &Sandbox, args: &[&str]) -> Option<Output> {
    use std::os::unix::fs::chown;
    let suite = "unreadable-layer";
    if !support::root_or_skip(suite) {
        return None;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        support::skip(suite, "setpriv (util-linux) is not installed");
        return None;
    }
    fs::set_permissions(sandbox.root.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    for dir in ["home", "cache", "project"] {
        chown(sandbox.path(dir), Some(NOBODY), Some(NOBODY)).expect("chown");
    }
    let template = sandbox.command();
    let mut command = Command::new("setpriv");
    command
        .args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".to_owned(),
            "--".to_owned(),
        ])
        .arg(template.get_program())
        .args(args)
        .current_dir(sandbox.path("project"));
    for (key, value) in template.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    Some(run_bounded(command).0)
}

/// A layer with a mode of its own (`single` that echoes a marker), readable to begin with.
fn layer_with_single(sandbox: &Sandbox) -> std::path::PathBuf {
    sandbox.write(
        "layer/config/host_base_single.yaml",
        "description: the layer's own\nsteps:\n  mine:\n    docker: [run, layer-marker]\n",
    );
    sandbox.path("layer")
}

fn says_cannot_read(output: &Output, path: &std::path::Path) {
    support::expect_code(output, CONFIG);
    let stderr = support::stderr(output);
    assert!(
        stderr.contains(&format!("{} cannot be read", path.display())),
        "{stderr}"
    );
}

fn plan_with_layer(sandbox: &Sandbox, layer: &std::path::Path) -> Option<Output> {
    let layer = layer.display().to_string();
    as_nobody(
        sandbox,
        &[
            "--config-dir",
            &layer,
            "--plan",
            "--offline",
            "python",
            "minimal",
            "single",
        ],
    )
}

#[test]
fn a_config_dir_that_cannot_be_read_is_an_error_naming_it() {
    let sandbox = Sandbox::new();
    let layer = layer_with_single(&sandbox);
    fs::set_permissions(&layer, fs::Permissions::from_mode(0o000)).expect("chmod");
    if let Some(output) = plan_with_layer(&sandbox, &layer) {
        says_cannot_read(&output, &layer);
    }
}

#[test]
fn a_directory_of_a_layer_that_cannot_be_read_is_an_error_naming_it() {
    let sandbox = Sandbox::new();
    let layer = layer_with_single(&sandbox);
    let config = layer.join("config");
    fs::set_permissions(&config, fs::Permissions::from_mode(0o000)).expect("chmod");
    if let Some(output) = plan_with_layer(&sandbox, &layer) {
        says_cannot_read(&output, &config);
        assert!(!support::stdout(&output).contains("single.job"));
    }
}

#[test]
fn a_file_of_a_layer_that_cannot_be_read_is_an_error_naming_it() {
    let sandbox = Sandbox::new();
    let layer = layer_with_single(&sandbox);
    let file = layer.join("config/host_base_single.yaml");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o000)).expect("chmod");
    if let Some(output) = plan_with_layer(&sandbox, &layer) {
        says_cannot_read(&output, &file);
    }
}

/// The home layer is optional, but one that is there and cannot be read is not "absent".
#[test]
fn a_home_layer_that_cannot_be_read_is_an_error_naming_it() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "home/.docker_meta/host_container/config/host_base_single.yaml",
        "steps:\n  mine:\n    docker: [run, layer-marker]\n",
    );
    let hidden = sandbox.path("home/.docker_meta");
    fs::set_permissions(&hidden, fs::Permissions::from_mode(0o000)).expect("chmod");
    let output = as_nobody(
        &sandbox,
        &["--plan", "--offline", "python", "minimal", "single"],
    );
    if let Some(output) = output {
        says_cannot_read(&output, &hidden.join("host_container"));
    }
}

/// The readable layer, as that user, is used: the checks above fail for the right reason.
#[test]
fn a_readable_layer_is_used_by_another_user() {
    let sandbox = Sandbox::new();
    let layer = layer_with_single(&sandbox);
    if let Some(output) = plan_with_layer(&sandbox, &layer) {
        support::expect_code(&output, 0);
        assert!(
            support::stdout(&output).contains("layer-marker"),
            "{}",
            support::stdout(&output)
        );
    }
}

/// A daemon's readiness is asked with an inspect of its container; an engine that hangs there
/// is 68 naming that call, not "the daemon exited" (73), which would also remove the daemon.
#[test]
fn hung_engine_during_a_readiness_check_exits_68() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.fake_docker();
    let script = fs::read_to_string(sandbox.path("bin/docker")).expect("fake docker");
    let hang = "case \"$*\" in *.State.Status*) exec sleep 3600 ;; esac\n";
    let script = script.replacen("\nif [", &format!("\n{hang}if ["), 1);
    docker_script(&sandbox, &script);
    command
        .env("HOST_CONTAINER_ENGINE_TIMEOUT", "1")
        .args(["python", "minimal", "daemon"]);
    let (output, took) = run_bounded(command);
    support::expect_code(&output, ENGINE_UNREACHABLE);
    says_engine_hung(&output, "docker inspect --format");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let removed = sandbox
        .docker_calls()
        .into_iter()
        .any(|call| call[1] == "rm");
    assert!(!removed, "the daemon was removed as if it had crashed");
}

/// Whether the engine sees this machine's files is asked with a throw-away container; an engine
/// that answers `info` and then hangs creating it is 68 naming the create.
#[test]
fn hung_engine_during_the_visibility_probe_exits_68() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.fake_docker();
    let script = fs::read_to_string(sandbox.path("bin/docker")).expect("fake docker");
    let hang = "case \"$*\" in *host_container-probe-*) exec sleep 3600 ;; esac\n";
    let script = script.replacen("\nif [", &format!("\n{hang}if ["), 1);
    docker_script(&sandbox, &script);
    command
        .env("HOST_CONTAINER_ENGINE_TIMEOUT", "1")
        .args(["python", "minimal", "exec", "ls"]);
    let (output, took) = run_bounded(command);
    support::expect_code(&output, ENGINE_UNREACHABLE);
    says_engine_hung(&output, "docker container create");
    assert!(took < Duration::from_secs(15), "took {took:?}");
}
