//! End to end against the real Docker engine. No image can be pulled here, so the base image is
//! built from Debian packages (mmdebstrap, then docker import) once, and passed as the base
//! image. Each test works on an instance of its own and removes everything it created.
//!
//! Without an engine these tests say loudly that they were skipped; with `CI` set they fail.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output, Stdio};

use crate::support::engine::{self, docker, Docker, BASE_IMAGE, INSTANCE_LABEL, NODE_BASE_IMAGE};
use crate::support::{
    self, expect_code, ran, run_at_once, run_with_stdin, stderr, stdout, Run, Sandbox,
};

/// One test's instance: a sandbox plus a unique instance name, cleaned up on drop.
struct Instance {
    sandbox: Sandbox,
    name: String,
}

impl Instance {
    fn new(test: &str) -> Option<Instance> {
        if !engine::available() {
            return None;
        }
        engine::ensure_base_image();
        let instance = Instance {
            sandbox: Sandbox::new(),
            name: format!("e2e-{test}-{}", std::process::id()),
        };
        instance.remove_objects();
        Some(instance)
    }

    /// An instance for node's tests, which also need node's base image.
    fn node(test: &str) -> Option<Instance> {
        let instance = Instance::new(test)?;
        engine::ensure_node_base_image();
        Some(instance)
    }

    fn command(&self) -> Command {
        let mut command = self.sandbox.command();
        command
            .env("HOST_CONTAINER_BASE_IMAGE", BASE_IMAGE)
            .env("HOST_CONTAINER_NODE_BASE_IMAGE", NODE_BASE_IMAGE)
            .args(["-x", &self.name]);
        command
    }

    /// The prefix of the instance's object names for python minimal: a `-` inside a part is
    /// doubled, so no two (language, variant, instance) triples share a name.
    fn prefix(&self) -> String {
        format!("hc-python-minimal-{}", self.name.replace('-', "--"))
    }

    /// The same for node plain.
    fn node_prefix(&self) -> String {
        format!("hc-node-plain-{}", self.name.replace('-', "--"))
    }

    /// Runs `ARGS…` to its end, recording its docker calls (see `support::ran`).
    fn run(&self, args: &[&str]) -> Run {
        support::run_recorded(self.command().args(args).stdin(Stdio::null()))
    }

    fn objects(&self) -> Vec<String> {
        Docker::local().objects(&self.name)
    }

    fn remove_objects(&self) {
        Docker::local().remove(&self.name);
    }

    /// Removes everything and asserts the engine holds nothing of this instance any more.
    fn finish(self) {
        let survivors = self.sandbox.stop_processes();
        assert!(
            survivors.is_empty(),
            "processes that outlived SIGKILL: {survivors:?}"
        );
        self.remove_objects();
        let left = self.objects();
        assert!(left.is_empty(), "left behind in the engine: {left:?}");
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.sandbox.stop_processes();
        self.remove_objects();
    }
}

#[test]
fn single_runs_in_the_virtualenv_and_second_run_skips_init() {
    let Some(instance) = Instance::new("single") else {
        return;
    };
    let first = instance.run(&[
        "python",
        "minimal",
        "single",
        "python",
        "-c",
        "import sys; print(sys.prefix)",
    ]);
    expect_code(&first, 0);
    assert_eq!(stdout(&first).trim(), "/virtualenv");
    assert!(ran(&first, "init.image") && ran(&first, "init.virtualenv"));

    let second = instance.run(&["python", "minimal", "single"]);
    expect_code(&second, 0);
    assert!(
        !ran(&second, "init.image") && !ran(&second, "init.virtualenv"),
        "{}",
        stderr(&second)
    );
    assert!(
        stdout(&second).contains("in /virtualenv"),
        "{}",
        stdout(&second)
    );

    let plan = instance.run(&["--plan", "python", "minimal", "single"]);
    let text = stdout(&plan);
    assert!(
        text.contains("init.virtualenv: skip (done and up to date"),
        "{text}"
    );
    assert!(text.contains("init.image: skip (image"), "{text}");
    instance.finish();
}

#[test]
fn exit_codes_and_literal_arguments_pass_through() {
    let Some(instance) = Instance::new("args") else {
        return;
    };
    let code = instance.run(&[
        "python",
        "minimal",
        "single",
        "python",
        "-c",
        "import sys; sys.exit(7)",
    ]);
    expect_code(&code, 7);

    let awkward = [
        ";",
        "$(echo hi)",
        "`id`",
        "it's",
        "a b",
        "\"q\"",
        "*",
        "",
        "--plan",
    ];
    let mut args = vec![
        "python",
        "minimal",
        "single",
        "python",
        "-c",
        "import sys, json; print(json.dumps(sys.argv[1:]))",
    ];
    args.extend(awkward);
    let output = instance.run(&args);
    expect_code(&output, 0);
    let received: Vec<String> = serde_json::from_str(stdout(&output).trim()).expect("json argv");
    assert_eq!(received, awkward);

    // Bytes that are not UTF-8 are handed to docker as they were given (tests/cli.rs checks the
    // exact argv); the Docker API carries argv as JSON, so today's engines replace each such
    // byte by U+FFFD on the way into the container. Either way the job runs with the argument.
    use std::os::unix::ffi::OsStrExt;
    let output = instance
        .command()
        .args(["python", "minimal", "single", "python", "-c"])
        .arg("import os, sys; print(os.fsencode(sys.argv[1]).hex())")
        .arg(std::ffi::OsStr::from_bytes(b"\xffA\xfe"))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    expect_code(&output, 0);
    let received = stdout(&output);
    assert!(
        ["ff41fe", "efbfbd41efbfbd"].contains(&received.trim()),
        "{received}"
    );
    instance.finish();
}

#[test]
fn changed_requirements_rerun_init_and_upgrade_runs_when_set() {
    let Some(instance) = Instance::new("stale") else {
        return;
    };
    let layer = instance.sandbox.path("layer");
    let requirements = instance
        .sandbox
        .write("layer/python/hosts/minimal/requirements.txt", "# first\n");
    let layer_arg = layer.display().to_string();
    let run = |extra: &[(&str, &str)]| {
        let mut command = instance.command();
        for (k, v) in extra {
            command.env(k, v);
        }
        command
            .args([
                "--config-dir",
                &layer_arg,
                "python",
                "minimal",
                "single",
                "python",
                "-c",
                "pass",
            ])
            .stdin(Stdio::null());
        support::run_recorded(&mut command)
    };
    let first = run(&[]);
    expect_code(&first, 0);
    assert!(ran(&first, "init.virtualenv"));
    let unchanged = run(&[]);
    assert!(
        !ran(&unchanged, "init.virtualenv"),
        "{}",
        stderr(&unchanged)
    );

    std::fs::write(&requirements, "# second: changed\n").expect("write");
    let changed = run(&[]);
    expect_code(&changed, 0);
    assert!(
        stderr(&changed).contains("==> init.virtualenv: requirements.txt changed"),
        "{}",
        stderr(&changed)
    );
    assert!(
        !ran(&changed, "init.image"),
        "the image does not depend on requirements.txt"
    );

    let upgraded = run(&[("UPGRADE", "1")]);
    expect_code(&upgraded, 0);
    assert!(ran(&upgraded, "upgrade.packages"), "{}", stderr(&upgraded));
    assert!(stderr(&upgraded).contains("nothing to upgrade"));
    instance.finish();
}

#[test]
fn bash_reads_piped_stdin_and_test_mode_passes() {
    let Some(instance) = Instance::new("bash") else {
        return;
    };
    let output = run_with_stdin(
        instance.command().args(["python", "minimal", "bash"]),
        "python -V\necho \"$VIRTUAL_ENV\"\n",
    );
    expect_code(&output, 0);
    assert!(stdout(&output).contains("Python 3."), "{}", stdout(&output));
    assert!(stdout(&output).contains("/virtualenv"));

    let report = instance.sandbox.path("report.xml");
    let report_arg = report.display().to_string();
    let test = instance.run(&["--junit", &report_arg, "python", "minimal", "test"]);
    expect_code(&test, 0);
    assert!(
        stdout(&test).contains("all checks passed"),
        "{}",
        stdout(&test)
    );
    // init was done by the bash run: its steps pass as up to date, they are not "skipped".
    let xml = std::fs::read_to_string(&report).expect("report");
    let document = roxmltree::Document::parse(&xml).expect("XML");
    let case = |name: &str| {
        document
            .descendants()
            .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(name))
            .unwrap_or_else(|| panic!("no case {name}:\n{xml}"))
    };
    let image = case("init.image");
    assert_eq!(
        image.attribute("classname"),
        Some("host_container.python.minimal")
    );
    assert!(
        !image.children().any(|c| c.has_tag_name("skipped")),
        "{xml}"
    );
    let note = image.children().find(|c| c.has_tag_name("system-out"));
    assert!(
        note.and_then(|n| n.text())
            .is_some_and(|t| t.starts_with("up to date, not run: ")),
        "{xml}"
    );
    assert_eq!(
        case("virtualenv active").attribute("classname"),
        Some("host_container.python.minimal.test.checks")
    );
    assert!(!xml.contains("<skipped"), "{xml}");
    let failing = instance.run(&[
        "python",
        "minimal",
        "test",
        "python",
        "-c",
        "raise SystemExit(3)",
    ]);
    expect_code(&failing, 3);
    instance.finish();
}

/// The non-root user the exec tests run as.
const TEST_USER: (u32, u32) = (4321, 4321);

/// Runs host_container with `args` as `TEST_USER` in the sandbox's `project` directory, as a
/// user who may talk to the engine through the socket's group.
fn run_as_test_user(instance: &Instance, args: &[&str]) -> Output {
    let socket_gid = std::fs::metadata("/var/run/docker.sock")
        .map(|m| m.gid())
        .unwrap_or(0);
    let (uid, gid) = TEST_USER;
    for dir in ["project", "home"] {
        let path = instance.sandbox.path(dir);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    // The cache must be the user's own: one that others can write is refused.
    std::os::unix::fs::chown(instance.sandbox.path("cache"), Some(uid), Some(gid)).expect("chown");
    std::fs::set_permissions(
        instance.sandbox.root.path(),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    // The checkout may sit below a directory the test user cannot enter: run a copy.
    let binary = instance.sandbox.path("bin/host_container");
    std::fs::copy(env!("CARGO_BIN_EXE_host_container"), &binary).expect("copy binary");
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(
        instance.sandbox.path("bin"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let mut command = Command::new(&binary);
    for (key, value) in instance.command().get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command
        .current_dir(instance.sandbox.path("project"))
        .args(["-x", &instance.name])
        .env("USER", "tester")
        .args(args);
    as_user(&command, uid, gid, socket_gid)
        .stdin(Stdio::null())
        .output()
        .expect("runs")
}

#[test]
fn exec_creates_files_owned_by_the_calling_user() {
    if !support::root_or_skip("exec as another user") {
        return;
    }
    let Some(instance) = Instance::new("exec") else {
        return;
    };
    let output = run_as_test_user(
        &instance,
        &[
            "python",
            "minimal",
            "exec",
            "sh",
            "-c",
            "touch made-by-exec && echo \"$PWD\" && touch \"$HOME/home-is-writable\" && python -c 'import sys; print(sys.prefix)'",
        ],
    );
    expect_code(&output, 0);
    let work = instance.sandbox.path("project");
    let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    assert_eq!(
        lines,
        [work.display().to_string(), "/virtualenv".to_owned()]
    );
    let made = std::fs::metadata(work.join("made-by-exec")).expect("file was created on the host");
    assert_eq!((made.uid(), made.gid()), TEST_USER);
    instance.finish();
}

/// `command` run as another user through setpriv, keeping the socket's group.
fn as_user(command: &Command, uid: u32, gid: u32, group: u32) -> Command {
    let mut wrapped = Command::new("setpriv");
    wrapped
        .args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            format!("--groups={group}"),
            "--".to_owned(),
        ])
        .arg(command.get_program())
        .args(command.get_args())
        .current_dir(command.get_current_dir().expect("cwd set"));
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

#[test]
fn concurrent_first_runs_initialize_once() {
    let Some(instance) = Instance::new("concurrent") else {
        return;
    };
    let outputs = run_at_once((0..8).map(|i| {
        let mut command = instance.command();
        command.args([
            "python",
            "minimal",
            "single",
            "python",
            "-c",
            &format!("print({i})"),
        ]);
        command
    }));
    for (i, output) in outputs.iter().enumerate() {
        expect_code(output, 0);
        assert_eq!(stdout(output).trim(), i.to_string());
    }
    let inits = outputs.iter().filter(|o| ran(o, "init.virtualenv")).count();
    let builds = outputs.iter().filter(|o| ran(o, "init.image")).count();
    assert_eq!((inits, builds), (1, 1), "init must run exactly once");
    instance.finish();
}

#[test]
fn sigterm_stops_the_job_and_leaves_no_container() {
    let Some(instance) = Instance::new("interrupt") else {
        return;
    };
    let init = instance.run(&["python", "minimal", "init"]);
    expect_code(&init, 0);
    let mut child = instance
        .command()
        .args([
            "python",
            "minimal",
            "single",
            "python",
            "-c",
            "import time; print('started', flush=True); time.sleep(300)",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert_eq!(line.trim(), "started");
    // SAFETY: signalling our own child.
    unsafe {
        libc_kill(child.id() as i32, 15);
    }
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
    let filter = format!("label={INSTANCE_LABEL}={}", instance.name);
    let containers = stdout(&docker(&["ps", "--all", "--quiet", "--filter", &filter]));
    assert!(
        containers.trim().is_empty(),
        "containers left: {containers}"
    );
    instance.finish();
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

#[test]
fn daemon_starts_once_reports_status_and_stops() {
    let Some(instance) = Instance::new("daemon") else {
        return;
    };
    // A random port on the loopback address, so that tests can run side by side.
    let daemon = [
        "--set",
        "publish=127.0.0.1::8000",
        "python",
        "minimal",
        "daemon",
    ];
    let started = instance.run(&daemon);
    expect_code(&started, 0);
    assert!(ran(&started, "daemon.container"));
    let name = format!("{}-daemon", instance.prefix());
    let said = stderr(&started);
    assert!(
        said.contains(&format!("started {name}, publishing 8000/tcp->127.0.0.1:")),
        "{said}"
    );
    // Not docker's bare container id.
    assert!(
        !said
            .split_whitespace()
            .any(|w| w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit())),
        "{said}"
    );
    let again = instance.run(&daemon);
    expect_code(&again, 0);
    assert!(
        stderr(&again).contains("already running with the same configuration"),
        "{}",
        stderr(&again)
    );
    let plan = instance.run(&[&["--plan"][..], &daemon].concat());
    assert!(stdout(&plan).contains("already running with the same configuration"));
    let status = instance.run(&["python", "minimal", "status"]);
    expect_code(&status, 0);
    assert!(stdout(&status).contains("running"), "{}", stdout(&status));
    let logs = instance.run(&["python", "minimal", "logs"]);
    assert!(
        stdout(&logs).contains("serving on port 8000"),
        "{}",
        stdout(&logs)
    );
    let stop = instance.run(&["python", "minimal", "stop"]);
    expect_code(&stop, 0);
    assert!(!docker(&["container", "inspect", &name]).status.success());
    for mode in ["status", "logs"] {
        let absent = instance.run(&["python", "minimal", mode]);
        expect_code(&absent, 3);
        let said = stderr(&absent);
        assert!(
            said.contains(&format!(
                "error: no container `{name}`: it was never started, or it was stopped"
            )),
            "{said}"
        );
        assert!(!said.contains("Error response from daemon"), "{said}");
    }
    instance.finish();
}

#[test]
fn daemon_that_exits_is_not_ready_and_shows_its_logs() {
    let Some(instance) = Instance::new("daemonfail") else {
        return;
    };
    let output = instance.run(&[
        "--set",
        "restart=no",
        "python",
        "minimal",
        "daemon",
        "python",
        "-c",
        "print('broken daemon', flush=True); raise SystemExit(1)",
    ]);
    expect_code(&output, 73);
    assert!(
        stderr(&output).contains("broken daemon"),
        "{}",
        stderr(&output)
    );
    instance.finish();
}

#[test]
fn a_container_name_taken_by_someone_else_is_a_conflict() {
    let Some(instance) = Instance::new("conflict") else {
        return;
    };
    let name = format!("{}-daemon", instance.prefix());
    let created = docker(&["create", "--name", &name, BASE_IMAGE, "true"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let output = instance.run(&["python", "minimal", "daemon"]);
    docker(&["rm", "--force", &name]);
    expect_code(&output, 71);
    assert!(
        stderr(&output).contains("did not create"),
        "{}",
        stderr(&output)
    );
    instance.finish();
}

#[test]
fn a_missing_base_image_has_its_own_exit_code() {
    let Some(instance) = Instance::new("nobase") else {
        return;
    };
    let output = instance.run(&[
        "--set",
        "base_image=hc-test-no-such-base:none",
        "python",
        "minimal",
        "init",
    ]);
    expect_code(&output, 69);
    let text = stderr(&output);
    assert!(text.contains("hc-test-no-such-base:none is not present"));
    for hint in [
        "--set base_image=IMAGE",
        "HOST_CONTAINER_PYTHON_BASE_IMAGE=IMAGE",
        "HOST_CONTAINER_BASE_IMAGE=IMAGE",
        "scripts/debian-base-image.sh IMAGE python",
    ] {
        assert!(text.contains(hint), "no hint {hint}:\n{text}");
    }
    // Docker's own banner is noise, in the live output and in the tail alike.
    assert!(!text.contains("DEPRECATED"), "{text}");
    assert!(
        text.contains("did not run: init.volume, init.hosts-volume, init.hosts, init.virtualenv"),
        "{text}"
    );
    instance.finish();
}

#[test]
fn unreachable_engine_is_reported() {
    if !engine::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let output = sandbox
        .command()
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["python", "minimal", "single"])
        .output()
        .expect("runs");
    expect_code(&output, 68);
    let plan = sandbox
        .command()
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["--plan", "python", "minimal", "single"])
        .output()
        .expect("runs");
    expect_code(&plan, 0);
    assert!(stdout(&plan).contains("# state: unknown"));
    let check = sandbox
        .command()
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["--check", "python", "minimal", "single"])
        .output()
        .expect("runs");
    expect_code(&check, 68);
    assert!(
        stdout(&check).ends_with("0 to run, 0 up to date, 5 unknown, 1 always run\n"),
        "{}",
        stdout(&check)
    );
}

/// A digest of everything in a volume: names (any bytes), modes, owners, link targets, contents.
fn volume_digest(volume: &str) -> String {
    let output = docker(&[
        "run",
        "--rm",
        "--network=none",
        &format!("--volume={volume}:/v:ro"),
        BASE_IMAGE,
        "sh",
        "-c",
        "cd /v && find . -printf '%p\\0%m %U:%G %y %l\\0' | sort -z | sha256sum && \
         find . -type f -print0 | sort -z | xargs -0 -r sha256sum | sha256sum",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
}

fn in_volume(volume: &str, script: &str) {
    let output = docker(&[
        "run",
        "--rm",
        "--network=none",
        &format!("--volume={volume}:/v"),
        BASE_IMAGE,
        "sh",
        "-c",
        script,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
}

const AWKWARD_FILES: &str = "printf hi > '/v/a b' && printf x > \"/v/new\nline\" && \
    printf y > \"/v/$(printf 'bad\\377byte')\" && ln -s 'a b' /v/link && \
    chown 123:456 '/v/a b' && chmod 640 '/v/a b' && mkdir -p /v/dir && chmod 700 /v/dir";

#[test]
fn backup_wipe_restore_is_exact_and_bad_archives_are_refused() {
    let Some(instance) = Instance::new("backup") else {
        return;
    };
    let volume = format!("{}-data", instance.prefix());
    let dir = instance.sandbox.path("backups");
    let dir_arg = dir.display().to_string();
    expect_code(&instance.run(&["python", "minimal", "init"]), 0);
    in_volume(&volume, AWKWARD_FILES);
    let original = volume_digest(&volume);

    let backup = instance.run(&["--backup-dir", &dir_arg, "python", "minimal", "backup"]);
    expect_code(&backup, 0);
    let archive = dir.join(format!("{volume}.tar"));
    let manifest_path = dir.join(format!("{volume}.manifest.json"));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).expect("manifest"))
            .expect("json");
    assert_eq!(manifest["volume"], volume.as_str());
    assert_eq!(
        manifest["bytes"],
        std::fs::metadata(&archive).expect("archive").len()
    );
    assert_eq!(
        manifest["stamps"][0]["name"],
        format!("{}-initialized", instance.prefix())
    );
    assert!(manifest["image_id"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(!dir.read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("partial")));

    // An existing backup is not replaced without --force.
    let again = instance.run(&["--backup-dir", &dir_arg, "python", "minimal", "backup"]);
    expect_code(&again, 72);
    let forced = instance.run(&[
        "--force",
        "--backup-dir",
        &dir_arg,
        "python",
        "minimal",
        "backup",
    ]);
    expect_code(&forced, 0);

    in_volume(&volume, "rm -rf /v/* && echo changed > /v/after-wipe");
    let wiped = volume_digest(&volume);
    assert_ne!(wiped, original);

    let good = std::fs::read(&archive).expect("archive");
    // A corrupt archive of the same size is refused and the volume left alone.
    let mut corrupt = good.clone();
    corrupt[good.len() / 2] ^= 0xff;
    std::fs::write(&archive, &corrupt).expect("write");
    let refused = instance.run(&["--backup-dir", &dir_arg, "python", "minimal", "restore"]);
    expect_code(&refused, 72);
    assert!(
        stderr(&refused).contains("corrupt or truncated"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(volume_digest(&volume), wiped);
    // So is a truncated one.
    std::fs::write(&archive, &good[..good.len() / 3]).expect("write");
    expect_code(
        &instance.run(&["--backup-dir", &dir_arg, "python", "minimal", "restore"]),
        72,
    );
    assert_eq!(volume_digest(&volume), wiped);
    // And one whose manifest belongs to another instance.
    std::fs::write(&archive, &good).expect("write");
    let text = std::fs::read_to_string(&manifest_path).expect("manifest");
    let other = text.replace(
        &format!("\"instance\": \"{}\"", instance.name),
        "\"instance\": \"other\"",
    );
    std::fs::write(&manifest_path, &other).expect("write");
    expect_code(
        &instance.run(&["--backup-dir", &dir_arg, "python", "minimal", "restore"]),
        72,
    );
    assert_eq!(volume_digest(&volume), wiped);
    std::fs::write(&manifest_path, &text).expect("write");

    let restored = instance.run(&["--backup-dir", &dir_arg, "python", "minimal", "restore"]);
    expect_code(&restored, 0);
    assert_eq!(volume_digest(&volume), original);
    // The restored virtualenv works.
    let single = instance.run(&[
        "python",
        "minimal",
        "single",
        "python",
        "-c",
        "import sys; print(sys.prefix)",
    ]);
    expect_code(&single, 0);
    assert_eq!(stdout(&single).trim(), "/virtualenv");
    instance.finish();
}

#[test]
fn a_restore_failing_part_way_leaves_the_data_as_before() {
    let Some(instance) = Instance::new("restorefail") else {
        return;
    };
    let volume = format!("{}-data", instance.prefix());
    let dir_arg = instance.sandbox.path("backups").display().to_string();
    expect_code(&instance.run(&["python", "minimal", "init"]), 0);
    in_volume(&volume, AWKWARD_FILES);
    expect_code(
        &instance.run(&["--backup-dir", &dir_arg, "python", "minimal", "backup"]),
        0,
    );
    in_volume(&volume, "echo current > /v/current-data");
    let current = volume_digest(&volume);

    // Real docker, except the step that fills the volume from the staging copy fails.
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v docker"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let wrapper = format!(
        "#!/bin/sh\ncase \"$*\" in *-data-fill*) echo injected >&2; exit 1;; esac\nexec {} \"$@\"\n",
        real.trim()
    );
    let fake = instance.sandbox.path("bin/docker");
    std::fs::write(&fake, wrapper).expect("wrapper");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let output = instance
        .command()
        .env(
            "PATH",
            format!(
                "{}:{}",
                instance.sandbox.path("bin").display(),
                std::env::var("PATH").unwrap()
            ),
        )
        .args(["--backup-dir", &dir_arg, "python", "minimal", "restore"])
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert_ne!(output.status.code(), Some(0));
    assert!(
        stderr(&output).contains("put back as it was"),
        "{}",
        stderr(&output)
    );
    assert_eq!(volume_digest(&volume), current);
    let left = stdout(&docker(&[
        "volume",
        "ls",
        "--quiet",
        "--filter",
        &format!("name={volume}-restore"),
    ]));
    assert!(left.trim().is_empty(), "staging volumes left: {left}");
    instance.finish();
}

#[test]
fn restore_stops_a_running_daemon_and_starts_it_again() {
    let Some(instance) = Instance::new("restoredaemon") else {
        return;
    };
    let dir_arg = instance.sandbox.path("backups").display().to_string();
    expect_code(&instance.run(&["python", "minimal", "daemon"]), 0);
    expect_code(
        &instance.run(&["--backup-dir", &dir_arg, "python", "minimal", "backup"]),
        0,
    );
    let restored = instance.run(&["--backup-dir", &dir_arg, "python", "minimal", "restore"]);
    expect_code(&restored, 0);
    assert!(
        stderr(&restored).contains("stopped the daemon"),
        "{}",
        stderr(&restored)
    );
    let name = format!("{}-daemon", instance.prefix());
    let running = docker(&["inspect", "--format", "{{.State.Running}}", &name]);
    assert_eq!(stdout(&running).trim(), "true");
    instance.finish();
}

#[test]
fn purge_asks_first_and_then_removes_everything() {
    let Some(instance) = Instance::new("purge") else {
        return;
    };
    expect_code(&instance.run(&["python", "minimal", "init"]), 0);
    let image = format!("host_container/python-minimal:{}", instance.name);
    let image_id = |name: &str| stdout(&docker(&["image", "inspect", "--format={{.Id}}", name]));
    let first = image_id(&image);
    // A rebuild (another name of the same base changes the build's argv) removes the image it
    // replaced, which nothing uses.
    let alias = format!("hc-test-alias:{}", instance.name);
    assert!(docker(&["tag", BASE_IMAGE, &alias]).status.success());
    let rebuilt = instance.run(&[
        "--set",
        &format!("base_image={alias}"),
        "python",
        "minimal",
        "init",
    ]);
    docker(&["image", "rm", &alias]);
    expect_code(&rebuilt, 0);
    assert_ne!(image_id(&image), first);
    assert!(!docker(&["image", "inspect", first.trim()]).status.success());
    // An untagged image of the instance, as a rebuild leaves while a container still uses the
    // old image: purge removes it too.
    let context = instance
        .sandbox
        .write("untagged/Dockerfile", &format!("FROM {BASE_IMAGE}\n"));
    let labels: Vec<String> = ["language=python", "variant=minimal"]
        .iter()
        .map(|l| format!("--label=org.docker-meta.host_container.{l}"))
        .chain([format!("--label={INSTANCE_LABEL}={}", instance.name)])
        .collect();
    let mut build = vec!["build", "--quiet"];
    build.extend(labels.iter().map(String::as_str));
    let context_dir = context.parent().expect("dir").display().to_string();
    build.push(&context_dir);
    assert!(docker(&build).status.success());
    let before = instance.objects();
    assert_eq!(
        before.iter().filter(|o| o.starts_with("image ")).count(),
        2,
        "{before:?}"
    );
    // No terminal and no --yes: refused, nothing removed.
    let refused = instance.run(&["python", "minimal", "purge"]);
    expect_code(&refused, 72);
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    assert_eq!(instance.objects().len(), before.len());
    let purged = instance.run(&["--yes", "python", "minimal", "purge"]);
    expect_code(&purged, 0);
    assert!(instance.objects().is_empty(), "{:?}", instance.objects());
    instance.finish();
}

#[test]
fn test_scripts_read_pip_option_lines_as_pip_does() {
    let Some(instance) = Instance::new("pipopts") else {
        return;
    };
    let data = instance.sandbox.path("data");
    instance.sandbox.write(
        "data/requirements.txt",
        "--no-index\n--find-links /wheels  # local wheels\n-r more.txt\nrequests>=2 ; python_version > '3'\n",
    );
    instance.sandbox.write(
        "data/more.txt",
        "--requirement=requirements.txt\n-e ./src\nidna[all]==3\n",
    );
    let mut names = Vec::new();
    for variant in ["minimal", "web"] {
        let script = support::repo_root()
            .join("etc/docker_meta/host_container/python/hosts")
            .join(variant)
            .join("test");
        let output = docker(&[
            "run",
            "--rm",
            &format!("--label={INSTANCE_LABEL}={}", instance.name),
            &format!("--volume={}:/data:ro", data.display()),
            &format!("--volume={}:/test.py:ro", script.display()),
            BASE_IMAGE,
            "python3",
            "-c",
            "import runpy; print(runpy.run_path('/test.py')['requirements']('/data/requirements.txt'))",
        ]);
        expect_code(&output, 0);
        names.push(stdout(&output));
    }
    assert_eq!(names[0], "['idna', 'requests']\n");
    assert_eq!(names[0], names[1]);
    instance.finish();
}

/// An instance made before names doubled the `-` in their parts (its data volume is
/// `hc-python-minimal-e2e-legacy-PID-data`) is found under those names, and purged there.
#[test]
fn an_instance_made_under_the_legacy_names_keeps_them() {
    let Some(instance) = Instance::new("legacy") else {
        return;
    };
    let volume = format!("hc-python-minimal-{}-data", instance.name);
    assert_ne!(volume, format!("{}-data", instance.prefix()));
    let label =
        |key: &str, value: &str| format!("--label=org.docker-meta.host_container.{key}={value}");
    let created = docker(&[
        "volume",
        "create",
        &label("language", "python"),
        &label("variant", "minimal"),
        &label("instance", &instance.name),
        &volume,
    ]);
    assert!(created.status.success());
    let output = instance.run(&["--plan", "--format", "json", "python", "minimal", "single"]);
    expect_code(&output, 0);
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let step = plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["done"]["kind"] == "volume")
        .expect("the volume step");
    assert_eq!(step["done"]["name"], volume.as_str());
    assert_eq!(step["status"], "skip", "{step}");

    expect_code(&instance.run(&["--yes", "python", "minimal", "purge"]), 0);
    assert!(!docker(&["volume", "inspect", &volume]).status.success());
    instance.finish();
}

/// An object with this instance's name but another instance's labels is never removed.
#[test]
fn purge_and_stop_leave_objects_of_other_instances_alone() {
    let Some(instance) = Instance::new("foreign") else {
        return;
    };
    let label =
        |key: &str, value: &str| format!("--label=org.docker-meta.host_container.{key}={value}");
    let volume = format!("{}-data", instance.prefix());
    let daemon = format!("{}-daemon", instance.prefix());
    let others = [
        label("language", "python"),
        label("variant", "minimal-other"),
        label("instance", &instance.name),
    ];
    let mut args = vec!["volume", "create"];
    args.extend(others.iter().map(String::as_str));
    args.push(&volume);
    assert!(docker(&args).status.success());
    let name = format!("--name={daemon}");
    let mut args = vec!["create", &name];
    args.extend(others.iter().map(String::as_str));
    args.extend([BASE_IMAGE, "true"]);
    assert!(docker(&args).status.success());

    for mode in ["stop", "purge"] {
        let output = instance.run(&["--yes", "python", "minimal", mode]);
        expect_code(&output, 71);
        assert!(
            stderr(&output).contains("belongs to python minimal-other"),
            "{mode}: {}",
            stderr(&output)
        );
    }
    assert!(docker(&["volume", "inspect", &volume]).status.success());
    assert!(docker(&["container", "inspect", &daemon]).status.success());
    instance.finish();
}

/// `--check` in a configuration layer's life: fresh, done, a changed file, a new file.
#[test]
fn check_answers_and_names_the_files_that_changed() {
    let Some(instance) = Instance::new("check") else {
        return;
    };
    let requirements = instance
        .sandbox
        .write("layer/python/hosts/minimal/requirements.txt", "# first\n");
    let layer = instance.sandbox.path("layer").display().to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["--config-dir", layer.as_str()];
        all.extend(args);
        instance.run(&all)
    };
    let check = || run(&["--check", "python", "minimal", "single"]);
    let fresh = check();
    expect_code(&fresh, 1);
    assert!(
        stdout(&fresh).contains("init.virtualenv: run (not done yet"),
        "{}",
        stdout(&fresh)
    );
    expect_code(&run(&["python", "minimal", "single", "true"]), 0);
    let done = check();
    expect_code(&done, 0);
    assert!(
        stdout(&done).ends_with("0 to run, 5 up to date, 0 unknown, 1 always run\n"),
        "{}",
        stdout(&done)
    );

    std::fs::write(&requirements, "# second\n").expect("write");
    let changed = check();
    expect_code(&changed, 1);
    assert!(
        stdout(&changed).contains("init.virtualenv: run (requirements.txt changed)"),
        "{}",
        stdout(&changed)
    );
    instance
        .sandbox
        .write("layer/python/hosts/minimal/wheels/extra.txt", "a wheel\n");
    let added = check();
    expect_code(&added, 1);
    assert!(
        stdout(&added).contains("(requirements.txt changed, wheels/extra.txt added)"),
        "{}",
        stdout(&added)
    );
    let rerun = run(&["python", "minimal", "single", "true"]);
    expect_code(&rerun, 0);
    assert!(
        stderr(&rerun)
            .contains("==> init.virtualenv: requirements.txt changed, wheels/extra.txt added"),
        "{}",
        stderr(&rerun)
    );
    assert!(!ran(&rerun, "init.image"), "{}", stderr(&rerun));
    expect_code(&check(), 0);
    instance.finish();
}

/// A re-run that fails leaves a stamp that says so, even once the inputs are back to what the
/// last successful run saw.
#[test]
fn a_failed_re_run_never_leaves_a_stamp_that_says_done() {
    let Some(instance) = Instance::new("unfinished") else {
        return;
    };
    let shipped = support::repo_root().join("etc/docker_meta/host_container/python/hosts/minimal");
    let initialize = instance
        .sandbox
        .path("layer/python/hosts/minimal/initialize");
    std::fs::create_dir_all(initialize.parent().expect("dir")).expect("dirs");
    std::fs::copy(shipped.join("initialize"), &initialize).expect("copy");
    let layer = instance.sandbox.path("layer").display().to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["--config-dir", layer.as_str()];
        all.extend(args);
        instance.run(&all)
    };
    expect_code(&run(&["python", "minimal", "init"]), 0);
    let good = std::fs::read(&initialize).expect("read");
    std::fs::write(&initialize, b"#!/bin/sh\nrm -rf /virtualenv/bin\nexit 3\n").expect("write");
    expect_code(&run(&["python", "minimal", "single", "true"]), 70);
    std::fs::write(&initialize, good).expect("write back");
    let check = run(&["--check", "python", "minimal", "single"]);
    expect_code(&check, 1);
    assert!(
        stdout(&check).contains("init.virtualenv: run (the last run did not finish)"),
        "{}",
        stdout(&check)
    );
    let again = run(&["python", "minimal", "single", "python", "-c", "print(1)"]);
    expect_code(&again, 0);
    assert!(stderr(&again).contains("==> init.virtualenv: the last run did not finish"));
    instance.finish();
}

/// The CI cache recipe: the data volume and its stamp come back from a backup on a runner
/// that has neither, and only the image is rebuilt.
#[test]
fn a_restored_cache_spares_the_virtualenv_and_rebuilds_only_the_image() {
    let Some(instance) = Instance::new("cicache") else {
        return;
    };
    let cache = instance.sandbox.path("ci-cache").display().to_string();
    expect_code(&instance.run(&["python", "minimal", "init"]), 0);
    expect_code(
        &instance.run(&["--backup-dir", &cache, "python", "minimal", "backup"]),
        0,
    );
    expect_code(&instance.run(&["--yes", "python", "minimal", "purge"]), 0);
    assert!(instance.objects().is_empty(), "{:?}", instance.objects());
    let restored = instance.run(&["--backup-dir", &cache, "python", "minimal", "restore"]);
    expect_code(&restored, 0);
    assert!(!ran(&restored, "init.virtualenv"), "{}", stderr(&restored));
    let check = instance.run(&["--check", "python", "minimal", "single"]);
    expect_code(&check, 1);
    assert!(
        stdout(&check).ends_with("3 to run, 2 up to date, 0 unknown, 1 always run\n"),
        "{}",
        stdout(&check)
    );
    let single = instance.run(&[
        "python",
        "minimal",
        "single",
        "python",
        "-c",
        "import sys; print(sys.prefix)",
    ]);
    expect_code(&single, 0);
    assert!(ran(&single, "init.image"), "{}", stderr(&single));
    assert!(!ran(&single, "init.virtualenv"), "{}", stderr(&single));
    assert_eq!(stdout(&single).trim(), "/virtualenv");
    instance.finish();
}

/// A run killed while it held the instance lock leaves the lock container in the engine; the
/// next run on this host sees that its holder's pid is gone, takes the lock over and proceeds.
#[test]
fn a_lock_left_by_a_dead_run_is_taken_over() {
    let Some(instance) = Instance::new("stalelock") else {
        return;
    };
    let plan = instance.run(&[
        "--plan",
        "--offline",
        "--format",
        "json",
        "python",
        "minimal",
        "init",
    ]);
    expect_code(&plan, 0);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan JSON");
    let data = plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == "init.volume")
        .and_then(|s| s["done"]["name"].as_str())
        .expect("the data volume");
    let lock = format!("{}-lock", data.strip_suffix("-data").expect("…-data"));
    if !docker(&["image", "inspect", "host_container/helper:1"])
        .status
        .success()
    {
        let empty = tempfile::tempdir().expect("dir");
        let archive = empty.path().join("empty.tar");
        let tarred = Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(empty.path())
            .arg("--exclude=empty.tar")
            .arg(".")
            .status()
            .expect("tar");
        assert!(tarred.success());
        let imported = docker(&[
            "import",
            archive.to_str().expect("utf-8"),
            "host_container/helper:1",
        ]);
        assert!(imported.status.success(), "{}", stderr(&imported));
    }
    // A pid that existed and is gone.
    let mut child = Command::new("true").spawn().expect("true");
    let dead = child.id();
    child.wait().expect("wait");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let labels = [
        format!("--label={INSTANCE_LABEL}={}", instance.name),
        "--label=org.docker-meta.host_container.language=python".to_owned(),
        "--label=org.docker-meta.host_container.variant=minimal".to_owned(),
        format!(
            "--label=org.docker-meta.host_container.lock.host={}",
            host.trim()
        ),
        format!("--label=org.docker-meta.host_container.lock.pid={dead}"),
        format!(
            "--label=org.docker-meta.host_container.lock.since={}",
            now_seconds()
        ),
    ];
    let mut create = vec!["container", "create", "--name", &lock];
    create.extend(labels.iter().map(String::as_str));
    create.extend(["host_container/helper:1", "/none"]);
    let created = docker(&create);
    assert!(created.status.success(), "{}", stderr(&created));

    let output = instance.run(&["python", "minimal", "init"]);
    expect_code(&output, 0);
    assert!(
        stderr(&output).contains("taking over the lock"),
        "{}",
        stderr(&output)
    );
    assert!(
        !docker(&["container", "inspect", &lock]).status.success(),
        "the lock is released at the end"
    );
    instance.finish();
}

fn now_seconds() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .to_string()
}

/// A `docker` first on PATH that runs the real one, except that the call whose argv contains
/// `pattern` writes its pid to `<sandbox>/stalled` and sleeps: a test kills host_container there.
fn stall_docker_at(instance: &Instance, pattern: &str) -> String {
    let real = stdout(
        &Command::new("sh")
            .args(["-c", "command -v docker"])
            .output()
            .unwrap(),
    );
    let mark = instance.sandbox.path("stalled");
    let wrapper = format!(
        "#!/bin/sh\ncase \"$*\" in *\"{pattern}\"*) echo $$ > '{mark}.tmp' && mv '{mark}.tmp' '{mark}'; exec sleep 300;; esac\nexec {} \"$@\"\n",
        real.trim(),
        mark = mark.display()
    );
    let fake = instance.sandbox.path("bin/docker");
    std::fs::write(&fake, wrapper).expect("wrapper");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    format!(
        "{}:{}",
        instance.sandbox.path("bin").display(),
        std::env::var("PATH").unwrap()
    )
}

/// Runs `args` with the stalling docker, waits until it stalls, and SIGKILLs host_container
/// there (and the stalled call after it).
fn kill_when_stalled(instance: &Instance, pattern: &str, args: &[&str]) {
    let path = stall_docker_at(instance, pattern);
    let mut child = instance
        .command()
        .env("PATH", path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mark = instance.sandbox.path("stalled");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while !mark.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut text).unwrap();
            panic!("ended ({status}) before reaching `{pattern}`: {text}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reached `{pattern}`"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: signalling our own child, then the wrapper it started.
    unsafe {
        libc_kill(child.id() as i32, 9);
    }
    child.wait().expect("wait");
    let stalled: i32 = std::fs::read_to_string(&mark)
        .expect("mark")
        .trim()
        .parse()
        .expect("pid");
    unsafe {
        libc_kill(stalled, 9);
    }
    std::fs::remove_file(&mark).expect("remove mark");
    std::fs::remove_file(instance.sandbox.path("bin/docker")).expect("remove wrapper");
}

fn container_state(name: &str) -> String {
    stdout(&docker(&["inspect", "--format", "{{.State.Status}}", name]))
        .trim()
        .to_owned()
}

#[test]
fn restore_touches_no_volume_it_did_not_make_and_no_device_or_setuid_entry() {
    let Some(instance) = Instance::new("restoreown") else {
        return;
    };
    let volume = format!("{}-data", instance.prefix());
    let dir = instance.sandbox.path("backups");
    let dir_arg = dir.display().to_string();
    let restore = || instance.run(&["--backup-dir", &dir_arg, "python", "minimal", "restore"]);
    expect_code(&instance.run(&["python", "minimal", "init"]), 0);
    expect_code(
        &instance.run(&["--backup-dir", &dir_arg, "python", "minimal", "backup"]),
        0,
    );
    in_volume(&volume, "echo current > /v/current");
    let current = volume_digest(&volume);
    let label = format!("--label={INSTANCE_LABEL}={}", instance.name);

    // An undo volume left by an earlier restore holds what the user had: it is kept.
    let undo = format!("{volume}-restore-undo");
    expect_code(&docker(&["volume", "create", &label, &undo]), 0);
    in_volume(&undo, "echo precious > /v/precious");
    let kept = volume_digest(&undo);
    let refused = restore();
    expect_code(&refused, 72);
    assert!(stderr(&refused).contains(&undo), "{}", stderr(&refused));
    assert_eq!(volume_digest(&undo), kept);
    assert_eq!(volume_digest(&volume), current);
    expect_code(&docker(&["volume", "rm", &undo]), 0);

    // A manifest naming someone else's volume as a stamp does not empty that volume.
    let foreign = format!("hc-e2e-foreign-{}", instance.name);
    expect_code(&docker(&["volume", "create", &label, &foreign]), 0);
    in_volume(&foreign, "echo theirs > /v/theirs");
    let theirs = volume_digest(&foreign);
    let manifest_path = dir.join(format!("{volume}.manifest.json"));
    let text = std::fs::read_to_string(&manifest_path).expect("manifest");
    let stamp = format!("{}-initialized", instance.prefix());
    std::fs::write(&manifest_path, text.replace(&stamp, &foreign)).expect("write");
    let refused = restore();
    expect_code(&refused, 72);
    assert!(
        stderr(&refused).contains("not one of this instance's stamps"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(volume_digest(&foreign), theirs);
    assert_eq!(volume_digest(&volume), current);

    // Archives with a device file, a FIFO or a setuid file are refused, the entry named.
    let archive = dir.join(format!("{volume}.tar"));
    for (make, entry) in [
        ("mknod /x/null c 1 3", "./null"),
        ("mkfifo /x/fifo", "./fifo"),
        ("touch /x/suid && chmod 4755 /x/suid", "./suid"),
    ] {
        let made = docker(&[
            "run",
            "--rm",
            "--network=none",
            &format!("--volume={}:/out", dir.display()),
            BASE_IMAGE,
            "sh",
            "-c",
            &format!(
                "mkdir /x && echo fine > /x/fine && {make} && tar --create --directory=/x --file=/out/{volume}.tar ."
            ),
        ]);
        expect_code(&made, 0);
        let bytes = std::fs::read(&archive).expect("archive");
        let mut manifest: serde_json::Value = serde_json::from_str(&text).expect("json");
        manifest["bytes"] = bytes.len().into();
        manifest["sha256"] = sha256_hex(&bytes).into();
        std::fs::write(&manifest_path, manifest.to_string()).expect("write");
        let refused = restore();
        expect_code(&refused, 72);
        assert!(
            stderr(&refused).contains(&format!("`{entry}` may not be restored")),
            "{}",
            stderr(&refused)
        );
        assert_eq!(volume_digest(&volume), current);
    }
    let left = stdout(&docker(&[
        "volume",
        "ls",
        "--quiet",
        "--filter",
        &format!("name={volume}-restore"),
    ]));
    assert!(left.trim().is_empty(), "restore volumes left: {left}");
    docker(&["volume", "rm", &foreign]);
    instance.finish();
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_restore_killed_while_swapping_is_finished_by_the_next_restore() {
    let Some(instance) = Instance::new("restorekill") else {
        return;
    };
    let volume = format!("{}-data", instance.prefix());
    let dir_arg = instance.sandbox.path("backups").display().to_string();
    expect_code(&instance.run(&["python", "minimal", "init"]), 0);
    in_volume(&volume, AWKWARD_FILES);
    let backed_up = volume_digest(&volume);
    expect_code(
        &instance.run(&["--backup-dir", &dir_arg, "python", "minimal", "backup"]),
        0,
    );
    in_volume(&volume, "echo current > /v/current-data");

    // Killed after the volume was cleared, before it was filled again.
    kill_when_stalled(
        &instance,
        "-data-fill",
        &["--backup-dir", &dir_arg, "python", "minimal", "restore"],
    );
    // The next command does not use the incomplete volume and says what to do.
    let single = instance.run(&["python", "minimal", "single", "true"]);
    expect_code(&single, 71);
    let text = stderr(&single);
    assert!(text.contains("interrupted while it swapped"), "{text}");
    assert!(
        text.contains("to finish the restore") && text.contains("to roll back"),
        "{text}"
    );
    assert!(text.contains(&format!("{volume}-restore-undo")), "{text}");

    let finished = instance.run(&["--backup-dir", &dir_arg, "python", "minimal", "restore"]);
    expect_code(&finished, 0);
    assert!(
        stderr(&finished).contains("finishing it"),
        "{}",
        stderr(&finished)
    );
    assert_eq!(volume_digest(&volume), backed_up);
    // The undo copy of the earlier run is the user's to remove.
    let undo = format!("{volume}-restore-undo");
    assert!(docker(&["volume", "inspect", &undo]).status.success());
    expect_code(&instance.run(&["python", "minimal", "single", "true"]), 0);
    instance.finish();
}

#[test]
fn a_backup_killed_while_the_daemon_is_paused_is_noticed_by_backup_and_daemon() {
    let Some(instance) = Instance::new("backupkill") else {
        return;
    };
    let dir_arg = instance.sandbox.path("backups").display().to_string();
    let daemon = format!("{}-daemon", instance.prefix());
    let backup = [
        "--force",
        "--backup-dir",
        &dir_arg,
        "python",
        "minimal",
        "backup",
    ];
    expect_code(&instance.run(&["python", "minimal", "daemon"]), 0);

    kill_when_stalled(&instance, "tar --create", &backup);
    assert_eq!(container_state(&daemon), "paused");
    let again = instance.run(&backup);
    expect_code(&again, 0);
    assert!(stderr(&again).contains("left paused"), "{}", stderr(&again));
    assert_eq!(container_state(&daemon), "running");

    kill_when_stalled(&instance, "tar --create", &backup);
    assert_eq!(container_state(&daemon), "paused");
    let started = instance.run(&["python", "minimal", "daemon"]);
    expect_code(&started, 0);
    assert!(
        !stderr(&started).contains("already running"),
        "{}",
        stderr(&started)
    );
    assert_eq!(container_state(&daemon), "running");
    instance.finish();
}

#[test]
fn a_backup_to_a_full_disk_fails_cleanly() {
    let Some(instance) = Instance::new("backupfull") else {
        return;
    };
    let dir = instance.sandbox.path("small");
    std::fs::create_dir_all(&dir).expect("dir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&dir)
        .output()
        .expect("mount runs");
    if !mounted.status.success() {
        let why = format!(
            "no tmpfs could be mounted (needs root): {}",
            stderr(&mounted)
        );
        return support::skip("full-disk backup", why.trim());
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.clone());
    let volume = format!("{}-data", instance.prefix());
    let daemon = format!("{}-daemon", instance.prefix());
    expect_code(&instance.run(&["python", "minimal", "daemon"]), 0);
    in_volume(&volume, "head -c 2000000 /dev/urandom > /v/big");
    let output = instance.run(&[
        "--backup-dir",
        &dir.display().to_string(),
        "python",
        "minimal",
        "backup",
    ]);
    expect_code(&output, 74);
    assert!(
        stderr(&output).contains("No space left"),
        "{}",
        stderr(&output)
    );
    assert_eq!(container_state(&daemon), "running");
    let helpers = stdout(&docker(&[
        "ps",
        "--quiet",
        "--filter",
        &format!("label={INSTANCE_LABEL}={}", instance.name),
        "--filter",
        "label=org.docker-meta.host_container.step=backup.data",
    ]));
    assert!(helpers.trim().is_empty(), "helper left running: {helpers}");
    let left: Vec<_> = std::fs::read_dir(&dir).expect("dir").collect();
    assert!(left.is_empty(), "{left:?}");
    instance.finish();
}

#[test]
fn concurrent_forced_backups_do_not_corrupt_each_other() {
    let Some(instance) = Instance::new("backuprace") else {
        return;
    };
    let volume = format!("{}-data", instance.prefix());
    let dir = instance.sandbox.path("backups");
    let dir_arg = dir.display().to_string();
    expect_code(&instance.run(&["python", "minimal", "init"]), 0);
    in_volume(&volume, "head -c 3000000 /dev/urandom > /v/big");
    let backups = run_at_once((0..3).map(|_| {
        let mut command = instance.command();
        command.args([
            "--force",
            "--backup-dir",
            &dir_arg,
            "python",
            "minimal",
            "backup",
        ]);
        command
    }));
    for output in &backups {
        expect_code(output, 0);
    }
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{volume}.manifest.json"))).expect("manifest"),
    )
    .expect("json");
    let archive = std::fs::read(dir.join(format!("{volume}.tar"))).expect("archive");
    assert_eq!(manifest["sha256"], sha256_hex(&archive).as_str());
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    instance.finish();
}

#[test]
fn an_init_killed_mid_way_is_stopped_before_the_next_run_uses_the_volume() {
    let Some(instance) = Instance::new("initkill") else {
        return;
    };
    let layer = instance.sandbox.path("layer");
    // An initialize that wipes the virtualenv and then takes its time, unless told otherwise.
    instance.sandbox.write(
        "layer/python/hosts/minimal/initialize",
        "#!/bin/sh\nset -eu\npython3 -m venv --clear /virtualenv\n\
         [ -e /data/fast ] || { echo slow; exec sleep 600; }\necho fast\n",
    );
    std::fs::set_permissions(
        layer.join("python/hosts/minimal/initialize"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let layer_arg = layer.display().to_string();
    let mut child = instance
        .command()
        .args(["--config-dir", &layer_arg, "python", "minimal", "init"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut reader = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("[init.virtualenv] slow") {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("read") > 0,
            "init ended early"
        );
    }
    // SAFETY: signalling our own child.
    unsafe {
        libc_kill(child.id() as i32, 9);
    }
    child.wait().expect("wait");
    let running = |step: &str| {
        stdout(&docker(&[
            "ps",
            "--quiet",
            "--filter",
            &format!("label={INSTANCE_LABEL}={}", instance.name),
            "--filter",
            &format!("label=org.docker-meta.host_container.step={step}"),
        ]))
    };
    assert!(
        !running("init.virtualenv").trim().is_empty(),
        "the killed run's container goes on"
    );
    instance
        .sandbox
        .write("layer/python/hosts/minimal/fast", "");

    let single = instance
        .command()
        .args([
            "--config-dir",
            &layer_arg,
            "python",
            "minimal",
            "single",
            "python",
            "-c",
            "import sys; print(sys.prefix)",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    expect_code(&single, 0);
    assert_eq!(stdout(&single).trim(), "/virtualenv");
    assert!(
        stderr(&single).contains("left running by an interrupted run"),
        "{}",
        stderr(&single)
    );
    assert!(
        running("init.virtualenv").trim().is_empty(),
        "orphan still running"
    );
    instance.finish();
}

#[test]
fn a_daemon_that_failed_its_readiness_check_is_not_already_running() {
    let Some(instance) = Instance::new("daemonready") else {
        return;
    };
    let layer = instance.sandbox.path("layer");
    instance.sandbox.write(
        "layer/python/hosts/minimal/daemon",
        "#!/bin/sh\n[ \"${1:-}\" = --check ] && exit 1\nexec sleep 600\n",
    );
    std::fs::set_permissions(
        layer.join("python/hosts/minimal/daemon"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let shipped = std::fs::read_to_string(
        support::repo_root().join("etc/docker_meta/host_container/config/host_base_daemon.yaml"),
    )
    .expect("shipped daemon mode");
    assert!(shipped.contains("timeout: 30"));
    instance.sandbox.write(
        "layer/config/host_base_daemon.yaml",
        &shipped.replace("timeout: 30", "timeout: 2"),
    );
    let layer_arg = layer.display().to_string();
    let daemon = || instance.run(&["--config-dir", &layer_arg, "python", "minimal", "daemon"]);
    let first = daemon();
    expect_code(&first, 73);
    let second = daemon();
    assert!(
        !stderr(&second).contains("already running"),
        "{}",
        stderr(&second)
    );
    expect_code(&second, 73);
    instance.finish();
}

// node: every mode as for python, on a base image built from Debian's `nodejs` and `npm`.

#[test]
fn node_single_installs_once_and_passes_exit_codes_and_arguments() {
    let Some(instance) = Instance::node("nodesingle") else {
        return;
    };
    let first = instance.run(&[
        "node",
        "plain",
        "single",
        "node",
        "-e",
        "console.log(JSON.stringify(process.argv.slice(1)))",
        "a b",
        "$(x)",
        "--plan",
    ]);
    expect_code(&first, 0);
    assert_eq!(stdout(&first).trim(), r#"["a b","$(x)","--plan"]"#);
    assert!(ran(&first, "init.image") && ran(&first, "init.dependencies"));
    assert!(
        stderr(&first).contains("node_modules ready: node v"),
        "{}",
        stderr(&first)
    );

    let second = instance.run(&["node", "plain", "single"]);
    expect_code(&second, 0);
    assert!(!ran(&second, "init.image") && !ran(&second, "init.dependencies"));
    assert!(
        stdout(&second).contains("with node_modules in /node/node_modules"),
        "{}",
        stdout(&second)
    );
    let code = instance.run(&["node", "plain", "single", "node", "-e", "process.exit(7)"]);
    expect_code(&code, 7);
    let plan = instance.run(&["--plan", "node", "plain", "single"]);
    assert!(
        stdout(&plan).contains("init.dependencies: skip (done and up to date"),
        "{}",
        stdout(&plan)
    );
    instance.finish();
}

/// A layer whose node/plain depends on a local `file:` package, `greet`, with the lock file
/// npm writes for it.
fn write_greet_layer(sandbox: &Sandbox) -> std::path::PathBuf {
    sandbox.write(
        "layer/node/hosts/plain/package.json",
        r#"{"name": "with-greet", "version": "1.0.0", "private": true,
            "dependencies": {"greet": "file:greet"}}"#,
    );
    sandbox.write(
        "layer/node/hosts/plain/package-lock.json",
        r#"{
  "name": "with-greet", "version": "1.0.0", "lockfileVersion": 3, "requires": true,
  "packages": {
    "": {"name": "with-greet", "version": "1.0.0", "dependencies": {"greet": "file:greet"}},
    "node_modules/greet": {"version": "0.1.0", "resolved": "file:greet"}
  }
}
"#,
    );
    sandbox.write(
        "layer/node/hosts/plain/greet/package.json",
        r#"{"name": "greet", "version": "0.1.0", "main": "index.js"}"#,
    );
    sandbox.write(
        "layer/node/hosts/plain/greet/index.js",
        "module.exports = (name) => `hello ${name}`;\n",
    );
    sandbox.path("layer")
}

#[test]
fn node_local_dependencies_install_offline_reach_every_mode_and_rerun_init_when_changed() {
    let Some(instance) = Instance::node("nodedeps") else {
        return;
    };
    let layer = write_greet_layer(&instance.sandbox);
    let layer_arg = layer.display().to_string();
    let with_layer = |args: &[&str]| {
        let mut all = vec!["--config-dir", &layer_arg, "node", "plain"];
        all.extend(args);
        instance.run(&all)
    };
    // CommonJS from a script and ESM from the current directory both find the dependency.
    let cjs = with_layer(&[
        "single",
        "node",
        "-e",
        "console.log(require('greet')('cjs'))",
    ]);
    expect_code(&cjs, 0);
    assert_eq!(stdout(&cjs).trim(), "hello cjs");
    instance.sandbox.write(
        "project/esm.mjs",
        "import greet from 'greet';\nconsole.log(greet('esm'));\n",
    );
    let esm = with_layer(&["exec", "node", "esm.mjs"]);
    expect_code(&esm, 0);
    assert_eq!(stdout(&esm).trim(), "hello esm");
    let listed = with_layer(&["single"]);
    assert!(
        stdout(&listed).contains("greet 0.1.0"),
        "{}",
        stdout(&listed)
    );
    let test = with_layer(&["test"]);
    expect_code(&test, 0);
    assert!(
        stdout(&test).contains("ok dependency greet installed"),
        "{}",
        stdout(&test)
    );

    instance.sandbox.write(
        "layer/node/hosts/plain/greet/index.js",
        "module.exports = (name) => `hi ${name}`;\n",
    );
    let changed = with_layer(&["single", "node", "-e", "console.log(require('greet')('x'))"]);
    expect_code(&changed, 0);
    assert!(ran(&changed, "init.dependencies"), "{}", stderr(&changed));
    assert!(!ran(&changed, "init.image"));
    assert_eq!(stdout(&changed).trim(), "hi x");

    let mut upgrade = instance.command();
    let upgraded = support::run_recorded(
        upgrade
            .env("UPGRADE", "1")
            .args([
                "--config-dir",
                &layer_arg,
                "node",
                "plain",
                "single",
                "true",
            ])
            .stdin(Stdio::null()),
    );
    expect_code(&upgraded, 0);
    assert!(ran(&upgraded, "upgrade.packages"), "{}", stderr(&upgraded));
    instance.finish();
}

#[test]
fn node_daemon_is_ready_reports_status_and_logs_stops_and_purges() {
    let Some(instance) = Instance::node("nodedaemon") else {
        return;
    };
    let started = instance.run(&["node", "plain", "daemon"]);
    expect_code(&started, 0);
    assert!(ran(&started, "daemon.container"));
    let name = format!("{}-daemon", instance.node_prefix());
    // Ready means the readiness check passes: the server answers.
    let check = docker(&["exec", &name, "/data/daemon", "--check"]);
    assert!(check.status.success(), "{}", stderr(&check));
    let again = instance.run(&["node", "plain", "daemon"]);
    expect_code(&again, 0);
    assert!(
        stderr(&again).contains("already running with the same configuration"),
        "{}",
        stderr(&again)
    );
    let status = instance.run(&["node", "plain", "status"]);
    expect_code(&status, 0);
    assert!(stdout(&status).contains("running"), "{}", stdout(&status));
    let logs = instance.run(&["node", "plain", "logs"]);
    expect_code(&logs, 0);
    assert!(
        stdout(&logs).contains("serving on port 8000"),
        "{}",
        stdout(&logs)
    );
    let stop = instance.run(&["node", "plain", "stop"]);
    expect_code(&stop, 0);
    assert!(!docker(&["container", "inspect", &name]).status.success());

    let broken = instance.run(&[
        "--set",
        "restart=no",
        "node",
        "plain",
        "daemon",
        "node",
        "-e",
        "console.log('broken daemon'); process.exit(1)",
    ]);
    expect_code(&broken, 73);
    assert!(
        stderr(&broken).contains("broken daemon"),
        "{}",
        stderr(&broken)
    );

    let refused = instance.run(&["node", "plain", "purge"]);
    expect_code(&refused, 72);
    let purged = instance.run(&["--yes", "node", "plain", "purge"]);
    expect_code(&purged, 0);
    assert!(instance.objects().is_empty(), "{:?}", instance.objects());
    instance.finish();
}

#[test]
fn node_test_reports_junit_and_bash_reads_piped_stdin() {
    let Some(instance) = Instance::node("nodetest") else {
        return;
    };
    let report = instance.sandbox.path("report.xml");
    let test = instance.run(&[
        "--junit",
        &report.display().to_string(),
        "node",
        "plain",
        "test",
    ]);
    expect_code(&test, 0);
    assert!(
        stdout(&test).contains("all checks passed"),
        "{}",
        stdout(&test)
    );
    let xml = std::fs::read_to_string(&report).expect("junit report");
    for case in ["npm works", "daemon compiles", "init.dependencies"] {
        assert!(xml.contains(&format!("name=\"{case}\"")), "{case}: {xml}");
    }
    let failing = instance.run(&["node", "plain", "test", "node", "-e", "process.exit(3)"]);
    expect_code(&failing, 3);

    let output = run_with_stdin(
        instance.command().args(["node", "plain", "bash"]),
        "node --version\nreadlink /node_modules\nexit 4\n",
    );
    expect_code(&output, 4);
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with('v'), "{lines:?}");
    assert_eq!(lines[1], "/node/node_modules");
    instance.finish();
}

#[test]
fn node_exec_runs_as_the_caller_in_the_current_directory() {
    if !support::root_or_skip("node exec as another user") {
        return;
    }
    let Some(instance) = Instance::node("nodeexec") else {
        return;
    };
    let output = run_as_test_user(
        &instance,
        &[
            "node",
            "plain",
            "exec",
            "node",
            "-e",
            "require('fs').writeFileSync('made-by-node', 'x'); \
             require('fs').writeFileSync(process.env.HOME + '/home-is-writable', 'x'); \
             console.log(process.cwd(), process.getuid(), process.getgid())",
        ],
    );
    expect_code(&output, 0);
    let work = instance.sandbox.path("project");
    let (uid, gid) = TEST_USER;
    assert_eq!(
        stdout(&output).trim(),
        format!("{} {uid} {gid}", work.display())
    );
    let made = std::fs::metadata(work.join("made-by-node")).expect("file was created on the host");
    assert_eq!((made.uid(), made.gid()), TEST_USER);
    instance.finish();
}

#[test]
fn node_backup_and_restore_bring_node_modules_back_exactly() {
    let Some(instance) = Instance::node("nodebackup") else {
        return;
    };
    let layer = write_greet_layer(&instance.sandbox);
    let layer_arg = layer.display().to_string();
    let volume = format!("{}-data", instance.node_prefix());
    let dir_arg = instance.sandbox.path("backups").display().to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["--config-dir", &layer_arg, "--backup-dir", &dir_arg];
        all.extend(args);
        instance.run(&all)
    };
    expect_code(&run(&["node", "plain", "init"]), 0);
    let original = volume_digest(&volume);
    expect_code(&run(&["node", "plain", "backup"]), 0);
    in_volume(&volume, "rm -rf /v/node_modules");
    assert_ne!(volume_digest(&volume), original);
    let broken = run(&["node", "plain", "single", "node", "-e", "require('greet')"]);
    assert_ne!(broken.status.code(), Some(0));

    let restored = run(&["node", "plain", "restore"]);
    expect_code(&restored, 0);
    assert_eq!(volume_digest(&volume), original);
    let single = run(&[
        "node",
        "plain",
        "single",
        "node",
        "-e",
        "console.log(require('greet')('again'))",
    ]);
    expect_code(&single, 0);
    assert_eq!(stdout(&single).trim(), "hello again");
    instance.finish();
}
