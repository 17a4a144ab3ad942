//! Shared by the integration tests: an isolated `host_container` command (its own HOME and
//! cache, none of the developer's settings), a recording fake `docker` for exact-argv checks
//! and failure injection, and reading what a run printed. The end-to-end tests' real engines
//! are in `engine` and `isolated_engine`.

pub mod engine;
pub mod isolated_engine;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;
use tempfile::TempDir;

/// Whether the client variable `name` reaches init or upgrade (package settings, proxies, CA
/// bundles) or changes the project or language settings: tests start without the developer's.
fn carried_setting(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.starts_with("PIP_")
        || upper.starts_with("NPM_CONFIG_")
        || upper.starts_with("HOST_CONTAINER_PYTHON_")
        || upper.starts_with("HOST_CONTAINER_NODE_")
        || upper.starts_with("SETUPTOOLS_SCM_")
        || [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
            "REQUESTS_CA_BUNDLE",
            "SSL_CERT_FILE",
            "HOST_CONTAINER_CA_BUNDLE",
            "HOST_CONTAINER_NO_PROJECT",
            "HOST_CONTAINER_REGISTRY",
        ]
        .contains(&upper.as_str())
}

/// A sandbox for one test: HOME, cache and working directory of its own.
pub struct Sandbox {
    pub root: TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let root = tempfile::Builder::new()
            .prefix("hc-test-")
            .tempdir()
            .expect("temp dir");
        for dir in ["home", "cache", "project", "bin"] {
            fs::create_dir_all(root.path().join(dir)).expect("sandbox dirs");
        }
        Sandbox { root }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative)
    }

    /// `host_container` with the sandbox's HOME, cache and cwd, and none of our variables.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_host_container"));
        command
            .env("HOME", self.path("home"))
            .env("HOST_CONTAINER_CACHE_DIR", self.path("cache"))
            .env_remove("XDG_CACHE_HOME")
            .env_remove("UPGRADE")
            .env_remove("HOST_CONTAINER_BASE_IMAGE")
            .env_remove("HOST_CONTAINER_PYTHON_BASE_IMAGE")
            .env_remove("HOST_CONTAINER_NODE_BASE_IMAGE")
            .env_remove("HOST_CONTAINER_RUN_ID")
            .env_remove("HOST_CONTAINER_BACKUP_DIR")
            // A CA bundle named by the machine's environment is carried into the build context
            // and the hosts directory: plans would differ per machine.
            .env_remove("HOST_CONTAINER_CA_BUNDLE")
            .env_remove("PIP_CERT")
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("SSL_CERT_FILE")
            .current_dir(self.path("project"));
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if carried_setting(&name) {
                command.env_remove(&*name);
            }
        }
        command
    }

    /// Kills every process still running with this sandbox's HOME: what a test's killed
    /// host_container left behind (its docker CLIs go on when it is SIGKILLed) must not create
    /// objects after the test removed its own. Returns the processes that outlived 30 s of
    /// SIGKILLs (none, unless one is stuck in the kernel).
    pub fn stop_processes(&self) -> Vec<i32> {
        let home = format!("HOME={}", self.path("home").display());
        let ours = std::process::id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let left = processes_with_env(&home, ours);
            if left.is_empty() || std::time::Instant::now() >= deadline {
                return left;
            }
            for &pid in &left {
                // SAFETY: kill(2) with a pid read from /proc; a pid that ended meanwhile fails.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            // A killed process leaves /proc once reaped (by init, for an orphan): poll for that.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Installs a fake `docker` first on PATH that records every call to `docker.log`.
    ///
    /// It answers `inspect` (after a `--context NAME`, too) as if nothing existed (or with the JSON in the file
    /// `$FAKE_DOCKER_INSPECT`, when set), like an unreachable engine when
    /// `$FAKE_DOCKER_UNREACHABLE` is set, fails with exit 42 on any call whose argv contains
    /// `$FAKE_DOCKER_FAIL` (when set; saying `$FAKE_DOCKER_MESSAGE` then, if set), takes two
    /// seconds on a call whose argv contains `$FAKE_DOCKER_SLOW` (a long step, for progress
    /// output), prints the file `$FAKE_DOCKER_PRINT` to stdout on a call whose argv contains
    /// `$FAKE_DOCKER_PRINT_ON` (a job's output), and succeeds otherwise.
    pub fn fake_docker(&self) -> Command {
        let script = r#"#!/bin/sh
log="$FAKE_DOCKER_LOG"
for arg in "$@"; do printf '%s\0' "$arg" >> "$log"; done
printf '\001\n' >> "$log"
# Global options first, as docker takes them: what follows is the subcommand.
if [ "$1" = --context ]; then shift 2; fi
if [ -n "${FAKE_DOCKER_UNREACHABLE:-}" ]; then
  echo "Cannot connect to the Docker daemon at unix:///fake.sock. Is the docker daemon running?" >&2
  exit 1
fi
if [ "$1" = inspect ] && [ -n "${FAKE_DOCKER_INSPECT:-}" ]; then
  cat "$FAKE_DOCKER_INSPECT"
  exit 0
fi
if [ "$1" = inspect ]; then
  printf '[]\n'
  shift
  for name in "$@"; do echo "Error: No such object: $name" >&2; done
  exit 1
fi
if [ -n "${FAKE_DOCKER_SLOW:-}" ]; then
  case "$*" in
    *"$FAKE_DOCKER_SLOW"*) sleep 2 ;;
  esac
fi
if [ -n "${FAKE_DOCKER_PRINT:-}" ]; then
  case "$*" in
    *"$FAKE_DOCKER_PRINT_ON"*) cat "$FAKE_DOCKER_PRINT" ;;
  esac
fi
if [ -n "${FAKE_DOCKER_FAIL:-}" ]; then
  case "$*" in
    *"$FAKE_DOCKER_FAIL"*) echo "${FAKE_DOCKER_MESSAGE:-fake docker: injected failure}" >&2; exit 42 ;;
  esac
fi
exit 0
"#;
        let docker = self.path("bin/docker");
        fs::write(&docker, script).expect("fake docker");
        fs::set_permissions(&docker, fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut command = self.command();
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        command
            .env("PATH", path)
            .env("FAKE_DOCKER_LOG", self.path("docker.log"));
        command
    }

    /// The calls the fake docker recorded, each as its full argv starting with `docker`,
    /// without those taking and releasing the instance lock in the engine (not plan steps).
    pub fn docker_calls(&self) -> Vec<Vec<String>> {
        self.all_docker_calls()
            .into_iter()
            .filter(|call| !is_lock_call(call))
            .collect()
    }

    /// Every call the fake docker recorded, lock calls included.
    pub fn all_docker_calls(&self) -> Vec<Vec<String>> {
        let Ok(log) = fs::read(self.path("docker.log")) else {
            return Vec::new();
        };
        let text = String::from_utf8_lossy(&log);
        text.split("\u{1}\n")
            .filter(|call| !call.is_empty())
            .map(|call| {
                let mut argv = vec!["docker".to_owned()];
                let mut parts: Vec<&str> = call.split('\0').collect();
                // Every argument ends with NUL, so the last part is the empty rest.
                parts.pop();
                argv.extend(parts.into_iter().map(str::to_owned));
                argv
            })
            .collect()
    }

    /// The JSON plan of `ARGS…`, with run id `t1`, asked of the recording fake docker.
    pub fn plan_json(&self, args: &[&str]) -> Value {
        plan_json_of(self.fake_docker(), args)
    }

    /// `--plan --offline ARGS…` with the sandbox's `layer` directory as a `--config-dir`.
    pub fn plan_offline_with_layer(&self, args: &[&str]) -> Output {
        self.command()
            .arg("--config-dir")
            .arg(self.path("layer"))
            .args(["--plan", "--offline"])
            .args(args)
            .output()
            .expect("run")
    }

    /// Writes `content` to `relative` below the sandbox, creating directories.
    pub fn write(&self, relative: &str, content: &str) -> PathBuf {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        fs::write(&path, content).expect("write");
        path
    }
}

/// Whether a docker call takes or releases the engine-side instance lock.
pub fn is_lock_call(call: &[String]) -> bool {
    let names_lock = |arg: &String| arg.ends_with("-lock");
    (call.get(1).is_some_and(|c| c == "container") && call.iter().any(names_lock))
        || (call.get(1).is_some_and(|c| c == "rm") && call.last().is_some_and(names_lock))
}

/// The JSON plan `command` (a `host_container` command) prints for `ARGS…`, with run id `t1`.
pub fn plan_json_of(mut command: Command, args: &[&str]) -> Value {
    let output = command
        .args(["--plan", "--format", "json", "--run-id", "t1"])
        .args(args)
        .output()
        .expect("run");
    expect_code(&output, 0);
    serde_json::from_slice(&output.stdout).expect("plan JSON")
}

/// Runs `command` with `input` on its stdin and waits for its output.
pub fn run_with_stdin(command: &mut Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Dropped at the end of the statement: the child sees the end of its input.
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// Starts every command before waiting for any, so that they run at the same time, and collects
/// their output.
pub fn run_at_once(commands: impl IntoIterator<Item = Command>) -> Vec<Output> {
    let children: Vec<Child> = commands
        .into_iter()
        .map(|mut command| {
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    children
        .into_iter()
        .map(|child| child.wait_with_output().expect("wait"))
        .collect()
}

/// Whether a run announced `step` on stderr, i.e. ran it.
pub fn ran(output: &Output, step: &str) -> bool {
    stderr(output).contains(&format!("==> {step}:"))
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Fails with both streams shown when the command did not exit as expected.
pub fn expect_code(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped modes, by name, sorted: the `host_base_<mode>.yaml` files of the shared config.
pub fn shipped_modes() -> Vec<String> {
    let dir = repo_root().join("etc/docker_meta/host_container/config");
    let mut modes: Vec<String> = fs::read_dir(dir)
        .expect("shipped config")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(
                name.strip_prefix("host_base_")?
                    .strip_suffix(".yaml")?
                    .to_owned(),
            )
        })
        .collect();
    modes.sort();
    modes
}

/// The live processes (zombies aside) other than `ours` whose environment holds `entry`.
fn processes_with_env(entry: &str, ours: u32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid as u32 != ours)
        .filter(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The state follows the command name's closing parenthesis: Z is a zombie.
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
            !matches!(state, Some(Some('Z') | Some('X')) | None)
        })
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|item| item == entry.as_bytes()))
        })
        .collect()
}
