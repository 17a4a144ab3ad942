//! Shared by the integration tests: an isolated `host_container` command (its own HOME and
//! cache, none of the developer's settings), a recording fake `docker` for exact-argv checks
//! and failure injection, the docker calls of a run against a real engine (`run_recorded`),
//! loud skips, and reading what a run printed. The end-to-end tests' real engines are in
//! `engine` and `isolated_engine`.

pub mod engine;
pub mod isolated_engine;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;
use tempfile::TempDir;

/// Whether the variable `name` is a setting of the developer's that would change what a test's
/// run does: every one of ours (`HOST_CONTAINER_…`, whatever its name, so that a variable added
/// later cannot leak in), and the client settings that reach init or upgrade (package settings,
/// proxies, CA bundles; a CA bundle is carried into the build context and the hosts directory,
/// so plans would differ per machine). Matched in any case, as pip and the proxies read them.
fn developer_setting(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.starts_with("HOST_CONTAINER_")
        || upper.starts_with("PIP_")
        || upper.starts_with("NPM_CONFIG_")
        || upper.starts_with("SETUPTOOLS_SCM_")
        || [
            "UPGRADE",
            "XDG_CACHE_HOME",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
            "REQUESTS_CA_BUNDLE",
            "SSL_CERT_FILE",
        ]
        .contains(&upper.as_str())
}

/// Removes from `command`'s environment every variable of this process that `developer_setting`
/// names; what a test sets afterwards stays.
pub fn without_developer_settings(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if developer_setting(&name.to_string_lossy()) {
            command.env_remove(&name);
        }
    }
    command
}

/// Says loudly that the `suite` tests did not run and why; with `CI` set, fails the test instead.
pub fn skip(suite: &str, why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but the {suite} tests cannot run: {why}");
    }
    announce_skip(suite, why);
}

/// Says loudly that the `suite` tests did not run and why, even with `CI` set: for what no CI
/// machine is expected to have (the package index, from a machine that reaches no registry).
pub fn announce_skip(suite: &str, why: &str) {
    // Written to the descriptor itself: the test harness captures `eprintln!`.
    let _ = writeln!(
        std::io::stderr(),
        "\n\n!!!!!!!! SKIPPED: {why}; {suite} tests did not run !!!!!!!!\n"
    );
}

/// Whether the tests run as root, which `suite` needs (it gives files to other users); says
/// loudly that it did not run otherwise (see `skip`).
pub fn root_or_skip(suite: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        skip(suite, "it needs root (it gives files to other users)");
    }
    root
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

    /// `host_container` with the sandbox's HOME, cache and cwd, and none of the developer's
    /// settings (`developer_setting`).
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_host_container"));
        without_developer_settings(&mut command)
            .env("HOME", self.path("home"))
            .env("HOST_CONTAINER_CACHE_DIR", self.path("cache"))
            .current_dir(self.path("project"));
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
    /// `$FAKE_DOCKER_FAIL` (when set; saying `$FAKE_DOCKER_MESSAGE` then, if set), holds a call
    /// whose argv contains `$FAKE_DOCKER_HOLD` until the test releases it (a long step: see
    /// `held` and `release`), prints the file `$FAKE_DOCKER_PRINT` to stdout on a call whose
    /// argv contains `$FAKE_DOCKER_PRINT_ON` (a job's output), and succeeds otherwise.
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
# The engine's kind: a rootful Docker.
if [ "$1" = info ] && [ "$3" = '{{json .}}' ]; then
  printf '{"ID":"FAKE:ENGINE","SecurityOptions":["name=seccomp,profile=default"]}\n'
  exit 0
fi
if [ "$1" = version ] && [ "$3" = '{{json .Server.Components}}' ]; then
  printf '[{"Name":"Engine","Version":"20.10.24"}]\n'
  exit 0
fi
if [ "$1" = inspect ]; then
  printf '[]\n'
  shift
  for name in "$@"; do echo "Error: No such object: $name" >&2; done
  exit 1
fi
if [ -n "${FAKE_DOCKER_HOLD:-}" ]; then
  case "$*" in
    *"$FAKE_DOCKER_HOLD"*)
      : > "$FAKE_DOCKER_DIR/held"
      # Bounded, so that a test that failed before releasing leaves no process behind.
      waited=0
      while [ ! -e "$FAKE_DOCKER_DIR/release" ]; do
        sleep 0.05
        waited=$((waited + 1))
        if [ "$waited" -ge 1200 ]; then echo "fake docker: never released" >&2; exit 43; fi
      done ;;
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
            .env("FAKE_DOCKER_LOG", self.path("docker.log"))
            .env("FAKE_DOCKER_DIR", self.root.path());
        command
    }

    /// Waits up to `seconds` until the fake docker holds a call (`$FAKE_DOCKER_HOLD`).
    pub fn held(&self, seconds: u64) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        while std::time::Instant::now() < deadline {
            if self.path("held").exists() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    /// Lets the call the fake docker holds (and every later one) go on.
    pub fn release(&self) {
        fs::write(self.path("release"), "").expect("release file");
    }

    /// The calls the fake docker recorded, each as its full argv starting with `docker`,
    /// without those taking and releasing the instance lock in the engine (not plan steps).
    pub fn docker_calls(&self) -> Vec<Vec<String>> {
        self.all_docker_calls()
            .into_iter()
            .filter(|call| !is_lock_call(call) && !is_engine_question(call))
            .collect()
    }

    /// Every call the fake docker recorded, lock calls included.
    pub fn all_docker_calls(&self) -> Vec<Vec<String>> {
        fs::read(self.path("docker.log"))
            .map(|log| parse_calls(&log))
            .unwrap_or_default()
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

/// The calls of a recording docker's log: each call's arguments end with NUL, each call with
/// `\x01\n`.
fn parse_calls(log: &[u8]) -> Vec<Vec<String>> {
    let text = String::from_utf8_lossy(log);
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

/// Whether `call` asks the engine who and what it is (`info`, and `version` for its kind): asked
/// before any plan, not a plan's step.
pub fn is_engine_question(call: &[String]) -> bool {
    let rest: Vec<&str> = call.iter().skip(1).map(String::as_str).collect();
    matches!(
        rest.as_slice(),
        ["info", "--format", "{{json .}}"] | ["version", "--format", "{{json .Server.Components}}"]
    )
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
/// what each printed and the docker calls each made (see `run_recorded`).
pub fn run_at_once(commands: impl IntoIterator<Item = Command>) -> Vec<Run> {
    let children: Vec<(Child, CallRecorder)> = commands
        .into_iter()
        .map(|mut command| {
            let recorder = CallRecorder::install(&mut command);
            let child = command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn");
            (child, recorder)
        })
        .collect();
    children
        .into_iter()
        .map(|(child, recorder)| Run {
            output: child.wait_with_output().expect("wait"),
            calls: recorder.calls(),
        })
        .collect()
}

/// What one run of host_container printed, and every docker call it made.
pub struct Run {
    pub output: Output,
    pub calls: Vec<Vec<String>>,
}

impl std::ops::Deref for Run {
    type Target = Output;

    fn deref(&self) -> &Output {
        &self.output
    }
}

/// Runs `command` (host_container against a real engine) to its end with a `docker` first on
/// its PATH that records each call and then becomes the real docker (`exec`, so streams, exit
/// codes and signals are the real one's).
pub fn run_recorded(command: &mut Command) -> Run {
    let recorder = CallRecorder::install(command);
    let output = command.output().expect("host_container runs");
    Run {
        output,
        calls: recorder.calls(),
    }
}

/// A directory of its own holding the recording `docker` and the calls it recorded.
struct CallRecorder {
    dir: TempDir,
}

impl CallRecorder {
    fn install(command: &mut Command) -> CallRecorder {
        let dir = tempfile::Builder::new()
            .prefix("hc-calls-")
            .tempdir()
            .expect("temp dir");
        // One file per call (by pid): calls that run at once cannot interleave their records.
        let script = r#"#!/bin/sh
{ printf '%s\0' "$@"; printf '\001\n'; } >> "$HC_TEST_CALLS/$$"
exec "$HC_TEST_REAL_DOCKER" "$@"
"#;
        for sub in ["bin", "calls"] {
            fs::create_dir(dir.path().join(sub)).expect("recorder dirs");
        }
        let docker = dir.path().join("bin/docker");
        fs::write(&docker, script).expect("recording docker");
        fs::set_permissions(&docker, fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = command
            .get_envs()
            .find(|(key, _)| *key == "PATH")
            .and_then(|(_, value)| value.map(|v| v.to_owned()))
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_default();
        let real = std::env::split_paths(&path)
            .map(|d| d.join("docker"))
            .find(|candidate| candidate.is_file())
            .expect("docker on PATH");
        let mut recording_path = std::ffi::OsString::from(dir.path().join("bin"));
        recording_path.push(":");
        recording_path.push(&path);
        command
            .env("PATH", recording_path)
            .env("HC_TEST_REAL_DOCKER", real)
            .env("HC_TEST_CALLS", dir.path().join("calls"));
        CallRecorder { dir }
    }

    /// The recorded calls, each as its argv starting with `docker`, in no particular order.
    fn calls(&self) -> Vec<Vec<String>> {
        let files = fs::read_dir(self.dir.path().join("calls")).expect("calls dir");
        files
            .filter_map(|entry| fs::read(entry.ok()?.path()).ok())
            .flat_map(|log| parse_calls(&log))
            .collect()
    }
}

/// The argument only the commands of step `id` have: its step label, or for the image build
/// (whose labels are in the Dockerfile it reads on stdin) `--file=-`.
pub fn step_marker(id: &str) -> String {
    if id == "init.image" {
        "--file=-".into()
    } else {
        format!("--label=org.docker-meta.host_container.step={id}")
    }
}

/// Collects a child's stream in the background so a test can wait for a text to appear.
pub struct Collected {
    text: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Collected {
    pub fn start(mut reader: impl std::io::Read + Send + 'static) -> Collected {
        let text = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let shared = text.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = reader.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                shared.lock().expect("lock").extend_from_slice(&chunk[..n]);
            }
        });
        Collected { text }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().expect("lock")).into_owned()
    }

    /// Polls until `needle` was written; false after `seconds`.
    pub fn wait_for(&self, needle: &str, seconds: u64) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        while std::time::Instant::now() < deadline {
            if self.text().contains(needle) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }
}

/// Whether a run ran `step`: made a docker call of that step. (A step's announcement line says
/// nothing: raw steps are never announced, and a skipped step of the requested mode is.)
/// A stamp's `volume create` carries its step's labels too (restore writes stamps back from a
/// manifest), so writing a stamp is not running the step.
pub fn ran(run: &Run, step: &str) -> bool {
    let marker = step_marker(step);
    let stamp = "--label=org.docker-meta.host_container.stamp=1".to_owned();
    run.calls
        .iter()
        .any(|call| call.contains(&marker) && !call.contains(&stamp))
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
