//! The command line: clap's raw `Arguments`, and the checked `Invocation` the rest of the program
//! works from (the split ripgrep and just make between low-level and high-level arguments).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, ValueEnum, ValueHint};
use indexmap::IndexMap;

use crate::error::{fail, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Dot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaName {
    /// The mode files (`host_base_*.yaml`).
    Mode,
    /// The JSON plan printed by `--plan --format json`.
    Plan,
    /// A language's settings (`<language>/config/language.yaml`).
    Language,
}

const AFTER_HELP: &str = "\
Modes shipped: init, upgrade, daemon, single, test, bash, exec, backup, restore, status, logs,
stop, purge. Any mode a configuration layer defines is valid; `--list` shows them all.

Examples:
  host_container python minimal single python -c 'print(42)'
  host_container python minimal --plan single
  host_container --list
  host_container --validate my_modes/config/host_base_lint.yaml
  echo 'python -V' | host_container python minimal bash
  host_container new python mine   (a variant of your project's own, in .host_container/)

Inside a project (a .host_container/ directory here or in a parent, found from any
subdirectory): init installs the project, single/test/bash run in it, test runs its tests.

Environment:
  HOST_CONTAINER_<LANGUAGE>_<KEY>
                             a variable of that language's language.yaml, e.g.
                             HOST_CONTAINER_NODE_BASE_IMAGE (`--set KEY=VALUE` wins over it)
  HOST_CONTAINER_BASE_IMAGE  the base image of every language whose own one is unset
                             (defaults: python:3.12-slim for python,
                             node:22-slim for node)
  HOST_CONTAINER_CA_BUNDLE   a PEM file init and upgrade trust (a TLS-intercepting proxy)
  HOST_CONTAINER_NO_PROJECT  when set (not empty, 0, false, no or off), like --no-project
  HOST_CONTAINER_LOCKED      when set (not empty, 0, false, no or off), like --locked
  PIP_*, npm_config_*, HTTP(S)_PROXY, NO_PROXY
                             passed on to init and upgrade by name
  UPGRADE                    when set (not empty, 0, false, no or off), `upgrade` runs before
                             every mode that requires it
  HOST_CONTAINER_WATCH_POLL  with --watch, poll for changes every SECONDS instead of using
                             file events (file systems without them: NFS, some mounts)
  HOST_CONTAINER_ENGINE_TIMEOUT
                             seconds the read-only docker calls host_container makes by
                             itself may take (default 30); then it exits 68
  HOST_CONTAINER_DOCKER_PATH the client program, like --docker-path (`podman` works)
  DOCKER_HOST, DOCKER_CONTEXT, CONTAINER_HOST are passed on to docker (or podman)

Exit codes: the job's own code for single, exec, bash and test; otherwise 0 success,
3 status/logs of a daemon that has no container,
64 usage, 65 invalid configuration, 66 unknown language/variant/mode, 67 docker not installed,
68 engine unreachable (or no answer within HOST_CONTAINER_ENGINE_TIMEOUT),
69 base image missing, 70 a step failed, 71 name or volume conflict,
72 refused (not confirmed, or a backup/restore would lose data), 73 daemon not ready,
74 host I/O error, 75 the engine cannot see this machine's files (exec, bind mounts),
130 interrupted.";

/// A shell that `--completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Run programs in host containers: Docker containers pre-configured for one language and one
/// variant of it, driven by declarative mode files.
#[derive(Debug, Parser)]
#[command(name = "host_container", version, after_help = AFTER_HELP)]
pub struct Arguments {
    /// The language, e.g. `python`.
    pub language: Option<String>,
    /// The variant of the language, e.g. `minimal`.
    pub variant: Option<String>,
    /// What to do: init, upgrade, daemon, single, test, bash, exec, backup, restore, …
    pub mode: Option<String>,
    /// A command (and its arguments) to run instead of the mode's default script. Each argument
    /// reaches the container verbatim, byte for byte: nothing is shell-parsed.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,

    /// Print the plan and execute nothing.
    #[arg(long)]
    pub plan: bool,
    /// Run, then run again whenever a file the plan depends on changes (the variant's files,
    /// the project's, any layer's mode files), after a quiet period of 0.1 s; Ctrl-C stops.
    /// For single, test, exec, daemon and modes of your own. Changes are seen through the
    /// operating system's file events (inotify), or by polling every second where it gives
    /// none (no watches left) or with HOST_CONTAINER_WATCH_POLL=SECONDS.
    #[arg(long, conflicts_with_all = ["plan", "check", "offline"])]
    pub watch: bool,
    /// Run nothing; exit 0 when every step with a `done` condition is up to date, 1 when one
    /// would run, 68 when the engine cannot tell (67 when docker is not installed). Prints the
    /// summary (the plan with --plan or --format json).
    #[arg(long, conflicts_with = "offline")]
    pub check: bool,
    /// The plan's format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Make no docker call at all, not even read-only ones (with --plan).
    #[arg(long)]
    pub offline: bool,
    /// An extra configuration layer; repeatable, the last given wins.
    #[arg(long = "config-dir", value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub config_dirs: Vec<PathBuf>,
    /// Ignore the project layer (`.host_container/` in the current directory or the nearest
    /// parent); also $HOST_CONTAINER_NO_PROJECT.
    #[arg(long)]
    pub no_project: bool,
    /// Fail before anything runs unless the variant's lock file exists and is up to date with
    /// its dependency files; also $HOST_CONTAINER_LOCKED.
    #[arg(long)]
    pub locked: bool,
    /// Keeps independent instances of one language and variant apart.
    #[arg(short = 'x', long, default_value = "default", value_name = "NAME")]
    pub instance: String,
    /// A template variable; repeatable. `--set base_image=IMAGE` picks the base image.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Run up to N independent steps at once (at least 1).
    #[arg(
        short = 'j',
        long,
        default_value_t = 1,
        value_name = "N",
        value_parser = at_least_one
    )]
    pub jobs: usize,
    /// After a failure, keep running the steps that do not depend on it.
    #[arg(long)]
    pub keep_going: bool,
    /// The client program: `docker` (the default), `podman`, or a path to either.
    #[arg(
        long,
        env = "HOST_CONTAINER_DOCKER_PATH",
        default_value = "docker",
        value_name = "PATH",
        value_hint = ValueHint::CommandName
    )]
    pub docker_path: String,
    /// The docker context to use (passed to docker as `--context`).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Where services run: `engine` (containers) or `swarm` (services and jobs of a Docker
    /// Swarm); templates see it as `orchestrator`.
    #[arg(
        long,
        value_enum,
        env = "HOST_CONTAINER_ORCHESTRATOR",
        default_value = "engine",
        value_name = "WHICH"
    )]
    pub orchestrator: Orchestrator,
    /// Where `backup` writes archives and `restore` reads them
    /// [default: $HOST_CONTAINER_BACKUP_DIR or ./host_container-backups].
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub backup_dir: Option<PathBuf>,
    /// Let `backup` replace an existing backup of the same name.
    #[arg(long)]
    pub force: bool,
    /// Answer yes to confirmations (`purge`, `restore` into a running daemon's volume).
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Write a JUnit XML report of the run's steps to PATH.
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub junit: Option<PathBuf>,
    /// Identifies this run in throw-away container names; random unless given, so that plans
    /// can be compared byte for byte.
    #[arg(long, env = "HOST_CONTAINER_RUN_ID", value_name = "ID")]
    pub run_id: Option<String>,

    /// List languages, variants and modes with their descriptions, then exit.
    #[arg(long)]
    pub list: bool,
    /// Check mode files (parse, types, needs, templates) and exit.
    #[arg(long, value_name = "FILE", num_args = 1.., value_hint = ValueHint::FilePath)]
    pub validate: Vec<PathBuf>,
    /// Print a JSON Schema and exit.
    #[arg(long, value_enum, value_name = "WHICH")]
    pub print_schema: Option<SchemaName>,
    /// Print a script that completes options, languages, variants and modes in SHELL.
    #[arg(long, value_enum, value_name = "SHELL")]
    pub completions: Option<Shell>,
    /// Colour and a status line of running steps: on a terminal (auto, unless NO_COLOR is set),
    /// always or never.
    #[arg(long, value_enum, default_value = "auto", value_name = "WHEN")]
    pub color: crate::console::Color,
    /// Print the man page (roff).
    #[arg(long)]
    pub man: bool,
}

/// A count that must be at least 1 (`--jobs 0` would start nothing and wait for ever).
fn at_least_one(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(count) => Ok(count),
        Err(e) => Err(e.to_string()),
    }
}

/// Where the modes' services run; the shipped modes choose their steps by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Orchestrator {
    /// Containers on the engine (`docker run`).
    Engine,
    /// Services and jobs of a Docker Swarm (`docker service create`).
    Swarm,
}

impl Orchestrator {
    pub fn name(self) -> &'static str {
        match self {
            Orchestrator::Engine => "engine",
            Orchestrator::Swarm => "swarm",
        }
    }
}

/// Everything a run depends on, checked. Templates see these as variables.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub language: String,
    pub variant: String,
    pub mode: String,
    pub instance: String,
    /// COMMAND ARGS exactly as given; templates see them as text (see `template::RawArg`).
    pub command: Vec<OsString>,
    /// `--set` values, in the order given.
    pub sets: IndexMap<String, String>,
    pub env: BTreeMap<String, String>,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub home: String,
    pub cwd: String,
    pub tty: bool,
    pub run_id: String,
    pub backup_dir: PathBuf,
    /// `--force`: a backup may replace an existing one.
    pub force: bool,
    /// The instance was made before object names doubled the `-` in their parts and keeps its
    /// names (see `plan::Names`).
    pub legacy_names: bool,
    pub orchestrator: Orchestrator,
    /// `--junit` was given: a test step may write its runner's report for it.
    pub junit: bool,
    /// Whether the engine sees this machine's files, when it was asked (not with `--offline`,
    /// and only inside a project, whose files reach containers by a bind mount or a copy).
    pub engine_sees_client_files: Option<bool>,
    /// Docker or Podman, rootful or rootless: probed, or assumed with `--offline`.
    pub engine: crate::engine_kind::EngineKind,
    /// `--locked` or $HOST_CONTAINER_LOCKED: the variant's lock must exist and be fresh.
    pub locked: bool,
}

/// Names become parts of docker object names, which allow only these characters (and image
/// repositories only lowercase).
pub fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
    if valid {
        Ok(())
    } else {
        fail(
            Kind::Usage,
            format!(
                "{what} `{name}` is not a valid name: use lowercase letters, digits, `_`, `.` and \
                 `-`, starting with a letter or digit"
            ),
        )
    }
}

pub fn parse_sets(sets: &[String]) -> anyhow::Result<IndexMap<String, String>> {
    let mut parsed = IndexMap::new();
    for set in sets {
        let Some((key, value)) = set.split_once('=') else {
            return fail(Kind::Usage, format!("--set {set}: expected KEY=VALUE"));
        };
        let identifier = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !identifier {
            return fail(
                Kind::Usage,
                format!("--set {set}: `{key}` is not a template variable name"),
            );
        }
        if crate::template::FUNCTIONS.contains(&key) {
            return fail(
                Kind::Usage,
                format!("--set {set}: `{key}` is a template function and cannot be replaced"),
            );
        }
        if key == "base_image" && value.trim().is_empty() {
            return fail(
                Kind::Usage,
                "--set base_image=: the base image cannot be empty (leave the option out for \
                 the default)",
            );
        }
        parsed.insert(key.to_owned(), value.to_owned());
    }
    Ok(parsed)
}

/// A host path that templates pass to docker. The Docker API carries paths as JSON text, so a
/// path that is not UTF-8 would reach the engine changed (`--volume=caf\u{fffd}:…` makes docker
/// create a new, empty directory); it is refused instead.
fn utf8_path(what: &str, path: PathBuf) -> anyhow::Result<String> {
    match path.into_os_string().into_string() {
        Ok(text) => Ok(text),
        Err(raw) => fail(
            Kind::Usage,
            format!(
                "{what} {} is not valid UTF-8, which docker cannot carry: use a directory whose \
                 name is UTF-8",
                raw.to_string_lossy()
            ),
        ),
    }
}

/// 16 hex digits no other process will pick: std's per-process random hash keys, mixed with the
/// pid and the clock.
pub fn fresh_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", hasher.finish())
}

/// A run id unique enough for container names of concurrent runs on one engine.
fn fresh_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:05x}", std::process::id(), nanos & 0xfffff)
}

impl Invocation {
    pub fn from_arguments(
        args: &Arguments,
        language: String,
        variant: String,
        mode: String,
    ) -> anyhow::Result<Invocation> {
        check_name("language", &language)?;
        check_name("variant", &variant)?;
        check_name("instance", &args.instance)?;
        crate::mode::check_name(&mode)?;
        let env = crate::config::environment();
        let sets = parse_sets(&args.sets)?;
        // SAFETY: getuid/getgid cannot fail and touch no memory of ours.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let user = env
            .get("USER")
            .or_else(|| env.get("LOGNAME"))
            .cloned()
            .unwrap_or_else(|| uid.to_string());
        let home = env.get("HOME").cloned().unwrap_or_default();
        let cwd = utf8_path("the current directory", crate::config::current_dir()?)?;
        let backup_dir = args
            .backup_dir
            .clone()
            .or_else(|| {
                env.get("HOST_CONTAINER_BACKUP_DIR")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from("host_container-backups"));
        let backup_dir = if backup_dir.is_absolute() {
            backup_dir
        } else {
            std::path::Path::new(&cwd).join(backup_dir)
        };
        utf8_path("the backup directory", backup_dir.clone())?;
        let run_id = match &args.run_id {
            Some(id) => {
                check_name("run id", id)?;
                id.clone()
            }
            None => fresh_run_id(),
        };
        // $HOST_CONTAINER_LOCKED set, and not empty, 0, false, no or off.
        let locked = args.locked
            || env.get("HOST_CONTAINER_LOCKED").is_some_and(|value| {
                !value.is_empty()
                    && !crate::template::OFF.contains(&value.to_ascii_lowercase().as_str())
            });
        Ok(Invocation {
            language,
            variant,
            mode,
            instance: args.instance.clone(),
            command: args.command.clone(),
            sets,
            env,
            uid,
            gid,
            user,
            home,
            cwd,
            tty: std::io::stdin().is_terminal() && std::io::stdout().is_terminal(),
            run_id,
            backup_dir,
            force: args.force,
            legacy_names: false,
            orchestrator: args.orchestrator,
            junit: args.junit.is_some(),
            engine_sees_client_files: None,
            engine: crate::engine_kind::EngineKind::assumed(&args.docker_path),
            locked,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_arguments_are_kept_verbatim() {
        let args = Arguments::try_parse_from([
            "host_container",
            "python",
            "minimal",
            "single",
            "python",
            "-c",
            "print('a; b')",
            "--plan",
        ])
        .unwrap();
        assert_eq!(
            args.command,
            vec!["python", "-c", "print('a; b')", "--plan"]
        );
        assert!(!args.plan);
    }

    #[test]
    fn options_before_positionals() {
        let args = Arguments::try_parse_from([
            "host_container",
            "--plan",
            "-x",
            "two",
            "python",
            "minimal",
            "init",
        ])
        .unwrap();
        assert!(args.plan);
        assert_eq!(args.instance, "two");
        assert!(args.command.is_empty());
    }

    #[test]
    fn names_and_sets_are_checked() {
        assert!(check_name("instance", "ci-1.a_b").is_ok());
        assert!(check_name("instance", "Bad").is_err());
        assert!(check_name("instance", "-x").is_err());
        assert!(crate::mode::check_name("init").is_ok());
        assert!(crate::mode::check_name("x/../../elsewhere/evil").is_err());
        assert!(crate::mode::check_name("..").is_err());
        assert!(parse_sets(&["port=80".into()]).is_ok());
        assert!(parse_sets(&["port".into()]).is_err());
        assert!(parse_sets(&["a-b=1".into()]).is_err());
    }
}
