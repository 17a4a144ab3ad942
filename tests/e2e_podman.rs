//! End to end against Podman: rootful with the podman CLI, rootful with the docker CLI on
//! Podman's API socket, and rootless for a user of its own (created with subordinate ID ranges and
//! removed by the test). One init per engine kind, then the modes on it; files `exec` writes are
//! checked to belong to the caller's UID. Podman's base image is the Docker one, loaded with
//! `docker save | podman load` (no registry is reachable).
//!
//! Without Podman (or without root, which creating a user and rootful Podman need) these tests
//! say loudly that they were skipped; with `CI` set they fail.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::engine::{self, BASE_IMAGE, INSTANCE_LABEL};
use crate::support::{expect_code, run_with_stdin, stderr, stdout, Sandbox};

/// Podman's own limits exceed what some machines allow (`error setting rlimit`); these are
/// within any. The rootless user's containers get no network: slirp4netns needs /dev/net/tun,
/// which may be root's only, and nothing here needs a network.
const CONTAINERS_CONF: &str = "[containers]\n\
default_ulimits = [\"nofile=1024:1024\", \"nproc=1000:1000\"]\n";

/// A UID no one on the machine uses, for `exec` as a user other than root.
const CALLER: (u32, u32) = (4343, 4343);

/// Whether Podman can run here, asked once; loud skip (or a failure with `CI`) otherwise.
fn available() -> bool {
    static ANSWERS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWERS.get_or_init(|| {
        // SAFETY: getuid cannot fail.
        if unsafe { libc::getuid() } != 0 {
            crate::support::skip(
                "Podman",
                "not root (rootful Podman and a test user need it)",
            );
            return false;
        }
        let answers = Command::new("podman")
            .args(["--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !answers {
            crate::support::skip("Podman", "podman is not installed");
        }
        answers && engine::available()
    })
}

/// The podman command of `conf`'s owner, as root.
fn podman(conf: &Path, args: &[&str]) -> Output {
    Command::new("podman")
        .env("CONTAINERS_CONF", conf)
        .args(args)
        .output()
        .expect("podman runs")
}

/// The base image in root's Podman storage, loaded from Docker's once.
fn ensure_base_image(conf: &Path) {
    static LOADED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    LOADED.get_or_init(|| {
        engine::ensure_base_image();
        if podman(conf, &["image", "exists", BASE_IMAGE])
            .status
            .success()
        {
            return;
        }
        load_base_image(&mut Command::new("podman"), conf);
    });
}

/// `docker save BASE_IMAGE | <podman> load`.
fn load_base_image(podman: &mut Command, conf: &Path) {
    let mut save = Command::new("docker")
        .args(["save", BASE_IMAGE])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker save");
    let saved = save.stdout.take().expect("piped");
    let loaded = podman
        .env("CONTAINERS_CONF", conf)
        .args(["load", "--quiet"])
        .stdin(saved)
        .output()
        .expect("podman load");
    assert!(save.wait().expect("docker save").success());
    assert!(loaded.status.success(), "podman load: {loaded:?}");
}

/// One test's instance on Podman: a sandbox with its containers.conf, a unique instance name,
/// and the engine's objects of the instance removed on drop.
struct OnPodman {
    sandbox: Sandbox,
    name: String,
    conf: PathBuf,
}

impl OnPodman {
    fn new(test: &str) -> Option<OnPodman> {
        if !available() {
            return None;
        }
        let sandbox = Sandbox::new();
        let conf = sandbox.path("containers.conf");
        fs::write(&conf, CONTAINERS_CONF).expect("containers.conf");
        ensure_base_image(&conf);
        Some(OnPodman {
            sandbox,
            name: format!("podman-{test}-{}", std::process::id()),
            conf,
        })
    }

    fn command(&self) -> Command {
        let mut command = self.sandbox.command();
        command
            .env("CONTAINERS_CONF", &self.conf)
            .env("HOST_CONTAINER_BASE_IMAGE", BASE_IMAGE)
            .env_remove("DOCKER_HOST")
            .env_remove("HOST_CONTAINER_DOCKER_PATH")
            .args(["-x", &self.name]);
        command
    }

    fn run(&self, command: &mut Command, args: &[&str]) -> Output {
        command.args(args).output().expect("host_container runs")
    }

    /// What of the instance is left in root's Podman storage, a line each.
    fn leftovers(&self) -> Vec<String> {
        let filter = format!("label={INSTANCE_LABEL}={}", self.name);
        let mut left = Vec::new();
        for (kind, args) in [
            ("container", vec!["ps", "-a", "--format", "{{.Names}}"]),
            ("volume", vec!["volume", "ls", "--format", "{{.Name}}"]),
            ("image", vec!["images", "--format", "{{.ID}}"]),
        ] {
            let mut args = args.clone();
            args.extend(["--filter", &filter]);
            let answer = podman(&self.conf, &args);
            left.extend(stdout(&answer).lines().map(|l| format!("{kind} {l}")));
        }
        left
    }
}

impl Drop for OnPodman {
    fn drop(&mut self) {
        let filter = format!("label={INSTANCE_LABEL}={}", self.name);
        for args in [
            vec!["rm", "--force", "--filter", &filter],
            vec!["volume", "prune", "--force", "--filter", &filter],
            vec!["image", "prune", "--all", "--force", "--filter", &filter],
        ] {
            let _ = podman(&self.conf, &args);
        }
    }
}

/// `command` as the user `uid`:`gid` (no groups), through setpriv.
fn as_user(command: &Command, uid: u32, gid: u32) -> Command {
    let mut wrapped = Command::new("setpriv");
    wrapped
        .args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".to_owned(),
            "--".to_owned(),
        ])
        .arg(command.get_program())
        .args(command.get_args());
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

/// A directory `uid` owns, where `exec` writes.
fn work_dir_of(path: PathBuf, uid: u32, gid: u32) -> PathBuf {
    fs::create_dir_all(&path).expect("work dir");
    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
    // The sandbox above it is root's, 0700: let the user through to it.
    let mut parent = path.parent();
    while let Some(dir) =
        parent.filter(|d| d.starts_with(std::env::temp_dir()) && *d != std::env::temp_dir())
    {
        let mode = fs::metadata(dir).expect("dir").permissions().mode();
        fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o711)).expect("chmod");
        parent = dir.parent();
    }
    path
}

/// Runs `exec` as `uid`:`gid` in a directory of theirs and checks the file it wrote is theirs.
fn exec_writes_files_of(mut command: Command, dir: &Path, uid: u32, gid: u32) {
    command.current_dir(dir).env("HOME", dir).args([
        "python",
        "minimal",
        "exec",
        "sh",
        "-c",
        "id -u > made-by-exec",
    ]);
    let output = as_user(&command, uid, gid).output().expect("exec runs");
    expect_code(&output, 0);
    let made = fs::metadata(dir.join("made-by-exec")).expect("exec wrote the file");
    assert_eq!((made.uid(), made.gid()), (uid, gid), "{}", stderr(&output));
}

#[test]
fn rootful_podman_runs_every_mode_but_swarm() {
    let Some(on) = OnPodman::new("rootful") else {
        return;
    };
    let podman = |args: &[&str]| on.run(on.command().args(["--docker-path", "podman"]), args);
    let offline = podman(&["--plan", "--offline", "python", "minimal", "exec"]);
    assert!(stdout(&offline).contains("# engine: Podman, rootful (assumed, not asked)"));
    let single = podman(&[
        "python",
        "minimal",
        "single",
        "python",
        "-c",
        "print(6 * 7)",
    ]);
    expect_code(&single, 0);
    assert_eq!(stdout(&single).trim(), "42", "{}", stderr(&single));
    let plan = podman(&["--plan", "python", "minimal", "single"]);
    assert!(
        stdout(&plan).contains("# engine: Podman, rootful;"),
        "{}",
        stdout(&plan)
    );
    // The done checks find what Podman names localhost/…: nothing is left to run.
    expect_code(&podman(&["--check", "python", "minimal", "single"]), 0);
    let upgrade = on.run(
        on.command().env("HOST_CONTAINER_DOCKER_PATH", "podman"),
        &["python", "minimal", "upgrade"],
    );
    expect_code(&upgrade, 0);
    let shell = run_with_stdin(
        on.command()
            .args(["--docker-path", "podman", "python", "minimal", "bash"]),
        "python -c 'print(\"in bash\")'\n",
    );
    assert!(stdout(&shell).contains("in bash"), "{}", stderr(&shell));
    expect_code(&podman(&["python", "minimal", "test"]), 0);
    daemon_round_trip(&podman);
    backup_and_restore(&on, &podman);
    let swarm = podman(&["--orchestrator", "swarm", "python", "minimal", "single"]);
    expect_code(&swarm, 64);
    assert!(stderr(&swarm).contains("Podman has no swarm"));
    expect_code(&podman(&["--yes", "python", "minimal", "purge"]), 0);
    assert_eq!(on.leftovers(), Vec::<String>::new());
}

fn daemon_round_trip(podman: &dyn Fn(&[&str]) -> Output) {
    expect_code(&podman(&["python", "minimal", "daemon"]), 0);
    let status = podman(&["python", "minimal", "status"]);
    expect_code(&status, 0);
    assert!(stdout(&status).contains("-daemon"), "{}", stdout(&status));
    let logs = podman(&["python", "minimal", "logs"]);
    expect_code(&logs, 0);
    let again = podman(&["python", "minimal", "daemon"]);
    assert!(
        stderr(&again).contains("nothing to do"),
        "{}",
        stderr(&again)
    );
    expect_code(&podman(&["python", "minimal", "stop"]), 0);
    let stopped = podman(&["python", "minimal", "status"]);
    expect_code(&stopped, 3);
    assert!(
        stderr(&stopped).contains("podman-restart.service"),
        "{}",
        stderr(&stopped)
    );
}

fn backup_and_restore(on: &OnPodman, podman: &dyn Fn(&[&str]) -> Output) {
    let dir = on.sandbox.path("backups");
    let dir = dir.to_str().expect("UTF-8");
    let backup = podman(&["--backup-dir", dir, "python", "minimal", "backup"]);
    expect_code(&backup, 0);
    let restore = podman(&["--backup-dir", dir, "python", "minimal", "restore"]);
    expect_code(&restore, 0);
    // The restore kept what the volume held before in an undo volume of its own.
    let undo = format!(
        "hc-python-minimal-{}-data-restore-undo",
        on.name.replace('-', "--")
    );
    let _ = self::podman(&on.conf, &["volume", "rm", "--force", &undo]);
    let single = podman(&["python", "minimal", "single", "python", "-V"]);
    expect_code(&single, 0);
}

/// `podman system service` on a socket of the sandbox, stopped (by its pid) on drop.
struct Service {
    child: Child,
    socket: PathBuf,
}

impl Service {
    fn start(on: &OnPodman) -> Service {
        let socket = on.sandbox.path("podman.sock");
        let child = Command::new("podman")
            .env("CONTAINERS_CONF", &on.conf)
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("podman system service");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(socket.exists(), "Podman's socket never appeared");
        Service { child, socket }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_docker_cli_on_podmans_socket_runs_the_modes() {
    let Some(on) = OnPodman::new("socket") else {
        return;
    };
    let service = Service::start(&on);
    // A user other than root reaches the socket: exec's files are checked to be theirs.
    fs::set_permissions(&service.socket, fs::Permissions::from_mode(0o666)).expect("chmod");
    let host = format!("unix://{}", service.socket.display());
    let command = || {
        let mut command = on.command();
        command.env("DOCKER_HOST", &host);
        command
    };
    let docker = |args: &[&str]| on.run(&mut command(), args);
    let single = docker(&[
        "python",
        "minimal",
        "single",
        "python",
        "-c",
        "print(6 * 7)",
    ]);
    expect_code(&single, 0);
    assert_eq!(stdout(&single).trim(), "42", "{}", stderr(&single));
    let plan = docker(&["--plan", "python", "minimal", "exec"]);
    assert!(
        stdout(&plan).contains("# engine: Podman, rootful;"),
        "{}",
        stdout(&plan)
    );
    expect_code(&docker(&["--check", "python", "minimal", "single"]), 0);
    let work = work_dir_of(on.sandbox.path("work"), CALLER.0, CALLER.1);
    let mut exec = command();
    exec.env("HOST_CONTAINER_CACHE_DIR", work.join(".cache"));
    exec_writes_files_of(exec, &work, CALLER.0, CALLER.1);
    expect_code(&docker(&["python", "minimal", "daemon"]), 0);
    expect_code(&docker(&["python", "minimal", "status"]), 0);
    expect_code(&docker(&["python", "minimal", "stop"]), 0);
    let swarm = docker(&["--orchestrator", "swarm", "python", "minimal", "single"]);
    expect_code(&swarm, 64);
    // Podman's Docker API prunes no labelled image with --all: purge removes it anyway.
    expect_code(&docker(&["--yes", "python", "minimal", "purge"]), 0);
    assert_eq!(on.leftovers(), Vec::<String>::new());
    drop(service);
}

/// A user of the test's own with subordinate ID ranges, removed with everything of theirs.
struct RootlessUser {
    name: String,
    uid: u32,
    home: PathBuf,
}

impl RootlessUser {
    fn create() -> RootlessUser {
        let name = format!("hcpm{}", std::process::id() % 100_000);
        let home = std::env::temp_dir().join(format!("host_container-{name}"));
        let made = Command::new("useradd")
            .args(["--create-home", "--home-dir"])
            .arg(&home)
            .args(["--shell", "/bin/sh", &name])
            .output()
            .expect("useradd");
        assert!(made.status.success(), "useradd: {made:?}");
        let id = Command::new("id").args(["-u", &name]).output().expect("id");
        let uid: u32 = stdout(&id).trim().parse().expect("a uid");
        let user = RootlessUser { name, uid, home };
        let listed = fs::read_to_string("/etc/subuid").unwrap_or_default();
        if !listed
            .lines()
            .any(|l| l.starts_with(&format!("{}:", user.name)))
        {
            let range = format!(
                "{}-{}",
                300_000 + uid * 65_536 % 1_000_000,
                365_535 + uid * 65_536 % 1_000_000
            );
            let added = Command::new("usermod")
                .args(["--add-subuids", &range, "--add-subgids", &range, &user.name])
                .output()
                .expect("usermod");
            assert!(added.status.success(), "usermod: {added:?}");
        }
        let config = user.home.join(".config/containers");
        fs::create_dir_all(&config).expect("config dir");
        let conf = format!("{CONTAINERS_CONF}netns = \"none\"\n");
        fs::write(config.join("containers.conf"), conf).expect("containers.conf");
        chown_tree(&user.home, user.uid);
        user
    }

    /// `program` as this user, with a clean environment of theirs.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .current_dir(&self.home);
        as_user(&command, self.uid, self.uid)
    }

    /// This user's processes (Podman leaves a pause process per user), by pid.
    fn processes(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if fs::metadata(entry.path()).is_ok_and(|m| m.uid() == self.uid) {
                pids.push(pid);
            }
        }
        pids
    }
}

fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).expect("chown");
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("dir").flatten() {
            chown_tree(&entry.path(), uid);
        }
    }
}

impl Drop for RootlessUser {
    fn drop(&mut self) {
        // Everything of theirs in Podman, then their processes, then them.
        let _ = self
            .command("podman")
            .args(["system", "reset", "--force"])
            .output();
        for pid in self.processes() {
            // SAFETY: kill(2) of a process of the user this test created.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = Command::new("userdel")
            .args(["--remove", "--force", &self.name])
            .output();
        let _ = fs::remove_dir_all(&self.home);
    }
}

#[test]
fn rootless_podman_runs_the_modes_and_exec_writes_files_of_the_user() {
    if !available() {
        return;
    }
    let user = RootlessUser::create();
    let mut load = user.command("podman");
    load_base_image(
        &mut load,
        &user.home.join(".config/containers/containers.conf"),
    );
    let host_container = env!("CARGO_BIN_EXE_host_container");
    let run = |dir: &Path, args: &[&str]| {
        let mut command = user.command(host_container);
        command
            .current_dir(dir)
            .env("HOST_CONTAINER_DOCKER_PATH", "podman")
            .env("HOST_CONTAINER_BASE_IMAGE", BASE_IMAGE)
            .args(args);
        command.output().expect("host_container runs")
    };
    let single = run(
        &user.home,
        &[
            "python",
            "minimal",
            "single",
            "python",
            "-c",
            "print(6 * 7)",
        ],
    );
    assert_eq!(stdout(&single).trim(), "42", "{}", stderr(&single));
    let plan = run(&user.home, &["--plan", "python", "minimal", "exec"]);
    let plan = stdout(&plan);
    assert!(plan.contains("# engine: Podman, rootless;"), "{plan}");
    assert!(plan.contains("--userns=keep-id"), "{plan}");
    expect_code(
        &run(&user.home, &["--check", "python", "minimal", "single"]),
        0,
    );
    let work = user.home.join("work");
    fs::create_dir_all(&work).expect("work");
    chown_tree(&work, user.uid);
    let written = run(
        &work,
        &[
            "python",
            "minimal",
            "exec",
            "sh",
            "-c",
            "id -u > made-by-exec",
        ],
    );
    expect_code(&written, 0);
    let made = fs::metadata(work.join("made-by-exec")).expect("exec wrote the file");
    assert_eq!((made.uid(), made.gid()), (user.uid, user.uid));
    assert_eq!(
        fs::read_to_string(work.join("made-by-exec"))
            .expect("read")
            .trim(),
        user.uid.to_string()
    );
    expect_code(&run(&user.home, &["python", "minimal", "daemon"]), 0);
    expect_code(&run(&user.home, &["python", "minimal", "stop"]), 0);
    let swarm = run(
        &user.home,
        &["--orchestrator", "swarm", "python", "minimal", "single"],
    );
    expect_code(&swarm, 64);
    expect_code(
        &run(&user.home, &["--yes", "python", "minimal", "purge"]),
        0,
    );
    let mut left = user.command("podman");
    let left = left
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label={INSTANCE_LABEL}"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .expect("podman ps");
    assert_eq!(stdout(&left).trim(), "", "containers left");
}
